//! Fuzzes the bulk link session messages (`node/src/net/bulk/mod.rs`, framed by
//! `node/src/net/wire.rs`): `Open` and `Opened`.
#![no_main]

use dfs_node::testing::bulk::{Open, Opened};
use dfs_node::testing::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(open) = decode::<Open>(data) {
        let again = encode(&open).expect("a decoded Open encodes");
        assert!(decode::<Open>(&again).expect("re-decodes") == open);
    }
    if let Ok(opened) = decode::<Opened>(data) {
        let again = encode(&opened).expect("a decoded Opened encodes");
        assert_eq!(decode::<Opened>(&again).expect("re-decodes"), opened);
    }
});
