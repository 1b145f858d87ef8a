//! Gumbel-Softmax forward, categorical draws and Gumbel-top-k of rows of at
//! most 16 float32 categories, one row per AVX-512 register.
//!
//! The generic code runs such rows either one by one (loops of a few
//! elements, scalar lane reductions) or transposed into category-major
//! tiles (gathers and scatters); both cost about three times the noise
//! itself. Here a row is one masked register: perturb, maximum, first
//! argmax, exponential, sum and scaling are a few dozen vector instructions.
//!
//! The operations are those of the row kernel in its order, so the bits are
//! the same: the sum puts category `t` into lane `t` (`LANES` = 16) and
//! combines lanes `(l, l + 8)`, `(l, l + 4)`, `(l, l + 2)`, `(l, l + 1)`
//! as `combine_lanes` does; the exponential is `exp_nonpositive_f32`
//! instruction for instruction (`tests/isa_parity.rs` checks the whole).

use super::Tau;
use crate::isa;
use crate::math::Real;
use std::any::TypeId;
use std::marker::PhantomData;

/// The rows of one batch: `x` and `noise` hold `rows * k` elements, row
/// `j` of the batch is row `r0 + j` of the tensor (for its temperature).
pub(crate) struct Batch<'a, T> {
    pub x: &'a [T],
    pub noise: &'a [T],
    pub k: usize,
    pub r0: usize,
    pub tau: Tau<'a, T>,
}

/// Where a batch's results go: the soft sample and/or the one-hot sample
/// (`rows * k` elements each).
pub(crate) struct Outputs<'a, T> {
    pub soft: Option<&'a mut [T]>,
    pub hard: Option<&'a mut [T]>,
}

/// Proof, made only by [`available`], that `T` is f32, rows have 1 to 16
/// categories and the CPU has AVX-512 F/BW/DQ/VL (which it keeps however the
/// level is capped later).
#[derive(Clone, Copy)]
pub(crate) struct Token<T> {
    k: usize,
    _t: PhantomData<T>,
}

impl<T> Token<T> {
    /// `v` as the f32 slice it is.
    fn f32s<'a>(&self, v: &'a [T]) -> &'a [f32] {
        // SAFETY: the token proves that T is f32, so this is the same slice.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    }
    /// `v` as the mutable f32 slice it is.
    fn f32s_mut<'a>(&self, v: &'a mut [T]) -> &'a mut [f32] {
        // SAFETY: as `f32s`.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    }
}

/// Whether this path can run rows of `k` categories of `T` here.
pub(crate) fn available<T: Real>(k: usize) -> Option<Token<T>> {
    let ok = TypeId::of::<T>() == TypeId::of::<f32>()
        && (1..=16).contains(&k)
        && isa::level() == isa::Level::Avx512;
    ok.then_some(Token { k, _t: PhantomData })
}

/// Runs the rows of `batch` whose logits are valid (no NaN, no `+inf`, not
/// all `-inf`: the conditions of `check_logits`, tested in one register);
/// for each other row `j`, calls `fault(j)` (which reports its fault).
/// (Off x86_64 `available` gives no token, and the body never runs.)
#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_mut, unused_variables, clippy::never_loop)
)]
#[inline(always)]
pub(crate) fn forward<T: Real>(
    token: Token<T>,
    batch: &Batch<'_, T>,
    out: Outputs<'_, T>,
    mut fault: impl FnMut(usize),
) {
    assert!(token.k == batch.k);
    let rows = batch.x.len() / batch.k;
    assert!(batch.noise.len() == rows * batch.k);
    for o in [&out.soft, &out.hard].into_iter().flatten() {
        assert!(o.len() == rows * batch.k);
    }
    let (x, noise) = (token.f32s(batch.x), token.f32s(batch.noise));
    let mut soft = out.soft.map(|v| token.f32s_mut(v));
    let mut hard = out.hard.map(|v| token.f32s_mut(v));
    // `inverse_at` of a scalar temperature, once.
    let scalar = match batch.tau {
        Tau::Scalar(_) => Some(batch.tau.inverse_at(0).to_f64() as f32),
        Tau::PerRow(_) => None,
    };
    for j in 0..rows {
        let r = batch.r0 + j;
        let row = j * batch.k..(j + 1) * batch.k;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU has AVX-512 F/BW/DQ/VL; the row
        // lies inside every slice (lengths asserted above).
        if !unsafe { x86::clean(&x[row.clone()]) } {
            fault(j);
            continue;
        }
        let inv_tau = scalar.unwrap_or_else(|| batch.tau.inverse_at(r).to_f64() as f32);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        unsafe {
            x86::row(
                &x[row.clone()],
                &noise[row.clone()],
                inv_tau,
                soft.as_deref_mut().map(|s| &mut s[row.clone()]),
                hard.as_deref_mut().map(|h| &mut h[row]),
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no short-row path off x86_64 ({inv_tau}, {row:?})");
    }
}

/// The number of logits of a row of `k = x.len()` that are not `-inf`, or
/// `None` when `check_logits` rejects the row (NaN, `+inf`, all `-inf`):
/// the check in one register, without the row's maximum the generic check
/// computes (these paths take it in-register).
#[inline(always)]
pub(crate) fn live<T: Real>(token: Token<T>, x: &[T]) -> Option<usize> {
    assert!(token.k == x.len());
    let x = token.f32s(x);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the token proves the CPU has AVX-512 F/BW/DQ/VL; `x` has at
    // most 16 elements (asserted above).
    return unsafe { x86::live(x) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no short-row path off x86_64 ({x:?})");
}

/// The first argmax of `(x - max x) + noise` for one row of `k = x.len()`
/// categories (`first_index_of` of the perturbed row).
#[inline(always)]
pub(crate) fn first_argmax<T: Real>(token: Token<T>, x: &[T], noise: &[T]) -> usize {
    assert!(token.k == x.len() && noise.len() == x.len());
    let (x, noise) = (token.f32s(x), token.f32s(noise));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the token proves the CPU has AVX-512 F/BW/DQ/VL; the slices
    // have the same length, at most 16 (asserted above).
    return unsafe { x86::first_argmax(x, noise) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no short-row path off x86_64 ({x:?}, {noise:?})");
}

/// The indices of the `out.len()` largest of the perturbed row, `x - max x`
/// plus `noise` (`k = x.len()` categories), largest first, ties to the
/// smaller index: the order `gumbel_topk` defines. Each category's rank is
/// the number of categories before it in that order (sixteen comparisons at
/// once), so there is no sort and no branch per comparison.
#[inline(always)]
pub(crate) fn top<T: Real>(token: Token<T>, x: &[T], noise: &[T], out: &mut [i64]) {
    assert!(token.k == x.len() && noise.len() == x.len() && out.len() <= x.len());
    let (x, noise) = (token.f32s(x), token.f32s(noise));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the token proves the CPU has AVX-512 F/BW/DQ/VL; the slices
    // have the same length, at most 16 (asserted above).
    unsafe {
        x86::top(x, noise, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no short-row path off x86_64 ({x:?}, {noise:?}, {out:?})");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::math::{F32_EXP_POLY, F32_LN2_HI, F32_LN2_LO, F32_LOG2E, F32_ROUND_MAGIC};
    use std::arch::x86_64::*;

    /// `exp_nonpositive_f32` on 16 lanes, operation for operation.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_nonpositive(x: __m512) -> __m512 {
        let magic = _mm512_set1_ps(F32_ROUND_MAGIC);
        // Separate multiply and add, as the scalar code (no fused multiply-add).
        let n = _mm512_sub_ps(
            _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(F32_LOG2E)), magic),
            magic,
        );
        let low = _mm512_set1_ps(-127.0);
        let nc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(n, low), n, low);
        // -nc by its sign bit, as the scalar negation.
        let neg = _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(nc),
            _mm512_set1_epi32(i32::MIN),
        ));
        let r = _mm512_fmadd_ps(neg, _mm512_set1_ps(F32_LN2_HI), x);
        let r = _mm512_fmadd_ps(neg, _mm512_set1_ps(F32_LN2_LO), r);
        let ni = _mm512_sub_epi32(
            _mm512_castps_si512(_mm512_add_ps(nc, magic)),
            _mm512_set1_epi32(F32_ROUND_MAGIC.to_bits() as i32),
        );
        let mut p = _mm512_set1_ps(F32_EXP_POLY[0]);
        for &c in &F32_EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            ni,
            _mm512_set1_epi32(127),
        )));
        let y = _mm512_mul_ps(p, scale);
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(n, _mm512_set1_ps(-126.0));
        _mm512_mask_blend_ps(tiny, y, _mm512_setzero_ps())
    }

    /// The perturbed row `w = (x - max x) + noise` (`-inf` past its `k =
    /// x.len()` lanes), its maximum in every lane, and the mask of its lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `noise` holds `x.len() <= 16` elements.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn perturbed_max(x: &[f32], noise: &[f32]) -> (__m512, __m512, __mmask16) {
        let mask: __mmask16 = ((1u32 << x.len()) - 1) as __mmask16;
        // SAFETY: the masked loads read only the first k elements, which exist.
        let (xv, g) = unsafe {
            (
                _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, x.as_ptr()),
                _mm512_maskz_loadu_ps(mask, noise.as_ptr()),
            )
        };
        // The row kernel's `add_logits`: the same operations (the maximum is
        // exact, so its reduction order does not matter).
        let top = _mm512_set1_ps(_mm512_reduce_max_ps(xv));
        let w = _mm512_add_ps(_mm512_sub_ps(xv, top), g);
        (w, _mm512_set1_ps(_mm512_reduce_max_ps(w)), mask)
    }

    /// Whether a row of `x.len() <= 16` logits has no NaN, no `+inf` and a
    /// value that is not `-inf`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn clean(x: &[f32]) -> bool {
        // SAFETY: the caller's contract.
        unsafe { live(x) }.is_some()
    }

    /// The number of logits of a row of `x.len() <= 16` that are not `-inf`,
    /// or `None` if one is NaN or `+inf` or all are `-inf`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn live(x: &[f32]) -> Option<usize> {
        let mask: __mmask16 = ((1u32 << x.len()) - 1) as __mmask16;
        // SAFETY: the masked load reads only the first k elements, which exist.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr()) };
        let nan = _mm512_mask_cmp_ps_mask::<_CMP_UNORD_Q>(mask, v, v);
        let pos_inf = _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(mask, v, _mm512_set1_ps(f32::INFINITY));
        let live =
            _mm512_mask_cmp_ps_mask::<_CMP_NEQ_OQ>(mask, v, _mm512_set1_ps(f32::NEG_INFINITY));
        (nan == 0 && pos_inf == 0 && live != 0).then_some(live.count_ones() as usize)
    }

    /// The first lane of `w` equal to its maximum `mv`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn first_at(w: __m512, mv: __m512, mask: __mmask16) -> u32 {
        (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(w, mv) & mask).trailing_zeros()
    }

    /// # Safety
    /// As `row`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) unsafe fn first_argmax(x: &[f32], noise: &[f32]) -> usize {
        // SAFETY: the caller's contract.
        let (w, mv, mask) = unsafe { perturbed_max(x, noise) };
        first_at(w, mv, mask) as usize
    }

    /// # Safety
    /// As `row`; `out` holds at most `x.len()` elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) unsafe fn top(x: &[f32], noise: &[f32], out: &mut [i64]) {
        // SAFETY: the caller's contract.
        let (v, _, mask) = unsafe { perturbed_max(x, noise) };
        let mut w = [0f32; 16];
        // SAFETY: `w` has 16 elements.
        unsafe { _mm512_storeu_ps(w.as_mut_ptr(), v) };
        // Every rank is below k <= 16: a store per category, no branch.
        let mut by_rank = [0i64; 16];
        for (i, &wi) in w[..x.len()].iter().enumerate() {
            let b = _mm512_set1_ps(wi);
            let above = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(mask, v, b);
            let tied_before = _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(mask & ((1 << i) - 1), v, b);
            by_rank[((above | tied_before).count_ones() & 15) as usize] = i as i64;
        }
        out.copy_from_slice(&by_rank[..out.len()]);
    }

    /// One row of `k = x.len() <= 16` categories.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, DQ and VL; `noise` and the
    /// outputs hold `x.len()` elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) unsafe fn row(
        x: &[f32],
        noise: &[f32],
        inv_tau: f32,
        soft: Option<&mut [f32]>,
        hard: Option<&mut [f32]>,
    ) {
        // SAFETY: the caller's contract.
        let (w, mv, mask) = unsafe { perturbed_max(x, noise) };
        if let Some(hard) = hard {
            let one = _mm512_maskz_mov_ps(1 << first_at(w, mv, mask), _mm512_set1_ps(1.0));
            // SAFETY: the masked store writes only the first k elements.
            unsafe { _mm512_mask_storeu_ps(hard.as_mut_ptr(), mask, one) };
        }
        let Some(soft) = soft else {
            return;
        };
        let e = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(w, mv), _mm512_set1_ps(inv_tau)));
        // Lanes (l, l + 8), (l, l + 4), (l, l + 2), (l, l + 1), as combine_lanes.
        let s8 = _mm256_add_ps(_mm512_castps512_ps256(e), _mm512_extractf32x8_ps::<1>(e));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
        let inv_sum = 1.0 / _mm_cvtss_f32(s1);
        let y = _mm512_mul_ps(e, _mm512_set1_ps(inv_sum));
        // SAFETY: the masked store writes only the first k elements.
        unsafe { _mm512_mask_storeu_ps(soft.as_mut_ptr(), mask, y) };
    }
}
