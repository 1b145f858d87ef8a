"""Architecture search over dilation rates with ``gumbelrs.nn.MixedOp``.

A bi-level loop (as in DARTS/GDAS): the network weights take Adam steps on
the training split, the architecture logits on the validation split, with
separate optimizers, while the Gumbel-Softmax temperature anneals
exponentially from ``tau_start`` to ``tau_end``. The architecture gradient is
first order (the validation loss at the current weights) or DARTS' second
order (Liu et al. 2019, eq. 6): the validation loss at the weights after one
virtual SGD step ``w - xi * grad_w L_train(w, alpha)``, differentiated through
that step, which needs the second derivatives of the Gumbel-Softmax sample.
Two tasks:

- ``signals``: synthetic sequences whose class is the sign of their
  autocorrelation at one lag (``Config.lag``, 3 by default) and only there:
  ``x_t = (e_t + s e_{t-lag}) / sqrt(2)``, ``s = +1`` or ``-1``, ``e`` white
  noise. A kernel-3 convolution of dilation ``d`` sees lags ``d`` and ``2d``,
  so among dilations 1 to 5 only ``d = lag`` sees the signal;
- ``digits``: scikit-learn's 8x8 digits with two 2-D searched convolutions.

Reported: the chosen dilation per searched layer, the architecture entropy
over training, and test accuracy of the searched network (retrained with its
chosen dilations) against every fixed-dilation network.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn

from gumbelrs.nn import MixedOp, architecture_parameters, weight_parameters

from ._common import (
    AppResult,
    Checkpoint,
    Table,
    Unit,
    check_config,
    exponential_anneal,
    progress,
    pyplot,
    require,
    save_figure,
    seeded,
)

TASKS = ("signals", "digits")
DILATIONS = (1, 2, 3, 4, 5)


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: The search tasks, some of signals (synthetic sequences whose class lives at one lag only; one
    #: searched 1-D convolution; splits of n_signals) and digits (scikit-learn's 8x8 digits, split
    #: 40/40/20; two searched 2-D convolutions).
    tasks: tuple[str, ...] = TASKS
    #: Searches per task, mode and gradient order (search s uses the seed seed + s, as do its data
    #: and the fixed-dilation baselines). An int >= 1.
    seeds: int = 5
    #: The MixedOp modes, some of soft (SNAS, the weighted sum of every candidate) and hard (GDAS,
    #: one sampled candidate).
    modes: tuple[str, ...] = ("soft", "hard")
    #: The architecture gradients, some of 1 (first order, the validation loss at the current
    #: weights) and 2 (DARTS' unrolled gradient, through one virtual SGD step of xi).
    orders: tuple[int, ...] = (1, 2)
    #: (order 2 only) the virtual SGD step w - xi grad_w L_train(w, alpha) that the architecture
    #: gradient is taken through (DARTS' weight learning rate). A number > 0.
    xi: float = 0.025
    #: Search steps, each one weight step on a training batch and one architecture step on a
    #: validation batch; the temperature anneals over them. An int >= 1.
    steps: int = 600
    #: Adam steps training the chosen architecture, and every fixed-dilation network, from scratch
    #: on the training split before testing. An int >= 0.
    retrain_steps: int = 600
    #: Gumbel-Softmax temperature of the MixedOps at the first search step, decaying geometrically
    #: to tau_end at the last. A number > 0, at
    #: least tau_end (equal gives a constant temperature).
    tau_start: float = 5.0
    #: Gumbel-Softmax temperature at the last search step (see tau_start). A number > 0.
    tau_end: float = 0.1
    #: Adam learning rate of the network weights (search, retraining and the fixed baselines).
    #: A number > 0.
    lr: float = 3e-3
    #: Adam learning rate of the architecture logits. A number > 0.
    arch_lr: float = 3e-2
    #: Output channels of the searched convolutions, signals 1 -> channels; digits
    #: 1 -> channels -> 2 channels. An int >= 1.
    channels: int = 8
    #: Examples per step, drawn with replacement from the split (at most the split's size).
    #: An int >= 1.
    batch: int = 128
    #: (signals) the lag whose autocorrelation (+1/2 or -1/2) is the class; of the dilations 1 to 5
    #: only dilation lag sees it. One of 1, 3 or 5.
    lag: int = 3
    #: (signals) time steps per sequence. An int >= 1.
    length: int = 64
    #: (signals) n, the training and validation sequences together (half each); the test split
    #: has n / 2 more. An int >= 1.
    n_signals: int = 2048
    #: Base seed. Search s uses seed + s. An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("nas", self, counts=("seeds", "steps", "channels", "batch", "lag",
                                          "length", "n_signals"),
                     maybe_zero=("retrain_steps", "seed"),
                     positive=("tau_start", "tau_end", "lr", "arch_lr", "xi"),
                     choices={"tasks": TASKS, "modes": ("soft", "hard"), "orders": (1, 2)})
        if self.tau_end > self.tau_start:
            raise ValueError(f"nas: tau_end={self.tau_end!r} must be at most "
                             f"tau_start={self.tau_start!r} (the temperature anneals down)")
        if self.lag not in (1, 3, 5):
            raise ValueError(f"nas: lag must be 1, 3 or 5 (the lags that exactly one dilation "
                             f"in {DILATIONS} sees), got {self.lag!r}")

    @classmethod
    def quick(cls) -> Config:
        """A run of under two minutes on two cores (both gradient orders)."""
        return cls(seeds=2, steps=300, retrain_steps=300, n_signals=1024)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(tasks=("signals",), seeds=1, steps=10, retrain_steps=5, n_signals=256,
                   batch=32)


def lagged_signals(n: int, length: int, lag: int, generator: torch.Generator | None = None):
    """``n`` sequences ``(n, 1, length)`` and labels: class 1 has autocorrelation
    +1/2 at ``lag``, class 0 has -1/2, both 0 at every other lag."""
    e = torch.randn(n, length + lag, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    s = (2 * y - 1).to(e.dtype)[:, None]
    x = (e[:, lag:] + s * e[:, :-lag]) / math.sqrt(2)
    return x[:, None], y


class SignalNet(nn.Module):
    """One searched 1-D convolution (1 -> channels), ReLU, global average pool,
    linear classifier. ``dilation`` fixes the architecture instead."""

    def __init__(self, channels: int, mode: str, tau, generator, dilation: int | None = None):
        super().__init__()
        if dilation is None:
            self.conv = MixedOp.dilated_convs(1, channels, 3, DILATIONS, dims=1, mode=mode,
                                              tau=tau, generator=generator)
        else:
            self.conv = nn.Conv1d(1, channels, 3, dilation=dilation, padding=dilation)
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(-1))


class DigitNet(nn.Module):
    """Two searched 2-D convolutions (1 -> c -> 2c) with ReLU, global average
    pool and a linear classifier; ``dilations`` fixes them instead."""

    def __init__(self, channels: int, mode: str, tau, generator,
                 dilations: tuple[int, int] | None = None):
        super().__init__()
        sizes = ((1, channels), (channels, 2 * channels))
        if dilations is None:
            self.convs = nn.ModuleList(
                MixedOp.dilated_convs(a, b, 3, DILATIONS, dims=2, mode=mode, tau=tau,
                                      generator=generator) for a, b in sizes)
        else:
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, dilation=d, padding=d)
                                       for (a, b), d in zip(sizes, dilations))
        self.head = nn.Linear(2 * channels, 10)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean((-2, -1)))


def _data(task: str, config: Config, seed: int):
    """(train, validation, test) splits of ``task``."""
    if task == "signals":
        g = torch.Generator().manual_seed(seed)
        n = config.n_signals
        x, y = lagged_signals(3 * n // 2, config.length, config.lag, g)
        m = n // 2
        return (x[:m], y[:m]), (x[m:n], y[m:n]), (x[n:], y[n:])
    datasets = require("sklearn.datasets", "nas")
    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(y, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    a, b = len(x) * 2 // 5, len(x) * 4 // 5
    return ((x[order[:a]], y[order[:a]]), (x[order[a:b]], y[order[a:b]]),
            (x[order[b:]], y[order[b:]]))


def _net(task: str, config: Config, mode: str, tau, generator, fixed=None) -> nn.Module:
    if task == "signals":
        return SignalNet(config.channels, mode, tau, generator, fixed)
    return DigitNet(config.channels, mode, tau, generator, fixed)


def _batches(data, batch: int, steps: int, seed: int):
    x, y = data
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g)
        yield x[idx], y[idx]


def _accuracy(model: nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        acc = float((model(data[0]).argmax(-1) == data[1]).double().mean())
    model.train()
    return acc


def _fit(model: nn.Module, train, config: Config, seed: int, steps: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    for xb, yb in _batches(train, config.batch, steps, seed):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _unrolled_architecture_gradient(model: nn.Module, train_batch, val_batch,
                                    xi: float) -> None:
    """DARTS' second-order architecture gradient (Liu et al. 2019, eq. 6-7),
    exact: ``grad_alpha L_val(w - xi * grad_w L_train(w, alpha), alpha)``,
    differentiated through the virtual step (``create_graph``), into ``.grad``
    of the architecture logits. The model's weights are left as they were."""
    arch = {id(p) for p in architecture_parameters(model)}
    named = dict(model.named_parameters())
    weights = {k: p for k, p in named.items() if id(p) not in arch}
    alphas = {k: p for k, p in named.items() if id(p) in arch}
    loss = nn.functional.cross_entropy(
        torch.func.functional_call(model, named, (train_batch[0],)), train_batch[1])
    # In hard mode only the sampled candidate runs: the others' weights do not move.
    grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True,
                                allow_unused=True)
    stepped = {k: p if g is None else p - xi * g for (k, p), g in zip(weights.items(), grads)}
    loss = nn.functional.cross_entropy(
        torch.func.functional_call(model, {**stepped, **alphas}, (val_batch[0],)),
        val_batch[1])
    for p, g in zip(alphas.values(), torch.autograd.grad(loss, list(alphas.values()))):
        p.grad = g


def search(task: str, mode: str, config: Config, seed: int, show: bool = False,
           order: int = 1) -> dict:
    """One search on ``task`` with MixedOps in ``mode`` and architecture
    gradients of ``order`` (1 or 2): the chosen dilations, the entropy trace,
    the mean time of a search step, and the test accuracy of the chosen
    architecture trained from scratch."""
    g = seeded(seed)
    train, val, test = _data(task, config, seed)
    tau = exponential_anneal(config.tau_start, config.tau_end, config.steps)
    model = _net(task, config, mode, tau, g)
    ops = [m for m in model.modules() if isinstance(m, MixedOp)]
    w_opt = torch.optim.Adam(weight_parameters(model), lr=config.lr)
    a_opt = torch.optim.Adam(architecture_parameters(model), lr=config.arch_lr)
    entropy, temperature = [], []
    pairs = zip(_batches(train, config.batch, config.steps, seed),
                _batches(val, config.batch, config.steps, seed + 1))
    start = time.perf_counter()
    for (xt, yt), (xv, yv) in progress(pairs, config.steps, f"nas {task} {mode} o{order}",
                                       show):
        loss = nn.functional.cross_entropy(model(xt), yt)
        w_opt.zero_grad()
        loss.backward()
        w_opt.step()
        a_opt.zero_grad()
        if order == 1:
            nn.functional.cross_entropy(model(xv), yv).backward()
        else:
            _unrolled_architecture_gradient(model, (xt, yt), (xv, yv), config.xi)
        a_opt.step()
        entropy.append(float(sum(op.entropy() for op in ops).detach()) / len(ops))
        temperature.append(tau.tau)
        tau.step()  # one schedule, shared by every MixedOp
    step_ms = 1000 * (time.perf_counter() - start) / config.steps
    chosen = [DILATIONS[op.chosen()] for op in ops]
    fixed_arch = chosen[0] if task == "signals" else tuple(chosen)
    searched = _fit(_net(task, config, mode, 1.0, g, fixed_arch), train, config, seed,
                    config.retrain_steps)
    return {"chosen": chosen, "entropy": entropy, "temperature": temperature,
            "probs": [op.probs().detach().tolist() for op in ops], "step_ms": step_ms,
            "searched_accuracy": _accuracy(searched, test)}


def fixed_baselines(task: str, config: Config, seed: int) -> dict[int, float]:
    """Test accuracy of the network with every layer at one dilation, per dilation."""
    g = seeded(seed)
    train, _, test = _data(task, config, seed)
    out = {}
    for d in DILATIONS:
        arch = d if task == "signals" else (d, d)
        net = _net(task, config, "soft", 1.0, g, arch)
        out[d] = _accuracy(_fit(net, train, config, seed, config.retrain_steps), test)
    return out


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Searches ``config.seeds`` times on each task; writes the entropy plot."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    units: list[Unit] = []
    for task in config.tasks:
        units += [(f"{task}/{s}/fixed", fixed_baselines, (task, config, config.seed + s))
                  for s in range(config.seeds)]
        units += [(f"{task}/{mode}/{order}/{s}", search,
                   (task, mode, config, config.seed + s, show, order))
                  for mode in config.modes for order in config.orders
                  for s in range(config.seeds)]
    done = dict(zip([key for key, _, _ in units], ckpt.map(units, show, "nas")))
    fixed = {task: [done[f"{task}/{s}/fixed"] for s in range(config.seeds)]
             for task in config.tasks}
    runs = {(task, mode, order): [done[f"{task}/{mode}/{order}/{s}"]
                                  for s in range(config.seeds)]
            for task in config.tasks for mode in config.modes for order in config.orders}
    return _report(config, runs, fixed, out)


def _report(config: Config, runs: dict[tuple[str, str, int], list[dict]],
            fixed: dict[str, list[dict[int, float]]], out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("nas", metrics, heading="Architecture search over dilation rates "
                                                "(gumbelrs.nn.MixedOp)")
    result.text = (f"MixedOps over dilations {DILATIONS} (kernel 3) in soft (SNAS: weighted "
                   f"sum) or hard (GDAS: one sampled candidate) mode, {config.steps} "
                   f"bi-level steps (weights on the training split, architecture logits on the "
                   f"validation split, separate Adam optimizers) with first-order or DARTS' "
                   f"second-order architecture gradients (one virtual SGD step of "
                   f"xi = {config.xi}, differentiated through), temperature "
                   f"{config.tau_start} -> {config.tau_end}; the chosen architecture and every "
                   f"fixed one are then trained {config.retrain_steps} steps on the training "
                   f"split and scored on the test split. On 'signals' the class lives at lag "
                   f"{config.lag} only, which only dilation {config.lag} sees.")
    rows = []
    for task in config.tasks:
        base = {d: sum(f[d] for f in fixed[task]) / len(fixed[task]) for d in DILATIONS}
        metrics[task] = {"fixed_accuracy": base}
        for mode, order in ((m, o) for m in config.modes for o in config.orders):
            rs = runs[task, mode, order]
            hits = sum(r["chosen"][0] == config.lag for r in rs) if task == "signals" else None
            m = {"chosen": [r["chosen"] for r in rs],
                 "searched_accuracy": sum(r["searched_accuracy"] for r in rs) / len(rs),
                 "initial_entropy": sum(r["entropy"][0] for r in rs) / len(rs),
                 "final_entropy": sum(r["entropy"][-1] for r in rs) / len(rs),
                 "step_ms": sum(r["step_ms"] for r in rs) / len(rs)}
            if hits is not None:
                m["planted_found"] = hits
            metrics[task].setdefault(mode, {})[f"order{order}"] = m
            rows.append((task, mode, order,
                         " ".join("/".join(map(str, r["chosen"])) for r in rs),
                         "" if hits is None else f"{hits} of {len(rs)}",
                         m["searched_accuracy"], m["final_entropy"], f"{m['step_ms']:.1f}",
                         *(base[d] for d in DILATIONS)))
    result.tables[f"Chosen dilations and test accuracy (mean over {config.seeds} seeds)"] = Table(
        ("task", "mode", "gradient order", "chosen per seed", "planted lag found", "searched",
         "final entropy", "ms per search step", *(f"fixed d={d}" for d in DILATIONS)), rows)
    plt = pyplot("nas")
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for c, ((task, mode, order), rs) in enumerate(runs.items()):
        for i, r in enumerate(rs):
            ax.plot(r["entropy"], color=f"C{c}", alpha=0.6,
                    label=f"{task}, {mode}, order {order}" if i == 0 else None)
    ax.axhline(math.log(len(DILATIONS)), color="grey", ls=":", lw=1, label="uniform")
    ax.set_xlabel("search step")
    ax.set_ylabel("architecture entropy (nats)")
    twin = ax.twinx()
    twin.plot(next(iter(runs.values()))[0]["temperature"], color="black", ls="--",
              label="temperature")
    twin.set_yscale("log")
    twin.set_ylabel("temperature")
    handles, labels = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles + more[0], labels + more[1], fontsize=7)
    ax.set_title("Architecture entropy while the temperature anneals")
    path = save_figure(fig, out, "nas_entropy.png")
    if path is not None:
        result.figures["Architecture entropy over the search (one line per seed), with the "
                       "temperature"] = path
    return result
