//! Property tests of the whole chunk pipeline on a real data directory (RocksDB + shard files):
//! round trips at awkward sizes, recovery from any loss of at most m shards per chunk, clean
//! failure beyond m, and detection of any flipped byte in any shard file.

use std::io::Cursor;
use std::path::Path;

use dfs_node::blob::{read_blob, write_blob};
use dfs_node::{BlobError, BlobRef, ChunkError, Repo};
use proptest::prelude::*;

const CHUNK: usize = 4096;

fn small_repo(dir: &Path, data: u8, parity: u8) -> Repo {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[storage]\nchunk_size = {CHUNK}\nreplicate_below = 512\ntree_fanout = 3\n\
             data_shards = {data}\nparity_shards = {parity}\n"
        ),
    )
    .unwrap();
    Repo::open(dir).unwrap()
}

fn put(repo: &Repo, bytes: &[u8]) -> BlobRef {
    let session = repo.begin_put("t").unwrap();
    let blob = write_blob(repo, session.owner(), &mut Cursor::new(bytes)).unwrap();
    let root = blob
        .root
        .map_or(([0; 32], dfs_node::ChunkKey([0; 32])), |r| (r.id.0, r.key));
    repo.commit_put(session, (dfs_placement::ChunkId(root.0), root.1), blob.size)
        .unwrap();
    blob
}

fn get(repo: &Repo, blob: &BlobRef) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    read_blob(repo, blob, &mut out, true)?;
    Ok(out)
}

/// Sizes around every boundary that matters: empty, one byte, replication threshold, chunk
/// size, and tree levels (fanout 3: 3 and 9 chunks fill levels).
fn interesting_sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        (0usize..3).prop_map(|d| 511 + d),
        (0usize..3).prop_map(|d| CHUNK - 1 + d),
        (0usize..3).prop_map(|d| 3 * CHUNK - 1 + d),
        (0usize..3).prop_map(|d| 9 * CHUNK - 1 + d),
        0usize..40 * CHUNK,
    ]
}

/// Every shard file, grouped by chunk (sorted for determinism).
fn shards_by_chunk(dir: &Path) -> Vec<Vec<std::path::PathBuf>> {
    let mut map: std::collections::BTreeMap<String, Vec<std::path::PathBuf>> = Default::default();
    for sub in std::fs::read_dir(dir.join("shards")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let chunk = name.split('.').next().unwrap().to_string();
            map.entry(chunk).or_default().push(f.path());
        }
    }
    map.into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_at_any_size(size in interesting_sizes(), seed in any::<u64>(), k in 1u8..6, m in 1u8..4) {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_repo(dir.path(), k, m);
        let bytes: Vec<u8> = (0..size).map(|i| (i as u64).wrapping_mul(seed | 1).to_le_bytes()[3]).collect();
        let blob = put(&repo, &bytes);
        prop_assert_eq!(blob.size, size as u64);
        prop_assert!(get(&repo, &blob).unwrap() == bytes);
    }

    /// Delete any `lose` shards of every chunk: up to m always recovers the exact bytes; more
    /// than m fails with a loss error and never returns wrong bytes.
    #[test]
    fn losses_up_to_m_recover_and_beyond_m_fail_cleanly(
        size in CHUNK..12 * CHUNK,
        lose in 0usize..5,
        pick in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_repo(dir.path(), 3, 2);
        let bytes: Vec<u8> = (0..size).map(|i| (i as u64 ^ pick).to_le_bytes()[0]).collect();
        let blob = put(&repo, &bytes);
        for shards in shards_by_chunk(dir.path()) {
            for j in 0..lose.min(shards.len()) {
                let victim = (pick as usize + j * 7) % shards.len();
                let _ = std::fs::remove_file(&shards[victim]);
            }
        }
        let result = get(&repo, &blob);
        let distinct = (0..lose).map(|j| (pick as usize + j * 7) % 5).collect::<std::collections::HashSet<_>>().len();
        if lose <= 2 {
            prop_assert!(result.unwrap() == bytes);
            // And the read repaired everything: a second read finds all shards.
            prop_assert!(get(&repo, &blob).unwrap() == bytes);
        } else if distinct > 2 {
            let lost = matches!(
                result,
                Err(BlobError::Chunk(ChunkError::Lost { .. } | ChunkError::Absent { .. }))
            );
            prop_assert!(lost, "expected a loss error");
        } else {
            // Fewer distinct victims than `lose`: at most m removed, must still read right.
            prop_assert!(result.unwrap() == bytes);
        }
    }

    /// Flip any bit of any shard file: the read still returns the right bytes (the shard is
    /// detected as corrupt and rebuilt), and a read after that finds the store healthy.
    #[test]
    fn any_flipped_bit_is_detected(size in 1usize..6 * CHUNK, which in any::<usize>(), pos in any::<usize>(), bit in 0u8..8) {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_repo(dir.path(), 4, 2);
        // Non-repeating content, so no two chunks dedup into one (which would be read twice).
        let bytes: Vec<u8> = (0..size as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
        let blob = put(&repo, &bytes);
        let all: Vec<_> = shards_by_chunk(dir.path()).into_iter().flatten().collect();
        let victim = &all[which % all.len()];
        let mut content = std::fs::read(victim).unwrap();
        let i = pos % content.len();
        content[i] ^= 1 << bit;
        std::fs::write(victim, &content).unwrap();
        let mut out = Vec::new();
        let report = read_blob(&repo, &blob, &mut out, true).unwrap();
        prop_assert!(out == bytes);
        prop_assert_eq!(report.repaired_shards, 1, "the flipped shard must be found and rewritten");
        prop_assert!(std::fs::read(victim).unwrap() != content);
    }
}

/// The mount's read path reads only the shards it needs: data shards when intact, parity only
/// to replace a bad one, and repairs what it found bad.
#[test]
fn read_chunk_reads_only_what_it_needs_and_repairs_it() {
    use dfs_node::chunk::ChunkRef;
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(dir.path()).unwrap();
    let session = repo.begin_put("t").unwrap();
    let bytes: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    let chunk: ChunkRef = repo
        .put_chunk(session.owner(), bytes.clone(), &mut coder)
        .unwrap();
    let shard = |i: u8| repo.store().path(&chunk.id, i);
    // Parity shards gone: a fast read does not even look at them.
    std::fs::remove_file(shard(4)).unwrap();
    std::fs::remove_file(shard(5)).unwrap();
    let read_before = repo
        .store()
        .counters()
        .shard_bytes_read
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(repo.read_chunk(&chunk, &mut coder).unwrap() == bytes);
    let read = repo
        .store()
        .counters()
        .shard_bytes_read
        .load(std::sync::atomic::Ordering::Relaxed)
        - read_before;
    assert!(read < 1_100_000, "read {read} bytes for a 1 MiB chunk");
    assert!(
        !shard(4).exists(),
        "unread shards are left to verify and scrub"
    );
    // A full read (what dfs get and verify do) restores the parity; then a corrupt data shard
    // is read around and rewritten by the fast path.
    let (_, health) = repo.get_chunk(&chunk, &mut coder, true).unwrap();
    assert_eq!(health.repaired, vec![4, 5]);
    let mut b = std::fs::read(shard(1)).unwrap();
    b[500] ^= 1;
    std::fs::write(shard(1), &b).unwrap();
    assert!(repo.read_chunk(&chunk, &mut coder).unwrap() == bytes);
    assert!(
        std::fs::read(shard(1)).unwrap() != b,
        "the corrupt shard was rewritten"
    );
}

/// Shards "on peers" kept in memory by a scripted double of the network side, which serves
/// one shard with its body tampered (header intact) until it is asked with checksums on. The
/// reader's logic is the real one: a fast read that trusts the AEAD tag, and on failure a read
/// with every shard verified (by the real `ShardHeader` checks, applied here as the network
/// side applies them).
struct TamperingPeers {
    images: std::sync::Mutex<std::collections::HashMap<u8, Vec<u8>>>,
    tampered: u8,
    trusting_reads: std::sync::atomic::AtomicUsize,
    checked_reads: std::sync::atomic::AtomicUsize,
}

impl dfs_node::cluster::Remote for TamperingPeers {
    fn place(
        &self,
        _: &Repo,
        id: &dfs_placement::ChunkId,
        shards: &dfs_node::chunk::ShardSet,
    ) -> Result<Option<dfs_node::meta::Placed>, ChunkError> {
        let mut images = self.images.lock().unwrap();
        let mut holders = Vec::new();
        for index in 0..shards.encoded.shard_count() {
            let mut image = shards.headers[index].to_vec();
            image.extend_from_slice(shards.encoded.shard(index));
            images.insert(index as u8, image);
            holders.push((index as u8, vec![index as u8; 8]));
        }
        let _ = id;
        Ok(Some(dfs_node::meta::Placed { holders }))
    }

    fn cached(&self, _: &dfs_placement::ChunkId) -> Option<Vec<u8>> {
        None
    }

    fn remember(&self, _: &dfs_placement::ChunkId, _: &[u8]) {}

    fn locate(
        &self,
        _: &Repo,
        _: &dfs_placement::ChunkId,
    ) -> Option<(dfs_node::meta::ChunkRecord, dfs_node::meta::Placed)> {
        None
    }

    fn gather(
        &self,
        _: &Repo,
        id: &dfs_placement::ChunkId,
        layout: dfs_placement::Layout,
        _: &dfs_node::meta::Placed,
        want: usize,
        checksum: bool,
    ) -> Vec<Option<Vec<u8>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let counter = if checksum {
            &self.checked_reads
        } else {
            &self.trusting_reads
        };
        counter.fetch_add(1, Relaxed);
        let images = self.images.lock().unwrap();
        let mut out = vec![None; layout.shard_count()];
        let mut got = 0;
        for index in 0..layout.shard_count() as u8 {
            if got == want {
                break;
            }
            let mut image = images[&index].clone();
            if index == self.tampered {
                let last = image.len() - 1;
                image[last] ^= 1;
            }
            if dfs_node::shard::ShardHeader::decode_as(&image, *id, index, checksum).is_ok() {
                out[index as usize] = Some(image);
                got += 1;
            }
        }
        out
    }
}

#[test]
fn a_tampered_shard_fails_the_tag_and_the_checked_read_goes_around_it() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(dir.path()).unwrap();
    let peers = std::sync::Arc::new(TamperingPeers {
        images: Default::default(),
        tampered: 1,
        trusting_reads: Default::default(),
        checked_reads: Default::default(),
    });
    repo.set_remote(Some(peers.clone()));
    let plaintext: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 253) as u8).collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    let chunk = repo
        .put_chunk(&[3; 16], plaintext.clone(), &mut coder)
        .unwrap();
    assert!(repo.meta().placed(&chunk.id).unwrap().is_some());
    let read = repo.read_chunk(&chunk, &mut coder).unwrap();
    assert!(read == plaintext, "the read returned other bytes");
    assert_eq!(peers.trusting_reads.load(Relaxed), 1);
    assert_eq!(
        peers.checked_reads.load(Relaxed),
        1,
        "the tag failed, so a checked read"
    );
    // Without tampering the trusting read is enough.
    let clean = TamperingPeers {
        images: std::sync::Mutex::new(peers.images.lock().unwrap().clone()),
        tampered: u8::MAX,
        trusting_reads: Default::default(),
        checked_reads: Default::default(),
    };
    let clean = std::sync::Arc::new(clean);
    repo.set_remote(Some(clean.clone()));
    assert!(repo.read_chunk(&chunk, &mut coder).unwrap() == plaintext);
    assert_eq!(clean.trusting_reads.load(Relaxed), 1);
    assert_eq!(clean.checked_reads.load(Relaxed), 0);
}
