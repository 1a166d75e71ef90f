//! The shard side of the event loop: inbound shard requests (stores, fetches, checks, deletes)
//! admitted up to [`MAX_INBOUND`] at once and served off the loop, their answers, outbound
//! answers handed to their callers, and bulk-session grants and answers.

use std::sync::Arc;
use std::time::Instant;

use libp2p::request_response::{self, ResponseChannel};
use libp2p::PeerId;

use super::{reply_to, Node, MAX_INBOUND};
use crate::net::bulk;
use crate::net::wire::{Refusal, Request, Response};

/// An inbound request served on the blocking pool.
pub(super) struct Served {
    pub(super) peer: PeerId,
    /// The chunk a successful store was for: this peer becomes a provider of it in the DHT.
    pub(super) stored: Option<dfs_placement::ChunkId>,
    pub(super) channel: ResponseChannel<Response>,
    pub(super) response: Response,
}

impl Node {
    pub(super) fn respond(&mut self, served: Served) {
        self.inbound = self.inbound.saturating_sub(1);
        if let Response::Shard { image } = &served.response {
            crate::metrics::metrics()
                .shard_sent_bytes
                .with_label_values(&[&served.peer.to_string()])
                .inc_by(image.len() as u64);
        }
        if let Some(chunk) = served.stored {
            self.announcer.push(chunk);
        }
        if served.response.blames_asker() {
            self.table.bad_data(served.peer, Instant::now());
        }
        if self
            .swarm
            .behaviour_mut()
            .shards
            .send_response(served.channel, served.response)
            .is_err()
        {
            tracing::debug!(peer = %served.peer, "requester left before the response");
        }
    }

    pub(super) fn bulk_event(&mut self, event: request_response::Event<bulk::Open, bulk::Opened>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let opened = match &self.bulk {
                    Some(bulk) => bulk.grant(peer, request, &self.listen),
                    None => bulk::Opened { addrs: Vec::new() },
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .bulk
                    .send_response(channel, opened);
            }
            Event::Message {
                connection_id,
                message:
                    Message::Response {
                        request_id,
                        mut response,
                    },
                ..
            } => {
                // Only where the libp2p connection goes: the peer names its listeners, and a
                // liar could name anyone's.
                let ip = self.connection_ips.get(&connection_id).copied();
                response.addrs.retain(|a| Some(a.ip()) == ip);
                reply_to(&mut self.opening, request_id, Ok(response))
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => reply_to(&mut self.opening, request_id, Err(error)),
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "bad bulk session request");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn shard_event(
        &mut self,
        event: request_response::Event<Request, Response>,
        now: Instant,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.table.seen(peer, now);
                self.last_inbound = Some(now);
                if self.inbound >= MAX_INBOUND {
                    let busy = Response::Refused(Refusal::Busy);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .shards
                        .send_response(channel, busy);
                    return;
                }
                self.inbound += 1;
                if let Request::Store { image, .. } = &request {
                    crate::metrics::metrics()
                        .shard_received_bytes
                        .with_label_values(&[&peer.to_string()])
                        .inc_by(image.len() as u64);
                }
                let held = Arc::clone(&self.held);
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    let (response, stored) = held.serve(peer, request).await;
                    let _ = done
                        .send(Served {
                            peer,
                            stored,
                            channel,
                            response,
                        })
                        .await;
                });
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let change = self.table.succeeded(peer, 1, now);
                self.log(change);
                reply_to(&mut self.pending, request_id, Ok(response));
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let change = self.table.failed(peer, now);
                self.log(change);
                reply_to(&mut self.pending, request_id, Err(error));
            }
            Event::InboundFailure { peer, error, .. } => {
                // Includes messages that fail to decode: a malformed, oversized or
                // wrong-version frame. The stream is dropped; the peer goes on serving.
                tracing::warn!(%peer, error = %error, "bad inbound shard request");
                if matches!(&error, request_response::InboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
                {
                    self.table.bad_data(peer, now);
                }
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
