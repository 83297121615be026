"""Zonal aggregation: exact cell coverage × cell area as one sparse matrix, applied lazily.

The weights are built once (coverage fraction of each cell by each polygon, from exact
polygon/cell intersections found through a spatial index) and then applied to every time
step as one sparse-times-dense product per dask chunk, the approach of xESMF and xagg.
Weights follow exactextract's ``area_spherical_m2`` convention: the coverage fraction is
computed in the raster's own coordinates and multiplied by the cell's true area on the
sphere (lat/lon grids) or its planar area (projected grids).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import scipy.sparse as sp
import shapely
import xarray as xr

__all__ = ["ZonalWeights", "zonal_weights", "zonal_mean", "cell_bounds", "spherical_cell_area"]

EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG), as exactextract uses for spherical areas


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """Cell edges from centres (midpoints; half a step beyond the ends), shape ``(n, 2)``.

    Works for irregular spacing (for example Gaussian latitudes).
    """
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        raise ValueError("cannot infer cell bounds from a single coordinate value; add bounds.")
    mid = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def spherical_cell_area(lat_bounds: np.ndarray, lon_bounds: np.ndarray) -> np.ndarray:
    """Area of lat/lon cells on a sphere of radius ``EARTH_RADIUS_M``, shape ``(nlat, nlon)`` in m²."""
    lat_b = np.deg2rad(np.clip(lat_bounds, -90, 90))
    band = np.abs(np.sin(lat_b[:, 1]) - np.sin(lat_b[:, 0]))
    width = np.deg2rad(np.abs(lon_bounds[:, 1] - lon_bounds[:, 0]))
    return EARTH_RADIUS_M**2 * band[:, None] * width[None, :]


def _bounds_of(ds: xr.Dataset | xr.DataArray, dim: str) -> np.ndarray:
    name = ds[dim].attrs.get("bounds", f"{dim}_bnds")
    if isinstance(ds, xr.Dataset) and name in ds:
        return np.asarray(ds[name].values, dtype=float)
    return cell_bounds(ds[dim].values)


@dataclass(frozen=True)
class ZonalWeights:
    """Sparse aggregation weights from grid cells to regions.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        Shape ``(n_regions, n_lat * n_lon)``: coverage fraction × cell area (m²).
    region_ids : numpy.ndarray
        Region identifiers, in row order.
    coverage : numpy.ndarray
        Fraction of each region's area that lies on the raster (1.0 = wholly inside).
    shape : tuple of int
        Grid shape ``(n_lat, n_lon)``.
    """

    matrix: sp.csr_matrix
    region_ids: np.ndarray
    coverage: np.ndarray
    shape: tuple[int, int]

    def save(self, path) -> None:
        """Save to a ``.npz`` file (reused across runs)."""
        from spatialmeta._io import atomic_path

        m = self.matrix.tocsr()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    data=m.data,
                    indices=m.indices,
                    indptr=m.indptr,
                    region_ids=self.region_ids.astype(str),
                    coverage=self.coverage,
                    shape=np.array(self.shape),
                    mshape=np.array(m.shape),
                )

    @classmethod
    def load(cls, path) -> ZonalWeights:
        """Load weights written by :meth:`save`."""
        z = np.load(path, allow_pickle=False)
        m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["mshape"]))
        return cls(m, z["region_ids"], z["coverage"], tuple(int(v) for v in z["shape"]))


def zonal_weights(
    grid: xr.Dataset | xr.DataArray,
    polygons: gpd.GeoDataFrame,
    *,
    id_column: str = "region_id",
) -> ZonalWeights:
    """Exact coverage-fraction × cell-area weights of each grid cell for each polygon.

    Parameters
    ----------
    grid : xarray.Dataset or DataArray
        A raster in normal form (``lat``/``lon`` dims, CRS attached); bounds are read from
        ``lat_bnds``/``lon_bnds`` when present, else inferred from the centres.
    polygons : geopandas.GeoDataFrame
        Regions; reprojected to the raster's CRS when they differ.
    id_column : str
        Column with unique region identifiers.

    Returns
    -------
    ZonalWeights

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate, synthetic_regions
    >>> ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    >>> w = zonal_weights(ds, synthetic_regions((0, 40, 4, 44), 4))
    >>> w.matrix.shape, bool(np.allclose(w.coverage, 1.0))
    ((4, 16), True)
    """
    if id_column not in polygons.columns:
        raise KeyError(
            f"polygons have no column {id_column!r} (columns: {list(polygons.columns)}); "
            "pass id_column= with the column that names each region."
        )
    ids = polygons[id_column].to_numpy()
    if len(np.unique(ids)) != len(ids):
        dup = polygons[id_column][polygons[id_column].duplicated()].unique()[:5]
        raise ValueError(f"region ids in column {id_column!r} are not unique: {list(dup)}.")
    crs = grid.rio.crs
    if polygons.crs is None:
        raise ValueError("polygons have no CRS; set one with GeoDataFrame.set_crs(...).")
    if crs is not None and polygons.crs != crs:
        polygons = polygons.to_crs(crs)
    lat_b, lon_b = _bounds_of(grid, "lat"), _bounds_of(grid, "lon")
    ny, nx = len(lat_b), len(lon_b)
    # cell boxes in raster coordinates, row-major (lat, lon)
    x0 = np.broadcast_to(lon_b[:, 0][None, :], (ny, nx)).ravel()
    x1 = np.broadcast_to(lon_b[:, 1][None, :], (ny, nx)).ravel()
    y0 = np.broadcast_to(lat_b[:, 0][:, None], (ny, nx)).ravel()
    y1 = np.broadcast_to(lat_b[:, 1][:, None], (ny, nx)).ravel()
    cells = shapely.box(
        np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)
    )
    geoms = shapely.make_valid(polygons.geometry.to_numpy())
    tree = shapely.STRtree(cells)
    shapely.prepare(geoms)
    poly_idx, cell_idx = tree.query(geoms, predicate="intersects")
    # cells wholly inside a polygon are covered exactly once: only edge cells need the
    # (expensive) polygon clipping
    in_poly, in_cell = tree.query(geoms, predicate="contains_properly")
    inside = np.isin(poly_idx * (ny * nx) + cell_idx, in_poly * (ny * nx) + in_cell)
    cell_area = shapely.area(cells[cell_idx])
    inter = cell_area.copy()
    edge = ~inside
    inter[edge] = shapely.area(shapely.intersection(geoms[poly_idx[edge]], cells[cell_idx[edge]]))
    frac = inter / cell_area
    keep = frac > 0
    poly_idx, cell_idx, frac, inter = poly_idx[keep], cell_idx[keep], frac[keep], inter[keep]
    if crs is None or crs.is_geographic:
        area = spherical_cell_area(lat_b, lon_b).ravel()
    else:
        area = shapely.area(cells)
    m = sp.csr_matrix((frac * area[cell_idx], (poly_idx, cell_idx)), shape=(len(geoms), ny * nx))
    covered = np.bincount(poly_idx, weights=inter, minlength=len(geoms))
    total = shapely.area(geoms)
    coverage = np.divide(covered, total, out=np.zeros_like(total), where=total > 0)
    missing = ids[coverage == 0]
    if len(missing):
        warnings.warn(
            f"{len(missing)} region(s) do not overlap the raster and will be NaN: "
            f"{list(missing[:10])}{' ...' if len(missing) > 10 else ''}",
            stacklevel=2,
        )
    return ZonalWeights(m, ids, np.clip(coverage, 0.0, 1.0), (ny, nx))


def _apply(
    block: np.ndarray, wt: sp.csr_matrix, min_coverage: float, full: np.ndarray
) -> np.ndarray:
    """(..., ny, nx) block → (..., n_regions) area-weighted means, NaN cells renormalized."""
    lead = block.shape[:-2]
    flat = block.reshape(-1, block.shape[-2] * block.shape[-1])
    valid = np.isfinite(flat)
    if valid.all():  # the common case: one sparse product, full weights everywhere
        num = (wt @ flat.T.astype(np.float64)).T
        den = np.broadcast_to(full[None, :], num.shape)
    else:
        num = (wt @ np.where(valid, flat, 0.0).T).T
        den = (wt @ valid.T.astype(np.float64)).T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den < min_coverage * full[None, :]] = np.nan
    return out.reshape(lead + (wt.shape[0],))


def zonal_mean(
    da: xr.DataArray,
    weights: ZonalWeights,
    *,
    min_coverage: float = 0.5,
    region_dim: str = "region",
) -> xr.DataArray:
    """Area-weighted regional means of every time step, lazily.

    Parameters
    ----------
    da : xarray.DataArray
        Variable with trailing ``(lat, lon)`` dims; may be dask-backed (chunked in time).
    weights : ZonalWeights
        From :func:`zonal_weights` on the same grid.
    min_coverage : float
        A region-time value is NaN when the valid (non-NaN) weight is below this fraction
        of the region's full weight; otherwise weights are renormalized over valid cells.
    region_dim : str
        Name of the new dimension.

    Returns
    -------
    xarray.DataArray
        Dimensions ``(..., region)`` with ``region`` coordinate holding the region ids.
    """
    if da.sizes.get("lat") is None or da.sizes.get("lon") is None:
        raise ValueError(f"`da` needs dims lat and lon; got {da.dims}.")
    if (da.sizes["lat"], da.sizes["lon"]) != weights.shape:
        raise ValueError(
            f"raster grid {(da.sizes['lat'], da.sizes['lon'])} does not match the weights' grid "
            f"{weights.shape}; rebuild the weights with zonal_weights() on this raster."
        )
    wt = weights.matrix.tocsr()
    full = np.asarray(wt.sum(axis=1)).ravel()
    if da.chunks is not None:
        da = da.chunk({"lat": -1, "lon": -1})
    out = xr.apply_ufunc(
        _apply,
        da,
        kwargs={"wt": wt, "min_coverage": min_coverage, "full": full},
        input_core_dims=[["lat", "lon"]],
        output_core_dims=[[region_dim]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {region_dim: wt.shape[0]}},
    )
    out = out.assign_coords({region_dim: weights.region_ids})
    out.attrs = {k: v for k, v in da.attrs.items() if k in ("units", "standard_name", "long_name")}
    out.attrs["cell_methods"] = "area: mean"
    return out
