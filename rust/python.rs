//! PyO3 bindings: `gumbelrs._core`.
//!
//! Thin glue only. Every kernel takes C-contiguous NumPy views of torch
//! tensors (`tensor.numpy()` shares memory), borrows them as flat slices,
//! releases the GIL and runs. Outputs are allocated by torch and written in place.
//! Argument checking and error messages live in `gumbelrs.functional`; a
//! fault found by a kernel is raised as `_core.KernelError` carrying its kind
//! and position, which the Python layer turns into a message for the user.

use crate::kernels::{Dims, KernelError, Tau};
use crate::kernels::{OutputMode, Outputs};
use crate::math::Real;
use crate::{isa, kernels, parallel, rng, Noise, Stream};
use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::borrow::Cow;

create_exception!(
    _core,
    KernelErrorPy,
    PyValueError,
    "A fault a kernel found in its input: args are (kind, position, available, requested), \
     kind the code of a gumbelrs._protocol.FaultKind."
);

fn raise(e: KernelError) -> PyErr {
    match e.fault() {
        Some(f) => KernelErrorPy::new_err((f.kind.code(), f.position, f.available, f.requested)),
        None => PyValueError::new_err(e.to_string()),
    }
}

/// Options that cross the binding as one of a fixed set of names: each
/// converts itself from a Python `str` (or a `str` enum member), and an
/// unknown name is a `ValueError` that lists the known ones.
macro_rules! named_option {
    ($ty:ty, $what:literal, $all:expr, $name:expr) => {
        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;
            fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let given = obj.cast::<PyString>()?;
                let given: Cow<'_, str> = given.to_cow()?;
                let name: fn(&$ty) -> &'static str = $name;
                if let Some(v) = $all.iter().find(|v| name(v) == given) {
                    return Ok(*v);
                }
                let known: Vec<String> = $all.iter().map(|v| format!("{:?}", name(v))).collect();
                Err(PyValueError::new_err(format!(
                    "{} must be one of {}, got {given:?}",
                    $what,
                    known.join(", ")
                )))
            }
        }
    };
}

named_option!(OutputMode, "mode", OutputMode::ALL, |m| m.name());

/// The output buffers of `mode`: `y`, and `soft` in "one_hot_with_soft" only.
fn outputs<'a, T>(
    fname: &str,
    mode: OutputMode,
    y: &'a mut [T],
    soft: Option<&'a mut [T]>,
) -> PyResult<Outputs<'a, T>> {
    Outputs::of(mode, y, soft).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{fname}: a soft output goes with mode 'one_hot_with_soft' and no other; \
             got mode {:?}",
            mode.name()
        ))
    })
}

/// Which float type an array holds: the glue's only dispatch.
enum Float {
    F32,
    F64,
}

fn float_of(a: &Bound<'_, PyAny>) -> PyResult<Float> {
    if a.cast::<PyArrayDyn<f32>>().is_ok() {
        Ok(Float::F32)
    } else if a.cast::<PyArrayDyn<f64>>().is_ok() {
        Ok(Float::F64)
    } else {
        Err(PyTypeError::new_err(
            "gumbelrs._core kernels take C-contiguous float32 or float64 NumPy arrays",
        ))
    }
}

/// Calls `$f::<f32>` or `$f::<f64>` by the dtype of `$x`.
macro_rules! by_dtype {
    ($x:expr, $f:ident($($arg:expr),*)) => {
        match float_of($x)? {
            Float::F32 => $f::<f32>($($arg),*),
            Float::F64 => $f::<f64>($($arg),*),
        }
    };
}

type Ro<'py, T> = PyReadonlyArrayDyn<'py, T>;
type Rw<'py, T> = PyReadwriteArrayDyn<'py, T>;

fn ro<'py, T: Element>(a: &Bound<'py, PyAny>) -> PyResult<Ro<'py, T>> {
    a.extract::<Ro<'py, T>>()
}

fn rw<'py, T: Element>(a: &Bound<'py, PyAny>) -> PyResult<Rw<'py, T>> {
    a.extract::<Rw<'py, T>>()
}

fn tau_of<'a, T: Real + Element>(tau: f64, per_row: &'a Option<Ro<'_, T>>) -> PyResult<Tau<'a, T>> {
    Ok(match per_row {
        Some(t) => Tau::PerRow(t.as_slice()?),
        None => Tau::Scalar(T::from_f64(tau)),
    })
}

fn noise_t<T: Real + Element>(
    py: Python<'_>,
    kind: Noise,
    out: &Bound<'_, PyAny>,
    stream: Stream,
) -> PyResult<()> {
    let mut out = rw::<T>(out)?;
    let o = out.as_slice_mut()?;
    py.detach(|| kernels::noise::noise(kind, stream, o))
        .map_err(raise)
}

/// Fills `out` with noise of `kind` ("gumbel", "logistic" or "uniform").
#[pyfunction]
fn noise(
    py: Python<'_>,
    kind: &str,
    out: &Bound<'_, PyAny>,
    seed: u64,
    offset: u64,
) -> PyResult<()> {
    let kind = match kind {
        "gumbel" => Noise::Gumbel,
        "logistic" => Noise::Logistic,
        "uniform" => Noise::Uniform,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown noise kind {kind:?}"
            )))
        }
    };
    by_dtype!(out, noise_t(py, kind, out, Stream::new(seed, offset)))
}

#[allow(clippy::too_many_arguments)]
fn gs_forward_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: Dims,
    tau: f64,
    tau_rows: Option<&Bound<'_, PyAny>>,
    stream: Stream,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let taus = tau_rows.map(ro::<T>).transpose()?;
    let mut y = rw::<T>(y)?;
    let mut soft = soft.map(rw::<T>).transpose()?;
    let (xs, tau, ys) = (x.as_slice()?, tau_of(tau, &taus)?, y.as_slice_mut()?);
    let ss = soft.as_mut().map(|s| s.as_slice_mut()).transpose()?;
    let out = outputs("gumbel_softmax_forward", mode, ys, ss)?;
    py.detach(|| kernels::softmax::gumbel_softmax_forward(xs, dims, tau, stream, out))
        .map_err(raise)
}

/// Gumbel-Softmax forward over `x` viewed as `dims = (outer, k, inner)`:
/// what `mode` asks for into `y`, and the soft sample into `soft` in mode
/// "one_hot_with_soft".
#[pyfunction]
#[pyo3(signature = (x, dims, tau, tau_rows, seed, offset, mode, y, soft=None))]
#[allow(clippy::too_many_arguments)]
fn gumbel_softmax_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: (usize, usize, usize),
    tau: f64,
    tau_rows: Option<&Bound<'_, PyAny>>,
    seed: u64,
    offset: u64,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let dims = Dims::new(dims.0, dims.1, dims.2);
    let stream = Stream::new(seed, offset);
    by_dtype!(
        x,
        gs_forward_t(py, x, dims, tau, tau_rows, stream, mode, y, soft)
    )
}

fn gs_backward_t<T: Real + Element>(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    dims: Dims,
    tau: f64,
    tau_rows: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (g, y) = (ro::<T>(g)?, ro::<T>(y)?);
    let taus = tau_rows.map(ro::<T>).transpose()?;
    let mut out = rw::<T>(out)?;
    let (gs, ys, tau, os) = (
        g.as_slice()?,
        y.as_slice()?,
        tau_of(tau, &taus)?,
        out.as_slice_mut()?,
    );
    py.detach(|| kernels::softmax::gumbel_softmax_backward(gs, ys, dims, tau, os))
        .map_err(raise)
}

/// Gumbel-Softmax backward: `out = y * (g - sum(g * y)) / tau` along `k`.
#[pyfunction]
fn gumbel_softmax_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    dims: (usize, usize, usize),
    tau: f64,
    tau_rows: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let dims = Dims::new(dims.0, dims.1, dims.2);
    by_dtype!(g, gs_backward_t(py, g, y, dims, tau, tau_rows, out))
}

fn categorical_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let mut out = rw::<i64>(out)?;
    let (xs, os) = (x.as_slice()?, out.as_slice_mut()?);
    py.detach(|| kernels::sampling::sample_categorical(xs, dims, num_samples, stream, os))
        .map_err(raise)
}

/// `num_samples` Gumbel-max draws per row into `out` (int64, rows * num_samples).
#[pyfunction]
fn sample_categorical(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: (usize, usize, usize),
    num_samples: usize,
    seed: u64,
    offset: u64,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let dims = Dims::new(dims.0, dims.1, dims.2);
    let stream = Stream::new(seed, offset);
    by_dtype!(x, categorical_t(py, x, dims, num_samples, stream, out))
}

fn topk_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: Dims,
    k: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let mut out = rw::<i64>(out)?;
    let (xs, os) = (x.as_slice()?, out.as_slice_mut()?);
    py.detach(|| kernels::sampling::gumbel_topk(xs, dims, k, stream, os))
        .map_err(raise)
}

/// Gumbel-top-k indices into `out` (int64, laid out as `(outer, k, inner)`).
#[pyfunction]
fn gumbel_topk(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: (usize, usize, usize),
    k: usize,
    seed: u64,
    offset: u64,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let dims = Dims::new(dims.0, dims.1, dims.2);
    let stream = Stream::new(seed, offset);
    by_dtype!(x, topk_t(py, x, dims, k, stream, out))
}

#[allow(clippy::too_many_arguments)]
fn given_argmax_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: Dims,
    index: &Bound<'_, PyAny>,
    num_samples: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let index = ro::<i64>(index)?;
    let mut out = rw::<T>(out)?;
    let (xs, is, os) = (x.as_slice()?, index.as_slice()?, out.as_slice_mut()?);
    py.detach(|| kernels::sampling::gumbel_given_argmax(xs, dims, is, num_samples, stream, os))
        .map_err(raise)
}

/// Gumbel-perturbed logits conditioned on their argmax (`index`, one per row).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn gumbel_given_argmax(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    dims: (usize, usize, usize),
    index: &Bound<'_, PyAny>,
    num_samples: usize,
    seed: u64,
    offset: u64,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let dims = Dims::new(dims.0, dims.1, dims.2);
    let stream = Stream::new(seed, offset);
    by_dtype!(
        x,
        given_argmax_t(py, x, dims, index, num_samples, stream, out)
    )
}

#[allow(clippy::too_many_arguments)]
fn rb_forward_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    stream: Stream,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let taus = tau_elems.map(ro::<T>).transpose()?;
    let mut y = rw::<T>(y)?;
    let mut soft = soft.map(rw::<T>).transpose()?;
    let (xs, tau, ys) = (x.as_slice()?, tau_of(tau, &taus)?, y.as_slice_mut()?);
    let ss = soft.as_mut().map(|s| s.as_slice_mut()).transpose()?;
    let out = outputs("relaxed_bernoulli_forward", mode, ys, ss)?;
    py.detach(|| kernels::bernoulli::relaxed_bernoulli_forward(xs, tau, stream, out))
        .map_err(raise)
}

/// Relaxed Bernoulli forward: what `mode` asks for into `y`, and the soft
/// sample into `soft` in mode "one_hot_with_soft".
#[pyfunction]
#[pyo3(signature = (x, tau, tau_elems, seed, offset, mode, y, soft=None))]
#[allow(clippy::too_many_arguments)]
fn relaxed_bernoulli_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    seed: u64,
    offset: u64,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let stream = Stream::new(seed, offset);
    by_dtype!(
        x,
        rb_forward_t(py, x, tau, tau_elems, stream, mode, y, soft)
    )
}

fn rb_backward_t<T: Real + Element>(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (g, y) = (ro::<T>(g)?, ro::<T>(y)?);
    let taus = tau_elems.map(ro::<T>).transpose()?;
    let mut out = rw::<T>(out)?;
    let (gs, ys, tau, os) = (
        g.as_slice()?,
        y.as_slice()?,
        tau_of(tau, &taus)?,
        out.as_slice_mut()?,
    );
    py.detach(|| kernels::bernoulli::relaxed_bernoulli_backward(gs, ys, tau, os))
        .map_err(raise)
}

/// Relaxed Bernoulli backward: `out = g * y * (1 - y) / tau`.
#[pyfunction]
fn relaxed_bernoulli_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    by_dtype!(g, rb_backward_t(py, g, y, tau, tau_elems, out))
}

#[allow(clippy::too_many_arguments)]
fn hc_forward_t<T: Real + Element>(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    limits: (f64, f64),
    stream: Stream,
    z: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = ro::<T>(x)?;
    let taus = tau_elems.map(ro::<T>).transpose()?;
    let mut z = rw::<T>(z)?;
    let limits = (T::from_f64(limits.0), T::from_f64(limits.1));
    let (xs, tau, zs) = (x.as_slice()?, tau_of(tau, &taus)?, z.as_slice_mut()?);
    py.detach(|| kernels::bernoulli::hard_concrete_forward(xs, tau, limits, stream, zs))
        .map_err(raise)
}

/// Hard Concrete forward.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn hard_concrete_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    limits: (f64, f64),
    seed: u64,
    offset: u64,
    z: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let stream = Stream::new(seed, offset);
    by_dtype!(x, hc_forward_t(py, x, tau, tau_elems, limits, stream, z))
}

#[allow(clippy::too_many_arguments)]
fn hc_backward_t<T: Real + Element>(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    z: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    limits: (f64, f64),
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (g, z) = (ro::<T>(g)?, ro::<T>(z)?);
    let taus = tau_elems.map(ro::<T>).transpose()?;
    let mut out = rw::<T>(out)?;
    let limits = (T::from_f64(limits.0), T::from_f64(limits.1));
    let (gs, zs, tau, os) = (
        g.as_slice()?,
        z.as_slice()?,
        tau_of(tau, &taus)?,
        out.as_slice_mut()?,
    );
    py.detach(|| kernels::bernoulli::hard_concrete_backward(gs, zs, tau, limits, os))
        .map_err(raise)
}

/// Hard Concrete backward from the output `z`.
#[pyfunction]
fn hard_concrete_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    z: &Bound<'_, PyAny>,
    tau: f64,
    tau_elems: Option<&Bound<'_, PyAny>>,
    limits: (f64, f64),
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    by_dtype!(g, hc_backward_t(py, g, z, tau, tau_elems, limits, out))
}

fn math_t<T: Real + Element>(
    name: &str,
    x: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let f: fn(T) -> T = match name {
        "exp" => T::exp,
        "ln" => T::ln,
        "ln1p" => T::ln_1p,
        _ => {
            return Err(PyValueError::new_err(format!(
                "math: name must be 'exp', 'ln' or 'ln1p', got {name:?}"
            )))
        }
    };
    let x = ro::<T>(x)?;
    let mut out = rw::<T>(out)?;
    for (o, &v) in out.as_slice_mut()?.iter_mut().zip(x.as_slice()?) {
        *o = f(v);
    }
    Ok(())
}

/// `out = f(x)` for the kernels' own `exp`, `ln` or `ln1p` (for parity tests).
#[pyfunction]
fn math(name: &str, x: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
    by_dtype!(x, math_t(name, x, out))
}

/// Philox4x32-10 of one counter block under one key.
#[pyfunction]
fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    rng::philox4x32_10(ctr, key)
}

/// Seeds of `n` generators forked from a generator at `(seed, offset)`.
#[pyfunction]
fn fork_seeds(seed: u64, offset: u64, n: u64) -> Vec<u64> {
    (0..n).map(|c| rng::fork_seed(seed, offset, c)).collect()
}

/// Sets the number of kernel threads (0 restores the default).
#[pyfunction]
fn set_num_threads(n: usize) {
    parallel::set_num_threads(n);
}

/// With `on`, runs parallel kernels on the libgomp this process has loaded
/// (torch's), if any; without, on our own rayon pool. Returns whether kernels
/// now run on OpenMP.
#[pyfunction]
fn use_openmp(on: bool) -> bool {
    parallel::use_openmp(on)
}

/// Whether parallel kernels run on an OpenMP runtime.
#[pyfunction]
fn uses_openmp() -> bool {
    parallel::uses_openmp()
}

/// The number of kernel threads.
#[pyfunction]
fn get_num_threads() -> usize {
    parallel::get_num_threads()
}

fn level_name(l: isa::Level) -> &'static str {
    match l {
        isa::Level::Portable => "portable",
        isa::Level::Avx2 => "avx2",
        isa::Level::Avx512 => "avx512",
    }
}

/// The instruction-set level kernels run at ("portable", "avx2" or "avx512").
#[pyfunction]
fn simd_level() -> &'static str {
    level_name(isa::level())
}

/// The best level this CPU supports.
#[pyfunction]
fn simd_detected() -> &'static str {
    level_name(isa::detected())
}

/// Caps the level kernels use; results are bitwise the same at every level.
#[pyfunction]
fn set_max_simd_level(name: &str) -> PyResult<()> {
    let cap = match name {
        "portable" => isa::Level::Portable,
        "avx2" => isa::Level::Avx2,
        "avx512" => isa::Level::Avx512,
        _ => {
            return Err(PyValueError::new_err(format!(
                "SIMD level must be 'portable', 'avx2' or 'avx512', got {name:?}"
            )))
        }
    };
    isa::set_max_level(cap);
    Ok(())
}

/// Address of the first element of a float or int64 array, as the kernels see it.
#[pyfunction]
fn data_ptr(a: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(a) = a.cast::<PyArrayDyn<i64>>() {
        return Ok(a.readonly().as_slice()?.as_ptr() as usize);
    }
    Ok(match float_of(a)? {
        Float::F32 => ro::<f32>(a)?.as_slice()?.as_ptr() as usize,
        Float::F64 => ro::<f64>(a)?.as_slice()?.as_ptr() as usize,
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KernelError", m.py().get_type::<KernelErrorPy>())?;
    m.add_function(wrap_pyfunction!(noise, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_softmax_forward, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_softmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(sample_categorical, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_topk, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_given_argmax, m)?)?;
    m.add_function(wrap_pyfunction!(relaxed_bernoulli_forward, m)?)?;
    m.add_function(wrap_pyfunction!(relaxed_bernoulli_backward, m)?)?;
    m.add_function(wrap_pyfunction!(hard_concrete_forward, m)?)?;
    m.add_function(wrap_pyfunction!(hard_concrete_backward, m)?)?;
    m.add_function(wrap_pyfunction!(philox4x32_10, m)?)?;
    m.add_function(wrap_pyfunction!(math, m)?)?;
    m.add_function(wrap_pyfunction!(fork_seeds, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(use_openmp, m)?)?;
    m.add_function(wrap_pyfunction!(uses_openmp, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(data_ptr, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_detected, m)?)?;
    m.add_function(wrap_pyfunction!(set_max_simd_level, m)?)?;
    Ok(())
}
