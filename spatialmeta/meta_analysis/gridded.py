"""Pool at every grid cell: a map of meta-analyses, out of core with dask.

The typical use is an ensemble: each member's per-cell trend (with its sampling
variance, :func:`spatialmeta.tasks.trend.trend_field`) is a study, and every cell is
its own random-effects meta-analysis, giving maps of the pooled trend, tau^2 and I^2.
Each dask block is one batched :func:`~spatialmeta.meta_analysis.pool.pool` call over
all its cells, so blocks run in parallel and memory stays bounded by the chunks.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.pool import pool

__all__ = ["GRID_FIELDS", "pool_gridded"]

GRID_FIELDS = (
    "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2", "I2", "H2",
    "QE", "QEp", "pi_lb", "pi_ub", "k", "converged",
)  # fmt: skip

_LONG_NAMES = {
    "estimate": "pooled estimate",
    "se": "standard error of the pooled estimate",
    "zval": "test statistic of the pooled estimate",
    "pval": "p-value of the pooled estimate",
    "ci_lb": "lower bound of the confidence interval",
    "ci_ub": "upper bound of the confidence interval",
    "tau2": "between-study variance tau^2",
    "se_tau2": "standard error of tau^2",
    "I2": "I^2: share of total variability due to heterogeneity",
    "H2": "H^2: total over sampling variability",
    "QE": "Cochran's Q test for heterogeneity",
    "QEp": "p-value of the Q test",
    "pi_lb": "lower bound of the prediction interval",
    "pi_ub": "upper bound of the prediction interval",
    "k": "number of studies pooled",
    "converged": "tau^2 estimation converged (1) or not (0)",
}


def _pool_block(y, v, *, method: str, test: str, level: float) -> np.ndarray:
    """Pool every cell of one block: ``(..., k)`` in, ``(..., n_fields)`` out."""
    shape = y.shape[:-1]
    k = y.shape[-1]
    y2 = np.asarray(y, dtype=np.float64).reshape(-1, k)
    v2 = np.asarray(v, dtype=np.float64).reshape(-1, k)
    obs = np.isfinite(y2) & np.isfinite(v2) & (v2 > 0)
    y2 = np.where(obs, y2, np.nan)
    v2 = np.where(obs, v2, np.nan)
    kk = obs.sum(axis=-1)
    rows = kk >= (1 if method.upper() in FIXED_METHODS else 2)
    out = np.full((y2.shape[0], len(GRID_FIELDS)), np.nan)
    if rows.any():
        with warnings.catch_warnings():  # non-convergence is reported per cell instead
            warnings.simplefilter("ignore", RuntimeWarning)
            res = pool(y2[rows], v2[rows], method=method, test=test, level=level)
        for j, name in enumerate(GRID_FIELDS):
            out[rows, j] = np.asarray(getattr(res, name), dtype=np.float64)
    out[~rows, GRID_FIELDS.index("k")] = kk[~rows]
    return out.reshape(shape + (len(GRID_FIELDS),))


def pool_gridded(
    yi: xr.DataArray,
    vi: xr.DataArray,
    *,
    dim: str = "member",
    method: str = "REML",
    test: str = "z",
    level: float = 95,
) -> xr.Dataset:
    """Random- or common-effects meta-analysis at every grid cell (lazily on dask input).

    Parameters
    ----------
    yi, vi : xarray.DataArray
        Effect sizes and sampling variances with the study dimension ``dim`` (for example
        per-member trends on ``(member, lat, lon)``); numpy- or dask-backed. A study that
        is NaN (or has a non-positive variance) at a cell is left out there.
    dim : str
        The study dimension.
    method, test, level
        As :func:`~spatialmeta.meta_analysis.pool.pool`.

    Returns
    -------
    xarray.Dataset
        One variable per result field (``estimate, se, zval, pval, ci_lb, ci_ub, tau2,
        se_tau2, I2, H2, QE, QEp, pi_lb, pi_ub, k, converged``) on the other dims of
        ``yi``, with long names. Cells with too few studies (none; or one under random
        effects) are NaN with their ``k``; cells where tau^2 did not converge have
        ``converged = 0``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = xr.DataArray(rng.uniform(0.01, 0.1, (5, 2, 3)), dims=("member", "lat", "lon"))
    >>> y = 0.5 + np.sqrt(v) * xr.DataArray(rng.normal(size=(5, 2, 3)), dims=v.dims)
    >>> out = pool_gridded(y.chunk({"lat": 1}), v, method="DL")
    >>> dict(out.estimate.sizes), bool(out.k.min() == 5)
    ({'lat': 2, 'lon': 3}, True)
    >>> cell = pool(y[:, 1, 2].values, v[:, 1, 2].values, method="DL")
    >>> bool(np.isclose(out.estimate[1, 2], cell.estimate))
    True
    """
    for name, arr in (("yi", yi), ("vi", vi)):
        if dim not in arr.dims:
            raise ValueError(
                f"`{name}` has no study dimension {dim!r} (dims: {list(arr.dims)}); pass dim=."
            )
    yi, vi = xr.broadcast(yi, vi)
    if yi.chunks is not None or vi.chunks is not None:
        yi = yi.chunk({dim: -1})
        vi = vi.chunk({dim: -1})
    fields = xr.apply_ufunc(
        _pool_block, yi, vi,
        input_core_dims=[[dim], [dim]], output_core_dims=[["field"]],
        kwargs={"method": method, "test": test, "level": level},
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"field": len(GRID_FIELDS)}},
    )  # fmt: skip
    units = yi.attrs.get("units", "")
    out = {}
    for j, name in enumerate(GRID_FIELDS):
        da = fields.isel(field=j, drop=True)
        attrs = {"long_name": _LONG_NAMES[name]}
        if name in ("estimate", "se", "ci_lb", "ci_ub", "pi_lb", "pi_ub") and units:
            attrs["units"] = units
        if name in ("I2",):
            attrs["units"] = "percent"
        out[name] = da.assign_attrs(attrs)
    ds = xr.Dataset(out)
    ds.attrs.update(
        method=str(method), test=str(test), level=float(level), studies_dim=dim,
        n_studies=int(yi.sizes[dim]),
    )  # fmt: skip
    return ds
