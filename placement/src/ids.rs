//! Identifiers shared by every crate: 32-byte blake3 digests shown as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of a chunk: blake3 of its ciphertext, so any peer can verify what it holds without a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub const LEN: usize = 32;

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first 8 hex characters, for logs and messages.
    pub fn short(&self) -> String {
        to_hex(&self.0[..4])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    #[error("expected {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("invalid hex character {found:?} at position {position}")]
    Character { found: char, position: usize },
}

impl FromStr for ChunkId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(ChunkId)
    }
}

/// Encode bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Decode hex (either case) of any even length; `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8)
        })
        .collect()
}

/// Decode exactly 64 hex characters into 32 bytes.
pub fn parse_hex32(s: &str) -> Result<[u8; 32], ParseIdError> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 64 {
        return Err(ParseIdError::Length {
            expected: 64,
            got: chars.len(),
        });
    }
    let mut out = [0u8; 32];
    for (i, pair) in chars.chunks(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or(ParseIdError::Character {
            found: pair[0],
            position: 2 * i,
        })?;
        let lo = hex_value(pair[1]).ok_or(ParseIdError::Character {
            found: pair[1],
            position: 2 * i + 1,
        })?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: char) -> Option<u8> {
    c.to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let id = ChunkId(bytes);
            prop_assert_eq!(id.to_string().parse::<ChunkId>(), Ok(id));
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<ChunkId>();
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert_eq!(
            "zz".repeat(32).parse::<ChunkId>(),
            Err(ParseIdError::Character {
                found: 'z',
                position: 0
            })
        );
        assert!(matches!(
            "ab".parse::<ChunkId>(),
            Err(ParseIdError::Length { got: 2, .. })
        ));
    }
}
