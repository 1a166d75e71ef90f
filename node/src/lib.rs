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
//!
//! The modules are private. The crate's face is what this file re-exports: [`Peer::start`] and
//! the [`PeerHandle`] it gives for a running peer; [`Repo`] and [`Pipeline`] with the blob and
//! chunk functions for a data directory; [`ops`], [`volume`] and [`cache`] for the op log, the
//! volume records and the fetch cache. Tests, benches and fuzz targets reach the parts through
//! `testing`, which is not an API.

mod analytics;
mod api;
mod blob;
mod chunk;
mod cluster;
mod config;
mod crypto;
mod diskcache;
mod events;
mod keyring;
mod meta;
mod metrics;
mod net;
mod oidc;
mod oplog;
mod peer;
mod pipeline;
mod profiles;
mod repo;
mod shard;
mod store;
mod tree;
mod users;
mod volumes;
mod workers;

// The face of node: everything the mount (dfs-fs), the CLI (dfs) and the control API's clients
// use. The modules above are private; what is not named here is the crate's own.

// A running peer.
pub use config::{Config, NetworkConfig, PlacementConfig, VersionsConfig};
pub use net::transport::new_network_key;
pub use peer::{Peer, PeerError, PeerHandle, PeerTasks, Role};
// What a running peer reports: `dfs status`, `dfs peers`, `dfs top`, `dfs stats`, events.
pub use analytics::Report as AnalyticsReport;
pub use cluster::{PlacementStatus, StewardStatus};
pub use events::{Event, EventKind};
pub use metrics::{metrics, FuseTimer};
pub use net::{NodeStatus, PeerState, PeerView};
// The control API's address file and request bodies, for its clients.
pub use api::{
    ApiEndpoint, CreateVolume, Invitation, InviteVolume, JoinVolume, LoggedOut, Login, Logout,
    OidcFinish, OidcLoggedIn, OidcStart, ProfileChange, ProfileView, RequireIssuer, SetRole,
    API_FILE, UID_HEADER,
};
pub use oidc::{Bindings as OidcBindings, OidcBinding, Started as OidcStarted};

// A data directory and the chunks in it: open, store, read, check, collect.
pub use blob::{
    check_blob, read_blob, read_blob_to_vec, write_blob, BlobError, BlobRef, ReadReport,
};
pub use chunk::{ChunkError, ChunkHealth, ChunkRef, ShardState};
pub use crypto::{ChunkKey, KeyScope, OpKey, VolumeSecret};
pub use diskcache::{CacheStats, DiskCache};
pub use meta::{FsBatch, FsTable, MetaError, OwnerId};
pub use pipeline::Pipeline;
pub use profiles::{Profile, ProfileError, SignedProfile};
pub use repo::{GcError, GcReport, OpenError, PutSession, Repo, VOLUME_OWNER};
pub use tree::{LeafWalker, TreeBuilder, TreeError};
pub use users::{
    check_name as check_user_name, KdfParams, SealedUser, SessionInfo, Sessions, UserError,
    UserKey, UserStore,
};
pub use workers::{wait_pending, ChunkWorkers, Pending};

/// The signed op log of volumes and the hub that carries its ops between peers.
pub mod ops {
    pub use crate::net::sync::{Acting, OpsHub};
    pub use crate::oplog::control::Control;
    pub use crate::oplog::{
        data_payload, Access, AuthorId, Hlc, OpId, OpLog, Payload, Rejection, Role, SignedOp,
        UserSignature, VolumeId,
    };
}

/// The volumes this peer is a member of: create one, find one by name, list their records.
pub mod volume {
    pub use crate::keyring::{KeyError, Keyring};
    pub use crate::volumes::{
        by_name, create, keyring, records_in, LogEntry, MemberInfo, VolumeInfo,
    };
}

/// Secrets sealed under a passphrase (argon2id, XChaCha20-Poly1305): user keys and
/// password-protected share links.
pub mod passphrase {
    pub use crate::crypto::passphrase::{open, seal, KdfParams, PassphraseError};
}

/// The cache of chunks fetched from other peers, as `dfs cache` sees it from outside a peer.
pub mod cache {
    pub use crate::diskcache::{
        cache_dir, prune_dir, scan, CacheError, CacheStats, DiskCache, PruneReport,
    };
}

/// The parts of a peer one by one, for node's own integration tests, the hostile peer of the
/// trust tests, the benches and the fuzz targets (which drive every decoder of untrusted
/// bytes). Not an API: the mount and the CLI use the face above, and what is here changes
/// with the code behind it.
#[doc(hidden)]
pub mod testing {
    pub use crate::chunk::{encode_shards, seal, ShardSet};
    pub use crate::cluster::{Cluster, ClusterHandle, Gathered, Remote, ShardCheck};
    pub use crate::meta::{ChunkRecord, Placed};
    pub use crate::net::identity::load_or_create;
    pub use crate::net::{bulk, peers, sync, wire};
    pub use crate::net::{
        parse_addr, peer_of, NetError, NetOptions, Network, Refusal, Request, Response,
    };
    pub use crate::oplog::{control, HlcClock};
    pub use crate::shard::{ShardHeader, HEADER_LEN};
    pub use crate::store::ShardStore;
    pub use crate::tree::{decode_node, Child};
    pub use crate::volumes::{InviteTerms, Ticket};
}
