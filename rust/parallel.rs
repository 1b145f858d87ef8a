//! The library's own thread pool.
//!
//! Kernels split their rows into ranges and run them here. Small jobs run on
//! the calling thread: below `MIN_PARALLEL_WORK` elements the cost of waking
//! other threads exceeds the work. The pool is separate from torch's intra-op
//! pool; torch's threads are idle while one of our kernels runs, so using the
//! same number of threads does not oversubscribe the machine.

use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Elements below which a kernel runs on the calling thread.
pub const MIN_PARALLEL_WORK: usize = 1 << 15;

static THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Sets the number of threads kernels use; 0 restores the default.
pub fn set_num_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The number of threads kernels use; by default, the available parallelism.
pub fn get_num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// The available parallelism, read once (the query reads cgroup files and
/// costs tens of microseconds, more than a small kernel).
fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some((n, p)) if *n == threads => Arc::clone(p),
        _ => {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("gumbelrs-{i}"))
                    .build()
                    .expect("failed to start the gumbelrs thread pool"),
            );
            *guard = Some((threads, Arc::clone(&p)));
            p
        }
    }
}

/// Splits `0..n` into ranges, runs `f` on each (in parallel when the job is
/// large enough) and returns the results in range order. `cost` is the number
/// of elements one unit of `n` stands for.
pub fn map_ranges<R, F>(n: usize, cost: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    let threads = get_num_threads();
    if n == 0 {
        return Vec::new();
    }
    if threads <= 1 || n < 2 || n.saturating_mul(cost) < MIN_PARALLEL_WORK {
        return vec![f(0..n)];
    }
    let chunks = n.min(threads * 4);
    let ranges: Vec<Range<usize>> = (0..chunks)
        .map(|c| (c * n / chunks)..((c + 1) * n / chunks))
        .collect();
    pool(threads).install(|| ranges.into_par_iter().map(&f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once_in_order() {
        for n in [1usize, 7, 100, 1 << 16] {
            let parts = map_ranges(n, 1 << 10, |r| r);
            let mut next = 0;
            for r in parts {
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, n);
        }
    }
}
