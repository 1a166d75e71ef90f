//! The volumes this peer is a member of: creating one, inviting others with a join ticket, and
//! joining with one. Membership itself lives in each volume's op log ([`crate::oplog::control`]);
//! this module keeps the local side: a name for each volume, its secret, and a join that waits to
//! be taken by a member.
//!
//! Table `volumes`: volume id -> [`VolumeRecord`] (version byte + postcard).
//!
//! A join ticket (`dfs-ticket-` + hex) carries the volume id, a suggested name, the volume's
//! secret (whoever holds the ticket can read the volume), the secret half of a fresh invitation
//! key (whoever holds it can become a member), and the inviter's addresses to dial.

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::keyring::{EpochSecret, Keyring};
use crate::meta::{MetaError, CF_VOLUMES};
use crate::net::sync::{Acting, IngestError, OpsHub};
use crate::oplog::control::{
    control_payload, join_proof, volume_id_of, Control, NewEpoch, SealedSecret,
    MAX_EPOCH_RECIPIENTS,
};
use crate::oplog::{Access, AuthorId, OpLogError, Role, SignedOp, VolumeId};

const RECORD_V1: u8 = 1;
const RECORD_V2: u8 = 2;
const TICKET_PREFIX: &str = "dfs-ticket-";
/// Longest volume name accepted.
pub const MAX_NAME: usize = 64;

/// What this peer keeps about a volume it is a member of (or joining).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// The volume's secret: chunk keys and op payloads of the volume derive from it.
    pub secret: [u8; 32],
    /// This peer's join op, until a member took it and it came back in the log.
    #[serde(with = "serde_bytes")]
    pub pending_join: Vec<u8>,
    /// The key epochs begun since the volume was made that this peer holds ([`Keyring`]).
    pub epochs: Vec<EpochSecret>,
}

/// [`VolumeRecord`] as format 1 kept it, before key epochs.
#[derive(Deserialize)]
struct VolumeRecordV1 {
    name: String,
    secret: [u8; 32],
    #[serde(with = "serde_bytes")]
    pending_join: Vec<u8>,
}

/// One op of a volume's log as `dfs volume log` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The op's clock reading: milliseconds since the Unix epoch, and a counter.
    pub millis: u64,
    pub counter: u32,
    pub author: String,
    /// The user who co-signed the op (hex key), if any: the op is that user's, made on the
    /// `author` peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The display name of the user's newest profile this peer holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub seq: u64,
    /// `genesis`, `invite`, `join`, `profile`, `role` or `data`.
    pub kind: String,
    /// For `data`: the fs operation, decrypted with the volume's key (hex of its bytes, until
    /// the fs layer names them); for `role`: the member and its new role; for `profile`: the
    /// display name; empty otherwise.
    pub data: String,
    /// Why the op has no effect, when the roles reject it ([`crate::oplog::access`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Sign `profile` as `user` (logged in here), keep it, and commit it to every volume the user
/// is a member of; returns the signed profile and the ops to gossip.
pub fn set_profile(
    hub: &OpsHub,
    acting: &Acting,
    profile: crate::profiles::Profile,
) -> Result<(crate::profiles::SignedProfile, Vec<SignedOp>), VolumeError> {
    let user = acting.user().ok_or(VolumeError::NoUser)?;
    let signed = crate::profiles::SignedProfile::sign(user.keypair(), profile)
        .map_err(VolumeError::Profile)?;
    crate::profiles::ProfileStore::new(hub.oplog().db()).put(&signed)?;
    let mut ops = Vec::new();
    for (volume, _) in records(hub)? {
        // Not to volumes the user was removed from (they would reject it).
        if hub
            .role_of(acting, &volume)?
            .is_some_and(|role| role >= Role::Reader)
        {
            ops.extend(hub.commit_profile(acting, &volume)?);
        }
    }
    Ok((signed, ops))
}

/// A volume as `dfs volume list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub id: String,
    pub name: String,
    pub members: usize,
    pub ops: u64,
    /// False while a join waits for a member to take it.
    pub joined: bool,
    /// Who created the volume (the genesis op's user, or peer), once its genesis is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<MemberInfo>,
}

/// A member of a volume as `dfs volume members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's key, hex: a user's, or a peer's for a member no user signs for.
    pub id: String,
    /// The display name of the member's newest profile held here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The peers that have signed ops for this member (for a user: its devices), hex.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The member's role now: owner, admin, writer, reader or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Whether this member is who asked (the user logged in for the caller's uid, or this
    /// peer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub you: bool,
}

impl MemberInfo {
    /// The member for people: `Display Name (1a2b3c4d)`, or the short key alone (names are
    /// claims, so the key is always beside them).
    pub fn label(&self) -> String {
        let short = self.id.get(..8).unwrap_or(&self.id);
        match &self.display_name {
            Some(name) => format!("{name} ({short})"),
            None => short.to_string(),
        }
    }
}

fn member_info(
    profiles: &crate::profiles::ProfileStore<'_>,
    devices: &[(AuthorId, AuthorId)],
    access: &Access,
    member: AuthorId,
) -> MemberInfo {
    MemberInfo {
        id: member.to_string(),
        display_name: profiles.display_name(&member),
        devices: devices
            .iter()
            .filter(|(_, user)| *user == member)
            .map(|(peer, _)| peer.to_string())
            .collect(),
        role: access.current_role(&member),
        you: false,
    }
}

/// `dfs volume members`: the members of volume `name`, with their names, devices and roles
/// (removed ones included).
pub fn members(hub: &OpsHub, acting: &Acting, name: &str) -> Result<Vec<MemberInfo>, VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    let me = hub.principal(acting).to_string();
    let mut members = members_of(hub, &volume)?;
    for m in &mut members {
        m.you = m.id == me;
    }
    Ok(members)
}

fn members_of(hub: &OpsHub, volume: &VolumeId) -> Result<Vec<MemberInfo>, VolumeError> {
    let profiles = crate::profiles::ProfileStore::new(hub.oplog().db());
    let devices = hub.oplog().devices(volume)?;
    let access = hub.oplog().access(volume)?;
    // Those whose join does not count (an expired, used or revoked invitation) are left out.
    Ok(hub
        .oplog()
        .members(volume)?
        .into_iter()
        .filter(|m| access.current_role(m).is_some())
        .map(|m| member_info(&profiles, &devices, &access, m))
        .collect())
}

/// The member of `volume` that `query` names: its key in hex (whole, or a prefix of at least 8
/// digits) or its display name, either naming exactly one member.
fn find_member(hub: &OpsHub, name: &str, query: &str) -> Result<MemberInfo, VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    let members = members_of(hub, &volume)?;
    let query_hex = query.to_ascii_lowercase();
    let by_key: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| query_hex.len() >= 8 && m.id.starts_with(&query_hex))
        .collect();
    let found: Vec<&MemberInfo> = if by_key.is_empty() {
        members
            .iter()
            .filter(|m| m.display_name.as_deref() == Some(query))
            .collect()
    } else {
        by_key
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(VolumeError::NoSuchMember {
            name: name.to_string(),
            query: query.to_string(),
        }),
        _ => Err(VolumeError::AmbiguousMember {
            query: query.to_string(),
            count: found.len(),
        }),
    }
}

/// The keys of `volume` this peer holds ([`Keyring`]): the first from its record, the epochs
/// from its record and those sealed to this peer in the log. Epochs learned from the log are
/// written to the record, so offline commands (`dfs gc`) know them too.
pub fn keyring(hub: &OpsHub, volume: &VolumeId) -> Result<Keyring, VolumeError> {
    let (_, mut record) = records(hub)?
        .into_iter()
        .find(|(id, _)| id == volume)
        .ok_or_else(|| VolumeError::Unknown(volume.to_string()))?;
    let access = hub.oplog().access(volume)?;
    let ring = Keyring::new(
        *volume,
        &record.secret,
        &record.epochs,
        &access,
        (&hub.peer_seed(), &hub.author().0),
    );
    if ring.secrets().len() > record.epochs.len() {
        record.epochs = ring.secrets().to_vec();
        save(hub, volume, &record)?;
    }
    Ok(ring)
}

/// A new key epoch for `volume` sealed to every member left once `leaving` is gone, and to
/// their devices and this peer; the secret is kept in the volume's record at once.
fn new_epoch(hub: &OpsHub, volume: &VolumeId, leaving: &AuthorId) -> Result<NewEpoch, VolumeError> {
    let access = hub.oplog().access(volume)?;
    let devices = hub.oplog().devices(volume)?;
    let mut recipients: std::collections::BTreeSet<AuthorId> = access
        .roles()
        .into_iter()
        .filter(|(member, role)| member != leaving && *role >= Role::Reader)
        .flat_map(|(member, _)| {
            devices
                .iter()
                .filter(move |(_, user)| *user == member)
                .map(|(peer, _)| *peer)
                .chain(std::iter::once(member))
        })
        .collect();
    recipients.insert(hub.author());
    let id: [u8; 16] = rand::random();
    let secret: [u8; 32] = rand::random();
    let mut sealed = Vec::new();
    for to in recipients.iter().take(MAX_EPOCH_RECIPIENTS) {
        match crate::crypto::epoch::seal_to(&to.0, &secret) {
            Ok(secret) => sealed.push(SealedSecret { to: to.0, secret }),
            Err(e) => {
                tracing::warn!(%volume, recipient = %to, error = %e, "cannot seal the new key epoch to a member")
            }
        }
    }
    let (_, mut record) = records(hub)?
        .into_iter()
        .find(|(v, _)| v == volume)
        .ok_or_else(|| VolumeError::Unknown(volume.to_string()))?;
    record.epochs.push((id, secret));
    save(hub, volume, &record)?;
    Ok(NewEpoch { id, sealed })
}

/// `dfs volume role NAME MEMBER ROLE` (and `dfs volume remove`): give `member` of volume `name`
/// its new `role`, as `acting`, who must be the owner or an admin (and an admin decides only
/// for writers and readers). Returns the member and the op to gossip.
pub fn set_role(
    hub: &OpsHub,
    acting: &Acting,
    name: &str,
    member: &str,
    role: Role,
) -> Result<(MemberInfo, SignedOp), VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    let target = find_member(hub, name, member)?;
    let target_id: AuthorId = target
        .id
        .parse()
        .map_err(|_| VolumeError::Corrupt(format!("member key {}", target.id)))?;
    let me = hub.principal(acting);
    let mine = hub.oplog().access(&volume)?.current_role(&me);
    let refuse = |why: &str| VolumeError::NotAllowed(why.to_string());
    match (mine, target.role) {
        (Some(Role::Owner), _) if target_id == me => {
            return Err(refuse("the owner's role cannot be changed"))
        }
        (Some(Role::Owner), _) if role == Role::Owner => {
            return Err(refuse("a volume has one owner, its creator"))
        }
        (Some(Role::Owner), _) => {}
        (Some(Role::Admin), Some(theirs)) if theirs >= Role::Admin || role >= Role::Admin => {
            return Err(refuse(
                "an admin decides for writers and readers only; ask the owner",
            ))
        }
        (Some(Role::Admin), _) => {}
        _ => return Err(refuse("only the volume's owner and admins change roles")),
    }
    // Every op of the member this peer holds came before the decision; any other after it.
    let heads = hub.oplog().heads(&volume)?;
    let devices: Vec<AuthorId> = hub
        .oplog()
        .devices(&volume)?
        .into_iter()
        .filter(|(_, user)| *user == target_id)
        .map(|(peer, _)| peer)
        .chain(std::iter::once(target_id))
        .collect();
    let cutoff = devices
        .iter()
        .filter_map(|d| heads.get(d).map(|seq| (d.0, *seq)))
        .collect();
    // A member who leaves takes the keys it holds: what is written after it left is sealed
    // under a key epoch it never gets.
    let epoch = if role == Role::Removed {
        Some(new_epoch(hub, &volume, &target_id)?)
    } else {
        None
    };
    let control = Control::SetRole {
        member: target_id.0,
        role,
        cutoff,
        epoch,
    };
    let op = hub.commit(acting, &volume, control_payload(&control))?;
    hub.repo().record_event(
        EventKind::UserAction,
        name,
        &format!("made member {} {role}", target.label()),
    );
    let target = members_of(hub, &volume)?
        .into_iter()
        .find(|m| m.id == target.id)
        .unwrap_or(target);
    Ok((target, op))
}

/// The creator of `volume`: the principal of its genesis op (among its first ops: a member
/// whose clock ran behind may have ops ordered before it).
fn owner(hub: &OpsHub, volume: &VolumeId) -> Result<Option<MemberInfo>, VolumeError> {
    let first = hub.oplog().scan(volume, None, 16)?;
    let Some(genesis) = first.iter().find(|op| {
        matches!(
            crate::oplog::Payload::parse(&op.payload),
            Ok(crate::oplog::Payload::Control(Control::Genesis { .. }))
        )
    }) else {
        return Ok(None);
    };
    let profiles = crate::profiles::ProfileStore::new(hub.oplog().db());
    let devices = hub.oplog().devices(volume)?;
    let access = hub.oplog().access(volume)?;
    Ok(Some(member_info(
        &profiles,
        &devices,
        &access,
        genesis.principal(),
    )))
}

/// What a join ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub volume: VolumeId,
    pub name: String,
    pub secret: [u8; 32],
    pub invite_secret: [u8; 32],
    pub addrs: Vec<String>,
    /// The key epochs the inviter holds, so the joiner reads what was written since removals
    /// before it came.
    pub epochs: Vec<EpochSecret>,
    /// The invitation's terms, so a joiner learns at once that a ticket expired.
    pub terms: InviteTerms,
}

/// What went wrong with a volume command.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("a volume named {0:?} exists already on this peer")]
    NameTaken(String),
    #[error("no volume named {0:?} on this peer (see `dfs volume list`)")]
    Unknown(String),
    #[error("invalid volume name {0:?}: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("this peer is already a member of volume {0} (as {1:?})")]
    AlreadyMember(VolumeId, String),
    #[error("this peer has not been admitted to volume {0:?} yet: it waits for a member to sync")]
    NotYetMember(String),
    #[error("{who} is not a member of volume {name:?}: log in as a member user (`dfs login`)")]
    NotAMember { name: String, who: String },
    #[error("no member of volume {name:?} is called {query:?} (give a display name or at least 8 digits of the key; see `dfs volume members`)")]
    NoSuchMember { name: String, query: String },
    #[error("{query:?} names {count} members: give more digits of the key")]
    AmbiguousMember { query: String, count: usize },
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("no user is logged in for this uid (`dfs login NAME`)")]
    NoUser,
    #[error(transparent)]
    Profile(crate::profiles::ProfileError),
    #[error("not a valid join ticket: {0}")]
    BadTicket(String),
    #[error("the volume table is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Log(#[from] OpLogError),
    #[error(transparent)]
    Op(#[from] IngestError),
    #[error(transparent)]
    Issuer(#[from] crate::oidc::OidcError),
}

impl Ticket {
    pub fn encode(&self) -> String {
        // Serialising a plain struct into a Vec cannot fail.
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        format!("{TICKET_PREFIX}{}", dfs_placement::ids::to_hex(&bytes))
    }

    pub fn decode(text: &str) -> Result<Ticket, VolumeError> {
        let bad = |m: &str| VolumeError::BadTicket(m.to_string());
        let hex = text
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| bad("it does not start with dfs-ticket-"))?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(bad("the part after dfs-ticket- is not hex"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("the part after dfs-ticket- is not hex"))?;
        let (ticket, rest): (Ticket, _) =
            postcard::take_from_bytes(&bytes).map_err(|e| bad(&format!("garbled ({e})")))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        check_name(&ticket.name)?;
        Ok(ticket)
    }
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_string()))
    }
}

fn encode_record(record: &VolumeRecord) -> Vec<u8> {
    postcard::to_extend(record, vec![RECORD_V2]).unwrap_or_default()
}

fn decode_record(bytes: &[u8]) -> Result<VolumeRecord, VolumeError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => postcard::from_bytes(rest)
            .map(|v1: VolumeRecordV1| VolumeRecord {
                name: v1.name,
                secret: v1.secret,
                pending_join: v1.pending_join,
                epochs: Vec::new(),
            })
            .map_err(|e| VolumeError::Corrupt(e.to_string())),
        Some((&RECORD_V2, rest)) => {
            postcard::from_bytes(rest).map_err(|e| VolumeError::Corrupt(e.to_string()))
        }
        _ => Err(VolumeError::Corrupt("unknown record format".into())),
    }
}

/// Every volume this peer keeps, in id order.
pub fn records(hub: &OpsHub) -> Result<Vec<(VolumeId, VolumeRecord)>, VolumeError> {
    records_in(hub.oplog().db())
}

/// Every volume kept in a data directory's database, in id order (for offline commands such
/// as `dfs gc`, which run without a peer).
pub fn records_in(db: &crate::meta::MetaDb) -> Result<Vec<(VolumeId, VolumeRecord)>, VolumeError> {
    let rows = db.cf_scan(CF_VOLUMES, &[], None, usize::MAX)?;
    rows.iter()
        .map(|(k, v)| {
            let id = k
                .as_slice()
                .try_into()
                .map(VolumeId)
                .map_err(|_| VolumeError::Corrupt(format!("a key of {} bytes", k.len())))?;
            Ok((id, decode_record(v)?))
        })
        .collect()
}

/// The volume this peer calls `name`.
pub fn by_name(hub: &OpsHub, name: &str) -> Result<(VolumeId, VolumeRecord), VolumeError> {
    records(hub)?
        .into_iter()
        .find(|(_, r)| r.name == name)
        .ok_or_else(|| VolumeError::Unknown(name.to_string()))
}

fn save(hub: &OpsHub, id: &VolumeId, record: &VolumeRecord) -> Result<(), VolumeError> {
    hub.oplog().db().cf_write(
        [(CF_VOLUMES, id.0.to_vec(), Some(encode_record(record)))],
        true,
    )?;
    Ok(())
}

fn name_free(hub: &OpsHub, name: &str) -> Result<(), VolumeError> {
    check_name(name)?;
    if records(hub)?.iter().any(|(_, r)| r.name == name) {
        return Err(VolumeError::NameTaken(name.to_string()));
    }
    Ok(())
}

/// Create a volume named `name` with `acting` (a user, or this peer) as its first member.
pub fn create(hub: &OpsHub, acting: &Acting, name: &str) -> Result<VolumeId, VolumeError> {
    name_free(hub, name)?;
    let nonce: [u8; 16] = rand::random();
    let volume = volume_id_of(&hub.principal(acting), &nonce);
    hub.commit(
        acting,
        &volume,
        control_payload(&Control::Genesis { nonce }),
    )?;
    // The creator's name, for the members to come.
    hub.commit_profile(acting, &volume)?;
    let record = VolumeRecord {
        name: name.to_string(),
        secret: rand::random(),
        pending_join: Vec::new(),
        epochs: Vec::new(),
    };
    save(hub, &volume, &record)?;
    hub.repo().record_event(
        EventKind::UserAction,
        name,
        &format!("created volume {volume}"),
    );
    Ok(volume)
}

/// A ticket that lets its holder join volume `name`, dialling `addrs` to reach this peer.
/// What an invitation allows: until when (`None`: for good), and how many principals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteTerms {
    /// Milliseconds since the Unix epoch.
    pub expires_ms: Option<u64>,
    pub single_use: bool,
    /// The OpenID Connect issuer the volume required joiners to be vouched for by when the
    /// ticket was made ([`require_issuer`]), so the joiner shows its attestation.
    #[serde(default)]
    pub issuer: Option<String>,
}

pub fn invite(
    hub: &OpsHub,
    acting: &Acting,
    name: &str,
    addrs: Vec<String>,
    terms: InviteTerms,
) -> Result<Ticket, VolumeError> {
    let (volume, record) = by_name(hub, name)?;
    if !hub.is_in(&volume)? {
        return Err(VolumeError::NotYetMember(name.to_string()));
    }
    if !hub.oplog().is_member(&volume, &hub.principal(acting))? {
        return Err(VolumeError::NotAMember {
            name: name.to_string(),
            who: match acting.user() {
                Some(user) => format!("user {}", user.name()),
                None => "this peer (no user logged in)".to_string(),
            },
        });
    }
    let invite = libp2p::identity::ed25519::Keypair::generate();
    let mut terms = terms;
    terms.issuer = hub
        .oplog()
        .access(&volume)?
        .required_issuer()
        .map(|keys| keys.issuer.clone());
    let control = match terms {
        InviteTerms {
            expires_ms: None,
            single_use: false,
            ..
        } => Control::Invite {
            invite: invite.public().to_bytes(),
        },
        InviteTerms {
            expires_ms,
            single_use,
            ..
        } => Control::InviteWith {
            invite: invite.public().to_bytes(),
            expires_ms: expires_ms.unwrap_or(u64::MAX),
            single_use,
        },
    };
    hub.commit(acting, &volume, control_payload(&control))?;
    let mut invite_secret = [0; 32];
    invite_secret.copy_from_slice(invite.secret().as_ref());
    hub.repo().record_event(
        EventKind::UserAction,
        name,
        "made an invitation (join ticket)",
    );
    let epochs = keyring(hub, &volume)?.secrets().to_vec();
    Ok(Ticket {
        epochs,
        terms,
        volume,
        name: record.name,
        secret: record.secret,
        invite_secret,
        addrs,
    })
}

/// Join the volume of `ticket` under `name` (default: the ticket's). The join op is kept here
/// and handed to members with every pull until one takes it ([`pending_join`]).
pub fn join(
    hub: &OpsHub,
    acting: &Acting,
    ticket: &Ticket,
    name: Option<&str>,
) -> Result<VolumeId, VolumeError> {
    let name = name.unwrap_or(&ticket.name);
    let volume = ticket.volume;
    if let Some(expires_ms) = ticket.terms.expires_ms {
        if crate::oplog::physical_now_ms() > expires_ms {
            return Err(VolumeError::BadTicket(format!(
                "it expired {} s ago; ask for a new one",
                (crate::oplog::physical_now_ms() - expires_ms) / 1000
            )));
        }
    }
    if let Some((_, r)) = records(hub)?.into_iter().find(|(id, _)| *id == volume) {
        return Err(VolumeError::AlreadyMember(volume, r.name));
    }
    name_free(hub, name)?;
    let mut secret = ticket.invite_secret;
    let invite = libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut secret)
        .map(libp2p::identity::ed25519::Keypair::from)
        .map_err(|e| VolumeError::BadTicket(format!("bad invitation key ({e})")))?;
    let me = hub.principal(acting);
    let proof = join_proof(&invite, &volume, &me);
    let control = match &ticket.terms.issuer {
        None => Control::Join {
            invite: invite.public().to_bytes(),
            proof,
        },
        Some(issuer) => Control::JoinAttested {
            invite: invite.public().to_bytes(),
            proof,
            attestation: attestation_for(hub, acting, name, issuer)?,
        },
    };
    let op = hub.sign_unlogged(acting, &volume, control_payload(&control))?;
    let record = VolumeRecord {
        name: name.to_string(),
        secret: ticket.secret,
        pending_join: op.to_bytes(),
        epochs: ticket.epochs.clone(),
    };
    save(hub, &volume, &record)?;
    hub.repo().record_event(
        EventKind::UserAction,
        name,
        &format!("joining volume {volume} with a ticket"),
    );
    Ok(volume)
}

/// The attestation the acting user shows to join volume `name`, which requires `issuer`.
fn attestation_for(
    hub: &OpsHub,
    acting: &Acting,
    name: &str,
    issuer: &str,
) -> Result<crate::oidc::Attestation, VolumeError> {
    let needs = || {
        VolumeError::NotAllowed(format!(
            "volume {name:?} admits only users vouched for by {issuer}: log in with `dfs login --oidc {issuer}` first"
        ))
    };
    let user = acting.user().ok_or_else(needs)?;
    let binding = crate::oidc::Bindings::new(hub.repo().path())
        .load(user.name())
        .map_err(|e| VolumeError::NotAllowed(e.to_string()))?
        .filter(|b| b.issuer == issuer)
        .ok_or_else(needs)?;
    binding
        .attestation()
        .ok_or_else(|| VolumeError::Corrupt(format!("the OIDC binding of user {}", user.name())))
}

/// `dfs volume require-issuer NAME`: from now on, joins count only with an attestation that
/// verifies under `keys` (fetched from the issuer by the caller), or with `None` without one.
/// Only the owner and admins decide it. Returns the op to gossip.
pub fn require_issuer(
    hub: &OpsHub,
    acting: &Acting,
    name: &str,
    keys: Option<crate::oidc::IssuerKeys>,
) -> Result<SignedOp, VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    let me = hub.principal(acting);
    let role = hub.oplog().access(&volume)?.current_role(&me);
    if role.is_none_or(|role| role < Role::Admin) {
        return Err(VolumeError::NotAllowed(
            "only the volume's owner and admins decide whom it admits".to_string(),
        ));
    }
    let what = match &keys {
        Some(keys) => format!("joiners need an attestation from {}", keys.issuer),
        None => "joiners need no issuer's attestation".to_string(),
    };
    let op = hub.commit(
        acting,
        &volume,
        control_payload(&Control::RequireIssuer { keys }),
    )?;
    hub.repo().record_event(EventKind::UserAction, name, &what);
    Ok(op)
}

/// `dfs volume revoke NAME TICKET`: withdraw the invitation of `ticket` (made by `acting`, or
/// `acting` is an admin or the owner): joins with it from now on do not count. Returns the op
/// to gossip.
pub fn revoke(
    hub: &OpsHub,
    acting: &Acting,
    name: &str,
    ticket: &Ticket,
) -> Result<SignedOp, VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    if ticket.volume != volume {
        return Err(VolumeError::BadTicket(format!(
            "it is a ticket for volume {}, not {name:?}",
            ticket.volume
        )));
    }
    let invite = invitation_key(ticket)?;
    let op = hub.commit(
        acting,
        &volume,
        control_payload(&Control::Revoke { invite }),
    )?;
    // The rules decide whether it stands; say so now rather than let it be void quietly.
    if let Err(why) = hub.oplog().access(&volume)?.verdict(&op) {
        return Err(VolumeError::NotAllowed(format!(
            "the revocation is void: {why}"
        )));
    }
    hub.repo()
        .record_event(EventKind::UserAction, name, "revoked an invitation");
    Ok(op)
}

/// The public invitation key of a ticket.
fn invitation_key(ticket: &Ticket) -> Result<[u8; 32], VolumeError> {
    let mut secret = ticket.invite_secret;
    libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut secret)
        .map(|s| {
            libp2p::identity::ed25519::Keypair::from(s)
                .public()
                .to_bytes()
        })
        .map_err(|e| VolumeError::BadTicket(format!("bad invitation key ({e})")))
}

/// This peer's join op of `volume`, while it is not a member there yet.
pub fn pending_join(hub: &OpsHub, volume: &VolumeId) -> Option<SignedOp> {
    if hub.is_in(volume).unwrap_or(false) {
        return None;
    }
    let bytes = hub.oplog().db().cf_get(CF_VOLUMES, &volume.0).ok()??;
    let record = decode_record(&bytes).ok()?;
    SignedOp::from_bytes(&record.pending_join).ok()
}

/// `dfs volume log`: the newest `limit` ops of volume `name`, oldest first.
pub fn log(hub: &OpsHub, name: &str, limit: usize) -> Result<Vec<LogEntry>, VolumeError> {
    let (volume, _) = by_name(hub, name)?;
    let keys = keyring(hub, &volume)?;
    let profiles = crate::profiles::ProfileStore::new(hub.oplog().db());
    let access = hub.oplog().access(&volume)?;
    let total = hub.oplog().len(&volume)?;
    let skip = total.saturating_sub(limit as u64);
    let mut out = Vec::new();
    let mut after = None;
    let mut seen = 0u64;
    loop {
        let page = hub.oplog().scan(&volume, after.as_ref(), 1024)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for op in page {
            seen += 1;
            if seen <= skip {
                continue;
            }
            let (kind, data) = match crate::oplog::Payload::parse(&op.payload) {
                Ok(crate::oplog::Payload::Control(Control::Genesis { .. })) => {
                    ("genesis", String::new())
                }
                Ok(crate::oplog::Payload::Control(Control::Invite { .. })) => {
                    ("invite", String::new())
                }
                Ok(crate::oplog::Payload::Control(Control::InviteWith {
                    expires_ms,
                    single_use,
                    ..
                })) => (
                    "invite",
                    format!(
                        "expires_ms={expires_ms}{}",
                        if single_use { " single_use" } else { "" }
                    ),
                ),
                Ok(crate::oplog::Payload::Control(Control::Revoke { invite })) => {
                    ("revoke", dfs_placement::ids::to_hex(&invite[..4]))
                }
                Ok(crate::oplog::Payload::Control(Control::Join { .. })) => ("join", String::new()),
                Ok(crate::oplog::Payload::Control(Control::JoinAttested { .. })) => {
                    ("join", "with an issuer's attestation".to_string())
                }
                Ok(crate::oplog::Payload::Control(Control::RequireIssuer { keys })) => (
                    "require",
                    match keys {
                        Some(keys) => format!("an attestation from {}", keys.issuer),
                        None => "no issuer".to_string(),
                    },
                ),
                Ok(crate::oplog::Payload::Control(Control::SetRole { member, role, .. })) => {
                    let member = AuthorId(member);
                    let who = match profiles.display_name(&member) {
                        Some(name) => format!("{name} ({})", &member.to_string()[..8]),
                        None => member.to_string()[..8].to_string(),
                    };
                    ("role", format!("{who} -> {role}"))
                }
                Ok(crate::oplog::Payload::Control(Control::Profile { profile })) => (
                    "profile",
                    match crate::profiles::SignedProfile::from_bytes(&profile) {
                        Ok(p) => format!("display name {:?}", p.profile.display_name),
                        Err(e) => e.to_string(),
                    },
                ),
                Ok(crate::oplog::Payload::Data(_) | crate::oplog::Payload::EpochData { .. }) => {
                    match keys.open(&op.payload) {
                        Ok(plain) => ("data", dfs_placement::ids::to_hex(&plain)),
                        Err(e) => ("data", format!("({e})")),
                    }
                }
                Err(e) => ("unknown", e.to_string()),
            };
            out.push(LogEntry {
                millis: op.id.hlc.millis,
                counter: op.id.hlc.counter,
                author: op.id.author.to_string(),
                user: op.user.map(|u| u.user.to_string()),
                user_name: op.user.and_then(|u| profiles.display_name(&u.user)),
                seq: op.seq,
                kind: kind.into(),
                data,
                rejected: access.verdict(&op).err().map(|why| why.to_string()),
            });
        }
    }
    Ok(out)
}

/// `dfs volume list`.
pub fn list(hub: &OpsHub) -> Result<Vec<VolumeInfo>, VolumeError> {
    records(hub)?
        .into_iter()
        .map(|(id, r)| {
            Ok(VolumeInfo {
                id: id.to_string(),
                name: r.name,
                members: {
                    let access = hub.oplog().access(&id)?;
                    hub.oplog()
                        .members(&id)?
                        .iter()
                        .filter(|m| access.current_role(m).is_some_and(|r| r >= Role::Reader))
                        .count()
                },
                ops: hub.oplog().len(&id)?,
                joined: hub.is_in(&id)?,
                owner: owner(hub, &id)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_junk_is_refused() {
        let t = Ticket {
            volume: VolumeId([4; 16]),
            name: "team".into(),
            secret: [1; 32],
            invite_secret: [2; 32],
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            epochs: vec![([3; 16], [4; 32])],
            terms: InviteTerms {
                expires_ms: Some(5),
                single_use: true,
                issuer: Some("http://127.0.0.1:1".into()),
            },
        };
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
        for junk in [
            "",
            "dfs-ticket-",
            "dfs-ticket-zz",
            "dfs-ticket-abc",
            "hello",
            "dfs-ticket-é1",
        ] {
            assert!(Ticket::decode(junk).is_err(), "{junk:?} taken");
        }
        let mut bad_name = t.clone();
        bad_name.name = "../etc".into();
        assert!(matches!(
            Ticket::decode(&bad_name.encode()),
            Err(VolumeError::BadName(_))
        ));
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "team-docs", "v1.2_x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "with space",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
