"""Zonal aggregation: exact cell coverage × cell area as one sparse matrix, applied lazily.

The weights are built once (the fraction of each cell covered by each polygon, from exact
polygon/cell intersections found through a spatial index) and then applied to every time
step, one sparse-times-dense product per dask chunk, the approach of xESMF and xagg. Spatial
chunks each see only their own columns of the matrix; their partial sums are added by dask's
tree reduction, so a raster chunked in space (pixel-interleaved GeoTIFF, Zarr tiles) never
needs to be rechunked.

Weights follow exactextract's ``area_spherical_m2`` convention: coverage fractions are
computed in the raster's own coordinates and multiplied by each cell's true area on the
sphere (lat/lon grids) or its planar area (projected grids). ``sum`` is exactextract's
``sum`` (values × coverage fraction, no area).

Written here rather than taken from a library: exactextract computes the same coverage but
not as a reusable sparse operator over dask chunks, and xagg/xESMF weights are not exact at
polygon edges.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, replace

import dask
import dask.array as dsa
import geopandas as gpd
import numpy as np
import scipy.sparse as sp
import shapely
import xarray as xr

from spatialmeta.raster.grid import (
    EARTH_RADIUS_M,
    cell_bounds,
    curvilinear_corners,
    grid_bounds,
    polygon_area_on_sphere,
    spatial_dims,
    spherical_cell_area,
)
from spatialmeta.raster.io import RasterError, geotiff_source

__all__ = [
    "ZonalWeights",
    "zonal_weights",
    "coverage_weights",
    "zonal_mean",
    "zonal_stats",
    "cell_bounds",
    "spherical_cell_area",
    "EARTH_RADIUS_M",
    "STATS",
    "COVERAGE_WEIGHTS",
]

STATS = (
    "mean", "sum", "min", "max", "std", "count", "quantile", "median", "variance",
    "coefficient_of_variation", "weighted_mean", "weighted_sum", "weighted_std",
    "weighted_variance",
)  # fmt: skip
WGS84_A = 6378137.0  # metres
# how each covered cell counts, exactextract's ``coverage_weight`` and this package's own
COVERAGE_WEIGHTS = ("area", "fraction", "none", "area_cartesian", "area_spherical_m2")
_WEIGHTED = {"weighted_mean": "mean", "weighted_sum": "sum", "weighted_std": "std",
             "weighted_variance": "variance"}  # fmt: skip


@dataclass(frozen=True)
class ZonalWeights:
    """Sparse aggregation weights from grid cells to regions.

    Attributes
    ----------
    fraction : scipy.sparse.csr_matrix
        ``(n_regions, ny * nx)``: fraction of each cell covered by each region.
    cell_area : numpy.ndarray
        ``(ny * nx,)`` cell areas (m² on the sphere for lat/lon grids, CRS units² otherwise).
    region_ids : numpy.ndarray
        Region identifiers, in row order.
    coverage : numpy.ndarray
        Fraction of each region's area that lies on the raster (1.0 = wholly inside).
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    dims : tuple of str
        Spatial dimension names, ``("lat", "lon")`` or ``("y", "x")``.
    source_key : str
        A digest of the grid and polygons the weights were built from (empty if unknown):
        saved weights whose key differs from the inputs' are rebuilt, not reused.
    """

    fraction: sp.csr_matrix
    cell_area: np.ndarray
    region_ids: np.ndarray
    coverage: np.ndarray
    shape: tuple[int, int]
    dims: tuple[str, str] = ("lat", "lon")
    source_key: str = ""

    @property
    def matrix(self) -> sp.csr_matrix:
        """Coverage fraction × cell area, ``(n_regions, ny * nx)``."""
        return (self.fraction @ sp.diags(self.cell_area)).tocsr()

    def save(self, path) -> None:
        """Save to a ``.npz`` file, to reuse across runs."""
        from spatialmeta._io import atomic_path

        m = self.fraction.tocsr()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, data=m.data, indices=m.indices, indptr=m.indptr, cell_area=self.cell_area,
                region_ids=self.region_ids.astype(str), coverage=self.coverage,
                shape=np.array(self.shape), dims=np.array(self.dims),
                source_key=np.array(self.source_key),
            )  # fmt: skip

    @classmethod
    def load(cls, path) -> ZonalWeights:
        """Load weights written by :meth:`save`."""
        z = np.load(path, allow_pickle=False)
        shape = tuple(int(v) for v in z["shape"])
        m = sp.csr_matrix(
            (z["data"], z["indices"], z["indptr"]),
            shape=(len(z["region_ids"]), shape[0] * shape[1]),
        )
        return cls(
            m,
            z["cell_area"],
            z["region_ids"],
            z["coverage"],
            shape,
            tuple(str(d) for d in z["dims"]),
            str(z["source_key"]) if "source_key" in z.files else "",
        )


def coverage_weights(
    weights: ZonalWeights, grid, coverage_weight: str = "area", min_coverage_frac: float = 0.0
) -> ZonalWeights:
    """``weights`` with each covered cell counted as ``coverage_weight`` says, cells covered
    by less than ``min_coverage_frac`` dropped (see :func:`zonal_stats`). ``grid``: the
    raster the weights were built on (for planar cell areas)."""
    if coverage_weight not in COVERAGE_WEIGHTS:
        raise ValueError(
            f"unknown `coverage_weight` {coverage_weight!r}; choose one of "
            f"{', '.join(COVERAGE_WEIGHTS)}."
        )
    if not 0.0 <= min_coverage_frac <= 1.0:
        raise ValueError(f"`min_coverage_frac` must lie in [0, 1]; got {min_coverage_frac!r}.")
    if coverage_weight == "area" and min_coverage_frac == 0.0:
        return weights
    frac = weights.fraction.tocsr(copy=True)
    if min_coverage_frac > 0.0:
        frac.data[frac.data < min_coverage_frac] = 0.0
        frac.eliminate_zeros()
    if coverage_weight == "area":
        return replace(weights, fraction=frac)
    if coverage_weight == "none":
        frac.data[:] = 1.0
    elif coverage_weight == "area_cartesian":
        frac = (frac @ sp.diags(_planar_area(*grid_bounds(grid)))).tocsr()
    elif coverage_weight == "area_spherical_m2":
        if weights.dims != ("lat", "lon"):
            raise ValueError(
                "`coverage_weight` 'area_spherical_m2' needs a longitude/latitude grid; this "
                "one is projected: use 'area_cartesian' (areas in its CRS units)."
            )
        # exactextract's spherical areas are on a sphere of the WGS 84 semi-major axis
        scale = (WGS84_A / EARTH_RADIUS_M) ** 2
        frac = (frac @ sp.diags(weights.cell_area * scale)).tocsr()
    return replace(weights, fraction=frac, cell_area=np.ones_like(weights.cell_area))


def _planar_area(yb: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Each cell's area in the grid's own units (degrees² on lat/lon), flattened."""
    return ((yb.max(axis=1) - yb.min(axis=1))[:, None] * (xb.max(axis=1) - xb.min(axis=1))).ravel()


def _weight_on_grid(weight: xr.DataArray, grid) -> np.ndarray:
    """The weighting raster as a ``(ny, nx)`` array on ``grid``'s cells: as it is on the
    same grid, else regridded conservatively (each cell the area-weighted mean of the
    weight cells it overlaps, found with this module's exact coverage)."""
    if not isinstance(weight, xr.DataArray):
        raise TypeError(f"`weight` must be an xarray.DataArray (a 2-D raster); got {type(weight)}.")
    dims = spatial_dims(weight)
    extra = [d for d in weight.dims if d not in dims]  # band, time: one step of them only
    if any(weight.sizes[d] > 1 for d in extra):
        src = weight.attrs.get("source_path")
        raise ValueError(
            f"`weight` must be one 2-D grid{f' (file {src!r})' if src else ''}; it has dims "
            f"{dict(weight.sizes)}: select one band or time step."
        )
    weight = weight.isel({d: 0 for d in extra}, drop=True).transpose(*dims)
    gy, gx = spatial_dims(grid)
    same = weight.shape == (grid.sizes[gy], grid.sizes[gx]) and all(
        np.allclose(weight[a].values, grid[b].values, rtol=0, atol=1e-9)
        for a, b in zip(dims, (gy, gx), strict=True)
    )
    if same and (weight.rio.crs is None or grid.rio.crs is None or weight.rio.crs == grid.rio.crs):
        return np.asarray(weight.values, dtype=np.float64)
    from spatialmeta.raster.tiles import tile

    cells = tile(grid, 1).regions  # the grid's cells as polygons, in its flattened order
    with warnings.catch_warnings():  # data cells beyond the weight grid: NaN, said below
        warnings.simplefilter("ignore", UserWarning)
        w = zonal_weights(weight.rename("weight"), cells, id_column="region_id")
    mean = zonal_stats(weight.rename("weight").to_dataset(), w, min_coverage=1e-9)["weight"]
    return np.asarray(mean.values, dtype=np.float64).reshape(grid.sizes[gy], grid.sizes[gx])


def _times_weight(weights: ZonalWeights, grid, weight) -> tuple[ZonalWeights, np.ndarray]:
    """``weights`` times the weighting raster cell by cell, and the regions that cover a
    cell without a weight (NaN), whose weighted statistics are NaN (as exactextract's)."""
    flat = _weight_on_grid(weight, grid).ravel()
    missing = ~np.isfinite(flat)
    frac = weights.fraction.tocsr()
    nan_rows = np.asarray(frac @ missing.astype(np.float64)).ravel() > 0
    scaled = (frac @ sp.diags(np.where(missing, 0.0, flat))).tocsr()
    return replace(weights, fraction=scaled), nan_rows


def _split(lo: np.ndarray, hi: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ranges ``[lo, hi)`` into pieces of ``step``: (owner index, piece lo, piece hi)."""
    n = -(-(hi - lo) // step)
    owner = np.repeat(np.arange(len(lo)), n)
    first = np.cumsum(n) - n
    k = np.arange(n.sum()) - np.repeat(first, n)
    plo = lo[owner] + k * step
    return owner, plo, np.minimum(plo + step, hi[owner])


def _rings(geoms):
    """Vertex arrays of all polygon rings: (x, y, ring id, pair of each ring, exterior flag).

    Vertices are unclosed and contiguous per ring; ring ids are ``0..n_rings-1`` in order.
    Non-polygon parts (lines or points left by ``make_valid``) cover no area and are dropped.
    """
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, part_of = parts[poly], part_of[poly]
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    exterior = np.r_[True, ring_of[1:] != ring_of[:-1]]
    coords, vring = shapely.get_coordinates(rings, return_index=True)
    keep = np.r_[vring[1:] == vring[:-1], False]  # drop each ring's closing vertex
    return coords[keep, 0], coords[keep, 1], vring[keep], part_of[ring_of], exterior


def _clip_half(a, b, rid, bound, keep_above, track=None, axis=0):
    """Sutherland–Hodgman against the half-plane ``a >= bound`` (or ``<=``), all rings at once.

    ``a``/``b`` are the vertex coordinates across and along the clip line, ``rid`` the ring
    of each vertex (rings contiguous) and ``bound`` one value per ring id. Each edge emits
    its crossing point (placed exactly on the line) and then its end vertex if kept, so
    rings stay contiguous; rings wholly outside vanish.

    ``track`` (optional) is ``(out, on, ax)`` per vertex: the original polygon edge that
    the vertex's outgoing edge lies on (-1 along the clip outline), the original edge a
    crossing point lies on (-1 for original vertices and block corners) and the axis
    (``axis``) of the line it was placed on; it is carried to the output, so that crossing
    points can be recomputed from their original edge in local coordinates. The work is
    done by the compiled :func:`spatialmeta.raster._kernels.clip_half`.
    """
    from spatialmeta.raster._kernels import clip_half

    if track is None:
        none = np.full(len(rid), -1)
        oa, ob, orid, *_ = clip_half(
            a, b, rid, bound, keep_above, none, none, none.astype(np.int8), axis
        )
        return oa, ob, orid, None
    oa, ob, orid, *tr = clip_half(a, b, rid, bound, keep_above, *track, axis)
    return oa, ob, orid, tuple(tr)


def _piece_stats(x, y, rid, ring_pair, exterior, n_pairs, x0, y0, x1, y1, local=None):
    """Area of each pair's piece and whether all its edges lie on its block's outline.

    A piece whose edges all run along the block's outline is the whole block or nothing
    (no polygon edge enters the block); its area says which. Shoelace sums are taken
    relative to each block's corner, so they stay at the scale of the block. With
    ``local = (on, ax, X, Y, enext)`` (the clip's tracking and the original vertices),
    crossing points are recomputed from their original edge relative to the corner, as
    precise as clipping the whole polygon in the block's own coordinates. Computed by
    :func:`spatialmeta.raster._kernels.piece_stats`.
    """
    from spatialmeta.raster._kernels import piece_stats

    if local is None:
        none = np.zeros(0, dtype=np.int64)
        local = (none, none.astype(np.int8), np.zeros(0), np.zeros(0), none)
    return piece_stats(
        x, y, rid, ring_pair, exterior, n_pairs, x0, y0, x1, y1, *local
    )  # compiled: the numpy form made ~40 full-length temporaries per level


def _split_pieces(x, y, rid, ring_pair, exterior, track, lo, hi, step, cell_lo, cell_hi, axis):
    """Split each pair's block into strips of ``step`` cells along ``axis`` and clip its piece.

    ``lo``/``hi`` are the pairs' cell index ranges along the axis. Only strips that some
    ring's extent reaches are made (the others hold nothing of the polygon). Returns the
    owner pair and index range of each strip and the clipped pieces, re-indexed to strips.
    """
    a = x if axis == 0 else y
    start = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])
    length = np.diff(np.r_[start, len(rid)])
    amin, amax = np.minimum.reduceat(a, start), np.maximum.reduceat(a, start)
    plo, phi = lo[ring_pair], hi[ring_pair]
    first = np.maximum(np.searchsorted(cell_hi, amin, side="right"), plo)
    last = np.minimum(np.searchsorted(cell_lo, amax, side="left"), phi)  # exclusive
    klo = (first - plo) // step
    n = np.where(last > first, (last - 1 - plo) // step - klo + 1, 0)
    copy_of = np.repeat(np.arange(len(start)), n)
    k = klo[copy_of] + np.arange(len(copy_of)) - np.repeat(np.cumsum(n) - n, n)
    # strips that hold something, numbered pair by pair
    width = int(-(-(hi - lo).max() // step)) if len(lo) else 1
    key = ring_pair[copy_of] * width + k
    used = np.zeros(len(lo) * width, dtype=bool)
    used[key] = True
    strip_key = np.flatnonzero(used)
    strip_of = np.cumsum(used) - 1
    owner = strip_key // width
    slo = lo[owner] + (strip_key % width) * step
    shi = np.minimum(slo + step, hi[owner])
    # copy each ring's vertices once per strip it reaches, then clip to the strip
    nv = length[copy_of]
    vstart = np.cumsum(nv) - nv
    vidx = np.arange(nv.sum()) - np.repeat(vstart - start[copy_of], nv)
    new_rid = np.repeat(np.arange(len(copy_of)), nv)
    new_pair = strip_of[key]
    xs, ys, track = x[vidx], y[vidx], tuple(t[vidx] for t in track)
    a, b = (xs, ys) if axis == 0 else (ys, xs)
    blo, bhi = cell_lo[slo][new_pair], cell_hi[shi - 1][new_pair]
    a, b, new_rid, track = _clip_half(a, b, new_rid, blo, True, track, axis)
    a, b, new_rid, track = _clip_half(a, b, new_rid, bhi, False, track, axis)
    xs, ys = (a, b) if axis == 0 else (b, a)
    # renumber the surviving rings 0..n-1
    is_start = np.r_[True, new_rid[1:] != new_rid[:-1]] if len(new_rid) else np.zeros(0, bool)
    kept = new_rid[is_start]
    rid_out = np.cumsum(is_start) - 1
    return owner, slo, shi, xs, ys, rid_out, new_pair[kept], exterior[copy_of][kept], track


def _clipped_area(geoms, x0, y0, x1, y1) -> np.ndarray:
    """Area of each polygon clipped to its own rectangle ``[x0, x1] x [y0, y1]``, all at once."""
    x, y, rid, pair, exterior = _rings(geoms)
    # clip relative to each rectangle's corner, at the scale of the rectangle
    x, y = x - x0[pair[rid]], y - y0[pair[rid]]
    zero = np.zeros(len(pair))
    for axis, hi in ((0, (x1 - x0)[pair]), (1, (y1 - y0)[pair])):
        a, b = (x, y) if axis == 0 else (y, x)
        a, b, rid, _ = _clip_half(a, b, rid, zero, True)
        a, b, rid, _ = _clip_half(a, b, rid, hi, False)
        x, y = (a, b) if axis == 0 else (b, a)
    if len(rid) == 0:
        return np.zeros(len(geoms))
    is_start = np.r_[True, rid[1:] != rid[:-1]]
    kept = rid[is_start]
    rid = np.cumsum(is_start) - 1
    z = np.zeros(len(geoms))
    area, _ = _piece_stats(
        x, y, rid, pair[kept], exterior[kept], len(geoms), z, z, x1 - x0, y1 - y0
    )
    return area


def _coverage_pairs(geoms: np.ndarray, yb: np.ndarray, xb: np.ndarray, factor: int = 4):
    """Exact (polygon, cell, covered area) triples on a rectilinear grid, by quadtree descent.

    Blocks of cells are visited from coarse to fine, each (polygon, block) pair carrying
    the polygon clipped to its block as vertex arrays. Each level splits the blocks into
    ``factor`` × ``factor`` children and clips the pieces to them, rows then columns, with
    a vectorized Sutherland–Hodgman over all vertices of all pairs, so pieces shrink with
    their blocks. A child whose clipped piece has no edge inside it is wholly covered (all
    its cells contribute their full area) or not at all; the others are split further, and
    at single cells the clipped area is the coverage. The work grows with polygon
    perimeter, not area, and no geometry is built for interior cells.
    """
    ny, nx = len(yb), len(xb)
    ylo, yhi = yb.min(axis=1), yb.max(axis=1)
    xlo, xhi = xb.min(axis=1), xb.max(axis=1)
    if not (np.all(np.diff(ylo) > 0) and np.all(np.diff(xlo) > 0)):
        raise ValueError(
            "grid coordinates must be increasing; normalize the raster with open_raster()."
        )
    gx0, gy0, gx1, gy1 = shapely.bounds(geoms).T
    ok = np.isfinite(gx0)
    # each polygon's bounding range of cells
    r0 = np.searchsorted(yhi, gy0, side="right")
    r1 = np.searchsorted(ylo, gy1, side="left")
    c0 = np.searchsorted(xhi, gx0, side="right")
    c1 = np.searchsorted(xlo, gx1, side="left")
    live = ok & (r1 > r0) & (c1 > c0)
    poly = np.flatnonzero(live)
    r0, r1, c0, c1 = r0[live], r1[live], c0[live], c1[live]
    x, y, rid, ring_pair, exterior = _rings(geoms[poly])
    from spatialmeta.raster._kernels import _successors

    X, Y, enext = x, y, _successors(rid)  # the original vertices and edges
    # per vertex: original edge of its outgoing edge, original edge it lies on, line axis
    track = (np.arange(len(rid)), np.full(len(rid), -1), np.zeros(len(rid), np.int8))
    out_p, out_c, out_a = [], [], []
    cell_area = (yhi - ylo)[:, None] * (xhi - xlo)[None, :]
    step = 1
    while step < max(ny, nx):
        step *= factor
    while len(poly) and step > 1:  # one pass per level, all pairs at once
        step = max(1, step // factor)
        ow, r0, r1, x, y, rid, ring_pair, exterior, track = _split_pieces(
            x, y, rid, ring_pair, exterior, track, r0, r1, step, ylo, yhi, axis=1
        )
        poly, c0, c1 = poly[ow], c0[ow], c1[ow]
        ow, c0, c1, x, y, rid, ring_pair, exterior, track = _split_pieces(
            x, y, rid, ring_pair, exterior, track, c0, c1, step, xlo, xhi, axis=0
        )
        poly, r0, r1 = poly[ow], r0[ow], r1[ow]
        bx0, by0, bx1, by1 = xlo[c0], ylo[r0], xhi[c1 - 1], yhi[r1 - 1]
        local = (track[1], track[2], X, Y, enext) if step == 1 else None
        area, crossed = _piece_stats(
            x, y, rid, ring_pair, exterior, len(poly), bx0, by0, bx1, by1, local
        )
        inside = ~crossed & (area > 0.5 * (bx1 - bx0) * (by1 - by0))
        if inside.any():  # every cell of a covered block is fully covered
            ow, ir0, _ = _split(r0[inside], r1[inside], 1)
            ow2, jc0, _ = _split(c0[inside][ow], c1[inside][ow], 1)
            rows = ir0[ow2]
            out_p.append(poly[inside][ow][ow2])
            out_c.append(rows * nx + jc0)
            out_a.append(cell_area[rows, jc0])
        if step == 1:  # single cells on the boundary: the clipped area is the coverage
            keep = crossed & (area > 0)
            out_p.append(poly[keep])
            out_c.append(r0[keep] * nx + c0[keep])
            out_a.append(area[keep])
            break
        touch = crossed  # blocks a polygon edge runs through are split further
        renum = np.cumsum(touch) - 1
        vkeep = touch[ring_pair][rid]
        x, y, rid = x[vkeep], y[vkeep], rid[vkeep]
        track = tuple(t[vkeep] for t in track)
        rkeep = touch[ring_pair]
        is_start = np.r_[True, rid[1:] != rid[:-1]] if len(rid) else np.zeros(0, bool)
        rid = np.cumsum(is_start) - 1
        ring_pair, exterior = renum[ring_pair[rkeep]], exterior[rkeep]
        poly, r0, r1, c0, c1 = poly[touch], r0[touch], r1[touch], c0[touch], c1[touch]
    if not out_p:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return np.concatenate(out_p), np.concatenate(out_c), np.concatenate(out_a)


def _wrap_to_grid(geoms: np.ndarray, x_lo: float, x_hi: float) -> np.ndarray:
    """Give each lon/lat geometry copies shifted by ±360° so it meets the grid's longitude frame.

    Handles polygons crossing the antimeridian (coordinates beyond ±180) and grids kept in
    0–360. Copies of one polygon cannot overlap inside a grid at most 360° wide, so summed
    intersection areas stay exact.
    """
    gx0, _, gx1, _ = shapely.bounds(geoms).T
    need = (gx0 < x_lo) | (gx1 > x_hi)
    if not need.any():
        return geoms
    sub = geoms[need]
    parts = [
        sub,
        shapely.transform(sub, lambda c: c + [360.0, 0.0]),
        shapely.transform(sub, lambda c: c - [360.0, 0.0]),
    ]
    out = geoms.copy()
    out[need] = shapely.union_all(np.stack(parts, axis=1), axis=1)
    return out


def zonal_weights(
    grid: xr.Dataset | xr.DataArray,
    polygons: gpd.GeoDataFrame,
    *,
    id_column: str = "region_id",
) -> ZonalWeights:
    """Exact coverage fractions of each grid cell by each polygon, with cell areas.

    Parameters
    ----------
    grid : xarray.Dataset or DataArray
        A raster in normal form (``open_raster``): ``(lat, lon)`` or projected ``(y, x)``
        dims and a CRS; CF bounds are used when present, else inferred (Gaussian latitudes
        included).
    polygons : geopandas.GeoDataFrame
        Regions (polygons, multipolygons, holes); reprojected to the raster's CRS.
    id_column : str
        Column with unique region identifiers.

    Returns
    -------
    ZonalWeights

    Warns
    -----
    UserWarning
        Listing regions that do not overlap the raster (their rows are all NaN).

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate, synthetic_regions
    >>> ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    >>> w = zonal_weights(ds, synthetic_regions((0, 40, 4, 44), 4))
    >>> w.fraction.shape, bool(np.allclose(w.coverage, 1.0))
    ((4, 16), True)
    """
    if id_column not in polygons.columns:
        raise KeyError(
            f"polygons have no column {id_column!r} (columns: {list(polygons.columns)}); "
            "pass id_column= with the column that names each region."
        )
    ids = polygons[id_column].to_numpy()
    if len(np.unique(ids.astype(str))) != len(ids):
        dup = polygons[id_column][polygons[id_column].duplicated()].unique()[:5]
        raise ValueError(
            f"region ids in column {id_column!r} are not unique: {np.asarray(dup).tolist()}."
        )
    if polygons.crs is None:
        raise ValueError("polygons have no CRS; set one with GeoDataFrame.set_crs(...).")
    dims = spatial_dims(grid)
    crs = grid.rio.crs
    if crs is not None and not polygons.crs.equals(crs):
        polygons = polygons.to_crs(crs)
    geographic = crs is None or crs.is_geographic
    corners = curvilinear_corners(grid)
    yb, xb = grid_bounds(grid) if corners is None else (None, None)
    geoms = polygons.geometry.to_numpy()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        warnings.warn(
            f"repaired {invalid.sum()} invalid geometries with make_valid: {np.asarray(ids[invalid][:10]).tolist()}",
            stacklevel=2,
        )
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    total = shapely.area(geoms)
    if corners is not None:  # 2-D lat/lon with cell corners: cells as polygons
        fraction, area, covered = _curvilinear_coverage(geoms, *corners)
        coverage = np.divide(covered, total, out=np.zeros_like(total), where=total > 0)
        _warn_missing(ids, coverage)
        return ZonalWeights(fraction, area, ids, np.clip(coverage, 0.0, 1.0), corners[0].shape[:2],
                            dims)  # fmt: skip
    if geographic:
        geoms = _wrap_to_grid(geoms, float(xb.min()), float(xb.max()))
    shapely.prepare(geoms)
    ny, nx = len(yb), len(xb)
    poly_idx, cell_idx, inter = _coverage_pairs(geoms, yb, xb)
    planar = _planar_area(yb, xb)
    frac = inter / planar[cell_idx]
    fraction = sp.csr_matrix(
        (np.minimum(frac, 1.0), (poly_idx, cell_idx)), shape=(len(geoms), ny * nx)
    )
    area = spherical_cell_area(yb, xb).ravel() if geographic else planar
    covered = np.bincount(poly_idx, weights=inter, minlength=len(geoms))
    coverage = np.divide(covered, total, out=np.zeros_like(total), where=total > 0)
    _warn_missing(ids, coverage)
    return ZonalWeights(fraction, area, ids, np.clip(coverage, 0.0, 1.0), (ny, nx), dims)


def _warn_missing(ids, coverage) -> None:
    missing = ids[coverage == 0]
    if len(missing):
        warnings.warn(
            f"{len(missing)} region(s) do not overlap the raster and will be NaN: "
            f"{np.asarray(missing[:10]).tolist()}{' ...' if len(missing) > 10 else ''}",
            stacklevel=3,
        )


def _curvilinear_coverage(geoms, lon_c: np.ndarray, lat_c: np.ndarray):
    """Exact coverage of the cells of a curvilinear grid (quadrilaterals from their corners,
    edges straight in lon/lat as exactextract and shapely see them) by each polygon:
    ``(fraction (regions x cells), cell areas on the sphere, covered area per polygon)``.

    Each cell's corners are unwrapped around its first corner and the cell placed in
    [-180, 180); a cell reaching past ±180 gets a copy shifted by 360° so that polygons on
    either side of the antimeridian meet it. Candidate pairs come from a spatial index and
    their intersections from shapely, all pairs at once. Written here because no library
    gives exact coverage fractions for curvilinear cells (xESMF's conservative weights come
    from ESMF's great-circle cells and need ESMF installed).
    """
    ny, nx = lon_c.shape[:2]
    lon = lon_c.reshape(-1, 4).copy()
    lat = lat_c.reshape(-1, 4)
    lon = lon[:, :1] + (lon - lon[:, :1] + 180.0) % 360.0 - 180.0  # unwrap around corner 1
    lon += (lon[:, :1] + 180.0) % 360.0 - 180.0 - lon[:, :1]  # corner 1 in [-180, 180)
    area = polygon_area_on_sphere(lon, lat)
    cell_id = np.arange(ny * nx)
    east, west = lon.max(axis=1) > 180.0, lon.min(axis=1) < -180.0
    lon_all = np.concatenate([lon, lon[east] - 360.0, lon[west] + 360.0])
    lat_all = np.concatenate([lat, lat[east], lat[west]])
    owner = np.concatenate([cell_id, cell_id[east], cell_id[west]])
    cells = shapely.polygons(np.stack([lon_all, lat_all], axis=-1))
    bad = ~shapely.is_valid(cells)
    if bad.any():  # corners out of order (a fold row): the valid parts of the cell
        cells[bad] = shapely.make_valid(cells[bad])
    planar = shapely.area(cells)
    keep = planar > 0  # degenerate cells (corners repeated at a pole or fold) cover nothing
    tree = shapely.STRtree(cells[keep])
    poly_i, j = tree.query(geoms, predicate="intersects")
    cell_j = np.flatnonzero(keep)[j]
    inter = shapely.area(shapely.intersection(geoms[poly_i], cells[cell_j]))
    own_area = planar[: ny * nx]  # a copy has its cell's area
    frac = sp.coo_matrix(
        (inter / own_area[owner[cell_j]], (poly_i, owner[cell_j])), shape=(len(geoms), ny * nx)
    ).tocsr()  # duplicates (a polygon meeting both copies of a cell) are summed
    frac.data = np.minimum(frac.data, 1.0)
    frac.eliminate_zeros()
    covered = np.bincount(poly_i, weights=inter, minlength=len(geoms))
    return frac, area, covered


# ---------------------------------------------------------------------------------------
# applying the weights: one partial reduction per dask block, combined by dask


class _BlockWeights:
    """Columns of the weights for each spatial block, re-indexed to the block's flat cells.

    Built on first use, inside the first task that reads the block (so building them
    overlaps the other chunks' reads instead of delaying the graph), then shared by every
    task of that block: ``get`` is locked and memoized. A block stored north-up reaches the
    products as a row-reversed view (latitude is normalized to ascend); its weights are the
    same entries with the row of each flat cell index mirrored, so :func:`_rows` reads the
    view's memory in place. ``frac`` (coverage) and ``w`` (coverage x cell area) share one
    CSR pattern. On a cluster the object is sent to each worker once and builds its own.
    """

    def __init__(self, weights: ZonalWeights, ychunks, xchunks):
        self.fraction = weights.fraction
        self.cell_area = weights.cell_area
        self.nx = weights.shape[1]
        self.y_edges = np.cumsum((0,) + tuple(ychunks))
        self.x_edges = np.cumsum((0,) + tuple(xchunks))
        self._init_cache()

    def _init_cache(self):
        self._cache: dict = {}
        self._locks: dict = {}
        self._lock = threading.Lock()
        self._csc = None

    def __getstate__(self):
        skip = ("_cache", "_locks", "_lock", "_csc")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_cache()

    def get(self, iy: int, ix: int, flipped: bool = False) -> tuple:
        """``(frac, w, runs)`` of block ``(iy, ix)``, for its rows reversed if ``flipped``:
        coverage and coverage x area as CSR ``(regions, block cells)`` with one pattern, and
        that pattern as runs of consecutive cells (:func:`~spatialmeta.raster._kernels.runs_of`).
        """
        key = (iy, ix, flipped)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one build per block; other blocks build meanwhile
            if key not in self._cache:
                self._cache[key] = self._mirror(iy, ix) if flipped else self._natural(iy, ix)
            return self._cache[key]

    def _natural(self, iy, ix):
        if len(self.y_edges) == len(self.x_edges) == 2:
            frac, area = self.fraction.tocsr(), self.cell_area  # one block: the weights' own
        else:
            with self._lock:
                if self._csc is None:
                    self._csc = self.fraction.tocsc()
            rows = np.arange(self.y_edges[iy], self.y_edges[iy + 1])
            cols = np.arange(self.x_edges[ix], self.x_edges[ix + 1])
            flat = (rows[:, None] * self.nx + cols).ravel()
            frac, area = self._csc[:, flat].tocsr(), self.cell_area[flat]
        if not frac.has_sorted_indices:
            frac = frac.copy()
            frac.sort_indices()
        w = sp.csr_matrix((frac.data * area[frac.indices], frac.indices, frac.indptr), frac.shape)
        return frac, w, self._runs(frac, ix)

    def _runs(self, frac, ix):
        from spatialmeta.raster._kernels import runs_of

        return runs_of(frac.indptr, frac.indices, self.x_edges[ix + 1] - self.x_edges[ix])

    def _mirror(self, iy, ix):
        frac, w, _ = self.get(iy, ix)
        nyb = self.y_edges[iy + 1] - self.y_edges[iy]
        nxb = self.x_edges[ix + 1] - self.x_edges[ix]
        row, col = np.divmod(frac.indices, nxb)
        mirrored = ((nyb - 1 - row) * nxb + col).astype(frac.indices.dtype)
        frac = sp.csr_matrix((frac.data, mirrored, frac.indptr), shape=frac.shape)
        w = sp.csr_matrix((w.data, mirrored, w.indptr), shape=frac.shape)
        return frac, w, self._runs(frac, ix)


def _rows(block: np.ndarray, bw: _BlockWeights, iy: int, ix: int):
    """``(t, cells)`` rows of a block without copying it, and the weights in that cell order.

    A block that is a row-reversed view of contiguous memory is read reversed back, with the
    weights for reversed rows; anything else is made contiguous (one copy).
    """
    grid = block.reshape((-1,) + block.shape[-2:])
    flipped = grid[:, ::-1, :]
    if not grid.flags.c_contiguous and flipped.flags.c_contiguous:
        return (flipped.reshape(len(grid), -1),) + bw.get(iy, ix, flipped=True)
    return (np.ascontiguousarray(grid).reshape(len(grid), -1),) + bw.get(iy, ix)


_SLAB_BYTES = 32 * 2**20  # float64 temporaries per slab of time steps (min/max)


def _slabs(n_steps: int, n_cells: int) -> tuple[range, int]:
    """Start indices of time slabs whose float64 temporaries stay under ``_SLAB_BYTES``."""
    step = max(1, _SLAB_BYTES // (8 * max(n_cells, 1)))
    return range(0, n_steps, step), step


def _partial(block, bw, stats: tuple[str, ...], block_info=None):
    """Partial sums of one block: ``(t, 1, 1, n_regions, n_fields)``.

    The compiled kernel (:mod:`spatialmeta.raster._kernels`) streams each time step's grid
    once in the raster's dtype, without the GIL, so the products of different chunks run in
    parallel with each other and with the reads; NaN cells are masked only in the regions
    and steps that have one. Memory is the block plus the small output.
    """
    loc = block_info[0]["chunk-location"]
    x_all, frac, w, runs = _rows(block, bw, loc[-2], loc[-1])
    out = np.empty((x_all.shape[0], w.shape[0], _nfield(stats)))
    _reduce(x_all, frac, w, runs, stats, out)
    return out.reshape(block.shape[:-2] + (1, 1) + out.shape[-2:])


def _nfield(stats: tuple[str, ...]) -> int:
    """Partial sums per region: valid weight, weighted sum, and one per extra statistic."""
    return 2 + ("std" in stats) + ("sum" in stats) + ("count" in stats)


def _reduce(x, frac, w, runs, stats: tuple[str, ...], out) -> None:
    """The compiled kernel's partial sums of ``x`` ``(t, cells)`` into ``out``."""
    from spatialmeta.raster._kernels import run_fields

    run_fields(x, *runs, w.data, frac.data, "std" in stats, "sum" in stats, "count" in stats, out)


_GROUP_BYTES = 32 * 2**20  # bands read at once into the reused buffer


def _read_partial(bands: np.ndarray, source, bw, stats: tuple[str, ...], nreg: int):
    """:func:`_partial` for the time steps stored in file ``bands`` of a GeoTIFF.

    Reads about 32 MB of bands at a time into one reused buffer and reduces them, with
    GDAL's direct I/O for uncompressed files (it skips the copy through the block cache;
    GDAL ignores it for compressed ones): no fresh chunk arrays, no GDAL cache, one task
    per chunk. The weights are those of the file's row order. On 2 cores, 365 steps of
    500 x 1200 cells over the states: open + weights + means 0.45 -> 0.36-0.38 s (groups
    of 10-80 MB measured within noise of each other; 6 MB was slower).
    """
    import rasterio

    ny, nx = int(bw.y_edges[-1]), bw.nx
    n_t = len(bands)
    out = np.empty((n_t, nreg, _nfield(stats)))
    group = max(1, min(n_t, _GROUP_BYTES // (ny * nx * source.dtype.itemsize)))
    buf = np.empty((group, ny, nx), dtype=source.dtype)
    try:
        with rasterio.Env(GTIFF_DIRECT_IO=True), rasterio.open(source.path) as f:
            for s0 in range(0, n_t, group):
                n = min(group, n_t - s0)
                f.read([int(b) for b in bands[s0 : s0 + n]], out=buf[:n])
                # after the first read: the other thread reads while the first builds them
                frac, w, runs = bw.get(0, 0, flipped=source.rows_reversed)
                _reduce(buf[:n].reshape(n, -1), frac, w, runs, stats, out[s0 : s0 + n])
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot read raster '{source.path}': {exc}") from exc
    return out.reshape(n_t, 1, 1, nreg, out.shape[-1])


def _extreme(block, bw, which: str, block_info=None):
    """Per-region min or max over covered valid cells of one block: ``(t, 1, 1, n_regions)``."""
    loc = block_info[0]["chunk-location"]
    x_all, frac, _, _ = _rows(block, bw, loc[-2], loc[-1])
    lead = block.shape[:-2]
    fill = np.inf if which == "min" else -np.inf
    out = np.full((x_all.shape[0], frac.shape[0]), fill)
    has = np.diff(frac.indptr) > 0
    if has.any():
        starts_r = frac.indptr[:-1][has]
        red = np.minimum.reduceat if which == "min" else np.maximum.reduceat
        starts, step = _slabs(x_all.shape[0], frac.nnz)
        for s0 in starts:
            vals = x_all[s0 : s0 + step][:, frac.indices].astype(np.float64)  # region-major
            vals = np.where(np.isfinite(vals), vals, fill)
            out[s0 : s0 + step, has] = red(vals, starts_r, axis=1)
    return out.reshape(lead + (1, 1, frac.shape[0]))


def _quantile_block(block, bw, q: np.ndarray, interpolate: bool = False, block_info=None):
    """Weighted quantiles of each region's cells (whole grid in one block): ``(t, n_regions, nq)``.

    Inverse of the coverage-×-area weighted CDF (the smallest value whose cumulative weight
    reaches ``q``; NaN cells carry no weight), for all regions and time steps at once:
    values are sorted within each region's segment of the sparse pattern by two stable
    sorts along the segment axis, and the rank reaching ``q`` is counted per segment.

    ``interpolate``: exactextract's weighted quantile instead (R's type 7 with weights):
    over a region's ``n`` valid cells sorted by value, ``s_k = k w_k + (n - 1) W_{k-1}``
    (``W`` the running weight), and the quantile interpolates linearly between the two
    values whose ``s`` bracket ``q s_{n-1}``.
    """
    x_all, frac, w, _ = _rows(block, bw, 0, 0)
    nreg = frac.shape[0]
    out = np.full((x_all.shape[0], nreg, len(q)), np.nan)
    counts = np.diff(w.indptr)
    has = counts > 0
    if not has.any():
        return out
    seg = np.repeat(np.arange(nreg), counts)
    starts, step = _slabs(x_all.shape[0], w.nnz * 4)
    for s0 in starts:
        vals = x_all[s0 : s0 + step][:, w.indices].astype(np.float64)  # (t, nnz)
        wts = np.where(np.isfinite(vals), w.data[None, :], 0.0)
        vals = np.where(np.isfinite(vals), vals, np.inf)
        o1 = np.argsort(vals, axis=1, kind="stable")
        o2 = np.argsort(seg[o1], axis=1, kind="stable")
        order = np.take_along_axis(o1, o2, axis=1)  # region-major, ascending within region
        v = np.take_along_axis(vals, order, axis=1)
        cw = np.cumsum(np.take_along_axis(wts, order, axis=1), axis=1)
        seg_start = w.indptr[:-1][has]
        before = np.concatenate([np.zeros((len(v), 1)), cw], axis=1)[:, seg_start]  # (t, R')
        total = np.add.reduceat(np.take_along_axis(wts, order, axis=1), seg_start, axis=1)
        rel = (cw - np.repeat(before, counts[has], axis=1)) / np.repeat(
            np.where(total > 0, total, 1.0), counts[has], axis=1
        )
        if interpolate:
            _interpolated(v, np.take_along_axis(wts, order, axis=1), cw, before, total,
                          seg_start, counts[has], q, out[s0 : s0 + step], has)  # fmt: skip
            continue
        for j, qj in enumerate(q):  # a handful of quantile levels
            below = np.add.reduceat((rel < qj - 1e-12).astype(np.int64), seg_start, axis=1)
            idx = seg_start[None, :] + np.minimum(below, counts[has][None, :] - 1)
            got = np.take_along_axis(v, idx, axis=1)
            out[s0 : s0 + step, has, j] = np.where((total > 0) & np.isfinite(got), got, np.nan)
    return out


def _interpolated(v, ws, cw, before, total, seg_start, counts, q, out, has) -> None:
    """exactextract's weighted quantiles (see :func:`_quantile_block`) into ``out[:, has]``.

    ``v``/``ws``: values and weights sorted region-major (NaN cells last as ``inf`` with
    weight 0); ``cw``: their running weight over the row; ``before``/``total``: each
    segment's running weight before it and its total.
    """
    local = np.arange(v.shape[1]) - np.repeat(seg_start, counts)  # index within a region
    valid = np.isfinite(v)
    n = np.add.reduceat(valid.astype(np.int64), seg_start, axis=1)  # (t, R')
    n_rep = np.repeat(n, counts, axis=1)
    prior = cw - ws - np.repeat(before, counts, axis=1)  # weight of the region's cells below
    sk = np.where(valid, local * ws + (n_rep - 1) * prior, np.inf)
    span = (n - 1) * total  # s of the last valid cell
    last = seg_start[None, :] + np.maximum(n - 1, 0)
    for j, qj in enumerate(q):
        _one_level(v, sk, seg_start, counts, n, last, qj * span, total, out[:, :, j], has)


def _one_level(v, sk, seg_start, counts, n, last, want, total, out, has) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):  # the masked-out lanes only
        k = np.add.reduceat((sk <= np.repeat(want, counts, axis=1)).astype(np.int64),
                            seg_start, axis=1)  # fmt: skip
        right = seg_start[None, :] + np.minimum(k, np.maximum(n - 1, 0))
        left = seg_start[None, :] + np.maximum(k - 1, 0)
        vl, vr = np.take_along_axis(v, left, axis=1), np.take_along_axis(v, right, axis=1)
        sl, sr = np.take_along_axis(sk, left, axis=1), np.take_along_axis(sk, right, axis=1)
        inner = (k > 0) & (k < n)
        step = np.where(inner, sr - sl, 1.0)
        got = np.where(inner, vl + (want - sl) * (vr - vl) / step, np.nan)
        got = np.where(k >= n, np.take_along_axis(v, last, axis=1), got)
        got = np.where(k == 0, v[:, seg_start], got)
        out[:, has] = np.where((n > 0) & (total > 0), got, np.nan)


def zonal_stats(
    obj: xr.DataArray | xr.Dataset,
    weights: ZonalWeights,
    *,
    stats: tuple[str, ...] = ("mean",),
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
    min_coverage: float = 0.5,
    region_dim: str = "region",
    weight: xr.DataArray | None = None,
    coverage_weight: str = "area",
    min_coverage_frac: float = 0.0,
) -> xr.Dataset:
    """Area-weighted zonal statistics of every time step, lazily.

    Parameters
    ----------
    obj : xarray.DataArray or Dataset
        Variables with trailing spatial dims (``lat, lon`` or ``y, x``); numpy- or
        dask-backed, chunked in any way (time and space).
    weights : ZonalWeights
        From :func:`zonal_weights` on the same grid.
    stats : tuple of str
        Any of ``mean`` (area-weighted), ``std`` (area-weighted, population), ``sum``
        (values × coverage fraction, as exactextract), ``count`` (covered valid cells,
        fractional), ``min`` and ``max`` (over cells at least partly covered), and
        ``quantile`` (coverage-×-area weighted, inverse CDF; needs the whole grid of a time
        step in memory, so the raster is rechunked to whole grids for it).
        ``median`` is exactextract's (the weighted median interpolated between cell
        values), ``variance`` is ``std`` squared and ``coefficient_of_variation`` is
        ``std / mean``. ``weighted_mean``, ``weighted_sum``, ``weighted_std`` and
        ``weighted_variance`` weight each cell further by the ``weight`` raster (a
        population or cropland grid), as exactextract's: a region that covers a cell whose
        weight is NaN gets NaN for them.
    quantiles : tuple of float
        Levels for ``quantile`` (a ``quantile`` dimension in the output).
    min_coverage : float
        A region's ``mean``/``std`` at a time step is NaN when its valid (non-NaN) weight is
        below this fraction of its full weight; otherwise weights are renormalized over the
        valid cells.
    region_dim : str
        Name of the new region dimension.
    weight : xarray.DataArray, optional
        A 2-D weighting raster for the ``weighted_*`` statistics. On another grid than
        ``obj`` it is regridded conservatively to ``obj``'s grid first (each data cell gets
        the area-weighted mean of the weight cells it overlaps: weights are densities, as
        exactextract treats them).
    coverage_weight : str
        How a covered cell counts (:data:`COVERAGE_WEIGHTS`): ``"area"`` (the default):
        coverage fraction x cell area (m² on the sphere for lat/lon grids, planar for
        projected ones) for the mean, spread and quantiles, and the coverage fraction
        alone for ``sum`` and ``count``. The others are exactextract's, for every
        statistic: ``"fraction"`` (coverage fraction), ``"none"`` (every touched cell
        counts 1), ``"area_cartesian"`` (fraction x planar area in CRS units) and
        ``"area_spherical_m2"`` (fraction x area on the sphere; lat/lon grids).
    min_coverage_frac : float
        Cells a region covers by less than this fraction are left out of its statistics
        (exactextract's ``min_coverage_frac``).

    Returns
    -------
    xarray.Dataset
        One variable per input variable and statistic: ``<var>`` for ``mean`` when it is
        the only statistic, else ``<var>_<stat>``; dims ``(..., region)``.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate, synthetic_regions
    >>> ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    >>> w = zonal_weights(ds, synthetic_regions((0, 40, 4, 44), 4))
    >>> out = zonal_stats(ds[["tas"]], w, stats=("mean", "max"))
    >>> sorted(out.data_vars), dict(out.tas_mean.sizes)
    (['tas_max', 'tas_mean'], {'time': 12, 'region': 4})
    """
    unknown = [s for s in stats if s not in STATS]
    if unknown or not stats:
        raise ValueError(f"unknown statistics {unknown}; choose from {STATS}.")
    q = np.asarray(quantiles, dtype=float)
    if "quantile" in stats and (q.size == 0 or (q < 0).any() or (q > 1).any()):
        raise ValueError(f"`quantiles` must lie in [0, 1]; got {list(quantiles)}.")
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    ydim, xdim = weights.dims
    if (ds.sizes.get(ydim), ds.sizes.get(xdim)) != weights.shape:
        raise ValueError(
            f"raster grid {(ds.sizes.get(ydim), ds.sizes.get(xdim))} does not match the weights' "
            f"grid {weights.shape}; rebuild the weights with zonal_weights() on this raster."
        )
    names = [v for v, da in ds.data_vars.items() if da.dims[-2:] == (ydim, xdim)]
    if not names:
        raise ValueError(f"no variable ends with the spatial dims ({ydim}, {xdim}).")
    weighted = [s_ for s_ in stats if s_ in _WEIGHTED]
    if weighted and weight is None:
        raise ValueError(
            f"statistics {weighted} need a weighting raster; pass `weight` (for example a "
            "population grid)."
        )
    weights = coverage_weights(weights, ds, coverage_weight, min_coverage_frac)
    plain = tuple(s_ for s_ in stats if s_ not in _WEIGHTED)
    bare = tuple(stats) == ("mean",)
    if weighted:  # the weight on this grid once, whatever the number of variables
        by_weight, nan_rows = _times_weight(weights, ds, weight)
        has_weight = ~xr.DataArray(nan_rows, dims=region_dim)
        inner = tuple(dict.fromkeys(_WEIGHTED[s_] for s_ in weighted))
    out = {}
    for name in names:
        if plain:
            out.update(_stats_of(ds[name], weights, plain, min_coverage, region_dim, q, bare))
        if weighted:
            part = _stats_of(ds[name], by_weight, inner, min_coverage, region_dim, bare=False)
            for s_ in weighted:
                arr = part[f"{name}_{_WEIGHTED[s_]}"].where(has_weight)
                arr.attrs["cell_methods"] = f"area: {_WEIGHTED[s_]} (weighted)"
                out[f"{name}_{s_}"] = arr
    result = xr.Dataset(out)
    result = result.assign_coords({region_dim: weights.region_ids.astype(str)})
    result[region_dim].attrs["long_name"] = "region id"
    result.attrs["zonal_weights"] = (
        "coverage fraction x cell area (exact, spherical on lat/lon grids)"
    )
    return result


def active_client():
    """The ``dask.distributed`` client in use, or None (threaded scheduler)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _shared(block_weights: _BlockWeights):
    """The block weights as one graph input: on a distributed cluster sent to every worker
    once (scattered) instead of embedded in the graph, which is tens of MB for large grids."""
    client = active_client()
    if client is None:
        return dask.delayed(block_weights, pure=False)  # hashing the matrices cost 20 ms
    return client.scatter(block_weights, broadcast=True, hash=False)


def _stats_of(da, weights, stats, min_coverage, region_dim, q=None, bare=None) -> dict:
    requested = tuple(stats)
    spread = {"variance", "coefficient_of_variation"} & set(requested)
    # the partial sums the requested statistics are made of
    stats = tuple(dict.fromkeys(
        ("std",) * bool(spread) + tuple(s for s in requested if s not in spread)
    ))  # fmt: skip
    ydim, xdim = weights.dims
    lead_dims = da.dims[:-2]
    data = da.data if isinstance(da.data, dsa.Array) else dsa.from_array(da.values, chunks=-1)
    if data.ndim == 2:
        data = data[None]
        squeeze = True
    else:
        data = data.reshape((-1,) + data.shape[-2:]) if data.ndim > 3 else data
        squeeze = False
    ychunks, xchunks = data.chunks[-2], data.chunks[-1]
    bw = _shared(_BlockWeights(weights, ychunks, xchunks))
    nreg = weights.fraction.shape[0]
    nfield = _nfield(stats)
    source = geotiff_source(da)
    if (
        source is not None and data.ndim == 3 and len(ychunks) == len(xchunks) == 1
        and not {"min", "max", "quantile", "median"} & set(stats)
    ):  # fmt: skip
        # an unmodified band-interleaved GeoTIFF: each task reads its bands a few at a time
        # into one reused buffer with direct I/O and reduces them (see _read_partial)
        bands = dsa.from_array(source.bands, chunks=(data.chunks[0],))
        partial = dsa.map_blocks(
            _read_partial, bands, source, bw, tuple(stats), nreg,
            chunks=(data.chunks[0], (1,), (1,), (nreg,), (nfield,)), new_axis=[1, 2, 3, 4],
            dtype=np.float64, meta=np.empty((0, 0, 0, 0, 0)),
        ).sum(axis=(1, 2))  # fmt: skip
    else:
        partial = dsa.map_blocks(
            _partial, data, bw, tuple(stats),
            chunks=(data.chunks[0], (1,) * len(ychunks), (1,) * len(xchunks), (nreg,), (nfield,)),
            new_axis=[3, 4], dtype=np.float64, meta=np.empty((0, 0, 0, 0, 0)),
        ).sum(axis=(1, 2))  # fmt: skip
    full = np.asarray(weights.matrix.sum(axis=1)).ravel()
    den, num = partial[..., 0], partial[..., 1]
    low = (den <= 0) | (den < min_coverage * full)
    safe = dsa.where(den > 0, den, 1.0)
    mean = dsa.where(low, np.nan, num / safe)
    fields = {}
    k = 2
    if "mean" in stats:
        fields["mean"] = mean
    if "std" in stats:
        var = dsa.where(low, np.nan, dsa.maximum(partial[..., k] / safe - mean**2, 0.0))
        fields["std"] = dsa.sqrt(var)
        if "variance" in requested:
            fields["variance"] = var
        if "coefficient_of_variation" in requested:
            fields["coefficient_of_variation"] = fields["std"] / mean
        k += 1
    if "sum" in stats:
        fields["sum"] = dsa.where(den > 0, partial[..., k], np.nan)
        k += 1
    if "count" in stats:
        fields["count"] = partial[..., k]
        k += 1
    for which in ("min", "max"):
        if which in stats:
            ext = dsa.map_blocks(
                _extreme, data, bw, which,
                chunks=(data.chunks[0], (1,) * len(ychunks), (1,) * len(xchunks), (nreg,)),
                new_axis=[3], dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
            )  # fmt: skip
            red = ext.min(axis=(1, 2)) if which == "min" else ext.max(axis=(1, 2))
            fields[which] = dsa.where(dsa.isfinite(red), red, np.nan)
    if {"quantile", "median"} & set(stats):
        whole = data.rechunk({1: -1, 2: -1})
        bw1 = _shared(_BlockWeights(weights, whole.chunks[1], whole.chunks[2]))
        for stat, levels, interpolate in (("quantile", q, False), ("median", [0.5], True)):
            if stat in stats:
                got = dsa.map_blocks(
                    _quantile_block, whole, bw1, np.asarray(levels, float), interpolate,
                    chunks=(whole.chunks[0], (nreg,), (len(levels),)), drop_axis=[1, 2],
                    new_axis=[1, 2], dtype=np.float64, meta=np.empty((0, 0, 0)),
                )  # fmt: skip
                fields[stat] = got if stat == "quantile" else got[..., 0]
    shape_lead = tuple(da.sizes[d] for d in lead_dims)
    attrs = {k_: v for k_, v in da.attrs.items() if k_ in ("units", "standard_name", "long_name")}
    coords = {d: da[d] for d in lead_dims if d in da.coords}
    for c, v in da.coords.items():  # non-index coords on the leading dims (valid_time, ...)
        if c not in coords and set(v.dims) <= set(lead_dims) and v.dims:
            coords[c] = v
    out = {}
    only_mean = requested == ("mean",) if bare is None else bare
    for stat, arr in fields.items():
        if stat not in requested:
            continue
        extra = (len(q),) if stat == "quantile" else ()
        arr = arr[0] if squeeze else arr.reshape(shape_lead + (nreg,) + extra)
        a = dict(attrs)
        method = {"quantile": "percentile", "std": "standard_deviation"}.get(stat, stat)
        a["cell_methods"] = f"area: {method}"
        if stat in ("count", "coefficient_of_variation"):
            a["units"] = "1"
        elif stat == "variance" and "units" in a:
            a["units"] = f"({a['units']})2"
        key = da.name if only_mean else f"{da.name}_{stat}"
        dims = lead_dims + (region_dim,) + (("quantile",) if stat == "quantile" else ())
        c = dict(coords, quantile=("quantile", q)) if stat == "quantile" else coords
        out[key] = xr.DataArray(arr, dims=dims, coords=c, attrs=a)
    return out


def zonal_mean(
    da: xr.DataArray,
    weights: ZonalWeights,
    *,
    min_coverage: float = 0.5,
    region_dim: str = "region",
) -> xr.DataArray:
    """Area-weighted regional means of every time step, lazily (see :func:`zonal_stats`).

    Returns
    -------
    xarray.DataArray
        Dimensions ``(..., region)`` with the region ids as coordinate.
    """
    name = da.name if da.name is not None else "value"
    ds = zonal_stats(
        da.rename(name), weights, stats=("mean",), min_coverage=min_coverage, region_dim=region_dim
    )
    out = ds[name]
    if da.chunks is None:
        out = out.compute()
    return out
