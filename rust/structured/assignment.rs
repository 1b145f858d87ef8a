//! Batched exact linear assignment (`gumbelrs.structured.matching`).
//!
//! Every matrix of a batch, `n` rows by `m >= n` columns, gets the
//! assignment of each row to a column of its own with the largest (or
//! smallest) total weight, by shortest augmenting paths (Jonker & Volgenant
//! 1987; Crouse 2016 for `n < m`):
//!
//! - Costs are the weights in f64 (exact for f32 weights), negated when
//!   maximizing; a pair of cost `+inf` (a `-inf` weight when maximizing) is
//!   forbidden.
//! - Rows carry prices `u` and columns `v` with `u[i] + v[j] <= c[i][j]` for
//!   every pair, equality on assigned pairs and `v[j] = 0` on free columns:
//!   then no assignment of the rows costs less than `sum(u) + sum(v)`, which
//!   the final one costs.
//! - Start: `u[i]` is the smallest cost of row `i` and `v = 0`; each row in
//!   turn takes the first free column of its smallest cost, if one is free.
//! - Each row still free, in order, is inserted by Dijkstra's algorithm over
//!   the reduced costs `c - u - v` (never negative): the search grows from the
//!   row, through columns and the rows assigned to them, to the nearest free
//!   column. The prices then move by the distances found, which keeps every
//!   pair feasible and makes the path tight, and the path flips.
//!
//! Ties are broken by that procedure, the same every time: among columns at
//! the same distance (or of the same smallest cost, at the start) a free one
//! comes first, then the smallest index. Each matrix is solved by one
//! thread, so results do not depend on the number of threads, nor on the
//! instruction set (the vector scans round as the scalar one does). The work
//! is O(n^2 m) at worst; one thread's buffers serve every matrix it solves,
//! and each step of a search reads one row of costs and the column arrays
//! in order, 4 or 8 columns at a time.

use crate::kernels::{check_len, KernelError, SharedMut};
use crate::math::Real;
use crate::{isa, parallel};
use std::ops::Range;

/// No row (a free column's) or no column (a free row's).
const NONE: usize = usize::MAX;

/// The largest cost magnitude solved as given: 2^960. Prices and path
/// lengths stay within a few times `n + m` times the largest cost, so below
/// this no sum can overflow. A matrix with a larger finite cost is scaled by
/// 2^-64 first, which is exact except for magnitudes below 2^-958 (subnormal
/// after scaling), too small to change any sum with a cost above 2^960.
const UNSCALED_MAX: f64 = f64::from_bits((1023 + 960) << 52);

/// 2^-64.
const SCALE: f64 = f64::from_bits((1023 - 64) << 52);

/// Lanes of the branch-free loops that the compiler runs on vectors.
const LANES: usize = 8;

/// One thread's buffers, reused for every matrix it solves.
struct Solver {
    /// The instruction set the scans use.
    level: isa::Level,
    n: usize,
    m: usize,
    /// The costs of the matrix, row-major.
    cost: Vec<f64>,
    /// Row prices.
    u: Vec<f64>,
    /// Column prices.
    v: Vec<f64>,
    /// Each column's distance from the row being inserted while the search
    /// has not reached it; NaN once reached, so that no comparison picks it.
    dist: Vec<f64>,
    /// The row from which each column was reached at its distance.
    pred: Vec<usize>,
    /// The row assigned to each column.
    row_of: Vec<usize>,
    /// The column assigned to each row.
    col_of: Vec<usize>,
    /// The rows the search scanned, in order.
    rows: Vec<usize>,
    /// The columns the search reached, in order, with their distances;
    /// `cols[k]` leads to `rows[k + 1]`, and the last is free.
    cols: Vec<(usize, f64)>,
}

impl Solver {
    fn new(n: usize, m: usize, level: isa::Level) -> Self {
        Solver {
            level,
            n,
            m,
            cost: vec![0.0; n * m],
            u: vec![0.0; n],
            v: vec![0.0; m],
            dist: vec![0.0; m],
            pred: vec![NONE; m],
            row_of: vec![NONE; m],
            col_of: vec![NONE; n],
            rows: Vec::with_capacity(n),
            cols: Vec::with_capacity(n),
        }
    }

    /// Reads the weights `w` of one matrix as costs. A NaN weight, or the
    /// infinity the objective seeks, is an error at its index plus `base`.
    #[inline(always)]
    fn load<T: Real>(&mut self, w: &[T], maximize: bool, base: usize) -> Result<(), KernelError> {
        let sign = if maximize { -1.0 } else { 1.0 };
        // In lanes, without branches, so that the loop runs on vectors: every
        // cost above -inf (NaN fails), and the largest finite magnitude.
        let mut ok = [true; LANES];
        let mut top = [0.0f64; LANES];
        let mut costs = self.cost.chunks_exact_mut(LANES);
        let mut weights = w.chunks_exact(LANES);
        for (c, w) in (&mut costs).zip(&mut weights) {
            for l in 0..LANES {
                let y = w[l].to_f64() * sign;
                c[l] = y;
                ok[l] &= y > f64::NEG_INFINITY;
                let a = if y < f64::INFINITY { y.abs() } else { 0.0 };
                top[l] = if a > top[l] { a } else { top[l] };
            }
        }
        for (c, w) in costs.into_remainder().iter_mut().zip(weights.remainder()) {
            let y = w.to_f64() * sign;
            *c = y;
            ok[0] &= y > f64::NEG_INFINITY;
            if y < f64::INFINITY && y.abs() > top[0] {
                top[0] = y.abs();
            }
        }
        if !ok.iter().all(|&ok| ok) {
            let bad = |y: &f64| y.is_nan() || *y == f64::NEG_INFINITY;
            if let Some(k) = self.cost.iter().position(bad) {
                let index = base + k;
                return Err(if w[k].is_nan() {
                    KernelError::NanWeight { index }
                } else {
                    KernelError::InfiniteWeight { index }
                });
            }
        }
        if top.iter().any(|&t| t > UNSCALED_MAX) {
            self.cost.iter_mut().for_each(|c| *c *= SCALE);
        }
        Ok(())
    }

    /// The assignment of every row, or false when the forbidden pairs leave
    /// none.
    #[inline(always)]
    fn solve(&mut self) -> bool {
        // Loops, not iterator adapters: their closures would be functions
        // of their own, compiled without the target features of the caller.
        if !self.start() {
            return false;
        }
        for i in 0..self.n {
            if self.col_of[i] == NONE && !self.augment(i) {
                return false;
            }
        }
        true
    }

    /// Sets the prices to their start and assigns each row, in order, to
    /// the first free column of its smallest cost, if one is free. False
    /// when a row has no allowed pair.
    #[inline(always)]
    fn start(&mut self) -> bool {
        let m = self.m;
        self.v.fill(0.0);
        self.row_of.fill(NONE);
        self.col_of.fill(NONE);
        for i in 0..self.n {
            // A scan from a row at distance 0 with every column price 0 reads
            // the row's costs as they are.
            self.dist.fill(f64::INFINITY);
            let c = &self.cost[i * m..(i + 1) * m];
            let step = Step::new(
                i,
                0.0,
                c,
                &self.v,
                &mut self.dist,
                &mut self.pred,
                &self.row_of,
            );
            let (low, at, free) = scan(self.level, step);
            if low == f64::INFINITY {
                return false;
            }
            self.u[i] = low;
            if free {
                self.row_of[at] = i;
                self.col_of[i] = at;
            }
        }
        true
    }

    /// Inserts the free row `start` along a shortest augmenting path; false
    /// when no free column can be reached through allowed pairs (then no
    /// assignment of every row exists).
    #[inline(always)]
    fn augment(&mut self, start: usize) -> bool {
        let Some((sink, d)) = self.search(start) else {
            return false;
        };
        let Solver {
            u,
            v,
            pred,
            row_of,
            col_of,
            rows,
            cols,
            ..
        } = self;
        u[start] += d;
        for (k, &(j, dj)) in cols.iter().enumerate() {
            let lift = d - dj;
            v[j] -= lift;
            if let Some(&r) = rows.get(k + 1) {
                u[r] += lift;
            }
        }
        let mut j = sink;
        loop {
            let i = pred[j];
            row_of[j] = i;
            let next = std::mem::replace(&mut col_of[i], j);
            if i == start {
                return true;
            }
            j = next;
        }
    }

    /// Dijkstra's search from the free row `start` to the nearest free
    /// column: that column and its distance, with the rows scanned and the
    /// columns reached in `rows` and `cols`; None when no free column can be
    /// reached.
    #[inline(always)]
    fn search(&mut self, start: usize) -> Option<(usize, f64)> {
        let m = self.m;
        let Solver {
            level,
            cost,
            u,
            v,
            dist,
            pred,
            row_of,
            rows,
            cols,
            ..
        } = self;
        dist.fill(f64::INFINITY);
        rows.clear();
        cols.clear();
        let (mut i, mut d) = (start, 0.0);
        loop {
            rows.push(i);
            let c = &cost[i * m..(i + 1) * m];
            let step = Step::new(i, d - u[i], c, v, dist, pred, row_of);
            let (low, at, at_free) = scan(*level, step);
            if low == f64::INFINITY {
                return None;
            }
            d = low;
            dist[at] = f64::NAN;
            cols.push((at, low));
            if at_free {
                return Some((at, d));
            }
            i = row_of[at];
        }
    }
}

/// One step of a search: row `i`, its costs `c` and its distance less its
/// price `h`, with the column arrays it reads (`v`, `row_of`) and updates
/// (`dist`, `pred`), each as long as `c`.
struct Step<'a> {
    i: usize,
    h: f64,
    c: &'a [f64],
    v: &'a [f64],
    dist: &'a mut [f64],
    pred: &'a mut [usize],
    row_of: &'a [usize],
}

impl<'a> Step<'a> {
    /// The step of row `i` with costs `c`; the column arrays are cut to its
    /// length (panics if one is shorter).
    #[inline(always)]
    fn new(
        i: usize,
        h: f64,
        c: &'a [f64],
        v: &'a [f64],
        dist: &'a mut [f64],
        pred: &'a mut [usize],
        row_of: &'a [usize],
    ) -> Self {
        let m = c.len();
        Step {
            i,
            h,
            c,
            v: &v[..m],
            dist: &mut dist[..m],
            pred: &mut pred[..m],
            row_of: &row_of[..m],
        }
    }
}

/// Relaxes every column not yet reached through the step's row
/// (`dist[j] = min(dist[j], (h + c[j]) - v[j])`, with `pred[j] = i` where
/// that lowers it) and returns the nearest column, its distance and whether
/// it is free: among columns at that distance the first free one, else the
/// first. The vector builds keep a nearest column (and free column) per lane
/// and merge the lanes by distance, then index: the same answer, from the
/// same roundings.
#[inline(always)]
fn scan(level: isa::Level, mut s: Step<'_>) -> (f64, usize, bool) {
    let near = match level {
        // SAFETY: the solver's level is at most `isa::detected()`, which is
        // Avx512 only when the CPU has AVX-512 F/BW/DQ/VL and FMA.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx512 => unsafe { simd::scan_avx512(&mut s) },
        // SAFETY: Avx2 only when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx2 => unsafe { simd::scan_avx2(&mut s) },
        _ => scan_from(0, Nearest::NONE, &mut s),
    };
    if near.free_low == near.low {
        (near.low, near.free_at, true)
    } else {
        (near.low, near.at, false)
    }
}

/// The nearest column of a scan so far and the nearest free column, each
/// with its distance (the first of a distance).
#[derive(Clone, Copy)]
struct Nearest {
    low: f64,
    at: usize,
    free_low: f64,
    free_at: usize,
}

impl Nearest {
    const NONE: Nearest = Nearest {
        low: f64::INFINITY,
        at: NONE,
        free_low: f64::INFINITY,
        free_at: NONE,
    };
}

/// `scan` from column `start` on, given the nearest columns before it.
#[inline(always)]
fn scan_from(start: usize, mut near: Nearest, s: &mut Step<'_>) -> Nearest {
    let (h, i) = (s.h, s.i);
    for j in start..s.c.len() {
        let r = h + s.c[j] - s.v[j];
        if r < s.dist[j] {
            s.dist[j] = r;
            s.pred[j] = i;
        }
        let d = s.dist[j];
        if d < near.low {
            (near.low, near.at) = (d, j);
        }
        if s.row_of[j] == NONE && d < near.free_low {
            (near.free_low, near.free_at) = (d, j);
        }
    }
    near
}

/// The scan on x86_64 vectors: lane `l` of a step sees column `j + l`.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{scan_from, Nearest, Step, NONE};
    use std::arch::x86_64::*;

    /// `scan` with AVX-512: 8 columns a step.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, DQ, VL and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn scan_avx512(s: &mut Step<'_>) -> Nearest {
        let full = s.c.len() - s.c.len() % 8;
        let (c, v, row_of) = (s.c.as_ptr(), s.v.as_ptr(), s.row_of.as_ptr());
        let (dist, pred) = (s.dist.as_mut_ptr(), s.pred.as_mut_ptr());
        let hv = _mm512_set1_pd(s.h);
        let iv = _mm512_set1_epi64(s.i as i64);
        let none = _mm512_set1_epi64(NONE as i64);
        let (mut low, mut free_low) =
            (_mm512_set1_pd(f64::INFINITY), _mm512_set1_pd(f64::INFINITY));
        let (mut at, mut free_at) = (none, none);
        let mut idx = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        let step = _mm512_set1_epi64(8);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 8 <= full <= c.len(), the length of every slice
            // of the step (`Step::new`).
            unsafe {
                let cj = _mm512_loadu_pd(c.add(j));
                let vj = _mm512_loadu_pd(v.add(j));
                let old = _mm512_loadu_pd(dist.add(j));
                let r = _mm512_sub_pd(_mm512_add_pd(hv, cj), vj);
                let better = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(r, old);
                let d = _mm512_mask_blend_pd(better, old, r);
                _mm512_storeu_pd(dist.add(j), d);
                _mm512_mask_storeu_epi64(pred.add(j).cast(), better, iv);
                let take = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(d, low);
                low = _mm512_mask_blend_pd(take, low, d);
                at = _mm512_mask_blend_epi64(take, at, idx);
                let rows = _mm512_loadu_si512(row_of.add(j).cast());
                let free = _mm512_cmpeq_epi64_mask(rows, none);
                let take = _mm512_mask_cmp_pd_mask::<_CMP_LT_OQ>(free, d, free_low);
                free_low = _mm512_mask_blend_pd(take, free_low, d);
                free_at = _mm512_mask_blend_epi64(take, free_at, idx);
            }
            idx = _mm512_add_epi64(idx, step);
            j += 8;
        }
        // The first lane of the smallest distance (no lane holds NaN): lanes
        // not at it are left out of the minimum of the indices.
        let merge = |low: __m512d, at: __m512i| {
            let best = _mm512_reduce_min_pd(low);
            let tied = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(low, _mm512_set1_pd(best));
            (best, _mm512_mask_reduce_min_epu64(tied, at) as usize)
        };
        let ((low, at), (free_low, free_at)) = (merge(low, at), merge(free_low, free_at));
        let near = Nearest {
            low,
            at,
            free_low,
            free_at,
        };
        scan_from(full, near, s)
    }

    /// `scan` with AVX2: 4 columns a step.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scan_avx2(s: &mut Step<'_>) -> Nearest {
        let full = s.c.len() - s.c.len() % 4;
        let (c, v, row_of) = (s.c.as_ptr(), s.v.as_ptr(), s.row_of.as_ptr());
        let (dist, pred) = (s.dist.as_mut_ptr(), s.pred.as_mut_ptr());
        let hv = _mm256_set1_pd(s.h);
        let iv = _mm256_set1_epi64x(s.i as i64);
        let none = _mm256_set1_epi64x(NONE as i64);
        let (mut low, mut free_low) =
            (_mm256_set1_pd(f64::INFINITY), _mm256_set1_pd(f64::INFINITY));
        let (mut at, mut free_at) = (none, none);
        let mut idx = _mm256_setr_epi64x(0, 1, 2, 3);
        let step = _mm256_set1_epi64x(4);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 4 <= full <= c.len(), the length of every slice
            // of the step (`Step::new`).
            unsafe {
                let cj = _mm256_loadu_pd(c.add(j));
                let vj = _mm256_loadu_pd(v.add(j));
                let old = _mm256_loadu_pd(dist.add(j));
                let r = _mm256_sub_pd(_mm256_add_pd(hv, cj), vj);
                let better = _mm256_cmp_pd::<_CMP_LT_OQ>(r, old);
                let d = _mm256_blendv_pd(old, r, better);
                _mm256_storeu_pd(dist.add(j), d);
                _mm256_maskstore_epi64(pred.add(j).cast(), _mm256_castpd_si256(better), iv);
                let take = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(d, low));
                low = _mm256_blendv_pd(low, d, _mm256_castsi256_pd(take));
                at = _mm256_blendv_epi8(at, idx, take);
                let rows = _mm256_loadu_si256(row_of.add(j).cast());
                let free = _mm256_cmpeq_epi64(rows, none);
                let nearer = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LT_OQ>(d, free_low));
                let take = _mm256_and_si256(free, nearer);
                free_low = _mm256_blendv_pd(free_low, d, _mm256_castsi256_pd(take));
                free_at = _mm256_blendv_epi8(free_at, idx, take);
            }
            idx = _mm256_add_epi64(idx, step);
            j += 4;
        }
        let mut lanes = [[0.0; 4]; 2];
        let mut ats = [[0i64; 4]; 2];
        // SAFETY: each array holds 4 lanes of 64 bits, one vector.
        unsafe {
            _mm256_storeu_pd(lanes[0].as_mut_ptr(), low);
            _mm256_storeu_pd(lanes[1].as_mut_ptr(), free_low);
            _mm256_storeu_si256(ats[0].as_mut_ptr().cast(), at);
            _mm256_storeu_si256(ats[1].as_mut_ptr().cast(), free_at);
        }
        // The first lane of the smallest distance, without branches (the
        // winning lane is unpredictable).
        let first = |low: &[f64; 4], at: &[i64; 4]| {
            let best = low.iter().fold(f64::INFINITY, |b, &x| b.min(x));
            let at = (0..4).fold(NONE, |a, l| {
                a.min(if low[l] == best { at[l] as usize } else { NONE })
            });
            (best, at)
        };
        let ((low, at), (free_low, free_at)) =
            (first(&lanes[0], &ats[0]), first(&lanes[1], &ats[1]));
        let near = Nearest {
            low,
            at,
            free_low,
            free_at,
        };
        scan_from(full, near, s)
    }
}

/// The matrices of a call, and where their answers go.
struct Problems<'a, T> {
    weights: &'a [T],
    n: usize,
    m: usize,
    maximize: bool,
    out: SharedMut<i64>,
}

impl<T: Real> Problems<'_, T> {
    /// Solves the matrices of `range` with one set of buffers: the first
    /// matrix without an assignment, or the first bad weight (which ends the
    /// range: every later one is at a later position).
    #[inline(always)]
    fn solve(&self, range: Range<usize>, level: isa::Level) -> Result<Option<usize>, KernelError> {
        let (n, m) = (self.n, self.m);
        let size = n * m;
        let mut solver = Solver::new(n, m, level);
        let mut infeasible = None;
        for b in range {
            let w = &self.weights[b * size..(b + 1) * size];
            solver.load(w, self.maximize, b * size)?;
            if infeasible.is_some() {
                continue;
            }
            if solver.solve() {
                // SAFETY: matrix `b` belongs to this range alone, so no other
                // thread touches its `n` outputs.
                let o = unsafe { self.out.slice(b * n, n) };
                for (o, &j) in o.iter_mut().zip(&solver.col_of) {
                    *o = j as i64;
                }
            } else {
                infeasible = Some(b);
            }
        }
        Ok(infeasible)
    }
}

/// `Problems::solve` compiled with AVX2 and FMA (and its scans inlined).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn solve_avx2<T: Real>(
    p: &Problems<'_, T>,
    range: Range<usize>,
) -> Result<Option<usize>, KernelError> {
    p.solve(range, isa::Level::Avx2)
}

/// `Problems::solve` compiled with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, DQ, VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn solve_avx512<T: Real>(
    p: &Problems<'_, T>,
    range: Range<usize>,
) -> Result<Option<usize>, KernelError> {
    p.solve(range, isa::Level::Avx512)
}

/// Solves the `batch` assignment problems of `weights`, each an `n x m`
/// row-major matrix (`n <= m`), writing into `out` (`batch * n`) the column
/// assigned to each row; the total weight is the largest possible with
/// `maximize`, else the smallest. A pair whose weight is `-inf` (`+inf` when
/// minimizing) is forbidden.
///
/// Errors: the first NaN weight, or weight at the infinity the objective
/// seeks, in the whole batch (by position); otherwise the first matrix whose
/// forbidden pairs leave no assignment. `out` is then unspecified.
pub fn linear_assignment<T: Real>(
    weights: &[T],
    batch: usize,
    n: usize,
    m: usize,
    maximize: bool,
    out: &mut [i64],
) -> Result<(), KernelError> {
    linear_assignment_at(isa::level(), weights, batch, n, m, maximize, out)
}

/// `linear_assignment` with the scans at `level`, or the best level of this
/// CPU below it.
fn linear_assignment_at<T: Real>(
    level: isa::Level,
    weights: &[T],
    batch: usize,
    n: usize,
    m: usize,
    maximize: bool,
    out: &mut [i64],
) -> Result<(), KernelError> {
    if n > m {
        return Err(KernelError::MoreRowsThanColumns {
            rows: n,
            columns: m,
        });
    }
    let size = n * m;
    check_len("weights", weights.len(), batch * size)?;
    check_len("out", out.len(), batch * n)?;
    let out = SharedMut::new(out);
    let work = size.saturating_mul(n).max(1);
    let problems = Problems {
        weights,
        n,
        m,
        maximize,
        out,
    };
    let level = level.min(isa::detected());
    let results = parallel::map_ranges(batch, work, |range| match level {
        // SAFETY: `isa::detected` returns Avx512 only when the CPU has
        // AVX-512 F/BW/DQ/VL and FMA (detected at run time).
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx512 => unsafe { solve_avx512(&problems, range) },
        // SAFETY: Avx2 only when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx2 => unsafe { solve_avx2(&problems, range) },
        _ => problems.solve(range, isa::Level::Portable),
    });
    let mut first_infeasible = None;
    for r in results {
        if let Some(b) = r? {
            first_infeasible = first_infeasible.or(Some(b));
        }
    }
    match first_infeasible {
        Some(problem) => Err(KernelError::Infeasible { problem }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level; those the CPU lacks run at its best level.
    const LEVELS: [isa::Level; 3] = [isa::Level::Portable, isa::Level::Avx2, isa::Level::Avx512];

    /// xorshift64*: reproducible test matrices.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, k: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % k
        }
    }

    /// The best total of `a` (None for a forbidden pair) over every
    /// assignment of the rows to distinct columns, by trying them all.
    fn brute_force(a: &[Option<i64>], n: usize, m: usize, maximize: bool) -> Option<i64> {
        fn go(
            a: &[Option<i64>],
            m: usize,
            i: usize,
            n: usize,
            used: &mut [bool],
            better: &dyn Fn(i64, i64) -> bool,
        ) -> Option<i64> {
            if i == n {
                return Some(0);
            }
            let mut best: Option<i64> = None;
            for j in 0..m {
                if let (false, Some(x)) = (used[j], a[i * m + j]) {
                    used[j] = true;
                    if let Some(rest) = go(a, m, i + 1, n, used, better) {
                        if best.is_none_or(|b| better(x + rest, b)) {
                            best = Some(x + rest);
                        }
                    }
                    used[j] = false;
                }
            }
            best
        }
        let better = move |x: i64, b: i64| if maximize { x > b } else { x < b };
        go(a, m, 0, n, &mut vec![false; m], &better)
    }

    /// The total of `a` under the assignment `perm`, which must give each row
    /// its own column and no forbidden pair.
    fn total(a: &[Option<i64>], m: usize, perm: &[i64]) -> i64 {
        let mut used = vec![false; m];
        let mut sum = 0;
        for (i, &j) in perm.iter().enumerate() {
            let j = usize::try_from(j).unwrap();
            assert!(!used[j], "column {j} assigned twice in {perm:?}");
            used[j] = true;
            sum += a[i * m + j].expect("a forbidden pair was assigned");
        }
        sum
    }

    /// Random integer matrices up to 6 x 6 against every assignment, as
    /// weights `scale * a`: ties (entries in {0, 1, 2}), spread entries, and
    /// forbidden pairs that leave some matrices infeasible.
    fn check_against_brute_force(scale: f64, seed: u64) {
        let mut rng = Rng(seed);
        let mut infeasible = 0;
        for trial in 0..2000 {
            let n = 1 + rng.below(6) as usize;
            let m = n + rng.below(7 - n as u64) as usize;
            let spread = [3, 101, 7][trial % 3];
            let a: Vec<Option<i64>> = (0..n * m)
                .map(|_| {
                    let x = rng.below(spread) as i64 - if spread == 101 { 50 } else { 0 };
                    (trial % 3 != 2 || rng.below(10) >= 4).then_some(x)
                })
                .collect();
            for maximize in [true, false] {
                let forbidden = if maximize {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                let w: Vec<f64> = a
                    .iter()
                    .map(|x| x.map_or(forbidden, |x| x as f64 * scale))
                    .collect();
                let best = brute_force(&a, n, m, maximize);
                let mut first = None;
                for level in LEVELS {
                    let mut out = vec![-1; n];
                    let got = linear_assignment_at(level, &w, 1, n, m, maximize, &mut out);
                    match best {
                        None => assert_eq!(got, Err(KernelError::Infeasible { problem: 0 })),
                        Some(best) => {
                            assert_eq!(got, Ok(()), "{a:?} {n}x{m}");
                            assert_eq!(total(&a, m, &out), best, "{a:?} {n}x{m} {maximize}");
                        }
                    }
                    // The same answer at every instruction-set level.
                    assert_eq!(*first.get_or_insert_with(|| out.clone()), out);
                }
                infeasible += usize::from(best.is_none());
            }
        }
        assert!(infeasible > 20, "only {infeasible} infeasible matrices");
    }

    #[test]
    fn every_small_matrix_gets_an_optimal_assignment() {
        check_against_brute_force(1.0, 0x9e37_79b9_7f4a_7c15);
    }

    #[test]
    fn weights_near_the_largest_and_smallest_floats_are_solved_exactly() {
        // 50 * 2^1018 is 0.78 times f64::MAX: differences of two such
        // weights overflow unless the matrix is scaled. Multiples of the
        // smallest subnormal are added and subtracted exactly.
        check_against_brute_force(2f64.powi(1018), 7);
        check_against_brute_force(f64::from_bits(1), 11);
    }

    #[test]
    fn float32_weights_are_solved_like_their_float64_values() {
        let mut rng = Rng(5);
        let (batch, n, m) = (50, 7, 9);
        let w32: Vec<f32> = (0..batch * n * m)
            .map(|_| (rng.below(1 << 24) as f32 - 8e6) * 1e-3)
            .collect();
        let w64: Vec<f64> = w32.iter().map(|&x| x as f64).collect();
        let (mut a, mut b) = (vec![0; batch * n], vec![0; batch * n]);
        linear_assignment(&w32, batch, n, m, true, &mut a).unwrap();
        linear_assignment(&w64, batch, n, m, true, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn the_first_bad_weight_of_the_batch_wins_over_an_infeasible_matrix() {
        let inf = f64::INFINITY;
        let mut w = vec![0.0; 3 * 4];
        w[0] = -inf;
        w[1] = -inf; // matrix 0 (2 x 2, maximizing): row 0 forbidden
        let mut out = vec![0; 6];
        assert_eq!(
            linear_assignment(&w, 3, 2, 2, true, &mut out),
            Err(KernelError::Infeasible { problem: 0 })
        );
        w[9] = f64::NAN;
        w[6] = inf;
        assert_eq!(
            linear_assignment(&w, 3, 2, 2, true, &mut out),
            Err(KernelError::InfiniteWeight { index: 6 })
        );
        assert_eq!(
            linear_assignment(&w, 3, 2, 2, false, &mut out),
            Err(KernelError::InfiniteWeight { index: 0 })
        );
        assert_eq!(
            linear_assignment(&w[..4], 1, 2, 2, false, &mut out[..2]),
            Err(KernelError::InfiniteWeight { index: 0 })
        );
        assert_eq!(
            linear_assignment(&w[8..], 1, 2, 2, false, &mut out[..2]),
            Err(KernelError::NanWeight { index: 1 })
        );
    }

    #[test]
    fn shapes_are_checked() {
        let mut out = vec![0; 3];
        assert_eq!(
            linear_assignment(&[0.0f64; 6], 1, 3, 2, true, &mut out),
            Err(KernelError::MoreRowsThanColumns {
                rows: 3,
                columns: 2
            })
        );
        assert_eq!(
            linear_assignment(&[0.0f64; 5], 1, 2, 3, true, &mut out[..2]),
            Err(KernelError::Shape {
                what: "weights",
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            linear_assignment::<f64>(&[], 0, 2, 3, true, &mut []),
            Ok(())
        );
    }

    #[test]
    fn results_do_not_depend_on_threads_or_instruction_sets() {
        let mut rng = Rng(3);
        let (batch, n, m) = (400, 12, 13);
        for spread in [3, 1 << 20] {
            let w: Vec<f64> = (0..batch * n * m)
                .map(|_| rng.below(spread) as f64)
                .collect();
            let mut runs = Vec::new();
            for threads in [1, 2, 3] {
                parallel::set_num_threads(threads);
                for level in LEVELS {
                    let mut out = vec![0; batch * n];
                    linear_assignment_at(level, &w, batch, n, m, false, &mut out).unwrap();
                    runs.push(out);
                }
            }
            parallel::set_num_threads(0);
            assert!(runs.iter().all(|r| *r == runs[0]));
        }
    }

    #[test]
    fn long_rows_match_across_instruction_sets() {
        // Rows of 203 columns: full vectors and a scalar tail.
        let mut rng = Rng(9);
        let (n, m) = (150, 203);
        for spread in [3, 1 << 30] {
            let w: Vec<f64> = (0..n * m).map(|_| rng.below(spread) as f64).collect();
            let outs: Vec<Vec<i64>> = LEVELS
                .iter()
                .map(|&level| {
                    let mut out = vec![0; n];
                    linear_assignment_at(level, &w, 1, n, m, true, &mut out).unwrap();
                    out
                })
                .collect();
            assert!(outs.iter().all(|o| *o == outs[0]));
        }
    }
}
