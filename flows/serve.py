"""Serve the deployments of ``deploy/prefect.yaml`` with their schedules, from one process.

``prefect deploy --prefect-file deploy/prefect.yaml --all`` registers those deployments
for a work pool whose workers run them. This module is the one-machine alternative: it
reads the same file, builds each deployment from its entrypoint's flow (name, cron
schedules in their time zone, parameters, tags, description, concurrency limit) and hands
them to :func:`prefect.serve`, which registers them with the Prefect API and runs every
scheduled (or manually triggered) run as a subprocess of this process until it is stopped.
Ctrl-C pauses their schedules. The file's ``work_pool`` entries are not used here.

Each deployment's parameters are validated against its flow's signature before anything is
served, so a misspelt or missing parameter fails at once, naming the deployment.

The API is ``PREFECT_API_URL`` when one is configured (a ``prefect server start`` or a
Prefect Cloud workspace); otherwise a local Prefect server is started for as long as this
process runs (``flows._server.local_api``; its database is Prefect's default,
``~/.prefect/prefect.db``, so runs and schedules are kept between restarts). Prefect's
telemetry is off unless ``DO_NOT_TRACK`` / ``PREFECT_SERVER_ANALYTICS_ENABLED`` are set.

Example
-------
    python -m flows.serve --list
    python -m flows.serve --only ingest-nightly --only pool-weekly
    spatialmeta serve            # the same, from the command line
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

__all__ = [
    "build_deployments", "default_prefect_file", "describe", "load_flow", "main",
    "read_deployments",
]  # fmt: skip


def default_prefect_file() -> Path:
    """``deploy/prefect.yaml`` of the repository holding this package (an editable install
    or a checkout), else of the current directory (the Docker image's working directory)."""
    beside = Path(__file__).resolve().parents[1] / "deploy" / "prefect.yaml"
    return beside if beside.is_file() else Path.cwd() / "deploy" / "prefect.yaml"


def read_deployments(prefect_file: Path, only: Iterable[str] = ()) -> list[dict]:
    """The ``deployments`` entries of a Prefect project file; with ``only``, those named."""
    prefect_file = Path(prefect_file)
    if not prefect_file.is_file():
        raise FileNotFoundError(f"Prefect project file '{prefect_file}' does not exist.")
    project = yaml.safe_load(prefect_file.read_text()) or {}
    specs = project.get("deployments") or []
    if not specs:
        raise ValueError(f"'{prefect_file}' has no `deployments:` entries.")
    names = [spec["name"] for spec in specs]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"no deployment {', '.join(unknown)} in '{prefect_file}'; "
                         f"its deployments: {', '.join(names)}.")  # fmt: skip
    return [spec for spec in specs if not only or spec["name"] in set(only)]


def load_flow(entrypoint: str):
    """The flow named by a repository-relative entrypoint, ``flows/ingest.py:ingest``."""
    from prefect import Flow

    path, _, name = entrypoint.partition(":")
    module_name = path.removesuffix(".py").replace("/", ".")
    obj = getattr(importlib.import_module(module_name), name, None)
    if not isinstance(obj, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} does not name a Prefect flow.")
    return obj


def _schedules(spec: dict) -> list:
    from prefect.schedules import Cron

    out = []
    for entry in spec.get("schedules") or []:
        if "cron" not in entry:
            raise ValueError(f"deployment {spec['name']!r}: only cron schedules are served; "
                             f"got {sorted(entry)}.")  # fmt: skip
        out.append(Cron(entry["cron"], timezone=entry.get("timezone"),
                        active=entry.get("active", True),
                        parameters=entry.get("parameters") or {}))  # fmt: skip
    return out


def build_deployments(prefect_file: Path | None = None, only: Iterable[str] = ()) -> list:
    """Each deployment of ``prefect_file`` (or those in ``only``) as a RunnerDeployment."""
    from prefect.exceptions import ParameterTypeError

    deployments = []
    for spec in read_deployments(prefect_file or default_prefect_file(), only):
        flow = load_flow(spec["entrypoint"])
        parameters = dict(spec.get("parameters") or {})
        try:
            flow.validate_parameters(parameters)
        except ParameterTypeError as exc:
            raise ValueError(f"deployment {spec['name']!r}: its parameters do not fit "
                             f"{spec['entrypoint']}: {exc}") from None  # fmt: skip
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                schedules=_schedules(spec),
                parameters=parameters,
                tags=spec.get("tags"),
                description=spec.get("description"),
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return deployments


def describe(deployments: Sequence) -> str:
    """One line per deployment: flow/deployment name, its cron schedules, its tags."""
    rows = [
        (f"{d.flow_name}/{d.name}",
         ", ".join(f"{s.schedule.cron} {s.schedule.timezone}" for s in d.schedules) or "-",
         ",".join(d.tags) or "-")
        for d in deployments
    ]  # fmt: skip
    rows.insert(0, ("deployment", "schedule", "tags"))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> None:
    from flows._server import quiet_telemetry

    quiet_telemetry()
    parser = argparse.ArgumentParser(
        prog="python -m flows.serve", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--prefect-file", type=Path, default=None,
                        help="The Prefect project file (default: deploy/prefect.yaml).")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="Serve only this deployment (repeatable).")  # fmt: skip
    parser.add_argument("--list", action="store_true",
                        help="Print the deployments and their schedules; serve nothing.")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        deployments = build_deployments(args.prefect_file, args.only)
    except (OSError, ValueError, ImportError, yaml.YAMLError) as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.list:
        print(describe(deployments))
        return
    from prefect import serve

    from flows._server import local_api

    with local_api():
        serve(*deployments)


if __name__ == "__main__":
    main()
