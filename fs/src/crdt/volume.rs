//! The metadata of one shared volume as a pure state machine: what every member's mount shows,
//! as a deterministic function of the *set* of operations received.
//!
//! Every change a member makes is one [`VolumeOp`] stamped with a [`Stamp`] (unique, totally
//! ordered timestamp `T`, author `A`, and the author's contiguous sequence number). The op log
//! layer verifies and stores them; each replica feeds every op it holds, in whatever order and
//! as often as the network delivers it, to [`VolumeState::apply`], and answers the mount's
//! questions with [`VolumeState::list`], [`VolumeState::lookup`], [`VolumeState::attr`],
//! [`VolumeState::content`], [`VolumeState::conflicts`] and [`VolumeState::xattrs`]. Each
//! `apply` returns a [`Change`] naming the directories and nodes whose answers may have changed,
//! so the FUSE layer can invalidate exactly those kernel cache entries.
//!
//! Nothing here does I/O, reads a clock or awaits. The state keeps every op (the undo/redo of the
//! tree and the delete rule below need them); bounding that with causal stability is future work.
//!
//! # Merge rules
//!
//! 1. **Namespace shape** is the tree-move CRDT ([`Tree`]`<T, NodeId, Vec<u8>>`, the entry name as
//!    edge metadata): `Create` is a move of a fresh node under its parent, `Move` (rename) a
//!    move, a *valid* `Delete` a move under [`NodeId::TRASH`]. Concurrent renames never make a
//!    cycle or lose a subtree; of two concurrent moves of one node the larger timestamp decides.
//!    A node is *visible* when its own `Create` has arrived and its parent chain reaches
//!    [`NodeId::ROOT`] through created directories only: an op that names a node whose create
//!    has not arrived yet is kept and takes effect when it does.
//! 2. **Names**: entries are never merged or dropped because of their names. Within one
//!    directory the entries sharing a name are ordered by the timestamp of the op that placed
//!    them (then node id); the oldest keeps the name, each other is shown as
//!    `"<name> (conflict <author> <short time>)"`, where `<author>` is the first 8 characters of
//!    the placing op's author's `Display` and `<short time>` its [`Timestamp::short_time`] (`/`
//!    and NUL replaced by `_`). Every name an entry really has is reserved first; a generated
//!    name that is taken gets `" (2)"`, `" (3)"`, ... appended, generated names being assigned in
//!    the order (candidate name, timestamp, node id). So no generated name ever hides a real one,
//!    and every replica computes the same names.
//! 3. **Content**: every `Write` names the write it replaced (`base`). The *heads* of a file are
//!    its writes that no other write of it names as base. The head with the largest timestamp is
//!    the file's content; every other head that has not been dismissed is shown next to the file
//!    as a read-only conflict copy named `"<shown name> (conflict <loser author> vs <winner
//!    author>)"` (author labels as above, same collision suffixes, assigned after the entries of
//!    rule 2), with id [`NodeId::conflict_copy`]`(node, losing ts)`. A later write based on the
//!    winner leaves the loser visible until a `Dismiss` names it (a `Dismiss` of the current
//!    winner has no effect while it wins). A write based on a loser supersedes that loser (it
//!    was merged by hand).
//! 4. **Delete against edit keeps the edit**: a `Delete { node, seen }` is *void* (has no effect
//!    at all) while the op set holds an op that `seen` does not cover (the deleter had not seen
//!    it) and that is a `Write` to a node of the deleted subtree, or a `Create`/`Move` whose new
//!    parent is in it. The subtree is taken statically, from the op set rather than from the
//!    tree (which depends on which deletes are void): every node that some `Create`/`Move`
//!    placed under `node`, transitively. That over-approximates the deleter's view (a node that
//!    was moved away still counts), which errs on the side of keeping data, and makes the rule
//!    monotone: more ops can only void a delete, never revive it. A newly arrived delete is
//!    checked once (O(subtree ops)). Any other op re-checks the still-valid deletes of its node's
//!    (or new parent's) static ancestors; when one becomes void the tree is rebuilt from the
//!    `Create`/`Move`/valid-`Delete` ops in timestamp order, O(n log n + n · depth) for n ops.
//!    That happens at most once per delete, and only when a delete and an edit race.
//!    Callers must not emit ops that target a node the author sees as deleted (the FUSE layer
//!    must not turn a write to an unlinked-but-open file into a `Write`): such an op is
//!    indistinguishable from a concurrent one and would void the delete.
//! 5. **Attributes and xattrs**: last writer wins per field by timestamp. `mode`, `uid`, `gid`,
//!    `atime` are set by `Create` and `SetAttr`; `mtime` also by `Write`; the size is the
//!    content's. The kind and symlink target are those of the oldest `Create` of the node.
//!    Each xattr name is its own register (`None` removes it).
//! 6. **Atomicity**: [`VolumeState::apply`] validates first and changes nothing when it returns
//!    an error; otherwise the whole op is applied before it returns.
//!
//! Generated names can be longer than the 255 bytes a kernel accepts; shortening them is the
//! FUSE layer's business. `list` and `lookup` compute the names afresh, O(entries + their
//! heads) per directory: the materialising layer is expected to cache listings and drop them
//! on [`Change`].
//!
//! # Change reporting
//!
//! Besides the op's own node (with its conflict copies and its parent before and after), the
//! only nodes whose place can change are the children of the tree ops at or after the op's
//! timestamp (the ones the tree undoes and redoes), or of every tree op on a rebuild. Their
//! edge and visibility are recorded before and compared after: a changed edge reports the old
//! and new parent, a visibility flip reports the node's whole subtree. That is complete: the
//! nearest such node on any node's path decides that node's visibility both before and after.
//!
//! Invalid ops, refused the same way by every replica: an op whose subject is a root, a
//! `Create`/`Move` under `TRASH` (deleting is `Delete`), sequence number 0, or an op with the
//! timestamp (or the author and sequence number) of a different op already held (equivocation).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::tree::{Move, Tree};

/// A node of a volume: a file, directory or symlink, stable across renames. Fresh ids are
/// random; the two roots are fixed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// The volume's root directory.
    pub const ROOT: NodeId = NodeId([0; 16]);
    /// Where deleted subtrees are kept; never visible.
    pub const TRASH: NodeId = NodeId([0xff; 16]);

    /// Whether this is `ROOT` or `TRASH`.
    pub fn is_root(&self) -> bool {
        *self == Self::ROOT || *self == Self::TRASH
    }

    /// The id of the virtual conflict copy showing the losing write `ts` of `node`: FNV-1a
    /// (128 bit) of a domain tag, the node and the postcard encoding of `ts`. The same on every
    /// replica.
    pub fn conflict_copy<T: Serialize>(node: NodeId, ts: &T) -> NodeId {
        const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
        const PRIME: u128 = 0x0000000001000000000000000000013b;
        let ts = postcard::to_stdvec(ts).unwrap_or_default();
        let mut h = OFFSET;
        for b in b"dfs conflict copy\0"
            .iter()
            .chain(node.0.iter())
            .chain(ts.iter())
        {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        NodeId(h.to_be_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The first four bytes in hex: enough to tell ids apart in logs.
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId(")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "..)")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a node id (32 hex digits): {input:?}")]
pub struct ParseNodeIdError {
    pub input: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, ParseNodeIdError> {
        let err = || ParseNodeIdError {
            input: s.to_owned(),
        };
        if s.len() != 32 || !s.is_ascii() {
            return Err(err());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(NodeId(out))
    }
}

/// An op timestamp: unique and totally ordered, consistent with causality (in the volume:
/// (hybrid logical clock, author key)).
pub trait Timestamp: Ord + Clone + Serialize {
    /// A short human-readable rendering for conflict names, such as `"1126-2227"`.
    fn short_time(&self) -> String;

    /// A timestamp no op has, below every other (for range lookups).
    fn least() -> Self;
}

/// Who made an op, when, and where it falls in the author's sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp<T, A> {
    /// Unique, totally ordered; the order every rule uses.
    pub ts: T,
    pub author: A,
    /// The author's per-volume sequence number: 1, 2, 3, ... without gaps.
    pub seq: u64,
}

/// For each author, the highest sequence number up to which an author has seen every op.
pub type VersionVector<A> = BTreeMap<A, u64>;

/// Whether op (`author`, `seq`) is covered by (was seen by whoever recorded) `vv`.
pub fn covers<A: Ord>(vv: &VersionVector<A>, author: &A, seq: u64) -> bool {
    vv.get(author).is_some_and(|s| *s >= seq)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// A point in time as the filesystem reports it: seconds and nanoseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// One change to a volume's metadata: the payload of a signed op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize, A: Serialize",
    deserialize = "T: Deserialize<'de>, A: Deserialize<'de> + Ord"
))]
pub enum VolumeOp<T, A> {
    /// A new node `node` (a fresh random id) named `name` in `parent`.
    Create {
        node: NodeId,
        parent: NodeId,
        name: Vec<u8>,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: Time,
        /// The target of a symlink.
        target: Option<Vec<u8>>,
    },
    /// Rename: `node` (with its subtree) is now `name` in `parent`.
    Move {
        node: NodeId,
        parent: NodeId,
        name: Vec<u8>,
    },
    /// Unlink or rmdir, by an author that had seen exactly the ops `seen` covers.
    Delete {
        node: NodeId,
        seen: VersionVector<A>,
    },
    /// A new version of a file's content.
    Write {
        node: NodeId,
        /// The encoded chunk-tree reference; opaque here.
        content: Vec<u8>,
        size: u64,
        mtime: Time,
        /// The timestamp of the write this one replaced; `None` for the first.
        base: Option<T>,
    },
    /// Change some attributes; `None` leaves a field alone.
    SetAttr {
        node: NodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<Time>,
        mtime: Option<Time>,
    },
    /// Set (`Some`) or remove (`None`) one extended attribute.
    SetXattr {
        node: NodeId,
        name: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// The user deleted the conflict copy of write `write`: stop showing it.
    Dismiss { node: NodeId, write: T },
}

impl<T, A> VolumeOp<T, A> {
    /// The node the op concerns.
    pub fn node(&self) -> NodeId {
        match self {
            VolumeOp::Create { node, .. }
            | VolumeOp::Move { node, .. }
            | VolumeOp::Delete { node, .. }
            | VolumeOp::Write { node, .. }
            | VolumeOp::SetAttr { node, .. }
            | VolumeOp::SetXattr { node, .. }
            | VolumeOp::Dismiss { node, .. } => *node,
        }
    }
}

/// Why [`VolumeState::apply`] refused an op. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError<A: fmt::Display> {
    /// A different op with the same timestamp, or the same author and sequence number, is
    /// already held: the author signed two ops where it may sign one.
    #[error("equivocation: {author} signed two different ops as #{seq} or at one timestamp")]
    Equivocation { author: A, seq: u64 },
    /// Sequence numbers start at 1.
    #[error("op of {author} has sequence number 0")]
    ZeroSeq { author: A },
    /// The op creates, moves or deletes a root, or places a node in the trash by a move.
    #[error("op on or under a root: node {node}, parent {parent:?}")]
    RootNode {
        node: NodeId,
        parent: Option<NodeId>,
    },
}

/// One version of a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<T, A> {
    pub ts: T,
    pub author: A,
    pub seq: u64,
    pub content: Vec<u8>,
    pub size: u64,
    pub mtime: Time,
    pub base: Option<T>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name shown, unique in the directory.
    pub name: Vec<u8>,
    /// The node, or for a conflict copy its derived id.
    pub node: NodeId,
    pub kind: Kind,
    /// For a conflict copy: the file whose losing version it shows.
    pub copy_of: Option<NodeId>,
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    /// The symlink target.
    pub target: Option<Vec<u8>>,
    /// A conflict copy: read-only, its write bits cleared in `mode`.
    pub read_only: bool,
}

/// What [`VolumeState::apply`] may have made different for a mount. It may name more than
/// changed; it never misses anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Directories whose listing (names, ids, kinds, visibility) may have changed.
    pub dirs: BTreeSet<NodeId>,
    /// Nodes (conflict copy ids included) whose attributes, content, conflicts, xattrs or
    /// visibility may have changed.
    pub nodes: BTreeSet<NodeId>,
    /// The tree was rebuilt because a delete became void (rule 4).
    pub rebuilt: bool,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.nodes.is_empty()
    }
}

/// A last-writer-wins register.
#[derive(Debug, Clone)]
struct Lww<T, V>(Option<(T, V)>);

impl<T: Ord, V> Default for Lww<T, V> {
    fn default() -> Self {
        Lww(None)
    }
}

impl<T: Ord, V> Lww<T, V> {
    fn offer(&mut self, ts: &T, value: V)
    where
        T: Clone,
    {
        if self.0.as_ref().is_none_or(|(old, _)| old < ts) {
            self.0 = Some((ts.clone(), value));
        }
    }

    fn get(&self) -> Option<&V> {
        self.0.as_ref().map(|(_, v)| v)
    }
}

/// Everything known about one node besides its place in the tree.
#[derive(Debug, Clone)]
struct NodeRec<T, A> {
    /// From the oldest `Create`: (its ts, kind, symlink target). `None` until one arrives.
    created: Option<(T, Kind, Option<Vec<u8>>)>,
    mode: Lww<T, u32>,
    uid: Lww<T, u32>,
    gid: Lww<T, u32>,
    atime: Lww<T, Time>,
    mtime: Lww<T, Time>,
    xattrs: BTreeMap<Vec<u8>, Lww<T, Option<Vec<u8>>>>,
    writes: BTreeMap<T, Version<T, A>>,
    /// Timestamps some write of this node names as its base.
    replaced: BTreeSet<T>,
    dismissed: BTreeSet<T>,
}

impl<T: Ord, A> Default for NodeRec<T, A> {
    fn default() -> Self {
        NodeRec {
            created: None,
            mode: Lww::default(),
            uid: Lww::default(),
            gid: Lww::default(),
            atime: Lww::default(),
            mtime: Lww::default(),
            xattrs: BTreeMap::new(),
            writes: BTreeMap::new(),
            replaced: BTreeSet::new(),
            dismissed: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Logged<T, A> {
    author: A,
    seq: u64,
    op: VolumeOp<T, A>,
}

/// The merged metadata of one volume. See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct VolumeState<T, A> {
    /// Every op applied, by timestamp.
    ops: BTreeMap<T, Logged<T, A>>,
    /// (author, seq) -> ts, to refuse a reused sequence number.
    seqs: BTreeMap<(A, u64), T>,
    nodes: BTreeMap<NodeId, NodeRec<T, A>>,
    tree: Tree<T, NodeId, Vec<u8>>,
    /// parent -> (child, ts) of every `Create`/`Move` ever: the static subtrees of rule 4.
    placed_under: BTreeMap<NodeId, BTreeSet<(NodeId, T)>>,
    /// child -> every parent a `Create`/`Move` ever gave it.
    placed_in: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// ts of every `Delete` -> whether it is valid (not void).
    deletes: BTreeMap<T, bool>,
    /// node -> ts of the `Delete`s naming it.
    deletes_of: BTreeMap<NodeId, BTreeSet<T>>,
    /// conflict copy id -> (node, write ts), for every write held.
    copies: BTreeMap<NodeId, (NodeId, T)>,
    rebuilds: u64,
}

impl<T, A> Default for VolumeState<T, A>
where
    T: Timestamp,
    A: Ord + Clone + fmt::Display,
{
    fn default() -> Self {
        Self::new()
    }
}

/// The winning head of a file and its losing heads not dismissed, ascending by timestamp.
type Heads<'a, T, A> = (&'a Version<T, A>, Vec<&'a Version<T, A>>);

/// Before-image of a node whose place may change.
struct Before<T> {
    edge: Option<(NodeId, Vec<u8>, T)>,
    visible: bool,
}

impl<T, A> VolumeState<T, A>
where
    T: Timestamp,
    A: Ord + Clone + fmt::Display,
{
    /// An empty volume: just the root directory.
    pub fn new() -> Self {
        VolumeState {
            ops: BTreeMap::new(),
            seqs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tree: Tree::new(NodeId::ROOT, NodeId::TRASH),
            placed_under: BTreeMap::new(),
            placed_in: BTreeMap::new(),
            deletes: BTreeMap::new(),
            deletes_of: BTreeMap::new(),
            copies: BTreeMap::new(),
            rebuilds: 0,
        }
    }

    /// The number of distinct ops applied.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many times a voided delete made the tree be rebuilt.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Whether op `ts` is held.
    pub fn contains(&self, ts: &T) -> bool {
        self.ops.contains_key(ts)
    }

    /// Apply one op. Idempotent; the result does not depend on the order ops arrive in.
    ///
    /// Returns what may now look different to a mount. On error nothing changed.
    pub fn apply(
        &mut self,
        stamp: Stamp<T, A>,
        op: VolumeOp<T, A>,
    ) -> Result<Change, ApplyError<A>> {
        let Stamp { ts, author, seq } = stamp;
        Self::validate(&author, seq, &op)?;
        if let Some(held) = self.ops.get(&ts) {
            return if held.author == author && held.seq == seq && held.op == op {
                Ok(Change::default())
            } else {
                Err(ApplyError::Equivocation { author, seq })
            };
        }
        if self.seqs.contains_key(&(author.clone(), seq)) {
            return Err(ApplyError::Equivocation { author, seq });
        }
        // From here on nothing fails.
        let node = op.node();
        let mut change = Change::default();

        // Bookkeeping that no query reads (so the before-images below are unaffected): the op
        // itself, the static placement indexes of rule 4, the conflict copy id of a write.
        self.seqs.insert((author.clone(), seq), ts.clone());
        let mut recheck = BTreeSet::new();
        match &op {
            VolumeOp::Create { parent, .. } | VolumeOp::Move { parent, .. } => {
                self.placed_under
                    .entry(*parent)
                    .or_default()
                    .insert((node, ts.clone()));
                self.placed_in.entry(node).or_default().insert(*parent);
                recheck = self.up_closure(*parent);
            }
            VolumeOp::Write { .. } => recheck = self.up_closure(node),
            VolumeOp::Delete { .. } => {
                self.deletes_of.entry(node).or_default().insert(ts.clone());
            }
            VolumeOp::Dismiss { .. } | VolumeOp::SetAttr { .. } | VolumeOp::SetXattr { .. } => {}
        }
        if let VolumeOp::Write { .. } = &op {
            self.copies
                .insert(NodeId::conflict_copy(node, &ts), (node, ts.clone()));
        }
        let is_delete = matches!(op, VolumeOp::Delete { .. });
        self.ops.insert(
            ts.clone(),
            Logged {
                author: author.clone(),
                seq,
                op: op.clone(),
            },
        );
        let new_delete_valid = is_delete && self.delete_valid(&ts);

        // Rule 4: the still-valid deletes this op may void. They read the writes from the node
        // records, which get this op's write only after the before-images below: pass it along.
        let pending_write = match &op {
            VolumeOp::Write { .. } => Some((node, &author, seq)),
            _ => None,
        };
        let voided: BTreeSet<T> = recheck
            .iter()
            .filter_map(|n| self.deletes_of.get(n))
            .flatten()
            .filter(|d| self.deletes.get(*d) == Some(&true))
            .filter(|d| !self.delete_valid_with(d, pending_write))
            .cloned()
            .collect();
        let tree_op = match &op {
            VolumeOp::Create { parent, name, .. } | VolumeOp::Move { parent, name, .. } => {
                Some((*parent, name.clone()))
            }
            VolumeOp::Delete { .. } if new_delete_valid => Some((NodeId::TRASH, Vec::new())),
            _ => None,
        };
        let rebuild = !voided.is_empty();

        // Before-images of every node whose place may change.
        let candidates: BTreeSet<NodeId> = if rebuild {
            self.tree
                .edges()
                .map(|(c, ..)| *c)
                .chain(self.tree_ops().map(|(_, n, ..)| n))
                .collect()
        } else if tree_op.is_some() {
            std::iter::once(node)
                .chain(self.tree_ops_from(&ts).map(|(_, n, ..)| n))
                .collect()
        } else {
            BTreeSet::new()
        };
        let before: BTreeMap<NodeId, Before<T>> =
            candidates.iter().map(|n| (*n, self.before(n))).collect();
        let parent_before = self.tree.parent(&node).map(|(p, ..)| *p);
        let kind_before = self.kind(&node);
        change.nodes.extend(self.loser_ids(node));

        // Apply: registers, delete validity, tree.
        self.register(&ts, &author, seq, &op);
        if is_delete {
            self.deletes.insert(ts.clone(), new_delete_valid);
        }
        for d in &voided {
            self.deletes.insert(d.clone(), false);
        }
        if rebuild {
            self.rebuild_tree();
            self.rebuilds += 1;
            change.rebuilt = true;
        } else if let Some((parent, name)) = tree_op {
            self.tree.apply(Move {
                ts: ts.clone(),
                parent,
                meta: name,
                child: node,
            });
        }

        // What changed.
        if self.kind(&node) != kind_before {
            // Only a second, older `Create` of one id does this: everything under it may have
            // appeared or disappeared.
            self.touch_subtree(node, &mut change);
        }
        change.nodes.insert(node);
        change.nodes.extend(self.loser_ids(node));
        change.dirs.extend(parent_before);
        change
            .dirs
            .extend(self.tree.parent(&node).map(|(p, ..)| *p));
        for (n, b) in before {
            let edge = self
                .tree
                .parent(&n)
                .map(|(p, m, t)| (*p, m.clone(), t.clone()));
            if edge != b.edge {
                change.nodes.insert(n);
                change.dirs.extend(b.edge.map(|(p, ..)| p));
                change.dirs.extend(edge.as_ref().map(|(p, ..)| *p));
            }
            if self.visible(&n) != b.visible {
                change.dirs.extend(edge.as_ref().map(|(p, ..)| *p));
                self.touch_subtree(n, &mut change);
            }
        }
        Ok(change)
    }

    fn validate(author: &A, seq: u64, op: &VolumeOp<T, A>) -> Result<(), ApplyError<A>> {
        if seq == 0 {
            return Err(ApplyError::ZeroSeq {
                author: author.clone(),
            });
        }
        let node = op.node();
        let parent = match op {
            VolumeOp::Create { parent, .. } | VolumeOp::Move { parent, .. } => Some(*parent),
            _ => None,
        };
        let bad_subject = node.is_root()
            && matches!(
                op,
                VolumeOp::Create { .. } | VolumeOp::Move { .. } | VolumeOp::Delete { .. }
            );
        if bad_subject || parent == Some(NodeId::TRASH) {
            return Err(ApplyError::RootNode { node, parent });
        }
        Ok(())
    }

    /// Record the op's effect on its node's registers.
    fn register(&mut self, ts: &T, author: &A, seq: u64, op: &VolumeOp<T, A>) {
        let rec = self.nodes.entry(op.node()).or_default();
        match op {
            VolumeOp::Create {
                kind,
                mode,
                uid,
                gid,
                mtime,
                target,
                ..
            } => {
                if rec.created.as_ref().is_none_or(|(old, ..)| ts < old) {
                    rec.created = Some((ts.clone(), *kind, target.clone()));
                }
                rec.mode.offer(ts, *mode);
                rec.uid.offer(ts, *uid);
                rec.gid.offer(ts, *gid);
                rec.atime.offer(ts, *mtime);
                rec.mtime.offer(ts, *mtime);
            }
            VolumeOp::Move { .. } | VolumeOp::Delete { .. } => {}
            VolumeOp::Write {
                content,
                size,
                mtime,
                base,
                ..
            } => {
                rec.writes.insert(
                    ts.clone(),
                    Version {
                        ts: ts.clone(),
                        author: author.clone(),
                        seq,
                        content: content.clone(),
                        size: *size,
                        mtime: *mtime,
                        base: base.clone(),
                    },
                );
                rec.replaced.extend(base.clone());
                rec.mtime.offer(ts, *mtime);
            }
            VolumeOp::SetAttr {
                mode,
                uid,
                gid,
                atime,
                mtime,
                ..
            } => {
                if let Some(v) = mode {
                    rec.mode.offer(ts, *v);
                }
                if let Some(v) = uid {
                    rec.uid.offer(ts, *v);
                }
                if let Some(v) = gid {
                    rec.gid.offer(ts, *v);
                }
                if let Some(v) = atime {
                    rec.atime.offer(ts, *v);
                }
                if let Some(v) = mtime {
                    rec.mtime.offer(ts, *v);
                }
            }
            VolumeOp::SetXattr { name, value, .. } => {
                rec.xattrs
                    .entry(name.clone())
                    .or_default()
                    .offer(ts, value.clone());
            }
            VolumeOp::Dismiss { write, .. } => {
                rec.dismissed.insert(write.clone());
            }
        }
    }

    /// Every `Create`/`Move`/valid-`Delete` as (ts, child, parent, name), by timestamp.
    fn tree_ops(&self) -> impl Iterator<Item = (&T, NodeId, NodeId, &[u8])> {
        self.tree_ops_iter(self.ops.iter())
    }

    /// The tree ops with timestamp `from` or newer: the ones an op at `from` can undo and redo.
    fn tree_ops_from<'a>(
        &'a self,
        from: &T,
    ) -> impl Iterator<Item = (&'a T, NodeId, NodeId, &'a [u8])> + 'a {
        self.tree_ops_iter(self.ops.range(from.clone()..))
    }

    fn tree_ops_iter<'a>(
        &'a self,
        ops: impl Iterator<Item = (&'a T, &'a Logged<T, A>)> + 'a,
    ) -> impl Iterator<Item = (&'a T, NodeId, NodeId, &'a [u8])> + 'a {
        ops.filter_map(move |(ts, l)| match &l.op {
            VolumeOp::Create {
                node, parent, name, ..
            }
            | VolumeOp::Move { node, parent, name } => Some((ts, *node, *parent, name.as_slice())),
            VolumeOp::Delete { node, .. } if self.deletes.get(ts) == Some(&true) => {
                Some((ts, *node, NodeId::TRASH, &[][..]))
            }
            _ => None,
        })
    }

    fn rebuild_tree(&mut self) {
        let mut tree = Tree::new(NodeId::ROOT, NodeId::TRASH);
        tree.apply_all(
            self.tree_ops()
                .map(|(ts, child, parent, name)| Move {
                    ts: ts.clone(),
                    parent,
                    meta: name.to_vec(),
                    child,
                })
                .collect::<Vec<_>>(),
        );
        self.tree = tree;
    }

    /// `start` and every node some `Create`/`Move` placed it under, transitively.
    fn up_closure(&self, start: NodeId) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::from([start]);
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            for p in self.placed_in.get(&n).into_iter().flatten() {
                if seen.insert(*p) {
                    todo.push(*p);
                }
            }
        }
        seen
    }

    /// `start` and every node some `Create`/`Move` placed under it, transitively.
    fn static_subtree(&self, start: NodeId) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::from([start]);
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            for (c, _) in self.placed_under.get(&n).into_iter().flatten() {
                if seen.insert(*c) {
                    todo.push(*c);
                }
            }
        }
        seen
    }

    fn delete_valid(&self, d: &T) -> bool {
        self.delete_valid_with(d, None)
    }

    /// Rule 4 for the delete at `d`, counting also a write (node, author, seq) not registered
    /// yet.
    fn delete_valid_with(&self, d: &T, pending_write: Option<(NodeId, &A, u64)>) -> bool {
        let Some(Logged {
            op: VolumeOp::Delete { node, seen },
            ..
        }) = self.ops.get(d)
        else {
            return false;
        };
        let subtree = self.static_subtree(*node);
        if let Some((n, author, seq)) = pending_write {
            if subtree.contains(&n) && !covers(seen, author, seq) {
                return false;
            }
        }
        subtree.iter().all(|n| {
            let writes_seen = self
                .nodes
                .get(n)
                .is_none_or(|rec| rec.writes.values().all(|w| covers(seen, &w.author, w.seq)));
            let moves_seen = self
                .placed_under
                .get(n)
                .into_iter()
                .flatten()
                .all(|(_, ts)| {
                    self.ops
                        .get(ts)
                        .is_none_or(|l| covers(seen, &l.author, l.seq))
                });
            writes_seen && moves_seen
        })
    }

    fn before(&self, n: &NodeId) -> Before<T> {
        Before {
            edge: self
                .tree
                .parent(n)
                .map(|(p, m, t)| (*p, m.clone(), t.clone())),
            visible: self.visible(n),
        }
    }

    /// Report `n` and everything under it (visibility flipped).
    fn touch_subtree(&self, n: NodeId, change: &mut Change) {
        let mut todo = vec![n];
        while let Some(x) = todo.pop() {
            change.dirs.insert(x);
            change.nodes.insert(x);
            change.nodes.extend(self.loser_ids(x));
            todo.extend(self.tree.children(&x).map(|(c, ..)| *c));
        }
    }

    /// Whether `n` has had a `Create` (the root always has).
    fn known(&self, n: &NodeId) -> bool {
        *n == NodeId::ROOT || self.nodes.get(n).is_some_and(|r| r.created.is_some())
    }

    /// Whether a mount shows `n`: it has been created, and its parent chain reaches the root
    /// through created directories only (a move under a file, which no honest member makes,
    /// hides what it moved).
    pub fn visible(&self, n: &NodeId) -> bool {
        if *n == NodeId::ROOT {
            return true;
        }
        if !self.known(n) {
            return false;
        }
        self.tree
            .ancestors(n)
            .take_while(|a| **a != NodeId::TRASH)
            .all(|a| self.kind(a) == Some(Kind::Dir))
            && self.tree.ancestors(n).last() == Some(&NodeId::ROOT)
    }

    fn kind(&self, n: &NodeId) -> Option<Kind> {
        if *n == NodeId::ROOT {
            return Some(Kind::Dir);
        }
        self.nodes
            .get(n)
            .and_then(|r| r.created.as_ref())
            .map(|(_, k, _)| *k)
    }

    /// The heads of a file: (winner, losers not dismissed), losers ascending by ts.
    fn heads(&self, n: &NodeId) -> Option<Heads<'_, T, A>> {
        if self.kind(n) != Some(Kind::File) {
            return None;
        }
        let rec = self.nodes.get(n)?;
        let mut heads: Vec<&Version<T, A>> = rec
            .writes
            .values()
            .filter(|w| !rec.replaced.contains(&w.ts))
            .collect();
        let winner = heads.pop()?;
        heads.retain(|w| !rec.dismissed.contains(&w.ts));
        Some((winner, heads))
    }

    /// The ids of the conflict copies `n` shows now (whether or not `n` is visible).
    fn loser_ids(&self, n: NodeId) -> Vec<NodeId> {
        self.heads(&n)
            .map(|(_, losers)| {
                losers
                    .iter()
                    .map(|w| NodeId::conflict_copy(n, &w.ts))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The directory's entries, sorted by name; empty unless `dir` is a visible directory.
    pub fn list(&self, dir: &NodeId) -> Vec<Entry> {
        if self.kind(dir) != Some(Kind::Dir) || !self.visible(dir) {
            return Vec::new();
        }
        let kids: Vec<(NodeId, &Vec<u8>, &T)> = self
            .tree
            .children(dir)
            .filter(|(c, ..)| self.known(c))
            .map(|(c, m, t)| (*c, m, t))
            .collect();
        let mut entries = Vec::with_capacity(kids.len());
        let mut renamed = Vec::new();
        let mut prev: Option<&Vec<u8>> = None;
        for (c, name, ts) in &kids {
            let kind = self.kind(c).unwrap_or(Kind::File);
            if prev == Some(*name) {
                let author = self.ops.get(*ts).map(|l| label(&l.author));
                let mut candidate = (*name).clone();
                candidate.extend_from_slice(
                    format!(
                        " (conflict {} {})",
                        author.unwrap_or_default(),
                        sanitize(&ts.short_time())
                    )
                    .as_bytes(),
                );
                renamed.push((candidate, *ts, *c, kind));
            } else {
                entries.push(Entry {
                    name: (*name).clone(),
                    node: *c,
                    kind,
                    copy_of: None,
                });
            }
            prev = Some(*name);
        }
        renamed.sort();
        // Every real name is reserved before any generated one is given out; the set is only
        // built when some name has to be generated (the common directory needs none).
        let mut taken: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut reserved = false;
        let mut reserve = |taken: &mut BTreeSet<Vec<u8>>| {
            if !reserved {
                taken.extend(kids.iter().map(|(_, m, _)| (*m).clone()));
                reserved = true;
            }
        };
        if !renamed.is_empty() {
            reserve(&mut taken);
        }
        for (candidate, _, node, kind) in renamed {
            entries.push(Entry {
                name: unique(candidate, &mut taken),
                node,
                kind,
                copy_of: None,
            });
        }
        let mut copies = Vec::new();
        for e in &entries {
            // Only a file with two writes or more can have a losing head.
            let several = self.nodes.get(&e.node).is_some_and(|r| r.writes.len() > 1);
            if !several {
                continue;
            }
            if let Some((winner, losers)) = self.heads(&e.node) {
                for w in losers {
                    let mut candidate = e.name.clone();
                    candidate.extend_from_slice(
                        format!(
                            " (conflict {} vs {})",
                            label(&w.author),
                            label(&winner.author)
                        )
                        .as_bytes(),
                    );
                    copies.push((candidate, e.node, &w.ts));
                }
            }
        }
        copies.sort();
        if !copies.is_empty() {
            reserve(&mut taken);
        }
        for (candidate, node, ts) in copies {
            entries.push(Entry {
                name: unique(candidate, &mut taken),
                node: NodeId::conflict_copy(node, ts),
                kind: Kind::File,
                copy_of: Some(node),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// The directory a visible node (or conflict copy, through its file) is in; the root is
    /// its own parent.
    pub fn parent(&self, id: &NodeId) -> Option<NodeId> {
        if *id == NodeId::ROOT {
            return Some(NodeId::ROOT);
        }
        let node = match self.copy(id) {
            Some((n, _)) => n,
            None if self.visible(id) => *id,
            None => return None,
        };
        self.tree.parent(&node).map(|(p, _, _)| *p)
    }

    /// The created children of `dir` whose edge is named `name`, oldest first.
    fn named<'a>(&'a self, dir: &NodeId, name: &[u8]) -> impl Iterator<Item = NodeId> + 'a {
        let wanted = name.to_vec();
        self.tree
            .children_from(dir, (name.to_vec(), T::least(), NodeId::ROOT))
            .take_while(move |(_, meta, _)| **meta == wanted)
            .filter(|(c, ..)| self.known(c))
            .map(|(c, ..)| *c)
    }

    /// The entry called `name` in `dir`: O(log n) for a name an entry really has (the oldest of
    /// them keeps it) or that no generated name can take (those all contain `" ("`); O(size
    /// of `dir`) otherwise.
    pub fn lookup(&self, dir: &NodeId, name: &[u8]) -> Option<Entry> {
        if self.kind(dir) != Some(Kind::Dir) || !self.visible(dir) {
            return None;
        }
        if let Some(node) = self.named(dir, name).next() {
            return Some(Entry {
                name: name.to_vec(),
                node,
                kind: self.kind(&node).unwrap_or(Kind::File),
                copy_of: None,
            });
        }
        if !name.windows(2).any(|w| w == b" (") {
            return None;
        }
        self.list(dir).into_iter().find(|e| e.name == name)
    }

    /// The name a visible node or conflict copy is shown under in its directory: O(log n)
    /// unless it shows under a generated name.
    pub fn name_of(&self, id: &NodeId) -> Option<Vec<u8>> {
        if *id == NodeId::ROOT {
            return Some(Vec::new());
        }
        if let Some((parent, meta, _)) = self.tree.parent(id) {
            if self.visible(id) && self.named(parent, meta).next() == Some(*id) {
                return Some(meta.clone());
            }
        }
        let parent = self.parent(id)?;
        self.list(&parent)
            .into_iter()
            .find(|e| e.node == *id)
            .map(|e| e.name)
    }

    /// For a conflict copy id: the file and its losing version, if shown now.
    fn copy(&self, id: &NodeId) -> Option<(NodeId, &Version<T, A>)> {
        let (n, ts) = self.copies.get(id)?;
        if !self.visible(n) {
            return None;
        }
        let (_, losers) = self.heads(n)?;
        losers.into_iter().find(|w| w.ts == *ts).map(|w| (*n, w))
    }

    /// The attributes of a visible node or conflict copy.
    pub fn attr(&self, id: &NodeId) -> Option<Attr> {
        if let Some((n, w)) = self.copy(id) {
            let mut attr = self.node_attr(&n)?;
            attr.mode &= !0o222;
            attr.size = w.size;
            attr.mtime = w.mtime;
            attr.read_only = true;
            return Some(attr);
        }
        if !self.visible(id) {
            return None;
        }
        self.node_attr(id)
    }

    fn node_attr(&self, n: &NodeId) -> Option<Attr> {
        let kind = self.kind(n)?;
        let empty = NodeRec::default();
        let rec = self.nodes.get(n).unwrap_or(&empty);
        let target = rec.created.as_ref().and_then(|(_, _, t)| t.clone());
        let size = match kind {
            Kind::File => self.heads(n).map(|(w, _)| w.size).unwrap_or(0),
            Kind::Dir => 0,
            Kind::Symlink => target.as_ref().map(|t| t.len() as u64).unwrap_or(0),
        };
        let default_mode = match kind {
            Kind::File => 0o644,
            Kind::Dir => 0o755,
            Kind::Symlink => 0o777,
        };
        Some(Attr {
            kind,
            mode: rec.mode.get().copied().unwrap_or(default_mode),
            uid: rec.uid.get().copied().unwrap_or(0),
            gid: rec.gid.get().copied().unwrap_or(0),
            size,
            atime: rec.atime.get().copied().unwrap_or_default(),
            mtime: rec.mtime.get().copied().unwrap_or_default(),
            target,
            read_only: false,
        })
    }

    /// The version a visible file (or conflict copy) shows; `None` also for a file never
    /// written (empty).
    pub fn content(&self, id: &NodeId) -> Option<&Version<T, A>> {
        if let Some((_, w)) = self.copy(id) {
            return Some(w);
        }
        if !self.visible(id) {
            return None;
        }
        self.heads(id).map(|(w, _)| w)
    }

    /// The conflict copies a visible file shows, as (copy id, losing version), by timestamp.
    pub fn conflicts(&self, n: &NodeId) -> Vec<(NodeId, &Version<T, A>)> {
        if !self.visible(n) {
            return Vec::new();
        }
        self.heads(n)
            .map(|(_, losers)| {
                losers
                    .into_iter()
                    .map(|w| (NodeId::conflict_copy(*n, &w.ts), w))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The extended attributes of a visible node.
    pub fn xattrs(&self, n: &NodeId) -> BTreeMap<Vec<u8>, Vec<u8>> {
        if !self.visible(n) {
            return BTreeMap::new();
        }
        self.nodes
            .get(n)
            .map(|rec| {
                rec.xattrs
                    .iter()
                    .filter_map(|(k, v)| v.get().cloned().flatten().map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the delete at `ts` is held and valid (not voided by rule 4).
    pub fn delete_is_valid(&self, ts: &T) -> bool {
        self.deletes.get(ts) == Some(&true)
    }
}

/// An author as it appears in a conflict name: the first 8 characters of its `Display`.
fn label<A: fmt::Display>(author: &A) -> String {
    sanitize(&author.to_string().chars().take(8).collect::<String>())
}

/// Make a generated name component safe: no `/`, no NUL.
fn sanitize(s: &str) -> String {
    s.replace(['/', '\0'], "_")
}

/// `candidate`, or `candidate (k)` for the smallest k >= 2 not yet taken; reserved.
fn unique(candidate: Vec<u8>, taken: &mut BTreeSet<Vec<u8>>) -> Vec<u8> {
    let mut name = candidate.clone();
    let mut k = 2u64;
    while taken.contains(&name) {
        name = candidate.clone();
        name.extend_from_slice(format!(" ({k})").as_bytes());
        k += 1;
    }
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests;
