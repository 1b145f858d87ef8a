"""A character-level text GAN trained through Gumbel-Softmax samples, with
temperature annealing and reheating when diversity collapses (RelGAN-style).

- Generator: a GRU that emits each character as a Gumbel-Softmax relaxed
  one-hot (``hard=True``: exact one-hot with the straight-through gradient) and
  reads it back as its next input; optional maximum-likelihood pre-training.
- Discriminator: a CNN over one-hot sequences (real) or relaxed ones
  (generated), so its gradient reaches every sampling step of the generator;
  the relativistic standard GAN loss of RelGAN.
- Temperature: any :mod:`gumbelrs.schedules` schedule (default RelGAN's
  exponential inverse temperature ``beta_max ** (t / T)``), wrapped in a
  :class:`gumbelrs.schedules.Reheater` that a diversity monitor (distinct
  4-grams and character entropy of generated text, every ``monitor_every``
  steps) drives: when distinct-4 falls below ``reheat_threshold`` the
  temperature is raised for a while, then annealing resumes. Every change is
  logged with its reason.

Data: "The Devil's Dictionary" (Bierce, 1911; public domain, shipped in
``gumbelrs/apps/data``) or any UTF-8 text file (``Config.corpus``); lower-cased,
characters outside the alphabet become spaces. Metrics against held-out text
(the last 10%): Jensen-Shannon divergence of character-bigram distributions,
4-gram precision (the fraction of generated 4-grams found in held-out text,
quality) and distinct-4 (diversity).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
from collections import Counter
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
    save_figure,
    seeded,
)

ALPHABET = " abcdefghijklmnopqrstuvwxyz.,;'-"
#: Sampling temperatures (logits divided by them) of the samples in the report.
SAMPLING = (1.0, 0.7, 0.4)
_CORPUS = Path(__file__).parent / "data" / "devils_dictionary.txt.gz"


@dataclasses.dataclass
class Config:
    """Everything a run depends on (the defaults are the documented run)."""

    corpus: str = ""  # a text file; empty: the shipped Devil's Dictionary
    length: int = 24
    hidden: int = 128
    embed: int = 32
    batch: int = 64
    pretrain_steps: int = 1500
    gan_steps: int = 2000
    hard: bool = True
    beta_max: float = 100.0  # RelGAN: tau = 1 / beta, beta = beta_max ** (t / T)
    schedule: str = "exp"
    reheat: bool = True
    reheat_threshold: float = 0.55
    reheat_boost: float = 4.0
    reheat_hold: int = 100
    monitor_every: int = 50
    lr: float = 1e-3
    samples: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        check_config("textgan", self, counts=("length", "hidden", "embed", "batch",
                                              "monitor_every", "samples"),
                     maybe_zero=("pretrain_steps", "gan_steps", "reheat_hold", "seed"),
                     positive=("beta_max", "reheat_boost", "lr"),
                     fractions=("reheat_threshold",),
                     choices={"schedule": schedules.RelGAN.KINDS})
        if self.beta_max < 1:
            raise ValueError(f"textgan: beta_max must be >= 1, got {self.beta_max!r}")
        if self.reheat_boost <= 1:
            raise ValueError(f"textgan: reheat_boost must be > 1, got {self.reheat_boost!r}")
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
        """A run of about a minute on two cores."""
        return cls(pretrain_steps=500, gan_steps=600, samples=100)

    @classmethod
    def tiny(cls) -> Config:
        """A smoke test of the pipeline (seconds)."""
        return cls(pretrain_steps=5, gan_steps=10, monitor_every=5, samples=10, batch=8)


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


# -- models ------------------------------------------------------------------

class TextGenerator(nn.Module):
    """A GRU that feeds back its own Gumbel-Softmax samples."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Linear(vocab, embed, bias=False)  # reads one-hot or relaxed input
        self.cell = nn.GRUCell(embed, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.h0 = nn.Parameter(torch.zeros(hidden))
        self.vocab = vocab

    def forward(self, n: int, length: int, tau: float, hard: bool,
                generator: gumbelrs.Generator, temperature: float = 1.0) -> torch.Tensor:
        """``n`` sequences ``(n, length, vocab)``; the first character is sampled
        from the learned initial state. ``tau`` is the Gumbel-Softmax temperature
        (it shapes the relaxed sample and the gradient; the hard sample does not
        depend on it); ``temperature`` divides the logits (sampling temperature:
        below 1 sharper, above 1 flatter)."""
        h = self.h0.expand(n, -1)
        x = torch.zeros(n, self.vocab)
        ys = []
        for _ in range(length):
            h = self.cell(self.embed(x), h)
            y = gumbelrs.gumbel_softmax(self.out(h) / temperature, tau, hard=hard,
                                        generator=generator)
            ys.append(y)
            x = y
        return torch.stack(ys, 1)

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


def make_schedule(config: Config) -> schedules.Schedule:
    """RelGAN's schedule, wrapped in a Reheater when ``config.reheat``."""
    base = schedules.RelGAN(config.schedule, config.beta_max, max(1, config.gan_steps))
    if not config.reheat:
        return base
    return schedules.Reheater(base, threshold=config.reheat_threshold, boost=config.reheat_boost,
                              hold=config.reheat_hold, release=config.reheat_hold,
                              cooldown=2 * config.reheat_hold)


class TextGAN:
    """Models, optimizers, schedule and logs of one run (checkpointable)."""

    def __init__(self, config: Config):
        self.config = config
        self.text = load_text(config.corpus)
        ids = encode(self.text)
        cut = len(ids) * 9 // 10
        self.train_ids, self.held_ids = ids[:cut], ids[cut:]
        held = self.text[cut:]
        self.held_bigrams = ngrams([held], 2)
        self.held_4grams = set(ngrams([held], 4))
        self.rng = seeded(config.seed)
        self.batches = torch.Generator().manual_seed(config.seed)
        v = len(ALPHABET)
        self.gen = TextGenerator(v, config.embed, config.hidden)
        self.dis = Discriminator(v, config.embed)
        self.g_opt = torch.optim.Adam(self.gen.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.dis.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.tau = make_schedule(config)
        self.step = 0  # pre-training steps, then GAN steps
        self.log: list[dict] = []
        self.reference = self.measure_texts(decode(windows(
            self.held_ids, config.samples, config.length, torch.Generator().manual_seed(1))))

    # -- checkpoint
    def state(self) -> dict:
        return {"gen": self.gen.state_dict(), "dis": self.dis.state_dict(),
                "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict(),
                "tau": self.tau.state_dict(), "rng": self.rng.get_state(),
                "batches": self.batches.get_state(), "step": self.step, "log": self.log}

    def load(self, s: dict, pretrained_only: bool = False) -> None:
        """Restores a :meth:`state`; ``pretrained_only`` takes just the generator
        after maximum-likelihood pre-training (a GAN run starts from it)."""
        self.gen.load_state_dict(s["gen"])
        self.g_opt.load_state_dict(s["g_opt"])
        self.rng.set_state(s["rng"])
        self.batches.set_state(s["batches"])
        self.step, self.log = s["step"], list(s["log"])
        if not pretrained_only:
            self.dis.load_state_dict(s["dis"])
            self.d_opt.load_state_dict(s["d_opt"])
            self.tau.load_state_dict(s["tau"])

    # -- measuring
    def measure_texts(self, texts: list[str]) -> dict[str, float]:
        return {"distinct4": distinct(texts), "entropy": char_entropy(texts),
                "bigram_js": bigram_js(texts, self.held_bigrams),
                "precision4": precision4(texts, self.held_4grams)}

    def sample(self, n: int, tau: float, temperature: float = 1.0) -> list[str]:
        with torch.no_grad():
            return decode(self.gen(n, self.config.length, tau, True, self.rng, temperature))

    def monitor(self, phase: str) -> dict:
        """Diversity and quality of samples at the current temperature; in the
        GAN phase it drives the reheater, and a reheat is logged with its reason."""
        tau = self.tau.tau if phase == "gan" else 1.0
        m = {"step": self.step, "phase": phase, "tau": tau,
             **self.measure_texts(self.sample(self.config.samples, tau))}
        if phase == "gan" and isinstance(self.tau, schedules.Reheater):
            if self.tau.observe(m["distinct4"]):
                event = self.tau.events[-1]
                m["reheat"] = (f"step {self.step}: {event['reason']}; tau "
                               f"{event['tau_before']:.4g} -> {event['tau_after']:.4g}")
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

    def gan_step(self) -> tuple[float, float]:
        c = self.config
        tau = self.tau.tau
        real = windows(self.train_ids, c.batch, c.length, self.batches)
        fake = self.gen(c.batch, c.length, tau, c.hard, self.rng)
        d_loss, _ = rsgan_losses(self.dis(real), self.dis(fake.detach()))
        self.d_opt.zero_grad()
        d_loss.backward()
        self.d_opt.step()
        _, g_loss = rsgan_losses(self.dis(real), self.dis(fake))
        self.g_opt.zero_grad()
        g_loss.backward()
        self.g_opt.step()
        self.tau.step()
        return float(d_loss.detach()), float(g_loss.detach())

    def train(self, show: bool, checkpoint: Checkpoint | None = None) -> None:
        c = self.config
        total = c.pretrain_steps + c.gan_steps
        for _ in progress(range(self.step, total), total - self.step, "textgan", show):
            phase = "pretrain" if self.step < c.pretrain_steps else "gan"
            losses = (self.pretrain_step(),) if phase == "pretrain" else self.gan_step()
            self.step += 1
            if self.step % c.monitor_every == 0 or self.step in (c.pretrain_steps, total):
                m = self.monitor(phase)
                m["losses"] = losses
                if checkpoint is not None:
                    checkpoint.put("state", self.state())


def run(config: Config | None = None, out: Path | None = None, show: bool = True,
        checkpoint: Path | None = None) -> AppResult:
    """Pre-trains, trains the GAN, and compares it with MLE alone and with a
    run without reheating; writes the temperature/diversity plot."""
    config = config or Config()
    ckpt = Checkpoint(checkpoint, config)
    start = ckpt.get("start")
    if start is None:
        untrained = TextGAN(config)
        start = ckpt.put("start", {"reference": untrained.reference, "initial": (
            untrained.measure_texts(untrained.sample(config.samples, 1.0)))})
    variants = {}
    if config.pretrain_steps:
        variants["MLE only"] = dataclasses.replace(config, gan_steps=0)
    if config.gan_steps:
        variants["GAN, no reheating"] = dataclasses.replace(config, reheat=False)
        if config.reheat:
            variants["GAN with reheating"] = config
    runs = {}
    for name, cfg in variants.items():
        done = ckpt.get(f"final/{name}")
        if done is None:
            gan = TextGAN(cfg)
            sub = _Prefixed(ckpt, name)
            saved = sub.get("state")
            if saved is not None:
                gan.load(saved)
            elif name != "MLE only" and config.pretrain_steps:  # from the pre-trained generator
                gan.load(ckpt.get("MLE only/state"), pretrained_only=True)
            gan.train(show, sub)
            done = ckpt.put(f"final/{name}", {
                "final": gan.log[-1], "log": gan.log,
                "samples": {f"{t:.3g}": gan.sample(4, gan.tau.tau, t) for t in SAMPLING},
                "events": [f"GAN step {e['step']}: {e['reason']}; tau {e['tau_before']:.3g} -> "
                           f"{e['tau_after']:.3g}" for e in getattr(gan.tau, "events", [])]})
        runs[name] = done
    return _report(config, start, runs, out)


class _Prefixed:
    """A view of a checkpoint whose keys get a prefix (one run of several)."""

    def __init__(self, ckpt: Checkpoint, prefix: str):
        self.ckpt, self.prefix = ckpt, prefix

    def get(self, key: str):
        return self.ckpt.get(f"{self.prefix}/{key}")

    def put(self, key: str, value):
        return self.ckpt.put(f"{self.prefix}/{key}", value)


def _report(config: Config, start: dict, runs: dict[str, dict], out: Path | None) -> AppResult:
    metrics: dict = {"config": dataclasses.asdict(config)}
    result = AppResult("textgan", metrics, heading="Text GAN with temperature annealing and "
                                                    "reheating")
    corpus = config.corpus or "The Devil's Dictionary (Bierce, 1911)"
    result.text = (f"Character GRU generator ({config.hidden}) feeding back its own "
                   f"{'straight-through' if config.hard else 'soft'} Gumbel-Softmax samples, CNN "
                   f"discriminator, RSGAN loss; {config.pretrain_steps} MLE pre-training steps, "
                   f"then {config.gan_steps} GAN steps with RelGAN's '{config.schedule}' "
                   f"schedule (beta_max {config.beta_max}); reheating when distinct-4 < "
                   f"{config.reheat_threshold}. Corpus: {corpus}, last 10% held out. Metrics on "
                   f"{config.samples} samples of {config.length} characters at the final "
                   f"temperature (1 for MLE): bigram JS divergence to held-out text (lower is "
                   f"closer), 4-gram precision against held-out text (quality), distinct-4 "
                   f"(diversity).")
    ref = start["reference"]
    rows = [("held-out text", "", ref["bigram_js"], ref["precision4"], ref["distinct4"],
             ref["entropy"])]
    init = start["initial"]
    rows.append(("untrained generator", 1.0, init["bigram_js"], init["precision4"],
                 init["distinct4"], init["entropy"]))
    for name, r in runs.items():
        f = r["final"]
        metrics[name] = {k: f[k] for k in ("tau", "bigram_js", "precision4", "distinct4",
                                            "entropy")}
        metrics[name]["reheats"] = r["events"]
        rows.append((name, f["tau"], f["bigram_js"], f["precision4"], f["distinct4"],
                     f["entropy"]))
    metrics["untrained"] = init
    metrics["held_out"] = ref
    result.tables["Quality and diversity of generated text"] = Table(
        ("model", "tau", "bigram JS", "4-gram precision", "distinct-4", "char entropy"), rows)
    sample_rows = [(name, t, f"'{s}'") for name, r in runs.items()
                   for t, ss in r["samples"].items() for s in ss[:2]]
    result.tables["Samples at a few sampling temperatures (logits / T)"] = Table(
        ("model", "T", "sample"), sample_rows)
    events = [(name, e) for name, r in runs.items() for e in r["events"]]
    if events:
        result.tables["Temperature changes made by the reheater"] = Table(("run", "event"),
                                                                          events)
    plt = pyplot("textgan")
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.5, 5), sharex=True)
    for name, r in runs.items():
        gan = [m for m in r["log"] if m["phase"] == "gan"]
        if not gan:
            continue
        steps = [m["step"] for m in gan]
        a1.plot(steps, [m["tau"] for m in gan], label=name)
        a2.plot(steps, [m["distinct4"] for m in gan], label=name)
    a2.axhline(config.reheat_threshold, color="grey", ls=":", lw=1, label="reheat threshold")
    a1.set_yscale("log")
    a1.set_ylabel("temperature")
    a2.set_ylabel("distinct-4 of samples")
    a2.set_xlabel("training step (pre-training, then GAN)")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    a1.set_title("Temperature and diversity during GAN training")
    path = save_figure(fig, out, "textgan_temperature.png")
    if path is not None:
        result.figures["Temperature and diversity over GAN training"] = path
    return result
