//! XChaCha20-Poly1305 of whole chunks, with Poly1305 on IFMA where the CPU has it.
//!
//! The construction is the one the chacha20poly1305 crate implements (RFC 8439's AEAD under
//! an HChaCha20 subkey, draft-irtf-cfrg-xchacha), composed here from the chacha20 crate's
//! XChaCha20 keystream and [`super::poly1305`]: block 0 of the keystream gives the one-time
//! Poly1305 key, blocks 1 and on encrypt, and the tag covers the ciphertext zero-padded to a
//! whole block, then its length (no associated data). The bytes are the crate's, which the
//! tests check; on CPUs without IFMA the crate itself runs.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::XChaCha20;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use subtle::ConstantTimeEq;

use super::poly1305::{ifma_available, Poly1305};
use super::{DecryptError, TAG_LEN};

/// Encrypt `buf` in place under `key` and `nonce`; returns the tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) -> [u8; TAG_LEN] {
    if !ifma_available() {
        return XChaCha20Poly1305::new(&Key::from(*key))
            .encrypt_inout_detached(&XNonce::from(*nonce), &[], buf.into())
            // Only fails beyond 256 GiB; chunks are at most 4 MiB.
            .unwrap_or_else(|_| unreachable!("chunk larger than the AEAD limit"))
            .into();
    }
    let (mut cipher, mut mac) = start(key, nonce);
    cipher.apply_keystream(buf);
    mac.update_padded(buf);
    mac.update_padded(&lengths(buf.len()));
    mac.finalize()
}

/// Check `tag` over `buf` and only then decrypt `buf` in place.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), DecryptError> {
    if !ifma_available() {
        return XChaCha20Poly1305::new(&Key::from(*key))
            .decrypt_inout_detached(&XNonce::from(*nonce), &[], buf.into(), &Tag::from(*tag))
            .map_err(|_| DecryptError);
    }
    let (mut cipher, mut mac) = start(key, nonce);
    mac.update_padded(buf);
    mac.update_padded(&lengths(buf.len()));
    if !bool::from(mac.finalize().ct_eq(tag)) {
        return Err(DecryptError);
    }
    cipher.apply_keystream(buf);
    Ok(())
}

/// The keystream positioned at block 1, and the MAC keyed with block 0's first half.
fn start(key: &[u8; 32], nonce: &[u8; 24]) -> (XChaCha20, Poly1305) {
    let mut cipher = XChaCha20::new(key.into(), nonce.into());
    let mut block0 = [0u8; 64];
    cipher.apply_keystream(&mut block0);
    let mut mac_key = [0u8; 32];
    mac_key.copy_from_slice(&block0[..32]);
    (cipher, Poly1305::new(&mac_key))
}

/// The last MAC block: the associated data's length (none) and the ciphertext's, little-endian.
fn lengths(len: usize) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[8..].copy_from_slice(&(len as u64).to_le_bytes());
    block
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn crate_seal(key: &[u8; 32], nonce: &[u8; 24], plain: &[u8]) -> (Vec<u8>, [u8; 16]) {
        let mut buf = plain.to_vec();
        let tag = XChaCha20Poly1305::new(&Key::from(*key))
            .encrypt_inout_detached(&XNonce::from(*nonce), &[], buf.as_mut_slice().into())
            .unwrap();
        (buf, tag.into())
    }

    /// Sealed here, the bytes and tag are the crate's; opened here, the crate's come back;
    /// any flipped bit in the ciphertext or the tag is refused and leaves the buffer as it was.
    fn check(key: [u8; 32], nonce: [u8; 24], plain: &[u8], flip: usize) {
        let (expected, expected_tag) = crate_seal(&key, &nonce, plain);
        let mut buf = plain.to_vec();
        let tag = seal(&key, &nonce, &mut buf);
        assert!(buf == expected, "ciphertext differs at len {}", plain.len());
        assert_eq!(tag, expected_tag, "tag differs at len {}", plain.len());
        let mut opened = expected.clone();
        open(&key, &nonce, &mut opened, &tag).unwrap();
        assert!(opened == plain);
        let bit = flip % ((plain.len() + TAG_LEN) * 8);
        let (mut tampered, mut bad_tag) = (expected.clone(), tag);
        if bit / 8 < plain.len() {
            tampered[bit / 8] ^= 1 << (bit % 8);
        } else {
            bad_tag[bit / 8 - plain.len()] ^= 1 << (bit % 8);
        }
        let before = tampered.clone();
        assert_eq!(
            open(&key, &nonce, &mut tampered, &bad_tag),
            Err(DecryptError)
        );
        assert!(tampered == before, "a refused chunk was decrypted anyway");
    }

    #[test]
    fn chunk_sized_buffers_match_the_crate() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let nonce: [u8; 24] = std::array::from_fn(|i| (i * 13 + 5) as u8);
        for len in [(4 << 20) - 1, 4 << 20, (1 << 20) + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            check(key, nonce, &plain, len * 5 + 3);
        }
    }

    proptest! {
        #[test]
        fn any_message_matches_the_crate(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            plain in proptest::collection::vec(any::<u8>(), 0..4000),
            flip in any::<usize>(),
        ) {
            check(key, nonce, &plain, flip);
        }
    }
}
