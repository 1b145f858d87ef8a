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
//! The iterations run in scaling form, which computes the same matrices
//! without an exponential per entry and iteration. The kernels keep a
//! *base*, log normalisers `R` (rows) and `C` (columns) with the matrix of
//! their exponentials `K[i][j] = exp((X0[i][j] - R[i]) - C[j])` (always
//! rounded in that order), and scalings `u`, `v`: the current matrix is
//! `exp(X) = u[i] K[i][j] v[j]`. A row step is `u[i] = 1 / sum_j K[i][j]
//! v[j]` (its logsumexp is `-ln u[i]` relative to the base), a column step
//! `v[j] = 1 / sum_i u[i] K[i][j]`: two multiply-adds an entry, in one pass
//! over `K` an iteration (see `Work::scaled`). The sums stay accurate while
//! they lie in `[2^-20, 2^20]`: an entry of `K` that underflowed to 0 is
//! below `2^-126` (float32), and scaled by at most `2^40` it is far below
//! rounding in a sum of at least `2^-20`. An iteration that would take a sum
//! outside that range is run instead from a new base (see `Work::rebase`):
//! the scalings are taken into `R` and `C` (`R -= ln u`, `C -= ln v`), `K`
//! recomputed, and the iteration done in log space on it, each row shifted
//! by its maximum where its sum is too small (and in the first iteration,
//! from `R = C = 0`), each column whose sum is too small normalised by its
//! max-subtracted logsumexp. At temperatures near 1 the first iteration is
//! the only one in log space; at low temperatures more are, at about the cost
//! of an iteration in log space each.
//!
//! The backward reruns the forward keeping, after every iteration, `u`, `v`,
//! the column scalings `v'` that give the matrix after its row step,
//! `exp(X_a) = u[i] K[i][j] v'[j]`, and the base of each iteration run from a
//! new one (`5 np` values an iteration, `np` being `n` rounded up to a
//! multiple of `T::LANES`). It then walks back through the iterations with
//! the gradient of `X' = X - logsumexp(X, axis)`,
//! `dX = dX' - exp(X') * sum(dX', axis)`, both matrices of an iteration
//! products of `K` and the kept vectors: one pass over `K` and no
//! exponential an iteration, but one pass of exponentials to recompute `K`
//! where the walk enters an earlier base (see `Work::backward`). Nothing of
//! size `n^2` is kept per iteration.
//!
//! A row or column whose entries are all `-inf` (no pair allowed) has no
//! logsumexp: its scaling is 0, its normaliser unchanged, its entries stay 0.
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
    /// the last, on the row sums the next row step computes anyway:
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
/// `np`, a multiple of `T::LANES`, with `-inf` entries of `X0` (0 in `K`),
/// which add 0 to every sum and change no maximum, so that every loop over
/// a row runs on whole vectors. The forward uses `3 n np + 8 np` values,
/// the backward `4 n np + 5 k np + 10 np` values (and `k` flags) for at
/// most `k` iterations.
struct Work<T> {
    n: usize,
    np: usize,
    /// `X0`, `n` rows of `np`.
    x0: Vec<T>,
    /// `K`, the exponentials of the base, `n` rows of `np`, and its
    /// transpose (`n` rows of `np`, 0 in the padding).
    k: Vec<T>,
    kt: Vec<T>,
    /// The base's normalisers `R` (`n`) and `C` (`np`, 0 in the padding).
    r: Vec<T>,
    c: Vec<T>,
    /// The scalings `u` (`n`) and `v` (`np`, 0 in the padding).
    u: Vec<T>,
    v: Vec<T>,
    /// The column scalings of the matrix after the last row step.
    vin: Vec<T>,
    /// The sums of the current row step.
    s: Vec<T>,
    /// The sums of `u[i] K[i][j]` down the columns.
    colsum: Vec<T>,
    /// One row of `X`, or the row scalings `scaled` computes.
    w: Vec<T>,
    /// Backward, for each iteration `t`: `u`, `v'`, `v`, `R` and `C` (`np`
    /// each) after it, the last two used where `t` started a base.
    trace: Vec<T>,
    /// Backward: whether iteration `t` started a base.
    rebased: Vec<bool>,
    /// Backward: the gradient of the matrix after the current half-step.
    g: Vec<T>,
    /// Backward: the column sums of `g` the current step back needs, and
    /// those of its result, which the next step back needs.
    sums: Vec<T>,
    next: Vec<T>,
    /// The range of sums the scaling form keeps: `[lo, 1 / lo]`, `2^-20`.
    lo: T,
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
            k: v(n * np),
            kt: v(n * np),
            r: v(np),
            c: v(np),
            u: v(np),
            v: v(np),
            vin: v(np),
            s: v(np),
            colsum: v(np),
            w: v(np),
            trace: b(5 * iters * np),
            rebased: vec![false; if backward { iters } else { 0 }],
            g: b(n * np),
            sums: b(np),
            next: b(np),
            lo: T::from_f64(2f64.powi(-20)),
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

    /// Runs the iterations on `x0`: `n_iters` of them, or fewer when `tol`
    /// is met; with `trace`, keeps what the backward needs of each. Returns
    /// the number run. The first iteration starts the first base; each
    /// later one runs in scaling form, or from a new base when a sum leaves
    /// the range (see the module).
    #[inline(always)]
    fn iterate(&mut self, n_iters: usize, tol: Option<T>, trace: bool) -> usize {
        for t in 0..n_iters {
            let rebase = if t == 0 {
                true
            } else {
                let ok = self.scaled();
                // The row sums of the matrix after iteration t - 1 are s * u.
                let (s, u) = (&self.s[..self.n], &self.u[..self.n]);
                let done = |tol: T| {
                    s.iter()
                        .zip(u)
                        .all(|(&s, &u)| (s * u - T::ONE).abs() <= tol)
                };
                if tol.is_some_and(done) {
                    return t;
                }
                if ok {
                    self.commit();
                }
                !ok
            };
            if rebase {
                self.rebase(t == 0);
            }
            if trace {
                let np = self.np;
                let kept = &mut self.trace[5 * t * np..][..5 * np];
                for (dst, src) in kept
                    .chunks_exact_mut(np)
                    .zip([&self.u, &self.vin, &self.v, &self.r, &self.c])
                {
                    dst.copy_from_slice(src);
                }
                self.rebased[t] = rebase;
            }
        }
        n_iters
    }

    /// An iteration in scaling form, its results left in `s` (the row sums
    /// `sum_j K[i][j] v[j]`), `w` (the new `u`, `1 / s`) and `colsum` (the
    /// sums of `K[i][j] / s[i]` down the columns): whether every sum is in range (rows and columns
    /// of scaling 0 left out: they have no entry).
    #[inline(always)]
    fn scaled(&mut self) -> bool {
        let Work {
            n,
            np,
            k,
            kt,
            u,
            v,
            s,
            w,
            colsum,
            lo,
            ..
        } = self;
        let (n, np, lo) = (*n, *np, *lo);
        let hi = T::ONE / lo;
        // The row sums `K v` as the column sums of `K^T`, their reciprocals
        // into `w`, then the column sums of `K` weighted by them: each a
        // sum of rows, none a sum along a row.
        column_sums(kt, np, &v[..n], s);
        let mut ok = true;
        for ((wi, &si), &ui) in w[..n].iter_mut().zip(s.iter()).zip(u.iter()) {
            ok &= (ui == T::ZERO) | ((si >= lo) & (si <= hi));
            *wi = sel(ui == T::ZERO, T::ZERO, T::ONE / si);
        }
        column_sums(k, np, &w[..n], colsum);
        let mut cols = colsum[..n].iter().zip(&v[..n]);
        ok && cols.all(|(&cs, &vj)| (vj == T::ZERO) | ((cs >= lo) & (cs <= hi)))
    }

    /// Takes the results of `scaled` as the new scalings; `vin` keeps the
    /// old column scalings, those of the matrix after the row step.
    #[inline(always)]
    fn commit(&mut self) {
        let n = self.n;
        self.vin.copy_from_slice(&self.v);
        self.u[..n].copy_from_slice(&self.w[..n]);
        for (vj, &cs) in self.v[..n].iter_mut().zip(&self.colsum) {
            *vj = sel(*vj == T::ZERO, T::ZERO, T::ONE / cs);
        }
    }

    /// An iteration from a new base: the scalings taken into `R` and `C`
    /// (from `R = C = 0` when `first`), `K` recomputed row by row, each row
    /// whose sum is below `lo` (every row when `first`) shifted by its
    /// maximum (added to `R`, `K`'s row recomputed), the row step's `u`,
    /// then each column's sum `sum_i u[i] K[i][j]`: `v = 1 / sum` where it
    /// is at least `lo`, else the column's logsumexp, max-subtracted in log
    /// space, added to `C`, the column of `K` recomputed, and `v = 1`.
    /// `vin` gets the column scalings of the matrix after the row step, 1 or
    /// the exponential of that logsumexp.
    #[inline(always)]
    fn rebase(&mut self, first: bool) {
        let Work {
            n,
            np,
            x0,
            k,
            kt,
            r,
            c,
            u,
            v,
            vin,
            s,
            colsum,
            w,
            lo,
            ..
        } = self;
        let (n, np, lo) = (*n, *np, *lo);
        if first {
            r.fill(T::ZERO);
            c.fill(T::ZERO);
            u.fill(T::ONE);
            v[..n].fill(T::ONE);
        }
        for (ri, &ui) in r[..n].iter_mut().zip(u.iter()) {
            if ui > T::ZERO {
                *ri = *ri - ui.ln_normal();
            }
        }
        for (cj, &vj) in c[..n].iter_mut().zip(v.iter()) {
            if vj > T::ZERO {
                *cj = *cj - vj.ln_normal();
            }
        }
        colsum.fill(T::ZERO);
        let rows = r.iter_mut().zip(u.iter_mut()).zip(s.iter_mut());
        for (((ri, ui), si), (ki, x0i)) in rows.zip(k.chunks_exact_mut(np).zip(x0.chunks_exact(np)))
        {
            current_row(x0i, *ri, c, w);
            *si = T::ZERO;
            if !first && *ui > T::ZERO {
                for (kv, &x) in ki.iter_mut().zip(w.iter()) {
                    *kv = x.exp();
                }
                *si = T::lane_sum(ki);
            }
            if *si < lo {
                let m = T::lane_max(w);
                if m == T::NEG_INFINITY {
                    // An empty row: no entry, scaling 0.
                    ki.fill(T::ZERO);
                    *ui = T::ZERO;
                    continue;
                }
                *ri = *ri + m;
                exp_row(x0i, *ri, c, ki);
                // The largest term is about exp(0) = 1: the sum is about [1, n].
                *si = T::lane_sum(ki);
            }
            *ui = T::ONE / *si;
            for (cs, &kv) in colsum.iter_mut().zip(ki.iter()) {
                *cs = kv.fma(*ui, *cs);
            }
        }
        for j in 0..n {
            (v[j], vin[j]) = if colsum[j] >= lo {
                (T::ONE / colsum[j], T::ONE)
            } else {
                let l = column_lse(x0, np, &r[..n], &u[..n], c[j], j);
                if l == T::NEG_INFINITY {
                    (T::ZERO, T::ZERO) // an empty column
                } else {
                    c[j] = c[j] + l;
                    for (kr, (x0i, &ri)) in k
                        .chunks_exact_mut(np)
                        .zip(x0.chunks_exact(np).zip(r.iter()))
                    {
                        kr[j] = ((x0i[j] - ri) - c[j]).exp();
                    }
                    (T::ONE, l.exp())
                }
            };
        }
        for (i, ki) in k.chunks_exact(np).enumerate() {
            for (j, &kv) in ki[..n].iter().enumerate() {
                kt[j * np + i] = kv;
            }
        }
    }

    /// `P = exp(X)` of the current state into `dst` (`n x n`).
    #[inline(always)]
    fn write_soft(&self, dst: &mut [T]) {
        let (n, np) = (self.n, self.np);
        let rows = dst.chunks_exact_mut(n).zip(self.k.chunks_exact(np));
        for ((d, ki), &ui) in rows.zip(&self.u) {
            for ((d, &kv), &vj) in d.iter_mut().zip(ki).zip(&self.v) {
                *d = (kv * ui) * vj;
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
    /// sums `dX` down the columns for the iteration before. With `K` of the
    /// iteration's base and the kept scalings, `exp(X_a) = u[i] K[i][j] v'[j]`
    /// and `exp(X_b) = u[i] K[i][j] v[j]`.
    #[inline(always)]
    fn backward(&mut self, k: usize, grad: &[T], tau: T, dst: &mut [T]) {
        self.iterate(k, None, true);
        let Work {
            n,
            np,
            x0,
            k: kk,
            u,
            v,
            w: a,
            trace,
            rebased,
            g,
            sums,
            next,
            ..
        } = self;
        let (n, np) = (*n, *np);
        // dL/dX after the last iteration: grad * P (0 in the padding), and
        // its column sums.
        sums.fill(T::ZERO);
        let rows = g.chunks_exact_mut(np).zip(grad.chunks_exact(n));
        for ((gi, gr), (ki, &ui)) in rows.zip(kk.chunks_exact(np).zip(u.iter())) {
            gi[n..].fill(T::ZERO);
            let cols = gi.iter_mut().zip(gr).zip(ki).zip(v.iter());
            for ((((gv, &gp), &kv), &vj), s) in cols.zip(sums.iter_mut()) {
                *gv = gp * ((kv * ui) * vj);
                *s = *s + *gv;
            }
        }
        // The first iteration of the base `kk` holds.
        let mut base = (0..k).rev().find(|&t| rebased[t]).unwrap_or(0);
        for t in (0..k).rev() {
            let kept = &trace[5 * t * np..][..5 * np];
            if t < base {
                base = (0..=t).rev().find(|&t| rebased[t]).unwrap_or(0);
                let (rb, cb) = trace[5 * base * np..][3 * np..5 * np].split_at(np);
                for ((ki, x0i), &ri) in kk.chunks_exact_mut(np).zip(x0.chunks_exact(np)).zip(rb) {
                    exp_row(x0i, ri, cb, ki);
                }
            }
            let (ut, rest) = kept.split_at(np);
            let (vin, vout) = (&rest[..np], &rest[np..2 * np]);
            next.fill(T::ZERO);
            let rows = g.chunks_exact_mut(np).zip(kk.chunks_exact(np));
            for ((gi, ki), &ui) in rows.zip(ut) {
                let cols = gi.iter_mut().zip(a.iter_mut()).zip(ki).zip(vin);
                for ((((gv, av), &kv), &vi), (&vo, &s)) in cols.zip(vout.iter().zip(sums.iter())) {
                    let ku = kv * ui;
                    *av = ku * vi;
                    *gv = *gv - (ku * vo) * s;
                }
                let rs = sum(gi);
                if t > 0 {
                    for ((gv, &av), s) in gi.iter_mut().zip(a.iter()).zip(next.iter_mut()) {
                        *gv = *gv - av * rs;
                        *s = *s + *gv;
                    }
                } else {
                    for (gv, &av) in gi.iter_mut().zip(a.iter()) {
                        *gv = *gv - av * rs;
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

/// The most lanes of any `Real` (float32's 16): the size of the
/// accumulators of `sum`, of which `T::LANES` are used.
const MAX_LANES: usize = 16;

/// `sum_t a[t]` over a row of whole vectors (as `Work` pads them): lane
/// `l` accumulates the terms `t % T::LANES == l`, then the lanes are added
/// pairwise, `(l, l + LANES/2)` first: `Real::lane_sum`'s order, without
/// its step for a partial last vector, which copied one through memory for
/// every row.
#[inline(always)]
fn sum<T: Real>(a: &[T]) -> T {
    let lanes = T::LANES;
    let (first, rest) = a.split_at(lanes);
    let mut acc = [T::ZERO; MAX_LANES];
    acc[..lanes].copy_from_slice(first);
    for x in rest.chunks_exact(lanes) {
        for (s, &v) in acc[..lanes].iter_mut().zip(x) {
            *s = *s + v;
        }
    }
    let mut width = lanes;
    while width > 1 {
        width /= 2;
        let (lo, hi) = acc.split_at_mut(width);
        for (s, &v) in lo.iter_mut().zip(&hi[..width]) {
            *s = *s + v;
        }
    }
    acc[0]
}

/// `out[j] = sum_i f[i] k[i][j]` for the rows of `k` (`f.len()` of `np`),
/// four rows at a time (`((out + k0 f0) + k1 f1) + ...`, each a fused
/// multiply-add): a quarter of the loads and stores of `out`, whose
/// dependence from row to row bounds the loop.
#[inline(always)]
fn column_sums<T: Real>(k: &[T], np: usize, f: &[T], out: &mut [T]) {
    out.fill(T::ZERO);
    let (mut k4, mut f4) = (k.chunks_exact(4 * np), f.chunks_exact(4));
    for (ks, fs) in (&mut k4).zip(&mut f4) {
        let (k0, rest) = ks.split_at(np);
        let (k1, rest) = rest.split_at(np);
        let (k2, k3) = rest.split_at(np);
        let rows = out.iter_mut().zip(k0).zip(k1).zip(k2).zip(k3);
        for ((((o, &a), &b), &c), &d) in rows {
            *o = d.fma(fs[3], c.fma(fs[2], b.fma(fs[1], a.fma(fs[0], *o))));
        }
    }
    for (ki, &fi) in k4.remainder().chunks_exact(np).zip(f4.remainder()) {
        for (o, &a) in out.iter_mut().zip(ki) {
            *o = a.fma(fi, *o);
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

/// Row `i` of `K`: `k[j] = exp((x0[j] - r) - c[j])`.
#[inline(always)]
fn exp_row<T: Real>(x0: &[T], r: T, c: &[T], k: &mut [T]) {
    for ((v, &x), &cj) in k.iter_mut().zip(x0).zip(c) {
        *v = ((x - r) - cj).exp();
    }
}

/// The logsumexp of column `j` of the matrix after a row step,
/// `((x0[i][j] - r[i]) - cj) + ln u[i]` (rows of `np` in `x0`; rows of
/// scaling 0 left out), max-subtracted; `-inf` for a column without an
/// entry above `-inf`.
fn column_lse<T: Real>(x0: &[T], np: usize, r: &[T], u: &[T], cj: T, j: usize) -> T {
    let rows = || (0..r.len()).filter(|&i| u[i] > T::ZERO);
    let entry = |i: usize| ((x0[i * np + j] - r[i]) - cj) + u[i].ln_normal();
    let m = rows().fold(T::NEG_INFINITY, |m, i| m.max(entry(i)));
    if m == T::NEG_INFINITY {
        return m;
    }
    let s = rows().fold(T::ZERO, |s, i| s + (entry(i) - m).exp_nonpositive());
    m + s.ln_normal()
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
/// Memory: per thread, `4 n np + 5 k np + 10 np` values for the largest
/// count `k`, `np` being `n` rounded up to a multiple of `T::LANES` (for
/// `n = 50`, 20 iterations and float32, 79,360 bytes); with more than one
/// sample, also a `(batch, samples, n, n)` buffer of the samples'
/// gradients, summed at the end. Nothing is kept from the forward but the
/// iteration counts.
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

    /// At low temperatures the sums leave the scaling form's range: some
    /// iterations after the first start new bases, some columns are
    /// normalised in log space. The samples still follow the plain algorithm
    /// and the gradient finite differences.
    #[test]
    fn new_bases_change_no_result() {
        let shape = Square::new(1, 1, 6);
        let (iters, stream) = (12, Stream::new(3, 3));
        let (mut later_bases, mut log_columns) = (0, 0);
        for (seed, scale, tau) in [(2, 3.0, 0.1), (11, 10.0, 0.02)] {
            let x: Vec<f64> = weights(36, seed).iter().map(|v| scale * v).collect();
            let p = params(tau, 1.0, iters as u32, None);
            let mut work = Work::<f64>::new(6, true, iters);
            work.start(&x, &p, &stream, 0, None).unwrap();
            work.iterate(iters, None, true);
            later_bases += work.rebased[1..].iter().filter(|&&b| b).count();
            let kept = work.trace.chunks_exact(5 * work.np).zip(&work.rebased);
            for (kept, _) in kept.filter(|k| *k.1) {
                log_columns += kept[work.np..][..6].iter().filter(|&&v| v != 1.0).count();
            }
            let mut g = vec![0.0; 36];
            noise(Noise::Gumbel, stream, &mut g).unwrap();
            let want = plain(&x, &g, 6, tau, 1.0, iters);
            let mut got = vec![0.0; 36];
            work.write_soft(&mut got);
            for (e, (&got, &want)) in got.iter().zip(&want).enumerate() {
                assert!((got - want).abs() < 1e-14, "{seed} {e}: {got} {want}");
            }
            let v = weights(36, 8);
            let mut grad = vec![0.0; 36];
            let counts = [iters as u32];
            gumbel_sinkhorn_backward(&x, shape, p, stream, &counts, &v, &mut grad).unwrap();
            for e in 0..36 {
                let h = 1e-7;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[e] += h;
                down[e] -= h;
                let fd = (loss(&up, shape, p, &v) - loss(&down, shape, p, &v)) / (2.0 * h);
                let err = (fd - grad[e]).abs();
                assert!(
                    err < 1e-6 * (1.0 + fd.abs()),
                    "{seed} {e}: {fd} {}",
                    grad[e]
                );
            }
        }
        assert!(
            later_bases > 0 && log_columns > 0,
            "{later_bases} {log_columns}"
        );
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
