//! `dfs-hostile`: a peer that lies, for the trust tests (tests/tests/hostile.rs). It runs the
//! real network code of dfs (`dfs_node::testing::Network`: libp2p, the shard protocol, bulk
//! links) from a process of its own, and misbehaves in one way per mode:
//!
//! - `forge`: a storage peer that takes shards like any other, then replaces every shard it
//!   takes with one of its own making whose checksum is valid (the body changed, the header
//!   sealed again), serves those, and says they are intact when asked to check them.
//! - `overwrite`: fetches shard INDEX of CHUNK from a holder, makes up another image of it
//!   with a valid checksum, and tries to store that over the holder's copy; prints the answer.
//! - `flood`: stores made-up shards (each well formed, of a chunk that does not exist) on a
//!   holder as fast as it takes them until it refuses; prints what it took as JSON.
//! - `stall`: opens LINKS bulk links to a holder and on each sends the head of a store whose
//!   body never comes, then holds them open; prints how many links the holder took as JSON.
//! - `streams`: opens as many connections to a holder as it takes, and on them as many
//!   shard-protocol streams as it lets in, each announcing a store of a full-size shard and
//!   sending all of it but the last byte; opens new ones as the holder drops them, for SECS
//!   seconds; prints how many it opened and how many the holder cut short as JSON. This mode
//!   runs a bare libp2p swarm of its own (the real transport: TCP, Noise, Yamux) rather than
//!   dfs's `Network`, which would never send a request it cannot finish.
//!
//! It is built only as a test binary of dfs-tests: nothing of it is in the `dfs` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dfs_node::testing::{NetError, NetOptions, Network, Request, Response, ShardHeader};
use dfs_node::NetworkConfig;
use dfs_node::Repo;
use dfs_placement::{ChunkId, Layout};

fn usage() -> ! {
    eprintln!(
        "usage: dfs-hostile forge --data DIR --peer ADDR\n       \
         dfs-hostile overwrite --data DIR --peer ADDR --chunk HEX --index N\n       \
         dfs-hostile flood --data DIR --peer ADDR [--shard-kib N]\n       \
         dfs-hostile stall --data DIR --peer ADDR [--links N]\n       \
         dfs-hostile streams --data DIR --peer ADDR [--links N] [--secs N]\n\n\
         Every mode takes --key FILE: a private network key to connect with."
    );
    std::process::exit(2)
}

struct Args {
    mode: String,
    data: PathBuf,
    peer: String,
    chunk: Option<ChunkId>,
    index: u8,
    shard_kib: usize,
    links: usize,
    secs: u64,
    key: String,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut out = Args {
        mode,
        data: PathBuf::new(),
        peer: String::new(),
        chunk: None,
        index: 0,
        shard_kib: 1024,
        links: 64,
        secs: 20,
        key: String::new(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--data" => out.data = value.into(),
            "--peer" => out.peer = value,
            "--chunk" => out.chunk = Some(value.parse().unwrap_or_else(|_| usage())),
            "--index" => out.index = value.parse().unwrap_or_else(|_| usage()),
            "--shard-kib" => out.shard_kib = value.parse().unwrap_or_else(|_| usage()),
            "--links" => out.links = value.parse().unwrap_or_else(|_| usage()),
            "--key" => out.key = value,
            "--secs" => out.secs = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if out.data.as_os_str().is_empty() || out.peer.is_empty() {
        usage()
    }
    out
}

/// The same shard header over a changed body: passes every check a holder or a reader can
/// make without the writer's hash of it or the chunk's other shards.
fn forge(image: &[u8]) -> Option<Vec<u8>> {
    let (header, body) = ShardHeader::decode(image).ok()?;
    let mut body = body.to_vec();
    for b in body.iter_mut().step_by(97) {
        *b ^= 0xA5;
    }
    Some(header.encode(&body))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    if args.mode == "streams" {
        streams::run(&args.peer, args.links, Duration::from_secs(args.secs)).await;
        return;
    }
    let repo = Arc::new(Repo::open(&args.data).expect("open the data directory"));
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        peers: vec![args.peer.clone()],
        grace_secs: 5,
        key_file: args.key.clone(),
        reserve_percent: 0,
        ..NetworkConfig::default()
    };
    let mut options = NetOptions::from_config(&config).expect("network options");
    options.client = args.mode != "forge";
    let net = Network::start(repo, options).await.expect("start the peer");
    let target = dfs_node::testing::peer_of(&args.peer.parse().expect("peer address"))
        .expect("the peer address names no peer id");
    // Until the target answers (the connection and its protocols take a moment).
    for _ in 0..100 {
        if net.holding(target, ChunkId([0; 32])).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{}", net.local_id());
    match args.mode.as_str() {
        "forge" => forge_what_is_held(&args.data).await,
        "overwrite" => {
            let chunk = args.chunk.unwrap_or_else(|| usage());
            let image = net
                .fetch_shard(target, chunk, args.index)
                .await
                .expect("fetch the shard to forge");
            let forged = forge(&image).expect("the fetched shard decodes");
            let answer = net.request(target, store(chunk, args.index, forged)).await;
            println!("{}", describe(answer));
        }
        "flood" => flood(&net, target, args.shard_kib << 10).await,
        "stall" => stall(&net, target, args.links).await,
        _ => usage(),
    }
    net.shutdown().await;
}

fn store(chunk: ChunkId, index: u8, image: Vec<u8>) -> Request {
    Request::Store {
        chunk,
        index,
        image,
    }
}

fn describe(answer: Result<Response, NetError>) -> String {
    match answer {
        Ok(Response::Refused(r)) => format!("refused: {r:?}"),
        Ok(other) => format!("{other:?}").chars().take(80).collect(),
        Err(e) => format!("error: {e}"),
    }
}

/// Replace each shard file under `DATA/held/shards` with a forgery, forever.
async fn forge_what_is_held(data: &std::path::Path) {
    let root = data.join("held").join("shards");
    let mut done = std::collections::HashSet::new();
    loop {
        for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                if done.contains(&path) {
                    continue;
                }
                let Ok(image) = std::fs::read(&path) else {
                    continue;
                };
                if let Some(forged) = forge(&image) {
                    if std::fs::write(&path, forged).is_ok() {
                        eprintln!("forged {}", path.display());
                        done.insert(path);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Store made-up shards of `len` bytes on `target` until it refuses one; prints
/// `{"stored_bytes": N, "shards": N, "refusal": "..."}`.
async fn flood(net: &Network, target: libp2p::PeerId, len: usize) {
    let layout = Layout::Replicated { copies: 1 };
    let body_len = len.saturating_sub(dfs_node::testing::HEADER_LEN).max(1);
    let mut stored = 0u64;
    let mut shards = 0u64;
    let refusal = loop {
        let chunk = ChunkId(rand::random());
        let header = ShardHeader {
            chunk,
            layout,
            index: 0,
            chunk_len: body_len as u32,
        };
        // Content does not matter (the chunk id is made up and random): one byte repeated.
        let body = vec![rand::random::<u8>(); body_len];
        let image = header.encode(&body);
        let n = image.len() as u64;
        match net.request(target, store(chunk, 0, image)).await {
            Ok(Response::Stored) => {
                stored += n;
                shards += 1;
            }
            other => break describe(other),
        }
        if shards > 1_000_000 {
            break "never refused".into();
        }
    };
    println!("{{\"stored_bytes\": {stored}, \"shards\": {shards}, \"refusal\": {refusal:?}}}");
}

/// Open `links` bulk links to `target`, each stalled in the body of a 4 MiB store; print
/// `{"opened": N, "refused": N, "error": "..."}` and hold them until killed.
async fn stall(net: &Network, target: libp2p::PeerId, links: usize) {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut error = String::new();
    for _ in 0..links {
        match dfs_node::testing::bulk::open_stalled_store(net, target, 4 << 20).await {
            Ok(stream) => open.push(stream),
            Err(e) => {
                refused += 1;
                error = e;
            }
        }
    }
    println!(
        "{{\"opened\": {}, \"refused\": {refused}, \"error\": {error:?}}}",
        open.len()
    );
    std::future::pending::<()>().await;
}

/// The `streams` mode: a bare libp2p swarm that holds every shard-protocol stream it can open.
mod streams {
    use std::io;
    use std::time::{Duration, Instant};

    use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};

    /// Writes the length of a full-size store and all of its bytes but the last 64 KiB
    /// quickly, then one byte every half second (so a stream the holder drops is noticed and
    /// replaced); never reads an answer.
    #[derive(Clone, Default)]
    struct Withholding;

    impl request_response::Codec for Withholding {
        type Protocol = StreamProtocol;
        type Request = usize;
        type Response = ();

        async fn read_request<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
        ) -> io::Result<usize> {
            Err(io::Error::other("this peer serves nothing"))
        }

        async fn read_response<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
        ) -> io::Result<()> {
            std::future::pending().await
        }

        async fn write_request<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            len: usize,
        ) -> io::Result<()> {
            io.write_all(&(len as u32).to_be_bytes()).await?;
            let piece = vec![0u8; 64 << 10];
            let mut left = len - piece.len();
            while left > 0 {
                let n = left.min(piece.len());
                io.write_all(&piece[..n]).await?;
                left -= n;
            }
            loop {
                io.flush().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                io.write_all(&[0]).await?;
            }
        }

        async fn write_response<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            _: (),
        ) -> io::Result<()> {
            Ok(())
        }
    }

    pub async fn run(peer: &str, connections: usize, secs: Duration) {
        let addr: Multiaddr = peer.parse().expect("peer address");
        let target = dfs_node::testing::peer_of(&addr).expect("the peer address names no peer id");
        let behaviour = request_response::Behaviour::<Withholding>::new(
            [(
                StreamProtocol::new(dfs_node::testing::wire::PROTOCOL),
                ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(3600))
                .with_max_concurrent_streams(4096),
        );
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| behaviour)
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        println!("{}", swarm.local_peer_id());
        let dial = |swarm: &mut libp2p::Swarm<request_response::Behaviour<Withholding>>| {
            let dial = DialOpts::peer_id(target)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            if let Err(e) = swarm.dial(dial) {
                eprintln!("cannot dial: {e}");
            }
        };
        for _ in 0..connections.max(1) {
            dial(&mut swarm);
        }
        let len = dfs_node::testing::wire::MAX_FRAME - 1024;
        let end = Instant::now() + secs;
        let (mut open, mut opened, mut cut) = (0usize, 0u64, 0u64);
        let mut connected = 0usize;
        while Instant::now() < end {
            // Keep as many streams asked for as the connections carry, at all times (Yamux
            // closes a connection that opens more than 512 streams at once: stay under that).
            while open < connected * 256 {
                swarm.behaviour_mut().send_request(&target, len);
                open += 1;
                opened += 1;
            }
            let event = tokio::time::timeout(Duration::from_millis(100), swarm.next()).await;
            match event {
                Ok(Some(SwarmEvent::ConnectionEstablished { .. })) => connected += 1,
                Ok(Some(SwarmEvent::ConnectionClosed { cause, .. })) => {
                    // The holder closed it (one connection too many) or Yamux did (streams
                    // opened faster than the holder dropped them): connect again.
                    eprintln!("connection closed: {cause:?}");
                    connected = connected.saturating_sub(1);
                    dial(&mut swarm);
                }
                Ok(Some(SwarmEvent::OutgoingConnectionError { error, .. })) => {
                    eprintln!("cannot connect: {error}");
                }
                Ok(Some(SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    ..
                }))) => {
                    open = open.saturating_sub(1);
                    cut += 1;
                }
                _ => {}
            }
        }
        println!("{{\"opened\": {opened}, \"cut\": {cut}, \"connected\": {connected}}}");
    }
}
