//! The calls a mount makes on a shared volume ([`Namespace`] for [`SharedNamespace`]): reads
//! answered from the merged state under its lock, changes checked against it and made ops.

use dfs_node::{BlobRef, Repo};

use super::state::{decode_base, encode_base, from_time, to_kind};
use super::{ContentRef, SharedNamespace, ID_XATTR};
use crate::crdt::volume::{self as crdt, VolumeOp};
use crate::crdt::NodeId;
use crate::model::{
    check_name, check_remove_kind, check_remove_name, DirEntry, FsError, Ino, Inode, Kind,
    NewEntry, Rename, Result, Time, NAME_MAX,
};
use crate::namespace::{Base, Namespace};

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

    fn may_write(&self) -> Result<()> {
        let hub = &self.inner.hub;
        let role = hub
            .role_of(&hub.acting(crate::acting::uid()), &self.inner.volume)
            .map_err(|e| FsError::Corrupt(format!("reading the volume's roles: {e}")))?;
        match role {
            Some(role) if role.writes() => Ok(()),
            Some(dfs_node::ops::Role::Reader) => Err(FsError::ReadOnly(
                "a reader of this volume changes nothing".into(),
            )),
            Some(_) => Err(FsError::Refused("removed from this volume".into())),
            None => Err(FsError::Refused(
                "not a member of this volume: log in as one (`dfs login`)".into(),
            )),
        }
    }

    fn cache_ttl(&self) -> std::time::Duration {
        // Remote changes invalidate exactly what they touch (see `follow`).
        std::time::Duration::from_secs(10)
    }
}
