//! What users cost the op log: signing and checking an op with the user's co-signature
//! (format 2) against an op signed by the peer alone (format 1, the baseline in the same
//! run), and unsealing a user key at login (argon2id at the default parameters, and at the
//! cheapest accepted, as the baseline).
//!
//! `cargo bench -p dfs-benches --bench ops`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dfs_node::ops::{Hlc, SignedOp, VolumeId};
use dfs_node::{KdfParams, SealedUser};
use libp2p::identity::ed25519::Keypair;

/// About what a create or a version op of a shared volume carries, sealed.
const PAYLOAD: usize = 200;

fn signing(c: &mut Criterion) {
    let (peer, user) = (Keypair::generate(), Keypair::generate());
    let hlc = Hlc {
        millis: 1_800_000_000_000,
        counter: 0,
    };
    let payload = vec![7u8; PAYLOAD];
    let mut g = c.benchmark_group("op");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, user) in [("peer", None), ("peer+user", Some(&user))] {
        g.bench_function(format!("sign+encode/{name}"), |b| {
            b.iter(|| {
                SignedOp::sign_as(&peer, user, VolumeId([1; 16]), hlc, 1, payload.clone())
                    .map(|op| op.to_bytes())
            })
        });
        let bytes = SignedOp::sign_as(&peer, user, VolumeId([1; 16]), hlc, 1, payload.clone())
            .expect("sign")
            .to_bytes();
        g.bench_function(format!("decode+verify/{name}"), |b| {
            b.iter(|| SignedOp::from_bytes(black_box(&bytes)).map(|op| op.verify()))
        });
    }
    g.finish();
}

fn unsealing(c: &mut Criterion) {
    let mut g = c.benchmark_group("login");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let cheapest = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };
    for (name, kdf) in [
        ("unseal/default", KdfParams::default()),
        ("unseal/cheapest", cheapest),
    ] {
        let (sealed, _) = SealedUser::create("bench", b"passphrase", kdf).expect("seal");
        g.bench_function(name, |b| b.iter(|| sealed.open(black_box(b"passphrase"))));
    }
    g.finish();
}

criterion_group!(benches, signing, unsealing);
criterion_main!(benches);
