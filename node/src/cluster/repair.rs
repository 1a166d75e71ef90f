//! The repair thread: every round it takes stock of where the shards of this peer's chunks
//! are, asks the planner what to do, and does it within a byte budget.
//!
//! A round:
//! 1. builds each chunk's inventory from its placement record (a chunk without one has every
//!    shard in the local store). Holders the peer table knows to be dead are left out, so their
//!    shards count as missing; a holder it does not know yet makes the round skip that chunk
//!    until the table has settled (a restarted peer must not rebuild everything it has not
//!    heard from yet);
//! 2. plans ([`dfs_placement::planner::plan`]) with suspect peers still counted as holders but
//!    never as new targets, so a peer that blips is not repaired around;
//! 3. rebuilds missing shards (decoding the chunk once from any k shards), moves shards toward
//!    their rendezvous targets, drops surplus copies, at most `max_bytes_per_sec` a second;
//! 4. deletes on other peers the shards of chunks collected here;
//! 5. scrubs a few shards: fetches them and checks each against the hash this peer recorded
//!    when it wrote the chunk (for chunks written before hashes were kept, asks the holder to
//!    re-verify it). A shard that is corrupt, forged or gone is struck from the record, so the
//!    next round rebuilds it elsewhere (a peer caught with a forged shard is given no new
//!    ones).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_placement::erasure::ShardCoder;
use dfs_placement::planner::{plan, Action, ChunkInventory};
use dfs_placement::ChunkId;
use libp2p::PeerId;

pub use super::status::PlacementStatus;
use super::transfer::{fetch_counted, fetch_from, gather, image, store_on, ShardCheck};
use super::{peer_from_bytes, Cluster, ClusterError, Members};
use crate::chunk::{encode_shards, ChunkError};
use crate::meta::{ChunkRecord, Placed};
use crate::net::{NetError, Refusal};
use crate::repo::Repo;

/// Chunks repaired or moved at once.
const REPAIR_THREADS: usize = 4;
/// How long a scrub check may take before the shard is left for a later round.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of scrub credit a check costs at least (a request and a file read, however small).
const MIN_SCRUB_COST: usize = 4096;

/// Run rounds until the cluster stops.
pub fn run(cluster: &Cluster, repo: &Arc<Repo>) {
    let interval = Duration::from_millis(cluster.settings.repair_interval_ms.max(100));
    let mut scrub = ScrubState::new();
    let mut memo: Option<Memo> = None;
    let mut events = RepairEvents::default();
    while cluster.nap(interval, true) {
        let started = Instant::now();
        let result = round(cluster, repo, &mut scrub, &mut memo, interval);
        cluster.set_status(|s| {
            s.rounds += 1;
            s.last_round_ms = started.elapsed().as_millis() as u64;
            s.last_error = result.as_ref().err().map(|e| e.to_string());
        });
        if let Err(e) = &result {
            tracing::warn!("repair round failed: {e}");
        }
        events.after_round(repo, &cluster.status());
    }
}

/// Turns repair rounds into events: started when work appears, finished when none is left,
/// and a failing round once per distinct error (not every round).
#[derive(Default)]
struct RepairEvents {
    /// Work done (rebuilt + moved + dropped) when the current repair started, and when.
    active: Option<(u64, Instant)>,
    last_work: u64,
    last_error: Option<String>,
}

impl RepairEvents {
    fn after_round(&mut self, repo: &Repo, s: &PlacementStatus) {
        use crate::events::EventKind;
        let work = s.rebuilt + s.moved + s.dropped;
        let busy = work > self.last_work || s.pending > 0;
        match self.active {
            None if busy => {
                let detail = format!(
                    "{} chunks degraded, {} shards left to rebuild or move",
                    s.degraded, s.pending
                );
                repo.record_event(EventKind::RepairStarted, "placement", &detail);
                self.active = Some((self.last_work, Instant::now()));
            }
            Some((from, at)) if !busy => {
                let detail = format!(
                    "{} shards rebuilt, moved or dropped in {:.1} s; {} chunks degraded, {} lost",
                    work - from,
                    at.elapsed().as_secs_f64(),
                    s.degraded,
                    s.lost
                );
                repo.record_event(EventKind::RepairFinished, "placement", &detail);
                self.active = None;
            }
            _ => {}
        }
        self.last_work = work;
        if s.last_error != self.last_error {
            if let Some(e) = &s.last_error {
                repo.record_event(EventKind::Error, "repair", e);
            }
            self.last_error = s.last_error.clone();
        }
    }
}

/// Wait for a network request from the repair thread; once the cluster stops, the request
/// is not sent (or is cancelled) and fails as [`NetError::Stopped`].
fn block<T, E: From<NetError>>(
    cluster: &Cluster,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    cluster
        .wait_for(f)
        .unwrap_or_else(|| Err(NetError::Stopped.into()))
}

/// Inventory of every chunk this peer looks after, in the planner's terms.
struct Stock {
    inventories: Vec<ChunkInventory>,
    records: BTreeMap<ChunkId, ChunkRecord>,
    crowded: u64,
    /// Chunks skipped because a holder is not known yet.
    unsure: u64,
}

fn take_stock(cluster: &Cluster, repo: &Repo, members: &Members) -> Result<Stock, ChunkError> {
    let mut stock = Stock {
        inventories: Vec::new(),
        records: BTreeMap::new(),
        crowded: 0,
        unsure: 0,
    };
    let local = members.list.iter().position(|m| m.is_self);
    for id in repo.meta().chunk_ids()? {
        let Some(record) = repo.meta().chunk(&id)? else {
            continue;
        };
        let count = record.layout.shard_count();
        let held: Vec<(u8, usize)> = match repo.meta().placed(&id)? {
            None => match local {
                Some(me) => (0..count as u8).map(|i| (i, me)).collect(),
                None => continue,
            },
            Some(placed) => {
                let mut held = Vec::with_capacity(placed.holders.len());
                let mut unsure = false;
                for (index, bytes) in &placed.holders {
                    let Some(peer) = peer_from_bytes(bytes) else {
                        continue;
                    };
                    match members.position(&peer) {
                        Some(pos) => held.push((*index, pos)),
                        None if members.is_dead(&peer) || members.settled => {}
                        None => unsure = true,
                    }
                }
                if unsure {
                    stock.unsure += 1;
                    continue;
                }
                // A gone holder of a shard that lives elsewhere now is struck from the record;
                // its copy is deleted if the peer ever comes back.
                let gone: Vec<(u8, Vec<u8>)> = placed
                    .holders
                    .iter()
                    .filter(|(index, bytes)| {
                        peer_from_bytes(bytes).is_some_and(|p| members.position(&p).is_none())
                            && held.iter().any(|(i, _)| i == index)
                    })
                    .cloned()
                    .collect();
                if !gone.is_empty() {
                    forget_gone(cluster, repo, &id, &gone)?;
                }
                held
            }
        };
        let mut peers: Vec<usize> = held.iter().map(|(_, p)| *p).collect();
        peers.sort_unstable();
        peers.dedup();
        if peers.len() < count {
            stock.crowded += 1;
        }
        stock.inventories.push(ChunkInventory {
            chunk: id,
            data_shards: record.layout.needed(),
            total_shards: count,
            held,
        });
        stock.records.insert(id, record);
    }
    Ok(stock)
}

/// What the last full pass over the chunks saw. While membership and placement records stay as
/// they were and that pass left nothing to do, a round does not look at every chunk again
/// (which costs about 4 s per million chunks): only deletes and scrubbing go on.
struct Memo {
    fingerprint: u64,
    changes: u64,
    at: Instant,
    quiet: bool,
}

/// A full pass is made at least this often anyway (counts in `dfs status` stay fresh, and
/// anything the memo cannot see, such as a peer that filled up, is caught).
const FULL_PASS_EVERY: Duration = Duration::from_secs(300);

fn round(
    cluster: &Cluster,
    repo: &Repo,
    scrub_state: &mut ScrubState,
    memo: &mut Option<Memo>,
    interval: Duration,
) -> Result<(), ChunkError> {
    let members = cluster.members();
    // Alone, with every shard local, there is nothing to do (and no reason to scan).
    if members.live_others() == 0 && !repo.meta().has_placed()? {
        return Ok(());
    }
    let fingerprint = members.fingerprint();
    let changes = cluster.changes.load(Ordering::Relaxed);
    let unchanged = memo.as_ref().is_some_and(|m| {
        m.quiet
            && m.fingerprint == fingerprint
            && m.changes == changes
            && m.at.elapsed() < FULL_PASS_EVERY
    });
    if !unchanged {
        let quiet = full_pass(cluster, repo, &members, interval)?;
        *memo = Some(Memo {
            fingerprint,
            changes,
            at: Instant::now(),
            quiet,
        });
    }
    delete_doomed(cluster, repo, &members)?;
    scrub(cluster, repo, scrub_state)?;
    Ok(())
}

/// Look at every chunk, plan, and carry out what the budget allows. True when there was
/// nothing to do.
fn full_pass(
    cluster: &Cluster,
    repo: &Repo,
    members: &Members,
    interval: Duration,
) -> Result<bool, ChunkError> {
    cluster.passes_begun.fetch_add(1, Ordering::Relaxed);
    let candidates = members.candidates(false);
    let stock = take_stock(cluster, repo, members)?;
    let settings = cluster.settings();
    let planned = plan(
        &stock.inventories,
        &candidates,
        settings.max_actions_per_round as usize,
    );
    let lost = planned.lost.len() as u64;
    if lost > 0 {
        tracing::error!(
            chunks = lost,
            "chunks have fewer shards left than needed to rebuild them"
        );
    }
    let crowded = stock.crowded;
    let quiet = planned.actions.is_empty() && planned.deferred == 0 && stock.unsure == 0;
    cluster.set_status(|s| {
        s.full_passes += 1;
        s.chunks = stock.inventories.len() as u64 + stock.unsure;
        s.degraded = planned.degraded as u64;
        s.crowded = crowded;
        s.lost = lost;
        s.pending = (planned.actions.len() + planned.deferred) as u64;
    });
    let budget = (settings.max_bytes_per_sec as f64 * interval.as_secs_f64()) as u64;
    // Chunks in the planner's order (most endangered first), each with its actions.
    let mut work: Vec<(ChunkId, Vec<Action>)> = Vec::new();
    for action in planned.actions {
        let (chunk, to) = match &action {
            Action::Rebuild { chunk, to, .. } | Action::Move { chunk, to, .. } => {
                (*chunk, Some(*to))
            }
            Action::Drop { chunk, .. } => (*chunk, None),
        };
        // Suspect peers keep what they hold but take nothing new.
        if to.is_some_and(|t| !members.list[t].alive) {
            continue;
        }
        match work.iter_mut().find(|(id, _)| *id == chunk) {
            Some((_, actions)) => actions.push(action),
            None => work.push((chunk, vec![action])),
        }
    }
    for (id, _) in &work {
        if let Some(record) = stock.records.get(id) {
            ensure_placed(cluster, repo, id, record)?;
        }
    }
    // A few chunks at a time: each waits mostly on other peers.
    let queue = std::sync::Mutex::new(work.into_iter());
    let spent = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..REPAIR_THREADS {
            scope.spawn(|| {
                let mut coder = ShardCoder::default();
                loop {
                    if spent.load(Ordering::Relaxed) >= budget || cluster.stopping() {
                        return;
                    }
                    let next = super::lock(&queue).next();
                    let Some((id, actions)) = next else { return };
                    let Some(record) = stock.records.get(&id) else {
                        continue;
                    };
                    match carry_out(cluster, repo, &mut coder, members, &id, record, &actions) {
                        Ok(bytes) => {
                            spent.fetch_add(bytes, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!(chunk = %id.short(), "repair failed: {e}"),
                    }
                }
            });
        }
    });
    Ok(quiet)
}

/// Move holders that are gone from a chunk's record to its queue of deletes.
fn forget_gone(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    gone: &[(u8, Vec<u8>)],
) -> Result<(), ChunkError> {
    cluster.update_placed(repo, id, |p| p.holders.retain(|h| !gone.contains(h)))?;
    repo.meta().queue_deletes(id, gone)?;
    Ok(())
}

/// Give a chunk whose shards are all local an explicit record before any of them moves.
fn ensure_placed(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    record: &ChunkRecord,
) -> Result<(), ChunkError> {
    let _guard = super::lock(&cluster.placed_lock);
    if repo.meta().placed(id)?.is_none() {
        let me = cluster.local.to_bytes();
        let placed = Placed {
            holders: (0..record.layout.shard_count() as u8)
                .map(|i| (i, me.clone()))
                .collect(),
        };
        repo.meta().set_placed(id, &placed)?;
    }
    Ok(())
}

/// Do one chunk's actions; returns the bytes written.
fn carry_out(
    cluster: &Cluster,
    repo: &Repo,
    coder: &mut ShardCoder,
    members: &Members,
    id: &ChunkId,
    record: &ChunkRecord,
    actions: &[Action],
) -> Result<u64, ClusterError> {
    let peer = |i: usize| members.list[i].id;
    let needs_decode = actions.iter().any(|a| matches!(a, Action::Rebuild { .. }));
    let mut rebuilt = None;
    if needs_decode {
        rebuilt = Some(rebuild_shards(cluster, repo, coder, id, record)?);
    }
    let mut bytes = 0;
    for action in actions {
        match *action {
            Action::Rebuild { index, to, .. } => {
                let Some(shards) = &rebuilt else { continue };
                let img = image(shards, usize::from(index));
                let len = img.iter().map(|part| part.len() as u64).sum::<u64>();
                block(cluster, store_on(cluster, repo, peer(to), id, index, &img))?;
                add_holder(cluster, repo, id, index, peer(to))?;
                bytes += len;
                cluster.set_status(|s| {
                    s.rebuilt += 1;
                    s.repair_bytes += len;
                });
                tracing::info!(chunk = %id.short(), index, to = %peer(to), "rebuilt shard");
            }
            Action::Move {
                index, from, to, ..
            } => {
                let hashes = repo.meta().shard_hashes(id)?;
                let expected = hashes.as_ref().and_then(|h| h.of(index));
                let fetched = block(
                    cluster,
                    fetch_from(cluster, repo, peer(from), id, index, expected),
                );
                let img = match fetched {
                    Ok(img) => img,
                    Err(_) => {
                        let shards = match rebuilt.take() {
                            Some(s) => s,
                            None => rebuild_shards(cluster, repo, coder, id, record)?,
                        };
                        let img = image(&shards, usize::from(index)).concat();
                        rebuilt = Some(shards);
                        img
                    }
                };
                let len = img.len() as u64;
                block(
                    cluster,
                    store_on(cluster, repo, peer(to), id, index, &[&img]),
                )?;
                add_holder(cluster, repo, id, index, peer(to))?;
                drop_holder(cluster, repo, id, index, peer(from))?;
                bytes += len;
                cluster.set_status(|s| {
                    s.moved += 1;
                    s.repair_bytes += len;
                });
            }
            Action::Drop { index, from, .. } => {
                drop_holder(cluster, repo, id, index, peer(from))?;
                cluster.set_status(|s| s.dropped += 1);
            }
        }
    }
    Ok(bytes)
}

/// Decode a chunk from any k of its shards and encode the whole set again.
fn rebuild_shards(
    cluster: &Cluster,
    repo: &Repo,
    coder: &mut ShardCoder,
    id: &ChunkId,
    record: &ChunkRecord,
) -> Result<crate::chunk::ShardSet, ClusterError> {
    let placed = repo.meta().placed(id)?.unwrap_or_default();
    rebuild_from(cluster, repo, coder, id, record, &placed)
}

/// Decode a chunk from any k of the shards `placed` names (each verified, and the decoded
/// ciphertext checked against the chunk id) and encode the whole set again.
pub(super) fn rebuild_from(
    cluster: &Cluster,
    repo: &Repo,
    coder: &mut ShardCoder,
    id: &ChunkId,
    record: &ChunkRecord,
    placed: &Placed,
) -> Result<crate::chunk::ShardSet, ClusterError> {
    let layout = record.layout;
    let hashes = repo.meta().shard_hashes(id)?;
    let gathered = cluster
        .wait_for(gather(
            cluster,
            repo,
            id,
            layout,
            placed,
            layout.needed(),
            ShardCheck::Checksum(hashes.as_ref()),
        ))
        .ok_or(NetError::Stopped)?;
    let ciphertext = coder.decode(layout, record.len as usize, &gathered.bodies())?;
    if blake3::hash(&ciphertext).as_bytes() != id.as_bytes() {
        return Err(ClusterError::Mismatch);
    }
    Ok(encode_shards(id, ciphertext, layout, coder)?)
}

fn add_holder(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    index: u8,
    peer: PeerId,
) -> Result<(), ClusterError> {
    let bytes = peer.to_bytes();
    // A delete still queued for this very shard (the peer held it before) must not follow.
    repo.meta().unqueue_deletes(id, &[(index, bytes.clone())])?;
    cluster.update_placed(repo, id, |p| {
        if !p.holders.iter().any(|(i, b)| *i == index && *b == bytes) {
            p.holders.push((index, bytes));
            p.holders.sort();
        }
    })?;
    Ok(())
}

/// Delete shard `index` on `peer` and strike it from the record; a delete that cannot be done
/// now is queued with the collected chunks' deletes.
fn drop_holder(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    index: u8,
    peer: PeerId,
) -> Result<(), ClusterError> {
    let bytes = peer.to_bytes();
    cluster.update_placed(repo, id, |p| {
        p.holders.retain(|(i, b)| !(*i == index && *b == bytes))
    })?;
    if !delete_shard(cluster, repo, peer, id, index) {
        repo.meta().queue_deletes(id, &[(index, bytes)])?;
    }
    Ok(())
}

/// Delete one shard; true when it is gone (or was never there).
fn delete_shard(cluster: &Cluster, repo: &Repo, peer: PeerId, id: &ChunkId, index: u8) -> bool {
    if peer == cluster.local {
        return repo.store().remove(id, index).is_ok();
    }
    match block(cluster, cluster.network.delete_shard(peer, *id, index)) {
        Ok(_) => true,
        Err(NetError::Refused {
            refusal: Refusal::NotFound,
            ..
        }) => true,
        Err(e) => {
            tracing::debug!(chunk = %id.short(), index, %peer, "delete failed: {e}");
            false
        }
    }
}

/// Deletes queued for collected chunks and moved shards, to peers that are alive now.
fn delete_doomed(cluster: &Cluster, repo: &Repo, members: &Members) -> Result<(), ChunkError> {
    let mut budget = cluster.settings().max_actions_per_round as usize;
    for (id, _) in repo.meta().doomed()? {
        if budget == 0 {
            break;
        }
        // Claimed fresh: the chunk may be being written again since the list was read.
        let Some(doomed) = cluster.claim_deletes(repo, &id)? else {
            continue;
        };
        let mut deleted = Vec::new();
        for (index, bytes) in doomed.holders {
            let Some(peer) = peer_from_bytes(&bytes) else {
                deleted.push((index, bytes));
                continue;
            };
            let reachable = peer == cluster.local || members.get(&peer).is_some_and(|m| m.alive);
            if budget > 0 && reachable && delete_shard(cluster, repo, peer, &id, index) {
                budget -= 1;
                cluster.set_status(|s| s.orphans_deleted += 1);
                deleted.push((index, bytes));
            }
        }
        cluster.release_deletes(repo, &id, &deleted)?;
    }
    Ok(())
}

/// Where scrubbing goes on from, and the shard bytes it may still check: a token bucket
/// filled at `scrub_bytes_per_sec`, so scrubbing reads at that rate on average however often
/// rounds run (it read `scrub_shards_per_round` shards every round before, 128 MiB/s with
/// 500 ms rounds: a load on every holder that nobody asked for).
struct ScrubState {
    cursor: Option<ChunkId>,
    credit: i64,
    refilled: Instant,
}

impl ScrubState {
    fn new() -> Self {
        Self {
            cursor: None,
            credit: 0,
            refilled: Instant::now(),
        }
    }

    /// Add what `rate` bytes a second earned since the last refill; at most a second's worth
    /// is banked, so an idle stretch does not turn into a burst.
    fn refill(&mut self, rate: u64, now: Instant) {
        let rate = i64::try_from(rate).unwrap_or(i64::MAX);
        let earned = rate as f64 * now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.credit = self.credit.saturating_add(earned as i64).min(rate);
    }
}

/// Re-verify shards, continuing where the last round stopped: up to `scrub_shards_per_round`
/// of them, as far as the byte credit goes (whole chunks, so it may go below zero and the next
/// rounds wait).
fn scrub(cluster: &Cluster, repo: &Repo, state: &mut ScrubState) -> Result<(), ChunkError> {
    let settings = cluster.settings();
    let mut budget = settings.scrub_shards_per_round as usize;
    if budget == 0 || settings.scrub_bytes_per_sec == 0 {
        return Ok(());
    }
    state.refill(settings.scrub_bytes_per_sec, Instant::now());
    if state.credit <= 0 {
        return Ok(());
    }
    let cursor = &mut state.cursor;
    // A page of records after the cursor, then from the start again (each round reads only
    // about as many records as it checks).
    let mut page = repo.meta().placed_after(cursor.as_ref(), budget)?;
    if page.len() < budget {
        let wrapped = repo.meta().placed_after(None, budget - page.len())?;
        page.extend(
            wrapped
                .into_iter()
                .filter(|(id, _)| Some(id) <= cursor.as_ref()),
        );
    }
    for (id, placed) in &page {
        if budget == 0 || state.credit <= 0 {
            break;
        }
        *cursor = Some(*id);
        let shard_len = match repo.meta().chunk(id)? {
            Some(record) => record.layout.shard_len(record.len as usize),
            None => 0,
        };
        let hashes = repo.meta().shard_hashes(id)?;
        // Fresh for every chunk: a scrub round can outlast a peer.
        let members = cluster.members();
        for (index, bytes) in &placed.holders {
            let Some(peer) = peer_from_bytes(bytes) else {
                continue;
            };
            if peer != cluster.local && !members.get(&peer).is_some_and(|m| m.alive) {
                continue;
            }
            if cluster.stopping() {
                return Ok(());
            }
            budget = budget.saturating_sub(1);
            state.credit = state
                .credit
                .saturating_sub(shard_len.max(MIN_SCRUB_COST) as i64);
            let expected = hashes.as_ref().and_then(|h| h.of(*index));
            let intact = if peer == cluster.local || expected.is_some() {
                // With the writer's hash at hand the shard itself is fetched and checked: a
                // holder's own word (`Check`) is worth nothing from one that forged it.
                let fetch = fetch_counted(cluster, repo, peer, id, *index, expected, false);
                match cluster.wait_for(async { tokio::time::timeout(CHECK_TIMEOUT, fetch).await }) {
                    Some(Ok(Ok(_))) => Some(true),
                    Some(Ok(Err(e))) if e.forged || e.missing || peer == cluster.local => {
                        Some(false)
                    }
                    _ => None,
                }
            } else {
                let check = cluster.network.check_shard(peer, *id, *index);
                match cluster.wait_for(async { tokio::time::timeout(CHECK_TIMEOUT, check).await }) {
                    Some(Ok(Ok((intact, _)))) => Some(intact),
                    Some(Ok(Err(NetError::Refused {
                        refusal: Refusal::NotFound,
                        ..
                    }))) => Some(false),
                    _ => None,
                }
            };
            cluster.set_status(|s| s.scrubbed += 1);
            if intact == Some(false) {
                tracing::warn!(chunk = %id.short(), index, %peer, "scrub found a corrupt or missing shard; it will be rebuilt");
                cluster.set_status(|s| s.corrupt_found += 1);
                let _ = cluster.update_placed(repo, id, |p| {
                    p.holders.retain(|(i, b)| !(i == index && b == bytes))
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_credit_follows_the_rate_and_banks_at_most_a_second() {
        let rate = 4 << 20;
        let mut state = ScrubState::new();
        let start = state.refilled;
        state.refill(rate, start + Duration::from_millis(500));
        assert_eq!(state.credit, 2 << 20);
        // A long idle stretch banks one second's worth, not a burst.
        state.refill(rate, start + Duration::from_secs(60));
        assert_eq!(state.credit, 4 << 20);
        // A chunk bigger than the credit leaves a debt that later rounds pay off.
        state.credit -= 6 << 20;
        state.refill(
            rate,
            start + Duration::from_secs(60) + Duration::from_millis(250),
        );
        assert_eq!(state.credit, -(1 << 20));
        state.refill(rate, start + Duration::from_secs(61));
        assert_eq!(state.credit, 2 << 20);
        // A clock that goes back earns nothing; an unlimited rate does not overflow.
        state.refill(rate, start);
        assert_eq!(state.credit, 2 << 20);
        state.refill(u64::MAX, start + Duration::from_secs(70));
        assert_eq!(state.credit, i64::MAX);
    }
}
