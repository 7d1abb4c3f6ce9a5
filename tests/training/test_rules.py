"""Each learning rule's gradients, checked against an independent autograd computation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from training.model import MLP
from training.rules import (
    LOSSES,
    METHODS,
    Backprop,
    DirectFeedback,
    FeedbackAlignment,
    SyntheticGradients,
    make_rule,
)


def _setup(depth=4, width=16, seed=0, n=32, batchnorm=True):
    torch.manual_seed(seed)
    model = MLP(depth=depth, width=width, batchnorm=batchnorm).double()
    x = torch.rand(n, 784, dtype=torch.float64)
    y = torch.arange(n) % 10
    return model, x, y


def _grads(model):
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in model.named_parameters()}  # fmt: skip


def _bp_grads(model, x, y, loss_fn=F.cross_entropy):
    ref = copy.deepcopy(model)
    Backprop().step(ref, x, y, loss_fn)
    return _grads(ref)


def _true_hidden_grads(model, x, y, loss_fn=F.cross_entropy):
    """dL/dh_k for every block, by autograd on a copy."""
    ref = copy.deepcopy(model)
    hs, h = [], x
    for block in ref.blocks:
        h = block(h)
        hs.append(h)
    return torch.autograd.grad(loss_fn(ref.out(h), y), hs)


def _assert_grads_close(got, want, names=None):
    for name in names or want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


class _Oracle(SyntheticGradients):
    """An SG whose output is the true per-example gradient (for the equivalence test)."""

    def __init__(self, true_grads, positions, *args):
        super().__init__(positions, *args)
        self.true = torch.stack([true_grads[k - 1] for k in positions])

    def predict(self, hs, y):
        return self.true * len(y) + 0 * super().predict(hs, y)


@pytest.mark.parametrize("positions", [(2,), (1, 3), (1, 2, 3, 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_sg_fed_the_true_gradient_is_backprop(positions, seed):
    model, x, y = _setup(seed=seed)
    want = _bp_grads(model, x, y)
    oracle = _Oracle(_true_hidden_grads(model, x, y), positions, 16, 10).double()
    oracle.step(model, x, y, F.cross_entropy)
    _assert_grads_close(_grads(model), want)


def test_dfa_with_output_weights_as_feedback_is_backprop():
    model, x, y = _setup(depth=1)
    want = _bp_grads(model, x, y)
    DirectFeedback(model.out.weight.detach().clone()[None]).step(model, x, y, F.cross_entropy)
    _assert_grads_close(_grads(model), want)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_fa_with_feedback_equal_to_weights_is_backprop(batchnorm):
    model, x, y = _setup(depth=3, batchnorm=batchnorm)
    want = _bp_grads(model, x, y)
    rule = FeedbackAlignment([lin.weight.detach().clone() for lin in model.linears])
    rule.step(model, x, y, F.cross_entropy)
    _assert_grads_close(_grads(model), want)


def test_sg_modules_start_at_zero_and_inject_nothing_at_first():
    model, x, y = _setup()
    rule = make_rule("sg", model, sg_layers=(2,)).double()
    assert all(torch.count_nonzero(p) == 0 for p in rule.parameters())
    rule.step(model, x, y, F.cross_entropy)
    grads = _grads(model)
    for name in ("block1.linear.weight", "block2.linear.weight", "block2.norm.weight"):
        assert torch.count_nonzero(grads[name]) == 0, name  # below the SG: zero signal
    assert torch.count_nonzero(grads["block3.linear.weight"]) > 0  # above it: the true one


def _randomise(rule, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)


def test_sg_targets_are_true_gradient_at_top_and_bootstrapped_below():
    model, x, y = _setup()
    rule = make_rule("sg", model, sg_layers=(2, 3)).double()
    _randomise(rule)
    true = _true_hidden_grads(model, x, y)
    # what block 3 sends down from SG_3's prediction, computed independently
    ref = copy.deepcopy(model)
    with torch.no_grad():
        h2 = ref.block2(ref.block1(x))
    u2 = h2.clone().requires_grad_()
    h3 = ref.block3(u2)
    g3 = rule.predict(torch.stack([h2, h3.detach()]), y)[1].detach()
    (boot,) = torch.autograd.grad(h3, u2, g3 / len(x))
    rule.step(model, x, y, F.cross_entropy)
    torch.testing.assert_close(rule.last_targets[1], true[2] * len(x))  # SG_3: true gradient
    torch.testing.assert_close(rule.last_targets[0], boot * len(x))  # SG_2: bootstrapped


def test_nothing_below_an_sg_sees_the_true_gradient():
    model, x, y = _setup()
    rule = make_rule("sg", model, sg_layers=(2,)).double()
    _randomise(rule)
    grads = []
    for scale in (1.0, 3.0):  # perturb the loss above the SG
        m, r = copy.deepcopy(model), copy.deepcopy(rule)
        r.step(m, x, y, lambda z, t, s=scale: s * F.cross_entropy(z, t))
        grads.append(_grads(m))
    below = [n for n in grads[0] if n.startswith(("block1.", "block2."))]
    above = [n for n in grads[0] if n.startswith(("block3.", "block4.", "out."))]
    for name in below:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0)
    for name in above:
        torch.testing.assert_close(grads[1][name], 3 * grads[0][name])


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_sgprop_adds_alpha_times_the_sg_loss_gradient(alpha):
    model, x, y = _setup()
    rule = make_rule("sgprop", model, sg_layers=(2,), sg_alpha=alpha).double()
    _randomise(rule)
    ref_model, ref_rule = copy.deepcopy(model), copy.deepcopy(rule)
    rule.step(model, x, y, F.cross_entropy)
    target = rule.last_targets[0].detach()
    # independent: d/dθ_below [ <h2, SG(h2)/n> (SG output as a constant) + α·L_SG(h2) ]
    h2 = ref_model.block2(ref_model.block1(x))
    g = ref_rule.predict(h2[None], y)[0]
    n = len(x)
    total = (h2 * g.detach() / n).sum() + alpha * ((g - target) ** 2).sum() / n
    below = [
        p for name, p in ref_model.named_parameters() if name.startswith(("block1.", "block2."))
    ]
    want = torch.autograd.grad(total, below)
    got = [
        p.grad for name, p in model.named_parameters() if name.startswith(("block1.", "block2."))
    ]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_sgprop_with_alpha_zero_is_sg():
    model, x, y = _setup()
    sg = make_rule("sg", model, sg_layers=(2,)).double()
    _randomise(sg)
    prop = make_rule("sgprop", model, sg_layers=(2,), sg_alpha=0.0).double()
    prop.load_state_dict(sg.state_dict())
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    sg.step(m1, x, y, F.cross_entropy)
    prop.step(m2, x, y, F.cross_entropy)
    _assert_grads_close(_grads(m2), _grads(m1))
    _assert_grads_close(dict(prop.named_parameters()), dict(sg.named_parameters()))


def test_dfa_signal_is_error_times_feedback():
    model, x, y = _setup(depth=3)
    rule = make_rule("dfa", model, seed=3).double()
    ref = copy.deepcopy(model)
    rule.step(model, x, y, F.cross_entropy)
    # independent: e = softmax - onehot over the batch; block k's output gets e @ B_k
    hs, h = [], x
    for block in ref.blocks:
        h = block(h.detach())
        hs.append(h)
    logits = ref.out(h)
    e = (logits.softmax(1) - F.one_hot(y, 10)).detach() / len(x)
    for k, hk in enumerate(hs):
        params = list(ref.blocks[k].parameters())
        want = torch.autograd.grad(hk, params, e @ rule.feedback[k])
        for p, w in zip(model.blocks[k].parameters(), want, strict=True):
            torch.testing.assert_close(p.grad, w)


def test_kickback_signal_is_nonzero_under_its_loss_and_refused_under_ce():
    model, x, y = _setup(depth=2)
    with pytest.raises(ValueError, match="kickback with softmax cross-entropy trains on nothing"):
        make_rule("kickback", model, loss="ce")
    rule = make_rule("kickback", model, loss="mse").double()
    assert torch.equal(rule.feedback, torch.ones_like(rule.feedback))
    rule.step(model, x, y, LOSSES["mse"])
    assert model.block1.linear.weight.grad.abs().max() > 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_one_forward_pass_per_step(method):
    model, x, y = _setup()
    loss = "mse" if method == "kickback" else "ce"
    rule = make_rule(method, model, sg_layers=(2, 4), loss=loss).double()
    rule.step(model, x, y, LOSSES[loss])
    for block in model.blocks:  # BatchNorm counts the batches it has seen
        assert int(block.norm.num_batches_tracked) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "backprop"}, "unknown method 'backprop': expected one of bp, sg"),
        ({"method": "bp", "loss": "hinge"}, "unknown loss 'hinge'"),
        (
            {"method": "sg", "sg_layers": (5,)},
            r"SG layers must be distinct blocks from 1 to 4.*\[5\]",
        ),
        ({"method": "sg", "sg_layers": (0,)}, "from 1 to 4"),
        ({"method": "sg", "sg_layers": (2, 2)}, "distinct"),
        ({"method": "sgprop", "sg_layers": ()}, "distinct"),
    ],
)
def test_make_rule_errors(kwargs, match):
    model, _, _ = _setup()
    method = kwargs.pop("method")
    with pytest.raises(ValueError, match=match):
        make_rule(method, model, **kwargs)


def test_feedback_is_seeded():
    model, _, _ = _setup()
    a, b, c = (make_rule("dfa", model, seed=s).feedback for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
