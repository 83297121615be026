"""Grid geometry: cell bounds (regular, irregular and Gaussian latitudes) and cell areas."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = [
    "EARTH_RADIUS_M",
    "cell_bounds",
    "gaussian_latitude_bounds",
    "spherical_cell_area",
    "grid_bounds",
    "with_bounds",
    "spatial_dims",
    "curvilinear_corners",
    "polygon_area_on_sphere",
]

EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG); exactextract 0.3 uses WGS 84's 6378137 m


def spatial_dims(obj: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    """Names of the (y, x) dimensions of a raster in normal form: (lat, lon) or (y, x)."""
    for y, x in (("lat", "lon"), ("y", "x")):
        if y in obj.dims and x in obj.dims:
            return y, x
    raise ValueError(
        f"no spatial dimensions (lat, lon) or (y, x) in {list(obj.dims)}; open the raster with "
        "spatialmeta.raster.open_raster or pass it through spatialmeta.raster.normalize."
    )


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """Cell edges from centres (midpoints; half a step beyond the ends), shape ``(n, 2)``.

    Works for irregular spacing. For latitudes, see :func:`gaussian_latitude_bounds`.

    Examples
    --------
    >>> cell_bounds(np.array([0.5, 1.5, 3.0]))
    array([[0.  , 1.  ],
           [1.  , 2.25],
           [2.25, 3.75]])
    """
    c = np.asarray(centres, dtype=float)
    if c.size < 2:
        raise ValueError("cannot infer cell bounds from a single coordinate value; add CF bounds.")
    mid = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def gaussian_latitude_bounds(lat: np.ndarray, *, atol: float = 1e-4) -> np.ndarray | None:
    """Cell edges of a global Gaussian grid, or None when ``lat`` is not one.

    Gaussian-grid cells are bounded so that each cell's share of the sphere equals its
    Gauss–Legendre quadrature weight: ``sin(edge)`` is the running sum of the weights.
    The midpoint rule is off by up to 0.1° near the poles and a few thousandths of a degree
    at mid-latitudes on a T42 grid.

    Parameters
    ----------
    lat : array
        Ascending latitudes in degrees.
    atol : float
        Tolerance (degrees) for matching the Gauss–Legendre nodes (files store float32).

    Examples
    --------
    >>> x, _ = np.polynomial.legendre.leggauss(8)
    >>> b = gaussian_latitude_bounds(np.rad2deg(np.arcsin(x)))
    >>> float(b[0, 0]), float(b[-1, 1])
    (-90.0, 90.0)
    """
    lat = np.asarray(lat, dtype=float)
    n = lat.size
    if n < 2 or lat[0] > -60 or lat[-1] < 60:
        return None
    nodes, weights = np.polynomial.legendre.leggauss(n)
    if not np.allclose(np.rad2deg(np.arcsin(nodes)), lat, atol=atol, rtol=0):
        return None
    sin_edges = np.clip(-1.0 + np.concatenate([[0.0], np.cumsum(weights)]), -1.0, 1.0)
    edges = np.rad2deg(np.arcsin(sin_edges))
    edges[0], edges[-1] = -90.0, 90.0
    return np.stack([edges[:-1], edges[1:]], axis=1)


def spherical_cell_area(lat_bounds: np.ndarray, lon_bounds: np.ndarray) -> np.ndarray:
    """Area of lat/lon cells on a sphere of radius ``EARTH_RADIUS_M``, ``(nlat, nlon)`` in m².

    Examples
    --------
    >>> lat_b = np.array([[-90.0, 90.0]]); lon_b = np.array([[-180.0, 180.0]])
    >>> bool(np.isclose(spherical_cell_area(lat_b, lon_b)[0, 0], 4 * np.pi * EARTH_RADIUS_M**2))
    True
    """
    lat_b = np.deg2rad(np.clip(np.asarray(lat_bounds, dtype=float), -90, 90))
    band = np.abs(np.sin(lat_b[:, 1]) - np.sin(lat_b[:, 0]))
    width = np.deg2rad(
        np.abs(np.asarray(lon_bounds, dtype=float)[:, 1] - np.asarray(lon_bounds)[:, 0])
    )
    return EARTH_RADIUS_M**2 * band[:, None] * width[None, :]


def _bounds_var(obj, dim: str) -> np.ndarray | None:
    name = obj[dim].attrs.get("bounds", f"{dim}_bnds")
    if isinstance(obj, xr.Dataset) and name in obj.variables and obj[name].ndim == 2:
        data = obj[name].data
        if hasattr(data, "dask"):  # a few numbers: read them here, not on a cluster
            data = data.compute(scheduler="sync")
        return np.asarray(data, dtype=float)
    return None


def grid_bounds(obj: xr.Dataset | xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """``(y_bounds, x_bounds)``, each ``(n, 2)``: CF bounds when present, else inferred.

    Latitudes of a global Gaussian grid get Gaussian bounds; other latitudes get midpoint
    bounds clipped to [-90, 90].
    """
    ydim, xdim = spatial_dims(obj)
    yb, xb = _bounds_var(obj, ydim), _bounds_var(obj, xdim)
    if yb is None:
        y = obj[ydim].values
        yb = gaussian_latitude_bounds(y) if ydim == "lat" else None
        if yb is None:
            yb = cell_bounds(y)
            if ydim == "lat":
                yb = np.clip(yb, -90.0, 90.0)
    if xb is None:
        xb = cell_bounds(obj[xdim].values)
    return yb, xb


def with_bounds(ds: xr.Dataset) -> xr.Dataset:
    """Add CF bounds variables (``lat_bnds``/``lon_bnds`` or ``y_bnds``/``x_bnds``) when missing."""
    ydim, xdim = spatial_dims(ds)
    yb, xb = grid_bounds(ds)
    out = ds
    for dim, b in ((ydim, yb), (xdim, xb)):
        name = f"{dim}_bnds"
        if _bounds_var(ds, dim) is None:
            out = out.assign({name: ((dim, "bnds"), b)})
            out[dim].attrs["bounds"] = name
    return out


def curvilinear_corners(obj) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lon_corners, lat_corners)``, each ``(ny, nx, 4)``, of a curvilinear grid (2-D
    ``lat``/``lon`` coordinates with CF cell-corner bounds, as ocean models write them), or
    None for a grid with 1-D coordinates."""
    lat, lon = obj.coords.get("lat"), obj.coords.get("lon")
    if lat is None or lon is None or lat.ndim != 2 or lon.ndim != 2:
        return None
    names = []
    for c in (lon, lat):
        name = c.attrs.get("bounds") or c.encoding.get("bounds") or f"{c.name}_bnds"
        names.append(name)
    missing = [n for n in names if not isinstance(obj, xr.Dataset) or n not in obj.variables]
    if missing:
        raise ValueError(
            f"a curvilinear grid (2-D lat/lon) needs its cell corners {missing} (CF bounds with "
            "4 vertices); pass the Dataset that holds them."
        )
    lon_c, lat_c = (np.asarray(obj[n].values, dtype=np.float64) for n in names)
    if lon_c.shape != lon.shape + (4,) or lat_c.shape != lat.shape + (4,):
        raise ValueError(
            f"cell corners {names} have shapes {lon_c.shape}, {lat_c.shape}; expected "
            f"{lon.shape + (4,)} (four vertices per cell)."
        )
    return lon_c, lat_c


def polygon_area_on_sphere(lon: np.ndarray, lat: np.ndarray, radius: float = EARTH_RADIUS_M):
    """Areas (m²) of polygons with vertices ``(..., k)`` in degrees, edges straight in
    longitude and sin(latitude) (the equal-area cylindrical map): exact for the cells of a
    regular lat/lon grid, as :func:`spherical_cell_area`, and for any cell whose sides are
    meridians and parallels; a close approximation for the skewed cells of curvilinear grids."""
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    s = np.sin(np.radians(np.asarray(lat, dtype=np.float64)))
    lam2, s2 = np.roll(lam, -1, axis=-1), np.roll(s, -1, axis=-1)
    return np.abs(0.5 * ((lam2 - lam) * (s + s2)).sum(axis=-1)) * radius**2
