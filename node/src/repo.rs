//! One data directory opened for use: exclusive lock, configuration, volume secret, shard store
//! and metadata database; put transactions and garbage collection.
//!
//! The configuration's process-wide settings take effect when it is loaded (or replaced):
//! `[storage] own_poly1305 = false` keeps chunk encryption to the chacha20poly1305 crate for
//! the rest of the process ([`crate::crypto::use_crate_only`]).
//!
//! Layout of `DATA/`: `lock` (held while open), `config.toml` (optional), `volume.key` (the
//! volume secret, mode 0600), `meta/` (RocksDB), `shards/`, `tmp/`.
//!
//! Crash safety of a put: the put is recorded `Pending` before its first chunk, every chunk it
//! uses is referenced by its owner id, and only after all shards are synced is the put made
//! `Committed` (a synchronous RocksDB write). A put interrupted at any point leaves a pending
//! record; the next open runs garbage collection, which drops pending puts and every chunk and
//! shard file that no committed put refers to.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dfs_placement::ChunkId;

use crate::config::{Config, ConfigError};
use crate::crypto::{ChunkKey, VolumeSecret};
use crate::meta::{MetaDb, MetaError, OwnerId, PutRecord, PutState};
use crate::store::{ShardStore, StoreError};

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path} cannot be used: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("data directory {path} can be read by other users (mode {mode:o}); it holds volume secrets and keys: run `chmod 700 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("data directory {path} is in use by another dfs process")]
    Locked { path: PathBuf },
    #[error("volume secret {path} is invalid: expected 32 bytes, found {len}")]
    BadSecret { path: PathBuf, len: usize },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("recovering from an interrupted put: {0}")]
    Recovery(#[source] Box<GcError>),
}

/// Why garbage collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub interrupted_puts: usize,
    pub chunks_removed: usize,
    pub shard_files_removed: usize,
    pub bytes_freed: u64,
    /// Shards of removed chunks that live on other peers: deleted there by the running peer.
    pub shards_queued_remote: usize,
}

/// An open data directory.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    config: Config,
    secret: VolumeSecret,
    store: ShardStore,
    meta: MetaDb,
    /// Held for the lifetime of the repo: one process per data directory.
    _lock: File,
    /// Set when opening had to clean up after an interrupted put.
    recovered: Option<GcReport>,
    events: crate::events::EventLog,
    analytics: crate::analytics::Analytics,
}

/// The owner of every chunk written through a mounted volume: a permanently committed put, so
/// plain garbage collection never removes volume data (the filesystem layer decides what its
/// chunks are).
pub const VOLUME_OWNER: OwnerId = [0xff; 16];

/// A put in progress. Chunks stored under it are collected unless it is committed.
#[derive(Debug)]
pub struct PutSession {
    owner: OwnerId,
    record: PutRecord,
}

impl PutSession {
    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Repo {
    /// Open (creating if needed) the data directory at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let dir_err = |source| OpenError::DataDir {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(OpenError::NotADirectory {
                    path: path.to_path_buf(),
                })
            }
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    // An empty directory (`mkdir -p` under the usual umask) holds nothing yet:
                    // tighten it. One with content may already have leaked: the owner decides.
                    let empty = fs::read_dir(path).map_err(dir_err)?.next().is_none();
                    if !empty {
                        return Err(OpenError::Exposed {
                            path: path.to_path_buf(),
                            mode,
                        });
                    }
                    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                        .map_err(dir_err)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(dir_err)?
            }
            Err(e) => return Err(dir_err(e)),
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let config = Config::load(&path.join("config.toml"))?;
        apply_to_process(&config);
        let secret = load_or_create_secret(&path.join("volume.key"))?;
        let store = ShardStore::open(path)?;
        let meta = MetaDb::open(&path.join("meta"))?;
        let mut repo = Self {
            path: path.to_path_buf(),
            config,
            secret,
            store,
            meta,
            _lock: lock,
            recovered: None,
            events: crate::events::EventLog::new(),
            analytics: crate::analytics::Analytics::default(),
        };
        let interrupted = repo
            .meta
            .puts()?
            .iter()
            .any(|(_, p)| p.state == PutState::Pending);
        if interrupted {
            let report = repo.gc().map_err(|e| OpenError::Recovery(Box::new(e)))?;
            tracing::warn!(?report, "cleaned up after an interrupted put");
            repo.recovered = Some(report);
        }
        Ok(repo)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record an event in this data directory's event log ([`crate::events`]).
    pub fn record_event(&self, kind: crate::events::EventKind, subject: &str, detail: &str) {
        self.events.record(&self.meta, kind, subject, detail);
    }

    /// Count one filesystem operation for usage analytics ([`crate::analytics`]).
    pub fn count_usage(&self, uid: u32, path: Option<&str>, opened: bool, read: u64, written: u64) {
        self.analytics
            .count(&self.meta, uid, path, opened, read, written);
    }

    /// Save the usage counts still in memory.
    pub fn flush_usage(&self) {
        if let Err(e) = self.analytics.flush(&self.meta) {
            tracing::warn!(error = %e, "usage counts not saved");
        }
    }

    /// Usage analytics: the `top` most read files, every user, totals.
    pub fn usage(&self, top: usize) -> Result<crate::analytics::Report, crate::meta::MetaError> {
        self.analytics.report(&self.meta, top)
    }

    /// Events since `since_ms` of `kinds` (all when empty), oldest first, at most `limit`.
    pub fn events(
        &self,
        since_ms: u64,
        kinds: &[crate::events::EventKind],
        limit: usize,
    ) -> Result<Vec<crate::events::Event>, crate::meta::MetaError> {
        self.events.query(&self.meta, since_ms, kinds, limit)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replace the configuration for this process (e.g. a command-line override).
    pub fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        apply_to_process(&config);
        self.config = config;
        Ok(())
    }

    pub(crate) fn secret(&self) -> &VolumeSecret {
        &self.secret
    }

    pub fn store(&self) -> &ShardStore {
        &self.store
    }

    pub fn meta(&self) -> &MetaDb {
        &self.meta
    }

    /// The cleanup done at open time after an interrupted put, if any.
    pub fn recovered(&self) -> Option<&GcReport> {
        self.recovered.as_ref()
    }

    /// Make sure the volume owner's record exists (see [`VOLUME_OWNER`]).
    pub fn ensure_volume_owner(&self) -> Result<(), MetaError> {
        if self.meta.put_record(&VOLUME_OWNER)?.is_none() {
            let record = PutRecord {
                state: PutState::Committed,
                name: "(mounted volume)".into(),
                started: now_secs(),
                root: None,
                bytes: 0,
            };
            self.meta.set_put(&VOLUME_OWNER, &record, true)?;
        }
        Ok(())
    }

    /// Start a put named `name`.
    pub fn begin_put(&self, name: &str) -> Result<PutSession, MetaError> {
        let owner: OwnerId = rand::random();
        let record = PutRecord {
            state: PutState::Pending,
            name: name.to_string(),
            started: now_secs(),
            root: None,
            bytes: 0,
        };
        self.meta.set_put(&owner, &record, true)?;
        Ok(PutSession { owner, record })
    }

    /// Make a put durable and visible: sync every shard, then record the root.
    pub fn commit_put(
        &self,
        mut session: PutSession,
        root: (ChunkId, ChunkKey),
        bytes: u64,
    ) -> Result<PutRecord, GcError> {
        self.store.sync()?;
        session.record.state = PutState::Committed;
        session.record.root = Some(root);
        session.record.bytes = bytes;
        self.meta.set_put(&session.owner, &session.record, true)?;
        Ok(session.record)
    }

    /// Give up a put and reclaim what it stored that nothing else uses.
    pub fn abort_put(&self, session: PutSession) -> Result<GcReport, GcError> {
        drop(session);
        self.gc()
    }

    /// Committed puts, oldest first.
    pub fn list_puts(&self) -> Result<Vec<(OwnerId, PutRecord)>, MetaError> {
        let mut puts: Vec<_> = self
            .meta
            .puts()?
            .into_iter()
            .filter(|(_, p)| p.state == PutState::Committed)
            .collect();
        puts.sort_by_key(|(_, p)| p.started);
        Ok(puts)
    }

    /// Forget every committed put whose root is `root`; their chunks become garbage unless other
    /// puts use them. Returns how many puts were forgotten.
    pub fn forget_root(&self, root: &ChunkId) -> Result<usize, MetaError> {
        let mut forgotten = 0;
        for (owner, put) in self.meta.puts()? {
            if put.root.is_some_and(|(id, _)| id == *root) {
                self.meta.delete_put(&owner)?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// Remove every chunk, shard file and reference that no committed put needs. Must not run
    /// while a put is in progress in this process (it would collect that put's chunks).
    ///
    /// Files go first and metadata last: on a full disk, deleting files frees the space the
    /// metadata writes need, and an interrupted collection is simply run again at the next open.
    pub fn gc(&self) -> Result<GcReport, GcError> {
        let mut report = GcReport::default();
        let mut committed: HashSet<OwnerId> = HashSet::new();
        let mut pending = Vec::new();
        for (owner, put) in self.meta.puts()? {
            match put.state {
                PutState::Committed => {
                    committed.insert(owner);
                }
                PutState::Pending => pending.push(owner),
            }
        }
        let mut live: HashSet<ChunkId> = HashSet::new();
        let mut dead_refs = Vec::new();
        for (chunk, owner) in self.meta.refs()? {
            if committed.contains(&owner) {
                live.insert(chunk);
            } else {
                dead_refs.push((chunk, owner));
            }
        }
        for shard in self.store.list()? {
            match shard {
                Ok(s) if live.contains(&s.chunk) => {}
                Ok(s) => {
                    report.bytes_freed += self.store.remove(&s.chunk, s.index)?;
                    report.shard_files_removed += 1;
                }
                Err(path) => tracing::warn!(
                    path = %path.display(),
                    "unexpected file in the shard store; left alone"
                ),
            }
        }
        report.bytes_freed += self.store.clean_tmp()?;
        for chunk in self.meta.chunk_ids()? {
            if !live.contains(&chunk) {
                report.shards_queued_remote += self.meta.delete_chunk(&chunk)?;
                report.chunks_removed += 1;
            }
        }
        for (chunk, owner) in dead_refs {
            self.meta.delete_ref(&chunk, &owner)?;
        }
        for owner in pending {
            self.meta.delete_put(&owner)?;
            report.interrupted_puts += 1;
        }
        Ok(report)
    }
}

fn load_or_create_secret(path: &Path) -> Result<VolumeSecret, OpenError> {
    let err = |source| OpenError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(err)?;
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| OpenError::BadSecret {
                    path: path.to_path_buf(),
                    len: bytes.len(),
                })?;
            Ok(VolumeSecret::from_bytes(arr))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes = VolumeSecret::generate();
            write_private_file(path, &bytes).map_err(err)?;
            Ok(VolumeSecret::from_bytes(bytes))
        }
        Err(e) => Err(err(e)),
    }
}

/// The settings of `config` that hold for the whole process. `own_poly1305 = false` only ever
/// turns the own Poly1305 off: a data directory that wants the crate gets it, whatever else
/// the process opened.
fn apply_to_process(config: &Config) {
    if !config.storage.own_poly1305 {
        crate::crypto::use_crate_only();
    }
    tracing::debug!(backend = ?crate::crypto::backend(), "chunk encryption");
}

/// Write a file only its owner may read (mode 0600), atomically and durably: a temporary file,
/// fsync, rename.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_support::{
        backend_switch, cpu_has_ifma, current_backend_matches_the_vectors,
    };
    use crate::crypto::Backend;

    /// `[storage] own_poly1305 = false` in `DATA/config.toml` switches chunk encryption to the
    /// crate when the data directory is opened, and the published vectors hold there; so does
    /// a configuration set later.
    #[test]
    fn own_poly1305_off_in_the_config_file_selects_the_crate() {
        let _switch = backend_switch();
        let on = if cpu_has_ifma() {
            Backend::OwnPoly1305
        } else {
            Backend::Crate
        };
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        assert!(repo.config().storage.own_poly1305);
        assert_eq!(crate::crypto::backend(), on);
        drop(repo);
        fs::write(
            dir.path().join("config.toml"),
            "[storage]\nown_poly1305 = false\n",
        )
        .unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        assert!(!repo.config().storage.own_poly1305);
        assert_eq!(crate::crypto::backend(), Backend::Crate);
        let plain = b"a chunk sealed by the crate".to_vec();
        let key = repo.secret().chunk_key(&plain);
        assert_eq!(key.decrypt(key.encrypt(plain.clone())), Ok(plain));
        current_backend_matches_the_vectors();
        drop(repo);
        drop(_switch);

        let _switch = backend_switch();
        fs::remove_file(dir.path().join("config.toml")).unwrap();
        let mut repo = Repo::open(dir.path()).unwrap();
        assert_eq!(crate::crypto::backend(), on);
        let mut config = repo.config().clone();
        config.storage.own_poly1305 = false;
        repo.set_config(config).unwrap();
        assert_eq!(crate::crypto::backend(), Backend::Crate);
    }
}
