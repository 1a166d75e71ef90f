//! Prometheus metrics of this process, served as text at `/metrics` on the API listener.
//!
//! Two kinds of series:
//! - **Event counters and histograms**, kept in one process-wide registry ([`metrics`]) and
//!   bumped where things happen: FUSE operations and their latency, bytes through the mount,
//!   shard bytes to and from each peer, failed shard requests, ops taken into volume logs.
//! - **State**, read at scrape time from the peer's status ([`render`]): storage, peers by state
//!   and their RTT, chunk health, repair and scrub progress, the disk cache, op-log lengths.
//!
//! Names follow Prometheus conventions: a `dfs_` prefix, base units in the name (`_bytes`,
//! `_seconds`), `_total` on counters.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::net::{Network, NodeStatus};

/// The event series of this process.
pub struct Metrics {
    registry: Registry,
    pub fuse_operations: IntCounterVec,
    pub fuse_duration: HistogramVec,
    pub fuse_errors: IntCounterVec,
    pub fuse_read_bytes: IntCounter,
    pub fuse_written_bytes: IntCounter,
    pub shard_sent_bytes: IntCounterVec,
    pub shard_received_bytes: IntCounterVec,
    pub shard_request_failures: IntCounterVec,
    pub bulk_requests: IntCounterVec,
    pub memory_cache_hits: IntCounter,
    pub memory_cache_misses: IntCounter,
    pub memory_cache_bytes: prometheus::IntGauge,
    pub ops_received: IntCounterVec,
    pub bad_shards: IntCounterVec,
    /// Inbound libp2p requests refused before they were read: the inbound budget was spent.
    pub inbound_refused: IntCounter,
    pub replication_delay: prometheus::Histogram,
}

/// The process-wide metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn counter(name: &str, help: &str) -> IntCounter {
    // The names and help texts are constants of this module: a failure is a bug caught by the
    // tests, not an input error. An unregistrable metric still counts, it is just not served.
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
}

/// Drop the series labelled with `peer` (a peer forgotten from the table): a stranger that
/// comes with a new identity each time must not grow this peer's memory without bound.
pub fn forget_peer(peer: &libp2p::PeerId) {
    let label = peer.to_string();
    let m = metrics();
    for vec in [&m.shard_sent_bytes, &m.shard_received_bytes] {
        // Not there (never sent or received): nothing to drop.
        let _ = vec.remove_label_values(&[&label]);
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
}

impl Metrics {
    fn new() -> Self {
        let buckets = prometheus::exponential_buckets(0.000_05, 4.0, 10)
            .unwrap_or_else(|_| prometheus::DEFAULT_BUCKETS.to_vec());
        let fuse_duration = HistogramVec::new(
            HistogramOpts::new(
                "dfs_fuse_operation_duration_seconds",
                "Time to serve a FUSE operation, by operation",
            )
            .buckets(buckets),
            &["op"],
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        let delay_buckets = prometheus::exponential_buckets(0.001, 4.0, 10)
            .unwrap_or_else(|_| prometheus::DEFAULT_BUCKETS.to_vec());
        let replication_delay = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "dfs_oplog_replication_delay_seconds",
                "Time from an op's signing by its author to its arrival here (replication lag)",
            )
            .buckets(delay_buckets),
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        let m = Metrics {
            registry: Registry::new(),
            fuse_operations: counter_vec(
                "dfs_fuse_operations_total",
                "FUSE operations served, by operation",
                &["op"],
            ),
            fuse_duration,
            fuse_errors: counter_vec(
                "dfs_fuse_errors_total",
                "FUSE operations answered with an error, by errno",
                &["errno"],
            ),
            fuse_read_bytes: counter(
                "dfs_fuse_read_bytes_total",
                "Bytes read from files through the mount",
            ),
            fuse_written_bytes: counter(
                "dfs_fuse_written_bytes_total",
                "Bytes written to files through the mount",
            ),
            shard_sent_bytes: counter_vec(
                "dfs_shard_sent_bytes_total",
                "Shard bytes sent to a peer (stores by this peer, fetches served to it)",
                &["peer"],
            ),
            shard_received_bytes: counter_vec(
                "dfs_shard_received_bytes_total",
                "Shard bytes received from a peer (its stores here, fetches by this peer)",
                &["peer"],
            ),
            shard_request_failures: counter_vec(
                "dfs_shard_request_failures_total",
                "Shard requests to other peers that failed or were refused, by request kind",
                &["kind"],
            ),
            bulk_requests: counter_vec(
                "dfs_bulk_link_requests_total",
                "Shard requests on bulk links: sent by this peer, served by it, or sent over \
                 libp2p instead because the peer had no reachable bulk link (fallback)",
                &["event"],
            ),
            memory_cache_hits: counter(
                "dfs_memory_cache_hits_total",
                "Chunk reads answered by the memory cache of decrypted chunks",
            ),
            memory_cache_misses: counter(
                "dfs_memory_cache_misses_total",
                "Chunk reads the memory cache could not answer",
            ),
            memory_cache_bytes: prometheus::IntGauge::new(
                "dfs_memory_cache_bytes",
                "Bytes of decrypted chunks in the mount's memory cache",
            )
            .unwrap_or_else(|e| unreachable!("metric: {e}")),
            ops_received: counter_vec(
                "dfs_oplog_received_ops_total",
                "Ops of volume logs taken from peers, by how they came (gossip or pull)",
                &["via"],
            ),
            bad_shards: counter_vec(
                "dfs_bad_shards_total",
                "Shards from other peers that were not what their writer made: fetched ones that \
                 failed their checksum or recorded hash (fetched), stores that would have \
                 replaced a held shard with other bytes (overwrite)",
                &["event"],
            ),
            inbound_refused: counter(
                "dfs_inbound_refused_total",
                "Inbound libp2p requests refused before being read, because the requests being \
                 read already held all of this peer's inbound budget",
            ),
            replication_delay,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.fuse_operations.clone()),
            Box::new(m.fuse_duration.clone()),
            Box::new(m.fuse_errors.clone()),
            Box::new(m.fuse_read_bytes.clone()),
            Box::new(m.fuse_written_bytes.clone()),
            Box::new(m.shard_sent_bytes.clone()),
            Box::new(m.shard_received_bytes.clone()),
            Box::new(m.shard_request_failures.clone()),
            Box::new(m.bulk_requests.clone()),
            Box::new(m.inbound_refused.clone()),
            Box::new(m.memory_cache_hits.clone()),
            Box::new(m.memory_cache_misses.clone()),
            Box::new(m.memory_cache_bytes.clone()),
            Box::new(m.ops_received.clone()),
            Box::new(m.bad_shards.clone()),
            Box::new(m.replication_delay.clone()),
        ];
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric not registered");
            }
        }
        m
    }
}

/// Counts one FUSE operation and its latency when dropped.
pub struct FuseTimer {
    op: &'static str,
    start: Instant,
}

impl FuseTimer {
    pub fn start(op: &'static str) -> Self {
        FuseTimer {
            op,
            start: Instant::now(),
        }
    }
}

impl Drop for FuseTimer {
    fn drop(&mut self) {
        let m = metrics();
        m.fuse_operations.with_label_values(&[self.op]).inc();
        m.fuse_duration
            .with_label_values(&[self.op])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// A family of state series built at scrape time.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn gauge(name: &str, help: &str) -> Self {
        Family::new(name, help, MetricType::GAUGE)
    }

    /// Add a sample with these labels.
    fn sample(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        let mut metric = Metric::default();
        let pairs = labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name(k.to_string());
                pair.set_value(v.to_string());
                pair
            })
            .collect();
        metric.set_label(pairs);
        if self.0.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            metric.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            metric.set_gauge(g);
        }
        self.0.mut_metric().push(metric);
        self
    }

    fn one(self, value: f64) -> Self {
        self.sample(&[], value)
    }
}

/// The state series of the peer behind `net` whose status is `status` (`None`: not to be had).
async fn state_families(net: &Network, status: Option<NodeStatus>) -> Vec<MetricFamily> {
    state(net, status).await.into_iter().map(|f| f.0).collect()
}

/// Single-sample series: (name, help, kind, value).
type Single = (&'static str, &'static str, MetricType, f64);

const GAUGE: MetricType = MetricType::GAUGE;
const COUNTER: MetricType = MetricType::COUNTER;

/// The state series (tables of one sample each are kept one per line).
#[rustfmt::skip]
async fn state(net: &Network, status: Option<NodeStatus>) -> Vec<Family> {
    let mut out = Vec::new();
    let Some(status) = status else {
        return out;
    };
    let s = &status.storage;
    let mut singles: Vec<Single> = vec![
        (
            "dfs_uptime_seconds",
            "Seconds since the peer started",
            GAUGE,
            status.uptime_secs,
        ),
        (
            "dfs_storage_capacity_bytes",
            "Bytes this peer offers to store for others",
            GAUGE,
            s.capacity as f64,
        ),
        (
            "dfs_storage_used_bytes",
            "Bytes of other peers' shards held here",
            GAUGE,
            s.used as f64,
        ),
        (
            "dfs_storage_free_bytes",
            "Bytes still offered (capacity left, bounded by the disk)",
            GAUGE,
            s.free as f64,
        ),
        (
            "dfs_shards_stored",
            "Shards of other peers held here",
            GAUGE,
            s.shards_held as f64,
        ),
        (
            "dfs_disk_total_bytes",
            "Size of the disk holding the data directory",
            GAUGE,
            s.disk_total as f64,
        ),
        (
            "dfs_disk_free_bytes",
            "Free bytes on the disk holding the data directory",
            GAUGE,
            s.disk_free as f64,
        ),
    ];
    let p = &status.peers;
    out.push(
        Family::gauge(
            "dfs_peers",
            "Known peers, by health state (clients, which hold nothing for others, apart)",
        )
        .sample(&[("state", "alive")], p.alive as f64)
        .sample(&[("state", "suspect")], p.suspect as f64)
        .sample(&[("state", "dead")], p.dead as f64)
        .sample(&[("state", "client")], p.clients as f64),
    );
    if let Ok(peers) = net.peers().await {
        let mut rtt = Family::gauge(
            "dfs_peer_rtt_seconds",
            "Last ping round-trip time to each peer",
        );
        for view in peers {
            if let Some(ms) = view.rtt_ms {
                rtt = rtt.sample(&[("peer", &view.id)], ms / 1000.0);
            }
        }
        out.push(rtt);
    }
    if let Some(pl) = &status.placement {
        let healthy = pl.chunks.saturating_sub(pl.degraded + pl.lost);
        out.push(
            Family::gauge(
                "dfs_chunks",
                "Chunks this peer wrote and looks after, by health",
            )
            .sample(&[("state", "healthy")], healthy as f64)
            .sample(&[("state", "degraded")], pl.degraded as f64)
            .sample(&[("state", "lost")], pl.lost as f64),
        );
        singles.extend([
            (
                "dfs_repair_rebuilt_shards_total",
                "Shards rebuilt onto live peers",
                COUNTER,
                pl.rebuilt as f64,
            ),
            (
                "dfs_rebalance_moved_shards_total",
                "Shards moved toward their placement targets",
                COUNTER,
                pl.moved as f64,
            ),
            (
                "dfs_repair_dropped_shards_total",
                "Surplus shards deleted",
                COUNTER,
                pl.dropped as f64,
            ),
            (
                "dfs_repair_written_bytes_total",
                "Bytes written by rebuilds and moves",
                COUNTER,
                pl.repair_bytes as f64,
            ),
            (
                "dfs_scrub_checked_shards_total",
                "Stored shards re-verified by scrubbing",
                COUNTER,
                pl.scrubbed as f64,
            ),
            (
                "dfs_scrub_corrupt_shards_total",
                "Shards scrubbing found missing or corrupt",
                COUNTER,
                pl.corrupt_found as f64,
            ),
            (
                "dfs_repair_rounds_total",
                "Repair rounds run",
                COUNTER,
                pl.rounds as f64,
            ),
            (
                "dfs_repair_full_passes_total",
                "Repair rounds that looked at every chunk",
                COUNTER,
                pl.full_passes as f64,
            ),
            (
                "dfs_repair_pending_shards",
                "Rebuilds, moves and drops left for later rounds",
                GAUGE,
                pl.pending as f64,
            ),
            (
                "dfs_repair_last_round_seconds",
                "How long the last repair round took",
                GAUGE,
                pl.last_round_ms as f64 / 1000.0,
            ),
        ]);
        if let Some(c) = &pl.disk_cache {
            singles.extend([
                (
                    "dfs_disk_cache_bytes",
                    "Bytes of chunks in the disk cache",
                    GAUGE,
                    c.bytes as f64,
                ),
                (
                    "dfs_disk_cache_limit_bytes",
                    "Most bytes the disk cache may hold",
                    GAUGE,
                    c.limit as f64,
                ),
                (
                    "dfs_disk_cache_hits_total",
                    "Chunk reads answered by the disk cache",
                    COUNTER,
                    c.hits as f64,
                ),
                (
                    "dfs_disk_cache_misses_total",
                    "Chunk reads the disk cache could not answer",
                    COUNTER,
                    c.misses as f64,
                ),
            ]);
        }
    }
    out.extend(
        singles
            .into_iter()
            .map(|(name, help, kind, value)| Family::new(name, help, kind).one(value)),
    );
    let hub = std::sync::Arc::clone(net.ops());
    let logs = tokio::task::spawn_blocking(move || crate::volumes::list(&hub)).await;
    if let Ok(Ok(volumes)) = logs {
        let mut ops = Family::gauge("dfs_oplog_ops", "Ops held in each volume's log");
        let mut members = Family::gauge("dfs_volume_members", "Members of each volume");
        for v in volumes {
            ops = ops.sample(&[("volume", &v.name)], v.ops as f64);
            members = members.sample(&[("volume", &v.name)], v.members as f64);
        }
        out.push(ops);
        out.push(members);
    }
    out
}

/// The `/metrics` page: every series in the Prometheus text format (`status`: the peer's
/// status with its placement health, read by the caller).
pub async fn render(net: &Network, status: Option<NodeStatus>) -> String {
    let mut families = metrics().registry.gather();
    families.extend(state_families(net, status).await);
    // An empty family (no volume, no peer with an RTT yet) is not valid in the text format.
    families.retain(|f| !f.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_peer_leaves_no_series() {
        let m = metrics();
        let peer = libp2p::PeerId::random();
        let label = peer.to_string();
        m.shard_sent_bytes.with_label_values(&[&label]).inc_by(7);
        let page = |m: &Metrics| {
            let mut out = Vec::new();
            TextEncoder::new()
                .encode(&m.registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(page(m).contains(&label));
        forget_peer(&peer);
        assert!(!page(m).contains(&label));
        forget_peer(&peer);
    }

    #[test]
    fn event_series_are_registered_and_render_in_text_format() {
        let m = metrics();
        m.fuse_written_bytes.inc_by(5);
        {
            let _t = FuseTimer::start("write");
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("# TYPE dfs_fuse_written_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("dfs_fuse_operations_total{op=\"write\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dfs_fuse_operation_duration_seconds_bucket{op=\"write\""),
            "{text}"
        );
    }

    #[test]
    fn state_families_encode_with_labels() {
        let f = Family::gauge("dfs_peers", "help")
            .sample(&[("state", "alive")], 3.0)
            .sample(&[("state", "dead")], 1.0);
        let mut out = Vec::new();
        TextEncoder::new().encode(&[f.0], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("dfs_peers{state=\"alive\"} 3"), "{text}");
        assert!(text.contains("dfs_peers{state=\"dead\"} 1"), "{text}");
    }
}
