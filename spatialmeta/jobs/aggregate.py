"""The aggregation job: raster files → a (region, time) Zarr store of zonal statistics.

Reads the polygons (or tiles the grid), runs :func:`spatialmeta.raster.aggregate.aggregate`
on a dask.distributed LocalCluster, on an existing scheduler by address, or on dask's
threaded scheduler, and returns what was written.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from spatialmeta._io import ensure_writable_dir

__all__ = ["aggregate_job"]


def aggregate_job(
    rasters: Sequence[str],
    out: str | os.PathLike,
    *,
    regions: str | os.PathLike | None = None,
    id_column: str = "region_id",
    tiles: int | None = None,
    stats: Sequence[str] = ("mean",),
    variables: Sequence[str] | None = None,
    weights: str | os.PathLike | None = None,
    min_coverage: float = 0.5,
    assume_crs: str | None = None,
    combine: str = "auto",
    scheduler_address: str | None = None,
    workers: int = 2,
    memory_limit: str = "auto",
    local_threads: bool = False,
    progress: bool = True,
    append: bool = False,
    weight_raster: str | os.PathLike | None = None,
    coverage_weight: str = "area",
    min_coverage_frac: float = 0.0,
    include_cols: Sequence[str] | None = None,
):
    """Aggregate ``rasters`` to ``regions`` (or square ``tiles`` of cells) into ``out``.

    ``append``: extend an existing ``out`` with the rasters' later time steps only
    (:func:`~spatialmeta.raster.aggregate.aggregate`, as the weighting raster, coverage
    options and table outputs by ``out``'s suffix). Warnings of the aggregation (an assumed CRS, dropped cells) are shown as one line each.
    Returns the :class:`~spatialmeta.raster.aggregate.AggregateResult` (store, region count,
    tile polygons, weights file).

    Example
    -------
    >>> aggregate_job(["tas_*.nc"], "tas_states.zarr", regions="states.shp",
    ...               id_column="STATE_NAME")  # doctest: +SKIP
    """
    from spatialmeta.raster.aggregate import aggregate, dask_client, read_regions

    out = Path(out)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    polys = read_regions(regions, id_column=id_column) if regions is not None else None
    opts = dict(
        regions=polys, id_column=id_column, tile_size=tiles, variables=list(variables or []) or None,
        stats=tuple(stats), weights_path=weights, min_coverage=min_coverage,
        assume_crs=assume_crs, combine=combine, progress=progress, append=append,
        weight_raster=weight_raster, coverage_weight=coverage_weight,
        min_coverage_frac=min_coverage_frac, include_cols=list(include_cols or []) or None,
    )  # fmt: skip
    with warnings.catch_warnings():
        for category in (UserWarning, RuntimeWarning):  # each of ours, every time
            warnings.simplefilter("always", category)
        if local_threads:
            return aggregate(rasters, out, **opts)
        with dask_client(scheduler_address, n_workers=workers, memory_limit=memory_limit):
            return aggregate(rasters, out, **opts)
