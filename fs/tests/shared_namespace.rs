//! The shared namespace over a real op log (RocksDB, signed ops) without a network: every
//! change is an op in the log, the namespace rebuilt from the log shows the same tree, POSIX
//! errors come out as the local volume's do, and what a shared tree cannot hold is refused.

use std::sync::Arc;

use dfs_fs::model::{Caller, FsError, Ino, Kind, NewEntry, Rename, Time, ROOT};
use dfs_fs::namespace::Namespace;
use dfs_fs::shared::{SharedNamespace, ID_XATTR};
use dfs_node::ops::OpsHub;
use dfs_node::Repo;

const ME: Caller = Caller {
    uid: 1000,
    gid: 100,
};

struct Fixture {
    repo: Arc<Repo>,
    hub: Arc<OpsHub>,
    volume: dfs_node::ops::VolumeId,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Arc::new(Repo::open(&dir.path().join("data")).expect("open repo"));
    let key = dfs_node::testing::load_or_create(&dir.path().join("identity.key"))
        .expect("identity")
        .try_into_ed25519()
        .expect("an ed25519 key");
    let hub = Arc::new(OpsHub::new(repo.clone(), key));
    let volume = dfs_node::volume::create(&hub, &dfs_node::ops::Acting::PEER, "team")
        .expect("create volume");
    Fixture {
        repo,
        hub,
        volume,
        _dir: dir,
    }
}

impl Fixture {
    fn open(&self) -> SharedNamespace {
        SharedNamespace::open(self.hub.clone(), self.volume, 1 << 16, ME, Box::new(|_| {}))
            .expect("open the shared namespace")
    }
}

/// The tree as (path, kind, perm, size) rows, depth first.
fn tree(ns: &SharedNamespace, repo: &Repo) -> Vec<(String, Kind, u16, u64)> {
    fn walk(
        ns: &SharedNamespace,
        repo: &Repo,
        dir: Ino,
        prefix: &str,
        out: &mut Vec<(String, Kind, u16, u64)>,
    ) {
        for e in ns.list(repo, dir).expect("list") {
            let inode = ns.inode(repo, e.ino).expect("inode");
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
            out.push((path.clone(), inode.kind, inode.perm, inode.size));
            if inode.kind == Kind::Dir {
                walk(ns, repo, e.ino, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(ns, repo, ROOT, "", &mut out);
    out
}

#[test]
fn every_change_is_an_op_and_the_log_rebuilds_the_same_tree() {
    let f = fixture();
    let ns = f.open();
    let repo = &f.repo;
    let ops_before = f.hub.oplog().len(&f.volume).expect("len");

    let (docs, _) = ns
        .create(repo, &NewEntry::new(ROOT, b"docs", Kind::Dir, 0o755, ME))
        .expect("mkdir");
    let (file, inode) = ns
        .create(repo, &NewEntry::new(docs, b"a.txt", Kind::File, 0o644, ME))
        .expect("create");
    assert_eq!((inode.uid, inode.gid, inode.nlink), (1000, 100, 1));
    ns.create(repo, &NewEntry::symlink(docs, b"link", b"a.txt", ME))
        .expect("symlink");
    ns.rename(repo, &Rename::new(docs, b"a.txt", ROOT, b"b.txt"), &|_| {
        false
    })
    .expect("rename");
    let updated = ns
        .update(repo, file, &mut |i| {
            i.perm = 0o600;
            i.mtime = Time { secs: 7, nsec: 0 };
            Ok(())
        })
        .expect("chmod");
    assert_eq!((updated.perm, updated.mtime.secs), (0o600, 7));
    ns.set_xattr(repo, file, b"user.note", b"hi", true, false)
        .expect("setxattr");
    assert_eq!(
        ns.get_xattr(repo, file, b"user.note").expect("getxattr"),
        b"hi"
    );
    let id = ns.get_xattr(repo, file, ID_XATTR).expect("id xattr");
    assert!(String::from_utf8_lossy(&id).starts_with(&f.volume.to_string()));
    assert!(ns
        .list_xattrs(repo, file)
        .expect("listxattr")
        .iter()
        .all(|n| n != ID_XATTR));

    // mkdir, create, symlink, rename, chmod (mode and mtime in one op), setxattr.
    assert_eq!(f.hub.oplog().len(&f.volume).expect("len"), ops_before + 6);
    let before = tree(&ns, repo);
    assert_eq!(
        before,
        vec![
            ("/b.txt".to_string(), Kind::File, 0o600, 0),
            ("/docs".to_string(), Kind::Dir, 0o755, 0),
            ("/docs/link".to_string(), Kind::Symlink, 0o777, 5),
        ]
    );
    // A second mount of the same log (a restart) shows the same tree.
    assert_eq!(tree(&f.open(), repo), before);

    ns.remove(repo, ROOT, b"b.txt", false, &|_| false)
        .expect("unlink");
    assert!(matches!(
        ns.lookup(repo, ROOT, b"b.txt"),
        Err(FsError::NotFound)
    ));
    assert_eq!(tree(&f.open(), repo), tree(&ns, repo));
}

#[test]
fn posix_errors_and_what_a_shared_tree_cannot_hold() {
    let f = fixture();
    let ns = f.open();
    let repo = &f.repo;
    let (dir, _) = ns
        .create(repo, &NewEntry::new(ROOT, b"d", Kind::Dir, 0o755, ME))
        .expect("mkdir");
    let (file, _) = ns
        .create(repo, &NewEntry::new(dir, b"f", Kind::File, 0o644, ME))
        .expect("create");
    let len = f.hub.oplog().len(&f.volume).expect("len");
    let refused = |r: Result<(), FsError>, errno: i32| {
        let e = r.expect_err("refused");
        assert_eq!(e.errno(), errno, "{e}");
    };
    refused(
        ns.create(repo, &NewEntry::new(dir, b"f", Kind::File, 0o644, ME))
            .map(drop),
        libc::EEXIST,
    );
    refused(
        ns.remove(repo, ROOT, b"d", true, &|_| false).map(drop),
        libc::ENOTEMPTY,
    );
    refused(
        ns.remove(repo, dir, b"f", true, &|_| false).map(drop),
        libc::ENOTDIR,
    );
    refused(
        ns.rename(repo, &Rename::new(ROOT, b"d", dir, b"inside"), &|_| false)
            .map(drop),
        libc::EINVAL,
    );
    refused(
        ns.create(repo, &NewEntry::new(dir, b"x/y", Kind::File, 0o644, ME))
            .map(drop),
        libc::EINVAL,
    );
    refused(ns.link(repo, file, ROOT, b"hard").map(drop), libc::EPERM);
    refused(
        ns.create(repo, &NewEntry::new(ROOT, b"fifo", Kind::Fifo, 0o644, ME))
            .map(drop),
        libc::EPERM,
    );
    refused(
        ns.set_xattr(repo, file, ID_XATTR, b"forged", false, false),
        libc::EPERM,
    );
    refused(ns.lookup(repo, ROOT, b"missing").map(drop), libc::ENOENT);
    // Nothing refused reached the log.
    assert_eq!(f.hub.oplog().len(&f.volume).expect("len"), len);
}

/// The threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|n| n.trim() == name)
        .count()
}

#[test]
fn closing_publishes_what_is_left_and_ends_both_threads() {
    let f = fixture();
    let published = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = published.clone();
    let ns = SharedNamespace::open(
        f.hub.clone(),
        f.volume,
        1 << 16,
        ME,
        Box::new(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }),
    )
    .expect("open the shared namespace");
    // The follower is this test's alone (the other tests of this binary open namespaces, each
    // with a publisher, but follow none).
    ns.follow(|_| {}).expect("follow");
    // A thread names itself once it runs.
    for _ in 0..100 {
        if threads_named("dfs-volume") == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(threads_named("dfs-volume"), 1);
    for i in 0..20u8 {
        let name = [b'f', b'0' + i / 10, b'0' + i % 10];
        ns.create(&f.repo, &NewEntry::new(ROOT, &name, Kind::File, 0o644, ME))
            .expect("create");
    }
    // Returns once both threads are joined; the publisher first published every op made.
    ns.close();
    assert_eq!(
        published.load(std::sync::atomic::Ordering::SeqCst),
        20,
        "every op made before the close is published"
    );
    assert_eq!(threads_named("dfs-volume"), 0);
    // Closing twice is harmless.
    ns.close();
}
