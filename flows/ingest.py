"""Ingest: rasters → zonal statistics per region → a (time, region) Zarr store.

Wiring only: :func:`spatialmeta.jobs.aggregate.aggregate_job` as one content-keyed stage
(``flows._stage``). Unchanged rasters and polygons: the stage is ``Cached`` and nothing is
read. New time steps (an extra month of rasters): with ``append`` (the default) only the
steps after the store's last are aggregated, with the saved region weights, and appended.
Dask work runs on the flow's cluster when the flow runs on a ``DaskTaskRunner``.

Example
-------
    python -m flows.ingest --rasters 'data/tas_*.nc' --regions states.gpkg \\
        --id-column STATE_NAME --out outputs/series.zarr
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow
from pydantic import Field

from flows._params import existing
from flows._stage import Stages, task_runner
from spatialmeta.jobs.aggregate import aggregate_job

__all__ = ["ingest"]


@flow(name="spatialmeta-ingest", task_runner=task_runner())
def ingest(
    rasters: Annotated[list[str], Field(min_length=1)],
    regions: str,
    out: str,
    id_column: str = "region_id",
    variables: list[str] | None = None,
    stats: Annotated[list[str], Field(min_length=1)] = ["mean"],  # noqa: B006 - pydantic copies
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.5,
    append: bool = True,
    result_storage: str | None = None,
    progress: bool = False,
) -> dict:
    """Aggregate ``rasters`` over the polygons ``regions`` into the Zarr store ``out``."""
    existing("rasters", rasters)
    existing("regions", regions)
    weights = Path(out).with_name(Path(out).stem + "_weights.npz")
    run = Stages(result_storage)
    result = run(aggregate_job)(
        rasters, out, regions=regions, id_column=id_column, stats=tuple(stats),
        variables=variables, weights=str(weights), min_coverage=min_coverage, append=append,
        local_threads=True, progress=progress,
    )  # fmt: skip
    return {"store": str(result.store), "regions": result.n_regions, "appended": result.appended}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from flows._server import local_api

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rasters", nargs="+", required=True)
    p.add_argument("--regions", required=True)
    p.add_argument("--id-column", default="region_id")
    p.add_argument("--out", required=True)
    p.add_argument("--no-append", action="store_true", help="Rewrite the store whole.")
    args = p.parse_args(argv)
    with local_api():
        print(ingest(rasters=args.rasters, regions=args.regions, id_column=args.id_column,
                     out=args.out, append=not args.no_append))  # fmt: skip


if __name__ == "__main__":
    main()
