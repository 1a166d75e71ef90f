//! What carries libp2p connections: TCP (Noise, Yamux) and QUIC, or, on a private network
//! (`[network] key_file`), TCP behind libp2p's pre-shared-key handshake only.
//!
//! A private network key (the `swarm.key` format of go-libp2p and IPFS) wraps every TCP
//! connection in XSalsa20 under the shared key before Noise starts, so a peer without the key
//! cannot even complete a handshake: it learns nothing about the peer and costs it a TCP accept
//! and 24 bytes. QUIC has no place for that handshake, so a peer with a key speaks TCP only
//! and says so clearly when asked to listen on QUIC. Bulk links need a ticket handed out over
//! a libp2p connection, so they are closed to peers without the key as well.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OptionalTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{noise, quic, tcp, yamux, Multiaddr, PeerId, Transport};

use super::NetError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP with Noise and Yamux, behind the pre-shared-key handshake when `key` is set.
pub(super) fn tcp(
    identity: &Keypair,
    key: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    let noise = noise::Config::new(identity)?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(match key {
        Some(key) => tcp
            .and_then(move |socket, _| PnetConfig::new(key).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    })
}

/// QUIC, unless the network is private.
pub(super) fn quic(
    identity: &Keypair,
    key: Option<PreSharedKey>,
) -> OptionalTransport<Boxed<(PeerId, StreamMuxerBox)>> {
    match key {
        Some(_) => OptionalTransport::none(),
        None => OptionalTransport::some(
            quic::tokio::Transport::new(quic::Config::new(identity))
                .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
                .boxed(),
        ),
    }
}

/// Whether `addr` is a QUIC address.
pub(super) fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

/// The largest key file read (the format takes 85 bytes; comments are not part of it).
const MAX_KEY_FILE: u64 = 4096;

/// Read a private network key from `path` (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex
/// digits). The file must be readable by its owner only: the key is what keeps strangers out.
pub fn read_network_key(path: &Path) -> Result<PreSharedKey, NetError> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| NetError::Start(format!("network.key_file: cannot open {shown}: {e}")))?;
    let mode = file
        .metadata()
        .map_err(|e| NetError::Start(format!("network.key_file: cannot stat {shown}: {e}")))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(NetError::Start(format!(
            "network.key_file: other users can read {shown} (mode {:o}); \
             the key keeps strangers out of the network: chmod 600 {shown}",
            mode & 0o777
        )));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| NetError::Start(format!("network.key_file: cannot read {shown}: {e}")))?;
    text.parse().map_err(|e| {
        NetError::Start(format!(
            "network.key_file: {shown} is not a network key ({e}); \
             make one with `dfs network-key FILE`"
        ))
    })
}

/// A new random private network key, in the file format [`read_network_key`] reads.
pub fn new_network_key() -> PreSharedKey {
    PreSharedKey::new(rand::random())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("swarm.key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_key_file_round_trips_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = new_network_key();
        let path = write(dir.path(), &key.to_key_file(), 0o600);
        let read = read_network_key(&path).expect("a fresh key reads back");
        assert_eq!(
            read.fingerprint().to_string(),
            key.fingerprint().to_string()
        );

        let open = write(dir.path(), &key.to_key_file(), 0o644);
        let err = read_network_key(&open).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        let short = write(dir.path(), "/key/swarm/psk/1.0.0/\n/base16/\nabcd\n", 0o600);
        let err = read_network_key(&short).unwrap_err().to_string();
        assert!(err.contains("not a network key"), "{err}");

        let err = read_network_key(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot open"), "{err}");
    }

    #[test]
    fn quic_addresses_are_recognised() {
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(is_quic(&quic));
        assert!(!is_quic(&tcp));
    }
}
