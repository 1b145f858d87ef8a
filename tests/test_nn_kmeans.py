"""gumbelrs.nn.SoftKMeans: gradients, hard mode, k-means++, the ARI of the app
against scikit-learn's KMeans."""

import pytest
import torch

import gumbelrs
from gumbelrs import schedules
from gumbelrs.nn import SoftKMeans

from .conftest import raises


def _blobs(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return (centres[:, None] + torch.randn(3, n, 2, generator=g)).reshape(-1, 2)


def test_loss_is_the_relaxed_distortion_and_gradients_reach_inputs_and_centres():
    km = SoftKMeans(3, 2, beta=0.5, tau=0.7, generator=gumbelrs.Generator(0)).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    out = km(x)
    d2 = ((x[:, None] - km.centers[None]) ** 2).sum(-1)
    torch.testing.assert_close(out.distances, d2)
    torch.testing.assert_close(out.loss, (out.assignments * d2).sum(-1).mean())

    def loss(xx, mu):
        layer = SoftKMeans(3, 2, beta=0.5, tau=0.7, generator=gumbelrs.Generator(3)).double()
        return torch.func.functional_call(layer, {"centers": mu}, (xx,)).loss

    mu = km.centers.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (x, mu))
    loss(x, mu).backward()
    assert x.grad.abs().min() > 0 and mu.grad.abs().sum() > 0


def test_hard_mode_and_eval_give_one_hot_assignments():
    x = _blobs()
    km = SoftKMeans(3, 2, beta=1.0, method="st", generator=gumbelrs.Generator(1))
    km.init_kmeanspp(x)
    a = km(x).assignments
    assert set(a.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.sum(-1), torch.ones(len(x)))
    km.eval()
    a = km(x).assignments
    assert torch.equal(a.argmax(-1), km.predict(x))
    soft = SoftKMeans(3, 2, beta=1.0).init_kmeanspp(x).eval()  # the default, soft method
    a = soft(x).assignments
    assert set(a.unique().tolist()) == {0.0, 1.0} and torch.equal(a.argmax(-1), soft.predict(x))


def test_kmeanspp_seeds_one_centre_per_separated_blob():
    x = _blobs()
    for seed in range(5):
        km = SoftKMeans(3, 2, generator=gumbelrs.Generator(seed)).init_kmeanspp(x)
        assert all((km.centers[j] == x).all(-1).any() for j in range(3))
        assert sorted((km.predict(x).reshape(3, -1)[:, 0]).tolist()) == [0, 1, 2]
        assert torch.equal(km.predict(x).reshape(3, -1), km.predict(x).reshape(3, -1)[:, :1]
                           .expand(3, 60))


def test_learned_beta_gets_a_gradient_and_a_schedule_is_saved():
    km = SoftKMeans(2, 3, beta="learned", beta_init=2.0)
    assert float(km.beta.detach()) == pytest.approx(2.0)
    km(torch.randn(5, 3)).loss.backward()
    assert km.log_beta.grad is not None and km.log_beta.grad != 0
    km = SoftKMeans(2, 3, beta=schedules.Linear(1.0, 5.0, steps=4))
    km.step(2)
    assert km.beta == 3.0
    fresh = SoftKMeans(2, 3, beta=schedules.Linear(1.0, 5.0, steps=4))
    fresh.load_state_dict(km.state_dict())
    assert fresh.beta == 3.0


def test_bad_arguments():
    with raises(ValueError, "SoftKMeans: n_clusters must be an int >= 1, got 0"):
        SoftKMeans(0, 2)
    with raises(TypeError, "SoftKMeans: beta must be a positive finite number, a Schedule or "
                           "'learned', got str 'auto'"):
        SoftKMeans(2, 2, beta="auto")
    with raises(ValueError, "SoftKMeans: beta must be a positive finite number, a Schedule or "
                            "'learned', got -1.0"):
        SoftKMeans(2, 2, beta=-1.0)
    km = SoftKMeans(2, 3)
    with raises(ValueError, "SoftKMeans: x must have n_features=3 in its last dimension, "
                            "got shape (4, 2)"):
        km(torch.randn(4, 2))
    with raises(TypeError, "SoftKMeans: x must be a floating-point torch.Tensor, got "
                           "torch.int64"):
        km(torch.ones(4, 3, dtype=torch.int64))
    with raises(ValueError, "SoftKMeans.init_kmeanspp: needs at least n_clusters=2 points, "
                            "got 1"):
        km.init_kmeanspp(torch.randn(1, 3))


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_ari_is_within_005_of_sklearn_kmeans(name):
    pytest.importorskip("sklearn")
    from gumbelrs.apps import kmeans

    m = kmeans.compare(name, kmeans.Config(seeds=5))
    assert m["soft_ari"] > m["kmeans_ari"] - 0.05, m
