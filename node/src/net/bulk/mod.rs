//! Bulk links: shard requests on plain TCP connections of their own, keyed through libp2p.
//!
//! Shard images are already ciphertext (the chunk's XChaCha20-Poly1305) and carry a blake3 over
//! all their bytes. Sealing them a second time with Noise's ChaCha20-Poly1305 and multiplexing
//! them through Yamux and the swarm's event loop cost about a third of the CPU of a bulk write
//! or read on the peers (docs/placement.md). A bulk link moves them as they are, and protects
//! what does need protecting:
//!
//! 1. **Session**: over the libp2p connection (Noise: both peers authenticated by their keys),
//!    the client sends a random ticket and a random 32-byte key under [`PROTOCOL`]; the server
//!    keeps them for that peer and answers with the addresses of its bulk listeners.
//! 2. **Link**: the client opens a TCP connection to one of them and sends [`MAGIC`], the ticket
//!    and a fresh nonce; the server answers with a fresh nonce of its own, and both derive the
//!    link key as blake3 keyed by the session key over both nonces. A ticket seen on the wire
//!    is useless without the key, and a recorded link cannot be replayed (the server's nonce).
//! 3. **Frames**: a 4-byte length, a *head* sealed with ChaCha20-Poly1305 under the link key
//!    (nonce: direction and frame counter, so frames cannot be replayed, reordered or
//!    reflected), then the *body* as is: a shard image, or nothing. The head says what is asked
//!    or answered, the body's length and the blake3 the image carries (its bytes 48..80); the
//!    receiver checks that the body carries that hash, and the shard code checks the hash over
//!    the body's bytes. A body that does not match its head, or an image that does not verify
//!    after a bulk transfer, may have changed in flight: the link is dropped (or the store is
//!    refused without blame) and the request is asked again over libp2p, whose bytes Noise
//!    authenticates; only what fails there too counts against the peer.
//!
//! Every wait has a deadline (handshake, idle, each body and answer), and what one peer can
//! hold is capped: links in their handshake, open links per peer and in all, inbound permits
//! per peer (docs/security.md).
//!
//! An observer of a bulk link sees what a storage peer sees anyway (chunk ids, shard indexes,
//! ciphertext), never a key or a plaintext. Each link carries one request at a time; the
//! client keeps idle links per peer. A peer without bulk listeners, unreachable ones or an
//! older version is asked over libp2p as before (`[network] bulk_links = false` turns the
//! links off altogether).
//!
//! This module keeps the state of both ends ([`Bulk`]); [`link`] is one connection's framing,
//! [`server`] the answering end and [`client`] the asking end.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use super::held::HeldShards;
use super::wire::FramedCodec;
// A body or an answer that misses its deadline drops the link (a link slower than 1 MiB/s is
// not worth keeping a permit for; libp2p is still there).
use super::wire::transfer_deadline;
use super::{Command, NetError};

mod client;
#[doc(hidden)]
pub use client::open_stalled_store;
mod link;
mod reports;
mod server;

#[doc(hidden)]
pub use link::fuzzing;

/// The libp2p protocol that opens a session.
pub const PROTOCOL: &str = "/dfs/bulk/1";
/// The first bytes a client sends on a new link (format version 1).
pub const MAGIC: &[u8; 8] = b"DFSBULK1";
/// The largest sealed head (a message without its image, plus the AEAD tag).
const MAX_HEAD: usize = 1024;
const TAG_LEN: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer that takes no bytes of a shard being sent for this long is given up on.
const SEND_STALL: Duration = Duration::from_secs(30);
/// A link idle this long is closed by the server; clients drop theirs sooner, so a request is
/// never sent on a link the server is closing.
const SERVER_IDLE: Duration = Duration::from_secs(120);
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Idle links kept per peer.
const IDLE_PER_PEER: usize = 16;
/// After a failure to set up a link, a peer is asked over libp2p for this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Sessions a server keeps per peer (a client normally has one).
const SESSIONS_PER_PEER: usize = 4;
/// Inbound requests served at once over bulk links; more are answered `Busy`.
const MAX_INBOUND: usize = 32;
/// Of those, what one peer may hold at once: a peer that stalls its bodies cannot take the
/// permits every other peer needs.
const INBOUND_PER_PEER: usize = 8;
/// Links a server keeps open at once from one peer, and in all; more are refused at the
/// handshake (the client falls back to libp2p).
const LINKS_PER_PEER: usize = 32;
const MAX_LINKS: usize = 1024;
/// TCP connections still in their handshake (anyone can open one: no ticket is checked yet).
const MAX_HANDSHAKES: usize = 64;
/// Direction bytes of the frame nonces.
const FROM_CLIENT: u8 = 0;
const FROM_SERVER: u8 = 1;

/// Opening a session (sent over libp2p, so only the peer it is for learns the key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub ticket: [u8; 16],
    pub key: [u8; 32],
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open").finish_non_exhaustive()
    }
}

/// The answer to [`Open`]: where to connect (empty when this peer has no bulk listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    pub addrs: Vec<SocketAddr>,
}

/// The request-response codec for [`PROTOCOL`].
pub type BulkCodec = FramedCodec<Open, Opened>;

pub fn codec() -> BulkCodec {
    BulkCodec::new(256, 4096)
}

/// Bulk links as `dfs status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkStatus {
    /// Where other peers connect.
    pub addresses: Vec<String>,
    /// Requests this peer sent over bulk links, and served on them.
    pub sent: u64,
    pub served: u64,
    /// Requests to peers without (reachable) bulk links, sent over libp2p instead.
    pub fallbacks: u64,
}

/// Why a request could not go over a bulk link.
pub(super) enum Failure {
    /// No link could be set up (nothing was sent): ask over libp2p instead.
    Unavailable,
    /// The request was sent and failed.
    Failed(NetError),
}

/// A session a client opened with this server.
struct Granted {
    peer: PeerId,
    key: [u8; 32],
    at: Instant,
}

/// Both ends of this peer's bulk links.
pub struct Bulk {
    listeners: Vec<SocketAddr>,
    held: Arc<HeldShards>,
    events: mpsc::Sender<Command>,
    /// Server: sessions by ticket.
    granted: Mutex<HashMap<[u8; 16], Granted>>,
    /// Client: links by peer.
    peers: Mutex<HashMap<PeerId, client::PeerLinks>>,
    inbound: Semaphore,
    /// Server: inbound permits and open links held by each peer.
    inbound_by_peer: Mutex<HashMap<PeerId, usize>>,
    links_by_peer: Mutex<HashMap<PeerId, usize>>,
    handshakes: Arc<Semaphore>,
    sent: AtomicU64,
    served: AtomicU64,
    fallbacks: AtomicU64,
    /// Server: requests served well, and client: answers had, not yet told the event loop.
    served_reports: reports::Reports,
    answered_reports: reports::Reports,
}

/// One of a peer's places in a per-peer count (inbound permits, open links), given back when
/// dropped.
struct PeerSlot<'a> {
    counts: &'a Mutex<HashMap<PeerId, usize>>,
    peer: PeerId,
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut counts = lock(self.counts);
        if let Some(held) = counts.get_mut(&self.peer) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Take one of `peer`'s `most` places in `counts`; `None` when it holds them all (or, with
/// `total`, when all peers together hold that many).
fn take_slot(
    counts: &Mutex<HashMap<PeerId, usize>>,
    peer: PeerId,
    most: usize,
    total: Option<usize>,
) -> Option<PeerSlot<'_>> {
    let mut map = lock(counts);
    if total.is_some_and(|t| map.values().sum::<usize>() >= t) {
        return None;
    }
    let held = map.entry(peer).or_default();
    if *held >= most {
        return None;
    }
    *held += 1;
    Some(PeerSlot { counts, peer })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Count one request for `dfs status` (`counter`) and `/metrics` (`event`).
fn count(counter: &AtomicU64, event: &str) {
    counter.fetch_add(1, Ordering::Relaxed);
    crate::metrics::metrics()
        .bulk_requests
        .with_label_values(&[event])
        .inc();
}

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

impl Bulk {
    /// Listen on `port` (0: an ephemeral one) of every IP this peer listens on with TCP, and
    /// serve the links on the current runtime. `None`: no listener, and no links to others.
    pub(super) async fn start(
        listen: &[Multiaddr],
        port: Option<u16>,
        held: Arc<HeldShards>,
        events: mpsc::Sender<Command>,
    ) -> Result<Option<Arc<Bulk>>, NetError> {
        let Some(port) = port else {
            return Ok(None);
        };
        let mut ips = Vec::new();
        for addr in listen {
            let mut parts = addr.iter();
            let ip = match (parts.next(), parts.next()) {
                (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(_))) => std::net::IpAddr::V4(ip),
                (Some(Protocol::Ip6(ip)), Some(Protocol::Tcp(_))) => std::net::IpAddr::V6(ip),
                _ => continue,
            };
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        for ip in ips {
            let at = SocketAddr::new(ip, port);
            let socket = TcpListener::bind(at).await.map_err(|e| {
                NetError::Start(format!(
                    "cannot listen for bulk links on {at}: {e} (network.bulk_port)"
                ))
            })?;
            listeners.push(
                socket
                    .local_addr()
                    .map_err(|e| NetError::Start(e.to_string()))?,
            );
            sockets.push(socket);
        }
        let bulk = Arc::new(Bulk {
            listeners,
            held,
            events,
            granted: Mutex::default(),
            peers: Mutex::default(),
            inbound: Semaphore::new(MAX_INBOUND),
            inbound_by_peer: Mutex::default(),
            links_by_peer: Mutex::default(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            sent: AtomicU64::new(0),
            served: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            served_reports: reports::Reports::default(),
            answered_reports: reports::Reports::default(),
        });
        for socket in sockets {
            tokio::spawn(Arc::clone(&bulk).accept(socket));
        }
        Ok(Some(bulk))
    }

    /// Server: keep a session `peer` opened, and say where to connect. `listening` are the
    /// swarm's listen addresses, which name the IPs behind a listener on an unspecified one.
    pub(super) fn grant(&self, peer: PeerId, open: Open, listening: &[Multiaddr]) -> Opened {
        let mut granted = lock(&self.granted);
        let mut mine: Vec<_> = granted
            .iter()
            .filter(|(_, g)| g.peer == peer)
            .map(|(t, g)| (g.at, *t))
            .collect();
        if mine.len() >= SESSIONS_PER_PEER {
            mine.sort();
            for (_, ticket) in &mine[..=mine.len() - SESSIONS_PER_PEER] {
                granted.remove(ticket);
            }
        }
        granted.insert(
            open.ticket,
            Granted {
                peer,
                key: open.key,
                at: Instant::now(),
            },
        );
        Opened {
            addrs: self.addresses(listening),
        }
    }

    pub(super) fn status(&self, listening: &[Multiaddr]) -> BulkStatus {
        BulkStatus {
            addresses: self
                .addresses(listening)
                .iter()
                .map(|a| a.to_string())
                .collect(),
            sent: self.sent.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    fn addresses(&self, listening: &[Multiaddr]) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for l in &self.listeners {
            if !l.ip().is_unspecified() {
                addrs.push(*l);
                continue;
            }
            for addr in listening {
                let ip = match addr.iter().next() {
                    Some(Protocol::Ip4(ip)) => std::net::IpAddr::V4(ip),
                    Some(Protocol::Ip6(ip)) => std::net::IpAddr::V6(ip),
                    _ => continue,
                };
                let a = SocketAddr::new(ip, l.port());
                if ip.is_ipv4() == l.is_ipv4() && !ip.is_unspecified() && !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
        }
        // Routable addresses first: a loopback address names the client's own machine.
        addrs.sort_by_key(|a| a.ip().is_loopback());
        addrs
    }

    /// Forget `peer`'s sessions and links (its last libp2p connection closed).
    pub(super) fn forget(&self, peer: &PeerId) {
        lock(&self.granted).retain(|_, g| g.peer != *peer);
        lock(&self.peers).remove(peer);
        self.served_reports.forget(peer);
        self.answered_reports.forget(peer);
    }

    /// Client: how many requests to `peer` succeeded since the event loop last heard, when it
    /// is time to tell it (see `reports`).
    pub(super) fn answered(&self, peer: PeerId) -> Option<u32> {
        self.answered_reports.success(peer, Instant::now())
    }

    /// Client: a request to `peer` failed (the event loop hears of it at once, and of the next
    /// success too).
    pub(super) fn answer_failed(&self, peer: PeerId) {
        self.answered_reports.failure(peer);
    }
}
