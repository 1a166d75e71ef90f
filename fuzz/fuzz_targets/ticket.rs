//! Fuzzes join tickets (`node/src/volumes.rs`): `Ticket::decode` of a `dfs-ticket-<hex>` string a
//! user pastes, with the round trip `decode(encode(t)) == t`.
#![no_main]

use dfs_node::testing::Ticket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ticket) = Ticket::decode(text) {
        assert_eq!(
            Ticket::decode(&ticket.encode()).expect("re-decodes"),
            ticket
        );
    }
});
