"""spatialmeta: geospatial meta-learning and meta-analysis.

Tile and aggregate climate rasters, meta-train graph networks over region tasks, and pool
region results and studies alike with one meta-analysis engine. Importable without Prefect.
Subpackages load on first use, so ``import spatialmeta`` (and the CLI's ``--help``) is quick.
"""

from __future__ import annotations

import importlib

from spatialmeta._io import OutputError, atomic_path, ensure_writable_dir, write_csv

__version__ = "0.1.0"

_SUBMODULES = ("data", "learn", "meta_analysis", "raster", "regions", "report", "tasks", "viz")

__all__ = [
    *_SUBMODULES,
    "OutputError",
    "atomic_path",
    "ensure_writable_dir",
    "write_csv",
    "__version__",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"spatialmeta.{name}")
    raise AttributeError(f"module 'spatialmeta' has no attribute {name!r}")
