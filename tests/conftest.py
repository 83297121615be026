"""Shared fixtures: small synthetic data written once per session, the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share 2 cores: one thread each (inherited by notebook kernels and
    # subprocesses), else torch's spinning intra-op threads slow both workers several-fold.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test with a reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared sample data not found at {p} (present in CI, absent in a bare clone)")
    return p


SMALL = dict(bbox=(-10.0, 40.0, 14.0, 60.0), resolution=1.0, years=12, n_regions=24, seed=3)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    from spatialmeta.data import write_default_data

    return write_default_data(tmp_path_factory.mktemp("small"), **SMALL)


def pytest_configure(config):
    import logging

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)

    # Prefect's temporary server logs "Stopping ..." at interpreter exit, after pytest has
    # closed the captured streams; don't print a logging traceback for that.
    logging.raiseExceptions = False
