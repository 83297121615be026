"""The aggregation job: rasters + polygons (or tiles) → a (region, time) Zarr store.

One code path for a laptop and a cluster: the work is a dask graph, computed by whatever
scheduler is active — the threaded scheduler, a ``dask.distributed`` LocalCluster, or an
existing scheduler reached by address (:func:`dask_client`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np

from spatialmeta.raster.io import open_raster, write_netcdf, write_zarr
from spatialmeta.raster.zonal import (
    STATS,
    ZonalWeights,
    active_client,
    zonal_stats,
    zonal_weights,
)

__all__ = ["AggregateResult", "aggregate", "dask_client", "read_regions"]


@dataclass(frozen=True)
class AggregateResult:
    """What :func:`aggregate` wrote."""

    store: Path
    weights: Path | None
    n_regions: int
    missing_regions: list[str]
    regions: Path | None = None  # the tile polygons (GeoParquet) when aggregating to tiles
    appended: int | None = None  # time steps appended to an existing store (``append=True``)


def read_regions(path: str | os.PathLike, *, id_column: str) -> gpd.GeoDataFrame:
    """Read polygons (GeoPackage, Shapefile, GeoJSON, GeoParquet), checking the id column."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"regions file '{p}' does not exist; check `regions`.")
    try:
        frame = (
            gpd.read_parquet(p)
            if p.suffix.lower() in (".parquet", ".geoparquet")
            else gpd.read_file(p)
        )
    except Exception as exc:  # any reader failure becomes one message naming the file
        raise ValueError(f"cannot read regions '{p}': {exc}") from exc
    if id_column not in frame.columns:
        raise KeyError(
            f"regions '{p}' have no column {id_column!r} (columns: "
            f"{[c for c in frame.columns if c != 'geometry']}); pass `id_column`."
        )
    return frame


@contextlib.contextmanager
def dask_client(
    scheduler_address: str | None = None, *, n_workers: int = 2, memory_limit: str | None = "auto"
) -> Iterator[object]:
    """A ``dask.distributed`` client: to a scheduler by address, else to a new LocalCluster.

    The cluster's workers run one thread each; ``memory_limit`` is per worker (dask spills
    to disk above 60% of it and pauses at 80%, so memory stays bounded out of core).
    """
    from distributed import Client, LocalCluster

    if scheduler_address:
        with Client(scheduler_address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            memory_limit=memory_limit,
            dashboard_address=None,
            processes=True,
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        yield client


def aggregate(
    rasters,
    out: str | os.PathLike,
    *,
    regions: gpd.GeoDataFrame | None = None,
    id_column: str = "region_id",
    tile_size: int | None = None,
    stats: tuple[str, ...] = ("mean",),
    variables: list[str] | None = None,
    weights_path: str | os.PathLike | None = None,
    min_coverage: float = 0.5,
    assume_crs: str | None = None,
    combine: str = "auto",
    progress: bool = True,
    append: bool = False,
    weight_raster: str | os.PathLike | None = None,
    coverage_weight: str = "area",
    min_coverage_frac: float = 0.0,
    include_cols: list[str] | None = None,
) -> AggregateResult:
    """Aggregate rasters to regions and write a ``(..., time, region)`` Zarr store, a
    NetCDF file, or a table (CSV, GeoPackage, GeoParquet) by ``out``'s suffix.

    Parameters
    ----------
    rasters : path, glob or list
        Anything :func:`open_raster` takes.
    out : path-like
        Where to write (atomically): a Zarr store (``.zarr`` or no suffix), NetCDF (``.nc``),
        or a table, one row per region and time step (``.csv``, ``.gpkg``, ``.parquet``:
        :func:`~spatialmeta.raster.tables.zonal_table`, geometry carried in the last two).
    regions : GeoDataFrame, optional
        Polygons with ``id_column``; or give ``tile_size`` to aggregate to regular tiles.
    stats : tuple of str
        Statistics (:func:`zonal_stats`'s and, for categorical rasters,
        :func:`~spatialmeta.raster.categorical.zonal_categories`').
    variables : list of str, optional
        Variables to aggregate (default: every gridded variable).
    weights_path : path-like, optional
        Reuse weights saved here when present; save them here otherwise.
    progress : bool
        Show a progress bar while computing.
    append : bool
        When ``out`` exists: aggregate only the rasters' time steps after the store's last
        one and append them (the store's regions, statistics and variables must be the
        ones asked for; the weights are reused from ``weights_path`` when given). The store
        is extended on a copy that replaces it only when complete. Steps up to the store's
        last are taken as aggregated already; ``appended`` in the result counts the new.
        Zarr stores only.
    weight_raster : path-like, optional
        A 2-D raster (population, cropland) for the ``weighted_*`` statistics.
    coverage_weight, min_coverage_frac
        How covered cells count (:func:`zonal_stats`).
    include_cols : list of str, optional
        Polygon columns carried into a table output.

    Returns
    -------
    AggregateResult
    """
    kind = _output_kind(out, append, include_cols)
    from spatialmeta.raster.io import _expand

    files = _expand(rasters)  # once: the digests, the source attribute and an append use it
    sources = _source_digests(files)
    # appending to a store whose files are all unchanged: only the new files are read
    new_files = _new_files(out, files, sources) if append and Path(out).exists() else None
    opened = new_files if new_files else files
    ds = open_raster(opened, assume_crs=assume_crs, combine=combine)
    if variables:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise KeyError(
                f"variables {missing} are not in the raster (has {list(ds.data_vars)}); check `variables`."
            )
        ds = ds[variables]
    if (regions is None) == (tile_size is None):
        raise ValueError("give either `regions` or a tile size (`tiles`), not both or neither.")
    if tile_size is not None:
        from spatialmeta.raster.tiles import tile

        regions, id_column = tile(ds, tile_size).regions, "region_id"
    weights = None
    wpath = Path(weights_path) if weights_path else None
    key = _weights_key(ds, regions, id_column)
    if wpath is not None and wpath.exists():
        weights = ZonalWeights.load(wpath)
        if weights.source_key != key:  # another grid or other polygons: built again
            weights = None
    if weights is None:
        weights = dataclasses.replace(zonal_weights(ds, regions, id_column=id_column),
                                      source_key=key)  # fmt: skip
        if wpath is not None:
            weights.save(wpath)
    appended = None
    if append and Path(out).exists():
        new = _new_steps(ds, out, weights, sources, only_new=bool(new_files))
        if new is None and new_files:  # rewritten whole: every file
            ds = open_raster(files, assume_crs=assume_crs, combine=combine)
            ds = ds[variables] if variables else ds
        elif new is not None:
            ds, appended = new, int(new.sizes["time"])
    weight = _weight_raster(weight_raster, assume_crs) if weight_raster is not None else None
    result = _statistics(ds, weights, stats, min_coverage, weight, coverage_weight,
                         min_coverage_frac)  # fmt: skip
    result.attrs.update({
        "source": _source_attr(files), "Conventions": "CF-1.10",
        "spatialmeta_sources": json.dumps(sources, sort_keys=True),
    })  # fmt: skip
    if kind == "table":
        from spatialmeta.raster.tables import write_table, zonal_table

        table = zonal_table(_compute(result, progress), regions, id_column=id_column,
                            include_cols=include_cols)  # fmt: skip
        write_table(table, out)
    elif kind == "netcdf":
        write_netcdf(_compute(result, progress), out)
    elif appended is None:
        write_zarr(_compute(result, progress), out)
    elif appended:
        _append_zarr(_compute(result, progress), out)
    tiles_path = None
    if tile_size is not None:  # the polygons `spatialmeta forecast --regions` needs
        from spatialmeta._io import atomic_path

        tiles_path = Path(out).with_name(Path(out).stem + "_tiles.parquet")
        with atomic_path(tiles_path) as tmp:
            regions.to_parquet(tmp)
    missing = [str(r) for r in weights.region_ids[weights.coverage == 0]]
    return AggregateResult(Path(out), wpath, len(weights.region_ids), missing, tiles_path, appended)


def _output_kind(out, append: bool, include_cols) -> str:
    """ "zarr", "netcdf" or "table" by ``out``'s suffix, refusing what the kind cannot do."""
    from spatialmeta.raster.tables import TABLE_SUFFIXES

    suffix = Path(out).suffix.lower()
    kind = (
        "table" if suffix in TABLE_SUFFIXES else "netcdf" if suffix in (".nc", ".nc4") else "zarr"
    )
    if kind == "zarr" and suffix not in ("", ".zarr"):
        raise ValueError(
            f"`out` '{out}': unknown kind of output {suffix!r}; write a Zarr store (.zarr), "
            f"NetCDF (.nc) or a table ({', '.join(TABLE_SUFFIXES)})."
        )
    if append and kind != "zarr":
        raise ValueError(f"`out` '{out}': appending needs a Zarr store (.zarr).")
    if include_cols and kind != "table":
        raise ValueError(
            f"`include_cols` go into tables only; write `out` as .csv, .gpkg or .parquet "
            f"(got '{out}')."
        )
    return kind


def _weight_raster(path, assume_crs):
    """The weighting raster's first variable, named after its file (``zonal_stats`` checks
    that it is one 2-D grid and names the file when it is not)."""
    w = open_raster(path, assume_crs=assume_crs)
    da = w[next(iter(w.data_vars))]
    return da.assign_attrs(source_path=str(path))


def _statistics(ds, weights, stats, min_coverage, weight, coverage_weight, min_coverage_frac):
    """The zonal and the categorical statistics asked for, one dataset."""
    import xarray as xr

    from spatialmeta.raster.categorical import CATEGORICAL_STATS, zonal_categories

    unknown = [s for s in stats if s not in STATS and s not in CATEGORICAL_STATS]
    if unknown or not stats:
        raise ValueError(
            f"unknown statistics {unknown} in `stats`; choose from {', '.join(STATS)} or, for "
            f"categorical rasters, {', '.join(CATEGORICAL_STATS)}."
        )
    cat = tuple(s for s in stats if s in CATEGORICAL_STATS)
    num = tuple(s for s in stats if s not in CATEGORICAL_STATS)
    opts = dict(weight=weight, coverage_weight=coverage_weight,
                min_coverage_frac=min_coverage_frac)  # fmt: skip
    parts = [zonal_stats(ds, weights, stats=num, min_coverage=min_coverage, **opts)] if num else []
    for da in ds.data_vars.values():
        if cat and da.dims[-2:] == weights.dims:
            parts.append(zonal_categories(da, weights, stats=cat, **opts))
    return xr.merge(parts, combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]


def _weights_key(ds, regions, id_column: str) -> str:
    """What zonal weights depend on: the grid's coordinates and CRS, the polygons and ids."""
    from spatialmeta._digest import digest

    dims = [d for d in ds.dims if d != "time" and ds[d].ndim == 1][-2:]
    grid = {d: ds[d].values for d in dims}
    if "lat" in ds.coords and ds["lat"].ndim == 2:  # a curvilinear grid is its 2-D lat/lon
        grid.update(lat=ds["lat"].values, lon=ds["lon"].values)
    crs = ds.rio.crs.to_wkt() if ds.rio.crs is not None else ""
    return digest({"grid": grid, "crs": crs, "regions": regions[[id_column, "geometry"]]})


def _source_digests(files: list[Path]) -> dict[str, str]:
    """File name → digest of its bytes, for every raster file read (kept in the store's
    attributes, so that an append can tell a new file from a changed one)."""
    from spatialmeta._digest import path_digest

    return {f.name: path_digest(f) for f in files}


def _source_attr(files: list[Path]) -> str:
    """The store's ``source`` attribute: every file read (whatever an append opened)."""
    names = [str(f) for f in files]
    return names[0] if len(names) == 1 else str(names)


def _recorded_sources(store) -> dict[str, str] | None:
    """The file digests a store records (``spatialmeta_sources``), None if it has none."""
    return json.loads(store.attrs.get("spatialmeta_sources", "null") or "null")


def _new_files(out, files: list[Path], sources: dict[str, str]) -> list[Path] | None:
    """The raster files not yet in the store ``out`` when every file it was made from is
    unchanged and it has no member axis; None otherwise (the whole record is opened)."""
    import xarray as xr

    try:
        old = xr.open_zarr(out)
    except Exception:  # reported by _new_steps, which opens it again
        return None
    before = _recorded_sources(old)
    if (
        before is None
        or "member" in old.dims
        or any(sources.get(n) != d for n, d in before.items())
    ):
        return None
    return [f for f in files if f.name not in before] or None


def _new_steps(ds, out, weights, sources: dict[str, str], only_new: bool = False):
    """The raster's time steps after the store's last, checked against the store's regions;
    None (aggregate the whole record again, with a warning saying why) when a file the
    store was made from changed or is gone, or the steps up to its last differ.
    ``only_new``: ``ds`` holds only the files the store does not record."""
    import warnings

    import xarray as xr

    try:
        old = xr.open_zarr(out)
    except Exception as exc:  # any reader failure becomes one message naming the store
        raise ValueError(f"cannot append to '{out}': it does not open as Zarr ({exc}).") from exc
    if "time" not in old.dims or "time" not in ds.dims:
        raise ValueError(f"cannot append to '{out}': the store or the rasters have no time axis.")
    ids = [str(r) for r in old["region"].values]
    if ids != [str(r) for r in weights.region_ids]:
        raise ValueError(
            f"cannot append to '{out}': its regions are not the ones being aggregated; "
            "write a new store (append=False) or aggregate the same regions."
        )
    before = _recorded_sources(old)
    if before is None:
        why = "it does not record the files it was made from"
    else:
        changed = sorted(n for n, d in before.items() if sources.get(n) != d)
        why = f"'{changed[0]}' changed or is gone since it was written" if changed else None
    times = ds["time"].values
    last = old["time"].values[-1]
    if why is None and only_new and (times <= last).any():
        why = "new files hold time steps up to its last"
    elif (
        why is None
        and not only_new
        and not np.array_equal(times[times <= last], old["time"].values)
    ):
        why = "the rasters' time steps up to its last differ from its own"
    if why is not None:
        warnings.warn(f"not appending to '{out}': {why}; aggregating the whole record again.",
                      UserWarning, stacklevel=3)  # fmt: skip
        return None
    return ds.sel(time=times > last)


def _append_zarr(result, out) -> None:
    """Append ``result``'s time steps to the store ``out``: on a copy, then swapped in."""
    import shutil
    import warnings

    import xarray as xr

    from spatialmeta._io import atomic_path

    old = xr.open_zarr(out)
    missing = sorted(set(old.data_vars) ^ set(result.data_vars))
    if missing:
        raise ValueError(
            f"cannot append to '{out}': its variables differ from the ones aggregated now "
            f"({missing}); ask for the same variables and statistics, or write a new store."
        )
    for name in list(result.variables):
        result[name].encoding = {}
    result = result.drop_vars([v for v in result.coords if "time" not in result[v].dims])
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        shutil.copytree(out, tmp)
        result.to_zarr(tmp, mode="a", append_dim="time", consolidated=True)


def _compute(result, progress: bool):
    """Compute on the active scheduler, with a progress bar (dask's, or distributed's)."""
    client = active_client()
    if client is None:
        if not progress:
            return result.compute()
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=1.0):
            return result.compute()
    future = client.compute(result)
    if progress:
        from distributed import progress as show_progress

        show_progress(future)
    return future.result()
