"""The deployment folder checked against the code: deploy/prefect.yaml, compose.yaml, Dockerfile.

Docker is not run here; the Dockerfile and compose file are checked as text against the
pins in the Makefile and constraints.txt, against the Prefect project file and against the
flows: every deployment's entrypoint names a flow, its parameters bind to the flow's
signature, its cron is the issue's; every compose service's image is built from
deploy/Dockerfile or is the pinned Prefect image; the dask workers and the Prefect worker
name the services they talk to. The dask commands of compose.yaml are run once on loopback.
(tests/flows/test_deploy_server.py applies the project file to a real Prefect server.)
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SET_WORKDIR = "prefect.deployments.steps.set_working_directory"
POOL = "spatialmeta-process"
# deployment -> (entrypoint, cron, the first three fire times after 2026-01-01 00:00 UTC)
EXPECTED = {
    "ingest-nightly": ("flows/ingest.py:ingest", "0 2 * * *",
                       ["2026-01-01 02:00", "2026-01-02 02:00", "2026-01-03 02:00"]),
    "forecast-monthly": ("flows/forecast.py:forecast", "0 6 1 * *",
                         ["2026-01-01 06:00", "2026-02-01 06:00", "2026-03-01 06:00"]),
    "pool-weekly": ("flows/pool.py:pool_studies", "0 7 * * 1",  # Mondays
                    ["2026-01-05 07:00", "2026-01-12 07:00", "2026-01-19 07:00"]),
    "spatialmeta-demo-monthly": ("flows/pipeline.py:demo_pipeline", "0 6 1 * *",
                                 ["2026-01-01 06:00", "2026-02-01 06:00", "2026-03-01 06:00"]),
}  # fmt: skip
TRAINS = {"forecast-monthly", "spatialmeta-demo-monthly"}  # flows with training stages
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _makefile_torch_pin() -> str:
    match = re.search(r"^TORCH\s*:?=\s*torch==(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile has no TORCH := torch==<version> line"
    return match.group(1)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _option(tokens: list[str], name: str) -> str:
    assert name in tokens, f"{name} missing from {tokens}"
    return tokens[tokens.index(name) + 1]


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source for short-syntax volume entries."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        mounts[target] = source
    return mounts


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def deployments(project) -> dict[str, dict]:
    return {d["name"]: d for d in project["deployments"]}


def _flow(entrypoint: str):
    path, func = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, func)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


by_name = pytest.mark.parametrize("name", sorted(EXPECTED))


def test_project_file_top_level(project):
    assert project["name"] == "spatialmeta"
    assert project["prefect-version"] == _pins()["prefect"]
    assert project["build"] is None and project["push"] is None
    steps = project["pull"]
    assert isinstance(steps, list) and len(steps) == 1
    assert list(steps[0]) == [SET_WORKDIR]
    assert isinstance(steps[0][SET_WORKDIR]["directory"], str)


def test_project_file_fits_prefects_schema(project):
    """Prefect ignores unknown keys, so a misspelt one would vanish silently: check names."""
    models = pytest.importorskip("prefect.cli.deploy._models")
    model = models.PrefectYamlModel.model_validate(project)
    assert [d.name for d in model.deployments] == [d["name"] for d in project["deployments"]]
    top = {f.alias or name for name, f in models.PrefectYamlModel.model_fields.items()}
    assert set(project) <= top, set(project) - top
    for dep in project["deployments"]:
        assert set(dep) <= set(models.DeploymentConfig.model_fields), set(dep) - set(
            models.DeploymentConfig.model_fields
        )
        assert "schedule" not in dep, "use `schedules:` (`schedule:` is deprecated)"
        assert set(dep["work_pool"]) <= set(models.WorkPoolConfig.model_fields)
        for schedule in dep["schedules"]:
            models.RawScheduleConfig.model_validate(schedule)  # extra="forbid"


def test_the_issues_deployments(deployments):
    """Nightly ingest, monthly forecast on the 1st, weekly pooling report, and the demo."""
    assert set(deployments) == set(EXPECTED)
    for name, (entrypoint, cron, _) in EXPECTED.items():
        dep = deployments[name]
        assert dep["entrypoint"] == entrypoint, name
        assert [s["cron"] for s in dep["schedules"]] == [cron], name
        assert all(s["timezone"] == "UTC" and s["active"] for s in dep["schedules"]), name
        assert dep["work_pool"]["name"] == POOL, name
        assert dep["concurrency_limit"] == 1, name
        assert "spatialmeta" in dep["tags"] and dep["description"].strip(), name


@by_name
def test_pull_step_resolves_to_the_repository(project, deployments, name, monkeypatch):
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("PWD", str(ROOT))
    step = apply_values(project["pull"][0][SET_WORKDIR], {}, remove_notset=False)
    path = deployments[name]["entrypoint"].split(":")[0]
    assert (Path(step["directory"]) / path).is_file()


@by_name
def test_entrypoint_names_a_prefect_flow(deployments, name, monkeypatch):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    entrypoint = deployments[name]["entrypoint"]
    path, func = entrypoint.split(":")
    source = ROOT / path
    assert source.is_file(), f"entrypoint file {path} does not exist"
    defined = {
        node.name
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert func in defined, f"{func} is not defined at top level in {path}"
    flow_obj = _flow(entrypoint)
    assert isinstance(flow_obj, Flow)
    # What `cd <repo> && prefect deploy` does with the entrypoint.
    monkeypatch.chdir(ROOT)
    loaded = load_flow_from_entrypoint(entrypoint)
    assert isinstance(loaded, Flow) and loaded.name == flow_obj.name


@by_name
def test_deployment_parameters_bind_to_the_flow(deployments, name):
    params = deployments[name]["parameters"]
    flow_obj = _flow(deployments[name]["entrypoint"])
    signature = inspect.signature(flow_obj.fn)
    unknown = set(params) - set(signature.parameters)
    assert not unknown, f"{name}: not parameters of {flow_obj.fn.__name__}: {sorted(unknown)}"
    signature.bind(**params)  # every parameter without a default is given
    # Types as well as names: Prefect's own validation against the flow's signature.
    flow_obj.validate_parameters(dict(params))
    # Paths are the examples users edit: all under the /data volume of compose.yaml.
    paths = {k: v for k, v in params.items() if k in {"rasters", "regions", "series", "studies",
                                                       "out", "result_storage"}}  # fmt: skip
    assert "out" in paths and "result_storage" in paths, name
    for key, value in paths.items():
        for item in value if isinstance(value, list) else [value]:
            assert PurePosixPath(item).is_relative_to("/data"), (name, key, item)


def test_a_misspelt_parameter_is_caught():
    """The check above fails on a wrong name or a missing required parameter."""
    signature = inspect.signature(_flow(EXPECTED["pool-weekly"][0]).fn)
    with pytest.raises(TypeError):
        signature.bind(studies="/data/s.csv", outt="/data/o")
    with pytest.raises(TypeError):
        signature.bind(out="/data/o")  # studies is required


@by_name
def test_cron_is_valid_and_fires_when_the_issue_says(deployments, name):
    from cronsim import CronSim
    from prefect.client.schemas.schedules import CronSchedule

    (schedule,) = deployments[name]["schedules"]
    parsed = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert (parsed.cron, parsed.timezone) == (EXPECTED[name][1], "UTC")
    fires = CronSim(parsed.cron, datetime(2026, 1, 1, tzinfo=UTC))
    assert [next(fires).strftime("%Y-%m-%d %H:%M") for _ in range(3)] == EXPECTED[name][2]


def test_a_bad_cron_is_rejected():
    from prefect.client.schemas.schedules import CronSchedule

    with pytest.raises(ValueError):
        CronSchedule(cron="0 6 32 * *", timezone="UTC")


def test_training_deployments_carry_the_training_tags(deployments):
    from flows._stage import TRAINING_TAGS

    for name, dep in deployments.items():
        assert (set(TRAINING_TAGS) <= set(dep["tags"])) == (name in TRAINS), name


def _uses_project_image(service: dict) -> bool:
    return service.get("image") == "spatialmeta:local"


def test_compose_images_are_built_here_or_pinned(compose):
    services = compose["services"]
    assert {"prefect-server", "worker", "dask-scheduler", "dask-worker", "demo"} <= set(services)
    python = re.fullmatch(r"python:(\d+\.\d+)-slim", _dockerfile_instructions()[0][1]).group(1)
    for name, service in services.items():
        if "build" in service:
            assert _uses_project_image(service), (
                f"{name} builds but is not tagged spatialmeta:local"
            )
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT, name
            dockerfile = (context / service["build"]["dockerfile"]).resolve()
            assert dockerfile == DEPLOY / "Dockerfile" and dockerfile.is_file(), name
        else:  # an image from a registry: the Prefect server, at the pinned version
            assert service["image"] == f"prefecthq/prefect:{_pins()['prefect']}-python{python}"
        if _uses_project_image(service):
            assert "build" in service, f"{name}: spatialmeta:local is built, never pulled"


def test_compose_telemetry_is_off_everywhere(compose):
    for name, service in compose["services"].items():
        env = _env(service)
        assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, name


def test_compose_services(compose, deployments):
    services = compose["services"]
    server = services["prefect-server"]
    assert _command(server)[:3] == ["prefect", "server", "start"]
    assert _option(_command(server), "--host") == "0.0.0.0"
    assert "4200:4200" in [str(p) for p in server["ports"]]
    assert all(src in compose["volumes"] for src in _mounts(server).values()), "DB volume"

    worker = services["worker"]
    tokens = _command(worker)
    assert tokens[:3] == ["prefect", "worker", "start"]
    assert _option(tokens, "--pool") == POOL
    assert {d["work_pool"]["name"] for d in deployments.values()} == {POOL}
    assert _option(tokens, "--type") == "process"
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    mounts = _mounts(worker)
    assert mounts.get("/data") in compose["volumes"]

    demo = services["demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["build"] == worker["build"]
    tokens = _command(demo)
    assert tokens[:2] == ["spatialmeta", "demo"]
    assert PurePosixPath(_option(tokens, "--out")).is_relative_to("/data")
    assert _mounts(demo).get("/data") == mounts["/data"]


def test_compose_clients_name_the_server_service(compose):
    """Every PREFECT_API_URL is the prefect-server service, on the port it publishes."""
    services = compose["services"]
    port = str(services["prefect-server"]["ports"][0]).split(":")[-1]
    users = {n for n, s in services.items() if "PREFECT_API_URL" in _env(s)}
    assert {"worker", "dask-worker"} <= users
    for name in users:
        url = urlsplit(_env(services[name])["PREFECT_API_URL"])
        assert (url.hostname, str(url.port), url.path) == ("prefect-server", port, "/api"), name
        assert "prefect-server" in services[name]["depends_on"], name


def test_compose_dask_workers_point_at_the_scheduler(compose):
    services = compose["services"]
    scheduler = services["dask-scheduler"]
    tokens = _command(scheduler)
    assert tokens[:2] == ["dask", "scheduler"]
    port = _option(tokens, "--port")
    dashboard = _option(tokens, "--dashboard-address").rpartition(":")[2]
    assert (port, dashboard) == ("8786", "8787")
    assert {f"{port}:{port}", f"{dashboard}:{dashboard}"} <= {str(p) for p in scheduler["ports"]}

    dask_worker = services["dask-worker"]
    tokens = _command(dask_worker)
    assert tokens[:2] == ["dask", "worker"]
    address = urlsplit(tokens[2])
    assert (address.scheme, address.hostname, str(address.port)) == ("tcp", "dask-scheduler", port)
    assert _option(tokens, "--nthreads") == "1"
    assert dask_worker["deploy"]["replicas"] == 2
    assert "dask-scheduler" in dask_worker["depends_on"]
    # the stages' cached results and outputs: the same volume as the Prefect worker's
    assert _mounts(dask_worker)["/data"] == _mounts(services["worker"])["/data"]
    # the flows' task runner is told the same scheduler
    assert _env(services["worker"])["SPATIALMETA_DASK_ADDRESS"] == tokens[2]
    assert "dask-scheduler" in services["worker"]["depends_on"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compose_dask_commands_run(compose, tmp_path):
    """compose.yaml's scheduler and worker commands, on loopback ports: the two one-thread
    workers join the scheduler (checks the flags against the pinned distributed)."""
    from distributed import Client

    services = compose["services"]
    port, dashboard = _free_port(), _free_port()
    dask = Path(sys.executable).with_name("dask")
    assert dask.is_file(), f"no `dask` command beside {sys.executable} (dask[distributed])"
    sched = _command(services["dask-scheduler"])
    sched[sched.index("--port") + 1] = str(port)
    sched[sched.index("--dashboard-address") + 1] = f"127.0.0.1:{dashboard}"
    worker = [t.replace("dask-scheduler:8786", f"127.0.0.1:{port}")
              for t in _command(services["dask-worker"])]  # fmt: skip
    assert worker[2] == f"tcp://127.0.0.1:{port}"
    replicas = services["dask-worker"]["deploy"]["replicas"]
    log = tmp_path / "dask.log"
    procs = []
    with log.open("w") as sink:
        try:
            for cmd in [sched] + [worker] * replicas:
                procs.append(subprocess.Popen([str(dask), *cmd[1:]], cwd=tmp_path, stdout=sink,
                                              stderr=subprocess.STDOUT))  # fmt: skip
            with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
                client.wait_for_workers(replicas, timeout=60)
                nthreads = client.nthreads()
                assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        finally:
            for proc in reversed(procs):
                proc.terminate()
            deadline = time.monotonic() + 20
            for proc in procs:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert sorted(nthreads.values()) == [1, 1], log.read_text()[-2000:]


def test_dockerfile_pins_torch_before_the_package():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    torch_pin = _pins()["torch"]
    assert torch_pin == _makefile_torch_pin()
    runs = [(i, args) for i, (instr, args) in enumerate(instructions) if instr == "RUN"]

    torch_runs = [i for i, args in runs if re.search(r"\btorch==", args)]
    assert len(torch_runs) == 1
    torch_i = torch_runs[0]
    torch_args = instructions[torch_i][1].split()
    assert f"torch=={torch_pin}" in torch_args
    assert _option(torch_args, "--index-url") == "https://download.pytorch.org/whl/cpu"

    pkg_runs = [i for i, args in runs if '".[grib]"' in args]
    assert len(pkg_runs) == 1
    pkg_i = pkg_runs[0]
    pkg_args = shlex.split(instructions[pkg_i][1])
    assert _option(pkg_args, "-c") == "constraints.txt"
    assert torch_i < pkg_i, "torch must be installed (pinned, CPU) before the package"

    copies = [i for i, (instr, args) in enumerate(instructions) if instr == "COPY"]
    assert copies and min(copies) < pkg_i, "the repository must be copied before installing"

    users = [(i, args) for i, (instr, args) in enumerate(instructions) if instr == "USER"]
    assert users, "image must switch to a non-root user"
    last_user_i, last_user = users[-1]
    assert last_user.split(":")[0] not in {"root", "0"}
    assert last_user_i > max(i for i, _ in runs), "USER must come after the installs"

    # the dask scheduler's dashboard (compose.yaml) needs bokeh: pinned, under the constraints
    (bokeh,) = [shlex.split(args) for _, args in runs if "bokeh" in args]
    assert _option(bokeh, "-c") == "constraints.txt"
    assert [t for t in bokeh if "bokeh" in t] == [bokeh[-1]]
    assert re.fullmatch(r"bokeh==\d+\.\d+\.\d+", bokeh[-1]), bokeh

    (cmd,) = [args for instr, args in instructions if instr == "CMD"]
    assert json.loads(cmd) == ["spatialmeta", "demo", "--out", "/data/outputs/demo"]
