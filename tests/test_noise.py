"""Gumbel noise: distribution, tails, dtypes and agreement with its formula."""

import pytest
import torch
from scipy import stats

import gumbelrs
from gumbelrs import _reference
from gumbelrs.functional import _noise

from .conftest import raises


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_noise_passes_kolmogorov_smirnov(gen, dtype):
    # Under the null the p-value is uniform: a fixed seed fails with probability 1e-4.
    g = gumbelrs.gumbel_noise((200, 1000), dtype=dtype, generator=gen)
    assert g.shape == (200, 1000) and g.dtype == dtype
    assert stats.kstest(g.flatten().double().numpy(), "gumbel_r").pvalue > 1e-4


def test_logistic_noise_passes_kolmogorov_smirnov(gen):
    v = _noise("logistic", 200_000, generator=gen)
    assert stats.kstest(v.double().numpy(), "logistic").pvalue > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_is_the_formula_of_its_uniform(dtype):
    v = _noise("uniform", 100_000, dtype=dtype, generator=gumbelrs.Generator(5))
    assert bool(((v > 0) & (v < 1)).all())
    g = gumbelrs.gumbel_noise(100_000, dtype=dtype, generator=gumbelrs.Generator(5))
    l_ = _noise("logistic", 100_000, dtype=dtype, generator=gumbelrs.Generator(5))
    # Our log/log1p are within 2 ulp of the correctly rounded ones; the noise
    # composes two of them, and -log(E) amplifies E's relative error by
    # 1/|log E| near E = 1 (g near 0), so compare in absolute terms there.
    eps = torch.finfo(dtype).eps
    ref_g = _reference.gumbel_from_uniform(v)
    assert ((g - ref_g).abs() <= 8 * eps * ref_g.abs().clamp_min(1.0)).all()
    ref_l = _reference.logistic_from_uniform(v)
    assert ((l_ - ref_l).abs() <= 8 * eps * ref_l.abs().clamp_min(1.0)).all()


def test_many_draws_stay_finite_and_reach_the_upper_tail():
    # (The extreme words 0 and 2**32-1 are checked in the Rust tests: >= 20, finite.)
    big = gumbelrs.gumbel_noise(2_000_000, generator=gumbelrs.Generator(1))
    assert torch.isfinite(big).all()
    # P(max of 2e6 Gumbels < 11) = exp(-2e6 * e^-11) < 1e-14.
    assert big.max() > 11


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_noise_is_the_rounded_float32_noise(dtype):
    a = gumbelrs.gumbel_noise(1000, dtype=dtype, generator=gumbelrs.Generator(2))
    b = gumbelrs.gumbel_noise(1000, generator=gumbelrs.Generator(2))
    assert a.dtype == dtype
    assert torch.equal(a, b.to(dtype))


def test_noise_shapes_and_errors():
    assert gumbelrs.gumbel_noise(0).shape == (0,)
    assert gumbelrs.gumbel_noise([2, 0, 3]).shape == (2, 0, 3)
    assert gumbelrs.gumbel_noise(()).shape == ()
    with raises(TypeError, "gumbel_noise: shape must be a sequence of non-negative ints, "
                "got (2, -1)"):
        gumbelrs.gumbel_noise((2, -1))
    with raises(TypeError, "gumbel_noise: dtype must be float16, bfloat16, float32 or float64, "
                "got torch.int32"):
        gumbelrs.gumbel_noise(3, dtype=torch.int32)
    with raises(TypeError, "gumbel_noise: generator must be a gumbelrs.Generator or None, "
                "got torch._C.Generator"):
        gumbelrs.gumbel_noise(3, generator=torch.Generator())
