"""Effect sizes and sampling variances from study summaries, like ``metafor::escalc``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

__all__ = ["ADD_TO", "MEASURES", "escalc"]

ADD_TO = ("only0", "all", "if0all", "none")

# Arguments each family of measures needs, and the family of each measure.
_TABLE = ("ai", "bi", "ci", "di")
_MEANS = ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i")
_RATES = ("x1i", "t1i", "x2i", "t2i")
_PROPS = ("xi", "ni")
_CORS = ("ri", "ni")
_FAMILY = {
    **dict.fromkeys(("RR", "OR", "RD", "PETO"), "table"),
    **dict.fromkeys(("MD", "SMD", "SMDH", "ROM"), "means"),
    **dict.fromkeys(("IRR", "IRD"), "rates"),
    **dict.fromkeys(("PR", "PLO", "PAS", "PFT"), "props"),
    **dict.fromkeys(("COR", "ZCOR"), "cors"),
}
MEASURES = tuple(_FAMILY)
_ARGUMENTS = (
    "ai", "bi", "ci", "di", "n1i", "n2i", "x1i", "x2i", "t1i", "t2i",
    "m1i", "m2i", "sd1i", "sd2i", "xi", "ni", "ri",
)  # fmt: skip
# Measures whose default `add` is 0 (metafor: a continuity correction makes little sense).
_NO_ADD = ("PAS", "PFT")


def escalc(
    measure: str,
    data: pd.DataFrame | None = None,
    *,
    ai: Any = None,
    bi: Any = None,
    ci: Any = None,
    di: Any = None,
    n1i: Any = None,
    n2i: Any = None,
    x1i: Any = None,
    x2i: Any = None,
    t1i: Any = None,
    t2i: Any = None,
    m1i: Any = None,
    m2i: Any = None,
    sd1i: Any = None,
    sd2i: Any = None,
    xi: Any = None,
    ni: Any = None,
    ri: Any = None,
    slab: Any = None,
    add: float | None = None,
    to: str = "only0",
    append: bool = True,
) -> pd.DataFrame:
    """Compute effect sizes ``yi`` and sampling variances ``vi`` as ``metafor::escalc`` does.

    Every column argument is either the name of a column of ``data`` or an array
    (anything numpy can convert; scalars broadcast). The last axis indexes studies;
    leading axes, when arrays have them, are a batch of independent sets of studies
    (``data`` then must be None). Missing values (NaN) give NaN ``yi`` and ``vi``; so
    does a value that would be infinite (metafor recodes those to ``NA``), e.g. a log
    odds ratio of a table with a zero cell and ``to="none"``.

    Parameters
    ----------
    measure : str
        One of (arguments needed in brackets):

        * 2x2 tables (``ai``, ``ci`` and ``bi``, ``di`` or the row totals ``n1i``,
          ``n2i``): ``"RR"`` log risk ratio, ``"OR"`` log odds ratio, ``"RD"`` risk
          difference, ``"PETO"`` log odds ratio by Peto's method (Yusuf et al., 1985).
        * Two groups' means (``m1i``, ``sd1i``, ``n1i``, ``m2i``, ``sd2i``, ``n2i``):
          ``"MD"`` raw mean difference (variance without assuming equal variances),
          ``"SMD"`` standardized mean difference with the exact small-sample bias
          correction, i.e. Hedges' g (Hedges, 1981), and metafor's default large-sample
          variance ``1/n1 + 1/n2 + g^2 / (2 (n1 + n2))``; ``"SMDH"`` the same with
          heteroscedastic variances (Bonett, 2009; standardized by
          ``sqrt((sd1^2 + sd2^2) / 2)``); ``"ROM"`` log ratio of means
          (Hedges, Gurevitch & Curtis, 1999).
        * Person-time data (``x1i``, ``t1i``, ``x2i``, ``t2i``): ``"IRR"`` log
          incidence rate ratio, ``"IRD"`` incidence rate difference.
        * Single proportions (``xi``, ``ni``): ``"PR"`` raw, ``"PLO"`` logit,
          ``"PAS"`` arcsine square root, ``"PFT"`` Freeman-Tukey double arcsine
          (Freeman & Tukey, 1950).
        * Correlations (``ri``, ``ni``): ``"COR"`` raw, ``"ZCOR"`` Fisher's r-to-z.
    data : pandas.DataFrame, optional
        Table holding the columns named by string arguments.
    ai, bi, ci, di : str or array_like, optional
        2x2 cell counts: events and non-events in group 1 (``ai``, ``bi``) and in
        group 2 (``ci``, ``di``).
    n1i, n2i : str or array_like, optional
        Group sizes (2x2 tables, means).
    x1i, x2i, t1i, t2i : str or array_like, optional
        Event counts and person-times of groups 1 and 2.
    m1i, m2i, sd1i, sd2i : str or array_like, optional
        Means and standard deviations of groups 1 and 2.
    xi, ni : str or array_like, optional
        Events and sample size (proportions); ``ni`` is also the sample size of
        correlations.
    ri : str or array_like, optional
        Correlation coefficients.
    slab : str or array_like, optional
        Study labels (a column name or one label per study); used in error messages
        and as the index of the result.
    add : float, optional
        Amount added to counts when ``to`` says so (the zero-cell correction); by
        default 0.5, and 0 for ``"PAS"`` and ``"PFT"``. Used by the 2x2, person-time
        and proportion measures (for ``"RD"`` and ``"PETO"`` too, as metafor does).
    to : {"only0", "all", "if0all", "none"}
        Add ``add`` to every cell (2x2: ``ai..di``; person-time: ``x1i, x2i``;
        proportions: ``xi`` and ``ni - xi``) of the studies that have a zero among
        those cells (``"only0"``, the default), of all studies (``"all"``), of all
        studies if any study (of the same batch row) has one (``"if0all"``), or never
        (``"none"``).
    append : bool
        With ``data`` given, return a copy of ``data`` with ``yi`` and ``vi`` set
        (metafor's ``append=TRUE``); otherwise only ``yi`` and ``vi``.

    Returns
    -------
    pandas.DataFrame
        Columns ``yi`` and ``vi`` (after ``data``'s columns when appended); one row
        per study, indexed by ``slab`` when given, else by ``data``'s index. Batched
        input gives one row per (batch..., study) with a MultiIndex; reshape with
        ``frame["yi"].to_numpy().reshape(shape)``. ``frame.attrs["measure"]`` holds the
        measure.

    Raises
    ------
    TypeError
        Unknown measure, a required argument missing, an argument the measure does
        not use, or non-numeric values.
    ValueError
        Invalid study data (negative counts, events above the sample size, sd <= 0,
        correlations outside [-1, 1], sample sizes too small for the measure, means of
        opposite sign for ``"ROM"``), naming the study and the argument.

    References
    ----------
    Hedges, L. V. (1981). Distribution theory for Glass's estimator of effect size and
    related estimators. *Journal of Educational Statistics*, 6(2), 107-128.
    https://doi.org/10.3102/10769986006002107

    Hedges, L. V., Gurevitch, J., & Curtis, P. S. (1999). The meta-analysis of response
    ratios in experimental ecology. *Ecology*, 80(4), 1150-1156.
    https://doi.org/10.1890/0012-9658(1999)080[1150:TMAORR]2.0.CO;2

    Yusuf, S., Peto, R., Lewis, J., Collins, R., & Sleight, P. (1985). Beta blockade
    during and after myocardial infarction: An overview of the randomized trials.
    *Progress in Cardiovascular Diseases*, 27(5), 335-371.
    https://doi.org/10.1016/s0033-0620(85)80003-7

    Freeman, M. F., & Tukey, J. W. (1950). Transformations related to the angular and
    the square root. *Annals of Mathematical Statistics*, 21(4), 607-611.
    https://doi.org/10.1214/aoms/1177729756

    Bonett, D. G. (2009). Meta-analytic interval estimation for standardized and
    unstandardized mean differences. *Psychological Methods*, 14(3), 225-238.
    https://doi.org/10.1037/a0016619

    Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor package.
    *Journal of Statistical Software*, 36(3), 1-48. https://doi.org/10.18637/jss.v036.i03

    Examples
    --------
    >>> import pandas as pd
    >>> bcg = pd.DataFrame({"trial": ["Aronson", "Ferguson"], "tpos": [4, 6],
    ...                     "tneg": [119, 300], "cpos": [11, 29], "cneg": [128, 274]})
    >>> es = escalc("RR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", slab="trial")
    >>> es["yi"].round(4).to_dict()
    {'Aronson': -0.8893, 'Ferguson': -1.5854}
    >>> es.columns.tolist()
    ['trial', 'tpos', 'tneg', 'cpos', 'cneg', 'yi', 'vi']
    >>> smd = escalc("SMD", m1i=[55, 27], sd1i=[47, 7], n1i=[155, 31],
    ...              m2i=[75, 29], sd2i=[64, 4], n2i=[156, 32])
    >>> smd.round(4).values.tolist()
    [[-0.3552, 0.0131], [-0.3479, 0.0645]]
    >>> escalc("OR", ai=[0, 3], bi=[10, 7], ci=[2, 1], di=[8, 9]).round(4).yi.tolist()
    [-1.8207, 1.3499]
    """
    measure, add, to = _options(measure, add, to)
    family = _FAMILY[measure]
    values = (ai, bi, ci, di, n1i, n2i, x1i, x2i, t1i, t2i, m1i, m2i, sd1i, sd2i, xi, ni, ri)
    given = {k: v for k, v in zip(_ARGUMENTS, values, strict=True) if v is not None}
    _check_arguments(measure, family, given)
    if data is not None and not isinstance(data, pd.DataFrame):
        raise TypeError(
            f"`data` must be a pandas DataFrame; got {type(data).__name__}. Pass a "
            "DataFrame, or pass the columns as arrays and leave data=None."
        )
    sources = {
        k: (f"`{k}` (column {v!r})" if isinstance(v, str) else f"`{k}`") for k, v in given.items()
    }
    labels = _labels(slab, data)
    arrays = {k: _column(k, v, data, sources[k], labels) for k, v in given.items()}
    shape = _common_shape(arrays, sources, data)
    arrays = {k: np.broadcast_to(v, shape) for k, v in arrays.items()}
    _check_labels(labels, slab, shape)
    where = _Locator(shape, labels, measure)
    for k, v in arrays.items():
        bad = np.isinf(v)
        if bad.any():
            where.fail(
                bad,
                f"{sources[k]} is infinite",
                v,
                k,
                "give a finite value or NaN for a missing one",
            )

    compute: Callable[..., tuple[np.ndarray, np.ndarray]] = {
        "table": _table,
        "means": _means,
        "rates": _rates,
        "props": _props,
        "cors": _cors,
    }[family]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        yi, vi = compute(measure, arrays, sources, where, add, to)
        # Like metafor, a study whose yi or vi is infinite or undefined gets NaN for both.
        bad = ~(np.isfinite(yi) & np.isfinite(vi))
        yi = np.where(bad, np.nan, yi)
        vi = np.where(bad, np.nan, vi)
    return _frame(yi, vi, shape, data, labels, slab, append, measure)


# --------------------------------------------------------------------------- measures


def _table(measure, a, src, where, add, to):
    ai, ci = a["ai"], a["ci"]
    for k in ("ai", "ci", "bi", "di", "n1i", "n2i"):
        if k in a:
            where.fail(a[k] < 0, f"{src[k]} is negative", a[k], k, "counts must be >= 0")
    bi = a["bi"] if "bi" in a else a["n1i"] - ai
    di = a["di"] if "di" in a else a["n2i"] - ci
    for cell, total, tk, ck in ((ai, a.get("n1i"), "n1i", "ai"), (ci, a.get("n2i"), "n2i", "ci")):
        if total is None:
            continue
        other = "bi" if tk == "n1i" else "di"
        if other in a:
            where.fail(
                ~np.isclose(cell + a[other], total, rtol=1e-12, atol=0) & ~np.isnan(total),
                f"{src[tk]} is not {ck} + {other}",
                total,
                tk,
                f"give either {other} or {tk}, or make {tk} = {ck} + {other}",
            )
        else:
            where.fail(
                cell > total,
                f"{src[ck]} is larger than the group size {src[tk]}",
                cell,
                ck,
                f"events cannot exceed the group size; check {ck} and {tk}",
            )
    where.fail(
        ai + bi <= 0,
        "group 1 is empty (ai + bi = 0); n too small",
        ai + bi,
        "n1i",
        "each group needs at least one participant; drop the study",
    )
    where.fail(
        ci + di <= 0,
        "group 2 is empty (ci + di = 0); n too small",
        ci + di,
        "n2i",
        "each group needs at least one participant; drop the study",
    )
    ai, bi, ci, di = _continuity([ai, bi, ci, di], add, to)
    n1, n2 = ai + bi, ci + di
    if measure == "RR":
        yi = np.log(ai / n1) - np.log(ci / n2)
        vi = 1 / ai - 1 / n1 + 1 / ci - 1 / n2
    elif measure == "OR":
        yi = np.log(ai * di / (bi * ci))
        vi = 1 / ai + 1 / bi + 1 / ci + 1 / di
    elif measure == "RD":
        p1, p2 = ai / n1, ci / n2
        yi = p1 - p2
        vi = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    else:  # PETO: (O - E) / V with the hypergeometric mean and variance of ai
        n = n1 + n2
        events, non_events = ai + ci, bi + di
        expected = n1 * events / n
        v = events * non_events * n1 * n2 / (n**2 * (n - 1))
        yi = (ai - expected) / v
        vi = 1 / v
    return yi, vi


def _means(measure, a, src, where, add, to):
    m1, s1, n1, m2, s2, n2 = (a[k] for k in _MEANS)
    for s, k in ((s1, "sd1i"), (s2, "sd2i")):
        where.fail(s <= 0, f"{src[k]} is not positive", s, k, "standard deviations must be > 0")
    small = 1 if measure == "SMDH" else 0
    for n, k in ((n1, "n1i"), (n2, "n2i")):
        where.fail(
            n <= small,
            f"{src[k]} is too small for {measure} (needs n > {small})",
            n,
            k,
            "check the group size or drop the study",
        )
    if measure == "SMD":
        where.fail(
            n1 + n2 <= 3,
            f"{src['n1i']} + {src['n2i']} is too small for SMD (needs n1i + n2i > 3)",
            n1 + n2,
            "n1i",
            "check the group sizes or drop the study",
        )
    if measure == "MD":
        return m1 - m2, s1**2 / n1 + s2**2 / n2
    if measure == "ROM":
        where.fail(
            np.sign(m1) * np.sign(m2) <= 0,
            f"{src['m1i']} and {src['m2i']} are zero or of opposite sign; "
            "the log ratio of means is undefined",
            m1,
            "m1i",
            "ROM needs ratio-scale means of the same sign; use MD or SMD for such data",
        )
        return np.log(m1 / m2), s1**2 / (n1 * m1**2) + s2**2 / (n2 * m2**2)
    c = _hedges_c(n1 + n2 - 2)
    if measure == "SMD":
        sp2 = ((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / (n1 + n2 - 2)
        g = c * (m1 - m2) / np.sqrt(sp2)
        return g, 1 / n1 + 1 / n2 + g**2 / (2 * (n1 + n2))
    # SMDH (Bonett, 2009): standardizer sqrt of the average variance; the variance of
    # the corrected estimator is c^2 times Bonett's, with g plugged in for delta.
    sp2 = (s1**2 + s2**2) / 2
    g = c * (m1 - m2) / np.sqrt(sp2)
    a4 = (s1**4 / (n1 - 1) + s2**4 / (n2 - 1)) / (8 * sp2**2)
    b2 = (s1**2 / (n1 - 1) + s2**2 / (n2 - 1)) / sp2
    return g, c**2 * (g**2 * a4 + b2)


def _hedges_c(m):
    """Exact bias correction c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)) (Hedges, 1981)."""
    return np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))


def _rates(measure, a, src, where, add, to):
    x1, t1, x2, t2 = (a[k] for k in _RATES)
    for x, k in ((x1, "x1i"), (x2, "x2i")):
        where.fail(x < 0, f"{src[k]} is negative", x, k, "event counts must be >= 0")
    for t, k in ((t1, "t1i"), (t2, "t2i")):
        where.fail(t <= 0, f"{src[k]} is not positive", t, k, "person-times must be > 0")
    x1, x2 = _continuity([x1, x2], add, to)
    if measure == "IRR":
        return np.log(x1 / t1) - np.log(x2 / t2), 1 / x1 + 1 / x2
    return x1 / t1 - x2 / t2, x1 / t1**2 + x2 / t2**2


def _props(measure, a, src, where, add, to):
    x, n = a["xi"], a["ni"]
    where.fail(x < 0, f"{src['xi']} is negative", x, "xi", "event counts must be >= 0")
    where.fail(
        n <= 0,
        f"{src['ni']} is not positive; n too small",
        n,
        "ni",
        "the sample size must be > 0; drop the study",
    )
    where.fail(
        x > n,
        f"{src['xi']} is larger than the sample size {src['ni']}",
        x,
        "xi",
        "events cannot exceed the sample size; check xi and ni",
    )
    x, m = _continuity([x, n - x], add, to)
    n = x + m
    p = x / n
    if measure == "PR":
        return p, p * (1 - p) / n
    if measure == "PLO":
        return np.log(x / m), 1 / x + 1 / m
    if measure == "PAS":
        return np.arcsin(np.sqrt(p)), 1 / (4 * n)
    # PFT (Freeman & Tukey, 1950)
    yi = 0.5 * (np.arcsin(np.sqrt(x / (n + 1))) + np.arcsin(np.sqrt((x + 1) / (n + 1))))
    return yi, 1 / (4 * n + 2)


def _cors(measure, a, src, where, add, to):
    r, n = a["ri"], a["ni"]
    where.fail(
        np.abs(r) > 1,
        f"{src['ri']} is outside [-1, 1]",
        r,
        "ri",
        "correlations must lie in [-1, 1]; check for percentages or typos",
    )
    small = 3 if measure == "ZCOR" else 1
    where.fail(
        n <= small,
        f"{src['ni']} is too small for {measure} (needs ni > {small})",
        n,
        "ni",
        "check the sample size or drop the study",
    )
    if measure == "COR":
        return r.astype(float, copy=True), (1 - r**2) ** 2 / (n - 1)
    return np.arctanh(r), 1 / (n - 3)


def _continuity(cells, add, to):
    """Add `add` to every cell of the studies that `to` selects (metafor's add/to)."""
    if to == "none" or add == 0:
        return cells
    if to == "all":
        chosen = np.ones(cells[0].shape, dtype=bool)
    else:
        chosen = np.zeros(cells[0].shape, dtype=bool)
        for cell in cells:
            chosen |= cell == 0
        if to == "if0all":
            chosen = np.broadcast_to(chosen.any(axis=-1, keepdims=True), chosen.shape)
    return [np.where(chosen, cell + add, cell) for cell in cells]


# --------------------------------------------------------------------------- inputs


def _options(measure, add, to):
    canon = measure.upper() if isinstance(measure, str) else measure
    if canon not in _FAMILY:
        raise TypeError(
            f"`measure` must be one of {', '.join(MEASURES)}; got {measure!r}. Pick the "
            "measure that matches the data you have (see escalc's docstring)."
        )
    if to not in ADD_TO:
        raise ValueError(
            f"`to` must be one of {', '.join(repr(t) for t in ADD_TO)}; got {to!r}. "
            "'only0' (the default) adds `add` only to studies with a zero cell."
        )
    if add is None:
        add = 0.0 if canon in _NO_ADD else 0.5
    try:
        add = float(add)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`add` must be a number >= 0; got {add!r}.") from err
    if not np.isfinite(add) or add < 0:
        raise ValueError(
            f"`add` must be a finite number >= 0; got {add!r}. Use 0.5 (metafor's default)."
        )
    return canon, add, to


_NEEDED = {"table": _TABLE, "means": _MEANS, "rates": _RATES, "props": _PROPS, "cors": _CORS}


def _check_arguments(measure, family, given):
    needed = list(_NEEDED[family])
    allowed = set(needed)
    if family == "table":
        allowed |= {"n1i", "n2i"}
        for cell, total in (("bi", "n1i"), ("di", "n2i")):
            if cell not in given and total in given:
                needed.remove(cell)
    missing = [k for k in needed if k not in given]
    if missing:
        alt = " (or the row totals n1i, n2i instead of bi, di)" if family == "table" else ""
        raise TypeError(
            f"escalc(measure={measure!r}) needs {', '.join(_NEEDED[family])}{alt}; missing: "
            f"{', '.join(missing)}. Pass each as an array or as the name of a column of `data`."
        )
    extra = sorted(set(given) - allowed, key=_ARGUMENTS.index)
    if extra:
        raise TypeError(
            f"escalc(measure={measure!r}) does not use {', '.join(extra)}; it needs "
            f"{', '.join(_NEEDED[family])}. Remove the extra arguments or choose the "
            "measure that matches them."
        )


def _column(name, value, data, source, labels):
    if isinstance(value, str):
        if data is None:
            raise TypeError(
                f"`{name}` is the column name {value!r} but `data` is None; pass the "
                "DataFrame as `data`, or pass the values as an array."
            )
        if value not in data.columns:
            raise ValueError(
                f"`{name}` names column {value!r}, which `data` does not have; its columns "
                f"are {', '.join(map(str, data.columns))}."
            )
        value = data[value]
    if isinstance(value, pd.Series | pd.Index):
        value = value.to_numpy(dtype=object if value.dtype == object else None)
    try:
        # Plain sequences go through object dtype so that a stray string or bool in a
        # list is reported instead of turning every value into a string (or 1).
        arr = np.asarray(value, dtype=object if isinstance(value, list | tuple) else None)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{source} could not be read as an array: {err}") from err
    if arr.dtype.kind in "iuf":
        return arr.astype(float)
    if arr.dtype.kind in "OSUa":
        flat = pd.Series(arr.reshape(-1), dtype=object)
        kind = pd.api.types.infer_dtype(flat, skipna=True)
        if kind in ("integer", "floating", "mixed-integer-float", "decimal", "empty"):
            return pd.to_numeric(flat).to_numpy(dtype=float).reshape(arr.shape)
        # Error path only: find the first value that is not a real number.
        for i, v in enumerate(flat):
            real = isinstance(v, int | float | np.integer | np.floating)
            missing = v is None or v is pd.NA or (real and np.isnan(v))
            if not (missing or (real and not isinstance(v, bool | np.bool_))):
                index = np.unravel_index(i, arr.shape) if arr.ndim else (0,)
                raise TypeError(
                    f"{source} must be numeric; {_study_text(index, labels)} holds {v!r}. "
                    "Convert the column to numbers (NaN for a missing value)."
                )
    raise TypeError(
        f"{source} must be numeric; got values of dtype {arr.dtype}. Convert it to numbers "
        "(NaN for a missing value)."
    )


def _common_shape(arrays, sources, data):
    if data is not None:
        for k, a in arrays.items():
            if a.shape not in ((), (len(data),)):
                raise ValueError(
                    f"with `data` ({len(data)} rows), every argument must have one value per "
                    f"row; {sources[k]} has shape {a.shape}. Pass a column name of `data` or "
                    "an array of that length (batches need arrays and data=None)."
                )
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(f"{sources[k]} {a.shape}" for k, a in arrays.items())
        raise ValueError(
            f"the study arrays do not line up: {shapes}. Give one value per study (the "
            "last axis), the same length for every argument."
        ) from None
    if shape == ():
        shape = (1,)
    if data is not None:
        shape = (len(data),)
    return shape


def _labels(slab, data):
    if slab is None:
        if data is not None and not isinstance(data.index, pd.RangeIndex):
            return np.asarray(data.index)
        return None
    if isinstance(slab, str):
        if data is None or slab not in data.columns:
            raise ValueError(
                f"`slab` names column {slab!r}, which "
                + ("there is no `data` to hold" if data is None else "`data` does not have")
                + "; pass the labels as an array or a column name of `data`."
            )
        slab = data[slab]
    return np.asarray(slab)


def _check_labels(labels, slab, shape):
    if slab is not None and labels.shape != shape[-1:]:
        raise ValueError(
            f"`slab` has shape {labels.shape}; give one label per study ({shape[-1]},)."
        )


def _study_text(index, labels):
    text = f"study {_index_text(index)}"
    if labels is not None and labels.ndim == 1 and int(index[-1]) < len(labels):
        text += f" ({str(labels[int(index[-1])])!r})"
    return text


def _index_text(index):
    index = tuple(int(i) for i in index)
    return str(index[0]) if len(index) == 1 else "[" + ", ".join(map(str, index)) + "]"


class _Locator:
    """Raises errors that name the first offending study."""

    def __init__(self, shape, labels, measure):
        self.shape, self.labels, self.measure = shape, labels, measure

    def fail(self, bad, what, values, column, fix):
        bad = np.broadcast_to(bad, self.shape)
        if not bad.any():
            return
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        study = _study_text(index, self.labels)
        value = np.broadcast_to(values, self.shape)[index]
        count = int(bad.sum())
        more = f" ({count - 1} more studies likewise)" if count > 1 else ""
        raise ValueError(
            f"escalc(measure={self.measure!r}): {what} for {study}: {column} = {value:g}{more}. "
            f"Fix: {fix}."
        )


def _frame(yi, vi, shape, data, labels, slab, append, measure):
    if len(shape) > 1:
        index = pd.MultiIndex.from_tuples(
            list(np.ndindex(*shape)), names=[f"batch{i}" for i in range(len(shape) - 1)] + ["study"]
        )
        frame = pd.DataFrame({"yi": yi.reshape(-1), "vi": vi.reshape(-1)}, index=index)
    else:
        if data is not None and append:
            frame = data.copy()
            frame["yi"] = yi
            frame["vi"] = vi
        else:
            frame = pd.DataFrame(
                {"yi": yi, "vi": vi}, index=data.index if data is not None else None
            )
        if slab is not None:
            frame.index = pd.Index(labels, name=slab if isinstance(slab, str) else "slab")
    frame.attrs["measure"] = measure
    return frame
