//! The local shard store: one file per shard under `DATA/shards/<2 hex>/<chunk id>.<index>`.
//!
//! Writes go to `DATA/tmp/` and are renamed into place, so a shard file is either absent or
//! complete; a crash can leave only temporary files, which [`ShardStore::clean_tmp`] removes.
//! Durability is batched: [`ShardStore::sync`] flushes the whole filesystem once per put
//! (syncfs), far cheaper than an fsync per shard. Whole blocks are written past the page
//! cache where the filesystem allows it ([`direct`]).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dfs_placement::ChunkId;

mod direct;

/// An I/O failure in the store, with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct StoreError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl StoreError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the disk is full (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

/// Counters of the bytes that went through the store since it was opened.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub shard_bytes_written: AtomicU64,
    pub shard_bytes_read: AtomicU64,
    pub shards_written: AtomicU64,
}

/// A directory of shard files.
#[derive(Debug)]
pub struct ShardStore {
    shards: PathBuf,
    tmp: PathBuf,
    counters: StoreCounters,
    group: GroupSync,
    direct: direct::DirectWriter,
}

/// Group commit: writers that need durability share one `syncfs` instead of two fsyncs each.
/// A writer takes a ticket after its write; a sync that starts after the ticket covers it. One
/// writer at a time runs the sync; the others wait for it, and the next sync covers every
/// ticket taken while one ran. Under load many shards become durable per journal commit.
#[derive(Debug, Default)]
struct GroupSync {
    state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Tickets handed out.
    taken: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    running: bool,
}

/// One shard file found by [`ShardStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShard {
    pub chunk: ChunkId,
    pub index: u8,
    pub bytes: u64,
}

impl ShardStore {
    /// Open (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let shards = root.join("shards");
        let tmp = root.join("tmp");
        for dir in [&shards, &tmp] {
            fs::create_dir_all(dir).map_err(|e| StoreError::new("cannot create", dir, e))?;
        }
        for byte in 0..=255u8 {
            let dir = shards.join(format!("{byte:02x}"));
            fs::create_dir_all(&dir).map_err(|e| StoreError::new("cannot create", &dir, e))?;
        }
        Ok(Self {
            shards,
            tmp,
            counters: StoreCounters::default(),
            group: GroupSync::default(),
            direct: direct::DirectWriter::default(),
        })
    }

    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    /// Where shard `index` of `chunk` lives.
    pub fn path(&self, chunk: &ChunkId, index: u8) -> PathBuf {
        let hex = chunk.to_hex();
        self.shards.join(&hex[..2]).join(format!("{hex}.{index}"))
    }

    /// Write a shard file from its parts (header, body) atomically: temporary file, then rename.
    /// Not durable until [`ShardStore::sync`].
    pub fn write(&self, chunk: &ChunkId, index: u8, parts: &[&[u8]]) -> Result<(), StoreError> {
        self.write_file(chunk, index, parts)
    }

    /// Like [`ShardStore::write`], and durable on return, through a group commit (see
    /// [`GroupSync`]): the way to store shards that arrive concurrently from other peers.
    pub fn write_grouped(
        &self,
        chunk: &ChunkId,
        index: u8,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.write_file(chunk, index, parts)?;
        self.sync_grouped()
    }

    /// Wait until everything written before this call is durable (sharing the sync).
    fn sync_grouped(&self) -> Result<(), StoreError> {
        fn lock(m: &std::sync::Mutex<SyncState>) -> std::sync::MutexGuard<'_, SyncState> {
            m.lock().unwrap_or_else(|p| p.into_inner())
        }
        let mut st = lock(&self.group.state);
        st.taken += 1;
        let ticket = st.taken;
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                let upto = st.taken;
                drop(st);
                let result = self.sync();
                st = lock(&self.group.state);
                st.running = false;
                if result.is_ok() {
                    st.synced = st.synced.max(upto);
                }
                self.group.done.notify_all();
                result?;
                continue;
            }
            st = self.group.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn write_file(&self, chunk: &ChunkId, index: u8, parts: &[&[u8]]) -> Result<(), StoreError> {
        let dest = self.path(chunk, index);
        let tmp = self.tmp.join(format!(
            "{}.{index}.{}.{:x}",
            chunk.to_hex(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            let file = File::create(&tmp).map_err(|e| StoreError::new("cannot create", &tmp, e))?;
            self.direct
                .write(&file, parts)
                .map_err(|e| StoreError::new("cannot write", &tmp, e))?;
            fs::rename(&tmp, &dest).map_err(|e| StoreError::new("cannot rename into", &dest, e))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        self.counters.shard_bytes_written.fetch_add(
            parts.iter().map(|p| p.len() as u64).sum(),
            Ordering::Relaxed,
        );
        self.counters.shards_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Read a shard file; `Ok(None)` when it does not exist.
    pub fn read(&self, chunk: &ChunkId, index: u8) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(chunk, index);
        match fs::read(&path) {
            Ok(bytes) => {
                self.counters
                    .shard_bytes_read
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new("cannot read", &path, e)),
        }
    }

    /// Open a shard file for reading, with its length, and read its first `head.len()` bytes
    /// into `head` (zeros past the end of a shorter file); `Ok(None)` when it does not exist.
    /// The caller sends or reads it as it lies (the bytes are counted as read).
    pub fn open_file(
        &self,
        chunk: &ChunkId,
        index: u8,
        head: &mut [u8],
    ) -> Result<Option<(File, u64)>, StoreError> {
        let path = self.path(chunk, index);
        let fail = |e| StoreError::new("cannot read", &path, e);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let len = file.metadata().map_err(fail)?.len();
        let mut filled = 0;
        while filled < head.len() {
            match file.read_at(&mut head[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        self.counters
            .shard_bytes_read
            .fetch_add(len, Ordering::Relaxed);
        Ok(Some((file, len)))
    }

    /// Read a shard whose file should be `header.len() + body_len` bytes: the header into
    /// `header`, the body appended to `out` (no intermediate buffer). `Ok(false)` when the file
    /// is absent or has another length, and then `out` is as it was.
    pub fn read_into(
        &self,
        chunk: &ChunkId,
        index: u8,
        header: &mut [u8],
        body_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        let path = self.path(chunk, index);
        let fail = |e| StoreError::new("cannot read", &path, e);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(fail(e)),
        };
        let expected = (header.len() + body_len) as u64;
        if file.metadata().map_err(fail)?.len() != expected {
            return Ok(false);
        }
        let before = out.len();
        file.read_exact(header).map_err(fail)?;
        let got = file.take(body_len as u64).read_to_end(out).map_err(fail)?;
        if got != body_len {
            out.truncate(before);
            return Ok(false);
        }
        self.counters
            .shard_bytes_read
            .fetch_add(expected, Ordering::Relaxed);
        Ok(true)
    }

    /// Size of a shard file, `None` when absent.
    pub fn size(&self, chunk: &ChunkId, index: u8) -> Result<Option<u64>, StoreError> {
        let path = self.path(chunk, index);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new("cannot stat", &path, e)),
        }
    }

    /// Remove a shard file; returns the bytes freed (0 if it was absent).
    pub fn remove(&self, chunk: &ChunkId, index: u8) -> Result<u64, StoreError> {
        let path = self.path(chunk, index);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::new("cannot stat", &path, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::new("cannot remove", &path, e)),
        }
    }

    /// Every shard file in the store, with files whose names are not shard names reported as
    /// `Err(path)` so the caller can decide what to do with them.
    pub fn list(&self) -> Result<Vec<Result<StoredShard, PathBuf>>, StoreError> {
        let mut out = Vec::new();
        for byte in 0..=255u8 {
            let dir = self.shards.join(format!("{byte:02x}"));
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::new("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::new("cannot list", &dir, e))?;
                let path = entry.path();
                let parsed = entry.file_name().to_str().and_then(parse_shard_name);
                match (parsed, entry.metadata()) {
                    (Some((chunk, index)), Ok(meta)) => out.push(Ok(StoredShard {
                        chunk,
                        index,
                        bytes: meta.len(),
                    })),
                    _ => out.push(Err(path)),
                }
            }
        }
        Ok(out)
    }

    /// Remove leftovers of interrupted writes; returns the bytes freed.
    pub fn clean_tmp(&self) -> Result<u64, StoreError> {
        let mut freed = 0;
        let entries =
            fs::read_dir(&self.tmp).map_err(|e| StoreError::new("cannot list", &self.tmp, e))?;
        for entry in entries.flatten() {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(entry.path()).is_ok() {
                freed += len;
            }
        }
        Ok(freed)
    }

    /// Make every shard written so far durable (one syncfs for the filesystem holding the store).
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.shards)
            .map_err(|e| StoreError::new("cannot open", &self.shards, e))?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        if rc != 0 {
            return Err(StoreError::new(
                "cannot sync",
                &self.shards,
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

fn parse_shard_name(name: &str) -> Option<(ChunkId, u8)> {
    let (hex, index) = name.split_once('.')?;
    Some((hex.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let id = ChunkId([0x5a; 32]);
        assert_eq!(store.read(&id, 0).unwrap(), None);
        store.write(&id, 3, &[b"hel", b"lo"]).unwrap();
        assert_eq!(store.read(&id, 3).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(store.size(&id, 3).unwrap(), Some(5));
        std::fs::write(dir.path().join("shards/5a/junk"), b"x").unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&Ok(StoredShard {
            chunk: id,
            index: 3,
            bytes: 5
        })));
        assert_eq!(store.remove(&id, 3).unwrap(), 5);
        assert_eq!(store.remove(&id, 3).unwrap(), 0);
        store.sync().unwrap();
    }
}
