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
    fn forks_differ_from_each_other_and_from_the_parent() {
        let a = fork_seed(7, 3, 0);
        let b = fork_seed(7, 3, 1);
        let c = fork_seed(7, 4, 0);
        assert!(a != b && a != c && b != c && a != 7);
        assert_eq!(a, fork_seed(7, 3, 0));
    }
}
