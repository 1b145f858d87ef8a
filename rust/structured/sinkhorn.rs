//! Gumbel-Sinkhorn (Mena, Belanger, Linderman and Snoek 2018): forward and
//! backward.
//!
//! Each `n x n` matrix of log-weights `x` is perturbed with Gumbel noise `g`
//! and divided by a temperature,
//! `X0[i][j] = ((x[i][j] - max_j x[i][j]) + noise_scale * g[i][j]) / tau`,
//! then normalised in log space: each of at most `n_iters` iterations
//! subtracts the logsumexp of every row, then that of every column. The
//! sample is `P = exp(X)`, nearly doubly stochastic (its columns sum to 1 up
//! to rounding after each iteration, its rows converge); as `tau` falls it
//! approaches the permutation matrix of the maximum-weight matching of the
//! perturbed weights. Each row's largest weight is subtracted before the
//! noise is added, as every kernel of this crate perturbs: neither the
//! normalised matrix nor the matching changes when a constant is added to a
//! row, and the noise keeps its resolution at any scale of `x`.
//!
//! The matrix is not rewritten at each half-step. The kernels keep
//! cumulative normalisers, `X[i][j] = (X0[i][j] - R[i]) - C[j]` (always
//! rounded in that order): a row step adds each row's logsumexp to `R[i]`,
//! a column step each column's to `C[j]`. Any half-step's matrix is thus
//! `X0` and two vectors. An iteration is one pass over the matrix with one
//! exponential an entry: the row step's shifted exponentials give the
//! entries after the step (at most 1), whose sums down the columns are the
//! column step's sums (see `Work::iterate`). The backward reruns the
//! forward keeping `R`, `C` and the column step's factors after every
//! iteration (`3 n` values, rows padded as `Work` says), then walks back through the iterations with
//! the gradient of `X' = X - logsumexp(X, axis)`,
//! `dX = dX' - exp(X') * sum(dX', axis)`, `exp(X')` recomputed from `X0`
//! and the kept vectors, again one pass and one exponential an entry per
//! iteration (see `Work::backward`). Nothing of size `n^2` is kept per
//! iteration.
//!
//! A row or column whose entries are all `-inf` (no pair allowed) has no
//! logsumexp; its normaliser is left unchanged and its entries stay 0.
//!
//! Matrices are the units of work of the thread pool. Each one's results
//! depend only on its input and the random stream, so they are bitwise the
//! same for any number of threads.

use crate::kernels::noise::{fill_strided, Noise};
use crate::kernels::{check_len, run_units, Dims, KernelError, RowKernel, SharedMut, Tau};
use crate::math::{sel, GroupCache, Real};
use crate::rng::Stream;

/// The shape of a call: `batch` matrices of `n x n` log-weights, each drawn
/// `samples` times. Inputs are laid out as `(batch, n, n)` and outputs as
/// `(batch, samples, n, n)`: matrix `m = b * samples + s` is sample `s` of
/// input `b`, and its entry `(i, j)` draws the noise of element
/// `m * n * n + i * n + j` of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Square {
    pub batch: usize,
    pub samples: usize,
    pub n: usize,
}

impl Square {
    pub fn new(batch: usize, samples: usize, n: usize) -> Self {
        Square { batch, samples, n }
    }
    /// The matrices drawn: `batch * samples`.
    pub fn matrices(&self) -> usize {
        self.batch * self.samples
    }
    /// Elements of the input: `batch * n * n`.
    pub fn input_len(&self) -> usize {
        self.batch * self.n * self.n
    }
    /// Elements of a per-sample output: `batch * samples * n * n`.
    pub fn output_len(&self) -> usize {
        self.matrices() * self.n * self.n
    }
}

/// The parameters of a call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sinkhorn<T> {
    /// The temperature: normal, positive and finite.
    pub tau: T,
    /// The factor of the noise; with 0 no noise is drawn (deterministic
    /// Sinkhorn normalisation of `x / tau`).
    pub noise_scale: T,
    /// The number of iterations (a row step, then a column step) at most.
    /// The backward takes each matrix's count from the forward instead.
    pub n_iters: u32,
    /// Stops a matrix early, after the first iteration whose matrix has
    /// every row sum within `tol` of 1 (its column sums are 1 up to
    /// rounding after every iteration). Checked after each iteration but
    /// the last, on the row logsumexps the next row step computes anyway:
    /// the check costs nothing, and with a `tol` never met the results are
    /// bitwise those without one. Not used by the backward.
    pub tol: Option<T>,
}

/// What a forward writes; any of them may be left out.
#[derive(Debug, Default)]
pub struct SinkhornOutputs<'a, T> {
    /// The samples `P`, `(batch, samples, n, n)`.
    pub soft: Option<&'a mut [T]>,
    /// The perturbed weights `(x - max) + noise_scale * g`, `(batch,
    /// samples, n, n)`: the matrix whose maximum-weight matching `P`
    /// approaches (computed without iterating when `soft` is left out).
    pub perturbed: Option<&'a mut [T]>,
    /// The iterations run on each matrix, `(batch, samples)`: what the
    /// backward must be given. Iterating just to count them happens only
    /// when `tol` is set; otherwise every count is `n_iters`.
    pub iters: Option<&'a mut [u32]>,
}

/// Per-thread scratch memory: the state of one matrix, its rows padded to
/// `np`, a multiple of `T::LANES`, with `-inf` entries (which add 0 to every
/// sum and change no maximum), so that every loop over a row runs on whole
/// vectors. The forward uses `n np + 6 np` values, the backward
/// `2 n np + 3 k np + 8 np` values (and up to `n` indices) for at most `k`
/// iterations.
struct Work<T> {
    n: usize,
    np: usize,
    /// `X0`, `n` rows of `np`.
    x0: Vec<T>,
    /// The cumulative row and column normalisers `R` (`n`) and `C` (`np`,
    /// 0 in the padding).
    r: Vec<T>,
    c: Vec<T>,
    /// The logsumexps of one half-step, before they are added.
    step: Vec<T>,
    /// One row of `X`, then of its exponentials.
    w: Vec<T>,
    /// The column sums of the matrix after a row step.
    colsum: Vec<T>,
    /// The shifts of the rows' exponentials in a row step.
    top: Vec<T>,
    /// Backward, for each iteration `t`: `R_t`, `C_t` and `F_t` (`np` each),
    /// the factors `1 / colsum` that turn the exponentials of the matrix
    /// after row step `t` into those after column step `t` (0 for a column
    /// whose logsumexp was recomputed).
    trace: Vec<T>,
    /// Backward: the gradient of the matrix after the current half-step.
    g: Vec<T>,
    /// Backward: the column sums of `g` the current step back needs, and
    /// those of its result, which the next step back needs.
    sums: Vec<T>,
    next: Vec<T>,
    /// Backward: the columns of an iteration whose factor is 0.
    recomputed: Vec<usize>,
    /// Sums below this lose relative precision to underflow:
    /// `sqrt(T::MIN_POSITIVE)`.
    small: T,
    cache: GroupCache<T>,
}

impl<T: Real> Work<T> {
    /// Scratch for a forward, or with `backward`, for a backward of at most
    /// `iters` iterations.
    fn new(n: usize, backward: bool, iters: usize) -> Self {
        let np = n.div_ceil(T::LANES) * T::LANES;
        let v = |len: usize| vec![T::ZERO; len];
        let b = |len: usize| v(if backward { len } else { 0 });
        Work {
            n,
            np,
            x0: v(n * np),
            r: v(np),
            c: v(np),
            step: v(np),
            w: v(np),
            colsum: v(np),
            top: v(np),
            trace: b(3 * iters * np),
            g: b(n * np),
            sums: b(np),
            next: b(np),
            recomputed: Vec::with_capacity(if backward { n } else { 0 }),
            small: T::from_f64(T::MIN_POSITIVE.to_f64().sqrt()),
            cache: GroupCache::new(),
        }
    }

    /// `X0` of matrix `m` of the call, a sample of the input matrix `xb`,
    /// into `x0`; the perturbed weights into `perturbed` on the way.
    ///
    /// Faults, positioned in the output (`m * n * n + i * n + j`): a NaN
    /// weight, or an `X0` that is NaN, is `NanLogit`; a `+inf` weight, or an
    /// infinite `X0` where the weight is finite (the perturbation overflowed:
    /// `noise_scale` or `1 / tau` too large), is `PosInfLogit`.
    #[inline(always)]
    fn start(
        &mut self,
        xb: &[T],
        p: &Sinkhorn<T>,
        stream: &Stream,
        m: usize,
        perturbed: Option<&SharedMut<T>>,
    ) -> Result<(), KernelError> {
        let (n, np) = (self.n, self.np);
        let first = m * n * n;
        let mut bad = false;
        let rows = self.x0.chunks_exact_mut(np).zip(xb.chunks_exact(n));
        for (i, (x0i, xi)) in rows.enumerate() {
            let (row, pad) = x0i.split_at_mut(n);
            pad.fill(T::NEG_INFINITY);
            if p.noise_scale == T::ZERO {
                // 0 * g would be +-0, which leaves every sum below unchanged.
                row.fill(T::ZERO);
            } else {
                let at = (first + i * n) as u64;
                fill_strided(Noise::Gumbel, stream, at, 1, row, &mut self.cache);
            }
            // The largest weight of the row; 0 for a row of -inf (no NaN).
            let top = T::lane_max(xi);
            let top = sel(top == T::NEG_INFINITY, T::ZERO, top);
            for (v, &x) in row.iter_mut().zip(xi) {
                *v = (x - top) + p.noise_scale * *v;
            }
            if let Some(out) = perturbed {
                // SAFETY: the elements of matrix `m` are written by this thread only.
                unsafe { out.slice(first + i * n, n) }.copy_from_slice(row);
            }
            for (v, &x) in row.iter_mut().zip(xi) {
                *v = *v / p.tau;
                bad |= v.is_nan() | ((v.abs() == T::INFINITY) & (x != T::NEG_INFINITY));
            }
        }
        if !bad {
            return Ok(());
        }
        for (e, &x) in xb.iter().enumerate() {
            let (index, v) = (first + e, self.x0[e / n * np + e % n]);
            if x == T::INFINITY {
                return Err(KernelError::PosInfLogit { index });
            }
            if v.is_nan() {
                return Err(KernelError::NanLogit { index });
            }
            if v.abs() == T::INFINITY && x != T::NEG_INFINITY {
                return Err(KernelError::PosInfLogit { index });
            }
        }
        unreachable!("a fault was found in the first pass")
    }

    /// Runs the iterations on `x0` from `R = C = 0`: `n_iters` of them, or
    /// fewer when `tol` is met; with `trace`, keeps `R`, `C` and the column
    /// factors of each. Returns the number run.
    ///
    /// One pass over the matrix an iteration: the row step computes each
    /// row's exponentials `e = exp(X - shift)` and their sum `s`, and the
    /// entries after the step, `e / s` (at most 1), summed down the columns,
    /// give the column step its logsumexps, `ln(colsum)`, without another
    /// exponential. The shift is the row's maximum in the first iteration
    /// and 0 after (every entry is then at most a rounding error above 0,
    /// where `exp_nonpositive` is `exp`). A sum below `small` would have
    /// lost precision to entries that underflowed: such a row is redone
    /// with its maximum, such a column's logsumexp recomputed,
    /// max-subtracted, from the new `R`.
    #[inline(always)]
    fn iterate(&mut self, n_iters: usize, tol: Option<T>, trace: bool) -> usize {
        let Work {
            n,
            np,
            x0,
            r,
            c,
            step,
            w,
            colsum,
            top,
            trace: kept,
            small,
            ..
        } = self;
        let (n, np, small) = (*n, *np, *small);
        r.fill(T::ZERO);
        c.fill(T::ZERO);
        for t in 0..n_iters {
            colsum.fill(T::ZERO);
            // Each row's sum into `step` and its shift into `top`, the
            // logarithms after the pass (out of the loop's critical path).
            let rows = step.iter_mut().zip(top.iter_mut()).zip(&r[..n]);
            for (((si, mi), &ri), x0i) in rows.zip(x0.chunks_exact(np)) {
                current_row(x0i, ri, c, w);
                *mi = T::ZERO;
                *si = if t == 0 {
                    T::ZERO
                } else {
                    T::exp_sum(w, T::ZERO, T::ONE)
                };
                if *si < small {
                    current_row(x0i, ri, c, w);
                    *mi = T::lane_max(w);
                    if *mi == T::NEG_INFINITY {
                        continue; // an empty row: no entry to add to the columns
                    }
                    // The largest term is exp(0) = 1: the sum is in [1, n].
                    *si = T::exp_sum(w, *mi, T::ONE);
                }
                let inv = T::ONE / *si;
                for (cs, &e) in colsum.iter_mut().zip(w.iter()) {
                    *cs = *cs + e * inv;
                }
            }
            for (li, &mi) in step[..n].iter_mut().zip(top.iter()) {
                // (The sum of an empty row is 0, whose logarithm is not used.)
                *li = sel(mi == T::NEG_INFINITY, mi, mi + li.ln_normal());
            }
            // The row sums of the matrix after iteration t are exp(step).
            let done = |tol: T| step[..n].iter().all(|&l| (l.exp() - T::ONE).abs() <= tol);
            if t > 0 && tol.is_some_and(done) {
                return t;
            }
            add(&mut r[..n], &step[..n]);
            for (j, (lj, &cs)) in step[..n].iter_mut().zip(colsum.iter()).enumerate() {
                *lj = if cs >= small {
                    cs.ln_normal()
                } else {
                    column_lse(x0, np, &r[..n], c[j], j)
                };
            }
            add(&mut c[..n], &step[..n]);
            if trace {
                let kept = &mut kept[3 * t * np..][..3 * np];
                kept[..np].copy_from_slice(r);
                kept[np..2 * np].copy_from_slice(c);
                for (f, &cs) in kept[2 * np..].iter_mut().zip(colsum.iter()) {
                    *f = if cs >= small { T::ONE / cs } else { T::ZERO };
                }
            }
        }
        n_iters
    }

    /// `P = exp(X)` of the current state into `dst` (`n x n`).
    #[inline(always)]
    fn write_soft(&self, dst: &mut [T]) {
        let (n, np) = (self.n, self.np);
        let rows = dst.chunks_exact_mut(n).zip(self.x0.chunks_exact(np));
        for ((d, x0i), &ri) in rows.zip(&self.r) {
            for ((d, &x), &cj) in d.iter_mut().zip(x0i).zip(&self.c) {
                *d = ((x - ri) - cj).exp();
            }
        }
    }

    /// The gradient of `X0` for `k` iterations on `x0`, given `grad`, the
    /// gradient of `P` (`n x n`), into `dst` (`n x n`), divided by `tau`.
    ///
    /// Iteration `t` made `X_a = X - logsumexp(X)` along rows, then
    /// `X_b = X_a - logsumexp(X_a)` along columns. Walking back, with
    /// `dX_b` and its column sums known: `dX_a = dX_b - exp(X_b) * colsum(dX_b)`,
    /// then `dX = dX_a - exp(X_a) * rowsum(dX_a)`. Row `i` of `dX_a` needs only
    /// row `i` of `dX_b`, so both steps go row by row in one pass, which also
    /// sums `dX` down the columns for the iteration before. `exp(X_a)` is
    /// one exponential an entry, `exp(X_b) = exp(X_a) * F` (the forward's
    /// column factors) none, but in the columns whose factor is 0.
    #[inline(always)]
    fn backward(&mut self, k: usize, grad: &[T], tau: T, dst: &mut [T]) {
        self.iterate(k, None, true);
        let Work {
            n,
            np,
            x0,
            r,
            c,
            w: e1,
            trace,
            g,
            sums,
            next,
            recomputed,
            ..
        } = self;
        let (n, np) = (*n, *np);
        // dL/dX after the last iteration: grad * P (0 in the padding), and
        // its column sums.
        sums.fill(T::ZERO);
        let rows = g.chunks_exact_mut(np).zip(grad.chunks_exact(n));
        for (((gi, gr), x0i), &ri) in rows.zip(x0.chunks_exact(np)).zip(r.iter()) {
            gi[n..].fill(T::ZERO);
            let cols = gi.iter_mut().zip(gr).zip(x0i).zip(c.iter());
            for ((((gv, &gp), &x), &cj), s) in cols.zip(sums.iter_mut()) {
                *gv = gp * ((x - ri) - cj).exp();
                *s = *s + *gv;
            }
        }
        c.fill(T::ZERO);
        for t in (0..k).rev() {
            let (rt, rest) = trace[3 * t * np..][..3 * np].split_at(np);
            let (ct, ft) = rest.split_at(np);
            let before: &[T] = if t == 0 {
                c
            } else {
                &trace[(3 * t - 2) * np..][..np]
            };
            recomputed.clear();
            recomputed.extend((0..n).filter(|&j| ft[j] == T::ZERO));
            next.fill(T::ZERO);
            let rows = g.chunks_exact_mut(np).zip(x0.chunks_exact(np));
            for ((gi, x0i), &ri) in rows.zip(rt) {
                let cols = gi.iter_mut().zip(e1.iter_mut()).zip(x0i).zip(before);
                for ((((gv, a), &x), &cj), (&f, &s)) in cols.zip(ft.iter().zip(sums.iter())) {
                    *a = ((x - ri) - cj).exp();
                    *gv = *gv - (*a * f) * s;
                }
                // (A factor of 0 left those columns unchanged.)
                for &j in recomputed.iter() {
                    gi[j] = gi[j] - ((x0i[j] - ri) - ct[j]).exp() * sums[j];
                }
                let rs = T::lane_sum(gi);
                if t > 0 {
                    for ((gv, &a), s) in gi.iter_mut().zip(e1.iter()).zip(next.iter_mut()) {
                        *gv = *gv - a * rs;
                        *s = *s + *gv;
                    }
                } else {
                    for (gv, &a) in gi.iter_mut().zip(e1.iter()) {
                        *gv = *gv - a * rs;
                    }
                }
            }
            std::mem::swap(sums, next);
        }
        for (d, gi) in dst.chunks_exact_mut(n).zip(g.chunks_exact(np)) {
            for (d, &v) in d.iter_mut().zip(gi) {
                *d = v / tau;
            }
        }
    }
}

/// Row `i` of the current matrix: `w[j] = (x0[j] - r) - c[j]`.
#[inline(always)]
fn current_row<T: Real>(x0: &[T], r: T, c: &[T], w: &mut [T]) {
    for ((v, &x), &cj) in w.iter_mut().zip(x0).zip(c) {
        *v = (x - r) - cj;
    }
}

/// The logsumexp of column `j` of the current matrix (rows of `np` in `x0`,
/// normalisers `r` and `cj`), max-subtracted; `-inf` for a column without an
/// entry above `-inf`.
fn column_lse<T: Real>(x0: &[T], np: usize, r: &[T], cj: T, j: usize) -> T {
    let entry = |i: usize| (x0[i * np + j] - r[i]) - cj;
    let m = (0..r.len()).fold(T::NEG_INFINITY, |m, i| m.max(entry(i)));
    if m == T::NEG_INFINITY {
        return m;
    }
    let s = (0..r.len()).fold(T::ZERO, |s, i| s + (entry(i) - m).exp_nonpositive());
    m + s.ln_normal()
}

/// `acc += l`, where an empty row or column (`l = -inf`) adds nothing.
#[inline(always)]
fn add<T: Real>(acc: &mut [T], l: &[T]) {
    for (a, &v) in acc.iter_mut().zip(l) {
        *a = *a + sel(v == T::NEG_INFINITY, T::ZERO, v);
    }
}

/// The shared views of a call: one unit per matrix (its cost about that of
/// `passes` passes over it), faults positioned in the output.
fn views(shape: &Square, passes: usize) -> (Dims, Dims) {
    let nn = shape.n * shape.n;
    let units = Dims::new(shape.matrices(), nn.saturating_mul(passes).max(1), 1);
    (units, Dims::new(shape.matrices(), nn, 1))
}

struct Forward<'a, T> {
    x: &'a [T],
    shape: Square,
    params: Sinkhorn<T>,
    stream: Stream,
    soft: Option<SharedMut<T>>,
    perturbed: Option<SharedMut<T>>,
    iters: Option<SharedMut<u32>>,
}

impl<T: Real> RowKernel for Forward<'_, T> {
    type Scratch = Work<T>;
    fn scratch(&self) -> Work<T> {
        Work::new(self.shape.n, false, 0)
    }

    #[inline(always)]
    fn row(&self, m: usize, work: &mut Work<T>) -> Result<(), KernelError> {
        let (n, p) = (self.shape.n, &self.params);
        let nn = n * n;
        let xb = &self.x[(m / self.shape.samples) * nn..][..nn];
        work.start(xb, p, &self.stream, m, self.perturbed.as_ref())?;
        let count = self.iters.is_some() && p.tol.is_some();
        let k = if self.soft.is_some() || count {
            work.iterate(p.n_iters as usize, p.tol, false) as u32
        } else {
            p.n_iters
        };
        if let Some(iters) = &self.iters {
            // SAFETY: the count of matrix `m` is written by this thread only.
            unsafe { iters.write(m, k) };
        }
        if let Some(soft) = &self.soft {
            // SAFETY: the elements of matrix `m` are written by this thread only.
            work.write_soft(unsafe { soft.slice(m * nn, nn) });
        }
        Ok(())
    }
}

/// Gumbel-Sinkhorn samples of the `(batch, n, n)` log-weights `x`: any of
/// the outputs of [`SinkhornOutputs`], each of the `(batch, samples)`
/// matrices computed as the module describes. `x` may hold `-inf` (a
/// forbidden pair); for the faults of NaN and `+inf` weights and of a
/// perturbation that overflows, see the positions of `Work::start`. A
/// temperature that is not normal, positive and finite is `BadTau`.
pub fn gumbel_sinkhorn_forward<T: Real>(
    x: &[T],
    shape: Square,
    params: Sinkhorn<T>,
    stream: Stream,
    out: SinkhornOutputs<'_, T>,
) -> Result<(), KernelError> {
    check_len("log-weights", x.len(), shape.input_len())?;
    for (what, buf) in [
        ("samples", &out.soft),
        ("perturbed weights", &out.perturbed),
    ] {
        if let Some(buf) = buf {
            check_len(what, buf.len(), shape.output_len())?;
        }
    }
    if let Some(iters) = &out.iters {
        check_len("iteration counts", iters.len(), shape.matrices())?;
    }
    Tau::Scalar(params.tau).check(1)?;
    if shape.n == 0 {
        // Empty matrices: nothing to perturb or normalise.
        if let Some(iters) = out.iters {
            iters.fill(0);
        }
        return Ok(());
    }
    let kernel = Forward {
        x,
        shape,
        params,
        stream,
        soft: out.soft.map(SharedMut::new),
        perturbed: out.perturbed.map(SharedMut::new),
        iters: out.iters.map(SharedMut::new),
    };
    let (units, faults) = views(&shape, params.n_iters as usize + 1);
    run_units(&units, &faults, &kernel)
}

struct Backward<'a, T> {
    x: &'a [T],
    shape: Square,
    params: Sinkhorn<T>,
    stream: Stream,
    iters: &'a [u32],
    grad: &'a [T],
    /// The most iterations of any matrix.
    most: usize,
    /// Each matrix's gradient of `x`, `(batch, samples, n, n)`.
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for Backward<'_, T> {
    type Scratch = Work<T>;
    fn scratch(&self) -> Work<T> {
        Work::new(self.shape.n, true, self.most)
    }

    #[inline(always)]
    fn row(&self, m: usize, work: &mut Work<T>) -> Result<(), KernelError> {
        let (n, p) = (self.shape.n, &self.params);
        let nn = n * n;
        let xb = &self.x[(m / self.shape.samples) * nn..][..nn];
        work.start(xb, p, &self.stream, m, None)?;
        let grad = &self.grad[m * nn..][..nn];
        // SAFETY: the elements of matrix `m` are written by this thread only.
        let dst = unsafe { self.out.slice(m * nn, nn) };
        work.backward(self.iters[m] as usize, grad, p.tau, dst);
        Ok(())
    }
}

/// Sums each input matrix's gradient over its samples, in sample order.
struct SumSamples<'a, T> {
    each: &'a [T],
    samples: usize,
    nn: usize,
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for SumSamples<'_, T> {
    type Scratch = ();
    fn scratch(&self) {}

    #[inline(always)]
    fn row(&self, b: usize, _: &mut ()) -> Result<(), KernelError> {
        let (nn, samples) = (self.nn, self.samples);
        // SAFETY: the elements of input matrix `b` are written by this thread only.
        let dst = unsafe { self.out.slice(b * nn, nn) };
        dst.copy_from_slice(&self.each[b * samples * nn..][..nn]);
        for s in 1..samples {
            let src = &self.each[(b * samples + s) * nn..][..nn];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = *d + v;
            }
        }
        Ok(())
    }
}

/// The gradient of the log-weights `x` (`(batch, n, n)`, into `out`) of the
/// samples of [`gumbel_sinkhorn_forward`] called with the same `x`, shape,
/// `tau`, `noise_scale` and stream, given `grad`, the gradient of the
/// samples (`(batch, samples, n, n)`), and `iters`, the iterations the
/// forward ran on each matrix (its `iters` output; `n_iters` and `tol` are
/// not used). It is the sum over samples of `dL/dX0 / tau`.
///
/// Memory: per thread, `2 n np + 3 k np + 8 np` values for the largest
/// count `k`, `np` being `n` rounded up to a multiple of `T::LANES`; with more than one sample, also a `(batch, samples, n, n)` buffer
/// of the samples' gradients, summed at the end.
pub fn gumbel_sinkhorn_backward<T: Real>(
    x: &[T],
    shape: Square,
    params: Sinkhorn<T>,
    stream: Stream,
    iters: &[u32],
    grad: &[T],
    out: &mut [T],
) -> Result<(), KernelError> {
    check_len("log-weights", x.len(), shape.input_len())?;
    check_len("iteration counts", iters.len(), shape.matrices())?;
    check_len("gradient", grad.len(), shape.output_len())?;
    check_len("output", out.len(), shape.input_len())?;
    Tau::Scalar(params.tau).check(1)?;
    if shape.matrices() == 0 || shape.n == 0 {
        out.fill(T::ZERO);
        return Ok(());
    }
    let most = iters.iter().copied().max().unwrap_or(0) as usize;
    let (units, faults) = views(&shape, 2 * most + 2);
    let each = |out: &mut [T]| {
        let kernel = Backward {
            x,
            shape,
            params,
            stream,
            iters,
            grad,
            most,
            out: SharedMut::new(out),
        };
        run_units(&units, &faults, &kernel)
    };
    if shape.samples == 1 {
        return each(out);
    }
    let mut per_sample = vec![T::ZERO; shape.output_len()];
    each(&mut per_sample)?;
    let nn = shape.n * shape.n;
    let sum = SumSamples {
        each: &per_sample,
        samples: shape.samples,
        nn,
        out: SharedMut::new(out),
    };
    let batch = Dims::new(shape.batch, shape.samples * nn, 1);
    run_units(&batch, &batch, &sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;

    fn params<T: Real>(tau: f64, noise_scale: f64, n_iters: u32, tol: Option<f64>) -> Sinkhorn<T> {
        Sinkhorn {
            tau: T::from_f64(tau),
            noise_scale: T::from_f64(noise_scale),
            n_iters,
            tol: tol.map(T::from_f64),
        }
    }

    fn weights(len: usize, seed: u64) -> Vec<f64> {
        let mut x = vec![0.0; len];
        noise(Noise::Gumbel, Stream::new(seed, 9), &mut x).unwrap();
        x
    }

    /// The algorithm written plainly in float64 with the platform's exp and
    /// ln, rewriting the matrix at each half-step: `(samples, n, n)` for one
    /// input matrix `x`, with the noise `g` of those samples.
    fn plain(x: &[f64], g: &[f64], n: usize, tau: f64, scale: f64, iters: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for gs in g.chunks(n * n) {
            let mut a: Vec<f64> = (0..n * n)
                .map(|e| {
                    let top = x[e / n * n..][..n].iter().cloned().fold(f64::MIN, f64::max);
                    ((x[e] - top) + scale * gs[e]) / tau
                })
                .collect();
            for _ in 0..iters {
                for i in 0..n {
                    let l = a[i * n..][..n].iter().map(|v| v.exp()).sum::<f64>().ln();
                    a[i * n..][..n].iter_mut().for_each(|v| *v -= l);
                }
                for j in 0..n {
                    let l = (0..n).map(|i| a[i * n + j].exp()).sum::<f64>().ln();
                    (0..n).for_each(|i| a[i * n + j] -= l);
                }
            }
            out.extend(a.iter().map(|v| v.exp()));
        }
        out
    }

    /// The row steps after the first take exponentials of entries that may
    /// be a rounding error above 0, with `exp_nonpositive`: there it is `exp`.
    #[test]
    fn exp_nonpositive_is_exp_just_above_zero() {
        for k in 0..2000 {
            let x = 1e-9 * 1.01f64.powi(k);
            assert_eq!(x.exp_nonpositive(), Real::exp(x), "{x}");
            let x = x as f32;
            assert_eq!(x.exp_nonpositive(), Real::exp(x), "{x}");
        }
    }

    #[test]
    fn samples_match_the_plain_algorithm_and_are_doubly_stochastic() {
        let shape = Square::new(2, 3, 5);
        let x = weights(shape.input_len(), 1);
        let stream = Stream::new(7, 2);
        let mut g = vec![0.0; shape.output_len()];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let mut p = vec![0.0; shape.output_len()];
        let out = SinkhornOutputs {
            soft: Some(&mut p),
            ..Default::default()
        };
        gumbel_sinkhorn_forward(&x, shape, params(0.7, 0.5, 30, None), stream, out).unwrap();
        for b in 0..2 {
            let want = plain(&x[b * 25..][..25], &g[b * 75..][..75], 5, 0.7, 0.5, 30);
            for (e, (&got, &want)) in p[b * 75..][..75].iter().zip(&want).enumerate() {
                assert!((got - want).abs() < 1e-13, "{b} {e}: {got} {want}");
            }
        }
        // Columns sum to 1 up to rounding; rows converge (2.8e-6 off after 30 iterations).
        for m in p.chunks(25) {
            for i in 0..5 {
                let row: f64 = m[i * 5..][..5].iter().sum();
                let col: f64 = (0..5).map(|r| m[r * 5 + i]).sum();
                assert!(
                    (row - 1.0).abs() < 1e-5 && (col - 1.0).abs() < 1e-14,
                    "{row} {col}"
                );
            }
        }
    }

    #[test]
    fn perturbed_weights_are_the_shifted_weights_plus_scaled_noise_bitwise() {
        let shape = Square::new(3, 2, 4);
        let x: Vec<f32> = weights(shape.input_len(), 3)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let stream = Stream::new(4, 4);
        let mut g = vec![0f32; shape.output_len()];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let mut w = vec![0f32; shape.output_len()];
        let mut iters = vec![9u32; 6];
        let out = SinkhornOutputs {
            perturbed: Some(&mut w),
            iters: Some(&mut iters),
            ..Default::default()
        };
        gumbel_sinkhorn_forward(&x, shape, params(0.5, 0.3, 7, None), stream, out).unwrap();
        for (e, &v) in w.iter().enumerate() {
            let (m, ij) = (e / 16, e % 16);
            let row = &x[(m / 2) * 16 + ij / 4 * 4..][..4];
            let top = row.iter().cloned().fold(f32::MIN, f32::max);
            assert_eq!(v, (x[(m / 2) * 16 + ij] - top) + 0.3 * g[e], "{e}");
        }
        assert_eq!(iters, [7; 6]);
    }

    #[test]
    fn tolerance_stops_early_and_changes_nothing_else() {
        let shape = Square::new(4, 1, 6);
        let x = weights(shape.input_len(), 5);
        let run = |n_iters: u32, tol: Option<f64>| {
            let (mut p, mut iters) = (vec![0.0; shape.output_len()], vec![0u32; 4]);
            let out = SinkhornOutputs {
                soft: Some(&mut p),
                iters: Some(&mut iters),
                ..Default::default()
            };
            let params = params(1.0, 1.0, n_iters, tol);
            gumbel_sinkhorn_forward(&x, shape, params, Stream::new(1, 1), out).unwrap();
            (p, iters)
        };
        let worst_row = |p: &[f64], m: usize| {
            (0..6)
                .map(|i| (p[m * 36 + i * 6..][..6].iter().sum::<f64>() - 1.0).abs())
                .fold(0.0, f64::max)
        };
        assert_eq!(run(200, None).1, [200; 4]);
        let (p, iters) = run(200, Some(1e-4));
        for (m, &k) in iters.iter().enumerate() {
            assert!((2..200).contains(&k), "{iters:?}");
            assert!(worst_row(&p, m) <= 1e-4, "{m}");
            // The same bits as k iterations without a tolerance, and one
            // iteration fewer would not have met it.
            assert_eq!(p[m * 36..][..36], run(k, None).0[m * 36..][..36]);
            assert!(worst_row(&run(k - 1, None).0, m) > 1e-4, "{m}");
        }
    }

    /// The loss `sum(P * v)` for fixed weights `v`, and its gradient.
    fn loss(x: &[f64], shape: Square, p: Sinkhorn<f64>, v: &[f64]) -> f64 {
        let mut out = vec![0.0; shape.output_len()];
        let soft = SinkhornOutputs {
            soft: Some(&mut out),
            ..Default::default()
        };
        gumbel_sinkhorn_forward(x, shape, p, Stream::new(3, 3), soft).unwrap();
        out.iter().zip(v).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (shape, tol) in [
            (Square::new(2, 1, 3), None),
            (Square::new(1, 3, 4), None),
            (Square::new(2, 2, 3), Some(1e-3)),
        ] {
            let mut x = weights(shape.input_len(), 6);
            x[1] = f64::NEG_INFINITY;
            let p = params(0.6, 1.0, 8, tol);
            let v = weights(shape.output_len(), 8);
            let stream = Stream::new(3, 3);
            let mut iters = vec![0u32; shape.matrices()];
            let out = SinkhornOutputs {
                iters: Some(&mut iters),
                ..Default::default()
            };
            gumbel_sinkhorn_forward(&x, shape, p, stream, out).unwrap();
            let mut grad = vec![0.0; shape.input_len()];
            gumbel_sinkhorn_backward(&x, shape, p, stream, &iters, &v, &mut grad).unwrap();
            assert_eq!(grad[1], 0.0, "a forbidden pair has gradient 0");
            for e in (0..x.len()).filter(|&e| e != 1) {
                let h = 1e-6;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[e] += h;
                down[e] -= h;
                let fd = (loss(&up, shape, p, &v) - loss(&down, shape, p, &v)) / (2.0 * h);
                assert!(
                    (fd - grad[e]).abs() < 1e-7,
                    "{shape:?} {e}: {fd} {}",
                    grad[e]
                );
            }
        }
    }

    #[test]
    fn forbidden_pairs_and_empty_rows_stay_zero() {
        let n = 3;
        let ninf = f64::NEG_INFINITY;
        let x = [0.5, ninf, 0.1, ninf, ninf, ninf, 0.3, 0.2, ninf];
        let shape = Square::new(1, 1, n);
        let mut p = vec![1.0; 9];
        let out = SinkhornOutputs {
            soft: Some(&mut p),
            ..Default::default()
        };
        gumbel_sinkhorn_forward(&x, shape, params(1.0, 1.0, 5, None), Stream::new(0, 0), out)
            .unwrap();
        for (e, (&pv, &xv)) in p.iter().zip(&x).enumerate() {
            assert!(pv.is_finite(), "{e}");
            assert_eq!(pv == 0.0, xv == ninf, "{e}: {pv}");
        }
    }

    #[test]
    fn an_overflowing_perturbation_is_a_fault_at_its_output_element() {
        let shape = Square::new(2, 2, 2);
        let mut x = vec![0f32; 8];
        x[5] = f32::NEG_INFINITY; // elements 9 and 13 of the output: they stay -inf
        let stream = Stream::new(5, 0);
        let mut g = vec![0f32; 16];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let first = (0..16)
            .find(|&e| e != 9 && e != 13 && ((1e10f32 * g[e]) / 1e-30).is_infinite())
            .unwrap();
        let p = params(1e-30, 1e10, 3, None);
        let e = gumbel_sinkhorn_forward(&x, shape, p, stream, Default::default());
        assert_eq!(e, Err(KernelError::PosInfLogit { index: first }));
        x[2] = f32::NAN;
        let p = params(1.0, 1.0, 3, None);
        let e = gumbel_sinkhorn_forward(&x, shape, p, stream, Default::default());
        assert_eq!(e, Err(KernelError::NanLogit { index: 2 }));
        let e = gumbel_sinkhorn_forward(
            &x,
            shape,
            Sinkhorn { tau: 0.0, ..p },
            stream,
            Default::default(),
        );
        assert_eq!(e, Err(KernelError::BadTau { index: 0 }));
    }
}
