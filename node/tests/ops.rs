//! Replication of a volume's op log between real libp2p peers on loopback (tasks in one
//! runtime, each with its own data directory and RocksDB): ops reach members by gossip, a
//! member that was cut off catches up by anti-entropy, and ops from non-members or with bad
//! signatures are refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tcp_address;
use dfs_node::ops::{data_payload, AuthorId, SignedOp, VolumeId};
use dfs_node::testing::{NetOptions, Network};
use dfs_node::NetworkConfig;
use dfs_node::Repo;
use tokio::sync::broadcast;

struct TestPeer {
    net: Network,
    _repo: Arc<Repo>,
    _dir: tempfile::TempDir,
}

async fn start() -> TestPeer {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Arc::new(Repo::open(dir.path()).expect("open repo"));
    let options = NetOptions::from_config(&NetworkConfig::default()).expect("options");
    let net = Network::start(repo.clone(), options)
        .await
        .expect("start peer");
    TestPeer {
        net,
        _repo: repo,
        _dir: dir,
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 15 s");
}

const VOLUME: VolumeId = VolumeId([7; 16]);

fn author(peer: &TestPeer) -> AuthorId {
    peer.net.ops().author()
}

/// Make every peer in `members` a member of [`VOLUME`] in the log of every peer in `on`.
fn admit(on: &[&TestPeer], members: &[&TestPeer]) {
    for p in on {
        for m in members {
            p.net
                .ops()
                .oplog()
                .add_member(&VOLUME, &author(m))
                .expect("add member");
        }
    }
}

fn log_of(peer: &TestPeer) -> Vec<SignedOp> {
    peer.net
        .ops()
        .oplog()
        .scan(&VOLUME, None, 10_000)
        .expect("scan")
}

/// Everything `rx` delivers until `n` ops came or 15 s passed.
async fn receive(rx: &mut broadcast::Receiver<SignedOp>, n: usize) -> Vec<SignedOp> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(op)) => got.push(op),
            Ok(Err(e)) => panic!("follower stream: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_reach_members_by_gossip_and_a_cut_off_member_catches_up() {
    let (a, b, c) = (start().await, start().await, start().await);
    admit(&[&a, &b, &c], &[&a, &b, &c]);
    for p in [&a, &b, &c] {
        p.net.follow_volume(VOLUME).await.expect("follow");
    }
    let mut b_rx = b.net.ops().follow(&VOLUME);
    // a and b are connected; c is cut off (never dialled) for now.
    b.net.dial(tcp_address(&a.net).await).await.expect("dial");

    let mut written = Vec::new();
    for i in 0..20u32 {
        let op = a
            .net
            .commit_op(VOLUME, format!("a{i}").into_bytes())
            .await
            .expect("commit");
        written.push(op);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receive(&mut b_rx, 20).await;
    assert_eq!(got.len(), 20, "b got {} of a's 20 ops", got.len());
    // Each op taken from a peer is timed from its signing: the replication lag metric.
    let delays = dfs_node::metrics().replication_delay.get_sample_count();
    assert!(delays >= 20, "{delays} replication delays observed");
    let mut got_ids: Vec<_> = got.iter().map(|o| o.id).collect();
    got_ids.sort();
    let written_ids: Vec<_> = written.iter().map(|o| o.id).collect();
    assert_eq!(got_ids, written_ids);
    for i in 0..5u32 {
        b.net
            .commit_op(VOLUME, format!("b{i}").into_bytes())
            .await
            .expect("commit");
    }
    // Ops are numbered per author without gaps, and b's come after a's in the total order.
    let b_log = log_of(&b);
    assert_eq!(b_log.len(), 25);
    assert!(b_log[20..].iter().all(|o| o.id.author == author(&b)));
    assert_eq!(
        b_log[20..].iter().map(|o| o.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    // c joins through b only: anti-entropy brings it all 25, a's included.
    let mut c_rx = c.net.ops().follow(&VOLUME);
    c.net.dial(tcp_address(&b.net).await).await.expect("dial");
    let got = receive(&mut c_rx, 25).await;
    assert_eq!(got.len(), 25, "c caught up on {} of 25 ops", got.len());
    wait_until("a holds b's ops", || log_of(&a).len() == 25).await;
    let logs = [log_of(&a), log_of(&b), log_of(&c)];
    assert!(logs.iter().all(|l| l == &logs[0]), "logs differ");
    let heads: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| p.net.ops().oplog().heads(&VOLUME).expect("heads"))
        .collect();
    assert!(heads.iter().all(|h| h == &heads[0]));
    assert_eq!(heads[0].get(&author(&a)), Some(&20));
    assert_eq!(heads[0].get(&author(&b)), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_of_non_members_and_forgeries_are_refused() {
    let (a, b, outsider) = (start().await, start().await, start().await);
    admit(&[&a, &b], &[&a, &b]);
    // The outsider believes it is a member (its own log admits it), so it can sign and gossip.
    admit(&[&outsider], &[&a, &b, &outsider]);
    for p in [&a, &b, &outsider] {
        p.net.follow_volume(VOLUME).await.expect("follow");
    }
    let addr = tcp_address(&a.net).await;
    b.net.dial(addr.clone()).await.expect("dial");
    let mut b_rx = b.net.ops().follow(&VOLUME);
    a.net
        .commit_op(VOLUME, b"real".to_vec())
        .await
        .expect("commit");
    let got = receive(&mut b_rx, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, data_payload(b"real"));

    // The outsider connects after the op was gossiped: only a pull could bring it, and pulls
    // of non-members are refused. (Gossip reaches any subscriber; payloads are encrypted by the
    // fs layer for that reason.)
    outsider.net.dial(addr).await.expect("dial");
    let forged = outsider
        .net
        .commit_op(VOLUME, b"rm -rf".to_vec())
        .await
        .expect("the outsider's own log takes it");
    // Long enough for gossip and two anti-entropy rounds to bring anything they would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for p in [&a, &b] {
        let log = log_of(p);
        assert_eq!(log.len(), 1, "a member holds {} ops", log.len());
        assert!(log.iter().all(|o| o.id != forged.id));
    }
    assert!(log_of(&outsider)
        .iter()
        .all(|o| o.payload != data_payload(b"real")));

    // A member's op with its payload changed on the way fails its signature.
    let mut tampered = log_of(&a)[0].clone();
    tampered.payload = b"evil".to_vec();
    let err = b
        .net
        .ops()
        .ingest(&VOLUME, &tampered.to_bytes())
        .expect_err("tampered op taken");
    assert!(err.to_string().contains("signature"), "{err}");
    // So does an op replayed into another volume.
    let other = VolumeId([8; 16]);
    let err = b
        .net
        .ops()
        .ingest(&other, &log_of(&a)[0].to_bytes())
        .expect_err("op of another volume taken");
    assert!(err.to_string().contains("volume"), "{err}");
    assert_eq!(log_of(&b).len(), 1);
}
