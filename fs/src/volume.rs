//! A mounted volume: the namespace, the open files with their buffered content, and the chunk
//! cache, over one data directory. Everything the FUSE adapter does goes through here, as plain
//! `Result`s; nothing in this module knows about FUSE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dfs_node::Repo;

use crate::file::{default_cache, ChunkCache, FileContent, Io};
use crate::model::{Caller, FsError, Ino, Inode, Kind, Namespace, Result, SetAttr, Time};
use dfs_node::workers::ChunkWorkers;

/// State of a file while at least one handle has it open.
pub struct OpenFile {
    pub content: FileContent,
    pub opens: u32,
    /// Modification time of uncommitted writes.
    pub mtime: Option<Time>,
    /// Content was committed by a flush without recording a version: the next close or fsync
    /// records one.
    pub unversioned: bool,
}

/// One volume, ready to serve filesystem operations.
pub struct Volume {
    pub repo: Arc<Repo>,
    pub ns: Namespace,
    pub cache: ChunkCache,
    workers: ChunkWorkers,
    files: Mutex<HashMap<Ino, Arc<Mutex<OpenFile>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Volume {
    /// Open the volume of `repo`; the root directory is created for `owner` on first use.
    pub fn open(repo: Arc<Repo>, owner: Caller) -> Result<Self> {
        repo.ensure_volume_owner()?;
        let ns = Namespace::open(&repo, owner)?;
        let reaped = ns.reap_orphans(&repo)?;
        if reaped > 0 {
            tracing::info!(
                reaped,
                "removed files unlinked while open when the volume last stopped"
            );
        }
        let threads = repo.config().storage.worker_count();
        Ok(Self {
            workers: ChunkWorkers::start(repo.clone(), threads),
            repo,
            ns,
            cache: default_cache(),
            files: Mutex::new(HashMap::new()),
        })
    }

    fn io(&self) -> Io<'_> {
        Io {
            repo: &self.repo,
            cache: &self.cache,
            workers: &self.workers,
        }
    }

    pub fn is_open(&self, ino: Ino) -> bool {
        lock(&self.files).contains_key(&ino)
    }

    fn open_state(&self, ino: Ino) -> Option<Arc<Mutex<OpenFile>>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// The inode with the size and times of uncommitted writes applied.
    pub fn attr(&self, ino: Ino) -> Result<Inode> {
        let mut inode = self.ns.inode(&self.repo, ino)?;
        if let Some(state) = self.open_state(ino) {
            let state = lock(&state);
            inode.size = state.content.size;
            if let Some(t) = state.mtime {
                inode.mtime = t;
                inode.ctime = inode.ctime.max(t);
            }
        }
        Ok(inode)
    }

    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)> {
        let (ino, _) = self.ns.lookup(&self.repo, parent, name)?;
        Ok((ino, self.attr(ino)?))
    }

    /// Open a file: its content state is shared by every handle.
    pub fn open_file(&self, ino: Ino, truncate: bool) -> Result<()> {
        let inode = self.ns.inode(&self.repo, ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let state = {
            let mut files = lock(&self.files);
            let state = files.entry(ino).or_insert_with(|| {
                Arc::new(Mutex::new(OpenFile {
                    content: FileContent::new(&inode),
                    opens: 0,
                    mtime: None,
                    unversioned: false,
                }))
            });
            lock(state).opens += 1;
            state.clone()
        };
        if truncate {
            let mut st = lock(&state);
            if st.content.size != 0 {
                st.content.truncate(self.io(), 0)?;
                st.mtime = Some(Time::now());
            }
        }
        Ok(())
    }

    /// Close one handle: commit, and forget the state when it was the last.
    pub fn release(&self, ino: Ino) -> Result<()> {
        let Some(state) = self.open_state(ino) else {
            return Ok(());
        };
        let result = self.commit(ino, &mut lock(&state), false, true);
        let last = {
            let mut files = lock(&self.files);
            let mut st = lock(&state);
            st.opens = st.opens.saturating_sub(1);
            let last = st.opens == 0;
            if last {
                files.remove(&ino);
            }
            last
        };
        if last {
            self.ns.reap_if_unlinked(&self.repo, ino)?;
        }
        result
    }

    /// Commit an open file's buffered writes as its new content (`durable`: fsync).
    ///
    /// Versions are recorded at close and fsync (`version`), not at every flush: a shell's
    /// `echo x > f` flushes once with the file just truncated, and that is not a version anyone
    /// wants.
    fn commit(&self, ino: Ino, st: &mut OpenFile, durable: bool, version: bool) -> Result<()> {
        let blob = st.content.commit(self.io())?;
        let mtime = st.mtime.take();
        let record = version && (blob.is_some() || st.unversioned);
        if blob.is_none() && mtime.is_none() && !record {
            if durable {
                self.sync()?;
            }
            return Ok(());
        }
        let size = st.content.size;
        if durable {
            self.repo
                .store()
                .sync()
                .map_err(|e| FsError::Chunk(e.into()))?;
        }
        self.ns
            .commit_content(&self.repo, ino, blob, size, mtime, record)?;
        st.unversioned = !record && (blob.is_some() || st.unversioned);
        if durable {
            self.repo.meta().sync_wal()?;
        }
        Ok(())
    }

    /// flush(2)/fsync(2) of an open file.
    pub fn flush(&self, ino: Ino, durable: bool) -> Result<()> {
        match self.open_state(ino) {
            Some(state) => self.commit(ino, &mut lock(&state), durable, durable),
            None if durable => self.sync(),
            None => Ok(()),
        }
    }

    /// Make every committed change durable.
    pub fn sync(&self) -> Result<()> {
        self.repo
            .store()
            .sync()
            .map_err(|e| FsError::Chunk(e.into()))?;
        self.repo.meta().sync_wal()?;
        Ok(())
    }

    /// Commit every open file (unmount).
    pub fn flush_all(&self) -> Result<()> {
        let open: Vec<(Ino, Arc<Mutex<OpenFile>>)> = lock(&self.files)
            .iter()
            .map(|(i, s)| (*i, s.clone()))
            .collect();
        for (ino, state) in open {
            self.commit(ino, &mut lock(&state), false, true)?;
        }
        self.sync()
    }

    pub fn read(&self, ino: Ino, offset: u64, size: usize) -> Result<Vec<u8>> {
        match self.open_state(ino) {
            Some(state) => lock(&state).content.read(self.io(), offset, size),
            None => {
                let inode = self.ns.inode(&self.repo, ino)?;
                FileContent::new(&inode).read(self.io(), offset, size)
            }
        }
    }

    /// Read the content an inode describes (e.g. an old version), without opening it.
    pub fn read_content(&self, inode: &Inode, offset: u64, size: usize) -> Result<Vec<u8>> {
        FileContent::new(inode).read(self.io(), offset, size)
    }

    pub fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<()> {
        let state = self
            .open_state(ino)
            .ok_or(FsError::Invalid("file is not open"))?;
        let mut st = lock(&state);
        st.content.write(self.io(), offset, data)?;
        st.mtime = Some(Time::now());
        Ok(())
    }

    /// Change attributes; a size change goes through the file's content.
    pub fn setattr(&self, ino: Ino, set: &SetAttr) -> Result<Inode> {
        if let Some(size) = set.size {
            let inode = self.ns.inode(&self.repo, ino)?;
            match inode.kind {
                Kind::Dir => return Err(FsError::IsDir),
                Kind::File => {}
                _ => return Err(FsError::Invalid("truncate of a special file")),
            }
            match self.open_state(ino) {
                Some(state) => {
                    // Like a write: visible to every handle now, committed at flush/close (so
                    // `open(O_TRUNC)` + writes + close makes one version, not an empty one too).
                    let mut st = lock(&state);
                    st.content.truncate(self.io(), size)?;
                    st.mtime = Some(Time::now());
                }
                None => {
                    let mut content = FileContent::new(&inode);
                    content.truncate(self.io(), size)?;
                    let blob = content.commit(self.io())?;
                    let record = blob.is_some();
                    self.ns.commit_content(
                        &self.repo,
                        ino,
                        blob,
                        size,
                        Some(Time::now()),
                        record,
                    )?;
                }
            }
        }
        let now = Time::now();
        let changes_attrs = set.perm.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some()
            || set.ctime.is_some();
        if changes_attrs {
            if set.mtime.is_some() {
                // An explicit mtime wins over the time of buffered writes.
                if let Some(state) = self.open_state(ino) {
                    lock(&state).mtime = None;
                }
            }
            self.ns.update(&self.repo, ino, |inode| {
                if let Some(perm) = set.perm {
                    inode.perm = perm & 0o7777;
                }
                let owner_changed = set.uid.is_some_and(|u| u != inode.uid)
                    || set.gid.is_some_and(|g| g != inode.gid);
                if let Some(uid) = set.uid {
                    inode.uid = uid;
                }
                if let Some(gid) = set.gid {
                    inode.gid = gid;
                }
                if (set.uid.is_some() || set.gid.is_some())
                    && set.perm.is_none()
                    && inode.kind != Kind::Dir
                    && (owner_changed || inode.perm & 0o6000 != 0)
                {
                    // chown clears set-user-ID, and set-group-ID when group-executable.
                    inode.perm &= !0o4000;
                    if inode.perm & 0o010 != 0 {
                        inode.perm &= !0o2000;
                    }
                }
                if let Some(t) = set.atime {
                    inode.atime = t;
                }
                if let Some(t) = set.mtime {
                    inode.mtime = t;
                }
                inode.ctime = set.ctime.unwrap_or(now);
                Ok(())
            })?;
        }
        self.attr(ino)
    }

    /// Remove `parent/name` (unlink, or rmdir when `dir`).
    pub fn remove(&self, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        let is_open = |ino| self.is_open(ino);
        self.ns.remove(&self.repo, parent, name, dir, &is_open)?;
        Ok(())
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<()> {
        let is_open = |ino| self.is_open(ino);
        self.ns.rename(
            &self.repo, parent, name, newparent, newname, noreplace, exchange, &is_open,
        )?;
        Ok(())
    }

    /// Whether byte `offset` of `ino` lies in a hole.
    pub fn is_hole_at(&self, ino: Ino, offset: u64) -> Result<bool> {
        match self.open_state(ino) {
            Some(state) => lock(&state).content.is_hole_at(&self.repo, offset),
            None => {
                let inode = self.ns.inode(&self.repo, ino)?;
                FileContent::new(&inode).is_hole_at(&self.repo, offset)
            }
        }
    }

    pub fn chunk_size_of(&self, ino: Ino) -> Result<u64> {
        Ok(u64::from(self.ns.inode(&self.repo, ino)?.chunk_size.max(1)))
    }
}
