//! What `dfs status` shows of the cluster: the repair thread's figures and the stewards'.
//! Types only, with no dependency on the rest of the cluster, so the peer's status
//! (`net::NodeStatus`) can carry them without the network depending on the cluster.

use serde::{Deserialize, Serialize};

/// What `dfs status` shows of placement and repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementStatus {
    /// Chunks this peer wrote and looks after.
    pub chunks: u64,
    /// Chunks missing shards or with shards off their targets, as of the last round.
    pub degraded: u64,
    /// Chunks with all shards but on fewer distinct peers than shards (too few peers).
    pub crowded: u64,
    /// Chunks with fewer than k shards left.
    pub lost: u64,
    /// Rebuilds, moves and drops left for later rounds.
    pub pending: u64,
    pub rebuilt: u64,
    pub moved: u64,
    pub dropped: u64,
    /// Bytes written by rebuilds and moves.
    pub repair_bytes: u64,
    pub scrubbed: u64,
    pub corrupt_found: u64,
    pub orphans_deleted: u64,
    pub rounds: u64,
    /// Rounds that looked at every chunk (the others found nothing changed since).
    #[serde(default)]
    pub full_passes: u64,
    pub last_round_ms: u64,
    pub hedged_fetches: u64,
    pub found_by_providers: u64,
    pub bytes_sent: u64,
    pub bytes_fetched: u64,
    pub last_error: Option<String>,
    /// The disk cache of fetched chunks, when enabled.
    pub disk_cache: Option<crate::diskcache::CacheStats>,
    /// Chunks held here for others that this peer looked after ([`super::steward`]).
    #[serde(default)]
    pub steward: StewardStatus,
}

/// What the stewards of this peer found, for `dfs status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StewardStatus {
    /// Passes over the held chunks made.
    pub passes: u64,
    /// Chunks examined in all passes, and of them those this peer was the steward of.
    pub examined: u64,
    pub stewarded: u64,
    /// Shards rebuilt onto other peers, and their bytes.
    pub rebuilt: u64,
    pub rebuilt_bytes: u64,
    /// Chunks found with fewer than k shards on live peers in the last pass.
    pub lost: u64,
    /// Chunks left for the next pass (a peer suspect or not answering).
    pub deferred: u64,
}
