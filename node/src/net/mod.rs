//! The peer on the network: a libp2p swarm owned by one event loop ([`swarm`]), and the
//! [`Network`] handle everything else uses to talk to it over a bounded channel.
//!
//! Transports: TCP (Noise, Yamux) and QUIC, plus relayed connections with DCUtR hole punching.
//! Discovery: bootstrap addresses, Kademlia (peer routing and provider records for chunk ids,
//! under `/dfs/kad/1`), rendezvous points (trackers), mDNS when enabled. Membership:
//! announcements on a gossipsub topic feed the peer table ([`peers`]) with its failure detector.
//! Shards move over bulk links ([`bulk`]: plain TCP, keyed through libp2p) or, where a peer
//! has none, the request-response protocol in [`wire`]; both are served from [`held`].

mod announce;
pub mod bulk;
pub mod held;
pub mod identity;
pub mod peers;
mod swarm;
pub mod sync;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_placement::ChunkId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::NetworkConfig;
use crate::shard::ShardHeader;
use crate::Repo;
pub use announce::AnnounceRate;
pub use peers::{PeerState, PeerView};
pub use wire::{Refusal, Request, Response};

/// Commands queued to the event loop before senders wait.
const COMMAND_QUEUE: usize = 256;
/// Outbound shard requests in flight from this peer at once.
const MAX_OUTBOUND: usize = 64;
/// How long one shard request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid {what} {value:?}: {detail}")]
    BadAddress {
        what: &'static str,
        value: String,
        detail: String,
    },
    #[error("cannot start the peer: {0}")]
    Start(String),
    #[error("the peer has stopped")]
    Stopped,
    #[error("request to {peer} failed: {detail}")]
    Request { peer: PeerId, detail: String },
    #[error("{peer} refused: {refusal}")]
    Refused { peer: PeerId, refusal: Refusal },
    #[error(
        "{peer} sent a shard that does not verify ({chunk} #{index}); the peer is scored down"
    )]
    BadData {
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
    },
    #[error("{peer} answered a {asked} request with an unexpected message")]
    Unexpected { peer: PeerId, asked: &'static str },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Open(#[from] crate::repo::OpenError),
}

/// Network settings, parsed and checked (from the config file plus command-line flags).
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<Multiaddr>,
    pub rendezvous: Vec<Multiaddr>,
    pub rendezvous_server: bool,
    pub relay_server: bool,
    pub mdns: bool,
    pub zone: String,
    pub grace: Duration,
    pub announce: Duration,
    pub capacity: u64,
    /// What this peer takes from others ([`held::Admission`]).
    pub admission: held::Admission,
    /// A closed network: only these peers may connect (empty: anyone).
    pub allow: std::collections::HashSet<PeerId>,
    /// A private network: only peers with this key complete a connection ([`transport`]).
    pub network_key: Option<libp2p::pnet::PreSharedKey>,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// How fast provider records of held chunks are announced in the DHT.
    pub announce_rate: AnnounceRate,
    /// Move shards over bulk links ([`bulk`]) where the peer has them.
    pub bulk_links: bool,
    /// Port of the bulk listeners; 0 = ephemeral.
    pub bulk_port: u16,
    /// Run as a client: hold no shards for others, announce no capacity, never be a placement
    /// target, and say goodbye when stopping (set for peers run by one command and for
    /// `--no-store` mounts; not a config setting).
    pub client: bool,
}

/// Which transport a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A bulk link where the peer has one, else libp2p.
    Any,
    /// libp2p only (Noise authenticates every byte): for asking again after a bulk answer
    /// that did not verify.
    Libp2p,
}

/// Parse a multiaddr given by the user, naming the setting it came from.
pub fn parse_addr(what: &'static str, value: &str) -> Result<Multiaddr, NetError> {
    value
        .parse()
        .map_err(|e: libp2p::multiaddr::Error| NetError::BadAddress {
            what,
            value: value.to_string(),
            detail: e.to_string(),
        })
}

/// The peer id at the end of `/.../p2p/<id>`, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().last().and_then(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl NetOptions {
    pub fn from_config(c: &NetworkConfig) -> Result<Self, NetError> {
        c.validate().map_err(|e| NetError::Start(e.to_string()))?;
        let parse_all = |what, list: &[String]| {
            list.iter()
                .map(|s| parse_addr(what, s))
                .collect::<Result<Vec<_>, _>>()
        };
        let network_key = match c.key_file.as_str() {
            "" => None,
            path => Some(transport::read_network_key(std::path::Path::new(path))?),
        };
        let mut listen = parse_all("listen address", &c.listen)?;
        if listen.is_empty() {
            listen = default_listen();
            if network_key.is_some() {
                listen.retain(|a| !transport::is_quic(a));
            }
        }
        if let (Some(_), Some(quic)) = (network_key, listen.iter().find(|a| transport::is_quic(a)))
        {
            return Err(NetError::Start(format!(
                "cannot listen on {quic}: a private network (network.key_file) speaks TCP only; \
                 QUIC has no place for its key"
            )));
        }
        let rendezvous = parse_all("rendezvous address", &c.rendezvous)?;
        if let Some(bad) = rendezvous.iter().find(|a| peer_of(a).is_none()) {
            return Err(NetError::BadAddress {
                what: "rendezvous address",
                value: bad.to_string(),
                detail: "it must end in /p2p/<peer id>".into(),
            });
        }
        Ok(Self {
            listen,
            peers: parse_all("peer address", &c.peers)?,
            rendezvous,
            rendezvous_server: c.rendezvous_server,
            relay_server: c.relay_server,
            mdns: c.mdns,
            zone: c.zone.clone(),
            grace: Duration::from_secs(c.grace_secs),
            announce: Duration::from_secs(c.announce_secs),
            capacity: c.capacity,
            admission: held::Admission {
                reserve_percent: c.reserve_percent,
                peer_quota_percent: c.peer_quota_percent,
            },
            allow: c.allow.iter().filter_map(|id| id.parse().ok()).collect(),
            network_key,
            max_connections: c.max_connections,
            max_connections_per_peer: c.max_connections_per_peer,
            announce_rate: AnnounceRate {
                busy: c.providers_per_sec_busy,
                idle: c.providers_per_sec_idle,
            },
            bulk_links: c.bulk_links,
            bulk_port: c.bulk_port,
            client: false,
        })
    }
}

/// Ephemeral TCP and QUIC ports on 127.0.0.1: reachable from this machine only.
pub fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// This peer, as `dfs status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub version: String,
    pub zone: String,
    /// Dialable addresses, each ending in `/p2p/<id>`.
    pub addresses: Vec<String>,
    pub uptime_secs: f64,
    /// A client (holds nothing for others; see [`NetOptions::client`]).
    #[serde(default)]
    pub client: bool,
    /// The fingerprint of the private network key (`[network] key_file`), when there is one.
    #[serde(default)]
    pub network_key: Option<String>,
    pub storage: StorageStatus,
    pub peers: PeerCounts,
    /// Bulk links ([`bulk`]); `None` when they are off.
    #[serde(default)]
    pub bulk: Option<bulk::BulkStatus>,
    /// Health of the chunks this peer wrote, when it spreads chunks over the network.
    #[serde(default)]
    pub placement: Option<crate::cluster::status::PlacementStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Bytes offered to other peers, free of that, and used by their shards.
    pub capacity: u64,
    pub free: u64,
    pub used: u64,
    pub shards_held: u64,
    /// The filesystem of the data directory.
    pub disk_total: u64,
    pub disk_free: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PeerCounts {
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
    /// Clients connected now (not counted in the other three).
    #[serde(default)]
    pub clients: usize,
}

/// Requests to the event loop.
enum Command {
    Status(oneshot::Sender<NodeStatus>),
    Peers(oneshot::Sender<Vec<PeerView>>),
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    BadData(PeerId),
    /// The peer refused a store of ours as full or over its quota for us.
    RefusedSpace(PeerId),
    /// Open a bulk session with `peer` (over libp2p).
    OpenBulk {
        peer: PeerId,
        open: bulk::Open,
        reply: oneshot::Sender<Result<bulk::Opened, NetError>>,
    },
    /// A request from `peer` was served over a bulk link.
    BulkServed {
        peer: PeerId,
        /// The chunk a successful store was for.
        stored: Option<ChunkId>,
        /// The peer sent a shard that did not verify.
        invalid: bool,
    },
    /// Requests to `peer` over bulk links: `succeeded` of them since the last report (reported
    /// at most every 100 ms), or one that failed.
    BulkOutcome {
        peer: PeerId,
        succeeded: u32,
        failed: bool,
    },
    Provide(ChunkId),
    FindProviders {
        chunk: ChunkId,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Dial(Multiaddr),
    /// Follow a volume's ops: subscribe to its topic and pull it from members.
    Follow(crate::oplog::VolumeId),
    /// Gossip an op already in the log.
    PublishOp(crate::oplog::SignedOp),
    Shutdown(oneshot::Sender<()>),
}

/// Shard bytes to and from `peer` and failed requests, for `/metrics`.
fn count_request(
    peer: &PeerId,
    kind: &'static str,
    sent: u64,
    answer: &Result<Response, NetError>,
) {
    let m = crate::metrics::metrics();
    match answer {
        Ok(Response::Refused(_)) | Err(_) => {
            m.shard_request_failures.with_label_values(&[kind]).inc();
        }
        Ok(response) => {
            let peer = peer.to_string();
            if sent > 0 {
                m.shard_sent_bytes.with_label_values(&[&peer]).inc_by(sent);
            }
            if let Response::Shard { image } = response {
                m.shard_received_bytes
                    .with_label_values(&[&peer])
                    .inc_by(image.len() as u64);
            }
        }
    }
}

/// What a peer said it holds of one chunk ([`Network::holding`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    pub indices: Vec<u8>,
    /// The header of one of them: the chunk's layout and length, as the holder claims.
    pub header: Option<ShardHeader>,
}

/// A handle on the running peer; cheap to clone.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    outbound: Arc<Semaphore>,
    started: Instant,
    hub: Arc<sync::OpsHub>,
    held: Arc<held::HeldShards>,
    bulk: Option<Arc<bulk::Bulk>>,
}

impl Network {
    /// Start the peer for the data directory of `repo`: load or create its identity, listen,
    /// dial the bootstrap peers, and run the event loop on the current tokio runtime.
    pub async fn start(repo: Arc<Repo>, options: NetOptions) -> Result<Network, NetError> {
        let key = identity::load_or_create(&repo.path().join("identity.key"))?;
        let local = key.public().to_peer_id();
        let signer = key
            .clone()
            .try_into_ed25519()
            .map_err(|e| NetError::Start(format!("the identity key cannot sign ops: {e}")))?;
        let hub = Arc::new(sync::OpsHub::new(repo.clone(), signer));
        let held = Arc::new(held::HeldShards::open(
            repo,
            local,
            options.capacity,
            options.admission,
            options.client,
        )?);
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let started = Instant::now();
        let bulk = bulk::Bulk::start(
            &options.listen,
            options.bulk_links.then_some(options.bulk_port),
            held.clone(),
            commands.clone(),
        )
        .await?;
        let node = swarm::Node::new(
            key,
            held.clone(),
            bulk.clone(),
            options,
            rx,
            started,
            hub.clone(),
        )?;
        tokio::spawn(node.run());
        let network = Network {
            commands,
            local,
            outbound: Arc::new(Semaphore::new(MAX_OUTBOUND)),
            started,
            hub,
            held,
            bulk,
        };
        // Every volume this peer keeps is followed from the start.
        let volumes = crate::volumes::records(&network.hub)
            .map_err(|e| NetError::Start(format!("cannot read the volume table: {e}")))?;
        for (volume, _) in volumes {
            network.follow_volume(volume).await?;
        }
        Ok(network)
    }

    pub fn local_id(&self) -> PeerId {
        self.local
    }

    /// A verified shard this peer holds for another peer (a member of a shared volume reading
    /// a chunk another member wrote may find some of its shards here).
    pub fn held_shard(&self, chunk: &ChunkId, index: u8) -> Option<Vec<u8>> {
        self.held.read_verified(chunk, index)
    }

    /// The op log of this peer, its clock and the streams of new ops ([`sync::OpsHub`]).
    pub fn ops(&self) -> &Arc<sync::OpsHub> {
        &self.hub
    }

    /// Follow `volume`: take its ops from gossip and pull what is missing from every member
    /// connected now and later. New ops reach [`sync::OpsHub::follow`] receivers.
    pub async fn follow_volume(&self, volume: crate::oplog::VolumeId) -> Result<(), NetError> {
        self.commands
            .send(Command::Follow(volume))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Sign `payload` (an fs operation) as this peer's next op on `volume`, append it, and
    /// gossip it to the volume's members.
    pub async fn commit_op(
        &self,
        volume: crate::oplog::VolumeId,
        payload: Vec<u8>,
    ) -> Result<crate::oplog::SignedOp, sync::IngestError> {
        let hub = Arc::clone(&self.hub);
        let payload = crate::oplog::data_payload(&payload);
        let op =
            tokio::task::spawn_blocking(move || hub.commit(&sync::Acting::PEER, &volume, payload))
                .await
                .map_err(|e| sync::IngestError::Task(e.to_string()))??;
        // A stopped peer cannot gossip; the op is in the log and anti-entropy carries it.
        let _ = self.commands.send(Command::PublishOp(op.clone())).await;
        Ok(op)
    }

    /// Gossip an op already committed to the log ([`sync::OpsHub::commit`]). A stopped peer
    /// cannot gossip; the op is in the log and anti-entropy carries it.
    pub async fn publish_op(&self, op: crate::oplog::SignedOp) {
        let _ = self.commands.send(Command::PublishOp(op)).await;
    }

    /// Gossip an op already committed to the log ([`sync::OpsHub::commit`]), from a thread
    /// outside the runtime (a FUSE thread). A stopped peer cannot gossip; the op is in the
    /// log and anti-entropy carries it.
    pub fn publish_op_blocking(&self, op: crate::oplog::SignedOp) {
        let command = Command::PublishOp(op);
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = self.commands.try_send(command);
        } else {
            let _ = self.commands.blocking_send(command);
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The peer's status as the network sees it (`placement` is the cluster's to fill in:
    /// the control API does).
    pub async fn status(&self) -> Result<NodeStatus, NetError> {
        self.ask(Command::Status).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, NetError> {
        self.ask(Command::Peers).await
    }

    /// Send one shard request and wait for the answer (bounded concurrency, timed out).
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        self.request_with_body(peer, request, &[], Route::Any).await
    }

    /// [`Network::request`] for a [`Request::Store`] whose image is left empty and given as
    /// `body`, in parts (header, then body): a bulk link sends them from where they lie; only
    /// the libp2p path, which serialises the request, joins them into one buffer.
    async fn request_with_body(
        &self,
        peer: PeerId,
        mut request: Request,
        body: &[&[u8]],
        route: Route,
    ) -> Result<Response, NetError> {
        let _permit = self
            .outbound
            .acquire()
            .await
            .map_err(|_| NetError::Stopped)?;
        let kind = request.kind();
        let body_len: usize = body.iter().map(|part| part.len()).sum();
        let sent = match &request {
            Request::Store { image, .. } => (image.len() + body_len) as u64,
            _ => 0,
        };
        if route == Route::Any {
            if let Some(answer) = self.request_bulk(peer, &request, body).await {
                count_request(&peer, kind, sent, &answer);
                return answer;
            }
        }
        if let Request::Store { image, .. } = &mut request {
            if image.is_empty() {
                *image = body.concat();
            }
        }
        let answer = self
            .ask(|reply| Command::Request {
                peer,
                request,
                reply,
            })
            .await?;
        count_request(&peer, kind, sent, &answer);
        answer
    }

    /// [`Network::request`] over a bulk link; `None` when `peer` has none (nothing was sent).
    async fn request_bulk(
        &self,
        peer: PeerId,
        request: &Request,
        body: &[&[u8]],
    ) -> Option<Result<Response, NetError>> {
        let bulk = self.bulk.as_ref()?;
        let sent = bulk.request(self, peer, request, body);
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(bulk::Failure::Failed(e))) => Err(e),
            Ok(Err(bulk::Failure::Unavailable)) => return None,
            Err(_) => Err(NetError::Request {
                peer,
                detail: "timed out on a bulk link".into(),
            }),
        };
        let outcome = match answer {
            Ok(_) => bulk.answered(peer).map(|succeeded| Command::BulkOutcome {
                peer,
                succeeded,
                failed: false,
            }),
            Err(_) => {
                bulk.answer_failed(peer);
                Some(Command::BulkOutcome {
                    peer,
                    succeeded: 0,
                    failed: true,
                })
            }
        };
        if let Some(outcome) = outcome {
            let _ = self.commands.try_send(outcome);
        }
        Some(answer)
    }

    /// Open a bulk session with `peer`: over libp2p, which authenticates both ends.
    pub(crate) async fn open_bulk(
        &self,
        peer: PeerId,
        open: bulk::Open,
    ) -> Result<bulk::Opened, NetError> {
        self.ask(|reply| Command::OpenBulk { peer, open, reply })
            .await?
    }

    /// Ask `peer` to keep a shard image, given in parts that follow each other (its header,
    /// then its body), which are not copied to join them when a bulk link carries them.
    pub async fn store_shard(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
        image: &[&[u8]],
    ) -> Result<(), NetError> {
        let request = Request::Store {
            chunk,
            index,
            image: Vec::new(),
        };
        let mut answer = self
            .request_with_body(peer, request.clone(), image, Route::Any)
            .await?;
        if answer == Response::Refused(Refusal::Invalid) && self.bulk.is_some() {
            // This end made the image and it verifies: it changed on the way (a bulk body is
            // bound to its head by a hash, not sealed). Once more over libp2p.
            answer = self
                .request_with_body(peer, request, image, Route::Libp2p)
                .await?;
        }
        match answer {
            Response::Stored => Ok(()),
            Response::Refused(refusal @ (Refusal::Full | Refusal::Quota)) => {
                // Whatever free space it announces, it takes no more from us for a while.
                let _ = self.commands.send(Command::RefusedSpace(peer)).await;
                Err(NetError::Refused { peer, refusal })
            }
            other => Err(unexpected(peer, "store", other)),
        }
    }

    /// Fetch a shard image from `peer` and verify it; a peer that sends bad bytes is scored
    /// down and the call fails.
    pub async fn fetch_shard(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
    ) -> Result<Vec<u8>, NetError> {
        self.fetch_verified(peer, chunk, index, None).await
    }

    /// Fetch a shard image from `peer` and verify it here: its checksum, and, when the
    /// writer's hash of it is known (`expected`), that it is that very image (a holder can
    /// make up a shard with a valid checksum; it cannot make one that carries the writer's
    /// hash). The holder is asked not to hash it first ([`Request::FetchTrusting`]), since this
    /// end does. A peer that sends anything else is scored down and the call fails.
    pub async fn fetch_verified(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
        expected: Option<&[u8; 32]>,
    ) -> Result<Vec<u8>, NetError> {
        let verifies = |image: &[u8]| {
            let forged =
                expected.is_some_and(|h| ShardHeader::carried_hash(image).as_ref() != Some(h));
            (
                ShardHeader::decode_expected(image, chunk, index).is_ok() && !forged,
                forged,
            )
        };
        let image = self.fetch_shard_checked(peer, chunk, index, false).await?;
        if verifies(&image).0 {
            return Ok(image);
        }
        // Not yet proof against the holder: the bytes may have changed on a bulk link, or rotted
        // on its disk unknown to it (a trusting fetch is served unread). Asked over libp2p for
        // a checked fetch, an honest holder sends the shard or says it has no good copy.
        let request = Request::Fetch { chunk, index };
        match self
            .request_with_body(peer, request, &[], Route::Libp2p)
            .await?
        {
            Response::Shard { image } => match verifies(&image) {
                (true, _) => {
                    tracing::warn!(%peer, chunk = %chunk.short(), index,
                        "a shard changed in flight (or on the holder's disk) and came right over libp2p; nobody is blamed");
                    Ok(image)
                }
                (false, forged) => {
                    tracing::warn!(%peer, chunk = %chunk.short(), index, forged, "peer sent a shard that does not verify");
                    self.report_bad_data(peer).await;
                    Err(NetError::BadData { peer, chunk, index })
                }
            },
            other => Err(unexpected(peer, "fetch", other)),
        }
    }

    /// Count bad data against `peer` (it sent a shard that is not the one its writer made):
    /// its score drops, and it is no longer trusted with new shards.
    pub async fn report_bad_data(&self, peer: PeerId) {
        crate::metrics::metrics()
            .bad_shards
            .with_label_values(&["fetched"])
            .inc();
        let _ = self.commands.send(Command::BadData(peer)).await;
    }

    /// [`Network::fetch_shard`]; with `checksum` false only the shard's header is checked
    /// (see [`ShardHeader::decode_as`]).
    pub async fn fetch_shard_checked(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
        checksum: bool,
    ) -> Result<Vec<u8>, NetError> {
        // A requester that checks no checksum need not have the holder check it either.
        let request = if checksum {
            Request::Fetch { chunk, index }
        } else {
            Request::FetchTrusting { chunk, index }
        };
        match self.request(peer, request).await? {
            Response::Shard { image } => {
                if ShardHeader::decode_as(&image, chunk, index, checksum).is_ok() {
                    return Ok(image);
                }
                tracing::warn!(%peer, chunk = %chunk.short(), index, "peer sent a shard that does not verify");
                self.report_bad_data(peer).await;
                Err(NetError::BadData { peer, chunk, index })
            }
            other => Err(unexpected(peer, "fetch", other)),
        }
    }

    /// Which shards of `chunk` `peer` holds: their indices (ascending, each once) and what
    /// the header of the first says, if it makes sense for this chunk. A header whose layout
    /// does not cover every index listed is dropped with the indices beyond it.
    pub async fn holding(&self, peer: PeerId, chunk: ChunkId) -> Result<Holding, NetError> {
        let request = Request::Holding { chunk };
        let response = if peer == self.local {
            // This peer's own held store (a storage peer is a holder like any other).
            self.held.handle(peer, request)
        } else {
            self.request(peer, request).await?
        };
        match response {
            Response::Holds { mut indices, head } => {
                indices.sort_unstable();
                indices.dedup();
                let header = ShardHeader::from_head(&head, chunk).ok();
                if let Some(h) = &header {
                    indices.retain(|&i| usize::from(i) < h.layout.shard_count());
                }
                Ok(Holding { indices, header })
            }
            other => Err(unexpected(peer, "holding", other)),
        }
    }

    /// Ask `peer` to re-verify a shard it holds: (intact, length).
    pub async fn check_shard(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
    ) -> Result<(bool, u64), NetError> {
        match self.request(peer, Request::Check { chunk, index }).await? {
            Response::Checked { intact, len } => Ok((intact, len)),
            other => Err(unexpected(peer, "check", other)),
        }
    }

    /// Ask `peer` to forget a shard this peer stored there; returns the bytes it freed.
    pub async fn delete_shard(
        &self,
        peer: PeerId,
        chunk: ChunkId,
        index: u8,
    ) -> Result<u64, NetError> {
        match self.request(peer, Request::Delete { chunk, index }).await? {
            Response::Deleted { freed } => Ok(freed),
            other => Err(unexpected(peer, "delete", other)),
        }
    }

    /// Announce in the DHT that this peer holds shards of `chunk` (queued: announcements go
    /// out at the `[network] providers_per_sec_*` rates).
    pub async fn provide(&self, chunk: ChunkId) -> Result<(), NetError> {
        self.commands
            .send(Command::Provide(chunk))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Peers that announced in the DHT that they hold shards of `chunk`.
    pub async fn find_providers(&self, chunk: ChunkId) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::FindProviders { chunk, reply })
            .await
    }

    /// Dial an address (e.g. a peer given at run time).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Stop the event loop (connections close).
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

fn unexpected(peer: PeerId, asked: &'static str, response: Response) -> NetError {
    match response {
        Response::Refused(refusal) => NetError::Refused { peer, refusal },
        _ => NetError::Unexpected { peer, asked },
    }
}
