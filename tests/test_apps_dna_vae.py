"""apps.dna's sequence VAE: the metrics of its report on known inputs, and the
tiny run."""

import math

import torch

from gumbelrs.apps import dna

from .conftest import raises


def _planted(motif, at, n=10, background="c"):
    return [background * at + motif + background * (60 - at - len(motif))] * n


def test_consensus_rates_of_planted_motifs():
    assert dna.consensus_rates(_planted("gt", dna.DONOR)) == {
        "donor_gt": 1.0, "acceptor_ag": 0.0, "both": 0.0}
    assert dna.consensus_rates(_planted("aggt", dna.ACCEPTOR)) == {
        "donor_gt": 1.0, "acceptor_ag": 1.0, "both": 1.0}
    # one position off is not the donor
    assert dna.consensus_rates(_planted("gt", dna.DONOR + 1))["donor_gt"] == 0.0
    half = _planted("gt", dna.DONOR, 3) + _planted("tt", dna.DONOR, 3)
    assert dna.motif_rate(half, "gt", dna.DONOR) == 0.5
    labels, seqs = dna.load("splice")
    # the shipped data: 759 of 767 EI sequences carry GT at the donor, 761 of 765 IE AG at the
    # acceptor
    rates = {c: dna.consensus_rates([s for s, lab in zip(seqs, labels) if lab == c])
             for c in dna.SPLICE_CLASSES}
    assert rates["ei"]["donor_gt"] == 759 / 767 and rates["ie"]["acceptor_ag"] == 761 / 765


def test_position_accuracy_and_consensus_frequency_on_known_reconstructions():
    x = dna.one_hot(["acgt", "aagt", "acct", "tcgt"])
    assert dna.position_accuracy(x * 5.0, x).tolist() == [1.0, 1.0, 1.0, 1.0]
    guess = dna.one_hot(["aggg"] * 4)  # right at 0 and 2 for 3 of 4, never at 1 and 3
    assert dna.position_accuracy(guess, x).tolist() == [0.75, 0.0, 0.75, 0.0]
    assert dna.consensus_frequency(x).tolist() == [0.75, 0.75, 0.75, 1.0]


def test_linear_probe_separates_separable_codes_and_not_random_ones():
    gen = torch.Generator().manual_seed(0)
    labels = ["ei", "ie", "n"] * 100
    index = torch.tensor([("ei", "ie", "n").index(lab) for lab in labels])
    codes = torch.eye(3)[index] + 0.1 * torch.rand(300, 3, generator=gen)
    assert dna.linear_probe(codes, labels, seed=0) == 1.0
    noise = torch.randn(300, 20, generator=gen)
    # Labels independent of the codes: the accuracy's mean is at most the majority rate 1/3 and
    # its standard deviation about 0.027 for 300 sequences; 1/3 + 0.12 is 4.4 of them (a
    # false-failure rate below 1e-5 for the normal approximation).
    assert dna.linear_probe(noise, labels, seed=0) < 1 / 3 + 0.12


def test_tiny_vae_part_runs_and_reports(tmp_path):
    config = dna.Config.tiny()
    vae = dna._vae_part(config, show=False)
    assert set(vae["position_accuracy"]) == set(dna.SPLICE_CLASSES)
    assert all(len(v) == 60 for v in vae["position_accuracy"].values())
    assert vae["probe"]["majority class"] == max(vae["class_counts"].values()) / 638
    assert vae["reference_neg_elbo"]["uniform"] == 60 * math.log(4)
    generated = vae["generated"]["Gumbel-Softmax"]
    # one code decoded 20 times: argmax gives one sequence, Gumbel-Softmax samples differ
    assert vae["generated"]["argmax"]["distinct_per_code"] == 1
    assert generated["distinct_per_code"] > 1
    assert all(set(s) <= set("acgt") and len(s) == 60 for s in vae["examples"])
    tables = dna._vae_tables(vae, config)
    assert len(tables) == 5 and all(t.markdown() for t in tables.values())
    assert dna._vae_figure(vae, tmp_path) == tmp_path / "dna_vae_positions.png"
    assert (tmp_path / "dna_vae_positions.png").stat().st_size > 0


def test_kl_warmup_must_be_a_fraction():
    with raises(ValueError, "dna: kl_warmup must be a number in (0, 1), got 1.5"):
        dna.Config(kl_warmup=1.5)
