//! The content of one file while it is in use: its committed chunk tree plus buffered writes.
//!
//! A file is cut at fixed offsets (`chunk_size`, recorded in its inode), so byte `o` lives in
//! chunk `o / chunk_size`. Writes land in whole-chunk buffers (read-modify-write of the chunk
//! they touch); nothing reaches the inode until [`FileContent::commit`], which stores the dirty
//! chunks, rebuilds the tree (unchanged chunks and interior nodes are shared with the previous
//! version) and returns the new root. Chunks of zeros are holes: never stored, read as zeros.
//! Reads go through the volume's [`ChunkCache`] of decrypted chunks.
//!
//! Parallelism: a chunk that a write fills to its end is handed to the volume's
//! [`ChunkWorkers`] at once (its plaintext stays here for reads until the store is settled), so
//! sequential writes encrypt and encode on every core while the FUSE thread takes the next
//! writes; a sequential read asks the workers to fetch the next chunks ahead of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dfs_node::{
    wait_pending, BlobRef, ChunkRef, ChunkWorkers, LeafWalker, Pending, Pipeline, TreeBuilder,
    VOLUME_OWNER,
};
use dfs_placement::erasure::ShardCoder;
use dfs_placement::ChunkId;
use lru::LruCache;

use crate::model::{FsError, Inode, Result};

/// Largest file we accept: far beyond any disk here, and keeps offsets in i64 for lseek.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Dirty bytes one file may buffer before its least recently written chunks are stored early
/// (still uncommitted). Large enough that random writes over a 256 MiB working set stay in
/// memory until commit instead of storing the same chunks again and again.
const DIRTY_LIMIT: usize = 256 << 20;
/// Chunks of one file being stored in the background before the writer waits for the oldest.
const MAX_INFLIGHT: usize = 8;
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD: usize = 6;

/// What file content operations need from the volume.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: &'a ChunkCache,
    pub workers: &'a ChunkWorkers,
}

/// Bytes a read returns: a slice of a cached chunk (the common case, no copy) or a buffer put
/// together from several chunks, dirty buffers and holes.
#[derive(Debug)]
pub enum ReadBytes {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl ReadBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadBytes::Owned(v) => v,
            ReadBytes::Shared(chunk, range) => &chunk[range.clone()],
        }
    }
}

impl std::ops::Deref for ReadBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Cached chunks and the bytes they hold.
type CacheState = (LruCache<ChunkId, Arc<Vec<u8>>>, usize);

/// Decrypted chunks recently read, bounded in bytes, and the fetches under way.
pub struct ChunkCache {
    inner: Mutex<CacheState>,
    fetching: Mutex<std::collections::HashMap<ChunkId, Pending<Vec<u8>>>>,
    limit: usize,
}

impl ChunkCache {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            inner: Mutex::new((LruCache::unbounded(), 0)),
            fetching: Mutex::new(std::collections::HashMap::new()),
            limit: limit_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fetching(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ChunkId, Pending<Vec<u8>>>> {
        self.fetching.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start fetching `chunk` in the background unless it is cached, already coming, or every
    /// worker is busy.
    pub fn prefetch(&self, workers: &ChunkWorkers, chunk: &ChunkRef) {
        if chunk.is_hole() || self.lock().0.contains(&chunk.id) {
            return;
        }
        let mut fetching = self.fetching();
        if fetching.contains_key(&chunk.id) {
            return;
        }
        if let Some(pending) = workers.try_fetch(*chunk) {
            fetching.insert(chunk.id, pending);
        }
    }

    /// The plaintext of `chunk`, from the cache, a fetch under way, or read (verified,
    /// repaired) from the store now.
    pub fn get(&self, pipeline: &Pipeline, chunk: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.lock().0.get(&chunk.id) {
            dfs_node::metrics().memory_cache_hits.inc();
            return Ok(hit.clone());
        }
        dfs_node::metrics().memory_cache_misses.inc();
        let pending = self.fetching().remove(&chunk.id);
        let plain = match pending.map(|p| wait_pending(&p)) {
            Some(Ok(plain)) => plain,
            // A failed prefetch is retried here, so the error reported is the real read's.
            _ => pipeline.read_chunk(chunk, &mut ShardCoder::default())?,
        };
        let plain = Arc::new(plain);
        let mut guard = self.lock();
        let (lru, bytes) = &mut *guard;
        if let Some(old) = lru.put(chunk.id, plain.clone()) {
            *bytes -= old.len();
        }
        *bytes += plain.len();
        while *bytes > self.limit {
            match lru.pop_lru() {
                Some((_, evicted)) => *bytes -= evicted.len(),
                None => break,
            }
        }
        dfs_node::metrics().memory_cache_bytes.set(*bytes as i64);
        Ok(plain)
    }

    /// Bytes currently cached.
    pub fn bytes(&self) -> usize {
        self.lock().1
    }
}

/// Files this big have their chunk count fit in memory comfortably.
fn chunk_count(size: u64, chunk: u64) -> usize {
    size.div_ceil(chunk) as usize
}

/// Content of one file: committed tree, loaded leaves, dirty chunk buffers.
pub struct FileContent {
    chunk: u64,
    /// The committed tree the leaves came from.
    base: Option<BlobRef>,
    /// Leaf references of the current content, loaded on first need. Early-stored chunks are
    /// already in here (not yet committed).
    leaves: Option<Vec<ChunkRef>>,
    /// Chunk index -> its whole plaintext as it is now.
    dirty: BTreeMap<usize, Vec<u8>>,
    /// When each dirty chunk was last written (a counter), to store the coldest first.
    touched: std::collections::HashMap<usize, u64>,
    writes: u64,
    /// Chunks being stored by the workers: their plaintext (for reads) and the pending result.
    inflight: BTreeMap<usize, (Vec<u8>, Pending<ChunkRef>)>,
    dirty_bytes: usize,
    /// Current size, including uncommitted writes.
    pub size: u64,
    /// Whether there is anything to commit.
    pub changed: bool,
}

impl FileContent {
    pub fn new(inode: &Inode) -> Self {
        Self {
            chunk: u64::from(inode.chunk_size.max(1)),
            base: inode.content,
            leaves: None,
            dirty: BTreeMap::new(),
            touched: std::collections::HashMap::new(),
            writes: 0,
            inflight: BTreeMap::new(),
            dirty_bytes: 0,
            size: inode.size,
            changed: false,
        }
    }

    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * self.chunk;
        self.size.saturating_sub(start).min(self.chunk) as usize
    }

    fn leaves(&mut self, pipeline: &Pipeline) -> Result<&mut Vec<ChunkRef>> {
        if self.leaves.is_none() {
            let mut leaves = Vec::new();
            if let Some(base) = &self.base {
                let mut walker = LeafWalker::new(pipeline, base, true)
                    .map_err(|e| FsError::Corrupt(format!("file tree: {e}")))?;
                while let Some((leaf, _)) = walker
                    .next_leaf()
                    .map_err(|e| FsError::Corrupt(format!("file tree: {e}")))?
                {
                    leaves.push(leaf);
                }
            }
            self.leaves = Some(leaves);
        }
        Ok(self.leaves.get_or_insert_with(Vec::new))
    }

    /// Record a stored chunk as leaf `index`.
    fn set_leaf(&mut self, pipeline: &Pipeline, index: usize, leaf: ChunkRef) -> Result<()> {
        let leaves = self.leaves(pipeline)?;
        if leaves.len() <= index {
            leaves.resize(index + 1, ChunkRef::hole(0));
        }
        leaves[index] = leaf;
        Ok(())
    }

    /// Wait for the background store of chunk `index` and record its leaf.
    fn settle(&mut self, pipeline: &Pipeline, index: usize) -> Result<()> {
        if let Some((_, pending)) = self.inflight.remove(&index) {
            let leaf = wait_pending(&pending)?;
            self.set_leaf(pipeline, index, leaf)?;
        }
        Ok(())
    }

    /// Hand a finished chunk to the workers; its plaintext stays readable here meanwhile.
    fn hand_off(&mut self, io: Io, index: usize) -> Result<()> {
        let Some(buf) = self.dirty.remove(&index) else {
            return Ok(());
        };
        self.touched.remove(&index);
        self.dirty_bytes -= buf.len().min(self.dirty_bytes);
        if buf.iter().all(|&b| b == 0) {
            return self.set_leaf(io.pipeline, index, ChunkRef::hole(buf.len() as u32));
        }
        while self.inflight.len() >= MAX_INFLIGHT {
            let oldest = *self.inflight.keys().next().unwrap_or(&index);
            self.settle(io.pipeline, oldest)?;
        }
        let pending = io.workers.store(VOLUME_OWNER, buf.clone());
        self.inflight.insert(index, (buf, pending));
        Ok(())
    }

    /// The chunk's bytes as last committed or stored (not a dirty or in-flight buffer).
    fn stored_chunk(&mut self, io: Io, index: usize) -> Result<Vec<u8>> {
        let leaf = self.leaves(io.pipeline)?.get(index).copied();
        Ok(match leaf {
            Some(leaf) if !leaf.is_hole() => io.cache.get(io.pipeline, &leaf)?.as_ref().clone(),
            Some(leaf) => vec![0; leaf.len as usize],
            None => Vec::new(),
        })
    }

    /// The dirty buffer of chunk `index`, created from the in-flight or stored chunk if needed
    /// and sized to the chunk's current length. `overwrite_all`: the caller rewrites the whole
    /// chunk, so the old content need not be read.
    fn dirty_chunk(&mut self, io: Io, index: usize, overwrite_all: bool) -> Result<&mut Vec<u8>> {
        let len = self.chunk_len(index);
        if !self.dirty.contains_key(&index) {
            // A chunk being stored is taken back: its store's result is simply not used.
            let buf = if let Some((buf, _)) = self.inflight.remove(&index) {
                buf
            } else if overwrite_all {
                Vec::with_capacity(len)
            } else {
                self.stored_chunk(io, index)?
            };
            self.dirty_bytes += len;
            self.dirty.insert(index, buf);
        }
        let buf = self
            .dirty
            .get_mut(&index)
            .ok_or_else(|| FsError::Corrupt("dirty chunk vanished".into()))?;
        buf.resize(len, 0);
        Ok(buf)
    }

    /// Grow the file to `new_size` (zeros), keeping the old last chunk's bytes.
    fn grow(&mut self, io: Io, new_size: u64) -> Result<()> {
        let old_size = self.size;
        let last = if !old_size.is_multiple_of(self.chunk) {
            Some((old_size / self.chunk) as usize)
        } else {
            None
        };
        // Load the old partial last chunk before its length changes.
        if let Some(last) = last {
            self.load_for_edit(io, last)?;
        }
        self.size = new_size;
        if let Some(buf) = last.and_then(|l| self.dirty.get_mut(&l)) {
            let len = (new_size - last.map_or(0, |l| l as u64 * self.chunk)).min(self.chunk);
            buf.resize(len as usize, 0);
        }
        Ok(())
    }

    /// Write `data` at `offset`.
    pub fn write(&mut self, io: Io, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::TooLarge)?;
        if data.is_empty() {
            return Ok(());
        }
        if end > self.size {
            self.grow(io, end)?;
        }
        let mut pos = offset;
        let mut src = data;
        while !src.is_empty() {
            let index = (pos / self.chunk) as usize;
            let within = (pos % self.chunk) as usize;
            let take = src.len().min(self.chunk as usize - within);
            let whole = within == 0 && take >= self.chunk_len(index);
            let buf = self.dirty_chunk(io, index, whole)?;
            buf[within..within + take].copy_from_slice(&src[..take]);
            self.writes += 1;
            self.touched.insert(index, self.writes);
            src = &src[take..];
            pos += take as u64;
            // Filled to the end of a full-size chunk: store it now, in the background.
            if within + take == self.chunk as usize && self.chunk_len(index) == self.chunk as usize
            {
                self.hand_off(io, index)?;
            }
        }
        self.changed = true;
        if self.dirty_bytes > DIRTY_LIMIT {
            let mut coldest: Vec<(u64, usize)> = self
                .dirty
                .keys()
                .map(|&i| (self.touched.get(&i).copied().unwrap_or(0), i))
                .collect();
            coldest.sort_unstable();
            for (_, index) in coldest {
                if self.dirty_bytes <= DIRTY_LIMIT / 4 * 3 {
                    break;
                }
                self.hand_off(io, index)?;
            }
        }
        Ok(())
    }

    /// Read up to `len` bytes at `offset`.
    pub fn read(&mut self, io: Io, offset: u64, len: usize) -> Result<ReadBytes> {
        if offset >= self.size {
            return Ok(ReadBytes::Owned(Vec::new()));
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        if let Some(shared) = self.read_within_chunk(io, offset, end)? {
            return Ok(shared);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let index = (pos / self.chunk) as usize;
            let within = (pos % self.chunk) as usize;
            let take = ((end - pos) as usize).min(self.chunk as usize - within);
            let buffered = self
                .dirty
                .get(&index)
                .or_else(|| self.inflight.get(&index).map(|(b, _)| b));
            if let Some(buf) = buffered {
                out.extend_from_slice(&buf[within..within + take]);
            } else {
                match self.leaf_prefetching(io, index)? {
                    Some(leaf) if !leaf.is_hole() => {
                        let plain = io.cache.get(io.pipeline, &leaf)?;
                        let avail = plain.len().saturating_sub(within).min(take);
                        out.extend_from_slice(&plain[within..within + avail]);
                        out.resize(out.len() + take - avail, 0);
                    }
                    _ => out.resize(out.len() + take, 0),
                }
            }
            pos += take as u64;
        }
        Ok(ReadBytes::Owned(out))
    }

    /// The stored chunk at `index` (none past the end of the tree), asking the workers to
    /// fetch the next [`READ_AHEAD`] chunks meanwhile.
    fn leaf_prefetching(&mut self, io: Io, index: usize) -> Result<Option<ChunkRef>> {
        let leaves = self.leaves(io.pipeline)?;
        for ahead in leaves.iter().skip(index + 1).take(READ_AHEAD) {
            io.cache.prefetch(io.workers, ahead);
        }
        Ok(leaves.get(index).copied())
    }

    /// A read inside one stored chunk that is neither dirty nor a hole: a slice of the cached
    /// chunk, handed to FUSE without copying. `None` when the read needs assembling.
    fn read_within_chunk(&mut self, io: Io, offset: u64, end: u64) -> Result<Option<ReadBytes>> {
        let index = (offset / self.chunk) as usize;
        if (end - 1) / self.chunk != offset / self.chunk
            || self.dirty.contains_key(&index)
            || self.inflight.contains_key(&index)
        {
            return Ok(None);
        }
        let Some(leaf) = self.leaf_prefetching(io, index)?.filter(|l| !l.is_hole()) else {
            return Ok(None);
        };
        let plain = io.cache.get(io.pipeline, &leaf)?;
        let start = (offset % self.chunk) as usize;
        let stop = start + (end - offset) as usize;
        Ok((stop <= plain.len()).then_some(ReadBytes::Shared(plain, start..stop)))
    }

    /// Set the size, cutting or zero-extending.
    /// Load chunk `index` into a buffer of its own before it is edited, unless it has one
    /// already or is a hole not being stored (zeros: nothing to load).
    fn load_for_edit(&mut self, io: Io, index: usize) -> Result<()> {
        let is_hole = self
            .leaves(io.pipeline)?
            .get(index)
            .is_some_and(|l| l.is_hole())
            && !self.inflight.contains_key(&index);
        if !self.dirty.contains_key(&index) && !is_hole {
            self.dirty_chunk(io, index, false)?;
        }
        Ok(())
    }

    pub fn truncate(&mut self, io: Io, new_size: u64) -> Result<()> {
        if new_size > MAX_FILE_SIZE {
            return Err(FsError::TooLarge);
        }
        if new_size > self.size {
            self.grow(io, new_size)?;
        } else if new_size < self.size {
            let count = chunk_count(new_size, self.chunk);
            let cut = self.dirty.split_off(&count);
            self.dirty_bytes -= cut
                .values()
                .map(Vec::len)
                .sum::<usize>()
                .min(self.dirty_bytes);
            drop(self.inflight.split_off(&count));
            self.leaves(io.pipeline)?.truncate(count);
            if !new_size.is_multiple_of(self.chunk) {
                let last = count - 1;
                let partial = (new_size - last as u64 * self.chunk) as usize;
                self.load_for_edit(io, last)?;
                if let Some(buf) = self.dirty.get_mut(&last) {
                    let before = buf.len();
                    buf.truncate(partial.min(before));
                    self.dirty_bytes -= (before - buf.len()).min(self.dirty_bytes);
                }
            }
            self.size = new_size;
        }
        self.changed = true;
        Ok(())
    }

    /// Store everything buffered and return the new content root (`None`: nothing changed).
    pub fn commit(&mut self, io: Io) -> Result<Option<BlobRef>> {
        if !self.changed {
            return Ok(None);
        }
        // Every dirty chunk goes to the workers at once, then all are waited for.
        let count = chunk_count(self.size, self.chunk);
        let dirty: Vec<usize> = self.dirty.keys().copied().collect();
        for index in dirty {
            if let Some(buf) = self.dirty.get_mut(&index) {
                let len = (self.size.saturating_sub(index as u64 * self.chunk)).min(self.chunk);
                buf.resize(len as usize, 0);
            }
            self.hand_off(io, index)?;
        }
        let inflight: Vec<usize> = self.inflight.keys().copied().collect();
        for index in inflight {
            self.settle(io.pipeline, index)?;
        }
        let lens: Vec<usize> = (0..count).map(|i| self.chunk_len(i)).collect();
        let leaves = self.leaves(io.pipeline)?;
        leaves.resize(count, ChunkRef::hole(0));
        for (leaf, &len) in leaves.iter_mut().zip(&lens) {
            if leaf.is_hole() {
                leaf.len = len as u32;
            } else if leaf.len as usize != len {
                return Err(FsError::Corrupt(format!(
                    "chunk {} holds {} bytes where {len} are expected",
                    leaf.id.short(),
                    leaf.len
                )));
            }
        }
        let mut tree = TreeBuilder::new_in(io.pipeline, VOLUME_OWNER, io.workers.scope());
        for leaf in leaves.iter() {
            tree.push_leaf(*leaf)?;
        }
        let blob = tree.finish()?;
        self.base = Some(blob);
        self.dirty_bytes = 0;
        self.changed = false;
        Ok(Some(blob))
    }

    /// Bytes waiting in dirty buffers.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Whether byte `offset` is in a hole (for SEEK_DATA/SEEK_HOLE), at chunk granularity.
    pub fn is_hole_at(&mut self, pipeline: &Pipeline, offset: u64) -> Result<bool> {
        let index = (offset / self.chunk) as usize;
        let buffered = self
            .dirty
            .get(&index)
            .or_else(|| self.inflight.get(&index).map(|(b, _)| b));
        if let Some(buf) = buffered {
            return Ok(buf.iter().all(|&b| b == 0));
        }
        Ok(self
            .leaves(pipeline)?
            .get(index)
            .is_none_or(|l| l.is_hole()))
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory cache never holds more than its limit, whatever the order of reads, and keeps
    /// the most recently read chunks.
    #[test]
    fn memory_cache_stays_within_its_byte_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Pipeline::local(Arc::new(
            dfs_node::Repo::open(dir.path()).expect("open repo"),
        ));
        let mut coder = ShardCoder::default();
        let chunks: Vec<ChunkRef> = (0..12u8)
            .map(|i| {
                let len = 100_000 + usize::from(i) * 37_000;
                repo.put_chunk(&VOLUME_OWNER, vec![i; len], &mut coder)
                    .expect("put chunk")
            })
            .collect();
        let limit = 1_000_000;
        let cache = ChunkCache::new(limit);
        for round in 0..3 {
            for (i, chunk) in chunks.iter().enumerate() {
                let got = cache.get(&repo, chunk).expect("read chunk");
                assert_eq!(got.len(), chunk.len as usize);
                assert!(got.iter().all(|&b| b == i as u8), "round {round} chunk {i}");
                assert!(cache.bytes() <= limit, "{} > {limit}", cache.bytes());
            }
        }
        // The last chunk read is still there; the first ones were evicted.
        let last = chunks.last().expect("chunks");
        assert!(cache.lock().0.contains(&last.id));
        assert!(!cache.lock().0.contains(&chunks[0].id));
        // A chunk bigger than the whole cache is returned but not kept.
        let small = ChunkCache::new(50_000);
        assert_eq!(small.get(&repo, &chunks[0]).expect("read").len(), 100_000);
        assert_eq!(small.bytes(), 0);
    }
}
