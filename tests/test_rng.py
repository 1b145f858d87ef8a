"""Philox known answers, the Generator API and stream reproducibility."""

import pickle

import pytest
import torch

import gumbelrs
from gumbelrs import _core

# Random123 kat_vectors, philox4x32 10: counter, key, expected output.
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


@pytest.mark.parametrize(("ctr", "key", "want"), KAT)
def test_philox_known_answers(ctr, key, want):
    assert list(_core.philox4x32_10(ctr, key)) == want


def test_uniform_is_the_documented_function_of_seed_offset_and_index():
    seed, offset = 0x0123456789ABCDEF, 5
    g = gumbelrs.Generator(seed)
    g.set_state(torch.tensor([seed, offset], dtype=torch.int64))
    v = gumbelrs.functional._noise("uniform", 8, generator=g)
    key = [seed & 0xFFFFFFFF, seed >> 32]
    words = []
    for block in range(2):
        words += _core.philox4x32_10([block, 0, offset, 0], key)
    want = []
    for w in words:
        u = float(torch.tensor(w >> 1, dtype=torch.int32).float()) * 2.0**-31
        want.append(min(max(u, 2.0**-32), 1 - 2.0**-24))
    assert v.tolist() == want


def test_same_seed_same_samples_and_calls_advance_the_stream():
    x = torch.randn(64, 10)
    a = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(7))
    b = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(7))
    assert torch.equal(a, b)
    g = gumbelrs.Generator(7)
    first = gumbelrs.gumbel_noise(100, generator=g)
    second = gumbelrs.gumbel_noise(100, generator=g)
    assert g.offset == 2
    assert not torch.equal(first, second)
    assert torch.equal(first, gumbelrs.gumbel_noise(100, generator=gumbelrs.Generator(7)))


def test_manual_seed_and_state_round_trip():
    g = gumbelrs.Generator(1)
    gumbelrs.gumbel_noise(3, generator=g)
    state = g.get_state()
    a = gumbelrs.gumbel_noise(50, generator=g)
    g.set_state(state)
    assert torch.equal(a, gumbelrs.gumbel_noise(50, generator=g))
    g.manual_seed(1)
    assert g.offset == 0
    b = gumbelrs.gumbel_noise(3, generator=g)
    assert torch.equal(b, gumbelrs.gumbel_noise(3, generator=gumbelrs.Generator(1)))
    assert state.dtype == torch.int64
    assert state.tolist() == [1, 1]


def test_seed_covers_the_full_unsigned_range():
    big = 2**64 - 1
    g = gumbelrs.Generator(big)
    assert g.seed == big
    assert g.initial_seed() == big
    other = gumbelrs.gumbel_noise(10, generator=gumbelrs.Generator(0))
    assert not torch.equal(gumbelrs.gumbel_noise(10, generator=g), other)


def test_fork_gives_distinct_reproducible_streams():
    parent = gumbelrs.Generator(3)
    kids = parent.fork(4)
    assert parent.offset == 1
    draws = [gumbelrs.gumbel_noise(1000, generator=k) for k in kids]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(draws[i], draws[j])
            # Independent streams: correlation ~ N(0, 1/1000); 0.15 is ~4.7 sd.
            assert abs(torch.corrcoef(torch.stack([draws[i], draws[j]]))[0, 1]) < 0.15
    again = gumbelrs.Generator(3).fork(4)
    assert [k.seed for k in again] == [k.seed for k in kids]
    assert [k.seed for k in parent.fork(4)] != [k.seed for k in kids]


def test_default_stream_follows_torchs_rng_state():
    """generator=None draws each call's seed from torch's default CPU generator,
    so torch's seeding and state functions replay it as they replay torch.rand."""
    x = torch.randn(6, 9)
    torch.manual_seed(1234)
    a = gumbelrs.gumbel_softmax(x, 0.5)
    b = gumbelrs.gumbel_softmax(x, 0.5)
    assert not torch.equal(a, b)  # consecutive calls draw fresh noise
    torch.manual_seed(1234)  # the same seed twice replays the stream
    assert torch.equal(gumbelrs.gumbel_softmax(x, 0.5), a)
    state = torch.get_rng_state()
    c = gumbelrs.relaxed_bernoulli(x, 0.5)
    torch.set_rng_state(state)
    assert torch.equal(gumbelrs.relaxed_bernoulli(x, 0.5), c)
    with torch.random.fork_rng():
        forked = gumbelrs.gumbel_noise(50)
    assert torch.equal(gumbelrs.gumbel_noise(50), forked)  # fork_rng restored the state
    gumbelrs.manual_seed(1234)  # torch.manual_seed, after checking the seed
    assert torch.initial_seed() == 1234
    assert torch.equal(gumbelrs.gumbel_softmax(x, 0.5), a)
    # A draw advances torch's generator, as a torch sampling op does.
    torch.manual_seed(7)
    gumbelrs.sample_categorical(x)
    after_draw = torch.rand(3)
    torch.manual_seed(7)
    assert not torch.equal(torch.rand(3), after_draw)


def test_explicit_generators_ignore_torchs_rng_state():
    x = torch.randn(6, 9)
    torch.manual_seed(1)
    a = gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(5))
    torch.manual_seed(2)
    assert torch.equal(gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(5)), a)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    gumbelrs.gumbel_softmax(x, 0.5, generator=gumbelrs.Generator(5))
    assert torch.equal(torch.get_rng_state(), before)  # and leave it alone


def test_compiled_default_stream_draws_fresh_replayable_samples():
    f = torch.compile(lambda t: gumbelrs.gumbel_softmax(t, 0.5), fullgraph=True)
    x = torch.randn(4, 7)
    torch.manual_seed(11)
    a, b = f(x), f(x)
    assert not torch.equal(a, b)
    torch.manual_seed(11)
    assert torch.equal(f(x), a)
    torch.manual_seed(11)
    assert torch.equal(gumbelrs.gumbel_softmax(x, 0.5), a)  # the eager stream


def test_generator_pickles():
    g = gumbelrs.Generator(9)
    gumbelrs.gumbel_noise(4, generator=g)
    h = pickle.loads(pickle.dumps(g))
    assert (h.seed, h.offset) == (9, 1)
    assert torch.equal(gumbelrs.gumbel_noise(5, generator=g), gumbelrs.gumbel_noise(5, generator=h))


def test_generator_rejects_a_hand_edited_pickle():
    g = gumbelrs.Generator(777).set_state(torch.tensor([777, 12345]))
    text = pickle.dumps(g, protocol=0)  # the text protocol, as one would edit it
    assert text.count(b"\nI777\n") == 1 and text.count(b"\nI12345\n") == 1
    cases = [
        (b"\nI12345\n", b"\nI-1\n", ValueError, r"state offset must be in \[0, 2\*\*63\), got -1$"),
        (b"\nI12345\n", b"\nI9223372036854775808\n", ValueError,
         r"state offset must be in \[0, 2\*\*63\), got 9223372036854775808$"),
        (b"\nI12345\n", b"\nF1.0\n", TypeError,
         r"state offset must be an int in \[0, 2\*\*63\), got float 1.0$"),
        (b"\nI777\n", b"\nI-5\n", ValueError, r"seed must be in \[0, 2\*\*64\), got -5$"),
        (b"\nI777\n", b"\nI18446744073709551616\n", ValueError,
         r"seed must be in \[0, 2\*\*64\), got 18446744073709551616$"),
        (b"Voffset", b"Voffsets", ValueError,
         r"pickled gumbelrs.Generator state must be a dict with the keys 'seed' and 'offset'"),
    ]
    for old, new, error, message in cases:
        with pytest.raises(error, match=message):
            pickle.loads(text.replace(old, new))
    h = pickle.loads(text.replace(b"\nI12345\n", b"\nI9223372036854775807\n"))
    assert (h.seed, h.offset) == (777, 2**63 - 1)


def test_generator_errors():
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        gumbelrs.Generator(-1)
    with pytest.raises(TypeError, match=r"seed must be an int in \[0, 2\*\*64\), got float 1.5"):
        gumbelrs.Generator(1.5)
    g = gumbelrs.Generator(0)
    with pytest.raises(ValueError, match=r"state must be an int64 tensor of shape \(2,\)"):
        g.set_state(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="state must be the int64 tensor returned by get_state"):
        g.set_state([0, 0])
    with pytest.raises(ValueError, match=r"fork\(n\) needs a non-negative int n, got -2"):
        g.fork(-2)


def test_default_stream_serves_ops_that_replay_their_noise():
    """The decoupled estimator and the hard relaxed distributions draw one
    noise twice (forward and soft sample); with generator=None they draw it
    from torch's state like any op."""
    x = torch.randn(5, 4)
    for draw in (lambda: gumbelrs.estimators.sample(x, "decoupled", tau_forward=0.3,
                                                     tau_backward=1.0),
                 lambda: gumbelrs.distributions.RelaxedOneHotCategoricalStraightThrough(
                     torch.tensor(0.5), logits=x).rsample()):
        torch.manual_seed(8)
        a = draw()
        torch.manual_seed(8)
        assert torch.equal(draw(), a)
        assert ((a == 0) | (a == 1)).all() and torch.equal(a.sum(-1), torch.ones(5))
