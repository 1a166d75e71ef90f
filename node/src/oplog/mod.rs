//! The replicated, signed operation log of each volume.
//!
//! Every change to a volume's metadata is one operation ([`SignedOp`]) that every member of the
//! volume eventually holds; each peer's fs layer materialises the volume's tables from the log,
//! applying ops in [`OpId`] order, so members that hold the same ops show the same tree.
//!
//! - **Identity** ([`op`]): an op is named by its [`OpId`], a hybrid logical clock reading
//!   ([`hlc`]) and the author's Ed25519 public key ([`AuthorId`]). OpIds order by (clock,
//!   author): a total order close to real time that respects causality, which the CRDTs use.
//!   Each author also numbers its ops on a volume 1, 2, 3, ... (`seq`), without gaps.
//! - **Signing** ([`op`]): the author signs a domain-separated canonical message of every
//!   field ([`SignedOp::signed_message`]); a peer verifies before it stores. An op has one byte
//!   form ([`SignedOp::to_bytes`]: a format version byte, then postcard), used on the wire and
//!   on disk; decoding refuses anything else, and never panics on peer input.
//! - **Storage** ([`store`]): [`OpLog`] keeps ops in the node's RocksDB ([`crate::meta`]),
//!   keyed so a scan yields a volume's ops in OpId order, with a second index by (author,
//!   seq). It refuses ops from non-members of the volume, ops with bad signatures, and
//!   *equivocation* (an author giving one seq two different contents); an op already held is
//!   accepted again as a no-op, so delivery may repeat and reorder freely.
//! - **Summary for anti-entropy** ([`store`]): a peer's *heads* of a volume are, per author,
//!   the highest seq up to which it holds every op. Heads are a few bytes per author, and from
//!   another peer's heads [`OpLog::missing`] computes exactly the ops that peer lacks. An op
//!   received beyond a gap is kept, and the head moves past it once the gap is filled.
//!
//! Payloads are opaque bytes here: the fs layer defines (and encrypts) what an op does; this
//! module only signs, orders, stores and counts them.

pub mod access;
pub mod control;
pub mod hlc;
pub mod op;
pub mod store;

pub use access::{Access, Rejection};
pub use control::{data_payload, Payload, Role};
pub use hlc::{physical_now_ms, ClockError, Hlc, HlcClock};
pub use op::{AuthorId, OpError, OpId, SignedOp, UserSignature, VolumeId, MAX_ENCODED};
pub use store::{Appended, OpLog, OpLogError};
