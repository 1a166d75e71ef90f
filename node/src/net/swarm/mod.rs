//! The event loop that owns the libp2p swarm. It alone touches the swarm and the peer table;
//! the [`super::Network`] handle reaches it through a bounded command channel. Disk work for
//! inbound shard requests runs on the blocking pool and comes back through another channel, so
//! a slow disk never stalls pings, announcements or other peers' requests.
//!
//! The protocols' behaviours and their settings are in [`behaviour`]; what the loop does with
//! shard requests and bulk sessions in [`shards`], with op-log pulls and gossip in [`ops`]; the
//! rest (commands from the handle, the peer table, announcements, discovery) is here.

mod behaviour;
mod ops;
mod shards;

use behaviour::{behaviour, Behaviour, BehaviourEvent, CLIENT_AGENT_SUFFIX, IDENTIFY_PROTOCOL};
use ops::SyncDone;
use shards::Served;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, mdns, noise, ping, rendezvous, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::announce::{self, Announcer};
use super::bulk::{self, Bulk};
use super::held::{disk_free, disk_total, HeldShards};
use super::peers::{Announcement, PeerTable, PeerView, Transition};
use super::sync::{OpsHub, Syncing};
use super::transport;
use super::wire::Response;
use super::{peer_of, Command, NetError, NetOptions, NodeStatus, PeerCounts, StorageStatus};

const MEMBERSHIP_TOPIC: &str = "dfs/membership/1";
const RENDEZVOUS_NAMESPACE: &str = "dfs";
/// Inbound shard requests served at once; more are answered `Busy`.
const MAX_INBOUND: usize = 32;

/// How long a stopping peer keeps its connections open for its goodbye to go out.
const GOODBYE_FLUSH: Duration = Duration::from_millis(150);
/// How often the failure detector and the redial schedule run.
const HEALTH_TICK: Duration = Duration::from_millis(250);
/// How often queued provider announcements are started.
const ANNOUNCE_TICK: Duration = Duration::from_millis(50);
/// A peer that received a shard request this recently is busy: announcements pause (see
/// `announce`).
const BUSY_FOR: Duration = Duration::from_millis(250);
/// Held chunks read from RocksDB per step of a sweep, and the queue length below which the
/// sweep reads the next page (so a sweep never holds the whole table in memory).
const SWEEP_PAGE: usize = 1024;
const SWEEP_LOW_WATER: usize = 4 * SWEEP_PAGE;
/// How often rendezvous points are asked for new peers.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);
/// How often every followed volume is pulled from every connected member (anti-entropy).
const PULL_EVERY: Duration = Duration::from_secs(2);
/// Addresses of our own put in an announcement, and taken from a peer's identify.
const MAX_ANNOUNCED_ADDRS: usize = super::peers::MAX_ADDRS;

pub(super) struct Node {
    swarm: Swarm<Behaviour>,
    table: PeerTable,
    held: Arc<HeldShards>,
    bulk: Option<Arc<Bulk>>,
    options: NetOptions,
    commands: mpsc::Receiver<Command>,
    started: Instant,
    topic: gossipsub::IdentTopic,
    pending: Waiting<Response>,
    providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    opening: Waiting<bulk::Opened>,
    /// The remote IP of each open connection (none for a relayed one): a bulk session granted
    /// over a connection is dialled at that IP only, so a peer cannot point this one at a
    /// third party.
    connection_ips: HashMap<libp2p::swarm::ConnectionId, std::net::IpAddr>,
    done_tx: mpsc::Sender<Served>,
    done_rx: mpsc::Receiver<Served>,
    inbound: usize,
    listen: Vec<Multiaddr>,
    rendezvous_points: HashMap<PeerId, Multiaddr>,
    /// Bootstrap addresses given without a peer id: dialled while no peer is connected.
    anonymous: Vec<Multiaddr>,
    bootstrapped: bool,
    /// Provider announcements waiting for their turn.
    announcer: Announcer,
    /// Kademlia queries of announcements in flight.
    announcing: HashSet<QueryId>,
    /// Where a sweep of the held table has got to: `Some(None)` to start from the beginning.
    sweep: Option<Option<dfs_placement::ChunkId>>,
    last_inbound: Option<Instant>,
    /// The op log and its followers; disk work on it runs on the blocking pool.
    hub: Arc<OpsHub>,
    syncing: Syncing,
    sync_tx: mpsc::Sender<SyncDone>,
    sync_rx: mpsc::Receiver<SyncDone>,
}

fn start_error(e: impl std::fmt::Display) -> NetError {
    NetError::Start(e.to_string())
}

impl Node {
    pub(super) fn new(
        key: Keypair,
        held: Arc<HeldShards>,
        bulk: Option<Arc<Bulk>>,
        options: NetOptions,
        commands: mpsc::Receiver<Command>,
        started: Instant,
        hub: Arc<OpsHub>,
    ) -> Result<Self, NetError> {
        let mut built_error = None;
        let network_key = options.network_key;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|identity| transport::tcp(identity, network_key))
            .map_err(start_error)?
            .with_other_transport(|identity| transport::quic(identity, network_key))
            .map_err(start_error)?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(start_error)?
            .with_behaviour(
                |key, relay_client| match behaviour(key, relay_client, &options) {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        let message = e.to_string();
                        built_error = Some(e);
                        Err(message.into())
                    }
                },
            )
            .map_err(|e| built_error.take().unwrap_or_else(|| start_error(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for addr in &options.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Start(format!("cannot listen on {addr}: {e}")))?;
        }
        let topic = gossipsub::IdentTopic::new(MEMBERSHIP_TOPIC);
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&topic)
            .map_err(start_error)?;
        let mut table = PeerTable::new(options.grace, options.announce);
        let now = Instant::now();
        let mut anonymous = Vec::new();
        for addr in &options.peers {
            match peer_of(addr) {
                Some(peer) => {
                    table.add_address(peer, addr.clone(), now);
                    swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                None => anonymous.push(addr.clone()),
            }
        }
        let mut rendezvous_points = HashMap::new();
        for addr in &options.rendezvous {
            if let Some(peer) = peer_of(addr) {
                table.add_address(peer, addr.clone(), now);
                rendezvous_points.insert(peer, addr.clone());
            }
        }
        let (done_tx, done_rx) = mpsc::channel(MAX_INBOUND * 2);
        let (sync_tx, sync_rx) = mpsc::channel(MAX_INBOUND * 2);
        let options_rate = options.announce_rate;
        Ok(Self {
            swarm,
            table,
            held,
            bulk,
            options,
            commands,
            started,
            topic,
            pending: HashMap::new(),
            providers: HashMap::new(),
            opening: HashMap::new(),
            connection_ips: HashMap::new(),
            done_tx,
            done_rx,
            inbound: 0,
            listen: Vec::new(),
            rendezvous_points,
            anonymous,
            bootstrapped: false,
            announcer: Announcer::new(options_rate),
            announcing: HashSet::new(),
            sweep: Some(None),
            last_inbound: None,
            hub,
            syncing: Syncing::default(),
            sync_tx,
            sync_rx,
        })
    }

    pub(super) async fn run(mut self) {
        let mut health = tokio::time::interval(HEALTH_TICK);
        let mut announce = tokio::time::interval(self.options.announce);
        let mut discover = tokio::time::interval(DISCOVER_EVERY);
        let mut providers = tokio::time::interval(ANNOUNCE_TICK);
        providers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pull = tokio::time::interval(PULL_EVERY);
        pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval_at(
            tokio::time::Instant::now() + announce::SWEEP_EVERY,
            announce::SWEEP_EVERY,
        );
        for addr in self.anonymous.clone() {
            self.dial_address(addr);
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.say_goodbye().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.event(event),
                Some(served) = self.done_rx.recv() => self.respond(served),
                Some(done) = self.sync_rx.recv() => self.sync_done(done),
                _ = pull.tick() => self.pull_all(),
                _ = health.tick() => self.health(),
                _ = announce.tick() => self.announce(),
                _ = discover.tick() => self.discover(),
                _ = providers.tick() => self.announce_providers(),
                _ = sweep.tick() => self.sweep = Some(None),
            }
        }
        tracing::info!("peer stopped");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.views());
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if let Err(e) = self.answering(peer) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .shards
                    .send_request(&peer, request);
                self.pending.insert(id, (peer, reply));
            }
            Command::OpenBulk { peer, open, reply } => {
                if let Err(e) = self.answering(peer) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let id = self.swarm.behaviour_mut().bulk.send_request(&peer, open);
                self.opening.insert(id, (peer, reply));
            }
            Command::BulkServed {
                peer,
                stored,
                invalid,
            } => {
                let now = Instant::now();
                self.table.seen(peer, now);
                self.last_inbound = Some(now);
                if let Some(chunk) = stored {
                    self.announcer.push(chunk);
                }
                if invalid {
                    self.table.bad_data(peer, now);
                }
            }
            Command::BulkOutcome {
                peer,
                succeeded,
                failed,
            } => {
                let now = Instant::now();
                let change = if failed {
                    self.table.failed(peer, now)
                } else {
                    self.table.succeeded(peer, succeeded, now)
                };
                self.log(change);
            }
            Command::BadData(peer) => self.table.bad_data(peer, Instant::now()),
            Command::RefusedSpace(peer) => self.table.refused_space(peer, Instant::now()),
            Command::Provide(chunk) => {
                self.announcer.push(chunk);
            }
            Command::FindProviders { chunk, reply } => {
                let key = kad::RecordKey::new(chunk.as_bytes());
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.providers.insert(id, (HashSet::new(), reply));
            }
            Command::Dial(addr) => {
                if let Some(peer) = peer_of(&addr) {
                    self.table.add_address(peer, addr.clone(), Instant::now());
                }
                self.dial_address(addr);
            }
            Command::Follow(volume) => {
                if let Some(topic) = self.syncing.follow(volume) {
                    if let Err(e) = self.swarm.behaviour_mut().gossip.subscribe(&topic) {
                        tracing::warn!(%volume, error = %e, "cannot subscribe to the volume's ops");
                    }
                    let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                    for peer in peers {
                        self.pull(peer, volume);
                    }
                }
            }
            Command::PublishOp(op) => {
                let Some(topic) = self.syncing.topic(&op.volume).cloned() else {
                    tracing::debug!(volume = %op.volume, "op of a volume not followed: not published");
                    return;
                };
                // No peer subscribed yet is normal: anti-entropy brings the op to them.
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(topic, op.to_bytes())
                {
                    tracing::debug!(volume = %op.volume, error = %e, "op not gossiped");
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    /// A peer that is not connected and not answering (suspect or dead) fails at once: dialling
    /// it (QUIC times out slowly) would stall the caller for seconds, and callers have other
    /// holders to ask.
    fn answering(&self, peer: PeerId) -> Result<(), NetError> {
        let down = self
            .table
            .get(&peer)
            .is_some_and(|p| p.connections == 0 && p.state != super::peers::PeerState::Alive);
        if down {
            return Err(NetError::Request {
                peer,
                detail: "the peer is not answering".into(),
            });
        }
        Ok(())
    }

    /// Start the provider announcements that are due, after topping the queue up from a
    /// sweep of the held table if one is running.
    fn announce_providers(&mut self) {
        if let Some(after) = self.sweep {
            if self.announcer.len() < SWEEP_LOW_WATER && self.announcer.room() >= SWEEP_PAGE {
                match self.held.chunks_after(after.as_ref(), SWEEP_PAGE) {
                    Ok(page) => {
                        self.sweep = (page.len() == SWEEP_PAGE).then(|| page.last().copied());
                        for chunk in page {
                            self.announcer.push(chunk);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read held chunks to announce");
                        self.sweep = None;
                    }
                }
            }
        }
        let now = Instant::now();
        let busy = self
            .last_inbound
            .is_some_and(|t| now.saturating_duration_since(t) < BUSY_FOR);
        for chunk in self.announcer.due(now, busy) {
            let key = kad::RecordKey::new(chunk.as_bytes());
            match self.swarm.behaviour_mut().kad.start_providing(key) {
                Ok(id) => {
                    self.announcing.insert(id);
                }
                Err(e) => {
                    self.announcer.finished();
                    tracing::warn!(error = %e, "cannot record a provider entry");
                }
            }
        }
    }

    fn dial_address(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "dial failed");
        }
    }

    fn views(&self) -> Vec<PeerView> {
        self.table.views(Instant::now())
    }

    fn status(&self) -> NodeStatus {
        let local = *self.swarm.local_peer_id();
        let (capacity, free, used, shards_held) = self.held.usage();
        let (alive, suspect, dead) = self.table.counts();
        let path = self.held_path();
        NodeStatus {
            id: local.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            zone: self.options.zone.clone(),
            addresses: self.listen.iter().map(|a| dialable(a, local)).collect(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            client: self.options.client,
            network_key: self
                .options
                .network_key
                .map(|k| k.fingerprint().to_string()),
            storage: StorageStatus {
                capacity,
                free,
                used,
                shards_held,
                disk_total: disk_total(&path).unwrap_or(0),
                disk_free: disk_free(&path).unwrap_or(0),
            },
            peers: PeerCounts {
                alive,
                suspect,
                dead,
                clients: self.table.clients(),
            },
            bulk: self.bulk.as_ref().map(|b| b.status(&self.listen)),
            placement: None,
        }
    }

    fn held_path(&self) -> std::path::PathBuf {
        self.held.data_dir().to_path_buf()
    }

    fn log(&self, changes: impl IntoIterator<Item = Transition>) {
        use crate::events::EventKind;
        for t in changes {
            let peer = t.peer.to_string();
            let (kind, detail) = match t.to {
                super::PeerState::Alive => {
                    tracing::info!(peer = %t.peer, from = ?t.from, "peer is alive");
                    (EventKind::PeerJoined, format!("alive (was {:?})", t.from))
                }
                super::PeerState::Suspect => {
                    tracing::info!(peer = %t.peer, "peer is suspect");
                    (EventKind::PeerSuspect, "stopped answering".to_string())
                }
                super::PeerState::Dead => {
                    tracing::warn!(peer = %t.peer, "peer is dead");
                    (
                        EventKind::PeerLost,
                        "dead after the grace period".to_string(),
                    )
                }
            };
            self.held.repo().record_event(kind, &peer, &detail);
        }
    }

    fn health(&mut self) {
        let now = Instant::now();
        let changes = self.table.tick(now);
        self.log(changes);
        for peer in self.table.take_forgotten() {
            crate::metrics::forget_peer(&peer);
            if let Some(bulk) = &self.bulk {
                bulk.forget(&peer);
            }
        }
        for (peer, addrs) in self.table.due_dials(now) {
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "redial failed");
            }
        }
        if self.swarm.connected_peers().next().is_none() {
            for addr in self.anonymous.clone() {
                self.dial_address(addr);
            }
        }
    }

    fn announce(&mut self) {
        self.publish_announcement(false);
    }

    /// Tell the other peers this one is stopping (a client is then forgotten at once rather
    /// than declared dead later), and give the swarm a moment to send it.
    async fn say_goodbye(&mut self) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        self.publish_announcement(true);
        let flush = tokio::time::sleep(GOODBYE_FLUSH);
        tokio::pin!(flush);
        loop {
            tokio::select! {
                _ = &mut flush => break,
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
    }

    /// Publish this peer's announcement; `leaving`: it is the goodbye of a peer stopping.
    fn publish_announcement(&mut self, leaving: bool) {
        let (capacity, free, _, shards) = self.held.usage();
        // A client offers nothing, and says so (receivers refuse a client offering storage).
        let shards = if self.options.client { 0 } else { shards };
        let local = *self.swarm.local_peer_id();
        let announcement = Announcement {
            version: env!("CARGO_PKG_VERSION").into(),
            zone: self.options.zone.clone(),
            capacity,
            free,
            load: self.inbound as u32,
            shards,
            addrs: self
                .listen
                .iter()
                .take(MAX_ANNOUNCED_ADDRS)
                .map(|a| dialable(a, local))
                .collect(),
            client: self.options.client,
            uptime_secs: self.started.elapsed().as_secs(),
            leaving,
        };
        let Ok(bytes) = announcement.encode() else {
            return;
        };
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossip
            .publish(self.topic.clone(), bytes)
        {
            tracing::trace!(error = %e, "announcement not sent");
        }
    }

    fn discover(&mut self) {
        let points: Vec<PeerId> = self.rendezvous_points.keys().copied().collect();
        for point in points {
            if self.swarm.is_connected(&point) {
                self.swarm.behaviour_mut().rendezvous.discover(
                    Some(namespace()),
                    None,
                    None,
                    point,
                );
            }
        }
    }

    fn learn(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.table.add_address(peer, addr.clone(), Instant::now());
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // Loopback and LAN addresses we listen on are how others reach us.
                self.swarm.add_external_address(address.clone());
                self.listen.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                if let Some(ip) = direct_ip(endpoint.get_remote_address()) {
                    self.connection_ips.insert(connection_id, ip);
                }
                let change = self.table.connected(peer_id, now);
                self.log(change);
                if endpoint.is_dialer() {
                    self.learn(peer_id, endpoint.get_remote_address().clone());
                }
                if self.rendezvous_points.contains_key(&peer_id) {
                    self.register(peer_id);
                }
                for volume in self.syncing.volumes() {
                    self.pull(peer_id, volume);
                }
                // Join the DHT once, on the first connection; Kademlia refreshes its routing
                // table by itself after that (a bootstrap per connection is quadratic).
                if !self.bootstrapped {
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                connection_id,
                ..
            } => {
                self.connection_ips.remove(&connection_id);
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    if let Some(bulk) = &self.bulk {
                        bulk.forget(&peer_id);
                    }
                }
                let change =
                    self.table
                        .disconnected(peer_id, num_established, cause.is_some(), now);
                self.log(change);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.behaviour_event(event, now),
            _ => {}
        }
    }

    fn register(&mut self, point: PeerId) {
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .rendezvous
            .register(namespace(), point, None)
        {
            tracing::warn!(%point, error = %e, "cannot register at the rendezvous point");
        }
        self.swarm
            .behaviour_mut()
            .rendezvous
            .discover(Some(namespace()), None, None, point);
    }

    fn behaviour_event(&mut self, event: BehaviourEvent, now: Instant) {
        match event {
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => {
                let change = match result {
                    Ok(rtt) => self.table.ping_ok(peer, rtt, now),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "ping failed");
                        self.table.failed(peer, now)
                    }
                };
                self.log(change);
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != IDENTIFY_PROTOCOL {
                    tracing::debug!(peer = %peer_id, version = %info.protocol_version, "not a dfs peer");
                    return;
                }
                if info.agent_version.ends_with(CLIENT_AGENT_SUFFIX) {
                    // Known as a client from the first exchange, before any announcement (a
                    // short `dfs get` may be gone before its first one arrives).
                    self.table.identified_client(peer_id, now);
                }
                for addr in info.listen_addrs.into_iter().take(MAX_ANNOUNCED_ADDRS) {
                    self.learn(peer_id, addr);
                }
            }
            BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            }) => {
                let Some(source) = message.source else {
                    return;
                };
                if let Some(volume) = self.syncing.volume_of(&message.topic) {
                    self.gossiped_op(volume, propagation_source, source, message.data);
                    return;
                }
                match Announcement::decode(&message.data) {
                    Ok(announcement) => {
                        let addrs = announcement.addrs.clone();
                        // Gossip may relay an announcement seconds after it was sent (and
                        // after its author died): only one received from the author itself is
                        // a sign of life.
                        let direct = propagation_source == source;
                        if announcement.leaving && !direct {
                            // A relayed goodbye: the author's own copy settles it.
                            return;
                        }
                        let leaving = announcement.leaving;
                        let change = self.table.announced(source, announcement, direct, now);
                        self.log(change);
                        if leaving {
                            tracing::info!(peer = %source, "peer said goodbye");
                            let change = self.table.left(source, now);
                            self.log(change);
                            return;
                        }
                        for addr in addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                            // Only addresses of the sender itself: no one may point us elsewhere.
                            if peer_of(&addr) == Some(source) {
                                self.learn(source, addr);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(peer = %source, error = %e, "bad announcement"),
                }
            }
            BehaviourEvent::Shards(event) => self.shard_event(event, now),
            BehaviourEvent::Bulk(event) => self.bulk_event(event),
            BehaviourEvent::Ops(event) => self.ops_event(event),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                if matches!(result, QueryResult::StartProviding(_))
                    && step.last
                    && self.announcing.remove(&id)
                {
                    self.announcer.finished();
                }
                if let QueryResult::GetProviders(result) = result {
                    if let Some((found, _)) = self.providers.get_mut(&id) {
                        if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                            found.extend(providers);
                        }
                    }
                    if step.last {
                        if let Some((found, reply)) = self.providers.remove(&id) {
                            let _ = reply.send(found.into_iter().collect());
                        }
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.learn(peer, addr);
                }
            }
            BehaviourEvent::Rendezvous(rendezvous::client::Event::Discovered {
                registrations,
                ..
            }) => {
                for registration in registrations {
                    let peer = registration.record.peer_id();
                    for addr in registration.record.addresses() {
                        self.learn(peer, addr.clone());
                    }
                }
            }
            other => tracing::trace!(event = ?other, "network event"),
        }
    }
}

/// Callers waiting for the answers to outbound requests, with the peer asked.
type Waiting<T> = HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<T, NetError>>)>;

/// Hand the outcome of an outbound request to the caller waiting for it.
fn reply_to<T>(
    waiting: &mut Waiting<T>,
    id: OutboundRequestId,
    outcome: Result<T, request_response::OutboundFailure>,
) {
    if let Some((peer, reply)) = waiting.remove(&id) {
        let _ = reply.send(outcome.map_err(|e| NetError::Request {
            peer,
            detail: e.to_string(),
        }));
    }
}

/// `addr` as others dial it: ending in `/p2p/<local id>` (relay circuit addresses already do).
fn dialable(addr: &Multiaddr, local: PeerId) -> String {
    if peer_of(addr) == Some(local) {
        addr.to_string()
    } else {
        format!("{addr}/p2p/{local}")
    }
}

fn namespace() -> rendezvous::Namespace {
    rendezvous::Namespace::from_static(RENDEZVOUS_NAMESPACE)
}

/// The IP of a direct connection's remote address (`None` for a relayed one, whose address
/// names the relay).
fn direct_ip(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}
