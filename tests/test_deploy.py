"""The deployment folder checked against the code: deploy/prefect.yaml, compose.yaml, Dockerfile.

Docker is not run here; the Dockerfile and compose file are checked as text against the
pins in the Makefile and constraints.txt and against the Prefect project file.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DEPLOYMENT = "spatialmeta-demo-monthly"
SET_WORKDIR = "prefect.deployments.steps.set_working_directory"


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
def deployment(project) -> dict:
    by_name = {d["name"]: d for d in project["deployments"]}
    assert DEPLOYMENT in by_name, f"no deployment {DEPLOYMENT!r} in deploy/prefect.yaml"
    return by_name[DEPLOYMENT]


@pytest.fixture(scope="module")
def flow_obj(deployment):
    path, func = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, func)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


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


def test_pull_step_resolves_to_the_repository(project, deployment, monkeypatch):
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("PWD", str(ROOT))
    step = apply_values(project["pull"][0][SET_WORKDIR], {}, remove_notset=False)
    path = deployment["entrypoint"].split(":")[0]
    assert (Path(step["directory"]) / path).is_file()


def test_entrypoint_names_a_prefect_flow(deployment, flow_obj, monkeypatch):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    path, func = deployment["entrypoint"].split(":")
    source = ROOT / path
    assert source.is_file(), f"entrypoint file {path} does not exist"
    defined = {
        node.name
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert func in defined, f"{func} is not defined at top level in {path}"
    assert isinstance(flow_obj, Flow)
    # What `cd <repo> && prefect deploy` does with the entrypoint.
    monkeypatch.chdir(ROOT)
    loaded = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(loaded, Flow) and loaded.name == flow_obj.name


def test_deployment_parameters_are_flow_parameters(deployment, flow_obj):
    params = deployment["parameters"]
    assert params == {"out": "/data/outputs/demo", "episodes": 600, "seed": 0}
    signature = inspect.signature(flow_obj.fn)
    unknown = set(params) - set(signature.parameters)
    assert not unknown, f"not parameters of {flow_obj.fn.__name__}: {sorted(unknown)}"
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty and name not in params
    ]
    assert not missing, f"flow parameters without default or value: {missing}"
    # Types as well as names: Prefect's own validation against the flow's signature.
    flow_obj.validate_parameters(dict(params))


def test_schedule_is_a_valid_prefect_cron(deployment):
    from prefect.client.schemas.schedules import CronSchedule

    schedules = deployment["schedules"]
    assert len(schedules) == 1
    (schedule,) = schedules
    assert schedule["timezone"] == "UTC"
    parsed = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert parsed.cron == "0 6 1 * *"
    with pytest.raises(ValueError):  # the same class rejects a bad string
        CronSchedule(cron="0 6 32 * *", timezone="UTC")


def test_deployment_work_pool(deployment):
    assert deployment["work_pool"]["name"] == "spatialmeta-process"
    assert deployment["concurrency_limit"] == 1


def test_compose_services(compose, deployment):
    services = compose["services"]
    assert {"prefect-server", "worker", "demo"} <= set(services)

    server = services["prefect-server"]
    assert server["image"] == f"prefecthq/prefect:{_pins()['prefect']}-python3.11"
    assert _command(server)[:3] == ["prefect", "server", "start"]
    assert _option(_command(server), "--host") == "0.0.0.0"
    assert "4200:4200" in [str(p) for p in server["ports"]]
    assert all(src in compose["volumes"] for src in _mounts(server).values()), "DB volume"

    worker = services["worker"]
    context = (DEPLOY / worker["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / worker["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    tokens = _command(worker)
    assert tokens[:3] == ["prefect", "worker", "start"]
    assert _option(tokens, "--pool") == deployment["work_pool"]["name"]
    assert _option(tokens, "--type") == "process"
    api = _env(worker)["PREFECT_API_URL"]
    assert api == "http://prefect-server:4200/api"
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    mounts = _mounts(worker)
    assert mounts.get("/data") in compose["volumes"]
    out = PurePosixPath(deployment["parameters"]["out"])
    assert out.is_relative_to("/data"), "deployment output must land in the worker's volume"

    demo = services["demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["build"] == worker["build"]
    tokens = _command(demo)
    assert tokens[:2] == ["spatialmeta", "demo"]
    assert PurePosixPath(_option(tokens, "--out")).is_relative_to("/data")
    assert _mounts(demo).get("/data") == mounts["/data"]


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

    (cmd,) = [args for instr, args in instructions if instr == "CMD"]
    assert json.loads(cmd) == ["spatialmeta", "demo", "--out", "/data/outputs/demo"]
