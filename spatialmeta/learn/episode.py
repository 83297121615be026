"""Episodes: the one object a learner adapts on and is scored on (a meta-batch of region tasks).

:func:`episode_inputs` is the single place where a meta-batch is cut out of the task set
(``B`` task regions, a support window ``[s - support, s)``, the query origins after it,
per-region normalization from the support window only); every learner's hooks take the
:class:`EpisodeInputs` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatialmeta.learn.features import (
    SEASON_SHRINK,
    climatology_period,
    origin_batch,
    window_stats,
)
from spatialmeta.tasks.region import RegionTaskSet
from spatialmeta.tasks.sampling import batch_subgraph, support_query_origins

__all__ = ["EpisodeInputs", "episode_inputs", "query_origins"]


@dataclass(frozen=True)
class EpisodeInputs:
    """Raw inputs of one meta-batch: everything a graph forward and the losses need.

    Built by :func:`episode_inputs`. Origins are the support origins followed by the query
    origins.

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
    *,
    shrink: float = SEASON_SHRINK,
) -> EpisodeInputs:
    """Inputs of the meta-batch ``task_idx`` with support window ``[s - support, s)``.

    Per-region normalization from the support window only (its level by season slot and
    its spread, :func:`~spatialmeta.learn.features.window_stats` with the seasonal
    pseudo-count ``shrink``), origins from
    :func:`~spatialmeta.tasks.sampling.support_query_origins`, and with
    ``config.subgraph_hops`` the task regions' neighbourhood instead of the whole graph;
    tensors are on ``covariates.device``.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_region_tasks
    >>> from spatialmeta.learn import LearnConfig
    >>> from spatialmeta.learn.features import standardized_covariates
    >>> tasks = synthetic_region_tasks(9, 60, seed=0)
    >>> known = np.ones((9, 60), dtype=bool)
    >>> cfg = LearnConfig(lags=6, horizon=2, query=4)
    >>> ep = episode_inputs(tasks, known, standardized_covariates(tasks), [0, 4], 40, 18, cfg)
    >>> ep.n_tasks, ep.n_support, tuple(ep.targets("query")[0].shape)
    (2, 11, (2, 4, 2))
    """
    L, H, Q = config.lags, config.horizon, config.query
    sup, qry = support_query_origins(s, support, L, H, Q)
    qry = query_origins(s, Q, getattr(config, "query_span", None))
    period = climatology_period(tasks.time)
    norm = window_stats(tasks.series, known, s - support, s, period, shrink=shrink)
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
