//! `dfs-hostile`: a peer that lies, for the trust tests (tests/tests/hostile.rs). It runs the
//! real network code of dfs (`dfs_node::net::Network`: libp2p, the shard protocol, bulk
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
//!
//! It is built only as a test binary of dfs-tests: nothing of it is in the `dfs` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dfs_node::config::NetworkConfig;
use dfs_node::net::{NetError, NetOptions, Network, Request, Response};
use dfs_node::shard::ShardHeader;
use dfs_node::Repo;
use dfs_placement::{ChunkId, Layout};

fn usage() -> ! {
    eprintln!(
        "usage: dfs-hostile forge --data DIR --peer ADDR\n       \
         dfs-hostile overwrite --data DIR --peer ADDR --chunk HEX --index N\n       \
         dfs-hostile flood --data DIR --peer ADDR [--shard-kib N]\n       \
         dfs-hostile stall --data DIR --peer ADDR [--links N]\n\n\
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
    let repo = Arc::new(Repo::open(&args.data).expect("open the data directory"));
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        peers: vec![args.peer.clone()],
        grace_secs: 5,
        key_file: args.key.clone(),
        ..NetworkConfig::default()
    };
    let mut options = NetOptions::from_config(&config).expect("network options");
    options.client = args.mode != "forge";
    let net = Network::start(repo, options).await.expect("start the peer");
    let target = dfs_node::net::peer_of(&args.peer.parse().expect("peer address"))
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
    let body_len = len.saturating_sub(dfs_node::shard::HEADER_LEN).max(1);
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
        match dfs_node::net::bulk::open_stalled_store(net, target, 4 << 20).await {
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
