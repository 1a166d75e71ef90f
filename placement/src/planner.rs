//! The repair and rebalance planner: from the live peers and the shard inventory, what to do.
//!
//! For each chunk the targets are its rendezvous placement ([`crate::hrw::place`]) on the live
//! peers. Missing shards (never stored, or on peers that are gone) are rebuilt from `k`
//! surviving ones onto targets that hold nothing of the chunk yet; shards on peers that are no
//! longer targets move to such targets; extra copies are dropped. Repairs come first (a chunk
//! closest to loss first), then moves, then drops, and a round does at most `budget` actions,
//! which is how the caller bounds the repair and rebalance rate. A chunk with fewer than `k`
//! surviving shards is lost: it is reported, and nothing is planned for it.
//!
//! Pure: the caller gathers the inventory and carries out the actions.

use std::collections::BTreeMap;

use crate::hrw::{place, Candidate};
use crate::ChunkId;

/// Who holds which shards of one chunk (peers as indices into the candidates; only live
/// peers should appear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInventory {
    pub chunk: ChunkId,
    /// k: shards needed to rebuild.
    pub data_shards: usize,
    /// k + m.
    pub total_shards: usize,
    /// (shard index, peer) for every copy known.
    pub held: Vec<(u8, usize)>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Decode the chunk from surviving shards and write shard `index` to peer `to`.
    Rebuild {
        chunk: ChunkId,
        index: u8,
        to: usize,
    },
    /// Copy shard `index` from `from` to `to`, then delete it from `from`.
    Move {
        chunk: ChunkId,
        index: u8,
        from: usize,
        to: usize,
    },
    /// Delete a surplus copy of shard `index` on `from`.
    Drop {
        chunk: ChunkId,
        index: u8,
        from: usize,
    },
}

/// What a planning round found and wants done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Chunks missing shards or not on their targets (before this plan runs).
    pub degraded: usize,
    /// Chunks with fewer than `k` surviving shards.
    pub lost: Vec<ChunkId>,
    /// Actions left for later rounds by the budget.
    pub deferred: usize,
}

/// Plan one round (see the module doc).
pub fn plan(inventory: &[ChunkInventory], peers: &[Candidate], budget: usize) -> Plan {
    let mut out = Plan::default();
    // (urgency: surviving shards above k, action) so repairs of the most endangered go first.
    let mut repairs: Vec<(usize, Action)> = Vec::new();
    let mut moves = Vec::new();
    let mut drops = Vec::new();
    for inv in inventory {
        let mut by_index: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for &(index, peer) in &inv.held {
            if usize::from(index) < inv.total_shards && peer < peers.len() {
                let holders = by_index.entry(index).or_default();
                if !holders.contains(&peer) {
                    holders.push(peer);
                }
            }
        }
        if by_index.len() < inv.data_shards {
            out.lost.push(inv.chunk);
            continue;
        }
        let targets = place(&inv.chunk, inv.total_shards, peers).targets;
        // Shards each target should hold (more than one only with fewer peers than shards).
        let mut slots: BTreeMap<usize, usize> = BTreeMap::new();
        for &t in &targets {
            *slots.entry(t).or_default() += 1;
        }
        // Keep each shard on a holder that is a target with a slot left.
        let mut keep: BTreeMap<u8, usize> = BTreeMap::new();
        for (&index, holders) in &by_index {
            if let Some(&h) = holders
                .iter()
                .find(|h| slots.get(h).is_some_and(|&s| s > 0))
            {
                if let Some(s) = slots.get_mut(&h) {
                    *s -= 1;
                }
                keep.insert(index, h);
            }
        }
        let mut free = targets
            .iter()
            .copied()
            .filter(|t| {
                let left = slots.get_mut(t).filter(|s| **s > 0);
                left.map(|s| *s -= 1).is_some()
            })
            .collect::<Vec<_>>()
            .into_iter();
        let before = out_len(&repairs, &moves, &drops);
        let surviving = by_index.len();
        for index in 0..inv.total_shards as u8 {
            match (by_index.get(&index), keep.get(&index)) {
                (None, _) => {
                    if let Some(to) = free.next() {
                        let action = Action::Rebuild {
                            chunk: inv.chunk,
                            index,
                            to,
                        };
                        repairs.push((surviving - inv.data_shards, action));
                    }
                }
                (Some(holders), None) => {
                    if let Some(to) = free.next() {
                        moves.push(Action::Move {
                            chunk: inv.chunk,
                            index,
                            from: holders[0],
                            to,
                        });
                        for &from in &holders[1..] {
                            drops.push(Action::Drop {
                                chunk: inv.chunk,
                                index,
                                from,
                            });
                        }
                    }
                }
                (Some(holders), Some(&kept)) => {
                    for &from in holders.iter().filter(|&&h| h != kept) {
                        drops.push(Action::Drop {
                            chunk: inv.chunk,
                            index,
                            from,
                        });
                    }
                }
            }
        }
        if out_len(&repairs, &moves, &drops) > before {
            out.degraded += 1;
        }
    }
    repairs.sort_by_key(|(urgency, _)| *urgency);
    let all = repairs
        .into_iter()
        .map(|(_, a)| a)
        .chain(moves)
        .chain(drops)
        .collect::<Vec<_>>();
    out.deferred = all.len().saturating_sub(budget);
    out.actions = all.into_iter().take(budget).collect();
    out
}

fn out_len(a: &[(usize, Action)], b: &[Action], c: &[Action]) -> usize {
    a.len() + b.len() + c.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                key: format!("peer-{i}").into_bytes(),
                zone: format!("zone-{}", i % 3),
                weight: 1.0,
                reserve: false,
            })
            .collect()
    }

    fn chunk(i: u64) -> ChunkId {
        ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// A chunk stored where placement says on `peers`.
    fn placed(i: u64, peers: &[Candidate]) -> ChunkInventory {
        let targets = place(&chunk(i), 6, peers).targets;
        ChunkInventory {
            chunk: chunk(i),
            data_shards: 4,
            total_shards: 6,
            held: targets
                .iter()
                .enumerate()
                .map(|(index, &p)| (index as u8, p))
                .collect(),
        }
    }

    /// Carry out a plan on the inventory (what the node will do for real).
    fn apply(inv: &mut [ChunkInventory], actions: &[Action]) {
        for a in actions {
            match *a {
                Action::Rebuild { chunk, index, to } => {
                    let c = inv.iter_mut().find(|c| c.chunk == chunk).unwrap();
                    c.held.push((index, to));
                }
                Action::Move {
                    chunk,
                    index,
                    from,
                    to,
                } => {
                    let c = inv.iter_mut().find(|c| c.chunk == chunk).unwrap();
                    c.held.retain(|&h| h != (index, from));
                    c.held.push((index, to));
                }
                Action::Drop { chunk, index, from } => {
                    let c = inv.iter_mut().find(|c| c.chunk == chunk).unwrap();
                    c.held.retain(|&h| h != (index, from));
                }
            }
        }
    }

    /// Remove a peer: its shards are gone, and the other peers' indices shift down.
    fn without(inv: &mut [ChunkInventory], dead: usize) {
        for c in inv {
            c.held.retain(|&(_, p)| p != dead);
            for h in &mut c.held {
                if h.1 > dead {
                    h.1 -= 1;
                }
            }
        }
    }

    #[test]
    fn a_healthy_placement_needs_nothing() {
        let p = peers(8);
        let inv: Vec<_> = (0..200).map(|i| placed(i, &p)).collect();
        let plan = plan(&inv, &p, usize::MAX);
        assert_eq!(plan, Plan::default());
    }

    proptest! {
        #[test]
        fn losing_peers_is_repaired_to_full_health(
            n in 7usize..12, dead in proptest::collection::btree_set(0usize..7, 1..3), budget in 1usize..50
        ) {
            let mut p = peers(n);
            let mut inv: Vec<_> = (0..60).map(|i| placed(i, &p)).collect();
            for &d in dead.iter().rev() {
                without(&mut inv, d);
                p.remove(d);
            }
            // Rounds under the budget until nothing is left to do.
            let mut rounds = 0;
            loop {
                let plan = plan(&inv, &p, budget);
                prop_assert!(plan.lost.is_empty(), "lost with only {} peers dead", dead.len());
                prop_assert!(plan.actions.len() <= budget);
                // Repairs come before moves and drops.
                let is_rebuild = |a: &Action| matches!(a, Action::Rebuild { .. });
                if let Some(f) = plan.actions.iter().position(|a| !is_rebuild(a)) {
                    let ordered = plan.actions[f..].iter().all(|a| !is_rebuild(a));
                    prop_assert!(ordered, "a repair after a move: {:?}", plan.actions);
                }
                if plan.actions.is_empty() {
                    break;
                }
                apply(&mut inv, &plan.actions);
                rounds += 1;
                prop_assert!(rounds < 1000);
            }
            // Every chunk: all 6 shards, once each, on 6 distinct live peers.
            for c in &inv {
                let mut indices: Vec<u8> = c.held.iter().map(|h| h.0).collect();
                indices.sort_unstable();
                prop_assert_eq!(indices, vec![0, 1, 2, 3, 4, 5]);
                let holders: std::collections::BTreeSet<usize> =
                    c.held.iter().map(|h| h.1).collect();
                prop_assert_eq!(holders.len(), 6.min(p.len()));
            }
        }
    }

    #[test]
    fn too_few_shards_is_lost_not_planned() {
        let p = peers(8);
        let mut inv = vec![placed(1, &p)];
        inv[0].held.truncate(3);
        let plan = plan(&inv, &p, 100);
        assert_eq!(plan.lost, vec![chunk(1)]);
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn the_most_endangered_chunk_is_repaired_first() {
        let p = peers(8);
        let mut a = placed(1, &p);
        let mut b = placed(2, &p);
        a.held.truncate(5); // one shard missing
        b.held.truncate(4); // two missing: one more loss and it is gone
        let plan = plan(&[a, b], &p, 1);
        assert!(matches!(plan.actions[0], Action::Rebuild { chunk, .. } if chunk == chunk_of(2)));
        assert_eq!(plan.deferred, 2);
        assert_eq!(plan.degraded, 2);
    }

    fn chunk_of(i: u64) -> ChunkId {
        chunk(i)
    }

    #[test]
    fn a_joining_peer_gets_about_its_share_and_no_more() {
        let before = peers(10);
        let inv: Vec<_> = (0..2000).map(|i| placed(i, &before)).collect();
        let mut after = before.clone();
        after.push(Candidate {
            key: b"newcomer".to_vec(),
            zone: "zone-1".into(),
            weight: 1.0,
            reserve: false,
        });
        let plan = plan(&inv, &after, usize::MAX);
        assert!(plan
            .actions
            .iter()
            .all(|a| matches!(a, Action::Move { to: 10, .. })));
        let fraction = plan.actions.len() as f64 / (2000.0 * 6.0);
        let ideal = 1.0 / 11.0;
        assert!(
            fraction <= ideal * 1.5 && fraction >= ideal * 0.5,
            "{fraction}"
        );
    }
}
