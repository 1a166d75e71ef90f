//! dfs-fs: the filesystem layer, which turns directory trees into chunk trees and back.
//!
//! Today it owns snapshots ([`snapshot`]): a file, directory or symlink stored through the node's
//! chunk pipeline as a tree of entries (name, mode, mtime, content), named by a share link
//! ([`link`]) that carries the root chunk id and its key. The mounted volume (FUSE) grows here.

pub mod link;
pub mod snapshot;

pub use link::{LinkError, ShareLink};
pub use snapshot::{GetOutcome, PutOutcome, SnapshotError, VerifyReport};
