//! Grace periods for invalidating the kernel's caches after a remote change.
//!
//! A request can read the namespace just before a remote op is applied and send its (now
//! stale) reply just after the kernel was told to forget that very entry: the kernel would then
//! cache the stale answer for the whole TTL. So the follower applies the op, then waits until
//! every request that began before it has replied ([`Requests::wait_for_earlier`]), and only
//! then invalidates. Requests count themselves in one of two epoch slots
//! ([`Requests::enter`]); waiting flips the epoch and drains the old slot.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// The filesystem requests in progress, by epoch parity.
#[derive(Debug, Default)]
pub struct Requests {
    epoch: AtomicU64,
    active: [AtomicU64; 2],
}

/// One request in progress; it ends when dropped (after the reply went out).
#[must_use]
pub struct Active<'a> {
    requests: &'a Requests,
    slot: usize,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.requests.active[self.slot].fetch_sub(1, SeqCst);
    }
}

impl Requests {
    pub fn enter(&self) -> Active<'_> {
        let slot = (self.epoch.load(SeqCst) & 1) as usize;
        self.active[slot].fetch_add(1, SeqCst);
        Active {
            requests: self,
            slot,
        }
    }

    /// Return once every request that began before this call has ended. A request that read
    /// the epoch before the flip but counted itself after the drain began after the flip's
    /// caller changed the state, so its answer is fresh. One caller at a time.
    pub fn wait_for_earlier(&self) {
        let old = (self.epoch.fetch_add(1, SeqCst) & 1) as usize;
        while self.active[old].load(SeqCst) != 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiting_ends_only_after_earlier_requests_end() {
        let requests = Arc::new(Requests::default());
        let early = requests.enter();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let requests = requests.clone();
            std::thread::spawn(move || {
                requests.wait_for_earlier();
                tx.send(()).ok();
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // A request that starts after the wait began does not hold it up.
        let late = requests.enter();
        assert!(
            rx.try_recv().is_err(),
            "the wait ended while a request was in progress"
        );
        drop(early);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the wait ends once the earlier request ended");
        drop(late);
        waiter.join().expect("waiter");
    }
}
