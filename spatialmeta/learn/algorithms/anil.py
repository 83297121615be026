"""ANIL: the inner loop adapts only the head; the backbone is meta-learned.

Raghu, A., Raghu, M., Bengio, S., & Vinyals, O. (2020). Rapid learning or feature reuse?
Towards understanding the effectiveness of MAML. ICLR. arXiv:1909.09157
"""

from __future__ import annotations

import torch

from spatialmeta.learn.algorithms._heads import HeadState, head_forward, initial_heads, sgd_heads
from spatialmeta.learn.algorithms.base import (
    Learner,
    check_rate,
    check_steps,
    register,
)
from spatialmeta.learn.model import GraphForecaster

__all__ = ["ANILLearner"]


@register("anil")
class ANILLearner(Learner):
    """ANIL: the inner loop adapts only the head; the backbone is meta-learned.

    Each task starts from the global ``mean_head`` (and, with ``adapt_var``, ``var_head``)
    and takes ``inner_steps`` SGD steps of its masked mean Gaussian NLL on its support set.
    All ``B`` tasks of a meta-batch run together: the head parameters are batched tensors
    ``(B, H, d)``/``(B, H)`` and one autograd call per step gives every task's own
    gradient (the summed loss separates over tasks) — no Python loop over tasks.
    :meth:`adapt_loop` is the same computation one task at a time (reference, benchmark).

    Second-order by default: the inner gradients are part of the graph, so the query loss
    differentiates through them into the head initialization *and* the backbone features
    of the support set. ``first_order=True`` treats the inner gradients as constants
    (first-order MAML applied to the head); the backbone then learns from the query
    features only.

    Parameters
    ----------
    backbone : GraphForecaster
    inner_steps : int
        SGD steps per task (0: no adaptation).
    inner_lr : float
        Inner-loop step size.
    first_order : bool
        Drop second-order terms.
    adapt_var : bool
        Adapt the variance head too (default: the mean head only; the variance head is
        global and meta-learned).

    References
    ----------
    Raghu, A., Raghu, M., Bengio, S., & Vinyals, O. (2020). Rapid learning or feature
    reuse? Towards understanding the effectiveness of MAML. ICLR. arXiv:1909.09157

    Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast
    adaptation of deep networks. ICML. arXiv:1703.03400 (first-order variant, Sec. 5.2)

    Examples
    --------
    >>> from spatialmeta.learn.model import GraphForecaster
    >>> _ = torch.manual_seed(0)
    >>> learner = ANILLearner(GraphForecaster(2, 3, hidden=8), inner_steps=2, inner_lr=0.1)
    >>> feats, y, m = torch.randn(4, 10, 8), torch.randn(4, 10, 3), torch.ones(4, 10, 3)
    >>> state = learner.adapt(feats, y, m)
    >>> tuple(state.weight.shape), tuple(learner.predict(feats, state)[0].shape)
    ((4, 3, 8), (4, 10, 3))
    """

    config_fields = ("inner_steps", "inner_lr")

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        first_order: bool = False,
        adapt_var: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.inner_steps = check_steps(inner_steps)
        self.inner_lr = check_rate(inner_lr, "inner_lr")
        self.first_order = bool(first_order)
        self.adapt_var = bool(adapt_var)

    def _create_graph(self) -> bool:
        return not self.first_order and torch.is_grad_enabled()

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> HeadState:
        """Adapted head parameters of every task, ``(B, H, d)`` and ``(B, H)``.

        Parameters
        ----------
        feats : ``(B, N, d)`` support features
        target : ``(B, N, H)`` support targets (normalized)
        mask : ``(B, N, H)`` which targets are known
        """
        params = initial_heads(self.backbone, feats.shape[0], self.adapt_var)
        params = sgd_heads(
            self.backbone,
            feats,
            target,
            mask,
            params,
            self.inner_steps,
            self.inner_lr,
            self._create_graph(),
        )
        return HeadState(*params)

    def adapt_loop(
        self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> HeadState:
        """:meth:`adapt` one task at a time (a Python loop): the reference for the batched loop."""
        per_task = []
        for b in range(feats.shape[0]):
            sl = slice(b, b + 1)
            params = initial_heads(self.backbone, 1, self.adapt_var)
            per_task.append(
                sgd_heads(
                    self.backbone,
                    feats[sl],
                    target[sl],
                    mask[sl],
                    params,
                    self.inner_steps,
                    self.inner_lr,
                    self._create_graph(),
                )
            )
        return HeadState(*(torch.cat(p) for p in zip(*per_task, strict=True)))

    def predict(
        self, feats: torch.Tensor, state: HeadState | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, N, H)``; ``state=None`` uses the global heads."""
        if state is None:
            return self.backbone.mean_head(feats), self.backbone.variance(feats)
        params = [p for p in state if p is not None]
        return head_forward(self.backbone, feats, params)
