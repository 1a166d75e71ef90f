//! Repair without the writer: the storage peers that hold a chunk's shards look after it.
//!
//! The repair thread ([`super::repair`]) looks after the chunks this peer wrote, from its
//! placement records. A chunk whose writer has gone (a laptop that ran `dfs put` and left) has
//! no one to do that, so every storage peer also acts as a *steward* of the chunks it holds
//! shards of:
//!
//! 1. When the peer table declares a peer dead, the steward waits `steward_delay_secs` (the
//!    writer, if it is still around, has usually repaired by then), then goes through the
//!    chunks it holds, a page at a time. It also does so every hour, for anything missed.
//! 2. A chunk whose writer (a peer that stored one of the shards held here) is a live member
//!    is left to it: the writer repairs from its own records, and a steward rebuilding too
//!    would race it onto the same targets.
//! 3. For each other chunk it ranks the storage members as every peer does
//!    ([`super::Members::rank_candidates`]: where writers and repairs put shards) and asks the
//!    live peers ranked above itself which shards they hold. If any of them holds one, that
//!    peer is the steward of the chunk, not this one: exactly one live holder, the best-ranked,
//!    acts, and the others spend a few small requests.
//! 4. The steward asks the rest of the well-ranked peers and hands what they hold to the same
//!    planner the writer's repair uses ([`dfs_placement::planner`], same candidates), so a
//!    writer that is still around rebuilds a missing shard onto the same peer (same bytes)
//!    rather than scatter a second copy. For each missing shard it gathers any k (each
//!    verified by its checksum; the decoded ciphertext must hash to the chunk id, so no holder
//!    can slip in other bytes), encodes the set again and stores the rebuilt shards on their
//!    targets. Storage peers never see keys; erasure coding works on ciphertext. Moving shards
//!    that are merely off target is left to writers.
//!
//! While a well-ranked peer is suspect (it may be back in a moment), its chunks wait for the
//! next pass. Rebuilds are paced at `max_bytes_per_sec`, like the repair thread's.
//!
//! The rebuilt shards are claimed (for deletion) by the steward; the writer's own records do
//! not learn of them, so a writer that comes back may rebuild a shard once more onto the same
//! target (the same bytes: it then holds a claim too, and its deletes drop only its own) or
//! keep a surplus copy. The steward never drops its claims: a shard it rebuilt outlives the
//! writer's collection of the chunk (space, never data, is what that costs).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_placement::erasure::ShardCoder;
use dfs_placement::planner::{plan, Action, ChunkInventory};
use dfs_placement::{hrw, ChunkId};
use futures::stream::StreamExt;
use libp2p::PeerId;

use super::repair::rebuild_from;
use super::transfer::{image, store_on};
use super::{Cluster, ClusterError, Members};
use crate::meta::{ChunkRecord, Placed};
use crate::repo::Repo;

/// A pass over every held chunk this often even when no peer died.
const PASS_EVERY: Duration = Duration::from_secs(3600);
/// Held chunks read from the table at a time.
const PAGE: usize = 256;
/// Chunks examined at once (each is a handful of small requests).
const EXAMINE_AT_ONCE: usize = 8;
/// Peers ranked below the steward that it asks, beyond the chunk's shard count.
const SPARE: usize = 4;

/// Run until the cluster stops (on storage peers only).
pub fn run(cluster: &Cluster, repo: &Arc<Repo>) {
    let settings = cluster.settings();
    if !settings.store_here || settings.transient {
        return;
    }
    let delay = Duration::from_secs(settings.steward_delay_secs);
    let mut known_dead: BTreeSet<PeerId> = BTreeSet::new();
    let mut due: Option<Instant> = None;
    let mut last_pass = Instant::now();
    while cluster.sleep(Duration::from_millis(500)) {
        let members = cluster.members();
        if !members.settled {
            continue;
        }
        let now = Instant::now();
        let dead: BTreeSet<PeerId> = members.dead.iter().copied().collect();
        if dead.difference(&known_dead).next().is_some() {
            let at = now + delay;
            due = Some(due.map_or(at, |d| d.min(at)));
            tracing::info!(
                "a peer died: checking the chunks held here in {} s",
                delay.as_secs()
            );
        }
        known_dead = dead;
        if due.is_none() && last_pass.elapsed() >= PASS_EVERY {
            due = Some(now);
        }
        if due.is_some_and(|d| now >= d) {
            due = None;
            last_pass = now;
            match pass(cluster, repo) {
                Ok(deferred) if deferred > 0 => due = Some(Instant::now() + delay),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("steward pass failed: {e}");
                    due = Some(Instant::now() + delay);
                }
            }
        }
    }
}

/// What one chunk needs.
enum Verdict {
    /// Every shard is on a live peer, or a better-ranked holder looks after it.
    Fine,
    /// A well-ranked peer is suspect or did not answer: look again later.
    Defer,
    /// Fewer than k shards are on live peers.
    Lost,
    Rebuild {
        record: ChunkRecord,
        present: Placed,
        /// (missing index, target).
        plan: Vec<(u8, PeerId)>,
    },
}

/// One pass over the held chunks; returns how many were deferred.
fn pass(cluster: &Cluster, repo: &Repo) -> Result<u64, crate::meta::MetaError> {
    let members = cluster.members();
    let started = Instant::now();
    let rate = cluster.settings().max_bytes_per_sec.max(1) as f64;
    let (mut examined, mut stewarded, mut lost, mut deferred) = (0u64, 0u64, 0u64, 0u64);
    let mut spent = 0u64;
    let mut coder = ShardCoder::default();
    let mut after: Option<ChunkId> = None;
    loop {
        if cluster.stopping() {
            break;
        }
        let page = repo.meta().held_chunks(after.as_ref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(*last);
        let examined_page = cluster.wait_for(
            futures::stream::iter(page)
                .map(|id| {
                    let members = &members;
                    async move { (id, examine(cluster, repo, members, &id).await) }
                })
                .buffer_unordered(EXAMINE_AT_ONCE)
                .collect::<Vec<(ChunkId, Verdict)>>(),
        );
        let Some(verdicts) = examined_page else { break };
        for (id, verdict) in verdicts {
            examined += 1;
            match verdict {
                Verdict::Fine => {}
                Verdict::Defer => deferred += 1,
                Verdict::Lost => {
                    lost += 1;
                    tracing::error!(chunk = %id.short(), "fewer shards are left on live peers than it takes to rebuild the chunk");
                }
                Verdict::Rebuild {
                    record,
                    present,
                    plan,
                } => {
                    stewarded += 1;
                    match rebuild(cluster, repo, &mut coder, &id, &record, &present, &plan) {
                        Ok(bytes) => spent += bytes,
                        Err(e) => {
                            deferred += 1;
                            tracing::warn!(chunk = %id.short(), "steward rebuild failed: {e}");
                        }
                    }
                    // Pace the rebuilds at the repair rate.
                    let ahead = spent as f64 / rate - started.elapsed().as_secs_f64();
                    if ahead > 0.0 && !cluster.sleep(Duration::from_secs_f64(ahead)) {
                        break;
                    }
                }
            }
        }
    }
    cluster.set_status(|s| {
        let st = &mut s.steward;
        st.passes += 1;
        st.examined += examined;
        st.stewarded += stewarded;
        st.lost = lost;
        st.deferred = deferred;
    });
    tracing::info!(
        examined,
        stewarded,
        lost,
        deferred,
        secs = started.elapsed().as_secs_f64(),
        "steward pass done"
    );
    Ok(deferred)
}

/// Decide what chunk `id` needs (see the module doc).
async fn examine(cluster: &Cluster, repo: &Repo, members: &Members, id: &ChunkId) -> Verdict {
    let Ok(mine) = cluster.network.holding(cluster.local, *id).await else {
        return Verdict::Defer;
    };
    let Some(header) = mine.header else {
        // Nothing readable here (deleted meanwhile, or rotten: scrubbing's business).
        return Verdict::Fine;
    };
    if writer_is_around(cluster, repo, members, id, &mine.indices) {
        return Verdict::Fine;
    }
    let layout = header.layout;
    let count = layout.shard_count();
    let ranked = hrw::rank(id, &members.rank_candidates());
    let Some(me) = ranked.iter().position(|&i| members.list[i].is_self) else {
        return Verdict::Fine;
    };
    let well_ranked = &ranked[..(me + 1 + count + SPARE).min(ranked.len())];
    if well_ranked.iter().any(|&i| !members.list[i].alive) {
        return Verdict::Defer;
    }
    let ask = |list: &[usize]| {
        let peers: Vec<PeerId> = list
            .iter()
            .map(|&i| members.list[i].id)
            .filter(|p| *p != cluster.local)
            .collect();
        async move {
            futures::future::join_all(
                peers
                    .into_iter()
                    .map(|peer| async move { (peer, cluster.network.holding(peer, *id).await) }),
            )
            .await
        }
    };
    // A better-ranked live holder is the steward.
    let above = ask(&well_ranked[..me]).await;
    if above
        .iter()
        .any(|(_, r)| r.as_ref().is_ok_and(|h| !h.indices.is_empty()))
    {
        return Verdict::Fine;
    }
    if above.iter().any(|(_, r)| r.is_err()) {
        return Verdict::Defer;
    }
    let below = ask(&well_ranked[me + 1..]).await;
    let mut present = Placed::default();
    for i in &mine.indices {
        present.holders.push((*i, cluster.local.to_bytes()));
    }
    for (peer, reply) in &below {
        match reply {
            Ok(h) => {
                for &i in h.indices.iter().filter(|&&i| usize::from(i) < count) {
                    present.holders.push((i, peer.to_bytes()));
                }
            }
            Err(_) => return Verdict::Defer,
        }
    }
    // The same planner, over the same candidates, as the writer's repair thread: a writer
    // that is still around rebuilds the same shard onto the same peer (the same bytes), so
    // the two never scatter copies.
    let held: Vec<(u8, usize)> = present
        .holders
        .iter()
        .filter_map(|(i, bytes)| {
            let peer = PeerId::from_bytes(bytes).ok()?;
            Some((*i, members.position(&peer)?))
        })
        .collect();
    let inventory = ChunkInventory {
        chunk: *id,
        data_shards: layout.needed(),
        total_shards: count,
        held,
    };
    let planned = plan(&[inventory], &members.candidates(false), usize::MAX);
    if !planned.lost.is_empty() {
        return Verdict::Lost;
    }
    let rebuilds: Vec<(u8, PeerId)> = planned
        .actions
        .iter()
        .filter_map(|a| match *a {
            // Suspect peers take nothing new.
            Action::Rebuild { index, to, .. } if members.list[to].alive => {
                Some((index, members.list[to].id))
            }
            _ => None,
        })
        .collect();
    if rebuilds.is_empty() {
        // Complete, or only off target (rebalancing is the writer's business).
        return Verdict::Fine;
    }
    Verdict::Rebuild {
        record: ChunkRecord {
            layout,
            len: header.chunk_len,
        },
        present,
        plan: rebuilds,
    }
}

/// Whether a peer that stored one of the shards of `id` held here (its writer, as a rule) is
/// a live member: it repairs the chunk itself, from its own records, and a steward acting
/// too would race it (two rebuilds of one shard, and stand-in copies the writer never learns
/// of). A record that cannot be read counts as no writer.
fn writer_is_around(
    cluster: &Cluster,
    repo: &Repo,
    members: &Members,
    id: &ChunkId,
    held: &[u8],
) -> bool {
    held.iter().any(|&index| {
        let Ok(Some(record)) = repo.meta().held(id, index) else {
            return false;
        };
        let live = |c: &Vec<u8>| {
            PeerId::from_bytes(c).is_ok_and(|peer| {
                peer != cluster.local && members.get(&peer).is_some_and(|m| m.alive)
            })
        };
        let around = record.claimants().any(live);
        around
    })
}

/// Rebuild the shards of `plan` from the ones `present` names and store them; returns the
/// bytes written.
fn rebuild(
    cluster: &Cluster,
    repo: &Repo,
    coder: &mut ShardCoder,
    id: &ChunkId,
    record: &ChunkRecord,
    present: &Placed,
    plan: &[(u8, PeerId)],
) -> Result<u64, ClusterError> {
    let shards = rebuild_from(cluster, repo, coder, id, record, present)?;
    let mut bytes = 0;
    for &(index, to) in plan {
        let img = image(&shards, usize::from(index));
        let len: u64 = img.iter().map(|part| part.len() as u64).sum();
        let stored = cluster
            .wait_for(store_on(cluster, repo, to, id, index, &img))
            .unwrap_or_else(|| Err(crate::net::NetError::Stopped.into()));
        match stored {
            Ok(()) => {
                bytes += len;
                cluster.set_status(|s| {
                    s.steward.rebuilt += 1;
                    s.steward.rebuilt_bytes += len;
                });
                tracing::info!(chunk = %id.short(), index, %to, "steward rebuilt a shard");
            }
            Err(e) => {
                tracing::warn!(chunk = %id.short(), index, %to, "steward could not store a rebuilt shard: {e}")
            }
        }
    }
    Ok(bytes)
}
