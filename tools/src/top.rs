//! `dfs top`: a live view of the peer running on a data directory.
//!
//! Each interval it scrapes the peer's Prometheus page (`GET /metrics`, no token; see
//! docs/monitoring.md) and its status (`/v1/status`, for the id), and draws one frame from the
//! last two scrapes: rates come from counter deltas, latency quantiles from histogram bucket
//! deltas, the rest from gauges. Pure parts ([`parse`], [`rate`], [`quantile`], [`render`]) are
//! unit-tested on fixed pages; [`run`] only fetches, sleeps and prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dfs_node::ApiEndpoint;
use dfs_node::NodeStatus;

use crate::units::human_bytes;

/// One sample line of a Prometheus text page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed Prometheus page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub samples: Vec<Sample>,
}

impl Page {
    /// The samples of series `name`.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of `name` with no labels (or its first sample), if present.
    fn value(&self, name: &str) -> Option<f64> {
        self.series(name).next().map(|s| s.value)
    }

    /// The sum of `name` over all its label sets (0 when absent).
    fn sum(&self, name: &str) -> f64 {
        // A fold from +0.0: `Sum` of no floats is -0.0, which prints as `-0.0`.
        self.series(name).fold(0.0, |sum, s| sum + s.value)
    }

    /// `name` by the value of its label `key`, summing samples that share it.
    fn by_label(&self, name: &str, key: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.series(name) {
            if let Some(v) = s.label(key) {
                *out.entry(v.to_string()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The cumulative buckets `(le, count)` of histogram `name` where label `key` is `value`.
    fn buckets(&self, name: &str, key: &str, value: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        self.series(&bucket)
            .filter(|s| s.label(key) == Some(value))
            .filter_map(|s| Some((parse_value(s.label("le")?)?, s.value)))
            .collect()
    }
}

/// Parse the Prometheus text exposition format: `name{label="value",...} value [timestamp]`.
/// Comments, blank lines and any line this parser does not understand are skipped.
pub fn parse(text: &str) -> Page {
    Page {
        samples: text.lines().filter_map(parse_line).collect(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional integer timestamp may follow; anything else makes the line suspect.
    match fields.next() {
        None => {}
        Some(ts) if ts.parse::<i64>().is_ok() && fields.next().is_none() => {}
        Some(_) => return None,
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels after the `{`, up to and including the `}`; returns them and what follows.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Per-second rate of a counter that went from `before` to `after` in `secs`; a counter that
/// went down was reset (the peer restarted), so everything since counts.
pub fn rate(before: f64, after: f64, secs: f64) -> f64 {
    if secs <= 0.0 || !before.is_finite() || !after.is_finite() {
        return 0.0;
    }
    let delta = if after >= before {
        after - before
    } else {
        after
    };
    delta / secs
}

/// The `q` quantile (0..=1) of the observations counted by cumulative histogram buckets
/// `(upper bound, count)`, interpolating linearly inside the bucket it falls in, as
/// Prometheus's `histogram_quantile` does. `None` with no observations. A quantile in the
/// `+Inf` bucket is reported as the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, n)| !le.is_nan() && n.is_finite())
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in &b {
        if count >= rank && count > below {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below) / (count - below);
            return Some(lower + (le - lower) * within.clamp(0.0, 1.0));
        }
        (lower, below) = (if le.is_finite() { le } else { lower }, count);
    }
    Some(lower)
}

/// Cumulative buckets of the observations between two scrapes (a reset counts from zero).
pub fn bucket_deltas(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let reset = after
        .iter()
        .any(|(le, n)| before.iter().any(|(l, m)| l == le && n < m));
    after
        .iter()
        .map(|&(le, n)| {
            let prior = if reset {
                0.0
            } else {
                before
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |&(_, m)| m)
            };
            (le, n - prior)
        })
        .collect()
}

/// How many of the busiest FUSE operations a frame lists.
const TOP_OPS: usize = 6;
/// How many of the slowest peers a frame lists.
const SLOW_PEERS: usize = 3;

/// One frame from two scrapes `secs` apart (and the peer's status, for its id).
pub fn render(before: &Page, after: &Page, secs: f64, status: Option<&NodeStatus>) -> String {
    let mut f = String::new();
    let counter = |name: &str| rate(before.sum(name), after.sum(name), secs);
    let per_sec = |bytes: f64| format!("{}/s", human_bytes(bytes.max(0.0) as u64));

    // Header.
    let id = status.map_or("?".to_string(), |s| s.id.clone());
    let uptime = after
        .value("dfs_uptime_seconds")
        .or(status.map(|s| s.uptime_secs))
        .map_or("?".to_string(), human_duration);
    let _ = writeln!(
        f,
        "dfs top: peer {id}  up {uptime}  (rates over {secs:.1}s)"
    );

    // Throughput.
    let _ = writeln!(
        f,
        "mount     read {}  write {}",
        per_sec(counter("dfs_fuse_read_bytes_total")),
        per_sec(counter("dfs_fuse_written_bytes_total"))
    );
    let _ = writeln!(
        f,
        "shards    sent {}  received {}  failed requests {:.1}/s",
        per_sec(counter("dfs_shard_sent_bytes_total")),
        per_sec(counter("dfs_shard_received_bytes_total")),
        counter("dfs_shard_request_failures_total")
    );

    // FUSE operations.
    let ops_before = before.by_label("dfs_fuse_operations_total", "op");
    let mut ops: Vec<(String, f64)> = after
        .by_label("dfs_fuse_operations_total", "op")
        .into_iter()
        .map(|(op, n)| {
            let r = rate(ops_before.get(&op).copied().unwrap_or(0.0), n, secs);
            (op, r)
        })
        .collect();
    let total_ops = ops.iter().fold(0.0, |sum, (_, r)| sum + r);
    let _ = writeln!(
        f,
        "fuse      {total_ops:.1} ops/s  errors {:.1}/s",
        counter("dfs_fuse_errors_total")
    );
    ops.retain(|(_, r)| *r > 0.0);
    ops.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if !ops.is_empty() {
        let _ = writeln!(
            f,
            "  {:<12} {:>10} {:>9} {:>9}",
            "OP", "OPS/S", "P50", "P99"
        );
    }
    const HIST: &str = "dfs_fuse_operation_duration_seconds";
    for (op, r) in ops.iter().take(TOP_OPS) {
        let deltas = bucket_deltas(
            &before.buckets(HIST, "op", op),
            &after.buckets(HIST, "op", op),
        );
        let q = |p| quantile(p, &deltas).map_or("-".to_string(), human_secs);
        let _ = writeln!(f, "  {op:<12} {r:>10.1} {:>9} {:>9}", q(0.5), q(0.99));
    }

    // Peers.
    let states = after.by_label("dfs_peers", "state");
    let state = |s: &str| states.get(s).copied().unwrap_or(0.0) as u64;
    let _ = writeln!(
        f,
        "peers     {} alive, {} suspect, {} dead; {} clients",
        state("alive"),
        state("suspect"),
        state("dead"),
        state("client")
    );
    let mut rtts: Vec<(String, f64)> = after
        .by_label("dfs_peer_rtt_seconds", "peer")
        .into_iter()
        .collect();
    rtts.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if !rtts.is_empty() {
        let slowest: Vec<String> = rtts
            .iter()
            .take(SLOW_PEERS)
            .map(|(p, s)| format!("{} {}", short_id(p), human_secs(*s)))
            .collect();
        let _ = writeln!(f, "          slowest RTT: {}", slowest.join(", "));
    }

    // Caches.
    let ratio = |hits: &str, misses: &str| {
        let (h, m) = (after.sum(hits), after.sum(misses));
        if h + m > 0.0 {
            format!("{:.1}% hit", 100.0 * h / (h + m))
        } else {
            "no reads".to_string()
        }
    };
    let mut cache = format!(
        "cache     memory {}  disk {}",
        ratio(
            "dfs_memory_cache_hits_total",
            "dfs_memory_cache_misses_total"
        ),
        ratio("dfs_disk_cache_hits_total", "dfs_disk_cache_misses_total")
    );
    if let (Some(used), Some(limit)) = (
        after.value("dfs_disk_cache_bytes"),
        after.value("dfs_disk_cache_limit_bytes"),
    ) {
        let _ = write!(
            cache,
            " ({} of {})",
            human_bytes(used as u64),
            human_bytes(limit as u64)
        );
    }
    let _ = writeln!(f, "{cache}");

    // Storage.
    let bytes = |name: &str| {
        after
            .value(name)
            .map_or("?".to_string(), |v| human_bytes(v as u64))
    };
    let _ = writeln!(
        f,
        "storage   {} used of {} offered, {} free; {} shards held; disk {} free of {}",
        bytes("dfs_storage_used_bytes"),
        bytes("dfs_storage_capacity_bytes"),
        bytes("dfs_storage_free_bytes"),
        after.value("dfs_shards_stored").unwrap_or(0.0) as u64,
        bytes("dfs_disk_free_bytes"),
        bytes("dfs_disk_total_bytes")
    );

    // Chunks and repair.
    let chunks = after.by_label("dfs_chunks", "state");
    if chunks.is_empty() {
        let _ = writeln!(f, "chunks    none spread over the network by this peer");
    } else {
        let c = |s: &str| chunks.get(s).copied().unwrap_or(0.0) as u64;
        let _ = writeln!(
            f,
            "chunks    {} healthy, {} degraded, {} lost",
            c("healthy"),
            c("degraded"),
            c("lost")
        );
    }
    let _ = writeln!(
        f,
        "repair    {} pending  rebuilt {:.1}/s  moved {:.1}/s  written {}",
        after.value("dfs_repair_pending_shards").unwrap_or(0.0) as u64,
        counter("dfs_repair_rebuilt_shards_total"),
        counter("dfs_rebalance_moved_shards_total"),
        per_sec(counter("dfs_repair_written_bytes_total"))
    );

    // Volumes.
    let logs = after.by_label("dfs_oplog_ops", "volume");
    if logs.is_empty() {
        let _ = writeln!(f, "volumes   none");
    } else {
        let logs: Vec<String> = logs
            .iter()
            .map(|(v, n)| format!("{} {} ops", short_id(v), *n as u64))
            .collect();
        let _ = writeln!(f, "volumes   {}", logs.join(", "));
    }
    f
}

/// A long id as its head and tail (`12D3Ko…x7Yq`); short ones as they are.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return id.to_string();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// Seconds for people: `85µs`, `2.4ms`, `1.30s`.
fn human_secs(s: f64) -> String {
    if s < 0.001 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Set by SIGINT/SIGTERM: the live view stops at the next tick.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Hides the cursor while the live view runs and shows it again however the view ends.
struct CursorGuard;

impl CursorGuard {
    fn hide() -> Self {
        print!("\x1b[?25l");
        let _ = std::io::stdout().flush();
        CursorGuard
    }
}

impl Drop for CursorGuard {
    fn drop(&mut self) {
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
}

/// One scrape: the status (which also says clearly when no peer runs) and the metrics page.
fn scrape(data: &Path) -> Result<(NodeStatus, Page)> {
    let status: NodeStatus = crate::api_client::api_get(data, "/v1/status")?;
    let endpoint = ApiEndpoint::load(data)
        .with_context(|| format!("cannot read {}", data.join(dfs_node::API_FILE).display()))?;
    let url = format!("{}/metrics", endpoint.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let text = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot read the peer's metrics at {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the peer's metrics at {url}"))?;
    Ok((status, parse(&text)))
}

/// Sleep `d`, waking early when a signal asked to stop; false if so.
fn nap(d: Duration) -> bool {
    let until = Instant::now() + d;
    while !STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    false
}

/// `dfs top`: draw a frame every `interval` until Ctrl-C, or print one (`once`).
pub fn run(data: &Path, interval: f64, once: bool) -> Result<ExitCode> {
    if !(interval.is_finite() && interval >= 0.1) {
        bail!("--interval must be at least 0.1 seconds, got {interval}");
    }
    let interval = Duration::from_secs_f64(interval);
    let (_, mut before) = scrape(data)?;
    let mut at = Instant::now();
    if !once {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // function pointer stays valid for the life of the process.
        unsafe {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }
    let _cursor = (!once).then(CursorGuard::hide);
    let mut first = true;
    loop {
        if !nap(interval) {
            break;
        }
        let (status, after) = scrape(data)?;
        let now = Instant::now();
        let frame = render(
            &before,
            &after,
            now.duration_since(at).as_secs_f64(),
            Some(&status),
        );
        let mut out = std::io::stdout().lock();
        if once {
            out.write_all(frame.as_bytes())?;
            break;
        }
        // Clear once, then home, each line cleared to its end and the rest of the screen:
        // redrawing in place does not flicker.
        let mut screen = String::from(if first { "\x1b[2J\x1b[H" } else { "\x1b[H" });
        first = false;
        for line in frame.lines() {
            screen.push_str(line);
            screen.push_str("\x1b[K\n");
        }
        screen.push_str("(Ctrl-C quits)\x1b[K\n\x1b[J");
        out.write_all(screen.as_bytes())?;
        out.flush()?;
        (before, at) = (after, now);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP dfs_fuse_operations_total FUSE operations served, by operation
# TYPE dfs_fuse_operations_total counter
dfs_fuse_operations_total{op="read"} 100
dfs_fuse_operations_total{op="write"} 1000
dfs_fuse_operations_total{op="getattr"} 50
dfs_fuse_operation_duration_seconds_bucket{op="write",le="0.001"} 900
dfs_fuse_operation_duration_seconds_bucket{op="write",le="0.01"} 1000
dfs_fuse_operation_duration_seconds_bucket{op="write",le="+Inf"} 1000
dfs_fuse_operation_duration_seconds_sum{op="write"} 2
dfs_fuse_operation_duration_seconds_count{op="write"} 1000
dfs_fuse_errors_total{errno="ENOENT"} 3
dfs_fuse_read_bytes_total 0
dfs_fuse_written_bytes_total 1048576
dfs_shard_sent_bytes_total{peer="12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} 0
dfs_shard_sent_bytes_total{peer="12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"} 0
dfs_memory_cache_hits_total 3
dfs_memory_cache_misses_total 1
dfs_repair_rebuilt_shards_total 10
dfs_uptime_seconds 3600
"#;

    const AFTER: &str = r#"# HELP dfs_fuse_operations_total FUSE operations served, by operation
dfs_fuse_operations_total{op="read"} 100
dfs_fuse_operations_total{op="write"} 1200
dfs_fuse_operations_total{op="getattr"} 60
dfs_fuse_operation_duration_seconds_bucket{op="write",le="0.001"} 1000
dfs_fuse_operation_duration_seconds_bucket{op="write",le="0.01"} 1200
dfs_fuse_operation_duration_seconds_bucket{op="write",le="+Inf"} 1200
dfs_fuse_errors_total{errno="ENOENT"} 5
dfs_fuse_read_bytes_total 0
dfs_fuse_written_bytes_total 5242880
dfs_shard_sent_bytes_total{peer="12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} 1048576
dfs_shard_sent_bytes_total{peer="12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"} 3145728
dfs_shard_received_bytes_total{peer="12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} 0
dfs_memory_cache_hits_total 9
dfs_memory_cache_misses_total 1
dfs_disk_cache_bytes 1048576
dfs_disk_cache_limit_bytes 1073741824
dfs_storage_capacity_bytes 10737418240
dfs_storage_used_bytes 2147483648
dfs_storage_free_bytes 8589934592
dfs_shards_stored 42
dfs_disk_total_bytes 107374182400
dfs_disk_free_bytes 53687091200
dfs_peers{state="alive"} 2
dfs_peers{state="suspect"} 1
dfs_peers{state="dead"} 0
dfs_peer_rtt_seconds{peer="12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} 0.0042
dfs_peer_rtt_seconds{peer="12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"} 0.0005
dfs_chunks{state="healthy"} 120
dfs_chunks{state="degraded"} 2
dfs_chunks{state="lost"} 0
dfs_repair_pending_shards 4
dfs_repair_rebuilt_shards_total 14
dfs_oplog_ops{volume="photos"} 17
dfs_uptime_seconds 3602
"#;

    #[test]
    fn parses_names_labels_values() {
        let page = parse(
            "# HELP x y\n\
             plain 1.5\n\
             with_ts 2 1700000000000\n\
             lab{a=\"1\",b=\"two words\",} 3\n\
             esc{p=\"q\\\"uote\\\\back\\nline\"} -4e-3\n\
             inf{le=\"+Inf\"} +Inf\n\
             nan NaN\n\
             spaced { a = \"x\" , b=\"y\" } 7\n",
        );
        let got: Vec<(&str, f64)> = page
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.value))
            .collect();
        assert_eq!(got[0], ("plain", 1.5));
        assert_eq!(got[1], ("with_ts", 2.0));
        assert_eq!(got[2], ("lab", 3.0));
        assert_eq!(
            page.samples[2].labels,
            vec![("a".into(), "1".into()), ("b".into(), "two words".into())]
        );
        assert_eq!(page.samples[3].label("p"), Some("q\"uote\\back\nline"));
        assert_eq!(page.samples[3].value, -0.004);
        assert_eq!(page.samples[4].value, f64::INFINITY);
        assert_eq!(page.samples[4].label("le"), Some("+Inf"));
        assert!(page.samples[5].value.is_nan());
        assert_eq!(page.samples[6].label("b"), Some("y"));
        assert_eq!(page.samples.len(), 7);
    }

    #[test]
    fn skips_what_it_does_not_understand() {
        let page = parse(
            "\n   \n# TYPE x counter\n\
             good 1\n\
             no_value\n\
             bad_value abc\n\
             {no_name=\"x\"} 1\n\
             9starts_with_digit 1\n\
             open{a=\"x\" 1\n\
             unquoted{a=x} 1\n\
             extra 1 2 3\n\
             weird_ts 1 soon\n\
             ünïcode 1\n\
             also_good{x=\"ü\"} 2\n",
        );
        let names: Vec<&str> = page.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good", "also_good"]);
        assert_eq!(page.samples[1].label("x"), Some("ü"));
        assert_eq!(parse("").samples, vec![]);
    }

    #[test]
    fn rates_from_counters() {
        assert_eq!(rate(100.0, 300.0, 2.0), 100.0);
        assert_eq!(rate(5.0, 5.0, 1.0), 0.0);
        // A reset (restart): everything since counts.
        assert_eq!(rate(1000.0, 30.0, 1.0), 30.0);
        assert_eq!(rate(1.0, 2.0, 0.0), 0.0);
        assert_eq!(rate(f64::NAN, 2.0, 1.0), 0.0);
    }

    #[test]
    fn quantiles_from_buckets() {
        // 100 observations: 50 <= 1ms, 40 in (1ms, 10ms], 10 in (10ms, 100ms].
        let b = [
            (0.001, 50.0),
            (0.01, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &b), Some(0.001));
        let p25 = quantile(0.25, &b).unwrap();
        assert!((p25 - 0.0005).abs() < 1e-12, "{p25}");
        let p70 = quantile(0.7, &b).unwrap();
        assert!((p70 - 0.0055).abs() < 1e-12, "{p70}");
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.091).abs() < 1e-12, "{p99}");
        // Order does not matter; empty and all-zero histograms have no quantile.
        let mut shuffled = b;
        shuffled.reverse();
        assert_eq!(quantile(0.5, &shuffled), Some(0.001));
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        // Beyond the last finite bound: that bound.
        let tail = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &tail), Some(0.1));
        // Empty leading buckets are skipped, not interpolated into.
        let late = [(0.001, 0.0), (0.01, 0.0), (0.1, 4.0), (f64::INFINITY, 4.0)];
        let p50 = quantile(0.5, &late).unwrap();
        assert!((p50 - 0.055).abs() < 1e-12, "{p50}");
    }

    #[test]
    fn bucket_deltas_subtract_and_reset() {
        let before = [(0.001, 900.0), (0.01, 1000.0), (f64::INFINITY, 1000.0)];
        let after = [(0.001, 1000.0), (0.01, 1200.0), (f64::INFINITY, 1200.0)];
        assert_eq!(
            bucket_deltas(&before, &after),
            vec![(0.001, 100.0), (0.01, 200.0), (f64::INFINITY, 200.0)]
        );
        // A restart between scrapes: the new counts are the deltas.
        let restarted = [(0.001, 1.0), (0.01, 2.0), (f64::INFINITY, 2.0)];
        assert_eq!(bucket_deltas(&before, &restarted), restarted.to_vec());
        // A series new since the last scrape.
        assert_eq!(bucket_deltas(&[], &after), after.to_vec());
    }

    #[test]
    fn frame_of_two_pages() {
        let frame = render(&parse(BEFORE), &parse(AFTER), 2.0, None);
        let expected = "\
dfs top: peer ?  up 1h00m  (rates over 2.0s)
mount     read 0 B/s  write 2.0 MiB/s
shards    sent 2.0 MiB/s  received 0 B/s  failed requests 0.0/s
fuse      105.0 ops/s  errors 1.0/s
  OP                OPS/S       P50       P99
  write             100.0     1.0ms     9.8ms
  getattr             5.0         -         -
peers     2 alive, 1 suspect, 0 dead; 0 clients
          slowest RTT: 12D3Ko…AAAAAA 4.2ms, 12D3Ko…BBBBBB 500µs
cache     memory 90.0% hit  disk no reads (1.0 MiB of 1.0 GiB)
storage   2.0 GiB used of 10.0 GiB offered, 8.0 GiB free; 42 shards held; disk 50.0 GiB free of 100.0 GiB
chunks    120 healthy, 2 degraded, 0 lost
repair    4 pending  rebuilt 2.0/s  moved 0.0/s  written 0 B/s
volumes   photos 17 ops
";
        assert_eq!(frame, expected, "got:\n{frame}");
    }

    #[test]
    fn frame_of_an_idle_peer() {
        let page = parse("dfs_uptime_seconds 5\ndfs_peers{state=\"alive\"} 0\n");
        let status: NodeStatus = serde_json::from_value(serde_json::json!({
            "id": "12D3KooWTEST", "version": "0.1.0", "zone": "default", "addresses": [],
            "uptime_secs": 5.0,
            "storage": {"capacity": 0, "free": 0, "used": 0, "shards_held": 0,
                        "disk_total": 0, "disk_free": 0},
            "peers": {"alive": 0, "suspect": 0, "dead": 0}
        }))
        .unwrap();
        let frame = render(&page, &page, 1.0, Some(&status));
        assert!(
            frame.starts_with("dfs top: peer 12D3KooWTEST  up 5s"),
            "{frame}"
        );
        assert!(
            frame.contains("fuse      0.0 ops/s  errors 0.0/s\npeers"),
            "{frame}"
        );
        assert!(frame.contains("chunks    none spread"), "{frame}");
        assert!(frame.contains("volumes   none"), "{frame}");
        assert!(frame.contains("storage   ? used"), "{frame}");
    }
}
