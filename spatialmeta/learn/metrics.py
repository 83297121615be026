"""Forecast scores, array-at-a-time over (region, origin, horizon)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["crps_gaussian", "scores"]


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


def scores(y: np.ndarray, mean: np.ndarray, std: np.ndarray | None) -> dict[str, np.ndarray]:
    """RMSE, MAE, bias and CRPS per region (first axis), over all origins and horizons.

    Missing observations (NaN) are skipped. A point forecast (``std=None``) has CRPS = MAE.
    """
    err = mean - y
    ok = np.isfinite(err)
    n = ok.reshape(len(y), -1).sum(axis=1)

    def _mean(a):
        return np.where(ok, a, 0.0).reshape(len(y), -1).sum(axis=1) / np.maximum(n, 1)

    crps = np.abs(err) if std is None else crps_gaussian(y, mean, std)
    return {
        "rmse": np.sqrt(_mean(err**2)),
        "mae": _mean(np.abs(err)),
        "bias": _mean(err),
        "crps": _mean(crps),
    }
