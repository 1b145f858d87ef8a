"""A Gumbel-Softmax choice among candidate modules (differentiable architecture
search: SNAS in soft mode, GDAS in hard mode)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .. import functional
from .._generator import Generator
from ..schedules import Schedule
from ._checks import Scheduled, one_hot, tau_or_schedule

MODES = ("soft", "hard")


class MixedOp(Scheduled):
    """A choice among ``candidates`` (modules that map the same input to outputs
    of the same shape) with its own architecture logits ``alpha``.

    In training, the choice is a Gumbel-Softmax sample ``w`` of ``alpha`` at
    temperature ``tau``:

    - ``mode="soft"`` (SNAS, Xie et al. 2019): the output is
      ``sum_i w_i * candidate_i(x)``, every candidate computed;
    - ``mode="hard"`` (GDAS, Dong and Yang 2019): ``w`` is an exact one-hot
      and only the sampled candidate runs; the output is ``w_i *
      candidate_i(x)``, whose value is ``candidate_i(x)`` and whose gradient
      reaches all of ``alpha`` (straight-through).

    In eval mode only the most probable candidate runs. The weights of the last
    forward pass are kept in ``last_weights``. :meth:`dilated_convs` builds the
    default search space: convolutions with dilation rates 1 to 5 (its
    ``dilations`` attribute gives the rate of each candidate, ``None`` for
    candidates given directly).

    ``generator``: the :class:`~gumbelrs.Generator` of its noise (``None``: torch's
    default generator).
    """

    def __init__(self, candidates: Sequence[nn.Module], mode: str = "soft",
                 tau: float | Schedule = 1.0, generator: Generator | None = None) -> None:
        super().__init__()
        if len(candidates) < 1 or not all(isinstance(c, nn.Module) for c in candidates):
            raise ValueError(f"MixedOp: candidates must be a non-empty sequence of nn.Module, "
                             f"got {candidates!r}")
        if mode not in MODES:
            raise ValueError(f"MixedOp: mode must be one of {MODES}, got {mode!r}")
        self.candidates = nn.ModuleList(candidates)
        self.mode = mode
        self.tau = tau_or_schedule("MixedOp", tau)
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))
        self.generator = generator
        self.last_weights: torch.Tensor | None = None
        self.dilations: tuple[int, ...] | None = None  # set by dilated_convs

    @classmethod
    def dilated_convs(cls, in_channels: int, out_channels: int, kernel_size: int = 3,
                      dilations: Sequence[int] = (1, 2, 3, 4, 5), dims: int = 1,
                      **kwargs) -> MixedOp:
        """A choice among ``dims``-D convolutions (1 or 2) that differ in their
        dilation rate, padded so that the output has the input's size (odd
        ``kernel_size``). ``kwargs`` go to :class:`MixedOp`."""
        if dims not in (1, 2):
            raise ValueError(f"MixedOp.dilated_convs: dims must be 1 or 2, got {dims!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"MixedOp.dilated_convs: kernel_size must be odd (same-size "
                             f"padding), got {kernel_size!r}")
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        ops = [conv(in_channels, out_channels, kernel_size, dilation=d,
                    padding=d * (kernel_size - 1) // 2) for d in dilations]
        op = cls(ops, **kwargs)
        op.dilations = tuple(dilations)
        return op

    def probs(self) -> torch.Tensor:
        """``softmax(alpha)``: the distribution over the candidates."""
        return torch.softmax(self.alpha, -1)

    def entropy(self) -> torch.Tensor:
        """The entropy (nats) of :meth:`probs`."""
        return -(self.probs() * torch.log_softmax(self.alpha, -1)).sum()

    def chosen(self) -> int:
        """The index of the most probable candidate."""
        return int(self.alpha.argmax())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            i = self.chosen()
            self.last_weights = one_hot(torch.tensor([i]), self.alpha, 0)
            return self.candidates[i](x)
        w = functional.gumbel_softmax(self.alpha, self.temperature(), hard=self.mode == "hard",
                                      generator=self.generator)
        self.last_weights = w.detach()
        if self.mode == "hard":
            i = int(w.detach().argmax())
            return w[i] * self.candidates[i](x)
        return sum(w[i] * op(x) for i, op in enumerate(self.candidates))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, tau={self.tau!r}"


def architecture_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The architecture logits of every :class:`MixedOp` in ``model``."""
    for m in model.modules():
        if isinstance(m, MixedOp):
            yield m.alpha


def weight_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter of ``model`` that is not an architecture logit."""
    arch = {id(p) for p in architecture_parameters(model)}
    return (p for p in model.parameters() if id(p) not in arch)
