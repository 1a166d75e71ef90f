//! Profiles: what a user says about themselves (display name, bio, preferences), signed by
//! the user's key, so any peer can check it came from the user whatever peer relayed it.
//!
//! A user sets a profile on a peer where they are logged in ([`SignedProfile::sign`]); the
//! peer keeps the newest profile of every user it has seen ([`ProfileStore`], in RocksDB:
//! `profiles`: user (32) -> [`SignedProfile::to_bytes`]) and replicates it as a control op
//! in every volume the user is a member of, where each member checks it (the signature, the
//! signer being the op's user, the limits) and keeps it if it is newer. Newest means the
//! larger `updated_ms`, then the larger bytes: every peer picks the same one.
//!
//! Display names are claims, not identities: two users may pick the same one, so every place
//! that shows a name shows a short key beside it.

use std::collections::BTreeMap;

use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};

use crate::meta::{MetaDb, MetaError, CF_PROFILES};
use crate::oplog::AuthorId;

/// Prefix of what a user signs for a profile.
const PROFILE_DOMAIN: &[u8] = b"dfs/profile/v1";

/// The longest display name, in bytes.
pub const MAX_DISPLAY_NAME: usize = 64;
/// The longest bio, in bytes.
pub const MAX_BIO: usize = 280;
/// The most preferences, and the longest key and value of one.
pub const MAX_PREFS: usize = 32;
pub const MAX_PREF_KEY: usize = 32;
pub const MAX_PREF_VALUE: usize = 256;
/// The most profiles [`ProfileStore::all`] lists.
pub const MAX_LISTED: usize = 10_000;
/// The largest encoded signed profile (what a stranger can make a member store per user).
pub const MAX_ENCODED: usize = 16 << 10;

/// What a user says about themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// How the user wants to be called (not unique: always shown with a short key).
    pub display_name: String,
    pub bio: String,
    /// Free-form preferences (e.g. `notify.download = off`), by key.
    pub prefs: BTreeMap<String, String>,
    /// When it was set, ms since the Unix epoch: the newest profile of a user wins.
    pub updated_ms: u64,
}

/// Why a profile is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("display name longer than {MAX_DISPLAY_NAME} bytes")]
    NameTooLong,
    #[error("the display name has control characters")]
    NameControl,
    #[error("bio longer than {MAX_BIO} bytes")]
    BioTooLong,
    #[error("more than {MAX_PREFS} preferences, or a key over {MAX_PREF_KEY} or a value over {MAX_PREF_VALUE} bytes")]
    Prefs,
    #[error("profile signature of user {0} does not verify")]
    BadSignature(AuthorId),
    #[error("malformed profile: {0}")]
    Malformed(String),
}

impl Profile {
    /// Check the limits (what any receiver checks too).
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.display_name.len() > MAX_DISPLAY_NAME {
            return Err(ProfileError::NameTooLong);
        }
        if self.display_name.chars().any(char::is_control) {
            return Err(ProfileError::NameControl);
        }
        if self.bio.len() > MAX_BIO {
            return Err(ProfileError::BioTooLong);
        }
        let pref_ok = |(k, v): (&String, &String)| {
            !k.is_empty() && k.len() <= MAX_PREF_KEY && v.len() <= MAX_PREF_VALUE
        };
        if self.prefs.len() > MAX_PREFS || !self.prefs.iter().all(pref_ok) {
            return Err(ProfileError::Prefs);
        }
        Ok(())
    }
}

/// A profile with its user's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProfile {
    pub user: AuthorId,
    pub profile: Profile,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

fn message(user: &AuthorId, profile: &Profile) -> Vec<u8> {
    let mut msg = PROFILE_DOMAIN.to_vec();
    msg.extend_from_slice(&user.0);
    // Serialising a struct of strings and a map into a Vec cannot fail.
    msg.extend(postcard::to_stdvec(profile).unwrap_or_default());
    msg
}

impl SignedProfile {
    /// Sign `profile` as the holder of `key`.
    pub fn sign(key: &ed25519::Keypair, profile: Profile) -> Result<Self, ProfileError> {
        profile.check()?;
        let user = AuthorId::of(&key.public());
        let signature = key.sign(&message(&user, &profile));
        Ok(Self {
            user,
            profile,
            signature,
        })
    }

    /// Check the limits and the signature.
    pub fn verify(&self) -> Result<(), ProfileError> {
        self.profile.check()?;
        let key = self
            .user
            .public_key()
            .map_err(|e| ProfileError::Malformed(e.to_string()))?;
        if key.verify(&message(&self.user, &self.profile), &self.signature) {
            Ok(())
        } else {
            Err(ProfileError::BadSignature(self.user))
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decode and verify.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        if bytes.len() > MAX_ENCODED {
            return Err(ProfileError::Malformed(format!("{} bytes", bytes.len())));
        }
        let (signed, rest): (SignedProfile, _) =
            postcard::take_from_bytes(bytes).map_err(|e| ProfileError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ProfileError::Malformed("trailing bytes".into()));
        }
        signed.verify()?;
        Ok(signed)
    }

    /// Whether this profile replaces `held` (of the same user): newer, or as new with larger
    /// bytes, so that every peer keeps the same one.
    pub fn supersedes(&self, held: &SignedProfile) -> bool {
        (self.profile.updated_ms, self.to_bytes()) > (held.profile.updated_ms, held.to_bytes())
    }
}

/// The newest profile of every user this peer has seen.
pub struct ProfileStore<'a> {
    db: &'a MetaDb,
}

impl<'a> ProfileStore<'a> {
    pub fn new(db: &'a MetaDb) -> Self {
        Self { db }
    }

    /// The profile held for `user`. A row that does not decode is treated as absent (it is
    /// replaced by the next valid one).
    pub fn get(&self, user: &AuthorId) -> Result<Option<SignedProfile>, MetaError> {
        let bytes = self.db.cf_get(CF_PROFILES, &user.0)?;
        Ok(bytes.and_then(|b| SignedProfile::from_bytes(&b).ok()))
    }

    /// The row that stores `profile` if it is newer than what is held, else `None`.
    pub(crate) fn write_if_newer(
        &self,
        profile: &SignedProfile,
    ) -> Result<Option<crate::meta::CfWrite>, MetaError> {
        match self.get(&profile.user)? {
            Some(held) if !profile.supersedes(&held) => Ok(None),
            _ => Ok(Some((
                CF_PROFILES,
                profile.user.0.to_vec(),
                Some(profile.to_bytes()),
            ))),
        }
    }

    /// Store `profile` if it is newer than what is held; whether it was.
    pub fn put(&self, profile: &SignedProfile) -> Result<bool, MetaError> {
        match self.write_if_newer(profile)? {
            Some(row) => {
                self.db.cf_write([row], true)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The display name of `user`, if a profile with one is held.
    pub fn display_name(&self, user: &AuthorId) -> Option<String> {
        self.get(user)
            .ok()
            .flatten()
            .map(|p| p.profile.display_name)
            .filter(|n| !n.is_empty())
    }

    /// Every profile held (the first [`MAX_LISTED`]), by user.
    pub fn all(&self) -> Result<Vec<SignedProfile>, MetaError> {
        let mut out = Vec::new();
        for (_, value) in self.db.cf_scan_from(CF_PROFILES, &[], MAX_LISTED)? {
            if let Ok(p) = SignedProfile::from_bytes(&value) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::op::tests::key;

    fn alice(name: &str, at: u64) -> SignedProfile {
        SignedProfile::sign(
            &key(1),
            Profile {
                display_name: name.into(),
                bio: "writes things".into(),
                prefs: BTreeMap::from([("notify.download".into(), "off".into())]),
                updated_ms: at,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_signed_profile_round_trips_and_forgeries_fail() {
        let p = alice("Alice", 5);
        let bytes = p.to_bytes();
        assert_eq!(SignedProfile::from_bytes(&bytes).unwrap(), p);
        // Another user's key claimed over Alice's signature.
        let mut claimed = p.clone();
        claimed.user = AuthorId::of(&key(2).public());
        assert!(matches!(
            claimed.verify(),
            Err(ProfileError::BadSignature(_))
        ));
        // A changed name.
        let mut renamed = p.clone();
        renamed.profile.display_name = "Mallory".into();
        assert!(renamed.verify().is_err());
        assert!(SignedProfile::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(SignedProfile::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
    }

    #[test]
    fn limits_are_checked_on_both_sides() {
        let mut p = Profile {
            display_name: "x".repeat(MAX_DISPLAY_NAME + 1),
            ..Profile::default()
        };
        assert_eq!(p.check(), Err(ProfileError::NameTooLong));
        p.display_name = "a\u{7}b".into();
        assert_eq!(p.check(), Err(ProfileError::NameControl));
        p.display_name = "ok".into();
        p.bio = "b".repeat(MAX_BIO + 1);
        assert_eq!(p.check(), Err(ProfileError::BioTooLong));
        p.bio.clear();
        p.prefs = (0..=MAX_PREFS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(p.check(), Err(ProfileError::Prefs));
        assert!(SignedProfile::sign(&key(1), p).is_err());
    }

    #[test]
    fn the_newest_profile_wins_on_every_peer() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(dir.path()).unwrap();
        let store = ProfileStore::new(&db);
        let user = AuthorId::of(&key(1).public());
        assert!(store.get(&user).unwrap().is_none());
        assert!(store.put(&alice("Alice", 5)).unwrap());
        assert!(!store.put(&alice("Old Alice", 4)).unwrap());
        assert_eq!(store.display_name(&user).as_deref(), Some("Alice"));
        assert!(store.put(&alice("Alice L.", 6)).unwrap());
        assert_eq!(store.display_name(&user).as_deref(), Some("Alice L."));
        // Two profiles of one instant: the same one wins whatever the order.
        let (x, y) = (alice("X", 9), alice("Y", 9));
        let winner = if x.supersedes(&y) { "X" } else { "Y" };
        store.put(&x).unwrap();
        store.put(&y).unwrap();
        assert_eq!(store.display_name(&user).as_deref(), Some(winner));
        assert_eq!(store.all().unwrap().len(), 1);
    }
}
