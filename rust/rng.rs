//! Philox4x32-10, the counter-based generator of Salmon et al. (SC'11, "Random123").
//!
//! Every random word is a pure function of `(seed, offset, index)`:
//! the 64-bit key is the seed, the first two counter words hold `index / 4`
//! (the block of four words that `index` falls in) and the last two hold the
//! call offset. A kernel can therefore draw the words of any element in any
//! order, on any thread, and get the same values.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The high bit of the offset's upper word is reserved for deriving the seeds
/// of forked generators, so fork draws never overlap ordinary draws.
pub const FORK_DOMAIN: u64 = 1 << 63;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with `rounds` rounds applied to `ctr` under `key`.
#[inline(always)]
pub fn philox4x32_rounds(mut ctr: [u32; 4], mut key: [u32; 2], rounds: u32) -> [u32; 4] {
    for r in 0..rounds {
        if r > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, ctr[0]);
        let (hi1, lo1) = mulhilo(M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

/// Philox4x32-10: the ten-round variant, the one this library uses.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32_rounds(ctr, key, 10)
}

/// The random stream of one kernel call: a generator's seed and the offset it
/// had when the call was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub seed: u64,
    pub offset: u64,
}

impl Stream {
    pub fn new(seed: u64, offset: u64) -> Self {
        Stream { seed, offset }
    }

    /// The four words of block `block` (32-bit words `4*block .. 4*block+4`).
    #[inline(always)]
    pub fn block(&self, block: u64) -> [u32; 4] {
        philox4x32_10(
            [
                block as u32,
                (block >> 32) as u32,
                self.offset as u32,
                (self.offset >> 32) as u32,
            ],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }

    /// The 32-bit word with index `i` of this stream.
    #[inline(always)]
    pub fn word(&self, i: u64) -> u32 {
        self.block(i / 4)[(i % 4) as usize]
    }

    /// The 64-bit word with index `i`: 32-bit words `2i` (low half) and `2i+1`.
    #[inline(always)]
    pub fn word64(&self, i: u64) -> u64 {
        let b = self.block(i / 2);
        let j = 2 * (i % 2) as usize;
        u64::from(b[j]) | (u64::from(b[j + 1]) << 32)
    }
}

/// Blocks computed together by [`Stream::blocks16`].
pub const GROUP_BLOCKS: usize = 16;

impl Stream {
    /// Blocks `b0 .. b0 + 16` at once, as four rows of words:
    /// `out[w][j]` is word `w` of block `b0 + j` — the same words as
    /// [`Stream::block`]. Runs on AVX-512 or AVX2 registers when the CPU has
    /// them (integer arithmetic: every path gives the same words).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // lane j of four arrays at once
    pub fn blocks16(&self, b0: u64) -> [[u32; GROUP_BLOCKS]; 4] {
        let mut c = [[0u32; GROUP_BLOCKS]; 4];
        for j in 0..GROUP_BLOCKS {
            let b = b0.wrapping_add(j as u64);
            c[0][j] = b as u32;
            c[1][j] = (b >> 32) as u32;
            c[2][j] = self.offset as u32;
            c[3][j] = (self.offset >> 32) as u32;
        }
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        #[cfg(target_arch = "x86_64")]
        match crate::isa::level() {
            // SAFETY: level Avx512 implies the CPU has AVX-512 F (run-time check).
            crate::isa::Level::Avx512 => return unsafe { x86::philox16_avx512(c, key) },
            // SAFETY: level Avx2 implies the CPU has AVX2 (run-time check).
            crate::isa::Level::Avx2 => return unsafe { x86::philox16_avx2(c, key) },
            crate::isa::Level::Portable => {}
        }
        philox16_portable(c, key)
    }
}

/// Philox4x32-10 of sixteen counters, lane by lane.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane j of four arrays at once
fn philox16_portable(
    mut c: [[u32; GROUP_BLOCKS]; 4],
    mut key: [u32; 2],
) -> [[u32; GROUP_BLOCKS]; 4] {
    for r in 0..10 {
        if r > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        for j in 0..GROUP_BLOCKS {
            let (hi0, lo0) = mulhilo(M0, c[0][j]);
            let (hi1, lo1) = mulhilo(M1, c[2][j]);
            let n0 = hi1 ^ c[1][j] ^ key[0];
            let n2 = hi0 ^ c[3][j] ^ key[1];
            c[0][j] = n0;
            c[1][j] = lo1;
            c[2][j] = n2;
            c[3][j] = lo0;
        }
    }
    c
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Philox4x32-10 on sixteen counters held in vector registers.
    //!
    //! The 32x32 -> 64-bit products come from `mul_epu32`, which multiplies
    //! the even 32-bit lanes; the odd lanes are shifted down and multiplied
    //! separately, and blends put the high and low halves back in place.

    use super::{GROUP_BLOCKS, M0, M1, W0, W1};
    use std::arch::x86_64::*;

    type Words = [[u32; GROUP_BLOCKS]; 4];

    /// # Safety
    /// The CPU must support AVX-512 F.
    ///
    /// Each counter word sits in the low half of a 64-bit lane (eight
    /// blocks per register, two registers per word), so `mul_epu32` gives
    /// the whole 64-bit product in place: its low half is the `lo` word,
    /// and one swap or shift brings `hi` down. The upper halves of the
    /// lanes fill with garbage that never reaches a lower half (`mul_epu32`
    /// reads only the lower halves, xor is bitwise), and the final packing
    /// drops it. Per round and 16 blocks: 4 multiplies, 4 swaps or shifts
    /// and 4 three-way xors, against 4 multiplies, 6 shifts, 4 blends and
    /// 2 xors with the words packed in 32-bit lanes (AVX2 keeps the packed
    /// layout: there it is the faster one). `#[inline]`, so that the words
    /// stay in registers in the kernels instead of going back through memory.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn philox16_avx512(c: Words, key: [u32; 2]) -> Words {
        // Words `w[8h .. 8h + 8]` widened into the 64-bit lanes of one register.
        let load = |w: &[u32; GROUP_BLOCKS], h: usize| {
            // SAFETY: `w[8h .. 8h + 8]` is 32 readable bytes; unaligned loads are allowed.
            _mm512_cvtepu32_epi64(unsafe { _mm256_loadu_si256(w[8 * h..].as_ptr().cast()) })
        };
        let mut v = [[_mm512_setzero_si512(); 4]; 2];
        for (h, vh) in v.iter_mut().enumerate() {
            for (w, vw) in vh.iter_mut().enumerate() {
                *vw = load(&c[w], h);
            }
        }
        let (m0, m1) = (_mm512_set1_epi64(M0 as i64), _mm512_set1_epi64(M1 as i64));
        let (mut k0, mut k1) = (key[0], key[1]);
        for r in 0..10 {
            if r > 0 {
                k0 = k0.wrapping_add(W0);
                k1 = k1.wrapping_add(W1);
            }
            let (kv0, kv1) = (_mm512_set1_epi32(k0 as i32), _mm512_set1_epi32(k1 as i32));
            for [c0, c1, c2, c3] in v.iter_mut() {
                let p0 = _mm512_mul_epu32(*c0, m0);
                let p1 = _mm512_mul_epu32(*c2, m1);
                // hi comes down by a swap of the lane's 32-bit halves (0xb1)
                // or by a shift: one of each spreads them over two ports.
                let hi0 = _mm512_shuffle_epi32::<0xb1>(p0);
                let hi1 = _mm512_srli_epi64::<32>(p1);
                // 0x96 is the truth table of a ^ b ^ c.
                *c0 = _mm512_ternarylogic_epi32::<0x96>(hi1, *c1, kv0);
                *c1 = p1;
                *c2 = _mm512_ternarylogic_epi32::<0x96>(hi0, *c3, kv1);
                *c3 = p0;
            }
        }
        // The low halves of the lanes of both registers, in block order.
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut out = [[0u32; GROUP_BLOCKS]; 4];
        for (w, dst) in out.iter_mut().enumerate() {
            let packed = _mm512_permutex2var_epi32(v[0][w], even, v[1][w]);
            // SAFETY: `dst` is 64 writable bytes; unaligned stores are allowed.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed) };
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn philox16_avx2(c: Words, key: [u32; 2]) -> Words {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn mulhilo(m: __m256i, a: __m256i) -> (__m256i, __m256i) {
            let even = _mm256_mul_epu32(a, m);
            let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), m);
            let hi = _mm256_blend_epi32::<0xaa>(_mm256_srli_epi64::<32>(even), odd);
            let lo = _mm256_blend_epi32::<0xaa>(even, _mm256_slli_epi64::<32>(odd));
            (hi, lo)
        }
        let mut out = [[0u32; GROUP_BLOCKS]; 4];
        let (m0, m1) = (_mm256_set1_epi32(M0 as i32), _mm256_set1_epi32(M1 as i32));
        for half in 0..2 {
            let at = 8 * half;
            // SAFETY: each `c[w][at..at + 8]` is 32 readable bytes; unaligned loads are allowed.
            let [mut c0, mut c1, mut c2, mut c3] =
                c.map(|w| unsafe { _mm256_loadu_si256(w[at..at + 8].as_ptr().cast()) });
            let (mut k0, mut k1) = (key[0], key[1]);
            for r in 0..10 {
                if r > 0 {
                    k0 = k0.wrapping_add(W0);
                    k1 = k1.wrapping_add(W1);
                }
                let (hi0, lo0) = mulhilo(m0, c0);
                let (hi1, lo1) = mulhilo(m1, c2);
                c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(k0 as i32));
                c1 = lo1;
                c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(k1 as i32));
                c3 = lo0;
            }
            for (dst, v) in out.iter_mut().zip([c0, c1, c2, c3]) {
                // SAFETY: `dst[at..at + 8]` is 32 writable bytes; unaligned stores are allowed.
                unsafe { _mm256_storeu_si256(dst[at..at + 8].as_mut_ptr().cast(), v) };
            }
        }
        out
    }
}

/// The seed of child `child` forked from a generator at `(seed, offset)`.
///
/// Children are keyed by Philox words drawn from the reserved fork domain of
/// the parent's stream, so they are as independent of each other and of the
/// parent as Philox blocks under different keys are.
pub fn fork_seed(seed: u64, offset: u64, child: u64) -> u64 {
    let s = Stream::new(seed, offset | FORK_DOMAIN);
    s.word64(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (`kat_vectors`, philox4x32 10).
    #[test]
    fn random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want);
        }
    }

    #[test]
    fn stream_layout_puts_block_and_offset_in_the_counter() {
        let s = Stream::new(0x299f_31d0_a409_3822, 0x0370_7344_1319_8a2e);
        let b = s.block(0x85a3_08d3_243f_6a88);
        assert_eq!(b, [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]);
        let b = s.block(0x0123_4567_89ab);
        assert_eq!(s.word(4 * 0x0123_4567_89ab + 2), b[2]);
        let want = u64::from(b[2]) | (u64::from(b[3]) << 32);
        assert_eq!(s.word64(2 * 0x0123_4567_89ab + 1), want);
    }

    #[test]
    fn sixteen_blocks_at_once_match_one_at_a_time() {
        let s = Stream::new(0xdead_beef_0123_4567, 0x1_0000_0007);
        for b0 in [0u64, 5, (1 << 32) - 3] {
            let g = s.blocks16(b0);
            for (j, b0j) in (b0..b0 + GROUP_BLOCKS as u64).enumerate() {
                let b = s.block(b0j);
                for (w, &want) in b.iter().enumerate() {
                    assert_eq!(g[w][j], want);
                }
            }
        }
    }

    #[test]
    fn forks_differ_from_each_other_and_from_the_parent() {
        let a = fork_seed(7, 3, 0);
        let b = fork_seed(7, 3, 1);
        let c = fork_seed(7, 4, 0);
        assert!(a != b && a != c && b != c && a != 7);
        assert_eq!(a, fork_seed(7, 3, 0));
    }
}
