"""Parameter checks a flow makes before any work: files that must exist, values in range.

Prefect validates each flow's typed parameters (pydantic, before the run starts); these
checks add what a type cannot say, and name the parameter.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from spatialmeta.jobs.keys import expand_paths

__all__ = ["existing", "fraction_or_file", "max_age"]


def existing(name: str, value) -> None:
    """Every path (or glob) in ``value`` names something that exists."""
    items = [value] if isinstance(value, str) else list(value or [])
    if not items:
        raise ValueError(f"parameter `{name}` is empty; give at least one path.")
    for item in items:
        try:
            found = [f for f in expand_paths(item) if Path(f).exists()]
        except FileNotFoundError:
            found = []
        if not found:
            raise ValueError(f"parameter `{name}`: '{item}' does not exist.")


def fraction_or_file(name: str, value: str) -> None:
    """A hold-out: a fraction in (0, 1) or an existing file of region ids."""
    try:
        fraction = float(value)
    except ValueError:
        existing(name, value)
        return
    if not 0 < fraction < 1:
        raise ValueError(f"parameter `{name}` must be a fraction in (0, 1) or a file; got {value}.")


def max_age(days: float | None) -> timedelta | None:
    """``max_model_age_days`` as a timedelta (None: a trained model never expires)."""
    if days is None:
        return None
    if days <= 0:
        raise ValueError(f"parameter `max_model_age_days` must be positive; got {days}.")
    return timedelta(days=days)
