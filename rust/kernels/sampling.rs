//! Categorical draws by Gumbel-max and ordered draws without replacement by
//! Gumbel-top-k.

use super::noise::{fill_ahead, fill_strided, Ahead, Noise};
use super::order::{self, Packed, Radix, SortKey};
use super::rows::{add_logits, check_logits, first_index_of, row_of};
use super::tiles::{first_max_per_column, perturb_tile, TileScratch, Tiles};
use super::{
    check_len, each_row, row_batches, run_rows, run_units, short, Dims, KernelError, RowKernel,
    SharedMut, BATCH,
};
use crate::math::{GroupCache, Real};
use crate::memory::prefer_huge_pages;
use crate::rng::Stream;
use std::cmp::Ordering;
use std::ops::Range;

/// `check_logits` of a row that must have a category to draw: its largest logit.
#[inline(always)]
fn check_row<T: Real>(x: &[T], dims: &Dims, r: usize) -> Result<T, KernelError> {
    if dims.k == 0 {
        return Err(KernelError::AllMasked { row: r });
    }
    check_logits(x, dims, r)
}

/// Per-thread scratch memory of the row kernels here.
struct Scratch<T> {
    /// A strided row's logits, gathered.
    x: Vec<T>,
    /// A row's noise, then its perturbed logits.
    w: Vec<T>,
    /// The noise of a batch of short contiguous rows (empty unless rows batch).
    batch: Vec<T>,
    /// The order of a row's categories (top-k).
    order: Vec<usize>,
    /// The last partial group of uniforms.
    cache: GroupCache<T>,
}

impl<T: Real> Scratch<T> {
    fn new(dims: &Dims) -> Self {
        let k = dims.k;
        let batch = if dims.batches_rows() { BATCH } else { 0 };
        Scratch {
            x: vec![T::ZERO; k],
            w: vec![T::ZERO; k],
            batch: vec![T::ZERO; batch],
            order: Vec::new(),
            cache: GroupCache::new(),
        }
    }
}

struct Categorical<'a, T> {
    x: &'a [T],
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: SharedMut<i64>,
}

impl<T: Real> RowKernel for Categorical<'_, T> {
    type Scratch = Scratch<T>;
    fn scratch(&self) -> Scratch<T> {
        Scratch::new(&self.dims)
    }

    /// Short contiguous rows: the noise of `BATCH / k` rows at once (the
    /// noise of sample `s` of rows `r0 .. r1` is one contiguous run), then
    /// each row's draw as `row` makes it.
    #[inline(always)]
    fn rows(
        &self,
        rows: Range<usize>,
        scratch: &mut Self::Scratch,
        fault: &mut impl FnMut(KernelError),
    ) {
        // (No draw at all: `row` still reports each row's faults.)
        if !self.dims.batches_rows() || self.num_samples == 0 {
            return each_row(self, rows, scratch, fault);
        }
        let Scratch {
            batch: z, cache, ..
        } = scratch;
        let (k, n) = (self.dims.k, self.dims.len());
        let simd = short::available::<T>(k);
        for (Range { start: r0, end: r1 }, next) in row_batches(rows, k) {
            let r2 = next.end;
            for s in 0..self.num_samples {
                let noise = &mut z[..(r1 - r0) * k];
                let next = [Ahead::of(&self.x[r1 * k..r2 * k])];
                let next = if s == 0 { &next[..] } else { &[] };
                let start = (s * n + r0 * k) as u64;
                fill_ahead(Noise::Gumbel, &self.stream, start, noise, cache, next);
                for (r, w) in (r0..r1).zip(noise.chunks_exact_mut(k)) {
                    let xr = &self.x[r * k..(r + 1) * k];
                    let arg = match simd {
                        Some(token) if short::live(token, xr).is_some() => {
                            Ok(short::first_argmax(token, xr, w))
                        }
                        _ => check_row(xr, &self.dims, r).map(|top| {
                            add_logits(w, xr, top);
                            first_index_of(w, T::lane_max(w))
                        }),
                    };
                    match arg {
                        // SAFETY: output slots of row `r` are written by this thread only.
                        Ok(arg) => unsafe { self.out.write(r * self.num_samples + s, arg as i64) },
                        Err(e) if s == 0 => fault(e),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn row(&self, r: usize, s: &mut Scratch<T>) -> Result<(), KernelError> {
        let Scratch {
            x: xr, w, cache, ..
        } = s;
        let dims = &self.dims;
        let xr = row_of(self.x, dims, r, xr);
        let top = check_row(xr, dims, r)?;
        let base = dims.base(r) as u64;
        let n = dims.len() as u64;
        for s in 0..self.num_samples {
            let start = s as u64 * n + base;
            if dims.inner == 1 {
                // The next row's logits, while the first draw's noise is drawn.
                let next = [Ahead::within(self.x, base as usize + dims.k, dims.k)];
                let next = if s == 0 { &next[..] } else { &[] };
                fill_ahead(Noise::Gumbel, &self.stream, start, w, cache, next);
            } else {
                fill_strided(
                    Noise::Gumbel,
                    &self.stream,
                    start,
                    dims.inner as u64,
                    w,
                    cache,
                );
            }
            add_logits(w, xr, top);
            let arg = first_index_of(w, T::lane_max(w));
            // SAFETY: output slots of row `r` are written by this thread only.
            unsafe { self.out.write(r * self.num_samples + s, arg as i64) };
        }
        Ok(())
    }
}

/// The strided-row form of `Categorical`, by tiles of rows (the same draws).
struct TiledCategorical<'a, T> {
    c: Categorical<'a, T>,
    tiles: Tiles,
}

impl<T: Real> RowKernel for TiledCategorical<'_, T> {
    type Scratch = TileScratch<T>;
    fn scratch(&self) -> TileScratch<T> {
        TileScratch::new(self.c.dims.k, self.tiles.width)
    }

    #[inline(always)]
    fn row(&self, u: usize, s: &mut TileScratch<T>) -> Result<(), KernelError> {
        let TileScratch {
            v,
            m,
            arg,
            any,
            top,
            cache,
            ..
        } = s;
        let c = &self.c;
        let d = &c.dims;
        let tile = self.tiles.locate(u);
        let (w, stride) = (tile.w, self.tiles.width);
        self.tiles.check(c.x, &tile, any, top)?;
        let n = d.len() as u64;
        for s in 0..c.num_samples {
            let m = &mut m[..w];
            let first = s as u64 * n;
            perturb_tile(
                c.x,
                d,
                &tile,
                &c.stream,
                first,
                &top[..w],
                v,
                stride,
                m,
                cache,
            );
            first_max_per_column(v, stride, d.k, m, &mut arg[..w]);
            for (j, &a) in arg[..w].iter().enumerate() {
                // SAFETY: the output slots of the tile's rows belong to this thread.
                unsafe { c.out.write(tile.row(d, j) * c.num_samples + s, a as i64) };
            }
        }
        Ok(())
    }
}

/// `num_samples` independent draws per row from `softmax(x)` along `k`.
///
/// Draw `s` of row `r` is the first argmax of `(x - max x) + g` (see
/// `add_logits`), where `g` is the
/// Gumbel noise of elements `s * dims.len() + i` — the noise of a tensor of
/// shape `(num_samples, *x.shape)`. `out[r * num_samples + s]` receives it.
pub fn sample_categorical<T: Real>(
    x: &[T],
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: &mut [i64],
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    check_len("output", out.len(), dims.rows() * num_samples)?;
    let kernel = Categorical {
        x,
        dims,
        num_samples,
        stream,
        out: SharedMut::new(out),
    };
    if dims.inner == 1 || dims.k == 0 {
        return run_rows(&dims, &kernel);
    }
    let tiled = TiledCategorical {
        c: kernel,
        tiles: Tiles::new(dims),
    };
    run_units(&tiled.tiles.units(), &dims, &tiled)
}

/// Up to this many draws, top-k keeps a sorted list in one pass instead of
/// selecting and sorting (beyond, the selection is faster).
const SMALL_TOPK: usize = 16;

/// From this many categories, and draws of half of them or more, top-k
/// orders the whole row by radix sort (below, its fixed cost per row is
/// more than a comparison sort's, or selecting and sorting the draws alone
/// is faster).
const RADIX_MIN_LEN: usize = 32;

struct TopK<'a, T> {
    x: &'a [T],
    dims: Dims,
    top_k: usize,
    stream: Stream,
    out: SharedMut<i64>,
}

/// Per-thread scratch memory of `TopK`.
struct TopKScratch<T: SortKey> {
    rows: Scratch<T>,
    radix: Radix<T::Packed>,
}

impl<T: SortKey> TopK<'_, T> {
    /// The faults of row `r` (logits `xr`): those of every draw, and fewer
    /// categories that are not masked than `top_k`.
    /// Returns the row's largest logit. With no draw asked for (`top_k = 0`),
    /// an empty row is not a fault.
    #[inline(always)]
    fn check(&self, r: usize, xr: &[T]) -> Result<T, KernelError> {
        let top = if self.top_k == 0 {
            check_logits(xr, &self.dims, r)?
        } else {
            check_row(xr, &self.dims, r)?
        };
        let available = xr.iter().filter(|&&v| v > T::NEG_INFINITY).count();
        if available < self.top_k {
            return Err(KernelError::TooFewUnmasked {
                row: r,
                available,
                requested: self.top_k,
            });
        }
        Ok(top)
    }

    /// Writes the top `top_k` of row `r`'s perturbed logits `w`.
    #[inline(always)]
    fn select(&self, r: usize, w: &[T], order: &mut Vec<usize>, radix: &mut Radix<T::Packed>) {
        let (dims, top_k) = (&self.dims, self.top_k);
        if top_k == 0 {
            return;
        }
        let base = Dims::new(dims.outer, top_k, dims.inner).base(r);
        if top_k > SMALL_TOPK
            && 2 * top_k >= dims.k
            && (RADIX_MIN_LEN..=order::MAX_LEN).contains(&dims.k)
        {
            let sorted = order::sort_descending(w, radix);
            for (t, p) in sorted[..top_k].iter().enumerate() {
                // SAFETY: output slots of row `r` are written by this thread only.
                unsafe { self.out.write(base + t * dims.inner, p.index() as i64) };
            }
            return;
        }
        let by_score = |a: &usize, b: &usize| match w[*b].partial_cmp(&w[*a]) {
            Some(Ordering::Equal) | None => a.cmp(b),
            Some(o) => o,
        };
        order.clear();
        if top_k <= SMALL_TOPK {
            // A sorted list of the best top_k so far, by one pass in index order;
            // a new score goes after every equal one (those have smaller
            // indices). Once the list is full, whole chunks whose scores all
            // lose to the top_k-th best are skipped by a branch-free test.
            /// Scores skipped together when every one loses to the bar.
            const SKIP_RUN: usize = 32;
            let mut best = [0usize; SMALL_TOPK];
            let mut n = 0;
            let mut bar = T::NEG_INFINITY;
            for (c, chunk) in w.chunks(SKIP_RUN).enumerate() {
                if n == top_k && !chunk.iter().fold(false, |any, &v| any | (v > bar)) {
                    continue;
                }
                for (j, &v) in chunk.iter().enumerate() {
                    if n == top_k && v <= bar {
                        continue;
                    }
                    n = (n + 1).min(top_k);
                    let mut p = n - 1;
                    while p > 0 && v > w[best[p - 1]] {
                        best[p] = best[p - 1];
                        p -= 1;
                    }
                    best[p] = c * SKIP_RUN + j;
                    if n == top_k {
                        bar = w[best[top_k - 1]];
                    }
                }
            }
            order.extend_from_slice(&best[..top_k]);
        } else {
            order.extend(0..dims.k);
            if top_k < dims.k {
                order.select_nth_unstable_by(top_k - 1, by_score);
            }
            order[..top_k].sort_unstable_by(by_score);
        }
        for (t, &idx) in order[..top_k].iter().enumerate() {
            // SAFETY: output slots of row `r` are written by this thread only.
            unsafe { self.out.write(base + t * dims.inner, idx as i64) };
        }
    }
}

impl<T: SortKey> RowKernel for TopK<'_, T> {
    type Scratch = TopKScratch<T>;
    fn scratch(&self) -> TopKScratch<T> {
        let mut rows = Scratch::new(&self.dims);
        rows.order.reserve(self.dims.k);
        TopKScratch {
            rows,
            radix: Radix::new(),
        }
    }

    /// Short contiguous rows: the noise of `BATCH / k` rows at once, then
    /// each row's selection as `row` makes it.
    #[inline(always)]
    fn rows(
        &self,
        rows: Range<usize>,
        scratch: &mut Self::Scratch,
        fault: &mut impl FnMut(KernelError),
    ) {
        if !self.dims.batches_rows() {
            return each_row(self, rows, scratch, fault);
        }
        let TopKScratch {
            rows:
                Scratch {
                    order,
                    batch: z,
                    cache,
                    ..
                },
            radix,
        } = scratch;
        let k = self.dims.k;
        let simd = short::available::<T>(k);
        for (Range { start: r0, end: r1 }, next) in row_batches(rows, k) {
            let r2 = next.end;
            let noise = &mut z[..(r1 - r0) * k];
            let next = [Ahead::of(&self.x[r1 * k..r2 * k])];
            fill_ahead(
                Noise::Gumbel,
                &self.stream,
                (r0 * k) as u64,
                noise,
                cache,
                &next,
            );
            for (r, w) in (r0..r1).zip(noise.chunks_exact_mut(k)) {
                let xr = &self.x[r * k..(r + 1) * k];
                if let Some(token) = simd {
                    if short::live(token, xr).is_some_and(|n| n >= self.top_k) {
                        // SAFETY: the output slots of row `r` belong to this thread.
                        let dst = unsafe { self.out.slice(r * self.top_k, self.top_k) };
                        short::top(token, xr, w, dst);
                        continue;
                    }
                }
                match self.check(r, xr) {
                    Ok(top) => {
                        add_logits(w, xr, top);
                        self.select(r, w, order, radix);
                    }
                    Err(e) => fault(e),
                }
            }
        }
    }

    #[inline(always)]
    fn row(&self, r: usize, s: &mut TopKScratch<T>) -> Result<(), KernelError> {
        let TopKScratch {
            rows:
                Scratch {
                    x: xr,
                    w,
                    order,
                    cache,
                    ..
                },
            radix,
        } = s;
        let dims = &self.dims;
        let xr = row_of(self.x, dims, r, xr);
        let top = self.check(r, xr)?;
        let base = dims.base(r) as u64;
        if dims.inner == 1 {
            let next = [Ahead::within(self.x, base as usize + dims.k, dims.k)];
            fill_ahead(Noise::Gumbel, &self.stream, base, w, cache, &next);
        } else {
            fill_strided(
                Noise::Gumbel,
                &self.stream,
                base,
                dims.inner as u64,
                w,
                cache,
            );
        }
        add_logits(w, xr, top);
        self.select(r, w, order, radix);
        Ok(())
    }
}

/// Gumbel-top-k: the indices of the `top_k` largest `(x - max x) + g` along `k`, in
/// decreasing order (ties: smaller index first) — `top_k` ordered draws without
/// replacement from `softmax(x)`. The output is laid out as `(outer, top_k, inner)`.
pub fn gumbel_topk<T: SortKey>(
    x: &[T],
    dims: Dims,
    top_k: usize,
    stream: Stream,
    out: &mut [i64],
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    check_len("output", out.len(), dims.outer * top_k * dims.inner)?;
    // No draw asked for (top_k = 0): the rows are still checked, as for any top_k.
    let kernel = TopK {
        x,
        dims,
        top_k,
        stream,
        out: SharedMut::new(out),
    };
    run_rows(&dims, &kernel)
}

struct GivenArgmax<'a, T> {
    x: &'a [T],
    dims: Dims,
    index: &'a [i64],
    num_samples: usize,
    stream: Stream,
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for GivenArgmax<'_, T> {
    type Scratch = Scratch<T>;
    fn scratch(&self) -> Scratch<T> {
        Scratch {
            batch: Vec::new(), // rows are not batched here
            ..Scratch::new(&self.dims)
        }
    }
    #[inline(always)]
    fn row(&self, r: usize, s: &mut Scratch<T>) -> Result<(), KernelError> {
        let Scratch {
            x: xr, w: g, cache, ..
        } = s;
        let dims = &self.dims;
        let xr = row_of(self.x, dims, r, xr);
        let m = check_row(xr, dims, r)?;
        let d = self.index[r];
        if d < 0 || d as usize >= dims.k || xr[d as usize] == T::NEG_INFINITY {
            return Err(KernelError::BadIndex { row: r });
        }
        let d = d as usize;
        for (gt, &xt) in g.iter_mut().zip(xr) {
            *gt = (xt - m).exp();
        }
        let log_z = m + T::lane_sum(g).ln();
        let base = dims.base(r) as u64;
        let n = dims.len() as u64;
        for s in 0..self.num_samples {
            fill_strided(
                Noise::Gumbel,
                &self.stream,
                s as u64 * n + base,
                dims.inner as u64,
                g,
                cache,
            );
            // The maximum is Gumbel with location log Z (whatever its index);
            // the others are Gumbels at x_i truncated below it:
            // z_i = -logaddexp(-(x_i + g_i), -top).
            let top = log_z + g[d];
            for (t, gt) in g.iter_mut().enumerate() {
                let z = if t == d {
                    top
                } else {
                    let a = xr[t] + *gt;
                    let lo = a.min(top);
                    let z = lo - (-(a - top).abs()).exp().ln_1p();
                    // Rounding may not leave z below top when a >> top; then
                    // the largest value below top, which is finite unless top
                    // is the lowest finite value itself (then z rounds to it).
                    if z < top || top == T::MIN {
                        z
                    } else {
                        top.next_down()
                    }
                };
                *gt = z;
            }
            let first = s * dims.len() + dims.base(r);
            for (t, &z) in g.iter().enumerate() {
                // SAFETY: the elements of row `r` in sample `s` belong to this thread.
                unsafe { self.out.write(first + t * dims.inner, z) };
            }
        }
        Ok(())
    }
}

/// Gumbel-perturbed logits conditioned on their argmax: for each row `r` and
/// sample `s`, `z = x + G` with `G` standard Gumbel noise conditioned on
/// `argmax(z) == index[r]` (Maddison, Tarlow and Minka 2014; the conditional
/// sampler of Gumbel-Rao, Paulus et al. 2020). The output is laid out as
/// `(num_samples, outer, k, inner)`; sample `s` uses the noise of elements
/// `s * dims.len() + i`. The indexed logit must not be `-inf`.
pub fn gumbel_given_argmax<T: Real>(
    x: &[T],
    dims: Dims,
    index: &[i64],
    num_samples: usize,
    stream: Stream,
    out: &mut [T],
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    check_len("index", index.len(), dims.rows())?;
    check_len("output", out.len(), num_samples * dims.len())?;
    prefer_huge_pages(out);
    let kernel = GivenArgmax {
        x,
        dims,
        index,
        num_samples,
        stream,
        out: SharedMut::new(out),
    };
    run_rows(&dims, &kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;

    /// `(x - max x) + g` of one row, written out plainly.
    fn perturbed<T: Real>(x: &[T], g: &[T]) -> Vec<T> {
        let top = x.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
        x.iter().zip(g).map(|(&xt, &gt)| (xt - top) + gt).collect()
    }

    /// Strided rows (tiles), short contiguous rows over several noise
    /// batches, long rows: every draw is the first argmax of (x - max x) + g.
    #[test]
    fn categorical_is_argmax_of_perturbed_logits() {
        for dims in [
            Dims::new(3, 6, 2),
            Dims::new(5000, 3, 1),
            Dims::new(700, 16, 1),
            Dims::new(9, 1500, 1),
        ] {
            let x: Vec<f32> = (0..dims.len()).map(|i| (i % 5) as f32 * 0.3).collect();
            let stream = Stream::new(4, 7);
            let mut out = vec![0i64; dims.rows() * 3];
            sample_categorical(&x, dims, 3, stream, &mut out).unwrap();
            let mut g = vec![0f32; dims.len() * 3];
            noise(Noise::Gumbel, stream, &mut g).unwrap();
            for r in 0..dims.rows() {
                for s in 0..3 {
                    let at = |t: usize| dims.base(r) + t * dims.inner;
                    let xr: Vec<f32> = (0..dims.k).map(|t| x[at(t)]).collect();
                    let gr: Vec<f32> = (0..dims.k).map(|t| g[s * dims.len() + at(t)]).collect();
                    let w = perturbed(&xr, &gr);
                    let m = w.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let want = w.iter().position(|&v| v == m).unwrap();
                    assert_eq!(out[r * 3 + s], want as i64, "{dims:?} row {r} draw {s}");
                }
            }
        }
    }

    #[test]
    fn batched_categorical_rows_report_the_first_fault() {
        let dims = Dims::new(3000, 4, 1);
        let mut x = vec![0.5f32; dims.len()];
        x[2000 * 4 + 1] = f32::NAN;
        x[1500 * 4..1501 * 4].fill(f32::NEG_INFINITY);
        let mut out = vec![0i64; dims.rows() * 2];
        let e = sample_categorical(&x, dims, 2, Stream::new(1, 2), &mut out);
        assert_eq!(e, Err(KernelError::AllMasked { row: 1500 }));
        x[1500 * 4] = 0.0;
        let e = sample_categorical(&x, dims, 2, Stream::new(1, 2), &mut out);
        assert_eq!(e, Err(KernelError::NanLogit { index: 8001 }));
        // No draw asked for: the logits are still checked.
        let e = sample_categorical(&x, dims, 0, Stream::new(1, 2), &mut []);
        assert_eq!(e, Err(KernelError::NanLogit { index: 8001 }));
    }

    #[test]
    fn topk_both_ways_give_the_order_of_a_full_sort_with_ties() {
        // Logits on a grid far coarser than the noise: below the row's
        // largest logit, (x - max x) + g == x - max x, so many ties.
        let dims = Dims::new(40, 50, 1);
        let x: Vec<f32> = (0..dims.len())
            .map(|i| 1e10 * ((i * 7919 % 5) as f32 - 2.0))
            .collect();
        let stream = Stream::new(2, 3);
        for top_k in [1, 2, 9, SMALL_TOPK, SMALL_TOPK + 1, 24, 25, 50] {
            let mut out = vec![0i64; dims.rows() * top_k];
            gumbel_topk(&x, dims, top_k, stream, &mut out).unwrap();
            let mut g = vec![0f32; dims.len()];
            noise(Noise::Gumbel, stream, &mut g).unwrap();
            for r in 0..dims.rows() {
                let row = r * dims.k..(r + 1) * dims.k;
                let w = perturbed(&x[row.clone()], &g[row]);
                let mut want: Vec<usize> = (0..dims.k).collect();
                want.sort_by(|&a, &b| w[b].partial_cmp(&w[a]).unwrap().then(a.cmp(&b)));
                let got: Vec<usize> = out[r * top_k..(r + 1) * top_k]
                    .iter()
                    .map(|&i| i as usize)
                    .collect();
                assert_eq!(got, want[..top_k], "row {r}, k = {top_k}");
            }
        }
    }

    #[test]
    fn topk_orders_by_perturbed_score_and_respects_masks() {
        let dims = Dims::new(1, 5, 1);
        let x = [0.0f64, f64::NEG_INFINITY, 1.0, 2.0, f64::NEG_INFINITY];
        let stream = Stream::new(1, 2);
        let mut out = vec![0i64; 3];
        gumbel_topk(&x, dims, 3, stream, &mut out).unwrap();
        let mut g = vec![0f64; 5];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let w = perturbed(&x, &g);
        let mut want: Vec<usize> = vec![0, 2, 3];
        want.sort_by(|&a, &b| w[b].partial_cmp(&w[a]).unwrap());
        assert_eq!(out, want.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let e = gumbel_topk(&x, dims, 4, stream, &mut [0i64; 4]);
        assert_eq!(
            e,
            Err(KernelError::TooFewUnmasked {
                row: 0,
                available: 3,
                requested: 4
            })
        );
    }

    #[test]
    fn conditioned_samples_keep_their_argmax_and_a_gumbel_top() {
        let dims = Dims::new(4, 7, 3);
        let x: Vec<f64> = (0..dims.len())
            .map(|i| ((i * 37) % 11) as f64 * 0.4 - 2.0)
            .collect();
        let index: Vec<i64> = (0..dims.rows()).map(|r| (r % 7) as i64).collect();
        let samples = 2000;
        let mut z = vec![0.0; samples * dims.len()];
        gumbel_given_argmax(&x, dims, &index, samples, Stream::new(3, 1), &mut z).unwrap();
        let mut top_minus_lse = 0.0;
        for s in 0..samples {
            for r in 0..dims.rows() {
                let at = |t: usize| z[s * dims.len() + dims.base(r) + t * dims.inner];
                let m = (0..dims.k).map(at).fold(f64::NEG_INFINITY, f64::max);
                let arg = (0..dims.k).position(|t| at(t) == m).unwrap();
                assert_eq!(arg as i64, index[r]);
                let lse = (0..dims.k)
                    .map(|t| x[dims.base(r) + t * dims.inner].exp())
                    .sum::<f64>()
                    .ln();
                top_minus_lse += m - lse;
            }
        }
        // The top is Gumbel(log Z): mean Euler's gamma; sd of the mean 1.28/sqrt(24000).
        let mean = top_minus_lse / (samples * dims.rows()) as f64;
        assert!((mean - 0.577_215_66).abs() < 0.05, "{mean}");
        let bad = [-1i64; 12];
        let e = gumbel_given_argmax(&x, dims, &bad, 1, Stream::new(3, 1), &mut z[..dims.len()]);
        assert_eq!(e, Err(KernelError::BadIndex { row: 0 }));
    }

    #[test]
    fn topk_of_no_draws_still_checks_the_logits() {
        let x = [0.0f32, f32::NAN, 1.0, 2.0];
        for dims in [Dims::new(1, 4, 1), Dims::new(2, 2, 1), Dims::new(1, 2, 2)] {
            let e = gumbel_topk(&x, dims, 0, Stream::new(1, 2), &mut []);
            assert_eq!(e, Err(KernelError::NanLogit { index: 1 }), "{dims:?}");
        }
        assert_eq!(
            gumbel_topk(
                &[0.5f64; 4],
                Dims::new(2, 2, 1),
                0,
                Stream::new(1, 2),
                &mut []
            ),
            Ok(())
        );
        let empty = gumbel_topk::<f32>(&[], Dims::new(3, 0, 2), 0, Stream::new(1, 2), &mut []);
        assert_eq!(empty, Ok(()));
    }

    #[test]
    fn conditioned_samples_at_the_lowest_finite_logit_are_finite() {
        // Nothing finite lies below f32::MIN: the truncated values round to it.
        let dims = Dims::new(2, 3, 1);
        let x = [f32::MIN; 6];
        let mut z = [0f32; 12];
        gumbel_given_argmax(&x, dims, &[0, 2], 2, Stream::new(1, 1), &mut z).unwrap();
        assert!(z.iter().all(|&v| v == f32::MIN), "{z:?}");
    }

    #[test]
    fn equal_large_logits_are_drawn_equally_often() {
        // At 1e8 a float32 ulp is 8: noise added to the raw logits would be
        // rounded away and the first category would win most draws. Each
        // count is Binomial(40000, 1/4): sd 87, so 600 is 6.9 sd (false
        // failure rate below 1e-11).
        for k in [4usize, 40] {
            let dims = Dims::new(1, k, 1);
            let x = vec![1e8f32; k];
            let draws = 10_000 * k;
            let mut out = vec![0i64; draws];
            sample_categorical(&x, dims, draws, Stream::new(8, 0), &mut out).unwrap();
            let mut counts = vec![0usize; k];
            for &d in &out {
                counts[d as usize] += 1;
            }
            assert!(
                counts.iter().all(|&c| c.abs_diff(10_000) < 600),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn categorical_tiles_match_rows() {
        for dims in [
            Dims::new(2, 7, 3),
            Dims::new(3, 33, 70),
            Dims::new(1, 9, 130),
        ] {
            let x: Vec<f64> = (0..dims.len())
                .map(|i| ((i * 7919) % 13) as f64 * 0.3)
                .collect();
            let stream = Stream::new(9, 4);
            let (mut rows, mut tiles) = (vec![0i64; dims.rows() * 3], vec![0i64; dims.rows() * 3]);
            let kernel = Categorical {
                x: &x,
                dims,
                num_samples: 3,
                stream,
                out: SharedMut::new(&mut rows),
            };
            run_rows(&dims, &kernel).unwrap();
            sample_categorical(&x, dims, 3, stream, &mut tiles).unwrap();
            assert_eq!(rows, tiles, "{dims:?}");
        }
    }

    #[test]
    fn empty_category_axis_cannot_be_sampled() {
        let e =
            sample_categorical::<f32>(&[], Dims::new(2, 0, 1), 1, Stream::new(0, 0), &mut [0; 2]);
        assert_eq!(e, Err(KernelError::AllMasked { row: 0 }));
    }
}
