//! Fuzzes the heads of bulk link frames (`node/src/net/bulk/link.rs`): what a peer holding the
//! link key may send, decoded as a request (server side) and as a response (client side), and
//! the sealing around it (`open(seal(x)) == x`, a changed byte fails to open).
#![no_main]

use dfs_node::testing::bulk::fuzzing::{decode_head, encode_head, open_head, seal_head, HeadFields};
use dfs_node::testing::wire::{Request, Response};
use libfuzzer_sys::fuzz_target;

const SESSION: [u8; 32] = [7; 32];

fn round_trip<M>(plain: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(head) = decode_head::<M>(plain) {
        let again = encode_head(&head).expect("a decoded head encodes");
        let head2: HeadFields<M> = decode_head(&again).expect("re-decodes");
        assert_eq!(head2, head);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Response>(data);

    // Sealed as frame 3 from the client: opens as that frame only.
    let mut sealed = seal_head(&SESSION, 0, 3, data).expect("seals");
    assert_eq!(
        open_head(&SESSION, 0, 3, &mut sealed.clone()).expect("opens"),
        data
    );
    assert!(open_head(&SESSION, 1, 3, &mut sealed.clone()).is_err());
    assert!(open_head(&SESSION, 0, 4, &mut sealed.clone()).is_err());
    let at = data.len() / 2;
    sealed[at] ^= 1;
    assert!(open_head(&SESSION, 0, 3, &mut sealed).is_err());
    // And the raw bytes as a sealed head (they do not authenticate, whatever their length).
    assert!(open_head(&SESSION, 0, 0, &mut data.to_vec()).is_err());
});
