//! The local disk cache of chunks: ciphertexts fetched from remote peers, kept under
//! `DATA/cache/` so a chunk read twice crosses the network once.
//!
//! Owns the directory `DATA/cache/` and nothing else: one file per chunk at
//! `<2 hex>/<64 hex>`, named by the chunk id (blake3 of the ciphertext), and temporary files in
//! `tmp/`. Data flow: the read path asks [`DiskCache::get`] before fetching a chunk from its
//! peers and hands what it fetched (and verified) to [`DiskCache::put`]. Since entries are
//! ciphertext, the cache holds nothing a peer's shard store would not.
//!
//! Guarantees:
//! - Every read is verified: a file whose blake3 is not its name (bit rot, a torn write after a
//!   crash, tampering) is deleted and reported as a miss. The cache never fails a read: any I/O
//!   error is a miss, and a put that cannot be written (disk full) is logged and skipped.
//! - The bytes of the files under the directory (temporary files included) never exceed the
//!   limit, not even while puts run concurrently: a put reserves its bytes, evicting
//!   least-recently-used entries first, before it writes anything, and eviction unlinks files
//!   before their bytes can be reserved again.
//! - A file is complete or absent: it is written in `tmp/` and renamed into place. Nothing is
//!   fsynced (a torn entry after a crash fails verification and is dropped).
//! - Recency lives in memory (an LRU list over the entries); across restarts it is approximated
//!   by file mtimes, which a hit refreshes at most once a minute. [`DiskCache::open`] orders
//!   existing entries by mtime, and [`prune_dir`] (for a directory no cache in this process
//!   holds, e.g. from the CLI while a peer runs) removes the oldest mtimes first.
//! - Files deleted behind the cache's back are misses that correct the byte count; files added
//!   behind its back are not seen until the next open.
//!
//! [`Filler`] writes entries from a thread of its own, so a read does not wait for the cache
//! file it leaves behind (a fifth of a cold read's time when written inline).
//!
//! Admission: by default a chunk enters the cache on its second fetch from the network, not its
//! first ([`DiskCache::admit`]). Writing a fetched chunk to disk costs about as much CPU as
//! fetching it, and a file streamed once (a video, a backup being restored) would otherwise push
//! out everything that is read again and again. The chunks fetched once are remembered as
//! "ghosts" (ids only, the newest [`MAX_GHOSTS`]) in `DATA/cache.ghosts`, beside the cache
//! directory, so a second fetch counts across restarts.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use dfs_placement::ChunkId;
use lru::LruCache;
use serde::{Deserialize, Serialize};

/// Name of the cache directory inside a data directory.
pub const CACHE_DIR: &str = "cache";

/// Name of the directory of temporary files inside the cache directory.
const TMP_DIR: &str = "tmp";

/// A hit refreshes the file's mtime (recency across restarts) only when it is older than this,
/// so a hot chunk does not cost a metadata write per read.
const TOUCH_AFTER: Duration = Duration::from_secs(60);

/// Where the first fetches of chunks not cached yet are remembered: `DATA/cache.ghosts`.
pub fn ghosts_file(data: &Path) -> PathBuf {
    data.join(format!("{CACHE_DIR}.ghosts"))
}

/// The cache directory of the data directory `data`: `DATA/cache`.
pub fn cache_dir(data: &Path) -> PathBuf {
    data.join(CACHE_DIR)
}

/// An I/O failure on the cache directory, with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct CacheError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl CacheError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the cache holds and how it has been used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Chunks held.
    pub entries: u64,
    /// Bytes of the chunks held.
    pub bytes: u64,
    /// Most bytes the cache may hold.
    pub limit: u64,
    /// Reads answered from the cache (verified) since it was opened; 0 from [`scan`].
    pub hits: u64,
    /// Reads the cache could not answer (absent, vanished or corrupt); 0 from [`scan`].
    pub misses: u64,
    /// Entries removed to make room for new ones or to respect a lowered limit (not by
    /// [`DiskCache::prune`]); 0 from [`scan`].
    pub evictions: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub removed_entries: u64,
    pub freed_bytes: u64,
}

/// A size-bounded, least-recently-used cache of chunk ciphertexts in one directory.
///
/// One `DiskCache` per directory and process: two caches over the same directory would each
/// count only their own bytes.
pub struct DiskCache {
    dir: PathBuf,
    tmp: PathBuf,
    limit: u64,
    state: Mutex<State>,
    /// Chunks fetched once; `None` when every fetched chunk is admitted.
    ghosts: Option<Mutex<Ghosts>>,
}

/// Ghost entries remembered (32 bytes each on disk, about three times that in memory).
pub const MAX_GHOSTS: usize = 1 << 15;

/// Ids of chunks fetched once and not cached, oldest first, mirrored in an append-only file
/// that is rewritten with the newer half when it holds [`MAX_GHOSTS`]. Losing the file loses
/// nothing but some second chances.
struct Ghosts {
    path: PathBuf,
    set: HashSet<ChunkId>,
    order: VecDeque<ChunkId>,
    file: Option<File>,
}

impl Ghosts {
    fn open(path: PathBuf) -> Self {
        let mut ghosts = Ghosts {
            path,
            set: HashSet::new(),
            order: VecDeque::new(),
            file: None,
        };
        if let Ok(bytes) = fs::read(&ghosts.path) {
            for id in bytes.chunks_exact(ChunkId::LEN) {
                if let Ok(id) = <[u8; 32]>::try_from(id) {
                    ghosts.remember(ChunkId(id));
                }
            }
        }
        ghosts.file = File::options()
            .create(true)
            .append(true)
            .open(&ghosts.path)
            .map_err(|e| tracing::debug!(path = %ghosts.path.display(), error = %e, "disk cache: ghosts kept in memory only"))
            .ok();
        ghosts
    }

    fn remember(&mut self, id: ChunkId) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_GHOSTS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// True when `id` was fetched before (it is then forgotten as a ghost); otherwise it is
    /// remembered for next time.
    fn seen_before(&mut self, id: &ChunkId) -> bool {
        if self.set.remove(id) {
            self.order.retain(|g| g != id);
            return true;
        }
        self.remember(*id);
        if self.order.len() >= MAX_GHOSTS {
            self.compact();
        } else if let Some(file) = &mut self.file {
            if let Err(e) = file.write_all(id.as_bytes()) {
                tracing::debug!(error = %e, "disk cache: cannot record a ghost");
            }
        }
        false
    }

    /// Keep the newer half, in a file written aside and renamed over the old one.
    fn compact(&mut self) {
        let drop = self.order.len() / 2;
        for old in self.order.drain(..drop) {
            self.set.remove(&old);
        }
        let tmp = self.path.with_extension("ghosts.tmp");
        let bytes: Vec<u8> = self.order.iter().flat_map(|id| id.0).collect();
        let written = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &self.path));
        self.file = written
            .and_then(|()| File::options().append(true).open(&self.path))
            .map_err(|e| tracing::debug!(error = %e, "disk cache: ghosts kept in memory only"))
            .ok();
    }
}

/// Everything that changes, under one lock (held for bookkeeping and unlinks, never for reads
/// or writes of chunk content).
struct State {
    /// Entries and their sizes, least recently used first.
    lru: LruCache<ChunkId, u64>,
    /// Sum of the sizes in `lru`.
    bytes: u64,
    /// Bytes reserved by puts in flight (their temporary or renamed files).
    reserved: u64,
    /// Chunks being written by a put in flight, so two puts of one chunk write it once.
    writing: HashSet<ChunkId>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Open (creating if needed) the cache in `dir`, holding at most `limit_bytes` bytes; 0
    /// caches nothing. Counts the entries already there, removes leftover temporary files, and
    /// evicts the oldest entries (by mtime) if they exceed the limit (it may have been lowered).
    pub fn open(dir: &Path, limit_bytes: u64) -> Result<Self, CacheError> {
        let tmp = dir.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| CacheError::new("cannot create", &tmp, e))?;
        let leftovers = fs::read_dir(&tmp).map_err(|e| CacheError::new("cannot list", &tmp, e))?;
        for entry in leftovers {
            let entry = entry.map_err(|e| CacheError::new("cannot list", &tmp, e))?;
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::new("cannot remove", &path, e)),
            }
        }
        let mut found = list_entries(dir)?;
        found.sort_by_key(|e| (e.modified, e.id));
        let mut lru = LruCache::unbounded();
        let mut bytes = 0;
        for entry in found {
            if let Some(old) = lru.put(entry.id, entry.bytes) {
                bytes -= old;
            }
            bytes += entry.bytes;
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            tmp,
            limit: limit_bytes,
            ghosts: None,
            state: Mutex::new(State {
                lru,
                bytes,
                reserved: 0,
                writing: HashSet::new(),
                hits: 0,
                misses: 0,
                evictions: 0,
            }),
        };
        {
            let mut st = cache.lock();
            while st.bytes > cache.limit {
                if cache.evict_lru(&mut st).is_none() {
                    break;
                }
                st.evictions += 1;
            }
            if st.evictions > 0 {
                tracing::info!(
                    evicted = st.evictions,
                    limit = cache.limit,
                    "disk cache: evicted entries over the limit"
                );
            }
        }
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Most bytes the cache holds.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The ciphertext of chunk `id` if the cache holds it and it verifies; a miss otherwise.
    /// A file that vanished or fails verification is forgotten (and deleted).
    pub fn get(&self, id: &ChunkId) -> Option<Vec<u8>> {
        {
            let mut st = self.lock();
            if st.lru.get(id).is_none() {
                st.misses += 1;
                return None;
            }
        }
        let path = self.entry_path(id);
        let bytes = match read_and_touch(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e,
                        "disk cache: cannot read an entry; dropped it");
                }
                self.forget(id, &path);
                return None;
            }
        };
        if blake3::hash(&bytes).as_bytes() != id.as_bytes() {
            tracing::warn!(path = %path.display(), "disk cache: entry is corrupt; dropped it");
            self.forget(id, &path);
            return None;
        }
        self.lock().hits += 1;
        Some(bytes)
    }

    /// Cache `ciphertext` as chunk `id` (the caller has verified that `id` is its blake3; a
    /// wrong pairing would be caught and dropped by [`DiskCache::get`]). Skipped when the chunk
    /// is cached or being cached already, larger than the limit, or when the room it needs is
    /// held by other puts in flight. Evicts least-recently-used entries to make room. Never
    /// fails: an I/O error (disk full) is logged and the put skipped.
    pub fn put(&self, id: &ChunkId, ciphertext: &[u8]) {
        let len = ciphertext.len() as u64;
        if self.limit == 0 {
            return;
        }
        if len > self.limit {
            tracing::debug!(chunk = %id.short(), len, limit = self.limit,
                "disk cache: chunk larger than the cache; not cached");
            return;
        }
        {
            let mut st = self.lock();
            if st.lru.promote(id) || st.writing.contains(id) {
                return;
            }
            while st.bytes + st.reserved + len > self.limit {
                if self.evict_lru(&mut st).is_none() {
                    tracing::debug!(chunk = %id.short(),
                        "disk cache: room held by puts in flight; not cached");
                    return;
                }
                st.evictions += 1;
            }
            st.reserved += len;
            st.writing.insert(*id);
            self.check_invariants(&st);
        }
        let dest = self.entry_path(id);
        let written = self.write_entry(id, &dest, ciphertext);
        let mut st = self.lock();
        st.reserved -= len;
        st.writing.remove(id);
        match written {
            Ok(()) => {
                if let Some(old) = st.lru.put(*id, len) {
                    st.bytes -= old;
                }
                st.bytes += len;
            }
            Err(e) => {
                tracing::warn!(chunk = %id.short(), error = %e, "disk cache: cannot cache a chunk");
            }
        }
        self.check_invariants(&st);
    }

    /// Admit chunks on their second fetch only, remembering first fetches in `ghosts_file`
    /// (see the module doc). Without this, every chunk offered is admitted.
    pub fn admit_on_second_fetch(mut self, ghosts_file: PathBuf) -> Self {
        self.ghosts = Some(Mutex::new(Ghosts::open(ghosts_file)));
        self
    }

    /// Whether chunk `id`, just fetched from the network, should be cached.
    pub fn admit(&self, id: &ChunkId) -> bool {
        if self.limit == 0 || self.contains(id) {
            return false;
        }
        match &self.ghosts {
            None => true,
            Some(g) => g.lock().unwrap_or_else(|p| p.into_inner()).seen_before(id),
        }
    }

    /// [`DiskCache::put`] after checking that `ciphertext` is chunk `id`.
    pub fn put_verified(&self, id: &ChunkId, ciphertext: &[u8]) {
        if blake3::hash(ciphertext).as_bytes() == id.as_bytes() {
            self.put(id, ciphertext);
        } else {
            tracing::warn!(chunk = %id.short(), "disk cache: offered bytes are not the chunk; not cached");
        }
    }

    /// Whether chunk `id` is cached (without counting a hit or a miss).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lock().lru.contains(id)
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> CacheStats {
        let st = self.lock();
        CacheStats {
            entries: st.lru.len() as u64,
            bytes: st.bytes,
            limit: self.limit,
            hits: st.hits,
            misses: st.misses,
            evictions: st.evictions,
        }
    }

    /// Remove least-recently-used entries until at most `keep_bytes` remain; `prune(0)` empties
    /// the cache (puts in flight land afterwards).
    pub fn prune(&self, keep_bytes: u64) -> PruneReport {
        let mut report = PruneReport::default();
        let mut st = self.lock();
        while st.bytes > keep_bytes {
            let Some(size) = self.evict_lru(&mut st) else {
                break;
            };
            report.removed_entries += 1;
            report.freed_bytes += size;
        }
        report
    }

    /// Where chunk `id` lives.
    fn entry_path(&self, id: &ChunkId) -> PathBuf {
        entry_path(&self.dir, id)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that can panic; a panic elsewhere must not
        // turn every later read into one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove the least recently used entry and its file (under the lock, so its bytes are free
    /// on disk before anyone can reserve them); its size, or `None` when there is none.
    fn evict_lru(&self, st: &mut State) -> Option<u64> {
        let (id, size) = st.lru.pop_lru()?;
        st.bytes -= size;
        remove_quietly(&self.entry_path(&id));
        Some(size)
    }

    /// Count a miss on `id` and drop its entry and file (vanished, unreadable or corrupt).
    fn forget(&self, id: &ChunkId, path: &Path) {
        let mut st = self.lock();
        st.misses += 1;
        if let Some(size) = st.lru.pop(id) {
            st.bytes -= size;
            remove_quietly(path);
        }
    }

    /// Write `data` to `dest` atomically: temporary file, then rename.
    fn write_entry(&self, id: &ChunkId, dest: &Path, data: &[u8]) -> Result<(), CacheError> {
        let tmp = self.tmp.join(format!(
            "{}.{}.{:x}",
            id.to_hex(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            // Recreated when deleted behind our back.
            fs::create_dir_all(&self.tmp)
                .map_err(|e| CacheError::new("cannot create", &self.tmp, e))?;
            let mut file =
                File::create(&tmp).map_err(|e| CacheError::new("cannot create", &tmp, e))?;
            file.write_all(data)
                .map_err(|e| CacheError::new("cannot write", &tmp, e))?;
            drop(file);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| CacheError::new("cannot create", parent, e))?;
            }
            fs::rename(&tmp, dest).map_err(|e| CacheError::new("cannot rename into", dest, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The bytes accounted for (entries and reservations) stay within the limit.
    fn check_invariants(&self, st: &State) {
        debug_assert!(
            st.bytes + st.reserved <= self.limit,
            "disk cache over its limit: {} held + {} reserved > {}",
            st.bytes,
            st.reserved,
            self.limit
        );
        debug_assert_eq!(st.bytes, st.lru.iter().map(|(_, size)| size).sum::<u64>());
    }
}

/// Entries and bytes of the cache in `dir` (an absent directory is an empty cache), reported
/// against `limit_bytes`; the counters are 0. Reads only the directory, so it works whether or
/// not a peer has the cache open.
pub fn scan(dir: &Path, limit_bytes: u64) -> Result<CacheStats, CacheError> {
    let found = list_entries(dir)?;
    Ok(CacheStats {
        entries: found.len() as u64,
        bytes: found.iter().map(|e| e.bytes).sum(),
        limit: limit_bytes,
        ..CacheStats::default()
    })
}

/// Remove entries of the cache in `dir`, oldest mtime first, until at most `keep_bytes`
/// remain. Works whether or not a peer has the cache open (that peer sees the removed entries
/// as misses); temporary files are left to their writer.
pub fn prune_dir(dir: &Path, keep_bytes: u64) -> Result<PruneReport, CacheError> {
    let mut found = list_entries(dir)?;
    found.sort_by_key(|e| (e.modified, e.id));
    let mut total: u64 = found.iter().map(|e| e.bytes).sum();
    let mut report = PruneReport::default();
    for entry in found {
        if total <= keep_bytes {
            break;
        }
        total -= entry.bytes;
        match fs::remove_file(&entry.path) {
            Ok(()) => {
                report.removed_entries += 1;
                report.freed_bytes += entry.bytes;
            }
            // Removed meanwhile by the peer using the cache.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::new("cannot remove", &entry.path, e)),
        }
    }
    Ok(report)
}

/// `dir/<2 hex>/<64 hex>`.
fn entry_path(dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(hex)
}

/// An entry file found in a cache directory.
struct Found {
    id: ChunkId,
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// Every entry file in `dir`; files not named like entries (or in the wrong subdirectory) are
/// ignored. Files vanishing during the listing are skipped.
fn list_entries(dir: &Path) -> Result<Vec<Found>, CacheError> {
    let top = match fs::read_dir(dir) {
        Ok(top) => top,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CacheError::new("cannot list", dir, e)),
    };
    let mut found = Vec::new();
    for sub in top {
        let sub = sub.map_err(|e| CacheError::new("cannot list", dir, e))?;
        let prefix = sub.file_name();
        let Some(prefix) = prefix.to_str().filter(|p| is_prefix(p)) else {
            continue;
        };
        let sub_path = sub.path();
        let files = match fs::read_dir(&sub_path) {
            Ok(files) => files,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(CacheError::new("cannot list", &sub_path, e)),
        };
        for file in files {
            let file = file.map_err(|e| CacheError::new("cannot list", &sub_path, e))?;
            let name = file.file_name();
            let Some(id) = name
                .to_str()
                .filter(|n| n.starts_with(prefix))
                .and_then(|n| n.parse::<ChunkId>().ok().filter(|id| id.to_hex() == n))
            else {
                continue;
            };
            let path = file.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CacheError::new("cannot read", &path, e)),
            };
            if !meta.is_file() {
                continue;
            }
            found.push(Found {
                id,
                path,
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    Ok(found)
}

/// Two lowercase hex digits.
fn is_prefix(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read a whole entry file, refreshing its mtime if stale.
fn read_and_touch(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    let now = SystemTime::now();
    let stale = meta.modified().map_or(true, |m| {
        now.duration_since(m).unwrap_or_default() > TOUCH_AFTER
    });
    if stale {
        // Best effort: recency across restarts only.
        let _ = file.set_modified(now);
    }
    Ok(bytes)
}

/// Remove a file that may already be gone; other failures are logged (the cache stays usable).
fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e,
            "disk cache: cannot remove an entry"),
    }
}

/// Chunks waiting to be written by the fill thread.
type FillQueue = SyncSender<(ChunkId, Vec<u8>)>;

/// Puts into a [`DiskCache`] from a background thread (`dfs-cache-fill`). A put queues a copy
/// of the ciphertext; when `depth` puts are already waiting, the caller writes the entry itself,
/// so memory stays bounded and nothing offered to the cache is dropped.
pub struct Filler {
    cache: Arc<DiskCache>,
    queue: Mutex<Option<FillQueue>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Filler {
    pub fn start(cache: Arc<DiskCache>, depth: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<(ChunkId, Vec<u8>)>(depth);
        let worker = Arc::clone(&cache);
        let thread = std::thread::Builder::new()
            .name("dfs-cache-fill".into())
            .spawn(move || {
                for (id, bytes) in rx {
                    worker.put_verified(&id, &bytes);
                }
            })
            .map_err(|e| tracing::warn!("disk cache: no fill thread, writing inline: {e}"))
            .ok();
        Self {
            cache,
            queue: Mutex::new(thread.is_some().then_some(tx)),
            thread: Mutex::new(thread),
        }
    }

    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// Offer chunk `id`, just fetched: cached (see [`DiskCache::put`]) if the admission policy
    /// takes it and `ciphertext` hashes to `id` (readers that rely on the AEAD tag offer it
    /// unverified), in the background if the queue has room.
    pub fn put(&self, id: &ChunkId, ciphertext: &[u8]) {
        if !self.cache.admit(id) {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(queue) = queue else {
            return self.cache.put_verified(id, ciphertext);
        };
        match queue.try_send((*id, ciphertext.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full((id, bytes)) | TrySendError::Disconnected((id, bytes))) => {
                self.cache.put_verified(&id, &bytes)
            }
        }
    }

    /// Write what is queued and stop the thread (puts after this are written inline).
    pub fn stop(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use rand::{Rng, SeedableRng};

    use super::*;

    /// A chunk of `len` pseudo-random bytes (seeded) and its id.
    fn chunk(seed: u64, len: usize) -> (ChunkId, Vec<u8>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        (ChunkId(*blake3::hash(&data).as_bytes()), data)
    }

    /// Bytes of every file under `dir`, temporary files included.
    fn dir_size(dir: &Path) -> u64 {
        let mut total = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                total += dir_size(&entry.path());
            } else {
                total += meta.len();
            }
        }
        total
    }

    fn set_mtime(path: &Path, secs_after_epoch: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs_after_epoch);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<DiskCache>();
    }

    #[test]
    fn the_filler_writes_everything_offered_even_with_a_full_queue() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open(dir.path(), 8 << 20).unwrap());
        let filler = Filler::start(Arc::clone(&cache), 1);
        let chunks: Vec<_> = (0..40).map(|n| chunk(100 + n, 20_000)).collect();
        std::thread::scope(|s| {
            for part in chunks.chunks(10) {
                let filler = &filler;
                s.spawn(move || {
                    for (id, data) in part {
                        filler.put(id, data);
                    }
                });
            }
        });
        filler.stop();
        for (id, data) in &chunks {
            assert_eq!(cache.get(id).as_ref(), Some(data));
        }
        assert_eq!(cache.stats().entries, 40);
        // After stop, puts are written inline.
        let (id, data) = chunk(999, 100);
        filler.put(&id, &data);
        assert_eq!(cache.get(&id), Some(data));
    }

    #[test]
    fn chunks_are_admitted_on_their_second_fetch_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ghosts = dir.path().join("cache.ghosts");
        let open = || {
            DiskCache::open(&dir.path().join("cache"), 1 << 20)
                .unwrap()
                .admit_on_second_fetch(ghosts.clone())
        };
        let cache = open();
        let (a, _) = chunk(1, 10);
        let (b, _) = chunk(2, 10);
        assert!(!cache.admit(&a), "a first fetch is not admitted");
        assert!(cache.admit(&a), "a second fetch is");
        assert!(!cache.admit(&b));
        drop(cache);
        let cache = open();
        assert!(
            cache.admit(&b),
            "the first fetch is remembered across a restart"
        );
        assert!(!cache.admit(&chunk(3, 10).0));
        // Never more than MAX_GHOSTS remembered, on disk or in memory; the newest survive.
        for n in 0..(MAX_GHOSTS as u64 + 10) {
            cache.admit(&chunk(1_000 + n, 1).0);
        }
        let on_disk = fs::metadata(&ghosts).unwrap().len() as usize;
        assert!(
            on_disk <= MAX_GHOSTS * ChunkId::LEN,
            "{on_disk} bytes of ghosts"
        );
        drop(cache);
        let cache = open();
        assert!(cache.admit(&chunk(1_000 + MAX_GHOSTS as u64 + 9, 1).0));
    }

    #[test]
    fn hit_and_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let (id, data) = chunk(1, 5000);
        assert_eq!(cache.get(&id), None);
        cache.put(&id, &data);
        assert_eq!(cache.get(&id), Some(data.clone()));
        let hex = id.to_hex();
        assert_eq!(
            fs::read(dir.path().join(&hex[..2]).join(&hex)).unwrap(),
            data
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // A second put of the same chunk writes nothing more.
        cache.put(&id, &data);
        assert_eq!(
            cache.stats(),
            CacheStats {
                entries: 1,
                bytes: 5000,
                limit: 1 << 20,
                hits: 1,
                misses: 1,
                evictions: 0,
            }
        );
        // An empty chunk is a chunk too.
        let (empty, nothing) = chunk(2, 0);
        cache.put(&empty, &nothing);
        assert_eq!(cache.get(&empty), Some(Vec::new()));
    }

    #[test]
    fn corrupt_entries_are_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let (a, data_a) = chunk(1, 4000);
        let (b, data_b) = chunk(2, 3000);
        cache.put(&a, &data_a);
        cache.put(&b, &data_b);
        // One flipped bit, and a truncation.
        let path_a = entry_path(dir.path(), &a);
        let mut bad = data_a.clone();
        bad[1234] ^= 1;
        fs::write(&path_a, &bad).unwrap();
        let path_b = entry_path(dir.path(), &b);
        fs::write(&path_b, &data_b[..100]).unwrap();
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.get(&b), None);
        assert!(!path_a.exists() && !path_b.exists());
        let stats = cache.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.hits, stats.misses),
            (0, 0, 0, 2)
        );
        // A good copy can be cached again.
        cache.put(&a, &data_a);
        assert_eq!(cache.get(&a), Some(data_a));
    }

    #[test]
    fn limit_holds_on_disk_after_every_put() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 64 << 10;
        let cache = DiskCache::open(dir.path(), limit).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut held = Vec::new();
        for i in 0..400u64 {
            let (id, data) = chunk(rng.random_range(0..120), rng.random_range(0..20_000));
            cache.put(&id, &data);
            held.push((id, data));
            let on_disk = dir_size(dir.path());
            let stats = cache.stats();
            assert!(
                on_disk <= limit,
                "put {i}: {on_disk} bytes on disk > {limit}"
            );
            assert_eq!(on_disk, stats.bytes, "put {i}");
            assert!(stats.bytes <= limit);
            // Random reads: what is returned is always right.
            let (id, data) = &held[rng.random_range(0..held.len())];
            if let Some(got) = cache.get(id) {
                assert_eq!(&got, data);
            }
        }
        assert!(cache.stats().evictions > 0);
    }

    #[test]
    fn limit_holds_under_concurrent_puts() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 100 << 10;
        let cache = Arc::new(DiskCache::open(dir.path(), limit).unwrap());
        // Puts hold it shared; the size check takes it exclusively, so it sees no half-done
        // put (a directory walk racing renames and unlinks can count a byte twice).
        let gate = Arc::new(RwLock::new(()));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                let gate = Arc::clone(&gate);
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    for _ in 0..300 {
                        // A small pool of chunks, so threads often put the same one at once.
                        let seed = rng.random_range(0..64u64);
                        let (id, data) = chunk(seed, 1000 + (seed as usize * 397) % 16_000);
                        {
                            let _shared = gate.read().unwrap();
                            cache.put(&id, &data);
                            assert!(cache.stats().bytes <= limit);
                            if let Some(got) = cache.get(&id) {
                                assert_eq!(got, data);
                            }
                        }
                        let _exclusive = gate.write().unwrap();
                        let on_disk = dir_size(&dir);
                        assert!(on_disk <= limit, "{on_disk} bytes on disk > {limit}");
                        assert_eq!(on_disk, cache.stats().bytes);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = cache.stats();
        assert!(stats.bytes <= limit);
        assert_eq!(dir_size(dir.path()), stats.bytes);
        assert_eq!(scan(dir.path(), limit).unwrap().entries, stats.entries);
        assert!(stats.evictions > 0 && stats.hits > 0);
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 3000).unwrap();
        let [a, b, c, d, e] = [1, 2, 3, 4, 5].map(|s| chunk(s, 1000));
        for (id, data) in [&a, &b, &c] {
            cache.put(id, data);
        }
        assert!(cache.get(&a.0).is_some()); // order now b, c, a
        cache.put(&d.0, &d.1); // evicts b
        assert!(!entry_path(dir.path(), &b.0).exists());
        cache.put(&c.0, &c.1); // already cached: only makes c recent; order a, d, c
        cache.put(&e.0, &e.1); // evicts a
        assert_eq!(cache.get(&a.0), None);
        assert_eq!(cache.get(&b.0), None);
        for (id, data) in [&c, &d, &e] {
            assert_eq!(cache.get(id).as_ref(), Some(data));
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (3, 3000, 2));
    }

    #[test]
    fn reopen_counts_entries_and_evicts_down_to_a_lower_limit() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<_> = (0..5).map(|s| chunk(s, 1000)).collect();
        {
            let cache = DiskCache::open(dir.path(), 10_000).unwrap();
            for (id, data) in &chunks {
                cache.put(id, data);
            }
        }
        // Recency across restarts is the mtime: chunk 0 oldest.
        for (i, (id, _)) in chunks.iter().enumerate() {
            set_mtime(&entry_path(dir.path(), id), 1_000_000 + i as u64);
        }
        // A temporary file left by a crash is removed.
        fs::write(dir.path().join("tmp/leftover"), [0u8; 500]).unwrap();
        let cache = DiskCache::open(dir.path(), 10_000).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (5, 5000));
        assert_eq!(dir_size(dir.path()), 5000);
        drop(cache);

        let cache = DiskCache::open(dir.path(), 2500).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (2, 2000, 3));
        assert_eq!(dir_size(dir.path()), 2000);
        for (id, data) in &chunks[3..] {
            assert_eq!(cache.get(id).as_ref(), Some(data));
        }
        for (id, _) in &chunks[..3] {
            assert_eq!(cache.get(id), None);
        }
    }

    #[test]
    fn prune_removes_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let chunks: Vec<_> = (0..5).map(|s| chunk(s, 1000)).collect();
        for (id, data) in &chunks {
            cache.put(id, data);
        }
        assert!(cache.get(&chunks[0].0).is_some());
        assert_eq!(
            cache.prune(2500),
            PruneReport {
                removed_entries: 3,
                freed_bytes: 3000
            }
        );
        assert!(cache.get(&chunks[0].0).is_some());
        assert!(cache.get(&chunks[4].0).is_some());
        assert_eq!(dir_size(dir.path()), 2000);
        assert_eq!(cache.prune(5000), PruneReport::default());
        assert_eq!(cache.prune(0).removed_entries, 2);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (0, 0, 0));
        assert_eq!(dir_size(dir.path()), 0);
    }

    #[test]
    fn oversize_entries_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1000).unwrap();
        let (small, small_data) = chunk(1, 600);
        cache.put(&small, &small_data);
        let (big, big_data) = chunk(2, 1001);
        cache.put(&big, &big_data);
        assert_eq!(cache.get(&big), None);
        // It did not evict anything either.
        assert!(cache.get(&small).is_some());
        let (exact, exact_data) = chunk(3, 1000);
        cache.put(&exact, &exact_data);
        assert_eq!(cache.get(&exact), Some(exact_data));
        assert_eq!(dir_size(dir.path()), 1000);

        // Limit 0: a cache that holds nothing.
        let off = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(off.path(), 0).unwrap();
        let (empty, nothing) = chunk(4, 0);
        cache.put(&empty, &nothing);
        cache.put(&small, &small_data);
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.get(&small), None);
        assert_eq!(dir_size(off.path()), 0);
    }

    #[test]
    fn files_deleted_behind_its_back_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 10_000).unwrap();
        let chunks: Vec<_> = (0..4).map(|s| chunk(s, 1000)).collect();
        for (id, data) in &chunks {
            cache.put(id, data);
        }
        fs::remove_file(entry_path(dir.path(), &chunks[0].0)).unwrap();
        assert_eq!(cache.get(&chunks[0].0), None);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.misses), (3, 3000, 1));
        // `dfs cache prune` while the peer runs.
        let report = prune_dir(dir.path(), 0).unwrap();
        assert_eq!(report.removed_entries, 3);
        for (id, _) in &chunks {
            assert_eq!(cache.get(id), None);
        }
        assert_eq!(cache.stats().bytes, 0);
        // The whole directory, temporary directory included: puts recreate what they need.
        fs::remove_dir_all(dir.path()).unwrap();
        for (id, data) in &chunks {
            cache.put(id, data);
            assert_eq!(cache.get(id).as_ref(), Some(data));
        }
        assert_eq!(dir_size(dir.path()), 4000);
        assert_eq!(cache.stats().bytes, 4000);
    }

    #[test]
    fn io_errors_skip_the_put_and_release_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 2000).unwrap();
        let (a, data_a) = chunk(1, 1500);
        // Temporary files cannot be created: `tmp` is a plain file.
        fs::remove_dir(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp"), b"").unwrap();
        cache.put(&a, &data_a);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.stats().bytes, 0);
        fs::remove_file(dir.path().join("tmp")).unwrap();
        // The failed put's reservation is gone: the full limit is usable again.
        cache.put(&a, &data_a);
        assert_eq!(cache.get(&a), Some(data_a));
    }

    #[test]
    fn scan_and_prune_dir_work_on_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(scan(&dir.path().join("absent"), 7).unwrap().limit, 7);
        assert_eq!(
            prune_dir(&dir.path().join("absent"), 0).unwrap(),
            PruneReport::default()
        );
        let chunks: Vec<_> = (0..4).map(|s| chunk(s, 100 * (s as usize + 1))).collect();
        {
            let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
            for (id, data) in &chunks {
                cache.put(id, data);
            }
        }
        // Newest first: chunk 3 is the oldest.
        for (i, (id, _)) in chunks.iter().enumerate() {
            set_mtime(&entry_path(dir.path(), id), 2_000_000 - i as u64);
        }
        // Files that are not entries are neither counted nor removed.
        fs::write(dir.path().join("README"), b"not a chunk").unwrap();
        fs::create_dir_all(dir.path().join("ab")).unwrap();
        fs::write(dir.path().join("ab/junk"), b"junk").unwrap();
        let stats = scan(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (stats.entries, stats.bytes, stats.limit),
            (4, 1000, 1 << 20)
        );
        // Keep 500 bytes: chunk 3 (400) and chunk 2 (300) go, oldest first.
        assert_eq!(
            prune_dir(dir.path(), 500).unwrap(),
            PruneReport {
                removed_entries: 2,
                freed_bytes: 700
            }
        );
        assert!(!entry_path(dir.path(), &chunks[3].0).exists());
        assert!(entry_path(dir.path(), &chunks[0].0).exists());
        assert_eq!(prune_dir(dir.path(), 0).unwrap().removed_entries, 2);
        assert_eq!(scan(dir.path(), 0).unwrap().entries, 0);
        assert!(dir.path().join("ab/junk").exists());
        // A plain file where the directory should be is a clear error.
        let file = dir.path().join("README");
        let err = scan(&file, 0).unwrap_err();
        assert_eq!(err.action, "cannot list");
        assert_eq!(err.path, file);
    }
}
