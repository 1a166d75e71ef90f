//! The replicated tree with a move operation (Kleppmann et al., IEEE TPDS 2021).
//!
//! [`Tree`] holds the current state, `child -> (parent, meta, ts)`, an index `parent -> children`
//! for listings, and the log of applied [`Move`]s in timestamp order, each with what it displaced
//! so it can be undone. An op newer than the whole log is applied directly (O(depth) for the
//! cycle check plus O(log n) map updates). An older one undoes the newer log entries, newest
//! first, applies, and redoes them oldest first, re-deciding each one against the state it now
//! finds: O(k · depth) for k newer ops. The result is always the state of applying the whole op
//! set in timestamp order, which is what makes replicas converge.
//!
//! Generic over the timestamp `T` (unique and totally ordered: in the volume, the pair
//! (hybrid logical clock, author key)), the node id `N` and the metadata `M` (the entry name).
//! Maps are `BTreeMap`s so iteration, and anything derived from it, is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Move `child` under `parent` with metadata `meta` (its name there), at time `ts`.
///
/// Creation is a move of a fresh id, deletion a move under the tree's `trash` root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Move<T, N, M> {
    /// Unique, totally ordered timestamp; the order in which the op set is (re)played.
    pub ts: T,
    /// The new parent.
    pub parent: N,
    /// The metadata of the edge, such as the entry name in `parent`.
    pub meta: M,
    /// The node moved, with its whole subtree.
    pub child: N,
}

/// What [`Tree::apply`] did with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The op was new and is now in the log. It may still have had no effect on the shape (a
    /// move that would create a cycle, of a root, or under a node not in the tree yet): that is
    /// decided against the timestamp-ordered history and may change when older ops arrive.
    New,
    /// The same op (same timestamp, same content) is already in the log; nothing changed.
    Duplicate,
    /// An op with this timestamp but different content is already in the log; this one was
    /// ignored. Timestamps must be unique: this means an author signed two different ops with
    /// the same clock, and replicas that saw the two in different orders now disagree. The op
    /// log layer must refuse such an author; this layer can only report it.
    Equivocation,
    /// The op is older than the truncation point ([`Tree::truncate_log_before`]) and was
    /// refused: either a duplicate of an op already folded in, or a violation of the causal
    /// stability the caller promised when truncating. Nothing changed.
    TooOld,
}

/// How many ops of each kind [`Tree::apply_all`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub new: usize,
    pub duplicate: usize,
    pub equivocation: usize,
    pub too_old: usize,
}

/// Where a node is: its parent, its metadata there, and the timestamp of the move that put it
/// there (the view uses it to break ties between equal names).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge<T, N, M> {
    parent: N,
    meta: M,
    ts: T,
}

/// What a logged op did, so it can be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect<T, N, M> {
    /// The op did not change the state (cycle, root child, unknown parent).
    Skipped,
    /// The op moved its child; `previous` is where the child was before, `None` if it was not
    /// in the tree.
    Moved { previous: Option<Edge<T, N, M>> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LogEntry<T, N, M> {
    op: Move<T, N, M>,
    effect: Effect<T, N, M>,
}

/// A replicated tree of nodes `N` with edge metadata `M`, changed only by [`Move`]s stamped `T`.
///
/// The two roots, `root` and `trash`, are always in the tree, have no parent, and cannot be
/// moved. See the [module docs](super) for the laws.
#[derive(Debug, Clone)]
pub struct Tree<T, N, M> {
    root: N,
    trash: N,
    /// child -> where it is. Holds every node of the tree except the two roots.
    edges: BTreeMap<N, Edge<T, N, M>>,
    /// parent -> its children keyed (meta, ts, child): the listing order. Mirrors `edges`; empty
    /// sets are removed.
    children: BTreeMap<N, BTreeSet<(M, T, N)>>,
    /// Applied ops, strictly ascending by timestamp (so the newest is last; undo walks it
    /// backwards).
    log: Vec<LogEntry<T, N, M>>,
    /// Ops older than this were dropped from the log and are refused.
    horizon: Option<T>,
}

impl<T, N, M> Tree<T, N, M>
where
    T: Ord + Clone,
    N: Ord + Clone,
    M: Ord + Clone,
{
    /// An empty tree with the two designated roots.
    ///
    /// # Panics
    /// If `root == trash`.
    pub fn new(root: N, trash: N) -> Self {
        assert!(
            root != trash,
            "the root and the trash must be different nodes"
        );
        Self {
            root,
            trash,
            edges: BTreeMap::new(),
            children: BTreeMap::new(),
            log: Vec::new(),
            horizon: None,
        }
    }

    /// The live root.
    pub fn root(&self) -> &N {
        &self.root
    }

    /// The root under which deleted subtrees are kept.
    pub fn trash(&self) -> &N {
        &self.trash
    }

    /// Apply one op, wherever its timestamp falls in the history. Idempotent.
    pub fn apply(&mut self, op: Move<T, N, M>) -> Applied {
        if self.horizon.as_ref().is_some_and(|h| op.ts < *h) {
            return Applied::TooOld;
        }
        let pos = self.log.partition_point(|e| e.op.ts < op.ts);
        if let Some(existing) = self.log.get(pos) {
            if existing.op.ts == op.ts {
                return if existing.op == op {
                    Applied::Duplicate
                } else {
                    Applied::Equivocation
                };
            }
        }
        if pos == self.log.len() {
            let entry = self.do_op(op);
            self.log.push(entry);
            return Applied::New;
        }
        // Undo the newer ops, newest first, keeping them to redo.
        let newer = self.log.split_off(pos);
        let mut redo = Vec::with_capacity(newer.len());
        for entry in newer.into_iter().rev() {
            self.undo(&entry.op.child, entry.effect);
            redo.push(entry.op);
        }
        let entry = self.do_op(op);
        self.log.push(entry);
        // Redo them oldest first, each decided afresh against the state it now meets.
        for op in redo.into_iter().rev() {
            let entry = self.do_op(op);
            self.log.push(entry);
        }
        Applied::New
    }

    /// Apply a batch of ops in the given order (any order gives the same state).
    pub fn apply_all(&mut self, ops: impl IntoIterator<Item = Move<T, N, M>>) -> ApplyCounts {
        let mut counts = ApplyCounts::default();
        for op in ops {
            match self.apply(op) {
                Applied::New => counts.new += 1,
                Applied::Duplicate => counts.duplicate += 1,
                Applied::Equivocation => counts.equivocation += 1,
                Applied::TooOld => counts.too_old += 1,
            }
        }
        counts
    }

    /// Where `child` is: (parent, meta, ts of the move that put it there). `None` for the roots
    /// and for nodes not in the tree.
    pub fn parent(&self, child: &N) -> Option<(&N, &M, &T)> {
        self.edges.get(child).map(|e| (&e.parent, &e.meta, &e.ts))
    }

    /// The children of `parent` as (child, meta, ts), ordered by meta, then ts, then child id.
    ///
    /// Equal metas (names) can occur; the first of a run has the oldest move.
    pub fn children<'a>(&'a self, parent: &N) -> impl Iterator<Item = (&'a N, &'a M, &'a T)> + 'a {
        self.children
            .get(parent)
            .into_iter()
            .flatten()
            .map(|(meta, ts, child)| (child, meta, ts))
    }

    /// The children of `parent` from `from` on, in the order of [`Tree::children`]: with
    /// `from` the least key of a name, the children of that name first, in O(log n).
    pub fn children_from<'a>(
        &'a self,
        parent: &N,
        from: (M, T, N),
    ) -> impl Iterator<Item = (&'a N, &'a M, &'a T)> + 'a {
        self.children
            .get(parent)
            .into_iter()
            .flat_map(move |set| set.range(from.clone()..))
            .map(|(meta, ts, child)| (child, meta, ts))
    }

    /// The strict ancestors of `node`, its parent first, ending at `root` or `trash`. Empty for
    /// the roots and for nodes not in the tree.
    pub fn ancestors<'a>(&'a self, node: &N) -> impl Iterator<Item = &'a N> + 'a {
        let first = self.edges.get(node).map(|e| &e.parent);
        std::iter::successors(first, move |n| self.edges.get(*n).map(|e| &e.parent))
    }

    /// Whether `a` is a strict ancestor of `b`. O(depth of `b`).
    pub fn is_ancestor(&self, a: &N, b: &N) -> bool {
        self.ancestors(b).any(|n| n == a)
    }

    /// Whether `node` is in the tree: one of the roots, or placed by some move.
    pub fn contains(&self, node: &N) -> bool {
        self.is_root(node) || self.edges.contains_key(node)
    }

    /// Whether `node` is `root` or `trash`.
    pub fn is_root(&self, node: &N) -> bool {
        *node == self.root || *node == self.trash
    }

    /// Whether `node` is in the live tree: `root` or one of its descendants.
    pub fn is_live(&self, node: &N) -> bool {
        *node == self.root || self.ancestors(node).last() == Some(&self.root)
    }

    /// Whether `node` is inside the trash (a strict descendant of `trash`).
    pub fn is_deleted(&self, node: &N) -> bool {
        self.ancestors(node).last() == Some(&self.trash)
    }

    /// The number of nodes in the tree, not counting the two roots.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether the tree holds nothing but its two roots.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Every placed node as (child, parent, meta, ts), ordered by child id.
    pub fn edges(&self) -> impl Iterator<Item = (&N, &N, &M, &T)> {
        self.edges
            .iter()
            .map(|(child, e)| (child, &e.parent, &e.meta, &e.ts))
    }

    /// The number of ops in the undo log.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The timestamp of the newest op applied, if the log holds any.
    pub fn latest(&self) -> Option<&T> {
        self.log.last().map(|e| &e.op.ts)
    }

    /// The truncation point: ops older than this are refused with [`Applied::TooOld`].
    pub fn horizon(&self) -> Option<&T> {
        self.horizon.as_ref()
    }

    /// Drop the log entries older than `stable` and refuse ops older than it from now on.
    /// Returns how many entries were dropped.
    ///
    /// The caller promises that `stable` is causally stable: every replica has already applied
    /// every op with a smaller timestamp, so none can still arrive. Does nothing if `stable` is
    /// not newer than the current horizon. The state is unchanged.
    pub fn truncate_log_before(&mut self, stable: &T) -> usize {
        if self.horizon.as_ref().is_some_and(|h| stable <= h) {
            return 0;
        }
        self.horizon = Some(stable.clone());
        let n = self.log.partition_point(|e| e.op.ts < *stable);
        self.log.drain(..n);
        n
    }

    /// Decide `op` against the current state, carry it out if valid, and return its log entry.
    fn do_op(&mut self, op: Move<T, N, M>) -> LogEntry<T, N, M> {
        let valid = !self.is_root(&op.child)
            && self.contains(&op.parent)
            && op.child != op.parent
            && !self.is_ancestor(&op.child, &op.parent);
        let effect = if valid {
            let previous = self.detach(&op.child);
            let edge = Edge {
                parent: op.parent.clone(),
                meta: op.meta.clone(),
                ts: op.ts.clone(),
            };
            self.attach(op.child.clone(), edge);
            Effect::Moved { previous }
        } else {
            Effect::Skipped
        };
        LogEntry { op, effect }
    }

    /// Revert the effect of the newest log entry (already removed from the log).
    fn undo(&mut self, child: &N, effect: Effect<T, N, M>) {
        if let Effect::Moved { previous } = effect {
            self.detach(child);
            if let Some(edge) = previous {
                self.attach(child.clone(), edge);
            }
        }
    }

    /// Take `child` out of its parent, returning where it was.
    fn detach(&mut self, child: &N) -> Option<Edge<T, N, M>> {
        let (child, edge) = self.edges.remove_entry(child)?;
        if let Some(set) = self.children.get_mut(&edge.parent) {
            set.remove(&(edge.meta.clone(), edge.ts.clone(), child));
            if set.is_empty() {
                self.children.remove(&edge.parent);
            }
        }
        Some(edge)
    }

    /// Put `child` (not currently placed) at `edge`.
    fn attach(&mut self, child: N, edge: Edge<T, N, M>) {
        self.children
            .entry(edge.parent.clone())
            .or_default()
            .insert((edge.meta.clone(), edge.ts.clone(), child.clone()));
        let displaced = self.edges.insert(child, edge);
        debug_assert!(displaced.is_none(), "attach of a node that is still placed");
    }

    /// Panic unless the structure is consistent: no cycles, every chain ends at a root, the
    /// child index mirrors the edges, the log is ordered and above the horizon.
    #[cfg(test)]
    fn check_invariants(&self)
    where
        T: std::fmt::Debug,
        N: std::fmt::Debug,
        M: std::fmt::Debug,
    {
        assert!(!self.edges.contains_key(&self.root), "root has a parent");
        assert!(!self.edges.contains_key(&self.trash), "trash has a parent");
        for child in self.edges.keys() {
            // A chain longer than the node count has a cycle.
            let chain: Vec<&N> = self.ancestors(child).take(self.edges.len() + 2).collect();
            assert!(
                chain.len() <= self.edges.len() + 1,
                "cycle through {child:?}"
            );
            let top = chain.last().expect("a placed node has a parent");
            assert!(
                self.is_root(top),
                "{child:?} hangs under {top:?}, outside the tree"
            );
        }
        let mut index: BTreeMap<N, BTreeSet<(M, T, N)>> = BTreeMap::new();
        for (child, e) in &self.edges {
            index.entry(e.parent.clone()).or_default().insert((
                e.meta.clone(),
                e.ts.clone(),
                child.clone(),
            ));
        }
        assert_eq!(
            index, self.children,
            "child index out of step with the edges"
        );
        assert!(
            self.log.windows(2).all(|w| w[0].op.ts < w[1].op.ts),
            "log not strictly ordered"
        );
        if let (Some(h), Some(first)) = (&self.horizon, self.log.first()) {
            assert!(first.op.ts >= *h, "log entry older than the horizon");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (hybrid logical clock, author), as in the volume.
    type Ts = (u64, u8);
    type Op = Move<Ts, u8, u8>;
    type T = Tree<Ts, u8, u8>;

    const ROOT: u8 = 0;
    const TRASH: u8 = 1;
    /// Regular nodes are 2..2 + NODES.
    const NODES: u8 = 8;
    const NAMES: u8 = 3;

    fn mv(ts: Ts, parent: u8, meta: u8, child: u8) -> Op {
        Move {
            ts,
            parent,
            meta,
            child,
        }
    }

    fn tree() -> T {
        T::new(ROOT, TRASH)
    }

    type Snapshot = (Vec<(u8, u8, u8, Ts)>, Vec<Vec<(u8, u8, Ts)>>);

    /// Everything observable about the shape: edges and every listing.
    fn snapshot(t: &T) -> Snapshot {
        let edges = t.edges().map(|(c, p, m, ts)| (*c, *p, *m, *ts)).collect();
        let listings = (0..2 + NODES)
            .map(|p| t.children(&p).map(|(c, m, ts)| (*c, *m, *ts)).collect())
            .collect();
        (edges, listings)
    }

    /// An independent model: apply ops sorted by timestamp to a plain map, with the same rules.
    fn reference(ops: &[Op]) -> Vec<(u8, u8, u8, Ts)> {
        let mut sorted = ops.to_vec();
        sorted.sort_by_key(|op| op.ts);
        sorted.dedup_by_key(|op| op.ts);
        let mut parent: BTreeMap<u8, (u8, u8, Ts)> = BTreeMap::new();
        for op in sorted {
            let known = op.parent == ROOT || op.parent == TRASH || parent.contains_key(&op.parent);
            let mut cycle = false;
            let mut n = op.parent;
            loop {
                if n == op.child {
                    cycle = true;
                    break;
                }
                match parent.get(&n) {
                    Some((p, _, _)) => n = *p,
                    None => break,
                }
            }
            if op.child != ROOT && op.child != TRASH && known && !cycle {
                parent.insert(op.child, (op.parent, op.meta, op.ts));
            }
        }
        parent
            .into_iter()
            .map(|(c, (p, m, ts))| (c, p, m, ts))
            .collect()
    }

    /// A node: mostly regular, sometimes a root (moves of roots must be ignored; moves under
    /// them are how nodes enter the tree and get deleted).
    fn node() -> impl Strategy<Value = u8> {
        prop_oneof![
            1 => Just(ROOT),
            1 => Just(TRASH),
            6 => 2..2 + NODES,
        ]
    }

    /// Up to 40 moves with unique timestamps from 3 authors; clocks collide across authors.
    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec((0u64..30, 0u8..3, node(), 0..NAMES, node()), 0..40).prop_map(|raw| {
            let mut seen = BTreeSet::new();
            raw.into_iter()
                .filter(|(clock, author, ..)| seen.insert((*clock, *author)))
                .map(|(clock, author, parent, meta, child)| {
                    mv((clock, author), parent, meta, child)
                })
                .collect()
        })
    }

    /// The ops in two random orders, the first with some ops delivered twice.
    fn two_orders() -> impl Strategy<Value = (Vec<Op>, Vec<Op>, Vec<Op>)> {
        ops().prop_flat_map(|ops| {
            let n = ops.len().max(1);
            (
                Just(ops.clone()),
                Just(ops.clone()).prop_shuffle(),
                Just(ops).prop_shuffle(),
                prop::collection::vec((0..n, 0..n + 1), 0..10),
            )
                .prop_map(|(ops, a, b, dups)| {
                    let mut a = a;
                    for (from, to) in dups {
                        if let Some(op) = a.get(from).cloned() {
                            a.insert(to.min(a.len()), op);
                        }
                    }
                    (ops, a, b)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Two replicas given the same op set in different orders, one with duplicates, end in
        /// the same state with the same log.
        #[test]
        fn replicas_converge((_ops, a, b) in two_orders()) {
            let (mut ta, mut tb) = (tree(), tree());
            let ca = ta.apply_all(a.clone());
            let cb = tb.apply_all(b.clone());
            prop_assert_eq!(ca.new, cb.new);
            prop_assert_eq!(ca.duplicate, a.len() - b.len());
            prop_assert_eq!(ca.equivocation + ca.too_old + cb.duplicate, 0);
            prop_assert_eq!(snapshot(&ta), snapshot(&tb));
            prop_assert_eq!(&ta.log, &tb.log);
        }

        /// After every step of any delivery order, there is no cycle, every placed node hangs
        /// under root or trash, and no node that was in the tree has left it.
        #[test]
        fn never_a_cycle_never_a_lost_subtree((_ops, a, _b) in two_orders()) {
            let mut t = tree();
            let mut placed = BTreeSet::new();
            for op in a {
                t.apply(op);
                t.check_invariants();
                for n in &placed {
                    prop_assert!(t.contains(n), "node {} left the tree", n);
                }
                placed.extend(t.edges().map(|(c, ..)| *c));
                for (c, ..) in t.edges() {
                    prop_assert!(t.is_live(c) != t.is_deleted(c), "{} neither live nor deleted", c);
                }
            }
        }

        /// Any delivery order gives the state of applying the ops in timestamp order, both with
        /// this tree and with an independent model of the rules.
        #[test]
        fn any_order_equals_timestamp_order((ops, a, _b) in two_orders()) {
            let mut shuffled = tree();
            shuffled.apply_all(a);
            let mut sorted_ops = ops.clone();
            sorted_ops.sort_by_key(|op| op.ts);
            let mut in_order = tree();
            in_order.apply_all(sorted_ops);
            prop_assert_eq!(snapshot(&shuffled), snapshot(&in_order));
            let edges: Vec<_> = shuffled.edges().map(|(c, p, m, ts)| (*c, *p, *m, *ts)).collect();
            prop_assert_eq!(edges, reference(&ops));
        }

        /// Truncating the log at a causally stable point, then applying the newer ops in any
        /// order (with stale re-deliveries of older ones), equals never truncating.
        #[test]
        fn truncation_is_invisible(
            (_ops, a, b) in two_orders(),
            cut in (0u64..32, 0u8..3),
        ) {
            let mut full = tree();
            full.apply_all(a);

            // Everything before the cut first (this replica also got some newer ops early),
            // then the cut, then the rest in another order, stale ops included.
            let mut t = tree();
            let (old, early): (Vec<Op>, Vec<Op>) = b.iter().cloned().partition(|op| op.ts < cut);
            let early_count = early.len() / 2;
            t.apply_all(old.iter().cloned().chain(early.iter().take(early_count).cloned()));
            let before = t.log_len();
            let dropped = t.truncate_log_before(&cut);
            t.check_invariants();
            prop_assert_eq!(dropped, old.len());
            prop_assert_eq!(t.log_len(), before - old.len());
            let counts = t.apply_all(b);
            t.check_invariants();
            prop_assert_eq!(counts.too_old, old.len());
            prop_assert_eq!(counts.new, early.len() - early_count);
            prop_assert_eq!(snapshot(&t), snapshot(&full));
        }
    }

    #[test]
    fn concurrent_cross_moves_apply_exactly_one() {
        // The paper's example: A and B under root; replica 1 moves A under B while replica 2
        // moves B under A. Applying both naively would make a cycle.
        let setup = [mv((1, 0), ROOT, 0, 2), mv((2, 0), ROOT, 1, 3)];
        let a_under_b = mv((3, 1), 3, 0, 2);
        let b_under_a = mv((3, 2), 2, 1, 3);

        let mut r1 = tree();
        r1.apply_all(setup.clone());
        let mut r2 = r1.clone();
        // Each replica applies its own op first, then the other's.
        assert_eq!(r1.apply(a_under_b.clone()), Applied::New);
        assert_eq!(r2.apply(b_under_a.clone()), Applied::New);
        assert_eq!(r1.parent(&2), Some((&3, &0, &(3, 1))));
        assert_eq!(r2.parent(&3), Some((&2, &1, &(3, 2))));
        assert_eq!(r1.apply(b_under_a), Applied::New);
        assert_eq!(r2.apply(a_under_b), Applied::New);

        // The older op wins on both; the newer one would close a cycle and has no effect.
        for r in [&r1, &r2] {
            r.check_invariants();
            assert_eq!(r.parent(&2), Some((&3, &0, &(3, 1))));
            assert_eq!(r.parent(&3), Some((&ROOT, &1, &(2, 0))));
            assert!(r.is_ancestor(&3, &2));
            assert!(!r.is_ancestor(&2, &3));
        }
        assert_eq!(snapshot(&r1), snapshot(&r2));
    }

    #[test]
    fn delete_concurrent_with_move_is_last_writer_wins() {
        let setup = [mv((1, 0), ROOT, 0, 2), mv((2, 0), ROOT, 1, 3)];
        for (delete_ts, move_ts, deleted) in [((5, 1), (5, 2), false), ((5, 2), (5, 1), true)] {
            let delete = mv(delete_ts, TRASH, 0, 3);
            let rename = mv(move_ts, 2, 2, 3);
            let mut r1 = tree();
            r1.apply_all(
                setup
                    .iter()
                    .cloned()
                    .chain([delete.clone(), rename.clone()]),
            );
            let mut r2 = tree();
            r2.apply_all(setup.iter().cloned().chain([rename, delete]));
            r1.check_invariants();
            assert_eq!(snapshot(&r1), snapshot(&r2));
            assert_eq!(r1.is_deleted(&3), deleted);
            assert_eq!(r1.is_live(&3), !deleted);
            let expected_parent = if deleted { TRASH } else { 2 };
            assert_eq!(r1.parent(&3).map(|(p, ..)| *p), Some(expected_parent));
            assert_eq!(r1.trash(), &TRASH);
        }
    }

    #[test]
    fn deleted_subtree_stays_whole() {
        let mut t = tree();
        t.apply_all([
            mv((1, 0), ROOT, 0, 2),
            mv((2, 0), 2, 0, 3),
            mv((3, 0), 3, 0, 4),
            mv((4, 0), TRASH, 0, 2),
        ]);
        // A move inside the deleted directory, concurrent with the delete, is kept there.
        assert_eq!(t.apply(mv((4, 1), 2, 1, 4)), Applied::New);
        t.check_invariants();
        assert!(t.is_deleted(&2) && t.is_deleted(&3) && t.is_deleted(&4));
        assert_eq!(t.ancestors(&4).copied().collect::<Vec<_>>(), vec![2, TRASH]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn duplicate_op_changes_nothing() {
        let mut t = tree();
        let op = mv((1, 0), ROOT, 0, 2);
        assert_eq!(t.apply(op.clone()), Applied::New);
        assert_eq!(t.apply(mv((2, 0), 2, 0, 3)), Applied::New);
        let before = snapshot(&t);
        assert_eq!(t.apply(op.clone()), Applied::Duplicate);
        assert_eq!(snapshot(&t), before);
        assert_eq!(t.log_len(), 2);
        let counts = t.apply_all([op.clone(), op]);
        assert_eq!(
            counts,
            ApplyCounts {
                duplicate: 2,
                ..ApplyCounts::default()
            }
        );
    }

    #[test]
    fn same_timestamp_different_op_is_equivocation() {
        let mut t = tree();
        assert_eq!(t.apply(mv((1, 0), ROOT, 0, 2)), Applied::New);
        assert_eq!(t.apply(mv((1, 0), TRASH, 0, 2)), Applied::Equivocation);
        assert_eq!(t.parent(&2).map(|(p, ..)| *p), Some(ROOT));
        assert_eq!(t.log_len(), 1);
    }

    #[test]
    fn move_under_unknown_parent_waits_for_it() {
        let mut t = tree();
        // The move into directory 3 arrives before 3 is created.
        assert_eq!(t.apply(mv((2, 0), 3, 0, 2)), Applied::New);
        assert!(!t.contains(&2));
        assert!(t.is_empty());
        assert_eq!(t.apply(mv((1, 0), ROOT, 0, 3)), Applied::New);
        t.check_invariants();
        assert_eq!(t.parent(&2).map(|(p, ..)| *p), Some(3));
        assert!(t.is_live(&2));
        assert_eq!(t.latest(), Some(&(2, 0)));
    }

    #[test]
    fn roots_cannot_move_and_self_moves_do_nothing() {
        let mut t = tree();
        t.apply(mv((1, 0), ROOT, 0, 2));
        assert_eq!(t.apply(mv((2, 0), 2, 0, ROOT)), Applied::New);
        assert_eq!(t.apply(mv((3, 0), ROOT, 0, TRASH)), Applied::New);
        assert_eq!(t.apply(mv((4, 0), 2, 0, 2)), Applied::New);
        t.check_invariants();
        assert_eq!(t.parent(&ROOT), None);
        assert_eq!(t.parent(&TRASH), None);
        assert_eq!(t.parent(&2), Some((&ROOT, &0, &(1, 0))));
        assert_eq!(t.len(), 1);
        assert_eq!(t.log_len(), 4);
    }

    #[test]
    fn children_are_listed_by_name_then_age() {
        let mut t = tree();
        t.apply_all([
            mv((3, 0), ROOT, 1, 2),
            mv((1, 1), ROOT, 2, 3),
            mv((2, 0), ROOT, 1, 4),
            mv((2, 1), ROOT, 1, 5),
        ]);
        let listing: Vec<_> = t.children(&ROOT).map(|(c, m, ts)| (*c, *m, *ts)).collect();
        assert_eq!(
            listing,
            vec![
                (4, 1, (2, 0)),
                (5, 1, (2, 1)),
                (2, 1, (3, 0)),
                (3, 2, (1, 1))
            ]
        );
        assert_eq!(t.children(&2).count(), 0);
    }

    #[test]
    fn truncated_log_refuses_older_ops() {
        let mut t = tree();
        t.apply_all([mv((1, 0), ROOT, 0, 2), mv((3, 0), ROOT, 0, 3)]);
        assert_eq!(t.truncate_log_before(&(2, 0)), 1);
        assert_eq!(t.horizon(), Some(&(2, 0)));
        // An older horizon is a no-op.
        assert_eq!(t.truncate_log_before(&(1, 0)), 0);
        assert_eq!(t.horizon(), Some(&(2, 0)));
        assert_eq!(t.apply(mv((1, 0), ROOT, 0, 2)), Applied::TooOld);
        assert_eq!(t.apply(mv((1, 5), TRASH, 0, 2)), Applied::TooOld);
        assert_eq!(t.apply(mv((3, 0), ROOT, 0, 3)), Applied::Duplicate);
        // At the horizon itself ops are still accepted.
        assert_eq!(t.apply(mv((2, 0), TRASH, 0, 2)), Applied::New);
        t.check_invariants();
        assert!(t.is_deleted(&2));
        assert_eq!(t.log_len(), 2);
    }
}
