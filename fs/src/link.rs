//! Share links: `dfs://<root chunk id>#<root key>`, 64 hex characters each.
//!
//! The id finds the root chunk and lets anyone verify it; the key (after `#`, like a URL
//! fragment that is never sent to a server) decrypts it and, through the keys inside, everything
//! under it. Whoever holds the link can read the content; nobody else can.

use std::fmt;
use std::str::FromStr;

use dfs_node::ChunkKey;
use dfs_placement::ChunkId;

const SCHEME: &str = "dfs://";

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
        let rest = s.trim().strip_prefix(SCHEME).ok_or(LinkError::Scheme)?;
        let (root, key) = rest.split_once('#').ok_or(LinkError::MissingKey)?;
        Ok(Self {
            root: root.parse().map_err(LinkError::Root)?,
            key: ChunkKey::from_hex(key).map_err(LinkError::Key)?,
        })
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
