//! How much new chunk data one small edit of a 256 MiB file produces under fixed 4 MiB chunks
//! and under content-defined chunking (FastCDC 2020), i.e. what dedup saves or misses.
//!
//! Edits: (i) overwrite 1 byte in place, (ii) insert 1 byte. Each is applied in the middle of the
//! buffer and at 8 further random positions (fixed seed); "new" is the plaintext bytes of the
//! edited buffer's chunks whose content (blake3) is not among the original's chunks, which is
//! what convergent encryption would have to encrypt, encode and store again.
//!
//! `cargo run --release -p dfs-benches --example chunk_dedup`

use std::collections::HashSet;
use std::time::Instant;

use dfs_benches::{random_bytes, CDC_SETTINGS, CHUNK, MIB};
use fastcdc::v2020::FastCDC;
use rand::{Rng, SeedableRng};

const SIZE: usize = 256 << 20;
const RANDOM_POSITIONS: usize = 8;

#[derive(Clone, Copy)]
enum Scheme {
    Fixed,
    Cdc { min: u32, avg: u32, max: u32 },
}

impl Scheme {
    /// (offset, length) of every chunk of `data`.
    fn cut(self, data: &[u8]) -> Vec<(usize, usize)> {
        match self {
            Scheme::Fixed => (0..data.len())
                .step_by(CHUNK)
                .map(|o| (o, CHUNK.min(data.len() - o)))
                .collect(),
            Scheme::Cdc { min, avg, max } => FastCDC::new(data, min, avg, max)
                .map(|c| (c.offset, c.length))
                .collect(),
        }
    }

    /// Content ids of every chunk of `data`.
    fn ids(self, data: &[u8]) -> Vec<([u8; 32], usize)> {
        self.cut(data)
            .into_iter()
            .map(|(o, l)| (*blake3::hash(&data[o..o + l]).as_bytes(), l))
            .collect()
    }
}

/// (new chunks, new bytes) of `edited` against the chunk set `before`.
fn new_data(scheme: Scheme, before: &HashSet<[u8; 32]>, edited: &[u8]) -> (usize, usize) {
    scheme
        .ids(edited)
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .fold((0, 0), |(n, bytes), (_, len)| (n + 1, bytes + len))
}

fn mib(bytes: f64) -> String {
    format!("{:.2}", bytes / MIB as f64)
}

fn main() {
    let original = random_bytes(SIZE, 11);
    let mut schemes = vec![("fixed_4MiB".to_string(), Scheme::Fixed)];
    for (name, min, avg, max) in CDC_SETTINGS {
        schemes.push((name.to_string(), Scheme::Cdc { min, avg, max }));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut positions = vec![SIZE / 2];
    positions.extend((0..RANDOM_POSITIONS).map(|_| rng.random_range(0..SIZE)));

    let mut before = Vec::new();
    println!("input: {} MiB of random bytes (seed 11)", SIZE / MIB);
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>18}",
        "scheme", "chunks", "mean MiB", "max MiB", "cut MB/s (1 pass)"
    );
    for (name, scheme) in &schemes {
        let start = Instant::now();
        let cuts = scheme.cut(&original);
        let secs = start.elapsed().as_secs_f64();
        let max = cuts.iter().map(|c| c.1).max().unwrap_or(0);
        let speed = match scheme {
            // Offsets only, never reads the data: nothing worth a number.
            Scheme::Fixed => "(free)".to_string(),
            Scheme::Cdc { .. } => format!("{:.0}", SIZE as f64 / 1e6 / secs.max(1e-9)),
        };
        println!(
            "{:<16} {:>7} {:>10} {:>10} {:>18}",
            name,
            cuts.len(),
            mib(SIZE as f64 / cuts.len() as f64),
            mib(max as f64),
            speed
        );
        let set: HashSet<[u8; 32]> = scheme.ids(&original).into_iter().map(|c| c.0).collect();
        before.push(set);
    }

    // results[edit][scheme] = (new chunks, new bytes) per position
    let edits = ["overwrite 1 byte", "insert 1 byte"];
    let mut results = vec![vec![Vec::new(); schemes.len()]; edits.len()];
    for &pos in &positions {
        for (e, result) in results.iter_mut().enumerate() {
            let edited = if e == 0 {
                let mut v = original.clone();
                v[pos] ^= 0xff;
                v
            } else {
                let mut v = Vec::with_capacity(SIZE + 1);
                v.extend_from_slice(&original[..pos]);
                v.push(0x5a);
                v.extend_from_slice(&original[pos..]);
                v
            };
            for (s, (_, scheme)) in schemes.iter().enumerate() {
                result[s].push(new_data(*scheme, &before[s], &edited));
            }
        }
    }

    println!();
    println!(
        "new data after one edit (middle = offset {}; random = {} positions, seed 12)",
        SIZE / 2,
        RANDOM_POSITIONS
    );
    println!(
        "{:<18} {:<16} {:>13} {:>11} {:>16} {:>16} {:>18}",
        "edit",
        "scheme",
        "middle chunks",
        "middle MiB",
        "random mean MiB",
        "random max MiB",
        "random chunks max"
    );
    for (e, edit) in edits.iter().enumerate() {
        for (s, (name, _)) in schemes.iter().enumerate() {
            let r = &results[e][s];
            let random = &r[1..];
            let mean = random.iter().map(|x| x.1 as f64).sum::<f64>() / random.len() as f64;
            let max = random.iter().map(|x| x.1).max().unwrap_or(0);
            let max_chunks = random.iter().map(|x| x.0).max().unwrap_or(0);
            println!(
                "{:<18} {:<16} {:>13} {:>11} {:>16} {:>16} {:>18}",
                edit,
                name,
                r[0].0,
                mib(r[0].1 as f64),
                mib(mean),
                mib(max as f64),
                max_chunks
            );
        }
    }
}
