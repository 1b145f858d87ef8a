"""apps.vae and apps.dna: the VAE learns, the relaxed estimator beats plain
straight-through (Jang et al.'s ordering), the DNA generator learns through its
own samples."""

import torch

import gumbelrs
from gumbelrs import schedules
from gumbelrs.apps import dna, vae

from .conftest import raises


def _vae_scores(method, seed, config, data):
    train_x, test_x = data
    torch.manual_seed(seed)
    g = gumbelrs.Generator(seed)
    model = vae.CategoricalVAE(train_x.shape[1], config.latents, config.classes, config.hidden)
    before = vae.evaluate(model.eval(), test_x, 5, g, 1.0)
    vae.train(model.train(), train_x, method, config, g)
    tau = schedules.ExponentialDecay(config.tau0, config.anneal_rate, config.tau_min,
                                     every=config.anneal_every).value(config.steps)
    return before, vae.evaluate(model.eval(), test_x, 5, g, tau)


def test_vae_learns_and_soft_beats_straight_through_on_digits():
    config = vae.Config(steps=400, hidden=(256, 128))
    train_x, test_x, _ = vae.load("digits", 0)
    soft, st = [], []
    for seed in range(2):
        before, after = _vae_scores("soft", seed, config, (train_x, test_x))
        # 44.5 nats per image untrained; 24.6 after 400 steps when this was written.
        assert after["neg_elbo"] < before["neg_elbo"] - 15
        assert after["iw_nll"] <= after["neg_elbo"] + 0.5
        soft.append(after["neg_elbo_relaxed"])
        st.append(_vae_scores("st", seed, config, (train_x, test_x))[1]["neg_elbo"])
    # Jang et al.'s ordering, each judged on its training objective: 24.58 against 24.82 nats
    # (mean of the two seeds) when this was written.
    assert sum(soft) < sum(st), (soft, st)


def test_generator_gradient_reaches_the_first_step_through_later_steps():
    gen = dna.Generator(length=12, hidden=16, tau=1.0, hard=True,
                        generator=gumbelrs.Generator(0))
    steps = []

    def keep(module, inputs, output):
        output.retain_grad()
        steps.append(output)

    gen.out.register_forward_hook(keep)
    for feed_back, reaches in ((True, True), (False, False)):
        steps.clear()
        seqs, _ = gen(8, feed_back=feed_back)
        seqs[:, -1, 0].sum().backward()  # a score of the last position only
        first = steps[0].grad
        assert len(steps) == 12 and (first is not None and first.abs().sum() > 0) == reaches
    assert set(seqs.detach().unique().tolist()) == {0.0, 1.0}


def test_generator_raises_its_objective_and_emits_acgt():
    config = dna.Config(vae_steps=0, generator_steps=150, classifier_steps=200, samples=50)
    result = dna._generator_part(config, show=False)
    # -0.03 over the first 20 steps and 0.24 over the last 20 when this was written.
    assert result["objective_last"] > result["objective_first"] + 0.1
    assert result["p_promoter"]["generated"] > result["p_promoter"]["random"]
    assert result["diversity"]["distinct"] > 0.9  # the entropy bonus keeps samples apart
    assert result["classifier_held_out_accuracy"] > 0.6


def test_shipped_dna_data():
    labels, seqs = dna.load("promoters")
    assert len(seqs) == 106 and labels.count("+") == 53
    assert all(len(s) == 57 and set(s) <= set("acgt") for s in seqs)
    labels, seqs = dna.load("splice")
    assert len(seqs) == 3186 and {lab: labels.count(lab) for lab in set(labels)} == {
        "ei": 767, "ie": 765, "n": 1654}
    donors = [s for s, lab in zip(seqs, labels) if lab == "ei"]
    assert sum(s[30:32] == "gt" for s in donors) / len(donors) > 0.98  # 759 of 767: donor GT
    with raises(ValueError, "dna: unknown data set 'ecoli'; expected 'promoters' or 'splice'"):
        dna.load("ecoli")
