//! Gumbel-Softmax forward (soft and straight-through hard) and backward.

use super::noise::{fill_ahead, fill_strided, Ahead, Noise};
use super::rows::{check_logits, first_index_of, gather_row, row_of, scatter_row};
use super::tiles::{
    column_softmax, combine_lane_rows, first_max_per_column, perturb_tile, TileScratch, Tiles, TILE,
};
use super::{
    check_len, each_row, row_batches, run_rows, run_units, short, Dims, KernelError, Outputs,
    RowKernel, SharedMut, Tau, BATCH,
};
use crate::math::{GroupCache, Real};
use crate::memory::prefer_huge_pages;
use crate::rng::Stream;
use std::ops::Range;

pub(crate) struct Scratch<T> {
    x: Vec<T>,
    z: Vec<T>,
    cache: GroupCache<T>,
    /// How batches of short contiguous rows are finished.
    batched: Batched<T>,
}

impl<T: Real> Scratch<T> {
    fn new(k: usize) -> Self {
        Scratch {
            x: vec![T::ZERO; k],
            z: vec![T::ZERO; k],
            cache: GroupCache::new(),
            batched: Batched::No,
        }
    }
}

/// How `Forward::rows` finishes a batch of short contiguous rows once their
/// noise is drawn. It depends only on the float type, `k`, the output mode
/// and the instruction set, so it is chosen once, with the scratch memory.
enum Batched<T> {
    /// Rows are not batched (strided, or too long): `row` by `row`.
    No,
    /// One register per row (`short`: float32, AVX-512, `k <= 16`).
    Simd(short::Token<T>),
    /// Transposed tiles of `TILE` rows (`finish_short_rows`), with their
    /// work space: a soft sample of rows of at most `SHORT` categories.
    Transposed(TileScratch<T>),
    /// `finish_row` for each row.
    RowByRow,
}

/// Rows of at most this many categories are processed `TILE` at a time,
/// transposed so that the loops run across rows, when a soft sample is
/// written (beyond, and for the one-hot sample alone, row by row is faster).
const SHORT: usize = 16;

struct Forward<'a, T> {
    x: &'a [T],
    dims: Dims,
    tau: Tau<'a, T>,
    stream: Stream,
    /// Where the soft sample goes (none in `OutputMode::OneHot`).
    soft: Option<SharedMut<T>>,
    /// Where the one-hot sample goes (none in `OutputMode::Soft`).
    one_hot: Option<SharedMut<T>>,
}

impl<'a, T: Real> Forward<'a, T> {
    fn new(
        x: &'a [T],
        dims: Dims,
        tau: Tau<'a, T>,
        stream: Stream,
        one_hot: Option<&mut [T]>,
        soft: Option<&mut [T]>,
    ) -> Self {
        let shared = |buf: Option<&mut [T]>| {
            buf.map(|b| {
                prefer_huge_pages(b);
                SharedMut::new(b)
            })
        };
        Forward {
            x,
            dims,
            tau,
            stream,
            soft: shared(soft),
            one_hot: shared(one_hot),
        }
    }

    /// The logits and outputs of the contiguous elements `start .. start +
    /// len`, to prefetch while the noise before them is drawn.
    fn ahead(&self, start: usize, len: usize) -> [Ahead; 3] {
        let of = |out: &Option<SharedMut<T>>| match out {
            Some(out) => Ahead::of_shared(out, start, len),
            None => Ahead::of::<T>(&[]),
        };
        [
            Ahead::within(self.x, start, len),
            of(&self.one_hot),
            of(&self.soft),
        ]
    }

    /// The rest of row `r` once `w` holds its Gumbel noise: perturb (relative
    /// to `top`, the largest logit), softmax, write the outputs.
    #[inline(always)]
    fn finish_row(&self, r: usize, xr: &[T], top: T, w: &mut [T]) {
        let dims = &self.dims;
        let m = T::add_max(w, xr, top);
        let arg = if self.one_hot.is_some() {
            first_index_of(w, m)
        } else {
            0
        };
        let base = dims.base(r);
        if let Some(target) = &self.soft {
            let inv_sum = T::ONE / T::exp_sum(w, m, self.tau.inverse_at(r));
            if dims.inner == 1 {
                // SAFETY: row `r` is visited by this thread only.
                let dst = unsafe { target.slice(base, dims.k) };
                for (o, &v) in dst.iter_mut().zip(w.iter()) {
                    *o = v * inv_sum;
                }
            } else {
                for v in w.iter_mut() {
                    *v = *v * inv_sum;
                }
                // SAFETY: row `r` is visited by this thread only.
                unsafe { scatter_row(target, dims, r, w) };
            }
        }
        let Some(one_hot) = &self.one_hot else {
            return;
        };
        if dims.k == 0 {
            return;
        }
        if dims.inner == 1 {
            // SAFETY: row `r` is visited by this thread only.
            let out = unsafe { one_hot.slice(base, dims.k) };
            out.fill(T::ZERO);
            out[arg] = T::ONE;
        } else {
            for t in 0..dims.k {
                let v = if t == arg { T::ONE } else { T::ZERO };
                // SAFETY: element of row `r`, visited by this thread only.
                unsafe { one_hot.write(base + t * dims.inner, v) };
            }
        }
    }
}

impl<T: Real> Forward<'_, T> {
    /// `finish_row` for the `w` contiguous short rows `g0 ..`, whose Gumbel
    /// noise is in `noise`, computed transposed (category-major) so that every
    /// step runs across the rows; the same operations in the same order as
    /// `finish_row`, hence the same bits.
    #[inline(always)]
    fn finish_short_rows(&self, g0: usize, w: usize, noise: &[T], s: &mut TileScratch<T>) {
        let k = self.dims.k;
        let m = &mut s.m[..w];
        m.fill(T::NEG_INFINITY);
        for t in 0..k {
            let v = &mut s.v[t * TILE..][..w];
            for (j, vj) in v.iter_mut().enumerate() {
                *vj = (self.x[(g0 + j) * k + t] - s.top[j]) + noise[j * k + t];
            }
            for (mj, &vj) in m.iter_mut().zip(v.iter()) {
                *mj = mj.max(vj);
            }
        }
        if self.one_hot.is_some() {
            first_max_per_column(&s.v, TILE, k, m, &mut s.arg[..w]);
        }
        if self.soft.is_some() {
            let inv = &mut s.inv[..w];
            for (j, i) in inv.iter_mut().enumerate() {
                *i = self.tau.inverse_at(g0 + j);
            }
            column_softmax(&mut s.v, TILE, k, m, inv, &mut s.acc);
        }
        for j in 0..w {
            let base = (g0 + j) * k;
            if let Some(target) = &self.soft {
                // SAFETY: rows `g0 .. g0 + w` are visited by this thread only.
                let dst = unsafe { target.slice(base, k) };
                for (t, o) in dst.iter_mut().enumerate() {
                    *o = s.v[t * TILE + j] * s.inv[j];
                }
            }
            if let Some(one_hot) = &self.one_hot {
                // SAFETY: as above.
                let dst = unsafe { one_hot.slice(base, k) };
                dst.fill(T::ZERO);
                dst[s.arg[j]] = T::ONE;
            }
        }
    }
}

impl<T: Real> RowKernel for Forward<'_, T> {
    type Scratch = Scratch<T>;
    fn scratch(&self) -> Scratch<T> {
        let k = self.dims.k;
        let mut s = Scratch::new(k);
        if self.dims.batches_rows() {
            s.z = vec![T::ZERO; BATCH];
            s.batched = match short::available::<T>(k) {
                Some(token) => Batched::Simd(token),
                None if k <= SHORT && self.soft.is_some() => {
                    Batched::Transposed(TileScratch::new(k, TILE))
                }
                None => Batched::RowByRow,
            };
        }
        s
    }

    #[inline(always)]
    fn row(&self, r: usize, s: &mut Scratch<T>) -> Result<(), KernelError> {
        let dims = &self.dims;
        let xr = row_of(self.x, dims, r, &mut s.x);
        let top = check_logits(xr, dims, r)?;
        let (base, stride) = (dims.base(r) as u64, dims.inner as u64);
        let w = &mut s.z[..dims.k];
        if stride == 1 {
            let next = self.ahead(base as usize + dims.k, dims.k);
            fill_ahead(Noise::Gumbel, &self.stream, base, w, &mut s.cache, &next);
        } else {
            fill_strided(Noise::Gumbel, &self.stream, base, stride, w, &mut s.cache);
        }
        self.finish_row(r, xr, top, w);
        Ok(())
    }

    #[inline(always)]
    fn rows(&self, rows: Range<usize>, s: &mut Scratch<T>, fault: &mut impl FnMut(KernelError)) {
        let Scratch {
            z, cache, batched, ..
        } = s;
        if matches!(batched, Batched::No) {
            return each_row(self, rows, s, fault);
        }
        let k = self.dims.k;
        for (batch, next) in row_batches(rows, k) {
            let noise = &mut z[..batch.len() * k];
            let next = self.ahead(batch.end * k, next.len() * k);
            let start = (batch.start * k) as u64;
            fill_ahead(Noise::Gumbel, &self.stream, start, noise, cache, &next);
            match batched {
                Batched::Simd(token) => self.finish_batch_simd(*token, batch, noise, fault),
                Batched::Transposed(tile) => {
                    self.finish_batch_transposed(batch, noise, tile, fault)
                }
                Batched::RowByRow => self.finish_batch_by_rows(batch, noise, fault),
                Batched::No => unreachable!("rows that are not batched go row by row"),
            }
        }
    }
}

impl<T: Real> Forward<'_, T> {
    /// `Batched::Simd`: the rows `r0 .. r1` of a batch whose noise is `noise`.
    #[inline(always)]
    fn finish_batch_simd(
        &self,
        token: short::Token<T>,
        Range { start: r0, end: r1 }: Range<usize>,
        noise: &[T],
        fault: &mut impl FnMut(KernelError),
    ) {
        let (k, n) = (self.dims.k, (r1 - r0) * self.dims.k);
        let batch = short::Batch {
            x: &self.x[r0 * k..r1 * k],
            noise,
            k,
            r0,
            tau: self.tau,
        };
        // SAFETY: rows `r0 .. r1` are visited by this thread only.
        let outputs = unsafe {
            short::Outputs {
                soft: self.soft.as_ref().map(|o| o.slice(r0 * k, n)),
                hard: self.one_hot.as_ref().map(|o| o.slice(r0 * k, n)),
            }
        };
        short::forward(token, &batch, outputs, |j| {
            let r = r0 + j;
            let x = &self.x[r * k..(r + 1) * k];
            // The short path found this row invalid: the same conditions.
            let e = check_logits(x, &self.dims, r).expect_err("a row the short path rejects");
            fault(e);
        });
    }

    /// `Batched::Transposed`: as `finish_batch_simd`, by tiles of `TILE` rows.
    #[inline(always)]
    fn finish_batch_transposed(
        &self,
        Range { start: r0, end: r1 }: Range<usize>,
        noise: &[T],
        tile: &mut TileScratch<T>,
        fault: &mut impl FnMut(KernelError),
    ) {
        let k = self.dims.k;
        for g0 in (r0..r1).step_by(TILE) {
            let g1 = r1.min(g0 + TILE);
            let mut ok = true;
            for r in g0..g1 {
                match check_logits(&self.x[r * k..(r + 1) * k], &self.dims, r) {
                    Ok(top) => tile.top[r - g0] = top,
                    Err(e) => {
                        fault(e);
                        ok = false;
                    }
                }
            }
            if ok {
                let g = &noise[(g0 - r0) * k..(g1 - r0) * k];
                self.finish_short_rows(g0, g1 - g0, g, tile);
            }
        }
    }

    /// `Batched::RowByRow`: as `finish_batch_simd`, one `finish_row` a row.
    #[inline(always)]
    fn finish_batch_by_rows(
        &self,
        batch: Range<usize>,
        noise: &mut [T],
        fault: &mut impl FnMut(KernelError),
    ) {
        let k = self.dims.k;
        for (r, w) in batch.zip(noise.chunks_exact_mut(k)) {
            let xr = &self.x[r * k..(r + 1) * k];
            match check_logits(xr, &self.dims, r) {
                Ok(top) => self.finish_row(r, xr, top, w),
                Err(e) => fault(e),
            }
        }
    }
}

/// The strided-row (`inner > 1`) form of `Forward`, by tiles of rows (see
/// `tiles`); the same bits as the row kernel.
struct Tiled<'a, T> {
    f: Forward<'a, T>,
    tiles: Tiles,
}

impl<T: Real> RowKernel for Tiled<'_, T> {
    type Scratch = TileScratch<T>;
    fn scratch(&self) -> TileScratch<T> {
        TileScratch::new(self.f.dims.k, self.tiles.width)
    }

    #[inline(always)]
    fn row(&self, u: usize, s: &mut TileScratch<T>) -> Result<(), KernelError> {
        let f = &self.f;
        let d = &f.dims;
        let tile = self.tiles.locate(u);
        let (w, stride) = (tile.w, self.tiles.width);
        self.tiles.check(f.x, &tile, &mut s.any, &mut s.top)?;
        let m = &mut s.m[..w];
        perturb_tile(
            f.x,
            d,
            &tile,
            &f.stream,
            0,
            &s.top[..w],
            &mut s.v,
            stride,
            m,
            &mut s.cache,
        );
        if f.one_hot.is_some() {
            first_max_per_column(&s.v, stride, d.k, m, &mut s.arg[..w]);
        }
        if f.soft.is_some() {
            let inv = &mut s.inv[..w];
            for (j, i) in inv.iter_mut().enumerate() {
                *i = f.tau.inverse_at(tile.row(d, j));
            }
            column_softmax(&mut s.v, stride, d.k, m, inv, &mut s.acc);
        }
        for t in 0..d.k {
            let at = tile.at(d, t);
            let v = &s.v[t * stride..][..w];
            if let Some(target) = &f.soft {
                // SAFETY: the elements of this tile belong to this thread only.
                let dst = unsafe { target.slice(at, w) };
                for ((o, &vj), &ij) in dst.iter_mut().zip(v).zip(&s.inv[..w]) {
                    *o = vj * ij;
                }
            }
            if let Some(one_hot) = &f.one_hot {
                // SAFETY: as above.
                let dst = unsafe { one_hot.slice(at, w) };
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = if s.arg[j] == t { T::ONE } else { T::ZERO };
                }
            }
        }
        Ok(())
    }
}

/// Runs a forward kernel: row by row when rows are contiguous, by tiles of
/// rows otherwise.
fn run_forward<T: Real>(kernel: Forward<'_, T>) -> Result<(), KernelError> {
    let dims = kernel.dims;
    if dims.inner == 1 || dims.k == 0 {
        return run_rows(&dims, &kernel);
    }
    let tiled = Tiled {
        f: kernel,
        tiles: Tiles::new(dims),
    };
    run_units(&tiled.tiles.units(), &dims, &tiled)
}

/// Gumbel-Softmax forward along the `k` axis, writing what `out` asks for.
///
/// The soft sample is `y = softmax((x + g) / tau)`, computed as
/// `exp((w - max w) / tau) / sum(...)` with `w = (x - max x) + g` (see
/// `add_logits`); `-inf` logits get probability exactly 0. The one-hot
/// sample is exactly 1.0 at the first maximum of `w` and 0.0 elsewhere; it
/// does not depend on `tau`, but `tau` is checked in every mode, so a call is
/// rejected for the same arguments whatever it computes.
pub fn gumbel_softmax_forward<T: Real>(
    x: &[T],
    dims: Dims,
    tau: Tau<'_, T>,
    stream: Stream,
    out: Outputs<'_, T>,
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    let (one_hot, soft) = out.split();
    for (what, buf) in [("one-hot output", &one_hot), ("soft output", &soft)] {
        if let Some(buf) = buf {
            check_len(what, buf.len(), dims.len())?;
        }
    }
    tau.check(dims.rows())?;
    run_forward(Forward::new(x, dims, tau, stream, one_hot, soft))
}

struct Backward<'a, T> {
    g: &'a [T],
    y: &'a [T],
    dims: Dims,
    tau: Tau<'a, T>,
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for Backward<'_, T> {
    type Scratch = Scratch<T>;
    fn scratch(&self) -> Scratch<T> {
        Scratch::new(self.dims.k)
    }
    #[inline(always)]
    fn row(&self, r: usize, s: &mut Scratch<T>) -> Result<(), KernelError> {
        let dims = &self.dims;
        let inv_tau = self.tau.inverse_at(r);
        if dims.inner == 1 {
            let base = dims.base(r);
            let (g, y) = (&self.g[base..base + dims.k], &self.y[base..base + dims.k]);
            let dot = T::lane_dot(g, y);
            // SAFETY: row `r` is visited by this thread only.
            let out = unsafe { self.out.slice(base, dims.k) };
            for ((o, &gt), &yt) in out.iter_mut().zip(g).zip(y) {
                *o = (yt * (gt - dot)) * inv_tau;
            }
        } else {
            gather_row(self.g, dims, r, &mut s.x);
            gather_row(self.y, dims, r, &mut s.z);
            let dot = T::lane_dot(&s.x, &s.z);
            for (gt, &yt) in s.x.iter_mut().zip(&s.z) {
                *gt = (yt * (*gt - dot)) * inv_tau;
            }
            // SAFETY: row `r` is visited by this thread only.
            unsafe { scatter_row(&self.out, dims, r, &s.x) };
        }
        Ok(())
    }
}

/// The strided-row form of `Backward`, by tiles of rows (the same bits).
struct TiledBackward<'a, T> {
    b: Backward<'a, T>,
    tiles: Tiles,
}

impl<T: Real> RowKernel for TiledBackward<'_, T> {
    type Scratch = TileScratch<T>;
    fn scratch(&self) -> TileScratch<T> {
        TileScratch::new(0, self.tiles.width)
    }

    #[inline(always)]
    fn row(&self, u: usize, s: &mut TileScratch<T>) -> Result<(), KernelError> {
        let b = &self.b;
        let d = &b.dims;
        let tile = self.tiles.locate(u);
        let (w, stride) = (tile.w, self.tiles.width);
        s.acc.fill(T::ZERO);
        for t in 0..d.k {
            let at = tile.at(d, t);
            let lane = (t % T::LANES) * stride;
            let acc = &mut s.acc[lane..lane + w];
            for ((aj, &gj), &yj) in acc.iter_mut().zip(&b.g[at..at + w]).zip(&b.y[at..at + w]) {
                *aj = gj.fma(yj, *aj);
            }
        }
        combine_lane_rows(&mut s.acc, stride, w);
        for (j, i) in s.inv[..w].iter_mut().enumerate() {
            *i = b.tau.inverse_at(tile.row(d, j));
        }
        for t in 0..d.k {
            let at = tile.at(d, t);
            // SAFETY: the elements of this tile belong to this thread only.
            let dst = unsafe { b.out.slice(at, w) };
            let rows = dst.iter_mut().zip(&b.g[at..at + w]).zip(&b.y[at..at + w]);
            for (j, ((o, &gj), &yj)) in rows.enumerate() {
                *o = (yj * (gj - s.acc[j])) * s.inv[j];
            }
        }
        Ok(())
    }
}

/// Gumbel-Softmax backward from the soft sample `y` and the incoming gradient
/// `g`: `grad_x = y * (g - sum(g * y)) / tau` along the `k` axis.
pub fn gumbel_softmax_backward<T: Real>(
    g: &[T],
    y: &[T],
    dims: Dims,
    tau: Tau<'_, T>,
    grad_x: &mut [T],
) -> Result<(), KernelError> {
    check_len("grad", g.len(), dims.len())?;
    check_len("y", y.len(), dims.len())?;
    check_len("grad_logits", grad_x.len(), dims.len())?;
    prefer_huge_pages(grad_x);
    tau.check(dims.rows())?;
    let kernel = Backward {
        g,
        y,
        dims,
        tau,
        out: SharedMut::new(grad_x),
    };
    if dims.inner == 1 || dims.k == 0 {
        return run_rows(&dims, &kernel);
    }
    let tiled = TiledBackward {
        b: kernel,
        tiles: Tiles::new(dims),
    };
    run_units(&tiled.tiles.units(), &dims, &tiled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;
    use crate::kernels::OutputMode;

    fn logits(n: usize, seed: u64) -> Vec<f64> {
        let mut v = vec![0.0; n];
        noise(Noise::Gumbel, Stream::new(seed, 99), &mut v).unwrap();
        v
    }

    /// Plain per-element reference of the forward, in float64.
    fn reference(x: &[f64], dims: Dims, tau: f64, stream: Stream) -> (Vec<f64>, Vec<usize>) {
        let mut g = vec![0.0; x.len()];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let mut y = vec![0.0; x.len()];
        let mut args = vec![];
        for r in 0..dims.rows() {
            let idx: Vec<usize> = (0..dims.k).map(|t| dims.base(r) + t * dims.inner).collect();
            let w: Vec<f64> = idx.iter().map(|&i| x[i] + g[i]).collect();
            let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            args.push(w.iter().position(|&v| v == m).unwrap());
            let s: f64 = w.iter().map(|v| ((v - m) / tau).exp()).sum();
            for (t, &i) in idx.iter().enumerate() {
                y[i] = ((w[t] - m) / tau).exp() / s;
            }
        }
        (y, args)
    }

    #[test]
    fn forward_matches_reference_for_every_layout() {
        for dims in [
            Dims::new(3, 5, 1),
            Dims::new(2, 7, 3),
            Dims::new(1, 40, 4),
            Dims::new(5, 1, 2),
        ] {
            let x = logits(dims.len(), 1);
            let stream = Stream::new(17, 4);
            let mut y = vec![0.0; dims.len()];
            gumbel_softmax_forward(&x, dims, Tau::Scalar(0.7), stream, Outputs::Soft(&mut y))
                .unwrap();
            let (want, args) = reference(&x, dims, 0.7, stream);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-14, "{a} vs {b}");
            }
            let mut hard = vec![0.0; dims.len()];
            let mut soft = vec![0.0; dims.len()];
            let out = Outputs::OneHotWithSoft {
                one_hot: &mut hard,
                soft: &mut soft,
            };
            gumbel_softmax_forward(&x, dims, Tau::Scalar(0.7), stream, out).unwrap();
            assert_eq!(soft, y);
            let mut hard_only = vec![0.0; dims.len()];
            let out = Outputs::OneHot(&mut hard_only);
            gumbel_softmax_forward(&x, dims, Tau::Scalar(1.0), stream, out).unwrap();
            assert_eq!(hard_only, hard);
            for (r, &a) in args.iter().enumerate() {
                for t in 0..dims.k {
                    let want = if t == a { 1.0 } else { 0.0 };
                    assert_eq!(hard[dims.base(r) + t * dims.inner], want);
                }
            }
        }
    }

    #[test]
    fn masked_logits_get_exactly_zero_and_errors_name_the_first_fault() {
        let dims = Dims::new(2, 3, 1);
        let x = [
            0.0f32,
            f32::NEG_INFINITY,
            1.0,
            f32::NEG_INFINITY,
            2.0,
            f32::NEG_INFINITY,
        ];
        let mut y = [9.0f32; 6];
        let out = Outputs::Soft(&mut y);
        gumbel_softmax_forward(&x, dims, Tau::Scalar(0.5), Stream::new(0, 0), out).unwrap();
        assert_eq!((y[1], y[3], y[5]), (0.0, 0.0, 0.0));
        assert_eq!(y[4], 1.0);

        let bad = [0.0f32, f32::NAN, 1.0, f32::INFINITY, 2.0, 3.0];
        let e = gumbel_softmax_forward(
            &bad,
            dims,
            Tau::Scalar(1.0),
            Stream::new(0, 0),
            Outputs::Soft(&mut y),
        );
        assert_eq!(e, Err(KernelError::NanLogit { index: 1 }));
        let masked = [f32::NEG_INFINITY; 6];
        let e = gumbel_softmax_forward(
            &masked,
            dims,
            Tau::Scalar(1.0),
            Stream::new(0, 0),
            Outputs::Soft(&mut y),
        );
        assert_eq!(e, Err(KernelError::AllMasked { row: 0 }));
        // Strided rows: the fault at the smallest flat position wins.
        let dims = Dims::new(1, 3, 2);
        let x = [0.0f32, 0.0, 0.0, 0.0, f32::NAN, f32::INFINITY];
        let out = Outputs::Soft(&mut y);
        let e = gumbel_softmax_forward(&x, dims, Tau::Scalar(1.0), Stream::new(0, 0), out);
        assert_eq!(e, Err(KernelError::NanLogit { index: 4 }));
    }

    /// Runs `Forward` row by row (no tiles), for comparison with the tiled path.
    fn by_rows(x: &[f32], dims: Dims, out: Outputs<'_, f32>) -> Result<(), KernelError> {
        let (one_hot, soft) = out.split();
        let kernel = Forward::new(x, dims, Tau::Scalar(0.6), Stream::new(5, 6), one_hot, soft);
        run_rows(&dims, &kernel)
    }

    /// `y`, and `soft` where `mode` writes a soft sample beside the one-hot one.
    fn outputs<'a>(mode: OutputMode, y: &'a mut [f32], soft: &'a mut [f32]) -> Outputs<'a, f32> {
        let soft = (mode == OutputMode::OneHotWithSoft).then_some(soft);
        Outputs::of(mode, y, soft).unwrap()
    }

    #[test]
    fn tiles_of_strided_rows_match_rows_bitwise() {
        for dims in [
            Dims::new(2, 7, 3),
            Dims::new(3, 33, 70),
            Dims::new(1, 5, 130),
            Dims::new(2, 1, 64),
        ] {
            let mut x: Vec<f32> = logits(dims.len(), 8).iter().map(|&v| v as f32).collect();
            if dims.k > 1 {
                x[dims.len() / 3] = f32::NEG_INFINITY;
            }
            for mode in OutputMode::ALL {
                let (mut y1, mut s1) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
                let (mut y2, mut s2) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
                by_rows(&x, dims, outputs(mode, &mut y1, &mut s1)).unwrap();
                let stream = Stream::new(5, 6);
                let out = outputs(mode, &mut y2, &mut s2);
                gumbel_softmax_forward(&x, dims, Tau::Scalar(0.6), stream, out).unwrap();
                assert_eq!(y1, y2, "{dims:?} mode {mode:?}");
                assert_eq!(s1, s2, "{dims:?} mode {mode:?}");
            }
        }
    }

    #[test]
    fn short_and_batched_rows_match_row_by_row() {
        for dims in [
            Dims::new(300, 10, 1),
            Dims::new(100, 1, 1),
            Dims::new(65, 32, 1),
            Dims::new(70, 33, 1),
        ] {
            let mut x: Vec<f32> = logits(dims.len(), 3).iter().map(|&v| v as f32).collect();
            if dims.k > 1 {
                x[5] = f32::NEG_INFINITY;
            }
            let taus: Vec<f32> = (0..dims.rows())
                .map(|r| 0.2 + (r % 7) as f32 * 0.3)
                .collect();
            for mode in OutputMode::ALL {
                let (mut y1, mut s1) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
                let (mut y2, mut s2) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
                {
                    let tau = Tau::PerRow(&taus);
                    let (one_hot, soft) = outputs(mode, &mut y1, &mut s1).split();
                    let kernel = Forward::new(&x, dims, tau, Stream::new(5, 6), one_hot, soft);
                    let mut scratch = Scratch::new(dims.k);
                    for r in 0..dims.rows() {
                        kernel.row(r, &mut scratch).unwrap();
                    }
                }
                let (stream, tau) = (Stream::new(5, 6), Tau::PerRow(&taus));
                let out = outputs(mode, &mut y2, &mut s2);
                gumbel_softmax_forward(&x, dims, tau, stream, out).unwrap();
                assert_eq!(y1, y2, "{dims:?} mode {mode:?}");
                assert_eq!(s1, s2, "{dims:?} mode {mode:?}");
            }
        }
    }

    #[test]
    fn backward_tiles_match_rows_bitwise() {
        for dims in [
            Dims::new(2, 7, 3),
            Dims::new(3, 33, 70),
            Dims::new(1, 17, 130),
        ] {
            let g: Vec<f32> = logits(dims.len(), 1).iter().map(|&v| v as f32).collect();
            let y: Vec<f32> = logits(dims.len(), 2)
                .iter()
                .map(|&v| (v as f32).exp())
                .collect();
            let (mut rows, mut tiles) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
            let kernel = Backward {
                g: &g,
                y: &y,
                dims,
                tau: Tau::Scalar(0.7),
                out: SharedMut::new(&mut rows),
            };
            run_rows(&dims, &kernel).unwrap();
            gumbel_softmax_backward(&g, &y, dims, Tau::Scalar(0.7), &mut tiles).unwrap();
            assert_eq!(rows, tiles, "{dims:?}");
        }
    }

    #[test]
    fn tiles_report_the_same_first_fault_as_rows() {
        let dims = Dims::new(2, 4, 70);
        let cases: [&[(usize, f32)]; 4] = [
            &[(150, f32::NAN), (20, f32::INFINITY)],
            &[(281, f32::NAN)],
            // Column 5 of o = 1 entirely masked, and a later NaN.
            &[
                (285, f32::NEG_INFINITY),
                (355, f32::NEG_INFINITY),
                (425, f32::NEG_INFINITY),
                (495, f32::NEG_INFINITY),
                (500, f32::NAN),
            ],
            // A masked column holding a NaN reports the NaN.
            &[
                (5, f32::NEG_INFINITY),
                (75, f32::NAN),
                (145, f32::NEG_INFINITY),
                (215, f32::NEG_INFINITY),
            ],
        ];
        for case in cases {
            let mut x = vec![0.5f32; dims.len()];
            for &(i, v) in case {
                x[i] = v;
            }
            let mut y = vec![0f32; dims.len()];
            let want = by_rows(&x, dims, Outputs::Soft(&mut y));
            let out = Outputs::Soft(&mut y);
            let got = gumbel_softmax_forward(&x, dims, Tau::Scalar(0.6), Stream::new(5, 6), out);
            assert!(want.is_err());
            assert_eq!(got, want, "{case:?}");
        }
    }

    /// Short contiguous rows (batched, one register per row on AVX-512)
    /// report the fault at the smallest position, in every mode.
    #[test]
    fn short_rows_report_the_first_fault() {
        let dims = Dims::new(3000, 5, 1);
        let cases: [(&[(usize, f32)], KernelError); 4] = [
            (
                &[(2500 * 5 + 4, f32::INFINITY)],
                KernelError::PosInfLogit { index: 12504 },
            ),
            (
                &[(7, f32::NAN), (3, f32::INFINITY)],
                KernelError::PosInfLogit { index: 3 },
            ),
            (
                &[(2999 * 5 + 1, f32::NAN), (1200 * 5 + 2, f32::NAN)],
                KernelError::NanLogit { index: 6002 },
            ),
            (
                &[
                    (45, f32::NEG_INFINITY),
                    (46, f32::NEG_INFINITY),
                    (47, f32::NEG_INFINITY),
                    (48, f32::NEG_INFINITY),
                    (49, f32::NEG_INFINITY),
                    (51, f32::NAN),
                ],
                KernelError::AllMasked { row: 9 },
            ),
        ];
        for (faults, want) in cases {
            let mut x = vec![0.25f32; dims.len()];
            for &(i, v) in faults {
                x[i] = v;
            }
            let (mut y, mut soft) = (vec![0f32; dims.len()], vec![0f32; dims.len()]);
            let stream = Stream::new(1, 1);
            let tau = Tau::Scalar(0.5);
            for mode in OutputMode::ALL {
                let out = outputs(mode, &mut y, &mut soft);
                let got = gumbel_softmax_forward(&x, dims, tau, stream, out);
                assert_eq!(got, Err(want), "{faults:?} {mode:?}");
            }
        }
    }

    #[test]
    fn backward_matches_formula() {
        let dims = Dims::new(2, 6, 3);
        let y = {
            let x = logits(dims.len(), 2);
            let mut y = vec![0.0; dims.len()];
            let out = Outputs::Soft(&mut y);
            gumbel_softmax_forward(&x, dims, Tau::Scalar(2.0), Stream::new(1, 1), out).unwrap();
            y
        };
        let g = logits(dims.len(), 3);
        let taus = [0.5, 1.5, 2.0, 3.0, 0.25, 1.0];
        let mut out = vec![0.0; dims.len()];
        gumbel_softmax_backward(&g, &y, dims, Tau::PerRow(&taus), &mut out).unwrap();
        for (r, tau) in taus.iter().enumerate() {
            let idx: Vec<usize> = (0..dims.k).map(|t| dims.base(r) + t * dims.inner).collect();
            let dot: f64 = idx.iter().map(|&i| g[i] * y[i]).sum();
            for &i in &idx {
                let want = y[i] * (g[i] - dot) / tau;
                assert!((out[i] - want).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let dims = Dims::new(64, 1000, 1);
        let x: Vec<f32> = logits(dims.len(), 5).iter().map(|&v| v as f32).collect();
        let run = |threads| {
            crate::parallel::set_num_threads(threads);
            let mut y = vec![0f32; dims.len()];
            let mut soft = vec![0f32; dims.len()];
            let out = Outputs::OneHotWithSoft {
                one_hot: &mut y,
                soft: &mut soft,
            };
            gumbel_softmax_forward(&x, dims, Tau::Scalar(0.3), Stream::new(8, 2), out).unwrap();
            (y, soft)
        };
        let one = run(1);
        let two = run(2);
        let four = run(4);
        crate::parallel::set_num_threads(0);
        assert_eq!(one, two);
        assert_eq!(one, four);
    }
}
