//! Share links: `dfs://<root chunk id>#<root key>`, 64 hex characters each.
//!
//! The id finds the root chunk and lets anyone verify it; the key (after `#`, like a URL
//! fragment that is never sent to a server) decrypts it and, through the keys inside, everything
//! under it. Whoever holds the link can read the content; nobody else can.
//!
//! A password-protected link ([`LockedLink`]) carries the root key sealed under a password
//! instead (`dfs://<root>#locked1-<KiB>-<passes>-<salt>-<sealed key>`: argon2id and
//! XChaCha20-Poly1305, with the root id and the parameters as associated data): the link
//! alone opens nothing, and each password guess costs the argon2id work.

use std::fmt;
use std::str::FromStr;

use dfs_node::passphrase::{self, KdfParams};
use dfs_node::ChunkKey;
use dfs_placement::ChunkId;

const SCHEME: &str = "dfs://";
/// What follows `#` in a password-protected link.
const LOCKED: &str = "locked1-";
/// Associated-data domain of a locked link's sealed key.
const LOCK_DOMAIN: &[u8] = b"dfs/locked-link/v1";

/// A link to a stored file or directory tree.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShareLink {
    pub root: ChunkId,
    pub key: ChunkKey,
}

/// Why a string is not a share link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("malformed link: it must start with {SCHEME}")]
    Scheme,
    #[error("malformed link: expected dfs://<root id>#<key>, the '#<key>' part is missing")]
    MissingKey,
    #[error("malformed link: bad root id: {0}")]
    Root(dfs_placement::ParseIdError),
    #[error("malformed link: bad key: {0}")]
    Key(dfs_placement::ParseIdError),
    #[error("malformed password-protected link: {0}")]
    Locked(&'static str),
    #[error("this link is password-protected: give its password (--password-file, DFS_PASSWORD, or the terminal)")]
    NeedsPassword,
    #[error("password-protected link: {0}")]
    Passphrase(dfs_node::passphrase::PassphraseError),
}

impl fmt::Display for ShareLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}#{}", self.root, self.key.to_hex())
    }
}

impl fmt::Debug for ShareLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareLink({}#..)", self.root.short())
    }
}

impl FromStr for ShareLink {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match AnyLink::from_str(s)? {
            AnyLink::Open(link) => Ok(link),
            AnyLink::Locked(_) => Err(LinkError::NeedsPassword),
        }
    }
}

impl ShareLink {
    /// This link with its key sealed under `password`.
    pub fn lock(&self, password: &[u8], kdf: KdfParams) -> Result<LockedLink, LinkError> {
        let salt: [u8; 16] = rand::random();
        let aad = LockedLink::associated_data(&self.root, &kdf);
        let sealed = passphrase::seal(password, &kdf, &salt, &[0; 24], &aad, &self.key.0)
            .map_err(LinkError::Passphrase)?;
        let sealed = sealed
            .try_into()
            .map_err(|_| LinkError::Locked("sealed key of the wrong length"))?;
        Ok(LockedLink {
            root: self.root,
            kdf,
            salt,
            sealed,
        })
    }
}

/// A link whose key is sealed under a password.
#[derive(Clone, PartialEq, Eq)]
pub struct LockedLink {
    pub root: ChunkId,
    /// argon2id's memory and passes (one lane).
    pub kdf: KdfParams,
    salt: [u8; 16],
    /// The 32-byte root key, encrypted, and its 16-byte tag.
    sealed: [u8; 48],
}

impl LockedLink {
    fn associated_data(root: &ChunkId, kdf: &KdfParams) -> Vec<u8> {
        let mut aad = LOCK_DOMAIN.to_vec();
        aad.extend_from_slice(&root.0);
        aad.extend_from_slice(&kdf.memory_kib.to_be_bytes());
        aad.extend_from_slice(&kdf.passes.to_be_bytes());
        aad.extend_from_slice(&kdf.lanes.to_be_bytes());
        aad
    }

    /// The open link, if `password` is the one it was locked with.
    pub fn unlock(&self, password: &[u8]) -> Result<ShareLink, LinkError> {
        let aad = Self::associated_data(&self.root, &self.kdf);
        // The salt is fresh for each link, so the derived key seals exactly one message.
        let key = passphrase::open(
            password,
            &self.kdf,
            &self.salt,
            &[0; 24],
            &aad,
            &self.sealed,
        )
        .map_err(LinkError::Passphrase)?;
        let key = key
            .try_into()
            .map_err(|_| LinkError::Locked("sealed key of the wrong length"))?;
        Ok(ShareLink {
            root: self.root,
            key: ChunkKey(key),
        })
    }
}

impl fmt::Display for LockedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}#{LOCKED}{}-{}-{}-{}",
            self.root,
            self.kdf.memory_kib,
            self.kdf.passes,
            dfs_placement::ids::to_hex(&self.salt),
            dfs_placement::ids::to_hex(&self.sealed)
        )
    }
}

impl fmt::Debug for LockedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockedLink({}#locked)", self.root.short())
    }
}

/// A link as typed by a user: open, or password-protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyLink {
    Open(ShareLink),
    Locked(LockedLink),
}

impl FromStr for AnyLink {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.trim().strip_prefix(SCHEME).ok_or(LinkError::Scheme)?;
        let (root, key) = rest.split_once('#').ok_or(LinkError::MissingKey)?;
        let root = root.parse().map_err(LinkError::Root)?;
        let Some(locked) = key.strip_prefix(LOCKED) else {
            return Ok(AnyLink::Open(ShareLink {
                root,
                key: ChunkKey::from_hex(key).map_err(LinkError::Key)?,
            }));
        };
        let mut parts = locked.split('-');
        let mut number = |what| {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or(LinkError::Locked(what))
        };
        let memory_kib = number("no memory size")?;
        let passes = number("no pass count")?;
        let mut hex = |what| {
            parts
                .next()
                .and_then(dfs_placement::ids::from_hex)
                .ok_or(LinkError::Locked(what))
        };
        let salt = hex("no salt")?
            .try_into()
            .map_err(|_| LinkError::Locked("the salt is not 16 bytes"))?;
        let sealed = hex("no sealed key")?
            .try_into()
            .map_err(|_| LinkError::Locked("the sealed key is not 48 bytes"))?;
        if parts.next().is_some() {
            return Err(LinkError::Locked("trailing fields"));
        }
        let kdf = KdfParams {
            memory_kib,
            passes,
            lanes: 1,
        };
        kdf.check().map_err(LinkError::Passphrase)?;
        Ok(AnyLink::Locked(LockedLink {
            root,
            kdf,
            salt,
            sealed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(root in any::<[u8; 32]>(), key in any::<[u8; 32]>()) {
            let link = ShareLink { root: ChunkId(root), key: ChunkKey(key) };
            prop_assert_eq!(link.to_string().parse::<ShareLink>(), Ok(link));
        }

        #[test]
        fn never_panics(s in "(dfs://)?[0-9a-f#]{0,140}") {
            let _ = s.parse::<ShareLink>();
        }
    }

    const FAST: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn a_locked_link_opens_with_its_password_only() {
        let link = ShareLink {
            root: ChunkId([3; 32]),
            key: ChunkKey([4; 32]),
        };
        let locked = link.lock(b"open sesame", FAST).unwrap();
        let text = locked.to_string();
        assert!(text.starts_with(&format!("dfs://{}#locked1-8192-1-", link.root)));
        // The key is nowhere in the text.
        assert!(!text.contains(&link.key.to_hex()));
        let parsed: AnyLink = text.parse().unwrap();
        assert_eq!(parsed, AnyLink::Locked(locked.clone()));
        assert_eq!(locked.unlock(b"open sesame").unwrap(), link);
        assert!(matches!(
            locked.unlock(b"open sesame!"),
            Err(LinkError::Passphrase(
                dfs_node::passphrase::PassphraseError::Wrong
            ))
        ));
        // As an open link it asks for the password instead of failing obscurely.
        assert_eq!(text.parse::<ShareLink>(), Err(LinkError::NeedsPassword));
        // Another root, or cheaper parameters, with the same sealed key: does not open.
        let swapped = text.replacen(&link.root.to_string(), &"5".repeat(64), 1);
        let AnyLink::Locked(swapped) = swapped.parse().unwrap() else {
            panic!("not locked")
        };
        assert!(swapped.unlock(b"open sesame").is_err());
        let cheaper = text.replacen("locked1-8192-1-", "locked1-8193-1-", 1);
        let AnyLink::Locked(cheaper) = cheaper.parse().unwrap() else {
            panic!("not locked")
        };
        assert!(cheaper.unlock(b"open sesame").is_err());
    }

    #[test]
    fn malformed_locked_links_name_the_problem() {
        let root = "a".repeat(64);
        for (tail, want) in [
            ("locked1-", "memory"),
            ("locked1-8192", "pass"),
            ("locked1-8192-1-zz", "salt"),
            ("locked1-8192-1-00", "salt"),
            (
                &format!("locked1-8192-1-{}-00", "00".repeat(16)),
                "48 bytes",
            ),
            (
                &format!("locked1-8192-1-{}-{}-x", "00".repeat(16), "00".repeat(48)),
                "trailing",
            ),
            (
                &format!("locked1-1-1-{}-{}", "00".repeat(16), "00".repeat(48)),
                "memory",
            ),
        ] {
            let err = format!("dfs://{root}#{tail}")
                .parse::<AnyLink>()
                .unwrap_err();
            assert!(err.to_string().contains(want), "{tail}: {err}");
        }
    }

    #[test]
    fn malformed_links_name_the_problem() {
        assert_eq!("http://x".parse::<ShareLink>(), Err(LinkError::Scheme));
        assert_eq!("dfs://abc".parse::<ShareLink>(), Err(LinkError::MissingKey));
        assert!(matches!(
            "dfs://abc#def".parse::<ShareLink>(),
            Err(LinkError::Root(_))
        ));
        let root = "a".repeat(64);
        assert!(matches!(
            format!("dfs://{root}#xyz").parse::<ShareLink>(),
            Err(LinkError::Key(_))
        ));
    }
}
