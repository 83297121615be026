"""Region values back onto a raster grid: each cell takes the value of the region that
covers most of it, so forecasts and skill open as GeoTIFF or CF NetCDF next to the rasters
they came from.

The cell-to-region map is read off the exact coverage of
:func:`~spatialmeta.raster.zonal.zonal_weights` (the same weights the aggregation used), not
from a cell-centre rule: a cell is the region's that covers the largest share of it, and no
region's when none covers at least ``min_fraction`` of it. The values then land on the grid
in one indexing step for every leading step (time, horizon).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from spatialmeta.raster.grid import grid_bounds, spatial_dims
from spatialmeta.raster.zonal import ZonalWeights

__all__ = ["dominant_region", "regions_to_grid", "with_cell_bounds"]


def dominant_region(weights: ZonalWeights, min_fraction: float = 0.5) -> np.ndarray:
    """``(ny, nx)`` index (row of ``weights``) of the region covering most of each cell, -1
    where no region covers ``min_fraction`` of it."""
    frac = weights.fraction.tocsc()
    n_cells = frac.shape[1]
    best = np.full(n_cells, -1, dtype=np.int64)
    has = np.diff(frac.indptr) > 0
    if has.any():
        top = np.asarray(frac.argmax(axis=0)).ravel()
        share = np.asarray(frac.max(axis=0).toarray()).ravel()
        keep = has & (share >= min_fraction)
        best[keep] = top[keep]
    return best.reshape(weights.shape)


def regions_to_grid(
    values: xr.DataArray | xr.Dataset,
    weights: ZonalWeights,
    grid: xr.Dataset | xr.DataArray,
    *,
    region_dim: str = "region",
    min_fraction: float = 0.5,
) -> xr.DataArray:
    """``values`` (``(..., region)``, region ids as the coordinate; a DataArray, or a
    Dataset of them, painted with one cell map) painted onto ``grid``'s
    cells: ``(..., y, x)`` with the grid's coordinates and CRS (:func:`with_cell_bounds`
    adds its CF cell bounds to a Dataset of such arrays). Cells of no
    region, or of a region ``values`` does not hold, are NaN.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate, synthetic_regions
    >>> from spatialmeta.raster.zonal import zonal_weights
    >>> ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    >>> w = zonal_weights(ds, synthetic_regions((0, 40, 4, 44), 4))
    >>> v = xr.DataArray([1.0, 2.0, 3.0, 4.0], dims="region", coords={"region": w.region_ids})
    >>> g = regions_to_grid(v, w, ds)
    >>> g.dims, sorted(np.unique(g.values[np.isfinite(g.values)]).tolist())
    (('lat', 'lon'), [1.0, 2.0, 3.0, 4.0])
    """
    if region_dim not in values.dims:
        raise ValueError(f"`values` has no {region_dim!r} dimension (dims: {list(values.dims)}).")
    ydim, xdim = spatial_dims(grid)
    if (grid.sizes[ydim], grid.sizes[xdim]) != weights.shape:
        raise ValueError(
            f"grid {(grid.sizes[ydim], grid.sizes[xdim])} is not the weights' grid "
            f"{weights.shape}; build the weights with zonal_weights() on this grid."
        )
    owner = dominant_region(weights, min_fraction).ravel()
    # weights row -> position in `values` (-1: a region `values` does not hold)
    at = pd.Index(np.asarray(values[region_dim].values).astype(str)).get_indexer(
        weights.region_ids.astype(str)
    )
    col = np.where(owner >= 0, at[np.maximum(owner, 0)], -1)
    if isinstance(values, xr.Dataset):  # one cell map for every variable
        out = xr.Dataset({v: _paint(values[v], col, weights.shape, grid, region_dim)
                          for v in values.data_vars}, attrs=dict(values.attrs))  # fmt: skip
    else:
        out = _paint(values, col, weights.shape, grid, region_dim)
    if grid.rio.crs is not None:
        out = out.rio.write_crs(grid.rio.crs)
    return out


def _paint(values: xr.DataArray, col, shape, grid, region_dim) -> xr.DataArray:
    """``values`` at the positions ``col`` (-1: NaN) of each cell, on ``grid``'s dims."""
    ydim, xdim = spatial_dims(grid)
    lead = [d for d in values.dims if d != region_dim]
    data = values.transpose(*lead, region_dim).values.astype(np.float64)
    padded = np.concatenate([data, np.full(data.shape[:-1] + (1,), np.nan)], axis=-1)
    cells = padded[..., np.where(col >= 0, col, data.shape[-1])]
    cells = cells.reshape(data.shape[:-1] + shape)
    coords = {d: values[d] for d in lead if d in values.coords}
    for c, v in values.coords.items():  # coordinates on the leading dims only (valid_time)
        if c not in coords and v.dims and set(v.dims) <= set(lead):
            coords[c] = v
    coords[ydim], coords[xdim] = grid[ydim], grid[xdim]
    return xr.DataArray(cells, dims=(*lead, ydim, xdim), coords=coords,
                        attrs=dict(values.attrs), name=values.name)  # fmt: skip


def with_cell_bounds(ds: xr.Dataset, grid) -> xr.Dataset:
    """``ds`` (on ``grid``'s cells) with the grid's CF cell bounds (``lat_bnds``...)."""
    ydim, xdim = spatial_dims(grid)
    yb, xb = grid_bounds(grid)
    ds = ds.assign_coords({f"{ydim}_bnds": ((ydim, "bnds"), yb),
                           f"{xdim}_bnds": ((xdim, "bnds"), xb)})  # fmt: skip
    for d in (ydim, xdim):  # the grid file's own encoding may name its bounds already
        ds[d].encoding.pop("bounds", None)
        ds[d].attrs["bounds"] = f"{d}_bnds"
    return ds
