"""DNA sequences: a VAE over one-hot sequences and an autoregressive generator
trained end-to-end through its own Gumbel-Softmax samples.

Data (shipped in ``gumbelrs/apps/data``, provenance in its README): the UCI E.
coli promoter set (106 sequences of 57 nt) and the StatLog splice-junction set
(3,186 sequences of 60 nt).

- **VAE** (on the splice set, its EI/IE/N labels unused in training): a
  convolutional encoder to categorical latents (sampled with a
  :mod:`gumbelrs.estimators` method), an MLP decoder to a position x nucleotide
  logit matrix, the KL term warmed up from 0 to 1; a concrete sequence is
  decoded by a (straight-through) Gumbel-Softmax sample of that matrix, not by
  its argmax. Reported: reconstruction accuracy per position against the
  splice consensus, a linear probe of the latent codes for the class, the
  softmax matrix against Gumbel-Softmax sequences, and the donor/acceptor
  consensus in sequences generated from the prior.
- **Generator** (on the promoter set): a GRU emits one nucleotide per step as a
  straight-through Gumbel-Softmax one-hot and reads it back as its next input,
  so the score of the whole sequence reaches every step's logits. The score: the
  log-probability of "promoter" under a frozen CNN classifier trained on the
  real sequences, minus a penalty on the distance of the GC content to that of
  real promoters, plus an entropy bonus on the per-step distributions that
  keeps the samples diverse.

Reported against real sequences: classifier score, GC content, the L1 distance
between 3-mer frequencies and the real set's, and diversity.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs import estimators

from . import _motifs, _rna
from ._common import (
    AppResult,
    Checkpoint,
    Table,
    check_config,
    kl_to_uniform,
    progress,
    pyplot,
    require,
    save_figure,
    seeded,
)

ALPHABET = "acgt"
_DATA = Path(__file__).parent / "data"


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: (VAE) Adam steps of the sequence VAE (learning rate 1e-3, not lr), each on batch sequences
    #: drawn with replacement from the 80% training split of the 3,186 splice-junction sequences.
    #: 0 leaves the VAE at its random initialisation. An int >= 0.
    vae_steps: int = 3000
    #: (VAE) Gradient estimator of the categorical latent samples in training, at temperature 1
    #: (gumbelrs.estimators.sample with its default options), one of soft (the decoder reads the
    #: relaxed sample), st (straight-through Gumbel-Softmax), gumbel_rao, reinmax, gst or
    #: decoupled (these read an exact one-hot). The held-out ELBO is taken with st samples
    #: whatever the estimator.
    vae_method: str = "st"
    #: (VAE) Number of categorical latent variables. An int >= 1.
    latents: int = 16
    #: (VAE) Categories of each latent variable (the prior is uniform over them). An int >= 1.
    classes: int = 8
    #: (VAE) Units of the hidden layer of the encoder's MLP (after its convolutions) and of the
    #: decoder's MLP. An int >= 1.
    hidden: int = 256
    #: (VAE) Channels of each of the encoder's two width-9 convolutions over the one-hot
    #: sequence. An int >= 1.
    vae_channels: int = 32
    #: (VAE) Fraction of vae_steps over which the weight of the KL term rises linearly from 0 to
    #: 1 (it is 1 after). A number in (0, 1).
    kl_warmup: float = 0.5
    #: (promoter generator) Full-batch Adam steps (learning rate lr, weight decay 1e-3) of the CNN
    #: that scores promoter against non-promoter on the 106 sequences of the promoter set. It is
    #: trained twice, on 85 sequences to report its accuracy on the other 21, and on all 106 to
    #: score the generator (frozen). 0 leaves it at its random initialisation. An int >= 0.
    classifier_steps: int = 400
    #: (promoter generator) Adam steps (learning rate lr) of the promoter generator, each on batch
    #: sequences it samples. 0 leaves it untrained. An int >= 0.
    generator_steps: int = 1500
    #: (promoter generator, RNA design) Units of the GRU of each autoregressive generator (the size
    #: of its hidden state). An int >= 1.
    generator_hidden: int = 64
    #: Temperature of the Gumbel-Softmax samples of both generators (promoter and RNA), and of the
    #: hard Gumbel-Softmax samples that decode the VAE's nucleotide logits into sequences (not of
    #: the VAE's latent samples in training, which use 1). A number > 0.
    tau: float = 1.0
    #: (promoter generator, RNA design) True feeds back and scores each step's exact one-hot
    #: sample with the straight-through gradient; False the relaxed Gumbel-Softmax sample. The
    #: VAE's decoded sequences are hard either way.
    hard: bool = True
    #: (promoter generator) Weight of the squared difference between a generated sequence's GC
    #: content (its fraction of C and G) and the real promoters' mean, subtracted from the
    #: generator's score. A number >= 0.
    gc_weight: float = 20.0
    #: (promoter generator) Weight of the entropy bonus added to the generator's score, the mean
    #: over the positions of the entropy (nats) of each step's distribution softmax(logits), which
    #: keeps the samples diverse. A number >= 0.
    entropy_weight: float = 0.3
    #: (promoter generator) Weight of the squared difference between the batch's mean soft box
    #: score and the real promoters', subtracted from the generator's score. The soft score is
    #: near 1 when a sequence holds the -35 box TTGACA and the -10 box TATAAT, each with at most
    #: one mismatch, 15 to 19 nt apart (gumbelrs.apps._motifs.motif_score). A number >= 0.
    motif_weight: float = 40.0
    #: (promoter generator) Weight of the L1 distance between the batch's 3-mer frequencies
    #: (differentiable in the one-hot samples) and the real promoters', subtracted from the
    #: generator's score. A number >= 0.
    kmer_weight: float = 2.0
    #: (RNA design) Nucleotides per RNA sequence, of the predictor's training sequences, the
    #: designs and the annealing chains. An int >= 1.
    rna_length: int = 50
    #: (RNA design) Uniformly random sequences folded by ViennaRNA (oracle calls, counted in the
    #: budget every method gets) to train the energy predictor; the last 10% of them are held out
    #: to report its correlation and mean absolute error. An int >= 20.
    rna_train: int = 4000
    #: (RNA design) Final samples of the generator folded and reported, and the number of designs
    #: each other method keeps (the lowest distinct sequences among its oracle calls, or the first
    #: random ones for random with no selection). An int >= 1.
    rna_designs: int = 500
    #: (RNA design) Adam steps (learning rate lr, batch sequences drawn with replacement) of the
    #: energy predictor on the random sequences; after each round it trains for half as many more
    #: (rounded down) on all folded sequences. An int >= 0.
    rna_predictor_steps: int = 1500
    #: (RNA design) Design rounds, each training the generator for rna_generator_steps steps
    #: against the predictor, folding rna_round_designs of its samples and retraining the
    #: predictor with them. 0 folds the untrained generator's samples. An int >= 0.
    rna_rounds: int = 3
    #: (RNA design) Generator samples folded after each round (oracle calls) and added to the
    #: predictor's training data. An int >= 1.
    rna_round_designs: int = 500
    #: (RNA design) Adam steps (learning rate lr) of the generator per round, each on batch
    #: samples, minimising their predicted MFE (in standard deviations of the training energies)
    #: minus the entropy weight x their mean per-step entropy. An int >= 0.
    rna_generator_steps: int = 200
    #: (RNA design) Starting value of the entropy weight, the Lagrange multiplier of the
    #: constraint mean per-step entropy >= rna_entropy_floor. After each generator step it moves
    #: by rna_entropy_rate x (floor - entropy), never below 0, and carries over to the next
    #: round. A number >= 0.
    rna_entropy_weight: float = 2.0
    #: (RNA design) The floor (nats) that the entropy weight keeps the generator's mean per-step
    #: entropy at or above; uniform letters have ln 4 = 1.39, and a floor above that cannot be met
    #: (with rna_entropy_rate above 0 the weight then grows every step). A number >= 0.
    rna_entropy_floor: float = 0.4
    #: (RNA design) Step size of the entropy weight, its rise per generator step per nat of
    #: entropy below the floor (it falls as much per nat above). 0 keeps the weight at
    #: rna_entropy_weight, a fixed entropy bonus. A number >= 0.
    rna_entropy_rate: float = 0.5
    #: (RNA design) Chains of the simulated annealing baseline (at most its budget), run side by
    #: side within the same number of oracle calls as the generator's, with single-letter moves
    #: at a temperature falling geometrically from 3 to 0.1 kcal/mol. An int >= 1.
    rna_chains: int = 10
    #: Sequences per training step of the VAE, the promoter generator, the RNA energy predictor
    #: and the RNA generator. An int >= 1.
    batch: int = 64
    #: Sequences generated for the report by the VAE (decoded from latent codes of the prior)
    #: and by the promoter generator, and of the references drawn with them (samples of one
    #: position weight matrix of the splice set, uniformly random sequences as long as the
    #: promoters). An int >= 1.
    samples: int = 500
    #: Adam learning rate of the promoter classifier, the promoter generator, the RNA energy
    #: predictor and the RNA generator (the VAE uses 1e-3). A number > 0.
    lr: float = 3e-3
    #: Seed of everything random in the run (data splits, initialisations, batches, Gumbel
    #: noise, the RNA sequences and annealing moves). An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("dna", self, counts=("latents", "classes", "hidden", "vae_channels",
                                          "generator_hidden", "batch", "samples", "rna_length",
                                          "rna_designs", "rna_round_designs", "rna_chains",
                                          "rna_train"),
                     maybe_zero=("vae_steps", "classifier_steps", "generator_steps", "seed",
                                 "rna_predictor_steps", "rna_generator_steps", "rna_rounds"),
                     positive=("tau", "lr"), non_negative=("gc_weight", "entropy_weight",
                                                                "motif_weight", "kmer_weight",
                                                                "rna_entropy_weight",
                                                                "rna_entropy_floor",
                                                                "rna_entropy_rate"),
                     fractions=("kl_warmup",),
                     choices={"vae_method": estimators.METHODS})
        if self.rna_train < 20:
            raise ValueError(f"dna: rna_train must be an int >= 20 (a tenth, at least 2, is held "
                             f"out to score the predictor), got {self.rna_train!r}")

    @classmethod
    def quick(cls) -> Config:
        """A run of about 15 seconds on two cores."""
        return cls(vae_steps=800, generator_steps=400, samples=200, rna_length=40,
                   rna_train=600, rna_designs=100, rna_predictor_steps=200,
                   rna_round_designs=100, rna_generator_steps=40, rna_chains=5)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(vae_steps=10, classifier_steps=10, generator_steps=5, samples=20, batch=8,
                   rna_length=40, rna_train=40, rna_designs=10, rna_predictor_steps=4,
                   rna_rounds=1, rna_round_designs=10, rna_generator_steps=2, rna_chains=3)


def load(name: str) -> tuple[list[str], list[str]]:
    """Labels and sequences of ``"promoters"`` or ``"splice"``."""
    if name not in ("promoters", "splice"):
        raise ValueError(f"dna: unknown data set {name!r}; expected 'promoters' or 'splice'")
    rows = [line.split("\t") for line in (_DATA / f"{name}.tsv").read_text().splitlines()]
    return [r[0] for r in rows], [r[1].strip() for r in rows]


def one_hot(seqs: list[str]) -> torch.Tensor:
    """``(n, length, 4)`` float32 one-hot of ACGT strings."""
    index = torch.tensor([[ALPHABET.index(c) for c in s] for s in seqs])
    return nn.functional.one_hot(index, 4).float()


def decode(x: torch.Tensor) -> list[str]:
    """ACGT strings of one-hot (or relaxed) sequences, by their largest entry."""
    return ["".join(ALPHABET[i] for i in row) for row in x.argmax(-1).tolist()]


def gc_content(x: torch.Tensor) -> torch.Tensor:
    """Fraction of C and G per sequence (differentiable for relaxed sequences)."""
    return x[..., 1:3].sum(-1).mean(-1)


def kmer_frequencies(seqs: list[str], k: int = 3) -> torch.Tensor:
    """Normalised frequencies of the ``4^k`` k-mers over all sequences."""
    index = {m: i for i, m in enumerate("".join(p) for p in itertools.product(ALPHABET,
                                                                                 repeat=k))}
    counts = torch.zeros(len(index))
    for s in seqs:
        for i in range(len(s) - k + 1):
            counts[index[s[i:i + k]]] += 1
    return counts / counts.sum()


def kmer_distance(a: list[str], b: list[str]) -> float:
    """L1 distance between the 3-mer frequencies of two sets of sequences."""
    return float((kmer_frequencies(a) - kmer_frequencies(b)).abs().sum())


def diversity(seqs: list[str]) -> dict[str, float]:
    """Fraction of distinct sequences and mean pairwise Hamming distance per site."""
    x = one_hot(seqs)
    n = len(seqs)
    same = torch.einsum("ild,jld->ij", x, x) / x.shape[1]
    off = (1 - same).sum() / max(1, n * (n - 1))
    return {"distinct": len(set(seqs)) / n, "hamming": float(off)}


class SequenceVAE(nn.Module):
    """Categorical latents; the decoder emits ``(length, 4)`` nucleotide logits.

    The encoder is two width-9 convolutions over the one-hot sequence (motif
    detectors), flattened so that where a motif sits is kept; the decoder an MLP
    whose output weights are position-specific, as the sequences are aligned on
    the junction."""

    def __init__(self, length: int, latents: int, classes: int, hidden: int, channels: int = 32):
        super().__init__()
        self.length, self.latents, self.classes = length, latents, classes
        self.encoder = nn.Sequential(
            nn.Conv1d(4, channels, 9, padding=4), nn.ReLU(),
            nn.Conv1d(channels, channels, 9, padding=4), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * length, hidden), nn.ReLU(), nn.Linear(hidden, latents * classes))
        self.decoder = nn.Sequential(nn.Linear(latents * classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 4 * length))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``log q(z | x)``, ``(n, latents, classes)``."""
        return self.encoder(x.transpose(1, 2)).view(-1, self.latents, self.classes).log_softmax(-1)

    def nucleotide_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.flatten(1)).view(-1, self.length, 4)

    def terms(self, x: torch.Tensor, method: str, tau: float,
              generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sequence: reconstruction term, KL to the uniform prior, and the
        decoder's nucleotide logits of a latent sample."""
        logits = self.logits(x)
        z = estimators.sample(logits, method, tau, -1, generator)
        nucleotides = self.nucleotide_logits(z)
        rec = -(nucleotides.log_softmax(-1) * x).sum((-2, -1))
        return rec, kl_to_uniform(logits), nucleotides

    def loss(self, x: torch.Tensor, method: str, tau: float, generator,
             kl_weight: float = 1.0) -> torch.Tensor:
        """Negative ELBO per sequence (the KL term scaled by ``kl_weight``)."""
        rec, kl, _ = self.terms(x, method, tau, generator)
        return rec + kl_weight * kl

    def prior_codes(self, n: int) -> torch.Tensor:
        """``n`` one-hot latent codes from the uniform prior (torch's generator)."""
        return torch.eye(self.classes)[torch.randint(0, self.classes, (n, self.latents))]


class Classifier(nn.Module):
    """A small CNN scoring ``(n, length, 4)`` sequences: the logit of "promoter"."""

    def __init__(self, filters: int = 16, width: int = 8):
        super().__init__()
        self.conv = nn.Conv1d(4, filters, width)
        self.head = nn.Linear(filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.transpose(1, 2))).amax(-1)
        return self.head(h).squeeze(-1)


class Generator(nn.Module):
    """An autoregressive GRU whose Gumbel-Softmax sample at each step (exact
    one-hot with the straight-through gradient when ``hard``) is its next
    input."""

    def __init__(self, length: int, hidden: int, tau: float, hard: bool,
                 generator: gumbelrs.Generator | None = None):
        super().__init__()
        self.length, self.tau, self.hard, self.generator = length, tau, hard, generator
        self.cell = nn.GRUCell(4, hidden)
        self.out = nn.Linear(hidden, 4)
        self.h0 = nn.Parameter(torch.zeros(hidden))
        self.start = nn.Parameter(torch.zeros(4))

    def forward(self, n: int, feed_back: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences ``(n, length, 4)`` and the logits of every step.
        ``feed_back=False`` detaches the inputs (to show where gradients flow)."""
        h = self.h0.expand(n, -1)
        x = self.start.expand(n, -1)
        ys, logits = [], []
        for _ in range(self.length):
            h = self.cell(x, h)
            step = self.out(h)
            y = gumbelrs.gumbel_softmax(step, self.tau, hard=self.hard, generator=self.generator)
            ys.append(y)
            logits.append(step)
            x = y if feed_back else y.detach()
        return torch.stack(ys, 1), torch.stack(logits, 1)


def train_classifier(x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> Classifier:
    clf = Classifier()
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval().requires_grad_(False)


@dataclasses.dataclass
class Targets:
    """Statistics of the real promoters that the generator's score matches."""

    gc: float
    motif: float  # mean soft box score (:func:`_motifs.motif_score`)
    trimers: torch.Tensor  # the 64 3-mer frequencies

    @classmethod
    def of(cls, x: torch.Tensor) -> Targets:
        return cls(float(gc_content(x).mean()), float(_motifs.motif_score(x).mean()),
                   _motifs.soft_trimer_frequencies(x))


def objective(seqs: torch.Tensor, logits: torch.Tensor, clf: Classifier, targets: Targets,
              config: Config) -> torch.Tensor:
    """Batch score to maximise: mean log p(promoter), a GC penalty and an entropy
    bonus per sequence; two differentiable batch terms: the squared distance of
    the mean soft box score (-35 and -10 boxes 15-19 nt apart) to the real
    promoters' and the L1 distance of the batch's 3-mer frequencies to theirs."""
    log_p = nn.functional.logsigmoid(clf(seqs))
    gc = (gc_content(seqs) - targets.gc) ** 2
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean(-1)
    motif = (_motifs.motif_score(seqs).mean() - targets.motif) ** 2
    trimers = (_motifs.soft_trimer_frequencies(seqs) - targets.trimers).abs().sum()
    return ((log_p - config.gc_weight * gc + config.entropy_weight * entropy).mean()
            - config.motif_weight * motif - config.kmer_weight * trimers)


SPLICE_CLASSES = ("ei", "ie", "n")
DONOR = 30  # 0-based start of the GT right after the junction of the EI sequences
ACCEPTOR = 28  # 0-based start of the AG right before the junction of the IE sequences
FLANKS = (*range(0, 20), *range(40, 60))  # 20 nt at each end, away from the junction


def motif_rate(seqs: list[str], motif: str, at: int) -> float:
    """Fraction of ``seqs`` with ``motif`` starting at 0-based position ``at``."""
    return sum(s[at:at + len(motif)] == motif for s in seqs) / max(1, len(seqs))


def consensus_rates(seqs: list[str]) -> dict[str, float]:
    """Fractions of ``seqs`` with the donor GT at ``DONOR``, with the acceptor AG
    at ``ACCEPTOR``, and with both."""
    return {"donor_gt": motif_rate(seqs, "gt", DONOR),
            "acceptor_ag": motif_rate(seqs, "ag", ACCEPTOR),
            "both": motif_rate(seqs, "aggt", ACCEPTOR)}


def position_accuracy(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per position, the fraction of the one-hot sequences ``x`` whose nucleotide
    is the argmax of ``logits`` (both ``(n, length, 4)``)."""
    return (logits.argmax(-1) == x.argmax(-1)).double().mean(0)


def consensus_frequency(x: torch.Tensor) -> torch.Tensor:
    """Per position, the frequency of the most common nucleotide of the one-hot
    sequences ``x``: the accuracy of always predicting the column's consensus."""
    return x.double().mean(0).amax(-1)


def linear_probe(features: torch.Tensor, labels: list[str], seed: int, folds: int = 5) -> float:
    """Accuracy of a logistic regression predicting ``labels`` from ``features``
    ``(n, d)`` (standardised), by stratified ``folds``-fold cross-validation (mean
    over folds)."""
    linear_model = require("sklearn.linear_model", "dna")
    model_selection = require("sklearn.model_selection", "dna")
    pipeline = require("sklearn.pipeline", "dna")
    preprocessing = require("sklearn.preprocessing", "dna")
    cv = model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed)
    probe = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(max_iter=2000))
    return float(model_selection.cross_val_score(probe, features.numpy(), labels, cv=cv).mean())


def _pwm_neg_log_likelihood(train_x: torch.Tensor, train_y: list[str], test_x: torch.Tensor,
                            test_y: list[str]) -> tuple[float, float]:
    """Held-out nats per sequence of one position weight matrix fitted to all
    training sequences, and of one matrix per class with the class known (plus
    ``-log p(class)``): references for the VAE's -ELBO (add-one smoothing)."""

    def nll(fit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pwm = (fit.sum(0) + 1) / (len(fit) + 4)
        return -(x * pwm.log()).sum((-2, -1))

    per_class = torch.zeros(len(test_x))
    for c in SPLICE_CLASSES:
        fit = train_x[[i for i, lab in enumerate(train_y) if lab == c]]
        rows = [i for i, lab in enumerate(test_y) if lab == c]
        per_class[rows] = nll(fit, test_x[rows]) - math.log(len(fit) / len(train_x))
    return float(nll(train_x, test_x).mean()), float(per_class.mean())


def _vae_part(config: Config, show: bool) -> dict:
    labels, seqs = load("splice")
    x = one_hot(seqs)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed))
    n = len(x) * 4 // 5
    train_x, test_x = x[order[:n]], x[order[n:]]
    train_y = [labels[i] for i in order[:n].tolist()]
    test_y = [labels[i] for i in order[n:].tolist()]
    g = seeded(config.seed)
    model = SequenceVAE(x.shape[1], config.latents, config.classes, config.hidden,
                        config.vae_channels)
    with torch.no_grad():
        untrained_codes = model.logits(test_x).exp().flatten(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(config.seed)
    warmup = max(1.0, config.kl_warmup * config.vae_steps)
    for step in progress(range(config.vae_steps), config.vae_steps, "dna vae", show):
        xb = train_x[torch.randint(0, n, (config.batch,), generator=batches)]
        loss = model.loss(xb, config.vae_method, 1.0, g, min(1.0, step / warmup)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        # The ELBO of one-hot latent samples whatever the training estimator.
        rec, kl, nucleotides = model.terms(test_x, "st", 1.0, g)
        sampled = gumbelrs.gumbel_softmax(nucleotides, config.tau, hard=True, generator=g)
        codes = model.logits(test_x).exp().flatten(1)
        matrix = model.nucleotide_logits(model.prior_codes(config.samples))
        concrete = decode(gumbelrs.gumbel_softmax(matrix, config.tau, hard=True, generator=g))
        by_argmax = decode(matrix)
        per_code = 20
        repeated = matrix[:per_code].repeat_interleave(per_code, 0)
        redrawn = decode(gumbelrs.gumbel_softmax(repeated, config.tau, hard=True, generator=g))
        entropy = float(-(matrix.softmax(-1) * matrix.log_softmax(-1)).sum(-1).mean())
    rows = {c: [i for i, lab in enumerate(test_y) if lab == c] for c in SPLICE_CLASSES}
    fit_rows = {c: [i for i, lab in enumerate(train_y) if lab == c] for c in SPLICE_CLASSES}
    real = decode(test_x)
    columns = train_x.mean(0)  # one position weight matrix for all classes
    independent = decode(gumbelrs.gumbel_softmax(columns.log().expand(config.samples, -1, -1),
                                                 1.0, hard=True, generator=g))
    one_pwm, class_pwms = _pwm_neg_log_likelihood(train_x, train_y, test_x, test_y)

    def sequences(strings: list[str], redraws: list[str]) -> dict:
        groups = [redraws[i:i + per_code] for i in range(0, len(redraws), per_code)]
        return {**diversity(strings), "gc": float(gc_content(one_hot(strings)).mean()),
                "kmer_distance": kmer_distance(strings, real),
                "distinct_per_code": sum(len(set(s)) for s in groups) / max(1, len(groups)),
                **consensus_rates(strings)}

    return {
        "neg_elbo": float((rec + kl).mean()), "reconstruction": float(rec.mean()),
        "kl": float(kl.mean()),
        "reference_neg_elbo": {"one PWM": one_pwm, "per-class PWMs, class known": class_pwms,
                               "uniform": x.shape[1] * math.log(4)},
        "reconstruction_accuracy": float(position_accuracy(nucleotides, test_x).mean()),
        "sampled_reconstruction_accuracy": float(position_accuracy(sampled, test_x).mean()),
        "class_counts": {c: len(r) for c, r in rows.items()},
        "position_accuracy": {c: position_accuracy(nucleotides[r], test_x[r]).tolist()
                              for c, r in rows.items()},
        "consensus_frequency": {c: consensus_frequency(train_x[r]).tolist()
                                for c, r in fit_rows.items()},
        "one_pwm_accuracy": {c: position_accuracy(columns.expand(len(r), -1, -1),
                                                  test_x[r]).tolist() for c, r in rows.items()},
        "probe": {"majority class": max(len(r) for r in rows.values()) / len(test_y),
                  "VAE latent codes": linear_probe(codes, test_y, config.seed),
                  "untrained encoder's codes": linear_probe(untrained_codes, test_y, config.seed),
                  "one-hot sequence": linear_probe(test_x.flatten(1), test_y, config.seed)},
        "decoder_entropy": entropy,
        "generated": {"Gumbel-Softmax": sequences(concrete, redrawn),
                      "argmax": sequences(by_argmax, decode(repeated))},
        "real": {**{c: consensus_rates([real[i] for i in r]) for c, r in rows.items()},
                 "all": sequences(real, []), "one PWM": consensus_rates(independent)},
        "random": sequences(_random_sequences(real, config.seed), []),
        "examples": concrete[:5],
    }


def _vae_tables(vae: dict, config: Config) -> dict[str, Table]:
    """The report's tables of the sequence VAE."""
    refs = vae["reference_neg_elbo"]
    fit = Table(("model", "-ELBO or NLL (nats/seq)", "reconstruction", "KL",
                 "accuracy, argmax", "accuracy, Gumbel-Softmax sample"),
                [(f"VAE ({config.latents} x {config.classes} latents)", vae["neg_elbo"],
                  vae["reconstruction"], vae["kl"], vae["reconstruction_accuracy"],
                  vae["sampled_reconstruction_accuracy"])]
                + [(f"{who} (reference)", v, "", "", "", "") for who, v in refs.items()])

    def mean(values: list[float], at) -> float:
        return sum(values[i] for i in at) / len(at)

    sites = ((f"donor GT ({DONOR}-{DONOR + 1})", (DONOR, DONOR + 1)),
             (f"acceptor AG ({ACCEPTOR}-{ACCEPTOR + 1})", (ACCEPTOR, ACCEPTOR + 1)),
             ("flanks (0-19, 40-59)", FLANKS),
             ("all positions", range(len(vae["position_accuracy"]["n"]))))
    positions = Table(
        ("class", "positions", "VAE", "class consensus frequency (training split)",
         "one PWM for all classes (argmax)"),
        [(c.upper(), site, *(mean(vae[key][c], at) for key in (
            "position_accuracy", "consensus_frequency", "one_pwm_accuracy")))
         for c in SPLICE_CLASSES for site, at in sites])
    probe = Table(("features", "accuracy (5-fold CV)"), list(vae["probe"].items()))
    gen, real = vae["generated"], vae["real"]["all"]
    contrast = Table(
        ("decoded from the prior", "entropy per position (nats)",
         "distinct decodings of one code (of 20)", "distinct sequences", "Hamming/site", "GC",
         "3-mer L1 to real"),
        [("softmax decoder: probability matrix", vae["decoder_entropy"], "", "", "", "", "")]
        + [(who, 0.0, gen[key]["distinct_per_code"], gen[key]["distinct"], gen[key]["hamming"],
            gen[key]["gc"], gen[key]["kmer_distance"])
           for who, key in (("softmax decoder: argmax sequences", "argmax"),
                            (f"Gumbel-Softmax sequences (hard, tau = {config.tau})",
                             "Gumbel-Softmax"))]
        + [(who, 0.0, "", r["distinct"], r["hamming"], r["gc"], r["kmer_distance"])
           for who, r in (("real held-out sequences", real),
                          ("uniformly random sequences", vae["random"]))])
    rates = [(f"real {c.upper()} (held-out)", vae["real"][c]) for c in SPLICE_CLASSES] + [
        ("real, all held-out", real),
        (f"generated, Gumbel-Softmax ({config.samples})", gen["Gumbel-Softmax"]),
        (f"generated, argmax ({config.samples})", gen["argmax"]),
        ("samples of one PWM (positions independent)", vae["real"]["one PWM"]),
        ("uniformly random (expected)", {"donor_gt": 1 / 16, "acceptor_ag": 1 / 16,
                                         "both": 1 / 256})]
    consensus = Table(
        ("sequences", f"GT at donor ({DONOR}-{DONOR + 1})",
         f"AG at acceptor ({ACCEPTOR}-{ACCEPTOR + 1})", f"both (AGGT at {ACCEPTOR}-{DONOR + 1})"),
        [(who, r["donor_gt"], r["acceptor_ag"], r["both"]) for who, r in rates])
    return {"Sequence VAE on splice junctions (held-out 20%)": fit,
            "VAE reconstruction accuracy by class and position (held-out, argmax)": positions,
            "Linear probe of the EI/IE/N class on the held-out split": probe,
            "Softmax decoder against Gumbel-Softmax sequences (the same decoder, "
            "codes from the prior)": contrast,
            "Splice consensus in real and generated sequences": consensus}


def _vae_figure(vae: dict, out: Path | None) -> Path | None:
    """Per-position reconstruction accuracy of each class against its consensus."""
    plt = pyplot("dna")
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for c, colour in zip(SPLICE_CLASSES, ("tab:blue", "tab:orange", "tab:grey")):
        acc = vae["position_accuracy"][c]
        ax.plot(range(len(acc)), acc, color=colour, lw=1.4, label=f"{c.upper()}: VAE")
        ax.plot(range(len(acc)), vae["consensus_frequency"][c], color=colour, lw=0.9, ls="--",
                label=f"{c.upper()}: consensus frequency")
    ax.axvline(DONOR - 0.5, color="k", lw=0.6, ls=":")
    ax.annotate("GT (EI) ", (DONOR + 2, 1.02), ha="left", fontsize=8)
    ax.annotate("AG (IE)", (ACCEPTOR - 1, 1.02), ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel(f"position (0-based; the junction lies between {DONOR - 1} and {DONOR})")
    ax.set_ylabel("held-out accuracy (argmax)")
    ax.set_title("Sequence VAE: reconstruction accuracy by position")
    ax.legend(fontsize=7, ncol=3, loc="lower center")
    return save_figure(fig, out, "dna_vae_positions.png")


def _random_sequences(seqs: list[str], seed: int) -> list[str]:
    """Uniformly random sequences as long as ``seqs`` (a reference point)."""
    g = torch.Generator().manual_seed(seed)
    return ["".join(ALPHABET[i] for i in torch.randint(0, 4, (len(s),), generator=g).tolist())
            for s in seqs]


def box_rate(seqs: list[str]) -> float:
    """Fraction of ``seqs`` with a -35 box (TTGACA) and a -10 box (TATAAT), at
    most one mismatch each, 15-19 nt apart."""
    return float(_motifs.has_boxes(one_hot(seqs)).double().mean())


def _generator_part(config: Config, show: bool) -> dict:
    labels, seqs = load("promoters")
    x = one_hot(seqs)
    y = torch.tensor([1.0 if lab == "+" else 0.0 for lab in labels])
    g = seeded(config.seed)
    order = torch.randperm(len(x))
    held, fit = order[:21], order[21:]
    probe = train_classifier(x[fit], y[fit], config.classifier_steps, config.lr)
    with torch.no_grad():
        held_accuracy = float(((probe(x[held]) > 0).float() == y[held]).double().mean())
    clf = train_classifier(x, y, config.classifier_steps, config.lr)
    real = [s for s, lab in zip(seqs, labels) if lab == "+"]
    targets = Targets.of(one_hot(real))
    gen = Generator(x.shape[1], config.generator_hidden, config.tau, config.hard, g)
    opt = torch.optim.Adam(gen.parameters(), lr=config.lr)
    trace = []
    for _ in progress(range(config.generator_steps), config.generator_steps, "dna generator",
                      show):
        s, logits = gen(config.batch)
        score = objective(s, logits, clf, targets, config)
        opt.zero_grad()
        (-score).backward()
        opt.step()
        trace.append(float(score.detach()))
    with torch.no_grad():
        s, _ = gen(config.samples)
        generated = decode(s)
        random_seqs = _random_sequences(real * (config.samples // len(real) + 1), config.seed)[
            :config.samples]
        sets = {"generated": generated, "real promoters": real,
                "non-promoters": [s for s, lab in zip(seqs, labels) if lab == "-"],
                "random": random_seqs}
        return {"classifier_held_out_accuracy": held_accuracy,
                "objective_first": sum(trace[:20]) / max(1, len(trace[:20])),
                "objective_last": sum(trace[-20:]) / max(1, len(trace[-20:])),
                "trace": trace,
                "p_promoter": {k: float(torch.sigmoid(clf(one_hot(v))).mean())
                               for k, v in sets.items()},
                "gc": {k: float(gc_content(one_hot(v)).mean()) for k, v in sets.items()},
                "kmer_distance": {k: kmer_distance(v, real) for k, v in sets.items()},
                "box_rate": {k: box_rate(v) for k, v in sets.items()},
                "sizes": {k: len(v) for k, v in sets.items()},
                "diversity": diversity(generated),
                "examples": generated[:5]}


def _rna_part(config: Config, show: bool) -> dict:
    """RNA design against ViennaRNA at equal oracle calls: generator steered by a
    predictor trained on random sequences, random sampling, simulated annealing."""
    rna = _rna.vienna()
    if rna is None:
        return {"skipped": _rna.MISSING}
    g = seeded(config.seed)
    data = torch.Generator().manual_seed(config.seed)
    length, m = config.rna_length, config.rna_designs
    oracle = _rna.Oracle(rna)
    seqs = _rna.random_rna(config.rna_train, length, data)
    energies = torch.tensor(oracle(seqs))
    folded = list(zip(seqs, energies.tolist()))  # every sequence the generator's calls folded
    x, n = _rna.encode(seqs), len(seqs) * 9 // 10
    held_x, held_e, x, energies = x[n:], energies[n:], x[:n], energies[:n]
    predictor = _rna.train_predictor(x, energies, config.rna_predictor_steps, config.batch,
                                     config.lr, data)
    with torch.no_grad():
        held = predictor(held_x).tolist()
    gen = Generator(length, config.generator_hidden, config.tau, config.hard, g)
    opt = torch.optim.Adam(gen.parameters(), lr=config.lr)
    trace: list[float] = []
    entropy: list[float] = []
    weight = config.rna_entropy_weight
    for _ in progress(range(config.rna_rounds), config.rna_rounds, "rna design rounds", show):
        energy, h, weight = _rna.train_designer(
            gen, opt, predictor, config.rna_generator_steps, config.batch,
            config.rna_entropy_floor, weight, config.rna_entropy_rate)
        trace += energy
        entropy += h
        with torch.no_grad():
            s, _ = gen(config.rna_round_designs)
        round_designs = _rna.decode(s)
        folded += zip(round_designs, oracle(round_designs))
        x, energies = torch.cat([x, s]), torch.cat([energies, torch.tensor(
            [e for _, e in folded[-len(round_designs):]])])
        predictor = _rna.train_predictor(x, energies, config.rna_predictor_steps // 2,
                                         config.batch, config.lr, data, predictor)
    with torch.no_grad():
        s, _ = gen(m)
        predicted = predictor(s).tolist()
    designs = _rna.decode(s)
    sets = {"generator": list(zip(designs, oracle(designs)))}
    sets["generator, best of the calls"] = _rna.lowest(folded + sets["generator"], m)
    budget = oracle.calls
    pool = _rna.random_rna(budget, length, data)
    random_oracle, annealing_oracle = _rna.Oracle(rna), _rna.Oracle(rna)
    scored = list(zip(pool, random_oracle(pool)))
    sets["random, best of the calls"] = _rna.lowest(scored, m)
    sets["annealing, best of the calls"] = _rna.lowest(
        _rna.anneal(annealing_oracle, length, budget, config.rna_chains, 3.0, 0.1, data), m)
    sets["random, no selection"] = scored[:m]
    oracles = {"generator": oracle, "generator, best of the calls": oracle,
               "random, best of the calls": random_oracle,
               "annealing, best of the calls": annealing_oracle, "random, no selection": None}
    best = {k: min(v, key=lambda p: p[1]) for k, v in sets.items()}
    return {"budget": budget, "held_out": len(seqs) - n,
            "oracle_calls": {k: o.calls if o else m for k, o in oracles.items()},
            "held_out_correlation": _rna.correlation(held, held_e.tolist()),
            "held_out_mae": _rna.mean_absolute_error(held, held_e.tolist()),
            "predicted_mean": sum(predicted) / m,
            "design_correlation": _rna.correlation(predicted, [e for _, e in sets["generator"]]),
            "design_mae": _rna.mean_absolute_error(predicted, [e for _, e in sets["generator"]]),
            "trace": trace, "entropy": entropy, "entropy_weight": weight,
            "final_entropy": sum(entropy[-20:]) / max(1, len(entropy[-20:])),
            "energies": {k: [e for _, e in v] for k, v in sets.items()},
            "diversity": {k: diversity([q.lower().replace("u", "t") for q, _ in v])
                          for k, v in sets.items()},
            "best": {k: (q, (o or random_oracle).structures[q], e)
                     for (k, o), (q, e) in zip(oracles.items(), best.values())}}


def _mfe_summary(energies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per designer: the number of designs and their mean, median (upper) and
    lowest ViennaRNA energy."""
    summary = {}
    for k, e in energies.items():
        ranked = sorted(e)
        summary[k] = {"designs": len(e), "mean": sum(e) / len(e), "median": ranked[len(e) // 2],
                      "lowest": ranked[0]}
    return summary


def _rna_report(result: AppResult, rna: dict, config: Config, out: Path | None) -> None:
    """The RNA design part's paragraph, tables and figure."""
    if "skipped" in rna:
        result.text += f" {rna['skipped']}."
        return
    result.text += (
        f" RNA design against ViennaRNA (minimum free energy, default model, 37 C), length "
        f"{config.rna_length}, {rna['budget']} oracle calls per method. Generator: a dilated "
        f"CNN trained on the MFE of {config.rna_train - rna['held_out']} random sequences "
        f"(correlation {rna['held_out_correlation']:.2f}, mean absolute error "
        f"{rna['held_out_mae']:.1f} kcal/mol on {rna['held_out']} held out) steers "
        f"the GRU generator, which minimises the predicted MFE of its straight-through "
        f"samples (in standard deviations of the training energies) minus a weight x the mean "
        f"per-step entropy, the weight a Lagrange multiplier keeping that entropy at or above "
        f"{config.rna_entropy_floor} nats (it starts at {config.rna_entropy_weight} and moves by "
        f"{config.rna_entropy_rate} x (floor - entropy) per step; it ends at "
        f"{rna['entropy_weight']:.1f}, the entropy at {rna['final_entropy']:.2f}), for "
        f"{config.rna_rounds} rounds of {config.rna_generator_steps} steps; after each round "
        f"{config.rna_round_designs} of "
        f"its samples are folded and the predictor retrained on all folded sequences; then "
        f"{config.rna_designs} samples are folded (predicted {rna['predicted_mean']:.1f} "
        f"kcal/mol on mean, correlation {rna['design_correlation']:.2f} and mean absolute "
        f"error {rna['design_mae']:.1f} kcal/mol against their folded "
        f"MFE); \"generator, best of the calls\" keeps the {config.rna_designs} lowest "
        f"distinct sequences of all those its calls folded (random training sequences, round "
        f"and final samples). Random sampling keeps the {config.rna_designs} lowest of "
        f"{rna['budget']} random "
        f"sequences (no selection: the first {config.rna_designs}); simulated annealing "
        f"({config.rna_chains} chains, single-letter moves, temperature 3 -> 0.1 kcal/mol) "
        f"keeps the {config.rna_designs} lowest distinct sequences it evaluated.")
    rows = [(k, rna["oracle_calls"][k], s["designs"], s["mean"], s["median"], s["lowest"],
             rna["diversity"][k]["distinct"], rna["diversity"][k]["hamming"])
            for k, s in _mfe_summary(rna["energies"]).items()]
    result.tables["RNA design scored by ViennaRNA (MFE, kcal/mol; lower is more stable)"] = \
        Table(("designer", "oracle calls", "designs", "mean MFE", "median MFE", "lowest MFE",
               "distinct", "Hamming/site"), rows)
    result.tables["Lowest-MFE design of each designer"] = Table(
        ("designer", "sequence", "structure", "MFE"),
        [(k, *best) for k, best in rna["best"].items()])
    plt = pyplot("dna")
    fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=(3, 2))
    for k, e in rna["energies"].items():
        ranked = sorted(e)
        ax.step(ranked, [(i + 1) / len(e) for i in range(len(e))], where="post", label=k)
    ax.set_xlabel("ViennaRNA minimum free energy (kcal/mol)")
    ax.set_ylabel("fraction of designs at or below")
    ax.set_title(f"RNA designs, {rna['budget']} oracle calls each")
    ax.legend(fontsize=8)
    ax_h.plot(rna["entropy"], lw=0.8, label="generator's mean per-step entropy")
    ax_h.axhline(config.rna_entropy_floor, color="k", lw=0.8, ls="--", label="floor")
    ax_h.set_xlabel("generator step (all rounds)")
    ax_h.set_ylabel("nats")
    ax_h.set_ylim(0, math.log(4))
    ax_h.set_title("Generator's entropy during design")
    ax_h.legend(fontsize=8)
    path = save_figure(fig, out, "dna_rna_design.png")
    if path is not None:
        result.figures["ECDF of the designs' ViennaRNA energies; the generator's entropy"] = path


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """The VAE on splice junctions, the generator of promoters and RNA design
    against ViennaRNA."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    vae = ckpt.get("vae") or ckpt.put("vae", _vae_part(config, show))
    gen = ckpt.get("generator") or ckpt.put("generator", _generator_part(config, show))
    rna = ckpt.unit("rna", _rna_part, config, show)
    metrics = {"config": dataclasses.asdict(config), "vae": vae,
               "generator": {k: v for k, v in gen.items() if k != "trace"},
               "rna": {**{k: v for k, v in rna.items()
                          if k not in ("trace", "entropy", "energies")},
                       **({"mfe": _mfe_summary(rna["energies"])} if "energies" in rna else {})}}
    result = AppResult("dna", metrics, heading="DNA: sequence VAE and autoregressive generator")
    result.text = (f"VAE: {config.latents} categorical latents of {config.classes} classes "
                   f"({config.vae_method}), convolutional encoder ({config.vae_channels} "
                   f"channels), MLP decoder ({config.hidden}), KL weight warmed up from 0 to 1 "
                   f"over the first {config.kl_warmup:.0%} of {config.vae_steps} steps on 80% "
                   f"of the 3,186 splice-junction sequences (labels unused); sequences decoded by "
                   f"straight-through Gumbel-Softmax at tau = {config.tau}. Generator: GRU "
                   f"({config.generator_hidden}) feeding back its own "
                   f"{'hard' if config.hard else 'soft'} Gumbel-Softmax samples, "
                   f"{config.generator_steps} steps maximising log "
                   f"p(promoter) of a frozen CNN (held-out accuracy on 21 of the 106 real "
                   f"sequences: {gen['classifier_held_out_accuracy']:.2f}) minus "
                   f"{config.gc_weight} x (GC - GC of real promoters)^2 plus "
                   f"{config.entropy_weight} x per-step entropy, and two differentiable batch "
                   f"terms computed from the one-hot samples: minus {config.motif_weight} x "
                   f"(mean soft box score - real promoters')^2, where the soft score is the max "
                   f"over starts and 15-19 nt spacings of sigmoid(s (matches of TTGACA - 4.5)) "
                   f"x sigmoid(s (matches of TATAAT - 4.5)) with s = {_motifs.SHARPNESS:g}, and "
                   f"minus {config.kmer_weight} x the L1 distance of the batch's 3-mer "
                   f"frequencies to the real promoters' (the distance reported below, so it is "
                   f"measured in-sample).")
    result.tables.update(_vae_tables(vae, config))
    vae_figure = _vae_figure(vae, out)
    if vae_figure is not None:
        result.figures["Sequence VAE: held-out reconstruction accuracy by position"] = vae_figure
    result.tables["Promoter generator against real sequences"] = Table(
        ("sequences", "classifier p(promoter)", "GC content", "3-mer L1 to real promoters",
         "-35 and -10 boxes 15-19 nt apart"),
        [(f"{who} ({gen['sizes'][who]})", gen["p_promoter"][who], gen["gc"][who],
          gen["kmer_distance"][who], gen["box_rate"][who]) for who in gen["sizes"]])
    result.tables["Generated promoters (first five) and diversity"] = Table(
        ("sequence",), [(s,) for s in gen["examples"]]
        + [(f"distinct {gen['diversity']['distinct']:.2f}, mean Hamming distance per site "
            f"{gen['diversity']['hamming']:.2f}",)])
    plt = pyplot("dna")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(gen["trace"], lw=0.8)
    ax.set_xlabel("generator step")
    ax.set_ylabel("objective (batch mean)")
    ax.set_title("Promoter generator: objective during training")
    path = save_figure(fig, out, "dna_generator.png")
    if path is not None:
        result.figures["Objective of the promoter generator over training"] = path
    _rna_report(result, rna, config, out)
    return result
