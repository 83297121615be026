"""Open rasters lazily in one normalized form, and write them back out.

Normal form: dimensions ``(..., time, lat, lon)`` (or ``y``/``x`` for projected grids),
latitude ascending, longitude in [-180, 180) sorted, a CRS attached with rioxarray, and
dask-backed variables (nothing is read until computed).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta._io import atomic_path
from spatialmeta.raster._time import decode_time
from spatialmeta.raster.grid import spatial_dims, with_bounds

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
    if name.endswith((".nc", ".nc4", ".netcdf", ".cdf", ".h5")):
        return "netcdf"
    if path.is_file():  # no telling suffix: NetCDF classic (CDF) and HDF5 by their magic bytes
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic[:3] == b"CDF" or magic == b"\x89HDF\r\n\x1a\n":
            return "netcdf"
    raise RasterError(
        f"cannot tell the format of '{path}' from its name; use a .nc, .tif, .zarr or .grib "
        "suffix, or pass format=..."
    )


_LAT_UNITS = ("degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn")
_LON_UNITS = ("degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese")


def _cf_axis_names(ds: xr.Dataset) -> xr.Dataset:
    """Rename dimensions that CF attributes mark as latitude, longitude or time.

    Files from Ferret and other tools name their axes freely (``FNOCY``, ``FNOCX``, ``TIME``);
    CF says what they are through ``units`` (``degrees_north``/``degrees_east``),
    ``standard_name`` or ``axis``. Only a dimension coordinate is renamed, and only when the
    standard name is not taken already.
    """
    wanted: dict[str, str] = {}
    for dim in ds.dims:
        if dim in ("lat", "lon", "time") or dim not in ds.variables:
            continue
        attrs = ds[dim].attrs
        units = str(attrs.get("units", "")).strip().lower()
        std = str(attrs.get("standard_name", "")).lower()
        axis = str(attrs.get("axis", "")).upper()
        if units in _LAT_UNITS or std == "latitude":
            new = "lat"
        elif units in _LON_UNITS or std == "longitude":
            new = "lon"
        elif std == "time" or axis == "T" or (str(dim).lower() == "time" and " since " in units):
            new = "time"
        else:
            continue
        if new not in ds.variables and new not in wanted.values():
            wanted[str(dim)] = new
    return ds.rename(wanted) if wanted else ds


def _expand(paths) -> list[Path]:
    """Raster files from one path, a glob pattern, or a list of either (:func:`expand_paths`)."""
    from spatialmeta._io import expand_paths

    if not isinstance(paths, str | os.PathLike) and not list(paths):
        raise RasterError("no raster paths given.")
    try:
        return expand_paths(paths)
    except FileNotFoundError as exc:
        raise RasterError(str(exc)) from None


def open_raster(
    paths,
    *,
    format: str | None = None,
    chunks: dict | str | None = "auto",
    assume_crs: str | None = None,
    combine: str = "auto",
    members: list[str] | None = None,
    times: list | None = None,
    calendar: str | None = None,
    time_units: str | None = None,
) -> xr.Dataset:
    """Open NetCDF, GeoTIFF, Zarr (v2/v3) or GRIB rasters lazily, in normal form.

    Parameters
    ----------
    paths : path, glob pattern or list of paths
        One file or store, or several to combine (ensemble members or pieces of a record).
    format : {"netcdf", "geotiff", "zarr", "grib"}, optional
        Overrides detection from the suffix.
    chunks : dict or "auto"
        Dask chunks. ``"auto"`` follows the file: whole bands for band-interleaved
        GeoTIFFs, strips of rows with all bands for pixel-interleaved ones, the stored
        chunks (merged by dask) for NetCDF and Zarr. A dict overrides per dimension.
    assume_crs : str, optional
        CRS to attach when the file carries none (for example ``"EPSG:3035"``).
    combine : {"auto", "member", "time"}
        How several files combine: along a new ``member`` dimension (identical time axes
        required), along ``time`` (disjoint time axes required), or whichever fits.
    members : list of str, optional
        Member labels (default: the file names without suffix).
    times : list, optional
        Times of a GeoTIFF's bands, when its band tags do not carry them.
    calendar, time_units : str, optional
        Override the time calendar or units of NetCDF files (see :func:`decode_time`).

    Returns
    -------
    xarray.Dataset
        Lazy dataset in normal form: ``lat``/``lon`` (or projected ``y``/``x``) ascending,
        longitudes in [-180, 180), a CRS, CF cell bounds (inferred when absent), decoded
        time with ``time.attrs["decoded_from"]`` saying how.

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
    files = _expand(paths)
    opts = dict(format=format, chunks=chunks, assume_crs=assume_crs, times=times, calendar=calendar,
                time_units=time_units)  # fmt: skip
    if len(files) == 1:
        return _open_one(files[0], **opts)
    if combine not in ("auto", "member", "time"):
        raise RasterError(f"`combine` must be 'auto', 'member' or 'time'; got {combine!r}.")
    parts = [_open_one(f, **opts) for f in files]
    _check_same_grid(parts, files)
    has_time = all("time" in p.dims for p in parts)
    same_time = has_time and all(np.array_equal(p.time.values, parts[0].time.values) for p in parts)
    if combine == "auto":
        combine = "member" if (same_time or not has_time) else "time"
    if combine == "member":
        if has_time and not same_time:
            bad = next(
                f
                for f, p in zip(files, parts, strict=True)
                if not np.array_equal(p.time.values, parts[0].time.values)
            )
            raise RasterError(
                f"members have different time axes: '{bad}' differs from '{files[0]}'; "
                "combine='time' joins pieces of one record instead."
            )
        labels = list(members) if members is not None else _member_labels(files)
        if len(labels) != len(files) or len(set(labels)) != len(labels):
            raise RasterError(f"`members` must give {len(files)} distinct labels; got {labels}.")
        out = _concat(parts, "member").assign_coords(member=("member", list(labels)))
    else:
        if not has_time:
            raise RasterError("combine='time' needs a time dimension in every file.")
        order = np.argsort([p.time.values[0] for p in parts])
        parts = [parts[i] for i in order]
        files = [files[i] for i in order]
        for (fa, a), (fb, b) in zip(
            zip(files, parts, strict=True), zip(files[1:], parts[1:], strict=True), strict=False
        ):
            if b.time.values[0] <= a.time.values[-1]:
                raise RasterError(
                    f"time axes of '{fa}' and '{fb}' overlap; combine='member' stacks members."
                )
        out = _concat(parts, "time")
    out = out.rio.write_crs(parts[0].rio.crs)
    out.attrs["source_path"] = [str(f) for f in files]
    return out


def _member_labels(files: list[Path]) -> list[str]:
    """The parts of the file names that differ ('TREFHT.B06.57.atm...' → '57')."""
    tokens = [f.name.split(".") for f in files]
    if len({len(t) for t in tokens}) == 1:
        varying = [i for i in range(len(tokens[0])) if len({t[i] for t in tokens}) > 1]
        labels = [".".join(t[i] for i in varying) for t in tokens]
        if varying and len(set(labels)) == len(labels):
            return labels
    return [f.name for f in files]


def _concat(parts: list[xr.Dataset], dim: str) -> xr.Dataset:
    """Concatenate the gridded variables; grid bounds and the CRS come from the first part."""
    ydim, xdim = spatial_dims(parts[0])
    gridded = [v for v, da in parts[0].data_vars.items() if ydim in da.dims and xdim in da.dims]
    out = xr.concat(
        [p[gridded] for p in parts], dim=dim, data_vars="all", coords="minimal",
        compat="override", join="override",
    )  # fmt: skip
    rest = [v for v in parts[0].data_vars if v not in gridded]
    return out.assign({v: parts[0][v] for v in rest})


def _check_same_grid(parts: list[xr.Dataset], files: list[Path]) -> None:
    ref = parts[0]
    for f, p in zip(files[1:], parts[1:], strict=True):
        for dim in ("lat", "lon", "y", "x"):
            if (dim in ref.dims) != (dim in p.dims):
                raise RasterError(
                    f"'{f}' has dims {list(p.dims)} but '{files[0]}' has {list(ref.dims)}."
                )
            if dim in ref.dims:
                a, b = ref[dim].values, p[dim].values
                if a.shape != b.shape or not np.allclose(a, b, atol=1e-6, rtol=0):
                    raise RasterError(
                        f"members have mismatched grids: '{f}' {dim} has {b.size} values "
                        f"[{b.min():.4f} .. {b.max():.4f}], '{files[0]}' has {a.size} "
                        f"[{a.min():.4f} .. {a.max():.4f}]; regrid them to one grid first."
                    )


def _open_one(p: Path, *, format, chunks, assume_crs, times, calendar, time_units) -> xr.Dataset:
    if not p.exists():
        raise RasterError(f"raster '{p}' does not exist; check the path.")
    fmt = format or _detect_format(p)
    try:
        if fmt == "netcdf":
            ds = xr.open_dataset(p, chunks=chunks, decode_coords="all", decode_times=False)
            ds = _cf_axis_names(ds)
            ds = decode_time(ds, source=str(p), calendar=calendar, units=time_units)
        elif fmt == "zarr":
            # "auto" keeps the stored chunks (dask's own auto-chunking splits them); a store
            # without consolidated metadata (common for v3) is read as it is, silently
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
                ds = xr.open_zarr(p, chunks={} if chunks == "auto" else chunks, decode_coords="all")
        elif fmt == "geotiff":
            ds = _open_geotiff(p, chunks, times)
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
    ds = normalize(ds, source=str(p), assume_crs=assume_crs)
    return _register_geotiff(ds, p) if fmt == "geotiff" else ds


_CHUNK_BYTES = 96 * 2**20


def _balanced(n: int, item_bytes: int) -> int:
    """Items per chunk: chunks of about ``_CHUNK_BYTES``, their number a multiple of the
    cores, so that the threads finish together instead of one reading the last chunk alone
    (on 2 cores, 365 bands of 2.4 MB: 10 chunks of 37 took 7 % less than dask's 7 of 55)."""
    cores = os.cpu_count() or 1
    n_chunks = max(1, -(-n * item_bytes // _CHUNK_BYTES))
    n_chunks = min(n, -(-n_chunks // cores) * cores)
    return max(1, -(-n // n_chunks))


def _open_geotiff(path: Path, chunks, times=None) -> xr.Dataset:
    import rasterio
    import rioxarray

    with rasterio.open(path) as src:
        band_times = [src.tags(i).get("time") for i in range(1, src.count + 1)]
        name = src.tags().get("variable", "band_data")
        units = src.tags().get("units")
        pixel = src.interleaving is not None and src.interleaving.name == "pixel"
        block_rows = src.block_shapes[0][0] if src.block_shapes else 256
        row_bytes = src.width * src.count * np.dtype(src.dtypes[0]).itemsize
        count, height = src.count, src.height
        packed = (
            src.nodata is not None
            or any(sc != 1.0 for sc in src.scales)
            or any(of != 0.0 for of in src.offsets)
        )
    if chunks == "auto":
        if pixel:  # every band is stored at each pixel: read strips of rows with all bands
            rows = max(block_rows, (128 * 2**20 // max(row_bytes, 1)) // block_rows * block_rows)
            chunks = {"band": -1, "y": rows, "x": -1}
        else:  # each band is stored apart: read whole bands, in balanced chunks
            chunks = {
                "band": _balanced(count, row_bytes // max(count, 1) * height),
                "y": -1,
                "x": -1,
            }
    # lock=False: each chunk opens its own handle, so reads run in parallel threads
    # mask_and_scale: the nodata value becomes NaN (integer rasters become float) and band
    # scales/offsets are applied, so packed or gap-filled values never enter a mean as
    # numbers (NetCDF and Zarr get the same from xarray's CF decoding). Only where the file
    # has them: the decoding copies every chunk twice even for scale 1, offset 0.
    with warnings.catch_warnings():
        # rioxarray builds the coordinates with affine's deprecated `*`: its own concern,
        # not the reader's (the same values either way)
        warnings.filterwarnings("ignore", "Use `@` matmul instead")  # pending, or not
        da = rioxarray.open_rasterio(path, chunks=chunks, lock=False, mask_and_scale=packed)
    if times is not None:
        if len(times) != da.sizes["band"]:
            raise RasterError(
                f"'{path}' has {da.sizes['band']} bands but {len(times)} times were given."
            )
        da = da.rename(band="time").assign_coords(time=pd.DatetimeIndex(times))
    elif all(t is not None for t in band_times):
        da = da.rename(band="time").assign_coords(time=pd.DatetimeIndex(band_times))
    da.name = name
    if units:
        da.attrs["units"] = units
    if not pixel and not packed:  # file positions, to tell after normalizing where cells are
        da = da.assign_coords({_POS[0]: (da.dims[0], np.arange(1, count + 1)),
                               _POS[1]: (da.dims[1], np.arange(height)),
                               _POS[2]: (da.dims[2], np.arange(da.sizes[da.dims[2]]))})  # fmt: skip
    return da.to_dataset()


_POS = ("_file_band", "_file_row", "_file_col")
_SOURCES: dict = {}  # dask name of an unmodified GeoTIFF variable -> GeoTIFFBands
_MAX_SOURCES = 256


@dataclass(frozen=True)
class GeoTIFFBands:
    """Where the time steps of a lazily opened band-interleaved GeoTIFF variable are stored.

    ``bands[i]`` is the file band of time step ``i``; ``rows_reversed`` says the file is
    stored north-up (its rows are the variable's latitudes in reverse). Zonal statistics
    use it to read groups of bands straight into a reused buffer (GDAL direct I/O) and
    reduce them there (:func:`spatialmeta.raster.zonal.zonal_stats`).
    """

    path: str
    bands: np.ndarray
    rows_reversed: bool
    dtype: np.dtype


def geotiff_source(da: xr.DataArray) -> GeoTIFFBands | None:
    """The file layout of ``da`` if it is a band-interleaved GeoTIFF variable exactly as
    :func:`open_raster` returned it (same dask graph: no selection or arithmetic since)."""
    data = da.data
    name = getattr(data, "name", None)
    return _SOURCES.get(name) if isinstance(name, str) else None


def _register_geotiff(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Record the file layout of the GeoTIFF variable when normalizing kept bands whole,
    rows contiguous (possibly reversed) and columns in file order; drop the position coords."""
    if _POS[0] not in ds.coords:
        return ds
    rows, cols = ds[_POS[1]].values, ds[_POS[2]].values
    bands = ds[_POS[0]].values
    ds = ds.drop_vars(list(_POS))
    forward = np.array_equal(rows, np.arange(rows.size))
    backward = np.array_equal(rows, np.arange(rows.size)[::-1])
    if (forward or backward) and np.array_equal(cols, np.arange(cols.size)):
        for da in ds.data_vars.values():
            if da.ndim == 3 and hasattr(da.data, "dask"):
                if len(_SOURCES) >= _MAX_SOURCES:
                    _SOURCES.pop(next(iter(_SOURCES)))
                _SOURCES[da.data.name] = GeoTIFFBands(str(path), bands, backward, da.dtype)
    return ds


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

    if _curvilinear_coords(ds) is not None:
        return _normalize_curvilinear(ds, source, assume_crs)
    lat = next((n for n in _LAT_NAMES if n in ds.dims), None)
    lon = next((n for n in _LON_NAMES if n in ds.dims), None)
    if lat is None or lon is None:
        raise RasterError(
            f"'{source}' has no recognizable spatial dimensions (dims: {list(ds.dims)}); "
            f"expected one of {_LAT_NAMES} and one of {_LON_NAMES}."
        )
    from pyproj import CRS

    cf_geographic = _cf_geographic(ds, lat, lon)
    crs = ds.rio.crs
    if crs is None and assume_crs is not None:
        crs = CRS.from_user_input(assume_crs)
    projected = crs is not None and crs.is_projected
    if not projected:
        ds = ds.rename({lat: "lat", lon: "lon"}) if (lat, lon) != ("lat", "lon") else ds
        lat, lon = "lat", "lon"
        if ds.lon.size and float(ds.lon.max()) > 180.0:
            old = ds.lon.values.astype(float)
            wrapped = ((old + 180.0) % 360.0) - 180.0
            steps = np.diff(np.sort(wrapped))
            # a regional grid across the antimeridian would get a gap in -180..180: keep 0..360
            if old.size < 3 or steps.max() <= 1.5 * np.median(np.abs(np.diff(old))):
                ds = ds.assign_coords(lon=("lon", wrapped, ds.lon.attrs))
                bname = ds.lon.attrs.get("bounds", "lon_bnds")
                if bname in ds.variables:  # shift each cell's bounds with its centre
                    ds[bname] = ds[bname] + xr.DataArray(wrapped - old, dims="lon")
        if ds.lon.size > 1 and not bool((ds.lon.diff("lon") > 0).all()):
            ds = ds.sortby("lon")
    if ds[lat].size > 1 and bool(ds[lat][0] > ds[lat][-1]):
        ds = ds.isel({lat: slice(None, None, -1)})
    if crs is None:
        degrees = bool(np.abs(ds[lat]).max() <= 90) and bool(np.abs(ds[lon]).max() <= 360)
        if degrees and cf_geographic:
            crs = "EPSG:4326"  # CF lat/lon without a grid mapping is geographic WGS 84
        else:
            raise RasterError(
                f"raster '{source}' has no CRS"
                + ("" if degrees else " and its coordinates are not degrees")
                + " and nothing says what its coordinates are (no CF latitude/longitude); "
                "give its CRS with `assume_crs`, for example EPSG:4326 for longitude/latitude."
            )
    ds = ds.rio.set_spatial_dims(x_dim=lon, y_dim=lat).rio.write_crs(crs)
    if projected and (lat, lon) != ("y", "x"):
        ds = ds.rename({lat: "y", lon: "x"}).rio.set_spatial_dims(x_dim="x", y_dim="y")
    ds.attrs.setdefault("source_path", source)
    return with_bounds(ds)


def _curvilinear_coords(ds: xr.Dataset) -> tuple[str, str] | None:
    """The names of 2-D latitude/longitude coordinates over the grid's two dimensions (an
    ocean model's curvilinear grid), or None."""
    lat = next((n for n in ("lat", "latitude", "nav_lat") if n in ds.coords), None)
    lon = next((n for n in ("lon", "longitude", "nav_lon") if n in ds.coords), None)
    if lat is None or lon is None or ds[lat].ndim != 2 or ds[lat].dims != ds[lon].dims:
        return None
    return lat, lon


def _normalize_curvilinear(ds: xr.Dataset, source: str, assume_crs) -> xr.Dataset:
    """A curvilinear grid kept as it is, on dims ``(y, x)`` with 2-D ``lat``/``lon`` and
    their cell corners (the cells are not a product of two axes: nothing to sort or wrap);
    longitude/latitude on WGS 84 unless the file or ``assume_crs`` says otherwise."""
    from pyproj import CRS

    lat, lon = _curvilinear_coords(ds)
    names = {n: std for n, std in ((lat, "lat"), (lon, "lon")) if n != std}
    ds = ds.rename(names) if names else ds
    ydim, xdim = ds["lat"].dims
    if (ydim, xdim) != ("y", "x"):
        ds = ds.rename({ydim: "y", xdim: "x"})
    crs = ds.rio.crs or (CRS.from_user_input(assume_crs) if assume_crs else None)
    if crs is not None and not crs.is_geographic:
        raise RasterError(
            f"'{source}' is a curvilinear grid with a projected CRS ({crs}); its 2-D lat/lon "
            "must be longitude/latitude."
        )
    if float(np.abs(ds["lat"]).max()) > 90:
        raise RasterError(f"'{source}': 2-D latitudes beyond ±90; is `lat` really latitude?")
    ds = ds.rio.write_crs(crs or "EPSG:4326")
    ds.attrs.setdefault("source_path", source)
    ds.attrs["grid_type"] = "curvilinear"
    return ds


def _cf_geographic(ds: xr.Dataset, lat: str, lon: str) -> bool:
    """Whether the coordinates say they are latitude and longitude (CF units, standard
    names, or the names themselves), as a NetCDF grid without a grid mapping does; a
    GeoTIFF without a georeference says nothing (its axes are ``y``/``x``)."""
    names = {lat.lower(), lon.lower()}
    if names <= {"lat", "latitude", "lon", "longitude", "nav_lat", "nav_lon"}:
        return True
    attrs = [ds[c].attrs for c in (lat, lon) if c in ds.variables]
    units = {str(a.get("units", "")).lower() for a in attrs}
    standard = {str(a.get("standard_name", "")).lower() for a in attrs}
    return units <= {"degrees_north", "degrees_east", "degree_north", "degree_east",
                     "degrees_n", "degrees_e"} and len(units) == 2 or standard == {
        "latitude", "longitude"}  # fmt: skip


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
    """Write a ``(time, lat, lon)`` variable as a multi-band GeoTIFF, one band per time step
    (or a 2-D one as a single band named after the variable; ``(y, x)`` for projected grids).

    Band times go into each band's ``time`` tag and description, the CRS and affine
    transform into the GeoTIFF header, so the file opens in QGIS and round-trips through
    :func:`open_raster` with its time axis.
    """
    import rasterio
    from rasterio.transform import Affine

    ydim, xdim = spatial_dims(da)
    single = "time" not in da.dims
    if set(da.dims) != {"time", ydim, xdim} and not (single and da.ndim == 2):
        raise RasterError(
            f"write_geotiff needs dims (time, {ydim}, {xdim}) or ({ydim}, {xdim}); got {da.dims}."
        )
    da = da.expand_dims(time=1) if single else da
    da = da.transpose("time", ydim, xdim)
    lat, lon = da[ydim].values, da[xdim].values
    dy, dx = abs(lat[1] - lat[0]), abs(lon[1] - lon[0])
    west, north = lon.min() - dx / 2, lat.max() + dy / 2
    # the affine written out directly: rasterio's from_bounds uses affine's deprecated `*`
    transform = Affine(dx, 0.0, west, 0.0, -dy, north)
    data = np.asarray(da.values, dtype="float32")
    if lat[0] < lat[-1]:  # GeoTIFF rows run north to south
        data = data[:, ::-1, :]
    crs = da.rio.crs if da.rio.crs is not None else "EPSG:4326"
    times = None if single else pd.DatetimeIndex(da.time.values)
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
            if single:
                dst.set_band_description(1, str(da.name))
            for i, t in enumerate(times if times is not None else [], start=1):
                iso = t.strftime("%Y-%m-%dT%H:%M:%S")
                dst.update_tags(i, time=iso)
                dst.set_band_description(i, iso)
    return final
