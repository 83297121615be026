"""Pool effect sizes like ``metafor::rma.uni``: many meta-analyses at once, with moderators."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from spatialmeta.meta_analysis import estimators as _estimators
from spatialmeta.meta_analysis import regression
from spatialmeta.meta_analysis._common import (
    check_labels,
    check_studies,
)
from spatialmeta.meta_analysis._common import first as _first
from spatialmeta.meta_analysis._common import read_inputs as _read_inputs
from spatialmeta.meta_analysis._common import where as _where
from spatialmeta.meta_analysis.estimators import (
    FIXED_METHODS,
    RANDOM_METHODS,
    _rowsum,
    _wdot,
    estimate_tau2,
)
from spatialmeta.meta_analysis.results import Count, Pooled, Prediction, Value, fmt_num, fmt_p
from spatialmeta.meta_analysis.spec import Control, FitSpec

__all__ = ["MetaRegressionResult", "PoolResult", "pool"]

_ROW_FIELDS = (
    "estimate", "se", "zval", "df", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2",
    "I2", "H2", "QE", "QEp", "pi_lb", "pi_ub", "k", "converged", "iterations",
)  # fmt: skip
_STUDY_FIELDS = ("yi", "vi", "weights")
# Per-meta-analysis fields that carry a trailing axis (coefficients) or are optional.
_EXTRA_FIELDS = ("beta", "vb", "QM", "QMp", "QMdf", "R2", "vt")
_COEF_FIELDS = ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub")


@dataclass(frozen=True, eq=False)
class PoolResult(Pooled):
    """Result of :func:`pool`; field names follow metafor's ``rma.uni`` object.

    Every per-meta-analysis field is a Python scalar when ``pool`` got one
    meta-analysis (1-D ``yi``) and an array of the batch shape otherwise.
    ``zval`` holds the test statistic; with ``test="knha"`` it is a t value
    (also available as :attr:`tval`) on ``df = k - p`` degrees of freedom.
    ``yi``, ``vi`` and ``weights`` (percent weight of each study, as metafor's
    ``weights()``) keep the study axis, NaN where a study is missing.

    With moderators (a meta-regression, :attr:`has_mods`), ``estimate``
    (also ``beta``), ``se``, ``zval``, ``pval``, ``ci_lb`` and ``ci_ub`` have a
    trailing coefficient axis of length ``p`` named by ``coef_names``; ``vb``
    is the ``(p, p)`` covariance matrix of the coefficients; ``QM``/``QMp``
    test the moderators (all coefficients but the intercept; an F test on
    ``QMdf = (m, k - p)`` with ``test="knha"``); ``QE``/``QEp`` test residual
    heterogeneity on ``k - p`` df; ``I2``/``H2`` are residual (from tau^2 and
    ``vt``, the typical within-study variance ``(k - p) / tr(P)``); ``R2`` is
    metafor's pseudo-R^2 in percent; ``pi_lb``/``pi_ub`` are NaN (use
    :meth:`predict`); ``X`` is the design matrix ``(..., k, p)``.
    Intercept-only results also carry ``beta`` (``(..., 1)``), ``vb``, ``QM``,
    ``QMp``, ``QMdf`` and ``vt``; their ``R2`` is None (metafor: NULL).
    """

    method: str
    test: str
    level: float
    labels: np.ndarray | None = None
    df: Value | None = None
    iterations: Count | None = None
    weights: np.ndarray | None = None
    yi: np.ndarray | None = None
    vi: np.ndarray | None = None
    measure: str = "effect"
    beta: np.ndarray | None = None
    vb: np.ndarray | None = None
    coef_names: tuple[str, ...] = ("intrcpt",)
    QM: Value | None = None
    QMp: Value | None = None
    QMdf: tuple | np.ndarray | None = None
    R2: Value | None = None
    vt: Value | None = None
    p: int = 1
    X: np.ndarray | None = None
    int_incl: bool = True
    user_weights: bool = False
    control: Control = Control()

    _dict_skip = ("control",)  # the fit's settings, not a result (as metafor prints it)

    @property
    def has_mods(self) -> bool:
        """True for a meta-regression (a result of ``pool(..., mods=...)``)."""
        return self.X is not None

    @property
    def tval(self) -> Any:
        """The t statistic of the Knapp-Hartung test (``zval`` under another name)."""
        if self.test != "knha":
            raise AttributeError('`tval` exists only for test="knha"; this result has `zval`.')
        return self.zval

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the batch; ``()`` for a single meta-analysis."""
        return np.shape(self.tau2)

    def row(self, index: int | tuple[int, ...]) -> PoolResult:
        """One meta-analysis of a batched result, with its missing studies dropped."""
        if not self.batch_shape:
            raise IndexError("this result holds a single meta-analysis; `row` needs a batch.")
        index = index if isinstance(index, tuple) else (index,)
        values = {}
        for f in _ROW_FIELDS + _EXTRA_FIELDS:
            value = getattr(self, f)
            if value is not None:
                values[f] = _cell(np.asarray(value)[index], f)
        y = np.asarray(self.yi)[index]
        keep = ~np.isnan(y)
        for f in _STUDY_FIELDS:
            values[f] = np.asarray(getattr(self, f))[index][keep]
        labels = None
        if self.labels is not None:
            lab = np.asarray(self.labels)
            labels = (lab[index] if lab.ndim == np.ndim(self.yi) else lab)[keep]
        X = None if self.X is None else np.asarray(self.X)[index][keep]
        return type(self)(
            **values,
            method=self.method,
            test=self.test,
            level=self.level,
            labels=labels,
            measure=self.measure,
            coef_names=self.coef_names,
            p=self.p,
            X=X,
            int_incl=self.int_incl,
            user_weights=self.user_weights,
            control=self.control,
        )

    def predict(self, newmods=None, *, intercept: bool = True) -> Prediction:
        """Predicted effects with confidence and prediction intervals (metafor's ``predict``).

        Parameters
        ----------
        newmods : array_like, optional
            Moderator values at which to predict: shape ``(q, p - 1)`` for a model
            with an intercept (the intercept is added; a 1-D array is ``q``
            values of a single moderator, or one point when there are several),
            or ``(q, p)`` full design rows. Without it, a meta-regression gives
            the fitted value of every study and an intercept-only model its
            pooled estimate.
        intercept : bool
            Whether to add the intercept to ``newmods`` (when the model has one).

        Returns
        -------
        Prediction
            ``pred, se, ci_lb, ci_ub, pi_lb, pi_ub``; each with the batch shape
            followed by the ``q`` points (an intercept-only model: its pooled
            estimate, with the batch shape). The prediction interval is
            ``pred +- crit * sqrt(se^2 + tau2)`` (crit from z, or t on ``k - p``
            df with ``test="knha"``), NaN for common-effect models.
        """
        if newmods is not None:
            raise ValueError(
                "this model has no moderators, so `newmods` cannot be used; call "
                "predict() without arguments, or refit with pool(..., mods=...)."
            )
        return Prediction(
            self.estimate, self.se, self.ci_lb, self.ci_ub, self.pi_lb, self.pi_ub, self.level
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per meta-analysis (a single row when unbatched).

        For a meta-regression the coefficient fields become one column per
        coefficient, ``<field>_<name>`` (``estimate_ablat``, ``se_ablat``, ...),
        and ``QM``, ``QMp`` and ``R2`` are added.
        """
        shape = self.batch_shape
        cols = {}
        extra = ("QM", "QMp", "R2") if self.has_mods else ()
        for f in _ROW_FIELDS + extra:
            name = "tval" if (f == "zval" and self.test == "knha") else f
            value = np.asarray(getattr(self, f))
            if self.has_mods and f in _COEF_FIELDS:
                value = value.reshape(-1, self.p)
                for j, cname in enumerate(self.coef_names):
                    cols[f"{name}_{cname}"] = value[:, j]
            else:
                cols[name] = value.reshape(-1)
        frame = pd.DataFrame(cols)
        frame["method"] = self.method
        frame["test"] = self.test
        frame["level"] = self.level
        if len(shape) > 1:
            frame.index = pd.MultiIndex.from_tuples(list(np.ndindex(*shape)))
        return frame

    def _summary_row(self, r) -> str:
        return _summary_one(r)

    def summary(self) -> str:
        """A report that reads like metafor's ``print.rma`` (one block per row)."""
        one = self._summary_row
        if not self.batch_shape:
            return one(self)
        blocks = []
        for index in np.ndindex(*self.batch_shape):
            head = f"Row {index if len(index) > 1 else index[0]}:"
            blocks.append(head + "\n" + one(self.row(index)))
        return "\n".join(blocks)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False)
class MetaRegressionResult(PoolResult):
    """Result of :func:`pool` with ``mods``: a (mixed-effects) meta-regression.

    A :class:`PoolResult` (every analysis that takes one takes this, or refuses it by
    name where it would drop the moderators) whose coefficient fields have a trailing
    axis of length ``p`` (``coef_names``), with ``QM``/``QMp``/``QMdf``, ``R2`` and the
    design ``X``; :meth:`predict` takes new moderator values; the summary reads like
    metafor's ``print.rma`` of a model with moderators.
    """

    def predict(self, newmods=None, *, intercept: bool = True) -> Prediction:
        """Predicted effects at ``newmods`` (see :meth:`PoolResult.predict`); without them
        the fitted value of every study."""
        alpha = 1.0 - self.level / 100.0
        df = np.asarray(self.df, dtype=float)
        if self.test == "knha":
            with np.errstate(invalid="ignore"):
                crit = np.where(df > 0, stats.t.isf(alpha / 2.0, np.where(df > 0, df, 1.0)), np.nan)
        else:
            crit = np.full(np.shape(df), stats.norm.isf(alpha / 2.0))
        if newmods is None:
            newx = np.nan_to_num(np.asarray(self.X, dtype=float))
        else:
            newx = _new_design(newmods, self.p, self.int_incl and intercept, self.coef_names)
        out = regression.predict_mods(
            np.asarray(self.beta), np.asarray(self.vb), self.tau2, crit, newx
        )
        if self.method in FIXED_METHODS:
            out["pi_lb"] = np.full(np.shape(out["pred"]), np.nan)
            out["pi_ub"] = np.full(np.shape(out["pred"]), np.nan)
        if newmods is None:
            keep = ~np.isnan(np.asarray(self.yi))
            out = {f: np.where(keep, val, np.nan) for f, val in out.items()}
        return Prediction(**out, level=self.level)

    def _summary_row(self, r) -> str:
        return _summary_mods(r)


def _scalar(x: Any) -> Any:
    """A Python bool, int or float from a numpy scalar or 0-d array."""
    return np.asarray(x).item()


def _cell(x: np.ndarray, name: str) -> Any:
    """One row's value of a field: a Python scalar, or an array for coefficient fields."""
    if x.ndim == 0:
        return _scalar(x)
    if name == "QMdf":
        return tuple(float(v) for v in x)
    return x


def _new_design(newmods, p: int, add_intercept: bool, names) -> np.ndarray:
    """New design rows (q, p) (or (..., q, p)) from predict()'s ``newmods``."""
    x = np.asarray(newmods, dtype=float)
    width = p - 1 if add_intercept else p
    if x.ndim == 0:
        x = x.reshape(1, 1)
    elif x.ndim == 1:
        x = x[:, None] if width == 1 else x[None, :]
    if x.shape[-1] == width and add_intercept:
        x = np.concatenate([np.ones(x.shape[:-1] + (1,)), x], axis=-1)
    elif x.shape[-1] != p:
        raise ValueError(
            f"`newmods` has {x.shape[-1]} columns but the model has {p} coefficients "
            f"({', '.join(names)}); give {width} moderator values per point"
            + (" (the intercept is added)" if add_intercept else "")
            + "."
        )
    if not np.isfinite(x).all():
        raise ValueError("`newmods` must be finite.")
    return x


def _validate(y, v, weights, labels):
    if y.ndim == 0:
        raise ValueError(
            f"`yi` must have a study axis (shape (..., k)); got the scalar {float(y)!r}. "
            "Wrap a single study as [yi] and use method='FE'."
        )
    obs = check_studies(y, v)
    a = None
    if weights is not None:
        a = np.array(weights, dtype=float)
        if a.shape != y.shape:
            raise ValueError(
                f"`weights` has shape {a.shape} but `yi` has shape {y.shape}; give one "
                "weight per effect."
            )
        bad = obs & ~(np.isfinite(a) & (a > 0))
        if bad.any():
            idx = _first(bad)
            raise ValueError(
                f"`weights` must be finite and > 0 for every observed study; found "
                f"weights{_where(idx)} = {a[idx]}. Fix it or leave weights=None for "
                "inverse-variance weights."
            )
    labels = check_labels(labels, y.shape)
    return obs, a, labels


def _flat_rows(y, v, obs):
    """``(n, kmax)`` effects, variances, observed mask and study counts of the batch; a row
    with no observed study is an error that names it."""
    shape, kmax = y.shape[:-1], y.shape[-1]
    m = obs.reshape(-1, kmax)
    k = m.sum(axis=-1)
    if (k == 0).any():
        idx = np.unravel_index(int(np.argmax(k == 0)), shape) if shape else ()
        raise ValueError(
            f"`yi` row {_where(idx)} has no observed studies (all NaN); drop that row or "
            "give it at least one study."
        )
    return y.reshape(-1, kmax), v.reshape(-1, kmax), m, k


def pool(
    yi,
    vi=None,
    *,
    mods=None,
    intercept: bool = True,
    method: str = "REML",
    test: str = "z",
    level: float = 95,
    weights=None,
    labels=None,
    control=None,
) -> PoolResult:
    """Pool effect sizes with a common- or random-effects model, as ``metafor::rma``.

    With ``mods`` it fits a (mixed-effects) meta-regression, as
    ``metafor::rma.uni(yi, vi, mods = X)``.

    Parameters
    ----------
    yi : array_like or object with ``.estimates()``
        Effect sizes, shape ``(..., k)``; leading axes are a batch of separate
        meta-analyses, NaN marks a missing study (so rows can have different
        k). Alternatively an :class:`~spatialmeta.tasks.estimates.Estimates` or
        any object whose ``.estimates()`` returns one; then ``vi`` must be None
        and its labels and measure are kept. Dask arrays are pooled out of core,
        one block of rows at a time (no ``mods``/``weights``; ``weights`` is not
        kept on the result); for labelled grids see :func:`pool_gridded`.
    vi : array_like, optional
        Sampling variances, same shape as ``yi``, > 0 where ``yi`` is observed
        and NaN where it is missing.
    mods : array_like, DataFrame, dict or column names, optional
        Moderators: an array ``(k,)``, ``(k, p)`` (one design for every row of
        the batch) or ``(..., k, p)`` (one per row); a
        :class:`pandas.DataFrame` or dict of named columns (names are kept;
        string, categorical and boolean columns are dummy-coded with R's
        default treatment contrasts, first level as reference, as
        ``model.matrix(~ x)``); or, when ``yi`` is an Estimates with a ``mods``
        table, a column name or list of names of that table. Moderator values
        of missing studies (NaN ``yi``) are ignored; elsewhere they must be
        finite. The design must have full column rank in every row (no
        redundant columns are dropped: the error names the collinear ones)
        and k > p studies (k >= p for common-effect models).
    intercept : bool
        Add an intercept column (``"intrcpt"``) to ``mods``. With
        ``intercept=False`` a column of ones among ``mods`` is still taken as
        the intercept, as metafor does.
    method : str
        ``"FE"`` (aliases ``"EE"``, ``"CE"``) for a common effect, or a tau^2
        estimator: ``"DL"``, ``"HE"``, ``"HS"``, ``"SJ"``, ``"ML"``, ``"REML"``
        (default), ``"EB"`` or ``"PM"``, with metafor's conventions (Fisher
        scoring from the truncated HE value, threshold 1e-5, at most 100
        iterations, step halving; PM by Brent's method on [0, max(100, 10 mad(yi)^2)]).
    test : {"z", "knha"}
        Normal-theory test, or the Knapp-Hartung method (t with k - 1 df and the
        variance scaled by the weighted residual variance, not truncated at 1).
    level : float
        Confidence level in percent for the confidence and prediction intervals.
    weights : array_like, optional
        User weights (metafor's ``weights=``) instead of inverse-variance ones.
    labels : array_like, optional
        Study labels, shape ``(k,)`` or that of ``yi``.
    control : dict or Control, optional
        Fisher scoring's ``threshold`` (1e-5), ``maxiter`` (100) and ``stepadj`` (1), as
        metafor's ``control`` (:class:`~spatialmeta.meta_analysis.spec.Control`); kept on
        the result, and every analysis of it refits with them.

    Returns
    -------
    PoolResult
        ``estimate, se, zval, pval, ci_lb, ci_ub, tau2, se_tau2, I2, H2, QE,
        QEp, pi_lb, pi_ub, k, converged`` and more, scalars for 1-D ``yi`` and
        arrays of the batch shape otherwise. The prediction interval is NaN for
        common-effect models, as metafor's ``predict``. A meta-regression
        gives one value per coefficient in ``estimate`` (= ``beta``), ``se``,
        ``zval``, ``pval``, ``ci_lb``, ``ci_ub`` (trailing axis of length p),
        and ``QM``, ``QMp``, ``QMdf``, ``R2``, ``vb``; its prediction interval
        fields are NaN: use :meth:`PoolResult.predict` at chosen moderator
        values.

    Raises
    ------
    ValueError
        Mismatched shapes, non-finite or non-positive variances, NaN in only
        one of ``yi``/``vi``, unknown method or test, or a row with one study
        under a random-effects method; with ``mods``: a wrong number of rows,
        a non-finite moderator of an observed study (row and column named), a
        rank-deficient design (collinear columns named), or k <= p.

    Notes
    -----
    All rows are iterated together. Where ML, REML or EB Fisher scoring has
    not converged after 100 steps (about 0.5 % of random k = 20 analyses; metafor
    stops there with an error), the same likelihood equation is solved by a
    bracketed one-dimensional search (:func:`~spatialmeta.meta_analysis.
    estimators.rescue_tau2`; it agrees with metafor's damped iteration,
    ``control = list(stepadj = 0.5)``); ``iterations`` stays at 101 there;
    a row is flagged in ``converged`` only if that fails too (meta-regressions
    keep the plain flag). Where metafor stops because the PM root exceeds ``tau2.max =
    max(100, 10 mad(yi)^2)``, the bracket is widened instead.

    With moderators every estimator uses metafor's residual-based formulas
    (the ``P`` matrix of the weighted least-squares fit; HE and SJ on OLS
    residuals and the SJ start ``var(yi) (k-1)/k``; ML, REML, EB and PM with
    ``k - p`` in place of ``k - 1``), tau^2 is estimated from the mean-centred
    effects as metafor does, and the pseudo-R^2 is
    ``max(0, 100 (tau2_0 - tau2) / tau2_0)`` with ``tau2_0`` from the model
    without moderators (same estimator), or the adjusted R^2 of the weighted
    regression for common-effect models; it is NaN when the model has no
    intercept or only one.

    References
    ----------
    DerSimonian, R., & Laird, N. (1986). Meta-analysis in clinical trials.
    doi:10.1016/0197-2456(86)90046-2
    Viechtbauer, W. (2005). Bias and efficiency of meta-analytic variance
    estimators in the random-effects model. doi:10.3102/10769986030003261
    Knapp, G., & Hartung, J. (2003). Improved tests for a random effects
    meta-regression with a single covariate. doi:10.1002/sim.1482
    Paule, R. C., & Mandel, J. (1982). Consensus values and weighting factors.
    J. Res. Natl. Bur. Stand., 87(5), 377-385.
    Sidik, K., & Jonkman, J. N. (2005). Simple heterogeneity variance
    estimation for meta-analysis. J. R. Stat. Soc. C, 54(2), 367-384.
    Higgins, J. P. T., & Thompson, S. G. (2002). Quantifying heterogeneity in a
    meta-analysis. doi:10.1002/sim.1186
    Raudenbush, S. W. (2009). Analyzing effect sizes: random-effects models.
    In *The Handbook of Research Synthesis and Meta-Analysis*, 295-315.
    Lopez-Lopez, J. A., et al. (2014). Estimation of the predictive power of
    the model in mixed-effects meta-regression. doi:10.1111/bmsp.12002

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> res = pool(yi, vi, method="REML")
    >>> round(res.estimate, 4), round(res.tau2, 4), res.k, res.converged
    (-0.8359, 0.3174, 7, True)
    >>> batch = pool(np.stack([yi, yi + 0.5]), np.stack([vi, vi]), method="DL")
    >>> np.round(batch.estimate, 4).tolist()
    [-0.8311, -0.3311]

    A meta-regression on a named moderator:

    >>> lat = np.array([44.0, 55.0, 42.0, 52.0, 13.0, 44.0, 19.0])
    >>> reg = pool(yi, vi, mods={"ablat": lat})
    >>> reg.coef_names, np.round(reg.beta, 4).tolist()
    (('intrcpt', 'ablat'), [0.4402, -0.0331])
    >>> round(reg.QM, 4), round(reg.R2, 2)
    (17.8589, 87.96)
    """
    if _is_dask(yi) or _is_dask(vi):
        if mods is not None or weights is not None:
            raise ValueError(
                "dask inputs are pooled block by block without moderators or user weights; "
                "compute the arrays first (or pool row blocks yourself) to use mods/weights."
            )
        return _pool_dask(
            yi, vi, method=method, test=test, level=level, labels=labels, control=control
        )
    y, v, labels, measure, est_mods = _read_inputs(yi, vi, labels)
    spec = FitSpec.make(method, test, level, control=control)
    method, test, level, control = spec.method, spec.test, spec.level, spec.control
    obs, a, labels = _validate(y, v, weights, labels)
    if mods is not None:
        mods = _named_mods(mods, est_mods)
        return _pool_mods(
            y, v, obs, a, labels, measure, mods, intercept, method, test, level, control
        )

    shape = y.shape[:-1]
    kmax = y.shape[-1]
    y2, v2, m, k = _flat_rows(y, v, obs)
    fixed = method in FIXED_METHODS
    if not fixed and (k == 1).any():
        idx = np.unravel_index(int(np.argmax(k == 1)), shape) if shape else ()
        raise ValueError(
            f"method={method!r}: random effects undefined with one study (row {_where(idx)} "
            'has k = 1); use method="FE" for single-study rows, or add studies.'
        )
    if fixed and test == "knha":
        warnings.warn(
            f"The Knapp-Hartung method is not meant for common-effect models (method={method!r}).",
            UserWarning,
            stacklevel=2,
        )

    a2 = None if a is None else a.reshape(-1, kmax)
    out = _fit_rows(y2, v2, m, k, method, test, level, a2, control=control)
    if not out["converged"].all():
        warnings.warn(
            f"tau^2 estimation ({method}) did not converge for "
            f"{int((~out['converged']).sum())} of {k.size} meta-analyses; see `converged` on "
            "the result.",
            RuntimeWarning,
            stacklevel=2,
        )
    # metafor's QM for the intercept-only model is the squared test statistic.
    qm_ok = out["se"] > 0  # metafor: QM is NA when vb is 0 (Knapp-Hartung scale of 0)
    out.update(
        beta=out["estimate"][:, None],
        vb=(out["se"] ** 2)[:, None, None],
        QM=np.where(qm_ok, out["zval"] ** 2, np.nan),
        QMp=np.where(qm_ok, out["pval"], np.nan),
        QMdf=np.stack([np.ones(k.size), out["df"]], axis=-1),
    )
    pct = out.pop("weights_pct")
    return PoolResult(
        **_shaped(out, shape),
        method=method,
        test=test,
        level=level,
        labels=labels,
        weights=pct.reshape(y.shape),
        yi=y,
        vi=v,
        measure=str(measure),
        user_weights=a is not None,
        control=control,
    )


def _is_dask(x) -> bool:
    return type(x).__module__.startswith("dask.")


_PER_ROW = _ROW_FIELDS + _EXTRA_FIELDS  # R2 is None without moderators: skipped


def _pool_dask(yi, vi, *, method, test, level, labels, control=None) -> PoolResult:
    """Pool dask arrays out of core: one block of rows in memory at a time.

    The study axis is made one chunk; each block of rows is read, pooled by the batched
    numpy path and dropped, so memory is bounded by a block while every result field (one
    value per meta-analysis) is kept. ``yi``/``vi`` stay lazy on the result and the
    per-study ``weights`` are not kept (they are as large as the input).
    """
    import dask
    import dask.array as dsa

    y = dsa.asarray(yi).astype(float)
    v = dsa.asarray(vi).astype(float)
    if y.shape != v.shape:
        raise ValueError(
            f"`vi` has shape {v.shape} but `yi` has shape {y.shape}; give one sampling "
            "variance per effect (same shape, NaN where a study is missing)."
        )
    if y.ndim < 2:
        raise ValueError("dask inputs must be a batch (..., k); compute a single meta-analysis.")
    shape, kmax = y.shape[:-1], y.shape[-1]
    y2 = y.reshape(-1, kmax).rechunk({1: -1})
    v2 = v.reshape(-1, kmax).rechunk({0: y2.chunks[0], 1: -1})
    parts, start, unconverged = [], 0, 0
    for i in range(y2.numblocks[0]):
        yb, vb = dask.compute(y2.blocks[i], v2.blocks[i])
        stop = start + yb.shape[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # summed up below
                part = pool(
                    yb, vb, method=method, test=test, level=level, labels=labels, control=control
                )
        except ValueError as err:
            raise ValueError(f"rows {start}-{stop - 1} of the flattened batch: {err}") from err
        unconverged += int((~np.asarray(part.converged)).sum())
        parts.append(part)
        start = stop
    if unconverged:
        warnings.warn(
            f"tau^2 estimation ({method}) did not converge for {unconverged} of {start} "
            "meta-analyses; see `converged` on the result.",
            RuntimeWarning,
            stacklevel=3,
        )
    fields = {}
    for name in _PER_ROW:
        vals = [getattr(p_, name) for p_ in parts]
        if any(val is None for val in vals):
            continue
        arr = np.concatenate(vals)
        fields[name] = arr.reshape(shape + arr.shape[1:])
    first = parts[0]
    return PoolResult(
        **fields, method=first.method, test=first.test, level=first.level,
        labels=first.labels, yi=y, vi=v, weights=None, measure=first.measure,
        control=first.control,
    )  # fmt: skip


_BLOCK_VALUES = 2**19  # values per (rows, k) array of a block: 4 MB of float64


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS, made once (limits then cost ~4 µs)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _fit_block(y, v, m, k, method, test, level, a, pct=None, control=None) -> dict[str, np.ndarray]:
    """tau^2 and the model fit of a block of rows (percent weights into ``pct`` if given)."""
    fit = estimate_tau2(y, v, m, k, method, control=control)
    out = _compute(y, v, m, k, fit.tau2, method, test, level, a, pct)
    out.update(se_tau2=fit.se_tau2, converged=fit.converged, iterations=fit.iterations, k=k)
    return out


def _fit_rows(y, v, m, k, method, test, level, a, workers: int | None = None, control=None):
    """Fit every row; a large batch in blocks of rows, spread over a thread per core.

    Blocks keep each temporary at 4 MB or less: larger arrays are fresh ``mmap``s that
    the kernel zero-fills on every use (the time went to page faults, not arithmetic),
    while smaller ones are reused by the allocator. The sums over studies are compiled
    per-row kernels and numpy's elementwise loops release the GIL, so blocks run in
    parallel. With the kernels (ML, REML, EB) each row's result depends only on that row,
    bit for bit, not on the blocking. Each block writes its rows into the outputs (no
    serial join of the parts at the end).
    """
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    n, kmax = y.shape
    if n * kmax < 8192:  # OpenBLAS runs products this small on one thread anyway
        return _fit_block(y, v, m, k, method, test, level, a, control=control)
    workers = workers or os.cpu_count() or 1
    # blocks of at most _BLOCK_VALUES values, one per worker at least, of even sizes and
    # never of one row (that would take the single-analysis path, with other rounding)
    nblocks = max(1, min(max(-(-n * kmax // _BLOCK_VALUES), workers), n // 2))
    bounds = [i * n // nblocks for i in range(nblocks + 1)]
    out = {"weights_pct": np.empty((n, kmax))}
    made = threading.Lock()

    def one(b):
        sl = slice(bounds[b], bounds[b + 1])
        part = _fit_block(
            y[sl], v[sl], m[sl], k[sl], method, test, level, None if a is None else a[sl],
            out["weights_pct"][sl], control=control,
        )  # fmt: skip
        with made:  # the first block to finish allocates the per-row outputs
            for key, val in part.items():
                if key not in out:
                    out[key] = np.empty((n,) + val.shape[1:], val.dtype)
        for key, val in part.items():
            if key != "weights_pct":
                out[key][sl] = val

    # the row sums of the numpy path (user weights; estimators other than ML/REML/EB) are
    # BLAS products with ones: threaded BLAS inside threaded blocks only spins (it doubled
    # the CPU time), and how OpenBLAS splits a product over threads changes its rounding,
    # so BLAS runs one thread (its kernels still sum the last rows of a block in another
    # order: there the blocking moves the last bit)
    with _blas_controller().limit(limits=1, user_api="blas"):
        workers = min(nblocks, workers)
        if workers == 1:
            for b in range(nblocks):
                one(b)
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                list(ex.map(one, range(nblocks)))
    return out


def _shaped(out: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, Any]:
    """Flat-batch arrays back to the batch shape, or Python scalars for one analysis."""
    if shape:
        return {key: val.reshape(shape + val.shape[1:]) for key, val in out.items()}
    return {key: _cell(val[0], key) for key, val in out.items()}


def _named_mods(mods, est_mods):
    """Column names of an Estimates' moderator table become that table's columns."""
    names = None
    if isinstance(mods, str):
        names = [mods]
    elif isinstance(mods, list | tuple) and mods and all(isinstance(x, str) for x in mods):
        names = list(mods)
    if names is None:
        return mods
    if est_mods is None:
        raise ValueError(
            f"`mods` names columns {names!r}, but `yi` has no moderator table; pass the "
            "moderator values (an array, DataFrame or dict) instead."
        )
    missing = [n for n in names if n not in est_mods.columns]
    if missing:
        raise ValueError(
            f"`mods` names {missing!r}, which are not columns of the moderator table "
            f"(columns: {list(est_mods.columns)!r})."
        )
    return est_mods[names]


def _pool_mods(y, v, obs, a, labels, measure, mods, intercept, method, test, level, control):
    """The meta-regression branch of :func:`pool`."""
    shape = y.shape[:-1]
    kmax = y.shape[-1]
    arr, names = regression.read_mods(mods, y.shape)
    X, names, int_incl = regression.build_design(arr, names, bool(intercept), obs)
    p = X.shape[-1]
    y2, v2, m, k = _flat_rows(y, v, obs)
    fixed = method in FIXED_METHODS
    X2 = X.reshape(-1, kmax, p)
    Q, T = regression.check_design(X2, m, k, names, fixed, shape)
    if fixed and test == "knha":
        warnings.warn(
            f"The Knapp-Hartung method is not meant for common-effect models (method={method!r}).",
            UserWarning,
            stacklevel=3,
        )
    fit = regression.estimate_tau2_mods(Q, y2, v2, m, k, method, control=control)
    if not fit.converged.all():
        warnings.warn(
            f"tau^2 estimation ({method}) did not converge for {int((~fit.converged).sum())} "
            f"of {k.size} meta-regressions; see `converged` on the result.",
            RuntimeWarning,
            stacklevel=3,
        )
    a2 = None if a is None else a.reshape(-1, kmax)
    out = regression.fit_mods(y2, v2, m, k, Q, T, fit.tau2, method, test, level, a2, int_incl)
    int_only = p == 1 and int_incl
    if int_incl:
        out["R2"] = regression.r2_mods(y2, v2, m, k, Q, T, fit.tau2, method, a2, int_only)
    else:
        out["R2"] = np.full(k.size, np.nan)
    out.pop("crit")
    out.update(
        estimate=out["beta"],
        tau2=fit.tau2,
        se_tau2=fit.se_tau2,
        converged=fit.converged,
        iterations=fit.iterations,
        k=k,
        pi_lb=np.full(k.size, np.nan),
        pi_ub=np.full(k.size, np.nan),
    )
    pct = out.pop("weights_pct")
    return MetaRegressionResult(
        **_shaped(out, shape),
        method=method,
        test=test,
        level=level,
        labels=labels,
        weights=pct.reshape(y.shape),
        yi=y,
        vi=v,
        measure=str(measure),
        coef_names=tuple(names),
        p=p,
        X=X,
        int_incl=int_incl,
        user_weights=a is not None,
        control=control,
    )


def _row_sums(y, v, m, kf, tau2, knha: bool, weights_pct: bool):
    """numpy reference of ``_kernels.row_sums`` (also used for a single meta-analysis,
    where the per-row sums are a handful of numpy calls): ``sw, mu, rss, qe, vt, pct`` at
    the given tau^2.

    Row sums are einsum products over weights that are exactly 0 for missing studies.
    """
    v1 = np.where(m, v, 1.0)
    yz = np.where(m, y, 0.0)
    w = m / (v1 + tau2[:, None])
    sw = _rowsum(w)
    mu = _wdot(w, yz) / sw
    rss = np.full(kf.shape, np.nan)
    if knha:
        e = yz - mu[:, None]
        rss = _wdot(w * e, e)
    pct = None
    if weights_pct:
        pct = 100.0 * w / sw[:, None]
        pct[~m] = np.nan
    # Heterogeneity: Q from inverse sampling variances, on mean-centred effects.
    yc = np.where(m, yz - (_rowsum(yz) / kf)[:, None], 0.0)
    w0 = m / v1
    s0 = _rowsum(w0)
    e0 = yc - (_wdot(w0, yc) / s0)[:, None]
    qe = _wdot(w0 * e0, e0)
    vt = (kf - 1.0) / (s0 - _wdot(w0, w0) / s0)  # typical within-study variance
    return sw, mu, rss, qe, vt, pct


def _compute(y, v, m, k, tau2, method, test, level, a, pct=None) -> dict[str, np.ndarray]:
    """Model fit given tau^2: estimate, tests, intervals, heterogeneity, weights.

    The sums over studies come from a compiled per-row kernel for a batch (numpy for one
    meta-analysis); what is left is elementwise on per-row values. The distribution
    functions are scipy.special's ufuncs (scipy.stats' wrappers cost ~50 µs a call, which
    dominated single meta-analyses). Percent weights go into ``pct`` when it is given.
    """
    kf = k.astype(float)
    alpha = 1.0 - level / 100.0
    knha = test == "knha"
    with np.errstate(divide="ignore", invalid="ignore"):
        if y.shape[0] > 1 and _estimators._COMPILED:
            from spatialmeta.meta_analysis import _kernels

            sw, mu, rss, qe, vt, w_pct = _kernels.row_sums(y, v, m, tau2, knha, a is None, pct)
        else:
            sw, mu, rss, qe, vt, w_pct = _row_sums(y, v, m, kf, tau2, knha, a is None)
        if a is None:
            beta, vb = mu, 1.0 / sw
        else:
            a = np.where(m, a, 0.0)
            sa = _rowsum(a)
            beta = _wdot(a, np.where(m, y, 0.0)) / sa
            vb = _wdot(a * a, np.where(m, v, 1.0) + tau2[:, None]) / sa**2
            w_pct = 100.0 * a / sa[:, None]
            w_pct[~m] = np.nan
        if pct is not None and w_pct is not pct:
            pct[...] = w_pct
            w_pct = pct
        df = np.full(k.shape, np.nan)
        if knha:
            s2w = np.where(rss <= np.finfo(float).eps, 0.0, rss / (kf - 1.0))
            vb = s2w * vb
            df = kf - 1.0
            ok = df > 0
            dfs = np.where(ok, df, 1.0)
            # df = k - 1 takes at most kmax values: the t quantile of each, looked up
            table = special.stdtrit(np.arange(1.0, max(int(k.max()), 2)), 1.0 - alpha / 2.0)
            crit = np.where(ok, table[dfs.astype(np.intp) - 1], np.nan)
        else:
            crit = np.full(k.shape, -special.ndtri(alpha / 2.0))
        se = np.sqrt(vb)
        zval = beta / se
        if knha:
            pval = np.where(ok, 2.0 * special.stdtr(dfs, -np.abs(zval)), np.nan)
        else:
            pval = 2.0 * special.ndtr(-np.abs(zval))

        multi = k > 1
        qe = np.where(multi, np.maximum(0.0, qe), 0.0)
        qep = np.where(multi, special.chdtrc(np.maximum(kf - 1.0, 1.0), qe), 1.0)
        if method in RANDOM_METHODS:
            i2 = 100.0 * tau2 / (vt + tau2)
            h2 = tau2 / vt + 1.0
            half = crit * np.sqrt(vb + tau2)
            pi_lb, pi_ub = beta - half, beta + half
        else:
            i2 = np.maximum(0.0, 100.0 * (qe - (kf - 1.0)) / qe)
            h2 = qe / (kf - 1.0)
            pi_lb = pi_ub = np.full(k.shape, np.nan)
        i2 = np.where(multi, i2, 0.0)
        h2 = np.where(multi, h2, 1.0)
        vt = np.where(multi, vt, 0.0)
    return {
        "estimate": beta,
        "se": se,
        "zval": zval,
        "df": df,
        "pval": pval,
        "ci_lb": beta - crit * se,
        "ci_ub": beta + crit * se,
        "tau2": tau2,
        "I2": i2,
        "H2": h2,
        "QE": qe,
        "QEp": qep,
        "pi_lb": pi_lb,
        "pi_ub": pi_ub,
        "vt": vt,
        "weights_pct": w_pct,
    }


def _fmt(x: float, digits: int = 4) -> str:
    return fmt_num(x, digits)


def _pval(p: float, showeq: bool = False) -> str:
    return fmt_p(p, eq=showeq)


def _stars(p: float) -> str:
    if p is None or np.isnan(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return sym
    return " "


def _tau2_lines(r: PoolResult, model: str, amount: str, width: int) -> list[str]:
    """metafor's model line and tau^2 / tau lines (labels padded to ``width``)."""
    lines = [f"{model} (k = {r.k}; tau^2 estimator: {r.method})"]
    if not r.converged:
        lines.append("Warning: tau^2 estimation did not converge.")
    digits = 0 if abs(r.tau2) <= np.finfo(float).eps * 10 else 4
    se = "" if np.isnan(r.se_tau2) else f" (SE = {_fmt(r.se_tau2)})"
    return lines + [
        "",
        f"tau^2 (estimated amount of {amount}".ljust(width) + _fmt(r.tau2, digits) + se,
        "tau (square root of estimated tau^2 value):".ljust(width) + _fmt(np.sqrt(r.tau2), digits),
    ]


def _summary_one(r: PoolResult) -> str:
    names = {"FE": "Fixed-Effects", "EE": "Equal-Effects", "CE": "Common-Effects"}
    lines = [""]
    if r.method in FIXED_METHODS:
        lines.append(f"{names[r.method]} Model (k = {r.k})")
    else:
        lines += _tau2_lines(r, "Random-Effects Model", "total heterogeneity):", 49)
    if r.method in FIXED_METHODS:
        lines.append("")
    lines.append(f"I^2 (total heterogeneity / total variability):   {r.I2:.2f}%")
    lines.append(f"H^2 (total variability / sampling variability):  {r.H2:.2f}")
    lines += ["", "Test for Heterogeneity:"]
    lines.append(f"Q(df = {r.k - 1}) = {_fmt(r.QE)}, p-val {_pval(r.QEp, showeq=True)}")
    lines += ["", "Model Results:", ""]
    header = ["estimate", "se", "tval" if r.test == "knha" else "zval"]
    values = [_fmt(r.estimate), _fmt(r.se), _fmt(r.zval)]
    if r.test == "knha":
        header.append("df")
        values.append(f"{r.df:g}")
    header += ["pval", "ci.lb", "ci.ub", ""]
    values += [_pval(r.pval), _fmt(r.ci_lb), _fmt(r.ci_ub), _stars(r.pval)]
    widths = [max(len(h), len(x)) for h, x in zip(header, values, strict=True)]
    lines.append("  ".join(h.rjust(wd) for h, wd in zip(header, widths, strict=True)))
    lines.append("  ".join(x.rjust(wd) for x, wd in zip(values, widths, strict=True)))
    if r.method in RANDOM_METHODS:
        lines.append("")
        lines.append(f"{r.level:g}% prediction interval: [{_fmt(r.pi_lb)}, {_fmt(r.pi_ub)}]")
    lines += [
        "",
        "---",
        "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
        "",
    ]
    return "\n".join(lines)


def _coef_label(idx: list[int]) -> str:
    """metafor's "coefficient 2" / "coefficients 2:3" (1-based)."""
    if len(idx) == 1:
        return f"coefficient {idx[0] + 1}"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return f"coefficients {idx[0] + 1}:{idx[-1] + 1}"
    return "coefficients " + ",".join(str(i + 1) for i in idx)


def _summary_mods(r: PoolResult) -> str:
    """metafor's print of a meta-regression: heterogeneity, QE, QM, coefficient table."""
    lines = [""]
    random = r.method in RANDOM_METHODS
    if random:
        lines += _tau2_lines(r, "Mixed-Effects Model", "residual heterogeneity):", 56)
    else:
        lines += ["Fixed-Effects with Moderators Model (k = " + f"{r.k})", ""]
    lines.append(f"I^2 (residual heterogeneity / unaccounted variability): {r.I2:.2f}%")
    lines.append(f"H^2 (unaccounted variability / sampling variability):   {r.H2:.2f}")
    if r.R2 is not None and not np.isnan(r.R2):
        lines.append(f"R^2 (amount of heterogeneity accounted for):            {r.R2:.2f}%")
    lines += ["", "Test for Residual Heterogeneity:"]
    lines.append(f"QE(df = {r.k - r.p}) = {_fmt(r.QE)}, p-val {_pval(r.QEp, showeq=True)}")
    btt = list(range(1, r.p)) if (r.int_incl and r.p > 1) else list(range(r.p))
    lines += ["", f"Test of Moderators ({_coef_label(btt)}):"]
    df1, df2 = r.QMdf
    if r.test == "knha":
        head = f"F(df1 = {df1:g}, df2 = {df2:g})"
    else:
        head = f"QM(df = {df1:g})"
    lines.append(f"{head} = {_fmt(r.QM)}, p-val {_pval(r.QMp, showeq=True)}")
    lines += ["", "Model Results:", ""]
    header = ["", "estimate", "se", "tval" if r.test == "knha" else "zval"]
    if r.test == "knha":
        header.append("df")
    header += ["pval", "ci.lb", "ci.ub", ""]
    rows = []
    for j, name in enumerate(r.coef_names):
        row = [name, _fmt(r.estimate[j]), _fmt(r.se[j]), _fmt(r.zval[j])]
        if r.test == "knha":
            row.append(f"{r.df:g}")
        row += [_pval(r.pval[j]), _fmt(r.ci_lb[j]), _fmt(r.ci_ub[j]), _stars(r.pval[j])]
        rows.append(row)
    widths = [max(len(x[c]) for x in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [x.rjust(wd) for x, wd in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "",
        "---",
        "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
        "",
    ]
    return "\n".join(lines)
