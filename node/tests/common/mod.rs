//! Helpers shared by the node's integration tests.

use std::time::Duration;

use dfs_node::testing::Network;
use libp2p::Multiaddr;

/// The TCP address `net` listens on, once it listens.
pub async fn tcp_address(net: &Network) -> Multiaddr {
    for _ in 0..200 {
        let status = net.status().await.expect("status");
        if let Some(a) = status.addresses.iter().find(|a| a.contains("/tcp/")) {
            return a.parse().expect("multiaddr");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("peer never listened");
}
