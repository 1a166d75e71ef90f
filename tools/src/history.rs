//! `dfs log PATH`: the signed history of one file or directory of a mounted shared volume, and
//! the words for ops that `dfs volume log` prints too.
//!
//! PATH names its node through the read-only xattr `user.dfs.id` (`"<volume> <node>"`, answered
//! by the shared mount; a symlink, which cannot carry user xattrs, is found by name in its
//! directory). The volume's name comes from `GET /v1/volumes` and its whole log from
//! `GET /v1/volumes/{name}/log` of the peer on the data directory (the mount's own peer serves
//! both, with data ops decrypted). A [`Describer`] walks the log oldest first, decodes each data
//! op (postcard of [`Op`]) and tracks where each node was last placed by a `Create` or `Move`,
//! so that it names parents by path and knows which ops concern a directory: its own, and those
//! that create, move into or out of, or delete its entries.
//!
//! The log is read in op order, which is the order the volume applies ops in, but the places
//! tracked here are a plain last-writer-wins reading of it: a delete that lost against a
//! concurrent edit (and so did nothing) is still shown as a delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use dfs_fs::crdt::volume::{Kind, Time, VolumeOp};
use dfs_fs::crdt::NodeId;
use dfs_fs::shared::{Op, ID_XATTR};
use dfs_node::ops::{OpId, VolumeId};
use dfs_node::volume::{LogEntry, VolumeInfo};
use serde::Serialize;

use crate::api_client::api_get;
use crate::units::utc;

/// The `limit` that asks the API for every op of a log (its default is the newest 100).
const WHOLE_LOG: usize = usize::MAX;
/// Deeper parent chains than this are cut short when naming a path (the log-order reading of
/// concurrent moves can make a cycle that the volume itself never shows).
const MAX_DEPTH: usize = 256;

/// One op of a log in words: a line of `dfs log` and `dfs volume log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryLine {
    /// The op's clock time, UTC.
    pub time: String,
    pub millis: u64,
    /// The author's key, hex: the peer that made the op.
    pub author: String,
    /// The user who signed the op along with the peer (hex key), if any: the op is theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The display name of that user's profile, as the peer holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// The author's sequence number of the op.
    pub seq: u64,
    /// A one-word kind: create, rename, delete, write, chmod, chown, touch, setattr,
    /// set-xattr, remove-xattr, dismiss, genesis, invite, join, profile, role, data or unknown.
    pub op: String,
    /// What the op did, e.g. `create file "notes.txt" in /docs, mode 644`.
    pub detail: String,
    /// `<millis>.<counter>@<author8>#<seq>`: names the op uniquely, for citing.
    pub version: String,
    /// Why the op had no effect, when the volume's roles reject it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// What one log entry carries, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A membership op: `genesis`, `invite`, `join` or `role`.
    Control,
    /// A filesystem op.
    Fs(Op),
    /// A data op this peer cannot read, or an entry of an unknown kind: the reason, as text.
    Opaque(String),
}

/// Decode the fs op of a `data` entry (hex of the postcard encoding of an [`Op`]).
pub fn decode(entry: &LogEntry) -> Decoded {
    match entry.kind.as_str() {
        "genesis" | "invite" | "join" | "role" | "revoke" => Decoded::Control,
        "data" => match dfs_placement::ids::from_hex(&entry.data) {
            Some(bytes) => match postcard::from_bytes::<Op>(&bytes) {
                Ok(op) => Decoded::Fs(op),
                Err(e) => Decoded::Opaque(format!("(undecodable fs op: {e})")),
            },
            // Not hex: the peer's note in parentheses (the op did not decrypt).
            None => Decoded::Opaque(entry.data.clone()),
        },
        _ => Decoded::Opaque(entry.data.clone()),
    }
}

/// Walks a log oldest first, describing each op with what the ops before it said.
#[derive(Debug, Default)]
pub struct Describer {
    /// Each node's parent and name, from the last `Create` or `Move` of it seen.
    places: HashMap<NodeId, (NodeId, Vec<u8>)>,
    /// Each node's kind, from its first `Create`.
    kinds: HashMap<NodeId, Kind>,
    /// Nodes a `Delete` named.
    deleted: HashSet<NodeId>,
    /// The sequence number of each op seen, by (millis, counter, author hex): a write's base
    /// is cited as a version.
    seqs: HashMap<(u64, u32, String), u64>,
}

impl Describer {
    /// Whether `op` concerns `node`, given the ops seen so far: an op on `node` itself, or one
    /// that creates, moves into or out of, or deletes an entry of it (a directory).
    pub fn concerns(&self, op: &Op, node: NodeId) -> bool {
        if op.node() == node {
            return true;
        }
        let was_in = |child: &NodeId| self.places.get(child).map(|(p, _)| *p) == Some(node);
        match op {
            VolumeOp::Create { parent, .. } => *parent == node,
            VolumeOp::Move {
                node: child,
                parent,
                ..
            } => *parent == node || was_in(child),
            VolumeOp::Delete { node: child, .. } => was_in(child),
            _ => false,
        }
    }

    /// Describe `entry` (decoded as `decoded`), then take its op in. Entries must come in log
    /// order. The ops of `focus` leave out its path (every line is about it).
    pub fn describe(
        &mut self,
        entry: &LogEntry,
        decoded: &Decoded,
        focus: Option<NodeId>,
    ) -> HistoryLine {
        let (op, detail) = match decoded {
            Decoded::Control => {
                let detail = match entry.kind.as_str() {
                    "genesis" => "create the volume".to_string(),
                    "invite" => match invite_terms(&entry.data) {
                        Some(terms) => format!("invite a member ({terms})"),
                        None => "invite a member".to_string(),
                    },
                    "revoke" => format!("revoke invitation {}", entry.data),
                    "role" => format!("set the role of {}", entry.data),
                    _ => "join the volume".to_string(),
                };
                (entry.kind.clone(), detail)
            }
            Decoded::Fs(op) => {
                let (kind, detail) = self.words(op, focus);
                (kind.to_string(), detail)
            }
            Decoded::Opaque(why) => (entry.kind.clone(), why.clone()),
        };
        self.seqs.insert(
            (entry.millis, entry.counter, entry.author.clone()),
            entry.seq,
        );
        // A rejected op changed nothing: the paths of later ops do not follow it. A rejected
        // create is taken all the same, so the rejected ops on its new node name it (it moves
        // no existing node).
        if let Decoded::Fs(op) = decoded {
            if entry.rejected.is_none() || matches!(op, VolumeOp::Create { .. }) {
                self.take(op);
            }
        }
        HistoryLine {
            time: utc(entry.millis),
            millis: entry.millis,
            author: entry.author.clone(),
            user: entry.user.clone(),
            user_name: entry.user_name.clone(),
            seq: entry.seq,
            op,
            detail,
            version: format!(
                "{}.{}@{}#{}",
                entry.millis,
                entry.counter,
                short(&entry.author),
                entry.seq
            ),
            rejected: entry.rejected.clone(),
        }
    }

    /// The node last placed as `name` in `parent` and not deleted since.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.places
            .iter()
            .find(|(node, (p, n))| *p == parent && n == name && !self.deleted.contains(node))
            .map(|(node, _)| *node)
    }

    /// Record where `op` placed its node.
    fn take(&mut self, op: &Op) {
        match op {
            VolumeOp::Create {
                node,
                parent,
                name,
                kind,
                ..
            } => {
                self.places.insert(*node, (*parent, name.clone()));
                self.kinds.entry(*node).or_insert(*kind);
            }
            VolumeOp::Move { node, parent, name } => {
                self.places.insert(*node, (*parent, name.clone()));
            }
            VolumeOp::Delete { node, .. } => {
                self.deleted.insert(*node);
            }
            _ => {}
        }
    }

    /// The one-word kind and the description of `op`.
    fn words(&self, op: &Op, focus: Option<NodeId>) -> (&'static str, String) {
        let subject = |node: NodeId| -> String {
            if Some(node) == focus {
                String::new()
            } else {
                format!(" {}", self.path(node))
            }
        };
        let on = |node: NodeId, word: &str| -> String {
            if Some(node) == focus {
                String::new()
            } else {
                format!(" {word} {}", self.path(node))
            }
        };
        match op {
            VolumeOp::Create {
                parent,
                name,
                kind,
                mode,
                target,
                ..
            } => {
                let what = match kind {
                    Kind::File => "file",
                    Kind::Dir => "directory",
                    Kind::Symlink => "symlink",
                };
                let rest = match (kind, target) {
                    (Kind::Symlink, Some(t)) => format!(" -> {:?}", String::from_utf8_lossy(t)),
                    (Kind::Symlink, None) => String::new(),
                    _ => format!(", mode {:o}", mode & 0o7777),
                };
                let detail = format!(
                    "create {what} {:?} in {}{rest}",
                    String::from_utf8_lossy(name),
                    self.path(*parent)
                );
                ("create", detail)
            }
            VolumeOp::Move { node, parent, name } => {
                let to = format!(
                    "to {:?} in {}",
                    String::from_utf8_lossy(name),
                    self.path(*parent)
                );
                let detail = if Some(*node) == focus {
                    format!("rename {to} (was {})", self.path(*node))
                } else {
                    format!("rename {} {to}", self.path(*node))
                };
                ("rename", detail)
            }
            VolumeOp::Delete { node, .. } => ("delete", format!("delete{}", subject(*node))),
            VolumeOp::Write {
                node, size, base, ..
            } => {
                let replacing = match base {
                    Some(base) => format!("replacing {}", self.version_of(base)),
                    None => "first version".to_string(),
                };
                let detail = format!("write {size} bytes{} ({replacing})", on(*node, "to"));
                ("write", detail)
            }
            VolumeOp::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                let mut kinds = Vec::new();
                let mut parts = Vec::new();
                if let Some(mode) = mode {
                    kinds.push("chmod");
                    parts.push(format!("chmod {:o}", mode & 0o7777));
                }
                match (uid, gid) {
                    (Some(u), Some(g)) => parts.push(format!("chown {u}:{g}")),
                    (Some(u), None) => parts.push(format!("chown {u}")),
                    (None, Some(g)) => parts.push(format!("chown :{g}")),
                    (None, None) => {}
                }
                if uid.is_some() || gid.is_some() {
                    kinds.push("chown");
                }
                let times: Vec<String> = [("atime", atime), ("mtime", mtime)]
                    .into_iter()
                    .filter_map(|(name, t)| t.map(|t| format!("{name} {}", time(&t))))
                    .collect();
                if !times.is_empty() {
                    kinds.push("touch");
                    parts.push(format!("touch {}", times.join(", ")));
                }
                if parts.is_empty() {
                    parts.push("set no attributes".to_string());
                }
                let kind = match kinds.as_slice() {
                    [one] => one,
                    _ => "setattr",
                };
                (kind, format!("{}{}", parts.join(", "), on(*node, "on")))
            }
            VolumeOp::SetXattr { node, name, value } => {
                let name = String::from_utf8_lossy(name);
                match value {
                    Some(v) => (
                        "set-xattr",
                        format!("set xattr {name:?} ({} bytes){}", v.len(), on(*node, "on")),
                    ),
                    None => (
                        "remove-xattr",
                        format!("remove xattr {name:?}{}", on(*node, "on")),
                    ),
                }
            }
            VolumeOp::Dismiss { node, write } => (
                "dismiss",
                format!(
                    "dismiss conflict copy {}{}",
                    self.version_of(write),
                    on(*node, "of")
                ),
            ),
        }
    }

    /// An op id as a version: `<millis>.<counter>@<author8>`, and `#<seq>` once seen.
    fn version_of(&self, id: &OpId) -> String {
        let author = id.author.to_string();
        let seq = self
            .seqs
            .get(&(id.hlc.millis, id.hlc.counter, author.clone()))
            .map(|s| format!("#{s}"))
            .unwrap_or_default();
        format!(
            "{}.{}@{}{seq}",
            id.hlc.millis,
            id.hlc.counter,
            short(&author)
        )
    }

    /// Where `node` was last placed, as a path from the volume's root; a node whose place the
    /// log (so far) does not say shows as `<node 1a2b3c4d>`.
    fn path(&self, node: NodeId) -> String {
        if node == NodeId::ROOT {
            return "/".to_string();
        }
        let mut names = Vec::new();
        let mut at = node;
        let top = loop {
            if at == NodeId::ROOT {
                break String::new();
            }
            if names.len() >= MAX_DEPTH {
                break "...".to_string();
            }
            match self.places.get(&at) {
                Some((parent, name)) => {
                    names.push(String::from_utf8_lossy(name).into_owned());
                    at = *parent;
                }
                None => break format!("<node {}>", short(&at.to_string())),
            }
        };
        names.reverse();
        if names.is_empty() {
            top
        } else {
            format!("{top}/{}", names.join("/"))
        }
    }
}

/// An invitation's terms in words, from `expires_ms=N[ single_use]`.
fn invite_terms(data: &str) -> Option<String> {
    let mut words = data.split(' ');
    let millis: u64 = words.next()?.strip_prefix("expires_ms=")?.parse().ok()?;
    let until = if millis == u64::MAX {
        "no expiry".to_string()
    } else {
        format!("valid until {}", utc(millis))
    };
    Some(match words.next() {
        Some("single_use") => format!("{until}, single use"),
        _ => until,
    })
}

/// Every entry of a log in words (`dfs volume log`).
pub fn describe_all(entries: &[LogEntry]) -> Vec<HistoryLine> {
    let mut describer = Describer::default();
    entries
        .iter()
        .map(|e| describer.describe(e, &decode(e), None))
        .collect()
}

/// The entries of a log that concern `node` (see [`Describer::concerns`]), in words.
pub fn history_of(entries: &[LogEntry], node: NodeId) -> Vec<HistoryLine> {
    let mut describer = Describer::default();
    let mut out = Vec::new();
    for e in entries {
        let decoded = decode(e);
        let concerns = matches!(&decoded, Decoded::Fs(op) if describer.concerns(op, node));
        let line = describer.describe(e, &decoded, Some(node));
        if concerns {
            out.push(line);
        }
    }
    out
}

/// Print lines as a table: time, author, what happened, version. The author is the user who
/// signed (by name where `names`, user key to name, knows it, with the first 8 hex digits of
/// the key), or else the peer (first 8 hex digits).
pub fn print_lines(lines: &[HistoryLine], names: &BTreeMap<String, String>) {
    let width = lines
        .iter()
        .map(|l| l.detail.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(6, 72);
    let authors: Vec<String> = lines.iter().map(|l| author_label(l, names)).collect();
    let author_width = authors
        .iter()
        .map(|a| a.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    println!(
        "{:<30}  {:<author_width$}  {:<width$}  VERSION",
        "TIME (UTC)", "AUTHOR", "CHANGE"
    );
    for (l, author) in lines.iter().zip(&authors) {
        println!(
            "{:<30}  {:<author_width$}  {:<width$}  {}",
            l.time, author, l.detail, l.version
        );
        if let Some(why) = &l.rejected {
            println!("{:<30}  {:<author_width$}  ^ rejected: {why}", "", "");
        }
    }
}

/// Who made an op, for people: the user's display name (from their profile, else the name
/// of a user of this data directory) with the first 8 hex digits of their key, `user
/// 1a2b3c4d` for a user with neither, the peer's short key for an op no user signed.
fn author_label(line: &HistoryLine, names: &BTreeMap<String, String>) -> String {
    match &line.user {
        Some(user) => match line.user_name.as_ref().or(names.get(user)) {
            Some(name) => format!("{name} ({})", short(user)),
            None => format!("user {}", short(user)),
        },
        None => short(&line.author).to_string(),
    }
}

/// The users of this data directory, key (hex) to name, for [`print_lines`].
pub fn local_user_names(data: &Path) -> BTreeMap<String, String> {
    dfs_node::UserStore::new(data)
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.id().to_string(), u.name().to_string()))
        .collect()
}

/// `dfs log PATH`.
pub fn run(data: &Path, path: &Path, json: bool, limit: Option<usize>) -> Result<ExitCode> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file or directory", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // A symlink cannot carry user xattrs: ask its directory, then find it by name in the log.
    let (id_path, child) = if meta.file_type().is_symlink() {
        let name = path
            .file_name()
            .with_context(|| format!("{} names no file", path.display()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        (dir, Some(name.as_bytes()))
    } else {
        (path, None)
    };
    let Some((volume, node)) = read_id(id_path)? else {
        bail!(
            "{} is not in a mounted shared volume (dfs log shows the history of shared volumes; \
             see dfs versions for your own volume)",
            path.display()
        );
    };
    let volumes: Vec<VolumeInfo> = api_get(data, "/v1/volumes")?;
    let volume_hex = volume.to_string();
    let Some(info) = volumes.iter().find(|v| v.id == volume_hex) else {
        bail!(
            "{} is in shared volume {volume_hex}, which the peer on {} is not a member of \
             (give the --data of the dfs mount serving it)",
            path.display(),
            data.display()
        );
    };
    let route = format!("/v1/volumes/{}/log?limit={WHOLE_LOG}", info.name);
    let entries: Vec<LogEntry> = api_get(data, &route)?;
    let node = match child {
        None => node,
        Some(name) => {
            let mut describer = Describer::default();
            for e in &entries {
                describer.describe(e, &decode(e), None);
            }
            describer.child(node, name).with_context(|| {
                format!(
                    "the log of volume {} has no entry {:?} in the directory of {}",
                    info.name,
                    String::from_utf8_lossy(name),
                    path.display()
                )
            })?
        }
    };
    let mut lines = history_of(&entries, node);
    if let Some(limit) = limit {
        lines.drain(..lines.len().saturating_sub(limit));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else if lines.is_empty() {
        println!(
            "the log of volume {} holds no op of {} (a conflict copy has no history of its own: \
             see the file it copies)",
            info.name,
            path.display()
        );
    } else {
        print_lines(&lines, &local_user_names(data));
    }
    Ok(ExitCode::SUCCESS)
}

/// The volume and node a path of a shared mount names, from its `user.dfs.id`; `None` when
/// the path is not in a shared mount (no such attribute, or no user xattrs at all).
fn read_id(path: &Path) -> Result<Option<(VolumeId, NodeId)>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", path.display()))?;
    let mut name = ID_XATTR.to_vec();
    name.push(0);
    let mut buf = [0u8; 256];
    // SAFETY: both names are NUL-terminated and outlive the call; `buf` is writable for
    // `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            name.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(err).with_context(|| format!("cannot read the dfs id of {}", path.display())),
        };
    }
    let text = buf.get(..n as usize).unwrap_or_default();
    parse_id(text)
        .map(Some)
        .with_context(|| format!("{} has a user.dfs.id that is no dfs id", path.display()))
}

/// `"<volume hex> <node hex>"`.
fn parse_id(text: &[u8]) -> Option<(VolumeId, NodeId)> {
    let (volume, node) = std::str::from_utf8(text).ok()?.trim().split_once(' ')?;
    Some((volume.parse().ok()?, node.parse().ok()?))
}

/// The first 8 characters of a hex id: enough to tell members apart.
fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

fn time(t: &Time) -> String {
    dfs_fs::versions::time_name(dfs_fs::model::Time {
        secs: t.secs,
        nsec: t.nanos,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dfs_node::ops::{AuthorId, Hlc};

    use super::*;

    const ALICE: u8 = 0xa1;
    const BOB: u8 = 0xb0;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn author(a: u8) -> AuthorId {
        AuthorId([a; 32])
    }

    fn id(millis: u64, a: u8) -> OpId {
        OpId {
            hlc: Hlc { millis, counter: 0 },
            author: author(a),
        }
    }

    fn entry(millis: u64, a: u8, seq: u64, op: &Op) -> LogEntry {
        let bytes = postcard::to_stdvec(op).expect("encode op");
        LogEntry {
            millis,
            counter: 0,
            author: author(a).to_string(),
            user: None,
            user_name: None,
            seq,
            kind: "data".into(),
            data: dfs_placement::ids::to_hex(&bytes),
            rejected: None,
        }
    }

    fn create(n: u8, parent: NodeId, name: &str, kind: Kind) -> Op {
        VolumeOp::Create {
            node: node(n),
            parent,
            name: name.into(),
            kind,
            mode: if kind == Kind::Dir { 0o40755 } else { 0o100644 },
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            target: None,
        }
    }

    fn details(lines: &[HistoryLine]) -> Vec<&str> {
        lines.iter().map(|l| l.detail.as_str()).collect()
    }

    #[test]
    fn every_kind_of_op_is_described() {
        let file = node(2);
        let ops = [
            create(1, NodeId::ROOT, "docs", Kind::Dir),
            create(2, node(1), "a.txt", Kind::File),
            VolumeOp::Write {
                node: file,
                content: vec![1, 2, 3],
                size: 5,
                mtime: Time::default(),
                base: None,
            },
            VolumeOp::Write {
                node: file,
                content: vec![],
                size: 12,
                mtime: Time::default(),
                base: Some(id(1003, ALICE)),
            },
            VolumeOp::SetAttr {
                node: file,
                mode: Some(0o100600),
                uid: None,
                gid: None,
                atime: None,
                mtime: None,
            },
            VolumeOp::SetAttr {
                node: file,
                mode: None,
                uid: Some(1000),
                gid: Some(100),
                atime: None,
                mtime: Some(Time {
                    secs: 86_400,
                    nanos: 0,
                }),
            },
            VolumeOp::SetXattr {
                node: file,
                name: b"user.tag".to_vec(),
                value: Some(b"red".to_vec()),
            },
            VolumeOp::SetXattr {
                node: file,
                name: b"user.tag".to_vec(),
                value: None,
            },
            VolumeOp::Move {
                node: file,
                parent: NodeId::ROOT,
                name: b"b.txt".to_vec(),
            },
            VolumeOp::Dismiss {
                node: file,
                write: id(1003, ALICE),
            },
            VolumeOp::Create {
                node: node(3),
                parent: NodeId::ROOT,
                name: b"ln".to_vec(),
                kind: Kind::Symlink,
                mode: 0o120777,
                uid: 0,
                gid: 0,
                mtime: Time::default(),
                target: Some(b"b.txt".to_vec()),
            },
            VolumeOp::Delete {
                node: file,
                seen: BTreeMap::from([(author(ALICE), 11)]),
            },
        ];
        let entries: Vec<LogEntry> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| entry(1001 + i as u64, ALICE, 1 + i as u64, op))
            .collect();
        let lines = describe_all(&entries);
        assert_eq!(
            details(&lines),
            [
                "create directory \"docs\" in /, mode 755",
                "create file \"a.txt\" in /docs, mode 644",
                "write 5 bytes to /docs/a.txt (first version)",
                "write 12 bytes to /docs/a.txt (replacing 1003.0@a1a1a1a1#3)",
                "chmod 600 on /docs/a.txt",
                "chown 1000:100, touch mtime 1970-01-02T00-00-00.000000000Z on /docs/a.txt",
                "set xattr \"user.tag\" (3 bytes) on /docs/a.txt",
                "remove xattr \"user.tag\" on /docs/a.txt",
                "rename /docs/a.txt to \"b.txt\" in /",
                "dismiss conflict copy 1003.0@a1a1a1a1#3 of /b.txt",
                "create symlink \"ln\" in / -> \"b.txt\"",
                "delete /b.txt",
            ]
        );
        let kinds: Vec<&str> = lines.iter().map(|l| l.op.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "create",
                "create",
                "write",
                "write",
                "chmod",
                "setattr",
                "set-xattr",
                "remove-xattr",
                "rename",
                "dismiss",
                "create",
                "delete"
            ]
        );
        assert_eq!(lines[2].version, "1003.0@a1a1a1a1#3");
        assert_eq!(lines[2].time, "1970-01-01T00-00-01.003000000Z");
        assert_eq!(lines[2].author, author(ALICE).to_string());
        assert_eq!(lines[2].seq, 3);
    }

    #[test]
    fn the_focus_node_is_not_named_in_its_own_history() {
        let file = node(2);
        let entries = [
            entry(1, ALICE, 1, &create(2, NodeId::ROOT, "a", Kind::File)),
            entry(
                2,
                BOB,
                1,
                &VolumeOp::Write {
                    node: file,
                    content: vec![],
                    size: 3,
                    mtime: Time::default(),
                    base: None,
                },
            ),
            entry(
                3,
                ALICE,
                2,
                &VolumeOp::Move {
                    node: file,
                    parent: NodeId::ROOT,
                    name: b"b".to_vec(),
                },
            ),
            entry(
                4,
                ALICE,
                3,
                &VolumeOp::Delete {
                    node: file,
                    seen: BTreeMap::new(),
                },
            ),
        ];
        let lines = history_of(&entries, file);
        assert_eq!(
            details(&lines),
            [
                "create file \"a\" in /, mode 644",
                "write 3 bytes (first version)",
                "rename to \"b\" in / (was /a)",
                "delete",
            ]
        );
        assert_eq!(lines[1].version, "2.0@b0b0b0b0#1");
    }

    #[test]
    fn a_directory_history_has_its_entries_coming_and_going() {
        let (dir, other, f, g) = (node(1), node(2), node(3), node(4));
        let write = |n: NodeId| VolumeOp::Write {
            node: n,
            content: vec![],
            size: 1,
            mtime: Time::default(),
            base: None,
        };
        let ops = [
            create(1, NodeId::ROOT, "d", Kind::Dir),
            create(2, NodeId::ROOT, "e", Kind::Dir),
            create(3, dir, "f", Kind::File),
            create(4, other, "g", Kind::File),
            write(f),
            VolumeOp::Move {
                node: g,
                parent: dir,
                name: b"g".to_vec(),
            },
            VolumeOp::Move {
                node: f,
                parent: other,
                name: b"f2".to_vec(),
            },
            // f is no longer in d: neither its write nor its delete are d's business.
            write(f),
            VolumeOp::Delete {
                node: f,
                seen: BTreeMap::new(),
            },
            VolumeOp::Delete {
                node: g,
                seen: BTreeMap::new(),
            },
            VolumeOp::SetAttr {
                node: dir,
                mode: Some(0o40700),
                uid: None,
                gid: None,
                atime: None,
                mtime: None,
            },
        ];
        let entries: Vec<LogEntry> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| entry(1 + i as u64, BOB, 1 + i as u64, op))
            .collect();
        assert_eq!(
            details(&history_of(&entries, dir)),
            [
                "create directory \"d\" in /, mode 755",
                "create file \"f\" in /d, mode 644",
                "rename /e/g to \"g\" in /d",
                "rename /d/f to \"f2\" in /e",
                "delete /d/g",
                "chmod 700",
            ]
        );
        // The root's history: its own entries only.
        assert_eq!(
            details(&history_of(&entries, NodeId::ROOT)),
            [
                "create directory \"d\" in /, mode 755",
                "create directory \"e\" in /, mode 755",
            ]
        );
    }

    #[test]
    fn control_and_unreadable_entries_pass_through() {
        let plain = |kind: &str, data: &str| LogEntry {
            millis: 5,
            counter: 2,
            author: "c0ffee".repeat(10) + "abcd",
            user: None,
            user_name: None,
            seq: 1,
            kind: kind.into(),
            data: data.into(),
            rejected: None,
        };
        let entries = [
            plain("genesis", ""),
            plain("join", ""),
            plain("data", "(does not decrypt with this peer's volume key)"),
            plain("data", "00ff"),
            plain("unknown", "bad payload"),
        ];
        let lines = describe_all(&entries);
        assert_eq!(
            details(&lines)[..3],
            [
                "create the volume",
                "join the volume",
                "(does not decrypt with this peer's volume key)"
            ]
        );
        assert!(
            lines[3].detail.starts_with("(undecodable fs op"),
            "{lines:?}"
        );
        assert_eq!(lines[4].op, "unknown");
        assert_eq!(lines[0].version, "5.2@c0ffeec0#1");
        assert!(history_of(&entries, NodeId::ROOT).is_empty());
    }

    #[test]
    fn unknown_nodes_and_children_by_name() {
        let mut d = Describer::default();
        let entries = [
            entry(1, ALICE, 1, &create(2, node(9), "x", Kind::File)),
            entry(2, ALICE, 2, &create(3, NodeId::ROOT, "y", Kind::File)),
            entry(
                3,
                ALICE,
                3,
                &VolumeOp::Delete {
                    node: node(3),
                    seen: BTreeMap::new(),
                },
            ),
            entry(4, ALICE, 4, &create(4, NodeId::ROOT, "y", Kind::File)),
        ];
        let lines: Vec<HistoryLine> = entries
            .iter()
            .map(|e| d.describe(e, &decode(e), None))
            .collect();
        assert_eq!(
            lines[0].detail,
            "create file \"x\" in <node 09090909>, mode 644"
        );
        assert_eq!(d.child(NodeId::ROOT, b"y"), Some(node(4)));
        assert_eq!(d.child(NodeId::ROOT, b"z"), None);
    }

    #[test]
    fn ids_and_hex_parse() {
        let volume = VolumeId([7; 16]);
        let text = format!("{volume} {}\n", node(1));
        assert_eq!(parse_id(text.as_bytes()), Some((volume, node(1))));
        assert_eq!(parse_id(b"nonsense"), None);
        assert_eq!(parse_id(b"07 01"), None);
        assert_eq!(
            dfs_placement::ids::from_hex("00fFa1"),
            Some(vec![0, 0xff, 0xa1])
        );
        assert_eq!(dfs_placement::ids::from_hex("0"), None);
        assert_eq!(dfs_placement::ids::from_hex("zz"), None);
    }
}
