"""Cluster-robust inference for a fitted random-effects model or meta-regression: CR0, CR1
and CR2 sandwich variances with Satterthwaite degrees of freedom (clubSandwich's
``vcovCR`` / ``coef_test`` / ``conf_int`` for metafor's ``rma.uni``).

Effect sizes that share a cluster (several outcomes of one study, neighbouring regions of
one weather system) are not independent, and the model's standard errors are then too
small. The sandwich estimator keeps the model's estimates and replaces their variance by

    V = M [sum_j X_j' W_j A_j e_j e_j' A_j' W_j X_j] M,   M = (X' W X)^-1,

with the model's weights ``W = diag(1 / (v_i + tau^2))``, the residuals ``e`` of each
cluster ``j`` and an adjustment ``A_j``: the identity (CR0), ``sqrt(J / (J - 1))`` (CR1),
or the bias-reduced linearization of Bell & McCaffrey (2002) as Tipton & Pustejovsky (2015)
and Pustejovsky & Tipton (2018) give it for inverse-variance weights (CR2):
``A_j = R_j' G_j^(-1/2) R_j`` with ``R_j = diag(sqrt(1 / w_i))`` and
``G_j = R_j (I - X_j M X_j' W_j) R_j^-1' ...`` (see :func:`_cr2_adjustments`). Tests of a
coefficient use t with the Satterthwaite degrees of freedom of that variance estimate.

Written here because no Python package has it for meta-analytic models (PyMARE has no
Satterthwaite correction; statsmodels' cluster covariances are CR1 only). The clusters are
handled array-at-a-time: all clusters of one size at once (eigendecompositions stacked).

References
----------
Tipton, E., & Pustejovsky, J. E. (2015). Small-sample adjustments for tests of moderators
and model fit using robust variance estimation in meta-regression. *Journal of
Educational and Behavioral Statistics*, 40(6), 604-634.
Pustejovsky, J. E., & Tipton, E. (2018). Small-sample methods for cluster-robust variance
estimation and hypothesis testing in fixed effects models. *Journal of Business &
Economic Statistics*, 36(4), 672-683.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta.meta_analysis.results import Result, fmt_num, fmt_p

__all__ = ["RobustResult", "WaldResult", "robust"]

TYPES = ("CR0", "CR1", "CR2")
_EIG_TOL = 1e-12  # eigenvalues below this count as zero in G^(-1/2) (clubSandwich's)


@dataclass(frozen=True, eq=False)
class RobustResult(Result):
    """Cluster-robust coefficient table of :func:`robust`: ``beta`` (the model's estimates),
    ``se``, ``tval``, ``df`` (Satterthwaite), ``pval``, ``ci_lb``/``ci_ub`` (t intervals at
    ``level``), ``vcov`` (the robust covariance), ``n_clusters``, ``type``."""

    coef_names: tuple
    beta: np.ndarray
    se: np.ndarray
    tval: np.ndarray
    df: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    vcov: np.ndarray
    n_clusters: int
    type: str
    level: float
    # per cluster, for the degrees of freedom of any contrast: M E_j Theta_j E_j' M and
    # M E_j X_j L (both (J, p, p))
    _gg: np.ndarray | None = None
    _h: np.ndarray | None = None

    _dict_skip = ("_gg", "_h")

    def wald_test(self, constraints=None, null=0.0) -> WaldResult:
        """The HTZ test (Pustejovsky & Tipton 2018's approximate Hotelling T^2, clubSandwich's
        ``Wald_test(..., test = "HTZ")``) of ``C beta = null``.

        ``constraints``: a ``(q, p)`` contrast matrix, or coefficient indices or names to
        test against zero (default: every coefficient but the intercept; the intercept
        alone in a model without moderators).
        """
        C = self._contrasts(constraints)
        q = C.shape[0]
        c0 = np.broadcast_to(np.asarray(null, dtype=float), (q,))
        d = C @ self.beta - c0
        cvc = C @ self.vcov @ C.T
        try:
            Q = float(d @ np.linalg.solve(cvc, d))
        except np.linalg.LinAlgError:
            raise ValueError(
                "wald_test: the contrasts' robust covariance is singular; test fewer or "
                "independent contrasts."
            ) from None
        gg = C @ self._gg @ C.T  # (J, q, q)
        h = C @ self._h  # (J, q, p)
        J = gg.shape[0]
        # P[i, j, a, b] = -sum_u h[a, i, u] h[b, j, u] + [a == b] gg[a, i, j]
        P = -np.einsum("aiu,bju->ijab", h, h)
        P[:, :, np.arange(J), np.arange(J)] += np.transpose(gg, (1, 2, 0))
        omega = np.einsum("ijaa->ij", P)
        on = _inv_sqrt(omega)
        B = np.einsum("si,ijab,jt->stab", on, P, on)
        var = np.einsum("stab,tsab->st", B, B) + np.einsum("ssab,ttab->st", B, B)
        nu = q * (q + 1) / var.sum()
        delta = max((nu - q + 1) / nu, 0.0)
        df2 = nu - q + 1
        F = delta * Q / q
        pval = float(stats.f.sf(F, q, df2)) if df2 > 0 else float("nan")
        return WaldResult(F, delta, q, df2, pval, Q, self.type)

    def _contrasts(self, constraints) -> np.ndarray:
        p = len(self.beta)
        if constraints is None:
            constraints = list(range(1, p)) if p > 1 else [0]
        C = np.asarray(constraints)
        if C.ndim == 2:
            if C.shape[1] != p:
                raise ValueError(
                    f"wald_test: the contrast matrix needs {p} columns; got {C.shape[1]}."
                )
            return C.astype(float)
        idx = []
        for c in np.atleast_1d(C):
            if isinstance(c, str | np.str_):
                if c not in self.coef_names:
                    raise ValueError(f"wald_test: no coefficient {str(c)!r}; there are "
                                     f"{', '.join(self.coef_names)}.")  # fmt: skip
                idx.append(self.coef_names.index(str(c)))
            else:
                if not 0 <= int(c) < p:
                    raise ValueError(f"wald_test: coefficient index {int(c)} is not in 0..{p - 1}.")
                idx.append(int(c))
        return np.eye(p)[idx]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"beta": self.beta, "se": self.se, "tval": self.tval,
                             "df": self.df, "pval": self.pval, "ci_lb": self.ci_lb,
                             "ci_ub": self.ci_ub}, index=list(self.coef_names))  # fmt: skip

    def summary(self) -> str:
        head = (f"Cluster-robust inference ({self.type}, {self.n_clusters} clusters, "
                f"Satterthwaite t, {self.level:g}% intervals)")  # fmt: skip
        rows = [f"{'':12}{'estimate':>10}{'se':>9}{'tval':>9}{'df':>8}{'pval':>9}"
                f"{'ci.lb':>9}{'ci.ub':>9}"]  # fmt: skip
        for i, name in enumerate(self.coef_names):
            rows.append(f"{name[:12]:12}{fmt_num(self.beta[i]):>10}{fmt_num(self.se[i]):>9}"
                        f"{fmt_num(self.tval[i]):>9}{fmt_num(self.df[i], 2):>8}"
                        f"{fmt_p(self.pval[i]):>9}{fmt_num(self.ci_lb[i]):>9}"
                        f"{fmt_num(self.ci_ub[i]):>9}")  # fmt: skip
        return "\n".join([head, *rows])


@dataclass(frozen=True, eq=False)
class WaldResult(Result):
    """The HTZ Wald test of :meth:`RobustResult.wald_test`: ``F`` (``delta * Q / q``),
    ``delta``, ``df_num`` (q), ``df_denom``, ``pval``, ``Q`` (the robust Wald statistic)."""

    F: float
    delta: float
    df_num: int
    df_denom: float
    pval: float
    Q: float
    type: str

    def summary(self) -> str:
        return (f"HTZ test ({self.type}): F({self.df_num}, {fmt_num(self.df_denom, 2)}) = "
                f"{fmt_num(self.F)}, p {fmt_p(self.pval, eq=True)}")  # fmt: skip


def _inv_sqrt(g: np.ndarray) -> np.ndarray:
    """Symmetric inverse square roots of a stack of matrices (pseudo-inverse below tol)."""
    val, vec = np.linalg.eigh(g)
    root = np.where(val > _EIG_TOL, 1.0 / np.sqrt(np.where(val > _EIG_TOL, val, 1.0)), 0.0)
    return (vec * root[..., None, :]) @ np.swapaxes(vec, -1, -2)


def _by_size(codes: np.ndarray):
    """For each cluster size s: the clusters of that size and their rows, ``(J_s, s)``."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for s in np.unique(sizes):  # a handful of distinct sizes; each is one batched step
        which = np.flatnonzero(sizes == s)
        rows = order[starts[which][:, None] + np.arange(s)[None, :]]
        yield which, rows


def robust(fit, cluster, *, type: str = "CR2", level: float | None = None) -> RobustResult:
    """Cluster-robust standard errors, Satterthwaite t tests and intervals for the
    coefficients of a fitted :func:`~spatialmeta.meta_analysis.pool` result (with or
    without moderators), clubSandwich's ``coef_test(fit, vcov = type, cluster = ...)``.

    Parameters
    ----------
    fit : PoolResult
        One fitted meta-analysis (random effects or FE; no user weights).
    cluster : array_like
        One label per study; at least two clusters.
    type : {"CR2", "CR1", "CR0"}
        The small-sample adjustment (CR2: bias-reduced linearization, the recommended one).
    level : float, optional
        Interval level in percent (default: the fit's).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialmeta.meta_analysis import pool
    >>> yi = np.array([0.1, 0.3, 0.25, 0.5, 0.45, 0.2])
    >>> vi = np.array([0.02, 0.03, 0.02, 0.04, 0.03, 0.02])
    >>> res = robust(pool(yi, vi, method="REML"), ["a", "a", "b", "b", "c", "c"])
    >>> res.n_clusters, bool(res.df[0] < 2)
    (3, True)
    """
    if type not in TYPES:
        raise ValueError(f"robust: `type` must be one of {', '.join(TYPES)}; got {type!r}.")
    if np.ndim(fit.yi) != 1:
        raise ValueError(
            f"robust: one meta-analysis at a time; the fit has batch shape {np.shape(fit.yi)[:-1]}."
        )
    if getattr(fit, "user_weights", False):
        raise ValueError("robust: a fit with user weights is not supported; refit without them.")
    y = np.asarray(fit.yi, dtype=float)
    keep = np.isfinite(y)
    y = y[keep]
    k = y.size
    X = np.ones((k, 1)) if fit.X is None else np.asarray(fit.X, dtype=float)[keep]
    if getattr(fit, "Sigma", None) is not None:  # a pool_mv fit: its marginal covariance
        theta = np.asarray(fit.Sigma, dtype=float)
    else:  # pool: the working covariance diag(v + tau^2)
        theta = np.diag(np.asarray(fit.vi, dtype=float)[keep] + float(fit.tau2))
    beta = np.atleast_1d(np.asarray(fit.beta if fit.beta is not None else fit.estimate, float))
    cl = np.asarray(cluster, dtype=object).ravel()
    if cl.size == keep.size and cl.size != k:
        cl = cl[keep]
    if cl.size != k:
        raise ValueError(f"robust: `cluster` has {cl.size} labels for {k} studies.")
    if pd.isna(pd.Series(cl)).any():
        i = int(np.flatnonzero(pd.isna(pd.Series(cl)).to_numpy())[0])
        raise ValueError(f"robust: `cluster` is missing for study {i}; give every study one.")
    codes, uniq = pd.factorize(pd.Series(cl).astype(str))
    J = len(uniq)
    if J < 2:
        raise ValueError(
            f"robust: `cluster` has one cluster ({uniq[0]!r}); cluster-robust variances need "
            "at least two (and work well with many more)."
        )
    p = X.shape[1]
    cross = codes[:, None] != codes[None, :]
    if np.abs(theta[cross]).max(initial=0.0) > 1e-12 * np.abs(np.diag(theta)).max():
        raise ValueError(
            "robust: the model's covariance links effects of different clusters (a random "
            "level above the cluster, or a spatial effect); cluster at the model's outermost "
            "level or above."
        )
    Winv = np.linalg.inv(theta)  # block diagonal by cluster, as theta
    M = np.linalg.inv(X.T @ Winv @ X)
    e = y - X @ beta
    u = np.empty((J, p))  # each cluster's adjusted score X_j' W_j A_j e_j
    GG = np.empty((J, p, p))  # G_j G_j' = M E_j Theta_j E_j' M, for the df
    H = np.empty((J, p, p))  # M E_j X_j L, L = chol(M)
    L = np.linalg.cholesky(M)
    for which, rows in _by_size(codes):  # stacked clusters of one size
        Xj, ej = X[rows], e[rows]  # (n, s, p), (n, s)
        th = theta[rows[:, :, None], rows[:, None, :]]  # (n, s, s) working covariance blocks
        Wj = Winv[rows[:, :, None], rows[:, None, :]]
        XW = np.swapaxes(Xj, 1, 2) @ Wj  # (n, p, s)
        if type == "CR2":
            s = rows.shape[1]
            ih = np.eye(s)[None] - Xj @ M @ XW  # I - X_j M X_j' W_j
            R = np.swapaxes(np.linalg.cholesky(th), 1, 2)  # upper: R' R = Theta_j
            g = R @ ih @ th @ np.swapaxes(R, 1, 2)  # G_j = R IH Theta R'
            A = np.swapaxes(R, 1, 2) @ _inv_sqrt(0.5 * (g + np.swapaxes(g, 1, 2))) @ R
            E = XW @ A  # (n, p, s)
        else:
            E = XW
        u[which] = np.einsum("nps,ns->np", E, ej)
        ME = M @ E  # (n, p, s)
        GG[which] = ME @ th @ np.swapaxes(ME, 1, 2)  # G G' with G = ME chol(Theta)'
        H[which] = ME @ Xj @ L
    if type == "CR1":
        u = u * np.sqrt(J / (J - 1))
        GG = GG * J / (J - 1)
        H = H * np.sqrt(J / (J - 1))
    V = M @ (u.T @ u) @ M
    se = np.sqrt(np.diag(V))
    # Satterthwaite: per coefficient i, P_i = diag(G_rows[:, i]) - H_i' H_i over clusters,
    # df_i = (tr P_i)^2 / ||P_i||_F^2 (clubSandwich's Satterthwaite_df)
    Hi = np.transpose(H, (1, 2, 0))  # (p, p, J): coefficient, column of L, cluster
    P = -np.einsum("iaj,iak->ijk", Hi, Hi)
    P[:, np.arange(J), np.arange(J)] += np.einsum("jii->ij", GG)
    df = np.einsum("ijj->i", P) ** 2 / (P**2).sum(axis=(1, 2))
    tval = beta / se
    pval = 2 * stats.t.sf(np.abs(tval), df)
    lv = float(fit.level if level is None else level)
    crit = stats.t.isf((1 - lv / 100) / 2, df)
    names = tuple(getattr(fit, "coef_names", None) or [f"b{i}" for i in range(p)])
    return RobustResult(names, beta, se, tval, df, pval, beta - crit * se, beta + crit * se,
                        V, J, type, lv, GG, H)  # fmt: skip
