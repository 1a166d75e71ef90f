//! Tests of the merged volume state: each merge rule of the module doc (one or more tests
//! each), and convergence of replicas that see the same ops in any order.

use super::*;
use proptest::prelude::*;

/// (logical clock, author), as (hybrid logical clock, author key) in the volume.
type Ts = (u64, u8);
type St = VolumeState<Ts, u8>;
type Op = VolumeOp<Ts, u8>;
type Signed = (Stamp<Ts, u8>, Op);

impl Timestamp for (u64, u8) {
    fn short_time(&self) -> String {
        format!("{}.{}", self.0, self.1)
    }

    fn least() -> Self {
        (0, 0)
    }
}

const ROOT: NodeId = NodeId::ROOT;
const TRASH: NodeId = NodeId::TRASH;
const AUTHORS: u8 = 3;

fn id(author: u8, k: u8) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 1;
    b[1] = author;
    b[2] = k;
    NodeId(b)
}

fn st(clock: u64, author: u8, seq: u64) -> Stamp<Ts, u8> {
    Stamp {
        ts: (clock, author),
        author,
        seq,
    }
}

fn create(node: NodeId, parent: NodeId, name: &str, kind: Kind) -> Op {
    VolumeOp::Create {
        node,
        parent,
        name: name.as_bytes().to_vec(),
        kind,
        mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        mtime: Time { secs: 1, nanos: 0 },
        target: None,
    }
}

fn mv(node: NodeId, parent: NodeId, name: &str) -> Op {
    VolumeOp::Move {
        node,
        parent,
        name: name.as_bytes().to_vec(),
    }
}

fn write(node: NodeId, content: &str, base: Option<Ts>) -> Op {
    VolumeOp::Write {
        node,
        content: content.as_bytes().to_vec(),
        size: content.len() as u64,
        mtime: Time { secs: 2, nanos: 0 },
        base,
    }
}

fn delete(node: NodeId, seen: &[(u8, u64)]) -> Op {
    VolumeOp::Delete {
        node,
        seen: seen.iter().copied().collect(),
    }
}

fn names(s: &St, dir: NodeId) -> Vec<String> {
    s.list(&dir)
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

fn apply_all(s: &mut St, ops: &[Signed]) {
    for (stamp, op) in ops {
        s.apply(stamp.clone(), op.clone()).expect("valid op");
    }
}

fn state_of(ops: &[Signed]) -> St {
    let mut s = St::new();
    apply_all(&mut s, ops);
    s
}

/// Everything a mount can observe about one id.
#[derive(Debug, Clone, PartialEq)]
struct View {
    list: Vec<Entry>,
    attr: Option<Attr>,
    content: Option<(Ts, Vec<u8>)>,
    conflicts: Vec<(NodeId, Ts)>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl View {
    /// The part that is not the listing.
    fn node_part(&self) -> impl PartialEq + '_ {
        (&self.attr, &self.content, &self.conflicts, &self.xattrs)
    }
}

fn universe(ops: &[Signed]) -> Vec<NodeId> {
    let mut ids: BTreeSet<NodeId> = [ROOT, TRASH].into();
    for (stamp, op) in ops {
        ids.insert(op.node());
        if let VolumeOp::Write { node, .. } = op {
            ids.insert(NodeId::conflict_copy(*node, &stamp.ts));
        }
        if let VolumeOp::Create { parent, .. } | VolumeOp::Move { parent, .. } = op {
            ids.insert(*parent);
        }
    }
    ids.into_iter().collect()
}

fn view(s: &St, ids: &[NodeId]) -> BTreeMap<NodeId, View> {
    ids.iter()
        .map(|n| {
            let v = View {
                list: s.list(n),
                attr: s.attr(n),
                content: s.content(n).map(|w| (w.ts, w.content.clone())),
                conflicts: s.conflicts(n).into_iter().map(|(i, w)| (i, w.ts)).collect(),
                xattrs: s.xattrs(n),
            };
            (*n, v)
        })
        .collect()
}

/// Names are unique in every listing, and every visible node is listed exactly once, in
/// its parent.
fn check_invariants(s: &St, ids: &[NodeId]) {
    let mut listed: BTreeMap<NodeId, usize> = BTreeMap::new();
    for d in ids {
        let list = s.list(d);
        let names: BTreeSet<&Vec<u8>> = list.iter().map(|e| &e.name).collect();
        assert_eq!(
            names.len(),
            list.len(),
            "duplicate names in {d:?}: {list:?}"
        );
        for e in &list {
            assert!(!e.name.is_empty() && !e.name.contains(&b'/'));
            *listed.entry(e.node).or_default() += 1;
            assert!(s.attr(&e.node).is_some(), "{e:?} listed without attributes");
            assert_eq!(s.attr(&e.node).map(|a| a.kind), Some(e.kind));
            // The fast paths agree with the listing.
            assert_eq!(s.lookup(d, &e.name).as_ref(), Some(e), "lookup in {d:?}");
            assert_eq!(s.name_of(&e.node).as_ref(), Some(&e.name), "name of {e:?}");
            assert_eq!(s.parent(&e.node), Some(*d), "parent of {e:?}");
        }
        let mut absent = b"absent".to_vec();
        absent.extend_from_slice(&d.0[..2]);
        assert_eq!(s.lookup(d, &absent), None);
    }
    for n in ids {
        if *n != ROOT && s.attr(n).is_some() {
            assert_eq!(
                listed.get(n),
                Some(&1),
                "{n:?} visible but listed {listed:?}"
            );
        }
    }
}

// ---- simulation of 3 authors, each with its own replica ----

#[derive(Debug, Clone)]
enum Action {
    Create {
        a: u8,
        parent: usize,
        name: u8,
        dir: bool,
    },
    Move {
        a: u8,
        node: usize,
        parent: usize,
        name: u8,
    },
    Delete {
        a: u8,
        node: usize,
    },
    Write {
        a: u8,
        node: usize,
    },
    SetAttr {
        a: u8,
        node: usize,
        mode: u32,
    },
    SetXattr {
        a: u8,
        node: usize,
        name: u8,
        value: Option<u8>,
    },
    Dismiss {
        a: u8,
        node: usize,
    },
    Sync {
        from: u8,
        to: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let a = 0..AUTHORS;
    prop_oneof![
        3 => (a.clone(), any::<usize>(), 0u8..3, any::<bool>())
            .prop_map(|(a, parent, name, dir)| Action::Create { a, parent, name, dir }),
        2 => (a.clone(), any::<usize>(), any::<usize>(), 0u8..3)
            .prop_map(|(a, node, parent, name)| Action::Move { a, node, parent, name }),
        1 => (a.clone(), any::<usize>()).prop_map(|(a, node)| Action::Delete { a, node }),
        6 => (a.clone(), any::<usize>()).prop_map(|(a, node)| Action::Write { a, node }),
        1 => (a.clone(), any::<usize>(), 0u32..4)
            .prop_map(|(a, node, mode)| Action::SetAttr { a, node, mode: 0o600 + mode }),
        1 => (a.clone(), any::<usize>(), 0u8..2, prop::option::of(0u8..3))
            .prop_map(|(a, node, name, value)| Action::SetXattr { a, node, name, value }),
        2 => (a.clone(), any::<usize>()).prop_map(|(a, node)| Action::Dismiss { a, node }),
        4 => (a.clone(), 0..AUTHORS).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

const MAX_CREATES: u8 = 4;

struct Replica {
    state: St,
    held: BTreeMap<Ts, Signed>,
}

struct Sim {
    reps: Vec<Replica>,
    seq: Vec<u64>,
    created: Vec<u8>,
    log: Vec<Signed>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            reps: (0..AUTHORS)
                .map(|_| Replica {
                    state: St::new(),
                    held: BTreeMap::new(),
                })
                .collect(),
            seq: vec![0; AUTHORS as usize],
            created: vec![0; AUTHORS as usize],
            log: Vec::new(),
        }
    }

    fn run(actions: &[Action]) -> Sim {
        let mut sim = Sim::new();
        for a in actions {
            sim.step(a);
        }
        sim
    }

    fn vv(&self, a: u8) -> VersionVector<u8> {
        let mut vv = VersionVector::new();
        for (stamp, _) in self.reps[a as usize].held.values() {
            let e = vv.entry(stamp.author).or_insert(0);
            *e = (*e).max(stamp.seq);
        }
        vv
    }

    fn emit(&mut self, a: u8, op: Op) -> Ts {
        let r = &mut self.reps[a as usize];
        let clock = r.held.keys().map(|t| t.0).max().unwrap_or(0) + 1;
        self.seq[a as usize] += 1;
        let stamp = st(clock, a, self.seq[a as usize]);
        r.state
            .apply(stamp.clone(), op.clone())
            .expect("own op applies");
        r.held.insert(stamp.ts, (stamp.clone(), op.clone()));
        self.log.push((stamp.clone(), op));
        stamp.ts
    }

    fn sync(&mut self, from: u8, to: u8) {
        if from == to {
            return;
        }
        let ops: Vec<Signed> = self.reps[from as usize].held.values().cloned().collect();
        let r = &mut self.reps[to as usize];
        for (stamp, op) in ops {
            if !r.held.contains_key(&stamp.ts) {
                r.state.apply(stamp.clone(), op.clone()).expect("valid op");
                r.held.insert(stamp.ts, (stamp, op));
            }
        }
    }

    /// The visible nodes of `a`'s replica (not the root, not conflict copies).
    fn visible(&self, a: u8) -> Vec<(NodeId, Kind)> {
        let s = &self.reps[a as usize].state;
        let mut out = Vec::new();
        let mut todo = vec![ROOT];
        while let Some(d) = todo.pop() {
            for e in s.list(&d) {
                if e.copy_of.is_none() {
                    out.push((e.node, e.kind));
                    if e.kind == Kind::Dir {
                        todo.push(e.node);
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn pick(list: &[NodeId], i: usize) -> Option<NodeId> {
        (!list.is_empty()).then(|| list[i % list.len()])
    }

    fn step(&mut self, action: &Action) {
        let name = |n: &u8| vec![b"a", b"b", b"c"][*n as usize % 3].to_vec();
        let of = |sim: &Sim, a: u8, kind: Option<Kind>| -> Vec<NodeId> {
            sim.visible(a)
                .into_iter()
                .filter(|(_, k)| kind.is_none_or(|want| *k == want))
                .map(|(n, _)| n)
                .collect()
        };
        let dirs = |sim: &Sim, a: u8| -> Vec<NodeId> {
            let mut d = vec![ROOT];
            d.extend(of(sim, a, Some(Kind::Dir)));
            d
        };
        match action {
            Action::Create {
                a,
                parent,
                name: n,
                dir,
            } => {
                if self.created[*a as usize] >= MAX_CREATES {
                    return;
                }
                self.created[*a as usize] += 1;
                let node = id(*a, self.created[*a as usize]);
                let parent = dirs(self, *a)[parent % dirs(self, *a).len()];
                let kind = if *dir { Kind::Dir } else { Kind::File };
                let mut op = create(node, parent, "", kind);
                if let VolumeOp::Create { name: nm, .. } = &mut op {
                    *nm = name(n);
                }
                self.emit(*a, op);
            }
            Action::Move {
                a,
                node,
                parent,
                name: n,
            } => {
                let Some(node) = Self::pick(&of(self, *a, None), *node) else {
                    return;
                };
                let ds = dirs(self, *a);
                let parent = ds[parent % ds.len()];
                self.emit(
                    *a,
                    VolumeOp::Move {
                        node,
                        parent,
                        name: name(n),
                    },
                );
            }
            Action::Delete { a, node } => {
                let Some(node) = Self::pick(&of(self, *a, None), *node) else {
                    return;
                };
                let seen = self.vv(*a);
                self.emit(*a, VolumeOp::Delete { node, seen });
            }
            Action::Write { a, node } => {
                let Some(node) = Self::pick(&of(self, *a, Some(Kind::File)), *node) else {
                    return;
                };
                let base = self.reps[*a as usize].state.content(&node).map(|w| w.ts);
                let content = format!("{a}:{}", self.seq[*a as usize] + 1);
                self.emit(*a, write(node, &content, base));
            }
            Action::SetAttr { a, node, mode } => {
                let Some(node) = Self::pick(&of(self, *a, None), *node) else {
                    return;
                };
                self.emit(
                    *a,
                    VolumeOp::SetAttr {
                        node,
                        mode: Some(*mode),
                        uid: None,
                        gid: Some(*mode),
                        atime: None,
                        mtime: Some(Time {
                            secs: i64::from(*mode),
                            nanos: 0,
                        }),
                    },
                );
            }
            Action::SetXattr {
                a,
                node,
                name: n,
                value,
            } => {
                let Some(node) = Self::pick(&of(self, *a, None), *node) else {
                    return;
                };
                self.emit(
                    *a,
                    VolumeOp::SetXattr {
                        node,
                        name: name(n),
                        value: value.map(|v| vec![v]),
                    },
                );
            }
            Action::Dismiss { a, node } => {
                let files = of(self, *a, Some(Kind::File));
                let Some(node) = Self::pick(&files, *node) else {
                    return;
                };
                let first = self.reps[*a as usize]
                    .state
                    .conflicts(&node)
                    .first()
                    .map(|(_, w)| w.ts);
                if let Some(write) = first {
                    self.emit(*a, VolumeOp::Dismiss { node, write });
                }
            }
            Action::Sync { from, to } => self.sync(*from, *to),
        }
    }
}

/// A deterministic shuffle of `ops` with some duplicates, from `seed`.
fn delivery(ops: &[Signed], seed: u64) -> Vec<Signed> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = ops.to_vec();
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    let dups = if ops.is_empty() { 0 } else { next() % 5 };
    for _ in 0..dups {
        let op = ops[(next() % ops.len() as u64) as usize].clone();
        let at = (next() % (out.len() as u64 + 1)) as usize;
        out.insert(at, op);
    }
    out
}

/// Apply `ops` in order, checking after each step that every observable difference is
/// reported in the returned `Change`.
fn apply_checking_changes(ops: &[Signed], ids: &[NodeId]) -> St {
    let mut s = St::new();
    let mut before = view(&s, ids);
    for (stamp, op) in ops {
        let dup = s.contains(&stamp.ts);
        let change = s.apply(stamp.clone(), op.clone()).expect("valid op");
        let after = view(&s, ids);
        check_invariants(&s, ids);
        if dup {
            assert!(change.is_empty(), "duplicate reported {change:?}");
        }
        for n in ids {
            let (b, a) = (&before[n], &after[n]);
            assert!(
                b.list == a.list || change.dirs.contains(n),
                "listing of {n:?} changed unreported by {op:?}: {:?} -> {:?}, {change:?}",
                b.list,
                a.list
            );
            assert!(
                b.node_part() == a.node_part() || change.nodes.contains(n),
                "{n:?} changed unreported by {op:?}: {b:?} -> {a:?}, {change:?}"
            );
        }
        before = after;
    }
    s
}

fn history() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(action(), 10..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) + (f): three replicas given the op set in different orders with duplicates show
    /// the same thing as each other and as timestamp order, and every step's `Change`
    /// covers what it changed.
    #[test]
    fn replicas_converge_and_changes_are_complete(
        actions in history(),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let sim = Sim::run(&actions);
        let ids = universe(&sim.log);
        let mut sorted = sim.log.clone();
        sorted.sort_by_key(|(s, _)| s.ts);
        let reference = state_of(&sorted);
        check_invariants(&reference, &ids);
        let expected = view(&reference, &ids);
        for seed in seeds {
            let s = apply_checking_changes(&delivery(&sim.log, seed), &ids);
            check_invariants(&s, &ids);
            prop_assert_eq!(&view(&s, &ids), &expected);
        }
    }

    /// (b): every write is the content, a shown conflict copy, replaced by a later write,
    /// dismissed, or its file was deleted by someone who had seen it.
    #[test]
    fn no_acknowledged_write_is_lost(actions in history()) {
        let sim = Sim::run(&actions);
        let s = state_of(&sim.log);
        for (stamp, op) in &sim.log {
            let VolumeOp::Write { node, .. } = op else { continue };
            let ts = stamp.ts;
            if s.visible(node) {
                let content = s.content(node).map(|w| w.ts) == Some(ts);
                let copy = s.conflicts(node).iter().any(|(_, w)| w.ts == ts);
                let replaced = sim.log.iter().any(|(_, o)| {
                    matches!(o, VolumeOp::Write { node: n, base: Some(b), .. }
                        if n == node && *b == ts)
                });
                let dismissed = sim.log.iter().any(|(_, o)| {
                    matches!(o, VolumeOp::Dismiss { node: n, write } if n == node && *write == ts)
                });
                prop_assert!(content || copy || replaced || dismissed, "write {:?} lost", ts);
                prop_assert!(!(copy && dismissed), "dismissed write {:?} still shown", ts);
                if copy {
                    let id = NodeId::conflict_copy(*node, &ts);
                    let parent = s.tree.parent(node).map(|(p, ..)| *p).unwrap();
                    prop_assert!(s.list(&parent).iter().any(|e| e.node == id));
                }
            } else {
                // Deleted: some valid delete of it or an ancestor had seen the write.
                let chain: Vec<NodeId> = std::iter::once(*node)
                    .chain(s.tree.ancestors(node).copied())
                    .collect();
                prop_assert_eq!(chain.last(), Some(&TRASH));
                let covered = sim.log.iter().any(|(ds, o)| {
                    matches!(o, VolumeOp::Delete { node: d, seen }
                        if chain.contains(d)
                            && s.delete_is_valid(&ds.ts)
                            && covers(seen, &stamp.author, stamp.seq))
                });
                prop_assert!(covered, "write {:?} to a deleted node that no delete saw", ts);
            }
        }
    }

    /// (c): a delete concurrent with an edit inside what it deletes has no effect, whichever
    /// arrives first and whichever has the larger clock.
    #[test]
    fn delete_concurrent_with_edit_keeps_the_edit(
        depth in 1usize..4,
        target in 0usize..4,
        edit in 0u8..3,
        delete_clock in 10u64..13,
        edit_clock in 10u64..13,
    ) {
        // Author 0 builds root/d1/.../d<depth>/f and an outside file g, written once.
        let mut setup = Vec::new();
        let mut seq = 0;
        let mut push = |setup: &mut Vec<Signed>, op: Op| {
            seq += 1;
            setup.push((st(seq, 0, seq), op));
        };
        let mut parent = ROOT;
        let mut dirs = Vec::new();
        for k in 0..depth {
            let d = id(0, k as u8 + 1);
            push(&mut setup, create(d, parent, "d", Kind::Dir));
            dirs.push(d);
            parent = d;
        }
        let f = id(0, 10);
        let g = id(0, 11);
        push(&mut setup, create(f, parent, "f", Kind::File));
        push(&mut setup, create(g, ROOT, "g", Kind::File));
        push(&mut setup, write(f, "f1", None));
        let f1 = (seq, 0);
        let seen = [(0u8, seq)];
        let mut chain = dirs.clone();
        chain.push(f);
        let deleted = chain[target % chain.len()];
        let del = (st(delete_clock, 1, 1), delete(deleted, &seen));
        // The edit: a write to f, a create in the deepest directory, or a move of g there.
        let (edit_op, kept) = match (edit, deleted == f) {
            (0, _) | (_, true) => (write(f, "f2", Some(f1)), f),
            (1, false) => (create(id(2, 1), parent, "new", Kind::File), id(2, 1)),
            _ => (mv(g, parent, "g"), g),
        };
        let ed = (st(edit_clock, 2, 1), edit_op);
        let ids = universe(&[setup.clone(), vec![del.clone(), ed.clone()]].concat());
        let mut views = Vec::new();
        for order in [[del.clone(), ed.clone()], [ed.clone(), del.clone()]] {
            let ops = [setup.clone(), order.to_vec()].concat();
            let s = apply_checking_changes(&ops, &ids);
            prop_assert!(!s.delete_is_valid(&del.0.ts));
            prop_assert!(s.visible(&kept), "edited node {:?} not visible", kept);
            prop_assert!(s.visible(&deleted));
            if kept == f {
                prop_assert_eq!(s.content(&f).map(|w| w.content.clone()), Some(b"f2".to_vec()));
            }
            views.push(view(&s, &ids));
        }
        prop_assert_eq!(&views[0], &views[1]);
    }

    /// (d): two concurrent writes to one file give one conflict copy naming both authors;
    /// a later write based on the winner leaves it visible.
    #[test]
    fn concurrent_writes_make_one_conflict_copy(
        pre in 0u64..3,
        c1 in 10u64..13,
        c2 in 10u64..13,
        later in any::<bool>(),
        swap in any::<bool>(),
    ) {
        let f = id(0, 1);
        let mut common = vec![(st(1, 0, 1), create(f, ROOT, "f", Kind::File))];
        let mut base = None;
        for k in 0..pre {
            common.push((st(2 + k, 0, 2 + k), write(f, &format!("p{k}"), base)));
            base = Some((2 + k, 0));
        }
        let w1 = (st(c1, 1, 1), write(f, "one", base));
        let w2 = (st(c2, 2, 1), write(f, "two", base));
        let (winner, loser) = if w1.0.ts > w2.0.ts { (&w1, &w2) } else { (&w2, &w1) };
        let mut rest = if swap { vec![w2.clone(), w1.clone()] } else { vec![w1.clone(), w2.clone()] };
        let mut winner_author = winner.0.author;
        let mut content = winner.1.clone();
        if later {
            let w3 = (st(20, 0, 10), write(f, "three", Some(winner.0.ts)));
            winner_author = 0;
            content = w3.1.clone();
            rest.insert(1, w3);
        }
        let s = state_of(&[common, rest].concat());
        let copies: Vec<Entry> = s.list(&ROOT).into_iter().filter(|e| e.copy_of == Some(f)).collect();
        prop_assert_eq!(copies.len(), 1);
        let expected = format!("f (conflict {} vs {})", loser.0.author, winner_author);
        prop_assert_eq!(String::from_utf8(copies[0].name.clone()).unwrap(), expected);
        prop_assert_eq!(copies[0].node, NodeId::conflict_copy(f, &loser.0.ts));
        let VolumeOp::Write { content: expected_content, .. } = content else { unreachable!() };
        prop_assert_eq!(&s.content(&f).unwrap().content, &expected_content);
        prop_assert_eq!(s.content(&copies[0].node).map(|w| w.ts), Some(loser.0.ts));
        prop_assert!(s.attr(&copies[0].node).unwrap().read_only);
    }

    /// (e): concurrent creates of one name show every entry under distinct names; the
    /// oldest keeps the name, even when a real entry already has a generated name.
    #[test]
    fn name_collisions_show_every_entry(
        clocks in prop::collection::vec((5u64..8, any::<bool>()), 2..4),
        squatter in any::<bool>(),
    ) {
        let mut ops = Vec::new();
        if squatter {
            // A real entry already named like the conflict name author 1 would get.
            let name = format!("x (conflict 1 {}.1)", clocks[1].0);
            ops.push((st(1, 0, 1), create(id(0, 9), ROOT, &name, Kind::File)));
        }
        let mut made = Vec::new();
        for (a, (clock, dir)) in clocks.iter().enumerate() {
            let a = a as u8;
            let kind = if *dir { Kind::Dir } else { Kind::File };
            let n = id(a, 1);
            let seq = if a == 0 && squatter { 2 } else { 1 };
            ops.push((st(*clock, a, seq), create(n, ROOT, "x", kind)));
            made.push(((*clock, a), n));
        }
        let s = state_of(&ops);
        let list = s.list(&ROOT);
        check_invariants(&s, &universe(&ops));
        prop_assert_eq!(list.len(), made.len() + usize::from(squatter));
        let oldest = made.iter().min().unwrap().1;
        prop_assert_eq!(s.lookup(&ROOT, b"x").map(|e| e.node), Some(oldest));
        for (_, n) in &made {
            prop_assert_eq!(list.iter().filter(|e| e.node == *n).count(), 1);
        }
        if squatter {
            let name = format!("x (conflict 1 {}.1)", clocks[1].0);
            prop_assert_eq!(s.lookup(&ROOT, name.as_bytes()).map(|e| e.node), Some(id(0, 9)));
        }
    }
}

// ---- named unit tests, one or more per rule ----

#[test]
fn rule1_concurrent_cross_renames_keep_both_nodes() {
    let (a, b) = (id(0, 1), id(0, 2));
    let setup = vec![
        (st(1, 0, 1), create(a, ROOT, "a", Kind::Dir)),
        (st(2, 0, 2), create(b, ROOT, "b", Kind::Dir)),
    ];
    // Author 1 moves a under b, author 2 b under a: the older move wins.
    let a_under_b = (st(3, 1, 1), mv(a, b, "a"));
    let b_under_a = (st(3, 2, 1), mv(b, a, "b"));
    let s1 = state_of(&[setup.clone(), vec![a_under_b.clone(), b_under_a.clone()]].concat());
    let s2 = state_of(&[setup, vec![b_under_a, a_under_b]].concat());
    for s in [&s1, &s2] {
        assert_eq!(names(s, ROOT), ["b"]);
        assert_eq!(names(s, b), ["a"]);
        assert!(s.list(&a).is_empty());
        assert!(s.visible(&a) && s.visible(&b));
    }
}

#[test]
fn rule1_ops_before_their_create_wait_for_it() {
    let (d, f) = (id(0, 1), id(0, 2));
    let create_d = (st(1, 0, 1), create(d, ROOT, "d", Kind::Dir));
    let create_f = (st(2, 0, 2), create(f, d, "f", Kind::File));
    let attr = (
        st(3, 0, 3),
        VolumeOp::SetAttr {
            node: f,
            mode: Some(0o600),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        },
    );
    let w = (st(4, 0, 4), write(f, "x", None));
    let mut s = St::new();
    // A rename of f to the root arrives before f's create: f is not shown yet.
    let rename = (st(5, 1, 1), mv(f, ROOT, "g"));
    apply_all(&mut s, std::slice::from_ref(&rename));
    assert!(s.list(&ROOT).is_empty());
    assert_eq!(s.attr(&f), None);
    let mut s = St::new();
    apply_all(&mut s, &[attr, w, create_f]);
    // f hangs under d, which does not exist yet: nothing shows.
    assert!(s.list(&ROOT).is_empty());
    assert_eq!(s.attr(&f), None);
    let change = s.apply(create_d.0, create_d.1).unwrap();
    assert!(change.dirs.contains(&ROOT) && change.dirs.contains(&d));
    assert!(change.nodes.contains(&f));
    assert_eq!(names(&s, d), ["f"]);
    let attr = s.attr(&f).unwrap();
    assert_eq!((attr.mode, attr.size), (0o600, 1));
    // And the early rename, once everything it needs is there, takes effect.
    s.apply(rename.0, rename.1).unwrap();
    assert_eq!(names(&s, ROOT), ["d", "g"]);
    assert!(s.list(&d).is_empty());
}

#[test]
fn rule2_the_older_entry_keeps_the_name() {
    let (x, y) = (id(1, 1), id(2, 1));
    let ops = [
        (st(5, 2, 1), create(y, ROOT, "x", Kind::Dir)),
        (st(5, 1, 1), create(x, ROOT, "x", Kind::File)),
    ];
    let s = state_of(&ops);
    assert_eq!(names(&s, ROOT), ["x", "x (conflict 2 5.2)"]);
    assert_eq!(
        s.lookup(&ROOT, b"x").map(|e| (e.node, e.kind)),
        Some((x, Kind::File))
    );
    let other = s.lookup(&ROOT, b"x (conflict 2 5.2)").unwrap();
    assert_eq!((other.node, other.kind), (y, Kind::Dir));
    // Renaming the older one away gives the name back.
    let mut s = s;
    s.apply(st(6, 1, 2), mv(x, ROOT, "z")).unwrap();
    assert_eq!(names(&s, ROOT), ["x", "z"]);
    assert_eq!(s.lookup(&ROOT, b"x").map(|e| e.node), Some(y));
}

#[test]
fn rule2_a_generated_name_never_hides_a_real_one() {
    let ops = [
        (
            st(1, 0, 1),
            create(id(0, 1), ROOT, "x (conflict 2 5.2)", Kind::File),
        ),
        (st(5, 1, 1), create(id(1, 1), ROOT, "x", Kind::File)),
        (st(5, 2, 1), create(id(2, 1), ROOT, "x", Kind::File)),
    ];
    let s = state_of(&ops);
    assert_eq!(
        names(&s, ROOT),
        ["x", "x (conflict 2 5.2)", "x (conflict 2 5.2) (2)"]
    );
    assert_eq!(
        s.lookup(&ROOT, b"x (conflict 2 5.2)").map(|e| e.node),
        Some(id(0, 1))
    );
    assert_eq!(
        s.lookup(&ROOT, b"x (conflict 2 5.2) (2)").map(|e| e.node),
        Some(id(2, 1))
    );
}

fn two_writers() -> (NodeId, Vec<Signed>, Signed, Signed) {
    let f = id(0, 1);
    let common = vec![
        (st(1, 0, 1), create(f, ROOT, "f", Kind::File)),
        (st(2, 0, 2), write(f, "base", None)),
    ];
    let w1 = (st(3, 1, 1), write(f, "one", Some((2, 0))));
    let w2 = (st(3, 2, 1), write(f, "two", Some((2, 0))));
    (f, common, w1, w2)
}

#[test]
fn rule3_concurrent_writes_show_a_copy_naming_both_authors() {
    let (f, common, w1, w2) = two_writers();
    let s = state_of(&[common, vec![w2, w1]].concat());
    assert_eq!(names(&s, ROOT), ["f", "f (conflict 1 vs 2)"]);
    assert_eq!(s.content(&f).unwrap().content, b"two");
    let copy = s.lookup(&ROOT, b"f (conflict 1 vs 2)").unwrap();
    assert_eq!(copy.node, NodeId::conflict_copy(f, &(3u64, 1u8)));
    assert_eq!(copy.copy_of, Some(f));
    assert_eq!(s.content(&copy.node).unwrap().content, b"one");
    let attr = s.attr(&copy.node).unwrap();
    assert!(attr.read_only);
    assert_eq!((attr.mode, attr.size), (0o444, 3));
    assert_eq!(s.conflicts(&f).len(), 1);
}

#[test]
fn rule3_the_loser_stays_until_dismissed() {
    let (f, common, w1, w2) = two_writers();
    let mut s = state_of(&[common, vec![w1, w2]].concat());
    // A later write based on the winner does not resolve the conflict.
    s.apply(st(4, 2, 2), write(f, "three", Some((3, 2))))
        .unwrap();
    assert_eq!(names(&s, ROOT), ["f", "f (conflict 1 vs 2)"]);
    assert_eq!(s.content(&f).unwrap().content, b"three");
    let copy = NodeId::conflict_copy(f, &(3u64, 1u8));
    let change = s
        .apply(
            st(5, 0, 3),
            VolumeOp::Dismiss {
                node: f,
                write: (3, 1),
            },
        )
        .unwrap();
    assert!(change.dirs.contains(&ROOT) && change.nodes.contains(&copy));
    assert_eq!(names(&s, ROOT), ["f"]);
    assert_eq!(s.attr(&copy), None);
    assert_eq!(s.content(&copy), None);
}

#[test]
fn rule3_a_write_based_on_the_loser_merges_it() {
    let (f, common, w1, w2) = two_writers();
    let mut s = state_of(&[common, vec![w1, w2]].concat());
    // Author 1 merges by hand on top of its own (losing) version: that one is replaced, and
    // the new write (the newest head) is now the content, with author 2's as the copy.
    s.apply(st(4, 1, 2), write(f, "merged", Some((3, 1))))
        .unwrap();
    assert_eq!(names(&s, ROOT), ["f", "f (conflict 2 vs 1)"]);
    assert_eq!(s.content(&f).unwrap().content, b"merged");
    assert_eq!(s.attr(&NodeId::conflict_copy(f, &(3u64, 1u8))), None);
    s.apply(
        st(5, 1, 3),
        VolumeOp::Dismiss {
            node: f,
            write: (3, 2),
        },
    )
    .unwrap();
    assert_eq!(names(&s, ROOT), ["f"]);
}

#[test]
fn rule4_a_delete_concurrent_with_a_write_is_void_in_both_orders() {
    let (d, f) = (id(0, 1), id(0, 2));
    let common = vec![
        (st(1, 0, 1), create(d, ROOT, "d", Kind::Dir)),
        (st(2, 0, 2), create(f, d, "f", Kind::File)),
    ];
    // The delete has the larger clock: by the tree alone it would win.
    let del = (st(9, 1, 1), delete(d, &[(0, 2)]));
    let w = (st(3, 2, 1), write(f, "kept", None));
    let mut s1 = state_of(&common);
    s1.apply(del.0.clone(), del.1.clone()).unwrap();
    assert!(!s1.visible(&d));
    let change = s1.apply(w.0.clone(), w.1.clone()).unwrap();
    assert!(change.rebuilt && change.dirs.contains(&ROOT) && change.nodes.contains(&f));
    assert_eq!(s1.rebuilds(), 1);
    let s2 = state_of(&[common, vec![w, del.clone()]].concat());
    assert_eq!(s2.rebuilds(), 0);
    for s in [&s1, &s2] {
        assert!(!s.delete_is_valid(&del.0.ts));
        assert_eq!(names(s, ROOT), ["d"]);
        assert_eq!(s.content(&f).unwrap().content, b"kept");
    }
}

#[test]
fn rule4_a_delete_that_saw_the_edit_wins() {
    let (d, f) = (id(0, 1), id(0, 2));
    let ops = [
        (st(1, 0, 1), create(d, ROOT, "d", Kind::Dir)),
        (st(2, 0, 2), create(f, d, "f", Kind::File)),
        (st(3, 2, 1), write(f, "seen", None)),
        (st(4, 1, 1), delete(d, &[(0, 2), (2, 1)])),
    ];
    let s = state_of(&ops);
    assert!(s.delete_is_valid(&(4, 1)));
    assert!(s.list(&ROOT).is_empty());
    assert_eq!(s.attr(&f), None);
}

#[test]
fn rule4_a_create_inside_a_concurrently_deleted_dir_keeps_it() {
    let (d, e, g) = (id(0, 1), id(0, 2), id(2, 1));
    let common = vec![
        (st(1, 0, 1), create(d, ROOT, "d", Kind::Dir)),
        (st(2, 0, 2), create(e, d, "e", Kind::Dir)),
    ];
    let del = (st(5, 1, 1), delete(d, &[(0, 2)]));
    let new = (st(4, 2, 1), create(g, e, "g", Kind::File));
    for order in [[del.clone(), new.clone()], [new.clone(), del.clone()]] {
        let s = state_of(&[common.clone(), order.to_vec()].concat());
        assert_eq!(names(&s, e), ["g"]);
        assert!(s.visible(&d));
    }
    // A delete of an unrelated sibling is not affected.
    let h = id(0, 3);
    let mut s = state_of(&[common, vec![new]].concat());
    s.apply(st(6, 0, 3), create(h, ROOT, "h", Kind::File))
        .unwrap();
    s.apply(st(7, 1, 1), delete(h, &[(0, 3)])).unwrap();
    assert!(s.delete_is_valid(&(7, 1)));
    assert_eq!(names(&s, ROOT), ["d"]);
}

#[test]
fn rule5_last_writer_wins_per_field() {
    let f = id(0, 1);
    let set = |mode, uid| VolumeOp::SetAttr {
        node: f,
        mode,
        uid,
        gid: None,
        atime: None,
        mtime: None,
    };
    let xattr = |value: Option<&str>| VolumeOp::SetXattr {
        node: f,
        name: b"user.k".to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
    };
    let ops = vec![
        (st(1, 0, 1), create(f, ROOT, "f", Kind::File)),
        (st(5, 1, 1), set(Some(0o600), Some(7))),
        (st(4, 2, 1), set(Some(0o640), Some(8))),
        (st(6, 2, 2), set(None, Some(9))),
        (st(7, 1, 2), xattr(Some("v1"))),
        (st(8, 2, 3), xattr(None)),
        (st(3, 0, 2), xattr(Some("old"))),
    ];
    for seed in 0..4 {
        let s = state_of(&delivery(&ops, seed));
        let attr = s.attr(&f).unwrap();
        assert_eq!((attr.mode, attr.uid, attr.gid), (0o600, 9, 1000));
        assert!(s.xattrs(&f).is_empty());
    }
    let s = state_of(&ops[..5]);
    assert_eq!(
        s.xattrs(&f).get(b"user.k".as_slice()),
        Some(&b"v1".to_vec())
    );
}

#[test]
fn rule6_refused_ops_change_nothing() {
    let f = id(0, 1);
    let mut s = state_of(&[
        (st(1, 0, 1), create(f, ROOT, "f", Kind::File)),
        (st(2, 0, 2), write(f, "x", None)),
    ]);
    let ids = [ROOT, TRASH, f];
    let before = view(&s, &ids);
    let len = s.len();
    let refused = [
        // Same timestamp, different op.
        (st(2, 0, 2), write(f, "y", None)),
        // Same author and sequence number, other timestamp.
        (st(3, 0, 2), write(f, "y", None)),
        (st(4, 0, 0), write(f, "y", None)),
        (st(4, 0, 3), mv(ROOT, f, "r")),
        (st(4, 0, 3), mv(f, TRASH, "f")),
        (st(4, 0, 3), create(id(0, 2), TRASH, "t", Kind::File)),
        (st(4, 0, 3), delete(ROOT, &[])),
    ];
    for (stamp, op) in refused {
        assert!(s.apply(stamp, op).is_err());
        assert_eq!(view(&s, &ids), before);
        assert_eq!(s.len(), len);
    }
    assert!(matches!(
        s.apply(st(2, 0, 2), write(f, "y", None)),
        Err(ApplyError::Equivocation { author: 0, seq: 2 })
    ));
}

#[test]
fn duplicates_are_no_ops() {
    let f = id(0, 1);
    let ops = [
        (st(1, 0, 1), create(f, ROOT, "f", Kind::File)),
        (st(2, 0, 2), write(f, "x", None)),
    ];
    let mut s = state_of(&ops);
    let before = view(&s, &[ROOT, f]);
    for (stamp, op) in ops {
        assert_eq!(s.apply(stamp, op), Ok(Change::default()));
    }
    assert_eq!(view(&s, &[ROOT, f]), before);
    assert_eq!(s.len(), 2);
}

#[test]
fn node_ids_print_and_parse() {
    let n = id(3, 7);
    let text = n.to_string();
    assert_eq!(text, "01030700000000000000000000000000");
    assert_eq!(text.parse::<NodeId>(), Ok(n));
    assert_eq!(format!("{n:?}"), "NodeId(01030700..)");
    assert!("0103".parse::<NodeId>().is_err());
    assert!("zz030700000000000000000000000000"
        .parse::<NodeId>()
        .is_err());
    assert_ne!(
        NodeId::conflict_copy(n, &(1u64, 0u8)),
        NodeId::conflict_copy(n, &(1u64, 1u8))
    );
}

#[test]
fn ops_round_trip_through_postcard() {
    let ops: Vec<Op> = vec![
        create(id(0, 1), ROOT, "f", Kind::Symlink),
        delete(id(0, 1), &[(0, 3), (2, 1)]),
        write(id(0, 1), "c", Some((4, 2))),
        VolumeOp::Dismiss {
            node: id(0, 1),
            write: (4, 2),
        },
    ];
    for op in ops {
        let bytes = postcard::to_stdvec(&op).unwrap();
        assert_eq!(postcard::from_bytes::<Op>(&bytes).unwrap(), op);
    }
}

#[test]
fn rogue_ops_keep_the_view_consistent() {
    // No honest member makes these: a move under a file, and a second, older `Create` of an
    // existing id with another kind. The view must still converge, list every visible node
    // once, and report every change.
    let (d, f, g) = (id(0, 1), id(0, 2), id(0, 3));
    let ops = vec![
        (st(2, 0, 1), create(d, ROOT, "d", Kind::Dir)),
        (st(3, 0, 2), create(f, ROOT, "f", Kind::File)),
        (st(4, 0, 3), create(g, d, "g", Kind::File)),
        (st(5, 1, 1), mv(g, f, "g")),
        (st(1, 2, 1), create(d, ROOT, "d", Kind::File)),
        (st(6, 2, 2), create(id(2, 9), d, "h", Kind::File)),
    ];
    let ids = universe(&ops);
    let reference = state_of(&ops);
    check_invariants(&reference, &ids);
    assert_eq!(names(&reference, ROOT), ["d", "f"]);
    assert!(!reference.visible(&g) && !reference.visible(&id(2, 9)));
    for seed in 0..16 {
        let s = apply_checking_changes(&delivery(&ops, seed), &ids);
        check_invariants(&s, &ids);
        assert_eq!(view(&s, &ids), view(&reference, &ids));
    }
}
