//! Batched shortest paths on grids (`gumbelrs.structured.shortest_path_grid`).
//!
//! Every `h x w` grid of a batch holds a non-negative cost per cell. A path
//! runs from the top-left cell to the bottom-right one through cells that
//! touch by a side or a corner (the 8-neighbourhood), and costs the sum of
//! its cells' costs, both ends included. The solver writes the 0/1
//! indicator of one cheapest path:
//!
//! - Costs are summed in f64, from the top-left cell on (exact for integer
//!   costs up to 2^53 in total; a grid with a cost above 2^960 is scaled
//!   by 2^-64 first, so that no sum overflows). Each cell gets the label (cost, steps) of
//!   its best path from the start: the least cost, then the fewest steps
//!   among the paths of that cost. Dijkstra's algorithm finds them, over the
//!   cells of the grid directly (no adjacency lists), settling cells in the
//!   order of their labels (then of their indices) and stopping when it
//!   settles the bottom-right cell.
//! - Most cells are far from every cheapest path, so a second search, by
//!   cost alone, runs backward from the bottom-right cell by turns with the
//!   forward one until they meet; the path through the meeting cell bounds
//!   the cheapest cost, and the backward labels (or the least one still
//!   waiting) bound each cell's cost to the end from below. After that the
//!   forward search goes on in the same order but skips every cell whose
//!   label plus that lower bound exceeds the bound, with a margin far above
//!   any rounding ([`Bound`]): no cheapest path runs through such a cell,
//!   so the labels the trace reads, and the path, are those of the plain
//!   search, found relaxing about two thirds as many cells (both searches
//!   together) on 32 x 32 grids of random costs.
//! - The path is traced back from the bottom-right cell: each step goes to
//!   the neighbour of smallest row-major index among those through which
//!   the cell gets its label (one step fewer, and its cost plus the cell's
//!   cost equal to the cell's cost). So the path is, of the cheapest paths,
//!   one with the fewest cells, and of those the one whose cells, read from
//!   the bottom-right corner back, have the lexicographically smallest
//!   indices; the same on every call. Fewest cells also means that no two
//!   cells of the path touch unless they follow each other on it.
//! - The grid sits inside a border of one cell whose labels are never
//!   improved (cost -inf), so neighbours need no bounds checks: a settled
//!   cell's 8 neighbours are three runs of three cells, read as three
//!   vectors of four (AVX2) or one at a time, which compare the same. The
//!   queue is a ring of buckets by cost, each its least key and a heap of
//!   the others ([`Queue`]).
//!   One thread's buffers (costs, the labels and queue of each search:
//!   about `(h + 2)(w + 2)` cells) serve every grid it solves, and are
//!   kept for its next range or call while grids are small; each grid is
//!   solved by one thread, so results do not depend on the number of
//!   threads.

use crate::kernels::{check_len, KernelError, SharedMut};
use crate::math::Real;
use crate::memory::prefer_huge_pages;
use crate::{isa, parallel};
use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest cost solved as given: 2^960. A path's cost is at most 2^31
/// times the largest, so below this no sum overflows. A grid with a larger
/// cost is scaled by 2^-64 first, which changes no sum nor comparison
/// except through costs below 2^-958 (subnormal after scaling), too small
/// to change a sum that holds a cost above 2^960.
const UNSCALED_MAX: f64 = f64::from_bits((1023 + 960) << 52);

/// 2^-64.
const SCALE: f64 = f64::from_bits((1023 - 64) << 52);

/// The low 32 bits of a key: its cell.
const CELL: u128 = u32::MAX as u128;

/// The key of a label `(cost, steps)` and its cell: the cost's bits (a
/// non-negative f64, never -0, orders as its bits) above the steps above
/// the cell, so keys order as labels, then cells.
#[inline(always)]
fn key(cost: f64, steps: u32, cell: usize) -> u128 {
    (u128::from(cost.to_bits()) << 64) | (u128::from(steps) << 32) | cell as u128
}

#[inline(always)]
fn cost_of(key: u128) -> f64 {
    f64::from_bits((key >> 64) as u64)
}

#[inline(always)]
fn steps_of(key: u128) -> u32 {
    (key >> 32) as u32
}

/// Buckets of the queue: a ring of 512, one bit each in eight words.
const SLOTS: usize = 512;

/// The words of the queue's bits.
const WORDS: usize = SLOTS / 64;

/// The queue of Dijkstra's keys (distinct, none pushed below the last one
/// popped): a ring of `SLOTS` buckets by cost. Bucket `floor(cost * scale)`
/// holds the keys of that cost; with `scale = (SLOTS - 4) / c`, `c` the
/// largest cost of the grid, every key waiting lies within `c` of the last
/// one popped (it is a settled cell's cost plus a cell's), so they span
/// fewer than `SLOTS` buckets and no two buckets share a slot. The index is
/// monotone in the cost, so keys leave in exactly the order of a single
/// heap. But a bucket holds no key or one most of the time (the frontier is
/// spread over 508 buckets): a slot keeps its least key inline, and only
/// the others in a binary heap of its own, so most pushes and pops neither
/// compare keys nor touch a heap, and a pop finds the next bucket by a bit
/// scan. With every cost 0 (or `scale` not finite) every key goes to
/// bucket 0: one heap.
struct Queue {
    scale: f64,
    /// The least key of each full slot.
    first: Box<[u128; SLOTS]>,
    /// The other keys of each slot: a binary min-heap, empty while the
    /// slot holds one key.
    more: Box<[Vec<u128>; SLOTS]>,
    /// Bit `s % 64` of word `s / 64` set when slot `s` holds keys.
    full: [u64; WORDS],
    /// The same bits, set when slot `s` holds more than one key: a pop
    /// reads the slot's heap only then (the heaps' headers, 12 KB, stay
    /// out of the caches while the buckets hold a key each).
    heaped: [u64; WORDS],
    /// The slot of the last key popped.
    last: usize,
}

impl Queue {
    fn new() -> Self {
        Queue {
            scale: 0.0,
            first: Box::new([0; SLOTS]),
            more: Box::new(std::array::from_fn(|_| Vec::new())),
            full: [0; WORDS],
            heaped: [0; WORDS],
            last: 0,
        }
    }

    /// Empties the queue for a grid whose largest cost is `top`.
    fn reset(&mut self, top: f64) {
        for (w, word) in self.heaped.iter_mut().enumerate() {
            while *word != 0 {
                self.more[w * 64 + word.trailing_zeros() as usize].clear();
                *word &= *word - 1;
            }
        }
        self.full = [0; WORDS];
        let scale = (SLOTS - 4) as f64 / top;
        self.scale = if scale.is_finite() { scale } else { 0.0 };
        self.last = 0;
    }

    /// The slot of a key: its bucket `floor(cost * scale)` (below `2^41`:
    /// a cost is at most `2^31` times the largest) modulo `SLOTS`. Through
    /// i64 without the saturating cast's checks, a single instruction (the
    /// value is non-negative and in range).
    #[inline(always)]
    fn slot(&self, key: u128) -> usize {
        slot_of(cost_of(key), self.scale)
    }

    #[inline(always)]
    fn push(&mut self, key: u128) {
        self.push_at(key, self.slot(key));
    }

    /// Pushes `key`, whose slot is `s`.
    #[inline(always)]
    fn push_at(&mut self, key: u128, s: usize) {
        debug_assert_eq!(s, self.slot(key));
        let (word, bit) = (&mut self.full[s / 64], 1u64 << (s % 64));
        if *word & bit == 0 {
            *word |= bit;
            self.first[s] = key;
        } else {
            let other = self.first[s];
            let (least, rest) = if key < other {
                (key, other)
            } else {
                (other, key)
            };
            self.first[s] = least;
            heap_push(&mut self.more[s], rest);
            self.heaped[s / 64] |= bit;
        }
    }

    /// The first full slot from the last key's on, around the ring.
    #[inline(always)]
    fn next(&self) -> Option<usize> {
        let (w0, b0) = (self.last / 64, self.last % 64);
        let here = self.full[w0] & (u64::MAX << b0);
        if here != 0 {
            return Some(w0 * 64 + here.trailing_zeros() as usize);
        }
        for k in 1..WORDS {
            let w = (w0 + k) % WORDS;
            if self.full[w] != 0 {
                return Some(w * 64 + self.full[w].trailing_zeros() as usize);
            }
        }
        let before = self.full[w0] & !(u64::MAX << b0);
        (before != 0).then(|| w0 * 64 + before.trailing_zeros() as usize)
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<u128> {
        let s = self.next()?;
        let key = self.first[s];
        let (w, bit) = (s / 64, 1u64 << (s % 64));
        if self.heaped[w] & bit == 0 {
            self.full[w] &= !bit;
        } else {
            let more = &mut self.more[s];
            self.first[s] = heap_pop(more);
            if more.is_empty() {
                self.heaped[w] &= !bit;
            }
        }
        self.last = s;
        Some(key)
    }
}

/// What prunes the forward search once the two searches have met.
#[derive(Clone, Copy)]
struct Bound {
    /// The cost of a path through the cell where they met, raised by the
    /// margin of [`Bound::new`].
    most: f64,
    /// The least key waiting in the backward search: a lower bound on the
    /// backward label of every cell it has not settled.
    least_back: f64,
}

impl Bound {
    /// No pruning at all.
    const NONE: Bound = Bound {
        most: f64::INFINITY,
        least_back: f64::INFINITY,
    };

    /// The bound for a path of cost `through` (a forward label plus a
    /// backward one, less the cell's cost they share).
    ///
    /// Labels are sums of non-negative costs rounded in turn, each within
    /// `n` ulps (relative `n 2^-53`, `n < 2^31` cells) of the exact sum of
    /// its path, and so are `through` and the test of [`Bound::excludes`];
    /// so a relative margin of `2^-16` (over `2^-21`), plus `2^-999` for
    /// subnormal sums (where rounding errs by up to `2^-1075` a step), keeps
    /// every cell of every path whose rounded cost ties a cheapest one.
    #[inline(never)]
    fn new(through: f64, queue_back: &Queue) -> Bound {
        let least_back = queue_back
            .next()
            .map_or(f64::INFINITY, |s| cost_of(queue_back.first[s]));
        Bound {
            most: through * (1.0 + 1.0 / 65536.0) + f64::from_bits((1023 - 999) << 52),
            least_back,
        }
    }

    /// Whether a cell of forward label `d`, backward label `back` and cost
    /// `cost` lies on no cheapest path: `d` plus a lower bound on the cost
    /// after it (its backward label once settled, else at least the least
    /// one waiting) exceeds the bound.
    #[inline(always)]
    fn excludes(self, d: f64, back: f64, cost: f64) -> bool {
        d + (back.min(self.least_back) - cost) > self.most
    }
}

/// The slot of a key of cost `cost` in a queue of `scale` (see `Queue::slot`).
#[inline(always)]
fn slot_of(cost: f64, scale: f64) -> usize {
    let bucket = cost * scale;
    debug_assert!((0.0..=(1u64 << 42) as f64).contains(&bucket));
    // SAFETY: the bucket is a finite number in [0, 2^42) (above).
    unsafe { bucket.to_int_unchecked::<i64>() as usize % SLOTS }
}

/// Pushes `key` onto the binary min-heap `h`.
#[inline(always)]
fn heap_push(h: &mut Vec<u128>, key: u128) {
    let mut i = h.len();
    h.push(key);
    while i > 0 {
        let p = (i - 1) / 2;
        if h[p] <= key {
            break;
        }
        h[i] = h[p];
        i = p;
    }
    h[i] = key;
}

/// Pops the least key of the nonempty binary min-heap `h`: the hole at the
/// top goes down along the lesser children to the bottom, where the last
/// key fills it and rises to its place.
#[inline(always)]
fn heap_pop(h: &mut Vec<u128>) -> u128 {
    let last = h.pop().expect("a nonempty heap");
    let n = h.len();
    if n == 0 {
        return last;
    }
    let top = h[0];
    let mut i = 0;
    while 2 * i + 2 < n {
        let c = 2 * i + 1 + usize::from(h[2 * i + 2] < h[2 * i + 1]);
        h[i] = h[c];
        i = c;
    }
    if 2 * i + 1 < n {
        h[i] = h[2 * i + 1];
        i = 2 * i + 1;
    }
    while i > 0 {
        let p = (i - 1) / 2;
        if h[p] <= last {
            break;
        }
        h[i] = h[p];
        i = p;
    }
    h[i] = last;
    top
}

/// Cells read past the bordered grid: the last neighbour run starts one
/// cell before the bottom-right corner of the border and is read as a
/// vector of four.
const TAIL: usize = 2;

/// Which of the 12 cells of the three runs of four starting at `a`, `a + pw`
/// and `a + 2 pw` (bit `4 r + j` for cell `a + r pw + j`) a path of cost
/// `d + cost` and `s` steps improves: `cost_new < cost_old`, or equal with
/// fewer steps where the labels have steps, one cell at a time (the
/// portable build).
/// Writes each cell's new cost and its slot in a queue of `scale` into
/// `next` (at the same bit).
#[inline(always)]
fn better_scalar(
    labels: &Labels<'_>,
    (a, pw): (usize, usize),
    (d, s): (f64, u32),
    scale: f64,
    next: &mut Next,
) -> u32 {
    let mut bits = 0;
    for r in 0..3 {
        for j in 0..4 {
            let u = a + r * pw + j;
            let (c, old) = (labels.cost[u], labels.dist[u]);
            let new = d + c;
            let better = new < old || labels.steps.is_some_and(|st| new == old && s < st[u]);
            bits |= u32::from(better) << (4 * r + j);
            next.cost[4 * r + j] = new;
            next.slot[4 * r + j] = slot_of(new, scale) as u32;
        }
    }
    bits
}

/// The bits of `better_scalar` that are neighbours of the middle cell `a +
/// pw + 1`: the fourth cell of each run is not one, and the middle cell
/// itself (bit 5) is settled, so never improves (left out for clarity).
const NEIGHBOURS: u32 = 0b0111_0101_0111;

/// `better_scalar`, on vectors where `level` has AVX2.
///
/// # Safety
/// `level` is at most `isa::detected()`; the runs lie within the arrays
/// (`a + 2 pw + 4 <=` their length).
#[inline(always)]
unsafe fn better(
    level: isa::Level,
    labels: &Labels<'_>,
    (a, pw): (usize, usize),
    (d, s): (f64, u32),
    scale: f64,
    next: &mut Next,
) -> u32 {
    match level {
        // SAFETY: Avx512 and Avx2 only when the CPU has AVX2 and FMA (the
        // caller's contract), and the runs lie within the arrays.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx512 | isa::Level::Avx2 => unsafe {
            better_avx2(labels, (a, pw), (d, s), scale, next)
        },
        _ => better_scalar(labels, (a, pw), (d, s), scale, next),
    }
}

/// The new costs of the 12 cells of `better_scalar`, and their slots.
struct Next {
    cost: [f64; 12],
    slot: [u32; 12],
}

/// `better_scalar` on vectors of four cells.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the runs must lie within the arrays
/// (`a + 2 pw + 4 <=` their length).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn better_avx2(
    labels: &Labels<'_>,
    (a, pw): (usize, usize),
    (d, s): (f64, u32),
    scale: f64,
    next: &mut Next,
) -> u32 {
    use std::arch::x86_64::*;
    let dv = _mm256_set1_pd(d);
    let (scale, ring) = (_mm256_set1_pd(scale), _mm256_set1_pd(SLOTS as f64));
    let lap = _mm256_set1_pd(1.0 / SLOTS as f64);
    // Steps compare as signed 32-bit integers: every count is below 2^31.
    let sv = _mm_set1_epi32(s as i32);
    let mut bits = 0;
    for r in 0..3 {
        let u = a + r * pw;
        // SAFETY: u + 4 <= the arrays' length (the caller's contract).
        let (c, old) = unsafe {
            (
                _mm256_loadu_pd(labels.cost.as_ptr().add(u)),
                _mm256_loadu_pd(labels.dist.as_ptr().add(u)),
            )
        };
        let new = _mm256_add_pd(dv, c);
        // The bucket modulo SLOTS, exactly (every step is exact: a bucket
        // is below 2^42), in [0, SLOTS): its integer part is `slot_of`'s.
        let bucket = _mm256_mul_pd(new, scale);
        let laps = _mm256_floor_pd(_mm256_mul_pd(bucket, lap));
        let slot = _mm256_cvttpd_epi32(_mm256_sub_pd(bucket, _mm256_mul_pd(laps, ring)));
        // SAFETY: 4 r + 4 <= 12.
        unsafe {
            _mm256_storeu_pd(next.cost.as_mut_ptr().add(4 * r), new);
            _mm_storeu_si128(next.slot.as_mut_ptr().add(4 * r).cast(), slot);
        }
        let lower = _mm256_cmp_pd::<_CMP_LT_OQ>(new, old);
        let better = match labels.steps {
            Some(st) => {
                // SAFETY: as for the costs.
                let steps = unsafe { _mm_loadu_si128(st.as_ptr().add(u).cast()) };
                let equal = _mm256_cmp_pd::<_CMP_EQ_OQ>(new, old);
                let fewer = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpgt_epi32(steps, sv)));
                _mm256_or_pd(lower, _mm256_and_pd(equal, fewer))
            }
            None => lower,
        };
        bits |= (_mm256_movemask_pd(better) as u32) << (4 * r);
    }
    bits
}

/// The arrays of a search, each over the bordered grid plus `TAIL` cells.
struct Labels<'a> {
    cost: &'a [f64],
    /// The cost of each cell's best path so far: +inf before one reaches
    /// it, -inf on the border and the tail.
    dist: &'a [f64],
    /// The steps of that path; `None` when labels are costs alone.
    steps: Option<&'a [u32]>,
}

/// One thread's buffers for grids of one shape, reused for every grid.
struct Solver {
    h: usize,
    w: usize,
    /// The width with the border: `w + 2`.
    pw: usize,
    /// The costs, with a border and tail of cost 0.
    cost: Vec<f64>,
    /// The labels: cost and steps of each cell's best path so far.
    dist: Vec<f64>,
    steps: Vec<u32>,
    /// Keys waiting to be settled (stale ones are skipped).
    queue: Queue,
    /// The backward search's labels: the cost of each cell's cheapest path
    /// to the bottom-right cell, both ends included (+inf before one is
    /// found, -inf on the border and the tail).
    back: Vec<f64>,
    /// The backward search's keys.
    queue_back: Queue,
    /// The largest cost of the grid loaded.
    top: f64,
}

impl Solver {
    fn new(h: usize, w: usize) -> Self {
        let pw = w + 2;
        let cells = (h + 2) * pw + TAIL;
        Solver {
            h,
            w,
            pw,
            cost: vec![0.0; cells],
            // Each search sets the labels inside the border.
            dist: vec![f64::NEG_INFINITY; cells],
            steps: vec![0; cells],
            queue: Queue::new(),
            back: vec![f64::NEG_INFINITY; cells],
            queue_back: Queue::new(),
            top: 0.0,
        }
    }

    /// Reads the costs `c` of one grid; the first cost that is negative,
    /// NaN or +inf is an error at its index plus `base`.
    #[inline(always)]
    fn load<T: Real>(&mut self, c: &[T], base: usize) -> Result<(), KernelError> {
        let (w, pw) = (self.w, self.pw);
        let (mut ok, mut top) = (true, 0.0f64);
        for (r, row) in c.chunks_exact(w).enumerate() {
            let dst = &mut self.cost[(r + 1) * pw + 1..(r + 1) * pw + 1 + w];
            for (d, &x) in dst.iter_mut().zip(row) {
                let x = x.to_f64();
                ok &= (0.0..f64::INFINITY).contains(&x);
                top = if x > top { x } else { top };
                // + 0.0 turns -0 into +0, whose bits order as a cost.
                *d = x + 0.0;
            }
        }
        if ok {
            if top > UNSCALED_MAX {
                self.cost.iter_mut().for_each(|c| *c *= SCALE);
                top *= SCALE;
            }
            self.top = top;
            return Ok(());
        }
        let k = c
            .iter()
            .position(|x| !(0.0..f64::INFINITY).contains(&x.to_f64()))
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
    /// settled; returns that cell. `level` picks how neighbours are read
    /// (the same labels at every level).
    ///
    /// A search from the bottom-right cell runs by turns with the forward
    /// one, on costs alone, until a cell settled by one has a label from
    /// the other: the path through it costs `mu`. From then on the forward
    /// search alone goes on, in the same order, but a cell whose label plus
    /// a lower bound on its remaining cost exceeds `mu` (with a margin) is
    /// neither labelled nor relaxed: no cheapest path runs through it.
    #[inline(always)]
    fn search(&mut self, level: isa::Level) -> usize {
        let (h, w, pw) = (self.h, self.w, self.pw);
        let (start, target) = (pw + 1, h * pw + w);
        for r in 1..=h {
            self.dist[r * pw + 1..r * pw + 1 + w].fill(f64::INFINITY);
            self.back[r * pw + 1..r * pw + 1 + w].fill(f64::INFINITY);
        }
        let Solver {
            cost,
            dist,
            steps,
            queue,
            back,
            queue_back,
            top,
            ..
        } = self;
        queue.reset(*top);
        dist[start] = cost[start];
        steps[start] = 0;
        queue.push(key(cost[start], 0, start));
        queue_back.reset(*top);
        back[target] = cost[target];
        queue_back.push(key(cost[target], 0, target));
        // The cells that enter the queues lie inside the border, and so do
        // the 8 neighbours of each, within the arrays (`(h + 2) pw + TAIL`
        // long): the hot loops read them unchecked.
        debug_assert!(dist.len() == (h + 2) * pw + TAIL && cost.len() == dist.len());
        debug_assert!(steps.len() == dist.len() && back.len() == dist.len());
        let mut next = Next {
            cost: [0.0; 12],
            slot: [0; 12],
        };
        let mut bound: Option<Bound> = None;
        let mut backward_turn = false;
        loop {
            if backward_turn && bound.is_none() {
                backward_turn = false;
                let Some(k) = queue_back.pop() else {
                    // Not before the searches meet (the backward search
                    // settles the start last); no pruning then.
                    bound = Some(Bound::NONE);
                    continue;
                };
                let v = (k & CELL) as usize;
                let d = cost_of(k);
                // SAFETY: v is a cell of the grid (see above).
                if d.to_bits() != unsafe { *back.get_unchecked(v) }.to_bits() {
                    continue;
                }
                let a = v - pw - 1;
                let labels = Labels {
                    cost,
                    dist: back,
                    steps: None,
                };
                // SAFETY: `level` comes from `isa::detected()` (see
                // `shortest_path_grid_at`); v is a cell of the grid, so
                // a + 2 pw + 4 = v + pw + 3 <= (h + 2) pw + 1, within the arrays.
                let bits =
                    unsafe { better(level, &labels, (a, pw), (d, 0), queue_back.scale, &mut next) };
                let mut bits = bits & NEIGHBOURS;
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let u = a + (b / 4) * pw + b % 4;
                    let du = next.cost[b];
                    // SAFETY: u is a neighbour of v (see above).
                    unsafe { *back.get_unchecked_mut(u) = du };
                    queue_back.push_at(key(du, 0, u), next.slot[b] as usize);
                }
                if dist[v] != f64::INFINITY {
                    bound = Some(Bound::new(dist[v] + (back[v] - cost[v]), queue_back));
                }
                continue;
            }
            backward_turn = true;
            let Some(k) = queue.pop() else { break };
            let v = (k & CELL) as usize;
            let (d, s) = (cost_of(k), steps_of(k));
            // SAFETY: v is a cell of the grid (see above).
            let (dv, sv) = unsafe { (*dist.get_unchecked(v), *steps.get_unchecked(v)) };
            if d.to_bits() != dv.to_bits() || s != sv {
                continue;
            }
            if v == target {
                break;
            }
            if bound.is_some_and(|b| b.excludes(d, back[v], cost[v])) {
                continue;
            }
            let meets = bound.is_none() && back[v] != f64::INFINITY;
            // The runs of neighbours start at the cell up-left of v.
            let a = v - pw - 1;
            let labels = Labels {
                cost,
                dist,
                steps: Some(steps),
            };
            // SAFETY: as for the backward search.
            let bits =
                unsafe { better(level, &labels, (a, pw), (d, s + 1), queue.scale, &mut next) };
            let mut bits = bits & NEIGHBOURS;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let u = a + (b / 4) * pw + b % 4;
                let du = next.cost[b];
                if bound.is_some_and(|bound| bound.excludes(du, back[u], cost[u])) {
                    continue;
                }
                // SAFETY: u is a neighbour of v (see above).
                unsafe {
                    *dist.get_unchecked_mut(u) = du;
                    *steps.get_unchecked_mut(u) = s + 1;
                }
                queue.push_at(key(du, s + 1, u), next.slot[b] as usize);
            }
            if meets {
                bound = Some(Bound::new(d + (back[v] - cost[v]), queue_back));
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
            let (d, s, c) = (self.dist[v], self.steps[v], self.cost[v]);
            v = if s == 1 {
                start
            } else {
                // A neighbour one step nearer the start (border cells have
                // step 0, unreached cells the cost +inf), in row-major order.
                let a = v - pw - 1;
                (0..9)
                    .map(|b| a + (b / 3) * pw + b % 3)
                    .find(|&u| {
                        self.steps[u] == s - 1 && (self.dist[u] + c).to_bits() == d.to_bits()
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

/// Grids of at most this many cells, with their border, leave their
/// thread's buffers (about 28 bytes a cell) for the next range or call.
const KEPT_CELLS: usize = 1 << 16;

thread_local! {
    /// The buffers this thread last solved small grids with: a call cuts
    /// its batch into several ranges per thread, and a training loop
    /// solves grids of one shape call after call, so reusing them saves
    /// allocating and first touching the arrays and the queue's buckets
    /// each time.
    static KEPT: Cell<Option<Solver>> = const { Cell::new(None) };
}

impl<T: Real> Grids<'_, T> {
    /// Solves the grids of `range` with one set of buffers; the first bad
    /// cost ends the range (every later one is at a later position).
    #[inline(always)]
    fn solve(&self, range: Range<usize>, level: isa::Level) -> Result<(), KernelError> {
        let size = self.h * self.w;
        let mut solver = match KEPT.take() {
            Some(s) if (s.h, s.w) == (self.h, self.w) => s,
            _ => Solver::new(self.h, self.w),
        };
        let mut result = Ok(());
        for b in range {
            result = solver.load(&self.costs[b * size..(b + 1) * size], b * size);
            if result.is_err() {
                break;
            }
            let target = solver.search(level);
            // SAFETY: grid `b` belongs to this range alone, so no other
            // thread touches its outputs.
            let out = unsafe { self.out.slice(b * size, size) };
            solver.trace(target, out);
        }
        if solver.dist.len() <= KEPT_CELLS {
            KEPT.set(Some(solver));
        }
        result
    }
}

/// `Grids::solve` compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn solve_avx2<T: Real>(g: &Grids<'_, T>, range: Range<usize>) -> Result<(), KernelError> {
    g.solve(range, isa::Level::Avx2)
}

/// `Grids::solve` compiled with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, DQ, VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn solve_avx512<T: Real>(g: &Grids<'_, T>, range: Range<usize>) -> Result<(), KernelError> {
    g.solve(range, isa::Level::Avx512)
}

/// Writes into `out` the 0/1 indicator of a cheapest 8-neighbour path from
/// the top-left to the bottom-right cell of each of the `batch` `h x w`
/// row-major grids of `costs` (both `batch * h * w`), the cost of a path
/// being the sum of its cells' costs (ties broken as the module says). A
/// grid without cells (`h` or `w` 0) has nothing to write.
///
/// Errors: the first cost of the batch that is NaN (`NanWeight`), +inf
/// (`InfiniteWeight`) or negative (`NegativeCost`), by position; a grid of
/// `(h + 2)(w + 2) >= 2^31` cells with its border (`GridTooLarge`). `out`
/// is then unspecified.
pub fn shortest_path_grid<T: Real>(
    costs: &[T],
    batch: usize,
    h: usize,
    w: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    shortest_path_grid_at(isa::level(), costs, batch, h, w, out)
}

/// `shortest_path_grid` at instruction-set `level`, or the best level of
/// this CPU below it.
fn shortest_path_grid_at<T: Real>(
    level: isa::Level,
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
    if cells >= 1 << 31 {
        return Err(KernelError::GridTooLarge { cells });
    }
    // The paths of perturbed stacked samples fill MBs fresh.
    prefer_huge_pages(out);
    let grids = Grids {
        costs,
        h,
        w,
        out: SharedMut::new(out),
    };
    // A queue operation and three vector compares per cell: ~32 elements' work.
    let work = size.saturating_mul(32);
    let level = level.min(isa::detected());
    let solve = |range: Range<usize>| match level {
        // SAFETY: `isa::detected` returns Avx512 only when the CPU has
        // AVX-512 F/BW/DQ/VL and FMA (detected at run time).
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx512 => unsafe { solve_avx512(&grids, range) },
        // SAFETY: Avx2 only when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        isa::Level::Avx2 => unsafe { solve_avx2(&grids, range) },
        _ => grids.solve(range, isa::Level::Portable),
    };
    // The ranges of `map_ranges` only set how many threads run: each claims
    // blocks of about `CLAIM` cells' grids until none is left, so the
    // threads finish together whatever their start or speed. A bad grid
    // ends its block; blocks past the first bad grid found are not
    // claimed, and every block before it is (claims rise), so the least
    // bad position found is the first of the batch.
    let block = (CLAIM / size).max(1);
    let (next, bad) = (AtomicUsize::new(0), AtomicUsize::new(usize::MAX));
    parallel::map_ranges(batch, work, |_| {
        let mut first = Ok(());
        loop {
            let start = next.fetch_add(block, Ordering::Relaxed);
            if start >= batch || start > bad.load(Ordering::Relaxed) {
                return first;
            }
            if let Err(e) = solve(start..(start + block).min(batch)) {
                bad.fetch_min(position(&e) / size, Ordering::Relaxed);
                first = first.and(Err(e));
            }
        }
    })
    .into_iter()
    .filter_map(Result::err)
    .min_by_key(position)
    .map_or(Ok(()), Err)
}

/// Cells of the grids a thread claims at a time (a grid at least).
const CLAIM: usize = 1024;

/// The position of a bad cost (`Grids::solve` reports no other error).
fn position(e: &KernelError) -> usize {
    match *e {
        KernelError::NanWeight { index }
        | KernelError::NegativeCost { index }
        | KernelError::InfiniteWeight { index } => index,
        _ => unreachable!("a grid's error is a bad cost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level; those the CPU lacks run at its best level.
    const LEVELS: [isa::Level; 3] = [isa::Level::Portable, isa::Level::Avx2, isa::Level::Avx512];

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
            for level in LEVELS {
                let (mut o64, mut o32) = (vec![9.0; h * w], vec![9.0; h * w]);
                shortest_path_grid_at(level, &c64, 1, h, w, &mut o64).unwrap();
                shortest_path_grid_at(level, &c32, 1, h, w, &mut o32).unwrap();
                let got: Vec<u8> = o64.iter().map(|&x| x as u8).collect();
                assert_eq!(got, want, "{a:?} {h}x{w} {level:?}");
                assert!(o32.iter().zip(&o64).all(|(&x, &y)| f64::from(x) == y));
            }
        }
    }

    /// The documented path of a float grid (costs below 2^960) by a plain
    /// Dijkstra over a binary heap of labels (cost, steps, cell): the
    /// reference for the bucket queue, where sums round.
    fn reference_float(c: &[f64], h: usize, w: usize) -> Vec<u8> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut dist = vec![f64::INFINITY; h * w];
        let mut steps = vec![u32::MAX; h * w];
        let mut heap = BinaryHeap::new();
        dist[0] = c[0] + 0.0;
        steps[0] = 0;
        heap.push(Reverse((dist[0].to_bits(), 0u32, 0usize)));
        while let Some(Reverse((bits, s, v))) = heap.pop() {
            if bits != dist[v].to_bits() || s != steps[v] {
                continue;
            }
            if v == h * w - 1 {
                break;
            }
            for u in neighbours(v, h, w) {
                let new = f64::from_bits(bits) + (c[u] + 0.0);
                if new < dist[u] || (new == dist[u] && s + 1 < steps[u]) {
                    dist[u] = new;
                    steps[u] = s + 1;
                    heap.push(Reverse((new.to_bits(), s + 1, u)));
                }
            }
        }
        let mut path = vec![0; h * w];
        let mut v = h * w - 1;
        path[v] = 1;
        while v != 0 {
            let (d, s) = (dist[v], steps[v]);
            v = neighbours(v, h, w)
                .into_iter()
                .find(|&u| steps[u] == s - 1 && (dist[u] + (c[v] + 0.0)).to_bits() == d.to_bits())
                .unwrap();
            path[v] = 1;
        }
        path
    }

    #[test]
    fn float_grids_get_the_path_of_a_plain_heap_dijkstra() {
        // Sums that round (tenths, mixed magnitudes), many zeros, and a few
        // large costs that crowd the others into the first buckets.
        let mut rng = Rng(0x51);
        for trial in 0..400 {
            let (h, w) = (1 + rng.below(40) as usize, 1 + rng.below(40) as usize);
            let c: Vec<f64> = (0..h * w)
                .map(|_| {
                    let x = rng.below(1 << 20) as f64 / (1 << 20) as f64;
                    match trial % 5 {
                        0 => x,
                        1 => (x * 30.0).floor() * 0.1,
                        2 => (x - 0.6).max(0.0),
                        3 => x * 10f64.powi(rng.below(12) as i32 - 6),
                        _ => {
                            if rng.below(50) == 0 {
                                1e6 * x
                            } else {
                                x
                            }
                        }
                    }
                })
                .collect();
            let want = reference_float(&c, h, w);
            for level in LEVELS {
                let mut out = vec![9.0; h * w];
                shortest_path_grid_at(level, &c, 1, h, w, &mut out).unwrap();
                let got: Vec<u8> = out.iter().map(|&x| x as u8).collect();
                assert_eq!(got, want, "trial {trial} {h}x{w} {level:?}");
            }
        }
    }

    #[test]
    fn pruned_searches_keep_the_plain_heap_dijkstra_path_on_hard_grids() {
        // Grids on which the two searches meet far from the diagonal or a
        // bound could be off by a rounding: walls with one gap (winding
        // paths), costs over 600 orders of magnitude with zeros and
        // subnormals, few distinct costs (many tied paths), and sums that
        // round to equal values from different partial sums (no cost above
        // 2^960, which would scale the grid: the reference does not).
        let mut rng = Rng(0x5eed);
        for trial in 0..4000 {
            let (h, w) = (1 + rng.below(32) as usize, 1 + rng.below(32) as usize);
            let mut c: Vec<f64> = (0..h * w)
                .map(|_| {
                    let x = rng.below(1 << 20) as f64 / (1 << 20) as f64;
                    match trial % 5 {
                        0 => [0.0, 5e-324, 1e-300, 1.0, 3.0, 1e16, 1e280][rng.below(7) as usize],
                        1 => [0.8, 1.2, 5.3, 7.7, 9.2][rng.below(5) as usize],
                        2 => 1.0 + rng.below(4) as f64 * f64::EPSILON,
                        3 => x * 10f64.powi(rng.below(40) as i32 - 20),
                        _ => x,
                    }
                })
                .collect();
            if trial % 2 == 1 && h > 2 {
                // Every other row (but the first and last) a wall with one gap.
                for r in (1..h - 1).step_by(2) {
                    let gap = rng.below(w as u64) as usize;
                    for j in (0..w).filter(|&j| j != gap) {
                        c[r * w + j] = 1e6;
                    }
                }
            }
            let want = reference_float(&c, h, w);
            for level in LEVELS {
                let mut out = vec![9.0; h * w];
                shortest_path_grid_at(level, &c, 1, h, w, &mut out).unwrap();
                let got: Vec<u8> = out.iter().map(|&x| x as u8).collect();
                assert_eq!(got, want, "trial {trial} {h}x{w} {level:?}");
            }
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
    fn costs_near_the_largest_float_are_scaled_and_solved_exactly() {
        // Integer multiples of 2^1015: sums of a few overflow f64 unless the
        // grid is scaled; the path is the one of the integers.
        let mut rng = Rng(17);
        for trial in 0..300 {
            let (h, w) = (1 + rng.below(6) as usize, 1 + rng.below(6) as usize);
            let a: Vec<u64> = (0..h * w).map(|_| rng.below([3, 200][trial % 2])).collect();
            let c: Vec<f64> = a.iter().map(|&x| x as f64 * 2f64.powi(1015)).collect();
            let mut out = vec![0.0; h * w];
            shortest_path_grid(&c, 1, h, w, &mut out).unwrap();
            let got: Vec<u8> = out.iter().map(|&x| x as u8).collect();
            assert_eq!(got, reference(&a, h, w), "{a:?} {h}x{w}");
        }
        let mut out = vec![0.0; 9];
        shortest_path_grid(&[f64::MAX; 9], 1, 3, 3, &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn batches_match_single_grids_for_any_thread_count_and_level() {
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
            for level in LEVELS {
                let mut out = vec![0.0; batch * size];
                shortest_path_grid_at(level, &costs, batch, h, w, &mut out).unwrap();
                assert_eq!(out, single);
            }
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
    fn the_first_bad_cost_wins_whichever_thread_claims_it() {
        let (batch, h, w) = (400, 9, 7);
        let size = h * w;
        let mut rng = Rng(11);
        for threads in [1, 2, 3] {
            parallel::set_num_threads(threads);
            for _ in 0..20 {
                let mut c = vec![1.0f64; batch * size];
                let picks: Vec<usize> = (0..1 + rng.below(4))
                    .map(|_| rng.below((batch * size) as u64) as usize)
                    .collect();
                for (k, &p) in picks.iter().enumerate() {
                    c[p] = [f64::NAN, -1.0, f64::INFINITY][k % 3];
                }
                let first = *picks.iter().min().unwrap();
                let got = shortest_path_grid(&c, batch, h, w, &mut vec![0.0; batch * size]);
                assert_eq!(
                    got.map_err(|e| position(&e)),
                    Err(first),
                    "{threads} threads"
                );
            }
        }
        parallel::set_num_threads(0);
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
