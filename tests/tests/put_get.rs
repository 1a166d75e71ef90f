//! `dfs put` / `dfs get` round trips through the real binary: files of every awkward size,
//! directory trees with modes, mtimes and symlinks, dedup, stdout output, destinations.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use dfs_tests::{random_bytes, Dfs};

/// Small chunks and a small tree fanout so every size class and multi-level trees are exercised
/// with little data.
const SMALL: &str = "[storage]\nchunk_size = 65536\nreplicate_below = 4096\ntree_fanout = 3\n";

fn round_trip(dfs: &Dfs, bytes: &[u8], name: &str) {
    let src = dfs.path(name);
    fs::write(&src, bytes).unwrap();
    let link = dfs.put(&src);
    let out = dfs.path(&format!("{name}.out"));
    dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
    assert!(
        fs::read(&out).unwrap() == bytes,
        "{name}: restored bytes differ"
    );
    fs::remove_file(out).unwrap();
}

#[test]
fn files_of_every_size_class_round_trip() {
    let dfs = Dfs::new();
    dfs.configure(SMALL);
    let c = 65536;
    // 0, 1, around the replication threshold, chunk boundaries, and enough chunks for a tree of
    // height 3 (fanout 3: 28 chunks need 3 levels of interior nodes).
    for (i, len) in [
        0,
        1,
        4095,
        4096,
        c - 1,
        c,
        c + 1,
        2 * c,
        3 * c + 1,
        28 * c + 17,
    ]
    .into_iter()
    .enumerate()
    {
        round_trip(&dfs, &random_bytes(len, i as u64), &format!("f{len}"));
    }
}

#[test]
fn default_settings_round_trip_a_multi_chunk_file() {
    let dfs = Dfs::new();
    round_trip(&dfs, &random_bytes(9 << 20 | 12345, 7), "big.bin");
}

fn assert_same_tree(a: &Path, b: &Path) {
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = fs::symlink_metadata(b).unwrap();
    assert_eq!(ma.file_type(), mb.file_type(), "{}", b.display());
    if ma.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
    } else {
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            b.display()
        );
    }
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {}",
        b.display()
    );
    if ma.is_file() {
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "content of {}",
            b.display()
        );
    }
    if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {}", b.display());
        for n in na {
            assert_same_tree(&a.join(&n), &b.join(&n));
        }
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, 123_456_789);
    let f = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t)).unwrap();
}

#[test]
fn directory_tree_round_trips_with_modes_mtimes_and_symlinks() {
    let dfs = Dfs::new();
    dfs.configure(SMALL);
    let src = dfs.path("tree");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("a/small.txt"), b"hello\n").unwrap();
    fs::write(src.join("a/b/big.bin"), random_bytes(300_000, 1)).unwrap();
    fs::write(src.join("a/b/c/empty"), b"").unwrap();
    fs::write(src.join("héllo wörld ✓.txt"), b"unicode name").unwrap();
    fs::write(src.join("dup1"), random_bytes(100_000, 9)).unwrap();
    fs::write(src.join("dup2"), random_bytes(100_000, 9)).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe");
        fs::write(src.join(raw), b"raw name").unwrap();
    }
    std::os::unix::fs::symlink("a/small.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::set_permissions(src.join("a/small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("a/b/big.bin"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    for (i, f) in ["a/small.txt", "a/b/big.bin", "a/b/c/empty", "dup1"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(f), 1_000_000_000 + i as i64);
    }
    for d in ["a/b/c", "a/b", "a", "empty", ""] {
        set_mtime(&src.join(d), 1_500_000_000);
    }

    let link = dfs.put(&src);
    // Restoring into an existing directory puts the tree under its own name.
    let into = dfs.path("restore");
    fs::create_dir(&into).unwrap();
    dfs.run(&["get", &link, "-o", into.to_str().unwrap()]).ok();
    assert_same_tree(&src, &into.join("tree"));
    // Restoring to a new path uses that path.
    let renamed = dfs.path("renamed");
    dfs.run(&["get", &link, "-o", renamed.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &renamed);
    // A directory cannot go to stdout.
    dfs.run(&["get", &link, "-o", "-"])
        .fails_with("points to a directory");
    // verify sees every chunk healthy.
    let run = dfs.run(&["verify", &link]).ok();
    assert!(run.stdout.contains(" 0 damaged"), "{run:#?}");
}

#[test]
fn equal_content_is_stored_once() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, random_bytes(5 << 20, 3)).unwrap();
    let first = dfs.put(&f);
    let shards = dfs.shard_files();
    let copy = dfs.path("copy");
    fs::copy(&f, &copy).unwrap();
    dfs.put(&copy);
    let after = dfs.shard_files();
    // Only the root entry (which holds the different name) is new.
    assert!(
        after.len() <= shards.len() + 3,
        "{} -> {}",
        shards.len(),
        after.len()
    );
    assert_eq!(
        dfs.put(&f),
        first,
        "same path and content give the same link"
    );
}

#[test]
fn get_to_stdout_and_destination_rules() {
    let dfs = Dfs::new();
    let f = dfs.path("data.bin");
    let bytes = random_bytes(200_000, 4);
    fs::write(&f, &bytes).unwrap();
    let link = dfs.put(&f);
    let out = dfs.command(&["get", &link, "-o", "-"]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == bytes);

    let dest = dfs.path("exists");
    fs::write(&dest, b"keep me").unwrap();
    dfs.run(&["get", &link, "-o", dest.to_str().unwrap()])
        .fails_with("already exists");
    assert_eq!(fs::read(&dest).unwrap(), b"keep me");
    dfs.run(&["get", &link, "-o", dest.to_str().unwrap(), "--force"])
        .ok();
    assert!(fs::read(&dest).unwrap() == bytes);

    // Without -o, the stored name in the current directory.
    let cwd = dfs.path("cwd");
    fs::create_dir(&cwd).unwrap();
    let status = dfs
        .command(&["get", &link])
        .current_dir(&cwd)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(fs::read(cwd.join("data.bin")).unwrap() == bytes);
}

#[test]
fn list_forget_and_gc_reclaim_space() {
    let dfs = Dfs::new();
    let (a, b) = (dfs.path("a"), dfs.path("b"));
    fs::write(&a, random_bytes(3 << 20, 10)).unwrap();
    fs::write(&b, random_bytes(3 << 20, 11)).unwrap();
    let la = dfs.put(&a);
    let only_a = dfs.shard_files();
    let lb = dfs.put(&b);
    let list = dfs.run(&["list"]).ok();
    assert!(
        list.stdout.contains(&la) && list.stdout.contains(&lb),
        "{list:#?}"
    );
    dfs.run(&["forget", &lb]).ok();
    dfs.run(&["gc"]).ok();
    assert_eq!(
        dfs.shard_files(),
        only_a,
        "gc must remove exactly b's shards"
    );
    let out = dfs.path("a.out");
    dfs.run(&["get", &la, "-o", out.to_str().unwrap()]).ok();
    assert!(fs::read(out).unwrap() == fs::read(&a).unwrap());
    dfs.run(&["forget", &lb]).fails_with("no stored put");
}

#[test]
fn erasure_coding_is_configurable_per_put() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, random_bytes(1 << 20, 12)).unwrap();
    let run = dfs.run(&["put", "--ec", "8+3", f.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("8+3"), "{run:#?}");
    let max_index = dfs.shard_files().iter().map(|s| s.2).max().unwrap();
    assert_eq!(max_index, 10, "8+3 makes shards 0..=10");
    let link = run.last_line().to_string();
    let out = dfs.path("out");
    dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
    assert!(fs::read(out).unwrap() == fs::read(&f).unwrap());
    dfs.run(&["put", "--ec", "0+2", f.to_str().unwrap()])
        .fails_with_usage("--ec");
}

trait UsageError {
    fn fails_with_usage(self, needle: &str);
}

impl UsageError for dfs_tests::Run {
    fn fails_with_usage(self, needle: &str) {
        assert_eq!(self.code, Some(2), "{self:#?}");
        assert!(
            self.stderr
                .lines()
                .next()
                .unwrap_or("")
                .starts_with("error:"),
            "{self:#?}"
        );
        assert!(self.stderr.contains(needle), "{self:#?}");
    }
}

#[test]
fn a_put_never_stores_the_data_directory_itself() {
    let dfs = Dfs::new();
    let tree = dfs.dir.path();
    fs::write(dfs.path("note.txt"), b"next to the store").unwrap();
    // The data directory lives inside the tree being stored.
    let run = dfs.run(&["put", tree.to_str().unwrap()]).ok();
    assert!(run.stderr.contains("skipped"), "{run:#?}");
    let link = run.last_line().to_string();
    let out = dfs.path("out");
    dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
    assert_eq!(
        fs::read(out.join("note.txt")).unwrap(),
        b"next to the store"
    );
    assert!(
        !out.join("data").exists(),
        "the store must not be stored in itself"
    );
}
