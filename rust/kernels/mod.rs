//! Row kernels over tensors viewed as `(outer, k, inner)`.
//!
//! A tensor of any rank, reduced along one dimension `dim`, is seen as
//! `outer = prod(shape[..dim])`, `k = shape[dim]`, `inner = prod(shape[dim+1..])`
//! in its contiguous order. Row `r` (with `o = r / inner`, `j = r % inner`)
//! holds elements `base + t * inner` for `t < k`, `base = o * k * inner + j`.
//! The random words of element `i` depend on `(seed, offset, i)` only, so the
//! way rows are split between threads never changes a result.

pub mod bernoulli;
pub mod noise;
pub mod order;
mod rows;
pub mod sampling;
mod short;
pub mod softmax;
mod tiles;

use crate::math::Real;
use crate::{isa, parallel};
use std::fmt;

/// The view of a tensor as `(outer, k, inner)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub outer: usize,
    pub k: usize,
    pub inner: usize,
}

impl Dims {
    pub fn new(outer: usize, k: usize, inner: usize) -> Self {
        Dims { outer, k, inner }
    }
    pub fn rows(&self) -> usize {
        self.outer * self.inner
    }
    pub fn len(&self) -> usize {
        self.outer * self.k * self.inner
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of the first element of row `r`.
    #[inline(always)]
    pub fn base(&self, r: usize) -> usize {
        (r / self.inner) * self.k * self.inner + r % self.inner
    }
    /// Whether rows are contiguous and short enough (at most `BATCH / 4`
    /// categories) for kernels to draw the noise of many at once.
    pub(crate) fn batches_rows(&self) -> bool {
        self.inner == 1 && self.k > 0 && self.k <= BATCH / 4
    }
}

/// Temperature: one value for every row, or one per row.
#[derive(Clone, Copy, Debug)]
pub enum Tau<'a, T> {
    Scalar(T),
    PerRow(&'a [T]),
}

impl<T: Real> Tau<'_, T> {
    #[inline(always)]
    pub fn at(&self, row: usize) -> T {
        match *self {
            Tau::Scalar(t) => t,
            Tau::PerRow(ts) => ts[row],
        }
    }
    /// `1 / tau` of a row; computed once per row, used as a multiplier.
    #[inline(always)]
    pub fn inverse_at(&self, row: usize) -> T {
        T::ONE / self.at(row)
    }
    /// Checks the length of a per-row temperature and that every value is
    /// normal, positive and finite: from the smallest normal value (whose
    /// inverse, the multiplier the kernels use, is still finite) to the
    /// largest finite one. A scalar is checked the same way (fault index 0).
    pub(crate) fn check(&self, rows: usize) -> Result<(), KernelError> {
        let bad = |t: T| !(t >= T::MIN_POSITIVE && t < T::INFINITY);
        match *self {
            Tau::PerRow(ts) if ts.len() != rows => Err(KernelError::Shape {
                what: "tau",
                expected: rows,
                got: ts.len(),
            }),
            Tau::PerRow(ts) => match ts.iter().position(|&t| bad(t)) {
                Some(index) => Err(KernelError::BadTau { index }),
                None => Ok(()),
            },
            Tau::Scalar(t) if bad(t) => Err(KernelError::BadTau { index: 0 }),
            Tau::Scalar(_) => Ok(()),
        }
    }
}

/// What a forward with a straight-through mode (Gumbel-Softmax, relaxed
/// Bernoulli) writes: the soft sample, the one-hot (hard) sample, or both.
/// The same three modes, by the same names, are `OutputMode` in Python
/// (`gumbelrs._protocol`) and the `GRS_SOFT`/`GRS_ONE_HOT`/
/// `GRS_ONE_HOT_WITH_SOFT` codes of the CUDA kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputMode {
    /// The soft sample alone.
    Soft,
    /// The one-hot sample alone (no gradient needs the soft one).
    OneHot,
    /// The one-hot sample and the soft sample its gradient flows through.
    OneHotWithSoft,
}

impl OutputMode {
    /// Every mode.
    pub const ALL: [OutputMode; 3] = [
        OutputMode::Soft,
        OutputMode::OneHot,
        OutputMode::OneHotWithSoft,
    ];
}

/// The buffers of one `OutputMode`, each as long as the logits.
#[derive(Debug)]
pub enum Outputs<'a, T> {
    Soft(&'a mut [T]),
    OneHot(&'a mut [T]),
    OneHotWithSoft {
        one_hot: &'a mut [T],
        soft: &'a mut [T],
    },
}

impl<'a, T> Outputs<'a, T> {
    /// The buffers of `mode`: `y` receives the soft sample (`Soft`) or the
    /// one-hot one; `soft`, given in `OneHotWithSoft` and only there, the
    /// soft sample beside it. None when `soft` does not fit the mode.
    pub fn of(mode: OutputMode, y: &'a mut [T], soft: Option<&'a mut [T]>) -> Option<Self> {
        Some(match (mode, soft) {
            (OutputMode::Soft, None) => Outputs::Soft(y),
            (OutputMode::OneHot, None) => Outputs::OneHot(y),
            (OutputMode::OneHotWithSoft, Some(soft)) => {
                Outputs::OneHotWithSoft { one_hot: y, soft }
            }
            _ => return None,
        })
    }

    /// `(one_hot, soft)`: where each sample goes, if it is written.
    pub(crate) fn split(self) -> (Option<&'a mut [T]>, Option<&'a mut [T]>) {
        match self {
            Outputs::Soft(soft) => (None, Some(soft)),
            Outputs::OneHot(one_hot) => (Some(one_hot), None),
            Outputs::OneHotWithSoft { one_hot, soft } => (Some(one_hot), Some(soft)),
        }
    }

    pub fn mode(&self) -> OutputMode {
        match self {
            Outputs::Soft(_) => OutputMode::Soft,
            Outputs::OneHot(_) => OutputMode::OneHot,
            Outputs::OneHotWithSoft { .. } => OutputMode::OneHotWithSoft,
        }
    }
}

/// What a kernel found wrong with its input. Indices are flat positions in
/// the contiguous order of the input (elements) or row numbers (rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// A logit is NaN.
    NanLogit { index: usize },
    /// A logit is +inf, which makes the distribution undefined.
    PosInfLogit { index: usize },
    /// Every logit of a row is -inf: no category can be drawn.
    AllMasked { row: usize },
    /// A row has fewer categories that are not masked (-inf) than requested.
    TooFewUnmasked {
        row: usize,
        available: usize,
        requested: usize,
    },
    /// A row's conditioning index is out of range or points at a `-inf` logit.
    BadIndex { row: usize },
    /// A temperature is not in `[MIN_POSITIVE, MAX]` of the element type.
    BadTau { index: usize },
    /// A weight of a solver's problem (an assignment's or a spanning
    /// tree's weight, a grid cell's cost) is NaN.
    NanWeight { index: usize },
    /// A weight of a solver's problem is an infinity it does not allow: the
    /// one an assignment's objective seeks (+inf when maximizing, -inf when
    /// minimizing: no best assignment exists), a spanning tree's +inf (no
    /// heaviest tree) or a grid cell's +inf cost.
    InfiniteWeight { index: usize },
    /// The forbidden pairs of assignment problem `problem` (a matrix of
    /// the batch) leave no assignment of every row to a column of its own.
    Infeasible { problem: usize },
    /// The forbidden (-inf) edges of graph `problem` of a batch leave it
    /// disconnected: it has no spanning tree.
    Disconnected { problem: usize },
    /// A grid cell's cost is negative (shortest paths need costs >= 0).
    NegativeCost { index: usize },
    /// A shortest-path grid has too many cells: `cells`, counting a border
    /// of one cell, must stay below 2^31.
    GridTooLarge { cells: usize },
    /// An assignment problem has more rows than columns.
    MoreRowsThanColumns { rows: usize, columns: usize },
    /// A buffer has the wrong number of elements.
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

/// The kinds of `KernelError` a caller can fix in its data (every variant
/// but `Shape` and `MoreRowsThanColumns`), by the codes that
/// `gumbelrs._protocol.FaultKind` and the CUDA kernels' `GrsFaultKind` give
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultKind {
    Nan = 1,
    PosInf = 2,
    AllMasked = 3,
    Index = 4,
    Tau = 5,
    TooFew = 6,
    Infeasible = 7,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Nan,
        FaultKind::PosInf,
        FaultKind::AllMasked,
        FaultKind::Index,
        FaultKind::Tau,
        FaultKind::TooFew,
        FaultKind::Infeasible,
    ];

    /// The kind's code on every side of the protocol.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A fault as the binding reports it: its kind, its position (element, row
/// or problem, as the variant has it) and, for `TooFew`, the categories
/// available and requested (else 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub position: usize,
    pub available: usize,
    pub requested: usize,
}

impl KernelError {
    /// The fault in the caller's data, or None for a `Shape`,
    /// `MoreRowsThanColumns` or `GridTooLarge` error (the Python layer
    /// checks shapes first: there these are bugs of its code, not of the
    /// data). A weight at an infinity its problem does not allow is a
    /// `PosInf` fault, whatever its sign; a disconnected graph is
    /// `Infeasible`, like an assignment problem without a solution. A
    /// negative grid cost shares the `Nan` kind with a NaN cost (the kinds'
    /// codes are all taken): the Python layer looks at the costs again to
    /// tell them apart.
    pub fn fault(&self) -> Option<Fault> {
        let at = |kind, position| Fault {
            kind,
            position,
            available: 0,
            requested: 0,
        };
        Some(match *self {
            KernelError::NanLogit { index } => at(FaultKind::Nan, index),
            KernelError::PosInfLogit { index } => at(FaultKind::PosInf, index),
            KernelError::AllMasked { row } => at(FaultKind::AllMasked, row),
            KernelError::TooFewUnmasked {
                row,
                available,
                requested,
            } => Fault {
                available,
                requested,
                ..at(FaultKind::TooFew, row)
            },
            KernelError::BadIndex { row } => at(FaultKind::Index, row),
            KernelError::BadTau { index } => at(FaultKind::Tau, index),
            KernelError::NanWeight { index } | KernelError::NegativeCost { index } => {
                at(FaultKind::Nan, index)
            }
            KernelError::InfiniteWeight { index } => at(FaultKind::PosInf, index),
            KernelError::Infeasible { problem } | KernelError::Disconnected { problem } => {
                at(FaultKind::Infeasible, problem)
            }
            KernelError::Shape { .. }
            | KernelError::MoreRowsThanColumns { .. }
            | KernelError::GridTooLarge { .. } => return None,
        })
    }

    /// The flat position a fault of a row kernel refers to, used to report
    /// the first one (the assignment solver orders its own faults).
    fn position(&self, dims: &Dims) -> usize {
        match *self {
            KernelError::NanLogit { index }
            | KernelError::PosInfLogit { index }
            | KernelError::NanWeight { index }
            | KernelError::InfiniteWeight { index }
            | KernelError::NegativeCost { index } => index,
            KernelError::AllMasked { row }
            | KernelError::TooFewUnmasked { row, .. }
            | KernelError::BadIndex { row } => dims.base(row),
            KernelError::BadTau { .. }
            | KernelError::Infeasible { .. }
            | KernelError::Disconnected { .. }
            | KernelError::GridTooLarge { .. }
            | KernelError::MoreRowsThanColumns { .. }
            | KernelError::Shape { .. } => 0,
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KernelError::NanLogit { index } => write!(f, "logit {index} is NaN"),
            KernelError::PosInfLogit { index } => write!(f, "logit {index} is +inf"),
            KernelError::AllMasked { row } => write!(f, "every logit of row {row} is -inf"),
            KernelError::TooFewUnmasked {
                row,
                available,
                requested,
            } => write!(
                f,
                "row {row} has {available} categories that are not -inf, {requested} requested"
            ),
            KernelError::BadIndex { row } => {
                write!(f, "the index of row {row} is out of range or masked")
            }
            KernelError::BadTau { index } => {
                write!(f, "temperature {index} is not normal, positive and finite")
            }
            KernelError::NanWeight { index } => write!(f, "weight {index} is NaN"),
            KernelError::InfiniteWeight { index } => write!(
                f,
                "weight {index} is an infinity its problem does not allow (the one an \
                 assignment's objective seeks, a tree's +inf, a grid's +inf cost)"
            ),
            KernelError::Disconnected { problem } => write!(
                f,
                "the forbidden (-inf) edges of graph {problem} leave it disconnected: it has no \
                 spanning tree"
            ),
            KernelError::NegativeCost { index } => {
                write!(
                    f,
                    "cost {index} is negative; shortest paths need costs >= 0"
                )
            }
            KernelError::GridTooLarge { cells } => write!(
                f,
                "a grid of {cells} cells (with a border of one) is too large; the solver takes \
                 fewer than 2^31"
            ),
            KernelError::Infeasible { problem } => write!(
                f,
                "the forbidden pairs of matrix {problem} leave no assignment of every row to a \
                 column of its own"
            ),
            KernelError::MoreRowsThanColumns { rows, columns } => write!(
                f,
                "an assignment gives every row a column of its own: {rows} rows need at least \
                 {rows} columns, got {columns}"
            ),
            KernelError::Shape {
                what,
                expected,
                got,
            } => write!(f, "{what} has {got} elements, expected {expected}"),
        }
    }
}

impl std::error::Error for KernelError {}

pub(crate) fn check_len(
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// The work of one row of a kernel. `row` is `#[inline(always)]` in every
/// implementation so that the driver below can compile it three times:
/// portable, with AVX2+FMA and with AVX-512 (chosen at run time;
/// bitwise-identical results).
pub(crate) trait RowKernel: Sync {
    type Scratch;
    /// Per-thread scratch memory, allocated once per range of rows.
    fn scratch(&self) -> Self::Scratch;
    fn row(&self, r: usize, scratch: &mut Self::Scratch) -> Result<(), KernelError>;
    /// Runs the rows of `rows`, passing each fault to `fault`. Kernels whose
    /// short contiguous rows gain from sharing work (one noise fill for many
    /// rows) override it; this is one `row` call per row.
    #[inline(always)]
    fn rows(
        &self,
        rows: std::ops::Range<usize>,
        scratch: &mut Self::Scratch,
        fault: &mut impl FnMut(KernelError),
    ) {
        each_row(self, rows, scratch, fault);
    }
}

/// `RowKernel::rows` as one `row` call per row.
#[inline(always)]
pub(crate) fn each_row<K: RowKernel + ?Sized>(
    kernel: &K,
    rows: std::ops::Range<usize>,
    scratch: &mut K::Scratch,
    fault: &mut impl FnMut(KernelError),
) {
    for r in rows {
        if let Err(e) = kernel.row(r, scratch) {
            fault(e);
        }
    }
}

/// The batches of `BATCH / k` rows (short contiguous rows of `k`
/// categories) that `rows` splits into, each with the rows of the batch
/// after it (empty for the last), whose memory is prefetched meanwhile.
pub(crate) fn row_batches(
    rows: std::ops::Range<usize>,
    k: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> {
    let per = BATCH / k;
    let end = rows.end;
    rows.step_by(per).map(move |r0| {
        let r1 = end.min(r0 + per);
        (r0..r1, r1..end.min(r1 + per))
    })
}

/// Runs `kernel` on every row on the library's thread pool and returns the
/// fault at the smallest position, so the error reported never depends on
/// scheduling.
pub(crate) fn run_rows<K: RowKernel>(dims: &Dims, kernel: &K) -> Result<(), KernelError> {
    run_units(dims, dims, kernel)
}

/// `run_rows` over units of work that are not the rows of `faults` (tiles of
/// several rows): `units` gives their number (`rows()`) and cost (`k`);
/// faults are positioned in `faults`.
pub(crate) fn run_units<K: RowKernel>(
    units: &Dims,
    faults: &Dims,
    kernel: &K,
) -> Result<(), KernelError> {
    let dims = faults;
    let level = isa::level();
    let range = |rows: std::ops::Range<usize>| {
        let mut scratch = kernel.scratch();
        match level {
            // SAFETY: `isa::level` returns Avx512 only when the CPU has
            // AVX-512 F/BW/DQ/VL and FMA (detected at run time).
            #[cfg(target_arch = "x86_64")]
            isa::Level::Avx512 => unsafe { rows_avx512(dims, rows, kernel, &mut scratch) },
            // SAFETY: Avx2 only when the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            isa::Level::Avx2 => unsafe { rows_avx2(dims, rows, kernel, &mut scratch) },
            _ => rows_portable(dims, rows, kernel, &mut scratch),
        }
    };
    parallel::map_ranges(units.rows(), units.k.max(1), range)
        .into_iter()
        .flatten()
        .min_by_key(|e| e.position(dims))
        .map_or(Ok(()), Err)
}

#[inline(always)]
fn rows_portable<K: RowKernel>(
    dims: &Dims,
    rows: std::ops::Range<usize>,
    kernel: &K,
    scratch: &mut K::Scratch,
) -> Option<KernelError> {
    let mut first: Option<KernelError> = None;
    kernel.rows(rows, scratch, &mut |e| {
        if first.is_none_or(|old| e.position(dims) < old.position(dims)) {
            first = Some(e);
        }
    });
    first
}

/// `rows_portable` compiled with AVX2 and FMA: `mul_add` is one instruction
/// instead of a call to the C library's `fma` (the same value: both round
/// once) and loops run on 256-bit vectors.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<K: RowKernel>(
    dims: &Dims,
    rows: std::ops::Range<usize>,
    kernel: &K,
    scratch: &mut K::Scratch,
) -> Option<KernelError> {
    rows_portable(dims, rows, kernel, scratch)
}

/// `rows_portable` compiled with AVX-512: loops run on 512-bit vectors.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, DQ, VL and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn rows_avx512<K: RowKernel>(
    dims: &Dims,
    rows: std::ops::Range<usize>,
    kernel: &K,
    scratch: &mut K::Scratch,
) -> Option<KernelError> {
    rows_portable(dims, rows, kernel, scratch)
}

/// Elements of noise drawn at once for short contiguous rows.
pub(crate) const BATCH: usize = 4096;

/// Elements per unit of work of the elementwise kernels.
pub(crate) const ELEMENTS_PER_UNIT: usize = 4096;

/// The view that makes an `n`-element tensor a set of rows of
/// `ELEMENTS_PER_UNIT` elements (`k`, so the thread pool sees the real cost
/// of a row).
pub(crate) fn chunks(n: usize) -> Dims {
    Dims::new(n.div_ceil(ELEMENTS_PER_UNIT), ELEMENTS_PER_UNIT, 1)
}

/// The elements `start .. start + len` of chunk `c` of an `n`-element tensor.
#[inline(always)]
pub(crate) fn chunk_range(n: usize, c: usize) -> (usize, usize) {
    let start = c * ELEMENTS_PER_UNIT;
    (start, ELEMENTS_PER_UNIT.min(n - start))
}

/// A slice that several threads write through, each to its own elements.
///
/// Rows of a `Dims` view interleave in memory when `inner > 1`, so the
/// output cannot be split into contiguous sub-slices per thread. Kernels
/// instead share this pointer and write only the elements of the rows they
/// were given; rows partition the index set, so no element is written twice
/// and no element is read while another thread writes it.
pub(crate) struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `SharedMut` is only a pointer to a slice that outlives every use
// (kernels create it from a `&mut [T]` they hold for the whole parallel
// region); concurrent writes go to disjoint indices as documented above.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above; no two threads access the same index.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T: Copy> SharedMut<T> {
    pub(crate) fn new(slice: &mut [T]) -> Self {
        SharedMut {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
        }
    }

    /// The address and length of elements `start .. start + len`, cut at
    /// the end of the slice (for prefetching; no access is made).
    pub(crate) fn range(&self, start: usize, len: usize) -> (*const T, usize) {
        let start = start.min(self.len);
        (self.ptr.wrapping_add(start), len.min(self.len - start))
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other thread may access `index` during the parallel region that
    /// owns this `SharedMut`.
    #[inline(always)]
    pub(crate) unsafe fn write(&self, index: usize, value: T) {
        assert!(index < self.len);
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { self.ptr.add(index).write(value) }
    }

    /// The elements `start .. start + len` as a mutable slice.
    ///
    /// # Safety
    /// No other thread may access these elements while the slice lives.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start <= self.len && len <= self.len - start);
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Asks the CPU to bring the cache line at `p` into its level-2 cache (a
/// hint: nothing is read, and no address can fault).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no data and cannot fault, whatever the
    // address; SSE, which has it, is part of every x86_64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_must_be_normal_positive_and_finite() {
        let good = [f32::MIN_POSITIVE, 1.0, f32::MAX];
        assert_eq!(Tau::PerRow(&good).check(3), Ok(()));
        for bad in [f32::MIN_POSITIVE / 2.0, 0.0, -1.0, f32::INFINITY, f32::NAN] {
            let rows = [1.0, bad];
            assert_eq!(
                Tau::PerRow(&rows).check(2),
                Err(KernelError::BadTau { index: 1 })
            );
            assert_eq!(
                Tau::Scalar(bad).check(9),
                Err(KernelError::BadTau { index: 0 })
            );
        }
        assert_eq!(Tau::Scalar(f64::MIN_POSITIVE).check(1), Ok(()));
        assert_eq!(
            Tau::Scalar(f64::MIN_POSITIVE / 2.0).check(1),
            Err(KernelError::BadTau { index: 0 })
        );
    }
}
