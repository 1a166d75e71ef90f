//! The op log in RocksDB: what a peer holds of each volume's ops, and who may write them.
//!
//! Column families (opened by [`MetaDb::open`], schema owned here):
//! - `oplog`: volume (16) ++ hlc.millis (8, BE) ++ hlc.counter (4, BE) ++ author (32) -> the op's
//!   [`SignedOp::to_bytes`]. Byte order is [`OpId`] order, so a scan of a volume's prefix
//!   yields its ops in the order the CRDTs apply them.
//! - `oplog_seq`: volume (16) ++ author (32) ++ seq (8, BE) -> format byte ++ the `oplog` key.
//!   The per-author index that heads, equivocation checks and [`OpLog::missing`] read.
//! - `volume_members`: volume (16) ++ principal (32) -> empty (a role byte may follow later).
//!   A principal is a user, or a peer for ops no user signed ([`SignedOp::principal`]).
//! - `volume_devices`: volume (16) ++ author (32) -> user (32): the peers that made ops a
//!   member user co-signed, so they may pull the volume for that user
//!   ([`OpLog::may_sync`]).
//!
//! An op's two entries are written in one batch, durably: a peer that gave out seq `n` and
//! crashed must still know it on restart, or it would sign a different op `n` (equivocation).
//!
//! Heads, counts and the highest seq per author are kept in memory per volume, built by one
//! scan of `oplog_seq` the first time a volume is used and updated by every append; appends
//! are serialised so the equivocation check and the write cannot interleave.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::access::{Access, OpPlace, Rejection};
use super::control::{verify_join, volume_id_of, Control, Payload};
use super::hlc::Hlc;
use super::op::{AuthorId, OpError, OpId, SignedOp, VolumeId};
use crate::meta::{
    MetaDb, MetaError, CF_OPLOG, CF_OPLOG_SEQ, CF_VOLUME_DEVICES, CF_VOLUME_INVITES,
    CF_VOLUME_MEMBERS,
};
use crate::repo::Repo;

/// The `volume_members` value of a member let in by [`OpLog::add_member`] (a join's is empty).
const GRANTED: &[u8] = &[1];
/// Format byte of `oplog_seq` values.
const SEQ_FORMAT_V1: u8 = 1;
/// Rows read per page when walking a table.
const PAGE: usize = 4096;
const OP_KEY_LEN: usize = 16 + 12 + 32;
const SEQ_KEY_LEN: usize = 16 + 32 + 8;

/// Where an [`OpLog`] finds the node's database: a [`MetaDb`], or what owns one (the node's
/// `Arc<Repo>`).
pub trait MetaSource: Send + Sync {
    fn meta(&self) -> &MetaDb;
}

impl MetaSource for MetaDb {
    fn meta(&self) -> &MetaDb {
        self
    }
}

impl MetaSource for Repo {
    fn meta(&self) -> &MetaDb {
        Repo::meta(self)
    }
}

impl<T: MetaSource + ?Sized> MetaSource for Arc<T> {
    fn meta(&self) -> &MetaDb {
        (**self).meta()
    }
}

/// What [`OpLog::append`] did with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The op was new and is now stored.
    New,
    /// The op was already held, byte for byte; nothing changed.
    Duplicate,
}

/// Why an op-log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpLogError {
    #[error("op log of volume {volume}: {source}")]
    Db { volume: VolumeId, source: MetaError },
    #[error("refused an op for volume {volume}: {source}")]
    Invalid { volume: VolumeId, source: OpError },
    #[error("refused op {id} for volume {volume}: its signer {author} (the user, or the peer where no user signed) is not a member")]
    NotMember {
        volume: VolumeId,
        author: AuthorId,
        id: OpId,
    },
    /// The author signed two different ops with one seq: `held` and `got` are their clock
    /// readings (equal when only the payloads differ).
    #[error(
        "equivocation by author {author} in volume {volume}: seq {seq} is held as the op at \
         {held} and arrived again, different, at {got}"
    )]
    Equivocation {
        volume: VolumeId,
        author: AuthorId,
        seq: u64,
        held: Hlc,
        got: Hlc,
    },
    #[error(
        "author {} reused op id {id} in volume {volume}: held with seq {held_seq}, arrived \
         with seq {got_seq}",
        id.author
    )]
    IdReused {
        volume: VolumeId,
        id: OpId,
        held_seq: u64,
        got_seq: u64,
    },
    /// The op is well formed, but its principal's role in the volume does not allow it.
    #[error("{principal} may not change volume {volume}: {reason}")]
    Rejected {
        volume: VolumeId,
        principal: AuthorId,
        reason: Rejection,
    },
    #[error("op {id} of {author} refused on volume {volume}: {reason}")]
    Refused {
        volume: VolumeId,
        author: AuthorId,
        id: OpId,
        reason: String,
    },
    #[error("corrupt {what} in the op log of volume {volume}: {detail}")]
    Corrupt {
        volume: VolumeId,
        what: &'static str,
        detail: String,
    },
}

/// What is known of one author's ops on one volume.
#[derive(Debug, Clone, Copy, Default)]
struct AuthorState {
    /// Every seq in 1..=head is held.
    head: u64,
    /// The highest seq held (beyond a gap, it exceeds `head`).
    max: u64,
}

#[derive(Debug, Clone, Default)]
struct VolumeState {
    len: u64,
    authors: BTreeMap<AuthorId, AuthorState>,
    /// The highest clock reading of any op held: a peer's clock starts above it, so its new
    /// ops order after everything it has seen, across restarts too.
    latest: Hlc,
    /// The control ops that decide roles, in op order, once [`OpLog::access`] first read them.
    controls: Option<Vec<(OpPlace, Control)>>,
    /// The roles they decide, until the next such op.
    access: Option<Arc<Access>>,
}

/// Whether a control op takes part in deciding roles ([`Access::build`]).
fn decides_roles(control: &Control) -> bool {
    !matches!(control, Control::Profile { .. })
}

/// The op logs of every volume this peer follows.
pub struct OpLog<M> {
    meta: M,
    /// Per-volume summaries, loaded on first use. The lock is held across an append's checks
    /// and write.
    state: Mutex<HashMap<VolumeId, VolumeState>>,
}

impl<M> std::fmt::Debug for OpLog<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpLog").finish_non_exhaustive()
    }
}

fn op_key(volume: &VolumeId, id: &OpId) -> Vec<u8> {
    let mut key = Vec::with_capacity(OP_KEY_LEN);
    key.extend_from_slice(&volume.0);
    key.extend_from_slice(&id.hlc.to_be_bytes());
    key.extend_from_slice(&id.author.0);
    key
}

/// One row written by an append: (column family, key, value or `None` to delete).
type Write = crate::meta::CfWrite;

fn invite_key(volume: &VolumeId, invite: &[u8; 32]) -> Vec<u8> {
    [&volume.0[..], &invite[..]].concat()
}

fn author_prefix(volume: &VolumeId, author: &AuthorId) -> Vec<u8> {
    let mut key = Vec::with_capacity(SEQ_KEY_LEN);
    key.extend_from_slice(&volume.0);
    key.extend_from_slice(&author.0);
    key
}

fn seq_key(volume: &VolumeId, author: &AuthorId, seq: u64) -> Vec<u8> {
    let mut key = author_prefix(volume, author);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// (author, seq) of an `oplog_seq` key.
fn parse_seq_key(key: &[u8]) -> Option<(AuthorId, u64)> {
    if key.len() != SEQ_KEY_LEN {
        return None;
    }
    let author = AuthorId(key[16..48].try_into().ok()?);
    let seq = u64::from_be_bytes(key[48..].try_into().ok()?);
    Some((author, seq))
}

/// The op id of an `oplog` key.
fn parse_op_key(key: &[u8]) -> Option<OpId> {
    if key.len() != OP_KEY_LEN {
        return None;
    }
    let hlc = Hlc::from_be_bytes(key[16..28].try_into().ok()?);
    let author = AuthorId(key[28..].try_into().ok()?);
    Some(OpId { hlc, author })
}

impl<M: MetaSource> OpLog<M> {
    pub fn new(meta: M) -> Self {
        OpLog {
            meta,
            state: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn db(&self) -> &MetaDb {
        self.meta.meta()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<VolumeId, VolumeState>> {
        self.state.lock().unwrap_or_else(|poisoned| {
            // A panic mid-update may have left a summary behind the disk: rebuild them all.
            let mut state = poisoned.into_inner();
            state.clear();
            self.state.clear_poison();
            state
        })
    }

    /// The summary of `volume`, loading it from disk on first use.
    fn volume_state<'a>(
        &self,
        states: &'a mut HashMap<VolumeId, VolumeState>,
        volume: &VolumeId,
    ) -> Result<&'a mut VolumeState, OpLogError> {
        if !states.contains_key(volume) {
            let loaded = self.load(volume)?;
            states.insert(*volume, loaded);
        }
        states.get_mut(volume).ok_or_else(|| OpLogError::Corrupt {
            volume: *volume,
            what: "summary",
            detail: "vanished while loading".into(),
        })
    }

    fn load(&self, volume: &VolumeId) -> Result<VolumeState, OpLogError> {
        let mut state = VolumeState::default();
        self.for_each(CF_OPLOG_SEQ, volume, &volume.0, |key, value| {
            let (author, seq) = parse_seq_key(key).ok_or_else(|| OpLogError::Corrupt {
                volume: *volume,
                what: "sequence index key",
                detail: format!("{} bytes", key.len()),
            })?;
            if let Some(id) = value.get(1..).and_then(parse_op_key) {
                state.latest = state.latest.max(id.hlc);
            }
            let a = state.authors.entry(author).or_default();
            // Keys come in seq order per author, so the head stops at the first gap.
            if seq == a.head + 1 {
                a.head = seq;
            }
            a.max = a.max.max(seq);
            state.len += 1;
            Ok(())
        })?;
        Ok(state)
    }

    /// Visit every row of `cf` under `prefix` in key order, a page at a time.
    fn for_each(
        &self,
        cf: &'static str,
        volume: &VolumeId,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), OpLogError>,
    ) -> Result<(), OpLogError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .db()
                .cf_scan(cf, prefix, after.as_deref(), PAGE)
                .map_err(|e| db_err(volume, e))?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (k, v) in &page {
                visit(k, v)?;
            }
        }
    }

    /// Whether `op` may be taken, by the membership rules of [`super::control`], and the
    /// membership rows it writes along with itself.
    /// Rules are the principal's (the user's, where a user co-signed); a peer that made an
    /// op for a user is recorded as that user's device.
    fn admission(&self, op: &SignedOp) -> Result<Vec<Write>, OpLogError> {
        let mut writes = self.principal_admission(op)?;
        if let Some(user) = &op.user {
            writes.push((
                CF_VOLUME_DEVICES,
                author_prefix(&op.volume, &op.id.author),
                Some(user.user.0.to_vec()),
            ));
        }
        Ok(writes)
    }

    fn principal_admission(&self, op: &SignedOp) -> Result<Vec<Write>, OpLogError> {
        let (volume, author) = (op.volume, op.principal());
        let refused = |reason: &str| OpLogError::Refused {
            volume,
            author,
            id: op.id,
            reason: reason.to_string(),
        };
        let payload = Payload::parse(&op.payload).map_err(|e| refused(&e.to_string()))?;
        let member_row = (
            CF_VOLUME_MEMBERS,
            author_prefix(&volume, &author),
            Some(Vec::new()),
        );
        match payload {
            Payload::Data(_)
            | Payload::EpochData { .. }
            | Payload::Control(
                Control::Invite { .. }
                | Control::InviteWith { .. }
                | Control::Revoke { .. }
                | Control::Profile { .. }
                | Control::SetRole { .. }
                | Control::RequireIssuer { .. },
            ) if !self.is_member(&volume, &author)? => Err(OpLogError::NotMember {
                volume,
                author,
                id: op.id,
            }),
            // Whether these stand is the roles' to say ([`super::access`]): every member
            // keeps the same ops, whatever it makes of them.
            Payload::Data(_)
            | Payload::EpochData { .. }
            | Payload::Control(
                Control::SetRole { .. } | Control::Revoke { .. } | Control::RequireIssuer { .. },
            ) => Ok(Vec::new()),
            Payload::Control(Control::Profile { profile }) => {
                let profile = crate::profiles::SignedProfile::from_bytes(&profile)
                    .map_err(|e| refused(&e.to_string()))?;
                if profile.user != author {
                    return Err(refused("a profile of another user"));
                }
                let row = crate::profiles::ProfileStore::new(self.db())
                    .write_if_newer(&profile)
                    .map_err(|e| db_err(&volume, e))?;
                Ok(row.into_iter().collect())
            }
            Payload::Control(Control::Invite { invite } | Control::InviteWith { invite, .. }) => {
                Ok(vec![(
                    CF_VOLUME_INVITES,
                    invite_key(&volume, &invite),
                    Some(author.0.to_vec()),
                )])
            }
            Payload::Control(Control::Genesis { nonce }) => {
                if op.seq != 1 || volume_id_of(&author, &nonce) != volume {
                    return Err(refused("a genesis that does not create this volume"));
                }
                Ok(vec![member_row])
            }
            Payload::Control(
                Control::Join { invite, proof } | Control::JoinAttested { invite, proof, .. },
            ) => {
                let known =
                    self.cf_get(&volume, CF_VOLUME_INVITES, &invite_key(&volume, &invite))?;
                if known.is_none() {
                    return Err(refused("a join with an invitation not (yet) held here"));
                }
                if !verify_join(&invite, &volume, &author, &proof) {
                    return Err(refused("a join whose proof does not verify"));
                }
                Ok(vec![member_row])
            }
        }
    }

    /// Let `author` write ops to `volume` as a writer, by this peer's say alone (no genesis or
    /// join in the log: for tests of the log and the network).
    pub fn add_member(&self, volume: &VolumeId, author: &AuthorId) -> Result<(), OpLogError> {
        let key = author_prefix(volume, author);
        self.db()
            .cf_write([(CF_VOLUME_MEMBERS, key, Some(GRANTED.to_vec()))], true)
            .map_err(|e| db_err(volume, e))?;
        // The roles are read again with it.
        self.lock().remove(volume);
        Ok(())
    }

    /// The principals [`OpLog::add_member`] let in.
    fn granted(&self, volume: &VolumeId) -> Result<Vec<AuthorId>, OpLogError> {
        let mut out = Vec::new();
        self.for_each(CF_VOLUME_MEMBERS, volume, &volume.0, |key, value| {
            if value == GRANTED {
                if let Some(author) = key.get(16..).and_then(|a| a.try_into().ok()) {
                    out.push(AuthorId(author));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Refuse further ops of `author` to `volume`; ops already held stay.
    pub fn remove_member(&self, volume: &VolumeId, author: &AuthorId) -> Result<(), OpLogError> {
        let key = author_prefix(volume, author);
        self.db()
            .cf_write([(CF_VOLUME_MEMBERS, key, None)], true)
            .map_err(|e| db_err(volume, e))?;
        self.lock().remove(volume);
        Ok(())
    }

    pub fn is_member(&self, volume: &VolumeId, author: &AuthorId) -> Result<bool, OpLogError> {
        let key = author_prefix(volume, author);
        let value = self
            .db()
            .cf_get(CF_VOLUME_MEMBERS, &key)
            .map_err(|e| db_err(volume, e))?;
        Ok(value.is_some())
    }

    /// Whether the peer whose key is `author` may pull `volume`: it is a member itself, or it
    /// made ops for a user who still is.
    pub fn may_sync(&self, volume: &VolumeId, author: &AuthorId) -> Result<bool, OpLogError> {
        if self.is_member(volume, author)? {
            return self.not_removed(volume, author);
        }
        let key = author_prefix(volume, author);
        let user = self
            .db()
            .cf_get(CF_VOLUME_DEVICES, &key)
            .map_err(|e| db_err(volume, e))?;
        match user.as_deref().map(<[u8; 32]>::try_from) {
            Some(Ok(user)) => Ok(self.is_member(volume, &AuthorId(user))?
                && self.not_removed(volume, &AuthorId(user))?),
            Some(Err(_)) => Err(OpLogError::Corrupt {
                volume: *volume,
                what: "device row",
                detail: "not a 32-byte user key".into(),
            }),
            None => Ok(false),
        }
    }

    /// Whether the roles leave `principal` anything in `volume`: a member removed, or one
    /// whose join does not count (an expired, used or revoked invitation), may not pull it.
    fn not_removed(&self, volume: &VolumeId, principal: &AuthorId) -> Result<bool, OpLogError> {
        Ok(self
            .access(volume)?
            .current_role(principal)
            .is_some_and(|role| role >= super::control::Role::Reader))
    }

    /// The devices of `volume`'s member users: (peer, user) pairs, by peer.
    pub fn devices(&self, volume: &VolumeId) -> Result<Vec<(AuthorId, AuthorId)>, OpLogError> {
        let mut out = Vec::new();
        self.for_each(CF_VOLUME_DEVICES, volume, &volume.0, |key, value| {
            let corrupt = || OpLogError::Corrupt {
                volume: *volume,
                what: "device row",
                detail: format!("{} byte key, {} byte value", key.len(), value.len()),
            };
            let peer = key
                .get(16..)
                .and_then(|a| a.try_into().ok())
                .ok_or_else(corrupt)?;
            let user = value.try_into().map_err(|_| corrupt())?;
            out.push((AuthorId(peer), AuthorId(user)));
            Ok(())
        })?;
        Ok(out)
    }

    /// The members of `volume`, in id order.
    pub fn members(&self, volume: &VolumeId) -> Result<Vec<AuthorId>, OpLogError> {
        let mut out = Vec::new();
        self.for_each(CF_VOLUME_MEMBERS, volume, &volume.0, |key, _| {
            let author = key
                .get(16..)
                .and_then(|a| a.try_into().ok())
                .ok_or_else(|| OpLogError::Corrupt {
                    volume: *volume,
                    what: "member key",
                    detail: format!("{} bytes", key.len()),
                })?;
            out.push(AuthorId(author));
            Ok(())
        })?;
        Ok(out)
    }

    /// Store an op received from anywhere (this peer, gossip, anti-entropy). An op already
    /// held is [`Appended::Duplicate`]; otherwise it must verify, its author must be a member
    /// of its volume, and its seq and id must not be taken by a different op. Ops may arrive
    /// in any order: one beyond a gap is stored, and the author's head moves once the gap is
    /// filled. The write is synced before this returns.
    pub fn append(&self, op: &SignedOp) -> Result<Appended, OpLogError> {
        self.append_with(op, true)
    }

    /// [`OpLog::append`]; with `durable` false the write goes to RocksDB's WAL without an
    /// fsync (a later `sync_wal` makes it durable).
    pub fn append_with(&self, op: &SignedOp, durable: bool) -> Result<Appended, OpLogError> {
        let volume = op.volume;
        let bytes = op.to_bytes();
        let skey = seq_key(&volume, &op.id.author, op.seq);
        let okey = op_key(&volume, &op.id);
        // Gossip and anti-entropy deliver many copies: spot them before checking a signature.
        if self.held_bytes(&volume, &skey)?.as_deref() == Some(&bytes[..]) {
            return Ok(Appended::Duplicate);
        }
        op.verify()
            .map_err(|source| OpLogError::Invalid { volume, source })?;
        // Admission reads what earlier appends wrote (members, the newest profiles): under
        // the append lock, so two ops taken at once see each other.
        let mut states = self.lock();
        let membership = self.admission(op)?;
        let state = self.volume_state(&mut states, &volume)?;
        if let Some(held) = self.held_bytes(&volume, &skey)? {
            if held == bytes {
                return Ok(Appended::Duplicate);
            }
            let held = SignedOp::from_bytes(&held).map_err(|e| corrupt_op(&volume, e))?;
            return Err(OpLogError::Equivocation {
                volume,
                author: op.id.author,
                seq: op.seq,
                held: held.id.hlc,
                got: op.id.hlc,
            });
        }
        if let Some(held) = self.cf_get(&volume, CF_OPLOG, &okey)? {
            let held = SignedOp::from_bytes(&held).map_err(|e| corrupt_op(&volume, e))?;
            return Err(OpLogError::IdReused {
                volume,
                id: op.id,
                held_seq: held.seq,
                got_seq: op.seq,
            });
        }
        let mut index = Vec::with_capacity(1 + OP_KEY_LEN);
        index.push(SEQ_FORMAT_V1);
        index.extend_from_slice(&okey);
        let writes = [
            (CF_OPLOG, okey, Some(bytes)),
            (CF_OPLOG_SEQ, skey, Some(index)),
        ]
        .into_iter()
        .chain(membership);
        self.db()
            .cf_write(writes, durable)
            .map_err(|e| db_err(&volume, e))?;

        state.len += 1;
        state.latest = state.latest.max(op.id.hlc);
        let a = state.authors.entry(op.id.author).or_default();
        a.max = a.max.max(op.seq);
        let mut stale = false;
        if op.seq == a.head + 1 {
            a.head = op.seq;
            // The op may fill a gap: walk over what was held beyond it.
            while a.head < a.max {
                let next = seq_key(&volume, &op.id.author, a.head + 1);
                match self.db().cf_get(CF_OPLOG_SEQ, &next) {
                    Ok(Some(_)) => a.head += 1,
                    Ok(None) => break,
                    // The op is stored all the same; rebuild the summary on next use.
                    Err(_) => {
                        stale = true;
                        break;
                    }
                }
            }
        }
        if let (Some(controls), Ok(Payload::Control(control))) =
            (state.controls.as_mut(), Payload::parse(&op.payload))
        {
            if decides_roles(&control) {
                let at = OpPlace::of(op);
                let place = controls.partition_point(|(held, _)| held.id < at.id);
                controls.insert(place, (at, control));
                state.access = None;
            }
        }
        if stale {
            states.remove(&volume);
        }
        Ok(Appended::New)
    }

    /// The roles in `volume` that the ops held decide ([`super::access`]). The first call per
    /// volume reads the whole log; appends keep it current after that.
    pub fn access(&self, volume: &VolumeId) -> Result<Arc<Access>, OpLogError> {
        let mut states = self.lock();
        let state = self.volume_state(&mut states, volume)?;
        if let Some(access) = &state.access {
            return Ok(access.clone());
        }
        if state.controls.is_none() {
            // Under the append lock, so no op slips in between this read and the cache.
            let mut controls = Vec::new();
            let mut after = None;
            loop {
                let page = self.scan(volume, after.as_ref(), PAGE)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                for op in page {
                    if let Ok(Payload::Control(control)) = Payload::parse(&op.payload) {
                        if decides_roles(&control) {
                            controls.push((OpPlace::of(&op), control));
                        }
                    }
                }
            }
            state.controls = Some(controls);
        }
        let mut access = Access::build(state.controls.as_deref().unwrap_or_default());
        for principal in self.granted(volume)? {
            access.grant(principal);
        }
        let access = Arc::new(access);
        let state = self.volume_state(&mut states, volume)?;
        state.access = Some(access.clone());
        Ok(access)
    }

    /// Whether the members of `volume` would take `op` (signed here, not yet appended):
    /// refused with the reason when its principal's role does not allow it.
    pub fn check_role(&self, op: &SignedOp) -> Result<(), OpLogError> {
        let access = self.access(&op.volume)?;
        access.verdict(op).map_err(|reason| OpLogError::Rejected {
            volume: op.volume,
            principal: op.principal(),
            reason,
        })
    }

    fn cf_get(
        &self,
        volume: &VolumeId,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, OpLogError> {
        self.db().cf_get(cf, key).map_err(|e| db_err(volume, e))
    }

    /// The encoded op stored under an `oplog_seq` key.
    fn held_bytes(&self, volume: &VolumeId, skey: &[u8]) -> Result<Option<Vec<u8>>, OpLogError> {
        let Some(index) = self.cf_get(volume, CF_OPLOG_SEQ, skey)? else {
            return Ok(None);
        };
        let okey = match index.split_first() {
            Some((&SEQ_FORMAT_V1, okey)) if okey.len() == OP_KEY_LEN => okey,
            _ => {
                return Err(OpLogError::Corrupt {
                    volume: *volume,
                    what: "sequence index entry",
                    detail: format!("{} bytes", index.len()),
                })
            }
        };
        match self.cf_get(volume, CF_OPLOG, okey)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(OpLogError::Corrupt {
                volume: *volume,
                what: "sequence index entry",
                detail: match parse_op_key(okey) {
                    Some(id) => format!("names op {id}, which is not stored"),
                    None => "names an op that is not stored".into(),
                },
            }),
        }
    }

    /// The op `id` of `volume`, if held.
    pub fn get(&self, volume: &VolumeId, id: &OpId) -> Result<Option<SignedOp>, OpLogError> {
        let key = op_key(volume, id);
        match self.cf_get(volume, CF_OPLOG, &key)? {
            Some(bytes) => decode_held(volume, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` ops of `volume` in [`OpId`] order, after `after` (from the start when
    /// `None`; `after` need not be held).
    pub fn scan(
        &self,
        volume: &VolumeId,
        after: Option<&OpId>,
        limit: usize,
    ) -> Result<Vec<SignedOp>, OpLogError> {
        let after = after.map(|id| op_key(volume, id));
        let rows = self
            .db()
            .cf_scan(CF_OPLOG, &volume.0, after.as_deref(), limit)
            .map_err(|e| db_err(volume, e))?;
        rows.iter()
            .map(|(k, v)| decode_held(volume, k, v))
            .collect()
    }

    /// How many ops of `volume` are held.
    pub fn len(&self, volume: &VolumeId) -> Result<u64, OpLogError> {
        let mut states = self.lock();
        Ok(self.volume_state(&mut states, volume)?.len)
    }

    /// The highest clock reading among the ops of `volume` held here ([`Hlc::ZERO`] if none).
    pub fn latest_hlc(&self, volume: &VolumeId) -> Result<Hlc, OpLogError> {
        let mut states = self.lock();
        Ok(self.volume_state(&mut states, volume)?.latest)
    }

    /// Whether no op of `volume` is held.
    pub fn is_empty(&self, volume: &VolumeId) -> Result<bool, OpLogError> {
        Ok(self.len(volume)? == 0)
    }

    /// Per author, the highest seq up to which every op of `volume` is held; authors of whom
    /// seq 1 is not held are left out.
    pub fn heads(&self, volume: &VolumeId) -> Result<BTreeMap<AuthorId, u64>, OpLogError> {
        let mut states = self.lock();
        let state = self.volume_state(&mut states, volume)?;
        Ok(state
            .authors
            .iter()
            .filter(|(_, a)| a.head > 0)
            .map(|(author, a)| (*author, a.head))
            .collect())
    }

    /// The seq `author`'s next op on `volume` must have: one past the highest held, gap or
    /// not, so a number once given out is never given out again.
    pub fn next_seq(&self, volume: &VolumeId, author: &AuthorId) -> Result<u64, OpLogError> {
        let mut states = self.lock();
        let state = self.volume_state(&mut states, volume)?;
        Ok(state
            .authors
            .get(author)
            .map_or(1, |a| a.max.saturating_add(1)))
    }

    /// Up to `limit` ops of `volume` held here that a peer with `their_heads` lacks: for each
    /// author (in id order), every op held with a seq above their head (all of the author's
    /// ops when absent), in seq order. Ops they hold beyond a gap of their own are sent again;
    /// appending them is a no-op.
    pub fn missing(
        &self,
        volume: &VolumeId,
        their_heads: &BTreeMap<AuthorId, u64>,
        limit: usize,
    ) -> Result<Vec<SignedOp>, OpLogError> {
        let behind: Vec<(AuthorId, u64)> = {
            let mut states = self.lock();
            let state = self.volume_state(&mut states, volume)?;
            state
                .authors
                .iter()
                .filter_map(|(author, a)| {
                    let theirs = their_heads.get(author).copied().unwrap_or(0);
                    (a.max > theirs).then_some((*author, theirs))
                })
                .collect()
        };
        let mut out = Vec::new();
        for (author, theirs) in behind {
            if out.len() >= limit {
                break;
            }
            let prefix = author_prefix(volume, &author);
            let after = seq_key(volume, &author, theirs);
            let rows = self
                .db()
                .cf_scan(CF_OPLOG_SEQ, &prefix, Some(&after), limit - out.len())
                .map_err(|e| db_err(volume, e))?;
            for (skey, _) in rows {
                let bytes = self
                    .held_bytes(volume, &skey)?
                    .ok_or_else(|| OpLogError::Corrupt {
                        volume: *volume,
                        what: "sequence index entry",
                        detail: "vanished during a scan".into(),
                    })?;
                out.push(SignedOp::from_bytes(&bytes).map_err(|e| corrupt_op(volume, e))?);
            }
        }
        Ok(out)
    }
}

fn db_err(volume: &VolumeId, source: MetaError) -> OpLogError {
    OpLogError::Db {
        volume: *volume,
        source,
    }
}

fn corrupt_op(volume: &VolumeId, e: OpError) -> OpLogError {
    OpLogError::Corrupt {
        volume: *volume,
        what: "op",
        detail: e.to_string(),
    }
}

/// Decode an op read from `oplog` and check it is the one its key names.
fn decode_held(volume: &VolumeId, key: &[u8], bytes: &[u8]) -> Result<SignedOp, OpLogError> {
    let op = SignedOp::from_bytes(bytes).map_err(|e| corrupt_op(volume, e))?;
    if key != op_key(&op.volume, &op.id) {
        return Err(OpLogError::Corrupt {
            volume: *volume,
            what: "op",
            detail: format!("op {} is stored under another op's key", op.id),
        });
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::control::data_payload;
    use crate::oplog::op::tests::key;
    use libp2p::identity::ed25519::Keypair;
    use proptest::prelude::*;

    const VOL: VolumeId = VolumeId([1; 16]);

    struct Fixture {
        dir: tempfile::TempDir,
        log: OpLog<MetaDb>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let log = OpLog::new(MetaDb::open(dir.path()).unwrap());
            Fixture { dir, log }
        }

        fn reopen(self) -> Self {
            let Fixture { dir, log } = self;
            drop(log);
            let log = OpLog::new(MetaDb::open(dir.path()).unwrap());
            Fixture { dir, log }
        }
    }

    fn author(k: &Keypair) -> AuthorId {
        AuthorId::of(&k.public())
    }

    fn op(k: &Keypair, millis: u64, seq: u64, payload: &[u8]) -> SignedOp {
        let hlc = Hlc { millis, counter: 0 };
        SignedOp::sign(k, VOL, hlc, seq, data_payload(payload)).unwrap()
    }

    fn members(log: &OpLog<MetaDb>, keys: &[&Keypair]) {
        for k in keys {
            log.add_member(&VOL, &author(k)).unwrap();
        }
    }

    fn ids(ops: &[SignedOp]) -> Vec<(u64, AuthorId, u64)> {
        ops.iter()
            .map(|o| (o.id.hlc.millis, o.id.author, o.seq))
            .collect()
    }

    #[test]
    fn append_is_idempotent_and_refuses_equivocation() {
        let f = Fixture::new();
        let a = key(1);
        members(&f.log, &[&a]);
        let first = op(&a, 100, 1, b"one");
        assert_eq!(f.log.append(&first).unwrap(), Appended::New);
        assert_eq!(f.log.append(&first).unwrap(), Appended::Duplicate);
        assert_eq!(f.log.len(&VOL).unwrap(), 1);

        // Same author, same seq, other content: refused, and the first op stays.
        let other = op(&a, 101, 1, b"two");
        let err = f.log.append(&other).unwrap_err();
        match &err {
            OpLogError::Equivocation {
                author: who,
                seq,
                held,
                got,
                ..
            } => {
                assert_eq!((*who, *seq), (author(&a), 1));
                assert_eq!((*held, *got), (first.id.hlc, other.id.hlc));
            }
            e => panic!("expected equivocation, got {e}"),
        }
        assert!(err.to_string().contains(&author(&a).to_string()), "{err}");
        assert_eq!(f.log.get(&VOL, &first.id).unwrap(), Some(first.clone()));
        assert_eq!(f.log.get(&VOL, &other.id).unwrap(), None);

        // Same op id under another seq: refused too (it would overwrite the first op).
        let reused = op(&a, 100, 2, b"one again");
        assert!(matches!(
            f.log.append(&reused),
            Err(OpLogError::IdReused {
                held_seq: 1,
                got_seq: 2,
                ..
            })
        ));
        assert_eq!(f.log.len(&VOL).unwrap(), 1);
        assert_eq!(f.log.scan(&VOL, None, 10).unwrap(), vec![first]);
    }

    #[test]
    fn bad_signatures_and_tampered_payloads_are_refused_and_not_stored() {
        let f = Fixture::new();
        let a = key(1);
        members(&f.log, &[&a]);
        let mut forged = op(&a, 100, 1, b"payload");
        forged.signature[0] ^= 1;
        let mut tampered = op(&a, 100, 1, b"payload");
        tampered.payload[0] ^= 1;
        for bad in [forged, tampered] {
            let err = f.log.append(&bad).unwrap_err();
            assert!(
                matches!(
                    &err,
                    OpLogError::Invalid {
                        source: OpError::BadSignature { .. },
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains(&author(&a).to_string()), "{err}");
        }
        assert_eq!(f.log.len(&VOL).unwrap(), 0);
        assert!(f.log.scan(&VOL, None, 10).unwrap().is_empty());
        assert!(f.log.heads(&VOL).unwrap().is_empty());
        // The genuine op is still welcome at that seq.
        assert_eq!(
            f.log.append(&op(&a, 100, 1, b"payload")).unwrap(),
            Appended::New
        );
    }

    #[test]
    fn non_members_are_refused_with_author_and_volume() {
        let f = Fixture::new();
        let (a, b) = (key(1), key(2));
        members(&f.log, &[&a]);
        let err = f.log.append(&op(&b, 100, 1, b"x")).unwrap_err();
        assert!(
            matches!(err, OpLogError::NotMember { volume, author: who, .. }
                if volume == VOL && who == author(&b)),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&author(&b).to_string()) && text.contains(&VOL.to_string()));
        assert_eq!(f.log.len(&VOL).unwrap(), 0);

        f.log.add_member(&VOL, &author(&b)).unwrap();
        assert!(f.log.is_member(&VOL, &author(&b)).unwrap());
        let mut expected = vec![author(&a), author(&b)];
        expected.sort();
        assert_eq!(f.log.members(&VOL).unwrap(), expected);
        let held = op(&b, 100, 1, b"x");
        assert_eq!(f.log.append(&held).unwrap(), Appended::New);

        // Removed: new ops are refused, held ones stay (and resending them is harmless).
        f.log.remove_member(&VOL, &author(&b)).unwrap();
        assert!(!f.log.is_member(&VOL, &author(&b)).unwrap());
        assert_eq!(f.log.members(&VOL).unwrap(), vec![author(&a)]);
        assert_eq!(f.log.append(&held).unwrap(), Appended::Duplicate);
        assert!(matches!(
            f.log.append(&op(&b, 200, 2, b"y")),
            Err(OpLogError::NotMember { .. })
        ));
        // Membership is per volume.
        assert!(!f.log.is_member(&VolumeId([2; 16]), &author(&a)).unwrap());
    }

    #[test]
    fn membership_follows_genesis_invite_and_join_ops() {
        use crate::oplog::control::{control_payload, join_proof, volume_id_of, Control};
        let f = Fixture::new();
        let (creator, joiner, stranger) = (key(1), key(2), key(3));
        let nonce = [9; 16];
        let volume = volume_id_of(&author(&creator), &nonce);
        let hlc = |millis| Hlc { millis, counter: 0 };
        let signed = |k: &Keypair, millis, seq, c: &Control| {
            SignedOp::sign(k, volume, hlc(millis), seq, control_payload(c)).unwrap()
        };
        let refused = |r: Result<Appended, OpLogError>| match r {
            Err(OpLogError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // A genesis by anyone else, or under another nonce, does not create this volume.
        let fake = signed(&stranger, 1, 1, &Control::Genesis { nonce });
        assert!(refused(f.log.append(&fake)).contains("genesis"));
        let genesis = Control::Genesis { nonce: [8; 16] };
        assert!(refused(f.log.append(&signed(&creator, 1, 1, &genesis))).contains("genesis"));
        let genesis = signed(&creator, 1, 1, &Control::Genesis { nonce });
        assert_eq!(f.log.append(&genesis).unwrap(), Appended::New);
        assert_eq!(f.log.members(&volume).unwrap(), vec![author(&creator)]);

        let invite = Keypair::generate();
        let invite_pub = invite.public().to_bytes();
        let proof = join_proof(&invite, &volume, &author(&joiner));
        let join = signed(
            &joiner,
            3,
            1,
            &Control::Join {
                invite: invite_pub,
                proof: proof.clone(),
            },
        );
        // Before the invitation is held, a join waits (refused now, taken when pulled again).
        assert!(refused(f.log.append(&join)).contains("invitation"));
        // Only members invite.
        let rogue = signed(&stranger, 2, 1, &Control::Invite { invite: invite_pub });
        assert!(matches!(
            f.log.append(&rogue),
            Err(OpLogError::NotMember { .. })
        ));
        let invitation = signed(&creator, 2, 2, &Control::Invite { invite: invite_pub });
        assert_eq!(f.log.append(&invitation).unwrap(), Appended::New);
        // A proof made for someone else does not let the stranger in.
        let stolen = signed(
            &stranger,
            4,
            1,
            &Control::Join {
                invite: invite_pub,
                proof,
            },
        );
        assert!(refused(f.log.append(&stolen)).contains("proof"));
        assert_eq!(f.log.append(&join).unwrap(), Appended::New);
        let mut members = f.log.members(&volume).unwrap();
        members.sort();
        let mut want = vec![author(&creator), author(&joiner)];
        want.sort();
        assert_eq!(members, want);
        // Data ops: members yes, the stranger no.
        let data = SignedOp::sign(&joiner, volume, hlc(5), 2, data_payload(b"x")).unwrap();
        assert_eq!(f.log.append(&data).unwrap(), Appended::New);
        let data = SignedOp::sign(&stranger, volume, hlc(5), 1, data_payload(b"x")).unwrap();
        assert!(matches!(
            f.log.append(&data),
            Err(OpLogError::NotMember { .. })
        ));
        // A payload of an unknown kind is refused, not stored.
        let junk = SignedOp::sign(&creator, volume, hlc(6), 3, vec![9, 9]).unwrap();
        assert!(refused(f.log.append(&junk)).contains("kind"));
        assert_eq!(f.log.len(&volume).unwrap(), 4);
    }

    #[test]
    fn a_user_is_the_member_and_the_peers_that_sign_for_it_are_its_devices() {
        use crate::oplog::control::{control_payload, join_proof, volume_id_of, Control};
        let f = Fixture::new();
        // Alice's key and two of her devices; Bob's key on a third peer; a stranger peer.
        let (alice, laptop, desktop) = (key(11), key(12), key(13));
        let (bob, bobs_peer, stranger) = (key(14), key(15), key(16));
        let nonce = [4; 16];
        let volume = volume_id_of(&author(&alice), &nonce);
        let hlc = |millis| Hlc { millis, counter: 0 };
        let as_user = |peer: &Keypair, user: Option<&Keypair>, millis, seq, payload: Vec<u8>| {
            SignedOp::sign_as(peer, user, volume, hlc(millis), seq, payload).unwrap()
        };
        // The volume id is derived from Alice's key: her laptop creates it for her.
        let genesis = Control::Genesis { nonce };
        let by_peer = as_user(&laptop, None, 1, 1, control_payload(&genesis));
        assert!(matches!(
            f.log.append(&by_peer),
            Err(OpLogError::Refused { .. })
        ));
        let genesis = as_user(&laptop, Some(&alice), 1, 1, control_payload(&genesis));
        assert_eq!(f.log.append(&genesis).unwrap(), Appended::New);
        assert_eq!(f.log.members(&volume).unwrap(), vec![author(&alice)]);
        // The laptop is not a member itself (its own ops are refused) but may sync for her.
        assert!(f.log.may_sync(&volume, &author(&laptop)).unwrap());
        assert!(!f.log.is_member(&volume, &author(&laptop)).unwrap());
        let alone = as_user(&laptop, None, 2, 2, data_payload(b"x"));
        assert!(
            matches!(f.log.append(&alone), Err(OpLogError::NotMember { author: a, .. }) if a == author(&laptop))
        );
        // Her second device writes as her, in its own sequence.
        assert!(!f.log.may_sync(&volume, &author(&desktop)).unwrap());
        let data = as_user(&desktop, Some(&alice), 3, 1, data_payload(b"y"));
        assert_eq!(f.log.append(&data).unwrap(), Appended::New);
        assert!(f.log.may_sync(&volume, &author(&desktop)).unwrap());
        // A stranger signing as a user who is no member is refused, and gains nothing.
        let rogue = as_user(&stranger, Some(&bob), 4, 1, data_payload(b"z"));
        assert!(
            matches!(f.log.append(&rogue), Err(OpLogError::NotMember { author: a, .. }) if a == author(&bob))
        );
        assert!(!f.log.may_sync(&volume, &author(&stranger)).unwrap());
        // Bob joins from his peer: the proof binds the invitation to Bob, not to the peer.
        let invite = Keypair::generate();
        let invite_pub = invite.public().to_bytes();
        let invitation = as_user(
            &laptop,
            Some(&alice),
            5,
            2,
            control_payload(&Control::Invite { invite: invite_pub }),
        );
        assert_eq!(f.log.append(&invitation).unwrap(), Appended::New);
        let for_peer = Control::Join {
            invite: invite_pub,
            proof: join_proof(&invite, &volume, &author(&bobs_peer)),
        };
        let wrong = as_user(&bobs_peer, Some(&bob), 6, 1, control_payload(&for_peer));
        assert!(
            matches!(f.log.append(&wrong), Err(OpLogError::Refused { reason, .. }) if reason.contains("proof"))
        );
        let join = Control::Join {
            invite: invite_pub,
            proof: join_proof(&invite, &volume, &author(&bob)),
        };
        let join = as_user(&bobs_peer, Some(&bob), 7, 1, control_payload(&join));
        assert_eq!(f.log.append(&join).unwrap(), Appended::New);
        let mut members = f.log.members(&volume).unwrap();
        members.sort();
        let mut want = vec![author(&alice), author(&bob)];
        want.sort();
        assert_eq!(members, want);
        assert!(f.log.may_sync(&volume, &author(&bobs_peer)).unwrap());
        // Removing Bob takes his peer's right to sync with him.
        f.log.remove_member(&volume, &author(&bob)).unwrap();
        assert!(!f.log.may_sync(&volume, &author(&bobs_peer)).unwrap());
        // Everything survives a restart.
        let f = f.reopen();
        assert!(f.log.may_sync(&volume, &author(&desktop)).unwrap());
        assert_eq!(f.log.len(&volume).unwrap(), 4);
    }

    #[test]
    fn scan_yields_op_id_order_across_authors_and_pages() {
        let f = Fixture::new();
        let (a, b) = (key(1), key(2));
        members(&f.log, &[&a, &b]);
        let other = VolumeId([2; 16]);
        f.log.add_member(&other, &author(&a)).unwrap();
        let hlc = |millis| Hlc { millis, counter: 0 };
        let noise = SignedOp::sign(&a, other, hlc(150), 1, data_payload(b"elsewhere")).unwrap();
        f.log.append(&noise).unwrap();
        // Interleaved clocks, appended out of order; b and a tie at 300.
        let ops = [
            op(&b, 300, 2, b"b2"),
            op(&a, 100, 1, b"a1"),
            op(&a, 300, 3, b"a3"),
            op(&b, 200, 1, b"b1"),
            op(&a, 250, 2, b"a2"),
            op(&b, 400, 3, b"b3"),
        ];
        for o in &ops {
            f.log.append(o).unwrap();
        }
        let mut expected: Vec<SignedOp> = ops.to_vec();
        expected.sort_by_key(|o| o.id);
        let all = f.log.scan(&VOL, None, 100).unwrap();
        assert_eq!(ids(&all), ids(&expected));
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));

        // Paging with the last id of each page gives the same sequence.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = f.log.scan(&VOL, after.as_ref(), 4).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            paged.extend(page);
        }
        assert_eq!(paged, all);
        // An `after` that is not held starts at the next id.
        let between = OpId {
            hlc: hlc(260),
            author: author(&a),
        };
        assert_eq!(
            ids(&f.log.scan(&VOL, Some(&between), 100).unwrap()),
            ids(&expected[3..])
        );
        assert_eq!(f.log.scan(&other, None, 100).unwrap(), vec![noise]);
        assert_eq!(f.log.len(&VOL).unwrap(), 6);
    }

    #[test]
    fn heads_stop_at_a_gap_until_it_is_filled() {
        let f = Fixture::new();
        let (a, b) = (key(1), key(2));
        members(&f.log, &[&a, &b]);
        for (seq, millis) in [(1, 10), (2, 20), (4, 40), (5, 50)] {
            f.log.append(&op(&a, millis, seq, b"a")).unwrap();
        }
        // Only b's seq 2: b has no head yet.
        f.log.append(&op(&b, 25, 2, b"b")).unwrap();
        let heads = f.log.heads(&VOL).unwrap();
        assert_eq!(heads, BTreeMap::from([(author(&a), 2)]));
        assert_eq!(f.log.next_seq(&VOL, &author(&a)).unwrap(), 6);
        assert_eq!(f.log.next_seq(&VOL, &author(&b)).unwrap(), 3);
        assert_eq!(f.log.next_seq(&VOL, &author(&key(3))).unwrap(), 1);
        assert_eq!(f.log.len(&VOL).unwrap(), 5);

        // The heads are rebuilt from disk the same way.
        let f = f.reopen();
        assert_eq!(f.log.heads(&VOL).unwrap(), heads);

        f.log.append(&op(&a, 30, 3, b"a")).unwrap();
        f.log.append(&op(&b, 15, 1, b"b")).unwrap();
        let filled = BTreeMap::from([(author(&a), 5), (author(&b), 2)]);
        assert_eq!(f.log.heads(&VOL).unwrap(), filled);
        let f = f.reopen();
        assert_eq!(f.log.heads(&VOL).unwrap(), filled);
        assert_eq!(f.log.len(&VOL).unwrap(), 7);
    }

    #[test]
    fn missing_is_exactly_what_the_other_side_lacks() {
        let (ours, theirs) = (Fixture::new(), Fixture::new());
        let (a, b, c) = (key(1), key(2), key(3));
        for log in [&ours.log, &theirs.log] {
            members(log, &[&a, &b, &c]);
        }
        let a_ops: Vec<_> = (1..=5).map(|s| op(&a, 10 * s, s, b"a")).collect();
        let b_ops: Vec<_> = (1..=3).map(|s| op(&b, 10 * s + 1, s, b"b")).collect();
        let c_ops: Vec<_> = (1..=2).map(|s| op(&c, 10 * s + 2, s, b"c")).collect();
        // We hold all of a and b. They hold a 1..=2 and 4 (a gap), b 1..=3, and c (we don't).
        for o in a_ops.iter().chain(&b_ops) {
            ours.log.append(o).unwrap();
        }
        for o in [&a_ops[0], &a_ops[1], &a_ops[3]]
            .into_iter()
            .chain(&b_ops)
            .chain(&c_ops)
        {
            theirs.log.append(o).unwrap();
        }
        let their_heads = theirs.log.heads(&VOL).unwrap();
        assert_eq!(
            their_heads,
            BTreeMap::from([(author(&a), 2), (author(&b), 3), (author(&c), 2)])
        );
        let sent = ours.log.missing(&VOL, &their_heads, 100).unwrap();
        // a 3..=5 (4 again: their head stops below it), nothing of b, nothing of c.
        assert_eq!(ids(&sent), ids(&a_ops[2..]));

        // A limit cuts the answer; asking again with the new heads gets the rest.
        let first = ours.log.missing(&VOL, &their_heads, 1).unwrap();
        assert_eq!(ids(&first), ids(&a_ops[2..3]));
        for o in &first {
            assert_eq!(theirs.log.append(o).unwrap(), Appended::New);
        }
        let their_heads = theirs.log.heads(&VOL).unwrap();
        assert_eq!(their_heads[&author(&a)], 4);
        let rest = ours.log.missing(&VOL, &their_heads, 100).unwrap();
        assert_eq!(ids(&rest), ids(&a_ops[4..]));
        for o in &rest {
            theirs.log.append(o).unwrap();
        }

        // The other way: they send c's ops, and then both logs are equal.
        let back = theirs
            .log
            .missing(&VOL, &ours.log.heads(&VOL).unwrap(), 100);
        for o in &back.unwrap() {
            ours.log.append(o).unwrap();
        }
        assert_eq!(
            ours.log.heads(&VOL).unwrap(),
            theirs.log.heads(&VOL).unwrap()
        );
        assert_eq!(
            ours.log.scan(&VOL, None, 100).unwrap(),
            theirs.log.scan(&VOL, None, 100).unwrap()
        );
        assert!(ours
            .log
            .missing(&VOL, &theirs.log.heads(&VOL).unwrap(), 100)
            .unwrap()
            .is_empty());
        // An empty peer is sent everything, author by author.
        let everything = ours.log.missing(&VOL, &BTreeMap::new(), 100).unwrap();
        assert_eq!(everything.len(), 10);
    }

    #[test]
    fn everything_survives_closing_and_reopening() {
        let f = Fixture::new();
        let (a, b) = (key(1), key(2));
        members(&f.log, &[&a, &b]);
        let ops = [
            op(&a, 10, 1, b"a1"),
            op(&b, 11, 1, b"b1"),
            op(&a, 12, 2, b"a2"),
        ];
        for o in &ops {
            f.log.append(o).unwrap();
        }
        let before = (
            f.log.scan(&VOL, None, 10).unwrap(),
            f.log.heads(&VOL).unwrap(),
            f.log.members(&VOL).unwrap(),
        );
        let f = f.reopen();
        let after = (
            f.log.scan(&VOL, None, 10).unwrap(),
            f.log.heads(&VOL).unwrap(),
            f.log.members(&VOL).unwrap(),
        );
        assert_eq!(before, after);
        assert_eq!(f.log.len(&VOL).unwrap(), 3);
        assert_eq!(f.log.get(&VOL, &ops[1].id).unwrap(), Some(ops[1].clone()));
        assert_eq!(f.log.next_seq(&VOL, &author(&a)).unwrap(), 3);
        // Still idempotent, still refusing equivocation, after the restart.
        assert_eq!(f.log.append(&ops[0]).unwrap(), Appended::Duplicate);
        assert!(matches!(
            f.log.append(&op(&a, 13, 2, b"other")),
            Err(OpLogError::Equivocation { seq: 2, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Whatever order and however often ops arrive, the log ends up with each once, in
        /// OpId order, with heads equal to the contiguous prefix per author.
        #[test]
        fn delivery_order_and_repeats_do_not_matter(
            counts in proptest::collection::vec(0u64..6, 3),
            deliveries in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
            restart_at in any::<proptest::sample::Index>(),
        ) {
            let keys = [key(1), key(2), key(3)];
            let mut all = Vec::new();
            for (k, n) in keys.iter().zip(&counts) {
                for seq in 1..=*n {
                    all.push(op(k, 7 * seq + u64::from(k.public().to_bytes()[0] % 5), seq, b"p"));
                }
            }
            let mut f = Fixture::new();
            members(&f.log, &[&keys[0], &keys[1], &keys[2]]);
            let mut model: BTreeMap<OpId, SignedOp> = BTreeMap::new();
            if !all.is_empty() {
                let restart = restart_at.index(deliveries.len() + 1);
                for (i, d) in deliveries.iter().enumerate() {
                    if i == restart {
                        f = f.reopen();
                    }
                    let o = d.get(&all);
                    let res = f.log.append(o).unwrap();
                    let fresh = model.insert(o.id, o.clone()).is_none();
                    prop_assert_eq!(res == Appended::New, fresh);
                }
            }
            let expected: Vec<SignedOp> = model.values().cloned().collect();
            prop_assert_eq!(f.log.scan(&VOL, None, 1000).unwrap(), expected);
            let mut heads = BTreeMap::new();
            for k in &keys {
                let mut h = 0;
                while model.values().any(|o| o.author() == author(k) && o.seq == h + 1) {
                    h += 1;
                }
                if h > 0 {
                    heads.insert(author(k), h);
                }
            }
            prop_assert_eq!(f.log.heads(&VOL).unwrap(), heads.clone());
            let f = f.reopen();
            prop_assert_eq!(f.log.heads(&VOL).unwrap(), heads);
            prop_assert_eq!(f.log.len(&VOL).unwrap(), model.len() as u64);
        }
    }
}
