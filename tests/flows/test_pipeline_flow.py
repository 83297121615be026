"""The main job as a real Prefect flow (ephemeral test server), at small size."""

import asyncio
import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import demo_pipeline

    out = tmp_path_factory.mktemp("demo")
    with prefect_test_harness(server_startup_timeout=120):
        result = demo_pipeline(
            out=str(out),
            years=15,
            resolution=2.0,
            n_regions=30,
            episodes=60,
            seed=0,
            progress=False,
        )
        api = asyncio.run(_client_reads())
    return out, result, api


async def _client_reads():
    """The reads `prefect deployment ls` and `prefect deploy` make (they send "limit": null)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flows = await client.read_flows()
        runs = await client.read_flow_runs()
        deployments = await client.read_deployments()
        pools = await client.read_work_pools()
    return {
        "flows": [f.name for f in flows],
        "runs": [r.state_type.value for r in runs],
        "deployments": len(deployments),
        "pools": len(pools),
    }


def test_flow_run_is_recorded_by_the_server(demo_run):
    _, _, api = demo_run
    assert "spatialmeta-demo" in api["flows"]
    assert api["runs"] == ["COMPLETED"]
    assert api["deployments"] == 0 and api["pools"] == 0


def test_flow_writes_every_output(demo_run):
    out, result, _ = demo_run
    for name in (
        "summary.md",
        "skill.csv",
        "skill_by_region.csv",
        "skill_map.png",
        "forest_skill.png",
        "pooled_skill.json",
        "forecasts.parquet",
        "region_graph.parquet",
        "checkpoint/model.pt",
    ):
        assert (out / name).exists(), name
    assert not list(out.glob(".tmp-*")), "a temporary file was left behind"
    assert (out / "skill_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecasts_open_in_xarray_and_geopandas(demo_run):
    out, _, _ = demo_run
    ds = xr.open_zarr(out / "forecasts.zarr")
    assert set(ds.forecast_quantile.dims) == {"region", "time", "horizon", "quantile"}
    assert ds.attrs["Conventions"].startswith("CF")
    q = ds.forecast_quantile.values
    assert (np.diff(q, axis=-1) >= 0).all()  # quantiles ordered
    np.testing.assert_allclose(
        ds.forecast_quantile.sel(quantile=0.5).values, ds.forecast_mean.values, rtol=1e-6
    )
    frame = gpd.read_parquet(out / "forecasts.parquet")
    assert frame.crs.to_epsg() == 4326 and frame.geometry.notna().all()
    assert len(frame) == ds.sizes["region"] * ds.sizes["time"] * ds.sizes["horizon"]
    assert (frame.valid_time >= frame.time).all()


def test_meta_learner_beats_climatology_and_persistence(demo_run):
    out, result, _ = demo_run
    table = pd.read_csv(out / "skill.csv").set_index("method")
    assert table.loc["meta", "rmse"] < 0.95 * table.loc["climatology", "rmse"]
    assert table.loc["meta", "rmse"] < table.loc["persistence", "rmse"]
    assert table.loc["meta", "crps"] < table.loc["climatology", "crps"]
    pooled = json.loads((out / "pooled_skill.json").read_text())
    assert pooled["estimate"] < 0 and pooled["ci_ub"] < 0  # MSE ratio below 1 with confidence
    by_region = pd.read_csv(out / "skill_by_region.csv")
    assert by_region.method.value_counts()["meta"] == pooled["k"]


def test_summary_reports_rmse_of_each_method(demo_run):
    out, result, _ = demo_run
    text = (out / "summary.md").read_text()
    assert text == result["summary"]
    table = pd.read_csv(out / "skill.csv").set_index("method")
    for method in ("meta", "climatology", "persistence"):
        assert f"{table.loc[method, 'rmse']:.3f}" in text
    assert "pooled MSE ratio" in text and "I² =" in text


def test_library_never_imports_prefect():
    code = (
        "import sys, spatialmeta\n"
        "for m in spatialmeta._SUBMODULES: getattr(spatialmeta, m)\n"
        "import spatialmeta.cli\n"
        "print('prefect' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("bad_out", ["/proc/forbidden", "FILE"])
def test_cli_unwritable_out_is_one_line_error(bad_out, tmp_path):
    if bad_out == "FILE":
        bad_out = tmp_path / "a_file"
        bad_out.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", "demo", "--out", str(bad_out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write outputs to"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("command", ["demo", "synth"])
def test_every_command_has_help_with_example(command):
    proc = subprocess.run(
        [sys.executable, "-m", "spatialmeta.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    # the example in a paragraph of its own, on one line (click does not re-wrap it)
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    assert "Example:" in lines
    assert any(ln.startswith(f"spatialmeta {command} ") for ln in lines), proc.stdout
