//! `dfs fsck`: check a volume's metadata and content against each other, offline.
//!
//! Checks that every directory entry points to an inode of the kind it says, that link counts
//! match the entries that point to each inode (and directories count their subdirectories),
//! that every directory's parent pointer matches the entry naming it, that every inode is
//! reachable from the root, and that every file's chunk tree is readable with its size matching
//! the inode. `deep` also verifies every shard of every chunk.

use std::collections::{HashMap, HashSet, VecDeque};

use dfs_node::{check_blob, LeafWalker, Pipeline};

use crate::local::LocalNamespace;
use crate::model::{FsError, Ino, Inode, Kind, ROOT};

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub inodes: usize,
    pub entries: usize,
    pub files: usize,
    pub chunks: usize,
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the volume of `repo` (not mounted: the data directory is locked by the caller).
pub fn fsck(pipeline: &Pipeline, ns: &LocalNamespace, deep: bool) -> Result<FsckReport, FsError> {
    let repo = pipeline.repo();
    let mut report = FsckReport::default();
    let inodes: HashMap<Ino, Inode> = ns.all_inodes(repo)?.into_iter().collect();
    report.inodes = inodes.len();
    if !inodes.contains_key(&ROOT) {
        report.problems.push("the root directory is missing".into());
        return Ok(report);
    }
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut subdirs: HashMap<Ino, u32> = HashMap::new();
    let mut children: HashMap<Ino, Vec<Ino>> = HashMap::new();
    for entry in ns.all_entries(repo)? {
        let (parent, name, ino, kind) = (entry.parent, entry.name, entry.ino, entry.kind);
        report.entries += 1;
        let shown = String::from_utf8_lossy(&name).into_owned();
        match inodes.get(&parent) {
            Some(p) if p.kind == Kind::Dir => {}
            _ => report.problems.push(format!(
                "entry {shown:?} is in {parent}, which is not a directory"
            )),
        }
        let Some(inode) = inodes.get(&ino) else {
            report.problems.push(format!(
                "entry {shown:?} in {parent} points to missing inode {ino}"
            ));
            continue;
        };
        if inode.kind != kind {
            report.problems.push(format!(
                "entry {shown:?} in {parent} says {kind:?}, inode {ino} is {:?}",
                inode.kind
            ));
        }
        *links.entry(ino).or_default() += 1;
        children.entry(parent).or_default().push(ino);
        if inode.kind == Kind::Dir {
            *subdirs.entry(parent).or_default() += 1;
            if inode.parent != parent {
                report.problems.push(format!(
                    "directory {ino} is named in {parent} but says its parent is {}",
                    inode.parent
                ));
            }
        }
    }
    for (&ino, inode) in &inodes {
        let expected = if inode.kind == Kind::Dir {
            let named = u32::from(ino != ROOT) * links.get(&ino).copied().unwrap_or(0);
            if ino != ROOT && named != 1 {
                report
                    .problems
                    .push(format!("directory {ino} is named {named} times"));
            }
            2 + subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            links.get(&ino).copied().unwrap_or(0)
        };
        if inode.nlink != expected {
            report.problems.push(format!(
                "inode {ino} ({:?}) has link count {}, {expected} expected",
                inode.kind, inode.nlink
            ));
        }
    }
    // Reachability from the root.
    let mut seen: HashSet<Ino> = HashSet::from([ROOT]);
    let mut queue = VecDeque::from([ROOT]);
    while let Some(dir) = queue.pop_front() {
        for &child in children.get(&dir).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(child) {
                queue.push_back(child);
            }
        }
    }
    for (&ino, inode) in &inodes {
        // Unlinked while open when the volume stopped: removed at the next mount.
        if !seen.contains(&ino) && inode.nlink != 0 {
            report
                .problems
                .push(format!("inode {ino} is not reachable from the root"));
        }
    }
    // Content.
    for (&ino, inode) in &inodes {
        if inode.kind != Kind::File {
            continue;
        }
        report.files += 1;
        let Some(blob) = inode.content else {
            if inode.size != 0 {
                report
                    .problems
                    .push(format!("file {ino} has size {} but no content", inode.size));
            }
            continue;
        };
        if blob.size != inode.size {
            report.problems.push(format!(
                "file {ino} has size {} but its content holds {} bytes",
                inode.size, blob.size
            ));
        }
        if deep {
            let mut damaged = 0;
            let walked = check_blob(pipeline, &blob, false, &mut |health| {
                report.chunks += 1;
                damaged += usize::from(!health.is_healthy());
            });
            if let Err(e) = walked {
                report.problems.push(format!("file {ino}: {e}"));
            } else if damaged > 0 {
                report.problems.push(format!(
                    "file {ino}: {damaged} chunks have missing or corrupt shards (dfs verify --repair fixes what can be rebuilt)"
                ));
            }
        } else {
            let walked = LeafWalker::new(pipeline, &blob, false).and_then(|mut walker| {
                while let Some((leaf, _)) = walker.next_leaf()? {
                    report.chunks += 1;
                    if !leaf.is_hole() && repo.meta().chunk(&leaf.id).ok().flatten().is_none() {
                        report.problems.push(format!(
                            "file {ino}: chunk {} is not in the store",
                            leaf.id.short()
                        ));
                    }
                }
                Ok(())
            });
            if let Err(e) = walked {
                report.problems.push(format!("file {ino}: {e}"));
            }
        }
    }
    Ok(report)
}
