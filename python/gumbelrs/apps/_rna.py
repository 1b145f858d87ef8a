"""RNA design against an independent folding oracle: ViennaRNA's minimum free
energy (MFE, kcal/mol, its default energy model at 37 °C).

Every call of the oracle is counted, so that designers are compared at the
same number of oracle calls: a differentiable predictor of the MFE trained on
random sequences steers a generator (its training and validation sequences and
the final scoring of the designs are its calls); random sampling and simulated
annealing spend theirs directly."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

LETTERS = "ACGU"
MISSING = ("RNA design skipped: ViennaRNA is not installed (its Python module RNA comes with "
           "the PyPI package viennarna: pip install 'gumbelrs[apps]')")


def vienna() -> Any:
    """ViennaRNA's Python module ``RNA``, or None where it is not installed."""
    try:
        return importlib.import_module("RNA")
    except ImportError:
        return None


class Oracle:
    """ViennaRNA's MFE of RNA strings; ``calls`` counts the sequences folded,
    ``structures`` keeps the dot-bracket structure of each."""

    def __init__(self, rna: Any) -> None:
        self._fold = rna.fold
        self.calls = 0
        self.structures: dict[str, str] = {}

    def fold(self, seq: str) -> tuple[str, float]:
        """Dot-bracket structure and MFE of one sequence (one call)."""
        self.calls += 1
        structure, mfe = self._fold(seq)
        self.structures[seq] = structure
        return structure, float(mfe)

    def __call__(self, seqs: Sequence[str]) -> list[float]:
        return [self.fold(s)[1] for s in seqs]


def random_rna(n: int, length: int, g: torch.Generator) -> list[str]:
    """``n`` uniformly random sequences of ``length``."""
    return decode(nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4))


def encode(seqs: Sequence[str]) -> torch.Tensor:
    """``(n, length, 4)`` float32 one-hot of ACGU strings."""
    index = torch.tensor([[LETTERS.index(c) for c in s] for s in seqs])
    return nn.functional.one_hot(index, 4).float()


def decode(x: torch.Tensor) -> list[str]:
    """ACGU strings of one-hot (or relaxed) sequences, by their largest entry."""
    return ["".join(LETTERS[i] for i in row) for row in x.argmax(-1).tolist()]


class EnergyPredictor(nn.Module):
    """A dilated 1-d CNN from one-hot ``(n, length, 4)`` to the MFE in kcal/mol
    (mean and max pooled features, a linear head; trained on standardised
    energies, whose mean and scale it keeps)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, dilation in enumerate((1, 2, 4)):
            layers += [nn.Conv1d(4 if i == 0 else channels, channels, 5, padding=2 * dilation,
                                 dilation=dilation), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, 1)
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x.transpose(1, 2))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], -1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardised(x) * self.scale + self.mean


def train_predictor(x: torch.Tensor, energies: torch.Tensor, steps: int, batch: int, lr: float,
                    g: torch.Generator, model: EnergyPredictor | None = None) -> EnergyPredictor:
    """An :class:`EnergyPredictor` fitted (squared error) to ``energies`` of
    ``x``, frozen; ``model`` continues training a previous one (its
    standardisation kept)."""
    if model is None:
        model = EnergyPredictor()
        model.mean.fill_(float(energies.mean()))
        model.scale.fill_(float(energies.std()))
    model.train().requires_grad_(True)
    target = (energies - model.mean) / model.scale
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        b = torch.randint(0, len(x), (batch,), generator=g)
        loss = ((model.standardised(x[b]) - target[b]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of two equally long sequences of numbers."""
    return float(torch.corrcoef(torch.tensor([list(a), list(b)], dtype=torch.float64))[0, 1])


def mean_absolute_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference of two equally long sequences of numbers."""
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def train_designer(gen: nn.Module, opt: torch.optim.Optimizer, predictor: EnergyPredictor,
                   steps: int, batch: int, entropy_floor: float, weight: float,
                   rate: float) -> tuple[list[float], list[float], float]:
    """Trains the autoregressive generator ``gen`` (``gen(n)`` -> one-hot
    sequences and step logits) to minimise the predicted MFE of its samples (in
    units of the training energies' standard deviation) minus ``weight`` x the
    mean per-step entropy; the gradient reaches every step through the fed-back
    samples. ``weight`` is the Lagrange multiplier of the constraint "mean
    per-step entropy >= ``entropy_floor``" (nats): after each step it moves by
    ``rate`` x (floor - entropy), never below 0, so it grows while the
    generator's distributions are sharper than the floor allows, whatever the
    scale of the energies. Returns the batch means of the predicted MFE
    (kcal/mol), of the entropy, and the final weight."""
    energies, entropies = [], []
    for _ in range(steps):
        seqs, logits = gen(batch)
        energy = predictor.standardised(seqs).mean()
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
        opt.zero_grad()
        (energy - weight * entropy).backward()
        opt.step()
        h = float(entropy.detach())
        weight = max(0.0, weight + rate * (entropy_floor - h))
        energies.append(float(energy.detach() * predictor.scale + predictor.mean))
        entropies.append(h)
    return energies, entropies, weight


def anneal(oracle: Oracle, length: int, evaluations: int, chains: int, t_start: float,
           t_end: float, g: torch.Generator) -> list[tuple[str, float]]:
    """Simulated annealing of the MFE with ``evaluations`` oracle calls in all,
    over ``chains`` chains run side by side: each starts from a random sequence
    and proposes single-letter changes, accepted by the Metropolis rule at a
    temperature falling geometrically from ``t_start`` to ``t_end`` (kcal/mol).
    Returns every evaluated sequence with its MFE."""
    chains = min(chains, evaluations)
    states = random_rna(chains, length, g)
    energies = oracle(states)
    seen = list(zip(states, energies))
    rounds = math.ceil((evaluations - chains) / chains)
    for r in range(rounds):
        t = t_start * (t_end / t_start) ** (r / max(1, rounds - 1))
        active = range(min(chains, evaluations - len(seen)))
        where = torch.randint(0, length, (len(active),), generator=g).tolist()
        shift = torch.randint(1, 4, (len(active),), generator=g).tolist()
        accept = torch.rand(len(active), generator=g, dtype=torch.float64).tolist()
        for c in active:
            s = states[c]
            letter = LETTERS[(LETTERS.index(s[where[c]]) + shift[c]) % 4]
            proposal = s[:where[c]] + letter + s[where[c] + 1:]
            e = oracle.fold(proposal)[1]
            seen.append((proposal, e))
            if e <= energies[c] or accept[c] < math.exp(-(e - energies[c]) / t):
                states[c], energies[c] = proposal, e
    return seen


def lowest(scored: Sequence[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` distinct sequences of lowest MFE among ``scored``."""
    best: dict[str, float] = {}
    for s, e in scored:
        best[s] = e
    return sorted(best.items(), key=lambda p: p[1])[:n]
