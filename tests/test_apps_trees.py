"""apps.trees: the random trees are uniform labelled trees, the samples have
the dependence of the tree model, Chow-Liu and the agreement tree recover
the trees from many samples, the scores count edges right, bad
configurations are refused, and the tiny run learns and resumes."""

import itertools

import pytest
import torch
from scipy import stats

from gumbelrs.apps import trees

from .conftest import raises


def edge_set(parent):
    return frozenset(frozenset((c, int(p))) for c, p in enumerate(parent.tolist()) if p >= 0)


def test_random_trees_are_connected_trees_listed_top_down():
    parent, order = trees.random_trees(500, 9, torch.Generator().manual_seed(0))
    assert (parent[:, 8] == -1).all() and (parent[:, :8] >= 0).all()  # n - 1 edges, root 8
    a = trees.adjacency(parent)
    assert torch.equal(a, a.transpose(1, 2)) and (a.sum((1, 2)) == 16).all()
    reach = torch.linalg.matrix_power(torch.eye(9) + a, 8)
    assert (reach > 0).all()  # connected: with n - 1 edges, a tree
    position = order.argsort(1)
    assert torch.equal(order.sort(1).values, torch.arange(9).expand(500, 9))
    child = parent >= 0
    assert (position.gather(1, parent.clamp_min(0))[child] < position[child]).all()


def test_random_trees_are_uniform_over_the_16_labelled_trees_on_4_nodes():
    parent, _ = trees.random_trees(32000, 4, torch.Generator().manual_seed(1))
    counts = {}
    for p in parent:
        counts[edge_set(p)] = counts.get(edge_set(p), 0) + 1
    # Cayley: 4**2 trees, each a set of 3 edges that connects the 4 nodes.
    assert len(counts) == 16
    observed = torch.tensor(list(counts.values()), dtype=torch.float64)
    chi2 = float(((observed - 2000) ** 2 / 2000).sum())
    # Uniform trees exceed this 15-dof quantile with probability 1e-6 (the false-failure rate).
    assert chi2 < stats.chi2.ppf(1 - 1e-6, 15), chi2


def test_samples_have_the_pairwise_agreement_of_the_tree_model():
    """Along a path of edges with flips f_e, P(x_i = x_j) = 1/k + (1 - 1/k)
    prod_e (1 - f_e) (each edge keeps the value with probability 1 - f_e, and
    a uniform value is uniform whatever follows): checked for every pair."""
    n, k, m = 6, 3, 200_000
    g = torch.Generator().manual_seed(2)
    parent, order = trees.random_trees(1, n, g)
    flip = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.2, 0.0]])  # the root's entry is unused
    x = trees.sample_tree_model(parent, order, flip, m, k, g)[0]  # (m, n)
    assert x.min() == 0 and x.max() == k - 1

    def ancestors(i):
        path = [i]
        while parent[0, path[-1]] >= 0:
            path.append(int(parent[0, path[-1]]))
        return path

    for i, j in itertools.combinations(range(n), 2):
        up_i, up_j = ancestors(i), ancestors(j)
        edges = set(up_i) ^ set(up_j)  # the children of the path's edges
        keep = torch.prod(1 - flip[0, sorted(edges)]).item()
        expected = 1 / k + (1 - 1 / k) * keep
        got = (x[:, i] == x[:, j]).double().mean().item()
        # 5 binomial sd: each of the 15 pairs fails with probability 6e-7.
        assert abs(got - expected) < 5 * (expected * (1 - expected) / m) ** 0.5, (i, j)
    frequencies = torch.bincount(x.flatten(), minlength=k) / x.numel()
    assert (frequencies - 1 / k).abs().max() < 0.005  # uniform marginals


def test_adjacent_pairs_carry_more_information_and_it_is_sklearns():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    config = trees.Config(variables=(10,), train_instances=40, test_instances=10)
    truth, x = trees.problem(10, config, 3)
    data = trees.instances(truth, x[:, :100], 3)
    mi = trees.mutual_information(data.joint, data.marginal)  # (50, 10, 10)
    off = 1 - torch.eye(10)
    adjacent = float((mi * truth).sum() / truth.sum())
    other = float((mi * (off - truth)).sum() / (off - truth).sum())
    assert adjacent > 3 * other, (adjacent, other)
    for c, i, j in [(0, 1, 2), (7, 0, 9), (49, 4, 3)] + [
            tuple(torch.randint(0, 10, (3,), generator=g).tolist()) for _ in range(20)]:
        c = c % 50
        want = sklearn.mutual_info_score(x[c, :100, i].numpy(), x[c, :100, j].numpy())
        assert float(mi[c, i, j]) == pytest.approx(want, rel=1e-5)  # float32 frequencies


def test_chow_liu_and_agreement_trees_recover_the_trees_from_many_samples():
    config = trees.Config(variables=(12,), samples=(4000,), train_instances=1,
                          test_instances=39)
    truth, x = trees.problem(12, config, 4)
    data = trees.instances(truth, x, 3)
    assert torch.equal(trees.chow_liu(data), truth)
    assert torch.equal(trees.agreement_tree(data), truth)
    # From 20 samples they are far from it (and the scores say so).
    few = trees.instances(truth, x[:, :20], 3)
    assert trees.edge_scores(trees.chow_liu(few), truth)["exact"] < 0.2


def test_edge_scores_and_top_edges():
    truth = trees.adjacency(torch.tensor([[1, 2, 3, -1]]))  # the path 0-1-2-3
    w = torch.tensor([[0.0, 5.0, 4.0, 1.0],
                      [5.0, 0.0, 3.0, 2.0],
                      [4.0, 3.0, 0.0, 6.0],
                      [1.0, 2.0, 6.0, 0.0]])[None]
    top = trees.top_edges(w, 3)  # 2-3, 0-1, 0-2: a cycle-free guess with one edge wrong
    assert top[0].nonzero().tolist() == [[0, 1], [0, 2], [1, 0], [2, 0], [2, 3], [3, 2]]
    assert trees.edge_scores(top, truth) == {"precision": 2 / 3, "recall": 2 / 3, "exact": 0.0,
                                             "edges": 3.0}
    both = torch.cat([truth, (w > 2.5).float()])  # right; then 4 edges, 3 of them true
    assert trees.edge_scores(both, torch.cat([truth, truth])) == {
        "precision": 6 / 7, "recall": 1.0, "exact": 0.5, "edges": 3.5}
    assert torch.equal(trees.symmetric(torch.tensor([[1.0, 2, 3, 4, 5, 6]]), 4)[0],
                       torch.tensor([[0.0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]]))


@pytest.mark.parametrize("method", trees.METHODS)
def test_relaxed_structures_are_symmetric_and_the_decoder_starts_at_chance(method):
    import math

    import gumbelrs

    n, k = 7, 3
    w = torch.randn(5, n * (n - 1) // 2, generator=torch.Generator().manual_seed(5))
    a = trees.relaxed_structure(method, w, n, 0.5, gumbelrs.Generator(5))
    assert a.shape == (5, n, n) and torch.equal(a, a.transpose(1, 2))
    assert (a.diagonal(dim1=1, dim2=2) == 0).all() and (a >= 0).all()
    if method != "topk":  # Xie and Ermon's relaxed k-hot may exceed 1 (two items: p + 1/2)
        assert (a <= 1).all()
    if method != "concrete":  # a relaxed tree or (n - 1)-subset of edges
        assert torch.allclose(a.sum((1, 2)) / 2, torch.full((5,), n - 1.0), atol=1e-4)
    x = torch.randint(0, k, (5, 11, n), generator=torch.Generator().manual_seed(6))
    loss = trees.PseudoLikelihood(k)(a, x)  # W = 0, b = 0: uniform predictions
    assert loss.item() == pytest.approx(math.log(k))


def test_tiny_run_beats_chance_writes_figures_and_resumes(tmp_path, monkeypatch):
    config = trees.Config.tiny()
    ckpt = tmp_path / "checkpoint.pt"
    result = trees.run(config, out=tmp_path, show=False, checkpoint=ckpt)
    m = result.metrics
    # Chance: 2/n = 0.25 of the edges of a tree on 8 nodes.
    for method in config.methods:
        assert m[f"8/100/{method}"]["spanning_tree"]["recall"] > 0.6, method
    assert m["8/100/chow_liu"]["spanning_tree"]["recall"] > 0.8
    found = m["8/100/tree"]["spanning_tree"]["recall"]
    assert f"the tree learned through the relaxed spanning tree {found:.3f}." in result.text
    assert sorted(p.name for p in result.figures.values()) == ["trees_learning.png",
                                                                "trees_recovered.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures.values())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was computed again")

    for name in ("learn", "classical"):
        monkeypatch.setattr(trees, name, no_training)
    again = trees.run(config, out=None, show=False, checkpoint=ckpt)
    assert again.metrics == m


def test_bad_configuration_is_refused():
    with raises(ValueError, "trees: variables must be a non-empty tuple of ints >= 3 (every tree "
                            "on 2 nodes is the same), got (10, 2)"):
        trees.Config(variables=(10, 2))
    with raises(ValueError, "trees: samples must be a non-empty tuple of ints >= 1, got ()"):
        trees.Config(samples=())
    with raises(ValueError, "trees: states must be an int >= 2, got 1"):
        trees.Config(states=1)
    with raises(ValueError, "trees: flip_max must be a number in (0, 1), got 1.0"):
        trees.Config(flip_max=1.0)
    with raises(ValueError, "trees: flip_min must be at most flip_max (0.5), got 0.6"):
        trees.Config(flip_min=0.6, flip_max=0.5)
    with raises(ValueError, "trees: methods must be some of ('tree', 'concrete', 'topk'), got "
                            "('kruskal',)"):
        trees.Config(methods=("kruskal",))
    with raises(ValueError, "trees: tau must be a positive finite number, got -1.0"):
        trees.Config(tau=-1.0)
    with raises(ValueError, "trees: bound must be a positive finite number, got inf"):
        trees.Config(bound=float("inf"))
