//! Writes the seed corpus of every fuzz target (`fuzz/corpus/<target>/`): a few valid encodings
//! of what each decoder takes. Run from `fuzz/` after changing an encoding:
//! `./smoke.sh seeds` (or `cargo run --example seeds`: the output does not depend on the flags).

use std::collections::BTreeMap;
use std::path::Path;

use dfs_fs::crdt::volume::{NodeId, VolumeOp};
use dfs_fs::crdt::{Kind, Time};
use dfs_fs::snapshot::{Entry, EntryKind};
use dfs_fs::ShareLink;
use dfs_node::{Config, OpKey};
use dfs_node::testing::bulk::fuzzing::{encode_head, HeadFields};
use dfs_node::testing::bulk::{Open, Opened};
use dfs_node::testing::peers::Announcement;
use dfs_node::testing::sync::{SyncRefusal, SyncRequest, SyncResponse};
use dfs_node::testing::wire::{encode, Refusal, Request, Response};
use dfs_node::testing::control::{control_payload, data_payload, join_proof, Control};
use dfs_node::ops::{AuthorId, Hlc, OpId, SignedOp, VolumeId};
use dfs_node::testing::{ShardHeader, Child, Ticket};
use dfs_node::{ChunkKey, BlobRef, ChunkRef};
use dfs_placement::{ChunkId, Layout};
use libp2p::identity::ed25519;

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn keypair(n: u8) -> ed25519::Keypair {
    let secret = ed25519::SecretKey::try_from_bytes([n; 32]).expect("32 bytes");
    ed25519::Keypair::from(secret)
}

fn image(fill: u8, layout: Layout, index: u8, chunk_len: u32) -> Vec<u8> {
    let header = ShardHeader {
        chunk: ChunkId([fill; 32]),
        layout,
        index,
        chunk_len,
    };
    let body = vec![fill; layout.shard_len(chunk_len as usize)];
    header.encode(&body)
}

fn main() {
    let erasure = Layout::Erasure { data: 4, parity: 2 };
    let replicated = Layout::Replicated { copies: 3 };
    let small = image(1, erasure, 5, 100);
    let copy = image(2, replicated, 0, 40);

    // Shard images.
    write("shard_header", "erasure", &small);
    write("shard_header", "replicated", &copy);
    write("shard_header", "empty_chunk", image(3, erasure, 0, 0));

    // Shard protocol messages and a length-prefixed frame.
    let chunk = ChunkId([4; 32]);
    let requests = [
        (
            "store",
            Request::Store {
                chunk,
                index: 5,
                image: small.clone(),
            },
        ),
        ("fetch", Request::Fetch { chunk, index: 1 }),
        ("check", Request::Check { chunk, index: 2 }),
        ("delete", Request::Delete { chunk, index: 3 }),
        ("fetch_trusting", Request::FetchTrusting { chunk, index: 4 }),
        ("holding", Request::Holding { chunk }),
    ];
    let responses = [
        ("stored", Response::Stored),
        (
            "shard",
            Response::Shard {
                image: copy.clone(),
            },
        ),
        (
            "checked",
            Response::Checked {
                intact: true,
                len: 1 << 20,
            },
        ),
        ("deleted", Response::Deleted { freed: 4096 }),
        (
            "holds",
            Response::Holds {
                indices: vec![0, 2, 5],
                head: small[..80].to_vec(),
            },
        ),
        ("refused", Response::Refused(Refusal::Busy)),
    ];
    for (name, r) in &requests {
        write("wire_shard", &format!("request_{name}"), encode(r).unwrap());
    }
    for (name, r) in &responses {
        write(
            "wire_shard",
            &format!("response_{name}"),
            encode(r).unwrap(),
        );
    }
    let body = encode(&requests[1].1).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    write("wire_shard", "frame_fetch", frame);

    // Bulk link heads (plaintext, as a peer holding the key sends them) and sessions.
    let heads: [(&str, Vec<u8>); 4] = [
        (
            "request_store",
            encode_head(&HeadFields {
                message: Request::Store {
                    chunk,
                    index: 5,
                    image: Vec::new(),
                },
                body: small.len() as u32,
                hash: ShardHeader::carried_hash(&small),
            })
            .unwrap(),
        ),
        (
            "request_fetch_trusting",
            encode_head(&HeadFields {
                message: Request::FetchTrusting { chunk, index: 0 },
                body: 0,
                hash: None,
            })
            .unwrap(),
        ),
        (
            "response_shard",
            encode_head(&HeadFields {
                message: Response::Shard { image: Vec::new() },
                body: copy.len() as u32,
                hash: ShardHeader::carried_hash(&copy),
            })
            .unwrap(),
        ),
        (
            "response_refused",
            encode_head(&HeadFields {
                message: Response::Refused(Refusal::NotFound),
                body: 0,
                hash: None,
            })
            .unwrap(),
        ),
    ];
    for (name, head) in heads {
        write("bulk_head", name, head);
    }
    let open = Open {
        ticket: [5; 16],
        key: [6; 32],
    };
    write("wire_bulk_open", "open", encode(&open).unwrap());
    let opened = Opened {
        addrs: vec![
            "127.0.0.1:4001".parse().unwrap(),
            "[::1]:4002".parse().unwrap(),
        ],
    };
    write("wire_bulk_open", "opened", encode(&opened).unwrap());
    write(
        "wire_bulk_open",
        "opened_none",
        encode(&Opened { addrs: Vec::new() }).unwrap(),
    );

    // Membership announcements.
    let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let announcement = Announcement {
        version: "0.1.0".into(),
        zone: "rack-1".into(),
        capacity: 1 << 40,
        free: 1 << 39,
        load: 3,
        shards: 1000,
        addrs: vec![
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}"),
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}"),
        ],
        client: false,
        uptime_secs: 3600,
        leaving: false,
    };
    write("announcement", "storage", announcement.encode().unwrap());
    let client = Announcement {
        capacity: 0,
        free: 0,
        shards: 0,
        client: true,
        leaving: true,
        addrs: Vec::new(),
        ..announcement
    };
    write("announcement", "client_leaving", client.encode().unwrap());

    // Signed ops: data and each kind of membership control.
    let creator = keypair(1);
    let joiner = keypair(2);
    let invite = keypair(3);
    let volume = VolumeId([7; 16]);
    let hlc = |millis, counter| Hlc { millis, counter };
    let genesis = SignedOp::sign(
        &creator,
        volume,
        hlc(1_700_000_000_000, 0),
        1,
        control_payload(&Control::Genesis { nonce: [8; 16] }),
    )
    .unwrap();
    let invite_op = SignedOp::sign(
        &creator,
        volume,
        hlc(1_700_000_000_001, 0),
        2,
        control_payload(&Control::Invite {
            invite: invite.public().to_bytes(),
        }),
    )
    .unwrap();
    let joiner_id = AuthorId::of(&joiner.public());
    let join = SignedOp::sign(
        &joiner,
        volume,
        hlc(1_700_000_000_002, 1),
        1,
        control_payload(&Control::Join {
            invite: invite.public().to_bytes(),
            proof: join_proof(&invite, &volume, &joiner_id),
        }),
    )
    .unwrap();
    let key = OpKey::of_volume(&[9; 32]);
    let data = SignedOp::sign(
        &creator,
        volume,
        hlc(1_700_000_000_003, 0),
        3,
        data_payload(&key.seal(&volume.0, b"an fs op")),
    )
    .unwrap();
    for (name, op) in [
        ("genesis", &genesis),
        ("invite", &invite_op),
        ("join", &join),
        ("data", &data),
    ] {
        write("signed_op", name, op.to_bytes());
    }

    // Sync protocol messages.
    let mut heads = BTreeMap::new();
    heads.insert(AuthorId::of(&creator.public()), 3);
    heads.insert(joiner_id, 1);
    let pull = SyncRequest::Pull {
        volume,
        heads,
        join: Some(serde_bytes::ByteBuf::from(join.to_bytes())),
    };
    write("wire_sync", "pull", encode(&pull).unwrap());
    let ops = SyncResponse::Ops {
        ops: [&genesis, &invite_op, &data]
            .iter()
            .map(|op| serde_bytes::ByteBuf::from(op.to_bytes()))
            .collect(),
        more: true,
    };
    write("wire_sync", "ops", encode(&ops).unwrap());
    write(
        "wire_sync",
        "refused",
        encode(&SyncResponse::Refused(SyncRefusal::NotMember)).unwrap(),
    );

    // Links and ids as users type them.
    let link = ShareLink {
        root: ChunkId([0xab; 32]),
        key: ChunkKey([0x5c; 32]),
    };
    write("share_link", "link", link.to_string());
    write("share_link", "link_spaces", format!("  {link}\n"));
    write("share_link", "chunk_id", ChunkId([0x3d; 32]).to_string());
    write("share_link", "volume_id", volume.to_string());
    write("share_link", "author_id", joiner_id.to_string());

    // Join tickets.
    let ticket = Ticket {
        volume,
        name: "photos".into(),
        secret: [9; 32],
        invite_secret: [3; 32],
        addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
        epochs: vec![([4; 16], [5; 32])],
        terms: dfs_node::testing::InviteTerms {
            expires_ms: Some(1_800_000_000_000),
            single_use: true,
            issuer: Some("http://127.0.0.1:9000".into()),
        },
    };
    write("ticket", "ticket", ticket.encode());
    let bare = Ticket {
        name: "a".into(),
        addrs: Vec::new(),
        ..ticket
    };
    write("ticket", "no_addrs", bare.encode());

    // Config files.
    write(
        "config",
        "defaults",
        toml::to_string(&Config::default()).unwrap(),
    );
    write(
        "config",
        "some",
        "[storage]\nchunk_size = 1048576\ndata_shards = 6\nparity_shards = 3\n\n\
         [network]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\", \"/ip4/0.0.0.0/udp/4001/quic-v1\"]\n\
         peers = [\"/dns4/seed.example/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA\"]\n\
         zone = \"rack-2\"\nbulk_port = 4100\n\n[cache]\ndisk_bytes = 0\n\n\
         [placement]\nstore_here = false\nsteward_delay_secs = 5\n",
    );
    write("config", "empty", "");

    // fs ops of a shared volume, as records of fuzz_targets/fs_op.rs: author, clock (2 bytes
    // LE), seq, length, postcard of the op.
    type Op = VolumeOp<OpId, AuthorId>;
    let t = Time {
        secs: 1_700_000_000,
        nanos: 5,
    };
    let a = NodeId([1; 16]);
    let b = NodeId([2; 16]);
    let author = |n: u8| AuthorId([n; 32]);
    let ops: Vec<(u8, u16, u8, Op)> = vec![
        (
            0,
            1,
            1,
            VolumeOp::Create {
                node: a,
                parent: NodeId::ROOT,
                name: b"dir".to_vec(),
                kind: Kind::Dir,
                mode: 0o755,
                uid: 1000,
                gid: 1000,
                mtime: t,
                target: None,
            },
        ),
        (
            1,
            2,
            1,
            VolumeOp::Create {
                node: b,
                parent: a,
                name: b"file".to_vec(),
                kind: Kind::File,
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime: t,
                target: None,
            },
        ),
        (
            1,
            3,
            2,
            VolumeOp::Write {
                node: b,
                content: vec![1, 2, 3],
                size: 3,
                mtime: t,
                base: None,
            },
        ),
        (
            0,
            4,
            2,
            VolumeOp::Move {
                node: b,
                parent: NodeId::ROOT,
                name: b"moved".to_vec(),
            },
        ),
        (
            0,
            5,
            3,
            VolumeOp::SetAttr {
                node: b,
                mode: Some(0o600),
                uid: None,
                gid: None,
                atime: Some(t),
                mtime: None,
            },
        ),
        (
            1,
            6,
            3,
            VolumeOp::SetXattr {
                node: a,
                name: b"user.x".to_vec(),
                value: Some(b"y".to_vec()),
            },
        ),
        (
            0,
            7,
            4,
            VolumeOp::Delete {
                node: a,
                seen: [(author(0), 3), (author(1), 3)].into_iter().collect(),
            },
        ),
        (
            1,
            8,
            4,
            VolumeOp::Dismiss {
                node: b,
                write: OpId {
                    hlc: hlc(3, 0),
                    author: author(1),
                },
            },
        ),
    ];
    let mut all = Vec::new();
    for (n, (who, millis, seq, op)) in ops.iter().enumerate() {
        let plain = postcard::to_stdvec(op).unwrap();
        let mut record = vec![*who];
        record.extend_from_slice(&millis.to_le_bytes());
        record.push(*seq);
        record.push(u8::try_from(plain.len()).expect("a short op"));
        record.extend_from_slice(&plain);
        write("fs_op", &format!("op{n}"), &record);
        all.extend_from_slice(&record);
    }
    write("fs_op", "all", all);
    link_tree();
}

/// A link's root record, a directory listing and a tree node, as a reader decodes them after
/// decrypting (the encodings of `fs/src/snapshot.rs` and `node/src/tree.rs`: a format byte,
/// then the fields in order).
fn link_tree() {
    let chunk = ChunkRef {
        id: ChunkId([9; 32]),
        key: ChunkKey([10; 32]),
        len: 1000,
    };
    let file = Entry {
        name: b"notes.txt".to_vec(),
        mode: 0o644,
        mtime: 1_765_000_000,
        mtime_nsec: 5,
        kind: EntryKind::File(BlobRef {
            size: 1000,
            level: 0,
            root: Some(chunk),
        }),
    };
    let link = Entry {
        name: b"latest".to_vec(),
        mode: 0o777,
        mtime: 0,
        mtime_nsec: 0,
        kind: EntryKind::Symlink(b"notes.txt".to_vec()),
    };
    let dir = Entry {
        name: b"docs".to_vec(),
        mode: 0o755,
        mtime: 1_765_000_001,
        mtime_nsec: 0,
        kind: EntryKind::Dir(BlobRef {
            size: 120,
            level: 1,
            root: Some(chunk),
        }),
    };
    write("link_tree", "root_file", encoded(&(1u8, file.clone())));
    write("link_tree", "root_dir", encoded(&(1u8, dir)));
    write("link_tree", "listing", encoded(&(1u8, vec![file, link])));
    let children = vec![
        Child { chunk, bytes: 1000 },
        Child {
            chunk: ChunkRef::hole(500),
            bytes: 500,
        },
    ];
    let mut node = vec![1u8];
    node.extend_from_slice(&1500u64.to_le_bytes());
    node.extend(encoded(&(1u8, 1u8, children)));
    write("link_tree", "node", node);
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encode")
}
