//! Users: a person's identity, apart from the peer's.
//!
//! A user is an Ed25519 key pair. Its secret half is kept on disk only sealed under a
//! passphrase ([`SealedUser`]): argon2id ([`KdfParams`], RFC 9106) stretches the passphrase into
//! a 32-byte key, and XChaCha20-Poly1305 seals the secret under it, with every other field of the
//! file (name, public key, parameters, salt) as associated data, so a file whose name, key or
//! parameters were changed does not open. The same text form is the file under `DATA/users/`
//! and what `dfs user export` prints, so a user moves to another device by copying one line.
//!
//! Unsealing needs the passphrase and takes a deliberate fraction of a second; an unsealed key
//! ([`UserKey`]) lives only in the memory of the running peer, in its [`Sessions`], under the
//! local uid that logged in, and signs that uid's ops along with the peer key
//! ([`crate::oplog::SignedOp`]). Logging out drops it.
//!
//! Nothing here is hand-made cryptography: argon2 and chacha20poly1305 are the RustCrypto
//! crates, Ed25519 is libp2p's (ed25519-dalek).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libp2p::identity::ed25519;
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use crate::crypto::passphrase::KdfParams;
use crate::crypto::passphrase::{self, PassphraseError};
use crate::oplog::AuthorId;

/// Prefix of a sealed user's text form (format 1).
const TEXT_PREFIX: &str = "dfs-user1:";
/// Associated-data domain of the seal.
const SEAL_DOMAIN: &[u8] = b"dfs/user-key/v1";
/// File extension of sealed users under `DATA/users/`.
const EXTENSION: &str = "user";
/// The longest user name.
pub const MAX_NAME: usize = 32;

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("bad user name {0:?}: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit")]
    BadName(String),
    #[error("no user {0:?} on this peer (see `dfs user list`, or `dfs user import`)")]
    Unknown(String),
    #[error("user {0:?} exists already")]
    Exists(String),
    #[error("wrong passphrase for user {0:?}")]
    WrongPassphrase(String),
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("not a sealed dfs user: {0}")]
    Malformed(String),
    #[error("unusable key-derivation parameters: {0}")]
    BadParams(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl UserError {
    fn from_passphrase(e: PassphraseError, name: &str) -> Self {
        match e {
            PassphraseError::Wrong => UserError::WrongPassphrase(name.to_string()),
            PassphraseError::Empty => UserError::EmptyPassphrase,
            PassphraseError::BadParams(what) => UserError::BadParams(what),
        }
    }
}

/// Check a user name: it becomes a file name.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_string()))
    }
}

/// The fields of a sealed user that are not secret; all of them are the seal's associated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    name: String,
    public: [u8; 32],
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 24],
}

/// A user's key sealed under a passphrase: safe to store and to copy between devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedUser {
    header: Header,
    /// The 32-byte Ed25519 secret key, encrypted, and the 16-byte tag.
    #[serde(with = "serde_bytes")]
    sealed: Vec<u8>,
}

impl SealedUser {
    /// Make a new user with a fresh key, sealed under `passphrase`.
    pub fn create(
        name: &str,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<(Self, UserKey), UserError> {
        let keypair = ed25519::Keypair::generate();
        let sealed = Self::seal(name, &keypair, passphrase, kdf)?;
        Ok((
            sealed,
            UserKey {
                name: name.to_string(),
                keypair,
            },
        ))
    }

    /// Seal `keypair` as user `name` under `passphrase`.
    pub fn seal(
        name: &str,
        keypair: &ed25519::Keypair,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<Self, UserError> {
        check_name(name)?;
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut salt);
        rand::rng().fill_bytes(&mut nonce);
        let header = Header {
            name: name.to_string(),
            public: keypair.public().to_bytes(),
            kdf,
            salt,
            nonce,
        };
        let secret = keypair.secret();
        let sealed = passphrase::seal(
            passphrase,
            &kdf,
            &salt,
            &nonce,
            &header.associated_data(),
            secret.as_ref(),
        )
        .map_err(|e| UserError::from_passphrase(e, name))?;
        Ok(Self { header, sealed })
    }

    /// Open with `passphrase`.
    pub fn open(&self, passphrase: &[u8]) -> Result<UserKey, UserError> {
        let name = &self.header.name;
        // The tag covers the header too: a changed file reads as a wrong passphrase, which is
        // all one can tell.
        let mut secret = passphrase::open(
            passphrase,
            &self.header.kdf,
            &self.header.salt,
            &self.header.nonce,
            &self.header.associated_data(),
            &self.sealed,
        )
        .map_err(|e| UserError::from_passphrase(e, name))?;
        let secret = ed25519::SecretKey::try_from_bytes(&mut secret)
            .map_err(|e| UserError::Malformed(format!("secret key: {e}")))?;
        let keypair = ed25519::Keypair::from(secret);
        if keypair.public().to_bytes() != self.header.public {
            return Err(UserError::Malformed(
                "the secret key does not match the public key".into(),
            ));
        }
        Ok(UserKey {
            name: name.clone(),
            keypair,
        })
    }

    pub fn name(&self) -> &str {
        &self.header.name
    }

    pub fn id(&self) -> AuthorId {
        AuthorId(self.header.public)
    }

    pub fn kdf(&self) -> KdfParams {
        self.header.kdf
    }

    /// The one-line text form (`dfs-user1:` and hex).
    pub fn to_text(&self) -> String {
        // Serialising into a Vec cannot fail: no maps, no unsized sequences.
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = String::with_capacity(TEXT_PREFIX.len() + 2 * bytes.len());
        out.push_str(TEXT_PREFIX);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Parse [`SealedUser::to_text`] (surrounding whitespace allowed).
    pub fn from_text(text: &str) -> Result<Self, UserError> {
        let malformed = |what: &str| UserError::Malformed(what.to_string());
        let hex = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| malformed("it does not start with `dfs-user1:`"))?;
        if hex.len() % 2 != 0 || hex.len() > 4096 {
            return Err(malformed("wrong length"));
        }
        let bytes = dfs_placement::ids::from_hex(hex).ok_or_else(|| malformed("not hex"))?;
        let (sealed, rest): (SealedUser, _) =
            postcard::take_from_bytes(&bytes).map_err(|e| UserError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        check_name(&sealed.header.name)?;
        sealed
            .header
            .kdf
            .check()
            .map_err(|e| UserError::from_passphrase(e, &sealed.header.name))?;
        if sealed.sealed.len() != 32 + 16 {
            return Err(malformed("the sealed key has the wrong length"));
        }
        Ok(sealed)
    }
}

impl Header {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = SEAL_DOMAIN.to_vec();
        aad.extend(postcard::to_stdvec(self).unwrap_or_default());
        aad
    }
}

/// An unsealed user key, held in memory while the user is logged in.
pub struct UserKey {
    name: String,
    keypair: ed25519::Keypair,
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("name", &self.name)
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl UserKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> AuthorId {
        AuthorId::of(&self.keypair.public())
    }

    pub(crate) fn keypair(&self) -> &ed25519::Keypair {
        &self.keypair
    }
}

/// The sealed users of a data directory: one file each under `DATA/users/`.
#[derive(Debug, Clone)]
pub struct UserStore {
    dir: PathBuf,
}

impl UserStore {
    pub fn new(data: &Path) -> Self {
        Self {
            dir: data.join("users"),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf, UserError> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.{EXTENSION}")))
    }

    /// Make user `name` with a fresh key sealed under `passphrase`.
    pub fn create(
        &self,
        name: &str,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<SealedUser, UserError> {
        let (sealed, _) = SealedUser::create(name, passphrase, kdf)?;
        self.save(&sealed, false)?;
        Ok(sealed)
    }

    /// Store a sealed user (from `dfs user export` elsewhere). An existing user of that name
    /// is replaced only with `replace`.
    pub fn save(&self, sealed: &SealedUser, replace: bool) -> Result<(), UserError> {
        let path = self.path(sealed.name())?;
        let io = |source| UserError::Io {
            path: path.clone(),
            source,
        };
        if !replace && path.exists() {
            return Err(UserError::Exists(sealed.name().to_string()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| UserError::Io {
            path: self.dir.clone(),
            source,
        })?;
        // Written aside and renamed, readable by the owner only.
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            file.write_all(format!("{}\n", sealed.to_text()).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The sealed user `name`.
    pub fn load(&self, name: &str) -> Result<SealedUser, UserError> {
        let path = self.path(name)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UserError::Unknown(name.to_string()))
            }
            Err(source) => return Err(UserError::Io { path, source }),
        };
        SealedUser::from_text(&text).map_err(|e| match e {
            UserError::Malformed(detail) => {
                UserError::Malformed(format!("{}: {detail}", path.display()))
            }
            other => other,
        })
    }

    /// Every user stored here, by name. Files that do not parse are skipped with a warning.
    pub fn list(&self) -> Result<Vec<SealedUser>, UserError> {
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
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            match self.load(name) {
                Ok(sealed) => out.push(sealed),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a user file")
                }
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }
}

/// The users logged in on a running peer, by the local uid that logged them in.
#[derive(Debug, Default)]
pub struct Sessions {
    by_uid: Mutex<BTreeMap<u32, Arc<UserKey>>>,
}

/// One logged-in user, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub uid: u32,
    pub user: String,
    /// The user's public key, hex.
    pub id: String,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<UserKey>>> {
        self.by_uid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `key` the user of `uid`, replacing whoever was; returns who was.
    pub fn login(&self, uid: u32, key: UserKey) -> Option<String> {
        self.lock()
            .insert(uid, Arc::new(key))
            .map(|old| old.name.clone())
    }

    /// Forget the user of `uid`; returns who it was.
    pub fn logout(&self, uid: u32) -> Option<String> {
        self.lock().remove(&uid).map(|old| old.name.clone())
    }

    /// The user logged in for `uid`.
    pub fn user_of(&self, uid: u32) -> Option<Arc<UserKey>> {
        self.lock().get(&uid).cloned()
    }

    /// The key of user `id`, if it is logged in here (for any uid).
    pub fn key_of(&self, id: &AuthorId) -> Option<Arc<UserKey>> {
        self.lock().values().find(|k| k.id() == *id).cloned()
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock()
            .iter()
            .map(|(uid, key)| SessionInfo {
                uid: *uid,
                user: key.name.clone(),
                id: key.id().to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest parameters accepted, so tests run quickly.
    const FAST: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn a_sealed_user_opens_with_its_passphrase_only() {
        let (sealed, key) = SealedUser::create("alice", b"correct horse", FAST).unwrap();
        assert_eq!(sealed.id(), key.id());
        let text = sealed.to_text();
        assert!(text.starts_with(TEXT_PREFIX));
        let back = SealedUser::from_text(&format!("  {text}\n")).unwrap();
        assert_eq!(back, sealed);
        let opened = back.open(b"correct horse").unwrap();
        assert_eq!(opened.id(), key.id());
        assert_eq!(opened.name(), "alice");
        assert!(matches!(
            back.open(b"correct horsf"),
            Err(UserError::WrongPassphrase(name)) if name == "alice"
        ));
    }

    #[test]
    fn a_changed_header_does_not_open() {
        let (sealed, _) = SealedUser::create("alice", b"pw", FAST).unwrap();
        let mut renamed = sealed.clone();
        renamed.header.name = "mallory".into();
        assert!(matches!(
            renamed.open(b"pw"),
            Err(UserError::WrongPassphrase(_))
        ));
        let mut other_key = sealed.clone();
        other_key.header.public[0] ^= 1;
        assert!(other_key.open(b"pw").is_err());
        let mut flipped = sealed.clone();
        flipped.sealed[3] ^= 0x40;
        assert!(flipped.open(b"pw").is_err());
    }

    #[test]
    fn parameters_outside_the_bounds_are_refused() {
        let (sealed, _) = SealedUser::create("alice", b"pw", FAST).unwrap();
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
            KdfParams { lanes: 64, ..FAST },
        ] {
            let mut bad = sealed.clone();
            bad.header.kdf = kdf;
            assert!(matches!(
                SealedUser::from_text(&bad.to_text()),
                Err(UserError::BadParams(_))
            ));
            assert!(matches!(bad.open(b"pw"), Err(UserError::BadParams(_))));
        }
    }

    #[test]
    fn malformed_text_gets_a_clear_error() {
        for text in [
            "",
            "hello",
            "dfs-user1:zz",
            "dfs-user1:0",
            "dfs-user1:00",
            "dfs-user1:",
        ] {
            assert!(
                matches!(
                    SealedUser::from_text(text),
                    Err(UserError::Malformed(_)) | Err(UserError::BadName(_))
                ),
                "{text:?}"
            );
        }
        let (sealed, _) = SealedUser::create("bob", b"pw", FAST).unwrap();
        let text = format!("{}00", sealed.to_text());
        assert!(matches!(
            SealedUser::from_text(&text),
            Err(UserError::Malformed(_))
        ));
        assert!(matches!(
            SealedUser::create("bob", b"", FAST),
            Err(UserError::EmptyPassphrase)
        ));
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "alice", "bob.smith", "x_1-2", &"n".repeat(MAX_NAME)] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "é",
            "a b",
            &"n".repeat(MAX_NAME + 1),
        ] {
            assert!(
                matches!(check_name(bad), Err(UserError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_store_keeps_users_in_owner_only_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        let alice = store.create("alice", b"pw", FAST).unwrap();
        assert!(matches!(
            store.create("alice", b"pw2", FAST),
            Err(UserError::Exists(_))
        ));
        store.create("bob", b"pw", FAST).unwrap();
        let names: Vec<_> = store
            .list()
            .unwrap()
            .iter()
            .map(|u| u.name().to_string())
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(store.load("alice").unwrap(), alice);
        assert!(matches!(store.load("carol"), Err(UserError::Unknown(_))));
        assert!(matches!(store.load("../x"), Err(UserError::BadName(_))));
        let mode = std::fs::metadata(dir.path().join("users/alice.user"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A damaged file is skipped by the listing and named by a load.
        std::fs::write(dir.path().join("users/bob.user"), "dfs-user1:00ff").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(
            matches!(store.load("bob"), Err(UserError::Malformed(m)) if m.contains("bob.user"))
        );
    }

    #[test]
    fn sessions_map_uids_to_users() {
        let sessions = Sessions::default();
        let (_, alice) = SealedUser::create("alice", b"pw", FAST).unwrap();
        let (_, bob) = SealedUser::create("bob", b"pw", FAST).unwrap();
        let alice_id = alice.id();
        assert_eq!(sessions.login(1000, alice), None);
        assert_eq!(sessions.login(1001, bob), None);
        assert_eq!(sessions.user_of(1000).map(|k| k.id()), Some(alice_id));
        assert!(sessions.user_of(0).is_none());
        assert_eq!(sessions.list().len(), 2);
        assert_eq!(sessions.logout(1000).as_deref(), Some("alice"));
        assert_eq!(sessions.logout(1000), None);
        assert!(sessions.user_of(1000).is_none());
    }
}
