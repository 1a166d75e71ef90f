//! Crashes and full disks: a `dfs put` killed with SIGKILL leaves nothing visible and no space
//! leaked after the next start; a put or get that fills the disk fails clearly and loses nothing.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dfs_tests::{is_root, random_bytes, Dfs};

#[test]
fn kill_9_during_put_leaves_nothing_visible_and_no_leaked_space() {
    let dfs = Dfs::new();
    let keep = dfs.path("keep");
    fs::write(&keep, random_bytes(3 << 20, 1)).unwrap();
    let keep_link = dfs.put(&keep);
    let before = dfs.shard_files();

    let big = dfs.path("big");
    {
        use std::io::Write;
        let mut f = fs::File::create(&big).unwrap();
        for i in 0..32 {
            f.write_all(&random_bytes(16 << 20, 100 + i)).unwrap();
        }
    }
    let mut child = dfs
        .command(&["put", big.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dfs.shard_files().len() < before.len() + 30 {
        assert!(Instant::now() < deadline, "put made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "put finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "put must die by SIGKILL, not finish"
    );
    assert!(
        dfs.shard_files().len() > before.len(),
        "the crash left shards behind to clean"
    );

    // The next start cleans up, and the interrupted put is not listed.
    let list = dfs.run(&["list"]).ok();
    assert!(
        list.stderr.contains("cleaned up after an interrupted put"),
        "{list:#?}"
    );
    assert!(!list.stdout.contains("big"), "{list:#?}");
    assert_eq!(dfs.shard_files(), before, "space leaked");
    let tmp: Vec<_> = fs::read_dir(dfs.data().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    let gc = dfs.run(&["gc"]).ok();
    assert!(gc.stdout.contains("removed 0 chunks"), "{gc:#?}");

    let out = dfs.path("out");
    dfs.run(&["get", &keep_link, "-o", out.to_str().unwrap()])
        .ok();
    assert!(fs::read(out).unwrap() == fs::read(&keep).unwrap());
    // And the same file can be stored completely now.
    dfs.put(&big);
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop. Needs root (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        if !is_root("mounting a tmpfs") {
            return None;
        }
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_during_put_fails_clearly_and_loses_nothing() {
    let dfs = Dfs::new();
    let Some(_disk) = Tmpfs::mount(&dfs.data(), "16m") else {
        return;
    };
    let small = dfs.path("small");
    fs::write(&small, random_bytes(200_000, 2)).unwrap();
    let link = dfs.put(&small);
    let before = dfs.shard_files();

    let big = dfs.path("big");
    fs::write(&big, random_bytes(40 << 20, 3)).unwrap();
    let run = dfs.run(&["put", big.to_str().unwrap()]);
    let run = run.fails_with("No space left on device");
    assert!(
        run.stderr.contains("disk full; nothing was stored"),
        "{run:#?}"
    );
    assert_eq!(
        dfs.shard_files(),
        before,
        "the failed put must not leak space"
    );

    let out = dfs.path("out");
    dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
    assert!(fs::read(&out).unwrap() == fs::read(&small).unwrap());
    dfs.run(&["verify", &link]).ok();
    // Space is usable again for something that fits.
    let medium = dfs.path("medium");
    fs::write(&medium, random_bytes(2 << 20, 4)).unwrap();
    dfs.put(&medium);
}

#[test]
fn full_disk_during_get_leaves_no_partial_output() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, random_bytes(8 << 20, 5)).unwrap();
    let link = dfs.put(&f);
    let target = dfs.path("tiny");
    let Some(_disk) = Tmpfs::mount(&target, "2m") else {
        return;
    };
    let run = dfs.run(&["get", &link, "-o", target.to_str().unwrap()]);
    let run = run.fails_with("No space left on device");
    assert!(run.stderr.contains("nothing was written"), "{run:#?}");
    let left: Vec<_> = fs::read_dir(&target).unwrap().collect();
    assert!(left.is_empty(), "partial output left: {left:?}");
}
