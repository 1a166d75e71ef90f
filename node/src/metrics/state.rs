//! The state series of `/metrics`, read at scrape time from the running peer (its status,
//! peers and volumes), and the page that puts them together with the event series of
//! [`super::metrics`]. Apart from the registry so that the counters, which the network bumps,
//! do not depend on the network.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use super::metrics;
use crate::net::{Network, NodeStatus};

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
