"""The TREFHT ensemble members aggregated to the US states, shared by the benchmark scripts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def state_stores(files, states, folder) -> Iterator[tuple[str, Path]]:
    """``(member, store)`` for each member file: its area-weighted state means written to
    a Zarr store in ``folder`` (one store per member, made as the caller reaches it)."""
    from spatialmeta.raster.aggregate import aggregate

    for f in files:
        member = f.name.split(".")[2]
        store = Path(folder) / f"{member}.zarr"
        aggregate(str(f), store, regions=states, id_column="STATE_NAME", variables=["TREFHT"],
                  progress=False)  # fmt: skip
        yield member, store
