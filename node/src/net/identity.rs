//! The peer's identity: an Ed25519 key kept in `DATA/identity.key` (mode 0600), created on first
//! start, so a peer keeps its id across restarts.

use std::io;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::repo::write_private_file;

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the peer identity {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the peer identity {path} is not a valid Ed25519 key ({detail}); move it away to make a new identity")]
    Invalid { path: String, detail: String },
}

/// Load the key at `path`, or create and save a new one if there is none.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let invalid = |detail: String| IdentityError::Invalid {
                path: path.display().to_string(),
                detail,
            };
            let key =
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| invalid(e.to_string()))?;
            if key.clone().try_into_ed25519().is_err() {
                return Err(invalid("not an Ed25519 key".into()));
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io_err(io::Error::other(e.to_string())))?;
            write_private_file(path, &bytes).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("not a valid Ed25519 key"), "{err}");
    }
}
