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

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.learn.metrics import PIT_BINS, pit, scores
from spatialmeta.learn.predictions import Forecast
from spatialmeta.tasks.estimates import Estimates
from spatialmeta.tasks.region import RegionTaskSet

__all__ = [
    "ForecastEvaluation",
    "evaluate",
    "observed",
    "hac_mean_cov",
    "log_mse_ratio",
    "compare_methods",
]


def observed(tasks: RegionTaskSet, forecast: Forecast) -> np.ndarray:
    """Observations matching a forecast's ``(region, origin, horizon)`` layout."""
    h = forecast.mean.shape[-1]
    idx = forecast.origins[:, None] + np.arange(h)[None, :]
    return tasks.series[forecast.regions][:, idx].astype(np.float64)


def hac_mean_cov(a: np.ndarray, b: np.ndarray, lags: int) -> np.ndarray:
    """Newey–West covariance matrix of the means of two series, per row.

    Parameters
    ----------
    a, b : ``(R, n)`` loss series; NaN marks an origin without a loss (a missing target),
        the same in both. Missing origins enter as zero deviations and the row's count
        is its observed origins (Parzen's amplitude-modulated series), so that a gap
        neither drops the region nor shifts the lags.
    lags : int
        Bartlett-kernel truncation lag.

    Returns
    -------
    ``(R, 2, 2)`` covariance of ``(mean(a), mean(b))`` over the observed origins.
    """
    x = np.stack([a - np.nanmean(a, axis=1, keepdims=True),
                  b - np.nanmean(b, axis=1, keepdims=True)], axis=1)  # fmt: skip
    x = np.where(np.isfinite(x), x, 0.0)
    n = np.maximum(np.isfinite(a).sum(axis=1), 1)[:, None, None]  # (R, 1, 1)
    t = x.shape[-1]
    cov = np.einsum("rit,rjt->rij", x, x) / n
    for lag in range(1, min(lags, t - 1) + 1):  # a handful of lags; each is whole-array
        g = np.einsum("rit,rjt->rij", x[..., lag:], x[..., :-lag]) / n
        cov += (1 - lag / (lags + 1)) * (g + np.swapaxes(g, 1, 2))
    return cov / n


def origin_losses(y: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Squared errors averaged over horizons per ``(region, origin)``; NaN targets skipped.

    ``y``, ``mean``: ``(R, O, H)``. An origin with no target at all gets NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice"
        return np.nanmean((mean - y) ** 2, axis=2)


def _log_ratio(la: np.ndarray, lb: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """log(mean ``la`` / mean ``lb``) per row and its delta-method HAC variance."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a region with no scored origin
        ma, mb = np.nanmean(la, axis=1), np.nanmean(lb, axis=1)
        cov = hac_mean_cov(la, lb, lags=lags)
        grad = np.stack([1 / ma, -1 / mb], axis=1)
        var = np.einsum("ri,rij,rj->r", grad, cov, grad)
        est = np.log(ma / mb)
    ok = np.isfinite(est) & np.isfinite(var)
    return np.where(ok, est, np.nan), np.where(ok, np.maximum(var, 1e-12), np.nan)


def log_mse_ratio(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, lags: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per region, log(MSE of ``a`` / MSE of ``b``) and its variance (delta method, HAC).

    ``y``, ``a``, ``b``: ``(R, O, H)`` observations and two forecasts' means. Losses are
    averaged over horizons per origin (:func:`origin_losses`), then over origins; NaN
    targets are skipped, and an origin with no target at all is left out (see
    :func:`hac_mean_cov`). ``lags``: the Newey–West truncation lag (default: the horizon,
    as overlapping multi-step forecasts share errors over that many origins). A region
    with no scored origin gets NaN.
    """
    lags = max(1, y.shape[-1]) if lags is None else lags
    return _log_ratio(origin_losses(y, a), origin_losses(y, b), lags)


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
    pit: pd.DataFrame | None = None

    def calibration_flags(self, low: float = 0.85, high: float = 0.95) -> list[str]:
        """Methods whose 90 % intervals cover less than ``low`` or more than ``high``."""
        t = self.table.dropna(subset=["coverage_90"])
        bad = t[(t["coverage_90"] < low) | (t["coverage_90"] > high)]
        return [f"{m} ({c:.1%})" for m, c in zip(bad["method"], bad["coverage_90"], strict=True)]

    def estimates(self) -> Estimates:
        """Per-region log MSE ratios (method vs reference) and their variances, for pooling."""
        return Estimates(
            self.log_mse_ratio,
            self.log_mse_ratio_var,
            labels=self.region_ids,
            measure=f"log MSE ratio ({self.method} / {self.reference})",
        )


def _weighted_mean(values: pd.Series, weights: pd.Series) -> float:
    """Area-weighted mean over the regions where the score is defined (NaN: none)."""
    v, w = values.to_numpy(dtype=float), weights.to_numpy(dtype=float)
    ok = np.isfinite(v)
    return float(np.average(v[ok], weights=w[ok])) if ok.any() else float("nan")


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
            ref_mse = np.repeat(mse[other][None, :], len(forecasts), 0).ravel()
            # a reference without error (a constant record it fits exactly) defines no skill
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = by_region["rmse"].to_numpy() ** 2 / ref_mse
            by_region[f"skill_vs_{other}"] = np.where(ref_mse > 0, 1.0 - ratio, np.nan)
    weights = by_region["area_km2"]
    numeric = [c for c in by_region.columns if c not in ("method", "region_id", "area_km2")]
    table = (
        by_region.groupby("method", sort=False)
        .apply(
            lambda g: pd.Series({c: _weighted_mean(g[c], g["area_km2"]) for c in numeric}),
            include_groups=False,
        )
        .reset_index()
    )
    del weights
    from spatialmeta.learn.references import REFERENCES

    crps_of = dict(zip(table["method"], table["crps"], strict=True))
    for name in REFERENCES + ("climatology",):
        if name in crps_of and crps_of[name] > 0:
            table[f"crpss_vs_{name}"] = 1.0 - table["crps"] / crps_of[name]
    pit_rows = []
    edges = np.linspace(0.0, 1.0, PIT_BINS + 1)
    for f in forecasts:
        if f.std is None:
            continue
        u = pit(y, f.mean, f.std)
        u = u[np.isfinite(u)]
        counts = np.histogram(u, bins=edges)[0]
        pit_rows.append(
            pd.DataFrame(
                {
                    "method": f.method,
                    "bin_lower": edges[:-1],
                    "bin_upper": edges[1:],
                    "count": counts,
                    "density": counts / max(u.size, 1) * PIT_BINS,
                }
            )  # fmt: skip
        )
    pit_table = pd.concat(pit_rows, ignore_index=True) if pit_rows else None

    est, var = log_mse_ratio(y, by[method].mean, ref.mean)
    return ForecastEvaluation(
        by_region=by_region,
        table=table,
        region_ids=tasks.region_ids[ref.regions],
        log_mse_ratio=est,
        log_mse_ratio_var=var,
        method=method,
        reference=reference,
        pit=pit_table,
    )


SPATIAL_MAX_REGIONS = 1000  # dense k x k algebra: the spatial model above this is skipped
SPATIAL_MIN_REGIONS = 5  # a range needs a few regions to be told from the nugget


def region_lonlat(tasks: RegionTaskSet, regions) -> np.ndarray | None:
    """Longitude and latitude of the centroids of ``regions`` (indices into ``tasks``),
    from the region graph; None without a graph."""
    if tasks.graph is None:
        return None
    return tasks.graph.data.pos.numpy().astype(float)[np.asarray(regions)]


def spatial_comparison(yi, vi, lonlat, level: float = 95):
    """The rows of ``yi`` (one comparison each, over the same regions) pooled with
    spatially correlated regions, all at once (:func:`~spatialmeta.meta_analysis.
    multilevel_batch.pool_mv_batch`): an exponential correlation of the great-circle
    distance between centroids, range fitted, plus an independent part, REML (metafor's
    ``rma.mv(random = list(~ lon + lat | const, ~ 1 | id), struct = "SPEXP", dist =
    "gcd")``). Only regions scored in every row enter. Returns the batch result and the
    mask of regions used, or None outside 5 to 1,000 such regions."""
    from spatialmeta.meta_analysis.multilevel import Spatial
    from spatialmeta.meta_analysis.multilevel_batch import pool_mv_batch

    yi, vi = np.atleast_2d(yi), np.atleast_2d(vi)
    ok = np.isfinite(yi).all(0) & np.isfinite(vi).all(0) & (vi > 0).all(0)
    if lonlat is None or not SPATIAL_MIN_REGIONS <= ok.sum() <= SPATIAL_MAX_REGIONS:
        return None
    n = int(ok.sum())
    res = pool_mv_batch(yi[:, ok], vi[:, ok], random=[np.arange(n)],
                        spatial=Spatial(lonlat[ok], "SPEXP", "gcd"), level=level)  # fmt: skip
    return res, ok


def compare_methods(
    tasks: RegionTaskSet, forecasts: list[Forecast], *, method: str = "meta", level: float = 95
) -> pd.DataFrame:
    """``method`` against every other forecast, region by region, pooled by random effects.

    For each other method, the per-region log MSE ratios (``method`` / other; variances
    by the delta method and a Newey–West covariance, :func:`log_mse_ratio`) are pooled by
    REML random effects, all comparisons in one batched
    :func:`~spatialmeta.meta_analysis.pool` call. A pooled ratio below 1 with its
    confidence interval below 1 says ``method`` is better on the typical region beyond
    what the regions' own sampling noise explains.

    Returns one row per other method: ``method`` (the other), ``k`` (regions scored),
    ``mse_ratio``, ``ci_lb``, ``ci_ub`` (pooled ratio and its interval), ``pval`` (ratio
    = 1), ``pi_lb``, ``pi_ub`` (prediction interval for a new region), ``tau2``, ``I2`` and
    ``regions_better`` (share of regions where ``method`` has the lower MSE), and
    ``dm_stat``, ``dm_pval``: the Diebold–Mariano test (Harvey–Leybourne–Newbold
    corrected, two-sided) on the area-weighted mean squared-error differential of each
    origin, which, unlike the pooled interval, does not assume that regions' errors are
    independent. With a region graph (centroids) and 5 to 1,000 regions scored by every
    method, the same ratios pooled with spatially correlated regions too, every
    comparison in one batched fit (:func:`spatial_comparison`): ``spatial_k``,
    ``spatial_mse_ratio``, ``spatial_ci_lb``, ``spatial_ci_ub``, ``spatial_pval``, the
    fitted ``range_km`` (NaN where that model was not fitted, or where the spatial variance
    is nil and the range therefore not identified) and ``range_at_bound`` (the
    range at ten times the regions' extent: correlation linear in distance over the whole
    domain).

    References
    ----------
    Harvey, D., Leybourne, S., & Newbold, P. (1997). Testing the equality of prediction
    mean squared errors. International Journal of Forecasting, 13(2), 281–291.
    """
    from spatialmeta.meta_analysis import pool

    by = {f.method: f for f in forecasts}
    if method not in by:
        raise ValueError(f"no forecast named {method!r}; have {sorted(by)}.")
    others = [f for f in forecasts if f.method != method]
    if not others:
        return pd.DataFrame()
    y = observed(tasks, by[method])
    h = y.shape[-1]
    la = origin_losses(y, by[method].mean)  # (R, O), once for every comparison
    lbs = [origin_losses(y, f.mean) for f in others]
    pairs = [_log_ratio(la, lb, max(1, h)) for lb in lbs]
    yi = np.stack([p[0] for p in pairs])  # (M, R)
    vi = np.stack([p[1] for p in pairs])
    k = np.isfinite(yi).sum(axis=1)
    frame = pd.DataFrame({"method": [f.method for f in others], "k": k})
    cols = ("mse_ratio", "ci_lb", "ci_ub", "pval", "pi_lb", "pi_ub", "tau2", "I2")
    if (k < 2).any():  # random effects need two regions: report the ratios unpooled
        for c in cols:
            frame[c] = np.nan
    else:
        res = pool(yi, vi, method="REML", level=level)
        frame["mse_ratio"] = np.exp(res.estimate)
        for c in ("ci_lb", "ci_ub", "pi_lb", "pi_ub"):
            frame[c] = np.exp(getattr(res, c))
        frame["pval"], frame["tau2"], frame["I2"] = res.pval, res.tau2, res.I2
    with np.errstate(invalid="ignore"):
        frame["regions_better"] = (yi < 0).sum(axis=1) / np.maximum(k, 1)
    fit = spatial_comparison(yi, vi, region_lonlat(tasks, by[method].regions), level)
    sp_cols = ("spatial_mse_ratio", "spatial_ci_lb", "spatial_ci_ub")
    if fit is None:
        frame["spatial_k"] = 0
        for c in (*sp_cols, "spatial_pval", "range_km"):
            frame[c] = np.nan
        frame["range_at_bound"] = False
    else:
        res, used = fit
        frame["spatial_k"] = int(used.sum())
        for c, f in zip(sp_cols, ("beta", "ci_lb", "ci_ub"), strict=True):
            frame[c] = np.exp(getattr(res, f)[:, 0])
        # with no spatial variance the likelihood is flat in the range: any value fits, and
        # the one the optimizer stops at is noise (it moved from 3 to 446 km on a 1e-16
        # change of the inputs); reported as not identified (NaN) instead
        flat = res.tau2 <= 1e-6 * np.nanmedian(vi[:, used], axis=1)
        frame["spatial_pval"] = res.pval[:, 0]
        frame["range_km"] = np.where(flat, np.nan, res.rho)
        frame["range_at_bound"] = res.range_at_bound & ~flat
    # Regions share weather, so their ratios are not independent and the pooled interval
    # is too narrow where errors are spatially correlated. The Diebold–Mariano test on the
    # area-weighted mean loss of each origin is not affected by that correlation (it is
    # inside each origin's mean): Newey–West variance over origins, with Harvey, Leybourne
    # & Newbold's small-sample correction and t(n - 1) critical values.
    regions = by[method].regions
    w = np.ones(len(regions)) if tasks.area_km2 is None else tasks.area_km2[regions].astype(float)
    scored = np.isfinite(la)  # (R, O): origins with at least one target
    wo = np.where(scored, w[:, None], 0.0)
    keep = wo.sum(axis=0) > 0
    stat, pval = [], []
    for lb in lbs:  # a handful of methods; each is whole-array
        d = np.where(scored, la - lb, 0.0)
        dt = ((d * wo).sum(axis=0)[keep] / wo.sum(axis=0)[keep])[None, :]  # (1, n)
        n = dt.shape[1]
        var = hac_mean_cov(dt, dt, lags=max(1, h - 1))[0, 0, 0]
        if n < 3 or not var > 0:
            stat.append(np.nan)
            pval.append(np.nan)
            continue
        corr = np.sqrt(max((n + 1 - 2 * h + h * (h - 1) / n) / n, 0.0))
        dm = float(dt.mean() / np.sqrt(var)) * corr
        stat.append(dm)
        pval.append(float(2 * stats.t.sf(abs(dm), n - 1)))
    frame["dm_stat"], frame["dm_pval"] = stat, pval
    return frame
