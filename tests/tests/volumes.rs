//! Shared volumes as real processes on loopback: `dfs volume create`, `invite`, `join` and
//! `list`; a member admits a joiner through a ticket, a second joiner comes in through the
//! first one alone, and every member ends up with the same membership and op log; bad names and
//! tickets are refused with one clear error line, and membership survives a restart.

use std::time::Duration;

use dfs_tests::{wait_for, Dfs};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct VolumeInfo {
    id: String,
    name: String,
    members: usize,
    ops: u64,
    joined: bool,
}

fn volumes(dfs: &Dfs) -> Vec<VolumeInfo> {
    let run = dfs.run(&["volume", "list", "--json"]).ok();
    serde_json::from_str(&run.stdout).expect("volume list JSON")
}

/// Wait until `dfs` lists `name` as joined, with `members` members and `ops` ops.
fn wait_for_volume(dfs: &Dfs, name: &str, members: usize, ops: u64) -> VolumeInfo {
    wait_for(
        Duration::from_secs(30),
        &format!("volume {name} with {members} members and {ops} ops"),
        || {
            volumes(dfs)
                .into_iter()
                .find(|v| v.name == name && v.joined && v.members == members && v.ops == ops)
        },
    )
}

#[test]
fn members_admit_joiners_by_ticket_and_agree_on_the_log() {
    let (a, b, c) = (Dfs::new(), Dfs::new(), Dfs::new());
    let _pa = a.node(&[]);
    let _pb = b.node(&[]);
    let pc = c.node(&[]);

    let created = a.run(&["volume", "create", "team"]).ok();
    assert!(
        created.stdout.contains("created volume team"),
        "{created:?}"
    );
    a.run(&["volume", "create", "team"])
        .fails_with("a volume named \"team\" exists already");
    a.run(&["volume", "create", "../x"])
        .fails_with("invalid volume name");
    a.run(&["volume", "invite", "nope"])
        .fails_with("no volume named \"nope\"");
    b.run(&["volume", "join", "dfs-ticket-0011"])
        .fails_with("not a valid join ticket");

    // Genesis, then an invitation, then b's join: 3 ops, 2 members, on both.
    let ticket = a
        .run(&["volume", "invite", "team"])
        .ok()
        .last_line()
        .to_string();
    assert!(ticket.starts_with("dfs-ticket-"), "{ticket}");
    b.run(&["volume", "join", &ticket, "--name", "shared"]).ok();
    let on_a = wait_for_volume(&a, "team", 2, 3);
    let on_b = wait_for_volume(&b, "shared", 2, 3);
    assert_eq!(on_a.id, on_b.id);
    b.run(&["volume", "join", &ticket])
        .fails_with("already a member");

    // c is invited by b and only ever reaches b (b's ticket names b's addresses); a learns of
    // c's join through b.
    let ticket_b = b
        .run(&["volume", "invite", "shared"])
        .ok()
        .last_line()
        .to_string();
    c.run(&["volume", "join", &ticket_b]).ok();
    for (dfs, name) in [(&a, "team"), (&b, "shared"), (&c, "shared")] {
        let v = wait_for_volume(dfs, name, 3, 5);
        assert_eq!(v.id, on_a.id);
    }

    // The signed history is the same everywhere: who did what, in clock order.
    let kinds = |dfs: &Dfs, name: &str| -> Vec<(String, String, u64)> {
        let run = dfs.run(&["volume", "log", name, "--json"]).ok();
        let log: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("log JSON");
        log.iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or("?").to_string(),
                    e["author"].as_str().unwrap_or("?").to_string(),
                    e["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let history = kinds(&a, "team");
    let ops: Vec<&str> = history.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(ops, ["genesis", "invite", "join", "invite", "join"]);
    assert_eq!(
        history[0].1, history[1].1,
        "a wrote the genesis and the first invitation"
    );
    assert_eq!(history[2].1, history[3].1, "b joined, then invited");
    assert_eq!(kinds(&b, "shared"), history);
    assert_eq!(kinds(&c, "shared"), history);
    let text = a
        .run(&["volume", "log", "team", "--limit", "2"])
        .ok()
        .stdout;
    assert_eq!(text.lines().count(), 3, "a header and 2 ops: {text}");
    a.run(&["volume", "log", "nope"])
        .fails_with("no volume named \"nope\"");

    // Membership and the log are on disk: a restarted member still has them.
    assert!(pc.terminate().is_some());
    let _pc = c.node(&[]);
    let v = wait_for_volume(&c, "shared", 3, 5);
    assert_eq!(v.id, on_a.id);
}

/// Whether `dfs` is, after a few seconds, still only joining `name` (its join did not count).
fn stays_outside(dfs: &Dfs, name: &str) {
    std::thread::sleep(Duration::from_secs(4));
    let v = volumes(dfs);
    assert!(
        v.iter().any(|v| v.name == name && !v.joined),
        "the join was taken: {v:#?}"
    );
}

/// Tickets have terms: `--expires` (the joiner's `dfs volume join` refuses an expired ticket at
/// once, exit status 2), `--single-use` (a second joiner's join never counts), and `dfs volume
/// revoke` (joins with the ticket from then on do not count). Members agree on who is in.
#[test]
fn tickets_expire_are_single_use_and_revocable() {
    let (a, b, c, d) = (Dfs::new(), Dfs::new(), Dfs::new(), Dfs::new());
    let _pa = a.node(&[]);
    let (_pb, _pc, _pd) = (b.node(&[]), c.node(&[]), d.node(&[]));
    a.run(&["volume", "create", "team"]).ok();
    let invite = |extra: &[&str]| {
        let mut args = vec!["volume", "invite", "team"];
        args.extend_from_slice(extra);
        a.run(&args).ok().last_line().to_string()
    };

    // Bad input: one line, exit status 2.
    let run = a.run(&["volume", "invite", "team", "--expires", "soon"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    a.run(&["volume", "revoke", "team", "dfs-ticket-00"])
        .bad_input("not a valid join ticket");

    // Expired: refused by the joiner's own peer, and nothing is kept.
    let expired = invite(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    b.run(&["volume", "join", &expired]).bad_input("expired");
    assert!(volumes(&b).is_empty());

    // Single use: b gets in, c (same ticket) does not.
    let once = invite(&["--single-use"]);
    b.run(&["volume", "join", &once]).ok();
    wait_for_volume(&b, "team", 2, 4);
    c.run(&["volume", "join", &once]).ok();
    stays_outside(&c, "team");

    // Revoked: d's join after the revocation does not count; b's earlier one stands.
    let withdrawn = invite(&[]);
    b.run(&["volume", "revoke", "team", &withdrawn])
        .bad_input("the revocation is void");
    a.run(&["volume", "revoke", "team", &withdrawn]).ok();
    d.run(&["volume", "join", &withdrawn]).ok();
    stays_outside(&d, "team");
    for member in [&a, &b] {
        let v = volumes(member);
        assert_eq!(v[0].members, 2, "{v:#?}");
    }
    let log = a.run(&["volume", "log", "team"]).ok().stdout;
    assert!(
        log.contains("single use") && log.contains("revoke invitation"),
        "{log}"
    );
}
