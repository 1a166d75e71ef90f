//! The op-log side of the event loop: anti-entropy pulls of followed volumes, answers to
//! other peers' pulls, and ops that arrive by gossip. Disk work runs on the blocking pool and
//! comes back as a [`SyncDone`].

use std::sync::Arc;

use libp2p::request_response::{self, ResponseChannel};
use libp2p::PeerId;

use super::Node;
use crate::net::sync::{self, SyncRequest, SyncResponse};

/// Op-log work finished on the blocking pool.
pub(super) enum SyncDone {
    /// Answer a pull.
    Served {
        peer: PeerId,
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    /// Ops are missing here: pull `volume` from `peer` (again).
    Pull {
        peer: PeerId,
        volume: crate::oplog::VolumeId,
    },
}

impl Node {
    /// Pull `volume` from `peer` unless a pull is in flight or the peer is not a member. While
    /// this peer's own join waits to be taken, it asks every peer, with the join attached.
    pub(super) fn pull(&mut self, peer: PeerId, volume: crate::oplog::VolumeId) {
        if !self.syncing.may_pull(peer, volume) {
            return;
        }
        let join = crate::volumes::pending_join(&self.hub, &volume);
        let member = sync::author_of(&peer)
            .is_some_and(|a| self.hub.oplog().may_sync(&volume, &a).unwrap_or(false));
        if !member && join.is_none() {
            return;
        }
        let heads = match self.hub.oplog().heads(&volume) {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(%volume, error = %e, "cannot read the op log's heads");
                return;
            }
        };
        let request = SyncRequest::Pull {
            volume,
            heads,
            join: join.map(|op| serde_bytes::ByteBuf::from(op.to_bytes())),
        };
        let id = self.swarm.behaviour_mut().ops.send_request(&peer, request);
        self.syncing.started(id, peer, volume);
    }

    /// Anti-entropy: pull every followed volume from every connected peer that is a member.
    pub(super) fn pull_all(&mut self) {
        let volumes = self.syncing.volumes();
        if volumes.is_empty() {
            return;
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            for volume in &volumes {
                self.pull(peer, *volume);
            }
        }
    }

    pub(super) fn sync_done(&mut self, done: SyncDone) {
        match done {
            SyncDone::Served {
                peer,
                channel,
                response,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .ops
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "puller left before the answer");
                }
            }
            SyncDone::Pull { peer, volume } => self.pull(peer, volume),
        }
    }

    /// Ops of a followed volume from gossip: taken on the blocking pool; a gap behind one
    /// means gossip lost something, so the sender is pulled from at once.
    pub(super) fn gossiped_op(
        &mut self,
        volume: crate::oplog::VolumeId,
        from: PeerId,
        source: PeerId,
        data: Vec<u8>,
    ) {
        let hub = Arc::clone(&self.hub);
        let done = self.sync_tx.clone();
        let source = sync::author_of(&source);
        tokio::task::spawn_blocking(move || match hub.ingest_gossiped(&volume, &data, source) {
            Ok((op, appended)) => {
                if appended == crate::oplog::Appended::New {
                    crate::metrics::metrics()
                        .ops_received
                        .with_label_values(&["gossip"])
                        .inc();
                }
                if sync::gap_behind(&hub, &op) {
                    let _ = done.blocking_send(SyncDone::Pull { peer: from, volume });
                }
            }
            Err(e) => tracing::warn!(peer = %from, %volume, error = %e, "gossiped op refused"),
        });
    }

    pub(super) fn ops_event(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
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
                let hub = Arc::clone(&self.hub);
                let done = self.sync_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let response = hub.serve(&peer, &request);
                    let _ = done.blocking_send(SyncDone::Served {
                        peer,
                        channel,
                        response,
                    });
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
                let Some((_, volume)) = self.syncing.finished(&request_id) else {
                    return;
                };
                let hub = Arc::clone(&self.hub);
                let done = self.sync_tx.clone();
                tokio::task::spawn_blocking(move || {
                    if hub.ingest_page(&peer, &volume, response) {
                        let _ = done.blocking_send(SyncDone::Pull { peer, volume });
                    }
                });
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.syncing.finished(&request_id);
                tracing::debug!(%peer, error = %error, "pull failed");
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "bad inbound pull");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
