"""Forecast scores, array-at-a-time over (region, origin, horizon)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["crps_gaussian", "scores", "interval_score", "pit", "PIT_BINS"]

PIT_BINS = 10


def crps_gaussian(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of a Gaussian forecast (closed form).

    References
    ----------
    Gneiting, T., Raftery, A. E., Westveld, A. H., & Goldman, T. (2005). Calibrated
    probabilistic forecasting using ensemble model output statistics and minimum CRPS
    estimation. Monthly Weather Review, 133(5). doi:10.1175/MWR2904.1

    Examples
    --------
    >>> round(float(crps_gaussian(np.array(0.0), np.array(0.0), np.array(1.0))), 6)
    0.233695
    """
    z = (y - mean) / std
    return std * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def interval_score(y, lower, upper, alpha: float) -> np.ndarray:
    """Interval score of a central ``(1 - alpha)`` prediction interval (lower is better).

    ``(u - l) + (2 / alpha) (l - y) 1{y < l} + (2 / alpha) (y - u) 1{y > u}``.

    References
    ----------
    Gneiting, T., & Raftery, A. E. (2007). Strictly proper scoring rules, prediction, and
    estimation. JASA 102(477), 359-378, eq. 43. doi:10.1198/016214506000001437

    Examples
    --------
    >>> float(interval_score(np.array(3.0), np.array(0.0), np.array(2.0), 0.1))
    22.0
    """
    return (upper - lower) + (2 / alpha) * (np.maximum(lower - y, 0.0) + np.maximum(y - upper, 0.0))


def pit(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Probability integral transform of Gaussian forecasts, ``Φ((y - μ) / σ)`` (NaN kept).

    A calibrated forecast's PIT values are uniform on [0, 1]; a U-shaped histogram means
    intervals too narrow, a hump too wide.
    """
    return stats.norm.cdf((y - mean) / std)


def scores(y: np.ndarray, mean: np.ndarray, std: np.ndarray | None) -> dict[str, np.ndarray]:
    """RMSE, MAE, bias, CRPS and calibration per region (first axis), over origins and horizons.

    Calibration, for probabilistic forecasts: ``coverage_50`` and ``coverage_90`` (share of
    observations inside the central 50 % and 90 % intervals) and ``interval_score_90``
    (:func:`interval_score`); NaN for a point forecast. Missing observations (NaN) are
    skipped. A point forecast (``std=None``) has CRPS = MAE.
    """
    err = mean - y
    ok = np.isfinite(err)
    n = ok.reshape(len(y), -1).sum(axis=1)

    def _mean(a):
        return np.where(ok, a, 0.0).reshape(len(y), -1).sum(axis=1) / np.maximum(n, 1)

    crps = np.abs(err) if std is None else crps_gaussian(y, mean, std)
    out = {
        "rmse": np.sqrt(_mean(err**2)),
        "mae": _mean(np.abs(err)),
        "bias": _mean(err),
        "crps": _mean(crps),
    }
    nan = np.full(len(y), np.nan)
    if std is None:
        return {**out, "coverage_50": nan, "coverage_90": nan, "interval_score_90": nan}
    z50, z90 = stats.norm.ppf(0.75), stats.norm.ppf(0.95)
    inside50 = np.abs(err) <= z50 * std
    inside90 = np.abs(err) <= z90 * std
    score = interval_score(y, mean - z90 * std, mean + z90 * std, 0.1)
    return {
        **out,
        "coverage_50": _mean(inside50.astype(float)),
        "coverage_90": _mean(inside90.astype(float)),
        "interval_score_90": _mean(score),
    }
