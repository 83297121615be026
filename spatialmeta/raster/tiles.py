"""Regular tiles of a raster: as regions (polygons), as lazy windows, and as one batch array.

:func:`tile` cuts a grid in normal form (see :mod:`spatialmeta.raster.io`) into tiles of
``size`` cells in row-major order. A :class:`Tiles` holds them three ways:

* ``regions``: one polygon per tile built from the exact cell edges, so the tiles can be
  passed to :func:`spatialmeta.raster.zonal_weights` like any other regions;
* ``tiles[i]`` / ``tiles.windows()``: lazily indexed sub-arrays with a halo (clipped at the
  grid edge), for looking at or processing one tile at a time;
* ``tiles.stack(obj)``: a ``(tile, ..., wy, wx)`` array of equal-size windows padded past
  the grid edge, built with array operations (one pad, then a strided view for numpy or
  reshapes and a concatenation for dask, which stays lazy), the batch form for learning
  on tiles. :func:`untile` is its exact inverse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
import xarray as xr

from spatialmeta.raster.grid import grid_bounds

__all__ = ["Tiles", "tile", "untile", "TILE_DIM", "WINDOW_DIMS"]

TILE_DIM = "tile"
WINDOW_DIMS = ("wy", "wx")
_SPATIAL_DIMS = (("lat", "lon"), ("y", "x"))


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    vals = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(vals) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in vals
    ):
        raise TypeError(f"`{name}` must be an int or a pair of ints (ny, nx); got {value!r}.")
    if min(vals) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum} cells on both axes; got {value!r}.")
    return int(vals[0]), int(vals[1])


def _spatial_dims(obj, argname: str) -> tuple[str, str]:
    for dims in _SPATIAL_DIMS:
        if all(d in obj.dims for d in dims):
            return dims
    raise ValueError(
        f"`{argname}` has no spatial dimensions (dims: {list(obj.dims)}); expected "
        "('lat', 'lon') or ('y', 'x'); bring it to normal form with "
        "spatialmeta.raster.normalize."
    )


def _is_dask(a) -> bool:
    try:
        import dask.array as dsa
    except ImportError:  # pragma: no cover - dask is a dependency
        return False
    return isinstance(a, dsa.Array)


def _split_axis(a, axis: int, n: int, s: int, w: int):
    """Axis of length ``(n + m - 1) * s`` -> two axes ``(n, w)``: window i starts at ``i * s``.

    Window i is the blocks ``i .. i + m - 1`` of ``s`` cells side by side, cut to ``w``; the
    loop runs over the ``m = ceil(w / s)`` block offsets, never over tiles.
    """
    xp = _namespace(a)
    m = -(-w // s)
    parts = []
    for k in range(m):
        blk = a[(slice(None),) * axis + (slice(k * s, (k + n) * s),)]
        parts.append(blk.reshape(a.shape[:axis] + (n, s) + a.shape[axis + 1 :]))
    out = parts[0] if m == 1 else xp.concatenate(parts, axis=axis + 1)
    return out[(slice(None),) * (axis + 1) + (slice(0, w),)]


def _block_chunk(chunks: tuple[int, ...], s: int) -> int:
    """A chunk length that is a multiple of ``s``, near the typical chunk of ``chunks``."""
    return s * max(1, round(max(chunks) / s))


def _namespace(a):
    if _is_dask(a):
        import dask.array as dsa

        return dsa
    return np


@dataclass(frozen=True, eq=False)
class Tiles:
    """A regular tiling of a raster grid (from :func:`tile`).

    Attributes
    ----------
    regions : geopandas.GeoDataFrame
        One row per tile in row-major order: ``region_id``, ``row``, ``col`` (position in the
        tile layout), ``y0, y1, x0, x1`` (half-open core cell index ranges) and the core
        tile's polygon from the exact cell edges, in the raster's CRS.
    shape : (int, int)
        Grid shape ``(ny, nx)``.
    size : (int, int)
        Core tile size in cells; edge tiles are smaller when the grid is not a multiple.
    halo : (int, int)
        Extra cells on each side of a tile in its window.
    dims : (str, str)
        Spatial dimension names, ``("lat", "lon")`` or ``("y", "x")``.
    source : xarray.Dataset or xarray.DataArray
        The tiled object (lazy; used by :meth:`windows` and to restore the grid's
        coordinates and bounds in :func:`untile`).
    """

    regions: gpd.GeoDataFrame
    shape: tuple[int, int]
    size: tuple[int, int]
    halo: tuple[int, int]
    dims: tuple[str, str]
    source: xr.Dataset | xr.DataArray = field(repr=False)

    @property
    def layout(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return tuple(-(-n // s) for n, s in zip(self.shape, self.size, strict=True))

    @property
    def window_shape(self) -> tuple[int, int]:
        """Shape ``(wy, wx)`` of a window in :meth:`stack`: ``size + 2 * halo``."""
        return tuple(s + 2 * h for s, h in zip(self.size, self.halo, strict=True))

    def __len__(self) -> int:
        return len(self.regions)

    def _index(self, i) -> int:
        if isinstance(i, str):
            hits = np.flatnonzero(self.regions["region_id"].to_numpy() == i)
            if not len(hits):
                raise KeyError(f"no tile with region_id {i!r}.")
            return int(hits[0])
        n = len(self)
        if not isinstance(i, int | np.integer) or not -n <= i < n:
            raise IndexError(f"tile index {i!r} out of range for {n} tiles.")
        return int(i) % n

    def window_slices(self, i: int | str) -> dict[str, slice]:
        """Index slices of tile ``i``'s window with halo, clipped at the grid edge."""
        r = self.regions.iloc[self._index(i)]
        (ny, nx), (hy, hx) = self.shape, self.halo
        y, x = self.dims
        return {
            y: slice(max(0, int(r.y0) - hy), min(ny, int(r.y1) + hy)),
            x: slice(max(0, int(r.x0) - hx), min(nx, int(r.x1) + hx)),
        }

    def __getitem__(self, i: int | str):
        """Tile ``i`` (position or region id) of the source, with halo, lazily (``isel``)."""
        return self.source.isel(self.window_slices(i))

    def windows(self, obj=None) -> Iterator[xr.Dataset | xr.DataArray]:
        """Iterate over the tiles' windows with halo (clipped at the grid edge), lazily.

        Parameters
        ----------
        obj : xarray.Dataset or DataArray, optional
            Another object on the same grid; default the tiled source.
        """
        obj = self.source if obj is None else self._check_grid(obj, "obj")
        for i in range(len(self)):
            yield obj.isel(self.window_slices(i))

    def __iter__(self):
        return self.windows()

    def _check_grid(self, obj, argname: str):
        y, x = self.dims
        if y not in obj.dims or x not in obj.dims:
            raise ValueError(
                f"`{argname}` has no dims {self.dims} (dims: {list(obj.dims)}); pass an object "
                "on the tiled grid, in normal form (spatialmeta.raster.normalize)."
            )
        got = (obj.sizes[y], obj.sizes[x])
        same = all(
            d not in obj.coords
            or d not in self.source.coords
            or np.array_equal(obj[d].values, self.source[d].values)
            for d in self.dims
        )
        if got != self.shape or not same:
            raise ValueError(
                f"`{argname}` is on a different grid (shape {got}) than the tiling (shape "
                f"{self.shape}); make a new tiling with tile() on this object."
            )
        return obj

    def _window_coords(self) -> dict[str, tuple]:
        """``tile`` ids and the window cells' centres (NaN past the grid edge)."""
        coords = {TILE_DIM: (TILE_DIM, self.regions["region_id"].to_numpy())}
        pos = (self.regions["row"].to_numpy(), self.regions["col"].to_numpy())
        for d, p, s, h, w, n, wd in zip(
            self.dims,
            pos,
            self.size,
            self.halo,
            self.window_shape,
            self.shape,
            WINDOW_DIMS,
            strict=True,
        ):
            idx = p[:, None] * s - h + np.arange(w)[None, :]
            inside = (idx >= 0) & (idx < n)
            centres = np.asarray(self.source[d].values, dtype=float)
            coords[d] = ((TILE_DIM, wd), np.where(inside, centres[np.clip(idx, 0, n - 1)], np.nan))
        return coords

    def _stack_array(self, da: xr.DataArray, fill_value) -> xr.DataArray:
        y, x = self.dims
        da = da.transpose(..., y, x)
        lead = da.dims[:-2]
        (ny, nx), (sy, sx), (hy, hx), (wy, wx) = self.shape, self.size, self.halo, self.window_shape
        nty, ntx = self.layout
        a = da.data
        dtype = np.result_type(a.dtype, fill_value)  # NaN padding promotes integers to float
        if dtype != a.dtype:
            a = a.astype(dtype)
        my, mx = -(-wy // sy), -(-wx // sx)
        pad = [(0, 0)] * len(lead) + [
            (hy, (nty + my - 1) * sy - hy - ny),
            (hx, (ntx + mx - 1) * sx - hx - nx),
        ]
        if any(p != (0, 0) for p in pad):
            a = _namespace(a).pad(a, pad, mode="constant", constant_values=fill_value)
        L = len(lead)
        if _is_dask(a):
            # chunks of whole blocks of `size` cells, so that the reshapes stay chunk-local
            a = a.rechunk(
                {L: _block_chunk(a.chunks[L], sy), L + 1: _block_chunk(a.chunks[L + 1], sx)}
            )
            a = _split_axis(a, L, nty, sy, wy)  # (..., nty, wy, Px)
            a = _split_axis(a, L + 2, ntx, sx, wx)  # (..., nty, wy, ntx, wx)
            a = a.transpose((L, L + 2, *range(L), L + 1, L + 3))
            a = a.reshape((nty * ntx, *a.shape[2:]))
            # whole windows per chunk, as many tiles per chunk as dask likes
            a = a.rechunk({0: "auto", a.ndim - 2: -1, a.ndim - 1: -1})
        else:  # a strided view of all windows, copied once by the reshape
            v = np.lib.stride_tricks.sliding_window_view(a, (wy, wx), axis=(L, L + 1))
            v = v[(slice(None),) * L + (slice(0, nty * sy, sy), slice(0, ntx * sx, sx))]
            v = v.transpose((L, L + 1, *range(L), L + 2, L + 3))
            a = v.reshape((nty * ntx, *v.shape[2:]))
            if not a.flags.writeable:  # still a view of the input: give the caller its own
                a = a.copy()
        coords = {k: v for k, v in da.coords.items() if not set(v.dims) & {y, x}}
        coords.update(self._window_coords())
        return xr.DataArray(
            a,
            dims=(TILE_DIM, *lead, *WINDOW_DIMS),
            coords=coords,
            name=da.name,
            attrs=dict(da.attrs),
        )

    def stack(self, obj, *, fill_value=np.nan):
        """All tiles' windows as one array with a leading ``tile`` dimension.

        Windows have shape ``window_shape = size + 2 * halo``; cells past the grid edge
        (halo at the border, the missing part of edge tiles) hold ``fill_value``. Built with
        array operations, so dask input stays lazy whatever its chunks.

        Parameters
        ----------
        obj : xarray.DataArray or Dataset
            On the tiled grid, with dims ``(..., y, x)``. In a Dataset, variables with both
            spatial dims are stacked, variables with neither are kept as they are, and grid
            metadata (``lat_bnds``, ...) is left out (:func:`untile` restores it).
        fill_value : scalar
            Padding value; NaN promotes integer data to float (pass e.g. ``-1`` to keep it).

        Returns
        -------
        xarray.DataArray or Dataset
            Dims ``(tile, ..., wy, wx)``; coordinates ``tile`` (the region ids) and the window
            cells' centres named like the spatial dims, dims ``(tile, wy)``/``(tile, wx)``,
            NaN past the grid edge.

        Examples
        --------
        >>> from spatialmeta.data import synthetic_climate
        >>> ds = synthetic_climate(bbox=(0, 40, 5, 43), resolution=1, years=1)
        >>> t = tile(ds, 2, halo=1)
        >>> t.stack(ds.tas).sizes
        Frozen({'tile': 6, 'time': 12, 'wy': 4, 'wx': 4})
        """
        obj = self._check_grid(obj, "obj")
        if isinstance(obj, xr.DataArray):
            return self._stack_array(obj, fill_value)
        out, y, x = {}, *self.dims
        for name, v in obj.data_vars.items():
            spatial = set(v.dims) & {y, x}
            if spatial == {y, x}:
                out[name] = self._stack_array(v, fill_value)
            elif not spatial:
                out[name] = v.drop_vars([k for k, c in v.coords.items() if set(c.dims) & {y, x}])
        if not any(TILE_DIM in v.dims for v in out.values()):
            raise ValueError(
                f"`obj` has no data variable with both dims {self.dims} to stack "
                f"(variables: {list(obj.data_vars)})."
            )
        coords = {k: v for k, v in obj.coords.items() if not set(v.dims) & {y, x}}
        return xr.Dataset(out, coords=coords, attrs=dict(obj.attrs))


def tile(obj, size, *, halo=0, id_prefix: str = "T") -> Tiles:
    """Cut a raster grid into regular tiles of ``size`` cells, in row-major order.

    Tile ``(row, col)`` covers cells ``[row * size_y, (row + 1) * size_y)`` along the first
    spatial dim and likewise along the second; row 0 starts at the first grid row (the
    southernmost in normal form). When the grid is not a multiple of ``size``, the last row/column of tiles
    is smaller: edge tiles are kept, so the tiles cover every cell exactly once.

    Parameters
    ----------
    obj : xarray.Dataset or DataArray
        A raster in normal form: dims ``(..., lat, lon)`` or ``(..., y, x)``, coordinates
        ascending, CRS attached with rioxarray. Cell edges come from CF bounds
        (``lat_bnds``/``lon_bnds``, Datasets only) when present, else inferred from the
        centres as :func:`spatialmeta.raster.grid_bounds` does for zonal weights
        (Gaussian latitudes included). Only coordinates and bounds are
        read; the data stays lazy.
    size : int or (int, int)
        Core tile size in cells, ``(ny, nx)`` or one int for both.
    halo : int or (int, int)
        Cells of context added on each side of a tile in its window (:meth:`Tiles.stack`,
        ``tiles[i]``); not part of the region polygons.
    id_prefix : str
        Prefix of the region ids (``"T0000"``, ``"T0001"``, ...).

    Returns
    -------
    Tiles

    Raises
    ------
    ValueError
        ``size < 1``, ``halo < 0``, ``size`` larger than the grid, no spatial dims, or a
        descending (not normalized) coordinate; the message names the argument and the fix.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate
    >>> ds = synthetic_climate(bbox=(0, 40, 5, 43), resolution=1, years=1)
    >>> t = tile(ds, 2, halo=1)
    >>> t.shape, t.layout, len(t)
    ((3, 5), (2, 3), 6)
    >>> t.regions.region_id.iloc[-1], t.regions[["y0", "y1", "x0", "x1"]].to_numpy()[-1].tolist()
    ('T0005', [2, 3, 4, 5])
    >>> t.regions.geometry.iloc[-1].bounds
    (4.0, 42.0, 5.0, 43.0)
    >>> t[4].tas.sizes  # tile (1, 1) with its halo, clipped at the top edge
    Frozen({'time': 12, 'lat': 2, 'lon': 4})
    """
    import rioxarray  # noqa: F401  (registers .rio)

    size_yx = _pair(size, "size", 1)
    halo_yx = _pair(halo, "halo", 0)
    dims = _spatial_dims(obj, "obj")
    shape = (obj.sizes[dims[0]], obj.sizes[dims[1]])
    if size_yx[0] > shape[0] or size_yx[1] > shape[1]:
        raise ValueError(
            f"`size` {size_yx} is larger than the grid {shape} along {dims}; use a size of at "
            f"most {shape}."
        )
    for d in dims:
        if d not in obj.coords:
            raise ValueError(f"`obj` has no coordinate values on dim {d!r}; assign them first.")
        c = obj[d].values
        if c.size > 1 and not bool(np.all(np.diff(c) > 0)):
            raise ValueError(
                f"`obj` coordinate {d!r} is not ascending (first {c[0]}, last {c[-1]}); tiles "
                "need normal form: use spatialmeta.raster.normalize (sorts latitude ascending)."
            )
    (ny, nx), (sy, sx) = shape, size_yx
    nty, ntx = -(-ny // sy), -(-nx // sx)
    row, col = np.divmod(np.arange(nty * ntx), ntx)
    y0, x0 = row * sy, col * sx
    y1, x1 = np.minimum(y0 + sy, ny), np.minimum(x0 + sx, nx)
    # the same cell edges zonal_weights uses (CF bounds, else inferred, Gaussian included),
    # so a tile polygon covers exactly its cells; rows sorted to (low, high)
    yb, xb = (np.sort(b, axis=1) for b in grid_bounds(obj))
    geometry = shapely.box(xb[x0, 0], yb[y0, 0], xb[x1 - 1, 1], yb[y1 - 1, 1])
    width = max(4, len(str(nty * ntx - 1)))
    regions = gpd.GeoDataFrame(
        {
            "region_id": [f"{id_prefix}{k:0{width}d}" for k in range(nty * ntx)],
            "row": row,
            "col": col,
            "y0": y0,
            "y1": y1,
            "x0": x0,
            "x1": x1,
        },
        geometry=geometry,
        crs=obj.rio.crs,
    )
    return Tiles(regions, shape, size_yx, halo_yx, dims, obj)


def _untile_array(pieces: xr.DataArray, tiles: Tiles) -> xr.DataArray:
    y, x = tiles.dims
    missing = [d for d in (TILE_DIM, *WINDOW_DIMS) if d not in pieces.dims]
    if missing:
        what = "`pieces`" if pieces.name is None else f"`pieces` variable {pieces.name!r}"
        raise ValueError(
            f"{what} lacks dims {missing} (dims: {list(pieces.dims)}); pass the "
            "(tile, ..., wy, wx) array from Tiles.stack()."
        )
    pieces = pieces.transpose(TILE_DIM, ..., *WINDOW_DIMS)
    n, win = pieces.sizes[TILE_DIM], pieces.shape[-2:]
    if n != len(tiles):
        raise ValueError(
            f"`pieces` has {n} tiles along {TILE_DIM!r} but `tiles` has {len(tiles)}; pass the "
            "array that Tiles.stack() made for this tiling."
        )
    if win == tiles.window_shape:
        (oy, ox) = tiles.halo
    elif win == tiles.size:  # cores only (e.g. a model that predicts no halo)
        oy = ox = 0
    else:
        raise ValueError(
            f"`pieces` windows have shape {win} but `tiles` makes windows of {tiles.window_shape}"
            f" (size {tiles.size} + 2 * halo {tiles.halo}); pass the array from Tiles.stack() "
            "for this tiling, or cores of shape size."
        )
    if TILE_DIM in pieces.coords and not np.array_equal(
        pieces[TILE_DIM].values, tiles.regions["region_id"].to_numpy()
    ):
        raise ValueError(
            f"`pieces` {TILE_DIM!r} coordinate does not list this tiling's region ids in order; "
            "pass the array from Tiles.stack() unreordered."
        )
    lead = pieces.dims[1:-2]
    L = len(lead)
    (ny, nx), (sy, sx), (nty, ntx) = tiles.shape, tiles.size, tiles.layout
    a = pieces.data[..., oy : oy + sy, ox : ox + sx]
    a = a.reshape((nty, ntx, *a.shape[1:]))
    a = a.transpose((*range(2, L + 2), 0, L + 2, 1, L + 3))
    a = a.reshape((*a.shape[:L], nty * sy, ntx * sx))[..., :ny, :nx]
    drop = {TILE_DIM, *WINDOW_DIMS}
    coords = {k: v for k, v in pieces.coords.items() if not set(v.dims) & drop}
    grid = _grid_template(tiles)
    coords.update({k: v for k, v in grid.coords.items() if set(v.dims) <= {*lead, y, x}})
    return xr.DataArray(
        a, dims=(*lead, y, x), coords=coords, name=pieces.name, attrs=dict(pieces.attrs)
    )


def _grid_template(tiles: Tiles) -> xr.Dataset:
    """The source's coordinates and grid metadata (bounds) that :meth:`Tiles.stack` drops."""
    src = tiles.source
    src = src.coords.to_dataset() if isinstance(src, xr.DataArray) else src
    y, x = tiles.dims
    keep = [
        k
        for k, v in src.variables.items()
        if set(v.dims) & {y, x} and not (k in src.data_vars and {y, x} <= set(v.dims))
    ]
    return src[keep]


def untile(pieces, tiles: Tiles):
    """Stitch tile windows back into the full grid: the exact inverse of :meth:`Tiles.stack`.

    Each window's halo is dropped and the cores are put back in place with array operations
    (no per-tile loop), so dask input stays lazy. The grid's coordinates (and, for a
    Dataset, its bounds variables) come from the tiling; other coordinates and attributes
    from ``pieces``. ``untile(tiles.stack(da), tiles)`` is identical to ``da`` (with dims
    ordered ``(..., y, x)``).

    Parameters
    ----------
    pieces : xarray.DataArray or Dataset
        Dims ``(tile, ..., wy, wx)`` with windows of ``tiles.window_shape`` (with halo) or
        ``tiles.size`` (cores only), tiles in the tiling's order.
    tiles : Tiles
        The tiling that made ``pieces``.

    Returns
    -------
    xarray.DataArray or Dataset
        Dims ``(..., lat, lon)`` (or ``y``, ``x``) on the original grid.

    Raises
    ------
    ValueError
        When ``pieces`` lacks the ``tile``/``wy``/``wx`` dims, or its tile count, window
        shape or ``tile`` coordinate does not match ``tiles``.

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate
    >>> ds = synthetic_climate(bbox=(0, 40, 5, 43), resolution=1, years=1)
    >>> t = tile(ds, 2, halo=1)
    >>> untile(t.stack(ds.tas), t).identical(ds.tas)
    True
    """
    if isinstance(pieces, xr.DataArray):
        return _untile_array(pieces, tiles)
    drop = {TILE_DIM, *WINDOW_DIMS}
    out = {}
    for name, v in pieces.data_vars.items():
        if set(v.dims) & drop:
            out[name] = _untile_array(v, tiles)
        else:
            out[name] = v.drop_vars([k for k, c in v.coords.items() if set(c.dims) & drop])
    coords = {k: v for k, v in pieces.coords.items() if not set(v.dims) & drop}
    grid = _grid_template(tiles)
    res = xr.Dataset(out, coords=coords, attrs=dict(pieces.attrs))
    res = res.assign_coords({k: v for k, v in grid.coords.items()})
    return res.assign({k: v for k, v in grid.data_vars.items() if k not in res.variables})
