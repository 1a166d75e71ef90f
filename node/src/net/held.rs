//! Shards this peer keeps for other peers: `DATA/held/shards/..`, with who stored each one in
//! RocksDB (`held` column family). Storage peers only ever see shard images (ciphertext under a
//! verified header); nothing here can decrypt them.
//!
//! Every image is verified against the chunk id and index it is stored under before it is
//! written, and again when checked; only a peer that stored a shard may delete it (each such
//! peer holds a claim, and the file goes with the last; see [`HeldRecord`]), and a shard once
//! taken is never replaced by other bytes. Admission: others' shards never fill
//! the last [`Admission::reserve_percent`] of the disk, and no one peer fills more than
//! [`Admission::peer_quota_percent`] of the capacity (counted per owner, from the `held`
//! table at start). Fetches and `Holding` queries also see the shards of this peer's own chunks in
//! its own store (`DATA/shards`), so a reader with only a link finds and reads a storage
//! mount's share of what it wrote like any other holder's. These calls block on the disk: the swarm loop runs them on the blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dfs_placement::ChunkId;
use libp2p::PeerId;

use super::wire::{Refusal, Request, Response};
use crate::meta::{HeldRecord, MetaDb};
use crate::shard::{ShardHeader, HASHED_HEADER_LEN, HEADER_LEN};
use crate::store::{ShardStore, StoreError};
use crate::Repo;

/// A held shard file opened to be sent as it lies ([`HeldShards::open_trusting`]).
pub struct HeldFile {
    pub file: std::fs::File,
    /// The whole image: header and body.
    pub len: u64,
    /// The blake3 the image carries (its header's bytes 48..80).
    pub hash: [u8; 32],
}

/// What a peer takes from others (`[network] reserve_percent`, `peer_quota_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Percent of the disk never filled with others' shards.
    pub reserve_percent: u8,
    /// Most of the capacity one peer may fill, in percent.
    pub peer_quota_percent: u8,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            reserve_percent: 5,
            peer_quota_percent: 50,
        }
    }
}

/// The held-shard store of one peer.
pub struct HeldShards {
    repo: Arc<Repo>,
    store: ShardStore,
    /// Bytes of held shards, kept in step with the `held` table.
    used: AtomicU64,
    count: AtomicU64,
    /// Configured capacity in bytes (0: the disk's free space is the only limit).
    capacity: u64,
    admission: Admission,
    /// The capacity last shown ([`HeldShards::usage`]).
    shown_capacity: AtomicU64,
    /// Bytes held for each owner (by peer id bytes), reserved before a shard is written.
    owners: Mutex<HashMap<Vec<u8>, u64>>,
    /// A client holds nothing for others: every store is refused, and it offers no capacity.
    client: bool,
    /// This peer (its own shards' holder in placement records).
    local: PeerId,
}

impl HeldShards {
    pub(crate) fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// `client`: refuse every store (see [`Refusal::NoStorage`]); shards held from before are
    /// still served and may still be deleted by their owners.
    pub fn open(
        repo: Arc<Repo>,
        local: PeerId,
        capacity: u64,
        admission: Admission,
        client: bool,
    ) -> Result<Self, crate::repo::OpenError> {
        let store = ShardStore::open(&repo.path().join("held"))?;
        let (count, used, owners) = repo.meta().held_totals()?;
        Ok(Self {
            repo,
            store,
            used: AtomicU64::new(used),
            count: AtomicU64::new(count),
            capacity,
            admission,
            shown_capacity: AtomicU64::new(0),
            owners: Mutex::new(owners),
            client,
            local,
        })
    }

    /// The data directory (for disk usage figures).
    pub fn data_dir(&self) -> &Path {
        self.repo.path()
    }

    fn meta(&self) -> &MetaDb {
        self.repo.meta()
    }

    /// (capacity offered, free of it, bytes used, shards held). The capacity shown moves only
    /// when the real one has drifted from it by more than an eighth: peers on a shared disk
    /// (or beside anything else writing to it) would otherwise flip their rendezvous weight
    /// (GiB rounded down to a power of two) back and forth near a boundary, and move shards
    /// each time. Free space is the real one (never more than the capacity shown leaves).
    pub fn usage(&self) -> (u64, u64, u64, u64) {
        let (capacity, used, count) = self.real_usage();
        let shown = self.shown_capacity.load(Ordering::Relaxed);
        let shown = if shown == 0 || capacity.abs_diff(shown) > capacity / 8 {
            self.shown_capacity.store(capacity, Ordering::Relaxed);
            capacity
        } else {
            shown
        };
        let free = capacity.min(shown).saturating_sub(used);
        (shown, free, used, count)
    }

    /// (capacity, bytes used, shards held) as they are now: what stores are admitted by.
    fn real_usage(&self) -> (u64, u64, u64) {
        let used = self.used.load(Ordering::Relaxed);
        let count = self.count.load(Ordering::Relaxed);
        if self.client {
            return (0, used, count);
        }
        let path = self.repo.path();
        let reserve =
            disk_total(path).unwrap_or(0) / 100 * u64::from(self.admission.reserve_percent);
        let room = used + disk_free(path).unwrap_or(0).saturating_sub(reserve);
        let capacity = match self.capacity {
            0 => room,
            c => c.min(room),
        };
        (capacity, used, count)
    }

    /// Up to `limit` distinct chunks held here, in id order, after `after`.
    pub fn chunks_after(
        &self,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkId>, crate::meta::MetaError> {
        self.meta().held_chunks(after, limit)
    }

    /// Serve one request from `from` on the blocking pool (inbound requests of either
    /// transport): the answer, and the chunk a successful store was for (this peer becomes a
    /// provider of it).
    pub async fn serve(
        self: Arc<Self>,
        from: PeerId,
        request: Request,
    ) -> (Response, Option<ChunkId>) {
        let (chunk, _) = request.shard();
        let is_store = matches!(request, Request::Store { .. });
        let response = on_blocking_pool(move || self.handle(from, request), |r| r).await;
        let stored = (is_store && response == Response::Stored).then_some(chunk);
        (response, stored)
    }

    /// Serve one request from `from`.
    pub fn handle(&self, from: PeerId, request: Request) -> Response {
        let (chunk, index) = request.shard();
        let result = match request {
            Request::Store { image, .. } => self.store(from, chunk, index, &image),
            Request::Fetch { .. } => self.fetch(chunk, index, true),
            Request::FetchTrusting { .. } => self.fetch(chunk, index, false),
            Request::Check { .. } => self.check(chunk, index),
            Request::Delete { .. } => self.delete(from, chunk, index),
            Request::Holding { .. } => self.holding(chunk),
        };
        result.unwrap_or_else(|e| self.refusal(chunk, index, e))
    }

    /// The answer to a request that failed on this peer's disk.
    fn refusal(&self, chunk: ChunkId, index: u8, e: HeldError) -> Response {
        tracing::error!(error = %e, chunk = %chunk.short(), index, "held shard store failed");
        Response::Refused(if e.is_disk_full() {
            Refusal::Full
        } else {
            Refusal::Internal
        })
    }

    fn store(
        &self,
        from: PeerId,
        chunk: ChunkId,
        index: u8,
        image: &[u8],
    ) -> Result<Response, HeldError> {
        if self.client {
            return Ok(Response::Refused(Refusal::NoStorage));
        }
        if ShardHeader::decode_expected(image, chunk, index).is_err() {
            tracing::warn!(peer = %from, chunk = %chunk.short(), index, "refused a shard that does not verify");
            return Ok(Response::Refused(Refusal::Invalid));
        }
        if let Some(existing) = self.meta().held(&chunk, index)? {
            return self.store_again(from, chunk, index, image, &existing);
        }
        let len = image.len() as u64;
        let owner = from.to_bytes();
        if let Some(refusal) = self.admit(&owner, len) {
            tracing::warn!(peer = %from, chunk = %chunk.short(), index, "refused a shard: {refusal}");
            return Ok(Response::Refused(refusal));
        }
        let record = HeldRecord::new(owner, len);
        let written = self
            .store
            .write_grouped(&chunk, index, &[image])
            .map_err(HeldError::from)
            .and_then(|_| Ok(self.meta().set_held(&chunk, index, &record)?));
        if let Err(e) = written {
            self.release(&record.owner, len);
            return Err(e);
        }
        self.used.fetch_add(record.len, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Response::Stored)
    }

    /// Reserve `len` bytes for `owner`, or say why not: the capacity (after the disk reserve)
    /// is full, or `owner` already holds its quota of it.
    fn admit(&self, owner: &[u8], len: u64) -> Option<Refusal> {
        let (capacity, used, _) = self.real_usage();
        if len > capacity.saturating_sub(used) {
            return Some(Refusal::Full);
        }
        self.charge(owner, len, capacity)
    }

    /// Charge `len` bytes of a shard already on disk to `owner`, a further claimant: only its
    /// quota counts (the disk holds the bytes once).
    fn admit_claim(&self, owner: &[u8], len: u64) -> Option<Refusal> {
        let (capacity, _, _) = self.real_usage();
        self.charge(owner, len, capacity)
    }

    /// Count `len` more bytes against `owner`'s quota of `capacity`, or refuse.
    fn charge(&self, owner: &[u8], len: u64, capacity: u64) -> Option<Refusal> {
        let quota = capacity / 100 * u64::from(self.admission.peer_quota_percent);
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let held = owners.entry(owner.to_vec()).or_default();
        if *held + len > quota {
            return Some(Refusal::Quota);
        }
        *held += len;
        None
    }

    /// Give back `len` bytes of `owner`'s quota (a shard deleted, or a store that failed).
    fn release(&self, owner: &[u8], len: u64) {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = owners.get_mut(owner) {
            *held = held.saturating_sub(len);
            if *held == 0 {
                owners.remove(owner);
            }
        }
    }

    /// A store of a shard already held: a shard is taken once. The same image again (a
    /// retry, another writer of the same content, a repair) is answered `Stored`, adds the
    /// sender's claim (charged to its quota; see [`HeldRecord`]) and rewrites the file only
    /// where it has rotted; other bytes under the same name are refused and counted as bad
    /// data: whoever sends them is trying to replace what another peer stored. A file lost
    /// from the disk under its record is written again, for an owner only.
    fn store_again(
        &self,
        from: PeerId,
        chunk: ChunkId,
        index: u8,
        image: &[u8],
        existing: &HeldRecord,
    ) -> Result<Response, HeldError> {
        let mut head = [0u8; HEADER_LEN];
        let held = self.store.open_file(&chunk, index, &mut head)?;
        let held_hash = held
            .as_ref()
            .and_then(|(_, len)| ShardHeader::check_head(&head, *len, chunk, index).ok())
            .map(|_| &head[HASHED_HEADER_LEN..HEADER_LEN]);
        let sent_hash = ShardHeader::carried_hash(image);
        match held_hash {
            Some(hash) if sent_hash.as_ref().map(|h| &h[..]) == Some(hash) => {
                // The same image (it verified, and carries the same blake3). If the copy
                // here has rotted under its intact header, this is the repair that rebuilt
                // it: written again, whoever sends it (the bytes are the ones stored).
                if self.read_verified(&chunk, index).is_none() {
                    tracing::warn!(peer = %from, chunk = %chunk.short(), index, "rewrote a held shard that had rotted on disk");
                    self.store.write_grouped(&chunk, index, &[image])?;
                }
                let sender = from.to_bytes();
                if !existing.is_claimed_by(&sender) {
                    if let Some(refusal) = self.admit_claim(&sender, existing.len) {
                        return Ok(Response::Refused(refusal));
                    }
                    let mut record = existing.clone();
                    record.claim(sender.clone());
                    if let Err(e) = self.meta().set_held(&chunk, index, &record) {
                        self.release(&sender, existing.len);
                        return Err(e.into());
                    }
                }
                Ok(Response::Stored)
            }
            None if existing.is_claimed_by(&from.to_bytes()) => {
                self.store.write_grouped(&chunk, index, &[image])?;
                Ok(Response::Stored)
            }
            _ => {
                tracing::warn!(peer = %from, chunk = %chunk.short(), index, "refused to replace a held shard with other bytes");
                crate::metrics::metrics()
                    .bad_shards
                    .with_label_values(&["overwrite"])
                    .inc();
                Ok(Response::Refused(Refusal::Conflict))
            }
        }
    }

    /// The image of a held shard, if it is here and verifies.
    pub fn read_verified(&self, chunk: &ChunkId, index: u8) -> Option<Vec<u8>> {
        let image = self.store.read(chunk, index).ok()??;
        ShardHeader::decode_expected(&image, *chunk, index)
            .is_ok()
            .then_some(image)
    }

    /// The image of a held shard; with `checksum` false only its header is checked (the
    /// requester authenticates the bytes itself, and scrubbing finds rot in the background).
    fn fetch(&self, chunk: ChunkId, index: u8, checksum: bool) -> Result<Response, HeldError> {
        let image = match self.store.read(&chunk, index)? {
            Some(image) => Some(image),
            // A shard of this peer's own chunk, in its own store (see `holding`).
            None => self.repo.store().read(&chunk, index)?,
        };
        match image {
            Some(image) if ShardHeader::decode_as(&image, chunk, index, checksum).is_ok() => {
                Ok(Response::Shard { image })
            }
            Some(_) => {
                tracing::warn!(chunk = %chunk.short(), index, "held shard is corrupt on disk");
                Ok(Response::Refused(Refusal::NotFound))
            }
            None => Ok(Response::Refused(Refusal::NotFound)),
        }
    }

    /// A held shard opened to be sent from its file as it lies (a trusting fetch over a bulk
    /// link), with only its header checked, as [`Request::FetchTrusting`] asks. Blocking (the
    /// caller is on the blocking pool); `Err` is the answer to send instead (not here,
    /// corrupt, or the disk failing).
    pub fn open_trusting(&self, chunk: ChunkId, index: u8) -> Result<HeldFile, Response> {
        self.open_checked(chunk, index)
            .map_err(|e| self.refusal(chunk, index, e))?
    }

    fn open_checked(
        &self,
        chunk: ChunkId,
        index: u8,
    ) -> Result<Result<HeldFile, Response>, HeldError> {
        let mut head = [0u8; HEADER_LEN];
        let opened = match self.store.open_file(&chunk, index, &mut head)? {
            Some(opened) => Some(opened),
            None => self.repo.store().open_file(&chunk, index, &mut head)?,
        };
        let Some((file, len)) = opened else {
            return Ok(Err(Response::Refused(Refusal::NotFound)));
        };
        if ShardHeader::check_head(&head, len, chunk, index).is_err() {
            tracing::warn!(chunk = %chunk.short(), index, "held shard is corrupt on disk");
            return Ok(Err(Response::Refused(Refusal::NotFound)));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[HASHED_HEADER_LEN..HEADER_LEN]);
        Ok(Ok(HeldFile { file, len, hash }))
    }

    /// Which shards of `chunk` are here, with the header of the first: those held for
    /// others, and those of this peer's own chunks in its own store (a storage mount keeps
    /// some of the shards of what it writes; readers and stewards must see them too).
    fn holding(&self, chunk: ChunkId) -> Result<Response, HeldError> {
        let held = self.meta().held_indices(&chunk)?;
        let own = self.own_indices(&chunk)?;
        let mut head = Vec::new();
        let mut buf = [0u8; HEADER_LEN];
        let stores = [(&self.store, &held), (self.repo.store(), &own)];
        'found: for (store, indices) in stores {
            for &index in indices {
                if let Some((_, len)) = store.open_file(&chunk, index, &mut buf)? {
                    if ShardHeader::check_head(&buf, len, chunk, index).is_ok() {
                        head = buf.to_vec();
                        break 'found;
                    }
                }
            }
        }
        let mut indices = held;
        indices.extend(own);
        indices.sort_unstable();
        indices.dedup();
        Ok(Response::Holds { indices, head })
    }

    /// Shards of this peer's own chunk `chunk` in its own store: every shard of a chunk with
    /// no placement record, else those its record places here.
    fn own_indices(&self, chunk: &ChunkId) -> Result<Vec<u8>, HeldError> {
        let Some(record) = self.meta().chunk(chunk)? else {
            return Ok(Vec::new());
        };
        let me = self.local.to_bytes();
        Ok(match self.meta().placed(chunk)? {
            None => (0..record.layout.shard_count())
                .filter_map(|i| u8::try_from(i).ok())
                .collect(),
            Some(placed) => placed
                .holders
                .iter()
                .filter(|(_, peer)| *peer == me)
                .map(|(i, _)| *i)
                .collect(),
        })
    }

    fn check(&self, chunk: ChunkId, index: u8) -> Result<Response, HeldError> {
        Ok(match self.store.read(&chunk, index)? {
            Some(image) => Response::Checked {
                intact: ShardHeader::decode_expected(&image, chunk, index).is_ok(),
                len: image.len() as u64,
            },
            None => Response::Refused(Refusal::NotFound),
        })
    }

    fn delete(&self, from: PeerId, chunk: ChunkId, index: u8) -> Result<Response, HeldError> {
        let Some(record) = self.meta().held(&chunk, index)? else {
            return Ok(Response::Refused(Refusal::NotFound));
        };
        let sender = from.to_bytes();
        if !record.is_claimed_by(&sender) {
            tracing::warn!(peer = %from, chunk = %chunk.short(), index, "refused to delete another peer's shard");
            return Ok(Response::Refused(Refusal::NotOwner));
        }
        let len = record.len;
        if let Some(rest) = record.without_claim(&sender) {
            // Others still claim it: only the sender's claim goes.
            self.meta().set_held(&chunk, index, &rest)?;
            self.release(&sender, len);
            return Ok(Response::Deleted { freed: 0 });
        }
        let freed = self.store.remove(&chunk, index)?;
        self.meta().delete_held(&chunk, index)?;
        self.release(&sender, len);
        self.used.fetch_sub(
            len.min(self.used.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(Response::Deleted { freed })
    }
}

/// Run `work` on the blocking pool; a task that panicked is answered `Internal` (as `failed`
/// makes that answer a `T`).
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    failed: impl FnOnce(Response) -> T,
) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "shard request handler failed");
            failed(Response::Refused(Refusal::Internal))
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HeldError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
}

impl HeldError {
    fn is_disk_full(&self) -> bool {
        matches!(self, HeldError::Store(e) if e.is_disk_full())
    }
}

/// Free bytes on the filesystem holding `path`, for an unprivileged user.
pub fn disk_free(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Total bytes of the filesystem holding `path`.
pub fn disk_total(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks() as u64 * stat.fragment_size() as u64)
}
