"""Fitted-first: every analysis that refits a model starts from a fitted result.

``leave1out(res)``, ``cumul(res)``, ``influence(res)``, ``subgroups(res, groups)``,
``trimfill(res)`` and the others take a :class:`~spatialmeta.meta_analysis.pool.PoolResult`
and refit with *its* estimator, test and level, as metafor's methods on an ``rma`` object
do. The raw-array form (``leave1out(yi, vi, method="DL")``) stays as a convenience that
builds the fit first. :func:`as_fit` is the one place both forms meet: settings given next
to a fitted result must agree with it (an analysis never silently refits with another
estimator), and parts of a fit an analysis cannot carry into its refits (moderators, user
weights) are refused by name instead of dropped.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.spec import FitSpec

__all__ = ["FIT_PARAMETERS", "analysis", "as_fit", "fit_spec", "fits_by_k"]

# The parameters every fitted-first analysis takes, documented once: the decorator puts
# them where an analysis's docstring says {fit_parameters}.
FIT_PARAMETERS = """yi : PoolResult, array_like or object with ``.estimates()``
        A fitted model (its estimator, test and level are used, as metafor's methods on
        an ``rma`` object), or effect sizes, shape ``(..., k)``: leading axes are a batch
        of separate meta-analyses and NaN marks a missing study (see :func:`pool`).
    vi : array_like, optional
        Sampling variances, same shape as ``yi`` (with effect sizes only).
    method, test, level
        As for :func:`~spatialmeta.meta_analysis.pool.pool` (default REML, z, 95) when
        ``yi`` holds effect sizes; with a fitted result they default to the fit's and,
        when given, must agree with it.
    labels : array_like, optional
        Study labels, shape ``(k,)`` or that of ``yi`` (with effect sizes only).
    control : dict or Control, optional
        Fisher scoring's settings (as for :func:`pool`); with a fitted result, the fit's."""

_SETTINGS = ("method", "test", "level", "labels", "control")


def fit_spec(obj: Any, method=None, test=None, level=None, *, what: str, control=None) -> FitSpec:
    """The settings of an analysis of ``obj``: a fitted result's own (a setting given as
    well must agree with it), else the given ones (defaults REML, z, 95)."""
    prefix = f"{what}: "
    if not isinstance(obj, PoolResult):
        return FitSpec.make(method, test, level, control=control, prefix=prefix)
    own = FitSpec.of(obj)
    given = FitSpec.make(
        own.method if method is None else method,
        own.test if test is None else test,
        own.level if level is None else level,
        control=own.control if control is None else control,
        prefix=prefix,
    )
    for name in ("method", "test", "level", "control"):
        mine, theirs = getattr(given, name), getattr(own, name)
        if mine != theirs:
            raise ValueError(
                f"{what}: `{name}={mine!r}` differs from the fitted result's {name} {theirs!r}. "
                f"An analysis of a fitted result refits with the fit's own settings (as "
                f"metafor's {what}(res)); leave `{name}` out, or refit first: "
                f"pool(yi, vi, {name}={mine!r})."
            )
    return own


def as_fit(
    obj: Any,
    vi=None,
    *,
    what: str,
    method=None,
    test=None,
    level=None,
    labels=None,
    mods: bool = False,
    weights: bool = False,
    control=None,
) -> PoolResult:
    """The fitted model an analysis named ``what`` works on.

    ``obj`` a :class:`PoolResult`: returned as it is, after checking that ``vi``/``labels``
    are not given too, that ``method``/``test``/``level`` (when given) agree with it, and
    that it has no moderators (unless ``mods``) and no user weights (unless ``weights``),
    since the analysis would drop them. Otherwise ``obj``/``vi`` are effect sizes (or an
    object with ``.estimates()``), fitted by :func:`pool` with the given settings.

    Examples
    --------
    >>> import numpy as np
    >>> yi, vi = np.array([0.1, 0.5, 0.3, 0.9]), np.array([0.02, 0.05, 0.03, 0.04])
    >>> fit = pool(yi, vi, method="DL")
    >>> as_fit(fit, what="leave1out") is fit
    True
    >>> as_fit(yi, vi, what="leave1out", method="pm").method
    'PM'
    """
    spec = fit_spec(obj, method, test, level, what=what, control=control)
    if not isinstance(obj, PoolResult):
        return pool(obj, vi, labels=labels, **spec.kwargs())
    for name, value in (("vi", vi), ("labels", labels)):
        if value is not None:
            raise TypeError(
                f"{what}(res) takes the studies and labels of the fitted model; do not pass "
                f"`{name}` with a PoolResult (refit with pool(..., {name}=...) to change it)."
            )
    if obj.yi is None or obj.vi is None:
        raise ValueError(
            f"{what}: this PoolResult does not keep its studies (yi/vi), as a dask-backed fit "
            "does not; pass the effect sizes and sampling variances instead."
        )
    if obj.has_mods and not mods:
        names = ", ".join(n for n in obj.coef_names if n != "intrcpt")
        raise ValueError(
            f"{what} refits intercept-only models, but this fit is a meta-regression on "
            f"{names}; its moderators would be dropped from every refit (metafor's {what} "
            "stops here too). Pass a fit without `mods`, or a subgroup's fit."
        )
    if obj.user_weights and not weights:
        raise ValueError(
            f"{what} refits with inverse-variance weights, but this fit was made with user "
            "`weights`, which would be dropped from every refit. Pass a fit without "
            "`weights`."
        )
    return obj


def fits_by_k(yy, vv, kf, method, test, level, control=None, want=None):
    """Fit padded rows as metafor fits each: rows with k >= 2 with ``method`` and ``test``,
    rows with one study as metafor's k = 1 fit (a common effect, z test). Yields ``(rows,
    fit)`` pairs, one batched :func:`pool` call each; ``want`` limits the rows fitted."""
    want = kf >= 1 if want is None else want & (kf >= 1)
    for sel, meth, tst in ((want & (kf >= 2), method, test), (want & (kf == 1), "FE", "z")):
        if not sel.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the callers report non-convergence themselves
            yield sel, pool(yy[sel], vv[sel], method=meth, test=tst, level=level, control=control)


def analysis(what: str, *, mods: bool = False, weights: bool = False):
    """Make ``fn(fit, *options)`` a fitted-first analysis named ``what``.

    The decorated function takes ``(yi, vi=None, *options, method=None, test=None,
    level=None, labels=None)``: a fitted result, or effect sizes that are fitted first,
    through :func:`as_fit`; ``fn`` itself always receives the fit (also reachable as
    ``.fitted``). The signature and the ``{fit_parameters}`` of ``fn``'s docstring are
    filled in, so that the common arguments are stated and documented once.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def run(
            yi, vi=None, *args, method=None, test=None, level=None, labels=None, control=None,
            **options,
        ):  # fmt: skip
            fit = as_fit(yi, vi, what=what, method=method, test=test, level=level,
                         labels=labels, mods=mods, weights=weights, control=control)  # fmt: skip
            return fn(fit, *args, **options)

        sig = inspect.signature(fn)
        own = list(sig.parameters.values())[1:]
        pos = [p for p in own if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        kw = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        common = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in _SETTINGS
        ]
        head = [
            inspect.Parameter("yi", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("vi", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        ]
        run.__signature__ = sig.replace(parameters=head + pos + kw + common)
        if fn.__doc__:
            run.__doc__ = fn.__doc__.replace("{fit_parameters}", FIT_PARAMETERS)
        run.fitted = fn
        return run

    return wrap
