"""apps.textgan: the discriminator sees soft samples that sharpen with beta to the
one-hot of the sampled token, the next input is that token, soft input collapses
the generator where sharp input does not, the reheater fires on a diversity drop
and restores diversity by raising beta, the curve metrics are right on known
inputs, losses stay finite at extreme temperatures, and a resumed run equals an
uninterrupted one."""

import math

import pytest
import torch

import gumbelrs
from gumbelrs import schedules
from gumbelrs.apps import _common, textgan

from .conftest import raises


def _generator(seed=0):
    torch.manual_seed(seed)
    return textgan.TextGenerator(len(textgan.ALPHABET), 16, 32)


def test_soft_samples_sharpen_with_beta_to_the_one_hot_of_the_sampled_token():
    gen = _generator()
    seen, entropies = {}, []
    for beta in (1.0, 10.0, 100.0, 1000.0):
        with torch.no_grad():  # the same seed: the same Gumbel noise at every beta
            y, tokens = gen(50, 12, 1 / beta, False, gumbelrs.Generator(3))
        seen[beta] = (y, tokens)
        entropies.append(textgan.soft_entropy(y))
        assert torch.allclose(y.sum(-1), torch.ones(50, 12), atol=1e-5)
    # The tokens (argmax(o + g)) and so the whole sequence do not depend on beta.
    assert all(torch.equal(t, seen[1.0][1]) for _, t in seen.values())
    # Entropy of what the discriminator sees (nats; log 32 = 3.47 is uniform): strictly
    # falling with beta, 2.3 / 0.15 / 0.011 / 0.0005 when this was written.
    assert all(a > b for a, b in zip(entropies, entropies[1:])), entropies
    assert entropies[0] > 1.5 and entropies[-1] < 0.05, entropies
    y, tokens = seen[1000.0]
    one_hot = torch.nn.functional.one_hot(tokens, len(textgan.ALPHABET)).float()
    assert (y - one_hot).abs().mean() < 1e-3
    # The hard (straight-through) sample is that one-hot exactly, at any beta.
    with torch.no_grad():
        hard, hard_tokens = gen(50, 12, 1.0, True, gumbelrs.Generator(3))
    assert torch.equal(hard_tokens, tokens) and torch.equal(hard, one_hot)


@pytest.mark.parametrize("hard", [False, True])
def test_the_next_input_is_the_one_hot_of_the_sampled_token(hard):
    gen = _generator()
    inputs = []
    gen.embed.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    y, tokens = gen(8, 6, 0.5, hard, gumbelrs.Generator(1))
    assert len(inputs) == 6 and torch.equal(inputs[0], torch.zeros(8, len(textgan.ALPHABET)))
    for t in range(1, 6):
        one_hot = torch.nn.functional.one_hot(tokens[:, t - 1], len(textgan.ALPHABET)).float()
        assert torch.equal(inputs[t], one_hot)
        # Soft: the token is fed back without a gradient (RelGAN); hard: the straight-through
        # sample itself, gradient included.
        assert inputs[t].requires_grad == hard
    assert y.requires_grad


@pytest.fixture(scope="module")
def pretrained():
    """A generator after 100 MLE steps (distinct-4 0.915 at T = 1 when this was written), and
    the configuration of the GAN runs from it: monitored every 10 steps, reheats held 20."""
    config = textgan.Config(pretrain_steps=100, samples=100, monitor_every=10, reheat_hold=20)
    gan = textgan.TextGAN(config, variant="mle")
    gan.train("pretrain", config.pretrain_steps, show=False)
    return config, gan.gen.state_dict()


def test_soft_discriminator_input_collapses_the_generator_and_a_sharp_one_does_not(pretrained):
    # Why the reheater raises beta: with soft samples (beta 1) the discriminator tells them
    # from one-hot real text by their softness, and the generator answers by sharpening its
    # own distribution; at beta 100 they are nearly one-hot and diversity stays.
    config, weights = pretrained
    final = {}
    for beta in (1.0, 100.0):
        gan = textgan.TextGAN(config)
        gan.start_adversarial(weights)
        gan.tau = schedules.Constant(1 / beta)
        for _ in range(40):
            gan.gan_step()
        final[beta] = textgan.distinct(gan.sample(100))
    # distinct-4 after 40 GAN steps: 0.27 at beta 1, 0.92 at beta 100 when this was written.
    assert final[1.0] < 0.45 and final[100.0] > 0.75, final


def test_reheater_fires_on_a_diversity_drop_and_restores_diversity(pretrained):
    config, weights = pretrained
    logs, events = {}, {}
    for variant in ("soft", "soft_reheat"):
        gan = textgan.TextGAN(config, variant=variant)
        gan.start_adversarial(weights)
        gan.train("gan", 40, show=False)
        logs[variant], events[variant] = gan.log, getattr(gan.tau, "events", None)
    soft, reheat = logs["soft"], logs["soft_reheat"]
    assert events["soft"] is None and len(events["soft_reheat"]) == 1  # then the cooldown
    # Same seed, batches and noise: the two runs are the same until the reheat. It fires at
    # the first monitor whose distinct-4 is below the threshold (0.50 at step 30 when this
    # was written), logged with its reason, and multiplies beta by 10 (1.41 -> 14.1).
    i = next(k for k, m in enumerate(reheat) if "reheat" in m)
    assert reheat[i]["distinct4"] < config.reheat_threshold
    assert all(m["distinct4"] >= config.reheat_threshold for m in reheat[:i])
    assert [m["distinct4"] for m in soft[:i + 1]] == [m["distinct4"] for m in reheat[:i + 1]]
    assert f"diversity {reheat[i]['distinct4']:.4g} < threshold 0.55; beta " in reheat[i]["reheat"]
    after, plain = reheat[i + 1], soft[i + 1]
    assert after["beta"] == pytest.approx(10 * plain["beta"])
    # Ten steps later: the discriminator's input is sharper (entropy 0.09 against 1.01 nats)
    # and diversity is back (distinct-4 0.92 against 0.73 without the reheat).
    assert after["seen_entropy"] < plain["seen_entropy"] / 4, (after, plain)
    assert after["distinct4"] > plain["distinct4"] + 0.1, (after, plain)
    assert after["distinct4"] > reheat[i]["distinct4"] + 0.2, (after, reheat[i])


def test_curve_metrics_on_known_inputs():
    assert textgan.distinct(["abcab"], 2) == 3 / 4  # ab, bc, ca, ab
    assert textgan.distinct(["aaaaa", "aaaaa"], 4) == 1 / 4
    assert textgan.precision4(["abcde", "xbcd"], {"abcd", "bcde"}) == 2 / 3
    assert textgan.soft_entropy(torch.eye(4)) == 0.0
    assert math.isclose(textgan.soft_entropy(torch.full((3, 8), 1 / 8)), math.log(8))
    # mean 2, sd 1, t(0.975, 2 df) = 4.302653
    mean, half = textgan.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and math.isclose(half, 4.302653 / math.sqrt(3), rel_tol=1e-6)
    assert textgan.t_interval([0.5]) == (0.5, None)
    curve = [(0.6, 0.5), (0.2, 0.9), (0.4, 0.7)]
    assert math.isclose(textgan.at_diversity(curve, 0.5), 0.6)
    assert textgan.at_diversity(curve, 0.7) is None


@pytest.mark.parametrize("tau", [1e-4, 1e3])
@pytest.mark.parametrize("variant", ["soft", "hard"])
def test_losses_stay_finite_at_extreme_temperatures(tau, variant):
    config = textgan.Config(pretrain_steps=0, gan_steps=3, batch=16)
    gan = textgan.TextGAN(config, variant=variant)
    gan.tau = schedules.Constant(tau)
    for _ in range(3):
        d_loss, g_loss, seen = gan.gan_step()
        assert math.isfinite(d_loss) and math.isfinite(g_loss) and torch.isfinite(seen).all()
    grads = [p.grad for p in gan.gen.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    config = textgan.Config(pretrain_steps=4, gan_steps=6, monitor_every=3, samples=10, batch=8,
                            seeds=2, temperatures=(0.7, 1.3), variants=("soft", "hard_reheat"))
    straight = textgan.run(config, out=None, show=False)
    assert {"MLE only", "GAN, no reheating", "GAN with reheating, hard ST"} <= set(
        straight.metrics)
    curve = straight.metrics["GAN, no reheating"]["curve"]
    assert set(curve) == {"0.7", "1.3"} and len(curve["0.7"]["distinct4"]["values"]) == 2

    class Interrupt(_common.Checkpoint):
        def put(self, key, value):
            super().put(key, value)
            if len(self.done) == 3:
                raise KeyboardInterrupt
            return value

    path = tmp_path / "ckpt.pt"
    monkeypatch.setattr(textgan, "Checkpoint", Interrupt)
    with pytest.raises(KeyboardInterrupt):
        textgan.run(config, out=None, show=False, checkpoint=path)
    monkeypatch.undo()
    assert len(_common.Checkpoint(path, config).done) == 3
    resumed = textgan.run(config, out=None, show=False, checkpoint=path)
    assert resumed.metrics == straight.metrics


def test_run_without_pretraining_compares_the_gan_variants():
    config = textgan.Config(pretrain_steps=0, gan_steps=4, monitor_every=2, samples=10, batch=8,
                            seeds=1)
    result = textgan.run(config, out=None, show=False)
    assert {"GAN, no reheating", "GAN with reheating"} <= set(result.metrics)
    assert "MLE only" not in result.metrics


def test_own_corpus_and_bad_configuration(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog! " * 50)
    assert textgan.load_text(str(text)).startswith("the quick brown fox jumps over the lazy dog ")
    with raises(ValueError, "textgan: corpus '/no/such.txt' is not a readable file"):
        textgan.Config(corpus="/no/such.txt")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with raises(ValueError, f"textgan: corpus {str(short)!r} has 9 usable characters; it needs "
                            f"at least 250 (10 x (length + 1))"):
        textgan.Config(corpus=str(short))
    with raises(ValueError, "textgan: pretrain_steps + gan_steps must be >= 1, got 0"):
        textgan.Config(pretrain_steps=0, gan_steps=0)
    with raises(ValueError, "textgan: reheat_beta_factor must not be 1 (beta would never "
                            "change), got 1.0"):
        textgan.Config(reheat_beta_factor=1.0)
    with raises(ValueError, "textgan: schedule must be one of ('constant', 'linear', 'exp', "
                            "'log', 'sigmoid', 'quad', 'sqrt'), got 'cubic'"):
        textgan.Config(schedule="cubic")
    with raises(ValueError, "textgan: variants must be some of ('soft', 'soft_reheat', 'hard', "
                            "'hard_reheat'), got ('soft', 'warm')"):
        textgan.Config(variants=("soft", "warm"))
    with raises(ValueError, "textgan: temperatures must be a non-empty tuple of finite numbers "
                            "> 0, got (1.0, 0.0)"):
        textgan.Config(temperatures=(1.0, 0.0))
