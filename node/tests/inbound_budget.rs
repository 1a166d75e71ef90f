//! The inbound request budgets (`wire::read_inbound_frame`): requests announced by peers that
//! then send their bytes slowly hold at most `INBOUND_BUDGET_KIB` of this peer's memory; the
//! next one is refused before any of it is buffered, small requests (fetches, checks) still
//! go through, and a body that misses its deadline gives its budget back. In a process of its
//! own, since the budgets are process-wide; one test, since they share them.

use std::pin::Pin;
use std::task::{Context, Poll};

use dfs_node::testing::wire::{
    read_inbound_frame, transfer_deadline, INBOUND_BUDGET_KIB, MAX_FRAME, SMALL_REQUEST,
};
use futures::{AsyncRead, FutureExt};

/// A stream that announces a frame of `len` bytes and then sends nothing, ever.
struct Stalled {
    head: [u8; 4],
    sent: usize,
}

impl Stalled {
    fn new(len: usize) -> Self {
        Stalled {
            head: (len as u32).to_be_bytes(),
            sent: 0,
        }
    }
}

impl AsyncRead for Stalled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.sent == self.head.len() {
            return Poll::Pending;
        }
        let n = buf.len().min(self.head.len() - self.sent);
        let from = self.sent;
        buf[..n].copy_from_slice(&self.head[from..from + n]);
        self.sent += n;
        Poll::Ready(Ok(n))
    }
}

#[tokio::test]
async fn stalled_requests_hold_at_most_the_budget_and_the_next_is_refused_unread() {
    let len = MAX_FRAME - 1024;
    let kib = len.div_ceil(1024);
    let fit = INBOUND_BUDGET_KIB / kib;
    assert!(fit >= 8, "the budget holds a few shards at least");
    let mut streams: Vec<Stalled> = (0..=fit).map(|_| Stalled::new(len)).collect();
    let (held, rest) = streams.split_at_mut(fit);
    let mut reading = Vec::new();
    for stream in held.iter_mut() {
        let mut read = Box::pin(read_inbound_frame(stream, MAX_FRAME));
        assert!((&mut read).now_or_never().is_none(), "a stalled read waits");
        reading.push(read);
    }
    let refused = read_inbound_frame(&mut rest[0], MAX_FRAME)
        .now_or_never()
        .expect("refused at once, not waiting for bytes")
        .expect_err("over the budget");
    assert!(refused.to_string().contains("refused"), "{refused}");
    // Small requests have a budget of their own: stalled stores do not starve them.
    let mut small = Stalled::new(SMALL_REQUEST);
    let mut read_small = Box::pin(read_inbound_frame(&mut small, MAX_FRAME));
    assert!(
        (&mut read_small).now_or_never().is_none(),
        "a small request is read (and waits for its bytes) while the store budget is spent"
    );
    // A stalled read given up (its stream closed) gives its part of the budget back.
    reading.pop();
    let mut again = Stalled::new(len);
    let mut read = Box::pin(read_inbound_frame(&mut again, MAX_FRAME));
    assert!(
        (&mut read).now_or_never().is_none(),
        "taken again, and waiting"
    );
    // A body that misses its deadline is given up, and its budget goes back (real time: the
    // deadline of a 4 MiB body is 9 s).
    tokio::time::sleep(transfer_deadline(len)).await;
    let late = read.await.expect_err("the body never came");
    assert_eq!(late.kind(), std::io::ErrorKind::TimedOut, "{late}");
    for stalled in reading {
        let late = stalled.await.expect_err("the body never came");
        assert_eq!(late.kind(), std::io::ErrorKind::TimedOut, "{late}");
    }
    let mut after = Stalled::new(len);
    let mut read = Box::pin(read_inbound_frame(&mut after, MAX_FRAME));
    assert!(
        (&mut read).now_or_never().is_none(),
        "the budget came back when the deadlines passed"
    );
}
