//! The volume model: the types every namespace shares (inode numbers, [`Inode`], [`Kind`],
//! [`Time`], directory entries, the request values [`NewEntry`] and [`Rename`], [`FsError`])
//! and the checks every namespace makes of names. The namespaces themselves are
//! [`crate::local::LocalNamespace`] (the peer's own volume) and
//! [`crate::shared::SharedNamespace`] (a shared volume).

use std::time::{SystemTime, UNIX_EPOCH};

use dfs_node::{BlobError, BlobRef, ChunkError, MetaError};
use serde::{Deserialize, Serialize};

/// An inode number as the kernel knows it. The own volume's are given out once and kept in
/// RocksDB; a shared volume's are given out per mount as its nodes are first seen. Encoded as
/// the bare number (`serde(transparent)`), so records written before it was a type read back.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ino(pub u64);

impl Ino {
    /// The number as RocksDB keys hold it (big-endian, so keys sort by number).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_be_bytes(bytes: [u8; 8]) -> Self {
        Ino(u64::from_be_bytes(bytes))
    }

    /// The number given out after this one.
    pub fn next(self) -> Self {
        Ino(self.0 + 1)
    }
}

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub const ROOT: Ino = Ino(1);
pub const NAME_MAX: usize = 255;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(c: u8) -> Option<Kind> {
        [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDev,
            Kind::BlockDev,
        ]
        .get(c as usize)
        .copied()
    }

    /// The kind encoded in the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Some(Kind::File),
            libc::S_IFDIR => Some(Kind::Dir),
            libc::S_IFLNK => Some(Kind::Symlink),
            libc::S_IFIFO => Some(Kind::Fifo),
            libc::S_IFSOCK => Some(Kind::Socket),
            libc::S_IFCHR => Some(Kind::CharDev),
            libc::S_IFBLK => Some(Kind::BlockDev),
            _ => None,
        }
    }
}

/// A point in time with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub secs: i64,
    pub nsec: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nsec) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                Time { secs, nsec }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.secs as u64, self.nsec)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs())
                + std::time::Duration::from_nanos(self.nsec as u64)
        }
    }
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits, `mode & 0o7777`.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Bytes for files, the target length for symlinks, entry count for directories.
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    pub rdev: u32,
    /// The directory of the entry that last named this inode (for directories the only one; the
    /// root is its own parent), and that entry's name: a file's path for its versions.
    pub parent: Ino,
    pub name: Vec<u8>,
    /// Files: the committed content, if any has been written.
    pub content: Option<BlobRef>,
    /// Files: the chunk size the content is cut at (fixed for the file's life).
    pub chunk_size: u32,
    /// Symlinks: the target.
    pub target: Vec<u8>,
    /// Files of a shared volume: the version `content` is (see [`Base`]). Never stored.
    #[serde(skip)]
    pub base: Base,
}

/// The version of a file's content a writer started from, opaque to everything but the
/// backend that issued it (a shared volume names the write it replaces; the local one has
/// none).
pub type Base = Option<Vec<u8>>;

/// Why a filesystem operation failed; each maps to one errno in the FUSE adapter.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("file name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("result does not fit the buffer")]
    Range,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    TooLarge,
    #[error("no space left on device")]
    NoSpace,
    /// The volume's members would refuse the op (its signer is not a member, or may not do
    /// this): nothing was changed.
    #[error("refused by the volume's rules: {0}")]
    Refused(String),
    /// The caller is a reader of the volume: nothing may change through it.
    #[error("read-only file system: {0}")]
    ReadOnly(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("corrupt filesystem metadata: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl FsError {
    /// The errno this error is reported as.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NotPermitted => libc::EPERM,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::TooLarge => libc::EFBIG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Refused(_) => libc::EACCES,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::Chunk(e) if e.is_disk_full() => libc::ENOSPC,
            FsError::Blob(e) if e.is_disk_full() => libc::ENOSPC,
            FsError::Meta(_) | FsError::Corrupt(_) | FsError::Chunk(_) | FsError::Blob(_) => {
                libc::EIO
            }
        }
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

pub(crate) fn check_remove_name(name: &[u8]) -> Result<()> {
    match name {
        b"." => Err(FsError::Invalid("cannot remove .")),
        b".." => Err(FsError::NotEmpty),
        _ => Ok(()),
    }
}

/// Whether an entry of kind `is_dir` may go by rmdir (`dir`) or unlink; `is_empty` is asked
/// only for a directory removed by rmdir.
pub(crate) fn check_remove_kind(
    dir: bool,
    is_dir: bool,
    is_empty: impl FnOnce() -> Result<bool>,
) -> Result<()> {
    match (dir, is_dir) {
        (true, false) => Err(FsError::NotDir),
        (false, true) => Err(FsError::IsDir),
        (true, true) if !is_empty()? => Err(FsError::NotEmpty),
        _ => Ok(()),
    }
}

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid("bad file name"));
    }
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// A directory entry as listed by [`Namespace::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// A directory entry with the directory it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub parent: Ino,
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// Attributes to change in [`crate::volume::Volume::setattr`].
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    pub ctime: Option<Time>,
}

/// Who is asking, for ownership of new inodes.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// An entry to create: a file, directory, symlink or special file `name` in `parent`.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub parent: Ino,
    pub name: &'a [u8],
    pub kind: Kind,
    pub perm: u16,
    pub caller: Caller,
    /// The device number of a special file (0 otherwise).
    pub rdev: u32,
    /// A symlink's target (empty otherwise).
    pub target: &'a [u8],
}

impl<'a> NewEntry<'a> {
    /// `name` in `parent`, of `kind`, with no device number and no target.
    pub fn new(parent: Ino, name: &'a [u8], kind: Kind, perm: u16, caller: Caller) -> Self {
        Self {
            parent,
            name,
            kind,
            perm,
            caller,
            rdev: 0,
            target: &[],
        }
    }

    /// A symlink `name` in `parent` to `target`.
    pub fn symlink(parent: Ino, name: &'a [u8], target: &'a [u8], caller: Caller) -> Self {
        Self {
            target,
            ..Self::new(parent, name, Kind::Symlink, 0o777, caller)
        }
    }
}

/// One rename(2): `parent/name` to `newparent/newname`; with `noreplace` an existing target
/// is an error, with `exchange` both must exist and swap places.
#[derive(Debug, Clone, Copy)]
pub struct Rename<'a> {
    pub parent: Ino,
    pub name: &'a [u8],
    pub newparent: Ino,
    pub newname: &'a [u8],
    pub noreplace: bool,
    pub exchange: bool,
}

impl<'a> Rename<'a> {
    /// The checks every rename starts with: flags, `.`/`..`, the new name.
    pub(crate) fn check(&self) -> Result<()> {
        if self.noreplace && self.exchange {
            return Err(FsError::Invalid("RENAME_NOREPLACE with RENAME_EXCHANGE"));
        }
        for n in [self.name, self.newname] {
            if n == b"." || n == b".." {
                return Err(FsError::Invalid("cannot rename . or .."));
            }
        }
        check_name(self.newname)
    }

    /// A plain rename that replaces what is at the target.
    pub fn new(parent: Ino, name: &'a [u8], newparent: Ino, newname: &'a [u8]) -> Self {
        Self {
            parent,
            name,
            newparent,
            newname,
            noreplace: false,
            exchange: false,
        }
    }
}

/// The path of `inode` from the volume root (`/a/b/c`), through its last-named parents as
/// `inode_of` gives them; a parent that is gone shows as `.unlinked`.
pub fn path_through(inode: &Inode, mut inode_of: impl FnMut(Ino) -> Result<Inode>) -> Vec<u8> {
    let mut parts = vec![inode.name.clone()];
    let mut dir = inode.parent;
    for _ in 0..4096 {
        if dir == ROOT {
            break;
        }
        match inode_of(dir) {
            Ok(d) => {
                parts.push(d.name);
                dir = d.parent;
            }
            Err(_) => {
                parts.push(b".unlinked".to_vec());
                break;
            }
        }
    }
    parts.reverse();
    let mut path = Vec::new();
    for p in parts {
        path.push(b'/');
        path.extend_from_slice(&p);
    }
    path
}
