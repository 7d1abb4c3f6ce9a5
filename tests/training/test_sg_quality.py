"""The synthetic-gradient quality measures (issue: how good are the synthetic gradients?)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from repsim import checkpoints
from training.model import MLP
from training.rules import SyntheticGradients, forward_cut
from training.train import TrainConfig, train


def _net(depth: int = 4, width: int = 16, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(depth, width, "relu", True, 12, 5).train()


def _batch(n: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def _true_gradients(model: MLP, x, y, positions) -> torch.Tensor:
    """n × dL/dh_k by plain autograd in float64 on a copy (the independent reference)."""
    ref = copy.deepcopy(model).double()
    hs, h = [], x.double()
    for k, block in enumerate(ref.blocks, start=1):
        h = block(h)
        if k in positions:
            h.retain_grad()
            hs.append(h)
    F.cross_entropy(ref.out(h), y).backward()
    return torch.stack([h.grad for h in hs]).float() * len(x)


class _Oracle(SyntheticGradients):
    """An SG whose output is whatever the test sets: here the true gradient."""

    oracle: torch.Tensor

    def predict(self, hs, y):
        return self.oracle.to(hs.dtype)


def test_zero_sg_at_initialisation_has_error_one():
    model = _net()
    rule = SyntheticGradients(range(1, 5), 16, 5)
    x, y = _batch()
    q = rule.quality(model, x, y, F.cross_entropy)
    assert torch.allclose(q["sg_relative_error"], torch.ones(4, dtype=torch.float64))
    assert torch.equal(q["sg_cosine"], torch.zeros(4, dtype=torch.float64))
    # the topmost SG is trained on the true gradient; the others on zero (bootstrapped)
    assert q["target_relative_error"][-1] < 1e-5 and q["target_cosine"][-1] > 1 - 1e-6
    assert torch.allclose(q["target_relative_error"][:-1], torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("positions", [(3,), (1, 2, 3, 4), (2, 4)])
def test_true_gradient_as_sg_has_cosine_one_and_error_zero(positions):
    model = _net()
    x, y = _batch()
    rule = _Oracle(positions, 16, 5)
    rule.oracle = _true_gradients(model, x, y, positions)
    q = rule.quality(model, x, y, F.cross_entropy)
    for name in ("sg", "target"):
        assert torch.all(q[f"{name}_cosine"] > 1 - 1e-5), (name, q)
        assert torch.all(q[f"{name}_relative_error"] < 1e-3), (name, q)


def test_half_the_true_gradient_has_cosine_one_and_error_half():
    model = _net()
    x, y = _batch()
    rule = _Oracle((2,), 16, 5)
    rule.oracle = 0.5 * _true_gradients(model, x, y, (2,))
    q = rule.quality(model, x, y, F.cross_entropy)
    assert q["sg_cosine"].item() == pytest.approx(1, abs=1e-5)
    assert q["sg_relative_error"].item() == pytest.approx(0.5, abs=1e-4)


def test_quality_changes_nothing():
    model = _net()
    rule = SyntheticGradients((1, 3), 16, 5)
    with torch.no_grad():
        for p in rule.parameters():
            p.normal_()
    x, y = _batch()
    before = {k: v.clone() for k, v in (model.state_dict() | rule.state_dict()).items()}
    q = rule.quality(model, x, y, F.cross_entropy)
    after = model.state_dict() | rule.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in [*model.parameters(), *rule.parameters()])
    # a random SG is neither right nor zero
    assert torch.all(q["sg_relative_error"] > 0.1) and torch.all(q["sg_cosine"].abs() < 0.9)
    # the bootstrapped target of SG_1 is what block 2..3 send down from SG_3's output
    _, hs, us = forward_cut(model, x, (1, 3))
    assert len(hs) == len(us) == 2


def test_training_with_monitoring_writes_the_table_and_changes_no_weight(tmp_path):
    kw = dict(method="sg", sg_layers="all", depth=3, width=16, epochs=2, batch_size=100,
              lr=1e-3)  # fmt: skip
    plain, _ = train(TrainConfig(**kw), progress=False, device="cpu")
    watched, _ = train(
        TrainConfig(**kw, sg_quality_every=7), tmp_path / "run", progress=False, device="cpu"
    )
    for k, v in plain.state_dict().items():
        assert torch.equal(v, watched.state_dict()[k]), k
    rows = checkpoints.read_table(tmp_path / "run", checkpoints.SG_QUALITY)
    steps = sorted({int(r["step"]) for r in rows})
    per_epoch = 4000 // 100
    assert steps == list(range(0, 2 * per_epoch, 7))
    assert {r["measure"] for r in rows} == {
        "sg_cosine", "sg_relative_error", "target_cosine", "target_relative_error"
    }  # fmt: skip
    assert {int(r["position"]) for r in rows} == {1, 2, 3}
    first = [r for r in rows if r["step"] == "0" and r["measure"] == "sg_relative_error"]
    assert [float(r["value"]) for r in first] == [1.0, 1.0, 1.0]  # zero-initialised SGs
    last = [float(r["value"]) for r in rows if int(r["step"]) == steps[-1]
            and r["measure"] == "sg_cosine"]  # fmt: skip
    assert all(v > 0.1 for v in last)  # the SGs have learned something


# ------------------------------------------------------------ the sigmoid SG module


def test_sigmoid_sg_is_d_sigmoid_hA_plus_yB_plus_C_against_numpy():
    import numpy as np

    rule = SyntheticGradients((1, 3), 6, 4, module="sigmoid")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    hs, y = torch.randn(2, 5, 6, generator=g), torch.randint(0, 4, (5,), generator=g)
    got = rule.predict(hs, y).detach().double().numpy()
    A, B, C, d = (
        t.detach().double().numpy() for t in (rule.weight_h, rule.weight_y, rule.bias, rule.scale)
    )
    h, onehot = hs.double().numpy(), np.eye(4)[y.numpy()]
    want = np.stack([d[k] / (1 + np.exp(-h[k] @ A[k])) + onehot @ B[k] + C[k] for k in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    linear = SyntheticGradients((1, 3), 6, 4)
    assert not hasattr(linear, "scale")  # linear checkpoints keep their tensors
    assert {n for n, _ in rule.named_parameters()} == {"weight_h", "weight_y", "bias", "scale"}


def test_sigmoid_sg_starts_at_zero_and_every_parameter_learns():
    model = _net()
    rule = SyntheticGradients(range(1, 5), 16, 5, module="sigmoid")
    x, y = _batch()
    q = rule.quality(model, x, y, F.cross_entropy)
    assert torch.allclose(q["sg_relative_error"], torch.ones(4, dtype=torch.float64))
    opt = torch.optim.Adam(rule.parameters(), lr=1e-2)
    for _ in range(2):  # A's gradient is d ⊙ σ'(hA) ⊙ h: zero until d has moved
        opt.zero_grad()
        rule.step(model, x, y, F.cross_entropy)
        opt.step()
    assert all(p.abs().sum() > 0 for p in rule.parameters())
    assert rule.quality(model, x, y, F.cross_entropy)["sg_cosine"][-1] > 0.1


def test_sigmoid_sg_fits_a_saturating_gradient_that_a_linear_sg_cannot():
    """Section 3's reason for the option: ∂L/∂p of log loss is step-like in the input."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(512, 1, 8, generator=g).expand(512, 1, 8).reshape(1, 512, 8)
    y = torch.zeros(512, dtype=torch.long)
    a = torch.randn(8, 8, generator=g)
    target = 2.0 * torch.sigmoid(4.0 * h @ a)  # steep: nearly a step function of h
    errors = {}
    for module in ("linear", "sigmoid"):
        torch.manual_seed(0)
        rule = SyntheticGradients((1,), 8, 2, module=module)
        opt = torch.optim.Adam(rule.parameters(), lr=3e-2)
        for _ in range(1500):
            opt.zero_grad()
            loss = F.mse_loss(rule.predict(h, y), target)
            loss.backward()
            opt.step()
        errors[module] = loss.item() / target.var().item()
    assert errors["sigmoid"] < 0.5 * errors["linear"], errors


def test_unknown_sg_module_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match="unknown sg_module 'mlp': expected one of linear, sigmoid"
    ):
        TrainConfig(method="sg", sg_module="mlp")
    with pytest.raises(ValueError, match="unknown SG module"):
        SyntheticGradients((1,), 4, 2, module="mlp")
