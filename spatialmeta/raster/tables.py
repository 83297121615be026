"""Zonal results as tables GIS tools open: CSV, GeoPackage and GeoParquet.

A zonal result (an xarray Dataset with a region dimension) becomes one row per region and
leading step (time, member), one column per variable and statistic; a statistic with its
own dimension (``quantile``, ``class``) gets one column per label (``tas_quantile_0.9``,
``landcover_frac_5``). Columns of the polygons named in ``include_cols`` are carried
along, and the geometry too in GeoPackage and GeoParquet, so that the table joins or maps
at once in QGIS (whose temporal controller reads the ``time`` column).
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["TABLE_SUFFIXES", "zonal_table", "write_table"]

TABLE_SUFFIXES = {".csv": "csv", ".gpkg": "gpkg", ".parquet": "parquet", ".geoparquet": "parquet"}


def zonal_table(
    result: xr.Dataset,
    regions: gpd.GeoDataFrame | None = None,
    *,
    id_column: str = "region_id",
    include_cols=(),
    region_dim: str = "region",
) -> pd.DataFrame:
    """One row per region and leading step of ``result`` (from ``zonal_stats`` or
    ``zonal_categories``), the region id in ``id_column``; with ``regions``, their
    ``include_cols`` and geometry joined on the id (a GeoDataFrame then).

    Examples
    --------
    >>> ds = xr.Dataset({"tas_mean": (("time", "region"), [[1.0, 2.0], [3.0, 4.0]])},
    ...                 coords={"region": ["a", "b"], "time": [0, 1]})
    >>> zonal_table(ds).to_dict("records")[:2]
    [{'region_id': 'a', 'time': 0, 'tas_mean': 1.0}, {'region_id': 'b', 'time': 0, 'tas_mean': 2.0}]
    """
    if region_dim not in result.dims:
        raise ValueError(
            f"the result has no {region_dim!r} dimension (dims: {dict(result.sizes)})."
        )
    include_cols = list(include_cols or [])
    if include_cols and regions is None:
        raise ValueError("`include_cols` needs the polygons (`regions`) to take them from.")
    if regions is not None:
        missing = [c for c in include_cols + [id_column] if c not in regions.columns]
        if missing:
            raise KeyError(
                f"the polygons have no column(s) {missing} (columns: "
                f"{[str(c) for c in regions.columns if c != regions.geometry.name]}); "
                "check `include_cols` and `id_column`."
            )
    lead = [d for d in result.dims if d != region_dim and all(
        d in v.dims for v in result.data_vars.values())]  # fmt: skip
    index = [region_dim] + [d for d in ("member", "time") if d in lead]
    index += [d for d in lead if d not in index]
    parts = []
    for name, da in result.data_vars.items():
        extra = [d for d in da.dims if d not in index]
        s = da.transpose(*index, *extra).to_series()
        if extra:  # a statistic with its own axis: one column per label
            frame = s.unstack(extra)
            frame.columns = [f"{name}_{_label(c)}" for c in frame.columns]
        else:
            frame = s.to_frame(str(name))
        parts.append(frame)
    table = pd.concat(parts, axis=1).reset_index()
    table = table.rename(columns={region_dim: id_column})
    for d in index[1:]:  # cftime steps (model calendars) as ISO text, which every tool reads
        if table[d].dtype == object and hasattr(table[d].iloc[0], "isoformat"):
            table[d] = [t.isoformat() for t in table[d]]
    order = [id_column] + [d for d in index if d != region_dim]
    table = table.sort_values(order[1:] + [id_column], kind="stable").reset_index(drop=True)
    table = table[order + [c for c in table.columns if c not in order]]
    if regions is None:
        return table
    include_cols = [c for c in dict.fromkeys(include_cols) if c != id_column]
    ids = pd.Index(regions[id_column].astype(str).to_numpy())
    if not ids.is_unique:
        raise ValueError(f"the polygons' ids in {id_column!r} are not unique.")
    table[id_column] = table[id_column].astype(str)
    at = ids.get_indexer(table[id_column])  # each row's polygon
    if (at < 0).any():
        raise ValueError(
            f"results for regions the polygons do not have: "
            f"{sorted(set(table[id_column][at < 0]))[:5]}; pass the polygons they came from."
        )
    carried = pd.DataFrame({c: regions[c].to_numpy()[at] for c in include_cols}, index=table.index)
    table = pd.concat([table[order], carried, table.drop(columns=order)], axis=1)
    return gpd.GeoDataFrame(table, geometry=regions.geometry.to_numpy()[at], crs=regions.crs)


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` by the file's suffix (CSV, GeoPackage, GeoParquet), atomically; CSV
    leaves the geometry out, the others need it."""
    from spatialmeta._io import atomic_path

    path = Path(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"cannot write a table to '{path}': use one of {', '.join(TABLE_SUFFIXES)}."
        )
    geo = isinstance(table, gpd.GeoDataFrame)
    if kind != "csv" and not geo:
        raise ValueError(
            f"'{path}' ({kind}) needs polygons to carry; give the regions, or write a .csv."
        )
    with atomic_path(path) as tmp:
        if kind == "csv":
            frame = pd.DataFrame(table.drop(columns=table.geometry.name)) if geo else table
            frame.to_csv(tmp, index=False)
        elif kind == "gpkg":
            table.to_file(tmp, driver="GPKG", layer=path.stem, engine="pyogrio")
        else:
            table.to_parquet(tmp, index=False)
    return path


def _label(value) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)
