"""Rasters: open and normalize, aggregate to regions."""

from spatialmeta.raster.io import (
    RasterError,
    normalize,
    open_raster,
    write_geotiff,
    write_netcdf,
    write_zarr,
)
from spatialmeta.raster.zonal import (
    ZonalWeights,
    cell_bounds,
    spherical_cell_area,
    zonal_mean,
    zonal_weights,
)

__all__ = [
    "RasterError",
    "normalize",
    "open_raster",
    "write_geotiff",
    "write_netcdf",
    "write_zarr",
    "ZonalWeights",
    "cell_bounds",
    "spherical_cell_area",
    "zonal_mean",
    "zonal_weights",
]
