"""Write the embedded default data set to disk in every format the pipeline reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spatialmeta._io import atomic_path
from spatialmeta.data.regions import synthetic_regions
from spatialmeta.data.synthetic import synthetic_climate
from spatialmeta.raster.io import write_geotiff, write_netcdf, write_zarr

__all__ = ["DefaultData", "write_default_data"]


@dataclass(frozen=True)
class DefaultData:
    """Paths of the written default data."""

    netcdf: Path
    geotiff: Path
    zarr: Path
    regions: Path


def write_default_data(
    out_dir: str | os.PathLike,
    *,
    bbox: tuple[float, float, float, float] = (-20.0, 30.0, 40.0, 70.0),
    resolution: float = 1.0,
    years: int = 40,
    n_regions: int = 80,
    seed: int = 0,
) -> DefaultData:
    """Generate the synthetic climate and regions and write NetCDF, GeoTIFF, Zarr and GeoPackage.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing).
    bbox, resolution, years, seed
        Passed to :func:`spatialmeta.data.synthetic_climate`.
    n_regions : int
        Passed to :func:`spatialmeta.data.synthetic_regions`.

    Returns
    -------
    DefaultData
        Paths of ``climate.nc``, ``tas.tif`` (multi-band, one band per month), ``climate.zarr``
        and ``regions.gpkg``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = synthetic_climate(bbox=bbox, resolution=resolution, years=years, seed=seed)
    regions = synthetic_regions(bbox, n_regions, seed=seed)
    nc = write_netcdf(ds, out / "climate.nc")
    tif = write_geotiff(ds.tas, out / "tas.tif")
    zarr = write_zarr(ds, out / "climate.zarr", chunks={"time": 120})
    gpkg = out / "regions.gpkg"
    with atomic_path(gpkg) as tmp:
        regions.to_file(tmp, driver="GPKG", layer="regions")
    return DefaultData(netcdf=nc, geotiff=tif, zarr=zarr, regions=gpkg)
