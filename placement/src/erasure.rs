//! Erasure coding of a chunk's ciphertext into shards and back.
//!
//! A [`Layout`] says how a chunk is spread: large chunks are split into `data` shards plus `parity`
//! Reed-Solomon recovery shards (any `data` of them rebuild the chunk); small chunks are stored as
//! whole `copies`, which costs less than padding them into many tiny shards. The code is
//! systematic: when every data shard is present, decoding is a concatenation, not a computation.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use serde::{Deserialize, Serialize};

/// Largest number of data or parity shards we accept; far beyond any useful setting, and it keeps
/// every index in a `u8`.
pub const MAX_SHARDS_PER_KIND: u8 = 64;

/// How one chunk is cut into shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layout {
    /// `copies` identical shards, each the whole ciphertext.
    Replicated { copies: u8 },
    /// `data` shards holding the ciphertext (zero-padded) plus `parity` recovery shards.
    Erasure { data: u8, parity: u8 },
}

/// Why a layout or an encoding request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("invalid layout {layout}: {reason}")]
    InvalidLayout {
        layout: Layout,
        reason: &'static str,
    },
    #[error("erasure encoder failed: {0}")]
    Coder(String),
}

/// Why shards could not be turned back into the chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("only {have} of the {need} shards needed are intact")]
    NotEnoughShards { have: usize, need: usize },
    #[error("shard {index} has {got} bytes, expected {expected}")]
    ShardLength {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error("expected {expected} shard slots for layout {layout}, got {got}")]
    SlotCount {
        layout: Layout,
        expected: usize,
        got: usize,
    },
    #[error("erasure decoder failed: {0}")]
    Coder(String),
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Replicated { copies } => write!(f, "{copies} copies"),
            Layout::Erasure { data, parity } => write!(f, "{data}+{parity}"),
        }
    }
}

impl Layout {
    /// Check that the layout is usable.
    pub fn validate(self) -> Result<Self, EncodeError> {
        let bad = |reason| {
            Err(EncodeError::InvalidLayout {
                layout: self,
                reason,
            })
        };
        match self {
            Layout::Replicated { copies: 0 } => bad("at least one copy is needed"),
            Layout::Replicated { copies } if copies > MAX_SHARDS_PER_KIND => {
                bad("at most 64 copies")
            }
            Layout::Erasure { data: 0, .. } => bad("at least one data shard is needed"),
            Layout::Erasure { parity: 0, .. } => bad("at least one parity shard is needed"),
            Layout::Erasure { data, parity }
                if data > MAX_SHARDS_PER_KIND || parity > MAX_SHARDS_PER_KIND =>
            {
                bad("at most 64 data and 64 parity shards")
            }
            _ => Ok(self),
        }
    }

    /// Total number of shards stored for one chunk.
    pub fn shard_count(self) -> usize {
        match self {
            Layout::Replicated { copies } => copies as usize,
            Layout::Erasure { data, parity } => data as usize + parity as usize,
        }
    }

    /// Number of intact shards needed to rebuild the chunk.
    pub fn needed(self) -> usize {
        match self {
            Layout::Replicated { .. } => 1,
            Layout::Erasure { data, .. } => data as usize,
        }
    }

    /// Number of shards that may be lost without losing the chunk.
    pub fn tolerated_losses(self) -> usize {
        self.shard_count() - self.needed()
    }

    /// Size of every shard of a chunk whose ciphertext is `chunk_len` bytes.
    pub fn shard_len(self, chunk_len: usize) -> usize {
        match self {
            Layout::Replicated { .. } => chunk_len,
            Layout::Erasure { data, .. } => {
                let per = chunk_len.div_ceil(data as usize).max(2);
                per + (per & 1) // reed-solomon-simd needs an even, non-zero shard size
            }
        }
    }
}

/// A chunk cut into shards. Data shards are slices of the padded ciphertext, so encoding copies
/// only the parity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    layout: Layout,
    /// The ciphertext, zero-padded to `data * shard_len` for erasure layouts.
    padded: Vec<u8>,
    shard_len: usize,
    parity: Vec<Vec<u8>>,
}

impl Encoded {
    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn shard_count(&self) -> usize {
        self.layout.shard_count()
    }

    /// Shard `index` (data shards first, then parity). Panics if `index >= shard_count()`.
    pub fn shard(&self, index: usize) -> &[u8] {
        match self.layout {
            Layout::Replicated { .. } => &self.padded,
            Layout::Erasure { data, .. } => {
                let data = data as usize;
                if index < data {
                    &self.padded[index * self.shard_len..(index + 1) * self.shard_len]
                } else {
                    &self.parity[index - data]
                }
            }
        }
    }
}

/// Reusable Reed-Solomon working space; keep one per worker thread so a chunk does not pay for
/// allocating and faulting in several MiB of scratch memory.
#[derive(Default)]
pub struct ShardCoder {
    encoder: Option<ReedSolomonEncoder>,
    decoder: Option<ReedSolomonDecoder>,
    /// Parity buffers handed back by [`ShardCoder::recycle`], reused by the next encode.
    spare_parity: Vec<Vec<u8>>,
}

impl ShardCoder {
    /// Cut `ciphertext` into the shards of `layout`.
    pub fn encode(
        &mut self,
        layout: Layout,
        mut ciphertext: Vec<u8>,
    ) -> Result<Encoded, EncodeError> {
        layout.validate()?;
        let shard_len = layout.shard_len(ciphertext.len());
        let Layout::Erasure { data, parity } = layout else {
            return Ok(Encoded {
                layout,
                padded: ciphertext,
                shard_len,
                parity: Vec::new(),
            });
        };
        let (data, parity) = (data as usize, parity as usize);
        ciphertext.resize(data * shard_len, 0);
        let coder_err = |e: reed_solomon_simd::Error| EncodeError::Coder(e.to_string());
        let encoder = match &mut self.encoder {
            Some(enc) => {
                enc.reset(data, parity, shard_len).map_err(coder_err)?;
                enc
            }
            slot => {
                slot.insert(ReedSolomonEncoder::new(data, parity, shard_len).map_err(coder_err)?)
            }
        };
        for shard in ciphertext.chunks_exact(shard_len) {
            encoder.add_original_shard(shard).map_err(coder_err)?;
        }
        let result = encoder.encode().map_err(coder_err)?;
        let spare = &mut self.spare_parity;
        let recovery: Vec<Vec<u8>> = result
            .recovery_iter()
            .map(|shard| {
                let mut buf = spare.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(shard);
                buf
            })
            .collect();
        Ok(Encoded {
            layout,
            padded: ciphertext,
            shard_len,
            parity: recovery,
        })
    }

    /// Take back an encoding's buffers: its parity buffers are kept for the next encode, and the
    /// padded ciphertext buffer is returned for the caller to reuse. Fresh multi-MiB buffers cost
    /// page faults on every chunk; reusing them keeps the write path out of the kernel.
    pub fn recycle(&mut self, encoded: Encoded) -> Vec<u8> {
        const MAX_SPARE: usize = 2 * MAX_SHARDS_PER_KIND as usize;
        for buf in encoded.parity {
            if self.spare_parity.len() < MAX_SPARE {
                self.spare_parity.push(buf);
            }
        }
        encoded.padded
    }

    /// Rebuild the `chunk_len`-byte ciphertext from whichever shards are present
    /// (`shards[i]` is shard `i`, `None` when missing or known corrupt).
    pub fn decode(
        &mut self,
        layout: Layout,
        chunk_len: usize,
        shards: &[Option<&[u8]>],
    ) -> Result<Vec<u8>, DecodeError> {
        if shards.len() != layout.shard_count() {
            return Err(DecodeError::SlotCount {
                layout,
                expected: layout.shard_count(),
                got: shards.len(),
            });
        }
        let shard_len = layout.shard_len(chunk_len);
        for (index, shard) in shards.iter().enumerate() {
            if let Some(s) = shard {
                if s.len() != shard_len {
                    return Err(DecodeError::ShardLength {
                        index,
                        got: s.len(),
                        expected: shard_len,
                    });
                }
            }
        }
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < layout.needed() {
            return Err(DecodeError::NotEnoughShards {
                have,
                need: layout.needed(),
            });
        }
        let Layout::Erasure { data, parity } = layout else {
            let first = shards.iter().flatten().next().map(|s| s.to_vec());
            return first.ok_or(DecodeError::NotEnoughShards { have: 0, need: 1 });
        };
        let (data, parity) = (data as usize, parity as usize);
        let mut out = Vec::with_capacity(data * shard_len);
        if shards[..data].iter().all(Option::is_some) {
            for s in shards[..data].iter().flatten() {
                out.extend_from_slice(s);
            }
            out.truncate(chunk_len);
            return Ok(out);
        }
        let coder_err = |e: reed_solomon_simd::Error| DecodeError::Coder(e.to_string());
        let decoder = match &mut self.decoder {
            Some(dec) => {
                dec.reset(data, parity, shard_len).map_err(coder_err)?;
                dec
            }
            slot => {
                slot.insert(ReedSolomonDecoder::new(data, parity, shard_len).map_err(coder_err)?)
            }
        };
        for (i, s) in shards.iter().enumerate() {
            match s {
                Some(s) if i < data => decoder.add_original_shard(i, s).map_err(coder_err)?,
                Some(s) => decoder.add_recovery_shard(i - data, s).map_err(coder_err)?,
                None => {}
            }
        }
        let result = decoder.decode().map_err(coder_err)?;
        for (i, s) in shards[..data].iter().enumerate() {
            match s {
                Some(s) => out.extend_from_slice(s),
                None => {
                    let restored = result
                        .restored_original(i)
                        .ok_or_else(|| DecodeError::Coder(format!("shard {i} was not restored")))?;
                    out.extend_from_slice(restored);
                }
            }
        }
        out.truncate(chunk_len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layouts() -> impl Strategy<Value = Layout> {
        prop_oneof![
            (1u8..5).prop_map(|copies| Layout::Replicated { copies }),
            (1u8..9, 1u8..5).prop_map(|(data, parity)| Layout::Erasure { data, parity }),
        ]
    }

    /// Every subset of lost shards: at most `tolerated_losses` must decode to the original bytes,
    /// more must fail with `NotEnoughShards`.
    fn check_losses(layout: Layout, bytes: &[u8], lost: &[usize]) -> Result<(), TestCaseError> {
        let mut coder = ShardCoder::default();
        let encoded = coder
            .encode(layout, bytes.to_vec())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let slots: Vec<Option<&[u8]>> = (0..layout.shard_count())
            .map(|i| (!lost.contains(&i)).then(|| encoded.shard(i)))
            .collect();
        let lost_count = slots.iter().filter(|s| s.is_none()).count();
        let result = coder.decode(layout, bytes.len(), &slots);
        if lost_count <= layout.tolerated_losses() {
            prop_assert_eq!(result.as_deref(), Ok(bytes));
        } else {
            let not_enough = matches!(result, Err(DecodeError::NotEnoughShards { .. }));
            prop_assert!(not_enough);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_tolerated_loss_recovers(
            layout in layouts(),
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
            lost in proptest::collection::vec(0usize..12, 0..6),
        ) {
            check_losses(layout, &bytes, &lost)?;
        }

        #[test]
        fn shard_len_covers_chunk(layout in layouts(), len in 0usize..10_000_000) {
            let sl = layout.shard_len(len);
            prop_assert!(sl * layout.needed() >= len);
            if let Layout::Erasure { data, .. } = layout {
                prop_assert!(sl % 2 == 0 && sl > 0);
                prop_assert!(sl < len.div_ceil(data as usize) + 3);
            }
        }
    }

    #[test]
    fn rejects_wrong_shard_length() {
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let mut coder = ShardCoder::default();
        let enc = coder.encode(layout, vec![7; 1000]).unwrap();
        let short = &enc.shard(1)[1..];
        let slots = vec![
            Some(enc.shard(0)),
            Some(short),
            None,
            None,
            Some(enc.shard(4)),
            Some(enc.shard(5)),
        ];
        assert!(matches!(
            coder.decode(layout, 1000, &slots),
            Err(DecodeError::ShardLength { index: 1, .. })
        ));
    }

    #[test]
    fn invalid_layouts_are_rejected() {
        for layout in [
            Layout::Replicated { copies: 0 },
            Layout::Erasure { data: 0, parity: 2 },
            Layout::Erasure { data: 4, parity: 0 },
            Layout::Erasure {
                data: 65,
                parity: 2,
            },
        ] {
            assert!(layout.validate().is_err(), "{layout} accepted");
        }
    }
}
