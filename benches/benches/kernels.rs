//! The per-chunk kernels of the pipeline, one at a time, on a single core:
//! hashing, key derivation, encryption, erasure coding, and memcpy as a baseline.
//!
//! `cargo bench -p dfs-benches --bench kernels`

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use dfs_benches::{random_bytes, CHUNK, MIB};
use dfs_node::VolumeSecret;
use dfs_placement::erasure::ShardCoder;
use dfs_placement::Layout;

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

fn hashing(c: &mut Criterion) {
    let data = random_bytes(CHUNK, 1);
    let mut g = group(c, "blake3");
    for size in [MIB, CHUNK] {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("hash/{}MiB", size / MIB), |b| {
            b.iter(|| blake3::hash(black_box(&data[..size])))
        });
    }
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let plain = random_bytes(CHUNK, 2);
    let secret = VolumeSecret::from_bytes([9; 32]);
    let key = secret.chunk_key(&plain);
    let cipher = key.encrypt(plain.clone());
    let mut g = group(c, "crypto");
    g.throughput(Throughput::Bytes(32));
    g.bench_function("volume_secret_from_bytes", |b| {
        b.iter(|| VolumeSecret::from_bytes(black_box([9; 32])))
    });
    g.throughput(Throughput::Bytes(CHUNK as u64));
    // The convergent key: a keyed blake3 of the whole plaintext.
    g.bench_function("chunk_key/4MiB", |b| {
        b.iter(|| secret.chunk_key(black_box(&plain)))
    });
    // Inputs are fresh `Vec`s with capacity == len, as `blob::read_chunk` makes them, so the
    // tag's `reserve_exact` costs what it costs in the pipeline.
    g.bench_function("encrypt/4MiB", |b| {
        b.iter_batched(
            || plain.clone(),
            |p| key.encrypt(p),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("decrypt_verify/4MiB", |b| {
        b.iter_batched(
            || cipher.clone(),
            |ct| key.decrypt(ct).expect("ciphertext authenticates"),
            BatchSize::PerIteration,
        )
    });
    // The baseline: the chacha20poly1305 crate alone (its Poly1305 on AVX2), as chunks were
    // sealed before Poly1305 ran on IFMA (node/src/crypto/poly1305.rs), and as they still
    // are on CPUs without it. Same bytes, so the ratio is the speed-up.
    let aead = XChaCha20Poly1305::new(&[5u8; 32].into());
    let nonce = XNonce::from([6u8; 24]);
    g.bench_function("crate_encrypt/4MiB", |b| {
        b.iter_batched(
            || plain.clone(),
            |mut p| aead.encrypt_inout_detached(&nonce, &[], p.as_mut_slice().into()),
            BatchSize::PerIteration,
        )
    });
    let (sealed, tag) = {
        let mut p = plain.clone();
        let tag = aead
            .encrypt_inout_detached(&nonce, &[], p.as_mut_slice().into())
            .expect("seal");
        (p, tag)
    };
    g.bench_function("crate_decrypt_verify/4MiB", |b| {
        b.iter_batched(
            || sealed.clone(),
            |mut ct| {
                aead.decrypt_inout_detached(&nonce, &[], ct.as_mut_slice().into(), &tag)
                    .expect("ciphertext authenticates")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn erasure(c: &mut Criterion) {
    let plain = random_bytes(CHUNK, 3);
    let cipher = VolumeSecret::from_bytes([9; 32])
        .chunk_key(&plain)
        .encrypt(plain);
    let mut g = group(c, "erasure");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    for (data, parity) in [(4u8, 2u8), (8, 4)] {
        let layout = Layout::Erasure { data, parity };
        let mut coder = ShardCoder::default();
        g.bench_function(format!("encode/{layout}/4MiB"), |b| {
            b.iter_batched(
                || cipher.clone(),
                |ct| coder.encode(layout, ct).expect("encode"),
                BatchSize::PerIteration,
            )
        });
    }

    let layout = Layout::Erasure { data: 4, parity: 2 };
    let encoded = ShardCoder::default()
        .encode(layout, cipher.clone())
        .expect("encode");
    let all: Vec<Option<&[u8]>> = (0..encoded.shard_count())
        .map(|i| Some(encoded.shard(i)))
        .collect();
    let mut two_data_missing = all.clone();
    two_data_missing[0] = None;
    two_data_missing[2] = None;
    let mut coder = ShardCoder::default();
    for (name, shards) in [
        ("decode/4+2/2_data_missing/4MiB", &two_data_missing),
        ("decode/4+2/all_data_present/4MiB", &all),
    ] {
        assert_eq!(
            coder.decode(layout, cipher.len(), shards).expect("decode"),
            cipher
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| {
                    coder
                        .decode(layout, cipher.len(), black_box(shards))
                        .expect("decode")
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn baseline(c: &mut Criterion) {
    let src = random_bytes(CHUNK, 4);
    let mut dst = vec![0u8; CHUNK];
    let mut g = group(c, "baseline");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    // Into a buffer already faulted in: the memory bandwidth bound.
    g.bench_function("memcpy/4MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    // Into a fresh allocation, as most pipeline stages do: adds mmap and page faults.
    g.bench_function("to_vec/4MiB", |b| {
        b.iter_batched(
            || (),
            |()| black_box(&src).to_vec(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, hashing, crypto, erasure, baseline);
criterion_main!(benches);
