//! One chunk's types and the pure steps of the pipeline: seal (encrypt and name), encode into
//! shards, decode from any k of them; [`crate::pipeline`] runs them against storage and the
//! network.

use dfs_placement::erasure::{Encoded, ShardCoder};
use dfs_placement::{ChunkId, EncodeError, Layout};
use serde::{Deserialize, Serialize};

use crate::crypto::{ChunkKey, KeyScope, VolumeSecret};
use crate::meta::MetaError;
use crate::shard::{ShardDefect, ShardHeader, HEADER_LEN};
use crate::store::StoreError;

/// A reference to a chunk: enough to find it (id) and read it (key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub key: ChunkKey,
    /// Plaintext length.
    pub len: u32,
}

impl ChunkRef {
    /// A run of `len` zero bytes that is not stored at all (a hole in a sparse file).
    pub fn hole(len: u32) -> Self {
        Self {
            id: ChunkId([0; 32]),
            key: ChunkKey([0; 32]),
            len,
        }
    }

    pub fn is_hole(&self) -> bool {
        self.id.0 == [0; 32]
    }
}

/// The state of one shard slot of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardState {
    Ok,
    Missing,
    Corrupt(ShardDefect),
    /// Not read: enough other shards were intact (see [`crate::pipeline::Pipeline::read_chunk`]).
    Unread,
}

/// What inspecting a chunk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHealth {
    pub id: ChunkId,
    /// `None` when no shard of the chunk could be read, so even its layout is unknown.
    pub layout: Option<Layout>,
    pub shards: Vec<ShardState>,
    /// Shards rewritten by this inspection.
    pub repaired: Vec<u8>,
}

impl ChunkHealth {
    pub fn missing(&self) -> Vec<u8> {
        self.indices(|s| matches!(s, ShardState::Missing))
    }

    pub fn corrupt(&self) -> Vec<u8> {
        self.indices(|s| matches!(s, ShardState::Corrupt(_)))
    }

    pub fn intact(&self) -> usize {
        self.shards.iter().filter(|s| **s == ShardState::Ok).count()
    }

    /// No shard that was read is missing or corrupt.
    pub fn is_healthy(&self) -> bool {
        self.layout.is_some()
            && self
                .shards
                .iter()
                .all(|s| matches!(s, ShardState::Ok | ShardState::Unread))
    }

    pub fn is_lost(&self) -> bool {
        self.layout.is_none_or(|l| self.intact() < l.needed())
    }

    fn indices(&self, pred: impl Fn(&ShardState) -> bool) -> Vec<u8> {
        (0..self.shards.len())
            .filter(|&i| pred(&self.shards[i]))
            .map(|i| i as u8)
            .collect()
    }
}

/// Why a chunk could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {id} is lost: {intact} of the {needed} shards needed are intact (missing shards {missing:?}, corrupt shards {corrupt:?})")]
    Lost {
        id: ChunkId,
        intact: usize,
        needed: usize,
        missing: Vec<u8>,
        corrupt: Vec<u8>,
    },
    #[error("chunk {id} is lost: none of its shards is in the store")]
    Absent { id: ChunkId },
    #[error(
        "chunk {id}: its shards decode to bytes that do not match the chunk id (forged shards?)"
    )]
    Mismatch { id: ChunkId },
    #[error("chunk {id} cannot be decrypted: wrong key")]
    WrongKey { id: ChunkId },
    #[error("shard store: {0}")]
    Store(#[from] StoreError),
    #[error("chunk {id} is not durable: only {peers} peers took its shards, {required} are required (see placement.durable_peers)")]
    NotDurable {
        id: ChunkId,
        peers: usize,
        required: usize,
    },
    #[error("chunk {id} cannot be read: only {got} of the {needed} shards needed could be fetched from the peers holding them")]
    Unreachable {
        id: ChunkId,
        got: usize,
        needed: usize,
    },
    #[error("the chunk worker stopped before finishing")]
    WorkerGone,
    #[error("chunk {id}: the peer is stopping")]
    PeerStopping { id: ChunkId },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("encoding chunk: {0}")]
    Encode(#[from] EncodeError),
}

impl ChunkError {
    /// True when the underlying cause is a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ChunkError::Store(e) if e.is_disk_full())
    }
}

/// Highest shard index probed when a chunk has no index record.
pub(crate) const MAX_PROBE: u8 = 128;

/// A chunk encrypted under its convergent key and named by its ciphertext.
#[derive(Debug)]
pub struct SealedChunk {
    pub chunk: ChunkRef,
    pub ciphertext: Vec<u8>,
}

/// Encrypt `plaintext` under the key derived from it and the volume secret, and name it by the
/// blake3 of the ciphertext. Pure computation: the first half of storing a chunk.
pub fn seal(secret: &VolumeSecret, plaintext: Vec<u8>) -> SealedChunk {
    seal_in(secret, KeyScope::Shareable, plaintext)
}

/// [`seal`] with a key of `scope`.
pub fn seal_in(secret: &VolumeSecret, scope: KeyScope, plaintext: Vec<u8>) -> SealedChunk {
    let len = plaintext.len() as u32;
    let key = secret.chunk_key_in(scope, &plaintext);
    let ciphertext = key.encrypt(plaintext);
    let id = ChunkId(*blake3::hash(&ciphertext).as_bytes());
    SealedChunk {
        chunk: ChunkRef { id, key, len },
        ciphertext,
    }
}

/// The shards of a chunk with their headers, ready to store or send.
#[derive(Debug)]
pub struct ShardSet {
    pub encoded: Encoded,
    pub headers: Vec<[u8; HEADER_LEN]>,
}

impl ShardSet {
    /// The blake3 each shard image carries (see [`crate::meta::ShardHashes`]).
    pub fn hashes(&self) -> crate::meta::ShardHashes {
        crate::meta::ShardHashes(
            self.headers
                .iter()
                .map(|h| {
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(&h[crate::shard::HASHED_HEADER_LEN..HEADER_LEN]);
                    hash
                })
                .collect(),
        )
    }
}

/// Cut a sealed chunk's ciphertext into the shards of `layout` and checksum each one (the second
/// half of storing a chunk; pure computation).
pub fn encode_shards(
    id: &ChunkId,
    ciphertext: Vec<u8>,
    layout: Layout,
    coder: &mut ShardCoder,
) -> Result<ShardSet, EncodeError> {
    let chunk_len = ciphertext.len() as u32;
    let encoded = coder.encode(layout, ciphertext)?;
    let headers = (0..encoded.shard_count())
        .map(|index| {
            ShardHeader {
                chunk: *id,
                layout,
                index: index as u8,
                chunk_len,
            }
            .seal(encoded.shard(index))
        })
        .collect();
    Ok(ShardSet { encoded, headers })
}

/// Most decodes [`decode_any`] tries before it gives up (C(6,4) = 15 for 4+2; 1001 for 10+4
/// would cost about a second of CPU).
const MAX_SUBSETS: usize = 256;

/// The ciphertext that some k of the shards in `bodies` decode to and that matches `id`,
/// trying k-subsets of the shards at hand in order; `None` when none does.
pub(crate) fn decode_any(
    coder: &mut ShardCoder,
    layout: Layout,
    len: usize,
    bodies: &[Option<&[u8]>],
    id: &ChunkId,
) -> Option<Vec<u8>> {
    let present: Vec<usize> = (0..bodies.len()).filter(|&i| bodies[i].is_some()).collect();
    let k = layout.needed();
    if present.len() < k {
        return None;
    }
    // Positions into `present` of the current subset, advanced like an odometer.
    let mut pick: Vec<usize> = (0..k).collect();
    for _ in 0..MAX_SUBSETS {
        let mut subset: Vec<Option<&[u8]>> = vec![None; bodies.len()];
        for &p in &pick {
            subset[present[p]] = bodies[present[p]];
        }
        if let Ok(ciphertext) = coder.decode(layout, len, &subset) {
            if blake3::hash(&ciphertext).as_bytes() == id.as_bytes() {
                return Some(ciphertext);
            }
        }
        // The next subset: the rightmost position that can move, and the ones after it.
        let n = present.len();
        let mut i = k;
        loop {
            if i == 0 {
                return None;
            }
            i -= 1;
            if pick[i] < n - k + i {
                break;
            }
        }
        pick[i] += 1;
        for j in i + 1..k {
            pick[j] = pick[j - 1] + 1;
        }
    }
    None
}

/// The error for a chunk that `inspect_chunk` could not decode.
pub fn lost_error(health: &ChunkHealth) -> ChunkError {
    match health.layout {
        None => ChunkError::Absent { id: health.id },
        Some(layout) => ChunkError::Lost {
            id: health.id,
            intact: health.intact(),
            needed: layout.needed(),
            missing: health.missing(),
            corrupt: health.corrupt(),
        },
    }
}
