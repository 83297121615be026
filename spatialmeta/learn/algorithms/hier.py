"""Hierarchical Bayes forecaster: a region's climatology and persistence from a learned prior.

Per region, the seasonal climatology ``c`` (one value per season slot) has a Gaussian
prior whose mean comes from the neighbours' climatologies and whose covariance holds a
shared level, the amplitude of the neighbours' cycle, and slot-wise departures; the
region's whole known record before each origin updates it in closed form (a conjugate
Gaussian update: the posterior is one batched ``P × P`` Cholesky solve per region and
origin). The forecast is the posterior climatology at the target's slot plus the last
known anomaly times a per-region, per-lead coefficient; its variance adds the posterior
uncertainty of the climatology to the anomaly's residual variance.

The prior's parameters are not typed in: a graph network (torch-geometric ``SAGEConv``
over the region graph) predicts them for every region from its covariates and its
neighbours' record statistics (their cycle's shape, spread and anomaly autocorrelation),
and is meta-trained across training regions on episodes that replay the forecast
protocol (:func:`~spatialmeta.learn.references.pseudo_protocol`: each training region
plays a held-out one, with support windows of several lengths), by the closed-form CRPS
of what follows (the score forecasts are judged by; on the shared monthly data it gave
1-3 % lower RMSE than the log-likelihood, which large errors in a few coastal tiles
swayed). A region with a few known months therefore leans on
what its neighbours and covariates predict; one with a long record converges to its
own seasonal means, since the prior's weight stays fixed while the data's grows.

Everything runs in each region's own units scaled by its neighbours' climatology (mean
level and residual spread), so one network serves regions of any climate.

References
----------
Gelman, A., et al. (2013). Bayesian Data Analysis (3rd ed.), ch. 5 (hierarchical normal
models). CRC Press.

Grant, E., Finn, C., Levine, S., Darrell, T., & Griffiths, T. (2018). Recasting
gradient-based meta-learning as hierarchical Bayes. ICLR. arXiv:1801.08930

Harrison, J., Sharma, A., & Pavone, M. (2018). Meta-learning priors for efficient online
Bayesian regression (ALPaCA). WAFR. arXiv:1807.08912

Pan, Z., Liang, Y., Wang, W., Yu, Y., Zheng, Y., & Zhang, J. (2019). Urban traffic
prediction from spatio-temporal data using deep meta learning (ST-MetaNet). KDD.
doi:10.1145/3292500.3330884 (node-level parameters generated from node attributes)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import SAGEConv

from spatialmeta.learn.algorithms.base import Learner, register
from spatialmeta.learn.baselines import climatology_period
from spatialmeta.learn.config import resolve_device
from spatialmeta.learn.features import standardized_covariates
from spatialmeta.learn.loop import fit as train_loop
from spatialmeta.learn.predictions import Forecast
from spatialmeta.learn.references import (
    SeasonalHistory,
    _adjacency,
    _before,
    _eb,
    _slot_cumsum,
    _subset,
    fit_references,
    heldout_masks,
    seasonal_history,
)
from spatialmeta.tasks.sampling import Episode

__all__ = ["HierarchicalForecaster", "EpisodeStats", "episode_stats", "N_STATIC"]

N_STATIC = 6  # per-region record features besides the cycle shape and the covariates
N_LAGS = 3  # recent anomalies the forecast reads (besides the slow mean anomaly)
Z90 = 1.6448536269514722  # standard normal 95 % quantile: a central 90 % interval is ±Z90 sd
POOL_EPISODES = 48  # seeded training episodes of the pool hier cycles through
SLOW = 12  # steps of the slow mean anomaly (one annual cycle of a monthly record)
PRIOR_HIDDEN = 16  # width of the prior network when ``LearnConfig.hidden`` is None


@dataclass(frozen=True)
class EpisodeStats:
    """Everything the forecaster reads about a set of regions at a set of origins (tensors).

    ``x``: ``(R_all, F)`` node features of every region of the graph; ``index``: ``(R,)``
    the task regions among them; ``mu``/``sigma``: ``(R,)`` the neighbour scale;
    ``prior``: ``(R, P)`` neighbour climatology (scaled); ``count``/``sums``: ``(R, O, P)``
    own known values per slot and their scaled sums; ``own_ss``/``own_n``: ``(R, O)`` the
    own known values' sum of squares around their eb climatology (scaled) and count;
    ``lag_val``/``lag_ok``: ``(R, O, J)`` the last ``N_LAGS`` values (scaled) and whether
    known; ``win_count``/``win_sum``: ``(R, O, P)``/``(R, O)`` slot counts and scaled sum of
    the last cycle; ``slot_t``: ``(O, H)`` target slots;
    ``target``/``mask``: ``(R, O, H)`` scaled targets where known (training only);
    ``sigma_floor``: the floor the neighbour scale was held at.
    """

    x: torch.Tensor
    index: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    prior: torch.Tensor
    count: torch.Tensor
    sums: torch.Tensor
    own_ss: torch.Tensor
    own_n: torch.Tensor
    lag_val: torch.Tensor
    lag_ok: torch.Tensor
    win_count: torch.Tensor
    win_sum: torch.Tensor
    slot_t: torch.Tensor
    origins: np.ndarray
    target: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    sigma_floor: float = 0.0


def _nbr_autocorr(tasks, nbr_known: np.ndarray, period: int, lags: int = 3) -> np.ndarray:
    """``(R, lags)`` neighbours' mean anomaly autocorrelation over their known records."""
    y = tasks.series.astype(np.float64)
    k = nbr_known & np.isfinite(y)
    t = tasks.n_time
    slot = np.arange(t) % period
    onehot = slot[None, :] == np.arange(period)[:, None]  # (P, T)
    cnt = k.astype(float) @ onehot.T
    mean = np.where(cnt > 0, np.where(k, y, 0) @ onehot.T / np.maximum(cnt, 1), 0)
    a = np.where(k, y - mean[:, slot], 0.0)
    den = (a * a).sum(1)
    out = np.zeros((tasks.n_regions, lags))
    for lag in range(1, lags + 1):  # a handful of lags, each over whole arrays
        num = (a[:, lag:] * a[:, :-lag]).sum(1)
        out[:, lag - 1] = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    adj = _adjacency(tasks)
    has = (den > 0).astype(float)
    deg = adj @ has
    nb = np.where(deg[:, None] > 0, (adj @ (out * has[:, None])) / np.maximum(deg, 1)[:, None], 0)
    fb = out[den > 0].mean(0) if (den > 0).any() else np.zeros(lags)
    return np.where(deg[:, None] > 0, nb, fb[None])


def episode_stats(
    tasks,
    covariates: np.ndarray,
    hist: SeasonalHistory,
    regions: np.ndarray,
    own_known: np.ndarray,
    nbr_known: np.ndarray,
    horizon: int,
    *,
    targets: bool = False,
    sigma_floor: float | None = None,
    device="cpu",
) -> EpisodeStats:
    """Tensors for ``regions`` from a :class:`SeasonalHistory` of every region.

    The record statistics in ``x`` are raw (the network standardizes them with constants
    fixed at training, :meth:`HierarchicalForecaster.set_normalization`), so a region's
    features never depend on which other regions are in the batch or held out.
    ``sigma_floor``: the floor of the neighbour scale; None takes a tenth of the median
    neighbour spread of ``regions`` (training), a forecast passes the trained one.
    """
    P = hist.period
    mu_all = hist.nbr_clim[:, 0].mean(-1)  # (R,) level of the neighbours' cycle, first origin
    sigma_all = np.sqrt(np.maximum(hist.nbr_var[:, 0], 0.0))
    # neighbours whose record barely moves (sea ice at the freezing point) would blow the
    # scaled units up: floor the scale at a tenth of the typical neighbour spread
    if sigma_floor is None:
        sig = sigma_all[np.asarray(regions)]
        sigma_floor = 0.1 * float(np.median(sig[sig > 0])) if (sig > 0).any() else 0.1
    sigma_all = np.maximum(sigma_all, sigma_floor)
    prior_all = (hist.nbr_clim[:, 0] - mu_all[:, None]) / sigma_all[:, None]  # (R, P)
    auto = _nbr_autocorr(tasks, nbr_known, P)
    static = np.column_stack(
        [
            np.log(sigma_all), auto, hist.no_neighbour.astype(float),
            np.log1p(hist.count[:, 0].sum(-1)),
        ]
    )  # fmt: skip
    assert static.shape[1] == N_STATIC
    x = np.column_stack([prior_all, static, covariates])
    h = _subset(hist, regions)
    mu, sigma, prior = mu_all[regions], sigma_all[regions], prior_all[regions]
    sums = (h.total - h.count * mu[:, None, None]) / sigma[:, None, None]
    own_ss, own_n = h.own_ss(_eb(h, 1.0))
    own_ss = own_ss / sigma[:, None] ** 2
    # the last N_LAGS values before each origin (scaled; masked where unknown) and the slot
    # counts and sum of the last SLOW steps, for the anomaly terms
    origins = h.origins
    own = own_known[regions] & np.isfinite(tasks.series[regions])
    yv = (tasks.series[regions].astype(np.float64) - mu[:, None]) / sigma[:, None]
    lag_idx = origins[:, None] - np.arange(1, N_LAGS + 1)[None, :]  # (O, J)
    okl = lag_idx >= 0
    li = np.clip(lag_idx, 0, None)
    lag_val = np.where(okl[None] & own[:, li], yv[:, li], np.nan)  # (R, O, J)
    win = min(SLOW, max(P, 1))
    cum = _slot_cumsum(own.astype(float), P)
    win_count = _before(cum, origins, P) - _before(cum, origins - win, P)  # (R, O, P)
    cs = np.concatenate([np.zeros((len(regions), 1)), np.cumsum(np.where(own, yv, 0.0), 1)], 1)
    win_sum = cs[:, origins] - cs[:, np.clip(origins - win, 0, None)]  # (R, O)
    slot_t = (origins[:, None] + np.arange(horizon)[None, :]) % P

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    tgt = msk = None
    if targets:
        idx = origins[:, None] + np.arange(horizon)[None, :]
        y = tasks.series.astype(np.float64)[regions][:, idx]
        y = (y - mu[:, None, None]) / sigma[:, None, None]
        ok = np.isfinite(y)
        tgt, msk = t(np.where(ok, y, 0.0)), t(ok)
    return EpisodeStats(
        x=t(x), index=t(regions, torch.long), mu=t(mu, torch.float64), sigma=t(sigma, torch.float64), prior=t(prior),
        count=t(h.count), sums=t(sums), own_ss=t(own_ss), own_n=t(own_n),
        lag_val=t(np.nan_to_num(lag_val)), lag_ok=t(np.isfinite(lag_val)),
        win_count=t(win_count), win_sum=t(win_sum),
        slot_t=t(slot_t, torch.long), origins=origins, target=tgt, mask=msk,
        sigma_floor=float(sigma_floor),
    )  # fmt: skip


class HierarchicalForecaster(nn.Module):
    """A graph network that predicts each region's prior, and the closed-form update.

    Parameters
    ----------
    n_features : int
        Node features (:func:`episode_stats`: the neighbours' cycle, record statistics,
        covariates).
    period : int
        Season slots.
    horizon : int
    hidden : int

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> net = HierarchicalForecaster(12 + 6 + 3, 12, 3, hidden=8)
    >>> x = torch.randn(5, 21); ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    >>> params = net.prior_params(x, ei)
    >>> tuple(params["phi"].shape), tuple(params["level"].shape)
    ((5, 3, 4), (5,))
    """

    N_SCALARS = 8

    def __init__(self, n_features: int, period: int, horizon: int, *, hidden: int = PRIOR_HIDDEN):
        super().__init__()
        self.period, self.horizon = int(period), int(horizon)
        self.n_anom = N_LAGS + 1  # recent anomalies and the slow mean anomaly
        self.encode = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU())
        self.conv = SAGEConv(hidden, hidden)
        out = self.N_SCALARS + self.horizon * (self.n_anom + 1)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, out))
        # shared (meta-learned) anomaly coefficients and residual variances, per horizon;
        # the head adds each region's departure from them
        phi = torch.zeros(self.horizon, self.n_anom)
        phi[:, 0] = 0.5 ** torch.arange(1, self.horizon + 1, dtype=torch.float32)
        phi[:, -1] = 0.2
        self.phi = nn.Parameter(phi)
        self.log_resid = nn.Parameter(torch.zeros(self.horizon))
        self.log_tau = nn.Parameter(torch.tensor([0.0, np.log(0.3), np.log(0.3)]))
        # pseudo-values of the neighbours' spread in a region's noise variance
        self.log_nu = nn.Parameter(torch.tensor(float(np.log(max(period, 2)))))
        with torch.no_grad():  # start every region at the shared values
            self.head[-1].weight.mul_(0.01)
            self.head[-1].bias.zero_()
        # standardization of the record statistics and the scale floor, fixed on the
        # training episodes (:meth:`set_normalization`) and saved with the model
        self.register_buffer("static_loc", torch.zeros(N_STATIC))
        self.register_buffer("static_scale", torch.ones(N_STATIC))
        self.register_buffer("sigma_floor", torch.tensor(0.1))
        # per-horizon variance factor of the forecast, set on the validation regions at
        # every validation (:meth:`calibrate`), so the kept state carries its own
        self.register_buffer("var_scale", torch.ones(self.horizon))

    def calibrate(self, outputs, weights=None) -> None:
        """Set :attr:`var_scale` so that the central 90 % intervals cover 90 % of the
        validation targets, per horizon (split-conformal on the standardized residuals).

        ``outputs``: ``(mean, var, target, mask)`` tuples ``(R, O, H)`` of the validation
        episodes; ``weights``: one ``(R,)`` tensor per episode (the regions' areas), so
        that the intervals cover 90 % of the validation *area*, as forecasts are scored
        (area-weighted means over regions); None weighs regions equally. The CRPS fit
        leaves the interval widths to the training regions; this moves them to what unseen
        regions need (e.g. 81-87 % coverage uncalibrated on the FNOC winds). The factor is
        held in [1/4, 4].
        """
        with torch.no_grad():
            z = torch.cat([((t - m).abs() / v.sqrt()).flatten(0, 1) for m, v, t, _ in outputs])
            ok = torch.cat([k.flatten(0, 1) > 0 for *_, k in outputs])
            if weights is None:
                weights = [
                    torch.ones(m.shape[0], dtype=z.dtype, device=z.device) for m, *_ in outputs
                ]
            w = torch.cat(
                [wt.to(z)[:, None].expand(m.shape[:2]).flatten() for wt, (m, *_) in zip(weights, outputs, strict=True)]
            )  # fmt: skip
            scale = torch.ones(self.horizon, dtype=z.dtype, device=z.device)
            for h in range(self.horizon):  # a handful of horizons, each over every residual
                zh, wh = z[ok[:, h], h], w[ok[:, h]]
                if zh.numel() >= 20 and float(wh.sum()) > 0:
                    q = _weighted_quantile(zh, wh, 0.9)
                    scale[h] = (q / Z90) ** 2
            self.var_scale.copy_(scale.clamp(0.25, 4.0).to(self.var_scale))

    def set_normalization(self, episodes) -> None:
        """Fix the record statistics' mean and spread over the task regions of ``episodes``
        (the training pool), and the scale floor of the first."""
        P = self.period
        raw = torch.cat([e.x[e.index][:, P : P + N_STATIC] for e in episodes])
        sd = raw.std(0, unbiased=False)
        with torch.no_grad():
            self.static_loc.copy_(raw.mean(0))
            self.static_scale.copy_(torch.where(sd > 0, sd, torch.ones_like(sd)))
            self.sigma_floor.fill_(episodes[0].sigma_floor)

    def _standardized(self, x: torch.Tensor) -> torch.Tensor:
        P = self.period
        static = (x[:, P : P + N_STATIC] - self.static_loc) / self.static_scale
        return torch.cat([x[:, :P], static, x[:, P + N_STATIC :]], dim=1)

    def init_from_references(self, fit) -> None:
        """Shared parameters from a :class:`~spatialmeta.learn.references.ReferenceFit`."""
        H = self.horizon
        with torch.no_grad():
            self.phi.zero_()
            self.phi[:, 0] = torch.as_tensor(fit.phi[:H], dtype=torch.float32)
            tau_slot = 1.0 / np.sqrt(max(float(fit.k), 0.05))
            self.log_tau.copy_(torch.tensor([np.log(2.0), np.log(0.3), np.log(min(tau_slot, 5.0))]))
            self.log_tau[1] = float(np.log(min(tau_slot, 5.0)))
            self.log_tau[2] = float(np.log(0.3))
            self.log_resid.copy_(torch.as_tensor(np.log(fit.resid_ratio[:H]), dtype=torch.float32))

    def prior_params(self, x: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Per-region prior parameters from node features (one graph forward)."""
        h0 = self.encode(self._standardized(x))
        h1 = self.conv(h0, edge_index)
        out = self.head(torch.cat([h0, h1], dim=-1))
        H, J = self.horizon, self.n_anom
        k = self.N_SCALARS
        log_tau = self.log_tau[None, :] + out[:, 2:5]
        return {
            "level": out[:, 0],
            "amp": torch.exp(out[:, 1].clamp(-3, 3)),
            "tau_level": torch.exp(log_tau[:, 0].clamp(-8, 5)),
            "tau_slot": torch.exp(log_tau[:, 1].clamp(-8, 5)),
            "tau_amp": torch.exp(log_tau[:, 2].clamp(-8, 5)),
            "kappa": torch.sigmoid(out[:, 5] + 2.0),
            "noise_scale": torch.exp(out[:, 6].clamp(-5, 5)),
            "nu": torch.exp((self.log_nu + out[:, 7]).clamp(-6, 8)),
            "phi": self.phi[None] + out[:, k : k + H * J].reshape(-1, H, J),
            "resid": torch.exp((self.log_resid[None] + out[:, k + H * J :]).clamp(-6, 3)),
        }

    def forward(self, st: EpisodeStats, edge_index: torch.Tensor, *, adapt: bool = True):
        """Mean and variance ``(R, O, H)`` in scaled units (multiply by ``sigma``, add ``mu``)."""
        p = self.prior_params(st.x, edge_index)
        p = {k: v[st.index].double() for k, v in p.items()}
        P = self.period
        base = st.prior.double()
        amp = base - base.mean(-1, keepdim=True)
        m = base.mean(-1, keepdim=True) + p["amp"][:, None] * amp + p["level"][:, None]
        tau_s2 = p["tau_slot"][:, None, None] ** 2  # (R, 1, 1)
        ones = torch.ones_like(amp)
        u = torch.stack([p["tau_level"][:, None] * ones, p["tau_amp"][:, None] * amp], -1)
        # the region's noise variance: its own residuals pooled with ``nu`` pseudo-values of
        # its neighbours' spread (1 in these units); a region whose record barely moves
        # (sea ice at the freezing point) gets a small one once it has a few values
        nu = p["nu"][:, None]
        ss, n_own = st.own_ss.double(), st.own_n.double()
        if not adapt:
            ss, n_own = torch.zeros_like(ss), torch.zeros_like(n_own)
        noise = (ss + nu) / (n_own + nu) * p["noise_scale"][:, None]  # (R, O)
        count, sums = st.count.double(), st.sums.double()
        if not adapt:
            count, sums = torch.zeros_like(count), torch.zeros_like(sums)
        w = p["kappa"][:, None, None] / noise[..., None]  # (R, O, 1)
        post = _LowRankPosterior(tau_s2, u, count * w)
        c = m[:, None, :] + post.solve(sums * w - count * w * m[:, None, :])  # (R, O, P)
        r, o = c.shape[:2]
        # anomaly regressors: the recent values and the slow window, each as a weight
        # vector over the season slots (what is subtracted from the observed part)
        origins = torch.as_tensor(st.origins, device=c.device)
        lag_slot = (origins[:, None] - torch.arange(1, N_LAGS + 1, device=c.device)) % P
        lag_e = nn.functional.one_hot(lag_slot, P).double()[None].expand(r, -1, -1, -1)
        ok = st.lag_ok.double()
        if not adapt:
            ok = torch.zeros_like(ok)
        n_win = st.win_count.double().sum(-1)
        has_win = (n_win > 0).double() * (1.0 if adapt else 0.0)
        win_e = st.win_count.double() / n_win.clamp(min=1)[..., None]  # (R, O, P)
        obs = torch.cat(
            [
                st.lag_val.double() * ok,
                (st.win_sum.double() / n_win.clamp(min=1) * has_win)[..., None],
            ],
            dim=-1,
        )  # (R, O, J)
        e_obs = torch.cat([lag_e * ok[..., None], (win_e * has_win[..., None])[:, :, None]], dim=2)
        anom = obs - torch.einsum("rojp,rop->roj", e_obs, c)  # (R, O, J)
        phi = p["phi"]  # (R, H, J)
        tgt = nn.functional.one_hot(st.slot_t, P).double()  # (O, H, P)
        mean = torch.einsum("ohp,rop->roh", tgt, c) + torch.einsum("rhj,roj->roh", phi, anom)
        e = tgt[None] - torch.einsum("rhj,rojp->rohp", phi, e_obs)  # (R, O, H, P)
        var_c = post.quad(e)
        var = noise[..., None] * p["resid"][:, None, :] + var_c.clamp(min=0)
        return mean, var.clamp(min=1e-8)


class _LowRankPosterior:
    """The posterior covariance ``(Σ⁻¹ + D)⁻¹`` for ``Σ = s I + U Uᵀ`` (rank 2) and diagonal
    ``D``, by Woodbury's identity twice: only 2 × 2 systems, O(P) per region and origin
    (a dense ``P × P`` Cholesky per region and origin and its backward were 0.85 s a
    training step on 1,300 ocean tiles; this is what no linear-algebra library offers for
    a batch of diagonal-plus-rank-2 updates).

    With ``A = diag(1/s + D)``: ``(Σ⁻¹ + D)⁻¹ = A⁻¹ + A⁻¹ U M⁻¹ Uᵀ A⁻¹``, ``M = s (s I +
    UᵀU) - Uᵀ A⁻¹ U`` (positive definite, since ``A⁻¹ ≤ s``).
    """

    def __init__(self, s: torch.Tensor, u: torch.Tensor, d: torch.Tensor):
        # s (R, 1, 1), u (R, P, 2), d (R, O, P)
        self.ainv = 1.0 / (1.0 / s + d)  # (R, O, P)
        self.u = u[:, None]  # (R, 1, P, 2)
        utu = torch.einsum("rpi,rpj->rij", u, u)[:, None]  # (R, 1, 2, 2)
        eye = torch.eye(2, dtype=u.dtype, device=u.device)
        uau = torch.einsum(
            "ropi,rop,ropj->roij",
            self.u.expand(-1, d.shape[1], -1, -1),
            self.ainv,
            self.u.expand(-1, d.shape[1], -1, -1),
        )
        m = s[..., None] * (s[..., None] * eye + utu) - uau  # (R, O, 2, 2)
        det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
        inv = torch.stack(
            [
                torch.stack([m[..., 1, 1], -m[..., 0, 1]], -1),
                torch.stack([-m[..., 1, 0], m[..., 0, 0]], -1),
            ],
            -2,
        )
        self.minv = inv / det[..., None, None]  # (R, O, 2, 2)

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        """``(Σ⁻¹ + D)⁻¹ v`` for ``v`` ``(R, O, P)``."""
        av = self.ainv * v
        uav = torch.einsum("ropi,rop->roi", self.u.expand(-1, v.shape[1], -1, -1), av)
        back = torch.einsum("roij,roj->roi", self.minv, uav)
        return av + self.ainv * torch.einsum(
            "ropi,roi->rop", self.u.expand(-1, v.shape[1], -1, -1), back
        )

    def quad(self, e: torch.Tensor) -> torch.Tensor:
        """``eᵀ (Σ⁻¹ + D)⁻¹ e`` for ``e`` ``(R, O, H, P)``: ``(R, O, H)``."""
        ae = self.ainv[:, :, None] * e
        uae = torch.einsum("ropi,rohp->rohi", self.u.expand(-1, e.shape[1], -1, -1), ae)
        return (e * ae).sum(-1) + torch.einsum("rohi,roij,rohj->roh", uae, self.minv, uae)


def _weighted_quantile(values: torch.Tensor, weights: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of ``values`` under ``weights`` (the smallest value whose
    cumulative weight reaches ``q`` of the total; equal weights: the empirical quantile's
    lower value)."""
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0)
    i = int(torch.searchsorted(cum, q * cum[-1]))
    return values[order][min(i, len(values) - 1)]


def heldout_stats(
    tasks, split, horizon, covariates, *, sigma_floor: float, device="cpu"
) -> tuple[EpisodeStats, np.ndarray]:
    """The held-out regions at the test origins (what :func:`references.heldout_history` sees)."""
    origins, known, nbr = heldout_masks(tasks, split, horizon)
    hist = seasonal_history(tasks, known, nbr, origins, fallback_regions=split.training)
    held = np.flatnonzero(split.held_out)
    st = episode_stats(
        tasks, covariates, hist, held, known, nbr, horizon, sigma_floor=sigma_floor, device=device
    )
    return st, held


def _gaussian_crps(mean, var, target, mask) -> torch.Tensor:
    """Mean closed-form CRPS of Gaussian forecasts over the known targets (Gneiting et al.
    2005), the score the forecasts are judged by; less swayed by a few large errors than
    the log-likelihood."""
    sd = var.sqrt()
    z = (target.double() - mean) / sd
    normal = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    crps = sd * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / np.sqrt(np.pi))
    m = mask.double()
    return (crps * m).sum() / m.sum().clamp(min=1)


def support_lengths(split, horizon: int, period: int, room: int) -> list[int]:
    """Support lengths of the training episodes: a few cycles' worth, up to ``room`` steps,
    always including the split's own support."""
    base = {6, 12, 24, 36, 48, 72, 96, 120, split.support}
    base |= {period // 4, period // 2, period, 2 * period, 4 * period} if period > 1 else set()
    return sorted(n for n in base if 1 <= n <= room)


@register("hier")
class HierarchicalLearner(Learner):
    """The ``hier`` meta-learner: :class:`HierarchicalForecaster` with its training and
    forecasting over region tasks (``LearnConfig(learner="hier")``).

    Trained by :meth:`train_on` (``meta_train`` with ``LearnConfig(learner="hier")``);
    forecast by :meth:`forecast_split` (``forecast_heldout`` dispatches to it).
    ``benchmarks/eval_monthly.py`` runs it on the shared monthly data. The papers it
    draws on are in the module docstring (hierarchical normal model, Gelman et al. 2013
    ch. 5; learned priors for Bayesian regression, ALPaCA, Harrison et al. 2018;
    node-level parameter generation, ST-MetaNet, Pan et al. 2019).

    Examples
    --------
    A region with a long support leans on its own record, one with a short support on its
    neighbours; the forecast is a Gaussian in natural units:

    >>> import numpy as np
    >>> from spatialmeta.data import synthetic_region_tasks
    >>> from spatialmeta.learn import LearnConfig
    >>> from spatialmeta.tasks import spatial_holdout
    >>> tasks = synthetic_region_tasks(16, 120, seed=0)
    >>> split = tasks.split(held_out=spatial_holdout(tasks.n_regions, 0.25, seed=0),
    ...                     test_start=tasks.time[96], support=24)
    >>> cfg = LearnConfig(learner="hier", episodes=20, val_every=10, seed=0, device="cpu")
    >>> res = HierarchicalLearner.train_on(tasks, split, cfg)
    >>> fc = res.learner.forecast_split(tasks, split, cfg)
    >>> fc.method, fc.mean.shape == fc.std.shape, bool((fc.std > 0).all())
    ('meta', True, True)
    """

    needs_backbone = False

    def __init__(self, net: HierarchicalForecaster, *more: HierarchicalForecaster):
        super().__init__()
        self.nets = nn.ModuleList([net, *more])

    @property
    def net(self) -> HierarchicalForecaster:
        """The first member (the only one with ``members=1``)."""
        return self.nets[0]

    @classmethod
    def train_on(
        cls,
        tasks,
        split,
        config,
        *,
        checkpoint_dir=None,
        resume: bool = False,
        progress: bool = False,
    ):
        """Meta-train ``config.members`` members on the training regions.

        Member ``j`` is :meth:`train_member` with seed ``config.seed + 1000 j`` (its
        checkpoints under ``checkpoint_dir/member<j>`` for ``j >= 1``); the returned
        result's learner holds them all and forecasts their mixture, its history is the
        first member's and ``members`` holds every member's result.
        """
        m = config.members
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"`members` must be an integer >= 1 (1: one network); got {m!r}.")
        results = []
        for j in range(m):  # a handful of members, each a whole (batched) training run
            cfg = dataclasses.replace(config, seed=config.seed + 1000 * j)
            where = checkpoint_dir
            if checkpoint_dir is not None and j:
                where = Path(checkpoint_dir) / f"member{j}"
            results.append(
                cls.train_member(
                    tasks, split, cfg, checkpoint_dir=where, resume=resume, progress=progress
                )
            )
        if m == 1:
            return results[0]
        learner = cls(*[r.learner.net for r in results])
        return dataclasses.replace(results[0], learner=learner, config=config, members=results)

    @classmethod
    def train_member(
        cls,
        tasks,
        split,
        config,
        *,
        checkpoint_dir=None,
        resume: bool = False,
        progress: bool = False,
    ):
        """Meta-train one network on the training regions (episodes replaying the protocol).

        A seeded pool of episodes (support lengths from :func:`support_lengths`, support
        ends drawn at random, every fitting region a task), validated on unseen training
        regions over the last origins before ``test_start``; the loop, checkpoints and
        resume are :func:`spatialmeta.learn.loop.fit`'s.
        """
        H, t0 = config.horizon, split.test_start
        device = resolve_device(config.device)
        period = climatology_period(tasks.time)
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        train = np.flatnonzero(split.training)
        # at least 10 validation regions where there are 30 or more: with a handful, early
        # stopping follows noise (CCSM TS on 34 training states: 5 regions kept a worse state)
        n_val = int(round(config.val_fraction * len(train)))
        n_val = max(n_val, min(10, len(train) // 3))
        n_val = max(1, n_val) if len(train) > 4 else 0
        val = np.sort(rng.choice(train, size=n_val, replace=False)) if n_val else train[:0]
        fit = np.setdiff1d(train, val)
        cov = _covariates(tasks)
        span = max(1, min(tasks.n_time - t0 - H + 1, 24))
        room = t0 - span - H + 1  # the latest support end
        if room < 2:
            raise ValueError(
                f"no room before test_start ({t0} steps) for training episodes of {span} "
                f"origins and horizon {H}; move `test_start` later."
            )
        lengths = support_lengths(split, H, period, room - 1)
        tt = np.arange(tasks.n_time)[None, :]
        is_train = split.training[:, None]

        def episode(s, n, regions, floor):
            own = is_train & (tt >= s - n) & (tt < t0)
            nbr = is_train & (tt < s)
            origins = np.arange(s, s + span)
            hist = seasonal_history(
                tasks, own, nbr, origins, period=period, fallback_regions=split.training
            )
            return episode_stats(
                tasks,
                cov,
                hist,
                regions,
                own,
                nbr,
                H,
                targets=True,
                sigma_floor=floor,
                device=device,
            )

        # a fixed pool size: `episodes` may grow on resume, and the pool (so the order
        # the loop cycles through it) must not change with it
        n_fit = POOL_EPISODES
        pool = []
        floor = None  # the scale floor of the first episode's fitting regions, then kept
        for i in range(n_fit):  # seeded episodes: a support length and a support end each
            n = int(lengths[i % len(lengths)])
            s = int(rng.integers(n, room + 1))
            pool.append(episode(s, n, fit, floor))
            floor = pool[0].sigma_floor
        # validation mirrors the test: unseen regions over the last origins before test_start
        val_lengths = sorted({min(split.support, room), *lengths[:: max(1, len(lengths) // 3)]})
        vals = [episode(room, n, val, floor) for n in val_lengths] if len(val) else []
        edge_index = tasks.graph.data.edge_index.to(device)
        width = config.hidden or PRIOR_HIDDEN
        net = HierarchicalForecaster(pool[0].x.shape[1], period, H, hidden=width).to(device)
        net.set_normalization(pool)
        # warm start from the statistician's fit on the same training regions (eb shrinkage
        # and lag-1 anomaly coefficients of :func:`fit_references`): training starts at the
        # anomaly-persistence reference and learns the departures from it
        ref = fit_references(tasks, split, H, period=period)
        net.init_from_references(ref)
        learner = cls(net)
        shared = [net.phi, net.log_resid, net.log_tau, net.log_nu]  # no decay toward zero for these
        rest = [q for q in net.parameters() if all(q is not x for x in shared)]
        opt = torch.optim.AdamW(
            [{"params": rest, "weight_decay": 1e-2}, {"params": shared, "weight_decay": 0.0}],
            lr=config.lr * 3,
        )

        vals = vals or pool[:1]  # no region to spare for validation: the first episode
        # the validation regions' areas: intervals calibrated to cover 90 % of the area,
        # as forecasts are scored (equal weights where the task set has no areas)
        size = tasks.area_km2 if tasks.area_km2 is not None else np.ones(tasks.n_regions)
        area = [
            torch.as_tensor(np.asarray(size, dtype=np.float64)[v.index.cpu().numpy()]) for v in vals
        ]
        sampler = _PoolCycle(len(pool))

        def step(ep) -> float:  # one episode of the seeded pool, all its regions at once
            st = pool[int(ep.tasks[0])]
            opt.zero_grad()
            loss = _gaussian_crps(*net(st, edge_index), st.target, st.mask)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            return float(loss.detach())

        def validate() -> float:
            out = [(*net(v, edge_index), v.target, v.mask) for v in vals]
            net.calibrate(out, area)  # the widths for unseen regions, kept with the state
            return float(torch.stack([_gaussian_crps(*o) for o in out]).mean())

        # the loop every learner shares: early stopping with the initial state a candidate,
        # atomic checkpoints (model.pt, history.json, metrics.csv, state.pt), resume
        return train_loop(
            learner, opt, sampler, step, validate, config, "meta", checkpoint_dir, resume,
            progress,
        )  # fmt: skip

    def forecast_split(self, tasks, split, config, *, adapt: bool = True, method=None):
        """Forecasts of every held-out region at every test origin (natural units): the
        members' equal-weight Gaussian mixture, moment-matched (one member: its Gaussian)."""
        device = next(self.parameters()).device
        cov = _covariates(tasks)
        edge_index = tasks.graph.data.edge_index.to(device)
        stats: dict = {}  # the held-out statistics per scale floor (members may differ)
        self.eval()
        means, variances = [], []
        with torch.no_grad():
            for net in self.nets:  # the ensemble's members (a handful), each batched
                floor = float(net.sigma_floor)
                if floor not in stats:
                    stats[floor] = heldout_stats(
                        tasks, split, config.horizon, cov, sigma_floor=floor, device=device
                    )
                st, held = stats[floor]
                mean, var = net(st, edge_index, adapt=adapt)
                if adapt:  # the interval widths calibrated on the validation regions
                    var = var * net.var_scale
                mu = st.mu.cpu().numpy()[:, None, None]
                sd = st.sigma.cpu().numpy()[:, None, None]
                means.append(mean.cpu().numpy() * sd + mu)
                variances.append(var.cpu().numpy() * sd * sd)
        # the mixture's variance: the members' mean variance plus the spread of their means
        # (no E[x^2] - E[x]^2 cancellation for values far from zero, e.g. kelvin)
        mean = np.mean(means, axis=0)
        spread = np.mean([(m - mean) ** 2 for m in means], axis=0)
        var = np.mean(variances, axis=0) + spread
        name = method or ("meta" if adapt else "meta_noadapt")
        return Forecast(name, held, st.origins, mean, np.sqrt(var))


class _PoolCycle:
    """Episodes of a fixed pool in turn (an epoch each ``n`` steps), checkpointable like
    :class:`~spatialmeta.tasks.sampling.EpisodeSampler`. Drawing them at random instead
    left some episodes unseen for long stretches and made early stopping noisier."""

    def __init__(self, n: int):
        self.n, self.step = int(n), 0

    def next(self):
        i = self.step % self.n
        self.step += 1
        return Episode(tasks=np.array([i]), s=0)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def _covariates(tasks) -> np.ndarray:
    """The task set's covariates as :func:`~spatialmeta.learn.features.standardized_covariates`
    scales them for the backbone learners (zero mean, unit variance across regions)."""
    return standardized_covariates(tasks).numpy()
