//! How often bulk links tell the swarm's event loop that a peer answered or asked.
//!
//! Each report wakes the event loop, and a wake polls every behaviour and connection of the
//! swarm: on a read or write of a large file, one report per shard request cost the peers
//! about as much CPU as serving the smallest requests. What the loop does with a success
//! (the peer is alive; a failure forgiven; the peer is busy, so provider announcements wait)
//! needs no such resolution, so successes are reported at most once per peer every
//! [`REPORT_EVERY`], carrying how many there were. Failures, stored chunks and bad data are
//! reported every time by the callers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::lock;

/// At most one report of successes per peer this often (well inside the 250 ms that make a
/// peer busy, and the seconds of a failure detector's grace).
pub(super) const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Successes per peer since the last report.
#[derive(Default)]
pub(super) struct Reports {
    peers: Mutex<HashMap<PeerId, Pending>>,
}

struct Pending {
    /// When successes were last reported; `None` after a failure, so that the next success
    /// is reported at once (it makes a suspect peer alive again).
    last: Option<Instant>,
    unreported: u32,
}

impl Reports {
    /// Count one success with `peer` at `now`; `Some(n)` when it is time to report the `n`
    /// successes since the last report (this one included).
    pub(super) fn success(&self, peer: PeerId, now: Instant) -> Option<u32> {
        let mut peers = lock(&self.peers);
        let p = peers.entry(peer).or_insert(Pending {
            last: None,
            unreported: 0,
        });
        p.unreported = p.unreported.saturating_add(1);
        if p.last
            .is_some_and(|last| now.saturating_duration_since(last) < REPORT_EVERY)
        {
            return None;
        }
        p.last = Some(now);
        Some(std::mem::take(&mut p.unreported))
    }

    /// A request with `peer` failed (and was reported): its next success is reported at once.
    pub(super) fn failure(&self, peer: PeerId) {
        if let Some(p) = lock(&self.peers).get_mut(&peer) {
            p.last = None;
        }
    }

    /// Forget `peer` (it left).
    pub(super) fn forget(&self, peer: &PeerId) {
        lock(&self.peers).remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes_are_reported_once_per_interval_with_their_count() {
        let r = Reports::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert_eq!(r.success(a, t0), Some(1), "the first is reported at once");
        assert_eq!(r.success(b, t0), Some(1), "peers are counted apart");
        for i in 1..10 {
            assert_eq!(r.success(a, t0 + REPORT_EVERY * i / 10), None);
        }
        assert_eq!(r.success(a, t0 + REPORT_EVERY), Some(10));
        assert_eq!(r.success(a, t0 + REPORT_EVERY), None);
        // A clock that goes back reports nothing early.
        assert_eq!(r.success(a, t0), None);
        assert_eq!(r.success(a, t0 + REPORT_EVERY * 3), Some(3));
        r.forget(&a);
        assert_eq!(r.success(a, t0 + REPORT_EVERY * 3), Some(1));
        // After a failure the next success goes out at once, with those still pending.
        assert_eq!(r.success(a, t0 + REPORT_EVERY * 3), None);
        r.failure(a);
        assert_eq!(r.success(a, t0 + REPORT_EVERY * 3), Some(2));
        assert_eq!(r.success(a, t0 + REPORT_EVERY * 3), None);
    }
}
