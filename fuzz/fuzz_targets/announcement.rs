//! Fuzzes membership announcements from the gossip topic (`node/src/net/peers.rs`):
//! `Announcement::decode`, which also refuses what no honest peer sends.
#![no_main]

use dfs_node::testing::peers::Announcement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announcement::decode(data) {
        let again = a.encode().expect("a decoded announcement encodes");
        assert_eq!(Announcement::decode(&again).expect("re-decodes"), a);
        // The table dials what the addresses say.
        for addr in &a.addrs {
            if let Ok(addr) = dfs_node::testing::parse_addr("announced address", addr) {
                let _ = dfs_node::testing::peer_of(&addr);
            }
        }
    }
});
