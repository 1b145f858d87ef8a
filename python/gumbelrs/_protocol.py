"""The protocols the backends share with the native core and the CUDA kernels,
each defined once here and named the same in Rust and CUDA (tests check that
the three agree).

``OutputMode``: what a forward with a straight-through mode writes; Rust's
``kernels::OutputMode`` (it crosses the binding by its value) and the CUDA
kernels' ``GrsOutputMode`` (by ``CUDA_OUTPUT_MODE``).
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
