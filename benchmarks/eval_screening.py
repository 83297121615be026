"""Issue 16's screening harness on the 22 shared reviews: every screener from the same
prior draws (one included + one excluded record per seed), every record screened, WSS@95,
RRF@10 and ATD per run, and the stopping test's record (does stopping where it says "95 %
recall reached with 95 % confidence" really reach 95 %?).

The methods so far are ASReview's own models, replicated (their screening orders equal
ASReview 3.0.8's record for record; tests/screening/test_screeners.py): its default (ELAS
u4, linear SVM) and naive Bayes (ELAS u3). ``--batch 1`` refits after every label as
ASReview does; the default ``auto`` refits after each of the first 100 labels, then every
1 % of the review (about 10x faster; a small handicap for every method alike).

    .venv/bin/python benchmarks/eval_screening.py --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/eval_screening.py --reviews Cohen_2006_ADHD --batch 1 --plot recall.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/screening/reviews.csv.gz"))
    p.add_argument("--reviews", nargs="*", help="review ids (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--batch", default="auto", help="records between refits: 1 or auto")
    p.add_argument("--out", help="write the per-run table here (CSV)")
    p.add_argument("--plot", help="recall curves of the first review (PNG/SVG)")
    a = p.parse_args(argv)
    from spatialmeta.screening import NaiveBayesScreener, SVMScreener
    from spatialmeta.screening.harness import plot_recall, run_simulations
    from spatialmeta.tasks.reviews import read_reviews

    tasks = read_reviews(a.data)
    screeners = {"asreview_default": SVMScreener, "asreview_nb": NaiveBayesScreener}
    batch = a.batch if a.batch == "auto" else int(a.batch)
    t = time.perf_counter()
    runs = run_simulations(tasks, screeners, reviews=a.reviews, seeds=a.seeds, batch=batch,
                           progress=True)  # fmt: skip
    print(f"{len(runs.table)} runs in {time.perf_counter() - t:.0f} s")
    pd.set_option("display.width", 200)
    per = runs.table.groupby(["review", "method"])[["wss", "rrf", "atd"]].mean().unstack("method")
    print(per.round(3).to_string())
    print(runs.summary().round(3).to_string())
    if a.out:
        runs.table.to_csv(a.out, index=False)
    if a.plot:
        plot_recall(runs, str(runs.table.review.iloc[0]), a.plot)


if __name__ == "__main__":
    main()
