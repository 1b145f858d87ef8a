"""torch.func transforms (vmap, grad, jacrev, jacfwd/jvp, functional_call) and
higher-order gradients of every op.

Noise assignment under vmap (docs/guides/transforms.md): with
``randomness="different"`` a vmapped call draws one call's stream for the
stacked batch, so it equals the un-vmapped op on the stacked tensor bitwise;
with ``"same"`` every element gets the noise of one un-vmapped call, so it
equals a loop of un-vmapped calls from the same generator state bitwise.
"""

import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import gumbelrs
from gumbelrs import Generator

from .conftest import raises

SEED = 77
TORCH_RANDOMNESS_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either use the "
    "'same' or 'different' randomness flags on vmap or perform the randomness operation out "
    "of vmap"
)

# Each op as a function of logits (leading dims are batch dims) and a generator,
# written with negative dims so that it means the same on a stacked batch.
OPS = {
    "gumbel_softmax": lambda x, g: gumbelrs.gumbel_softmax(x, 0.5, generator=g),
    "gumbel_softmax_hard": lambda x, g: gumbelrs.gumbel_softmax(x, 0.5, hard=True, generator=g),
    "gumbel_softmax_dim": lambda x, g: gumbelrs.gumbel_softmax(x, 0.7, dim=-2, generator=g),
    "relaxed_bernoulli": lambda x, g: gumbelrs.relaxed_bernoulli(x, 0.6, generator=g),
    "relaxed_bernoulli_hard": lambda x, g: gumbelrs.relaxed_bernoulli(x, 0.6, hard=True,
                                                                      generator=g),
    "hard_concrete": lambda x, g: gumbelrs.hard_concrete(x, generator=g),
    "gumbel_noise": lambda x, g: gumbelrs.gumbel_noise(x.shape, generator=g),
    "sample_categorical": lambda x, g: gumbelrs.sample_categorical(x, 3, generator=g),
    "gumbel_topk": lambda x, g: gumbelrs.gumbel_topk(x, 2, generator=g),
    # Its draws come first: the stacked call's batch is dim 1.
    "gumbel_given_argmax": lambda x, g: gumbelrs.gumbel_given_argmax(
        x, x.argmin(-1), 2, generator=g).movedim(1, 0) if x.dim() == 3 else
        gumbelrs.gumbel_given_argmax(x, x.argmin(-1), 2, generator=g),
}


def logits(*shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("name", OPS)
def test_vmap_different_draws_one_call_for_the_stacked_batch(name):
    f = OPS[name]
    x = logits(4, 3, 6)
    g = Generator(SEED)
    out = vmap(lambda r: f(r, g), randomness="different")(x)
    assert g.offset == 1  # one call's worth of the stream
    assert torch.equal(out, f(x, Generator(SEED)))
    # Fresh noise per element: no two elements' samples are the same.
    flat = out.reshape(4, -1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i))


@pytest.mark.parametrize("name", OPS)
def test_vmap_same_gives_every_element_the_noise_of_one_call(name):
    f = OPS[name]
    x = logits(4, 3, 6)
    g = Generator(SEED)
    out = vmap(lambda r: f(r, g), randomness="same")(x)
    assert g.offset == 1
    assert torch.equal(out, torch.stack([f(x[b], Generator(SEED)) for b in range(4)]))


@pytest.mark.parametrize("name", OPS)
def test_vmap_error_mode_raises_torchs_randomness_error(name):
    with raises(RuntimeError, TORCH_RANDOMNESS_ERROR):
        vmap(lambda r: OPS[name](r, Generator(SEED)))(logits(4, 3, 6))


@pytest.mark.parametrize("name", OPS)
def test_vmap_over_another_input_dimension(name):
    f = OPS[name]
    x = logits(4, 3, 6)
    out = vmap(lambda r: f(r, Generator(SEED)), in_dims=1, randomness="different")(
        x.movedim(0, 1))
    assert torch.equal(out, f(x, Generator(SEED)))


@pytest.mark.parametrize("inner", ["different", "same"])
@pytest.mark.parametrize("name", ["gumbel_softmax_hard", "relaxed_bernoulli", "hard_concrete",
                                  "gumbel_noise", "gumbel_topk"])
def test_nested_vmap_composes_the_randomness_of_each_level(name, inner):
    f = OPS[name]
    x = logits(3, 2, 4, 5)  # (outer, inner, rows, categories)
    out = vmap(vmap(lambda r: f(r, Generator(SEED)), randomness=inner),
               randomness="different")(x)
    if inner == "different":
        ref = f(x, Generator(SEED))
    else:  # the same noise across the inner level, different across the outer one
        ref = torch.stack([f(x[:, j], Generator(SEED)) for j in range(2)], 1)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("randomness", ["different", "same"])
def test_vmap_over_a_temperature_tensor(randomness):
    x = logits(3, 6)
    taus = torch.tensor([0.3, 1.0, 3.0, 10.0])
    out = vmap(lambda t: gumbelrs.gumbel_softmax(x, t, generator=Generator(SEED)),
               randomness=randomness)(taus)
    if randomness == "different":
        ref = gumbelrs.gumbel_softmax(x.expand(4, 3, 6), taus[:, None].expand(4, 3),
                                      generator=Generator(SEED))
    else:
        ref = torch.stack([gumbelrs.gumbel_softmax(x, t, generator=Generator(SEED))
                           for t in taus])
    assert torch.equal(out, ref)
    rb = vmap(lambda t: gumbelrs.relaxed_bernoulli(x, t, generator=Generator(SEED)),
              randomness="same")(taus)
    assert torch.equal(rb[2], gumbelrs.relaxed_bernoulli(x, 3.0, generator=Generator(SEED)))


def test_vmap_without_batched_inputs_still_draws_per_element():
    x = logits(3, 6)
    out = vmap(lambda _: gumbelrs.gumbel_softmax(x, 0.5, generator=Generator(SEED)),
               randomness="different")(torch.arange(5))
    assert torch.equal(out, gumbelrs.gumbel_softmax(x.expand(5, 3, 6), 0.5,
                                                    generator=Generator(SEED)))
    same = vmap(lambda _: gumbelrs.gumbel_softmax(x, 0.5, generator=Generator(SEED)),
                randomness="same")(torch.arange(5))
    assert torch.equal(same, gumbelrs.gumbel_softmax(x, 0.5, generator=Generator(SEED))
                       .expand(5, 3, 6))


def test_vmap_with_the_default_stream_follows_torchs_seed():
    x = logits(4, 6)
    torch.manual_seed(5)
    a = vmap(lambda r: gumbelrs.gumbel_softmax(r, 0.5), randomness="different")(x)
    torch.manual_seed(5)
    b = vmap(lambda r: gumbelrs.gumbel_softmax(r, 0.5), randomness="different")(x)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


# ------------------------------------------------------------------ derivatives

DIFFERENTIABLE = ("gumbel_softmax", "gumbel_softmax_dim0", "relaxed_bernoulli", "hard_concrete")


def _case(name):
    """``(f, inputs)``: the op as a function of float64 logits and (where the
    op is differentiable in it) a tensor temperature, with a fixed noise."""
    x = logits(5, 7, dtype=torch.float64, seed=1).requires_grad_()
    rand = torch.Generator().manual_seed(2)
    if name == "gumbel_softmax":
        with torch.no_grad():
            x[1, 2] = float("-inf")  # a masked category: probability and gradients exactly 0
        t = (torch.rand(5, dtype=torch.float64, generator=rand) + 0.3).requires_grad_()
        return (lambda a, b: gumbelrs.gumbel_softmax(a, b, generator=Generator(SEED))), (x, t)
    if name == "gumbel_softmax_dim0":
        t = (torch.rand(7, dtype=torch.float64, generator=rand) + 0.3).requires_grad_()
        return (lambda a, b: gumbelrs.gumbel_softmax(a, b.unsqueeze(0), dim=0,
                                                     generator=Generator(SEED))), (x, t)
    t = torch.rand(5, 7, dtype=torch.float64, generator=rand) + 0.3
    if name == "relaxed_bernoulli":
        return (lambda a, b: gumbelrs.relaxed_bernoulli(a, b, generator=Generator(SEED))), \
            (x, t.requires_grad_())
    return (lambda a: gumbelrs.hard_concrete(a, t, generator=Generator(SEED))), (x,)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck_forward_and_reverse_mode(name):
    f, inputs = _case(name)
    assert torch.autograd.gradcheck(f, inputs, check_forward_ad=True)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradgradcheck(name):
    f, inputs = _case(name)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("op", ["gumbel_softmax", "relaxed_bernoulli"])
def test_straight_through_second_derivatives_are_the_soft_samples(op):
    """Hard samples take the soft sample's gradient; so do their second derivatives."""
    fn = getattr(gumbelrs, op)
    x = logits(5, 7, dtype=torch.float64, seed=3).requires_grad_()
    w = logits(5, 7, dtype=torch.float64, seed=4)
    v = logits(5, 7, dtype=torch.float64, seed=5)

    def hvp(hard):
        y = fn(x, 0.4, hard=hard, generator=Generator(SEED))
        (gx,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
        return torch.autograd.grad((gx * v).sum(), x)[0]

    assert torch.equal(hvp(True), hvp(False))
    assert hvp(False).abs().max() > 0


def test_grad_and_per_sample_grads_match_autograd():
    x = logits(6, 5)
    w = logits(6, 5, seed=9)

    def loss(r, wr):
        return (gumbelrs.gumbel_softmax(r, 0.5, generator=Generator(SEED)) * wr).sum()

    xr = x.clone().requires_grad_()
    loss(xr, w).backward()
    torch.testing.assert_close(grad(loss)(x, w), xr.grad)
    per_sample = vmap(grad(loss), randomness="different")(x, w)  # rows are the samples
    torch.testing.assert_close(per_sample, xr.grad)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_jacrev_and_jacfwd_agree(name):
    f, inputs = _case(name)
    x, *rest = (v.detach().nan_to_num(neginf=-50.0) for v in inputs)

    def sample(a):
        return f(a, *rest)

    rev = jacrev(sample)(x)
    fwd = jacfwd(sample, randomness="same")(x)
    torch.testing.assert_close(rev, fwd)
    assert rev.abs().max() > 0


def test_jvp_matches_finite_differences_in_tau():
    x = logits(4, 6, dtype=torch.float64)
    t = torch.full((4,), 0.8, dtype=torch.float64)
    dt = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)

    def f(tau):
        return gumbelrs.gumbel_softmax(x, tau, generator=Generator(SEED))

    _, tangent = jvp(f, (t,), (dt,))
    h = 1e-6
    fd = (f(t + h * dt) - f(t - h * dt)) / (2 * h)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


def test_functional_call_gradients_of_a_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), gumbelrs.nn.GumbelSoftmax(tau=0.5))
    x = logits(8, 4)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        torch.manual_seed(3)  # the same noise for both computations
        return functional_call(model, p, (x,)).pow(2).sum()

    grads = grad(loss)(params)
    loss(dict(model.named_parameters())).backward()
    for k, v in model.named_parameters():
        torch.testing.assert_close(grads[k], v.grad)


def test_unsupported_derivatives_name_the_op():
    x = logits(3, 4)
    t = torch.full((3, 4), 0.5)
    with raises(RuntimeError, "hard_concrete: derivatives with respect to tau are not "
                              "supported (forward mode included); pass a tau without a tangent"):
        jvp(lambda tau: gumbelrs.hard_concrete(x, tau, generator=Generator(SEED)), (t,),
            (torch.ones_like(t),))
    with raises(ValueError, "hard_concrete: gradients with respect to tau are not supported; "
                            "pass tau.detach() (a learned temperature can be folded into the "
                            "logits instead)"):
        grad(lambda tau: gumbelrs.hard_concrete(x, tau, generator=Generator(SEED)).sum())(t)


# ------------------------------------------------------- activation checkpointing


def _checkpointed_step(use_reentrant, generator=None, context_fn=None):
    """``(sample, gradient)`` of a sample drawn inside a checkpointed region."""
    from torch.utils.checkpoint import checkpoint

    w = logits(6, 6, seed=10)
    c = logits(4, 6, seed=11)
    leaf = logits(4, 6, seed=12).requires_grad_()
    kwargs = {} if context_fn is None else {"context_fn": context_fn}
    y = checkpoint(lambda t: gumbelrs.gumbel_softmax(t @ w, 0.5, generator=generator), leaf,
                   use_reentrant=use_reentrant, **kwargs)
    (y * c).sum().backward()
    # The gradient that belongs to the sample returned: y (g - sum(g y)) / tau, through t @ w.
    soft = y.detach()
    ref = (soft * (c - (c * soft).sum(-1, keepdim=True)) / 0.5) @ w.T
    return y, leaf.grad, ref


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpointing_gives_the_gradient_of_the_returned_sample(use_reentrant):
    torch.manual_seed(5)
    y, got, ref = _checkpointed_step(use_reentrant)
    torch.testing.assert_close(got, ref)
    torch.manual_seed(5)  # and the sample is the one an un-checkpointed call draws
    assert torch.equal(y, gumbelrs.gumbel_softmax(logits(4, 6, seed=12) @ logits(6, 6, seed=10),
                                                  0.5))


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpointing_refuses_to_redraw_from_an_explicit_generator(use_reentrant):
    g = Generator(SEED)
    with raises(RuntimeError, "gumbel_softmax: drawing from a gumbelrs.Generator during a "
                "backward pass, as torch.utils.checkpoint does when it recomputes a forward: "
                "the recompute would draw the generator's next noise, not the forward's, and "
                "the gradient would belong to another sample. Inside checkpointed code use "
                "generator=None (it follows torch's RNG state, which checkpoint restores), or "
                "checkpoint with use_reentrant=False and "
                "context_fn=gumbelrs.checkpoint_context(generator)"):
        _checkpointed_step(use_reentrant, g)


def test_checkpoint_context_replays_explicit_generators():
    g = Generator(SEED)
    y, got, ref = _checkpointed_step(False, g, gumbelrs.checkpoint_context(g))
    torch.testing.assert_close(got, ref)
    assert g.offset == 1  # back where the forward left it
    assert torch.equal(y, gumbelrs.gumbel_softmax(logits(4, 6, seed=12) @ logits(6, 6, seed=10),
                                                  0.5, generator=Generator(SEED)))
    with raises(TypeError, "checkpoint_context: every argument must be a gumbelrs.Generator, "
                           "got torch._C.Generator"):
        gumbelrs.checkpoint_context(torch.Generator())


def test_export_and_autocast_keep_working():
    class Sampler(torch.nn.Module):
        def forward(self, t):
            return gumbelrs.gumbel_softmax(t, 0.5, hard=True)

    x = logits(3, 5)
    program = torch.export.export(Sampler(), (x,))
    torch.manual_seed(4)
    exported = program.module()(x)
    torch.manual_seed(4)
    assert torch.equal(exported, Sampler()(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gumbelrs.gumbel_softmax(x @ logits(5, 5, seed=3), 0.5)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float().sum(-1), torch.ones(3), rtol=0, atol=2e-2)


@pytest.mark.parametrize("nested", [False, True])
def test_functionalize_is_refused_with_a_clear_error(nested):
    def f(r):
        return gumbelrs.gumbel_softmax(r, 0.5, generator=Generator(SEED))

    f = torch.func.functionalize(vmap(f, randomness="same") if nested else f)
    with raises(RuntimeError, "gumbel_softmax: torch.func.functionalize is not supported: "
                "under torch.func transforms gumbelrs ops are torch.autograd.Functions, which "
                "torch cannot functionalize; torch.compile and torch.export record them as "
                "custom ops instead"):
        f(logits(3, 4))
