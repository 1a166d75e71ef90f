//! Fuzzes the shard file format (`node/src/shard.rs`): a shard image from disk or a peer, with and
//! without its checksum checked, a header on its own (`Response::Holds`), and the hash a bulk
//! link compares before it takes a body.
#![no_main]

use dfs_node::testing::{ShardHeader, HEADER_LEN};
use dfs_placement::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = data.get(8..40).map_or(ChunkId([0; 32]), |b| {
        ChunkId(b.try_into().expect("32 bytes"))
    });
    let index = data.get(43).copied().unwrap_or(0);

    let checked = ShardHeader::decode(data);
    if let Ok((header, body)) = checked {
        // What a verified image decodes to encodes to an image that decodes the same (not
        // always to the same bytes: a replicated layout ignores the parity byte).
        let again = header.encode(body);
        assert_eq!(ShardHeader::decode(&again), Ok((header, body)));
        assert_eq!(ShardHeader::decode_expected(data, chunk, index), checked);
    }
    let unchecked = ShardHeader::decode_as(data, chunk, index, false);
    if checked.is_ok() {
        assert_eq!(unchecked, checked);
    }
    if let Some(head) = data.first_chunk::<HEADER_LEN>() {
        let header = ShardHeader::check_head(head, data.len() as u64, chunk, index);
        assert_eq!(header.is_ok(), unchecked.is_ok());
        if let (Ok(a), Ok((b, _))) = (header, unchecked) {
            assert_eq!(a, b);
        }
        let _ = ShardHeader::check_head(head, u64::MAX, chunk, index);
        let _ = ShardHeader::check_head(head, 0, chunk, index);
    }
    let _ = ShardHeader::from_head(data, chunk);

    // The carried hash is the same however the image is split.
    let hash = ShardHeader::carried_hash(data);
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(cut);
    assert_eq!(ShardHeader::carried_hash_of_parts(&[a, b]), hash);
    assert_eq!(hash.is_some(), data.len() >= HEADER_LEN);
});
