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

import warnings
from dataclasses import dataclass

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
    grid_bounds,
    spatial_dims,
    spherical_cell_area,
)

__all__ = [
    "ZonalWeights",
    "zonal_weights",
    "zonal_mean",
    "zonal_stats",
    "cell_bounds",
    "spherical_cell_area",
    "EARTH_RADIUS_M",
    "STATS",
]

STATS = ("mean", "sum", "min", "max", "std", "count", "quantile")


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
    """

    fraction: sp.csr_matrix
    cell_area: np.ndarray
    region_ids: np.ndarray
    coverage: np.ndarray
    shape: tuple[int, int]
    dims: tuple[str, str] = ("lat", "lon")

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
        )


def _boxes(yb: np.ndarray, xb: np.ndarray, r0, r1, c0, c1) -> np.ndarray:
    """Boxes covering cell index ranges ``[r0, r1) x [c0, c1)`` (arrays), from cell bounds."""
    ylo, yhi = yb.min(axis=1), yb.max(axis=1)
    xlo, xhi = xb.min(axis=1), xb.max(axis=1)
    return shapely.box(xlo[c0], ylo[r0], xhi[c1 - 1], yhi[r1 - 1])


def _split(lo: np.ndarray, hi: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ranges ``[lo, hi)`` into pieces of ``step``: (owner index, piece lo, piece hi)."""
    n = -(-(hi - lo) // step)
    owner = np.repeat(np.arange(len(lo)), n)
    first = np.cumsum(n) - n
    k = np.arange(n.sum()) - np.repeat(first, n)
    plo = lo[owner] + k * step
    return owner, plo, np.minimum(plo + step, hi[owner])


def _clip_half(xy, rid, axis, bound, keep_above):
    """Sutherland–Hodgman against one axis-aligned half-plane, for all rings at once.

    ``xy``/``rid`` are the vertices (unclosed) and ring ids of all rings, rings contiguous.
    """
    n = len(rid)
    if n == 0:
        return xy, rid
    idx = np.arange(n)
    is_start = np.r_[True, rid[1:] != rid[:-1]]
    is_end = np.r_[rid[1:] != rid[:-1], True]
    start_idx = np.maximum.accumulate(np.where(is_start, idx, 0))
    nxt = np.where(is_end, start_idx, idx + 1)
    a = xy[:, axis]
    inside = a >= bound if keep_above else a <= bound
    cur_in, nxt_in = inside, inside[nxt]
    cross = cur_in != nxt_in
    count = cross.astype(np.int64) + nxt_in
    edge = np.repeat(idx, count)
    pos = np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count)
    take_cross = cross[edge] & (pos == 0)
    p, q = xy[edge], xy[nxt[edge]]
    with np.errstate(invalid="ignore", divide="ignore"):  # parallel edges never cross
        t = (bound[edge] - p[:, axis]) / (q[:, axis] - p[:, axis])
        inter = p + t[:, None] * (q - p)
    out = np.where(take_cross[:, None], inter, q)
    return out, rid[edge]


def _clipped_area(geoms, x0, y0, x1, y1) -> np.ndarray:
    """Area of each polygon clipped to its own rectangle, all pairs at once.

    Sutherland–Hodgman clipping of every ring against the rectangle's four half-planes as
    numpy operations over all vertices of all pairs (one shapely call per pair costs
    ~20 µs of overhead, which dominated the weights of large grids). The clipped area of a
    polygon is its clipped exterior minus its clipped holes; degenerate edges that the
    clip may leave along the rectangle add no area.
    """
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, part_of = parts[poly], part_of[poly]
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    exterior = np.r_[True, ring_of[1:] != ring_of[:-1]]
    pair = part_of[ring_of]
    coords, vring = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[vring[1:] != vring[:-1], True]
    xy, rid = coords[~closing], vring[~closing]
    # work relative to each rectangle's corner: the shoelace sums then stay at the scale
    # of the cell, not of the coordinates (degrees or metres from the origin)
    origin = np.column_stack([x0, y0])[pair[rid]]
    xy = xy - origin
    w, h = (x1 - x0), (y1 - y0)
    zero = np.zeros(len(geoms))
    for axis, bounds, above in ((0, zero, True), (0, w, False), (1, zero, True), (1, h, False)):
        xy, rid = _clip_half(xy, rid, axis, bounds[pair[rid]], above)
    n = len(rid)
    if n == 0:
        return np.zeros(len(geoms))
    idx = np.arange(n)
    is_start = np.r_[True, rid[1:] != rid[:-1]]
    is_end = np.r_[rid[1:] != rid[:-1], True]
    nxt = np.where(is_end, np.maximum.accumulate(np.where(is_start, idx, 0)), idx + 1)
    cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    ring_area = np.abs(np.bincount(rid, weights=cross, minlength=len(rings))) / 2
    signed = np.where(exterior, ring_area, -ring_area)
    return np.bincount(pair, weights=signed, minlength=len(geoms))


def _coverage_pairs(geoms: np.ndarray, yb: np.ndarray, xb: np.ndarray):
    """Exact (polygon, cell, covered area) triples on a rectilinear grid, by quadtree descent.

    Blocks of cells are tested against each polygon from coarse to fine: blocks wholly
    inside a polygon contribute all their cells at full coverage, blocks outside are
    dropped, and only blocks on a polygon's boundary are split further; at single cells
    the boundary cells are clipped exactly. The work grows with polygon perimeter, not
    area, and no geometry is built for interior cells.
    """
    ny, nx = len(yb), len(xb)
    ylo, yhi = yb.min(axis=1), yb.max(axis=1)
    xlo, xhi = xb.min(axis=1), xb.max(axis=1)
    y_sorted = np.all(np.diff(ylo) > 0)
    x_sorted = np.all(np.diff(xlo) > 0)
    if not (y_sorted and x_sorted):
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
    piece = geoms[poly]  # each pair carries the polygon clipped to its block's parent
    out_p, out_c, out_a = [], [], []
    cell_area = (yhi - ylo)[:, None] * (xhi - xlo)[None, :]
    step = 1 << int(np.ceil(np.log2(max(ny, nx, 1))))
    while len(poly) and step > 1:  # one pass per quadtree level, all pairs at once
        step = max(1, step // 4)
        ow, rr0, rr1 = _split(r0, r1, step)
        poly, piece, c0, c1 = poly[ow], piece[ow], c0[ow], c1[ow]
        ow, cc0, cc1 = _split(c0, c1, step)
        poly, piece, r0, r1, c0, c1 = poly[ow], piece[ow], rr0[ow], rr1[ow], cc0, cc1
        boxes = _boxes(yb, xb, r0, r1, c0, c1)
        # classify against the whole (prepared) polygon: a clipped piece has artificial
        # edges along its block that would make interior cells look like boundary cells
        # single-threaded on purpose: GEOS prepared geometries are not safe to use from
        # several threads at once (a threaded version crashed with heap corruption)
        inside = shapely.contains_properly(geoms[poly], boxes)
        touch = ~inside & shapely.intersects(geoms[poly], boxes)
        if inside.any():  # every cell of an interior block is fully covered
            ow, ir0, _ = _split(r0[inside], r1[inside], 1)
            ow2, jc0, _ = _split(c0[inside][ow], c1[inside][ow], 1)
            rows = ir0[ow2]
            out_p.append(poly[inside][ow][ow2])
            out_c.append(rows * nx + jc0)
            out_a.append(cell_area[rows, jc0])
        poly, r0, r1, c0, c1 = poly[touch], r0[touch], r1[touch], c0[touch], c1[touch]
        piece, boxes = piece[touch], boxes[touch]
        # clipping costs a fixed overhead per call plus the piece's vertex count: clip to
        # the block only while pieces are still large
        if step > 1 and shapely.get_num_coordinates(piece).mean() > 48:
            piece = shapely.intersection(piece, boxes)
        if step == 1:  # single boundary cells: the clipped piece's area is the coverage
            area = _clipped_area(piece, xlo[c0], ylo[r0], xhi[c0], yhi[r0])
            keep = area > 0
            out_p.append(poly[keep])
            out_c.append(r0[keep] * nx + c0[keep])
            out_a.append(area[keep])
            break
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
        raise ValueError(f"region ids in column {id_column!r} are not unique: {list(dup)}.")
    if polygons.crs is None:
        raise ValueError("polygons have no CRS; set one with GeoDataFrame.set_crs(...).")
    dims = spatial_dims(grid)
    crs = grid.rio.crs
    if crs is not None and not polygons.crs.equals(crs):
        polygons = polygons.to_crs(crs)
    geographic = crs is None or crs.is_geographic
    yb, xb = grid_bounds(grid)
    ny, nx = len(yb), len(xb)
    geoms = polygons.geometry.to_numpy()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        warnings.warn(
            f"repaired {invalid.sum()} invalid geometries with make_valid: {list(ids[invalid][:10])}",
            stacklevel=2,
        )
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    total = shapely.area(geoms)
    if geographic:
        geoms = _wrap_to_grid(geoms, float(xb.min()), float(xb.max()))
    shapely.prepare(geoms)
    poly_idx, cell_idx, inter = _coverage_pairs(geoms, yb, xb)
    planar = (
        (yb.max(axis=1) - yb.min(axis=1))[:, None] * (xb.max(axis=1) - xb.min(axis=1))[None, :]
    ).ravel()
    frac = inter / planar[cell_idx]
    fraction = sp.csr_matrix(
        (np.minimum(frac, 1.0), (poly_idx, cell_idx)), shape=(len(geoms), ny * nx)
    )
    area = spherical_cell_area(yb, xb).ravel() if geographic else planar
    covered = np.bincount(poly_idx, weights=inter, minlength=len(geoms))
    coverage = np.divide(covered, total, out=np.zeros_like(total), where=total > 0)
    missing = ids[coverage == 0]
    if len(missing):
        warnings.warn(
            f"{len(missing)} region(s) do not overlap the raster and will be NaN: "
            f"{list(missing[:10])}{' ...' if len(missing) > 10 else ''}",
            stacklevel=2,
        )
    return ZonalWeights(fraction, area, ids, np.clip(coverage, 0.0, 1.0), (ny, nx), dims)


# ---------------------------------------------------------------------------------------
# applying the weights: one partial reduction per dask block, combined by dask


def _block_weights(weights: ZonalWeights, ychunks, xchunks) -> dict:
    """Columns of the weights for each spatial block, re-indexed to the block's flat cells.

    Each entry also holds the weights for the block with its rows reversed: rasters stored
    north-up reach the products as row-reversed views (latitude is normalized to ascend),
    and indexing the weights that way lets :func:`_rows` read them without a copy.
    """
    ny, nx = weights.shape
    f = weights.fraction.tocsc()
    area = weights.cell_area
    out = {}
    y_edges = np.cumsum((0,) + tuple(ychunks))
    x_edges = np.cumsum((0,) + tuple(xchunks))
    for iy in range(len(ychunks)):  # one entry per spatial block (a handful), not per cell
        rows = np.arange(y_edges[iy], y_edges[iy + 1])
        for ix in range(len(xchunks)):
            cols = np.arange(x_edges[ix], x_edges[ix + 1])
            pair = []
            for r in (rows, rows[::-1]):
                flat = (r[:, None] * nx + cols[None, :]).ravel()
                sub = f[:, flat].tocsr()
                pair += [sub, (sub @ sp.diags(area[flat])).tocsr()]
            out[(iy, ix)] = tuple(pair)
    return out


def _rows(block: np.ndarray, entry: tuple):
    """``(t, cells)`` rows of a block without copying it, and the weights in that cell order.

    A block that is a row-reversed view of contiguous memory is read reversed back, with the
    weights for reversed rows; anything else is made contiguous (one copy).
    """
    grid = block.reshape((-1,) + block.shape[-2:])
    flipped = grid[:, ::-1, :]
    if not grid.flags.c_contiguous and flipped.flags.c_contiguous:
        return flipped.reshape(len(grid), -1), entry[2], entry[3]
    return np.ascontiguousarray(grid).reshape(len(grid), -1), entry[0], entry[1]


_SLAB_BYTES = 32 * 2**20  # float64 temporaries per slab of time steps (min/max)


def _slabs(n_steps: int, n_cells: int) -> tuple[range, int]:
    """Start indices of time slabs whose float64 temporaries stay under ``_SLAB_BYTES``."""
    step = max(1, _SLAB_BYTES // (8 * max(n_cells, 1)))
    return range(0, n_steps, step), step


def _partial(block, bw, stats: tuple[str, ...], block_info=None):
    """Partial sums of one block: ``(t, 1, 1, n_regions, n_fields)``.

    One sparse matrix-vector product per time step and field. Each step's grid is a
    contiguous row of the block, which scipy's matvec streams once; its multi-vector
    product would first copy the block transposed to float64 (the columns of
    ``w @ block.T``), which cost 2.5x the products themselves. Temporaries are one grid of
    float64 per field, so memory stays bounded by the block.
    """
    loc = block_info[0]["chunk-location"]
    x_all, frac, w = _rows(block, bw[(loc[-2], loc[-1])])
    lead = block.shape[:-2]
    nfield = 2 + ("std" in stats) + ("sum" in stats) + ("count" in stats)
    out = np.empty((x_all.shape[0], w.shape[0], nfield))
    den_full = np.asarray(w.sum(axis=1)).ravel()
    for o, x in zip(out, x_all, strict=True):  # time steps, each a whole grid at once
        valid = np.isfinite(x)
        all_valid = bool(valid.all())
        xz = x if all_valid else np.where(valid, x, 0.0)
        o[:, 0] = den_full if all_valid else w @ valid.astype(np.float64)
        o[:, 1] = w @ xz  # scipy accumulates float32 values in the float64 weights
        k = 2
        if "std" in stats:
            x64 = xz.astype(np.float64)  # squares in float32 lose the variance to cancellation
            o[:, k] = w @ (x64 * x64)
            k += 1
        if "sum" in stats:
            o[:, k] = frac @ xz
            k += 1
        if "count" in stats:
            o[:, k] = frac @ valid.astype(np.float64)
    return out.reshape(lead + (1, 1) + out.shape[-2:])


def _extreme(block, bw, which: str, block_info=None):
    """Per-region min or max over covered valid cells of one block: ``(t, 1, 1, n_regions)``."""
    loc = block_info[0]["chunk-location"]
    x_all, frac, _ = _rows(block, bw[(loc[-2], loc[-1])])
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


def _quantile_block(block, bw, q: np.ndarray, block_info=None):
    """Weighted quantiles of each region's cells (whole grid in one block): ``(t, n_regions, nq)``.

    Inverse of the coverage-×-area weighted CDF (the smallest value whose cumulative weight
    reaches ``q``; NaN cells carry no weight), for all regions and time steps at once:
    values are sorted within each region's segment of the sparse pattern by two stable
    sorts along the segment axis, and the rank reaching ``q`` is counted per segment.
    """
    x_all, frac, w = _rows(block, bw[(0, 0)])
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
        for j, qj in enumerate(q):  # a handful of quantile levels
            below = np.add.reduceat((rel < qj - 1e-12).astype(np.int64), seg_start, axis=1)
            idx = seg_start[None, :] + np.minimum(below, counts[has][None, :] - 1)
            got = np.take_along_axis(v, idx, axis=1)
            out[s0 : s0 + step, has, j] = np.where((total > 0) & np.isfinite(got), got, np.nan)
    return out


def zonal_stats(
    obj: xr.DataArray | xr.Dataset,
    weights: ZonalWeights,
    *,
    stats: tuple[str, ...] = ("mean",),
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
    min_coverage: float = 0.5,
    region_dim: str = "region",
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
    quantiles : tuple of float
        Levels for ``quantile`` (a ``quantile`` dimension in the output).
    min_coverage : float
        A region's ``mean``/``std`` at a time step is NaN when its valid (non-NaN) weight is
        below this fraction of its full weight; otherwise weights are renormalized over the
        valid cells.
    region_dim : str
        Name of the new region dimension.

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
    out = {}
    for name in names:
        out.update(_stats_of(ds[name], weights, stats, min_coverage, region_dim, q))
    result = xr.Dataset(out)
    result = result.assign_coords({region_dim: weights.region_ids.astype(str)})
    result[region_dim].attrs["long_name"] = "region id"
    result.attrs["zonal_weights"] = (
        "coverage fraction x cell area (exact, spherical on lat/lon grids)"
    )
    return result


def _stats_of(da, weights, stats, min_coverage, region_dim, q=None) -> dict:
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
    bw = dask.delayed(_block_weights(weights, ychunks, xchunks), pure=True)
    nreg = weights.fraction.shape[0]
    nfield = 2 + ("std" in stats) + ("sum" in stats) + ("count" in stats)
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
        var = partial[..., k] / safe - mean**2
        fields["std"] = dsa.where(low, np.nan, dsa.sqrt(dsa.maximum(var, 0.0)))
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
    if "quantile" in stats:
        whole = data.rechunk({1: -1, 2: -1})
        bw1 = dask.delayed(_block_weights(weights, whole.chunks[1], whole.chunks[2]), pure=True)
        fields["quantile"] = dsa.map_blocks(
            _quantile_block, whole, bw1, q, chunks=(whole.chunks[0], (nreg,), (len(q),)),
            drop_axis=[1, 2], new_axis=[1, 2], dtype=np.float64, meta=np.empty((0, 0, 0)),
        )  # fmt: skip
    shape_lead = tuple(da.sizes[d] for d in lead_dims)
    attrs = {k_: v for k_, v in da.attrs.items() if k_ in ("units", "standard_name", "long_name")}
    coords = {d: da[d] for d in lead_dims if d in da.coords}
    for c, v in da.coords.items():  # non-index coords on the leading dims (valid_time, ...)
        if c not in coords and set(v.dims) <= set(lead_dims) and v.dims:
            coords[c] = v
    out = {}
    only_mean = tuple(stats) == ("mean",)
    for stat, arr in fields.items():
        extra = (len(q),) if stat == "quantile" else ()
        arr = arr[0] if squeeze else arr.reshape(shape_lead + (nreg,) + extra)
        a = dict(attrs)
        a["cell_methods"] = (
            "area: count"
            if stat == "count"
            else f"area: {'percentile' if stat == 'quantile' else stat}"
        )
        if stat == "count":
            a["units"] = "1"
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
