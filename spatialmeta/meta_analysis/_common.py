"""Helpers shared by the meta-analysis modules: reading and checking ``yi``/``vi``, plain output.

``prefix`` arguments start every error message (e.g. ``"trimfill: "``) so that
functions other than :func:`~spatialmeta.meta_analysis.pool` can say who raised it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def where(index: tuple[int, ...]) -> str:
    """``(1, 2)`` as ``"[1, 2]"``, for error messages."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True element of ``mask``."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def read_inputs(yi, vi, labels, prefix: str = "", need_vi: bool = True):
    """``(y, v, labels, measure, mods)`` from yi/vi or an object with ``.estimates()``.

    With ``need_vi=False`` a missing ``vi`` is allowed and ``v`` is None.
    """
    measure = "effect"
    est = None
    est_mods = None
    if hasattr(yi, "estimates") and callable(yi.estimates):
        est = yi.estimates()
    elif hasattr(yi, "yi") and hasattr(yi, "vi"):
        # An Estimates itself; duck-typed so this module does not import spatialmeta.tasks.
        est = yi
    if est is not None:
        if vi is not None:
            raise TypeError(
                f"{prefix}`vi` must be None when `yi` provides .estimates() (its variances are "
                "used); drop the `vi` argument or pass plain arrays."
            )
        yi, vi = est.yi, est.vi
        measure = getattr(est, "measure", "effect")
        labels = getattr(est, "labels", None) if labels is None else labels
        est_mods = getattr(est, "mods", None)
    if vi is None and need_vi:
        raise TypeError(
            f"{prefix}`vi` is missing: pass sampling variances with the same shape as `yi`, "
            "or pass an object with an .estimates() method as `yi`."
        )
    try:
        y = np.array(yi, dtype=float)
        v = None if vi is None else np.array(vi, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{prefix}`yi` and `vi` must be numeric arrays; conversion failed: {err}"
        ) from err
    return y, v, labels, measure, est_mods


def check_studies(y, v, prefix: str = "", at: str = "at study index") -> np.ndarray:
    """Check ``v`` against ``y`` (shape, finite, NaN in both or neither, ``v > 0``).

    Returns the mask of observed studies. ``at`` introduces the study index in
    the messages (``"at study index [2]"``).
    """
    if v.shape != y.shape:
        raise ValueError(
            f"{prefix}`vi` has shape {v.shape} but `yi` has shape {y.shape}; give one sampling "
            "variance per effect (same shape, NaN where a study is missing)."
        )
    for name, arr in (("yi", y), ("vi", v)):
        if np.isinf(arr).any():
            idx = first(np.isinf(arr))
            raise ValueError(
                f"{prefix}`{name}` must be finite (or NaN for a missing study); found "
                f"{name}{where(idx)} = {arr[idx]}. Replace it or set yi and vi to NaN there."
            )
    obs = ~np.isnan(y)
    if (obs & np.isnan(v)).any():
        idx = first(obs & np.isnan(v))
        raise ValueError(
            f"{prefix}`vi` is NaN {at} {where(idx)} where yi = {y[idx]} is observed; give "
            "its sampling variance, or set yi to NaN there to drop the study."
        )
    if (~obs & ~np.isnan(v)).any():
        idx = first(~obs & ~np.isnan(v))
        raise ValueError(
            f"{prefix}`yi` is NaN {at} {where(idx)} but vi = {v[idx]} is given; set vi to "
            "NaN there as well to drop the study, or supply the effect."
        )
    if (obs & (v <= 0)).any():
        idx = first(obs & (v <= 0))
        raise ValueError(
            f"{prefix}`vi` must be > 0 for every observed study; found vi{where(idx)} = "
            f"{v[idx]}. Pass sampling variances (squared standard errors), or set yi and vi "
            "to NaN to drop that study."
        )
    return obs


def check_labels(labels, shape: tuple[int, ...], prefix: str = ""):
    """``labels`` as an array of shape ``shape`` or ``shape[-1:]`` (None stays None)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape not in (shape, shape[-1:]):
        raise ValueError(
            f"{prefix}`labels` has shape {labels.shape}; it must match `yi` {shape} or its "
            f"study axis ({shape[-1]},)."
        )
    return labels


def plain(value: Any, tuples: bool = False, nested: tuple[type, ...] = ()) -> Any:
    """Plain Python values for ``to_dict``: numpy to lists/scalars, NaN to None.

    Lists are converted element by element (tuples too with ``tuples=True``);
    instances of the ``nested`` classes become their ``to_dict()``.
    """
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, list) or (tuples and isinstance(value, tuple)):
        return [plain(v, tuples, nested) for v in value]
    if nested and isinstance(value, nested):
        return value.to_dict()
    return value
