//! The content of one file while it is in use: its committed chunk tree plus buffered writes.
//!
//! A file is cut at fixed offsets (`chunk_size`, recorded in its inode), so byte `o` lives in
//! chunk `o / chunk_size`. Writes land in whole-chunk buffers (read-modify-write of the chunk
//! they touch); nothing reaches the inode until [`FileContent::commit`], which stores the dirty
//! chunks, rebuilds the tree (unchanged chunks and interior nodes are shared with the previous
//! version) and returns the new root. Chunks of zeros are holes: never stored, read as zeros.
//! Reads go through the volume's [`ChunkCache`] of decrypted chunks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dfs_node::repo::VOLUME_OWNER;
use dfs_node::tree::{LeafWalker, TreeBuilder};
use dfs_node::{BlobRef, ChunkRef, Repo};
use dfs_placement::erasure::ShardCoder;
use dfs_placement::ChunkId;
use lru::LruCache;

use crate::model::{FsError, Inode, Result};

/// Largest file we accept: far beyond any disk here, and keeps offsets in i64 for lseek.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Dirty bytes one file may buffer before full chunks are stored early (still uncommitted).
const DIRTY_LIMIT: usize = 64 << 20;

/// Cached chunks and the bytes they hold.
type CacheState = (LruCache<ChunkId, Arc<Vec<u8>>>, usize);

/// Decrypted chunks recently read, bounded in bytes.
pub struct ChunkCache {
    inner: Mutex<CacheState>,
    limit: usize,
}

impl ChunkCache {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            inner: Mutex::new((LruCache::unbounded(), 0)),
            limit: limit_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plaintext of `chunk`, from the cache or read (verified, repaired) from the store.
    pub fn get(&self, repo: &Repo, chunk: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.lock().0.get(&chunk.id) {
            return Ok(hit.clone());
        }
        let (plain, _) = repo.get_chunk(chunk, &mut ShardCoder::default(), true)?;
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
            dirty_bytes: 0,
            size: inode.size,
            changed: false,
        }
    }

    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * self.chunk;
        self.size.saturating_sub(start).min(self.chunk) as usize
    }

    fn leaves(&mut self, repo: &Repo) -> Result<&mut Vec<ChunkRef>> {
        if self.leaves.is_none() {
            let mut leaves = Vec::new();
            if let Some(base) = &self.base {
                let mut walker = LeafWalker::new(repo, base, true)
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

    /// The chunk's bytes as last committed or stored (not the dirty buffer).
    fn stored_chunk(&mut self, repo: &Repo, cache: &ChunkCache, index: usize) -> Result<Vec<u8>> {
        let leaf = self.leaves(repo)?.get(index).copied();
        Ok(match leaf {
            Some(leaf) if !leaf.is_hole() => cache.get(repo, &leaf)?.as_ref().clone(),
            Some(leaf) => vec![0; leaf.len as usize],
            None => Vec::new(),
        })
    }

    /// The dirty buffer of chunk `index`, created from the stored chunk if needed and sized to
    /// the chunk's current length. `overwrite_all`: the caller rewrites the whole chunk, so the
    /// old content need not be read.
    fn dirty_chunk(
        &mut self,
        repo: &Repo,
        cache: &ChunkCache,
        index: usize,
        overwrite_all: bool,
    ) -> Result<&mut Vec<u8>> {
        let len = self.chunk_len(index);
        if !self.dirty.contains_key(&index) {
            let buf = if overwrite_all {
                Vec::with_capacity(len)
            } else {
                self.stored_chunk(repo, cache, index)?
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
    fn grow(&mut self, repo: &Repo, cache: &ChunkCache, new_size: u64) -> Result<()> {
        let old_size = self.size;
        let last = if !old_size.is_multiple_of(self.chunk) {
            Some((old_size / self.chunk) as usize)
        } else {
            None
        };
        // Load the old partial last chunk before its length changes.
        if let Some(last) = last {
            let is_hole = self.leaves(repo)?.get(last).is_some_and(|l| l.is_hole());
            if !self.dirty.contains_key(&last) && !is_hole {
                self.dirty_chunk(repo, cache, last, false)?;
            }
        }
        self.size = new_size;
        if let Some(buf) = last.and_then(|l| self.dirty.get_mut(&l)) {
            let len = (new_size - last.map_or(0, |l| l as u64 * self.chunk)).min(self.chunk);
            buf.resize(len as usize, 0);
        }
        Ok(())
    }

    /// Write `data` at `offset`.
    pub fn write(
        &mut self,
        repo: &Repo,
        cache: &ChunkCache,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::TooLarge)?;
        if data.is_empty() {
            return Ok(());
        }
        if end > self.size {
            self.grow(repo, cache, end)?;
        }
        let mut pos = offset;
        let mut src = data;
        while !src.is_empty() {
            let index = (pos / self.chunk) as usize;
            let within = (pos % self.chunk) as usize;
            let take = src.len().min(self.chunk as usize - within);
            let whole = within == 0 && take >= self.chunk_len(index);
            let buf = self.dirty_chunk(repo, cache, index, whole)?;
            buf[within..within + take].copy_from_slice(&src[..take]);
            src = &src[take..];
            pos += take as u64;
        }
        self.changed = true;
        if self.dirty_bytes > DIRTY_LIMIT {
            self.store_dirty(repo, Some((end / self.chunk) as usize))?;
        }
        Ok(())
    }

    /// Read up to `len` bytes at `offset`.
    pub fn read(
        &mut self,
        repo: &Repo,
        cache: &ChunkCache,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let index = (pos / self.chunk) as usize;
            let within = (pos % self.chunk) as usize;
            let take = ((end - pos) as usize).min(self.chunk as usize - within);
            if let Some(buf) = self.dirty.get(&index) {
                out.extend_from_slice(&buf[within..within + take]);
            } else {
                let leaf = self.leaves(repo)?.get(index).copied();
                match leaf {
                    Some(leaf) if !leaf.is_hole() => {
                        let plain = cache.get(repo, &leaf)?;
                        let avail = plain.len().saturating_sub(within).min(take);
                        out.extend_from_slice(&plain[within..within + avail]);
                        out.resize(out.len() + take - avail, 0);
                    }
                    _ => out.resize(out.len() + take, 0),
                }
            }
            pos += take as u64;
        }
        Ok(out)
    }

    /// Set the size, cutting or zero-extending.
    pub fn truncate(&mut self, repo: &Repo, cache: &ChunkCache, new_size: u64) -> Result<()> {
        if new_size > MAX_FILE_SIZE {
            return Err(FsError::TooLarge);
        }
        if new_size > self.size {
            self.grow(repo, cache, new_size)?;
        } else if new_size < self.size {
            let count = chunk_count(new_size, self.chunk);
            let cut = self.dirty.split_off(&count);
            self.dirty_bytes -= cut.values().map(Vec::len).sum::<usize>();
            self.leaves(repo)?.truncate(count);
            if !new_size.is_multiple_of(self.chunk) {
                let last = count - 1;
                let partial = self.chunk_len(last);
                let is_hole = self.leaves(repo)?.get(last).is_some_and(|l| l.is_hole());
                if !self.dirty.contains_key(&last) && !is_hole {
                    self.dirty_chunk(repo, cache, last, false)?;
                }
                self.size = new_size;
                if let Some(buf) = self.dirty.get_mut(&last) {
                    let before = buf.len();
                    buf.truncate(partial.min(before));
                    self.dirty_bytes -= before - buf.len();
                }
            }
            self.size = new_size;
        }
        self.changed = true;
        Ok(())
    }

    /// Store dirty chunks (all, or all but `keep`) into the leaves, uncommitted.
    fn store_dirty(&mut self, repo: &Repo, keep: Option<usize>) -> Result<()> {
        let count = chunk_count(self.size, self.chunk);
        let dirty = std::mem::take(&mut self.dirty);
        let mut coder = ShardCoder::default();
        for (index, mut buf) in dirty {
            if Some(index) == keep {
                self.dirty.insert(index, buf);
                continue;
            }
            let len = self.chunk_len(index);
            buf.resize(len, 0);
            self.dirty_bytes -= len.min(self.dirty_bytes);
            let leaf = if buf.iter().all(|&b| b == 0) {
                ChunkRef::hole(len as u32)
            } else {
                repo.put_chunk(&VOLUME_OWNER, buf, &mut coder)?
            };
            let leaves = self.leaves(repo)?;
            if leaves.len() < count {
                leaves.resize(count, ChunkRef::hole(0));
            }
            leaves[index] = leaf;
        }
        self.dirty_bytes = self.dirty.values().map(Vec::len).sum();
        Ok(())
    }

    /// Store everything buffered and return the new content root (`None`: nothing changed).
    pub fn commit(&mut self, repo: &Repo) -> Result<Option<BlobRef>> {
        if !self.changed {
            return Ok(None);
        }
        self.store_dirty(repo, None)?;
        let count = chunk_count(self.size, self.chunk);
        let lens: Vec<usize> = (0..count).map(|i| self.chunk_len(i)).collect();
        let leaves = self.leaves(repo)?;
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
        let mut tree = TreeBuilder::new(repo, VOLUME_OWNER);
        for leaf in leaves.iter() {
            tree.push_leaf(*leaf)?;
        }
        let blob = tree.finish()?;
        self.base = Some(blob);
        self.changed = false;
        Ok(Some(blob))
    }

    /// Bytes waiting in dirty buffers.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Whether byte `offset` is in a hole (for SEEK_DATA/SEEK_HOLE), at chunk granularity.
    pub fn is_hole_at(&mut self, repo: &Repo, offset: u64) -> Result<bool> {
        let index = (offset / self.chunk) as usize;
        if let Some(buf) = self.dirty.get(&index) {
            return Ok(buf.iter().all(|&b| b == 0));
        }
        Ok(self.leaves(repo)?.get(index).is_none_or(|l| l.is_hole()))
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk
    }
}

/// Cache budget for a volume by default.
pub fn default_cache() -> ChunkCache {
    ChunkCache::new(256 << 20)
}
