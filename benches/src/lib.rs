//! Helpers shared by the dfs benchmarks: scratch directories that keep the disk out of the
//! measurement, and incompressible input that never dedups against an earlier iteration.

use std::io;
use std::path::Path;

use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

pub const MIB: usize = 1 << 20;

/// The pipeline's chunk size (`StorageConfig::default().chunk_size`).
pub const CHUNK: usize = 4 * MIB;

/// Content-defined chunking settings compared with fixed 4 MiB chunks (docs/chunking.md):
/// (name, min, average, max) bytes for `fastcdc::v2020::FastCDC`.
pub const CDC_SETTINGS: [(&str, u32, u32, u32); 2] = [
    ("fastcdc_avg1MiB", 256 << 10, 1 << 20, 4 << 20),
    ("fastcdc_avg2MiB", 512 << 10, 2 << 20, 4 << 20),
];

/// A fresh temporary directory on `/dev/shm` (tmpfs) when there is one, so the storage device
/// does not dominate pipeline numbers; otherwise in the system temporary directory.
pub fn scratch_dir(prefix: &str) -> io::Result<TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            return Ok(dir);
        }
    }
    tempfile::Builder::new().prefix(prefix).tempdir()
}

/// `len` random bytes from a fixed seed (reproducible across runs).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Write `counter` into the first 8 bytes of every `block`-sized block of `buf`, so each block
/// differs from every block of any buffer stamped with another counter.
pub fn stamp(buf: &mut [u8], block: usize, counter: u64) {
    for b in buf.chunks_mut(block) {
        let n = b.len().min(8);
        b[..n].copy_from_slice(&counter.to_le_bytes()[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_marks_every_block() {
        let mut buf = vec![0u8; 10];
        stamp(&mut buf, 4, u64::MAX);
        assert_eq!(buf, [255, 255, 255, 255, 255, 255, 255, 255, 255, 255]);
        let mut buf = random_bytes(3 * CHUNK + 5, 1);
        stamp(&mut buf, CHUNK, 7);
        for block in buf.chunks(CHUNK) {
            assert_eq!(block[0], 7);
        }
        assert_eq!(random_bytes(64, 3), random_bytes(64, 3));
    }
}
