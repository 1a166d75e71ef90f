//! A mounted volume: the namespace, the open files with their buffered content, and the chunk
//! cache, over one data directory. Everything the FUSE adapter does goes through here, as plain
//! `Result`s; nothing in this module knows about FUSE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dfs_node::{KeyScope, Pipeline, Repo};

use crate::file::{ChunkCache, FileContent, Io, ReadBytes};
use crate::local::LocalNamespace;
use crate::model::{Caller, FsError, Ino, Inode, Kind, Rename, Result, SetAttr, Time};
use crate::namespace::{Base, Namespace};
use dfs_node::ChunkWorkers;

/// State of a file while at least one handle has it open.
pub struct OpenFile {
    pub content: FileContent,
    /// Modification time of uncommitted writes.
    pub mtime: Option<Time>,
    /// Content was committed by a flush without recording a version: the next close or fsync
    /// records one.
    pub unversioned: bool,
    /// Writes arrived since the last version: the next flush records one. close(2) waits for
    /// its flush, while the release that FUSE sends afterwards may come only once the file was
    /// opened (and truncated) again, which used to lose the version of a quick rewrite.
    pub written: bool,
    /// The last handle was released and everything committed. A request that took this state
    /// just before then must treat the file as not open (its inode is up to date).
    pub closed: bool,
    /// The version the buffered content started from (shared volumes: a concurrent write by
    /// another member becomes a conflict, not a silent overwrite).
    pub base: Base,
    /// The uid that last opened the file: its content is committed as that uid's user
    /// ([`crate::acting`]).
    pub opener: Option<u32>,
}

/// One volume, ready to serve filesystem operations.
pub struct Volume {
    /// The data directory's storage (the namespace's metadata lives there).
    pub repo: Arc<Repo>,
    /// Chunks in and out, over the network when a peer runs.
    pub pipeline: Arc<Pipeline>,
    pub ns: Box<dyn Namespace>,
    pub cache: ChunkCache,
    workers: ChunkWorkers,
    files: Mutex<HashMap<Ino, Arc<Mutex<OpenFile>>>>,
    /// Open handles per inode. A leaf lock (never held while taking another), so the namespace
    /// can ask [`Volume::is_open`] under its own lock.
    ///
    /// Lock order: `files` -> a file's state -> the namespace -> `opens`.
    opens: Mutex<HashMap<Ino, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Volume {
    /// Open the own volume of the data directory under `pipeline`; the root directory is
    /// created for `owner` on first use.
    pub fn open(pipeline: Pipeline, owner: Caller) -> Result<Self> {
        let repo = pipeline.repo().clone();
        repo.ensure_volume_owner()?;
        let ns = LocalNamespace::open(&repo, owner)?;
        let reaped = ns.reap_orphans(&repo)?;
        if reaped > 0 {
            tracing::info!(
                reaped,
                "removed files unlinked while open when the volume last stopped"
            );
        }
        // No one else reads this volume: its chunks' keys never leave the peer.
        Ok(Self::with_namespace(
            pipeline,
            Box::new(ns),
            KeyScope::Private,
        ))
    }

    /// A volume over any namespace (a shared volume's, say), whose chunks are sealed
    /// with keys of `scope`: [`KeyScope::Shareable`] when anyone else reads the volume.
    pub fn with_namespace(pipeline: Pipeline, ns: Box<dyn Namespace>, scope: KeyScope) -> Self {
        let repo = pipeline.repo().clone();
        let pipeline = Arc::new(pipeline);
        // Twice the cores: fetch jobs wait on the disk as much as they compute, and more
        // threads keep both the disk and the cores busy (measured: +20% cold sequential reads).
        let threads = 2 * repo.config().storage.worker_count();
        let memory_cache = usize::try_from(repo.config().cache.memory_bytes).unwrap_or(usize::MAX);
        Self {
            workers: ChunkWorkers::start_in(pipeline.clone(), threads, scope),
            pipeline,
            repo,
            ns,
            cache: ChunkCache::new(memory_cache),
            files: Mutex::new(HashMap::new()),
            opens: Mutex::new(HashMap::new()),
        }
    }

    fn io(&self) -> Io<'_> {
        Io {
            pipeline: &self.pipeline,
            cache: &self.cache,
            workers: &self.workers,
        }
    }

    pub fn is_open(&self, ino: Ino) -> bool {
        lock(&self.opens).contains_key(&ino)
    }

    fn open_state(&self, ino: Ino) -> Option<Arc<Mutex<OpenFile>>> {
        lock(&self.files).get(&ino).cloned()
    }

    /// Run `f` on the open state of `ino` under its lock; `None` when the file is not open.
    fn with_open<T>(&self, ino: Ino, f: impl FnOnce(&mut OpenFile) -> T) -> Option<T> {
        let state = self.open_state(ino)?;
        let mut st = lock(&state);
        if st.closed {
            return None;
        }
        Some(f(&mut st))
    }

    /// The inode with the size and times of uncommitted writes applied.
    pub fn attr(&self, ino: Ino) -> Result<Inode> {
        let mut inode = self.ns.inode(&self.repo, ino)?;
        if let Some((size, mtime)) = self.with_open(ino, |st| (st.content.size, st.mtime)) {
            inode.size = size;
            if let Some(t) = mtime {
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
    /// Whether the caller may change the volume ([`Namespace::may_write`]).
    pub fn may_write(&self) -> Result<()> {
        self.ns.may_write()
    }

    pub fn open_file(&self, ino: Ino, truncate: bool) -> Result<()> {
        let inode = self.ns.inode(&self.repo, ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let state = {
            let mut files = lock(&self.files);
            let live = files.get(&ino).filter(|s| !lock(s).closed).cloned();
            let state = match live {
                Some(state) => state,
                None => {
                    // New, or released a moment ago: start from the inode (which that release
                    // committed; read again under the table lock).
                    let inode = self.ns.inode(&self.repo, ino)?;
                    let state = Arc::new(Mutex::new(OpenFile {
                        content: FileContent::new(&inode),
                        mtime: None,
                        unversioned: false,
                        written: false,
                        closed: false,
                        base: inode.base,
                        opener: None,
                    }));
                    files.insert(ino, state.clone());
                    state
                }
            };
            *lock(&self.opens).entry(ino).or_default() += 1;
            state
        };
        if let Some(uid) = crate::acting::uid() {
            lock(&state).opener = Some(uid);
        }
        if truncate {
            let mut st = lock(&state);
            if st.content.size != 0 {
                st.content.truncate(self.io(), 0)?;
                st.mtime = Some(Time::now());
            }
        }
        Ok(())
    }

    /// Another member changed `ino` (a shared volume): an open file with no change of its own
    /// pending takes the new content, so its readers see it; one with local writes keeps them
    /// (their commit then names the version they started from, and the two conflict).
    pub fn reload_if_clean(&self, ino: Ino) {
        let Some(state) = self.open_state(ino) else {
            return;
        };
        let mut st = lock(&state);
        if st.closed || st.content.changed || st.mtime.is_some() {
            return;
        }
        match self.ns.inode(&self.repo, ino) {
            Ok(inode) if inode.kind == Kind::File && inode.base != st.base => {
                st.content = FileContent::new(&inode);
                st.base = inode.base;
            }
            _ => {}
        }
    }

    /// Close one handle: commit (recording a version), and when it was the last, close the
    /// state so a request that raced the close cannot leave a change in it uncommitted.
    pub fn release(&self, ino: Ino) -> Result<()> {
        let Some(state) = self.open_state(ino) else {
            return Ok(());
        };
        let last = {
            let mut opens = lock(&self.opens);
            match opens.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    opens.remove(&ino);
                    true
                }
                None => false,
            }
        };
        loop {
            let result = {
                let mut st = lock(&state);
                if st.closed {
                    return Ok(());
                }
                // Only the last close records a version: a release that arrives late (FUSE
                // sends it after close(2) returns) while a new handle has already truncated
                // the file would otherwise record that empty content as a version.
                self.commit(ino, &mut st, false, last)
            };
            if !last || result.is_err() {
                return result;
            }
            let mut files = lock(&self.files);
            let mut st = lock(&state);
            if self.is_open(ino) {
                return result; // opened again meanwhile: the state lives on
            }
            if st.content.changed || st.mtime.is_some() || st.unversioned {
                continue; // changed after our commit (e.g. a truncate): commit again
            }
            st.closed = true;
            if files.get(&ino).is_some_and(|s| Arc::ptr_eq(s, &state)) {
                files.remove(&ino);
            }
            drop(st);
            drop(files);
            self.ns.reap_if_unlinked(&self.repo, ino)?;
            return result;
        }
    }

    /// Commit an open file's buffered writes as its new content (`durable`: fsync).
    ///
    /// Versions are recorded (`version`) at close (the flush of a handle that was written
    /// through), at the last release and at fsync, not at every flush: a shell's `echo x > f`
    /// flushes once with the file just truncated, and that is not a version anyone wants.
    fn commit(&self, ino: Ino, st: &mut OpenFile, durable: bool, version: bool) -> Result<()> {
        let _acting = crate::acting::scope(st.opener.or(crate::acting::uid()));
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
            .commit_content(&self.repo, ino, blob, size, mtime, record, &mut st.base)?;
        st.unversioned = !record && (blob.is_some() || st.unversioned);
        if version {
            st.written = false;
        }
        if durable {
            self.ns.sync(&self.repo)?;
        }
        Ok(())
    }

    /// flush(2)/fsync(2) of an open file.
    pub fn flush(&self, ino: Ino, durable: bool) -> Result<()> {
        // A version at close(2) (written since the last one) and at fsync; not at a flush of
        // a file only truncated (a shell's `open(O_TRUNC)`, `dup2`, `close`).
        match self.with_open(ino, |st| {
            let version = durable || st.written;
            self.commit(ino, st, durable, version)
        }) {
            Some(result) => result,
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
        self.ns.sync(&self.repo)?;
        Ok(())
    }

    /// Commit every open file (unmount).
    pub fn flush_all(&self) -> Result<()> {
        let open: Vec<(Ino, Arc<Mutex<OpenFile>>)> = lock(&self.files)
            .iter()
            .map(|(i, s)| (*i, s.clone()))
            .collect();
        for (ino, state) in open {
            let mut st = lock(&state);
            if !st.closed {
                self.commit(ino, &mut st, false, true)?;
            }
        }
        self.sync()
    }

    pub fn read(&self, ino: Ino, offset: u64, size: usize) -> Result<ReadBytes> {
        match self.with_open(ino, |st| st.content.read(self.io(), offset, size)) {
            Some(result) => result,
            None => {
                let inode = self.ns.inode(&self.repo, ino)?;
                FileContent::new(&inode).read(self.io(), offset, size)
            }
        }
    }

    /// Read the content an inode describes (e.g. an old version), without opening it.
    pub fn read_content(&self, inode: &Inode, offset: u64, size: usize) -> Result<ReadBytes> {
        FileContent::new(inode).read(self.io(), offset, size)
    }

    pub fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<()> {
        self.with_open(ino, |st| {
            st.content.write(self.io(), offset, data)?;
            st.mtime = Some(Time::now());
            st.written = true;
            Ok(())
        })
        .unwrap_or(Err(FsError::Invalid("file is not open")))
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
            // Open: truncate the shared state and commit at once (truncate(2) is not buffered
            // like a write), without recording a version: the close that follows does, so
            // `open(O_TRUNC)` + writes + close still makes one version, not an empty one too.
            let truncated = self.with_open(ino, |st| {
                st.content.truncate(self.io(), size)?;
                st.mtime = Some(Time::now());
                self.commit(ino, st, false, false)
            });
            match truncated {
                Some(result) => result?,
                None => {
                    // Not open: start from the inode as it is now, not as read above.
                    let inode = self.ns.inode(&self.repo, ino)?;
                    let mut content = FileContent::new(&inode);
                    content.truncate(self.io(), size)?;
                    let blob = content.commit(self.io())?;
                    let record = blob.is_some();
                    let mut base = inode.base;
                    self.ns.commit_content(
                        &self.repo,
                        ino,
                        blob,
                        size,
                        Some(Time::now()),
                        record,
                        &mut base,
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
                self.with_open(ino, |st| st.mtime = None);
            }
            self.ns.update(&self.repo, ino, &mut |inode| {
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

    pub fn rename(&self, rename: &Rename<'_>) -> Result<()> {
        let is_open = |ino| self.is_open(ino);
        self.ns.rename(&self.repo, rename, &is_open)?;
        Ok(())
    }

    /// Whether byte `offset` of `ino` lies in a hole.
    pub fn is_hole_at(&self, ino: Ino, offset: u64) -> Result<bool> {
        match self.with_open(ino, |st| st.content.is_hole_at(&self.pipeline, offset)) {
            Some(result) => result,
            None => {
                let inode = self.ns.inode(&self.repo, ino)?;
                FileContent::new(&inode).is_hole_at(&self.pipeline, offset)
            }
        }
    }

    pub fn chunk_size_of(&self, ino: Ino) -> Result<u64> {
        Ok(u64::from(self.ns.inode(&self.repo, ino)?.chunk_size.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Caller, NewEntry, ROOT};

    /// FUSE answers close(2) with a flush and sends the release afterwards, sometimes only after
    /// the program opened the file again: `for t in a b c; do echo $t > f; done` must still make
    /// a version of every content written and closed, and a flush of a file only truncated (a
    /// shell's `dup2` then `close`) none.
    #[test]
    fn every_close_after_writes_is_a_version_even_when_its_release_comes_late() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::open(dir.path()).unwrap());
        let root = Caller { uid: 0, gid: 0 };
        let vol = Volume::open(Pipeline::local(repo), root).unwrap();
        let (ino, _) = vol
            .ns
            .create(
                &vol.repo,
                &NewEntry::new(ROOT, b"todo.txt", Kind::File, 0o644, root),
            )
            .unwrap();
        let sizes = |vol: &Volume| -> Vec<u64> {
            crate::versions::of_inode(&vol.repo, ino)
                .unwrap()
                .iter()
                .map(|v| v.record.size)
                .collect()
        };
        for text in ["one", "three", "fourth"] {
            vol.open_file(ino, true).unwrap();
            vol.flush(ino, false).unwrap(); // the shell's close of its first descriptor
            vol.write(ino, 0, text.as_bytes()).unwrap();
            vol.flush(ino, false).unwrap(); // close(2); the release comes later
        }
        for _ in 0..3 {
            vol.release(ino).unwrap();
        }
        assert_eq!(sizes(&vol), [3, 5, 6]);
        assert_eq!(vol.read(ino, 0, 16).unwrap().as_slice(), b"fourth");
    }

    /// The chunks of this peer's own volume are sealed with private keys (read on their AEAD
    /// tag alone); a volume others read (a shared one) seals with keys that may be given out.
    #[test]
    fn the_own_volume_seals_privately_and_a_volume_others_read_does_not() {
        use dfs_node::VOLUME_OWNER;
        let written = |scope: Option<KeyScope>| {
            let dir = tempfile::tempdir().unwrap();
            let repo = Arc::new(Repo::open(dir.path()).unwrap());
            let root = Caller { uid: 0, gid: 0 };
            let vol = match scope {
                None => Volume::open(Pipeline::local(repo.clone()), root).unwrap(),
                Some(scope) => {
                    repo.ensure_volume_owner().unwrap();
                    let ns = LocalNamespace::open(&repo, root).unwrap();
                    Volume::with_namespace(Pipeline::local(repo.clone()), Box::new(ns), scope)
                }
            };
            let (ino, _) = vol
                .ns
                .create(
                    &vol.repo,
                    &NewEntry::new(ROOT, b"a", Kind::File, 0o644, root),
                )
                .unwrap();
            vol.open_file(ino, true).unwrap();
            vol.write(ino, 0, &[7u8; 300_000]).unwrap();
            vol.flush(ino, true).unwrap();
            vol.release(ino).unwrap();
            let chunks: Vec<_> = repo
                .meta()
                .refs()
                .unwrap()
                .into_iter()
                .filter(|(_, owner)| *owner == VOLUME_OWNER)
                .map(|(id, _)| repo.meta().is_private(&id).unwrap())
                .collect();
            assert!(!chunks.is_empty());
            (chunks, dir)
        };
        let (own, _dir) = written(None);
        assert!(own.iter().all(|p| *p), "{own:?}");
        let (shared, _dir) = written(Some(KeyScope::Shareable));
        assert!(shared.iter().all(|p| !*p), "{shared:?}");
    }
}
