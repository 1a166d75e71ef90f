//! XChaCha20-Poly1305 of whole chunks, with Poly1305 on IFMA where the CPU has it.
//!
//! The construction is the one the chacha20poly1305 crate implements (RFC 8439's AEAD under
//! an HChaCha20 subkey, draft-irtf-cfrg-xchacha), composed here from the chacha20 crate's
//! XChaCha20 keystream and [`super::poly1305`]: block 0 of the keystream gives the one-time
//! Poly1305 key, blocks 1 and on encrypt, and the tag covers the associated data and the
//! ciphertext, each zero-padded to a whole block, then their lengths (chunks have no
//! associated data; the published vectors the tests check do).
//!
//! [`backend`] is the one place that picks the code: this composition where the CPU has IFMA
//! and `[storage] own_poly1305` is on (the default), otherwise the chacha20poly1305 crate
//! itself ([`use_crate_only`], set when a data directory's configuration turns it off). The
//! bytes are the same either way: the tests check both against the RFC 8439, draft and
//! Wycheproof vectors and against each other, and fail on a CPU with IFMA that does not take
//! the IFMA loop.

use std::sync::atomic::{AtomicBool, Ordering};

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::XChaCha20;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use subtle::ConstantTimeEq;

use super::poly1305::{ifma_available, Poly1305};
use super::{DecryptError, TAG_LEN};

/// The code that seals and opens chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The chacha20 crate's XChaCha20 keystream with this crate's [`super::poly1305`], whose
    /// IFMA loop MACs groups of eight blocks.
    OwnPoly1305,
    /// The chacha20poly1305 crate, whole.
    Crate,
}

/// False once [`use_crate_only`] has been called.
static OWN_POLY1305: AtomicBool = AtomicBool::new(true);

/// From now on, in this whole process, seal and open with the chacha20poly1305 crate alone
/// (`[storage] own_poly1305 = false`). Only a new process turns the own Poly1305 back on.
pub fn use_crate_only() {
    OWN_POLY1305.store(false, Ordering::Relaxed);
}

/// Undo [`use_crate_only`]: only for tests, which hold
/// [`super::test_support::backend_switch`] meanwhile.
#[cfg(test)]
pub(super) fn own_poly1305_again() {
    OWN_POLY1305.store(true, Ordering::Relaxed);
}

/// The code [`seal`] and [`open`] run now: the own Poly1305 where the CPU has IFMA and
/// [`use_crate_only`] was not called, otherwise the crate.
pub fn backend() -> Backend {
    if OWN_POLY1305.load(Ordering::Relaxed) && ifma_available() {
        Backend::OwnPoly1305
    } else {
        Backend::Crate
    }
}

/// Encrypt `buf` in place under `key` and `nonce`, authenticating `aad` with it; returns the
/// tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    seal_with(backend(), key, nonce, aad, buf)
}

/// Check `tag` over `aad` and `buf` and only then decrypt `buf` in place.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), DecryptError> {
    open_with(backend(), key, nonce, aad, buf, tag)
}

fn seal_with(
    backend: Backend,
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    match backend {
        Backend::Crate => XChaCha20Poly1305::new(&Key::from(*key))
            .encrypt_inout_detached(&XNonce::from(*nonce), aad, buf.into())
            // Only fails beyond 256 GiB; chunks are at most 4 MiB.
            .unwrap_or_else(|_| unreachable!("chunk larger than the AEAD limit"))
            .into(),
        Backend::OwnPoly1305 => {
            let (mut cipher, mut mac) = start(key, nonce);
            cipher.apply_keystream(buf);
            mac.update_padded(aad);
            mac.update_padded(buf);
            mac.update_padded(&lengths(aad.len(), buf.len()));
            mac.finalize()
        }
    }
}

fn open_with(
    backend: Backend,
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), DecryptError> {
    match backend {
        Backend::Crate => XChaCha20Poly1305::new(&Key::from(*key))
            .decrypt_inout_detached(&XNonce::from(*nonce), aad, buf.into(), &Tag::from(*tag))
            .map_err(|_| DecryptError),
        Backend::OwnPoly1305 => {
            let (mut cipher, mut mac) = start(key, nonce);
            mac.update_padded(aad);
            mac.update_padded(buf);
            mac.update_padded(&lengths(aad.len(), buf.len()));
            if !bool::from(mac.finalize().ct_eq(tag)) {
                return Err(DecryptError);
            }
            cipher.apply_keystream(buf);
            Ok(())
        }
    }
}

/// The keystream positioned at block 1, and the MAC keyed with block 0's first half.
fn start(key: &[u8; 32], nonce: &[u8; 24]) -> (XChaCha20, Poly1305) {
    let mut cipher = XChaCha20::new(key.into(), nonce.into());
    let mut block0 = [0u8; 64];
    cipher.apply_keystream(&mut block0);
    let mut mac_key = [0u8; 32];
    mac_key.copy_from_slice(&block0[..32]);
    (cipher, Poly1305::new(&mac_key))
}

/// The last MAC block: the associated data's length and the ciphertext's, little-endian.
fn lengths(aad_len: usize, len: usize) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&(aad_len as u64).to_le_bytes());
    block[8..].copy_from_slice(&(len as u64).to_le_bytes());
    block
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::super::poly1305::testing as mac_testing;
    use super::super::test_support::{backend_switch, cpu_has_ifma, unhex};
    use super::*;

    fn crate_seal(key: &[u8; 32], nonce: &[u8; 24], plain: &[u8]) -> (Vec<u8>, [u8; 16]) {
        let mut buf = plain.to_vec();
        let tag = XChaCha20Poly1305::new(&Key::from(*key))
            .encrypt_inout_detached(&XNonce::from(*nonce), &[], buf.as_mut_slice().into())
            .unwrap();
        (buf, tag.into())
    }

    /// Sealed here, the bytes and tag are the crate's; opened here, the crate's come back;
    /// any flipped bit in the ciphertext or the tag is refused and leaves the buffer as it was.
    fn check(key: [u8; 32], nonce: [u8; 24], plain: &[u8], flip: usize) {
        let (expected, expected_tag) = crate_seal(&key, &nonce, plain);
        let mut buf = plain.to_vec();
        let tag = seal(&key, &nonce, &[], &mut buf);
        assert!(buf == expected, "ciphertext differs at len {}", plain.len());
        assert_eq!(tag, expected_tag, "tag differs at len {}", plain.len());
        let mut opened = expected.clone();
        open(&key, &nonce, &[], &mut opened, &tag).unwrap();
        assert!(opened == plain);
        let bit = flip % ((plain.len() + TAG_LEN) * 8);
        let (mut tampered, mut bad_tag) = (expected.clone(), tag);
        if bit / 8 < plain.len() {
            tampered[bit / 8] ^= 1 << (bit % 8);
        } else {
            bad_tag[bit / 8 - plain.len()] ^= 1 << (bit % 8);
        }
        let before = tampered.clone();
        assert_eq!(
            open(&key, &nonce, &[], &mut tampered, &bad_tag),
            Err(DecryptError)
        );
        assert!(tampered == before, "a refused chunk was decrypted anyway");
    }

    #[test]
    fn chunk_sized_buffers_match_the_crate() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let nonce: [u8; 24] = std::array::from_fn(|i| (i * 13 + 5) as u8);
        for len in [(4 << 20) - 1, 4 << 20, (1 << 20) + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            check(key, nonce, &plain, len * 5 + 3);
        }
    }

    proptest! {
        #[test]
        fn any_message_matches_the_crate(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            plain in proptest::collection::vec(any::<u8>(), 0..4000),
            flip in any::<usize>(),
        ) {
            check(key, nonce, &plain, flip);
        }
    }

    /// The code a vector goes through.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Route {
        /// The own Poly1305 as production runs it: its IFMA loop where the CPU has one.
        Own,
        /// The own Poly1305 in scalar code only, as on a CPU without IFMA.
        OwnScalar,
        /// The chacha20poly1305 crate (the portable fallback).
        Crate,
        /// [`seal`] and [`open`], whatever [`backend`] picks now.
        Current,
    }

    impl Route {
        const FIXED: [Route; 3] = [Route::Own, Route::OwnScalar, Route::Crate];

        fn run<R>(self, f: impl FnOnce(Backend) -> R) -> R {
            match self {
                Route::Own => f(Backend::OwnPoly1305),
                Route::OwnScalar => mac_testing::scalar_only(|| f(Backend::OwnPoly1305)),
                Route::Crate => f(Backend::Crate),
                Route::Current => f(backend()),
            }
        }
    }

    /// One published vector.
    struct Vector<'a> {
        name: String,
        key: &'a [u8],
        nonce: &'a [u8],
        aad: &'a [u8],
        plain: &'a [u8],
        cipher: &'a [u8],
        tag: &'a [u8],
        valid: bool,
    }

    /// What a route did with one vector.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// Sealed to the vector's ciphertext and tag, and opened to its message.
        Matched,
        /// Refused: a nonce or tag of the wrong size cannot be passed at all; otherwise the
        /// tag did not verify, and the buffer was left as it was.
        Refused,
    }

    /// Put `v` through `route`, panicking (with the vector's name) where the vector says
    /// otherwise: a valid vector must match, an invalid one must be refused.
    fn run_vector(route: Route, v: &Vector) -> Outcome {
        let key: [u8; 32] = v.key.try_into().expect("every vector has a 256-bit key");
        let name = format!("{} via {route:?}", v.name);
        let (Ok(nonce), Ok(tag)) = (
            <[u8; 24]>::try_from(v.nonce),
            <[u8; TAG_LEN]>::try_from(v.tag),
        ) else {
            assert!(
                !v.valid,
                "{name}: a valid vector with a nonce or tag of another size"
            );
            return Outcome::Refused;
        };
        route.run(|backend| {
            let mut buf = v.plain.to_vec();
            let sealed_tag = seal_with(backend, &key, &nonce, v.aad, &mut buf);
            let sealed_alike = buf == v.cipher && sealed_tag == tag;
            let mut opened = v.cipher.to_vec();
            let result = open_with(backend, &key, &nonce, v.aad, &mut opened, &tag);
            if v.valid {
                assert!(buf == v.cipher, "{name}: ciphertext");
                assert_eq!(sealed_tag, tag, "{name}: tag");
                assert_eq!(result, Ok(()), "{name}: refused a valid vector");
                assert!(opened == v.plain, "{name}: opened to another message");
                Outcome::Matched
            } else {
                assert_eq!(
                    result,
                    Err(DecryptError),
                    "{name}: accepted an invalid vector"
                );
                assert!(opened == v.cipher, "{name}: a refused buffer was decrypted");
                assert!(!sealed_alike, "{name}: sealed to an invalid vector");
                Outcome::Refused
            }
        })
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305), in hex.
    const DRAFT_KEY: &str = "808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f";
    const DRAFT_NONCE: &str = "404142434445464748494a4b4c4d4e4f 5051525354555657";
    const DRAFT_AAD: &str = "50515253c0c1c2c3c4c5c6c7";
    /// "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the
    /// future, sunscreen would be it."
    const DRAFT_PLAIN: &str = "
        4c616469657320616e642047656e746c 656d656e206f662074686520636c6173
        73206f66202739393a20496620492063 6f756c64206f6666657220796f75206f
        6e6c79206f6e652074697020666f7220 746865206675747572652c2073756e73
        637265656e20776f756c642062652069 742e";
    const DRAFT_POLY1305_KEY: &str =
        "7b191f80f361f099094f6f4b8fb97df8 47cc6873a8f2b190dd73807183f907d5";
    const DRAFT_CIPHER: &str = "
        bd6d179d3e83d43b9576579493c0e939 572a1700252bfaccbed2902c21396cbb
        731c7f1b0b4aa6440bf3a82f4eda7e39 ae64c6708c54c216cb96b72e1213b452
        2f8c9ba40db5d945b11b69b982c1bb9e 3f3fac2bc369488f76b2383565d3fff9
        21f9664c97637da9768812f615c68b13 b52e";
    const DRAFT_TAG: &str = "c0875924c1c7987947deafd8780acf49";

    /// The draft's vector, and the same with one bit of the tag, of the ciphertext and of the
    /// associated data flipped (which must be refused), on `route`.
    fn draft_vector(route: Route) {
        let (key, nonce, aad) = (unhex(DRAFT_KEY), unhex(DRAFT_NONCE), unhex(DRAFT_AAD));
        let (plain, cipher, tag) = (unhex(DRAFT_PLAIN), unhex(DRAFT_CIPHER), unhex(DRAFT_TAG));
        let vector = |name: &str, aad: &[u8], cipher: &[u8], tag: &[u8], valid: bool| {
            let v = Vector {
                name: format!("draft A.3.1 {name}"),
                key: &key,
                nonce: &nonce,
                aad,
                plain: &plain,
                cipher,
                tag,
                valid,
            };
            run_vector(route, &v)
        };
        assert_eq!(vector("", &aad, &cipher, &tag, true), Outcome::Matched);
        let flipped = |bytes: &[u8], at: usize| {
            let mut bytes = bytes.to_vec();
            bytes[at] ^= 0x10;
            bytes
        };
        let bad_tag = flipped(&tag, 15);
        let bad_cipher = flipped(&cipher, 100);
        let bad_aad = flipped(&aad, 0);
        assert_eq!(
            vector("tag flipped", &aad, &cipher, &bad_tag, false),
            Outcome::Refused
        );
        assert_eq!(
            vector(
                "ciphertext flipped",
                &aad,
                &cipher[..],
                &bad_cipher[..],
                false
            ),
            Outcome::Refused
        );
        assert_eq!(
            vector("aad flipped", &bad_aad, &cipher, &tag, false),
            Outcome::Refused
        );
        assert_eq!(
            vector("no aad", &[], &cipher, &tag, false),
            Outcome::Refused
        );
    }

    #[test]
    fn draft_xchacha_vector_on_every_route() {
        for route in Route::FIXED {
            draft_vector(route);
        }
        // The one-time Poly1305 key the draft lists: block 0 of the keystream.
        let (key, nonce) = (unhex(DRAFT_KEY), unhex(DRAFT_NONCE));
        let mut cipher = XChaCha20::new(key[..].try_into().unwrap(), nonce[..].try_into().unwrap());
        let mut block0 = [0u8; 64];
        cipher.apply_keystream(&mut block0);
        assert_eq!(block0[..32], unhex(DRAFT_POLY1305_KEY));
    }

    /// Every Wycheproof XChaCha20-Poly1305 vector on `route`: (matched, refused).
    fn wycheproof_vectors(route: Route) -> (usize, usize) {
        use wycheproof::aead::{TestName, TestSet};
        let set = TestSet::load(TestName::XChaCha20Poly1305).unwrap();
        let (mut matched, mut refused) = (0, 0);
        for group in &set.test_groups {
            for t in &group.tests {
                let v = Vector {
                    name: format!("Wycheproof tcId {} ({})", t.tc_id, t.comment),
                    key: &t.key,
                    nonce: &t.nonce,
                    aad: &t.aad,
                    plain: &t.pt,
                    cipher: &t.ct,
                    tag: &t.tag,
                    valid: !t.result.must_fail(),
                };
                match run_vector(route, &v) {
                    Outcome::Matched => matched += 1,
                    Outcome::Refused => refused += 1,
                }
            }
        }
        assert_eq!(matched + refused, set.number_of_tests);
        (matched, refused)
    }

    /// The number of vectors in the Wycheproof set this crate's version ships: 246 valid and
    /// 69 invalid (wrong tags, edge cases of the MAC, nonces of other sizes). A new version
    /// with more is welcome; fewer would mean vectors went missing.
    const WYCHEPROOF_VALID: usize = 246;
    const WYCHEPROOF_INVALID: usize = 69;

    #[test]
    fn wycheproof_vectors_on_every_route() {
        for route in Route::FIXED {
            let before = mac_testing::ifma_groups();
            let (matched, refused) = wycheproof_vectors(route);
            let groups = mac_testing::ifma_groups() - before;
            assert!(
                matched >= WYCHEPROOF_VALID && refused >= WYCHEPROOF_INVALID,
                "{route:?}: {matched} matched, {refused} refused"
            );
            // Messages and associated data of 128 bytes and more go through the IFMA loop.
            if route == Route::Own && cpu_has_ifma() {
                assert!(groups > 0, "the IFMA loop ran for no Wycheproof vector");
            } else {
                assert_eq!(groups, 0, "{route:?} ran the IFMA loop");
            }
        }
    }

    /// The IFMA path is taken on a CPU that has IFMA, by what encrypts chunks: a failure
    /// here, not a message, when it is not.
    #[test]
    fn a_cpu_with_ifma_takes_the_ifma_path() {
        let _switch = backend_switch();
        let has = cpu_has_ifma();
        assert_eq!(
            ifma_available(),
            has,
            "IFMA detection disagrees with the CPU"
        );
        let expected = if has {
            Backend::OwnPoly1305
        } else {
            Backend::Crate
        };
        assert_eq!(backend(), expected, "CPU has IFMA: {has}");
        // A 1 MiB chunk through the public entry point: 8192 groups of eight blocks.
        let plain = vec![0x5a; 1 << 20];
        let key = super::super::VolumeSecret::from_bytes([3; 32]).chunk_key(&plain);
        let before = mac_testing::ifma_groups();
        let sealed = key.encrypt(plain.clone());
        let after_seal = mac_testing::ifma_groups();
        assert_eq!(key.decrypt(sealed), Ok(plain));
        let after_open = mac_testing::ifma_groups();
        let groups = if has { (1 << 20) / 128 } else { 0 };
        assert_eq!(after_seal - before, groups, "IFMA groups while sealing");
        assert_eq!(after_open - after_seal, groups, "IFMA groups while opening");
        // The vectors, through the same entry points.
        draft_vector(Route::Current);
        eprintln!("IFMA on this CPU: {has}; chunk backend {:?}", backend());
    }

    /// The draft's and Wycheproof's vectors through [`seal`] and [`open`], with whatever
    /// [`backend`] picks now (for the configuration's tests).
    pub(crate) fn current_backend_matches_the_vectors() {
        draft_vector(Route::Current);
        let (matched, refused) = wycheproof_vectors(Route::Current);
        assert!(matched >= WYCHEPROOF_VALID && refused >= WYCHEPROOF_INVALID);
    }

    /// `[storage] own_poly1305 = false`: the crate is reported, the IFMA loop does not run,
    /// and the vectors still hold through the public entry points.
    #[test]
    fn switched_off_the_crate_runs_and_matches_the_vectors() {
        let _switch = backend_switch();
        use_crate_only();
        assert_eq!(backend(), Backend::Crate);
        let before = mac_testing::ifma_groups();
        current_backend_matches_the_vectors();
        let plain = vec![0xa5; 1 << 20];
        let key = super::super::VolumeSecret::from_bytes([4; 32]).chunk_key(&plain);
        let sealed = key.encrypt(plain.clone());
        assert_eq!(key.decrypt(sealed), Ok(plain));
        assert_eq!(
            mac_testing::ifma_groups(),
            before,
            "the IFMA loop ran while off"
        );
    }
}
