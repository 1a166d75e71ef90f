//! The chunk pipeline spread over the network: where a chunk's shards go, how they come back,
//! and the background work that keeps them healthy.
//!
//! A [`Cluster`] joins a [`Repo`] (chunk index, local shard store) to a running [`Network`].
//! Given to a [`crate::pipeline::Pipeline`] as its [`Remote`], every chunk stored is cut into its k+m
//! shards and sent to the targets that rendezvous hashing picks among the live peers
//! ([`transfer`]), and every read gathers any k shards from their holders in parallel. Where
//! each shard went is the chunk's [`Placed`] record in RocksDB; the peer that wrote a chunk owns
//! its health: [`repair`] rebuilds shards lost with dead peers, re-verifies held shards
//! (scrubbing) and moves shards toward their rendezvous targets when peers join or leave.
//!
//! Chunks written by other peers are looked after by the storage peers that hold their shards
//! ([`steward`]), so a chunk whose writer has gone is still repaired when a holder dies; and
//! a reader with only a link finds the holders by asking the peers that rendezvous hashing
//! ranks first ([`transfer::locate`]).
//!
//! The membership view (who is alive, their zones and weights) is refreshed from the peer
//! table twice a second ([`Members`]); writes and reads use the latest snapshot.

mod gate;
mod members;
pub mod repair;
pub mod status;
pub mod steward;
mod transfer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dfs_placement::{ChunkId, Layout};
use libp2p::PeerId;

use crate::chunk::{ChunkError, ShardSet};
use crate::config::PlacementConfig;
use crate::diskcache::{DiskCache, Filler};
use crate::meta::Placed;
use crate::net::Network;
use crate::repo::Repo;
pub use members::{Members, MembershipRules, SelfRole};
pub use status::{PlacementStatus, StewardStatus};
pub use transfer::{Gathered, ShardCheck};

/// What the repo needs from the network to store and read chunks (implemented by [`Cluster`]).
pub trait Remote: Send + Sync {
    /// Store the shards of a new chunk on their targets. `None`: this peer is the only place
    /// to put them (the caller writes them all locally).
    fn place(
        &self,
        repo: &Repo,
        id: &ChunkId,
        shards: &ShardSet,
    ) -> Result<Option<Placed>, ChunkError>;

    /// The ciphertext of a chunk fetched before, from the disk cache.
    fn cached(&self, id: &ChunkId) -> Option<Vec<u8>>;

    /// Offer a fetched chunk's ciphertext to the disk cache (which checks it against `id`).
    fn remember(&self, id: &ChunkId, ciphertext: &[u8]);

    /// Shard images of at least `want` distinct shards (data shards preferred) from their
    /// holders, indexed by shard; fewer when not enough could be had. Each is checked as
    /// `check` says ([`ShardCheck`]).
    fn gather(
        &self,
        repo: &Repo,
        id: &ChunkId,
        layout: Layout,
        placed: &Placed,
        want: usize,
        check: ShardCheck<'_>,
    ) -> Gathered;

    /// Shards that were not what their writer made (`bad`: each index with the holder that
    /// sent it), found while reading a chunk whose ciphertext the others gave back (`shards`,
    /// encoded again): count them against those holders, and put the right shards in their
    /// place on other peers.
    fn replace_forged(&self, repo: &Repo, id: &ChunkId, shards: &ShardSet, bad: &[(u8, PeerId)]);

    /// The layout, length and likely holders of a chunk this peer has no record of (written
    /// by another member of a shared volume); `None` when no peer has a shard of it.
    fn locate(&self, repo: &Repo, id: &ChunkId) -> Option<(crate::meta::ChunkRecord, Placed)>;
}

/// Why a piece of background work on a chunk (storing a shard, rebuilding a chunk's shards,
/// recording where they went) was not done.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("cannot decode from the shards left: {0}")]
    Decode(#[from] dfs_placement::DecodeError),
    #[error("the shards decode to bytes that do not match the chunk id")]
    Mismatch,
    #[error("cannot encode the shards again: {0}")]
    Encode(#[from] dfs_placement::EncodeError),
}

/// Counters of shard traffic caused by reads and writes.
#[derive(Debug, Default)]
pub struct TransferCounters {
    pub shards_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub shards_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub hedged: AtomicU64,
    pub fetch_failures: AtomicU64,
    pub store_failures: AtomicU64,
    /// Shards found through Kademlia provider records after their recorded holder failed.
    pub found_by_providers: AtomicU64,
}

/// The network side of a repo's chunks.
pub struct Cluster {
    network: Network,
    /// Work on the network's runtime, refused once the cluster stops.
    gate: gate::Gate,
    local: PeerId,
    settings: PlacementConfig,
    members: Mutex<Arc<Members>>,
    /// Smoothed time to fetch one shard, in microseconds (the hedge delay follows it).
    fetch_micros: AtomicU64,
    pub counters: TransferCounters,
    status: Mutex<PlacementStatus>,
    /// Serialises read-modify-write of placement records (writers vs the repair thread).
    placed_lock: Mutex<()>,
    /// Chunks whose queued deletes are being sent now. A writer placing such a chunk again
    /// waits for them (see [`Cluster::begin_placing`]); `deletes_done` wakes it.
    deleting: Mutex<HashSet<ChunkId>>,
    deletes_done: Condvar,
    /// Bumped whenever a placement record is made or changed: the repair thread looks at every
    /// chunk again only after such a change or a change of membership.
    changes: AtomicU64,
    /// Full passes begun by the repair thread (see [`Cluster::settle`]).
    passes_begun: AtomicU64,
    /// Set to end the repair thread's sleep early.
    wake: AtomicBool,
    /// Chunks fetched from other peers, kept on disk (`DATA/cache`, written by a fill
    /// thread); `None` when disabled.
    disk_cache: Option<Filler>,
    /// Chunks other members wrote, found by [`Remote::locate`]: (record, holders), never
    /// stored (this peer does not own them).
    foreign: Mutex<lru::LruCache<ChunkId, (crate::meta::ChunkRecord, Placed)>>,
}

/// A running cluster with its background threads; stops them when dropped.
pub struct ClusterHandle {
    pub cluster: Arc<Cluster>,
    threads: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Join `repo` to `network` and start the membership refresh and the repair thread;
    /// chunks go over the network through a [`crate::pipeline::Pipeline`] made with the
    /// cluster as its [`Remote`]. `runtime` is the network's runtime.
    pub fn start(
        repo: Arc<Repo>,
        network: Network,
        runtime: tokio::runtime::Handle,
        settings: PlacementConfig,
    ) -> ClusterHandle {
        let cluster = Arc::new(Cluster {
            local: network.local_id(),
            network,
            gate: gate::Gate::new(runtime),
            settings,
            members: Mutex::new(Arc::new(Members::default())),
            fetch_micros: AtomicU64::new(5_000),
            counters: TransferCounters::default(),
            status: Mutex::new(PlacementStatus::default()),
            placed_lock: Mutex::new(()),
            deleting: Mutex::new(HashSet::new()),
            deletes_done: Condvar::new(),
            changes: AtomicU64::new(0),
            passes_begun: AtomicU64::new(0),
            wake: AtomicBool::new(false),
            disk_cache: open_disk_cache(&repo),
            foreign: Mutex::new(lru::LruCache::new(FOREIGN_CHUNKS)),
        });
        match repo.meta().recover_placing() {
            Ok(r) if r.writes > 0 => tracing::warn!(
                writes = r.writes,
                shards = r.shards_queued,
                "writes cut short by a crash: the shards they left on peers are queued for deletion"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("cannot recover interrupted writes: {e}"),
        }
        cluster.refresh_members();
        let mut threads = Vec::new();
        let c = cluster.clone();
        threads.extend(
            std::thread::Builder::new()
                .name("dfs-members".into())
                .spawn(move || {
                    while c.sleep(Duration::from_millis(500)) {
                        c.refresh_members();
                    }
                })
                .map_err(|e| tracing::error!("cannot start the membership thread: {e}"))
                .ok(),
        );
        let (c, r) = (cluster.clone(), repo.clone());
        threads.extend(
            std::thread::Builder::new()
                .name("dfs-steward".into())
                .spawn(move || steward::run(&c, &r))
                .map_err(|e| tracing::error!("cannot start the steward thread: {e}"))
                .ok(),
        );
        let c = cluster.clone();
        threads.extend(
            std::thread::Builder::new()
                .name("dfs-repair".into())
                .spawn(move || repair::run(&c, &repo))
                .map_err(|e| tracing::error!("cannot start the repair thread: {e}"))
                .ok(),
        );
        ClusterHandle { cluster, threads }
    }

    pub fn local_id(&self) -> PeerId {
        self.local
    }

    pub fn settings(&self) -> &PlacementConfig {
        &self.settings
    }

    /// The latest membership snapshot.
    pub fn members(&self) -> Arc<Members> {
        lock(&self.members).clone()
    }

    /// Take a fresh membership snapshot now (it is refreshed twice a second anyway).
    pub fn refresh_members(&self) {
        let network = self.network.clone();
        let Some(seen) = self.gate.run(async move {
            let status = network.status().await?;
            let peers = network.peers().await?;
            Ok::<_, crate::net::NetError>((status, peers))
        }) else {
            return;
        };
        match seen {
            Ok((status, peers)) => {
                let role = if self.settings.transient {
                    SelfRole::None
                } else if self.settings.store_here {
                    SelfRole::Store
                } else {
                    SelfRole::Reserve
                };
                let rules = MembershipRules {
                    role,
                    uptime: self.network.uptime(),
                    trust_after: Duration::from_secs(self.settings.trust_after_secs),
                };
                let members = Members::from_views(self.local, &status, &peers, rules);
                *lock(&self.members) = Arc::new(members);
            }
            Err(e) => tracing::debug!("membership refresh failed: {e}"),
        }
    }

    /// What the repair thread last found, plus transfer counters.
    pub fn status(&self) -> PlacementStatus {
        let mut s = lock(&self.status).clone();
        s.hedged_fetches = self.counters.hedged.load(Ordering::Relaxed);
        s.found_by_providers = self.counters.found_by_providers.load(Ordering::Relaxed);
        s.bytes_sent = self.counters.bytes_sent.load(Ordering::Relaxed);
        s.bytes_fetched = self.counters.bytes_fetched.load(Ordering::Relaxed);
        s.disk_cache = self.disk_cache.as_ref().map(|c| c.cache().stats());
        s
    }

    fn set_status(&self, update: impl FnOnce(&mut PlacementStatus)) {
        update(&mut lock(&self.status));
    }

    /// Wait until a repair pass that began after this call has found every chunk on all its
    /// peers, or `timeout` passes; returns the status then. For one-shot commands (`dfs put`)
    /// that would otherwise exit with a shard whose target failed left to a later run.
    pub fn settle(&self, timeout: Duration) -> PlacementStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let target = self.passes_begun.load(Ordering::Relaxed) + 1;
            self.changed();
            self.wake.store(true, Ordering::Relaxed);
            while self.status().full_passes < target {
                if std::time::Instant::now() >= deadline || self.gate.is_closed() {
                    return self.status();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let s = self.status();
            if (s.degraded == 0 && s.pending == 0) || std::time::Instant::now() >= deadline {
                return s;
            }
        }
    }

    /// Sleep unless stopping; false once the cluster stops.
    fn sleep(&self, d: Duration) -> bool {
        self.nap(d, false)
    }

    /// Sleep unless stopping or, when `wakeable`, woken by [`Cluster::settle`]; false once the
    /// cluster stops.
    fn nap(&self, d: Duration, wakeable: bool) -> bool {
        let step = Duration::from_millis(10);
        let mut left = d;
        while !left.is_zero() {
            if self.gate.is_closed() {
                return false;
            }
            if wakeable && self.wake.swap(false, Ordering::Relaxed) {
                return true;
            }
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        !self.gate.is_closed()
    }

    /// Run `work` on the network's runtime and wait for it from a plain thread (a chunk
    /// worker, FUSE, the cluster's own threads); `None` once the cluster stops.
    fn wait_for<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        self.gate.run(work)
    }

    /// Whether the cluster is stopping (or stopped).
    fn stopping(&self) -> bool {
        self.gate.is_closed()
    }

    /// Record how long a shard fetch took (for the hedge delay).
    fn observe_fetch(&self, took: Duration) {
        let sample = took.as_micros().min(10_000_000) as u64;
        let old = self.fetch_micros.load(Ordering::Relaxed);
        self.fetch_micros
            .store((old * 7 + sample) / 8, Ordering::Relaxed);
    }

    /// How long to wait for a slow shard before asking one more holder.
    fn hedge_delay(&self) -> Duration {
        Duration::from_micros(3 * self.fetch_micros.load(Ordering::Relaxed) + 5_000)
    }

    /// Record that chunk `id` is about to be sent to the peers in `intent` (see
    /// [`crate::meta::MetaDb::begin_placing`]). Waits while deletes queued for an earlier copy
    /// of the chunk are in flight, so none of them can land after the new shards.
    pub(crate) fn begin_placing(
        &self,
        repo: &Repo,
        id: &ChunkId,
        intent: &Placed,
    ) -> Result<(), crate::meta::MetaError> {
        let _deleting = self.wait_for_deletes(id);
        repo.meta().begin_placing(id, intent)
    }

    /// Wait until no delete of chunk `id` is in flight; the guard keeps new ones from being
    /// claimed while it is held.
    fn wait_for_deletes(&self, id: &ChunkId) -> std::sync::MutexGuard<'_, HashSet<ChunkId>> {
        let mut deleting = lock(&self.deleting);
        while deleting.contains(id) {
            deleting = self
                .deletes_done
                .wait(deleting)
                .unwrap_or_else(|p| p.into_inner());
        }
        deleting
    }

    /// About to write chunk `id`'s shards here: wait for deletes of it in flight, then take
    /// this peer's copies off its delete queue. A placement of the same chunk that failed
    /// earlier (not durable, say) queued every target it had, this peer included; without
    /// this, the repair thread would delete the shards written now (seen as "lost: none of
    /// its shards is in the store" after a partitioned member wrote again).
    pub(crate) fn keep_local(
        &self,
        repo: &Repo,
        id: &ChunkId,
    ) -> Result<(), crate::meta::MetaError> {
        let _deleting = self.wait_for_deletes(id);
        let me = self.local.to_bytes();
        let mine: Vec<(u8, Vec<u8>)> = repo
            .meta()
            .doomed_of(id)?
            .holders
            .into_iter()
            .filter(|(_, peer)| *peer == me)
            .collect();
        if !mine.is_empty() {
            repo.meta().unqueue_deletes(id, &mine)?;
        }
        Ok(())
    }

    /// The queued deletes of chunk `id`, claimed for sending, unless the chunk is being placed
    /// again now (its writer drops what must stay). Release with [`Cluster::release_deletes`].
    fn claim_deletes(
        &self,
        repo: &Repo,
        id: &ChunkId,
    ) -> Result<Option<Placed>, crate::meta::MetaError> {
        let mut deleting = lock(&self.deleting);
        if repo.meta().is_placing(id)? {
            return Ok(None);
        }
        let doomed = repo.meta().doomed_of(id)?;
        if doomed.holders.is_empty() {
            return Ok(None);
        }
        deleting.insert(*id);
        Ok(Some(doomed))
    }

    /// Done sending deletes of chunk `id`; `deleted` leave its queue.
    fn release_deletes(
        &self,
        repo: &Repo,
        id: &ChunkId,
        deleted: &[(u8, Vec<u8>)],
    ) -> Result<(), crate::meta::MetaError> {
        let mut deleting = lock(&self.deleting);
        let result = repo.meta().unqueue_deletes(id, deleted);
        deleting.remove(id);
        self.deletes_done.notify_all();
        result
    }

    /// Change a chunk's placement record under the placement lock.
    fn update_placed(
        &self,
        repo: &Repo,
        id: &ChunkId,
        change: impl FnOnce(&mut Placed),
    ) -> Result<(), crate::meta::MetaError> {
        let _guard = lock(&self.placed_lock);
        let Some(mut placed) = repo.meta().placed(id)? else {
            return Ok(());
        };
        change(&mut placed);
        self.changed();
        repo.meta().set_placed(id, &placed)
    }

    /// Correct what [`Remote::locate`] found of a chunk: `gone` no longer hold their shards
    /// (they were forged), `added` do now.
    fn correct_located(&self, id: &ChunkId, gone: &[(u8, Vec<u8>)], added: &[(u8, Vec<u8>)]) {
        let mut foreign = lock(&self.foreign);
        if let Some((record, placed)) = foreign.get(id).cloned() {
            let placed = placed.without(gone).merged(added);
            foreign.put(*id, (record, placed));
        }
    }

    /// A placement record was made or changed.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

impl ClusterHandle {
    /// Stop the background threads (the pipelines made with this cluster must be done with).
    pub fn stop(mut self) {
        if !self.cluster.gate.close(STOP_GRACE) {
            tracing::warn!("work on the network was still under way {STOP_GRACE:?} after the stop");
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(filler) = &self.cluster.disk_cache {
            filler.stop();
        }
    }
}

/// How long a stop waits for the waits on the network to end once cancelled (each ends at its
/// next await, so this is only reached by a thread stuck elsewhere).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Cache puts waiting for the fill thread (4 MiB chunks: at most 32 MiB of copies).
const CACHE_FILL_DEPTH: usize = 8;
/// Located chunks of other members remembered (about 200 bytes each).
const FOREIGN_CHUNKS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(16_384) {
    Some(n) => n,
    None => unreachable!(),
};

fn open_disk_cache(repo: &Repo) -> Option<Filler> {
    let limit = repo.config().cache.disk_bytes;
    if limit == 0 {
        return None;
    }
    DiskCache::open(&crate::diskcache::cache_dir(repo.path()), limit)
        .map_err(|e| tracing::warn!("the disk cache is off: {e}"))
        .ok()
        .map(|cache| {
            let cache = if repo.config().cache.disk_on_second_fetch {
                cache.admit_on_second_fetch(crate::diskcache::ghosts_file(repo.path()))
            } else {
                cache
            };
            Filler::start(Arc::new(cache), CACHE_FILL_DEPTH)
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A holder's id as stored in a placement record.
fn peer_from_bytes(bytes: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

impl Remote for Cluster {
    fn cached(&self, id: &ChunkId) -> Option<Vec<u8>> {
        self.disk_cache.as_ref()?.cache().get(id)
    }

    fn remember(&self, id: &ChunkId, ciphertext: &[u8]) {
        if let Some(cache) = &self.disk_cache {
            cache.put(id, ciphertext);
        }
    }
    fn place(
        &self,
        repo: &Repo,
        id: &ChunkId,
        shards: &ShardSet,
    ) -> Result<Option<Placed>, ChunkError> {
        transfer::place(self, repo, id, shards)
    }

    fn locate(&self, repo: &Repo, id: &ChunkId) -> Option<(crate::meta::ChunkRecord, Placed)> {
        if let Some(found) = lock(&self.foreign).get(id) {
            return Some(found.clone());
        }
        loop {
            let found = self.wait_for(transfer::locate(self, repo, id)).flatten();
            let enough = found
                .as_ref()
                .is_some_and(|(record, placed)| transfer::enough(record, placed));
            // Just after start (a `dfs get` that has only begun to meet the network) the peers
            // holding the chunk may not be known yet: wait for the table rather than fail.
            if enough || self.members().settled || !self.sleep(Duration::from_millis(500)) {
                if let Some(found) = &found {
                    lock(&self.foreign).put(*id, found.clone());
                }
                return found;
            }
            self.refresh_members();
        }
    }

    fn gather(
        &self,
        repo: &Repo,
        id: &ChunkId,
        layout: Layout,
        placed: &Placed,
        want: usize,
        check: ShardCheck<'_>,
    ) -> Gathered {
        loop {
            let work = transfer::gather(self, repo, id, layout, placed, want, check);
            let gathered = self.wait_for(work).unwrap_or_default();
            // Just after start the holders may not be known yet: wait for the peer table
            // rather than fail the read.
            if gathered.count() >= want
                || self.members().settled
                || !self.sleep(Duration::from_millis(500))
            {
                return gathered;
            }
        }
    }

    fn replace_forged(&self, repo: &Repo, id: &ChunkId, shards: &ShardSet, bad: &[(u8, PeerId)]) {
        self.wait_for(async {
            for (_, peer) in bad {
                self.network.report_bad_data(*peer).await;
            }
        });
        self.refresh_members();
        if let Err(e) = transfer::replace_forged(self, repo, id, shards, bad) {
            tracing::warn!(chunk = %id.short(), "cannot replace forged shards: {e}");
        }
    }
}
