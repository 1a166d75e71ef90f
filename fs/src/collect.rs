//! Reclaiming the space of a volume: what `dfs gc` does for the mounted folder.
//!
//! Retention is applied to every version (files that stopped changing and deleted files too),
//! then every chunk still needed is marked: the chunk trees of every file and of every retained
//! version, and of every write any shared volume's log holds (this peer's mounts of shared
//! volumes write their chunks under the same owner), interior nodes included. The volume's references to all other chunks are dropped
//! and the store's mark-and-sweep ([`Repo::gc`]) removes what no one refers to. A tree that
//! cannot be read stops the collection before anything is dropped: losing track of a chunk
//! must never delete it.

use std::collections::HashSet;

use dfs_node::{BlobRef, GcReport, LeafWalker, Pipeline, VOLUME_OWNER};
use dfs_placement::ChunkId;

use dfs_node::{GcError, TreeError};

use crate::local::LocalNamespace;
use crate::model::{FsError, Ino, Time};
use crate::versions;

/// Why a collection stopped (before removing anything, unless the sweep itself failed).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Meta(#[from] dfs_node::MetaError),
    #[error("cannot read the chunk tree of {what}: {source}; nothing was removed")]
    Tree {
        what: String,
        #[source]
        source: TreeError,
    },
    #[error(transparent)]
    Gc(#[from] GcError),
}

/// What one collection did.
#[derive(Debug, Default)]
pub struct CollectReport {
    pub versions_expired: usize,
    pub live_chunks: usize,
    pub volume_refs_dropped: usize,
    pub gc: GcReport,
}

/// Mark every chunk of `blob`'s tree as live.
fn mark(pipeline: &Pipeline, blob: &BlobRef, live: &mut HashSet<ChunkId>) -> Result<(), TreeError> {
    let Some(root) = blob.root else {
        return Ok(());
    };
    live.insert(root.id);
    let mut walker = LeafWalker::new(pipeline, blob, false)?;
    while let Some((leaf, _)) = walker.next_leaf()? {
        if !leaf.is_hole() {
            live.insert(leaf.id);
        }
    }
    live.extend(walker.interior.iter().map(|h| h.id));
    Ok(())
}

/// Expire versions, then drop the volume's references to chunks no file or version uses, and
/// sweep. Runs with the data directory locked (not while mounted).
pub fn collect(
    pipeline: &Pipeline,
    ns: &LocalNamespace,
    shared: &[BlobRef],
    now: Time,
) -> Result<CollectReport, CollectError> {
    let repo = pipeline.repo();
    let mut report = CollectReport::default();
    let inodes = ns.all_inodes(repo)?;
    let exists: HashSet<Ino> = inodes.iter().map(|(ino, _)| *ino).collect();
    let mut batch = dfs_node::FsBatch::default();
    report.versions_expired = versions::expire_all(
        repo,
        |ino| exists.contains(&ino),
        now,
        &repo.config().versions,
        &mut batch,
    )?;
    if !batch.is_empty() {
        repo.meta().fs_write(batch, true)?;
    }

    let mut live = HashSet::new();
    for (ino, inode) in &inodes {
        if let Some(blob) = &inode.content {
            mark(pipeline, blob, &mut live).map_err(|source| CollectError::Tree {
                what: format!("file {ino}"),
                source,
            })?;
        }
    }
    for (i, blob) in shared.iter().enumerate() {
        mark(pipeline, blob, &mut live).map_err(|source| CollectError::Tree {
            what: format!("shared-volume write {i}"),
            source,
        })?;
    }
    for v in versions::all(repo)? {
        mark(pipeline, &v.record.content, &mut live).map_err(|source| CollectError::Tree {
            what: format!("a version of file {}", v.ino),
            source,
        })?;
    }
    report.live_chunks = live.len();
    for (chunk, owner) in repo.meta().refs()? {
        if owner == VOLUME_OWNER && !live.contains(&chunk) {
            repo.meta().delete_ref(&chunk, &owner)?;
            report.volume_refs_dropped += 1;
        }
    }
    report.gc = repo.gc()?;
    Ok(report)
}
