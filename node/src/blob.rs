//! Streaming a byte stream into the store and back, with chunks processed in parallel.
//!
//! Writing: this thread reads fixed-size chunks from the input and hands them to `workers`
//! threads that encrypt, hash, encode and store them; references come back out of order and are
//! put back in stream order before they enter the [`TreeBuilder`]. Reading mirrors it: the tree
//! walker hands data chunk references to workers that fetch, verify, decode and decrypt, and
//! this thread writes the plaintext in order. At most `2 * workers` chunks are in flight, so
//! memory stays bounded whatever the stream's size.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crossbeam_channel::{bounded, unbounded};
use dfs_placement::erasure::ShardCoder;

use crate::chunk::{ChunkError, ChunkHealth, ChunkRef};
use crate::crypto::KeyScope;
use crate::meta::OwnerId;
use crate::pipeline::Pipeline;
pub use crate::tree::BlobRef;
use crate::tree::{LeafWalker, MalformedTree, TreeBuilder, TreeError};

/// Why a stream could not be stored or restored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Malformed(#[from] MalformedTree),
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    #[error("chunk {id} holds {got} bytes where the tree says {expected}")]
    LengthMismatch {
        id: dfs_placement::ChunkId,
        got: u64,
        expected: u64,
    },
}

impl From<TreeError> for BlobError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Chunk(c) => BlobError::Chunk(c),
            TreeError::Malformed(m) => BlobError::Malformed(m),
        }
    }
}

impl BlobError {
    /// True when the cause is a full disk (in the store or at the output).
    pub fn is_disk_full(&self) -> bool {
        match self {
            BlobError::Chunk(c) => c.is_disk_full(),
            BlobError::Write(e) => {
                matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }
}

/// What reading a stream found along the way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks that had missing or corrupt shards (and were decoded from the rest).
    pub degraded_chunks: u64,
    /// Shards rewritten because they were missing or corrupt.
    pub repaired_shards: u64,
}

impl ReadReport {
    fn add(&mut self, health: &ChunkHealth) {
        self.chunks += 1;
        if !health.is_healthy() {
            self.degraded_chunks += 1;
        }
        self.repaired_shards += health.repaired.len() as u64;
    }

    pub fn merge(&mut self, other: &ReadReport) {
        self.bytes += other.bytes;
        self.chunks += other.chunks;
        self.degraded_chunks += other.degraded_chunks;
        self.repaired_shards += other.repaired_shards;
    }
}

/// Read up to `want` bytes from `reader` into `buf` (a recycled buffer, or a new one); short
/// only at end of input. The buffer has room for the AEAD tag and the erasure padding, so
/// encryption and encoding never reallocate (and copy) the chunk.
fn read_chunk(reader: &mut dyn Read, want: usize, buf: Option<Vec<u8>>) -> io::Result<Vec<u8>> {
    let headroom =
        crate::crypto::TAG_LEN + 2 * dfs_placement::erasure::MAX_SHARDS_PER_KIND as usize;
    let mut buf = buf.unwrap_or_default();
    buf.clear();
    buf.reserve(want + headroom);
    reader.take(want as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Store everything `reader` yields under the put `owner`; returns the stream's root.
pub fn write_blob(
    pipeline: &Pipeline,
    owner: &OwnerId,
    reader: &mut dyn Read,
) -> Result<BlobRef, BlobError> {
    let workers = pipeline.repo().config().storage.worker_count();
    let chunk_size = pipeline.repo().config().storage.chunk_size as usize;
    let (job_tx, job_rx) = bounded::<(u64, Vec<u8>)>(workers);
    let (done_tx, done_rx) = unbounded::<(u64, Result<ChunkRef, ChunkError>)>();
    // Chunk buffers come back from the workers to be filled again.
    let (spare_tx, spare_rx) = unbounded::<Vec<u8>>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (job_rx, done_tx, spare_tx) = (job_rx.clone(), done_tx.clone(), spare_tx.clone());
            scope.spawn(move || {
                let mut coder = ShardCoder::default();
                for (seq, plain) in job_rx {
                    let done = pipeline
                        .put_chunk_reusing(KeyScope::Shareable, owner, plain, &mut coder)
                        .map(|(chunk, buf)| {
                            let _ = spare_tx.send(buf);
                            chunk
                        });
                    if done_tx.send((seq, done)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(spare_tx);
        drop((job_rx, done_tx));
        let mut tree = TreeBuilder::new(pipeline, *owner);
        let mut reorder = BTreeMap::new();
        let (mut sent, mut next) = (0u64, 0u64);
        let accept = |reorder: &mut BTreeMap<u64, Result<ChunkRef, ChunkError>>,
                      next: &mut u64,
                      tree: &mut TreeBuilder|
         -> Result<(), BlobError> {
            while let Some(done) = reorder.remove(next) {
                tree.push_leaf(done?)?;
                *next += 1;
            }
            Ok(())
        };
        let job_tx = job_tx; // dropped when this closure returns, which stops the workers
        loop {
            while sent - next >= 2 * workers as u64 {
                let Ok((seq, done)) = done_rx.recv() else {
                    break;
                };
                reorder.insert(seq, done);
                accept(&mut reorder, &mut next, &mut tree)?;
            }
            let plain = read_chunk(reader, chunk_size, spare_rx.try_recv().ok())
                .map_err(BlobError::Read)?;
            let last = plain.len() < chunk_size;
            if !plain.is_empty() {
                if job_tx.send((sent, plain)).is_err() {
                    break;
                }
                sent += 1;
            }
            if last {
                break;
            }
        }
        drop(job_tx);
        while next < sent {
            let Ok((seq, done)) = done_rx.recv() else {
                break;
            };
            reorder.insert(seq, done);
            accept(&mut reorder, &mut next, &mut tree)?;
        }
        Ok(tree.finish()?)
    })
}

/// Restore the stream `blob` into `out`, verifying every shard and chunk; with `repair`, bad
/// shards met on the way are rewritten.
pub fn read_blob(
    pipeline: &Pipeline,
    blob: &BlobRef,
    out: &mut dyn Write,
    repair: bool,
) -> Result<ReadReport, BlobError> {
    let workers = pipeline.repo().config().storage.worker_count();
    /// A fetched chunk with the stream bytes the tree says it holds.
    type Done = (u64, Result<(Vec<u8>, ChunkHealth), ChunkError>);
    let (job_tx, job_rx) = bounded::<(u64, ChunkRef, u64)>(workers);
    let (done_tx, done_rx) = unbounded::<(u64, Done)>();
    let mut walker = LeafWalker::new(pipeline, blob, repair)?;
    let mut report = ReadReport::default();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut coder = ShardCoder::default();
                for (seq, chunk, bytes) in job_rx {
                    let got = pipeline.get_chunk(&chunk, &mut coder, repair);
                    if done_tx.send((seq, (bytes, got))).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        let mut reorder: BTreeMap<u64, Done> = BTreeMap::new();
        let (mut sent, mut next) = (0u64, 0u64);
        let job_tx = job_tx;
        let mut exhausted = false;
        while !exhausted || next < sent {
            while !exhausted && sent - next < 2 * workers as u64 {
                match walker.next_leaf()? {
                    Some((chunk, bytes)) => {
                        if job_tx.send((sent, chunk, bytes)).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    None => exhausted = true,
                }
            }
            if next == sent {
                break;
            }
            let Ok((seq, done)) = done_rx.recv() else {
                break;
            };
            reorder.insert(seq, done);
            while let Some((bytes, done)) = reorder.remove(&next) {
                let (plain, health) = done?;
                if plain.len() as u64 != bytes {
                    return Err(BlobError::LengthMismatch {
                        id: health.id,
                        got: plain.len() as u64,
                        expected: bytes,
                    });
                }
                out.write_all(&plain).map_err(BlobError::Write)?;
                report.bytes += plain.len() as u64;
                report.add(&health);
                next += 1;
            }
        }
        drop(job_tx);
        Ok::<_, BlobError>(())
    })?;
    for health in &walker.interior {
        report.add(health);
    }
    if report.bytes != blob.size {
        return Err(BlobError::LengthMismatch {
            id: blob.root.map_or(dfs_placement::ChunkId([0; 32]), |r| r.id),
            got: report.bytes,
            expected: blob.size,
        });
    }
    out.flush().map_err(BlobError::Write)?;
    Ok(report)
}

/// Read a whole (small) stream into memory, e.g. a directory listing.
pub fn read_blob_to_vec(
    pipeline: &Pipeline,
    blob: &BlobRef,
    repair: bool,
) -> Result<(Vec<u8>, ReadReport), BlobError> {
    let mut out = Vec::with_capacity(blob.size.min(64 << 20) as usize);
    let report = read_blob(pipeline, blob, &mut out, repair)?;
    Ok((out, report))
}

/// Visit every chunk of a stream (interior nodes decrypted to find their children, data chunks
/// only inspected, not decrypted) and report each one's health.
pub fn check_blob(
    pipeline: &Pipeline,
    blob: &BlobRef,
    repair: bool,
    visit: &mut dyn FnMut(ChunkHealth),
) -> Result<(), BlobError> {
    let mut walker = LeafWalker::new(pipeline, blob, repair)?;
    let mut coder = ShardCoder::default();
    while let Some((chunk, _)) = walker.next_leaf()? {
        if !chunk.is_hole() {
            let (_, health) = pipeline.inspect_chunk(&chunk.id, &mut coder, repair)?;
            visit(health);
        }
        for interior in walker.interior.drain(..) {
            visit(interior);
        }
    }
    for interior in walker.interior.drain(..) {
        visit(interior);
    }
    Ok(())
}
