//! The op-log sync protocol (`/dfs/ops/1`): how a member of a volume pulls the operations it
//! lacks from another member (anti-entropy), and the gossip topic new operations are pushed on.
//!
//! Push: a new op is published on the volume's gossipsub topic ([`topic_of`]) as its
//! [`SignedOp::to_bytes`] encoding. Gossip may drop or reorder, so a member also pulls: it sends
//! its *heads* (per author, the highest sequence number up to which it holds every op) and the
//! other side answers with what it holds beyond them, a page at a time ([`PULL_PAGE`]). Heads
//! are contiguous, so an op that gossip lost is always asked for again.
//!
//! Only members pull: a peer's identity key is its author key, so the requester's peer id
//! says who asks, and a peer that is neither a member of the volume nor signs for a member user is refused. Payloads are
//! encrypted by the fs layer under the volume's secret, so even ops relayed by gossip to a
//! non-member say nothing about names or content.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::gossipsub::{IdentTopic, TopicHash};
use libp2p::request_response::OutboundRequestId;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::wire::FramedCodec;
use crate::oplog::{
    physical_now_ms, Appended, AuthorId, ClockError, Hlc, HlcClock, OpLog, OpLogError, SignedOp,
    VolumeId,
};
use crate::Repo;

/// The protocol name negotiated on the stream.
pub const PROTOCOL: &str = "/dfs/ops/1";
/// Ops sent in one answer at most; the asker pulls again while `more` is set.
pub const PULL_PAGE: usize = 256;
/// Encoded bytes of ops in one answer at most (a page stops early to stay under it).
pub const PAGE_BYTES: usize = 2 << 20;
/// The largest frame of this protocol: a page of ops and the message around it.
pub const MAX_FRAME: usize = PAGE_BYTES + crate::oplog::MAX_ENCODED + (64 << 10);
/// New ops a follower of a volume may fall behind by before it must rescan the log.
const HUB_DEPTH: usize = 1024;

/// The gossipsub topic of a volume's ops.
pub fn topic_of(volume: &VolumeId) -> String {
    format!("dfs/ops/1/{volume}")
}

/// The author key of a peer: its Ed25519 identity key, which is inlined in its peer id.
pub fn author_of(peer: &PeerId) -> Option<AuthorId> {
    let key = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    Some(AuthorId(key.to_bytes()))
}

/// What one member asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Send the ops of `volume` beyond these heads (authors missing from the map: all).
    Pull {
        volume: VolumeId,
        heads: BTreeMap<AuthorId, u64>,
        /// The asker's join op while it is not a member yet: taken first, so a new member can
        /// pull from the member that invited it.
        join: Option<serde_bytes::ByteBuf>,
    },
}

/// The answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Encoded [`crate::oplog::SignedOp`]s, at most [`PULL_PAGE`]; `more` if there are others.
    Ops {
        ops: Vec<serde_bytes::ByteBuf>,
        more: bool,
    },
    Refused(SyncRefusal),
}

/// Why a pull was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SyncRefusal {
    #[error("this peer does not follow that volume")]
    UnknownVolume,
    #[error("the asking peer is not a member of the volume")]
    NotMember,
    #[error("the peer failed to read its op log")]
    Internal,
}

/// The request-response codec for [`PROTOCOL`]: a pull is a volume id and one head per
/// author (small); an answer is a page of ops.
pub type SyncCodec = FramedCodec<SyncRequest, SyncResponse>;

/// The codec with this protocol's limits.
/// Whether `payload` is a join (plain or attested): judged by the members that take it.
fn is_join(payload: &[u8]) -> bool {
    matches!(
        crate::oplog::Payload::parse(payload),
        Ok(crate::oplog::Payload::Control(control)) if control.join().is_some()
    )
}

pub fn codec() -> SyncCodec {
    FramedCodec::new(1 << 20, MAX_FRAME)
}

/// The op log of this peer, its clock, and the stream of new ops of each followed volume.
///
/// One per process: the swarm appends what peers send, the fs layer appends its own ops
/// ([`OpsHub::commit`]) and follows every new op ([`OpsHub::follow`]).
pub struct OpsHub {
    repo: Arc<Repo>,
    oplog: OpLog<Arc<Repo>>,
    key: libp2p::identity::ed25519::Keypair,
    author: AuthorId,
    /// The users logged in on this peer: ops made for one of their uids are co-signed.
    sessions: Arc<crate::users::Sessions>,
    /// Held across clock tick, seq choice, signing and append, so two local ops never take
    /// the same seq.
    clock: Mutex<HlcClock>,
    followers: Mutex<HashMap<VolumeId, broadcast::Sender<SignedOp>>>,
    /// Own ops were appended without an fsync since the last [`OpsHub::sync`].
    unsynced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for OpsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsHub")
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

/// On whose behalf this peer signs an op ([`OpsHub::acting`]): a logged-in user, who
/// co-signs, or nobody (the peer alone).
#[derive(Debug, Clone, Default)]
pub struct Acting(Option<Arc<crate::users::UserKey>>);

impl Acting {
    /// The peer alone.
    pub const PEER: Acting = Acting(None);

    /// The user's name and key, if a user acts.
    pub fn user(&self) -> Option<&crate::users::UserKey> {
        self.0.as_deref()
    }
}

/// Why an op from a peer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("undecodable op: {0}")]
    Decode(#[from] crate::oplog::OpError),
    #[error("op for volume {got} arrived as one of volume {expected}")]
    WrongVolume { expected: VolumeId, got: VolumeId },
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error(transparent)]
    Log(#[from] OpLogError),
    #[error("op-log task failed: {0}")]
    Task(String),
    #[error("a join gossiped by a peer that is no member (joins go from the joiner to a member)")]
    UnvettedJoin,
}

impl IngestError {
    /// Whether the op broke the volume's rules (its signer is not a member, or the op is not
    /// allowed), as opposed to failing for a reason of this peer's own.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            IngestError::Log(
                OpLogError::NotMember { .. }
                    | OpLogError::Refused { .. }
                    | OpLogError::Rejected { .. }
            )
        )
    }

    /// Why the volume's rules reject the op, where they do by its principal's role.
    pub fn rejection(&self) -> Option<crate::oplog::Rejection> {
        match self {
            IngestError::Log(OpLogError::Rejected { reason, .. }) => Some(*reason),
            _ => None,
        }
    }
}

impl OpsHub {
    pub fn new(repo: Arc<Repo>, key: libp2p::identity::ed25519::Keypair) -> Self {
        let author = AuthorId(key.public().to_bytes());
        OpsHub {
            oplog: OpLog::new(repo.clone()),
            repo,
            key,
            author,
            sessions: Arc::default(),
            clock: Mutex::new(HlcClock::new()),
            followers: Mutex::new(HashMap::new()),
            unsynced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn oplog(&self) -> &OpLog<Arc<Repo>> {
        &self.oplog
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// The key this peer signs ops with (its identity key).
    pub fn author(&self) -> AuthorId {
        self.author
    }

    /// The users logged in on this peer.
    pub fn sessions(&self) -> &Arc<crate::users::Sessions> {
        &self.sessions
    }

    /// Who an op made now for the local `uid` is made by: its logged-in user, else (no uid,
    /// or nobody logged in for it) this peer.
    pub fn acting(&self, uid: Option<u32>) -> Acting {
        Acting(uid.and_then(|uid| self.sessions.user_of(uid)))
    }

    /// This peer's Ed25519 secret seed: what opens the key epochs sealed to it.
    pub(crate) fn peer_seed(&self) -> [u8; 32] {
        let mut seed = [0; 32];
        seed.copy_from_slice(self.key.secret().as_ref());
        seed
    }

    /// Who `acting` is in a volume: the user, or this peer where no user acts.
    pub fn principal(&self, acting: &Acting) -> AuthorId {
        acting.user().map_or(self.author, crate::users::UserKey::id)
    }

    /// The role `acting` has in `volume` now (`None`: no member).
    pub fn role_of(
        &self,
        acting: &Acting,
        volume: &VolumeId,
    ) -> Result<Option<crate::oplog::Role>, OpLogError> {
        Ok(self
            .oplog
            .access(volume)?
            .current_role(&self.principal(acting)))
    }

    /// Whether this peer holds `volume` as a member: itself, or through a user it acts for.
    pub fn is_in(&self, volume: &VolumeId) -> Result<bool, OpLogError> {
        self.oplog.may_sync(volume, &self.author)
    }

    fn clock(&self) -> MutexGuard<'_, HlcClock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New ops of `volume` from now on, as they are appended (by peers or locally). A
    /// receiver that lags gets `RecvError::Lagged` and should rescan the log: nothing is lost
    /// from the log, only from this stream.
    pub fn follow(&self, volume: &VolumeId) -> broadcast::Receiver<SignedOp> {
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        followers
            .entry(*volume)
            .or_insert_with(|| broadcast::channel(HUB_DEPTH).0)
            .subscribe()
    }

    fn deliver(&self, op: &SignedOp) {
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = followers.get(&op.volume) {
            // No receiver left is fine: nobody follows the volume at the moment.
            let _ = tx.send(op.clone());
        }
    }

    /// Sign `payload` as this peer's next op on `volume`, append it, and hand it to the
    /// volume's followers. The caller publishes it ([`super::Network::publish_op`]).
    pub fn commit(
        &self,
        acting: &Acting,
        volume: &VolumeId,
        payload: Vec<u8>,
    ) -> Result<SignedOp, IngestError> {
        let op = {
            // Held from the seq choice to the append: two local ops never take one seq.
            let mut clock = self.clock();
            let op = self.sign_next(&mut clock, acting, volume, payload)?;
            self.oplog.append(&op)?;
            op
        };
        self.deliver(&op);
        Ok(op)
    }

    /// [`OpsHub::commit`] without waiting for the disk: the op is in RocksDB's WAL, not yet
    /// synced. The caller must not let it leave this peer before [`OpsHub::sync`] returns: an
    /// op lost in a crash after others saw it would have its sequence number signed again for
    /// a different op (equivocation, which every member refuses). Pulls from other peers are
    /// answered only after a sync for that reason.
    pub fn commit_deferred(
        &self,
        acting: &Acting,
        volume: &VolumeId,
        payload: Vec<u8>,
    ) -> Result<SignedOp, IngestError> {
        let op = {
            let mut clock = self.clock();
            let op = self.sign_next(&mut clock, acting, volume, payload)?;
            self.oplog.append_with(&op, false)?;
            self.unsynced
                .store(true, std::sync::atomic::Ordering::SeqCst);
            op
        };
        self.deliver(&op);
        Ok(op)
    }

    /// Make every op appended so far durable (one fsync of RocksDB's WAL, skipped when none
    /// of this peer's own ops waits for it).
    pub fn sync(&self) -> Result<(), crate::meta::MetaError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.unsynced.swap(false, SeqCst) {
            if let Err(e) = self.repo.meta().sync_wal() {
                self.unsynced.store(true, SeqCst);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sign `payload` as this peer's next op on `volume` without appending it (a join op,
    /// which only a member can take).
    pub(crate) fn sign_unlogged(
        &self,
        acting: &Acting,
        volume: &VolumeId,
        payload: Vec<u8>,
    ) -> Result<SignedOp, IngestError> {
        let mut clock = self.clock();
        self.sign_next(&mut clock, acting, volume, payload)
    }

    fn sign_next(
        &self,
        clock: &mut HlcClock,
        acting: &Acting,
        volume: &VolumeId,
        payload: Vec<u8>,
    ) -> Result<SignedOp, IngestError> {
        // Above every op held, across restarts, so our ops order after what we saw.
        let latest = self.oplog.latest_hlc(volume)?;
        if latest > clock.last() {
            // Our own earlier ops may be ahead of the wall clock: never refuse them.
            *clock = HlcClock::new().with_last(latest);
        }
        let hlc = clock.tick(physical_now_ms());
        let seq = self.oplog.next_seq(volume, &self.author)?;
        let user = acting.0.as_deref().map(crate::users::UserKey::keypair);
        let op = SignedOp::sign_as(&self.key, user, *volume, hlc, seq, payload)?;
        // What every member would reject is not signed at all (a join is judged by the
        // members, who alone can take it).
        if !is_join(&op.payload) {
            self.oplog.check_role(&op)?;
        }
        Ok(op)
    }

    /// Take an encoded op a peer sent for `volume`: decode, check its clock is not too far
    /// ahead of ours, append (which verifies the signature and membership) and deliver it if
    /// it is new. Returns the op and whether it was new.
    pub fn ingest(
        &self,
        volume: &VolumeId,
        bytes: &[u8],
    ) -> Result<(SignedOp, Appended), IngestError> {
        let op = SignedOp::from_bytes(bytes)?;
        if op.volume != *volume {
            return Err(IngestError::WrongVolume {
                expected: *volume,
                got: op.volume,
            });
        }
        self.observe(op.id.hlc)?;
        // Not synced: another peer's op lost in a crash is pulled again.
        let appended = self.oplog.append_with(&op, false)?;
        if appended == Appended::New {
            let delay_ms = physical_now_ms().saturating_sub(op.id.hlc.millis);
            crate::metrics::metrics()
                .replication_delay
                .observe(delay_ms as f64 / 1000.0);
            self.deliver(&op);
            self.on_own_join_taken(&op);
        }
        Ok((op, appended))
    }

    /// When a join this peer made for a logged-in user comes back taken, the user is a
    /// member: give the volume the user's profile, so the others see their name.
    fn on_own_join_taken(&self, op: &SignedOp) {
        let (Some(user), true) = (op.user, op.id.author == self.author) else {
            return;
        };
        let is_join = is_join(&op.payload);
        let Some(key) = is_join.then(|| self.sessions.key_of(&user.user)).flatten() else {
            return;
        };
        if let Err(e) = self.commit_profile(&Acting(Some(key)), &op.volume) {
            tracing::warn!(volume = %op.volume, error = %e, "cannot give the volume the user's profile");
        }
    }

    /// Commit the acting user's newest profile held here to `volume` (nothing without a user
    /// or a profile). Anti-entropy carries it to the other members.
    pub fn commit_profile(
        &self,
        acting: &Acting,
        volume: &VolumeId,
    ) -> Result<Option<SignedOp>, IngestError> {
        let Some(user) = acting.user() else {
            return Ok(None);
        };
        let held = crate::profiles::ProfileStore::new(self.oplog.db())
            .get(&user.id())
            .map_err(|e| IngestError::Task(format!("reading the profile: {e}")))?;
        let Some(profile) = held else {
            return Ok(None);
        };
        let control = crate::oplog::control::Control::Profile {
            profile: profile.to_bytes(),
        };
        self.commit(
            acting,
            volume,
            crate::oplog::control::control_payload(&control),
        )
        .map(Some)
    }

    fn observe(&self, remote: Hlc) -> Result<Hlc, ClockError> {
        self.clock().observe(remote, physical_now_ms())
    }

    /// Whether `author` has a gap before `seq` here: ops before it are missing.
    fn has_gap_before(&self, volume: &VolumeId, author: &AuthorId, seq: u64) -> bool {
        self.oplog
            .heads(volume)
            .is_ok_and(|heads| heads.get(author).copied().unwrap_or(0) + 1 < seq)
    }

    /// Whether a join its joiner hands this member may be taken now, by the terms of its
    /// invitation and this member's clock (an expired ticket is refused even if the join claims
    /// an earlier time). Anything but a join is left to [`OpsHub::ingest`].
    fn join_terms(&self, volume: &VolumeId, bytes: &[u8]) -> Result<(), String> {
        let Ok(op) = SignedOp::from_bytes(bytes) else {
            return Ok(());
        };
        let Ok(crate::oplog::Payload::Control(control)) = crate::oplog::Payload::parse(&op.payload)
        else {
            return Ok(());
        };
        let Some((invite, _, attestation)) = control.join() else {
            return Ok(());
        };
        let access = self.oplog.access(volume).map_err(|e| e.to_string())?;
        access
            .may_join(&invite, &op.principal(), attestation, physical_now_ms())
            .map_err(|why| why.to_string())
    }

    /// Take an op gossip brought from `source` (the peer that published it): as
    /// [`OpsHub::ingest`], except that a join is taken only from a member, who vetted it
    /// (a joiner hands its join to members directly, which check its ticket's terms).
    pub fn ingest_gossiped(
        &self,
        volume: &VolumeId,
        bytes: &[u8],
        source: Option<AuthorId>,
    ) -> Result<(SignedOp, Appended), IngestError> {
        let is_join = SignedOp::from_bytes(bytes).is_ok_and(|op| is_join(&op.payload));
        if is_join {
            let vetted = match source {
                Some(source) => self.oplog.may_sync(volume, &source)?,
                None => false,
            };
            if !vetted {
                return Err(IngestError::UnvettedJoin);
            }
        }
        self.ingest(volume, bytes)
    }

    /// Answer a pull from `peer`.
    pub fn serve(&self, peer: &PeerId, request: &SyncRequest) -> SyncResponse {
        let SyncRequest::Pull {
            volume,
            heads,
            join,
        } = request;
        if let Some(join) = join {
            match self.join_terms(volume, join) {
                Ok(()) => {
                    if let Err(e) = self.ingest(volume, join) {
                        tracing::debug!(%peer, %volume, error = %e, "join not taken");
                    }
                }
                Err(why) => tracing::info!(%peer, %volume, %why, "join refused"),
            }
        }
        let Some(author) = author_of(peer) else {
            return SyncResponse::Refused(SyncRefusal::NotMember);
        };
        match self.oplog.may_sync(volume, &author) {
            Ok(true) => {}
            Ok(false) => return SyncResponse::Refused(SyncRefusal::NotMember),
            Err(e) => {
                tracing::warn!(%volume, error = %e, "cannot read volume members");
                return SyncResponse::Refused(SyncRefusal::Internal);
            }
        }
        // Own ops appended without an fsync leave this peer only once durable.
        if let Err(e) = self.sync() {
            tracing::warn!(%volume, error = %e, "cannot sync the op log");
            return SyncResponse::Refused(SyncRefusal::Internal);
        }
        let held = match self.oplog.missing(volume, heads, PULL_PAGE) {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(%volume, error = %e, "cannot read the op log");
                return SyncResponse::Refused(SyncRefusal::Internal);
            }
        };
        let full = held.len() == PULL_PAGE;
        let mut ops = Vec::with_capacity(held.len());
        let mut bytes = 0;
        for op in held {
            let encoded = op.to_bytes();
            if bytes + encoded.len() > PAGE_BYTES && !ops.is_empty() {
                return SyncResponse::Ops { ops, more: true };
            }
            bytes += encoded.len();
            ops.push(serde_bytes::ByteBuf::from(encoded));
        }
        SyncResponse::Ops { ops, more: full }
    }

    /// Take the ops of a pull answer; true if another pull should follow.
    pub fn ingest_page(&self, peer: &PeerId, volume: &VolumeId, response: SyncResponse) -> bool {
        match response {
            SyncResponse::Ops { ops, more } => {
                let mut new = 0usize;
                for bytes in &ops {
                    match self.ingest(volume, bytes) {
                        Ok((_, Appended::New)) => {
                            new += 1;
                            crate::metrics::metrics()
                                .ops_received
                                .with_label_values(&["pull"])
                                .inc();
                        }
                        Ok((_, Appended::Duplicate)) => {}
                        Err(e) => {
                            tracing::warn!(%peer, %volume, error = %e, "op refused");
                        }
                    }
                }
                if new > 0 {
                    tracing::debug!(%peer, %volume, new, "ops pulled");
                }
                // A page of nothing but refusals or repeats would loop forever.
                more && new > 0
            }
            SyncResponse::Refused(refusal) => {
                tracing::debug!(%peer, %volume, %refusal, "pull refused");
                false
            }
        }
    }
}

/// The swarm's record of followed volumes and pulls in flight.
#[derive(Debug, Default)]
pub(super) struct Syncing {
    topics: HashMap<TopicHash, VolumeId>,
    followed: BTreeMap<VolumeId, IdentTopic>,
    pulls: HashMap<OutboundRequestId, (PeerId, VolumeId)>,
    in_flight: HashSet<(PeerId, VolumeId)>,
}

impl Syncing {
    /// Start following `volume`; returns its topic if it was not followed yet.
    pub(super) fn follow(&mut self, volume: VolumeId) -> Option<IdentTopic> {
        if self.followed.contains_key(&volume) {
            return None;
        }
        let topic = IdentTopic::new(topic_of(&volume));
        self.topics.insert(topic.hash(), volume);
        self.followed.insert(volume, topic.clone());
        Some(topic)
    }

    pub(super) fn volume_of(&self, topic: &TopicHash) -> Option<VolumeId> {
        self.topics.get(topic).copied()
    }

    pub(super) fn topic(&self, volume: &VolumeId) -> Option<&IdentTopic> {
        self.followed.get(volume)
    }

    pub(super) fn volumes(&self) -> Vec<VolumeId> {
        self.followed.keys().copied().collect()
    }

    /// Whether a pull of `volume` from `peer` may start (none is in flight).
    pub(super) fn may_pull(&self, peer: PeerId, volume: VolumeId) -> bool {
        !self.in_flight.contains(&(peer, volume))
    }

    pub(super) fn started(&mut self, id: OutboundRequestId, peer: PeerId, volume: VolumeId) {
        self.pulls.insert(id, (peer, volume));
        self.in_flight.insert((peer, volume));
    }

    pub(super) fn finished(&mut self, id: &OutboundRequestId) -> Option<(PeerId, VolumeId)> {
        let (peer, volume) = self.pulls.remove(id)?;
        self.in_flight.remove(&(peer, volume));
        Some((peer, volume))
    }
}

/// Whether an op just taken from gossip shows that ops before it are missing here.
pub(super) fn gap_behind(hub: &OpsHub, op: &SignedOp) -> bool {
    hub.has_gap_before(&op.volume, &op.id.author, op.seq)
}
