//! The mounted folder through real FUSE: POSIX operations with std and libc, real tools, data
//! surviving unmount and remount, clean unmount on signals, and mount errors. Needs root and
//! /dev/fuse (CI); elsewhere each test says it skipped.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use dfs_tests::{fuse_available, is_mounted, random_bytes, Dfs};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn posix_operations_behave_like_a_local_filesystem() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    let root = &m.path;

    // Files: create, write, read back, append, overwrite in the middle.
    let f = root.join("file.txt");
    fs::write(&f, b"hello world").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"!!")
        .unwrap();
    {
        let mut h = fs::OpenOptions::new().write(true).open(&f).unwrap();
        h.seek(SeekFrom::Start(6)).unwrap();
        h.write_all(b"WORLD").unwrap();
    }
    assert_eq!(fs::read(&f).unwrap(), b"hello WORLD!!");

    // Directories, rename across directories, readdir.
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::rename(&f, root.join("a/b/moved.txt")).unwrap();
    assert!(!f.exists());
    let mut names: Vec<_> = fs::read_dir(root.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "moved.txt"]);
    assert_eq!(fs::metadata(root.join("a/b")).unwrap().nlink(), 3);
    // A directory cannot move into its own subtree, and non-empty ones cannot be removed.
    assert!(fs::rename(root.join("a"), root.join("a/b/c/a")).is_err());
    assert_eq!(
        fs::remove_dir(root.join("a/b")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );

    // Hard links share one inode; symlinks resolve.
    let moved = root.join("a/b/moved.txt");
    fs::hard_link(&moved, root.join("hard")).unwrap();
    let (m1, m2) = (
        fs::metadata(&moved).unwrap(),
        fs::metadata(root.join("hard")).unwrap(),
    );
    assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2));
    std::os::unix::fs::symlink("a/b/moved.txt", root.join("sym")).unwrap();
    assert_eq!(
        fs::read_link(root.join("sym")).unwrap(),
        Path::new("a/b/moved.txt")
    );
    assert_eq!(fs::read(root.join("sym")).unwrap(), b"hello WORLD!!");

    // chmod, chown, truncate, utimens.
    fs::set_permissions(&moved, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&moved, Some(65534), Some(65534)).unwrap();
    let meta = fs::metadata(&moved).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 65534, 65534)
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&moved)
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(fs::read(&moved).unwrap(), b"hello");
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 987_654_321);
    fs::File::options()
        .write(true)
        .open(&moved)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    let meta = fs::metadata(&moved).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_234_567_890, 987_654_321)
    );

    // xattrs.
    let p = cstr(&moved);
    let (name, value) = (c"user.colour", b"blue");
    // SAFETY: valid C strings and a valid buffer for the duration of each call.
    unsafe {
        assert_eq!(
            libc::setxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), 4, 0),
            0
        );
        let mut buf = [0u8; 16];
        let n = libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16);
        assert_eq!(&buf[..n as usize], value);
        assert_eq!(libc::removexattr(p.as_ptr(), name.as_ptr()), 0);
        assert_eq!(
            libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16),
            -1
        );
    }

    // A FIFO.
    let fifo = cstr(&root.join("fifo"));
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(fs::metadata(root.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    // renameat2: NOREPLACE refuses, EXCHANGE swaps.
    fs::write(root.join("x"), b"x").unwrap();
    fs::write(root.join("y"), b"y").unwrap();
    let (x, y) = (cstr(&root.join("x")), cstr(&root.join("y")));
    let renameat2 = |flags| {
        // SAFETY: valid C strings; AT_FDCWD with absolute paths.
        unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                x.as_ptr(),
                libc::AT_FDCWD,
                y.as_ptr(),
                flags,
            )
        }
    };
    assert_eq!(renameat2(libc::RENAME_NOREPLACE), -1);
    assert_eq!(renameat2(libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(root.join("x")).unwrap(), b"y");
    assert_eq!(fs::read(root.join("y")).unwrap(), b"x");

    // An unlinked file stays readable through an open handle.
    let mut h = fs::File::open(root.join("x")).unwrap();
    fs::remove_file(root.join("x")).unwrap();
    let mut s = String::new();
    h.read_to_string(&mut s).unwrap();
    assert_eq!(s, "y");
    drop(h);

    // Sparse files: SEEK_DATA / SEEK_HOLE.
    let sparse = root.join("sparse");
    {
        let mut h = fs::File::create(&sparse).unwrap();
        h.seek(SeekFrom::Start(64 << 20)).unwrap();
        h.write_all(b"data").unwrap();
    }
    let h = fs::File::open(&sparse).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    let data = unsafe { libc::lseek(h.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert!((60 << 20..=64 << 20).contains(&data), "SEEK_DATA at {data}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::lseek(h.as_raw_fd(), 0, libc::SEEK_HOLE) }, 0);
    assert_eq!(fs::metadata(&sparse).unwrap().len(), (64 << 20) + 4);
    drop(h);

    assert_eq!(m.unmount(), Some(0));
}

#[test]
fn content_survives_unmount_and_remount_and_real_tools_work() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    let src = dfs.path("src");
    fs::create_dir_all(src.join("deep/er")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(9 << 20 | 3, 1)).unwrap();
    fs::write(src.join("deep/small"), b"small").unwrap();
    fs::write(src.join("deep/er/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("deep/link")).unwrap();
    let dir = dfs.dir.path();
    sh(
        &format!(
            "cp -a src {}/copy && diff -r --no-dereference src {}/copy",
            m.path.display(),
            m.path.display()
        ),
        dir,
    );
    sh(&format!("tar -C src -cf {}/t.tar . && mkdir x && tar -C x -xf {}/t.tar && diff -r --no-dereference src x", m.path.display(), m.path.display()), dir);
    assert_eq!(m.unmount(), Some(0));

    let m = dfs.mount("mnt");
    sh(
        &format!("diff -r --no-dereference src {}/copy", m.path.display()),
        dir,
    );
    let meta = fs::symlink_metadata(m.path.join("copy/deep/small")).unwrap();
    let orig = fs::symlink_metadata(src.join("deep/small")).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mode()),
        (orig.mtime(), orig.mode()),
        "cp -a keeps mtime and mode"
    );
    // SIGTERM unmounts cleanly too, committing what was written.
    fs::write(m.path.join("late"), b"written just before SIGTERM").unwrap();
    let status = m.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
    let m = dfs.mount("mnt");
    assert_eq!(
        fs::read(m.path.join("late")).unwrap(),
        b"written just before SIGTERM"
    );
}

/// The kernel's read-ahead for a mount, from its device's sysfs entry.
fn read_ahead_kb(mount: &Path) -> u32 {
    let dev = fs::metadata(mount).unwrap().dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    fs::read_to_string(&knob).unwrap().trim().parse().unwrap()
}

/// A mount asks the kernel for 1 MiB of read-ahead (1 MiB FUSE reads), or what
/// `--read-ahead-kb` says; 0 leaves the kernel's own.
#[test]
fn the_mount_read_ahead_is_what_was_asked() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    assert_eq!(read_ahead_kb(&m.path), 1024);
    let data = random_bytes(3 << 20, 7);
    fs::write(m.path.join("f"), &data).unwrap();
    assert_eq!(m.unmount(), Some(0));
    for (asked, expected) in [("512", 512), ("0", 128)] {
        let m = dfs.mount_at(&dfs.path("mnt"), &["--read-ahead-kb", asked]);
        assert_eq!(read_ahead_kb(&m.path), expected, "--read-ahead-kb {asked}");
        assert!(fs::read(m.path.join("f")).unwrap() == data);
        assert_eq!(m.unmount(), Some(0));
    }
}

#[test]
fn editing_one_byte_of_a_large_file_stores_little() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    let f = m.path.join("large");
    {
        let mut h = fs::File::create(&f).unwrap();
        let block = random_bytes(16 << 20, 5);
        for i in 0..64u8 {
            let mut b = block.clone();
            b[0] = i; // every 16 MiB differs, so nothing dedups
            b[8 << 20] = i;
            h.write_all(&b).unwrap();
        }
    }
    let before = shard_bytes(&dfs);
    {
        let mut h = fs::OpenOptions::new().write(true).open(&f).unwrap();
        h.seek(SeekFrom::Start(512 << 20)).unwrap();
        h.write_all(b"X").unwrap();
    }
    let grown = shard_bytes(&dfs) - before;
    // One 4 MiB chunk (6 MiB of 4+2 shards) plus the interior node and inode-level metadata.
    assert!(
        grown <= 8 << 20,
        "editing 1 byte stored {grown} new shard bytes"
    );
    let mut h = fs::File::open(&f).unwrap();
    h.seek(SeekFrom::Start(512 << 20)).unwrap();
    let mut b = [0u8; 1];
    h.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"X");
    assert_eq!(fs::metadata(&f).unwrap().len(), 1 << 30);
}

fn shard_bytes(dfs: &Dfs) -> u64 {
    dfs.shard_files()
        .iter()
        .map(|(p, _, _)| fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn mount_errors_are_clear() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    dfs.run(&["mount", dfs.path("missing").to_str().unwrap()])
        .fails_with("does not exist");
    let full = dfs.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    dfs.run(&["mount", full.to_str().unwrap()])
        .fails_with("is not empty");
    let m = dfs.mount("mnt");
    let other = dfs.path("other");
    fs::create_dir(&other).unwrap();
    dfs.run(&["mount", other.to_str().unwrap()])
        .fails_with("in use by another dfs process");
    assert!(!is_mounted(&other));
    drop(m);
    // --nonempty mounts over content.
    let m = dfs.mount_at(&full, &["--nonempty"]);
    assert!(!full.join("x").exists(), "the mount hides what was there");
    assert_eq!(m.unmount(), Some(0));
    assert!(full.join("x").exists());
}

#[test]
fn a_corrupt_shard_is_detected_on_read_through_the_mount_and_rebuilt() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    let bytes = random_bytes(8 << 20, 9);
    fs::write(m.path.join("f"), &bytes).unwrap();
    assert_eq!(m.unmount(), Some(0));
    // Corrupt the body of data shard 0 of every erasure-coded chunk (1 MiB shards).
    let mut damaged = Vec::new();
    for (path, _, index) in dfs.shard_files() {
        let mut b = fs::read(&path).unwrap();
        if index == 0 && b.len() > 1 << 20 {
            b[4096] ^= 0x55;
            fs::write(&path, &b).unwrap();
            damaged.push((path, b));
        }
    }
    assert!(
        damaged.len() >= 2,
        "expected the file's chunks to be damaged"
    );
    let m = dfs.mount("mnt");
    assert!(
        fs::read(m.path.join("f")).unwrap() == bytes,
        "wrong bytes through the mount"
    );
    for (path, bad) in &damaged {
        assert!(
            fs::read(path).unwrap() != *bad,
            "{} was not rebuilt",
            path.display()
        );
    }
    assert_eq!(m.unmount(), Some(0));
}

/// Writers rewrite files generation after generation (each generation one byte value), fsyncing
/// every other one; the mount is killed with SIGKILL in the middle. After mounting again, fsck
/// is clean, every file holds exactly one whole generation, never a mix, and never one older
/// than the last that was fsynced (or is empty, when a create truncated it after that fsync).
#[test]
fn kill_9_while_writers_are_busy_loses_nothing_fsynced_and_mixes_nothing() {
    if !fuse_available() {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::sync::Arc;
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    let files = 4;
    let size = 6 << 20; // two chunks, so a mix of generations would show
    let stop = Arc::new(AtomicBool::new(false));
    let synced: Arc<Vec<AtomicU8>> = Arc::new((0..files).map(|_| AtomicU8::new(0)).collect());
    // The generation each writer last truncated the file for (the create's O_TRUNC).
    let created: Arc<Vec<AtomicU8>> = Arc::new((0..files).map(|_| AtomicU8::new(0)).collect());
    let writers: Vec<_> = (0..files)
        .map(|i| {
            let path = m.path.join(format!("f{i}"));
            let (stop, synced, created) = (stop.clone(), synced.clone(), created.clone());
            std::thread::spawn(move || {
                for generation in 1..=250u8 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    created[i].store(generation, Ordering::SeqCst);
                    let Ok(mut h) = fs::File::create(&path) else {
                        break;
                    };
                    if h.write_all(&vec![generation; size]).is_err() {
                        break;
                    }
                    if generation % 2 == 0 {
                        if h.sync_all().is_err() {
                            break;
                        }
                        synced[i].store(generation, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Let several generations land, then kill the mount without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while synced.iter().any(|s| s.load(Ordering::SeqCst) < 4) {
        assert!(
            std::time::Instant::now() < deadline,
            "writers made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before: Vec<u8> = synced.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    let status = m.signal(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }

    let fsck = dfs.run(&["fsck", "--deep"]);
    assert_eq!(fsck.code, Some(0), "fsck after the crash: {fsck:#?}");
    let m = dfs.mount("mnt");
    for i in 0..files {
        let got = fs::read(m.path.join(format!("f{i}"))).unwrap();
        let synced_gen = synced[i].load(Ordering::SeqCst);
        assert!(synced_gen >= before[i]);
        if got.is_empty() {
            // Empty is what a create's O_TRUNC leaves until its writes land, as on any local
            // filesystem: allowed only when a create came after the last fsync. (The truncation
            // becomes durable when the previous handle's release commits the file, which can
            // come after the next open.)
            assert!(
                created[i].load(Ordering::SeqCst) > synced_gen,
                "file {i} lost fsynced generation {synced_gen}"
            );
            continue;
        }
        assert_eq!(got.len(), size, "file {i} has a partial generation");
        let generation = got[0];
        assert!(
            got.iter().all(|&b| b == generation),
            "file {i} mixes generations"
        );
        assert!(
            generation >= synced_gen,
            "file {i} went back past an fsynced generation"
        );
    }
}

#[test]
fn versions_are_readable_listed_revertible_and_outlive_deletion() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    dfs.configure("[versions]\nkeep_last = 3\nkeep_daily_days = 0\n");
    let m = dfs.mount("mnt");
    let dir = m.path.join("notes");
    fs::create_dir(&dir).unwrap();
    let f = dir.join("todo.txt");
    for text in ["one", "two", "three", "four"] {
        fs::write(&f, text).unwrap();
    }
    // `.dfs` is reachable but not listed, and read-only.
    let names: Vec<_> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes"]);
    let vdir = m.path.join(".dfs/versions/notes/todo.txt");
    let mut versions: Vec<_> = fs::read_dir(&vdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    let contents: Vec<String> = versions
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(
        contents,
        ["two", "three", "four"],
        "keep_last = 3 keeps the newest three"
    );
    assert_eq!(
        fs::write(vdir.join("new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs::OpenOptions::new()
            .write(true)
            .open(&versions[0])
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );

    // dfs versions lists them; dfs revert restores one as a new version.
    let listed = dfs.run(&["versions", f.to_str().unwrap()]).ok();
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:#?}");
    let oldest = versions[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    dfs.run(&["revert", f.to_str().unwrap(), "--to", &oldest])
        .ok();
    assert_eq!(fs::read_to_string(&f).unwrap(), "two");
    let listed = dfs.run(&["versions", f.to_str().unwrap()]).ok();
    assert_eq!(
        listed.stdout.lines().count(),
        3,
        "still three kept: {listed:#?}"
    );

    // A deleted file stays restorable.
    fs::remove_file(&f).unwrap();
    assert!(!f.exists());
    let listed = dfs.run(&["versions", f.to_str().unwrap()]).ok();
    let newest = listed
        .stdout
        .lines()
        .last()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    dfs.run(&["revert", f.to_str().unwrap(), "--to", &newest])
        .ok();
    assert_eq!(fs::read_to_string(&f).unwrap(), "two");
    dfs.run(&["versions", m.path.join("nope").to_str().unwrap()])
        .fails_with("no versions");
    dfs.run(&["versions", "/tmp"])
        .fails_with("not inside a dfs mount");
}

#[test]
fn big_sparse_files_mmap_concurrency_and_huge_directories() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");

    // Over 4 GiB: a write at 5 GiB makes a sparse file read back exactly.
    let big = m.path.join("big");
    {
        let mut h = fs::File::create(&big).unwrap();
        h.seek(SeekFrom::Start(5 << 30)).unwrap();
        h.write_all(b"far away").unwrap();
    }
    let mut h = fs::File::open(&big).unwrap();
    assert_eq!(h.metadata().unwrap().len(), (5 << 30) + 8);
    h.seek(SeekFrom::Start((5 << 30) - 4)).unwrap();
    let mut b = [0u8; 12];
    h.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"\0\0\0\0far away");
    drop(h); // an open file keeps the mount busy at unmount

    // mmap: writes through a shared mapping reach the file.
    let mapped = m.path.join("mapped");
    fs::write(&mapped, vec![0u8; 1 << 20]).unwrap();
    {
        let h = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&mapped)
            .unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of 1 MiB of an open file, written within bounds and
        // unmapped before the file is closed.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                h.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(b"mmap!".as_ptr(), (p as *mut u8).add(4096), 5);
            assert_eq!(libc::msync(p, 1 << 20, libc::MS_SYNC), 0);
            assert_eq!(libc::munmap(p, 1 << 20), 0);
        }
    }
    let content = fs::read(&mapped).unwrap();
    assert_eq!(&content[4096..4101], b"mmap!");

    // Concurrent writers (disjoint ranges) and readers of one file.
    let shared = m.path.join("shared");
    fs::write(&shared, vec![0u8; 8 << 20]).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut h = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&shared)
                    .unwrap();
                for round in 0..8u64 {
                    let off = (t as u64) * (2 << 20) + round * (256 << 10);
                    h.seek(SeekFrom::Start(off)).unwrap();
                    h.write_all(&vec![t + 1; 256 << 10]).unwrap();
                    let mut r = fs::File::open(&shared).unwrap();
                    let mut buf = vec![0u8; 64 << 10];
                    r.read_exact(&mut buf).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let content = fs::read(&shared).unwrap();
    for t in 0..4usize {
        let part = &content[t * (2 << 20)..(t + 1) * (2 << 20)];
        assert!(
            part.iter().all(|&b| b == t as u8 + 1),
            "writer {t}'s range is wrong"
        );
    }

    // A directory with 100,000 entries.
    let huge = m.path.join("huge");
    fs::create_dir(&huge).unwrap();
    for i in 0..100_000 {
        fs::File::create(huge.join(format!("entry-{i:06}"))).unwrap();
    }
    let mut count = 0;
    for e in fs::read_dir(&huge).unwrap() {
        e.unwrap();
        count += 1;
    }
    assert_eq!(count, 100_000);
    assert!(huge.join("entry-099999").exists());
    drop(m);
    dfs.run(&["fsck"]).ok();
}

/// Regression (found by pjdfstest `truncate::shrink_not_empty`): the kernel sends RELEASE after
/// close(2) returns, so a truncate right after a close can reach the file while its last handle
/// is being released; the truncate must not be lost.
#[test]
fn truncate_right_after_close_is_never_lost() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let m = dfs.mount("mnt");
    for i in 0..300u64 {
        let f = m.path.join(format!("f{}", i % 7));
        fs::File::create(&f)
            .unwrap()
            .write_all(&[7u8; 12345])
            .unwrap();
        let size = 23456 + i;
        let p = cstr(&f);
        // SAFETY: a valid C string.
        assert_eq!(
            unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) },
            0
        );
        assert_eq!(fs::metadata(&f).unwrap().len(), size, "round {i}");
    }
}

#[test]
fn gc_reclaims_deleted_files_and_expired_versions_and_keeps_the_rest() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let keep = random_bytes(6 << 20, 31);
    let gone = random_bytes(8 << 20, 32);
    {
        let m = dfs.mount("mnt");
        fs::write(m.path.join("keep"), &keep).unwrap();
        fs::write(m.path.join("edited"), random_bytes(5 << 20, 33)).unwrap();
        fs::write(m.path.join("edited"), b"small now").unwrap();
        fs::write(m.path.join("gone"), &gone).unwrap();
        fs::remove_file(m.path.join("gone")).unwrap();
        assert_eq!(m.unmount(), Some(0));
    }
    // Default retention: the deleted file's versions are still restorable, nothing to free.
    let before = shard_bytes(&dfs);
    let out = dfs.run(&["gc"]).ok().stdout;
    assert!(out.contains("0 versions expired"), "{out}");
    assert_eq!(
        shard_bytes(&dfs),
        before,
        "gc freed data still in use: {out}"
    );

    // Keep only the newest version of live files; deleted files' versions expire at once.
    dfs.configure("[versions]\nkeep_last = 1\nkeep_daily_days = 0\n");
    let out = dfs.run(&["gc"]).ok().stdout;
    assert!(out.contains("versions expired"), "{out}");
    let after = shard_bytes(&dfs);
    // The deleted 8 MiB and the replaced 5 MiB went (x1.5 for parity), the rest stays.
    let freed = before - after;
    assert!(
        freed >= (13 << 20) * 3 / 2 - (1 << 20),
        "freed only {freed}: {out}"
    );
    assert!(
        after >= (6 << 20) * 3 / 2,
        "too much freed: {after} left: {out}"
    );
    dfs.run(&["fsck", "--deep"]).ok();

    let m = dfs.mount("mnt");
    assert_eq!(fs::read(m.path.join("keep")).unwrap(), keep);
    assert_eq!(fs::read(m.path.join("edited")).unwrap(), b"small now");
    assert!(!m.path.join(".dfs/versions/gone").exists());
    assert_eq!(m.unmount(), Some(0));
}
