//! Sealing a secret to the holder of an Ed25519 key: how a volume's new key epoch reaches its
//! remaining members ([`crate::oplog::control::NewEpoch`]).
//!
//! Members and devices are known by their Ed25519 signing keys only. The secret goes into a
//! libsodium sealed box (`crypto_box`: an ephemeral X25519 key, XSalsa20-Poly1305) to the X25519
//! form of the recipient's key, which `ed25519-dalek` computes (the birational map of the public
//! point, and the clamped scalar of the secret seed: libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` and `..._sk_to_curve25519`). Nothing is hand-made here
//! but the glue; one key signing and receiving is the standard reuse of Ed25519 keys for
//! encryption that libsodium supports.

/// Why a sealed secret could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("{0} is not an Ed25519 public key")]
    BadRecipient(String),
    #[error("the sealed secret does not open with this key (not sealed to it, or damaged)")]
    Open,
    #[error("a sealed secret of {0} bytes, not 32")]
    Length(usize),
}

/// Seal `secret` to the holder of the Ed25519 public key `recipient`.
pub fn seal_to(recipient: &[u8; 32], secret: &[u8; 32]) -> Result<Vec<u8>, SealError> {
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(recipient)
        .map_err(|_| SealError::BadRecipient(dfs_placement::ids::to_hex(recipient)))?;
    let public = crypto_box::PublicKey::from_bytes(verifying.to_montgomery().to_bytes());
    public
        .seal(&mut crypto_box::aead::OsRng, secret)
        // Sealing fails only for messages beyond the cipher's limit; this is 32 bytes.
        .map_err(|_| SealError::Open)
}

/// Open a secret sealed by [`seal_to`] with the Ed25519 secret seed of its recipient.
pub fn open_with(seed: &[u8; 32], sealed: &[u8]) -> Result<[u8; 32], SealError> {
    let signing = ed25519_dalek::SigningKey::from_bytes(seed);
    let secret = crypto_box::SecretKey::from_bytes(signing.to_scalar_bytes());
    let plain = secret.unseal(sealed).map_err(|_| SealError::Open)?;
    plain
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Length(plain.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let key = libp2p::identity::ed25519::Keypair::generate();
        let mut seed = [0; 32];
        seed.copy_from_slice(key.secret().as_ref());
        (seed, key.public().to_bytes())
    }

    #[test]
    fn a_sealed_secret_opens_with_its_recipients_key_only() {
        let (alice_seed, alice) = keypair();
        let (bob_seed, _) = keypair();
        let secret = [7; 32];
        let sealed = seal_to(&alice, &secret).unwrap();
        assert_eq!(open_with(&alice_seed, &sealed), Ok(secret));
        assert_eq!(open_with(&bob_seed, &sealed), Err(SealError::Open));
        // Each sealing is fresh (an ephemeral key), so two look unrelated.
        assert_ne!(seal_to(&alice, &secret).unwrap(), sealed);
        let mut damaged = sealed.clone();
        damaged[40] ^= 1;
        assert_eq!(open_with(&alice_seed, &damaged), Err(SealError::Open));
        assert_eq!(open_with(&alice_seed, &sealed[..20]), Err(SealError::Open));
    }

    #[test]
    fn a_key_that_is_no_point_is_refused() {
        // Not a point on the curve: y = 2 has no x.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert!(matches!(
            seal_to(&bad, &[1; 32]),
            Err(SealError::BadRecipient(_))
        ));
    }
}
