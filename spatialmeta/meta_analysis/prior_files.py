"""Priors as files and as the command line's words: a learned prior saved to JSON and read
back (with the file and field named when it does not parse), and ``--prior`` specs.

A spec is ``NAME:ARGS``:

* ``turner2015`` / ``turner2015:OUTCOME,COMPARISON`` (log OR, Turner et al. 2015);
* ``rhodes2015`` / ``rhodes2015:AREA,OUTCOME,COMPARISON`` (SMD, Rhodes et al. 2015);
* ``bartos2021:SCALE[,SUBFIELD]`` (Bartoš et al.'s tau and mu pair; scale smd, logor,
  logrr, rd, loghr; subfield default Cochrane);
* ``halfnormal:SCALE``, ``halft:SCALE[,DF]``, ``lognormal:MU,SIGMA`` (on log tau^2),
  ``invgamma:SHAPE,SCALE``, ``uniform:UPPER``: a family with its parameters;
* ``learned:PATH``: a prior file written by ``spatialmeta prior learn`` (``.json``), or a
  corpus to learn from now (a folder holding metadat/ and psymetadata/, or a long CSV
  table with ``meta_id``, ``yi``, ``vi`` and optionally ``measure``); a prior learned
  with a ``measure`` covariate is taken at the studies' measure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

from spatialmeta._io import atomic_path
from spatialmeta.meta_analysis.learned import SHARED_PARAMS, Design, LearnedPrior, learn_tau_prior
from spatialmeta.meta_analysis.priors import (
    SCALES,
    TAU_FAMILIES,
    MuPrior,
    TauPrior,
    published_prior,
)

__all__ = ["load_prior", "resolve_prior", "save_prior"]

FORMAT = "spatialmeta-prior"
_SIMPLE = {  # spec name -> (family, parameter names, defaults for the trailing ones)
    "halfnormal": ("halfnormal_tau", ("scale",), {}),
    "halft": ("halft_tau", ("scale", "df"), {"df": 3.0}),
    "lognormal": ("lognormal_tau2", ("mu", "sigma"), {}),
    "invgamma": ("invgamma_tau", ("shape", "scale"), {}),
    "uniform": ("uniform_tau", ("upper",), {}),
}
MEASURE_SCALE = {m: s for s, ms in SCALES.items() for m in ms}  # "OR" -> "logor", ...


def save_prior(prior: LearnedPrior, path: str | Path) -> Path:
    """Write a learned prior as JSON (atomically: a temporary name, then renamed)."""
    doc = {
        "format": FORMAT,
        "version": 1,
        "family": prior.family,
        "scale": prior.scale,
        "design": {"columns": list(prior.design.columns),
                   "levels": [None if lv is None else list(lv) for lv in prior.design.levels]},
        "coef": list(prior.coef),
        "params": prior.params,
        "se": prior.se,
        "n_meta": prior.n_meta,
        "n_single": prior.n_single,
        "loglik": prior.loglik,
        "converged": prior.converged,
        "mu_prior": None if prior.mu_prior is None else {"family": prior.mu_prior.family,
                                                          "params": prior.mu_prior.params},
        "groups": None if prior.group_name is None else {
            "name": prior.group_name, "effects": [list(e) for e in prior.group_effects]},
    }  # fmt: skip
    final = Path(path)
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return final


def _field(doc: dict, name: str, path: Path, kind, what: str):
    if name not in doc:
        raise ValueError(f"prior file '{path}': field {name!r} is missing; it should hold {what}.")
    value = doc[name]
    if kind is not None and not isinstance(value, kind):
        raise ValueError(
            f"prior file '{path}': field {name!r} must be {what}; got {json.dumps(value)[:60]}."
        )
    return value


def load_prior(path: str | Path) -> LearnedPrior:
    """Read a prior file written by :func:`save_prior` (``spatialmeta prior learn``); an
    error names the file and the field that is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file '{path}' does not exist.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"prior file '{path}' does not parse as JSON ({err}); write it with "
            "`spatialmeta prior learn`."
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(
            f"prior file '{path}': field 'format' must be {FORMAT!r}; this is not a prior "
            "written by `spatialmeta prior learn`."
        )
    family = _field(doc, "family", path, str, "a tau prior family")
    if family not in TAU_FAMILIES or family == "uniform_tau":
        raise ValueError(f"prior file '{path}': field 'family' is {family!r}; use one of "
                         f"{', '.join(f for f in TAU_FAMILIES if f != 'uniform_tau')}.")  # fmt: skip
    scale = doc.get("scale")
    if scale is not None and scale not in SCALES:
        raise ValueError(f"prior file '{path}': field 'scale' is {scale!r}; use one of "
                         f"{sorted(SCALES)} or null.")  # fmt: skip
    design = _field(doc, "design", path, dict, "an object with columns and levels")
    cols = _field(design, "columns", path, list, "a list of covariate names")
    levels = _field(design, "levels", path, list, "a list (null or the levels) per column")
    if len(cols) != len(levels):
        raise ValueError(f"prior file '{path}': field 'design' has {len(cols)} columns but "
                         f"{len(levels)} level lists.")  # fmt: skip
    d = Design(tuple(map(str, cols)), tuple(None if lv is None else tuple(map(str, lv))
                                            for lv in levels))  # fmt: skip
    coef = _field(doc, "coef", path, list, "a list of numbers")
    if not all(isinstance(c, int | float) and math.isfinite(c) for c in coef):
        raise ValueError(f"prior file '{path}': field 'coef' must be a list of finite numbers.")
    need = len(d.names) + len(SHARED_PARAMS[family])
    mu = doc.get("mu_prior")
    if mu is not None:
        need += len(d.names) + 1
    groups = doc.get("groups")
    gname, effects = None, ()
    if groups is not None:
        gname = str(_field(groups, "name", path, str, "the groups' name"))
        raw = _field(groups, "effects", path, list, "a list of [group, mean, sd]")
        ok = all(isinstance(e, list) and len(e) == 3 and all(isinstance(x, int | float)
                 for x in e[1:]) for e in raw)  # fmt: skip
        if not ok:
            raise ValueError(f"prior file '{path}': field 'effects' must hold [group, mean, sd] "
                             "triples.")  # fmt: skip
        effects = tuple((str(g), float(m), float(sd)) for g, m, sd in raw)
        need += 1  # omega
    if len(coef) != need:
        raise ValueError(f"prior file '{path}': field 'coef' has {len(coef)} numbers; a "
                         f"{family} prior on {list(d.names)} needs {need}.")  # fmt: skip
    mu_prior = None
    if mu is not None:
        mp = _field(mu, "params", path, dict, "the mu prior's parameters")
        mu_prior = MuPrior("normal", {k: float(v) for k, v in mp.items()}, scale, "learned")
    n_meta = _field(doc, "n_meta", path, int, "the corpus size (an integer)")
    lp = LearnedPrior(None, dict(doc.get("params", {})), dict(doc.get("se", {})),
                      float(doc.get("loglik", float("nan"))), n_meta,
                      int(doc.get("n_single", 0)), bool(doc.get("converged", True)), family,
                      scale, d, tuple(float(c) for c in coef), mu_prior, None, gname,
                      effects)  # fmt: skip
    return dataclasses.replace(lp, prior=lp.baseline_prior())


def _numbers(name: str, args: list[str], spec: str) -> list[float]:
    try:
        return [float(a) for a in args]
    except ValueError:
        raise ValueError(f"`prior` {spec!r}: {name}'s parameters must be numbers.") from None


def _learn_from(path: Path, spec: str) -> LearnedPrior:
    import pandas as pd

    from spatialmeta.meta_analysis.corpus import Corpus, load_corpus

    if path.is_dir():
        corpus = load_corpus(path)
    elif path.suffix.lower() == ".csv":
        corpus = Corpus.from_table(pd.read_csv(path))
    else:
        raise ValueError(f"`prior` {spec!r}: '{path}' is neither a prior file (.json), a corpus "
                         "table (.csv) nor a corpus folder (metadat/, psymetadata/).")  # fmt: skip
    return learn_corpus(corpus)


POOLING = ("partial", "separate", "none")
UNIT_MEASURES = ("MD",)  # effect sizes in the outcome's units: no tau prior across outcomes


def learn_corpus(corpus, *, family: str = "lognormal_tau2", pooling: str = "partial"):
    """Learn a tau prior from a :class:`~spatialmeta.meta_analysis.corpus.Corpus`. With more
    than one measure in it, ``pooling`` says how the measures share: ``"partial"`` (a
    random effect per measure on the location, learned: few analyses of a measure borrow
    from the others), ``"separate"`` (a free location per measure, one shared spread) or
    ``"none"`` (one prior for all)."""
    import pandas as pd

    if pooling not in POOLING:
        raise ValueError(f"`pooling` must be one of {', '.join(POOLING)}; got {pooling!r}.")
    t = corpus.table
    unit = t.measure.isin(UNIT_MEASURES)
    if unit.any() and not unit.all():  # mixed with dimensionless measures: left out, said
        warnings.warn(
            f"learn_corpus: {t[unit].meta_id.nunique()} meta-analyses of raw mean differences "
            "(MD) left out: their tau is in each outcome's own units, so it does not carry "
            "across outcomes (learn from an MD-only corpus of one outcome instead).",
            UserWarning,
            stacklevel=2,
        )
        corpus = type(corpus)(t[~unit].reset_index(drop=True), corpus.skipped)
    ids, yi, vi = corpus.padded()
    measure = corpus.table.groupby("meta_id", sort=False).measure.first().loc[ids].to_numpy()
    if len(set(measure)) == 1:
        scale = MEASURE_SCALE.get(str(measure[0]).upper())
        return learn_tau_prior(yi, vi, family=family, scale=scale)
    if pooling == "partial":
        return learn_tau_prior(yi, vi, family=family, groups=pd.Series(measure, name="measure"))
    cov = pd.DataFrame({"measure": measure}) if pooling == "separate" else None
    return learn_tau_prior(yi, vi, family=family, covariates=cov)


def resolve_prior(spec: str, measure: str | None = None) -> tuple[TauPrior, MuPrior | None]:
    """``(tau prior, mu prior or None)`` of a ``--prior`` spec (see the module docstring)
    for studies of ``measure``."""
    name, _, rest = str(spec).partition(":")
    name = name.strip().lower()
    args = [a.strip() for a in rest.split(",")] if rest.strip() else []
    if name == "turner2015":
        keys = dict(zip(("outcome", "comparison"), args, strict=False))
        return published_prior("turner2015", **keys), None
    if name == "rhodes2015":
        keys = dict(zip(("area", "outcome", "comparison"), args, strict=False))
        return published_prior("rhodes2015", **keys), None
    if name == "bartos2021":
        if not args:
            want = MEASURE_SCALE.get(str(measure).upper()) if measure else None
            if want is None:
                raise ValueError(f"`prior` {spec!r}: give the scale, e.g. bartos2021:smd "
                                 f"(one of {sorted(SCALES)}).")  # fmt: skip
            args = [want]
        keys = {"scale": args[0]} | ({"subfield": args[1]} if len(args) > 1 else {})
        tau, mu = published_prior("bartos2021", **keys)
        if tau is None:
            raise ValueError(f"`prior` {spec!r}: Bartoš et al. give no tau prior there.")
        return tau, mu
    if name in _SIMPLE:
        family, names, defaults = _SIMPLE[name]
        vals = _numbers(name, args, spec)
        if not len(names) - len(defaults) <= len(vals) <= len(names):
            raise ValueError(f"`prior` {spec!r}: {name} takes {', '.join(n.upper() for n in names)}"
                             f" (e.g. {name}:{','.join('0.5' for _ in names)}).")  # fmt: skip
        params = dict(defaults) | dict(zip(names, vals, strict=False))
        bad = [k for k, v in params.items() if k != "mu" and not v > 0]
        if bad:
            raise ValueError(f"`prior` {spec!r}: {bad[0]} must be > 0.")
        return TauPrior(family, params, None, f"{name} prior {params}"), None
    if name == "learned":
        if not rest.strip():
            raise ValueError(
                f"`prior` {spec!r}: give a path, learned:prior.json or learned:CORPUS."
            )
        path = Path(rest.strip())
        if path.suffix.lower() == ".json":
            learned = load_prior(path)
        elif not path.exists():
            raise FileNotFoundError(f"`prior` {spec!r}: '{path}' does not exist.")
        else:
            learned = _learn_from(path, spec)
        if learned.group_name == "measure" and measure is None:
            warnings.warn(
                f"`prior` {spec!r}: the studies' measure is not known (no `measure`), so the "
                "prior for a new measure is used (the population prior of the partial pooling).",
                UserWarning,
                stacklevel=2,
            )
            return learned.prior, learned.mu_prior
        if "measure" in learned.design.columns or learned.group_name == "measure":
            if measure is None:
                raise ValueError(f"`prior` {spec!r}: the prior depends on the measure; give "
                                 "`measure` (the studies' effect-size measure).")  # fmt: skip
            return learned.prior_for(measure=str(measure).upper()), learned.mu_prior
        if learned.design.columns:
            raise ValueError(f"`prior` {spec!r}: the prior depends on {list(learned.design.columns)};"
                             " the command line takes priors on the measure only.")  # fmt: skip
        return learned.prior, learned.mu_prior
    raise ValueError(
        f"`prior` {spec!r}: unknown prior {name!r}; use turner2015, rhodes2015, bartos2021, "
        "halfnormal, halft, lognormal, invgamma, uniform or learned:PATH."
    )
