"""Counter-based generators: a seed and an offset, nothing else.

Every op call takes the generator's current ``(seed, offset)`` and advances the
offset by one. The random word of element ``i`` of that call is
``Philox4x32-10(counter=(i // 4, offset), key=seed)[i % 4]`` (two words per
element for float64), so results do not depend on threads, chunking or device.
"""

from __future__ import annotations

import threading

import torch

from . import _core

_U64 = (1 << 64) - 1
_OFFSET_LIMIT = 1 << 63  # the top offset bit is reserved for fork draws


def _to_signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int in [0, 2**64), got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def _check_offset(offset: object) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"state offset must be an int in [0, 2**63), got "
                        f"{type(offset).__name__} {offset!r}")
    if not 0 <= offset < _OFFSET_LIMIT:
        raise ValueError(f"state offset must be in [0, 2**63), got {offset}")
    return offset


class Generator:
    """A Philox4x32-10 stream: ``gumbelrs.Generator(seed=0)``.

    Its state is a CPU int64 tensor ``[seed, offset]`` (the seed stored as the
    bit pattern of an unsigned 64-bit integer). Ops read it and advance the
    offset by one per call; under ``torch.compile`` the advance is a mutating
    custom op on that tensor, so compiled code draws the same stream as eager.
    """

    __slots__ = ("__weakref__", "_lock", "_state", "_view")

    def __init__(self, seed: int = 0) -> None:
        seed = _check_seed(seed)
        self._state = torch.tensor([_to_signed(seed), 0], dtype=torch.int64)
        self._view = self._state.numpy()  # shares memory with _state
        self._lock = threading.Lock()

    @property
    def seed(self) -> int:
        """The 64-bit seed."""
        return int(self._view[0]) & _U64

    @property
    def offset(self) -> int:
        """The number of calls drawn from this generator so far (since the last seeding)."""
        return int(self._view[1])

    def manual_seed(self, seed: int) -> Generator:
        """Restarts the stream at ``seed`` with offset 0; returns ``self``."""
        seed = _check_seed(seed)
        with self._lock:
            self._view[0] = _to_signed(seed)
            self._view[1] = 0
        return self

    def initial_seed(self) -> int:
        """The seed (for symmetry with ``torch.Generator``)."""
        return self.seed

    def get_state(self) -> torch.Tensor:
        """A copy of the state: an int64 tensor ``[seed, offset]``."""
        with self._lock:
            return self._state.clone()

    def set_state(self, state: torch.Tensor) -> Generator:
        """Restores a state returned by :meth:`get_state`; returns ``self``."""
        if not isinstance(state, torch.Tensor):
            raise TypeError(
                "state must be the int64 tensor returned by get_state(), got "
                f"{type(state).__name__}"
            )
        if state.dtype != torch.int64 or tuple(state.shape) != (2,):
            raise ValueError(
                "state must be an int64 tensor of shape (2,) as returned by get_state(), "
                f"got dtype {state.dtype} and shape {tuple(state.shape)}"
            )
        _check_offset(int(state[1]))
        with self._lock:
            self._state.copy_(state.cpu())
        return self

    def fork(self, n: int) -> list[Generator]:
        """``n`` new generators with independent streams (e.g. one per rank).

        Their seeds are Philox words drawn from a domain of this stream that
        ordinary calls never use; this generator's offset advances by one, so
        forking again gives new children.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"fork(n) needs a non-negative int n, got {n!r}")
        seed, offset = self._advance()
        return [Generator(s) for s in _core.fork_seeds(seed, offset, n)]

    def _advance(self) -> tuple[int, int]:
        """Returns ``(seed, offset)`` for one call and advances the offset."""
        with self._lock:
            seed, offset = int(self._view[0]) & _U64, int(self._view[1])
            if offset + 1 >= _OFFSET_LIMIT:
                raise RuntimeError("gumbelrs.Generator offset exhausted (2**63 calls); reseed it")
            self._view[1] = offset + 1
        return seed, offset

    def __repr__(self) -> str:
        return f"gumbelrs.Generator(seed={self.seed}, offset={self.offset})"

    def __getstate__(self) -> dict:
        return {"seed": self.seed, "offset": self.offset}

    def __setstate__(self, d: dict) -> None:
        # A pickle can be edited by hand: its fields get the checks of __init__ and set_state.
        if not isinstance(d, dict) or set(d) != {"seed", "offset"}:
            raise ValueError(f"a pickled gumbelrs.Generator state must be a dict with the keys "
                             f"'seed' and 'offset', got {d!r}")
        offset = _check_offset(d["offset"])
        self.__init__(d["seed"])
        self._view[1] = offset


_default: Generator = None  # type: ignore[assignment]  # set at import, below
_default_torch_seed: int | None = None
_default_lock = threading.Lock()


def default_generator() -> Generator:
    """The process-wide generator used when an op gets ``generator=None``.

    It is seeded from ``torch.initial_seed()`` and restarted whenever that
    value changes, so ``torch.manual_seed(s)`` with a new ``s`` also restarts
    gumbelrs. To restart with the seed already in use, call
    :func:`gumbelrs.manual_seed`.
    """
    global _default, _default_torch_seed
    seed = torch.initial_seed()
    with _default_lock:
        if _default is None or seed != _default_torch_seed:
            _default = Generator(seed & _U64)
            _default_torch_seed = seed
        return _default


def manual_seed(seed: int) -> Generator:
    """Seeds torch (``torch.manual_seed``) and restarts the default stream at
    ``seed``, offset 0; returns the default generator.

    Use it instead of ``torch.manual_seed`` when re-running with the seed
    already in use: the default generator follows ``torch.initial_seed()``
    only when that value *changes*.
    """
    global _default, _default_torch_seed
    seed = _check_seed(seed)
    torch.manual_seed(seed)
    with _default_lock:
        _default = Generator(seed)
        _default_torch_seed = torch.initial_seed()
        return _default


def current_default() -> Generator:
    """The default generator as it is now, without the re-seeding check.

    Used while compiling (the check takes a lock, which is not traceable):
    compiled code draws from the default generator that exists when it is
    traced; a later ``torch.manual_seed`` reaches it after the next eager call.
    """
    return _default


default_generator()  # so that compiled code always finds one
