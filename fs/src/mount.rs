//! Mounting a volume: checks on the mount point, the FUSE session in the foreground, and a
//! clean unmount on SIGINT/SIGTERM or `dfs umount` (every open file committed, everything
//! synced).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use dfs_node::{EventKind, KeyScope, Pipeline};
use nix::sys::signal::{SigSet, Signal};

use crate::fuse::{DfsFs, Invalidator, Session, Unmounter};
use crate::model::{Caller, FsError};
use crate::quiesce::Requests;
use crate::shared::{Inval, SharedNamespace};
use crate::volume::Volume;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users use the mount (`allow_other`; non-root needs `user_allow_other` in
    /// /etc/fuse.conf).
    pub allow_other: bool,
    /// Mount over a directory that is not empty (its content is hidden while mounted).
    pub nonempty: bool,
    /// Threads serving FUSE requests.
    pub threads: usize,
    /// Mount this shared volume instead of the peer's own.
    pub shared: Option<SharedNamespace>,
    /// The kernel's read-ahead for the mount in KiB (0: leave the kernel's 128). Larger
    /// read-ahead makes larger FUSE reads, fewer of them: cold sequential reads over six peers
    /// 9% faster with 1024 (docs/placement.md). Setting it needs root (it is a sysfs knob);
    /// without, the kernel's stays and the mount works as before.
    pub read_ahead_kb: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            allow_other: false,
            nonempty: false,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            shared: None,
            read_ahead_kb: READ_AHEAD_KB,
        }
    }
}

/// The default read-ahead of a mount, in KiB: one FUSE request of the largest size fuser
/// negotiates (`max_readahead` and `max_write` of 1 MiB).
pub const READ_AHEAD_KB: u32 = 1024;

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {path} does not exist")]
    Missing { path: PathBuf },
    #[error("mount point {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("mount point {path} is not empty (use --nonempty to mount over it anyway)")]
    NotEmpty { path: PathBuf },
    #[error("mount point {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot open the volume: {0}")]
    Volume(#[from] FsError),
    #[error("cannot mount at {path}: {source} (is fuse3 installed and /dev/fuse usable?)")]
    Mount { path: PathBuf, source: io::Error },
    #[error("the FUSE session ended with an error: {0}")]
    Session(io::Error),
    #[error("flushing the volume at unmount: {0}")]
    Flush(FsError),
}

/// Check that `path` can be mounted on.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<(), MountError> {
    let inspect = |source| MountError::Inspect {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(inspect(e)),
    };
    if !meta.is_dir() {
        return Err(MountError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if !nonempty && std::fs::read_dir(path).map_err(inspect)?.next().is_some() {
        return Err(MountError::NotEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Signals that unmount cleanly.
pub struct UnmountSignals(SigSet);

/// Prepare this process for [`mount`]: call it first, before any thread exists (RocksDB starts
/// some), so that every thread blocks SIGINT, SIGTERM and SIGHUP and only the waiting thread
/// receives them. SIGINT and SIGTERM are reset to their default disposition, since a shell
/// starts background jobs with SIGINT ignored and `kill -INT` must still unmount.
pub fn prepare_signals() -> UnmountSignals {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = signals.thread_block();
    UnmountSignals(signals)
}

/// Mount the volume of the data directory under `pipeline` at `mountpoint` and serve it until it is unmounted (by
/// `dfs umount`, `fusermount3 -u`, or SIGINT/SIGTERM to this process). `ready` is called once
/// the mount is in place.
pub fn mount(
    pipeline: Pipeline,
    mountpoint: &Path,
    options: &MountOptions,
    signals: UnmountSignals,
    ready: impl FnOnce(),
) -> Result<(), MountError> {
    check_mountpoint(mountpoint, options.nonempty)?;
    // SAFETY: getuid/getgid have no preconditions.
    let owner = unsafe {
        Caller {
            uid: libc::getuid(),
            gid: libc::getgid(),
        }
    };
    let volume = Arc::new(match &options.shared {
        Some(shared) => {
            // Its chunks are written under the volume owner, like the own volume's, with keys
            // the other members read.
            pipeline
                .repo()
                .ensure_volume_owner()
                .map_err(FsError::from)?;
            Volume::with_namespace(pipeline, Box::new(shared.clone()), KeyScope::Shareable)
        }
        None => Volume::open(pipeline, owner)?,
    });

    let requests = Arc::new(Requests::default());
    let fs = DfsFs::new(volume.clone(), requests.clone());
    let mut session = Session::mount(fs, mountpoint, options.allow_other, options.threads)
        .map_err(|source| MountError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    if options.read_ahead_kb > 0 {
        set_read_ahead(mountpoint, options.read_ahead_kb);
    }
    let resender = match &options.shared {
        Some(shared) => Some(follow_shared(
            shared,
            session.invalidator(),
            volume.clone(),
            requests,
        )?),
        None => None,
    };
    let watcher = SignalWatcher::start(signals, session.unmounter());
    let at = mountpoint.display().to_string();
    let events = volume.repo.clone();
    events.record_event(EventKind::UserAction, &at, "mounted");
    ready();
    let ran = session.run();
    let flushed = volume.flush_all();
    // Every thread the mount started ends here: the shared volume's publisher (after
    // publishing the last ops) and follower, the resender (its queue closes with the
    // follower), the signal watcher.
    if let Some(shared) = &options.shared {
        shared.close();
    }
    if let Some(resender) = resender {
        let _ = resender.join();
    }
    watcher.stop();
    events.flush_usage();
    events.record_event(EventKind::UserAction, &at, "unmounted");
    ran.map_err(MountError::Session)?;
    flushed.map_err(MountError::Flush)
}

/// The thread that unmounts on SIGINT, SIGTERM or SIGHUP (blocked in every thread by
/// [`prepare_signals`], so only its `sigwait` takes them).
struct SignalWatcher {
    thread: std::thread::JoinHandle<()>,
    /// Set when the mount ended otherwise: the signal [`SignalWatcher::stop`] sends the thread
    /// then only wakes it.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl SignalWatcher {
    fn start(signals: UnmountSignals, mut unmounter: Unmounter) -> Self {
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = ended.clone();
        let thread = std::thread::spawn(move || {
            if let Ok(signal) = signals.0.wait() {
                if seen.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                tracing::info!(%signal, "unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::error!(error = %e, "unmount after signal failed");
                }
            }
        });
        Self { thread, ended }
    }

    /// End the thread (if no signal ended it) and wait for it.
    fn stop(self) {
        use std::os::unix::thread::JoinHandleExt;
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        if !self.thread.is_finished() {
            // SAFETY: the thread has not been joined, so its id is valid; SIGTERM is blocked in
            // it and waited for by its sigwait, which takes it (no handler runs, nothing else
            // of the process sees it).
            unsafe {
                libc::pthread_kill(self.thread.as_pthread_t(), libc::SIGTERM);
            }
        }
        let _ = self.thread.join();
    }
}

/// Set the kernel's read-ahead for the FUSE mount at `mountpoint` (its backing device info in
/// sysfs, found through /proc/self/mountinfo: a `stat` of the mount point would wait for this
/// very process to answer). A failure (not root, an older kernel) is logged and changes
/// nothing else.
fn set_read_ahead(mountpoint: &Path, kb: u32) {
    let result = std::fs::canonicalize(mountpoint)
        .and_then(|path| {
            let table = std::fs::read_to_string("/proc/self/mountinfo")?;
            mount_device(&table, &path).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "the mount is not in /proc/self/mountinfo",
                )
            })
        })
        .and_then(|device| {
            let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
            std::fs::write(&knob, format!("{kb}\n")).map(|()| knob)
        });
    match result {
        Ok(knob) => tracing::debug!(%knob, kb, "read-ahead set"),
        Err(e) => tracing::info!(
            error = %e,
            "cannot raise the mount's read-ahead (needs root); sequential reads stay slower"
        ),
    }
}

/// The `major:minor` of the newest mount at `path` in a /proc/self/mountinfo table.
fn mount_device(table: &str, path: &Path) -> Option<String> {
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        (unescape_mountinfo(point) == path.as_os_str().as_bytes()).then(|| device.to_string())
    })
}

/// Mount points in mountinfo have space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Apply a shared volume's remote changes as they come and make the kernel forget what they
/// touched, so `ls` and `cat` here see them without waiting for its caches to expire.
///
/// Each batch waits until every request that may have read the old state has replied, then
/// refreshes open files that have no writes of their own, then invalidates. A reply that has
/// been written is not yet installed, though: the kernel thread that waited for it installs it
/// after, and a lookup's reply installed after the invalidation would be cached for the whole
/// TTL (measured: 1 to 2 in 30 files stalled 10 s without this). So every batch is sent again
/// a little later ([`RESEND_AFTER`]).
fn follow_shared(
    shared: &SharedNamespace,
    invalidator: Invalidator,
    volume: Arc<Volume>,
    requests: Arc<Requests>,
) -> Result<std::thread::JoinHandle<()>, MountError> {
    let send = move |inval: &Inval| {
        // ENOENT: the kernel does not hold it, which is fine.
        if let Err(e) = invalidator.invalidate(inval) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!(?inval, error = %e, "kernel cache invalidation failed");
            }
        }
    };
    let send = Arc::new(send);
    let (retry, retries) = std::sync::mpsc::channel::<(Instant, Vec<Inval>)>();
    // Ends when the follower (and with it `retry`) is gone.
    let resender = {
        let send = send.clone();
        std::thread::spawn(move || {
            for (sent, batch) in retries {
                std::thread::sleep((sent + RESEND_AFTER).saturating_duration_since(Instant::now()));
                for inval in &batch {
                    send(inval);
                }
            }
        })
    };
    shared.follow(move |invals| {
        requests.wait_for_earlier();
        // Open files first (an open that read the old inode has finished by now), so the
        // kernel's next getattr sees their new size.
        for inval in &invals {
            if let Inval::Inode(ino) = inval {
                volume.reload_if_clean(*ino);
            }
        }
        tracing::debug!(?invals, "kernel caches invalidated");
        for inval in &invals {
            send(inval);
        }
        let _ = retry.send((Instant::now(), invals));
    })?;
    Ok(resender)
}

/// How long after a batch of invalidations it is sent again.
const RESEND_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Unmount a dfs mount point (what `dfs umount` does): the serving process then flushes and
/// exits.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let attempts: [(&str, &[&str]); 2] = [("fusermount3", &["-u"]), ("umount", &[])];
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        "neither fusermount3 nor umount found",
    );
    for (program, args) in attempts {
        match Command::new(program).args(args).arg(mountpoint).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                last = io::Error::other(if msg.is_empty() {
                    format!("{program} failed")
                } else {
                    msg
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_mount_at_a_path_names_its_device() {
        let table = "\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
43 22 0:39 / /mnt/my\\040files rw,nosuid - fuse dfs rw,user_id=0
44 22 0:40 / /mnt/other rw - fuse dfs rw
45 43 0:41 / /mnt/my\\040files rw,nosuid - fuse dfs rw,user_id=0
";
        assert_eq!(
            mount_device(table, Path::new("/mnt/my files")).as_deref(),
            Some("0:41")
        );
        assert_eq!(
            mount_device(table, Path::new("/mnt/other")).as_deref(),
            Some("0:40")
        );
        assert_eq!(mount_device(table, Path::new("/mnt/my\\040files")), None);
        assert_eq!(mount_device(table, Path::new("/elsewhere")), None);
        assert_eq!(mount_device("garbage\n\n", Path::new("/")), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("a\\040b\\011c\\134d"), b"a b\tc\\d");
        // Not an escape: kept as it is.
        assert_eq!(unescape_mountinfo("a\\9z\\"), b"a\\9z\\");
    }
}
