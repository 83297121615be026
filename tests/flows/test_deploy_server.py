"""deploy/prefect.yaml applied to a real Prefect server on loopback, and `spatialmeta serve`.

A Prefect server (``flows._server.local_api``) runs on 127.0.0.1 with its own PREFECT_HOME
(database) in a temporary folder. ``prefect deploy --all`` registers the project file's
deployments from the repository root; they are read back with their cron schedules, and
one run of the weekly pooling deployment, its parameters pointed at a study table written
here (dat.bcg's effects from the metafor reference), is executed by a process worker
(``prefect worker start --run-once``) and compared with metafor's REML fit. Then
``spatialmeta serve --only pool-weekly`` serves the same deployment from one process and
executes a run of it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((ROOT / "tests/reference/metafor_reference.json").read_text())
POOL = "spatialmeta-pool-studies/pool-weekly"
SPECS = {
    d["name"]: d for d in yaml.safe_load((ROOT / "deploy/prefect.yaml").read_text())["deployments"]
}
# deployment -> (flow name, entrypoint, cron), as issue 17 asks; every schedule in UTC
EXPECTED = {
    "ingest-nightly": ("spatialmeta-ingest", "flows/ingest.py:ingest", "0 2 * * *"),
    "forecast-monthly": ("spatialmeta-forecast", "flows/forecast.py:forecast", "0 6 1 * *"),
    "pool-weekly": ("spatialmeta-pool-studies", "flows/pool.py:pool_studies", "0 7 * * 1"),
    "spatialmeta-demo-monthly": (
        "spatialmeta-demo",
        "flows/pipeline.py:demo_pipeline",
        "0 6 1 * *",
    ),
}


def _run(coro_fn, *args):
    """An async client call, with a fresh client to the configured API."""
    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            return await coro_fn(client, *args)

    return asyncio.run(call())


def _wait_final(flow_run_id, timeout: float = 180.0, proc: subprocess.Popen | None = None):
    """The flow run once its state is final; fails after ``timeout`` seconds, or when
    ``proc`` (what should run it) exits before the run is final."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        run = _run(lambda c, i: c.read_flow_run(i), flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        if proc is not None and proc.poll() is not None:
            time.sleep(1)  # its last state report may still be on its way
            run = _run(lambda c, i: c.read_flow_run(i), flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            pytest.fail(f"{proc.args} exited ({proc.returncode}) with the run {run.state}")
        time.sleep(0.5)
    pytest.fail(f"flow run {flow_run_id} not finished after {timeout:.0f} s")


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, wait: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _studies(path: Path) -> Path:
    """dat.bcg's log risk ratios and their variances (13 trials) as a study table."""
    bcg = REFERENCE["datasets"]["bcg"]
    pd.DataFrame({"yi": bcg["yi"], "vi": bcg["vi"]}).to_csv(path, index=False)
    return path


def _metafor_reml():
    (fit,) = [f for f in REFERENCE["fits"] if (f["dataset"], f["method"], f["test"], f["weights"])
              == ("bcg", "REML", "z", None) and f["level"] == 95]  # fmt: skip
    return fit


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A Prefect server on loopback with a temporary database; its URL. Environment for
    the subprocesses: the same API, the same PREFECT_HOME, no telemetry."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows._server import local_api

    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("DO_NOT_TRACK", "1")
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")  # `serve` looks for runs every 1 s
        mp.delenv("PREFECT_API_URL", raising=False)
        # never the API of the user's profile: this server, started here
        with temporary_settings(restore_defaults={PREFECT_API_URL}), local_api() as url:
            assert url and url.startswith("http://127.0.0.1:"), url
            yield url


@pytest.fixture(scope="module")
def deployed(api):
    """`prefect deploy --all` from the repository root, onto the process work pool."""
    from prefect.client.schemas.actions import WorkPoolCreate

    _run(lambda c: c.create_work_pool(WorkPoolCreate(name="spatialmeta-process", type="process")))
    env = {**os.environ, "PWD": str(ROOT)}  # the pull step's {{ $PWD }}
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy",
           "--prefect-file", "deploy/prefect.yaml", "--all"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    deployments = _run(lambda c: c.read_deployments())
    flows = {f.id: f.name for f in _run(lambda c: c.read_flows())}
    return {d.name: (flows[d.flow_id], d) for d in deployments}


def test_deployments_read_back_with_their_cron_schedules(deployed):
    assert set(deployed) == set(EXPECTED)
    for name, (flow_name, entrypoint, cron) in EXPECTED.items():
        got_flow, d = deployed[name]
        assert (got_flow, d.entrypoint) == (flow_name, entrypoint), name
        schedules = [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
        assert schedules == [(cron, "UTC", True)], name
        assert d.work_pool_name == "spatialmeta-process", name
        assert d.global_concurrency_limit is not None, name
        assert d.global_concurrency_limit.limit == 1, name
        assert not d.paused, name
        assert d.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        assert (d.parameters, d.tags) == (SPECS[name]["parameters"], SPECS[name]["tags"])
        assert d.description == SPECS[name]["description"]
    assert deployed["pool-weekly"][1].parameters == {
        "studies": "/data/studies/studies.csv", "out": "/data/outputs/pool", "method": "REML",
        "result_storage": "/data/results",
    }  # fmt: skip
    for name in ("forecast-monthly", "spatialmeta-demo-monthly"):
        assert {"training", "gpu"} <= set(deployed[name][1].tags), name


def test_a_run_of_the_pool_deployment_completes_on_a_process_worker(deployed, tmp_path):
    from prefect.deployments import run_deployment

    out = tmp_path / "pool"
    params = {"studies": str(_studies(tmp_path / "bcg.csv")), "out": str(out),
              "result_storage": str(tmp_path / "results")}  # fmt: skip
    flow_run = run_deployment(POOL, parameters=params, timeout=0)
    assert flow_run.parameters == {**params, "method": "REML"}  # the deployment's, overridden
    cmd = [sys.executable, "-m", "prefect", "worker", "start",
           "--pool", "spatialmeta-process", "--run-once"]  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
        try:
            run = _wait_final(flow_run.id, proc=worker)
        finally:
            _stop(worker, signal.SIGTERM)
    assert run.state.type.value == "COMPLETED", log.read_text()[-3000:]
    assert set(run.tags) >= {"spatialmeta", "pool"}
    results = json.loads((out / "results.json").read_text())
    fit = _metafor_reml()
    assert results["input"]["k"] == fit["k"] == 13
    for key in ("estimate", "se", "tau2"):
        assert results["model"][key] == pytest.approx(fit[key], rel=1e-6), key
    assert (out / "report.md").is_file() and (out / "forest.png").is_file()


def test_spatialmeta_serve_registers_and_runs_the_deployment(api, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:  # the one `prefect deploy` registered (earlier test): serve must register its own
        _run(
            lambda c, i: c.delete_deployment(i), _run(lambda c: c.read_deployment_by_name(POOL)).id
        )
    except ObjectNotFound:
        pass
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "spatialmeta.cli", "serve", "--only", "pool-weekly"]
    with log.open("w") as sink:
        served = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            start = time.monotonic()
            while True:
                try:
                    d = _run(lambda c: c.read_deployment_by_name(POOL))
                    break
                except ObjectNotFound:
                    pass
                assert served.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() - start < 120, "serve registered nothing in 120 s"
                time.sleep(0.5)
            assert d.entrypoint == "flows/pool.py:pool_studies"
            assert [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] == [
                ("0 7 * * 1", "UTC")
            ]
            assert d.global_concurrency_limit.limit == 1 and not d.paused
            assert d.work_pool_name is None  # runs execute in the serving process
            out = tmp_path / "pool"
            params = {"studies": str(_studies(tmp_path / "bcg.csv")), "out": str(out),
                      "result_storage": str(tmp_path / "results")}  # fmt: skip
            flow_run = run_deployment(POOL, parameters=params, timeout=0)
            run = _wait_final(flow_run.id, proc=served)
        finally:
            code = _stop(served)  # Ctrl-C
    assert run.state.type.value == "COMPLETED", log.read_text()[-3000:]
    assert code == 0, log.read_text()[-3000:]
    estimate = json.loads((out / "results.json").read_text())["model"]["estimate"]
    assert estimate == pytest.approx(_metafor_reml()["estimate"], rel=1e-6)
    assert _run(lambda c: c.read_deployment_by_name(POOL)).paused  # paused on shutdown


def test_serve_list_gives_the_four_deployments_and_their_crons(capsys):
    from flows.serve import main

    main(["--list"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["deployment", "schedule", "tags"]
    rows = {line.split()[0]: " ".join(line.split()[1:7]) for line in lines[1:]}
    assert rows == {f"{flow}/{name}": f"{cron} UTC" for name, (flow, _, cron) in EXPECTED.items()}


def test_serve_refuses_an_unknown_deployment(capsys):
    from flows.serve import main

    with pytest.raises(SystemExit) as exit_:
        main(["--only", "no-such", "--list"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no deployment no-such" in err and "pool-weekly" in err


def test_cli_serve_passes_its_options_to_flows_serve(tmp_path):
    """`spatialmeta serve --list --only --prefect-file`: the file given is the one read."""
    edited = tmp_path / "prefect.yaml"
    text = (ROOT / "deploy/prefect.yaml").read_text()
    edited.write_text(text.replace('cron: "0 7 * * 1"', 'cron: "30 8 * * 5"'))
    cmd = [sys.executable, "-m", "spatialmeta.cli", "serve", "--list", "--only", "pool-weekly",
           "--prefect-file", str(edited)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[:7] for line in lines[1:]] == [[POOL, "30", "8", "*", "*", "5", "UTC"]]


def test_cli_serve_help_has_an_example():
    from typer.testing import CliRunner

    from spatialmeta.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "Example: spatialmeta serve --only ingest-nightly" in result.output
    for option in ("--only", "--list", "--prefect-file"):
        assert option in result.output
