//! Model test of file content: random writes, truncates, commits, reopens and reads against a
//! plain `Vec<u8>`, on a real data directory (RocksDB, shard files, background workers) with a
//! small chunk size so chunk boundaries, holes, early stores and multi-level trees all happen.

use std::sync::Arc;

use dfs_fs::file::{ChunkCache, FileContent, Io};
use dfs_fs::model::{Inode, Kind, Time, ROOT};
use dfs_node::{ChunkWorkers, Repo};
use proptest::prelude::*;

const CHUNK: u32 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        seed: u8,
    },
    Truncate(u64),
    Commit,
    /// Commit and start again from the committed inode (close and open).
    Reopen,
    Read {
        offset: u64,
        len: usize,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let max = 12 * CHUNK as u64;
    let op = prop_oneof![
        4 => (0..max, 0usize..3 * CHUNK as usize, any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => (0..max).prop_map(Op::Truncate),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        2 => (0..max, 0usize..3 * CHUNK as usize).prop_map(|(offset, len)| Op::Read { offset, len }),
    ];
    proptest::collection::vec(op, 1..40)
}

fn inode(content: Option<dfs_node::BlobRef>, size: u64) -> Inode {
    let now = Time::now();
    Inode {
        kind: Kind::File,
        perm: 0o644,
        uid: 0,
        gid: 0,
        nlink: 1,
        size,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        rdev: 0,
        parent: ROOT,
        name: b"f".to_vec(),
        content,
        chunk_size: CHUNK,
        target: Vec::new(),
        base: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn file_content_matches_a_byte_vector(ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        // A data directory with content must be private (Repo::open refuses it otherwise).
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
        std::fs::set_permissions(dir.path(), private).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!("[storage]\nchunk_size = {CHUNK}\nreplicate_below = 1024\ntree_fanout = 3\n"),
        ).unwrap();
        let repo = Arc::new(Repo::open(dir.path()).unwrap());
        repo.ensure_volume_owner().unwrap();
        let cache = ChunkCache::new(8 * CHUNK as usize);
        let pipeline = Arc::new(dfs_node::Pipeline::local(repo.clone()));
        let workers = ChunkWorkers::start(pipeline.clone(), 2);
        let io = Io { pipeline: &pipeline, cache: &cache, workers: &workers };
        let mut model: Vec<u8> = Vec::new();
        let mut file = FileContent::new(&inode(None, 0));
        // The last committed root, as the inode would hold it.
        let mut base = dfs_node::BlobRef::EMPTY;
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i / 7) as u8) | 1).collect();
                    file.write(io, offset, &data).unwrap();
                    let end = offset as usize + len;
                    if len > 0 && model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                Op::Truncate(size) => {
                    file.truncate(io, size).unwrap();
                    model.resize(size as usize, 0);
                }
                Op::Commit => {
                    if let Some(b) = file.commit(io).unwrap() {
                        base = b;
                    }
                }
                Op::Reopen => {
                    if let Some(b) = file.commit(io).unwrap() {
                        base = b;
                    }
                    // A fresh content from what the inode now holds.
                    file = FileContent::new(&inode(Some(base), file.size));
                }
                Op::Read { offset, len } => {
                    let got = file.read(io, offset, len).unwrap();
                    let start = (offset as usize).min(model.len());
                    let end = (offset as usize + len).min(model.len());
                    prop_assert_eq!(&got[..], &model[start..end]);
                }
            }
            prop_assert_eq!(file.size, model.len() as u64);
        }
        if let Some(b) = file.commit(io).unwrap() {
            base = b;
        }
        prop_assert_eq!(base.size, model.len() as u64);
        let mut reopened = FileContent::new(&inode(Some(base), file.size));
        let all = reopened.read(io, 0, model.len() + 10).unwrap();
        prop_assert!(all[..] == model[..], "content after commit differs");
    }
}
