"""The user-facing errors for the faults kernels find in their input (both backends)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._protocol import FaultKind
from ._validate import tau_message


def _position(shape: Sequence[int], flat: int) -> str:
    """The index of element ``flat`` of a contiguous tensor of ``shape``: "i, j, ..."."""
    idx = []
    for n in reversed(shape):
        idx.append(flat % n)
        flat //= n
    return ", ".join(str(i) for i in reversed(idx))


def _where(shape: Sequence[int], flat: int, name: str = "logits") -> str:
    """``name[i, j, ...]``: the element at ``flat`` in the contiguous order of ``shape``."""
    return f"{name}[{_position(shape, flat)}]"


def _row(shape: torch.Size, dim: int, row: int) -> str:
    batch = [n for i, n in enumerate(shape) if i != dim]
    idx: list[str] = []
    for n in reversed(batch):
        idx.append(str(row % n))
        row //= n
    idx.reverse()
    idx.insert(dim, ":")
    return "logits[" + ", ".join(idx) + "]"


def _tau(fn, pos, available, requested, shape, dim, tau) -> str:
    if tau is None:
        return tau_message(fn, f"a bad value at position {pos}", None, True)
    return tau_message(fn, tau.view(-1)[pos].item(), tau.dtype, True)


def _index(fn, pos, available, requested, shape, dim, tau) -> str:
    return (f"{fn}: index for {_row(shape, dim, pos)} is out of range [0, {shape[dim]}) or "
            "points at a -inf logit; the conditioned category must have nonzero probability")


def _nan(fn, pos, available, requested, shape, dim, tau) -> str:
    what = "finite or -inf (a -inf logit masks its category out)" if dim is not None else \
        "not NaN (-inf and +inf give gates that are always closed or open)"
    return f"{fn}: {_where(shape, pos)} is NaN; logits must be {what}"


def _posinf(fn, pos, available, requested, shape, dim, tau) -> str:
    return (f"{fn}: {_where(shape, pos)} is +inf; logits must be finite or -inf "
            "(-inf masks a category out; +inf has no probability distribution)")


def _all_masked(fn, pos, available, requested, shape, dim, tau) -> str:
    return (f"{fn}: every logit of {_row(shape, dim, pos)} is -inf; each row needs at least "
            "one category that is not masked")


def _too_few(fn, pos, available, requested, shape, dim, tau) -> str:
    has = f"has only {available}" if available is not None else f"has fewer than {requested}"
    return f"{fn}: k={requested} but {_row(shape, dim, pos)} {has} categories that are not -inf"


#: The message of each kind of fault.
MESSAGES = {FaultKind.TAU: _tau, FaultKind.INDEX: _index, FaultKind.NAN: _nan,
            FaultKind.POSINF: _posinf, FaultKind.ALL_MASKED: _all_masked,
            FaultKind.TOO_FEW: _too_few}


def translate(fn: str, err: BaseException | tuple, shape: torch.Size, dim: int | None,
              tau: torch.Tensor | None) -> ValueError:
    """The user-facing error for a fault a kernel found: ``err`` is a
    ``_core.KernelError`` or its args ``(kind, position, available, requested)``,
    ``kind`` a ``FaultKind`` or its code. ``tau`` or ``available`` may be None
    when the CUDA path no longer has them (then the message gives the
    position, or "fewer than k"). A kind this package does not know is a
    RuntimeError: the kernels and the package disagree."""
    code, pos, available, requested = err if isinstance(err, tuple) else err.args
    message = MESSAGES.get(FaultKind.of(code))
    if message is None:
        raise RuntimeError(f"gumbelrs: {fn}: a kernel reported a fault of unknown kind {code!r}; "
                           "the kernels and the package disagree")
    return ValueError(message(fn, pos, available, requested, shape, dim, tau))


# ---------------------------------------------------------------- assignment weights


def _weights_rule(maximize: bool) -> str:
    forbid, other = ("-inf", "+inf") if maximize else ("+inf", "-inf")
    return (f"weights must be finite or {forbid} ({forbid} forbids a pair when "
            f"maximize={maximize}; {other} has no best total)")


def _weight_nan(fn, pos, shape, maximize) -> str:
    return f"{fn}: {_where(shape, pos, 'weights')} is NaN; {_weights_rule(maximize)}"


def _weight_inf(fn, pos, shape, maximize) -> str:
    bad = "+inf" if maximize else "-inf"
    return f"{fn}: {_where(shape, pos, 'weights')} is {bad}; {_weights_rule(maximize)}"


def _infeasible(fn, pos, shape, maximize) -> str:
    batch = shape[:-2]
    which = _where(batch, pos, "weights") if batch else "weights"
    forbid = "-inf" if maximize else "+inf"
    return (f"{fn}: no feasible assignment for {which}: every way to give each of its "
            f"{shape[-2]} rows a column of its own uses a forbidden ({forbid}) pair")


#: The message of each kind of fault the assignment solver finds in its weights.
WEIGHT_MESSAGES = {FaultKind.NAN: _weight_nan, FaultKind.POSINF: _weight_inf,
                   FaultKind.INFEASIBLE: _infeasible}


def translate_weights(fn: str, err: BaseException, shape: torch.Size,
                      maximize: bool) -> ValueError:
    """The user-facing error for a fault the assignment solver found in weights
    of ``shape`` (``(*batch, n, m)``): a NaN weight or one at the infinity the
    objective seeks (``POSINF``, of either sign; position: the element), or a
    matrix without a feasible assignment (position: its index in the batch). A
    kind the solver does not report is a RuntimeError."""
    code, pos = err.args[:2]
    message = WEIGHT_MESSAGES.get(FaultKind.of(code))
    if message is None:
        raise RuntimeError(f"gumbelrs: {fn}: the solver reported a fault of unexpected kind "
                           f"{code!r}; the kernels and the package disagree")
    return ValueError(message(fn, pos, shape, maximize))


def perturbation_overflow(fn: str, err: BaseException, shape: Sequence[int],
                          dtype: torch.dtype) -> ValueError:
    """The error for the fault a Gumbel-Sinkhorn kernel reports at element
    ``err.args[1]`` of the samples (``shape``): a perturbed, tempered weight
    that is not finite where ``log_alpha`` is (whose NaN and +inf entries are
    rejected before the kernel runs), so the perturbation overflowed."""
    name = str(dtype).removeprefix("torch.")
    return ValueError(
        f"{fn}: the perturbed weight at [{_position(shape, err.args[1])}] of the (*batch, "
        f"n_samples, n, n) samples overflows {name}: ((log_alpha - its row's max) + "
        "noise_scale * g) / tau is not finite; use a larger tau or a smaller noise_scale"
    )


# ---------------------------------------------------------------- graphs

#: What every cost of a shortest-path grid must be.
COSTS_RULE = "costs must be non-negative and finite (a path costs the sum of its cells' costs)"

#: What every spanning-tree weight must be.
TREE_RULE = ("weights must be finite or -inf (-inf forbids an edge; +inf has no "
             "maximum-weight tree)")


def _bad_value(fn: str, code: int) -> str:
    """NaN or +inf: the value of a ``NAN`` or ``POSINF`` fault; a RuntimeError
    for a kind the graph solvers do not report."""
    kind = FaultKind.of(code)
    if kind is FaultKind.NAN:
        return "NaN"
    if kind is FaultKind.POSINF:
        return "+inf"
    raise RuntimeError(f"gumbelrs: {fn}: the solver reported a fault of unexpected kind "
                       f"{code!r}; the kernels and the package disagree")


def translate_costs(fn: str, err: BaseException, shape: torch.Size) -> ValueError:
    """The error for a cost the grid solver rejected in costs of ``shape``: NaN
    (``NAN``) or +inf (``POSINF``) at element ``err.args[1]``. A negative cost
    is a ``NAN`` fault too: the caller names negative and NaN costs itself
    before it raises this one."""
    code, pos = err.args[:2]
    value = _bad_value(fn, code)
    return ValueError(f"{fn}: {_where(shape, pos, 'costs')} is {value}; {COSTS_RULE}")


def translate_tree(fn: str, err: BaseException, shape: torch.Size) -> ValueError:
    """The error for a fault the spanning-tree solver found in weights of
    ``shape`` (``(*batch, n, n)``): a NaN or +inf weight (position: the
    element), or a graph that its -inf edges leave disconnected
    (``INFEASIBLE``; position: its index in the batch)."""
    code, pos = err.args[:2]
    if FaultKind.of(code) is FaultKind.INFEASIBLE:
        batch = shape[:-2]
        which = _where(batch, pos, "weights") if batch else "weights"
        return ValueError(f"{fn}: no spanning tree for {which}: its forbidden (-inf) edges "
                          f"leave its {shape[-1]} vertices disconnected")
    value = _bad_value(fn, code)
    return ValueError(f"{fn}: {_where(shape, pos, 'weights')} is {value}; {TREE_RULE}")
