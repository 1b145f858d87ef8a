//! The order of a row of perturbed logits by least-significant-digit radix
//! sort: largest first, ties to the smaller index (the order `gumbel_topk`
//! defines), in a few linear passes instead of `k log k` comparisons.
//!
//! Each value is mapped to an unsigned integer key whose increasing order is
//! the value's decreasing order, and packed above its index into one word
//! (`key << 32 | index`). A stable sort on the key bytes, lowest byte first,
//! leaves equal keys in index order; a byte every key shares is skipped.

use crate::math::Real;

/// Bits of the index below the key in a packed word.
const INDEX_BITS: u32 = 32;

/// Buckets of one digit (a byte).
const RADIX: usize = 256;

/// A float type with an order-preserving integer key.
pub trait SortKey: Real {
    /// A key and an index packed as one unsigned word.
    type Packed: Packed;
    /// The key of `self` (`self` not NaN) above `index`: packed words sort
    /// in increasing order as the values in decreasing order. `-0.0` and
    /// `0.0` have the same key, as they compare equal.
    fn pack(self, index: u32) -> Self::Packed;
}

/// The most key bytes a radix sort sorts on.
const MAX_RADIX_BYTES: usize = 4;

/// A packed key and index.
pub trait Packed: Copy + Default + Send + Ord {
    /// Bytes of the key.
    const KEY_BYTES: usize;
    /// The key's high bytes the radix passes sort on; the few runs of words
    /// equal on those are then sorted whole.
    const RADIX_BYTES: usize;
    /// Byte `d` of the key (0 the least significant).
    fn digit(self, d: usize) -> usize;
    /// The index packed with the key.
    fn index(self) -> usize;
    /// The key's high bytes the radix passes sort on, shifted down.
    fn radix_part(self) -> Self;
}

impl Packed for u64 {
    const KEY_BYTES: usize = 4;
    const RADIX_BYTES: usize = 3;
    #[inline(always)]
    fn digit(self, d: usize) -> usize {
        ((self >> (INDEX_BITS as usize + 8 * d)) & 0xFF) as usize
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as u32 as usize
    }
    #[inline(always)]
    fn radix_part(self) -> Self {
        self >> (INDEX_BITS as usize + 8 * (Self::KEY_BYTES - Self::RADIX_BYTES))
    }
}

impl Packed for u128 {
    const KEY_BYTES: usize = 8;
    const RADIX_BYTES: usize = 4;
    #[inline(always)]
    fn digit(self, d: usize) -> usize {
        ((self >> (INDEX_BITS as usize + 8 * d)) & 0xFF) as usize
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as u32 as usize
    }
    #[inline(always)]
    fn radix_part(self) -> Self {
        self >> (INDEX_BITS as usize + 8 * (Self::KEY_BYTES - Self::RADIX_BYTES))
    }
}

impl SortKey for f32 {
    type Packed = u64;
    #[inline(always)]
    fn pack(self, index: u32) -> u64 {
        // `+ 0.0` turns -0.0 into 0.0 and changes no other value.
        let u = (self + 0.0).to_bits();
        // Negative values keep their bits (a larger magnitude sorts later);
        // the others flip all but the sign bit, so they come first, largest first.
        let neg = ((u as i32) >> 31) as u32;
        let key = u ^ (!neg & 0x7FFF_FFFF);
        (u64::from(key) << INDEX_BITS) | u64::from(index)
    }
}

impl SortKey for f64 {
    type Packed = u128;
    #[inline(always)]
    fn pack(self, index: u32) -> u128 {
        let u = (self + 0.0).to_bits();
        let neg = ((u as i64) >> 63) as u64;
        let key = u ^ (!neg & 0x7FFF_FFFF_FFFF_FFFF);
        (u128::from(key) << INDEX_BITS) | u128::from(index)
    }
}

/// The longest row [`sort_descending`] takes: indices fit in the packed word.
pub(crate) const MAX_LEN: usize = u32::MAX as usize;

/// Per-thread memory of [`sort_descending`], reused from row to row.
pub(crate) struct Radix<P> {
    a: Vec<P>,
    b: Vec<P>,
    counts: Box<[[u32; RADIX]; MAX_RADIX_BYTES]>,
}

impl<P: Packed> Radix<P> {
    pub(crate) fn new() -> Self {
        Radix {
            a: Vec::new(),
            b: Vec::new(),
            counts: Box::new([[0; RADIX]; MAX_RADIX_BYTES]),
        }
    }
}

/// The indices of `w` (no NaN, at most [`MAX_LEN`] values) in decreasing
/// order of value, ties to the smaller index, as packed words: read each
/// one's [`Packed::index`].
#[inline(always)]
pub(crate) fn sort_descending<'a, T: SortKey>(
    w: &[T],
    radix: &'a mut Radix<T::Packed>,
) -> &'a [T::Packed] {
    let n = w.len();
    debug_assert!(n <= MAX_LEN);
    let Radix { a, b, counts } = radix;
    a.resize(n, T::Packed::default());
    b.resize(n, T::Packed::default());
    for (i, (p, &v)) in a.iter_mut().zip(w).enumerate() {
        *p = v.pack(i as u32);
    }
    let counts = &mut counts[..T::Packed::RADIX_BYTES];
    for c in counts.iter_mut() {
        c.fill(0);
    }
    let low = T::Packed::KEY_BYTES - T::Packed::RADIX_BYTES;
    for &p in a.iter() {
        for d in 0..T::Packed::RADIX_BYTES {
            counts[d][p.digit(low + d)] += 1;
        }
    }
    let (mut src, mut dst) = (&mut a[..], &mut b[..]);
    for (c, d) in counts.iter_mut().zip(low..) {
        // A byte every key shares leaves the order as it is.
        if n == 0 || c[src[0].digit(d)] as usize == n {
            continue;
        }
        let mut sum = 0;
        for slot in c.iter_mut() {
            let here = *slot;
            *slot = sum;
            sum += here;
        }
        for &p in src.iter() {
            let slot = &mut c[p.digit(d)];
            dst[*slot as usize] = p;
            *slot += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    // Words equal on the sorted bytes are next to each other, in runs
    // that are short and few: each is sorted whole.
    if low > 0 {
        let mut start = 0;
        for i in 1..n {
            if src[i].radix_part() != src[i - 1].radix_part() {
                src[start..i].sort_unstable();
                start = i;
            }
        }
        src[start..].sort_unstable();
    }
    src
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn plain<T: Real>(w: &[T]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| match w[b].partial_cmp(&w[a]) {
            Some(Ordering::Equal) | None => a.cmp(&b),
            Some(o) => o,
        });
        order
    }

    fn sorted<T: SortKey>(w: &[T]) -> Vec<usize> {
        let mut radix = Radix::new();
        sort_descending(w, &mut radix)
            .iter()
            .map(|p| p.index())
            .collect()
    }

    #[test]
    fn radix_order_is_the_comparison_order_with_ties_to_the_smaller_index() {
        let special = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        for n in [0, 1, 2, 3, 10, 255, 256, 257, 1000] {
            // Few distinct values (many ties), and values of every scale.
            let w: Vec<f64> = (0..n)
                .map(|_| match next() % 3 {
                    0 => special[(next() % special.len() as u64) as usize],
                    1 => (next() % 7) as f64 - 3.0,
                    _ => (next() as f64 - 2e9) * 10f64.powi((next() % 40) as i32 - 20),
                })
                .collect();
            assert_eq!(sorted(&w), plain(&w), "f64, n = {n}");
            let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            assert_eq!(sorted(&w), plain(&w), "f32, n = {n}");
        }
    }

    #[test]
    fn scratch_is_reused_across_rows_of_other_lengths() {
        let mut radix = Radix::new();
        for w in [
            vec![3.0f32, 1.0, 2.0, 2.0],
            vec![5.0],
            vec![],
            vec![0.5, 7.0],
        ] {
            let got: Vec<usize> = sort_descending(&w, &mut radix)
                .iter()
                .map(|p| p.index())
                .collect();
            assert_eq!(got, plain(&w));
        }
    }
}
