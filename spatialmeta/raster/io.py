"""Open rasters lazily in one normalized form, and write them back out.

Normal form: dimensions ``(..., time, lat, lon)`` (or ``y``/``x`` for projected grids),
latitude ascending, longitude in [-180, 180) sorted, a CRS attached with rioxarray, and
dask-backed variables (nothing is read until computed).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta._io import atomic_path

__all__ = ["open_raster", "normalize", "write_netcdf", "write_zarr", "write_geotiff", "RasterError"]

_LAT_NAMES = ("lat", "latitude", "y", "nav_lat")
_LON_NAMES = ("lon", "longitude", "x", "nav_lon")


class RasterError(ValueError):
    """A raster cannot be opened or normalized; the message names the file and the fix."""


def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zarr") or (path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    if name.endswith((".tif", ".tiff")):
        return "geotiff"
    if name.endswith((".grib", ".grb", ".grib2", ".grb2")):
        return "grib"
    if name.endswith((".nc", ".nc4", ".netcdf", ".h5")):
        return "netcdf"
    raise RasterError(
        f"cannot tell the format of '{path}' from its name; use a .nc, .tif, .zarr or .grib "
        "suffix, or pass format=..."
    )


def open_raster(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    chunks: dict | str | None = "auto",
    assume_crs: str | None = None,
) -> xr.Dataset:
    """Open a NetCDF, GeoTIFF, Zarr or GRIB raster lazily, in normal form.

    Parameters
    ----------
    path : str or path-like
        The file or store.
    format : {"netcdf", "geotiff", "zarr", "grib"}, optional
        Overrides detection from the suffix.
    chunks : dict or "auto"
        Dask chunks (``"auto"`` lets dask choose; a dict overrides per dimension).
    assume_crs : str, optional
        CRS to attach when the file carries none (for example ``"EPSG:4326"``).

    Returns
    -------
    xarray.Dataset
        Lazy dataset in normal form (see module docstring).

    Examples
    --------
    >>> import tempfile
    >>> from spatialmeta.data import synthetic_climate
    >>> p = Path(tempfile.mkdtemp()) / "c.nc"
    >>> _ = write_netcdf(synthetic_climate(bbox=(0, 0, 4, 4), resolution=2, years=1), p)
    >>> ds = open_raster(p)
    >>> ds.tas.chunks is not None, str(ds.rio.crs)
    (True, 'EPSG:4326')
    """
    p = Path(path)
    if not p.exists():
        raise RasterError(f"raster '{p}' does not exist; check the path.")
    fmt = format or _detect_format(p)
    try:
        if fmt == "netcdf":
            ds = xr.open_dataset(p, chunks=chunks, decode_coords="all")
        elif fmt == "zarr":
            ds = xr.open_zarr(p, chunks=chunks, decode_coords="all")
        elif fmt == "geotiff":
            ds = _open_geotiff(p, chunks)
        elif fmt == "grib":
            ds = xr.open_dataset(
                p, engine="cfgrib", chunks=chunks, backend_kwargs={"indexpath": ""}
            )
        else:
            raise RasterError(
                f"unknown format {fmt!r} for '{p}'; use netcdf, geotiff, zarr or grib."
            )
    except RasterError:
        raise
    except Exception as exc:  # any backend failure becomes one message naming the file
        raise RasterError(f"cannot read raster '{p}' as {fmt}: {exc}") from exc
    return normalize(ds, source=str(p), assume_crs=assume_crs)


def _open_geotiff(path: Path, chunks) -> xr.Dataset:
    import rasterio
    import rioxarray

    if chunks == "auto":  # whole bands per chunk, dask picks how many bands
        chunks = {"band": "auto", "y": -1, "x": -1}
    da = rioxarray.open_rasterio(path, chunks=chunks)
    with rasterio.open(path) as src:
        times = [src.tags(i).get("time") for i in range(1, src.count + 1)]
        name = src.tags().get("variable", "band_data")
        units = src.tags().get("units")
    if all(t is not None for t in times):
        da = da.rename(band="time").assign_coords(time=pd.DatetimeIndex(times))
    da.name = name
    if units:
        da.attrs["units"] = units
    return da.to_dataset()


def normalize(
    ds: xr.Dataset, *, source: str = "dataset", assume_crs: str | None = None
) -> xr.Dataset:
    """Rename lat/lon, sort latitude ascending, wrap longitudes to [-180, 180), attach a CRS.

    Parameters
    ----------
    ds : xarray.Dataset
        Any raster dataset.
    source : str
        Name used in error messages (the file path).
    assume_crs : str, optional
        CRS to attach when none is present.

    Returns
    -------
    xarray.Dataset
    """
    import rioxarray  # noqa: F401

    lat = next((n for n in _LAT_NAMES if n in ds.dims), None)
    lon = next((n for n in _LON_NAMES if n in ds.dims), None)
    if lat is None or lon is None:
        raise RasterError(
            f"'{source}' has no recognizable spatial dimensions (dims: {list(ds.dims)}); "
            f"expected one of {_LAT_NAMES} and one of {_LON_NAMES}."
        )
    from pyproj import CRS

    crs = ds.rio.crs
    if crs is None and assume_crs is not None:
        crs = CRS.from_user_input(assume_crs)
    projected = crs is not None and crs.is_projected
    if not projected:
        ds = ds.rename({lat: "lat", lon: "lon"}) if (lat, lon) != ("lat", "lon") else ds
        lat, lon = "lat", "lon"
        if ds.lon.size and float(ds.lon.max()) > 180.0:
            ds = ds.assign_coords(lon=((ds.lon + 180.0) % 360.0) - 180.0)
            if "lon_bnds" in ds:
                ds["lon_bnds"] = ((ds.lon_bnds + 180.0) % 360.0) - 180.0
        if ds.lon.size > 1 and not bool((ds.lon.diff("lon") > 0).all()):
            ds = ds.sortby("lon")
    if ds[lat].size > 1 and bool(ds[lat][0] > ds[lat][-1]):
        ds = ds.isel({lat: slice(None, None, -1)})
    if crs is None:
        if bool(np.abs(ds[lat]).max() <= 90) and bool(np.abs(ds[lon]).max() <= 360):
            crs = "EPSG:4326"  # CF lat/lon without a grid mapping is geographic WGS 84
        else:
            raise RasterError(
                f"'{source}' has no CRS and its coordinates are not degrees; pass --assume-crs "
                "(assume_crs=...) with its EPSG code."
            )
    ds = ds.rio.set_spatial_dims(x_dim=lon, y_dim=lat).rio.write_crs(crs)
    ds.attrs.setdefault("source_path", source)
    return ds


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to NetCDF-4 atomically (temporary name, then rename)."""
    final = Path(path)
    with atomic_path(final) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return final


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, *, chunks: dict | None = None) -> Path:
    """Write ``ds`` to a Zarr v3 store atomically, CF attributes kept.

    Parameters
    ----------
    ds : xarray.Dataset
    path : path-like
        The store (a directory), replaced whole if it exists.
    chunks : dict, optional
        Chunks to write with (``{"time": 120}``); default keeps the dataset's.
    """
    final = Path(path)
    out = ds.chunk(chunks) if chunks else ds
    for name in list(out.variables):
        out[name].encoding.pop("chunks", None)  # source encodings can conflict with new chunks
        out[name].encoding.pop("preferred_chunks", None)
        if out[name].dtype.kind == "U":  # fixed-width unicode has no Zarr v3 spec; vlen strings do
            out[name] = out[name].astype(object)
    with atomic_path(final) as tmp, warnings.catch_warnings():
        # consolidated metadata lets a plain xr.open_zarr(path) open the store quietly; zarr
        # warns that it is an extension of the v3 spec, which readers without it ignore
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
    return final


def write_geotiff(da: xr.DataArray, path: str | os.PathLike) -> Path:
    """Write a ``(time, lat, lon)`` variable as a multi-band GeoTIFF, one band per time step.

    Band times go into each band's ``time`` tag and description, the CRS and affine
    transform into the GeoTIFF header, so the file opens in QGIS and round-trips through
    :func:`open_raster` with its time axis.
    """
    import rasterio
    from rasterio.transform import from_bounds

    if set(da.dims) != {"time", "lat", "lon"}:
        raise RasterError(f"write_geotiff needs dims (time, lat, lon); got {da.dims}.")
    da = da.transpose("time", "lat", "lon")
    lat, lon = da.lat.values, da.lon.values
    dy, dx = abs(lat[1] - lat[0]), abs(lon[1] - lon[0])
    transform = from_bounds(
        lon.min() - dx / 2,
        lat.min() - dy / 2,
        lon.max() + dx / 2,
        lat.max() + dy / 2,
        len(lon),
        len(lat),
    )
    data = np.asarray(da.values, dtype="float32")
    if lat[0] < lat[-1]:  # GeoTIFF rows run north to south
        data = data[:, ::-1, :]
    crs = da.rio.crs if da.rio.crs is not None else "EPSG:4326"
    times = pd.DatetimeIndex(da.time.values)
    final = Path(path)
    with atomic_path(final) as tmp:
        profile = dict(
            driver="GTiff",
            count=data.shape[0],
            height=data.shape[1],
            width=data.shape[2],
            dtype="float32",
            crs=crs,
            transform=transform,
            nodata=np.nan,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
            interleave="band",
        )
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(variable=str(da.name), units=str(da.attrs.get("units", "")))
            for i, t in enumerate(times, start=1):
                iso = t.strftime("%Y-%m-%dT%H:%M:%S")
                dst.update_tags(i, time=iso)
                dst.set_band_description(i, iso)
    return final
