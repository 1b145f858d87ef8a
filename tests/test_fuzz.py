"""Random calls as a hostile user makes them: every public op on random
dtypes, shapes (empty ones included), layouts (transposed, expanded,
sliced), extreme values (NaN, +-inf, the largest and smallest floats,
subnormals) and temperatures (in and out of each dtype's range).

Each call must either return a result within the op's contract (finite,
the right dtype and shape, one-hots with one 1 per row at an unmasked
category, sums of 1, valid indices, gradients without NaN) or raise a
ValueError, TypeError or IndexError whose message starts with the op's
name; it must raise exactly when the input breaks a documented rule; it
never writes to its inputs. The cases come from a fixed seed, so a failure
names a reproducible case.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gumbelrs

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
CASES = 1500


def _compute(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _values(rng, n, dtype):
    """A mixture of ordinary, huge, tiny and special values (float64)."""
    fi = torch.finfo(dtype)
    pool = np.array([0.0, -0.0, fi.max, -fi.max, fi.tiny, fi.tiny / 4, 1e8, -1e8, 1e30, -1e30,
                     math.inf, -math.inf, math.nan])
    kind = rng.integers(0, 4)
    x = rng.normal(0.0, 10.0 ** rng.integers(-3, 4), n)
    if kind >= 1:  # sprinkle specials
        pick = rng.random(n) < (0.05 if kind == 1 else 0.3)
        x[pick] = rng.choice(pool, pick.sum())
    if kind == 3:  # one large offset for the whole tensor
        x = x + rng.choice([1e8, -1e8, 1e16, 3e38, -3e38])
    return x


def _tensor(rng, shape, dtype):
    """Logits of ``shape`` in a random layout (same values, other strides)."""
    layout = rng.integers(0, 4)
    if layout == 1 and len(shape) >= 2:  # transposed
        t = torch.tensor(_values(rng, math.prod(shape), dtype)).view(shape[::-1])
        return t.to(dtype).transpose(0, -1)
    if layout == 2 and len(shape) >= 1 and shape[0] > 0:  # expanded along dim 0
        row = torch.tensor(_values(rng, math.prod(shape[1:]), dtype)).view(1, *shape[1:])
        return row.to(dtype).expand(*shape)
    if layout == 3:  # every other element of a wider tensor
        wide = (*shape[:-1], 2 * shape[-1]) if shape else (2,)
        t = torch.tensor(_values(rng, math.prod(wide), dtype)).view(wide).to(dtype)
        return t[..., ::2] if shape else t[0]
    return torch.tensor(_values(rng, math.prod(shape), dtype)).view(shape).to(dtype)


def _tau(rng, batch, dtype):
    """A temperature and whether it is valid for logits of ``dtype``."""
    fi = torch.finfo(_compute(dtype))
    choice = rng.integers(0, 6)
    if choice == 0:
        t = float(rng.choice([fi.tiny, fi.max, 1e-30, 1e30, 0.5, 1.0, 7.0]))
        return t, True
    if choice == 1:
        bad = [fi.tiny / 4, 0.0, -1.0, math.inf, math.nan, 1e-320]
        if dtype != torch.float64:
            bad.append(1e39)
        return float(rng.choice(bad)), False
    if choice == 2 and batch:
        vals = np.exp(rng.normal(0, 3, batch))
        bad = rng.random() < 0.3 and vals.size > 0
        if bad:
            vals.flat[rng.integers(0, vals.size)] = rng.choice([0.0, -2.0, math.nan, math.inf,
                                                                 fi.tiny / 8])
        t = torch.tensor(vals, dtype=torch.float64)
        return t, not bad and bool((t.to(_compute(dtype)) >= fi.tiny).all())
    return float(np.exp(rng.normal(0, 1))), True


def _unchanged(before, after):
    return torch.equal(before.nan_to_num(7.0), after.nan_to_num(7.0)) and \
        torch.equal(before.isnan(), after.isnan())


def _run(case: int) -> tuple[str, bool]:
    """Runs one case; returns its op and whether it returned a result."""
    rng = np.random.default_rng([20261206, case])
    dtype = DTYPES[rng.integers(0, 4)]
    rank = int(rng.integers(1, 4))
    shape = tuple(int(n) for n in rng.integers(0, 9 if rank > 1 else 40, rank))
    if rng.random() < 0.7:
        shape = tuple(max(n, 1) for n in shape)
    x = _tensor(rng, shape, dtype)
    dim = int(rng.integers(-rank, rank))
    d = dim % rank
    batch = tuple(n for i, n in enumerate(shape) if i != d)
    before = x.clone()
    x64 = x.double()
    nan, posinf = bool(x64.isnan().any()), bool((x64 == math.inf).any())
    masked_row = bool(shape[d] > 0 and (x64 == -math.inf).all(d).any())
    op = ["soft", "hard", "bernoulli", "concrete", "categorical", "topk", "given", "noise"][
        rng.integers(0, 8)]
    grad = dtype in (torch.float32, torch.float64) and rng.random() < 0.5 and x.numel() > 0
    gen = gumbelrs.Generator(case)
    name = {"soft": "gumbel_softmax", "hard": "gumbel_softmax", "bernoulli": "relaxed_bernoulli",
            "concrete": "hard_concrete", "categorical": "sample_categorical",
            "topk": "gumbel_topk", "given": "gumbel_given_argmax", "noise": "gumbel_noise"}[op]
    where = f"case {case}: {op} {dtype} {shape} dim={dim} stride={x.stride()}"
    xin = x.detach().clone().requires_grad_() if grad else x
    rows_ok = not (nan or posinf or masked_row)
    index = None
    if op in ("soft", "hard"):
        tau, tau_ok = _tau(rng, batch, dtype)
        expect_ok = tau_ok and rows_ok

        def call():
            return gumbelrs.gumbel_softmax(xin, tau, hard=op == "hard", dim=dim, generator=gen)
    elif op in ("bernoulli", "concrete"):
        tau, tau_ok = _tau(rng, shape, dtype)
        expect_ok = tau_ok and not nan
        fn = gumbelrs.relaxed_bernoulli if op == "bernoulli" else gumbelrs.hard_concrete

        def call():
            return fn(xin, tau, generator=gen)
    elif op == "categorical":
        n = int(rng.integers(1, 4))
        expect_ok = rows_ok and shape[d] > 0

        def call():
            return gumbelrs.sample_categorical(xin, n, dim, generator=gen)
    elif op == "topk":
        k = int(rng.integers(0, shape[d] + 1))
        live = (x64 > -math.inf).sum(d)
        expect_ok = rows_ok and bool((live >= k).all())

        def call():
            return gumbelrs.gumbel_topk(xin, k, dim, generator=gen)
    elif op == "given":
        low = -1 if rng.random() < 0.1 else 0
        index = torch.tensor(rng.integers(low, max(shape[d], 1), batch), dtype=torch.int64)
        expect_ok = rows_ok and shape[d] > 0
        if expect_ok and index.numel():
            picked = x64.movedim(d, -1).gather(-1, index.clamp(min=0).unsqueeze(-1))
            expect_ok = bool((index >= 0).all()) and bool((picked > -math.inf).all())

        def call():
            return gumbelrs.gumbel_given_argmax(xin, index, 2, dim, generator=gen)
    else:
        expect_ok = True

        def call():
            return gumbelrs.gumbel_noise(shape, dtype=dtype, generator=gen)
    try:
        y = call()
    except (ValueError, TypeError, IndexError) as e:
        assert str(e).startswith(f"{name}: "), f"{where}: unnamed error {e!r}"
        assert not expect_ok, f"{where}: valid input rejected: {e}"
        assert _unchanged(before, x), f"{where}: input modified"
        return op, False
    assert expect_ok, f"{where}: invalid input accepted"
    assert _unchanged(before, x), f"{where}: input modified"
    if op in ("soft", "hard", "bernoulli", "concrete"):
        assert y.dtype == dtype and y.shape == shape, where
        assert not y.isnan().any() and torch.isfinite(y).all(), f"{where}: {y}"
        assert ((y >= 0) & (y <= 1)).all(), where
        mask = (x64 == -math.inf)
        assert (y[mask] == 0).all(), f"{where}: a masked entry is not 0"
        if op == "hard" and y.numel():
            assert ((y == 0) | (y == 1)).all() and (y.sum(d) == 1).all(), where
        if op == "soft" and y.numel():
            tol = 1e-5 if dtype == torch.float64 else 2e-3 * max(shape[d], 1)
            assert ((y.double().sum(d) - 1).abs() <= tol).all(), where
        if grad:
            w = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(case))
            (y * w).sum().backward()
            assert not xin.grad.isnan().any(), f"{where}: NaN gradient"
            assert (xin.grad[mask] == 0).all(), f"{where}: gradient at a masked entry"
    elif op in ("categorical", "topk"):
        assert y.dtype == torch.int64, where
        if y.numel():
            assert ((y >= 0) & (y < shape[d])).all(), where
            moved = x64.movedim(d, -1)
            chosen = moved.gather(-1, y if op == "categorical" else y.movedim(d, -1))
            assert (chosen > -math.inf).all(), f"{where}: a masked category was drawn"
            if op == "topk":
                s = y.movedim(d, -1).sort(-1).values
                assert (s[..., 1:] != s[..., :-1]).all(), f"{where}: repeated index"
    elif op == "given":
        assert y.shape == (2, *shape), where
        assert not y.isnan().any(), f"{where}: NaN"
        if dtype in (torch.float32, torch.float64):  # the half types round to +-inf near max
            finite = torch.isfinite(x64).expand(2, *shape)
            assert torch.isfinite(y[finite]).all(), f"{where}: not finite"
        if y.numel():
            rows = y.movedim(d + 1, -1)
            at = rows.gather(-1, index.expand(2, *batch).unsqueeze(-1)).squeeze(-1)
            assert torch.equal(at, rows.amax(-1)), f"{where}: the conditioned maximum moved"
    else:
        assert torch.isfinite(y).all() and y.shape == shape, where
    return op, True


@pytest.mark.parametrize("block", range(10))
def test_random_calls_succeed_within_contract_or_raise_a_named_error(block):
    outcomes = [_run(case) for case in range(block * CASES // 10, (block + 1) * CASES // 10)]
    # The generator of cases must keep both kinds coming, or the test checks little.
    results = sum(ok for _, ok in outcomes)
    assert 0.3 * len(outcomes) < results < 0.9 * len(outcomes), results
