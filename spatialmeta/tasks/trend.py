"""Linear trends with Newey–West variances: per region, per grid cell, per member.

One kernel for every place a trend becomes an effect size: region task sets
(:meth:`RegionTaskSet.estimates`) and gridded fields (:func:`trend_field`, whose members
:func:`spatialmeta.meta_analysis.pool_gridded` then pools cell by cell).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["newey_west_lags", "ols_trend", "trend_field"]


def newey_west_lags(n: int) -> int:
    """Newey and West's (1994) rule for the Bartlett kernel: ``floor(4 (n / 100)^(2/9))``."""
    return int(np.floor(4 * (max(n, 0) / 100) ** (2 / 9)))


def ols_trend(y: np.ndarray, t: np.ndarray, lags: int | None = None):
    """OLS slope of ``y`` on ``t`` along the last axis, with its Newey–West variance.

    Parameters
    ----------
    y : numpy.ndarray
        ``(..., T)`` values; NaN entries are left out of each series' fit.
    t : numpy.ndarray
        ``(T,)`` times, in the unit the slope is wanted per.
    lags : int, optional
        Bartlett lags; default :func:`newey_west_lags` of the median series length.

    Returns
    -------
    slope, variance, n : numpy.ndarray
        Shape ``y.shape[:-1]``; slope and variance are NaN where a series has fewer than
        three values or no spread in ``t``.

    Examples
    --------
    >>> t = np.arange(10.0)
    >>> slope, var, n = ols_trend(np.stack([2 * t, 5 - t + np.sin(t)]), t, lags=0)
    >>> np.round(slope, 4).tolist(), int(n[0])
    ([2.0, -0.9878], 10)
    """
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    ok = np.isfinite(y)
    n = ok.sum(axis=-1)
    nn = np.maximum(n, 1)
    tbar = np.where(ok, t, 0.0).sum(axis=-1) / nn
    ybar = np.where(ok, y, 0.0).sum(axis=-1) / nn
    dt = np.where(ok, t - tbar[..., None], 0.0)
    dy = np.where(ok, y - ybar[..., None], 0.0)
    sxx = (dt**2).sum(axis=-1)
    good = (sxx > 0) & (n >= 3)
    sxx = np.where(good, sxx, np.nan)
    slope = (dt * dy).sum(axis=-1) / sxx
    resid = np.where(ok, dy - slope[..., None] * dt, 0.0)
    score = dt * resid  # per-observation score of the slope
    L = lags if lags is not None else newey_west_lags(int(np.median(n)) if n.size else 0)
    s = (score**2).sum(axis=-1)
    for lag in range(1, L + 1):  # Bartlett-weighted autocovariances: a handful of lags
        s = s + 2 * (1 - lag / (L + 1)) * (score[..., lag:] * score[..., :-lag]).sum(axis=-1)
    return slope, s / sxx**2, n


def trend_field(
    da: xr.DataArray,
    *,
    dim: str = "time",
    per_years: float = 10.0,
    lags: int | None = None,
) -> xr.Dataset:
    """Linear trend of every series of a field along ``dim``, lazily on dask-backed input.

    Parameters
    ----------
    da : xarray.DataArray
        A field with a datetime ``dim`` (for example ``(member, time, lat, lon)``).
    per_years : float
        The trend's time unit (default: per decade).
    lags : int, optional
        Newey–West lags; default :func:`newey_west_lags` of the record length.

    Returns
    -------
    xarray.Dataset
        ``trend`` (units of ``da`` per ``per_years`` years), ``trend_var`` (its
        Newey–West sampling variance) and ``n`` (values used), on the other dims.

    Examples
    --------
    >>> import pandas as pd
    >>> time = pd.date_range("2000-01-01", periods=20, freq="YS")
    >>> da = xr.DataArray(np.arange(20.0)[:, None] * [1.0, 2.0], dims=("time", "cell"),
    ...                   coords={"time": time})
    >>> out = trend_field(da)
    >>> np.round(out.trend.values, 3).tolist()
    [10.0, 20.0]
    """
    if dim not in da.dims:
        raise ValueError(f"the field has no dimension {dim!r} (dims: {list(da.dims)}).")
    time = da[dim].values
    if not np.issubdtype(time.dtype, np.datetime64):
        raise ValueError(
            f"coordinate {dim!r} is not datetime; decode it first (open_raster does) or "
            "pass a field with a datetime time axis."
        )
    t = (time - time[0]).astype("timedelta64[s]").astype(np.float64) / (365.25 * 86400)
    t = t / per_years
    L = lags if lags is not None else newey_west_lags(da.sizes[dim])

    def kernel(y):
        slope, var, n = ols_trend(y, t, L)
        return slope, var, n.astype(np.int32)

    data = da.chunk({dim: -1}) if da.chunks is not None else da
    slope, var, n = xr.apply_ufunc(
        kernel, data, input_core_dims=[[dim]], output_core_dims=[[], [], []],
        dask="parallelized", output_dtypes=[np.float64, np.float64, np.int32],
    )  # fmt: skip
    units = da.attrs.get("units", "")
    per = f"per {per_years:g} years"
    out = xr.Dataset(
        {
            "trend": slope.assign_attrs(
                long_name=f"linear trend of {da.name or 'value'}",
                units=f"{units} {per}".strip(),
            ),
            "trend_var": var.assign_attrs(
                long_name="Newey-West sampling variance of the trend",
                units=f"({units} {per})2" if units else f"({per})2",
            ),
            "n": n.assign_attrs(long_name="values in the fit"),
        }
    )
    out.attrs["newey_west_lags"] = L
    return out
