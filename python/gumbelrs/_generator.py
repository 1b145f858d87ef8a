"""Counter-based generators: a seed and an offset, nothing else.

Every op call takes the generator's current ``(seed, offset)`` and advances the
offset by one. The random word of element ``i`` of that call is
``Philox4x32-10(counter=(i // 4, offset), key=seed)[i % 4]`` (two words per
element for float64), so results do not depend on threads, chunking or device.
"""

from __future__ import annotations

import contextlib
import threading

import numpy
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
        self._view = numpy.array([_to_signed(seed), 0], dtype=numpy.int64)
        with torch._C._DisableFuncTorch():  # a plain tensor, also when made inside torch.func
            self._state = torch.from_numpy(self._view)  # shares memory with _view
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
        with self._lock, torch._C._DisableFuncTorch():
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

    @classmethod
    def for_rank(cls, seed: int, group=None) -> Generator:
        """This process's stream in a ``torch.distributed`` job:
        ``Generator(seed).fork(world_size)[rank]`` of ``group`` (default: the
        default process group; rank 0 of 1 when there is none).

        The ranks' streams are independent (their seeds, the Philox keys, are
        distinct fork words), and child ``r`` of a fork does not depend on the
        number of children, so a rank's stream is the same for any world size.
        It does not touch torch's default generator, from which ops called with
        ``generator=None`` draw: torchrun seeds no rank differently, so after
        the same ``torch.manual_seed`` every rank draws the *same* noise there
        (what data-parallel replicas may want); pass ``Generator.for_rank(seed)``
        for noise that differs between ranks::

            g = gumbelrs.Generator.for_rank(1234)
            y = gumbelrs.gumbel_softmax(logits, 0.5, generator=g)
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(group), dist.get_world_size(group)
            if rank < 0:
                raise ValueError("Generator.for_rank: this process is not a member of group")
        else:
            rank, world = 0, 1
        return cls(seed).fork(world)[rank]

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


_local = threading.local()  # per thread: the ids of the Generators a recompute may draw from


def replaying(gen: Generator) -> bool:
    """Whether a checkpoint recompute on this thread is replaying ``gen`` (see
    :func:`checkpoint_context`)."""
    return id(gen) in getattr(_local, "replaying", ())


def checkpoint_context(*generators: Generator):
    """A ``context_fn`` for ``torch.utils.checkpoint.checkpoint(...,
    use_reentrant=False)`` that replays explicit generators.

    Checkpointing recomputes the forward during backward and restores torch's
    RNG state first, which replays ``generator=None`` draws but not a
    :class:`Generator`, which would move on to new noise (gumbelrs refuses to
    draw from one during a backward for that reason). With
    ``context_fn=gumbelrs.checkpoint_context(g)``, the recompute starts each
    ``g`` at the state it had when the forward started, so it draws the
    forward's noise again, and puts it back where it was afterwards::

        y = checkpoint(f, x, use_reentrant=False, context_fn=gumbelrs.checkpoint_context(g))
    """
    for g in generators:
        if not isinstance(g, Generator):
            raise TypeError("checkpoint_context: every argument must be a gumbelrs.Generator, "
                            f"got {type(g).__module__}.{type(g).__qualname__}")

    def context_fn():
        at_forward: list[torch.Tensor] = []

        @contextlib.contextmanager
        def forward():
            at_forward[:] = [g.get_state() for g in generators]
            yield

        @contextlib.contextmanager
        def recompute():
            now = [g.get_state() for g in generators]
            ids = getattr(_local, "replaying", None)
            if ids is None:
                ids = _local.replaying = set()
            added = {id(g) for g in generators} - ids
            for g, state in zip(generators, at_forward):
                g.set_state(state)
            ids |= added
            try:
                yield
            finally:
                ids -= added
                for g, state in zip(generators, now):
                    g.set_state(state)

        return forward(), recompute()

    return context_fn


def manual_seed(seed: int) -> torch.Generator:
    """``torch.manual_seed(seed)``, after checking ``seed``: ops called with
    ``generator=None`` draw their seeds from torch's default generator, so
    this replays them (as it replays torch's own sampling ops)."""
    return torch.manual_seed(_check_seed(seed))
