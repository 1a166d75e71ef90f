//! Peers on a real link: two `dfs node`s in network namespaces of their own, joined by a veth
//! pair. They find each other (by mDNS, or by an explicit `--peer` over the veth), see each other
//! alive; when the link is cut each marks the other suspect and then dead within the grace
//! period; when it is restored each sees the other alive again under the same id.
//!
//! Needs root (`ip netns`); skips with a message otherwise. CI runs it as root. mDNS multicasts
//! on every interface, so it only runs here, inside namespaces the test creates and deletes.
//! Set DFS_LOG (e.g. `debug`) to change what the nodes log; their stderr is shown on failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dfs_tests::{cannot_run, create_data_dir, is_root, test_peer_config};
use serde_json::Value;

/// Seconds of silence before a peer is declared dead (`--grace`).
const GRACE: u64 = 4;
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(200);

/// Run `ip ARGS`; Err(stderr) if it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// One end of the link: a namespace, its veth end and address.
struct Side {
    ns: String,
    veth: &'static str,
    addr: String,
}

/// Two namespaces joined by a veth pair; deleted (with the veth) on drop.
struct Link {
    a: Side,
    b: Side,
}

impl Link {
    /// Create the namespaces and the link, or None (with a message) where that is not allowed.
    fn create() -> Option<Self> {
        if !is_root("network namespace tests") {
            return None;
        }
        // Unique per process and per test, so parallel tests and runs never collide.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let x = (pid.wrapping_mul(7).wrapping_add(n)) % 250 + 1;
        let side = |tag: &str, veth, host| Side {
            ns: format!("dfs-{tag}-{pid}-{n}"),
            veth,
            addr: format!("10.231.{x}.{host}"),
        };
        let a = side("a", "dfsa", 1);
        if let Err(e) = ip(&["netns", "add", &a.ns]) {
            cannot_run(&format!("cannot create a network namespace ({e})"));
            return None;
        }
        let b = side("b", "dfsb", 2);
        // From here on, drop deletes whatever was made.
        let link = Link { a, b };
        ip_ok(&["netns", "add", &link.b.ns]);
        ip_ok(&[
            "-n",
            &link.a.ns,
            "link",
            "add",
            link.a.veth,
            "type",
            "veth",
            "peer",
            "name",
            link.b.veth,
            "netns",
            &link.b.ns,
        ]);
        for side in [&link.a, &link.b] {
            ip_ok(&["-n", &side.ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n",
                &side.ns,
                "addr",
                "add",
                &format!("{}/24", side.addr),
                "dev",
                side.veth,
            ]);
            ip_ok(&["-n", &side.ns, "link", "set", side.veth, "up"]);
        }
        Some(link)
    }

    /// Cut the cable: A's end goes down, B's loses its carrier.
    fn cut(&self) {
        ip_ok(&["-n", &self.a.ns, "link", "set", self.a.veth, "down"]);
    }

    /// Plug it back in, and check the address and the subnet route came back with it.
    fn restore(&self) {
        ip_ok(&["-n", &self.a.ns, "link", "set", self.a.veth, "up"]);
        for side in [&self.a, &self.b] {
            let addrs = ip(&["-n", &side.ns, "-4", "addr", "show", "dev", side.veth]).unwrap();
            if !addrs.contains(&format!("{}/24", side.addr)) {
                ip_ok(&[
                    "-n",
                    &side.ns,
                    "addr",
                    "add",
                    &format!("{}/24", side.addr),
                    "dev",
                    side.veth,
                ]);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let routes =
                    ip(&["-n", &side.ns, "-4", "route", "show", "dev", side.veth]).unwrap();
                if routes.contains("/24") && !routes.contains("linkdown") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no usable subnet route in {} after the link came back: {routes:?}",
                    side.ns
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.a.ns, &self.b.ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A `dfs node` running inside a namespace; killed on drop. Its stderr goes to a file.
struct Node {
    name: &'static str,
    ns: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    id: String,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// `dfs --data DATA ARGS` inside the node's namespace.
    fn command(ns: &str, data: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(dfs_tests::dfs_bin())
            .arg("--data")
            .arg(data)
            .args(args)
            .env_remove("DFS_DATA")
            .stdin(Stdio::null());
        cmd
    }

    /// `dfs ARGS --json` against this node's API; None if it does not answer.
    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = Self::command(&self.ns, &self.data(), args)
            .arg("--json")
            .output()
            .expect("run dfs");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn status(&self) -> Option<Value> {
        self.json(&["status"])
    }

    fn peers(&self) -> Vec<Value> {
        match self.json(&["peers"]) {
            Some(Value::Array(peers)) => peers,
            _ => Vec::new(),
        }
    }

    /// The state this node gives `id` ("alive", "suspect", "dead"), if it knows it.
    fn state_of(&self, id: &str) -> Option<String> {
        self.peers()
            .into_iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["state"].as_str().map(String::from))
    }

    /// The node's TCP address (ending in /p2p/<id>) on the veth.
    fn tcp_address(&self) -> String {
        let status = self.status().expect("node is running");
        status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.contains("/tcp/"))
            .expect("a TCP address")
            .to_string()
    }

    /// What a failure report shows of this node.
    fn diagnose(&self) -> String {
        let peers = self.json(&["peers"]).map_or_else(
            || "(no answer)".to_string(),
            |p| serde_json::to_string_pretty(&p).unwrap(),
        );
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- node {} ({}) in {}\npeers: {peers}\nstderr (last 40 lines):\n{tail}\n",
            self.name, self.id, self.ns
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The link and the two nodes on it. Nodes are killed before the namespaces are deleted
/// (fields drop in order), also when a test panics.
struct Lab {
    a: Node,
    b: Node,
    link: Link,
}

impl Lab {
    fn diagnose(&self) -> String {
        let a = self.a.diagnose();
        let b = self.b.diagnose();
        let links = [&self.link.a, &self.link.b]
            .iter()
            .map(|s| {
                let link = ip(&["-n", &s.ns, "-br", "addr"]).unwrap_or_else(|e| e);
                let routes = ip(&["-n", &s.ns, "route"]).unwrap_or_else(|e| e);
                format!("--- {}:\n{link}{routes}", s.ns)
            })
            .collect::<String>();
        format!("{a}{b}{links}")
    }

    /// Poll `f` until it returns Some; panic with `what` and the diagnostics after `timeout`.
    fn wait<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.diagnose()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Both nodes see each other alive.
    fn wait_both_alive(&self, timeout: Duration, what: &str) {
        self.wait(timeout, what, || {
            let ab = self.a.state_of(&self.b.id);
            let ba = self.b.state_of(&self.a.id);
            (ab.as_deref() == Some("alive") && ba.as_deref() == Some("alive")).then_some(())
        });
    }
}

/// Start `dfs node` in `side`'s namespace, listening on its veth address, and wait until its API
/// answers with an address.
fn start(name: &'static str, side: &Side, extra: &[&str]) -> Node {
    let dir = tempfile::Builder::new()
        .prefix("dfs-netns-")
        .tempdir()
        .expect("create temp dir");
    let listen = format!("/ip4/{}/tcp/0", side.addr);
    let grace = GRACE.to_string();
    let mut args = vec!["node", "--listen", &listen, "--grace", &grace];
    args.extend_from_slice(extra);
    let mut node = Node {
        name,
        ns: side.ns.clone(),
        dir,
        child: None,
        id: String::new(),
    };
    create_data_dir(&node.data());
    std::fs::write(node.data().join("config.toml"), test_peer_config("")).expect("write config");
    let stderr = std::fs::File::create(node.log()).expect("create node log");
    let log = std::env::var("DFS_LOG").unwrap_or_else(|_| "info,libp2p_kad=error".into());
    let child = Node::command(&node.ns, &node.data(), &args)
        .env("DFS_LOG", log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ip netns exec dfs node");
    node.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("dfs node exited at start ({status})\n{}", node.diagnose());
        }
        if let Some(status) = node.status() {
            let listening = status["addresses"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a.as_str().is_some_and(|a| a.contains(&side.addr)))
            });
            if listening {
                node.id = status["id"].as_str().expect("status has an id").to_string();
                return node;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {name} did not come up in 30 s\n{}",
            node.diagnose()
        );
        std::thread::sleep(POLL);
    }
}

/// Cut the link, check both sides go suspect then dead in time, restore it, check both come
/// back alive under the same ids.
fn cut_and_restore(lab: &Lab) {
    let grace = Duration::from_secs(GRACE);
    lab.link.cut();
    let cut = Instant::now();
    eprintln!("link cut");
    // Suspect (or already dead) soon: at the latest when the grace period ends.
    let first = lab.wait(
        grace + Duration::from_secs(2),
        "A and B to stop seeing each other alive",
        || {
            let ab = lab.a.state_of(&lab.b.id)?;
            let ba = lab.b.state_of(&lab.a.id)?;
            (ab != "alive" && ba != "alive").then_some((ab, ba))
        },
    );
    eprintln!(
        "after {:.1?}: A sees B {}, B sees A {}",
        cut.elapsed(),
        first.0,
        first.1
    );
    let mut dead_at = [None, None];
    lab.wait(
        grace + Duration::from_secs(6),
        "A and B to declare each other dead",
        || {
            for (i, (node, other)) in [(&lab.a, &lab.b), (&lab.b, &lab.a)].into_iter().enumerate() {
                if dead_at[i].is_none() && node.state_of(&other.id).as_deref() == Some("dead") {
                    dead_at[i] = Some(cut.elapsed());
                }
            }
            dead_at.iter().all(Option::is_some).then_some(())
        },
    );
    eprintln!(
        "dead after {:.1?} (A's view) and {:.1?} (B's view)",
        dead_at[0].unwrap(),
        dead_at[1].unwrap()
    );
    // Silence counts from the last ping answer, at most a ping interval (1 s) before the cut,
    // plus polling slack: nobody is declared dead well before the grace period.
    for (view, at) in ["A", "B"].iter().zip(dead_at) {
        assert!(
            at.unwrap() + Duration::from_millis(1500) >= grace,
            "{view} declared its peer dead after only {at:?} (grace {grace:?})\n{}",
            lab.diagnose()
        );
    }

    lab.link.restore();
    let restored = Instant::now();
    eprintln!("link restored");
    lab.wait_both_alive(
        Duration::from_secs(15),
        "A and B alive again after the link came back",
    );
    eprintln!("alive again after {:.1?}", restored.elapsed());
    // Same peers, same ids: nobody restarted or was replaced, and no stranger appeared.
    for (node, other) in [(&lab.a, &lab.b), (&lab.b, &lab.a)] {
        let status = node.status().expect("node answers");
        assert_eq!(
            status["id"],
            node.id.as_str(),
            "{} changed its id",
            node.name
        );
        let ids: Vec<Value> = node.peers().into_iter().map(|p| p["id"].clone()).collect();
        assert_eq!(
            ids,
            [Value::from(other.id.as_str())],
            "{} should know exactly its one peer\n{}",
            node.name,
            lab.diagnose()
        );
    }
}

#[test]
fn mdns_peers_in_separate_namespaces_survive_a_cut_link() {
    let Some(link) = Link::create() else { return };
    // Build the binary (if needed) before the clock starts.
    dfs_tests::dfs_bin();
    let started = Instant::now();
    let a = start("A", &link.a, &["--mdns"]);
    let b = start("B", &link.b, &["--mdns"]);
    let lab = Lab { a, b, link };
    // mDNS alone: no --peer anywhere.
    lab.wait_both_alive(
        Duration::from_secs(10),
        "A and B to find each other by mDNS",
    );
    eprintln!("found each other by mDNS after {:.1?}", started.elapsed());
    cut_and_restore(&lab);
    eprintln!("done in {:.1?}", started.elapsed());
}

#[test]
fn bootstrap_peer_across_namespaces_survives_a_cut_link() {
    let Some(link) = Link::create() else { return };
    // Build the binary (if needed) before the clock starts.
    dfs_tests::dfs_bin();
    let started = Instant::now();
    let a = start("A", &link.a, &[]);
    let a_addr = a.tcp_address();
    assert!(
        a_addr.contains(&link.a.addr),
        "A listens on the veth: {a_addr}"
    );
    let b = start("B", &link.b, &["--peer", &a_addr]);
    let lab = Lab { a, b, link };
    lab.wait_both_alive(Duration::from_secs(10), "B to reach A through --peer");
    eprintln!("bootstrapped after {:.1?}", started.elapsed());
    cut_and_restore(&lab);
    eprintln!("done in {:.1?}", started.elapsed());
}
