//! Categorical draws by Gumbel-max and ordered draws without replacement by
//! Gumbel-top-k.

use super::noise::{fill_strided, Noise};
use super::softmax::{add_logits, check_logits, first_index_of};
use super::{check_len, row_of, run_rows, Dims, KernelError, RowKernel, SharedMut};
use crate::math::{GroupCache, Real};
use crate::rng::Stream;
use std::cmp::Ordering;

#[inline(always)]
fn check_row<T: Real>(x: &[T], dims: &Dims, r: usize) -> Result<(), KernelError> {
    if dims.k == 0 {
        return Err(KernelError::AllMasked { row: r });
    }
    check_logits(x, dims, r)
}

struct Categorical<'a, T> {
    x: &'a [T],
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: SharedMut<i64>,
}

impl<T: Real> RowKernel for Categorical<'_, T> {
    type Scratch = (Vec<T>, Vec<T>, GroupCache<T>);
    fn scratch(&self) -> Self::Scratch {
        let k = self.dims.k;
        (vec![T::ZERO; k], vec![T::ZERO; k], GroupCache::new())
    }
    #[inline(always)]
    fn row(&self, r: usize, (xr, w, cache): &mut Self::Scratch) -> Result<(), KernelError> {
        let dims = &self.dims;
        let xr = row_of(self.x, dims, r, xr);
        check_row(xr, dims, r)?;
        let base = dims.base(r) as u64;
        let n = dims.len() as u64;
        for s in 0..self.num_samples {
            let start = s as u64 * n + base;
            fill_strided(
                Noise::Gumbel,
                &self.stream,
                start,
                dims.inner as u64,
                w,
                cache,
            );
            add_logits(w, xr);
            let arg = first_index_of(w, T::lane_max(w));
            // SAFETY: output slots of row `r` are written by this thread only.
            unsafe { self.out.write(r * self.num_samples + s, arg as i64) };
        }
        Ok(())
    }
}

/// `num_samples` independent draws per row from `softmax(x)` along `k`.
///
/// Draw `s` of row `r` is the first argmax of `x + g`, where `g` is the
/// Gumbel noise of elements `s * dims.len() + i` — the noise of a tensor of
/// shape `(num_samples, *x.shape)`. `out[r * num_samples + s]` receives it.
pub fn sample_categorical<T: Real>(
    x: &[T],
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: &mut [i64],
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    check_len("output", out.len(), dims.rows() * num_samples)?;
    let kernel = Categorical {
        x,
        dims,
        num_samples,
        stream,
        out: SharedMut::new(out),
    };
    run_rows(&dims, &kernel)
}

struct TopK<'a, T> {
    x: &'a [T],
    dims: Dims,
    kk: usize,
    stream: Stream,
    out: SharedMut<i64>,
}

impl<T: Real> RowKernel for TopK<'_, T> {
    type Scratch = (Vec<T>, Vec<T>, Vec<usize>, GroupCache<T>);
    fn scratch(&self) -> Self::Scratch {
        let k = self.dims.k;
        let cache = GroupCache::new();
        (
            vec![T::ZERO; k],
            vec![T::ZERO; k],
            Vec::with_capacity(k),
            cache,
        )
    }
    #[inline(always)]
    fn row(&self, r: usize, (xr, w, order, cache): &mut Self::Scratch) -> Result<(), KernelError> {
        let (dims, kk) = (&self.dims, self.kk);
        let xr = row_of(self.x, dims, r, xr);
        check_row(xr, dims, r)?;
        let available = xr.iter().filter(|&&v| v > T::NEG_INFINITY).count();
        if available < kk {
            return Err(KernelError::TooFewUnmasked {
                row: r,
                available,
                requested: kk,
            });
        }
        let base = dims.base(r) as u64;
        fill_strided(
            Noise::Gumbel,
            &self.stream,
            base,
            dims.inner as u64,
            w,
            cache,
        );
        add_logits(w, xr);
        let by_score = |a: &usize, b: &usize| match w[*b].partial_cmp(&w[*a]) {
            Some(Ordering::Equal) | None => a.cmp(b),
            Some(o) => o,
        };
        order.clear();
        order.extend(0..dims.k);
        if kk < dims.k {
            order.select_nth_unstable_by(kk - 1, by_score);
        }
        order[..kk].sort_unstable_by(by_score);
        let base = Dims::new(dims.outer, kk, dims.inner).base(r);
        for (t, &idx) in order[..kk].iter().enumerate() {
            // SAFETY: output slots of row `r` are written by this thread only.
            unsafe { self.out.write(base + t * dims.inner, idx as i64) };
        }
        Ok(())
    }
}

/// Gumbel-top-k: the indices of the `kk` largest `x + g` along `k`, in
/// decreasing order (ties: smaller index first) — `kk` ordered draws without
/// replacement from `softmax(x)`. The output is laid out as `(outer, kk, inner)`.
pub fn gumbel_topk<T: Real>(
    x: &[T],
    dims: Dims,
    kk: usize,
    stream: Stream,
    out: &mut [i64],
) -> Result<(), KernelError> {
    check_len("logits", x.len(), dims.len())?;
    check_len("output", out.len(), dims.outer * kk * dims.inner)?;
    if kk == 0 {
        return Ok(());
    }
    let kernel = TopK {
        x,
        dims,
        kk,
        stream,
        out: SharedMut::new(out),
    };
    run_rows(&dims, &kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;

    #[test]
    fn categorical_is_argmax_of_perturbed_logits() {
        let dims = Dims::new(3, 6, 2);
        let x: Vec<f32> = (0..dims.len()).map(|i| (i % 5) as f32 * 0.3).collect();
        let stream = Stream::new(4, 7);
        let mut out = vec![0i64; dims.rows() * 3];
        sample_categorical(&x, dims, 3, stream, &mut out).unwrap();
        let mut g = vec![0f32; dims.len() * 3];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        for r in 0..dims.rows() {
            for s in 0..3 {
                let w: Vec<f32> = (0..dims.k)
                    .map(|t| {
                        let i = dims.base(r) + t * dims.inner;
                        x[i] + g[s * dims.len() + i]
                    })
                    .collect();
                let m = w.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let want = w.iter().position(|&v| v == m).unwrap();
                assert_eq!(out[r * 3 + s], want as i64);
            }
        }
    }

    #[test]
    fn topk_orders_by_perturbed_score_and_respects_masks() {
        let dims = Dims::new(1, 5, 1);
        let x = [0.0f64, f64::NEG_INFINITY, 1.0, 2.0, f64::NEG_INFINITY];
        let stream = Stream::new(1, 2);
        let mut out = vec![0i64; 3];
        gumbel_topk(&x, dims, 3, stream, &mut out).unwrap();
        let mut g = vec![0f64; 5];
        noise(Noise::Gumbel, stream, &mut g).unwrap();
        let mut want: Vec<usize> = vec![0, 2, 3];
        want.sort_by(|&a, &b| (x[b] + g[b]).partial_cmp(&(x[a] + g[a])).unwrap());
        assert_eq!(out, want.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let e = gumbel_topk(&x, dims, 4, stream, &mut [0i64; 4]);
        assert_eq!(
            e,
            Err(KernelError::TooFewUnmasked {
                row: 0,
                available: 3,
                requested: 4
            })
        );
    }

    #[test]
    fn empty_category_axis_cannot_be_sampled() {
        let e =
            sample_categorical::<f32>(&[], Dims::new(2, 0, 1), 1, Stream::new(0, 0), &mut [0; 2]);
        assert_eq!(e, Err(KernelError::AllMasked { row: 0 }));
    }
}
