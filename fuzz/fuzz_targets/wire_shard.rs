//! Fuzzes the shard protocol's frames (`node/src/net/wire.rs`): `read_frame` and `decode` of a
//! `Request` or a `Response`, with the round trip `decode(encode(decode(x))) == decode(x)`.
#![no_main]

use dfs_node::testing::wire::{decode, encode, read_frame, Request, Response};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>(data) {
        let _ = request.shard();
        let _ = request.kind();
        let again = encode(&request).expect("a decoded request encodes");
        assert_eq!(decode::<Request>(&again).expect("re-decodes"), request);
    }
    if let Ok(response) = decode::<Response>(data) {
        let again = encode(&response).expect("a decoded response encodes");
        assert_eq!(decode::<Response>(&again).expect("re-decodes"), response);
    }
    // The same bytes as a length-prefixed frame on a stream, with a small limit.
    if let Ok(body) = block_on(read_frame(&mut &data[..], 4096)) {
        assert!(body.len() <= 4096 && body.len() + 4 <= data.len());
        let _ = decode::<Request>(&body);
        let _ = decode::<Response>(&body);
    }
});
