//! Metadata in RocksDB: the chunk index and the put records.
//!
//! Column families:
//! - `chunks`: chunk id -> [`ChunkRecord`] (layout and length). Written only after all of the
//!   chunk's shards are in the store, so a record means "stored"; it also makes dedup cheap.
//! - `shard_hashes`: chunk id -> [`ShardHashes`], written with the chunk record: the blake3
//!   every shard image carries, as the writer made it. A reader checks each shard it fetches
//!   against these, so a holder cannot pass off a shard of its own making, even one with a
//!   valid checksum (chunks recorded before this table existed have none, and are checked
//!   against their chunk id instead).
//! - `refs`: chunk id ++ owner id -> empty. Which puts use which chunks; garbage collection keeps
//!   a chunk while a committed put refers to it.
//! - `puts`: owner id -> [`PutRecord`]. A put is `Pending` until its root is durable, then
//!   `Committed`; pending puts found at open time were interrupted and are collected.
//!
//! - `fs_inodes`, `fs_dirents`, `fs_xattrs`, `fs_meta`, `fs_versions`: the filesystem's tables, opaque
//!   here; the fs crate owns their schema and reaches them through [`FsTable`] and [`FsBatch`].
//! - `oplog`, `oplog_seq`, `volume_members`, `volume_invites`: the volumes' operation logs and
//!   the membership derived from them, opaque here; [`crate::oplog::store`] owns their schema
//!   and reaches them through the `cf_*` methods.
//! - `volumes`: the volumes this peer keeps (name, secret, pending join), owned by
//!   [`crate::volumes`].
//! - `events`: the bounded event log, owned by [`crate::events`].
//! - `analytics`: usage counts per file and per user, owned by [`crate::analytics`].
//!
//! Every value starts with a format version byte so later versions can migrate.

use std::path::Path;

use dfs_placement::{ChunkId, Layout};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::crypto::ChunkKey;

const CF_CHUNKS: &str = "chunks";
const CF_SHARD_HASHES: &str = "shard_hashes";
/// Chunks sealed under this peer's private key scope ([`crate::crypto::KeyScope::Private`]):
/// no one else knows their keys, so a read may trust their AEAD tag.
const CF_PRIVATE_CHUNKS: &str = "private_chunks";
const CF_REFS: &str = "refs";
const CF_PUTS: &str = "puts";
const CF_HELD: &str = "held";
/// Where this peer put the shards of its chunks on other peers (see [`Placed`]).
const CF_PLACED: &str = "placed";
/// Shards on other peers of chunks collected here, still to be deleted there.
const CF_DOOMED: &str = "doomed";
/// Chunks being placed right now, with every peer a shard was sent to: what a crash in the
/// middle of a write leaves behind is found here at the next start (see [`MetaDb::recover_placing`]).
const CF_PLACING: &str = "placing";
/// One write of [`MetaDb::cf_write`]: column family, key, and the value (`None` deletes).
pub(crate) type CfWrite = (&'static str, Vec<u8>, Option<Vec<u8>>);
/// The op log's tables (schema in [`crate::oplog::store`]).
pub(crate) const CF_OPLOG: &str = "oplog";
pub(crate) const CF_OPLOG_SEQ: &str = "oplog_seq";
pub(crate) const CF_VOLUME_MEMBERS: &str = "volume_members";
pub(crate) const CF_VOLUME_INVITES: &str = "volume_invites";
pub(crate) const CF_VOLUME_DEVICES: &str = "volume_devices";
/// The newest profile of every user seen (schema in [`crate::profiles`]).
pub(crate) const CF_PROFILES: &str = "profiles";
pub(crate) const CF_VOLUMES: &str = "volumes";
pub(crate) const CF_EVENTS: &str = "events";
pub(crate) const CF_ANALYTICS: &str = "analytics";
const FORMAT_V1: u8 = 1;

/// The tables the filesystem layer keeps in this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsTable {
    Inodes,
    Dirents,
    Xattrs,
    Meta,
    Versions,
}

impl FsTable {
    const ALL: [FsTable; 5] = [
        FsTable::Inodes,
        FsTable::Dirents,
        FsTable::Xattrs,
        FsTable::Meta,
        FsTable::Versions,
    ];

    fn cf_name(self) -> &'static str {
        match self {
            FsTable::Inodes => "fs_inodes",
            FsTable::Dirents => "fs_dirents",
            FsTable::Xattrs => "fs_xattrs",
            FsTable::Meta => "fs_meta",
            FsTable::Versions => "fs_versions",
        }
    }
}

/// A key and its value, as scanned from a table.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A set of filesystem-table changes applied atomically by [`MetaDb::fs_write`].
#[derive(Default)]
pub struct FsBatch {
    ops: Vec<(FsTable, Vec<u8>, Option<Vec<u8>>)>,
}

impl FsBatch {
    pub fn put(&mut self, table: FsTable, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, table: FsTable, key: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The id of one put (a write transaction).
pub type OwnerId = [u8; 16];

/// What the index knows about a stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub layout: Layout,
    /// Length of the ciphertext.
    pub len: u32,
}

/// The blake3 each shard image of a chunk carries (its header's bytes 48..80), by index: what
/// the writer made, against which every fetched shard is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHashes(pub Vec<[u8; 32]>);

impl ShardHashes {
    /// The hash shard `index` must carry, if recorded.
    pub fn of(&self, index: u8) -> Option<&[u8; 32]> {
        self.0.get(usize::from(index))
    }
}

/// State of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutState {
    Pending,
    Committed,
}

/// One put: what was stored, under which root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRecord {
    pub state: PutState,
    /// Name of what was put (file or directory name).
    pub name: String,
    /// Seconds since the epoch when the put started.
    pub started: u64,
    /// The root chunk and its key once committed.
    pub root: Option<(ChunkId, ChunkKey)>,
    /// Plaintext bytes of file content under the root.
    pub bytes: u64,
}

/// A failure of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("metadata database is missing column family {0}")]
    MissingColumnFamily(&'static str),
    #[error("corrupt {what} record in the metadata database: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// The RocksDB metadata database of a data directory.
pub struct MetaDb {
    db: DB,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDb")
            .field("path", &self.db.path())
            .finish()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    // Serialising plain structs into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).unwrap_or_default());
    out
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, MetaError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| MetaError::Corrupt {
            what,
            detail: e.to_string(),
        }),
        Some((v, _)) => Err(MetaError::Corrupt {
            what,
            detail: format!("unknown format version {v}"),
        }),
        None => Err(MetaError::Corrupt {
            what,
            detail: "empty value".into(),
        }),
    }
}

fn chunk_from_key(key: &[u8]) -> Option<ChunkId> {
    key.get(..32)?.try_into().ok().map(ChunkId)
}

impl MetaDb {
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        let cfs = [
            CF_CHUNKS,
            CF_SHARD_HASHES,
            CF_PRIVATE_CHUNKS,
            CF_REFS,
            CF_PUTS,
            CF_HELD,
            CF_PLACED,
            CF_DOOMED,
            CF_PLACING,
            CF_OPLOG,
            CF_OPLOG_SEQ,
            CF_VOLUME_MEMBERS,
            CF_VOLUME_INVITES,
            CF_VOLUME_DEVICES,
            CF_PROFILES,
            CF_VOLUMES,
            CF_EVENTS,
            CF_ANALYTICS,
        ]
        .into_iter()
        .chain(FsTable::ALL.iter().map(|t| t.cf_name()))
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self { db })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, MetaError> {
        self.db
            .cf_handle(name)
            .ok_or(MetaError::MissingColumnFamily(name))
    }

    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>, MetaError> {
        match self.db.get_cf(self.cf(CF_CHUNKS)?, id.as_bytes())? {
            Some(v) => decode("chunk", &v).map(Some),
            None => Ok(None),
        }
    }

    /// The hashes of a chunk's shards as its writer made them (`None` for a chunk recorded
    /// before they were kept, or not written here).
    pub fn shard_hashes(&self, id: &ChunkId) -> Result<Option<ShardHashes>, MetaError> {
        match self.db.get_cf(self.cf(CF_SHARD_HASHES)?, id.as_bytes())? {
            Some(v) => decode("shard hashes", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Record that chunk `id` was sealed under this peer's private key scope. Written after the
    /// chunk's own record: a crash between the two leaves a chunk read the checked way.
    pub fn mark_private(&self, id: &ChunkId) -> Result<(), MetaError> {
        self.db
            .put_cf(self.cf(CF_PRIVATE_CHUNKS)?, id.as_bytes(), [])?;
        Ok(())
    }

    /// Whether chunk `id` was sealed under this peer's private key scope.
    pub fn is_private(&self, id: &ChunkId) -> Result<bool, MetaError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_PRIVATE_CHUNKS)?, id.as_bytes())?
            .is_some())
    }

    /// Record that `chunk` is stored and used by `owner`.
    pub fn add_chunk(
        &self,
        id: &ChunkId,
        record: &ChunkRecord,
        hashes: &ShardHashes,
        owner: &OwnerId,
    ) -> Result<(), MetaError> {
        self.db
            .write(self.chunk_batch(id, record, hashes, owner)?)?;
        Ok(())
    }

    /// The writes that record a stored chunk, its shards' hashes and its first user.
    fn chunk_batch(
        &self,
        id: &ChunkId,
        record: &ChunkRecord,
        hashes: &ShardHashes,
        owner: &OwnerId,
    ) -> Result<WriteBatch, MetaError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CHUNKS)?, id.as_bytes(), encode(record));
        if !hashes.0.is_empty() {
            batch.put_cf(self.cf(CF_SHARD_HASHES)?, id.as_bytes(), encode(hashes));
        }
        batch.put_cf(self.cf(CF_REFS)?, ref_key(id, owner), []);
        Ok(batch)
    }

    /// [`MetaDb::add_chunk`] for a chunk placed on other peers, in one batch with its placement
    /// record; its placing intent is done with.
    pub fn add_placed_chunk(
        &self,
        id: &ChunkId,
        record: &ChunkRecord,
        hashes: &ShardHashes,
        owner: &OwnerId,
        placed: &Placed,
    ) -> Result<(), MetaError> {
        let mut batch = self.chunk_batch(id, record, hashes, owner)?;
        batch.put_cf(self.cf(CF_PLACED)?, id.as_bytes(), encode(placed));
        batch.delete_cf(self.cf(CF_PLACING)?, id.as_bytes());
        self.db.write(batch)?;
        Ok(())
    }

    /// Record that `owner` uses an already stored chunk.
    pub fn add_ref(&self, id: &ChunkId, owner: &OwnerId) -> Result<(), MetaError> {
        self.db.put_cf(self.cf(CF_REFS)?, ref_key(id, owner), [])?;
        Ok(())
    }

    pub fn put_record(&self, owner: &OwnerId) -> Result<Option<PutRecord>, MetaError> {
        match self.db.get_cf(self.cf(CF_PUTS)?, owner)? {
            Some(v) => decode("put", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Write a put record; `durable` waits for the write-ahead log to reach the disk.
    pub fn set_put(
        &self,
        owner: &OwnerId,
        record: &PutRecord,
        durable: bool,
    ) -> Result<(), MetaError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(durable);
        self.db
            .put_cf_opt(self.cf(CF_PUTS)?, owner, encode(record), &opts)?;
        Ok(())
    }

    pub fn delete_put(&self, owner: &OwnerId) -> Result<(), MetaError> {
        self.db.delete_cf(self.cf(CF_PUTS)?, owner)?;
        Ok(())
    }

    /// Every put record.
    pub fn puts(&self) -> Result<Vec<(OwnerId, PutRecord)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PUTS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let owner: OwnerId = k.as_ref().try_into().map_err(|_| MetaError::Corrupt {
                what: "put key",
                detail: format!("{} bytes", k.len()),
            })?;
            out.push((owner, decode("put", &v)?));
        }
        Ok(out)
    }

    /// Every (chunk, owner) reference.
    pub fn refs(&self) -> Result<Vec<(ChunkId, OwnerId)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REFS)?, IteratorMode::Start) {
            let (k, _) = item?;
            let parsed = chunk_from_key(&k).zip(k.get(32..48).and_then(|o| o.try_into().ok()));
            let (chunk, owner) = parsed.ok_or_else(|| MetaError::Corrupt {
                what: "reference key",
                detail: format!("{} bytes", k.len()),
            })?;
            out.push((chunk, owner));
        }
        Ok(out)
    }

    pub fn delete_ref(&self, id: &ChunkId, owner: &OwnerId) -> Result<(), MetaError> {
        self.db.delete_cf(self.cf(CF_REFS)?, ref_key(id, owner))?;
        Ok(())
    }

    /// Every chunk id in the index.
    pub fn chunk_ids(&self) -> Result<Vec<ChunkId>, MetaError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNKS)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            out.push(chunk_from_key(&k).ok_or_else(|| MetaError::Corrupt {
                what: "chunk key",
                detail: format!("{} bytes", k.len()),
            })?);
        }
        Ok(out)
    }

    /// Forget a chunk. Shards it had on other peers are queued for deletion there (the
    /// running peer sends the deletes); returns how many were queued.
    pub fn delete_chunk(&self, id: &ChunkId) -> Result<usize, MetaError> {
        let mut batch = WriteBatch::default();
        let mut queued = 0;
        if let Some(placed) = self.placed(id)? {
            queued = placed.holders.len();
            let doomed = self.doomed_of(id)?.merged(&placed.holders);
            batch.put_cf(self.cf(CF_DOOMED)?, id.as_bytes(), encode(&doomed));
            batch.delete_cf(self.cf(CF_PLACED)?, id.as_bytes());
        }
        batch.delete_cf(self.cf(CF_CHUNKS)?, id.as_bytes());
        batch.delete_cf(self.cf(CF_SHARD_HASHES)?, id.as_bytes());
        batch.delete_cf(self.cf(CF_PRIVATE_CHUNKS)?, id.as_bytes());
        self.db.write(batch)?;
        Ok(queued)
    }
}

/// The shards of one chunk and the peers that hold them, as the peer that wrote the chunk
/// knows it. A chunk with no record has every shard in the local store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// (shard index, holder's libp2p PeerId bytes); an index may have several holders while a
    /// shard moves, and none when it is lost.
    pub holders: Vec<(u8, Vec<u8>)>,
}

impl Placed {
    /// These holders and `more`, each (index, peer) once.
    pub fn merged(mut self, more: &[(u8, Vec<u8>)]) -> Placed {
        for h in more {
            if !self.holders.contains(h) {
                self.holders.push(h.clone());
            }
        }
        self
    }

    /// These holders without any in `gone`.
    pub fn without(mut self, gone: &[(u8, Vec<u8>)]) -> Placed {
        self.holders.retain(|h| !gone.contains(h));
        self
    }
}

/// What [`MetaDb::recover_placing`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Writes that a crash interrupted.
    pub writes: usize,
    /// Shards they may have left on peers, now queued for deletion there.
    pub shards_queued: usize,
}

impl MetaDb {
    pub fn placed(&self, id: &ChunkId) -> Result<Option<Placed>, MetaError> {
        match self.db.get_cf(self.cf(CF_PLACED)?, id.as_bytes())? {
            Some(v) => decode("placed chunk", &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn set_placed(&self, id: &ChunkId, placed: &Placed) -> Result<(), MetaError> {
        self.db
            .put_cf(self.cf(CF_PLACED)?, id.as_bytes(), encode(placed))?;
        Ok(())
    }

    /// Whether any chunk has a placement record, or shards queued for deletion elsewhere.
    pub fn has_placed(&self) -> Result<bool, MetaError> {
        for cf in [CF_PLACED, CF_DOOMED] {
            if let Some(item) = self
                .db
                .iterator_cf(self.cf(cf)?, IteratorMode::Start)
                .next()
            {
                item?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Up to `limit` placement records in chunk id order, after `after` (from the start when
    /// `None`).
    pub fn placed_after(
        &self,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, Placed)>, MetaError> {
        let start = after.map_or([0u8; 32], |id| *id.as_bytes());
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PLACED)?, mode) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(id) = chunk_from_key(&k) else {
                continue;
            };
            if after == Some(&id) {
                continue;
            }
            out.push((id, decode("placed chunk", &v)?));
        }
        Ok(out)
    }

    /// Shards of collected chunks still to delete on other peers.
    pub fn doomed(&self) -> Result<Vec<(ChunkId, Placed)>, MetaError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_DOOMED)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Some(id) = chunk_from_key(&k) {
                out.push((id, decode("doomed chunk", &v)?));
            }
        }
        Ok(out)
    }

    /// What is queued for deletion of one chunk (empty when nothing).
    pub fn doomed_of(&self, id: &ChunkId) -> Result<Placed, MetaError> {
        self.record_of(CF_DOOMED, id)
    }

    /// Start placing chunk `id` on the peers in `intent`, before any shard is sent. Deletes
    /// still queued for those very shards (left by an earlier, collected copy of the chunk)
    /// are dropped: the shards about to be stored are the same bytes, and must stay.
    pub fn begin_placing(&self, id: &ChunkId, intent: &Placed) -> Result<(), MetaError> {
        self.extend_placing(id, Placed::default(), intent)
    }

    /// One more peer is sent shard `index` of `id` (a target failed).
    pub fn add_placing(&self, id: &ChunkId, index: u8, peer: Vec<u8>) -> Result<(), MetaError> {
        let current = self.record_of(CF_PLACING, id)?;
        self.extend_placing(
            id,
            current,
            &Placed {
                holders: vec![(index, peer)],
            },
        )
    }

    fn extend_placing(
        &self,
        id: &ChunkId,
        current: Placed,
        more: &Placed,
    ) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        let intent = current.merged(&more.holders);
        batch.put_cf(self.cf(CF_PLACING)?, id.as_bytes(), encode(&intent));
        self.put_doomed(&mut batch, id, self.doomed_of(id)?.without(&more.holders))?;
        self.db.write(batch)?;
        Ok(())
    }

    /// A placement failed: every peer it sent a shard to is queued for deletion.
    pub fn abandon_placing(&self, id: &ChunkId) -> Result<(), MetaError> {
        let intent = self.record_of(CF_PLACING, id)?;
        let mut batch = WriteBatch::default();
        self.put_doomed(&mut batch, id, self.doomed_of(id)?.merged(&intent.holders))?;
        batch.delete_cf(self.cf(CF_PLACING)?, id.as_bytes());
        self.db.write(batch)?;
        Ok(())
    }

    /// After a crash: every placement that never finished queues the shards it may have left
    /// for deletion, except those its chunk's placement record names (a chunk written before
    /// and being placed again). Run at start, before any write.
    pub fn recover_placing(&self) -> Result<Recovered, MetaError> {
        let mut found = Recovered::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PLACING)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let Some(id) = chunk_from_key(&k) else {
                continue;
            };
            let intent: Placed = decode("placing chunk", &v)?;
            let keep = match self.chunk(&id)? {
                Some(_) => self.placed(&id)?.unwrap_or_default(),
                None => Placed::default(),
            };
            let strays = intent.without(&keep.holders);
            found.writes += 1;
            found.shards_queued += strays.holders.len();
            let mut batch = WriteBatch::default();
            self.put_doomed(
                &mut batch,
                &id,
                self.doomed_of(&id)?.merged(&strays.holders),
            )?;
            batch.delete_cf(self.cf(CF_PLACING)?, id.as_bytes());
            self.db.write(batch)?;
        }
        Ok(found)
    }

    /// Whether chunk `id` is being placed now.
    pub fn is_placing(&self, id: &ChunkId) -> Result<bool, MetaError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PLACING)?, id.as_bytes())?
            .is_some())
    }

    /// Queue shards of chunk `id` (index, peer) for deletion on their peers.
    pub fn queue_deletes(&self, id: &ChunkId, shards: &[(u8, Vec<u8>)]) -> Result<(), MetaError> {
        self.write_doomed(id, self.doomed_of(id)?.merged(shards))
    }

    /// Drop shards from the delete queue of chunk `id`: they were deleted, or they are to be
    /// kept after all (a peer holds that shard again).
    pub fn unqueue_deletes(&self, id: &ChunkId, shards: &[(u8, Vec<u8>)]) -> Result<(), MetaError> {
        self.write_doomed(id, self.doomed_of(id)?.without(shards))
    }

    fn write_doomed(&self, id: &ChunkId, doomed: Placed) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        self.put_doomed(&mut batch, id, doomed)?;
        self.db.write(batch)?;
        Ok(())
    }

    fn put_doomed(
        &self,
        batch: &mut WriteBatch,
        id: &ChunkId,
        doomed: Placed,
    ) -> Result<(), MetaError> {
        let cf = self.cf(CF_DOOMED)?;
        if doomed.holders.is_empty() {
            batch.delete_cf(cf, id.as_bytes());
        } else {
            batch.put_cf(cf, id.as_bytes(), encode(&doomed));
        }
        Ok(())
    }

    fn record_of(&self, cf: &'static str, id: &ChunkId) -> Result<Placed, MetaError> {
        match self.db.get_cf(self.cf(cf)?, id.as_bytes())? {
            Some(v) => decode("placement", &v),
            None => Ok(Placed::default()),
        }
    }
}

/// A shard this peer keeps for other peers: who stored it and how large it is.
///
/// Every peer that stored the image holds a claim on it: the first in `owner`, any that
/// stored the same bytes later (a second writer of the same content in a shared volume, a
/// steward's repair onto a peer the writer then repairs onto too) in `co_owners`. A delete
/// drops the sender's claim only; the file goes with the last claim. With one owner, the
/// first writer to collect the chunk deleted the shard that a second writer still placed
/// there, and the second writer could never delete it at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecord {
    /// The first storing peer's id (libp2p PeerId bytes).
    pub owner: Vec<u8>,
    pub len: u64,
    /// Other peers that stored the same image since (absent in records written before).
    pub co_owners: Vec<Vec<u8>>,
}

/// The record as written before shards could have several owners (a strict prefix of
/// [`HeldRecord`]'s encoding).
#[derive(Deserialize)]
struct SoleOwnerRecord {
    owner: Vec<u8>,
    len: u64,
}

impl HeldRecord {
    pub fn new(owner: Vec<u8>, len: u64) -> Self {
        Self {
            owner,
            len,
            co_owners: Vec::new(),
        }
    }

    /// Every peer with a claim on the shard, the first owner first.
    pub fn claimants(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.owner).chain(&self.co_owners)
    }

    pub fn is_claimed_by(&self, peer: &[u8]) -> bool {
        self.claimants().any(|c| c == peer)
    }

    /// Add `peer`'s claim (once).
    pub fn claim(&mut self, peer: Vec<u8>) {
        if !self.is_claimed_by(&peer) {
            self.co_owners.push(peer);
        }
    }

    /// Drop `peer`'s claim; `None` when it was the last one (the shard is nobody's).
    pub fn without_claim(mut self, peer: &[u8]) -> Option<Self> {
        self.co_owners.retain(|c| c != peer);
        if self.owner == peer {
            if self.co_owners.is_empty() {
                return None;
            }
            self.owner = self.co_owners.remove(0);
        }
        Some(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode("held shard", bytes).or_else(|e| {
            let old: SoleOwnerRecord = decode("held shard", bytes).map_err(|_| e)?;
            Ok(Self::new(old.owner, old.len))
        })
    }
}

/// Shards held for others: (count, bytes, bytes claimed by each owner peer id).
pub type HeldTotals = (u64, u64, std::collections::HashMap<Vec<u8>, u64>);

fn held_key(id: &ChunkId, index: u8) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[..32].copy_from_slice(id.as_bytes());
    key[32] = index;
    key
}

impl MetaDb {
    pub fn held(&self, id: &ChunkId, index: u8) -> Result<Option<HeldRecord>, MetaError> {
        match self.db.get_cf(self.cf(CF_HELD)?, held_key(id, index))? {
            Some(v) => HeldRecord::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    pub fn set_held(&self, id: &ChunkId, index: u8, record: &HeldRecord) -> Result<(), MetaError> {
        self.db
            .put_cf(self.cf(CF_HELD)?, held_key(id, index), encode(record))?;
        Ok(())
    }

    pub fn delete_held(&self, id: &ChunkId, index: u8) -> Result<(), MetaError> {
        self.db.delete_cf(self.cf(CF_HELD)?, held_key(id, index))?;
        Ok(())
    }

    /// The indices of the shards of chunk `id` held here, ascending.
    pub fn held_indices(&self, id: &ChunkId) -> Result<Vec<u8>, MetaError> {
        let start = held_key(id, 0);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_HELD)?, mode) {
            let (k, _) = item?;
            if k.len() != 33 || &k[..32] != id.as_bytes() {
                break;
            }
            out.push(k[32]);
        }
        Ok(out)
    }

    /// Up to `limit` distinct chunks of which this peer holds shards, in id order, after
    /// `after` (from the start when `None`): a sweep reads the table in such pages.
    pub fn held_chunks(
        &self,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkId>, MetaError> {
        let start = after.map_or([0u8; 33], |id| held_key(id, u8::MAX));
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out: Vec<ChunkId> = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_HELD)?, mode) {
            let (k, _) = item?;
            let Some(id) = chunk_from_key(&k) else {
                continue;
            };
            if after == Some(&id) || out.last() == Some(&id) {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push(id);
        }
        Ok(out)
    }

    /// Count and total size of the shards held for other peers, and the bytes of each owner.
    pub fn held_totals(&self) -> Result<HeldTotals, MetaError> {
        let (mut count, mut bytes) = (0, 0);
        let mut owners = std::collections::HashMap::<Vec<u8>, u64>::new();
        for item in self.db.iterator_cf(self.cf(CF_HELD)?, IteratorMode::Start) {
            let (_, v) = item?;
            let record = HeldRecord::decode(&v)?;
            count += 1;
            bytes += record.len;
            for claimant in record.claimants() {
                *owners.entry(claimant.clone()).or_default() += record.len;
            }
        }
        Ok((count, bytes, owners))
    }
}

impl MetaDb {
    /// One value of a filesystem table.
    pub fn fs_get(&self, table: FsTable, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.cf_get(table.cf_name(), key)
    }

    /// Apply a batch atomically; `durable` waits for the write-ahead log to reach the disk.
    pub fn fs_write(&self, batch: FsBatch, durable: bool) -> Result<(), MetaError> {
        let writes = batch.ops.into_iter();
        self.cf_write(writes.map(|(table, k, v)| (table.cf_name(), k, v)), durable)
    }

    /// Entries of a table whose keys start with `prefix`, in key order, starting after
    /// `after` (a full key) when given, at most `limit` of them.
    pub fn fs_scan(
        &self,
        table: FsTable,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, MetaError> {
        self.cf_scan(table.cf_name(), prefix, after, limit)
    }

    /// One value of the named column family, for modules that own a table's schema.
    pub(crate) fn cf_get(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, MetaError> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Apply (column family, key, value or `None` to delete) writes atomically; `durable` waits
    /// for the write-ahead log to reach the disk.
    pub(crate) fn cf_write(
        &self,
        writes: impl IntoIterator<Item = CfWrite>,
        durable: bool,
    ) -> Result<(), MetaError> {
        let mut wb = WriteBatch::default();
        for (cf, key, value) in writes {
            let cf = self.cf(cf)?;
            match value {
                Some(v) => wb.put_cf(cf, key, v),
                None => wb.delete_cf(cf, key),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(durable);
        self.db.write_opt(wb, &opts)?;
        Ok(())
    }

    /// Up to `limit` rows of `cf` from `from` (inclusive) on, in key order.
    pub(crate) fn cf_scan_from(
        &self,
        cf: &'static str,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, MetaError> {
        let mode = IteratorMode::From(from, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, mode).take(limit) {
            let (k, v) = item?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// How many rows `cf` holds (a full scan of its keys).
    pub(crate) fn cf_count(&self, cf: &'static str) -> Result<u64, MetaError> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// [`MetaDb::fs_scan`] of the named column family.
    pub(crate) fn cf_scan(
        &self,
        cf: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, MetaError> {
        let start = after.unwrap_or(prefix);
        let mode = IteratorMode::From(start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if after.is_some_and(|a| a == &k[..]) {
                continue;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Visit every entry of a table whose key starts with `prefix`, in key order, reading in
    /// pages so memory stays bounded; stops at the first error `visit` returns.
    pub fn fs_for_each<E: From<MetaError>>(
        &self,
        table: FsTable,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.fs_scan(table, prefix, after.as_deref(), 4096)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (k, v) in &page {
                visit(k, v)?;
            }
        }
    }

    /// Make every write so far durable.
    pub fn sync_wal(&self) -> Result<(), MetaError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

fn ref_key(id: &ChunkId, owner: &OwnerId) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(id.as_bytes());
    key[32..].copy_from_slice(owner);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: u8, peer: u8) -> (u8, Vec<u8>) {
        (index, vec![peer; 4])
    }

    fn intent(pairs: &[(u8, u8)]) -> Placed {
        Placed {
            holders: pairs.iter().map(|&(i, p)| shard(i, p)).collect(),
        }
    }

    fn sorted(mut p: Placed) -> Vec<(u8, Vec<u8>)> {
        p.holders.sort();
        p.holders
    }

    #[test]
    fn held_records_of_one_owner_still_read_and_claims_go_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let id = ChunkId([7; 32]);
        // A record as written before shards had several owners.
        let old = encode(&(vec![1u8; 4], 100u64));
        db.db
            .put_cf(db.cf(CF_HELD).unwrap(), held_key(&id, 2), old)
            .unwrap();
        let mut record = db.held(&id, 2).unwrap().expect("old record");
        assert_eq!(record, HeldRecord::new(vec![1; 4], 100));
        record.claim(vec![2; 4]);
        record.claim(vec![2; 4]);
        db.set_held(&id, 2, &record).unwrap();
        let (count, bytes, owners) = db.held_totals().unwrap();
        assert_eq!((count, bytes), (1, 100));
        assert_eq!(owners.get(&vec![2; 4]), Some(&100));
        let record = db.held(&id, 2).unwrap().expect("record");
        assert!(record.is_claimed_by(&[1; 4]) && record.is_claimed_by(&[2; 4]));
        let rest = record.without_claim(&[1; 4]).expect("2 still claims it");
        assert_eq!(rest.claimants().collect::<Vec<_>>(), vec![&vec![2u8; 4]]);
        assert!(rest.clone().without_claim(&[9; 4]).is_some());
        assert!(rest.without_claim(&[2; 4]).is_none());
    }

    #[test]
    fn a_write_cut_short_queues_every_peer_it_sent_to_for_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let id = ChunkId([5; 32]);
        db.begin_placing(&id, &intent(&[(0, 1), (1, 2)])).unwrap();
        db.add_placing(&id, 1, vec![3; 4]).unwrap();
        // The process dies here; the database is reopened by the next start.
        drop(db);
        let db = MetaDb::open(dir.path()).unwrap();
        let found = db.recover_placing().unwrap();
        assert_eq!(
            found,
            Recovered {
                writes: 1,
                shards_queued: 3
            }
        );
        assert_eq!(
            sorted(db.doomed_of(&id).unwrap()),
            vec![shard(0, 1), shard(1, 2), shard(1, 3)]
        );
        assert!(!db.is_placing(&id).unwrap());
        assert_eq!(db.recover_placing().unwrap(), Recovered::default());
    }

    #[test]
    fn a_finished_write_leaves_no_intent_and_recovery_spares_recorded_holders() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let rec = ChunkRecord {
            layout: Layout::Erasure { data: 4, parity: 2 },
            len: 10,
        };
        let done = ChunkId([6; 32]);
        db.begin_placing(&done, &intent(&[(0, 1)])).unwrap();
        db.add_placed_chunk(
            &done,
            &rec,
            &ShardHashes::default(),
            &[1; 16],
            &intent(&[(0, 1)]),
        )
        .unwrap();
        assert!(!db.is_placing(&done).unwrap());
        // A chunk placed before, being placed again when the crash came: only the peers its
        // record does not name are strays.
        let again = ChunkId([7; 32]);
        db.add_placed_chunk(
            &again,
            &rec,
            &ShardHashes::default(),
            &[1; 16],
            &intent(&[(0, 1), (1, 2)]),
        )
        .unwrap();
        db.begin_placing(&again, &intent(&[(0, 1), (1, 4)]))
            .unwrap();
        assert_eq!(
            db.recover_placing().unwrap(),
            Recovered {
                writes: 1,
                shards_queued: 1
            }
        );
        assert_eq!(db.doomed_of(&again).unwrap().holders, vec![shard(1, 4)]);
        assert_eq!(db.doomed_of(&done).unwrap(), Placed::default());
    }

    #[test]
    fn placing_a_collected_chunk_again_cancels_the_deletes_of_the_same_shards() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let id = ChunkId([8; 32]);
        db.queue_deletes(&id, &[shard(0, 1), shard(1, 2), shard(2, 3)])
            .unwrap();
        db.begin_placing(&id, &intent(&[(0, 1), (1, 5)])).unwrap();
        db.add_placing(&id, 2, vec![3; 4]).unwrap();
        // Shard 0 on peer 1 and shard 2 on peer 3 are stored anew: same bytes, and they stay.
        assert_eq!(db.doomed_of(&id).unwrap().holders, vec![shard(1, 2)]);
        // The write fails: everything it sent to is queued, with what was queued already.
        db.abandon_placing(&id).unwrap();
        assert_eq!(
            sorted(db.doomed_of(&id).unwrap()),
            vec![shard(0, 1), shard(1, 2), shard(1, 5), shard(2, 3)]
        );
        db.unqueue_deletes(&id, &[shard(0, 1), shard(1, 2), shard(1, 5), shard(2, 3)])
            .unwrap();
        assert!(db.doomed().unwrap().is_empty());
    }

    #[test]
    fn placement_records_are_read_in_pages_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        for n in 1..=5u8 {
            db.set_placed(&ChunkId([n; 32]), &intent(&[(0, n)]))
                .unwrap();
        }
        let ids = |page: Vec<(ChunkId, Placed)>| {
            page.into_iter().map(|(id, _)| id.0[0]).collect::<Vec<_>>()
        };
        assert_eq!(ids(db.placed_after(None, 2).unwrap()), vec![1, 2]);
        assert_eq!(
            ids(db.placed_after(Some(&ChunkId([2; 32])), 2).unwrap()),
            vec![3, 4]
        );
        assert_eq!(
            ids(db.placed_after(Some(&ChunkId([4; 32])), 9).unwrap()),
            vec![5]
        );
        assert!(db
            .placed_after(Some(&ChunkId([5; 32])), 9)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn records_round_trip_in_a_real_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let id = ChunkId([3; 32]);
        let rec = ChunkRecord {
            layout: Layout::Erasure { data: 4, parity: 2 },
            len: 1234,
        };
        db.add_chunk(&id, &rec, &ShardHashes(vec![[7; 32]]), &[1; 16])
            .unwrap();
        assert_eq!(
            db.shard_hashes(&id).unwrap(),
            Some(ShardHashes(vec![[7; 32]]))
        );
        db.add_ref(&id, &[2; 16]).unwrap();
        assert_eq!(db.chunk(&id).unwrap(), Some(rec));
        assert_eq!(db.refs().unwrap(), vec![(id, [1; 16]), (id, [2; 16])]);
        let put = PutRecord {
            state: PutState::Pending,
            name: "x".into(),
            started: 5,
            root: None,
            bytes: 0,
        };
        db.set_put(&[1; 16], &put, true).unwrap();
        drop(db);
        let db = MetaDb::open(dir.path()).unwrap();
        assert_eq!(db.puts().unwrap(), vec![([1; 16], put)]);
        assert_eq!(db.chunk_ids().unwrap(), vec![id]);
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode::<ChunkRecord>("chunk", &[]).is_err());
        assert!(decode::<ChunkRecord>("chunk", &[9, 1, 2]).is_err());
        assert!(decode::<ChunkRecord>("chunk", &[FORMAT_V1, 200]).is_err());
    }
}
