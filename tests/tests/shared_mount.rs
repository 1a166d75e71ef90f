//! Shared volumes through real mounts: members as separate processes on loopback, each with its
//! own FUSE mount of volume `team`, and a storage peer that is not a member.
//!
//! - Changes made in one mount (files, directories, renames, content, modes, deletes) show in
//!   the others' mounts, in `ls` and `cat`, without remounting, although the kernel may cache
//!   entries for 10 s: the follower invalidates what each remote op touched.
//! - Random operations from all three members, one of them partitioned (mounted alone) for
//!   part of the run, end in three identical trees; every member's own directory matches a
//!   model (the same operations on a local directory, outcomes included); concurrent writes
//!   keep both versions, naming both authors; delete against edit keeps the edit; crossed
//!   directory moves make no cycle and lose nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dfs_tests::{fuse_available, random_bytes, wait_for, SharedNetwork};

/// What a tree holds: relative path -> (kind, mode, content or symlink target).
type Snapshot = BTreeMap<String, (char, u32, Vec<u8>)>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                out.insert(rel, ('l', 0, target.into_os_string().into_encoded_bytes()));
            } else if meta.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                walk(root, &path, out)?;
            } else {
                out.insert(rel, ('f', mode, std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out).unwrap_or_else(|e| panic!("walk {}: {e}", root.display()));
    out
}

/// `snapshot` that returns `None` instead of panicking on a transient error (a file renamed
/// while the walk was between its listing and its read).
fn try_snapshot(root: &Path) -> Option<Snapshot> {
    std::panic::catch_unwind(|| snapshot(root)).ok()
}

fn skip() -> bool {
    !fuse_available()
}

#[test]
fn changes_in_one_mount_show_in_the_others_without_remounting() {
    if skip() {
        return;
    }
    let mut net = SharedNetwork::start(3);
    let (a, b, c) = (net.path(0), net.path(1), net.path(2));

    // The kernels of b and c look first, so they hold entries that must be invalidated.
    assert!(std::fs::read_dir(&b).expect("ls b").next().is_none());
    assert!(std::fs::read_dir(&c).expect("ls c").next().is_none());

    std::fs::create_dir(a.join("docs")).expect("mkdir");
    let content = random_bytes(300_000, 1);
    let started = Instant::now();
    std::fs::write(a.join("docs/report.bin"), &content).expect("write in a");
    for mount in [&b, &c] {
        wait_for(Duration::from_secs(10), "the file in another mount", || {
            (std::fs::read(mount.join("docs/report.bin")).ok()? == content).then_some(())
        });
    }
    eprintln!(
        "a file closed in one mount read back right in two others after {:?}",
        started.elapsed()
    );
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(&b), BTreeSet::from(["docs".to_string()]));

    // Rename, overwrite, chmod and delete, each while the other kernels have the old state
    // cached (entries for 10 s), so only invalidation can show the change within 5 s.
    assert!(c.join("docs/report.bin").exists());
    std::fs::rename(a.join("docs/report.bin"), a.join("docs/final.bin")).expect("rename");
    wait_for(Duration::from_secs(5), "the rename in c", || {
        (!c.join("docs/report.bin").exists() && c.join("docs/final.bin").exists()).then_some(())
    });
    assert_eq!(
        names(&b.join("docs")),
        BTreeSet::from(["final.bin".to_string()])
    );

    let second = random_bytes(300_000, 2);
    assert_eq!(
        std::fs::read(b.join("docs/final.bin")).expect("read b"),
        content
    );
    std::fs::write(a.join("docs/final.bin"), &second).expect("overwrite in a");
    wait_for(Duration::from_secs(5), "the new content in b", || {
        (std::fs::read(b.join("docs/final.bin")).ok()? == second).then_some(())
    });

    std::fs::set_permissions(a.join("docs/final.bin"), PermissionsExt::from_mode(0o600))
        .expect("chmod");
    wait_for(Duration::from_secs(5), "the new mode in c", || {
        let mode = std::fs::metadata(c.join("docs/final.bin")).ok()?.mode() & 0o777;
        (mode == 0o600).then_some(())
    });

    std::fs::remove_file(b.join("docs/final.bin")).expect("rm in b");
    for mount in [&a, &c] {
        wait_for(Duration::from_secs(5), "the delete in the others", || {
            (!mount.join("docs/final.bin").exists()).then_some(())
        });
    }

    // What a shared tree cannot hold is refused, not half done.
    std::fs::write(a.join("docs/one"), b"1").expect("write");
    let link = std::fs::hard_link(a.join("docs/one"), a.join("docs/two"))
        .expect_err("hard links are refused");
    assert_eq!(link.raw_os_error(), Some(libc::EPERM), "{link}");
    let fifo = std::ffi::CString::new(a.join("docs/fifo").into_os_string().into_encoded_bytes())
        .expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    let made = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    assert_eq!(made, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    wait_for(Duration::from_secs(5), "docs/one in c", || {
        (names(&c.join("docs")) == BTreeSet::from(["one".to_string()])).then_some(())
    });

    // `dfs gc` on a member keeps what its shared volume refers to (its chunks are written
    // under the same owner as its own volume's, which the own namespace does not know).
    let from_b = random_bytes(200_000, 3);
    std::fs::write(b.join("docs/from-b"), &from_b).expect("write in b");
    wait_for(Duration::from_secs(10), "b's file in a", || {
        (std::fs::read(a.join("docs/from-b")).ok()? == from_b).then_some(())
    });
    net.unmount(1);
    let gc = net.members[1].run(&["gc"]).ok();
    assert!(gc.stdout.contains("removed 0 chunks"), "{gc:?}");
    net.members[1].run(&["cache", "prune"]).ok();
    net.remount(1, true);
    assert_eq!(
        std::fs::read(b.join("docs/from-b")).expect("read after gc"),
        from_b
    );

    // The storage peer holds shards of the volume but is no member: no volume, and neither
    // the names nor the plaintext anywhere in its data directory.
    assert!(net.storage.volumes().is_empty());
    let mut held = Vec::new();
    for entry in walk_files(&net.storage.data()) {
        held.extend(std::fs::read(&entry).unwrap_or_default());
    }
    assert!(!held.is_empty());
    for needle in [&b"final.bin"[..], b"report.bin", &second[1000..1064]] {
        assert!(
            !held.windows(needle.len()).any(|w| w == needle),
            "the storage peer holds {:?} in the clear",
            String::from_utf8_lossy(&needle[..needle.len().min(16)])
        );
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random operations in one member's own directory, each done on the mount and on a model
/// directory (a local filesystem), with the same outcome required of both.
struct Worker {
    mount: PathBuf,
    model: PathBuf,
    rng: Rng,
}

const NAMES: [&str; 6] = ["a", "b", "c", "d.txt", "e", "f"];

impl Worker {
    /// Directories that exist (in the model), relative, "" the worker's root.
    fn dirs(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        for (path, (kind, ..)) in snapshot(&self.model) {
            if kind == 'd' {
                out.push(path);
            }
        }
        out
    }

    fn entries(&self) -> Vec<String> {
        snapshot(&self.model).into_keys().collect()
    }

    fn pick_path(&mut self) -> String {
        let dirs = self.dirs();
        let dir = dirs[self.rng.below(dirs.len())].clone();
        let name = NAMES[self.rng.below(NAMES.len())];
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    }

    fn pick_entry(&mut self) -> Option<String> {
        let entries = self.entries();
        (!entries.is_empty()).then(|| entries[self.rng.below(entries.len())].clone())
    }

    /// One random operation on both; panics if the outcomes differ.
    fn step(&mut self, n: usize) {
        let choice = self.rng.below(10);
        let (what, mount, model) = match choice {
            0..=2 => {
                let path = self.pick_path();
                let data = random_bytes(self.rng.below(40_000), self.rng.next());
                // fsync: an error at commit (which close(2) would not report) shows here.
                let f = |root: &Path| {
                    let mut file = std::fs::File::create(root.join(&path))?;
                    file.write_all(&data)?;
                    file.sync_all()
                };
                (format!("write {path}"), f(&self.mount), f(&self.model))
            }
            3 => {
                let path = self.pick_path();
                let f = |root: &Path| std::fs::create_dir(root.join(&path));
                (format!("mkdir {path}"), f(&self.mount), f(&self.model))
            }
            4 | 5 => {
                let Some(from) = self.pick_entry() else {
                    return;
                };
                let to = self.pick_path();
                let f = |root: &Path| std::fs::rename(root.join(&from), root.join(&to));
                (
                    format!("rename {from} {to}"),
                    f(&self.mount),
                    f(&self.model),
                )
            }
            6 => {
                let Some(path) = self.pick_entry() else {
                    return;
                };
                let f = |root: &Path| std::fs::remove_file(root.join(&path));
                (format!("unlink {path}"), f(&self.mount), f(&self.model))
            }
            7 => {
                let Some(path) = self.pick_entry() else {
                    return;
                };
                let f = |root: &Path| std::fs::remove_dir(root.join(&path));
                (format!("rmdir {path}"), f(&self.mount), f(&self.model))
            }
            8 => {
                let Some(path) = self.pick_entry() else {
                    return;
                };
                let mode = [0o600, 0o640, 0o755][self.rng.below(3)];
                let f = |root: &Path| {
                    let p = root.join(&path);
                    if std::fs::symlink_metadata(&p)?.file_type().is_symlink() {
                        return Ok(());
                    }
                    std::fs::set_permissions(p, PermissionsExt::from_mode(mode))
                };
                (
                    format!("chmod {mode:o} {path}"),
                    f(&self.mount),
                    f(&self.model),
                )
            }
            _ => {
                let path = self.pick_path();
                // Relative to the link's own directory: writing through it stays inside the tree.
                let target = format!("target-{}", self.rng.below(100));
                let f = |root: &Path| std::os::unix::fs::symlink(&target, root.join(&path));
                (format!("symlink {path}"), f(&self.mount), f(&self.model))
            }
        };
        let code = |r: &std::io::Result<()>| r.as_ref().err().map(|e| e.raw_os_error());
        assert_eq!(
            code(&mount),
            code(&model),
            "op {n} ({what}) in {}: mount {mount:?}, model {model:?}",
            self.mount.display()
        );
    }
}

/// Run `ops` random operations in each worker, all at once (one thread each).
fn run_workers(workers: &mut [Worker], ops: usize) {
    std::thread::scope(|s| {
        for w in workers.iter_mut() {
            s.spawn(move || {
                for n in 0..ops {
                    w.step(n);
                }
            });
        }
    });
}

/// The author labels of the members (first 8 hex characters of their keys): the genesis
/// author is member 0, then the joiners in order.
fn author_labels(net: &SharedNetwork) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        author: String,
        kind: String,
    }
    let run = net.members[0]
        .run(&["volume", "log", "team", "--json", "--limit", "1000000"])
        .ok();
    let log: Vec<Entry> = serde_json::from_str(&run.stdout).expect("log JSON");
    log.iter()
        .filter(|e| e.kind == "genesis" || e.kind == "join")
        .map(|e| e.author[..8].to_string())
        .collect()
}

#[test]
fn random_concurrent_edits_with_a_partition_converge_and_lose_nothing() {
    if skip() {
        return;
    }
    let mut net = SharedNetwork::start(3);
    let models: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("model dir"))
        .collect();
    let setup = net.path(0);
    for i in 0..3 {
        std::fs::create_dir(setup.join(format!("m{i}"))).expect("mkdir own dir");
    }
    std::fs::create_dir_all(setup.join("shared")).expect("mkdir shared");
    for j in 0..3 {
        std::fs::write(setup.join(format!("shared/f{j}")), format!("first {j}")).expect("write");
    }
    std::fs::write(setup.join("shared/g"), b"to be deleted and edited").expect("write g");
    std::fs::create_dir(setup.join("x")).expect("mkdir x");
    std::fs::create_dir(setup.join("y")).expect("mkdir y");
    std::fs::write(setup.join("x/in-x"), b"x").expect("write");
    std::fs::write(setup.join("y/in-y"), b"y").expect("write");
    let first = snapshot(&setup);
    for i in 1..3 {
        wait_for(Duration::from_secs(30), "the setup everywhere", || {
            (try_snapshot(&net.path(i))? == first).then_some(())
        });
    }
    let worker = |net: &SharedNetwork, i: usize, seed: u64| Worker {
        mount: net.path(i).join(format!("m{i}")),
        model: models[i].path().to_path_buf(),
        rng: Rng(seed),
    };

    // Phase 1: all connected, all at once.
    let mut workers: Vec<Worker> = (0..3).map(|i| worker(&net, i, 0x5eed + i as u64)).collect();
    run_workers(&mut workers, 40);

    // Phase 2: member 2 is partitioned (mounted alone) while everyone goes on; both sides
    // write the shared files, one side deletes g while the other edits it, and the sides
    // move x into y and y into x.
    net.remount(2, false);
    let (a, c) = (net.path(0), net.path(2));
    for j in 0..3 {
        std::fs::write(a.join(format!("shared/f{j}")), format!("from a {j}")).expect("write a");
        std::fs::write(c.join(format!("shared/f{j}")), format!("from c {j}")).expect("write c");
    }
    std::fs::remove_file(a.join("shared/g")).expect("rm g in a");
    std::fs::write(c.join("shared/g"), b"edited by c").expect("edit g in c");
    std::fs::rename(a.join("x"), a.join("y/x")).expect("mv x y/x in a");
    std::fs::rename(c.join("y"), c.join("x/y")).expect("mv y x/y in c");
    let mut workers: Vec<Worker> = (0..3).map(|i| worker(&net, i, 0xbeef + i as u64)).collect();
    run_workers(&mut workers, 40);

    // Heal: member 2 mounts connected again; all three must end identical.
    net.remount(2, true);
    let converged = wait_for(Duration::from_secs(60), "three identical trees", || {
        let trees: Vec<Snapshot> = (0..3)
            .map(|i| try_snapshot(&net.path(i)))
            .collect::<Option<_>>()?;
        (trees[0] == trees[1] && trees[1] == trees[2]).then(|| trees[0].clone())
    });

    // Each member's own directory is exactly its model.
    for (i, model) in models.iter().enumerate() {
        let prefix = format!("m{i}/");
        let mine: Snapshot = converged
            .iter()
            .filter_map(|(p, v)| Some((p.strip_prefix(&prefix)?.to_string(), v.clone())))
            .collect();
        assert_eq!(mine, snapshot(model.path()), "member {i}'s directory");
    }

    // Concurrent writes: both versions, the loser as a conflict copy naming both authors.
    let labels = author_labels(&net);
    assert_eq!(labels.len(), 3, "{labels:?}");
    for j in 0..3 {
        let name = format!("shared/f{j}");
        let versions: BTreeMap<&String, &Vec<u8>> = converged
            .iter()
            .filter(|(p, _)| p.starts_with(&name))
            .map(|(p, (_, _, content))| (p, content))
            .collect();
        assert_eq!(versions.len(), 2, "{name}: {versions:?}");
        let contents: BTreeSet<&Vec<u8>> = versions.values().copied().collect();
        let expected: BTreeSet<Vec<u8>> = [
            format!("from a {j}").into_bytes(),
            format!("from c {j}").into_bytes(),
        ]
        .into();
        assert_eq!(contents, expected.iter().collect(), "{name}");
        let copy = versions
            .keys()
            .find(|p| p.as_str() != name)
            .expect("a conflict copy");
        let both = format!("(conflict {} vs {})", labels[0], labels[2]);
        let both_rev = format!("(conflict {} vs {})", labels[2], labels[0]);
        assert!(
            copy.ends_with(&both) || copy.ends_with(&both_rev),
            "{copy} names both authors ({labels:?})"
        );
        let mode = converged[*copy].1;
        assert_eq!(mode & 0o222, 0, "a conflict copy is read-only");
    }

    // Delete against edit keeps the edit.
    assert_eq!(
        converged.get("shared/g").map(|v| v.2.clone()),
        Some(b"edited by c".to_vec())
    );

    // Crossed moves: one directory inside the other, neither lost, no cycle.
    let x_in_y = converged.contains_key("y/x") && converged.contains_key("y/x/in-x");
    let y_in_x = converged.contains_key("x/y") && converged.contains_key("x/y/in-y");
    assert!(x_in_y != y_in_x, "x in y: {x_in_y}, y in x: {y_in_x}");
    let tops: BTreeSet<&str> = converged
        .keys()
        .filter(|p| !p.contains('/'))
        .map(|p| p.as_str())
        .collect();
    let expected_tops: BTreeSet<&str> = if x_in_y {
        ["m0", "m1", "m2", "shared", "y"].into()
    } else {
        ["m0", "m1", "m2", "shared", "x"].into()
    };
    assert_eq!(tops, expected_tops);
    assert!(converged.contains_key(if x_in_y { "y/in-y" } else { "x/in-x" }));
}
