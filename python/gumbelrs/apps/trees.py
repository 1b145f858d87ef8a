"""Recovering a latent tree (issue 22): an encoder over variable pairs learns
edge weights from data alone, through a relaxed spanning tree (the
stochastic softmax trick of Paulus et al. 2020), against independent and
top-k relaxed edges and the classical Chow-Liu tree.

Data: many independent problem instances, each a uniformly random labelled
tree on ``n`` variables (a uniform Pruefer sequence) and ``m`` samples of a
discrete tree-structured model on it: the root is uniform over ``states``
values and each child copies its parent's value with probability
``1 - flip``, else draws a uniform value (so it still equals the parent's
with probability ``flip / states``); ``flip`` is drawn per edge from
``U(flip_min, flip_max)``, so some edges are strong and some nearly
invisible. Every marginal is uniform and this symmetric channel is
reversible, so the distribution does not depend on which node is the root.
A discrete model keeps the pair statistics small (a ``states x states``
table of frequencies) and makes Chow-Liu the textbook plug-in mutual
information. Instances are split into train and test before training.

Learned (amortised) structure: one MLP, shared by every pair, reads the
pair's empirical joint table and the product of its marginals and gives the
edge weight ``w_ij`` (symmetrised over the two orders of the pair). A
relaxed structure ``A`` (``n x n``, ``A_ij`` in [0, 1]) is sampled from the
weights and a decoder scores the data given ``A``: the pseudo-likelihood of
each variable given the others, ``p(x_i = s | x_-i) = softmax_s(b_s +
sum_j A_ij W[x_j, s])``, with ``W`` and ``b`` learned and shared by every
pair. Nothing sees the true trees in training. Structures:

- ``tree``: :func:`gumbelrs.structured.relaxed_spanning_tree` of the weights
  (edge marginals of the Gumbel-perturbed distribution over spanning trees);
- ``concrete``: independent Binary Concrete edges
  (:func:`gumbelrs.functional.relaxed_bernoulli` of each weight);
- ``topk``: :func:`gumbelrs.structured.relaxed_topk` of ``n - 1`` edges out of
  the ``n (n - 1) / 2``, SST's other baseline.

Test: the structure of the noiseless weights of held-out instances against
the true tree. The tree method decodes with
:func:`gumbelrs.structured.spanning_tree`; the baselines with their own
decoding (the ``n - 1`` largest weights, which need not form a tree) and,
to tell training from decoding, with the spanning tree of their weights too.
Two trees need no training: Chow-Liu's, the spanning tree of the plug-in
mutual information of every pair (the maximum-likelihood tree over all
tree-structured models), and the agreement tree, the spanning tree of
``P(x_i = x_j)`` (the maximum-likelihood tree of the symmetric-channel model
that made the data; see :func:`agreement_tree`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import gumbelrs
from gumbelrs import functional, structured

from ._common import (
    AppResult,
    Checkpoint,
    Table,
    Unit,
    check_config,
    mean_std,
    progress,
    pyplot,
    save_figure,
    seed_cell,
    seed_summary,
    seeded,
)

METHODS = ("tree", "concrete", "topk")
#: The trees computed from the test data alone, without training.
CLASSICAL = ("chow_liu", "model_mle")
LABELS = {"tree": "relaxed spanning tree (SST)", "concrete": "independent Binary Concrete edges",
          "topk": "relaxed top-(n-1) edges", "chow_liu": "Chow-Liu (MLE, any tree model)",
          "model_mle": "agreement tree (MLE, the true model)"}
SHORT = {"tree": "relaxed spanning tree", "concrete": "Binary Concrete edges",
         "topk": "relaxed top-(n-1)", "chow_liu": "Chow-Liu", "model_mle": "agreement tree"}


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: n, the nodes of each random tree, one experiment per value. Ints >= 3, at least one.
    variables: tuple[int, ...] = (15,)
    #: m, the samples of each instance's tree model, one experiment per value (a smaller m takes the
    #: first m samples of the largest). Ints >= 1, at least one.
    samples: tuple[int, ...] = (20, 100, 500)
    #: Values of each variable. An int >= 2.
    states: int = 3
    #: Lower end of the uniform range of each edge's flip probability (a child copies its parent's
    #: value with probability 1 - flip, else draws a uniform value). A number in (0, 1), at most
    #: flip_max.
    flip_min: float = 0.2
    #: Upper end of the range of the flip probabilities (see flip_min). A number in (0, 1).
    flip_max: float = 0.8
    #: The relaxed structures trained, some of tree (relaxed spanning tree), concrete (independent
    #: Binary Concrete edges) and topk (relaxed top-(n-1) edges); Chow-Liu and the agreement tree
    #: always run.
    methods: tuple[str, ...] = METHODS
    #: Runs per (n, m). Seed s uses the seed seed + s for its instances and its training.
    #: An int >= 1.
    seeds: int = 3
    #: Problem instances (a tree and its samples) to train on. An int >= 1.
    train_instances: int = 1000
    #: Held-out instances whose trees are scored. An int >= 1.
    test_instances: int = 500
    #: Adam steps per method. An int >= 1.
    steps: int = 400
    #: Instances per step, drawn with replacement. An int >= 1.
    batch: int = 32
    #: Width of the two hidden layers of the pair encoder's MLP. An int >= 1.
    hidden: int = 32
    #: Adam learning rate of the encoder and the decoder. A number > 0.
    lr: float = 0.01
    #: Temperature of the relaxed structures. A number > 0.
    tau: float = 1.0
    #: Edge weights are kept in (-bound, bound) by bound tanh(w / bound), which keeps the relaxed
    #: spanning tree's matrix-tree marginals within float64 precision (see PairEncoder); every
    #: method gets the same bound. A number > 0.
    bound: float = 10.0
    #: Base seed. Seed s of the seeds uses seed + s. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("trees", self,
                     counts=("variables", "samples", "seeds", "train_instances",
                             "test_instances", "steps", "batch", "hidden"),
                     maybe_zero=("seed",),
                     positive=("lr", "tau", "bound"),
                     fractions=("flip_min", "flip_max"),
                     choices={"methods": METHODS})
        if min(self.variables) < 3:
            raise ValueError(f"trees: variables must be a non-empty tuple of ints >= 3 (every "
                             f"tree on 2 nodes is the same), got {self.variables!r}")
        if isinstance(self.states, bool) or not isinstance(self.states, int) or self.states < 2:
            raise ValueError(f"trees: states must be an int >= 2, got {self.states!r}")
        if self.flip_min > self.flip_max:
            raise ValueError(f"trees: flip_min must be at most flip_max ({self.flip_max!r}), "
                             f"got {self.flip_min!r}")

    @classmethod
    def quick(cls) -> Config:
        """A run of under half a minute on two cores."""
        return cls(seeds=1, samples=(100,), train_instances=400, test_instances=200, steps=150)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(variables=(8,), seeds=1, samples=(100,), train_instances=100,
                   test_instances=50, steps=30)


def random_trees(count: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uniformly random labelled trees on ``n >= 2`` nodes, decoded
    from uniform Pruefer sequences (a bijection onto the ``n**(n-2)`` trees):
    ``(parent, order)``, both int64 ``(count, n)``. The trees are rooted at
    node ``n - 1`` (``parent[:, n - 1] = -1``); ``order`` lists the nodes root
    first, each after its parent."""
    seq = torch.randint(0, n, (count, n - 2), generator=g)
    degree = torch.ones(count, n, dtype=torch.int64).scatter_add(1, seq, torch.ones_like(seq))
    parent = torch.full((count, n), -1, dtype=torch.int64)
    rows, nodes = torch.arange(count), torch.arange(n)
    removed = []
    for t in range(n - 2):
        leaf = torch.where(degree == 1, nodes, n).argmin(1)  # the smallest leaf
        parent[rows, leaf] = seq[:, t]
        degree[rows, leaf] = 0
        degree[rows, seq[:, t]] -= 1
        removed.append(leaf)
    # Two nodes of degree 1 remain, n - 1 among them (it is never the smallest leaf).
    last = torch.where(degree == 1, nodes, n).argmin(1)
    parent[rows, last] = n - 1
    removed.append(last)
    # A node is removed only after all its children: the reversed removals go top-down.
    order = torch.cat([torch.full((count, 1), n - 1), torch.stack(removed[::-1], 1)], 1)
    return parent, order


def adjacency(parent: torch.Tensor) -> torch.Tensor:
    """The symmetric 0/1 adjacency matrices ``(count, n, n)`` (float32) of the
    rooted trees ``parent`` (``-1`` at the root)."""
    count, n = parent.shape
    a = torch.zeros(count, n, n)
    child = parent >= 0
    rows = torch.arange(count)[:, None].expand(count, n)[child]
    kids = torch.arange(n).expand(count, n)[child]
    a[rows, kids, parent[child]] = 1.0
    a[rows, parent[child], kids] = 1.0
    return a


def sample_tree_model(parent: torch.Tensor, order: torch.Tensor, flip: torch.Tensor, m: int,
                      states: int, g: torch.Generator) -> torch.Tensor:
    """``m`` samples ``(count, m, n)`` (int64 in ``[0, states)``) of the
    symmetric-channel model on each tree: the root uniform, each child its
    parent's value with probability ``1 - flip[:, child]``, else uniform."""
    count, n = parent.shape
    rows = torch.arange(count)
    x = torch.empty(count, m, n, dtype=torch.int64)
    x[rows, :, order[:, 0]] = torch.randint(0, states, (count, m), generator=g)
    for t in range(1, n):
        child = order[:, t]
        up = x[rows, :, parent[rows, child]]  # (count, m)
        keep = torch.rand(count, m, generator=g) >= flip[rows, child][:, None]
        x[rows, :, child] = torch.where(keep, up, torch.randint(0, states, (count, m),
                                                                generator=g))
    return x


@dataclasses.dataclass
class Instances:
    """Problem instances: true adjacency ``(count, n, n)``, samples
    ``(count, m, n)`` and the pair statistics of those samples."""

    truth: torch.Tensor
    x: torch.Tensor
    joint: torch.Tensor  # (count, n, n, states, states): frequency of (x_i, x_j)
    marginal: torch.Tensor  # (count, n, states)

    def __getitem__(self, idx) -> Instances:
        return Instances(self.truth[idx], self.x[idx], self.joint[idx], self.marginal[idx])


def instances(truth: torch.Tensor, x: torch.Tensor, states: int) -> Instances:
    """The :class:`Instances` of samples ``x`` on the trees ``truth``."""
    onehot = F.one_hot(x, states).float()  # (count, m, n, states)
    joint = torch.einsum("cmis,cmjt->cijst", onehot, onehot) / x.shape[1]
    return Instances(truth, x, joint, onehot.mean(1))


def mutual_information(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """The plug-in mutual information (nats) of every pair, ``(count, n, n)``,
    from the empirical joint tables and marginals (0 log 0 = 0): what
    ``sklearn.metrics.mutual_info_score`` gives for the pair's samples."""
    joint = joint.double()
    product = marginal[:, :, None, :, None].double() * marginal[:, None, :, None, :].double()
    terms = torch.where(joint > 0, joint * (joint / product.clamp_min(1e-300)).log(),
                        torch.zeros_like(joint))
    mi = terms.sum((-1, -2))
    return 0.5 * (mi + mi.transpose(1, 2))  # a + b = b + a: exactly symmetric, as the solver needs


def chow_liu(data: Instances) -> torch.Tensor:
    """The Chow-Liu trees ``(count, n, n)``: the maximum spanning trees of the
    pairwise mutual information, the maximum-likelihood trees over all
    tree-structured distributions of the variables."""
    return structured.spanning_tree(mutual_information(data.joint, data.marginal)).float()


def agreement_tree(data: Instances) -> torch.Tensor:
    """The maximum spanning trees ``(count, n, n)`` of each pair's agreement
    rate ``P(x_i = x_j)``: maximum-likelihood trees of the symmetric-channel
    model itself. An edge's likelihood gain over independence is ``m KL(a ||
    1/states)`` at the fitted flip, which grows with the agreement ``a`` (and is
    0 below ``a = 1/states``, flip 1), and a maximum spanning tree depends only
    on the order of the weights."""
    return structured.spanning_tree(data.joint.diagonal(dim1=-2, dim2=-1).sum(-1)).float()


def top_edges(weights: torch.Tensor, k: int) -> torch.Tensor:
    """The symmetric 0/1 indicator ``(count, n, n)`` of the ``k`` largest
    weights of each symmetric ``(count, n, n)`` matrix (above the diagonal)."""
    n = weights.shape[-1]
    iu = torch.triu_indices(n, n, 1)
    pick = weights[:, iu[0], iu[1]].topk(k, -1).indices
    edges = torch.zeros(weights.shape[0], iu.shape[1]).scatter(1, pick, 1.0)
    return symmetric(edges, n)


def symmetric(edges: torch.Tensor, n: int) -> torch.Tensor:
    """``(count, n (n - 1) / 2)`` values of the pairs ``i < j`` (row-major) as
    symmetric ``(count, n, n)`` matrices with a zero diagonal."""
    iu = torch.triu_indices(n, n, 1)
    out = edges.new_zeros(edges.shape[0], n, n)
    out[:, iu[0], iu[1]] = edges
    return out + out.transpose(-1, -2)


def edge_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Edge precision and recall (over all instances' edges together), the
    fraction of instances whose edges are exactly the true ones, and the mean
    number of predicted edges, of symmetric 0/1 matrices ``(count, n, n)``."""
    hits = float((pred * truth).sum()) / 2
    predicted, true = float(pred.sum()) / 2, float(truth.sum()) / 2
    exact = (pred == truth).flatten(1).all(-1)
    return {"precision": hits / predicted if predicted else 0.0, "recall": hits / true,
            "exact": float(exact.double().mean()), "edges": predicted / len(pred)}


class PairEncoder(nn.Module):
    """An MLP shared by every pair ``(i, j)``: the pair's ``states x states``
    joint frequency table and the product of its marginals in, one edge weight
    out, averaged over the two orders of the pair (``w_ij = w_ji``) and bounded
    to ``(-bound, bound)`` by ``bound * tanh(w / bound)``.

    The bound is for the relaxed spanning tree: its pseudo-likelihood keeps
    rewarding sharper trees, and unbounded weights spread over 50 tau within
    50 steps, past the float64 precision of its matrix-tree marginals (which
    then refuse the graph). Every method gets the same bound; it keeps the
    order of the weights, hence their spanning tree."""

    def __init__(self, states: int, hidden: int, bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.net = nn.Sequential(nn.Linear(2 * states * states, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
        n = joint.shape[1]
        iu = torch.triu_indices(n, n, 1)
        pj = joint[:, iu[0], iu[1]]  # (count, E, states, states)
        pp = marginal[:, iu[0], :, None] * marginal[:, iu[1], None, :]
        both = [torch.cat([t.flatten(-2), p.flatten(-2)], -1)
                for t, p in ((pj, pp), (pj.transpose(-1, -2), pp.transpose(-1, -2)))]
        w = 0.5 * (self.net(both[0]) + self.net(both[1])).squeeze(-1)  # (count, E)
        return self.bound * torch.tanh(w / self.bound)


class PseudoLikelihood(nn.Module):
    """The decoder: ``-log p(x_i | x_-i)`` averaged over variables and
    samples, for ``p(x_i = s | x_-i) = softmax_s(b_s + sum_j A_ij W[x_j, s])``
    (a pairwise model on the structure ``A`` whose potential ``W`` every edge
    shares)."""

    def __init__(self, states: int) -> None:
        super().__init__()
        self.states = states
        self.weight = nn.Parameter(torch.zeros(states, states))
        self.bias = nn.Parameter(torch.zeros(states))

    def forward(self, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (count, n, m)
        messages = self.weight[x]  # (count, n, m, states): row x_j of W
        logits = (a @ messages.flatten(2)).view(messages.shape) + self.bias
        return F.cross_entropy(logits.flatten(0, 2), x.flatten())


def relaxed_structure(method: str, w: torch.Tensor, n: int, tau: float,
                      g: gumbelrs.Generator) -> torch.Tensor:
    """A relaxed structure ``(count, n, n)`` sampled by ``method`` from the
    pair weights ``w`` ``(count, n (n - 1) / 2)``."""
    if method == "tree":
        return structured.relaxed_spanning_tree(symmetric(w, n), tau, generator=g)
    if method == "concrete":
        return symmetric(functional.relaxed_bernoulli(w, tau, generator=g), n)
    return symmetric(structured.relaxed_topk(w, n - 1, tau, generator=g), n)


def weights(encoder: PairEncoder, data: Instances) -> torch.Tensor:
    """The encoder's symmetric edge weights ``(count, n, n)`` for ``data``."""
    with torch.no_grad():
        return symmetric(encoder(data.joint, data.marginal), data.x.shape[-1])


def train(method: str, data: Instances, test: Instances, config: Config, seed: int,
          show: bool = False) -> tuple[PairEncoder, list[float], list[tuple[int, float]]]:
    """Trains a :class:`PairEncoder` and its decoder through ``method``'s
    relaxed structure on the instances ``data`` (never their trees); returns
    it, the loss of every step and, at step 0 and 21 steps spaced
    geometrically from 1 to the last, the fraction of the ``test`` trees' edges
    that the spanning tree of its weights finds."""
    g = seeded(seed)
    pick = torch.Generator().manual_seed(seed)
    n = data.x.shape[-1]
    encoder = PairEncoder(config.states, config.hidden, config.bound)
    decoder = PseudoLikelihood(config.states)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=config.lr)
    checks = {0} | {round(config.steps ** (i / 20)) for i in range(21)}  # most of it is early
    losses, found = [], []
    for step in progress(range(config.steps + 1), config.steps + 1,
                         f"trees n={n} m={data.x.shape[1]} {method}", show):
        if step in checks:
            tree = structured.spanning_tree(weights(encoder, test))
            found.append((step, edge_scores(tree, test.truth)["recall"]))
        if step == config.steps:
            break
        batch = data[torch.randint(0, len(data.x), (config.batch,), generator=pick)]
        w = encoder(batch.joint, batch.marginal)
        loss = decoder(relaxed_structure(method, w, n, config.tau, g), batch.x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return encoder, losses, found


def problem(n: int, config: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The true trees ``(count, n, n)`` and ``max(config.samples)`` samples of
    each of the train and test instances of ``seed`` (train first); a run with
    fewer samples per instance takes the first ``m``."""
    g = torch.Generator().manual_seed(seed)
    count = config.train_instances + config.test_instances
    parent, order = random_trees(count, n, g)
    flip = config.flip_min + (config.flip_max - config.flip_min) * torch.rand(count, n,
                                                                               generator=g)
    x = sample_tree_model(parent, order, flip, max(config.samples), config.states, g)
    return adjacency(parent), x


def split(truth: torch.Tensor, x: torch.Tensor, m: int,
          config: Config) -> tuple[Instances, Instances]:
    """The train and test :class:`Instances` of :func:`problem`'s trees and
    samples, with the first ``m`` samples of each instance."""
    data = instances(truth, x[:, :m], config.states)
    return data[:config.train_instances], data[config.train_instances:]


def learn(method: str, data: tuple[Instances, Instances], config: Config, seed: int,
          show: bool = False) -> dict:
    """Trains ``method`` on the training instances of ``data``; its scores on
    the test instances, its loss trace and test scores during training."""
    train_set, test_set = data
    n = test_set.x.shape[-1]
    encoder, losses, found = train(method, train_set, test_set, config, seed, show)
    w = weights(encoder, test_set)
    tree = structured.spanning_tree(w)
    out: dict = {"loss": losses, "found": found,
                 "spanning_tree": edge_scores(tree, test_set.truth)}
    if method != "tree":
        out["top_edges"] = edge_scores(top_edges(w, n - 1), test_set.truth)
    if method == "concrete":
        out["positive"] = edge_scores((w > 0).float(), test_set.truth)
    out["example"] = tree[0].clone() if method == "tree" else top_edges(w[:1], n - 1)[0]
    return out


def classical(data: tuple[Instances, Instances]) -> dict:
    """Chow-Liu's scores on the test instances of ``data``."""
    test_set = data[1]
    out = {}
    for name, fn in zip(CLASSICAL, (chow_liu, agreement_tree)):
        tree = fn(test_set)
        out[name] = {"spanning_tree": edge_scores(tree, test_set.truth),
                     "example": tree[0].clone()}  # not a view: the checkpoint saves its storage
    return {**out, "truth": test_set.truth[0].clone()}


@functools.lru_cache(maxsize=1)  # the samples of every m, for one (n, seed) at a time
def _problem(n: int, seed: int, fields: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    return problem(n, Config(*fields), seed)


@functools.lru_cache(maxsize=1)  # one data set for every method
def _data(n: int, m: int, seed: int, fields: tuple) -> tuple[Instances, Instances]:
    return split(*_problem(n, seed, fields), m, Config(*fields))


def unit(method: str, n: int, m: int, config: Config, seed: int, show: bool = False) -> dict:
    """One unit of a run: ``method`` (or the classical trees) on the instances
    of ``n`` variables and ``m`` samples of ``seed``."""
    data = _data(n, m, seed, dataclasses.astuple(config))
    return classical(data) if method == "classical" else learn(method, data, config, seed, show)


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Runs every method for each tree size, samples per instance and seed;
    writes the figures under ``out``. Each finished unit (a size, a number of
    samples, a method and a seed) is saved in ``checkpoint`` (when given), from
    which a new run resumes."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    seeds = [config.seed + s for s in range(config.seeds)]
    units: list[Unit] = [(f"{n}/{m}/{method}/{s}", unit, (method, n, m, config, s, show))
                         for n in config.variables for s in seeds for m in config.samples
                         for method in ("classical", *config.methods)]
    results: dict = {}
    truth: dict = {}  # the first test tree of each (n, m), for the figure
    for (_, _, (method, n, m, _, _, _)), done in zip(units, ckpt.map(units, show, "trees")):
        if method == "classical":
            truth.setdefault((n, m), done["truth"])
            for name in CLASSICAL:
                results.setdefault((n, m, name), []).append(done[name])
        else:
            results.setdefault((n, m, method), []).append(done)
    return _report(config, results, truth, out)


def _report(config: Config, results: dict, truth: dict, out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config),
                     **{f"{n}/{m}/{method}": seed_summary(r)
                        for (n, m, method), r in results.items()}}
    result = AppResult("trees", metrics,
                       heading="Recovering a latent tree (relaxed spanning trees)")
    over = f"mean ± sd over {config.seeds} seeds" if config.seeds > 1 else "one seed"
    result.text = (
        f"Each problem instance is a uniformly random labelled tree on n variables (a uniform "
        f"Pruefer sequence) and m samples of a discrete model on it: the root uniform over "
        f"{config.states} values, each child a copy of its parent with probability 1 - flip, "
        f"else uniform, flip drawn per edge from U({config.flip_min}, {config.flip_max}). "
        f"{config.train_instances} instances train, {config.test_instances} others test. An "
        f"MLP shared by every pair reads the pair's joint frequency table and gives its edge "
        f"weight; a structure sampled from the weights (relaxed spanning tree, independent "
        f"Binary Concrete edges, or relaxed top-(n-1) edges; tau = {config.tau}) weights a "
        f"pseudo-likelihood decoder (each variable given its neighbours, one pairwise "
        f"potential shared by every edge); {config.steps} Adam steps of {config.batch} "
        f"instances, without the true trees. Test: the maximum spanning tree of the learned "
        f"weights (gumbelrs.structured.spanning_tree), and for the baselines also their own "
        f"decoding, the n - 1 largest weights, which need not form a tree. With n - 1 edges "
        f"predicted, edge precision equals recall: the table gives that fraction of the true "
        f"edges found, and the fraction of trees recovered exactly. Two classical trees need "
        f"no training: Chow-Liu, the maximum spanning tree of the plug-in mutual information "
        f"(what sklearn.metrics.mutual_info_score gives), is the maximum-likelihood tree over "
        f"all tree-structured models; the agreement tree, the maximum spanning tree of "
        f"P(x_i = x_j), is the maximum-likelihood tree of the symmetric-channel model that "
        f"made the data (one parameter per edge where Chow-Liu fits a whole {config.states} "
        f"x {config.states} table: less noise when m is small). The learned encoder sees the "
        f"same pair tables and nothing else, so the agreement tree is about the best it can "
        f"do; the point is that the relaxed tree passes gradients through a tree-structured "
        f"latent, trained only to explain the data. "
        f"Chance: 2/n of the edges." + _findings(config, results))
    rows = []
    for (n, m, method), runs in results.items():
        own = "top_edges" in runs[0]
        rows.append((n, m, LABELS[method], seed_cell(runs, "spanning_tree", "recall"),
                     seed_cell(runs, "spanning_tree", "exact"),
                     seed_cell(runs, "top_edges", "recall") if own else "",
                     seed_cell(runs, "top_edges", "exact") if own else "", f"{2 / n:.3f}"))
    result.tables[f"Held-out trees: edges found and trees recovered exactly ({over})"] = Table(
        ("n", "m", "method", "edges found, spanning tree", "exact trees, spanning tree",
         "edges found, n - 1 largest", "exact trees, n - 1 largest", "chance (edges)"), rows)
    if "concrete" in config.methods:
        result.tables[f"Binary Concrete edges: the edges of positive weight ({over})"] = Table(
            ("n", "m", "edge precision", "edge recall", "edges predicted (true: n - 1)"),
            [(n, m, seed_cell(r, "positive", "precision"), seed_cell(r, "positive", "recall"),
              seed_cell(r, "positive", "edges")) for (n, m, method), r in results.items()
             if method == "concrete"])
    _figures(result, config, results, truth, out)
    return result


def _findings(config: Config, results: dict) -> str:
    """The run's answer in a sentence or two, at the largest n and middle m."""
    n, m = config.variables[-1], config.samples[len(config.samples) // 2]

    def found(method: str, decoding: str = "spanning_tree") -> str:
        return f"{mean_std([r[decoding]['recall'] for r in results[n, m, method]])[0]:.3f}"

    text = (f" At n = {n}, m = {m}: Chow-Liu finds {found('chow_liu')} of the true edges, the "
            f"agreement tree {found('model_mle')}")
    if "tree" in config.methods:
        text += f", the tree learned through the relaxed spanning tree {found('tree')}"
    text += "."
    baselines = [method for method in ("concrete", "topk") if method in config.methods]
    if baselines:
        text += (" The baselines' weights give " + " and ".join(
            f"{found(b)} ({SHORT[b]})" for b in baselines) + " as spanning trees, but their "
            "own decoding, the n - 1 largest weights, finds " + " and ".join(
            found(b, "top_edges") for b in baselines) + ": a score of one pair at a time "
            "ranks two variables joined through strong edges above a weak true edge, and only "
            "the tree (a cycle would close) sets that pair aside.")
    return text


def _draw(ax, tree: torch.Tensor, truth: torch.Tensor, title: str) -> None:
    """A tree on nodes around a circle: edges of ``tree`` black where true,
    red where not; true edges it misses dashed grey."""
    n = tree.shape[-1]
    angle = 2 * math.pi * torch.arange(n) / n
    xy = torch.stack([angle.cos(), angle.sin()], 1)
    for i in range(n):
        for j in range(i + 1, n):
            if tree[i, j] > 0 or truth[i, j] > 0:
                right, missed = truth[i, j] > 0 and tree[i, j] > 0, tree[i, j] == 0
                ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="0.6" if missed else
                        ("black" if right else "tab:red"), ls="--" if missed else "-",
                        lw=1.0 if missed else 1.8, zorder=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=120, color="white", edgecolors="black", zorder=2)
    for i in range(n):
        ax.text(xy[i, 0], xy[i, 1], str(i), ha="center", va="center", fontsize=6, zorder=3)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.axis("off")


def _figures(result: AppResult, config: Config, results: dict, truth: dict,
             out: Path | None) -> None:
    plt = pyplot("trees")
    n, m = config.variables[-1], config.samples[len(config.samples) // 2]
    shown = [*CLASSICAL, *config.methods]
    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(2.3 * (1 + len(shown)), 2.8))
    _draw(axes[0], truth[n, m], truth[n, m], "true tree")
    for ax, method in zip(axes[1:], shown):
        pred = results[n, m, method][0]["example"]
        found = int((pred * truth[n, m]).sum()) // 2
        _draw(ax, pred, truth[n, m], f"{SHORT[method]}\n{found} of {n - 1} edges right")
    path = save_figure(fig, out, "trees_recovered.png")
    if path is not None:
        result.figures[f"A held-out tree (n = {n}, m = {m}) and its recovered trees (first "
                       f"seed; baselines: their n - 1 largest weights): black right, red wrong, "
                       f"dashed grey missed"] = path
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    colours = {method: f"C{c}" for c, method in enumerate(shown)}
    for method in shown:
        for style, n_ in zip(("o-", "s--", "^:"), config.variables):
            found = [mean_std([r["spanning_tree"]["recall"] for r in results[n_, mm, method]])[0]
                     for mm in config.samples]
            label = SHORT[method] + (f", n = {n_}" if len(config.variables) > 1 else "")
            axes[0].plot(config.samples, found, style, color=colours[method], label=label)
    axes[0].set_xscale("log")
    axes[0].set_xticks(config.samples, [str(mm) for mm in config.samples])
    axes[0].minorticks_off()
    axes[0].set_xlabel("samples per instance m")
    axes[0].set_ylabel("true edges found (spanning tree)")
    axes[0].set_title("held-out trees", fontsize=9)
    axes[0].legend(fontsize=7)
    for method in CLASSICAL:
        axes[1].axhline(results[n, m, method][0]["spanning_tree"]["recall"], ls="--",
                        color=colours[method], label=SHORT[method])
    for method in config.methods:
        steps, found = zip(*results[n, m, method][0]["found"])
        axes[1].plot(steps, found, ".-", color=colours[method], label=SHORT[method])
        loss = torch.tensor(results[n, m, method][0]["loss"])
        w = max(1, len(loss) // 50)
        smooth = loss[: len(loss) // w * w].view(-1, w).mean(-1)
        axes[2].plot(torch.arange(len(smooth)) * w, smooth, color=colours[method],
                     label=SHORT[method])
    axes[1].set_xscale("symlog", linthresh=1)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("true edges found (spanning tree)")
    axes[1].set_title(f"held-out trees during training, n = {n}, m = {m}", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("pseudo-likelihood loss (nats per variable)")
    axes[2].set_title(f"training loss, n = {n}, m = {m}", fontsize=9)
    axes[2].legend(fontsize=7)
    path = save_figure(fig, out, "trees_learning.png")
    if path is not None:
        result.figures["Edges of held-out trees found against samples per instance, during "
                       "training (first seed), and the training loss of each learned "
                       "method"] = path
