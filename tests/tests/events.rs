//! The event log as real processes: peers joining and lost, user actions, filters, `--follow`,
//! JSON output, and structured JSON logs (`--log-format json`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use dfs_tests::{wait_for, Dfs};

fn events(dfs: &Dfs, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["events", "--json"];
    all.extend_from_slice(args);
    let run = dfs.run(&all).ok();
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

#[test]
fn peers_lost_and_user_actions_are_logged_and_filtered() {
    let (a, b) = (Dfs::new(), Dfs::new());
    let _pa = a.node(&["--grace", "3", "--log-format", "json", "-v"]);
    let b_id_peer = b.node(&["--grace", "3", "--peer", &a.address()]);
    let b_id = b.status().expect("status").id;
    wait_for(Duration::from_secs(30), "a sees b join", || {
        events(&a, &["--kind", "peer_joined"])
            .iter()
            .any(|e| e["subject"] == b_id.as_str())
            .then_some(())
    });
    a.run(&["volume", "create", "team"]).ok();
    b_id_peer.kill9();
    let lost = wait_for(Duration::from_secs(30), "a logs b as lost", || {
        events(&a, &["--kind", "peer_lost"])
            .into_iter()
            .find(|e| e["subject"] == b_id.as_str())
    });
    assert!(
        lost["detail"].as_str().unwrap_or("").contains("grace"),
        "{lost}"
    );
    let suspect = events(&a, &["--kind", "peer_suspect"]);
    assert!(suspect.iter().any(|e| e["subject"] == b_id.as_str()));

    // Filters: by kind (repeatable), by time.
    let actions = events(&a, &["--kind", "user_action"]);
    assert!(
        actions
            .iter()
            .any(|e| e["subject"] == "team"
                && e["detail"].as_str().unwrap_or("").contains("created")),
        "{actions:?}"
    );
    let both = events(&a, &["--kind", "user_action", "--kind", "peer_lost"]);
    assert!(both.len() > actions.len());
    assert!(both
        .iter()
        .all(|e| e["kind"] == "user_action" || e["kind"] == "peer_lost"));
    let all = events(&a, &[]);
    let times: Vec<u64> = all
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(events(&a, &["--since", "9999999999999"]).is_empty());
    assert_eq!(events(&a, &["--since", "1h"]).len(), all.len());
    // Bad flags are usage errors (exit status 2) that say what is expected.
    for (args, says) in [
        (["events", "--kind", "nope"], "unknown event kind"),
        (["events", "--since", "soon"], "expected a duration"),
    ] {
        let run = a.run(&args);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains(says), "{run:?}");
    }

    // --follow prints new events as they happen.
    let mut follow = a
        .command(&[
            "events",
            "--follow",
            "--since",
            "0",
            "--kind",
            "user_action",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dfs events --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    assert!(first.contains("team"), "{first}");
    a.run(&["volume", "create", "later"]).ok();
    let mut saw_later = false;
    for line in lines.by_ref().take(5) {
        if line.expect("read").contains("later") {
            saw_later = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(saw_later, "--follow did not show the new event");

    // `dfs top --once` draws one frame of the live view from the same peer.
    let a_id = a.status().expect("status").id;
    let frame = a.run(&["top", "--once", "--interval", "0.2"]).ok().stdout;
    assert!(frame.contains(&format!("dfs top: peer {a_id}")), "{frame}");
    for section in ["mount", "shards", "fuse", "peers", "storage", "volumes"] {
        assert!(
            frame.lines().any(|l| l.starts_with(section)),
            "no {section} line: {frame}"
        );
    }
    assert!(frame.contains("team"), "the volume is listed: {frame}");

    // The peer ran with --log-format json: its log lines are JSON objects.
    let log = std::fs::read_to_string(a.path("node.log")).expect("node log");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("not a JSON log line ({e}): {line}");
        });
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{v}");
    }
}
