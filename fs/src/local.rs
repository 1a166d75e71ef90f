//! The peer's own volume ([`LocalNamespace`]): inodes, directory entries and xattrs kept in
//! RocksDB, and every namespace operation (create, link, unlink, rename, setattr, ...) as one
//! atomic batch. The types it shares with the shared namespace are in [`crate::model`].
//!
//! Schema (tables of [`dfs_node::FsTable`], keys big-endian so scans come out in order):
//! - `Inodes`: ino -> [`Inode`] (version byte + postcard).
//! - `Dirents`: parent ino ++ name -> child ino ++ kind byte.
//! - `Xattrs`: ino ++ name -> value.
//! - `Meta`: `next_ino` -> u64.
//!
//! File content is not here: an inode holds the [`BlobRef`] of its committed chunk tree, and
//! [`crate::file`] buffers writes until they are committed. LocalNamespace mutations are serialised
//! by one lock (they are small RocksDB batches); file data has per-file locks.

use std::sync::Mutex;

use dfs_node::{BlobRef, FsBatch, FsTable, Repo};

use crate::model::{
    check_name, check_remove_kind, check_remove_name, path_through, Base, Caller, DirEntry, Entry,
    FsError, Ino, Inode, Kind, NewEntry, Rename, Result, Time, NAME_MAX, ROOT,
};
use crate::namespace::Namespace;

const FORMAT_V1: u8 = 1;
const NEXT_INO_KEY: &[u8] = b"next_ino";

fn encode_inode(inode: &Inode) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_stdvec(inode).unwrap_or_default());
    out
}

fn decode_inode(ino: Ino, bytes: &[u8]) -> Result<Inode> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| FsError::Corrupt(format!("inode {ino}: {e}")))
        }
        _ => Err(FsError::Corrupt(format!("inode {ino}: unknown format"))),
    }
}

fn ino_key(ino: Ino) -> [u8; 8] {
    ino.to_be_bytes()
}

fn dirent_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

fn dirent_value(ino: Ino, kind: Kind) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&ino.to_be_bytes());
    v[8] = kind.code();
    v
}

fn decode_dirent(value: &[u8]) -> Result<(Ino, Kind)> {
    let ino = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(Ino::from_be_bytes);
    let kind = value.get(8).and_then(|&c| Kind::from_code(c));
    ino.zip(kind)
        .ok_or_else(|| FsError::Corrupt(format!("directory entry of {} bytes", value.len())))
}

/// `.` and `..` cannot be removed (rmdir(2) answers EINVAL and ENOTEMPTY).
/// The namespace of one volume, on the data directory's RocksDB.
pub struct LocalNamespace {
    lock: Mutex<()>,
    chunk_size: u32,
    /// Bumped whenever a version is recorded, so views of the versions know to refresh.
    versions_generation: std::sync::atomic::AtomicU64,
}

impl LocalNamespace {
    /// Open the namespace, creating the root directory (owned by `owner`) on first use.
    pub fn open(repo: &Repo, owner: Caller) -> Result<Self> {
        let ns = Self {
            lock: Mutex::new(()),
            chunk_size: repo.config().storage.chunk_size,
            versions_generation: std::sync::atomic::AtomicU64::new(0),
        };
        if repo
            .meta()
            .fs_get(FsTable::Inodes, &ino_key(ROOT))?
            .is_none()
        {
            let now = Time::now();
            let root = Inode {
                kind: Kind::Dir,
                perm: 0o755,
                uid: owner.uid,
                gid: owner.gid,
                nlink: 2,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev: 0,
                parent: ROOT,
                name: Vec::new(),
                content: None,
                chunk_size: 0,
                target: Vec::new(),
                base: None,
            };
            let mut batch = FsBatch::default();
            batch.put(FsTable::Inodes, ino_key(ROOT), encode_inode(&root));
            batch.put(FsTable::Meta, NEXT_INO_KEY, ROOT.next().to_be_bytes());
            repo.meta().fs_write(batch, true)?;
        }
        Ok(ns)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn dir(&self, repo: &Repo, ino: Ino) -> Result<Inode> {
        let inode = self.inode(repo, ino)?;
        if inode.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(inode)
    }

    /// The live directory `parent`, checking that `name` is free in it (for a new entry).
    fn dir_with_free_name(&self, repo: &Repo, parent: Ino, name: &[u8]) -> Result<Inode> {
        let dir = self.dir(repo, parent)?;
        if dir.nlink == 0 {
            return Err(FsError::NotFound); // removed while someone still had it as cwd
        }
        if repo
            .meta()
            .fs_get(FsTable::Dirents, &dirent_key(parent, name))?
            .is_some()
        {
            return Err(FsError::Exists);
        }
        Ok(dir)
    }

    fn is_empty_dir(&self, repo: &Repo, dir: Ino) -> Result<bool> {
        Ok(repo
            .meta()
            .fs_scan(FsTable::Dirents, &dir.to_be_bytes(), None, 1)?
            .is_empty())
    }

    fn alloc_ino(&self, repo: &Repo, batch: &mut FsBatch) -> Result<Ino> {
        let next = match repo.meta().fs_get(FsTable::Meta, NEXT_INO_KEY)? {
            Some(b) => b
                .as_slice()
                .try_into()
                .map(Ino::from_be_bytes)
                .map_err(|_| FsError::Corrupt("next inode counter".into()))?,
            None => ROOT.next(),
        };
        batch.put(FsTable::Meta, NEXT_INO_KEY, next.next().to_be_bytes());
        Ok(next)
    }

    /// Drop one link of `inode` (a directory loses all of them): delete it when none is left and
    /// nobody has it open, else record the new count. Returns whether no link is left.
    fn drop_link(
        &self,
        repo: &Repo,
        ino: Ino,
        mut inode: Inode,
        now: Time,
        is_open: &dyn Fn(Ino) -> bool,
        batch: &mut FsBatch,
    ) -> Result<bool> {
        inode.nlink = if inode.kind == Kind::Dir {
            0
        } else {
            inode.nlink.saturating_sub(1)
        };
        inode.ctime = now;
        if inode.nlink == 0 && !is_open(ino) {
            self.delete_inode(repo, ino, batch)?;
        } else {
            batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        }
        Ok(inode.nlink == 0)
    }

    fn delete_inode(&self, repo: &Repo, ino: Ino, batch: &mut FsBatch) -> Result<()> {
        batch.delete(FsTable::Inodes, ino_key(ino));
        for (k, _) in repo
            .meta()
            .fs_scan(FsTable::Xattrs, &ino.to_be_bytes(), None, usize::MAX)?
        {
            batch.delete(FsTable::Xattrs, k);
        }
        Ok(())
    }

    /// Every inode (for fsck).
    pub fn all_inodes(&self, repo: &Repo) -> Result<Vec<(Ino, Inode)>> {
        let mut out = Vec::new();
        repo.meta().fs_for_each(FsTable::Inodes, &[], |k, v| {
            let ino = k
                .try_into()
                .map(Ino::from_be_bytes)
                .map_err(|_| FsError::Corrupt("inode key".into()))?;
            out.push((ino, decode_inode(ino, v)?));
            Ok::<(), FsError>(())
        })?;
        Ok(out)
    }

    /// Every directory entry (for fsck).
    pub fn all_entries(&self, repo: &Repo) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        repo.meta().fs_for_each(FsTable::Dirents, &[], |k, v| {
            let parent = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(Ino::from_be_bytes)
                .ok_or_else(|| FsError::Corrupt("directory entry key".into()))?;
            let (ino, kind) = decode_dirent(v)?;
            out.push(Entry {
                parent,
                name: k[8..].to_vec(),
                ino,
                kind,
            });
            Ok::<(), FsError>(())
        })?;
        Ok(out)
    }

    /// Delete every inode left with no links (open when a previous run ended).
    pub fn reap_orphans(&self, repo: &Repo) -> Result<usize> {
        let orphans: Vec<Ino> = self
            .all_inodes(repo)?
            .into_iter()
            .filter(|(_, inode)| inode.nlink == 0)
            .map(|(ino, _)| ino)
            .collect();
        let _g = self.guard();
        let mut batch = FsBatch::default();
        for &ino in &orphans {
            self.delete_inode(repo, ino, &mut batch)?;
        }
        repo.meta().fs_write(batch, false)?;
        Ok(orphans.len())
    }

    /// Is `ancestor` equal to `dir` or one of its ancestors?
    fn is_ancestor(&self, repo: &Repo, ancestor: Ino, mut dir: Ino) -> Result<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT {
                return Ok(false);
            }
            dir = self.inode(repo, dir)?.parent;
        }
        Err(FsError::Corrupt(
            "directory parent chain has a cycle".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_move(
        &self,
        repo: &Repo,
        ino: Ino,
        mut inode: Inode,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        now: Time,
        moved_dir: i64,
        size_delta_new: i64,
        batch: &mut FsBatch,
        newparent_override: Option<Inode>,
    ) -> Result<()> {
        batch.delete(FsTable::Dirents, dirent_key(parent, name));
        batch.put(
            FsTable::Dirents,
            dirent_key(newparent, newname),
            dirent_value(ino, inode.kind),
        );
        inode.ctime = now;
        inode.parent = newparent;
        inode.name = newname.to_vec();
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        let mut old = self.dir(repo, parent)?;
        old.mtime = now;
        old.ctime = now;
        if parent == newparent {
            let mut d = newparent_override.unwrap_or(old);
            d.mtime = now;
            d.ctime = now;
            d.size = (d.size as i64 + size_delta_new - 1).max(0) as u64;
            batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&d));
            return Ok(());
        }
        old.size = old.size.saturating_sub(1);
        old.nlink = (old.nlink as i64 - moved_dir).max(1) as u32;
        batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&old));
        let mut new = match newparent_override {
            Some(d) => d,
            None => self.dir(repo, newparent)?,
        };
        new.mtime = now;
        new.ctime = now;
        new.size = (new.size as i64 + size_delta_new).max(0) as u64;
        new.nlink = (new.nlink as i64 + moved_dir) as u32;
        batch.put(FsTable::Inodes, ino_key(newparent), encode_inode(&new));
        Ok(())
    }

    /// Update both parents of an exchange: times, and `delta` directories moved from `newparent`
    /// into `parent` (negative: the other way).
    fn touch_parents(
        &self,
        repo: &Repo,
        parent: Ino,
        newparent: Ino,
        delta: i64,
        now: Time,
        batch: &mut FsBatch,
    ) -> Result<()> {
        let mut a = self.dir(repo, parent)?;
        a.mtime = now;
        a.ctime = now;
        if parent == newparent {
            batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&a));
            return Ok(());
        }
        let mut b = self.dir(repo, newparent)?;
        b.mtime = now;
        b.ctime = now;
        a.nlink = (a.nlink as i64 + delta).max(1) as u32;
        b.nlink = (b.nlink as i64 - delta).max(1) as u32;
        batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&a));
        batch.put(FsTable::Inodes, ino_key(newparent), encode_inode(&b));
        Ok(())
    }

    /// Store an inode as it is now (after a file commit, or setattr).
    pub fn put_inode(&self, repo: &Repo, ino: Ino, inode: &Inode, durable: bool) -> Result<()> {
        let mut batch = FsBatch::default();
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(inode));
        repo.meta().fs_write(batch, durable)?;
        Ok(())
    }
}

impl Namespace for LocalNamespace {
    fn inode(&self, repo: &Repo, ino: Ino) -> Result<Inode> {
        match repo.meta().fs_get(FsTable::Inodes, &ino_key(ino))? {
            Some(bytes) => decode_inode(ino, &bytes),
            None => Err(FsError::NotFound),
        }
    }

    /// Find `name` in directory `parent`.
    fn lookup(&self, repo: &Repo, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let dir = self.dir(repo, parent)?;
        let ino = match name {
            b"." => parent,
            b".." => dir.parent,
            _ => match repo
                .meta()
                .fs_get(FsTable::Dirents, &dirent_key(parent, name))?
            {
                Some(v) => decode_dirent(&v)?.0,
                None => return Err(FsError::NotFound),
            },
        };
        Ok((ino, self.inode(repo, ino)?))
    }

    /// Entries of a directory (without `.` and `..`), sorted by name.
    fn list(&self, repo: &Repo, dir: Ino) -> Result<Vec<DirEntry>> {
        self.dir(repo, dir)?;
        let mut out = Vec::new();
        repo.meta()
            .fs_for_each(FsTable::Dirents, &dir.to_be_bytes(), |k, v| {
                let (ino, kind) = decode_dirent(v)?;
                out.push(DirEntry {
                    name: k[8..].to_vec(),
                    ino,
                    kind,
                });
                Ok::<(), FsError>(())
            })?;
        Ok(out)
    }

    /// Create a file, directory, symlink or special file.
    fn create(&self, repo: &Repo, entry: &NewEntry<'_>) -> Result<(Ino, Inode)> {
        let NewEntry {
            parent,
            name,
            kind,
            perm,
            caller,
            rdev,
            target,
        } = *entry;
        check_name(name)?;
        let _g = self.guard();
        let mut dir = self.dir_with_free_name(repo, parent, name)?;
        if kind == Kind::Dir && dir.nlink >= u32::MAX - 1 {
            return Err(FsError::TooManyLinks);
        }
        let mut batch = FsBatch::default();
        let ino = self.alloc_ino(repo, &mut batch)?;
        let now = Time::now();
        // A new entry in a setgid directory inherits its group (and subdirectories the bit).
        let setgid_dir = dir.perm & 0o2000 != 0;
        let gid = if setgid_dir { dir.gid } else { caller.gid };
        let perm = if kind == Kind::Dir && setgid_dir {
            perm | 0o2000
        } else {
            perm
        };
        let inode = Inode {
            kind,
            perm,
            uid: caller.uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            size: if kind == Kind::Symlink {
                target.len() as u64
            } else {
                0
            },
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev,
            parent,
            name: name.to_vec(),
            content: None,
            chunk_size: self.chunk_size,
            target: target.to_vec(),
            base: None,
        };
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        batch.put(
            FsTable::Dirents,
            dirent_key(parent, name),
            dirent_value(ino, kind),
        );
        dir.mtime = now;
        dir.ctime = now;
        dir.size += 1;
        if kind == Kind::Dir {
            dir.nlink += 1;
        }
        batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&dir));
        repo.meta().fs_write(batch, false)?;
        Ok((ino, inode))
    }

    /// Add a hard link `newparent/newname` to `ino`.
    fn link(&self, repo: &Repo, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Inode> {
        check_name(newname)?;
        let _g = self.guard();
        let mut inode = self.inode(repo, ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::NotPermitted);
        }
        if inode.nlink >= 65000 {
            return Err(FsError::TooManyLinks);
        }
        let mut dir = self.dir_with_free_name(repo, newparent, newname)?;
        let now = Time::now();
        inode.nlink += 1;
        inode.ctime = now;
        dir.mtime = now;
        dir.ctime = now;
        dir.size += 1;
        let mut batch = FsBatch::default();
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        batch.put(FsTable::Inodes, ino_key(newparent), encode_inode(&dir));
        batch.put(
            FsTable::Dirents,
            dirent_key(newparent, newname),
            dirent_value(ino, inode.kind),
        );
        repo.meta().fs_write(batch, false)?;
        Ok(inode)
    }

    /// Remove the entry `name` from `parent`: `dir` says whether it must be a directory (rmdir)
    /// or must not be (unlink). Returns the inode and whether its last link is gone.
    fn remove(
        &self,
        repo: &Repo,
        parent: Ino,
        name: &[u8],
        dir: bool,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<(Ino, bool)> {
        check_remove_name(name)?;
        let _g = self.guard();
        let (ino, inode) = self.lookup(repo, parent, name)?;
        check_remove_kind(dir, inode.kind == Kind::Dir, || {
            self.is_empty_dir(repo, ino)
        })?;
        let mut batch = FsBatch::default();
        let mut pdir = self.dir(repo, parent)?;
        let now = Time::now();
        pdir.mtime = now;
        pdir.ctime = now;
        pdir.size = pdir.size.saturating_sub(1);
        if dir {
            pdir.nlink = pdir.nlink.saturating_sub(1);
        }
        batch.put(FsTable::Inodes, ino_key(parent), encode_inode(&pdir));
        batch.delete(FsTable::Dirents, dirent_key(parent, name));
        let gone = self.drop_link(repo, ino, inode, now, is_open, &mut batch)?;
        repo.meta().fs_write(batch, false)?;
        Ok((ino, gone))
    }

    /// Delete an inode whose last link went while it was open, now that it is closed.
    fn reap_if_unlinked(&self, repo: &Repo, ino: Ino) -> Result<()> {
        let _g = self.guard();
        match self.inode(repo, ino) {
            Ok(inode) if inode.nlink == 0 => {
                let mut batch = FsBatch::default();
                self.delete_inode(repo, ino, &mut batch)?;
                repo.meta().fs_write(batch, false)?;
                Ok(())
            }
            Ok(_) | Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Rename `parent/name` to `newparent/newname` (`noreplace`: fail if the target exists;
    /// `exchange`: swap the two, both must exist). Returns the inode whose last link went, if any.
    fn rename(
        &self,
        repo: &Repo,
        rename: &Rename<'_>,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> Result<Option<Ino>> {
        rename.check()?;
        let Rename {
            parent,
            name,
            newparent,
            newname,
            noreplace,
            exchange,
        } = *rename;
        let _g = self.guard();
        let (ino, inode) = self.lookup(repo, parent, name)?;
        let target = match self.lookup(repo, newparent, newname) {
            Ok(t) => Some(t),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if inode.kind == Kind::Dir && self.is_ancestor(repo, ino, newparent)? {
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        let now = Time::now();
        let mut batch = FsBatch::default();
        if exchange {
            let Some((tino, tinode)) = target else {
                return Err(FsError::NotFound);
            };
            if tinode.kind == Kind::Dir && self.is_ancestor(repo, tino, parent)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            batch.put(
                FsTable::Dirents,
                dirent_key(parent, name),
                dirent_value(tino, tinode.kind),
            );
            batch.put(
                FsTable::Dirents,
                dirent_key(newparent, newname),
                dirent_value(ino, inode.kind),
            );
            let mut moved = [
                (ino, inode, newparent, newname),
                (tino, tinode, parent, name),
            ];
            for (i, node, to, to_name) in moved.iter_mut() {
                node.ctime = now;
                node.parent = *to;
                node.name = to_name.to_vec();
                batch.put(FsTable::Inodes, ino_key(*i), encode_inode(node));
            }
            let dirs_moved = |a: &Inode| i64::from(a.kind == Kind::Dir);
            let delta = dirs_moved(&moved[1].1) - dirs_moved(&moved[0].1);
            self.touch_parents(repo, parent, newparent, delta, now, &mut batch)?;
            repo.meta().fs_write(batch, false)?;
            return Ok(None);
        }
        let mut reaped = None;
        let mut size_delta_new = 1i64;
        // The target directory's link count when a replaced directory's ".." goes away.
        let mut newparent_after = None;
        if let Some((tino, tinode)) = target {
            if noreplace {
                return Err(FsError::Exists);
            }
            if tino == ino {
                return Ok(None); // two links to one inode: POSIX says do nothing
            }
            // The target goes as if removed by the kind of the moved entry.
            check_remove_kind(inode.kind == Kind::Dir, tinode.kind == Kind::Dir, || {
                self.is_empty_dir(repo, tino)
            })?;
            // The moved entry replaces the target: newparent gains no entry.
            size_delta_new = 0;
            if tinode.kind == Kind::Dir {
                let mut np = self.dir(repo, newparent)?;
                np.nlink = np.nlink.saturating_sub(1);
                newparent_after = Some(np);
            }
            if self.drop_link(repo, tino, tinode, now, is_open, &mut batch)? {
                reaped = Some(tino);
            }
        }
        let moved_dir = i64::from(inode.kind == Kind::Dir);
        self.finish_move(
            repo,
            ino,
            inode,
            parent,
            name,
            newparent,
            newname,
            now,
            moved_dir,
            size_delta_new,
            &mut batch,
            newparent_after,
        )?;
        repo.meta().fs_write(batch, false)?;
        Ok(reaped)
    }

    /// The path of an inode from the volume root (`/a/b/c`), through its last-named parents.
    fn path_of(&self, repo: &Repo, inode: &Inode) -> Vec<u8> {
        path_through(inode, |dir| self.inode(repo, dir))
    }

    /// Install a file's new content (and the time of the writes that made it), and with
    /// `version` record the resulting content as a version, in one batch.
    fn commit_content(
        &self,
        repo: &Repo,
        ino: Ino,
        content: Option<BlobRef>,
        size: u64,
        mtime: Option<Time>,
        version: bool,
        _base: &mut Base,
    ) -> Result<()> {
        let _g = self.guard();
        let mut inode = self.inode(repo, ino)?;
        let changed = version && (content.is_some() || inode.content.is_some());
        if let Some(c) = content {
            inode.content = Some(c);
        }
        inode.size = size;
        if let Some(t) = mtime {
            inode.mtime = t;
            inode.ctime = inode.ctime.max(t);
        }
        let mut batch = FsBatch::default();
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        if let (true, Some(content)) = (changed, inode.content) {
            let record = crate::versions::VersionRecord {
                content,
                chunk_size: inode.chunk_size,
                size,
                mtime: inode.mtime,
                path: self.path_of(repo, &inode),
            };
            crate::versions::record(
                repo,
                &mut batch,
                ino,
                Time::now(),
                &record,
                &repo.config().versions,
            )?;
        }
        repo.meta().fs_write(batch, false)?;
        if changed {
            self.versions_generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Changes whenever a version is recorded.
    fn versions_generation(&self) -> u64 {
        self.versions_generation
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read-modify-write an inode under the namespace lock.
    fn update(
        &self,
        repo: &Repo,
        ino: Ino,
        f: &mut dyn FnMut(&mut Inode) -> Result<()>,
    ) -> Result<Inode> {
        let _g = self.guard();
        let mut inode = self.inode(repo, ino)?;
        f(&mut inode)?;
        self.put_inode(repo, ino, &inode, false)?;
        Ok(inode)
    }

    fn get_xattr(&self, repo: &Repo, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.inode(repo, ino)?;
        repo.meta()
            .fs_get(FsTable::Xattrs, &dirent_key(ino, name))?
            .ok_or(FsError::NoAttr)
    }

    /// Set an xattr; `create`: fail if it exists, `replace`: fail if it does not.
    fn set_xattr(
        &self,
        repo: &Repo,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(FsError::Range);
        }
        if value.len() > 64 * 1024 {
            return Err(FsError::Range);
        }
        let _g = self.guard();
        let mut inode = self.inode(repo, ino)?;
        let key = dirent_key(ino, name);
        let exists = repo.meta().fs_get(FsTable::Xattrs, &key)?.is_some();
        if create && exists {
            return Err(FsError::Exists);
        }
        if replace && !exists {
            return Err(FsError::NoAttr);
        }
        inode.ctime = Time::now();
        let mut batch = FsBatch::default();
        batch.put(FsTable::Xattrs, key, value.to_vec());
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        repo.meta().fs_write(batch, false)?;
        Ok(())
    }

    fn list_xattrs(&self, repo: &Repo, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.inode(repo, ino)?;
        Ok(repo
            .meta()
            .fs_scan(FsTable::Xattrs, &ino.to_be_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k[8..].to_vec())
            .collect())
    }

    fn remove_xattr(&self, repo: &Repo, ino: Ino, name: &[u8]) -> Result<()> {
        let _g = self.guard();
        let mut inode = self.inode(repo, ino)?;
        let key = dirent_key(ino, name);
        if repo.meta().fs_get(FsTable::Xattrs, &key)?.is_none() {
            return Err(FsError::NoAttr);
        }
        inode.ctime = Time::now();
        let mut batch = FsBatch::default();
        batch.delete(FsTable::Xattrs, key);
        batch.put(FsTable::Inodes, ino_key(ino), encode_inode(&inode));
        repo.meta().fs_write(batch, false)?;
        Ok(())
    }
}
