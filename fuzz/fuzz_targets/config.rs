//! Fuzzes the config file (`node/src/config.rs`): `Config::parse` of `DATA/config.toml` (TOML,
//! then the checks of the settings against each other), the addresses it lists, and the round
//! trip through TOML.
#![no_main]

use std::path::Path;

use dfs_node::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("config.toml")) else {
        return;
    };
    let again = toml::to_string(&config).expect("a parsed config serialises");
    assert_eq!(
        Config::parse(&again, Path::new("again.toml")).expect("re-parses"),
        config
    );
    let n = &config.network;
    for addr in n.listen.iter().chain(&n.peers).chain(&n.rendezvous) {
        if let Ok(addr) = dfs_node::testing::parse_addr("address", addr) {
            let _ = dfs_node::testing::peer_of(&addr);
        }
    }
    let s = &config.storage;
    for len in [0, 1, s.chunk_size as usize, s.replicate_below as usize] {
        let layout = s.layout_for(len);
        let _ = layout.shard_len(len);
        let _ = layout.shard_count();
    }
    let _ = s.worker_count();
});
