//! Harness for end-to-end tests: runs the real `dfs` binary against throwaway data directories.
//!
//! `Dfs::new()` makes a temporary data directory; `dfs.run(&[...])` runs `dfs --data DIR ...`
//! and returns its status, stdout and stderr. The binary is the one cargo built for this
//! profile (`target/<profile>/dfs`), built on demand if missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Path of the `dfs` binary of this build profile, rebuilt once per test process so a test never
/// runs a stale binary (`cargo test -p dfs-tests` alone does not rebuild other packages' binaries).
pub fn dfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/dfs
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", "dfs"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p dfs");
        assert!(status.success(), "cargo build -p dfs failed");
        profile_dir.join("dfs")
    })
}

/// The captured result of one `dfs` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panic with the whole output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "dfs failed: {self:#?}");
        self
    }

    /// Panic unless the command failed with a one-line error containing `needle`.
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(self.code, Some(0), "dfs should have failed: {self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {self:#?}"
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("dfs: error"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one error line: {self:#?}"
        );
        self
    }

    /// A bad-input failure: exit status 2 and one `dfs: error` line naming `needle`.
    pub fn bad_input(self, needle: &str) -> Self {
        let run = self.fails_with(needle);
        assert_eq!(run.code, Some(2), "{run:#?}");
        run
    }

    /// The last line of stdout (where `put` prints the link).
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// A throwaway data directory and the files a test works with.
pub struct Dfs {
    pub dir: tempfile::TempDir,
}

impl Default for Dfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Dfs {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("dfs-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    /// The data directory given with `--data`.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A path for test files, next to the data directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `config.toml` into the data directory, with what keeps a test's peers independent
    /// of the host's disk (see [`test_peer_config`]).
    pub fn configure(&self, toml: &str) {
        create_data_dir(&self.data());
        std::fs::write(self.data().join("config.toml"), test_peer_config(toml))
            .expect("write config");
    }

    /// Before a peer that takes others' shards starts: a data directory that has no
    /// config.toml gets the one of [`test_peer_config`].
    fn configure_if_unset(&self) {
        if !self.data().join("config.toml").exists() {
            self.configure("");
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(dfs_bin());
        cmd.arg("--data").arg(self.data()).args(args);
        cmd.env_remove("DFS_DATA").env_remove("DFS_LOG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn dfs");
        Run::from_output(out)
    }

    /// [`Dfs::run`] with `value` in the environment variable `var` (a passphrase or password).
    pub fn run_with_env(&self, var: &str, value: &str, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .expect("spawn dfs");
        Run::from_output(out)
    }

    /// [`Dfs::run`] with `passphrase` in `DFS_PASSPHRASE`.
    pub fn run_with_passphrase(&self, passphrase: &str, args: &[&str]) -> Run {
        self.run_with_env("DFS_PASSPHRASE", passphrase, args)
    }

    /// `dfs user create NAME` with the cheapest passphrase hashing it accepts (so tests spend
    /// no time in it); returns the user's key, hex.
    pub fn create_user(&self, name: &str, passphrase: &str) -> String {
        let run = self
            .run_with_passphrase(
                passphrase,
                &[
                    "user",
                    "create",
                    name,
                    "--kdf-memory",
                    "8",
                    "--kdf-passes",
                    "1",
                ],
            )
            .ok();
        // "created user NAME (KEY)"
        run.stdout
            .trim()
            .rsplit_once('(')
            .and_then(|(_, key)| key.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no key in {run:#?}"))
            .to_string()
    }

    /// `dfs login NAME` on the running peer.
    pub fn login(&self, name: &str, passphrase: &str) {
        let run = self.run_with_passphrase(passphrase, &["login", name]).ok();
        assert!(
            run.stdout.contains(&format!("logged in as {name}")),
            "{run:#?}"
        );
    }

    /// Like [`Dfs::run`], for commands that serve until stopped (`node`): killed after
    /// `timeout` if still running, then reported with `code: None`.
    pub fn run_for(&self, args: &[&str], timeout: std::time::Duration) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dfs");
        let deadline = std::time::Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Run::from_output(child.wait_with_output().expect("collect output"))
    }

    /// `dfs put PATH`, returning the link.
    pub fn put(&self, path: &Path) -> String {
        let run = self.run(&["put", path.to_str().expect("utf-8 path")]).ok();
        let link = run.last_line().to_string();
        assert!(link.starts_with("dfs://"), "no link in {run:#?}");
        link
    }

    /// Every shard file in the store: (path, chunk hex, index).
    pub fn shard_files(&self) -> Vec<(PathBuf, String, u8)> {
        shard_files_under(&self.data().join("shards"))
    }

    /// Every shard this peer holds for other peers: (path, chunk hex, index).
    pub fn held_files(&self) -> Vec<(PathBuf, String, u8)> {
        shard_files_under(&self.data().join("held").join("shards"))
    }
}

/// Create a data directory as dfs does: readable by its owner only (dfs refuses one that
/// others can read).
/// `toml` with what makes a test's peers independent of the host's disk, for every key the
/// test does not set itself: `[network] reserve_percent = 0` (a peer keeps the last 5% of its
/// disk free of others' shards by default; a CI machine with less than that free refused every
/// store as "peer is full") and `capacity` = 8 GiB (by default a peer offers the disk's free
/// space, which every test peer shares and which moves as other tests write: the rendezvous
/// weights followed it, and shards moved in a test that counts moves). The tests of the reserve
/// and of capacity set their own.
pub fn test_peer_config(toml: &str) -> String {
    let mut settings = Vec::new();
    if !toml.contains("reserve_percent") {
        settings.push("reserve_percent = 0");
    }
    if !toml.contains("capacity") {
        settings.push("capacity = 8589934592");
    }
    if settings.is_empty() {
        return toml.to_string();
    }
    let settings = settings.join("\n");
    let mut out = String::with_capacity(toml.len() + 80);
    let mut placed = false;
    for line in toml.lines() {
        out.push_str(line);
        out.push('\n');
        if !placed && line.trim() == "[network]" {
            out.push_str(&settings);
            out.push('\n');
            placed = true;
        }
    }
    if !placed {
        out.push_str("\n[network]\n");
        out.push_str(&settings);
        out.push('\n');
    }
    out
}

pub fn create_data_dir(path: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .expect("create data dir");
}

/// Shard files `<root>/<2 hex>/<chunk hex>.<index>`: (path, chunk hex, index).
pub fn shard_files_under(root: &Path) -> Vec<(PathBuf, String, u8)> {
    let mut out = Vec::new();
    {
        for sub in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some((hex, idx)) = name.split_once('.') {
                    if let Ok(idx) = idx.parse() {
                        out.push((f.path(), hex.to_string(), idx));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes (seeded), fast enough for hundreds of MiB.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// A running `dfs mount` of a [`Dfs`] data directory; unmounted (and waited for) on drop.
pub struct Mount {
    pub path: PathBuf,
    child: Option<std::process::Child>,
}

/// Whether `path` is a mount point right now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let path = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|p| p == path))
}

/// A test cannot run on this machine (no root, FUSE, network namespaces or a tool): it says so
/// and returns, so the caller skips. With `DFS_REQUIRE_ROOT=1` (set by `.ci/run`, which runs as
/// root with everything installed) it fails instead, so CI can never pass by skipping.
pub fn cannot_run(why: &str) {
    if std::env::var("DFS_REQUIRE_ROOT").is_ok_and(|v| v == "1") {
        panic!("{why}, and DFS_REQUIRE_ROOT=1 says this machine must run it");
    }
    eprintln!("skipping: {why} (CI runs it as root)");
}

/// Whether this process runs as root; when not, the test says why it skips ([`cannot_run`]).
pub fn is_root(for_what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        cannot_run(&format!("{for_what} needs root"));
    }
    root
}

/// Whether FUSE mounts can work here (root and /dev/fuse); tests say why they skip otherwise
/// and fail under `DFS_REQUIRE_ROOT=1` ([`cannot_run`]).
pub fn fuse_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists();
    if !ok {
        cannot_run("FUSE tests need root and /dev/fuse");
    }
    ok
}

impl Dfs {
    /// Mount the data directory at `<tmp>/<name>` and wait until the mount is live.
    pub fn mount(&self, name: &str) -> Mount {
        let path = self.path(name);
        std::fs::create_dir_all(&path).expect("create mount point");
        self.mount_at(&path, &[])
    }

    /// Mount at an existing `path` with extra arguments.
    pub fn mount_at(&self, path: &Path, extra: &[&str]) -> Mount {
        self.configure_if_unset();
        let mut args = vec!["mount", path.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dfs mount");
        let mut mount = Mount {
            path: path.to_path_buf(),
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !is_mounted(path) {
            if let Some(status) = mount
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dfs mount exited before mounting: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mount did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        mount
    }
}

impl Mount {
    /// `dfs umount`, then wait for the serving process to exit; returns its exit code.
    pub fn unmount(mut self) -> Option<i32> {
        self.stop()
    }

    /// Send `signal` to the serving process and wait for it; returns its exit status.
    pub fn signal(mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("mount process");
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let status = child.wait().expect("wait for dfs mount");
        if is_mounted(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        status
    }

    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new(dfs_bin())
            .args(["umount"])
            .arg(&self.path)
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
                let _ = child.wait();
                eprintln!("dfs mount did not exit after unmount; killed it");
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// A running `dfs node` of a [`Dfs`] data directory; killed on drop. Its stderr goes to
/// `<tmp>/node.log`, shown when a test fails.
pub struct Peer {
    child: Option<std::process::Child>,
    log: PathBuf,
}

/// Taken by a test whose deadlines or "nothing happened" assertions (repair within 2 minutes,
/// no shard moved, no peer declared dead) would not hold with another heavy test of the same
/// binary beside it on CI's 2 cores (tests/run.sh runs two at a time): such tests run one after
/// another while the rest of the binary still runs in parallel with them. The guard survives a
/// panicking holder (a failed test must not fail the next one).
pub fn alone() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Poll `f` every 100 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Dfs {
    /// Start `dfs node` with `args` and wait until its API answers.
    pub fn node(&self, args: &[&str]) -> Peer {
        self.configure_if_unset();
        let log = self.path("node.log");
        let stderr = std::fs::File::create(&log).expect("create node log");
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        let child = self
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn dfs node");
        let mut peer = Peer {
            child: Some(child),
            log,
        };
        wait_for(std::time::Duration::from_secs(30), "the peer's API", || {
            if let Some(status) = peer
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dfs node exited at start ({status}): {}", peer.log_text());
            }
            self.status().filter(|s| !s.addresses.is_empty())
        });
        peer
    }

    /// `dfs status --json` of the peer running on this data directory, if one answers.
    pub fn status(&self) -> Option<NodeStatus> {
        let run = self.run(&["status", "--json"]);
        (run.code == Some(0)).then(|| serde_json::from_str(&run.stdout).expect("status JSON"))
    }

    /// `dfs peers --json`.
    pub fn peers(&self) -> Vec<PeerView> {
        let run = self.run(&["peers", "--json"]).ok();
        serde_json::from_str(&run.stdout).expect("peers JSON")
    }

    /// The TCP address (with /p2p/id) others can dial this peer at.
    pub fn address(&self) -> String {
        let status = self.status().expect("peer running");
        status
            .addresses
            .into_iter()
            .find(|a| a.contains("/tcp/"))
            .expect("a TCP address")
    }
}

/// What `dfs status --json` prints (the fields tests use).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub addresses: Vec<String>,
    pub peers: PeerCounts,
    pub storage: serde_json::Value,
    /// Placement health of the chunks this peer wrote (`null` before the first round).
    #[serde(default)]
    pub placement: serde_json::Value,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct PeerCounts {
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
    #[serde(default)]
    pub clients: usize,
}

/// One row of `dfs peers --json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PeerView {
    pub id: String,
    pub state: String,
    pub connected: bool,
    pub rtt_ms: Option<f64>,
    pub zone: Option<String>,
    pub score: f64,
    #[serde(default)]
    pub client: bool,
    /// Seconds present without a break, as the asking peer saw it.
    #[serde(default)]
    pub up_secs: f64,
}

impl Peer {
    /// kill -9, and wait for it.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().ok()?.code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident memory now and at its peak so far (VmRSS, VmHWM), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let pid = self.child.as_ref().expect("the peer runs").id();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Send a raw HTTP request to `addr` (`127.0.0.1:PORT`); returns the status line and body.
pub fn http(addr: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Dfs {
    /// `127.0.0.1:PORT` of the API of the peer running on this data directory.
    pub fn api_addr(&self) -> String {
        let endpoint: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data().join("api.json")).expect("api.json"))
                .expect("api.json is JSON");
        endpoint["url"]
            .as_str()
            .expect("url")
            .trim_start_matches("http://")
            .to_string()
    }

    /// The `/metrics` page of the peer running on this data directory (no token needed).
    pub fn metrics(&self) -> String {
        let (status, body) = http(
            &self.api_addr(),
            "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n",
        );
        assert!(status.contains("200"), "GET /metrics: {status}: {body}");
        body
    }
}

/// The value of the sample `series` (name with its labels, exactly as printed) in a `/metrics`
/// page, or the sum over all samples of a bare metric name when `series` has no labels and
/// the metric has some.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    let mut sum = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().ok()?;
        if name == series {
            return Some(value);
        }
        if !series.contains('{') && name.starts_with(&format!("{series}{{")) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// `n` storage peers (`dfs node`, each its own process and data directory, the first everyone's
/// bootstrap) that all see each other alive, with `config` in each one's config.toml and a
/// grace period of `grace` seconds; returns their directories, processes and the bootstrap
/// address.
pub fn storage_network(n: usize, config: &str, grace: &str) -> (Vec<Dfs>, Vec<Peer>, String) {
    let dirs: Vec<Dfs> = (0..n).map(|_| Dfs::new()).collect();
    for d in &dirs {
        d.configure(config);
    }
    let mut nodes = vec![dirs[0].node(&["--grace", grace])];
    let boot = dirs[0].address();
    for dir in &dirs[1..] {
        nodes.push(dir.node(&["--grace", grace, "--peer", &boot]));
    }
    wait_for(
        std::time::Duration::from_secs(30),
        "the peers to see each other",
        || {
            dirs.iter()
                .all(|d| storage_peers_alive(d) >= n - 1)
                .then_some(())
        },
    );
    (dirs, nodes, boot)
}

/// Storage peers (announced, not clients) the peer on `d` sees alive.
pub fn storage_peers_alive(d: &Dfs) -> usize {
    d.peers()
        .iter()
        .filter(|p| p.state == "alive" && !p.client && p.zone.is_some())
        .count()
}

/// Storage peers as processes (the first is everyone's bootstrap) and a `--no-store` mount that
/// sees them all alive: the network the monitoring tests observe.
pub struct MountedNetwork {
    pub nodes: Vec<Dfs>,
    pub peers: Vec<Peer>,
    pub client: Dfs,
    pub mnt: PathBuf,
    pub mount: Mount,
}

impl MountedNetwork {
    pub fn start(n: usize) -> MountedNetwork {
        let nodes: Vec<Dfs> = (0..n).map(|_| Dfs::new()).collect();
        let mut peers = vec![nodes[0].node(&["--grace", "5"])];
        let boot = nodes[0].address();
        for node in &nodes[1..] {
            peers.push(node.node(&["--grace", "5", "--peer", &boot]));
        }
        let client = Dfs::new();
        let mnt = client.path("mnt");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let mount = client.mount_at(&mnt, &["--no-store", "--grace", "5", "--peer", &boot]);
        let alive = n as f64;
        wait_for(
            std::time::Duration::from_secs(30),
            "the mount to see every peer alive",
            || {
                (metric(&client.metrics(), "dfs_peers{state=\"alive\"}") == Some(alive))
                    .then_some(())
            },
        );
        MountedNetwork {
            nodes,
            peers,
            client,
            mnt,
            mount,
        }
    }
}

/// A shared volume `team` with `n` members, each a separate process mounting it, and one
/// storage peer that is not a member (everyone's bootstrap; it holds shards and sees neither
/// names nor plaintext).
pub struct SharedNetwork {
    pub storage: Dfs,
    pub storage_peer: Peer,
    /// The storage peer's address, which every mount is given with `--peer`.
    pub boot: String,
    pub members: Vec<Dfs>,
    pub mounts: Vec<Option<Mount>>,
}

/// One volume of `dfs volume list --json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct VolumeInfo {
    pub id: String,
    pub name: String,
    pub members: usize,
    pub ops: u64,
    pub joined: bool,
}

impl Dfs {
    /// `dfs volume list --json` of the peer running on this data directory.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let run = self.run(&["volume", "list", "--json"]).ok();
        serde_json::from_str(&run.stdout).expect("volume list JSON")
    }
}

impl SharedNetwork {
    /// Create the volume on member 0, let every other member join with its own ticket (all
    /// as `dfs node`s), then mount it on every member.
    pub fn start(n: usize) -> SharedNetwork {
        let storage = Dfs::new();
        let storage_peer = storage.node(&[]);
        let boot = storage.address();
        let members: Vec<Dfs> = (0..n).map(|_| Dfs::new()).collect();
        for member in &members {
            // A write is durable on 2 peers: the tests partition a member on purpose, and a
            // network of 4 that just lost one cannot reach the default (data shards + 1).
            member.configure("[placement]\ndurable_peers = 2\n");
        }
        let nodes: Vec<Peer> = members.iter().map(|m| m.node(&["--peer", &boot])).collect();
        members[0].run(&["volume", "create", "team"]).ok();
        for member in &members[1..] {
            let ticket = members[0]
                .run(&["volume", "invite", "team"])
                .ok()
                .last_line()
                .to_string();
            member.run(&["volume", "join", &ticket]).ok();
        }
        for member in &members {
            wait_for(
                std::time::Duration::from_secs(30),
                &format!("volume team joined with {n} members"),
                || {
                    member
                        .volumes()
                        .into_iter()
                        .find(|v| v.name == "team" && v.joined && v.members == n)
                },
            );
        }
        for node in nodes {
            node.terminate();
        }
        let mut net = SharedNetwork {
            storage,
            storage_peer,
            boot,
            members,
            mounts: Vec::new(),
        };
        for i in 0..n {
            let mount = net.mount_member(i, true);
            net.mounts.push(Some(mount));
        }
        net
    }

    /// Where member `i` mounts the volume.
    pub fn path(&self, i: usize) -> PathBuf {
        self.members[i].path("mnt")
    }

    /// Mount the volume on member `i`; `connected` false leaves out the bootstrap peer, so the
    /// member works alone (nobody knows its new address): a partition.
    fn mount_member(&self, i: usize, connected: bool) -> Mount {
        let path = self.path(i);
        std::fs::create_dir_all(&path).expect("create mount point");
        let mut args = vec!["--volume", "team"];
        if connected {
            args.extend(["--peer", self.boot.as_str()]);
        }
        self.members[i].mount_at(&path, &args)
    }

    /// Unmount member `i` (cleanly: every open file committed).
    pub fn unmount(&mut self, i: usize) {
        if let Some(mount) = self.mounts[i].take() {
            mount.unmount();
        }
    }

    /// Mount member `i` again, connected to the others or alone.
    pub fn remount(&mut self, i: usize, connected: bool) {
        self.unmount(i);
        let mount = self.mount_member(i, connected);
        self.mounts[i] = Some(mount);
    }
}
