"""Baselines under the same information as the meta-learner: climatology and persistence."""

from __future__ import annotations

import numpy as np

from spatialmeta.learn.forecast import Forecast, test_origins
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet

__all__ = ["climatology", "persistence"]


def climatology(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, period: int = 12
) -> Forecast:
    """Calendar-month means of each held-out region's support window.

    The spread is the standard deviation of the support values around their monthly means;
    a month absent from a short support window falls back to the support mean.
    """
    t0, S = split.test_start, split.support
    held = np.flatnonzero(split.held_out)
    origins = test_origins(tasks, split, horizon)
    window = tasks.series[held, t0 - S : t0].astype(np.float64)  # (Rh, S)
    phase = (np.arange(t0 - S, t0) % period)[None, :]
    onehot = (phase[..., None] == np.arange(period)).astype(float)  # (1, S, P)
    ok = np.isfinite(window)
    counts = (ok[..., None] * onehot).sum(axis=1)  # (Rh, P)
    sums = (np.where(ok, window, 0.0)[..., None] * onehot).sum(axis=1)
    overall = np.nanmean(window, axis=1, keepdims=True)
    clim = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    resid = window - np.take_along_axis(clim, np.broadcast_to(phase, window.shape), axis=1)
    dof = np.maximum(ok.sum(axis=1) - (counts > 0).sum(axis=1), 1)
    spread = np.sqrt(np.nansum(resid**2, axis=1) / dof)
    target = origins[:, None] + np.arange(horizon)[None, :]  # (O, H)
    mean = clim[:, target % period]  # (Rh, O, H)
    std = np.broadcast_to(spread[:, None, None], mean.shape).copy()
    return Forecast("climatology", held, origins, mean, std)


def persistence(tasks: RegionTaskSet, split: RegionSplit, horizon: int) -> Forecast:
    """The last value observed before each origin, for every horizon (a point forecast)."""
    held = np.flatnonzero(split.held_out)
    origins = test_origins(tasks, split, horizon)
    last = tasks.series[held][:, origins - 1].astype(np.float64)  # (Rh, O)
    return Forecast("persistence", held, origins, np.repeat(last[..., None], horizon, axis=2), None)
