"""Baselines under the same information as the meta-learner: climatology and persistence."""

from __future__ import annotations

import numpy as np

from spatialmeta.learn.features import climatology_period, test_origins
from spatialmeta.learn.predictions import Forecast
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet

__all__ = ["climatology", "climatology_period", "persistence", "ridge_ar"]


def climatology(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, period: int | None = None
) -> Forecast:
    """Calendar means of each held-out region's support window (the phase of the cycle).

    ``period`` steps make one cycle (None: :func:`climatology_period` of the time axis —
    calendar months for monthly records, the hour of day for hourly ones, the support mean
    for annual ones). The spread is the standard deviation of the support values around
    their phase means (around their overall mean when no phase occurs twice in the
    window); a phase absent from a short support window falls back to the support mean.
    """
    if period is None:
        period = climatology_period(tasks.time)
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
    dof = ok.sum(axis=1) - (counts > 0).sum(axis=1)
    spread = np.sqrt(np.nansum(resid**2, axis=1) / np.maximum(dof, 1))
    # a window with no month seen twice (support < 2 periods) has no residual: fall back to
    # the spread of the support values themselves (zero spread would make CRPS undefined)
    plain = np.sqrt(np.nansum((window - overall) ** 2, axis=1) / np.maximum(ok.sum(axis=1) - 1, 1))
    spread = np.where(dof > 0, spread, plain)
    spread = np.maximum(spread, 1e-6 * np.maximum(np.abs(overall[:, 0]), 1.0))
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


def ridge_ar(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, lags: int = 12, alpha: float = 1.0
) -> Forecast:
    """Per-region ridge autoregression fitted on the support window only (direct multi-horizon).

    For each held-out region and each horizon ``h``, ``y[o + h - 1]`` is regressed on the
    standardized lags ``y[o - lags .. o - 1]`` and an intercept over the support origins
    (:func:`~spatialmeta.learn.features.support_origins`, as the meta-learner adapts),
    with ridge penalty ``alpha`` (intercept unpenalized); all regions and horizons are
    solved at once (batched normal equations). Missing lags — and, for a support window
    shorter than ``lags + horizon``, lags before the window — sit at the support mean;
    missing targets are left out of the fit. The spread is each region's residual
    standard deviation on the support window.
    """
    from spatialmeta.learn.features import support_origins

    t0, S = split.test_start, split.support
    held = np.flatnonzero(split.held_out)
    origins = test_origins(tasks, split, horizon)
    y = tasks.series[held].astype(np.float64)  # (Rh, T)
    window = y[:, t0 - S : t0]
    mu = np.nanmean(window, axis=1, keepdims=True)
    sd = np.nanstd(window, axis=1, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)
    z = (y - mu) / sd
    known = np.zeros_like(z, dtype=bool)
    known[:, t0 - S :] = np.isfinite(z[:, t0 - S :])
    zf = np.where(known, z, 0.0)  # unknown or missing values sit at the support mean
    kp = known.copy()
    kp[:, t0:] = False  # the fit uses the support window only
    rh = len(held)  # padded with ``lags`` unknown steps before and ``horizon`` after the record
    zp = np.concatenate([np.zeros((rh, lags)), zf, np.zeros((rh, horizon))], axis=1)
    kp = np.concatenate([np.zeros((rh, lags), bool), kp, np.zeros((rh, horizon), bool)], axis=1)

    def design(orig):
        lag_idx = orig[:, None] + np.arange(-lags, 0)[None, :] + lags
        x = zp[:, lag_idx]  # (Rh, O, lags)
        return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)

    sup = support_origins(t0, S, lags, horizon)
    xs = design(sup)  # (Rh, Ns, p)
    tgt = sup[:, None] + np.arange(horizon)[None, :] + lags
    ys, ms = zp[:, tgt], kp[:, tgt].astype(float)  # (Rh, Ns, H)
    pen = alpha * np.eye(xs.shape[-1])
    pen[-1, -1] = 0.0
    gram = np.einsum("rni,rnh,rnj->rhij", xs, ms, xs) + pen
    rhs = np.einsum("rni,rnh->rhi", xs, ys * ms)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]  # (Rh, H, p)
    fitted = np.einsum("rni,rhi->rnh", xs, coef)
    resid_var = ((ys - fitted) ** 2 * ms).sum(axis=(1, 2)) / np.maximum(
        ms.sum(axis=(1, 2)) - xs.shape[-1], 1
    )
    xq = design(origins)
    pred = np.einsum("rni,rhi->rnh", xq, coef)
    # a region whose support fits exactly (a constant record: sea ice at the freezing point)
    # keeps a small spread, so that its CRPS is defined
    spread = np.maximum(np.sqrt(resid_var)[:, None] * sd, 1e-6 * np.maximum(np.abs(mu), 1.0))
    std = np.broadcast_to(spread[:, :, None], pred.shape).copy()
    return Forecast("ridge_ar", held, origins, pred * sd[:, :, None] + mu[:, :, None], std)
