"""Per-task linear heads as batched tensors: the inner loop ANIL, head-only Reptile and the
global network's fine-tuning share (one autograd call per step for every task)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from spatialmeta.learn.losses import task_nll
from spatialmeta.learn.model import GraphForecaster

__all__ = ["HeadState", "head_forward", "initial_heads", "sgd_heads", "INNER_MAX_NORM"]

# Every inner loop clips each task's step to this gradient norm. The Gaussian NLL's
# gradient grows as the predicted variance shrinks: from a confident pretrained network,
# one unclipped SGD step (lr 0.05) on a support window with a surprise blew the adapted
# loss up to 6e4 and test RMSE to 8 (13x the unadapted network); unclipped ANIL heads
# from a pretrained backbone diverged to a training loss of 4e6 (the learner contract's
# synthetic regions, 60 episodes).
INNER_MAX_NORM = 1.0


class HeadState(NamedTuple):
    """Per-task head parameters: ``weight`` ``(B, H, d)``, ``bias`` ``(B, H)``.

    ``var_weight``/``var_bias`` are the variance head's when it is adapted, else None
    (the global variance head is used).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    var_weight: torch.Tensor | None = None
    var_bias: torch.Tensor | None = None


def head_forward(backbone: GraphForecaster, feats: torch.Tensor, params) -> tuple:
    """Mean and variance from batched head parameters ``[w, b(, vw, vb)]``."""
    mean = torch.einsum("bnd,bhd->bnh", feats, params[0]) + params[1].unsqueeze(1)
    if len(params) == 4:
        raw = torch.einsum("bnd,bhd->bnh", feats, params[2]) + params[3].unsqueeze(1)
        var = nn.functional.softplus(raw) + 1e-3  # as GraphForecaster.variance
    else:
        var = backbone.variance(feats)
    return mean, var


def initial_heads(backbone: GraphForecaster, b: int, adapt_var: bool) -> list[torch.Tensor]:
    heads = [backbone.mean_head] + ([backbone.var_head] if adapt_var else [])
    out = []
    with torch.enable_grad():  # a view made under no_grad would be cut off from the weights
        for head in heads:
            out += [
                head.weight.expand(b, *head.weight.shape),
                head.bias.expand(b, *head.bias.shape),
            ]
    return out


def sgd_heads(
    backbone: GraphForecaster,
    feats: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    params: list[torch.Tensor],
    steps: int,
    lr: float,
    create_graph: bool,
) -> list[torch.Tensor]:
    """``steps`` SGD steps of per-task NLL on batched head parameters, all tasks at once.

    Each task's step is clipped to gradient norm :data:`INNER_MAX_NORM` (over all its head
    parameters), differentiably.
    """
    with torch.enable_grad():
        params = [p if p.requires_grad else p.detach().requires_grad_() for p in params]
        for _ in range(steps):
            mean, var = head_forward(backbone, feats, params)
            loss = task_nll(target, mean, var, mask).sum()  # task b's grad is its own loss's
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            # (B,) per-task norms; floored before the root, whose derivative at 0 is
            # infinite (a task with no known support value has a zero gradient)
            sq = sum((g * g).flatten(1).sum(1) for g in grads)
            scale = torch.clamp(INNER_MAX_NORM / torch.sqrt(sq.clamp_min(1e-24)), max=1.0)
            params = [
                p - lr * scale.view(-1, *([1] * (g.dim() - 1))) * g
                for p, g in zip(params, grads, strict=True)
            ]
    return params
