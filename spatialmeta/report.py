"""The Markdown summary of a forecast run: skill table, pooled skill, where the outputs are."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["forecast_summary"]

_METHOD_NAMES = {
    "meta": "meta-learned graph network (adapted)",
    "meta_noadapt": "meta-learned graph network (not adapted)",
    "global": "global graph network (no adaptation)",
    "global_finetuned": "global graph network fine-tuned on the support window",
    "climatology": "climatology (support window)",
    "persistence": "persistence",
    "ridge_ar": "ridge autoregression (support window)",
}


def _table(frame: pd.DataFrame, cols: list[str]) -> str:
    head = "| method | " + " | ".join(cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = [
        "| "
        + _METHOD_NAMES.get(r["method"], r["method"])
        + " | "
        + " | ".join(f"{r[c]:.3f}" for c in cols)
        + " |"
        for _, r in frame.iterrows()
    ]
    return "\n".join([head, sep, *rows])


def _ranking(frame: pd.DataFrame, units: str) -> list[str]:
    """One line per score: the best method, and the meta-learner against the best baseline."""
    out = []
    methods = frame["method"].tolist()
    baselines = frame[~frame["method"].isin(["meta", "meta_noadapt"])]
    for col in ("rmse", "crps"):
        if col not in frame.columns or "meta" not in methods or baselines.empty:
            continue
        best = frame.loc[frame[col].idxmin()]
        ref = baselines.loc[baselines[col].idxmin()]
        meta = float(frame.loc[frame["method"] == "meta", col].iloc[0])
        rel = meta / float(ref[col]) - 1.0
        out.append(
            f"- {col.upper()}: best {best['method']} ({float(best[col]):.3f} {units}); meta "
            f"{meta:.3f}, {abs(rel):.1%} {'below' if rel < 0 else 'above'} the best baseline "
            f"({ref['method']}, {float(ref[col]):.3f})"
        )
    return out


def _spatial(sp: dict) -> list[str]:
    """The spatial model's lines of the pooled-skill section."""
    ratio, lo, hi = (float(np.exp(sp[c])) for c in ("estimate", "ci_lb", "ci_ub"))
    bound = sp.get("range_at_bound", False)
    rng = (
        "no spatial variance, so the range is not identified"
        if sp["range_km"] is None
        else f"range at its bound, {sp['range_km']:.0f} km: the correlation falls linearly with "
        "distance across the whole domain"
        if bound
        else f"fitted range {sp['range_km']:.0f} km"
    )
    return [
        f"- with neighbouring regions' errors correlated (exponential in the distance between "
        f"centroids, {rng}; spatial variance "
        f"{sp['tau2_spatial']:.4f}, independent {sp['sigma2_independent']:.4f}): pooled MSE "
        f"ratio {ratio:.3f} (95% CI {lo:.3f} to {hi:.3f}), i.e. skill {1 - ratio:+.1%} "
        f"(95% CI {1 - hi:+.1%} to {1 - lo:+.1%}). This is the interval to quote; the one "
        "above takes regions as independent.",
    ]


def _pooled(pooled, spatial: dict | None = None) -> list[str]:
    """The pooled-skill section: random-effects pooling of per-region log MSE ratios."""
    ratio = float(np.exp(pooled.estimate))
    lo, hi = float(np.exp(pooled.ci_lb)), float(np.exp(pooled.ci_ub))
    plo, phi = float(np.exp(pooled.pi_lb)), float(np.exp(pooled.pi_ub))
    return [
        "## Pooled skill across held-out regions (random effects, REML)",
        "",
        f"Per-region effect: log MSE ratio, meta-learned vs climatology (k = {int(pooled.k)} regions; "
        "variance by the delta method with a Newey–West covariance over forecast origins; "
        "regions taken as independent, so the interval is too narrow where neighbouring "
        "regions share errors).",
        "",
        f"- pooled MSE ratio: {ratio:.3f} (95% CI {lo:.3f} to {hi:.3f}), i.e. skill "
        f"{1 - ratio:+.1%} (95% CI {1 - hi:+.1%} to {1 - lo:+.1%})",
        f"- 95% prediction interval for a new region's MSE ratio: {plo:.3f} to {phi:.3f}",
        f"- heterogeneity: tau² = {float(pooled.tau2):.4f}, I² = {float(pooled.I2):.1f}%, "
        f"Q({int(pooled.k) - 1}) = {float(pooled.QE):.2f}, p = {float(pooled.QEp):.3g}",
        *([] if spatial is None else _spatial(spatial)),
        "",
    ]


def _comparison(frame: pd.DataFrame, method: str) -> list[str]:
    """``method`` against each other method: pooled MSE ratios over regions, with intervals
    (and the spatial model's, where it was fitted)."""
    name = _METHOD_NAMES.get(method, method)
    spatial = "spatial_k" in frame and bool((frame["spatial_k"] > 0).any())
    lines = [
        f"## {name[:1].upper() + name[1:]} against each method, region by region",
        "",
        f"Per region, log(MSE of {method} / MSE of the other method), variance by the delta "
        "method with a Newey–West covariance over forecast origins; pooled by random effects "
        "(REML). A ratio below 1 whose interval stays below 1 is a lead beyond the regions' "
        "own sampling noise. That interval takes regions as independent, and neighbouring "
        "regions share weather: where they do, it is too narrow. The Diebold–Mariano test "
        "(DM p) on the area-weighted mean loss of each forecast origin does not assume it, "
        "and is the one to trust when the two disagree."
        + (
            " The spatial columns pool the same ratios with an exponential correlation of the "
            "distance between region centroids (range fitted, every comparison in one batched "
            "fit; regions scored by every method). A range marked * reached its bound, ten "
            "times the regions' extent: the correlation falls linearly with distance across "
            "the whole domain, and range and spatial variance are not told apart (the "
            "interval stands). A range shown – is not identified: the spatial variance is nil."
            if spatial
            else ""
        ),
        "",
        "| against | regions | pooled MSE ratio | 95% CI | p | 95% PI | I² | "
        f"regions where {method} is better | DM p |"
        + (" spatial ratio | spatial 95% CI | range (km) |" if spatial else ""),
        "|---|---:|---:|---|---:|---|---:|---:|---:|" + ("---:|---|---:|" if spatial else ""),
    ]
    for _, r in frame.iterrows():
        if not np.isfinite(r["mse_ratio"]):
            cells = ["–"] * 5
        else:
            cells = [
                f"{r['mse_ratio']:.3f}",
                f"{r['ci_lb']:.3f} to {r['ci_ub']:.3f}",
                f"{r['pval']:.3g}",
                f"{r['pi_lb']:.3f} to {r['pi_ub']:.3f}",
                f"{r['I2']:.0f}%",
            ]
        tail = ""
        if spatial:
            fitted = np.isfinite(r["spatial_mse_ratio"])
            tail = (
                f" {r['spatial_mse_ratio']:.3f} | {r['spatial_ci_lb']:.3f} to "
                f"{r['spatial_ci_ub']:.3f} | "
                + (f"{r['range_km']:,.0f}" if np.isfinite(r["range_km"]) else "–")
                + f"{'*' if r.get('range_at_bound', False) else ''} |"
                if fitted
                else " – | – | – |"
            )
        lines.append(
            f"| {_METHOD_NAMES.get(r['method'], r['method'])} | {int(r['k'])} | "
            + " | ".join(cells)
            + f" | {r['regions_better']:.0%} | "
            + ("–" if not np.isfinite(r["dm_pval"]) else f"{r['dm_pval']:.3g}")
            + " |"
            + tail
        )
    return lines + [""]


def forecast_summary(
    *,
    title: str,
    setup: dict[str, object],
    table: pd.DataFrame,
    pooled,
    units: str,
    outputs: dict[str, str],
    spatial: dict | None = None,
    shots: pd.DataFrame | None = None,
    notes: list[str] | None = None,
    comparison: pd.DataFrame | None = None,
    method: str = "meta",
) -> str:
    """Render the run summary as Markdown.

    Parameters
    ----------
    title : str
    setup : dict
        What was run (data, regions, hold-out, support, test period, training), as shown.
    table : DataFrame
        Area-weighted scores per method (from :class:`ForecastEvaluation`).
    spatial : dict, optional
        The pooled skill with spatially correlated regions
        (:func:`spatialmeta.learn.publish.spatial_skill`), shown beside the independent one.
    pooled : PoolResult or None
        Random-effects pooling of the per-region log MSE ratios (meta vs climatology);
        None (fewer than two held-out regions) leaves the section out.
    units : str
        Units of the forecast variable.
    outputs : dict
        Name → path of every output written.
    shots : DataFrame, optional
        The shots curve (support, method, rmse, crps, ...): RMSE and CRPS per support length.
    notes : list of str, optional
        Sentences on how the data were handled (missing values), shown under the tables.
    comparison : DataFrame, optional
        ``method`` against every other method, pooled over regions
        (:func:`~spatialmeta.learn.evaluate.compare_methods`).
    method : str
        The method that ``comparison`` compares.
    """
    lines = [f"# {title}", "", "## Set-up", ""]
    lines += [f"- {k}: {v}" for k, v in setup.items()]
    lines += [
        "",
        f"## Held-out regions: forecast skill (area-weighted means; {units})",
        "",
        _table(table, [c for c in ("rmse", "mae", "crps", "bias") if c in table.columns]),
        "",
        *_ranking(table, units),
        "",
        "Skill = 1 − MSE(method) / MSE(reference):",
        "",
        _table(table, [c for c in table.columns if c.startswith("skill_vs_")]),
        "",
        *(notes or []),
        "",
    ]
    if comparison is not None and not comparison.empty:
        lines += _comparison(comparison, method)
    if shots is not None:
        lines += ["## Shots curve: skill by length of the support window", ""]
        for col in ("rmse", "crps"):
            wide = shots.pivot(index="method", columns="support", values=col)
            wide = wide.reindex([m for m in shots["method"].unique() if m in wide.index])
            wide.columns = [f"{int(c)} steps" for c in wide.columns]
            lines += [
                f"{col.upper()} ({units}):",
                "",
                _table(wide.reset_index(), list(wide.columns)),
                "",
            ]
    if pooled is not None:
        lines += _pooled(pooled, spatial)
    lines += [
        "## Outputs",
        "",
    ]
    lines += [f"- {k}: `{v}`" for k, v in outputs.items()]
    return "\n".join(lines) + "\n"
