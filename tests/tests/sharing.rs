//! Sharing between people: a link stored by one peer is read by others from their own data
//! directories, while writers and readers come and go. Every peer is a separate `dfs` process
//! with its own data directory on 127.0.0.1.
//!
//! - The sequence a new user tried on the quickstart network: `dfs put` from one data directory,
//!   `dfs get` from another; a writer that exits before anyone reads. The peers of `put` and
//!   `get` are clients: they hold nothing for others and are forgotten, not dead, when they go.
//! - A chunk whose writer is gone is repaired by the peers holding its shards when one of
//!   them is killed.
//! - A peer that appears and leaves within its trust period causes no moves.
//! - A soak: short-lived readers from fresh data directories while a mount writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dfs_tests::{fuse_available, random_bytes, wait_for, Dfs, Peer};

const GRACE: &str = "3";

fn storage_network(n: usize, config: &str) -> (Vec<Dfs>, Vec<Peer>, String) {
    dfs_tests::storage_network(n, config, GRACE)
}

/// Per chunk held by the given storage peers: the shards it should have (from a shard
/// header: data + parity, or the copies of a small replicated chunk) and the distinct indices
/// held.
fn spread(dirs: &[&Dfs]) -> BTreeMap<String, (usize, BTreeSet<u8>)> {
    let mut out: BTreeMap<String, (usize, BTreeSet<u8>)> = BTreeMap::new();
    for d in dirs {
        for (path, chunk, index) in d.held_files() {
            let entry = out.entry(chunk).or_default();
            if entry.0 == 0 {
                entry.0 = shard_count(&path);
            }
            entry.1.insert(index);
        }
    }
    out
}

/// The shard count a shard file's header gives (bytes 40..43: kind, then copies or data and
/// parity).
fn shard_count(path: &std::path::Path) -> usize {
    let head = std::fs::read(path).expect("read shard file");
    match head[40] {
        0 => usize::from(head[41]),
        _ => usize::from(head[41]) + usize::from(head[42]),
    }
}

/// Chunks that have fewer distinct shards than their layout says.
fn short_of_shards(spread: &BTreeMap<String, (usize, BTreeSet<u8>)>) -> usize {
    spread
        .values()
        .filter(|(count, held)| held.len() < *count)
        .count()
}

fn put_link(client: &Dfs, input: &std::path::Path, boot: &str) -> (String, Duration) {
    let started = Instant::now();
    let run = client
        .run(&["put", input.to_str().expect("utf-8"), "--peer", boot])
        .ok();
    let link = run.last_line().to_string();
    assert!(link.starts_with("dfs://"), "{run:#?}");
    (link, started.elapsed())
}

fn get_link(reader: &Dfs, link: &str, out: &std::path::Path, boot: &str) -> Duration {
    let started = Instant::now();
    reader
        .run(&[
            "get",
            link,
            "-o",
            out.to_str().expect("utf-8"),
            "--peer",
            boot,
        ])
        .ok();
    started.elapsed()
}

/// A client's data directory holds no shard: neither of others (held) nor of its own.
fn assert_holds_nothing(client: &Dfs, who: &str) {
    let held = client.held_files().len();
    let own = client.shard_files().len();
    assert!(
        held == 0 && own == 0,
        "{who} keeps {held} shards of others and {own} of its own"
    );
}

/// The sequence of the issue: 5 storage peers; A puts 30 MiB, B reads it; C puts 200 MiB and
/// exits, then D reads it from a fresh data directory. Nobody needs the writer, the clients
/// hold nothing, and no storage peer counts a client as dead.
#[test]
fn links_are_read_by_others_while_writers_come_and_go() {
    let _alone = dfs_tests::alone();
    let (dirs, nodes, boot) = storage_network(5, "");
    let a = Dfs::new();
    let small = a.path("small.bin");
    let small_bytes = random_bytes(30 << 20, 1);
    std::fs::write(&small, &small_bytes).expect("write input");
    let (small_link, took) = put_link(&a, &small, &boot);
    eprintln!("A put 30 MiB in {took:?}");
    assert_holds_nothing(&a, "A (a put)");

    let b = Dfs::new();
    let out = b.path("small.out");
    let took = get_link(&b, &small_link, &out, &boot);
    eprintln!("B got 30 MiB in {took:?}");
    assert!(std::fs::read(&out).expect("read B's copy") == small_bytes);
    assert_holds_nothing(&b, "B (a get)");

    let c = Dfs::new();
    let big = c.path("big.bin");
    let big_bytes = random_bytes(200 << 20, 2);
    std::fs::write(&big, &big_bytes).expect("write input");
    let (big_link, took) = put_link(&c, &big, &boot);
    eprintln!("C put 200 MiB in {took:?} and exited");
    assert_holds_nothing(&c, "C (a put)");
    // Every chunk has all its shards on the storage peers the moment the put returns.
    let on_peers = spread(&dirs.iter().collect::<Vec<_>>());
    assert_eq!(
        short_of_shards(&on_peers),
        0,
        "chunks short of shards after the put"
    );

    for round in 0..2 {
        let d = Dfs::new();
        let out = d.path("big.out");
        let took = get_link(&d, &big_link, &out, &boot);
        eprintln!("D (fresh, round {round}) got 200 MiB in {took:?}");
        assert!(std::fs::read(&out).expect("read D's copy") == big_bytes);
        assert_holds_nothing(&d, "D (a get)");
    }

    // The clients have gone; no storage peer counts them as dead, or at all.
    wait_for(
        Duration::from_secs(15),
        "storage peers to forget the clients",
        || {
            dirs.iter()
                .all(|d| {
                    let peers = d.peers();
                    peers.len() == 4 && peers.iter().all(|p| p.state == "alive" && !p.client)
                })
                .then_some(())
        },
    );
    for d in &dirs {
        let s = d.status().expect("status");
        assert_eq!(s.peers.dead, 0, "{:?}", s.peers);
    }
    drop(nodes);
}

/// Repair without the writer: a 1 GiB put from a client that then exits; one of 7 storage
/// peers is killed with -9; the peers holding the shards rebuild what it held, and within 2
/// minutes every chunk has all 6 shards on live peers again. A new reader gets identical bytes.
#[test]
fn holders_repair_a_chunk_whose_writer_is_gone() {
    let _alone = dfs_tests::alone();
    // Default settings: the stewards wait 20 s after a death before they look.
    let (dirs, mut nodes, boot) = storage_network(7, "");
    let writer = Dfs::new();
    let input = writer.path("big.bin");
    let bytes = random_bytes(1 << 30, 3);
    std::fs::write(&input, &bytes).expect("write input");
    let (link, took) = put_link(&writer, &input, &boot);
    eprintln!("put 1 GiB in {took:?}");
    assert_holds_nothing(&writer, "the writer");
    drop(writer);
    let before = spread(&dirs.iter().collect::<Vec<_>>());
    assert_eq!(short_of_shards(&before), 0, "not fully spread");

    // Kill the peer holding the most shards.
    let victim = (0..dirs.len())
        .max_by_key(|&i| dirs[i].held_files().len())
        .expect("a peer");
    let lost = dirs[victim].held_files().len();
    nodes.remove(victim).kill9();
    let killed = Instant::now();
    eprintln!("killed peer {victim}, which held {lost} shards");
    let live: Vec<&Dfs> = (0..dirs.len())
        .filter(|&i| i != victim)
        .map(|i| &dirs[i])
        .collect();
    let deadline = Duration::from_secs(120);
    loop {
        let now = spread(&live);
        let short = short_of_shards(&now);
        if short == 0 && now.len() == before.len() {
            break;
        }
        assert!(
            killed.elapsed() < deadline,
            "{short} of {} chunks still short of shards {deadline:?} after the kill",
            before.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "every chunk back to 6 shards {:?} after the kill",
        killed.elapsed()
    );
    let rebuilt: u64 = live
        .iter()
        .filter_map(|d| d.status())
        .map(|s| s.placement["steward"]["rebuilt"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        rebuilt as usize >= lost,
        "stewards rebuilt {rebuilt} of {lost}"
    );

    let reader = Dfs::new();
    let out = reader.path("out.bin");
    let took = get_link(&reader, &link, &out, &boot_of(&live));
    eprintln!("a new reader got 1 GiB in {took:?}");
    assert!(std::fs::read(&out).expect("read copy") == bytes);
    drop(nodes);
}

/// A live peer's address (the first one may be the one killed).
fn boot_of(live: &[&Dfs]) -> String {
    live[0].address()
}

/// On an established network, a peer that appears and goes again within its trust period is
/// given nothing: no shard moves to it, no new write goes to it, and nothing is rebuilt when
/// it goes.
#[test]
fn a_peer_that_comes_and_goes_causes_no_moves() {
    let _alone = dfs_tests::alone();
    if !fuse_available() {
        return;
    }
    let (dirs, nodes, boot) = storage_network(6, "");
    let mount_dir = Dfs::new();
    mount_dir.configure("[placement]\nrepair_interval_ms = 500\ntrust_after_secs = 15\n");
    let mnt = mount_dir.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot]);
    for i in 0..8 {
        std::fs::write(mnt.join(format!("f{i}")), random_bytes(8 << 20, i)).expect("write");
    }
    let status = |d: &Dfs| d.status().expect("mount status").placement;
    wait_for(Duration::from_secs(60), "the writes to settle", || {
        let p = status(&mount_dir);
        (p["chunks"].as_u64()? >= 16 && p["degraded"].as_u64()? == 0).then_some(())
    });
    // The storage peers have earned the mount's trust.
    wait_for(
        Duration::from_secs(30),
        "the storage peers to be trusted",
        || {
            let peers = mount_dir.peers();
            (peers.iter().filter(|p| p.up_secs >= 16.0).count() >= 6).then_some(())
        },
    );
    let moved = status(&mount_dir)["moved"].as_u64().unwrap_or(0);
    let rebuilt = status(&mount_dir)["rebuilt"].as_u64().unwrap_or(0);

    let newcomer = Dfs::new();
    let peer = newcomer.node(&["--grace", GRACE, "--peer", &boot]);
    let id = newcomer.status().expect("newcomer status").id;
    wait_for(
        Duration::from_secs(20),
        "the mount to see the newcomer",
        || {
            mount_dir
                .peers()
                .iter()
                .any(|p| p.id == id && p.state == "alive" && p.zone.is_some())
                .then_some(())
        },
    );
    // Long enough for several repair rounds to have looked at it (and well within its 15 s).
    std::thread::sleep(Duration::from_secs(4));
    for i in 8..10 {
        std::fs::write(mnt.join(format!("f{i}")), random_bytes(8 << 20, i)).expect("write");
    }
    peer.kill9();
    // Dead after the grace period, and a few rounds more.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        newcomer.held_files().is_empty(),
        "the untrusted newcomer was given {} shards",
        newcomer.held_files().len()
    );
    let p = status(&mount_dir);
    assert_eq!(p["moved"].as_u64().unwrap_or(0), moved, "{p}");
    assert_eq!(p["rebuilt"].as_u64().unwrap_or(0), rebuilt, "{p}");
    assert_eq!(p["degraded"].as_u64().unwrap_or(1), 0, "{p}");
    drop(mount);
    drop(nodes);
    drop(dirs);
}

/// With no storage peer to take the shards, `dfs put` fails clearly and keeps nothing.
#[test]
fn a_put_with_no_storage_peer_fails_clearly() {
    let only = Dfs::new();
    let _client_node = only.node(&["--no-store"]);
    let boot = only.address();
    let writer = Dfs::new();
    let input = writer.path("f.bin");
    std::fs::write(&input, random_bytes(1 << 20, 4)).expect("write input");
    writer
        .run(&["put", input.to_str().expect("utf-8"), "--peer", &boot])
        .fails_with("not durable");
    assert!(writer.shard_files().is_empty());
    assert!(only.held_files().is_empty());
}

/// The soak: 20 short-lived `dfs get`s from fresh data directories against 6 storage peers
/// while a mount writes. Afterwards no chunk is degraded and no shard sits on a client; the
/// storage peers show the mount as a client while it runs, and count nobody dead.
#[test]
fn short_lived_readers_while_a_mount_writes() {
    let _alone = dfs_tests::alone();
    if !fuse_available() {
        return;
    }
    let (dirs, nodes, boot) = storage_network(6, "");
    let writer = Dfs::new();
    let input = writer.path("shared.bin");
    let bytes = random_bytes(24 << 20, 5);
    std::fs::write(&input, &bytes).expect("write input");
    let (link, _) = put_link(&writer, &input, &boot);

    let mount_dir = Dfs::new();
    mount_dir.configure("[placement]\nrepair_interval_ms = 500\n");
    let mnt = mount_dir.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot, "--no-store"]);
    let mount_id = mount_dir.status().expect("mount status").id;
    wait_for(
        Duration::from_secs(20),
        "peers to list the mount as a client",
        || {
            dirs[0]
                .peers()
                .iter()
                .any(|p| p.id == mount_id && p.client)
                .then_some(())
        },
    );

    let writing = std::thread::spawn({
        let mnt = mnt.clone();
        move || {
            for i in 0..40u64 {
                let path = mnt.join(format!("w{i}.bin"));
                std::fs::write(&path, random_bytes(2 << 20, 100 + i)).expect("write in mount");
            }
        }
    });
    let readers: Vec<Dfs> = (0..20).map(|_| Dfs::new()).collect();
    for batch in readers.chunks(4) {
        std::thread::scope(|s| {
            for r in batch {
                let (link, boot, bytes) = (&link, &boot, &bytes);
                s.spawn(move || {
                    let out = r.path("out.bin");
                    get_link(r, link, &out, boot);
                    assert!(&std::fs::read(&out).expect("read copy") == bytes);
                });
            }
        });
    }
    writing.join().expect("the writer thread");
    for r in &readers {
        assert_holds_nothing(r, "a reader");
    }
    assert!(
        mount_dir.held_files().is_empty(),
        "the client mount holds shards of others"
    );
    wait_for(
        Duration::from_secs(60),
        "the mount's chunks to be healthy",
        || {
            let p = mount_dir.status()?.placement;
            (p["chunks"].as_u64()? >= 40
                && p["degraded"].as_u64()? == 0
                && p["lost"].as_u64()? == 0)
                .then_some(())
        },
    );
    for d in &dirs {
        let s = d.status().expect("status");
        assert_eq!(
            s.peers.dead, 0,
            "a storage peer counts dead peers: {:?}",
            s.peers
        );
    }
    for i in 0..40u64 {
        let got = std::fs::read(mnt.join(format!("w{i}.bin"))).expect("read back");
        assert!(got == random_bytes(2 << 20, 100 + i), "w{i}.bin");
    }
    drop(mount);
    drop(nodes);
}
