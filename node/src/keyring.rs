//! The keys a peer holds for one shared volume, and the payloads of fs ops they open and seal.
//!
//! A volume starts with one key, from the secret in its join ticket. Each removal of a member
//! begins a key epoch ([`crate::oplog::control::NewEpoch`]): a fresh secret sealed to every
//! remaining member and device, which the removed member never gets. A peer holds an epoch's
//! key when the epoch was sealed to it (opened with the peer's own key), when a ticket carried
//! it (a member who joins later reads the whole history), or when it made the epoch. Writers
//! seal under the newest epoch they hold, in op order; readers open each op under the key its
//! payload names, so what was written before a removal stays readable to the members who
//! remain, and what is written after it is not readable by the member who left.

use std::collections::HashMap;

use crate::crypto::epoch::open_with;
use crate::crypto::OpKey;
use crate::oplog::control::{data_payload, epoch_data_payload};
use crate::oplog::{Access, Payload, VolumeId};

/// An epoch's id and secret, as tickets and volume records keep them.
pub type EpochSecret = ([u8; 16], [u8; 32]);

/// Why an fs op's payload does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "sealed under key epoch {0}, which this peer was not given (a member removed since, or \
         a device the epoch's maker did not know)"
    )]
    UnknownEpoch(String),
    #[error("does not decrypt with the volume's key")]
    Decrypt,
    #[error("not an fs op: {0}")]
    NotData(String),
}

/// The keys of one volume held here.
#[derive(Debug, Clone)]
pub struct Keyring {
    volume: VolumeId,
    first: OpKey,
    epochs: HashMap<[u8; 16], OpKey>,
    secrets: Vec<EpochSecret>,
    /// The newest epoch (in op order) held: what new ops are sealed under.
    current: Option<[u8; 16]>,
}

impl Keyring {
    /// The keys of `volume` from its first secret and the epoch secrets `held`, only: what an
    /// offline command (`dfs gc`) knows.
    pub fn from_held(volume: VolumeId, first: &[u8; 32], held: &[EpochSecret]) -> Keyring {
        let mut ring = Keyring {
            volume,
            first: OpKey::of_volume(first),
            epochs: HashMap::new(),
            secrets: Vec::new(),
            current: None,
        };
        for secret in held {
            ring.add(*secret);
        }
        ring
    }

    /// [`Keyring::from_held`], with the epochs that `access` knows and that were sealed to the
    /// holder of the Ed25519 seed `me` (`me_public` its public key) opened; the newest of them
    /// held is current.
    pub fn new(
        volume: VolumeId,
        first: &[u8; 32],
        held: &[EpochSecret],
        access: &Access,
        me: (&[u8; 32], &[u8; 32]),
    ) -> Keyring {
        let (seed, public) = me;
        let mut ring = Keyring::from_held(volume, first, held);
        for epoch in access.epochs() {
            if ring.epochs.contains_key(&epoch.id) {
                ring.current = Some(epoch.id);
                continue;
            }
            let Some(sealed) = epoch.sealed.iter().find(|s| &s.to == public) else {
                continue;
            };
            match open_with(seed, &sealed.secret) {
                Ok(secret) => {
                    ring.add((epoch.id, secret));
                    ring.current = Some(epoch.id);
                }
                Err(e) => tracing::warn!(
                    %volume,
                    epoch = %dfs_placement::ids::to_hex(&epoch.id),
                    error = %e,
                    "a key epoch sealed to this peer does not open"
                ),
            }
        }
        ring
    }

    fn add(&mut self, (id, secret): EpochSecret) {
        if self.epochs.insert(id, OpKey::of_volume(&secret)).is_none() {
            self.secrets.push((id, secret));
        }
    }

    /// Every epoch secret held, for records and tickets.
    pub fn secrets(&self) -> &[EpochSecret] {
        &self.secrets
    }

    /// The epoch new ops are sealed under (`None`: the first key).
    pub fn current(&self) -> Option<[u8; 16]> {
        self.current
    }

    /// The plaintext of an fs op's payload.
    pub fn open(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (key, sealed) = match Payload::parse(payload) {
            Ok(Payload::Data(sealed)) => (&self.first, sealed),
            Ok(Payload::EpochData { epoch, sealed }) => (
                self.epochs
                    .get(&epoch)
                    .ok_or_else(|| KeyError::UnknownEpoch(dfs_placement::ids::to_hex(&epoch)))?,
                sealed,
            ),
            Ok(Payload::Control(_)) => return Err(KeyError::NotData("a control op".into())),
            Err(e) => return Err(KeyError::NotData(e.to_string())),
        };
        key.open(&self.volume.0, sealed)
            .map_err(|_| KeyError::Decrypt)
    }

    /// The payload of an fs op `plain`, sealed under the current epoch.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        match self
            .current
            .and_then(|id| Some((id, self.epochs.get(&id)?)))
        {
            Some((id, key)) => epoch_data_payload(&id, &key.seal(&self.volume.0, plain)),
            None => data_payload(&self.first.seal(&self.volume.0, plain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::epoch::seal_to;
    use crate::oplog::access::OpPlace;
    use crate::oplog::control::{Control, NewEpoch, Role, SealedSecret};
    use crate::oplog::{AuthorId, Hlc, OpId};

    const VOLUME: VolumeId = VolumeId([3; 16]);

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let key = libp2p::identity::ed25519::Keypair::generate();
        let mut seed = [0; 32];
        seed.copy_from_slice(key.secret().as_ref());
        (seed, key.public().to_bytes())
    }

    /// Genesis by `owner`, then a removal of `gone` whose epoch `id` is sealed to `to`.
    fn access_with_epoch(owner: [u8; 32], gone: [u8; 32], id: [u8; 16], to: &[[u8; 32]]) -> Access {
        let place = |millis, who: [u8; 32], seq| OpPlace {
            id: OpId {
                hlc: Hlc { millis, counter: 0 },
                author: AuthorId(who),
            },
            device: AuthorId(who),
            principal: AuthorId(who),
            seq,
        };
        let secret = [9; 32];
        let sealed = to
            .iter()
            .map(|k| SealedSecret {
                to: *k,
                secret: seal_to(k, &secret).unwrap(),
            })
            .collect();
        Access::build(&[
            (place(1, owner, 1), Control::Genesis { nonce: [0; 16] }),
            (
                place(5, owner, 2),
                Control::SetRole {
                    member: gone,
                    role: Role::Removed,
                    cutoff: Vec::new(),
                    epoch: Some(NewEpoch { id, sealed }),
                },
            ),
        ])
    }

    #[test]
    fn what_is_sealed_after_a_removal_opens_for_those_it_was_sealed_to_only() {
        let (owner_seed, owner) = keypair();
        let (stay_seed, stay) = keypair();
        let (gone_seed, gone) = keypair();
        let access = access_with_epoch(owner, gone, [1; 16], &[owner, stay]);
        let first = [5; 32];
        let ring = |me: (&[u8; 32], &[u8; 32])| Keyring::new(VOLUME, &first, &[], &access, me);
        let (writer, stayer, leaver) = (
            ring((&owner_seed, &owner)),
            ring((&stay_seed, &stay)),
            ring((&gone_seed, &gone)),
        );
        assert_eq!(writer.current(), Some([1; 16]));
        assert_eq!(leaver.current(), None);
        // Before the removal: the first key, which everyone holds.
        let old = leaver.seal(b"before");
        assert_eq!(stayer.open(&old).unwrap(), b"before");
        // After: the new epoch's, which the one who left cannot open.
        let new = writer.seal(b"after");
        assert_eq!(stayer.open(&new).unwrap(), b"after");
        assert!(matches!(leaver.open(&new), Err(KeyError::UnknownEpoch(_))));
        // A member who joins later with a ticket carrying the epoch reads both.
        let joiner = Keyring::from_held(VOLUME, &first, stayer.secrets());
        assert_eq!(joiner.open(&new).unwrap(), b"after");
        assert_eq!(joiner.open(&old).unwrap(), b"before");
        // Tampering and other volumes' keys are refused.
        let mut damaged = new.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(stayer.open(&damaged), Err(KeyError::Decrypt));
        let other = Keyring::from_held(VOLUME, &[6; 32], &[]);
        assert_eq!(other.open(&old), Err(KeyError::Decrypt));
        assert!(matches!(stayer.open(&[1, 0]), Err(KeyError::NotData(_))));
    }
}
