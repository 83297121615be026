"""Random-effect structures of multilevel models: what each adds to the marginal covariance.

:func:`~spatialmeta.meta_analysis.multilevel.pool_mv` fits ``y ~ N(X beta, V + sum_c S_c)``
with one ``S_c`` per random component. Each component is a small object with three hooks:
its parameters' starting values and bounds, and ``cov(theta) -> (S, [dS/dtheta_q])``, the
``k x k`` contribution and its derivatives (the analytic REML/ML gradient needs them). The
components, as metafor's ``rma.mv`` names them:

* nested random intercepts (``~ 1 | study/esid``): ``sigma^2 Z Z'`` (:class:`_Nested`);
* correlated effects within clusters (``~ inner | outer``, ``struct = ...``):
  :class:`Structured`, with ``G`` over the inner levels ``CS`` (compound symmetry: one
  variance, one correlation), ``HCS`` (a variance per level, one correlation), ``UN``
  (unstructured: a variance per level, a correlation per pair), ``AR`` (AR(1) over the
  ordered levels: ``tau^2 rho^|i - j|``) or ``DIAG`` (a variance per level, independent);
* a spatially correlated effect (``~ x + y | const``, ``struct = "SP..."``):
  :class:`Spatial`, a variance times a correlation of distance with its range estimated;
* a known correlation (metafor's ``R`` argument): :class:`KnownCorrelation`, a variance
  times a given correlation matrix over the levels of a factor (for example a
  correlation derived from a region graph).

Variances are on their natural scale (bounded at 0, as metafor's estimates can reach 0);
correlations are bounded inside (-1, 1); a spatial range is optimized on the log scale.

References
----------
Viechtbauer, W. (2010). Conducting meta-analyses in R with the metafor package. Journal
of Statistical Software 36(3). doi:10.18637/jss.v036.i03 (``rma.mv``'s structures).

Berkey, C. S., Hoaglin, D. C., Antczak-Bouckoms, A., Mosteller, F., & Colditz, G. A.
(1998). Meta-analysis of multiple outcomes by regression with random effects. Statistics
in Medicine 17(22), 2537-2550.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Spatial", "Structured", "KnownCorrelation", "SPATIAL", "STRUCTS"]

# spatial correlation functions of distance d and range rho (metafor's struct = "SP...")
SPATIAL = ("SPEXP", "SPGAU", "SPLIN", "SPRAT", "SPSPH")
STRUCTS = ("CS", "HCS", "UN", "AR", "DIAG")
RHO_BOUND = 1 - 1e-6  # correlations are kept inside (-1, 1)


def _correlation(structure: str, d: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """``(R, dR/drho)`` of a spatial structure at distances ``d``."""
    u = d / rho
    if structure == "SPEXP":
        R = np.exp(-u)
        return R, R * d / rho**2
    if structure == "SPGAU":
        R = np.exp(-(u**2))
        return R, R * 2 * d**2 / rho**3
    if structure == "SPLIN":
        inside = d < rho
        return np.where(inside, 1 - u, 0.0), np.where(inside, d / rho**2, 0.0)
    if structure == "SPRAT":
        R = 1 / (1 + u**2)
        return R, 2 * d**2 / rho**3 * R**2
    inside = d < rho  # SPSPH
    R = np.where(inside, 1 - 1.5 * u + 0.5 * u**3, 0.0)
    return R, np.where(inside, 1.5 * d / rho**2 - 1.5 * d**3 / rho**4, 0.0)


def _geodesic_km(lon, lat) -> np.ndarray:
    """Distances (km) between every pair of points on the WGS84 ellipsoid by Andoyer and
    Lambert's formula (Meeus 1991, Astronomical Algorithms, ch. 11), the one metafor's
    ``dist = "gcd"`` uses through ``sp::spDists(longlat = TRUE)``: the same numbers to the
    last digit (a test holds it), so that fitted ranges compare with metafor's. Within
    about 50 m of the exact geodesic for points not nearly antipodal; at an antipode (where
    the formula divides by zero) the spherical half-circumference."""
    a, f = 6378.137, 1 / 298.257223563  # WGS84 equatorial radius (km) and flattening
    lon, lat = np.radians(np.asarray(lon, float)), np.radians(np.asarray(lat, float))
    F = (lat[:, None] + lat[None, :]) / 2
    G = (lat[:, None] - lat[None, :]) / 2
    L = (lon[:, None] - lon[None, :]) / 2
    sG, cG = np.sin(G) ** 2, np.cos(G) ** 2
    sF, cF = np.sin(F) ** 2, np.cos(F) ** 2
    sL, cL = np.sin(L) ** 2, np.cos(L) ** 2
    S = sG * cL + cF * sL
    C = cG * cL + sF * sL
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.arctan(np.sqrt(S / C))
        R = np.sqrt(S * C) / w
        H1, H2 = (3 * R - 1) / (2 * C), (3 * R + 1) / (2 * S)
        d = 2 * w * a * (1 + f * H1 * sF * cG - f * H2 * cF * sG)
    d = np.where(S == 0, 0.0, d)
    return np.where(np.isfinite(d), d, np.pi * a)


def _codes(labels, k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of ``labels`` (sorted levels, as R's factors) and the levels."""
    arr = pd.Series(np.asarray(labels, dtype=object).ravel())
    if len(arr) != k:
        raise ValueError(f"pool_mv: {what} has {len(arr)} labels for {k} effects.")
    if arr.isna().any():
        j = int(np.flatnonzero(arr.isna().to_numpy())[0])
        raise ValueError(f"pool_mv: {what} has no label for effect {j}.")
    codes, levels = pd.factorize(arr, sort=True)
    return codes, np.asarray(levels)


class _Component:
    """One random component bound to ``k`` effects: ``n_par`` parameters, their names,
    starting values, bounds, and ``cov(theta) -> (S, [dS/dtheta])``."""

    names: tuple
    n_var: int  # how many of the leading parameters are variances (bounded at 0)

    @property
    def n_par(self) -> int:
        return len(self.names)

    def start(self, total: float) -> np.ndarray:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def starts(self, total: float) -> list[np.ndarray]:
        """Starting points to try (several where the likelihood has more than one mode)."""
        return [self.start(total)]

    def bounds(self) -> list:
        return [(0.0, None)] * self.n_var + [(-RHO_BOUND, RHO_BOUND)] * (self.n_par - self.n_var)

    def cov(self, theta: np.ndarray):  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def cov_batch(self, T: np.ndarray):  # pragma: no cover - every subclass has one
        """``cov`` for a batch of parameter rows ``T`` (B, n_par): ``S`` (B, k, k) and the
        derivatives, each (B, k, k) or a (k, k) shared by the batch (the batched fits of
        :mod:`~spatialmeta.meta_analysis.multilevel_batch`)."""
        raise NotImplementedError


class _Scaled(_Component):
    """``sigma^2 A`` for a fixed ``k x k`` matrix ``A``."""

    def __init__(self, name: str, A: np.ndarray):
        self.name, self.A = name, A
        self.names, self.n_var = (f"sigma2 ({name})",), 1

    def start(self, total):
        return np.array([total])

    def cov(self, theta):
        return theta[0] * self.A, [self.A]

    def cov_batch(self, T):
        return T[:, 0, None, None] * self.A, [self.A]


class _Nested(_Scaled):
    """``sigma^2 Z Z'`` for the clusters ``codes`` (named ``labels``) of one nested level."""

    def __init__(self, name: str, codes: np.ndarray, labels=None):
        super().__init__(name, (codes[:, None] == codes[None, :]).astype(float))
        self.codes, self.labels = codes, labels


@dataclass(frozen=True)
class Spatial:
    """A spatially correlated random effect: variance ``tau^2`` times a correlation of the
    distance between effects (``structure``, one of SPEXP, SPGAU, SPLIN, SPRAT, SPSPH, as
    metafor's), with range ``rho`` estimated. ``coords`` are ``(k, 2)``: planar x, y
    (Euclidean distances, metafor's default) or, with ``distance="gcd"``, longitude and
    latitude in degrees (great-circle distances in km on the WGS84 ellipsoid, as metafor's
    ``dist = "gcd"``: :func:`_geodesic_km`)."""

    coords: np.ndarray
    structure: str = "SPEXP"
    distance: str = "euclidean"

    def distances(self, k: int) -> np.ndarray:
        c = np.asarray(self.coords, dtype=float)
        if c.shape != (k, 2) or not np.isfinite(c).all():
            raise ValueError(f"pool_mv: `Spatial.coords` must be finite (k, 2) = ({k}, 2); got "
                             f"{c.shape}.")  # fmt: skip
        if self.structure not in SPATIAL:
            raise ValueError(f"pool_mv: spatial structure {self.structure!r} is not one of "
                             f"{', '.join(SPATIAL)}.")  # fmt: skip
        if self.distance == "euclidean":
            diff = c[:, None, :] - c[None, :, :]
            return np.sqrt((diff**2).sum(-1))
        if self.distance == "gcd":
            return _geodesic_km(c[:, 0], c[:, 1])
        raise ValueError(f"pool_mv: `Spatial.distance` must be 'euclidean' or 'gcd'; got "
                         f"{self.distance!r}.")  # fmt: skip

    def bind(self, k: int) -> _Component:
        return _SpatialComponent(self, self.distances(k))


class _SpatialComponent(_Component):
    """``tau^2 R(d; rho)``; parameters ``tau^2`` and ``log rho``. The range stays below ten
    times the data's extent: far past the extent the correlation is ``1 - d / rho``, a
    linear variogram of which only the slope ``tau^2 / rho`` is identified, and the
    likelihood climbs a ridge on which both grow without bound (metafor's unbounded fits
    report ranges of 1e9 there, with the same curve)."""

    def __init__(self, spec: Spatial, dist: np.ndarray):
        self.spec, self.dist = spec, dist
        k = dist.shape[0]
        self.scale = float(np.median(dist[np.triu_indices(k, 1)])) if k > 1 else 1.0
        self.extent = float(dist.max())
        self.names, self.n_var = ("tau2", "log rho"), 1

    def start(self, total):
        return np.array([total, math.log(self.scale / 2)])

    def starts(self, total):
        """The range's likelihood can have several modes on few regions (a short range
        that acts as a nugget, a middle one, the ridge toward a linear variogram at the
        bound); start from ranges across the data's distances:
        1/50, 1/10, 1/2, 2 and 10 times the median distance."""
        return [np.array([total, math.log(self.scale * f)]) for f in (0.5, 0.02, 0.1, 2.0, 10.0)]

    def bounds(self):
        return [(0.0, None), (math.log(self.scale * 1e-4), math.log(10 * self.extent))]

    def cov(self, theta):
        tau2, rho = theta[0], math.exp(theta[1])
        R, dR = _correlation(self.spec.structure, self.dist, rho)
        return tau2 * R, [R, tau2 * dR * rho]  # d/d log rho = rho d/d rho

    def cov_batch(self, T):
        tau2, rho = T[:, 0, None, None], np.exp(T[:, 1])[:, None, None]
        R, dR = _correlation(self.spec.structure, self.dist[None], rho)
        return tau2 * R, [R, tau2 * dR * rho]


@dataclass(frozen=True)
class Structured:
    """Random effects correlated within the clusters of ``outer`` across the levels of
    ``inner`` (metafor's ``random = ~ inner | outer, struct = structure``): two effects of
    the same outer cluster with inner levels ``a`` and ``b`` share covariance ``G[a, b]``;
    effects of different clusters none. ``structure``: ``"CS"``, ``"HCS"``, ``"UN"``,
    ``"AR"`` or ``"DIAG"`` (see the module docstring). The inner levels are sorted as R
    sorts a factor's levels; ``AR`` takes their order as the time order.

    Examples
    --------
    >>> s = Structured(inner=["PD", "AL", "PD", "AL"], outer=[1, 1, 2, 2], structure="UN")
    >>> c = s.bind(4)
    >>> c.names
    ('tau2 (AL)', 'tau2 (PD)', 'rho (PD, AL)')
    >>> S, _ = c.cov(np.array([0.04, 0.01, 0.5]))
    >>> S.round(3).tolist()[0]
    [0.01, 0.01, 0.0, 0.0]
    """

    inner: object
    outer: object
    structure: str = "CS"

    def bind(self, k: int) -> _Component:
        if self.structure not in STRUCTS:
            raise ValueError(f"pool_mv: `Structured.structure` must be one of "
                             f"{', '.join(STRUCTS)}; got {self.structure!r}.")  # fmt: skip
        ci, levels = _codes(self.inner, k, "`Structured.inner`")
        co, _ = _codes(self.outer, k, "`Structured.outer`")
        return _StructuredComponent(self.structure, ci, levels, co)


class _StructuredComponent(_Component):
    def __init__(self, structure: str, ci: np.ndarray, levels: np.ndarray, co: np.ndarray):
        self.structure, self.ci, self.levels = structure, ci, [str(v) for v in levels]
        m = len(levels)
        if m < 2 and structure != "DIAG":
            raise ValueError(f"pool_mv: `Structured.inner` has one level ({self.levels[0]!r}); "
                             f"a {structure} structure needs two or more (with one, give the "
                             "outer clusters as a nested level in `random`).")  # fmt: skip
        same = co[:, None] == co[None, :]
        if not (same & (ci[:, None] != ci[None, :])).any() and structure != "DIAG":
            raise ValueError(f"pool_mv: no outer cluster of `Structured.outer` holds two inner "
                             f"levels, so the {structure} correlation cannot be identified; "
                             "use structure='DIAG' or nested levels.")  # fmt: skip
        self.mask = same.astype(float)
        self.m = m
        tau = [f"tau2 ({v})" for v in self.levels]
        self.pairs = [(a, b) for b in range(m) for a in range(b + 1, m)]  # R's lower.tri order
        if structure in ("CS", "AR"):
            self.names, self.n_var = ("tau2", "rho"), 1
        elif structure == "HCS":
            self.names, self.n_var = (*tau, "rho"), m
        elif structure == "UN":
            rho = [f"rho ({self.levels[a]}, {self.levels[b]})" for a, b in self.pairs]
            self.names, self.n_var = (*tau, *rho), m
        else:  # DIAG
            self.names, self.n_var = tuple(tau), m
        self.lag = np.abs(np.arange(m)[:, None] - np.arange(m)[None, :])  # AR's |i - j|

    def start(self, total):
        return np.concatenate([np.full(self.n_var, total), np.zeros(self.n_par - self.n_var)])

    def _G(self, T):
        """``G`` (N, m, m) for parameter rows ``T`` (N, n_par) and its derivatives in each
        parameter (each (N, m, m), or (m, m) where it is the same for every row)."""
        m, s, N = self.m, self.structure, T.shape[0]
        eye, ones = np.eye(m), np.ones((m, m))
        if s in ("CS", "AR"):
            tau2, rho = T[:, 0, None, None], T[:, 1, None, None]
            if s == "CS":
                C = (1 - rho) * eye + rho * ones
                return tau2 * C, [C, tau2 * (ones - eye)]
            lag = self.lag.astype(float)
            C = rho**lag
            dC = np.where(lag > 0, lag * rho ** np.maximum(lag - 1, 0), 0.0)
            return tau2 * C, [C, tau2 * dC]
        tau2 = T[:, :m]
        if s == "DIAG":
            return tau2[:, :, None] * eye, [np.diag(eye[a]) for a in range(m)]
        if s == "HCS":
            C = (1 - T[:, m, None, None]) * eye + T[:, m, None, None] * ones
        else:
            C = np.broadcast_to(eye, (N, m, m)).copy()
            for q, (a, b) in enumerate(self.pairs):
                C[:, a, b] = C[:, b, a] = T[:, m + q]
        sd = np.sqrt(np.maximum(tau2, 0.0))
        outer = sd[:, :, None] * sd[:, None, :]
        G = outer * C
        # d G_ab / d tau2_a = sd_b C_ab / (2 sd_a) off the diagonal, 1 on it
        inv = 1 / (2 * np.maximum(sd, 1e-8))  # the sqrt kink at 0: a finite slope there
        dG = []
        for a in range(m):  # levels of the inner factor (a handful), not rows
            d = np.zeros((N, m, m))
            d[:, a, :] = sd * C[:, a, :] * inv[:, a, None]
            d[:, :, a] = d[:, a, :]
            d[:, a, a] = 1.0
            dG.append(d)
        if s == "HCS":
            dG.append(outer * (ones - eye))
        else:
            for a, b in self.pairs:
                d = np.zeros((N, m, m))
                d[:, a, b] = d[:, b, a] = sd[:, a] * sd[:, b]
                dG.append(d)
        return G, dG

    def cov_batch(self, T):
        G, dG = self._G(np.asarray(T, dtype=float))
        ij = (self.ci[:, None], self.ci[None, :])
        expand = [d[..., ij[0], ij[1]] * self.mask for d in dG]
        return G[:, ij[0], ij[1]] * self.mask, expand

    def cov(self, theta):
        S, dS = self.cov_batch(np.asarray(theta, dtype=float)[None])
        return S[0], [d[0] if d.ndim == 3 else d for d in dS]


@dataclass(frozen=True)
class KnownCorrelation:
    """A random effect over the levels of ``labels`` with a known correlation matrix
    ``R`` between levels (metafor's ``random = ~ 1 | level, R = list(level = R)``):
    covariance ``sigma^2 R[a, b]`` between effects of levels ``a`` and ``b``, the variance
    estimated. ``levels`` names the rows of ``R`` (default: the sorted labels). A region
    graph's CAR or diffusion correlation fits here: ``KnownCorrelation(region_of_effect,
    *graph.correlation("car", rho=0.9))`` (``spatialmeta.regions.RegionGraph.correlation``
    returns the matrix and the region ids naming its rows).

    Examples
    --------
    >>> R = np.array([[1.0, 0.5], [0.5, 1.0]])
    >>> c = KnownCorrelation(["a", "b", "a"], R).bind(3)
    >>> c.cov(np.array([2.0]))[0].tolist()
    [[2.0, 1.0, 2.0], [1.0, 2.0, 1.0], [2.0, 1.0, 2.0]]
    """

    labels: object
    R: np.ndarray
    levels: object = None

    def bind(self, k: int) -> _Component:
        codes, found = _codes(self.labels, k, "`KnownCorrelation.labels`")
        R = np.asarray(self.R, dtype=float)
        names = [str(v) for v in (found if self.levels is None else self.levels)]
        if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] != len(names):
            raise ValueError(f"pool_mv: `KnownCorrelation.R` must be square over the "
                             f"{len(names)} levels; got shape {R.shape}.")  # fmt: skip
        if not np.allclose(R, R.T) or not np.allclose(np.diag(R), 1.0):
            raise ValueError("pool_mv: `KnownCorrelation.R` must be a symmetric correlation "
                             "matrix (ones on the diagonal).")  # fmt: skip
        pos = {n: i for i, n in enumerate(names)}
        missing = [str(v) for v in found if str(v) not in pos]
        if missing:
            raise ValueError(f"pool_mv: level {missing[0]!r} of `KnownCorrelation.labels` is "
                             "not among `levels` (the rows of R).")  # fmt: skip
        idx = np.array([pos[str(v)] for v in found])[codes]
        return _Scaled("known correlation", R[idx[:, None], idx[None, :]])
