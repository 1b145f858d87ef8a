//! Helpers of the row kernels (`softmax`, `sampling`): the checks and the
//! perturbation every kernel applies to a row, and the copies between a
//! strided row and a contiguous buffer.

use super::{Dims, KernelError, SharedMut};
use crate::math::Real;

/// Checks one row of logits: no NaN, no +inf, at least one value that is
/// not -inf; returns the row's largest logit (finite, or -inf for an empty
/// row). Branch-free passes decide; only a faulty row is scanned again to
/// report its first fault.
#[inline(always)]
pub(crate) fn check_logits<T: Real>(x: &[T], dims: &Dims, r: usize) -> Result<T, KernelError> {
    let mut bad = false;
    for &v in x {
        bad |= v.is_nan() | (v == T::INFINITY);
    }
    let top = T::lane_max(x);
    if !bad && (top > T::NEG_INFINITY || x.is_empty()) {
        return Ok(top);
    }
    let base = dims.base(r);
    for (t, &v) in x.iter().enumerate() {
        let index = base + t * dims.inner;
        if v.is_nan() {
            return Err(KernelError::NanLogit { index });
        }
        if v == T::INFINITY {
            return Err(KernelError::PosInfLogit { index });
        }
    }
    Err(KernelError::AllMasked { row: r })
}

/// `w[t] = (x[t] - top) + w[t]`: the perturbed logits (Gumbel noise in `w`
/// on entry), relative to the row's largest logit `top`.
///
/// Every kernel perturbs this way. The noise added to a logit of magnitude
/// 1e8 would be lost to rounding (a float32 ulp there is 8), and the draws
/// would favour the first of equal logits. `x - top` is exact where `x` is
/// within a factor 2 of `top` (same sign) and elsewhere rounds relative to
/// `|x - top|`, a gap the noise would have to close to win; so the noise
/// keeps its resolution at every scale, and the distribution is the same.
#[inline(always)]
pub(crate) fn add_logits<T: Real>(w: &mut [T], x: &[T], top: T) {
    for (wt, &xt) in w.iter_mut().zip(x) {
        *wt = (xt - top) + *wt;
    }
}

/// The first index of `m` in `w` (`m` is the maximum of `w`, so it occurs).
/// Whole chunks are tested without branches first, so the scan vectorizes.
#[inline(always)]
pub(crate) fn first_index_of<T: Real>(w: &[T], m: T) -> usize {
    /// Elements tested together, without a branch.
    const BRANCH_FREE_RUN: usize = 64;
    let hit = |c: &[T]| c.iter().fold(false, |any, &v| any | (v == m));
    let chunk = w.chunks(BRANCH_FREE_RUN).position(hit).unwrap_or(0);
    let at = chunk * BRANCH_FREE_RUN;
    at + w[at..].iter().position(|&v| v == m).unwrap_or(0)
}

/// Copies row `r` of `x` (strided by `dims.inner`) into `row`.
#[inline(always)]
pub(crate) fn gather_row<T: Copy>(x: &[T], dims: &Dims, r: usize, row: &mut [T]) {
    let base = dims.base(r);
    if dims.inner == 1 {
        row.copy_from_slice(&x[base..base + dims.k]);
    } else {
        for (t, v) in row.iter_mut().enumerate() {
            *v = x[base + t * dims.inner];
        }
    }
}

/// Writes `row` into row `r` of the shared output.
///
/// # Safety
/// Row `r` must belong to the calling thread in the current parallel region.
#[inline(always)]
pub(crate) unsafe fn scatter_row<T: Copy>(out: &SharedMut<T>, dims: &Dims, r: usize, row: &[T]) {
    let base = dims.base(r);
    if dims.inner == 1 {
        // SAFETY: the elements of row `r` are owned by this thread.
        unsafe { out.slice(base, dims.k) }.copy_from_slice(row);
        return;
    }
    for (t, &v) in row.iter().enumerate() {
        // SAFETY: the element belongs to row `r`, owned by this thread.
        unsafe { out.write(base + t * dims.inner, v) };
    }
}

/// Row `r` of `x`: the slice itself when rows are contiguous, else a copy in `buf`.
#[inline(always)]
pub(crate) fn row_of<'a, T: Copy>(x: &'a [T], dims: &Dims, r: usize, buf: &'a mut [T]) -> &'a [T] {
    if dims.inner == 1 {
        let base = dims.base(r);
        &x[base..base + dims.k]
    } else {
        gather_row(x, dims, r, buf);
        buf
    }
}
