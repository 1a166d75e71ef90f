//! dfs-placement: the pure logic of dfs, with no I/O, clocks or async.
//!
//! It owns the identifiers every other crate shares ([`ChunkId`]) and the erasure coding of a
//! chunk's ciphertext into shards and back ([`erasure`]). Later: rendezvous placement of shards on
//! peers, the repair/rebalance planner, cache policy and peer scoring.

pub mod erasure;
pub mod ids;

pub use erasure::{DecodeError, EncodeError, Layout};
pub use ids::{ChunkId, ParseIdError};
