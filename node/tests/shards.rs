//! The shard protocol between real libp2p peers on loopback (tasks in one runtime, each with
//! its own data directory and RocksDB): store, fetch, check and delete; verification, ownership
//! and capacity; and a rogue peer that sends malformed frames and bad shards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tcp_address;
use dfs_node::testing::wire::{self, read_frame, write_frame, MAX_FRAME, PROTOCOL};
use dfs_node::testing::{NetError, NetOptions, Network, Refusal};
use dfs_node::testing::{ShardHeader, HEADER_LEN};
use dfs_node::NetworkConfig;
use dfs_node::Pipeline;
use dfs_node::Repo;
use dfs_placement::{ChunkId, Layout};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

const BODY: usize = 64 << 10;

struct TestPeer {
    net: Network,
    repo: Arc<Repo>,
    _dir: tempfile::TempDir,
    repo_path: std::path::PathBuf,
}

async fn start(capacity: u64) -> TestPeer {
    start_with(NetworkConfig {
        capacity,
        ..NetworkConfig::default()
    })
    .await
}

async fn start_with(config: NetworkConfig) -> TestPeer {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Arc::new(Repo::open(dir.path()).expect("open repo"));
    // The peers of a test share the host's disk, whose fullness must not decide the test.
    let config = NetworkConfig {
        grace_secs: 5,
        reserve_percent: 0,
        ..config
    };
    let options = NetOptions::from_config(&config).expect("options");
    let net = Network::start(repo.clone(), options)
        .await
        .expect("start peer");
    TestPeer {
        net,
        repo,
        repo_path: dir.path().to_path_buf(),
        _dir: dir,
    }
}

/// Where `peer` keeps a shard it holds for others (the held store's own layout).
fn held_path(peer: &TestPeer, chunk: &ChunkId, index: u8) -> std::path::PathBuf {
    dfs_node::testing::ShardStore::open(&peer.repo_path.join("held"))
        .expect("held store")
        .path(chunk, index)
}

/// Connect `a` to `b` and wait until each sees the other alive.
async fn connect(a: &Network, b: &Network) {
    a.dial(tcp_address(b).await).await.expect("dial");
    for (x, y) in [(a, b), (b, a)] {
        let want = y.local_id().to_string();
        wait(|| async {
            x.peers()
                .await
                .expect("peers")
                .iter()
                .any(|p| p.id == want && p.connected)
        })
        .await;
    }
}

async fn wait<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}

/// Run placement for `peer` (its chunks go to the network). The cluster blocks on the runtime
/// from its own threads, so it starts outside it.
async fn start_cluster(
    peer: &TestPeer,
    settings: dfs_node::PlacementConfig,
) -> dfs_node::testing::ClusterHandle {
    let (repo, net, handle) = (
        peer.repo.clone(),
        peer.net.clone(),
        tokio::runtime::Handle::current(),
    );
    tokio::task::spawn_blocking(move || {
        dfs_node::testing::Cluster::start(repo, net, handle, settings)
    })
    .await
    .expect("start cluster")
}

/// The chunk pipeline of `peer` over `cluster`.
fn networked(peer: &TestPeer, cluster: &dfs_node::testing::ClusterHandle) -> Pipeline {
    Pipeline::with_remote(peer.repo.clone(), cluster.cluster.clone())
}

/// Wait until `net` finds `provider` among the DHT providers of `chunk`.
async fn wait_for_provider(net: &Network, chunk: ChunkId, provider: PeerId) {
    wait(|| async {
        net.find_providers(chunk)
            .await
            .is_ok_and(|p| p.contains(&provider))
    })
    .await;
}

fn shard(seed: u8, index: u8) -> (ChunkId, Vec<u8>) {
    let chunk = ChunkId(*blake3::hash(&[seed, index]).as_bytes());
    let body: Vec<u8> = (0..BODY).map(|i| (i as u8) ^ seed).collect();
    let header = ShardHeader {
        chunk,
        layout: Layout::Erasure { data: 4, parity: 2 },
        index,
        chunk_len: (BODY * 4) as u32,
    };
    (chunk, header.encode(&body))
}

fn refused(e: NetError) -> Refusal {
    match e {
        NetError::Refused { refusal, .. } => refusal,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_fetch_check_delete_between_two_peers() {
    let a = start(0).await;
    let b = start(0).await;
    let c = start(0).await;
    connect(&a.net, &b.net).await;
    connect(&c.net, &b.net).await;
    let bid = b.net.local_id();
    let (chunk, image) = shard(1, 2);

    a.net
        .store_shard(bid, chunk, 2, &[&image])
        .await
        .expect("store");
    // Kept as ciphertext shard image under DATA/held, verified.
    let on_disk = held_path(&b, &chunk, 2);
    assert_eq!(std::fs::read(&on_disk).expect("held shard file"), image);
    assert_eq!(
        a.net.fetch_shard(bid, chunk, 2).await.expect("fetch"),
        image
    );
    assert_eq!(
        a.net.check_shard(bid, chunk, 2).await.expect("check"),
        (true, image.len() as u64)
    );
    // A shard is taken once: another peer's image of the same shard, forged with a valid
    // checksum, is refused and counted against it; the same bytes again are fine, change
    // nothing on disk, and give the sender a claim of its own.
    let forged = {
        let (header, body) = ShardHeader::decode(&image).expect("decode");
        let mut body = body.to_vec();
        body[7] ^= 0xFF;
        header.encode(&body)
    };
    assert!(ShardHeader::decode_expected(&forged, chunk, 2).is_ok());
    let err = c
        .net
        .store_shard(bid, chunk, 2, &[&forged])
        .await
        .unwrap_err();
    assert_eq!(refused(err), Refusal::Conflict);
    let err = a
        .net
        .store_shard(bid, chunk, 2, &[&forged])
        .await
        .unwrap_err();
    assert_eq!(
        refused(err),
        Refusal::Conflict,
        "not even its owner replaces it"
    );
    c.net
        .store_shard(bid, chunk, 2, &[&image])
        .await
        .expect("the same image again");
    assert_eq!(std::fs::read(&on_disk).expect("held shard file"), image);
    // c's delete drops its own claim only: a, which stored it first, still has it.
    assert_eq!(
        c.net
            .delete_shard(bid, chunk, 2)
            .await
            .expect("c drops its claim"),
        0
    );
    assert_eq!(std::fs::read(&on_disk).expect("held shard file"), image);
    assert_eq!(
        a.net.fetch_shard(bid, chunk, 2).await.expect("fetch"),
        image
    );
    let err = c.net.delete_shard(bid, chunk, 2).await.unwrap_err();
    assert_eq!(refused(err), Refusal::NotOwner);
    let cid = c.net.local_id().to_string();
    let view = b.net.peers().await.expect("peers");
    let seen = view.iter().find(|p| p.id == cid).expect("c in b's table");
    assert!(seen.bad_data >= 1, "{seen:?}");
    // A reader that knows the writer's hash of the shard refuses the forgery even with its
    // valid checksum (here: a holder that was handed it, d).
    let d = start(0).await;
    connect(&a.net, &d.net).await;
    let did = d.net.local_id();
    a.net
        .store_shard(did, chunk, 2, &[&forged])
        .await
        .expect("d takes the forged image");
    let writers_hash = ShardHeader::carried_hash(&image).expect("hash");
    let err = a
        .net
        .fetch_verified(did, chunk, 2, Some(&writers_hash))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::BadData { .. }), "{err}");
    assert_eq!(
        a.net
            .fetch_verified(bid, chunk, 2, Some(&writers_hash))
            .await
            .expect("the writer's image"),
        image
    );
    // The holder is now a provider of the chunk in the DHT: another peer finds it there.
    let mut found = Vec::new();
    for _ in 0..50 {
        found = c.net.find_providers(chunk).await.expect("find providers");
        if found.contains(&bid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found.contains(&bid), "providers of the chunk: {found:?}");
    let status = b.net.status().await.expect("status");
    assert_eq!(status.storage.shards_held, 1);
    assert_eq!(status.storage.used, image.len() as u64);

    // Only the peer that stored it may delete it.
    let err = c.net.delete_shard(bid, chunk, 2).await.unwrap_err();
    assert_eq!(refused(err), Refusal::NotOwner);
    assert_eq!(
        a.net.delete_shard(bid, chunk, 2).await.expect("delete"),
        image.len() as u64
    );
    let err = a.net.fetch_shard(bid, chunk, 2).await.unwrap_err();
    assert_eq!(refused(err), Refusal::NotFound);
    assert_eq!(b.net.status().await.expect("status").storage.used, 0);

    // An image that does not verify is refused, and the sender is scored down.
    let (chunk, mut bad) = shard(3, 0);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = a.net.store_shard(bid, chunk, 0, &[&bad]).await.unwrap_err();
    assert_eq!(refused(err), Refusal::Invalid);
    // Right bytes, wrong name: also refused.
    let (_, image) = shard(4, 0);
    let err = a
        .net
        .store_shard(bid, chunk, 1, &[&image])
        .await
        .unwrap_err();
    assert_eq!(refused(err), Refusal::Invalid);
    let aid = a.net.local_id().to_string();
    let view = b.net.peers().await.expect("peers");
    let seen = view.iter().find(|p| p.id == aid).expect("a in b's table");
    assert!(seen.bad_data >= 2, "{seen:?}");

    // Two writers of the same content: the first to collect it leaves the shard to the other.
    let (chunk, image) = shard(6, 3);
    for writer in [&a, &c] {
        writer
            .net
            .store_shard(bid, chunk, 3, &[&image])
            .await
            .expect("store");
    }
    assert_eq!(a.net.delete_shard(bid, chunk, 3).await.expect("delete"), 0);
    assert_eq!(
        c.net.fetch_shard(bid, chunk, 3).await.expect("still there"),
        image
    );
    assert_eq!(
        c.net.delete_shard(bid, chunk, 3).await.expect("delete"),
        image.len() as u64
    );
    let err = c.net.fetch_shard(bid, chunk, 3).await.unwrap_err();
    assert_eq!(refused(err), Refusal::NotFound);

    // A shard that rots on the holder's disk is reported, never served.
    let (chunk, image) = shard(5, 1);
    a.net
        .store_shard(bid, chunk, 1, &[&image])
        .await
        .expect("store");
    let path = held_path(&b, &chunk, 1);
    let mut rotten = image.clone();
    rotten[1000] ^= 0x40;
    std::fs::write(&path, &rotten).expect("corrupt");
    assert_eq!(
        a.net.check_shard(bid, chunk, 1).await.expect("check"),
        (false, image.len() as u64)
    );
    // A trusting fetch gets it as it lies (the holder hashes nothing); the reader finds the
    // rot and asks again for a checked fetch, and the holder, hashing it, says it has none: an
    // honest holder with a rotten disk is not blamed for bad data.
    let err = a.net.fetch_shard(bid, chunk, 1).await.unwrap_err();
    assert_eq!(refused(err), Refusal::NotFound);
    let err = a
        .net
        .fetch_shard_checked(bid, chunk, 1, true)
        .await
        .unwrap_err();
    assert_eq!(
        refused(err),
        Refusal::NotFound,
        "a checked fetch: the holder hashes it"
    );
    assert_eq!(
        a.net
            .fetch_shard_checked(bid, chunk, 1, false)
            .await
            .expect("trusting fetch"),
        rotten
    );
    // The same image stored again (a repair) replaces the rotten copy, whoever sends it: its
    // bytes are the ones stored.
    c.net
        .store_shard(bid, chunk, 1, &[&image])
        .await
        .expect("store the same image again");
    assert!(
        std::fs::read(&path).expect("read") == image,
        "the rot was not repaired"
    );
    std::fs::write(&path, &rotten).expect("corrupt");
    // A header that names another shard, or a file of the wrong length, is refused even so:
    // the holder checks what it sends from the file as it lies.
    let mut renamed = image.clone();
    renamed[43] ^= 1;
    for bad in [renamed, image[..image.len() - 1].to_vec()] {
        std::fs::write(&path, &bad).expect("corrupt");
        let err = a
            .net
            .fetch_shard_checked(bid, chunk, 1, false)
            .await
            .unwrap_err();
        assert_eq!(refused(err), Refusal::NotFound);
    }

    // Asking a peer that is not there fails with an error, not a hang.
    let err = a
        .net
        .fetch_shard(PeerId::random(), chunk, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Request { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_enforced() {
    let a = start(0).await;
    // All of it open to one peer (the per-peer quota is tests/tests/hostile.rs's).
    let b = start_with(NetworkConfig {
        capacity: (BODY * 3) as u64,
        peer_quota_percent: 100,
        ..NetworkConfig::default()
    })
    .await;
    connect(&a.net, &b.net).await;
    let bid = b.net.local_id();
    for index in 0..2 {
        let (chunk, image) = shard(9, index);
        a.net
            .store_shard(bid, chunk, index, &[&image])
            .await
            .expect("fits");
    }
    let (chunk, image) = shard(9, 2);
    let err = a
        .net
        .store_shard(bid, chunk, 2, &[&image])
        .await
        .unwrap_err();
    assert_eq!(refused(err), Refusal::Full);
    let status = b.net.status().await.expect("status");
    assert_eq!(status.storage.shards_held, 2);
    assert!(status.storage.free < BODY as u64, "{:?}", status.storage);
}

/// A codec that writes whatever bytes it is given and reads raw frames: the rogue's side.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_FRAME).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut out = Vec::new();
        io.read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        raw: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&raw).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        raw: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&raw).await?;
        io.close().await
    }
}

type RawResult = Result<Vec<u8>, String>;

/// A peer that speaks the shard protocol's framing but lies: it answers every request with
/// `answer`, and sends whatever raw requests the test gives it.
async fn rogue(
    target: Multiaddr,
    answer: Vec<u8>,
) -> (
    PeerId,
    mpsc::Sender<(PeerId, Vec<u8>, oneshot::Sender<RawResult>)>,
) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let id = *swarm.local_peer_id();
    swarm.dial(target).expect("dial");
    let (tx, mut rx) = mpsc::channel::<(PeerId, Vec<u8>, oneshot::Sender<RawResult>)>(8);
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut pending = std::collections::HashMap::new();
        loop {
            tokio::select! {
                Some((peer, raw, reply)) = rx.recv() => {
                    let id = swarm.behaviour_mut().send_request(&peer, raw);
                    pending.insert(id, reply);
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => match message {
                        request_response::Message::Request { channel, .. } => {
                            let _ = swarm.behaviour_mut().send_response(channel, answer.clone());
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(reply) = pending.remove(&request_id) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                    },
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                },
            }
        }
    });
    ready_rx.await.expect("rogue connected");
    (id, tx)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    futures::executor::block_on(write_frame(&mut out, body)).expect("frame");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_is_refused_and_scored_down_and_never_stalls_the_peer() {
    let honest = start(0).await;
    let other = start(0).await;
    connect(&honest.net, &other.net).await;
    let (chunk, image) = shard(7, 3);
    let mut corrupt = image.clone();
    corrupt[100] ^= 1;
    let lie = framed(&wire::encode(&wire::Response::Shard { image: corrupt }).expect("encode"));
    let (rogue_id, rogue_tx) = rogue(tcp_address(&honest.net).await, lie).await;
    let rid = rogue_id.to_string();
    wait(|| async {
        honest
            .net
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.id == rid && p.connected)
    })
    .await;

    // The honest peer fetches from the rogue: the bad shard is detected, never returned.
    let err = honest
        .net
        .fetch_shard(rogue_id, chunk, 3)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::BadData { .. }), "{err}");
    let view = honest.net.peers().await.expect("peers");
    let row = view
        .iter()
        .find(|p| p.id == rid)
        .expect("rogue in the table");
    assert!(row.bad_data >= 1 && row.score < 0.5, "{row:?}");

    // Malformed requests: each one fails on its own stream; the peer keeps serving.
    let hid = honest.net.local_id();
    let mut wrong_version =
        wire::encode(&wire::Request::Fetch { chunk, index: 3 }).expect("encode");
    wrong_version[0] = 99;
    let mut oversized = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    let mut truncated = 1000u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1u8; 10]);
    let malformed = [
        framed(&wrong_version),
        framed(&[wire::WIRE_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff]),
        framed(&[]),
        oversized,
        truncated,
        vec![0xde, 0xad],
    ];
    for raw in malformed {
        let (tx, rx) = oneshot::channel();
        rogue_tx
            .send((hid, raw.clone(), tx))
            .await
            .expect("rogue alive");
        let answer = tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .expect("the peer answered or closed the stream in time")
            .expect("rogue replied");
        // No valid response comes back: either the stream fails or it closes empty.
        if let Ok(bytes) = answer {
            assert!(
                bytes.is_empty(),
                "peer answered a malformed request: {bytes:?}"
            );
        }
    }
    // A well-formed request from the rogue still works (the connection survived).
    let (tx, rx) = oneshot::channel();
    let fetch = framed(&wire::encode(&wire::Request::Check { chunk, index: 3 }).expect("encode"));
    rogue_tx.send((hid, fetch, tx)).await.expect("rogue alive");
    let answer = rx.await.expect("reply").expect("valid request served");
    assert!(!answer.is_empty());
    // And honest traffic was never stalled.
    honest
        .net
        .store_shard(other.net.local_id(), chunk, 3, &[&image])
        .await
        .expect("honest store");
    other
        .net
        .store_shard(hid, chunk, 3, &[&image])
        .await
        .expect("the attacked peer still serves");
}

/// A placement record that names the wrong holder: the reader falls back to the peers that
/// announced the chunk in Kademlia and gets the shard from its real holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_recorded_holder_lacks_it_is_found_through_provider_records() {
    let a = start(0).await;
    let b = start(0).await;
    let c = start(0).await;
    connect(&a.net, &b.net).await;
    connect(&a.net, &c.net).await;
    let (chunk, image) = shard(9, 3);
    a.net
        .store_shard(b.net.local_id(), chunk, 3, &[&image])
        .await
        .expect("store on b");
    // Wait until b's provider record can be found.
    wait_for_provider(&a.net, chunk, b.net.local_id()).await;
    let cluster = start_cluster(&a, dfs_node::PlacementConfig::default()).await;
    // The record says c holds shard 3; c has never seen it.
    let wrong = dfs_node::testing::Placed {
        holders: vec![(3, c.net.local_id().to_bytes())],
    };
    let (repo, remote) = (a.repo.clone(), cluster.cluster.clone());
    let images = tokio::task::spawn_blocking(move || {
        use dfs_node::testing::Remote;
        let layout = Layout::Erasure { data: 4, parity: 2 };
        remote.gather(
            &repo,
            &chunk,
            layout,
            &wrong,
            1,
            dfs_node::testing::ShardCheck::Checksum(None),
        )
    })
    .await
    .expect("gather");
    assert_eq!(images.images[3].as_deref(), Some(&image[..]));
    assert_eq!(
        cluster
            .cluster
            .counters
            .found_by_providers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop cluster");
}

/// Provider records go out in the background, for more chunks than Kademlia's default store
/// takes (1024 keys), and a restarted holder announces what it holds again (its sweep of the
/// held table), since provider records live only in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_held_chunk_gets_a_provider_record_also_after_a_restart() {
    let fast = NetworkConfig {
        providers_per_sec_idle: 5_000,
        ..NetworkConfig::default()
    };
    let a = start(0).await;
    let b = start_with(fast.clone()).await;
    connect(&a.net, &b.net).await;
    const CHUNKS: usize = 1_100;
    let mut chunks = Vec::new();
    for n in 0..CHUNKS {
        let chunk = ChunkId(*blake3::hash(format!("provider {n}").as_bytes()).as_bytes());
        let header = ShardHeader {
            chunk,
            layout: Layout::Erasure { data: 4, parity: 2 },
            index: 0,
            chunk_len: 64,
        };
        a.net
            .store_shard(b.net.local_id(), chunk, 0, &[&header.encode(&[7u8; 16])])
            .await
            .expect("store on b");
        chunks.push(chunk);
    }
    let bid = b.net.local_id();
    for chunk in [chunks[0], chunks[CHUNKS / 2], chunks[CHUNKS - 1]] {
        wait_for_provider(&a.net, chunk, bid).await;
    }

    // b restarts on the same data directory; a fresh peer c that never heard the first
    // announcements finds b through its new ones.
    b.net.shutdown().await;
    let options = NetOptions::from_config(&NetworkConfig {
        grace_secs: 5,
        reserve_percent: 0,
        ..fast
    })
    .expect("options");
    let b2 = Network::start(b.repo.clone(), options)
        .await
        .expect("restart b");
    let c = start(0).await;
    connect(&c.net, &b2).await;
    for chunk in [chunks[1], chunks[CHUNKS - 2]] {
        wait_for_provider(&c.net, chunk, bid).await;
    }
}

/// A chunk placed on two other peers reads back through the network with one of its data
/// shards rotten on its holder's disk: the holder refuses to serve it, the reader takes a
/// parity shard instead and decodes, and the AEAD tag (no shard hashing on this path) accepts
/// the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_on_peers_reads_back_around_a_shard_rotten_on_disk() {
    let a = start(0).await;
    let b = start(0).await;
    let c = start(0).await;
    connect(&a.net, &b.net).await;
    connect(&a.net, &c.net).await;
    connect(&b.net, &c.net).await;
    let placement = dfs_node::PlacementConfig {
        store_here: false,
        ..Default::default()
    };
    let cluster = start_cluster(&a, placement).await;
    // Wait until a sees both others as members it can place on.
    let members = cluster.cluster.clone();
    wait(|| {
        let members = members.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                members.refresh_members();
                members.members().live_others() >= 2
            })
            .await
            .unwrap_or(false)
        }
    })
    .await;
    let plaintext: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
    let repo = networked(&a, &cluster);
    let written = plaintext.clone();
    let chunk = tokio::task::spawn_blocking(move || {
        let mut coder = dfs_placement::erasure::ShardCoder::default();
        repo.put_chunk(&[1; 16], written, &mut coder)
    })
    .await
    .expect("join")
    .expect("put chunk on b and c");
    // Rot one data shard held by b, after its header.
    let rotten = (0..4u8)
        .map(|i| held_path(&b, &chunk.id, i))
        .find(|p| p.exists())
        .expect("b holds a data shard");
    let mut bytes = std::fs::read(&rotten).expect("read held shard");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&rotten, &bytes).expect("rot the shard");

    let repo = networked(&a, &cluster);
    let read = tokio::task::spawn_blocking(move || {
        let mut coder = dfs_placement::erasure::ShardCoder::default();
        repo.read_chunk(&chunk, &mut coder)
    })
    .await
    .expect("join")
    .expect("read around the rotten shard");
    assert!(read == plaintext, "the read returned other bytes");
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_written_alone_again_after_a_failed_placement_keeps_its_shards() {
    // A placement that failed (not durable, say) queues every target it had for deletion,
    // this peer included. The same chunk written again while the peer is alone goes to the
    // local store: the repair thread must not delete it from under the new record.
    let a = start(0).await;
    let plaintext: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
    let (repo, written) = (Pipeline::local(a.repo.clone()), plaintext.clone());
    let chunk = tokio::task::spawn_blocking(move || {
        let mut coder = dfs_placement::erasure::ShardCoder::default();
        let chunk = repo.put_chunk(&[1; 16], written, &mut coder).expect("put");
        // No put refers to it: gc removes it, leaving only its id known.
        repo.repo().gc().expect("gc");
        chunk
    })
    .await
    .expect("join");
    assert!(a.repo.meta().chunk(&chunk.id).expect("meta").is_none());
    let me = a.net.local_id().to_bytes();
    let failed: Vec<(u8, Vec<u8>)> = (0..6u8).map(|i| (i, me.clone())).collect();
    a.repo
        .meta()
        .queue_deletes(&chunk.id, &failed)
        .expect("queue the failed placement's deletes");

    let placement = dfs_node::PlacementConfig {
        repair_interval_ms: 100,
        ..Default::default()
    };
    let cluster = start_cluster(&a, placement).await;
    let (repo, written) = (networked(&a, &cluster), plaintext.clone());
    let again = tokio::task::spawn_blocking(move || {
        let mut coder = dfs_placement::erasure::ShardCoder::default();
        repo.put_chunk(&[1; 16], written, &mut coder)
    })
    .await
    .expect("join")
    .expect("put again, alone");
    assert_eq!(again.id, chunk.id);
    // Several repair rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a
        .repo
        .meta()
        .doomed_of(&chunk.id)
        .expect("meta")
        .holders
        .is_empty());
    let repo = networked(&a, &cluster);
    let read = tokio::task::spawn_blocking(move || {
        let mut coder = dfs_placement::erasure::ShardCoder::default();
        repo.read_chunk(&again, &mut coder)
    })
    .await
    .expect("join")
    .expect("the chunk reads back");
    assert!(read == plaintext, "the read returned other bytes");
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop cluster");
}

/// Shards move both ways between a peer with bulk links and one without (over libp2p), and
/// over the links between two peers that have them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_over_bulk_links_and_without_them() {
    let a = start(0).await;
    let b = start_with(NetworkConfig {
        bulk_links: false,
        ..NetworkConfig::default()
    })
    .await;
    let c = start(0).await;
    connect(&a.net, &b.net).await;
    connect(&a.net, &c.net).await;
    for (from, to, seed) in [(&a, &b, 10), (&b, &a, 11), (&a, &c, 12), (&c, &a, 13)] {
        let (chunk, image) = shard(seed, 1);
        let id = to.net.local_id();
        let len = image.len() as u64;
        // Given in parts, as a writer does (header, then body), split inside the header too:
        // stored as one image either way.
        let split = [HEADER_LEN, 7, HEADER_LEN, 1000][usize::from(seed - 10)];
        let (head, body) = image.split_at(split);
        from.net
            .store_shard(id, chunk, 1, &[head, body])
            .await
            .expect("store");
        assert_eq!(
            std::fs::read(held_path(to, &chunk, 1)).expect("held shard file"),
            image
        );
        assert_eq!(
            from.net.fetch_shard(id, chunk, 1).await.expect("fetch"),
            image
        );
        assert_eq!(
            from.net.check_shard(id, chunk, 1).await.expect("check"),
            (true, len)
        );
        assert_eq!(
            from.net.delete_shard(id, chunk, 1).await.expect("delete"),
            len
        );
    }
    let bulk = |p: &TestPeer| {
        let net = p.net.clone();
        async move { net.status().await.expect("status").bulk }
    };
    assert_eq!(bulk(&b).await, None);
    let sa = bulk(&a).await.expect("a has bulk links");
    let sc = bulk(&c).await.expect("c has bulk links");
    assert!(
        sa.addresses.iter().all(|a| a.starts_with("127.0.0.1:")),
        "{sa:?}"
    );
    // a to c and c to a: four requests each way over the links; a to b: over libp2p.
    assert_eq!((sa.sent, sa.served, sa.fallbacks), (4, 4, 4), "{sa:?}");
    assert_eq!((sc.sent, sc.served, sc.fallbacks), (4, 4, 0), "{sc:?}");
}

/// Whatever arrives on a bulk listener without a session is refused, and the peer goes on
/// serving its links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_bulk_listener_is_refused_and_the_peer_goes_on_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let a = start(0).await;
    let b = start(0).await;
    connect(&a.net, &b.net).await;
    let status = b.net.status().await.expect("status");
    let addr: std::net::SocketAddr = status.bulk.expect("bulk links").addresses[0]
        .parse()
        .expect("a socket address");
    let closed = |mut s: TcpStream| async move {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the peer kept the connection open");
        rest
    };

    // Not a bulk link at all.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789")
        .await
        .expect("write");
    assert!(closed(s).await.is_empty());
    // The right greeting with a ticket nobody granted: refused, then closed.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = dfs_node::testing::bulk::MAGIC.to_vec();
    hello.extend_from_slice(&[9; 32]);
    s.write_all(&hello).await.expect("write");
    assert_eq!(closed(s).await, [0]);
    // One that connects and says nothing does not hold up anybody.
    let _silent = TcpStream::connect(addr).await.expect("connect");

    let bid = b.net.local_id();
    let (chunk, image) = shard(20, 3);
    a.net
        .store_shard(bid, chunk, 3, &[&image])
        .await
        .expect("store");
    assert_eq!(
        a.net.fetch_shard(bid, chunk, 3).await.expect("fetch"),
        image
    );
    // The server counts a request after its answer is out: give it a moment.
    let mut served = None;
    for _ in 0..50 {
        let bulk = b.net.status().await.expect("status").bulk.expect("bulk");
        if bulk.served == 2 {
            served = Some(bulk);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served.is_some(),
        "the peer did not serve both requests on links"
    );
}

/// `bulk_port` fixes the listeners' port (for a firewall); a port taken is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_bulk_port_is_used_and_a_taken_one_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = NetworkConfig {
        bulk_port: port,
        ..NetworkConfig::default()
    };
    let a = start_with(config.clone()).await;
    let status = a.net.status().await.expect("status");
    assert_eq!(
        status.bulk.expect("bulk links").addresses,
        [format!("127.0.0.1:{port}")]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Arc::new(Repo::open(dir.path()).expect("open repo"));
    let options = NetOptions::from_config(&config).expect("options");
    let err = match Network::start(repo, options).await {
        Ok(_) => panic!("a second peer took the same bulk port"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("network.bulk_port"),
        "{err}"
    );
}

/// `Holding` tells which shards of a chunk a peer has (and their layout, from one header); a
/// client refuses every store, is listed as a client, and once it says goodbye it is gone from
/// the other peer's table without ever being dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_say_what_they_hold_and_clients_hold_nothing() {
    let a = start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Arc::new(Repo::open(dir.path()).expect("open repo"));
    let mut options = NetOptions::from_config(&NetworkConfig {
        grace_secs: 5,
        ..NetworkConfig::default()
    })
    .expect("options");
    options.client = true;
    let c = Network::start(repo, options).await.expect("start client");
    connect(&a.net, &c).await;

    let chunk = ChunkId(*blake3::hash(b"one chunk, several shards").as_bytes());
    let image = |index: u8| {
        let header = ShardHeader {
            chunk,
            layout: Layout::Erasure { data: 4, parity: 2 },
            index,
            chunk_len: (BODY * 4) as u32,
        };
        header.encode(&vec![index; BODY])
    };
    for index in [3u8, 1] {
        c.store_shard(a.net.local_id(), chunk, index, &[&image(index)])
            .await
            .expect("store on a storage peer");
    }
    let held = c.holding(a.net.local_id(), chunk).await.expect("holding");
    assert_eq!(held.indices, vec![1, 3]);
    let header = held.header.expect("a header");
    assert_eq!(
        (header.layout, header.chunk_len),
        (Layout::Erasure { data: 4, parity: 2 }, (BODY * 4) as u32)
    );
    let other = ChunkId([7; 32]);
    let none = c.holding(a.net.local_id(), other).await.expect("holding");
    assert!(none.indices.is_empty() && none.header.is_none());

    // The client keeps nothing for others.
    let e = a
        .net
        .store_shard(c.local_id(), chunk, 0, &[&image(0)])
        .await
        .expect_err("a client refuses stores");
    assert_eq!(refused(e), Refusal::NoStorage);
    assert!(c.status().await.expect("status").client);
    let client_id = c.local_id().to_string();
    wait(|| async {
        a.net
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.id == client_id && p.client)
    })
    .await;
    assert_eq!(a.net.status().await.expect("status").peers.clients, 1);

    // Goodbye: gone from the table, never dead.
    c.shutdown().await;
    wait(|| async {
        let s = a.net.status().await.expect("status");
        let listed = a
            .net
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.id == client_id);
        !listed && s.peers.clients == 0
    })
    .await;
    let s = a.net.status().await.expect("status");
    assert_eq!((s.peers.dead, s.peers.suspect), (0, 0));
}
