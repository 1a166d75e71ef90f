//! Fuzzes what a link's author chooses and a reader decodes after decrypting it: the root
//! record (`dfs_fs::snapshot::decode_root`), directory listings (`decode_listing`) and the
//! interior nodes of chunk trees (`dfs_node::testing::decode_node`). What decodes must be what the
//! reader relies on: valid entry names, and children that are there and add up to the parent.
#![no_main]

use std::path::Path;

use dfs_fs::snapshot::{decode_listing, decode_root, Entry};
use dfs_node::testing::decode_node;
use dfs_placement::ChunkId;
use libfuzzer_sys::fuzz_target;

fn valid_name(entry: &Entry) -> bool {
    let name = entry.name.as_slice();
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode_root(data) {
        assert!(valid_name(&entry));
    }
    if let Ok(entries) = decode_listing(data, Path::new("d")) {
        assert!(entries.iter().all(valid_name));
    }
    // A node: the level and the bytes its parent says it holds, then the node itself.
    if let Some((head, plain)) = data.split_first_chunk::<9>() {
        let level = head[0];
        let mut said = [0u8; 8];
        said.copy_from_slice(&head[1..]);
        let bytes = u64::from_le_bytes(said);
        if let Ok(children) = decode_node(plain, ChunkId([0; 32]), level, bytes) {
            assert!(!children.is_empty());
            let total = children
                .iter()
                .try_fold(0u64, |acc, c| acc.checked_add(c.bytes));
            assert_eq!(total, Some(bytes));
        }
    }
});
