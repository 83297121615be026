"""Adapt to held-out regions from their support window and forecast the test period in batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatialmeta.learn.config import LearnConfig
from spatialmeta.learn.features import origin_batch, window_stats
from spatialmeta.learn.meta import RidgeMetaLearner
from spatialmeta.learn.train import standardized_covariates
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet
from spatialmeta.tasks.sampling import support_query_origins

__all__ = ["Forecast", "forecast_heldout", "test_origins"]


@dataclass(frozen=True)
class Forecast:
    """Gaussian forecasts in natural units for some regions.

    ``mean`` and ``std`` are ``(R_f, O, H)``: region × forecast origin × horizon;
    ``std`` is None for point forecasts.
    """

    method: str
    regions: np.ndarray  # indices into the task set
    origins: np.ndarray  # time indices
    mean: np.ndarray
    std: np.ndarray | None


def test_origins(tasks: RegionTaskSet, split: RegionSplit, horizon: int) -> np.ndarray:
    """Forecast origins of the test period whose every horizon lies inside the record."""
    origins = np.arange(split.test_start, tasks.n_time - horizon + 1)
    if len(origins) == 0:
        raise ValueError(
            f"no forecast origin fits between test_start and the end of the series with horizon "
            f"{horizon}; move test_start earlier."
        )
    return origins


def forecast_heldout(
    learner: RidgeMetaLearner,
    tasks: RegionTaskSet,
    split: RegionSplit,
    config: LearnConfig,
    *,
    adapt: bool = True,
    chunk: int = 64,
) -> Forecast:
    """Forecast every held-out region at every test origin.

    Each held-out region's ridge head is fitted on its support window (the ``support``
    steps before ``test_start``), all regions at once; then every test origin is
    forecast from the values observed before it. Origins are processed in chunks to
    bound memory.

    Parameters
    ----------
    learner : RidgeMetaLearner
    tasks, split : the task set and its split
    config : LearnConfig
    adapt : bool
        False gives the global network's forecast without per-region adaptation.
    chunk : int
        Origins per forward pass.
    """
    L, H, S, t0 = config.lags, config.horizon, split.support, split.test_start
    known = split.known(tasks.n_time)
    device = next(learner.parameters()).device
    covariates = standardized_covariates(tasks).to(device)
    norm = window_stats(tasks.series, known, t0 - S, t0)
    held = np.flatnonzero(split.held_out)
    hi = torch.as_tensor(held, device=device)
    ei = tasks.graph.data.edge_index.to(device)
    origins = test_origins(tasks, split, H)
    learner.eval()
    with torch.no_grad():
        coef = None
        if adapt:
            sup, _ = support_query_origins(t0, S, L, H, 0)
            b = origin_batch(tasks, known, sup, norm, lags=L, horizon=H, device=device)
            f = learner.backbone.features(b.lags, b.lag_mask, b.calendar, covariates, ei)[
                :, hi
            ].transpose(0, 1)
            coef = learner.adapt(
                f, b.target[:, hi].transpose(0, 1), b.target_mask[:, hi].transpose(0, 1).float()
            )
        means, variances = [], []
        for start in range(0, len(origins), chunk):
            b = origin_batch(
                tasks, known, origins[start : start + chunk], norm, lags=L, horizon=H, device=device
            )
            f = learner.backbone.features(b.lags, b.lag_mask, b.calendar, covariates, ei)[
                :, hi
            ].transpose(0, 1)
            m, v = learner.predict(f, coef)
            means.append(m)
            variances.append(v)
    mean = torch.cat(means, dim=1).cpu().numpy()
    std = np.sqrt(torch.cat(variances, dim=1).cpu().numpy())
    mu, sd = norm.mean[held, None, None], norm.std[held, None, None]
    return Forecast(
        method="meta" if adapt else "global",
        regions=held,
        origins=origins,
        mean=(mean * sd + mu).astype(np.float64),
        std=(std * sd).astype(np.float64),
    )
