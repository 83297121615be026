"""A pipeline run in its own process for the kill test (tests/flows/test_kill.py).

``python tests/flows/_killable.py PARAMS.json [--pause aggregate|train]``: runs
``flows.pipeline.pipeline`` with the parameters in PARAMS.json against its own temporary
local Prefect server (``flows._server.local_api``, as ``python -m flows.pipeline`` does),
prints ``STATES {json}`` (task name → final state) when done. With ``--pause``, the run
stops for good at a chosen moment and prints ``PAUSED`` so that the test can SIGKILL it
there: ``aggregate``, right after the region series were written under their temporary
name and before the rename; ``train``, the same for the meta-learner's checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _pause_after(cls_or_mod, name: str, hit) -> None:
    original = getattr(cls_or_mod, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        if hit(args, kwargs):
            print("PAUSED", flush=True)
            time.sleep(600)
        return out

    setattr(cls_or_mod, name, wrapped)


def main() -> None:
    params = json.loads(Path(sys.argv[1]).read_text())
    pause = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--pause" else None
    if pause == "aggregate":
        import xarray as xr

        _pause_after(xr.Dataset, "to_zarr", lambda a, k: str(a[1]).endswith("series.zarr")
                     and ".tmp-" in str(a[1]))  # fmt: skip
    elif pause == "train":
        import torch

        def meta_checkpoint(args, kwargs):
            path = Path(str(args[1]))
            return path.name.endswith("model.pt") and path.parent.name == "checkpoint"

        _pause_after(torch, "save", meta_checkpoint)

    from flows._server import local_api
    from flows.pipeline import pipeline
    from tests.flows.conftest import task_states

    with local_api():
        state = pipeline(**params, return_state=True)
        print("STATES " + json.dumps(task_states(state.state_details.flow_run_id)), flush=True)
        sys.exit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    main()
