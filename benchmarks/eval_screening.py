"""Issue 16's screening harness on the 22 shared reviews: every screener from the same
prior draws (one included + one excluded record per seed), every record screened, WSS@95,
RRF@10 and ATD per run, and the stopping test's record (does stopping where it says "95 %
recall reached with 95 % confidence" really reach 95 %?).

Methods (``--methods``): ASReview's own models, replicated (their screening orders equal
ASReview 3.0.8's record for record; tests/screening/test_screeners.py): its default (ELAS
u4, linear SVM) and naive Bayes (ELAS u3); and the meta-learned screeners of
spatialmeta.screening.meta, each meta-trained on the 21 other reviews before it screens
one (leave one review out; the heads of a fold share one meta-training): ``weighted_svm``
(ASReview's SVM on TF-IDF reweighted by term weights learned across reviews),
``protonet``, ``anil``, ``matching``, and ``policy_svm`` (ASReview's SVM on a phase
schedule of its settings chosen by simulating the candidates on the 21 other reviews:
spatialmeta.screening.policy; every review is simulated once under every candidate, first,
and each fold reads only its training reviews' rows of that table; ``--policy-table``
keeps it as CSV). ``--batch 1`` refits after every label as ASReview
does; the default ``auto`` refits after each of the first 100 labels, then every 1 % of
the review (about 10x faster; a small handicap for every method alike). ``--procs``
screens that many reviews at once.

Every method is then set against ``--versus`` (ASReview's default when it ran), review by
review and paired by prior draw: each review's mean difference over the seeds with its
standard error, the count of reviews ahead, behind and tied, and a sign test and a
Wilcoxon signed-rank test over the reviews. ``--runs`` reads an earlier ``--out`` table
and prints the same report without simulating again.

    .venv/bin/python benchmarks/eval_screening.py --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/eval_screening.py --runs runs.csv --versus asreview_default
    .venv/bin/python benchmarks/eval_screening.py --methods asreview_default weighted_svm protonet anil --procs 2
    .venv/bin/python benchmarks/eval_screening.py --reviews Cohen_2006_ADHD --batch 1 --plot recall.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _screeners(batch="auto"):
    from spatialmeta.screening import NaiveBayesScreener, SVMScreener
    from spatialmeta.screening.meta import (
        ANILScreener,
        EncoderConfig,
        MatchingScreener,
        ProtoNetScreener,
        WeightedSVMScreener,
    )
    from spatialmeta.screening.policy import PolicyScreener

    terms = EncoderConfig(kind="terms")
    table = _ARGS.get("policy_table")
    return {"asreview_default": SVMScreener, "asreview_nb": NaiveBayesScreener,
            "weighted_svm": lambda: WeightedSVMScreener(terms),
            "protonet": lambda: ProtoNetScreener(terms), "anil": lambda: ANILScreener(terms),
            "matching": lambda: MatchingScreener(terms),
            # every row a fold reads is in the table already (simulated at the same batch),
            # so a fold simulates nothing: one process, no progress bar, inside a worker
            "policy_svm": lambda: PolicyScreener(table=table, batch=batch, n_jobs=1,
                                                 progress=False)}  # fmt: skip


_ARGS = {}


def _one_review(review):
    """Every method on one review (a worker of ``--procs``)."""
    import torch

    from spatialmeta.screening.harness import run_simulations

    torch.set_num_threads(1)
    a, tasks, batch = _worker_inputs()
    every = _screeners(batch)
    return run_simulations(tasks, {m: every[m] for m in a.methods}, reviews=[review],
                           seeds=a.seeds, batch=batch, mix=a.mix)  # fmt: skip


def _worker_inputs():
    """A worker's arguments, the reviews (read once per worker) and the refit batch."""
    from spatialmeta.tasks.reviews import read_reviews

    a = _ARGS["a"]
    if "tasks" not in _ARGS:
        _ARGS["tasks"] = read_reviews(a.data)
    return a, _ARGS["tasks"], a.batch if a.batch == "auto" else int(a.batch)


def _init(a, table=None):
    _ARGS["a"] = a
    _ARGS["policy_table"] = table


def _policy_rows(review):
    """Every candidate policy simulated on one review (a worker of ``--procs``)."""
    from spatialmeta.screening.policy import policy_table

    _, tasks, batch = _worker_inputs()
    return policy_table(tasks, [review], batch=batch)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/screening/reviews.csv.gz"))
    p.add_argument("--reviews", nargs="*", help="review ids (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--batch", default="auto", help="records between refits: 1 or auto")
    p.add_argument(
        "--methods",
        nargs="*",
        default=["asreview_default", "asreview_nb"],
        help="screeners to run (see above)",
    )
    p.add_argument("--procs", type=int, default=1, help="reviews screened at once")
    p.add_argument("--mix", type=float, default=0.0, help="share of uncertainty queries")
    p.add_argument("--out", help="write the per-run table here (CSV)")
    p.add_argument("--plot", help="recall curves of the first review (PNG/SVG)")
    p.add_argument("--policy-table", help="policy_svm's simulations of every review (CSV): "
                   "read if it exists, else written")  # fmt: skip
    p.add_argument("--versus", help="the reference every other method is compared with, "
                   "review by review (default: asreview_default when it ran)")  # fmt: skip
    p.add_argument("--runs", help="report an earlier --out table instead of simulating")
    a = p.parse_args(argv)
    if a.runs:
        from spatialmeta.screening.harness import SimulationRuns

        _report(SimulationRuns(pd.read_csv(a.runs)), a.versus, p)
        return
    from multiprocessing import Pool

    from tqdm import tqdm

    from spatialmeta.screening.harness import SimulationRuns, plot_recall
    from spatialmeta.tasks.reviews import read_reviews

    unknown = set(a.methods) - set(_screeners())
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; known: {sorted(_screeners())}")
    if a.versus and a.versus not in a.methods:
        p.error(f"--versus {a.versus!r} is not among --methods {a.methods}")
    reviews = a.reviews or [str(r) for r in read_reviews(a.data).review_ids]
    t = time.perf_counter()
    _init(a)
    table = None
    if "policy_svm" in a.methods:
        if a.policy_table and Path(a.policy_table).exists():
            from spatialmeta.screening.policy import read_policy_table

            table = read_policy_table(a.policy_table)
        else:
            with Pool(a.procs, initializer=_init, initargs=(a,)) as pool:
                table = pd.concat(list(tqdm(pool.imap(_policy_rows, reviews), total=len(reviews),
                                            desc="policy simulations", unit="review")))  # fmt: skip
            if a.policy_table:
                table.to_csv(a.policy_table, index=False)
    with Pool(a.procs, initializer=_init, initargs=(a, table)) as pool:
        parts = list(tqdm(pool.imap(_one_review, reviews), total=len(reviews),
                          desc="reviews", unit="review"))  # fmt: skip
    runs = SimulationRuns(pd.concat([r.table for r in parts], ignore_index=True),
                          {k: v for r in parts for k, v in r.curves.items()})  # fmt: skip
    print(f"{len(runs.table)} runs in {time.perf_counter() - t:.0f} s")
    if a.out:
        runs.table.to_csv(a.out, index=False)
    _report(runs, a.versus, p)
    if a.plot:
        plot_recall(runs, str(runs.table.review.iloc[0]), a.plot)


def _report(runs, versus, parser) -> None:
    """Per-review means, the summary, and every method against the reference."""
    pd.set_option("display.width", 200)
    per = runs.table.groupby(["review", "method"])[["wss", "rrf", "atd"]].mean().unstack("method")
    print(per.round(3).to_string())
    print(runs.summary().round(3).to_string())
    methods = list(dict.fromkeys(runs.table["method"]))
    ref = versus or ("asreview_default" if "asreview_default" in methods else None)
    if ref and ref not in methods:
        parser.error(f"--versus {ref!r} did not run; methods run: {', '.join(methods)}")
    for m in [m for m in methods if ref and m != ref]:
        for metric in ("wss", "rrf"):
            print("\n" + runs.versus(m, ref, metric).text())


if __name__ == "__main__":
    main()
