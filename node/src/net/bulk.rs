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
//!    the body's bytes, so a body changed in flight is refused like a corrupt shard.
//!
//! An observer of a bulk link sees what a storage peer sees anyway (chunk ids, shard indexes,
//! ciphertext), never a key or a plaintext. Each link carries one request at a time; the
//! client keeps idle links per peer. A peer without bulk listeners, unreachable ones or an
//! older version is asked over libp2p as before (`[network] bulk_links = false` turns the
//! links off altogether).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::sendfile::sendfile;
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::{AsFd, OwnedFd};

use super::held::{HeldFile, HeldShards};
use super::wire::{FramedCodec, Refusal, Request, Response, MAX_SHARD};
use super::{Command, NetError};
use crate::shard::ShardHeader;

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

/// What a frame's sealed head says.
#[derive(Debug, Serialize, Deserialize)]
struct Head<M> {
    message: M,
    /// Length of the body that follows the head.
    body: u32,
    /// The blake3 the body (a shard image) carries in its header.
    hash: Option<[u8; 32]>,
}

/// What the server sends back for one request.
enum Answer {
    Message(Response),
    /// A shard image, sent from its file.
    File(HeldFile),
}

/// Why a request could not go over a bulk link.
pub(super) enum Failure {
    /// No link could be set up (nothing was sent): ask over libp2p instead.
    Unavailable,
    /// The request was sent and failed.
    Failed(NetError),
}

/// One end of a link, after the handshake.
struct Link {
    stream: TcpStream,
    cipher: ChaCha20Poly1305,
    /// Direction byte of the frames this end sends.
    out: u8,
    sent: u64,
    received: u64,
    last_used: Instant,
}

fn nonce(direction: u8, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = direction;
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

fn link_key(session: &[u8; 32], client: &[u8; 16], server: &[u8; 16]) -> ChaCha20Poly1305 {
    let key = blake3::Hasher::new_keyed(session)
        .update(b"dfs bulk link key v1")
        .update(client)
        .update(server)
        .finalize();
    ChaCha20Poly1305::new(&Key::from(*key.as_bytes()))
}

/// Write all `len` bytes of `file` to `socket` (non-blocking: waits for room between calls).
fn send_whole_file(socket: &OwnedFd, file: &std::fs::File, len: u64) -> io::Result<()> {
    // sendfile has no MSG_NOSIGNAL: a peer that hung up raises SIGPIPE on this thread, and the
    // dfs binary restores SIGPIPE's default action (die) for `dfs ... | head`. Blocked on this
    // thread it stays pending and harmless, and the call fails with EPIPE like any send.
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    pipe.thread_block()?;
    let mut offset: libc::off_t = 0;
    while (offset as u64) < len {
        let want = usize::try_from(len - offset as u64).unwrap_or(usize::MAX);
        match sendfile(socket, file, Some(&mut offset), want) {
            Ok(0) => return Err(invalid("the shard file is shorter than it was")),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                if poll(
                    &mut fds,
                    PollTimeout::try_from(SEND_STALL).unwrap_or(PollTimeout::MAX),
                )? == 0
                {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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

impl Link {
    fn new(stream: TcpStream, cipher: ChaCha20Poly1305, out: u8) -> Self {
        Link {
            stream,
            cipher,
            out,
            sent: 0,
            received: 0,
            last_used: Instant::now(),
        }
    }

    /// Send `message` with `body`: a shard image, in parts that follow each other on the wire
    /// (usually its header, then its body, sent from where they lie), or nothing.
    async fn send<M: Serialize>(&mut self, message: &M, body: &[&[u8]]) -> io::Result<()> {
        let len: usize = body.iter().map(|part| part.len()).sum();
        let hash = ShardHeader::carried_hash_of_parts(body);
        let frame = self.seal(message, len as u64, hash)?;
        self.stream.write_all(&frame).await?;
        for part in body {
            self.stream.write_all(part).await?;
        }
        Ok(())
    }

    /// Send `message` with a held shard's file as its body, straight from the page cache to
    /// the socket (`sendfile`): the holder never copies the image into memory. On the
    /// blocking pool, since a cold file is read from the disk inside the call.
    async fn send_file<M: Serialize>(&mut self, message: &M, shard: HeldFile) -> io::Result<()> {
        let frame = self.seal(message, shard.len, Some(shard.hash))?;
        self.stream.write_all(&frame).await?;
        // The blocking thread owns a duplicate of the socket, so it stays valid even if this
        // task is dropped meanwhile.
        let socket = self.stream.as_fd().try_clone_to_owned()?;
        tokio::task::spawn_blocking(move || send_whole_file(&socket, &shard.file, shard.len))
            .await
            .map_err(io::Error::other)?
    }

    /// The length and sealed head of the next frame this end sends.
    fn seal<M: Serialize>(
        &mut self,
        message: &M,
        body_len: u64,
        hash: Option<[u8; 32]>,
    ) -> io::Result<Vec<u8>> {
        let head = Head {
            message,
            body: u32::try_from(body_len).map_err(|_| invalid("body too large"))?,
            hash,
        };
        let mut frame =
            postcard::to_extend(&head, vec![0u8; 4]).map_err(|e| invalid(e.to_string()))?;
        let sealed_len = frame.len() - 4 + TAG_LEN;
        if sealed_len > MAX_HEAD {
            return Err(invalid("frame head too large"));
        }
        frame[..4].copy_from_slice(&(sealed_len as u32).to_be_bytes());
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.out, self.sent), &[], frame[4..].as_mut().into())
            .map_err(|_| invalid("cannot seal the frame head"))?;
        frame.extend_from_slice(&tag);
        self.sent += 1;
        Ok(frame)
    }

    /// Receive one message and its body; anything that does not open, decode or match its
    /// head is `InvalidData`.
    async fn receive<M: DeserializeOwned>(&mut self) -> io::Result<(M, Vec<u8>)> {
        let head = self.receive_head::<M>().await?;
        let body = self.receive_body(&head).await?;
        Ok((head.message, body))
    }

    /// The next frame's head (its body is still to be read, or skipped).
    async fn receive_head<M: DeserializeOwned>(&mut self) -> io::Result<Head<M>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=MAX_HEAD).contains(&len) {
            return Err(invalid(format!("frame head of {len} bytes")));
        }
        let mut sealed = vec![0u8; len];
        self.stream.read_exact(&mut sealed).await?;
        let (plain, tag) = sealed.split_at_mut(len - TAG_LEN);
        let tag = Tag::try_from(&*tag).map_err(|_| invalid("bad tag"))?;
        self.cipher
            .decrypt_inout_detached(&nonce(self.out ^ 1, self.received), &[], plain.into(), &tag)
            .map_err(|_| invalid("frame head does not authenticate"))?;
        self.received += 1;
        let (head, rest): (Head<M>, _) =
            postcard::take_from_bytes(plain).map_err(|e| invalid(e.to_string()))?;
        if !rest.is_empty() {
            return Err(invalid("trailing bytes in the frame head"));
        }
        if head.body as usize > MAX_SHARD {
            return Err(invalid(format!("body of {} bytes", head.body)));
        }
        Ok(head)
    }

    /// The body that follows `head`.
    async fn receive_body<M>(&mut self, head: &Head<M>) -> io::Result<Vec<u8>> {
        let body_len = head.body as usize;
        // Read into spare capacity: no zero-fill of a buffer about to be overwritten.
        let mut body = Vec::with_capacity(body_len);
        while body.len() < body_len {
            let want = (body_len - body.len()) as u64;
            if (&mut self.stream).take(want).read_buf(&mut body).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if ShardHeader::carried_hash(&body) != head.hash {
            return Err(invalid("the body is not the shard the head names"));
        }
        self.last_used = Instant::now();
        Ok(body)
    }

    /// Read past the body that follows `head` without keeping it.
    async fn skip_body<M>(&mut self, head: &Head<M>) -> io::Result<()> {
        let want = u64::from(head.body);
        let skipped =
            tokio::io::copy(&mut (&mut self.stream).take(want), &mut tokio::io::sink()).await?;
        if skipped != want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Client side: one request and its answer. A store's image is `body` when the request's
    /// own is empty (see [`Bulk::request`]).
    async fn exchange(&mut self, request: &Request, body: &[&[u8]]) -> io::Result<Response> {
        match request {
            Request::Store {
                chunk,
                index,
                image,
            } => {
                let head = Request::Store {
                    chunk: *chunk,
                    index: *index,
                    image: Vec::new(),
                };
                if image.is_empty() {
                    self.send(&head, body).await?
                } else {
                    self.send(&head, &[image]).await?
                }
            }
            other => self.send(other, &[]).await?,
        }
        let (response, body) = self.receive::<Response>().await?;
        match response {
            Response::Shard { image } if image.is_empty() => Ok(Response::Shard { image: body }),
            other if body.is_empty() => Ok(other),
            _ => Err(invalid("a body came with an answer that has none")),
        }
    }
}

/// A session this client opened with a peer.
struct Session {
    ticket: [u8; 16],
    key: [u8; 32],
    addrs: Vec<SocketAddr>,
}

/// What this client knows of one peer's bulk links.
#[derive(Default)]
struct PeerLinks {
    session: Option<Arc<Session>>,
    idle: Vec<Link>,
    unavailable_until: Option<Instant>,
    /// Serialises session opening, so concurrent first requests open one session.
    opening: Arc<tokio::sync::Mutex<()>>,
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
    peers: Mutex<HashMap<PeerId, PeerLinks>>,
    inbound: Semaphore,
    sent: AtomicU64,
    served: AtomicU64,
    fallbacks: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            sent: AtomicU64::new(0),
            served: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
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
    }

    async fn accept(self: Arc<Self>, socket: TcpListener) {
        loop {
            match socket.accept().await {
                Ok((stream, from)) => {
                    let bulk = Arc::clone(&self);
                    tokio::spawn(async move {
                        if let Err(e) = bulk.serve(stream).await {
                            tracing::debug!(%from, error = %e, "bulk link closed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a bulk link");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Server: one link, from the handshake to its end.
    async fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let mut hello = [0u8; 8 + 16 + 16];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut hello))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if &hello[..8] != MAGIC {
            return Err(invalid("not a dfs bulk link"));
        }
        let ticket: [u8; 16] = hello[8..24].try_into().map_err(|_| invalid("ticket"))?;
        let client: [u8; 16] = hello[24..].try_into().map_err(|_| invalid("nonce"))?;
        let session = lock(&self.granted).get(&ticket).map(|g| (g.peer, g.key));
        let Some((peer, key)) = session else {
            stream.write_all(&[0]).await?;
            return Err(invalid("unknown ticket"));
        };
        let server: [u8; 16] = rand::random();
        let mut answer = [1u8; 17];
        answer[1..].copy_from_slice(&server);
        stream.write_all(&answer).await?;
        let mut link = Link::new(stream, link_key(&key, &client, &server), FROM_SERVER);
        loop {
            let head = match tokio::time::timeout(SERVER_IDLE, link.receive_head::<Request>()).await
            {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => self.bad_data(peer, r).await?,
            };
            // Bodies (and the images sent back) are held only with a permit, so at most
            // MAX_INBOUND of them are in memory at once, however many links peers open.
            let Ok(_permit) = self.inbound.try_acquire() else {
                link.skip_body(&head).await?;
                link.send(&Response::Refused(Refusal::Busy), &[]).await?;
                continue;
            };
            let body = self.bad_data(peer, link.receive_body(&head).await).await?;
            let request = match (head.message, body) {
                (
                    Request::Store {
                        chunk,
                        index,
                        image,
                    },
                    body,
                ) if image.is_empty() => Request::Store {
                    chunk,
                    index,
                    image: body,
                },
                (other, body) if body.is_empty() => other,
                _ => return Err(invalid("a body came with a request that has none")),
            };
            let sent = |bytes: u64| {
                crate::metrics::metrics()
                    .shard_sent_bytes
                    .with_label_values(&[&peer.to_string()])
                    .inc_by(bytes)
            };
            let image_only = Response::Shard { image: Vec::new() };
            match self.handle(peer, request).await {
                Answer::File(shard) => {
                    sent(shard.len);
                    link.send_file(&image_only, shard).await?
                }
                Answer::Message(Response::Shard { image }) => {
                    sent(image.len() as u64);
                    link.send(&image_only, &[&image]).await?
                }
                Answer::Message(other) => link.send(&other, &[]).await?,
            }
        }
    }

    /// A frame that does not authenticate or decode counts against the peer that sent it.
    async fn bad_data<T>(&self, peer: PeerId, received: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &received {
            if e.kind() == io::ErrorKind::InvalidData {
                tracing::warn!(%peer, error = %e, "bad frame on a bulk link");
                let _ = self.events.send(Command::BadData(peer)).await;
            }
        }
        received
    }

    /// Server: serve one request on the blocking pool (the caller holds an inbound permit),
    /// and tell the event loop about it. A trusting fetch is answered from the shard's file as
    /// it lies; everything else by [`HeldShards::serve`].
    async fn handle(&self, peer: PeerId, request: Request) -> Answer {
        let (answer, stored, invalid) = match request {
            Request::FetchTrusting { chunk, index } => {
                match Arc::clone(&self.held).open_trusting(chunk, index).await {
                    Ok(shard) => (Answer::File(shard), None, false),
                    Err(refusal) => (Answer::Message(refusal), None, false),
                }
            }
            request => {
                if let Request::Store { image, .. } = &request {
                    crate::metrics::metrics()
                        .shard_received_bytes
                        .with_label_values(&[&peer.to_string()])
                        .inc_by(image.len() as u64);
                }
                let (response, stored) = Arc::clone(&self.held).serve(peer, request).await;
                let invalid = response == Response::Refused(Refusal::Invalid);
                (Answer::Message(response), stored, invalid)
            }
        };
        let served = Command::BulkServed {
            peer,
            stored,
            invalid,
        };
        let _ = self.events.send(served).await;
        count(&self.served, "served");
        answer
    }

    /// Client: send `request` to `peer` over a bulk link.
    ///
    /// A [`Request::Store`] whose image is empty sends `body` as the image: the parts of a
    /// shard image, written to the socket from where they lie (no copy to join them).
    pub(super) async fn request(
        &self,
        net: &super::Network,
        peer: PeerId,
        request: &Request,
        body: &[&[u8]],
    ) -> Result<Response, Failure> {
        let result = self.try_request(net, peer, request, body).await;
        if matches!(result, Err(Failure::Unavailable)) {
            count(&self.fallbacks, "fallback");
        }
        result
    }

    async fn try_request(
        &self,
        net: &super::Network,
        peer: PeerId,
        request: &Request,
        body: &[&[u8]],
    ) -> Result<Response, Failure> {
        // An idle link may have been closed by a peer that restarted: each is tried once.
        while let Some(mut link) = self.take_idle(&peer)? {
            match link.exchange(request, body).await {
                Ok(response) => {
                    self.put_idle(peer, link);
                    count(&self.sent, "sent");
                    return Ok(response);
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "idle bulk link failed; trying a fresh one")
                }
            }
        }
        let mut link = match self.connect(net, peer).await {
            Ok(link) => link,
            Err(detail) => {
                tracing::debug!(%peer, %detail, "no bulk link; asking over libp2p");
                let mut peers = lock(&self.peers);
                let links = peers.entry(peer).or_default();
                links.unavailable_until = Some(Instant::now() + RETRY_AFTER);
                links.session = None;
                return Err(Failure::Unavailable);
            }
        };
        match link.exchange(request, body).await {
            Ok(response) => {
                self.put_idle(peer, link);
                count(&self.sent, "sent");
                Ok(response)
            }
            Err(e) => Err(Failure::Failed(NetError::Request {
                peer,
                detail: format!("bulk link: {e}"),
            })),
        }
    }

    /// An idle link to `peer`; `Err` when links to it failed lately.
    fn take_idle(&self, peer: &PeerId) -> Result<Option<Link>, Failure> {
        let mut peers = lock(&self.peers);
        let Some(links) = peers.get_mut(peer) else {
            return Ok(None);
        };
        if let Some(until) = links.unavailable_until {
            if Instant::now() < until {
                return Err(Failure::Unavailable);
            }
            links.unavailable_until = None;
        }
        while let Some(link) = links.idle.pop() {
            if link.last_used.elapsed() < CLIENT_IDLE {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    fn put_idle(&self, peer: PeerId, link: Link) {
        let mut peers = lock(&self.peers);
        let links = peers.entry(peer).or_default();
        if links.idle.len() < IDLE_PER_PEER {
            links.idle.push(link);
        }
    }

    /// A new link to `peer`, opening a session first when there is none (or the peer no
    /// longer knows ours).
    async fn connect(&self, net: &super::Network, peer: PeerId) -> Result<Link, String> {
        for _ in 0..2 {
            let session = self.session(net, peer).await?;
            match dial(&session).await {
                Ok(link) => return Ok(link),
                Err(Dial::UnknownTicket) => {
                    let mut peers = lock(&self.peers);
                    if let Some(links) = peers.get_mut(&peer) {
                        if links
                            .session
                            .as_ref()
                            .is_some_and(|s| Arc::ptr_eq(s, &session))
                        {
                            links.session = None;
                        }
                    }
                }
                Err(Dial::Failed(e)) => return Err(e),
            }
        }
        Err("the peer does not know the session it just granted".into())
    }

    async fn session(&self, net: &super::Network, peer: PeerId) -> Result<Arc<Session>, String> {
        let opening = {
            let mut peers = lock(&self.peers);
            let links = peers.entry(peer).or_default();
            if let Some(s) = &links.session {
                return Ok(Arc::clone(s));
            }
            Arc::clone(&links.opening)
        };
        let _one_at_a_time = opening.lock().await;
        if let Some(s) = lock(&self.peers).get(&peer).and_then(|l| l.session.clone()) {
            return Ok(s);
        }
        let open = Open {
            ticket: rand::random(),
            key: rand::random(),
        };
        let (ticket, key) = (open.ticket, open.key);
        let opened = net.open_bulk(peer, open).await.map_err(|e| e.to_string())?;
        if opened.addrs.is_empty() {
            return Err("the peer has no bulk listener".into());
        }
        let session = Arc::new(Session {
            ticket,
            key,
            addrs: opened.addrs,
        });
        lock(&self.peers).entry(peer).or_default().session = Some(Arc::clone(&session));
        Ok(session)
    }
}

enum Dial {
    UnknownTicket,
    Failed(String),
}

/// Connect to the first of the session's addresses that answers, and shake hands.
async fn dial(session: &Session) -> Result<Link, Dial> {
    let mut errors = Vec::new();
    for addr in &session.addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake(*addr, session)).await {
            Ok(Ok(link)) => return Ok(link),
            Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Dial::UnknownTicket)
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: timed out")),
        }
    }
    Err(Dial::Failed(errors.join("; ")))
}

async fn handshake(addr: SocketAddr, session: &Session) -> io::Result<Link> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let client: [u8; 16] = rand::random();
    let mut hello = Vec::with_capacity(40);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&session.ticket);
    hello.extend_from_slice(&client);
    stream.write_all(&hello).await?;
    let mut status = [0u8; 1];
    stream.read_exact(&mut status).await?;
    if status[0] != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer does not know the session",
        ));
    }
    let mut server = [0u8; 16];
    stream.read_exact(&mut server).await?;
    Ok(Link::new(
        stream,
        link_key(&session.key, &client, &server),
        FROM_CLIENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_placement::{ChunkId, Layout};

    /// Both ends of a link on 127.0.0.1, keyed alike.
    async fn link_pair() -> (Link, Link) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let key = |_| link_key(&[7; 32], &[1; 16], &[2; 16]);
        (
            Link::new(client.unwrap(), key(()), FROM_CLIENT),
            Link::new(server.unwrap().0, key(()), FROM_SERVER),
        )
    }

    fn image(fill: u8) -> (ChunkId, Vec<u8>) {
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let header = ShardHeader {
            chunk: ChunkId([fill; 32]),
            layout,
            index: 1,
            chunk_len: 4000,
        };
        let body = vec![fill; layout.shard_len(4000)];
        (header.chunk, header.encode(&body))
    }

    fn store_head(chunk: ChunkId) -> Request {
        Request::Store {
            chunk,
            index: 1,
            image: Vec::new(),
        }
    }

    /// The sealed head of a store of `image` (its body still to be written).
    fn store_frame(link: &mut Link, chunk: ChunkId, image: &[u8]) -> Vec<u8> {
        let hash = ShardHeader::carried_hash(image);
        link.seal(&store_head(chunk), image.len() as u64, hash)
            .unwrap()
    }

    async fn write_raw(link: &mut Link, bytes: &[u8]) {
        link.stream.write_all(bytes).await.unwrap();
    }

    fn is_invalid<T>(r: io::Result<T>) -> bool {
        matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidData)
    }

    #[tokio::test]
    async fn frames_round_trip_with_and_without_a_body() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image) = image(3);
        client.send(&store_head(chunk), &[&image]).await.unwrap();
        let (request, body) = server.receive::<Request>().await.unwrap();
        assert_eq!(request, store_head(chunk));
        assert_eq!(body, image);
        server.send(&Response::Stored, &[]).await.unwrap();
        let (response, body) = client.receive::<Response>().await.unwrap();
        assert_eq!((response, body.len()), (Response::Stored, 0));
        // And again: the counters move on together.
        client
            .send(&Request::Fetch { chunk, index: 1 }, &[])
            .await
            .unwrap();
        assert_eq!(
            server.receive::<Request>().await.unwrap().0,
            Request::Fetch { chunk, index: 1 }
        );
    }

    /// A held shard sent from its file: larger than the socket buffers, so the sender must
    /// wait for room between calls, and a file cut short on the way fails the send.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_file_is_sent_as_it_lies() {
        let (mut client, mut server) = link_pair().await;
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let len = 16 << 20;
        let header = ShardHeader {
            chunk: ChunkId([7; 32]),
            layout,
            index: 2,
            chunk_len: len,
        };
        let body: Vec<u8> = (0..layout.shard_len(len as usize))
            .map(|i| i as u8)
            .collect();
        let image = header.encode(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        std::fs::write(&path, &image).unwrap();
        let open = || HeldFile {
            file: std::fs::File::open(&path).unwrap(),
            len: image.len() as u64,
            hash: ShardHeader::carried_hash(&image).unwrap(),
        };
        let shard = open();
        let sender = tokio::spawn(async move {
            server
                .send_file(&Response::Shard { image: Vec::new() }, shard)
                .await
                .unwrap();
            server
        });
        let (response, received) = client.receive::<Response>().await.unwrap();
        assert_eq!(response, Response::Shard { image: Vec::new() });
        assert!(received == image, "the body is the file's bytes");
        let mut server = sender.await.unwrap();
        // The file shrank after it was opened (the frame promised more): the send fails.
        let shard = open();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let failed = server
            .send_file(&Response::Shard { image: Vec::new() }, shard)
            .await;
        assert!(
            matches!(&failed, Err(e) if e.kind() == io::ErrorKind::InvalidData),
            "{failed:?}"
        );
    }

    /// A reader that hung up makes the send fail, and does not kill the process: sendfile
    /// raises SIGPIPE, whose default action the dfs binary restores (here too, for the test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_hung_up_fails_the_send_and_kills_nothing() {
        use nix::sys::signal::{signal, SigHandler};
        // SAFETY: SIG_DFL installs no handler code; the Rust default (ignore) is put back.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
        let (client, mut server) = link_pair().await;
        drop(client);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let (_, image) = image(9);
        let image = image.repeat(1024);
        std::fs::write(&path, &image).unwrap();
        let mut failed = None;
        // The first sends may still land in the socket buffer before the reset arrives.
        for _ in 0..20 {
            let shard = HeldFile {
                file: std::fs::File::open(&path).unwrap(),
                len: image.len() as u64,
                hash: [0; 32],
            };
            if let Err(e) = server.send_file(&Response::Stored, shard).await {
                failed = Some(e);
                break;
            }
        }
        // SAFETY: as above.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.unwrap();
        assert!(failed.is_some(), "sending to a closed link never failed");
    }

    #[tokio::test]
    async fn a_skipped_body_leaves_the_link_in_step() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image) = image(5);
        client.send(&store_head(chunk), &[&image]).await.unwrap();
        client
            .send(&Request::Check { chunk, index: 1 }, &[])
            .await
            .unwrap();
        let head = server.receive_head::<Request>().await.unwrap();
        assert_eq!(head.body as usize, image.len());
        server.skip_body(&head).await.unwrap();
        assert_eq!(
            server.receive::<Request>().await.unwrap(),
            (Request::Check { chunk, index: 1 }, Vec::new())
        );
    }

    #[tokio::test]
    async fn a_tampered_head_is_refused() {
        let (mut client, mut server) = link_pair().await;
        let mut frame = client
            .seal(
                &Request::Check {
                    chunk: ChunkId([1; 32]),
                    index: 0,
                },
                0,
                None,
            )
            .unwrap();
        let last = frame.len() - 1;
        frame[last - 20] ^= 1;
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn a_body_swapped_in_flight_is_refused() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image_a) = image(3);
        let (_, image_b) = image(4);
        assert_eq!(image_a.len(), image_b.len());
        // Another shard's bytes behind the head: its carried hash differs.
        let frame = store_frame(&mut client, chunk, &image_a);
        write_raw(&mut client, &frame).await;
        write_raw(&mut client, &image_b).await;
        assert!(is_invalid(server.receive::<Request>().await));

        // The right header with a changed byte in the body passes the link, and the shard
        // check (which the holder makes before storing) refuses it.
        let (mut client, mut server) = link_pair().await;
        let mut changed = image_a.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        let frame = store_frame(&mut client, chunk, &image_a);
        write_raw(&mut client, &frame).await;
        write_raw(&mut client, &changed).await;
        let (_, body) = server.receive::<Request>().await.unwrap();
        assert!(ShardHeader::decode_expected(&body, chunk, 1).is_err());
    }

    #[tokio::test]
    async fn replayed_and_reflected_frames_are_refused() {
        let (mut client, mut server) = link_pair().await;
        let request = Request::Delete {
            chunk: ChunkId([2; 32]),
            index: 0,
        };
        let frame = client.seal(&request, 0, None).unwrap();
        write_raw(&mut client, &frame).await;
        assert_eq!(server.receive::<Request>().await.unwrap().0, request);
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));

        // A frame the server sealed, sent back to it: wrong direction.
        let (mut client, mut server) = link_pair().await;
        let frame = server.seal(&request, 0, None).unwrap();
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn oversized_heads_and_bodies_are_refused_before_buffering() {
        let (mut client, mut server) = link_pair().await;
        write_raw(&mut client, &((MAX_HEAD + 1) as u32).to_be_bytes()).await;
        assert!(is_invalid(server.receive::<Request>().await));

        let (mut client, mut server) = link_pair().await;
        let head = Head {
            message: Request::Check {
                chunk: ChunkId([1; 32]),
                index: 0,
            },
            body: (MAX_SHARD + 1) as u32,
            hash: None,
        };
        let mut plain = postcard::to_allocvec(&head).unwrap();
        let tag = client
            .cipher
            .encrypt_inout_detached(&nonce(FROM_CLIENT, 0), &[], plain.as_mut_slice().into())
            .unwrap();
        plain.extend_from_slice(&tag);
        let mut frame = ((plain.len()) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&plain);
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn links_keyed_differently_do_not_talk() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = Link::new(
            client.unwrap(),
            link_key(&[7; 32], &[1; 16], &[2; 16]),
            FROM_CLIENT,
        );
        let mut server = Link::new(
            server.unwrap().0,
            link_key(&[7; 32], &[1; 16], &[3; 16]),
            FROM_SERVER,
        );
        client.send(&Response::Stored, &[]).await.unwrap();
        assert!(is_invalid(server.receive::<Response>().await));
    }
}
