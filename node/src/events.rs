//! The event log: what happened on this peer that someone may want to know later (peers
//! joining and lost, repairs, errors, user actions), kept in RocksDB and bounded.
//!
//! Table `events`: (milliseconds since the epoch, a per-process counter) big-endian ->
//! [`Event`] (version byte + postcard), so a scan is in time order. At most [`MAX_EVENTS`] are
//! kept: every [`TRIM_EVERY`] records, the oldest beyond the bound are deleted (rotation).
//! Recording never fails the caller: an event that cannot be written is logged and dropped.
//! Live followers get new events through a broadcast stream.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::meta::{MetaDb, MetaError, CF_EVENTS};

const EVENT_V1: u8 = 1;
/// Events kept at most; older ones are deleted.
pub const MAX_EVENTS: u64 = 100_000;
/// Records between two trims of the table.
const TRIM_EVERY: u64 = 1_000;
const KEY_LEN: usize = 16;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A peer became reachable (again).
    PeerJoined,
    /// A peer stopped answering: suspect, then dead after the grace period.
    PeerSuspect,
    PeerLost,
    /// A repair round started rebuilding or moving shards, and finished.
    RepairStarted,
    RepairFinished,
    /// Something failed that an operator should see.
    Error,
    /// Something a user did: volume created, joined, invitation made, mount, gc, ...
    UserAction,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::PeerJoined,
        EventKind::PeerSuspect,
        EventKind::PeerLost,
        EventKind::RepairStarted,
        EventKind::RepairFinished,
        EventKind::Error,
        EventKind::UserAction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::PeerJoined => "peer_joined",
            EventKind::PeerSuspect => "peer_suspect",
            EventKind::PeerLost => "peer_lost",
            EventKind::RepairStarted => "repair_started",
            EventKind::RepairFinished => "repair_finished",
            EventKind::Error => "error",
            EventKind::UserAction => "user_action",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown event kind {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    /// What it is about: a peer id, a volume name, a path...
    pub subject: String,
    pub detail: String,
}

/// The event log of one data directory.
#[derive(Debug)]
pub struct EventLog {
    counter: AtomicU64,
    recorded: AtomicU64,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

fn key(at_ms: u64, n: u64) -> [u8; KEY_LEN] {
    let mut k = [0; KEY_LEN];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventLog {
    pub fn new() -> Self {
        EventLog {
            counter: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            live: broadcast::channel(256).0,
        }
    }

    /// Record an event now; never fails the caller.
    pub fn record(&self, db: &MetaDb, kind: EventKind, subject: &str, detail: &str) {
        let event = Event {
            at_ms: now_ms(),
            kind,
            subject: subject.to_string(),
            detail: detail.to_string(),
        };
        if let Err(e) = self.write(db, &event) {
            tracing::warn!(error = %e, %kind, "event not recorded");
            return;
        }
        // No follower is fine.
        let _ = self.live.send(event);
    }

    fn write(&self, db: &MetaDb, event: &Event) -> Result<(), MetaError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let value = postcard::to_extend(event, vec![EVENT_V1]).unwrap_or_default();
        db.cf_write(
            [(CF_EVENTS, key(event.at_ms, n).to_vec(), Some(value))],
            false,
        )?;
        if self.recorded.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY == TRIM_EVERY - 1 {
            self.trim(db, MAX_EVENTS)?;
        }
        Ok(())
    }

    /// Delete the oldest events beyond `keep`.
    pub fn trim(&self, db: &MetaDb, keep: u64) -> Result<u64, MetaError> {
        let total = db.cf_count(CF_EVENTS)?;
        let excess = total.saturating_sub(keep);
        if excess == 0 {
            return Ok(0);
        }
        let doomed = db.cf_scan(CF_EVENTS, &[], None, excess as usize)?;
        db.cf_write(doomed.into_iter().map(|(k, _)| (CF_EVENTS, k, None)), false)?;
        Ok(excess)
    }

    /// Events at or after `since_ms`, of the given kinds (all when empty), oldest first, at
    /// most `limit`. Undecodable rows are skipped with a warning.
    pub fn query(
        &self,
        db: &MetaDb,
        since_ms: u64,
        kinds: &[EventKind],
        limit: usize,
    ) -> Result<Vec<Event>, MetaError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let start = key(since_ms, 0);
        loop {
            // The first page starts at `since`: scan from just before it.
            let from = after.clone().unwrap_or_else(|| start.to_vec());
            let page = db.cf_scan_from(CF_EVENTS, &from, 1024)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in &page {
                if after.as_deref() == Some(k.as_slice()) {
                    continue;
                }
                match v.split_first() {
                    Some((&EVENT_V1, rest)) => match postcard::from_bytes::<Event>(rest) {
                        Ok(e) if kinds.is_empty() || kinds.contains(&e.kind) => {
                            out.push(e);
                            if out.len() >= limit {
                                return Ok(out);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "undecodable event skipped"),
                    },
                    _ => tracing::warn!("event of an unknown format skipped"),
                }
            }
            let last = page.last().map(|(k, _)| k.clone());
            if last == after {
                break;
            }
            after = last;
            if page.len() < 1024 {
                break;
            }
        }
        Ok(out)
    }

    /// New events from now on.
    #[cfg(test)]
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_in_order_filtered_bounded_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new();
        {
            let db = MetaDb::open(dir.path()).unwrap();
            let mut live = log.follow();
            log.record(&db, EventKind::PeerJoined, "peer-a", "");
            log.record(&db, EventKind::Error, "repair", "disk full");
            log.record(&db, EventKind::PeerLost, "peer-a", "no answer for 10 s");
            assert_eq!(live.try_recv().unwrap().subject, "peer-a");
            let all = log.query(&db, 0, &[], 100).unwrap();
            let kinds: Vec<EventKind> = all.iter().map(|e| e.kind).collect();
            assert_eq!(
                kinds,
                [EventKind::PeerJoined, EventKind::Error, EventKind::PeerLost]
            );
            let peers = log
                .query(&db, 0, &[EventKind::PeerJoined, EventKind::PeerLost], 100)
                .unwrap();
            assert_eq!(peers.len(), 2);
            assert_eq!(log.query(&db, 0, &[], 1).unwrap().len(), 1);
            let future = now_ms() + 60_000;
            assert!(log.query(&db, future, &[], 100).unwrap().is_empty());
            for i in 0..50 {
                log.record(&db, EventKind::UserAction, &format!("v{i}"), "");
            }
            assert_eq!(log.trim(&db, 10).unwrap(), 43);
            let kept = log.query(&db, 0, &[], 100).unwrap();
            assert_eq!(kept.len(), 10);
            assert_eq!(kept.last().unwrap().subject, "v49", "the newest are kept");
        }
        let db = MetaDb::open(dir.path()).unwrap();
        assert_eq!(EventLog::new().query(&db, 0, &[], 100).unwrap().len(), 10);
    }

    #[test]
    fn kinds_parse_by_name() {
        for k in EventKind::ALL {
            assert_eq!(k.name().parse::<EventKind>().unwrap(), k);
        }
        assert!("nope"
            .parse::<EventKind>()
            .unwrap_err()
            .contains("peer_lost"));
    }
}
