"""Shared fixtures: small synthetic data written once per session, the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

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

    # Prefect's temporary server logs "Stopping ..." at interpreter exit, after pytest has
    # closed the captured streams; don't print a logging traceback for that.
    logging.raiseExceptions = False
