"""Relaxed spanning trees: gumbelrs.structured.relaxed_spanning_tree against
brute-force enumeration of every spanning tree."""

import itertools
import math

import pytest
import torch

import gumbelrs
from gumbelrs import Generator
from gumbelrs.functional import gumbel_noise
from gumbelrs.structured import relaxed_spanning_tree, sample_spanning_tree

from .conftest import raises


def spanning_trees(n):
    """Every spanning tree of the complete graph on n nodes, as lists of edges (i, j), i < j."""
    trees = []
    for edges in itertools.combinations(itertools.combinations(range(n), 2), n - 1):
        root = list(range(n))
        for i, j in edges:
            ri, rj = _find(root, i), _find(root, j)
            if ri == rj:
                break
            root[ri] = rj
        else:
            trees.append(edges)
    return trees


def _find(root, x):
    while root[x] != x:
        x = root[x]
    return x


def brute_marginals(theta):
    """P(edge {i, j} in T) for p(T) ∝ exp(sum_{e in T} theta_e), theta ``(n, n)``
    symmetric (-inf forbids an edge), by summing over every tree; written in
    torch ops, so autograd differentiates it exactly."""
    n = theta.shape[-1]
    trees = spanning_trees(n)
    member = torch.zeros(len(trees), n, n, dtype=theta.dtype)  # (trees, n, n)
    for t, edges in enumerate(trees):
        for i, j in edges:
            member[t, i, j] = member[t, j, i] = 1.0
    scores = torch.stack([sum(theta[i, j] for i, j in edges) for edges in trees])
    return torch.einsum("t,tij->ij", torch.softmax(scores, 0), member)


def symmetric_noise(shape, dtype, seed):
    """The noise of relaxed_spanning_tree and sample_spanning_tree for Generator(seed)."""
    g = gumbel_noise(shape, dtype=dtype, generator=Generator(seed)).triu(1)
    return g + g.transpose(-2, -1)


def random_weights(shape, seed, dtype=torch.float64, scale=1.0):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale
    return (w + w.transpose(-2, -1)) / 2


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_marginals_match_enumeration_of_all_trees(n, tau):
    w = random_weights((3, n, n), n)
    mu = relaxed_spanning_tree(w, tau, generator=Generator(7))
    theta = (w + symmetric_noise((3, n, n), torch.float64, 7)) / tau
    for b in range(3):
        torch.testing.assert_close(mu[b], brute_marginals(theta[b]), rtol=0, atol=1e-10)


def test_forbidden_edges_have_marginal_zero():
    w = random_weights((2, 5, 5), 1, scale=2.0)
    for b, (i, j) in enumerate([(0, 3), (1, 4)]):
        w[b, i, j] = w[b, j, i] = -math.inf
    w[1, 2, 3] = w[1, 3, 2] = -math.inf
    w[1, 0, 2] = w[1, 2, 0] = -math.inf
    mu = relaxed_spanning_tree(w, 0.8, generator=Generator(2))
    theta = (w + symmetric_noise((2, 5, 5), torch.float64, 2)) / 0.8
    for b in range(2):
        torch.testing.assert_close(mu[b], brute_marginals(theta[b]), rtol=0, atol=1e-10)
    assert int((w == -math.inf).sum()) == 8 and torch.all(mu[w == -math.inf] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_marginals_are_symmetric_probabilities_summing_to_n_minus_1(dtype):
    n = 9
    w = random_weights((2, 3, n, n), 3, dtype=dtype, scale=3.0)
    mu = relaxed_spanning_tree(w, 0.5, generator=Generator(4))
    assert mu.shape == (2, 3, n, n) and mu.dtype == dtype
    assert torch.equal(mu, mu.transpose(-2, -1))
    assert torch.equal(mu.diagonal(0, -2, -1), torch.zeros(2, 3, n, dtype=dtype))
    assert torch.all((mu >= 0) & (mu <= 1 + 1e-6))
    torch.testing.assert_close(mu.triu(1).sum((-2, -1)), torch.full((2, 3), n - 1.0, dtype=dtype))


def test_gradient_matches_enumeration():
    """The backward (written out) against autograd through the sum over trees."""
    n = 5
    w = random_weights((2, n, n), 5, scale=1.5)
    w[1, 0, 4] = w[1, 4, 0] = -math.inf
    upstream = torch.randn(2, n, n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = w.clone().requires_grad_()
    (grad,) = torch.autograd.grad(relaxed_spanning_tree(x, 0.7, generator=Generator(8)), x,
                                  upstream)
    xb = w.clone().requires_grad_()
    theta = (xb + symmetric_noise((2, n, n), torch.float64, 8)) / 0.7
    theta = (theta + theta.transpose(-2, -1)) / 2  # each entry of an edge counts half
    ref = torch.stack([brute_marginals(theta[b]) for b in range(2)])
    (expected,) = torch.autograd.grad(ref, xb, upstream)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-10)
    assert torch.equal(grad[1, 0, 4], torch.zeros((), dtype=torch.float64))


def test_gradcheck():
    """Noise fixed by a fresh generator each call; the input is symmetrised
    (finite differences of one entry would break the symmetry)."""
    n = 5
    u = random_weights((1, n, n), 9).triu()
    u[0, 1, 4] = -math.inf

    def f(x):
        return relaxed_spanning_tree(x + x.transpose(-2, -1), 0.9, generator=Generator(10))

    assert torch.autograd.gradcheck(f, (u.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_is_the_sampled_tree_with_the_relaxed_gradient(dtype):
    n = 7
    w = random_weights((4, n, n), 11, dtype=dtype)
    w[0, 2, 5] = w[0, 5, 2] = -math.inf
    x = w.clone().requires_grad_()
    hard = relaxed_spanning_tree(x, 0.5, hard=True, generator=Generator(12))
    assert hard.dtype == dtype
    assert torch.equal(hard, sample_spanning_tree(w, generator=Generator(12)))
    upstream = torch.randn(4, n, n, generator=torch.Generator().manual_seed(13), dtype=dtype)
    (g_hard,) = torch.autograd.grad(hard, x, upstream)
    soft = relaxed_spanning_tree(x, 0.5, generator=Generator(12))
    (g_soft,) = torch.autograd.grad(soft, x, upstream)
    assert torch.equal(g_hard, g_soft)
    no_grad = relaxed_spanning_tree(w, 0.5, hard=True, generator=Generator(12))
    assert torch.equal(no_grad, hard)


def test_one_draw_per_call_and_torch_seed():
    w = random_weights((3, 4, 4), 14)
    gen = Generator(15)
    first = relaxed_spanning_tree(w, generator=gen)
    assert gen.offset == 1
    relaxed_spanning_tree(w, hard=True, generator=gen)
    assert gen.offset == 2
    assert torch.equal(first, relaxed_spanning_tree(w, generator=Generator(15)))
    torch.manual_seed(16)
    soft = relaxed_spanning_tree(w, 0.01)
    torch.manual_seed(16)
    hard = relaxed_spanning_tree(w, hard=True)
    torch.manual_seed(16)
    assert torch.equal(relaxed_spanning_tree(w, 0.01), soft)
    torch.testing.assert_close(soft, hard, rtol=0, atol=1e-3)  # the same noise


def test_same_results_for_any_thread_count():
    w = random_weights((16, 12, 12), 17, scale=2.0)
    upstream = torch.randn(16, 12, 12, generator=torch.Generator().manual_seed(18),
                           dtype=torch.float64)
    out = []
    torch_threads = torch.get_num_threads()
    try:
        for threads in (1, 2):
            gumbelrs.set_num_threads(threads)
            torch.set_num_threads(threads)
            x = w.clone().requires_grad_()
            mu = relaxed_spanning_tree(x, 0.6, generator=Generator(19))
            out.append((mu, *torch.autograd.grad(mu, x, upstream)))
    finally:
        torch.set_num_threads(torch_threads)
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_small_graphs_and_the_diagonal():
    assert torch.equal(relaxed_spanning_tree(torch.zeros(3, 1, 1)), torch.zeros(3, 1, 1))
    mu = relaxed_spanning_tree(torch.tensor([[7.0, -2.0], [-2.0, math.nan]]))
    assert torch.equal(mu, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    w = random_weights((4, 4), 20)
    diag = w.clone()
    diag.diagonal().copy_(torch.tensor([math.nan, math.inf, -math.inf, 3.0]))
    assert torch.equal(relaxed_spanning_tree(diag, generator=Generator(1)),
                       relaxed_spanning_tree(w, generator=Generator(1)))
    assert relaxed_spanning_tree(torch.zeros(0, 5, 5)).shape == (0, 5, 5)


def test_half_precision_weights():
    w = random_weights((2, 5, 5), 21, dtype=torch.float32)
    mu = relaxed_spanning_tree(w.half(), generator=Generator(22))
    assert mu.dtype == torch.float16
    ref = relaxed_spanning_tree(w.half().float(), generator=Generator(22))
    torch.testing.assert_close(mu, ref.half())


def test_inputs_are_not_modified():
    w = random_weights((2, 5, 5), 23)
    w[0, 1, 2] = w[0, 2, 1] = -math.inf
    before = w.clone()
    x = w.clone().requires_grad_()
    relaxed_spanning_tree(x, generator=Generator(1)).sum().backward()
    relaxed_spanning_tree(x, hard=True, generator=Generator(1)).sum().backward()
    assert torch.equal(x.detach(), before)


def test_bad_arguments():
    """The checks and messages of spanning_tree, naming this op."""
    fn = relaxed_spanning_tree
    sq = torch.zeros(3, 3)
    with raises(ValueError, "relaxed_spanning_tree: weights must be a square matrix or a batch "
                            "of them (*batch, n, n), got shape (3, 4)"):
        fn(torch.zeros(3, 4))
    with raises(ValueError, "relaxed_spanning_tree: weights must be a square matrix or a batch "
                            "of them (*batch, n, n), got shape (3,)"):
        fn(torch.zeros(3))
    with raises(ValueError, "relaxed_spanning_tree: weights have n = 0 vertices (shape (2, 0, "
                            "0)); a spanning tree needs at least one"):
        fn(torch.zeros(2, 0, 0))
    with raises(TypeError, "relaxed_spanning_tree: weights must be a floating-point tensor "
                           "(float16, bfloat16, float32 or float64), got dtype torch.int64; "
                           "convert them with weights.double() (exact for integers up to 2**53)"):
        fn(torch.zeros(3, 3, dtype=torch.int64))
    with raises(TypeError, "relaxed_spanning_tree: weights must be a torch.Tensor, got list"):
        fn([[0.0]])
    rule = "weights must be finite or -inf (-inf forbids an edge; +inf has no maximum-weight tree)"
    nan = sq.clone()
    nan[2, 0] = nan[0, 2] = math.nan
    with raises(ValueError, f"relaxed_spanning_tree: weights[0, 2] is NaN; {rule}"):
        fn(nan)
    inf = torch.zeros(2, 3, 3)
    inf[1, 1, 2] = inf[1, 2, 1] = math.inf
    with raises(ValueError, f"relaxed_spanning_tree: weights[1, 1, 2] is +inf; {rule}"):
        fn(inf)
    asym = sq.clone()
    asym[2, 1] = 0.5
    with raises(ValueError, "relaxed_spanning_tree: weights must be symmetric (weights[..., i, j] "
                            "== weights[..., j, i] for i != j; the diagonal is ignored), but "
                            "weights[1, 2] = 0.0 and weights[2, 1] = 0.5"):
        fn(asym)
    apart = torch.zeros(2, 4, 4)
    apart[1, 3, :3] = apart[1, :3, 3] = -math.inf
    for hard in (False, True):
        with raises(ValueError, "relaxed_spanning_tree: no spanning tree for weights[1]: its "
                                "forbidden (-inf) edges leave its 4 vertices disconnected"):
            fn(apart, hard=hard)
    with raises(ValueError, "relaxed_spanning_tree: no spanning tree for weights: its forbidden "
                            "(-inf) edges leave its 4 vertices disconnected"):
        fn(apart[1])
    with raises(ValueError, "relaxed_spanning_tree: tau must be in [2.2250739e-308, "
                            "1.7976931e+308] (positive, normal and finite in float64, the dtype "
                            "the logits are computed in), got 0"):
        fn(sq.double(), 0)
    with raises(ValueError, "relaxed_spanning_tree: tau must be in [1.1754944e-38, "
                            "3.4028235e+38] (positive, normal and finite in float32, the dtype "
                            "the logits are computed in), got -1.0"):
        fn(sq, -1.0)
    with raises(TypeError, "relaxed_spanning_tree: tau must be a positive float, got Tensor "
                           "tensor(1.)"):
        fn(sq, torch.tensor(1.0))
    with raises(TypeError, "relaxed_spanning_tree: hard must be True or False, got int 1"):
        fn(sq, hard=1)
    with raises(TypeError, "relaxed_spanning_tree: generator must be a gumbelrs.Generator or "
                           "None, got torch._C.Generator"):
        fn(sq, generator=torch.Generator())


def test_lost_precision_is_an_error():
    """Perturbed weights spanning thousands of tau: exp of their differences
    underflows (singular) or leaves too few digits (marginals off)."""
    path = torch.full((3, 3), -math.inf, dtype=torch.float64)
    path[0, 1] = path[1, 0] = 0.0
    path[1, 2] = path[2, 1] = -1000.0
    with raises(ValueError, "relaxed_spanning_tree: a reduced Laplacian is numerically singular "
                            "in float64: a node is joined to the others only by edges whose "
                            "exp((w + g) / tau) underflows next to the largest edge's; raise "
                            "tau"):
        relaxed_spanning_tree(path, generator=Generator(1))
    # Two clusters 5 apart, joined by edges 5 below the lighter one: the
    # lighter cluster's marginals are differences of entries of K about
    # exp(100) apart from its edges' exp(-50).
    clusters = random_weights((6, 6), 2)
    clusters[:3, :3] += 10
    clusters[3:, 3:] += 5
    with pytest.raises(ValueError, match=r"^relaxed_spanning_tree: the edge marginals of the graph "
                       r"of weights\[1\] lost their precision in float64 \(they sum to .*, not "
                       r"n - 1 = 5\): .*; raise tau$"):
        relaxed_spanning_tree(torch.stack([random_weights((6, 6), 5), clusters]), 0.1,
                              generator=Generator(3))
