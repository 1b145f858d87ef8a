"""apps.sorting: numbers are composed, split and cut as documented; the tiny run
learns well above chance, writes its figures and resumes from its checkpoint;
bad configurations are refused."""

import pytest
import torch

import gumbelrs.structured
from gumbelrs.apps import _data, sorting

from .conftest import raises


def test_composed_numbers_show_their_digits_left_to_right():
    # A pool whose images of digit d are constant d / 10 (two images each, told apart by a mark).
    labels = torch.arange(10).repeat(2)
    images = (labels / 10.0)[:, None, None].expand(20, 28, 28).clone()
    images[10:, 0, 0] = -1.0
    pool = sorting.Composer(images, labels)
    g = torch.Generator().manual_seed(0)
    values = torch.tensor([[7, 4096, 9999], [1234, 500, 80]])
    x = pool.numbers(values, g)
    assert x.shape == (2, 3, 28, 112)
    for (b, i), v in zip([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)], values.flatten()):
        digits = [int(c) for c in f"{int(v):04d}"]
        for slot, d in enumerate(digits):
            block = x[b, i, :, 28 * slot:28 * (slot + 1)]
            assert torch.equal(block[1:], torch.full((27, 28), d / 10.0))
    # Both images of each digit are drawn.
    marks = pool.digits(torch.zeros(200, dtype=torch.int64), g)[:, 0, 0]
    assert set(marks.tolist()) == {0.0, -1.0}


def test_digit_split_holds_out_a_fifth_of_each_digit():
    (xtr, ytr), (xte, yte) = _data.split_digits(*_data.mnist_subset("test"), 0.2, seed=3)
    assert torch.equal(torch.bincount(yte, minlength=10), torch.full((10,), 100))
    assert torch.equal(torch.bincount(ytr, minlength=10), torch.full((10,), 400))
    train = {bytes(row.numpy()) for row in xtr.flatten(1)}
    assert not any(bytes(row.numpy()) in train for row in xte.flatten(1))
    assert len(set(yte[:20].tolist())) > 1  # shuffled, not grouped by digit


def test_sequences_hold_distinct_values():
    v = sorting.distinct_values(5000, 7, torch.Generator().manual_seed(1))
    assert v.min() >= 0 and v.max() < 10**4
    assert (v.sort(-1).values.diff(dim=-1) > 0).all()


@pytest.mark.parametrize("k", [2, 3])
def test_pieces_reassemble_and_scrambling_records_positions(k):
    images = torch.rand(5, 28, 28)
    pieces = sorting.cut(images, k)
    p = 28 // k
    o = (28 - k * p) // 2
    assert pieces.shape == (5, k * k, p, p)
    assert torch.equal(pieces[:, k + 1], images[:, o + p:o + 2 * p, o + p:o + 2 * p])
    assert torch.equal(sorting.assemble(pieces, k), images[:, o:o + k * p, o:o + k * p])
    scrambled, where = sorting.scramble(pieces, torch.Generator().manual_seed(0))
    for b in range(5):
        for i in range(k * k):
            assert torch.equal(scrambled[b, i], pieces[b, where[b, i]])


def test_matching_of_rank_logits_sorts_in_decreasing_order():
    scores = torch.randn(200, 6, generator=torch.Generator().manual_seed(2))
    got = gumbelrs.structured.matching(sorting.rank_logits(scores))
    assert torch.equal(got, scores.argsort(-1, descending=True))


def test_tiny_run_beats_chance_writes_figures_and_resumes(tmp_path, monkeypatch):
    config = sorting.Config.tiny()
    ckpt = tmp_path / "checkpoint.pt"
    result = sorting.run(config, out=tmp_path, show=False, checkpoint=ckpt)
    m = result.metrics
    # Chance: Kendall tau 0, 1/6 of the triples in order (1/3 of their elements), 1/4 of the
    # pieces. When written (the ops' plain-torch stand-ins): tau 1.0; 0.38 and 0.41 of the
    # triples (100 test triples: 0.25 is 2.2 standard errors above chance); 0.97 of the pieces.
    assert m["numbers"]["5"]["kendall_tau"] > 0.9
    for method in config.methods:
        assert m["mnist"][f"3/{method}"]["prop_all_correct"] > 0.25, method
        assert m["mnist"][f"3/{method}"]["prop_correct"] > 0.45, method
    assert m["jigsaw"]["2x2"]["prop_correct"] > 0.75
    assert sorted(p.name for p in result.figures.values()) == [
        "sorting_jigsaw.png", "sorting_mnist.png", "sorting_numbers.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures.values())
    rows = list(result.tables.values())[1].rows
    assert [r[1] for r in rows] == ["Gumbel-Sinkhorn", "NeuralSort (deterministic)"]
    assert rows[1][4] == "0.930 (0.951)"  # the published number beside deterministic NeuralSort

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    for name in ("sort_numbers", "sort_mnist", "jigsaw"):
        monkeypatch.setattr(sorting, name, no_training)
    again = sorting.run(config, out=None, show=False, checkpoint=ckpt)
    assert again.metrics["mnist"] == m["mnist"]


def test_bad_configuration_is_refused():
    with raises(ValueError, "sorting: lengths must be a non-empty tuple of ints >= 2 (one item "
                            "has one order), got (5, 1)"):
        sorting.Config(lengths=(5, 1))
    with raises(ValueError, "sorting: sizes must be a non-empty tuple of ints >= 1, got ()"):
        sorting.Config(sizes=())
    with raises(ValueError, "sorting: grids must be a non-empty tuple of ints in [2, 14] (pieces "
                            "of at least 2 x 2 pixels), got (2, 15)"):
        sorting.Config(grids=(2, 15))
    with raises(ValueError, "sorting: methods must be some of ('gumbel_sinkhorn', 'neuralsort', "
                            "'stochastic_neuralsort', 'softsort'), got ('bogosort',)"):
        sorting.Config(methods=("bogosort",))
    with raises(ValueError, "sorting: test_fraction must be a number in (0, 1), got 1.0"):
        sorting.Config(test_fraction=1.0)
    with raises(ValueError, "sorting: sort_tau must be a positive finite number, got 0.0"):
        sorting.Config(sort_tau=0.0)
