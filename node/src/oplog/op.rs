//! Signed operations: ids, the canonical signed message, and the versioned wire/disk encoding.
//!
//! An op is made once by its author ([`SignedOp::sign`]) and then only moved around: peers
//! check it with [`SignedOp::verify`] and pass on the exact bytes of [`SignedOp::to_bytes`].
//! [`SignedOp::from_bytes`] accepts only the canonical encoding, so an op has exactly one byte
//! form, and any change to those bytes either fails to decode or fails to verify.

use std::fmt;
use std::str::FromStr;

use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};

use super::hlc::Hlc;

/// Prefix of every signed message, so an op signature can never be mistaken for a signature
/// of anything else made with the same key (the key is also the peer's libp2p identity).
const SIGN_DOMAIN: &[u8] = b"dfs/op/v1";
/// Prefix of the signed message of an op that a user co-signs (it names the user, so the
/// peer's signature cannot be moved to another user's op).
const SIGN_DOMAIN_V2: &[u8] = b"dfs/op/v2";
/// Prefix of what a user signs: the op's signed message, under the user's own domain.
const USER_SIGN_DOMAIN: &[u8] = b"dfs/op-user/v1";
/// First byte of [`SignedOp::to_bytes`]: an op signed by its author (a peer) only.
const FORMAT_V1: u8 = 1;
/// First byte of [`SignedOp::to_bytes`]: an op also signed by a user.
const FORMAT_V2: u8 = 2;
/// The largest payload an op may carry. Large data (file content, chunk lists) goes into
/// chunks; an op names them.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// The largest [`SignedOp::to_bytes`] encoding: the payload plus the fixed fields.
pub const MAX_ENCODED: usize = MAX_PAYLOAD + 256;

/// A volume: one shared directory tree with its own op log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolumeId(pub [u8; 16]);

/// The author of ops: an Ed25519 public key (a peer's or a user's), 32 bytes compressed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuthorId(pub [u8; 32]);

impl AuthorId {
    pub fn of(key: &ed25519::PublicKey) -> AuthorId {
        AuthorId(key.to_bytes())
    }

    /// The public key, if these bytes are one.
    pub fn public_key(&self) -> Result<ed25519::PublicKey, OpError> {
        ed25519::PublicKey::try_from_bytes(&self.0).map_err(|e| OpError::BadAuthorKey {
            author: *self,
            detail: e.to_string(),
        })
    }
}

/// Why an id could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    #[error("{what} must be {expected} hex digits, got {got} characters")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} has a non-hex character at position {position}")]
    NotHex { what: &'static str, position: usize },
}

fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ParseIdError> {
    if s.len() != 2 * N {
        return Err(ParseIdError::Length {
            what,
            expected: 2 * N,
            got: s.chars().count(),
        });
    }
    let digit = |i: usize| -> Result<u8, ParseIdError> {
        let c = s.as_bytes()[i];
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(ParseIdError::NotHex { what, position: i })
    };
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

macro_rules! hex_id {
    ($ty:ident, $len:literal, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        /// The first four bytes in hex: enough to tell ids apart in logs.
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "("))?;
                write_hex(f, &self.0[..4])?;
                write!(f, "..)")
            }
        }

        impl FromStr for $ty {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                parse_hex::<$len>($what, s).map($ty)
            }
        }
    };
}

hex_id!(VolumeId, 16, "a volume id");
hex_id!(AuthorId, 32, "an author id");

/// The id of an op, unique per volume: two ops of one author never share a clock reading.
/// The derived order, by (`hlc`, `author`), is the total order every CRDT applies ops in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    pub hlc: Hlc,
    pub author: AuthorId,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.author)
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({}@{:?})", self.hlc, self.author)
    }
}

/// One signed operation on a volume.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedOp {
    pub volume: VolumeId,
    pub id: OpId,
    /// Position in the author's ops on this volume: 1, 2, 3, ... without gaps, so a peer can
    /// tell what it lacks from a single number per author.
    pub seq: u64,
    /// What the op does; defined by the fs layer, opaque here.
    pub payload: Vec<u8>,
    /// Ed25519 signature by `id.author` of [`SignedOp::signed_message`].
    pub signature: [u8; 64],
    /// The user on whose behalf the author (a peer, a device of the user) made the op, and
    /// that user's signature. Membership and roles are the user's; sequence numbers and
    /// clocks stay the author's, so two devices of one user never take one seq.
    pub user: Option<UserSignature>,
}

/// A user's signature on an op ([`SignedOp::user`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UserSignature {
    pub user: AuthorId,
    /// Ed25519 signature by `user` of [`USER_SIGN_DOMAIN`] and [`SignedOp::signed_message`].
    pub signature: [u8; 64],
}

impl fmt::Debug for SignedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedOp")
            .field("volume", &self.volume)
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("payload_len", &self.payload.len())
            .field("user", &self.user.map(|u| u.user))
            .finish_non_exhaustive()
    }
}

/// Why an op is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    #[error("bad signature on op {id} (seq {seq}) by author {author}")]
    BadSignature {
        author: AuthorId,
        id: OpId,
        seq: u64,
    },
    #[error("bad user signature on op {id} (seq {seq}) by user {user}")]
    BadUserSignature { user: AuthorId, id: OpId, seq: u64 },
    #[error("author {author} is not a valid Ed25519 public key: {detail}")]
    BadAuthorKey { author: AuthorId, detail: String },
    #[error("op {id} has sequence number 0; sequences start at 1")]
    ZeroSeq { id: OpId },
    #[error("op payload of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("unknown op format version {version}")]
    UnknownVersion { version: u8 },
    #[error("malformed op encoding: {detail}")]
    Malformed { detail: String },
}

/// The encoded form, version 1 (after the version byte): postcard of this struct.
#[derive(Serialize, Deserialize)]
struct WireV1<'a> {
    volume: [u8; 16],
    millis: u64,
    counter: u32,
    author: [u8; 32],
    seq: u64,
    #[serde(with = "serde_bytes", borrow)]
    payload: std::borrow::Cow<'a, [u8]>,
    #[serde(with = "serde_bytes")]
    signature: [u8; 64],
}

/// The encoded form, version 2 (after the version byte): version 1 and the user's half.
#[derive(Serialize, Deserialize)]
struct WireV2<'a> {
    volume: [u8; 16],
    millis: u64,
    counter: u32,
    author: [u8; 32],
    user: [u8; 32],
    seq: u64,
    #[serde(with = "serde_bytes", borrow)]
    payload: std::borrow::Cow<'a, [u8]>,
    #[serde(with = "serde_bytes")]
    signature: [u8; 64],
    #[serde(with = "serde_bytes")]
    user_signature: [u8; 64],
}

impl SignedOp {
    /// Make and sign an op as the holder of `key`.
    pub fn sign(
        key: &ed25519::Keypair,
        volume: VolumeId,
        hlc: Hlc,
        seq: u64,
        payload: Vec<u8>,
    ) -> Result<SignedOp, OpError> {
        Self::sign_as(key, None, volume, hlc, seq, payload)
    }

    /// Make an op as the holder of `key` (the author: a peer) on behalf of `user`, signed by
    /// both when there is a user.
    pub fn sign_as(
        key: &ed25519::Keypair,
        user: Option<&ed25519::Keypair>,
        volume: VolumeId,
        hlc: Hlc,
        seq: u64,
        payload: Vec<u8>,
    ) -> Result<SignedOp, OpError> {
        let mut op = SignedOp {
            volume,
            id: OpId {
                hlc,
                author: AuthorId::of(&key.public()),
            },
            seq,
            payload,
            signature: [0; 64],
            user: user.map(|u| UserSignature {
                user: AuthorId::of(&u.public()),
                signature: [0; 64],
            }),
        };
        op.check_fields()?;
        let message = op.signed_message();
        // An Ed25519 signature is always 64 bytes.
        op.signature.copy_from_slice(&key.sign(&message));
        if let (Some(user_key), Some(user)) = (user, op.user.as_mut()) {
            user.signature
                .copy_from_slice(&user_key.sign(&user_message(&message)));
        }
        Ok(op)
    }

    /// Who made the op: its user where a user signed it, else its author (a peer). Membership
    /// and roles are checked against this.
    pub fn principal(&self) -> AuthorId {
        self.user.map_or(self.id.author, |u| u.user)
    }

    pub fn author(&self) -> AuthorId {
        self.id.author
    }

    /// What the signature covers: a domain prefix, then every field but the signature, the
    /// fixed-size ones first so the payload needs no length.
    /// With a user, the domain is version 2's and the user's key follows the author's.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGN_DOMAIN.len() + 16 + 12 + 64 + 8 + self.payload.len());
        msg.extend_from_slice(match self.user {
            None => SIGN_DOMAIN,
            Some(_) => SIGN_DOMAIN_V2,
        });
        msg.extend_from_slice(&self.volume.0);
        msg.extend_from_slice(&self.id.hlc.to_be_bytes());
        msg.extend_from_slice(&self.id.author.0);
        if let Some(user) = &self.user {
            msg.extend_from_slice(&user.user.0);
        }
        msg.extend_from_slice(&self.seq.to_be_bytes());
        msg.extend_from_slice(&self.payload);
        msg
    }

    /// Check the fields, the author's signature and the user's, if any.
    pub fn verify(&self) -> Result<(), OpError> {
        self.check_fields()?;
        let key = self.id.author.public_key()?;
        let message = self.signed_message();
        if !key.verify(&message, &self.signature) {
            return Err(OpError::BadSignature {
                author: self.id.author,
                id: self.id,
                seq: self.seq,
            });
        }
        if let Some(user) = &self.user {
            let key = user.user.public_key()?;
            if !key.verify(&user_message(&message), &user.signature) {
                return Err(OpError::BadUserSignature {
                    user: user.user,
                    id: self.id,
                    seq: self.seq,
                });
            }
        }
        Ok(())
    }

    fn check_fields(&self) -> Result<(), OpError> {
        if self.seq == 0 {
            return Err(OpError::ZeroSeq { id: self.id });
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err(OpError::TooLarge {
                len: self.payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        Ok(())
    }

    /// The one byte form of this op, for the wire and the disk: a format version byte, then
    /// postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 260);
        if let Some(user) = &self.user {
            let wire = WireV2 {
                volume: self.volume.0,
                millis: self.id.hlc.millis,
                counter: self.id.hlc.counter,
                author: self.id.author.0,
                user: user.user.0,
                seq: self.seq,
                payload: std::borrow::Cow::Borrowed(&self.payload),
                signature: self.signature,
                user_signature: user.signature,
            };
            out.push(FORMAT_V2);
            // Serialising into a Vec cannot fail: no maps, no unsized sequences.
            out.extend(postcard::to_stdvec(&wire).unwrap_or_default());
            return out;
        }
        let wire = WireV1 {
            volume: self.volume.0,
            millis: self.id.hlc.millis,
            counter: self.id.hlc.counter,
            author: self.id.author.0,
            seq: self.seq,
            payload: std::borrow::Cow::Borrowed(&self.payload),
            signature: self.signature,
        };
        out.push(FORMAT_V1);
        // Serialising into a Vec cannot fail: no maps, no unsized sequences.
        out.extend(postcard::to_stdvec(&wire).unwrap_or_default());
        out
    }

    /// Decode [`SignedOp::to_bytes`]. Anything else, including a non-canonical encoding of the
    /// same fields or trailing bytes, is an error. Does not verify the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedOp, OpError> {
        let malformed = |detail: String| OpError::Malformed { detail };
        if bytes.len() > MAX_ENCODED {
            return Err(OpError::TooLarge {
                len: bytes.len(),
                max: MAX_ENCODED,
            });
        }
        let at = |volume, millis, counter, author| {
            (
                VolumeId(volume),
                OpId {
                    hlc: Hlc { millis, counter },
                    author: AuthorId(author),
                },
            )
        };
        let op = match bytes.split_first() {
            Some((&FORMAT_V1, rest)) => {
                let w: WireV1<'_> =
                    postcard::from_bytes(rest).map_err(|e| malformed(e.to_string()))?;
                let (volume, id) = at(w.volume, w.millis, w.counter, w.author);
                SignedOp {
                    volume,
                    id,
                    seq: w.seq,
                    payload: w.payload.into_owned(),
                    signature: w.signature,
                    user: None,
                }
            }
            Some((&FORMAT_V2, rest)) => {
                let w: WireV2<'_> =
                    postcard::from_bytes(rest).map_err(|e| malformed(e.to_string()))?;
                let (volume, id) = at(w.volume, w.millis, w.counter, w.author);
                SignedOp {
                    volume,
                    id,
                    seq: w.seq,
                    payload: w.payload.into_owned(),
                    signature: w.signature,
                    user: Some(UserSignature {
                        user: AuthorId(w.user),
                        signature: w.user_signature,
                    }),
                }
            }
            Some((&version, _)) => return Err(OpError::UnknownVersion { version }),
            None => return Err(malformed("empty".into())),
        };
        if op.to_bytes() != bytes {
            return Err(malformed(
                "not the canonical encoding (trailing bytes or over-long integers)".into(),
            ));
        }
        Ok(op)
    }
}

/// What a user signs for an op whose signed message is `message`.
fn user_message(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(USER_SIGN_DOMAIN.len() + message.len());
    out.extend_from_slice(USER_SIGN_DOMAIN);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn key(n: u8) -> ed25519::Keypair {
        let secret = ed25519::SecretKey::try_from_bytes([n; 32]).expect("32 bytes");
        ed25519::Keypair::from(secret)
    }

    fn sample() -> SignedOp {
        SignedOp::sign(
            &key(1),
            VolumeId([7; 16]),
            Hlc {
                millis: 1_700_000_000_000,
                counter: 3,
            },
            42,
            b"mkdir /a".to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_op_verifies_and_round_trips() {
        let op = sample();
        op.verify().unwrap();
        assert_eq!(op.author(), AuthorId::of(&key(1).public()));
        let bytes = op.to_bytes();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(SignedOp::from_bytes(&bytes).unwrap(), op);
    }

    #[test]
    fn tampering_with_any_field_breaks_the_signature() {
        let op = sample();
        let changes: [fn(&mut SignedOp); 7] = [
            |o| o.volume.0[0] ^= 1,
            |o| o.id.hlc.millis += 1,
            |o| o.id.hlc.counter += 1,
            |o| o.seq += 1,
            |o| o.payload.push(0),
            |o| o.payload[0] ^= 1,
            |o| o.signature[5] ^= 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut bad = op.clone();
            change(&mut bad);
            let err = bad.verify().unwrap_err();
            assert!(
                matches!(err, OpError::BadSignature { author, .. } if author == op.author()),
                "change {i}: {err}"
            );
            assert!(err.to_string().contains(&op.author().to_string()));
        }
        // Another author's key over the same fields: the signature is not theirs.
        let mut other = op.clone();
        other.id.author = AuthorId::of(&key(2).public());
        assert!(matches!(other.verify(), Err(OpError::BadSignature { .. })));
    }

    #[test]
    fn invalid_fields_are_refused_when_signing_and_verifying() {
        let hlc = Hlc::ZERO;
        let err = SignedOp::sign(&key(1), VolumeId([0; 16]), hlc, 0, vec![]).unwrap_err();
        assert!(matches!(err, OpError::ZeroSeq { .. }), "{err}");
        let big = vec![0; MAX_PAYLOAD + 1];
        let err = SignedOp::sign(&key(1), VolumeId([0; 16]), hlc, 1, big).unwrap_err();
        assert!(matches!(err, OpError::TooLarge { .. }), "{err}");
        let mut op = sample();
        // About half of all 32-byte strings are not the encoding of a curve point.
        let not_a_point = (0..=u8::MAX)
            .map(|n| [n; 32])
            .find(|b| ed25519::PublicKey::try_from_bytes(b).is_err())
            .unwrap();
        op.id.author = AuthorId(not_a_point);
        assert!(matches!(op.verify(), Err(OpError::BadAuthorKey { .. })));
    }

    #[test]
    fn unknown_versions_and_junk_are_errors() {
        let mut bytes = sample().to_bytes();
        bytes[0] = 3;
        assert_eq!(
            SignedOp::from_bytes(&bytes),
            Err(OpError::UnknownVersion { version: 3 })
        );
        // Version 1's fields read as version 2 are too few.
        bytes[0] = FORMAT_V2;
        assert!(matches!(
            SignedOp::from_bytes(&bytes),
            Err(OpError::Malformed { .. })
        ));
        assert!(matches!(
            SignedOp::from_bytes(&[]),
            Err(OpError::Malformed { .. })
        ));
        let mut trailing = sample().to_bytes();
        trailing.push(0);
        assert!(matches!(
            SignedOp::from_bytes(&trailing),
            Err(OpError::Malformed { .. })
        ));
        let truncated = &sample().to_bytes()[..50];
        assert!(matches!(
            SignedOp::from_bytes(truncated),
            Err(OpError::Malformed { .. })
        ));
    }

    fn user_sample() -> SignedOp {
        SignedOp::sign_as(
            &key(1),
            Some(&key(5)),
            VolumeId([7; 16]),
            Hlc {
                millis: 1_700_000_000_000,
                counter: 3,
            },
            42,
            b"mkdir /a".to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn a_user_signed_op_names_its_user_and_checks_both_signatures() {
        let op = user_sample();
        op.verify().unwrap();
        let user = AuthorId::of(&key(5).public());
        assert_eq!(op.principal(), user);
        assert_eq!(op.author(), AuthorId::of(&key(1).public()));
        assert_eq!(sample().principal(), sample().author());
        let bytes = op.to_bytes();
        assert_eq!(bytes[0], FORMAT_V2);
        assert_eq!(SignedOp::from_bytes(&bytes).unwrap(), op);

        // Another user claimed with the peer's signature kept: the peer signed the user too.
        let mut claimed = op.clone();
        claimed.user = Some(UserSignature {
            user: AuthorId::of(&key(6).public()),
            signature: op.user.unwrap().signature,
        });
        assert!(matches!(
            claimed.verify(),
            Err(OpError::BadSignature { .. })
        ));
        // A forged user signature.
        let mut forged = op.clone();
        forged.user.as_mut().unwrap().signature[0] ^= 1;
        assert!(matches!(
            forged.verify(),
            Err(OpError::BadUserSignature { user: u, .. }) if u == user
        ));
        // The user stripped: the peer's signature covered the user, so it no longer holds.
        let mut stripped = op.clone();
        stripped.user = None;
        assert!(matches!(
            stripped.verify(),
            Err(OpError::BadSignature { .. })
        ));
        // The user's signature of one op does not sign another.
        let mut moved = sample();
        moved.user = op.user;
        assert!(moved.verify().is_err());
    }

    #[test]
    fn ids_print_as_hex_and_parse_back() {
        let v = VolumeId([0xab; 16]);
        assert_eq!(v.to_string(), "ab".repeat(16));
        assert_eq!(v.to_string().parse::<VolumeId>(), Ok(v));
        assert_eq!(format!("{v:?}"), "VolumeId(abababab..)");
        let a = AuthorId::of(&key(3).public());
        assert_eq!(a.to_string().parse::<AuthorId>(), Ok(a));
        assert_eq!(a.to_string().to_uppercase().parse::<AuthorId>(), Ok(a));
        assert!(matches!(
            "abc".parse::<VolumeId>(),
            Err(ParseIdError::Length {
                expected: 32,
                got: 3,
                ..
            })
        ));
        let bad = format!("{}zz", "00".repeat(15));
        assert_eq!(
            bad.parse::<VolumeId>(),
            Err(ParseIdError::NotHex {
                what: "a volume id",
                position: 30
            })
        );
        // Multi-byte characters are a length error, never a slicing panic.
        assert!("é".repeat(16).parse::<VolumeId>().is_err());
    }

    #[test]
    fn op_ids_order_by_clock_then_author() {
        let (a, b) = (AuthorId([1; 32]), AuthorId([2; 32]));
        let at = |millis, counter, author| OpId {
            hlc: Hlc { millis, counter },
            author,
        };
        let mut ids = vec![
            at(5, 0, a),
            at(4, 9, b),
            at(5, 0, b),
            at(4, 9, a),
            at(5, 1, a),
        ];
        ids.sort();
        assert_eq!(
            ids,
            vec![
                at(4, 9, a),
                at(4, 9, b),
                at(5, 0, a),
                at(5, 0, b),
                at(5, 1, a)
            ]
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(op) = SignedOp::from_bytes(&bytes) {
                prop_assert_eq!(op.to_bytes(), bytes.clone());
            }
            for version in [FORMAT_V1, FORMAT_V2] {
                let mut versioned = bytes.clone();
                versioned.insert(0, version);
                let _ = SignedOp::from_bytes(&versioned);
            }
        }

        #[test]
        fn a_flipped_bit_fails_decoding_or_verification(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            millis: u64,
            counter: u32,
            seq in 1u64..,
            bit: proptest::sample::Index,
        ) {
            let user = key(10);
            let user = (seq % 2 == 0).then_some(&user);
            let op = SignedOp::sign_as(&key(9), user, VolumeId([3; 16]), Hlc { millis, counter }, seq, payload).unwrap();
            let mut bytes = op.to_bytes();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            if let Ok(decoded) = SignedOp::from_bytes(&bytes) {
                prop_assert!(decoded.verify().is_err(), "bit {} still verifies", bit);
            }
        }
    }
}
