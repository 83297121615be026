"""Issue 14's real-corpus evaluation: heterogeneity priors learned from the other
meta-analyses, leave one meta-analysis out, against published priors and a flat prior.

The corpus is the shared metadat/psymetadata one (``load_corpus``: 51 plain meta-analyses
on seven measures; the 3 raw mean differences are left out unless ``--keep-md``: their
tau is in each outcome's own units, which is why Turner's and Rhodes's priors are for
dimensionless measures only). For each meta-analysis j in turn, priors for tau are learned from the
other 50 only:

  learned, measure covariate   log tau^2 ~ N(a + b[measure], sigma^2) on all 50 (the
                               measure's own location, one shared spread; --family
                               for another family, its location by measure)
  learned, partial pooling     log tau^2 ~ N(a + b[measure], sigma^2), b ~ N(0, omega^2)
                               integrated out, omega learned: a measure with few analyses
                               borrows from the others
  learned, same measure        log tau^2 ~ N(mu, sigma^2) on the others of j's measure
                               (2 to 17 analyses: with 2 or 3 the spread collapses and
                               the held-out density can be -inf)

and compared with the published priors for j's measure (Turner et al. 2015's marginal and
Bartoš et al.'s Cochrane prior for OR, Bartoš's for RR, Rhodes et al. 2015's marginal and
Bartoš's for SMD) and a flat prior, tau ~ U(0, U) with U twice the largest REML tau among
the other analyses of the measure (proper, so that its evidence is defined).

1. Log predictive density of j's data: log p(y_j | prior) with mu integrated out under a
   flat prior (the restricted likelihood integrated over the tau prior: the one improper
   constant is the same for every prior, so differences are log Bayes factors between
   priors). Printed per measure as the mean difference from the flat prior.
2. Three studies: j cut to 3 random studies (``--cuts`` draws; analyses with at least 6
   studies), 95 % intervals for mu by REML + z, REML + Knapp-Hartung and Bayes under each
   prior (flat mu); coverage of j's full-data REML estimate and median width.

    .venv/bin/python benchmarks/eval_corpus_priors.py            # about 3 minutes
    .venv/bin/python benchmarks/eval_corpus_priors.py --cuts 20 --seed 1
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def published(measure: str) -> dict:
    from spatialmeta.meta_analysis import published_prior

    out = {}
    if measure == "OR":
        out["Turner 2015 (marginal)"] = published_prior("turner2015")
        out["Bartos 2021 (logor)"] = published_prior("bartos2021", scale="logor")[0]
    elif measure == "RR":
        out["Bartos 2021 (logrr)"] = published_prior("bartos2021", scale="logrr")[0]
    elif measure == "SMD":
        out["Rhodes 2015 (marginal)"] = published_prior("rhodes2015")
        out["Bartos 2021 (smd)"] = published_prior("bartos2021", scale="smd")[0]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "meta_analysis"),
                   help="folder holding metadat/ and psymetadata/")  # fmt: skip
    p.add_argument("--cuts", type=int, default=50, help="random 3-study cuts per analysis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the per-analysis table here (CSV)")
    p.add_argument("--keep-md", action="store_true",
                   help="keep raw mean differences (MD): their tau is in the outcome's units, "
                   "so by default they are left out of every prior and of the scores")  # fmt: skip
    p.add_argument("--family", default="lognormal_tau2",
                   help="family of the learned priors (lognormal_tau2, logt_tau2, "
                   "invgamma_tau, halfnormal_tau, halft_tau)")  # fmt: skip
    args = p.parse_args(argv)
    from tqdm.auto import tqdm

    from spatialmeta.meta_analysis import bayes_pool, learn_tau_prior, load_corpus, pool
    from spatialmeta.meta_analysis.priors import TauPrior

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    corpus = load_corpus(args.data)
    if not args.keep_md:  # a unit-dependent measure: no tau prior carries across outcomes
        corpus = type(corpus)(corpus.table[corpus.table.measure != "MD"].reset_index(drop=True))
    ids, yi, vi = corpus.padded()
    first = corpus.table.groupby("meta_id", sort=False).measure.first()
    measure = first.loc[ids].to_numpy()
    k = np.isfinite(yi).sum(-1)
    full = pool(yi, vi, method="REML")
    mu_full, tau_full = np.asarray(full.beta), np.sqrt(np.asarray(full.tau2))
    rng = np.random.default_rng(args.seed)
    rows, cover = [], []
    for j in tqdm(range(len(ids)), desc="leave one out", unit="meta-analysis"):
        rest = np.arange(len(ids)) != j
        same = rest & (measure == measure[j])
        cov = learn_tau_prior(yi[rest], vi[rest], family=args.family,
                              covariates=pd.DataFrame({"measure": measure[rest]}))  # fmt: skip
        priors = {
            "flat U(0, U)": TauPrior("uniform_tau", {"upper": 2 * float(tau_full[same].max())}),
            "learned, measure covariate": cov.prior_for(measure=measure[j]),
            "learned, partial pooling": learn_tau_prior(
                yi[rest],
                vi[rest],
                family=args.family,
                groups=pd.Series(measure[rest], name="measure"),
            ).prior_for(measure=measure[j]),
            "learned, same measure": learn_tau_prior(yi[same], vi[same], family=args.family).prior,
            **published(measure[j]),
        }
        y, v = yi[j, : k[j]], vi[j, : k[j]]
        row = {"meta_id": ids[j], "measure": measure[j], "k": int(k[j])}
        for name, prior in priors.items():
            row[name] = float(bayes_pool(y, v, tau_prior=prior).log_evidence)
        rows.append(row)
        if k[j] < 6:
            continue
        pick = np.argsort(rng.random((args.cuts, k[j])), axis=-1)[:, :3]
        ys, vs = y[pick], v[pick]
        truth = mu_full[j]
        ints = {}
        for name, kw in (("REML + z", {}), ("REML + Knapp-Hartung", {"test": "knha"})):
            r = pool(ys, vs, method="REML", **kw)
            ints[name] = (np.asarray(r.ci_lb), np.asarray(r.ci_ub))
        for name, prior in priors.items():
            r = bayes_pool(ys, vs, tau_prior=prior)
            ints[f"Bayes, {name}"] = (r.mu_lb, r.mu_ub)
        for name, (lo, hi) in ints.items():
            cover.append({"meta_id": ids[j], "measure": measure[j], "method": name,
                          "covered": float(np.mean((lo <= truth) & (hi >= truth))),
                          "width": float(np.median(hi - lo))})  # fmt: skip
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"{len(ids)} meta-analyses, leave-one-out in {time.perf_counter() - t0:.0f} s\n")
    print("Mean log predictive density of the held-out analysis, minus the flat prior's")
    print("(positive: the prior predicts the held-out data better than flat)\n")
    names = [c for c in table.columns if c not in ("meta_id", "measure", "k", "flat U(0, U)")]
    for m, part in table.groupby("measure"):
        print(f"{m} ({len(part)} meta-analyses)")
        for name in names:
            d = (part[name] - part["flat U(0, U)"]).dropna()
            if len(d):
                print(f"  {name:30s} {d.mean():+8.3f}   (better than flat in {int((d > 0).sum())}"
                      f" of {len(d)})")  # fmt: skip
    d = table["learned, measure covariate"] - table["flat U(0, U)"]
    print(f"all ({len(table)})\n  {'learned, measure covariate':30s} {d.mean():+8.3f}")
    for name in ("learned, partial pooling", "learned, same measure"):
        d = table[name] - table["flat U(0, U)"]
        print(f"  {name:30s} {d.mean():+8.3f}")
    print("\nPaired: the learned prior (partial pooling, `prior learn`'s default) minus each")
    print("published prior for the same held-out analyses (mean difference in log predictive")
    print("density, its standard error over analyses, and in how many the learned one is higher)")
    learned = "learned, partial pooling"
    for m, part in table.groupby("measure"):
        for name in [c for c in names if not c.startswith("learned")]:
            d = (part[learned] - part[name]).dropna()
            if len(d) >= 2:
                se = d.std(ddof=1) / np.sqrt(len(d))
                print(f"  {m:5s} vs {name:26s} {d.mean():+7.3f} (SE {se:.3f}; higher in "
                      f"{int((d > 0).sum())} of {len(d)})")  # fmt: skip
    if cover:
        c = pd.DataFrame(cover)
        print(f"\nThree random studies of each analysis with k >= 6 ({c.meta_id.nunique()} analyses,"
              f" {args.cuts} cuts each): 95 % intervals for mu vs the full-data REML estimate\n")  # fmt: skip
        print(f"{'':34s}{'all':>16s}" + "".join(f"{m:>16s}" for m in ("OR", "RR", "SMD")))
        order = list(dict.fromkeys(c.method))
        for name in order:
            part = c[c.method == name]
            cells = []
            for m in (None, "OR", "RR", "SMD"):
                q = part if m is None else part[part.measure == m]
                cells.append(f"{100 * q.covered.mean():6.1f}% {q.width.median():7.3f}"
                             if len(q) else f"{'':>15s}")  # fmt: skip
            print(f"{name:34s}" + "".join(f"{x:>16s}" for x in cells))
        print("\n(each cell: coverage, then the median over analyses of the median width)")


if __name__ == "__main__":
    main()
