//! Replicated data types for shared volumes: pure state machines, no I/O, clocks or async.
//!
//! [`tree`] is the replicated move operation on trees of Kleppmann, Mulligan, Gomes and
//! Beresford, "A highly-available move operation for replicated trees" (IEEE TPDS 2021). It owns
//! the shape of a shared volume's namespace: for every node (file or directory id) its parent,
//! its name in that parent, and the timestamp of the move that put it there. It does not own
//! content, modes or times; those live beside it, keyed by node id.
//!
//! # Data flow
//!
//! Every namespace change on any peer becomes one [`tree::Move`] `{ ts, parent, meta, child }`
//! in the volume's signed op log:
//!
//! - create: a move of a fresh node id under its parent with its name;
//! - rename: a move of the node to its new (parent, name);
//! - delete: a move under the designated `trash` root; the subtree stays intact in the trash until
//!   it is collected, so a concurrent move of something inside it is never lost.
//!
//! The timestamp `ts` is the pair (hybrid logical clock, author key) of the signed op, which makes
//! it unique and totally ordered, and consistent with causality (an op that saw another has a
//! larger clock). Each peer feeds every op it receives, in whatever order and as often as the
//! network delivers it, to [`tree::Tree::apply`]; local ops take a clock above everything seen,
//! so they are applied in order at O(depth) cost, and late remote ops are slotted into place by
//! undoing the newer ops, applying, and redoing them.
//!
//! # Laws
//!
//! - Convergence: the state is a function of the *set* of ops applied, whatever their order,
//!   duplicates included; it equals the state reached by applying them in timestamp order.
//! - Tree shape: there is never a cycle, and every node in the tree has a parent chain ending at
//!   `root` (live) or `trash` (deleted). A move that would make a node its own ancestor, move a
//!   root, or attach under a node the tree does not contain yet has no effect (it is kept in the
//!   log, and takes effect on redo if an earlier op that makes it valid arrives later).
//! - No lost subtree: a node once in the tree stays in it; moves only relocate whole subtrees.
//! - Last writer wins per node: of two concurrent moves of the same node (say a delete and a
//!   rename), the one with the larger timestamp decides where it ends up.
//!
//! Names are not unique in this layer: two peers may create or rename different nodes to the same
//! name in one directory. [`tree::Tree::children`] lists entries by (name, timestamp, id) so the
//! view can deterministically give the name to one and show the others as conflicts.
//!
//! The undo log is bounded with [`tree::Tree::truncate_log_before`] once a timestamp is causally
//! stable (every peer has seen every op before it); ops older than that are refused afterwards.

pub mod tree;
pub mod volume;

pub use tree::{Applied, ApplyCounts, Move, Tree};
pub use volume::{
    ApplyError, Attr, Change, Entry, Kind, NodeId, Stamp, Time, Timestamp, Version, VersionVector,
    VolumeOp, VolumeState,
};
