//! PyO3 bindings: `gumbelrs._core`.
//!
//! Thin glue only. Every kernel takes C-contiguous NumPy views of torch
//! tensors (`tensor.numpy()` shares memory), borrows them as flat slices,
//! releases the GIL and runs. Outputs are allocated by torch and written in place.
//! Arguments convert themselves: a temperature (`TauArg`), the random
//! stream (`Stream`, from `(seed, offset)`), the view (`Dims`) and every
//! named option (`Named`). Argument checking and error messages live in
//! `gumbelrs.functional`; a fault found by a kernel is raised as
//! `_core.KernelError` carrying its kind and position, which the Python
//! layer turns into a message for the user.

use crate::isa::Level;
use crate::kernels::{Dims, KernelError, OutputMode, Outputs, Tau};
use crate::math::Real;
use crate::structured::sinkhorn::{self, Sinkhorn, SinkhornOutputs, Square};
use crate::{isa, kernels, parallel, rng, structured, Noise, Stream};
use numpy::{
    Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{ffi, Borrowed};
use std::ffi::CStr;

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

/// Runs a kernel without the GIL; its fault as a Python exception.
fn run(py: Python<'_>, kernel: impl Ungil + FnOnce() -> Result<(), KernelError>) -> PyResult<()> {
    py.detach(kernel).map_err(raise)
}

// ---------------------------------------------------------------- options

/// An option that crosses the binding as one of a fixed set of names
/// (`Literal` types in `_core.pyi`).
trait Named: Copy + PartialEq + 'static {
    /// What the option is, for the error message.
    const WHAT: &'static str;
    /// Each value and its name (ASCII).
    const NAMES: &'static [(Self, &'static CStr)];

    fn name(self) -> &'static str {
        let (_, name) = Self::NAMES.iter().find(|(v, _)| *v == self).unwrap();
        name.to_str().expect("ASCII")
    }

    /// The option called by the Python `str` (or `str` enum member) `obj`;
    /// an unknown name is a `ValueError` that lists the known ones.
    fn from_py(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let given = obj.cast::<PyString>()?;
        for &(v, name) in Self::NAMES {
            // SAFETY: `given` is a `str` (checked above) that we hold a
            // reference to, with the GIL (`Borrowed` proves it); `name` is a
            // NUL-terminated ASCII string. Compared in place: no UTF-8 copy
            // of `given` is made, as `to_cow` makes under the abi3-py39 API.
            if unsafe { ffi::PyUnicode_CompareWithASCIIString(given.as_ptr(), name.as_ptr()) } == 0
            {
                return Ok(v);
            }
        }
        let given = given.to_cow()?;
        let known: Vec<String> = Self::NAMES
            .iter()
            .map(|&(v, _)| format!("{:?}", v.name()))
            .collect();
        Err(PyValueError::new_err(format!(
            "{} must be one of {}, got {given:?}",
            Self::WHAT,
            known.join(", ")
        )))
    }
}

/// Implements `Named` and its conversion from Python for `$ty`.
macro_rules! named_option {
    ($ty:ty, $what:literal, [$($v:expr => $n:expr),+ $(,)?]) => {
        impl Named for $ty {
            const WHAT: &'static str = $what;
            const NAMES: &'static [(Self, &'static CStr)] = &[$(($v, $n)),+];
        }
        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;
            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                Self::from_py(obj)
            }
        }
    };
}

named_option!(OutputMode, "mode", [
    OutputMode::Soft => c"soft",
    OutputMode::OneHot => c"one_hot",
    OutputMode::OneHotWithSoft => c"one_hot_with_soft",
]);
named_option!(Noise, "kind", [
    Noise::Gumbel => c"gumbel",
    Noise::Logistic => c"logistic",
    Noise::Uniform => c"uniform",
]);
named_option!(Level, "SIMD level", [
    Level::Portable => c"portable",
    Level::Avx2 => c"avx2",
    Level::Avx512 => c"avx512",
]);

/// The kernels' own elementary functions, for parity tests.
#[derive(Clone, Copy, PartialEq)]
enum MathFn {
    Exp,
    Ln,
    Ln1p,
}

named_option!(MathFn, "math: name", [MathFn::Exp => c"exp", MathFn::Ln => c"ln", MathFn::Ln1p => c"ln1p"]);

impl MathFn {
    fn of<T: Real>(self) -> fn(T) -> T {
        match self {
            MathFn::Exp => T::exp,
            MathFn::Ln => T::ln,
            MathFn::Ln1p => T::ln_1p,
        }
    }
}

/// `(outer, k, inner)`.
impl<'a, 'py> FromPyObject<'a, 'py> for Dims {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (outer, k, inner) = obj.extract()?;
        Ok(Dims::new(outer, k, inner))
    }
}

/// `(seed, offset)`.
impl<'a, 'py> FromPyObject<'a, 'py> for Stream {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (seed, offset) = obj.extract()?;
        Ok(Stream::new(seed, offset))
    }
}

/// `(batch, samples, n)`.
impl<'a, 'py> FromPyObject<'a, 'py> for Square {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (batch, samples, n) = obj.extract()?;
        Ok(Square::new(batch, samples, n))
    }
}

/// `(tau, noise_scale, n_iters, tol)`, floats read as float64; `of` gives
/// them in the kernel's type.
impl<'a, 'py> FromPyObject<'a, 'py> for Sinkhorn<f64> {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (tau, noise_scale, n_iters, tol) = obj.extract()?;
        Ok(Sinkhorn {
            tau,
            noise_scale,
            n_iters,
            tol,
        })
    }
}

fn of<T: Real>(p: &Sinkhorn<f64>) -> Sinkhorn<T> {
    Sinkhorn {
        tau: T::from_f64(p.tau),
        noise_scale: T::from_f64(p.noise_scale),
        n_iters: p.n_iters,
        tol: p.tol.map(T::from_f64),
    }
}

/// A temperature: one float for every row (element), or an array of the
/// kernel's float type with one per row (element).
enum TauArg<'py> {
    Scalar(f64),
    Each(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for TauArg<'py> {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // An array first: NumPy converts one of a single element to a float.
        if obj.cast::<PyUntypedArray>().is_ok() {
            return Ok(TauArg::Each(obj.to_owned()));
        }
        Ok(TauArg::Scalar(obj.extract::<f64>()?))
    }
}

/// A `TauArg` read as `T`; `get` lends it to a kernel.
enum TauOf<'py, T: Element> {
    Scalar(T),
    Each(Ro<'py, T>),
}

impl<'py> TauArg<'py> {
    fn of<T: Real + Element>(&self) -> PyResult<TauOf<'py, T>> {
        Ok(match self {
            TauArg::Scalar(v) => TauOf::Scalar(T::from_f64(*v)),
            TauArg::Each(a) => TauOf::Each(ro::<T>(a)?),
        })
    }
}

impl<T: Real + Element> TauOf<'_, T> {
    fn get(&self) -> PyResult<Tau<'_, T>> {
        Ok(match self {
            TauOf::Scalar(t) => Tau::Scalar(*t),
            TauOf::Each(a) => Tau::PerRow(a.as_slice()?),
        })
    }
}

/// The output buffers of `mode`: `y`, and `soft` in "one_hot_with_soft" only.
fn outputs<'a, T: Element>(
    fname: &str,
    mode: OutputMode,
    y: &'a mut Rw<'_, T>,
    soft: &'a mut Option<Rw<'_, T>>,
) -> PyResult<Outputs<'a, T>> {
    let soft = soft.as_mut().map(|s| s.as_slice_mut()).transpose()?;
    Outputs::of(mode, y.as_slice_mut()?, soft).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{fname}: a soft output goes with mode 'one_hot_with_soft' and no other; \
             got mode {:?}",
            mode.name()
        ))
    })
}

// ---------------------------------------------------------------- arrays

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

/// Runs `$body` with the type `$T` set to the float type of the array `$x`
/// (`f32` or `f64`); every other array must then be of that type.
macro_rules! with_float {
    ($x:expr, |$T:ident| $body:block) => {
        match float_of($x)? {
            Float::F32 => {
                type $T = f32;
                $body
            }
            Float::F64 => {
                type $T = f64;
                $body
            }
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

// ---------------------------------------------------------------- kernels

/// Fills `out` with noise of `kind`: `out[j]` is element `start + j` of
/// the stream.
#[pyfunction]
#[pyo3(signature = (kind, out, stream, start=0))]
fn noise(kind: Noise, out: &Bound<'_, PyAny>, stream: Stream, start: u64) -> PyResult<()> {
    with_float!(out, |T| {
        let py = out.py();
        let mut out = rw::<T>(out)?;
        let o = out.as_slice_mut()?;
        run(py, || kernels::noise::noise_at(kind, stream, start, o))
    })
}

/// Fills `out` (a whole number of copies of `theta`) with `theta` plus
/// `sigma` times the noise of `kind` from stream element `start` on:
/// `out[j] = theta[j % len] + sigma z_{start + j}`.
#[pyfunction]
#[pyo3(signature = (kind, theta, sigma, out, stream, start=0))]
fn perturb(
    kind: Noise,
    theta: &Bound<'_, PyAny>,
    sigma: f64,
    out: &Bound<'_, PyAny>,
    stream: Stream,
    start: u64,
) -> PyResult<()> {
    with_float!(theta, |T| {
        let (t, mut out) = (ro::<T>(theta)?, rw::<T>(out)?);
        let (ts, os) = (t.as_slice()?, out.as_slice_mut()?);
        let sigma = T::from_f64(sigma);
        run(t.py(), || {
            kernels::noise::perturb(kind, stream, start, ts, sigma, os)
        })
    })
}

/// Gumbel-Softmax forward over `x` viewed as `dims`: what `mode` asks for
/// into `y`, and the soft sample into `soft` in mode "one_hot_with_soft".
#[pyfunction]
#[pyo3(signature = (x, dims, tau, stream, mode, y, soft=None))]
fn gumbel_softmax_forward(
    x: &Bound<'_, PyAny>,
    dims: Dims,
    tau: TauArg<'_>,
    stream: Stream,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, tau) = (ro::<T>(x)?, tau.of::<T>()?);
        let (mut y, mut soft) = (rw::<T>(y)?, soft.map(rw::<T>).transpose()?);
        let out = outputs("gumbel_softmax_forward", mode, &mut y, &mut soft)?;
        let (xs, tau) = (x.as_slice()?, tau.get()?);
        let f = kernels::softmax::gumbel_softmax_forward;
        run(x.py(), || f(xs, dims, tau, stream, out))
    })
}

/// Gumbel-Softmax backward: `out = y * (g - sum(g * y)) / tau` along `k`.
#[pyfunction]
fn gumbel_softmax_backward(
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    dims: Dims,
    tau: TauArg<'_>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(g, |T| {
        let (g, y, tau, mut out) = (ro::<T>(g)?, ro::<T>(y)?, tau.of::<T>()?, rw::<T>(out)?);
        let (gs, ys, tau, os) = (
            g.as_slice()?,
            y.as_slice()?,
            tau.get()?,
            out.as_slice_mut()?,
        );
        let f = kernels::softmax::gumbel_softmax_backward;
        run(g.py(), || f(gs, ys, dims, tau, os))
    })
}

/// `num_samples` Gumbel-max draws per row into `out` (int64, rows * num_samples).
#[pyfunction]
fn sample_categorical(
    x: &Bound<'_, PyAny>,
    dims: Dims,
    num_samples: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, mut out) = (ro::<T>(x)?, rw::<i64>(out)?);
        let (xs, os) = (x.as_slice()?, out.as_slice_mut()?);
        let f = kernels::sampling::sample_categorical;
        run(x.py(), || f(xs, dims, num_samples, stream, os))
    })
}

/// Gumbel-top-k indices into `out` (int64, laid out as `(outer, k, inner)`).
#[pyfunction]
fn gumbel_topk(
    x: &Bound<'_, PyAny>,
    dims: Dims,
    k: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, mut out) = (ro::<T>(x)?, rw::<i64>(out)?);
        let (xs, os) = (x.as_slice()?, out.as_slice_mut()?);
        run(x.py(), || {
            kernels::sampling::gumbel_topk(xs, dims, k, stream, os)
        })
    })
}

/// Gumbel-perturbed logits conditioned on their argmax (`index`, one per row).
#[pyfunction]
fn gumbel_given_argmax(
    x: &Bound<'_, PyAny>,
    dims: Dims,
    index: &Bound<'_, PyAny>,
    num_samples: usize,
    stream: Stream,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, index, mut out) = (ro::<T>(x)?, ro::<i64>(index)?, rw::<T>(out)?);
        let (xs, is, os) = (x.as_slice()?, index.as_slice()?, out.as_slice_mut()?);
        let f = kernels::sampling::gumbel_given_argmax;
        run(x.py(), || f(xs, dims, is, num_samples, stream, os))
    })
}

/// Relaxed Bernoulli forward: what `mode` asks for into `y`, and the soft
/// sample into `soft` in mode "one_hot_with_soft".
#[pyfunction]
#[pyo3(signature = (x, tau, stream, mode, y, soft=None))]
fn relaxed_bernoulli_forward(
    x: &Bound<'_, PyAny>,
    tau: TauArg<'_>,
    stream: Stream,
    mode: OutputMode,
    y: &Bound<'_, PyAny>,
    soft: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, tau) = (ro::<T>(x)?, tau.of::<T>()?);
        let (mut y, mut soft) = (rw::<T>(y)?, soft.map(rw::<T>).transpose()?);
        let out = outputs("relaxed_bernoulli_forward", mode, &mut y, &mut soft)?;
        let (xs, tau) = (x.as_slice()?, tau.get()?);
        let f = kernels::bernoulli::relaxed_bernoulli_forward;
        run(x.py(), || f(xs, tau, stream, out))
    })
}

/// Relaxed Bernoulli backward: `out = g * y * (1 - y) / tau`.
#[pyfunction]
fn relaxed_bernoulli_backward(
    g: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    tau: TauArg<'_>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(g, |T| {
        let (g, y, tau, mut out) = (ro::<T>(g)?, ro::<T>(y)?, tau.of::<T>()?, rw::<T>(out)?);
        let (gs, ys, tau, os) = (
            g.as_slice()?,
            y.as_slice()?,
            tau.get()?,
            out.as_slice_mut()?,
        );
        let f = kernels::bernoulli::relaxed_bernoulli_backward;
        run(g.py(), || f(gs, ys, tau, os))
    })
}

/// Hard Concrete forward.
#[pyfunction]
fn hard_concrete_forward(
    x: &Bound<'_, PyAny>,
    tau: TauArg<'_>,
    limits: (f64, f64),
    stream: Stream,
    z: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, tau, mut z) = (ro::<T>(x)?, tau.of::<T>()?, rw::<T>(z)?);
        let limits = (T::from_f64(limits.0), T::from_f64(limits.1));
        let (xs, tau, zs) = (x.as_slice()?, tau.get()?, z.as_slice_mut()?);
        let f = kernels::bernoulli::hard_concrete_forward;
        run(x.py(), || f(xs, tau, limits, stream, zs))
    })
}

/// Hard Concrete backward from the output `z`.
#[pyfunction]
fn hard_concrete_backward(
    g: &Bound<'_, PyAny>,
    z: &Bound<'_, PyAny>,
    tau: TauArg<'_>,
    limits: (f64, f64),
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(g, |T| {
        let (g, z, tau, mut out) = (ro::<T>(g)?, ro::<T>(z)?, tau.of::<T>()?, rw::<T>(out)?);
        let limits = (T::from_f64(limits.0), T::from_f64(limits.1));
        let (gs, zs, tau, os) = (
            g.as_slice()?,
            z.as_slice()?,
            tau.get()?,
            out.as_slice_mut()?,
        );
        let f = kernels::bernoulli::hard_concrete_backward;
        run(g.py(), || f(gs, zs, tau, limits, os))
    })
}

/// The exact linear assignment of each of the `batch` `n x m` matrices of
/// `weights` (`shape = (batch, n, m)`): the column of every row into `out`
/// (int64, `batch * n`).
#[pyfunction]
fn linear_assignment(
    weights: &Bound<'_, PyAny>,
    shape: (usize, usize, usize),
    maximize: bool,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(weights, |T| {
        let (w, mut out) = (ro::<T>(weights)?, rw::<i64>(out)?);
        let (ws, os) = (w.as_slice()?, out.as_slice_mut()?);
        let (batch, n, m) = shape;
        let f = structured::assignment::linear_assignment;
        run(w.py(), || f(ws, batch, n, m, maximize, os))
    })
}

/// The 0/1 indicator of a cheapest path through each of the `batch` `h x w`
/// grids of `costs` (`shape = (batch, h, w)`) into `out`, like `costs`.
#[pyfunction]
fn shortest_path_grid(
    costs: &Bound<'_, PyAny>,
    shape: (usize, usize, usize),
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(costs, |T| {
        let (c, mut out) = (ro::<T>(costs)?, rw::<T>(out)?);
        let (cs, os) = (c.as_slice()?, out.as_slice_mut()?);
        let (batch, h, w) = shape;
        let f = structured::grid_path::shortest_path_grid;
        run(c.py(), || f(cs, batch, h, w, os))
    })
}

/// The 0/1 maximum spanning tree of each of the `batch` `n x n` matrices of
/// `weights` (`shape = (batch, n)`) into `out`, like `weights`; with
/// `stream`, of the weights plus its Gumbel noise.
#[pyfunction]
#[pyo3(signature = (weights, shape, out, stream=None))]
fn spanning_tree(
    weights: &Bound<'_, PyAny>,
    shape: (usize, usize),
    out: &Bound<'_, PyAny>,
    stream: Option<Stream>,
) -> PyResult<()> {
    with_float!(weights, |T| {
        let (w, mut out) = (ro::<T>(weights)?, rw::<T>(out)?);
        let (ws, os) = (w.as_slice()?, out.as_slice_mut()?);
        let (batch, n) = shape;
        run(w.py(), || match stream {
            None => structured::spanning_tree::spanning_tree(ws, batch, n, os),
            Some(s) => structured::spanning_tree::sample_spanning_tree(ws, batch, n, s, os),
        })
    })
}

/// Gumbel-Sinkhorn forward of the `(batch, n, n)` log-weights `x`: the
/// samples into `soft`, the perturbed weights into `perturbed` and the
/// iterations run on each matrix into `iters` (uint32), each when given.
#[pyfunction]
#[pyo3(signature = (x, shape, params, stream, soft=None, perturbed=None, iters=None))]
fn gumbel_sinkhorn_forward(
    x: &Bound<'_, PyAny>,
    shape: Square,
    params: Sinkhorn<f64>,
    stream: Stream,
    soft: Option<&Bound<'_, PyAny>>,
    perturbed: Option<&Bound<'_, PyAny>>,
    iters: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let x = ro::<T>(x)?;
        let mut soft = soft.map(rw::<T>).transpose()?;
        let mut perturbed = perturbed.map(rw::<T>).transpose()?;
        let mut iters = iters.map(rw::<u32>).transpose()?;
        let out = SinkhornOutputs {
            soft: soft.as_mut().map(|a| a.as_slice_mut()).transpose()?,
            perturbed: perturbed.as_mut().map(|a| a.as_slice_mut()).transpose()?,
            iters: iters.as_mut().map(|a| a.as_slice_mut()).transpose()?,
        };
        let (xs, p) = (x.as_slice()?, of::<T>(&params));
        run(x.py(), || {
            sinkhorn::gumbel_sinkhorn_forward(xs, shape, p, stream, out)
        })
    })
}

/// Gumbel-Sinkhorn backward: the gradient of `x` into `out`, given `grad`,
/// that of the samples, and `iters`, the forward's iteration counts.
#[pyfunction]
fn gumbel_sinkhorn_backward(
    x: &Bound<'_, PyAny>,
    shape: Square,
    params: Sinkhorn<f64>,
    stream: Stream,
    iters: &Bound<'_, PyAny>,
    grad: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    with_float!(x, |T| {
        let (x, iters, grad, mut out) = (
            ro::<T>(x)?,
            ro::<u32>(iters)?,
            ro::<T>(grad)?,
            rw::<T>(out)?,
        );
        let (xs, is, gs, os) = (
            x.as_slice()?,
            iters.as_slice()?,
            grad.as_slice()?,
            out.as_slice_mut()?,
        );
        let p = of::<T>(&params);
        let f = sinkhorn::gumbel_sinkhorn_backward;
        run(x.py(), || f(xs, shape, p, stream, is, gs, os))
    })
}

/// `out = f(x)` for the kernels' own `exp`, `ln` or `ln1p` (for parity tests).
#[pyfunction]
fn math(name: MathFn, x: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
    with_float!(x, |T| {
        let f = name.of::<T>();
        let (x, mut out) = (ro::<T>(x)?, rw::<T>(out)?);
        for (o, &v) in out.as_slice_mut()?.iter_mut().zip(x.as_slice()?) {
            *o = f(v);
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- the rest

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

/// The instruction-set level kernels run at ("portable", "avx2" or "avx512").
#[pyfunction]
fn simd_level() -> &'static str {
    isa::level().name()
}

/// The best level this CPU supports.
#[pyfunction]
fn simd_detected() -> &'static str {
    isa::detected().name()
}

/// Caps the level kernels use; results are bitwise the same at every level.
#[pyfunction]
fn set_max_simd_level(name: Level) {
    isa::set_max_level(name);
}

/// Address of the first element of a float or int64 array, as the kernels see it.
#[pyfunction]
fn data_ptr(a: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(a) = a.cast::<PyArrayDyn<i64>>() {
        return Ok(a.readonly().as_slice()?.as_ptr() as usize);
    }
    with_float!(a, |T| { Ok(ro::<T>(a)?.as_slice()?.as_ptr() as usize) })
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
    m.add_function(wrap_pyfunction!(linear_assignment, m)?)?;
    m.add_function(wrap_pyfunction!(shortest_path_grid, m)?)?;
    m.add_function(wrap_pyfunction!(perturb, m)?)?;
    m.add_function(wrap_pyfunction!(spanning_tree, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_sinkhorn_forward, m)?)?;
    m.add_function(wrap_pyfunction!(gumbel_sinkhorn_backward, m)?)?;
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
