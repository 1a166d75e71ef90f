//! Fuzzes the op-log sync protocol's messages (`node/src/net/sync.rs`, framed by
//! `node/src/net/wire.rs`): `SyncRequest`, `SyncResponse` and the signed ops they carry.
#![no_main]

use dfs_node::testing::sync::{SyncRequest, SyncResponse};
use dfs_node::testing::wire::{decode, encode};
use dfs_node::ops::SignedOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<SyncRequest>(data) {
        let SyncRequest::Pull { join, .. } = &request;
        if let Some(join) = join {
            let _ = SignedOp::from_bytes(join);
        }
        let again = encode(&request).expect("a decoded request encodes");
        assert_eq!(decode::<SyncRequest>(&again).expect("re-decodes"), request);
    }
    if let Ok(response) = decode::<SyncResponse>(data) {
        if let SyncResponse::Ops { ops, .. } = &response {
            for op in ops {
                if let Ok(op) = SignedOp::from_bytes(op) {
                    let _ = op.verify();
                }
            }
        }
        let again = encode(&response).expect("a decoded response encodes");
        assert_eq!(
            decode::<SyncResponse>(&again).expect("re-decodes"),
            response
        );
    }
});
