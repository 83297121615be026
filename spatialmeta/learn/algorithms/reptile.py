"""Reptile: SGD on each task, then move the initialization towards the adapted weights.

Nichol, A., Achiam, J., & Schulman, J. (2018). On first-order meta-learning algorithms.
arXiv:1803.02999
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spatialmeta.learn.algorithms._functional import FunctionalTasks
from spatialmeta.learn.algorithms._heads import HeadState, head_forward, initial_heads, sgd_heads
from spatialmeta.learn.algorithms.base import (
    Learner,
    check_hops,
    check_rate,
    check_steps,
    register,
    task_features,
)
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.losses import task_nll
from spatialmeta.learn.model import GraphForecaster

__all__ = ["ReptileLearner", "ReptileStep"]


class ReptileStep(NamedTuple):
    """Outcome of :meth:`ReptileLearner.reptile_step`.

    ``loss_before``/``loss_after``: the inner-loop loss (support + query) before and after
    adaptation, averaged over tasks; ``adapted_mean``: the task-averaged adapted
    parameters that the meta-update moved towards (named as in ``named_parameters()``).
    """

    loss_before: float
    loss_after: float
    adapted_mean: dict[str, torch.Tensor]


@register("reptile")
class ReptileLearner(FunctionalTasks, Learner):
    """Reptile: SGD on each task, then move the initialization towards the adapted weights.

    Each task of a meta-batch takes ``inner_steps`` SGD steps of its masked mean NLL on
    its support *and* query windows; the meta-update is
    ``theta <- theta + meta_lr * mean_b(phi_b - theta)`` (first-order by construction: no
    gradient flows through the inner loop). Train with :meth:`meta_step`, not by
    backpropagating :meth:`loss`.

    ``head_only=True`` adapts and meta-updates the heads only (mean head, and the variance
    head with ``adapt_var``), batched like :class:`ANILLearner`: one graph forward and one
    autograd call per step for all tasks; the backbone is left as it is (pretrained, or
    trained by another learner). ``head_only=False`` adapts every backbone parameter per
    task as :class:`MAMLLearner` does (a Python loop over tasks, or ``vectorize``).

    For evaluation, :meth:`loss` adapts on the support window only and scores the
    query: the heads for ``head_only``, every parameter otherwise. :meth:`adapt` and
    :meth:`predict` (the feature hooks) always adapt the heads only.

    Parameters
    ----------
    backbone : GraphForecaster
    inner_steps : int
        SGD steps per task (at least 1).
    inner_lr : float
        Inner-loop step size.
    meta_lr : float
        Interpolation step towards the mean adapted parameters (when no optimizer is given
        to :meth:`meta_step`).
    head_only : bool
        Batched head-only variant.
    adapt_var : bool
        Head-only variant: adapt the variance head too.
    hops, vectorize :
        As in :class:`MAMLLearner` (full-network variant).

    References
    ----------
    Nichol, A., Achiam, J., & Schulman, J. (2018). On first-order meta-learning
    algorithms. arXiv:1803.02999

    Examples
    --------
    One meta-update on an episode moves the heads toward the tasks' adapted heads:

    >>> import numpy as np
    >>> from spatialmeta.data import synthetic_region_tasks
    >>> from spatialmeta.learn import LearnConfig
    >>> from spatialmeta.learn.episode import episode_inputs
    >>> from spatialmeta.learn.features import standardized_covariates
    >>> from spatialmeta.learn.model import GraphForecaster
    >>> tasks = synthetic_region_tasks(9, 60, seed=0)
    >>> cfg = LearnConfig(lags=6, horizon=2, query=4, hidden=8)
    >>> ep = episode_inputs(tasks, np.ones((9, 60), bool), standardized_covariates(tasks),
    ...                     [0, 4], 40, 18, cfg)
    >>> _ = torch.manual_seed(0)
    >>> bb = GraphForecaster(len(tasks.covariate_names), 2, hidden=8)
    >>> reptile = ReptileLearner(bb, inner_steps=3, inner_lr=0.1, meta_lr=0.5, head_only=True)
    >>> before = bb.mean_head.weight.detach().clone()
    >>> step = reptile.reptile_step(ep)
    >>> bool(step.loss_after < step.loss_before), bool((bb.mean_head.weight != before).any())
    (True, True)
    """

    config_fields = ("inner_steps", "inner_lr")

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        inner_steps: int = 5,
        inner_lr: float = 0.05,
        meta_lr: float = 0.5,
        head_only: bool = False,
        adapt_var: bool = True,
        hops: int | None = 1,
        vectorize: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.inner_steps = check_steps(inner_steps, minimum=1)
        self.inner_lr = check_rate(inner_lr, "inner_lr")
        self.meta_lr = check_rate(meta_lr, "meta_lr")
        self.head_only = bool(head_only)
        self.adapt_var = bool(adapt_var)
        self.hops = check_hops(hops)
        self.vectorize = bool(vectorize)

    @property
    def adapts_full_network(self) -> bool:
        return not self.head_only

    # -- the feature hooks (heads, batched)

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> HeadState:
        """Head parameters of every task after ``inner_steps`` SGD steps (no graph kept)."""
        params = initial_heads(self.backbone, feats.shape[0], self.adapt_var)
        params = sgd_heads(
            self.backbone, feats, target, mask, params, self.inner_steps, self.inner_lr, False
        )
        return HeadState(*(p.detach() for p in params))

    def predict(self, feats: torch.Tensor, state: HeadState | None):
        """Mean and variance ``(B, N, H)``; ``state=None`` uses the global heads."""
        if state is None:
            return self.backbone.mean_head(feats), self.backbone.variance(feats)
        return head_forward(self.backbone, feats, [p for p in state if p is not None])

    # -- per-task full-network adaptation (forecasting with ``head_only=False``)

    def adapt_episode(self, ep: EpisodeInputs, *, graphs=None) -> dict[str, torch.Tensor]:
        """Each task's parameters ``(B, ...)`` after ``inner_steps`` SGD steps on its support.

        The full-network inner loop of :meth:`meta_step`, on the support rows only (as a
        held-out region is adapted); no graph is kept. ``graphs`` as in
        :meth:`MAMLLearner.adapt_episode`.
        """
        return self._adapt_params(ep, "support", self.inner_steps, self.inner_lr, False, graphs)

    # -- evaluation

    def loss(self, ep: EpisodeInputs, global_weight: float = 0.0) -> torch.Tensor:
        """Query NLL after adapting on the support window (for evaluation; train with
        :meth:`meta_step`): the heads for ``head_only``, every parameter otherwise."""
        if self.head_only:
            return Learner.loss(self, ep, global_weight)
        graphs = self._graphs(ep)
        params = self.adapt_episode(ep, graphs=graphs)
        return self._query_nll(
            ep, {k: v.detach() for k, v in params.items()}, graphs, global_weight
        )

    # -- training

    def adapted_params(self, ep: EpisodeInputs) -> dict[str, torch.Tensor]:
        """Each task's parameters after its inner loop on support + query, ``(B, ...)``, detached.

        Names are those of ``self.named_parameters()``; head-only: the adapted heads only.
        """
        y, m = ep.targets("all")
        if self.head_only:
            with torch.no_grad():
                f = task_features(self, ep)
            params = initial_heads(self.backbone, ep.n_tasks, self.adapt_var)
            params = sgd_heads(
                self.backbone, f, y, m, params, self.inner_steps, self.inner_lr, False
            )
            names = ["backbone.mean_head.weight", "backbone.mean_head.bias"]
            if self.adapt_var:
                names += ["backbone.var_head.weight", "backbone.var_head.bias"]
            return {k: p.detach() for k, p in zip(names, params, strict=True)}
        params = self._adapt_params(ep, "all", self.inner_steps, self.inner_lr, False)
        return {k: v.detach() for k, v in params.items()}

    def _inner_loss(self, ep: EpisodeInputs, params: dict[str, torch.Tensor] | None) -> float:
        y, m = ep.targets("all")
        with torch.no_grad():
            if params is None:
                mean, var = self._global_predict(ep, "all")
            elif self.head_only:
                f = task_features(self, ep)
                mean, var = head_forward(self.backbone, f, list(params.values()))
            else:
                mean, var = self._predict_params(ep, params, "all")
            return float(task_nll(y, mean, var, m).mean())

    def meta_step(
        self,
        ep: EpisodeInputs,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        global_weight: float = 0.0,
        clip_norm: float | None = None,
    ) -> float:
        """The training hook: :meth:`reptile_step`, returning its inner-loop loss before
        adaptation (``global_weight`` and ``clip_norm`` do not apply: no gradient is taken
        through the inner loop)."""
        return self.reptile_step(ep, optimizer=optimizer).loss_before

    def reptile_step(
        self, ep: EpisodeInputs, *, optimizer: torch.optim.Optimizer | None = None
    ) -> ReptileStep:
        """One Reptile meta-update on the episode ``ep``.

        Without ``optimizer``: ``theta += meta_lr * (mean_b phi_b - theta)`` in place. With
        one: the Reptile direction is written as the gradient, ``theta.grad = theta -
        mean_b phi_b``, and ``optimizer.step()`` is called (plain SGD with learning rate
        ``meta_lr`` is then the same update; Adam gives the Adam variant).
        """
        before = self._inner_loss(ep, None)
        adapted = self.adapted_params(ep)
        after = self._inner_loss(ep, adapted)
        target = {k: v.mean(dim=0) for k, v in adapted.items()}
        params = dict(self.named_parameters())
        if optimizer is None:
            with torch.no_grad():
                for k, v in target.items():
                    params[k].add_(self.meta_lr * (v - params[k]))
        else:
            optimizer.zero_grad()
            for k, v in target.items():
                params[k].grad = (params[k] - v).detach().clone()
            optimizer.step()
        return ReptileStep(before, after, target)
