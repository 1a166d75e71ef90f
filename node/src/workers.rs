//! A pool of threads that store and fetch chunks in the background, so a FUSE thread can hand
//! off a finished chunk (encrypt, hash, encode, write shards) and go on taking writes, and
//! sequential reads can fetch the next chunks before they are asked for.
//!
//! Jobs go through one bounded queue (`2 * threads` deep): when it is full, `store` blocks the
//! caller, which is the backpressure that bounds buffered memory. Each worker keeps its own
//! [`ShardCoder`] and recycles buffers as `write_blob`'s workers do.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use dfs_placement::erasure::ShardCoder;

use crate::chunk::{ChunkError, ChunkRef};
use crate::crypto::KeyScope;
use crate::meta::OwnerId;
use crate::pipeline::Pipeline;

/// The eventual result of a background job.
pub type Pending<T> = Receiver<Result<T, ChunkError>>;

enum Job {
    Store {
        owner: OwnerId,
        scope: KeyScope,
        plaintext: Vec<u8>,
        reply: Sender<Result<ChunkRef, ChunkError>>,
    },
    Fetch {
        chunk: ChunkRef,
        reply: Sender<Result<Vec<u8>, ChunkError>>,
    },
}

/// Background chunk workers over one chunk pipeline.
pub struct ChunkWorkers {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// The key scope of the chunks they store.
    scope: KeyScope,
}

impl ChunkWorkers {
    /// Start `threads` workers (at least one) that store chunks whose keys may be given out.
    pub fn start(pipeline: Arc<Pipeline>, threads: usize) -> Self {
        Self::start_in(pipeline, threads, KeyScope::Shareable)
    }

    /// Start `threads` workers (at least one) that store chunks with keys of `scope`.
    pub fn start_in(pipeline: Arc<Pipeline>, threads: usize, scope: KeyScope) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = bounded::<Job>(2 * threads);
        let handles = (0..threads)
            .map(|i| {
                let (pipeline, rx) = (pipeline.clone(), rx.clone());
                std::thread::Builder::new()
                    .name(format!("dfs-chunk-{i}"))
                    .spawn(move || work(&pipeline, &rx))
                    .unwrap_or_else(|e| panic!("cannot start a chunk worker thread: {e}"))
            })
            .collect();
        Self {
            jobs: Some(tx),
            threads: handles,
            scope,
        }
    }

    /// The key scope of the chunks these workers store.
    pub fn scope(&self) -> KeyScope {
        self.scope
    }

    fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // Only fails after shutdown, when the reply channel then reports the loss.
            let _ = jobs.send(job);
        }
    }

    /// Store a chunk in the background; blocks while the queue is full.
    pub fn store(&self, owner: OwnerId, plaintext: Vec<u8>) -> Pending<ChunkRef> {
        let (reply, rx) = bounded(1);
        self.submit(Job::Store {
            owner,
            scope: self.scope,
            plaintext,
            reply,
        });
        rx
    }

    /// Fetch a chunk in the background ([`Pipeline::read_chunk`]: the shards it takes, verified,
    /// repaired, decrypted).
    pub fn fetch(&self, chunk: ChunkRef) -> Pending<Vec<u8>> {
        let (reply, rx) = bounded(1);
        self.submit(Job::Fetch { chunk, reply });
        rx
    }

    /// Queue a fetch only if a worker can take it now (read-ahead must never block a reader).
    pub fn try_fetch(&self, chunk: ChunkRef) -> Option<Pending<Vec<u8>>> {
        let (reply, rx) = bounded(1);
        self.jobs
            .as_ref()?
            .try_send(Job::Fetch { chunk, reply })
            .ok()?;
        Some(rx)
    }
}

impl Drop for ChunkWorkers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work(pipeline: &Pipeline, jobs: &Receiver<Job>) {
    let mut coder = ShardCoder::default();
    for job in jobs {
        match job {
            Job::Store {
                owner,
                scope,
                plaintext,
                reply,
            } => {
                let _ = reply.send(pipeline.put_chunk_in(scope, &owner, plaintext, &mut coder));
            }
            Job::Fetch { chunk, reply } => {
                let _ = reply.send(pipeline.read_chunk(&chunk, &mut coder));
            }
        }
    }
}

/// Wait for a pending result.
pub fn wait_pending<T>(pending: &Pending<T>) -> Result<T, ChunkError> {
    pending.recv().unwrap_or(Err(ChunkError::WorkerGone))
}
