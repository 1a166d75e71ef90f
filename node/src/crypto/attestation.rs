//! Attestations: an OpenID Connect issuer's signed word (an ID token) that one of its subjects
//! holds a dfs user key, and how a volume's members check it.
//!
//! The binding is the token's nonce: [`nonce_for`] derives it from the user's public key and
//! a salt, so a token obtained for one key attests nothing for another. A volume that requires
//! an issuer records the issuer's keys in its log ([`IssuerKeys`], fetched by the admin), and
//! every member checks a join's attestation against those keys at the join op's time
//! ([`verify_attestation`]): offline, and with the same verdict on every member. The JWT
//! verification itself is the openidconnect crate's.

use openidconnect::{ClientId, IssuerUrl, Nonce};
use serde::{Deserialize, Serialize};

/// Domain of the nonce derivation.
const NONCE_DOMAIN: &str = "dfs 2026 oidc nonce binding a user key";

/// What a join carries to show its joiner's issuer vouches for it: the ID token of the
/// joiner's binding and the salt of its nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub id_token: String,
    pub salt: [u8; 16],
}

/// The largest ID token an attestation may carry.
pub const MAX_ID_TOKEN: usize = 16 << 10;
/// The largest key set a volume's issuer requirement may record.
pub const MAX_JWKS: usize = 64 << 10;

/// An issuer a volume requires its joiners to be vouched for by: its URL, the client id its
/// tokens are for, and its signing keys (a JWKS document) as the admin fetched them, so every
/// member checks an attestation the same way, offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerKeys {
    pub issuer: String,
    pub client_id: String,
    pub jwks: String,
}

/// Check that `attestation` shows `keys.issuer` vouching for the holder of `principal`'s key,
/// as of `at_ms` (the time of the op that carries it, so every member decides alike): the
/// token's signature under the recorded keys, its issuer, audience and validity at that time,
/// and its nonce bound to `principal`. The subject on success.
pub fn verify_attestation(
    attestation: &Attestation,
    principal: &[u8; 32],
    keys: &IssuerKeys,
    at_ms: u64,
) -> Result<String, String> {
    if attestation.id_token.len() > MAX_ID_TOKEN {
        return Err(format!("its ID token is over {MAX_ID_TOKEN} bytes"));
    }
    let jwks: openidconnect::core::CoreJsonWebKeySet =
        serde_json::from_str(&keys.jwks).map_err(|e| format!("the recorded key set: {e}"))?;
    let issuer = IssuerUrl::new(keys.issuer.clone()).map_err(|e| e.to_string())?;
    let at = chrono::DateTime::from_timestamp_millis(i64::try_from(at_ms).unwrap_or(i64::MAX))
        .ok_or("the op's time is out of range")?;
    let verifier = openidconnect::core::CoreIdTokenVerifier::new_public_client(
        ClientId::new(keys.client_id.clone()),
        issuer,
        jwks,
    )
    .set_time_fn(move || at);
    let token: openidconnect::core::CoreIdToken = attestation
        .id_token
        .parse()
        .map_err(|e| format!("its ID token does not parse: {e}"))?;
    let nonce = Nonce::new(nonce_for(principal, &attestation.salt));
    let claims = token
        .claims(&verifier, &nonce)
        .map_err(|e| error_chain(&e))?;
    Ok(claims.subject().as_str().to_string())
}

/// The nonce that binds an ID token to `user` (an Ed25519 public key): hex of blake3's key derivation over the key and
/// a per-login salt.
pub fn nonce_for(user: &[u8; 32], salt: &[u8; 16]) -> String {
    let mut input = Vec::with_capacity(48);
    input.extend_from_slice(user);
    input.extend_from_slice(salt);
    hex(&blake3::derive_key(NONCE_DOMAIN, &input))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An error and its sources, on one line (the openidconnect errors keep the cause in
/// `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_binds_the_key_and_the_salt() {
        let a = [1; 32];
        let b = [2; 32];
        let salt = [7; 16];
        assert_eq!(nonce_for(&a, &salt), nonce_for(&a, &salt));
        assert_ne!(nonce_for(&a, &salt), nonce_for(&b, &salt));
        assert_ne!(nonce_for(&a, &salt), nonce_for(&a, &[8; 16]));
        assert_eq!(nonce_for(&a, &salt).len(), 64);
    }
}
