"""A character-level text GAN trained through Gumbel-Softmax samples as in
RelGAN (Nie, Narodytska and Patel 2019), with temperature annealing and
reheating when diversity collapses, evaluated by quality-diversity curves over
sampling temperatures as in "Language GANs falling short" (Caccia et al. 2020).

- Generator: a GRU. At each step it draws the Gumbel perturbation ``g`` of its
  logits ``o``; its next input is the one-hot of the argmax token
  ``argmax(o + g)`` (an exact sample of ``softmax(o)``), and the discriminator
  sees the soft sample ``softmax(beta * (o + g))`` (variant ``soft``, RelGAN's
  default), or the straight-through one-hot of the same token, fed back with
  its gradient (variant ``hard``). Maximum-likelihood pre-training first.
- Discriminator: a CNN over one-hot sequences (real) or the generator's
  samples (soft or one-hot), so its gradient reaches every sampling step of the
  generator; the relativistic standard GAN loss of RelGAN.
- Inverse temperature: ``beta`` rises from 1 to ``beta_max`` over the
  adversarial steps along one of :class:`gumbelrs.schedules.RelGAN`'s schedules
  (``exp``, ``linear``, ``sigmoid``, ...). With reheating (variants ``*_reheat``)
  it is wrapped in a :class:`gumbelrs.schedules.Reheater` driven by a diversity
  monitor (distinct 4-grams of ``samples`` generated texts, every
  ``monitor_every`` steps): when distinct-4 falls below ``reheat_threshold``,
  beta is multiplied by ``reheat_beta_factor`` for ``reheat_hold`` steps, then
  goes back to the schedule over as many steps. Every reheat is logged with its
  reason. The default factor 10 *raises* beta: what brings the generator's
  diversity back here is a sharper discriminator input, not a softer one. With
  soft input the discriminator tells fake from real by softness alone and the
  generator answers by sharpening its own distribution (collapse); a factor
  below 1 (``0.1``: the temperature of the relaxed samples raised tenfold, the
  literal reheat) makes such drops worse (see docs/apps/textgan.md).

Evaluation: every model (MLE alone and each GAN variant, ``seeds`` seeds each)
samples ``samples`` texts at every sampling temperature of ``temperatures``
(logits divided by it); quality is the 4-gram precision against the held-out
text (the last 10% of the corpus), diversity is distinct-4 (distinct 4-grams
over all 4-grams of the samples). Means over seeds come with 95% t-intervals.

Data: "The Devil's Dictionary" (Bierce, 1911; public domain, shipped in
``gumbelrs/apps/data``) or any UTF-8 text file (``Config.corpus``); lower-cased,
characters outside the alphabet become spaces.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

import gumbelrs
from gumbelrs import schedules

from ._common import (
    AppResult,
    Checkpoint,
    Table,
    check_config,
    progress,
    pyplot,
    require,
    save_figure,
    seeded,
)

ALPHABET = " abcdefghijklmnopqrstuvwxyz.,;'-"
#: The models of a run: a GAN variant name -> its label in the report.
VARIANTS = {
    "soft": "GAN, no reheating",
    "soft_reheat": "GAN with reheating",
    "hard": "GAN, hard ST, no reheating",
    "hard_reheat": "GAN with reheating, hard ST",
}
MLE = "MLE only"
_CORPUS = Path(__file__).parent / "data" / "devils_dictionary.txt.gz"
_EVAL_SEED = 2**31  # evaluation samples draw from their own stream (training seeds are below)


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    #: Path of the UTF-8 text file to learn, or empty for the shipped "The Devil's Dictionary"
    #: (Bierce, 1911). The text is lower-cased, characters outside the alphabet (space, the
    #: letters a to z and the marks .,;'-) become spaces and runs of spaces one; its last 10% is
    #: held out for evaluation. A readable file with at least 10 x (length + 1) characters after
    #: this cleaning.
    corpus: str = ""
    #: Characters per text, of the generated texts and of the windows of real text (pre-training,
    #: the discriminator's real input, the real-text reference). An int >= 1.
    length: int = 24
    #: Units of the generator's GRU (the size of its hidden state). An int >= 1.
    hidden: int = 128
    #: Width of the character embedding (a linear map of the one-hot characters) of the generator
    #: and of the discriminator, whose convolutions have 64 filters of each width 2 to 5.
    #: An int >= 1.
    embed: int = 32
    #: Windows of real text per pre-training step; per GAN step, real windows and generated texts
    #: each, for one discriminator and one generator update. An int >= 1.
    batch: int = 64
    #: Adam steps of maximum-likelihood (teacher-forced) pre-training of each seed's generator at
    #: learning rate lr; every GAN variant starts from its result, which the report also shows as
    #: the model "MLE only". 0 skips it (no "MLE only", the GAN variants start from random
    #: weights). An int >= 0; pretrain_steps + gan_steps must be at least 1.
    pretrain_steps: int = 1000
    #: Adversarial steps of each GAN variant and seed, each one discriminator and one generator
    #: Adam update at learning rate gan_lr, over which beta rises from 1 to beta_max. 0 trains no
    #: GAN (only "MLE only"). An int >= 0.
    gan_steps: int = 400
    #: The GAN variants trained from each seed's pre-trained generator, some of soft (the
    #: discriminator sees the soft samples softmax(beta (o + g)), o the logits and g their Gumbel
    #: noise, and the next input is the one-hot of the sampled token argmax(o + g); RelGAN's),
    #: soft_reheat (soft with the reheater), hard (the discriminator sees the straight-through
    #: one-hot of the sampled token, which is also the next input, fed back with its gradient) and
    #: hard_reheat (hard with the reheater). A name given twice is trained once.
    variants: tuple[str, ...] = ("soft", "soft_reheat", "hard_reheat")
    #: Inverse temperature beta of the Gumbel-Softmax samples (temperature 1 / beta, as in RelGAN)
    #: after the last GAN step; beta rises from 1 at the first GAN step along the schedule. In the
    #: hard variants it shapes only the straight-through gradient. A number > 0 and at least 1;
    #: with 1, beta stays 1.
    beta_max: float = 100.0
    #: How beta goes from 1 to beta_max over the GAN steps, a kind of gumbelrs.schedules.RelGAN,
    #: with n the GAN step, N = gan_steps and f = n / N, one of constant (beta_max throughout),
    #: linear (1 + (beta_max - 1) f), exp (beta_max to the power f), log (1 + (beta_max - 1)
    #: log(1 + n) / log(1 + N)), sigmoid (1 + (beta_max - 1) / (1 + exp(10 - 20 f))), quad (1 +
    #: (beta_max - 1) f^2) or sqrt (1 + (beta_max - 1) sqrt(f)).
    schedule: str = "exp"
    #: (soft_reheat, hard_reheat) the reheater fires when distinct-4 (distinct 4-grams over all
    #: 4-grams) of the monitor's texts (as many as samples, at sampling temperature 1) falls below
    #: it, at a monitored GAN step (every monitor_every steps, not after the last) at least 2 x
    #: reheat_hold steps after its previous reheat. Distinct-4 is lower for more texts; the
    #: report's "held-out text" row gives real text's for as many. A number in (0, 1).
    reheat_threshold: float = 0.55
    #: (soft_reheat, hard_reheat) on a reheat, beta is multiplied by this factor for reheat_hold
    #: GAN steps, then goes back to the schedule over as many steps (its temperature linearly).
    #: Above 1 the discriminator's input gets sharper, which brings the generator's diversity back
    #: here; below 1 it gets softer (0.1 raises the temperature tenfold, the literal reheat), which
    #: makes such drops worse. A number > 0 other than 1.
    reheat_beta_factor: float = 10.0
    #: (soft_reheat, hard_reheat) GAN steps for which a reheat holds beta at reheat_beta_factor
    #: times the schedule's; beta then goes back to the schedule over as many steps, and the next
    #: reheat can come 2 x reheat_hold steps after this one. With 0 a reheat changes nothing (it
    #: is still logged). An int >= 0.
    reheat_hold: int = 100
    #: Steps between two measurements of the monitor in pre-training and in GAN training, also
    #: taken after each phase's last step. Each generates as many texts as samples at sampling
    #: temperature 1 and logs their distinct-4, 4-gram precision, character entropy and bigram
    #: divergence with beta and the losses; in GAN training it drives the reheater, which can thus
    #: fire only every monitor_every steps. An int >= 1.
    monitor_every: int = 50
    #: Adam learning rate of maximum-likelihood pre-training (Adam's betas 0.5 and 0.999).
    #: A number > 0.
    lr: float = 1e-3
    #: Adam learning rate of the generator and the discriminator in GAN training (Adam's betas 0.5
    #: and 0.999; the generator gets a fresh optimizer). At RelGAN's 1e-4 the generator never
    #: collapses here. A number > 0.
    gan_lr: float = 1e-3
    #: Texts generated for each measurement of quality and diversity, the monitor's and each
    #: point of the quality-diversity curves; the real-text reference measures as many windows of
    #: held-out and of training text. An int >= 1.
    samples: int = 200
    #: The sampling temperatures T of the quality-diversity curves (the generator's logits
    #: divided by T, then sampled exactly); every model generates as many texts as samples at each
    #: and at 1, from an evaluation stream that is the same for every model of a seed. A
    #: non-empty tuple of finite numbers > 0.
    temperatures: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5)
    #: Seeds per model. Each seed pre-trains its own generator and trains every variant from it;
    #: the tables give the mean with its 95% Student t-interval over seeds and count the seeds
    #: that collapsed (final distinct-4 at sampling temperature 1 below half the held-out
    #: text's). An int >= 1.
    seeds: int = 5
    #: Base seed. Seed s of the seeds uses seed + s for the initial weights, the windows of real
    #: text and the Gumbel noise (its evaluation samples use their own stream, 2^31 + seed + s).
    #: An int in [0, 2^31).
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("textgan", self, counts=("length", "hidden", "embed", "batch",
                                              "monitor_every", "samples", "seeds"),
                     maybe_zero=("pretrain_steps", "gan_steps", "reheat_hold", "seed"),
                     positive=("beta_max", "reheat_beta_factor", "lr", "gan_lr"),
                     fractions=("reheat_threshold",),
                     choices={"schedule": schedules.RelGAN.KINDS, "variants": tuple(VARIANTS)})
        t = self.temperatures
        if not (isinstance(t, tuple) and t and all(
                isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in t)):
            raise ValueError(f"textgan: temperatures must be a non-empty tuple of finite "
                             f"numbers > 0, got {t!r}")
        if self.beta_max < 1:
            raise ValueError(f"textgan: beta_max must be >= 1, got {self.beta_max!r}")
        if self.reheat_beta_factor == 1:
            raise ValueError("textgan: reheat_beta_factor must not be 1 (beta would never "
                             "change), got 1.0")
        if self.corpus and not Path(self.corpus).is_file():
            raise ValueError(f"textgan: corpus {self.corpus!r} is not a readable file")
        if self.pretrain_steps + self.gan_steps < 1:
            raise ValueError("textgan: pretrain_steps + gan_steps must be >= 1, got 0")
        need = 10 * (self.length + 1)  # the held-out tenth must hold a window
        if self.corpus and len(load_text(self.corpus)) < need:
            raise ValueError(f"textgan: corpus {self.corpus!r} has "
                             f"{len(load_text(self.corpus))} usable characters; it needs at least "
                             f"{need} (10 x (length + 1))")

    @classmethod
    def quick(cls) -> Config:
        """One seed of a shorter run (the demo)."""
        return cls(pretrain_steps=500, gan_steps=400, samples=100, seeds=1,
                   temperatures=(0.5, 0.75, 1.0, 1.5))

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(pretrain_steps=5, gan_steps=10, monitor_every=5, samples=10, batch=8, seeds=2,
                   temperatures=(0.7, 1.0))


@functools.lru_cache(maxsize=4)
def load_text(path: str = "") -> str:
    """The corpus, lower-cased, outside-alphabet characters and runs of white
    space collapsed to single spaces."""
    raw = (gzip.decompress(_CORPUS.read_bytes()).decode("utf-8") if not path
           else Path(path).read_text(encoding="utf-8", errors="replace"))
    kept = "".join(c if c in ALPHABET else " " for c in raw.lower())
    return " ".join(kept.split())


def encode(text: str) -> torch.Tensor:
    return torch.tensor([ALPHABET.index(c) for c in text])


def decode(x: torch.Tensor) -> list[str]:
    """Strings of one-hot (or relaxed) sequences ``(n, length, vocab)``."""
    return ["".join(ALPHABET[i] for i in row) for row in x.argmax(-1).tolist()]


def windows(ids: torch.Tensor, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random windows of ``length`` characters, as one-hot ``(n, length, vocab)``."""
    first = torch.randint(0, len(ids) - length + 1, (n,), generator=generator)
    idx = ids[first[:, None] + torch.arange(length)]
    return nn.functional.one_hot(idx, len(ALPHABET)).float()


# -- metrics -----------------------------------------------------------------

def ngrams(texts: list[str], n: int) -> Counter:
    return Counter(t[i:i + n] for t in texts for i in range(len(t) - n + 1))


def distinct(texts: list[str], n: int = 4) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (1: no repetition)."""
    grams = ngrams(texts, n)
    return len(grams) / max(1, sum(grams.values()))


def char_entropy(texts: list[str]) -> float:
    """Entropy (nats) of the character distribution of ``texts``."""
    counts = torch.tensor(list(ngrams(texts, 1).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def bigram_js(texts: list[str], reference: Counter) -> float:
    """Jensen-Shannon divergence (nats) between the character-bigram
    distributions of ``texts`` and of ``reference`` (bigram counts)."""
    ours = ngrams(texts, 2)
    keys = sorted(set(ours) | set(reference))
    p = torch.tensor([ours[k] for k in keys], dtype=torch.float64)
    q = torch.tensor([reference[k] for k in keys], dtype=torch.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        mask = a > 0
        return float((a[mask] * (a[mask] / m[mask]).log()).sum())

    return (kl(p) + kl(q)) / 2


def precision4(texts: list[str], reference: set[str]) -> float:
    """Fraction of the 4-grams of ``texts`` that occur in the reference text."""
    grams = ngrams(texts, 4)
    return sum(c for g, c in grams.items() if g in reference) / max(1, sum(grams.values()))


def soft_entropy(y: torch.Tensor) -> float:
    """Mean entropy (nats) of the categorical vectors ``y`` ``(..., vocab)``:
    0 for one-hots, ``log(vocab)`` for uniform ones."""
    y = y.detach().double()
    return float(-(y * y.clamp_min(1e-300).log()).sum(-1).mean())


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean of ``values`` and the half-width of its ``level`` Student t
    confidence interval (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = require("scipy.stats", "textgan").t.ppf((1 + level) / 2, n - 1)
    return mean, float(t * sd / math.sqrt(n))


def at_diversity(curve: Sequence[tuple[float, float]], diversity: float) -> float | None:
    """The quality of a curve of ``(diversity, quality)`` points (any order) at
    ``diversity``, linearly interpolated between the two nearest points on
    either side; None when the curve does not reach it."""
    pts = sorted(curve)
    for (d0, q0), (d1, q1) in zip(pts, pts[1:]):
        if d0 <= diversity <= d1:
            return q0 if d1 == d0 else q0 + (q1 - q0) * (diversity - d0) / (d1 - d0)
    return None


# -- models ------------------------------------------------------------------

class TextGenerator(nn.Module):
    """A GRU whose next input is its own sampled token."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Linear(vocab, embed, bias=False)  # reads one-hot input
        self.cell = nn.GRUCell(embed, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.h0 = nn.Parameter(torch.zeros(hidden))
        self.vocab = vocab

    def forward(self, n: int, length: int, tau: float, hard: bool,
                generator: gumbelrs.Generator,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences: the samples the discriminator sees ``(n, length,
        vocab)`` and the tokens ``(n, length)``. Each token is ``argmax(o + g)``
        (``o`` the logits divided by the sampling ``temperature``, ``g`` Gumbel
        noise). ``hard=False``: the discriminator sees ``softmax((o + g) /
        tau)`` and the next input is the token's one-hot (no gradient);
        ``hard=True``: both are the straight-through one-hot (``tau`` shapes
        only its gradient)."""
        h = self.h0.expand(n, -1)
        x = torch.zeros(n, self.vocab)
        ys, tokens = [], []
        for _ in range(length):
            h = self.cell(self.embed(x), h)
            y = gumbelrs.gumbel_softmax(self.out(h) / temperature, tau, hard=hard,
                                        generator=generator)
            token = y.detach().argmax(-1)
            ys.append(y)
            tokens.append(token)
            x = y if hard else nn.functional.one_hot(token, self.vocab).to(y.dtype)
        return torch.stack(ys, 1), torch.stack(tokens, 1)

    def nll(self, real: torch.Tensor) -> torch.Tensor:
        """Teacher-forced negative log-likelihood per character (MLE)."""
        n, length, _ = real.shape
        h = self.h0.expand(n, -1)
        x = torch.zeros(n, self.vocab)
        total = 0.0
        for t in range(length):
            h = self.cell(self.embed(x), h)
            total = total - (self.out(h).log_softmax(-1) * real[:, t]).sum(-1).mean()
            x = real[:, t]
        return total / length


class Discriminator(nn.Module):
    """Embedding, convolutions of widths 2 to 5, max-pool, linear score."""

    def __init__(self, vocab: int, embed: int, filters: int = 64):
        super().__init__()
        self.embed = nn.Linear(vocab, embed, bias=False)
        self.convs = nn.ModuleList(nn.Conv1d(embed, filters, w) for w in (2, 3, 4, 5))
        self.head = nn.Linear(4 * filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embed(x).transpose(1, 2)
        h = torch.cat([torch.relu(c(e)).amax(-1) for c in self.convs], -1)
        return self.head(h).squeeze(-1)


def rsgan_losses(d_real: torch.Tensor, d_fake: torch.Tensor):
    """RelGAN's relativistic standard GAN losses (discriminator, generator)."""
    bce = nn.functional.binary_cross_entropy_with_logits
    ones = torch.ones_like(d_real)
    return bce(d_real - d_fake, ones), bce(d_fake - d_real, ones)


def make_schedule(config: Config, reheat: bool) -> schedules.Schedule:
    """RelGAN's schedule (temperature 1 / beta), wrapped in a Reheater when
    ``reheat`` (beta times ``reheat_beta_factor``: the temperature divided by it)."""
    base = schedules.RelGAN(config.schedule, config.beta_max, max(1, config.gan_steps))
    if not reheat:
        return base
    return schedules.Reheater(base, threshold=config.reheat_threshold,
                              boost=1 / config.reheat_beta_factor, hold=config.reheat_hold,
                              release=config.reheat_hold, cooldown=2 * config.reheat_hold)


class TextGAN:
    """Models, optimizers, schedule and log of one run: one seed, one variant
    (``"mle"`` for pre-training, or a key of :data:`VARIANTS`)."""

    def __init__(self, config: Config, seed: int | None = None, variant: str = "soft"):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.hard = variant.startswith("hard")
        self.text = load_text(config.corpus)
        ids = encode(self.text)
        cut = len(ids) * 9 // 10
        self.train_ids, self.held_ids = ids[:cut], ids[cut:]
        held = self.text[cut:]
        self.held_bigrams = ngrams([held], 2)
        self.held_4grams = set(ngrams([held], 4))
        self.rng = seeded(self.seed)
        self.batches = torch.Generator().manual_seed(self.seed)
        v = len(ALPHABET)
        self.gen = TextGenerator(v, config.embed, config.hidden)
        self.dis = Discriminator(v, config.embed)
        self.g_opt = torch.optim.Adam(self.gen.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.dis.parameters(), lr=config.gan_lr,
                                      betas=(0.5, 0.999))
        self.tau = make_schedule(config, variant.endswith("reheat"))
        self.step = 0
        self.log: list[dict] = []

    def start_adversarial(self, pretrained: dict | None) -> None:
        """The generator from maximum-likelihood pre-training (if any), with a
        fresh optimizer at the adversarial learning rate."""
        if pretrained is not None:
            self.gen.load_state_dict(pretrained)
        self.g_opt = torch.optim.Adam(self.gen.parameters(), lr=self.config.gan_lr,
                                      betas=(0.5, 0.999))

    # -- measuring
    def measure_texts(self, texts: list[str]) -> dict[str, float]:
        return {"distinct4": distinct(texts), "entropy": char_entropy(texts),
                "bigram_js": bigram_js(texts, self.held_bigrams),
                "precision4": precision4(texts, self.held_4grams)}

    def sample(self, n: int, temperature: float = 1.0,
               generator: gumbelrs.Generator | None = None) -> list[str]:
        """``n`` texts sampled at the sampling ``temperature``."""
        with torch.no_grad():
            _, tokens = self.gen(n, self.config.length, 1.0, True, generator or self.rng,
                                 temperature)
        return ["".join(ALPHABET[i] for i in row) for row in tokens.tolist()]

    def curve(self) -> dict[str, dict[str, float]]:
        """Quality and diversity of ``samples`` texts at each sampling
        temperature and at 1 (each from the same random stream, the same for
        every model of a seed)."""
        return {f"{t:g}": self.measure_texts(self.sample(
            self.config.samples, t, gumbelrs.Generator(_EVAL_SEED + self.seed)))
            for t in sorted({*self.config.temperatures, 1.0})}

    def monitor(self, phase: str, seen: torch.Tensor | None = None, last: bool = False) -> dict:
        """Diversity and quality of samples at sampling temperature 1, the
        inverse temperature and the entropy of what the discriminator saw
        (``seen``); in the GAN phase it drives the reheater (except after the
        ``last`` step, when no step would use it), and a reheat is logged with
        its reason."""
        tau = self.tau.tau if phase == "gan" else 1.0
        m = {"step": self.step, "phase": phase, "beta": 1.0 / tau,
             **self.measure_texts(self.sample(self.config.samples))}
        if seen is not None:
            m["seen_entropy"] = soft_entropy(seen)
        if phase == "gan" and isinstance(self.tau, schedules.Reheater) and not last:
            if self.tau.observe(m["distinct4"]):
                event = self.tau.events[-1]
                m["reheat"] = (f"step {self.step}: {event['reason']}; beta "
                               f"{1 / event['tau_before']:.4g} -> {1 / event['tau_after']:.4g}")
        self.log.append(m)
        return m

    # -- training
    def pretrain_step(self) -> float:
        real = windows(self.train_ids, self.config.batch, self.config.length, self.batches)
        loss = self.gen.nll(real)
        self.g_opt.zero_grad()
        loss.backward()
        self.g_opt.step()
        return float(loss.detach())

    def gan_step(self) -> tuple[float, float, torch.Tensor]:
        """One discriminator and one generator update; returns both losses and
        the samples the discriminator saw."""
        c = self.config
        real = windows(self.train_ids, c.batch, c.length, self.batches)
        fake, _ = self.gen(c.batch, c.length, self.tau.tau, self.hard, self.rng)
        d_loss, _ = rsgan_losses(self.dis(real), self.dis(fake.detach()))
        self.d_opt.zero_grad()
        d_loss.backward()
        self.d_opt.step()
        _, g_loss = rsgan_losses(self.dis(real), self.dis(fake))
        self.g_opt.zero_grad()
        g_loss.backward()
        self.g_opt.step()
        self.tau.step()
        return float(d_loss.detach()), float(g_loss.detach()), fake.detach()

    def train(self, phase: str, steps: int, show: bool) -> None:
        """``steps`` steps of ``"pretrain"`` or ``"gan"``, monitored every
        ``monitor_every`` steps and at the end."""
        for i in progress(range(steps), steps, f"textgan {phase} seed {self.seed}", show):
            seen = None
            if phase == "pretrain":
                losses: tuple = (self.pretrain_step(),)
            else:
                *losses, seen = self.gan_step()
            self.step += 1
            if (i + 1) % self.config.monitor_every == 0 or i + 1 == steps:
                self.monitor(phase, seen, last=i + 1 == steps)["losses"] = tuple(losses)


# -- units of a run (one seed x one model; picklable arguments and results) ---

def pretrain_unit(config: Config, seed: int, show: bool) -> dict:
    """Maximum-likelihood pre-training of seed ``seed``: the generator's
    weights, its log and its quality-diversity curve."""
    gan = TextGAN(config, seed, "mle")
    gan.train("pretrain", config.pretrain_steps, show)
    return {"gen": {k: v.clone() for k, v in gan.gen.state_dict().items()}, "log": gan.log,
            "curve": gan.curve(), "samples": _samples(gan)}


def gan_unit(config: Config, seed: int, variant: str, pretrained: dict | None,
             show: bool) -> dict:
    """Adversarial training of one variant from the pre-trained generator
    (None: from scratch): its log, reheats and quality-diversity curve."""
    gan = TextGAN(config, seed, variant)
    gan.start_adversarial(pretrained)
    gan.train("gan", config.gan_steps, show)
    return {"log": gan.log, "curve": gan.curve(), "samples": _samples(gan),
            "events": [f"GAN step {e['step']}: {e['reason']}; beta {1 / e['tau_before']:.3g}"
                       f" -> {1 / e['tau_after']:.3g}" for e in getattr(gan.tau, "events", [])]}


def _samples(gan: TextGAN) -> dict[str, list[str]]:
    rng = gumbelrs.Generator(_EVAL_SEED + gan.seed)
    return {f"{t:g}": gan.sample(3, t, rng) for t in (1.0, 0.7)}


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Pre-trains ``config.seeds`` generators, trains every GAN variant from
    each, and compares their quality-diversity curves with maximum likelihood
    alone; writes the curves and the temperature/diversity plot."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    seeds = [config.seed + s for s in range(config.seeds)]
    pretrained = {s: None for s in seeds}
    runs: dict[str, list[dict]] = {}
    if config.pretrain_steps:
        runs[MLE] = ckpt.map([(f"mle/{s}", pretrain_unit, (config, s, show)) for s in seeds],
                             show, "MLE pre-training")
        pretrained = {s: r["gen"] for s, r in zip(seeds, runs[MLE])}
    if config.gan_steps:
        variants = list(dict.fromkeys(config.variants))
        done = ckpt.map([(f"gan/{v}/{s}", gan_unit, (config, s, v, pretrained[s], show))
                         for v in variants for s in seeds], show, "GAN training")
        for i, v in enumerate(variants):
            runs[VARIANTS[v]] = done[i * len(seeds):(i + 1) * len(seeds)]
    return _report(config, seeds, runs, out)


# -- report --------------------------------------------------------------------

def _ci(values: Sequence[float]) -> dict:
    mean, half = t_interval(values)
    return {"mean": mean, "ci95": half, "values": list(values)}


def _fmt(stat: dict) -> str:
    return (f"{stat['mean']:.3f}" if stat["ci95"] is None
            else f"{stat['mean']:.3f} ± {stat['ci95']:.3f}")


def _reference(config: Config) -> dict[str, dict[str, float]]:
    """Held-out and training windows measured like generated samples (the
    held-out text's distinct-4 is the diversity of real text at this sample
    size; the training text's 4-gram precision the quality of real text)."""
    gan = TextGAN(config)
    cut = torch.Generator().manual_seed(1)
    return {name: gan.measure_texts(decode(windows(ids, config.samples, config.length, cut)))
            for name, ids in (("held-out text", gan.held_ids), ("training text", gan.train_ids))}


def _report(config: Config, seeds: list[int], runs: dict[str, list[dict]],
            out: Path | None) -> AppResult:
    ref = _reference(config)
    held_d4 = ref["held-out text"]["distinct4"]
    n = len(seeds)
    metrics: dict = {"config": dataclasses.asdict(config), "reference": ref,
                     "collapse_threshold": held_d4 / 2}
    result = AppResult("textgan", metrics, heading="Text GAN: RelGAN's soft Gumbel-Softmax "
                                                    "samples, annealing and reheating")
    corpus = config.corpus or "The Devil's Dictionary (Bierce, 1911)"
    result.text = (
        f"Character GRU generator ({config.hidden}) and CNN discriminator with RelGAN's "
        f"relativistic loss; {config.pretrain_steps} MLE pre-training steps, then "
        f"{config.gan_steps} GAN steps (Adam, lr {config.gan_lr}) in which the discriminator "
        f"sees soft samples softmax(beta (o + g)) (hard ST: straight-through one-hots) and the "
        f"next input is the sampled token; beta rises from 1 to {config.beta_max:g} along "
        f"RelGAN's '{config.schedule}' schedule; the reheater multiplies beta by "
        f"{config.reheat_beta_factor:g} for {config.reheat_hold} steps when distinct-4 of "
        f"{config.samples} samples falls below {config.reheat_threshold}. Corpus: {corpus}, "
        f"last 10% held out. Each model samples {config.samples} texts of {config.length} "
        f"characters at every sampling temperature (logits / T); quality is 4-gram precision "
        f"against the held-out text, diversity distinct-4; mean ± 95% t-interval over {n} "
        f"seed{'s' if n > 1 else ''}. A seed counts as collapsed when its final distinct-4 (T = 1) "
        f"is below half the held-out text's ({held_d4 / 2:.3f}).")
    final_rows = [(name, "", f"{r['bigram_js']:.3f}", f"{r['precision4']:.3f}",
                   f"{r['distinct4']:.3f}", "", "") for name, r in ref.items()]
    curve_rows, matched_rows, during_rows = [], [], []
    temps = [f"{t:g}" for t in config.temperatures]
    for name, rs in runs.items():
        finals = [r["curve"]["1"] for r in rs]
        stats = {k: _ci([f[k] for f in finals]) for k in ("bigram_js", "precision4",
                                                          "distinct4", "entropy")}
        collapsed = sum(f["distinct4"] < held_d4 / 2 for f in finals)
        reheats = [len(r.get("events", [])) for r in rs]
        curve = {t: {k: _ci([r["curve"][t][k] for r in rs]) for k in ("precision4", "distinct4")}
                 for t in temps}
        matched = [at_diversity([(c["distinct4"], c["precision4"]) for c in r["curve"].values()],
                                held_d4) for r in rs]
        reached = [q for q in matched if q is not None]
        during = {f"{m['step']}": _ci([r["log"][k]["distinct4"] for r in rs])
                  for k, m in enumerate(rs[0]["log"]) if m["phase"] == "gan"}
        metrics[name] = {"final": stats, "collapsed_seeds": collapsed, "reheats": reheats,
                         "curve": curve, "precision4_at_held_out_diversity": matched,
                         "events": [r.get("events", []) for r in rs]}
        if during:
            metrics[name]["distinct4_during_gan"] = during
            during_rows += [(name, step, _fmt(stat)) for step, stat in during.items()]
        final_rows.append((name, f"{n}", _fmt(stats["bigram_js"]), _fmt(stats["precision4"]),
                           _fmt(stats["distinct4"]), f"{collapsed}/{n}",
                           f"{sum(reheats) / n:.1f}" if "events" in rs[0] else ""))
        curve_rows += [(name, t, _fmt(curve[t]["precision4"]), _fmt(curve[t]["distinct4"]))
                       for t in temps]
        matched_rows.append((name, f"{len(reached)}/{n}",
                             _fmt(_ci(reached)) if reached else "not reached"))
    result.tables[f"Final models at sampling temperature 1 (mean ± 95% CI over {n} seeds)"] = (
        Table(("model", "seeds", "bigram JS (↓)", "4-gram precision", "distinct-4",
               "collapsed seeds", "reheats per run"), final_rows))
    result.tables["Quality-diversity curve: 4-gram precision and distinct-4 at each sampling "
                  "temperature T"] = Table(("model", "T", "4-gram precision", "distinct-4"),
                                           curve_rows)
    result.tables[f"4-gram precision at the held-out text's diversity (distinct-4 "
                  f"{held_d4:.3f}), interpolated on each seed's curve"] = Table(
        ("model", "seeds whose curve reaches it", "4-gram precision"), matched_rows)
    if during_rows:
        result.tables["Diversity during GAN training: distinct-4 of the monitor's samples "
                      "(T = 1) at each GAN step"] = Table(("model", "GAN step", "distinct-4"),
                                                          during_rows)
    result.tables[f"Samples (seed {seeds[0]})"] = Table(
        ("model", "T", "sample"), [(name, t, f"'{s}'") for name, rs in runs.items()
                                   for t, ss in rs[0]["samples"].items() for s in ss[:2]])
    events = [(name, seeds[i], e) for name, rs in runs.items() for i, r in enumerate(rs)
              for e in r.get("events", [])[:3]]
    if events:
        result.tables["Reheats (the first three of each run)"] = Table(("model", "seed",
                                                                        "event"), events)
    _plot_curves(result, config, ref, runs, out)
    _plot_training(result, config, runs, out)
    return result


def _plot_curves(result: AppResult, config: Config, ref: dict, runs: dict[str, list[dict]],
                 out: Path | None) -> None:
    plt = pyplot("textgan")
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4))
    temps = [f"{t:g}" for t in config.temperatures]
    for name, rs in runs.items():
        q = [_ci([r["curve"][t]["precision4"] for r in rs]) for t in temps]
        d = [_ci([r["curve"][t]["distinct4"] for r in rs]) for t in temps]
        for ax, stat in ((a1, q), (a2, d)):
            mean = [s["mean"] for s in stat]
            line, = ax.plot(config.temperatures, mean, marker="o", ms=3, label=name)
            if len(rs) > 1:
                ax.fill_between(config.temperatures, [m - s["ci95"] for m, s in zip(mean, stat)],
                                [m + s["ci95"] for m, s in zip(mean, stat)],
                                color=line.get_color(), alpha=0.2)
        a3.errorbar([s["mean"] for s in d], [s["mean"] for s in q], marker="o", ms=3,
                    xerr=[s["ci95"] or 0.0 for s in d], yerr=[s["ci95"] or 0.0 for s in q],
                    capsize=2, label=name)
    held, train = ref["held-out text"], ref["training text"]
    a2.axhline(held["distinct4"], color="k", ls="--", lw=1, label="held-out text")
    a2.axhline(held["distinct4"] / 2, color="grey", ls=":", lw=1, label="collapse (half)")
    a1.axhline(train["precision4"], color="k", ls="--", lw=1, label="training text")
    a3.plot([held["distinct4"]], [train["precision4"]], "k*", ms=10, label="real text")
    a1.set(xlabel="sampling temperature T", ylabel="4-gram precision (quality)",
           title="Quality")
    a2.set(xlabel="sampling temperature T", ylabel="distinct-4 (diversity)", title="Diversity")
    a3.set(xlabel="distinct-4 (diversity)", ylabel="4-gram precision (quality)",
           title="Quality against diversity (T varies)")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7)
    path = save_figure(fig, out, "textgan_curves.png")
    if path is not None:
        result.figures["Quality and diversity over sampling temperatures (mean over seeds, "
                       "95% CI)"] = path


def _plot_training(result: AppResult, config: Config, runs: dict[str, list[dict]],
                   out: Path | None) -> None:
    plt = pyplot("textgan")
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(6.5, 7), sharex=True)
    for name, rs in runs.items():
        gan = [m for m in rs[0]["log"] if m["phase"] == "gan"]
        if not gan:
            continue
        steps = [m["step"] for m in gan]
        a1.plot(steps, [m["beta"] for m in gan], label=name)
        a2.plot(steps, [m["seen_entropy"] for m in gan], label=name)
        a3.plot(steps, [m["distinct4"] for m in gan], label=name)
    a3.axhline(config.reheat_threshold, color="grey", ls=":", lw=1, label="reheat threshold")
    a1.set_yscale("log")
    a1.set_ylabel("inverse temperature beta")
    a2.set_ylabel("entropy of D's input (nats)")
    a3.set_ylabel("distinct-4 of samples")
    a3.set_xlabel("GAN step")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7)
    a1.set_title(f"Annealing and reheating during GAN training (seed {config.seed})")
    path = save_figure(fig, out, "textgan_temperature.png")
    if path is not None:
        result.figures["Inverse temperature, softness of the discriminator's input and "
                       "diversity over GAN training"] = path
