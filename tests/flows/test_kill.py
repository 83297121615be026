"""Kill-safety: the pipeline SIGKILLed during aggregation and during meta-training (in its
own process, with its own temporary Prefect server, as `python -m flows.pipeline` runs)
leaves no half-written output and no process behind; the re-run finishes, reuses the
stages that had finished, and its outputs equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import xarray as xr

from tests.flows.conftest import SMALL, TEST_START, write_climate, write_regions

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("_killable.py")


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _start(params: dict, folder: Path, pause: str | None = None) -> subprocess.Popen:
    path = folder / "params.json"
    path.write_text(json.dumps(params))
    cmd = [sys.executable, str(SCRIPT), str(path)] + (["--pause", pause] if pause else [])
    home = Path(params["rasters"][0]).parents[1] / "prefect-home"  # one database per module
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(home))  # fmt: skip


def _kill_when_paused(proc: subprocess.Popen, timeout: float = 300.0) -> list[psutil.Process]:
    """SIGKILL ``proc`` once it prints PAUSED; its descendants as they were just before."""
    start, seen = time.monotonic(), []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("PAUSED"):
            break
        if time.monotonic() - start > timeout:
            break
    else:
        pytest.fail("the run ended before its pause:\n" + "".join(seen[-40:]))
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run should have spawned its Prefect server"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    return children


def _finish(params: dict, folder: Path) -> dict:
    proc = _start(params, folder)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("STATES "))
    return json.loads(line.removeprefix("STATES "))


def _no_survivors(children: list[psutil.Process], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    alive = children
    while alive and time.monotonic() < end:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive, f"left behind: {[(p.pid, p.cmdline()[:4]) for p in alive]}"


def _no_partial_outputs(out: Path) -> None:
    temporary = [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert not temporary, f"temporary outputs left: {temporary}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    write_climate(root / "rasters")
    base = dict(rasters=[str(root / "rasters" / "tas_*.nc")],
                regions=write_regions(root / "regions.gpkg"), var="tas", test_start=TEST_START,
                **SMALL)  # fmt: skip
    reference = {**base, "out": str(root / "ref"), "result_storage": str(root / "ref-results")}
    assert set(_finish(reference, root).values()) == {"Completed"}  # uninterrupted
    return root, base


def _equal_outputs(a: Path, b: Path) -> None:
    for store in ("series.zarr", "forecast/forecasts.zarr"):
        xr.testing.assert_identical(xr.open_zarr(a / store).load(), xr.open_zarr(b / store).load())
    for table in ("skill.csv", "skill_by_region.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(a / "forecast" / table),
                                      pd.read_csv(b / "forecast" / table), rtol=1e-12)  # fmt: skip
    assert (a / "forecast" / "checkpoint" / "model.pt").exists()


@pytest.mark.parametrize(
    ("pause", "reused"),
    [
        ("aggregate", set()),  # nothing had finished
        ("train", {"aggregate_job", "read_series", "build_tasks", "global_train"}),
    ],
)
def test_killed_run_leaves_nothing_half_written_and_the_rerun_completes(inputs, pause, reused,
                                                                       tmp_path):  # fmt: skip
    root, base = inputs
    params = {**base, "out": str(tmp_path / "out"), "result_storage": str(tmp_path / "results")}
    children = _kill_when_paused(_start(params, tmp_path, pause=pause))
    _no_survivors(children)  # the server (and anything else it started) died with the run
    # the output it was writing exists only under its temporary name
    final = (
        tmp_path
        / "out"
        / ("series.zarr" if pause == "aggregate" else "forecast/checkpoint/model.pt")
    )
    assert not final.exists()
    states = _finish(params, tmp_path)
    assert {s for s, v in states.items() if v == "Cached"} == reused
    assert all(v in ("Cached", "Completed") for v in states.values()), states
    _no_partial_outputs(tmp_path / "out")
    _equal_outputs(tmp_path / "out", root / "ref")
