//! The chunk pipeline of one data directory: a chunk sealed, encoded into shards and stored
//! (on the peers of the network when one runs, else in the local shard store), and back:
//! shards gathered, decoded, checked and decrypted, with what was bad repaired.
//!
//! A [`Pipeline`] owns the storage ([`Repo`]) and, when a peer runs, the network side
//! ([`Remote`], the cluster): both are given when it is made, so nothing is attached to the
//! storage later and the storage never calls up into the network. The pure steps (sealing,
//! encoding, the chunk types) are [`crate::chunk`]'s.

use std::sync::Arc;

use dfs_placement::erasure::ShardCoder;
use dfs_placement::{ChunkId, Layout};

use crate::chunk::{
    decode_any, encode_shards, lost_error, seal_in, ChunkError, ChunkHealth, ChunkRef, SealedChunk,
    ShardSet, ShardState, MAX_PROBE,
};
use crate::cluster::Gathered;
use crate::cluster::{Remote, ShardCheck};
use crate::crypto::KeyScope;
use crate::meta::{ChunkRecord, OwnerId, Placed};
use crate::repo::Repo;
use crate::shard::{ShardDefect, ShardHeader};

/// A chunk on the peers of the network: how to reach them, its layout and length, and which
/// peer holds which shard.
struct OnPeers<'a> {
    remote: &'a dyn Remote,
    record: &'a ChunkRecord,
    placed: &'a Placed,
}

impl OnPeers<'_> {
    /// At least `want` shards of chunk `id` (fewer when not enough can be had), each checked
    /// as `check` says.
    fn gather(&self, repo: &Repo, id: &ChunkId, want: usize, check: ShardCheck<'_>) -> Gathered {
        self.remote
            .gather(repo, id, self.record.layout, self.placed, want, check)
    }
}

/// Chunks in and out of one data directory, over the network when a peer runs.
#[derive(Clone)]
pub struct Pipeline {
    repo: Arc<Repo>,
    remote: Option<Arc<dyn Remote>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("repo", &self.repo.path())
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl Pipeline {
    /// The pipeline of `repo` alone: every shard in the local store.
    pub fn local(repo: Arc<Repo>) -> Self {
        Self { repo, remote: None }
    }

    /// The pipeline of `repo` with the network side `remote` (see [`crate::cluster`]).
    pub fn with_remote(repo: Arc<Repo>, remote: Arc<dyn Remote>) -> Self {
        Self {
            repo,
            remote: Some(remote),
        }
    }

    /// The storage under the pipeline.
    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Whether chunks go to and come from the network.
    pub fn is_networked(&self) -> bool {
        self.remote.is_some()
    }

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

    /// [`Pipeline::put_chunk`] with a key of `scope`.
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

    /// [`Pipeline::put_chunk_in`], also handing back the chunk's buffer for the next chunk to reuse.
    /// A chunk of [`KeyScope::Private`] is marked so (after its record; marked again whenever
    /// it is reused, which mends a crash between the two).
    pub fn put_chunk_reusing(
        &self,
        scope: KeyScope,
        owner: &OwnerId,
        plaintext: Vec<u8>,
        coder: &mut ShardCoder,
    ) -> Result<(ChunkRef, Vec<u8>), ChunkError> {
        let SealedChunk { chunk, ciphertext } = seal_in(self.repo.secret(), scope, plaintext);
        let mark = |id: &ChunkId| match scope {
            KeyScope::Private => self.repo.meta().mark_private(id),
            KeyScope::Shareable => Ok(()),
        };
        if let Some(record) = self.repo.meta().chunk(&chunk.id)? {
            if self.is_stored(&chunk.id, &record)? {
                self.repo.meta().add_ref(&chunk.id, owner)?;
                mark(&chunk.id)?;
                return Ok((chunk, ciphertext));
            }
        }
        let layout = self.repo.config().storage.layout_for(ciphertext.len());
        let chunk_len = ciphertext.len() as u32;
        let shards = encode_shards(&chunk.id, ciphertext, layout, coder)?;
        let placed = match self.remote.clone() {
            Some(remote) => remote.place(&self.repo, &chunk.id, &shards)?,
            None => None,
        };
        let record = ChunkRecord {
            layout,
            len: chunk_len,
        };
        let hashes = shards.hashes();
        match placed {
            Some(placed) => self
                .repo
                .meta()
                .add_placed_chunk(&chunk.id, &record, &hashes, owner, &placed)?,
            None => {
                self.write_shards(&chunk.id, &shards, None)?;
                self.repo
                    .meta()
                    .add_chunk(&chunk.id, &record, &hashes, owner)?;
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
            self.repo.store().write(id, index, &[header, body])?;
        }
        Ok(())
    }

    /// Whether a chunk already in the index is stored well enough to reuse: enough shards
    /// placed on peers (the repair thread sees to the rest), or all of them local.
    fn is_stored(&self, id: &ChunkId, record: &ChunkRecord) -> Result<bool, ChunkError> {
        if let Some(placed) = self.repo.meta().placed(id)? {
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
            if self.repo.store().size(id, index)? != Some(expected) {
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
        if let Some(remote) = self.remote.clone() {
            let known = match (
                self.repo.meta().placed(&chunk.id)?,
                self.repo.meta().chunk(&chunk.id)?,
            ) {
                (Some(placed), Some(record)) => Some((record, placed)),
                (None, None) => remote.locate(&self.repo, &chunk.id),
                _ => None,
            };
            if let Some((record, placed)) = known {
                let plaintext =
                    self.read_on_peers(remote.as_ref(), &record, &placed, chunk, coder)?;
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
        if let Some(remote) = self.remote.clone() {
            let known = match self.repo.meta().placed(&chunk.id)? {
                Some(placed) => match self.repo.meta().chunk(&chunk.id)? {
                    Some(record) => Some((record, placed)),
                    None => return Err(ChunkError::Absent { id: chunk.id }),
                },
                // Written by another member of a shared volume: found on the network.
                None if self.repo.meta().chunk(&chunk.id)?.is_none() => {
                    remote.locate(&self.repo, &chunk.id)
                }
                None => None,
            };
            if let Some((record, placed)) = known {
                return self.read_on_peers(remote.as_ref(), &record, &placed, chunk, coder);
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

    /// [`Pipeline::read_placed`] of the chunk `record` describes, whose shards `placed` names.
    fn read_on_peers(
        &self,
        remote: &dyn Remote,
        record: &ChunkRecord,
        placed: &Placed,
        chunk: &ChunkRef,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        let at = OnPeers {
            remote,
            record,
            placed,
        };
        self.read_placed(&at, chunk, coder)
    }

    /// The plaintext of a chunk whose shards are on peers: any k shards gathered in parallel
    /// (data shards preferred, so usually no decode), decoded, and checked. The AEAD tag alone
    /// proves nothing against a holder who knows the key, and a chunk's key is known to every
    /// member of a shared volume and every holder of a link to it; so the decoded ciphertext is
    /// checked against the chunk id, which is all a read needs (k shards that give the chunk
    /// back are right). Only a chunk of this peer's private key scope, whose key no one else
    /// has, is opened on its tag alone ([`crate::crypto::KeyScope`]). When the check fails the
    /// shards are checked one by one ([`Pipeline::read_checking_shards`]).
    fn read_placed(
        &self,
        at: &OnPeers,
        chunk: &ChunkRef,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        let id = &chunk.id;
        let wrong_key = |_| ChunkError::WrongKey { id: *id };
        if let Some(ciphertext) = at.remote.cached(id) {
            return chunk.key.decrypt(ciphertext).map_err(wrong_key);
        }
        let layout = at.record.layout;
        let gathered = at.gather(&self.repo, id, layout.needed(), ShardCheck::Header);
        if gathered.count() >= layout.needed() {
            if let Ok(ciphertext) = coder.decode(layout, at.record.len as usize, &gathered.bodies())
            {
                if self.repo.meta().is_private(id)? {
                    at.remote.remember(id, &ciphertext);
                    if let Ok(plaintext) = chunk.key.decrypt(ciphertext) {
                        return Ok(plaintext);
                    }
                } else if blake3::hash(&ciphertext).as_bytes() == id.as_bytes() {
                    at.remote.remember(id, &ciphertext);
                    return chunk.key.decrypt(ciphertext).map_err(wrong_key);
                }
            }
            // Nobody is blamed yet: bytes may have changed in flight on a bulk link (whose
            // bodies are not authenticated), or rotted on a holder's disk unknown to it.
            tracing::warn!(chunk = %id.short(), "the shards gathered do not give the chunk back (changed in flight, or a bad holder): fetching them again, each checked");
        }
        let ciphertext = self.read_checking_shards(at, id, coder)?;
        chunk.key.decrypt(ciphertext).map_err(wrong_key)
    }

    /// [`Pipeline::read_placed`] when k shards fetched unchecked did not give the chunk back (or
    /// could not be had): k shards gathered again, each checked against the writer's hash of it
    /// where this peer has them (a shard that fails is reported, and another asked for), the
    /// result against the chunk id. Shards that each pass their checksum yet decode to other
    /// bytes mean a holder made one up and this peer has no record to tell which: then every
    /// shard is gathered and k of them at a time are tried until they give the chunk
    /// ([`Pipeline::read_around_forgery`]).
    fn read_checking_shards(
        &self,
        at: &OnPeers,
        id: &ChunkId,
        coder: &mut ShardCoder,
    ) -> Result<Vec<u8>, ChunkError> {
        let layout = at.record.layout;
        let hashes = self.repo.meta().shard_hashes(id)?;
        let check = ShardCheck::Checksum(hashes.as_ref());
        let gathered = at.gather(&self.repo, id, layout.needed(), check);
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
            .decode(layout, at.record.len as usize, &gathered.bodies())
            .map_err(|_| unreachable)?;
        let ciphertext = if blake3::hash(&ciphertext).as_bytes() == id.as_bytes() {
            if !gathered.forged.is_empty() {
                let shards = encode_shards(id, ciphertext.clone(), layout, coder)?;
                at.remote
                    .replace_forged(&self.repo, id, &shards, &gathered.forged);
            }
            ciphertext
        } else {
            self.read_around_forgery(at, id, coder, hashes.as_ref())?
        };
        // The cache checks the id itself before it keeps a ciphertext.
        at.remote.remember(id, &ciphertext);
        Ok(ciphertext)
    }

    /// Every shard of a chunk whose first k decoded to the wrong bytes, then k of them at a
    /// time until they decode to the chunk; the shards that disagree with it are counted
    /// against their holders and replaced ([`crate::cluster::Remote::replace_forged`]).
    fn read_around_forgery(
        &self,
        at: &OnPeers,
        id: &ChunkId,
        coder: &mut ShardCoder,
        hashes: Option<&crate::meta::ShardHashes>,
    ) -> Result<Vec<u8>, ChunkError> {
        tracing::warn!(chunk = %id.short(), "shards that pass their checksums decode to bytes that are not the chunk: a holder forged one; trying the others");
        let layout = at.record.layout;
        let check = ShardCheck::Checksum(hashes);
        let all = at.gather(&self.repo, id, layout.shard_count(), check);
        let Some(ciphertext) = decode_any(coder, layout, at.record.len as usize, &all.bodies(), id)
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
        at.remote.replace_forged(&self.repo, id, &shards, &bad);
        Ok(ciphertext)
    }

    /// The common case of [`Pipeline::read_chunk`]: concatenate the data shards and decrypt. The
    /// AEAD tag, under the key from the (trusted) reference, authenticates the whole ciphertext,
    /// so the shard checksums and the chunk id need not be hashed again when it verifies.
    /// `None` when anything is off (a shard missing or malformed, the tag failing): the caller
    /// then takes the slow path, which finds, reports and repairs the damage.
    fn read_chunk_fast(&self, chunk: &ChunkRef) -> Result<Option<Vec<u8>>, ChunkError> {
        let Some(record) = self.repo.meta().chunk(&chunk.id)? else {
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
            let read = self.repo.store().read_into(
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
            self.remote.clone(),
            self.repo.meta().placed(id)?,
            self.repo.meta().chunk(id)?,
        ) {
            let want = if all {
                record.layout.shard_count()
            } else {
                record.layout.needed()
            };
            let hashes = self.repo.meta().shard_hashes(id)?;
            images = remote
                .gather(
                    &self.repo,
                    id,
                    record.layout,
                    &placed,
                    want,
                    ShardCheck::Checksum(hashes.as_ref()),
                )
                .images;
            repair = false;
        }
        let mut header: Option<ShardHeader> = self.repo.meta().chunk(id)?.map(|r| ShardHeader {
            chunk: *id,
            layout: r.layout,
            index: 0,
            chunk_len: r.len,
        });
        if header.is_none() {
            // No index record (e.g. a chunk from another store): learn the layout from the
            // first shard that verifies.
            for index in 0..MAX_PROBE {
                let image = self.repo.store().read(id, index)?;
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
                images.push(self.repo.store().read(id, index as u8)?);
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
