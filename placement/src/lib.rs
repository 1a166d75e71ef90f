//! dfs-placement: the pure logic of dfs, with no I/O, clocks or async.
//!
//! It owns the identifiers every other crate shares ([`ChunkId`]) and the erasure coding of a
//! chunk's ciphertext into shards and back ([`erasure`]), and peer scoring ([`score`]). Later:
//! rendezvous placement of shards on peers, the repair/rebalance planner and cache policy.

pub mod erasure;
pub mod ids;
pub mod score;

pub use erasure::{DecodeError, EncodeError, Layout};
pub use ids::{ChunkId, ParseIdError};
