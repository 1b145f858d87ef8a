//! Batched maximum-weight spanning trees (`gumbelrs.structured.spanning_tree`
//! and `sample_spanning_tree`).
//!
//! Every `n x n` matrix of a batch holds the weight of edge `(i, j)`,
//! `i < j`, in its upper triangle (the lower triangle and the diagonal are
//! not read: the Python layer checks that the matrix is symmetric). A
//! `-inf` weight forbids its edge. The solver writes the symmetric 0/1
//! indicator of the spanning tree of largest total weight:
//!
//! - Ties are broken by a strict order of the edges: the heavier edge comes
//!   first, and of two edges of equal weight the one whose `(i, j)` comes
//!   first in row-major order. Kruskal's algorithm run in that order (the
//!   next edge joins the tree unless it closes a cycle) builds the tree; so
//!   does Prim's algorithm under the same order, because under a strict
//!   order the maximum spanning tree is unique (the cut property: the first
//!   edge across any cut belongs to it). This solver runs dense Prim, in
//!   O(n^2) per matrix: from vertex 0, it keeps for every vertex outside the
//!   tree its first edge into the tree, and adds the vertex whose edge comes
//!   first.
//! - A sample (`sample_spanning_tree`) solves the weights plus Gumbel noise:
//!   edge `(i, j)`, `i < j`, of matrix `b` gets the noise of element
//!   `(b, i, j)` of the stream (that of a noise tensor shaped like the
//!   weights, whose lower triangle and diagonal go unused), added in the
//!   weights' float type. `-inf` plus noise stays `-inf`.
//! - Each matrix is solved by one thread; the noise of an element depends
//!   on its index alone, so results do not depend on the number of threads.
//!   One thread's buffers (the symmetric weights, `n^2` values, and three
//!   vectors of `n`) serve every matrix it solves.

use crate::kernels::noise::{fill_strided, Noise};
use crate::kernels::{check_len, KernelError, SharedMut};
use crate::math::{GroupCache, Real};
use crate::memory::prefer_huge_pages;
use crate::rng::Stream;
use crate::{isa, parallel};
use std::ops::Range;

/// No edge (larger than every edge's index).
const NONE: usize = usize::MAX;

/// One thread's buffers for matrices of one size, reused for every matrix.
struct Solver<T> {
    n: usize,
    /// The (perturbed) weights, mirrored into both triangles.
    w: Vec<T>,
    /// Each vertex's first edge into the tree: its weight, NaN once the
    /// vertex is in the tree (NaN compares false, so it is never chosen
    /// nor improved).
    best: Vec<T>,
    /// The index `i * n + j` (`i < j`) of that edge.
    edge: Vec<usize>,
    /// The noise of one row's upper triangle.
    noise: Vec<T>,
    cache: GroupCache<T>,
}

/// Whether edge `(x, e)` (weight, index) comes before edge `(y, f)`.
#[inline(always)]
fn first<T: Real>(x: T, e: usize, y: T, f: usize) -> bool {
    x > y || (x == y && e < f)
}

impl<T: Real> Solver<T> {
    fn new(n: usize) -> Self {
        Solver {
            n,
            w: vec![T::ZERO; n * n],
            best: vec![T::ZERO; n],
            edge: vec![NONE; n],
            noise: vec![T::ZERO; n],
            cache: GroupCache::new(),
        }
    }

    /// Reads the upper triangle of matrix `b` of `weights`, plus the noise
    /// of `stream` if given, into both triangles. A NaN or +inf weight is an
    /// error at its flat index.
    #[inline(always)]
    fn load(
        &mut self,
        weights: &[T],
        b: usize,
        stream: Option<&Stream>,
    ) -> Result<(), KernelError> {
        let n = self.n;
        let base = b * n * n;
        for i in 0..n {
            let row = &weights[base + i * n + i + 1..base + (i + 1) * n];
            let noise = &mut self.noise[..row.len()];
            if let Some(s) = stream {
                let start = (base + i * n + i + 1) as u64;
                fill_strided(Noise::Gumbel, s, start, 1, noise, &mut self.cache);
            } else {
                noise.fill(T::ZERO);
            }
            let mut ok = true;
            for (t, (&x, &g)) in row.iter().zip(noise.iter()).enumerate() {
                let j = i + 1 + t;
                ok &= x < T::INFINITY; // false for NaN
                                       // Without noise, x + 0 is x (and -0 + 0 = +0 ties with +0).
                let y = x + g;
                self.w[i * n + j] = y;
                self.w[j * n + i] = y;
            }
            if !ok {
                let t = row
                    .iter()
                    .position(|x| x.is_nan() || *x == T::INFINITY)
                    .expect("a bad weight");
                let index = base + i * n + i + 1 + t;
                return Err(if row[t].is_nan() {
                    KernelError::NanWeight { index }
                } else {
                    KernelError::InfiniteWeight { index }
                });
            }
        }
        Ok(())
    }

    /// Prim's algorithm on the loaded weights: the 0/1 tree into `out`
    /// (`n * n`), or false when the forbidden edges leave the graph
    /// disconnected.
    #[inline(always)]
    fn solve(&mut self, out: &mut [T]) -> bool {
        let n = self.n;
        out.fill(T::ZERO);
        self.best.fill(T::NEG_INFINITY);
        self.edge.fill(NONE);
        let mut v = 0;
        for _ in 1..n {
            let (bw, be, bv) = self.join(v);
            if bw == T::NEG_INFINITY {
                return false;
            }
            let (i, j) = (be / n, be % n);
            out[i * n + j] = T::ONE;
            out[j * n + i] = T::ONE;
            v = bv;
        }
        true
    }

    /// Puts vertex `v` in the tree: its edges become the first edges into
    /// the tree of the vertices they come before; returns the first of the
    /// vertices' edges after that (weight, index, vertex: the next to
    /// join). In one pass, by `LANES` interleaved vertices, each lane
    /// keeping its own first edge (the lanes then merge: the order is
    /// strict, so the result is the same).
    #[inline(always)]
    fn join(&mut self, v: usize) -> (T, usize, usize) {
        const LANES: usize = 4;
        let n = self.n;
        let Solver { w, best, edge, .. } = self;
        best[v] = T::from_f64(f64::NAN);
        let row = &w[v * n..(v + 1) * n];
        let mut lw = [T::NEG_INFINITY; LANES];
        let mut le = [NONE; LANES];
        let mut lv = [0; LANES];
        let mut step = |u: usize, l: usize, x: T, b: &mut T, e: &mut usize| {
            let f = if u < v { u * n + v } else { v * n + u };
            let take = first(x, f, *b, *e);
            *b = if take { x } else { *b };
            *e = if take { f } else { *e };
            let lead = first(*b, *e, lw[l], le[l]);
            lw[l] = if lead { *b } else { lw[l] };
            le[l] = if lead { *e } else { le[l] };
            lv[l] = if lead { u } else { lv[l] };
        };
        let full = n - n % LANES;
        for ((k, x), (b, e)) in row[..full].chunks_exact(LANES).enumerate().zip(
            best[..full]
                .chunks_exact_mut(LANES)
                .zip(edge[..full].chunks_exact_mut(LANES)),
        ) {
            for l in 0..LANES {
                step(k * LANES + l, l, x[l], &mut b[l], &mut e[l]);
            }
        }
        for u in full..n {
            step(u, 0, row[u], &mut best[u], &mut edge[u]);
        }
        let mut top = (T::NEG_INFINITY, NONE, 0);
        for l in 0..LANES {
            if first(lw[l], le[l], top.0, top.1) {
                top = (lw[l], le[l], lv[l]);
            }
        }
        top
    }
}

/// The matrices of a call, and where their trees go.
struct Graphs<'a, T> {
    weights: &'a [T],
    n: usize,
    stream: Option<Stream>,
    out: SharedMut<T>,
}

impl<T: Real> Graphs<'_, T> {
    /// Solves the matrices of `range` with one set of buffers: the first
    /// disconnected graph, or the first bad weight (which ends the range:
    /// every later one is at a later position).
    #[inline(always)]
    fn solve(&self, range: Range<usize>) -> Result<Option<usize>, KernelError> {
        let size = self.n * self.n;
        let mut solver = Solver::new(self.n);
        let mut disconnected = None;
        for b in range {
            solver.load(self.weights, b, self.stream.as_ref())?;
            if disconnected.is_some() {
                continue;
            }
            // SAFETY: matrix `b` belongs to this range alone, so no other
            // thread touches its outputs.
            let out = unsafe { self.out.slice(b * size, size) };
            if !solver.solve(out) {
                disconnected = Some(b);
            }
        }
        Ok(disconnected)
    }
}

/// `Graphs::solve` compiled with AVX2 and FMA: the noise's `mul_add` is one
/// instruction instead of a call to the C library's `fma` (the same value),
/// and Prim's passes run on vectors.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn solve_avx2<T: Real>(
    g: &Graphs<'_, T>,
    range: Range<usize>,
) -> Result<Option<usize>, KernelError> {
    g.solve(range)
}

/// `Graphs::solve` compiled with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, DQ, VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn solve_avx512<T: Real>(
    g: &Graphs<'_, T>,
    range: Range<usize>,
) -> Result<Option<usize>, KernelError> {
    g.solve(range)
}

fn run<T: Real>(
    weights: &[T],
    batch: usize,
    n: usize,
    stream: Option<Stream>,
    out: &mut [T],
) -> Result<(), KernelError> {
    let size = n.checked_mul(n).expect("n * n overflows usize");
    check_len("weights", weights.len(), batch * size)?;
    check_len("out", out.len(), batch * size)?;
    if n == 0 {
        return Ok(());
    }
    // The trees of perturbed stacked samples fill tens of MB fresh.
    prefer_huge_pages(out);
    let graphs = Graphs {
        weights,
        n,
        stream,
        out: SharedMut::new(out),
    };
    // Two scans of n values for each of n vertices, and the load.
    let work = size.saturating_mul(4).max(1);
    let mut first_disconnected = None;
    let level = isa::level();
    let solve = |range| match level {
        // SAFETY: `isa::level` returns Avx512 only when the CPU has
        // AVX-512 F/BW/DQ/VL and FMA (detected at run time).
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx512 => unsafe { solve_avx512(&graphs, range) },
        // SAFETY: Avx2 only when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx2 => unsafe { solve_avx2(&graphs, range) },
        _ => graphs.solve(range),
    };
    for r in parallel::map_ranges(batch, work, solve) {
        if let Some(b) = r? {
            first_disconnected = first_disconnected.or(Some(b));
        }
    }
    match first_disconnected {
        Some(problem) => Err(KernelError::Disconnected { problem }),
        None => Ok(()),
    }
}

/// Writes into `out` the symmetric 0/1 edge indicator of the maximum-weight
/// spanning tree of each of the `batch` `n x n` row-major matrices of
/// `weights` (both `batch * n * n`), read from their upper triangles (ties
/// broken as the module says). A `-inf` weight forbids its edge; `n = 1`
/// gives the empty tree, `n = 0` nothing.
///
/// Errors: the first NaN or +inf weight of the upper triangles, by position
/// (`NanWeight`, `InfiniteWeight`); otherwise the first matrix whose
/// forbidden edges leave it disconnected (`Disconnected`). `out` is then
/// unspecified.
pub fn spanning_tree<T: Real>(
    weights: &[T],
    batch: usize,
    n: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    run(weights, batch, n, None, out)
}

/// `spanning_tree` of the weights plus Gumbel noise from `stream`: edge
/// `(i, j)`, `i < j`, of matrix `b` gets noise element `(b * n + i) * n + j`
/// (as the module says).
pub fn sample_spanning_tree<T: Real>(
    weights: &[T],
    batch: usize,
    n: usize,
    stream: Stream,
    out: &mut [T],
) -> Result<(), KernelError> {
    run(weights, batch, n, Some(stream), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;

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

    /// Kruskal's algorithm in the documented order (weight descending,
    /// then `(i, j)` ascending) on the upper triangle: the tree's edges in
    /// an `n x n` 0/1 matrix, or None when the graph is disconnected.
    fn kruskal(w: &[f64], n: usize) -> Option<Vec<f64>> {
        let mut edges: Vec<(f64, usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| (w[i * n + j], i, j))
            .filter(|e| e.0 > f64::NEG_INFINITY)
            .collect();
        edges.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut root: Vec<usize> = (0..n).collect();
        fn find(root: &mut [usize], mut v: usize) -> usize {
            while root[v] != v {
                v = root[v];
            }
            v
        }
        let mut out = vec![0.0; n * n];
        let mut added = 0;
        for (_, i, j) in edges {
            let (a, b) = (find(&mut root, i), find(&mut root, j));
            if a != b {
                root[a] = b;
                out[i * n + j] = 1.0;
                out[j * n + i] = 1.0;
                added += 1;
            }
        }
        (added + 1 == n.max(1)).then_some(out)
    }

    /// A random symmetric matrix: integers below `spread`, each edge
    /// forbidden with probability `forbid / 10`.
    fn graph(rng: &mut Rng, n: usize, spread: u64, forbid: u64) -> Vec<f64> {
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            w[i * n + i] = rng.below(spread) as f64; // never read
            for j in i + 1..n {
                let x = if rng.below(10) < forbid {
                    f64::NEG_INFINITY
                } else {
                    rng.below(spread) as f64 - 5.0
                };
                w[i * n + j] = x;
                w[j * n + i] = x;
            }
        }
        w
    }

    #[test]
    fn prim_builds_kruskals_tree_on_tied_and_forbidden_edges() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut disconnected = 0;
        for trial in 0..3000 {
            let n = 1 + rng.below(12) as usize;
            let spread = [1, 2, 3, 1000][trial % 4];
            let w = graph(&mut rng, n, spread, [0, 3, 6][trial % 3]);
            let mut out = vec![9.0; n * n];
            let got = spanning_tree(&w, 1, n, &mut out);
            match kruskal(&w, n) {
                Some(tree) => {
                    assert_eq!(got, Ok(()));
                    assert_eq!(out, tree, "{w:?}");
                }
                None => {
                    assert_eq!(got, Err(KernelError::Disconnected { problem: 0 }));
                    disconnected += 1;
                }
            }
            let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
            let mut out32 = vec![0.0f32; n * n];
            let got32 = spanning_tree(&w32, 1, n, &mut out32);
            assert_eq!(got32, got);
            if got.is_ok() {
                assert!(out32.iter().zip(&out).all(|(&a, &b)| f64::from(a) == b));
            }
        }
        assert!(
            disconnected > 200,
            "only {disconnected} disconnected graphs"
        );
    }

    #[test]
    fn a_sample_is_the_tree_of_the_weights_plus_the_streams_noise() {
        let mut rng = Rng(7);
        let (batch, n) = (40, 9);
        let w: Vec<f64> = (0..batch).flat_map(|_| graph(&mut rng, n, 5, 2)).collect();
        let stream = Stream::new(11, 3);
        let mut g = vec![0.0; batch * n * n];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let mut perturbed = w.clone();
        for b in 0..batch {
            for i in 0..n {
                for j in i + 1..n {
                    let k = (b * n + i) * n + j;
                    perturbed[k] = w[k] + g[k];
                    perturbed[(b * n + j) * n + i] = perturbed[k];
                }
            }
        }
        let mut want = vec![0.0; batch * n * n];
        let solved = spanning_tree(&perturbed, batch, n, &mut want);
        let mut got = vec![0.0; batch * n * n];
        assert_eq!(sample_spanning_tree(&w, batch, n, stream, &mut got), solved);
        if solved.is_ok() {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let mut rng = Rng(3);
        let (batch, n) = (400, 17);
        let w: Vec<f64> = (0..batch).flat_map(|_| graph(&mut rng, n, 4, 0)).collect();
        let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        let mut runs = Vec::new();
        for threads in [1, 2, 3] {
            parallel::set_num_threads(threads);
            let mut a = vec![0.0; batch * n * n];
            let mut b = vec![0.0f32; batch * n * n];
            spanning_tree(&w, batch, n, &mut a).unwrap();
            sample_spanning_tree(&w32, batch, n, Stream::new(5, 0), &mut b).unwrap();
            runs.push((a, b));
        }
        parallel::set_num_threads(0);
        assert!(runs.iter().all(|r| *r == runs[0]));
    }

    #[test]
    fn bad_weights_win_over_a_disconnected_graph_and_the_first_is_named() {
        let n = 3;
        let mut w = vec![0.0f64; 3 * n * n];
        // Graph 0: vertex 2 cut off.
        for k in [2, 5, 6, 7] {
            w[k] = f64::NEG_INFINITY;
        }
        let mut out = vec![0.0; 3 * n * n];
        assert_eq!(
            spanning_tree(&w, 3, n, &mut out),
            Err(KernelError::Disconnected { problem: 0 })
        );
        // The lower triangle and the diagonal are not read.
        w[9 + 3] = f64::NAN;
        w[9 + 4] = f64::INFINITY;
        assert_eq!(
            spanning_tree(&w, 3, n, &mut out),
            Err(KernelError::Disconnected { problem: 0 })
        );
        w[18 + 5] = f64::NAN;
        w[18 + 2] = f64::INFINITY;
        assert_eq!(
            spanning_tree(&w, 3, n, &mut out),
            Err(KernelError::InfiniteWeight { index: 20 })
        );
        assert_eq!(
            sample_spanning_tree(&w[18..], 1, n, Stream::new(0, 0), &mut out[..9]),
            Err(KernelError::InfiniteWeight { index: 2 })
        );
        w[10] = f64::NAN;
        assert_eq!(
            spanning_tree(&w, 3, n, &mut out),
            Err(KernelError::NanWeight { index: 10 })
        );
    }

    #[test]
    fn one_vertex_has_the_empty_tree_and_shapes_are_checked() {
        let mut out = vec![9.0; 2];
        spanning_tree(&[f64::NAN, 1.0], 2, 1, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        assert_eq!(spanning_tree::<f64>(&[], 3, 0, &mut []), Ok(()));
        assert_eq!(
            spanning_tree(&[0.0f32; 3], 1, 2, &mut [0.0; 4]),
            Err(KernelError::Shape {
                what: "weights",
                expected: 4,
                got: 3
            })
        );
    }
}
