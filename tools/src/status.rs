//! `dfs status` and `dfs peers`: what the peer running on a data directory says about itself
//! and the peers it knows, as text for people or as the API's JSON.

use std::path::Path;

use anyhow::Result;
use dfs_node::{NodeStatus, PeerView};

use crate::api_client::api_get;
use crate::units::{human_bytes, human_duration};

/// `dfs status`
pub fn status(data: &Path, json: bool) -> Result<()> {
    let s: NodeStatus = api_get(data, "/v1/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("peer      {}", s.id);
    println!("version   {}   zone {}", s.version, s.zone);
    println!(
        "uptime    {}   role {}",
        human_duration(s.uptime_secs),
        if s.client {
            "client (holds no shards for others)"
        } else {
            "storage"
        }
    );
    for (i, addr) in s.addresses.iter().enumerate() {
        println!("{}{addr}", if i == 0 { "addresses " } else { "          " });
    }
    if let Some(fingerprint) = &s.network_key {
        println!("network   private (key fingerprint {fingerprint})");
    }
    if let Some(b) = &s.bulk {
        println!(
            "bulk      {} ({} shard requests sent, {} served, {} to peers without bulk links)",
            if b.addresses.is_empty() {
                "no listener (no TCP listen address)".to_string()
            } else {
                b.addresses.join(", ")
            },
            b.sent,
            b.served,
            b.fallbacks
        );
    }
    println!(
        "storage   {} used by {} shards of other peers, {} free of {} offered (disk: {} free of {})",
        human_bytes(s.storage.used),
        s.storage.shards_held,
        human_bytes(s.storage.free),
        human_bytes(s.storage.capacity),
        human_bytes(s.storage.disk_free),
        human_bytes(s.storage.disk_total)
    );
    println!(
        "peers     {} alive, {} suspect, {} dead; {} clients",
        s.peers.alive, s.peers.suspect, s.peers.dead, s.peers.clients
    );
    match &s.placement {
        Some(p) if p.chunks == 0 && s.peers.alive == 0 => {
            println!("chunks    kept in the local store (no other peer to spread them over yet)")
        }
        Some(p) if p.chunks == 0 => {
            println!("chunks    none written by this peer");
            print_steward(&p.steward);
        }
        Some(p) => print_placement(p),
        None => {}
    }
    Ok(())
}

/// `dfs peers`
pub fn peers(data: &Path, json: bool) -> Result<()> {
    let peers: Vec<PeerView> = api_get(data, "/v1/peers")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers known yet");
        return Ok(());
    }
    println!(
        "{:<54} {:<8} {:>8} {:>9} {:<10} {:>10} {:>6}",
        "PEER", "STATE", "RTT ms", "SEEN", "ZONE", "FREE", "SCORE"
    );
    for p in peers {
        println!(
            "{:<54} {:<8} {:>8} {:>9} {:<10} {:>10} {:>6.2}",
            p.id,
            if p.client {
                "client".to_string()
            } else {
                p.state.to_string()
            },
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2}")),
            format!("{}s ago", p.last_seen_secs.round()),
            p.zone.as_deref().unwrap_or("-"),
            p.free.map_or("-".into(), human_bytes),
            p.score
        );
    }
    Ok(())
}

fn print_placement(p: &dfs_node::PlacementStatus) {
    let healthy = p.chunks.saturating_sub(p.degraded + p.lost);
    println!(
        "chunks    {} written here: {healthy} healthy, {} degraded, {} lost{}",
        p.chunks,
        p.degraded,
        p.lost,
        if p.crowded > 0 {
            format!(
                " ({} on fewer peers than shards: add peers to spread them)",
                p.crowded
            )
        } else {
            String::new()
        }
    );
    println!(
            "repair    {} shards rebuilt, {} moved, {} dropped ({}), {} pending; scrub: {} checked, {} bad",
            p.rebuilt,
            p.moved,
            p.dropped,
            human_bytes(p.repair_bytes),
            p.pending,
            p.scrubbed,
            p.corrupt_found
        );
    if let Some(e) = &p.last_error {
        println!("          last repair round failed: {e}");
    }
    print_steward(&p.steward);
}

/// What this peer did for chunks it holds for others (see `cluster::steward`).
fn print_steward(st: &dfs_node::StewardStatus) {
    if st.passes == 0 {
        return;
    }
    println!(
        "steward   {} passes over held chunks: {} looked after, {} shards rebuilt ({}); last pass: {} lost, {} deferred",
        st.passes,
        st.stewarded,
        st.rebuilt,
        human_bytes(st.rebuilt_bytes),
        st.lost,
        st.deferred
    );
}
