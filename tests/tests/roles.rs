//! Roles in a shared volume through real mounts and the CLI: three members, each a process
//! with its own FUSE mount of volume `team`, and a storage peer that is no member.
//!
//! - The owner makes a member a reader while that member is partitioned and writing: once
//!   they meet again, the reader's offline write is rejected on every member (its own mount
//!   drops it too), while a writer's concurrent write stands; all three trees are the same,
//!   and every member's `dfs volume log` shows the rejected op and why.
//! - A reader's mount is read-only (EROFS for create, write, mkdir), yet reads everything.
//! - A member who is not the owner or an admin cannot change roles (exit status 2, nothing
//!   changes); unknown members and roles are bad input.
//! - A removed member's writes are refused (EACCES) and rejected everywhere, and what others
//!   write after its removal is sealed under a key epoch it never gets: its mount never shows
//!   it. A member let back in as a writer by the owner writes again, on every member.

use std::path::Path;
use std::time::Duration;

use dfs_tests::{fuse_available, wait_for, Dfs, SharedNetwork};

/// `dfs volume members team --json` on `dfs`'s peer.
fn members(dfs: &Dfs) -> Vec<serde_json::Value> {
    let run = dfs.run(&["volume", "members", "team", "--json"]).ok();
    serde_json::from_str(&run.stdout).expect("members JSON")
}

/// The key (hex) of the member that `dfs`'s peer is.
fn own_key(dfs: &Dfs) -> String {
    members(dfs)
        .into_iter()
        .find(|m| m["you"] == true)
        .and_then(|m| m["id"].as_str().map(String::from))
        .expect("the peer is a member")
}

/// Wait until `dfs`'s peer sees `member` as `role`.
fn wait_role(dfs: &Dfs, member: &str, role: &str) {
    wait_for(
        Duration::from_secs(20),
        &format!("{member:.8} to be {role}"),
        || {
            members(dfs)
                .iter()
                .any(|m| m["id"] == member && m["role"] == role)
                .then_some(())
        },
    );
}

/// The names in a mounted directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Wait until every mount of `net` lists exactly `want` at its root.
fn wait_everywhere(net: &SharedNetwork, want: &[&str]) {
    for i in 0..net.members.len() {
        let path = net.path(i);
        wait_for(
            Duration::from_secs(20),
            &format!("member {i} to list {want:?}"),
            || (names(&path) == want).then_some(()),
        );
    }
}

/// The rejected ops of `dfs volume log team --json`: (op kind, user-facing detail, reason).
fn rejected(dfs: &Dfs) -> Vec<(String, String, String)> {
    let run = dfs
        .run(&["volume", "log", "team", "--json", "--limit", "1000"])
        .ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("log JSON");
    rows.iter()
        .filter_map(|r| {
            Some((
                r["op"].as_str()?.to_string(),
                r["detail"].as_str()?.to_string(),
                r["rejected"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn roles_decide_what_counts_on_every_member() {
    if !fuse_available() {
        return;
    }
    let mut net = SharedNetwork::start(3);
    let (key_writer, key_reader) = (own_key(&net.members[1]), own_key(&net.members[2]));
    let roles: Vec<String> = members(&net.members[0])
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("?").to_string())
        .collect();
    let mut sorted = roles.clone();
    sorted.sort();
    assert_eq!(sorted, ["owner", "writer", "writer"], "{roles:?}");
    std::fs::write(net.path(2).join("before.txt"), b"written as a writer").expect("write");
    wait_everywhere(&net, &["before.txt"]);

    // Member 2 goes off alone and writes; meanwhile the owner makes it a reader (having seen
    // before.txt only) and member 1 writes.
    net.remount(2, false);
    std::fs::write(net.path(2).join("offline.txt"), b"written unseen").expect("offline write");
    let (owner, writer) = (&net.members[0], &net.members[1]);
    // Bad input first: nothing changes.
    owner
        .run(&["volume", "role", "team", "nobody-at-all", "reader"])
        .bad_input("no member");
    let unknown = owner.run(&["volume", "role", "team", &key_reader, "superuser"]);
    assert_eq!(unknown.code, Some(2), "{unknown:#?}");
    assert!(unknown.stderr.contains("unknown role"), "{unknown:#?}");
    writer
        .run(&["volume", "role", "team", &key_reader, "reader"])
        .bad_input("only the volume's owner and admins");
    let said = owner
        .run(&["volume", "role", "team", &key_reader[..12], "reader"])
        .ok();
    assert!(said.stdout.contains("is now reader"), "{said:#?}");
    std::fs::write(net.path(1).join("concurrent.txt"), b"a writer's").expect("write");
    wait_role(writer, &key_reader, "reader");

    // They meet again: the reader's offline write is rejected everywhere, its own mount
    // included; the writer's stands.
    net.remount(2, true);
    let reader = &net.members[2];
    wait_role(reader, &key_reader, "reader");
    wait_everywhere(&net, &["before.txt", "concurrent.txt"]);
    for member in &net.members {
        // The create and the write of offline.txt (the reader's ops reach the others in their
        // own time: wait for them).
        let log = wait_for(
            Duration::from_secs(30),
            "the reader's offline ops in every member's log",
            || {
                let log = rejected(member);
                (log.len() >= 2).then_some(log)
            },
        );
        let ops: Vec<&str> = log.iter().map(|(op, ..)| op.as_str()).collect();
        assert_eq!(ops, ["create", "write"], "{log:#?}");
        for (_, detail, why) in &log {
            assert!(
                detail.contains("offline.txt") && why.contains("reader"),
                "{log:#?}"
            );
        }
    }
    let text = net.members[0].run(&["volume", "log", "team"]).ok().stdout;
    assert!(text.contains("rejected: its author is a reader"), "{text}");

    // A reader's mount is read-only, and reads everything.
    let mnt = net.path(2);
    assert_eq!(
        errno_of(std::fs::write(mnt.join("new.txt"), b"x")),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno_of(std::fs::write(mnt.join("before.txt"), b"x")),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno_of(std::fs::create_dir(mnt.join("dir"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        std::fs::read(mnt.join("concurrent.txt")).expect("read as a reader"),
        b"a writer's"
    );

    // Removed: refused at the mount, and the owner's own view never shows the attempt.
    net.members[0]
        .run(&["volume", "remove", "team", &key_writer])
        .ok();
    wait_role(&net.members[1], &key_writer, "removed");
    assert_eq!(
        errno_of(std::fs::write(net.path(1).join("removed.txt"), b"x")),
        Some(libc::EACCES)
    );
    let volumes = net.members[0].volumes();
    assert_eq!(volumes[0].members, 2, "{volumes:?}");
    // What is written after the removal is sealed under a new key epoch, which the removed
    // member never got: it does not show in its mount, and its log cannot open it.
    std::fs::write(net.path(0).join("after-removal.txt"), b"not for member 1").expect("write");
    let reader_copy = net.path(2).join("after-removal.txt");
    wait_for(
        Duration::from_secs(20),
        "after-removal.txt at member 2",
        || (std::fs::read(&reader_copy).ok()? == b"not for member 1").then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !names(&net.path(1)).contains(&"after-removal.txt".to_string()),
        "the removed member reads what was written after it left"
    );
    let removed_log = net.members[1]
        .run(&["volume", "log", "team", "--limit", "1000"])
        .ok()
        .stdout;
    assert!(!removed_log.contains("after-removal.txt"), "{removed_log}");
    // The members who stay read the history from before and after alike.
    let owner_log = net.members[0]
        .run(&["volume", "log", "team", "--limit", "1000"])
        .ok()
        .stdout;
    assert!(
        owner_log.contains("after-removal.txt") && owner_log.contains("before.txt"),
        "{owner_log}"
    );

    // Let back in as a writer: its new writes count again, on every member.
    net.members[0]
        .run(&["volume", "role", "team", &key_reader, "writer"])
        .ok();
    wait_role(&net.members[2], &key_reader, "writer");
    std::fs::write(net.path(2).join("after.txt"), b"a writer again").expect("write");
    for i in [0, 2] {
        let path = net.path(i).join("after.txt");
        wait_for(Duration::from_secs(20), "after.txt", || {
            (std::fs::read(&path).ok()? == b"a writer again").then_some(())
        });
    }
}
