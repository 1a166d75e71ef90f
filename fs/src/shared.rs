//! The namespace of a shared volume: the merged state ([`VolumeState`]) of the volume's signed
//! op log, served to a mount.
//!
//! - **Reads** answer from the state, held in memory and rebuilt from the log when the mount
//!   starts (the log in RocksDB is the durable copy).
//! - **Local changes** become [`VolumeOp`]s: encoded, sealed with the volume's [`OpKey`],
//!   signed and appended by the peer's [`OpsHub`] and applied to the state, all under the
//!   state lock so that the check (name free, directory empty) and the op agree. The append
//!   does not wait for the disk; a publisher thread syncs what accumulated (one fsync for many
//!   ops) and only then gossips it, so no op leaves the peer before it is durable here, and
//!   fsync(2) syncs at once.
//! - **Remote changes** arrive on the hub's stream of the volume; [`SharedNamespace::follow`]
//!   applies each and reports what the kernel must forget ([`Inval`]): the names this mount
//!   handed to the kernel in each changed directory (by lookup, create, rename, readdir) that
//!   now name another node or nothing, and the inodes whose attributes or content changed.
//!
//! Inode numbers are assigned per mount as nodes are first seen (`ROOT` is the root); the
//! kernel only needs them stable while mounted. Chunk content is referenced by the `Write` op
//! (a [`BlobRef`], keys included, inside the sealed payload), so any member can read it.
//!
//! Not supported in a shared volume: hard links (a node has one parent) and special files
//! (the merged state knows files, directories and symlinks): both are refused with EPERM.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use dfs_node::ops::{data_payload, AuthorId, OpId, OpsHub, Payload, SignedOp, VolumeId};
use dfs_node::OpKey;
use dfs_node::{BlobRef, Repo};
use serde::{Deserialize, Serialize};

use crate::crdt::volume::{
    self as crdt, Entry, Stamp, Timestamp, VersionVector, VolumeOp, VolumeState,
};
use crate::crdt::NodeId;
use crate::model::{
    check_name, check_remove_kind, check_remove_name, Caller, DirEntry, FsError, Ino, Inode, Kind,
    NewEntry, Rename, Result, Time, NAME_MAX, ROOT,
};
use crate::namespace::{Base, Namespace};

/// A read-only extended attribute every node of a shared mount answers (and never lists):
/// `"<volume id> <node id>"` in hex, which `dfs log PATH` reads to find a path's history.
pub const ID_XATTR: &[u8] = b"user.dfs.id";

/// Remote ops applied before the kernel is told what they changed.
const BATCH: usize = 256;

/// An op of a shared volume, as the state applies it.
pub type Op = VolumeOp<OpId, AuthorId>;

impl Timestamp for OpId {
    /// `MMDD-HHMM` of the op's clock, UTC.
    fn short_time(&self) -> String {
        let name = crate::versions::time_name(Time {
            secs: (self.hlc.millis / 1000) as i64,
            nsec: 0,
        });
        // "YYYY-MM-DDTHH-MM-SS..." -> "MMDD-HHMM"
        let b = name.as_bytes();
        if b.len() < 16 {
            return name;
        }
        format!(
            "{}{}-{}{}",
            &name[5..7],
            &name[8..10],
            &name[11..13],
            &name[14..16]
        )
    }

    fn least() -> Self {
        OpId {
            hlc: dfs_node::ops::Hlc::default(),
            author: AuthorId([0; 32]),
        }
    }
}

/// What a `Write` op's opaque content holds: the file's chunk tree and the size it was cut at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRef {
    pub blob: BlobRef,
    pub chunk_size: u32,
}

/// What the kernel must forget after a remote change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inval {
    /// The entry `name` of directory `parent` now names something else, or nothing.
    Entry { parent: Ino, name: Vec<u8> },
    /// The attributes or content of `ino` (a directory: its listing) changed.
    Inode(Ino),
}

/// Decode the fs op a signed op carries: `None` for control ops (membership).
pub fn decode_op(key: &OpKey, op: &SignedOp) -> std::result::Result<Option<Op>, String> {
    match Payload::parse(&op.payload) {
        Ok(Payload::Control(_)) => Ok(None),
        Ok(Payload::Data(sealed)) => {
            let plain = key
                .open(&op.volume.0, sealed)
                .map_err(|_| "payload does not decrypt with the volume key".to_string())?;
            postcard::from_bytes(&plain)
                .map(Some)
                .map_err(|e| format!("undecodable fs op: {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The content every `Write` of every shared volume kept in `repo` refers to, superseded
/// versions included: what `dfs gc` must not reclaim (the own volume's namespace does not
/// know these chunks). Keeping every version is the safe side until shared volumes have a
/// retention policy.
pub fn referenced_content(repo: &Arc<Repo>) -> Result<Vec<BlobRef>> {
    let log = dfs_node::ops::OpLog::new(repo.clone());
    let volumes = dfs_node::volume::records_in(repo.meta())
        .map_err(|e| FsError::Corrupt(format!("reading the volume table: {e}")))?;
    let mut out = Vec::new();
    for (volume, record) in volumes {
        let key = OpKey::of_volume(&record.secret);
        let mut after = None;
        loop {
            let page = log
                .scan(&volume, after.as_ref(), 1024)
                .map_err(|e| FsError::Corrupt(format!("reading the log of {volume}: {e}")))?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for op in &page {
                let Ok(Some(VolumeOp::Write { content, .. })) = decode_op(&key, op) else {
                    continue;
                };
                let c: ContentRef = postcard::from_bytes(&content).map_err(|e| {
                    FsError::Corrupt(format!("content reference of write {}: {e}", op.id))
                })?;
                out.push(c.blob);
            }
        }
    }
    Ok(out)
}

/// For each author, the longest run of sequence numbers 1..=n this mount has taken in: what a
/// delete says its author had seen.
#[derive(Debug, Default)]
struct Seen(BTreeMap<AuthorId, (u64, BTreeSet<u64>)>);

impl Seen {
    fn mark(&mut self, author: AuthorId, seq: u64) {
        let (prefix, above) = self.0.entry(author).or_default();
        if seq <= *prefix {
            return;
        }
        above.insert(seq);
        while above.remove(&(*prefix + 1)) {
            *prefix += 1;
        }
    }

    fn vector(&self) -> VersionVector<AuthorId> {
        self.0
            .iter()
            .filter(|(_, (prefix, _))| *prefix > 0)
            .map(|(a, (prefix, _))| (*a, *prefix))
            .collect()
    }
}

struct State {
    vol: VolumeState<OpId, AuthorId>,
    seen: Seen,
    inos: HashMap<NodeId, Ino>,
    nodes: HashMap<Ino, NodeId>,
    next_ino: Ino,
    /// Directory listings, computed when asked and dropped when their directory changes.
    listings: HashMap<NodeId, Arc<Vec<Entry>>>,
    /// Per directory, the names handed to the kernel (by lookup, create, rename, readdir) and
    /// the node each named then: the entries it may cache, checked on every remote change.
    exposed: HashMap<NodeId, HashMap<Vec<u8>, NodeId>>,
    /// Files removed while open: what `fstat` on their handles still shows.
    ghosts: HashMap<Ino, Inode>,
}

impl State {
    fn ino_of(&mut self, node: NodeId) -> Ino {
        if node == NodeId::ROOT {
            return ROOT;
        }
        if let Some(ino) = self.inos.get(&node) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(node, ino);
        self.nodes.insert(ino, node);
        ino
    }

    fn node_of(&self, ino: Ino) -> Result<NodeId> {
        if ino == ROOT {
            return Ok(NodeId::ROOT);
        }
        self.nodes.get(&ino).copied().ok_or(FsError::NotFound)
    }

    fn listing(&mut self, dir: NodeId) -> Arc<Vec<Entry>> {
        if let Some(l) = self.listings.get(&dir) {
            return l.clone();
        }
        let l = Arc::new(self.vol.list(&dir));
        self.listings.insert(dir, l.clone());
        l
    }

    /// The entry `name` of `dir`, a visible directory.
    fn entry(&mut self, dir: NodeId, name: &[u8]) -> Result<Option<Entry>> {
        self.dir_attr(dir)?;
        Ok(self.vol.lookup(&dir, name))
    }

    /// The kernel now knows `name` in `dir` as `node`.
    fn expose(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        self.exposed
            .entry(dir)
            .or_default()
            .insert(name.to_vec(), node);
    }

    /// The kernel dropped `name` in `dir` (this mount removed or renamed it).
    fn unexpose(&mut self, dir: NodeId, name: &[u8]) {
        if let Some(names) = self.exposed.get_mut(&dir) {
            names.remove(name);
        }
    }

    /// Forget the listings of the directories a local op changed (the kernel learns of its own
    /// changes from the replies).
    fn forget(&mut self, change: &crdt::Change) {
        for dir in &change.dirs {
            self.listings.remove(dir);
        }
    }

    fn dir_attr(&self, dir: NodeId) -> Result<crdt::Attr> {
        let attr = self.vol.attr(&dir).ok_or(FsError::NotFound)?;
        if attr.kind != crdt::Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(attr)
    }

    /// After a remote change: drop the listings of its directories and say what the kernel
    /// must forget: every name it was given there that now names another node or nothing,
    /// and the changed directories and nodes it may hold.
    fn refresh(&mut self, change: &crdt::Change) -> Vec<Inval> {
        let mut out = Vec::new();
        for dir in &change.dirs {
            self.listings.remove(dir);
            let Some(mut names) = self.exposed.remove(dir) else {
                continue;
            };
            let parent = self.ino_of(*dir);
            names.retain(|name, node| {
                let now = self.vol.lookup(dir, name).map(|e| e.node);
                if now == Some(*node) {
                    return true;
                }
                out.push(Inval::Entry {
                    parent,
                    name: name.clone(),
                });
                false
            });
            if !names.is_empty() {
                self.exposed.insert(*dir, names);
            }
        }
        for dir in &change.dirs {
            if let Some(ino) = self
                .inos
                .get(dir)
                .copied()
                .or((*dir == NodeId::ROOT).then_some(ROOT))
            {
                out.push(Inval::Inode(ino));
            }
        }
        for node in &change.nodes {
            if let Some(ino) = self.inos.get(node) {
                out.push(Inval::Inode(*ino));
            }
        }
        out
    }
}

fn to_time(t: crdt::Time) -> Time {
    Time {
        secs: t.secs,
        nsec: t.nanos,
    }
}

fn from_time(t: Time) -> crdt::Time {
    crdt::Time {
        secs: t.secs,
        nanos: t.nsec,
    }
}

fn to_kind(k: crdt::Kind) -> Kind {
    match k {
        crdt::Kind::File => Kind::File,
        crdt::Kind::Dir => Kind::Dir,
        crdt::Kind::Symlink => Kind::Symlink,
    }
}

fn encode_base(ts: &OpId) -> Vec<u8> {
    postcard::to_stdvec(ts).unwrap_or_default()
}

fn decode_base(base: &Base) -> Option<OpId> {
    base.as_deref().and_then(|b| postcard::from_bytes(b).ok())
}

struct Inner {
    hub: Arc<OpsHub>,
    volume: VolumeId,
    key: OpKey,
    publish: Box<dyn Fn(SignedOp) + Send + Sync>,
    chunk_size: u32,
    /// Who mounted: shown as the owner of the volume's root.
    owner: Caller,
    state: Mutex<State>,
    /// Local ops appended but not yet synced, so not yet published ([`Inner::publish_ready`]).
    outbox: Mutex<Vec<SignedOp>>,
    outbox_ready: Condvar,
    /// Set (under the outbox lock) by [`SharedNamespace::close`]: the publisher empties the
    /// outbox and ends; `stop_following` ends the follower.
    closing: AtomicBool,
    stop_following: tokio::sync::Notify,
    /// The publisher and follower threads, joined by [`SharedNamespace::close`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Inner {
    /// Make the ops in the outbox durable (one fsync for all of them) and publish them.
    fn publish_ready(&self) -> Result<()> {
        let ops = std::mem::take(&mut *lock(&self.outbox));
        if ops.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.hub.sync() {
            // Kept for the next try: nothing leaves this peer before it is durable here.
            let mut outbox = lock(&self.outbox);
            let newer = std::mem::replace(&mut *outbox, ops);
            outbox.extend(newer);
            return Err(FsError::Meta(e));
        }
        for op in ops {
            (self.publish)(op);
        }
        Ok(())
    }

    /// The publisher thread: group commit of local ops, then gossip.
    /// Sync and publish what the outbox holds, as it fills, until the namespace closes (with
    /// an empty outbox).
    fn publish_until_closed(&self) {
        loop {
            {
                let mut outbox = lock(&self.outbox);
                while outbox.is_empty() && !self.closing.load(Ordering::SeqCst) {
                    outbox = self
                        .outbox_ready
                        .wait(outbox)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if outbox.is_empty() {
                    return;
                }
            }
            if let Err(e) = self.publish_ready() {
                if self.closing.load(Ordering::SeqCst) {
                    tracing::error!(error = %e, "cannot sync the volume's op log while closing: its last ops are in the log, and go out when the volume is mounted again");
                    return;
                }
                tracing::warn!(error = %e, "cannot sync the volume's op log; retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The namespace of one shared volume, for one mount. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct SharedNamespace {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedNamespace")
            .field("volume", &self.inner.volume)
            .finish_non_exhaustive()
    }
}

impl SharedNamespace {
    /// The namespace of `volume` (whose secret is `secret`) from the ops `hub` holds; local
    /// ops are handed to `publish` (gossip) once appended.
    pub fn open(
        hub: Arc<OpsHub>,
        volume: VolumeId,
        secret: &[u8; 32],
        chunk_size: u32,
        owner: Caller,
        publish: Box<dyn Fn(SignedOp) + Send + Sync>,
    ) -> Result<Self> {
        let ns = SharedNamespace {
            inner: Arc::new(Inner {
                hub,
                volume,
                key: OpKey::of_volume(secret),
                publish,
                chunk_size,
                owner,
                state: Mutex::new(State {
                    vol: VolumeState::new(),
                    seen: Seen::default(),
                    inos: HashMap::new(),
                    nodes: HashMap::new(),
                    next_ino: ROOT + 1,
                    listings: HashMap::new(),
                    exposed: HashMap::new(),
                    ghosts: HashMap::new(),
                }),
                outbox: Mutex::new(Vec::new()),
                outbox_ready: Condvar::new(),
                closing: AtomicBool::new(false),
                stop_following: tokio::sync::Notify::new(),
                threads: Mutex::new(Vec::new()),
            }),
        };
        let inner = ns.inner.clone();
        let publisher = std::thread::Builder::new()
            .name("dfs-volume-publish".into())
            .spawn(move || inner.publish_until_closed())
            .map_err(|e| FsError::Corrupt(format!("cannot start the publisher thread: {e}")))?;
        lock(&ns.inner.threads).push(publisher);
        let taken = ns.rescan()?;
        tracing::info!(%volume, ops = taken, "shared volume state rebuilt from its log");
        Ok(ns)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Apply every op of the log (again: applying is idempotent). Returns how many were read.
    fn rescan(&self) -> Result<usize> {
        let mut after = None;
        let mut count = 0;
        loop {
            let page = self
                .inner
                .hub
                .oplog()
                .scan(&self.inner.volume, after.as_ref(), 1024)
                .map_err(|e| FsError::Corrupt(format!("reading the volume's op log: {e}")))?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            count += page.len();
            let mut st = self.state();
            for op in &page {
                self.take_locked(&mut st, op);
            }
        }
        Ok(count)
    }

    /// Apply one op from the log under the state lock; returns what the kernel must forget.
    fn take_locked(&self, st: &mut State, op: &SignedOp) -> Vec<Inval> {
        st.seen.mark(op.id.author, op.seq);
        let fs_op = match decode_op(&self.inner.key, op) {
            Ok(Some(fs_op)) => fs_op,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(op = %op.id, error = %e, "op of the shared volume ignored");
                return Vec::new();
            }
        };
        let stamp = Stamp {
            ts: op.id,
            author: op.id.author,
            seq: op.seq,
        };
        let node = fs_op.node();
        match st.vol.apply(stamp, fs_op) {
            Ok(change) if change.is_empty() => Vec::new(),
            Ok(change) => {
                let invals = st.refresh(&change);
                tracing::debug!(op = %op.id, %node, ino = ?st.inos.get(&node), ?invals, "op applied");
                invals
            }
            Err(e) => {
                tracing::warn!(op = %op.id, error = %e, "op of the shared volume refused");
                Vec::new()
            }
        }
    }

    /// Apply ops as the peer takes them in, until the namespace closes or the peer stops,
    /// handing `invalidate` what the kernel must forget, a batch at a time (every op already
    /// waiting is applied first; called outside the state lock: the kernel may call back into
    /// the mount while it invalidates). Runs on a thread of its own, which
    /// [`SharedNamespace::close`] ends and joins.
    pub fn follow(&self, invalidate: impl Fn(Vec<Inval>) + Send + 'static) -> Result<()> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut rx = self.inner.hub.follow(&self.inner.volume);
        let ns = self.clone();
        // Ops appended between the rebuild and the subscription above.
        if let Err(e) = ns.rescan() {
            tracing::warn!(error = %e, "cannot read the volume's op log");
        }
        // Waits on the op stream or the stop, whichever comes first: a runtime with no driver
        // (neither needs one) and no thread of its own.
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| FsError::Corrupt(format!("cannot start the volume follower: {e}")))?;
        let follower = std::thread::Builder::new()
            .name("dfs-volume".into())
            .spawn(move || loop {
                // Every op waiting is applied under one lock, so no request sees the moment
                // between ops that arrived together (a rename over a file is a delete and a
                // move, committed and published together).
                let mut ops = Vec::new();
                let mut lagged = false;
                let next = waiter.block_on(async {
                    tokio::select! {
                        biased;
                        _ = ns.inner.stop_following.notified() => None,
                        op = rx.recv() => Some(op),
                    }
                });
                let Some(next) = next else { return };
                match next {
                    Ok(op) => ops.push(op),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "volume stream lagged: reading the log again");
                        lagged = true;
                    }
                    Err(RecvError::Closed) => return,
                }
                while ops.len() < BATCH {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(TryRecvError::Lagged(_)) => lagged = true,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => return,
                    }
                }
                let mut invals = Vec::new();
                {
                    let mut st = ns.state();
                    for op in &ops {
                        invals.extend(ns.take_locked(&mut st, op));
                    }
                }
                if lagged {
                    invals.extend(ns.rescan_invalidating());
                }
                if !invals.is_empty() {
                    invals.dedup();
                    invalidate(invals);
                }
            })
            .map_err(|e| FsError::Corrupt(format!("cannot start the follower thread: {e}")))?;
        lock(&self.inner.threads).push(follower);
        Ok(())
    }

    /// End the publisher (once it has synced and published every op made so far) and the
    /// follower, and wait for both; a mount calls it after its last request. Ops made after
    /// this are appended to the log and published by the next open.
    pub fn close(&self) {
        {
            let _outbox = lock(&self.inner.outbox);
            self.inner.closing.store(true, Ordering::SeqCst);
        }
        self.inner.outbox_ready.notify_all();
        self.inner.stop_following.notify_one();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a thread of the shared volume panicked");
            }
        }
    }

    fn rescan_invalidating(&self) -> Vec<Inval> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = match self
                .inner
                .hub
                .oplog()
                .scan(&self.inner.volume, after.as_ref(), 1024)
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the volume's op log");
                    return out;
                }
            };
            let Some(last) = page.last() else {
                return out;
            };
            after = Some(last.id);
            let mut st = self.state();
            for op in &page {
                out.extend(self.take_locked(&mut st, op));
            }
        }
    }

    /// Sign, append, gossip and apply a local op. Called with the state lock held, after the
    /// checks the op depends on.
    fn commit(&self, st: &mut State, op: Op) -> Result<OpId> {
        let plain = postcard::to_stdvec(&op)
            .map_err(|e| FsError::Corrupt(format!("encoding an op: {e}")))?;
        let sealed = self.inner.key.seal(&self.inner.volume.0, &plain);
        // Appended without waiting for the disk, like the own volume's metadata: the
        // publisher thread syncs and gossips it within moments, and fsync(2) syncs at once.
        let signed = self
            .inner
            .hub
            .commit_deferred(&self.inner.volume, data_payload(&sealed))
            .map_err(|e| FsError::Corrupt(format!("appending to the volume's op log: {e}")))?;
        st.seen.mark(signed.id.author, signed.seq);
        let stamp = Stamp {
            ts: signed.id,
            author: signed.id.author,
            seq: signed.seq,
        };
        let id = signed.id;
        lock(&self.inner.outbox).push(signed);
        self.inner.outbox_ready.notify_one();
        match st.vol.apply(stamp, op) {
            Ok(change) => {
                st.forget(&change);
                Ok(id)
            }
            Err(e) => Err(FsError::Corrupt(format!("own op refused: {e}"))),
        }
    }

    fn inode_locked(&self, st: &mut State, ino: Ino) -> Result<Inode> {
        if let Some(ghost) = st.ghosts.get(&ino) {
            return Ok(ghost.clone());
        }
        let node = st.node_of(ino)?;
        self.inode_of(st, node)
    }

    fn inode_of(&self, st: &mut State, node: NodeId) -> Result<Inode> {
        let attr = st.vol.attr(&node).ok_or(FsError::NotFound)?;
        let kind = to_kind(attr.kind);
        let parent_node = st.vol.parent(&node).unwrap_or(NodeId::ROOT);
        let parent = st.ino_of(parent_node);
        let name = st.vol.name_of(&node).unwrap_or_default();
        // A directory reports one link and size 0, as btrfs does: counting its entries would
        // cost a listing per getattr, and the kernel asks for the attributes of the directory
        // after every change in it (measured: a fifth of the time of a create in a directory
        // of 1,000 files). `find` reads nlink 1 as "unknown" and does not rely on it.
        let (nlink, size) = match kind {
            Kind::Dir => (1, 0),
            _ => (1, attr.size),
        };
        let (content, chunk_size, base) = match st.vol.content(&node) {
            Some(v) => {
                let c: ContentRef = postcard::from_bytes(&v.content).map_err(|e| {
                    FsError::Corrupt(format!("content reference of write {}: {e}", v.ts))
                })?;
                (Some(c.blob), c.chunk_size, Some(encode_base(&v.ts)))
            }
            None => (None, self.inner.chunk_size, None),
        };
        let (uid, gid) = if node == NodeId::ROOT {
            (self.inner.owner.uid, self.inner.owner.gid)
        } else {
            (attr.uid, attr.gid)
        };
        let mtime = to_time(attr.mtime);
        Ok(Inode {
            kind,
            perm: (attr.mode & 0o7777) as u16,
            uid,
            gid,
            nlink,
            size,
            atime: to_time(attr.atime),
            mtime,
            ctime: mtime,
            crtime: mtime,
            rdev: 0,
            parent,
            name,
            content,
            chunk_size,
            target: attr.target.unwrap_or_default(),
            base,
        })
    }

    /// The entry `name` of directory `parent`, which must exist.
    fn existing(&self, st: &mut State, parent: Ino, name: &[u8]) -> Result<Entry> {
        let dir = st.node_of(parent)?;
        st.entry(dir, name)?.ok_or(FsError::NotFound)
    }

    /// Whether `ancestor` is `node` or one of its ancestors.
    fn is_ancestor(st: &State, ancestor: NodeId, mut node: NodeId) -> bool {
        for _ in 0..100_000 {
            if node == ancestor {
                return true;
            }
            if node == NodeId::ROOT {
                return false;
            }
            match st.vol.parent(&node) {
                Some(p) => node = p,
                None => return false,
            }
        }
        true
    }

    /// Stop showing a conflict copy (the user removed it).
    fn dismiss(&self, st: &mut State, copy: &Entry) -> Result<()> {
        let Some(file) = copy.copy_of else {
            return Err(FsError::Invalid("not a conflict copy"));
        };
        let ts = st
            .vol
            .content(&copy.node)
            .map(|v| v.ts)
            .ok_or(FsError::NotFound)?;
        self.commit(
            st,
            VolumeOp::Dismiss {
                node: file,
                write: ts,
            },
        )?;
        Ok(())
    }

    fn delete(&self, st: &mut State, node: NodeId) -> Result<()> {
        let seen = st.seen.vector();
        self.commit(st, VolumeOp::Delete { node, seen })?;
        Ok(())
    }
}

impl Namespace for SharedNamespace {
    fn inode(&self, _repo: &Repo, ino: Ino) -> Result<Inode> {
        let mut st = self.state();
        self.inode_locked(&mut st, ino)
    }

    fn lookup(&self, _repo: &Repo, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let mut st = self.state();
        let dir = st.node_of(parent)?;
        let node = match name {
            b"." => {
                st.dir_attr(dir)?;
                dir
            }
            b".." => {
                st.dir_attr(dir)?;
                st.vol.parent(&dir).ok_or(FsError::NotFound)?
            }
            _ => {
                let node = st.entry(dir, name)?.ok_or(FsError::NotFound)?.node;
                st.expose(dir, name, node);
                node
            }
        };
        let ino = st.ino_of(node);
        Ok((ino, self.inode_of(&mut st, node)?))
    }

    fn list(&self, _repo: &Repo, dir: Ino) -> Result<Vec<DirEntry>> {
        let mut st = self.state();
        let node = st.node_of(dir)?;
        st.dir_attr(node)?;
        let listing = st.listing(node);
        // readdirplus hands the kernel an entry for each.
        for e in listing.iter() {
            st.expose(node, &e.name, e.node);
        }
        Ok(listing
            .iter()
            .map(|e| DirEntry {
                name: e.name.clone(),
                ino: st.ino_of(e.node),
                kind: to_kind(e.kind),
            })
            .collect())
    }

    fn create(&self, _repo: &Repo, entry: &NewEntry<'_>) -> Result<(Ino, Inode)> {
        let (name, kind, caller) = (entry.name, entry.kind, entry.caller);
        check_name(name)?;
        let crdt_kind = match kind {
            Kind::File => crdt::Kind::File,
            Kind::Dir => crdt::Kind::Dir,
            Kind::Symlink => crdt::Kind::Symlink,
            // The merged state has no device nodes, FIFOs or sockets.
            _ => return Err(FsError::NotPermitted),
        };
        let mut st = self.state();
        let dir = st.node_of(entry.parent)?;
        let dir_attr = st.dir_attr(dir)?;
        if st.entry(dir, name)?.is_some() {
            return Err(FsError::Exists);
        }
        // A new entry in a setgid directory inherits its group (and subdirectories the bit).
        let setgid_dir = dir_attr.mode & 0o2000 != 0;
        let gid = if setgid_dir { dir_attr.gid } else { caller.gid };
        let mode = if kind == Kind::Dir && setgid_dir {
            entry.perm | 0o2000
        } else {
            entry.perm
        };
        let node = NodeId(rand::random());
        self.commit(
            &mut st,
            VolumeOp::Create {
                node,
                parent: dir,
                name: name.to_vec(),
                kind: crdt_kind,
                mode: u32::from(mode),
                uid: caller.uid,
                gid,
                mtime: from_time(Time::now()),
                target: (kind == Kind::Symlink).then(|| entry.target.to_vec()),
            },
        )?;
        st.expose(dir, name, node);
        let ino = st.ino_of(node);
        Ok((ino, self.inode_of(&mut st, node)?))
    }

    fn link(&self, _repo: &Repo, _ino: Ino, _newparent: Ino, _newname: &[u8]) -> Result<Inode> {
        // A node of the shared tree has exactly one parent.
        Err(FsError::NotPermitted)
    }

    fn remove(
        &self,
        _repo: &Repo,
        parent: Ino,
        name: &[u8],
        dir: bool,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<(Ino, bool)> {
        check_remove_name(name)?;
        let mut st = self.state();
        let entry = self.existing(&mut st, parent, name)?;
        let ino = st.ino_of(entry.node);
        check_remove_kind(dir, entry.kind == crdt::Kind::Dir, || {
            Ok(st.listing(entry.node).is_empty())
        })?;
        let mut inode = self.inode_of(&mut st, entry.node)?;
        if entry.copy_of.is_some() {
            self.dismiss(&mut st, &entry)?;
        } else {
            self.delete(&mut st, entry.node)?;
        }
        let dir = st.node_of(parent)?;
        st.unexpose(dir, name);
        if is_open(ino) {
            inode.nlink = 0;
            st.ghosts.insert(ino, inode);
        }
        Ok((ino, true))
    }

    fn rename(
        &self,
        _repo: &Repo,
        rename: &Rename<'_>,
        _is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<Option<Ino>> {
        rename.check()?;
        let (parent, name) = (rename.parent, rename.name);
        let (newparent, newname) = (rename.newparent, rename.newname);
        let mut st = self.state();
        let src = self.existing(&mut st, parent, name)?;
        if src.copy_of.is_some() {
            return Err(FsError::Invalid(
                "a conflict copy cannot be renamed: copy it, then remove it",
            ));
        }
        let to_dir = st.node_of(newparent)?;
        let target = st.entry(to_dir, newname)?;
        if src.kind == crdt::Kind::Dir && Self::is_ancestor(&st, src.node, to_dir) {
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        let from_dir = st.node_of(parent)?;
        if rename.exchange {
            let Some(target) = target else {
                return Err(FsError::NotFound);
            };
            if target.copy_of.is_some() {
                return Err(FsError::Invalid("a conflict copy cannot be renamed"));
            }
            if target.kind == crdt::Kind::Dir && Self::is_ancestor(&st, target.node, from_dir) {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            self.commit(
                &mut st,
                VolumeOp::Move {
                    node: src.node,
                    parent: to_dir,
                    name: newname.to_vec(),
                },
            )?;
            self.commit(
                &mut st,
                VolumeOp::Move {
                    node: target.node,
                    parent: from_dir,
                    name: name.to_vec(),
                },
            )?;
            st.expose(to_dir, newname, src.node);
            st.expose(from_dir, name, target.node);
            return Ok(None);
        }
        let mut replaced = None;
        if let Some(target) = target {
            if rename.noreplace {
                return Err(FsError::Exists);
            }
            if target.node == src.node {
                return Ok(None);
            }
            // The target goes as if removed by the kind of the moved entry.
            check_remove_kind(
                src.kind == crdt::Kind::Dir,
                target.kind == crdt::Kind::Dir,
                || Ok(st.listing(target.node).is_empty()),
            )?;
            if target.copy_of.is_some() {
                self.dismiss(&mut st, &target)?;
            } else {
                self.delete(&mut st, target.node)?;
            }
            replaced = Some(st.ino_of(target.node));
        }
        self.commit(
            &mut st,
            VolumeOp::Move {
                node: src.node,
                parent: to_dir,
                name: newname.to_vec(),
            },
        )?;
        st.unexpose(from_dir, name);
        st.expose(to_dir, newname, src.node);
        Ok(replaced)
    }

    fn reap_if_unlinked(&self, _repo: &Repo, ino: Ino) -> Result<()> {
        self.state().ghosts.remove(&ino);
        Ok(())
    }

    fn commit_content(
        &self,
        _repo: &Repo,
        ino: Ino,
        content: Option<BlobRef>,
        size: u64,
        mtime: Option<Time>,
        _version: bool,
        base: &mut Base,
    ) -> Result<()> {
        let mut st = self.state();
        if let Some(ghost) = st.ghosts.get_mut(&ino) {
            // Removed while open: the delete stands, nothing more goes to the log.
            if let Some(c) = content {
                ghost.content = Some(c);
            }
            ghost.size = size;
            if let Some(t) = mtime {
                ghost.mtime = t;
            }
            return Ok(());
        }
        let node = st.node_of(ino)?;
        let attr = st.vol.attr(&node).ok_or(FsError::NotFound)?;
        if attr.read_only {
            return Err(FsError::NotPermitted);
        }
        match content {
            Some(blob) => {
                let chunk_size = self.inode_of(&mut st, node)?.chunk_size;
                let content = postcard::to_stdvec(&ContentRef { blob, chunk_size })
                    .map_err(|e| FsError::Corrupt(format!("encoding a content reference: {e}")))?;
                let id = self.commit(
                    &mut st,
                    VolumeOp::Write {
                        node,
                        content,
                        size,
                        mtime: from_time(mtime.unwrap_or_else(Time::now)),
                        base: decode_base(base),
                    },
                )?;
                *base = Some(encode_base(&id));
            }
            None => {
                if let Some(t) = mtime {
                    self.commit(
                        &mut st,
                        VolumeOp::SetAttr {
                            node,
                            mode: None,
                            uid: None,
                            gid: None,
                            atime: None,
                            mtime: Some(from_time(t)),
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    fn versions_generation(&self) -> u64 {
        0
    }

    fn update(
        &self,
        _repo: &Repo,
        ino: Ino,
        f: &mut dyn FnMut(&mut Inode) -> Result<()>,
    ) -> Result<Inode> {
        let mut st = self.state();
        if let Some(ghost) = st.ghosts.get_mut(&ino) {
            f(ghost)?;
            return Ok(ghost.clone());
        }
        let node = st.node_of(ino)?;
        let old = self.inode_of(&mut st, node)?;
        if st.vol.attr(&node).is_some_and(|a| a.read_only) {
            return Err(FsError::NotPermitted);
        }
        let mut new = old.clone();
        f(&mut new)?;
        let changed = |a: bool| a.then_some(());
        let op = VolumeOp::SetAttr {
            node,
            mode: changed(new.perm != old.perm).map(|_| u32::from(new.perm)),
            uid: changed(new.uid != old.uid).map(|_| new.uid),
            gid: changed(new.gid != old.gid).map(|_| new.gid),
            atime: changed(new.atime != old.atime).map(|_| from_time(new.atime)),
            mtime: changed(new.mtime != old.mtime).map(|_| from_time(new.mtime)),
        };
        if matches!(
            op,
            VolumeOp::SetAttr {
                mode: None,
                uid: None,
                gid: None,
                atime: None,
                mtime: None,
                ..
            }
        ) {
            return Ok(old);
        }
        self.commit(&mut st, op)?;
        self.inode_of(&mut st, node)
    }

    fn get_xattr(&self, _repo: &Repo, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let mut st = self.state();
        self.inode_locked(&mut st, ino)?;
        let node = st.node_of(ino)?;
        if name == ID_XATTR {
            return Ok(format!("{} {node}", self.inner.volume).into_bytes());
        }
        st.vol.xattrs(&node).remove(name).ok_or(FsError::NoAttr)
    }

    fn set_xattr(
        &self,
        _repo: &Repo,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()> {
        if name.is_empty() || name.len() > NAME_MAX || value.len() > 64 * 1024 {
            return Err(FsError::Range);
        }
        if name == ID_XATTR {
            return Err(FsError::NotPermitted);
        }
        let mut st = self.state();
        let node = st.node_of(ino)?;
        self.inode_of(&mut st, node)?;
        let exists = st.vol.xattrs(&node).contains_key(name);
        if create && exists {
            return Err(FsError::Exists);
        }
        if replace && !exists {
            return Err(FsError::NoAttr);
        }
        self.commit(
            &mut st,
            VolumeOp::SetXattr {
                node,
                name: name.to_vec(),
                value: Some(value.to_vec()),
            },
        )?;
        Ok(())
    }

    fn list_xattrs(&self, _repo: &Repo, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let mut st = self.state();
        self.inode_locked(&mut st, ino)?;
        let node = st.node_of(ino)?;
        Ok(st.vol.xattrs(&node).into_keys().collect())
    }

    fn remove_xattr(&self, _repo: &Repo, ino: Ino, name: &[u8]) -> Result<()> {
        if name == ID_XATTR {
            return Err(FsError::NotPermitted);
        }
        let mut st = self.state();
        let node = st.node_of(ino)?;
        self.inode_of(&mut st, node)?;
        if !st.vol.xattrs(&node).contains_key(name) {
            return Err(FsError::NoAttr);
        }
        self.commit(
            &mut st,
            VolumeOp::SetXattr {
                node,
                name: name.to_vec(),
                value: None,
            },
        )?;
        Ok(())
    }

    fn path_of(&self, _repo: &Repo, inode: &Inode) -> Vec<u8> {
        let mut st = self.state();
        crate::model::path_through(inode, |dir| self.inode_locked(&mut st, dir))
    }

    fn sync(&self, _repo: &Repo) -> Result<()> {
        self.inner.publish_ready()
    }

    fn cache_ttl(&self) -> std::time::Duration {
        // Remote changes invalidate exactly what they touch (see `follow`).
        std::time::Duration::from_secs(10)
    }
}
