"""Regression with uncertainty: Concrete dropout against fixed-p MC dropout and
no dropout, on Boston housing (506 tracts, 13 features; shipped by mlxtend,
see :mod:`gumbelrs.apps._data`) and scikit-learn's diabetes data (442
patients, 10 features), over random 90/10 splits, in the protocol of Gal and
Ghahramani (2016).

Every model is the same MLP with a heteroscedastic Gaussian output (a mean and
a log-variance, trained by the negative log-likelihood of the standardised
target) and the same weight prior (length scale ``l``, ``l^2 / N`` per weight
norm). They differ only in dropout:

- ``concrete``: :class:`gumbelrs.nn.ConcreteDropout` before every layer, one
  learned ``p`` per layer (regularisers of Gal, Hron and Kendall 2017);
- ``mc``: ``torch.nn.Dropout`` with the fixed ``p`` of ``Config.fixed_p``;
- ``none``: no dropout (the predictive variance is the network's own).

Test metrics use ``mc_samples`` stochastic passes: RMSE of the predictive mean
and the test log-likelihood ``log mean_t N(y; mu_t, var_t)`` in the target's
units, as in the paper; calibration uses the probability integral transform
of the predictive mixture. The paper's Boston numbers are quoted beside ours.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs.nn import ConcreteDropout, concrete_dropout_regularization, mc_samples

from . import _data
from ._common import (
    AppResult,
    Checkpoint,
    Table,
    check_config,
    pyplot,
    require,
    save_figure,
    seeded,
)

METHODS = ("concrete", "mc", "none")
DATASETS = ("boston", "diabetes")
#: Published MC dropout results (Gal and Ghahramani 2016, Table 1), mean ± s.e. over 20 splits.
PUBLISHED = {"boston": {"rmse": (2.97, 0.85), "ll": (-2.46, 0.25)}}
#: Nominal coverages of the central predictive intervals in the calibration plot.
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The regression data sets, some of boston (Boston housing, 506 tracts, 13 features) and
    #: diabetes (scikit-learn's, 442 patients, 10 features).
    datasets: tuple[str, ...] = DATASETS
    #: Random training/test splits per data set (split i uses the seed seed + i); the tables show
    #: the mean and standard error over them. An int >= 1.
    splits: int = 20
    #: Fraction of the data held out for testing in each split (at least one point).
    #: A number in (0, 1).
    test_fraction: float = 0.1
    #: Widths of the MLP's hidden layers (ReLU), such as 50,50. Ints >= 1, at least one.
    hidden: tuple[int, ...] = (50, 50)
    #: Full-batch Adam steps of training per model. An int >= 1.
    steps: int = 800
    #: Adam learning rate. A number > 0.
    lr: float = 1e-3
    #: The mc model's fixed drop probability (torch.nn.Dropout before every layer); its weight decay
    #: is divided by 1 - fixed_p. A number in (0, 1).
    fixed_p: float = 0.1
    #: The concrete model's drop probability at the start, in every ConcreteDropout layer (learned
    #: from there, one per layer). A number in (0, 1).
    p_init: float = 0.1
    #: Temperature of the Binary Concrete relaxation of the concrete model's drop masks.
    #: A number > 0.
    tau: float = 0.1
    #: Prior length scale l of the weights, a weight decay of l^2 / N times the sum of squared
    #: weights, N the training points (divided by 1 - p under dropout; Gal and Ghahramani's
    #: regulariser). A number > 0.
    length_scale: float = 1e-2
    #: Stochastic forward passes per test point that make the predictive distribution of the
    #: concrete and mc models (the none model uses one). An int >= 1.
    mc_samples: int = 100
    #: Base seed. Split i is drawn and trained with the seed seed + i (the split, initialisations
    #: and dropout noise). An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("dropout", self, counts=("splits", "hidden", "steps", "mc_samples"),
                     maybe_zero=("seed",), positive=("lr", "tau", "length_scale"),
                     fractions=("test_fraction", "fixed_p", "p_init"),
                     choices={"datasets": DATASETS})

    @classmethod
    def quick(cls) -> Config:
        """A run of well under a minute on two cores."""
        return cls(splits=4, steps=600, mc_samples=50)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(datasets=("diabetes",), splits=1, steps=20, mc_samples=5)


@functools.lru_cache(maxsize=4)
def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 features and target of ``name`` (``"boston"`` or ``"diabetes"``;
    loaded once per process: do not modify them in place)."""
    if name == "boston":
        return _data.boston("dropout")
    if name != "diabetes":
        raise ValueError(f"dropout: unknown data set {name!r}; expected one of {DATASETS}")
    datasets = require("sklearn.datasets", "dropout")
    x, y = datasets.load_diabetes(return_X_y=True, scaled=False)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)


def network(method: str, n_in: int, n_train: int, config: Config,
            generator: gumbelrs.Generator) -> nn.Sequential:
    """The MLP of ``method`` with outputs ``(mean, log variance)``."""
    sizes = (n_in, *config.hidden, 2)
    wr, dr = config.length_scale ** 2 / n_train, 2.0 / n_train
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        if method == "concrete":
            layers.append(ConcreteDropout(nn.Linear(a, b), p=config.p_init, tau=config.tau,
                                          weight_regularizer=wr, dropout_regularizer=dr,
                                          generator=generator))
        else:
            if method == "mc":
                layers.append(nn.Dropout(config.fixed_p))
            layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _regularization(method: str, model: nn.Sequential, n_train: int, config: Config):
    if method == "concrete":
        return concrete_dropout_regularization(model)
    keep = 1 - config.fixed_p if method == "mc" else 1.0
    squares = sum((m.weight ** 2).sum() for m in model if isinstance(m, nn.Linear))
    return config.length_scale ** 2 / n_train * squares / keep


def _nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mu, log_var = out[:, 0], out[:, 1]
    return 0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var) + math.log(2 * math.pi)).mean()


def train(method: str, x: torch.Tensor, y: torch.Tensor, config: Config,
          generator: gumbelrs.Generator) -> nn.Sequential:
    """A model of ``method`` fitted to standardised ``x``, ``y`` (float32)."""
    model = network(method, x.shape[1], len(x), config, generator)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.steps):
        loss = _nll(model(x), y) + _regularization(method, model, len(x), config)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, y_mean: float,
             y_std: float, n: int) -> dict[str, torch.Tensor | float]:
    """RMSE, mean test log-likelihood and PIT values in the target's units."""
    s = mc_samples(model, x, n).double()
    mu = s[..., 0] * y_std + y_mean
    var = torch.exp(s[..., 1]) * y_std ** 2
    log_lik = -0.5 * (torch.log(2 * math.pi * var) + (y - mu) ** 2 / var)
    ll = torch.logsumexp(log_lik, 0) - math.log(len(s))
    pit = (0.5 * (1 + torch.erf((y - mu) / torch.sqrt(2 * var)))).mean(0)
    rmse = torch.sqrt(((mu.mean(0) - y) ** 2).mean())
    return {"rmse": float(rmse), "ll": float(ll.mean()), "pit": pit}


def split(config: Config, name: str, index: int) -> dict:
    """Every method trained and evaluated on random split ``index`` of ``name``."""
    x_all, y_all = load(name)
    n_test = max(1, round(config.test_fraction * len(x_all)))
    g = seeded(config.seed + index)
    order = torch.randperm(len(x_all))
    test, tr = order[:n_test], order[n_test:]
    xm, xs = x_all[tr].mean(0), x_all[tr].std(0)
    ym, ys = float(y_all[tr].mean()), float(y_all[tr].std())
    xtr = ((x_all[tr] - xm) / xs).float()
    ytr = ((y_all[tr] - ym) / ys).float()
    xte = ((x_all[test] - xm) / xs).float()
    result = {}
    for method in METHODS:
        model = train(method, xtr, ytr, config, g)
        n = 1 if method == "none" else config.mc_samples
        result[method] = evaluate(model, xte, y_all[test], ym, ys, n)
        if method == "concrete":
            result["learned_p"] = [float(m.p.detach()) for m in model
                                   if isinstance(m, ConcreteDropout)]
    return result


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """All methods on ``config.splits`` random splits; writes the calibration
    plot under ``out``. Each finished split is saved in ``checkpoint`` (when
    given), from which a new run resumes."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    splits: dict[str, list[dict]] = {name: [] for name in config.datasets}
    units = [(f"{name}/{i}", split, (config, name, i)) for name in config.datasets
             for i in range(config.splits)]
    for (_, _, (_, name, _)), done in zip(units, ckpt.map(units, show, "dropout splits")):
        splits[name].append(done)
    return _report(config, splits, out)


def _coverage(pit: torch.Tensor) -> list[float]:
    return [float(((pit - 0.5).abs() <= c / 2).double().mean()) for c in LEVELS]


def _mean_se(v: list[float]) -> tuple[float, float]:
    t = torch.tensor(v, dtype=torch.float64)
    se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return float(t.mean()), se


def _report(config: Config, splits: dict[str, list[dict]], out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("dropout", metrics, heading="Concrete dropout (gumbelrs.nn.ConcreteDropout)")
    result.text = (f"An MLP {config.hidden} with a heteroscedastic Gaussian output, trained "
                   f"{config.steps} full-batch steps on standardised data; dropout before every "
                   f"layer with p learned through the Binary Concrete relaxation (tau = "
                   f"{config.tau}), fixed at {config.fixed_p} (MC dropout), or none. Test "
                   f"metrics from {config.mc_samples} MC passes, in the target's units, mean ± "
                   f"standard error over {config.splits} random 90/10 splits. Gal and "
                   f"Ghahramani (2016), MC dropout on Boston: RMSE 2.97 ± 0.85, test "
                   f"log-likelihood -2.46 ± 0.25.")
    rows, p_rows, coverage = [], [], {}
    names = ["input", *(f"hidden {i + 1}" for i in range(len(config.hidden)))]
    for name, runs in splits.items():
        metrics[name] = {}
        for method in METHODS:
            rmse = _mean_se([r[method]["rmse"] for r in runs])
            ll = _mean_se([r[method]["ll"] for r in runs])
            cover = _coverage(torch.cat([r[method]["pit"] for r in runs]))
            coverage[name, method] = cover
            metrics[name][method] = {"rmse": rmse[0], "rmse_se": rmse[1], "ll": ll[0],
                                     "ll_se": ll[1], "coverage": dict(zip(map(str, LEVELS),
                                                                          cover))}
            rows.append((name, method, f"{rmse[0]:.2f} ± {rmse[1]:.2f}",
                         f"{ll[0]:.3f} ± {ll[1]:.3f}", f"{cover[LEVELS.index(0.9)]:.3f}"))
        if name in PUBLISHED:
            pub = PUBLISHED[name]
            rows.append((name, "MC dropout, Gal and Ghahramani (2016)",
                         f"{pub['rmse'][0]:.2f} ± {pub['rmse'][1]:.2f}",
                         f"{pub['ll'][0]:.2f} ± {pub['ll'][1]:.2f}", ""))
        p = torch.tensor([r["learned_p"] for r in runs])
        sd = p.std(0) if len(p) > 1 else torch.zeros(p.shape[1])
        metrics[name]["learned_p"] = {"mean": p.mean(0).tolist(), "std": sd.tolist()}
        p_rows += [(name, layer, float(m), float(d))
                   for layer, m, d in zip(names, p.mean(0), sd)]
    result.tables["Test RMSE, log-likelihood and coverage"] = Table(
        ("data", "dropout", "test RMSE", "test log-likelihood", "coverage of the 90% interval"),
        rows)
    result.tables["Concrete dropout: learned drop probability per layer"] = Table(
        ("data", "layer", "p (mean over splits)", "sd"), p_rows)
    plt = pyplot("dropout")
    fig, axes = plt.subplots(1, len(splits), figsize=(4.4 * len(splits), 4.2), squeeze=False)
    for ax, name in zip(axes[0], splits):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="ideal")
        for method in METHODS:
            ax.plot(LEVELS, coverage[name, method], marker="o", label=method)
        ax.set_xlabel("nominal coverage of the central interval")
        ax.set_ylabel("observed coverage on test points")
        ax.set_title(f"{name} (all splits)")
        ax.legend()
    path = save_figure(fig, out, "dropout_calibration.png")
    if path is not None:
        result.figures["Calibration of the predictive distributions"] = path
    return result
