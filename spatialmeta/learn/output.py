"""Forecast outputs that open in the analyst's tools: Zarr with CF attributes, GeoParquet,
and, given the raster grid the regions came from, CF NetCDF and GeoTIFF on that grid."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from spatialmeta._io import atomic_path
from spatialmeta.learn.features import extend_time
from spatialmeta.learn.predictions import Forecast
from spatialmeta.raster.io import write_geotiff, write_netcdf, write_zarr
from spatialmeta.tasks.region import RegionTaskSet

__all__ = [
    "forecast_dataset", "forecast_frame", "write_forecasts", "gridded_forecasts",
    "write_gridded", "DEFAULT_QUANTILES",
]  # fmt: skip

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _centroid_coord(
    tasks: RegionTaskSet, forecast: Forecast, name: str, standard_name: str, units: str
):
    """The regions' centroid coordinate from the task covariates (NaN when absent)."""
    if name not in tasks.covariate_names:
        return ("region", np.full(len(forecast.regions), np.nan))
    values = tasks.covariates[forecast.regions, tasks.covariate_names.index(name)]
    return ("region", values, {"standard_name": standard_name, "units": units})


def forecast_dataset(
    tasks: RegionTaskSet, forecast: Forecast, quantiles=DEFAULT_QUANTILES
) -> xr.Dataset:
    """Forecasts as a ``(region, time, horizon, quantile)`` Dataset with CF attributes.

    ``time`` is the forecast origin (reference time); ``valid_time`` (time × horizon)
    is when each forecast verifies.
    """
    q = np.asarray(quantiles, dtype=float)
    if forecast.std is None:
        values = np.repeat(forecast.mean[..., None], len(q), axis=-1)
    else:
        values = forecast.mean[..., None] + forecast.std[..., None] * stats.norm.ppf(q)
    origin_time = tasks.time[forecast.origins]
    h = forecast.mean.shape[-1]
    idx = forecast.origins[:, None] + np.arange(h)[None, :]
    valid = extend_time(tasks.time, h).to_numpy()[idx]
    units = tasks.units
    ds = xr.Dataset(
        {
            "forecast_mean": (
                ("region", "time", "horizon"),
                forecast.mean.astype("float32"),
                {"long_name": f"Forecast mean of {tasks.variable}", "units": units},
            ),
            "forecast_quantile": (
                ("region", "time", "horizon", "quantile"),
                values.astype("float32"),
                {"long_name": f"Forecast quantiles of {tasks.variable}", "units": units},
            ),
            "observed": (
                ("region", "time", "horizon"),
                tasks.series[forecast.regions][:, forecast.origins[:, None] + np.arange(h)].astype(
                    "float32"
                ),
                {"long_name": f"Observed {tasks.variable}", "units": units},
            ),
        },
        coords={
            "region": (
                "region",
                tasks.region_ids[forecast.regions].astype(str),
                {"long_name": "region id", "cf_role": "timeseries_id"},
            ),
            "time": (
                "time",
                pd.DatetimeIndex(origin_time),
                {"standard_name": "forecast_reference_time"},
            ),
            "horizon": (
                "horizon",
                np.arange(1, h + 1),
                {"long_name": "forecast lead", "units": "steps"},
            ),
            "quantile": ("quantile", q, {"long_name": "quantile level"}),
            "valid_time": (("time", "horizon"), valid, {"standard_name": "time"}),
            "lon": _centroid_coord(tasks, forecast, "lon", "longitude", "degrees_east"),
            "lat": _centroid_coord(tasks, forecast, "lat", "latitude", "degrees_north"),
        },
        attrs={
            "Conventions": "CF-1.10",
            "featureType": "timeSeries",
            "title": f"spatialmeta forecasts ({forecast.method})",
            "method": forecast.method,
        },
    )
    if forecast.std is not None:
        ds["forecast_std"] = (
            ("region", "time", "horizon"),
            forecast.std.astype("float32"),
            {"long_name": f"Forecast standard deviation of {tasks.variable}", "units": units},
        )
    return ds


def forecast_frame(
    ds: xr.Dataset, regions: gpd.GeoDataFrame, id_column: str = "region_id"
) -> gpd.GeoDataFrame:
    """Long table, one row per (region, origin, horizon), with the region's polygon."""
    wide = ds["forecast_quantile"].to_dataset(dim="quantile")
    wide = wide.rename({q: f"q{int(round(float(q) * 100)):02d}" for q in ds["quantile"].values})
    frame = xr.merge([ds[["forecast_mean", "observed"]], wide]).to_dataframe().reset_index()
    frame["valid_time"] = (
        ds["valid_time"]
        .to_series()
        .reindex(pd.MultiIndex.from_frame(frame[["time", "horizon"]]))
        .to_numpy()
    )
    frame = frame.drop(columns=[c for c in ("lon", "lat", "spatial_ref") if c in frame.columns])
    geom = regions.set_index(id_column).geometry
    return gpd.GeoDataFrame(
        frame, geometry=geom.reindex(frame["region"]).to_numpy(), crs=regions.crs
    )


def write_forecasts(
    ds: xr.Dataset,
    regions: gpd.GeoDataFrame,
    out_dir: str | os.PathLike,
    id_column: str = "region_id",
) -> tuple[Path, Path]:
    """Write ``forecasts.zarr`` and ``forecasts.parquet`` (GeoParquet) atomically."""
    out = Path(out_dir)
    zarr_path = write_zarr(ds, out / "forecasts.zarr")
    pq = out / "forecasts.parquet"
    with atomic_path(pq) as tmp:
        forecast_frame(ds, regions, id_column).to_parquet(tmp)
    return zarr_path, pq


def gridded_forecasts(ds: xr.Dataset, weights, grid) -> xr.Dataset:
    """The forecasts of :func:`forecast_dataset` on the raster ``grid`` (each cell the
    region covering most of it: :func:`~spatialmeta.raster.rasterize.regions_to_grid`):
    mean, standard deviation and observed values on ``(time, horizon, lat, lon)``, with
    ``valid_time``, CF bounds and the grid mapping."""
    from spatialmeta.raster.rasterize import regions_to_grid, with_cell_bounds

    names = [v for v in ("forecast_mean", "forecast_std", "observed") if v in ds]
    out = with_cell_bounds(regions_to_grid(ds[names], weights, grid), grid)
    out.attrs = {**ds.attrs, "featureType": "grid",
                 "comment": "each cell holds the forecast of the region covering most of it"}  # fmt: skip
    return out


def write_gridded(
    ds: xr.Dataset, skill: xr.DataArray | None, weights, grid, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write ``forecasts_grid.nc`` (CF NetCDF, every origin and horizon), ``forecast_latest.tif``
    (the last origin's mean, one band per valid time) and, with ``skill`` (per region),
    ``skill_map.tif``, each atomically; returns what was written."""
    from spatialmeta.raster.rasterize import regions_to_grid

    out = Path(out_dir)
    grid_ds = gridded_forecasts(ds, weights, grid)
    written = {"forecasts (CF NetCDF grid)": write_netcdf(grid_ds, out / "forecasts_grid.nc")}
    latest = grid_ds["forecast_mean"].isel(time=-1)
    valid = pd.DatetimeIndex(latest["valid_time"].values)
    latest = latest.drop_vars(["valid_time", "time"], errors="ignore")
    latest = latest.rename(horizon="time").assign_coords(time=("time", valid))
    written["latest forecast (GeoTIFF)"] = write_geotiff(latest, out / "forecast_latest.tif")
    if skill is not None:
        on_grid = regions_to_grid(skill, weights, grid)
        written["skill map (GeoTIFF)"] = write_geotiff(on_grid, out / "skill_map.tif")
    return written
