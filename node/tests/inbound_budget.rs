//! The inbound request budget (`wire::read_inbound_frame`): requests announced by peers that
//! then send their bytes slowly hold at most `INBOUND_BUDGET_KIB` of this peer's memory; the
//! next one is refused before any of it is buffered. In a process of its own, since the budget
//! is process-wide.

use std::pin::Pin;
use std::task::{Context, Poll};

use dfs_node::net::wire::{read_inbound_frame, INBOUND_BUDGET_KIB, MAX_FRAME};
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

#[test]
fn stalled_requests_hold_at_most_the_budget_and_the_next_is_refused_unread() {
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
    // A stalled read given up (its stream closed) gives its part of the budget back.
    reading.pop();
    let mut again = Stalled::new(len);
    let mut read = Box::pin(read_inbound_frame(&mut again, MAX_FRAME));
    assert!(
        (&mut read).now_or_never().is_none(),
        "taken again, and waiting"
    );
}
