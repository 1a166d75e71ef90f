//! Secrets sealed under a passphrase: argon2id (RFC 9106) stretches the passphrase and a
//! random salt into a 32-byte key, and XChaCha20-Poly1305 seals the secret under it with the
//! caller's associated data. Used for user keys (`crate::users`) and password-protected
//! share links (`dfs_fs::link`).
//!
//! The parameters travel with what they sealed, within bounds checked before any work, so a
//! sealed secret from elsewhere cannot make this process allocate or compute without limit.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// The cost of turning a passphrase into a key (argon2id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes (parallelism).
    pub lanes: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended option with one lane (the
    /// peer unseals on one thread). 124 ms on this project's 2-core test machine
    /// (`cargo bench -p dfs-benches --bench ops`).
    fn default() -> Self {
        Self {
            memory_kib: 64 << 10,
            passes: 3,
            lanes: 1,
        }
    }
}

/// Why a passphrase did not open (or could not seal) a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseError {
    #[error("unusable key-derivation parameters: {0}")]
    BadParams(String),
    /// The passphrase is wrong, or what was sealed (or its associated data) was changed: the
    /// tag cannot tell which.
    #[error("wrong passphrase")]
    Wrong,
    #[error("the passphrase is empty")]
    Empty,
}

impl KdfParams {
    /// The least memory accepted (8 MiB): below it a stolen secret falls to guessing too fast.
    pub const MIN_MEMORY_KIB: u32 = 8 << 10;
    /// The most memory accepted (2 GiB), so a secret from elsewhere cannot make the peer
    /// allocate without bound.
    pub const MAX_MEMORY_KIB: u32 = 2 << 20;
    /// The most passes accepted.
    pub const MAX_PASSES: u32 = 16;
    /// The most lanes accepted.
    pub const MAX_LANES: u32 = 8;

    /// Whether the parameters are within the bounds.
    pub fn check(&self) -> Result<(), PassphraseError> {
        let bad = |what: String| Err(PassphraseError::BadParams(what));
        if !(Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return bad(format!(
                "memory {} KiB is outside {}..={} KiB",
                self.memory_kib,
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB
            ));
        }
        if !(1..=Self::MAX_PASSES).contains(&self.passes) {
            return bad(format!(
                "{} passes is outside 1..={}",
                self.passes,
                Self::MAX_PASSES
            ));
        }
        if !(1..=Self::MAX_LANES).contains(&self.lanes) {
            return bad(format!(
                "{} lanes is outside 1..={}",
                self.lanes,
                Self::MAX_LANES
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; 16]) -> Result<Key, PassphraseError> {
        self.check()?;
        let params = argon2::Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|e| PassphraseError::BadParams(e.to_string()))?;
        let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        kdf.hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| PassphraseError::BadParams(e.to_string()))?;
        Ok(Key::from(out))
    }
}

/// Seal `secret` under `passphrase` with `salt` (random, one per sealing: the derived key
/// then encrypts exactly one message, so the `nonce` may be fixed) and `aad`: the secret's
/// ciphertext and 16-byte tag.
pub fn seal(
    passphrase: &[u8],
    kdf: &KdfParams,
    salt: &[u8; 16],
    nonce: &[u8; 24],
    aad: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, PassphraseError> {
    if passphrase.is_empty() {
        return Err(PassphraseError::Empty);
    }
    XChaCha20Poly1305::new(&kdf.derive(passphrase, salt)?)
        .encrypt(&XNonce::from(*nonce), Payload { msg: secret, aad })
        // Only messages beyond 256 GiB fail.
        .map_err(|_| PassphraseError::BadParams("secret too large".into()))
}

/// Open what [`seal`] made with the same parameters, salt, nonce and associated data.
pub fn open(
    passphrase: &[u8],
    kdf: &KdfParams,
    salt: &[u8; 16],
    nonce: &[u8; 24],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, PassphraseError> {
    XChaCha20Poly1305::new(&kdf.derive(passphrase, salt)?)
        .decrypt(&XNonce::from(*nonce), Payload { msg: sealed, aad })
        .map_err(|_| PassphraseError::Wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn a_secret_opens_with_its_passphrase_salt_and_aad_only() {
        let (salt, nonce) = ([1; 16], [2; 24]);
        let sealed = seal(b"pw", &FAST, &salt, &nonce, b"ctx", b"secret").unwrap();
        assert_eq!(sealed.len(), 6 + 16);
        assert_eq!(
            open(b"pw", &FAST, &salt, &nonce, b"ctx", &sealed).unwrap(),
            b"secret"
        );
        assert_eq!(
            open(b"pX", &FAST, &salt, &nonce, b"ctx", &sealed),
            Err(PassphraseError::Wrong)
        );
        assert_eq!(
            open(b"pw", &FAST, &[9; 16], &nonce, b"ctx", &sealed),
            Err(PassphraseError::Wrong)
        );
        assert_eq!(
            open(b"pw", &FAST, &salt, &nonce, b"other", &sealed),
            Err(PassphraseError::Wrong)
        );
        let slower = KdfParams { passes: 2, ..FAST };
        assert_eq!(
            open(b"pw", &slower, &salt, &nonce, b"ctx", &sealed),
            Err(PassphraseError::Wrong)
        );
        assert_eq!(
            seal(b"", &FAST, &salt, &nonce, b"", b"x"),
            Err(PassphraseError::Empty)
        );
    }

    #[test]
    fn parameters_outside_the_bounds_are_refused_before_any_work() {
        for kdf in [
            KdfParams {
                memory_kib: 1024,
                ..FAST
            },
            KdfParams {
                memory_kib: u32::MAX,
                ..FAST
            },
            KdfParams { passes: 0, ..FAST },
            KdfParams {
                passes: 1000,
                ..FAST
            },
            KdfParams { lanes: 0, ..FAST },
            KdfParams { lanes: 64, ..FAST },
        ] {
            assert!(
                matches!(kdf.check(), Err(PassphraseError::BadParams(_))),
                "{kdf:?}"
            );
            assert!(matches!(
                open(b"pw", &kdf, &[0; 16], &[0; 24], b"", &[0; 32]),
                Err(PassphraseError::BadParams(_))
            ));
        }
        FAST.check().unwrap();
        KdfParams::default().check().unwrap();
    }
}
