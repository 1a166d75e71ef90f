//! Where a mounted volume's namespace lives: the calls [`crate::volume::Volume`] and the FUSE
//! adapter make on inodes, directory entries and xattrs, as one trait with two implementations.
//!
//! - [`crate::local::LocalNamespace`]: the peer's own volume, in its RocksDB tables, with local inode
//!   numbers, hard links and recorded versions.
//! - [`crate::shared::SharedNamespace`]: a shared volume, the merged state of its replicated op
//!   log; every change is a signed op the other members apply too.
//!
//! Open files, buffered content, chunk workers and caches stay in `Volume`, the same for both.

use dfs_node::BlobRef;
use dfs_node::Repo;

use crate::model::{DirEntry, Ino, Inode, NewEntry, Rename, Result, Time};

pub use crate::model::Base;

/// The namespace of a mounted volume. Every method takes the data directory's `repo` for the
/// local namespace's sake; the shared one holds what it needs.
pub trait Namespace: Send + Sync {
    fn inode(&self, repo: &Repo, ino: Ino) -> Result<Inode>;

    /// Find `name` (also `.` and `..`) in directory `parent`.
    fn lookup(&self, repo: &Repo, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)>;

    /// Entries of a directory (without `.` and `..`), sorted by name.
    fn list(&self, repo: &Repo, dir: Ino) -> Result<Vec<DirEntry>>;

    /// Create a file, directory, symlink or special file.
    fn create(&self, repo: &Repo, entry: &NewEntry<'_>) -> Result<(Ino, Inode)>;

    /// Add a hard link `newparent/newname` to `ino`.
    fn link(&self, repo: &Repo, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Inode>;

    /// Remove `parent/name` (`dir`: rmdir, else unlink). Returns the inode and whether its last
    /// link is gone.
    fn remove(
        &self,
        repo: &Repo,
        parent: Ino,
        name: &[u8],
        dir: bool,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<(Ino, bool)>;

    /// rename(2) with its `RENAME_NOREPLACE` and `RENAME_EXCHANGE` flags.
    fn rename(
        &self,
        repo: &Repo,
        rename: &Rename<'_>,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<Option<Ino>>;

    /// Forget an inode whose last link went while it was open, now that it is closed.
    fn reap_if_unlinked(&self, repo: &Repo, ino: Ino) -> Result<()>;

    /// Install a file's new content (`content` `None`: unchanged) and the time of the writes
    /// that made it; `version`: record it as a version. `base` is the version the writer
    /// started from, and on return the version now installed.
    #[allow(clippy::too_many_arguments)]
    fn commit_content(
        &self,
        repo: &Repo,
        ino: Ino,
        content: Option<BlobRef>,
        size: u64,
        mtime: Option<Time>,
        version: bool,
        base: &mut Base,
    ) -> Result<()>;

    /// Changes whenever a version is recorded (for the `.dfs/versions` view).
    fn versions_generation(&self) -> u64;

    /// Read-modify-write an inode's attributes (setattr).
    fn update(
        &self,
        repo: &Repo,
        ino: Ino,
        f: &mut dyn FnMut(&mut Inode) -> Result<()>,
    ) -> Result<Inode>;

    fn get_xattr(&self, repo: &Repo, ino: Ino, name: &[u8]) -> Result<Vec<u8>>;

    /// Set an xattr; `create`: fail if it exists, `replace`: fail if it does not.
    fn set_xattr(
        &self,
        repo: &Repo,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()>;

    fn list_xattrs(&self, repo: &Repo, ino: Ino) -> Result<Vec<Vec<u8>>>;

    fn remove_xattr(&self, repo: &Repo, ino: Ino, name: &[u8]) -> Result<()>;

    /// The path of an inode from the volume root (`/a/b/c`).
    fn path_of(&self, repo: &Repo, inode: &Inode) -> Vec<u8>;

    /// How long the kernel may cache attributes and entries. The peer's own volume has one
    /// writer, this mount, so the kernel's view cannot go stale behind its back; a shared
    /// volume invalidates what remote changes touch, so it may allow longer.
    fn cache_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    /// Whether the caller ([`crate::acting`]) may change this namespace: a shared volume's
    /// reader may not ([`FsError::ReadOnly`]), so opening for writing fails at once rather
    /// than at close.
    fn may_write(&self) -> Result<()> {
        Ok(())
    }

    /// Commit every change durably (fsync of the namespace).
    fn sync(&self, repo: &Repo) -> Result<()> {
        repo.meta().sync_wal()?;
        Ok(())
    }
}
