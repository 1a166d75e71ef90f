//! A whole peer, started through its one face (`Peer::start`) and stopped with work in flight:
//! it stops within 5 s and leaves no thread of its own behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_node::{NetworkConfig, Peer, PeerHandle, PeerTasks, Repo, Role};
use dfs_placement::erasure::ShardCoder;

/// The threads of this process, by name.
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// `names` without one of each of `base` (what was there before).
fn extra(names: &[String], base: &[String]) -> Vec<String> {
    let mut left = base.to_vec();
    let mut out = Vec::new();
    for n in names {
        match left.iter().position(|b| b == n) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => out.push(n.clone()),
        }
    }
    out
}

fn start(repo: &Arc<Repo>, peers: Vec<String>) -> (PeerHandle, PeerTasks) {
    let config = NetworkConfig {
        grace_secs: 5,
        reserve_percent: 0,
        capacity: 1 << 30,
        peers,
        ..NetworkConfig::default()
    };
    Peer::start(repo.clone(), &config, Role::Storage).expect("start peer")
}

#[test]
fn a_peer_stops_within_5_s_with_writes_in_flight_and_leaves_no_thread_behind() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let repos: Vec<Arc<Repo>> = dirs
        .iter()
        .map(|d| Arc::new(Repo::open(d.path()).expect("open repo")))
        .collect();
    // Some threads belong to the process, not to any peer: RocksDB's background pool, and the
    // one `futures-timer` (under libp2p) starts the first time it is used and keeps. A peer
    // started and stopped once brings them up; the count is taken after that.
    let (warm, warm_tasks) = start(&repos[0], Vec::new());
    warm.wait_listening().expect("listening");
    warm_tasks.stop();
    drop(warm);
    let before = threads();

    let (first, first_tasks) = start(&repos[0], Vec::new());
    let status = first.wait_listening().expect("listening");
    let boot = status
        .addresses
        .iter()
        .find(|a| a.contains("/tcp/"))
        .map(|a| format!("{a}/p2p/{}", status.id))
        .expect("a tcp address");
    let (second, second_tasks) = start(&repos[1], vec![boot.clone()]);
    let (writer, writer_tasks) = start(&repos[2], vec![boot]);
    assert_eq!(writer.wait_for_peers(Duration::from_secs(20)), Some(2));
    drop(second);

    // Chunks written through the writer's pipeline, without pause, until it is stopped.
    let pipeline = writer.pipeline();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, written, failed) = (stop_writing.clone(), written.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut coder = ShardCoder::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let chunk: Vec<u8> = (0..1 << 20).map(|i| (i as u64 * 31 + n) as u8).collect();
                match pipeline.put_chunk(&[9; 16], chunk, &mut coder) {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while written.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(written.load(Ordering::Relaxed) >= 3, "no chunk was written");
    let during = threads();
    assert!(
        during.iter().any(|t| t.starts_with("dfs-repair")),
        "the peer's threads: {during:?}"
    );

    // Stop the writer's peer while it writes, then the others.
    let started = Instant::now();
    writer_tasks.stop();
    let stopping = started.elapsed();
    eprintln!(
        "stopped in {stopping:?} with {} chunks written, {} failed",
        written.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(
        stopping < Duration::from_secs(5),
        "stopping took {stopping:?}"
    );
    stop_writing.store(true, Ordering::Relaxed);
    worker.join().expect("writer thread");
    // A write after the stop fails with an error, not a hang or a panic.
    let mut coder = ShardCoder::default();
    let after = writer
        .pipeline()
        .put_chunk(&[9; 16], vec![7; 1 << 20], &mut coder);
    eprintln!("a write after the stop: {:?}", after.as_ref().map(|_| ()));
    for tasks in [second_tasks, first_tasks] {
        let started = Instant::now();
        tasks.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    drop((first, writer));

    // Nothing of the peers is left running (threads end as they are joined; a moment's grace
    // for the kernel to reap them).
    let mut left = extra(&threads(), &before);
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = extra(&threads(), &before);
    }
    assert!(left.is_empty(), "threads left behind: {left:?}");
}
