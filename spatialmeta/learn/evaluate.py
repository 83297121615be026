"""Evaluation: per-region and area-weighted skill of each method, and per-region estimates to pool.

The per-region effect handed to pooling is the log ratio of mean squared errors of the
meta-learned forecast and of climatology, with a variance from the delta method and a
Newey–West (HAC) covariance of the mean losses over forecast origins, because the losses
of consecutive origins are autocorrelated (as in the Diebold–Mariano test).

References
----------
Diebold, F. X., & Mariano, R. S. (1995). Comparing predictive accuracy. Journal of Business
& Economic Statistics, 13(3), 253–263. doi:10.1080/07350015.1995.10524599
Newey, W. K., & West, K. D. (1987). A simple, positive semi-definite, heteroskedasticity and
autocorrelation consistent covariance matrix. Econometrica, 55(3). doi:10.2307/1913610
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spatialmeta.learn.forecast import Forecast
from spatialmeta.learn.metrics import scores
from spatialmeta.tasks.estimates import Estimates
from spatialmeta.tasks.region import RegionTaskSet

__all__ = ["ForecastEvaluation", "evaluate", "observed", "hac_mean_cov"]


def observed(tasks: RegionTaskSet, forecast: Forecast) -> np.ndarray:
    """Observations matching a forecast's ``(region, origin, horizon)`` layout."""
    h = forecast.mean.shape[-1]
    idx = forecast.origins[:, None] + np.arange(h)[None, :]
    return tasks.series[forecast.regions][:, idx].astype(np.float64)


def hac_mean_cov(a: np.ndarray, b: np.ndarray, lags: int) -> np.ndarray:
    """Newey–West covariance matrix of the means of two series, per row.

    Parameters
    ----------
    a, b : ``(R, n)`` loss series (no NaN)
    lags : int
        Bartlett-kernel truncation lag.

    Returns
    -------
    ``(R, 2, 2)`` covariance of ``(mean(a), mean(b))``.
    """
    x = np.stack([a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)], axis=1)
    n = x.shape[-1]
    cov = np.einsum("rit,rjt->rij", x, x) / n
    for lag in range(1, min(lags, n - 1) + 1):  # a handful of lags; each is whole-array
        g = np.einsum("rit,rjt->rij", x[..., lag:], x[..., :-lag]) / n
        cov += (1 - lag / (lags + 1)) * (g + np.swapaxes(g, 1, 2))
    return cov / n


@dataclass(frozen=True)
class ForecastEvaluation:
    """Scores of every method on the held-out regions.

    Attributes
    ----------
    by_region : pandas.DataFrame
        One row per (method, region): rmse, mae, bias, crps, skill vs climatology and
        persistence (1 - MSE ratio), area_km2.
    table : pandas.DataFrame
        One row per method: area-weighted means of the scores over held-out regions.
    log_mse_ratio, log_mse_ratio_var : numpy.ndarray
        Per held-out region, meta-learned vs climatology (the effect to pool).
    """

    by_region: pd.DataFrame
    table: pd.DataFrame
    region_ids: np.ndarray
    log_mse_ratio: np.ndarray
    log_mse_ratio_var: np.ndarray
    method: str = "meta"
    reference: str = "climatology"

    def estimates(self) -> Estimates:
        """Per-region log MSE ratios (method vs reference) and their variances, for pooling."""
        return Estimates(
            self.log_mse_ratio,
            self.log_mse_ratio_var,
            labels=self.region_ids,
            measure=f"log MSE ratio ({self.method} / {self.reference})",
        )


def evaluate(
    tasks: RegionTaskSet,
    forecasts: list[Forecast],
    *,
    method: str = "meta",
    reference: str = "climatology",
) -> ForecastEvaluation:
    """Score forecasts of held-out regions and derive per-region estimates for pooling.

    All forecasts must cover the same regions and origins.
    """
    by = {f.method: f for f in forecasts}
    for name in (method, reference):
        if name not in by:
            raise ValueError(f"no forecast named {name!r}; have {sorted(by)}.")
    ref = by[reference]
    y = observed(tasks, ref)
    mse = {}
    rows = []
    area = tasks.area_km2[ref.regions] if tasks.area_km2 is not None else np.ones(len(ref.regions))
    for f in forecasts:
        if not (np.array_equal(f.regions, ref.regions) and np.array_equal(f.origins, ref.origins)):
            raise ValueError(f"forecast {f.method!r} does not cover the same regions and origins.")
        s = scores(y, f.mean, f.std)
        mse[f.method] = s["rmse"] ** 2
        rows.append(
            pd.DataFrame(
                {
                    "method": f.method,
                    "region_id": tasks.region_ids[f.regions],
                    "area_km2": area,
                    **s,
                }
            )
        )
    by_region = pd.concat(rows, ignore_index=True)
    for other in ("climatology", "persistence"):
        if other in mse:
            ratio = (
                by_region["rmse"].to_numpy() ** 2
                / np.repeat(mse[other][None, :], len(forecasts), 0).ravel()
            )
            by_region[f"skill_vs_{other}"] = 1.0 - ratio
    weights = by_region["area_km2"]
    numeric = [c for c in by_region.columns if c not in ("method", "region_id", "area_km2")]
    table = (
        by_region.groupby("method", sort=False)
        .apply(
            lambda g: pd.Series({c: np.average(g[c], weights=g["area_km2"]) for c in numeric}),
            include_groups=False,
        )
        .reset_index()
    )
    del weights

    # per-origin losses averaged over horizons: (R, O)
    la = np.nanmean((by[method].mean - y) ** 2, axis=2)
    lb = np.nanmean((ref.mean - y) ** 2, axis=2)
    ma, mb = la.mean(axis=1), lb.mean(axis=1)
    cov = hac_mean_cov(la, lb, lags=max(1, ref.mean.shape[-1]))
    grad = np.stack([1 / ma, -1 / mb], axis=1)
    var = np.einsum("ri,rij,rj->r", grad, cov, grad)
    return ForecastEvaluation(
        by_region=by_region,
        table=table,
        region_ids=tasks.region_ids[ref.regions],
        log_mse_ratio=np.log(ma / mb),
        log_mse_ratio_var=np.maximum(var, 1e-12),
        method=method,
        reference=reference,
    )
