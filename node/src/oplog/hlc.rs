//! Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).
//!
//! An [`Hlc`] is a wall-clock reading in milliseconds plus a counter that orders events within
//! one millisecond and carries causality: after [`HlcClock::observe`] of a remote timestamp,
//! every later [`HlcClock::tick`] is greater than it, even if the local wall clock is behind.
//! Readings stay close to physical time, so `OpId`s sort roughly by when ops were made.
//!
//! The clock is pure: physical time is an argument (milliseconds since the Unix epoch), so tests
//! drive it with any sequence, including clocks that jump backwards. [`physical_now_ms`] reads
//! the system clock for the one caller that needs it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How far ahead of local physical time a remote timestamp may be by default.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(60);

/// One clock reading, ordered by (`millis`, `counter`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch: the largest physical time seen so far.
    pub millis: u64,
    /// Orders readings that share `millis`.
    pub counter: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc {
        millis: 0,
        counter: 0,
    };

    /// The encoding used in keys and signed messages: big-endian, so byte order is clock order.
    pub fn to_be_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.millis.to_be_bytes());
        out[8..].copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    pub fn from_be_bytes(bytes: [u8; 12]) -> Hlc {
        let mut millis = [0u8; 8];
        let mut counter = [0u8; 4];
        millis.copy_from_slice(&bytes[..8]);
        counter.copy_from_slice(&bytes[8..]);
        Hlc {
            millis: u64::from_be_bytes(millis),
            counter: u32::from_be_bytes(counter),
        }
    }

    /// The smallest reading greater than this one (saturates at the largest reading, which no
    /// real clock reaches).
    fn successor(self) -> Hlc {
        match self.counter.checked_add(1) {
            Some(counter) => Hlc { counter, ..self },
            None => Hlc {
                millis: self.millis.saturating_add(1),
                counter: if self.millis == u64::MAX { u32::MAX } else { 0 },
            },
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis, self.counter)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

/// A remote timestamp the clock refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    #[error(
        "remote clock reading {remote} is {ahead_ms} ms ahead of local physical time \
         {physical_ms} ms, more than the {max_drift_ms} ms allowed"
    )]
    TooFarAhead {
        remote: Hlc,
        physical_ms: u64,
        ahead_ms: u64,
        max_drift_ms: u64,
    },
}

/// The clock of one peer: the last reading it gave out and the drift it tolerates.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl Default for HlcClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HlcClock {
    pub fn new() -> Self {
        HlcClock {
            last: Hlc::ZERO,
            max_drift_ms: duration_ms(DEFAULT_MAX_DRIFT),
        }
    }

    /// How far ahead of physical time a remote reading may be before [`HlcClock::observe`]
    /// refuses it.
    pub fn with_max_drift(mut self, max_drift: Duration) -> Self {
        self.max_drift_ms = duration_ms(max_drift);
        self
    }

    /// Resume after a restart: every later reading is greater than `last` (the greatest
    /// reading this peer ever gave out or observed, e.g. the largest `Hlc` in its logs).
    pub fn with_last(mut self, last: Hlc) -> Self {
        self.last = self.last.max(last);
        self
    }

    /// The last reading given out or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A reading for a local event: greater than every earlier one.
    pub fn tick(&mut self, physical_ms: u64) -> Hlc {
        self.last = if physical_ms > self.last.millis {
            Hlc {
                millis: physical_ms,
                counter: 0,
            }
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Merge a reading received from another peer and return a reading for the receive event,
    /// greater than both `remote` and every earlier local reading. A remote reading more than
    /// the maximum drift ahead of `physical_ms` is refused and leaves the clock unchanged: a
    /// peer with a broken clock must not drag everyone's clocks into the future.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) -> Result<Hlc, ClockError> {
        let limit = physical_ms.saturating_add(self.max_drift_ms);
        if remote.millis > limit {
            return Err(ClockError::TooFarAhead {
                remote,
                physical_ms,
                ahead_ms: remote.millis - physical_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let newest = self.last.max(remote);
        self.last = if physical_ms > newest.millis {
            Hlc {
                millis: physical_ms,
                counter: 0,
            }
        } else {
            newest.successor()
        };
        Ok(self.last)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch by the system clock (0 if it is set before 1970).
pub fn physical_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Tick { physical: u64 },
        Observe { remote: Hlc, physical: u64 },
    }

    /// Physical times that wander, jump backwards and repeat, in a range where remote readings
    /// often land within the drift window and sometimes beyond it.
    fn step() -> impl Strategy<Value = Step> {
        let physical = 1_000_000u64..1_300_000;
        let remote = (900_000u64..1_500_000, prop_oneof![Just(0u32), any::<u32>()])
            .prop_map(|(millis, counter)| Hlc { millis, counter });
        prop_oneof![
            physical
                .clone()
                .prop_map(|physical| Step::Tick { physical }),
            (remote, physical).prop_map(|(remote, physical)| Step::Observe { remote, physical }),
        ]
    }

    proptest! {
        #[test]
        fn readings_strictly_increase_and_pass_every_accepted_remote(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut clock = HlcClock::new();
            let mut prev = clock.last();
            for s in steps {
                match s {
                    Step::Tick { physical } => {
                        let now = clock.tick(physical);
                        prop_assert!(now > prev, "{now} after {prev}");
                        prop_assert!(now.millis >= physical);
                        prev = now;
                    }
                    Step::Observe { remote, physical } => match clock.observe(remote, physical) {
                        Ok(now) => {
                            prop_assert!(now > prev && now > remote, "{now} after {prev}, {remote}");
                            prop_assert!(now.millis >= physical);
                            prev = now;
                        }
                        Err(ClockError::TooFarAhead { .. }) => {
                            prop_assert!(remote.millis > physical + 60_000);
                            prop_assert_eq!(clock.last(), prev);
                        }
                    },
                }
            }
        }

        #[test]
        fn key_encoding_sorts_like_the_clock(a: (u64, u32), b: (u64, u32)) {
            let (a, b) = (Hlc { millis: a.0, counter: a.1 }, Hlc { millis: b.0, counter: b.1 });
            prop_assert_eq!(a.cmp(&b), a.to_be_bytes().cmp(&b.to_be_bytes()));
            prop_assert_eq!(Hlc::from_be_bytes(a.to_be_bytes()), a);
        }
    }

    #[test]
    fn a_backwards_physical_clock_advances_the_counter() {
        let mut clock = HlcClock::new();
        assert_eq!(
            clock.tick(5000),
            Hlc {
                millis: 5000,
                counter: 0
            }
        );
        assert_eq!(
            clock.tick(4000),
            Hlc {
                millis: 5000,
                counter: 1
            }
        );
        assert_eq!(
            clock.tick(5000),
            Hlc {
                millis: 5000,
                counter: 2
            }
        );
        assert_eq!(
            clock.tick(5001),
            Hlc {
                millis: 5001,
                counter: 0
            }
        );
    }

    #[test]
    fn observe_follows_the_hlc_rules() {
        let mut clock = HlcClock::new();
        clock.tick(1000);
        // Remote ahead (within drift): take its millis, counter + 1.
        let r = Hlc {
            millis: 3000,
            counter: 7,
        };
        assert_eq!(
            clock.observe(r, 1000),
            Ok(Hlc {
                millis: 3000,
                counter: 8
            })
        );
        // Remote behind: local counter + 1.
        let old = Hlc {
            millis: 10,
            counter: 99,
        };
        assert_eq!(
            clock.observe(old, 1000),
            Ok(Hlc {
                millis: 3000,
                counter: 9
            })
        );
        // Same millis: the larger counter + 1.
        let same = Hlc {
            millis: 3000,
            counter: 50,
        };
        assert_eq!(
            clock.observe(same, 2000),
            Ok(Hlc {
                millis: 3000,
                counter: 51
            })
        );
        // Physical time ahead of both: counter resets.
        assert_eq!(
            clock.observe(same, 4000),
            Ok(Hlc {
                millis: 4000,
                counter: 0
            })
        );
    }

    #[test]
    fn a_remote_too_far_ahead_is_refused_with_the_numbers() {
        let mut clock = HlcClock::new().with_max_drift(Duration::from_secs(1));
        clock.tick(10_000);
        let remote = Hlc {
            millis: 11_001,
            counter: 0,
        };
        let err = clock.observe(remote, 10_000).unwrap_err();
        assert_eq!(
            err,
            ClockError::TooFarAhead {
                remote,
                physical_ms: 10_000,
                ahead_ms: 1001,
                max_drift_ms: 1000
            }
        );
        assert!(err.to_string().contains("1001 ms ahead"), "{err}");
        assert_eq!(
            clock.last(),
            Hlc {
                millis: 10_000,
                counter: 0
            }
        );
        // Exactly at the limit is fine.
        assert!(clock
            .observe(
                Hlc {
                    millis: 11_000,
                    counter: 0
                },
                10_000
            )
            .is_ok());
    }

    #[test]
    fn counter_overflow_moves_to_the_next_millisecond() {
        let mut clock = HlcClock::new().with_last(Hlc {
            millis: 7,
            counter: u32::MAX,
        });
        assert_eq!(
            clock.tick(0),
            Hlc {
                millis: 8,
                counter: 0
            }
        );
    }
}
