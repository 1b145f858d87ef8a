"""The categorical VAE of Jang, Gu and Poole (2017) with a selectable gradient
estimator.

``latents`` categorical variables of ``classes`` categories each; MLP encoder
(``hidden``, e.g. 512-256) and mirrored decoder; Bernoulli likelihood of
binarized images; KL to the uniform prior in closed form; the temperature
``tau = max(tau_min, exp(-rate * t))`` updated every ``anneal_every`` steps.
The estimators (``gumbelrs.estimators.sample``): ``soft`` (the decoder reads
the relaxed sample), ``st``, ``gumbel_rao`` and ``reinmax`` (the decoder reads
an exact one-hot).

Evaluation is the same for all estimators: the negative ELBO of held-out
images with discrete latents drawn from the encoder, and the importance-sampled
negative log-likelihood (``iw_samples`` samples from the encoder as proposal).
Data: scikit-learn's 8x8 digits (grey levels 0-16, binarized at 8) or the
5,000-image MNIST subset (binarized at 0.5), 80/20 split.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import gumbelrs
from gumbelrs import estimators, schedules

from . import _data, _dist
from ._common import (
    AppResult,
    Checkpoint,
    Table,
    check_config,
    kl_to_uniform,
    progress,
    pyplot,
    require,
    save_figure,
    seeded,
)

DATASETS = ("digits", "mnist")
METHODS = ("soft", "st", "gumbel_rao", "reinmax")
#: Jang, Gu and Poole (2017), Table 1: negative ELBO of the categorical VAE on binarized MNIST.
PUBLISHED = {"soft": 101.5, "st": 107.8}


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The data sets, some of digits (scikit-learn's 8x8 digits, binarized at half the grey range)
    #: and mnist (the 5,000-image MNIST subset, binarized at 0.5); each is split 80/20 into training
    #: and test images.
    datasets: tuple[str, ...] = DATASETS
    #: The gradient estimators compared (gumbelrs.estimators.sample), one model each per data set,
    #: some of soft (the decoder reads the relaxed sample), st, gumbel_rao and reinmax (the decoder
    #: reads an exact one-hot).
    methods: tuple[str, ...] = METHODS
    #: Number of categorical latent variables. An int >= 1.
    latents: int = 20
    #: Categories of each latent variable. An int >= 1.
    classes: int = 10
    #: Widths of the encoder's hidden layers, input side first (the decoder mirrors them), such as
    #: 512,256. Ints >= 1, at least one.
    hidden: tuple[int, ...] = (512, 256)
    #: Adam steps of training per model. An int >= 1.
    steps: int = 5000
    #: Training images per step, drawn with replacement. An int >= 1.
    batch: int = 100
    #: Adam learning rate. A number > 0.
    lr: float = 1e-3
    #: Temperature at step 0; at step t the temperature is max(tau_min, tau0 exp(-anneal_rate t)), t
    #: rounded down to a multiple of anneal_every. A number > 0.
    tau0: float = 1.0
    #: Rate of the exponential temperature decay, per step (see tau0). A number > 0.
    anneal_rate: float = 3e-4
    #: The temperature changes every this many steps (see tau0). An int >= 1.
    anneal_every: int = 100
    #: Floor of the annealed temperature (see tau0); the held-out relaxed ELBO is taken at the last
    #: step's temperature. A number > 0.
    tau_min: float = 0.5
    #: (gumbel_rao only) Gumbel perturbations averaged per sample (the estimator's option k).
    #: An int >= 1.
    gumbel_rao_k: int = 10
    #: Discrete latent samples per test image for the importance-sampled negative log-likelihood
    #: (the encoder is the proposal). An int >= 1.
    iw_samples: int = 100
    #: Seeds torch (initialisation, training/test split, batches) and the gumbelrs generator of
    #: every model, so that a run is reproducible from it. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("vae", self, counts=("latents", "classes", "hidden", "steps", "batch",
                                          "anneal_every", "gumbel_rao_k", "iw_samples"),
                     maybe_zero=("seed",), positive=("lr", "tau0", "anneal_rate", "tau_min"),
                     choices={"datasets": DATASETS, "methods": METHODS})

    @classmethod
    def quick(cls) -> Config:
        """A run of about a minute on two cores."""
        return cls(datasets=("digits",), steps=1500, iw_samples=20)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(datasets=("digits",), methods=("soft", "st"), steps=10, iw_samples=2)


def load(name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Binarized float32 images (train, test) of ``name`` and the image shape."""
    if name == "digits":
        datasets = require("sklearn.datasets", "vae")
        x = torch.tensor(datasets.load_digits().data, dtype=torch.float32) / 16.0
        shape = (8, 8)
    elif name == "mnist":
        x = _data.mnist_subset("vae")[0]
        shape = (28, 28)
    else:
        raise ValueError(f"vae: unknown data set {name!r}; expected one of {DATASETS}")
    x = (x > 0.5).float()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = len(x) * 4 // 5
    return x[order[:n]], x[order[n:]], shape


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class CategoricalVAE(nn.Module):
    """Encoder to ``latents x classes`` logits, decoder to pixel logits."""

    def __init__(self, n_pixels: int, latents: int, classes: int, hidden: tuple[int, ...]):
        super().__init__()
        self.latents, self.classes = latents, classes
        self.encoder = _mlp([n_pixels, *hidden, latents * classes])
        self.decoder = _mlp([latents * classes, *reversed(hidden), n_pixels])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, latents, classes)`` logits of q(z | x), normalised."""
        return self.encoder(x).view(-1, self.latents, self.classes).log_softmax(-1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` per image (Bernoulli pixels)."""
        out = self.decoder(z.flatten(-2))
        return -nn.functional.binary_cross_entropy_with_logits(
            out, x.expand_as(out), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(q(z | x) || uniform) per image."""
        return kl_to_uniform(logits)


class _Loss(nn.Module):
    """The training loss of one step (DDP syncs the gradients of what its
    forward ran): per-image negative ELBO of this rank's rows ``start:start +
    len(x)`` of a global batch of ``batch`` images."""

    def __init__(self, model: CategoricalVAE, method: str, generator: gumbelrs.Generator,
                 options: dict) -> None:
        super().__init__()
        self.model, self.method, self.generator, self.options = model, method, generator, options

    def forward(self, x: torch.Tensor, tau: float, start: int, batch: int) -> torch.Tensor:
        logits = self.model.logits(x)
        if len(x) < batch:
            # The noise of image i is that of row i of the global batch, whatever the rank
            # count: the rows of the other ranks are drawn too (zero logits) and dropped.
            shape = logits.shape[1:]
            full = torch.cat([logits.new_zeros(start, *shape), logits,
                              logits.new_zeros(batch - start - len(x), *shape)])
            z = estimators.sample(full, self.method, tau, -1, self.generator,
                                  **self.options)[start:start + len(x)]
        else:
            z = estimators.sample(logits, self.method, tau, -1, self.generator, **self.options)
        return self.model.kl(logits) - self.model.log_likelihood(x, z)


def train(model: CategoricalVAE, x: torch.Tensor, method: str, config: Config,
          generator: gumbelrs.Generator, show: bool = False,
          desc: str = "") -> tuple[list[float], float]:
    """Trains ``model`` on ``x`` with ``method``; returns the training loss trace
    and the temperature of the last step.

    In a ``torch.distributed`` job the ranks train one model together
    (``DistributedDataParallel``): each takes its share of the rows of every
    batch, and the gradients are averaged over the ranks. Batches and noise
    are those of a single-process run (each rank draws the same global batch
    and the noise of its rows is the noise a single process draws for them),
    so the runs differ only by the summation order of the gradients."""
    rank, world = _dist.rank_world()
    tau = schedules.ExponentialDecay(config.tau0, config.anneal_rate, config.tau_min,
                                     every=config.anneal_every)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    options = {"k": config.gumbel_rao_k} if method == "gumbel_rao" else {}
    loss_fn: nn.Module = _Loss(model, method, generator, options)
    shares = torch.tensor_split(torch.arange(config.batch), world)
    start, rows = int(shares[rank][0]) if len(shares[rank]) else 0, len(shares[rank])
    if world > 1:
        loss_fn = nn.parallel.DistributedDataParallel(loss_fn)
    g = torch.Generator().manual_seed(generator.seed)
    sums, last = torch.zeros(config.steps, dtype=torch.float64), tau.tau
    losses = []
    for step in progress(range(config.steps), config.steps, desc, show):
        xb = x[torch.randint(0, len(x), (config.batch,), generator=g)[start:start + rows]]
        last = tau.tau
        per_image = loss_fn(xb, last, start, config.batch)
        # DDP averages the ranks' gradients: the sum over this rank's rows times world / batch
        # makes that average the gradient of the batch mean.
        loss = per_image.mean() if world == 1 else per_image.sum() * (world / config.batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tau.step()
        if world == 1:
            losses.append(float(loss.detach()))
        else:
            sums[step] = float(per_image.detach().sum())
    if world > 1:
        dist.all_reduce(sums)
        losses = (sums / config.batch).tolist()
    return losses, last


@torch.no_grad()
def evaluate(model: CategoricalVAE, x: torch.Tensor, samples: int,
             generator: gumbelrs.Generator, tau: float) -> dict[str, float]:
    """Held-out negative ELBO with discrete latents (one sample per image), the
    same with relaxed latents at temperature ``tau`` (the objective a ``soft``
    model is trained on and the one Jang et al. report), and the importance-
    sampled negative log-likelihood (``samples`` discrete draws per image)."""
    logits = model.logits(x)
    relaxed = gumbelrs.gumbel_softmax(logits, tau, generator=generator)
    nelbo_relaxed = float((model.kl(logits) - model.log_likelihood(x, relaxed)).mean())
    one_hot = torch.eye(model.classes)
    draws = gumbelrs.sample_categorical(logits, samples, generator=generator)
    z = one_hot[draws.permute(2, 0, 1)]  # (samples, n, latents, classes)
    log_px = torch.stack([model.log_likelihood(x, zs) for zs in z])
    log_q = (z * logits).sum((-2, -1))
    log_prior = -model.latents * math.log(model.classes)
    nelbo = float((model.kl(logits) - log_px[0]).mean())
    log_w = log_px + log_prior - log_q
    nll = float(-(torch.logsumexp(log_w, 0) - math.log(samples)).mean())
    return {"neg_elbo": nelbo, "neg_elbo_relaxed": nelbo_relaxed, "iw_nll": nll}


def _grids(model: CategoricalVAE, x: torch.Tensor, shape, out: Path | None, name: str,
           method: str, generator: gumbelrs.Generator) -> Path | None:
    plt = pyplot("vae")
    with torch.no_grad():
        logits = model.logits(x[:8])
        z = torch.eye(model.classes)[gumbelrs.sample_categorical(logits, generator=generator)[
            ..., 0]]
        recon = torch.sigmoid(model.decoder(z.flatten(-2)))
        prior = torch.eye(model.classes)[torch.randint(0, model.classes, (8, model.latents))]
        samples = torch.sigmoid(model.decoder(prior.flatten(-2)))
    fig, axes = plt.subplots(3, 8, figsize=(8, 3.2))
    for row, images, label in ((0, x[:8], "data"), (1, recon, "reconstruction"),
                               (2, samples, "prior sample")):
        for col in range(8):
            ax = axes[row, col]
            ax.imshow(images[col].reshape(shape).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"categorical VAE on {name}, {method}", fontsize=9)
    return save_figure(fig, out, f"vae_{name}_{method}.png")


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Trains one VAE per data set and estimator; writes reconstruction grids."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("vae", metrics, heading="Categorical VAE (Jang et al. 2017)")
    result.text = (f"{config.latents} categorical latents of {config.classes} classes, MLP "
                   f"{'-'.join(map(str, config.hidden))}, {config.steps} Adam steps of "
                   f"{config.batch} images, tau = max({config.tau_min}, exp(-{config.anneal_rate}"
                   f" t)) every {config.anneal_every} steps. Held-out negative ELBO with "
                   f"latents as in training (relaxed at the final tau for 'soft', as in Jang et "
                   f"al.'s code; one-hot for the others), with discrete latents for all, and "
                   f"the importance-sampled NLL ({config.iw_samples} discrete samples), "
                   f"nats per image, on the 20% test split. Jang et al. (Table 1, full binarized "
                   f"MNIST): Gumbel-Softmax {PUBLISHED['soft']}, ST Gumbel-Softmax "
                   f"{PUBLISHED['st']}.")
    rows = []
    for name in config.datasets:
        train_x, test_x, shape = load(name, config.seed)
        metrics[name] = {}
        for method in config.methods:
            key = f"{name}/{method}"
            g = seeded(config.seed)
            model = CategoricalVAE(train_x.shape[1], config.latents, config.classes,
                                   config.hidden)
            done = ckpt.get(key)
            if done is None:
                losses, tau = train(model, train_x, method, config, g, show, f"vae {key}")
                scores = evaluate(model.eval(), test_x, config.iw_samples, g, tau)
                done = ckpt.put(key, {"scores": scores, "losses": losses,
                                      "state": model.state_dict()})
            model.load_state_dict(done["state"])
            metrics[name][method] = {**done["scores"], "final_train_loss": done["losses"][-1]}
            sc = done["scores"]
            trained = sc["neg_elbo_relaxed"] if method == "soft" else sc["neg_elbo"]
            rows.append((name, method, trained, sc["neg_elbo"], sc["iw_nll"],
                         PUBLISHED.get(method, "") if name == "mnist" else ""))
            path = _grids(model, test_x, shape, out, name, method, g)
            if path is not None:
                result.figures[f"{name}, {method}: test images, reconstructions, prior "
                               f"samples"] = path
    result.tables["Held-out negative ELBO and NLL (nats per image; lower is better)"] = Table(
        ("data", "estimator", "-ELBO as trained", "-ELBO, discrete z", "IS NLL",
         "Jang et al., full MNIST"), rows)
    return result
