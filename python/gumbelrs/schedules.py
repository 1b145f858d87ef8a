"""Temperature schedules for Gumbel-Softmax training, and a reheating controller.

A schedule maps the training step to a temperature ``tau``:

>>> import torch, gumbelrs
>>> from gumbelrs.schedules import ExponentialDecay
>>> sched = ExponentialDecay(tau0=1.0, rate=1e-4, tau_min=0.5, every=500)
>>> logits = torch.zeros(8, 10)
>>> for step in range(1000):
...     y = gumbelrs.gumbel_softmax(logits, tau=sched.tau)
...     tau = sched.step()              # the next step's temperature
>>> round(sched.tau, 4)                  # exp(-1e-4 * 1000), updated every 500 steps
0.9048

``value(step)`` is the temperature at any step (pure), ``tau`` the one at the
current step, ``step()`` advances. ``state_dict()``/``load_state_dict()`` save
and restore the position (and a :class:`Reheater`'s history) so training can
resume; ``values(n)`` gives the first ``n`` temperatures and ``plot(n)`` draws
them (matplotlib, the ``apps`` extra).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._validate import count, finite, positive

__all__ = [
    "Constant",
    "Cosine",
    "ExponentialDecay",
    "LearnableTemperature",
    "Linear",
    "Reheater",
    "RelGAN",
    "Schedule",
]


class Schedule:
    """Base class: subclasses define :meth:`value`."""

    def __init__(self) -> None:
        self.step_count = 0

    def value(self, step: int) -> float:
        """The temperature at ``step``."""
        raise NotImplementedError

    @property
    def tau(self) -> float:
        """The temperature at the current step."""
        return self.value(self.step_count)

    def step(self, n: int = 1) -> float:
        """Advances ``n`` steps; returns the new temperature."""
        self.step_count += count(type(self).__name__, "n", n, 0)
        return self.tau

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])

    def values(self, steps: int) -> list[float]:
        """The temperatures at steps ``0 .. steps - 1`` (data for a plot)."""
        return [self.value(s) for s in range(count(type(self).__name__, "steps", steps, 1))]

    def plot(self, steps: int, ax=None):
        """Draws the first ``steps`` temperatures on ``ax`` (a new figure if None)."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError(
                "Schedule.plot needs matplotlib: pip install 'gumbelrs[apps]' "
                "(or use Schedule.values for the data)"
            ) from e
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(steps), self.values(steps), label=type(self).__name__)
        ax.set_xlabel("step")
        ax.set_ylabel("temperature")
        return ax

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step_count}, tau={self.tau:.4g})"


class Constant(Schedule):
    """``tau`` at every step.

    ``tau``: the temperature, a positive float; a bad one raises
    ``ValueError``.
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau0 = positive("Constant", "tau", tau)

    def value(self, step: int) -> float:
        return self.tau0


class ExponentialDecay(Schedule):
    """``max(tau_min, tau0 * exp(-rate * t))`` with ``t`` the step rounded down to
    a multiple of ``every`` (Jang, Gu and Poole 2017 anneal every 500 steps with
    ``rate`` in {1e-5, 1e-4} and ``tau_min = 0.5``)."""

    def __init__(self, tau0: float = 1.0, rate: float = 1e-4, tau_min: float = 0.5,
                 every: int = 1) -> None:
        super().__init__()
        self.tau0 = positive("ExponentialDecay", "tau0", tau0)
        self.rate = positive("ExponentialDecay", "rate", rate)
        self.tau_min = positive("ExponentialDecay", "tau_min", tau_min)
        self.every = count("ExponentialDecay", "every", every, 1)

    def value(self, step: int) -> float:
        t = (step // self.every) * self.every
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * t))


class Linear(Schedule):
    """From ``start`` to ``end`` linearly over ``steps`` steps, then ``end``."""

    def __init__(self, start: float, end: float, steps: int) -> None:
        super().__init__()
        self.start = positive("Linear", "start", start)
        self.end = positive("Linear", "end", end)
        self.steps = count("Linear", "steps", steps, 1)

    def value(self, step: int) -> float:
        f = min(step, self.steps) / self.steps
        return self.start + (self.end - self.start) * f


class Cosine(Schedule):
    """From ``start`` to ``end`` along half a cosine over ``steps`` steps, then ``end``."""

    def __init__(self, start: float, end: float, steps: int) -> None:
        super().__init__()
        self.start = positive("Cosine", "start", start)
        self.end = positive("Cosine", "end", end)
        self.steps = count("Cosine", "steps", steps, 1)

    def value(self, step: int) -> float:
        f = min(step, self.steps) / self.steps
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * f)) / 2


class RelGAN(Schedule):
    """The inverse-temperature schedules of RelGAN (Nie, Narodytska and Patel 2019).

    The inverse temperature ``beta`` rises from 1 at step 0 to ``beta_max`` at
    ``total_steps`` (and stays there); the temperature is ``1 / beta``. With
    ``f = n / N`` (``n`` the step, ``N = total_steps``):

    ======== ==========================================================
    kind     beta
    ======== ==========================================================
    constant ``beta_max``
    linear   ``1 + (beta_max - 1) * f``
    exp      ``beta_max ** f``
    log      ``1 + (beta_max - 1) * log(1 + n) / log(1 + N)``
    sigmoid  ``1 + (beta_max - 1) / (1 + exp(10 - 20 f))``
    quad     ``1 + (beta_max - 1) * f ** 2``
    sqrt     ``1 + (beta_max - 1) * sqrt(f)``
    ======== ==========================================================

    (RelGAN's sigmoid is centred at ``N / 2`` with slope ``20 / N`` and does
    not reach exactly 1 and ``beta_max`` at the ends; the other forms do.)
    """

    KINDS = ("constant", "linear", "exp", "log", "sigmoid", "quad", "sqrt")

    def __init__(self, kind: str = "exp", beta_max: float = 100.0,
                 total_steps: int = 5000) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"RelGAN: kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.beta_max = positive("RelGAN", "beta_max", beta_max)
        if self.beta_max < 1:
            raise ValueError(f"RelGAN: beta_max must be >= 1, got {beta_max!r}")
        self.total_steps = count("RelGAN", "total_steps", total_steps, 1)

    def beta(self, step: int) -> float:
        """The inverse temperature at ``step``."""
        n = min(step, self.total_steps)
        big_n = self.total_steps
        f = n / big_n
        b = self.beta_max
        return {
            "constant": lambda: b,
            "linear": lambda: 1 + (b - 1) * f,
            "exp": lambda: b**f,
            "log": lambda: 1 + (b - 1) * math.log1p(n) / math.log1p(big_n),
            "sigmoid": lambda: 1 + (b - 1) / (1 + math.exp(10 - 20 * f)),
            "quad": lambda: 1 + (b - 1) * f * f,
            "sqrt": lambda: 1 + (b - 1) * math.sqrt(f),
        }[self.kind]()

    def value(self, step: int) -> float:
        return 1.0 / self.beta(step)


class Reheater(Schedule):
    """Raises the temperature of ``base`` when a diversity signal collapses.

    Call :meth:`observe` with a diversity measure of recent samples (the
    entropy of sampled categories, distinct-n of generated sequences, ...).
    When it is below ``threshold`` and the last reheat was at least
    ``cooldown`` steps ago, the temperature is multiplied by ``boost`` (at
    most ``cap``) for ``hold`` steps, then goes back to the base schedule
    linearly over ``release`` steps. Every reheat is recorded in ``events``
    with its step, the diversity that caused it and the temperatures.

    ``boost`` above 1 heats; below 1 it cools instead, for a temperature whose
    *lower* values bring diversity back (RelGAN's ``1 / beta``: the text GAN
    restores its generator's diversity by sharpening the discriminator's input).
    """

    def __init__(self, base: Schedule, threshold: float, boost: float = 2.0, hold: int = 100,
                 release: int = 100, cooldown: int = 300, cap: float | None = None) -> None:
        super().__init__()
        if not isinstance(base, Schedule):
            raise TypeError(f"Reheater: base must be a Schedule, got {type(base).__name__}")
        self.base = base
        self.threshold = finite("Reheater", "threshold", threshold)
        self.boost = positive("Reheater", "boost", boost)
        if self.boost == 1:
            raise ValueError(f"Reheater: boost must not be 1 (> 1 heats, < 1 cools), got {boost!r}")
        self.hold = count("Reheater", "hold", hold, 0)
        self.release = count("Reheater", "release", release, 0)
        self.cooldown = count("Reheater", "cooldown", cooldown, 0)
        self.cap = None if cap is None else positive("Reheater", "cap", cap)
        self.fired_at: int | None = None
        self.events: list[dict[str, Any]] = []

    def multiplier(self, step: int) -> float:
        """The factor applied to the base temperature at ``step``."""
        if self.fired_at is None or step < self.fired_at:
            return 1.0
        since = step - self.fired_at
        if since < self.hold:
            return self.boost
        if since < self.hold + self.release:
            f = (since - self.hold) / self.release
            return self.boost + (1.0 - self.boost) * f
        return 1.0

    def value(self, step: int) -> float:
        tau = self.base.value(step) * self.multiplier(step)
        return tau if self.cap is None else min(tau, max(self.cap, self.base.value(step)))

    def observe(self, diversity: float, step: int | None = None) -> bool:
        """Reports the diversity at ``step`` (default: the current one);
        returns True when it starts a reheat."""
        step = self.step_count if step is None else step
        d = float(diversity)
        ready = self.fired_at is None or step - self.fired_at >= self.cooldown
        if not (d < self.threshold and ready):
            return False
        before = self.value(step)
        self.fired_at = step
        self.events.append({
            "step": step,
            "diversity": d,
            "tau_before": before,
            "tau_after": self.value(step),
            "reason": f"diversity {d:.4g} < threshold {self.threshold:.4g}",
        })
        return True

    def step(self, n: int = 1) -> float:
        self.base.step(n)
        return super().step(n)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "base": self.base.state_dict(),
            "fired_at": self.fired_at,
            "events": [dict(e) for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.base.load_state_dict(state["base"])
        self.fired_at = state["fired_at"]
        self.events = [dict(e) for e in state["events"]]


class LearnableTemperature(nn.Module):
    """A temperature learned by gradient descent: ``tau = tau_min + softplus(raw)``.

    ``forward()`` returns it as a 0-d tensor that requires grad; pass it as
    ``tau`` to :func:`gumbelrs.gumbel_softmax` or :func:`gumbelrs.relaxed_bernoulli`,
    which return its gradient. ``tau_min`` keeps it away from 0.

    ``init``: the initial temperature (above ``tau_min``); a bad value raises
    ``ValueError``.
    """

    def __init__(self, init: float = 1.0, tau_min: float = 0.05) -> None:
        super().__init__()
        init = positive("LearnableTemperature", "init", init)
        self.tau_min = positive("LearnableTemperature", "tau_min", tau_min)
        if init <= self.tau_min:
            raise ValueError(
                f"LearnableTemperature: init must exceed tau_min={self.tau_min}, got {init}"
            )
        excess = init - self.tau_min
        raw = excess + math.log(-math.expm1(-excess))  # softplus^-1(excess)
        self.raw = nn.Parameter(torch.tensor(raw, dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        return self.tau_min + nn.functional.softplus(self.raw)

    @property
    def tau(self) -> float:
        return float(self.forward().detach())
