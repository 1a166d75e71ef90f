//! The read-only `.dfs` directory at the root of a mount: reachable by name, never listed.
//! `.dfs/versions/<path>/<time>` holds every recorded version of every file (deleted ones too,
//! until they expire), built from the version table ([`crate::versions`]).
//!
//! Virtual inodes live at and above [`VIRTUAL_BASE`], far above any real inode number; each
//! path keeps one number for the life of the mount.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::file::ReadBytes;
use crate::model::{DirEntry, FsError, Ino, Inode, Kind, Result, ROOT};
use crate::versions::{self, VersionNode, VersionTree};
use crate::volume::Volume;

/// First virtual inode number.
pub const VIRTUAL_BASE: Ino = Ino(1 << 62);
/// `/.dfs`.
pub const DOT_DFS: Ino = VIRTUAL_BASE;
/// `/.dfs/versions`, the root of the version tree.
pub const VERSIONS: Ino = Ino(VIRTUAL_BASE.0 + 1);
/// The reserved name in the volume root.
pub const NAME: &[u8] = b".dfs";

pub fn is_virtual(ino: Ino) -> bool {
    ino >= VIRTUAL_BASE
}

struct State {
    tree: VersionTree,
    /// The namespace's versions generation the tree was built at.
    built: Option<u64>,
    /// Virtual inode -> version tree path, and back.
    paths: HashMap<Ino, Vec<u8>>,
    inos: HashMap<Vec<u8>, Ino>,
    next: Ino,
}

/// The `.dfs` tree of one mount.
pub struct DotDfs {
    state: Mutex<State>,
}

impl Default for DotDfs {
    fn default() -> Self {
        let mut paths = HashMap::new();
        let mut inos = HashMap::new();
        paths.insert(VERSIONS, Vec::new());
        inos.insert(Vec::new(), VERSIONS);
        Self {
            state: Mutex::new(State {
                tree: VersionTree::default(),
                built: None,
                paths,
                inos,
                next: Ino(VIRTUAL_BASE.0 + 2),
            }),
        }
    }
}

fn synth(kind: Kind, owner: &Inode) -> Inode {
    Inode {
        kind,
        perm: if kind == Kind::Dir { 0o555 } else { 0o444 },
        uid: owner.uid,
        gid: owner.gid,
        nlink: if kind == Kind::Dir { 2 } else { 1 },
        size: 0,
        atime: owner.mtime,
        mtime: owner.mtime,
        ctime: owner.mtime,
        crtime: owner.crtime,
        rdev: 0,
        parent: ROOT,
        name: Vec::new(),
        content: None,
        chunk_size: owner.chunk_size,
        target: Vec::new(),
        base: None,
    }
}

impl DotDfs {
    fn state(&self, vol: &Volume) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let generation = vol.ns.versions_generation();
        if st.built != Some(generation) {
            st.tree = VersionTree::build(versions::all(&vol.repo)?);
            st.built = Some(generation);
        }
        Ok(st)
    }

    fn ino_of(st: &mut State, path: Vec<u8>) -> Ino {
        if let Some(&ino) = st.inos.get(&path) {
            return ino;
        }
        let ino = st.next;
        st.next = ino.next();
        st.inos.insert(path.clone(), ino);
        st.paths.insert(ino, path);
        ino
    }

    /// Attributes of a virtual inode.
    pub fn attr(&self, vol: &Volume, ino: Ino) -> Result<Inode> {
        let root = vol.ns.inode(&vol.repo, ROOT)?;
        if ino == DOT_DFS || ino == VERSIONS {
            return Ok(synth(Kind::Dir, &root));
        }
        let st = self.state(vol)?;
        let path = st.paths.get(&ino).ok_or(FsError::NotFound)?;
        match st.tree.get(path) {
            Some(VersionNode::Dir(_)) => Ok(synth(Kind::Dir, &root)),
            Some(VersionNode::File(v)) => {
                let mut inode = synth(Kind::File, &root);
                inode.size = v.record.size;
                inode.mtime = v.record.mtime;
                inode.ctime = v.time;
                inode.atime = v.record.mtime;
                inode.content = Some(v.record.content);
                inode.chunk_size = v.record.chunk_size;
                Ok(inode)
            }
            None => Err(FsError::NotFound),
        }
    }

    /// Look `name` up in virtual directory `parent` (or `.dfs` in the root).
    pub fn lookup(&self, vol: &Volume, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)> {
        let ino = match (parent, name) {
            (ROOT, NAME) => DOT_DFS,
            (DOT_DFS, b"versions") => VERSIONS,
            (DOT_DFS, b".") | (VERSIONS, b"..") => DOT_DFS,
            (DOT_DFS, b"..") => ROOT,
            (DOT_DFS, _) => return Err(FsError::NotFound),
            _ => {
                let mut st = self.state(vol)?;
                let dir = st.paths.get(&parent).cloned().ok_or(FsError::NotFound)?;
                let path = VersionTree::child_path(&dir, name);
                if st.tree.get(&path).is_none() {
                    return Err(FsError::NotFound);
                }
                Self::ino_of(&mut st, path)
            }
        };
        if ino == ROOT {
            return Ok((ROOT, vol.attr(ROOT)?));
        }
        Ok((ino, self.attr(vol, ino)?))
    }

    /// Entries of a virtual directory.
    pub fn list(&self, vol: &Volume, ino: Ino) -> Result<Vec<DirEntry>> {
        if ino == DOT_DFS {
            return Ok(vec![DirEntry {
                name: b"versions".to_vec(),
                ino: VERSIONS,
                kind: Kind::Dir,
            }]);
        }
        let mut st = self.state(vol)?;
        let dir = st.paths.get(&ino).cloned().ok_or(FsError::NotFound)?;
        let children = match st.tree.get(&dir) {
            Some(VersionNode::Dir(children)) => children.clone(),
            Some(VersionNode::File(_)) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        };
        let mut out = Vec::with_capacity(children.len());
        for name in children {
            let path = VersionTree::child_path(&dir, &name);
            let kind = match st.tree.get(&path) {
                Some(VersionNode::File(_)) => Kind::File,
                _ => Kind::Dir,
            };
            let ino = Self::ino_of(&mut st, path);
            out.push(DirEntry { name, ino, kind });
        }
        Ok(out)
    }

    /// The parent of a virtual directory, for `..` in listings.
    pub fn parent_of(&self, ino: Ino) -> Ino {
        match ino {
            DOT_DFS => ROOT,
            VERSIONS => DOT_DFS,
            _ => VERSIONS,
        }
    }

    /// Read from a version file.
    pub fn read(&self, vol: &Volume, ino: Ino, offset: u64, size: usize) -> Result<ReadBytes> {
        let inode = self.attr(vol, ino)?;
        if inode.kind != Kind::File {
            return Err(FsError::IsDir);
        }
        vol.read_content(&inode, offset, size)
    }
}
