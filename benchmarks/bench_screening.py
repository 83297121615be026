"""Issue 16's speed target: re-ranking a 5,000-record review after one new label (a refit
on every label so far, then scores for every unlabelled record) in under 1 s on 2 cores.

The review is the first 5,000 records of the shared screening data (several reviews run
together, so the vocabulary is as large as a real 5,000-record review's or larger); the
labels are the true ones of a random 100, 1,000 and 4,000 records. Each screener's refit
and re-rank is timed (median of ``--repeat``), beside ASReview's own model object when the
``asreview`` package is importable (it is not a spatialmeta dependency).

    .venv/bin/python benchmarks/bench_screening.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/screening/reviews.csv.gz"))
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    from spatialmeta.screening import LogisticScreener, NaiveBayesScreener, SVMScreener
    from spatialmeta.tasks.reviews import read_reviews

    rs = read_reviews(a.data)
    rows = np.arange(5000)
    y = rs.label[rows].astype(int)
    text = rs.text()[rows]
    rng = np.random.default_rng(0)
    print(f"5,000 records, {int(y.sum())} included; refit + rank the unlabelled, seconds "
          f"(median of {a.repeat})")  # fmt: skip
    print(f"{'screener':34}{'features':>10}" + "".join(f"{n:>10,}" for n in (100, 1000, 4000)))
    for cls in (SVMScreener, NaiveBayesScreener, LogisticScreener):
        t_feat, X = best_of(lambda cls=cls: cls.features.fit_transform(text), 1)
        cells = []
        for n in (100, 1000, 4000):
            lab = rng.choice(5000, n, replace=False)
            lab[:2] = [np.flatnonzero(y == 1)[0], np.flatnonzero(y == 0)[0]]
            lab = np.unique(lab)
            pool = np.setdiff1d(np.arange(5000), lab)

            def step(cls=cls, X=X, lab=lab, pool=pool):
                s = cls().fit(X[lab], y[lab]).scores(X[pool])
                return np.argsort(-s, kind="stable")

            cells.append(best_of(step, a.repeat)[0])
        print(f"{cls.name:34}{t_feat:10.2f}" + "".join(f"{c:10.3f}" for c in cells))


if __name__ == "__main__":
    main()
