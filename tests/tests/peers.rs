//! Peers as real processes on loopback: discovery, the failure detector, restarts with the same
//! identity, the control API and its errors.

use std::time::{Duration, Instant};

use dfs_tests::{http, wait_for, Dfs, Peer};

/// Short grace period for tests (the default is 10 s).
const GRACE: u64 = 8;

fn states(dfs: &Dfs) -> Vec<(String, String)> {
    dfs.peers().into_iter().map(|p| (p.id, p.state)).collect()
}

fn sees_alive(dfs: &Dfs, ids: &[&String]) -> bool {
    let table = states(dfs);
    ids.iter()
        .all(|id| table.iter().any(|(i, s)| i == *id && s == "alive"))
}

#[test]
fn five_peers_see_each_other_detect_a_crash_and_a_return() {
    let dirs: Vec<Dfs> = (0..5).map(|_| Dfs::new()).collect();
    let grace = GRACE.to_string();
    let mut peers: Vec<Option<Peer>> = Vec::new();
    peers.push(Some(dirs[0].node(&["--grace", &grace, "--zone", "z0"])));
    let bootstrap = dirs[0].address();
    let started = Instant::now();
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let zone = format!("z{i}");
        peers.push(Some(
            dir.node(&["--grace", &grace, "--zone", &zone, "--peer", &bootstrap]),
        ));
    }
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| d.status().expect("status").id)
        .collect();

    // Every peer sees the 4 others alive within 10 s.
    for (i, dir) in dirs.iter().enumerate() {
        let others: Vec<&String> = ids.iter().filter(|id| **id != ids[i]).collect();
        wait_for(
            Duration::from_secs(10),
            "every peer to see the 4 others alive",
            || sees_alive(dir, &others).then_some(()),
        );
    }
    eprintln!(
        "5 peers saw each other alive {:?} after the last start",
        started.elapsed()
    );
    // What they announced reached the others.
    wait_for(
        Duration::from_secs(10),
        "peer 0's announcement and a ping answer",
        || {
            dirs[1]
                .peers()
                .iter()
                .any(|p| {
                    p.id == ids[0]
                        && p.zone.as_deref() == Some("z0")
                        && p.rtt_ms.is_some_and(|r| r > 0.0)
                })
                .then_some(())
        },
    );
    let status = dirs[0].status().expect("status");
    assert_eq!(status.peers.alive, 4, "{status:?}");

    // kill -9 peer 2: the others see it dead within the grace period (the failure detector's
    // suspect step is unit- and property-tested in node/src/net/peers.rs).
    peers[2].take().expect("peer 2").kill9();
    let killed = Instant::now();
    let state_of = |dir: &Dfs| {
        states(dir)
            .into_iter()
            .find(|(id, _)| *id == ids[2])
            .map(|(_, s)| s)
    };
    for dir in dirs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, d)| d)
    {
        wait_for(
            Duration::from_secs(GRACE + 2),
            "the killed peer to be dead",
            || state_of(dir).filter(|s| s == "dead"),
        );
    }
    let to_dead = killed.elapsed();
    eprintln!("killed peer declared dead by all after {to_dead:?} (grace {GRACE} s)");

    // Restart it with the same data directory: same id, alive again everywhere.
    peers[2] = Some(dirs[2].node(&["--grace", &grace, "--peer", &bootstrap]));
    assert_eq!(
        dirs[2].status().expect("status").id,
        ids[2],
        "identity changed on restart"
    );
    for (i, dir) in dirs.iter().enumerate().filter(|(i, _)| *i != 2) {
        wait_for(
            Duration::from_secs(10),
            "the restarted peer to be alive again",
            || sees_alive(dir, &[&ids[2]]).then_some(()),
        );
        let _ = i;
    }
    // A clean stop exits 0 and removes the API file.
    let peer = peers[4].take().expect("peer 4");
    assert_eq!(peer.terminate(), Some(0));
    assert!(!dirs[4].data().join("api.json").exists());
}

#[test]
fn rendezvous_point_acts_as_a_tracker() {
    let tracker = Dfs::new();
    let _t = tracker.node(&["--rendezvous-server"]);
    let point = tracker.address();
    let a = Dfs::new();
    let b = Dfs::new();
    let _a = a.node(&["--rendezvous", &point]);
    let _b = b.node(&["--rendezvous", &point]);
    let id_a = a.status().expect("status").id;
    let id_b = b.status().expect("status").id;
    wait_for(
        Duration::from_secs(15),
        "peers to find each other through the tracker",
        || (sees_alive(&a, &[&id_b]) && sees_alive(&b, &[&id_a])).then_some(()),
    );
}

#[test]
fn status_without_a_running_peer_says_so() {
    let dfs = Dfs::new();
    dfs.run(&["status"]).fails_with("no dfs peer is running");
    dfs.run(&["peers"]).fails_with("no dfs peer is running");
    // A peer killed with -9 leaves its api.json behind: still a clear message.
    let peer = dfs.node(&[]);
    peer.kill9();
    dfs.run(&["status"]).fails_with("no dfs peer is running");
    // Text output of a live peer.
    let _peer = dfs.node(&[]);
    let out = dfs.run(&["status"]).ok().stdout;
    assert!(
        out.contains("peers     0 alive, 0 suspect, 0 dead"),
        "{out}"
    );
    let out = dfs.run(&["peers"]).ok().stdout;
    assert!(out.contains("no peers known yet"), "{out}");
}

#[test]
fn bad_network_flags_get_clear_errors() {
    let dfs = Dfs::new();
    // Each of these must fail at once; a peer that starts anyway is killed after 20 s.
    let node = |args: &[&str]| {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        dfs.run_for(&all, Duration::from_secs(20))
    };
    node(&["--peer", "not-an-address"]).fails_with("invalid peer address \"not-an-address\"");
    node(&["--rendezvous", "/ip4/127.0.0.1/tcp/1"]).fails_with("must end in /p2p/<peer id>");
    node(&["--listen", "/ip4/127.0.0.1/udp/0"]).fails_with("cannot listen on /ip4/127.0.0.1/udp/0");
    node(&["--grace", "0"]).fails_with("--grace");
    node(&["--zone", ""]).fails_with("--zone");
    // Usage errors (clap) exit with 2 and say what is wrong.
    for (args, says) in [
        (&["--api", "127.0.0.1:1:2"][..], "invalid socket address"),
        (&["--capacity", "12Q"][..], "unknown size unit"),
    ] {
        let run = node(args);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains(says), "{run:?}");
    }
    // A second peer on a data directory in use.
    let _peer = dfs.node(&[]);
    node(&[]).fails_with("in use");
}

#[test]
fn api_needs_the_token() {
    let dfs = Dfs::new();
    let _peer = dfs.node(&[]);
    let endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dfs.data().join("api.json")).expect("api.json"))
            .expect("api.json is JSON");
    let url = endpoint["url"].as_str().expect("url");
    let token = endpoint["token"].as_str().expect("token");
    let addr = url.trim_start_matches("http://");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dfs.data().join("api.json"))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "api.json must be private");

    let get = |path: &str, auth: Option<&str>| {
        let header = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"),
        )
    };
    let (status, body) = get("/v1/status", None);
    assert!(status.contains("401"), "{status} {body}");
    assert!(body.contains("bearer token"), "{body}");
    let (status, _) = get("/v1/status", Some("wrong"));
    assert!(status.contains("401"), "{status}");
    let (status, body) = get("/v1/status", Some(token));
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("\"uptime_secs\""), "{body}");
    let (status, _) = get("/v1/nope", Some(token));
    assert!(status.contains("404"), "{status}");
    let (status, _) = get("/v1/health", None);
    assert!(status.contains("200"), "{status}");
    // Garbage on the socket does not take the API down.
    let _ = http(addr, "\x00\x01garbage\r\n\r\n");
    let (status, _) = get("/v1/peers", Some(token));
    assert!(status.contains("200"), "{status}");
}

#[test]
fn a_mount_is_a_peer_too() {
    if !dfs_tests::fuse_available() {
        return;
    }
    let storage = Dfs::new();
    let _storage = storage.node(&[]);
    let user = Dfs::new();
    let mountpoint = user.path("mnt");
    std::fs::create_dir_all(&mountpoint).expect("mount point");
    let bootstrap = storage.address();
    let mount = user.mount_at(&mountpoint, &["--peer", &bootstrap, "--zone", "desk"]);
    let status = wait_for(
        Duration::from_secs(10),
        "the mount's peer to answer",
        || user.status(),
    );
    let storage_id = storage.status().expect("status").id;
    wait_for(
        Duration::from_secs(10),
        "the mount's peer to see the storage peer",
        || sees_alive(&user, &[&storage_id]).then_some(()),
    );
    wait_for(
        Duration::from_secs(10),
        "the storage peer to see the mount's zone",
        || {
            storage
                .peers()
                .iter()
                .any(|p| p.id == status.id && p.zone.as_deref() == Some("desk"))
                .then_some(())
        },
    );
    std::fs::write(mountpoint.join("f"), b"still a filesystem").expect("write");
    assert_eq!(mount.unmount(), Some(0));
    assert!(
        !user.data().join("api.json").exists(),
        "api.json left behind"
    );
}

#[test]
fn peers_connect_over_quic() {
    let a = Dfs::new();
    let _a = a.node(&["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    let quic = a.status().expect("status").addresses[0].clone();
    assert!(quic.contains("/quic-v1/"), "{quic}");
    let b = Dfs::new();
    let _b = b.node(&["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--peer", &quic]);
    let id_a = a.status().expect("status").id;
    let id_b = b.status().expect("status").id;
    wait_for(
        Duration::from_secs(10),
        "QUIC-only peers to see each other",
        || (sees_alive(&a, &[&id_b]) && sees_alive(&b, &[&id_a])).then_some(()),
    );
}

#[test]
fn a_peer_reachable_only_through_a_relay() {
    let relay = Dfs::new();
    let _relay = relay.node(&["--relay-server"]);
    let circuit = format!("{}/p2p-circuit", relay.address());
    // A listens only on a circuit through the relay: no direct address at all.
    let a = Dfs::new();
    let _a = a.node(&["--listen", &circuit]);
    let status = wait_for(Duration::from_secs(10), "a relay reservation", || {
        a.status()
            .filter(|s| s.addresses.iter().any(|x| x.contains("/p2p-circuit/")))
    });
    let via_relay = status
        .addresses
        .iter()
        .find(|x| x.contains("/p2p-circuit/"))
        .expect("circuit address")
        .clone();
    let b = Dfs::new();
    let _b = b.node(&["--peer", &via_relay]);
    let id_b = b.status().expect("status").id;
    wait_for(
        Duration::from_secs(15),
        "peers to meet through the relay",
        || (sees_alive(&b, &[&status.id]) && sees_alive(&a, &[&id_b])).then_some(()),
    );
}
