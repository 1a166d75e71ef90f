//! Convergent chunk encryption with XChaCha20-Poly1305 ([`aead`], with Poly1305 on IFMA where
//! the CPU has it: [`poly1305`]; [`backend`] says which code runs, and [`use_crate_only`],
//! which `[storage] own_poly1305 = false` calls, keeps to the chacha20poly1305 crate).
//!
//! A chunk's key is a keyed blake3 of its plaintext under the volume secret, so equal content in
//! one volume encrypts to equal ciphertext (and dedups), while nothing can be learned across
//! volumes. The nonce is derived from the key: each key encrypts exactly one plaintext, so a
//! deterministic nonce never repeats with different content.

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

mod aead;
pub(crate) mod attestation;
pub(crate) mod epoch;
pub(crate) mod passphrase;
mod poly1305;

#[cfg(test)]
pub(crate) use aead::Backend;
pub use aead::{backend, use_crate_only};

/// Bytes the AEAD adds to each chunk.
pub const TAG_LEN: usize = 16;

/// The secret of a volume: 32 random bytes kept in the data directory, used through two
/// subkeys, one per [`KeyScope`].
#[derive(Clone)]
pub struct VolumeSecret {
    shareable: [u8; 32],
    private: [u8; 32],
}

/// Who may come to know the keys of the chunks a writer seals. The two scopes derive keys
/// under different subkeys, so equal content sealed in each is two chunks with two keys: a key
/// that has left this peer (in a link, or a shared volume's records) never opens a private
/// chunk, and a reader may trust the AEAD tag of a private chunk (no one else can make one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Keys that may leave this peer: `dfs put` (they travel in the link) and shared volumes
    /// (their members read them).
    Shareable,
    /// Keys that never leave this peer: the chunks of its own volume.
    Private,
}

/// The key of one chunk. Whoever holds it can read the chunk; it travels inside share links and
/// inside the (encrypted) tree nodes that reference the chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkKey(pub [u8; 32]);

/// The ciphertext did not authenticate under the key: wrong key, or tampered data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: wrong key or tampered data")]
pub struct DecryptError;

impl VolumeSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // Chunk keys come from subkeys, so the stored secret is never used directly as a key.
        Self {
            shareable: blake3::derive_key("dfs 2026 chunk key derivation v1", &bytes),
            private: blake3::derive_key("dfs 2026 private chunk key derivation v1", &bytes),
        }
    }

    pub fn generate() -> [u8; 32] {
        rand::random()
    }

    /// The convergent key of a chunk with this plaintext, whose key may be given out.
    pub fn chunk_key(&self, plaintext: &[u8]) -> ChunkKey {
        self.chunk_key_in(KeyScope::Shareable, plaintext)
    }

    /// The convergent key of a chunk with this plaintext in `scope`.
    pub fn chunk_key_in(&self, scope: KeyScope, plaintext: &[u8]) -> ChunkKey {
        let subkey = match scope {
            KeyScope::Shareable => &self.shareable,
            KeyScope::Private => &self.private,
        };
        ChunkKey(*blake3::keyed_hash(subkey, plaintext).as_bytes())
    }
}

impl fmt::Debug for VolumeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VolumeSecret(..)")
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

impl ChunkKey {
    fn nonce(&self) -> [u8; 24] {
        let derived = blake3::derive_key("dfs 2026 chunk nonce v1", &self.0);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&derived[..24]);
        nonce
    }

    /// Encrypt `plaintext` in place and append the tag.
    pub fn encrypt(&self, mut plaintext: Vec<u8>) -> Vec<u8> {
        plaintext.reserve_exact(TAG_LEN);
        let tag = aead::seal(&self.0, &self.nonce(), &[], &mut plaintext);
        plaintext.extend_from_slice(&tag);
        plaintext
    }

    /// Check the tag and decrypt in place.
    pub fn decrypt(&self, mut ciphertext: Vec<u8>) -> Result<Vec<u8>, DecryptError> {
        let body_len = ciphertext.len().checked_sub(TAG_LEN).ok_or(DecryptError)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&ciphertext[body_len..]);
        ciphertext.truncate(body_len);
        aead::open(&self.0, &self.nonce(), &[], &mut ciphertext, &tag)?;
        Ok(ciphertext)
    }

    pub fn to_hex(&self) -> String {
        dfs_placement::ids::to_hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, dfs_placement::ParseIdError> {
        dfs_placement::ids::parse_hex32(s).map(ChunkKey)
    }
}

/// `bytes` random bytes from the operating system's generator, as lowercase hex (tokens).
pub fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    dfs_placement::ids::to_hex(&raw)
}

/// The key that seals the fs payloads of one volume's ops: derived from the volume's secret,
/// so members read them and a peer that only relays or stores them does not.
#[derive(Clone)]
pub struct OpKey([u8; 32]);

impl fmt::Debug for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpKey(..)")
    }
}

/// Random nonce bytes in front of each sealed payload.
const OP_NONCE_LEN: usize = 24;

impl OpKey {
    pub fn of_volume(secret: &[u8; 32]) -> Self {
        OpKey(blake3::derive_key("dfs 2026 op payload key v1", secret))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }

    /// Encrypt `plaintext` under a random nonce bound to `volume`: nonce, ciphertext, tag.
    pub fn seal(&self, volume: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; OP_NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let mut out = Vec::with_capacity(OP_NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher()
            .encrypt_inout_detached(&nonce, volume, out[OP_NONCE_LEN..].as_mut().into())
            // Only fails for messages beyond 256 GiB; op payloads are at most 64 KiB.
            .unwrap_or_else(|_| unreachable!("op payload larger than the AEAD limit"));
        out.extend_from_slice(&tag);
        out
    }

    /// Check and decrypt a payload sealed by [`OpKey::seal`] for `volume`.
    pub fn open(&self, volume: &[u8; 16], sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < OP_NONCE_LEN + TAG_LEN {
            return Err(DecryptError);
        }
        let (nonce, rest) = sealed.split_at(OP_NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| DecryptError)?;
        let tag = Tag::try_from(tag).map_err(|_| DecryptError)?;
        let mut plain = body.to_vec();
        self.cipher()
            .decrypt_inout_detached(&nonce, volume, plain.as_mut_slice().into(), &tag)
            .map_err(|_| DecryptError)?;
        Ok(plain)
    }
}

/// What the tests of this module share: hex, the CPU's features, the process-wide switch.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Mutex, MutexGuard};

    pub(crate) use super::aead::tests::current_backend_matches_the_vectors;

    /// Bytes from hex, whitespace ignored.
    pub fn unhex(s: &str) -> Vec<u8> {
        let digits: String = s.split_whitespace().collect();
        hex::decode(digits).unwrap()
    }

    /// Whether this CPU has what the IFMA loop needs (AVX-512F and IFMA: every instruction
    /// there is 512 bits wide, none needs VL), asked here rather than of
    /// [`super::poly1305::ifma_available`], which is under test.
    pub fn cpu_has_ifma() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512ifma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    static SWITCH: Mutex<()> = Mutex::new(());

    /// The process-wide `own_poly1305` switch, held by a test that turns it off (and turned
    /// back on when the guard goes) or that needs it on meanwhile. Tests run on parallel
    /// threads; the others do not care, since both backends give the same bytes.
    pub fn backend_switch() -> SwitchGuard {
        SwitchGuard {
            _held: SWITCH
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    pub struct SwitchGuard {
        _held: MutexGuard<'static, ()>,
    }

    impl Drop for SwitchGuard {
        fn drop(&mut self) {
            super::aead::own_poly1305_again();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn op_payloads_open_only_with_the_volume_key_and_id() {
        let key = OpKey::of_volume(&[1; 32]);
        let (v, w) = ([5; 16], [6; 16]);
        let sealed = key.seal(&v, b"create notes.txt");
        assert_eq!(key.open(&v, &sealed).unwrap(), b"create notes.txt");
        // Fresh nonces: the same op sealed twice differs.
        assert_ne!(key.seal(&v, b"create notes.txt"), sealed);
        assert!(key.open(&w, &sealed).is_err());
        assert!(OpKey::of_volume(&[2; 32]).open(&v, &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(key.open(&v, &flipped).is_err());
        for cut in [0, 10, 39] {
            assert!(key.open(&v, &sealed[..cut]).is_err());
        }
    }

    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_and_tamper_detection(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            flip in any::<usize>(),
        ) {
            let secret = VolumeSecret::from_bytes([7; 32]);
            let key = secret.chunk_key(&data);
            let ct = key.encrypt(data.clone());
            prop_assert_eq!(ct.len(), data.len() + TAG_LEN);
            prop_assert_eq!(key.decrypt(ct.clone()), Ok(data.clone()));
            let mut bad = ct.clone();
            let i = flip % bad.len();
            bad[i] ^= 1;
            prop_assert_eq!(key.decrypt(bad), Err(DecryptError));
            let other = ChunkKey([1; 32]);
            prop_assert_eq!(other.decrypt(ct), Err(DecryptError));
        }
    }

    #[test]
    fn convergent_within_a_volume_only() {
        let a = VolumeSecret::from_bytes([1; 32]);
        let b = VolumeSecret::from_bytes([2; 32]);
        let data = b"same content".to_vec();
        let ka = a.chunk_key(&data);
        assert_eq!(
            ka.encrypt(data.clone()),
            a.chunk_key(&data).encrypt(data.clone())
        );
        assert_ne!(
            ka.encrypt(data.clone()),
            b.chunk_key(&data).encrypt(data.clone())
        );
        assert_eq!(ChunkKey::decrypt(&ka, vec![1, 2, 3]), Err(DecryptError));
    }

    #[test]
    fn a_private_key_is_never_the_shareable_key_of_the_same_content() {
        let secret = VolumeSecret::from_bytes([1; 32]);
        let data = b"same content".to_vec();
        let private = secret.chunk_key_in(KeyScope::Private, &data);
        let shareable = secret.chunk_key(&data);
        assert_ne!(private, shareable);
        assert_eq!(private, secret.chunk_key_in(KeyScope::Private, &data));
        // What a link gives out does not open the private chunk.
        let sealed = private.encrypt(data.clone());
        assert_eq!(shareable.decrypt(sealed.clone()), Err(DecryptError));
        assert_eq!(private.decrypt(sealed), Ok(data));
    }
}
