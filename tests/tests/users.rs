//! Users through the real CLI and mounts: people with their own keys, apart from the peers'.
//!
//! - `dfs user create/list/export/import`: a user made on one data directory and imported on
//!   another is the same key there; wrong passphrases, unknown users and damaged exports get
//!   one clear line and exit status 2, changing nothing.
//! - `dfs login` on a running mount: the ops of the caller's uid are signed by its user as well
//!   as the peer, and the volume's members are users: Alice creates volume `team` and invites
//!   Bob, each from their own peer; every op in `dfs volume log` names the user who made it.
//! - `dfs profile set/show`: Alice's display name, set on her peer, reaches Bob's and names her
//!   ops in his `dfs volume log`; names and preferences over the limits are refused.
//! - Several devices: Alice's key exported and imported on a third peer joins as her; she
//!   stays one member with two devices.
//! - Two users on one peer: root acts as Alice and uid 65534 as Carol in the same mount.
//! - Password-protected links: `dfs put --password` prints a link whose key is sealed under the
//!   password; `dfs get` opens it with the password only.
//! - A uid nobody logged in for cannot change the volume (EACCES), and after `dfs logout`
//!   neither can the uid that was: the peer alone is no member.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use dfs_tests::{fuse_available, wait_for, Dfs, Run};

/// Run `dfs` on `dfs`'s data directory with `value` in the environment variable `var`.
fn with_env(dfs: &Dfs, var: &str, value: &str, args: &[&str]) -> Run {
    dfs.run_with_env(var, value, args)
}

/// Run `dfs` with `passphrase` in `DFS_PASSPHRASE`.
fn with_passphrase(dfs: &Dfs, passphrase: &str, args: &[&str]) -> Run {
    dfs.run_with_passphrase(passphrase, args)
}

fn create_user(dfs: &Dfs, name: &str, passphrase: &str) -> String {
    dfs.create_user(name, passphrase)
}

/// A bad-input failure: exit status 2 and one `dfs: error` line naming `needle`.
fn bad_input(run: Run, needle: &str) -> Run {
    run.bad_input(needle)
}

#[test]
fn users_are_made_exported_imported_and_checked_offline() {
    let a = Dfs::new();
    let b = Dfs::new();
    let alice = create_user(&a, "alice", "correct horse");
    assert_eq!(alice.len(), 64);
    // The file is sealed: neither the key's secret nor the passphrase is in it.
    let file = std::fs::read_to_string(a.data().join("users/alice.user")).unwrap();
    assert!(file.starts_with("dfs-user1:"));
    assert!(!file.contains("correct horse"));
    let mode = std::fs::metadata(a.data().join("users/alice.user"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let list = a.run(&["user", "list", "--json"]).ok();
    let users: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["id"], alice.as_str());

    // Export from a, import on b: the same user there.
    let export = a.run(&["user", "export", "alice"]).ok().stdout;
    let exported = b.path("alice.export");
    std::fs::write(&exported, &export).unwrap();
    let import = b.run(&["user", "import", exported.to_str().unwrap()]).ok();
    assert!(import.stdout.contains(&alice), "{import:#?}");
    bad_input(
        b.run(&["user", "import", exported.to_str().unwrap()]),
        "exists already",
    );
    b.run(&["user", "import", exported.to_str().unwrap(), "--replace"])
        .ok();

    // Bad input: one line, exit status 2, nothing changed.
    bad_input(
        with_passphrase(&a, "pw", &["user", "create", "alice", "--kdf-memory", "8"]),
        "exists already",
    );
    bad_input(
        with_passphrase(&a, "pw", &["user", "create", "../evil"]),
        "bad user name",
    );
    bad_input(
        with_passphrase(&a, "pw", &["user", "create", "weak", "--kdf-memory", "1"]),
        "memory",
    );
    bad_input(a.run(&["user", "export", "nobody"]), "no user \"nobody\"");
    let damaged = b.path("damaged.export");
    let mut text = export.trim().to_string();
    text.truncate(text.len() - 6);
    std::fs::write(&damaged, text).unwrap();
    bad_input(
        b.run(&["user", "import", damaged.to_str().unwrap()]),
        "not a sealed dfs user",
    );
    bad_input(
        with_passphrase(&a, "", &["user", "create", "empty"]),
        "passphrase is empty",
    );
    // No passphrase at all and no terminal: said so, not a hang.
    bad_input(a.run(&["user", "create", "carol"]), "no passphrase");
    let names: Vec<String> = std::fs::read_dir(a.data().join("users"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["alice.user"]);
}

/// The `user` of each op in `dfs volume log --json`, by op kind.
fn log_users(dfs: &Dfs) -> Vec<(String, Option<String>)> {
    let run = dfs
        .run(&["volume", "log", "team", "--json", "--limit", "1000"])
        .ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("log JSON");
    rows.iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap_or("").to_string(),
                r["user"].as_str().map(String::from),
            )
        })
        .collect()
}

#[test]
fn logged_in_users_sign_what_they_do_in_a_shared_mount() {
    if !fuse_available() {
        return;
    }
    let storage = Dfs::new();
    let _storage_peer = storage.node(&[]);
    let boot = storage.address();
    let (a, b) = (Dfs::new(), Dfs::new());
    for member in [&a, &b] {
        member.configure("[placement]\ndurable_peers = 2\n");
    }
    let alice = create_user(&a, "alice", "alice's secret");
    let carol = create_user(&a, "carol", "carol's secret");
    let bob = create_user(&b, "bob", "bob's secret");

    // Alice makes the volume and invites from her peer, Bob joins from his: as users.
    let (node_a, node_b) = (a.node(&["--peer", &boot]), b.node(&["--peer", &boot]));
    bad_input(
        with_passphrase(&a, "not alice's", &["login", "alice"]),
        "wrong passphrase for user \"alice\"",
    );
    bad_input(
        with_passphrase(&a, "x", &["login", "mallory"]),
        "no user \"mallory\"",
    );
    let who = a.run(&["whoami"]).ok();
    assert!(who.stdout.contains("not logged in"), "{who:#?}");
    let login = with_passphrase(&a, "alice's secret", &["login", "alice"]).ok();
    assert!(login.stdout.contains("logged in as alice"), "{login:#?}");
    a.run(&["volume", "create", "team"]).ok();
    let ticket = a
        .run(&["volume", "invite", "team"])
        .ok()
        .last_line()
        .to_string();
    bad_input(b.run(&["volume", "join", "dfs-ticket-garbage"]), "ticket");
    with_passphrase(&b, "bob's secret", &["login", "bob"]).ok();
    // Bob names himself before he is in any volume: his join, once taken, brings the name.
    b.run(&["profile", "set", "--name", "Bob B."]).ok();
    b.run(&["volume", "join", &ticket]).ok();
    for member in [&a, &b] {
        wait_for(Duration::from_secs(30), "team joined by two users", || {
            member
                .volumes()
                .into_iter()
                .find(|v| v.name == "team" && v.joined && v.members == 2)
        });
    }
    let log = wait_for(Duration::from_secs(10), "bob's profile at alice's", || {
        let log = log_users(&a);
        (log.len() == 4).then_some(log)
    });
    assert_eq!(
        log,
        [
            ("genesis".to_string(), Some(alice.clone())),
            ("invite".to_string(), Some(alice.clone())),
            ("join".to_string(), Some(bob.clone())),
            ("profile".to_string(), Some(bob.clone())),
        ]
    );

    // Profiles: signed by the user, replicated to the members of the user's volumes.
    a.run(&[
        "profile",
        "set",
        "--name",
        "Alice Liddell",
        "--bio",
        "down the rabbit hole",
        "--pref",
        "notify.download=off",
    ])
    .ok();
    bad_input(
        a.run(&["profile", "set", "--name", &"x".repeat(65)]),
        "display name longer",
    );
    bad_input(a.run(&["profile", "set", "--pref", "novalue"]), "KEY=VALUE");
    let shown = wait_for(Duration::from_secs(10), "alice's profile at bob's", || {
        let run = b.run(&["profile", "show", "Alice Liddell", "--json"]);
        (run.code == Some(0)).then_some(run.stdout)
    });
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["user"], alice.as_str());
    assert_eq!(shown["bio"], "down the rabbit hole");
    assert_eq!(shown["prefs"]["notify.download"], "off");
    bad_input(b.run(&["profile", "show", "Cheshire Cat"]), "no profile");
    // Members are the users, each with the peer that signs for them, shown by name.
    let members = b.run(&["volume", "members", "team", "--json"]).ok();
    let members: Vec<serde_json::Value> = serde_json::from_str(&members.stdout).unwrap();
    let by_id = |id: &str| {
        members
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not among {members:#?}"))
            .clone()
    };
    assert_eq!(members.len(), 2, "{members:#?}");
    assert_eq!(by_id(&alice)["display_name"], "Alice Liddell");
    assert_eq!(by_id(&alice)["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_id(&bob)["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_id(&bob)["display_name"], "Bob B.");
    let list = b.run(&["volume", "list"]).ok().stdout;
    assert!(
        list.contains(&format!("Alice Liddell ({})", &alice[..8])),
        "the owner by name: {list}"
    );

    // Alice's second device: her exported key imported on a third peer, which joins with a
    // ticket as her. She stays one member, now with two devices.
    let c = Dfs::new();
    c.configure("[placement]\ndurable_peers = 2\n");
    let export = a.path("alice.export");
    std::fs::write(&export, a.run(&["user", "export", "alice"]).ok().stdout).unwrap();
    c.run(&["user", "import", export.to_str().unwrap()]).ok();
    let node_c = c.node(&["--peer", &boot]);
    with_passphrase(&c, "alice's secret", &["login", "alice"]).ok();
    let ticket = a
        .run(&["volume", "invite", "team"])
        .ok()
        .last_line()
        .to_string();
    c.run(&["volume", "join", &ticket]).ok();
    wait_for(Duration::from_secs(30), "alice's second device in", || {
        c.volumes()
            .into_iter()
            .find(|v| v.name == "team" && v.joined && v.members == 2)
    });
    let members = a.run(&["volume", "members", "team", "--json"]).ok();
    let members: Vec<serde_json::Value> = serde_json::from_str(&members.stdout).unwrap();
    let alices = members.iter().find(|m| m["id"] == alice.as_str()).unwrap();
    assert_eq!(members.len(), 2, "{members:#?}");
    assert_eq!(
        alices["devices"].as_array().map(Vec::len),
        Some(2),
        "{members:#?}"
    );
    node_c.terminate();
    node_a.terminate();
    node_b.terminate();

    // Each mounts the volume; a login lives in the running peer, so they log in again.
    let (mnt_a, mnt_b) = (a.path("mnt"), b.path("mnt"));
    std::fs::create_dir_all(&mnt_a).unwrap();
    std::fs::create_dir_all(&mnt_b).unwrap();
    let _mount_a = a.mount_at(
        &mnt_a,
        &["--volume", "team", "--peer", &boot, "--allow-other"],
    );
    let _mount_b = b.mount_at(&mnt_b, &["--volume", "team", "--peer", &boot]);
    // Nobody is logged in for root yet: the peer alone is no member, and nothing changes.
    let refused = std::fs::create_dir(mnt_a.join("early")).expect_err("mkdir as nobody's uid");
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES), "{refused}");
    with_passphrase(&a, "alice's secret", &["login", "alice"]).ok();
    with_passphrase(&b, "bob's secret", &["login", "bob"]).ok();
    // Root logs Carol in for uid 65534 on Alice's peer; Carol is not a member yet.
    with_passphrase(&a, "carol's secret", &["login", "carol", "--uid", "65534"]).ok();
    let all = a.run(&["whoami", "--all", "--json"]).ok();
    let sessions: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(sessions.as_array().map(Vec::len), Some(2), "{all:#?}");

    std::fs::create_dir(mnt_a.join("shared")).expect("mkdir as alice");
    std::fs::set_permissions(mnt_a.join("shared"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod as alice");
    std::fs::write(mnt_a.join("shared/from-alice.txt"), b"hello from alice").expect("write");
    wait_for(
        Duration::from_secs(10),
        "alice's file in bob's mount",
        || {
            (std::fs::read(mnt_b.join("shared/from-alice.txt")).ok()? == b"hello from alice")
                .then_some(())
        },
    );
    std::fs::write(mnt_b.join("shared/from-bob.txt"), b"hello from bob").expect("write as bob");
    wait_for(
        Duration::from_secs(10),
        "bob's file in alice's mount",
        || {
            (std::fs::read(mnt_a.join("shared/from-bob.txt")).ok()? == b"hello from bob")
                .then_some(())
        },
    );
    // Carol (uid 65534 on Alice's peer) is refused: she is no member of team.
    let as_carol = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "touch"])
        .arg(mnt_a.join("shared/from-carol.txt"))
        .output()
        .expect("setpriv");
    assert!(!as_carol.status.success(), "{as_carol:?}");
    let carol_err = String::from_utf8_lossy(&as_carol.stderr);
    assert!(carol_err.contains("Permission denied"), "{carol_err}");
    assert!(!mnt_b.join("shared/from-carol.txt").exists());

    // Every op of the volume names the user who made it: Alice's on her peer, Bob's on his.
    let wait_ops = |dfs: &Dfs, want: usize| {
        wait_for(Duration::from_secs(10), "every op in the log", || {
            let log = log_users(dfs);
            (log.len() >= want).then_some(log)
        })
    };
    let log = wait_ops(&b, 6);
    let users: std::collections::BTreeSet<Option<String>> =
        log.iter().map(|(_, user)| user.clone()).collect();
    assert_eq!(
        users,
        [Some(alice.clone()), Some(bob.clone())]
            .into_iter()
            .collect(),
        "{log:#?}"
    );
    assert!(!log
        .iter()
        .any(|(_, u)| u.as_deref() == Some(carol.as_str())));
    let table = b.run(&["volume", "log", "team"]).ok().stdout;
    assert!(
        table.contains(&format!("Alice Liddell ({})", &alice[..8])),
        "{table}"
    );
    assert!(
        table.contains(&format!("Bob B. ({})", &bob[..8])),
        "{table}"
    );

    // Logged out, Alice's uid is the peer alone again: refused, nothing changed.
    let out = a.run(&["logout"]).ok();
    assert!(out.stdout.contains("logged out alice"), "{out:#?}");
    bad_input(
        a.run(&["profile", "set", "--name", "Mallory"]),
        "no user is logged in",
    );
    let refused = std::fs::write(mnt_a.join("shared/after-logout.txt"), b"x")
        .expect_err("write after logout");
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!mnt_b.join("shared/after-logout.txt").exists());
    assert_eq!(
        std::fs::read(mnt_b.join("shared/from-alice.txt")).unwrap(),
        b"hello from alice"
    );
}

/// `dfs login` without a running peer says so (bad setup, not bad input).
#[test]
fn login_needs_a_running_peer() {
    let a = Dfs::new();
    create_user(&a, "alice", "pw");
    let run = with_passphrase(&a, "pw", &["login", "alice"]);
    let run = run.fails_with("no dfs peer is running");
    assert_eq!(run.code, Some(1));
}

/// Run `dfs` with `password` in `DFS_PASSWORD`.
fn with_password(dfs: &Dfs, password: &str, args: &[&str]) -> Run {
    with_env(dfs, "DFS_PASSWORD", password, args)
}

#[test]
fn a_password_protected_link_opens_with_its_password_only() {
    let dfs = Dfs::new();
    let file = dfs.path("secret.bin");
    let content = dfs_tests::random_bytes(3 << 20, 7);
    std::fs::write(&file, &content).unwrap();
    let put = with_password(
        &dfs,
        "open sesame",
        &["put", file.to_str().unwrap(), "--password"],
    )
    .ok();
    let locked = put.last_line().to_string();
    assert!(locked.contains("#locked1-65536-3-"), "{put:#?}");
    // The open link (in the owner's own list) is not in the locked one.
    let list = dfs.run(&["list"]).ok().stdout;
    let open = list
        .split('\t')
        .next_back()
        .unwrap_or("")
        .trim()
        .to_string();
    let key = open.split_once('#').map(|(_, k)| k.to_string()).unwrap();
    assert_eq!(key.len(), 64, "{list}");
    assert!(!locked.contains(&key));

    let out = dfs.path("restored.bin");
    let out_s = out.to_str().unwrap();
    bad_input(
        with_password(&dfs, "open sesame!", &["get", &locked, "-o", out_s]),
        "wrong password for this link",
    );
    assert!(!out.exists());
    bad_input(dfs.run(&["get", &locked, "-o", out_s]), "no password");
    let tampered = locked.replacen("locked1-65536-3-", "locked1-65536-2-", 1);
    bad_input(
        with_password(&dfs, "open sesame", &["get", &tampered, "-o", out_s]),
        "wrong password",
    );
    bad_input(
        dfs.run(&["get", &format!("{}-00", locked), "-o", out_s]),
        "malformed password-protected link",
    );
    assert!(!out.exists());
    with_password(&dfs, "open sesame", &["get", &locked, "-o", out_s]).ok();
    assert_eq!(std::fs::read(&out).unwrap(), content);
    with_password(&dfs, "open sesame", &["verify", &locked]).ok();
    // Empty passwords are refused when locking.
    bad_input(
        with_password(&dfs, "", &["put", file.to_str().unwrap(), "--password"]),
        "password is empty",
    );
}
