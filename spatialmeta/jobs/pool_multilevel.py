"""The multilevel section of the pool job (``spatialmeta pool --cluster COL --structure
...``): several effects per cluster (study) fitted by
:func:`~spatialmeta.meta_analysis.multilevel.pool_mv` instead of treating them as
independent: a three-level model (effects within clusters) or effects correlated across the
levels of an inner column (CS, HCS, UN, AR, DIAG), the sampling errors within a cluster
correlated by ``--rho`` (:func:`~spatialmeta.meta_analysis.vcov.impute_covariance_matrix`),
and cluster-robust inference on that fit (:func:`~spatialmeta.meta_analysis.robust.robust`).
Its report section, results and summary line."""

from __future__ import annotations

from typing import Any

import numpy as np

from spatialmeta.meta_analysis.multilevel import MultilevelResult, Structured, pool_mv
from spatialmeta.meta_analysis.results import fmt_num, fmt_p
from spatialmeta.meta_analysis.robust import robust
from spatialmeta.meta_analysis.structures import STRUCTS
from spatialmeta.meta_analysis.vcov import impute_covariance_matrix

__all__ = ["STRUCTURES", "check_structure", "multilevel_fit", "multilevel_markdown",
           "multilevel_results", "multilevel_summary"]  # fmt: skip

STRUCTURES = ("3level", *STRUCTS)


def check_structure(structure: str | None, inner: str | None, cluster: str | None,
                    rho: float) -> str | None:  # fmt: skip
    """The problem with the options, in the user's words (None: fine)."""
    if structure is None:
        if inner is not None:
            return "--inner needs --structure (CS, HCS, UN, AR or DIAG)"
        return None
    if structure not in STRUCTURES:
        return f"--structure must be one of {', '.join(STRUCTURES)}; got {structure!r}"
    if cluster is None:
        return f"--structure {structure} needs --cluster (the column of clusters, e.g. studies)"
    if structure == "3level" and inner is not None:
        return "--inner goes with --structure CS, HCS, UN, AR or DIAG, not 3level"
    if structure != "3level" and inner is None:
        return (f"--structure {structure} needs --inner (the column whose levels are "
                "correlated within a cluster, e.g. outcome or time)")  # fmt: skip
    if not -1 < rho < 1:
        return f"--rho must lie in (-1, 1); got {rho:g}"
    return None


def multilevel_fit(st, structure: str, *, rho: float, method: str, level: float,
                   robust_type: str, notes: list[str]) -> dict[str, Any]:  # fmt: skip
    """The multilevel fit of the studies ``st`` (``st.clusters`` the outer clusters,
    ``st.inner`` the inner levels), its profile intervals and its cluster-robust tests."""
    mv_method = method if method in ("REML", "ML") else "REML"
    if mv_method != method:
        notes.append(f"multilevel model: fitted by REML (--method {method} is a method of "
                     "the one-level model only)")  # fmt: skip
    V = impute_covariance_matrix(st.vi, st.clusters, rho) if rho else st.vi
    kw = dict(mods=st.mods, method=mv_method, level=level)
    if structure == "3level":
        eff = np.arange(st.yi.size)
        fit = pool_mv(st.yi, V, random=[st.clusters, (st.clusters, eff)],
                      names=["cluster", "effect"], **kw)  # fmt: skip
    else:
        fit = pool_mv(st.yi, V, structured=Structured(st.inner, st.clusters, structure), **kw)
    out = {"fit": fit, "structure": structure, "rho": rho, "confint": fit.confint(level)}
    out["robust"] = robust(fit, st.clusters, type=robust_type)
    return out


def _components(fit: MultilevelResult, ci) -> list[tuple[str, float, str]]:
    """Each random-effects parameter with its profile interval (a bound the likelihood
    does not drop to marked "(bound)")."""
    rows = []
    for name, r in ci.iterrows():
        label = f"sigma^2 ({name})" if name in fit.levels else str(name).replace("tau2", "tau^2")
        lo = fmt_num(r.ci_lb) + (" (bound)" if r.lb_at_bound and r.ci_lb != 0 else "")
        hi = fmt_num(r.ci_ub) + (" (bound)" if r.ub_at_bound else "")
        rows.append((label, float(r.estimate), f"{lo} to {hi}"))
    return rows


def multilevel_markdown(m: dict[str, Any], cluster: str, inner: str | None) -> list[str]:
    fit: MultilevelResult = m["fit"]
    what = ("effects nested in clusters (three-level model)" if m["structure"] == "3level"
            else f"effects correlated across {inner!r} within clusters ({m['structure']})")  # fmt: skip
    lines = [
        f"- {what}; clusters from column {cluster!r}; {fit.method}, k = {fit.k}",
        f"- sampling errors within a cluster correlated by rho = {m['rho']:g}"
        + (
            " (independent)"
            if not m["rho"]
            else " (imputed, clubSandwich's impute_covariance_matrix)"
        ),  # fmt: skip
        "",
        f"| component | estimate | {fit.level:g}% profile CI |",
        "|---|---:|---|",
    ]
    for name, est, ci in _components(fit, m["confint"]):
        lines.append(f"| {name} | {fmt_num(est)} | {ci} |")
    if fit.I2 is not None and fit.struct_levels is None:
        lines += ["", "I² by level: " + ", ".join(
            f"{n} {fmt_num(v, 1)}%" for n, v in zip(fit.levels, fit.I2, strict=True))]  # fmt: skip
    lines += ["", "| coefficient | estimate | se | z | p | CI | robust se | robust p (df) |",
              "|---|---:|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    rb = m["robust"]
    for i, name in enumerate(fit.coef_names):
        lines.append(
            f"| {name} | {fmt_num(fit.beta[i])} | {fmt_num(fit.se[i])} | {fmt_num(fit.zval[i])} "
            f"| {fmt_p(fit.pval[i])} | {fmt_num(fit.ci_lb[i])} to {fmt_num(fit.ci_ub[i])} "
            f"| {fmt_num(rb.se[i])} | {fmt_p(rb.pval[i])} ({fmt_num(rb.df[i], 1)}) |"
        )
    lines += ["", f"Residual heterogeneity: QE({fit.k - len(fit.beta)}) = {fmt_num(fit.QE)}, "
              f"p {fmt_p(fit.QEp)}."]  # fmt: skip
    if fit.QMdf:
        lines.append(f"Moderators: QM({fit.QMdf}) = {fmt_num(fit.QM)}, p {fmt_p(fit.QMp)}.")
    lines += [f"Robust ({rb.type}, {rb.n_clusters} clusters, Satterthwaite df) standard errors "
              "do not rely on the assumed structure being right.", ""]  # fmt: skip
    return lines


def multilevel_results(m: dict[str, Any]) -> dict[str, Any]:
    fit: MultilevelResult = m["fit"]
    out = {"structure": m["structure"], "rho": m["rho"], "model": fit.to_dict()}
    out["model"].pop("yi", None)
    out["confint"] = m["confint"].reset_index().to_dict(orient="records")
    rb = m["robust"].to_dict()
    rb.pop("vcov", None)
    out["robust"] = rb
    return out


def multilevel_summary(m: dict[str, Any]) -> str:
    fit, rb = m["fit"], m["robust"]
    return (f"Multilevel ({m['structure']}): estimate {fmt_num(fit.beta[0])} (robust {rb.type} "
            f"SE {fmt_num(rb.se[0])}, p {fmt_p(rb.pval[0])}, {rb.n_clusters} clusters)")  # fmt: skip
