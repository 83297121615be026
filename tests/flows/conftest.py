"""Shared inputs of the flow tests: a synthetic monthly climate as one NetCDF file per year
(the shape of a scheduled feed: a new file arrives, an old one is corrected), polygons,
and a small study table; plus reading task-run states back from the Prefect API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

YEARS = 10
TEST_START = "1989-01"  # the last two years are the test period
SMALL = {"support": 24, "horizon": 2, "episodes": 30, "holdout": "0.25"}


def write_climate(folder: Path, years: int = YEARS, *, extra_months: int = 0) -> list[str]:
    """``tas_<year>.nc`` per year of the synthetic climate (2° grid), and with
    ``extra_months`` a file ``tas_<year>_<month>.nc`` per month after them."""
    from spatialmeta.data.synthetic import synthetic_climate
    from spatialmeta.raster.io import write_netcdf

    folder.mkdir(parents=True, exist_ok=True)
    months = 12 * years + extra_months
    ds = synthetic_climate(resolution=2.0, years=-(-months // 12), start="1981-01", seed=3)
    tas = ds[["tas", "lat_bnds", "lon_bnds"]].isel(time=slice(0, months))
    paths = []
    for year, part in tas.groupby("time.year"):
        if part.sizes["time"] == 12:
            paths.append(write_netcdf(part, folder / f"tas_{year}.nc"))
        else:
            for t in range(part.sizes["time"]):
                one = part.isel(time=[t])
                paths.append(write_netcdf(one, folder / f"tas_{year}_{t + 1:02d}.nc"))
    return [str(p) for p in paths]


def write_regions(path: Path, n: int = 24) -> str:
    from spatialmeta.data.regions import synthetic_regions

    synthetic_regions(n_regions=n, seed=1).to_file(path)
    return str(path)


def write_studies(path: Path) -> str:
    """A small study table (effect and variance per study) for the pooling stage."""
    pd.DataFrame({
        "study": [f"s{i}" for i in range(8)],
        "yi": [0.12, 0.35, -0.05, 0.41, 0.22, 0.18, 0.30, 0.02],
        "vi": [0.02, 0.03, 0.05, 0.04, 0.02, 0.06, 0.03, 0.05],
    }).to_csv(path, index=False)  # fmt: skip
    return str(path)


def task_states(flow_run_id) -> dict[str, str]:
    """Task name (without the run suffix) → its final state name, for one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    runs = asyncio.run(read())
    out: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.start_time or r.expected_start_time):
        name = run.name.rsplit("-", 1)[0]
        out[name] = run.state.name  # a stage rerun for missing outputs: its last state
    return out


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
