"""What a stage's cache key is made of, and whether a finished stage's outputs still exist.

The flows (``flows/_stage.py``) run each stage function of the jobs as a Prefect task whose
cache key is :func:`stage_key`: the digest of the stage's name, its code (the source of the
modules it runs), the content of its input files and stores, and its other arguments by
value (:mod:`spatialmeta._digest`), never a pickle of an xarray or torch object and never a
modification time. Kept here, below Prefect, so that the key is plain, testable code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import fields, is_dataclass
from pathlib import Path

import spatialmeta
from spatialmeta._digest import digest, path_digest, source_digest

__all__ = ["expand_paths", "missing_outputs", "stage_key", "training_key"]

_SOURCES: dict[tuple[str, ...], str] = {}


def stage_key(
    stage: str,
    args: dict,
    *,
    code: Iterable[str] = (),
    files: Iterable[str] = (),
    ignore: Iterable[str] = ("progress",),
    narrow: Callable[[dict], dict] | None = None,
) -> str:
    """The digest of a stage call: ``stage`` (its name), the source of the modules ``code``,
    spatialmeta's version and the bound arguments ``args``; the arguments named in
    ``files`` are paths (or lists or glob patterns of paths) hashed by content (other
    values, a table read already, by value), those in
    ``ignore`` do not enter, and ``narrow`` maps the arguments to what the result depends on.
    """
    files, ignore = set(files), set(ignore)
    hashed = {}
    for name, value in args.items():
        if name in ignore:
            continue
        if name in files and isinstance(value, str | os.PathLike | list | tuple):
            value = [path_digest(p) for p in expand_paths(value)]
        hashed[name] = value
    if narrow is not None:
        hashed = narrow(hashed)
    code = tuple(code)
    if code not in _SOURCES:  # the code of a running process does not change
        _SOURCES[code] = source_digest(*code) if code else ""
    return digest({"stage": stage, "code": _SOURCES[code], "version": spatialmeta.__version__,
                   "args": hashed})  # fmt: skip


def expand_paths(value) -> list[str]:
    """The files a path, a list of them, or glob patterns name (:func:`spatialmeta._io.expand_paths`),
    as text: a pattern that matches nothing is refused, as an empty match would give the
    same key as an empty input."""
    from spatialmeta._io import expand_paths as files

    return [str(f) for f in files(value)]


def training_key(args: dict) -> dict:
    """What a training stage's result depends on: what training sees of the task set
    (:func:`~spatialmeta.jobs.stages.training_view`), the settings and the start (the
    global network's weights). Months appended after the test start leave it unchanged."""
    from spatialmeta.jobs.stages import training_view

    args = dict(args)
    args["data"] = training_view(args.pop("tasks"), args.pop("split"))
    if args.get("init") is not None:
        args["init"] = args["init"].learner
    return args


def missing_outputs(result, depth: int = 3) -> list[str]:
    """The output files a stage's result names (paths in it, a report's ``outputs``) that
    are not, or no longer, on disk: a cached stage with missing outputs runs again."""
    found: list[str] = []

    def walk(obj, level):
        if level > depth:
            return
        if isinstance(obj, Path):
            found.append(str(obj))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, level + 1)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v, level + 1)
        elif is_dataclass(obj) and not isinstance(obj, type):
            if isinstance(getattr(obj, "outputs", None), dict):  # a report: name -> path
                found.extend(str(v) for v in obj.outputs.values())
            for f in fields(obj):
                if f.name != "outputs":
                    walk(getattr(obj, f.name), level + 1)

    walk(result, 0)
    return [p for p in found if not Path(p).exists()]
