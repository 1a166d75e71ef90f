//! The answering end of bulk links: accepting them, checking their tickets, and serving
//! requests from the held shards (a trusting fetch straight from the shard's file, on one
//! blocking-pool task).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use dfs_placement::ChunkId;
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::link::{link_key, Link};
use super::{
    count, invalid, lock, take_slot, transfer_deadline, Bulk, FROM_SERVER, HANDSHAKE_TIMEOUT,
    INBOUND_PER_PEER, LINKS_PER_PEER, MAGIC, MAX_LINKS, SERVER_IDLE,
};
use crate::net::wire::{Refusal, Request, Response};
use crate::net::Command;

/// Handshake answers: the link is open (followed by the server's nonce), the ticket is unknown,
/// or the peer has [`LINKS_PER_PEER`] links open already.
pub(super) const STATUS_OPEN: u8 = 1;
pub(super) const STATUS_UNKNOWN_TICKET: u8 = 0;
pub(super) const STATUS_TOO_MANY: u8 = 2;

/// `work`, or `TimedOut` once `deadline` has passed.
async fn within<T>(
    deadline: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "a bulk transfer missed its deadline",
        )
    })?
}

impl Bulk {
    pub(super) async fn accept(self: Arc<Self>, socket: TcpListener) {
        loop {
            match socket.accept().await {
                Ok((stream, from)) => {
                    // Anyone can connect: only so many may be shaking hands at once.
                    let Ok(handshake) = Arc::clone(&self.handshakes).try_acquire_owned() else {
                        tracing::debug!(%from, "too many bulk handshakes; dropped one");
                        continue;
                    };
                    let bulk = Arc::clone(&self);
                    tokio::spawn(async move {
                        if let Err(e) = bulk.serve(stream, handshake).await {
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

    /// Server: one link, from the handshake to its end. Every wait has a deadline: the
    /// handshake, the next head (idle), a body, an answer; a link that misses one is dropped
    /// with whatever it held.
    async fn serve(
        &self,
        mut stream: TcpStream,
        handshake: tokio::sync::OwnedSemaphorePermit,
    ) -> io::Result<()> {
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
            stream.write_all(&[STATUS_UNKNOWN_TICKET]).await?;
            return Err(invalid("unknown ticket"));
        };
        let Some(_link) = take_slot(&self.links_by_peer, peer, LINKS_PER_PEER, Some(MAX_LINKS))
        else {
            tracing::warn!(%peer, "too many bulk links; refused one");
            stream.write_all(&[STATUS_TOO_MANY]).await?;
            return Err(io::Error::other("too many links"));
        };
        let server: [u8; 16] = rand::random();
        let mut answer = [STATUS_OPEN; 17];
        answer[1..].copy_from_slice(&server);
        stream.write_all(&answer).await?;
        drop(handshake);
        let mut link = Link::new(stream, link_key(&key, &client, &server), FROM_SERVER);
        // This link's byte counters, looked up once rather than per request (a label is the
        // peer id in base58).
        let label = peer.to_string();
        let metrics = crate::metrics::metrics();
        let sent_bytes = metrics.shard_sent_bytes.with_label_values(&[&label]);
        let received_bytes = metrics.shard_received_bytes.with_label_values(&[&label]);
        loop {
            let head = match tokio::time::timeout(SERVER_IDLE, link.receive_head::<Request>()).await
            {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => self.bad_data(peer, r).await?,
            };
            // Bodies (and the images sent back) are held only with a permit, so at most
            // MAX_INBOUND of them are in memory at once, however many links peers open, and
            // one peer holds at most INBOUND_PER_PEER of them.
            let deadline = transfer_deadline(head.body as usize);
            let slot = take_slot(&self.inbound_by_peer, peer, INBOUND_PER_PEER, None);
            let permit = slot.as_ref().and_then(|_| self.inbound.try_acquire().ok());
            if permit.is_none() {
                within(deadline, link.skip_body(&head)).await?;
                within(deadline, link.send(&Response::Refused(Refusal::Busy), &[])).await?;
                continue;
            }
            let body = self
                .bad_data(peer, within(deadline, link.receive_body(&head)).await)
                .await?;
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
                _ => {
                    let wrong = invalid("a body came with a request that has none");
                    return self.bad_data(peer, Err(wrong)).await;
                }
            };
            if let Request::Store { image, .. } = &request {
                received_bytes.inc_by(image.len() as u64);
            }
            let image_only = Response::Shard { image: Vec::new() };
            if let Request::FetchTrusting { chunk, index } = request {
                let held = Arc::clone(&self.held);
                let open = move || held.open_trusting(chunk, index);
                match link.send_held(image_only, open).await? {
                    Ok(len) => sent_bytes.inc_by(len),
                    Err(answer) => link.send(&answer, &[]).await?,
                }
                self.served(peer, None, false).await;
                continue;
            }
            match self.handle(peer, request).await {
                Response::Shard { image } => {
                    sent_bytes.inc_by(image.len() as u64);
                    let deadline = transfer_deadline(image.len());
                    within(deadline, link.send(&image_only, &[&image])).await?
                }
                other => within(deadline, link.send(&other, &[])).await?,
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

    /// Server: serve one request other than a trusting fetch on the blocking pool (the caller
    /// holds an inbound permit) with [`HeldShards::serve`], and tell the event loop about it.
    async fn handle(&self, peer: PeerId, request: Request) -> Response {
        let (response, stored) = Arc::clone(&self.held).serve(peer, request).await;
        // An image that does not verify may have been changed in flight (a bulk body is bound
        // to its authenticated head by the hash in its header, not by a MAC of its own): the
        // asker is not blamed for it, and stores it again over libp2p.
        let invalid = response.blames_asker() && response != Response::Refused(Refusal::Invalid);
        self.served(peer, stored, invalid).await;
        response
    }

    /// Count a served request and tell the event loop: a plain success at most every
    /// `reports::REPORT_EVERY` per peer, a stored chunk or an invalid request every time.
    async fn served(&self, peer: PeerId, stored: Option<ChunkId>, invalid: bool) {
        let report = stored.is_some()
            || invalid
            || self
                .served_reports
                .success(peer, std::time::Instant::now())
                .is_some();
        if report {
            let served = Command::BulkServed {
                peer,
                stored,
                invalid,
            };
            let _ = self.events.send(served).await;
        }
        count(&self.served, "served");
    }
}
