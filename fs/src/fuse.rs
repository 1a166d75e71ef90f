//! The FUSE adapter: the only module that knows fuser. Each callback calls the [`Volume`] once
//! and replies; every [`FsError`] becomes its errno in one place ([`errno`]). [`Session`] is the
//! mount's handle on fuser's session (start, serve, unmount, and the kernel cache
//! invalidations of a shared volume), so `mount` stays free of fuser's types.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::dotdfs::{self, is_virtual, DotDfs};
use crate::model::{
    Caller, DirEntry, FsError, Ino, Inode, Kind, NewEntry, Rename, SetAttr, Time, ROOT,
};
use crate::quiesce::{Active, Requests};
use crate::shared::Inval;
use crate::volume::Volume;
use dfs_node::{metrics, FuseTimer};

const BLOCK: u32 = 4096;

/// A mounted [`Volume`] as a fuser filesystem.
pub struct DfsFs {
    vol: Arc<Volume>,
    /// The read-only `.dfs` tree (versions).
    dot: DotDfs,
    /// Directory listings taken at opendir, so readdir offsets stay stable.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_handle: AtomicU64,
    /// Paths of open files, for usage analytics (taken at open, so reads cost no lookup).
    paths: Mutex<HashMap<Ino, String>>,
    /// Requests in progress, for the grace period before a remote change is invalidated.
    requests: Arc<Requests>,
    /// How long the kernel may cache attributes and entries ([`crate::namespace::Namespace::cache_ttl`]).
    ttl: Duration,
}

impl DfsFs {
    pub fn new(vol: Arc<Volume>, requests: Arc<Requests>) -> Self {
        Self {
            requests,
            ttl: vol.ns.cache_ttl(),
            vol,
            dot: DotDfs::default(),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            paths: Mutex::new(HashMap::new()),
        }
    }
}

/// A FUSE session serving a [`DfsFs`]: mounted when made, unmounted when [`Session::run`]
/// returns.
pub(crate) struct Session(fuser::Session<DfsFs>);

impl Session {
    /// Mount `fs` at `mountpoint` (default permissions, no atime; `allow_other` lets other users
    /// in) with `threads` threads serving requests.
    pub(crate) fn mount(
        fs: DfsFs,
        mountpoint: &Path,
        allow_other: bool,
        threads: usize,
    ) -> std::io::Result<Self> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("dfs".into()),
            fuser::MountOption::Subtype("dfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
        ];
        if allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(threads.max(1));
        fuser::Session::new(fs, mountpoint, &config).map(Self)
    }

    /// Something another thread can unmount this session with (ending [`Session::run`]).
    pub(crate) fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.0.unmount_callable())
    }

    /// Something another thread can make the kernel forget cached entries and inodes with.
    pub(crate) fn invalidator(&self) -> Invalidator {
        Invalidator(self.0.notifier())
    }

    /// Serve requests until the file system is unmounted.
    pub(crate) fn run(self) -> std::io::Result<()> {
        self.0.run()
    }
}

/// Unmounts a [`Session`] from another thread.
pub(crate) struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub(crate) fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

/// Tells the kernel of a [`Session`] to drop what it caches of an entry or an inode.
pub(crate) struct Invalidator(fuser::Notifier);

impl Invalidator {
    /// Send one invalidation; `ENOENT` means the kernel does not hold it.
    pub(crate) fn invalidate(&self, inval: &Inval) -> std::io::Result<()> {
        match inval {
            Inval::Entry { parent, name } => self
                .0
                .inval_entry(INodeNo(parent.0), OsStr::from_bytes(name)),
            Inval::Inode(ino) => self.0.inval_inode(INodeNo(ino.0), 0, 0),
        }
    }
}

fn errno(e: &FsError) -> Errno {
    let code = e.errno();
    if code == libc::EIO {
        tracing::error!(error = %e, "filesystem operation failed");
    }
    metrics()
        .fuse_errors
        .with_label_values(&[errno_name(code)])
        .inc();
    Errno::from_i32(code)
}

/// The symbolic name of an errno the filesystem answers with, for the error metric.
fn errno_name(code: i32) -> &'static str {
    match code {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::EXDEV => "EXDEV",
        libc::EMLINK => "EMLINK",
        libc::EFBIG => "EFBIG",
        libc::EBADF => "EBADF",
        libc::EIO => "EIO",
        _ => "other",
    }
}

/// Whether a change at `parent/name` touches the read-only `.dfs` tree.
fn read_only(parent: INodeNo, name: &OsStr) -> bool {
    is_virtual(Ino(parent.0)) || (Ino(parent.0) == ROOT && name.as_bytes() == dotdfs::NAME)
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(ino: Ino, inode: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino.0),
        size: inode.size,
        blocks: inode.size.div_ceil(512),
        atime: inode.atime.to_system(),
        mtime: inode.mtime.to_system(),
        ctime: inode.ctime.to_system(),
        crtime: inode.crtime.to_system(),
        kind: file_type(inode.kind),
        perm: inode.perm,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev,
        blksize: BLOCK,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::now(),
        TimeOrNow::SpecificTime(t) => Time::from_system(t),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl Filesystem for DfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // One at a time: add_capabilities refuses the whole set if the kernel lacks any.
        for wanted in [
            fuser::InitFlags::FUSE_BIG_WRITES,
            fuser::InitFlags::FUSE_DO_READDIRPLUS,
            fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
            fuser::InitFlags::FUSE_ATOMIC_O_TRUNC,
            fuser::InitFlags::FUSE_PARALLEL_DIROPS,
            fuser::InitFlags::FUSE_MAX_PAGES,
        ] {
            if let Err(missing) = config.add_capabilities(wanted) {
                tracing::info!(?missing, "kernel lacks a FUSE capability");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.vol.flush_all() {
            tracing::error!(error = %e, "flushing the volume at unmount failed");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _call = self.begin("lookup", req);
        let found = if read_only(parent, name) {
            self.dot.lookup(&self.vol, Ino(parent.0), name.as_bytes())
        } else {
            self.vol.lookup(Ino(parent.0), name.as_bytes())
        };
        self.entry(reply, found)
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _call = self.begin("getattr", req);
        match self.attr_any(Ino(ino.0)) {
            Ok(inode) => reply.attr(&self.ttl, &attr(Ino(ino.0), &inode)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _call = self.begin_change("setattr", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::EROFS);
        }
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(Time::from_system),
        };
        match self.vol.setattr(Ino(ino.0), &set) {
            Ok(inode) => reply.attr(&self.ttl, &attr(Ino(ino.0), &inode)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _call = self.begin("readlink", req);
        match self.attr_any(Ino(ino.0)) {
            Ok(inode) if inode.kind == Kind::Symlink => reply.data(&inode.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _call = self.begin_change("mknod", req);
        if read_only(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let Some(kind) = Kind::from_mode(mode) else {
            return reply.error(Errno::EINVAL);
        };
        if kind == Kind::Dir || kind == Kind::Symlink {
            return reply.error(Errno::EINVAL);
        }
        let perm = (mode & !umask & 0o7777) as u16;
        self.entry(
            reply,
            self.vol.ns.create(
                &self.vol.repo,
                &NewEntry {
                    rdev,
                    ..NewEntry::new(Ino(parent.0), name.as_bytes(), kind, perm, caller(req))
                },
            ),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _call = self.begin_change("mkdir", req);
        if read_only(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let perm = (mode & !umask & 0o7777) as u16;
        self.entry(
            reply,
            self.vol.ns.create(
                &self.vol.repo,
                &NewEntry::new(Ino(parent.0), name.as_bytes(), Kind::Dir, perm, caller(req)),
            ),
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _call = self.begin_change("unlink", req);
        if read_only(parent, name) {
            return reply.error(Errno::EROFS);
        }
        empty(
            reply,
            self.vol.remove(Ino(parent.0), name.as_bytes(), false),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _call = self.begin_change("rmdir", req);
        if read_only(parent, name) {
            return reply.error(Errno::EROFS);
        }
        empty(reply, self.vol.remove(Ino(parent.0), name.as_bytes(), true))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _call = self.begin_change("symlink", req);
        if read_only(parent, link_name) {
            return reply.error(Errno::EROFS);
        }
        let target = target.as_os_str().as_bytes();
        if target.len() > libc::PATH_MAX as usize {
            return reply.error(Errno::ENAMETOOLONG);
        }
        self.entry(
            reply,
            self.vol.ns.create(
                &self.vol.repo,
                &NewEntry::symlink(Ino(parent.0), link_name.as_bytes(), target, caller(req)),
            ),
        )
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin_change("rename", req);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        if read_only(parent, name) || read_only(newparent, newname) {
            return reply.error(Errno::EROFS);
        }
        empty(
            reply,
            self.vol.rename(&Rename {
                noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
                exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
                ..Rename::new(
                    Ino(parent.0),
                    name.as_bytes(),
                    Ino(newparent.0),
                    newname.as_bytes(),
                )
            }),
        )
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _call = self.begin("link", req);
        if is_virtual(Ino(ino.0)) || read_only(newparent, newname) {
            return reply.error(Errno::EROFS);
        }
        let linked = self
            .vol
            .ns
            .link(
                &self.vol.repo,
                Ino(ino.0),
                Ino(newparent.0),
                newname.as_bytes(),
            )
            .and_then(|_| Ok((Ino(ino.0), self.vol.attr(Ino(ino.0))?)));
        self.entry(reply, linked)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _call = self.begin("open", req);
        if is_virtual(Ino(ino.0)) {
            return if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                reply.error(Errno::EROFS)
            } else {
                reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_KEEP_CACHE)
            };
        }
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if truncate || flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            if let Err(e) = self.vol.may_write() {
                return reply.error(errno(&e));
            }
        }
        match self.vol.open_file(Ino(ino.0), truncate) {
            Ok(()) => {
                // The path may have changed since the last open (a rename).
                self.paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&Ino(ino.0));
                let reading = flags.0 & libc::O_ACCMODE != libc::O_WRONLY;
                self.usage(req, Some(Ino(ino.0)), reading, 0, 0);
                reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _call = self.begin("read", req);
        let data = if is_virtual(Ino(ino.0)) {
            self.dot.read(&self.vol, Ino(ino.0), offset, size as usize)
        } else {
            self.vol.read(Ino(ino.0), offset, size as usize)
        };
        match data {
            Ok(data) => {
                metrics().fuse_read_bytes.inc_by(data.len() as u64);
                if !is_virtual(Ino(ino.0)) {
                    self.usage(req, Some(Ino(ino.0)), false, data.len() as u64, 0);
                }
                reply.data(&data)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _call = self.begin("write", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::EROFS);
        }
        match self.vol.write(Ino(ino.0), offset, data) {
            Ok(()) => {
                metrics().fuse_written_bytes.inc_by(data.len() as u64);
                self.usage(req, Some(Ino(ino.0)), false, 0, data.len() as u64);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("flush", req);
        if is_virtual(Ino(ino.0)) {
            return reply.ok();
        }
        empty(reply, self.vol.flush(Ino(ino.0), false))
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("release", req);
        if is_virtual(Ino(ino.0)) {
            return reply.ok();
        }
        // Forget the path kept for analytics: a mount that opens millions of files must not
        // keep them all (a read through another handle looks it up again).
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Ino(ino.0));
        empty(reply, self.vol.release(Ino(ino.0)))
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("fsync", req);
        if is_virtual(Ino(ino.0)) {
            return reply.ok();
        }
        empty(reply, self.vol.flush(Ino(ino.0), true))
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _call = self.begin("opendir", req);
        let listing = if is_virtual(Ino(ino.0)) {
            self.dot.list(&self.vol, Ino(ino.0))
        } else {
            self.vol.ns.list(&self.vol.repo, Ino(ino.0))
        };
        match listing {
            Ok(entries) => {
                let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
                self.dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _call = self.begin("readdir", req);
        let Some(entries) = self.listing(fh) else {
            return reply.error(Errno::EBADF);
        };
        let parent = match self.parent_of(Ino(ino.0)) {
            Ok(p) => p,
            Err(e) => return reply.error(errno(&e)),
        };
        // Offsets: 1 = ".", 2 = "..", 2 + i + 1 = entry i.
        let mut next = offset;
        while next < entries.len() as u64 + 2 {
            let full = match next {
                0 => reply.add(ino, 1, FileType::Directory, "."),
                1 => reply.add(INodeNo(parent.0), 2, FileType::Directory, ".."),
                n => {
                    let e = &entries[(n - 2) as usize];
                    reply.add(
                        INodeNo(e.ino.0),
                        n + 1,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    )
                }
            };
            if full {
                break;
            }
            next += 1;
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _call = self.begin("readdirplus", req);
        let Some(entries) = self.listing(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut next = offset;
        while next < entries.len() as u64 + 2 {
            let (child, name): (Ino, &[u8]) = match next {
                0 => (Ino(ino.0), b"."),
                1 => match self.parent_of(Ino(ino.0)) {
                    Ok(p) => (p, b".."),
                    Err(e) => return reply.error(errno(&e)),
                },
                n => {
                    let e = &entries[(n - 2) as usize];
                    (e.ino, &e.name)
                }
            };
            let inode = match self.attr_any(child) {
                Ok(i) => i,
                // Removed since opendir: skip it.
                Err(FsError::NotFound) => {
                    next += 1;
                    continue;
                }
                Err(e) => return reply.error(errno(&e)),
            };
            if reply.add(
                INodeNo(child.0),
                next + 1,
                OsStr::from_bytes(name),
                &self.ttl,
                &attr(child, &inode),
                Generation(0),
            ) {
                break;
            }
            next += 1;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("releasedir", req);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("fsyncdir", req);
        empty(reply, self.vol.sync())
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _call = self.begin("statfs", req);
        match nix::sys::statvfs::statvfs(self.vol.repo.path()) {
            Ok(st) => {
                let storage = &self.vol.repo.config().storage;
                // Every byte costs (k + m) / k on disk: report usable capacity.
                let scale = |n: u64| {
                    n * u64::from(storage.data_shards)
                        / (u64::from(storage.data_shards) + u64::from(storage.parity_shards))
                };
                let frsize = st.fragment_size().max(1);
                let to_blocks = |n: u64| scale(n * frsize / u64::from(BLOCK));
                reply.statfs(
                    to_blocks(st.blocks()),
                    to_blocks(st.blocks_free()),
                    to_blocks(st.blocks_available()),
                    u64::from(u32::MAX),
                    u64::from(u32::MAX) / 2,
                    BLOCK,
                    crate::model::NAME_MAX as u32,
                    BLOCK,
                );
            }
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("setxattr", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::EROFS);
        }
        if name.as_bytes().starts_with(b"system.posix_acl_") {
            // POSIX ACLs are not supported (yet): tools like `cp -a` then fall back to chmod,
            // where a stored ACL would leave the mode bits stale.
            return reply.error(Errno::EOPNOTSUPP);
        }
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        empty(
            reply,
            self.vol.ns.set_xattr(
                &self.vol.repo,
                Ino(ino.0),
                name.as_bytes(),
                value,
                create,
                replace,
            ),
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _call = self.begin("getxattr", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::ENODATA);
        }
        match self
            .vol
            .ns
            .get_xattr(&self.vol.repo, Ino(ino.0), name.as_bytes())
        {
            Ok(value) if size == 0 => reply.size(value.len() as u32),
            Ok(value) if value.len() <= size as usize => reply.data(&value),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _call = self.begin("listxattr", req);
        if is_virtual(Ino(ino.0)) {
            return reply.size(0);
        }
        match self.vol.ns.list_xattrs(&self.vol.repo, Ino(ino.0)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() <= size as usize {
                    reply.data(&buf)
                } else {
                    reply.error(Errno::ERANGE)
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _call = self.begin("removexattr", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::EROFS);
        }
        empty(
            reply,
            self.vol
                .ns
                .remove_xattr(&self.vol.repo, Ino(ino.0), name.as_bytes()),
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _call = self.begin("access", req);
        // Permission checks are the kernel's (default_permissions); this only says it exists.
        match self.attr_any(Ino(ino.0)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _call = self.begin_change("create", req);
        if read_only(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let perm = (mode & !umask & 0o7777) as u16;
        let created = self
            .vol
            .ns
            .create(
                &self.vol.repo,
                &NewEntry::new(
                    Ino(parent.0),
                    name.as_bytes(),
                    Kind::File,
                    perm,
                    caller(req),
                ),
            )
            .and_then(|(ino, _)| {
                self.vol.open_file(ino, flags & libc::O_TRUNC != 0)?;
                Ok((ino, self.vol.attr(ino)?))
            });
        match created {
            Ok((ino, inode)) => reply.created(
                &self.ttl,
                &attr(ino, &inode),
                Generation(0),
                FileHandle(ino.0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _call = self.begin("fallocate", req);
        if is_virtual(Ino(ino.0)) {
            return reply.error(Errno::EROFS);
        }
        // Mode 0 (allocate, growing the file) and KEEP_SIZE are supported; space is not
        // reserved (content is stored at commit), so KEEP_SIZE has nothing to do.
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let end = offset.saturating_add(length);
        let result = self.vol.attr(Ino(ino.0)).and_then(|inode| {
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > inode.size {
                let set = SetAttr {
                    size: Some(end),
                    ..SetAttr::default()
                };
                self.vol.setattr(Ino(ino.0), &set)?;
            }
            Ok(())
        });
        empty(reply, result)
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _call = self.begin("lseek", req);
        match self.seek(Ino(ino.0), offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(e),
        }
    }
}

/// What every callback holds while it runs: its latency timer (the FUSE histogram) and its place
/// among the requests in progress (a remote change waits for earlier requests before it is
/// invalidated: [`Requests`]).
struct Call<'a> {
    _timer: FuseTimer,
    _active: Active<'a>,
    /// The request's uid, acted for while the callback runs ([`crate::acting`]).
    _acting: crate::acting::Scope,
}

/// Reply to a callback whose answer is nothing: ok, or the error's errno ([`errno`]).
fn empty(reply: ReplyEmpty, done: Result<(), FsError>) {
    match done {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl DfsFs {
    /// Begin callback `op` of `req` (see [`Call`]).
    fn begin(&self, op: &'static str, req: &Request) -> Call<'_> {
        Call {
            _timer: FuseTimer::start(op),
            _active: self.requests.enter(),
            _acting: crate::acting::scope(Some(req.uid())),
        }
    }

    /// Begin callback `op`, a change made by `req`'s user (counted for usage analytics).
    fn begin_change(&self, op: &'static str, req: &Request) -> Call<'_> {
        let call = self.begin(op, req);
        self.usage(req, None, false, 0, 0);
        call
    }

    /// Reply with the entry of a node found or made, or the error's errno.
    fn entry(&self, reply: ReplyEntry, found: Result<(Ino, Inode), FsError>) {
        match found {
            Ok((ino, inode)) => reply.entry(&self.ttl, &attr(ino, &inode), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Count an operation of `req`'s user for usage analytics, with bytes of file `ino`.
    fn usage(&self, req: &Request, ino: Option<Ino>, opened: bool, read: u64, written: u64) {
        let path = ino.and_then(|ino| {
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = paths.get(&ino) {
                return Some(p.clone());
            }
            let inode = self.vol.ns.inode(&self.vol.repo, ino).ok()?;
            let path =
                String::from_utf8_lossy(&self.vol.ns.path_of(&self.vol.repo, &inode)).into_owned();
            paths.insert(ino, path.clone());
            Some(path)
        });
        self.vol
            .repo
            .count_usage(req.uid(), path.as_deref(), opened, read, written);
    }

    /// Attributes of a real or virtual inode.
    fn attr_any(&self, ino: Ino) -> Result<Inode, FsError> {
        if is_virtual(ino) {
            self.dot.attr(&self.vol, ino)
        } else {
            self.vol.attr(ino)
        }
    }

    /// The directory `..` names in a listing of `ino`.
    fn parent_of(&self, ino: Ino) -> Result<Ino, FsError> {
        if is_virtual(ino) {
            Ok(self.dot.parent_of(ino))
        } else {
            Ok(self.vol.ns.inode(&self.vol.repo, ino)?.parent)
        }
    }

    fn listing(&self, fh: FileHandle) -> Option<Arc<Vec<DirEntry>>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
    }

    /// SEEK_DATA / SEEK_HOLE at chunk granularity (holes are whole chunks of zeros).
    fn seek(&self, ino: Ino, offset: i64, whence: i32) -> Result<i64, Errno> {
        if is_virtual(ino) {
            return Err(Errno::EINVAL);
        }
        let size = self.vol.attr(ino).map_err(|e| errno(&e))?.size;
        if offset < 0 || offset as u64 >= size {
            return Err(Errno::ENXIO);
        }
        let chunk = self.vol.chunk_size_of(ino).map_err(|e| errno(&e))?;
        let want_hole = match whence {
            libc::SEEK_DATA => false,
            libc::SEEK_HOLE => true,
            _ => return Err(Errno::EINVAL),
        };
        let mut pos = offset as u64;
        while pos < size {
            let hole = self.vol.is_hole_at(ino, pos).map_err(|e| errno(&e))?;
            if hole == want_hole {
                return Ok(pos as i64);
            }
            pos = (pos / chunk + 1) * chunk;
        }
        if want_hole {
            Ok(size as i64)
        } else {
            Err(Errno::ENXIO)
        }
    }
}
