//! Running kernels on several threads.
//!
//! Kernels split their rows into ranges and run them here. Small jobs run on
//! the calling thread: below `MIN_PARALLEL_WORK` elements the cost of waking
//! other threads exceeds the work.
//!
//! Larger jobs run on one of two backends:
//! - an OpenMP runtime's `GOMP_parallel`, when the host asks for it with
//!   [`use_openmp`] and the process has loaded a libgomp (the Python package
//!   asks when torch runs on OpenMP, so our kernels run on torch's own
//!   intra-op threads: no second set of threads competes with torch's, which
//!   keep spinning for a while after each torch op);
//! - otherwise a rayon pool of our own.

use rayon::prelude::*;
use std::ffi::c_void;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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

/// `GOMP_parallel(fn, data, num_threads, flags)` of libgomp (GCC >= 4.9).
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);

static GOMP_PARALLEL: AtomicUsize = AtomicUsize::new(0);

/// The process whose threads the pools belong to (0 until the first parallel job).
static OWNER_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this is a child forked after the pools started. Their threads do
/// not exist in a forked child (a rayon pool would wait for them forever and
/// libgomp is not fork-safe), so children run kernels on the calling thread.
fn forked() -> bool {
    let pid = std::process::id();
    match OWNER_PID.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => false,
        Err(owner) => owner != pid,
    }
}

/// With `on`, runs parallel kernels from now on on the OpenMP runtime of a
/// libgomp this process has already loaded (torch's), if there is one;
/// without, on the rayon pool. Returns whether kernels now run on OpenMP.
///
/// The address called is only ever the one `dlsym` gives for
/// `GOMP_parallel` in a library named `libgomp*` that is already mapped
/// (`RTLD_NOLOAD`: nothing new is loaded); no caller can pass one in.
pub fn use_openmp(on: bool) -> bool {
    let address = if on {
        loaded_gomp_parallel().unwrap_or(0)
    } else {
        0
    };
    GOMP_PARALLEL.store(address, Ordering::Relaxed);
    address != 0
}

/// The address of `GOMP_parallel` in the first (by path) libgomp mapped into
/// this process, which then stays loaded for the rest of the process.
#[cfg(target_os = "linux")]
fn loaded_gomp_parallel() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut paths: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or("");
            path.starts_with('/') && name.starts_with("libgomp")
        })
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths.into_iter().find_map(|path| {
        let path = std::ffi::CString::new(path).ok()?;
        // SAFETY: `path` is a NUL-terminated string; with RTLD_NOLOAD, dlopen
        // only returns a handle to a library that is already loaded (it runs
        // no initialiser) or null.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return None;
        }
        // SAFETY: `handle` is a live handle from dlopen and the name is a
        // NUL-terminated string.
        let symbol = unsafe { libc::dlsym(handle, c"GOMP_parallel".as_ptr()) };
        if symbol.is_null() {
            // SAFETY: `handle` came from the dlopen above and is not used again.
            unsafe { libc::dlclose(handle) };
            return None;
        }
        // The handle is kept (never closed): its reference keeps the library,
        // and so `symbol`, loaded for as long as the process runs.
        Some(symbol as usize)
    })
}

#[cfg(not(target_os = "linux"))]
fn loaded_gomp_parallel() -> Option<usize> {
    None
}

/// Whether parallel kernels run on an OpenMP runtime.
pub fn uses_openmp() -> bool {
    GOMP_PARALLEL.load(Ordering::Relaxed) != 0
}

/// One parallel job shared by the OpenMP threads: each takes the next range
/// until none is left and writes its result into that range's slot.
struct Job<'a, R, F> {
    f: &'a F,
    ranges: &'a [Range<usize>],
    next: AtomicUsize,
    results: &'a [Mutex<Option<std::thread::Result<R>>>],
}

extern "C" fn run_job<R, F>(data: *mut c_void)
where
    F: Fn(Range<usize>) -> R + Sync,
{
    // SAFETY: `data` is the `&Job<R, F>` that `map_ranges_openmp` passed to
    // `GOMP_parallel`, which returns only after every thread has left here.
    let job = unsafe { &*(data as *const Job<'_, R, F>) };
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        let Some(range) = job.ranges.get(i) else {
            break;
        };
        // A panic must not unwind through C frames: keep it for the caller.
        let r = catch_unwind(AssertUnwindSafe(|| (job.f)(range.clone())));
        *job.results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

fn map_ranges_openmp<R, F>(gomp: usize, threads: usize, ranges: Vec<Range<usize>>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    let results: Vec<Mutex<Option<std::thread::Result<R>>>> =
        ranges.iter().map(|_| Mutex::new(None)).collect();
    let job = Job {
        f: &f,
        ranges: &ranges,
        next: AtomicUsize::new(0),
        results: &results,
    };
    // SAFETY: `use_openmp` stored `gomp` from dlsym of `GOMP_parallel` in a
    // libgomp kept loaded; `run_job` has
    // the callback signature it expects, and `job` outlives the call.
    unsafe {
        let parallel: GompParallel = std::mem::transmute::<usize, GompParallel>(gomp);
        let data = &job as *const Job<'_, R, F> as *mut c_void;
        parallel(run_job::<R, F>, data, threads as u32, 0);
    }
    results
        .into_iter()
        .map(
            |slot| match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(r)) => r,
                Some(Err(panic)) => resume_unwind(panic),
                None => unreachable!("GOMP_parallel returned before running every range"),
            },
        )
        .collect()
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
    if threads <= 1 || n < 2 || n.saturating_mul(cost) < MIN_PARALLEL_WORK || forked() {
        return vec![f(0..n)];
    }
    let chunks = n.min(threads * 4);
    let ranges: Vec<Range<usize>> = (0..chunks)
        .map(|c| (c * n / chunks)..((c + 1) * n / chunks))
        .collect();
    match GOMP_PARALLEL.load(Ordering::Relaxed) {
        0 => pool(threads).install(|| ranges.into_par_iter().map(&f).collect()),
        gomp => map_ranges_openmp(gomp, threads, ranges, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmp_is_only_a_libgomp_already_loaded() {
        // This test binary links no libgomp: asking for OpenMP finds none and
        // leaves the kernels on the rayon pool.
        let loaded =
            std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libgomp"));
        assert_eq!(use_openmp(true), loaded);
        assert_eq!(uses_openmp(), loaded);
        assert!(!use_openmp(false));
        assert!(!uses_openmp());
    }

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
