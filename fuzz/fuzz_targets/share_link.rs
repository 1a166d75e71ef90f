//! Fuzzes what users type as ids and links: share links (`fs/src/link.rs`, `dfs://<id>#<key>`),
//! chunk ids and keys (`placement/src/ids.rs`, `node/src/crypto/`), and volume and author ids
//! (`node/src/oplog/op.rs`).
#![no_main]

use std::str::FromStr;

use dfs_fs::ShareLink;
use dfs_node::ops::{AuthorId, VolumeId};
use dfs_node::ChunkKey;
use dfs_placement::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(link) = ShareLink::from_str(text) {
        assert_eq!(link.to_string().parse::<ShareLink>(), Ok(link));
    }
    if let Ok(id) = ChunkId::from_str(text) {
        assert_eq!(id.to_string().parse::<ChunkId>(), Ok(id));
    }
    if let Ok(key) = ChunkKey::from_hex(text) {
        assert!(ChunkKey::from_hex(&key.to_hex()) == Ok(key));
    }
    if let Ok(id) = VolumeId::from_str(text) {
        assert_eq!(id.to_string().parse::<VolumeId>(), Ok(id));
    }
    if let Ok(id) = AuthorId::from_str(text) {
        assert_eq!(id.to_string().parse::<AuthorId>(), Ok(id));
    }
});
