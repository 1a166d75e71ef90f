//! The on-disk and on-wire form of one shard: a fixed header, the body, and a blake3 over both.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "DFSSHRD1" (format version 1)
//!      8    32  chunk id (blake3 of the chunk's ciphertext)
//!     40     1  layout kind (0 = replicated, 1 = erasure)
//!     41     1  copies, or data shard count
//!     42     1  0, or parity shard count
//!     43     1  shard index
//!     44     4  chunk ciphertext length, little endian
//!     48    32  blake3 of bytes 0..48 followed by the body
//!     80     -  body
//! ```
//! The hash covers the header, so a flipped bit anywhere in the file is detected; the chunk id is
//! checked again after decoding, so even a shard forged with a matching hash cannot pass.

use dfs_placement::{ChunkId, Layout};

pub const MAGIC: &[u8; 8] = b"DFSSHRD1";
pub const HEADER_LEN: usize = 80;
pub const HASHED_HEADER_LEN: usize = 48;

/// What a shard header says about the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    pub chunk: ChunkId,
    pub layout: Layout,
    pub index: u8,
    pub chunk_len: u32,
}

/// Why shard bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardDefect {
    #[error("too short ({len} bytes) to hold a shard header")]
    Truncated { len: usize },
    #[error("not a dfs shard (bad magic or unknown format version)")]
    BadMagic,
    #[error("invalid layout in header")]
    BadLayout,
    #[error("checksum mismatch")]
    Checksum,
    #[error("belongs to chunk {found}, expected {expected}")]
    WrongChunk { found: ChunkId, expected: ChunkId },
    #[error("is shard {found}, expected shard {expected}")]
    WrongIndex { found: u8, expected: u8 },
    #[error("body is {got} bytes, expected {expected} for its layout")]
    BodyLength { got: usize, expected: usize },
}

impl ShardHeader {
    /// The header (with its checksum) for `body`; the file is this followed by the body.
    pub fn seal(&self, body: &[u8]) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..40].copy_from_slice(self.chunk.as_bytes());
        let (kind, a, b) = match self.layout {
            Layout::Replicated { copies } => (0u8, copies, 0u8),
            Layout::Erasure { data, parity } => (1u8, data, parity),
        };
        out[40..44].copy_from_slice(&[kind, a, b, self.index]);
        out[44..48].copy_from_slice(&self.chunk_len.to_le_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out[..HASHED_HEADER_LEN]);
        hasher.update(body);
        out[HASHED_HEADER_LEN..].copy_from_slice(hasher.finalize().as_bytes());
        out
    }

    /// The blake3 a shard image carries in its header (not checked here); `None` for bytes too
    /// short to be an image.
    pub fn carried_hash(image: &[u8]) -> Option<[u8; 32]> {
        Self::carried_hash_of_parts(&[image])
    }

    /// [`ShardHeader::carried_hash`] of an image given in parts that follow each other (split
    /// anywhere, the header too).
    pub fn carried_hash_of_parts(parts: &[&[u8]]) -> Option<[u8; 32]> {
        let mut head = [0u8; HEADER_LEN];
        let mut filled = 0;
        for part in parts {
            let n = part.len().min(HEADER_LEN - filled);
            head[filled..filled + n].copy_from_slice(&part[..n]);
            filled += n;
            if filled == HEADER_LEN {
                return head[HASHED_HEADER_LEN..].try_into().ok();
            }
        }
        None
    }

    /// Serialise header and body into one shard file image.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        let mut out = self.seal(body).to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Parse and fully verify a shard file image; returns the header and the body.
    pub fn decode(bytes: &[u8]) -> Result<(ShardHeader, &[u8]), ShardDefect> {
        Self::parse(bytes, true)
    }

    fn parse(bytes: &[u8], checksum: bool) -> Result<(ShardHeader, &[u8]), ShardDefect> {
        let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(ShardDefect::Truncated { len: bytes.len() });
        };
        if &head[..8] != MAGIC {
            return Err(ShardDefect::BadMagic);
        }
        if checksum {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&head[..HASHED_HEADER_LEN]);
            hasher.update(body);
            if hasher.finalize().as_bytes() != &head[HASHED_HEADER_LEN..HEADER_LEN] {
                return Err(ShardDefect::Checksum);
            }
        }
        Ok((Self::parse_head(head, body.len())?, body))
    }

    /// The header of a shard whose body is `body_len` bytes, checked for structure (not the
    /// checksum, which covers the body).
    fn parse_head(bytes: &[u8; HEADER_LEN], body_len: usize) -> Result<ShardHeader, ShardDefect> {
        let header = Self::parse_fields(bytes)?;
        let expected = header.layout.shard_len(header.chunk_len as usize);
        if body_len != expected {
            return Err(ShardDefect::BodyLength {
                got: body_len,
                expected,
            });
        }
        Ok(header)
    }

    /// A header on its own (as a holder reports it, see [`crate::net::wire::Response::Holds`]),
    /// checked for structure and against the chunk it should belong to. It proves nothing
    /// about any body: what it says (layout, length) is a claim, which the shards fetched
    /// later confirm or refute.
    pub fn from_head(bytes: &[u8], chunk: ChunkId) -> Result<ShardHeader, ShardDefect> {
        let head: &[u8; HEADER_LEN] = bytes
            .try_into()
            .map_err(|_| ShardDefect::Truncated { len: bytes.len() })?;
        let header = Self::parse_fields(head)?;
        if header.chunk != chunk {
            return Err(ShardDefect::WrongChunk {
                found: header.chunk,
                expected: chunk,
            });
        }
        Ok(header)
    }

    fn parse_fields(bytes: &[u8; HEADER_LEN]) -> Result<ShardHeader, ShardDefect> {
        if &bytes[..8] != MAGIC {
            return Err(ShardDefect::BadMagic);
        }
        let mut chunk = [0u8; 32];
        chunk.copy_from_slice(&bytes[8..40]);
        let layout = match bytes[40] {
            0 => Layout::Replicated { copies: bytes[41] },
            1 => Layout::Erasure {
                data: bytes[41],
                parity: bytes[42],
            },
            _ => return Err(ShardDefect::BadLayout),
        };
        let layout = layout.validate().map_err(|_| ShardDefect::BadLayout)?;
        let index = bytes[43];
        if index as usize >= layout.shard_count() {
            return Err(ShardDefect::BadLayout);
        }
        let chunk_len = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
        Ok(ShardHeader {
            chunk: ChunkId(chunk),
            layout,
            index,
            chunk_len,
        })
    }

    /// Decode and check that the shard is the one we asked for.
    pub fn decode_expected(
        bytes: &[u8],
        chunk: ChunkId,
        index: u8,
    ) -> Result<(ShardHeader, &[u8]), ShardDefect> {
        Self::decode_as(bytes, chunk, index, true)
    }

    /// [`ShardHeader::decode_expected`] without the checksum (`checksum` false): the structure
    /// and the names are checked, the bytes are not. Only for a caller that authenticates the
    /// content another way: a reader holding the chunk's key, whose AEAD tag covers every byte.
    pub fn decode_as(
        bytes: &[u8],
        chunk: ChunkId,
        index: u8,
        checksum: bool,
    ) -> Result<(ShardHeader, &[u8]), ShardDefect> {
        let (header, body) = Self::parse(bytes, checksum)?;
        header.named(chunk, index)?;
        Ok((header, body))
    }

    /// Check only the header of a shard file of `file_len` bytes (its first [`HEADER_LEN`]
    /// bytes in `head`) against the chunk and index it was asked for: what
    /// [`ShardHeader::decode_as`] without the checksum checks, for an image that is sent from
    /// the file as it lies and never read into memory.
    pub fn check_head(
        head: &[u8; HEADER_LEN],
        file_len: u64,
        chunk: ChunkId,
        index: u8,
    ) -> Result<ShardHeader, ShardDefect> {
        let body_len = file_len
            .checked_sub(HEADER_LEN as u64)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(ShardDefect::Truncated {
                len: file_len as usize,
            })?;
        let header = Self::parse_head(head, body_len)?;
        header.named(chunk, index)?;
        Ok(header)
    }

    /// Whether this is the header of shard `index` of `chunk`.
    fn named(&self, chunk: ChunkId, index: u8) -> Result<(), ShardDefect> {
        if self.chunk != chunk {
            return Err(ShardDefect::WrongChunk {
                found: self.chunk,
                expected: chunk,
            });
        }
        if self.index != index {
            return Err(ShardDefect::WrongIndex {
                found: self.index,
                expected: index,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(body_len_chunk: u32) -> (ShardHeader, Vec<u8>) {
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let header = ShardHeader {
            chunk: ChunkId([9; 32]),
            layout,
            index: 5,
            chunk_len: body_len_chunk,
        };
        let body = vec![0xAB; layout.shard_len(body_len_chunk as usize)];
        (header, body)
    }

    #[test]
    fn a_header_alone_is_checked_against_the_file_length_and_names() {
        let (header, body) = sample(1000);
        let bytes = header.encode(&body);
        let head: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        let len = bytes.len() as u64;
        assert_eq!(
            ShardHeader::check_head(&head, len, header.chunk, 5),
            Ok(header)
        );
        assert!(matches!(
            ShardHeader::check_head(&head, len - 1, header.chunk, 5),
            Err(ShardDefect::BodyLength { .. })
        ));
        assert!(matches!(
            ShardHeader::check_head(&head, 10, header.chunk, 5),
            Err(ShardDefect::Truncated { .. })
        ));
        assert!(matches!(
            ShardHeader::check_head(&head, len, ChunkId([1; 32]), 5),
            Err(ShardDefect::WrongChunk { .. })
        ));
        assert!(matches!(
            ShardHeader::check_head(&head, len, header.chunk, 4),
            Err(ShardDefect::WrongIndex { .. })
        ));
        let mut bad = head;
        bad[0] ^= 1;
        assert_eq!(
            ShardHeader::check_head(&bad, len, header.chunk, 5),
            Err(ShardDefect::BadMagic)
        );
    }

    #[test]
    fn round_trip() {
        let (header, body) = sample(1000);
        let bytes = header.encode(&body);
        let (h, b) = ShardHeader::decode_expected(&bytes, header.chunk, 5).unwrap();
        assert_eq!(h, header);
        assert_eq!(b, &body[..]);
        assert!(matches!(
            ShardHeader::decode_expected(&bytes, ChunkId([1; 32]), 5),
            Err(ShardDefect::WrongChunk { .. })
        ));
        assert!(matches!(
            ShardHeader::decode_expected(&bytes, header.chunk, 4),
            Err(ShardDefect::WrongIndex { .. })
        ));
    }

    proptest! {
        /// Any single flipped bit anywhere in the file is rejected.
        #[test]
        fn any_flip_is_detected(len in 1u32..5000, pos in any::<usize>(), bit in 0u8..8) {
            let (header, body) = sample(len);
            let mut bytes = header.encode(&body);
            let i = pos % bytes.len();
            bytes[i] ^= 1 << bit;
            prop_assert!(ShardHeader::decode(&bytes).is_err());
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ShardHeader::decode(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = ShardHeader::decode(&with_magic);
        }

        /// The carried hash reads the same from an image split anywhere into three parts, and
        /// from nothing shorter than a header.
        #[test]
        fn the_carried_hash_is_found_across_parts(len in 1u32..3000, a in any::<usize>(), b in any::<usize>()) {
            let (header, body) = sample(len);
            let bytes = header.encode(&body);
            let whole = ShardHeader::carried_hash(&bytes);
            prop_assert!(whole.is_some());
            let (x, y) = (a % bytes.len(), b % bytes.len());
            let (x, y) = (x.min(y), x.max(y));
            let parts = [&bytes[..x], &bytes[x..y], &bytes[y..]];
            prop_assert_eq!(ShardHeader::carried_hash_of_parts(&parts), whole);
            let short = &bytes[..(a % HEADER_LEN)];
            prop_assert_eq!(ShardHeader::carried_hash_of_parts(&[short, &[]]), None);
        }

        /// Truncation at any point is rejected.
        #[test]
        fn truncation_is_detected(len in 1u32..3000, cut in any::<usize>()) {
            let (header, body) = sample(len);
            let bytes = header.encode(&body);
            let keep = cut % bytes.len();
            prop_assert!(ShardHeader::decode(&bytes[..keep]).is_err());
        }
    }
}
