//! Command definitions and what each command does.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dfs_fs::snapshot::{self, VerifyReport};
use dfs_fs::ShareLink;
use dfs_node::{Config, Pipeline, Repo};

use crate::peer::{NetArgs, RunningPeer};
use crate::progress::IoCounter;
use crate::units::human_bytes;
use dfs_node::Role;

/// Exit code of `dfs verify` when shards are damaged but every chunk can still be rebuilt.
const EXIT_DAMAGED: u8 = 1;
/// Exit code of `dfs verify` when some data can no longer be rebuilt.
const EXIT_LOST: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "dfs",
    version,
    about = "dfs: a peer-to-peer filesystem that encrypts, erasure-codes and verifies everything it stores",
    long_about = "dfs stores files as content-addressed chunks: each chunk is encrypted \
(XChaCha20-Poly1305), named by the blake3 hash of its ciphertext and cut into erasure-coded \
shards (4 data + 2 parity by default), so any 2 shards of a chunk may be lost or corrupted \
without losing a byte. Everything read back is verified.\n\n\
Quick start:\n  dfs mount ~/dfs           # the volume as a folder (Ctrl-C or dfs umount to stop)\n  \
dfs put ~/photos          # prints a dfs:// link as its last line\n  \
dfs get LINK -o restored  # restores it byte for byte\n  dfs verify LINK           # checks every shard"
)]
pub struct Args {
    /// Data directory holding the shard store, metadata and volume secret
    /// [default: $XDG_DATA_HOME/dfs, i.e. ~/.local/share/dfs]
    #[arg(long, global = true, env = "DFS_DATA", value_name = "DIR")]
    data: Option<PathBuf>,

    /// Log what dfs is doing (repairs, cleanups) to stderr; DFS_LOG=debug for more
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Log lines as text or as one JSON object per line (for log collectors)
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a file or directory tree and print its share link
    #[command(
        long_about = "Store a file or a directory tree (with modes, mtimes and symlinks) \
in the data directory. The last line of output is a dfs:// link carrying the root id and the key \
needed to read it: anyone with the link can read the content, so share it with care. Content \
already stored is not stored again."
    )]
    Put {
        /// File or directory to store
        path: PathBuf,
        /// Erasure coding as DATA+PARITY shards, e.g. 4+2 or 8+3 (default from config: 4+2)
        #[arg(long, value_name = "K+M", value_parser = parse_ec)]
        ec: Option<(u8, u8)>,
        /// Print a password-protected link: its key sealed under a password (argon2id), so the
        /// link alone opens nothing
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        password_source: crate::user::PasswordArgs,
        /// With --peer, --rendezvous or --mdns (or peers in the config), a peer runs for the
        /// duration and the shards go to the network
        #[command(flatten)]
        net: NetArgs,
    },
    /// Restore what a share link points to
    #[command(
        long_about = "Restore the file or directory tree behind a dfs:// link, byte for \
byte, with its modes and mtimes. Every shard and chunk is verified; shards found missing or \
corrupt are rebuilt from the others and rewritten. Output appears only once complete and \
verified: a failed get leaves nothing behind."
    )]
    Get {
        /// The dfs:// link printed by `dfs put`
        link: String,
        /// Where to restore: a new path, or an existing directory to restore into; `-` writes a
        /// file's content to stdout [default: the stored name, in the current directory]
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Replace OUT if it is an existing file
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        password: crate::user::PasswordArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Check every shard behind a link and report missing or corrupt ones
    #[command(
        long_about = "Read and verify every shard of every chunk behind a dfs:// link and \
report the ones that are missing or corrupt, and whether their chunk can still be rebuilt.\n\n\
Exit status: 0 all shards healthy (or all repaired with --repair), 1 some shards damaged but \
every chunk recoverable, 3 some data lost."
    )]
    Verify {
        /// The dfs:// link to check
        link: String,
        /// Rewrite missing and corrupt shards from the surviving ones
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        password: crate::user::PasswordArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// List the stored puts (name, size, date, link)
    List,
    /// Forget a stored put; its space is reclaimed by the next `dfs gc`
    Forget {
        /// The dfs:// link of the put to forget
        link: String,
        #[command(flatten)]
        password: crate::user::PasswordArgs,
    },
    /// Mount the volume as a folder (stays in the foreground until unmounted)
    #[command(
        long_about = "Mount the data directory's volume at MOUNTPOINT with FUSE and serve \
it in the foreground. Every file written there is cut into chunks, encrypted, erasure-coded and \
stored like `dfs put` does; reads are verified. Ctrl-C, SIGTERM or `dfs umount MOUNTPOINT` \
commits every open file and unmounts cleanly.\n\n\
With --volume NAME it mounts a shared volume instead: every mount of it, on any member, shows \
one tree; a change made here is signed, logged and sent to the other members, and theirs show \
up here within moments. Concurrent writes to one file keep both versions (the loser as a \
read-only `NAME (conflict A vs B)` file next to it). Hard links and device files are refused \
there (EPERM).\n\n\
Mount options: the mount is `default_permissions` (the kernel checks modes and owners), \
`noatime`, shown as `dfs` in /proc/mounts; --allow-other adds `allow_other`."
    )]
    Mount {
        /// An existing, empty directory to mount on
        mountpoint: PathBuf,
        /// Mount even if MOUNTPOINT is not empty (its content is hidden while mounted)
        #[arg(long)]
        nonempty: bool,
        /// Let other users access the mount (FUSE allow_other; non-root users need
        /// user_allow_other in /etc/fuse.conf)
        #[arg(long)]
        allow_other: bool,
        /// Threads serving filesystem requests [default: cores, at least 2]
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// The kernel's read-ahead for the mount in KiB (needs root; 0 leaves the kernel's)
        #[arg(long, value_name = "KIB", default_value_t = dfs_fs::mount::READ_AHEAD_KB)]
        read_ahead_kb: u32,
        /// Mount this shared volume (see `dfs volume list`) instead of the peer's own
        #[arg(long, value_name = "NAME")]
        volume: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a storage peer in the foreground (holds other peers' shards; sees ciphertext only)
    #[command(
        long_about = "Run a dfs peer in the foreground until Ctrl-C or SIGTERM: it joins the \
network (bootstrap peers, Kademlia, rendezvous, mDNS if enabled), announces its capacity and \
zone, tracks the health of the other peers and stores, serves, checks and deletes shards for \
them. It only ever receives encrypted shards. The control API (for `dfs status` and `dfs \
peers`) listens on 127.0.0.1; its address and token are written to DATA/api.json. `dfs mount` \
runs the same peer in-process and takes the same flags."
    )]
    Node {
        #[command(flatten)]
        net: NetArgs,
    },
    /// Show the running peer: id, addresses, uptime, storage, peers by state
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// A live view of the running peer: throughput, FUSE ops/s and latency, peers, caches,
    /// storage, chunk health and repair, refreshed every second
    #[command(
        long_about = "Draw a live view of the peer running on the data directory, refreshed \
every --interval seconds until Ctrl-C: throughput through the mount and in shards to and from \
peers, FUSE operations per second with the busiest operations and their p50/p99 latency, \
errors, peers by state with the slowest round trips, cache hit ratios, storage, chunk health \
and repair rates, and each volume's op log. It reads the peer's Prometheus page (/metrics) and \
status; rates and latencies are over the last interval. --once prints one frame (two \
scrapes one interval apart) and exits."
    )]
    Top {
        /// Seconds between refreshes (fractions allowed, at least 0.1)
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        /// Print one frame and exit, without clearing the screen
        #[arg(long)]
        once: bool,
    },
    /// Show the running peer's table of other peers (state, RTT, zone, capacity, score)
    Peers {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the versions of a file in a dfs mount
    #[command(
        long_about = "List the recorded versions of PATH, a file in a mounted dfs folder \
(deleted files too, until their versions expire): each close, flush or fsync that changed a \
file records one. They are readable, read-only, under MOUNTPOINT/.dfs/versions/<path>/<time>. \
Retention: [versions] keep_last (32) and keep_daily_days (30) in DATA/config.toml."
    )]
    Versions {
        /// A file (or a deleted file's former path) inside a dfs mount
        path: PathBuf,
    },
    /// Show the signed history of a file or directory in a mounted shared volume
    #[command(
        long_about = "Show the signed history of PATH, a file, directory or symlink in a \
mounted shared volume (`dfs mount --volume NAME`), oldest first: when each op was made (UTC), \
by whom (the first 8 hex digits of the member's key), what it did, and its version \
(`<millis>.<counter>@<author>#<seq>`, unique in the volume). For a directory this includes the \
ops that created, moved in or out, or deleted its entries. It reads the log through the API of \
the peer on the data directory: give the --data of the `dfs mount` serving PATH."
    )]
    Log {
        /// A file, directory or symlink inside a mounted shared volume
        path: PathBuf,
        /// Show only the newest N ops [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Restore an old version of a file in a dfs mount (as a new version)
    Revert {
        /// The file inside a dfs mount
        path: PathBuf,
        /// The version to restore, as `dfs versions` names it (a unique prefix is enough)
        #[arg(long = "to", value_name = "VERSION")]
        version: String,
    },
    /// Check the volume's metadata and content for consistency (while not mounted)
    #[command(
        long_about = "Check the mounted volume's metadata offline: every directory entry \
points to an inode of its kind, link counts match, every inode is reachable from the root, \
and every file's chunk tree is readable with the size its inode says. --deep also verifies \
every shard of every chunk. Exit status 0 when clean, 1 when problems were found."
    )]
    Fsck {
        /// Also read and verify every shard of every chunk
        #[arg(long)]
        deep: bool,
    },
    /// Unmount a dfs mount point (the mounting process commits and exits)
    Umount {
        /// The mount point given to `dfs mount`
        mountpoint: PathBuf,
    },
    /// Reclaim space: expire old versions, remove chunks nothing uses (while not mounted)
    #[command(
        long_about = "Reclaim space in the data directory (while it is not mounted). For the \
mounted volume: apply version retention to every file (deleted files' versions are kept for \
keep_daily_days, then expire), then drop every chunk that no file and no retained version \
uses. For puts: remove leftovers of interrupted, failed and forgotten puts. A chunk tree that \
cannot be read stops the collection before anything is removed. The put cleanup also runs by \
itself when dfs opens a data directory after an interrupted put."
    )]
    Gc,
    /// Show or prune the local disk cache of chunks read from other peers (DATA/cache)
    Cache {
        #[command(subcommand)]
        command: crate::cache::CacheCommand,
    },
    /// Create, list, invite to and join shared volumes (through the running peer)
    Volume {
        #[command(subcommand)]
        command: crate::volume::VolumeCommand,
    },
    /// Make, list, export and import users (people, apart from this peer's key)
    User {
        #[command(subcommand)]
        command: crate::user::UserCommand,
    },
    /// Log a user in on the running peer: the ops of this uid are signed as the user's
    Login {
        /// The user (see `dfs user list`); with --oidc, optional: the one user bound to the
        /// issuer, or a new user named after the subject
        name: Option<String>,
        /// Log in through this OpenID Connect issuer instead of a passphrase (authorization
        /// code + PKCE; opens $BROWSER, or prints the URL to open)
        #[arg(long, value_name = "ISSUER_URL")]
        oidc: Option<String>,
        /// The client id dfs is registered under at the issuer
        #[arg(long, default_value = "dfs", requires = "oidc")]
        client_id: String,
        /// How long to wait for the browser to come back
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "oidc")]
        wait: std::time::Duration,
        /// Log in for this uid instead of your own (root only): the mount signs its ops
        #[arg(long)]
        uid: Option<u32>,
        #[command(flatten)]
        passphrase: crate::user::PassphraseArgs,
    },
    /// Log the user of this uid out of the running peer
    Logout {
        /// Log out this uid instead of your own (root only)
        #[arg(long)]
        uid: Option<u32>,
    },
    /// Set or show user profiles (display name, bio, preferences)
    Profile {
        #[command(subcommand)]
        command: crate::user::ProfileCommand,
    },
    /// Show which user this uid acts as on the running peer
    Whoami {
        /// Every logged-in user of the peer
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show usage analytics: the most read files and the users of the mount
    Stats {
        /// How many of the most read files to show
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show the running peer's event log: peers joined and lost, repairs, errors, user actions
    #[command(
        long_about = "Show the running peer's event log, oldest first: peers that joined, turned \
suspect or were lost, repairs started and finished, errors, and user actions (mounts, volumes \
created, invitations, joins). The log lives in the data directory's RocksDB and keeps the newest \
100,000 events."
    )]
    Events {
        /// Only events since then: a duration back from now (90s, 15m, 2h, 7d) or epoch ms
        #[arg(long, value_parser = crate::events::parse_since)]
        since: Option<u64>,
        /// Only these kinds (repeatable): peer_joined, peer_suspect, peer_lost,
        /// repair_started, repair_finished, error, user_action
        #[arg(long, value_parser = crate::events::parse_kind)]
        kind: Vec<dfs_node::EventKind>,
        /// Keep printing new events as they happen
        #[arg(long)]
        follow: bool,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Make a private network key: only peers whose config names it can connect
    #[command(
        long_about = "Write a new random private network key to FILE (mode 600; an existing file \
is never overwritten) and print its fingerprint. Give the file to every peer of the network and \
set `[network] key_file = \"FILE\"` in each one's config: connections are then wrapped in \
libp2p's pre-shared-key handshake before anything else, so a peer without the key cannot \
connect at all. The format is IPFS's swarm.key. A private network speaks TCP only (QUIC has no \
place for the key)."
    )]
    NetworkKey {
        /// Where to write the key
        file: PathBuf,
    },
}

fn parse_ec(s: &str) -> Result<(u8, u8), String> {
    let (k, m) = s
        .split_once('+')
        .ok_or_else(|| format!("expected DATA+PARITY like 4+2, got {s:?}"))?;
    let k: u8 = k
        .trim()
        .parse()
        .map_err(|_| format!("bad data shard count {k:?}"))?;
    let m: u8 = m
        .trim()
        .parse()
        .map_err(|_| format!("bad parity shard count {m:?}"))?;
    if !(1..=64).contains(&k) || !(1..=64).contains(&m) {
        return Err("shard counts must be between 1 and 64".into());
    }
    Ok((k, m))
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("dfs"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("cannot find the data directory: neither --data, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/dfs"))
}

fn data_dir(data: Option<PathBuf>) -> Result<PathBuf> {
    match data {
        Some(p) => Ok(p),
        None => default_data_dir(),
    }
}

fn open_repo(data: Option<PathBuf>) -> Result<Repo> {
    let repo = Repo::open(&data_dir(data)?)?;
    if let Some(report) = repo.recovered() {
        crate::notice!(
            "cleaned up after an interrupted put: {} shard files, {} freed",
            report.shard_files_removed,
            human_bytes(report.bytes_freed)
        );
    }
    Ok(repo)
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Put {
            path,
            ec,
            password,
            password_source,
            net,
        } => {
            // Check the input before touching the data directory, so a typo creates nothing.
            std::fs::symlink_metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let password = if password {
                let password = password_source.read(true)?;
                if password.is_empty() {
                    return Err(crate::BadInput("the password is empty".into()).into());
                }
                Some(password)
            } else {
                None
            };
            let mut repo = open_repo(args.data)?;
            if let Some((k, m)) = ec {
                let mut config: Config = repo.config().clone();
                config.storage.data_shards = k;
                config.storage.parity_shards = m;
                repo.set_config(config)?;
            }
            let repo = Arc::new(repo);
            let peer = RunningPeer::start_if_wanted(&repo, &net)?;
            let result = put(
                &pipeline_of(&repo, peer.as_ref()),
                &path,
                peer.as_ref(),
                password.as_deref(),
            );
            if let Some(peer) = peer {
                peer.stop();
            }
            result
        }
        Command::Get {
            link,
            output,
            force,
            password,
            net,
        } => {
            let link = crate::user::resolve_link(&link, &password)?;
            let repo = Arc::new(open_repo(args.data)?);
            let peer = RunningPeer::start_if_wanted(&repo, &net)?;
            let pipeline = pipeline_of(&repo, peer.as_ref());
            let result = get(&pipeline, &link, output.as_deref(), force);
            if let Some(peer) = peer {
                peer.stop();
            }
            result
        }
        Command::Verify {
            link,
            repair,
            password,
            net,
        } => {
            let link = crate::user::resolve_link(&link, &password)?;
            let repo = Arc::new(open_repo(args.data)?);
            let peer = RunningPeer::start_if_wanted(&repo, &net)?;
            let progress = crate::progress::IoProgress::start(
                "verifying, shards read:",
                IoCounter::Read,
                || None,
            );
            let report = snapshot::verify_link(&pipeline_of(&repo, peer.as_ref()), &link, repair);
            progress.finish();
            if let Some(peer) = peer {
                peer.stop();
            }
            Ok(print_verify(&report?, repair))
        }
        Command::List => {
            let repo = open_repo(args.data)?;
            let mut out = io::stdout().lock();
            for (_, put) in repo.list_puts()? {
                if let Some((root, key)) = put.root {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        put.name,
                        human_bytes(put.bytes),
                        put.started,
                        ShareLink { root, key }
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Forget { link, password } => {
            let link = crate::user::resolve_link(&link, &password)?;
            let repo = open_repo(args.data)?;
            match repo.forget_root(&link.root)? {
                0 => bail!("no stored put has the root {}", link.root),
                n => println!("forgot {n} put(s); run `dfs gc` to reclaim their space"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount {
            mountpoint,
            nonempty,
            allow_other,
            threads,
            read_ahead_kb,
            volume,
            net,
        } => {
            // Check the mount point before touching the data directory, so a typo creates nothing.
            dfs_fs::mount::check_mountpoint(&mountpoint, nonempty)?;
            let signals = dfs_fs::mount::prepare_signals();
            let repo = Arc::new(open_repo(args.data)?);
            let data = repo.path().display().to_string();
            let peer = RunningPeer::start(Arc::clone(&repo), &net, Role::Storage)?;
            peer.wait_for_a_peer(std::time::Duration::from_secs(10));
            let mut options = dfs_fs::mount::MountOptions {
                allow_other,
                nonempty,
                read_ahead_kb,
                ..Default::default()
            };
            if let Some(n) = threads {
                options.threads = n;
            }
            if let Some(name) = &volume {
                match peer.shared_volume(name) {
                    Ok(shared) => options.shared = Some(shared),
                    Err(e) => {
                        peer.stop();
                        return Err(e);
                    }
                }
            }
            let mounted =
                dfs_fs::mount::mount(peer.pipeline(), &mountpoint, &options, signals, || {
                    crate::notice!(
                        "mounted {data} at {}; Ctrl-C or `dfs umount {}` unmounts",
                        mountpoint.display(),
                        mountpoint.display()
                    );
                });
            peer.stop();
            mounted?;
            crate::notice!("unmounted {}", mountpoint.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Node { net } => {
            let repo = open_repo(args.data)?;
            crate::peer::run_node(repo, &net)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            crate::status::status(&data_dir(args.data)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { interval, once } => crate::top::run(&data_dir(args.data)?, interval, once),
        Command::Peers { json } => {
            crate::status::peers(&data_dir(args.data)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions { path } => {
            let dir = versions_dir(&path)?;
            let mut entries: Vec<(String, u64)> = std::fs::read_dir(&dir)
                .with_context(|| {
                    format!(
                        "no versions of {} (looked in {})",
                        path.display(),
                        dir.display()
                    )
                })?
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?)))
                .filter(|(_, m)| m.is_file())
                .map(|(n, m)| (n, m.len()))
                .collect();
            entries.sort();
            if entries.is_empty() {
                bail!("no versions of {} are recorded", path.display());
            }
            for (name, size) in entries {
                println!("{name}\t{}", human_bytes(size));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Log { path, limit, json } => {
            crate::history::run(&data_dir(args.data)?, &path, json, limit)
        }
        Command::Revert { path, version } => {
            let dir = versions_dir(&path)?;
            let matches: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("no versions of {}", path.display()))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&version))
                .collect();
            let name = match matches.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "{} has no version {version:?} (see `dfs versions {}`)",
                    path.display(),
                    path.display()
                ),
                _ => bail!(
                    "{version:?} matches {} versions of {}; give more of it",
                    matches.len(),
                    path.display()
                ),
            };
            let mut from = std::fs::File::open(dir.join(&name))
                .with_context(|| format!("cannot open version {name}"))?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let bytes = std::io::copy(&mut from, &mut to)
                .with_context(|| format!("cannot restore {}", path.display()))?;
            to.sync_all()
                .with_context(|| format!("cannot sync {}", path.display()))?;
            println!(
                "restored {} ({}) from version {name}; what it held before stays a version",
                path.display(),
                human_bytes(bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { deep } => {
            let repo = Arc::new(open_repo(args.data)?);
            // SAFETY: getuid/getgid have no preconditions.
            let owner = unsafe {
                dfs_fs::model::Caller {
                    uid: libc::getuid(),
                    gid: libc::getgid(),
                }
            };
            let ns = dfs_fs::local::LocalNamespace::open(&repo, owner)?;
            let report = dfs_fs::fsck::fsck(&Pipeline::local(repo), &ns, deep)?;
            for p in &report.problems {
                println!("PROBLEM: {p}");
            }
            println!(
                "{} inodes, {} entries, {} files, {} chunks checked: {}",
                report.inodes,
                report.entries,
                report.files,
                report.chunks,
                if report.is_clean() {
                    "clean".to_string()
                } else {
                    format!("{} problems", report.problems.len())
                }
            );
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Umount { mountpoint } => {
            dfs_fs::mount::unmount(&mountpoint)
                .with_context(|| format!("cannot unmount {}", mountpoint.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc => {
            let repo = Arc::new(open_repo(args.data)?);
            let has_volume = repo.meta().put_record(&dfs_node::VOLUME_OWNER)?.is_some();
            let report = if has_volume {
                // SAFETY: getuid/getgid have no preconditions.
                let owner = unsafe {
                    dfs_fs::model::Caller {
                        uid: libc::getuid(),
                        gid: libc::getgid(),
                    }
                };
                let ns = dfs_fs::local::LocalNamespace::open(&repo, owner)?;
                // Chunks that shared volumes' logs refer to are written under this owner too.
                let shared = dfs_fs::shared::referenced_content(&repo)?;
                let collected = dfs_fs::collect::collect(
                    &Pipeline::local(repo.clone()),
                    &ns,
                    &shared,
                    dfs_fs::model::Time::now(),
                )?;
                println!(
                    "volume: {} versions expired, {} chunks in use, {} no longer needed",
                    collected.versions_expired,
                    collected.live_chunks,
                    collected.volume_refs_dropped
                );
                collected.gc
            } else {
                repo.gc()?
            };
            println!(
                "removed {} chunks ({} shard files), freed {}; {} interrupted puts cleaned up",
                report.chunks_removed,
                report.shard_files_removed,
                human_bytes(report.bytes_freed),
                report.interrupted_puts
            );
            if report.shards_queued_remote > 0 {
                println!(
                    "{} shards on other peers are queued for deletion; the next `dfs mount` or \
                     `dfs node` on this data directory deletes them",
                    report.shards_queued_remote
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { command } => crate::cache::run(&data_dir(args.data)?, command),
        Command::Volume { command } => crate::volume::run(&data_dir(args.data)?, command),
        Command::User { command } => crate::user::run(&data_dir(args.data)?, command),
        Command::Login {
            name,
            oidc: Some(issuer),
            client_id,
            wait,
            uid,
            passphrase: _,
        } => crate::oidc_login::run(
            &data_dir(args.data)?,
            crate::oidc_login::OidcLogin {
                issuer,
                client_id,
                user: name,
                uid,
                wait,
            },
        ),
        Command::Login {
            name,
            oidc: None,
            uid,
            passphrase,
            ..
        } => {
            let name = name.ok_or_else(|| {
                crate::BadInput(
                    "give the user to log in as (`dfs login NAME`), or --oidc ISSUER".into(),
                )
            })?;
            crate::user::login(&data_dir(args.data)?, name, uid, &passphrase)
        }
        Command::Logout { uid } => crate::user::logout(&data_dir(args.data)?, uid),
        Command::Profile { command } => crate::user::profile(&data_dir(args.data)?, command),
        Command::Whoami { all, json } => crate::user::whoami(&data_dir(args.data)?, all, json),
        Command::Stats { top, json } => crate::stats::run(&data_dir(args.data)?, top, json),
        Command::Events {
            since,
            kind,
            follow,
            json,
        } => crate::events::run(&data_dir(args.data)?, since, &kind, follow, json),
        Command::NetworkKey { file } => network_key(&file),
    }
}

/// `dfs network-key FILE`: a new key, created 0600 and never over an existing file.
fn network_key(file: &Path) -> Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = dfs_node::new_network_key();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.write_all(key.to_key_file().as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "wrote a private network key to {} (fingerprint {}); set `[network] key_file` to it on \
         every peer of the network",
        file.display(),
        key.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

/// How long `dfs put` with a network waits for every shard to reach the storage peers.
const PUT_SETTLE: std::time::Duration = std::time::Duration::from_secs(120);

/// The chunk pipeline of `repo`: over the network of `peer` when one runs.
fn pipeline_of(repo: &Arc<Repo>, peer: Option<&RunningPeer>) -> Pipeline {
    peer.map_or_else(|| Pipeline::local(repo.clone()), RunningPeer::pipeline)
}

fn put(
    pipeline: &Pipeline,
    path: &Path,
    peer: Option<&RunningPeer>,
    password: Option<&str>,
) -> Result<ExitCode> {
    let repo = pipeline.repo();
    let started = std::time::Instant::now();
    let input = path.to_path_buf();
    let progress = crate::progress::IoProgress::start("storing", IoCounter::Read, move || {
        Some(crate::progress::tree_bytes(&input))
    });
    let outcome = snapshot::put_path(pipeline, path);
    progress.finish();
    let outcome = outcome.map_err(|e| {
        let hint = if e.is_disk_full() {
            " (disk full; nothing was stored)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot store {}: {e}{hint}", path.display())
    })?;
    if let Some(peer) = peer {
        peer.settle(PUT_SETTLE)
            .with_context(|| format!("{} is not fully stored yet", path.display()))?;
    }
    let stats = &outcome.stats;
    let secs = started.elapsed().as_secs_f64();
    for skipped in &stats.skipped {
        crate::notice!(
            "skipped {} (not a file, directory or symlink)",
            skipped.display()
        );
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "stored {}: {} files, {} directories, {} symlinks, {} in {:.2}s ({}/s), erasure coding {}+{}",
        path.display(),
        stats.files,
        stats.dirs,
        stats.symlinks,
        human_bytes(stats.bytes),
        secs,
        human_bytes((stats.bytes as f64 / secs.max(1e-9)) as u64),
        repo.config().storage.data_shards,
        repo.config().storage.parity_shards,
    )?;
    match password {
        // The argon2id work of the lock is done once here; every get pays it again.
        Some(password) => writeln!(
            out,
            "{}",
            outcome.link.lock(
                password.as_bytes(),
                dfs_node::passphrase::KdfParams::default()
            )?
        )?,
        None => writeln!(out, "{}", outcome.link)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn get(
    pipeline: &Pipeline,
    link: &ShareLink,
    output: Option<&Path>,
    force: bool,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let total = if crate::progress::visible() {
        link_bytes(pipeline, link)
    } else {
        None
    };
    let (report, dest) = if output == Some(Path::new("-")) {
        let bar = crate::progress::Bar::bytes("restoring", total);
        let report = snapshot::cat_link(pipeline, link, &mut bar.wrap_write(io::stdout().lock()));
        bar.finish();
        (report?, "stdout".to_string())
    } else {
        let out = output.unwrap_or(Path::new("."));
        let progress =
            crate::progress::IoProgress::start("restoring", IoCounter::Written, move || total);
        let outcome = snapshot::get_link(pipeline, link, out, force);
        progress.finish();
        let outcome = outcome.map_err(|e| {
            let hint = if e.is_disk_full() {
                " (disk full; nothing was written)"
            } else {
                ""
            };
            anyhow::anyhow!("cannot restore the link: {e}{hint}")
        })?;
        (outcome.report, outcome.path.display().to_string())
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restored {} to {dest} in {secs:.2}s ({}/s), {} chunks verified",
        human_bytes(report.bytes),
        human_bytes((report.bytes as f64 / secs.max(1e-9)) as u64),
        report.chunks
    );
    if report.degraded_chunks > 0 {
        crate::notice!(
            "{} chunks had missing or corrupt shards; {} shards were rebuilt and rewritten",
            report.degraded_chunks,
            report.repaired_shards
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of file content behind `link`, for a progress bar: from this data directory's record
/// of the put, or the root entry when it is a file; `None` for another peer's directory.
fn link_bytes(pipeline: &Pipeline, link: &ShareLink) -> Option<u64> {
    let recorded = pipeline
        .repo()
        .list_puts()
        .ok()?
        .into_iter()
        .find_map(|(_, put)| {
            put.root
                .filter(|(root, _)| *root == link.root)
                .map(|_| put.bytes)
        });
    recorded.or_else(
        || match snapshot::read_root(pipeline, link, false).ok()?.0.kind {
            snapshot::EntryKind::File(blob) => Some(blob.size),
            _ => None,
        },
    )
}

fn print_verify(report: &VerifyReport, repair: bool) -> ExitCode {
    for d in &report.damaged {
        let state = if d.lost {
            "LOST"
        } else if !d.repaired.is_empty() {
            "repaired"
        } else {
            "recoverable"
        };
        println!(
            "{state}: {} chunk {} missing shards {:?} corrupt shards {:?}",
            d.path, d.chunk, d.missing, d.corrupt
        );
    }
    for u in &report.unreadable {
        println!("LOST: {u}");
    }
    let lost = report.lost();
    let damaged = report.damaged.len();
    let repaired = report
        .damaged
        .iter()
        .filter(|d| !d.lost && !d.repaired.is_empty())
        .count();
    println!(
        "{} chunks checked: {} healthy, {} damaged ({} repaired), {} lost",
        report.chunks, report.healthy, damaged, repaired, lost
    );
    if lost > 0 {
        ExitCode::from(EXIT_LOST)
    } else if damaged > repaired || (damaged > 0 && !repair) {
        if !repair {
            println!("run `dfs verify --repair LINK` to rebuild the damaged shards");
        }
        ExitCode::from(EXIT_DAMAGED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `MOUNT/.dfs/versions/<path>` for a path inside a dfs mount (the file may be deleted).
fn versions_dir(path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let name = absolute
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("cannot resolve {}", parent.display()))?;
    let file = parent.join(name);
    for root in parent.ancestors() {
        let is_mount_root = match (
            std::fs::metadata(root),
            root.parent().map(std::fs::metadata),
        ) {
            (Ok(m), Some(Ok(up))) => m.dev() != up.dev(),
            (Ok(_), None) => true,
            _ => false,
        };
        if is_mount_root && root.join(".dfs/versions").is_dir() {
            let rel = file.strip_prefix(root).unwrap_or(&file);
            return Ok(root.join(".dfs/versions").join(rel));
        }
    }
    bail!("{} is not inside a dfs mount", path.display())
}
