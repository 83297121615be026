"""Meta-learners over region tasks: ANIL, MAML, Reptile and prototypical networks.

Every learner wraps a :class:`~spatialmeta.learn.model.GraphForecaster` backbone and is
driven one meta-batch (episode) at a time: ``B`` task regions, each with a support window
(the origins before ``s``) and a query window (the origins from ``s``).

Two ways to drive a learner
---------------------------
*Feature learners* (:class:`MetaLearner`: :class:`ANILLearner`, head-only
:class:`ReptileLearner`, and :class:`~spatialmeta.learn.meta.RidgeMetaLearner` as it
stands) adapt on backbone features that one graph forward computes for the whole
meta-batch::

    state = learner.adapt(support_feats, support_y, support_mask)   # (B, N, d), (B, N, H) x2
    mean, var = learner.predict(query_feats, state)                  # (B, N, H) each

*Episode learners* (:class:`MAMLLearner`, full-network :class:`ReptileLearner`) adapt the
whole backbone per task, so the graph forward itself differs between tasks and they need
the raw episode inputs (lag windows, calendar, covariates, graph), not features.

To drive both kinds with the same inputs, every learner here has a method
``episode_loss(tasks, known, covariates, task_idx, s, support, config, global_weight=0.0)``
whose arguments are those of :func:`spatialmeta.learn.train.episode_loss` without the
learner, and :func:`learner_episode_loss` is a drop-in replacement for that function
which accepts any learner (it calls the learner's own ``episode_loss`` when there is one,
and otherwise runs the shared feature path, so ``RidgeMetaLearner`` works unchanged).
:func:`meta_update` performs one meta-training step for any learner (a backward pass and an
optimizer step, or Reptile's parameter interpolation).

Reproducibility: no learner draws random numbers; given a seeded backbone initialization
(``torch.manual_seed``) and a seeded :class:`~spatialmeta.tasks.sampling.EpisodeSampler`,
runs repeat exactly.

References
----------
Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast adaptation
of deep networks. ICML. arXiv:1703.03400 (MAML and its first-order approximation).

Raghu, A., Raghu, M., Bengio, S., & Vinyals, O. (2020). Rapid learning or feature reuse?
Towards understanding the effectiveness of MAML. ICLR. arXiv:1909.09157 (ANIL).

Nichol, A., Achiam, J., & Schulman, J. (2018). On first-order meta-learning algorithms.
arXiv:1803.02999 (Reptile).

Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot learning.
NeurIPS. arXiv:1703.05175.
"""

from __future__ import annotations

import abc
import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch_geometric.utils import k_hop_subgraph

from spatialmeta.learn.features import origin_batch, window_stats
from spatialmeta.learn.model import GraphForecaster
from spatialmeta.tasks.region import RegionTaskSet
from spatialmeta.tasks.sampling import batch_subgraph, support_query_origins

__all__ = [
    "MetaLearner",
    "HeadState",
    "ANILLearner",
    "MAMLLearner",
    "ReptileLearner",
    "ReptileStep",
    "ProtoNetLearner",
    "Prototypes",
    "Exceedance",
    "exceedance_labels",
    "EpisodeInputs",
    "episode_inputs",
    "query_origins",
    "learner_episode_loss",
    "feature_episode_loss",
    "meta_update",
    "task_nll",
]


# --------------------------------------------------------------------------- checks


def _check_steps(value, name: str = "inner_steps", minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_rate(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.")
    return v


def _check_hops(value) -> int | None:
    if value is None:
        return None
    return _check_steps(value, "hops", 1)


# --------------------------------------------------------------------------- losses


def task_nll(
    y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Masked mean Gaussian NLL of each task: ``(B, N, H)`` inputs → ``(B,)``.

    The constant is dropped, as in :func:`gaussian_nll`. Summing
    it over tasks gives a loss whose gradient with respect to task ``b``'s own parameters
    is the gradient of task ``b``'s loss alone — which is what lets one autograd call run
    the inner loops of all tasks at once.
    """
    nll = _nll(y, mean, var) * mask
    return nll.sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1)).clamp_min(1.0)


def _nll(y, mean, var) -> torch.Tensor:
    return 0.5 * (torch.log(var) + (y - mean) ** 2 / var)


def gaussian_nll(y, mean, var, mask) -> torch.Tensor:
    """Masked mean Gaussian negative log-likelihood over every task, origin and horizon
    (constant dropped)."""
    return (_nll(y, mean, var) * mask).sum() / mask.sum().clamp_min(1.0)


# --------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeInputs:
    """Raw inputs of one meta-batch: everything a graph forward and the losses need.

    Built by :func:`episode_inputs` exactly as :func:`spatialmeta.learn.train.episode_loss`
    builds its batch. Origins are the support origins followed by the query origins.

    Attributes
    ----------
    lags, lag_mask : ``(O, R', L)``
    calendar : ``(O, 4H)``
    covariates : ``(R', C)`` standardized
    edge_index : ``(2, E')`` graph over the ``R'`` nodes
    task_pos : ``(B,)`` positions of the task regions among the ``R'`` nodes
    target, target_mask : ``(B, O, H)`` normalized targets of the task regions, and which are known
    n_support : int
        The first ``n_support`` origins are support origins.
    """

    lags: torch.Tensor
    lag_mask: torch.Tensor
    calendar: torch.Tensor
    covariates: torch.Tensor
    edge_index: torch.Tensor
    task_pos: torch.Tensor
    target: torch.Tensor
    target_mask: torch.Tensor
    n_support: int

    @property
    def n_tasks(self) -> int:
        return int(self.task_pos.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.lags.shape[1])

    def rows(self, which: str) -> slice:
        """Origin rows of ``"support"``, ``"query"`` or ``"all"``."""
        if which == "support":
            return slice(0, self.n_support)
        if which == "query":
            return slice(self.n_support, None)
        if which == "all":
            return slice(None)
        raise ValueError(f"`which` must be 'support', 'query' or 'all'; got {which!r}.")

    def inputs(self, rows: slice = slice(None), nodes: torch.Tensor | None = None):
        """Positional arguments of :meth:`GraphForecaster.features` for some origins (and nodes).

        With ``nodes``, the node inputs are restricted to them; the edges must then be
        given separately (replace the last element).
        """
        lags, lag_mask, cov = self.lags[rows], self.lag_mask[rows], self.covariates
        if nodes is not None:
            lags, lag_mask, cov = lags[:, nodes], lag_mask[:, nodes], cov[nodes]
        return lags, lag_mask, self.calendar[rows], cov, self.edge_index

    def targets(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and mask ``(B, O_which, H)``."""
        r = self.rows(which)
        return self.target[:, r], self.target_mask[:, r]


def query_origins(s: int, query: int, span: int | None = None) -> np.ndarray:
    """The ``query`` origins of an episode whose support window ends at ``s``.

    ``span=None`` (or ``span <= query``) gives ``s .. s + query - 1``; a longer ``span``
    spreads them evenly over ``s .. s + span - 1``, so that training episodes reach as far
    past the support window as the test period reaches past ``test_start`` (a held-out
    region's normalization and adaptation come from its support window for every test
    origin, up to the end of the test period).

    Examples
    --------
    >>> query_origins(100, 4).tolist(), query_origins(100, 4, 40).tolist()
    ([100, 101, 102, 103], [100, 113, 126, 139])
    """
    if span is None or span <= query:
        return np.arange(s, s + query)
    return s + np.unique(np.round(np.linspace(0, span - 1, query)).astype(np.int64))


def episode_inputs(
    tasks: RegionTaskSet,
    known: np.ndarray,
    covariates: torch.Tensor,
    task_idx: np.ndarray,
    s: int,
    support: int,
    config,
) -> EpisodeInputs:
    """Inputs of the meta-batch ``task_idx`` with support window ``[s - support, s)``.

    Same arguments and the same batch as :func:`spatialmeta.learn.train.episode_loss`:
    per-region normalization from the support window only, origins from
    :func:`~spatialmeta.tasks.sampling.support_query_origins`, and with
    ``config.subgraph_hops`` the task regions' neighbourhood instead of the whole graph;
    tensors are on ``covariates.device``.
    """
    L, H, Q = config.lags, config.horizon, config.query
    sup, qry = support_query_origins(s, support, L, H, Q)
    qry = query_origins(s, Q, getattr(config, "query_span", None))
    norm = window_stats(tasks.series, known, s - support, s)
    device = covariates.device
    edge_index = tasks.graph.data.edge_index
    regions, cov, ti = None, covariates, torch.as_tensor(np.asarray(task_idx), dtype=torch.long)
    if config.subgraph_hops is not None:
        subset, edge_index, ti = batch_subgraph(
            edge_index, task_idx, config.subgraph_hops, tasks.n_regions
        )
        regions, cov = subset.numpy(), covariates[subset.to(device)]
    batch = origin_batch(
        tasks,
        known,
        np.concatenate([sup, qry]),
        norm,
        lags=L,
        horizon=H,
        regions=regions,
        device=device,
    )
    ti = ti.to(device)
    return EpisodeInputs(
        lags=batch.lags,
        lag_mask=batch.lag_mask,
        calendar=batch.calendar,
        covariates=cov,
        edge_index=edge_index.to(device),
        task_pos=ti,
        target=batch.target[:, ti].transpose(0, 1),
        target_mask=batch.target_mask[:, ti].transpose(0, 1).float(),
        n_support=len(sup),
    )


def _task_features(backbone: GraphForecaster, ep: EpisodeInputs) -> torch.Tensor:
    """One graph forward for the whole meta-batch: task features ``(B, O, d)``."""
    feats = backbone.features(*ep.inputs())
    return feats[:, ep.task_pos].transpose(0, 1)


def feature_episode_loss(
    learner,
    tasks: RegionTaskSet,
    known: np.ndarray,
    covariates: torch.Tensor,
    task_idx: np.ndarray,
    s: int,
    support: int,
    config,
    global_weight: float = 0.0,
) -> torch.Tensor:
    """Query NLL of a feature learner (anything with ``backbone``, ``adapt`` and ``predict``).

    The same computation as :func:`spatialmeta.learn.train.episode_loss`: one graph forward
    for every support and query origin, adaptation of all tasks from their support
    features, pooled masked NLL on the query; ``global_weight`` adds the loss of the
    unadapted prediction (``predict(feats, None)``).
    """
    ep = episode_inputs(tasks, known, covariates, task_idx, s, support, config)
    f = _task_features(learner.backbone, ep)
    ns = ep.n_support
    (ys, ms), (yq, mq) = ep.targets("support"), ep.targets("query")
    state = learner.adapt(f[:, :ns], ys, ms)
    mean, var = learner.predict(f[:, ns:], state)
    loss = gaussian_nll(yq, mean, var, mq)
    if global_weight > 0:
        g_mean, g_var = learner.predict(f[:, ns:], None)
        loss = loss + global_weight * gaussian_nll(yq, g_mean, g_var, mq)
    return loss


def learner_episode_loss(
    learner,
    tasks: RegionTaskSet,
    known: np.ndarray,
    covariates: torch.Tensor,
    task_idx: np.ndarray,
    s: int,
    support: int,
    config,
    global_weight: float = 0.0,
) -> torch.Tensor:
    """Drop-in for :func:`spatialmeta.learn.train.episode_loss` that accepts any learner.

    Calls ``learner.episode_loss(...)`` when the learner has one (every learner in this
    module), and otherwise :func:`feature_episode_loss` (``RidgeMetaLearner``).
    """
    own = getattr(learner, "episode_loss", None)
    if callable(own):
        return own(tasks, known, covariates, task_idx, s, support, config, global_weight)
    return feature_episode_loss(
        learner, tasks, known, covariates, task_idx, s, support, config, global_weight
    )


def meta_update(
    learner,
    optimizer: torch.optim.Optimizer | None,
    tasks: RegionTaskSet,
    known: np.ndarray,
    covariates: torch.Tensor,
    task_idx: np.ndarray,
    s: int,
    support: int,
    config,
    global_weight: float = 0.0,
    clip_norm: float | None = 5.0,
) -> float:
    """One meta-training step of any learner on one meta-batch; returns the episode's loss.

    Gradient-based learners (ridge, ANIL, MAML, ProtoNets): backward of
    :func:`learner_episode_loss`, gradient clipping, ``optimizer.step()``. Reptile:
    :meth:`ReptileLearner.meta_step` (with ``optimizer``, or its own ``meta_lr`` when
    ``optimizer`` is None); the value returned is then its inner-loop loss before adaptation.
    """
    if isinstance(learner, ReptileLearner):
        return learner.meta_step(
            tasks, known, covariates, task_idx, s, support, config, optimizer=optimizer
        ).loss_before
    if optimizer is None:
        raise ValueError("`optimizer` is required for gradient-based meta-learners.")
    loss = learner_episode_loss(
        learner, tasks, known, covariates, task_idx, s, support, config, global_weight
    )
    optimizer.zero_grad()
    if not torch.isfinite(loss):  # a diverged episode updates nothing (validation decides)
        return float(loss.detach())
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(learner.parameters(), clip_norm)
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- base


class MetaLearner(nn.Module, metaclass=abc.ABCMeta):
    """Base of the feature learners: a backbone plus per-task adaptation on its features.

    The protocol is three names: a ``backbone`` (:class:`GraphForecaster`),
    ``adapt(support_feats, support_y, support_mask) -> state`` on ``(B, N, d)`` features
    and ``(B, N, H)`` targets and masks, and ``predict(query_feats, state) -> (mean, var)``,
    each ``(B, N, H)``, where ``state=None`` means "unadapted" (the global network).

    :class:`~spatialmeta.learn.meta.RidgeMetaLearner` satisfies the protocol as it stands,
    and is recognised without inheriting: ``isinstance(ridge, MetaLearner)`` is True,
    because the check is structural (any ``nn.Module`` subclass with callable ``adapt`` and
    ``predict``, like :class:`collections.abc.Iterable`). ``backbone`` is an instance
    attribute and cannot be checked on the class.

    Subclasses get :meth:`episode_loss` (the feature path of
    :func:`spatialmeta.learn.train.episode_loss`) and :meth:`query_loss`.
    """

    backbone: GraphForecaster

    @classmethod
    def __subclasshook__(cls, other):
        if cls is MetaLearner:
            if issubclass(other, nn.Module) and all(
                callable(getattr(other, name, None)) for name in ("adapt", "predict")
            ):
                return True
        return NotImplemented

    @abc.abstractmethod
    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """Adapt every task of a meta-batch from its support set; returns the adapted state."""

    @abc.abstractmethod
    def predict(self, feats: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, N, H)`` for query features; ``state=None`` is unadapted."""

    def query_loss(self, support_feats, support_y, support_mask, query_feats, query_y, query_mask):
        """Pooled masked query NLL after adapting on the support set."""
        state = self.adapt(support_feats, support_y, support_mask)
        mean, var = self.predict(query_feats, state)
        return gaussian_nll(query_y, mean, var, query_mask)

    def episode_loss(
        self,
        tasks: RegionTaskSet,
        known: np.ndarray,
        covariates: torch.Tensor,
        task_idx: np.ndarray,
        s: int,
        support: int,
        config,
        global_weight: float = 0.0,
    ) -> torch.Tensor:
        """Query loss of one meta-batch.

        Arguments as :func:`spatialmeta.learn.train.episode_loss` (without the learner).
        """
        return feature_episode_loss(
            self, tasks, known, covariates, task_idx, s, support, config, global_weight
        )


# --------------------------------------------------------------------------- heads


class HeadState(NamedTuple):
    """Per-task head parameters: ``weight`` ``(B, H, d)``, ``bias`` ``(B, H)``.

    ``var_weight``/``var_bias`` are the variance head's when it is adapted, else None
    (the global variance head is used).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    var_weight: torch.Tensor | None = None
    var_bias: torch.Tensor | None = None


def _head_forward(backbone: GraphForecaster, feats: torch.Tensor, params) -> tuple:
    """Mean and variance from batched head parameters ``[w, b(, vw, vb)]``."""
    mean = torch.einsum("bnd,bhd->bnh", feats, params[0]) + params[1].unsqueeze(1)
    if len(params) == 4:
        raw = torch.einsum("bnd,bhd->bnh", feats, params[2]) + params[3].unsqueeze(1)
        var = nn.functional.softplus(raw) + 1e-3  # as GraphForecaster.variance
    else:
        var = backbone.variance(feats)
    return mean, var


def _initial_heads(backbone: GraphForecaster, b: int, adapt_var: bool) -> list[torch.Tensor]:
    heads = [backbone.mean_head] + ([backbone.var_head] if adapt_var else [])
    out = []
    with torch.enable_grad():  # a view made under no_grad would be cut off from the weights
        for head in heads:
            out += [
                head.weight.expand(b, *head.weight.shape),
                head.bias.expand(b, *head.bias.shape),
            ]
    return out


def _sgd_heads(
    backbone: GraphForecaster,
    feats: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    params: list[torch.Tensor],
    steps: int,
    lr: float,
    create_graph: bool,
) -> list[torch.Tensor]:
    """``steps`` SGD steps of per-task NLL on batched head parameters, all tasks at once."""
    with torch.enable_grad():
        params = [p if p.requires_grad else p.detach().requires_grad_() for p in params]
        for _ in range(steps):
            mean, var = _head_forward(backbone, feats, params)
            loss = task_nll(target, mean, var, mask).sum()  # task b's grad is its own loss's
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            params = [p - lr * g for p, g in zip(params, grads, strict=True)]
    return params


class ANILLearner(MetaLearner):
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
    >>> _ = torch.manual_seed(0)
    >>> learner = ANILLearner(GraphForecaster(2, 3, hidden=8), inner_steps=2, inner_lr=0.1)
    >>> feats, y, m = torch.randn(4, 10, 8), torch.randn(4, 10, 3), torch.ones(4, 10, 3)
    >>> state = learner.adapt(feats, y, m)
    >>> tuple(state.weight.shape), tuple(learner.predict(feats, state)[0].shape)
    ((4, 3, 8), (4, 10, 3))
    """

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
        self.inner_steps = _check_steps(inner_steps)
        self.inner_lr = _check_rate(inner_lr, "inner_lr")
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
        params = _initial_heads(self.backbone, feats.shape[0], self.adapt_var)
        params = _sgd_heads(
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
            params = _initial_heads(self.backbone, 1, self.adapt_var)
            per_task.append(
                _sgd_heads(
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
        return _head_forward(self.backbone, feats, params)


# --------------------------------------------------------------------------- full network


class _UnrolledGRU(nn.Module):
    """A single-layer, batch-first ``nn.GRU`` written out step by step, same parameter names.

    ``torch.func.vmap`` has no batching rule for the fused ``aten::gru.input`` kernel
    (torch 2.13), so batched per-task weights cannot pass through ``nn.GRU``; these are
    ``nn.GRU``'s documented equations in elementary ops, which vmap handles.
    """

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError(
                "vectorized adaptation supports a single-layer, unidirectional, batch-first GRU "
                "with biases; use vectorize=False."
            )
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            setattr(self, name, getattr(gru, name))

    def forward(self, seq: torch.Tensor):
        gi = seq @ self.weight_ih_l0.T + self.bias_ih_l0  # (N, L, 3h)
        h = seq.new_zeros(seq.shape[0], self.weight_hh_l0.shape[1])
        outs = []
        for t in range(seq.shape[1]):  # a recursion in time, each step over all sequences
            gh = h @ self.weight_hh_l0.T + self.bias_hh_l0
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, dim=1), h.unsqueeze(0)


class _Net(nn.Module):
    """Backbone as a module whose ``forward`` gives mean and variance ``(O, R, H)``.

    ``functional_call`` needs a ``forward``; parameter names are ``backbone.<name>``.
    """

    def __init__(self, backbone: GraphForecaster):
        super().__init__()
        self.backbone = backbone

    def forward(self, lags, lag_mask, calendar, covariates, edge_index):
        feats = self.backbone.features(lags, lag_mask, calendar, covariates, edge_index)
        return self.backbone.mean_head(feats), self.backbone.variance(feats)


def _vmappable(backbone: GraphForecaster) -> GraphForecaster:
    """A shallow copy of the backbone whose GRU is :class:`_UnrolledGRU` (same parameters)."""
    proxy = copy.copy(backbone)
    proxy._modules = dict(backbone._modules)
    proxy._modules["gru"] = _UnrolledGRU(backbone.gru)
    return proxy


def _pick(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x[:, pos]`` for a one-element index (vmap-friendly): ``(O, R, H)`` → ``(O, H)``."""
    return x.index_select(1, pos).squeeze(1)


class _TaskGraph(NamedTuple):
    nodes: torch.Tensor  # node indices into the episode's R' nodes
    edge_index: torch.Tensor  # relabelled
    pos: torch.Tensor  # (1,) or (B,) position(s) of the task node(s) among ``nodes``


# Largest norm of one inner-loop gradient (all backbone parameters of one task together).
# The Gaussian NLL's gradient grows as the predicted variance shrinks: from a confident
# pretrained network, one unclipped SGD step (lr 0.05) on a support window with a surprise
# blew the adapted loss up to 6e4 and test RMSE to 8 (13x the unadapted network).
_INNER_MAX_NORM = 1.0


def _clip_scale(grads: list[torch.Tensor]) -> torch.Tensor:
    """``min(1, max_norm / ||g||)`` over all of a task's gradients (differentiable)."""
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    return torch.clamp(_INNER_MAX_NORM / (norm + 1e-12), max=1.0)


class _FunctionalTasks:
    """Per-task adaptation of every backbone parameter with ``torch.func.functional_call``.

    Mixed into :class:`MAMLLearner` and :class:`ReptileLearner`; expects ``backbone``,
    ``hops`` and ``vectorize`` attributes.
    """

    backbone: GraphForecaster
    hops: int | None
    vectorize: bool

    def base_params(self) -> dict[str, torch.Tensor]:
        """The shared (meta-learned) parameters, named as ``functional_call`` needs them."""
        return {f"backbone.{k}": v for k, v in self.backbone.named_parameters()}

    def task_graphs(self, ep: EpisodeInputs) -> list:
        """The neighbourhood each task's forward runs on (pass as ``graphs=`` to reuse)."""
        return self._graphs(ep)

    def _graphs(self, ep: EpisodeInputs) -> list[_TaskGraph]:
        """Each task's own neighbourhood (loop) or the batch's (vectorized)."""
        n, dev = ep.n_nodes, ep.lags.device
        if self.vectorize:
            if self.hops is None:
                return [_TaskGraph(torch.arange(n, device=dev), ep.edge_index, ep.task_pos)]
            nodes, ei, pos, _ = k_hop_subgraph(
                ep.task_pos, self.hops, ep.edge_index, relabel_nodes=True, num_nodes=n
            )
            return [_TaskGraph(nodes, ei, pos)]
        out = []
        for b in range(ep.n_tasks):
            center = ep.task_pos[b : b + 1]
            if self.hops is None:
                out.append(_TaskGraph(torch.arange(n, device=dev), ep.edge_index, center))
            else:
                nodes, ei, pos, _ = k_hop_subgraph(
                    center, self.hops, ep.edge_index, relabel_nodes=True, num_nodes=n
                )
                out.append(_TaskGraph(nodes, ei, pos))
        return out

    @staticmethod
    def _node_inputs(ep: EpisodeInputs, rows: slice, g: _TaskGraph):
        lags, lag_mask, cal, cov, _ = ep.inputs(rows, g.nodes)
        return lags, lag_mask, cal, cov, g.edge_index

    def _adapt_params(
        self,
        ep: EpisodeInputs,
        which: str,
        steps: int,
        lr: float,
        create_graph: bool,
        graphs: list[_TaskGraph] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-task parameters ``(B, *shape)`` after ``steps`` SGD steps on the ``which`` rows."""
        base = self.base_params()
        b = ep.n_tasks
        if steps == 0:
            return {k: v.expand(b, *v.shape) for k, v in base.items()}
        y, m = ep.targets(which)
        rows = ep.rows(which)
        graphs = self._graphs(ep) if graphs is None else graphs
        if self.vectorize:
            return self._adapt_vmap(ep, rows, graphs[0], y, m, base, steps, lr, create_graph)
        net = _Net(self.backbone)
        names = list(base)
        adapted = []
        with torch.enable_grad():
            start = {
                k: v if v.requires_grad else v.detach().requires_grad_() for k, v in base.items()
            }
            for t, g in enumerate(graphs):  # MAML needs a graph forward per task: see the class
                x = self._node_inputs(ep, rows, g)
                p = dict(start)
                for _ in range(steps):
                    mean, var = functional_call(net, p, x)
                    loss = task_nll(y[t], _pick(mean, g.pos), _pick(var, g.pos), m[t])
                    grads = torch.autograd.grad(
                        loss, [p[k] for k in names], create_graph=create_graph, allow_unused=True
                    )
                    step = lr * _clip_scale([gr for gr in grads if gr is not None])
                    p = {
                        k: p[k] if gr is None else p[k] - step * gr
                        for k, gr in zip(names, grads, strict=True)
                    }
                adapted.append(p)
        return {k: torch.stack([a[k] for a in adapted]) for k in names}

    def _adapt_vmap(self, ep, rows, g, y, m, base, steps, lr, create_graph):
        net = _Net(_vmappable(self.backbone))
        x = self._node_inputs(ep, rows, g)

        def loss_fn(p, pos, yt, mt):
            mean, var = functional_call(net, p, x)
            return task_nll(yt, _pick(mean, pos), _pick(var, pos), mt)

        def inner(pos, yt, mt):
            p = base
            for _ in range(steps):
                gr = grad(loss_fn)(p, pos, yt, mt)
                if not create_graph:
                    gr = {k: v.detach() for k, v in gr.items()}
                step = lr * _clip_scale(list(gr.values()))
                p = {k: p[k] - step * gr[k] for k in p}
            return p

        with torch.enable_grad():
            return vmap(inner)(g.pos.unsqueeze(1), y, m)

    def _predict_params(
        self,
        ep: EpisodeInputs,
        params: dict[str, torch.Tensor],
        which: str,
        graphs: list[_TaskGraph] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, O_which, H)`` of each task with its own parameters."""
        rows = ep.rows(which)
        graphs = self._graphs(ep) if graphs is None else graphs
        if self.vectorize:
            g = graphs[0]
            net = _Net(_vmappable(self.backbone))
            x = self._node_inputs(ep, rows, g)

            def one(p, pos):
                mean, var = functional_call(net, p, x)
                return _pick(mean, pos), _pick(var, pos)

            return vmap(one)(params, g.pos.unsqueeze(1))
        net = _Net(self.backbone)
        means, vars_ = [], []
        for t, g in enumerate(graphs):
            p = {k: v[t] for k, v in params.items()}
            mean, var = functional_call(net, p, self._node_inputs(ep, rows, g))
            means.append(_pick(mean, g.pos))
            vars_.append(_pick(var, g.pos))
        return torch.stack(means), torch.stack(vars_)

    def predict_episode(
        self,
        ep: EpisodeInputs,
        params: dict[str, torch.Tensor] | None,
        which: str = "query",
        *,
        graphs=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, O, H)`` on the ``which`` origins (``params=None``: unadapted)."""
        if params is None:
            return self._global_predict(ep, which)
        return self._predict_params(ep, params, which, graphs)

    def _query_nll(self, ep: EpisodeInputs, params, graphs, global_weight: float) -> torch.Tensor:
        """Query NLL with the adapted ``params`` (plus ``global_weight`` x the unadapted NLL)."""
        yq, mq = ep.targets("query")
        mean, var = self._predict_params(ep, params, "query", graphs)
        loss = gaussian_nll(yq, mean, var, mq)
        if global_weight > 0:
            g_mean, g_var = self._global_predict(ep, "query")
            loss = loss + global_weight * gaussian_nll(yq, g_mean, g_var, mq)
        return loss

    def _global_predict(self, ep: EpisodeInputs, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unadapted mean and variance ``(B, O_which, H)``: one forward for the meta-batch."""
        rows = ep.rows(which)
        feats = self.backbone.features(*ep.inputs(rows))[:, ep.task_pos].transpose(0, 1)
        return self.backbone.mean_head(feats), self.backbone.variance(feats)


class MAMLLearner(_FunctionalTasks, nn.Module):
    """MAML: every backbone parameter adapted per task by SGD on its support set.

    Interface. The backbone's features are themselves adapted per task, so MAML cannot
    work on features from one shared forward: it is driven by the raw episode.
    :meth:`episode_loss` takes the arguments of :func:`spatialmeta.learn.train.episode_loss`
    (without the learner) and returns the same quantity, the pooled masked query NLL
    after adaptation (plus ``global_weight`` times the unadapted network's), so
    :func:`learner_episode_loss` and :func:`meta_update` drive it like any other learner.
    The pieces are public: :func:`episode_inputs` builds the raw meta-batch,
    :meth:`adapt_episode` returns every task's adapted parameters as a dict of ``(B, ...)``
    tensors named ``backbone.<param>``, and :meth:`predict_episode` evaluates them.

    Per-task graph forwards. The graph forward is shared by all tasks only while the
    parameters are; with per-task parameters each task needs its own forward through the
    GRU and the graph convolution. ``torch.func.vmap`` goes through the torch-geometric
    convolutions (SAGE, GCN, GAT) but not through ``nn.GRU`` (no batching rule for
    ``aten::gru.input``), so:

    - ``vectorize=False`` (default): a Python loop over the tasks of the meta-batch —
      MAML inherently needs one here — each task running on its own ``hops``-hop
      neighbourhood (exact for the backbone's single graph layer), with
      ``functional_call`` and ``torch.autograd.grad``.
    - ``vectorize=True``: ``torch.func.vmap`` over tasks of ``torch.func.grad`` of a
      ``functional_call``, with the GRU unrolled in elementary ops (same parameters, same
      equations). Every task then runs on the union neighbourhood of the whole
      meta-batch, so it pays off on small graphs only.

    Second-order by default (the query loss differentiates through the inner
    gradients); ``first_order=True`` is first-order MAML (inner gradients detached).

    Parameters
    ----------
    backbone : GraphForecaster
    inner_steps : int
        SGD steps per task (0: the unadapted network).
    inner_lr : float
        Inner-loop step size.
    first_order : bool
        First-order MAML.
    hops : int or None
        Neighbourhood each task's forward runs on; must cover the backbone's message
        passing (1 for :class:`GraphForecaster`). None: the whole episode graph.
    vectorize : bool
        vmap over tasks instead of a Python loop (see above).

    References
    ----------
    Finn, C., Abbeel, P., & Levine, S. (2017). Model-agnostic meta-learning for fast
    adaptation of deep networks. ICML. arXiv:1703.03400 (MAML; first-order MAML, Sec. 5.2)
    """

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        inner_steps: int = 1,
        inner_lr: float = 0.05,
        first_order: bool = False,
        hops: int | None = 1,
        vectorize: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.inner_steps = _check_steps(inner_steps)
        self.inner_lr = _check_rate(inner_lr, "inner_lr")
        self.first_order = bool(first_order)
        self.hops = _check_hops(hops)
        self.vectorize = bool(vectorize)

    def adapt_episode(self, ep: EpisodeInputs, *, graphs=None) -> dict[str, torch.Tensor]:
        """Each task's parameters ``(B, ...)`` after ``inner_steps`` SGD steps on its support.

        ``graphs``: the tasks' neighbourhoods when already found (internal; else found here).
        """
        create_graph = not self.first_order and torch.is_grad_enabled()
        return self._adapt_params(
            ep, "support", self.inner_steps, self.inner_lr, create_graph, graphs
        )

    def episode_loss(
        self,
        tasks: RegionTaskSet,
        known: np.ndarray,
        covariates: torch.Tensor,
        task_idx: np.ndarray,
        s: int,
        support: int,
        config,
        global_weight: float = 0.0,
    ) -> torch.Tensor:
        """Query NLL after per-task adaptation (plus ``global_weight`` x the unadapted NLL).

        Arguments as :func:`spatialmeta.learn.train.episode_loss` (without the learner).
        """
        ep = episode_inputs(tasks, known, covariates, task_idx, s, support, config)
        graphs = self._graphs(ep)  # each task's neighbourhood, found once
        return self._query_nll(ep, self.adapt_episode(ep, graphs=graphs), graphs, global_weight)


class ReptileStep(NamedTuple):
    """Outcome of :meth:`ReptileLearner.meta_step`.

    ``loss_before``/``loss_after``: the inner-loop loss (support + query) before and after
    adaptation, averaged over tasks; ``adapted_mean``: the task-averaged adapted
    parameters that the meta-update moved towards (named as in ``named_parameters()``).
    """

    loss_before: float
    loss_after: float
    adapted_mean: dict[str, torch.Tensor]


class ReptileLearner(_FunctionalTasks, MetaLearner):
    """Reptile: SGD on each task, then move the initialization towards the adapted weights.

    Each task of a meta-batch takes ``inner_steps`` SGD steps of its masked mean NLL on
    its support *and* query windows; the meta-update is
    ``theta <- theta + meta_lr * mean_b(phi_b - theta)`` (first-order by construction: no
    gradient flows through the inner loop). Train with :meth:`meta_step` (or
    :func:`meta_update`), not by backpropagating :meth:`episode_loss`.

    ``head_only=True`` adapts and meta-updates the heads only (mean head, and the variance
    head with ``adapt_var``), batched like :class:`ANILLearner`: one graph forward and one
    autograd call per step for all tasks; the backbone is left as it is (pretrained, or
    trained by another learner). ``head_only=False`` adapts every backbone parameter per
    task as :class:`MAMLLearner` does (a Python loop over tasks, or ``vectorize``).

    For evaluation, :meth:`episode_loss` adapts on the support window only and scores the
    query: the heads for ``head_only``, every parameter otherwise. :meth:`adapt` and
    :meth:`predict` (the :class:`MetaLearner` protocol, used by feature-based forecasting)
    always adapt the heads only.

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
    """

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
        self.inner_steps = _check_steps(inner_steps, minimum=1)
        self.inner_lr = _check_rate(inner_lr, "inner_lr")
        self.meta_lr = _check_rate(meta_lr, "meta_lr")
        self.head_only = bool(head_only)
        self.adapt_var = bool(adapt_var)
        self.hops = _check_hops(hops)
        self.vectorize = bool(vectorize)

    # -- the MetaLearner protocol (heads, batched)

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> HeadState:
        """Head parameters of every task after ``inner_steps`` SGD steps (no graph kept)."""
        params = _initial_heads(self.backbone, feats.shape[0], self.adapt_var)
        params = _sgd_heads(
            self.backbone, feats, target, mask, params, self.inner_steps, self.inner_lr, False
        )
        return HeadState(*(p.detach() for p in params))

    def predict(self, feats: torch.Tensor, state: HeadState | None):
        """Mean and variance ``(B, N, H)``; ``state=None`` uses the global heads."""
        if state is None:
            return self.backbone.mean_head(feats), self.backbone.variance(feats)
        return _head_forward(self.backbone, feats, [p for p in state if p is not None])

    # -- per-task full-network adaptation (forecasting with ``head_only=False``)

    def adapt_episode(self, ep: EpisodeInputs, *, graphs=None) -> dict[str, torch.Tensor]:
        """Each task's parameters ``(B, ...)`` after ``inner_steps`` SGD steps on its support.

        The full-network inner loop of :meth:`meta_step`, on the support rows only (as a
        held-out region is adapted); no graph is kept. ``graphs`` as in
        :meth:`MAMLLearner.adapt_episode`.
        """
        return self._adapt_params(ep, "support", self.inner_steps, self.inner_lr, False, graphs)

    # -- evaluation

    def episode_loss(
        self,
        tasks: RegionTaskSet,
        known: np.ndarray,
        covariates: torch.Tensor,
        task_idx: np.ndarray,
        s: int,
        support: int,
        config,
        global_weight: float = 0.0,
    ) -> torch.Tensor:
        """Query NLL after adapting on the support window (for evaluation).

        Train with :meth:`meta_step`; arguments as :func:`spatialmeta.learn.train.episode_loss`.
        """
        if self.head_only:
            return feature_episode_loss(
                self, tasks, known, covariates, task_idx, s, support, config, global_weight
            )
        ep = episode_inputs(tasks, known, covariates, task_idx, s, support, config)
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
                f = _task_features(self.backbone, ep)
            params = _initial_heads(self.backbone, ep.n_tasks, self.adapt_var)
            params = _sgd_heads(
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
                f = _task_features(self.backbone, ep)
                mean, var = _head_forward(self.backbone, f, list(params.values()))
            else:
                mean, var = self._predict_params(ep, params, "all")
            return float(task_nll(y, mean, var, m).mean())

    def meta_step(
        self,
        tasks: RegionTaskSet,
        known: np.ndarray,
        covariates: torch.Tensor,
        task_idx: np.ndarray,
        s: int,
        support: int,
        config,
        *,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> ReptileStep:
        """One Reptile meta-update on the meta-batch ``task_idx`` (arguments as ``episode_loss``).

        Without ``optimizer``: ``theta += meta_lr * (mean_b phi_b - theta)`` in place. With
        one: the Reptile direction is written as the gradient, ``theta.grad = theta -
        mean_b phi_b``, and ``optimizer.step()`` is called (plain SGD with learning rate
        ``meta_lr`` is then the same update; Adam gives the Adam variant).
        """
        ep = episode_inputs(tasks, known, covariates, task_idx, s, support, config)
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


# --------------------------------------------------------------------------- prototypes


class Exceedance(NamedTuple):
    """Binary exceedance labels of an episode.

    ``support``/``query``: ``(B, N)`` int64 labels (1: exceeds the task's threshold);
    ``support_mask``/``query_mask``: ``(B, N)`` bool, which labels exist (target known and
    a threshold defined); ``threshold``: ``(B,)``, NaN for a task without support values.
    """

    support: torch.Tensor
    support_mask: torch.Tensor
    query: torch.Tensor
    query_mask: torch.Tensor
    threshold: torch.Tensor


def exceedance_labels(
    support_y: torch.Tensor,
    support_mask: torch.Tensor,
    query_y: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    quantile: float = 0.9,
    step: int = 0,
) -> Exceedance:
    """Labels "the value ``step + 1`` steps ahead exceeds the task's ``quantile``".

    The threshold of each task is the ``quantile`` of its *known support* targets at
    horizon ``step`` — values inside the support window only, never the query's — and
    labels are ``y > threshold`` for support and query alike.

    Parameters
    ----------
    support_y, support_mask : ``(B, Ns, H)``
    query_y, query_mask : ``(B, Nq, H)``
    quantile : float
        In (0, 1), e.g. 0.9 for the 90th percentile.
    step : int
        Horizon index, ``0 <= step < H`` (0: the next step).

    Examples
    --------
    >>> y = torch.arange(10.0).reshape(1, 10, 1)
    >>> lab = exceedance_labels(y, torch.ones_like(y), y + 5, torch.ones_like(y), quantile=0.5)
    >>> float(lab.threshold[0]), lab.support[0].tolist(), lab.query[0, :3].tolist()
    (4.5, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1])
    """
    q = float(quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"`quantile` must lie strictly between 0 and 1; got {quantile!r}.")
    h = support_y.shape[-1]
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or not 0 <= step < h:
        raise ValueError(f"`step` must be an integer horizon index in [0, {h}); got {step!r}.")
    ys, ms = support_y[..., step], support_mask[..., step] > 0
    yq, mq = query_y[..., step], query_mask[..., step] > 0
    thr = torch.nanquantile(torch.where(ms, ys, torch.nan), q, dim=1)  # (B,)
    ok = torch.isfinite(thr).unsqueeze(1)
    return Exceedance(
        support=(ys > thr.unsqueeze(1)).long(),
        support_mask=ms & ok,
        query=(yq > thr.unsqueeze(1)).long(),
        query_mask=mq & ok,
        threshold=thr,
    )


class Prototypes(NamedTuple):
    """Prototypes ``centers`` ``(B, K, d)``; ``present`` ``(B, K)``: classes in the support."""

    centers: torch.Tensor
    present: torch.Tensor


class ProtoNetLearner(nn.Module):
    """Prototypical networks for classification tasks over regions.

    A class's prototype in a task is the mean backbone embedding of that task's support
    examples of the class; query logits are minus the squared Euclidean distances to the
    prototypes. All tasks of a meta-batch are computed together (no loop). With the
    default ``task="exceedance"``, :meth:`episode_loss` labels each origin by whether
    the target ``step + 1`` steps ahead exceeds the region's ``quantile`` threshold from
    its support window (:func:`exceedance_labels`) and returns the query cross-entropy.

    A class absent from a task's support has no prototype: its logit is the lowest
    finite value, and query examples of that class are left out of the loss.

    This is not a :class:`MetaLearner` (it returns logits, not a mean and a variance), so
    its hooks are named :meth:`prototypes` and :meth:`logits`.

    Parameters
    ----------
    backbone : GraphForecaster
        Its features are the embedding.
    n_classes : int
        Number of classes (2 for exceedance).
    quantile : float
        Exceedance quantile of the support window.
    step : int
        Horizon index of the exceedance target.

    References
    ----------
    Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot
    learning. NeurIPS. arXiv:1703.05175
    """

    def __init__(
        self,
        backbone: GraphForecaster,
        *,
        n_classes: int = 2,
        quantile: float = 0.9,
        step: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.n_classes = _check_steps(n_classes, "n_classes", 2)
        if not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"`quantile` must lie strictly between 0 and 1; got {quantile!r}.")
        self.quantile = float(quantile)
        self.step = _check_steps(step, "step", 0)

    def prototypes(
        self, feats: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
    ) -> Prototypes:
        """Per-task, per-class mean support embedding.

        Parameters
        ----------
        feats : ``(B, N, d)`` support embeddings
        labels : ``(B, N)`` integer classes in ``[0, n_classes)``
        mask : ``(B, N)``, optional
            Which support examples count.
        """
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}); got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )
        onehot = nn.functional.one_hot(labels, self.n_classes).to(feats.dtype)  # (B, N, K)
        if mask is not None:
            onehot = onehot * mask.to(feats.dtype).unsqueeze(-1)
        count = onehot.sum(dim=1)  # (B, K)
        centers = torch.einsum("bnk,bnd->bkd", onehot, feats) / count.clamp_min(1.0).unsqueeze(-1)
        return Prototypes(centers, count > 0)

    def logits(self, feats: torch.Tensor, protos: Prototypes) -> torch.Tensor:
        """Query logits ``(B, N, K)``: minus squared distances to the prototypes."""
        d2 = (feats.unsqueeze(2) - protos.centers.unsqueeze(1)).pow(2).sum(dim=-1)
        low = torch.finfo(d2.dtype).min
        return torch.where(protos.present.unsqueeze(1), -d2, torch.full_like(d2, low))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, protos):
        """Mean query cross-entropy over labelled queries whose class has a prototype."""
        labels = labels.long()
        valid = mask.bool() & protos.present.gather(1, labels)
        ce = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
        ).reshape(labels.shape)
        ce = torch.where(valid, ce, torch.zeros_like(ce))
        return ce.sum() / valid.sum().clamp_min(1)

    def episode_loss(
        self,
        tasks: RegionTaskSet,
        known: np.ndarray,
        covariates: torch.Tensor,
        task_idx: np.ndarray,
        s: int,
        support: int,
        config,
        global_weight: float = 0.0,
    ) -> torch.Tensor:
        """Query cross-entropy of exceedance classification on one meta-batch.

        Arguments as :func:`spatialmeta.learn.train.episode_loss`; ``global_weight`` is
        accepted for the common signature and ignored (there is no unadapted classifier).
        """
        ep = episode_inputs(tasks, known, covariates, task_idx, s, support, config)
        f = _task_features(self.backbone, ep)
        ns = ep.n_support
        lab = exceedance_labels(
            *ep.targets("support"), *ep.targets("query"), quantile=self.quantile, step=self.step
        )
        protos = self.prototypes(f[:, :ns], lab.support, lab.support_mask)
        return self.loss(self.logits(f[:, ns:], protos), lab.query, lab.query_mask, protos)
