"""Adapt to held-out regions from their support window and forecast the test period in batch."""

from __future__ import annotations

import numpy as np
import torch

from spatialmeta.learn.algorithms.base import Learner
from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.episode import EpisodeInputs
from spatialmeta.learn.features import (
    climatology_period,
    origin_batch,
    standardized_covariates,
    support_origins,
    test_origins,
    window_stats,
)
from spatialmeta.learn.predictions import Forecast
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet

__all__ = ["Forecast", "forecast_heldout", "test_origins"]


def forecast_heldout(
    learner: Learner,
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig,
    *,
    adapt: bool = True,
    chunk: int = 64,
    method: str | None = None,
) -> Forecast:
    """Forecast every held-out region at every test origin.

    Each held-out region is adapted on its support window (the ``split.support`` steps
    before ``test_start``), all regions at once; then every test origin is forecast from
    the values observed before it. Origins are processed in chunks to bound memory.

    The support origins are those of :func:`~spatialmeta.learn.features.support_origins`:
    for a window shorter than ``lags + horizon`` (few shots), origins whose lag windows
    begin before the region's record, and whose later targets fall in the test period,
    are used with those values masked.

    The learner's hooks decide the path. Learners that read whole records
    (``needs_backbone = False``: the default ``hier``) forecast by their own
    ``forecast_split``. Feature learners (ridge, ANIL, head-only Reptile, ProtoNets, the
    fine-tuned global network) run
    one graph forward for all regions and adapt all held-out regions together. Learners
    that adapt every backbone parameter per task (``adapts_full_network``: MAML, full
    Reptile) need a forward per
    region with its own parameters — a Python loop over held-out regions, in blocks of
    ``chunk`` regions, each on its own neighbourhood; that loop is inherent to them.

    Parameters
    ----------
    learner : Learner
        Any learner of :mod:`spatialmeta.learn.algorithms` (a registered meta-learner, or
        the global network).
    tasks, split : the task set and its split
    config : LearnConfig
    adapt : bool
        False forecasts with the unadapted network.
    chunk : int
        Origins per forward pass (and regions per block for per-task learners).
    method : str, optional
        Name of the forecast; default ``"meta"`` / ``"meta_noadapt"``, or
        ``"global_finetuned"`` / ``"global"`` for a global network.
    """
    if not learner.needs_backbone:  # a learner that reads whole records: its own inputs
        return learner.forecast_split(tasks, split, config, adapt=adapt, method=method)
    L, H, S, t0 = config.lags, config.horizon, split.support, split.test_start
    if S > t0:
        raise ValueError(
            f"support window ({S} steps) is longer than the record before test_start ({t0} steps)."
        )
    known = split.known(tasks.n_time)
    known_support = known.copy()
    known_support[:, t0:] = False  # adaptation sees nothing from the test period
    device = next(learner.parameters()).device
    covariates = standardized_covariates(tasks).to(device)
    shrink = float(learner.backbone.season_shrink)  # fitted on the training regions
    norm = window_stats(
        tasks.series, known, t0 - S, t0, climatology_period(tasks.time), shrink=shrink
    )
    held = np.flatnonzero(split.held_out)
    ei = tasks.graph.data.edge_index.to(device)
    origins = test_origins(tasks, split, H)
    sup = support_origins(t0, S, L, H)
    learner.eval()

    def batch(orig, mask):
        return origin_batch(tasks, mask, orig, norm, lags=L, horizon=H, device=device)

    chunks = [origins[i : i + chunk] for i in range(0, len(origins), chunk)]
    with torch.no_grad():
        if adapt and learner.adapts_full_network:
            mean, var = _forecast_per_task(
                learner, batch(sup, known_support), [batch(c, known) for c in chunks],
                covariates, ei, held, chunk,
            )  # fmt: skip
        else:
            hi = torch.as_tensor(held, device=device)

            def feats(b):
                f = learner.features(b.lags, b.lag_mask, b.calendar, covariates, ei)
                return f[:, hi].transpose(0, 1)

            state = None
            if adapt:
                b = batch(sup, known_support)
                state = learner.adapt(
                    feats(b),
                    b.target[:, hi].transpose(0, 1),
                    b.target_mask[:, hi].transpose(0, 1).float(),
                )
            means, variances = [], []
            for c in chunks:
                m, v = learner.predict(feats(batch(c, known)), state)
                means.append(m)
                variances.append(v)
            mean, var = torch.cat(means, dim=1), torch.cat(variances, dim=1)
    mean = mean.cpu().numpy()
    std = np.sqrt(var.cpu().numpy())
    if method is None:
        base = learner.forecast_name
        method = {("global", True): "global_finetuned", ("meta", False): "meta_noadapt"}.get(
            (base, adapt), base
        )
    # back to natural units: the support window's level at each target step, and its spread
    mu = norm.level(origins[:, None] + np.arange(H)[None, :], held)
    sd = norm.std[held, None, None]
    return Forecast(
        method=method,
        regions=held,
        origins=origins,
        mean=(mean * sd + mu).astype(np.float64),
        std=(std * sd).astype(np.float64),
    )


def _forecast_per_task(learner, support, tests, covariates, edge_index, held, block):
    """Full-network adaptation per held-out region, then its forecasts: ``(Rh, O, H)`` each."""

    def episode(b, pos, n_support):
        return EpisodeInputs(
            lags=b.lags, lag_mask=b.lag_mask, calendar=b.calendar, covariates=covariates,
            edge_index=edge_index, task_pos=pos, target=b.target[:, pos].transpose(0, 1),
            target_mask=b.target_mask[:, pos].transpose(0, 1).float(), n_support=n_support,
        )  # fmt: skip

    means, variances = [], []
    for i in range(0, len(held), block):  # per-region parameters: blocks bound the memory
        pos = torch.as_tensor(held[i : i + block], device=edge_index.device)
        ep = episode(support, pos, len(support.origins))
        graphs = learner.task_graphs(ep)
        params = learner.adapt_episode(ep, graphs=graphs)
        out = [learner.predict_episode(episode(b, pos, 0), params, graphs=graphs) for b in tests]
        means.append(torch.cat([m for m, _ in out], dim=1))
        variances.append(torch.cat([v for _, v in out], dim=1))
    return torch.cat(means), torch.cat(variances)
