"""Task sets on disk: region tasks in Zarr (with their graph), study tasks in Parquet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import xarray as xr
from torch_geometric.data import Data

from spatialmeta._io import atomic_path
from spatialmeta.raster.io import write_zarr
from spatialmeta.regions.graph import RegionGraph
from spatialmeta.tasks.region import RegionTaskSet
from spatialmeta.tasks.studies import StudyTaskSet

__all__ = ["save_region_tasks", "load_region_tasks", "save_study_tasks", "load_study_tasks"]


def save_region_tasks(tasks: RegionTaskSet, path: str | os.PathLike) -> Path:
    """Write a region task set (series, covariates, graph) to a Zarr store atomically."""
    ds = xr.Dataset(
        {
            "series": (
                ("region", "time"),
                tasks.series,
                {"units": tasks.units, "long_name": tasks.variable},
            ),
            "covariates": (("region", "covariate"), tasks.covariates),
        },
        coords={
            "region": ("region", tasks.region_ids.astype(str).astype(object)),
            "time": ("time", tasks.time.values),
            "covariate": ("covariate", np.array(tasks.covariate_names, dtype=object)),
        },
        attrs={"variable": tasks.variable, "units": tasks.units, "spatialmeta": "RegionTaskSet"},
    )
    if tasks.area_km2 is not None:
        ds["area_km2"] = ("region", np.asarray(tasks.area_km2, dtype=float))
    if tasks.graph is not None:
        g = tasks.graph
        ds["edge_index"] = (("two", "edge"), g.data.edge_index.numpy())
        ds["edge_attr"] = (("edge", "edge_feature"), g.data.edge_attr.numpy())
        ds["node_x"] = (("region", "node_feature"), g.data.x.numpy())
        ds["pos"] = (("region", "xy"), g.data.pos.numpy())
        ds["island"] = ("region", g.data.island.numpy())
        ds.attrs["node_features"] = json.dumps(list(g.node_features))
        ds.attrs["edge_features"] = json.dumps(list(g.edge_features))
        ds.attrs["directed"] = int(g.directed)
    return write_zarr(ds, path)


def load_region_tasks(path: str | os.PathLike) -> RegionTaskSet:
    """Read a region task set written by :func:`save_region_tasks`."""
    ds = xr.open_zarr(path).load()
    if ds.attrs.get("spatialmeta") != "RegionTaskSet":
        raise ValueError(
            f"'{path}' is not a region task set written by spatialmeta (no marker attribute)."
        )
    ids = np.array(ds.region.values.tolist(), dtype=str)  # zarr v3 strings come back as StringDType
    graph = None
    if "edge_index" in ds:
        data = Data(
            x=torch.from_numpy(ds.node_x.values),
            edge_index=torch.from_numpy(ds.edge_index.values.astype(np.int64)),
            edge_attr=torch.from_numpy(ds.edge_attr.values),
            pos=torch.from_numpy(ds.pos.values),
            island=torch.from_numpy(ds.island.values.astype(bool)),
            num_nodes=len(ids),
        )
        graph = RegionGraph(
            data,
            ids,
            tuple(json.loads(ds.attrs["node_features"])),
            tuple(json.loads(ds.attrs["edge_features"])),
            bool(ds.attrs.get("directed", 0)),
        )
    return RegionTaskSet(
        series=ds.series.values,
        time=pd.DatetimeIndex(ds.time.values),
        region_ids=ids,
        covariates=ds.covariates.values,
        covariate_names=tuple(str(c) for c in ds.covariate.values),
        graph=graph,
        variable=ds.attrs.get("variable", "value"),
        units=ds.attrs.get("units", ""),
        area_km2=ds.area_km2.values if "area_km2" in ds else None,
    )


def save_study_tasks(studies: StudyTaskSet, path: str | os.PathLike) -> Path:
    """Write a study task set to Parquet atomically (measure kept in the file's metadata)."""
    frame = pd.DataFrame({"label": studies.labels.astype(str), "yi": studies.yi, "vi": studies.vi})
    mods = list(studies.mods.columns) if studies.mods is not None else []
    if studies.mods is not None:
        frame = pd.concat([frame, studies.mods.reset_index(drop=True)], axis=1)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"spatialmeta"] = json.dumps({"measure": studies.measure, "mods": mods}).encode()
    final = Path(path)
    with atomic_path(final) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return final


def load_study_tasks(path: str | os.PathLike) -> StudyTaskSet:
    """Read a study task set written by :func:`save_study_tasks`."""
    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {}).get(b"spatialmeta", b"{}") or b"{}")
    frame = table.to_pandas()
    mods = info.get("mods") or []
    return StudyTaskSet(
        frame["yi"].to_numpy(), frame["vi"].to_numpy(), frame["label"].to_numpy(),
        frame[mods] if mods else None, info.get("measure", "effect"),
    )  # fmt: skip
