//! Snapshots: a file, directory or symlink tree stored through the chunk pipeline, and restored.
//!
//! Each [`Entry`] records a name, mode, mtime and content: a file's bytes as a chunk tree, a
//! directory's entries as a serialised listing (itself a chunk tree, so a directory of any size
//! works), a symlink's target. The root entry is stored as one chunk; its id and key form the
//! share link. Restoring writes into a temporary sibling and renames it into place only when every
//! byte has been verified, so a failed `get` never leaves wrong or partial output behind.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dfs_node::{
    check_blob, read_blob, read_blob_to_vec, write_blob, BlobError, BlobRef, ChunkError,
    ChunkHealth, ChunkRef, OwnerId, Pipeline, ReadReport,
};
use dfs_placement::erasure::ShardCoder;
use dfs_placement::ChunkId;
use serde::{Deserialize, Serialize};

use crate::link::ShareLink;

const FORMAT_V1: u8 = 1;
/// The largest directory listing read: over a million entries with long names. A link's
/// author chooses the listing's size, and holes cost it nothing, so the size is checked before
/// the listing is read into memory.
pub const MAX_LISTING: u64 = 256 << 20;

/// One stored file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name bytes (no `/`; not `.` or `..`).
    pub name: Vec<u8>,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub kind: EntryKind,
}

/// What an entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File(BlobRef),
    /// A serialised [`Listing`].
    Dir(BlobRef),
    Symlink(Vec<u8>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Listing {
    format: u8,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RootRecord {
    format: u8,
    entry: Entry,
}

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Blob {
        path: String,
        #[source]
        source: BlobError,
    },
    #[error("the link's root is not a dfs snapshot: {0}")]
    Malformed(String),
    #[error("the link points to a {kind}, which cannot be written to stdout; give -o DIR")]
    NotAFile { kind: &'static str },
    #[error("{path} already exists (use --force to replace a file)")]
    Exists { path: PathBuf },
    #[error("{0}")]
    Meta(#[from] dfs_node::MetaError),
    #[error("{0}")]
    Gc(#[from] dfs_node::GcError),
}

impl SnapshotError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn blob(path: &Path) -> impl FnOnce(BlobError) -> SnapshotError + '_ {
        move |source| SnapshotError::Blob {
            path: path.display().to_string(),
            source,
        }
    }

    /// True when the cause is a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SnapshotError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            SnapshotError::Blob { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }
}

/// Counts gathered while putting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PutStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Sockets, fifos and devices, which a snapshot does not hold.
    pub skipped: Vec<PathBuf>,
}

/// The result of a successful put.
#[derive(Debug)]
pub struct PutOutcome {
    pub link: ShareLink,
    pub stats: PutStats,
}

/// Store the tree at `path` and commit it; on any failure nothing of it stays in the store.
pub fn put_path(pipeline: &Pipeline, path: &Path) -> Result<PutOutcome, SnapshotError> {
    let meta = fs::symlink_metadata(path).map_err(SnapshotError::io(path))?;
    let name = entry_name(path, &meta);
    let session = pipeline.repo().begin_put(&String::from_utf8_lossy(&name))?;
    let mut ctx = PutContext {
        pipeline,
        owner: *session.owner(),
        data_dir: fs::metadata(pipeline.repo().path())
            .map(|m| (m.dev(), m.ino()))
            .ok(),
        stats: PutStats::default(),
    };
    let owner = ctx.owner;
    let stored = (|| {
        let entry = put_entry(&mut ctx, path, name, &meta)?;
        let record = RootRecord {
            format: FORMAT_V1,
            entry,
        };
        let bytes =
            postcard::to_stdvec(&record).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        pipeline
            .put_chunk(&owner, bytes, &mut ShardCoder::default())
            .map_err(|e| SnapshotError::blob(path)(BlobError::Chunk(e)))
    })();
    match stored {
        Ok(root) => {
            pipeline
                .repo()
                .commit_put(session, (root.id, root.key), ctx.stats.bytes)?;
            Ok(PutOutcome {
                link: ShareLink {
                    root: root.id,
                    key: root.key,
                },
                stats: ctx.stats,
            })
        }
        Err(e) => {
            if let Err(gc) = pipeline.repo().abort_put(session) {
                tracing::warn!(error = %gc, "cleaning up after a failed put");
            }
            Err(e)
        }
    }
}

/// The name a put records for `path`: its last component, or `root` for `/`.
fn entry_name(path: &Path, meta: &fs::Metadata) -> Vec<u8> {
    let canonical = if meta.is_dir() {
        fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    } else {
        path.to_path_buf()
    };
    canonical
        .file_name()
        .map_or_else(|| b"root".to_vec(), |n| n.as_bytes().to_vec())
}

/// State of one put while it walks the tree.
struct PutContext<'r> {
    pipeline: &'r Pipeline,
    owner: OwnerId,
    /// (device, inode) of the data directory, which a put never descends into: storing the store
    /// inside itself would never end.
    data_dir: Option<(u64, u64)>,
    stats: PutStats,
}

fn put_entry(
    ctx: &mut PutContext,
    path: &Path,
    name: Vec<u8>,
    meta: &fs::Metadata,
) -> Result<Entry, SnapshotError> {
    let (pipeline, owner) = (ctx.pipeline, ctx.owner);
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        let mut file = File::open(path).map_err(SnapshotError::io(path))?;
        let blob = write_blob(pipeline, &owner, &mut file).map_err(SnapshotError::blob(path))?;
        ctx.stats.files += 1;
        ctx.stats.bytes += blob.size;
        EntryKind::File(blob)
    } else if file_type.is_dir() {
        let mut children: Vec<(OsString, PathBuf)> = fs::read_dir(path)
            .map_err(SnapshotError::io(path))?
            .map(|e| e.map(|e| (e.file_name(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(SnapshotError::io(path))?;
        children.sort();
        let mut entries = Vec::with_capacity(children.len());
        for (child_name, child_path) in children {
            let child_meta =
                fs::symlink_metadata(&child_path).map_err(SnapshotError::io(&child_path))?;
            let t = child_meta.file_type();
            let is_data_dir = ctx.data_dir == Some((child_meta.dev(), child_meta.ino()));
            if !(t.is_file() || t.is_dir() || t.is_symlink()) || is_data_dir {
                ctx.stats.skipped.push(child_path);
                continue;
            }
            entries.push(put_entry(
                ctx,
                &child_path,
                child_name.into_vec(),
                &child_meta,
            )?);
        }
        let listing = Listing {
            format: FORMAT_V1,
            entries,
        };
        let bytes =
            postcard::to_stdvec(&listing).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let blob = write_blob(pipeline, &owner, &mut Cursor::new(bytes))
            .map_err(SnapshotError::blob(path))?;
        ctx.stats.dirs += 1;
        EntryKind::Dir(blob)
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(SnapshotError::io(path))?;
        ctx.stats.symlinks += 1;
        EntryKind::Symlink(target.into_os_string().into_vec())
    } else {
        return Err(SnapshotError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "not a file, directory or symlink",
            ),
        });
    };
    Ok(Entry {
        name,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        kind,
    })
}

/// Read and decode the root entry of a link.
pub fn read_root(
    pipeline: &Pipeline,
    link: &ShareLink,
    repair: bool,
) -> Result<(Entry, ChunkHealth), SnapshotError> {
    let root = ChunkRef {
        id: link.root,
        key: link.key,
        len: 0,
    };
    let (plain, health) = pipeline
        .get_chunk(&root, &mut ShardCoder::default(), repair)
        .map_err(|e| SnapshotError::Blob {
            path: "link root".into(),
            source: BlobError::Chunk(e),
        })?;
    Ok((decode_root(&plain)?, health))
}

/// The entry a link's root chunk names (decrypted: `plain`), refused unless well formed with
/// a valid name. A link's author chooses every byte of it (fuzz/fuzz_targets/link_tree.rs).
pub fn decode_root(plain: &[u8]) -> Result<Entry, SnapshotError> {
    let record: RootRecord =
        postcard::from_bytes(plain).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if record.format != FORMAT_V1 {
        return Err(SnapshotError::Malformed(format!(
            "unknown format {}",
            record.format
        )));
    }
    check_name(&record.entry.name)?;
    Ok(record.entry)
}

fn read_listing(
    pipeline: &Pipeline,
    blob: &BlobRef,
    path: &Path,
    repair: bool,
) -> Result<(Vec<Entry>, ReadReport), SnapshotError> {
    if blob.size > MAX_LISTING {
        return Err(SnapshotError::Malformed(format!(
            "directory {}: a listing of {} bytes (at most {MAX_LISTING} are read)",
            path.display(),
            blob.size
        )));
    }
    let (bytes, report) =
        read_blob_to_vec(pipeline, blob, repair).map_err(SnapshotError::blob(path))?;
    Ok((decode_listing(&bytes, path)?, report))
}

/// The entries of directory `path`'s listing (`bytes`), refused unless well formed with valid
/// names. A link's author chooses every byte of it (fuzz/fuzz_targets/link_tree.rs).
pub fn decode_listing(bytes: &[u8], path: &Path) -> Result<Vec<Entry>, SnapshotError> {
    let listing: Listing = postcard::from_bytes(bytes)
        .map_err(|e| SnapshotError::Malformed(format!("directory {}: {e}", path.display())))?;
    if listing.format != FORMAT_V1 {
        return Err(SnapshotError::Malformed(format!(
            "directory {}: unknown format {}",
            path.display(),
            listing.format
        )));
    }
    for entry in &listing.entries {
        check_name(&entry.name)?;
    }
    Ok(listing.entries)
}

/// Refuse names that would escape the destination.
fn check_name(name: &[u8]) -> Result<(), SnapshotError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(SnapshotError::Malformed(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Where `get` wrote, and what it met.
#[derive(Debug)]
pub struct GetOutcome {
    pub path: PathBuf,
    pub report: ReadReport,
}

/// Where to restore a link: into `out` if it is a directory, else at `out`.
pub fn destination(
    out: &Path,
    name: &[u8],
    force: bool,
    is_dir: bool,
) -> Result<PathBuf, SnapshotError> {
    let dest = match fs::metadata(out) {
        Ok(m) if m.is_dir() => out.join(OsStr::from_bytes(name)),
        _ => out.to_path_buf(),
    };
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(SnapshotError::Io {
                path: parent.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            });
        }
    }
    match fs::symlink_metadata(&dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dest),
        Err(e) => Err(SnapshotError::Io {
            path: dest,
            source: e,
        }),
        Ok(m) if force && !m.is_dir() && !is_dir => Ok(dest),
        Ok(_) => Err(SnapshotError::Exists { path: dest }),
    }
}

/// Restore the tree behind `link` at (or into) `out`.
pub fn get_link(
    pipeline: &Pipeline,
    link: &ShareLink,
    out: &Path,
    force: bool,
) -> Result<GetOutcome, SnapshotError> {
    let (root, _) = read_root(pipeline, link, true)?;
    let dest = destination(
        out,
        &root.name,
        force,
        matches!(root.kind, EntryKind::Dir(_)),
    )?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".dfs-partial-{:016x}", rand_u64()));
    let mut report = ReadReport::default();
    let restored = restore_entry(pipeline, &root, &tmp, &mut report)
        .and_then(|()| fs::rename(&tmp, &dest).map_err(SnapshotError::io(&dest)));
    if let Err(e) = restored {
        let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
        return Err(e);
    }
    Ok(GetOutcome { path: dest, report })
}

/// Stream a file link's content to `out` (e.g. stdout); fails for directories.
pub fn cat_link(
    pipeline: &Pipeline,
    link: &ShareLink,
    out: &mut dyn Write,
) -> Result<ReadReport, SnapshotError> {
    let (root, _) = read_root(pipeline, link, true)?;
    match &root.kind {
        EntryKind::File(blob) => {
            read_blob(pipeline, blob, out, true).map_err(SnapshotError::blob(Path::new("-")))
        }
        EntryKind::Dir(_) => Err(SnapshotError::NotAFile { kind: "directory" }),
        EntryKind::Symlink(_) => Err(SnapshotError::NotAFile { kind: "symlink" }),
    }
}

fn rand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64).rotate_left(32)
}

fn restore_entry(
    pipeline: &Pipeline,
    entry: &Entry,
    path: &Path,
    report: &mut ReadReport,
) -> Result<(), SnapshotError> {
    match &entry.kind {
        EntryKind::File(blob) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(SnapshotError::io(path))?;
            let got =
                read_blob(pipeline, blob, &mut file, true).map_err(SnapshotError::blob(path))?;
            report.merge(&got);
            file.set_permissions(fs::Permissions::from_mode(entry.mode))
                .map_err(SnapshotError::io(path))?;
        }
        EntryKind::Dir(blob) => {
            fs::create_dir(path).map_err(SnapshotError::io(path))?;
            let (entries, got) = read_listing(pipeline, blob, path, true)?;
            report.merge(&got);
            for child in &entries {
                restore_entry(
                    pipeline,
                    child,
                    &path.join(OsStr::from_bytes(&child.name)),
                    report,
                )?;
            }
            fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))
                .map_err(SnapshotError::io(path))?;
        }
        EntryKind::Symlink(target) => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
                .map_err(SnapshotError::io(path))?;
        }
    }
    set_mtime(path, entry.mtime, entry.mtime_nsec).map_err(SnapshotError::io(path))
}

fn set_mtime(path: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as libc::c_long,
        },
    ];
    // SAFETY: `c_path` is a valid NUL-terminated string and `times` two initialised timespecs,
    // both alive for the duration of the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One damaged chunk found by [`verify_link`].
#[derive(Debug, Clone)]
pub struct Damage {
    /// Path inside the snapshot (`/` for the root).
    pub path: String,
    pub chunk: ChunkId,
    pub missing: Vec<u8>,
    pub corrupt: Vec<u8>,
    pub repaired: Vec<u8>,
    pub lost: bool,
}

/// What [`verify_link`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub chunks: u64,
    pub healthy: u64,
    pub damaged: Vec<Damage>,
    /// Parts that could not even be walked (a lost directory listing or tree node).
    pub unreadable: Vec<String>,
}

impl VerifyReport {
    pub fn lost(&self) -> usize {
        self.damaged.iter().filter(|d| d.lost).count() + self.unreadable.len()
    }

    pub fn is_healthy(&self) -> bool {
        self.damaged.is_empty() && self.unreadable.is_empty()
    }

    fn record(&mut self, path: &str, health: ChunkHealth) {
        self.chunks += 1;
        if health.is_healthy() {
            self.healthy += 1;
            return;
        }
        self.damaged.push(Damage {
            path: path.to_string(),
            chunk: health.id,
            missing: health.missing(),
            corrupt: health.corrupt(),
            repaired: health.repaired.clone(),
            lost: health.is_lost(),
        });
    }
}

/// Check every shard of every chunk under `link`; with `repair`, rewrite what can be rebuilt.
pub fn verify_link(
    pipeline: &Pipeline,
    link: &ShareLink,
    repair: bool,
) -> Result<VerifyReport, SnapshotError> {
    let mut report = VerifyReport::default();
    let root = match read_root(pipeline, link, repair) {
        Ok((entry, health)) => {
            report.record("/", health);
            entry
        }
        Err(SnapshotError::Blob {
            source: BlobError::Chunk(e),
            ..
        }) if is_loss(&e) => {
            let (_, health) = pipeline
                .inspect_chunk(&link.root, &mut ShardCoder::default(), false)
                .map_err(|e| SnapshotError::blob(Path::new("/"))(BlobError::Chunk(e)))?;
            report.record("/", health);
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    verify_entry(pipeline, &root, "", repair, &mut report)?;
    Ok(report)
}

fn is_loss(e: &ChunkError) -> bool {
    matches!(e, ChunkError::Lost { .. } | ChunkError::Absent { .. })
}

fn verify_entry(
    pipeline: &Pipeline,
    entry: &Entry,
    parent: &str,
    repair: bool,
    report: &mut VerifyReport,
) -> Result<(), SnapshotError> {
    let path = format!("{parent}/{}", String::from_utf8_lossy(&entry.name));
    let blob = match &entry.kind {
        EntryKind::File(blob) | EntryKind::Dir(blob) => blob,
        EntryKind::Symlink(_) => return Ok(()),
    };
    let walked = check_blob(pipeline, blob, repair, &mut |health| {
        report.record(&path, health)
    });
    match walked {
        Ok(()) => {}
        Err(BlobError::Chunk(e)) if is_loss(&e) => {
            report.unreadable.push(format!("{path}: {e}"));
            return Ok(());
        }
        Err(e) => return Err(SnapshotError::Blob { path, source: e }),
    }
    if let EntryKind::Dir(blob) = &entry.kind {
        match read_listing(pipeline, blob, Path::new(&path), false) {
            Ok((children, _)) => {
                for child in &children {
                    verify_entry(pipeline, child, &path, repair, report)?;
                }
            }
            Err(SnapshotError::Blob {
                source: BlobError::Chunk(e),
                ..
            }) if is_loss(&e) => {
                report.unreadable.push(format!("{path}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_larger_than_any_directory_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let repo = Pipeline::local(std::sync::Arc::new(
            dfs_node::Repo::open(&data).expect("open repo"),
        ));
        // A link's author can claim any size: a tree of holes costs it nothing to store, and
        // reading it would cost the reader that much memory.
        let blob = BlobRef {
            size: 1 << 40,
            ..BlobRef::EMPTY
        };
        let err = read_listing(&repo, &blob, Path::new("d"), false).expect_err("refused");
        assert!(
            matches!(&err, SnapshotError::Malformed(m) if m.contains("at most")),
            "{err}"
        );
    }
}
