"""Soft k-means with Gumbel-Softmax assignments, against scikit-learn's KMeans,
and deep clustering: the clustering loss trains an encoder.

``gumbelrs.nn.SoftKMeans`` is trained by gradient descent on the relaxed
distortion with Adam. ``beta`` (the inverse scale of the assignment logits)
rises linearly from ``beta_start`` to ``beta_end`` times ``1 / D``, ``D`` the
mean squared distance to the nearest centre after k-means++ seeding: early
steps see soft, noisy assignments (deterministic annealing), late steps
nearly hard ones.

>>> from gumbelrs.apps import kmeans
>>> result = kmeans.run(kmeans.Config(seeds=2), out=None)   # doctest: +SKIP
>>> result.metrics["iris"]["soft_ari"]                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs import estimators, schedules
from gumbelrs.nn import SoftKMeans

from ._common import (
    AppResult,
    Checkpoint,
    Table,
    Unit,
    check_config,
    mean_std,
    progress,
    pyplot,
    require,
    save_figure,
    seeded,
)

DATASETS = ("iris", "wine", "digits", "breast_cancer")
#: Which data sets are standardised (the others are clustered raw).
STANDARDISED = {"iris": False, "wine": True, "digits": False, "breast_cancer": True}


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The scikit-learn data sets to cluster, some of iris, wine, digits and breast_cancer (wine and
    #: breast_cancer standardised, the others raw); k is the number of classes.
    datasets: tuple[str, ...] = DATASETS
    #: Fits per data set. Fit s runs SoftKMeans and scikit-learn's KMeans with the seed seed + s;
    #: the tables show the mean and sd over them. An int >= 1.
    seeds: int = 10
    #: Full-batch Adam steps of each SoftKMeans fit, over which beta rises from beta_start to
    #: beta_end (also the fit on the deep clustering embedding). An int >= 1.
    steps: int = 300
    #: Adam step of the centres, in units of the data's standard deviation (the step is lr times the
    #: standard deviation of all entries). A number > 0.
    lr: float = 0.05
    #: Inverse scale beta of the assignment logits (minus beta times the squared distance to each
    #: centre) at the first step, in units of 1 / D, D the mean squared distance to the nearest
    #: centre after k-means++ seeding; beta rises linearly to beta_end over the steps. A number > 0.
    beta_start: float = 0.3
    #: beta at the last step, in the units of beta_start; large values make the assignments nearly
    #: hard. A number > 0.
    beta_end: float = 30.0
    #: Temperature of the Gumbel-Softmax assignments. A number > 0.
    tau: float = 1.0
    #: How the assignments are sampled and differentiated, one of gumbelrs.estimators.METHODS, soft,
    #: st, gumbel_rao, reinmax, gst or decoupled.
    method: str = "soft"
    # deep clustering on digits
    #: Also run the deep clustering example on digits (one seed). An autoencoder pre-trained on
    #: reconstruction, SoftKMeans fitted on its embedding, then both trained with the clustering
    #: loss. true or false.
    deep: bool = True
    #: (deep clustering) dimension of the autoencoder's embedding (64 -> 256 -> embed_dim).
    #: An int >= 1.
    embed_dim: int = 10
    #: (deep clustering) full-batch Adam steps (learning rate 1e-3) pre-training the autoencoder on
    #: reconstruction. An int >= 0.
    pretrain_steps: int = 1500
    #: (deep clustering) full-batch Adam steps (learning rate 1e-3) training encoder, decoder and
    #: centres together on the reconstruction error plus cluster_weight times the clustering loss,
    #: beta fixed at its last value. An int >= 0.
    finetune_steps: int = 500
    #: (deep clustering) weight of the clustering loss (the relaxed distortion) beside the
    #: reconstruction error while fine-tuning. A number > 0.
    cluster_weight: float = 3.0
    #: Base seed. Fit s of every data set uses seed + s, the deep clustering example seed itself.
    #: An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("kmeans", self, counts=("seeds", "steps", "embed_dim"),
                     maybe_zero=("pretrain_steps", "finetune_steps", "seed"),
                     positive=("lr", "beta_start", "beta_end", "tau", "cluster_weight"),
                     choices={"datasets": DATASETS, "method": estimators.METHODS})

    @classmethod
    def quick(cls) -> Config:
        """A run of well under a minute on two cores."""
        return cls(seeds=3, pretrain_steps=600, finetune_steps=200)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(datasets=("iris",), seeds=1, steps=30, pretrain_steps=20, finetune_steps=10)


def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A scikit-learn data set as float32 points and int64 labels, standardised
    where :data:`STANDARDISED` says."""
    if name not in STANDARDISED:
        raise ValueError(f"kmeans: unknown data set {name!r}; expected one of {DATASETS}")
    datasets = require("sklearn.datasets", "kmeans")
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    if STANDARDISED[name]:
        x = (x - x.mean(0)) / x.std(0, correction=0).clamp_min(1e-12)
    return x, torch.as_tensor(y, dtype=torch.int64)


def fit(x: torch.Tensor, k: int, config: Config, generator: gumbelrs.Generator) -> SoftKMeans:
    """A :class:`SoftKMeans` fitted to the points ``x`` (``(n, d)``)."""
    km = SoftKMeans(k, x.shape[1], tau=config.tau, method=config.method, generator=generator)
    km.init_kmeanspp(x)
    with torch.no_grad():
        scale = 1.0 / float(km.distances(x).amin(-1).mean().clamp_min(1e-12))
    km.beta_schedule = schedules.Linear(config.beta_start * scale, config.beta_end * scale,
                                        config.steps)
    opt = torch.optim.Adam(km.parameters(), lr=config.lr * float(x.std()))
    for _ in range(config.steps):
        loss = km(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        km.step()
    return km


def _scores(y: torch.Tensor, labels) -> tuple[float, float]:
    metrics = require("sklearn.metrics", "kmeans")
    return (float(metrics.adjusted_rand_score(y, labels)),
            float(metrics.normalized_mutual_info_score(y, labels)))


def seed_unit(name: str, config: Config, s: int) -> tuple[tuple[float, float], ...]:
    """ARI and NMI of SoftKMeans and of scikit-learn's KMeans (k-means++, its
    default single initialisation) on ``name`` with seed ``config.seed + s``."""
    cluster = require("sklearn.cluster", "kmeans")
    x, y = load(name)
    k = int(y.max()) + 1
    g = seeded(config.seed + s)
    km = fit(x, k, config, g)
    labels = cluster.KMeans(k, random_state=config.seed + s).fit(x.numpy()).labels_
    return _scores(y, km.predict(x)), _scores(y, labels)


def _seed_units(name: str, config: Config) -> list[Unit]:
    return [(f"{name}/{s}", seed_unit, (name, config, s)) for s in range(config.seeds)]


def _summary(runs: list[tuple[tuple[float, float], ...]]) -> dict[str, float]:
    out = {}
    for j, who in enumerate(("soft", "kmeans")):
        for i, metric in enumerate(("ari", "nmi")):
            out[f"{who}_{metric}"], out[f"{who}_{metric}_std"] = mean_std(
                [r[j][i] for r in runs])
    return out


def compare(name: str, config: Config, show: bool = False,
            checkpoint: Checkpoint | None = None) -> dict[str, float]:
    """Mean ARI and NMI over ``config.seeds`` seeds of SoftKMeans and of
    scikit-learn's KMeans (k-means++, its default single initialisation)."""
    checkpoint = checkpoint or Checkpoint(None, config)
    return _summary(checkpoint.map(_seed_units(name, config), show, f"kmeans {name}"))


class AutoEncoder(nn.Module):
    """The encoder (64 -> 256 -> ``dim``) and decoder of the deep clustering example."""

    def __init__(self, n_in: int, dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, 256), nn.ReLU(), nn.Linear(256, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, n_in))


def deep_clustering(config: Config, out: Path | None, show: bool = False,
                    checkpoint: Checkpoint | None = None):
    """An autoencoder on digits is pre-trained on reconstruction, SoftKMeans is
    seeded on its embedding, then the clustering loss and the reconstruction
    train encoder, decoder and centres together. Returns the metrics and the
    path of the embedding plot."""
    checkpoint = checkpoint or Checkpoint(None, config)
    return _deep_figure(checkpoint.map([("deep", deep_unit, (config, show))], show)[0], out)


def _deep_figure(done, out: Path | None):
    metrics, embeddings = done
    plt = pyplot("kmeans")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    titles = ("pre-trained embedding", "after training with the clustering loss")
    for ax, (emb, lab), title in zip(axes, embeddings, titles):
        centred = emb - emb.mean(0)
        basis = torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
        p = centred @ basis
        ax.scatter(p[:, 0].numpy(), p[:, 1].numpy(), c=lab.numpy(), cmap="tab10", s=5)
        ax.set_title(title)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.suptitle("digits: embedding coloured by SoftKMeans cluster")
    return metrics, save_figure(fig, out, "kmeans_embedding.png")


def deep_unit(config: Config, show: bool):
    """The deep clustering example's metrics and embeddings (before, after)."""
    x, y = load("digits")
    x = x / 16.0
    g = seeded(config.seed)
    ae = AutoEncoder(x.shape[1], config.embed_dim)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    for _ in progress(range(config.pretrain_steps), config.pretrain_steps, "pretrain", show):
        loss = ((ae.decoder(ae.encoder(x)) - x) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z0 = ae.encoder(x)
    km = fit(z0, 10, config, g)
    before_labels = km.predict(z0)
    before = _scores(y, before_labels)
    km.beta_schedule = schedules.Constant(float(km.beta))
    opt = torch.optim.Adam([*ae.parameters(), *km.parameters()], lr=1e-3)
    for _ in progress(range(config.finetune_steps), config.finetune_steps, "finetune", show):
        z = ae.encoder(x)
        recon = ((ae.decoder(z) - x) ** 2).sum(-1).mean()
        loss = recon + config.cluster_weight * km(z).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = ae.encoder(x)
        labels = km.predict(z)
    after = _scores(y, labels)
    metrics = {"pretrained_ari": before[0], "pretrained_nmi": before[1],
               "finetuned_ari": after[0], "finetuned_nmi": after[1]}
    return metrics, ((z0, before_labels), (z, labels))


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Runs the comparison on ``config.datasets`` and (when ``config.deep``) the
    deep clustering example; writes figures under ``out``. Each finished seed
    is saved in ``checkpoint`` (when given), from which a new run resumes."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    metrics: dict = {"config": dataclasses.asdict(config)}
    units = [u for name in config.datasets for u in _seed_units(name, config)]
    if config.deep:
        units.append(("deep", deep_unit, (config, show)))
    done = dict(zip([key for key, _, _ in units], ckpt.map(units, show, "kmeans")))
    rows = []
    for name in config.datasets:
        m = _summary([done[f"{name}/{s}"] for s in range(config.seeds)])
        metrics[name] = m
        rows.append((name, "standardised" if STANDARDISED[name] else "raw",
                     f"{m['soft_ari']:.3f} ± {m['soft_ari_std']:.3f}",
                     f"{m['kmeans_ari']:.3f} ± {m['kmeans_ari_std']:.3f}",
                     f"{m['soft_nmi']:.3f}", f"{m['kmeans_nmi']:.3f}"))
    result = AppResult("kmeans", metrics, heading="Soft k-means (gumbelrs.nn.SoftKMeans)")
    result.text = (f"Cluster assignments are Gumbel-Softmax samples ({config.method}, tau = "
                   f"{config.tau}) of -beta ||x - mu||^2; the centres are trained by Adam on the "
                   f"relaxed distortion for {config.steps} steps while beta rises from "
                   f"{config.beta_start} to {config.beta_end} over the mean nearest squared "
                   f"distance after k-means++ seeding. ARI and NMI against the true classes, "
                   f"beside scikit-learn's KMeans with the same seeds.")
    result.tables[f"SoftKMeans against KMeans, mean ± sd over {config.seeds} seeds"] = (
        Table(("data", "features", "SoftKMeans ARI", "KMeans ARI",
                        "SoftKMeans NMI", "KMeans NMI"), rows))
    if config.deep:
        deep, figure = _deep_figure(done["deep"], out)
        metrics["deep_clustering"] = deep
        result.tables["Deep clustering on digits (one seed)"] = Table(
            ("stage", "ARI", "NMI"),
            [("SoftKMeans on the pre-trained embedding", deep["pretrained_ari"],
              deep["pretrained_nmi"]),
             ("encoder trained with the clustering loss", deep["finetuned_ari"],
              deep["finetuned_nmi"])])
        if figure is not None:
            result.figures["Digits embedding (first two principal components) coloured by "
                           "cluster"] = figure
    return result
