//! The network side of the CLI: the flags every peer takes, `dfs node` (a storage peer in the
//! foreground), the peer that `dfs mount` runs in-process, and the API clients `dfs status` and
//! `dfs peers`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use dfs_node::{ApiEndpoint, NetworkConfig};
use dfs_node::{NodeStatus, PeerView};
use dfs_node::{Peer, PeerHandle, PeerTasks, Pipeline, Repo, Role};

use crate::cache::parse_size;
use crate::cli::human_bytes;

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
        let (volume, record) = dfs_node::volume::by_name(&hub, name)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !hub.oplog().is_member(&volume, &hub.author())? {
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
            &record.secret,
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

/// GET an API route of the peer running on `data` and decode its JSON.
pub(crate) fn api_get<T: serde::de::DeserializeOwned>(data: &Path, route: &str) -> Result<T> {
    api_call(data, route, None)
}

/// POST a JSON body to an API route of the peer running on `data` and decode its JSON.
pub(crate) fn api_post<T: serde::de::DeserializeOwned>(
    data: &Path,
    route: &str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let body = serde_json::to_string(body).context("cannot encode the request")?;
    api_call(data, route, Some(body))
}

fn api_call<T: serde::de::DeserializeOwned>(
    data: &Path,
    route: &str,
    post: Option<String>,
) -> Result<T> {
    let endpoint = match ApiEndpoint::load(data) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no dfs peer is running on {} (start one with `dfs node` or `dfs mount`)",
            data.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read {}", data.join(dfs_node::API_FILE).display())
            })
        }
    };
    let url = format!("{}{route}", endpoint.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {}", endpoint.token);
    let sent = match post {
        None => agent.get(&url).header("Authorization", &auth).call(),
        Some(body) => agent
            .post(&url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(body.as_bytes()),
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "no dfs peer is running on {} (its API at {} refuses connections; the peer \
             that wrote {} has stopped)",
            data.display(),
            endpoint.url,
            dfs_node::API_FILE
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot reach the peer's API at {url}")),
    };
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer from {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(String::from))
            .unwrap_or(body);
        bail!("the peer's API answered {status}: {message}");
    }
    serde_json::from_str(&body).with_context(|| format!("unexpected answer from {url}"))
}

/// `dfs status`
pub fn status(data: &Path, json: bool) -> Result<()> {
    let s: NodeStatus = api_get(data, "/v1/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("peer      {}", s.id);
    println!("version   {}   zone {}", s.version, s.zone);
    println!(
        "uptime    {}   role {}",
        human_duration(s.uptime_secs),
        if s.client {
            "client (holds no shards for others)"
        } else {
            "storage"
        }
    );
    for (i, addr) in s.addresses.iter().enumerate() {
        println!("{}{addr}", if i == 0 { "addresses " } else { "          " });
    }
    if let Some(fingerprint) = &s.network_key {
        println!("network   private (key fingerprint {fingerprint})");
    }
    if let Some(b) = &s.bulk {
        println!(
            "bulk      {} ({} shard requests sent, {} served, {} to peers without bulk links)",
            if b.addresses.is_empty() {
                "no listener (no TCP listen address)".to_string()
            } else {
                b.addresses.join(", ")
            },
            b.sent,
            b.served,
            b.fallbacks
        );
    }
    println!(
        "storage   {} used by {} shards of other peers, {} free of {} offered (disk: {} free of {})",
        human_bytes(s.storage.used),
        s.storage.shards_held,
        human_bytes(s.storage.free),
        human_bytes(s.storage.capacity),
        human_bytes(s.storage.disk_free),
        human_bytes(s.storage.disk_total)
    );
    println!(
        "peers     {} alive, {} suspect, {} dead; {} clients",
        s.peers.alive, s.peers.suspect, s.peers.dead, s.peers.clients
    );
    match &s.placement {
        Some(p) if p.chunks == 0 && s.peers.alive == 0 => {
            println!("chunks    kept in the local store (no other peer to spread them over yet)")
        }
        Some(p) if p.chunks == 0 => {
            println!("chunks    none written by this peer");
            print_steward(&p.steward);
        }
        Some(p) => print_placement(p),
        None => {}
    }
    Ok(())
}

/// `dfs peers`
pub fn peers(data: &Path, json: bool) -> Result<()> {
    let peers: Vec<PeerView> = api_get(data, "/v1/peers")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers known yet");
        return Ok(());
    }
    println!(
        "{:<54} {:<8} {:>8} {:>9} {:<10} {:>10} {:>6}",
        "PEER", "STATE", "RTT ms", "SEEN", "ZONE", "FREE", "SCORE"
    );
    for p in peers {
        println!(
            "{:<54} {:<8} {:>8} {:>9} {:<10} {:>10} {:>6.2}",
            p.id,
            if p.client {
                "client".to_string()
            } else {
                p.state.to_string()
            },
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2}")),
            format!("{}s ago", p.last_seen_secs.round()),
            p.zone.as_deref().unwrap_or("-"),
            p.free.map_or("-".into(), human_bytes),
            p.score
        );
    }
    Ok(())
}

fn print_placement(p: &dfs_node::PlacementStatus) {
    let healthy = p.chunks.saturating_sub(p.degraded + p.lost);
    println!(
        "chunks    {} written here: {healthy} healthy, {} degraded, {} lost{}",
        p.chunks,
        p.degraded,
        p.lost,
        if p.crowded > 0 {
            format!(
                " ({} on fewer peers than shards: add peers to spread them)",
                p.crowded
            )
        } else {
            String::new()
        }
    );
    println!(
            "repair    {} shards rebuilt, {} moved, {} dropped ({}), {} pending; scrub: {} checked, {} bad",
            p.rebuilt,
            p.moved,
            p.dropped,
            human_bytes(p.repair_bytes),
            p.pending,
            p.scrubbed,
            p.corrupt_found
        );
    if let Some(e) = &p.last_error {
        println!("          last repair round failed: {e}");
    }
    print_steward(&p.steward);
}

/// What this peer did for chunks it holds for others (see `cluster::steward`).
fn print_steward(st: &dfs_node::StewardStatus) {
    if st.passes == 0 {
        return;
    }
    println!(
        "steward   {} passes over held chunks: {} looked after, {} shards rebuilt ({}); last pass: {} lost, {} deferred",
        st.passes,
        st.stewarded,
        st.rebuilt,
        human_bytes(st.rebuilt_bytes),
        st.lost,
        st.deferred
    );
}

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
