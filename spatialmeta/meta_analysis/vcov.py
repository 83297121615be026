"""The sampling covariance matrix ``V`` of dependent effect sizes, for multilevel and
multivariate models (:func:`~spatialmeta.meta_analysis.multilevel.pool_mv`).

Effects computed from the same sample (several outcomes of one study, one outcome at several
times, several treatments against one shared control group) have correlated sampling
errors. Two ways to fill ``V``, both block-diagonal by cluster (effects of different
clusters are independent):

* :func:`impute_covariance_matrix` (clubSandwich 0.5.8's): a constant correlation ``r``
  within a cluster, optionally mixed with an AR(1) correlation in time.
* :func:`vcalc` (metafor 3.8's): a correlation built from what two effects share: the
  construct (``type``), the measure (``obs``), the time points and the groups they contrast
  (``grp1``/``grp2`` with sizes ``w1``/``w2``), or one correlation matrix per cluster
  (``rvars``).

Written by hand because no Python package has either (PyMARE and statsmodels take ``V`` as
given). The blocks are built array-at-a-time: all clusters of one size at once, stacked
``(n_clusters, m, m)`` and scattered into the dense ``(k, k)`` matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

__all__ = ["impute_covariance_matrix", "vcalc"]

_EPS = np.finfo(float).eps


def _codes(x, k: int, name: str, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (0..n-1) of one label per effect and the labels (sorted where they can
    be); a wrong length or a missing label is an error that names the effect."""
    arr = np.asarray(x, dtype=object).ravel()
    if arr.size != k:
        raise ValueError(f"{fn}: `{name}` has {arr.size} labels for {k} effects; give one label "
                         "per effect, in the order of `vi`.")  # fmt: skip
    miss = pd.isna(arr)
    if miss.any():
        raise ValueError(f"{fn}: `{name}` is missing at effect {int(np.flatnonzero(miss)[0])}; "
                         "give every effect a label.")  # fmt: skip
    try:
        codes, levels = pd.factorize(arr, sort=True)
    except TypeError:  # labels of mixed kinds: first-appearance order
        codes, levels = pd.factorize(arr)
    return codes.astype(np.intp), np.asarray(levels, dtype=object)


def _numbers(x, k: int, name: str, fn: str, positive: bool = False) -> np.ndarray:
    """One finite number per effect (positive with ``positive``), else an error naming the
    first bad effect."""
    try:
        arr = np.asarray(x, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: `{name}` must be numeric; got {np.asarray(x).dtype} values."
                        ) from None  # fmt: skip
    if arr.size != k:
        raise ValueError(f"{fn}: `{name}` has {arr.size} values for {k} effects; give one per "
                         "effect, in the order of `vi`.")  # fmt: skip
    bad = ~np.isfinite(arr) | ((arr <= 0) if positive else False)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        need = "a positive number (a group size or weight)" if positive else "a finite number"
        raise ValueError(f"{fn}: `{name}` at effect {j} is {float(arr[j])!r}; it must be {need}.")
    return arr


def _variances(vi, k: int | None, fn: str) -> np.ndarray:
    v = np.asarray(vi, dtype=float)
    if v.ndim == 0 and k is not None:  # one variance for all (metafor's vi = 1)
        v = np.full(k, float(v))
    v = v.ravel()
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{fn}: `vi` at effect {j} is {float(v[j])!r}; sampling variances must be "
                         "finite and >= 0 (drop the effect or supply its variance).")  # fmt: skip
    return v


def _correlation(value, name: str, fn: str) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: `{name}` must be a number in [-1, 1]; got {value!r}.") from None
    if not -1 <= c <= 1:  # NaN fails too
        raise ValueError(f"{fn}: `{name}` = {c!r} is not a correlation; give a value in "
                         "[-1, 1].")  # fmt: skip
    return c


def _by_size(codes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each cluster size m: the clusters of that size ``(n_c,)`` and their effects
    ``(n_c, m)``, in input order within a cluster."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    start = np.cumsum(counts) - counts
    for m in np.unique(counts):
        cl = np.flatnonzero(counts == m)
        yield cl, order[start[cl][:, None] + np.arange(m)]


def _pair(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` of the row effect ``(n_c, m, 1)`` and of the column effect ``(n_c, 1, m)``."""
    xi = x[idx]
    return xi[:, :, None], xi[:, None, :]


def _not_pd(blocks: np.ndarray) -> np.ndarray:
    """Which stacked symmetric ``(n_c, m, m)`` blocks are not numerically positive definite:
    an eigenvalue <= ``m eps lambda_max`` (numpy's rank tolerance; metafor tests ``<= eps``,
    which decides exactly singular blocks by their rounding)."""
    w = np.linalg.eigvalsh(blocks)
    return w[:, 0] <= blocks.shape[-1] * _EPS * np.abs(w).max(axis=-1)


def impute_covariance_matrix(vi, cluster, r, *, ti=None, ar1=None, smooth_vi=False,
                             subgroup=None, return_list=False, check_pd=True):  # fmt: skip
    """Impute ``V`` from a working correlation: ``Cov(e_i, e_j) = rho_ij sqrt(v_i v_j)`` for
    effects of one cluster, 0 across clusters (clubSandwich's ``impute_covariance_matrix``).

    ``rho_ij = r`` (constant correlation); with ``ar1`` it is
    ``r + (1 - r) ar1^|t_i - t_j|`` (``ar1^|t_i - t_j|`` alone when ``r`` is None).

    Parameters
    ----------
    vi : array_like ``(k,)``
        Sampling variances (>= 0).
    cluster : array_like ``(k,)``
        Cluster labels (e.g. study).
    r : float or array_like ``(n_clusters,)`` or None
        Correlation within a cluster, one for all or one per cluster (clusters in sorted
        label order). None only with ``ar1``.
    ti : array_like ``(k,)``, optional
        Time of each effect, for ``ar1``.
    ar1 : float or array_like ``(n_clusters,)``, optional
        Autocorrelation per unit of ``ti``.
    smooth_vi : bool
        Use each cluster's mean variance for all its effects.
    subgroup : array_like ``(k,)``, optional
        Effects of different subgroups of a cluster are independent (covariance 0).
    return_list : bool
        Return the blocks, one per cluster in sorted label order (effects in input order),
        instead of the dense matrix.
    check_pd : bool
        Warn (as clubSandwich does) naming clusters whose block is not positive definite
        (an eigenvalue ``<= m eps lambda_max``; clubSandwich's test is ``<= 0``).

    Returns
    -------
    numpy.ndarray ``(k, k)`` in the input order of the effects, or a list of blocks.

    References
    ----------
    Pustejovsky, J. E., & Tipton, E. (2018). Small-sample methods for cluster-robust variance
    estimation and hypothesis testing in fixed effects models. *Journal of Business &
    Economic Statistics*, 36(4), 672-683.
    Pustejovsky, J. E. (2023). clubSandwich: Cluster-robust (sandwich) variance estimators
    with small-sample corrections. R package version 0.5.8 (``impute_covariance_matrix``).

    Examples
    --------
    >>> V = impute_covariance_matrix([0.04, 0.09, 0.01], ["a", "a", "b"], r=0.5)
    >>> V.round(3)
    array([[0.04, 0.03, 0.  ],
           [0.03, 0.09, 0.  ],
           [0.  , 0.  , 0.01]])
    >>> impute_covariance_matrix([1.0, 1.0, 1.0], [1, 1, 1], None, ti=[1, 2, 4], ar1=0.5)[0]
    array([1.   , 0.5  , 0.125])
    """
    fn = "impute_covariance_matrix"
    v = _variances(vi, None, fn)
    k = v.size
    codes, levels = _codes(cluster, k, "cluster", fn)
    n = levels.size

    def per_cluster(x, name):
        a = np.asarray(x, dtype=float).ravel()
        if a.size not in (1, n):
            raise ValueError(f"{fn}: `{name}` has {a.size} values; give one, or one per "
                             f"cluster ({n}, in sorted label order).")  # fmt: skip
        if not (np.abs(a) <= 1).all():
            j = int(np.flatnonzero(~(np.abs(a) <= 1))[0])
            at = f" for cluster {levels[j]!r}" if a.size == n > 1 else ""
            raise ValueError(f"{fn}: `{name}` = {float(a[j])!r}{at} is not a correlation; give "
                             "values in [-1, 1].")  # fmt: skip
        return np.broadcast_to(a, (n,))

    if r is None and ar1 is None:
        raise ValueError(f"{fn}: give `r` (a correlation), or `ar1` with `ti`, or both.")
    rr = np.zeros(n) if r is None else per_cluster(r, "r")
    if ar1 is not None:
        if ti is None:
            raise ValueError(f"{fn}: `ar1` needs `ti`, the time of each effect.")
        t = _numbers(ti, k, "ti", fn)
        phi = per_cluster(ar1, "ar1")
    elif ti is not None:
        raise ValueError(f"{fn}: `ti` is used only with `ar1`; give `ar1` or drop `ti`.")
    if smooth_vi:
        v = (np.bincount(codes, v) / np.bincount(codes))[codes]
    sg = None if subgroup is None else _codes(subgroup, k, "subgroup", fn)[0]
    sd = np.sqrt(v)
    out: list = [None] * n
    V = None if return_list else np.zeros((k, k))
    bad: list = []
    for cl, idx in _by_size(codes):
        m = idx.shape[1]
        rc = rr[cl][:, None, None]
        if ar1 is None:
            rho = np.where(np.eye(m, dtype=bool), 1.0, rc)
        else:
            ta, tb = _pair(t, idx)
            with np.errstate(invalid="ignore"):
                rho = rc + (1 - rc) * phi[cl][:, None, None] ** np.abs(ta - tb)
            if np.isnan(rho).any():
                c = levels[cl[np.isnan(rho).any(axis=(1, 2))][0]]
                raise ValueError(f"{fn}: a negative `ar1` needs whole-number time gaps; cluster "
                                 f"{c!r} has fractional gaps in `ti`.")  # fmt: skip
        sa, sb = _pair(sd, idx)
        B = rho * (sa * sb)
        B[:, np.arange(m), np.arange(m)] = v[idx]  # exactly vi (not sqrt(vi)^2)
        if sg is not None:
            ga, gb = _pair(sg, idx)
            B = B * (ga == gb)
        if check_pd:
            bad += list(cl[_not_pd(B)])
        if return_list:
            for c, b in zip(cl, B, strict=True):
                out[c] = b
        else:
            V[idx[:, :, None], idx[:, None, :]] = B
    if bad:
        names = ", ".join(repr(levels[c]) for c in sorted(bad))
        warnings.warn(f"{fn}: the covariance blocks of these clusters are not positive "
                      f"definite: {names}; check `r`, `ar1` and `vi` there.", RuntimeWarning,
                      stacklevel=2)  # fmt: skip
    return out if return_list else V


def _rho_matrix(spec, levels: np.ndarray, name: str, fn: str) -> np.ndarray:
    """The ``(L, L)`` correlations among the ``L`` levels of ``obs`` or ``type``: from a
    scalar (1 on the diagonal), a labelled DataFrame, or an array in sorted level order."""
    L = levels.size
    if np.ndim(spec) == 0 and not isinstance(spec, pd.DataFrame):
        M = np.full((L, L), _correlation(spec, f"rho ({name})", fn))
        np.fill_diagonal(M, 1.0)
        return M
    if isinstance(spec, pd.DataFrame):
        if not spec.index.equals(spec.columns):
            raise ValueError(f"{fn}: the `rho` DataFrame for `{name}` needs the same labels, "
                             "in the same order, on its rows and columns.")  # fmt: skip
        pos = spec.index.get_indexer(pd.Index(levels, dtype=object))
        if (pos < 0).any():
            lost = [lv for lv, p in zip(levels, pos, strict=True) if p < 0]
            raise ValueError(f"{fn}: `{name}` values {lost!r} have no row/column in the `rho` "
                             "matrix; add them.")  # fmt: skip
        M = spec.to_numpy(dtype=float)[np.ix_(pos, pos)]
    else:
        M = np.asarray(spec, dtype=float)
        if M.shape != (L, L):
            raise ValueError(f"{fn}: the `rho` matrix for `{name}` must be ({L}, {L}), one row "
                             f"per level in sorted order ({list(levels)!r}), or a labelled "
                             f"DataFrame; got shape {M.shape}.")  # fmt: skip
    if not (np.abs(M) <= 1).all():
        i, j = np.argwhere(~(np.abs(M) <= 1))[0]
        raise ValueError(f"{fn}: `rho` for `{name}` has {float(M[i, j])!r} at ({levels[i]!r}, "
                         f"{levels[j]!r}); correlations must lie in [-1, 1].")  # fmt: skip
    if not np.array_equal(M, M.T):
        raise ValueError(f"{fn}: the `rho` matrix for `{name}` is not symmetric; give "
                         "rho[a, b] == rho[b, a].")  # fmt: skip
    return M


def vcalc(vi, cluster, *, subgroup=None, obs=None, type=None, time1=None, time2=None,
          grp1=None, grp2=None, w1=None, w2=None, rho=None, phi=None, rvars=None,
          checkpd=True, nearpd=False):  # fmt: skip
    """Construct ``V`` from what the effects of one cluster share (metafor's ``vcalc``).

    Within a cluster (with ``subgroup``: a cluster-subgroup pair) ``V_ij = R_ij
    sqrt(v_i v_j)``; ``R_ij`` is a construct/measure correlation times a group/time
    correlation. The first is 1 for the same ``obs`` of the same ``type``, ``rho`` (or
    ``rho[obs_i, obs_j]``) for different ``obs`` of one type, and the between-construct
    ``rho`` for different ``type``. The second treats each effect as the contrast of group
    ``grp1`` at ``time1`` (weight ``w1``, e.g. its size) with ``grp2`` at ``time2``: two
    measurements covary with weight ``1 / sqrt(w_a w_b)`` if they are of the same group,
    scaled by ``phi^|t_a - t_b|``, and the correlation of two contrasts follows (Gleser &
    Olkin 2009). Two contrasts against one shared control of equal size correlate 0.5.

    Parameters
    ----------
    vi : float or array_like ``(k,)``
        Sampling variances (one value: the same for all).
    cluster : array_like ``(k,)``
        Cluster labels; effects of different clusters are independent.
    subgroup : array_like ``(k,)``, optional
        Independent subgroups within a cluster.
    obs, type : array_like ``(k,)``, optional
        Measures of one construct, and constructs. Either needs ``rho``.
    time1, time2 : array_like ``(k,)``, optional
        Time of the first and second condition (``time2`` defaults to ``time1``; it needs
        ``grp2``). Either needs ``phi``.
    grp1, grp2 : array_like ``(k,)``, optional
        The groups each effect contrasts. ``grp1`` alone: every effect of a cluster is
        contrasted with one shared group (weight ``w1``).
    w1, w2 : array_like ``(k,)``, optional
        Group sizes or inverse-variance weights (default equal); ``w2`` needs ``grp2``.
    rho : float, matrix, or pair
        With ``obs`` or ``type`` alone: a correlation, or a matrix over their levels (a
        labelled DataFrame, or an array in sorted level order). With both: ``(within,
        between)``, each a correlation or such a matrix.
    phi : float
        Autocorrelation per unit of time, in [-1, 1].
    rvars : array_like ``(k, m)``, optional
        Instead of all the above: row ``j`` of a cluster's rows holds the lower triangle of
        its correlation (or covariance, with ``vi = 1``) matrix; ``m`` is the largest
        cluster size.
    checkpd : bool
        Raise ``ValueError`` naming the clusters whose correlation block is not positive
        definite (an eigenvalue ``<= m eps lambda_max``; metafor warns, at ``<= eps``).
    nearpd : bool
        metafor's repair by ``Matrix::nearPD``: not implemented (``NotImplementedError``).

    Returns
    -------
    numpy.ndarray ``(k, k)`` in the input order of the effects.

    Notes
    -----
    Differences from metafor 3.8, all on inputs metafor mishandles: matrix ``rho`` is
    looked up by label (metafor indexes by position when ``obs`` is numeric); with ``grp1``
    alone the shared group is a group of its own (metafor labels it ``2``, which collides
    with a ``grp1`` label 2); ``rho`` without ``obs``/``type``, ``phi`` without a time, or
    ``rvars`` with other arguments are errors rather than ignored.

    References
    ----------
    Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor package. *Journal
    of Statistical Software*, 36(3), 1-48. See also metafor's ``vcalc`` documentation
    (https://wviechtb.github.io/metafor/reference/vcalc.html).
    Gleser, L. J., & Olkin, I. (2009). Stochastically dependent effect sizes. In H. Cooper,
    L. V. Hedges, & J. C. Valentine (Eds.), *The handbook of research synthesis and
    meta-analysis* (2nd ed., pp. 357-376). Russell Sage Foundation.

    Examples
    --------
    Two treatments against one control group of equal size, and one independent study:

    >>> V = vcalc([0.1, 0.1, 0.2], [1, 1, 2], grp1=["A", "B", "A"], grp2=["C", "C", "C"])
    >>> V
    array([[0.1 , 0.05, 0.  ],
           [0.05, 0.1 , 0.  ],
           [0.  , 0.  , 0.2 ]])
    >>> vcalc([1.0, 1.0, 1.0], [1, 1, 1], time1=[0, 1, 3], phi=0.5)[0]
    array([1.   , 0.5  , 0.125])
    """
    fn = "vcalc"
    if nearpd:
        raise NotImplementedError(f"{fn}: `nearpd=True` (metafor's Matrix::nearPD repair of "
                                  "blocks that are not positive definite) is not implemented; "
                                  "revise `rho`/`phi`, or pass checkpd=False and repair V "
                                  "yourself.")  # fmt: skip
    k = np.asarray(cluster, dtype=object).size if np.ndim(vi) == 0 else np.size(vi)
    v = _variances(vi, k, fn)
    codes, levels = _codes(cluster, k, "cluster", fn)
    if subgroup is not None:
        sg, sg_levels = _codes(subgroup, k, "subgroup", fn)
        codes, pairs = pd.factorize(codes * sg_levels.size + sg, sort=True)
        levels = (pd.Series(levels[pairs // sg_levels.size]).astype(str) + "/"
                  + pd.Series(sg_levels[pairs % sg_levels.size]).astype(str)).to_numpy(object)  # fmt: skip
    given = {a: x is not None for a, x in (("obs", obs), ("type", type), ("time1", time1),
             ("time2", time2), ("grp1", grp1), ("grp2", grp2), ("w1", w1), ("w2", w2),
             ("rho", rho), ("phi", phi))}  # fmt: skip
    if rvars is not None:
        if any(given.values()):
            names = ", ".join(f"`{a}`" for a, g in given.items() if g)
            raise ValueError(f"{fn}: `rvars` gives the correlations itself; drop {names}.")
        return _from_rvars(v, codes, levels, rvars, checkpd, fn)
    for later, before in (("grp2", "grp1"), ("time2", "time1"), ("time2", "grp2"),
                          ("w2", "w1"), ("w2", "grp2")):  # fmt: skip
        if given[later] and not given[before]:
            raise ValueError(f"{fn}: `{later}` needs `{before}`; give both.")
    if (given["obs"] or given["type"]) != given["rho"]:
        raise ValueError(f"{fn}: `rho` goes with `obs` and/or `type`: " + ("give `obs` or "
                         "`type`, or drop `rho`." if given["rho"] else "give `rho`, the "
                         "correlation of their sampling errors."))  # fmt: skip
    if given["time1"] != given["phi"]:
        raise ValueError(f"{fn}: `phi` goes with `time1`: " + ("give `phi`, the "
                         "autocorrelation per unit of time." if given["time1"] else
                         "give `time1`, or drop `phi`."))  # fmt: skip
    ph = 1.0 if phi is None else _correlation(phi, "phi", fn)
    o, o_lv = _codes(obs, k, "obs", fn) if given["obs"] else (np.zeros(k, np.intp), np.ones(1))
    ty, t_lv = _codes(type, k, "type", fn) if given["type"] else (np.zeros(k, np.intp), np.ones(1))  # fmt: skip
    if given["obs"] and given["type"]:
        pair = isinstance(rho, list | tuple) or (isinstance(rho, np.ndarray) and rho.ndim == 1)
        if not pair or len(rho) != 2:
            raise ValueError(f"{fn}: with `obs` and `type`, `rho` must be a pair (within, "
                             f"between construct), each a correlation or a matrix; got {rho!r}.")  # fmt: skip
        within, between = rho
    else:
        within, between = (rho, 0.0) if given["obs"] else (0.0, 0.0 if rho is None else rho)
    Mo = _rho_matrix(within, o_lv, "obs", fn)
    Mt = _rho_matrix(between, t_lv, "type", fn)
    t1 = _numbers(time1, k, "time1", fn) if given["time1"] else np.ones(k)
    t2 = _numbers(time2, k, "time2", fn) if given["time2"] else t1
    a1 = 1 / (_numbers(w1, k, "w1", fn, positive=True) if given["w1"] else np.ones(k))
    a2 = 1 / _numbers(w2, k, "w2", fn, positive=True) if given["w2"] else a1
    if given["grp1"]:
        g1 = _codes(grp1, k, "grp1", fn)[0]
        g2 = np.full(k, -1)  # grp1 alone: one shared group, a label of its own
        if given["grp2"]:
            _codes(grp2, k, "grp2", fn)
            both = np.concatenate(
                [np.asarray(grp1, object).ravel(), np.asarray(grp2, object).ravel()]
            )
            g = pd.factorize(both)[0]  # codes over both columns, so that grp1 meets grp2
            g1, g2 = g[:k], g[k:]
    else:
        g1, g2 = np.zeros(k, np.intp), np.ones(k, np.intp)

    def shared(ga, gb, ta, tb):
        """Correlation of two measurements: same group, ``phi^|ta - tb|``; else 0."""
        with np.errstate(invalid="ignore"):
            return np.where(ga == gb, np.where(ta == tb, 1.0, ph ** np.abs(ta - tb)), 0.0)

    s2 = a1 + a2 - 2 * shared(g1, g2, t1, t2) * np.sqrt(a1 * a2)  # variance of each contrast
    if np.isnan(s2).any():
        j = int(np.flatnonzero(np.isnan(s2))[0])
        raise ValueError(f"{fn}: a negative `phi` needs whole-number time gaps; effect {j} has "
                         f"time1 = {t1[j]!r}, time2 = {t2[j]!r}.")  # fmt: skip
    if not (s2 > 0).all():
        j = int(np.flatnonzero(~(s2 > 0))[0])
        raise ValueError(f"{fn}: effect {j} contrasts a group with itself at the same time "
                         f"(grp1 = grp2, time1 = time2 = {t1[j]!r}); its contrast has no "
                         "sampling variance. Fix its `grp2` or `time2`.")  # fmt: skip
    s = np.sqrt(s2)
    sd = np.sqrt(v)
    V = np.zeros((k, k))
    bad: list = []
    for cl, idx in _by_size(codes):
        (oa, ob), (ya, yb) = _pair(o, idx), _pair(ty, idx)
        C = np.where(ya == yb, np.where(oa == ob, 1.0, Mo[oa, ob]), Mt[ya, yb])
        (g1a, g1b), (g2a, g2b) = _pair(g1, idx), _pair(g2, idx)
        (t1a, t1b), (t2a, t2b) = _pair(t1, idx), _pair(t2, idx)
        (a1a, a1b), (a2a, a2b) = _pair(a1, idx), _pair(a2, idx)
        G = (shared(g1a, g1b, t1a, t1b) * np.sqrt(a1a * a1b)
             - shared(g1a, g2b, t1a, t2b) * np.sqrt(a1a * a2b)
             - shared(g2a, g1b, t2a, t1b) * np.sqrt(a2a * a1b)
             + shared(g2a, g2b, t2a, t2b) * np.sqrt(a2a * a2b))  # fmt: skip
        sa, sb = _pair(s, idx)
        R = C * G / (sa * sb)
        R = np.tril(R, -1) + np.swapaxes(np.tril(R, -1), 1, 2)  # the lower triangle, mirrored
        R[:, np.arange(R.shape[1]), np.arange(R.shape[1])] = 1.0
        if np.isnan(R).any():
            c = levels[cl[np.isnan(R).any(axis=(1, 2))][0]]
            raise ValueError(f"{fn}: a negative `phi` needs whole-number time gaps; cluster "
                             f"{c!r} has fractional gaps in `time1`/`time2`.")  # fmt: skip
        if checkpd:
            bad += list(cl[_not_pd(R)])
        V[idx[:, :, None], idx[:, None, :]] = _scale(R, sd, v, idx)
    _raise_not_pd(bad, levels, fn)
    return V


def _from_rvars(v, codes, levels, rvars, checkpd, fn) -> np.ndarray:
    """V from one row of a lower-triangular correlation matrix per effect (``rvars``)."""
    k = v.size
    rv = np.asarray(rvars, dtype=float)
    rv = rv[:, None] if rv.ndim == 1 else rv
    if rv.ndim != 2 or rv.shape[0] != k:
        raise ValueError(f"{fn}: `rvars` must be (k, m) = ({k}, largest cluster size); got "
                         f"shape {rv.shape}.")  # fmt: skip
    largest = int(np.bincount(codes).max())
    if rv.shape[1] != largest:
        raise ValueError(f"{fn}: `rvars` has {rv.shape[1]} columns but the largest cluster has "
                         f"{largest} effects; give exactly {largest}.")  # fmt: skip
    sd = np.sqrt(v)
    V = np.zeros((k, k))
    bad: list = []
    for cl, idx in _by_size(codes):
        m = idx.shape[1]
        low = np.tril(rv[idx][:, :, :m])  # (n_c, m, m): row j of a cluster, its first m columns
        R = low + np.swapaxes(np.tril(low, -1), 1, 2)
        if np.isnan(R).any():
            c, i, j = np.argwhere(np.isnan(R))[0]
            raise ValueError(f"{fn}: `rvars` is missing at effect {int(idx[c, max(i, j)])}, "
                             f"column {int(min(i, j))} (cluster {levels[cl[c]]!r}); fill the "
                             "lower triangle of every cluster's matrix.")  # fmt: skip
        if checkpd:
            bad += list(cl[_not_pd(R)])
        V[idx[:, :, None], idx[:, None, :]] = _scale(R, sd, v, idx)
    _raise_not_pd(bad, levels, fn)
    return V


def _scale(R: np.ndarray, sd: np.ndarray, v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Covariance blocks ``sd_i R_ij sd_j``, symmetric to the bit, diagonal ``R_ii v_i``."""
    da, db = _pair(sd, idx)
    B = (da * db) * R
    m = idx.shape[1]
    B[:, np.arange(m), np.arange(m)] = R[:, np.arange(m), np.arange(m)] * v[idx]
    return B


def _raise_not_pd(bad: list, levels: np.ndarray, fn: str) -> None:
    if bad:
        names = ", ".join(repr(levels[c]) for c in sorted(bad))
        raise ValueError(f"{fn}: the correlation matrix of cluster(s) {names} is not positive "
                         "definite (numerically singular or worse), e.g. two effects that "
                         "share obs, type, groups and times correlate 1. Tell them apart with "
                         "`obs`/`type`, lower `rho`/`phi`, or pass checkpd=False to get V "
                         "anyway.")  # fmt: skip
