"""The forecast container every method returns: Gaussian forecasts in natural units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Forecast"]


@dataclass(frozen=True)
class Forecast:
    """Gaussian forecasts in natural units for some regions.

    ``mean`` and ``std`` are ``(R_f, O, H)``: region × forecast origin × horizon;
    ``std`` is None for point forecasts.

    Examples
    --------
    >>> f = Forecast("climatology", np.array([2]), np.array([10, 11]), np.zeros((1, 2, 3)), None)
    >>> f.mean.shape, f.std is None
    ((1, 2, 3), True)
    """

    method: str
    regions: np.ndarray  # indices into the task set
    origins: np.ndarray  # time indices
    mean: np.ndarray
    std: np.ndarray | None
