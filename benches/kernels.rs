//! Criterion benches of the core kernels, reported in elements per second.
//! Run with `cargo bench` (or `make bench`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gumbelrs::{
    gumbel_softmax_backward, gumbel_softmax_forward, gumbel_topk, noise, relaxed_bernoulli_forward,
    sample_categorical, Dims, Noise, Outputs, Stream, Tau,
};
use std::hint::black_box;

const SHAPES: [(usize, usize); 5] = [
    (4096, 10),
    (65536, 16),
    (512, 1000),
    (4096, 1024),
    (8, 50_257),
];

fn logits(n: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; n];
    noise(Noise::Gumbel, Stream::new(1, 1), &mut x).unwrap();
    x
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32");
    for (rows, k) in SHAPES {
        let dims = Dims::new(rows, k, 1);
        let n = dims.len();
        let x = logits(n);
        let mut y = vec![0.0f32; n];
        let mut soft = vec![0.0f32; n];
        let mut idx = vec![0i64; rows];
        let id = format!("{rows}x{k}");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("uniform_noise", &id), |b| {
            b.iter(|| noise(Noise::Uniform, Stream::new(0, 0), black_box(&mut y)).unwrap())
        });
        group.bench_function(BenchmarkId::new("gumbel_noise", &id), |b| {
            b.iter(|| noise(Noise::Gumbel, Stream::new(0, 0), black_box(&mut y)).unwrap())
        });
        group.bench_function(BenchmarkId::new("gumbel_softmax", &id), |b| {
            b.iter(|| {
                let out = Outputs::Soft(&mut y);
                gumbel_softmax_forward(&x, dims, Tau::Scalar(0.5), Stream::new(0, 0), out).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("gumbel_softmax_hard", &id), |b| {
            b.iter(|| {
                let out = Outputs::OneHotWithSoft {
                    one_hot: &mut y,
                    soft: &mut soft,
                };
                gumbel_softmax_forward(&x, dims, Tau::Scalar(0.5), Stream::new(0, 0), out).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("gumbel_softmax_backward", &id), |b| {
            b.iter(|| gumbel_softmax_backward(&x, &soft, dims, Tau::Scalar(0.5), &mut y).unwrap())
        });
        group.bench_function(BenchmarkId::new("sample_categorical", &id), |b| {
            b.iter(|| sample_categorical(&x, dims, 1, Stream::new(0, 0), &mut idx).unwrap())
        });
        let mut top = vec![0i64; rows * 5];
        group.bench_function(BenchmarkId::new("gumbel_topk5", &id), |b| {
            b.iter(|| gumbel_topk(&x, dims, 5, Stream::new(0, 0), &mut top).unwrap())
        });
        group.bench_function(BenchmarkId::new("relaxed_bernoulli", &id), |b| {
            b.iter(|| {
                let out = Outputs::Soft(&mut y);
                relaxed_bernoulli_forward(&x, Tau::Scalar(0.5), Stream::new(0, 0), out).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
