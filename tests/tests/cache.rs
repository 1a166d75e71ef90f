//! `dfs cache stats` and `dfs cache prune` on a disk cache laid out by hand
//! (`DATA/cache/<2 hex>/<64 hex>`), with and without a peer holding the data directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dfs_tests::{create_data_dir, random_bytes, Dfs};

/// Write a cache entry of `len` random bytes with the given mtime (seconds after the epoch);
/// returns its path.
fn cache_entry(dfs: &Dfs, seed: u64, len: usize, mtime: u64) -> PathBuf {
    let data = random_bytes(len, seed);
    let hex = blake3::hash(&data).to_hex().to_string();
    let dir = dfs.data().join("cache").join(&hex[..2]);
    create_data_dir(&dfs.data());
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(&hex);
    fs::write(&path, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
        .unwrap();
    path
}

fn stats_json(dfs: &Dfs) -> serde_json::Value {
    let run = dfs.run(&["cache", "stats", "--json"]).ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
}

fn existing(paths: &[PathBuf]) -> Vec<bool> {
    paths.iter().map(|p| Path::exists(p)).collect()
}

#[test]
fn stats_and_prune_oldest_first() {
    let dfs = Dfs::new();
    dfs.configure("[cache]\ndisk_bytes = 10485760\n");
    // Sizes 1000..=5000 bytes, oldest first.
    let entries: Vec<PathBuf> = (0..5u64)
        .map(|i| cache_entry(&dfs, i, 1000 * (i as usize + 1), 1_700_000_000 + i))
        .collect();
    // Neither a temporary file nor a stray file counts.
    fs::create_dir_all(dfs.data().join("cache/tmp")).unwrap();
    fs::write(dfs.data().join("cache/tmp/partial"), [0u8; 777]).unwrap();
    fs::write(dfs.data().join("cache/notes.txt"), b"hello").unwrap();

    let cache = dfs.data().join("cache");
    let stats = stats_json(&dfs);
    assert_eq!(stats["path"], cache.to_str().unwrap());
    assert_eq!(stats["entries"], 5);
    assert_eq!(stats["bytes"], 15_000);
    assert_eq!(stats["limit"], 10 << 20);
    let run = dfs.run(&["cache", "stats"]).ok();
    assert_eq!(
        run.stdout.trim(),
        format!(
            "disk cache {}: 5 chunks, 14.6 KiB of 10.0 MiB limit",
            cache.display()
        )
    );

    // Down to 9000 bytes: the three oldest (1000 + 2000 + 3000 bytes) go.
    let run = dfs.run(&["cache", "prune", "--keep", "9000"]).ok();
    assert_eq!(run.stdout.trim(), "removed 3 chunks, freed 5.9 KiB");
    assert_eq!(existing(&entries), [false, false, false, true, true]);
    assert_eq!(stats_json(&dfs)["bytes"], 9000);
    // Already under 1M: nothing to do.
    let run = dfs.run(&["cache", "prune", "--keep", "1M"]).ok();
    assert_eq!(run.stdout.trim(), "removed 0 chunks, freed 0 B");
    // With a suffix: 1K keeps nothing here.
    let run = dfs.run(&["cache", "prune", "--keep", "1K"]).ok();
    assert_eq!(run.stdout.trim(), "removed 2 chunks, freed 8.8 KiB");
    let stats = stats_json(&dfs);
    assert_eq!(
        (stats["entries"].as_u64(), stats["bytes"].as_u64()),
        (Some(0), Some(0))
    );
    // Without --keep: everything (nothing left here).
    entries.iter().for_each(|p| assert!(!p.exists()));
    cache_entry(&dfs, 9, 100, 1_700_000_000);
    let run = dfs.run(&["cache", "prune"]).ok();
    assert_eq!(run.stdout.trim(), "removed 1 chunks, freed 100 B");
    // Stray files are left alone.
    assert!(dfs.data().join("cache/notes.txt").exists());
    assert!(dfs.data().join("cache/tmp/partial").exists());
}

#[test]
fn default_limit_and_absent_cache() {
    let dfs = Dfs::new();
    let run = dfs.run(&["cache", "stats"]).ok();
    assert!(
        run.stdout.contains(": 0 chunks, 0 B of 1.0 GiB limit"),
        "{run:#?}"
    );
    dfs.run(&["cache", "prune"]).ok();
    assert!(
        !dfs.data().exists(),
        "cache commands must not create the data directory"
    );
    dfs.configure("[cache]\ndisk_bytes = 0\n");
    let run = dfs.run(&["cache", "stats"]).ok();
    assert!(run.stdout.contains("disabled"), "{run:#?}");
}

#[test]
fn works_while_a_peer_holds_the_data_directory() {
    let dfs = Dfs::new();
    let entry = cache_entry(&dfs, 1, 4096, 1_700_000_000);
    let _peer = dfs.node(&[]);
    assert_eq!(stats_json(&dfs)["entries"], 1);
    let run = dfs.run(&["cache", "prune", "--keep", "0"]).ok();
    assert_eq!(run.stdout.trim(), "removed 1 chunks, freed 4.0 KiB");
    assert!(!entry.exists());
}

#[test]
fn bad_input_is_reported_clearly() {
    let dfs = Dfs::new();
    // Usage errors (clap): exit status 2, and they say what is wrong.
    for (args, says) in [
        (
            &["cache", "prune", "--keep", "12Q"][..],
            "unknown size unit",
        ),
        (
            &["cache", "prune", "--keep", "lots"][..],
            "expected a size like",
        ),
        (
            &["cache", "stats", "--bogus"][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["cache", "frobnicate"][..],
            "unrecognized subcommand 'frobnicate'",
        ),
        (&["cache"][..], "Usage: dfs cache [OPTIONS] <COMMAND>"),
    ] {
        let run = dfs.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:#?}");
    }
    // Failures: one `dfs: error:` line.
    dfs.configure("[cache]\ndisk_bytes = 1000\n");
    dfs.run(&["cache", "stats"]).fails_with("cache.disk_bytes");
    dfs.configure("");
    fs::write(dfs.data().join("cache"), b"not a directory").unwrap();
    dfs.run(&["cache", "stats"])
        .fails_with("cannot read the disk cache");
    dfs.run(&["cache", "prune"])
        .fails_with("cannot prune the disk cache");
}
