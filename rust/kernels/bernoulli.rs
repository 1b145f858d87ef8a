//! Binary Concrete (relaxed Bernoulli) and Hard Concrete, elementwise.
//!
//! Element `i` uses the logistic noise `L_i` of `(seed, offset, i)`:
//! relaxed Bernoulli `y = sigmoid((x + L) / tau)` (Maddison et al. 2017,
//! Jang et al. 2017); Hard Concrete `z = clamp(lo + (hi - lo) * y, 0, 1)`
//! (Louizos et al. 2018), which puts probability mass on exactly 0 and 1.

use super::noise::{fill_ahead, Ahead, Noise};
use super::{
    check_len, chunk_range, chunks, run_rows, KernelError, Outputs, RowKernel, SharedMut, Tau,
    ELEMENTS_PER_UNIT,
};
use crate::math::{sigmoid, GroupCache, Real};
use crate::memory::prefer_huge_pages;
use crate::rng::Stream;
use std::ops::Range;

fn check_inputs<T: Real>(x_len: usize, n: usize, tau: &Tau<'_, T>) -> Result<(), KernelError> {
    check_len("logits", x_len, n)?;
    tau.check(n)
}

/// What an elementwise kernel computes from a logit, its logistic noise and
/// its inverse temperature: the output value and, for hard samples, the soft one.
trait ElementOp<T>: Sync {
    fn apply(&self, x: T, l: T, inv_tau: T) -> (T, T);
}

struct Noisy<'a, T, Op> {
    x: &'a [T],
    tau: Tau<'a, T>,
    stream: Stream,
    op: Op,
    out: SharedMut<T>,
    second: Option<SharedMut<T>>,
}

impl<T: Real, Op: ElementOp<T>> RowKernel for Noisy<'_, T, Op> {
    type Scratch = Vec<T>;
    fn scratch(&self) -> Vec<T> {
        vec![T::ZERO; ELEMENTS_PER_UNIT]
    }
    #[inline(always)]
    fn row(&self, c: usize, noise: &mut Vec<T>) -> Result<(), KernelError> {
        let (start, len) = chunk_range(self.x.len(), c);
        let x = &self.x[start..start + len];
        if x.iter().fold(false, |bad, v| bad | v.is_nan()) {
            let t = x.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(KernelError::NanLogit { index: start + t });
        }
        let noise = &mut noise[..len];
        let second = match &self.second {
            Some(s) => Ahead::of_shared(s, start + len, len),
            None => Ahead::of::<T>(&[]),
        };
        let next = [
            Ahead::within(self.x, start + len, len),
            Ahead::of_shared(&self.out, start + len, len),
            second,
        ];
        fill_ahead(
            Noise::Logistic,
            &self.stream,
            start as u64,
            noise,
            &mut GroupCache::new(),
            &next,
        );
        // SAFETY: each chunk of elements is visited by one thread only.
        let out = unsafe { self.out.slice(start, len) };
        // SAFETY: as above.
        let second = self.second.as_ref().map(|s| unsafe { s.slice(start, len) });
        // One loop per kind of temperature, so neither branches per element.
        match self.tau {
            Tau::Scalar(t) => {
                let inv = T::ONE / t;
                apply_all(&self.op, x, noise, |_| inv, out, second);
            }
            Tau::PerRow(ts) => {
                let ts = &ts[start..start + len];
                apply_all(&self.op, x, noise, |t| T::ONE / ts[t], out, second);
            }
        }
        Ok(())
    }
}

/// `out[t], second[t] = op(x[t], noise[t], inv_tau(t))`.
#[inline(always)]
fn apply_all<T: Real, Op: ElementOp<T>>(
    op: &Op,
    x: &[T],
    noise: &[T],
    inv_tau: impl Fn(usize) -> T,
    out: &mut [T],
    second: Option<&mut [T]>,
) {
    match second {
        None => {
            for (t, o) in out.iter_mut().enumerate() {
                *o = op.apply(x[t], noise[t], inv_tau(t)).0;
            }
        }
        Some(second) => {
            for (t, (o, s)) in out.iter_mut().zip(second.iter_mut()).enumerate() {
                (*o, *s) = op.apply(x[t], noise[t], inv_tau(t));
            }
        }
    }
}

/// Runs `op` over every element with its logistic noise, writing the first
/// value it returns to `out` and the second to `second` (when given).
fn run_noisy<T: Real, Op: ElementOp<T>>(
    x: &[T],
    tau: Tau<'_, T>,
    stream: Stream,
    op: Op,
    out: &mut [T],
    mut second: Option<&mut [T]>,
) -> Result<(), KernelError> {
    prefer_huge_pages(out);
    if let Some(s) = second.as_deref_mut() {
        prefer_huge_pages(s);
    }
    let kernel = Noisy {
        x,
        tau,
        stream,
        op,
        out: SharedMut::new(out),
        second: second.map(SharedMut::new),
    };
    run_rows(&chunks(x.len()), &kernel)
}

struct RelaxedBernoulli {
    hard: bool,
}

impl<T: Real> ElementOp<T> for RelaxedBernoulli {
    #[inline(always)]
    fn apply(&self, x: T, l: T, inv_tau: T) -> (T, T) {
        let w = x + l;
        let soft = sigmoid(w * inv_tau);
        if self.hard {
            (if w > T::ZERO { T::ONE } else { T::ZERO }, soft)
        } else {
            (soft, soft)
        }
    }
}

/// Relaxed Bernoulli forward, writing what `out` asks for: the soft sample
/// `sigmoid((x + L) / tau)` and/or the straight-through hard (one-hot)
/// sample, 1.0 where `x + L > 0`, else 0.0. Logits of `-inf` and `+inf` are
/// gates that are always closed or always open.
pub fn relaxed_bernoulli_forward<T: Real>(
    x: &[T],
    tau: Tau<'_, T>,
    stream: Stream,
    out: Outputs<'_, T>,
) -> Result<(), KernelError> {
    let (hard, y, soft) = match out {
        Outputs::Soft(soft) => (false, soft, None),
        Outputs::OneHot(one_hot) => (true, one_hot, None),
        Outputs::OneHotWithSoft { one_hot, soft } => (true, one_hot, Some(soft)),
    };
    check_inputs(x.len(), y.len(), &tau)?;
    if let Some(s) = &soft {
        check_len("soft output", s.len(), y.len())?;
    }
    run_noisy(x, tau, stream, RelaxedBernoulli { hard }, y, soft)
}

/// Relaxed Bernoulli backward from the soft sample: `g * y * (1 - y) / tau`.
pub fn relaxed_bernoulli_backward<T: Real>(
    g: &[T],
    y: &[T],
    tau: Tau<'_, T>,
    grad_x: &mut [T],
) -> Result<(), KernelError> {
    check_inputs(g.len(), grad_x.len(), &tau)?;
    check_len("y", y.len(), grad_x.len())?;
    run_elementwise(grad_x, tau, |i, out, inv_tau| {
        let (g, y) = (&g[i.clone()], &y[i.clone()]);
        for (t, ((o, &gt), &yt)) in out.iter_mut().zip(g).zip(y).enumerate() {
            *o = (gt * (yt * (T::ONE - yt))) * inv_tau.at(t);
        }
    })
}

/// The inverse temperatures of a chunk: `at(t)` is `tau.inverse_at(start + t)`,
/// a scalar one computed once.
#[derive(Clone, Copy)]
enum InvTau<'a, T> {
    Scalar(T),
    PerElement(&'a [T]),
}

impl<T: Real> InvTau<'_, T> {
    #[inline(always)]
    fn at(&self, t: usize) -> T {
        match *self {
            InvTau::Scalar(inv) => inv,
            InvTau::PerElement(ts) => T::ONE / ts[t],
        }
    }
}

/// Writes an elementwise backward into `grad_x` by chunks on the thread pool
/// (compiled for each instruction set like every kernel): `f(range, out,
/// inv_tau)` fills `out = grad_x[range]`.
fn run_elementwise<T: Real, F>(grad_x: &mut [T], tau: Tau<'_, T>, f: F) -> Result<(), KernelError>
where
    F: Fn(Range<usize>, &mut [T], InvTau<'_, T>) + Sync,
{
    struct Kernel<'a, T, F> {
        tau: Tau<'a, T>,
        f: F,
        out: SharedMut<T>,
        n: usize,
    }
    impl<T: Real, F> RowKernel for Kernel<'_, T, F>
    where
        F: Fn(Range<usize>, &mut [T], InvTau<'_, T>) + Sync,
    {
        type Scratch = ();
        fn scratch(&self) {}
        #[inline(always)]
        fn row(&self, c: usize, _: &mut ()) -> Result<(), KernelError> {
            let (start, len) = chunk_range(self.n, c);
            // SAFETY: each chunk of elements is visited by one thread only.
            let out = unsafe { self.out.slice(start, len) };
            let inv_tau = match self.tau {
                Tau::Scalar(_) => InvTau::Scalar(self.tau.inverse_at(0)),
                Tau::PerRow(ts) => InvTau::PerElement(&ts[start..start + len]),
            };
            (self.f)(start..start + len, out, inv_tau);
            Ok(())
        }
    }
    prefer_huge_pages(grad_x);
    let n = grad_x.len();
    let kernel = Kernel {
        tau,
        f,
        out: SharedMut::new(grad_x),
        n,
    };
    run_rows(&chunks(n), &kernel)
}

struct HardConcrete<T> {
    lo: T,
    width: T,
}

impl<T: Real> ElementOp<T> for HardConcrete<T> {
    #[inline(always)]
    fn apply(&self, x: T, l: T, inv_tau: T) -> (T, T) {
        let s = sigmoid((x + l) * inv_tau);
        let z = (s * self.width + self.lo).max(T::ZERO).min(T::ONE);
        (z, z)
    }
}

/// Hard Concrete forward: `z = clamp(lo + (hi - lo) * sigmoid((x + L) / tau), 0, 1)`.
pub fn hard_concrete_forward<T: Real>(
    x: &[T],
    tau: Tau<'_, T>,
    limits: (T, T),
    stream: Stream,
    z: &mut [T],
) -> Result<(), KernelError> {
    check_inputs(x.len(), z.len(), &tau)?;
    let (lo, hi) = limits;
    let op = HardConcrete { lo, width: hi - lo };
    run_noisy(x, tau, stream, op, z, None)
}

/// Hard Concrete backward from the output `z`: where `0 < z < 1`,
/// `g * (hi - lo) * s * (1 - s) / tau` with `s = (z - lo) / (hi - lo)`;
/// 0 where the sample was clamped.
pub fn hard_concrete_backward<T: Real>(
    g: &[T],
    z: &[T],
    tau: Tau<'_, T>,
    limits: (T, T),
    grad_x: &mut [T],
) -> Result<(), KernelError> {
    check_inputs(g.len(), grad_x.len(), &tau)?;
    check_len("z", z.len(), grad_x.len())?;
    let (lo, hi) = limits;
    let width = hi - lo;
    run_elementwise(grad_x, tau, |i, out, inv_tau| {
        let (g, z) = (&g[i.clone()], &z[i.clone()]);
        for (t, ((o, &gt), &zt)) in out.iter_mut().zip(g).zip(z).enumerate() {
            *o = if zt > T::ZERO && zt < T::ONE {
                let s = (zt - lo) / width;
                ((gt * width) * (s * (T::ONE - s))) * inv_tau.at(t)
            } else {
                T::ZERO
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::noise::noise;

    #[test]
    fn relaxed_bernoulli_matches_formula_and_hard_mode() {
        let x: Vec<f64> = (0..9000).map(|i| (i as f64 - 4500.0) / 900.0).collect();
        let stream = Stream::new(3, 3);
        let mut l = vec![0.0; x.len()];
        noise(Noise::Logistic, stream, &mut l).unwrap();
        let mut y = vec![0.0; x.len()];
        relaxed_bernoulli_forward(&x, Tau::Scalar(0.5), stream, Outputs::Soft(&mut y)).unwrap();
        let mut hard = vec![0.0; x.len()];
        let mut soft = vec![0.0; x.len()];
        let out = Outputs::OneHotWithSoft {
            one_hot: &mut hard,
            soft: &mut soft,
        };
        relaxed_bernoulli_forward(&x, Tau::Scalar(0.5), stream, out).unwrap();
        assert_eq!(soft, y);
        let mut one_hot = vec![0.0; x.len()];
        let out = Outputs::OneHot(&mut one_hot);
        relaxed_bernoulli_forward(&x, Tau::Scalar(0.5), stream, out).unwrap();
        assert_eq!(one_hot, hard);
        for i in 0..x.len() {
            let want = 1.0 / (1.0 + (-(x[i] + l[i]) / 0.5).exp());
            assert!((y[i] - want).abs() < 1e-15);
            assert_eq!(hard[i], if x[i] + l[i] > 0.0 { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn hard_concrete_hits_both_ends_and_clamped_gradients_vanish() {
        let x = vec![0.0f32; 20_000];
        let mut z = vec![0.0f32; x.len()];
        hard_concrete_forward(
            &x,
            Tau::Scalar(2.0 / 3.0),
            (-0.1, 1.1),
            Stream::new(1, 0),
            &mut z,
        )
        .unwrap();
        let zeros = z.iter().filter(|&&v| v == 0.0).count();
        let ones = z.iter().filter(|&&v| v == 1.0).count();
        // P(z == 0) = P(z == 1) = sigmoid(-tau * ln(11)) ~ 0.168 for x = 0;
        // 3000..3700 is > 5 standard deviations (sd ~ 53) each side.
        assert!((3000..3700).contains(&zeros), "{zeros}");
        assert!((3000..3700).contains(&ones), "{ones}");
        let g = vec![1.0f32; x.len()];
        let mut grad = vec![0.0f32; x.len()];
        hard_concrete_backward(&g, &z, Tau::Scalar(2.0 / 3.0), (-0.1, 1.1), &mut grad).unwrap();
        for (zi, gi) in z.iter().zip(&grad) {
            assert_eq!(*gi == 0.0, *zi == 0.0 || *zi == 1.0);
        }
    }

    #[test]
    fn nan_logits_are_reported_at_their_index() {
        let mut x = vec![0.0f32; 10_000];
        x[7777] = f32::NAN;
        x[9000] = f32::NAN;
        let mut y = vec![0.0f32; x.len()];
        let out = Outputs::Soft(&mut y);
        let e = relaxed_bernoulli_forward(&x, Tau::Scalar(1.0), Stream::new(0, 0), out);
        assert_eq!(e, Err(KernelError::NanLogit { index: 7777 }));
    }
}
