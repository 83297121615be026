"""Zonal statistics of categorical rasters (land cover, soil class, climate zone).

For each region: the share of its covered cells in each class (``frac``), the same shares
weighted by a second raster (``weighted_frac``: cropland-weighted land cover, say), the
most and least common class (``majority``, ``minority``), how many classes occur
(``variety``) and which (``unique``), as exactextract defines them.

All regions, time steps and classes at once: each cell's class is one column of a sparse
one-hot matrix (cells x (time step, class)), and the region x cell weights of
:mod:`~spatialmeta.raster.zonal` times that matrix are every region's covered weight per
class and step in one sparse product. Written here because exactextract gives these per
polygon in a loop and not over xarray time steps.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import xarray as xr

from spatialmeta.raster.zonal import ZonalWeights, _times_weight, coverage_weights

__all__ = ["CATEGORICAL_STATS", "zonal_categories"]

CATEGORICAL_STATS = ("frac", "weighted_frac", "majority", "minority", "variety", "unique")


def zonal_categories(
    da: xr.DataArray,
    weights: ZonalWeights,
    *,
    stats: tuple[str, ...] = ("frac", "majority"),
    weight: xr.DataArray | None = None,
    coverage_weight: str = "area",
    min_coverage_frac: float = 0.0,
    region_dim: str = "region",
) -> xr.Dataset:
    """Categorical zonal statistics of ``da`` (classes as numbers; NaN or the raster's
    nodata is no class) for every leading step (time, band).

    Parameters
    ----------
    da : xarray.DataArray
        A categorical raster in normal form (``open_raster``), trailing spatial dims.
    weights : ZonalWeights
        From :func:`~spatialmeta.raster.zonal.zonal_weights` on the same grid.
    stats : tuple of str
        Any of :data:`CATEGORICAL_STATS`. ``frac``: share of the region's covered weight
        in each class (a ``class`` dimension); ``weighted_frac``: the same with each cell
        also weighted by ``weight``; ``majority``/``minority``: the class with the largest
        / smallest covered weight (ties: the smaller class value); ``variety``: number of
        classes present; ``unique``: the classes present, comma-separated.
    weight : xarray.DataArray, optional
        Weighting raster for ``weighted_frac`` (regridded as in ``zonal_stats``).
    coverage_weight, min_coverage_frac
        As :func:`~spatialmeta.raster.zonal.zonal_stats`'s (``"fraction"`` is
        exactextract's default; ``"area"`` weights cells by their area on the sphere).

    Returns
    -------
    xarray.Dataset
        ``<name>_frac``/``<name>_weighted_frac`` with dims ``(..., region, class)``, the
        others ``(..., region)``; regions with no covered class get NaN (``""`` for
        ``unique``, 0 for ``variety``).

    Examples
    --------
    >>> from spatialmeta.data import synthetic_climate, synthetic_regions
    >>> from spatialmeta.raster.zonal import zonal_weights
    >>> ds = synthetic_climate(bbox=(0, 40, 4, 44), resolution=1, years=1)
    >>> zone = (ds.tas.isel(time=0) > ds.tas.isel(time=0).median()).astype(int).rename("zone")
    >>> out = zonal_categories(zone, zonal_weights(ds, synthetic_regions((0, 40, 4, 44), 4)))
    >>> dict(out.zone_frac.sizes)
    {'region': 4, 'class': 2}
    """
    unknown = [s for s in stats if s not in CATEGORICAL_STATS]
    if unknown or not stats:
        raise ValueError(
            f"unknown categorical statistics {unknown}; choose from {', '.join(CATEGORICAL_STATS)}."
        )
    if "weighted_frac" in stats and weight is None:
        raise ValueError("`weighted_frac` needs a weighting raster; pass `weight`.")
    ydim, xdim = weights.dims
    if da.dims[-2:] != (ydim, xdim) or (da.sizes[ydim], da.sizes[xdim]) != weights.shape:
        raise ValueError(
            f"raster grid {dict(da.sizes)} does not match the weights' grid {weights.shape} "
            f"on ({ydim}, {xdim}); rebuild the weights with zonal_weights() on this raster."
        )
    name = da.name if da.name is not None else "class"
    lead = da.dims[:-2]
    values = np.asarray(da.values, dtype=np.float64).reshape(
        -1, weights.shape[0] * weights.shape[1]
    )
    nodata = da.rio.nodata if hasattr(da, "rio") else None
    valid = np.isfinite(values)
    if nodata is not None and np.isfinite(nodata):
        valid &= values != nodata
    if (valid & (values != np.round(values))).any():
        bad = values[valid & (values != np.round(values))][:3]
        raise ValueError(
            f"raster {name!r} is not categorical: it has non-integer values ({bad.tolist()}); "
            "categorical statistics need class numbers."
        )
    classes = np.unique(values[valid])
    n_steps, n_cells = values.shape
    n_class = classes.size
    code = np.searchsorted(classes, np.where(valid, values, classes[0] if n_class else 0))
    step, cell = np.nonzero(valid)
    onehot = sp.csr_matrix(
        (np.ones(step.size), (cell, step * n_class + code[step, cell])),
        shape=(n_cells, n_steps * max(n_class, 1)),
    )
    base = coverage_weights(weights, da, coverage_weight, min_coverage_frac)
    out = {}
    shape = tuple(da.sizes[d] for d in lead) + (weights.fraction.shape[0], n_class)
    by_class = _per_class(base, onehot, n_steps, n_class).reshape(shape)
    coords = {d: da[d] for d in lead if d in da.coords}
    coords["class"] = ("class", classes)
    if "frac" in stats:
        out[f"{name}_frac"] = _shares(by_class, lead, region_dim, coords, "fraction of cover")
    if "weighted_frac" in stats:
        scaled, nan_rows = _times_weight(base, da, weight)
        w_class = _per_class(scaled, onehot, n_steps, n_class).reshape(shape)
        frac = _shares(w_class, lead, region_dim, coords, "weighted fraction of cover")
        out[f"{name}_weighted_frac"] = frac.where(~xr.DataArray(nan_rows, dims=region_dim))
    present = by_class > 0
    plain = {d: c for d, c in coords.items() if d != "class"}
    dims = lead + (region_dim,)
    none = ~present.any(axis=-1)
    if "majority" in stats:
        pick = classes[np.argmax(by_class, axis=-1)] if n_class else np.zeros(shape[:-1])
        out[f"{name}_majority"] = xr.DataArray(
            np.where(none, np.nan, pick), dims=dims, coords=plain
        )
    if "minority" in stats:
        least = np.argmin(np.where(present, by_class, np.inf), axis=-1) if n_class else 0
        pick = classes[least] if n_class else np.zeros(shape[:-1])
        out[f"{name}_minority"] = xr.DataArray(
            np.where(none, np.nan, pick), dims=dims, coords=plain
        )
    if "variety" in stats:
        out[f"{name}_variety"] = xr.DataArray(present.sum(axis=-1), dims=dims, coords=plain)
    if "unique" in stats:
        labels = np.array([_label(c) for c in classes], dtype=object)
        text = [",".join(labels[row]) for row in present.reshape(-1, n_class)]
        out[f"{name}_unique"] = xr.DataArray(
            np.array(text, dtype=object).reshape(shape[:-1]), dims=dims, coords=plain
        )
    result = xr.Dataset(out).assign_coords({region_dim: weights.region_ids.astype(str)})
    result[region_dim].attrs["long_name"] = "region id"
    return result


def _per_class(w: ZonalWeights, onehot: sp.csr_matrix, n_steps: int, n_class: int) -> np.ndarray:
    """Covered weight of each region in each (step, class): ``(steps, regions, classes)``."""
    per = (w.matrix @ onehot).toarray()  # (regions, steps * classes)
    return per.reshape(-1, n_steps, n_class).transpose(1, 0, 2)


def _shares(by_class, lead, region_dim, coords, long_name) -> xr.DataArray:
    total = by_class.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, by_class / total, np.nan)
    return xr.DataArray(frac, dims=lead + (region_dim, "class"), coords=coords,
                        attrs={"long_name": long_name, "units": "1"})  # fmt: skip


def _label(c: float) -> str:
    return str(int(c)) if float(c).is_integer() else str(c)
