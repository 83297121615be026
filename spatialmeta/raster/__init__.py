"""Rasters: open and normalize, tile, and aggregate to regions."""

from spatialmeta.raster.aggregate import AggregateResult, aggregate, dask_client, read_regions
from spatialmeta.raster.categorical import CATEGORICAL_STATS, zonal_categories
from spatialmeta.raster.grid import (
    EARTH_RADIUS_M,
    cell_bounds,
    gaussian_latitude_bounds,
    grid_bounds,
    spatial_dims,
    spherical_cell_area,
    with_bounds,
)
from spatialmeta.raster.io import (
    RasterError,
    normalize,
    open_raster,
    write_geotiff,
    write_netcdf,
    write_zarr,
)
from spatialmeta.raster.tables import write_table, zonal_table
from spatialmeta.raster.tiles import Tiles, tile, untile
from spatialmeta.raster.zonal import (
    COVERAGE_WEIGHTS,
    STATS,
    ZonalWeights,
    coverage_weights,
    zonal_mean,
    zonal_stats,
    zonal_weights,
)

__all__ = [
    "AggregateResult", "aggregate", "dask_client", "read_regions",
    "EARTH_RADIUS_M", "cell_bounds", "gaussian_latitude_bounds", "grid_bounds", "spatial_dims",
    "spherical_cell_area", "with_bounds",
    "RasterError", "normalize", "open_raster", "write_geotiff", "write_netcdf", "write_zarr",
    "Tiles", "tile", "untile",
    "STATS", "COVERAGE_WEIGHTS", "ZonalWeights", "coverage_weights", "zonal_mean", "zonal_stats",
    "zonal_weights", "CATEGORICAL_STATS", "zonal_categories", "zonal_table", "write_table",
]  # fmt: skip
