//! Trust: real `dfs` peers (separate processes on 127.0.0.1) with a hostile one among them,
//! `dfs-hostile` (tests/src/bin/dfs-hostile.rs), which runs the real network code of dfs and
//! lies. What each test shows is listed in docs/security.md.
//!
//! - A holder that replaces every shard it takes with a forgery whose checksum is valid: a
//!   reader that has only the link still gets the right bytes (it tries other shards until
//!   they decode to the chunk id), names the forger, and stores good copies elsewhere.
//! - A peer that tries to overwrite a shard another peer stored is refused, counted as bad
//!   data, and the shard on disk is untouched.
//! - A peer that stores made-up shards as fast as a holder takes them stops at its quota;
//!   others' shards never fill the holder's disk reserve (a tmpfs, as root); a peer outside a
//!   closed network's allow list cannot store anything at all.
//! - A peer that opens 64 bulk links to a holder and stalls each in the middle of a store
//!   gets at most 32 links and a few of the holder's permits: another peer's reads are still
//!   served on bulk links.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dfs_tests::{is_root, metric, random_bytes, storage_network, wait_for, Dfs};

/// A `dfs-hostile` process, killed when dropped.
struct Hostile {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    id: String,
}

impl Hostile {
    fn start(mode: &str, data: &Dfs, args: &[&str]) -> Hostile {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dfs-hostile"))
            .arg(mode)
            .arg("--data")
            .arg(data.data())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dfs-hostile");
        let stdout = child.stdout.take().expect("stdout");
        let mut hostile = Hostile {
            child,
            out: std::io::BufReader::new(stdout),
            id: String::new(),
        };
        hostile.id = hostile.next_line();
        hostile
    }

    /// The next line the hostile peer prints.
    fn next_line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .expect("read dfs-hostile's output");
        line.trim().to_string()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a `dfs-hostile` mode to its end; its output lines after the peer id.
fn run_hostile(mode: &str, data: &Dfs, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-hostile"))
        .arg(mode)
        .arg("--data")
        .arg(data.data())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dfs-hostile");
    assert!(out.status.success(), "dfs-hostile {mode}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// `dfs put` of `bytes` by a fresh writer through `boot`: the link.
fn put(bytes: &[u8], boot: &str) -> String {
    let writer = Dfs::new();
    let input = writer.path("input");
    std::fs::write(&input, bytes).expect("write input");
    let run = writer
        .run(&["put", input.to_str().expect("utf-8"), "--peer", boot])
        .ok();
    let link = run.last_line().to_string();
    assert!(link.starts_with("dfs://"), "{run:#?}");
    link
}

/// `dfs get` of `link` by `reader` through `boot`, which must give back `bytes`.
fn get(reader: &Dfs, link: &str, boot: &str, bytes: &[u8]) -> dfs_tests::Run {
    let out = reader.path("out");
    let run = reader
        .run(&[
            "get",
            link,
            "-o",
            out.to_str().expect("utf-8"),
            "--peer",
            boot,
        ])
        .ok();
    assert!(
        std::fs::read(&out).expect("read output") == bytes,
        "the reader got other bytes"
    );
    std::fs::remove_file(&out).expect("remove output");
    run
}

fn held_total(dirs: &[Dfs]) -> usize {
    dirs.iter().map(|d| d.held_files().len()).sum()
}

/// The tests of this file run two at a time, except the one that floods a holder with streams
/// (it keeps both cores busy for 20 s): it runs alone, so the others' reads are not starved of
/// CPU and its own memory figure is its holder's alone.
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A turn beside other tests.
fn shared_turn() -> std::sync::RwLockReadGuard<'static, ()> {
    TURNS.read().unwrap_or_else(|e| e.into_inner())
}

/// A turn alone.
fn exclusive_turn() -> std::sync::RwLockWriteGuard<'static, ()> {
    TURNS.write().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_forged_shard_is_read_around_reported_and_replaced() {
    let _turn = shared_turn();
    // Peers are trusted at once (the hostile one too: it has been "around" long enough), and
    // the stewards wait, so only the reader acts on what it finds.
    let config = "[placement]\ntrust_after_secs = 0\nsteward_delay_secs = 3600\n";
    let (dirs, _nodes, boot) = storage_network(5, config, "5");
    let forger_dir = Dfs::new();
    let forger = Hostile::start("forge", &forger_dir, &["--peer", &boot]);
    wait_for(
        Duration::from_secs(30),
        "every peer to see the forger",
        || {
            dirs.iter()
                .all(|d| dfs_tests::storage_peers_alive(d) >= 5)
                .then_some(())
        },
    );
    // 6 chunks of 4+2 over 6 storage peers: the forger holds one shard of each, once the
    // writer has heard of it (a `dfs put` starts when the peers it sees have been steady for a
    // second, which can be before the forger's next announcement: then it tries again).
    let mut seed = 20;
    let (bytes, link) = loop {
        let before = forger_dir.held_files().len();
        let bytes = random_bytes(24 << 20, seed);
        let link = put(&bytes, &boot);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while forger_dir.held_files().len() < before + 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if forger_dir.held_files().len() >= before + 6 {
            break (bytes, link);
        }
        seed += 1;
        assert!(seed < 24, "the forger was given too few shards in 4 puts");
    };
    std::thread::sleep(Duration::from_millis(300));
    let honest_before = held_total(&dirs);

    let reader = Dfs::new();
    let run = get(&reader, &link, &boot, &bytes);
    // The reader met the forgery (the forger holds a data shard of most chunks) and said who.
    assert!(
        run.stderr.contains(&forger.id) && run.stderr.contains("forged"),
        "the reader did not name the forger {}: {}",
        forger.id,
        run.stderr
    );
    // It stored good copies of the forged shards on honest peers.
    let honest_after = held_total(&dirs);
    assert!(
        honest_after > honest_before,
        "no replacement shard was stored ({honest_before} -> {honest_after})"
    );
    // The forger is not trusted by the peers it lied to... the reader is gone, but a second
    // read goes through just the same.
    get(&reader, &link, &boot, &bytes);
}

#[test]
fn a_stored_shard_cannot_be_overwritten_by_another_peer() {
    let _turn = shared_turn();
    let (dirs, _nodes, boot) = storage_network(2, "[placement]\ntrust_after_secs = 0\n", "5");
    put(&random_bytes(4 << 20, 21), &boot);
    // A put returns once its chunks are durable, which may be before every shard landed, and
    // either peer may be the one that got them first: take a shard from whichever holds one.
    let (holder, (path, chunk, index)) = wait_for(
        Duration::from_secs(10),
        "a storage peer to hold a shard",
        || {
            dirs.iter()
                .find_map(|d| d.held_files().into_iter().next().map(|held| (d, held)))
        },
    );
    let before = std::fs::read(&path).expect("read shard");
    let attacker = Dfs::new();
    let said = run_hostile(
        "overwrite",
        &attacker,
        &[
            "--peer",
            &holder.address(),
            "--chunk",
            &chunk,
            "--index",
            &index.to_string(),
        ],
    );
    assert_eq!(said, vec!["refused: Conflict".to_string()]);
    assert!(
        std::fs::read(&path).expect("read shard") == before,
        "the held shard changed"
    );
    let counted = metric(
        &holder.metrics(),
        "dfs_bad_shards_total{event=\"overwrite\"}",
    );
    assert_eq!(counted, Some(1.0));
}

/// What `dfs-hostile flood` printed: bytes and shards the holder took, and its last answer.
#[derive(Debug, serde::Deserialize)]
struct Flooded {
    stored_bytes: u64,
    shards: u64,
    refusal: String,
}

fn flood(holder: &Dfs, kib: u32) -> Flooded {
    flood_with(&holder.address(), kib, &[])
}

/// [`flood`] of the peer at `address`, with more flags for `dfs-hostile`.
fn flood_with(address: &str, kib: u32, extra: &[&str]) -> Flooded {
    let attacker = Dfs::new();
    let kib = kib.to_string();
    let mut args = vec!["--peer", address, "--shard-kib", &kib];
    args.extend_from_slice(extra);
    let said = run_hostile("flood", &attacker, &args);
    let line = said.last().expect("flood prints a summary");
    serde_json::from_str(line).expect("flood summary JSON")
}

#[test]
fn a_flooding_peer_stops_at_its_quota() {
    let _turn = shared_turn();
    let holder = Dfs::new();
    // 32 MiB offered, at most half of it to any one peer.
    holder.configure("[network]\ncapacity = 33554432\npeer_quota_percent = 50\n");
    let _node = holder.node(&[]);
    let first = flood(&holder, 1024);
    assert_eq!(first.refusal, "refused: Quota", "{first:?}");
    // Shards of 1 MiB: 15 of them fit under a quota of 16 MiB less rounding.
    assert!(
        first.stored_bytes <= 16 << 20 && first.stored_bytes >= 15 << 20,
        "{first:?}"
    );
    // A second stranger gets its own share, and no more than what is left.
    let second = flood(&holder, 1024);
    assert!(
        second.refusal == "refused: Quota" || second.refusal == "refused: Full",
        "{second:?}"
    );
    assert!(second.stored_bytes >= 15 << 20, "{second:?}");
    let storage = holder.status().expect("the holder still answers").storage;
    assert!(storage["used"].as_u64() <= Some(32 << 20), "{storage}");
    assert_eq!(
        storage["shards_held"].as_u64(),
        Some(first.shards + second.shards),
        "{storage}"
    );
}

/// The holder's data directory is a 128 MiB tmpfs: with no per-peer quota, a flood fills it up
/// to the last 5% of the disk and no further (RocksDB's own files, its preallocated log among
/// them, take their part first), and the holder restarts on it (RocksDB opens and writes) with
/// every shard it took accounted for.
#[test]
fn others_shards_never_fill_the_disk_reserve() {
    let _turn = shared_turn();
    if !is_root("mounting a tmpfs") {
        return;
    }
    let holder = Dfs::new();
    std::fs::create_dir(holder.data()).expect("create data dir");
    let data = holder.data();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128m,mode=0700", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount a tmpfs at {}", data.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    holder.configure("[network]\npeer_quota_percent = 100\nreserve_percent = 5\n");
    let node = holder.node(&[]);
    let flooded = flood(&holder, 512);
    assert_eq!(flooded.refusal, "refused: Full", "{flooded:?}");
    let (free, total) = disk_space(&data);
    let reserve = total / 100 * 5;
    assert!(
        free >= reserve - (1 << 20),
        "others' shards ate into the reserve: {free} of {total} bytes free"
    );
    // Filled up to the reserve: not stopped short of it.
    assert!(
        free < reserve + (2 << 20),
        "the flood stopped early: {free} of {total} bytes free"
    );
    assert!(flooded.stored_bytes >= 16 << 20, "{flooded:?}");
    assert_eq!(node.terminate(), Some(0));
    let _node = holder.node(&[]);
    let storage = holder
        .status()
        .expect("the holder answers after a restart")
        .storage;
    assert_eq!(
        storage["shards_held"].as_u64(),
        Some(flooded.shards),
        "{storage}"
    );
}

/// (available, total) bytes of the filesystem at `path`, as `df` reports them.
fn disk_space(path: &std::path::Path) -> (u64, u64) {
    let out = Command::new("df")
        .args(["-B1", "--output=avail,size"])
        .arg(path)
        .output()
        .expect("run df");
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "df said {text}");
    (numbers[0], numbers[1])
}

#[test]
fn a_closed_network_takes_nothing_from_strangers() {
    let _turn = shared_turn();
    let member = Dfs::new();
    let _member_node = member.node(&[]);
    let member_id = member.status().expect("member status").id;
    let holder = Dfs::new();
    holder.configure(&format!("[network]\nallow = [\"{member_id}\"]\n"));
    let _holder_node = holder.node(&["--peer", &member.address()]);
    // The invited peer connects and sees the holder as a storage peer.
    wait_for(
        Duration::from_secs(30),
        "the member to see the holder",
        || (dfs_tests::storage_peers_alive(&member) >= 1).then_some(()),
    );
    let flooded = flood(&holder, 64);
    assert_eq!(flooded.shards, 0, "{flooded:?}");
    assert!(flooded.refusal.starts_with("error:"), "{flooded:?}");
    assert!(holder.held_files().is_empty());
    // No connection of the stranger's stays open at the holder.
    let strangers = holder
        .peers()
        .into_iter()
        .filter(|p| p.id != member_id && p.connected)
        .count();
    assert_eq!(strangers, 0);
}

/// `dfs network-key` into `dir/name`: the key file's path.
fn network_key(d: &Dfs, name: &str) -> String {
    let path = d.path(name);
    let path = path.to_str().expect("utf-8").to_string();
    let made = d.run(&["network-key", &path]).ok();
    assert!(made.stdout.contains("fingerprint"), "{made:?}");
    path
}

#[test]
fn a_private_network_takes_nothing_from_peers_without_its_key() {
    let _turn = shared_turn();
    let holder = Dfs::new();
    let key = network_key(&holder, "swarm.key");
    // The key is never written over, and a key others can read is refused.
    holder.run(&["network-key", &key]).fails_with("File exists");
    let open = holder.path("open.key");
    std::fs::write(&open, std::fs::read(&key).expect("read key")).expect("copy key");
    holder
        .run(&["node", "--network-key", open.to_str().expect("utf-8")])
        .fails_with("chmod 600");
    // A private network speaks TCP only, and says so when asked for QUIC.
    holder
        .run(&[
            "node",
            "--network-key",
            &key,
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .fails_with("TCP only");

    holder.configure("[network]\ncapacity = 16777216\n");
    let _node = holder.node(&["--network-key", &key]);
    let status = holder.status().expect("holder status");
    assert!(
        status.addresses.iter().all(|a| !a.contains("quic")),
        "{:?}",
        status.addresses
    );
    let shown = holder.run(&["status"]).ok();
    assert!(shown.stdout.contains("key fingerprint"), "{shown:?}");
    let address = holder.address();

    // A peer with the key connects and stores (up to its quota of the holder).
    let member = flood_with(&address, 1024, &["--key", &key]);
    assert!(member.shards > 0, "{member:?}");
    assert_eq!(member.refusal, "refused: Quota", "{member:?}");
    let held = holder.held_files().len();

    // Peers without it, or with another key, cannot even connect.
    let stranger = flood_with(&address, 1024, &[]);
    assert_eq!(stranger.shards, 0, "{stranger:?}");
    assert!(stranger.refusal.starts_with("error:"), "{stranger:?}");
    let elsewhere = Dfs::new();
    let other = network_key(&elsewhere, "other.key");
    let wrong = flood_with(&address, 1024, &["--key", &other]);
    assert_eq!(wrong.shards, 0, "{wrong:?}");
    assert!(wrong.refusal.starts_with("error:"), "{wrong:?}");
    assert_eq!(holder.held_files().len(), held);
    // Only the member ever connected, and it is gone.
    wait_for(Duration::from_secs(10), "no connection left", || {
        holder
            .peers()
            .into_iter()
            .all(|p| !p.connected)
            .then_some(())
    });
}

/// What `dfs-hostile streams` printed.
#[derive(Debug, serde::Deserialize)]
struct Streams {
    opened: u64,
    cut: u64,
}

/// The most a holder's resident memory may grow under `dfs-hostile streams`: the store budget
/// (64 MiB, `wire::INBOUND_BUDGET_KIB`), the small-request budget (16 MiB) and room for Yamux
/// buffers and the allocator.
const STREAMS_GROWTH_KIB: u64 = 160 << 10;

#[test]
fn a_peer_opening_every_stream_it_can_stays_within_a_holders_memory() {
    let _turn = exclusive_turn();
    // No bulk links: every shard a reader fetches goes over the libp2p connections under attack.
    let config = "[placement]\ntrust_after_secs = 0\n[network]\nbulk_links = false\n";
    let (dirs, nodes, boot) = storage_network(2, config, "5");
    let bytes = random_bytes(8 << 20, 23);
    let link = put(&bytes, &boot);
    let holder = &dirs[0];
    let (_, peak_before) = nodes[0].memory_kib();

    let mut attacker = Hostile::start(
        "streams",
        &Dfs::new(),
        &["--peer", &holder.address(), "--links", "8", "--secs", "20"],
    );
    // While the streams are held, a reader still gets every byte (4 of the 6 shards of each
    // chunk, so some from the holder under attack: 2 peers hold 3 each).
    std::thread::sleep(Duration::from_secs(4));
    let reader = Dfs::new();
    let started = std::time::Instant::now();
    get(&reader, &link, &boot, &bytes);
    eprintln!("read under attack in {:?}", started.elapsed());
    let refused = metric(&holder.metrics(), "dfs_inbound_refused_total").unwrap_or(0.0);
    let said: Streams = serde_json::from_str(&attacker.next_line()).expect("streams summary");
    let (_, peak) = nodes[0].memory_kib();
    eprintln!(
        "holder peak RSS {} MiB before, {} MiB under attack; {said:?}; {refused} refused",
        peak_before >> 10,
        peak >> 10
    );
    // The holder was asked for far more streams than its budgets hold: the attack reached the
    // limits, and they held.
    assert!(said.opened > 1000 && said.cut > 1000, "{said:?}");
    assert!(refused > 0.0, "the budget was never reached");
    assert!(
        peak < peak_before + STREAMS_GROWTH_KIB,
        "the holder grew from {peak_before} KiB to {peak} KiB"
    );
    // And it still serves: a second read after the attack.
    drop(attacker);
    get(&reader, &link, &boot, &bytes);
}

/// What `dfs-hostile stall` printed.
#[derive(Debug, serde::Deserialize)]
struct Stalled {
    opened: usize,
    refused: usize,
    error: String,
}

/// Requests the peer on `d` served on bulk links (`dfs status --json`).
fn bulk_served(d: &Dfs) -> u64 {
    let run = d.run(&["status", "--json"]).ok();
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    status["bulk"]["served"]
        .as_u64()
        .expect("bulk links are on")
}

#[test]
fn stalled_bulk_links_do_not_stop_another_peers_reads() {
    let _turn = shared_turn();
    let (dirs, _nodes, boot) = storage_network(3, "[placement]\ntrust_after_secs = 0\n", "5");
    let bytes = random_bytes(8 << 20, 22);
    let link = put(&bytes, &boot);

    let holder = &dirs[0];
    let mut staller = Hostile::start(
        "stall",
        &Dfs::new(),
        &["--peer", &holder.address(), "--links", "64"],
    );
    let stalled: Stalled = serde_json::from_str(&staller.next_line()).expect("stall summary");
    // The holder took no more links than it lets one peer have (32, though a link whose body
    // missed its deadline gives its place back), and refused the rest.
    assert!(stalled.opened >= 8 && stalled.refused > 0, "{stalled:?}");
    assert!(stalled.error.contains("too many"), "{stalled:?}");

    let before = bulk_served(holder);
    let reader = Dfs::new();
    get(&reader, &link, &boot, &bytes);
    // Its requests to the holder were answered on bulk links, not turned away as busy.
    let after = bulk_served(holder);
    assert!(
        after > before,
        "the holder served the reader nothing on bulk links ({before} -> {after})"
    );
    drop(staller);
}

/// A TCP proxy on 127.0.0.1 that forwards every connection to `to`, flipping one bit of what
/// comes back, `at` bytes into each connection: a link that changes a byte in transit.
struct Flipper {
    port: u16,
    connections: Arc<AtomicUsize>,
    flipped: Arc<AtomicBool>,
}

impl Flipper {
    fn start(to: std::net::SocketAddr, at: usize) -> Flipper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let flipped = Arc::new(AtomicBool::new(false));
        let (count, flip) = (connections.clone(), flipped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || pipe(client_in, server, None));
                let flip = Some((at, flip.clone()));
                std::thread::spawn(move || pipe(server_in, client, flip));
            }
        });
        Flipper {
            port,
            connections,
            flipped,
        }
    }
}

/// Copy `from` to `to` until either closes; flip the low bit of byte `at` on the way when
/// asked, and say so.
fn pipe(mut from: TcpStream, mut to: TcpStream, mut flip: Option<(usize, Arc<AtomicBool>)>) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    let mut passed = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, done)) = &flip {
            if (passed..passed + n).contains(at) {
                buf[at - passed] ^= 1;
                done.store(true, Ordering::SeqCst);
                flip = None;
            }
        }
        passed += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// An nftables table that sends this machine's TCP connections to 127.0.0.1:`port` to
/// 127.0.0.1:`to` instead; removed when dropped.
struct Redirect;

impl Redirect {
    fn new(port: u16, to: u16) -> Redirect {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", "dfs_flip_test"])
            .output();
        let rules = format!(
            "table ip dfs_flip_test {{\n chain out {{\n  type nat hook output priority -100;\n  \
             ip daddr 127.0.0.1 tcp dport {port} redirect to :{to}\n }}\n}}\n"
        );
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut nft| {
                use std::io::Write;
                nft.stdin
                    .take()
                    .expect("nft stdin")
                    .write_all(rules.as_bytes())?;
                nft.wait_with_output()
            })
            .expect("run nft");
        assert!(out.status.success(), "nft refused the redirect: {out:?}");
        Redirect
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", "dfs_flip_test"])
            .output();
    }
}

/// A free TCP port on 127.0.0.1 (for a moment).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn a_byte_flipped_in_transit_on_a_bulk_link_is_fetched_again_and_blames_nobody() {
    let _turn = shared_turn();
    if !is_root("redirecting a bulk link through a proxy (nftables)") {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        dfs_tests::cannot_run("nft (nftables) is not installed");
        return;
    }
    // The holder's bulk links listen on 127.0.0.1:P and 127.0.0.3:P; the reader, connected to
    // it at 127.0.0.1, is sent through the proxy, which goes on to 127.0.0.3:P.
    let port = free_port();
    let holder = Dfs::new();
    holder.configure(&format!(
        "[placement]\ntrust_after_secs = 0\n[network]\nbulk_port = {port}\n"
    ));
    let _holder_node = holder.node(&[
        "--grace",
        "5",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        "/ip4/127.0.0.3/tcp/0",
    ]);
    let boot = holder
        .status()
        .expect("holder status")
        .addresses
        .into_iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        .expect("a 127.0.0.1 address");
    let other = Dfs::new();
    other.configure("[placement]\ntrust_after_secs = 0\n");
    let _other_node = other.node(&["--grace", "5", "--peer", &boot]);
    wait_for(
        Duration::from_secs(30),
        "the peers to see each other",
        || {
            (dfs_tests::storage_peers_alive(&holder) >= 1
                && dfs_tests::storage_peers_alive(&other) >= 1)
                .then_some(())
        },
    );
    let bytes = random_bytes(8 << 20, 24);
    let link = put(&bytes, &boot);

    let proxy = Flipper::start(
        format!("127.0.0.3:{port}").parse().expect("address"),
        64 << 10,
    );
    let _redirect = Redirect::new(port, proxy.port);
    let reader = Dfs::new();
    let run = get(&reader, &link, &boot, &bytes);
    assert!(
        proxy.connections.load(Ordering::SeqCst) > 0,
        "the reader's bulk links did not go through the proxy"
    );
    assert!(
        proxy.flipped.load(Ordering::SeqCst),
        "nothing passed the flip point"
    );
    // The reader noticed (the shards did not give the chunk back, or a shard failed its check),
    // fetched again (each shard checked; over libp2p when the bulk link changed it again), and
    // blamed nobody.
    assert!(
        run.stderr.contains("changed in flight"),
        "the reader did not notice: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("does not verify") && !run.stderr.contains("scored down"),
        "the honest holder was blamed: {}",
        run.stderr
    );
    // The holder served on, and counted no bad data of anyone's.
    let bad = metric(&holder.metrics(), "dfs_bad_shards_total").unwrap_or(0.0);
    assert_eq!(bad, 0.0);
}
