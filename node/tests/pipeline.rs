//! Property tests of the whole chunk pipeline on a real data directory (RocksDB + shard files):
//! round trips at awkward sizes, recovery from any loss of at most m shards per chunk, clean
//! failure beyond m, and detection of any flipped byte in any shard file.

use std::io::Cursor;
use std::path::Path;

use dfs_node::{read_blob, write_blob, BlobError, BlobRef, ChunkError, Pipeline, Repo};
use proptest::prelude::*;
use std::sync::Arc;

const CHUNK: usize = 4096;

fn small_repo(dir: &Path, data: u8, parity: u8) -> Pipeline {
    // A data directory with content must be private (Repo::open refuses it otherwise).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[storage]\nchunk_size = {CHUNK}\nreplicate_below = 512\ntree_fanout = 3\n\
             data_shards = {data}\nparity_shards = {parity}\n"
        ),
    )
    .unwrap();
    Pipeline::local(Arc::new(Repo::open(dir).unwrap()))
}

fn put(pipeline: &Pipeline, bytes: &[u8]) -> BlobRef {
    let repo = pipeline.repo();
    let session = repo.begin_put("t").unwrap();
    let blob = write_blob(pipeline, session.owner(), &mut Cursor::new(bytes)).unwrap();
    let root = blob
        .root
        .map_or(([0; 32], dfs_node::ChunkKey([0; 32])), |r| (r.id.0, r.key));
    repo.commit_put(session, (dfs_placement::ChunkId(root.0), root.1), blob.size)
        .unwrap();
    blob
}

fn get(pipeline: &Pipeline, blob: &BlobRef) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    read_blob(pipeline, blob, &mut out, true)?;
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
        let pipeline = small_repo(dir.path(), k, m);
        let bytes: Vec<u8> = (0..size).map(|i| (i as u64).wrapping_mul(seed | 1).to_le_bytes()[3]).collect();
        let blob = put(&pipeline, &bytes);
        prop_assert_eq!(blob.size, size as u64);
        prop_assert!(get(&pipeline, &blob).unwrap() == bytes);
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
        let pipeline = small_repo(dir.path(), 3, 2);
        let bytes: Vec<u8> = (0..size).map(|i| (i as u64 ^ pick).to_le_bytes()[0]).collect();
        let blob = put(&pipeline, &bytes);
        for shards in shards_by_chunk(dir.path()) {
            for j in 0..lose.min(shards.len()) {
                let victim = (pick as usize + j * 7) % shards.len();
                let _ = std::fs::remove_file(&shards[victim]);
            }
        }
        let result = get(&pipeline, &blob);
        let distinct = (0..lose).map(|j| (pick as usize + j * 7) % 5).collect::<std::collections::HashSet<_>>().len();
        if lose <= 2 {
            prop_assert!(result.unwrap() == bytes);
            // And the read repaired everything: a second read finds all shards.
            prop_assert!(get(&pipeline, &blob).unwrap() == bytes);
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
        let pipeline = small_repo(dir.path(), 4, 2);
        // Non-repeating content, so no two chunks dedup into one (which would be read twice).
        let bytes: Vec<u8> = (0..size as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
        let blob = put(&pipeline, &bytes);
        let all: Vec<_> = shards_by_chunk(dir.path()).into_iter().flatten().collect();
        let victim = &all[which % all.len()];
        let mut content = std::fs::read(victim).unwrap();
        let i = pos % content.len();
        content[i] ^= 1 << bit;
        std::fs::write(victim, &content).unwrap();
        let mut out = Vec::new();
        let report = read_blob(&pipeline, &blob, &mut out, true).unwrap();
        prop_assert!(out == bytes);
        prop_assert_eq!(report.repaired_shards, 1, "the flipped shard must be found and rewritten");
        prop_assert!(std::fs::read(victim).unwrap() != content);
    }
}

/// The mount's read path reads only the shards it needs: data shards when intact, parity only
/// to replace a bad one, and repairs what it found bad.
#[test]
fn read_chunk_reads_only_what_it_needs_and_repairs_it() {
    use dfs_node::ChunkRef;
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::open(dir.path()).unwrap());
    let pipeline = Pipeline::local(repo.clone());
    let session = repo.begin_put("t").unwrap();
    let bytes: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    let chunk: ChunkRef = pipeline
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
    assert!(pipeline.read_chunk(&chunk, &mut coder).unwrap() == bytes);
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
    let (_, health) = pipeline.get_chunk(&chunk, &mut coder, true).unwrap();
    assert_eq!(health.repaired, vec![4, 5]);
    let mut b = std::fs::read(shard(1)).unwrap();
    b[500] ^= 1;
    std::fs::write(shard(1), &b).unwrap();
    assert!(pipeline.read_chunk(&chunk, &mut coder).unwrap() == bytes);
    assert!(
        std::fs::read(shard(1)).unwrap() != b,
        "the corrupt shard was rewritten"
    );
}

/// Shards "on peers" kept in memory by a scripted double of the network side, one of which
/// is forged: its body changed and its header sealed again, so its checksum is valid. The
/// reader's logic is the real one; the double applies the checks the network side applies
/// (the real `ShardHeader` checks, and the writer's hash when the reader passes it), and
/// records what the reader reports as forged.
struct ForgingPeers {
    images: std::sync::Mutex<std::collections::HashMap<u8, Vec<u8>>>,
    forged: u8,
    /// Act as a reader without the writer's hashes (a link holder) would be served.
    ignore_hashes: bool,
    holders: Vec<libp2p::PeerId>,
    reported: std::sync::Mutex<Vec<(u8, libp2p::PeerId)>>,
}

impl ForgingPeers {
    fn new(forged: u8) -> Self {
        Self {
            images: Default::default(),
            forged,
            ignore_hashes: false,
            holders: (0..6).map(|_| libp2p::PeerId::random()).collect(),
            reported: Default::default(),
        }
    }
}

impl dfs_node::testing::Remote for ForgingPeers {
    fn place(
        &self,
        _: &Repo,
        _: &dfs_placement::ChunkId,
        shards: &dfs_node::testing::ShardSet,
    ) -> Result<Option<dfs_node::testing::Placed>, ChunkError> {
        let mut images = self.images.lock().unwrap();
        let mut holders = Vec::new();
        for index in 0..shards.encoded.shard_count() {
            let mut image = shards.headers[index].to_vec();
            image.extend_from_slice(shards.encoded.shard(index));
            if index as u8 == self.forged {
                let (header, body) = dfs_node::testing::ShardHeader::decode(&image).unwrap();
                let mut body = body.to_vec();
                body[10] ^= 0x5A;
                image = header.encode(&body);
            }
            images.insert(index as u8, image);
            holders.push((index as u8, self.holders[index].to_bytes()));
        }
        Ok(Some(dfs_node::testing::Placed { holders }))
    }

    fn cached(&self, _: &dfs_placement::ChunkId) -> Option<Vec<u8>> {
        None
    }

    fn remember(&self, _: &dfs_placement::ChunkId, _: &[u8]) {}

    fn locate(
        &self,
        _: &Repo,
        _: &dfs_placement::ChunkId,
    ) -> Option<(dfs_node::testing::ChunkRecord, dfs_node::testing::Placed)> {
        None
    }

    fn gather(
        &self,
        _: &Repo,
        id: &dfs_placement::ChunkId,
        layout: dfs_placement::Layout,
        _: &dfs_node::testing::Placed,
        want: usize,
        check: dfs_node::testing::ShardCheck<'_>,
    ) -> dfs_node::testing::Gathered {
        use dfs_node::testing::{ShardCheck, ShardHeader};
        let (checksum, hashes) = match check {
            ShardCheck::Header => (false, None),
            ShardCheck::Checksum(hashes) => (true, hashes.filter(|_| !self.ignore_hashes)),
        };
        let images = self.images.lock().unwrap();
        let mut out = dfs_node::testing::Gathered {
            images: vec![None; layout.shard_count()],
            from: vec![None; layout.shard_count()],
            forged: Vec::new(),
        };
        let mut got = 0;
        for index in 0..layout.shard_count() as u8 {
            if got == want {
                break;
            }
            let image = images[&index].clone();
            let expected = hashes.and_then(|h| h.of(index));
            if ShardHeader::decode_as(&image, *id, index, checksum).is_err() {
                continue;
            }
            if expected.is_some_and(|h| ShardHeader::carried_hash(&image).as_ref() != Some(h)) {
                out.forged.push((index, self.holders[usize::from(index)]));
                continue;
            }
            out.images[usize::from(index)] = Some(image);
            out.from[usize::from(index)] = Some(self.holders[usize::from(index)]);
            got += 1;
        }
        out
    }

    fn replace_forged(
        &self,
        _: &Repo,
        _: &dfs_placement::ChunkId,
        _: &dfs_node::testing::ShardSet,
        bad: &[(u8, libp2p::PeerId)],
    ) {
        self.reported.lock().unwrap().extend_from_slice(bad);
    }
}

#[test]
fn a_forged_shard_with_a_valid_checksum_is_read_around_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::open(dir.path()).unwrap());
    let plaintext: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 253) as u8).collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    // The writer's hashes catch it before decoding: the shard is skipped and reported.
    let peers = std::sync::Arc::new(ForgingPeers::new(1));
    let pipeline = Pipeline::with_remote(repo.clone(), peers.clone());
    let chunk = pipeline
        .put_chunk(&[3; 16], plaintext.clone(), &mut coder)
        .unwrap();
    assert!(repo.meta().shard_hashes(&chunk.id).unwrap().is_some());
    let read = pipeline.read_chunk(&chunk, &mut coder).unwrap();
    assert!(read == plaintext, "the read returned other bytes");
    assert_eq!(*peers.reported.lock().unwrap(), vec![(1, peers.holders[1])]);
    // A reader without them (a link holder) decodes the wrong bytes first, then finds k
    // shards that give the chunk id, and names the forged one.
    let blind = ForgingPeers {
        images: std::sync::Mutex::new(peers.images.lock().unwrap().clone()),
        ignore_hashes: true,
        ..ForgingPeers::new(1)
    };
    let blind = std::sync::Arc::new(blind);
    let pipeline = Pipeline::with_remote(repo.clone(), blind.clone());
    let (read, _) = pipeline.get_chunk(&chunk, &mut coder, false).unwrap();
    assert!(read == plaintext, "the read returned other bytes");
    assert_eq!(*blind.reported.lock().unwrap(), vec![(1, blind.holders[1])]);
    // Forged beyond what the parity can cover (three of 4+2): a clear error, no bytes.
    let mut images = blind.images.lock().unwrap();
    for index in [0u8, 2] {
        let (header, body) = dfs_node::testing::ShardHeader::decode(&images[&index]).unwrap();
        let mut body = body.to_vec();
        body[3] ^= 1;
        images.insert(index, header.encode(&body));
    }
    drop(images);
    let err = pipeline.get_chunk(&chunk, &mut coder, false).unwrap_err();
    assert!(matches!(err, ChunkError::Mismatch { .. }), "{err}");
}

/// A chunk of the private key scope (the own volume's) is opened on its AEAD tag alone, with
/// no hash of the chunk: no one else has its key, so no one else can make shards that pass
/// the tag. A forged shard fails the tag, and the read goes the checked way.
#[test]
fn a_private_chunk_is_opened_on_its_tag_and_a_forged_shard_is_still_read_around() {
    use dfs_node::KeyScope;
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::open(dir.path()).unwrap());
    let plaintext: Vec<u8> = (0..(1 << 20)).map(|i| (i * 11 % 251) as u8).collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    let peers = std::sync::Arc::new(ForgingPeers::new(2));
    let pipeline = Pipeline::with_remote(repo.clone(), peers.clone());
    let private = pipeline
        .put_chunk_in(KeyScope::Private, &[3; 16], plaintext.clone(), &mut coder)
        .unwrap();
    assert!(repo.meta().is_private(&private.id).unwrap());
    let read = pipeline.read_chunk(&private, &mut coder).unwrap();
    assert!(read == plaintext, "the read returned other bytes");
    assert_eq!(*peers.reported.lock().unwrap(), vec![(2, peers.holders[2])]);
    // The same content put for a link is another chunk under another key, never marked.
    let shareable = pipeline
        .put_chunk(&[4; 16], plaintext.clone(), &mut coder)
        .unwrap();
    assert_ne!(shareable.id, private.id);
    assert_ne!(shareable.key, private.key);
    assert!(!repo.meta().is_private(&shareable.id).unwrap());
}

/// Whoever holds a chunk's key (a link holder, a member of a shared volume) can seal other
/// bytes that pass its AEAD tag, and encode them into shards with valid checksums under the
/// chunk's id. A reader never returns them: the decoded chunk is not the chunk id, and the
/// writer's hashes (or, for a reader without them, every subset of k shards) say so.
#[test]
fn shards_of_other_bytes_sealed_under_the_chunk_key_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::open(dir.path()).unwrap());
    let plaintext: Vec<u8> = (0..(1 << 20)).map(|i| (i * 13 % 241) as u8).collect();
    let mut coder = dfs_placement::erasure::ShardCoder::default();
    let peers = std::sync::Arc::new(ForgingPeers::new(u8::MAX));
    let pipeline = Pipeline::with_remote(repo.clone(), peers.clone());
    let chunk = pipeline
        .put_chunk(&[3; 16], plaintext.clone(), &mut coder)
        .unwrap();
    let record = repo.meta().chunk(&chunk.id).unwrap().unwrap();
    // The key holder's forgery: other bytes of the same length, sealed under the chunk's key
    // (so the tag verifies), cut into shards that name the chunk and carry valid checksums.
    let evil: Vec<u8> = plaintext.iter().map(|b| b ^ 0x42).collect();
    let sealed = chunk.key.encrypt(evil.clone());
    assert_eq!(chunk.key.decrypt(sealed.clone()).unwrap(), evil);
    let forged =
        dfs_node::testing::encode_shards(&chunk.id, sealed, record.layout, &mut coder).unwrap();
    let mut images = peers.images.lock().unwrap();
    for index in 0..forged.encoded.shard_count() {
        let mut image = forged.headers[index].to_vec();
        image.extend_from_slice(forged.encoded.shard(index));
        images.insert(index as u8, image);
    }
    drop(images);
    // (Never unwrap_err: a failure would print a mebibyte of forged bytes.)
    let read = pipeline
        .read_chunk(&chunk, &mut coder)
        .map(|_| "the forged bytes");
    assert!(
        matches!(read, Err(ChunkError::Unreachable { .. })),
        "the writer's hashes turn every forged shard away: {read:?}"
    );
    let blind = std::sync::Arc::new(ForgingPeers {
        images: std::sync::Mutex::new(peers.images.lock().unwrap().clone()),
        ignore_hashes: true,
        ..ForgingPeers::new(u8::MAX)
    });
    let pipeline = Pipeline::with_remote(repo.clone(), blind);
    let read = pipeline
        .get_chunk(&chunk, &mut coder, false)
        .map(|_| "the forged bytes");
    assert!(matches!(read, Err(ChunkError::Mismatch { .. })), "{read:?}");
}
