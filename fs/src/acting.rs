//! Which local uid a filesystem call acts for, so that a shared volume signs its ops as the
//! user logged in for that uid ([`dfs_node::ops::OpsHub::acting`]).
//!
//! The uid is request context, set by the FUSE adapter for the length of each callback
//! ([`scope`]) and read where an op is signed, three layers down. A thread-local rather than
//! an argument: every `Namespace` method would otherwise take a uid that only the shared
//! namespace's signing reads. A file's content is committed under the uid that last opened
//! it (`OpenFile::opener`), since the kernel may send the final release without the closer's
//! credentials.

use std::cell::Cell;

thread_local! {
    static UID: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The uid the current call acts for, if any.
pub fn uid() -> Option<u32> {
    UID.with(Cell::get)
}

/// Act for `uid` until the returned guard is dropped (which restores the uid before).
pub fn scope(uid: Option<u32>) -> Scope {
    Scope(UID.with(|cell| cell.replace(uid)))
}

/// Restores the uid acted for before [`scope`].
#[must_use = "the uid is acted for only while the scope lives"]
pub struct Scope(Option<u32>);

impl Drop for Scope {
    fn drop(&mut self) {
        UID.with(|cell| cell.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(uid(), None);
        {
            let _outer = scope(Some(1000));
            assert_eq!(uid(), Some(1000));
            {
                let _inner = scope(None);
                assert_eq!(uid(), None);
            }
            assert_eq!(uid(), Some(1000));
            std::thread::spawn(|| assert_eq!(uid(), None))
                .join()
                .unwrap();
        }
        assert_eq!(uid(), None);
    }
}
