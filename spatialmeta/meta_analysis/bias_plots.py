"""Diagnostic plots for publication bias and heterogeneity, drawn with matplotlib's Agg canvas.

Contour-enhanced funnel plot (``metafor::funnel`` with several ``level``s and
``shade``), Baujat plot (``metafor::baujat``) and radial (Galbraith) plot
(``metafor::radial``). Each function returns the :class:`~matplotlib.figure.Figure`
and, given ``path``, writes a PNG or SVG (chosen by the suffix) atomically.

References
----------
Peters, J. L., Sutton, A. J., Jones, D. R., Abrams, K. R., & Rushton, L.
(2008). Contour-enhanced meta-analysis funnel plots help distinguish
publication bias from other causes of asymmetry. *Journal of Clinical
Epidemiology*, 61(10), 991-996. doi:10.1016/j.jclinepi.2007.11.010
Baujat, B., Mahe, C., Pignon, J.-P., & Hill, C. (2002). doi:10.1002/sim.1221
Galbraith, R. F. (1988). A note on graphical presentation of estimated odds
ratios from several clinical trials. *Statistics in Medicine*, 7(8), 889-894.
doi:10.1002/sim.4780070807
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon
from scipy import stats

from spatialmeta._io import atomic_path
from spatialmeta.meta_analysis.bias import BaujatResult, TrimFillResult, baujat, trimfill
from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool

__all__ = ["baujat_plot", "funnel_plot", "radial_plot"]

_INK = "#1f1f1f"
_POOLED = "#b2182b"
_FORMATS = {".png": "png", ".svg": "svg"}


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> None:
    """Write ``fig`` to ``path`` (PNG or SVG by suffix) through a temporary sibling."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"`path` must end in .png or .svg (the format is taken from the suffix); got "
            f"{str(path)!r}."
        )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")


def _one(res, what: str):
    if np.shape(res.estimate):
        raise ValueError(
            f"{what} draws one meta-analysis but got a batch of shape "
            f"{np.shape(res.estimate)}; pass one row (e.g. result.row(i), or yi[i] and vi[i])."
        )
    return res


def _studies(result_or_estimates, yi, vi, method, test, what):
    """(PoolResult, yi, vi, labels) for a single meta-analysis, from any accepted input."""
    obj = result_or_estimates
    if isinstance(obj, PoolResult):
        if yi is not None or vi is not None:
            raise ValueError(
                f"{what}: the studies come from the PoolResult; do not pass `yi`/`vi` too."
            )
        res = _one(obj, what)
        keep = ~np.isnan(np.asarray(res.yi, dtype=float))
        lab = None if res.labels is None else np.asarray(res.labels)[keep]
        return res, np.asarray(res.yi)[keep], np.asarray(res.vi)[keep], lab
    if obj is None:
        if yi is None or vi is None:
            raise TypeError(
                f"{what} needs a result, an object with .estimates(), or both `yi` and `vi`."
            )
        res = _one(pool(yi, vi, method=method, test=test), what)
    else:
        if yi is not None or vi is not None:
            raise ValueError(
                f"{what}: `yi`/`vi` come from the estimates object; do not pass them too."
            )
        res = _one(pool(obj, method=method, test=test), what)
    y = np.asarray(res.yi, dtype=float)
    keep = ~np.isnan(y)
    lab = None if res.labels is None else np.asarray(res.labels)[keep]
    return res, y[keep], np.asarray(res.vi, dtype=float)[keep], lab


def _levels(level) -> np.ndarray:
    lv = np.atleast_1d(np.asarray(level, dtype=float))
    lv = np.where(lv < 1, lv * 100.0, lv)
    if lv.size == 0 or np.any(~np.isfinite(lv)) or np.any((lv <= 0) | (lv >= 100)):
        raise ValueError(
            f"`level` must be confidence levels in percent strictly between 0 and 100, e.g. "
            f"(90, 95, 99); got {level!r}."
        )
    return lv


def funnel_plot(
    result_or_estimates=None,
    yi=None,
    vi=None,
    *,
    method: str = "REML",
    level=(90, 95, 99),
    shade=("white", "#8c8c8c", "#bfbfbf"),
    back: str = "#d3d3d3",
    refline: float | None = 0.0,
    fill: bool | str = False,
    path: str | os.PathLike | None = None,
    xlabel: str = "Effect",
    title: str | None = None,
    legend: bool = True,
    dpi: int = 200,
) -> Figure:
    """Contour-enhanced funnel plot: effects against their standard errors.

    The regions where a study would be significant at two-sided p < 0.10,
    0.05 and 0.01 (for the default ``level``) are shaded about ``refline``,
    as ``metafor::funnel(res, level = c(90, 95, 99), shade = c("white",
    "gray55", "gray75"), refline = 0)``; the standard error axis points down.

    Parameters
    ----------
    result_or_estimates : PoolResult, TrimFillResult or object with ``.estimates()``, optional
        A single meta-analysis. A :class:`~spatialmeta.meta_analysis.bias.TrimFillResult`
        draws its imputed studies hollow and its filled estimate. May be None
        when ``yi`` and ``vi`` are given.
    yi, vi : array_like, optional
        Effects and sampling variances (pooled with ``method``).
    method : str
        tau^2 estimator for pooling ``yi``/``vi`` (and for ``fill``).
    level : float or sequence of float
        Confidence levels in percent of the contours (metafor's ``level``).
    shade : sequence of colors
        Fill inside each contour, matched to ``level`` in ascending order
        (innermost first); the area outside the widest is ``back``.
    back : color
        Background (p below the smallest significance level).
    refline : float or None
        Centre of the contours (0 for significance contours); None centres
        them on the pooled estimate, as metafor's default.
    fill : bool or {"L0", "R0"}
        Run :func:`~spatialmeta.meta_analysis.bias.trimfill` (L0 for True)
        with ``method`` and draw the imputed studies hollow.
    path : str or path-like, optional
        Write a PNG or SVG here (by suffix), atomically.
    xlabel, title : str
        Axis label and figure title.
    legend : bool
        Draw the legend of p-value regions.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    matplotlib.figure.Figure
        Observed studies are the scatter with gid ``"studies"`` (x = effect,
        y = standard error), imputed ones ``"filled-studies"``; contour
        polygons have gids ``"contour-<level>"``; the pooled estimate is the
        line ``"estimate"``, the reference line ``"refline"``.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.1, 0.3, 0.35, 0.4, 0.45, 0.6, 0.8, 0.9])
    >>> vi = np.array([0.01, 0.02, 0.02, 0.03, 0.04, 0.05, 0.08, 0.1])
    >>> fig = funnel_plot(yi=yi, vi=vi, method="FE", fill=True)
    >>> [c.get_gid() for c in fig.axes[0].collections]
    ['studies', 'filled-studies']
    """
    what = "funnel_plot"
    tf = None
    obj = result_or_estimates
    if isinstance(obj, TrimFillResult):
        if np.ndim(obj.k0):
            raise ValueError(
                f"{what} draws one meta-analysis but the trim-and-fill result has batch shape "
                f"{np.shape(obj.k0)}; pass result.row(i)."
            )
        if yi is not None or vi is not None:
            raise ValueError(
                f"{what}: the studies come from the TrimFillResult; do not pass `yi`/`vi`."
            )
        tf = obj
        res = obj.result
        keep = ~np.isnan(np.asarray(obj.yi, dtype=float))
        y_all, v_all = np.asarray(obj.yi)[keep], np.asarray(obj.vi)[keep]
        filled = np.asarray(obj.fill)[keep]
    else:
        res, y_all, v_all, _ = _studies(obj, yi, vi, method, "z", what)
        filled = np.zeros(y_all.size, dtype=bool)
        if fill:
            est = "L0" if fill is True else str(fill)
            tf = trimfill(y_all, v_all, estimator=est, method=res.method)
            res = tf.result
            y_all, v_all, filled = np.asarray(tf.yi), np.asarray(tf.vi), np.asarray(tf.fill)
    levels = _levels(level)
    shades = list(shade) if not isinstance(shade, str) else [shade]
    if len(shades) < levels.size:
        raise ValueError(f"`shade` needs one color per level ({levels.size}); got {len(shades)}.")
    order = np.argsort(levels)  # innermost (smallest level) first, as metafor matches shade
    levels, shades = levels[order], [shades[i] for i in order]

    se = np.sqrt(v_all)
    centre = float(res.estimate) if refline is None else float(refline)
    z = stats.norm.isf((1.0 - levels / 100.0) / 2.0)
    top = float(se.max())
    x_lo = min(centre - z.max() * top, float(y_all.min()))
    x_hi = max(centre + z.max() * top, float(y_all.max()))
    pad = 0.1 * (x_hi - x_lo)
    ymax = top * 1.1

    fig = Figure(figsize=(6.4, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor(back)
    handles = []
    for i in range(levels.size - 1, -1, -1):  # widest first
        half = z[i] * ymax
        poly = Polygon(
            [(centre - half, ymax), (centre, 0.0), (centre + half, ymax)],
            closed=True, facecolor=shades[i], edgecolor="none", zorder=1,
        )  # fmt: skip
        poly.set_gid(f"contour-{levels[i]:g}")
        ax.add_patch(poly)
    alphas = np.concatenate(([1.0], 1.0 - levels / 100.0, [0.0]))
    colors = shades + [back]
    for i in range(levels.size + 1):
        handles.append(
            Patch(facecolor=colors[i], edgecolor="0.4", lw=0.5,
                  label=f"{alphas[i + 1]:.2f} < p \u2264 {alphas[i]:.2f}")
        )  # fmt: skip
    rl = ax.axvline(centre, color=_INK, lw=0.8, ls=":", zorder=2)
    rl.set_gid("refline")
    el = ax.axvline(float(res.estimate), color=_POOLED, lw=1.0, zorder=2)
    el.set_gid("estimate")
    obs = ax.scatter(y_all[~filled], se[~filled], s=22, color=_INK, zorder=4, linewidths=0)
    obs.set_gid("studies")
    handles.append(Line2D([], [], ls="", marker="o", color=_INK, label="Studies"))
    if tf is not None:
        imp = ax.scatter(y_all[filled], se[filled], s=22, facecolors="white", edgecolors=_INK,
                         linewidths=0.9, zorder=4)  # fmt: skip
        imp.set_gid("filled-studies")
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec=_INK,
                              label=f"Filled studies (k0 = {int(tf.k0)}, {tf.side})"))  # fmt: skip
    handles.append(Line2D([], [], color=_POOLED, lw=1.0,
                          label=f"Estimate ({'FE' if res.method in FIXED_METHODS else res.method})"))  # fmt: skip
    ax.set_xlim(x_lo - pad, x_hi + pad)
    ax.set_ylim(ymax, 0.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Standard Error")
    for spine in ("right", "top"):
        ax.spines[spine].set_visible(False)
    if legend:
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)
    if title:
        ax.set_title(title, fontweight="bold")
    if path is not None:
        _save(fig, path, dpi)
    return fig


def baujat_plot(
    result_or_estimates=None,
    yi=None,
    vi=None,
    *,
    method: str = "REML",
    test: str = "z",
    labels=None,
    symbol: str = "ids",
    path: str | os.PathLike | None = None,
    title: str | None = None,
    dpi: int = 200,
) -> Figure:
    """Baujat plot: each study's contribution to heterogeneity against its influence.

    x is the squared Pearson residual ``(y_i - mu)^2 / (v_i + tau^2)`` and y
    the standardized change of the pooled estimate when the study is left
    out, as ``metafor::baujat`` (numbers from
    :func:`~spatialmeta.meta_analysis.bias.baujat`).

    Parameters
    ----------
    result_or_estimates : BaujatResult, PoolResult or object with ``.estimates()``, optional
        A single meta-analysis (a PoolResult is refitted with its method and
        test). May be None when ``yi`` and ``vi`` are given.
    yi, vi : array_like, optional
        Effects and sampling variances.
    method, test : str
        Model of the fits (ignored for a BaujatResult or PoolResult).
    labels : sequence of str, optional
        Study labels for ``symbol="slab"``.
    symbol : {"ids", "slab", "points"}
        Mark each study with its number (metafor's default), its label, or a dot.
    path : str or path-like, optional
        Write a PNG or SVG here (by suffix), atomically.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The studies' positions are the scatter with gid ``"baujat-points"``
        (invisible markers under text labels unless ``symbol="points"``).

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> fig = baujat_plot(yi=yi, vi=vi, method="FE")
    >>> fig.axes[0].collections[0].get_offsets().shape
    (7, 2)
    """
    if symbol not in ("ids", "slab", "points"):
        raise ValueError(f"`symbol` must be 'ids', 'slab' or 'points'; got {symbol!r}.")
    obj = result_or_estimates
    if isinstance(obj, BaujatResult):
        if yi is not None or vi is not None:
            raise ValueError(
                "baujat_plot: the studies come from the BaujatResult; do not pass `yi`/`vi`."
            )
        bj = obj
    elif isinstance(obj, PoolResult):
        if yi is not None or vi is not None:
            raise ValueError(
                "baujat_plot: the studies come from the PoolResult; do not pass `yi`/`vi`."
            )
        _one(obj, "baujat_plot")
        bj = baujat(obj, labels=labels)
    elif obj is None:
        if yi is None or vi is None:
            raise TypeError(
                "baujat_plot needs a result, an object with .estimates(), or both `yi` and `vi`."
            )
        bj = baujat(yi, vi, method=method, test=test, labels=labels)
    else:
        if yi is not None or vi is not None:
            raise ValueError(
                "baujat_plot: `yi`/`vi` come from the estimates object; do not pass them too."
            )
        bj = baujat(obj, method=method, test=test, labels=labels)
    if bj.x.ndim != 1:
        raise ValueError(
            f"baujat_plot draws one meta-analysis but got a batch of shape {bj.x.shape[:-1]}; "
            "pass one row."
        )
    keep = ~np.isnan(bj.x)
    ids = np.flatnonzero(keep) + 1
    x, y = bj.x[keep], bj.y[keep]
    lab = labels if labels is not None else bj.labels
    if symbol == "slab":
        if lab is None:
            raise ValueError('symbol="slab" needs `labels` (or labels on the estimates).')
        lab = np.asarray(lab).reshape(-1)
        if lab.size != keep.size:
            raise ValueError(f"`labels` has {lab.size} entries but there are {keep.size} studies.")
        texts = [str(s) for s in lab[keep]]
    else:
        texts = [str(i) for i in ids]

    fig = Figure(figsize=(6.4, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, color="lightgray", lw=0.6)
    ax.set_axisbelow(True)
    pts = ax.scatter(x, y, s=20 if symbol == "points" else 0.0, color=_INK, zorder=3)
    pts.set_gid("baujat-points")
    if symbol != "points":
        for xi, yi_, t in zip(x, y, texts, strict=True):
            ax.text(xi, yi_, t, ha="center", va="center", fontsize=8, zorder=4)
    fixed = bj.result.method in FIXED_METHODS
    ax.set_xlabel("Contribution to Overall Heterogeneity" if fixed else "Squared Pearson Residual")
    ax.set_ylabel("Influence on Overall Result")
    fx, fy = x[np.isfinite(x)], y[np.isfinite(y)]
    if fx.size and fy.size:
        dx = (fx.max() - fx.min()) * 0.05 or 0.05
        dy = (fy.max() - fy.min()) * 0.05 or 0.05
        ax.set_xlim(fx.min() - dx, fx.max() + dx)
        ax.set_ylim(fy.min() - dy, fy.max() + dy)
    if title:
        ax.set_title(title, fontweight="bold")
    if path is not None:
        _save(fig, path, dpi)
    return fig


def _arc_points(values, radius, asp):
    """Points at distance ``radius`` (in x units, aspect-corrected) on rays z = value * x."""
    values = np.asarray(values, dtype=float)
    x = np.sqrt(radius**2 / (1.0 + (values / asp) ** 2))
    return x, x * values


def radial_plot(
    result_or_estimates=None,
    yi=None,
    vi=None,
    *,
    method: str = "REML",
    level: float | None = None,
    steps: int = 7,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    dpi: int = 200,
) -> Figure:
    """Radial (Galbraith) plot, as ``metafor::radial``.

    Each study is drawn at ``x = 1 / sqrt(v_i + tau^2)``, ``z = y_i /
    sqrt(v_i + tau^2)``, so its effect is the slope of the ray from the
    origin, read off the arc on the right. The line through the origin has
    the pooled estimate as slope and the shaded band is ``+-z_crit`` about it;
    the inner arc marks the confidence interval of the estimate.

    Parameters
    ----------
    result_or_estimates : PoolResult or object with ``.estimates()``, optional
        A single meta-analysis. May be None when ``yi`` and ``vi`` are given.
    yi, vi : array_like, optional
        Effects and sampling variances (pooled with ``method``).
    method : str
        tau^2 estimator when pooling ``yi``/``vi``.
    level : float, optional
        Confidence level in percent of the band (default: the fit's level).
    steps : int
        Number of tick marks on the effect-size arc.
    path : str or path-like, optional
        Write a PNG or SVG here (by suffix), atomically.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The studies are the scatter with gid ``"radial-points"`` (the
        coordinates metafor's ``radial`` returns); the pooled line has gid
        ``"radial-line"``, the band ``"radial-band"``.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> fig = radial_plot(yi=yi, vi=vi, method="FE")
    >>> np.round(fig.axes[0].collections[0].get_offsets()[0], 4).tolist()
    [1.7408, -1.5493]
    """
    if not (isinstance(steps, int | np.integer) and steps >= 2):
        raise ValueError(f"`steps` must be an integer >= 2; got {steps!r}.")
    res, y, v, _ = _studies(result_or_estimates, yi, vi, method, "z", "radial_plot")
    lvl = float(res.level) if level is None else float(_levels(level)[0])
    zcrit = float(stats.norm.isf((1.0 - lvl / 100.0) / 2.0))
    tau2 = float(res.tau2)
    beta = float(res.estimate)
    # metafor's radial always uses z-based interval bounds of the fit.
    ci_lb, ci_ub = float(res.ci_lb), float(res.ci_ub)
    xi = 1.0 / np.sqrt(v + tau2)
    zi = y / np.sqrt(v + tau2)

    xmax = 1.3 * float(xi.max())
    ci_x = xmax * 1.12
    ya_x = xmax * 1.14
    zlo = min(-5.0, 1.1 * zi.min(), 1.1 * ci_lb * ci_x, 1.1 * y.min() * ya_x,
              -1.1 * zcrit + xmax * beta)  # fmt: skip
    zhi = max(5.0, 1.1 * zi.max(), 1.1 * ci_ub * ci_x, 1.1 * y.max() * ya_x,
              1.1 * zcrit + xmax * beta)  # fmt: skip

    fig = Figure(figsize=(6.6, 5.6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.12, 0.62, 0.78))
    ax.set_box_aspect(1.0)
    ax.set_xlim(0.0, xmax)
    ax.set_ylim(zlo, zhi)
    band = Polygon(
        [(0, zcrit), (xmax, zcrit + xmax * beta), (xmax, -zcrit + xmax * beta), (0, -zcrit)],
        closed=True, facecolor="lightgray", edgecolor="none", zorder=1,
    )  # fmt: skip
    band.set_gid("radial-band")
    ax.add_patch(band)
    (line,) = ax.plot([0, xmax], [0, xmax * beta], color=_INK, lw=1.0, zorder=2)
    line.set_gid("radial-line")
    for s in (-1.0, 1.0):
        ax.plot([0, xmax], [s * zcrit, s * zcrit + xmax * beta], color=_INK, lw=0.8, ls=":",
                zorder=2)  # fmt: skip

    asp = (zhi - zlo) / (xmax - 0.0)
    # Effect-size arc with ticks and labels, outside the axes on the right.
    vals = np.linspace(y.min(), y.max(), 100)
    ax_, az = _arc_points(vals, ya_x, asp)
    ok = (az > zlo) & (az < zhi)
    (arc,) = ax.plot(ax_[ok], az[ok], color=_INK, lw=0.8, clip_on=False)
    arc.set_gid("effect-arc")
    ticks = np.linspace(y.min(), y.max(), steps)
    tl_x, tl_z = _arc_points(ticks, ya_x, asp)
    tu_x, _ = _arc_points(ticks, ya_x + 0.015 * xmax, asp)
    lab_x, lab_z = _arc_points(ticks, ya_x + 0.02 * xmax, asp)
    for a, b_, c, t, lx, lz in zip(tl_x, tl_z, tu_x, ticks, lab_x, lab_z, strict=True):
        if zlo < b_ < zhi:
            ax.plot([a, c], [b_, c * t], color=_INK, lw=0.8, clip_on=False)
            ax.text(lx, lz, f"{t:.2f}", ha="left", va="center", fontsize=8, clip_on=False)
    # Confidence interval of the estimate on an inner arc.
    cvals = np.linspace(ci_lb, ci_ub, 25)
    cx, cz = _arc_points(cvals, ci_x, asp)
    ok = (cz > zlo) & (cz < zhi)
    (ciarc,) = ax.plot(cx[ok], cz[ok], color=_POOLED, lw=1.6, clip_on=False)
    ciarc.set_gid("ci-arc")
    for t in (ci_lb, beta, ci_ub):
        lx, lz = _arc_points([t], ci_x - 0.007 * xmax, asp)
        ux, _ = _arc_points([t], ci_x + 0.007 * xmax, asp)
        if zlo < lz[0] < zhi:
            ax.plot([lx[0], ux[0]], [lz[0], ux[0] * t], color=_POOLED, lw=1.0, clip_on=False)

    pts = ax.scatter(xi, zi, s=18, color=_INK, zorder=4, linewidths=0)
    pts.set_gid("radial-points")
    fixed = res.method in FIXED_METHODS
    ax.set_xlabel(r"$x_i = 1/\sqrt{v_i}$" if fixed else r"$x_i = 1/\sqrt{v_i + \tau^2}$")
    ax.set_ylabel(r"$z_i = y_i/\sqrt{v_i}$" if fixed else r"$z_i = y_i/\sqrt{v_i + \tau^2}$")
    ax.set_yticks([-2, 0, 2])
    ax.set_yticks(np.arange(-4, 5), minor=True)
    for spine in ("right", "top"):
        ax.spines[spine].set_visible(False)
    if title:
        ax.set_title(title, fontweight="bold")
    if path is not None:
        _save(fig, path, dpi)
    return fig
