//! Tiles of strided rows.
//!
//! When rows are strided (`inner > 1`), kernels process `TILE` neighbouring
//! rows `(o, j0 .. j0 + width)` together: each of the `k` steps along the
//! category axis then reads `width` contiguous elements, and the loops run
//! across the rows of the tile (vectorized). Sums keep the row kernels' lane
//! order (category `t` into lane `t % LANES`, lanes combined pairwise), so a
//! tile gives the same bits as its rows computed one by one.

use super::noise::Noise;
use super::{Dims, KernelError};
use crate::math::{GroupCache, Real};
use crate::rng::Stream;

/// Rows per tile (at most).
pub(crate) const TILE: usize = 64;

/// The tiling of a strided view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    pub dims: Dims,
    pub width: usize,
    per_outer: usize,
}

/// One tile: outer index `o`, first row `j0` of the inner axis, `w` rows,
/// and the flat index of its element `(o, 0, j0)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub o: usize,
    pub j0: usize,
    pub w: usize,
    pub base: usize,
}

impl Tile {
    /// The row number of column `j` of the tile.
    #[inline(always)]
    pub fn row(&self, dims: &Dims, j: usize) -> usize {
        self.o * dims.inner + self.j0 + j
    }
    /// The flat index of element `(o, t, j0)`.
    #[inline(always)]
    pub fn at(&self, dims: &Dims, t: usize) -> usize {
        self.base + t * dims.inner
    }
}

impl Tiles {
    pub fn new(dims: Dims) -> Self {
        let width = dims.inner.clamp(1, TILE);
        Tiles {
            dims,
            width,
            per_outer: dims.inner.div_ceil(width),
        }
    }

    /// The view the thread pool schedules: one unit per tile, costed in elements.
    pub fn units(&self) -> Dims {
        Dims::new(
            self.dims.outer * self.per_outer,
            self.dims.k * self.width,
            1,
        )
    }

    #[inline(always)]
    pub fn locate(&self, u: usize) -> Tile {
        let d = &self.dims;
        let (o, j0) = (u / self.per_outer, (u % self.per_outer) * self.width);
        Tile {
            o,
            j0,
            w: self.width.min(d.inner - j0),
            base: o * d.k * d.inner + j0,
        }
    }

    /// The tile's first fault in flat order, as the row kernels report it:
    /// NaN or +inf logits, or a row whose logits are all -inf. Writes each
    /// row's largest logit to `top` (as `check_logits` returns it).
    #[inline(always)]
    pub fn check<T: Real>(
        &self,
        x: &[T],
        tile: &Tile,
        any: &mut [bool],
        top: &mut [T],
    ) -> Result<(), KernelError> {
        let d = &self.dims;
        let any = &mut any[..tile.w];
        let top = &mut top[..tile.w];
        any.fill(false);
        top.fill(T::NEG_INFINITY);
        let mut bad = false;
        for t in 0..d.k {
            let xs = &x[tile.at(d, t)..][..tile.w];
            for ((a, m), &v) in any.iter_mut().zip(top.iter_mut()).zip(xs) {
                bad |= v.is_nan() | (v == T::INFINITY);
                // NaN counts as not masked: that row's fault is the NaN.
                *a |= v != T::NEG_INFINITY;
                *m = m.max(v);
            }
        }
        let masked = any.iter().position(|&a| !a).filter(|_| d.k > 0);
        if !bad && masked.is_none() {
            return Ok(());
        }
        let element = (0..d.k * tile.w)
            .map(|i| tile.at(d, i / tile.w) + i % tile.w)
            .find(|&i| x[i].is_nan() || x[i] == T::INFINITY);
        let all_masked = |j: usize| KernelError::AllMasked {
            row: tile.row(d, j),
        };
        match (element, masked) {
            (Some(i), Some(j)) if tile.base + j < i => Err(all_masked(j)),
            (Some(i), _) if x[i].is_nan() => Err(KernelError::NanLogit { index: i }),
            (Some(i), _) => Err(KernelError::PosInfLogit { index: i }),
            (None, Some(j)) => Err(all_masked(j)),
            (None, None) => Ok(()),
        }
    }
}

/// `arg[j]` = the first `t` with `v[t * stride + j] == m[j]`.
#[inline(always)]
pub(crate) fn first_max_per_column<T: Real>(
    v: &[T],
    stride: usize,
    k: usize,
    m: &[T],
    arg: &mut [usize],
) {
    // Walking the categories downwards, the last match written is the first
    // maximum; the selects have no branch, so the loop over columns vectorizes.
    arg.fill(0);
    let w = arg.len();
    for t in (0..k).rev() {
        let row = &v[t * stride..t * stride + w];
        for ((a, &x), &mj) in arg.iter_mut().zip(row).zip(m) {
            *a = if x == mj { t } else { *a };
        }
    }
}

/// Combines `LANES` rows of per-column partial sums (`acc[l * stride + j]`)
/// pairwise, as `combine_lanes` does for one row; the totals end in `acc[..w]`.
#[inline(always)]
pub(crate) fn combine_lane_rows<T: Real>(acc: &mut [T], stride: usize, w: usize) {
    let mut width = T::LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            for j in 0..w {
                let other = acc[(l + width) * stride + j];
                acc[l * stride + j] = acc[l * stride + j] + other;
            }
        }
    }
}

/// `v[t * stride + j] = (x - top[j]) + g` for the tile's elements `(o, t, j0
/// + j)`, with `g` the Gumbel noise of element `first + index` and `top[j]`
/// the row's largest logit (see `add_logits`); returns the column maxima in `m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn perturb_tile<T: Real>(
    x: &[T],
    dims: &Dims,
    tile: &Tile,
    stream: &Stream,
    first: u64,
    top: &[T],
    v: &mut [T],
    stride: usize,
    m: &mut [T],
    cache: &mut GroupCache<T>,
) {
    m.fill(T::NEG_INFINITY);
    for t in 0..dims.k {
        let at = tile.at(dims, t);
        let vt = &mut v[t * stride..][..tile.w];
        T::fill_uniform_cached(stream, first + at as u64, vt, cache);
        for ((vj, &xj), &cj) in vt.iter_mut().zip(&x[at..at + tile.w]).zip(top) {
            *vj = (xj - cj) + Noise::Gumbel.from_uniform(*vj);
        }
        for (mj, &vj) in m.iter_mut().zip(vt.iter()) {
            *mj = mj.max(vj);
        }
    }
}

/// Column softmax numerators and normalizers of `k` rows of `w` columns laid
/// out as `v[t * stride + j]`: `v <- exp((v - m) * inv)` summed by lanes
/// (`acc`, `LANES * stride`), and `inv` (the inverse temperatures on entry)
/// becomes `1 / sum` per column — the row kernel's operations in its order.
#[inline(always)]
pub(crate) fn column_softmax<T: Real>(
    v: &mut [T],
    stride: usize,
    k: usize,
    m: &[T],
    inv: &mut [T],
    acc: &mut [T],
) {
    let w = m.len();
    acc.fill(T::ZERO);
    for t in 0..k {
        let lane = (t % T::LANES) * stride;
        let vt = &mut v[t * stride..][..w];
        let at = &mut acc[lane..lane + w];
        for (((vj, aj), &mj), &ij) in vt.iter_mut().zip(at).zip(m).zip(inv.iter()) {
            *vj = ((*vj - mj) * ij).exp_nonpositive();
            *aj = *aj + *vj;
        }
    }
    combine_lane_rows(acc, stride, w);
    for (i, &sum) in inv.iter_mut().zip(acc.iter()) {
        *i = T::ONE / sum;
    }
}

/// Per-thread scratch memory of the tiled kernels (`TILE` rows at a time).
pub(crate) struct TileScratch<T> {
    /// The tile's values, category-major (`v[t * width + j]`).
    pub(crate) v: Vec<T>,
    /// Per-lane partial sums of each row.
    pub(crate) acc: Vec<T>,
    /// The largest logit of each row.
    pub(crate) top: Vec<T>,
    /// The largest perturbed value of each row.
    pub(crate) m: Vec<T>,
    /// Each row's inverse temperature (then of its sum).
    pub(crate) inv: Vec<T>,
    /// Each row's first arg-maximum.
    pub(crate) arg: Vec<usize>,
    /// Whether a row has a logit that is not -inf.
    pub(crate) any: Vec<bool>,
    /// The last partial group of uniforms.
    pub(crate) cache: GroupCache<T>,
}

impl<T: Real> TileScratch<T> {
    pub(crate) fn new(k: usize, w: usize) -> Self {
        TileScratch {
            v: vec![T::ZERO; k * w],
            acc: vec![T::ZERO; T::LANES * w],
            top: vec![T::ZERO; w],
            m: vec![T::ZERO; w],
            inv: vec![T::ZERO; w],
            arg: vec![0; w],
            any: vec![false; w],
            cache: GroupCache::new(),
        }
    }
}
