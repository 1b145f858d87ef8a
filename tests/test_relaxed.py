"""Relaxed sorts and subsets (gumbelrs.structured.soft_sort, stochastic_sort,
relaxed_topk), the ranking metrics, and gumbelrs.nn.SubsetSelector: the
relaxations are distributions with the right mass, converge to the exact
answers, the hard answers are exact and equal the sampling kernels' with the
same noise, and every gradient is checked in float64."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

import gumbelrs
from gumbelrs import Generator, _reference, schedules
from gumbelrs.functional import _noise
from gumbelrs.nn import SubsetSelector
from gumbelrs.structured import (
    SORT_METHODS,
    kendall_tau,
    proportion_all_correct,
    proportion_wrong,
    relaxed_topk,
    sample_permutation,
    soft_sort,
    stochastic_sort,
)

from .conftest import raises


def _scores(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _perm_matrix(perm):
    """``(*, n)`` int64 -> ``(*, n, n)`` with ``P[..., i, perm[i]] = 1``."""
    return nn.functional.one_hot(perm, perm.shape[-1]).double()


def _sorted_desc(s):
    """The argsort of decreasing scores, equal scores in increasing index order."""
    return torch.tensor([sorted(range(len(r)), key=lambda j: (-r[j], j)) for r in s.tolist()])


def _plain_topk(logits, g, k, tau):
    """Xie and Ermon's relaxed top-k written plainly: k softmaxes, log(1 - a) added."""
    w = _reference.perturbed(logits, g)
    out = torch.zeros_like(w)
    for _ in range(k):
        a = torch.softmax(w / tau, -1)
        out = out + a
        w = w + torch.log1p(-a)
    return out


# ------------------------------------------------------------------------ soft_sort


@pytest.mark.parametrize("method", SORT_METHODS)
def test_soft_sort_is_unimodal_row_stochastic_and_sorts_decreasing(method):
    s = _scores(2, 3, 6)
    perm = _sorted_desc(s.reshape(-1, 6)).reshape(2, 3, 6)
    for tau in (10.0, 1.0, 0.1):
        p = soft_sort(s, tau, method=method)
        assert p.shape == (2, 3, 6, 6) and p.dtype == torch.float64
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 6, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
        # Unimodal: row i peaks at the item with the i-th largest score, at every temperature.
        assert torch.equal(p.argmax(-1), perm)
    sorted_s = (soft_sort(s, 1e-5, method=method) @ s[..., None]).squeeze(-1)
    torch.testing.assert_close(sorted_s, s.sort(-1, descending=True).values)


@pytest.mark.parametrize("method", SORT_METHODS)
def test_soft_sort_converges_to_the_hard_permutation(method):
    s = torch.tensor([[0.3, -1.2, 2.0, 0.1, 0.9], [5.0, -5.0, 0.0, 2.5, -2.5]],
                     dtype=torch.float64)
    hard = soft_sort(s, hard=True, method=method)
    gaps = [float((soft_sort(s, tau, method=method) - hard).abs().max())
            for tau in (1.0, 0.1, 0.01, 1e-3)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-12, gaps
    # A temperature near float32's smallest normal value: no overflow, no NaN.
    tiny = soft_sort(s.float(), 1e-37, method=method)
    assert torch.equal(tiny, hard.float())


@pytest.mark.parametrize("method", SORT_METHODS)
def test_hard_soft_sort_is_the_exact_argsort_matrix_with_the_relaxed_gradient(method):
    s = _scores(3, 7, seed=1).requires_grad_()
    hard = soft_sort(s, 0.5, hard=True, method=method)
    assert torch.equal(hard, _perm_matrix(_sorted_desc(s.detach())))  # exactly 0.0 and 1.0
    w = _scores(3, 7, 7, seed=2)
    soft = soft_sort(s, 0.5, method=method)
    (g_hard,) = torch.autograd.grad((hard * w).sum(), s)
    (g_soft,) = torch.autograd.grad((soft * w).sum(), s)
    assert torch.equal(g_hard, g_soft)
    # Ties: equal scores in increasing index order.
    tied = torch.tensor([1.0, 3.0, 1.0, 3.0, -0.0, 0.0])
    assert torch.equal(soft_sort(tied, hard=True, method=method).argmax(-1),
                       torch.tensor([1, 3, 0, 2, 4, 5]))


@pytest.mark.parametrize("method", SORT_METHODS)
def test_soft_sort_gradcheck(method):
    s = _scores(2, 5, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: soft_sort(x, 0.7, method=method), (s,))
    assert torch.autograd.gradgradcheck(lambda x: soft_sort(x, 0.7, method=method), (s[:, :3],))


def test_soft_sort_batch_shapes_and_dtypes():
    for shape in [(1,), (4,), (0, 3), (2, 3, 4)]:
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            s = torch.randn(shape).to(dtype)
            before = s.clone()
            for hard in (False, True):
                p = soft_sort(s, 0.5, hard=hard)
                assert p.shape == (*shape, shape[-1]) and p.dtype == dtype
            assert torch.equal(s, before)  # inputs are never modified
    # float16 is computed in float32.
    s = _scores(3, 5, dtype=torch.float32)
    assert torch.equal(soft_sort(s.half(), 0.5), soft_sort(s.half().float(), 0.5).half())


@pytest.mark.parametrize("hard", [False, True])
def test_soft_sort_forward_mode_and_vmap(hard):
    s = _scores(3, 5, seed=4)
    t = _scores(3, 5, seed=5)
    _, jvp = torch.func.jvp(lambda x: soft_sort(x, 0.5, hard=hard), (s,), (t,))
    _, ref = torch.func.jvp(lambda x: soft_sort(x, 0.5), (s,), (t,))
    torch.testing.assert_close(jvp, ref)
    assert torch.equal(torch.func.vmap(lambda x: soft_sort(x, 0.5, hard=hard))(s),
                       soft_sort(s, 0.5, hard=hard))


# ------------------------------------------------------------------ stochastic_sort


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_stochastic_sort_is_sample_permutation_bitwise(dtype):
    s = _scores(2, 3, 9, dtype=dtype, seed=6) * 3
    p = stochastic_sort(s, 0.5, 4, hard=True, generator=Generator(7))
    assert p.shape == (2, 3, 4, 9, 9) and p.dtype == dtype
    perm = sample_permutation(s, 4, generator=Generator(7))
    assert torch.equal(p, _perm_matrix(perm).to(dtype))


@pytest.mark.parametrize("method", SORT_METHODS)
def test_stochastic_sort_relaxes_the_sort_of_the_perturbed_scores(method):
    s = _scores(2, 6, seed=8)
    p = stochastic_sort(s, 0.3, 5, method=method, generator=Generator(9))
    g = _noise("gumbel", [2, 5, 6], dtype=torch.float64, generator=Generator(9))
    w = _reference.perturbed(s.unsqueeze(-2).expand(2, 5, 6), g)
    torch.testing.assert_close(p, soft_sort(w, 0.3, method=method), rtol=0, atol=1e-13)
    assert torch.equal(p.argmax(-1), sample_permutation(s, 5, generator=Generator(9)))


@pytest.mark.parametrize("method", SORT_METHODS)
def test_stochastic_sort_gradients(method):
    s = _scores(2, 4, seed=10).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: stochastic_sort(x, 0.6, 3, method=method, generator=Generator(11)), (s,))
    w = _scores(2, 3, 4, 4, seed=12)
    (g_hard,) = torch.autograd.grad(
        (stochastic_sort(s, 0.6, 3, hard=True, method=method, generator=Generator(13))
         * w).sum(), s)
    (g_soft,) = torch.autograd.grad(
        (stochastic_sort(s, 0.6, 3, method=method, generator=Generator(13)) * w).sum(), s)
    assert torch.equal(g_hard, g_soft)


def test_stochastic_sort_streams():
    s = _scores(3, 8, dtype=torch.float32, seed=14)
    gen = Generator(15)
    first, second = stochastic_sort(s, 0.5, 2, generator=gen), stochastic_sort(s, 0.5, 2,
                                                                                generator=gen)
    assert torch.equal(first, stochastic_sort(s, 0.5, 2, generator=Generator(15)))
    assert not torch.equal(first, second)  # each call draws new noise
    # generator=None follows torch's seed, as sample_permutation does.
    torch.manual_seed(16)
    a = stochastic_sort(s, 0.5, 2, hard=True)
    torch.manual_seed(16)
    assert torch.equal(a.argmax(-1), sample_permutation(s, 2))
    torch.manual_seed(16)
    assert torch.equal(a, stochastic_sort(s, 0.5, 2, hard=True))


# --------------------------------------------------------------------- relaxed_topk


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relaxed_topk_sums_to_k_and_hard_is_the_gumbel_topk(dtype):
    x = _scores(4, 3, 10, dtype=dtype, seed=17)
    x[0, 0, :4] = -math.inf
    for k in (1, 3, 6):
        y = relaxed_topk(x, k, 0.5, generator=Generator(18))
        assert y.shape == x.shape and y.dtype == dtype and (y >= 0).all()
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(y.sum(-1), torch.full((4, 3), float(k), dtype=dtype),
                                   rtol=0, atol=20 * k * eps)
        assert (y[0, 0, :4] == 0).all()  # masked out
        h = relaxed_topk(x, k, 0.5, hard=True, generator=Generator(18))
        idx = gumbelrs.gumbel_topk(x, k, generator=Generator(18))
        assert torch.equal(h, torch.zeros_like(x).scatter_(-1, idx, 1.0))


def test_relaxed_topk_is_xie_and_ermons_formula_with_the_topk_noise():
    x = _scores(5, 8, seed=19)
    g = _noise("gumbel", [5, 8], dtype=torch.float64, generator=Generator(20))
    torch.testing.assert_close(relaxed_topk(x, 3, 0.7, generator=Generator(20)),
                               _plain_topk(x, g, 3, 0.7), rtol=0, atol=1e-13)
    # As tau -> 0 the relaxation becomes the hard k-hot of the same noise.
    hard = relaxed_topk(x, 3, hard=True, generator=Generator(20))
    torch.testing.assert_close(relaxed_topk(x, 3, 1e-4, generator=Generator(20)), hard,
                               rtol=0, atol=1e-9)


def test_relaxed_topk_gradients():
    x = _scores(3, 6, seed=21).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: relaxed_topk(t, 3, 0.8, generator=Generator(22)), (x,))
    w = _scores(3, 6, seed=23)
    (g_hard,) = torch.autograd.grad(
        (relaxed_topk(x, 3, 0.8, hard=True, generator=Generator(24)) * w).sum(), x)
    (g_soft,) = torch.autograd.grad(
        (relaxed_topk(x, 3, 0.8, generator=Generator(24)) * w).sum(), x)
    assert torch.equal(g_hard, g_soft)


def test_relaxed_topk_masks_and_dominant_logits_keep_gradients_finite():
    # A dominant logit makes the first softmax exactly 1 in float64: log(1 - a) must still
    # push it down (a clamp would cap the push and select it again), with finite gradients.
    x = torch.tensor([[400.0, 0.0, 0.5, -math.inf, -1.0],
                      [0.0, -math.inf, -math.inf, 1.0, -math.inf]], dtype=torch.float64,
                     requires_grad=True)
    for tau, top in ((1.0, 1.5), (0.05, 1.0)):
        y = relaxed_topk(x, 2, tau, generator=Generator(25))
        # At tau = 1 the second softmax weighs item 0 by the mass of the others, so it gets
        # half of it; a smaller tau pushes it down harder.
        assert math.isclose(y[0, 0].item(), top, abs_tol=1e-9), y
        assert y[0, 3] == 0 and (y[1, [1, 2, 4]] == 0).all()
        torch.testing.assert_close(y.sum(-1), torch.full((2,), 2.0, dtype=torch.float64))
        (grad,) = torch.autograd.grad((y * _scores(2, 5, seed=26)).sum(), x)
        assert torch.isfinite(grad).all()
        assert (grad[0, 3] == 0) and (grad[1, [1, 2, 4]] == 0).all()
    # Exactly k unmasked: the hard sample takes both.
    assert torch.equal(relaxed_topk(x[1:], 2, 0.3, hard=True, generator=Generator(27)),
                       torch.tensor([[1.0, 0, 0, 1, 0]], dtype=torch.float64))


def test_relaxed_topk_thread_count_and_streams():
    x = _scores(64, 33, dtype=torch.float32, seed=28)
    outs = []
    for threads in (1, 2):
        gumbelrs.set_num_threads(threads)
        outs.append((relaxed_topk(x, 4, 0.5, generator=Generator(29)),
                     relaxed_topk(x, 4, 0.5, hard=True, generator=Generator(29)),
                     stochastic_sort(x[:8], 0.5, 3, generator=Generator(29)),
                     stochastic_sort(x[:8], 0.5, 3, hard=True, generator=Generator(29))))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    torch.manual_seed(30)
    a = relaxed_topk(x, 4, 0.5, hard=True)
    torch.manual_seed(30)
    idx = gumbelrs.gumbel_topk(x, 4)
    assert torch.equal(a, torch.zeros_like(x).scatter_(-1, idx, 1.0))
    before = x.clone()
    relaxed_topk(x, 4, generator=Generator(31))
    assert torch.equal(x, before)


@pytest.mark.parametrize("hard", [False, True])
def test_vmap_draws_as_one_stacked_call(hard):
    x = _scores(4, 6, dtype=torch.float32, seed=32)

    def each(op):
        return torch.func.vmap(lambda s: op(s, generator=Generator(3)), randomness="different")(x)

    def topk(s, generator):
        return relaxed_topk(s, 2, 0.5, hard=hard, generator=generator)

    def sort(s, generator):
        return stochastic_sort(s, 0.5, 2, hard=hard, generator=generator)

    assert torch.equal(each(topk), topk(x, Generator(3)))
    assert torch.equal(each(sort), sort(x, Generator(3)))


# ------------------------------------------------------------------------- bad input


def test_bad_sort_and_subset_arguments():
    for fn in (soft_sort, stochastic_sort):
        name = fn.__name__
        with raises(ValueError, f"{name}: scores must have at least 1 dimension(s), got a 0-d "
                                "tensor"):
            fn(torch.tensor(1.0))
        with raises(ValueError, f"{name}: scores have no item along the last dimension "
                                "(size 0)"):
            fn(torch.zeros(2, 0))
        with raises(TypeError, f"{name}: scores must be a floating-point tensor (float16, "
                               "bfloat16, float32 or float64), got dtype torch.int64"):
            fn(torch.arange(3))
        for bad in ("nan", "inf", "-inf"):
            with raises(ValueError, f"{name}: scores[1, 0] is {bad}; scores must be finite: a "
                                    "ranking places every item (drop the items that must not "
                                    "be ranked)"):
                fn(torch.tensor([[0.0, 1.0], [float(bad), 2.0]]))
        for tau in (0.0, -1.0, math.inf, math.nan, 1e-39):
            with raises(ValueError, f"{name}: tau must be in [1.1754944e-38, 3.4028235e+38] "
                                    "(positive, normal and finite in float32, the dtype the "
                                    f"logits are computed in), got {tau}"):
                fn(torch.zeros(3), tau)
        with raises(TypeError, f"{name}: tau must be a positive float, got Tensor "
                               "tensor(0.5000)"):
            fn(torch.zeros(3), torch.tensor(0.5))
        with raises(ValueError, f"{name}: method must be one of ('neuralsort', 'softsort'), "
                                "got 'sinkhorn'"):
            fn(torch.zeros(3), method="sinkhorn")
        with raises(TypeError, f"{name}: hard must be True or False, got int 1"):
            fn(torch.zeros(3), hard=1)
    with raises(ValueError, "stochastic_sort: n_samples must be an int in [1, 2147483647], "
                            "got 0"):
        stochastic_sort(torch.zeros(3), 1.0, 0)
    with raises(TypeError, "stochastic_sort: generator must be a gumbelrs.Generator or None, "
                           "got torch._C.Generator"):
        stochastic_sort(torch.zeros(3), generator=torch.Generator())

    with raises(ValueError, "relaxed_topk: logits must have at least 1 dimension(s), got a 0-d "
                            "tensor"):
        relaxed_topk(torch.tensor(1.0), 1)
    with raises(ValueError, "relaxed_topk: logits have no category along the last dimension "
                            "(size 0)"):
        relaxed_topk(torch.zeros(2, 0), 1)
    for k in (0, 4):
        with raises(ValueError, "relaxed_topk: k must be an int in [1, 3] (the size of logits "
                                f"along the last dimension), got {k}"):
            relaxed_topk(torch.zeros(3), k)
    with raises(TypeError, "relaxed_topk: logits must be a floating-point tensor (float16, "
                           "bfloat16, float32 or float64), got dtype torch.int32"):
        relaxed_topk(torch.zeros(3, dtype=torch.int32), 1)
    with raises(ValueError, "relaxed_topk: tau must be in [2.2250739e-308, 1.7976931e+308] "
                            "(positive, normal and finite in float64, the dtype the logits are "
                            "computed in), got 0"):
        relaxed_topk(torch.zeros(3, dtype=torch.float64), 1, 0)
    with raises(ValueError, "relaxed_topk: logits[1, 0] is NaN; logits must be finite or -inf "
                            "(a -inf logit masks its category out)"):
        relaxed_topk(torch.tensor([[0.0, 1.0], [math.nan, 2.0]]), 1)
    with raises(ValueError, "relaxed_topk: logits[0, 1] is +inf; logits must be finite or -inf "
                            "(-inf masks a category out; +inf has no probability distribution)"):
        relaxed_topk(torch.tensor([[0.0, math.inf], [0.0, 2.0]]), 1)
    with raises(ValueError, "relaxed_topk: k=2 but logits[1, :] has only 1 categories that are "
                            "not -inf"):
        relaxed_topk(torch.tensor([[0.0, 1.0, 2.0], [-math.inf, 0.0, -math.inf]]), 2)


# -------------------------------------------------------------------------- metrics


def test_metrics_match_scipy_and_plain_counts():
    g = torch.Generator().manual_seed(32)
    for n in (2, 3, 9):
        pred = torch.stack([torch.randperm(n, generator=g) for _ in range(12)]).reshape(3, 4, n)
        target = torch.stack([torch.randperm(n, generator=g) for _ in range(12)]).reshape(3, 4, n)
        target[0, 0] = pred[0, 0]
        tau = kendall_tau(pred, target)
        assert tau.shape == (3, 4) and tau.dtype == torch.get_default_dtype()
        ref = [stats.kendalltau(p, t).statistic
               for p, t in zip(pred.reshape(-1, n).tolist(), target.reshape(-1, n).tolist())]
        torch.testing.assert_close(tau.double().flatten(), torch.tensor(ref, dtype=torch.float64),
                                   rtol=0, atol=1e-6)
        all_correct = proportion_all_correct(pred, target)
        assert all_correct.shape == () and math.isclose(
            float(all_correct), sum(p == t for p, t in zip(pred.reshape(-1, n).tolist(),
                                                           target.reshape(-1, n).tolist())) / 12,
            rel_tol=1e-6)
        wrong = proportion_wrong(pred, target)
        assert wrong.shape == () and math.isclose(
            float(wrong), float((pred != target).sum()) / pred.numel(), rel_tol=1e-6)
    ident = torch.arange(6)
    assert float(kendall_tau(ident, ident)) == 1.0 and kendall_tau(ident, ident).shape == ()
    assert float(kendall_tau(ident.flip(0), ident)) == -1.0
    assert float(proportion_wrong(ident.flip(0), ident)) == 1.0
    assert kendall_tau(torch.zeros(0, 4, dtype=torch.int64),
                       torch.zeros(0, 4, dtype=torch.int64)).shape == (0,)
    # Many rows of a long permutation go through the pair counts in several chunks.
    big = torch.stack([torch.randperm(300, generator=g) for _ in range(400)])
    torch.testing.assert_close(kendall_tau(299 - big, big), torch.full((400,), -1.0))
    torch.testing.assert_close(kendall_tau(big[:3], big[3:6]),
                               torch.tensor([stats.kendalltau(big[i], big[i + 3]).statistic
                                             for i in range(3)], dtype=torch.float32))


def test_bad_metric_arguments():
    p = torch.tensor([[0, 1, 2], [2, 1, 0]])
    with raises(TypeError, "kendall_tau: pred must be an int64 tensor of permutations, got "
                           "dtype torch.float32"):
        kendall_tau(p.float(), p)
    with raises(TypeError, "proportion_wrong: target must be a torch.Tensor, got list"):
        proportion_wrong(p, [0, 1, 2])
    with raises(ValueError, "proportion_all_correct: pred must have at least 1 dimension (the "
                            "items), got a 0-d tensor"):
        proportion_all_correct(torch.tensor(0), torch.tensor(0))
    with raises(ValueError, "kendall_tau: pred and target must have the same shape, got (2, 3) "
                            "and (3,)"):
        kendall_tau(p, p[0])
    with raises(ValueError, "kendall_tau: pred and target need at least 2 item(s) along the "
                            "last dimension (a pair of items to compare), got shape (4, 1)"):
        kendall_tau(torch.zeros(4, 1, dtype=torch.int64), torch.zeros(4, 1, dtype=torch.int64))
    with raises(ValueError, "proportion_wrong: pred and target need at least 1 item(s) along "
                            "the last dimension (an item), got shape (4, 0)"):
        proportion_wrong(torch.zeros(4, 0, dtype=torch.int64), torch.zeros(4, 0, dtype=torch.int64))
    with raises(ValueError, "proportion_wrong: pred and target have no row (shape (0, 3)); the "
                            "proportion of none is undefined"):
        proportion_wrong(torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, 3, dtype=torch.int64))
    with raises(ValueError, "kendall_tau: target[1] must be a permutation of 0..2 (each index "
                            "once), but 2 is missing from it"):
        kendall_tau(p, torch.tensor([[0, 1, 2], [1, 1, 0]]))
    with raises(ValueError, "proportion_all_correct: pred must be a permutation of 0..2 (each "
                            "index once), but 0 is missing from it"):
        proportion_all_correct(torch.tensor([3, 1, 2]), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------- SubsetSelector


def test_subset_selector_recovers_the_features_that_matter():
    """Feature selection as apps.feature_selection does it, with one selection
    shared by every example (logits: one parameter per feature), trained with
    a classifier: the label depends on features 0, 1 and 2 of 12 only."""
    for seed in range(3):
        torch.manual_seed(seed)
        x = torch.randn(256, 12)
        y = (x[:, 0] - x[:, 1] + x[:, 2] > 0).long()
        logits = nn.Parameter(torch.zeros(12))
        selector = SubsetSelector(12, 3, tau=schedules.ExponentialDecay(1.0, 0.02, 0.1),
                                  generator=Generator(seed))
        predictor = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
        opt = torch.optim.Adam([logits, *predictor.parameters()], lr=0.05)
        for _ in range(150):
            mask = selector(logits.expand(len(x), -1))  # (256, 12), each row sums to 3
            loss = nn.functional.cross_entropy(predictor(x * mask), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            selector.step()
        assert selector.temperature() == 0.1
        selector.eval()
        with torch.no_grad():
            # (Every seed recovered the three, with accuracy >= 0.97, when this was written.)
            assert sorted(selector.selected(logits).tolist()) == [0, 1, 2], (seed, logits)
            mask = selector(logits)
            assert torch.equal(mask, (torch.arange(12) < 3).float())
            acc = (predictor(x * mask).argmax(-1) == y).float().mean()
        assert acc > 0.9, (seed, acc)


def test_subset_selector_modes_and_arguments():
    sel = SubsetSelector(5, 2, tau=0.5, generator=Generator(35))
    logits = _scores(4, 5, dtype=torch.float32, seed=36)
    torch.testing.assert_close(sel(logits), relaxed_topk(logits, 2, 0.5, generator=Generator(35)))
    sel.hard = True
    h = sel(logits)
    assert set(h.unique().tolist()) == {0.0, 1.0} and (h.sum(-1) == 2).all()
    sel.eval()
    tied = torch.tensor([1.0, 2.0, 2.0, 0.0, 2.0])
    assert torch.equal(sel.selected(tied), torch.tensor([1, 2]))
    assert torch.equal(sel(tied), torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]))
    assert "SubsetSelector(n_features=5, k=2, tau=0.5, hard=True)" == repr(sel)
    with raises(ValueError, "SubsetSelector: k must be an int in [1, 4] (at most n_features), "
                            "got 5"):
        SubsetSelector(4, 5)
    with raises(ValueError, "SubsetSelector: tau must be a positive finite number or a "
                            "Schedule, got 0"):
        SubsetSelector(4, 2, tau=0)
    with raises(ValueError, "SubsetSelector: logits must have n_features=5 in its last "
                            "dimension, got shape (2, 4)"):
        sel(torch.ones(2, 4))
    sched = SubsetSelector(4, 2, tau=schedules.ExponentialDecay(1.0, 0.5, 0.1))
    sched.step(3)
    again = SubsetSelector(4, 2, tau=schedules.ExponentialDecay(1.0, 0.5, 0.1))
    again.load_state_dict(sched.state_dict())
    assert again.temperature() == sched.temperature() == math.exp(-1.5)
    assert "SubsetSelector" in gumbelrs.nn.__all__
    assert {"soft_sort", "stochastic_sort", "relaxed_topk", "kendall_tau"} <= set(
        gumbelrs.structured.__all__)
