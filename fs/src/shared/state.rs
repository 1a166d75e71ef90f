//! What a mount knows of a shared volume besides the merged state itself: the inode numbers it
//! gave out, the directory listings it computed, the names it handed to the kernel (checked on
//! every remote change to tell the kernel what to forget), files removed while open, and the
//! run of each author's ops taken in; and the conversions between the CRDT's types and fs's.

use std::sync::Arc;

use dfs_node::ops::{AuthorId, OpId};

use super::{Inval, Seen, State};
use crate::crdt::volume::{self as crdt, Entry, VersionVector};
use crate::crdt::NodeId;
use crate::model::{FsError, Ino, Kind, Result, Time, ROOT};
use crate::namespace::Base;

impl Seen {
    pub(super) fn mark(&mut self, author: AuthorId, seq: u64) {
        let (prefix, above) = self.0.entry(author).or_default();
        if seq <= *prefix {
            return;
        }
        above.insert(seq);
        while above.remove(&(*prefix + 1)) {
            *prefix += 1;
        }
    }

    pub(super) fn vector(&self) -> VersionVector<AuthorId> {
        self.0
            .iter()
            .filter(|(_, (prefix, _))| *prefix > 0)
            .map(|(a, (prefix, _))| (*a, *prefix))
            .collect()
    }
}

impl State {
    pub(super) fn ino_of(&mut self, node: NodeId) -> Ino {
        if node == NodeId::ROOT {
            return ROOT;
        }
        if let Some(ino) = self.inos.get(&node) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino = ino.next();
        self.inos.insert(node, ino);
        self.nodes.insert(ino, node);
        ino
    }

    pub(super) fn node_of(&self, ino: Ino) -> Result<NodeId> {
        if ino == ROOT {
            return Ok(NodeId::ROOT);
        }
        self.nodes.get(&ino).copied().ok_or(FsError::NotFound)
    }

    pub(super) fn listing(&mut self, dir: NodeId) -> Arc<Vec<Entry>> {
        if let Some(l) = self.listings.get(&dir) {
            return l.clone();
        }
        let l = Arc::new(self.vol.list(&dir));
        self.listings.insert(dir, l.clone());
        l
    }

    /// The entry `name` of `dir`, a visible directory.
    pub(super) fn entry(&mut self, dir: NodeId, name: &[u8]) -> Result<Option<Entry>> {
        self.dir_attr(dir)?;
        Ok(self.vol.lookup(&dir, name))
    }

    /// The kernel now knows `name` in `dir` as `node`.
    pub(super) fn expose(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        self.exposed
            .entry(dir)
            .or_default()
            .insert(name.to_vec(), node);
    }

    /// The kernel dropped `name` in `dir` (this mount removed or renamed it).
    pub(super) fn unexpose(&mut self, dir: NodeId, name: &[u8]) {
        if let Some(names) = self.exposed.get_mut(&dir) {
            names.remove(name);
        }
    }

    /// Forget the listings of the directories a local op changed (the kernel learns of its own
    /// changes from the replies).
    pub(super) fn forget(&mut self, change: &crdt::Change) {
        for dir in &change.dirs {
            self.listings.remove(dir);
        }
    }

    pub(super) fn dir_attr(&self, dir: NodeId) -> Result<crdt::Attr> {
        let attr = self.vol.attr(&dir).ok_or(FsError::NotFound)?;
        if attr.kind != crdt::Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(attr)
    }

    /// After a remote change: drop the listings of its directories and say what the kernel
    /// must forget: every name it was given there that now names another node or nothing,
    /// and the changed directories and nodes it may hold.
    pub(super) fn refresh(&mut self, change: &crdt::Change) -> Vec<Inval> {
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

pub(super) fn to_time(t: crdt::Time) -> Time {
    Time {
        secs: t.secs,
        nsec: t.nanos,
    }
}

pub(super) fn from_time(t: Time) -> crdt::Time {
    crdt::Time {
        secs: t.secs,
        nanos: t.nsec,
    }
}

pub(super) fn to_kind(k: crdt::Kind) -> Kind {
    match k {
        crdt::Kind::File => Kind::File,
        crdt::Kind::Dir => Kind::Dir,
        crdt::Kind::Symlink => Kind::Symlink,
    }
}

pub(super) fn encode_base(ts: &OpId) -> Vec<u8> {
    postcard::to_stdvec(ts).unwrap_or_default()
}

pub(super) fn decode_base(base: &Base) -> Option<OpId> {
    base.as_deref().and_then(|b| postcard::from_bytes(b).ok())
}
