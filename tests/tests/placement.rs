//! Placement end to end, with real processes on loopback: a mount and seven storage peers
//! (k+m = 4+2 on 8 peers). Files written through the mount are spread as shards over distinct
//! peers; two peers killed with -9 lose nothing and are repaired around; a peer that joins
//! takes about its share of shards and no more; shards corrupted on disk are found by scrubbing
//! and rebuilt. Every byte is compared with what was written, through the mount, at each step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use dfs_tests::{fuse_available, random_bytes, wait_for, Dfs, Peer};

/// Short grace so the test does not wait long for deaths.
const GRACE: &str = "3";
const FILES: usize = 20;
const FILE_SIZE: usize = 10 << 20;

/// Shards seen on disk: chunk hex -> {(index, holder number)}.
type Layout = BTreeMap<String, BTreeSet<(u8, usize)>>;

/// Where every shard is: on the storage peers (`held/`) and in the mount's own store.
fn layout(nodes: &[(usize, &Dfs)], mount: (usize, &Dfs)) -> Layout {
    let mut out = Layout::new();
    for &(n, dfs) in nodes {
        for (_, chunk, index) in dfs.held_files() {
            out.entry(chunk).or_default().insert((index, n));
        }
    }
    for (_, chunk, index) in mount.1.shard_files() {
        out.entry(chunk).or_default().insert((index, mount.0));
    }
    out
}

/// Every chunk has all its shards (6, or 3 copies for small ones) on as many distinct peers.
fn fully_spread(layout: &Layout) -> Result<(), String> {
    for (chunk, shards) in layout {
        let indices: BTreeSet<u8> = shards.iter().map(|(i, _)| *i).collect();
        let holders: BTreeSet<usize> = shards.iter().map(|(_, h)| *h).collect();
        let n = indices.len();
        let complete = (n == 6 || n == 3) && indices.iter().copied().eq(0..n as u8);
        if !complete || holders.len() != n || shards.len() != n {
            return Err(format!("chunk {chunk}: {shards:?}"));
        }
    }
    Ok(())
}

fn placement(mount: &Dfs) -> serde_json::Value {
    mount
        .status()
        .map(|s| s.placement)
        .unwrap_or(serde_json::Value::Null)
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(u64::MAX)
}

/// Placement has nothing left to do: no degraded, lost or pending chunk.
fn settled(mount: &Dfs) -> Option<serde_json::Value> {
    let p = placement(mount);
    let quiet = num(&p, "degraded") == 0 && num(&p, "lost") == 0 && num(&p, "pending") == 0;
    (quiet && num(&p, "chunks") > 0).then_some(p)
}

/// The placement status of the peer on `dfs`, waiting (10 s at most) for it to answer.
fn settled_status(dfs: &Dfs) -> serde_json::Value {
    wait_for(Duration::from_secs(10), "the peer's status", || {
        Some(placement(dfs)).filter(|p| !p.is_null())
    })
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn check_files(dir: &Path, what: &str) {
    drop_caches();
    for i in 0..FILES {
        let path = dir.join(format!("f{i}.bin"));
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{what}: read {path:?}: {e}"));
        assert!(
            got == random_bytes(FILE_SIZE, i as u64),
            "{what}: {path:?} differs from what was written"
        );
    }
}

/// Peers alive in the mount's table with an announcement received.
fn announced_peers(mount: &Dfs) -> usize {
    let run = mount.run(&["peers", "--json"]);
    let peers: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap_or_default();
    peers
        .iter()
        .filter(|p| p["state"] == "alive" && p["capacity"].is_u64())
        .count()
}

#[test]
fn shards_spread_survive_two_crashes_rebalance_and_heal_corruption() {
    if !fuse_available() {
        return;
    }
    let dirs: Vec<Dfs> = (0..8).map(|_| Dfs::new()).collect();
    let mut nodes: Vec<Option<Peer>> = Vec::new();
    nodes.push(Some(dirs[0].node(&["--grace", GRACE, "--zone", "z0"])));
    let boot = dirs[0].address();
    for (i, dir) in dirs.iter().enumerate().take(7).skip(1) {
        let zone = format!("z{}", i % 3);
        nodes.push(Some(
            dir.node(&["--grace", GRACE, "--zone", &zone, "--peer", &boot]),
        ));
    }
    // The mount is a peer too (and stores shards): 8 peers in all.
    let mount_dir = Dfs::new();
    mount_dir.configure(
        "[placement]\nrepair_interval_ms = 500\nscrub_shards_per_round = 400\n\
         scrub_bytes_per_sec = 1073741824\n\
         max_bytes_per_sec = 1073741824\ntrust_after_secs = 5\n",
    );
    let mnt = mount_dir.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot, "--zone", "z2"]);
    wait_for(Duration::from_secs(20), "the mount to see 7 peers", || {
        (announced_peers(&mount_dir) >= 7).then_some(())
    });

    // 1. Write 200 MiB through the mount: every chunk ends up with 6 shards on 6 peers.
    let started = Instant::now();
    for i in 0..FILES {
        let path = mnt.join(format!("f{i}.bin"));
        std::fs::write(&path, random_bytes(FILE_SIZE, i as u64)).expect("write through mount");
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .expect("fsync");
    }
    eprintln!(
        "wrote {} MiB in {:?}",
        (FILES * FILE_SIZE) >> 20,
        started.elapsed()
    );
    let all: Vec<(usize, &Dfs)> = dirs.iter().take(7).enumerate().collect();
    let spread = layout(&all, (7, &mount_dir));
    fully_spread(&spread).expect("every chunk spread over distinct peers");
    let per_peer: Vec<usize> = (0..8)
        .map(|n| spread.values().flatten().filter(|(_, h)| *h == n).count())
        .collect();
    eprintln!("{} chunks; shards per peer {per_peer:?}", spread.len());
    assert!(spread.len() >= 50, "{} chunks", spread.len());
    assert!(per_peer.iter().all(|&c| c > 0), "{per_peer:?}");
    check_files(&mnt, "after writing");

    // 2. kill -9 two storage peers: every file still reads, then every chunk is back to full
    //    health on the live peers.
    nodes[2].take().expect("node 2").kill9();
    nodes[5].take().expect("node 5").kill9();
    let killed = Instant::now();
    check_files(&mnt, "with 2 peers killed");
    let p = wait_for(Duration::from_secs(90), "repair after 2 crashes", || {
        settled(&mount_dir).filter(|p| num(p, "rebuilt") > 0)
    });
    let live: Vec<(usize, &Dfs)> = all
        .iter()
        .copied()
        .filter(|(n, _)| *n != 2 && *n != 5)
        .collect();
    let healed = wait_for(Duration::from_secs(30), "shards on disk to match", || {
        let l = layout(&live, (7, &mount_dir));
        (l.len() == spread.len() && fully_spread(&l).is_ok()).then_some(l)
    });
    eprintln!(
        "repaired in {:?}: {} shards rebuilt ({} bytes)",
        killed.elapsed(),
        num(&p, "rebuilt"),
        num(&p, "repair_bytes")
    );
    check_files(&mnt, "after repair");

    // 3. A new peer joins: shards move to it, about 1/(n+1) of them and never 1.5x that.
    let moved_before = num(&p, "moved");
    let newcomer = &dirs[7];
    let _joined = newcomer.node(&["--grace", GRACE, "--zone", "z1", "--peer", &boot]);
    let total: usize = healed.values().map(|s| s.len()).sum();
    let p = wait_for(
        Duration::from_secs(90),
        "rebalancing onto the new peer",
        || {
            settled(&mount_dir)
                .filter(|p| num(p, "moved") > moved_before && !newcomer.held_files().is_empty())
        },
    );
    let mut with_new = live.clone();
    with_new.push((8, newcomer));
    let rebalanced = wait_for(Duration::from_secs(30), "shards on disk to match", || {
        let l = layout(&with_new, (7, &mount_dir));
        fully_spread(&l).is_ok().then_some(l)
    });
    let on_new = rebalanced
        .values()
        .flatten()
        .filter(|(_, h)| *h == 8)
        .count();
    let moved = num(&p, "moved") - moved_before;
    let fair = total as f64 / 7.0;
    eprintln!(
        "{total} shards on 6 peers; the 7th took {on_new} ({moved} moved), fair share {fair:.1}"
    );
    assert!(on_new as f64 >= 0.5 * fair, "{on_new} of {total}");
    assert!(moved as f64 <= 1.5 * fair, "{moved} moved of {total}");
    check_files(&mnt, "after rebalancing");

    // 4. Corrupt shards on disk on three peers: scrubbing finds and rebuilds every one.
    let corrupt_before = num(&p, "corrupt_found");
    let mut damaged = Vec::new();
    // Two shards on each of three peers, each of a different chunk (so every chunk keeps at
    // least 5 good shards).
    let mut chunks_hit = BTreeSet::new();
    for dfs in [&dirs[0], &dirs[3], newcomer] {
        let files = dfs.held_files().into_iter();
        let picked: Vec<_> = files
            .filter(|(_, chunk, _)| chunks_hit.insert(chunk.clone()))
            .take(2)
            .collect();
        for (path, _, _) in picked {
            let good = std::fs::read(&path).expect("read held shard");
            let mut bad = good.clone();
            let at = bad.len() / 2;
            bad[at] ^= 0xff;
            bad[at + 1] ^= 0x55;
            std::fs::write(&path, &bad).expect("corrupt held shard");
            damaged.push((path, good));
        }
    }
    wait_for(
        Duration::from_secs(90),
        "scrubbing to rebuild the corrupt shards",
        || {
            let p = settled(&mount_dir)?;
            let restored = damaged
                .iter()
                .all(|(path, good)| std::fs::read(path).is_ok_and(|now| now == *good));
            (num(&p, "corrupt_found") >= corrupt_before + damaged.len() as u64 && restored)
                .then_some(())
        },
    );

    // 5. A fresh mount process with empty caches (the disk cache emptied with `dfs cache
    //    prune`) reads every byte back, fetching from the peers. A chunk enters the disk cache
    //    on its second fetch: the first remount caches next to nothing (a chunk asked for by
    //    two reads at once may be fetched twice), the second keeps what it fetched, within the
    //    limit.
    drop(mount);
    mount_dir.run(&["cache", "prune"]).ok();
    // The reads above fetched every chunk once already; forget that, as on a fresh peer.
    std::fs::remove_file(mount_dir.data().join("cache.ghosts")).expect("remove ghosts");
    let cache_stats = || {
        let run = mount_dir.run(&["cache", "stats", "--json"]).ok();
        serde_json::from_str::<serde_json::Value>(&run.stdout).expect("cache stats JSON")
    };
    let mut entries = Vec::new();
    for pass in ["first", "second"] {
        let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot, "--zone", "z2"]);
        check_files(&mnt, &format!("after remounting ({pass} fetch)"));
        let p = settled_status(&mount_dir);
        let fetched = num(&p, "bytes_fetched");
        assert!(
            fetched > 0 && fetched != u64::MAX,
            "nothing was fetched from peers on the {pass} fetch: {p}"
        );
        drop(mount);
        let stats = cache_stats();
        assert!(num(&stats, "bytes") <= num(&stats, "limit"), "{stats}");
        entries.push(num(&stats, "entries"));
    }
    eprintln!("disk cache entries after the first and second fetch: {entries:?}");
    assert!(entries[1] > 0 && entries[0] < entries[1] / 4, "{entries:?}");

    // 6. Once more: now every chunk comes from the disk cache, nothing from the peers.
    let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot, "--zone", "z2"]);
    check_files(&mnt, "from the disk cache");
    let p = settled_status(&mount_dir);
    assert_eq!(num(&p, "bytes_fetched"), 0, "{p}");

    // 7. Delete half the files; `dfs gc` (offline) queues their shards on the peers for
    //    deletion, and the next mount deletes exactly those.
    for i in FILES / 2..FILES {
        std::fs::remove_file(mnt.join(format!("f{i}.bin"))).expect("remove file");
    }
    drop(mount);
    mount_dir.configure(
        "[placement]\nrepair_interval_ms = 500\nscrub_shards_per_round = 400\n\
         scrub_bytes_per_sec = 1073741824\n\
         max_bytes_per_sec = 1073741824\n[versions]\nkeep_last = 1\nkeep_daily_days = 0\n",
    );
    let before: usize = layout(&with_new, (7, &mount_dir))
        .values()
        .map(|s| s.len())
        .sum();
    let gc = mount_dir.run(&["gc"]).ok();
    let queued: usize = gc
        .stdout
        .lines()
        .find_map(|l| l.split_once(" shards on other peers are queued"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("gc queued nothing: {gc:#?}"));
    let mount = mount_dir.mount_at(&mnt, &["--grace", GRACE, "--peer", &boot, "--zone", "z2"]);
    let left = wait_for(Duration::from_secs(60), "the queued deletes", || {
        let p = settled(&mount_dir)?;
        let l = layout(&with_new, (7, &mount_dir));
        let total: usize = l.values().map(|s| s.len()).sum();
        (num(&p, "orphans_deleted") >= queued as u64 && total + queued <= before).then_some(l)
    });
    let after: usize = left.values().map(|s| s.len()).sum();
    eprintln!("gc: {queued} remote shards queued; {before} shards on disk before, {after} after");
    fully_spread(&left).expect("what is left is still fully spread");
    drop_caches();
    for i in 0..FILES / 2 {
        let got = std::fs::read(mnt.join(format!("f{i}.bin"))).expect("read kept file");
        assert!(
            got == random_bytes(FILE_SIZE, i as u64),
            "f{i}.bin after gc"
        );
    }
    drop(mount);
}

/// `n` storage peers that see each other, and the address of the first.
fn storage_network(n: usize) -> (Vec<Dfs>, Vec<Peer>, String) {
    dfs_tests::storage_network(n, "", GRACE)
}

/// `dfs put` and `dfs get` with `--peer` run a peer for their duration: the shards go to the
/// network, and a get finds them there even with every local shard file gone.
#[test]
fn put_and_get_through_the_network() {
    let (dirs, nodes, boot) = storage_network(5);
    let started = Instant::now();
    let client = Dfs::new();
    let input = client.path("input.bin");
    let bytes = random_bytes(24 << 20, 7);
    std::fs::write(&input, &bytes).expect("write input");
    let run = client
        .run(&["put", input.to_str().expect("utf-8"), "--peer", &boot])
        .ok();
    let link = run.last_line().to_string();
    assert!(link.starts_with("dfs://"), "{run:#?}");
    let held: usize = dirs.iter().map(|d| d.held_files().len()).sum();
    let local = client.shard_files().len();
    eprintln!(
        "{held} shards on the 5 peers, {local} kept by the client (put took {:?})",
        started.elapsed()
    );
    assert!(held > 0 && held > local, "held {held}, local {local}");

    // Without the local shard files, the get has to fetch from the peers.
    for (path, _, _) in client.shard_files() {
        std::fs::remove_file(path).expect("remove local shard");
    }
    let out = client.path("out.bin");
    client
        .run(&[
            "get",
            &link,
            "-o",
            out.to_str().expect("utf-8"),
            "--peer",
            &boot,
        ])
        .ok();
    assert!(std::fs::read(&out).expect("read output") == bytes);
    eprintln!("put and get took {:?}", started.elapsed());
    drop(nodes);
}

/// A writer killed with -9 in the middle of placing chunks leaves shards on peers that no
/// record names. Every peer is written down before a shard goes to it, so the next peer run on
/// the writer's data directory finds those writes and deletes what they left: afterwards the
/// peers hold exactly the chunks the writer has records of, each fully spread. (The cut
/// `dfs put` itself is collected too, its finished chunks with it, so that is usually none.)
#[test]
fn a_writer_killed_mid_write_leaves_no_stray_shards() {
    let (dirs, nodes, boot) = storage_network(6);
    let client = Dfs::new();
    client.configure("[placement]\nrepair_interval_ms = 500\n");
    let input = client.path("input.bin");
    std::fs::write(&input, random_bytes(256 << 20, 11)).expect("write input");
    let mut put = client
        .command(&["put", input.to_str().expect("utf-8"), "--peer", &boot])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start dfs put");
    let held = || dirs.iter().map(|d| d.held_files().len()).sum::<usize>();
    wait_for(Duration::from_secs(60), "some shards to land", || {
        (held() >= 60).then_some(())
    });
    put.kill().expect("kill -9 the writer");
    let _ = put.wait();
    let numbered: Vec<(usize, &Dfs)> = dirs.iter().enumerate().collect();
    let before = layout(&numbered, (dirs.len(), &client));
    eprintln!(
        "after the kill: {} chunks with shards on the peers",
        before.len()
    );

    // A peer on the writer's data directory recovers.
    let writer_started = Instant::now();
    let writer = client.node(&["--grace", GRACE, "--peer", &boot]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (p, after) = loop {
        let p = placement(&client);
        let l = layout(&numbered, (dirs.len(), &client));
        let quiet = ["degraded", "lost", "pending"]
            .iter()
            .all(|k| num(&p, k) == 0);
        if quiet && l.len() as u64 == num(&p, "chunks") && fully_spread(&l).is_ok() {
            break (p, l);
        }
        assert!(
            Instant::now() < deadline,
            "not recovered in 60 s: {} chunks on the peers; {p}\n{}",
            l.len(),
            writer.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Which path cleans up depends on where the kill landed: mid-placement of a chunk (the
    // `placing` intents: "writes cut short by a crash"), or between chunks (the interrupted
    // put's own cleanup when the data directory opens). Either way one of them must have run,
    // and the layout check above holds.
    let log = writer.log_text();
    assert!(
        log.contains("writes cut short by a crash")
            || log.contains("cleaned up after an interrupted put"),
        "no interrupted write was found: {log}"
    );
    eprintln!(
        "recovered: {} chunks kept, {} stray shards deleted",
        after.len(),
        num(&p, "orphans_deleted")
    );
    assert!(after.len() < before.len() || num(&p, "orphans_deleted") > 0);
    // Nothing changes now: rounds go on (deletes, scrubbing) without looking at every chunk.
    // (Once the peer table has settled, 15 s after start; a peer that turns suspect under load
    // is a change, hence some slack.)
    std::thread::sleep(Duration::from_secs(16).saturating_sub(writer_started.elapsed()));
    let p = settled_status(&client);
    std::thread::sleep(Duration::from_secs(5));
    let idle = settled_status(&client);
    let rounds = num(&idle, "rounds") - num(&p, "rounds");
    let passes = num(&idle, "full_passes") - num(&p, "full_passes");
    eprintln!("idle: {rounds} rounds, {passes} full passes");
    assert!(
        rounds >= 5 && passes * 2 <= rounds,
        "{rounds} rounds, {passes} full passes while idle"
    );
    drop(writer);
    drop(nodes);
}
