"""apps.dna's promoter boxes and RNA design: the box metric and the soft motif
term on known inputs, the differentiable 3-mer frequencies, ViennaRNA on a
known hairpin, the oracle-call accounting of the designers and the entropy
floor that keeps the RNA generator from collapsing."""

import pytest
import torch

import gumbelrs
from gumbelrs.apps import _motifs, _rna, dna

from .conftest import raises

BACKGROUND = "gc" * 30  # holds at most 2 letters of either box in any window


def _planted(spacing, mismatches35=0, mismatches10=0, start=5):
    box35 = "".join("g" if i < mismatches35 else c for i, c in enumerate("ttgaca"))
    box10 = "".join("g" if i < mismatches10 else c for i, c in enumerate("tataat"))
    s = list(BACKGROUND[:57])
    s[start:start + 6] = box35
    at = start + 6 + spacing
    s[at:at + 6] = box10
    return "".join(s)


def test_box_metric_counts_spacings_15_to_19_and_at_most_one_mismatch():
    for spacing in range(13, 22):
        for m35 in range(3):
            for m10 in range(3):
                seq = _planted(spacing, m35, m10)
                expected = 15 <= spacing <= 19 and m35 <= 1 and m10 <= 1
                assert dna.box_rate([seq]) == float(expected), (spacing, m35, m10)
    assert dna.box_rate([BACKGROUND[:57]]) == 0.0
    # the -35 box at position 0 and the -10 box ending on the last position both count
    assert dna.box_rate([_planted(15, start=0), _planted(19, start=57 - 31)]) == 1.0
    # 2 mismatches count with mismatches=2
    assert bool(_motifs.has_boxes(dna.one_hot([_planted(17, 2, 2)]), mismatches=2)[0])


def test_soft_motif_score_follows_the_box_metric():
    seqs = [_planted(17), _planted(17, 1, 1), _planted(17, 2, 0), _planted(14), BACKGROUND[:57]]
    score = _motifs.motif_score(dna.one_hot(seqs))
    assert score[0] > 0.99 and score[1] > 0.75
    assert score[2] < 0.15 and score[3] < 0.15 and score[4] < 0.01
    # the real promoters' boxes (one mismatch each): 12 of 53
    labels, seqs = dna.load("promoters")
    real = [s for s, lab in zip(seqs, labels) if lab == "+"]
    assert dna.box_rate(real) == pytest.approx(12 / 53)


def test_motif_term_gradient_reaches_the_first_position():
    x = dna.one_hot([_planted(15, start=0)]).requires_grad_(True)
    _motifs.motif_score(x, sharpness=1.0).sum().backward()
    assert x.grad[0, 0].abs().sum() > 0  # the -35 box's first letter
    assert x.grad[0, 40:].abs().sum() == 0  # past the -10 box
    gen = dna.Generator(length=40, hidden=16, tau=1.0, hard=True, generator=gumbelrs.Generator(0))
    steps = []
    gen.out.register_forward_hook(lambda module, inputs, output: steps.append(output))
    seqs, _ = gen(16)
    steps[0].retain_grad()
    _motifs.motif_score(seqs, sharpness=1.0).sum().backward()
    assert steps[0].grad.abs().sum() > 0


def test_soft_trimer_frequencies_equal_the_counted_ones():
    _, seqs = dna.load("promoters")
    soft = _motifs.soft_trimer_frequencies(dna.one_hot(seqs))
    assert torch.allclose(soft, dna.kmer_frequencies(seqs), atol=1e-6)


def test_vienna_folds_a_known_hairpin():
    rna = pytest.importorskip("RNA")
    oracle = _rna.Oracle(rna)
    structure, mfe = oracle.fold("GGGGAAAACCCC")
    assert structure == "((((....))))" and mfe == pytest.approx(-5.4, abs=1e-4)
    assert oracle(["GGGGAAAACCCC", "AAAAAAAAAAAA"]) == [pytest.approx(-5.4, abs=1e-4), 0.0]
    assert oracle.calls == 3


class _PolyG(torch.nn.Module):
    """A predicted energy lowest for poly-G (the mean G fraction, negated): the
    generator's objective alone collapses it onto one sequence."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def standardised(self, x):
        return -4.0 * x[..., _rna.LETTERS.index("G")].mean(-1)


def _design(floor, weight, rate, steps=120):
    torch.manual_seed(0)
    gen = dna.Generator(length=10, hidden=16, tau=1.0, hard=True, generator=gumbelrs.Generator(3))
    opt = torch.optim.Adam(gen.parameters(), lr=0.01)
    energies, entropies, weight = _rna.train_designer(gen, opt, _PolyG(), steps, 32, floor,
                                                      weight, rate)
    with torch.no_grad():
        seqs = _rna.decode(gen(200)[0])
    return energies, entropies, weight, dna.diversity([s.lower().replace("u", "t")
                                                       for s in seqs])


def test_entropy_floor_keeps_the_designer_from_collapsing():
    energies, entropies, weight, free = _design(floor=0.0, weight=0.0, rate=0.0)
    assert weight == 0.0 and entropies[-1] < 0.05 and free["distinct"] < 0.1
    assert sum(energies[-10:]) / 10 < -3.9  # poly-G: -4
    energies, entropies, weight, floored = _design(floor=0.8, weight=0.0, rate=1.0)
    # the multiplier rose until the entropy held at the floor
    assert weight > 1.0 and 0.7 < sum(entropies[-20:]) / 20 < 0.9
    assert floored["distinct"] > 0.9 and floored["hamming"] > 0.5
    # and the energy is traded, not given up: uniform sequences predict -1
    assert sum(energies[-10:]) / 10 < -1.5


def test_entropy_multiplier_moves_by_the_rate_times_the_gap_to_the_floor():
    _, entropies, weight, _ = _design(floor=0.9, weight=2.0, rate=0.5, steps=1)
    assert weight == pytest.approx(2.0 + 0.5 * (0.9 - entropies[0]))
    _, entropies, weight, _ = _design(floor=0.0, weight=0.1, rate=10.0, steps=1)
    assert weight == 0.0  # never below 0


def test_designers_spend_the_same_oracle_calls():
    pytest.importorskip("RNA")
    config = dna.Config.tiny()
    result = dna._rna_part(config, show=False)
    budget = config.rna_train + config.rna_rounds * config.rna_round_designs + config.rna_designs
    assert result["budget"] == budget
    assert result["oracle_calls"] == {"generator": budget, "generator, best of the calls": budget,
                                      "random, best of the calls": budget,
                                      "annealing, best of the calls": budget,
                                      "random, no selection": config.rna_designs}
    assert all(len(e) == config.rna_designs for e in result["energies"].values())
    for seq, structure, energy in result["best"].values():
        assert len(seq) == len(structure) == config.rna_length and energy <= 0


def test_annealing_evaluates_exactly_its_budget_and_improves():
    rna = pytest.importorskip("RNA")
    oracle = _rna.Oracle(rna)
    seen = _rna.anneal(oracle, 30, 203, 4, 3.0, 0.1, torch.Generator().manual_seed(0))
    assert oracle.calls == len(seen) == 203
    assert min(e for _, e in seen[-40:]) < min(e for _, e in seen[:4])


def test_rna_part_without_vienna_is_skipped_with_a_message(monkeypatch):
    monkeypatch.setattr(_rna, "vienna", lambda: None)
    result = dna._rna_part(dna.Config.tiny(), show=False)
    assert result == {"skipped": "RNA design skipped: ViennaRNA is not installed (its Python "
                                 "module RNA comes with the PyPI package viennarna: pip install "
                                 "'gumbelrs[apps]')"}


def test_rna_train_must_leave_two_held_out_sequences():
    with raises(ValueError, "dna: rna_train must be an int >= 20 (a tenth, at least 2, is held "
                            "out to score the predictor), got 19"):
        dna.Config(rna_train=19)
    with raises(TypeError, "dna: rna_train must be an int >= 1, got float 20.0"):
        dna.Config(rna_train=20.0)
