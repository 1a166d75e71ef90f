//! The peer table: every peer this one knows, what it announced, and the failure detector's
//! verdict (alive, suspect, dead).
//!
//! Rules: any sign of life (a message, a ping answer, a new connection) makes a peer alive. A
//! peer is suspect at once when its last connection closes or a ping fails, or when it misses
//! three announcements; it is dead once it has been silent for the grace period. Lost peers are
//! redialled with exponential backoff, capped so that a peer that comes back is noticed soon.
//! Time is passed in, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dfs_placement::score::{score, PeerRecord};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::wire::{self, WireError};

/// First redial delay after a peer is lost; doubles on each failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Addresses remembered per peer (and accepted in an announcement).
pub const MAX_ADDRS: usize = 8;
/// Longest address accepted in an announcement.
const MAX_ADDR_LEN: usize = 256;
/// Longest zone label or version string accepted from a peer.
const MAX_LABEL: usize = 64;
/// An announced uptime this much below the last one means the peer restarted (announcements
/// are a couple of seconds apart and may be relayed late).
const RESTART_SLACK_SECS: u64 = 5;
/// A gone client is dropped from the table after this long without a sign of life.
pub const FORGET_CLIENTS_AFTER: Duration = Duration::from_secs(600);
/// How long a peer that refused a store of ours for want of space counts as full.
pub const REFUSED_SPACE_FOR: Duration = Duration::from_secs(600);

/// What a peer says about itself on the membership topic, every `announce_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// dfs version of the sender.
    pub version: String,
    pub zone: String,
    /// Bytes the peer offers to hold for others, and how many of them are free.
    pub capacity: u64,
    pub free: u64,
    /// Shard requests it is serving right now.
    pub load: u32,
    /// Shards it holds for others.
    pub shards: u64,
    /// Where to dial the sender (multiaddrs ending in its own /p2p/ id).
    pub addrs: Vec<String>,
    /// The sender holds no shards for others and is never a placement target: a peer run for
    /// one command (`dfs put/get/verify`) or a `--no-store` mount. It comes and goes without
    /// being counted as a peer that died.
    pub client: bool,
    /// Seconds since the sender started (a smaller figure than last time means it restarted:
    /// its time of presence starts again).
    pub uptime_secs: u64,
    /// The sender is stopping: its last announcement (a clean goodbye).
    pub leaving: bool,
}

impl Announcement {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(self)
    }

    /// Decode and sanity-check an announcement from the wire.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let a: Announcement = wire::decode(bytes)?;
        a.validate()?;
        Ok(a)
    }

    /// Refuse announcements no honest peer sends.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.version.len() > MAX_LABEL || self.zone.len() > MAX_LABEL || self.zone.is_empty() {
            return Err(WireError::Malformed("label too long or empty".into()));
        }
        if self.free > self.capacity {
            return Err(WireError::Malformed("more free bytes than capacity".into()));
        }
        if self.client && (self.capacity > 0 || self.shards > 0) {
            return Err(WireError::Malformed("a client offers no storage".into()));
        }
        if self.addrs.len() > MAX_ADDRS || self.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
            return Err(WireError::Malformed(
                "too many or too long addresses".into(),
            ));
        }
        Ok(())
    }
}

/// The failure detector's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    Suspect,
    Dead,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        })
    }
}

/// One known peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addrs: Vec<Multiaddr>,
    pub state: PeerState,
    pub last_seen: Instant,
    pub connections: u32,
    pub rtt: Option<Duration>,
    pub announced: Option<Announcement>,
    pub failures: u32,
    pub bad_data: u32,
    /// Until when the peer is taken as full whatever it announces: it refused a store of ours
    /// as full or over its quota for us (what a peer claims is capped by what it accepts).
    pub refused_space_until: Option<Instant>,
    /// Since when the peer has been present without a break (reset when it was dead or
    /// restarted): placement trusts a peer only after it has been around for a while.
    pub up_since: Instant,
    /// A client that said goodbye or fell silent: hidden, never dialled, never dead, and
    /// dropped from the table after [`FORGET_CLIENTS_AFTER`].
    pub gone: bool,
    /// It said it is a client when it connected (identify), before any announcement.
    identified_client: bool,
    /// When to dial next while not connected, and the delay after that.
    next_dial: Instant,
    backoff: Duration,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            addrs: Vec::new(),
            state: PeerState::Alive,
            last_seen: now,
            connections: 0,
            rtt: None,
            announced: None,
            failures: 0,
            bad_data: 0,
            refused_space_until: None,
            up_since: now,
            gone: false,
            identified_client: false,
            next_dial: now,
            backoff: BACKOFF_MIN,
        }
    }

    pub fn score(&self) -> f64 {
        score(&PeerRecord {
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1000.0),
            failures: self.failures,
            bad_data: self.bad_data,
            answering: self.state == PeerState::Alive,
        })
    }

    /// It said it is a client (holds nothing for others, never a placement target).
    pub fn is_client(&self) -> bool {
        self.identified_client || self.announced.as_ref().is_some_and(|a| a.client)
    }
}

/// A state change worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub peer: PeerId,
    pub from: Option<PeerState>,
    pub to: PeerState,
}

/// The table of known peers.
#[derive(Debug)]
pub struct PeerTable {
    peers: HashMap<PeerId, Peer>,
    grace: Duration,
    suspect_after: Duration,
    /// Peers dropped from the table since [`PeerTable::take_forgotten`] was last called.
    forgotten: Vec<PeerId>,
}

/// The table as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub id: String,
    pub state: PeerState,
    pub addresses: Vec<String>,
    pub connected: bool,
    pub rtt_ms: Option<f64>,
    pub last_seen_secs: f64,
    pub zone: Option<String>,
    pub version: Option<String>,
    pub capacity: Option<u64>,
    pub free: Option<u64>,
    pub load: Option<u32>,
    pub shards: Option<u64>,
    pub score: f64,
    pub failures: u32,
    pub bad_data: u32,
    /// A client: holds nothing for others, is never a placement target, and is forgotten
    /// rather than declared dead when it goes.
    #[serde(default)]
    pub client: bool,
    /// Seconds it has been present without a break (as this peer saw it).
    #[serde(default)]
    pub up_secs: f64,
}

impl PeerTable {
    /// `grace`: silence before a peer is dead. `announce`: the announcement interval (a peer
    /// that misses three is suspect).
    pub fn new(grace: Duration, announce: Duration) -> Self {
        Self {
            peers: HashMap::new(),
            grace,
            suspect_after: (announce * 3).min(grace),
            forgotten: Vec::new(),
        }
    }

    /// The peers dropped from the table since the last call: what else is kept per peer
    /// (metric labels, bulk sessions) goes with them.
    pub fn take_forgotten(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.forgotten)
    }

    pub fn get(&self, id: &PeerId) -> Option<&Peer> {
        self.peers.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter()
    }

    fn entry(&mut self, id: PeerId, now: Instant) -> (&mut Peer, Option<PeerState>) {
        let known = self.peers.contains_key(&id);
        let peer = self.peers.entry(id).or_insert_with(|| Peer::new(now));
        let from = known.then_some(peer.state);
        (peer, from)
    }

    fn set_state(
        peer: &mut Peer,
        id: PeerId,
        from: Option<PeerState>,
        to: PeerState,
    ) -> Option<Transition> {
        peer.state = to;
        (from != Some(to)).then_some(Transition { peer: id, from, to })
    }

    /// Remember an address to dial the peer at (newest first, bounded).
    pub fn add_address(&mut self, id: PeerId, addr: Multiaddr, now: Instant) {
        let (peer, from) = self.entry(id, now);
        if from.is_none() {
            // Known only by address so far: not alive until it answers.
            peer.state = PeerState::Suspect;
            peer.last_seen = now;
        }
        peer.addrs.retain(|a| a != &addr);
        peer.addrs.insert(0, addr);
        peer.addrs.truncate(MAX_ADDRS);
    }

    /// Any sign of life.
    pub fn seen(&mut self, id: PeerId, now: Instant) -> Option<Transition> {
        let (peer, from) = self.entry(id, now);
        if from == Some(PeerState::Dead) {
            // Back from the dead: its presence starts again.
            peer.up_since = now;
        }
        peer.last_seen = now;
        peer.backoff = BACKOFF_MIN;
        Self::set_state(peer, id, from, PeerState::Alive)
    }

    pub fn connected(&mut self, id: PeerId, now: Instant) -> Option<Transition> {
        let change = self.seen(id, now);
        self.entry(id, now).0.connections += 1;
        change
    }

    /// A connection closed. With none left the peer is suspect and will be redialled; an
    /// abrupt close (an error, not a goodbye) makes it suspect even if other connections remain
    /// (a QUIC connection to a killed peer lingers until its pings time out). Its next sign of
    /// life makes it alive again.
    pub fn disconnected(
        &mut self,
        id: PeerId,
        remaining: u32,
        abrupt: bool,
        now: Instant,
    ) -> Option<Transition> {
        let (peer, from) = self.entry(id, now);
        peer.connections = remaining;
        if (remaining > 0 && !abrupt) || peer.state == PeerState::Dead {
            return None;
        }
        if remaining == 0 {
            peer.next_dial = now + BACKOFF_MIN;
        }
        Self::set_state(peer, id, from, PeerState::Suspect)
    }

    pub fn ping_ok(&mut self, id: PeerId, rtt: Duration, now: Instant) -> Option<Transition> {
        let was_answering = self.peers.get(&id).map(|p| p.state) == Some(PeerState::Alive);
        let change = self.seen(id, now);
        let (peer, _) = self.entry(id, now);
        // Exponentially smoothed, so one slow ping does not swing placement. The first answer
        // after an outage is dropped: it may be a ping stuck through the outage, which says
        // nothing about the path; the next one starts the average afresh.
        peer.rtt = match (peer.rtt, was_answering) {
            (Some(old), true) => Some(old.mul_f64(0.8) + rtt.mul_f64(0.2)),
            (None, true) => Some(rtt),
            (_, false) => None,
        };
        peer.failures = peer.failures.saturating_sub(1);
        change
    }

    /// A ping or request failed: suspect at once.
    pub fn failed(&mut self, id: PeerId, now: Instant) -> Option<Transition> {
        let (peer, from) = self.entry(id, now);
        peer.failures = peer.failures.saturating_add(1);
        if peer.state == PeerState::Alive {
            return Self::set_state(peer, id, from, PeerState::Suspect);
        }
        None
    }

    /// `times` requests succeeded: forgive as many earlier failures.
    pub fn succeeded(&mut self, id: PeerId, times: u32, now: Instant) -> Option<Transition> {
        let change = self.seen(id, now);
        let (peer, _) = self.entry(id, now);
        peer.failures = peer.failures.saturating_sub(times);
        change
    }

    /// The peer sent a shard that did not verify.
    pub fn bad_data(&mut self, id: PeerId, now: Instant) {
        let (peer, _) = self.entry(id, now);
        peer.bad_data = peer.bad_data.saturating_add(1);
    }

    /// The peer refused a store of ours as full or over its quota: it counts as full for
    /// [`REFUSED_SPACE_FOR`], whatever free space it announces.
    pub fn refused_space(&mut self, id: PeerId, now: Instant) {
        let (peer, _) = self.entry(id, now);
        peer.refused_space_until = Some(now + REFUSED_SPACE_FOR);
    }

    /// An announcement from `id`; `direct` when it came from `id` itself rather than relayed
    /// (only a direct one shows that the peer is alive now).
    pub fn announced(
        &mut self,
        id: PeerId,
        a: Announcement,
        direct: bool,
        now: Instant,
    ) -> Option<Transition> {
        let change = if direct { self.seen(id, now) } else { None };
        let (peer, from) = self.entry(id, now);
        if from.is_none() && !direct {
            // Heard of, not heard from: not alive until it answers.
            peer.state = PeerState::Suspect;
        }
        if direct {
            let restarted = peer
                .announced
                .as_ref()
                .is_some_and(|old| a.uptime_secs + RESTART_SLACK_SECS < old.uptime_secs);
            if restarted {
                peer.up_since = now;
            }
        }
        if direct && !a.leaving {
            peer.gone = false;
        }
        peer.announced = Some(a);
        change
    }

    /// `id` said it is a client when it connected (its identify agent version).
    pub fn identified_client(&mut self, id: PeerId, now: Instant) {
        self.entry(id, now).0.identified_client = true;
    }

    /// `id` said goodbye (an announcement with `leaving`, from itself). A client is forgotten
    /// at once: it was never a holder, and its going is not a failure. A storage peer is
    /// suspect (its shards are out of reach until it returns; it is dead after the grace
    /// period like any other).
    pub fn left(&mut self, id: PeerId, now: Instant) -> Option<Transition> {
        let peer = self.peers.get_mut(&id)?;
        if peer.is_client() {
            // Kept (hidden) rather than removed: the connection events that follow the
            // goodbye would otherwise bring it back as an unknown peer.
            peer.gone = true;
            return None;
        }
        let from = Some(peer.state);
        if peer.state == PeerState::Alive {
            // Silent from now on: the grace period counts from the goodbye.
            peer.last_seen = now;
            return Self::set_state(peer, id, from, PeerState::Suspect);
        }
        None
    }

    /// Apply the timeouts; returns the changes.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        // A client that has been silent for the grace period has gone (killed, or its goodbye
        // lost): it is forgotten, not dead. It held nothing, so nothing needs repair.
        let grace = self.grace;
        let forgotten = &mut self.forgotten;
        self.peers.retain(|id, peer| {
            let silent = now.saturating_duration_since(peer.last_seen);
            let keep =
                !(peer.is_client() && peer.connections == 0 && silent >= FORGET_CLIENTS_AFTER);
            if !keep {
                forgotten.push(*id);
            }
            keep
        });
        for (id, peer) in &mut self.peers {
            if peer.is_client() {
                if now.saturating_duration_since(peer.last_seen) >= grace {
                    peer.gone = true;
                }
                continue;
            }
            let silent = now.saturating_duration_since(peer.last_seen);
            let to = if silent >= self.grace {
                PeerState::Dead
            } else if silent >= self.suspect_after && peer.state == PeerState::Alive {
                PeerState::Suspect
            } else {
                continue;
            };
            if peer.state != to {
                out.extend(Self::set_state(peer, *id, Some(peer.state), to));
            }
        }
        out
    }

    /// Peers to dial now (not connected, due), with their addresses; schedules the next
    /// attempt with doubled backoff.
    pub fn due_dials(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out = Vec::new();
        for (id, peer) in &mut self.peers {
            // Clients dial in; once gone they are not called back.
            if peer.connections == 0
                && !peer.addrs.is_empty()
                && peer.next_dial <= now
                && !peer.is_client()
            {
                out.push((*id, peer.addrs.clone()));
                peer.next_dial = now + peer.backoff;
                peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
            }
        }
        out
    }

    /// Counts of alive, suspect and dead peers (clients not included).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for peer in self.peers.values().filter(|p| !p.is_client()) {
            match peer.state {
                PeerState::Alive => c.0 += 1,
                PeerState::Suspect => c.1 += 1,
                PeerState::Dead => c.2 += 1,
            }
        }
        c
    }

    /// Clients known now (peers run for one command, `--no-store` mounts).
    pub fn clients(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.is_client() && !p.gone)
            .count()
    }

    /// The table for the API, best-scored first.
    pub fn views(&self, now: Instant) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.gone)
            .map(|(id, p)| PeerView {
                id: id.to_string(),
                state: p.state,
                addresses: p.addrs.iter().map(|a| a.to_string()).collect(),
                connected: p.connections > 0,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                last_seen_secs: now.saturating_duration_since(p.last_seen).as_secs_f64(),
                zone: p.announced.as_ref().map(|a| a.zone.clone()),
                version: p.announced.as_ref().map(|a| a.version.clone()),
                capacity: p.announced.as_ref().map(|a| a.capacity),
                free: match p.refused_space_until {
                    Some(until) if until > now => Some(0),
                    _ => p.announced.as_ref().map(|a| a.free),
                },
                load: p.announced.as_ref().map(|a| a.load),
                shards: p.announced.as_ref().map(|a| a.shards),
                score: p.score(),
                failures: p.failures,
                bad_data: p.bad_data,
                client: p.is_client(),
                up_secs: now.saturating_duration_since(p.up_since).as_secs_f64(),
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(10);
    const ANNOUNCE: Duration = Duration::from_secs(1);

    fn table() -> (PeerTable, PeerId, Instant) {
        (
            PeerTable::new(GRACE, ANNOUNCE),
            PeerId::random(),
            Instant::now(),
        )
    }

    #[test]
    fn lost_connection_is_suspect_at_once_then_dead_after_grace() {
        let (mut t, p, now) = table();
        assert_eq!(t.connected(p, now).map(|x| x.to), Some(PeerState::Alive));
        assert_eq!(
            t.disconnected(p, 0, false, now).map(|x| x.to),
            Some(PeerState::Suspect)
        );
        assert!(t.tick(now + GRACE - Duration::from_millis(1)).is_empty());
        let changes = t.tick(now + GRACE);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to, PeerState::Dead);
        // It comes back.
        let back = t.connected(p, now + GRACE * 2).unwrap();
        assert_eq!(
            (back.from, back.to),
            (Some(PeerState::Dead), PeerState::Alive)
        );
    }

    #[test]
    fn silence_makes_suspect_after_three_missed_announcements() {
        let (mut t, p, now) = table();
        t.connected(p, now);
        assert!(t.tick(now + ANNOUNCE * 2).is_empty());
        assert_eq!(t.tick(now + ANNOUNCE * 3)[0].to, PeerState::Suspect);
        assert_eq!(t.counts(), (0, 1, 0));
    }

    #[test]
    fn a_returning_peer_gets_a_fresh_rtt_and_is_forgiven() {
        let (mut t, p, now) = table();
        for i in 0..10 {
            t.ping_ok(p, Duration::from_millis(1), now + Duration::from_secs(i));
        }
        t.failed(p, now + Duration::from_secs(11));
        t.failed(p, now + Duration::from_secs(12));
        t.tick(now + Duration::from_secs(30));
        assert_eq!(t.get(&p).unwrap().state, PeerState::Dead);
        // The ping stuck during the outage completes late, then normal ones follow.
        t.ping_ok(p, Duration::from_secs(4), now + Duration::from_secs(31));
        t.ping_ok(p, Duration::from_millis(1), now + Duration::from_secs(32));
        let peer = t.get(&p).unwrap();
        assert!(peer.rtt.unwrap() < Duration::from_secs(1), "{:?}", peer.rtt);
        assert_eq!(peer.failures, 0);
    }

    #[test]
    fn only_a_direct_announcement_is_a_sign_of_life() {
        let (mut t, p, now) = table();
        let a = Announcement {
            version: "v".into(),
            zone: "z".into(),
            capacity: 1,
            free: 1,
            load: 0,
            shards: 0,
            addrs: Vec::new(),
            client: false,
            uptime_secs: 0,
            leaving: false,
        };
        t.announced(p, a.clone(), false, now);
        assert_eq!(t.get(&p).unwrap().state, PeerState::Suspect);
        t.announced(p, a.clone(), true, now);
        assert_eq!(t.get(&p).unwrap().state, PeerState::Alive);
        // A relayed copy arriving late does not keep a silent peer alive.
        t.announced(p, a, false, now + GRACE);
        assert_eq!(t.tick(now + GRACE)[0].to, PeerState::Dead);
    }

    fn announcement(client: bool, uptime_secs: u64) -> Announcement {
        Announcement {
            version: "v".into(),
            zone: "z".into(),
            capacity: if client { 0 } else { 1 << 30 },
            free: if client { 0 } else { 1 << 30 },
            load: 0,
            shards: 0,
            addrs: Vec::new(),
            client,
            uptime_secs,
            leaving: false,
        }
    }

    #[test]
    fn a_client_is_forgotten_not_dead_and_leaves_no_trace_in_the_counts() {
        let (mut t, c, now) = table();
        let s = PeerId::random();
        t.announced(c, announcement(true, 1), true, now);
        t.announced(s, announcement(false, 1), true, now);
        assert_eq!((t.counts(), t.clients()), ((1, 0, 0), 1));
        assert!(t.views(now).iter().any(|v| v.client));
        // Killed without a goodbye: after the grace period it is gone, not dead, and not
        // dialled again.
        t.add_address(c, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), now);
        t.disconnected(c, 0, true, now);
        let changes = t.tick(now + GRACE);
        assert!(changes.iter().all(|c| c.peer == s), "{changes:?}");
        assert!(t.get(&c).unwrap().gone);
        assert!(t.due_dials(now + GRACE * 2).iter().all(|(p, _)| *p != c));
        assert_eq!((t.counts(), t.clients()), ((0, 0, 1), 0));
        assert!(t.views(now + GRACE).iter().all(|v| v.id != c.to_string()));
        // Long gone: dropped from the table.
        assert!(t.take_forgotten().is_empty());
        t.tick(now + FORGET_CLIENTS_AFTER);
        assert!(t.get(&c).is_none());
        assert_eq!(
            t.take_forgotten(),
            vec![c],
            "what is kept per peer goes with it"
        );
        assert!(t.take_forgotten().is_empty());
        // A clean goodbye hides a client at once, and connection events after it do not
        // bring it back as a peer of unknown kind.
        let c2 = PeerId::random();
        t.announced(c2, announcement(true, 1), true, now + GRACE);
        assert!(t.left(c2, now + GRACE).is_none());
        t.disconnected(c2, 0, false, now + GRACE);
        assert!(t.views(now + GRACE).iter().all(|v| v.id != c2.to_string()));
        assert_eq!(t.clients(), 0);
        assert!(t.tick(now + GRACE * 3).iter().all(|c| c.peer != c2));
        // A storage peer's goodbye makes it suspect, and dead after the grace period.
        let s2 = PeerId::random();
        t.announced(s2, announcement(false, 1), true, now + GRACE);
        assert_eq!(
            t.left(s2, now + GRACE).map(|c| c.to),
            Some(PeerState::Suspect)
        );
        assert!(t
            .tick(now + GRACE * 2)
            .iter()
            .any(|c| c.peer == s2 && c.to == PeerState::Dead));
    }

    #[test]
    fn presence_starts_again_after_a_restart_or_death() {
        let (mut t, p, now) = table();
        t.announced(p, announcement(false, 100), true, now);
        let later = now + Duration::from_secs(60);
        t.announced(p, announcement(false, 160), true, later);
        assert_eq!(t.get(&p).unwrap().up_since, now);
        // A relayed, older announcement is no restart.
        t.announced(p, announcement(false, 150), false, later);
        assert_eq!(t.get(&p).unwrap().up_since, now);
        // The peer restarted within the grace period: it announces a small uptime.
        t.announced(p, announcement(false, 2), true, later);
        assert_eq!(t.get(&p).unwrap().up_since, later);
        // Dead, then back.
        t.tick(later + GRACE);
        assert_eq!(t.get(&p).unwrap().state, PeerState::Dead);
        let back = later + GRACE * 2;
        t.seen(p, back);
        assert_eq!(t.get(&p).unwrap().up_since, back);
        assert!(t.views(back)[0].up_secs < 1.0);
    }

    #[test]
    fn redials_back_off_exponentially_up_to_the_cap() {
        let (mut t, p, now) = table();
        t.add_address(p, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), now);
        let mut at = now;
        let mut gaps = Vec::new();
        let mut last = None;
        for _ in 0..400 {
            if !t.due_dials(at).is_empty() {
                if let Some(l) = last {
                    gaps.push(at - l);
                }
                last = Some(at);
            }
            at += Duration::from_millis(50);
        }
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]));
        assert!(*gaps.last().unwrap() <= BACKOFF_MAX + Duration::from_millis(50));
        // A sign of life resets the backoff.
        t.seen(p, at);
        assert_eq!(t.get(&p).unwrap().backoff, BACKOFF_MIN);
    }

    #[test]
    fn bad_announcements_are_refused() {
        let mut a = Announcement {
            version: "0.1.0".into(),
            zone: "z".into(),
            capacity: 10,
            free: 5,
            load: 0,
            shards: 0,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            client: false,
            uptime_secs: 0,
            leaving: false,
        };
        assert_eq!(Announcement::decode(&a.encode().unwrap()).unwrap(), a);
        a.addrs = vec!["x".into(); MAX_ADDRS + 1];
        assert!(Announcement::decode(&a.encode().unwrap()).is_err());
        a.addrs = vec!["x".repeat(MAX_ADDR_LEN + 1)];
        assert!(Announcement::decode(&a.encode().unwrap()).is_err());
        a.addrs.clear();
        a.free = 11;
        assert!(Announcement::decode(&a.encode().unwrap()).is_err());
        a.free = 1;
        a.zone = "x".repeat(65);
        assert!(Announcement::decode(&a.encode().unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn announcement_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Announcement::decode(&bytes);
        }

        #[test]
        fn dead_only_after_grace(events in proptest::collection::vec((0u8..5, 0u64..3000), 1..60)) {
            let (mut t, p, start) = table();
            let mut now = start;
            let mut last_life = start;
            t.connected(p, now);
            for (kind, step) in events {
                now += Duration::from_millis(step);
                match kind {
                    0 => { t.seen(p, now); last_life = now; }
                    1 => { t.disconnected(p, 0, false, now); }
                    2 => { t.failed(p, now); }
                    3 => { t.ping_ok(p, Duration::from_millis(1), now); last_life = now; }
                    _ => { t.tick(now); }
                }
                let state = t.get(&p).unwrap().state;
                if state == PeerState::Dead {
                    prop_assert!(now - last_life >= GRACE);
                }
                if now - last_life < GRACE && state == PeerState::Alive {
                    prop_assert!(now - last_life < GRACE);
                }
            }
        }
    }
}
