"""The protocols shared by Python, the Rust core and the CUDA kernels are one
definition each (gumbelrs._protocol): the three sides agree on every name and
code, and each side rejects what it does not know."""

import math
import re

import numpy as np
import pytest
import torch

import gumbelrs
from gumbelrs import _core, _cpu, cuda
from gumbelrs._faults import MESSAGES, WEIGHT_MESSAGES, translate, translate_weights
from gumbelrs._protocol import CUDA_OUTPUT_MODE, FaultCode, FaultKind, OutputMode


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
        _core.gumbel_softmax_forward(x, (1, 3, 1), 1.0, (0, 0), given, y, extra)
        if mode is OutputMode.SOFT:
            assert y.sum() == pytest.approx(1.0) and y[0, 2] == 0.0
        else:
            assert sorted(y[0]) == [0.0, 0.0, 1.0]
        _core.relaxed_bernoulli_forward(x, 1.0, (0, 0), given, y, extra)


def test_the_core_rejects_an_unknown_mode_or_a_soft_output_of_another_mode():
    x = np.zeros((2, 3), dtype=np.float64)
    y = np.empty_like(x)
    with pytest.raises(ValueError, match=r"mode must be one of \"soft\", \"one_hot\", "
                                         r"\"one_hot_with_soft\", got \"hard\""):
        _core.gumbel_softmax_forward(x, (2, 3, 1), 1.0, (0, 0), "hard", y)
    with pytest.raises(ValueError, match="a soft output goes with mode 'one_hot_with_soft'"):
        _core.gumbel_softmax_forward(x, (2, 3, 1), 1.0, (0, 0), "soft", y, np.empty_like(x))
    with pytest.raises(ValueError, match="a soft output goes with mode 'one_hot_with_soft'"):
        _core.relaxed_bernoulli_forward(x, 1.0, (0, 0), "one_hot_with_soft", y)


@pytest.mark.parametrize(("hard", "need_soft", "mode"), [
    (False, True, OutputMode.SOFT), (False, False, OutputMode.SOFT),
    (True, True, OutputMode.ONE_HOT_WITH_SOFT), (True, False, OutputMode.ONE_HOT)])
def test_the_mode_of_an_ops_flags(hard, need_soft, mode):
    assert OutputMode.of(hard, need_soft) is mode


# ---------------------------------------------------------------- faults

#: A call of the public API that faults with each kind, and the start of its message.
FAULTS = {
    FaultKind.NAN: (lambda x: gumbelrs.gumbel_softmax(_with(x, (1, 2), math.nan), 0.5),
                    r"gumbel_softmax: logits\[1, 2\] is NaN"),
    FaultKind.POSINF: (lambda x: gumbelrs.gumbel_softmax(_with(x, (2, 0), math.inf), 0.5),
                       r"gumbel_softmax: logits\[2, 0\] is \+inf"),
    FaultKind.ALL_MASKED: (lambda x: gumbelrs.gumbel_softmax(_with(x, 1, -math.inf), 0.5),
                           r"gumbel_softmax: every logit of logits\[1, :\] is -inf"),
    FaultKind.INDEX: (lambda x: gumbelrs.gumbel_given_argmax(x, torch.tensor([0, 1, 9, 0])),
                      r"gumbel_given_argmax: index for logits\[2, :\] is out of range"),
    FaultKind.TAU: (lambda x: gumbelrs.gumbel_softmax(x, torch.tensor([1.0, 0.5, 0.0, 2.0])),
                    r"gumbel_softmax: tau"),
    FaultKind.TOO_FEW: (lambda x: gumbelrs.gumbel_topk(_with(x, (3, slice(1, None)), -math.inf),
                                                       2),
                        r"gumbel_topk: k=2 but logits\[3, :\] has only 1 categories"),
    FaultKind.INFEASIBLE: (lambda x: gumbelrs.structured.matching(
                               _with(x, (slice(2), slice(1, None)), -math.inf)),
                           r"matching: no feasible assignment for weights: "),
}


def _with(x: torch.Tensor, at, value: float) -> torch.Tensor:
    x = x.clone()
    x[at] = value
    return x


def fault_logits() -> torch.Tensor:
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(0))


def faults_seen(monkeypatch, backend) -> list:
    """The kinds that reach ``backend.translate`` (and ``translate_weights``,
    where the backend has it), as they arrive."""
    seen = []

    def spy(original):
        def translating(fn, err, *args):
            seen.append(FaultKind.of((err if isinstance(err, tuple) else err.args)[0]))
            return original(fn, err, *args)
        return translating

    monkeypatch.setattr(backend, "translate", spy(translate))
    if hasattr(backend, "translate_weights"):
        monkeypatch.setattr(backend, "translate_weights", spy(translate_weights))
    return seen


def test_every_fault_kind_has_a_case_and_a_message():
    assert set(FAULTS) == set(FaultKind) == set(MESSAGES) | set(WEIGHT_MESSAGES)


@pytest.mark.parametrize("kind", list(FaultKind))
def test_every_fault_kind_crosses_the_binding_by_its_code(monkeypatch, kind):
    call, message = FAULTS[kind]
    seen = faults_seen(monkeypatch, _cpu)
    with pytest.raises(ValueError, match="^" + message):
        call(fault_logits())
    assert seen == [kind]


@pytest.mark.parametrize("code", [0, 8, "nan", None])
def test_translate_rejects_a_kind_it_does_not_know(code):
    with pytest.raises(RuntimeError, match="unknown kind"):
        translate("gumbel_softmax", (code, 0, 0, 0), torch.Size([2, 3]), 1, None)


@pytest.mark.parametrize("code", [0, FaultKind.TAU, FaultKind.TOO_FEW, 8])
def test_translate_weights_rejects_a_kind_the_solver_does_not_report(code):
    with pytest.raises(RuntimeError, match="unexpected kind"):
        translate_weights("matching", _core.KernelError(code, 0, 0, 0), torch.Size([2, 3]), True)


def test_fault_kinds_and_the_code_layout_are_the_cuda_headers():
    header = cuda.sources()["device.cuh"]
    assert _c_enum(header, "GrsFaultKind") == {f"GRS_F_{k.name}": k.value for k in FaultKind}
    defines = dict(re.findall(r"#define GRS_FAULT_(\w+) (\d+)\n", header))
    fields = ("KIND_BITS", "POS_SHIFT", "POS_BITS", "CLASS_SHIFT", "SEQ_SHIFT")
    assert {k: int(v) for k, v in defines.items()} == {f: getattr(FaultCode, f) for f in fields}


def test_a_fault_code_of_an_unknown_kind_is_an_internal_error():
    for kind in (0,):  # every other code of the 3-bit field is a kind
        with pytest.raises(RuntimeError, match="unknown kind"):
            FaultCode.decode(FaultCode.tag(5) | (1 << FaultCode.CLASS_SHIFT) | (9 << 3) | kind)
