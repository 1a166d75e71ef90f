//! OIDC login: an OpenID Connect issuer vouches for a user, and the running peer logs that
//! user in without a passphrase.
//!
//! The flow is the authorization code grant with PKCE (RFC 7636) on a loopback redirect
//! (RFC 8252), driven by the peer: [`PendingLogins::start`] discovers the issuer, picks the user
//! key the login is for and returns the URL the person opens; the CLI listens on the loopback
//! redirect and hands the code back to [`PendingLogins::finish`], which exchanges it (with the
//! PKCE verifier only the peer holds) and verifies the ID token: its signature against the
//! issuer's published keys, its issuer, audience, expiry, and its nonce. The nonce is derived from
//! the user's public key and a salt ([`nonce_for`]), so the token is bound to that key: it says
//! "the issuer's subject S asked to be the holder of key K", and cannot be replayed for another
//! key. The token is kept as the user's [`OidcBinding`] (the attestation).
//!
//! A user made by an OIDC login has no passphrase: its key is sealed under a random device
//! secret in the data directory (`users/device.secret`, owner-only), so at rest it is exactly
//! as protected as the peer's own key; what unlocks it is the issuer's say-so, each login.
//!
//! Every request to the issuer goes through a ureq agent that follows no redirect (what the
//! openidconnect crate asks, against SSRF), gives up after 10 s and reads at most 1 MiB.
//! The protocol itself (discovery, PKCE, token verification) is the openidconnect crate's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::identity::ed25519;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::attestation::{error_chain, hex, MAX_JWKS};
pub use crate::crypto::attestation::{nonce_for, Attestation, IssuerKeys};
use crate::oplog::AuthorId;
use crate::users::{check_name, KdfParams, SealedUser, UserError, UserKey, UserStore};

/// Logins started and not finished that a peer keeps at once.
pub const MAX_PENDING: usize = 16;
/// How long a started login waits for its code.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The largest answer read from an issuer.
const MAX_RESPONSE: u64 = 1 << 20;
/// The longest any one request to an issuer may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Domain of the nonce derivation.
/// Extension of binding files under `DATA/users/`.
const BINDING_EXTENSION: &str = "oidc";
/// The device secret's file under `DATA/users/`.
const DEVICE_SECRET: &str = "device.secret";
/// The device secret is 256 random bits, so its seal needs no slow hashing: argon2id's
/// smallest memory and one pass.
const DEVICE_KDF: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    passes: 1,
    lanes: 1,
};

/// Why an OIDC login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    #[error("bad issuer URL {0:?}: {1}")]
    BadIssuer(String, String),
    #[error("bad redirect URL {0:?}: it must be http://127.0.0.1:PORT/... (a loopback redirect)")]
    BadRedirect(String),
    #[error("cannot discover the OpenID Connect issuer {issuer}: {detail}")]
    Discovery { issuer: String, detail: String },
    #[error("the issuer did not take the authorization code: {0}")]
    Exchange(String),
    #[error("the issuer answered without an ID token")]
    NoIdToken,
    #[error("the issuer's ID token was refused: {0}")]
    Token(String),
    #[error("no login is waiting under that state (logins expire after {} minutes and are used once)", PENDING_TTL.as_secs() / 60)]
    UnknownState,
    #[error("{MAX_PENDING} logins are in progress already: finish or wait for one")]
    Busy,
    #[error("{0}")]
    Binding(String),
    #[error(transparent)]
    User(#[from] UserError),
}

/// An issuer's word that one of its subjects holds a user key: the verified ID token, whose
/// nonce is [`nonce_for`] that key and `salt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcBinding {
    pub issuer: String,
    pub subject: String,
    pub client_id: String,
    /// Hex of the 16-byte salt of the nonce.
    pub salt: String,
    /// The ID token as the issuer signed it (a JWT).
    pub id_token: String,
    /// When the token was verified, ms since the Unix epoch.
    pub verified_ms: u64,
}

impl OidcBinding {
    /// The attestation this binding gives a join.
    pub fn attestation(&self) -> Option<Attestation> {
        let mut salt = [0u8; 16];
        if self.salt.len() != 32 {
            return None;
        }
        for (i, byte) in salt.iter_mut().enumerate() {
            *byte = u8::from_str_radix(self.salt.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Attestation {
            id_token: self.id_token.clone(),
            salt,
        })
    }
}

/// Fetch `issuer`'s keys (discovery, then its JWKS) for a volume's requirement. Blocking.
pub fn fetch_issuer_keys(issuer: &str, client_id: &str) -> Result<IssuerKeys, OidcError> {
    let issuer_url = IssuerUrl::new(issuer.to_string())
        .map_err(|e| OidcError::BadIssuer(issuer.to_string(), e.to_string()))?;
    let metadata = CoreProviderMetadata::discover(&issuer_url, &Http::new()).map_err(|e| {
        OidcError::Discovery {
            issuer: issuer.to_string(),
            detail: error_chain(&e),
        }
    })?;
    let jwks = serde_json::to_string(metadata.jwks()).map_err(|e| OidcError::Discovery {
        issuer: issuer.to_string(),
        detail: format!("its key set: {e}"),
    })?;
    if jwks.len() > MAX_JWKS {
        return Err(OidcError::Discovery {
            issuer: issuer.to_string(),
            detail: format!("its key set is over {MAX_JWKS} bytes"),
        });
    }
    Ok(IssuerKeys {
        issuer: issuer.to_string(),
        client_id: client_id.to_string(),
        jwks,
    })
}

/// The user a login is for.
enum LoginFor {
    /// A user of this data directory already bound to the issuer.
    Existing(String),
    /// A new user, made when the issuer vouches: the name asked for (or, without one, the
    /// subject's preferred user name).
    New {
        keypair: Box<ed25519::Keypair>,
        name: Option<String>,
    },
}

/// A login waiting for its authorization code.
struct Pending {
    client: Client,
    issuer: String,
    client_id: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    salt: [u8; 16],
    user: LoginFor,
    started: Instant,
}

/// The client type discovery gives: endpoints set, user-info endpoint maybe.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// What [`PendingLogins::start`] gives the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The URL to open in a browser.
    pub authorize_url: String,
    /// The state the issuer sends back with the code.
    pub state: String,
}

/// A finished login: the unsealed key and the issuer's binding.
pub struct Finished {
    pub key: UserKey,
    pub binding: OidcBinding,
    /// Whether the user was made by this login.
    pub created: bool,
}

/// The logins a peer has started, by state; bounded and expiring.
#[derive(Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for PendingLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.by_state.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("PendingLogins")
            .field("pending", &n)
            .finish()
    }
}

impl PendingLogins {
    /// Start a login at `issuer` as `client_id`, redirecting to `redirect` (a loopback URL
    /// the CLI listens on), for user `user` of `data` (or, without one: the one user bound to
    /// this issuer, else a new user). Blocking: it fetches the issuer's discovery document.
    pub fn start(
        &self,
        data: &Path,
        issuer: &str,
        client_id: &str,
        redirect: &str,
        user: Option<&str>,
    ) -> Result<Started, OidcError> {
        let issuer_url = IssuerUrl::new(issuer.to_string())
            .map_err(|e| OidcError::BadIssuer(issuer.to_string(), e.to_string()))?;
        let redirect_url = loopback_redirect(redirect)?;
        let login_for = pick_user(data, issuer, user)?;
        let user_id = match &login_for {
            LoginFor::Existing(name) => UserStore::new(data).load(name)?.id(),
            LoginFor::New { keypair, .. } => AuthorId(keypair.public().to_bytes()),
        };
        // Make room before asking the issuer anything.
        self.reserve()?;
        let http = Http::new();
        let metadata = CoreProviderMetadata::discover(&issuer_url, &http).map_err(|e| {
            OidcError::Discovery {
                issuer: issuer.to_string(),
                detail: error_chain(&e),
            }
        })?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client_id.to_string()),
            None,
        )
        .set_redirect_uri(redirect_url);
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let nonce = Nonce::new(nonce_for(&user_id.0, &salt));
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce_for_url = nonce.clone();
        let (url, state, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                move || nonce_for_url,
            )
            .add_scope(Scope::new("profile".to_string()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            client,
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            verifier,
            nonce,
            salt,
            user: login_for,
            started: Instant::now(),
        };
        let mut map = self.lock();
        if map.len() >= MAX_PENDING {
            return Err(OidcError::Busy);
        }
        map.insert(state.secret().clone(), pending);
        Ok(Started {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
        })
    }

    /// Finish the login started under `state` with the issuer's `code`: exchange it, verify
    /// the ID token, and unseal (or make) the user. Blocking. A state is used once, whatever
    /// the outcome.
    pub fn finish(&self, data: &Path, state: &str, code: &str) -> Result<Finished, OidcError> {
        let pending = self.lock().remove(state).ok_or(OidcError::UnknownState)?;
        if pending.started.elapsed() > PENDING_TTL {
            return Err(OidcError::UnknownState);
        }
        let http = Http::new();
        let response = pending
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request(&http)
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let verifier = pending.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &pending.nonce)
            .map_err(|e| OidcError::Token(error_chain(&e)))?;
        let subject = claims.subject().as_str().to_string();
        let preferred = claims
            .preferred_username()
            .map(|name| name.as_str().to_string());
        let binding = OidcBinding {
            issuer: pending.issuer.clone(),
            subject: subject.clone(),
            client_id: pending.client_id.clone(),
            salt: hex(&pending.salt),
            id_token: id_token.to_string(),
            verified_ms: now_ms(),
        };
        let bindings = Bindings::new(data);
        let store = UserStore::new(data);
        let secret = device_secret(data)?;
        match pending.user {
            LoginFor::Existing(name) => {
                let old = bindings.load(&name)?.ok_or_else(|| {
                    OidcError::Binding(format!("user {name:?} is not bound to an issuer"))
                })?;
                if old.issuer != binding.issuer || old.subject != subject {
                    return Err(OidcError::Binding(format!(
                        "user {name:?} is bound to subject {:?} of {}, but the issuer logged in subject {subject:?}",
                        old.subject, old.issuer
                    )));
                }
                let key = store.load(&name)?.open(&secret)?;
                bindings.save(&name, &binding)?;
                Ok(Finished {
                    key,
                    binding,
                    created: false,
                })
            }
            LoginFor::New { keypair, name } => {
                if let Some((other, _)) = bindings
                    .all()?
                    .into_iter()
                    .find(|(_, b)| b.issuer == binding.issuer && b.subject == subject)
                {
                    return Err(OidcError::Binding(format!(
                        "subject {subject:?} of {} is user {other:?} here already: log in as it (`dfs login --oidc ISSUER {other}`)",
                        binding.issuer
                    )));
                }
                let name = match name {
                    Some(name) => name,
                    None => name_from(preferred.as_deref(), &subject),
                };
                let sealed = SealedUser::seal(&name, &keypair, &secret, DEVICE_KDF)?;
                store.save(&sealed, false)?;
                bindings.save(&name, &binding)?;
                let key = sealed.open(&secret)?;
                Ok(Finished {
                    key,
                    binding,
                    created: true,
                })
            }
        }
    }

    /// Drop expired logins and make sure one more fits.
    fn reserve(&self) -> Result<(), OidcError> {
        let mut map = self.lock();
        map.retain(|_, p| p.started.elapsed() <= PENDING_TTL);
        if map.len() >= MAX_PENDING {
            return Err(OidcError::Busy);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.by_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which user a login at `issuer` is for: the one named (bound to this issuer, or new), else
/// the only user bound to it, else a new one.
fn pick_user(data: &Path, issuer: &str, user: Option<&str>) -> Result<LoginFor, OidcError> {
    let bindings = Bindings::new(data);
    let store = UserStore::new(data);
    match user {
        Some(name) => {
            check_name(name)?;
            match store.load(name) {
                Ok(_) => match bindings.load(name)? {
                    Some(b) if b.issuer == issuer => Ok(LoginFor::Existing(name.to_string())),
                    Some(b) => Err(OidcError::Binding(format!(
                        "user {name:?} logs in with --oidc {}, not {issuer}",
                        b.issuer
                    ))),
                    None => Err(OidcError::Binding(format!(
                        "user {name:?} logs in with its passphrase (`dfs login {name}`)"
                    ))),
                },
                Err(UserError::Unknown(_)) => Ok(LoginFor::New {
                    keypair: Box::new(ed25519::Keypair::generate()),
                    name: Some(name.to_string()),
                }),
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let bound: Vec<String> = bindings
                .all()?
                .into_iter()
                .filter(|(_, b)| b.issuer == issuer)
                .map(|(name, _)| name)
                .collect();
            match bound.as_slice() {
                [] => Ok(LoginFor::New {
                    keypair: Box::new(ed25519::Keypair::generate()),
                    name: None,
                }),
                [one] => Ok(LoginFor::Existing(one.clone())),
                several => Err(OidcError::Binding(format!(
                    "users {} are bound to {issuer}: name one",
                    several.join(", ")
                ))),
            }
        }
    }
}

/// A user name for a new subject: its preferred user name if that is a valid name, else
/// `oidc-` and the start of the subject's hash.
fn name_from(preferred: Option<&str>, subject: &str) -> String {
    if let Some(name) = preferred.filter(|n| check_name(n).is_ok()) {
        return name.to_string();
    }
    format!(
        "oidc-{}",
        &hex(blake3::hash(subject.as_bytes()).as_bytes())[..12]
    )
}

/// The redirect must come back to this machine: http on a loopback address.
fn loopback_redirect(redirect: &str) -> Result<RedirectUrl, OidcError> {
    let bad = || OidcError::BadRedirect(redirect.to_string());
    let url = RedirectUrl::new(redirect.to_string()).map_err(|_| bad())?;
    let parsed = url.url();
    let loopback = parsed.scheme() == "http"
        && matches!(
            parsed.host(),
            Some(openidconnect::url::Host::Ipv4(ip)) if ip.is_loopback()
        )
        || matches!(parsed.host(), Some(openidconnect::url::Host::Ipv6(ip)) if ip.is_loopback());
    if !loopback {
        return Err(bad());
    }
    Ok(url)
}

/// The data directory's device secret, made on first use (owner-only).
fn device_secret(data: &Path) -> Result<Vec<u8>, OidcError> {
    let dir = data.join("users");
    let path = dir.join(DEVICE_SECRET);
    let io = |path: &Path, source| UserError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => return Ok(bytes),
        Ok(_) => {
            return Err(UserError::Malformed(format!(
                "{}: a device secret is 32 bytes",
                path.display()
            ))
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path, e).into()),
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    crate::repo::write_private_file(&path, &secret).map_err(|e| io(&path, e))?;
    Ok(secret.to_vec())
}

/// The OIDC bindings of a data directory's users (`users/NAME.oidc`, JSON).
pub struct Bindings {
    dir: PathBuf,
}

impl Bindings {
    pub fn new(data: &Path) -> Self {
        Self {
            dir: data.join("users"),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf, UserError> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.{BINDING_EXTENSION}")))
    }

    /// User `name`'s binding, if it has one.
    pub fn load(&self, name: &str) -> Result<Option<OidcBinding>, UserError> {
        let path = self.path(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(UserError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| UserError::Malformed(format!("{}: {e}", path.display())))
    }

    fn save(&self, name: &str, binding: &OidcBinding) -> Result<(), UserError> {
        let path = self.path(name)?;
        let io = |source| UserError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(binding)
            .map_err(|e| UserError::Malformed(format!("binding of {name}: {e}")))?;
        crate::repo::write_private_file(&path, &json).map_err(io)
    }

    /// Every binding, by user name; unreadable files are skipped with a warning.
    pub fn all(&self) -> Result<Vec<(String, OidcBinding)>, UserError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(UserError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(BINDING_EXTENSION) {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            match self.load(name) {
                Ok(Some(binding)) => out.push((name.to_string(), binding)),
                Ok(None) => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping a binding"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The HTTP client the openidconnect crate calls the issuer with: no redirects, a deadline
/// and a cap on what is read.
struct Http(ureq::Agent);

/// Why a request to the issuer failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl Http {
    fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build();
        Self(config.into())
    }
}

impl openidconnect::SyncHttpClient for Http {
    type Error = HttpError;

    fn call(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let uri = request.uri().to_string();
        let response = self
            .0
            .run(request)
            .map_err(|e| HttpError(format!("{uri}: {e}")))?;
        let (parts, mut body) = response.into_parts();
        let bytes = body
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| HttpError(format!("{uri}: {e}")))?;
        Ok(openidconnect::http::Response::from_parts(parts, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects_are_taken() {
        assert!(loopback_redirect("http://127.0.0.1:4242/callback").is_ok());
        assert!(loopback_redirect("http://[::1]:4242/callback").is_ok());
        for bad in [
            "https://example.com/callback",
            "http://10.0.0.1:80/callback",
            "http://localhost.example:80/",
            "not a url",
        ] {
            assert!(loopback_redirect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_users_are_named_from_the_preferred_name_when_it_is_a_valid_name() {
        assert_eq!(name_from(Some("alice"), "s1"), "alice");
        let odd = name_from(Some("al ice/.."), "s1");
        assert!(
            odd.starts_with("oidc-") && check_name(&odd).is_ok(),
            "{odd}"
        );
        assert_eq!(name_from(None, "s1"), odd);
    }

    #[test]
    fn a_login_picks_the_one_user_bound_to_the_issuer_or_a_new_one() {
        let dir = std::env::temp_dir().join(format!("dfs-oidc-pick-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            pick_user(&dir, "http://127.0.0.1:1", None),
            Ok(LoginFor::New { name: None, .. })
        ));
        let binding = |issuer: &str| OidcBinding {
            issuer: issuer.into(),
            subject: "s".into(),
            client_id: "dfs".into(),
            salt: String::new(),
            id_token: String::new(),
            verified_ms: 0,
        };
        let bindings = Bindings::new(&dir);
        bindings
            .save("ann", &binding("http://127.0.0.1:1"))
            .expect("save");
        UserStore::new(&dir)
            .create("ann", b"pw", DEVICE_KDF)
            .expect("user");
        assert!(matches!(
            pick_user(&dir, "http://127.0.0.1:1", None),
            Ok(LoginFor::Existing(name)) if name == "ann"
        ));
        assert!(matches!(
            pick_user(&dir, "http://127.0.0.1:2", Some("ann")),
            Err(OidcError::Binding(_))
        ));
        UserStore::new(&dir)
            .create("bob", b"pw", DEVICE_KDF)
            .expect("user");
        assert!(matches!(
            pick_user(&dir, "http://127.0.0.1:1", Some("bob")),
            Err(OidcError::Binding(why)) if why.contains("passphrase")
        ));
        let secret = device_secret(&dir).expect("device secret");
        assert_eq!(device_secret(&dir).expect("again"), secret);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
