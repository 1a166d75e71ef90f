//! Bad input gets one clear error line, a non-zero exit code, and loses nothing.

use std::fs;
use std::process::Command;

use dfs_tests::{dfs_bin, is_root, random_bytes, Dfs};

#[test]
fn missing_path_is_named_and_creates_nothing() {
    let dfs = Dfs::new();
    let missing = dfs.path("no-such-file");
    dfs.run(&["put", missing.to_str().unwrap()])
        .fails_with(&format!(
            "cannot read {}: No such file or directory",
            missing.display()
        ));
    assert!(
        !dfs.data().exists(),
        "a failed put must not create the data directory"
    );
}

#[test]
fn malformed_links_are_rejected() {
    let dfs = Dfs::new();
    for (link, needle) in [
        ("https://example.com", "must start with dfs://"),
        ("dfs://abcd", "'#<key>' part is missing"),
        ("dfs://xyz#abc", "bad root id"),
    ] {
        dfs.run(&["get", link]).fails_with(needle);
        dfs.run(&["verify", link]).fails_with(needle);
    }
}

#[test]
fn wrong_key_and_unknown_root_are_clear() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, b"some content").unwrap();
    let link = dfs.put(&f);
    let (root, _) = link.split_once('#').unwrap();
    let wrong = format!("{root}#{}", "ab".repeat(32));
    let out = dfs.path("out");
    dfs.run(&["get", &wrong, "-o", out.to_str().unwrap()])
        .fails_with("wrong key");
    assert!(!out.exists());
    let unknown = format!("dfs://{}#{}", "cd".repeat(32), "ab".repeat(32));
    dfs.run(&["get", &unknown, "-o", out.to_str().unwrap()])
        .fails_with("none of its shards is in the store");
    // The original link still works.
    dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
}

#[test]
fn unusable_data_directory_is_reported() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, b"x").unwrap();
    let not_dir = dfs.path("plain-file");
    fs::write(&not_dir, b"").unwrap();
    let run = Command::new(dfs_bin())
        .args([
            "--data",
            not_dir.to_str().unwrap(),
            "put",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("is not a directory"), "{stderr}");

    // A data directory under a plain file cannot be created.
    let below = not_dir.join("data");
    let run = Command::new(dfs_bin())
        .args(["--data", below.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("cannot be used"), "{stderr}");
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, random_bytes(1000, 1)).unwrap();
    dfs.put(&f);
    // Hold the lock the way a running dfs does.
    let lock = fs::File::options()
        .write(true)
        .open(dfs.data().join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    dfs.run(&["put", f.to_str().unwrap()])
        .fails_with("in use by another dfs process");
    drop(lock);
    dfs.put(&f);
}

#[test]
fn corrupt_config_and_secret_are_reported() {
    let dfs = Dfs::new();
    dfs.configure("[storage]\nparity_shards = 0\n");
    dfs.run(&["list"]).fails_with("parity shard");
    dfs.configure("[storage\n");
    dfs.run(&["list"]).fails_with("config.toml is not valid");
    dfs.configure("");
    dfs.run(&["list"]).ok();
    fs::write(dfs.data().join("volume.key"), b"short").unwrap();
    dfs.run(&["list"]).fails_with("volume secret");
}

#[test]
fn unknown_flags_and_help() {
    let dfs = Dfs::new();
    let run = dfs.run(&["put", "--bogus", "x"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: unexpected argument '--bogus'"),
        "{run:#?}"
    );
    let run = dfs.run(&["frobnicate"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{run:#?}"
    );
    let help = dfs.run(&["--help"]).ok();
    for cmd in [
        "put", "get", "verify", "list", "forget", "gc", "mount", "umount",
    ] {
        assert!(help.stdout.contains(cmd), "--help lists {cmd}: {help:#?}");
        let sub = dfs.run(&[cmd, "--help"]).ok();
        assert!(sub.stdout.contains("Usage: dfs"), "{sub:#?}");
    }
}

#[test]
fn a_data_directory_without_permission_is_reported() {
    if !is_root("switching to an unprivileged user") {
        return;
    }
    let dfs = Dfs::new();
    let f = dfs.path("f");
    fs::write(&f, b"x").unwrap();
    dfs.put(&f);
    // The data directory (inside a 0700 temp dir owned by root) as the unprivileged `nobody`.
    let run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dfs_bin())
        .args(["--data", dfs.data().to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The data directory holds volume secrets and root keys: dfs creates it 0700, tightens an empty
/// one made under the usual umask, and refuses one with content that others can read.
#[test]
fn a_data_directory_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let fresh = Dfs::new();
    let f = fresh.path("f");
    fs::write(&f, b"x").unwrap();
    fresh.put(&f);
    assert_eq!(mode(&fresh.data()), 0o700);

    let empty = Dfs::new();
    fs::create_dir(empty.data()).unwrap();
    fs::set_permissions(empty.data(), fs::Permissions::from_mode(0o755)).unwrap();
    empty.put(&f);
    assert_eq!(mode(&empty.data()), 0o700);

    fs::set_permissions(fresh.data(), fs::Permissions::from_mode(0o750)).unwrap();
    let run = fresh
        .run(&["list"])
        .fails_with("can be read by other users (mode 750)");
    assert!(run.stderr.contains("chmod 700"), "{run:#?}");
    assert_eq!(
        mode(&fresh.data()),
        0o750,
        "dfs changed a directory it refused"
    );
}
