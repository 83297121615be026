"""A temporary local Prefect API for a run from the command line, dying with its parent.

Prefect starts a temporary server of its own when no ``PREFECT_API_URL`` is set; killed
with SIGKILL, the run leaves that server (uvicorn) behind, holding its port. Here the run
starts the same server itself, as a child that the kernel signals when its parent dies
(``PR_SET_PDEATHSIG``, Linux), and points Prefect at it. Elsewhere, or with an API already
configured, nothing is started. Telemetry is off: scheduled machines are often offline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

__all__ = ["local_api", "quiet_telemetry"]


def quiet_telemetry() -> None:
    """Prefect's telemetry off unless the caller set it (this process and its children)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_api(timeout: float = 120.0) -> Iterator[str | None]:
    """Run the body against a temporary local Prefect API (its URL), or the configured one."""
    quiet_telemetry()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        yield PREFECT_API_URL.value()
        return
    import prefect

    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
           "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(proc, url, timeout)
        os.environ["PREFECT_API_URL"] = url  # for dask workers and other children
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        _drain()  # while the server is up: otherwise the exit waits a minute on retries
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drain(timeout: float = 10.0) -> None:
    """Send the logs and events still queued in this process to the server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float) -> None:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the local Prefect server exited with code {proc.returncode}.")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the local Prefect server did not answer at {url} in {timeout:.0f} s.")
