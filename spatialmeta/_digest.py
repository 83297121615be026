"""Content digests: what a stage's cache key is made of (issue 17).

A scheduled flow skips a stage whose inputs did not change. "Did not change" is judged on
content, never on a pickle of the object (pickles of xarray or torch objects differ from
run to run for the same values) and never on a modification time: files and directory
stores (Zarr) by their bytes, arrays by dtype, shape and bytes, tables by pandas' row hash,
xarray objects by their values, coordinates and attributes, torch modules by their
``state_dict``, dataclasses field by field. A type it does not know is refused, naming it,
rather than hashed by some accident of its representation.

Written here rather than taken from a library: Prefect's default cache policy hashes the
pickled inputs, joblib's hasher pickles too, and dask's ``tokenize`` falls back to
pickling and random ids for objects it does not know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["digest", "path_digest", "source_digest"]

_CHUNK = 1 << 20


def path_digest(path: str | os.PathLike) -> str:
    """The digest of a file's bytes, or of a directory's files (relative names and bytes).

    A Zarr store (or any folder) is hashed file by file in sorted order, so the same
    content written twice, or copied, gives the same digest; temporary siblings
    (``.tmp-*``) never enter.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"'{p}' does not exist: cannot take the digest of its content.")
    h = hashlib.blake2b(digest_size=20)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(_CHUNK):
                h.update(block)
        h.update(b"\1")
    return h.hexdigest()


def source_digest(*modules: str) -> str:
    """The digest of the source files of ``modules`` (a package: every ``.py`` under it).

    A stage's code version: a change to the code a stage runs reruns it.
    """
    import importlib.util

    h = hashlib.blake2b(digest_size=20)
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no module {name!r}: cannot take its code version.")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f"{name}:{f.name}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def digest(obj) -> str:
    """A hex digest of ``obj``'s content (see the module text for what counts as content)."""
    h = hashlib.blake2b(digest_size=20)
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:  # noqa: C901 - one branch per kind of content
    h.update(type(obj).__name__.encode() + b"\0")
    if obj is None or isinstance(obj, bool | int | float | str):
        h.update(json.dumps(obj).encode())
    elif isinstance(obj, Path):
        h.update(str(obj).encode())
    elif isinstance(obj, bytes):
        h.update(obj)
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, np.ndarray):
        _feed_array(h, obj)
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            _feed(h, str(key))
            _feed(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(str(len(obj)).encode())
        for item in obj:
            _feed(h, item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _feed(h, f.name)
            _feed(h, getattr(obj, f.name))
    else:
        _feed_library(h, obj)


def _feed_array(h, a: np.ndarray) -> None:
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.dtype.kind == "O":  # strings or mixed: their text, element by element
        for item in a.ravel():
            _feed(h, item)
    else:
        h.update(np.ascontiguousarray(a).tobytes())


def _feed_library(h, obj) -> None:
    """Objects of the field's libraries, by their values (imported only when present)."""
    import sys

    pd = sys.modules.get("pandas")
    xr = sys.modules.get("xarray")
    torch = sys.modules.get("torch")
    if pd is not None and isinstance(obj, pd.DataFrame | pd.Series | pd.Index):
        if hasattr(obj, "geometry") and isinstance(obj, pd.DataFrame):  # GeoDataFrame
            _feed(h, str(obj.crs))
            wkb = obj.geometry.to_wkb()
            obj = pd.DataFrame(obj).assign(**{obj.geometry.name: wkb})
        frame = obj.to_frame() if isinstance(obj, pd.Series | pd.Index) else obj
        _feed(h, [str(c) for c in frame.columns])
        _feed_array(h, pd.util.hash_pandas_object(frame, index=True).to_numpy())
    elif xr is not None and isinstance(obj, xr.DataArray | xr.Dataset):
        ds = obj.to_dataset(name=obj.name or "_") if isinstance(obj, xr.DataArray) else obj
        for name in sorted(map(str, ds.variables)):
            var = ds.variables[name]
            _feed(h, [name, list(map(str, var.dims)), dict(var.attrs)])
            _feed_array(h, np.asarray(var.values))
        _feed(h, dict(ds.attrs))
    elif torch is not None and isinstance(obj, torch.Tensor):
        _feed_array(h, obj.detach().cpu().numpy())
    elif torch is not None and isinstance(obj, torch.nn.Module):
        _feed(h, {k: v for k, v in obj.state_dict().items()})
    elif type(obj).__module__.startswith("torch_geometric"):  # a graph's Data
        _feed(h, {k: v for k, v in obj.to_dict().items()})
    elif type(obj).__module__.startswith("pandas") and hasattr(obj, "value"):  # Timestamp
        _feed(h, str(obj))
    else:
        raise TypeError(
            f"cannot take a content digest of a {type(obj).__module__}.{type(obj).__qualname__}; "
            "pass its content (arrays, tables, paths) to the stage instead."
        )
