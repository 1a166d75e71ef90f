//! Peer scoring: one number in (0, 1] saying how much to prefer a peer as a source or target.
//!
//! Inputs are what the peer table observes (round-trip time, recent failures, shards that failed
//! verification, whether the peer is answering). Pure and monotonic: a slower, less reliable or
//! lying peer never scores higher than an otherwise equal better one.

/// What the network layer knows about a peer's behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerRecord {
    /// Smoothed round-trip time in milliseconds, if measured.
    pub rtt_ms: Option<f64>,
    /// Requests that failed (timeouts, refused connections) and have not been forgiven by later
    /// successes.
    pub failures: u32,
    /// Shards received from this peer that did not verify.
    pub bad_data: u32,
    /// The failure detector's view: false while suspect or dead.
    pub answering: bool,
}

/// RTT at which the latency factor halves.
const RTT_HALF_MS: f64 = 50.0;

/// Score a peer: 1.0 for a fast, reliable, answering peer, lower for each fault.
pub fn score(peer: &PeerRecord) -> f64 {
    let latency = match peer.rtt_ms {
        Some(rtt) if rtt.is_finite() && rtt > 0.0 => 1.0 / (1.0 + rtt / RTT_HALF_MS),
        _ => 0.5,
    };
    let reliability = 0.8f64.powi(peer.failures.min(50) as i32);
    // Bad data is far worse than a timeout: it is either a broken disk or a lie.
    let honesty = 0.25f64.powi(peer.bad_data.min(20) as i32);
    let answering = if peer.answering { 1.0 } else { 0.1 };
    (latency * reliability * honesty * answering).clamp(f64::MIN_POSITIVE, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_record() -> impl Strategy<Value = PeerRecord> {
        (
            proptest::option::of(0.0f64..10_000.0),
            0u32..100,
            0u32..30,
            any::<bool>(),
        )
            .prop_map(|(rtt_ms, failures, bad_data, answering)| PeerRecord {
                rtt_ms,
                failures,
                bad_data,
                answering,
            })
    }

    proptest! {
        #[test]
        fn scores_are_in_range(p in any_record()) {
            let s = score(&p);
            prop_assert!(s > 0.0 && s <= 1.0);
        }

        #[test]
        fn every_fault_lowers_the_score(p in any_record()) {
            let base = score(&p);
            let worse = [
                PeerRecord { failures: p.failures + 1, ..p },
                PeerRecord { bad_data: p.bad_data + 1, ..p },
                PeerRecord { answering: false, ..p },
                PeerRecord { rtt_ms: p.rtt_ms.map(|r| r + 10.0), ..p },
            ];
            for w in worse {
                prop_assert!(score(&w) <= base, "{:?} scored above {:?}", w, p);
            }
        }
    }

    #[test]
    fn bad_data_costs_more_than_a_timeout() {
        let good = PeerRecord {
            rtt_ms: Some(1.0),
            answering: true,
            ..Default::default()
        };
        let slow = PeerRecord {
            failures: 1,
            ..good
        };
        let liar = PeerRecord {
            bad_data: 1,
            ..good
        };
        assert!(score(&liar) < score(&slow));
    }
}
