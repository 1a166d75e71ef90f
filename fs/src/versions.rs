//! File versions: every commit that changes a file's content records a version (its content
//! root, size, mtime and path at the time) in the `fs_versions` table, keyed by inode and commit
//! time. Retention keeps the newest `keep_last` versions of each file and, beyond those, the
//! newest of each day for `keep_daily_days` days. Versions outlive the file: a deleted file
//! stays restorable until its versions expire. The mount shows them read-only under
//! `.dfs/versions/<path>/<time>` ([`VersionTree`]).

use std::collections::BTreeMap;

use dfs_node::{BlobRef, FsBatch, FsTable, Repo, VersionsConfig};
use serde::{Deserialize, Serialize};

use crate::model::{FsError, Ino, Result, Time};

const FORMAT_V1: u8 = 1;

/// One recorded version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub content: BlobRef,
    /// The chunk size the content is cut at.
    pub chunk_size: u32,
    pub size: u64,
    pub mtime: Time,
    /// The file's path (from the volume root, starting with `/`) when the version was made.
    pub path: Vec<u8>,
}

/// A version with the inode and commit time it is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub ino: Ino,
    pub time: Time,
    pub record: VersionRecord,
}

fn key(ino: Ino, time: Time) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    k.extend_from_slice(&ino.to_be_bytes());
    // Flip the sign bit so negative times sort first.
    k.extend_from_slice(&((time.secs as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&time.nsec.to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(Ino, Time)> {
    let ino = Ino::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let secs = (u64::from_be_bytes(k.get(8..16)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let nsec = u32::from_be_bytes(k.get(16..20)?.try_into().ok()?);
    Some((ino, Time { secs, nsec }))
}

fn decode(k: &[u8], v: &[u8]) -> Result<Version> {
    let (ino, time) = parse_key(k).ok_or_else(|| FsError::Corrupt("version key".into()))?;
    let record = match v.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| FsError::Corrupt(format!("version of inode {ino}: {e}")))?,
        _ => {
            return Err(FsError::Corrupt(format!(
                "version of inode {ino}: unknown format"
            )))
        }
    };
    Ok(Version { ino, time, record })
}

/// Versions of one inode, oldest first.
pub fn of_inode(repo: &Repo, ino: Ino) -> Result<Vec<Version>> {
    repo.meta()
        .fs_scan(FsTable::Versions, &ino.to_be_bytes(), None, usize::MAX)?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

/// Every version in the volume.
pub fn all(repo: &Repo) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    repo.meta().fs_for_each(FsTable::Versions, &[], |k, v| {
        out.push(decode(k, v)?);
        Ok::<(), FsError>(())
    })?;
    Ok(out)
}

/// Add a version of `ino` to `batch`, and the deletions retention asks for.
pub fn record(
    repo: &Repo,
    batch: &mut FsBatch,
    ino: Ino,
    time: Time,
    record: &VersionRecord,
    retention: &VersionsConfig,
) -> Result<()> {
    let mut value = vec![FORMAT_V1];
    value.extend(postcard::to_stdvec(record).unwrap_or_default());
    batch.put(FsTable::Versions, key(ino, time), value);
    let mut times: Vec<Time> = of_inode(repo, ino)?.into_iter().map(|v| v.time).collect();
    times.push(time);
    for expired in expired(&times, time, retention) {
        batch.delete(FsTable::Versions, key(ino, expired));
    }
    Ok(())
}

/// Apply retention to every version in the volume as of `now` (a file that no longer changes
/// is not pruned by commits). Versions of deleted files (`exists` says false) are kept for
/// `keep_daily_days` after they were made, then expire; `keep_last` protects only live files.
/// Adds the deletions to `batch` and returns how many.
pub fn expire_all(
    repo: &Repo,
    exists: impl Fn(Ino) -> bool,
    now: Time,
    retention: &VersionsConfig,
    batch: &mut FsBatch,
) -> Result<usize> {
    let mut by_inode: BTreeMap<Ino, Vec<Time>> = BTreeMap::new();
    for v in all(repo)? {
        by_inode.entry(v.ino).or_default().push(v.time);
    }
    let mut count = 0;
    for (ino, times) in by_inode {
        let drop: Vec<Time> = if exists(ino) {
            expired(&times, now, retention)
        } else {
            let max_age = i64::from(retention.keep_daily_days) * 86_400;
            times
                .into_iter()
                .filter(|t| now.secs - t.secs >= max_age)
                .collect()
        };
        for t in drop {
            batch.delete(FsTable::Versions, key(ino, t));
            count += 1;
        }
    }
    Ok(count)
}

/// Which of `times` retention drops, as of `now`.
pub fn expired(times: &[Time], now: Time, retention: &VersionsConfig) -> Vec<Time> {
    let mut newest_first: Vec<Time> = times.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    let today = now.secs.div_euclid(86_400);
    let mut days_kept = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, t) in newest_first.iter().enumerate() {
        if i < retention.keep_last as usize {
            days_kept.insert(t.secs.div_euclid(86_400));
            continue;
        }
        let day = t.secs.div_euclid(86_400);
        if today - day < i64::from(retention.keep_daily_days) && days_kept.insert(day) {
            continue;
        }
        out.push(*t);
    }
    out
}

/// `2026-11-26T10-59-58.123456789Z`: the name a version has under `.dfs/versions` (UTC, sortable,
/// no `:` so it is easy to type).
pub fn time_name(t: Time) -> String {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t.nsec
    )
}

/// A node of the `.dfs/versions` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionNode {
    /// A directory: child names.
    Dir(Vec<Vec<u8>>),
    /// One version of a file.
    File(Box<Version>),
}

/// The `.dfs/versions` tree as of when it was built: paths (relative, `/`-separated, the root is
/// empty) to nodes. A file path is a directory whose entries are its versions.
#[derive(Debug, Default)]
pub struct VersionTree {
    nodes: BTreeMap<Vec<u8>, VersionNode>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

impl VersionTree {
    pub fn build(versions: Vec<Version>) -> Self {
        let mut dirs: BTreeMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        dirs.entry(Vec::new()).or_default();
        for v in versions {
            let path: Vec<u8> = v
                .record
                .path
                .strip_prefix(b"/")
                .unwrap_or(&v.record.path)
                .to_vec();
            if path.is_empty() {
                continue;
            }
            // Every ancestor (and the file's own path) is a directory.
            let mut parent: Vec<u8> = Vec::new();
            for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
                dirs.entry(parent.clone())
                    .or_default()
                    .insert(part.to_vec());
                parent = join(&parent, part);
            }
            let name = time_name(v.time).into_bytes();
            dirs.entry(parent.clone()).or_default().insert(name.clone());
            nodes.insert(join(&parent, &name), VersionNode::File(Box::new(v)));
        }
        for (path, children) in dirs {
            nodes.insert(path, VersionNode::Dir(children.into_iter().collect()));
        }
        Self { nodes }
    }

    pub fn get(&self, path: &[u8]) -> Option<&VersionNode> {
        self.nodes.get(path)
    }

    pub fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
        join(dir, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time { secs, nsec: 0 }
    }

    #[test]
    fn time_names_are_utc_and_sortable() {
        assert_eq!(time_name(t(0)), "1970-01-01T00-00-00.000000000Z");
        assert_eq!(
            time_name(Time {
                secs: 1_795_690_798,
                nsec: 5
            }),
            "2026-11-26T10-59-58.000000005Z"
        );
        assert_eq!(time_name(t(951_782_400)), "2000-02-29T00-00-00.000000000Z");
    }

    #[test]
    fn retention_keeps_last_n_and_one_per_day() {
        let keep = VersionsConfig {
            keep_last: 2,
            keep_daily_days: 3,
        };
        let day = 86_400;
        let now = t(10 * day + 500);
        // Newest two kept; then one per day for days 9 and 8; day 7 is beyond 3 days.
        let times = [
            t(10 * day + 400),
            t(10 * day + 300),
            t(10 * day + 200),
            t(9 * day + 50),
            t(9 * day + 10),
            t(8 * day),
            t(7 * day),
        ];
        let mut gone = expired(&times, now, &keep);
        gone.sort();
        assert_eq!(gone, vec![t(7 * day), t(9 * day + 10), t(10 * day + 200)]);
    }

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        for secs in [-5, 0, 1_795_690_798] {
            let k = key(Ino(42), Time { secs, nsec: 7 });
            assert_eq!(parse_key(&k), Some((Ino(42), Time { secs, nsec: 7 })));
        }
        assert!(key(Ino(1), t(-1)) < key(Ino(1), t(0)));
    }
}
