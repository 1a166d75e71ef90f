//! dfs-node: the peer, which knows chunks but not files.
//!
//! Data flow of a write: bytes are cut into chunks ([`blob`]), each chunk is encrypted under a
//! key derived from its plaintext ([`crypto`]), named by the blake3 of its ciphertext, cut into
//! shards ([`dfs_placement::erasure`]) and written to the local shard store ([`store`], format in
//! [`shard`]); the chunk index and the put records live in RocksDB ([`meta`]). A read walks the
//! chunk tree ([`tree`]), fetches and verifies shards, decodes, checks the chunk id, decrypts
//! ([`chunk`]), and repairs shards that were missing or corrupt. [`repo`] ties one data directory
//! together (lock, config, secret, store, metadata, garbage collection). Chunks fetched from
//! other peers are kept, as ciphertext, in a size-bounded local cache ([`diskcache`]).
//! Each volume's metadata changes are signed operations in a replicated log ([`oplog`]).

pub mod analytics;
pub mod api;
pub mod blob;
pub mod chunk;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod diskcache;
pub mod events;
pub mod meta;
pub mod metrics;
pub mod net;
pub mod oplog;
pub mod peer;
pub mod pipeline;
pub mod repo;
pub mod shard;
pub mod store;
pub mod tree;
pub mod volumes;
pub mod workers;

pub use blob::{BlobError, BlobRef, ReadReport};
pub use chunk::{ChunkError, ChunkHealth, ChunkRef, ShardState};
pub use config::Config;
pub use crypto::{ChunkKey, VolumeSecret};
pub use diskcache::{CacheStats, DiskCache};
pub use peer::{Peer, PeerError, PeerHandle, PeerTasks, Role};
pub use pipeline::Pipeline;
pub use repo::{GcReport, OpenError, PutSession, Repo};
