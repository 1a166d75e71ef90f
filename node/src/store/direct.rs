//! Writing shard files past the page cache (`O_DIRECT`).
//!
//! A peer seldom reads a shard soon after storing it, yet a buffered write copies every byte
//! into newly allocated page-cache pages. On the virtual machines we measure on, touching
//! pages the host has taken back costs about a second of CPU per GiB: more than receiving,
//! hashing and writing the shard together (docs/placement.md). So the whole blocks of an image
//! go from a reused aligned buffer straight to the disk, and only its last partial block goes
//! through the page cache, which also gives the file its exact length. Images under
//! [`DIRECT_MIN`] stay buffered, and so does every write on a filesystem without direct I/O
//! (tmpfs before Linux 6.6, many FUSE and network filesystems).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Alignment of direct I/O offsets, lengths and buffers: the largest logical block size in
/// common use, so it suits every disk.
pub const ALIGN: usize = 4096;
/// Smaller images are written through the page cache: a direct write waits for the device,
/// which matters more than a copy for small files, and small files are the ones read back
/// soon (a shard of a 4 MiB chunk at 4+2 is 1 MiB).
pub const DIRECT_MIN: usize = 128 << 10;
/// Aligned buffers kept for reuse (one per concurrent writer is enough).
const POOL: usize = 8;

/// Writes images with direct I/O where the filesystem allows it.
#[derive(Debug)]
pub struct DirectWriter {
    supported: AtomicBool,
    /// Buffers a little larger than an image, so an aligned window fits in them. Reusing
    /// them is the point: they stay resident, where a fresh buffer would fault in new pages.
    pool: Mutex<Vec<Vec<u8>>>,
}

impl Default for DirectWriter {
    fn default() -> Self {
        Self {
            supported: AtomicBool::new(true),
            pool: Mutex::new(Vec::new()),
        }
    }
}

impl DirectWriter {
    /// Write the concatenation of `parts` to `file` (new and empty) from offset 0.
    pub fn write(&self, file: &File, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let whole = total / ALIGN * ALIGN;
        if total < DIRECT_MIN || !self.supported.load(Ordering::Relaxed) {
            return write_range(file, parts, 0, total);
        }
        // The partial last block through the page cache first: it sets the file's length.
        write_range(file, parts, whole, total)?;
        if let Err(e) = fcntl(file, FcntlArg::F_SETFL(OFlag::O_DIRECT)) {
            self.unsupported(e);
            return write_range(file, parts, 0, whole);
        }
        let mut buffer = self.take();
        let result = match aligned(&mut buffer, whole) {
            Some(window) => {
                copy_range(parts, 0, window);
                file.write_all_at(window, 0)
            }
            None => Err(Errno::EINVAL.into()),
        };
        self.give(buffer);
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Stricter alignment than ours, or direct I/O refused after all.
                self.unsupported(Errno::EINVAL);
                fcntl(file, FcntlArg::F_SETFL(OFlag::empty()))?;
                write_range(file, parts, 0, whole)
            }
            other => other,
        }
    }

    fn unsupported(&self, e: Errno) {
        if self.supported.swap(false, Ordering::Relaxed) {
            tracing::info!(error = %e, "no direct I/O on this filesystem; shards are written through the page cache");
        }
    }

    fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    fn give(&self, buffer: Vec<u8>) {
        let mut pool = self.lock();
        if pool.len() < POOL {
            pool.push(buffer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An `ALIGN`-aligned window of `len` bytes inside `buffer` (grown if needed).
fn aligned(buffer: &mut Vec<u8>, len: usize) -> Option<&mut [u8]> {
    if buffer.len() < len + ALIGN {
        buffer.resize(len + ALIGN, 0);
    }
    let start = buffer.as_ptr().align_offset(ALIGN);
    buffer.get_mut(start..start + len)
}

/// The pieces of bytes `start..end` of the concatenation of `parts`, with their offsets in it.
fn pieces<'a>(
    parts: &'a [&'a [u8]],
    start: usize,
    end: usize,
) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
    parts
        .iter()
        .scan(0, |at, part| {
            let offset = *at;
            *at += part.len();
            Some((offset, *part))
        })
        .filter_map(move |(at, part)| {
            let (from, to) = (start.max(at), end.min(at + part.len()));
            (from < to).then(|| (from, &part[from - at..to - at]))
        })
}

/// Bytes `start..end` of the concatenation of `parts`, each at its offset in `file`.
fn write_range(file: &File, parts: &[&[u8]], start: usize, end: usize) -> io::Result<()> {
    pieces(parts, start, end).try_for_each(|(at, piece)| file.write_all_at(piece, at as u64))
}

/// Copy bytes `start..start + out.len()` of the concatenation of `parts` into `out`.
fn copy_range(parts: &[&[u8]], start: usize, out: &mut [u8]) {
    for (at, piece) in pieces(parts, start, start + out.len()) {
        out[at - start..at - start + piece.len()].copy_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images of every length around the block size come back byte for byte, whether or not
    /// the filesystem under the temporary directory does direct I/O, split into any parts.
    #[test]
    fn images_of_any_length_and_split_are_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DirectWriter::default();
        for len in [
            0,
            1,
            80,
            ALIGN + 1,
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 80,
            3 * DIRECT_MIN + ALIGN,
            (1 << 20) + 80,
        ] {
            let image: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for split in [0, 80.min(len), len / 2, len] {
                let path = dir.path().join(format!("{len}.{split}"));
                let file = File::create(&path).unwrap();
                writer
                    .write(&file, &[&image[..split], &image[split..]])
                    .unwrap();
                drop(file);
                assert!(
                    std::fs::read(&path).unwrap() == image,
                    "len {len} split {split}"
                );
            }
        }
        // Buffers are reused, not piled up.
        assert!(writer.lock().len() <= 1);
        // Where the filesystem does direct I/O, the writer went on using it.
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"))
            .is_ok();
        assert_eq!(writer.supported.load(Ordering::Relaxed), direct);
    }

    #[test]
    fn a_range_of_the_concatenation_is_copied() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        let mut out = [0u8; 4];
        copy_range(&parts, 2, &mut out);
        assert_eq!(&out, b"cdef");
    }
}
