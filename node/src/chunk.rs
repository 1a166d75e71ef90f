//! One chunk through the pipeline: encrypt, name, encode, store; and back: fetch shards, verify
//! each, decode, check the chunk id, repair what was bad, decrypt.

use dfs_placement::erasure::{Encoded, ShardCoder};
use dfs_placement::{ChunkId, EncodeError, Layout};
use serde::{Deserialize, Serialize};

use crate::cluster::ShardCheck;
use crate::crypto::{ChunkKey, KeyScope, VolumeSecret};
use crate::meta::{ChunkRecord, MetaError, OwnerId};
use crate::repo::Repo;
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
    /// Not read: enough other shards were intact (see [`Repo::read_chunk`]).
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
const MAX_PROBE: u8 = 128;

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

impl Repo {
    /// Encrypt, name, encode and store one chunk for the put `owner`; skips the work of storing
    /// when the chunk is already present (convergent encryption makes equal content dedup).
    pub fn put_chunk(
        &self,
        owner: &OwnerId,
        plaintext: Vec<u8>,
        coder: &mut ShardCoder,
    ) -> Result<ChunkRef, ChunkError> {
        self.put_chunk_in(KeyScope::Shareable, owner, plaintext, coder)
    }

    /// [`Repo::put_chunk`] with a key of `scope`.
    pub fn put_chunk_in(
        &self,
        scope: KeyScope,
        owner: &OwnerId,
        plaintext: Vec<u8>,
        coder: &mut ShardCoder,
    ) -> Result<ChunkRef, ChunkError> {
        self.put_chunk_reusing(scope, owner, plaintext, coder)
            .map(|(chunk, _)| chunk)
    }

    /// [`Repo::put_chunk_in`], also handing back the chunk's buffer for the next chunk to reuse.
    /// A chunk of [`KeyScope::Private`] is marked so (after its record; marked again whenever
    /// it is reused, which mends a crash between the two).
    pub fn put_chunk_reusing(
        &self,
        scope: KeyScope,
        owner: &OwnerId,
        plaintext: Vec<u8>,
        coder: &mut ShardCoder,
    ) -> Result<(ChunkRef, Vec<u8>), ChunkError> {
        let SealedChunk { chunk, ciphertext } = seal_in(self.secret(), scope, plaintext);
        let mark = |id: &ChunkId| match scope {
            KeyScope::Private => self.meta().mark_private(id),
            KeyScope::Shareable => Ok(()),
        };
        if let Some(record) = self.meta().chunk(&chunk.id)? {
            if self.is_stored(&chunk.id, &record)? {
                self.meta().add_ref(&chunk.id, owner)?;
                mark(&chunk.id)?;
                return Ok((chunk, ciphertext));
            }
        }
        let layout = self.config().storage.layout_for(ciphertext.len());
        let chunk_len = ciphertext.len() as u32;
        let shards = encode_shards(&chunk.id, ciphertext, layout, coder)?;
        let placed = match self.remote() {
            Some(remote) => remote.place(self, &chunk.id, &shards)?,
            None => None,
        };
        let record = ChunkRecord {
            layout,
            len: chunk_len,
        };
        let hashes = shards.hashes();
        match placed {
            Some(placed) => self
                .meta()
                .add_placed_chunk(&chunk.id, &record, &hashes, owner, &placed)?,
            None => {
                self.write_shards(&chunk.id, &shards, None)?;
                self.meta().add_chunk(&chunk.id, &record, &hashes, owner)?;
            }
        }
        mark(&chunk.id)?;
        Ok((chunk, coder.recycle(shards.encoded)))
    }

    /// Write the shards of a set (all of them, or only the indices in `only`).
    fn write_shards(
        &self,
        id: &ChunkId,
        shards: &ShardSet,
        only: Option<&[u8]>,
    ) -> Result<(), ChunkError> {
        for (index, header) in shards.headers.iter().enumerate() {
            let index = index as u8;
            if only.is_some_and(|o| !o.contains(&index)) {
                continue;
            }
            let body = shards.encoded.shard(index as usize);
            self.store().write(id, index, &[header, body])?;
        }
        Ok(())
    }

    /// Whether a chunk already in the index is stored well enough to reuse: enough shards
    /// placed on peers (the repair thread sees to the rest), or all of them local.
    fn is_stored(&self, id: &ChunkId, record: &ChunkRecord) -> Result<bool, ChunkError> {
        if let Some(placed) = self.meta().placed(id)? {
            let mut indices: Vec<u8> = placed.holders.iter().map(|(i, _)| *i).collect();
            indices.sort_unstable();
            indices.dedup();
            return Ok(indices.len() >= record.layout.needed());
        }
        self.all_shards_present(id, record)
    }

    fn all_shards_present(&self, id: &ChunkId, record: &ChunkRecord) -> Result<bool, ChunkError> {
        let expected =
            (crate::shard::HEADER_LEN + record.layout.shard_len(record.len as usize)) as u64;
        for index in 0..record.layout.shard_count() as u8 {
            if self.store().size(id, index)? != Some(expected) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Read, verify and decrypt a chunk; with `repair`, rewrite shards found missing or corrupt.
    pub fn get_chunk(
        &self,
        chunk: &ChunkRef,
        coder: &mut ShardCoder,
        repair: bool,
    ) -> Result<(Vec<u8>, ChunkHealth), ChunkError> {
        if chunk.is_hole() {
            let health = ChunkHealth {
                id: chunk.id,
                layout: Some(Layout::Replicated { copies: 1 }),
                shards: vec![ShardState::Ok],
                repaired: Vec::new(),
            };
            return Ok((vec![0; chunk.len as usize], health));
        }
        // A chunk on peers is read from any k shards (or the disk cache), like `read_chunk`:
        // its repairs are the repair thread's, and `dfs verify` checks every shard.
        if let Some(remote) = self.remote() {
            let known = match (
                self.meta().placed(&chunk.id)?,
                self.meta().chunk(&chunk.id)?,
            ) {
                (Some(placed), Some(record)) => Some((record, placed)),
                (None, None) => remote.locate(self, &chunk.id),
                _ => None,
            };
            if let Some((record, placed)) = known {
                let plaintext =
                    self.read_placed(remote.as_ref(), chunk, &record, &placed, coder)?;
                let health = ChunkHealth {
                    id: chunk.id,
                    layout: Some(record.layout),
                    shards: vec![ShardState::Unread; record.layout.shard_count()],
                    repaired: Vec::new(),
                };
                return Ok((plaintext, health));
            }
        }
        let (ciphertext, health) = self.inspect_chunk(&chunk.id, coder, repair)?;
        let ciphertext = match ciphertext {
            Some(c) => c,
            None => return Err(lost_error(&health)),
        };
        let plaintext = chunk
            .key
            .decrypt(ciphertext)
            .map_err(|_| ChunkError::WrongKey { id: chunk.id })?;
        Ok((plaintext, health))
    }

    /// Read and verify every shard of a chunk and decode its ciphertext (`None` when lost);
    /// with `repair`, rewrite the shards that were missing or corrupt.
    pub fn inspect_chunk(
        &self,
        id: &ChunkId,
        coder: &mut ShardCoder,
        repair: bool,
    ) -> Result<(Option<Vec<u8>>, ChunkHealth), ChunkError> {
        self.inspect_chunk_with(id, coder, repair, true)
    }

    /// Read and decrypt a chunk from only as many shards as it takes (data shards first): the
    /// fast path for a mounted volume's reads. Shards found missing or corrupt on the way are
    /// rewritten; shards not read are left to `dfs verify` and scrubbing.
    pub fn read_chunk(
        &self,
        chunk: &ChunkRef,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        if chunk.is_hole() {
            return Ok(vec![0; chunk.len as usize]);
        }
        if let Some(remote) = self.remote() {
            let known = match self.meta().placed(&chunk.id)? {
                Some(placed) => match self.meta().chunk(&chunk.id)? {
                    Some(record) => Some((record, placed)),
                    None => return Err(ChunkError::Absent { id: chunk.id }),
                },
                // Written by another member of a shared volume: found on the network.
                None if self.meta().chunk(&chunk.id)?.is_none() => remote.locate(self, &chunk.id),
                None => None,
            };
            if let Some((record, placed)) = known {
                return self.read_placed(remote.as_ref(), chunk, &record, &placed, coder);
            }
        }
        if let Some(plain) = self.read_chunk_fast(chunk)? {
            return Ok(plain);
        }
        let (ciphertext, health) = self.inspect_chunk_with(&chunk.id, coder, true, false)?;
        let ciphertext = ciphertext.ok_or_else(|| lost_error(&health))?;
        chunk
            .key
            .decrypt(ciphertext)
            .map_err(|_| ChunkError::WrongKey { id: chunk.id })
    }

    /// The plaintext of a chunk whose shards are on peers: any k shards gathered in parallel
    /// (data shards preferred, so usually no decode), decoded, and checked. The AEAD tag alone
    /// proves nothing against a holder who knows the key, and a chunk's key is known to every
    /// member of a shared volume and every holder of a link to it; so the decoded ciphertext is
    /// checked against the chunk id, which is all a read needs (k shards that give the chunk
    /// back are right). Only a chunk of this peer's private key scope, whose key no one else
    /// has, is opened on its tag alone ([`crate::crypto::KeyScope`]). When the check fails the
    /// shards are checked one by one ([`Repo::read_checking_shards`]).
    fn read_placed(
        &self,
        remote: &dyn crate::cluster::Remote,
        chunk: &ChunkRef,
        record: &crate::meta::ChunkRecord,
        placed: &crate::meta::Placed,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        let id = &chunk.id;
        let wrong_key = |_| ChunkError::WrongKey { id: *id };
        if let Some(ciphertext) = remote.cached(id) {
            return chunk.key.decrypt(ciphertext).map_err(wrong_key);
        }
        let layout = record.layout;
        let gathered = remote.gather(
            self,
            id,
            layout,
            placed,
            layout.needed(),
            ShardCheck::Header,
        );
        if gathered.count() >= layout.needed() {
            if let Ok(ciphertext) = coder.decode(layout, record.len as usize, &gathered.bodies()) {
                if self.meta().is_private(id)? {
                    remote.remember(id, &ciphertext);
                    if let Ok(plaintext) = chunk.key.decrypt(ciphertext) {
                        return Ok(plaintext);
                    }
                } else if blake3::hash(&ciphertext).as_bytes() == id.as_bytes() {
                    remote.remember(id, &ciphertext);
                    return chunk.key.decrypt(ciphertext).map_err(wrong_key);
                }
            }
            tracing::info!(chunk = %id.short(), "the shards gathered do not give the chunk back; checking them one by one");
        }
        let ciphertext = self.read_checking_shards(remote, id, record, placed, coder)?;
        chunk.key.decrypt(ciphertext).map_err(wrong_key)
    }

    /// [`Repo::read_placed`] when k shards fetched unchecked did not give the chunk back (or
    /// could not be had): k shards gathered again, each checked against the writer's hash of it
    /// where this peer has them (a shard that fails is reported, and another asked for), the
    /// result against the chunk id. Shards that each pass their checksum yet decode to other
    /// bytes mean a holder made one up and this peer has no record to tell which: then every
    /// shard is gathered and k of them at a time are tried until they give the chunk
    /// ([`Repo::read_around_forgery`]).
    fn read_checking_shards(
        &self,
        remote: &dyn crate::cluster::Remote,
        id: &ChunkId,
        record: &crate::meta::ChunkRecord,
        placed: &crate::meta::Placed,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        let layout = record.layout;
        let hashes = self.meta().shard_hashes(id)?;
        let check = ShardCheck::Checksum(hashes.as_ref());
        let gathered = remote.gather(self, id, layout, placed, layout.needed(), check);
        let got = gathered.count();
        let unreachable = ChunkError::Unreachable {
            id: *id,
            got,
            needed: layout.needed(),
        };
        if got < layout.needed() {
            return Err(unreachable);
        }
        let ciphertext = coder
            .decode(layout, record.len as usize, &gathered.bodies())
            .map_err(|_| unreachable)?;
        let ciphertext = if blake3::hash(&ciphertext).as_bytes() == id.as_bytes() {
            if !gathered.forged.is_empty() {
                let shards = encode_shards(id, ciphertext.clone(), layout, coder)?;
                remote.replace_forged(self, id, &shards, &gathered.forged);
            }
            ciphertext
        } else {
            self.read_around_forgery(remote, id, record, placed, coder, hashes.as_ref())?
        };
        // The cache checks the id itself before it keeps a ciphertext.
        remote.remember(id, &ciphertext);
        Ok(ciphertext)
    }

    /// Every shard of a chunk whose first k decoded to the wrong bytes, then k of them at a
    /// time until they decode to the chunk; the shards that disagree with it are counted
    /// against their holders and replaced ([`crate::cluster::Remote::replace_forged`]).
    fn read_around_forgery(
        &self,
        remote: &dyn crate::cluster::Remote,
        id: &ChunkId,
        record: &crate::meta::ChunkRecord,
        placed: &crate::meta::Placed,
        coder: &mut ShardCoder,
        hashes: Option<&crate::meta::ShardHashes>,
    ) -> Result<Vec<u8>, ChunkError> {
        tracing::warn!(chunk = %id.short(), "shards that pass their checksums decode to bytes that are not the chunk: a holder forged one; trying the others");
        let layout = record.layout;
        let check = ShardCheck::Checksum(hashes);
        let all = remote.gather(self, id, layout, placed, layout.shard_count(), check);
        let Some(ciphertext) = decode_any(coder, layout, record.len as usize, &all.bodies(), id)
        else {
            return Err(ChunkError::Mismatch { id: *id });
        };
        let shards = encode_shards(id, ciphertext.clone(), layout, coder)?;
        let good = shards.hashes();
        let mut bad: Vec<(u8, libp2p::PeerId)> = all.forged.clone();
        for (index, (image, from)) in all.images.iter().zip(&all.from).enumerate() {
            let (Some(image), Some(peer)) = (image, from) else {
                continue;
            };
            let index = index as u8;
            if ShardHeader::carried_hash(image).as_ref() != good.of(index) {
                tracing::warn!(chunk = %id.short(), index, %peer, "holder sent a forged shard (valid checksum, wrong bytes)");
                bad.push((index, *peer));
            }
        }
        remote.replace_forged(self, id, &shards, &bad);
        Ok(ciphertext)
    }

    /// The common case of [`Repo::read_chunk`]: concatenate the data shards and decrypt. The
    /// AEAD tag, under the key from the (trusted) reference, authenticates the whole ciphertext,
    /// so the shard checksums and the chunk id need not be hashed again when it verifies.
    /// `None` when anything is off (a shard missing or malformed, the tag failing): the caller
    /// then takes the slow path, which finds, reports and repairs the damage.
    fn read_chunk_fast(&self, chunk: &ChunkRef) -> Result<Option<Vec<u8>>, ChunkError> {
        let Some(record) = self.meta().chunk(&chunk.id)? else {
            return Ok(None);
        };
        let shard_len = record.layout.shard_len(record.len as usize);
        let data = match record.layout {
            Layout::Replicated { .. } => 1,
            Layout::Erasure { data, .. } => data as usize,
        };
        let mut ciphertext = Vec::with_capacity(data * shard_len);
        let mut header = [0u8; crate::shard::HEADER_LEN];
        for index in 0..data as u8 {
            let read = self.store().read_into(
                &chunk.id,
                index,
                &mut header,
                shard_len,
                &mut ciphertext,
            )?;
            let plausible = read
                && header.starts_with(crate::shard::MAGIC)
                && header[8..40] == chunk.id.0
                && header[43] == index;
            if !plausible {
                return Ok(None);
            }
        }
        ciphertext.truncate(record.len as usize);
        Ok(chunk.key.decrypt(ciphertext).ok())
    }

    /// `all`: read and verify every shard; otherwise stop once enough are intact.
    fn inspect_chunk_with(
        &self,
        id: &ChunkId,
        coder: &mut ShardCoder,
        repair: bool,
        all: bool,
    ) -> Result<(Option<Vec<u8>>, ChunkHealth), ChunkError> {
        let mut images: Vec<Option<Vec<u8>>> = Vec::new();
        // Shards on peers are gathered up front (all of them, or as many as needed); the
        // repair thread, not this call, rewrites what they lack.
        let mut repair = repair;
        if let (Some(remote), Some(placed), Some(record)) = (
            self.remote(),
            self.meta().placed(id)?,
            self.meta().chunk(id)?,
        ) {
            let want = if all {
                record.layout.shard_count()
            } else {
                record.layout.needed()
            };
            let hashes = self.meta().shard_hashes(id)?;
            images = remote
                .gather(
                    self,
                    id,
                    record.layout,
                    &placed,
                    want,
                    ShardCheck::Checksum(hashes.as_ref()),
                )
                .images;
            repair = false;
        }
        let mut header: Option<ShardHeader> = self.meta().chunk(id)?.map(|r| ShardHeader {
            chunk: *id,
            layout: r.layout,
            index: 0,
            chunk_len: r.len,
        });
        if header.is_none() {
            // No index record (e.g. a chunk from another store): learn the layout from the
            // first shard that verifies.
            for index in 0..MAX_PROBE {
                let image = self.store().read(id, index)?;
                if let Some(bytes) = &image {
                    if let Ok((h, _)) = ShardHeader::decode_expected(bytes, *id, index) {
                        header = Some(h);
                        images.push(image);
                        break;
                    }
                }
                images.push(image);
            }
        }
        let Some(header) = header else {
            return Ok((
                None,
                ChunkHealth {
                    id: *id,
                    layout: None,
                    shards: Vec::new(),
                    repaired: Vec::new(),
                },
            ));
        };
        let layout = header.layout;
        let count = layout.shard_count();
        images.truncate(count);
        // Which shards to read: all of them, or in index order (data first) until `needed`
        // verify; a shard not read is `None` in `read`.
        // Verify shards in index order (data first): all of them, or until `needed` are
        // intact. Each shard is hashed once; its state is kept with it.
        let mut states: Vec<ShardState> = vec![ShardState::Unread; count];
        let mut intact = 0;
        for (index, state) in states.iter_mut().enumerate() {
            if !all && intact >= layout.needed() {
                break;
            }
            if images.len() <= index {
                images.push(self.store().read(id, index as u8)?);
            }
            *state = match images[index].as_deref() {
                None => ShardState::Missing,
                Some(bytes) => match ShardHeader::decode_expected(bytes, *id, index as u8) {
                    Ok((h, _)) if h.layout == layout && h.chunk_len == header.chunk_len => {
                        intact += 1;
                        ShardState::Ok
                    }
                    Ok(_) => ShardState::Corrupt(ShardDefect::BadLayout),
                    Err(defect) => ShardState::Corrupt(defect),
                },
            };
        }
        images.resize(count, None);
        let bodies: Vec<Option<&[u8]>> = images
            .iter()
            .zip(&states)
            .map(|(image, state)| match (image, state) {
                (Some(bytes), ShardState::Ok) => bytes.get(crate::shard::HEADER_LEN..),
                _ => None,
            })
            .collect();
        let mut health = ChunkHealth {
            id: *id,
            layout: Some(layout),
            shards: states,
            repaired: Vec::new(),
        };
        let Ok(ciphertext) = coder.decode(layout, header.chunk_len as usize, &bodies) else {
            return Ok((None, health));
        };
        if blake3::hash(&ciphertext).as_bytes() != id.as_bytes() {
            return Err(ChunkError::Mismatch { id: *id });
        }
        drop(bodies);
        drop(images);
        let bad: Vec<u8> = health
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, ShardState::Missing | ShardState::Corrupt(_)))
            .map(|(i, _)| i as u8)
            .collect();
        if repair && !bad.is_empty() {
            let shards = encode_shards(id, ciphertext.clone(), layout, coder)?;
            self.write_shards(id, &shards, Some(&bad))?;
            tracing::info!(chunk = %id.short(), shards = ?bad, "repaired shards");
            health.repaired = bad;
        }
        Ok((Some(ciphertext), health))
    }
}

/// Most decodes [`decode_any`] tries before it gives up (C(6,4) = 15 for 4+2; 1001 for 10+4
/// would cost about a second of CPU).
const MAX_SUBSETS: usize = 256;

/// The ciphertext that some k of the shards in `bodies` decode to and that matches `id`,
/// trying k-subsets of the shards at hand in order; `None` when none does.
fn decode_any(
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
