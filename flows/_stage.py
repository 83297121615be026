"""The wiring every flow shares: a stage function as a Prefect task keyed on content.

- :class:`ContentKey`, the cache policy: a stage's key is the digest of its name, its code
  (the source of the modules it runs, :func:`spatialmeta._digest.source_digest`), the
  content of its input files and stores, and its other arguments by value
  (:func:`spatialmeta._digest.digest`), never a pickle of an xarray or torch object.
  A stage may narrow what is hashed (``key``): the training stages hash only what training
  sees, so a month appended after the test start does not retrain.
- :func:`stage`: the task. Results persist (to Prefect's local storage, or to the
  ``result_storage`` a flow names), so a re-run finds every finished stage and logs it
  ``Cached``; a cached stage whose output files are gone runs again.
- On a ``DaskTaskRunner`` the stage runs inside a dask worker with a client to the same
  cluster (``prefect_dask.get_dask_client``): dask collections inside it are computed there,
  never on a second, hidden scheduler.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy

from spatialmeta.jobs.keys import missing_outputs, stage_key, training_key

__all__ = ["ContentKey", "Stages", "run_stage", "stage", "storage", "task_runner"]

TRAINING_TAGS = ("training", "gpu")  # a "gpu" tag concurrency limit keeps one per GPU
DASK_ADDRESS_ENV = "SPATIALMETA_DASK_ADDRESS"


def task_runner():
    """The flows' task runner: a DaskTaskRunner on the scheduler named by
    ``SPATIALMETA_DASK_ADDRESS`` (``tcp://host:8786``; deploy/compose.yaml sets it for the
    worker), read when the flow's module is imported, i.e. in each deployed run's process;
    unset, None (Prefect's default, threads in the flow run's process).
    ``run_pipeline(dask=...)`` overrides it for one call."""
    address = os.environ.get(DASK_ADDRESS_ENV, "").strip()
    if not address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


class ContentKey(CachePolicy):
    """Cache key from content: the stage, its code, its input files' bytes, its arguments.

    ``files``: the arguments that name input files, folders or stores (a path or a list of
    paths; hashed by content). ``ignore``: arguments that do not change the result
    (``progress``). ``key``: a function of the bound arguments giving what to hash
    instead of them (after ``files`` and ``ignore``).
    """

    def __init__(
        self,
        name: str,
        code: Iterable[str] = (),
        files: Iterable[str] = (),
        ignore: Iterable[str] = ("progress",),
        key: Callable[[dict], dict] | None = None,
    ):
        super().__init__()
        self.name, self.code = name, tuple(code)
        self.files, self.ignore, self.key = set(files), set(ignore), key

    def compute_key(self, task_ctx, inputs: dict, flow_parameters: dict, **kwargs) -> str:
        return stage_key(self.name, inputs, code=self.code, files=self.files,
                         ignore=self.ignore, narrow=self.key)  # fmt: skip


def storage(result_storage: str | None) -> str | None:
    """A flow's ``result_storage`` folder as a saved LocalFileSystem block (its slug), or a
    block slug as given ("local-file-system/results"). None: Prefect's default
    (``PREFECT_LOCAL_STORAGE_PATH``, or ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``)."""
    if result_storage is None or result_storage.startswith("local-file-system/"):
        return result_storage
    import hashlib

    from prefect.filesystems import LocalFileSystem

    base = str(Path(result_storage).expanduser().resolve())
    Path(base).mkdir(parents=True, exist_ok=True)
    name = "spatialmeta-" + hashlib.blake2b(base.encode(), digest_size=6).hexdigest()
    if name not in _SAVED:
        LocalFileSystem(basepath=base).save(name, overwrite=True)
        _SAVED.add(name)
    return f"local-file-system/{name}"


_SAVED: set[str] = set()


def stage(
    fn: Callable,
    *,
    code: Iterable[str] = (),
    files: Iterable[str] = (),
    ignore: Iterable[str] = ("progress",),
    key: Callable[[dict], dict] | None = None,
    retries: int = 0,
    tags: Iterable[str] = (),
    result_storage: str | None = None,
    refresh: bool = False,
    max_age: timedelta | None = None,
):
    """``fn`` as a Prefect task named after it, cached on content (see :class:`ContentKey`).

    ``refresh`` recomputes and re-caches; ``max_age`` lets a cached result expire.
    """
    name = fn.__name__
    module = fn.__module__
    policy = ContentKey(f"{module}.{name}", (module, *code), files, ignore, key)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return _on_cluster(fn, args, kwargs)

    return task(
        run,
        name=name,
        cache_policy=policy,
        persist_result=True,
        result_storage=storage(result_storage),
        refresh_cache=refresh or None,
        cache_expiration=max_age,
        retries=retries,
        tags=list(tags),
    )


def _on_cluster(fn, args, kwargs):
    """Call ``fn`` with one BLAS thread (as in a dask worker, so that a stage gives the same
    digits on either runner); inside a dask worker, with a client to that cluster."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _call(fn, args, kwargs)


def _call(fn, args, kwargs):
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        in_worker = False
    else:
        in_worker = True
    if not in_worker:  # outside the except clause: fn's errors carry no "No worker found"
        return fn(*args, **kwargs)
    import torch
    from prefect_dask import get_dask_client

    torch.set_num_threads(1)  # one thread per worker, as the local run
    with get_dask_client():
        return fn(*args, **kwargs)


def run_stage(stage_task, *args, **kwargs):
    """Submit a stage task to the flow's task runner and wait for it; a cached result whose
    output files are gone is computed again."""
    future = stage_task.submit(*args, **kwargs)
    future.wait()
    state = future.state
    result = state.result()
    if state.name == "Cached" and missing_outputs(result):
        result = stage_task.with_options(refresh_cache=True).submit(*args, **kwargs).result()
    return result


_RASTER = ("spatialmeta.raster",)
_LEARN = ("spatialmeta.learn", "spatialmeta.tasks")
_REPORT = (
    "spatialmeta.learn",
    "spatialmeta.viz",
    "spatialmeta.meta_analysis",
    "spatialmeta.report",
)

# Per stage function: the input files, what is not hashed, the code it runs, retries, tags.
OPTIONS: dict[str, dict] = {
    "make_data": {"code": ("spatialmeta.data",)},
    "aggregate_regions": {"files": ("raster", "regions_path"), "retries": 1, "code": _RASTER},
    "aggregate_job": {
        "files": ("rasters", "regions"),
        "ignore": (
            "progress",
            "weights",
            "scheduler_address",
            "workers",
            "memory_limit",
            "local_threads",
        ),
        "retries": 1,
        "code": ("spatialmeta.jobs.aggregate", *_RASTER),
    },  # fmt: skip
    "read_series": {"files": ("path",)},
    "build_tasks": {"files": ("regions",), "code": ("spatialmeta.regions", "spatialmeta.tasks")},
    "global_train": {"key": training_key, "tags": TRAINING_TAGS, "code": _LEARN},
    "meta_train": {"key": training_key, "tags": TRAINING_TAGS, "code": _LEARN},
    "forecast_all": {"code": ("spatialmeta.jobs.stages", *_LEARN)},
    "evaluate": {"code": _LEARN},
    "shots_curve": {"code": _LEARN},
    "publish": {"code": ("spatialmeta.jobs.demo", *_REPORT)},
    "publish_report": {"code": _REPORT},
    "pool_job": {"files": ("studies",), "code": ("spatialmeta.jobs", "spatialmeta.meta_analysis")},
    "screen_rank_job": {
        "files": ("data", "labels"),
        "code": ("spatialmeta.jobs.screen", "spatialmeta.screening", "spatialmeta.tasks"),
    },
}


class Stages:
    """The ``stage`` argument of the jobs: each stage function as its content-keyed task.

    ``retrain`` recomputes the training stages (and re-caches them); ``max_model_age``
    lets a trained model expire, so a scheduled run retrains once it is that old.
    """

    def __init__(self, result_storage: str | None = None, retrain: bool = False,
                 max_model_age: timedelta | None = None):  # fmt: skip
        self.result_storage, self.retrain, self.max_model_age = (
            result_storage,
            retrain,
            max_model_age,
        )

    def __call__(self, fn: Callable) -> Callable:
        opts = dict(OPTIONS.get(fn.__name__, {}))
        if opts.get("tags") == TRAINING_TAGS:
            opts.update(refresh=self.retrain, max_age=self.max_model_age)
        task_ = stage(fn, result_storage=self.result_storage, **opts)
        return functools.partial(run_stage, task_)
