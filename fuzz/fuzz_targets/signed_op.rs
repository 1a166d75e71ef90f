//! Fuzzes signed ops of the op log (`node/src/oplog/`): `SignedOp::from_bytes` (from gossip, a
//! sync answer or the disk), `verify`, the payload kind (`Payload::parse`: data or membership
//! control), a join proof check, and the clock observing the op's timestamp.
#![no_main]

use dfs_node::testing::control::{verify_join, Control, Payload};
use dfs_node::testing::HlcClock;
use dfs_node::ops::SignedOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = SignedOp::from_bytes(data) {
        // Only the canonical encoding decodes.
        assert_eq!(op.to_bytes(), data);
        let _ = op.verify();
        let _ = op.signed_message();
        let _ = format!("{op:?} {} {}", op.id, op.volume);
        let mut clock = HlcClock::new();
        let _ = clock.observe(op.id.hlc, op.id.hlc.millis.saturating_sub(1));
        let _ = clock.observe(op.id.hlc, 0);
        let _ = clock.tick(u64::MAX);
        if let Ok(Payload::Control(Control::Join { invite, proof })) = Payload::parse(&op.payload) {
            let _ = verify_join(&invite, &op.volume, &op.author(), &proof);
        }
    }
    // The bytes as a payload on their own.
    if let Ok(Payload::Control(control)) = Payload::parse(data) {
        let again = dfs_node::testing::control::control_payload(&control);
        assert_eq!(Payload::parse(&again), Ok(Payload::Control(control)));
    }
});
