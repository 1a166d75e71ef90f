//! `/metrics` of real peers, scraped by a real Prometheus server: three storage peers and a
//! mount (separate processes on loopback); a known file is written through the mount, and the
//! series Prometheus collected say what happened (bytes written equal to the file's size,
//! shard bytes received by the storage peers, peers alive, chunks healthy). Needs FUSE (root) and
//! the `prometheus` binary (Debian package `prometheus`, installed by deploy/install-deps.sh).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dfs_tests::{cannot_run, fuse_available, http, random_bytes, wait_for, MountedNetwork};

const FILE_SIZE: usize = 12 << 20;

/// A Prometheus server scraping `targets` every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Prometheus {
    fn start(bin: &Path, targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: dfs\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .expect("write config");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        // It listens before it is ready (queries answer 503 until its storage is open).
        wait_for(Duration::from_secs(60), "prometheus to be ready", || {
            std::net::TcpStream::connect(&p.addr).ok()?;
            let (status, _) = http(&p.addr, "GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n");
            status.contains("200").then_some(())
        });
        p
    }

    /// The samples of an instant query: (labels, value).
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let request =
            format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let (status, body) = http(&self.addr, &request);
        assert!(status.contains("200"), "query {promql}: {status}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        json["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        let v = r["value"][1].as_str()?.parse().ok()?;
                        Some((r["metric"].clone(), v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn sum(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql);
        (!samples.is_empty()).then(|| samples.iter().map(|(_, v)| v).sum())
    }
}

#[test]
fn prometheus_scrapes_what_the_mount_and_its_peers_did() {
    if !fuse_available() {
        return;
    }
    let Some(bin) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        cannot_run("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let MountedNetwork {
        nodes,
        peers,
        client,
        mnt,
        mount,
    } = MountedNetwork::start(3);

    // /metrics needs no token; the rest of the API still does.
    let (status, _) = http(
        &client.api_addr(),
        "GET /v1/status HTTP/1.0\r\nHost: localhost\r\n\r\n",
    );
    assert!(status.contains("401"), "{status}");

    let data = random_bytes(FILE_SIZE, 7);
    let mut f = std::fs::File::create(mnt.join("known")).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(std::fs::read(mnt.join("known")).expect("read back"), data);

    let mut targets = vec![client.api_addr()];
    targets.extend(nodes.iter().map(|n| n.api_addr()));
    let prom = Prometheus::start(bin, &targets);
    wait_for(Duration::from_secs(60), "every target up", || {
        (prom.sum("up") == Some(4.0)).then_some(())
    });
    let written = wait_for(Duration::from_secs(30), "bytes written", || {
        prom.sum("dfs_fuse_written_bytes_total")
    });
    assert_eq!(written, FILE_SIZE as f64);
    let writes = prom
        .sum("dfs_fuse_operations_total{op=\"write\"}")
        .expect("write ops");
    assert!(writes >= 1.0, "{writes}");
    assert!(
        prom.query("dfs_fuse_operation_duration_seconds_count{op=\"write\"}")
            .len()
            == 1
    );
    // The storage peers received the shards the mount sent (it keeps none itself).
    let holders = nodes
        .iter()
        .map(|n| n.api_addr())
        .collect::<Vec<_>>()
        .join("|");
    let sent_query = format!(
        "dfs_shard_sent_bytes_total{{instance=\"{}\"}}",
        client.api_addr()
    );
    let received_query = format!("dfs_shard_received_bytes_total{{instance=~\"{holders}\"}}");
    // Scrapes are a second apart: wait until both sides were scraped after the write.
    let (sent, received) = wait_for(Duration::from_secs(30), "shard bytes on both sides", || {
        let sent = prom.sum(&sent_query)?;
        let received = prom.sum(&received_query)?;
        // At least k of the 4+2 shards of every chunk (3 peers hold 6 shards by and by).
        (sent >= FILE_SIZE as f64 && received == sent).then_some((sent, received))
    });
    assert_eq!(
        received, sent,
        "what the mount sent is what the peers received"
    );
    // The shards went over bulk links, counted on both ends; none fell back to libp2p.
    let bulk = |event: &str, instance: &str| {
        prom.sum(&format!(
            "dfs_bulk_link_requests_total{{event=\"{event}\",instance=~\"{instance}\"}}"
        ))
    };
    let client_api = client.api_addr();
    wait_for(Duration::from_secs(30), "bulk link counts", || {
        let sent = bulk("sent", &client_api)?;
        let served = bulk("served", &holders)?;
        (sent >= 1.0 && served >= 1.0).then_some(())
    });
    assert_eq!(bulk("fallback", &client_api), None);
    for n in &nodes {
        let alive = prom.sum(&format!(
            "dfs_peers{{state=\"alive\",instance=\"{}\"}}",
            n.api_addr()
        ));
        assert_eq!(alive, Some(2.0), "peers alive seen by {}", n.api_addr());
        // The `--no-store` mount is a client: counted apart, never alive or dead.
        let clients = prom.sum(&format!(
            "dfs_peers{{state=\"client\",instance=\"{}\"}}",
            n.api_addr()
        ));
        assert_eq!(clients, Some(1.0), "clients seen by {}", n.api_addr());
        assert!(prom
            .sum(&format!(
                "dfs_storage_used_bytes{{instance=\"{}\"}}",
                n.api_addr()
            ))
            .is_some_and(|b| b > 0.0));
    }
    // 12 MiB in 4 MiB chunks: at least 3 chunks, whatever their health with 3 peers for 6
    // shards.
    let chunks = wait_for(Duration::from_secs(30), "chunk counts", || {
        prom.sum("dfs_chunks").filter(|c| *c >= 3.0)
    });
    assert!(chunks >= 3.0, "{chunks}");
    assert!(prom.sum("dfs_peer_rtt_seconds").is_some());
    assert!(prom.sum("dfs_memory_cache_bytes").is_some());
    assert!(prom.sum("dfs_memory_cache_misses_total").is_some());
    drop(mount);
    drop(peers);
}
