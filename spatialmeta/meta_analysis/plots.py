"""Forest plot of a meta-analysis, drawn with matplotlib's Agg canvas."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory
from scipy import stats

from spatialmeta._io import atomic_path
from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.results import fmt_p

__all__ = ["forest_plot"]

_INK = "#1f1f1f"
_STUDY = "#3b5b92"
_POOLED = "#b2182b"
_GROUP = "#5e5e5e"
_FORMATS = {".png": "png", ".svg": "svg"}


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


def _pv(p: float) -> str:
    return fmt_p(p, eq=True, style="report")


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
    """Write a PNG or SVG (by suffix) to a temporary sibling of ``path``, then rename it."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"`path` must end in .png or .svg (the format is taken from the suffix); got "
            f"{str(path)!r}."
        )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")


def _subgroup_fit(subgroups, res: PoolResult):
    """A single-analysis SubgroupResult over the studies of ``res`` (fitted if needed)."""
    from spatialmeta.meta_analysis.subgroups import SubgroupResult
    from spatialmeta.meta_analysis.subgroups import subgroups as fit_subgroups

    y = np.asarray(res.yi, dtype=float)
    if isinstance(subgroups, SubgroupResult):
        if subgroups.batch_shape:
            raise ValueError(
                f"`subgroups` holds a batch of shape {subgroups.batch_shape}; the forest plot "
                "draws one meta-analysis."
            )
        if not np.array_equal(np.asarray(subgroups.yi, dtype=float), y, equal_nan=True):
            raise ValueError(
                "`subgroups` was fitted to other studies than the plotted result; fit it on the "
                "same yi and vi (or pass the subgroup of every study instead)."
            )
        return subgroups
    groups = np.asarray(subgroups, dtype=object).reshape(-1)
    if groups.size != y.size:
        raise ValueError(
            f"`subgroups` has {groups.size} entries but the plot has {y.size} studies; give "
            "one subgroup per study."
        )
    return fit_subgroups(
        y, np.asarray(res.vi, dtype=float), groups, method=res.method, test=res.test,
        level=res.level, single_study="fixed", labels=res.labels,
    )  # fmt: skip


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
    subgroups=None,
    dpi: int = 200,
) -> Figure:
    """Draw a forest plot: studies, pooled diamond and prediction interval, optionally by subgroup.

    Parameters
    ----------
    result_or_estimates : PoolResult or object with ``.estimates()``, optional
        A single (unbatched) pooled result, or estimates to pool with REML.
        May be None when ``yi`` and ``vi`` are given, or when ``subgroups`` is a
        :class:`~spatialmeta.meta_analysis.subgroups.SubgroupResult` (its
        ``overall`` fit is drawn).
    yi, vi : array_like, optional
        Study effects and sampling variances (pooled with the result's
        settings, or REML when there is no result).
    labels : sequence of str, optional
        Study labels; default: the result's labels, else "Study 1", ...
    path : str or path-like, optional
        Write the figure here, PNG or SVG by the suffix (atomically: a
        temporary file in the same folder, then ``os.replace``).
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
    subgroups : SubgroupResult or array_like, optional
        Draw the studies grouped: a heading per subgroup, its studies, the
        subgroup's pooled diamond and its heterogeneity, then the overall
        diamond; the test for subgroup differences goes in the footer. Either
        the result of :func:`~spatialmeta.meta_analysis.subgroups` on the
        same studies, or the subgroup of every study (then fitted with the
        result's method, test and level, separate tau^2, single-study
        subgroups as common-effect fits).
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; the Agg canvas is attached). Each study's
        confidence interval is a line with gid ``"study-ci"``, its square a
        marker with gid ``"study-point"``; the pooled diamond is a polygon
        with gid ``"pooled"`` and the prediction interval a dashed line with
        gid ``"prediction-interval"``. With subgroups, each subgroup's
        diamond is a polygon with gid ``"subgroup-pooled"`` and the footer
        text of the test for subgroup differences has gid ``"subgroup-test"``.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01, -0.47])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06, 0.03])
    >>> fig = forest_plot(yi=yi, vi=vi, subgroups=list("aaabbbba"))
    >>> ax = fig.axes[0]
    >>> sum(p.get_gid() == "subgroup-pooled" for p in ax.patches)
    2
    >>> [t.get_text() for t in ax.get_yticklabels()][:5]
    ['a', 'Study 1', 'Study 2', 'Study 3', 'Study 8']
    """
    sg = None
    if result_or_estimates is None and yi is None and vi is None and subgroups is not None:
        from spatialmeta.meta_analysis.subgroups import SubgroupResult

        if isinstance(subgroups, SubgroupResult) and subgroups.overall is not None:
            result_or_estimates = subgroups.overall
    res = _as_result(result_or_estimates, yi, vi, labels)
    if res.batch_shape:
        raise ValueError(
            f"forest_plot draws one meta-analysis but the result has batch shape "
            f"{res.batch_shape}; pass result.row(i)."
        )
    if subgroups is not None:
        sg = _subgroup_fit(subgroups, res)
    f = transform if transform is not None else (lambda x: np.asarray(x, dtype=float))
    y_all = np.asarray(res.yi, dtype=float)
    keep = ~np.isnan(y_all)
    names_all = _label_list(res, labels, keep.size)
    se_all = np.sqrt(np.asarray(res.vi, dtype=float))
    w_all = np.asarray(res.weights, dtype=float)
    crit = stats.norm.isf((1 - res.level / 100) / 2)
    random = res.method not in FIXED_METHODS
    has_pi = random and np.isfinite(res.pi_lb)

    # Rows from top to bottom: (kind, payload). The overall model is the last row (y = 0).
    layout: list[tuple[str, object]] = []
    if sg is None:
        layout += [("study", i) for i in np.flatnonzero(keep)]
    else:
        groups = np.asarray(sg.groups, dtype=object)
        for g, name in enumerate(sg.levels):
            members = [i for i in np.flatnonzero(keep) if groups[i] == name]
            if not members:
                continue
            layout.append(("heading", name))
            layout += [("study", i) for i in members]
            layout.append(("group", g))
            layout.append(("group-note", g))
            layout.append(("blank", None))
        layout.pop()  # the blank after the last subgroup; the one below is added next
    layout += [("blank", None), ("overall", None)]
    n_rows = len(layout)
    ypos = np.arange(n_rows - 1, -1, -1, dtype=float)  # overall model at 0
    top = float(ypos[0])

    footer = []
    het = f"Q({res.k - 1}) = {res.QE:.2f}, p = {res.QEp:.3g}; I\u00b2 = {res.I2:.1f}%"
    if random:
        het = f"\u03c4\u00b2 = {res.tau2:.3g}; " + het
    if has_pi:
        het += f"; dashed: {res.level:g}% prediction interval"
    footer.append(("heterogeneity", het))
    if sg is not None:
        name = "F" if np.isfinite(sg.Qb_ddf) else "QM"
        dfs = f"df = {sg.Qb_df}" if name == "QM" else f"df1 = {sg.Qb_df}, df2 = {sg.Qb_ddf:g}"
        qb = "NA" if not np.isfinite(sg.Qb) else f"{sg.Qb:.2f}"
        footer.append(
            ("subgroup-test", f"Test for subgroup differences: {name}({dfs}) = {qb}, "
                              f"p {_pv(sg.Qb_pval)}")
        )  # fmt: skip

    width = 9.0 if sg is None else 10.0
    left = 0.30 if sg is None else 0.34
    bottom = 1.0 + 0.2 * (len(footer) - 1)
    height = bottom + 0.2 + 0.32 * (n_rows + 2)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left, bottom / height, 0.42 * 9.0 / width, 1.0 - (bottom + 0.6) / height))
    text = blended_transform_factory(ax.transAxes, ax.transData)
    c_est, c_w = 1.04, 1.62  # text columns, in axes widths (the axes is 3.78 in wide)

    def right_text(yy, est_txt, w_txt, bold=False):
        ax.text(c_est, yy, est_txt, transform=text, ha="left", va="center", fontsize=9,
                family="monospace", fontweight="bold" if bold else "normal")  # fmt: skip
        ax.text(c_w, yy, w_txt, transform=text, ha="right", va="center", fontsize=9,
                family="monospace", fontweight="bold" if bold else "normal")  # fmt: skip

    def diamond(est, lo, hi, yy, color, gid, half=0.38):
        poly = Polygon([(lo, yy), (est, yy + half), (hi, yy), (est, yy - half)], closed=True,
                       facecolor=color, edgecolor=color, zorder=4)  # fmt: skip
        poly.set_gid(gid)
        ax.add_patch(poly)

    study_idx = [p for kind, p in layout if kind == "study"]
    study_y = np.array([yy for (kind, _), yy in zip(layout, ypos, strict=True) if kind == "study"])
    idx = np.asarray(study_idx, dtype=int)
    y, se, w = y_all[idx], se_all[idx], w_all[idx]
    lo, hi, mid = f(y - crit * se), f(y + crit * se), f(y)
    size = 12.0 + 88.0 * w / np.nanmax(w)  # marker area (pt^2) proportional to weight
    for r, a, b in zip(study_y, lo, hi, strict=True):
        (line,) = ax.plot([a, b], [r, r], color=_INK, lw=1.0, solid_capstyle="butt")
        line.set_gid("study-ci")
    pts = ax.scatter(mid, study_y, s=size, marker="s", color=_STUDY, zorder=3, linewidths=0)
    pts.set_gid("study-point")
    for r, m_, a, b, wt in zip(study_y, mid, lo, hi, w, strict=True):
        right_text(r, f"{_num(m_)} [{_num(a)}, {_num(b)}]", f"{wt:.1f}%")

    model = f"{'FE' if res.method in FIXED_METHODS else 'RE'} Model ({res.method})"
    ticks, tick_text, tick_style = [], [], []
    for (kind, p), yy in zip(layout, ypos, strict=True):
        if kind == "study":
            ticks.append(yy)
            tick_text.append(names_all[int(p)])
            tick_style.append("study")
        elif kind == "heading":
            ticks.append(yy)
            tick_text.append(str(p))
            tick_style.append("heading")
        elif kind in ("group", "group-note"):
            g = int(p)
            kg = int(sg.k[g])
            est_g = float(sg.estimate[g])
            fixed_g = res.method in FIXED_METHODS or (kg == 1 and sg.tau2_model == "separate")
            if kind == "group":
                g_lb, g_ub = float(sg.ci_lb[g]), float(sg.ci_ub[g])
                e, a, b = (float(f(np.array(x))) for x in (est_g, g_lb, g_ub))
                diamond(e, a, b, yy, _GROUP, "subgroup-pooled", half=0.32)
                members = np.asarray(sg.groups, dtype=object)[idx] == sg.levels[g]
                right_text(yy, f"{_num(e)} [{_num(a)}, {_num(b)}]", f"{np.nansum(w[members]):.1f}%")
                ticks.append(yy)
                tick_text.append(f"{'FE' if fixed_g else 'RE'} Model for subgroup (k = {kg})")
                tick_style.append("group")
            else:
                note = f"Q({kg - 1}) = {float(sg.QE[g]):.2f}, p {_pv(float(sg.QEp[g]))}"
                if sg.tau2_model == "separate" and np.isfinite(sg.I2[g]):
                    note += f"; I\u00b2 = {float(sg.I2[g]):.1f}%"
                if not fixed_g and sg.tau2_model == "separate":
                    note = f"\u03c4\u00b2 = {float(sg.tau2[g]):.3g}; " + note
                ticks.append(yy)
                tick_text.append(note)
                tick_style.append("note")
        elif kind == "overall":
            ticks.append(yy)
            tick_text.append(model)
            tick_style.append("overall")

    est, ci_lb, ci_ub = (float(f(np.array(x))) for x in (res.estimate, res.ci_lb, res.ci_ub))
    if has_pi:
        pi_lb, pi_ub = float(f(np.array(res.pi_lb))), float(f(np.array(res.pi_ub)))
        (pil,) = ax.plot([pi_lb, pi_ub], [0, 0], color=_POOLED, lw=1.2, ls=(0, (4, 2)), zorder=2)
        pil.set_gid("prediction-interval")
        ax.plot([pi_lb, pi_lb], [-0.15, 0.15], color=_POOLED, lw=1.2, zorder=2)
        ax.plot([pi_ub, pi_ub], [-0.15, 0.15], color=_POOLED, lw=1.2, zorder=2)
    diamond(est, ci_lb, ci_ub, 0.0, _POOLED, "pooled")
    null = float(f(np.array(0.0)))
    ax.axvline(null, color="0.45", lw=0.8, ls=":", zorder=1)
    ax.axvline(est, color=_POOLED, lw=0.6, ls="-", alpha=0.35, zorder=1)

    ax.set_yticks(ticks)
    ax.set_yticklabels(tick_text)
    for label, style in zip(ax.get_yticklabels(), tick_style, strict=True):
        if style in ("heading", "overall"):
            label.set_fontweight("bold")
        elif style == "group":
            label.set_fontstyle("italic")
        elif style == "note":
            label.set_fontsize(7.5)
            label.set_color("0.35")
    ax.set_ylim(-0.9, top + 0.8)
    ax.set_xlabel(xlabel)
    ax.set_xscale(xscale)
    if xscale == "log":  # plain numbers (0.2, 0.5, 1, 2) rather than powers of ten
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="y", length=0)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)

    ax.text(c_est, top + 0.8, f"Estimate [{res.level:g}% CI]", transform=text, ha="left",
            va="center", fontweight="bold", fontsize=9)  # fmt: skip
    ax.text(c_w, top + 0.8, "Weight", transform=text, ha="right", va="center",
            fontweight="bold", fontsize=9)  # fmt: skip
    right_text(0, f"{_num(est)} [{_num(ci_lb)}, {_num(ci_ub)}]", "100%", bold=True)

    for i, (gid, line) in enumerate(reversed(footer)):
        t = fig.text(0.02, (0.12 + 0.2 * i) / height, line, ha="left", va="bottom", fontsize=8,
                     color="0.3")  # fmt: skip
        t.set_gid(gid)
    if title:
        fig.suptitle(title, fontweight="bold", x=left, ha="left")
    if path is not None:
        _save_atomic(fig, path, dpi)
    return fig
