"""Forest plot of a meta-analysis, drawn with matplotlib's Agg canvas."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.transforms import blended_transform_factory
from scipy import stats

from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool

__all__ = ["forest_plot"]

_INK = "#1f1f1f"
_STUDY = "#3b5b92"
_POOLED = "#b2182b"


def _as_result(result_or_estimates, yi, vi, labels) -> PoolResult:
    obj = result_or_estimates
    if isinstance(obj, PoolResult):
        if yi is None and vi is None:
            return obj
        if yi is None or vi is None:
            raise ValueError("give both `yi` and `vi` to override the studies, or neither.")
        return pool(yi, vi, method=obj.method, test=obj.test, level=obj.level, labels=labels)
    if obj is None:
        if yi is None or vi is None:
            raise TypeError(
                "forest_plot needs a PoolResult, an object with .estimates(), or both `yi` "
                "and `vi`."
            )
        return pool(yi, vi, labels=labels)
    if vi is not None or yi is not None:
        raise ValueError("`yi`/`vi` are taken from the estimates object; do not pass them too.")
    return pool(obj, labels=labels)


def _num(x: float) -> str:
    """Two decimals, without a negative zero."""
    text = f"{x:.2f}"
    return text[1:] if text == "-0.00" else text


def _label_list(result: PoolResult, labels, k: int) -> list[str]:
    if labels is None:
        labels = result.labels
    if labels is None:
        return [f"Study {i + 1}" for i in range(k)]
    labels = [str(x) for x in np.asarray(labels).reshape(-1)]
    if len(labels) != k:
        raise ValueError(f"`labels` has {len(labels)} entries but the plot has {k} studies.")
    return labels


def _save_atomic(fig: Figure, path: str | os.PathLike, dpi: int) -> None:
    """Write the PNG to a temporary name beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def forest_plot(
    result_or_estimates=None,
    yi=None,
    vi=None,
    labels=None,
    path: str | os.PathLike | None = None,
    xlabel: str = "Effect",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    title: str | None = None,
    *,
    xscale: str = "linear",
    dpi: int = 200,
) -> Figure:
    """Draw a forest plot: studies, pooled diamond and prediction interval.

    Parameters
    ----------
    result_or_estimates : PoolResult or object with ``.estimates()``, optional
        A single (unbatched) pooled result, or estimates to pool with REML.
        May be None when ``yi`` and ``vi`` are given.
    yi, vi : array_like, optional
        Study effects and sampling variances (pooled with the result's
        settings, or REML when there is no result).
    labels : sequence of str, optional
        Study labels; default: the result's labels, else "Study 1", ...
    path : str or path-like, optional
        Write a PNG here (atomically: a temporary file in the same folder,
        then ``os.replace``).
    xlabel : str
        Label of the effect axis.
    transform : callable, optional
        Applied to every effect and bound before drawing (e.g. ``np.exp`` to
        show log risk ratios as risk ratios); the null line moves with it.
    title : str, optional
        Figure title.
    xscale : str
        Matplotlib scale of the effect axis, e.g. ``"log"`` with
        ``transform=np.exp`` for ratios.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; the Agg canvas is attached). Each study's
        confidence interval is a line with gid ``"study-ci"``, its square a
        marker with gid ``"study-point"``; the pooled diamond is a polygon
        with gid ``"pooled"`` and the prediction interval a dashed line with
        gid ``"prediction-interval"``.
    """
    res = _as_result(result_or_estimates, yi, vi, labels)
    if res.batch_shape:
        raise ValueError(
            f"forest_plot draws one meta-analysis but the result has batch shape "
            f"{res.batch_shape}; pass result.row(i)."
        )
    f = transform if transform is not None else (lambda x: np.asarray(x, dtype=float))
    y = np.asarray(res.yi, dtype=float)
    keep = ~np.isnan(y)
    y = y[keep]
    se = np.sqrt(np.asarray(res.vi, dtype=float)[keep])
    w = np.asarray(res.weights, dtype=float)[keep]
    k = y.size
    names = _label_list(res, labels, keep.size)
    names = [n for n, kp in zip(names, keep, strict=True) if kp]
    crit = stats.norm.isf((1 - res.level / 100) / 2)
    lo, hi, mid = f(y - crit * se), f(y + crit * se), f(y)
    est, ci_lb, ci_ub = (float(f(np.array(x))) for x in (res.estimate, res.ci_lb, res.ci_ub))
    has_pi = res.method not in FIXED_METHODS and np.isfinite(res.pi_lb)

    height = 1.2 + 0.32 * (k + 4)
    fig = Figure(figsize=(9.0, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.30, 1.0 / height, 0.42, 1.0 - 1.6 / height))
    rows = np.arange(k, 0, -1) + 1.0  # studies top to bottom, pooled row at 0
    size = 12.0 + 88.0 * w / np.nanmax(w)  # marker area (pt^2) proportional to weight
    for r, a, b in zip(rows, lo, hi, strict=True):
        (line,) = ax.plot([a, b], [r, r], color=_INK, lw=1.0, solid_capstyle="butt")
        line.set_gid("study-ci")
    pts = ax.scatter(mid, rows, s=size, marker="s", color=_STUDY, zorder=3, linewidths=0)
    pts.set_gid("study-point")
    if has_pi:
        pi_lb, pi_ub = float(f(np.array(res.pi_lb))), float(f(np.array(res.pi_ub)))
        (pil,) = ax.plot([pi_lb, pi_ub], [0, 0], color=_POOLED, lw=1.2, ls=(0, (4, 2)), zorder=2)
        pil.set_gid("prediction-interval")
        ax.plot([pi_lb, pi_lb], [-0.15, 0.15], color=_POOLED, lw=1.2, zorder=2)
        ax.plot([pi_ub, pi_ub], [-0.15, 0.15], color=_POOLED, lw=1.2, zorder=2)
    diamond = Polygon(
        [(ci_lb, 0), (est, 0.38), (ci_ub, 0), (est, -0.38)],
        closed=True,
        facecolor=_POOLED,
        edgecolor=_POOLED,
        zorder=4,
    )
    diamond.set_gid("pooled")
    ax.add_patch(diamond)
    null = float(f(np.array(0.0)))
    ax.axvline(null, color="0.45", lw=0.8, ls=":", zorder=1)
    ax.axvline(est, color=_POOLED, lw=0.6, ls="-", alpha=0.35, zorder=1)

    model = f"{'FE' if res.method in FIXED_METHODS else 'RE'} Model ({res.method})"
    ax.set_yticks(list(rows) + [0.0])
    ax.set_yticklabels(names + [model])
    ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.set_ylim(-0.9, k + 1.8)
    ax.set_xlabel(xlabel)
    ax.set_xscale(xscale)
    ax.tick_params(axis="y", length=0)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)

    text = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.04, k + 1.8, f"Estimate [{res.level:g}% CI]", transform=text, ha="left",
            va="center", fontweight="bold", fontsize=9)  # fmt: skip
    ax.text(1.62, k + 1.8, "Weight", transform=text, ha="right", va="center",
            fontweight="bold", fontsize=9)  # fmt: skip
    for r, m_, a, b, wt in zip(rows, mid, lo, hi, w, strict=True):
        ax.text(1.04, r, f"{_num(m_)} [{_num(a)}, {_num(b)}]", transform=text, ha="left",
                va="center", fontsize=9, family="monospace")  # fmt: skip
        ax.text(1.62, r, f"{wt:.1f}%", transform=text, ha="right", va="center", fontsize=9,
                family="monospace")  # fmt: skip
    ax.text(1.04, 0, f"{_num(est)} [{_num(ci_lb)}, {_num(ci_ub)}]", transform=text, ha="left",
            va="center", fontsize=9, family="monospace", fontweight="bold")  # fmt: skip
    ax.text(1.62, 0, "100%", transform=text, ha="right", va="center", fontsize=9,
            family="monospace", fontweight="bold")  # fmt: skip

    het = f"Q({res.k - 1}) = {res.QE:.2f}, p = {res.QEp:.3g}; I\u00b2 = {res.I2:.1f}%"
    if res.method not in FIXED_METHODS:
        het = f"\u03c4\u00b2 = {res.tau2:.3g}; " + het
    if has_pi:
        het += f"; dashed: {res.level:g}% prediction interval"
    fig.text(0.02, 0.12 / height, het, ha="left", va="bottom", fontsize=8, color="0.3")
    if title:
        fig.suptitle(title, fontweight="bold", x=0.3, ha="left")
    if path is not None:
        _save_atomic(fig, path, dpi)
    return fig
