//! Moving one chunk's shards: placing a new chunk on its rendezvous targets in parallel, and
//! gathering any k shards back from their holders with a hedged extra request.
//!
//! A write sends shard `i` to `targets[i]`. A target that fails is replaced by the next-ranked
//! peer that holds nothing of the chunk yet; a shard no peer took is left to the repair thread.
//! The write is durable once `durable_peers` distinct peers (k+1 by default, or every live
//! peer when there are fewer) hold shards; otherwise it fails and nothing refers to the chunk.
//! Every peer is written down (a placing intent in RocksDB) before a shard goes to it, so a
//! crash in the middle leaves nothing that the next start cannot find and delete.
//!
//! A read asks the holders of the data shards first (no decode needed when they all answer),
//! best-scored first, local shards without a network hop; each failure starts the next
//! candidate at once, and when the slowest outstanding answer is late (three times the smoothed
//! fetch time) one extra shard is requested. When the recorded holders cannot supply enough,
//! the peers that announced the chunk in the DHT are asked.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dfs_placement::{hrw, ChunkId, Layout};
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;

use super::{peer_from_bytes, Cluster, ClusterError, Members};
use crate::chunk::{ChunkError, ShardSet};
use crate::meta::{Placed, ShardHashes};
use crate::net::{Holding, NetError};
use crate::repo::Repo;
use crate::shard::ShardHeader;

/// The image of shard `index` of a set, in its two parts: header, then body (never copied
/// into one buffer on the way to a peer's disk over a bulk link).
pub fn image(shards: &ShardSet, index: usize) -> [&[u8]; 2] {
    [&shards.headers[index], shards.encoded.shard(index)]
}

/// Store `image` (in parts that follow each other) as shard `index` of `id` on `peer` (the
/// local store when it is this peer).
pub async fn store_on(
    cluster: &Cluster,
    repo: &Repo,
    peer: PeerId,
    id: &ChunkId,
    index: u8,
    image: &[&[u8]],
) -> Result<(), ClusterError> {
    let len: u64 = image.iter().map(|part| part.len() as u64).sum();
    let result = if peer == cluster.local {
        repo.store()
            .write(id, index, image)
            .map_err(ClusterError::from)
    } else {
        cluster
            .network
            .store_shard(peer, *id, index, image)
            .await
            .map_err(ClusterError::from)
    };
    match &result {
        Ok(()) => {
            cluster.counters.shards_sent.fetch_add(1, Ordering::Relaxed);
            cluster
                .counters
                .bytes_sent
                .fetch_add(len, Ordering::Relaxed);
        }
        Err(_) => {
            cluster
                .counters
                .store_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

/// Why a shard could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// The holder sent a shard that is not what its writer made (checksum or recorded hash).
    pub forged: bool,
    /// The holder says it does not have the shard.
    pub missing: bool,
    pub reason: String,
}

impl From<NetError> for FetchFailure {
    fn from(e: NetError) -> Self {
        Self::failed(e)
    }
}

impl FetchFailure {
    fn failed(reason: impl ToString) -> Self {
        Self {
            forged: false,
            missing: false,
            reason: reason.to_string(),
        }
    }

    fn from_net(e: &crate::net::NetError) -> Self {
        Self {
            forged: matches!(e, crate::net::NetError::BadData { .. }),
            missing: matches!(
                e,
                crate::net::NetError::Refused {
                    refusal: crate::net::Refusal::NotFound,
                    ..
                }
            ),
            reason: e.to_string(),
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Fetch and verify shard `index` of `id` from `peer` (locally when it is this peer): its
/// checksum, and that it carries `expected` when the writer's hash of it is known. Counted
/// as a read's fetch (`shards_fetched`, `bytes_fetched`, the fetch time).
pub async fn fetch_from(
    cluster: &Cluster,
    repo: &Repo,
    peer: PeerId,
    id: &ChunkId,
    index: u8,
    expected: Option<&[u8; 32]>,
) -> Result<Vec<u8>, FetchFailure> {
    fetch_counted(cluster, repo, peer, id, index, expected, true).await
}

/// Shard `index` of `id` from `peer` (or this peer's own store) for a read, checked as `check`
/// says.
async fn fetch_for_read(
    cluster: &Cluster,
    repo: &Repo,
    peer: PeerId,
    id: &ChunkId,
    index: u8,
    check: ShardCheck<'_>,
) -> Result<Vec<u8>, FetchFailure> {
    if !matches!(check, ShardCheck::Header) || peer == cluster.local {
        return fetch_from(cluster, repo, peer, id, index, check.expected(index)).await;
    }
    let started = Instant::now();
    match cluster
        .network
        .fetch_shard_checked(peer, *id, index, false)
        .await
    {
        Ok(image) => {
            count_fetched(cluster, started, image.len());
            Ok(image)
        }
        Err(e) => {
            cluster
                .counters
                .fetch_failures
                .fetch_add(1, Ordering::Relaxed);
            Err(FetchFailure::from_net(&e))
        }
    }
}

/// Count one shard fetched for a read (`len` bytes, asked at `started`).
fn count_fetched(cluster: &Cluster, started: Instant, len: usize) {
    cluster.observe_fetch(started.elapsed());
    cluster
        .counters
        .shards_fetched
        .fetch_add(1, Ordering::Relaxed);
    cluster
        .counters
        .bytes_fetched
        .fetch_add(len as u64, Ordering::Relaxed);
}

/// [`fetch_from`], counted as a read's fetch or not (`counted` false: scrubbing).
pub async fn fetch_counted(
    cluster: &Cluster,
    repo: &Repo,
    peer: PeerId,
    id: &ChunkId,
    index: u8,
    expected: Option<&[u8; 32]>,
    counted: bool,
) -> Result<Vec<u8>, FetchFailure> {
    if peer == cluster.local {
        let local = match repo.store().read(id, index) {
            Ok(Some(image)) => Some(image),
            // Kept here for another peer (a chunk another member of a shared volume wrote).
            Ok(None) => cluster.network.held_shard(id, index),
            Err(e) => return Err(FetchFailure::failed(e)),
        };
        let Some(image) = local else {
            return Err(FetchFailure::failed("not in the local store"));
        };
        return match verify_image(&image, id, index, expected) {
            Ok(()) => Ok(image),
            Err(e) => Err(FetchFailure::failed(format!("the local copy {e}"))),
        };
    }
    let started = Instant::now();
    let result = cluster
        .network
        .fetch_verified(peer, *id, index, expected)
        .await;
    match result {
        Ok(image) if !counted => Ok(image),
        Ok(image) => {
            count_fetched(cluster, started, image.len());
            Ok(image)
        }
        Err(e) => {
            if counted {
                cluster
                    .counters
                    .fetch_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(FetchFailure::from_net(&e))
        }
    }
}

/// How much a shard fetched for a read is checked before it is decoded.
#[derive(Debug, Clone, Copy)]
pub enum ShardCheck<'a> {
    /// Its header only (it says it is this shard of this chunk). For a reader that checks the
    /// decoded chunk against its id: any k shards that give the chunk back are right, whatever
    /// each one is, so hashing each first is work spent on the rare read that goes wrong. That
    /// read is done again with [`ShardCheck::Checksum`], which finds the shard at fault.
    Header,
    /// Its checksum and, where the writer's hashes are known, the writer's hash of it: a holder
    /// that sends anything else is scored down and another holder is asked.
    Checksum(Option<&'a ShardHashes>),
}

impl<'a> ShardCheck<'a> {
    /// The writer's hash of shard `index`, if this check compares against it.
    fn expected(self, index: u8) -> Option<&'a [u8; 32]> {
        match self {
            ShardCheck::Header => None,
            ShardCheck::Checksum(hashes) => hashes.and_then(|h| h.of(index)),
        }
    }
}

/// What is wrong with a shard image ([`verify_image`]).
#[derive(Debug, thiserror::Error)]
pub enum BadShard {
    #[error("is corrupt: {0}")]
    Corrupt(#[from] crate::shard::ShardDefect),
    #[error("is not the shard its writer made (its hash differs from the recorded one)")]
    NotTheWritersShard,
}

/// Whether `image` is shard `index` of `id` with a valid checksum and, when `expected` is
/// given, the very image its writer made.
fn verify_image(
    image: &[u8],
    id: &ChunkId,
    index: u8,
    expected: Option<&[u8; 32]>,
) -> Result<(), BadShard> {
    ShardHeader::decode_expected(image, *id, index)?;
    match expected {
        Some(hash) if ShardHeader::carried_hash(image).as_ref() != Some(hash) => {
            Err(BadShard::NotTheWritersShard)
        }
        _ => Ok(()),
    }
}

/// Place a new chunk (see the module doc). `None` when this peer is the only member.
pub fn place(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    shards: &ShardSet,
) -> Result<Option<Placed>, ChunkError> {
    let members = cluster.members();
    if members.live_others() == 0 && cluster.settings.transient {
        // A peer run for one command keeps nothing: with no storage peer to take the shards,
        // the write fails rather than leave the only copy in a data directory about to go.
        return Err(ChunkError::NotDurable {
            id: *id,
            peers: 0,
            required: shards.encoded.layout().needed() + 1,
        });
    }
    if members.live_others() == 0 {
        // The caller writes every shard here: none of them may still be queued for deletion
        // from an earlier, failed placement of the same chunk.
        cluster.keep_local(repo, id)?;
        return Ok(None);
    }
    let count = shards.encoded.shard_count();
    let candidates = members.candidates(true);
    let ranked = hrw::rank(id, &candidates);
    let targets = hrw::place(id, count, &candidates).targets;
    let intent = Placed {
        holders: targets
            .iter()
            .enumerate()
            .map(|(index, &to)| (index as u8, members.list[to].id.to_bytes()))
            .collect(),
    };
    cluster.begin_placing(repo, id, &intent)?;
    let work = place_all(cluster, repo, id, shards, &members, &ranked, &targets);
    let Some(holders) = cluster.wait_for(work) else {
        repo.meta().abandon_placing(id)?;
        return Err(ChunkError::PeerStopping { id: *id });
    };
    let distinct: HashSet<&PeerId> = holders.iter().map(|(_, p)| p).collect();
    let usable = ranked.len();
    let required = match cluster.settings.durable_peers {
        0 => shards.encoded.layout().needed() + 1,
        n => n as usize,
    }
    .min(usable);
    let placed = Placed {
        holders: holders.iter().map(|(i, p)| (*i, p.to_bytes())).collect(),
    };
    if distinct.len() < required || holders.len() < shards.encoded.layout().needed() {
        // Nothing will refer to this chunk: whatever landed is deleted by the repair thread.
        repo.meta().abandon_placing(id)?;
        return Err(ChunkError::NotDurable {
            id: *id,
            peers: distinct.len(),
            required,
        });
    }
    cluster.changed();
    Ok(Some(placed))
}

async fn place_all(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    shards: &ShardSet,
    members: &Members,
    ranked: &[usize],
    targets: &[usize],
) -> Vec<(u8, PeerId)> {
    let used: HashSet<usize> = targets.iter().copied().collect();
    let mut spare = ranked.iter().copied().filter(|i| !used.contains(i));
    let mut inflight = FuturesUnordered::new();
    let send = |index: usize, to: usize| {
        let peer = members.list[to].id;
        async move {
            let r = store_on(cluster, repo, peer, id, index as u8, &image(shards, index)).await;
            (index, to, r)
        }
    };
    for (index, &to) in targets.iter().enumerate() {
        inflight.push(send(index, to));
    }
    let mut holders = Vec::with_capacity(targets.len());
    while let Some((index, to, result)) = inflight.next().await {
        match result {
            Ok(()) => holders.push((index as u8, members.list[to].id)),
            Err(e) => {
                tracing::warn!(chunk = %id.short(), index, peer = %members.list[to].id, "storing a shard failed: {e}");
                if let Some(next) = spare.next() {
                    let peer = members.list[next].id.to_bytes();
                    // Recorded before the store goes out, like the first targets.
                    match repo.meta().add_placing(id, index as u8, peer) {
                        Ok(()) => inflight.push(send(index, next)),
                        Err(e) => {
                            tracing::warn!(chunk = %id.short(), "cannot record a placement: {e}")
                        }
                    }
                }
            }
        }
    }
    holders.sort();
    holders
}

/// Put the right images of shards found forged (see [`super::Remote::replace_forged`]) in
/// their place. A chunk this peer placed has the forger struck from its record (and asked to
/// delete its copy, which an honest peer with a rotten disk does), so the repair thread
/// rebuilds the shard on a target that is not the forger. A chunk this peer only reads (a
/// link, another member's chunk) gets each shard stored on the best-ranked peer other than
/// the forgers, and the located holders it remembers are corrected.
pub fn replace_forged(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    shards: &ShardSet,
    bad: &[(u8, PeerId)],
) -> Result<(), ChunkError> {
    let struck: Vec<(u8, Vec<u8>)> = bad.iter().map(|(i, p)| (*i, p.to_bytes())).collect();
    if repo.meta().placed(id)?.is_some() {
        cluster.update_placed(repo, id, |p| p.holders.retain(|h| !struck.contains(h)))?;
        repo.meta().queue_deletes(id, &struck)?;
        return Ok(());
    }
    let members = cluster.members();
    let candidates = members.candidates(true);
    let ranked = hrw::rank(id, &candidates);
    let forgers: HashSet<PeerId> = bad.iter().map(|(_, p)| *p).collect();
    let mut added = Vec::new();
    for &(index, _) in bad {
        let targets = ranked
            .iter()
            .map(|&i| members.list[i].id)
            .filter(|p| !forgers.contains(p) && *p != cluster.local)
            .take(3);
        for peer in targets {
            let parts = image(shards, usize::from(index));
            let work = store_on(cluster, repo, peer, id, index, &parts);
            match cluster
                .wait_for(work)
                .unwrap_or(Err(NetError::Stopped.into()))
            {
                Ok(()) => {
                    tracing::info!(chunk = %id.short(), index, to = %peer, "stored a good copy of a forged shard");
                    added.push((index, peer.to_bytes()));
                    break;
                }
                Err(e) => {
                    tracing::debug!(chunk = %id.short(), index, %peer, "cannot store a replacement shard: {e}")
                }
            }
        }
    }
    cluster.correct_located(id, &struck, &added);
    Ok(())
}

/// One way to get one shard: ask `peer` for shard `index`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Source {
    index: u8,
    peer: PeerId,
}

/// Sort key of a source: (dead, busy, parity, tier, -score, index); smaller is asked first.
type SourceRank = (bool, bool, bool, u8, i64, u8);

/// Shard requests in flight at a holder above which it counts as busy.
const BUSY: u32 = 8;

/// The order to try holders in: busy holders after idle ones (so a hot chunk is served by its
/// parity holders too, at the price of a decode), data shards before parity, local copies
/// first, then live peers by score, suspect, unknown and dead ones last.
fn sources(cluster: &Cluster, layout: Layout, placed: &Placed, members: &Members) -> Vec<Source> {
    let k = layout.needed();
    let mut out: Vec<(SourceRank, Source)> = placed
        .holders
        .iter()
        .filter_map(|(index, bytes)| {
            let peer = peer_from_bytes(bytes)?;
            let parity = usize::from(*index) >= k;
            let (tier, score, load) = match members.get(&peer) {
                Some(m) if m.is_self => (0, 1.0, 0),
                Some(m) if m.alive => (1, m.score, m.load),
                Some(m) => (2, m.score, m.load),
                None if peer == cluster.local => (0, 1.0, 0),
                None if members.is_dead(&peer) => (4, 0.0, 0),
                None => (3, 0.0, 0),
            };
            let key = (
                tier == 4,
                load >= BUSY,
                parity,
                tier,
                -(score * 1e6) as i64,
                *index,
            );
            Some((
                key,
                Source {
                    index: *index,
                    peer,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(key, _)| *key);
    out.into_iter().map(|(_, s)| s).collect()
}

/// Where the shards of a chunk this peer has no record of are (a link another peer stored,
/// or a chunk another member of a shared volume wrote), and its layout.
///
/// Every storage peer ranks a chunk's likely holders alike: rendezvous hashing over the
/// storage members by capacity weight ([`Members::rank_candidates`]), which is where writers
/// place shards and where stewards and repairs keep them. So the best-ranked peers are asked,
/// all at once, which shards they hold ([`crate::net::Network::holding`]: a small request
/// answered from the holder's table, with the header of one shard, which gives the layout and
/// length). When they do not have enough, the next-ranked peers are asked, then the peers
/// that announced the chunk in the DHT. One round trip finds the holders in the usual case,
/// with no guessing of which index lives where and no shard fetched twice.
pub async fn locate(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
) -> Option<(crate::meta::ChunkRecord, Placed)> {
    let members = cluster.members();
    let candidates = members.rank_candidates();
    let ranked: Vec<PeerId> = hrw::rank(id, &candidates)
        .into_iter()
        .filter_map(|i| Some(members.list.get(i)?.id))
        .collect();
    let batch = repo.config().storage.erasure_layout().shard_count() + LOCATE_SPARE;
    let mut answers: Vec<(PeerId, Holding)> = Vec::new();
    let mut asked: HashSet<PeerId> = HashSet::new();
    let mut providers_asked = false;
    let mut at = 0;
    loop {
        let round: Vec<PeerId> = if at < ranked.len() {
            let end = (at + batch).min(ranked.len());
            let round = ranked[at..end].to_vec();
            at = end;
            round
        } else if !providers_asked {
            providers_asked = true;
            cluster
                .network
                .find_providers(*id)
                .await
                .unwrap_or_default()
        } else {
            break;
        };
        let round: Vec<PeerId> = round.into_iter().filter(|p| asked.insert(*p)).collect();
        let replies = futures::future::join_all(
            round
                .iter()
                .map(|&peer| async move { (peer, cluster.network.holding(peer, *id).await) }),
        )
        .await;
        for (peer, reply) in replies {
            match reply {
                Ok(h) if !h.indices.is_empty() => answers.push((peer, h)),
                Ok(_) => {}
                Err(e) => tracing::debug!(chunk = %id.short(), %peer, "holding query failed: {e}"),
            }
        }
        if let Some(found) = located(&answers) {
            if enough(&found.0, &found.1) {
                return Some(found);
            }
        }
    }
    located(&answers)
}

/// Peers asked at once beyond a chunk's shard count: room for a peer or two that joined since
/// the write (ranked above a holder) without a second round trip.
const LOCATE_SPARE: usize = 2;

/// Whether `placed` names at least k distinct shards of a chunk of `record`'s layout.
pub fn enough(record: &crate::meta::ChunkRecord, placed: &Placed) -> bool {
    let mut seen: Vec<u8> = placed.holders.iter().map(|(i, _)| *i).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() >= record.layout.needed()
}

/// The layout and length most holders agree on (the best-ranked holder's on a tie), and every
/// (index, holder) consistent with it, in the order the holders were ranked.
fn located(answers: &[(PeerId, Holding)]) -> Option<(crate::meta::ChunkRecord, Placed)> {
    let mut votes: Vec<((Layout, u32), usize)> = Vec::new();
    for (_, h) in answers {
        if let Some(header) = &h.header {
            let claim = (header.layout, header.chunk_len);
            match votes.iter_mut().find(|(c, _)| *c == claim) {
                Some((_, n)) => *n += 1,
                None => votes.push((claim, 1)),
            }
        }
    }
    // max_by_key keeps the last of equals: reverse so the first-ranked claim wins a tie.
    let ((layout, len), _) = votes.iter().rev().max_by_key(|(_, n)| *n).copied()?;
    let count = layout.shard_count();
    let holders = answers
        .iter()
        .flat_map(|(peer, h)| {
            h.indices
                .iter()
                .filter(move |&&i| usize::from(i) < count)
                .map(move |&i| (i, peer.to_bytes()))
        })
        .collect();
    Some((crate::meta::ChunkRecord { layout, len }, Placed { holders }))
}

/// Shard images gathered from their holders, by index, with the peer each came from.
#[derive(Debug, Default)]
pub struct Gathered {
    pub images: Vec<Option<Vec<u8>>>,
    pub from: Vec<Option<PeerId>>,
    /// Shards (index, holder) that holders sent but were not what their writer made.
    pub forged: Vec<(u8, PeerId)>,
}

impl Gathered {
    /// How many distinct shards were gathered.
    pub fn count(&self) -> usize {
        self.images.iter().filter(|i| i.is_some()).count()
    }

    /// The shards' bodies (past their headers), by index.
    pub fn bodies(&self) -> Vec<Option<&[u8]>> {
        self.images
            .iter()
            .map(|i| i.as_deref().and_then(|b| b.get(crate::shard::HEADER_LEN..)))
            .collect()
    }
}

/// Gather at least `want` shard images (see the module doc), each checked as `check` says: a
/// holder that sends a shard that fails is scored down and another shard is asked for instead.
pub async fn gather(
    cluster: &Cluster,
    repo: &Repo,
    id: &ChunkId,
    layout: Layout,
    placed: &Placed,
    want: usize,
    check: ShardCheck<'_>,
) -> Gathered {
    let count = layout.shard_count();
    let want = want.min(count);
    let members = cluster.members();
    let mut queue = sources(cluster, layout, placed, &members).into_iter();
    let mut images: Vec<Option<Vec<u8>>> = vec![None; count];
    let mut from: Vec<Option<PeerId>> = vec![None; count];
    let mut forged = Vec::new();
    let mut got = 0;
    let mut asked: HashSet<(u8, PeerId)> = HashSet::new();
    // Indices being fetched now.
    let mut pending: HashSet<u8> = HashSet::new();
    let mut inflight = FuturesUnordered::new();
    let fetch = |s: Source| async move {
        let r = fetch_for_read(cluster, repo, s.peer, id, s.index, check).await;
        (s, r)
    };
    // The next source for an index we have neither got nor are fetching.
    let mut next_source =
        |images: &[Option<Vec<u8>>], pending: &HashSet<u8>, asked: &mut HashSet<(u8, PeerId)>| {
            queue.find(|s| {
                usize::from(s.index) < count
                    && images[usize::from(s.index)].is_none()
                    && !pending.contains(&s.index)
                    && asked.insert((s.index, s.peer))
            })
        };
    for _ in 0..want {
        if let Some(s) = next_source(&images, &pending, &mut asked) {
            pending.insert(s.index);
            inflight.push(fetch(s));
        }
    }
    let mut hedged = false;
    let mut providers_asked = false;
    loop {
        if got >= want {
            break;
        }
        if inflight.is_empty() {
            // The recorded holders are exhausted: ask the DHT who has the chunk.
            if providers_asked {
                break;
            }
            providers_asked = true;
            let found = cluster
                .network
                .find_providers(*id)
                .await
                .unwrap_or_default();
            for peer in found {
                for index in 0..count as u8 {
                    if images[usize::from(index)].is_none() && asked.insert((index, peer)) {
                        let s = Source { index, peer };
                        inflight.push(fetch(s));
                    }
                }
            }
            if inflight.is_empty() {
                break;
            }
            continue;
        }
        let next = if hedged {
            inflight.next().await
        } else {
            match tokio::time::timeout(cluster.hedge_delay(), inflight.next()).await {
                Ok(next) => next,
                Err(_) => {
                    hedged = true;
                    if let Some(s) = next_source(&images, &pending, &mut asked) {
                        cluster.counters.hedged.fetch_add(1, Ordering::Relaxed);
                        pending.insert(s.index);
                        inflight.push(fetch(s));
                    }
                    continue;
                }
            }
        };
        let Some((source, result)) = next else {
            continue;
        };
        pending.remove(&source.index);
        let slot = usize::from(source.index);
        match result {
            Ok(image) if images[slot].is_none() => {
                if providers_asked {
                    cluster
                        .counters
                        .found_by_providers
                        .fetch_add(1, Ordering::Relaxed);
                }
                images[slot] = Some(image);
                from[slot] = Some(source.peer);
                got += 1;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(chunk = %id.short(), index = source.index, peer = %source.peer, "shard fetch failed: {e}");
                if e.forged {
                    forged.push((source.index, source.peer));
                }
                if got + pending.len() < want {
                    if let Some(s) = next_source(&images, &pending, &mut asked) {
                        pending.insert(s.index);
                        inflight.push(fetch(s));
                    }
                }
            }
        }
    }
    Gathered {
        images,
        from,
        forged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardHeader;

    fn holding(indices: &[u8], layout: Option<(Layout, u32)>) -> Holding {
        Holding {
            indices: indices.to_vec(),
            header: layout.map(|(layout, chunk_len)| ShardHeader {
                chunk: ChunkId([1; 32]),
                layout,
                index: indices[0],
                chunk_len,
            }),
        }
    }

    #[test]
    fn the_layout_most_holders_claim_wins_and_indices_beyond_it_are_dropped() {
        let ec = Layout::Erasure { data: 4, parity: 2 };
        let liar = Layout::Erasure { data: 2, parity: 1 };
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let answers = vec![
            (a, holding(&[0, 7], Some((liar, 100)))),
            (b, holding(&[1, 2], Some((ec, 4 << 20)))),
            (c, holding(&[5], Some((ec, 4 << 20)))),
        ];
        let (record, placed) = located(&answers).expect("located");
        assert_eq!((record.layout, record.len), (ec, 4 << 20));
        // Holders in rank order; index 7 is beyond the layout.
        let got: Vec<(u8, Vec<u8>)> = placed.holders;
        assert_eq!(
            got,
            vec![
                (0, a.to_bytes()),
                (1, b.to_bytes()),
                (2, b.to_bytes()),
                (5, c.to_bytes())
            ]
        );
        // A tie goes to the best-ranked holder's claim.
        let tie = vec![
            (b, holding(&[1], Some((ec, 10)))),
            (a, holding(&[0], Some((liar, 10)))),
        ];
        assert_eq!(located(&tie).expect("located").0.layout, ec);
        // Without any header nothing is located.
        assert!(located(&[(a, holding(&[0], None))]).is_none());
    }
}
