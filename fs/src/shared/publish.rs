//! Publishing a mount's own ops: appended to the log without waiting for the disk, they wait
//! in the outbox until one fsync has made a batch durable, and only then go out by gossip; the
//! publisher thread runs [`Inner::publish_until_closed`] and drains the outbox when the mount
//! closes.

use std::sync::atomic::Ordering;

use super::{lock, Inner};
use crate::model::{FsError, Result};

impl Inner {
    /// Make the ops in the outbox durable (one fsync for all of them) and publish them.
    pub(super) fn publish_ready(&self) -> Result<()> {
        let ops = std::mem::take(&mut *lock(&self.outbox));
        if ops.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.hub.sync() {
            // Kept for the next try: nothing leaves this peer before it is durable here.
            let mut outbox = lock(&self.outbox);
            let newer = std::mem::replace(&mut *outbox, ops);
            outbox.extend(newer);
            return Err(FsError::Meta(e));
        }
        for op in ops {
            (self.publish)(op);
        }
        Ok(())
    }

    /// The publisher thread: group commit of local ops, then gossip.
    /// Sync and publish what the outbox holds, as it fills, until the namespace closes (with
    /// an empty outbox).
    pub(super) fn publish_until_closed(&self) {
        loop {
            {
                let mut outbox = lock(&self.outbox);
                while outbox.is_empty() && !self.closing.load(Ordering::SeqCst) {
                    outbox = self
                        .outbox_ready
                        .wait(outbox)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if outbox.is_empty() {
                    return;
                }
            }
            if let Err(e) = self.publish_ready() {
                if self.closing.load(Ordering::SeqCst) {
                    tracing::error!(error = %e, "cannot sync the volume's op log while closing: its last ops are in the log, and go out when the volume is mounted again");
                    return;
                }
                tracing::warn!(error = %e, "cannot sync the volume's op log; retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
