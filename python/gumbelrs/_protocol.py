"""The protocols the backends share with the native core and the CUDA kernels,
each defined once here and named the same in Rust and CUDA (tests check that
the three agree).

``OutputMode``: what a forward with a straight-through mode writes; Rust's
``kernels::OutputMode`` (it crosses the binding by its value) and the CUDA
kernels' ``GrsOutputMode`` (by ``CUDA_OUTPUT_MODE``).

``FaultKind``: what a kernel found wrong with its input; Rust's
``kernels::FaultKind`` (``_core.KernelError`` carries its code) and the CUDA
kernels' ``GrsFaultKind``. ``FaultCode``: the fields of the 64-bit code in
which the CUDA kernels record a fault (``GRS_FAULT_*`` in ``cuda/device.cuh``).
"""

from __future__ import annotations

import enum


class OutputMode(str, enum.Enum):
    """What a Gumbel-Softmax or relaxed Bernoulli forward writes."""

    #: The soft sample alone.
    SOFT = "soft"
    #: The one-hot (hard) sample alone: no gradient needs the soft one.
    ONE_HOT = "one_hot"
    #: The one-hot sample, and the soft sample its gradient flows through.
    ONE_HOT_WITH_SOFT = "one_hot_with_soft"

    @staticmethod
    def of(hard: bool, need_soft: bool = True) -> OutputMode:
        """The mode of an op's ``hard`` flag and whether a gradient needs the soft sample."""
        if not hard:
            return OutputMode.SOFT
        return OutputMode.ONE_HOT_WITH_SOFT if need_soft else OutputMode.ONE_HOT


#: The CUDA kernels' codes of the modes (``GrsOutputMode`` in ``cuda/device.cuh``).
CUDA_OUTPUT_MODE = {OutputMode.SOFT: 0, OutputMode.ONE_HOT_WITH_SOFT: 1, OutputMode.ONE_HOT: 2}


class FaultKind(enum.IntEnum):
    """What a kernel found wrong with its input, by its code on every side."""

    #: A logit is NaN (position: the logit).
    NAN = 1
    #: A logit is +inf (position: the logit).
    POSINF = 2
    #: Every logit of a row is -inf (position: the row).
    ALL_MASKED = 3
    #: A row's conditioning index is out of range or masked (position: the row).
    INDEX = 4
    #: A temperature is not normal, positive and finite (position: the temperature).
    TAU = 5
    #: A row has fewer categories that are not -inf than k (position: the row).
    TOO_FEW = 6
    #: Forbidden pairs leave an assignment problem no solution (position: the
    #: problem, i.e. the matrix of the batch; only the CPU solvers record it).
    INFEASIBLE = 7

    @staticmethod
    def of(code: int) -> FaultKind | None:
        """The kind of ``code``, or None for a code no kind has."""
        try:
            return FaultKind(code)
        except ValueError:
            return None


class FaultCode:
    """The fields of a CUDA fault code, low bits first: the kind, the position,
    a class bit (0 for a bad temperature, so that it wins the minimum, as the
    CPU checks temperatures first) and the call's sequence number."""

    KIND_BITS = 3
    POS_SHIFT = 3
    POS_BITS = 36
    CLASS_SHIFT = 39
    SEQ_SHIFT = 40
    SEQ_BITS = 64 - SEQ_SHIFT
    #: All ones: no fault recorded.
    NONE = (1 << 64) - 1

    @classmethod
    def tag(cls, seq: int) -> int:
        """The bits of call number ``seq`` (``seq < 2**SEQ_BITS``), which the kernels or in."""
        return seq << cls.SEQ_SHIFT

    @classmethod
    def decode(cls, code: int) -> tuple[int, FaultKind, int]:
        """``(seq, kind, position)`` of a code other than ``NONE``; a RuntimeError
        for a kind this package does not know."""
        kind = FaultKind.of(code & ((1 << cls.KIND_BITS) - 1))
        if kind is None:
            raise RuntimeError(f"gumbelrs: a CUDA kernel recorded a fault of unknown kind "
                               f"(code {code:#018x}); the kernels and the package disagree")
        pos = (code >> cls.POS_SHIFT) & ((1 << cls.POS_BITS) - 1)
        return code >> cls.SEQ_SHIFT, kind, pos
