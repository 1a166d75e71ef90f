//! The one way plain threads (chunk workers, FUSE, the repair and steward threads) run work on
//! the network's runtime: [`Gate::run`]. When the peer stops, [`Gate::close`] refuses new
//! work, cancels what is under way (each wait ends at its next await, dropping its future
//! while the runtime still runs) and waits for the waiters to leave; only then may the
//! runtime shut down. Blocking on a runtime that has shut down panics inside tokio (its timers
//! refuse to run), so nothing may reach it after that: a call on a closed gate returns `None`
//! at once, and the caller reports "stopping".

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub(crate) struct Gate {
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
    left: Condvar,
    cancel: CancellationToken,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Threads inside [`Gate::run`] now.
    waiting: usize,
}

/// Leaves the gate (and wakes `close`) when the wait ends, however it ends.
struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.waiting -= 1;
        if state.waiting == 0 {
            self.0.left.notify_all();
        }
    }
}

impl Gate {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            state: Mutex::new(State::default()),
            left: Condvar::new(),
            cancel: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `work` on the runtime and wait for it; `None` when the gate is closed or closes
    /// meanwhile. From inside a runtime (not expected) it waits without starving it.
    pub(crate) fn run<F: Future>(&self, work: F) -> Option<F::Output> {
        {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            state.waiting += 1;
        }
        let _inside = Inside(self);
        let cancelled = self.cancel.cancelled();
        let wait = async {
            tokio::select! {
                biased;
                _ = cancelled => None,
                out = work => Some(out),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(wait)),
            Err(_) => self.runtime.block_on(wait),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Refuse new work, cancel what runs, and wait (at most `grace`) for every waiter to
    /// leave; true when all have.
    pub(crate) fn close(&self, grace: Duration) -> bool {
        self.lock().closed = true;
        self.cancel.cancel();
        let deadline = Instant::now() + grace;
        let mut state = self.lock();
        while state.waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .left
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_closed_gate_ends_waits_under_way_and_refuses_new_ones() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gate = Arc::new(Gate::new(runtime.handle().clone()));
        assert_eq!(gate.run(async { 7 }), Some(7));
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.run(async { tokio::time::sleep(Duration::from_secs(60)).await })
            })
        };
        while gate.lock().waiting == 0 {
            assert!(!waiter.is_finished(), "the waiter ended early");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        assert!(gate.close(Duration::from_secs(5)));
        assert_eq!(waiter.join().unwrap(), None);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(runtime);
        // The runtime is gone: a run must not touch it.
        assert_eq!(
            gate.run(async { tokio::time::sleep(Duration::from_millis(1)).await }),
            None
        );
    }
}
