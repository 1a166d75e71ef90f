//! Membership of a volume, kept as ops in the volume's own log, so every member derives the
//! same member list from the ops it holds.
//!
//! An op's payload starts with a kind byte: [`DATA`] or [`EPOCH_DATA`] (an fs operation, opaque
//! and encrypted here, under the volume's first key or a later epoch's) or [`CONTROL`] (a
//! [`Control`] in plain postcard: it carries only public keys and sealed secrets).
//!
//! - **Genesis** (the creator's first op): the volume id is derived from the creator's key and a
//!   random nonce ([`volume_id_of`]), so nobody else can write a genesis for that id; its author
//!   is the first member.
//! - **Invite** (by a member): records the public half of a fresh invitation key. The secret half
//!   travels in a join ticket.
//! - **Join** (by anyone): the author proves it holds an invitation's secret key by a signature
//!   over the volume id and its own key ([`join_proof`]), and becomes a member.
//!
//! - **Profile** (by a member user): the user's signed profile, kept by every member if newer
//!   than the one it holds ([`crate::profiles`]).
//!
//! - **SetRole** (by the owner or an admin): a member's new role; which of these stand, and what
//!   each member may do, is decided in [`super::access`].
//! - **RequireIssuer** (by the owner or an admin): joins after it count only with an
//!   attestation from an OpenID Connect issuer (**JoinAttested**), checked against the issuer's
//!   keys the op records ([`crate::crypto::attestation`]).
//!
//! An invitation may be used more than once; whoever holds a ticket can read the volume
//! anyway, since the ticket carries the volume's secret (until key epochs arrive).

use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};

use super::op::{AuthorId, VolumeId};
pub use crate::crypto::attestation::{Attestation, IssuerKeys};

/// Kind byte of a payload defined by the fs layer.
pub const DATA: u8 = 0;
/// Kind byte of a [`Control`] payload.
pub const CONTROL: u8 = 1;
/// Kind byte of an fs operation sealed under a key epoch: the epoch id (16 bytes) follows.
pub const EPOCH_DATA: u8 = 2;
const VOLUME_DOMAIN: &[u8] = b"dfs/volume/v1";
const JOIN_DOMAIN: &[u8] = b"dfs/join/v1";

/// A membership operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Genesis {
        nonce: [u8; 16],
    },
    Invite {
        invite: [u8; 32],
    },
    Join {
        invite: [u8; 32],
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// A member user's profile ([`crate::profiles::SignedProfile::to_bytes`]), replicated to
    /// the volume's members; taken only from the user it describes.
    Profile {
        #[serde(with = "serde_bytes")]
        profile: Vec<u8>,
    },
    /// A member's new role, by the owner or an admin ([`super::access`]): `cutoff` names, per
    /// device of the member, the highest seq the decider held; the member's other ops come
    /// after the decision, whatever their clocks say.
    SetRole {
        member: [u8; 32],
        role: Role,
        cutoff: Vec<([u8; 32], u64)>,
        /// A removal starts a new key epoch: what members write after it is sealed under a
        /// key the removed member never gets.
        epoch: Option<NewEpoch>,
    },
    /// An invitation with terms: joins with it count only when made by `expires_ms`
    /// (milliseconds since the Unix epoch, by the join op's clock; members also refuse to take
    /// a join from its joiner after then, by their own clocks), and with `single_use` only the
    /// first principal's (in op order).
    InviteWith {
        invite: [u8; 32],
        expires_ms: u64,
        single_use: bool,
    },
    /// Withdraw invitation `invite` (by its author, an admin or the owner): joins with it after
    /// this op, in op order, do not count.
    Revoke {
        invite: [u8; 32],
    },
    /// A join whose joiner's issuer vouches for it ([`Attestation`]), for a volume that
    /// requires an issuer ([`Control::RequireIssuer`]); otherwise as [`Control::Join`].
    JoinAttested {
        invite: [u8; 32],
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
        attestation: Attestation,
    },
    /// From this op on (in op order), a join counts only with an attestation that verifies
    /// under these keys (by the owner or an admin); `None` lifts the requirement.
    RequireIssuer {
        keys: Option<IssuerKeys>,
    },
}

impl Control {
    /// A join's invitation key and proof, and its attestation if it carries one.
    pub fn join(&self) -> Option<([u8; 32], &[u8], Option<&Attestation>)> {
        match self {
            Control::Join { invite, proof } => Some((*invite, proof, None)),
            Control::JoinAttested {
                invite,
                proof,
                attestation,
            } => Some((*invite, proof, Some(attestation))),
            _ => None,
        }
    }

    /// The invitation key an invite op records, with its terms.
    pub fn invitation(&self) -> Option<([u8; 32], Option<u64>, bool)> {
        match self {
            Control::Invite { invite } => Some((*invite, None, false)),
            Control::InviteWith {
                invite,
                expires_ms,
                single_use,
            } => Some((*invite, Some(*expires_ms), *single_use)),
            _ => None,
        }
    }
}

/// A volume's next key epoch: a fresh secret, sealed to each remaining member and device
/// ([`crate::crypto::epoch`]). Data ops name the epoch they are sealed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEpoch {
    pub id: [u8; 16],
    pub sealed: Vec<SealedSecret>,
}

/// The epoch's secret for one recipient (an Ed25519 key: a member user or a device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub to: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

/// The most recipients one [`NewEpoch`] may seal to.
pub const MAX_EPOCH_RECIPIENTS: usize = 512;

/// The most devices one [`Control::SetRole`] may name in its cutoff.
pub const MAX_CUTOFF_DEVICES: usize = 256;

/// What a member may do in a volume.
/// (Serialised by variant index in ops, so the names below are free to read well in JSON.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Once a member: its ops are rejected, and it may no longer pull the volume.
    Removed,
    /// Reads; its changes are rejected (the mount is read-only).
    Reader,
    /// Reads, writes and invites.
    Writer,
    /// A writer that also changes the roles of writers and readers, and removes them.
    Admin,
    /// The creator: changes every role but its own.
    Owner,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Removed => "removed",
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Whether a member with this role may change the volume's files.
    pub fn writes(self) -> bool {
        self >= Role::Writer
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "removed" => Ok(Role::Removed),
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(format!(
                "unknown role {s:?} (one of admin, writer, reader, removed)"
            )),
        }
    }
}

/// What an op's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An fs operation sealed under the volume's first key.
    Data(&'a [u8]),
    /// An fs operation sealed under the key of epoch `epoch` ([`NewEpoch`]).
    EpochData {
        epoch: [u8; 16],
        sealed: &'a [u8],
    },
    Control(Control),
}

/// Why a payload is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("empty payload")]
    Empty,
    #[error("unknown payload kind {0}")]
    Kind(u8),
    #[error("malformed control op: {0}")]
    Malformed(String),
}

impl Payload<'_> {
    pub fn parse(payload: &[u8]) -> Result<Payload<'_>, PayloadError> {
        match payload.split_first() {
            None => Err(PayloadError::Empty),
            Some((&DATA, rest)) => Ok(Payload::Data(rest)),
            Some((&CONTROL, rest)) => {
                let (control, trailing) = postcard::take_from_bytes(rest)
                    .map_err(|e| PayloadError::Malformed(e.to_string()))?;
                if !trailing.is_empty() {
                    return Err(PayloadError::Malformed(format!(
                        "{} trailing bytes",
                        trailing.len()
                    )));
                }
                if let Control::SetRole { cutoff, epoch, .. } = &control {
                    if cutoff.len() > MAX_CUTOFF_DEVICES {
                        return Err(PayloadError::Malformed(format!(
                            "a role change naming {} devices (at most {MAX_CUTOFF_DEVICES})",
                            cutoff.len()
                        )));
                    }
                    let recipients = epoch.as_ref().map_or(0, |e| e.sealed.len());
                    if recipients > MAX_EPOCH_RECIPIENTS {
                        return Err(PayloadError::Malformed(format!(
                            "a key epoch sealed to {recipients} keys (at most \
                             {MAX_EPOCH_RECIPIENTS})"
                        )));
                    }
                }
                Ok(Payload::Control(control))
            }
            Some((&EPOCH_DATA, rest)) => match rest.split_first_chunk::<16>() {
                Some((epoch, sealed)) => Ok(Payload::EpochData {
                    epoch: *epoch,
                    sealed,
                }),
                None => Err(PayloadError::Malformed("a key epoch id cut short".into())),
            },
            Some((&kind, _)) => Err(PayloadError::Kind(kind)),
        }
    }
}

/// The payload of an fs operation.
pub fn data_payload(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(DATA);
    out.extend_from_slice(bytes);
    out
}

/// The payload of an fs operation sealed under key epoch `epoch`.
pub fn epoch_data_payload(epoch: &[u8; 16], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + sealed.len());
    out.push(EPOCH_DATA);
    out.extend_from_slice(epoch);
    out.extend_from_slice(sealed);
    out
}

impl Payload<'_> {
    /// Whether this is an fs operation (under any key).
    pub fn is_data(&self) -> bool {
        matches!(self, Payload::Data(_) | Payload::EpochData { .. })
    }
}

/// The payload of a membership operation.
pub fn control_payload(control: &Control) -> Vec<u8> {
    // Serialising a plain enum into a Vec cannot fail.
    postcard::to_extend(control, vec![CONTROL]).unwrap_or_else(|_| vec![CONTROL])
}

/// The id of the volume whose genesis `creator` wrote with `nonce`.
pub fn volume_id_of(creator: &AuthorId, nonce: &[u8; 16]) -> VolumeId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(VOLUME_DOMAIN);
    hasher.update(&creator.0);
    hasher.update(nonce);
    let mut id = [0; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    VolumeId(id)
}

fn join_message(volume: &VolumeId, joiner: &AuthorId) -> Vec<u8> {
    [JOIN_DOMAIN, &volume.0, &joiner.0].concat()
}

/// The invitation key's signature that lets `joiner` join `volume`.
pub fn join_proof(invite: &ed25519::Keypair, volume: &VolumeId, joiner: &AuthorId) -> Vec<u8> {
    invite.sign(&join_message(volume, joiner))
}

/// Whether `proof` shows that `joiner` holds the secret of invitation `invite` for `volume`.
pub fn verify_join(invite: &[u8; 32], volume: &VolumeId, joiner: &AuthorId, proof: &[u8]) -> bool {
    ed25519::PublicKey::try_from_bytes(invite)
        .is_ok_and(|key| key.verify(&join_message(volume, joiner), proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn payloads_round_trip_and_junk_is_an_error() {
        let c = Control::Join {
            invite: [3; 32],
            proof: vec![9; 64],
        };
        assert_eq!(
            Payload::parse(&control_payload(&c)).unwrap(),
            Payload::Control(c)
        );
        assert_eq!(
            Payload::parse(&data_payload(b"x")).unwrap(),
            Payload::Data(b"x")
        );
        assert_eq!(
            Payload::parse(&epoch_data_payload(&[4; 16], b"y")).unwrap(),
            Payload::EpochData {
                epoch: [4; 16],
                sealed: b"y"
            }
        );
        assert!(matches!(
            Payload::parse(&[EPOCH_DATA, 1, 2]),
            Err(PayloadError::Malformed(_))
        ));
        assert_eq!(Payload::parse(&[]), Err(PayloadError::Empty));
        assert_eq!(Payload::parse(&[7, 1]), Err(PayloadError::Kind(7)));
        assert!(matches!(
            Payload::parse(&[CONTROL, 200]),
            Err(PayloadError::Malformed(_))
        ));
        let mut long = control_payload(&Control::Invite { invite: [1; 32] });
        long.push(0);
        assert!(matches!(
            Payload::parse(&long),
            Err(PayloadError::Malformed(_))
        ));
    }

    #[test]
    fn a_join_proof_binds_the_volume_and_the_joiner() {
        let invite = ed25519::Keypair::generate();
        let public = invite.public().to_bytes();
        let (v, w) = (VolumeId([1; 16]), VolumeId([2; 16]));
        let (me, you) = (AuthorId([5; 32]), AuthorId([6; 32]));
        let proof = join_proof(&invite, &v, &me);
        assert!(verify_join(&public, &v, &me, &proof));
        assert!(!verify_join(&public, &w, &me, &proof));
        assert!(!verify_join(&public, &v, &you, &proof));
        let other = ed25519::Keypair::generate().public().to_bytes();
        assert!(!verify_join(&other, &v, &me, &proof));
        assert!(!verify_join(&[0; 32], &v, &me, &proof));
    }

    #[test]
    fn volume_ids_depend_on_creator_and_nonce() {
        let a = volume_id_of(&AuthorId([1; 32]), &[0; 16]);
        assert_eq!(a, volume_id_of(&AuthorId([1; 32]), &[0; 16]));
        assert_ne!(a, volume_id_of(&AuthorId([2; 32]), &[0; 16]));
        assert_ne!(a, volume_id_of(&AuthorId([1; 32]), &[1; 16]));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Payload::parse(&bytes);
        }
    }
}
