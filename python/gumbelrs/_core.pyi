"""Type stubs of the native module built from rust/python.rs, checked against
the compiled module by mypy's stubtest (``make lint``).

Kernels take C-contiguous NumPy views (float32 or float64; int64 for indices)
of contiguous torch tensors, read as flat slices, and write their outputs in
place. ``dims`` is ``(outer, k, inner)``: the tensor seen around the reduced
dimension.
"""


from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.floating[Any]]
_Index = npt.NDArray[np.int64]
#: (outer, k, inner).
_Dims = tuple[int, int, int]
#: (seed, offset) of the random stream.
_Stream = tuple[int, int]
#: One temperature, or one per row (element) in the kernel's float type.
_Tau = float | _Float
#: gumbelrs._protocol.OutputMode (a str enum) or its value.
_OutputMode = Literal["soft", "one_hot", "one_hot_with_soft"]
_NoiseKind = Literal["gumbel", "logistic", "uniform"]
_MathName = Literal["exp", "ln", "ln1p"]
_SimdLevel = Literal["portable", "avx2", "avx512"]
#: (batch, samples, n) of a Gumbel-Sinkhorn call.
_Square = tuple[int, int, int]
#: (tau, noise_scale, n_iters, tol) of a Gumbel-Sinkhorn call.
_SinkhornParams = tuple[float, float, int, float | None]
#: Iteration counts, one per matrix.
_Counts = npt.NDArray[np.uint32]

__all__ = [
    "KernelError",
    "data_ptr",
    "fork_seeds",
    "get_num_threads",
    "gumbel_given_argmax",
    "gumbel_sinkhorn_backward",
    "gumbel_sinkhorn_forward",
    "gumbel_softmax_backward",
    "gumbel_softmax_forward",
    "gumbel_topk",
    "hard_concrete_backward",
    "hard_concrete_forward",
    "linear_assignment",
    "math",
    "noise",
    "perturb",
    "philox4x32_10",
    "relaxed_bernoulli_backward",
    "relaxed_bernoulli_forward",
    "sample_categorical",
    "set_max_simd_level",
    "set_num_threads",
    "shortest_path_grid",
    "simd_detected",
    "simd_level",
    "spanning_tree",
    "use_openmp",
    "uses_openmp",
]

class KernelError(ValueError):
    """args: (kind, position, available, requested); kind is the code of a
    gumbelrs._protocol.FaultKind (every kind of it)."""

def noise(kind: _NoiseKind, out: _Float, stream: _Stream, start: int = 0) -> None: ...
def perturb(
    kind: _NoiseKind, theta: _Float, sigma: float, out: _Float, stream: _Stream, start: int = 0
) -> None: ...
def gumbel_softmax_forward(
    x: _Float, dims: _Dims, tau: _Tau, stream: _Stream, mode: _OutputMode, y: _Float,
    soft: _Float | None = None,
) -> None: ...
def gumbel_softmax_backward(g: _Float, y: _Float, dims: _Dims, tau: _Tau, out: _Float) -> None: ...
def sample_categorical(
    x: _Float, dims: _Dims, num_samples: int, stream: _Stream, out: _Index
) -> None: ...
def gumbel_topk(x: _Float, dims: _Dims, k: int, stream: _Stream, out: _Index) -> None: ...
def gumbel_given_argmax(
    x: _Float, dims: _Dims, index: _Index, num_samples: int, stream: _Stream, out: _Float
) -> None: ...
def relaxed_bernoulli_forward(
    x: _Float, tau: _Tau, stream: _Stream, mode: _OutputMode, y: _Float, soft: _Float | None = None
) -> None: ...
def relaxed_bernoulli_backward(g: _Float, y: _Float, tau: _Tau, out: _Float) -> None: ...
def hard_concrete_forward(
    x: _Float, tau: _Tau, limits: tuple[float, float], stream: _Stream, z: _Float
) -> None: ...
def hard_concrete_backward(
    g: _Float, z: _Float, tau: _Tau, limits: tuple[float, float], out: _Float
) -> None: ...
def linear_assignment(
    weights: _Float, shape: tuple[int, int, int], maximize: bool, out: _Index
) -> None: ...
def shortest_path_grid(costs: _Float, shape: tuple[int, int, int], out: _Float) -> None: ...
def spanning_tree(
    weights: _Float, shape: tuple[int, int], out: _Float, stream: _Stream | None = None
) -> None: ...
def gumbel_sinkhorn_forward(
    x: _Float, shape: _Square, params: _SinkhornParams, stream: _Stream,
    soft: _Float | None = None, perturbed: _Float | None = None, iters: _Counts | None = None,
) -> None: ...
def gumbel_sinkhorn_backward(
    x: _Float, shape: _Square, params: _SinkhornParams, stream: _Stream, iters: _Counts,
    grad: _Float, out: _Float,
) -> None: ...
def math(name: _MathName, x: _Float, out: _Float) -> None: ...
def philox4x32_10(ctr: Sequence[int], key: Sequence[int]) -> list[int]: ...
def fork_seeds(seed: int, offset: int, n: int) -> list[int]: ...
def set_num_threads(n: int) -> None: ...
def use_openmp(on: bool) -> bool: ...
def uses_openmp() -> bool: ...
def get_num_threads() -> int: ...
def data_ptr(a: npt.NDArray[Any]) -> int: ...
def simd_level() -> _SimdLevel: ...
def simd_detected() -> _SimdLevel: ...
def set_max_simd_level(name: _SimdLevel) -> None: ...
