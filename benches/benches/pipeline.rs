//! The whole write and read pipelines through the real code (`dfs_node::write_blob`,
//! `dfs_node::read_blob`) on 256 MiB of random bytes, with every core and with one worker.
//!
//! The repository lives on /dev/shm when it exists, so the numbers are CPU and memory bound.
//! Every measured write goes to a fresh repository (fresh volume secret) with freshly stamped
//! input, so nothing dedups and each iteration really encrypts, encodes and writes every chunk;
//! creating and deleting that repository is not timed.
//!
//! For scale, `store_floor/*` writes and reads the same shard files (64 chunks x 6 shards of
//! 1 MiB, 384 MiB) with plain `std::fs` and no computation: what the filesystem alone costs per
//! byte of user data. Throughput is always per byte of user data (256 MiB).
//!
//! `cargo bench -p dfs-benches --bench pipeline`

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dfs_benches::{random_bytes, scratch_dir, stamp, CHUNK};
use dfs_node::{read_blob, write_blob, BlobRef, Pipeline, Repo};
use dfs_placement::Layout;
use tempfile::TempDir;

const SIZE: usize = 256 << 20;

/// A repository in its own scratch directory. Field order matters: the repo (and its lock and
/// database) is dropped before the directory is removed.
struct Scratch {
    pipeline: Pipeline,
    _dir: TempDir,
}

impl Scratch {
    /// `workers == 0` keeps the default (one per core).
    fn new(workers: u32) -> Self {
        let dir = scratch_dir("dfs-bench-pipeline").expect("create a scratch directory");
        let mut repo = Repo::open(&dir.path().join("data")).expect("open the repository");
        if workers != 0 {
            let mut config = repo.config().clone();
            config.storage.workers = workers;
            repo.set_config(config).expect("valid configuration");
        }
        Self {
            pipeline: Pipeline::local(std::sync::Arc::new(repo)),
            _dir: dir,
        }
    }

    fn write(&self, data: &[u8]) -> (BlobRef, Duration) {
        let put = self
            .pipeline
            .repo()
            .begin_put("bench")
            .expect("begin a put");
        let mut reader = data;
        let start = Instant::now();
        let blob = write_blob(&self.pipeline, put.owner(), &mut reader).expect("write_blob");
        let elapsed = start.elapsed();
        assert_eq!(blob.size, data.len() as u64);
        (blob, elapsed)
    }
}

fn label(workers: u32) -> String {
    let n = match workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n as usize,
    };
    format!("{n}_workers")
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    secs: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs))
        .throughput(Throughput::Bytes(SIZE as u64));
    g
}

/// Write the shard files of SIZE bytes of 4+2-coded chunks into `dir`; returns their paths.
fn write_shard_files(dir: &std::path::Path, body: &[u8]) -> Vec<std::path::PathBuf> {
    let shards = (SIZE / CHUNK) * Layout::Erasure { data: 4, parity: 2 }.shard_count();
    (0..shards)
        .map(|i| {
            let path = dir.join(format!("shard.{i}"));
            std::fs::write(&path, body).expect("write a shard file");
            path
        })
        .collect()
}

fn store_floor(c: &mut Criterion) {
    let body = random_bytes(
        Layout::Erasure { data: 4, parity: 2 }.shard_len(CHUNK + 16),
        43,
    );
    let mut g = group(c, "pipeline_256MiB", 10);
    g.bench_function("store_floor/write_384_shard_files", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = scratch_dir("dfs-bench-floor").expect("create a scratch directory");
                let start = Instant::now();
                write_shard_files(dir.path(), &body);
                total += start.elapsed();
            }
            total
        })
    });
    let dir = scratch_dir("dfs-bench-floor").expect("create a scratch directory");
    let paths = write_shard_files(dir.path(), &body);
    g.bench_function("store_floor/read_384_shard_files", |b| {
        b.iter(|| {
            for path in &paths {
                black_box(std::fs::read(path).expect("read a shard file"));
            }
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut data = random_bytes(SIZE, 42);
    let mut counter = 0u64;
    let mut g = group(c, "pipeline_256MiB", 20);

    for workers in [0, 1] {
        g.bench_function(format!("write_blob/{}", label(workers)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    counter += 1;
                    stamp(&mut data, CHUNK, counter);
                    let scratch = Scratch::new(workers);
                    let (_, elapsed) = scratch.write(&data);
                    total += elapsed;
                    // Proof that nothing was skipped: every chunk was stored as 4+2 shards.
                    let written = scratch
                        .pipeline
                        .repo()
                        .store()
                        .counters()
                        .shard_bytes_written
                        .load(Ordering::Relaxed);
                    assert!(
                        written >= SIZE as u64 * 3 / 2,
                        "only {written} bytes stored"
                    );
                }
                total
            })
        });
    }

    g.finish();

    let mut g = group(c, "pipeline_256MiB", 10);
    for workers in [0, 1] {
        // A repository per worker count (its configuration is fixed once it is shared).
        let scratch = Scratch::new(workers);
        let (stored, _) = scratch.write(&data);
        let pipeline = &scratch.pipeline;
        g.bench_function(format!("read_blob/{}", label(workers)), |b| {
            b.iter(|| {
                let report = read_blob(pipeline, black_box(&stored), &mut std::io::sink(), false)
                    .expect("read_blob");
                assert_eq!(report.bytes, SIZE as u64);
                assert_eq!(report.degraded_chunks, 0);
            })
        });
    }
    g.finish();
}

/// The computing half of the write pipeline on every core, without the store: each worker seals
/// (convergent key, encrypt, chunk id) and encodes (4+2 Reed-Solomon, shard checksums) whole
/// 4 MiB chunks through the same functions `Pipeline::put_chunk` uses, recycling buffers as it does.
/// Compare with the single-core kernels in `kernels.rs`: this is what the pipeline itself costs.
fn pipeline_cpu(c: &mut Criterion) {
    use dfs_node::testing::{encode_shards, seal};
    use dfs_node::VolumeSecret;
    use dfs_placement::erasure::ShardCoder;
    use std::sync::atomic::AtomicUsize;

    let data = random_bytes(SIZE, 44);
    let secret = VolumeSecret::from_bytes([5; 32]);
    let layout = Layout::Erasure { data: 4, parity: 2 };
    let mut g = group(c, "pipeline_256MiB", 10);
    for workers in [0u32, 1] {
        let threads = match workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        };
        g.bench_function(format!("seal_and_encode/{}", label(workers)), |b| {
            b.iter(|| {
                let next = AtomicUsize::new(0);
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| {
                            let mut coder = ShardCoder::default();
                            let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 256);
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(chunk) = data.get(i * CHUNK..(i + 1) * CHUNK) else {
                                    break;
                                };
                                buf.clear();
                                buf.extend_from_slice(chunk);
                                let sealed = seal(&secret, std::mem::take(&mut buf));
                                let shards = encode_shards(
                                    &sealed.chunk.id,
                                    sealed.ciphertext,
                                    layout,
                                    &mut coder,
                                )
                                .expect("encode");
                                black_box(&shards.headers);
                                buf = coder.recycle(shards.encoded);
                            }
                        });
                    }
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline_cpu, pipeline, store_floor);
criterion_main!(benches);
