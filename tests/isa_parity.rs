//! The AVX2+FMA and AVX-512 builds of every kernel give bitwise the same
//! results as the portable build, on shapes with strided rows and odd sizes.

use gumbelrs::isa::{detected, set_max_level, Level};
use gumbelrs::*;
use std::io::Write;
use std::sync::Mutex;

/// The level is process-wide: tests that change it take turns.
static LEVEL: Mutex<()> = Mutex::new(());

fn inputs<T: Real>(n: usize, seed: u64) -> Vec<T> {
    let mut x = vec![T::ZERO; n];
    noise(Noise::Gumbel, Stream::new(seed, 0), &mut x).unwrap();
    x
}

/// The SIMD levels this CPU can compare with the portable build. Says on
/// stderr, past the test harness's capture (so `cargo test` shows it), which
/// levels `test` compares and which it skips: on a CPU without AVX2 it
/// compares nothing, and must not pass silently.
fn levels_to_compare(test: &str) -> Vec<Level> {
    let (cpu, all) = (detected(), [Level::Avx2, Level::Avx512]);
    let (run, skip): (Vec<Level>, Vec<Level>) = all.into_iter().partition(|&l| l <= cpu);
    let mut err = std::io::stderr().lock();
    if run.is_empty() {
        let _ = writeln!(
            err,
            "{test}: SKIPPED, this CPU has no AVX2+FMA: nothing to compare"
        );
    } else if !skip.is_empty() {
        let _ = writeln!(
            err,
            "{test}: portable vs {run:?}; {skip:?} SKIPPED (not on this CPU)"
        );
    }
    run
}

#[derive(PartialEq, Debug)]
struct Results<T> {
    floats: Vec<Vec<T>>,
    indices: Vec<Vec<i64>>,
}

fn run_all<T: SortKey>(dims: Dims) -> Results<T> {
    let n = dims.len();
    let x: Vec<T> = inputs(n, dims.k as u64);
    let taus: Vec<T> = (0..dims.rows())
        .map(|r| T::from_f64(0.1 + r as f64 * 0.37))
        .collect();
    let stream = Stream::new(99, 3);
    let mut floats = Vec::new();
    let mut indices = Vec::new();
    for kind in [Noise::Uniform, Noise::Gumbel, Noise::Logistic] {
        let mut out = vec![T::ZERO; n];
        noise(kind, stream, &mut out).unwrap();
        floats.push(out);
    }
    let mut y = vec![T::ZERO; n];
    let mut soft = vec![T::ZERO; n];
    let out = Outputs::OneHotWithSoft {
        one_hot: &mut y,
        soft: &mut soft,
    };
    gumbel_softmax_forward(&x, dims, Tau::PerRow(&taus), stream, out).unwrap();
    let mut grad = vec![T::ZERO; n];
    gumbel_softmax_backward(&x, &soft, dims, Tau::Scalar(T::from_f64(0.3)), &mut grad).unwrap();
    let mut hard = vec![T::ZERO; n];
    let out = Outputs::OneHot(&mut hard);
    gumbel_softmax_forward(&x, dims, Tau::Scalar(T::ONE), stream, out).unwrap();
    floats.extend([y, soft, grad, hard]);
    let mut rb = vec![T::ZERO; n];
    let out = Outputs::Soft(&mut rb);
    relaxed_bernoulli_forward(&x, Tau::Scalar(T::from_f64(0.4)), stream, out).unwrap();
    let mut hc = vec![T::ZERO; n];
    let limits = (T::from_f64(-0.1), T::from_f64(1.1));
    hard_concrete_forward(&x, Tau::Scalar(T::from_f64(0.6)), limits, stream, &mut hc).unwrap();
    // Elementwise backward passes, with per-element and scalar temperatures.
    let taus_el: Vec<T> = (0..n)
        .map(|i| T::from_f64(0.2 + (i % 7) as f64 * 0.4))
        .collect();
    let mut rb_grad = vec![T::ZERO; n];
    relaxed_bernoulli_backward(&x, &rb, Tau::PerRow(&taus_el), &mut rb_grad).unwrap();
    let mut hc_grad = vec![T::ZERO; n];
    hard_concrete_backward(&x, &hc, Tau::Scalar(T::from_f64(0.6)), limits, &mut hc_grad).unwrap();
    floats.extend([rb, hc, rb_grad, hc_grad]);
    let mut draws = vec![0i64; dims.rows() * 3];
    sample_categorical(&x, dims, 3, stream, &mut draws).unwrap();
    let top_k = dims.k.min(4);
    let mut top = vec![0i64; dims.outer * top_k * dims.inner];
    gumbel_topk(&x, dims, top_k, stream, &mut top).unwrap();
    // Every category: the order of the radix sort.
    let mut all = vec![0i64; dims.len()];
    gumbel_topk(&x, dims, dims.k, stream, &mut all).unwrap();
    indices.extend([draws, top, all]);
    let index: Vec<i64> = (0..dims.rows()).map(|r| (r % dims.k) as i64).collect();
    let mut given = vec![T::ZERO; 2 * n];
    gumbel_given_argmax(&x, dims, &index, 2, stream, &mut given).unwrap();
    floats.push(given);
    Results { floats, indices }
}

#[test]
fn fma_and_portable_builds_agree_bitwise() {
    // Fixed shapes, then random ones (drawn from our own stream).
    let draw = Stream::new(2026, 11);
    let random = (0..12u64).map(|i| {
        let w = draw.block(i);
        Dims::new(
            1 + (w[0] % 40) as usize,
            1 + (w[1] % 300) as usize,
            1 + (w[2] % 4) as usize,
        )
    });
    let shapes = [
        Dims::new(3, 17, 1),
        Dims::new(2, 33, 5),
        Dims::new(1, 1000, 1),
        Dims::new(40, 1001, 1),
        Dims::new(7, 9, 130),
        Dims::new(1301, 10, 1),
    ]
    .into_iter()
    .chain(random);
    let levels = levels_to_compare("fma_and_portable_builds_agree_bitwise");
    if levels.is_empty() {
        return;
    }
    let _turn = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    for dims in shapes {
        set_max_level(Level::Portable);
        let portable32 = run_all::<f32>(dims);
        let portable64 = run_all::<f64>(dims);
        for &level in &levels {
            set_max_level(level);
            assert_eq!(portable32, run_all::<f32>(dims), "{dims:?} at {level:?}");
            assert_eq!(portable64, run_all::<f64>(dims), "{dims:?} at {level:?}");
        }
    }
    set_max_level(Level::Avx512);
}

/// Gumbel-Softmax forward, categorical draws and top-k of short contiguous rows
/// (the one-register path for float32 on AVX-512): masked logits, ties,
/// per-row temperatures, rows spread over several noise batches.
#[test]
fn short_rows_agree_bitwise() {
    fn forward<T: SortKey>(x: &[T], dims: Dims, taus: &[T]) -> Vec<Vec<T>> {
        let n = dims.len();
        let stream = Stream::new(7, 21);
        let (mut soft, mut hard, mut soft2, mut hard_only) = (
            vec![T::ZERO; n],
            vec![T::ZERO; n],
            vec![T::ZERO; n],
            vec![T::ZERO; n],
        );
        let out = Outputs::Soft(&mut soft);
        gumbel_softmax_forward(x, dims, Tau::PerRow(taus), stream, out).unwrap();
        let half = Tau::Scalar(T::from_f64(0.5));
        let out = Outputs::OneHotWithSoft {
            one_hot: &mut hard,
            soft: &mut soft2,
        };
        gumbel_softmax_forward(x, dims, half, stream, out).unwrap();
        gumbel_softmax_forward(x, dims, half, stream, Outputs::OneHot(&mut hard_only)).unwrap();
        let mut draws = vec![0i64; 2 * dims.rows()];
        sample_categorical(x, dims, 2, stream, &mut draws).unwrap();
        let top_k = dims.k.saturating_sub(1).clamp(1, 8);
        let mut top = vec![0i64; top_k * dims.rows()];
        gumbel_topk(x, dims, top_k, stream, &mut top).unwrap();
        let as_t = |v: Vec<i64>| v.iter().map(|&d| T::from_f64(d as f64)).collect();
        vec![soft, hard, soft2, hard_only, as_t(draws), as_t(top)]
    }
    fn run<T: SortKey>(k: usize) -> Vec<Vec<T>> {
        let dims = Dims::new(5000 / k + 3, k, 1);
        let mut x: Vec<T> = inputs(dims.len(), 40 + k as u64);
        for (i, v) in x.iter_mut().enumerate() {
            let (r, t) = (i / k, i % k);
            if k > 1 && t == r % k && r % 3 == 0 {
                *v = T::NEG_INFINITY; // one masked category in every third row
            } else if r % 5 == 1 {
                *v = T::from_f64(1e30); // rows where every category ties
            }
        }
        let taus: Vec<T> = (0..dims.rows())
            .map(|r| T::from_f64(0.05 + (r % 9) as f64 * 0.6))
            .collect();
        forward(&x, dims, &taus)
    }
    let Some(&best) = levels_to_compare("short_rows_agree_bitwise").last() else {
        return;
    };
    let _turn = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    for k in 1..=18 {
        set_max_level(Level::Portable);
        let (p32, p64) = (run::<f32>(k), run::<f64>(k));
        set_max_level(best);
        assert!(p32 == run::<f32>(k), "float32, k = {k}, {best:?}");
        assert!(p64 == run::<f64>(k), "float64, k = {k}, {best:?}");
    }
    set_max_level(Level::Avx512);
}

/// Gumbel-Sinkhorn forward (samples, perturbed weights, iteration counts with
/// a tolerance) and backward, with a forbidden pair, at odd sizes.
#[test]
fn sinkhorn_agrees_bitwise() {
    fn run<T: Real>(n: usize) -> (Vec<T>, Vec<T>, Vec<u32>, Vec<T>) {
        let shape = Square::new(3, 2, n);
        let mut x: Vec<T> = inputs(shape.input_len(), n as u64);
        x[n.min(2)] = T::NEG_INFINITY;
        let params = Sinkhorn {
            tau: T::from_f64(0.4),
            noise_scale: T::from_f64(0.8),
            n_iters: 9,
            tol: Some(T::from_f64(1e-3)),
        };
        let stream = Stream::new(5, 8);
        let (mut soft, mut perturbed) = (
            vec![T::ZERO; shape.output_len()],
            vec![T::ZERO; shape.output_len()],
        );
        let mut iters = vec![0u32; shape.matrices()];
        let out = SinkhornOutputs {
            soft: Some(&mut soft),
            perturbed: Some(&mut perturbed),
            iters: Some(&mut iters),
        };
        gumbel_sinkhorn_forward(&x, shape, params, stream, out).unwrap();
        let grad: Vec<T> = inputs(shape.output_len(), 77);
        let mut gx = vec![T::ZERO; shape.input_len()];
        gumbel_sinkhorn_backward(&x, shape, params, stream, &iters, &grad, &mut gx).unwrap();
        (soft, perturbed, iters, gx)
    }
    let levels = levels_to_compare("sinkhorn_agrees_bitwise");
    if levels.is_empty() {
        return;
    }
    let _turn = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    for n in [1, 3, 17, 40] {
        set_max_level(Level::Portable);
        let (p32, p64) = (run::<f32>(n), run::<f64>(n));
        for &level in &levels {
            set_max_level(level);
            assert!(p32 == run::<f32>(n), "float32, n = {n}, {level:?}");
            assert!(p64 == run::<f64>(n), "float64, n = {n}, {level:?}");
        }
    }
    set_max_level(Level::Avx512);
}
