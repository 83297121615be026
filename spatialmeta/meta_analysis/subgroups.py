"""Subgroup analysis: a pooled result per subgroup and the test for subgroup differences.

Two conventions, as analysts use them (``tau2=``):

``"separate"`` (default)
    Each subgroup gets its own model and its own tau^2; every subgroup of
    every meta-analysis of a batch is fitted with one :func:`pool` call on
    the ``(..., G, k)`` batch of NaN-masked subgroup rows. The subgroup
    estimates are then compared with a Wald-type test (Q-between), the
    ``QM`` of metafor's ``rma(estimate, sei = se, mods = ~ group, method =
    "FE")`` on the per-subgroup fits ("subgroup analysis with separate tau^2"
    in metafor's documentation; also RevMan's test for subgroup differences).
``"common"``
    One tau^2 shared by all subgroups: the mixed-effects meta-regression on
    the subgroup indicators, metafor's ``rma(yi, vi, mods = ~ group - 1)``
    for the subgroup estimates, whose test of equal subgroup means is the
    ``QM`` of ``rma(yi, vi, mods = ~ group)`` (an F test with the
    Knapp-Hartung method). Fitted with ``pool(..., mods=...)``.

References
----------
Borenstein, M., Hedges, L. V., Higgins, J. P. T., & Rothstein, H. R. (2009).
*Introduction to Meta-Analysis*, ch. 19 (subgroup analyses). Wiley.
doi:10.1002/9780470743386
Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor
package. *Journal of Statistical Software*, 36(3). doi:10.18637/jss.v036.i03
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis.estimators import FIXED_METHODS
from spatialmeta.meta_analysis.fitted import as_fit, fits_by_k
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.results import Count, Pooled, Value, fmt_p

__all__ = ["SubgroupResult", "subgroups"]

_GROUP_FIELDS = (
    "k", "estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2",
    "I2", "H2", "QE", "QEp", "pi_lb", "pi_ub", "converged",
)  # fmt: skip
_FLOAT_FIELDS = _GROUP_FIELDS[1:-1]
_SINGLE = ("error", "fixed")


@dataclass(frozen=True, eq=False)
class SubgroupResult(Pooled):
    """Result of :func:`subgroups`.

    ``levels`` names the G subgroups (sorted, as R's ``factor``, unless
    ``groups`` was a pandas Categorical). Per-subgroup fields (``k, estimate,
    se, zval, pval, ci_lb, ci_ub, tau2, se_tau2, I2, H2, QE, QEp, pi_lb,
    pi_ub, converged``) have shape ``(..., G)``, the batch shape of ``yi``
    followed by the subgroup axis; a subgroup without studies in a row is
    NaN there (``k = 0``). ``Qb`` (alias ``QM``) is the test for subgroup
    differences on ``Qb_df`` (``QMdf``) degrees of freedom, number of
    non-empty subgroups minus one, with p-value ``Qb_pval`` (``QMp``); these
    are scalars for a single meta-analysis. ``Qb`` is referred to chi^2,
    except for ``tau2_model="common"`` with ``test="knha"``, where it is an F
    statistic on ``(Qb_df, Qb_ddf)`` degrees of freedom (``Qb_ddf`` is NaN
    otherwise). ``overall`` is the model fitted to all studies, ignoring the
    subgroups; ``model`` is the common-tau^2 meta-regression (``None`` for
    separate tau^2), whose ``QE``, ``I2`` and ``H2`` describe the residual
    heterogeneity (per-subgroup ``I2``/``H2`` are then NaN, ``QE``/``QEp``
    are each subgroup's Cochran Q and ``tau2`` repeats the common value).
    """

    levels: list
    Qb: Value
    Qb_df: Count
    Qb_pval: Value
    Qb_ddf: Value
    method: str
    test: str
    level: float
    tau2_model: str = "separate"
    groups: np.ndarray | None = None
    overall: PoolResult | None = None
    yi: np.ndarray | None = None
    vi: np.ndarray | None = None
    labels: np.ndarray | None = None
    model: PoolResult | None = None

    @property
    def QM(self) -> Any:
        """metafor's name for the test for subgroup differences (``Qb``)."""
        return self.Qb

    @property
    def QMdf(self) -> Any:
        """Degrees of freedom of ``QM`` (``Qb_df``)."""
        return self.Qb_df

    @property
    def QMp(self) -> Any:
        """p-value of ``QM`` (``Qb_pval``)."""
        return self.Qb_pval

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the batch; ``()`` for a single meta-analysis."""
        return np.shape(self.Qb)

    def group(self, name) -> PoolResult:
        """The pooled result of one subgroup of a single meta-analysis, as a PoolResult.

        Refits that subgroup's studies with :func:`pool` (a single-study
        subgroup is fitted with a common effect and a z test, as metafor does
        for k = 1).
        """
        if self.batch_shape:
            raise ValueError(
                "`group()` works on a single meta-analysis; for a batch read the (..., G) "
                "arrays (e.g. `res.estimate[..., res.levels.index(name)]`)."
            )
        if name not in self.levels:
            raise KeyError(f"no subgroup {name!r}; the subgroups are {self.levels}.")
        sel = (np.asarray(self.groups) == name) & ~np.isnan(self.yi)
        lab = None if self.labels is None else np.asarray(self.labels)[sel]
        single = int(sel.sum()) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pool(
                self.yi[sel],
                self.vi[sel],
                method="FE" if single else self.method,
                test="z" if single else self.test,
                level=self.level,
                labels=lab,
                control=None if self.overall is None else self.overall.control,
            )

    def to_frame(self) -> pd.DataFrame:
        """One row per subgroup (and batch row): k, estimate, se, zval/tval, pval, ..."""
        shape = np.shape(self.estimate)
        cols = {}
        for f in _GROUP_FIELDS:
            name = "tval" if (f == "zval" and self.test == "knha") else f
            cols[name] = np.asarray(getattr(self, f)).reshape(-1)
        frame = pd.DataFrame(cols)
        if len(shape) == 1:
            frame.index = pd.Index(list(self.levels), name="group")
        else:
            tuples = [(*i[:-1], self.levels[i[-1]]) for i in np.ndindex(*shape)]
            names = [f"row{j}" for j in range(len(shape) - 1)] + ["group"]
            frame.index = pd.MultiIndex.from_tuples(tuples, names=names)
        return frame

    def _rows(self):
        if not self.batch_shape:
            yield None, self
            return
        for index in np.ndindex(*self.batch_shape):
            yield index, index

    def _one(self, index) -> tuple[pd.DataFrame, str]:
        frame = self.to_frame()
        if index is None:
            return frame, _qb_line(self.Qb, self.Qb_df, self.Qb_pval, self.Qb_ddf)
        line = _qb_line(
            float(np.asarray(self.Qb)[index]),
            int(np.asarray(self.Qb_df)[index]),
            float(np.asarray(self.Qb_pval)[index]),
            float(np.asarray(self.Qb_ddf)[index]),
        )
        return frame.loc[tuple(index)], line

    def _title(self) -> str:
        test = "Knapp-Hartung" if self.test == "knha" else "z"
        if self.method in FIXED_METHODS:
            model = "common-effect model per subgroup"
        elif self.tau2_model == "common":
            model = f"mixed-effects model with a common tau^2 ({self.method})"
        else:
            model = f"random-effects model per subgroup, separate tau^2 ({self.method})"
        return f"Subgroup analysis: {model}, {test} test"

    def _shows(self) -> tuple[bool, bool]:
        """Whether the tables show a per-subgroup tau^2 column and an I^2 column."""
        separate = self.tau2_model == "separate"
        return separate and self.method not in FIXED_METHODS, separate

    def _common_line(self, index) -> str:
        """Common tau^2 and residual heterogeneity of the meta-regression (common tau^2)."""
        if self.model is None:
            return ""
        m = self.model

        def at(x):
            return float(np.asarray(x)[index] if index is not None else x)

        kf, n_groups = at(np.asarray(self.k).sum(axis=-1)), len(self.levels)
        pe = at(m.QEp)
        pv = fmt_p(pe, eq=True)
        tau = "R" if self.method in FIXED_METHODS else f"Common tau^2 = {at(m.tau2):.4f}, r"
        return (
            f"{tau}esidual heterogeneity QE(df = {kf - n_groups:g}) = "
            f"{at(m.QE):.4f}, p-val {pv}, I^2 = {at(m.I2):.2f}%\n"
        )

    def summary(self, digits: int = 4) -> str:
        """A plain-text report: a table of subgroups and the test for subgroup differences."""
        blocks = []
        tau_col, i2_col = self._shows()
        for index, _ in self._rows():
            frame, line = self._one(index)
            cols = ["k", "estimate", "se", "tval" if self.test == "knha" else "zval", "pval"]
            cols += ["ci_lb", "ci_ub"]
            cols += ["tau2"] if tau_col else []
            cols += ["I2"] if i2_col else []
            cols += ["QE", "QEp"]
            text = frame[cols].to_string(float_format=lambda x: f"{x:.{digits}f}")
            head = self._title()
            if index is not None:
                head = f"Row {index if len(index) > 1 else index[0]}: " + head
            common = self._common_line(index)
            blocks.append(f"{head}\n\n{text}\n\n{common}Test for Subgroup Differences: {line}\n")
        return "\n".join(blocks)

    def to_markdown(self, digits: int = 3) -> str:
        """A Markdown table of the subgroups and the test for subgroup differences."""
        blocks = []
        stat = "t" if self.test == "knha" else "z"
        tau_col, i2_col = self._shows()
        for index, _ in self._rows():
            frame, line = self._one(index)
            head = ["Subgroup", "k", "Estimate", "SE", f"{self.level:g}% CI", stat, "p"]
            head += ["tau^2"] if tau_col else []
            head += ["I^2 (%)"] if i2_col else []
            head += ["Q", "p(Q)"]
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for name, row in frame.iterrows():
                name = name[-1] if isinstance(name, tuple) else name
                cells = [
                    str(name),
                    str(int(row["k"])),
                    _f(row["estimate"], digits),
                    _f(row["se"], digits),
                    f"[{_f(row['ci_lb'], digits)}, {_f(row['ci_ub'], digits)}]",
                    _f(row["tval" if self.test == "knha" else "zval"], 2),
                    _p(row["pval"]),
                ]
                cells += [_f(row["tau2"], digits)] if tau_col else []
                cells += [_f(row["I2"], 1)] if i2_col else []
                cells += [_f(row["QE"], 2), _p(row["QEp"])]
                lines.append("| " + " | ".join(cells) + " |")
            title = f"**{self._title()}**"
            if index is not None:
                title = f"**Row {index if len(index) > 1 else index[0]}: {self._title()}**"
            common = self._common_line(index).strip()
            tail = ([common, ""] if common else []) + [f"Test for subgroup differences: {line}"]
            blocks.append("\n".join([title, "", *lines, "", *tail]))
        return "\n\n".join(blocks) + "\n"

    def __str__(self) -> str:
        return self.summary()


def _f(x: float, digits: int) -> str:
    return "NA" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return fmt_p(p)


def _qb_line(qb: float, df: int, p: float, ddf: float = np.nan) -> str:
    name = "QM" if np.isnan(ddf) else "F"
    dfs = f"df = {df}" if np.isnan(ddf) else f"df1 = {df}, df2 = {ddf:g}"
    if np.isnan(qb):
        return f"{name}({dfs}) = NA (fewer than two subgroups with studies)"
    return f"{name}({dfs}) = {qb:.4f}, p-val {fmt_p(p, eq=True)}"


# --------------------------------------------------------------------------- inputs


def _codes(groups, y: np.ndarray) -> tuple[np.ndarray, list]:
    """Integer subgroup codes broadcast to ``y.shape`` (-1 = missing) and the level names."""
    kmax = y.shape[-1] if y.ndim else 0
    categories = None
    if isinstance(groups, pd.Series | pd.Index):
        if isinstance(groups.dtype, pd.CategoricalDtype):
            categories = list(groups.dtype.categories)
        groups = groups.to_numpy()
    elif isinstance(groups, pd.Categorical):
        categories = list(groups.categories)
        groups = np.asarray(groups, dtype=object)
    g = np.asarray(groups, dtype=object) if not isinstance(groups, np.ndarray) else groups
    if g.ndim == 0:
        raise ValueError(
            "`groups` must give one subgroup per study (shape (k,) or that of `yi`); got a "
            f"scalar {g.item()!r}."
        )
    if g.shape not in (y.shape, (kmax,)):
        raise ValueError(
            f"`groups` has {g.shape[-1] if g.ndim == 1 else g.shape} "
            f"{'entries' if g.ndim == 1 else '(shape)'} but `yi` has {kmax} studies (shape "
            f"{y.shape}); give one subgroup per study, shape ({kmax},) or {y.shape}."
        )
    flat = pd.Series(np.asarray(g, dtype=object).reshape(-1))
    missing = flat.isna().to_numpy().reshape(g.shape)
    if categories is not None:
        used = set(flat[~flat.isna()])
        levels = [c for c in categories if c in used]
        lookup = {c: i for i, c in enumerate(levels)}
        codes = np.array([lookup.get(x, -1) if not m else -1 for x, m in
                          zip(flat, missing.reshape(-1), strict=True)])  # fmt: skip
    else:
        try:
            codes, uniques = pd.factorize(flat, sort=True)
        except TypeError:  # mixed types cannot be sorted: sort by their text
            codes, uniques = pd.factorize(flat.map(lambda x: x if pd.isna(x) else str(x)), True)
        levels = list(uniques)
    codes = np.asarray(codes, dtype=int).reshape(g.shape)
    codes = np.broadcast_to(codes, y.shape)
    missing = np.broadcast_to(missing, y.shape)
    bad = missing & ~np.isnan(y)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"study {idx[0]}" if len(idx) == 1 else f"study {idx[-1]} of row {list(idx[:-1])}"
        raise ValueError(
            f"`groups` is missing (None/NaN) for {where}, which has an effect size; give "
            "every study a subgroup, or set its yi and vi to NaN to drop it."
        )
    return codes, [x.item() if isinstance(x, np.generic) else x for x in levels]


def _mods_column(yi, name: str):
    est = yi.estimates() if hasattr(yi, "estimates") and callable(yi.estimates) else yi
    mods = getattr(est, "mods", None)
    if mods is None or name not in getattr(mods, "columns", ()):
        have = [] if mods is None else list(mods.columns)
        raise ValueError(
            f"`groups={name!r}` names a moderator column, but `yi` has no such column "
            f"(moderators: {have}); pass the subgroup of every study as an array instead."
        )
    return mods[name]


def subgroups(
    yi,
    vi=None,
    groups=None,
    *,
    method: str | None = None,
    test: str | None = None,
    level: float | None = None,
    tau2: str = "separate",
    single_study: str = "error",
    labels=None,
    control=None,
) -> SubgroupResult:
    """Subgroup analysis: a model per subgroup and the test for subgroup differences.

    Parameters
    ----------
    yi : PoolResult, array_like or object with ``.estimates()``
        A fitted intercept-only model (every subgroup is fitted with its estimator,
        test and level, and it is the ``overall`` result), or effect sizes, shape
        ``(..., k)`` (NaN = missing study), see :func:`pool`.
    vi : array_like, optional
        Sampling variances, same shape as ``yi``.
    groups : array_like or str
        The subgroup of every study, shape ``(k,)`` (the same for every
        batch row) or that of ``yi``: strings, numbers or a pandas
        Categorical (whose category order is kept; otherwise subgroups are
        sorted, as R's ``factor``). A string names a column of the ``mods``
        table when ``yi`` is an Estimates (or has ``.estimates()``).
    method, test, level
        As for :func:`~spatialmeta.meta_analysis.pool.pool` (default REML, z, 95),
        used in every subgroup; with a fitted ``yi`` the fit's (given as well, they
        must agree with it).
    tau2 : {"separate", "common"}
        ``"separate"``: each subgroup has its own tau^2 (its own model), and
        the test for subgroup differences is the Wald-type
        ``Qb = sum_g (b_g - b_bar)^2 / se_g^2`` with ``b_bar`` the
        inverse-variance mean of the subgroup estimates, chi^2 on G - 1 df;
        that is metafor's ``QM`` of ``rma(b_g, sei = se_g, mods = ~ group,
        method = "FE")``. ``"common"``: one tau^2 for all subgroups, the
        meta-regression ``rma(yi, vi, mods = ~ group - 1)`` (subgroup
        estimates) whose test of equal means is metafor's ``QM`` of
        ``rma(yi, vi, mods = ~ group)``; every subgroup needs a study in
        every row, and k > G studies in all.
    single_study : {"error", "fixed"}
        With separate tau^2, what to do with a subgroup holding one study
        under a random-effects method: raise (default), or fit it as
        metafor's ``rma`` does for k = 1 (tau^2 = 0, z test), giving
        ``estimate = yi`` and ``se = sqrt(vi)``. (A common tau^2 is estimated
        from all subgroups, so single-study subgroups need nothing special.)
    labels : array_like, optional
        Study labels, kept for :meth:`SubgroupResult.group`.
    control : dict or Control, optional
        Fisher scoring's settings (as for :func:`pool`); with a fitted ``yi``, the fit's.

    Returns
    -------
    SubgroupResult
        Per-subgroup arrays of shape ``(..., G)``, ``Qb``/``Qb_df``/``Qb_pval``
        (aliases ``QM``/``QMdf``/``QMp``), ``overall`` (all studies pooled),
        ``model`` (the common-tau^2 fit), ``to_frame()``, ``to_dict()``,
        ``summary()`` and ``to_markdown()``.

    Raises
    ------
    ValueError
        ``groups`` of the wrong length or missing for a study, a subgroup
        with one study under a random-effects method with separate tau^2
        (unless ``single_study="fixed"``), an empty subgroup with common
        tau^2, or any input :func:`pool` rejects.

    Notes
    -----
    With ``test="knha"`` each subgroup uses the Knapp-Hartung standard error
    and t distribution, and ``Qb`` is computed from those standard errors,
    still referred to chi^2 (as metafor's recipe does). A subgroup with a
    single study under ``method="FE"`` is fitted with a z test, as metafor
    does for k = 1.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01, -0.47])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06, 0.03])
    >>> res = subgroups(yi, vi, ["a", "a", "a", "b", "b", "b", "b", "a"], method="DL")
    >>> res.levels, res.k.tolist()
    (['a', 'b'], [4, 4])
    >>> np.round(res.estimate, 4).tolist()
    [-0.9683, -0.6381]
    >>> round(res.Qb, 4), res.Qb_df, round(res.Qb_pval, 4)
    (0.5816, 1, 0.4457)
    """
    if groups is None:
        raise TypeError("`groups` is missing: give the subgroup of every study.")
    if tau2 not in ("separate", "common"):
        raise ValueError(f"`tau2` must be 'separate' or 'common'; got {tau2!r}.")
    if single_study not in _SINGLE:
        raise ValueError(f"`single_study` must be 'error' or 'fixed'; got {single_study!r}.")
    if isinstance(groups, str):
        groups = _mods_column(yi, groups)
    overall = as_fit(yi, vi, what="subgroups", method=method, test=test, level=level,
                     labels=labels, control=control)  # fmt: skip
    y, v = np.asarray(overall.yi, dtype=float), np.asarray(overall.vi, dtype=float)
    method, test, level = overall.method, overall.test, overall.level
    codes, levels = _codes(groups, y)
    n_groups = len(levels)
    shape = y.shape[:-1]
    obs = ~np.isnan(y)

    member = (codes[..., None, :] == np.arange(n_groups)[:, None]) & obs[..., None, :]
    kg = member.sum(axis=-1)  # (..., G)
    single = tau2 == "separate" and method not in FIXED_METHODS and single_study == "error"
    if single and (kg == 1).any():
        idx = tuple(int(i) for i in np.argwhere(kg == 1)[0])
        name = levels[idx[-1]]
        study = int(np.argmax(member[idx]))
        lab = ""
        if overall.labels is not None:
            lab_arr = np.asarray(overall.labels)
            lab = f" ({lab_arr[idx[:-1] + (study,)] if lab_arr.ndim > 1 else lab_arr[study]})"
        row = f" in row {list(idx[:-1])}" if idx[:-1] else ""
        raise ValueError(
            f"subgroup {name!r}{row} has a single study (study {study}{lab}); method="
            f"{method!r} cannot estimate tau^2 from one study. Merge it into another subgroup, "
            "drop it, use method='FE' or tau2='common' (one tau^2 from all subgroups), or pass "
            "single_study='fixed' to fit it with tau^2 = 0 (as metafor's rma does for k = 1)."
        )

    if tau2 == "common":
        out, qb, df, qp, ddf, model = _common_tau2(
            y, v, codes, member, kg, method, test, level, overall.control
        )
    else:
        out, qb, df, qp = _separate_tau2(
            y, v, member, kg, levels, method, test, level, overall.control
        )
        ddf, model = np.full(np.shape(qb), np.nan), None
    if not shape:
        qb, df, qp, ddf = float(qb), int(df), float(qp), float(ddf)
    return SubgroupResult(
        levels=levels,
        **out,
        Qb=qb,
        Qb_df=df,
        Qb_pval=qp,
        Qb_ddf=ddf,
        method=method,
        test=test,
        level=level,
        tau2_model=tau2,
        groups=np.asarray(groups, dtype=object),
        overall=overall,
        yi=y,
        vi=v,
        labels=overall.labels,
        model=model,
    )


def _fit_groups(yy, vv, kf, method, test, level, control=None) -> dict[str, np.ndarray]:
    """pool() on the flattened subgroup rows; one-study rows as metafor's k = 1 fit."""
    out = {f: np.full(kf.shape, np.nan) for f in _FLOAT_FIELDS}
    out["k"] = kf.astype(int)
    out["converged"] = np.ones(kf.shape, dtype=bool)
    for sel, fit in fits_by_k(yy, vv, kf, method, test, level, control):
        for f in _FLOAT_FIELDS:
            out[f][sel] = np.asarray(getattr(fit, f), dtype=float)
        out["converged"][sel] = np.asarray(fit.converged)
    return out


def _q_between(est, se, has):
    """Q of the subgroup estimates around their inverse-variance mean, and its df.

    This is the QM of the saturated common-effect meta-regression of the
    estimates on the subgroup (metafor: ``rma(est, sei = se, mods = ~ group,
    method = "FE")``), and the Wald test of equal subgroup means whenever the
    estimates are independent.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(has, 1.0 / se**2, 0.0)
        bar = (w * np.where(has, est, 0.0)).sum(axis=-1) / w.sum(axis=-1)
        qb = (w * np.where(has, est - bar[..., None], 0.0) ** 2).sum(axis=-1)
    df = has.sum(axis=-1) - 1
    ok = (df >= 1) & np.isfinite(qb)
    return np.where(ok, qb, np.nan), df, ok


def _separate_tau2(y, v, member, kg, levels, method, test, level, control=None):
    kmax = y.shape[-1]
    yy = np.where(member, y[..., None, :], np.nan).reshape(-1, kmax)
    vv = np.where(member, v[..., None, :], np.nan).reshape(-1, kmax)
    out = _fit_groups(yy, vv, kg.reshape(-1), method, test, level, control)
    if not out["converged"].all():
        bad = np.argwhere(~out["converged"].reshape(kg.shape))[0]
        warnings.warn(
            f"tau^2 estimation ({method}) did not converge in subgroup "
            f"{levels[int(bad[-1])]!r}"
            + (f" of row {bad[:-1].tolist()}" if kg.ndim > 1 else "")
            + "; see `converged`.",
            RuntimeWarning,
            stacklevel=3,
        )
    out = {f: a.reshape(kg.shape) for f, a in out.items()}
    qb, df, ok = _q_between(out["estimate"], out["se"], out["k"] > 0)
    qp = np.where(ok, stats.chi2.sf(qb, np.maximum(df, 1)), np.nan)
    return out, qb, df, qp


def _common_tau2(y, v, codes, member, kg, method, test, level, control=None):
    """One tau^2 for all subgroups: the meta-regression on subgroup indicators (no intercept)."""
    n_groups = kg.shape[-1]
    if (kg == 0).any():
        idx = tuple(int(i) for i in np.argwhere(kg == 0)[0])
        row = f" in row {list(idx[:-1])}" if idx[:-1] else ""
        raise ValueError(
            f'tau2="common" needs every subgroup in every meta-analysis; subgroup {idx[-1]} '
            f"has no studies{row}. Drop the empty subgroup or use tau2='separate'."
        )
    flat = codes.reshape(-1, codes.shape[-1])
    shared = bool((flat == flat[0]).all())  # one design for every row of the batch
    onehot = ((flat[0] if shared else codes)[..., None] == np.arange(n_groups)).astype(float)
    try:
        model = pool(
            y, v, mods=onehot, intercept=False, method=method, test=test, level=level,
            control=control,
        )  # fmt: skip
    except TypeError as err:  # pragma: no cover - pool() without meta-regression
        raise NotImplementedError(
            'tau2="common" needs pool(..., mods=...) (meta-regression); use tau2="separate".'
        ) from err
    est = np.asarray(model.estimate, dtype=float)
    se = np.asarray(model.se, dtype=float)
    t2 = np.asarray(model.tau2, dtype=float)[..., None]
    kf = kg.sum(axis=-1).astype(float)
    out = {
        "k": kg,
        "estimate": est,
        "se": se,
        "zval": np.asarray(model.zval, dtype=float),
        "pval": np.asarray(model.pval, dtype=float),
        "ci_lb": np.asarray(model.ci_lb, dtype=float),
        "ci_ub": np.asarray(model.ci_ub, dtype=float),
        "tau2": np.broadcast_to(t2, est.shape).copy(),
        "se_tau2": np.broadcast_to(
            np.asarray(model.se_tau2, dtype=float)[..., None], est.shape
        ).copy(),
        "I2": np.full(est.shape, np.nan),
        "H2": np.full(est.shape, np.nan),
        "converged": np.broadcast_to(np.asarray(model.converged)[..., None], est.shape).copy(),
    }
    # Within-subgroup heterogeneity (Cochran's Q of each subgroup; it does not involve tau^2).
    with np.errstate(divide="ignore", invalid="ignore"):
        w0 = np.where(member, 1.0 / np.where(member, v[..., None, :], 1.0), 0.0)
        y0 = np.where(member, y[..., None, :], 0.0)
        mean = (w0 * y0).sum(axis=-1) / w0.sum(axis=-1)
        qe = (w0 * np.where(member, y0 - mean[..., None], 0.0) ** 2).sum(axis=-1)
    out["QE"] = np.where(kg > 1, qe, 0.0)
    out["QEp"] = np.where(kg > 1, stats.chi2.sf(out["QE"], np.maximum(kg - 1, 1)), 1.0)
    alpha = 1.0 - level / 100.0
    ddf = kf - n_groups
    if method in FIXED_METHODS:
        out["pi_lb"] = out["pi_ub"] = np.full(est.shape, np.nan)
    else:
        if test == "knha":
            crit = stats.t.isf(alpha / 2.0, np.maximum(ddf, 1.0))[..., None]
        else:
            crit = stats.norm.isf(alpha / 2.0)
        half = crit * np.sqrt(se**2 + t2)
        out["pi_lb"], out["pi_ub"] = est - half, est + half
    # QM of rma(yi, vi, mods = ~ group): the Wald test of equal subgroup means, an F
    # test (Wald / (G - 1) on G - 1 and k - G df) with the Knapp-Hartung method.
    qb, df, ok = _q_between(est, se, kg > 0)
    if test == "knha":
        qb = qb / np.maximum(df, 1)
        qp = np.where(ok, stats.f.sf(qb, np.maximum(df, 1), np.maximum(ddf, 1.0)), np.nan)
    else:
        qp = np.where(ok, stats.chi2.sf(qb, np.maximum(df, 1)), np.nan)
        ddf = np.full(np.shape(qb), np.nan)
    return out, qb, df, qp, ddf, model
