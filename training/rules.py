"""Learning rules: what gradient each hidden block's output receives (DESIGN.md, Table 1
of Czarnecki et al. 2017).

Every rule trains the same :class:`~training.model.MLP` and differs only in the estimate
of dL/dh_k injected at hidden output h_k. A rule is an ``nn.Module`` (so that its own
state — synthetic-gradient modules, fixed feedback matrices — is optimised and saved with
the network) with one method, ``step(model, x, y, loss_fn)``: one forward pass, then the
backward passes that leave ``.grad`` on the network's and the rule's parameters. The
training loop then takes one optimizer step over both.

Cutting the network: every rule except ``bp`` and ``fa`` runs the forward pass with the
input of some blocks detached (:func:`forward_cut`), which splits the graph into segments.
Each segment receives, at its top, the gradient the rule supplies, through one call to
``torch.autograd.backward(tensors, grads)`` over all segments at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.model import MLP

Method = Literal["bp", "sg", "sgprop", "dfa", "fa", "kickback"]
METHODS: tuple[str, ...] = ("bp", "sg", "sgprop", "dfa", "fa", "kickback")
#: Forms of a synthetic-gradient module (:class:`SyntheticGradients`).
SG_MODULES: tuple[str, ...] = ("linear", "sigmoid")
Loss = Literal["ce", "bce", "mse"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-class sigmoid cross-entropy against one-hot targets, summed over classes."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(y)


def _mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half the squared distance of the logits to one-hot targets, summed over classes."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return 0.5 * ((logits - target) ** 2).sum() / len(y)


LOSSES: dict[str, LossFn] = {"ce": F.cross_entropy, "bce": _bce, "mse": _mse}


class Step(NamedTuple):
    """What one training step reports: the batch loss, the logits (both detached), and
    the rule's own losses (e.g. ``sg_loss``) as floats."""

    loss: torch.Tensor
    logits: torch.Tensor
    aux: dict[str, torch.Tensor]


def forward_cut(
    model: MLP, x: torch.Tensor, cut: Sequence[int]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Forward pass that cuts the graph after the (1-based) blocks in ``cut``.

    Returns
    -------
    logits
        ``[B, n_classes]``.
    outputs
        For each cut block k, its output h_k, still attached to the blocks below it.
    inputs
        For each cut block k, the detached copy of h_k (a leaf that requires grad) that
        the layers above start from; after a backward pass its ``.grad`` holds the gradient
        those layers send down.
    """
    cut_set = set(cut)
    outputs, inputs = [], []
    h = x
    for k, block in enumerate(model.blocks, start=1):
        h = block(h)
        if k in cut_set:
            outputs.append(h)
            h = h.detach().requires_grad_()
            inputs.append(h)
    return model.out(h), outputs, inputs


class Backprop(nn.Module):
    """``bp``: the true gradient, by ordinary autograd."""

    def step(self, model: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> Step:
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        return Step(loss.detach(), logits.detach(), {})


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class SyntheticGradients(nn.Module):
    """``sg`` / ``sgprop``: a synthetic-gradient module after each listed block.

    SG_k is, with ``module="linear"`` (the paper's experiments), the linear map
    ``SG(h, y) = hA + yB + C`` of ``[h_k, onehot(y)]``; with ``module="sigmoid"`` it is
    ``SG(h, y) = d ⊙ σ(hA) + yB + C``, the form Section 3 of the paper recommends for log
    loss, where a linear SG "will struggle to overfit to training data" (``d`` a learned
    per-unit scale: our reading of the paper's ``d``). Every parameter starts at zero, so
    each SG first produces zero gradients ("it does not affect convergence", Supplementary
    C). They are stored stacked over the K modules (``weight_h [K, width, width]`` = A,
    ``weight_y [K, n_classes, width]`` = B, ``bias [K, 1, width]`` = C, and ``scale
    [K, 1, width]`` = d for ``sigmoid``) so that all K predictions are one batched product.

    SG_k predicts the per-example gradient, ``B × dL/dh_k`` for the batch-mean loss ``L``
    (so its scale does not depend on the batch size); the blocks below receive
    ``SG_k(h_k, y) / B``. It is trained by regression (squared error summed over units,
    averaged over examples) on its target: the gradient at h_k coming from above, which is
    the true gradient when no other SG lies between k and the loss, else the gradient that
    block k+1 sends down from its own SG (bootstrapping). Three things are detached: the
    SG's input (``sg``; with ``sgprop`` the input stays attached and the blocks below also
    receive ``alpha · dL_SG/dh_k``), its target, and the boundary between blocks.

    Parameters
    ----------
    positions
        1-based blocks after which an SG sits, e.g. ``(11,)`` or ``range(1, 21)``.
    width, n_classes
        Hidden width and number of classes.
    alpha
        ``None`` for ``sg``; a float for ``sgprop``.
    module
        ``"linear"`` or ``"sigmoid"`` (:data:`SG_MODULES`).
    """

    def __init__(
        self,
        positions: Sequence[int],
        width: int,
        n_classes: int,
        alpha: float | None = None,
        module: str = "linear",
    ) -> None:
        super().__init__()
        if module not in SG_MODULES:
            raise ValueError(
                f"unknown SG module {module!r}: expected one of {', '.join(SG_MODULES)}"
            )
        self.positions = tuple(positions)
        self.alpha = alpha
        self.module = module
        k = len(self.positions)
        self.weight_h = nn.Parameter(torch.zeros(k, width, width))
        self.weight_y = nn.Parameter(torch.zeros(k, n_classes, width))
        self.bias = nn.Parameter(torch.zeros(k, 1, width))
        if module == "sigmoid":  # only then, so that linear checkpoints stay as they were
            self.scale = nn.Parameter(torch.zeros(k, 1, width))
        self.last_targets: torch.Tensor | None = None  # [K, B, width], for inspection

    def predict(self, hs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Synthetic per-example gradients ``[K, B, width]`` from outputs ``hs [K, B, width]``."""
        onehot = F.one_hot(y, self.weight_y.shape[1]).to(hs.dtype)
        # a matmul rather than the row lookup W_y[:, y], whose backward is a slow scatter
        offset = self.bias + onehot @ self.weight_y
        if self.module == "sigmoid":
            return torch.addcmul(offset, self.scale, torch.sigmoid(torch.bmm(hs, self.weight_h)))
        return torch.baddbmm(offset, hs, self.weight_h)

    def step(self, model: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> Step:
        logits, hs, us = forward_cut(model, x, self.positions)
        loss = loss_fn(logits, y)
        h = torch.stack(hs)
        sg_in = h.detach() if self.alpha is None else _ScaleGrad.apply(h, self.alpha)
        g = self.predict(sg_in, y)
        n = len(x)
        # One backward over every segment: the loss at the top, SG_k's output at each cut.
        torch.autograd.backward(
            [loss, *hs], [None, *(g.detach() / n).unbind(0)], retain_graph=self.alpha is not None
        )
        targets = torch.stack([u.grad for u in us]) * n
        # squared error summed over units and SGs, averaged over examples
        sg_loss = F.mse_loss(g, targets, reduction="sum") / n
        sg_loss.backward()
        self.last_targets = targets
        return Step(loss.detach(), logits.detach(), {"sg_loss": sg_loss.detach()})

    def quality(
        self, model: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> dict[str, torch.Tensor]:
        """How good the synthetic gradients are on one batch (the paper's Section 4).

        Computes, without changing any parameter or buffer (BatchNorm's running
        statistics are restored) and without touching ``.grad``:

        - the true gradient ``dL/dh_k`` at each SG position, by one backward pass through
          an uncut copy of the graph;
        - SG_k's output on ``(h_k, y)``;
        - the target SG_k is trained on: the gradient the blocks above send down, i.e. the
          true gradient for the topmost SG, the gradient bootstrapped from SG_{k+1} else.

        All three are per-example gradients (``B × dL/dh_k`` for the batch-mean loss, as
        SG_k predicts them) and are compared over the whole batch as one vector.

        Returns
        -------
        dict
            Measure → tensor ``[K]`` over the positions (in ``self.positions`` order):
            ``sg_cosine`` and ``sg_relative_error`` (‖SG_k − g_k‖ / ‖g_k‖, with g_k the true
            gradient) for SG_k's output, ``target_cosine`` and ``target_relative_error`` for
            its training target. A cosine with a zero vector (SG_k = 0 at initialisation)
            is 0; a relative error against a zero true gradient is NaN.
        """
        buffers = [b.clone() for b in model.buffers()]
        n = len(x)
        try:
            with torch.enable_grad():
                hs_true, h, cut = [], x, set(self.positions)
                for k, block in enumerate(model.blocks, start=1):
                    h = block(h)
                    if k in cut:
                        hs_true.append(h)
                loss = loss_fn(model.out(h), y)
                true = torch.stack(torch.autograd.grad(loss, hs_true)) * n
                logits, hs, us = forward_cut(model, x, self.positions)
                loss = loss_fn(logits, y)
                g = self.predict(torch.stack(hs).detach(), y).detach()
                pushed = [torch.ones_like(loss), *(g / n).unbind(0)]
                targets = torch.stack(torch.autograd.grad([loss, *hs], us, pushed)) * n
        finally:
            with torch.no_grad():
                for saved, b in zip(buffers, model.buffers(), strict=True):
                    b.copy_(saved)
        true, g, targets = (t.flatten(1).double() for t in (true, g, targets))
        norm = true.norm(dim=1)
        out = {}
        for name, est in (("sg", g), ("target", targets)):
            denom = est.norm(dim=1) * norm
            cos = (est * true).sum(1) / denom
            out[f"{name}_cosine"] = torch.where(denom > 0, cos, torch.zeros_like(cos))
            err = (est - true).norm(dim=1) / norm
            out[f"{name}_relative_error"] = torch.where(norm > 0, err, torch.nan)
        return out


class DirectFeedback(nn.Module):
    """``dfa`` / ``kickback``: the output error reaches every hidden output directly.

    With ``e = dL/dlogits`` (``[B, n_classes]``), hidden output h_k receives ``e @ B_k``
    where ``B_k`` (``[n_classes, width]``) is a fixed matrix: random for ``dfa`` (uniform in
    ±1/sqrt(n_classes), seeded), all ones for ``kickback``. The readout trains on its true
    gradient. All K products are one batched matmul over the stacked ``feedback [K, C, W]``.

    Kickback with softmax cross-entropy would train on nothing: e sums to zero over classes
    for every example, so ``e @ ones`` is zero up to rounding. Use it with a per-class loss
    (``bce`` or ``mse``); :func:`make_rule` refuses the combination.
    """

    def __init__(self, feedback: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("feedback", feedback)

    def step(self, model: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> Step:
        positions = range(1, model.depth + 1)
        logits, hs, _ = forward_cut(model, x, positions)
        loss = loss_fn(logits, y)
        logits.retain_grad()
        loss.backward()  # the readout's true gradient; the cut stops it there
        signals = torch.einsum("bc,kcw->kbw", logits.grad, self.feedback)
        torch.autograd.backward(hs, list(signals.unbind(0)))
        return Step(loss.detach(), logits.detach(), {})


class _FeedbackLinear(torch.autograd.Function):
    """``x @ W.T + b`` whose backward sends the error down through ``B`` instead of ``W``."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        grad_x = grad @ feedback if ctx.needs_input_grad[0] else None
        grad_b = grad.sum(0) if ctx.has_bias else None
        return grad_x, grad.t() @ x, grad_b, None


class FeedbackAlignment(nn.Module):
    """``fa``: backprop with a fixed random matrix in place of each Linear's weight on the
    way down (Lillicrap et al. 2016). ``feedback_<k>`` has the shape of the k-th Linear's
    weight (the readout last) and the distribution of PyTorch's default Linear init."""

    def __init__(self, feedback: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.n = len(feedback)
        for i, matrix in enumerate(feedback):
            self.register_buffer(f"feedback_{i}", matrix)

    @property
    def feedback(self) -> list[torch.Tensor]:
        return [getattr(self, f"feedback_{i}") for i in range(self.n)]

    def step(self, model: MLP, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> Step:
        h = x
        feedback = self.feedback
        for block, matrix in zip(model.blocks, feedback, strict=False):
            lin = block.linear
            h = _FeedbackLinear.apply(h, lin.weight, lin.bias, matrix)
            for name, module in block.named_children():
                if name != "linear":
                    h = module(h)
        logits = _FeedbackLinear.apply(h, model.out.weight, model.out.bias, feedback[-1])
        loss = loss_fn(logits, y)
        loss.backward()
        return Step(loss.detach(), logits.detach(), {})


def _uniform(shape: Sequence[int], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=generator) * 2 - 1) * bound


def make_rule(
    method: str,
    model: MLP,
    *,
    sg_layers: Sequence[int] = (),
    sg_alpha: float = 1.0,
    loss: str = "ce",
    seed: int = 0,
    sg_module: str = "linear",
) -> nn.Module:
    """Build the rule ``method`` for ``model``; random feedback is drawn from ``seed``;
    ``sg_module`` is the form of each synthetic-gradient module (``sg``, ``sgprop``).

    Raises
    ------
    ValueError
        For an unknown method or loss, SG positions outside ``1..depth``, or kickback with
        softmax cross-entropy.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")
    width, n_classes = model.out.in_features, model.out.out_features
    generator = torch.Generator().manual_seed(10_007 + seed)  # apart from the init's stream
    if method == "bp":
        return Backprop()
    if method in ("sg", "sgprop"):
        bad = [k for k in sg_layers if not 1 <= k <= model.depth]
        if not sg_layers or bad or len(set(sg_layers)) != len(sg_layers):
            raise ValueError(
                f"SG layers must be distinct blocks from 1 to {model.depth} (the depth), "
                f"got {list(sg_layers)}"
            )
        alpha = sg_alpha if method == "sgprop" else None
        return SyntheticGradients(sorted(sg_layers), width, n_classes, alpha, sg_module)
    if method == "kickback":
        if loss == "ce":
            raise ValueError(
                "kickback with softmax cross-entropy trains on nothing: the output error sums "
                "to zero over classes for every example, so its signal e @ ones is zero. "
                "Use --loss bce (per-class sigmoid) or --loss mse"
            )
        return DirectFeedback(torch.ones(model.depth, n_classes, width))
    if method == "dfa":
        return DirectFeedback(_uniform((model.depth, n_classes, width), n_classes**-0.5, generator))
    # fa
    return FeedbackAlignment(
        [_uniform(lin.weight.shape, lin.in_features**-0.5, generator) for lin in model.linears]
    )
