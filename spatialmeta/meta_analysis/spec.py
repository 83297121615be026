"""The settings of a fit (estimator, test, confidence level), checked and canonicalised once.

Every function that fits or refits a model reads its settings through :class:`FitSpec`:
:func:`~spatialmeta.meta_analysis.pool.pool` for a new fit, and the analyses of a fitted
result (leave-one-out, cumulative, influence, residuals, subgroups, bias tests) through
:func:`~spatialmeta.meta_analysis.fitted.as_fit`, which takes the fit's own settings as
metafor does (``leave1out(res)`` refits with ``res``'s estimator, never a default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spatialmeta.meta_analysis.estimators import FIXED_METHODS, MAXITER, METHODS, STEPADJ, THRESHOLD

__all__ = ["Control", "FitSpec", "TESTS"]

TESTS = ("z", "knha")
DEFAULT_METHOD, DEFAULT_TEST, DEFAULT_LEVEL = "REML", "z", 95.0


@dataclass(frozen=True)
class Control:
    """Fisher scoring's settings for ML, REML and EB (metafor's ``control`` of ``rma.uni``).

    ``threshold``: convergence when a step moves tau^2 by at most this; ``maxiter``: steps
    before the fit counts as not converged (then the bracketed solve of
    :func:`~spatialmeta.meta_analysis.estimators.rescue_tau2` takes over); ``stepadj``: the
    factor on every step (below 1 damps an oscillating iteration).

    >>> Control.make({"threshold": 1e-8, "stepadj": 0.5})
    Control(threshold=1e-08, maxiter=100, stepadj=0.5)
    """

    threshold: float = THRESHOLD
    maxiter: int = MAXITER
    stepadj: float = STEPADJ

    @classmethod
    def make(cls, control: Any = None, *, prefix: str = "") -> Control:
        """A checked Control from None (metafor's defaults), a Control or a dict."""
        if control is None:
            return cls()
        if isinstance(control, Control):
            return control
        if not isinstance(control, dict):
            raise TypeError(
                f"{prefix}`control` must be a dict such as {{'maxiter': 500}} or a Control; "
                f"got {type(control).__name__}."
            )
        unknown = sorted(set(control) - {"threshold", "maxiter", "stepadj"})
        if unknown:
            raise ValueError(
                f"{prefix}`control` takes threshold, maxiter and stepadj (as metafor's "
                f"rma.uni); unknown: {unknown}."
            )
        out = cls(**control)
        ok = isinstance(out.maxiter, int) and not isinstance(out.maxiter, bool) and out.maxiter >= 1
        if not ok:
            raise ValueError(
                f"{prefix}`control['maxiter']` must be an integer >= 1; got {out.maxiter!r}."
            )
        for name in ("threshold", "stepadj"):
            value = getattr(out, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
                raise ValueError(
                    f"{prefix}`control[{name!r}]` must be a number > 0; got {value!r}."
                )
        return cls(float(out.threshold), int(out.maxiter), float(out.stepadj))


@dataclass(frozen=True)
class FitSpec:
    """Estimator, test and confidence level of a fit, canonical.

    ``method`` upper case (one of :data:`~spatialmeta.meta_analysis.estimators.METHODS`),
    ``test`` ``"z"`` or ``"knha"``, ``level`` in percent (a fraction such as ``0.95`` is
    read as 95).

    Examples
    --------
    >>> FitSpec.make("dl", "KNHA", 0.9)
    FitSpec(method='DL', test='knha', level=90.0, control=Control(threshold=1e-05, maxiter=100, stepadj=1.0))
    >>> sorted(FitSpec.make().kwargs())
    ['control', 'level', 'method', 'test']
    """

    method: str = DEFAULT_METHOD
    test: str = DEFAULT_TEST
    level: float = DEFAULT_LEVEL
    control: Control = Control()

    @classmethod
    def make(
        cls,
        method: Any = None,
        test: Any = None,
        level: Any = None,
        *,
        control: Any = None,
        prefix: str = "",
    ):
        """Checked settings; ``None`` takes the default (REML, z, 95, metafor's control).
        ``prefix`` starts every error message (e.g. ``"trimfill: "``)."""
        method = DEFAULT_METHOD if method is None else method
        test = DEFAULT_TEST if test is None else test
        level = DEFAULT_LEVEL if level is None else level
        canon = method.upper() if isinstance(method, str) else method
        if canon not in METHODS:
            raise ValueError(
                f"{prefix}`method` must be one of {', '.join(repr(x) for x in METHODS)}; got "
                f"{method!r}. Use 'REML' (the default) unless you need another estimator."
            )
        canon_test = test.lower() if isinstance(test, str) else test
        if canon_test not in TESTS:
            raise ValueError(
                f"{prefix}`test` must be 'z' (normal) or 'knha' (Knapp-Hartung); got {test!r}."
            )
        lvl = (
            float(level)
            if isinstance(level, int | float) and not isinstance(level, bool)
            else float("nan")
        )
        if 0 < lvl < 1:
            lvl *= 100.0
        if not 1 <= lvl < 100:
            raise ValueError(
                f"{prefix}`level` must be a confidence level in percent between 1 and 100 "
                f"(e.g. 95); got {level!r}."
            )
        return cls(canon, canon_test, lvl, Control.make(control, prefix=prefix))

    @classmethod
    def of(cls, result) -> FitSpec:
        """The settings a fitted result was made with."""
        return cls(
            result.method, result.test, float(result.level), getattr(result, "control", Control())
        )

    @property
    def fixed(self) -> bool:
        """True for a common-effect model (tau^2 fixed at 0)."""
        return self.method in FIXED_METHODS

    def kwargs(self) -> dict[str, Any]:
        """``method``, ``test``, ``level`` and ``control`` as keyword arguments of :func:`pool`."""
        return {
            "method": self.method,
            "test": self.test,
            "level": self.level,
            "control": self.control,
        }
