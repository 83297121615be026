"""Atomic output: every file or store is written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "ensure_writable_dir", "OutputError", "write_csv"]


class OutputError(OSError):
    """An output location cannot be created or written."""


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Raises
    ------
    OutputError
        With a one-line message naming the path and the reason.
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(
            f"cannot write outputs to '{out}': {reason}. Choose a writable folder for `out`."
        ) from None
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success move it into place.

    Works for files and for directory stores (Zarr). A failure leaves any previous
    output untouched and removes the partial one.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")  # keeps the suffix
    try:
        yield tmp
        if tmp.is_dir():
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a DataFrame to CSV atomically (no index)."""
    final = Path(path)
    with atomic_path(final) as tmp:
        frame.to_csv(tmp, index=False)
    return final
