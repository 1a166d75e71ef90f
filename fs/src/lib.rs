//! dfs-fs: the filesystem layer, which turns directory trees into chunk trees and back.
//!
//! It owns snapshots ([`snapshot`]): a file, directory or symlink stored through the node's
//! chunk pipeline as a tree of entries (name, mode, mtime, content), named by a share link
//! ([`link`]) that carries the root chunk id and its key.
//!
//! And the mounted volume: [`model`] (the types of every namespace), [`local`] (the own
//! volume's inodes, directories and xattrs in RocksDB), [`shared`] (a shared volume), [`file`]
//! (buffered file content over chunk trees), [`volume`] (open files, the operations), [`fuse`]
//! (the adapter and its session, the only module that imports fuser) and [`mount`] (mounting and
//! unmounting, through `fuse::Session`).

pub mod acting;
pub mod collect;
pub mod crdt;
pub mod dotdfs;
pub mod file;
pub mod fsck;
pub mod fuse;
pub mod link;
pub mod local;
pub mod model;
pub mod mount;
pub mod namespace;
pub mod quiesce;
pub mod shared;
pub mod snapshot;
pub mod versions;
pub mod volume;

pub use link::{LinkError, ShareLink};
pub use snapshot::{GetOutcome, PutOutcome, SnapshotError, VerifyReport};
