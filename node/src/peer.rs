//! One running peer, started and stopped as a unit: [`Peer::start`] brings up the network (a
//! tokio runtime of its own), the cluster threads (membership, repair, stewards, disk cache)
//! and the HTTP control API, and returns the two halves of the result:
//!
//! - [`PeerHandle`], cloneable: what the mount, the CLI and the tests use (the chunk
//!   pipeline, status, peers, volumes' op hub, waiting for the network to form);
//! - [`PeerTasks`], owned by whoever started the peer: every thread and task the peer runs,
//!   and [`PeerTasks::stop`], which cancels them and waits for each, in order (cluster
//!   threads first, as they use the network; then the API; then the swarm and the runtime).
//!
//! Nothing outlives `stop`: a test starts a peer with chunks being written, stops it, and
//! counts the threads of the process (node/tests/peer.rs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::ApiServer;
use crate::cluster::{Cluster, ClusterHandle, PlacementStatus};
use crate::config::NetworkConfig;
use crate::net::sync::OpsHub;
use crate::net::{NetError, NetOptions, Network, NodeStatus, PeerState};
use crate::oplog::SignedOp;
use crate::pipeline::Pipeline;
use crate::repo::Repo;

/// What a peer is to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds shards for others (`dfs node`, a mount without `--no-store`).
    Storage,
    /// Holds nothing for others and is never a target for them; keeps its own shards only
    /// when too few other peers exist (`--no-store`).
    Client,
    /// A client run for one command (`dfs put/get/verify`): never a target, not even of its
    /// own shards, so nothing it wrote is needed from its data directory once it exits.
    OneShot,
}

/// Why a peer did not start, or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("network.api {0:?} is not an address like 127.0.0.1:7070")]
    ApiAddress(String),
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot start the control API: {0}")]
    Api(std::io::Error),
    #[error("the peer did not start listening within 5 s")]
    NotListening,
}

/// Starts peers (see the module doc).
pub struct Peer;

impl Peer {
    /// Start the peer of `repo` with `config` (the `[network]` section with any flags
    /// applied) in `role`.
    pub fn start(
        repo: Arc<Repo>,
        config: &NetworkConfig,
        role: Role,
    ) -> Result<(PeerHandle, PeerTasks), PeerError> {
        let mut options = NetOptions::from_config(config)?;
        options.client = role != Role::Storage;
        let bootstrap = !options.peers.is_empty() || !options.rendezvous.is_empty();
        let api_addr = match config.api.as_str() {
            "" => None,
            s => Some(
                s.parse::<SocketAddr>()
                    .map_err(|_| PeerError::ApiAddress(s.to_string()))?,
            ),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dfs-net")
            .enable_all()
            .build()
            .map_err(PeerError::Runtime)?;
        let mut placement = repo.config().placement.clone();
        placement.store_here &= role == Role::Storage;
        placement.transient = role == Role::OneShot;
        let network = runtime.block_on(Network::start(repo.clone(), options))?;
        let cluster = Cluster::start(
            repo.clone(),
            network.clone(),
            runtime.handle().clone(),
            placement,
        );
        let handle = PeerHandle {
            runtime: runtime.handle().clone(),
            network: network.clone(),
            repo: repo.clone(),
            cluster: cluster.cluster.clone(),
            bootstrap,
        };
        let bound = runtime.block_on(ApiServer::bind(
            repo.path(),
            api_addr,
            network.clone(),
            Some(cluster.cluster.clone()),
        ));
        let cancel = CancellationToken::new();
        let mut tasks = PeerTasks {
            runtime: Some(runtime),
            network,
            cluster: Some(cluster),
            api: None,
            cancel,
        };
        match bound {
            Ok(server) => {
                let stopped = tasks.cancel.clone().cancelled_owned();
                tasks.api = tasks
                    .runtime
                    .as_ref()
                    .map(|runtime| runtime.spawn(server.serve(stopped)));
            }
            Err(e) => {
                tasks.stop();
                return Err(PeerError::Api(e));
            }
        }
        Ok((handle, tasks))
    }
}

/// The face of a running peer (see the module doc); cheap to clone. Its calls fail with
/// clear errors once the peer has stopped.
#[derive(Clone)]
pub struct PeerHandle {
    runtime: tokio::runtime::Handle,
    network: Network,
    repo: Arc<Repo>,
    cluster: Arc<Cluster>,
    /// Bootstrap peers or trackers were given.
    bootstrap: bool,
}

impl PeerHandle {
    /// The chunk pipeline of the data directory over this peer's network.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::with_remote(self.repo.clone(), self.cluster.clone())
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// The op log of the volumes this peer is in, and the hub that carries their ops.
    pub fn ops(&self) -> Arc<OpsHub> {
        Arc::clone(self.network.ops())
    }

    /// Something that sends a new op of this peer's to the network (a mount of a shared volume
    /// publishes its changes through it); it waits for room from a plain thread and drops the
    /// op when the network's queue is full inside the runtime (anti-entropy brings it later).
    pub fn op_publisher(&self) -> Box<dyn Fn(SignedOp) + Send + Sync> {
        let network = self.network.clone();
        Box::new(move |op| network.publish_op_blocking(op))
    }

    /// Run `future` on the peer's runtime from a thread outside it.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Wait until the peer listens, and return its status.
    pub fn wait_listening(&self) -> Result<NodeStatus, PeerError> {
        self.runtime.block_on(async {
            for _ in 0..200 {
                let status = self.network.status().await?;
                if !status.addresses.is_empty() {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(PeerError::NotListening)
        })
    }

    /// Give the repair thread up to `timeout` to put every shard of every chunk on the
    /// storage peers (a store that failed during a write is redone now); the placement status
    /// then says what is complete.
    pub fn settle(&self, timeout: Duration) -> PlacementStatus {
        self.cluster.settle(timeout)
    }

    /// Storage peers other than this one that are alive now.
    pub fn live_storage_peers(&self) -> usize {
        self.cluster.members().live_others()
    }

    /// Wait (at most `timeout`) until peers that announced themselves are alive, when
    /// bootstrap peers were given, and the count has been steady for a second: a mount or a
    /// put then starts with the network it will spread shards over. Returns how many answered
    /// (`None`: no bootstrap peer was given, so none was waited for).
    pub fn wait_for_peers(&self, timeout: Duration) -> Option<usize> {
        if !self.bootstrap {
            return None;
        }
        let network = self.network.clone();
        let found = self.runtime.block_on(async {
            let started = Instant::now();
            let (mut seen, mut since) = (0, started);
            while started.elapsed() < timeout {
                let peers = network.peers().await.unwrap_or_default();
                let alive = peers
                    .iter()
                    .filter(|p| p.state == PeerState::Alive && p.capacity.is_some())
                    .count();
                if alive != seen {
                    (seen, since) = (alive, Instant::now());
                } else if alive > 0 && since.elapsed() >= Duration::from_secs(1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        self.cluster.refresh_members();
        Some(found)
    }
}

/// Every thread and task of a running peer (see the module doc). Dropping it stops them too;
/// [`PeerTasks::stop`] says so explicitly.
pub struct PeerTasks {
    runtime: Option<tokio::runtime::Runtime>,
    network: Network,
    cluster: Option<ClusterHandle>,
    api: Option<tokio::task::JoinHandle<()>>,
    /// Cancelled first on stop: the API server and anything else that watches it end.
    cancel: CancellationToken,
}

/// How long the runtime may take to finish blocking work (a shard write on the blocking pool)
/// once everything has been told to stop.
const RUNTIME_DRAIN: Duration = Duration::from_secs(3);

impl PeerTasks {
    /// A token cancelled when the peer stops, for tasks of the caller's own that should end
    /// with it.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop everything, in order: the cluster threads (they use the network), the API
    /// (removing DATA/api.json), the swarm, then the runtime with its blocking pool.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        self.cancel.cancel();
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
        let network = self.network.clone();
        let api = self.api.take();
        runtime.block_on(async {
            if let Some(task) = api {
                let _ = task.await;
            }
            network.shutdown().await;
        });
        runtime.shutdown_timeout(RUNTIME_DRAIN);
    }
}

impl Drop for PeerTasks {
    fn drop(&mut self) {
        self.shut_down();
    }
}
