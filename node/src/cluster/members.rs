//! The membership snapshot placement works from: every peer that may hold shards, with its
//! zone, rendezvous weight and health, built from the peer table and this peer's own status.
//!
//! Weights follow offered capacity, rounded down to a power of two, so that the small drifts of
//! free space and round-trip time do not shift rendezvous targets (which would move shards back
//! and forth); a peer that keeps failing or sent bad data is weighted down, and a full peer gets
//! no new shards.
//!
//! Clients (peers run for one command, `--no-store` mounts) are not members: they hold nothing
//! for others. A peer is *trusted* once this peer has seen it present without a break (not
//! dead, not restarted) for `trust_after_secs`; until then it is a *reserve* candidate
//! ([`Candidate::reserve`]), taken only when the trusted peers cannot give every shard a peer
//! of its own. So on an established network a peer that appears and goes again is given
//! nothing and causes no moves, while a network that has just started (or a `dfs put` that
//! has just joined one, to which every peer is new) places over everyone as before.
//!
//! Each member also has a *rank weight*: its capacity weight alone, which every peer computes
//! alike from the announcements. Readers and stewards rank a chunk's likely holders with it
//! (see `transfer::locate`, `steward`), since what this peer thinks of a holder's health or
//! age says nothing about where another peer put shards.

use std::collections::HashMap;
use std::time::Duration;

use dfs_placement::hrw::Candidate;
use libp2p::PeerId;

use crate::net::{NodeStatus, PeerState, PeerView};

/// Free bytes below which a peer is given no new shards.
const FULL_BELOW: u64 = 64 << 20;
/// A peer scoring below this is weighted down (it fails requests or sent bad data).
const POOR_SCORE: f64 = 0.2;

/// One peer as placement sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: PeerId,
    pub zone: String,
    /// Rendezvous weight (0: takes no new shards).
    pub weight: f64,
    /// Alive now (false: suspect, i.e. maybe back soon; dead peers are not members).
    pub alive: bool,
    pub score: f64,
    /// Shard requests it was serving at its last announcement.
    pub load: u32,
    pub is_self: bool,
    /// Takes shards only when the other peers cannot give each shard a peer of its own (this
    /// peer, when it keeps no shards of its own chunks: `--no-store`).
    pub reserve: bool,
    /// Capacity weight only (see the module doc); 0 for this peer when it is not storage.
    pub rank_weight: f64,
}

/// What this peer is to placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfRole {
    /// A storage peer that keeps shards of its own chunks when picked.
    Store,
    /// Keeps shards of its own chunks only when the others do not suffice (`--no-store`).
    Reserve,
    /// Never a target (a peer run for one command).
    None,
}

/// How the snapshot is built.
#[derive(Debug, Clone, Copy)]
pub struct MembershipRules {
    pub role: SelfRole,
    /// This peer's uptime.
    pub uptime: Duration,
    /// Presence a peer needs before it takes new shards.
    pub trust_after: Duration,
}

/// All members, self included.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub list: Vec<Member>,
    index: HashMap<PeerId, usize>,
    /// Peers the table knows to be dead.
    pub dead: Vec<PeerId>,
    /// The peer table has had time to learn who is around (a holder it still does not know
    /// is then as good as dead).
    pub settled: bool,
}

/// Rendezvous weight for `capacity` bytes offered: GiB rounded down to a power of two.
fn capacity_weight(capacity: u64) -> f64 {
    let gib = (capacity >> 30).max(1);
    (1u64 << (63 - gib.leading_zeros())) as f64
}

impl Members {
    /// A digest of everything placement decisions depend on: who is a member, alive or
    /// suspect, where and how heavy, who is dead, and whether the table has settled. Equal
    /// fingerprints plan the same.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for m in &self.list {
            (m.id, &m.zone, m.weight.to_bits(), m.alive, m.reserve).hash(&mut h);
        }
        self.dead.hash(&mut h);
        self.settled.hash(&mut h);
        h.finish()
    }

    /// Build the snapshot from this peer's status and peer table (see [`MembershipRules`]).
    pub fn from_views(
        local: PeerId,
        status: &NodeStatus,
        peers: &[PeerView],
        rules: MembershipRules,
    ) -> Self {
        let own = capacity_weight(status.storage.capacity);
        let mut list = vec![Member {
            id: local,
            zone: status.zone.clone(),
            weight: match rules.role {
                SelfRole::Store => own,
                SelfRole::Reserve => 1e-9,
                SelfRole::None => 0.0,
            },
            alive: true,
            score: 1.0,
            load: 0,
            is_self: true,
            reserve: rules.role == SelfRole::Reserve,
            rank_weight: if status.client { 0.0 } else { own },
        }];
        let uptime = rules.uptime;
        let mut dead = Vec::new();
        let mut longest_grace = Duration::ZERO;
        for view in peers {
            let Ok(id) = view.id.parse::<PeerId>() else {
                continue;
            };
            if view.client {
                continue;
            }
            longest_grace = longest_grace.max(Duration::from_secs_f64(view.last_seen_secs));
            match view.state {
                PeerState::Dead => {
                    dead.push(id);
                    continue;
                }
                PeerState::Alive | PeerState::Suspect => {}
            }
            // A peer that has not announced yet (no capacity known) is not a target yet.
            let Some(capacity) = view.capacity else {
                continue;
            };
            let rank_weight = capacity_weight(capacity);
            let mut weight = rank_weight;
            if view.score < POOR_SCORE {
                weight *= 0.1;
            }
            // Full, or caught sending shards that were not what their writer made: given no
            // new shards (the count lives as long as this peer's table).
            if view.free.is_some_and(|f| f < FULL_BELOW) || view.bad_data > 0 {
                weight = 0.0;
            }
            let trusted = Duration::from_secs_f64(view.up_secs) >= rules.trust_after;
            list.push(Member {
                id,
                zone: view.zone.clone().unwrap_or_else(|| "default".into()),
                weight,
                alive: view.state == PeerState::Alive,
                score: view.score,
                load: view.load.unwrap_or(0),
                is_self: false,
                // Not trusted yet: taken only when the trusted peers do not suffice.
                reserve: !trusted,
                rank_weight,
            });
        }
        let index = list.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        Self {
            list,
            index,
            dead,
            // Announcements come every 2 s; after 15 s every live peer has been heard from.
            settled: uptime > Duration::from_secs(15),
        }
    }

    pub fn position(&self, id: &PeerId) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn get(&self, id: &PeerId) -> Option<&Member> {
        self.position(id).map(|i| &self.list[i])
    }

    pub fn is_dead(&self, id: &PeerId) -> bool {
        self.dead.contains(id)
    }

    /// The members as rendezvous candidates (same order as `list`); with `alive_only`, suspect
    /// peers get weight 0 (they keep what they hold but take nothing new).
    pub fn candidates(&self, alive_only: bool) -> Vec<Candidate> {
        self.list
            .iter()
            .map(|m| Candidate {
                key: m.id.to_bytes(),
                zone: m.zone.clone(),
                weight: if alive_only && !m.alive {
                    0.0
                } else {
                    m.weight
                },
                reserve: m.reserve,
            })
            .collect()
    }

    /// Every storage member (alive or suspect) with its rank weight: where any peer expects a
    /// chunk's shards to be (same order as `list`).
    pub fn rank_candidates(&self) -> Vec<Candidate> {
        self.list
            .iter()
            .map(|m| Candidate {
                key: m.id.to_bytes(),
                zone: m.zone.clone(),
                weight: m.rank_weight,
                reserve: false,
            })
            .collect()
    }

    /// Other peers that may take shards now.
    pub fn live_others(&self) -> usize {
        self.list
            .iter()
            .filter(|m| !m.is_self && m.alive && m.weight > 0.0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{PeerCounts, StorageStatus};

    fn status() -> NodeStatus {
        NodeStatus {
            id: String::new(),
            version: String::new(),
            zone: "z".into(),
            addresses: Vec::new(),
            uptime_secs: 1000.0,
            client: false,
            network_key: None,
            storage: StorageStatus {
                capacity: 8 << 30,
                free: 8 << 30,
                used: 0,
                shards_held: 0,
                disk_total: 0,
                disk_free: 0,
            },
            peers: PeerCounts::default(),
            bulk: None,
            placement: None,
        }
    }

    fn view(id: PeerId, client: bool, up_secs: f64) -> PeerView {
        PeerView {
            id: id.to_string(),
            state: PeerState::Alive,
            addresses: Vec::new(),
            connected: true,
            rtt_ms: Some(1.0),
            last_seen_secs: 0.0,
            zone: Some("z".into()),
            version: None,
            capacity: Some(if client { 0 } else { 4 << 30 }),
            free: Some(if client { 0 } else { 4 << 30 }),
            load: Some(0),
            shards: Some(0),
            score: 1.0,
            failures: 0,
            bad_data: 0,
            client,
            up_secs,
        }
    }

    #[test]
    fn clients_are_not_members_and_new_peers_are_reserves_until_trusted() {
        let (me, old, new, client) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let views = [
            view(old, false, 300.0),
            view(new, false, 30.0),
            view(client, true, 300.0),
        ];
        let rules = MembershipRules {
            role: SelfRole::None,
            uptime: Duration::from_secs(1000),
            trust_after: Duration::from_secs(120),
        };
        let m = Members::from_views(me, &status(), &views, rules);
        assert!(m.get(&client).is_none());
        assert!(!m.get(&old).unwrap().reserve);
        assert!(m.get(&new).unwrap().reserve);
        // Ranking for readers and stewards ignores trust and this peer's own role.
        let rank: Vec<f64> = m.rank_candidates().iter().map(|c| c.weight).collect();
        assert_eq!(rank, vec![8.0, 4.0, 4.0]);
        // A one-shot peer is no target at all, not even a reserve.
        let me_member = m.get(&me).unwrap();
        assert_eq!((me_member.weight, me_member.reserve), (0.0, false));
        assert_eq!(m.live_others(), 2);
    }

    #[test]
    fn weights_are_stable_under_small_drift() {
        assert_eq!(capacity_weight(0), 1.0);
        assert_eq!(capacity_weight(100 << 30), 64.0);
        assert_eq!(capacity_weight((100 << 30) + (20 << 30)), 64.0);
        assert_eq!(capacity_weight(128 << 30), 128.0);
    }
}
