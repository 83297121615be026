"""References a climate statistician would use, under exactly the learner's information.

Every reference forecasts the held-out regions at the test origins from what is known
before each origin (:meth:`RegionSplit.known`: a held-out region from ``test_start -
support`` on, including the test steps already seen; training regions over their record
before ``test_start``; buffer regions never), array-at-a-time over regions, origins and
season slots:

* ``expanding_climatology``: the region's own seasonal-cycle mean (calendar month for
  monthly records, hour of day for hourly ones, none for annual) over everything known
  before the origin;
* ``neighbour_climatology``: the graph neighbours' seasonal climatology over their known
  record, shifted (or scaled, for positive ratio-like variables) to the region's known
  values;
* ``eb_climatology``: the region's own seasonal means shrunk toward that neighbour
  climatology with weight ``n / (n + k)``, ``n`` the known values of the season slot and
  ``k`` fitted on training regions only;
* ``anomaly_persistence``: the eb climatology plus the last known anomaly times a lag
  coefficient fitted on training regions.

The fits on training regions replay the protocol on them (:func:`pseudo_protocol`): a
support window of the same length ending ``span`` steps before ``test_start``, the
training regions' neighbour climatologies from their records before that point, and the
origins of the span — so no value a held-out region's forecast could not see is used.

A region without neighbours (or whose neighbours are all unknown) falls back to the
mean climatology of the training regions; :class:`SeasonalHistory` counts them.

References
----------
Wilks, D. S. (2011). Statistical Methods in the Atmospheric Sciences (3rd ed.), ch. 8
(climatology and persistence as reference forecasts). Academic Press.

Efron, B., & Morris, C. (1975). Data analysis using Stein's estimator and its
generalizations. JASA 70(350), 311-319. doi:10.1080/01621459.1975.10479864
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from spatialmeta.learn.baselines import climatology_period
from spatialmeta.learn.features import test_origins
from spatialmeta.learn.predictions import Forecast
from spatialmeta.tasks.region import RegionSplit, RegionTaskSet

__all__ = [
    "SeasonalHistory",
    "seasonal_history",
    "pseudo_protocol",
    "adjust_mode",
    "fit_references",
    "ReferenceFit",
    "references",
    "REFERENCES",
    "K_GRID",
    "heldout_notes",
    "heldout_masks",
]

REFERENCES = (
    "expanding_climatology",
    "neighbour_climatology",
    "eb_climatology",
    "anomaly_persistence",
)
K_GRID = np.array([0.0, 0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 1e6])
_TEMPERATURE_UNITS = ("k", "kelvin", "degc", "deg_c", "celsius", "°c", "c", "degf", "°f")
MAX_LEAD_EXTRA = 12  # anomaly leads fitted beyond the horizon, for gaps before an origin


def adjust_mode(series: np.ndarray, units: str = "") -> str:
    """``"shift"`` or ``"scale"``: how a neighbour climatology is moved to a region's level.

    Temperature-like variables (a temperature unit, or any value at or below zero) are
    shifted by the region's mean offset; strictly positive ratio-like variables
    (precipitation, wind speed) are scaled by the ratio of the region's known values to
    the neighbour climatology at the same steps.

    Examples
    --------
    >>> adjust_mode(np.array([[280.0, 290.0]]), "K"), adjust_mode(np.array([[0.5, 2.0]]), "mm")
    ('shift', 'scale')
    """
    u = str(units).strip().lower().replace("degrees_", "deg").replace("degree_", "deg")
    if u in _TEMPERATURE_UNITS or "celsius" in u or "kelvin" in u:
        return "shift"
    finite = series[np.isfinite(series)]
    return "scale" if finite.size and float(finite.min()) > 0 else "shift"


def _slot_cumsum(values: np.ndarray, period: int) -> np.ndarray:
    """``(R, C + 1, P)`` exclusive cumulative sums over cycles of each season slot."""
    r, t = values.shape
    cycles = -(-t // period)
    pad = np.zeros((r, cycles * period - t), values.dtype)
    x = np.concatenate([values, pad], axis=1).reshape(r, cycles, period)
    return np.concatenate([np.zeros((r, 1, period)), np.cumsum(x, axis=1)], axis=1)


def _before(cum: np.ndarray, origins: np.ndarray, period: int) -> np.ndarray:
    """``(R, O, P)``: each slot's sum over the steps before every origin."""
    p = np.arange(period)
    # slot p occurs at t = p + P c; the steps before origin o are c < ceil((o - p) / P)
    m = np.clip(-(-(origins[:, None] - p[None, :]) // period), 0, cum.shape[1] - 1)
    return cum[:, m, p[None, :]]


@dataclass(frozen=True)
class SeasonalHistory:
    """Per-origin seasonal statistics of every region's known record (array form).

    Attributes
    ----------
    period : int
        Season slots (12 monthly, 24 hourly, 1 otherwise); slot of step ``t`` is ``t % P``.
    origins : ``(O,)`` time indices
    count, total, sumsq : ``(R, O, P)``
        Known values of each slot before each origin, their sum and sum of squares.
    nbr_clim : ``(R, O, P)``
        Neighbours' seasonal climatology (mean of each neighbour's slot mean; the
        training regions' mean climatology where no neighbour knows the slot).
    nbr_var : ``(R, O)``
        Neighbours' mean residual variance around their own slot means (same fallback).
    no_neighbour : ``(R,)`` bool
        Regions with no known neighbour at the first origin (fell back).
    last_value, last_lag : ``(R, O)``
        The last known value before each origin and its distance (``o - t``; a large
        number where nothing is known).
    mode : str
        ``"shift"`` or ``"scale"`` (:func:`adjust_mode`).
    """

    period: int
    origins: np.ndarray
    count: np.ndarray
    total: np.ndarray
    sumsq: np.ndarray
    nbr_clim: np.ndarray
    nbr_var: np.ndarray
    no_neighbour: np.ndarray
    last_value: np.ndarray
    last_lag: np.ndarray
    mode: str

    def own_clim(self) -> np.ndarray:
        """``(R, O, P)`` own slot means (NaN where a slot is not known yet)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)

    def adjusted_nbr(self) -> np.ndarray:
        """``(R, O, P)`` neighbour climatology moved to the region's level (shift or scale)."""
        n = self.count.sum(axis=-1)
        own = self.total.sum(axis=-1)
        at_own = (self.count * self.nbr_clim).sum(axis=-1)
        if self.mode == "scale":
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where((n > 0) & (at_own > 0), own / at_own, 1.0)
            return self.nbr_clim * ratio[..., None]
        offset = np.where(n > 0, (own - at_own) / np.maximum(n, 1), 0.0)
        return self.nbr_clim + offset[..., None]

    def own_var(self, centre: np.ndarray, prior_n: float | None = None) -> np.ndarray:
        """``(R, O)`` residual variance of the known values around ``centre`` (R, O, P).

        Pooled with the neighbours' residual variance as ``prior_n`` pseudo-values (one
        cycle by default), so that a region with one value per slot still has a spread.
        """
        prior_n = float(self.period if prior_n is None else prior_n)
        ss, n = self.own_ss(centre)
        return (ss + prior_n * self.nbr_var) / (n + prior_n)

    def own_ss(self, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(R, O)`` sum of squares of the known values around ``centre`` (R, O, P), and
        their count."""
        ss = (self.sumsq - 2 * centre * self.total + self.count * centre**2).sum(axis=-1)
        return np.maximum(np.where(np.isfinite(ss), ss, 0.0), 0.0), self.count.sum(axis=-1)


def _adjacency(tasks: RegionTaskSet) -> sp.csr_matrix:
    ei = tasks.graph.data.edge_index.numpy()
    r = tasks.n_regions
    a = sp.csr_matrix((np.ones(ei.shape[1]), (ei[1], ei[0])), shape=(r, r))
    a.setdiag(0)  # a region is not its own neighbour
    a.eliminate_zeros()
    a.data[:] = 1.0
    return a


def seasonal_history(
    tasks: RegionTaskSet,
    own_known: np.ndarray,
    nbr_known: np.ndarray,
    origins: np.ndarray,
    *,
    period: int | None = None,
    mode: str | None = None,
    fallback_regions: np.ndarray | None = None,
) -> SeasonalHistory:
    """Seasonal statistics before every origin, for every region at once.

    Parameters
    ----------
    own_known : ``(R, T)`` bool
        Which of a region's own values may be used (before each origin).
    nbr_known : ``(R, T)`` bool
        Which values a region contributes as a neighbour (before each origin).
    origins : ``(O,)`` int
    period : int, optional
        Season slots (default :func:`~spatialmeta.learn.baselines.climatology_period`).
    mode : {"shift", "scale"}, optional
        Default :func:`adjust_mode`.
    fallback_regions : ``(R,)`` bool, optional
        Regions whose mean climatology stands in where no neighbour is known (default:
        every region with a known value in ``nbr_known``).
    """
    period = climatology_period(tasks.time) if period is None else int(period)
    mode = adjust_mode(tasks.series, tasks.units) if mode is None else mode
    origins = np.asarray(origins, dtype=np.int64)
    y = tasks.series.astype(np.float64)
    ok = np.isfinite(y)

    def stats(known):
        k = known & ok
        v = np.where(k, y, 0.0)
        return tuple(
            _before(_slot_cumsum(a, period), origins, period) for a in (k.astype(float), v, v * v)
        )

    count, total, sumsq = stats(own_known)
    ncount, ntotal, nsumsq = stats(nbr_known)
    has = ncount > 0
    nmean = np.where(has, ntotal / np.maximum(ncount, 1), 0.0)
    nss = (nsumsq - ntotal * nmean).sum(axis=-1)  # within-slot sum of squares (R, O)
    ndof = ncount.sum(axis=-1) - has.sum(axis=-1)
    nvar = np.where(ndof > 0, np.maximum(nss, 0) / np.maximum(ndof, 1), np.nan)
    r, o = count.shape[:2]
    adj = _adjacency(tasks)
    hs = adj @ has.reshape(r, -1).astype(float)
    clim = np.where(hs > 0, (adj @ nmean.reshape(r, -1)) / np.maximum(hs, 1), np.nan)
    okv = np.isfinite(nvar)
    nv = adj @ okv.astype(float)
    var = np.where(nv > 0, (adj @ np.where(okv, nvar, 0.0)) / np.maximum(nv, 1), np.nan)
    clim = clim.reshape(r, o, period)
    # fallback: the mean climatology of the training regions (the regions known as neighbours)
    fb = (ncount.sum(axis=(1, 2)) > 0) if fallback_regions is None else fallback_regions
    fb_has = has[fb]
    fb_clim = np.where(
        fb_has.any(0), (nmean[fb] * fb_has).sum(0) / np.maximum(fb_has.sum(0), 1), np.nan
    )  # (O, P)
    fb_clim = np.where(np.isfinite(fb_clim), fb_clim, np.nanmean(np.where(has, nmean, np.nan)))
    n_fb = okv[fb].sum(axis=0)
    fb_var = np.where(
        n_fb > 0, np.where(okv[fb], nvar[fb], 0.0).sum(axis=0) / np.maximum(n_fb, 1), np.nan
    )  # (O,)
    fb_var = np.where(np.isfinite(fb_var), fb_var, np.nanvar(y))
    no_nbr = ~np.isfinite(clim).all(axis=-1)
    clim = np.where(np.isfinite(clim), clim, fb_clim[None])
    var = np.where(np.isfinite(var), var, fb_var[None]).reshape(r, o)
    # last known value before each origin (forward fill of the known index)
    kt = own_known & ok
    idx = np.where(kt, np.arange(tasks.n_time)[None, :], -1)
    idx = np.maximum.accumulate(idx, axis=1)
    prev = idx[:, np.clip(origins - 1, 0, None)]
    prev = np.where(origins[None, :] > 0, prev, -1)
    last = np.where(prev >= 0, y[np.arange(r)[:, None], np.maximum(prev, 0)], np.nan)
    lag = np.where(prev >= 0, origins[None, :] - prev, np.iinfo(np.int32).max)
    return SeasonalHistory(
        period, origins, count, total, sumsq, clim, var, no_nbr[:, 0], last, lag, mode
    )


def _targets(origins: np.ndarray, horizon: int) -> np.ndarray:
    return origins[:, None] + np.arange(horizon)[None, :]  # (O, H)


def _at_targets(field: np.ndarray, origins: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """``(R, O, H)``: a per-origin slot field ``(R, O, P)`` read at each target's slot."""
    slot = _targets(origins, horizon) % period  # (O, H)
    o = np.arange(len(origins))[:, None]
    return field[:, o, slot]


def _eb(h: SeasonalHistory, k: float | np.ndarray) -> np.ndarray:
    """``(..., R, O, P)`` eb climatology for shrinkage ``k`` (scalar or a grid)."""
    k = np.asarray(k, dtype=np.float64).reshape(np.shape(k) + (1, 1, 1))
    prior = h.adjusted_nbr()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (h.total + k * prior) / (h.count + k)
    return np.where(h.count + k > 0, out, prior)


def _anomaly(h: SeasonalHistory, clim: np.ndarray) -> np.ndarray:
    """``(R, O)`` last known anomaly against ``clim`` (R, O, P) at its slot."""
    slot = (h.origins[None, :] - np.minimum(h.last_lag, h.origins[None, :] + 1)) % h.period
    r, o = h.last_value.shape
    base = clim[np.arange(r)[:, None], np.arange(o)[None, :], slot]
    return h.last_value - base


def pseudo_protocol(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, span: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The protocol replayed on the training regions, before ``test_start``.

    Each training region plays a held-out region: known from ``s - support`` with ``s =
    test_start - span - horizon + 1``, its neighbours known before ``s``; the origins are
    ``s .. s + span - 1`` (every target before ``test_start``). A support too long to
    replay before ``test_start`` is shortened to leave a quarter of the record of origins.

    Returns
    -------
    regions, own_known, nbr_known, origins
    """
    t0, S = split.test_start, split.support
    if span is None:
        span = tasks.n_time - t0 - horizon + 1
    # a support as long as the record before test_start (the shots curve's longest) leaves
    # no room to replay it: replay the longest support that leaves a quarter of the record
    # (or the test period, if shorter) of origins
    keep = max(1, min(int(span), (t0 - horizon + 1) // 4))
    S = max(1, min(S, t0 - horizon + 1 - keep))
    span = int(min(span, t0 - S - horizon + 1))
    if span < 1:
        raise ValueError(
            f"no room before test_start ({t0} steps) to fit the references on training "
            f"regions with horizon {horizon}; move `test_start` later."
        )
    s = t0 - span - horizon + 1
    train = split.training
    t = np.arange(tasks.n_time)[None, :]
    own = train[:, None] & (t >= s - S) & (t < t0)
    nbr = train[:, None] & (t < s)
    return np.flatnonzero(train), own, nbr, np.arange(s, s + span)


@dataclass(frozen=True)
class ReferenceFit:
    """Parameters of the references, fitted on training regions.

    ``k``: shrinkage of the eb climatology (pseudo-values per slot); ``phi``: ``(H + 12,)``
    anomaly coefficient by lead ``1 ..``; ``resid_ratio``: ``(H + 12,)`` anomaly
    persistence's squared error relative to the eb climatology's, by lead; ``k_mse``:
    the pseudo-protocol MSE of every ``k`` candidate (:data:`K_GRID`).
    """

    k: float
    phi: np.ndarray
    resid_ratio: np.ndarray
    k_mse: np.ndarray


def fit_references(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, period: int | None = None
) -> ReferenceFit:
    """Fit ``k`` and the anomaly coefficients on the training regions (:func:`pseudo_protocol`)."""
    regions, own, nbr, origins = pseudo_protocol(tasks, split, horizon)
    h = seasonal_history(tasks, own, nbr, origins, period=period, fallback_regions=split.training)
    y = tasks.series.astype(np.float64)[regions][:, _targets(origins, horizon)]  # (Rt, O, H)
    sub = _subset(h, regions)
    grid = _eb(sub, K_GRID)  # (K, Rt, O, P)
    slot = _targets(origins, horizon) % h.period
    o = np.arange(len(origins))[:, None]
    pred = grid[:, :, o, slot]  # (K, Rt, O, H)
    err = (pred - y[None]) ** 2
    ok = np.isfinite(err)
    k_mse = np.where(ok, err, 0).sum(axis=(1, 2, 3)) / np.maximum(ok.sum(axis=(1, 2, 3)), 1)
    best = int(np.argmin(k_mse))
    clim = grid[best]
    anom = _anomaly(sub, clim)  # (Rt, O)
    target = y - pred[best]  # (Rt, O, H) anomalies of the targets
    lead = sub.last_lag[..., None] + np.arange(horizon)[None, None, :]  # (Rt, O, H)
    n_lead = horizon + MAX_LEAD_EXTRA
    use = np.isfinite(target) & np.isfinite(anom[..., None]) & (lead <= n_lead)
    li = np.where(use, lead - 1, 0).ravel()
    a = np.broadcast_to(anom[..., None], target.shape)
    w = use.ravel().astype(float)
    sxy = np.bincount(li, (np.where(use, a * target, 0)).ravel() * w, minlength=n_lead)
    sxx = np.bincount(li, (np.where(use, a * a, 0)).ravel() * w, minlength=n_lead)
    phi = np.where(sxx > 0, sxy / np.maximum(sxx, 1e-300), 0.0)
    phi = np.clip(phi, -1.0, 1.0)
    resid = np.where(use, (target - phi[li].reshape(target.shape) * a) ** 2, 0)
    base = np.where(use, target**2, 0)
    num = np.bincount(li, resid.ravel(), minlength=n_lead)
    den = np.bincount(li, base.ravel(), minlength=n_lead)
    ratio = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    return ReferenceFit(float(K_GRID[best]), phi, np.clip(ratio, 1e-3, 1.0), k_mse)


def _subset(h: SeasonalHistory, regions: np.ndarray) -> SeasonalHistory:
    return SeasonalHistory(
        h.period, h.origins, h.count[regions], h.total[regions], h.sumsq[regions],
        h.nbr_clim[regions], h.nbr_var[regions], h.no_neighbour[regions],
        h.last_value[regions], h.last_lag[regions], h.mode,
    )  # fmt: skip


def heldout_masks(tasks: RegionTaskSet, split: RegionSplit, horizon: int):
    """The test's information: ``(origins, own_known, nbr_known)``. A held-out region's own
    values count from its support on; as a neighbour, a training region counts before
    ``test_start`` and a held-out one from its support on."""
    origins = test_origins(tasks, split, horizon)
    known = split.known(tasks.n_time)
    t = np.arange(tasks.n_time)[None, :]
    return origins, known, known & ((t < split.test_start) | split.held_out[:, None])


def heldout_history(
    tasks: RegionTaskSet, split: RegionSplit, horizon: int, *, period: int | None = None
) -> tuple[SeasonalHistory, np.ndarray]:
    """The held-out regions' seasonal history at the test origins, and their indices."""
    origins, known, nbr = heldout_masks(tasks, split, horizon)
    h = seasonal_history(tasks, known, nbr, origins, period=period, fallback_regions=split.training)
    held = np.flatnonzero(split.held_out)
    return _subset(h, held), held


def heldout_notes(tasks: RegionTaskSet, split: RegionSplit, horizon: int) -> list[str]:
    """Sentences for a report on held-out regions that the references and the meta-learner
    treat specially: no known neighbour (the training regions' mean climatology stands
    in), a gap longer than the support (nothing known in the support window: forecast
    from the neighbours until values arrive), and a support shorter than one cycle."""
    h, held = heldout_history(tasks, split, horizon)
    notes = []
    ids = tasks.region_ids[held]
    lonely = ids[h.no_neighbour]
    if lonely.size:
        notes.append(
            f"No known neighbour: {lonely.size} held-out region(s) ({', '.join(map(str, lonely[:5]))}"
            f"{', …' if lonely.size > 5 else ''}); their neighbour climatology is the mean "
            "climatology of the training regions."
        )
    t0, S = split.test_start, split.support
    empty = ~np.isfinite(tasks.series[held, t0 - S : t0]).any(axis=1)
    if empty.any():
        names = ", ".join(map(str, ids[empty][:5]))
        notes.append(
            f"Gap longer than the support: {int(empty.sum())} held-out region(s) ({names}) have "
            f"no value in their {S}-step support window; masked, they are forecast from their "
            "neighbours until values arrive in the test period."
        )
    period = h.period
    if period > 1 and S < period:
        notes.append(
            f"Support of {S} steps is shorter than one seasonal cycle ({period} steps): season "
            "slots not yet seen fall back to the neighbour climatology."
        )
    return notes


def references(
    tasks: RegionTaskSet,
    split: RegionSplit,
    horizon: int,
    *,
    fit: ReferenceFit | None = None,
    period: int | None = None,
    names: tuple[str, ...] = REFERENCES,
) -> list[Forecast]:
    """Forecasts of the held-out regions by each reference (:data:`REFERENCES`).

    Gaussian forecasts: the spread is the region's residual variance around the
    reference's mean (pooled with its neighbours' over one cycle of pseudo-values), plus
    the sampling variance of the slot mean; anomaly persistence scales it by the squared
    error ratio fitted on training regions at each lead.

    Parameters
    ----------
    fit : ReferenceFit, optional
        From :func:`fit_references` (fitted here when None).
    names : tuple of str
        Which references to return, in this order.
    """
    unknown = sorted(set(names) - set(REFERENCES))
    if unknown:
        raise ValueError(f"unknown references {unknown}; choose from {list(REFERENCES)}.")
    period = climatology_period(tasks.time) if period is None else int(period)
    if split.support < period and period > 1:
        warnings.warn(
            f"support of {split.support} steps is shorter than one seasonal cycle ({period} "
            "steps): seasonal slots not yet seen fall back to the neighbour climatology "
            "(eb_climatology, anomaly_persistence) or to the region's mean "
            "(expanding_climatology).",
            stacklevel=2,
        )
    if fit is None:
        fit = fit_references(tasks, split, horizon, period=period)
    h, held = heldout_history(tasks, split, horizon, period=period)
    origins, P = h.origins, h.period
    out = []
    n = h.count
    nbr = h.adjusted_nbr()
    for name in names:
        if name == "expanding_climatology":
            total_n = n.sum(-1, keepdims=True)
            overall = np.where(
                total_n > 0, h.total.sum(-1, keepdims=True) / np.maximum(total_n, 1), np.nan
            )
            clim = np.where(n > 0, h.total / np.maximum(n, 1), overall)
            var = h.own_var(clim)[..., None] * (
                1 + 1 / np.maximum(_at_targets(n, origins, horizon, P), 1)
            )
        elif name == "neighbour_climatology":
            clim = nbr
            var = np.broadcast_to(h.own_var(clim)[..., None], (len(held), len(origins), horizon))
        else:
            clim = _eb(h, fit.k)
            nk = _at_targets(n, origins, horizon, P) + fit.k
            var = h.own_var(clim)[..., None] * (1 + 1 / np.maximum(nk, 1e-9))
        mean = _at_targets(clim, origins, horizon, P)
        if name == "anomaly_persistence":
            anom = _anomaly(h, clim)  # (Rh, O)
            lead = h.last_lag[..., None] + np.arange(horizon)[None, None, :]
            inside = lead <= len(fit.phi)
            li = np.clip(lead - 1, 0, len(fit.phi) - 1)
            a = np.where(np.isfinite(anom), anom, 0.0)[..., None]
            mean = mean + np.where(inside, fit.phi[li] * a, 0.0)
            var = var * np.where(inside, fit.resid_ratio[li], 1.0)
        out.append(Forecast(name, held, origins, mean, np.sqrt(np.maximum(var, 1e-12))))
    return out
