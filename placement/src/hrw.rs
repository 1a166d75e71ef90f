//! Where the shards of a chunk go: weighted rendezvous (highest random weight) hashing.
//!
//! Every (chunk, peer) pair gets a pseudo-random draw `h` in (0, 1) from blake3; the peer's
//! score is `-weight / ln(h)`, so a peer with twice the weight is picked about twice as often
//! (exactly so while a chunk takes few of the peers). A chunk's targets are the best-ranked
//! peers, one shard each, spread over as many zones as there are (a target is the best-ranked
//! peer among those in the least-used zones). A *reserve* candidate (a writer that keeps no
//! shards of its own) is left out while the others can give every shard a peer of its own. The targets are a set: shard `i` of a fresh
//! write goes to `targets[i]`, but the planner may keep any shard on any target, so when a peer
//! joins only the shards of peers it displaces move (about 1/(n+1) of them for one peer joining
//! n), and when one leaves only its shards move. With fewer peers than shards, everything is
//! still placed (some peers hold two) and the placement says it is degraded, so the planner can
//! fix it when peers join.
//!
//! Pure: no I/O, no clock, no randomness beyond the hash; the same inputs always give the same
//! placement on every peer.

use std::collections::HashMap;

use crate::ChunkId;

/// A peer that may hold shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The peer's identity bytes (a libp2p PeerId's bytes).
    pub key: Vec<u8>,
    /// Failure domain.
    pub zone: String,
    /// Relative share of shards it should get (> 0; e.g. free bytes x health score).
    pub weight: f64,
    /// Taken only when the other candidates cannot give every shard a peer of its own (a
    /// writer told not to keep shards of its own chunks). Zone spreading never picks it.
    pub reserve: bool,
}

/// Where each shard of one chunk goes: `targets[i]` is an index into the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub targets: Vec<usize>,
    /// Some peer holds more than one shard (fewer usable peers than shards), or the zones did
    /// not allow the even spread.
    pub degraded: bool,
}

/// The draw for (chunk, peer): a number in (0, 1), uniform.
fn draw(chunk: &ChunkId, key: &[u8]) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"dfs-hrw-1");
    hasher.update(chunk.as_bytes());
    hasher.update(key);
    let bytes = hasher.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&bytes.as_bytes()[..8]);
    // 53 random bits, shifted off zero so ln() is finite.
    ((u64::from_le_bytes(top) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn usable(peer: &Candidate) -> bool {
    peer.weight > 0.0 && peer.weight.is_finite()
}

/// The weighted rendezvous score of `peer` for `chunk`: higher wins.
pub fn score(chunk: &ChunkId, peer: &Candidate) -> f64 {
    if !usable(peer) {
        return f64::NEG_INFINITY;
    }
    -peer.weight / draw(chunk, &peer.key).ln()
}

/// Usable candidates ordered best first for `chunk`; ties broken by key so every peer agrees.
pub fn rank(chunk: &ChunkId, candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| usable(c))
        .map(|(i, c)| (score(chunk, c), i))
        .collect();
    order.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| candidates[a.1].key.cmp(&candidates[b.1].key))
    });
    order.into_iter().map(|(_, i)| i).collect()
}

/// Place `shards` shards of `chunk` on `candidates` (see the module doc).
pub fn place(chunk: &ChunkId, shards: usize, candidates: &[Candidate]) -> Placement {
    let mut ranked = rank(chunk, candidates);
    let regular = ranked.iter().filter(|&&i| !candidates[i].reserve).count();
    if regular >= shards {
        ranked.retain(|&i| !candidates[i].reserve);
    }
    if ranked.is_empty() {
        return Placement {
            targets: Vec::new(),
            degraded: shards > 0,
        };
    }
    let mut zones: HashMap<&str, usize> = HashMap::new();
    for &i in &ranked {
        zones.entry(candidates[i].zone.as_str()).or_insert(0);
    }
    let zone_count = zones.len();
    let mut used = vec![0usize; candidates.len()];
    let mut targets = Vec::with_capacity(shards);
    for _ in 0..shards {
        // Least-used peers first (distinct peers while there are enough), then least-used
        // zones, then rendezvous rank.
        let Some((_, i)) = ranked
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(rank, i)| (used[i], zones[candidates[i].zone.as_str()], rank))
        else {
            break;
        };
        used[i] += 1;
        if let Some(z) = zones.get_mut(candidates[i].zone.as_str()) {
            *z += 1;
        }
        targets.push(i);
    }
    let most = zones.values().copied().max().unwrap_or(0);
    let degraded = ranked.len() < shards || most > shards.div_ceil(zone_count);
    Placement { targets, degraded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(n: usize, zones: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                key: format!("peer-{i}").into_bytes(),
                zone: format!("zone-{}", i % zones.max(1)),
                weight: 1.0,
                reserve: false,
            })
            .collect()
    }

    fn chunk(i: u64) -> ChunkId {
        ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    proptest! {
        #[test]
        fn distinct_peers_when_there_are_enough(n in 6usize..20, seed in any::<u64>()) {
            let c = peers(n, 1);
            let p = place(&chunk(seed), 6, &c);
            let mut t = p.targets.clone();
            t.sort_unstable();
            t.dedup();
            prop_assert_eq!(t.len(), 6);
            prop_assert!(!p.degraded);
        }

        #[test]
        fn zones_are_spread(n in 6usize..24, zones in 1usize..8, seed in any::<u64>()) {
            let c = peers(n, zones);
            let zones = zones.min(n);
            let p = place(&chunk(seed), 6, &c);
            let mut per_zone: HashMap<&str, usize> = HashMap::new();
            for &t in &p.targets {
                *per_zone.entry(c[t].zone.as_str()).or_default() += 1;
            }
            // Every zone holds at most its even share, rounded up.
            prop_assert!(per_zone.values().all(|&k| k <= 6usize.div_ceil(zones)), "{:?}", per_zone);
        }

        #[test]
        fn a_reserve_is_taken_only_when_the_others_do_not_suffice(
            n in 1usize..12, zones in 1usize..4, seed in any::<u64>()
        ) {
            // The reserve sits alone in a zone of its own, which zone spreading would favour.
            let mut c = peers(n, zones);
            c.push(Candidate {
                key: b"writer".to_vec(),
                zone: "the writer's own".into(),
                weight: 1e-9,
                reserve: true,
            });
            let p = place(&chunk(seed), 6, &c);
            let reserve_shards = p.targets.iter().filter(|&&t| t == n).count();
            if n >= 6 {
                prop_assert_eq!(reserve_shards, 0);
            } else {
                // Fewer regular peers than shards: the reserve takes its turn like the others
                // (a shard on it rather than a second on a peer).
                prop_assert!((1..=6usize.div_ceil(n + 1)).contains(&reserve_shards));
            }
            prop_assert_eq!(p.targets.len(), 6);
        }

        #[test]
        fn deterministic_and_order_independent(n in 1usize..12, seed in any::<u64>()) {
            let c = peers(n, 3);
            let a = place(&chunk(seed), 6, &c);
            let mut reversed = c.clone();
            reversed.reverse();
            let b = place(&chunk(seed), 6, &reversed);
            let keys = |p: &Placement, c: &[Candidate]| -> Vec<Vec<u8>> {
                p.targets.iter().map(|&t| c[t].key.clone()).collect()
            };
            prop_assert_eq!(keys(&a, &c), keys(&b, &reversed));
        }

        #[test]
        fn fewer_peers_than_shards_still_places_everything(n in 1usize..6, seed in any::<u64>()) {
            let c = peers(n, 1);
            let p = place(&chunk(seed), 6, &c);
            prop_assert_eq!(p.targets.len(), 6);
            prop_assert!(p.degraded);
            // Spread as evenly as possible.
            let mut count = vec![0; n];
            for &t in &p.targets {
                count[t] += 1;
            }
            prop_assert!(count.iter().max().unwrap() - count.iter().min().unwrap() <= 1);
        }
    }

    /// Shards per peer over many chunks.
    fn load(c: &[Candidate], chunks: u64) -> HashMap<Vec<u8>, usize> {
        let mut out: HashMap<Vec<u8>, usize> = HashMap::new();
        for i in 0..chunks {
            for t in place(&chunk(i), 6, c).targets {
                *out.entry(c[t].key.clone()).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn equal_peers_are_balanced_within_ten_percent() {
        for n in [6, 8, 13, 20] {
            let c = peers(n, 1);
            let l = load(&c, 20_000);
            let mean = l.values().sum::<usize>() as f64 / n as f64;
            let max = *l.values().max().unwrap() as f64;
            assert!(max <= mean * 1.10, "n={n}: max {max} vs mean {mean}");
        }
    }

    #[test]
    fn weights_shift_load_proportionally() {
        // Among many peers a chunk takes few, so selection is close to proportional.
        let mut c = peers(30, 1);
        c[0].weight = 2.0;
        let l = load(&c, 20_000);
        let heavy = l[&c[0].key] as f64;
        let others = (l.values().sum::<usize>() as f64 - heavy) / 29.0;
        assert!(heavy > others * 1.7, "heavy {heavy} vs others {others}");
    }

    #[test]
    fn adding_one_peer_moves_about_one_in_n_plus_one() {
        for n in [6usize, 8, 12, 20] {
            let before = peers(n, 1);
            let mut after = before.clone();
            after.push(Candidate {
                key: b"newcomer".to_vec(),
                zone: "zone-0".into(),
                weight: 1.0,
                reserve: false,
            });
            let chunks = 5_000;
            let mut moved = 0;
            for i in 0..chunks {
                // A shard moves when its holder is no longer among the chunk's targets.
                let held: Vec<&[u8]> = place(&chunk(i), 6, &before)
                    .targets
                    .iter()
                    .map(|&t| before[t].key.as_slice())
                    .collect();
                let targets: Vec<&[u8]> = place(&chunk(i), 6, &after)
                    .targets
                    .iter()
                    .map(|&t| after[t].key.as_slice())
                    .collect();
                moved += held.iter().filter(|k| !targets.contains(k)).count();
            }
            let fraction = moved as f64 / (chunks as f64 * 6.0);
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                fraction <= ideal * 1.5,
                "n={n}: moved {fraction:.3}, ideal {ideal:.3}"
            );
            assert!(fraction >= ideal * 0.5, "n={n}: newcomer got too little");
        }
    }

    #[test]
    fn unusable_peers_get_nothing() {
        let mut c = peers(8, 1);
        c[3].weight = 0.0;
        c[5].weight = f64::NAN;
        for i in 0..500 {
            let p = place(&chunk(i), 6, &c);
            assert!(!p.targets.contains(&3) && !p.targets.contains(&5));
        }
        assert!(place(&chunk(1), 6, &[]).targets.is_empty());
    }
}
