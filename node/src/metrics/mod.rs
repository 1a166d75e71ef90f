//! Prometheus metrics of this process, served as text at `/metrics` on the API listener.
//!
//! Two kinds of series:
//! - **Event counters and histograms**, kept in one process-wide registry ([`metrics`]) and
//!   bumped where things happen: FUSE operations and their latency, bytes through the mount,
//!   shard bytes to and from each peer, failed shard requests, ops taken into volume logs.
//! - **State**, read at scrape time from the peer's status ([`state::render`]): storage, peers by state
//!   and their RTT, chunk health, repair and scrub progress, the disk cache, op-log lengths.
//!
//! Names follow Prometheus conventions: a `dfs_` prefix, base units in the name (`_bytes`,
//! `_seconds`), `_total` on counters.

pub mod state;

use std::sync::OnceLock;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

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
}
