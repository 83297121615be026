"""The estimates protocol: what every task set answers, and all that pooling reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["Estimates", "HasEstimates"]


@dataclass(frozen=True)
class Estimates:
    """Effect sizes with their sampling variances, one per task.

    Parameters
    ----------
    yi : numpy.ndarray
        Effect estimates, shape ``(k,)``.
    vi : numpy.ndarray
        Sampling variances, shape ``(k,)``; strictly positive where ``yi`` is finite.
    labels : numpy.ndarray, optional
        A label per task (study name or region id), shape ``(k,)``.
    mods : pandas.DataFrame, optional
        Moderators, one row per task.
    measure : str
        What the effect is (``"SMD"``, ``"log MSE ratio"``, ...), for reports.

    Examples
    --------
    >>> e = Estimates(yi=np.array([0.1, 0.3]), vi=np.array([0.01, 0.02]))
    >>> e.k
    2
    """

    yi: np.ndarray
    vi: np.ndarray
    labels: np.ndarray | None = None
    mods: pd.DataFrame | None = None
    measure: str = "effect"

    def __post_init__(self) -> None:
        yi = np.asarray(self.yi, dtype=float)
        vi = np.asarray(self.vi, dtype=float)
        if yi.shape != vi.shape:
            raise ValueError(
                f"`yi` has shape {yi.shape} but `vi` has shape {vi.shape}; "
                "give one sampling variance per effect."
            )
        object.__setattr__(self, "yi", yi)
        object.__setattr__(self, "vi", vi)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != yi.shape:
                raise ValueError(
                    f"`labels` has shape {labels.shape} but `yi` has shape {yi.shape}."
                )
            object.__setattr__(self, "labels", labels)
        if self.mods is not None and len(self.mods) != yi.shape[-1]:
            raise ValueError(
                f"`mods` has {len(self.mods)} rows but there are {yi.shape[-1]} effects."
            )

    @property
    def k(self) -> int:
        """Number of tasks."""
        return int(self.yi.shape[-1])


@runtime_checkable
class HasEstimates(Protocol):
    """Anything pooling can read: region task results and study task sets alike."""

    def estimates(self) -> Estimates: ...
