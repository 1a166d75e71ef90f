//! Usage analytics: per file (opens for reading, bytes read and written) and per user (the uid
//! of the process calling into the mount: operations, bytes read and written), kept in RocksDB
//! so `dfs stats` can show the most popular files and the active users over the peer's life.
//!
//! The mount counts in memory; counts reach the `analytics` table at most every
//! [`FLUSH_EVERY`] (merged into the stored totals, one batch) and when the mount ends, so the
//! read path never waits on the disk. Keys: `f` ++ path, `u` ++ uid (big-endian); values are
//! version byte + postcard.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::meta::{MetaDb, MetaError, CF_ANALYTICS};

const STATS_V1: u8 = 1;
/// Longest time counts stay in memory only.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// A user is active if seen this recently.
pub const ACTIVE_FOR: Duration = Duration::from_secs(15 * 60);

/// What is known of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStats {
    pub path: String,
    /// Opens for reading: downloads, in a file-sharing sense.
    pub opens: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Milliseconds since the epoch of the last access.
    pub last_ms: u64,
}

/// What is known of one user (a uid on this peer, until accounts arrive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStats {
    pub uid: u32,
    pub ops: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// Seen within [`ACTIVE_FOR`] (computed when read).
    #[serde(default)]
    pub active: bool,
}

/// `dfs stats`: the most read files, every user, and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub popular_files: Vec<FileStats>,
    pub users: Vec<UserStats>,
    pub files_tracked: u64,
    pub active_users: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Default)]
struct Pending {
    files: HashMap<String, FileStats>,
    users: HashMap<u32, UserStats>,
    since: Option<Instant>,
}

/// The counts of one data directory.
#[derive(Default)]
pub struct Analytics {
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn file_key(path: &str) -> Vec<u8> {
    [b"f".as_slice(), path.as_bytes()].concat()
}

fn user_key(uid: u32) -> Vec<u8> {
    [b"u".as_slice(), &uid.to_be_bytes()].concat()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_extend(v, vec![STATS_V1]).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&STATS_V1, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

impl Analytics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one operation by `uid`, with bytes read or written from or to `path` (if any).
    /// `opened` marks an open for reading. Flushes when counts waited long enough.
    pub fn count(
        &self,
        db: &MetaDb,
        uid: u32,
        path: Option<&str>,
        opened: bool,
        read: u64,
        written: u64,
    ) {
        let now = now_ms();
        let due = {
            let mut p = self.lock();
            let u = p.users.entry(uid).or_insert_with(|| UserStats {
                uid,
                first_ms: now,
                ..Default::default()
            });
            u.ops += 1;
            u.bytes_read += read;
            u.bytes_written += written;
            u.last_ms = now;
            if let Some(path) = path {
                let f = p
                    .files
                    .entry(path.to_string())
                    .or_insert_with(|| FileStats {
                        path: path.to_string(),
                        ..Default::default()
                    });
                f.opens += u64::from(opened);
                f.bytes_read += read;
                f.bytes_written += written;
                f.last_ms = now;
            }
            let since = *p.since.get_or_insert_with(Instant::now);
            since.elapsed() >= FLUSH_EVERY
        };
        if due {
            if let Err(e) = self.flush(db) {
                tracing::warn!(error = %e, "usage counts not saved");
            }
        }
    }

    /// Merge what is counted in memory into the stored totals.
    pub fn flush(&self, db: &MetaDb) -> Result<(), MetaError> {
        let pending = std::mem::take(&mut *self.lock());
        let mut writes = Vec::new();
        for (path, f) in pending.files {
            let key = file_key(&path);
            let mut total: FileStats = db
                .cf_get(CF_ANALYTICS, &key)?
                .and_then(|v| decode(&v))
                .unwrap_or_else(|| FileStats {
                    path: path.clone(),
                    ..Default::default()
                });
            total.opens += f.opens;
            total.bytes_read += f.bytes_read;
            total.bytes_written += f.bytes_written;
            total.last_ms = total.last_ms.max(f.last_ms);
            writes.push((CF_ANALYTICS, key, Some(encode(&total))));
        }
        for (uid, u) in pending.users {
            let key = user_key(uid);
            let mut total: UserStats = db
                .cf_get(CF_ANALYTICS, &key)?
                .and_then(|v| decode(&v))
                .unwrap_or_else(|| UserStats {
                    uid,
                    first_ms: u.first_ms,
                    ..Default::default()
                });
            total.ops += u.ops;
            total.bytes_read += u.bytes_read;
            total.bytes_written += u.bytes_written;
            total.first_ms = total.first_ms.min(u.first_ms);
            total.last_ms = total.last_ms.max(u.last_ms);
            writes.push((CF_ANALYTICS, key, Some(encode(&total))));
        }
        if !writes.is_empty() {
            db.cf_write(writes, false)?;
        }
        Ok(())
    }

    /// The stored totals plus what is still in memory: the `top` most read files (by opens
    /// for reading, then bytes: the kernel's page cache answers repeated reads of a file
    /// without asking the mount, so bytes undercount popular files) and every user, most
    /// recently active first.
    pub fn report(&self, db: &MetaDb, top: usize) -> Result<Report, MetaError> {
        self.flush(db)?;
        let mut files = Vec::new();
        let mut users = Vec::new();
        for (k, v) in db.cf_scan(CF_ANALYTICS, &[], None, usize::MAX)? {
            match k.first() {
                Some(b'f') => files.extend(decode::<FileStats>(&v)),
                Some(b'u') => users.extend(decode::<UserStats>(&v)),
                _ => {}
            }
        }
        let now = now_ms();
        for u in &mut users {
            u.active = now.saturating_sub(u.last_ms) <= ACTIVE_FOR.as_millis() as u64;
        }
        users.sort_by_key(|u| std::cmp::Reverse(u.last_ms));
        let report = Report {
            files_tracked: files.len() as u64,
            active_users: users.iter().filter(|u| u.active).count() as u64,
            bytes_read: users.iter().map(|u| u.bytes_read).sum(),
            bytes_written: users.iter().map(|u| u.bytes_written).sum(),
            popular_files: {
                files.sort_by(|a, b| {
                    (b.opens, b.bytes_read, &a.path).cmp(&(a.opens, a.bytes_read, &b.path))
                });
                files.truncate(top);
                files
            },
            users,
        };
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_into_totals_and_rank_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = Analytics::default();
        {
            let db = MetaDb::open(dir.path()).unwrap();
            a.count(&db, 1000, Some("/docs/a"), true, 100, 0);
            a.count(&db, 1000, Some("/docs/a"), false, 50, 0);
            a.count(&db, 1001, Some("/b"), true, 500, 0);
            a.count(&db, 1001, Some("/c"), false, 0, 70);
            a.count(&db, 1001, None, false, 0, 0);
            a.flush(&db).unwrap();
            a.count(&db, 1000, Some("/docs/a"), true, 1, 0);
            let r = a.report(&db, 2).unwrap();
            let top: Vec<(&str, u64, u64)> = r
                .popular_files
                .iter()
                .map(|f| (f.path.as_str(), f.opens, f.bytes_read))
                .collect();
            assert_eq!(top, [("/docs/a", 2, 151), ("/b", 1, 500)]);
            assert_eq!(r.files_tracked, 3);
            assert_eq!((r.bytes_read, r.bytes_written), (651, 70));
            assert_eq!(r.active_users, 2);
            let u1001 = r.users.iter().find(|u| u.uid == 1001).unwrap();
            assert_eq!(
                (u1001.ops, u1001.bytes_read, u1001.bytes_written),
                (3, 500, 70)
            );
        }
        // The totals are on disk.
        let db = MetaDb::open(dir.path()).unwrap();
        let r = Analytics::default().report(&db, 10).unwrap();
        assert_eq!(r.files_tracked, 3);
        assert_eq!(r.users.iter().map(|u| u.ops).sum::<u64>(), 6);
    }
}
