"""Priors for the between-study heterogeneity tau (and the effect mu): families, and the
published ones by name.

Densities are over ``tau`` (the standard deviation), whatever scale a family is defined
on, so that they can be integrated against a likelihood in tau directly:

* ``lognormal_tau2``: log(tau^2) ~ N(mu, sigma^2) (Turner et al. 2015);
* ``logt_tau2``: log(tau^2) ~ location + scale * t_df (Rhodes et al. 2015, df = 5);
* ``invgamma_tau``: tau ~ inverse-gamma(shape, scale) (Bartoš et al. 2021/2023);
* ``halfnormal_tau``: tau ~ |N(0, scale^2)| (Bartoš et al.'s risk-difference prior, and a
  common weakly-informative choice);
* ``halft_tau``: tau ~ |scale * t_df|;
* ``uniform_tau``: tau ~ U(0, upper) (bayesmeta's uniform prior; the "flat" reference of
  the corpus evaluation, proper so that its evidence is defined).

The published tables ship with the package (``prior_tables/``, transcribed from the
papers' tables; the files' first lines cite them):

* Turner, R. M., Jackson, D., Wei, Y., Thompson, S. G., & Higgins, J. P. T. (2015).
  Predictive distributions for between-study heterogeneity and simple methods for their
  application in Bayesian meta-analysis. *Statistics in Medicine*, 34(6), 984-998,
  Table IV (log odds ratios, by outcome type x comparison type);
* Rhodes, K. M., Turner, R. M., & Higgins, J. P. T. (2015). Predictive distributions were
  developed for the extent of heterogeneity in meta-analyses of continuous outcome data.
  *Journal of Clinical Epidemiology*, 68(1), 52-60, Tables 3, A.3.1, A.3.2 (standardized
  mean differences, by medical area x outcome type x comparison type);
* Bartoš, F., Gronau, Q. F., Timmers, B., Otte, W. M., Ly, A., & Wagenmakers, E.-J.
  (2021). Bayesian model-averaged meta-analysis in medicine. *Statistics in Medicine*,
  40(30), 6743-6761 (doi:10.1002/sim.9170), and Bartoš et al. (2023), arXiv:2306.11468:
  tau and mu for SMD, log OR, log RR, RD and log HR, from the Cochrane database and by
  46 subfields (as in the R package BayesTools 0.3.0).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = ["MuPrior", "TauPrior", "published_prior", "published_table"]

TABLES = Path(__file__).resolve().parent / "prior_tables"
_FILES = {
    "turner2015": "turner2015_tau2_lognormal.tsv",
    "rhodes2015": "rhodes2015_tau2_logt5.tsv",
    "bartos2021": "bartos_informed_priors_BayesTools0.3.0.tsv",
}
TAU_FAMILIES = ("lognormal_tau2", "logt_tau2", "invgamma_tau", "halfnormal_tau", "halft_tau",
                "uniform_tau")  # fmt: skip
# the effect-size scale each published table is on, in escalc's measure names
SCALES = {"smd": ("SMD",), "logor": ("OR", "PETO"), "logrr": ("RR",), "rd": ("RD",),
          "loghr": ("HR",)}  # fmt: skip


@dataclass(frozen=True)
class TauPrior:
    """A prior for tau, by family (see the module docstring) and parameters.

    ``scale`` names the effect-size scale it was made for (``"logor"``, ``"smd"``, ...;
    None: any), ``source`` where it comes from.

    >>> p = TauPrior("halfnormal_tau", {"scale": 0.5})
    >>> round(float(p.pdf(0.5)), 4)
    0.9679
    """

    family: str
    params: dict = field(default_factory=dict)
    scale: str | None = None
    source: str = ""

    def __post_init__(self):
        if self.family not in TAU_FAMILIES:
            raise ValueError(
                f"unknown tau prior family {self.family!r}; use one of {', '.join(TAU_FAMILIES)}."
            )
        if self.family == "uniform_tau" and not float(self.params.get("upper", 0)) > 0:
            raise ValueError(
                f"a uniform_tau prior needs an upper bound > 0; got {self.params.get('upper')!r}."
            )

    def logpdf(self, tau) -> np.ndarray:
        """log density of tau (array-at-a-time; -inf below 0)."""
        t = np.asarray(tau, dtype=float)
        p = self.params
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = t > 0
            lt = np.log(np.where(pos, t, 1.0))
            if self.family == "lognormal_tau2":  # log tau^2 = 2 log tau, Jacobian 2/tau
                out = stats.norm.logpdf(2 * lt, p["mu"], p["sigma"]) + math.log(2.0) - lt
            elif self.family == "logt_tau2":
                z = (2 * lt - p["location"]) / p["scale"]
                out = stats.t.logpdf(z, p["df"]) - np.log(p["scale"]) + math.log(2.0) - lt
            elif self.family == "invgamma_tau":
                out = stats.invgamma.logpdf(np.where(pos, t, 1.0), p["shape"], scale=p["scale"])
            elif self.family == "halfnormal_tau":
                return np.where(t >= 0, stats.halfnorm.logpdf(t, scale=p["scale"]), -np.inf)
            elif self.family == "uniform_tau":
                inside = (t >= 0) & (t <= p["upper"])
                return np.where(inside, -np.log(p["upper"]) + 0.0 * t, -np.inf)
            else:  # halft_tau
                z = t / p["scale"]
                out = math.log(2.0) + stats.t.logpdf(z, p["df"]) - np.log(p["scale"])
                return np.where(t >= 0, out, -np.inf)
            return np.where(pos, out, -np.inf)

    def pdf(self, tau) -> np.ndarray:
        """Density of tau."""
        return np.exp(self.logpdf(tau))


@dataclass(frozen=True)
class MuPrior:
    """A prior for the mean effect mu: ``"flat"`` (improper), ``"normal"`` (mean, sd) or
    ``"t"`` (location, scale, df)."""

    family: str = "flat"
    params: dict = field(default_factory=dict)
    scale: str | None = None
    source: str = ""

    def __post_init__(self):
        if self.family not in ("flat", "normal", "t"):
            raise ValueError(f"unknown mu prior family {self.family!r}; use flat, normal or t.")

    def logpdf(self, mu) -> np.ndarray:
        m = np.asarray(mu, dtype=float)
        p = self.params
        if self.family == "flat":
            return np.zeros(m.shape)
        if self.family == "normal":
            return stats.norm.logpdf(m, p["mean"], p["sd"])
        return stats.t.logpdf((m - p["location"]) / p["scale"], p["df"]) - math.log(p["scale"])


@cache
def _read(name: str) -> tuple[str, tuple[dict, ...]]:
    path = TABLES / _FILES[name]
    lines = path.read_text(encoding="utf-8").splitlines()
    head = lines[0][2:] if lines[0].startswith("#") else ""
    body = [ln for ln in lines if not ln.startswith("#")]
    rows = tuple(dict(r) for r in csv.DictReader(body, delimiter="\t"))
    return head, rows


def published_table(name: str) -> list[dict]:
    """The rows of a built-in table (``"turner2015"``, ``"rhodes2015"``, ``"bartos2021"``),
    as the file holds them (strings)."""
    if name not in _FILES:
        raise ValueError(f"no published prior table {name!r}; there are {sorted(_FILES)}.")
    return [dict(r) for r in _read(name)[1]]


def _pick(name: str, rows, keys: dict[str, str], columns: dict[str, str]):
    """The one row whose ``columns`` match ``keys`` (case-insensitive), or a clear error."""
    want = {columns[k]: str(v).strip().lower() for k, v in keys.items()}
    hits = [r for r in rows if all(r[c].strip().lower() == v for c, v in want.items())]
    if len(hits) == 1:
        return hits[0]
    for k, col in columns.items():
        if k in keys and not any(r[col].strip().lower() == want[col] for r in rows):
            options = sorted({r[col] for r in rows})
            raise ValueError(f"{name}: no {k} {keys[k]!r}; the table has {options}.")
    raise ValueError(
        f"{name}: {len(hits)} rows match {keys}; give "
        + ", ".join(k for k in columns if k not in keys)
        + " as well."
    )


def published_prior(name: str, **keys):
    """A published prior by name, with the table row chosen by ``keys``.

    * ``published_prior("turner2015", outcome=..., comparison=...)``: the log-normal prior
      on tau^2 for log odds ratios; without keys the marginal one (mu -2.56, sigma 1.74).
    * ``published_prior("rhodes2015", area=..., outcome=..., comparison=...)``: the log-t5
      prior on tau^2 for SMDs; without keys the marginal one (location -3.44, scale 2.59).
    * ``published_prior("bartos2021", scale="smd", subfield="Cochrane")``: Bartoš et al.'s
      ``(TauPrior, MuPrior)`` pair for that scale (smd, logor, logrr, rd, loghr) and
      Cochrane subfield (default: the whole database); None for the one a subfield lacks.

    >>> published_prior("turner2015").params
    {'mu': -2.56, 'sigma': 1.74}
    >>> tau, mu = published_prior("bartos2021", scale="smd")
    >>> tau.family, tau.params, mu.params
    ('invgamma_tau', {'shape': 1.71, 'scale': 0.4}, {'location': 0.0, 'scale': 0.43, 'df': 5.0})
    """
    if name == "turner2015":
        _, rows = _read(name)
        if not keys:
            return TauPrior("lognormal_tau2", {"mu": -2.56, "sigma": 1.74}, "logor",
                            "Turner et al. 2015, marginal (any outcome and comparison)")  # fmt: skip
        r = _pick(name, rows, keys, {"outcome": "outcome_type", "comparison": "comparison_type"})
        return TauPrior("lognormal_tau2", {"mu": float(r["mu"]), "sigma": float(r["sigma"])},
                        "logor", f"Turner et al. 2015, Table IV: {r['outcome_type']}; "
                        f"{r['comparison_type']}")  # fmt: skip
    if name == "rhodes2015":
        _, rows = _read(name)
        if not keys:
            return TauPrior("logt_tau2", {"location": -3.44, "scale": 2.59, "df": 5.0}, "smd",
                            "Rhodes et al. 2015, marginal")  # fmt: skip
        cols = {"area": "medical_area", "outcome": "outcome_type", "comparison": "comparison_type"}
        r = _pick(name, rows, keys, cols)
        params = {"location": float(r["location"]), "scale": float(r["scale"]), "df": 5.0}
        return TauPrior("logt_tau2", params, "smd", f"Rhodes et al. 2015: {r['medical_area']}; "
                        f"{r['outcome_type']}; {r['comparison_type']}")  # fmt: skip
    if name == "bartos2021":
        _, rows = _read(name)
        scale = str(keys.pop("scale", "")).lower()
        subfield = keys.pop("subfield", "Cochrane")
        if keys:
            raise ValueError(f"bartos2021: unknown keys {sorted(keys)}; give scale and subfield.")
        if scale not in SCALES:
            raise ValueError(f"bartos2021: `scale` must be one of {sorted(SCALES)}; got {scale!r}.")
        sel = [r for r in rows if r["type"] == scale]
        taus = [r for r in sel if r["parameter"].startswith("heterogeneity")]
        mus = [r for r in sel if r["parameter"].startswith("effect")]
        if not any(r["subfield"].lower() == str(subfield).lower() for r in sel):
            _pick(name, sel, {"subfield": subfield}, {"subfield": "subfield"})  # names them
        src = f"Bartoš et al. 2021/2023 ({scale}, {subfield})"
        tau = mu = None  # a subfield may have one of the two only (the table has no other)
        hit = [r for r in taus if r["subfield"].lower() == str(subfield).lower()]
        if hit:
            tau = _tau_row(name, hit[0], scale, src)
        hit = [r for r in mus if r["subfield"].lower() == str(subfield).lower()]
        if hit:
            mp = _params(hit[0]["parameters"])
            mu = MuPrior("t", {"location": mp["location"], "scale": mp["scale"], "df": mp["df"]},
                         scale, src)  # fmt: skip
        return tau, mu
    raise ValueError(f"no published prior {name!r}; there are turner2015, rhodes2015, bartos2021.")


def _tau_row(name: str, row: dict, scale: str, src: str) -> TauPrior:
    """Bartoš et al.'s tau prior of one table row (inverse-gamma, or a normal truncated at
    0, i.e. a half-normal)."""
    tp = _params(row["parameters"])
    if row["distribution"] == "invgamma":
        return TauPrior("invgamma_tau", {"shape": tp["shape"], "scale": tp["scale"]}, scale, src)
    if row["distribution"] == "normal" and "lower=0" in row["extra"] and tp["mean"] == 0:
        return TauPrior("halfnormal_tau", {"scale": tp["sd"]}, scale, src)
    raise ValueError(f"{name}: a tau prior of no known family in the table: {row}.")


def _params(text: str) -> dict[str, float]:
    """``"shape=1.73,scale=0.46"`` as ``{"shape": 1.73, "scale": 0.46}``."""
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = float(value)
    return out


def check_scale_name(scale: str | None) -> None:
    """Refuse an effect-size scale name the priors do not know."""
    if scale is not None and scale not in SCALES:
        raise ValueError(
            f"unknown effect-size scale {scale!r}; use one of {sorted(SCALES)} or None."
        )


def check_scale(prior, measure: str | None) -> None:
    """Refuse a published prior made for another effect-size scale than ``measure``."""
    if prior.scale is None or measure in (None, "effect"):
        return
    if str(measure).upper() not in SCALES.get(prior.scale, ()):
        raise ValueError(
            f"the prior ({prior.source or prior.family}) is on the {prior.scale} scale, but the "
            f"effect sizes are {measure!r}; choose a prior for {measure!r} (e.g. turner2015 for "
            "OR, rhodes2015 for SMD, bartos2021 with the matching scale)."
        )
