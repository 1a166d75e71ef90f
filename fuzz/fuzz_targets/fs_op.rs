//! Fuzzes the fs operations of shared volumes (`fs/src/shared.rs`, `fs/src/crdt/volume.rs`):
//! `decode_op` of a payload another member sealed with the volume's key (it may seal anything),
//! then a sequence of such ops applied to a volume's merged state.
#![no_main]

use dfs_fs::shared::{decode_op, Op};
use dfs_node::ops::{AuthorId, Hlc, OpId, SignedOp, VolumeId};
use dfs_node::volume::Keyring;
use libfuzzer_sys::fuzz_target;

const VOLUME: VolumeId = VolumeId([5; 16]);

fuzz_target!(|data: &[u8]| {
    let key = Keyring::from_held(VOLUME, &[9; 32], &[([2; 16], [3; 32])]);
    let mut state = dfs_fs::crdt::volume::VolumeState::<OpId, AuthorId>::new();
    // Records: author (1 byte), clock (2 bytes), seq (1 byte), length (1 byte), that many
    // bytes of plaintext op.
    let mut rest = data;
    while let [author, m0, m1, seq, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (plain, tail) = tail.split_at(len);
        rest = tail;
        let op = SignedOp {
            volume: VOLUME,
            id: OpId {
                hlc: Hlc {
                    millis: u64::from(u16::from_le_bytes([*m0, *m1])),
                    counter: 0,
                },
                author: AuthorId([*author % 4; 32]),
            },
            seq: u64::from(*seq),
            payload: key.seal(plain),
            signature: [0; 64],
            user: None,
        };
        let Ok(Some(decoded)) = decode_op(&key, &op) else {
            continue;
        };
        let decoded: Op = decoded;
        let stamp = dfs_fs::crdt::volume::Stamp {
            ts: op.id,
            author: op.id.author,
            seq: op.seq,
        };
        let _ = state.apply(stamp, decoded);
    }
    // The whole input as one op's plaintext, and as a payload that is not sealed.
    let whole = SignedOp {
        volume: VOLUME,
        id: OpId {
            hlc: Hlc::default(),
            author: AuthorId([0; 32]),
        },
        seq: 1,
        payload: key.seal(data),
        signature: [0; 64],
        user: None,
    };
    let _ = decode_op(&key, &whole);
    let raw = SignedOp {
        payload: data.to_vec(),
        ..whole
    };
    let _ = decode_op(&key, &raw);
});
