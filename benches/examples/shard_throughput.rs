//! Shard throughput between two peers on loopback against a plain TCP copy of the same bytes in
//! the same run (issue 4).
//!
//! Two pairs of peers (`dfs_node::testing::Network`, default options: TCP and QUIC on 127.0.0.1
//! ephemeral ports; one pair with `bulk_links` off, so shards go through libp2p streams with
//! Noise and Yamux, the other over bulk links) run in this process, on one tokio runtime, on data directories under `/dev/shm` when
//! there is one: the disk stays out of the numbers, and the `syncfs` the held-shard store makes
//! after every shard is nearly free. `BENCH_DIR=/var/tmp` puts them on a disk instead. Peer A
//! dials B's TCP address and waits until B is alive and connected. Each round then moves MIB
//! shard images (80-byte header + 1 MiB random body: shards of 4 MiB chunks in 4+2, each under
//! its own random chunk id) six ways:
//!
//! - `tcp x1`: one plain tokio TCP connection on 127.0.0.1 writes every image to a reader that
//!   discards them (nodelay, as the peers' TCP transport sets it);
//! - `tcp x8`: the same images over 8 parallel connections;
//! - `store libp2p` / `store bulk`: `store_shard` from A to B, 8 requests in flight (B
//!   verifies each image and writes it under DATA/held/);
//! - `fetch libp2p` / `fetch bulk`: `fetch_shard` of the same shards back from B, 8 in flight
//!   (A verifies each image; after the clock stops every image is compared with the one
//!   stored).
//!
//! Times run from the first byte sent to the last byte received (TCP) or the last answer. Each
//! round uses fresh chunk ids and copies over plain TCP 5 times of each kind (one copy takes
//! ~50 ms, too short for one sample to be steady); the table shows the median over all rounds
//! (the slower middle one for an even count) and each median's MB/s over plain TCP's (1.00x =
//! as fast as plain TCP).
//! MB = 1e6 bytes; the byte count includes the 80-byte headers.
//!
//! `cargo run --release -p dfs-benches --example shard_throughput [-- MIB [ROUNDS]]`
//! (defaults: 256 MiB, 3 rounds)

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use dfs_benches::{random_bytes, scratch_dir, CHUNK, MIB};
use dfs_node::testing::{parse_addr, NetOptions, Network};
use dfs_node::testing::{ShardHeader, HEADER_LEN};
use dfs_node::NetworkConfig;
use dfs_node::PeerState;
use dfs_node::Repo;
use dfs_placement::{ChunkId, Layout};
use futures::stream::{self, StreamExt, TryStreamExt};
use libp2p::PeerId;
use rand::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const DEFAULT_MIB: usize = 256;
const DEFAULT_ROUNDS: usize = 3;
/// Shard requests in flight at once.
const IN_FLIGHT: usize = 8;
/// Connections of the parallel TCP baseline.
const TCP_STREAMS: usize = 8;
/// Plain TCP copies of each kind per round: one takes ~50 ms, so single samples are noisy.
const TCP_REPEATS: usize = 5;
const LAYOUT: Layout = Layout::Erasure { data: 4, parity: 2 };
/// Shards stored and fetched (untimed) before the first round: opens the streams and the
/// allocator's pools so round 1 is not an outlier.
const WARM_UP: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// One shard image and the name it is stored under.
struct Shard {
    chunk: ChunkId,
    index: u8,
    image: Vec<u8>,
}

/// Images of `bodies` under fresh random chunk ids.
fn seal_all(bodies: &[u8], rng: &mut impl RngCore) -> Vec<Shard> {
    let shard_len = LAYOUT.shard_len(CHUNK);
    bodies
        .chunks(shard_len)
        .enumerate()
        .map(|(i, body)| {
            let mut id = [0u8; 32];
            rng.fill_bytes(&mut id);
            let header = ShardHeader {
                chunk: ChunkId(id),
                layout: LAYOUT,
                index: (i % LAYOUT.shard_count()) as u8,
                chunk_len: CHUNK as u32,
            };
            let mut image = Vec::with_capacity(HEADER_LEN + body.len());
            image.extend_from_slice(&header.seal(body));
            image.extend_from_slice(body);
            Shard {
                chunk: header.chunk,
                index: header.index,
                image,
            }
        })
        .collect()
}

fn total_bytes(shards: &[Shard]) -> usize {
    shards.iter().map(|s| s.image.len()).sum()
}

/// Write all of `buf` to `socket` (the plain way: no buffering layer, no copies).
async fn write_all(socket: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        socket.writable().await?;
        match socket.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read `socket` to its end into a scratch buffer; the number of bytes read.
async fn discard(socket: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    loop {
        socket.readable().await?;
        match socket.try_read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Write every image over `streams` loopback TCP connections (image i on connection
/// i % streams) to a reader that discards them; seconds until the reader has seen every byte.
async fn tcp_copy(shards: &Arc<Vec<Shard>>, streams: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let expected = total_bytes(shards) as u64;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut readers = JoinSet::new();
        for _ in 0..streams {
            let (socket, _) = listener.accept().await?;
            readers.spawn(discard(socket));
        }
        let mut got = 0;
        while let Some(r) = readers.join_next().await {
            got += r??;
        }
        anyhow::Ok(got)
    });
    let mut writers = JoinSet::new();
    for s in 0..streams {
        let shards = Arc::clone(shards);
        writers.spawn(async move {
            let socket = TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            for shard in shards.iter().skip(s).step_by(streams) {
                write_all(&socket, &shard.image).await?;
            }
            // Dropping the socket closes it once the queued bytes are sent: the reader's EOF.
            io::Result::Ok(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r?.context("TCP writer failed")?;
    }
    let got = reader.await?.context("TCP reader failed")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        got == expected,
        "TCP reader got {got} bytes, expected {expected}"
    );
    Ok(secs)
}

/// Store every shard on `to`, IN_FLIGHT at a time; seconds until the last is acknowledged.
async fn store_all(from: &Network, to: PeerId, shards: &[Shard]) -> Result<f64> {
    let start = Instant::now();
    stream::iter(shards)
        .map(|s| async move {
            let index = s.index;
            from.store_shard(to, s.chunk, index, &[&s.image])
                .await
                .with_context(|| format!("storing shard {} #{index}", s.chunk.short()))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Fetch every shard back from `to`, IN_FLIGHT at a time (each verified by `fetch_shard`);
/// seconds until the last arrives. The images are compared with the originals afterwards.
async fn fetch_all(from: &Network, to: PeerId, shards: &[Shard]) -> Result<f64> {
    let start = Instant::now();
    let fetched: Vec<(usize, Vec<u8>)> = stream::iter(shards.iter().enumerate())
        .map(|(i, s)| async move {
            from.fetch_shard(to, s.chunk, s.index)
                .await
                .map(|image| (i, image))
                .with_context(|| format!("fetching shard {} #{}", s.chunk.short(), s.index))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        fetched.len() == shards.len(),
        "fetched {} shards of {}",
        fetched.len(),
        shards.len()
    );
    for (i, image) in fetched {
        ensure!(
            image == shards[i].image,
            "shard {} #{} came back different",
            shards[i].chunk.short(),
            shards[i].index
        );
    }
    Ok(secs)
}

/// A running peer on a fresh data directory.
struct Peer {
    network: Network,
    /// Removed on drop, after the peer has stopped.
    dir: tempfile::TempDir,
}

impl Peer {
    async fn start(name: &str, bulk_links: bool) -> Result<Self> {
        let prefix = format!("dfs-shard-bench-{name}-");
        let dir = match std::env::var_os("BENCH_DIR") {
            Some(base) => tempfile::Builder::new().prefix(&prefix).tempdir_in(base),
            None => scratch_dir(&prefix),
        }
        .context("cannot create a temporary data directory")?;
        let repo = Repo::open(dir.path())
            .with_context(|| format!("cannot open a data directory at {}", dir.path().display()))?;
        let options = NetOptions::from_config(&NetworkConfig {
            bulk_links,
            ..NetworkConfig::default()
        })?;
        let network = Network::start(Arc::new(repo), options)
            .await
            .with_context(|| format!("cannot start peer {name}"))?;
        Ok(Self { network, dir })
    }

    /// The peer's TCP address (`/ip4/127.0.0.1/tcp/../p2p/..`), once it listens.
    async fn tcp_address(&self) -> Result<String> {
        let wait = async {
            loop {
                let status = self.network.status().await?;
                if let Some(addr) = status.addresses.iter().find(|a| a.contains("/tcp/")) {
                    return anyhow::Ok(addr.clone());
                }
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .context("the peer did not listen on TCP within 30 s")?
    }
}

/// Two peers, the first connected to the second.
struct Pair;

impl Pair {
    async fn start(name: &str, bulk_links: bool) -> Result<(Peer, Peer)> {
        let a = Peer::start(&format!("{name}-a"), bulk_links).await?;
        let b = Peer::start(&format!("{name}-b"), bulk_links).await?;
        let b_id = b.network.local_id();
        let b_addr = b.tcp_address().await?;
        a.tcp_address().await?;
        let setup = Instant::now();
        a.network
            .dial(parse_addr("peer address", &b_addr)?)
            .await
            .context("cannot dial a peer")?;
        wait_connected(&a.network, &b_id.to_string()).await?;
        eprintln!(
            "{name}: peer a dialled b at {b_addr}: alive and connected after {:.0} ms",
            setup.elapsed().as_secs_f64() * 1e3
        );
        Ok((a, b))
    }
}

/// Wait until `from` sees `to` alive and connected.
async fn wait_connected(from: &Network, to: &str) -> Result<()> {
    let wait = async {
        loop {
            let peers = from.peers().await?;
            if peers
                .iter()
                .any(|p| p.id == to && p.state == PeerState::Alive && p.connected)
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, wait)
        .await
        .with_context(|| format!("peer {to} was not alive and connected within 30 s"))?
}

/// `DIR (fstype)` for the filesystem holding `path`, from /proc/self/mounts.
fn filesystem_of(path: &std::path::Path) -> String {
    let dir = path.parent().unwrap_or(path);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let fstype = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then_some((point.len(), fstype))
        })
        .max()
        .map_or("?", |(_, t)| t);
    format!("{} ({fstype})", dir.display())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn positive_arg(args: &[String], i: usize, name: &str, default: usize) -> Result<usize> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{name} must be a positive integer, got {s:?}"),
        },
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib = positive_arg(&args, 0, "MIB", DEFAULT_MIB)?;
    let rounds = positive_arg(&args, 1, "ROUNDS", DEFAULT_ROUNDS)?;
    let shard_len = LAYOUT.shard_len(CHUNK);
    ensure!(
        shard_len == MIB,
        "4+2 shards of a 4 MiB chunk should be 1 MiB, got {shard_len}"
    );

    // Two pairs of peers: one moves shards through libp2p streams (Noise, Yamux), the other
    // over bulk links.
    let (a, b) = Pair::start("libp2p", false).await?;
    let (c, d) = Pair::start("bulk", true).await?;
    let pairs = [(&a, &b), (&c, &d)];

    let bodies = random_bytes(mib * MIB, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let warm_up = seal_all(&bodies[..WARM_UP.min(mib) * MIB], &mut rng);
    for (from, to) in pairs {
        let to = to.network.local_id();
        store_all(&from.network, to, &warm_up).await?;
        fetch_all(&from.network, to, &warm_up).await?;
    }
    drop(warm_up);

    let names = [
        "tcp x1",
        "tcp x8",
        "store libp2p",
        "fetch libp2p",
        "store bulk",
        "fetch bulk",
    ];
    let mut secs = vec![Vec::new(); names.len()];
    let mut bytes = 0;
    for round in 1..=rounds {
        let shards = Arc::new(seal_all(&bodies, &mut rng));
        bytes = total_bytes(&shards);
        let mut times = vec![Vec::new(); names.len()];
        for _ in 0..TCP_REPEATS {
            times[0].push(tcp_copy(&shards, 1).await?);
            times[1].push(tcp_copy(&shards, TCP_STREAMS).await?);
        }
        for (i, (from, to)) in pairs.iter().enumerate() {
            let to = to.network.local_id();
            times[2 + 2 * i].push(store_all(&from.network, to, &shards).await?);
            times[3 + 2 * i].push(fetch_all(&from.network, to, &shards).await?);
        }
        let speeds: Vec<String> = names
            .iter()
            .zip(&times)
            .map(|(n, t)| format!("{n} {:.0}", bytes as f64 / 1e6 / median(t)))
            .collect();
        eprintln!("round {round}/{rounds} MB/s: {}", speeds.join(", "));
        for (s, t) in secs.iter_mut().zip(times) {
            s.extend(t);
        }
    }
    for peer in [&a, &b, &c, &d] {
        peer.network.shutdown().await;
    }

    let medians: Vec<f64> = secs.iter().map(|s| median(s)).collect();
    let mbps: Vec<f64> = medians.iter().map(|t| bytes as f64 / 1e6 / t).collect();
    println!(
        "{} shards of 1 MiB + 80 B header (4+2 shards of 4 MiB chunks), two pairs of peers on \
         127.0.0.1 TCP in one process (shards through libp2p streams, and over bulk links), {IN_FLIGHT} shard requests in flight; {} cores; median of {rounds} \
         rounds ({TCP_REPEATS} TCP copies of each kind per round); data directories on {}",
        mib,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        filesystem_of(b.dir.path())
    );
    println!(
        "{:<12} {:>6} {:>8} {:>8} {:>10} {:>10}",
        "operation", "MiB", "seconds", "MB/s", "vs tcp x1", "vs tcp x8"
    );
    for (i, name) in names.iter().enumerate() {
        println!(
            "{:<12} {:>6.1} {:>8.3} {:>8.0} {:>9.2}x {:>9.2}x",
            name,
            bytes as f64 / MIB as f64,
            medians[i],
            mbps[i],
            mbps[i] / mbps[0],
            mbps[i] / mbps[1]
        );
    }
    Ok(())
}
