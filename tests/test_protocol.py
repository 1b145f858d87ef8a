"""The protocols shared by Python, the Rust core and the CUDA kernels are one
definition each (gumbelrs._protocol): the three sides agree on every name and
code, and each side rejects what it does not know."""

import re

import numpy as np
import pytest

from gumbelrs import _core, cuda
from gumbelrs._protocol import CUDA_OUTPUT_MODE, OutputMode


def _c_enum(source: str, name: str) -> dict[str, int]:
    """The members of C enum ``name`` in ``source``, by name."""
    body = re.search(r"enum " + name + r" \{([^}]*)\}", source)
    assert body, name
    return {k: int(v) for k, v in re.findall(r"(\w+) = (\d+)", body.group(1))}


def test_output_modes_have_the_cuda_headers_names_and_codes():
    header = _c_enum(cuda.sources()["device.cuh"], "GrsOutputMode")
    assert header == {f"GRS_{m.name}": code for m, code in CUDA_OUTPUT_MODE.items()}
    assert set(CUDA_OUTPUT_MODE) == set(OutputMode)


@pytest.mark.parametrize("mode", list(OutputMode))
def test_the_core_takes_every_output_mode_by_its_value(mode):
    x = np.array([[0.0, 1.0, -np.inf]], dtype=np.float32)
    y, soft = np.empty_like(x), np.empty_like(x)
    extra = soft if mode is OutputMode.ONE_HOT_WITH_SOFT else None
    for given in (mode, mode.value):
        _core.gumbel_softmax_forward(x, (1, 3, 1), 1.0, None, 0, 0, given, y, extra)
        if mode is OutputMode.SOFT:
            assert y.sum() == pytest.approx(1.0) and y[0, 2] == 0.0
        else:
            assert sorted(y[0]) == [0.0, 0.0, 1.0]
        _core.relaxed_bernoulli_forward(x, 1.0, None, 0, 0, given, y, extra)


def test_the_core_rejects_an_unknown_mode_or_a_soft_output_of_another_mode():
    x = np.zeros((2, 3), dtype=np.float64)
    y = np.empty_like(x)
    with pytest.raises(ValueError, match=r"mode must be one of \"soft\", \"one_hot\", "
                                         r"\"one_hot_with_soft\", got \"hard\""):
        _core.gumbel_softmax_forward(x, (2, 3, 1), 1.0, None, 0, 0, "hard", y)
    with pytest.raises(ValueError, match="a soft output goes with mode 'one_hot_with_soft'"):
        _core.gumbel_softmax_forward(x, (2, 3, 1), 1.0, None, 0, 0, "soft", y, np.empty_like(x))
    with pytest.raises(ValueError, match="a soft output goes with mode 'one_hot_with_soft'"):
        _core.relaxed_bernoulli_forward(x, 1.0, None, 0, 0, "one_hot_with_soft", y)


@pytest.mark.parametrize(("hard", "need_soft", "mode"), [
    (False, True, OutputMode.SOFT), (False, False, OutputMode.SOFT),
    (True, True, OutputMode.ONE_HOT_WITH_SOFT), (True, False, OutputMode.ONE_HOT)])
def test_the_mode_of_an_ops_flags(hard, need_soft, mode):
    assert OutputMode.of(hard, need_soft) is mode
