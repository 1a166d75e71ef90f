//! The libp2p behaviours a peer runs, one per protocol, and how each is configured: the
//! connection limits and allow list, identify, ping, Kademlia, gossip, the shard, bulk-session
//! and op-sync request protocols, mDNS, rendezvous, relay and hole punching.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, dcutr, gossipsub, identify, mdns, ping, relay, rendezvous,
    StreamProtocol,
};

use super::{start_error, MAX_INBOUND};
use crate::net::bulk::{self, BulkCodec};
use crate::net::sync::{self, SyncCodec};
use crate::net::wire::{ShardCodec, PROTOCOL};
use crate::net::{NetError, NetOptions, REQUEST_TIMEOUT};

const KAD_PROTOCOL: &str = "/dfs/kad/1";
/// The identify protocol version every dfs peer speaks; a peer naming another is not one.
pub(super) const IDENTIFY_PROTOCOL: &str = "/dfs/1";
/// Ends the identify agent version of a client (see [`NetOptions::client`]).
pub(super) const CLIENT_AGENT_SUFFIX: &str = " client";
/// Provider records (keys) a peer keeps, its own and others' (about 200 bytes each).
const MAX_PROVIDER_KEYS: usize = 1 << 20;
/// Ping interval, and how long an answer may take before the peer is suspect (a cut link
/// does not close a TCP connection; only a ping that fails to come back shows it at once).
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest gossip message: an encoded op (membership announcements are far smaller).
const MAX_GOSSIP: usize = crate::oplog::MAX_ENCODED + (1 << 10);

/// The identify agent version: `dfs/<version>`, plus [`CLIENT_AGENT_SUFFIX`] for a client.
fn agent_version(client: bool) -> String {
    let suffix = if client { CLIENT_AGENT_SUFFIX } else { "" };
    format!("dfs/{}{suffix}", env!("CARGO_PKG_VERSION"))
}

#[derive(NetworkBehaviour)]
pub(in crate::net) struct Behaviour {
    /// A closed network (`[network] allow`): connections of any other peer are denied as they
    /// are established, before a request of theirs is read.
    pub(super) allowed: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) kad: kad::Behaviour<MemoryStore>,
    pub(super) gossip: gossipsub::Behaviour,
    pub(super) shards: request_response::Behaviour<ShardCodec>,
    pub(super) bulk: request_response::Behaviour<BulkCodec>,
    pub(super) ops: request_response::Behaviour<SyncCodec>,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) rendezvous: rendezvous::client::Behaviour,
    pub(super) rendezvous_server: Toggle<rendezvous::server::Behaviour>,
    pub(super) relay_client: relay::client::Behaviour,
    pub(super) relay_server: Toggle<relay::Behaviour>,
    pub(super) dcutr: dcutr::Behaviour,
}

pub(super) fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    options: &NetOptions,
) -> Result<Behaviour, NetError> {
    let local = key.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(options.max_connections))
        .with_max_established_per_peer(Some(options.max_connections_per_peer))
        .with_max_pending_incoming(Some(128))
        .with_max_pending_outgoing(Some(128));
    let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    kad_config.set_query_timeout(Duration::from_secs(30));
    // Our own sweep republishes provider records at a bounded rate (see `announce`); Kademlia's
    // would restart every query at once.
    kad_config.set_provider_publication_interval(None);
    let store = MemoryStore::with_config(
        local,
        kad::store::MemoryStoreConfig {
            max_provided_keys: MAX_PROVIDER_KEYS,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(MAX_GOSSIP)
        .build()
        .map_err(start_error)?;
    let gossip = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )
    .map_err(start_error)?;
    let shards = request_response::Behaviour::with_codec(
        ShardCodec::default(),
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_INBOUND * 2),
    );
    let bulk = request_response::Behaviour::with_codec(
        bulk::codec(),
        [(StreamProtocol::new(bulk::PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    let mdns = if options.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local).map_err(start_error)?)
    } else {
        None
    };
    let ops = request_response::Behaviour::with_codec(
        sync::codec(),
        [(StreamProtocol::new(sync::PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    let allowed = (!options.allow.is_empty()).then(|| {
        let mut allowed = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
        for &peer in &options.allow {
            allowed.allow_peer(peer);
        }
        allowed
    });
    Ok(Behaviour {
        allowed: allowed.into(),
        limits: connection_limits::Behaviour::new(limits),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(agent_version(options.client)),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_EVERY)
                .with_timeout(PING_TIMEOUT),
        ),
        kad,
        gossip,
        shards,
        bulk,
        ops,
        mdns: mdns.into(),
        rendezvous: rendezvous::client::Behaviour::new(key.clone()),
        rendezvous_server: options
            .rendezvous_server
            .then(|| rendezvous::server::Behaviour::new(rendezvous::server::Config::default()))
            .into(),
        relay_client,
        relay_server: options
            .relay_server
            .then(|| relay::Behaviour::new(local, relay::Config::default()))
            .into(),
        dcutr: dcutr::Behaviour::new(local),
    })
}
