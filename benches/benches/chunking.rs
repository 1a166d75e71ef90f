//! Cost of cutting a stream into chunks: fixed 4 MiB cuts against content-defined chunking
//! (FastCDC 2020, average 1 or 2 MiB, at most 4 MiB) over 256 MiB of random bytes.
//! The dedup side of the comparison is `examples/chunk_dedup.rs`; both feed docs/chunking.md.
//!
//! `cargo bench -p dfs-benches --bench chunking`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dfs_benches::{random_bytes, CDC_SETTINGS, CHUNK};
use fastcdc::v2020::FastCDC;

const SIZE: usize = 256 << 20;

fn chunking(c: &mut Criterion) {
    let data = random_bytes(SIZE, 7);
    let mut g = c.benchmark_group("chunking_256MiB");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(SIZE as u64));
    // What blob::write_blob does today: a cut every CHUNK bytes, no look at the content.
    g.bench_function("fixed_4MiB", |b| {
        b.iter(|| {
            black_box(&data[..])
                .chunks(CHUNK)
                .map(|c| black_box(c.len()))
                .sum::<usize>()
        })
    });
    for (name, min, avg, max) in CDC_SETTINGS {
        g.bench_function(name, |b| {
            b.iter(|| {
                FastCDC::new(black_box(&data), min, avg, max)
                    .map(|c| c.length)
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
