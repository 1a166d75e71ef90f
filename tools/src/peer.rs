//! The network side of the CLI: the flags every peer takes, `dfs node` (a storage peer in the
//! foreground), and the peer that `dfs mount` and one-shot commands run in-process
//! ([`RunningPeer`]: node's `PeerHandle` with what the CLI says about it).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use dfs_node::NetworkConfig;
use dfs_node::{Peer, PeerHandle, PeerTasks, Pipeline, Repo, Role};

use crate::units::parse_size;

/// Network flags shared by `dfs node` and `dfs mount`; each adds to or overrides `[network]` in
/// DATA/config.toml.
#[derive(Debug, Args, Clone, Default)]
pub struct NetArgs {
    /// Listen on this multiaddr (repeatable) [default: /ip4/127.0.0.1/tcp/0 and
    /// /ip4/127.0.0.1/udp/0/quic-v1]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Bootstrap peer to dial, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo... (repeatable)
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Rendezvous point (tracker) to register at and discover peers through; must end in
    /// /p2p/<id> (repeatable)
    #[arg(long = "rendezvous", value_name = "MULTIADDR")]
    pub rendezvous: Vec<String>,
    /// Act as a rendezvous point (tracker) for other peers
    #[arg(long)]
    pub rendezvous_server: bool,
    /// Relay connections for peers behind NAT
    #[arg(long)]
    pub relay_server: bool,
    /// Find peers on the local network with mDNS (multicasts on every interface)
    #[arg(long)]
    pub mdns: bool,
    /// Failure-domain label announced to other peers (rack, site, region)
    #[arg(long, value_name = "LABEL")]
    pub zone: Option<String>,
    /// Seconds of silence before a peer is declared dead [default: 10]
    #[arg(long, value_name = "SECS")]
    pub grace: Option<u64>,
    /// Bytes of other peers' shards to hold at most, e.g. 50G [default: what the disk allows]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub capacity: Option<u64>,
    /// Address of the HTTP control API [default: 127.0.0.1 and a free port]
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Join a private network: the key file (`dfs network-key FILE`; `[network] key_file`)
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<std::path::PathBuf>,
    /// Keep no shards of this peer's own chunks here: every shard goes to other peers
    /// (`[placement] store_here = false`)
    #[arg(long)]
    pub no_store: bool,
}

impl NetArgs {
    /// The configuration after applying these flags.
    fn apply(&self, config: &NetworkConfig) -> NetworkConfig {
        let mut c = config.clone();
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        c.peers.extend(self.peers.iter().cloned());
        c.rendezvous.extend(self.rendezvous.iter().cloned());
        c.rendezvous_server |= self.rendezvous_server;
        c.relay_server |= self.relay_server;
        c.mdns |= self.mdns;
        if let Some(zone) = &self.zone {
            c.zone = zone.clone();
        }
        if let Some(grace) = self.grace {
            c.grace_secs = grace;
        }
        if let Some(capacity) = self.capacity {
            c.capacity = capacity;
        }
        if let Some(key) = &self.network_key {
            c.key_file = key.display().to_string();
        }
        c
    }
}

/// A running peer with its API: the node's [`PeerHandle`] and the [`PeerTasks`] this command
/// stops when it is done, with what the CLI says about them.
pub struct RunningPeer {
    handle: PeerHandle,
    tasks: PeerTasks,
}

impl RunningPeer {
    /// Start the peer of `repo` and its API; `--no-store` makes any role a client.
    pub fn start(repo: Arc<Repo>, args: &NetArgs, role: Role) -> Result<Self> {
        let role = match role {
            Role::Storage if args.no_store => Role::Client,
            r => r,
        };
        let mut config = args.apply(&repo.config().network);
        if let Some(api) = args.api {
            config.api = api.to_string();
        }
        let (handle, tasks) = Peer::start(repo, &config, role)?;
        Ok(Self { handle, tasks })
    }

    /// For one-shot commands (`put`, `get`, `verify`): start the peer only when there is a
    /// network to join (bootstrap peers, trackers or mDNS, from the flags or the config), and
    /// wait for a first peer.
    pub fn start_if_wanted(repo: &Arc<Repo>, args: &NetArgs) -> Result<Option<Self>> {
        let c = args.apply(&repo.config().network);
        if c.peers.is_empty() && c.rendezvous.is_empty() && !c.mdns {
            return Ok(None);
        }
        let peer = Self::start(Arc::clone(repo), args, Role::OneShot)?;
        peer.wait_for_a_peer(std::time::Duration::from_secs(10));
        Ok(Some(peer))
    }

    /// The chunk pipeline of the data directory over this peer's network.
    pub fn pipeline(&self) -> Pipeline {
        self.handle.pipeline()
    }

    /// Before `dfs put` exits: give the repair thread up to `timeout` to put every shard of
    /// every chunk on the storage peers (a store that failed during the write is redone now),
    /// so that the writer may leave at once and nothing is needed from its data directory.
    /// Fails, saying how many chunks are complete, when that could not be done.
    pub fn settle(&self, timeout: std::time::Duration) -> Result<()> {
        let s = self.handle.settle(timeout);
        if s.degraded > 0 || s.pending > 0 || s.lost > 0 {
            let complete = s.chunks.saturating_sub(s.degraded + s.lost);
            bail!(
                "only {complete} of {} chunks have all their shards on other storage peers \
                 after {} s ({} chunks degraded, {} lost, {} shard stores pending; {} storage \
                 peers alive); run the put again to finish it (what is stored is not sent again)",
                s.chunks,
                timeout.as_secs(),
                s.degraded,
                s.lost,
                s.pending,
                self.handle.live_storage_peers()
            );
        }
        if s.crowded > 0 {
            crate::notice!(
                "{} chunks have two shards on one peer (fewer storage peers than shards): they \
                 spread out as peers join",
                s.crowded
            );
        }
        Ok(())
    }

    /// Wait (at most `timeout`) for the network to form when bootstrap peers were given; say
    /// so when nobody answered.
    pub fn wait_for_a_peer(&self, timeout: std::time::Duration) {
        if self.handle.wait_for_peers(timeout) == Some(0) {
            crate::notice!(
                "no other peer answered within {} s; going on alone for now",
                timeout.as_secs()
            );
        }
    }

    /// The namespace of shared volume `name` for a mount, once this peer is a member (a join
    /// waits up to 15 s for a member to take it).
    pub fn shared_volume(&self, name: &str) -> Result<dfs_fs::shared::SharedNamespace> {
        let hub = self.handle.ops();
        let (volume, _) = dfs_node::volume::by_name(&hub, name)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !hub.is_in(&volume)? {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "volume {name}: no member has taken this peer's join yet; start a member \
                     that can reach this peer and mount again"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // SAFETY: getuid/getgid have no preconditions.
        let owner = unsafe {
            dfs_fs::model::Caller {
                uid: libc::getuid(),
                gid: libc::getgid(),
            }
        };
        let shared = dfs_fs::shared::SharedNamespace::open(
            hub,
            volume,
            self.handle.repo().config().storage.chunk_size,
            owner,
            self.handle.op_publisher(),
        )
        .with_context(|| format!("cannot open volume {name}"))?;
        Ok(shared)
    }

    /// Run until SIGINT or SIGTERM.
    pub fn wait_for_signal(&self) -> Result<()> {
        self.handle.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot watch SIGTERM")?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
                _ = term.recv() => {}
            }
            anyhow::Ok(())
        })
    }

    /// Stop the API (removing DATA/api.json) and the peer.
    pub fn stop(self) {
        self.tasks.stop();
    }
}

/// `dfs node`: a storage peer in the foreground until SIGINT/SIGTERM.
pub fn run_node(repo: Repo, args: &NetArgs) -> Result<()> {
    let peer = RunningPeer::start(Arc::new(repo), args, Role::Storage)?;
    let status = peer.handle.wait_listening()?;
    crate::notice!("peer {} is running; Ctrl-C stops it", status.id);
    for addr in &status.addresses {
        crate::notice!("listening on {addr}");
    }
    peer.wait_for_signal()?;
    crate::notice!("stopping peer {}", status.id);
    peer.stop();
    Ok(())
}
