//! The namespace of a shared volume: the merged state ([`VolumeState`]) of the volume's signed
//! op log, served to a mount.
//!
//! - **Reads** answer from the state, held in memory and rebuilt from the log when the mount
//!   starts (the log in RocksDB is the durable copy).
//! - **Local changes** become [`VolumeOp`]s: encoded, sealed under the volume's current key
//!   epoch ([`Keyring`]),
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
//!
//! Here: the namespace's types and its life (open, follow, close, commit); the mount-side
//! state beside the merged one in [`state`], publishing own ops in [`publish`], the calls a
//! mount makes in [`namespace`].

mod namespace;
mod publish;
mod state;

use state::{encode_base, to_kind, to_time};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use dfs_node::ops::{Access, AuthorId, OpId, OpsHub, Payload, Rejection, SignedOp, VolumeId};
use dfs_node::volume::Keyring;
use dfs_node::{BlobRef, Repo};
use serde::{Deserialize, Serialize};

use crate::crdt::volume::{Entry, Stamp, Timestamp, VolumeOp, VolumeState};
use crate::crdt::NodeId;
use crate::model::{Caller, FsError, Ino, Inode, Kind, Result, Time, ROOT};

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
pub fn decode_op(keys: &Keyring, op: &SignedOp) -> std::result::Result<Option<Op>, String> {
    match Payload::parse(&op.payload) {
        Ok(Payload::Control(_)) => Ok(None),
        Ok(Payload::Data(_) | Payload::EpochData { .. }) => {
            let plain = keys.open(&op.payload).map_err(|e| e.to_string())?;
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
        // The epochs this peer wrote under are in its record (it made them, or learned them
        // before writing); an op it cannot open is one it did not write, whose chunks are
        // not its own to keep.
        let keys = Keyring::from_held(volume, &record.secret, &record.epochs);
        let mut after = None;
        loop {
            let page = log
                .scan(&volume, after.as_ref(), 1024)
                .map_err(|e| FsError::Corrupt(format!("reading the log of {volume}: {e}")))?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for op in &page {
                let Ok(Some(VolumeOp::Write { content, .. })) = decode_op(&keys, op) else {
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

struct State {
    vol: VolumeState<OpId, AuthorId>,
    /// The volume's keys held here, taken again with every role change (a removal begins a
    /// key epoch).
    keys: Arc<Keyring>,
    /// The roles by which remote data ops are applied or rejected ([`dfs_node::ops::Access`]),
    /// taken again from the log with every role-deciding op.
    access: Arc<Access>,
    /// A role decision arrived, or a join that may let in ops rejected before: the state must
    /// be computed again from the log ([`SharedNamespace::rematerialise_locked`]).
    roles_changed: bool,
    /// Some data op was rejected because its author was no member (yet).
    rejected_strangers: bool,
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

struct Inner {
    hub: Arc<OpsHub>,
    volume: VolumeId,
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
    /// The namespace of `volume` from the ops `hub` holds; local ops are handed to `publish`
    /// (gossip) once appended.
    pub fn open(
        hub: Arc<OpsHub>,
        volume: VolumeId,
        chunk_size: u32,
        owner: Caller,
        publish: Box<dyn Fn(SignedOp) + Send + Sync>,
    ) -> Result<Self> {
        let keys = dfs_node::volume::keyring(&hub, &volume)
            .map_err(|e| FsError::Corrupt(format!("reading the volume's keys: {e}")))?;
        let ns = SharedNamespace {
            inner: Arc::new(Inner {
                hub,
                volume,
                publish,
                chunk_size,
                owner,
                state: Mutex::new(State {
                    vol: VolumeState::new(),
                    keys: Arc::new(keys),
                    access: Arc::default(),
                    roles_changed: false,
                    rejected_strangers: false,
                    seen: Seen::default(),
                    inos: HashMap::new(),
                    nodes: HashMap::new(),
                    next_ino: ROOT.next(),
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

    /// The volume's roles as the ops held decide them now.
    fn access(&self) -> Arc<Access> {
        match self.inner.hub.oplog().access(&self.inner.volume) {
            Ok(access) => access,
            Err(e) => {
                // Without roles, no remote data op can be judged: none is applied until the
                // next role-deciding op reads them again.
                tracing::warn!(error = %e, "cannot read the volume's roles");
                Arc::default()
            }
        }
    }

    /// Apply every op of the log (again: applying is idempotent). Returns how many were read.
    fn rescan(&self) -> Result<usize> {
        let access = self.access();
        self.state().access = access.clone();
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
        // Every op was judged by the roles of the whole log, unless one that decides roles
        // came in during the scan.
        let mut st = self.state();
        if Arc::ptr_eq(&st.access, &access) {
            st.roles_changed = false;
        }
        Ok(count)
    }

    /// Apply one op from the log under the state lock; returns what the kernel must forget.
    fn take_locked(&self, st: &mut State, op: &SignedOp) -> Vec<Inval> {
        st.seen.mark(op.id.author, op.seq);
        let fs_op = match decode_op(&st.keys, op) {
            Ok(Some(fs_op)) => fs_op,
            Ok(None) => {
                self.take_control(st, op);
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(op = %op.id, error = %e, "op of the shared volume ignored");
                return Vec::new();
            }
        };
        if let Err(why) = st.access.verdict(op) {
            tracing::info!(op = %op.id, principal = %op.principal(), %why, "op of the shared volume rejected");
            st.rejected_strangers |= why == Rejection::NotMember;
            return Vec::new();
        }
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

    /// A control op: one that decides roles makes the roles be read again; a role change, or
    /// a join after data ops were rejected as a stranger's, makes the state be computed again.
    fn take_control(&self, st: &mut State, op: &SignedOp) {
        use dfs_node::ops::Control;
        let Ok(Payload::Control(control)) = Payload::parse(&op.payload) else {
            return;
        };
        match control {
            Control::Profile { .. } => {}
            // A revocation may void a join that arrived before it, and its author's ops.
            Control::SetRole { .. } | Control::Revoke { .. } => {
                st.access = self.access();
                st.roles_changed = true;
                match dfs_node::volume::keyring(&self.inner.hub, &self.inner.volume) {
                    Ok(keys) => st.keys = Arc::new(keys),
                    Err(e) => tracing::warn!(error = %e, "cannot read the volume's keys"),
                }
            }
            Control::Genesis { .. }
            | Control::Invite { .. }
            | Control::InviteWith { .. }
            | Control::Join { .. }
            | Control::JoinAttested { .. }
            | Control::RequireIssuer { .. } => {
                st.access = self.access();
                st.roles_changed |= st.rejected_strangers;
            }
        }
    }

    /// Compute the state again from the whole log under the roles it decides now (a role
    /// decision may void ops applied before it arrived); returns what the kernel must forget:
    /// everything it was told.
    fn rematerialise_locked(&self, st: &mut State) -> Vec<Inval> {
        st.vol = VolumeState::new();
        st.seen = Seen::default();
        st.listings.clear();
        st.access = self.access();
        st.rejected_strangers = false;
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
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for op in &page {
                self.take_locked(st, op);
            }
        }
        st.roles_changed = false;
        tracing::info!(volume = %self.inner.volume, ops = st.vol.len(), "volume state computed again after a role change");
        let exposed: Vec<(NodeId, Vec<Vec<u8>>)> = st
            .exposed
            .drain()
            .map(|(dir, names)| (dir, names.into_keys().collect()))
            .collect();
        let mut out = Vec::new();
        for (dir, names) in exposed {
            let parent = st.ino_of(dir);
            out.extend(names.into_iter().map(|name| Inval::Entry { parent, name }));
        }
        out.push(Inval::Inode(ROOT));
        out.extend(st.nodes.keys().map(|ino| Inval::Inode(*ino)));
        out
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
                    if st.roles_changed {
                        invals = ns.rematerialise_locked(&mut st);
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
        let payload = st.keys.seal(&plain);
        // Appended without waiting for the disk, like the own volume's metadata: the
        // publisher thread syncs and gossips it within moments, and fsync(2) syncs at once.
        let hub = &self.inner.hub;
        let signed = hub
            .commit_deferred(
                &hub.acting(crate::acting::uid()),
                &self.inner.volume,
                payload,
            )
            .map_err(|e| {
                if e.rejection() == Some(dfs_node::ops::Rejection::Reader) {
                    FsError::ReadOnly(e.to_string())
                } else if e.is_refusal() {
                    tracing::warn!(error = %e, "op refused: log in as a member (`dfs login`)");
                    FsError::Refused(e.to_string())
                } else {
                    FsError::Corrupt(format!("appending to the volume's op log: {e}"))
                }
            })?;
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
