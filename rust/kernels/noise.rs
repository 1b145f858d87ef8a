//! Noise tensors: element `i` of the output is drawn from `(seed, offset, i)`.

use super::{chunk_range, chunks, run_rows, KernelError, RowKernel, SharedMut};
use crate::math::{
    exponential_from_uniform, gumbel_from_exponential, gumbel_from_uniform, logistic_from_uniform,
    GroupCache, Real,
};
use crate::memory::prefer_huge_pages;
use crate::rng::Stream;

/// Which noise a kernel draws from a uniform `v` in (0, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noise {
    /// The uniform itself (the tail variable `v`).
    Uniform,
    /// Standard Gumbel, `-ln(-ln(1 - v))`.
    Gumbel,
    /// Standard logistic, `ln((1 - v) / v)`.
    Logistic,
}

impl Noise {
    #[inline(always)]
    pub fn from_uniform<T: Real>(self, v: T) -> T {
        match self {
            Noise::Uniform => v,
            Noise::Gumbel => gumbel_from_uniform(v),
            Noise::Logistic => logistic_from_uniform(v),
        }
    }
}

/// Memory a kernel will touch after the noise it is drawing: a range of
/// bytes that [`fill_ahead`] asks the CPU to bring into its caches meanwhile.
/// Only an address and a length: nothing is read through it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ahead {
    start: *const u8,
    bytes: usize,
}

impl Ahead {
    pub(crate) fn of<T>(v: &[T]) -> Self {
        Ahead {
            start: v.as_ptr().cast(),
            bytes: std::mem::size_of_val(v),
        }
    }

    /// Elements `start .. start + len` of `v`, cut at its end.
    pub(crate) fn within<T>(v: &[T], start: usize, len: usize) -> Self {
        let start = start.min(v.len());
        Self::of(&v[start..(start + len).min(v.len())])
    }

    /// Elements `start .. start + len` of `out`, cut at its end.
    pub(crate) fn of_shared<T: Copy>(out: &SharedMut<T>, start: usize, len: usize) -> Self {
        let (ptr, len) = out.range(start, len);
        Ahead {
            start: ptr.cast(),
            bytes: len * std::mem::size_of::<T>(),
        }
    }

    /// Prefetches part `p` of `parts` equal parts of the range, in cache lines.
    #[inline(always)]
    fn prefetch_part(&self, p: usize, parts: usize) {
        let lines = self.bytes.div_ceil(LINE);
        for line in p * lines / parts..(p + 1) * lines / parts {
            super::prefetch(self.start.wrapping_add(line * LINE));
        }
    }
}

const LINE: usize = 64;

/// Elements of noise drawn between two rounds of prefetches in [`fill_ahead`].
const PIECE: usize = 128;

/// `fill_strided` of contiguous elements that also prefetches the ranges of
/// `next`, one part per `PIECE` elements drawn, so the loads of a kernel's
/// next rows overlap with this arithmetic instead of stalling the kernel
/// when it gets there. Spread over the drawing rather than all at once, so
/// the prefetched lines arrive shortly before they are used.
#[inline(always)]
pub(crate) fn fill_ahead<T: Real>(
    kind: Noise,
    stream: &Stream,
    start: u64,
    out: &mut [T],
    cache: &mut GroupCache<T>,
    next: &[Ahead],
) {
    let parts = out.len().div_ceil(PIECE);
    for (p, piece) in out.chunks_mut(PIECE).enumerate() {
        fill_strided(kind, stream, start + (p * PIECE) as u64, 1, piece, cache);
        for a in next {
            a.prefetch_part(p, parts);
        }
    }
}

/// Draws the noise of elements `base + t * stride` for `t < out.len()`;
/// `cache` keeps the last partial group of uniforms between calls (one stream).
#[inline(always)]
pub fn fill_strided<T: Real>(
    kind: Noise,
    stream: &Stream,
    base: u64,
    stride: u64,
    out: &mut [T],
    cache: &mut GroupCache<T>,
) {
    if stride == 1 {
        T::fill_uniform_cached(stream, base, out, cache);
        // A match, not a test of `kind` per element: with the kind unknown at
        // compile time, LLVM computes the logistic of every uniform and
        // selects afterwards.
        match kind {
            Noise::Uniform => {}
            Noise::Gumbel => {
                // Two passes through the halves of `gumbel_from_uniform`: one pass
                // holds a chain of two logarithms per vector, too long for the
                // out-of-order window to overlap many of them.
                for v in out.iter_mut() {
                    *v = exponential_from_uniform(*v);
                }
                for v in out.iter_mut() {
                    *v = gumbel_from_exponential(*v);
                }
            }
            Noise::Logistic => {
                for v in out.iter_mut() {
                    *v = logistic_from_uniform(*v);
                }
            }
        }
    } else {
        for (t, v) in out.iter_mut().enumerate() {
            *v = kind.from_uniform(T::uniform(stream, base + t as u64 * stride));
        }
    }
}

struct NoiseKernel<T> {
    kind: Noise,
    stream: Stream,
    /// The stream element of `out[0]`.
    first: u64,
    n: usize,
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for NoiseKernel<T> {
    type Scratch = ();
    fn scratch(&self) {}
    #[inline(always)]
    fn row(&self, c: usize, _: &mut ()) -> Result<(), KernelError> {
        let (start, len) = chunk_range(self.n, c);
        // SAFETY: each chunk of elements is visited by one thread only.
        let out = unsafe { self.out.slice(start, len) };
        let next = [Ahead::of_shared(&self.out, start + len, len)];
        fill_ahead(
            self.kind,
            &self.stream,
            self.first + start as u64,
            out,
            &mut GroupCache::new(),
            &next,
        );
        Ok(())
    }
}

/// Fills `out` with noise of the given kind: `out[i]` is element `i` of `stream`.
pub fn noise<T: Real>(kind: Noise, stream: Stream, out: &mut [T]) -> Result<(), KernelError> {
    noise_at(kind, stream, 0, out)
}

/// Fills `out` with elements `start .. start + out.len()` of the noise
/// [`noise`] draws: `out[j]` is element `start + j` of `stream`, so a long
/// draw can be made piece by piece with the same values.
pub fn noise_at<T: Real>(
    kind: Noise,
    stream: Stream,
    start: u64,
    out: &mut [T],
) -> Result<(), KernelError> {
    let n = out.len();
    prefer_huge_pages(out);
    let kernel = NoiseKernel {
        kind,
        stream,
        first: start,
        n,
        out: SharedMut::new(out),
    };
    run_rows(&chunks(n), &kernel)
}

struct PerturbKernel<'a, T> {
    kind: Noise,
    stream: Stream,
    /// The stream element of `out[0]`.
    first: u64,
    theta: &'a [T],
    sigma: T,
    n: usize,
    out: SharedMut<T>,
}

impl<T: Real> RowKernel for PerturbKernel<'_, T> {
    type Scratch = ();
    fn scratch(&self) {}
    #[inline(always)]
    fn row(&self, c: usize, _: &mut ()) -> Result<(), KernelError> {
        let (start, len) = chunk_range(self.n, c);
        // SAFETY: each chunk of elements is visited by one thread only.
        let out = unsafe { self.out.slice(start, len) };
        let (theta, sigma) = (self.theta, self.sigma);
        let mut cache = GroupCache::new();
        // The element of theta under the next output.
        let mut i = start % theta.len();
        for (p, piece) in out.chunks_mut(PIECE).enumerate() {
            fill_strided(
                self.kind,
                &self.stream,
                self.first + (start + p * PIECE) as u64,
                1,
                piece,
                &mut cache,
            );
            // Runs of the piece under contiguous elements of theta.
            let mut rest = piece;
            while !rest.is_empty() {
                let run = rest.len().min(theta.len() - i);
                let (now, later) = rest.split_at_mut(run);
                for (v, &t) in now.iter_mut().zip(&theta[i..i + run]) {
                    *v = t + *v * sigma;
                }
                i = if i + run == theta.len() { 0 } else { i + run };
                rest = later;
            }
        }
        Ok(())
    }
}

/// Fills `out`, a whole number of copies of `theta` long, with `theta`
/// perturbed by `sigma` times the noise of `stream` from element `start` on:
/// `out[j] = theta[j % theta.len()] + sigma * z_{start + j}`, `z_i` element
/// `i` of the noise [`noise`] draws (the product rounded, then the sum: the
/// values of drawing the noise, scaling it and adding theta as three
/// operations). So `start = c * theta.len()` gives copies `c ..` of a call
/// with `start = 0` for more copies, bit for bit. One pass
/// over `out`: each piece of noise is scaled and added while in the cache.
pub fn perturb<T: Real>(
    kind: Noise,
    stream: Stream,
    start: u64,
    theta: &[T],
    sigma: T,
    out: &mut [T],
) -> Result<(), KernelError> {
    let n = out.len();
    if theta.is_empty() || !n.is_multiple_of(theta.len()) {
        return Err(KernelError::Shape {
            what: "out",
            expected: theta.len() * n.div_ceil(theta.len().max(1)),
            got: n,
        });
    }
    prefer_huge_pages(out);
    let kernel = PerturbKernel {
        kind,
        stream,
        first: start,
        theta,
        sigma,
        n,
        out: SharedMut::new(out),
    };
    run_rows(&chunks(n), &kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_matches_elementwise_formula() {
        let s = Stream::new(3, 1);
        let mut out = vec![0f32; 10_007];
        noise(Noise::Gumbel, s, &mut out).unwrap();
        for (i, &g) in out.iter().enumerate() {
            assert_eq!(g, gumbel_from_uniform(f32::uniform(&s, i as u64)));
        }
        let mut strided = vec![0f32; 100];
        fill_strided(
            Noise::Gumbel,
            &s,
            5,
            7,
            &mut strided,
            &mut GroupCache::new(),
        );
        for (t, &g) in strided.iter().enumerate() {
            assert_eq!(g, out[5 + 7 * t]);
        }
    }

    #[test]
    fn perturb_adds_theta_to_the_scaled_noise_of_every_element() {
        let s = Stream::new(5, 2);
        // 3 copies of a theta whose length does not divide the pieces or chunks.
        let theta: Vec<f64> = (0..40_009).map(|i| (i % 17) as f64 - 8.5).collect();
        let mut z = vec![0f64; 3 * theta.len()];
        noise(Noise::Gumbel, s, &mut z).unwrap();
        for sigma in [1.0, 0.3] {
            let mut out = vec![0f64; z.len()];
            perturb(Noise::Gumbel, s, 0, &theta, sigma, &mut out).unwrap();
            for (j, (&o, &g)) in out.iter().zip(&z).enumerate() {
                assert_eq!(o.to_bits(), (theta[j % theta.len()] + g * sigma).to_bits());
            }
        }
        let mut out = vec![0f32; 7];
        perturb(Noise::Uniform, s, 0, &[0.5f32; 1], 2.0, &mut out).unwrap();
        for (j, &o) in out.iter().enumerate() {
            assert_eq!(o, 0.5 + f32::uniform(&s, j as u64) * 2.0);
        }
        assert_eq!(
            perturb(Noise::Gumbel, s, 0, &[0.0f32; 3], 1.0, &mut [0.0; 7]),
            Err(KernelError::Shape {
                what: "out",
                expected: 9,
                got: 7
            })
        );
    }

    /// Runs `f` at every SIMD level this CPU has and on 1 and 2 threads,
    /// then restores the defaults.
    fn at_every_level_and_thread_count(mut f: impl FnMut()) {
        use crate::isa::{detected, set_max_level, Level};
        use crate::parallel::set_num_threads;
        for level in [Level::Portable, Level::Avx2, Level::Avx512] {
            if level > detected() {
                continue;
            }
            set_max_level(level);
            for threads in [1, 2] {
                set_num_threads(threads);
                f();
            }
        }
        set_max_level(Level::Avx512);
        set_num_threads(0);
    }

    /// Starts inside and at the ends of uniform groups (64 float32 or 32
    /// float64 values), pieces and parallel chunks.
    const STARTS: [usize; 6] = [1, 31, 64, 4095, 4096 + 129, 40_000];

    fn noise_from_any_start_is_the_tail_of_a_whole_draw<T: Real>() {
        // Longer than MIN_PARALLEL_WORK after every start: two threads split it.
        let (s, n) = (Stream::new(17, 4), 80_003);
        let mut whole = vec![T::ZERO; n];
        for kind in [Noise::Uniform, Noise::Gumbel, Noise::Logistic] {
            noise(kind, s, &mut whole).unwrap();
            at_every_level_and_thread_count(|| {
                for k in STARTS {
                    let mut tail = vec![T::ZERO; n - k];
                    noise_at(kind, s, k as u64, &mut tail).unwrap();
                    assert!(tail == whole[k..], "{kind:?} start {k}");
                }
            });
        }
    }

    #[test]
    fn noise_from_any_start_is_the_tail_of_a_whole_draw_f32() {
        noise_from_any_start_is_the_tail_of_a_whole_draw::<f32>();
    }

    #[test]
    fn noise_from_any_start_is_the_tail_of_a_whole_draw_f64() {
        noise_from_any_start_is_the_tail_of_a_whole_draw::<f64>();
    }

    fn perturb_from_a_copy_gives_the_rows_of_a_whole_call<T: Real>() {
        let s = Stream::new(23, 6);
        let theta: Vec<T> = (0..10_007)
            .map(|i| T::from_f64((i % 13) as f64 * 0.7 - 4.0))
            .collect();
        let (len, copies, sigma) = (theta.len(), 9, T::from_f64(0.6));
        for kind in [Noise::Gumbel, Noise::Uniform] {
            let mut whole = vec![T::ZERO; copies * len];
            perturb(kind, s, 0, &theta, sigma, &mut whole).unwrap();
            let mut z = vec![T::ZERO; whole.len() + 5];
            noise(kind, s, &mut z).unwrap();
            at_every_level_and_thread_count(|| {
                for c in [1, 4, 8] {
                    let mut rows = vec![T::ZERO; (copies - c) * len];
                    perturb(kind, s, (c * len) as u64, &theta, sigma, &mut rows).unwrap();
                    assert!(rows == whole[c * len..], "{kind:?} copy {c}");
                }
                // A start that is not a whole copy: theta from its first
                // element, the noise from the start.
                let mut out = vec![T::ZERO; 4 * len];
                perturb(kind, s, 5, &theta, sigma, &mut out).unwrap();
                for (j, &o) in out.iter().enumerate() {
                    assert!(o == theta[j % len] + z[5 + j] * sigma, "{kind:?} at {j}");
                }
            });
        }
    }

    #[test]
    fn perturb_from_a_copy_gives_the_rows_of_a_whole_call_f32() {
        perturb_from_a_copy_gives_the_rows_of_a_whole_call::<f32>();
    }

    #[test]
    fn perturb_from_a_copy_gives_the_rows_of_a_whole_call_f64() {
        perturb_from_a_copy_gives_the_rows_of_a_whole_call::<f64>();
    }

    #[test]
    fn gumbel_noise_has_the_right_mean_and_variance() {
        // Mean = Euler's gamma, variance = pi^2 / 6. With n = 10^6 draws the
        // standard error of the mean is 1.28e-3 and of the variance 3.45e-3
        // (excess kurtosis 12/5); the bounds are > 6 standard errors
        // (false-failure rate < 1e-8).
        let mut out = vec![0f64; 1_000_000];
        noise(Noise::Gumbel, Stream::new(42, 0), &mut out).unwrap();
        let n = out.len() as f64;
        let mean = out.iter().sum::<f64>() / n;
        let var = out.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((mean - 0.577_215_664_9).abs() < 8e-3, "mean {mean}");
        assert!(
            (var - std::f64::consts::PI.powi(2) / 6.0).abs() < 2.5e-2,
            "var {var}"
        );
    }
}
