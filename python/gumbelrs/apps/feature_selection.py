"""Feature selection with concrete gates and the Concrete selector, against
filter methods, in low-data regimes.

Methods (each picks ``k`` features from ``n_train`` labelled samples):

- ``selector``: :class:`gumbelrs.nn.ConcreteSelector` trained jointly with an
  MLP classifier (wrapper selection; temperature 10 -> 0.1, exponential);
- ``cae``: the Concrete Autoencoder (Balin, Abid and Zou 2019): the same
  selector trained without labels to reconstruct every feature;
- ``gates``: :class:`gumbelrs.nn.ConcreteGate` per feature with the expected
  number of open gates as a penalty, trained with an MLP; the ``k`` most open;
- ``mutual_info`` and ``anova_f``: scikit-learn's filter scores, top ``k``.

Every selection is scored the same way, as in the Concrete Autoencoder
paper's protocol: an extra-trees classifier trained on the selected features
of the ``n_train`` samples, accuracy on held-out samples. ``mnist`` is the
5,000-image MNIST subset of :mod:`gumbelrs.apps._data` with ``k = 50`` as in
the paper. On ``madelon`` (a ``make_classification`` set whose first
``informative`` features carry the class, the rest are noise) the recovery of
the planted features is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs import schedules
from gumbelrs.nn import ConcreteGate, ConcreteSelector

from . import _data
from ._common import (
    AppResult,
    Checkpoint,
    Table,
    check_config,
    exponential_anneal,
    mean_std,
    pyplot,
    require,
    save_figure,
    seeded,
)

DATASETS = ("breast_cancer", "digits", "mnist", "madelon")
METHODS = ("selector", "cae", "gates", "mutual_info", "anova_f")
#: Features selected per data set.
K = {"breast_cancer": 5, "digits": 10, "mnist": 50, "madelon": 5}
#: Published: Concrete Autoencoder, MNIST, k = 50, extra trees (Balin, Abid and Zou 2019;
#: trained on the full MNIST training set).
PUBLISHED_CAE_MNIST = 0.906


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The data sets, some of breast_cancer (k = 5 features selected), digits (k = 10), mnist (the
    #: 5,000-image subset, k = 50) and madelon (synthetic, see madelon_features; k = 5); features
    #: are standardised.
    datasets: tuple[str, ...] = DATASETS
    #: The selection methods, some of selector (ConcreteSelector trained with an MLP classifier),
    #: cae (Concrete Autoencoder, the selector trained without labels to reconstruct every feature),
    #: gates (a ConcreteGate per feature, penalised by gate_penalty), mutual_info and anova_f
    #: (scikit-learn's filter scores).
    methods: tuple[str, ...] = METHODS
    #: Training set sizes. Each method picks its features from this many labelled samples and the
    #: rest are the test set, one experiment per size. Ints >= 1, at least one.
    n_train: tuple[int, ...] = (50, 100, 200)
    #: Random draws of the training samples per data set and size (draw s uses the seed seed + s);
    #: the table shows the mean. An int >= 1.
    seeds: int = 5
    #: Full-batch Adam steps of the learned methods (selector, cae, gates), over which their
    #: temperature anneals. An int >= 1.
    steps: int = 1000
    #: Adam learning rate of the learned methods. A number > 0.
    lr: float = 1e-2
    #: Width of the one hidden layer of the learned methods' MLP (the classifier, or the cae's
    #: decoder). An int >= 1.
    hidden: int = 64
    #: Temperature of the learned methods' relaxation at the first step, decaying geometrically to
    #: tau_end at the last. A number > 0, at
    #: least tau_end (equal gives a constant temperature).
    tau_start: float = 10.0
    #: Temperature of the learned methods' relaxation at the last step (see tau_start).
    #: A number > 0.
    tau_end: float = 0.1
    #: (gates) the loss per expected open gate, added to the classifier's cross-entropy.
    #: A number > 0.
    gate_penalty: float = 0.01
    #: (madelon) features of the synthetic two-class data (2,000 samples from scikit-learn's
    #: make_classification with the seed seed). An int >= 1, above informative.
    madelon_features: int = 50
    #: (madelon) how many of its features (the first ones) carry the class, the others being noise;
    #: the report counts how many of them each method selects. An int >= 1, below madelon_features.
    informative: int = 5
    #: Trees of the extra-trees classifier that scores every selection by its held-out accuracy.
    #: An int >= 1.
    trees: int = 200
    #: Base seed. Draw s uses seed + s; also the seed of the madelon data. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("feature_selection", self,
                     counts=("n_train", "seeds", "steps", "hidden", "madelon_features",
                             "informative", "trees"),
                     maybe_zero=("seed",),
                     positive=("lr", "tau_start", "tau_end", "gate_penalty"),
                     choices={"datasets": DATASETS, "methods": METHODS})
        if self.tau_end > self.tau_start:
            raise ValueError(f"feature_selection: tau_end={self.tau_end!r} must be at most "
                             f"tau_start={self.tau_start!r} (the temperature anneals down)")
        if self.informative >= self.madelon_features:
            raise ValueError(f"feature_selection: informative={self.informative} must be below "
                             f"madelon_features={self.madelon_features}")

    @classmethod
    def quick(cls) -> Config:
        """A run of about a minute on two cores."""
        return cls(n_train=(50, 200), seeds=2, steps=400, trees=100)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(datasets=("madelon",), n_train=(50,), seeds=1, steps=20, trees=10)


def load(name: str, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float32, standardised) and int64 labels of ``name`` (loaded
    once per process; do not modify them in place)."""
    return _load(name, config.madelon_features, config.informative, config.seed)


@functools.lru_cache(maxsize=8)
def _load(name: str, madelon_features: int, informative: int,
          seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    datasets = require("sklearn.datasets", "feature_selection")
    if name == "madelon":
        x, y = datasets.make_classification(
            n_samples=2000, n_features=madelon_features, n_informative=informative,
            n_redundant=0, n_repeated=0, shuffle=False, flip_y=0.01, random_state=seed)
    elif name == "mnist":
        x, y = _data.mnist_subset("feature_selection")
        x, y = x.numpy(), y.numpy()
    elif name in DATASETS:
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    else:
        raise ValueError(f"feature_selection: unknown data set {name!r}; expected one of "
                         f"{DATASETS}")
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x, torch.as_tensor(y, dtype=torch.int64)


def _anneal(config: Config) -> schedules.Schedule:
    return exponential_anneal(config.tau_start, config.tau_end, config.steps)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _train(model: nn.Module, loss_fn, steps: int, lr: float, step_fn) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_fn()


def select(method: str, x: torch.Tensor, y: torch.Tensor, k: int, config: Config,
           generator: gumbelrs.Generator) -> list[int]:
    """The ``k`` features ``method`` picks from the samples ``x``, ``y``."""
    n_classes = int(y.max()) + 1
    if method in ("mutual_info", "anova_f"):
        fs = require("sklearn.feature_selection", "feature_selection")
        if method == "anova_f":
            with warnings.catch_warnings():  # constant pixels: F is NaN, ranked last below
                warnings.simplefilter("ignore")
                scores = torch.as_tensor(fs.f_classif(x.numpy(), y.numpy())[0])
        else:
            scores = torch.as_tensor(fs.mutual_info_classif(
                x.numpy(), y.numpy(), random_state=int(generator.seed % 2**31)))
        return torch.nan_to_num(scores, nan=-1.0).topk(k).indices.tolist()
    if method == "gates":
        gate = ConcreteGate(x.shape[1], tau=_anneal(config), generator=generator)
        model = nn.Sequential(gate, _mlp(x.shape[1], config.hidden, n_classes))
        _train(model, lambda: nn.functional.cross_entropy(model(x), y)
               + config.gate_penalty * gate.penalty(),
               config.steps, config.lr, gate.step)
        return gate.selected(k).tolist()
    sel = ConcreteSelector(x.shape[1], k, tau=_anneal(config), generator=generator)
    if method == "selector":
        model = nn.Sequential(sel, _mlp(k, config.hidden, n_classes))

        def loss():
            return nn.functional.cross_entropy(model(x), y) + sel.duplicate_penalty()
    else:  # cae: reconstruct every feature from the k selected ones, no labels
        model = nn.Sequential(sel, _mlp(k, config.hidden, x.shape[1]))

        def loss():
            return ((model(x) - x) ** 2).mean() + sel.duplicate_penalty()
    _train(model, loss, config.steps, config.lr, sel.step)
    return sel.selected().tolist()


def score(x_train, y_train, x_test, y_test, features: list[int], config: Config,
          seed: int) -> float:
    """Held-out accuracy of extra trees on the selected ``features``."""
    ensemble = require("sklearn.ensemble", "feature_selection")
    clf = ensemble.ExtraTreesClassifier(n_estimators=config.trees, random_state=seed, n_jobs=1)
    clf.fit(x_train[:, features].numpy(), y_train.numpy())
    return float(clf.score(x_test[:, features].numpy(), y_test.numpy()))


def trial(name: str, n_train: int, config: Config, seed: int) -> dict:
    """Every method on one random draw of ``n_train`` training samples."""
    x, y = load(name, config)
    g = seeded(seed)
    order = torch.randperm(len(x))
    tr, te = order[:n_train], order[n_train:]
    k = K[name]
    out = {}
    for method in config.methods:
        features = select(method, x[tr], y[tr], k, config, g)
        out[method] = {"features": features,
                       "accuracy": score(x[tr], y[tr], x[te], y[te], features, config, seed)}
        if name == "madelon":
            out[method]["planted"] = sum(f < config.informative for f in features)
    out["all_features"] = {"accuracy": score(x[tr], y[tr], x[te], y[te], list(range(
        x.shape[1])), config, seed)}
    return out


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Every data set, training size, seed and method; writes the selection plot."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    trials: dict[tuple[str, int], list[dict]] = {}
    units = [(f"{d}/{n}/{s}", trial, (d, n, config, config.seed + s)) for d in config.datasets
             for n in config.n_train for s in range(config.seeds)]
    for (_, _, (name, n, _, _)), done in zip(units, ckpt.map(units, show, "feature selection")):
        trials.setdefault((name, n), []).append(done)
    return _report(config, trials, out)


def _report(config: Config, trials: dict[tuple[str, int], list[dict]],
            out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("feature_selection", metrics,
                       heading="Feature selection (ConcreteSelector, ConcreteGate)")
    result.text = (f"Each method picks k features (breast cancer 5, digits 10, MNIST 50, madelon "
                   f"5) from "
                   f"n labelled training samples; extra trees ({config.trees}) trained on those "
                   f"features of the same samples are scored on the held-out rest. Mean over "
                   f"{config.seeds} random draws. 'madelon': {config.madelon_features} "
                   f"features of which the first {config.informative} carry the class.")
    columns = (*config.methods, "all_features")
    rows = []
    for (name, n), ts in trials.items():
        m = {c: mean_std([t[c]["accuracy"] for t in ts]) for c in columns}
        metrics.setdefault(name, {})[str(n)] = {c: {"accuracy": m[c][0], "sd": m[c][1]}
                                                for c in columns}
        rows.append((name, n, K[name], *(f"{m[c][0]:.3f}" for c in columns)))
        if name == "madelon":
            for c in config.methods:
                metrics[name][str(n)][c]["planted"] = sum(t[c]["planted"] for t in ts) / len(ts)
    result.tables["Held-out accuracy with k selected features (extra trees)"] = Table(
        ("data", "n train", "k", *columns), rows)
    if any(name == "mnist" for name, _ in trials):
        result.text += (f" For scale: the Concrete Autoencoder paper reports "
                        f"{PUBLISHED_CAE_MNIST} on MNIST with k = 50 and extra trees, selecting "
                        f"from the full 60,000-image training set.")
    planted = [(n, *(metrics["madelon"][str(n)][c]["planted"] for c in config.methods))
               for (name, n) in trials if name == "madelon"]
    if planted:
        result.tables[f"madelon: planted features among the {K['madelon']} selected (mean)"] = (
            Table(("n train", *config.methods), planted))
    digits = [(n, ts) for (name, n), ts in trials.items() if name == "digits"]
    if digits:
        plt = pyplot("feature_selection")
        methods = list(config.methods)
        fig, axes = plt.subplots(1, len(methods), figsize=(2.2 * len(methods), 2.6))
        n, ts = digits[-1]
        for ax, c in zip([axes] if len(methods) == 1 else axes, methods):
            counts = torch.zeros(64)
            for t in ts:
                counts[t[c]["features"]] += 1
            ax.imshow(counts.reshape(8, 8).numpy(), cmap="viridis", vmin=0, vmax=len(ts))
            ax.set_title(c, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"digits: pixels selected (k = {K['digits']}, n = {n}), counted over "
                     f"{len(ts)} draws", fontsize=10)
        path = save_figure(fig, out, "feature_selection_digits.png")
        if path is not None:
            result.figures["Digits pixels chosen by each method"] = path
    return result
