//! Provider records for the chunks this peer holds, announced in the background.
//!
//! A Kademlia provider announcement is a whole query: a lookup of the closest peers, then one
//! ADD_PROVIDER request to each of them, a dozen substreams on a small network. Made at once for
//! every stored shard, these cost a third of a bulk write's CPU, although nothing waits for them:
//! a chunk's writer records where its shards went, and provider records are only the fallback
//! for a holder that lost a shard or a record that went stale. So a stored chunk is queued here
//! (once, however many of its shards arrive) and announced at a bounded rate, faster while the
//! peer is idle. A sweep over the held table queues every held chunk again after a start and
//! every [`SWEEP_EVERY`], which republishes records before they expire and recovers anything the
//! bounded queue had to drop.
//!
//! Serving shards comes first: while the peer serves requests, announcements pause for up to
//! [`BURST_PAUSE`] (a file read or written through a mount is such a burst, and an
//! announcement's dozen substreams cost about as much CPU as moving a megabyte), and only a
//! peer busy for longer announces at the busy rate, so that a peer under constant load still
//! keeps its records fresh.
//!
//! This module is the policy only (no swarm, no clock of its own): the swarm loop asks it what is
//! due at each tick and tells it when an announcement's query finished.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use dfs_placement::ChunkId;

/// A full sweep of the held table is queued this often (provider records live 48 hours).
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Chunks waiting to be announced; beyond this, new ones wait for the next sweep.
pub(super) const MAX_QUEUED: usize = 1 << 20;
/// Announcement queries running at once.
pub(super) const MAX_IN_FLIGHT: usize = 8;

/// A peer that has been serving shard requests for less than this announces nothing; after it,
/// announcements go at the busy rate.
pub(super) const BURST_PAUSE: Duration = Duration::from_secs(30);

/// How fast announcements go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceRate {
    /// Per second while the peer has been serving shard requests for over [`BURST_PAUSE`].
    pub busy: u32,
    /// Per second while it is not.
    pub idle: u32,
}

impl Default for AnnounceRate {
    fn default() -> Self {
        Self {
            busy: crate::config::PROVIDERS_PER_SEC_BUSY,
            idle: crate::config::PROVIDERS_PER_SEC_IDLE,
        }
    }
}

/// The queue of chunks to announce, with a token bucket.
pub(super) struct Announcer {
    rate: AnnounceRate,
    queue: VecDeque<ChunkId>,
    queued: HashSet<ChunkId>,
    in_flight: usize,
    tokens: f64,
    last: Option<Instant>,
    /// When the current stretch of serving began (`None` while idle).
    busy_since: Option<Instant>,
    /// Chunks not queued because the queue was full (the next sweep brings them back).
    pub dropped: u64,
    /// Announcements started.
    pub started: u64,
}

impl Announcer {
    pub(super) fn new(rate: AnnounceRate) -> Self {
        Self {
            rate,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: 0,
            tokens: 0.0,
            last: None,
            busy_since: None,
            dropped: 0,
            started: 0,
        }
    }

    /// Queue `chunk` unless it is already waiting. False when the queue is full.
    pub(super) fn push(&mut self, chunk: ChunkId) -> bool {
        if self.queued.contains(&chunk) {
            return true;
        }
        if self.queue.len() >= MAX_QUEUED {
            self.dropped += 1;
            return false;
        }
        self.queued.insert(chunk);
        self.queue.push_back(chunk);
        true
    }

    /// Room left before the queue is full (a sweep fills it only this far).
    pub(super) fn room(&self) -> usize {
        MAX_QUEUED - self.queue.len()
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The chunks to announce now. Tokens accrue since the last call at the idle rate, nothing
    /// in the first [`BURST_PAUSE`] of serving and the busy rate after it, up to one second's
    /// worth; each announcement also needs a free query slot.
    pub(super) fn due(&mut self, now: Instant, busy: bool) -> Vec<ChunkId> {
        let (rate, from) = self.accrual(now, busy);
        self.last = Some(now);
        if from > now {
            // Paused for a burst of serving: nothing goes out, nothing is banked.
            self.tokens = 0.0;
            return Vec::new();
        }
        let elapsed = now.saturating_duration_since(from);
        let rate = f64::from(rate);
        self.tokens = (self.tokens + rate * elapsed.as_secs_f64()).min(rate.max(1.0));
        let mut due = Vec::new();
        while self.tokens >= 1.0 && self.in_flight < MAX_IN_FLIGHT {
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&chunk);
            self.tokens -= 1.0;
            self.in_flight += 1;
            self.started += 1;
            due.push(chunk);
        }
        if self.queue.is_empty() {
            // Unused tokens do not pile up while there is nothing to announce.
            self.tokens = self.tokens.min(1.0);
        }
        due
    }

    /// The rate tokens accrue at now, and since when: the last call, or the end of the pause
    /// if the peer is serving a burst.
    fn accrual(&mut self, now: Instant, busy: bool) -> (u32, Instant) {
        let last = self.last.unwrap_or(now);
        if !busy {
            self.busy_since = None;
            return (self.rate.idle, last);
        }
        let since = *self.busy_since.get_or_insert(now);
        (self.rate.busy, last.max(since + BURST_PAUSE))
    }

    /// An announcement started by [`Announcer::due`] finished (or could not start).
    pub(super) fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn a_chunk_is_queued_once_however_many_of_its_shards_arrive() {
        let mut a = Announcer::new(AnnounceRate::default());
        for _ in 0..6 {
            assert!(a.push(id(1)));
        }
        a.push(id(2));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn announcements_follow_the_rate_and_the_query_slots() {
        let rate = AnnounceRate { busy: 2, idle: 100 };
        let mut a = Announcer::new(rate);
        for n in 0..50 {
            a.push(id(n));
        }
        let t0 = Instant::now();
        assert!(a.due(t0, false).is_empty(), "no tokens before time passes");
        // Serving: nothing during the pause, then two a second.
        let burst = t0 + Duration::from_millis(10);
        assert!(a.due(burst, true).is_empty());
        assert!(a.due(burst + BURST_PAUSE / 2, true).is_empty());
        let sustained = burst + BURST_PAUSE;
        assert!(a.due(sustained, true).is_empty(), "the pause banks nothing");
        assert_eq!(a.due(sustained + Duration::from_secs(1), true).len(), 2);
        // Idle for a second: 100 tokens, but only the free query slots are used.
        let t0 = sustained;
        let due = a.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), MAX_IN_FLIGHT - 2);
        for _ in 0..MAX_IN_FLIGHT {
            a.finished();
        }
        let due = a.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), MAX_IN_FLIGHT);
        assert_eq!(a.started as usize, 2 * MAX_IN_FLIGHT);
        assert_eq!(a.len(), 50 - 2 * MAX_IN_FLIGHT);
    }

    #[test]
    fn a_pause_in_serving_ends_the_burst_and_the_next_one_pauses_again() {
        let mut a = Announcer::new(AnnounceRate { busy: 10, idle: 10 });
        for n in 0..100 {
            a.push(id(n));
        }
        let t0 = Instant::now();
        a.due(t0, true);
        let late = t0 + BURST_PAUSE + Duration::from_secs(1);
        assert!(a.due(t0 + BURST_PAUSE, true).is_empty());
        assert_eq!(a.due(late, true).len(), MAX_IN_FLIGHT);
        for _ in 0..MAX_IN_FLIGHT {
            a.finished();
        }
        // Idle for a moment, then serving again: a new burst, a new pause.
        assert!(!a.due(late + Duration::from_millis(500), false).is_empty());
        for _ in 0..MAX_IN_FLIGHT {
            a.finished();
        }
        let again = late + Duration::from_secs(1);
        assert!(a.due(again, true).is_empty());
        assert!(a.due(again + Duration::from_secs(5), true).is_empty());
    }

    #[test]
    fn idle_time_with_an_empty_queue_does_not_bank_a_burst() {
        let mut a = Announcer::new(AnnounceRate { busy: 1, idle: 1 });
        let t0 = Instant::now();
        a.due(t0, false);
        a.due(t0 + Duration::from_secs(3600), false);
        for n in 0..5 {
            a.push(id(n));
        }
        assert_eq!(a.due(t0 + Duration::from_secs(3600), false).len(), 1);
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let mut a = Announcer::new(AnnounceRate::default());
        for n in 0..MAX_QUEUED as u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&n.to_le_bytes());
            a.push(ChunkId(b));
        }
        assert_eq!(a.room(), 0);
        assert!(!a.push(id(255)));
        assert_eq!(a.dropped, 1);
    }
}
