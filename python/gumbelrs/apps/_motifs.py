"""E. coli promoter boxes and k-mer statistics of one-hot DNA ``(n, length, 4)``
(columns a, c, g, t): exact metrics of strings, and the same quantities as
differentiable functions of (straight-through) one-hot samples for a
generator's score."""

from __future__ import annotations

import torch
from torch import nn

_ACGT = "acgt"
BOX35 = "ttgaca"  # the -35 consensus
BOX10 = "tataat"  # the -10 (Pribnow) consensus
SPACINGS = range(15, 20)  # nucleotides between the end of the -35 box and the start of the -10 box
SHARPNESS = 8.0  # of the soft box score: one mismatch scores 0.98, two 0.02


def box_matches(x: torch.Tensor, box: str) -> torch.Tensor:
    """``(n, length - len(box) + 1)``: how many letters of ``box`` the window
    starting at each position matches (a sum of one-hot entries, so
    differentiable in ``x``)."""
    span = x.shape[1] - len(box) + 1
    return sum(x[:, k:k + span, _ACGT.index(c)] for k, c in enumerate(box))


def box_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matches of the -35 box at each start ``i`` ``(n, starts, 1)`` and of the
    -10 box at ``i + 6 + d`` for each spacing ``d`` in :data:`SPACINGS`
    ``(n, starts, len(SPACINGS))``; a -10 window past the end matches 0."""
    m35 = box_matches(x, BOX35)
    m10 = nn.functional.pad(box_matches(x, BOX10), (0, len(BOX35) + max(SPACINGS)))
    starts = m35.shape[1]
    at = [len(BOX35) + d for d in SPACINGS]
    return m35[..., None], torch.stack([m10[:, a:a + starts] for a in at], -1)


def has_boxes(x: torch.Tensor, mismatches: int = 1) -> torch.Tensor:
    """``(n,)`` bool: the sequence holds a -35 box and a -10 box, each with at
    most ``mismatches`` mismatches, ``15..19`` nt apart."""
    m35, m10 = box_pairs(x)
    return ((m35 >= len(BOX35) - mismatches) & (m10 >= len(BOX10) - mismatches)).flatten(1).any(1)


def motif_score(x: torch.Tensor, sharpness: float = SHARPNESS) -> torch.Tensor:
    """``(n,)`` differentiable soft version of :func:`has_boxes` (one mismatch):
    the largest, over starts and spacings, of
    ``sigmoid(s (m35 - 4.5)) * sigmoid(s (m10 - 4.5))`` with ``m`` the match
    counts; near 1 when both boxes are there with at most one mismatch."""
    m35, m10 = box_pairs(x)
    half = len(BOX35) - 1.5
    pair = torch.sigmoid(sharpness * (m35 - half)) * torch.sigmoid(sharpness * (m10 - half))
    return pair.flatten(1).amax(1)


def soft_trimer_frequencies(x: torch.Tensor) -> torch.Tensor:
    """The 64 3-mer frequencies (order aaa, aac, ..., ttt) of a batch of one-hot
    (or relaxed) sequences, differentiable; equal to the counted frequencies for
    exact one-hots."""
    counts = torch.einsum("nia,nib,nic->abc", x[:, :-2], x[:, 1:-1], x[:, 2:]).flatten()
    return counts / counts.sum()
