"""apps.paths: maps are composed from the documented pool with the documented
costs, the path metrics score known paths right, the tiny run learns (beats the
path of equal costs), writes its figure and resumes from its checkpoint; bad
configurations are refused."""

import pytest
import torch

from gumbelrs import structured
from gumbelrs.apps import _data, paths

from .conftest import raises


def test_maps_tile_pool_images_and_cost_one_plus_the_digit():
    # A pool whose image i is constant i (so each tile names its image), label i % 10.
    images = torch.arange(30, dtype=torch.float32)[:, None, None].expand(30, 28, 28).clone()
    labels = torch.arange(30) % 10
    maps, cells = paths.compose(images, labels, 50, 4, torch.Generator().manual_seed(0))
    assert maps.shape == (50, 112, 112) and cells.shape == (50, 4, 4)
    tiles = maps.view(50, 4, 28, 4, 28).transpose(2, 3)  # (map, row, column, 28, 28)
    which = tiles[..., 0, 0].long()
    assert torch.equal(tiles, which[..., None, None].float().expand_as(tiles))
    assert torch.equal(cells, labels[which])
    assert set(which.flatten().tolist()) == set(range(30))  # every image is drawn
    assert torch.equal(paths.costs_of(cells), 1.0 + cells.float())


def test_held_out_maps_use_only_held_out_images():
    train, test = _data.split_digits(*_data.mnist_subset("test"), 0.2, seed=1)
    maps, cells = paths.compose(*test, 20, 6, torch.Generator().manual_seed(1))
    tiles = maps.view(20, 6, 28, 6, 28).transpose(2, 3).reshape(-1, 28 * 28)
    held_out = {bytes(row.numpy()): int(d) for row, d in zip(test[0].flatten(1), test[1])}
    seen = {bytes(row.numpy()) for row in train[0].flatten(1)}
    for tile, d in zip(tiles, cells.flatten()):
        key = bytes(tile.numpy())
        assert key not in seen
        assert held_out[key] == int(d)


def test_metrics_of_the_true_a_worse_and_a_tied_path():
    costs = torch.tensor([[1.0, 5.0, 9.0],
                          [5.0, 1.0, 9.0],
                          [9.0, 5.0, 1.0]])
    truth = structured.shortest_path_grid(costs)  # the diagonal, cost 3
    assert torch.equal(truth, torch.eye(3))
    worse = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # 1 + 5 + 9 + 1
    m = paths.path_metrics(torch.stack([truth, worse]), truth.expand(2, 3, 3),
                           costs.expand(2, 3, 3))
    assert torch.allclose(m["regret"], torch.tensor([0.0, 16 / 3 - 1], dtype=torch.float64))
    assert m["perfect"].tolist() == [1.0, 0.0]
    assert m["exact"].tolist() == [1.0, 0.0]
    # Two paths of cost 4: the one the solver does not return is perfect but not exact.
    costs = torch.tensor([[1.0, 2.0, 9.0], [9.0, 2.0, 1.0]])
    upper = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    lower = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    truth = structured.shortest_path_grid(costs)
    other = lower if torch.equal(truth, upper) else upper
    assert torch.equal(truth + other, upper + lower)
    m = paths.path_metrics(other, truth, costs)
    assert (float(m["regret"]), float(m["perfect"]), float(m["exact"])) == (0.0, 1.0, 0.0)


def test_solver_clamps_negative_costs_and_hamming_counts_differences():
    theta = torch.tensor([[[-1.0, 2.0], [3.0, -4.0]]])  # costs 1, -2, -3, 4
    assert torch.equal(paths.solver(theta),
                       structured.shortest_path_grid(torch.tensor([[[1.0, 0.0], [0.0, 4.0]]])))
    assert torch.equal(theta, torch.tensor([[[-1.0, 2.0], [3.0, -4.0]]]))  # not modified
    a = torch.eye(4)
    b = torch.ones(4, 4).triu()
    assert float(paths.hamming(a, b)) == 6.0


@pytest.mark.parametrize("k", [2, 5])
def test_cost_net_gives_a_non_negative_grid_per_map(k):
    torch.manual_seed(0)
    out = paths.CostNet(k, 4, 8)(torch.rand(3, 28 * k, 28 * k))
    assert out.shape == (3, k, k)
    assert (out >= 0).all()


def test_tiny_run_beats_equal_costs_writes_its_figure_and_resumes(tmp_path, monkeypatch):
    config = paths.Config.tiny()
    ckpt = tmp_path / "checkpoint.pt"
    result = paths.run(config, out=tmp_path, show=False, checkpoint=ckpt)
    m = result.metrics["6"]
    # Seed 0, 50 held-out maps. The path of equal costs (the diagonal) has regret 0.213, and so
    # has an untrained CostNet (its costs are nearly equal). When written, the trained models'
    # regrets were 0.065 / 0.052 (perturbed, 2 / 1 threads), 0.085 / 0.082 (blackbox), 0.069
    # (two-stage), and at most 0.085 for seeds 1 and 2: each must be below 0.6 of the floor.
    floor = m["uniform"]["regret"]
    assert floor > 0.2
    for method in config.methods:
        assert m[method]["regret"] < 0.6 * floor, method
    assert [p.name for p in result.figures.values()] == ["paths_maps.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures.values())
    rows = next(iter(result.tables.values())).rows
    assert [r[1] for r in rows] == ["no model (equal costs)", "perturbed + Fenchel-Young",
                                    "blackbox (Hamming)", "two-stage (cost labels, MSE)"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(paths, "train", no_training)
    monkeypatch.setattr(paths, "uniform_baseline", no_training)
    again = paths.run(config, out=None, show=False, checkpoint=ckpt)
    assert again.metrics["6"] == m


def test_bad_configuration_is_refused():
    with raises(ValueError, "paths: sizes must be a non-empty tuple of ints >= 2 (a 1 x 1 map "
                            "has one path), got (6, 1)"):
        paths.Config(sizes=(6, 1))
    with raises(ValueError, "paths: sizes must be a non-empty tuple of ints >= 1, got ()"):
        paths.Config(sizes=())
    with raises(ValueError, "paths: methods must be some of ('perturbed', 'blackbox', "
                            "'two_stage'), got ('dijkstra',)"):
        paths.Config(methods=("dijkstra",))
    with raises(ValueError, "paths: noise must be one of ('gumbel', 'normal'), got 'uniform'"):
        paths.Config(noise="uniform")
    with raises(ValueError, "paths: lam must be a positive finite number, got 0.0"):
        paths.Config(lam=0.0)
    with raises(ValueError, "paths: test_fraction must be a number in (0, 1), got 0.0"):
        paths.Config(test_fraction=0.0)
    with raises(ValueError, "paths: samples must be an int >= 1, got 0"):
        paths.Config(samples=0)
