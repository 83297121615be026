"""Atomic output: every file or store is written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "ensure_writable_dir", "expand_paths", "OutputError", "write_csv"]


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


_HOST = socket.gethostname().replace("-", "_")


def _sweep(final: Path) -> None:
    """Remove the leftovers of earlier writes of ``final`` by processes that died on this
    host before renaming (a temporary, or the previous output moved aside)."""
    pattern = re.compile(
        rf"\.(?:tmp|old)-{re.escape(_HOST)}\.(\d+)-[0-9a-f]{{8}}-{re.escape(final.name)}"
    )
    with contextlib.suppress(OSError):
        for entry in os.scandir(final.parent):
            m = pattern.fullmatch(entry.name)
            if m is None or _alive(int(m.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success move it into place.

    Works for files and for directory stores (Zarr). A failure leaves any previous
    output untouched and removes the partial one. A process killed outright (SIGKILL)
    cannot clean up: its temporary is named after its host and process id, and the next
    write of the same output removes the temporaries of processes of this host that are
    gone (:func:`_sweep`).

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
    _sweep(final)
    tag = f"{_HOST}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.with_name(f".tmp-{tag}-{final.name}")  # keeps the suffix
    try:
        yield tmp
        if tmp.is_dir():
            old = None
            if final.exists():
                old = final.with_name(f".old-{tag}-{final.name}")
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


def expand_paths(value) -> list[Path]:
    """The files named by a path, a glob pattern, or a list of either (each pattern's matches
    sorted); an existing file whose name has pattern characters is taken as it is. A
    pattern that matches nothing is refused, naming it (an empty match would pass silently).

    >>> expand_paths([]) == []
    True
    """
    items = [value] if isinstance(value, str | os.PathLike) else list(value)
    out: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text) and not Path(text).exists():
            found = sorted(Path(p) for p in glob.glob(text))
            if not found:
                raise FileNotFoundError(f"no file matches '{text}'; check the pattern.")
            out.extend(found)
        else:
            out.append(Path(item))
    return out
