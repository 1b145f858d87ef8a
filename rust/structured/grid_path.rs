//! Batched shortest paths on grids (`gumbelrs.structured.shortest_path_grid`).
//!
//! Every `h x w` grid of a batch holds a non-negative cost per cell. A path
//! runs from the top-left cell to the bottom-right one through cells that
//! touch by a side or a corner (the 8-neighbourhood), and costs the sum of
//! its cells' costs, both ends included. The solver writes the 0/1
//! indicator of one cheapest path:
//!
//! - Costs are summed in f64, from the top-left cell on (exact for integer
//!   costs up to 2^53 in total). Each cell gets the label (cost, steps) of
//!   its best path from the start: the least cost, then the fewest steps
//!   among the paths of that cost. Dijkstra's algorithm finds them, over the
//!   cells of the grid directly (no adjacency lists): a binary heap of
//!   labels, each packed with its cell into one 128-bit key (a non-negative
//!   f64 orders as its bits), stopping when the bottom-right cell leaves
//!   the heap.
//! - The path is traced back from the bottom-right cell: each step goes to
//!   the neighbour of smallest row-major index among those through which
//!   the cell gets its label (one step fewer, and its cost plus the cell's
//!   cost equal to the cell's cost). So the path is, of the cheapest paths,
//!   one with the fewest cells, and of those the one whose cells, read from
//!   the bottom-right corner back, have the lexicographically smallest
//!   indices; the same on every call. Fewest cells also means that no two
//!   cells of the path touch unless they follow each other on it.
//! - The grid sits inside a border of one cell whose labels are never
//!   improved, so neighbours need no bounds checks. One thread's buffers
//!   (costs, labels, heap: `(h + 2)(w + 2)` cells and the heap's entries)
//!   serve every grid it solves; each grid is solved by one thread, so
//!   results do not depend on the number of threads.

use crate::kernels::{check_len, KernelError, SharedMut};
use crate::math::Real;
use crate::parallel;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

/// The low 32 bits of a key: its cell.
const CELL: u128 = u32::MAX as u128;

/// The label of a cell no path has reached yet (larger than every label).
const UNREACHED: u128 = u128::MAX;

/// The label of a border cell: smaller than every label a path gives, so
/// never improved.
const BORDER: u128 = 0;

/// The label `(cost, steps)` as a key without its cell: the cost's bits
/// (a non-negative f64, never -0) above the steps.
#[inline(always)]
fn label(cost: f64, steps: u32) -> u128 {
    (u128::from(cost.to_bits()) << 64) | (u128::from(steps) << 32)
}

#[inline(always)]
fn cost_of(label: u128) -> f64 {
    f64::from_bits((label >> 64) as u64)
}

#[inline(always)]
fn steps_of(label: u128) -> u32 {
    (label >> 32) as u32
}

/// One thread's buffers for grids of one shape, reused for every grid.
struct Solver {
    h: usize,
    w: usize,
    /// The width with the border: `w + 2`.
    pw: usize,
    /// The costs, with a border (of cost 0, never read into a label).
    cost: Vec<f64>,
    /// The label of each cell of the bordered grid.
    labels: Vec<u128>,
    /// Keys `label | cell` waiting to be settled (stale ones are skipped).
    heap: BinaryHeap<Reverse<u128>>,
    /// Neighbour offsets in the bordered grid, in row-major order.
    offsets: [usize; 8],
}

impl Solver {
    fn new(h: usize, w: usize) -> Self {
        let pw = w + 2;
        let cells = (h + 2) * pw;
        let (p, one) = (pw.wrapping_neg(), 1usize.wrapping_neg());
        Solver {
            h,
            w,
            pw,
            cost: vec![0.0; cells],
            // Each search sets the labels inside the border.
            labels: vec![BORDER; cells],
            heap: BinaryHeap::with_capacity(cells),
            offsets: [
                p.wrapping_add(one),
                p,
                p.wrapping_add(1),
                one,
                1,
                pw.wrapping_add(one),
                pw,
                pw + 1,
            ],
        }
    }

    /// Reads the costs `c` of one grid; the first cost that is negative,
    /// NaN or +inf is an error at its index plus `base`.
    #[inline(always)]
    fn load<T: Real>(&mut self, c: &[T], base: usize) -> Result<(), KernelError> {
        let (w, pw) = (self.w, self.pw);
        let mut ok = true;
        for (r, row) in c.chunks_exact(w).enumerate() {
            let dst = &mut self.cost[(r + 1) * pw + 1..(r + 1) * pw + 1 + w];
            for (d, &x) in dst.iter_mut().zip(row) {
                let x = x.to_f64();
                ok &= x >= 0.0 && x < f64::INFINITY;
                // + 0.0 turns -0 into +0, whose bits order as a cost.
                *d = x + 0.0;
            }
        }
        if ok {
            return Ok(());
        }
        let k = c
            .iter()
            .position(|x| !(x.to_f64() >= 0.0 && x.to_f64() < f64::INFINITY))
            .expect("a bad cost");
        let x = c[k].to_f64();
        let index = base + k;
        Err(if x.is_nan() {
            KernelError::NanWeight { index }
        } else if x < 0.0 {
            KernelError::NegativeCost { index }
        } else {
            KernelError::InfiniteWeight { index }
        })
    }

    /// Labels the cells from the start until the bottom-right cell is
    /// settled; returns that cell.
    #[inline(always)]
    fn search(&mut self) -> usize {
        let pw = self.pw;
        let (start, target) = (pw + 1, self.h * pw + self.w);
        let Solver {
            cost,
            labels,
            heap,
            offsets,
            h,
            w,
            ..
        } = self;
        for r in 1..=*h {
            labels[r * pw + 1..r * pw + 1 + *w].fill(UNREACHED);
        }
        heap.clear();
        labels[start] = label(cost[start], 0);
        heap.push(Reverse(labels[start] | start as u128));
        while let Some(Reverse(key)) = heap.pop() {
            let v = (key & CELL) as usize;
            let lv = key & !CELL;
            if lv != labels[v] {
                continue;
            }
            if v == target {
                break;
            }
            let (d, s) = (cost_of(lv), steps_of(lv) + 1);
            for &off in offsets.iter() {
                let u = v.wrapping_add(off);
                let lu = label(d + cost[u], s);
                if lu < labels[u] {
                    labels[u] = lu;
                    heap.push(Reverse(lu | u as u128));
                }
            }
        }
        target
    }

    /// Writes the path ending at `target` (traced back as the module says)
    /// into the grid's outputs `out`, zero elsewhere.
    #[inline(always)]
    fn trace<T: Real>(&self, target: usize, out: &mut [T]) {
        let (pw, w) = (self.pw, self.w);
        let start = pw + 1;
        out.fill(T::ZERO);
        let mut v = target;
        loop {
            out[(v / pw - 1) * w + v % pw - 1] = T::ONE;
            if v == start {
                return;
            }
            let lv = self.labels[v];
            let (d, s) = (cost_of(lv), steps_of(lv));
            v = if s == 1 {
                start
            } else {
                // A neighbour one step nearer the start (border cells have
                // step 0, unreached cells the NaN cost of `UNREACHED`).
                let c = self.cost[v];
                self.offsets
                    .iter()
                    .map(|&off| v.wrapping_add(off))
                    .find(|&u| {
                        let lu = self.labels[u];
                        steps_of(lu) == s - 1 && (cost_of(lu) + c).to_bits() == d.to_bits()
                    })
                    .expect("the cell that labelled v")
            };
        }
    }
}

/// The grids of a call, and where their paths go.
struct Grids<'a, T> {
    costs: &'a [T],
    h: usize,
    w: usize,
    out: SharedMut<T>,
}

impl<T: Real> Grids<'_, T> {
    /// Solves the grids of `range` with one set of buffers; the first bad
    /// cost ends the range (every later one is at a later position).
    fn solve(&self, range: Range<usize>) -> Result<(), KernelError> {
        let size = self.h * self.w;
        let mut solver = Solver::new(self.h, self.w);
        for b in range {
            solver.load(&self.costs[b * size..(b + 1) * size], b * size)?;
            let target = solver.search();
            // SAFETY: grid `b` belongs to this range alone, so no other
            // thread touches its outputs.
            let out = unsafe { self.out.slice(b * size, size) };
            solver.trace(target, out);
        }
        Ok(())
    }
}

/// Writes into `out` the 0/1 indicator of a cheapest 8-neighbour path from
/// the top-left to the bottom-right cell of each of the `batch` `h x w`
/// row-major grids of `costs` (both `batch * h * w`), the cost of a path
/// being the sum of its cells' costs (ties broken as the module says). A
/// grid without cells (`h` or `w` 0) has nothing to write.
///
/// Errors: the first cost of the batch that is NaN (`NanWeight`), +inf
/// (`InfiniteWeight`) or negative (`NegativeCost`), by position; a grid of
/// `(h + 2)(w + 2) >= 2^32` cells with its border (`GridTooLarge`). `out`
/// is then unspecified.
pub fn shortest_path_grid<T: Real>(
    costs: &[T],
    batch: usize,
    h: usize,
    w: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    let size = h.checked_mul(w).expect("h * w overflows usize");
    check_len("costs", costs.len(), batch * size)?;
    check_len("out", out.len(), batch * size)?;
    if size == 0 {
        return Ok(());
    }
    let cells = (h + 2).saturating_mul(w + 2);
    if cells > u32::MAX as usize {
        return Err(KernelError::GridTooLarge { cells });
    }
    let grids = Grids {
        costs,
        h,
        w,
        out: SharedMut::new(out),
    };
    // About 8 relaxations and a heap operation per cell: ~64 elements' work.
    let work = size.saturating_mul(64);
    parallel::map_ranges(batch, work, |range| grids.solve(range))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: reproducible test grids.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, k: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % k
        }
    }

    /// The neighbours of cell `v` of an `h x w` grid, in row-major order.
    fn neighbours(v: usize, h: usize, w: usize) -> Vec<usize> {
        let (r, c) = ((v / w) as isize, (v % w) as isize);
        let mut out = Vec::new();
        for dr in -1..=1 {
            for dc in -1..=1 {
                let (y, x) = (r + dr, c + dc);
                if (dr, dc) != (0, 0) && 0 <= y && y < h as isize && 0 <= x && x < w as isize {
                    out.push(y as usize * w + x as usize);
                }
            }
        }
        out
    }

    /// The labels (cost, steps) of every cell of an integer grid, by
    /// Bellman-Ford in exact arithmetic, and the path traced back by the
    /// documented rule: the reference the solver must match cell for cell.
    fn reference(a: &[u64], h: usize, w: usize) -> Vec<u8> {
        let mut best = vec![(u64::MAX, u64::MAX); h * w];
        best[0] = (a[0], 0);
        let mut changed = true;
        while changed {
            changed = false;
            for v in 0..h * w {
                for u in neighbours(v, h, w) {
                    if best[u].0 == u64::MAX {
                        continue;
                    }
                    let l = (best[u].0 + a[v], best[u].1 + 1);
                    if l < best[v] {
                        best[v] = l;
                        changed = true;
                    }
                }
            }
        }
        let mut path = vec![0; h * w];
        let mut v = h * w - 1;
        path[v] = 1;
        while v != 0 {
            v = neighbours(v, h, w)
                .into_iter()
                .find(|&u| best[u].0 != u64::MAX && (best[u].0 + a[v], best[u].1 + 1) == best[v])
                .unwrap();
            path[v] = 1;
        }
        path
    }

    #[test]
    fn every_small_grid_gets_the_documented_cheapest_path() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for trial in 0..3000 {
            let (h, w) = (1 + rng.below(7) as usize, 1 + rng.below(7) as usize);
            let spread = [2, 3, 10, 1000][trial % 4];
            let a: Vec<u64> = (0..h * w).map(|_| rng.below(spread)).collect();
            let want = reference(&a, h, w);
            let c64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
            let c32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            let (mut o64, mut o32) = (vec![9.0; h * w], vec![9.0; h * w]);
            shortest_path_grid(&c64, 1, h, w, &mut o64).unwrap();
            shortest_path_grid(&c32, 1, h, w, &mut o32).unwrap();
            let got: Vec<u8> = o64.iter().map(|&x| x as u8).collect();
            assert_eq!(got, want, "{a:?} {h}x{w}");
            assert!(o32.iter().zip(&o64).all(|(&x, &y)| f64::from(x) == y));
        }
    }

    #[test]
    fn a_constant_grid_takes_the_diagonal_then_the_straight_line() {
        // Fewest cells: max(h, w). Traced back from the corner, the smallest
        // index first: up-left while the row allows, then left (or up).
        let mut out = vec![0.0; 3 * 5];
        shortest_path_grid(&[1.0f64; 15], 1, 3, 5, &mut out).unwrap();
        #[rustfmt::skip]
        let want = [
            1.0, 1.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 1.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        assert_eq!(out, want);
        let mut out = vec![0.0; 4];
        shortest_path_grid(&[0.0f32; 4], 1, 4, 1, &mut out).unwrap();
        assert_eq!(out, [1.0; 4]);
        let mut out = vec![0.0; 1];
        shortest_path_grid(&[-0.0f64], 1, 1, 1, &mut out).unwrap();
        assert_eq!(out, [1.0]);
    }

    #[test]
    fn batches_match_single_grids_for_any_thread_count() {
        let mut rng = Rng(3);
        let (batch, h, w) = (300, 13, 11);
        let costs: Vec<f64> = (0..batch * h * w)
            .map(|_| rng.below(1 << 20) as f64 * 1e-3)
            .collect();
        let size = h * w;
        let mut single = vec![0.0; batch * size];
        for b in 0..batch {
            let (c, o) = (
                &costs[b * size..(b + 1) * size],
                &mut single[b * size..(b + 1) * size],
            );
            shortest_path_grid(c, 1, h, w, o).unwrap();
        }
        for threads in [1, 2, 3] {
            parallel::set_num_threads(threads);
            let mut out = vec![0.0; batch * size];
            shortest_path_grid(&costs, batch, h, w, &mut out).unwrap();
            assert_eq!(out, single);
        }
        parallel::set_num_threads(0);
    }

    #[test]
    fn the_first_bad_cost_of_the_batch_is_reported() {
        let mut c = vec![1.0f64; 3 * 4];
        let mut out = vec![0.0; 12];
        c[7] = f64::NAN;
        c[9] = -1.0;
        assert_eq!(
            shortest_path_grid(&c, 3, 2, 2, &mut out),
            Err(KernelError::NanWeight { index: 7 })
        );
        c[5] = f64::INFINITY;
        assert_eq!(
            shortest_path_grid(&c, 3, 2, 2, &mut out),
            Err(KernelError::InfiniteWeight { index: 5 })
        );
        c[1] = f64::NEG_INFINITY;
        assert_eq!(
            shortest_path_grid(&c, 3, 2, 2, &mut out),
            Err(KernelError::NegativeCost { index: 1 })
        );
        let c32 = [1.0f32, -1e-30];
        assert_eq!(
            shortest_path_grid(&c32, 1, 1, 2, &mut [0.0; 2]),
            Err(KernelError::NegativeCost { index: 1 })
        );
    }

    #[test]
    fn shapes_are_checked() {
        let mut out = vec![0.0; 4];
        assert_eq!(
            shortest_path_grid(&[0.0f64; 3], 1, 2, 2, &mut out),
            Err(KernelError::Shape {
                what: "costs",
                expected: 4,
                got: 3
            })
        );
        assert_eq!(shortest_path_grid::<f64>(&[], 5, 0, 3, &mut []), Ok(()));
        assert_eq!(
            shortest_path_grid::<f64>(&[], 0, 1 << 16, 1 << 16, &mut []),
            Err(KernelError::GridTooLarge {
                cells: ((1 << 16) + 2) * ((1 << 16) + 2)
            })
        );
    }
}
