//! Poly1305 (RFC 8439), eight blocks at a time on AVX-512 IFMA.
//!
//! Poly1305 was the slowest half of chunk encryption: the RustCrypto crate's AVX2 code MACs
//! about 5 GB/s on one core of the machines we measure on, against 7.5 GB/s for XChaCha20
//! with AVX-512, and a cold read through a mount spent an eighth of the whole machine in it
//! (docs/placement.md). CPUs with IFMA multiply 52-bit limbs into 104-bit products in one
//! instruction, which fits Poly1305's arithmetic modulo 2^130 - 5 in three limbs of 44, 44 and
//! 42 bits (radix 2^44).
//!
//! The message is cut into groups of eight blocks. Lane `i` of eight accumulators takes
//! block `i` of every group: `H_i = (H_i + m) * r^8` for every group but the last, whose
//! lanes are multiplied by `r^8, r^7, .., r^1` instead, so that the sum of the lanes is
//! exactly what the one-block-at-a-time recurrence gives. Blocks left over and short messages
//! go through the same arithmetic one block at a time in scalar code (poly1305-donna's
//! 64-bit variant). On CPUs without IFMA this code would be scalar throughout; the AEAD runs
//! the chacha20poly1305 crate there instead ([`super::aead::backend`]), and the tests run the
//! scalar code alone on every CPU.
//!
//! Only [`Poly1305::update_padded`] is offered: the AEAD MACs the associated data, the
//! ciphertext and the lengths, each zero-padded to whole blocks. (The tests also MAC RFC 8439's
//! own messages, whose last partial block is padded the standalone way, with a 1 byte after it.)

/// Bytes in one Poly1305 block.
const BLOCK: usize = 16;
/// Blocks per group in the IFMA loop (one per 64-bit lane of a 512-bit register).
const LANES: usize = 8;
const M44: u64 = (1 << 44) - 1;
const M42: u64 = (1 << 42) - 1;
/// The 2^128 bit every full block carries, in the top limb (2^128 = 2^88 * 2^40).
const HIBIT: u64 = 1 << 40;

/// A number modulo 2^130 - 5 in radix 2^44, partially reduced: limbs 0 and 2 within 44 and
/// 42 bits, limb 1 at most a little over 44 bits.
type Limbs = [u64; 3];

/// A Poly1305 computation under one one-time key.
pub struct Poly1305 {
    r: Limbs,
    /// `s`, added at the end (the key's second half).
    pad: [u64; 2],
    h: Limbs,
    /// `r^1..=r^8` (index 0 is `r^1`), computed once a message is long enough for IFMA.
    powers: Option<[Limbs; LANES]>,
    /// Groups of eight blocks go through the IFMA loop: only ever true where
    /// [`ifma_available`] is.
    ifma: bool,
}

impl Poly1305 {
    pub fn new(key: &[u8; 32]) -> Self {
        let t0 = le64(&key[0..8]);
        let t1 = le64(&key[8..16]);
        // The clamped r (RFC 8439, section 2.5.1) in radix 2^44.
        let r = [
            t0 & 0xffc_0fff_ffff,
            ((t0 >> 44) | (t1 << 20)) & 0xfff_ffc0_ffff,
            (t1 >> 24) & 0x00f_ffff_fc0f,
        ];
        Self {
            r,
            pad: [le64(&key[16..24]), le64(&key[24..32])],
            h: [0; 3],
            powers: None,
            ifma: ifma_available() && !testing::scalar_forced(),
        }
    }

    /// MAC `data`, its last partial block zero-padded to a whole one.
    pub fn update_padded(&mut self, data: &[u8]) {
        let tail = self.whole_blocks(data);
        if !tail.is_empty() {
            let mut padded = [0u8; BLOCK];
            padded[..tail.len()].copy_from_slice(tail);
            self.block(&padded, HIBIT);
        }
    }

    /// MAC `data` as standalone Poly1305 does (RFC 8439, section 2.5.1): a last partial block
    /// is followed by a 1 byte and zeros, and carries no 2^128 bit. Only for whole messages.
    #[cfg(test)]
    pub fn update_unpadded(&mut self, data: &[u8]) {
        let tail = self.whole_blocks(data);
        if !tail.is_empty() {
            let mut padded = [0u8; BLOCK];
            padded[..tail.len()].copy_from_slice(tail);
            padded[tail.len()] = 1;
            self.block(&padded, 0);
        }
    }

    /// MAC the whole blocks of `data` (by groups of eight on IFMA where it runs); returns what
    /// is left, less than a block.
    fn whole_blocks<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let mut rest = data;
        if rest.len() >= LANES * BLOCK && self.ifma {
            let powers = *self.powers.get_or_insert_with(|| powers_of(self.r));
            let whole = rest.len() / (LANES * BLOCK) * (LANES * BLOCK);
            // SAFETY: `self.ifma` is only true where the CPU has AVX-512F and IFMA (see
            // `new`), and `whole` is a non-zero multiple of 128 within `rest`.
            unsafe { ifma::groups(&mut self.h, &powers, &rest[..whole]) };
            testing::count_ifma_groups(whole / (LANES * BLOCK));
            rest = &rest[whole..];
        }
        let mut blocks = rest.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.block(block, HIBIT);
        }
        blocks.remainder()
    }

    /// One block, with `hibit` (the 2^128 bit, or 0 for a standalone last partial block).
    fn block(&mut self, block: &[u8], hibit: u64) {
        let t0 = le64(&block[0..8]);
        let t1 = le64(&block[8..16]);
        self.h[0] += t0 & M44;
        self.h[1] += ((t0 >> 44) | (t1 << 20)) & M44;
        self.h[2] += (t1 >> 24) | hibit;
        self.h = mul(self.h, self.r);
    }

    /// The tag: `(h mod 2^130 - 5) + s`, modulo 2^128.
    pub fn finalize(self) -> [u8; 16] {
        // Twice round: a value below 2^130 + 2^45 in limbs within their widths (limb 1 may
        // be exactly 2^44, which the addition of s below carries on).
        let [mut h0, mut h1, mut h2] = carry(carry(self.h));
        // g = h + 5 - 2^130 = h - p; take it where it does not borrow, that is where h >= p.
        let mut g0 = h0 + 5;
        let c = g0 >> 44;
        g0 &= M44;
        let mut g1 = h1 + c;
        let c = g1 >> 44;
        g1 &= M44;
        let g2 = (h2 + c).wrapping_sub(1 << 42);
        let keep_g = (g2 >> 63).wrapping_sub(1);
        h0 = (h0 & !keep_g) | (g0 & keep_g);
        h1 = (h1 & !keep_g) | (g1 & keep_g);
        h2 = (h2 & !keep_g) | (g2 & M42 & keep_g);
        // + s, modulo 2^128.
        let [s0, s1] = self.pad;
        h0 += s0 & M44;
        let c = h0 >> 44;
        h0 &= M44;
        h1 += (((s0 >> 44) | (s1 << 20)) & M44) + c;
        let c = h1 >> 44;
        h1 &= M44;
        h2 = (h2 + (s1 >> 24) + c) & M42;
        let lo = h0 | (h1 << 44);
        let hi = (h1 >> 20) | (h2 << 24);
        let mut tag = [0u8; 16];
        tag[..8].copy_from_slice(&lo.to_le_bytes());
        tag[8..].copy_from_slice(&hi.to_le_bytes());
        tag
    }
}

fn le64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// `a * b` modulo 2^130 - 5, partially reduced (inputs up to 46 bits a limb).
fn mul(a: Limbs, b: Limbs) -> Limbs {
    let wide = |x: u64| u128::from(x);
    // 2^132 = 4 * 2^130, which is 4 * 5 modulo p: limb products that land at 2^132 and
    // above come back round times 20.
    let s1 = b[1] * 20;
    let s2 = b[2] * 20;
    let d0 = wide(a[0]) * wide(b[0]) + wide(a[1]) * wide(s2) + wide(a[2]) * wide(s1);
    let d1 = wide(a[0]) * wide(b[1]) + wide(a[1]) * wide(b[0]) + wide(a[2]) * wide(s2);
    let d2 = wide(a[0]) * wide(b[2]) + wide(a[1]) * wide(b[1]) + wide(a[2]) * wide(b[0]);
    let h0 = d0 as u64 & M44;
    let d1 = d1 + (d0 >> 44);
    let h1 = d1 as u64 & M44;
    let d2 = d2 + (d1 >> 44);
    let h2 = d2 as u64 & M42;
    // 2^130 is 5 modulo p.
    let h0 = h0 + (d2 >> 42) as u64 * 5;
    [h0 & M44, h1 + (h0 >> 44), h2]
}

/// Each limb's excess carried into the next one up, the top one's round to limb 0 (2^130 is 5
/// modulo p): limbs 0 and 2 come out within their widths, limb 1 at most 2^44.
fn carry([h0, h1, h2]: Limbs) -> Limbs {
    let h1 = h1 + (h0 >> 44);
    let h2 = h2 + (h1 >> 44);
    let h0 = (h0 & M44) + (h2 >> 42) * 5;
    [h0 & M44, (h1 & M44) + (h0 >> 44), h2 & M42]
}

/// `r^1..=r^8`.
fn powers_of(r: Limbs) -> [Limbs; LANES] {
    let mut powers = [r; LANES];
    for i in 1..LANES {
        powers[i] = mul(powers[i - 1], r);
    }
    powers
}

/// Whether this CPU runs the IFMA loop (checked once, then cached by the standard library).
pub fn ifma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What the tests observe and steer of this module, per thread (tests run on parallel threads).
/// Outside tests, nothing: no counter in the hot path, and nothing can turn IFMA off.
pub(super) mod testing {
    #[cfg(test)]
    use std::cell::Cell;

    #[cfg(test)]
    thread_local! {
        static IFMA_GROUPS: Cell<u64> = const { Cell::new(0) };
        static SCALAR_ONLY: Cell<bool> = const { Cell::new(false) };
    }

    /// Groups of eight blocks this thread has put through the IFMA loop.
    #[cfg(test)]
    pub fn ifma_groups() -> u64 {
        IFMA_GROUPS.with(Cell::get)
    }

    #[inline(always)]
    pub(super) fn count_ifma_groups(_groups: usize) {
        #[cfg(test)]
        IFMA_GROUPS.with(|c| c.set(c.get() + _groups as u64));
    }

    /// Run `f` with this thread's new [`super::Poly1305`]s in scalar code only, as on a CPU
    /// without IFMA.
    #[cfg(test)]
    pub fn scalar_only<R>(f: impl FnOnce() -> R) -> R {
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                SCALAR_ONLY.with(|s| s.set(false));
            }
        }
        SCALAR_ONLY.with(|s| s.set(true));
        let _restore = Restore;
        f()
    }

    #[inline(always)]
    pub(super) fn scalar_forced() -> bool {
        #[cfg(test)]
        return SCALAR_ONLY.with(Cell::get);
        #[cfg(not(test))]
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    use std::arch::x86_64::*;

    use super::{carry, Limbs, BLOCK, HIBIT, LANES, M42, M44};

    /// One number per lane, in radix 2^44.
    #[derive(Clone, Copy)]
    struct Lanes([__m512i; 3]);

    /// A multiplier per lane, with its limbs 1 and 2 also times 20 (see [`super::mul`]).
    #[derive(Clone, Copy)]
    struct Multiplier {
        r: [__m512i; 3],
        s1: __m512i,
        s2: __m512i,
    }

    #[target_feature(enable = "avx512f")]
    fn multiplier(lanes: [Limbs; LANES]) -> Multiplier {
        let limb = |k: usize, times: u64| {
            let l = |i: usize| (lanes[i][k] * times) as i64;
            _mm512_setr_epi64(l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7))
        };
        Multiplier {
            r: [limb(0, 1), limb(1, 1), limb(2, 1)],
            s1: limb(1, 20),
            s2: limb(2, 20),
        }
    }

    /// `h * m` lane by lane, modulo 2^130 - 5 and partially reduced, as [`super::mul`] does
    /// it. IFMA gives each 104-bit limb product as its low and high 52 bits; a high part is
    /// worth 2^52 = 2^44 * 2^8, so it joins the next limb up shifted left by 8, and the top
    /// limb's high part (at 2^140 = 2^130 * 2^10) comes round to limb 0 times 5 * 2^10.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul(h: Lanes, m: &Multiplier) -> Lanes {
        let [h0, h1, h2] = h.0;
        let [r0, r1, r2] = m.r;
        let (s1, s2) = (m.s1, m.s2);
        let h = [h0, h1, h2];
        let (d0l, d0h) = dot(h, [r0, s2, s1]);
        let (d1l, d1h) = dot(h, [r1, r0, s2]);
        let (d2l, d2h) = dot(h, [r2, r1, r0]);
        let m44 = _mm512_set1_epi64(M44 as i64);
        let m42 = _mm512_set1_epi64(M42 as i64);
        let x0 = _mm512_and_si512(d0l, m44);
        let t1 = sum3(
            d1l,
            _mm512_srli_epi64::<44>(d0l),
            _mm512_slli_epi64::<8>(d0h),
        );
        let x1 = _mm512_and_si512(t1, m44);
        let t2 = sum3(
            d2l,
            _mm512_srli_epi64::<44>(t1),
            _mm512_slli_epi64::<8>(d1h),
        );
        let x2 = _mm512_and_si512(t2, m42);
        // What reached 2^130 (times 5) and the top high part (times 5 * 2^10) go to limb 0.
        let c = _mm512_srli_epi64::<42>(t2);
        let x0 = sum3(
            x0,
            _mm512_add_epi64(_mm512_slli_epi64::<2>(c), c),
            _mm512_add_epi64(_mm512_slli_epi64::<12>(d2h), _mm512_slli_epi64::<10>(d2h)),
        );
        Lanes([
            _mm512_and_si512(x0, m44),
            _mm512_add_epi64(x1, _mm512_srli_epi64::<44>(x0)),
            x2,
        ])
    }

    /// `a + b + c`, lane by lane.
    #[target_feature(enable = "avx512f")]
    fn sum3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        _mm512_add_epi64(_mm512_add_epi64(a, b), c)
    }

    /// The sums of the low and of the high 52 bits of `a[k] * b[k]`, lane by lane.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn dot(a: [__m512i; 3], b: [__m512i; 3]) -> (__m512i, __m512i) {
        let z = _mm512_setzero_si512();
        let lo = |k: usize| _mm512_madd52lo_epu64(z, a[k], b[k]);
        let hi = |k: usize| _mm512_madd52hi_epu64(z, a[k], b[k]);
        (sum3(lo(0), lo(1), lo(2)), sum3(hi(0), hi(1), hi(2)))
    }

    /// Fold `data` (a non-zero multiple of eight blocks) into `h`, eight blocks at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 IFMA.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn groups(h: &mut Limbs, powers: &[Limbs; LANES], data: &[u8]) {
        let group = LANES * BLOCK;
        debug_assert!(!data.is_empty() && data.len().is_multiple_of(group));
        let loop_multiplier = multiplier([powers[LANES - 1]; LANES]);
        // Lane i of the last group: r^(8 - i).
        let mut last = [powers[0]; LANES];
        for (i, lane) in last.iter_mut().enumerate() {
            *lane = powers[LANES - 1 - i];
        }
        let last_multiplier = multiplier(last);
        let m44 = _mm512_set1_epi64(M44 as i64);
        let hibit = _mm512_set1_epi64(HIBIT as i64);
        let low_words = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        let high_words = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        // The running state enters through lane 0 of the first group.
        let first = |limb: u64| _mm512_setr_epi64(limb as i64, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = Lanes([first(h[0]), first(h[1]), first(h[2])]);
        let groups = data.chunks_exact(group);
        let count = groups.len();
        for (n, bytes) in groups.enumerate() {
            // SAFETY: `bytes` is 128 bytes long; unaligned loads.
            let (a, b) = unsafe {
                (
                    _mm512_loadu_si512(bytes.as_ptr().cast()),
                    _mm512_loadu_si512(bytes.as_ptr().add(64).cast()),
                )
            };
            // Lane i: the low and high 64 bits of block i.
            let t0 = _mm512_permutex2var_epi64(a, low_words, b);
            let t1 = _mm512_permutex2var_epi64(a, high_words, b);
            let [h0, h1, h2] = acc.0;
            let m1 = _mm512_or_si512(_mm512_srli_epi64::<44>(t0), _mm512_slli_epi64::<20>(t1));
            let sum = Lanes([
                _mm512_add_epi64(h0, _mm512_and_si512(t0, m44)),
                _mm512_add_epi64(h1, _mm512_and_si512(m1, m44)),
                _mm512_add_epi64(h2, _mm512_or_si512(_mm512_srli_epi64::<24>(t1), hibit)),
            ]);
            let multiplier = if n + 1 < count {
                &loop_multiplier
            } else {
                &last_multiplier
            };
            acc = mul(sum, multiplier);
        }
        let [h0, h1, h2] = acc.0;
        // Eight lanes of partially reduced limbs sum to at most 49 bits: carry back down.
        *h = carry([
            _mm512_reduce_add_epi64(h0) as u64,
            _mm512_reduce_add_epi64(h1) as u64,
            _mm512_reduce_add_epi64(h2) as u64,
        ]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ifma {
    use super::{Limbs, LANES};

    /// Never called: [`super::ifma_available`] is false off x86-64.
    pub(super) unsafe fn groups(_: &mut Limbs, _: &[Limbs; LANES], _: &[u8]) {
        unreachable!("IFMA exists only on x86-64")
    }
}

#[cfg(test)]
mod tests {
    use poly1305::universal_hash::{KeyInit, UniversalHash};
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::test_support::{cpu_has_ifma, unhex};

    /// The RustCrypto crate's tag for the same padded message: the reference.
    fn reference(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = poly1305::Poly1305::new(key.into());
        for part in parts {
            mac.update_padded(part);
        }
        mac.finalize().into()
    }

    fn ours(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = Poly1305::new(key);
        for part in parts {
            mac.update_padded(part);
        }
        mac.finalize()
    }

    /// A tag worked out independently with Python's big integers, by the definition:
    /// `h = (h + block + 2^128) * r mod 2^130 - 5` over the zero-padded blocks, then `+ s`.
    /// 300 bytes: two groups of eight blocks through IFMA where the CPU has it, then scalar.
    #[test]
    fn a_tag_worked_out_by_the_definition() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..300).map(|i| (i * 7 % 256) as u8).collect();
        let tag = [
            168, 110, 69, 127, 101, 130, 206, 71, 144, 58, 203, 11, 8, 171, 178, 232,
        ];
        assert_eq!(ours(&key, &[&message]), tag);
        assert_eq!(testing::scalar_only(|| ours(&key, &[&message])), tag);
    }

    /// Values that stress the carries: all-ones keys and messages, whose accumulators sit
    /// next to the modulus, at every length around the group size.
    #[test]
    fn extreme_values_at_every_length_around_a_group() {
        for key in [[0xffu8; 32], [0u8; 32], [0x01; 32]] {
            for fill in [0xffu8, 0x00, 0x80] {
                for len in 0..(3 * LANES * BLOCK + 20) {
                    let message = vec![fill; len];
                    let expected = reference(&key, &[&message]);
                    assert_eq!(
                        ours(&key, &[&message]),
                        expected,
                        "key {:x} fill {fill:x} len {len}",
                        key[0]
                    );
                    assert_eq!(
                        testing::scalar_only(|| ours(&key, &[&message])),
                        expected,
                        "scalar only: key {:x} fill {fill:x} len {len}",
                        key[0]
                    );
                }
            }
        }
    }

    #[test]
    fn a_long_message_takes_the_ifma_loop_where_there_is_one() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let message: Vec<u8> = (0..(4 << 20) + 37).map(|i| (i * 31 % 251) as u8).collect();
        let before = testing::ifma_groups();
        assert_eq!(ours(&key, &[&message]), reference(&key, &[&message]));
        let groups = testing::ifma_groups() - before;
        assert_eq!(ifma_available(), cpu_has_ifma());
        if cpu_has_ifma() {
            assert_eq!(
                groups,
                (4 << 20) / 128,
                "the CPU has IFMA but the loop did not run"
            );
        } else {
            assert_eq!(groups, 0);
        }
        let before = testing::ifma_groups();
        let scalar = testing::scalar_only(|| ours(&key, &[&message]));
        assert_eq!(scalar, reference(&key, &[&message]));
        assert_eq!(
            testing::ifma_groups(),
            before,
            "scalar_only ran the IFMA loop"
        );
    }

    /// RFC 8439's Poly1305 vectors: section 2.5.2 and appendix A.3 (#1 to #11), as
    /// (name, key, message, tag) in hex. Messages are standalone (not AEAD-padded).
    const RFC8439: &[(&str, &str, &str, &str)] = &[
        (
            "2.5.2",
            "85d6be7857556d337f4452fe42d506a8 0103808afb0db2fd4abff6af4149f51b",
            "43727970746f6772617068696320466f 72756d2052657365617263682047726f 7570",
            "a8061dc1305136c6c22b8baf0c0127a9",
        ),
        (
            "A.3 #1",
            "00000000000000000000000000000000 00000000000000000000000000000000",
            "00000000000000000000000000000000 00000000000000000000000000000000
             00000000000000000000000000000000 00000000000000000000000000000000",
            "00000000000000000000000000000000",
        ),
        (
            "A.3 #2",
            "00000000000000000000000000000000 36e5f6b5c5e06070f0efca96227a863e",
            IETF_CONTRIBUTION,
            "36e5f6b5c5e06070f0efca96227a863e",
        ),
        (
            "A.3 #3",
            "36e5f6b5c5e06070f0efca96227a863e 00000000000000000000000000000000",
            IETF_CONTRIBUTION,
            "f3477e7cd95417af89a6b8794c310cf0",
        ),
        (
            "A.3 #4",
            "1c9240a5eb55d38af333888604f6b5f0 473917c1402b80099dca5cbc207075c0",
            "2754776173206272696c6c69672c2061 6e642074686520736c6974687920746f
             7665730a446964206779726520616e64 2067696d626c6520696e207468652077
             6162653a0a416c6c206d696d73792077 6572652074686520626f726f676f7665
             732c0a416e6420746865206d6f6d6520 7261746873206f757467726162652e",
            "4541669a7eaaee61e708dc7cbcc5eb62",
        ),
        (
            "A.3 #5",
            "02000000000000000000000000000000 00000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffff",
            "03000000000000000000000000000000",
        ),
        (
            "A.3 #6",
            "02000000000000000000000000000000 ffffffffffffffffffffffffffffffff",
            "02000000000000000000000000000000",
            "03000000000000000000000000000000",
        ),
        (
            "A.3 #7",
            "01000000000000000000000000000000 00000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffff f0ffffffffffffffffffffffffffffff
             11000000000000000000000000000000",
            "05000000000000000000000000000000",
        ),
        (
            "A.3 #8",
            "01000000000000000000000000000000 00000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffff fbfefefefefefefefefefefefefefefe
             01010101010101010101010101010101",
            "00000000000000000000000000000000",
        ),
        (
            "A.3 #9",
            "02000000000000000000000000000000 00000000000000000000000000000000",
            "fdffffffffffffffffffffffffffffff",
            "faffffffffffffffffffffffffffffff",
        ),
        (
            "A.3 #10",
            "01000000000000000400000000000000 00000000000000000000000000000000",
            "e33594d7505e43b90000000000000000 3394d7505e4379cd0100000000000000
             00000000000000000000000000000000 01000000000000000000000000000000",
            "14000000000000005500000000000000",
        ),
        (
            "A.3 #11",
            "01000000000000000400000000000000 00000000000000000000000000000000",
            "e33594d7505e43b90000000000000000 3394d7505e4379cd0100000000000000
             00000000000000000000000000000000",
            "13000000000000000000000000000000",
        ),
    ];

    /// The 375-byte text of A.3 #2 and #3 ("Any submission to the IETF intended by the
    /// Contributor ..."): two groups of eight blocks through IFMA where it runs, then scalar.
    const IETF_CONTRIBUTION: &str = "
        416e79207375626d697373696f6e2074 6f20746865204945544620696e74656e
        6465642062792074686520436f6e7472 696275746f7220666f72207075626c69
        636174696f6e20617320616c6c206f72 2070617274206f6620616e2049455446
        20496e7465726e65742d447261667420 6f722052464320616e6420616e792073
        746174656d656e74206d616465207769 7468696e2074686520636f6e74657874
        206f6620616e20494554462061637469 7669747920697320636f6e7369646572
        656420616e20224945544620436f6e74 7269627574696f6e222e205375636820
        73746174656d656e747320696e636c75 6465206f72616c2073746174656d656e
        747320696e2049455446207365737369 6f6e732c2061732077656c6c20617320
        7772697474656e20616e6420656c6563 74726f6e696320636f6d6d756e696361
        74696f6e73206d61646520617420616e 792074696d65206f7220706c6163652c
        20776869636820617265206164647265 7373656420746f";

    /// Every RFC 8439 Poly1305 vector, through IFMA where the CPU has it and through the scalar
    /// code alone; also through the reference crate, so a mistyped vector shows as such.
    #[test]
    fn rfc8439_vectors() {
        let mut ifma_groups = 0;
        for &(name, key, message, tag) in RFC8439 {
            let key: [u8; 32] = unhex(key).try_into().unwrap();
            let message = unhex(message);
            let tag = unhex(tag);
            let reference = poly1305::Poly1305::new(&key.into()).compute_unpadded(&message);
            assert_eq!(reference.as_slice(), tag, "{name}: the reference crate");
            for scalar in [false, true] {
                let before = testing::ifma_groups();
                let run = || {
                    let mut mac = Poly1305::new(&key);
                    mac.update_unpadded(&message);
                    let unpadded = mac.finalize();
                    // Whole blocks pad alike: the AEAD's entry point gives the same tag.
                    if message.len().is_multiple_of(BLOCK) {
                        let mut mac = Poly1305::new(&key);
                        mac.update_padded(&message);
                        assert_eq!(mac.finalize(), unpadded, "{name}: update_padded");
                    }
                    unpadded
                };
                let ours = if scalar {
                    testing::scalar_only(run)
                } else {
                    run()
                };
                assert_eq!(ours.as_slice(), tag, "{name} (scalar only: {scalar})");
                if scalar {
                    assert_eq!(testing::ifma_groups(), before);
                } else {
                    ifma_groups += testing::ifma_groups() - before;
                }
            }
        }
        // #2 and #3: two groups each (the padded-entry check only runs on whole blocks).
        let expected = if cpu_has_ifma() { 4 } else { 0 };
        assert_eq!(ifma_groups, expected, "IFMA groups run by the RFC vectors");
    }

    proptest! {
        /// Any key, any message, split into padded parts anywhere: the crate's tag.
        #[test]
        fn equals_the_reference(
            key in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..3),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut at = 0;
            for cut in cuts {
                parts.push(&message[at..cut]);
                at = cut;
            }
            parts.push(&message[at..]);
            prop_assert_eq!(ours(&key, &parts), reference(&key, &parts));
        }
    }
}
