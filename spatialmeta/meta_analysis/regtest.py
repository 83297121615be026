"""Egger's regression test for funnel-plot asymmetry and PET-PEESE, as ``metafor::regtest``.

Both add a measure of precision (the standard error, the sampling variance,
or a function of the sample size) as a moderator and test its coefficient;
the intercept is then the effect expected for a study of infinite precision
(the "limit estimate"). Everything runs through the batched meta-regression
engine of :func:`~spatialmeta.meta_analysis.pool`, so ``yi`` may hold many
meta-analyses ``(..., k)`` with NaN for missing studies.

References
----------
Egger, M., Davey Smith, G., Schneider, M., & Minder, C. (1997). Bias in
meta-analysis detected by a simple, graphical test. *BMJ*, 315(7109), 629-634.
doi:10.1136/bmj.315.7109.629
Sterne, J. A. C., & Egger, M. (2005). Regression methods to detect publication
and other bias in meta-analysis. In *Publication Bias in Meta-Analysis*
(pp. 99-110). Wiley. doi:10.1002/0470870168.ch6
Stanley, T. D., & Doucouliagos, H. (2014). Meta-regression approximations to
reduce publication selection bias. *Research Synthesis Methods*, 5(1), 60-78.
doi:10.1002/jrsm.1095
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spatialmeta.meta_analysis._common import read_inputs as _read_inputs
from spatialmeta.meta_analysis.fitted import fit_spec
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.results import Result, fmt_p

__all__ = ["PetPeeseResult", "RegtestResult", "pet_peese", "regtest"]

_MODELS = ("rma", "lm")
_PREDICTORS = ("sei", "vi", "ni", "ninv", "sqrtni", "sqrtninv")
_LIMIT = ("sei", "vi", "ninv", "sqrtninv")  # predictors whose zero is infinite precision
_PRED_TEXT = {
    "sei": "standard error",
    "vi": "sampling variance",
    "ni": "sample size",
    "ninv": "inverse of the sample size",
    "sqrtni": "square root sample size",
    "sqrtninv": "inverse of the square root sample size",
}
_LIMIT_TEXT = {
    "sei": "Limit Estimate (as sei -> 0):   ",
    "vi": "Limit Estimate (as vi -> 0):    ",
    "ninv": "Limit Estimate (as ni -> inf):  ",
    "sqrtninv": "Limit Estimate (as ni -> inf):  ",
}


@dataclass(frozen=True, eq=False)
class RegtestResult(Result):
    """Result of :func:`regtest`; names follow metafor's ``regtest`` object.

    ``zval``/``pval`` test the predictor's coefficient (funnel-plot
    asymmetry); ``zval`` is a t value (also :attr:`tval`) on ``dfs`` degrees
    of freedom for ``model="lm"`` or ``test="knha"``, and ``dfs`` is NaN for
    a z test. ``est``, ``ci_lb``, ``ci_ub`` and ``est_pval`` are the limit
    estimate (the intercept), its confidence interval and its two-sided
    p-value; NaN when the fitted model had moderators or the predictor has no
    limit at infinite precision (``ni``, ``sqrtni``). ``fit`` is the
    underlying meta-regression.
    """

    _dict_skip = ("fit",)

    zval: Any
    pval: Any
    dfs: Any
    est: Any
    ci_lb: Any
    ci_ub: Any
    est_pval: Any
    model: str
    predictor: str
    method: str
    test: str
    level: float
    fit: PoolResult

    @property
    def tval(self) -> Any:
        """The t statistic (``zval`` under another name) of a t test."""
        if self.model != "lm" and self.test != "knha":
            raise AttributeError('`tval` exists for model="lm" or test="knha"; this has `zval`.')
        return self.zval

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return np.shape(self.zval)

    def to_frame(self) -> pd.DataFrame:
        """One row per meta-analysis."""
        cols = ("zval", "pval", "dfs", "est", "ci_lb", "ci_ub", "est_pval")
        frame = pd.DataFrame({c: np.asarray(getattr(self, c)).reshape(-1) for c in cols})
        for c in ("model", "predictor", "method", "test", "level"):
            frame[c] = getattr(self, c)
        return frame

    def summary(self) -> str:
        """A report that reads like metafor's ``print(regtest(...))`` (one block per row)."""
        if not self.batch_shape:
            return _summary_one(self, self.zval, self.pval, self.dfs, self.est, self.ci_lb,
                                self.ci_ub)  # fmt: skip
        blocks = []
        for index in np.ndindex(*self.batch_shape):
            vals = [
                np.asarray(getattr(self, c))[index].item()
                for c in ("zval", "pval", "dfs", "est", "ci_lb", "ci_ub")
            ]
            head = f"Row {index if len(index) > 1 else index[0]}:"
            blocks.append(head + "\n" + _summary_one(self, *vals))
        return "\n".join(blocks)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False)
class PetPeeseResult(Result):
    """Result of :func:`pet_peese`: the conditional estimate and both regressions.

    ``estimate``, ``ci_lb``, ``ci_ub`` and ``pval`` are PEESE's limit estimate
    where ``use_peese`` is True and PET's elsewhere; ``pet`` and ``peese``
    hold the two :class:`RegtestResult`.
    """

    _dict_fields = ("estimate", "ci_lb", "ci_ub", "pval", "use_peese", "alpha", "pet", "peese")

    estimate: Any
    ci_lb: Any
    ci_ub: Any
    pval: Any
    use_peese: Any
    alpha: float
    pet: RegtestResult
    peese: RegtestResult

    @property
    def chosen(self) -> Any:
        """``"PEESE"`` or ``"PET"`` for each meta-analysis."""
        out = np.where(self.use_peese, "PEESE", "PET")
        return str(out) if out.ndim == 0 else out

    def summary(self) -> str:
        """The PET and PEESE tests and the estimate chosen by the conditional rule."""
        if np.ndim(self.estimate):
            return "\n".join(
                f"Row {i}: {c} estimate = {e:.4f} (CI: {lb:.4f}, {ub:.4f})"
                for i, (c, e, lb, ub) in enumerate(
                    zip(
                        np.asarray(self.chosen).reshape(-1),
                        np.asarray(self.estimate).reshape(-1),
                        np.asarray(self.ci_lb).reshape(-1),
                        np.asarray(self.ci_ub).reshape(-1),
                        strict=True,
                    )
                )
            )
        rule = (
            f"PET's intercept test p = {self.pet.est_pval:.4f} "
            f"{'<' if self.use_peese else '>='} {self.alpha:g}: use {self.chosen}"
        )
        return "\n".join(
            [
                "",
                "PET-PEESE (Stanley & Doucouliagos, 2014)",
                "",
                f"PET   (predictor sei): b = {self.pet.est:.4f} "
                f"(CI: {self.pet.ci_lb:.4f}, {self.pet.ci_ub:.4f})",
                f"PEESE (predictor vi):  b = {self.peese.est:.4f} "
                f"(CI: {self.peese.ci_lb:.4f}, {self.peese.ci_ub:.4f})",
                rule,
                f"Estimate: {self.estimate:.4f} (CI: {self.ci_lb:.4f}, {self.ci_ub:.4f})",
                "",
            ]
        )

    def __str__(self) -> str:
        return self.summary()


def _fmt_p(p: float) -> str:
    return "p " + fmt_p(p, eq=True)


def _summary_one(r: RegtestResult, zval, pval, dfs, est, ci_lb, ci_ub) -> str:
    if r.model == "lm":
        model = "weighted regression with multiplicative dispersion"
    else:
        kind = "fixed-effects" if r.method in ("FE", "EE", "CE") else "mixed-effects"
        model = f"{kind} meta-regression model"
    lines = [
        "",
        "Regression Test for Funnel Plot Asymmetry",
        "",
        f"Model:     {model}",
        f"Predictor: {_PRED_TEXT[r.predictor]}",
        "",
    ]
    if np.isnan(dfs):
        test = f"z = {zval:.4f}, {_fmt_p(pval)}"
    else:
        test = f"t = {zval:.4f}, df = {dfs:g}, {_fmt_p(pval)}"
    lines.append("Test for Funnel Plot Asymmetry: " + test)
    if r.predictor in _LIMIT and not np.isnan(est):
        lines.append(_LIMIT_TEXT[r.predictor] + f"b = {est:.4f} (CI: {ci_lb:.4f}, {ci_ub:.4f})")
    lines.append("")
    return "\n".join(lines)


def regtest(
    yi,
    vi=None,
    *,
    model: str = "rma",
    predictor: str = "sei",
    ni=None,
    method: str | None = None,
    test: str | None = None,
    level: float | None = None,
    weights=None,
    control=None,
) -> RegtestResult:
    """Egger's regression test for funnel-plot asymmetry, as ``metafor::regtest``.

    Parameters
    ----------
    yi : array_like, object with ``.estimates()``, or PoolResult
        Effect sizes ``(..., k)`` (NaN for missing studies), or a fitted
        model; then its effects, variances, moderators, method, test, level
        and user weights are used, ``vi`` and ``weights`` must be left out, and
        ``method``, ``test`` and ``level``, when given, must agree with the fit.
    vi : array_like, optional
        Sampling variances, same shape as ``yi``.
    model : {"rma", "lm"}
        ``"rma"``: a meta-regression with the predictor as moderator (method
        and test as given; metafor's default). ``"lm"``: weighted least
        squares with weights ``1/vi`` and a multiplicative dispersion
        parameter (the classic Egger test; a t test on ``k - p - 1`` df).
    predictor : {"sei", "vi", "ni", "ninv", "sqrtni", "sqrtninv"}
        The standard error (default; Egger's test, PET), the sampling variance
        (PEESE), or the sample size ``ni``, ``1/ni``, ``sqrt(ni)``,
        ``1/sqrt(ni)``.
    ni : array_like, optional
        Sample sizes, same shape as ``yi``, for the sample-size predictors.
    method, test, level, weights, control
        As in :func:`~spatialmeta.meta_analysis.pool` for ``model="rma"`` (default
        REML, z, 95).

    Returns
    -------
    RegtestResult
        ``zval`` (or ``tval``), ``pval`` and ``dfs`` for the asymmetry test and
        the limit estimate ``est`` with ``ci_lb``, ``ci_ub`` (metafor 3.x/4.x
        report these) and its p-value ``est_pval``.

    Raises
    ------
    ValueError
        Unknown ``model`` or ``predictor``, missing ``ni``, or a design that is
        not of full rank once the predictor is added (for example all
        sampling variances equal); plus the errors of :func:`pool`.

    References
    ----------
    Egger, M., et al. (1997). Bias in meta-analysis detected by a simple,
    graphical test. doi:10.1136/bmj.315.7109.629
    Sterne, J. A. C., & Egger, M. (2005). Regression methods to detect
    publication and other bias in meta-analysis. doi:10.1002/0470870168.ch6

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> eg = regtest(yi, vi)
    >>> round(eg.zval, 4), round(eg.pval, 4), round(eg.est, 4)
    (-0.6204, 0.535, -0.5839)
    >>> lm = regtest(yi, vi, model="lm")
    >>> round(lm.tval, 4), lm.dfs
    (0.1204, 5.0)
    """
    if model not in _MODELS:
        raise ValueError(f"`model` must be 'rma' or 'lm'; got {model!r}.")
    if predictor not in _PREDICTORS:
        raise ValueError(
            f"`predictor` must be one of {', '.join(repr(p) for p in _PREDICTORS)}; "
            f"got {predictor!r}."
        )
    spec = fit_spec(yi, method, test, level, what="regtest", control=control)
    method, test, level = spec.method, spec.test, spec.level
    if isinstance(yi, PoolResult):
        if vi is not None or weights is not None:
            raise TypeError(
                "regtest(res) takes the effects, variances and weights of the fitted model; "
                "do not pass `vi` or `weights` with a PoolResult."
            )
        res = yi
        y = np.asarray(res.yi, dtype=float)
        v = np.asarray(res.vi, dtype=float)
        if res.user_weights:
            weights = res.weights
        if res.has_mods:
            X = np.asarray(res.X, dtype=float)
            names = list(res.coef_names)
        else:
            X, names = None, ["intrcpt"]
    else:
        y, v, _, _, _ = _read_inputs(yi, vi, None)
        X, names = None, ["intrcpt"]
    p = len(names)
    pred = _predictor(predictor, y, v, ni)
    if X is None:
        mods = {predictor: pred}
        intercept = True
    else:
        mods = {name: X[..., j] for j, name in enumerate(names)}
        mods[predictor if predictor not in mods else f"{predictor}_"] = pred
        intercept = False
    if model == "rma":
        fit = pool(y, v, mods=mods, intercept=intercept, method=method, test=test, level=level,
                   control=spec.control,
                   weights=weights)  # fmt: skip
        dfs = fit.df
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The Knapp-Hartung method is not meant")
            fit = pool(y, v, mods=mods, intercept=intercept, method="FE", test="knha",
                       level=level)  # fmt: skip
        dfs = fit.df
    zval = np.asarray(fit.zval)[..., p]
    pval = np.asarray(fit.pval)[..., p]
    if p == 1 and predictor in _LIMIT:
        est = np.asarray(fit.beta)[..., 0]
        lb = np.asarray(fit.ci_lb)[..., 0]
        ub = np.asarray(fit.ci_ub)[..., 0]
        est_p = np.asarray(fit.pval)[..., 0]
    else:
        est = lb = ub = est_p = np.full(np.shape(zval), np.nan)
    vals = [zval, pval, np.asarray(dfs, dtype=float), est, lb, ub, est_p]
    if not np.ndim(zval):
        vals = [float(x) for x in vals]
    return RegtestResult(
        *vals,
        model=model,
        predictor=predictor,
        method=fit.method if model == "rma" else "FE",
        test=test if model == "rma" else "t",
        level=level,
        fit=fit,
    )


def _predictor(predictor: str, y: np.ndarray, v: np.ndarray, ni) -> np.ndarray:
    if predictor == "sei":
        return np.sqrt(v)
    if predictor == "vi":
        return v
    if ni is None:
        raise ValueError(
            f"predictor={predictor!r} needs the sample sizes: pass `ni` with the shape of `yi`."
        )
    n = np.asarray(ni, dtype=float)
    try:
        n = np.broadcast_to(n, y.shape)
    except ValueError as err:
        raise ValueError(
            f"`ni` has shape {n.shape} but `yi` has shape {y.shape}; give one sample size "
            "per study."
        ) from err
    bad = ~np.isnan(y) & ~(np.isfinite(n) & (n > 0))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`ni` must be finite and > 0 for every observed study; found ni{np.asarray(idx).tolist()} = {n[idx]}."
        )
    return {"ni": n, "ninv": 1.0 / n, "sqrtni": np.sqrt(n), "sqrtninv": 1.0 / np.sqrt(n)}[predictor]


def pet_peese(
    yi,
    vi=None,
    *,
    model: str = "lm",
    method: str | None = None,
    test: str | None = None,
    level: float | None = None,
    alpha: float = 0.10,
) -> PetPeeseResult:
    """PET-PEESE: the conditional precision-effect estimate of Stanley & Doucouliagos (2014).

    PET regresses the effects on their standard errors (``regtest`` with
    ``predictor="sei"``), PEESE on their sampling variances
    (``predictor="vi"``); the intercept of each is the effect at infinite
    precision. The conditional rule implemented: where PET's intercept is
    significantly different from zero, two-sided ``p < alpha`` (default
    0.10, which is a one-sided 5% test in the direction of PET's estimate),
    there is a genuine effect and PEESE's estimate is reported; elsewhere
    PET's. (Stanley & Doucouliagos use one-sided 5% tests of the PET
    intercept; where the direction of the effect is known in advance, use
    ``alpha=0.10`` and check the sign of ``pet.est``.)

    Parameters
    ----------
    yi, vi : array_like
        Effect sizes and sampling variances ``(..., k)`` (or an object with
        ``.estimates()`` and ``vi=None``, or a fitted PoolResult, as
        :func:`regtest` takes); batched.
    model : {"lm", "rma"}
        ``"lm"`` (default): weighted least squares with weights ``1/vi`` and a
        multiplicative dispersion, as Stanley & Doucouliagos; ``"rma"``: a
        meta-regression with ``method`` and ``test``.
    method, test, level
        As in :func:`regtest`.
    alpha : float
        Two-sided significance level of PET's intercept test.

    Returns
    -------
    PetPeeseResult

    References
    ----------
    Stanley, T. D., & Doucouliagos, H. (2014). Meta-regression approximations
    to reduce publication selection bias. doi:10.1002/jrsm.1095

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([-0.89, -1.59, -1.35, -1.44, -0.22, -0.79, 0.01])
    >>> vi = np.array([0.33, 0.19, 0.42, 0.02, 0.05, 0.01, 0.06])
    >>> pp = pet_peese(yi, vi)
    >>> pp.chosen, round(pp.pet.est_pval, 4), round(pp.estimate, 4)
    ('PEESE', 0.0632, -0.848)
    """
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be between 0 and 1 (e.g. 0.10); got {alpha!r}.")
    spec = fit_spec(yi, method, test, level, what="pet_peese")
    kw = dict(model=model, **spec.kwargs())
    pet = regtest(yi, vi, predictor="sei", **kw)
    peese = regtest(yi, vi, predictor="vi", **kw)
    use = np.asarray(pet.est_pval) < alpha

    def pick(a, b):
        out = np.where(use, b, a)
        return float(out) if out.ndim == 0 else out

    return PetPeeseResult(
        estimate=pick(pet.est, peese.est),
        ci_lb=pick(pet.ci_lb, peese.ci_lb),
        ci_ub=pick(pet.ci_ub, peese.ci_ub),
        pval=pick(pet.est_pval, peese.est_pval),
        use_peese=bool(use) if use.ndim == 0 else use,
        alpha=float(alpha),
        pet=pet,
        peese=peese,
    )
