//! dfs-placement: the pure logic of dfs, with no I/O, clocks or async.
//!
//! It owns the identifiers every other crate shares ([`ChunkId`]) and the erasure coding of a
//! chunk's ciphertext into shards and back ([`erasure`]), peer scoring ([`score`]) and
//! weighted rendezvous placement of shards on peers ([`hrw`]), and the repair/rebalance
//! planner ([`planner`]). Later: cache policy.

pub mod erasure;
pub mod hrw;
pub mod ids;
pub mod planner;
pub mod score;

pub use erasure::{DecodeError, EncodeError, Layout};
pub use ids::{ChunkId, ParseIdError};
