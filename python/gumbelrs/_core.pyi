"""Type stubs of the native module built from rust/python.rs.

Kernels take flat 1-D NumPy views (float32 or float64; int64 for indices) of
contiguous torch tensors and write their outputs in place. ``dims`` is
``(outer, k, inner)``: the tensor seen around the reduced dimension.
"""


import numpy as np
import numpy.typing as npt

Float = npt.NDArray[np.floating]
Index = npt.NDArray[np.int64]
Dims = tuple[int, int, int]

class KernelError(ValueError):
    """args: (kind, position, available, requested); kind is one of "nan",
    "posinf", "all_masked", "too_few", "tau"."""

def noise(kind: str, out: Float, seed: int, offset: int) -> None: ...
def gumbel_softmax_forward(
    x: Float, dims: Dims, tau: float, tau_rows: Float | None, seed: int, offset: int,
    y: Float, soft: Float | None = None,
) -> None: ...
def gumbel_softmax_backward(
    g: Float, y: Float, dims: Dims, tau: float, tau_rows: Float | None, out: Float
) -> None: ...
def sample_categorical(
    x: Float, dims: Dims, num_samples: int, seed: int, offset: int, out: Index
) -> None: ...
def gumbel_topk(x: Float, dims: Dims, k: int, seed: int, offset: int, out: Index) -> None: ...
def relaxed_bernoulli_forward(
    x: Float, tau: float, tau_elems: Float | None, seed: int, offset: int, y: Float,
    soft: Float | None = None,
) -> None: ...
def relaxed_bernoulli_backward(
    g: Float, y: Float, tau: float, tau_elems: Float | None, out: Float
) -> None: ...
def hard_concrete_forward(
    x: Float, tau: float, tau_elems: Float | None, limits: tuple[float, float], seed: int,
    offset: int, z: Float,
) -> None: ...
def hard_concrete_backward(
    g: Float, z: Float, tau: float, tau_elems: Float | None, limits: tuple[float, float],
    out: Float,
) -> None: ...
def philox4x32_10(ctr: list[int], key: list[int]) -> list[int]: ...
def fork_seeds(seed: int, offset: int, n: int) -> list[int]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def data_ptr(a: npt.NDArray) -> int: ...
