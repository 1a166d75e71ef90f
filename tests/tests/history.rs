//! `dfs log PATH` through real mounts of a shared volume: changes made in member 0's mount
//! (create, two writes, chmod, rename, a symlink) show in `dfs log` on member 1, oldest first
//! and signed by member 0, for the file, its directory and the symlink; `dfs volume log` names
//! the same ops; paths outside a shared mount, and missing ones, fail with one clear line.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dfs_tests::{fuse_available, wait_for, SharedNetwork};

#[derive(Debug, serde::Deserialize)]
struct Line {
    time: String,
    millis: u64,
    author: String,
    seq: u64,
    op: String,
    detail: String,
    version: String,
}

/// Check that each of `needles` matches the detail of a line of `lines`, in this order;
/// panics if one is missing or out of order.
fn in_order(lines: &[Line], needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        let at = lines[from..]
            .iter()
            .position(|l| l.detail.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} after line {from} in {lines:#?}"));
        from += at + 1;
    }
}

#[test]
fn the_log_of_a_path_shows_who_changed_it_and_how() {
    if !fuse_available() {
        return;
    }
    let net = SharedNetwork::start(2);
    let (a, b) = (net.path(0), net.path(1));

    std::fs::create_dir(a.join("docs")).expect("mkdir");
    std::fs::write(a.join("docs/a.txt"), b"first").expect("first write");
    std::fs::write(a.join("docs/a.txt"), b"second version").expect("second write");
    std::fs::set_permissions(a.join("docs/a.txt"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::fs::rename(a.join("docs/a.txt"), a.join("docs/b.txt")).expect("rename");
    std::os::unix::fs::symlink("b.txt", a.join("docs/ln")).expect("symlink");

    let file = b.join("docs/b.txt");
    wait_for(Duration::from_secs(30), "member 1 sees the file", || {
        let meta = std::fs::metadata(&file).ok()?;
        let content = std::fs::read(&file).ok()?;
        let link = std::fs::read_link(b.join("docs/ln")).ok()?;
        (meta.permissions().mode() & 0o7777 == 0o600
            && content == b"second version"
            && link.as_os_str() == "b.txt")
            .then_some(())
    });

    // Member 0 made the volume (the genesis op) and every change.
    let log = net.members[0]
        .run(&["volume", "log", "team", "--json", "--limit", "1000000"])
        .ok();
    let log: Vec<serde_json::Value> = serde_json::from_str(&log.stdout).expect("log JSON");
    let author0 = log
        .iter()
        .find(|e| e["kind"] == "genesis")
        .and_then(|e| e["author"].as_str())
        .expect("a genesis op")
        .to_string();

    let member1 = &net.members[1];
    let file_arg = file.to_str().expect("utf-8 path");
    let run = member1.run(&["log", file_arg, "--json"]).ok();
    let lines: Vec<Line> = serde_json::from_str(&run.stdout).expect("dfs log JSON");
    eprintln!("{}", member1.run(&["log", file_arg]).ok().stdout);
    in_order(
        &lines,
        &[
            "create file \"a.txt\" in /docs",
            "write 5 bytes",
            "write 14 bytes (replacing ",
            "chmod 600",
            "rename to \"b.txt\" in /docs (was /docs/a.txt)",
        ],
    );
    for l in &lines {
        assert_eq!(l.author, author0, "{l:?}");
        assert!(l.version.contains(&format!("@{}#{}", &author0[..8], l.seq)));
        assert!(l.version.starts_with(&format!("{}.", l.millis)), "{l:?}");
        assert!(l.time.ends_with('Z'), "{l:?}");
        assert!(!l.op.is_empty(), "{l:?}");
    }
    assert!(
        lines.windows(2).all(|w| w[0].millis <= w[1].millis),
        "oldest first: {lines:#?}"
    );
    // The second write cites the first as the version it replaced.
    let first = lines
        .iter()
        .find(|l| l.detail.contains("write 5 bytes"))
        .expect("first write");
    assert!(
        lines
            .iter()
            .any(|l| l.detail.contains(&format!("replacing {}", first.version))),
        "{lines:#?}"
    );
    let text = member1.run(&["log", file_arg, "--limit", "1"]).ok().stdout;
    assert_eq!(
        text.lines().count(),
        2,
        "a header and the newest op: {text}"
    );
    assert!(text.contains("rename to \"b.txt\""), "{text}");
    assert!(text.contains(&author0[..8]), "{text}");

    // The directory's history holds its entries' creation.
    let dir = b.join("docs");
    let run = member1
        .run(&["log", dir.to_str().expect("utf-8 path"), "--json"])
        .ok();
    let lines: Vec<Line> = serde_json::from_str(&run.stdout).expect("dfs log JSON");
    in_order(
        &lines,
        &[
            "create directory \"docs\" in /",
            "create file \"a.txt\" in /docs",
            "rename /docs/a.txt to \"b.txt\" in /docs",
            "create symlink \"ln\" in /docs -> \"b.txt\"",
        ],
    );
    assert!(
        !lines.iter().any(|l| l.op == "write"),
        "an entry's writes are its own business: {lines:#?}"
    );

    // A symlink is found by name in its directory.
    let link = b.join("docs/ln");
    let text = member1
        .run(&["log", link.to_str().expect("utf-8 path")])
        .ok()
        .stdout;
    assert!(text.contains("create symlink \"ln\" in /docs"), "{text}");

    // `dfs volume log` names the ops too.
    let text = member1
        .run(&["volume", "log", "team", "--limit", "1000000"])
        .ok()
        .stdout;
    assert!(text.contains("create directory \"docs\" in /"), "{text}");
    assert!(text.contains("chmod 600 on /docs/a.txt"), "{text}");

    let outside = member1.dir.path().to_str().expect("utf-8 path").to_string();
    member1
        .run(&["log", &outside])
        .fails_with("is not in a mounted shared volume");
    let missing = b.join("docs/nope");
    member1
        .run(&["log", missing.to_str().expect("utf-8 path")])
        .fails_with("no such file or directory");
}
