//! The asking end of bulk links: a session opened with each peer over libp2p, links dialled
//! with it and kept idle per peer, and one request at a time on each.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::link::{self, link_key, Link};
use super::server;
use super::{
    count, lock, Bulk, Failure, Open, CLIENT_IDLE, CONNECT_TIMEOUT, FROM_CLIENT, IDLE_PER_PEER,
    MAGIC, RETRY_AFTER,
};
use crate::net::wire::{Request, Response};
use crate::net::{Command, NetError, Network};

/// A session this client opened with a peer.
struct Session {
    ticket: [u8; 16],
    key: [u8; 32],
    addrs: Vec<SocketAddr>,
}

/// What this client knows of one peer's bulk links.
#[derive(Default)]
pub(super) struct PeerLinks {
    session: Option<Arc<Session>>,
    idle: Vec<Link>,
    unavailable_until: Option<Instant>,
    /// Serialises session opening, so concurrent first requests open one session.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl Bulk {
    /// Client: send `request` to `peer` over a bulk link.
    ///
    /// A [`Request::Store`] whose image is empty sends `body` as the image: the parts of a
    /// shard image, written to the socket from where they lie (no copy to join them).
    pub(in crate::net) async fn request(
        &self,
        net: &Network,
        peer: PeerId,
        request: &Request,
        body: &[&[u8]],
    ) -> Result<Response, Failure> {
        // An idle link may have been closed by a peer that restarted: each is tried once.
        while let Some(mut link) = self.take_idle(&peer)? {
            match link.exchange(request, body).await {
                Ok(response) => {
                    self.answered_on(peer, link);
                    return Ok(response);
                }
                Err(e) => {
                    self.score(peer, &e);
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
                return Err(self.unavailable());
            }
        };
        match link.exchange(request, body).await {
            Ok(response) => {
                self.answered_on(peer, link);
                Ok(response)
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.score(peer, &e);
                Err(Failure::Failed(NetError::Request {
                    peer,
                    detail: format!("bulk link: {e}"),
                }))
            }
            Err(e) => {
                // The link broke, stalled or carried a body that changed in flight: ask again
                // over libp2p (a store of the same image twice is answered `Stored`).
                if link::is_changed_in_flight(&e) {
                    tracing::warn!(%peer, "a bulk answer changed in flight; asking over libp2p");
                } else {
                    tracing::debug!(%peer, error = %e, "bulk link failed; asking over libp2p");
                }
                Err(self.unavailable())
            }
        }
    }

    /// An answer that did not authenticate, decode or match its head (a body where none
    /// belongs, one that is not the shard named) counts against the peer that sent it, as on
    /// the serving end.
    fn score(&self, peer: PeerId, e: &io::Error) {
        if e.kind() == io::ErrorKind::InvalidData {
            tracing::warn!(%peer, error = %e, "bad answer on a bulk link");
            let _ = self.events.try_send(Command::BadData(peer));
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
                return Err(self.unavailable());
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

    /// No link to `peer` now: the request goes over libp2p (counted as a fallback).
    fn unavailable(&self) -> Failure {
        count(&self.fallbacks, "fallback");
        Failure::Unavailable
    }

    /// A request to `peer` was answered on `link`: count it and keep the link for the next.
    fn answered_on(&self, peer: PeerId, link: Link) {
        count(&self.sent, "sent");
        let mut peers = lock(&self.peers);
        let links = peers.entry(peer).or_default();
        if links.idle.len() < IDLE_PER_PEER {
            links.idle.push(link);
        }
    }

    /// A new link to `peer`, opening a session first when there is none (or the peer no
    /// longer knows ours).
    async fn connect(&self, net: &Network, peer: PeerId) -> Result<Link, String> {
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

    async fn session(&self, net: &Network, peer: PeerId) -> Result<Arc<Session>, String> {
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
    match status[0] {
        server::STATUS_OPEN => {}
        server::STATUS_TOO_MANY => {
            return Err(io::Error::other("the peer has too many of our links open"))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the peer does not know the session",
            ))
        }
    }
    let mut server = [0u8; 16];
    stream.read_exact(&mut server).await?;
    Ok(Link::new(
        stream,
        link_key(&session.key, &client, &server),
        FROM_CLIENT,
    ))
}

/// For the hostile-peer tests only (`dfs-hostile stall`): open a bulk link to `peer` and send
/// the head of a store whose body of `body_len` bytes never follows, as a peer that means to
/// hold the holder's permits would; the link is returned to be kept open. An honest client
/// never does this.
#[doc(hidden)]
pub async fn open_stalled_store(
    net: &Network,
    peer: PeerId,
    body_len: u64,
) -> Result<TcpStream, String> {
    let open = Open {
        ticket: rand::random(),
        key: rand::random(),
    };
    let session = Session {
        ticket: open.ticket,
        key: open.key,
        addrs: net
            .open_bulk(peer, open)
            .await
            .map_err(|e| e.to_string())?
            .addrs,
    };
    let mut link = match dial(&session).await {
        Ok(link) => link,
        Err(Dial::UnknownTicket) => return Err("the peer does not know the session".into()),
        Err(Dial::Failed(e)) => return Err(e),
    };
    let head = Request::Store {
        chunk: dfs_placement::ChunkId(rand::random()),
        index: 0,
        image: Vec::new(),
    };
    let frame = link
        .seal(&head, body_len, Some(rand::random()))
        .map_err(|e| e.to_string())?;
    let mut stream = link.into_stream();
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    Ok(stream)
}
