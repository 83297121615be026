"""The simulation harness: its table against the pieces it runs, leave-one-review-out
meta fitting, and the recall plot."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmeta.screening import NaiveBayesScreener, screening_metrics, simulate, stop_point
from spatialmeta.screening.harness import plot_recall, run_simulations
from spatialmeta.tasks.reviews import read_reviews
from tests.conftest import shared_path


class _Spy(NaiveBayesScreener):
    """A naive Bayes screener that records the reviews it was meta-fitted on."""

    seen: list = []

    def meta_fit(self, tasks, reviews):
        _Spy.seen.append(sorted(map(str, reviews)))


@pytest.fixture(scope="module")
def tasks():
    rs = read_reviews(shared_path("screening", "reviews.csv.gz"))
    return rs


def test_runs_equal_their_pieces_and_meta_fit_leaves_the_review_out(tasks, tmp_path):
    review = "SYNERGY_Sep_2021"
    _Spy.seen = []
    runs = run_simulations(tasks, {"spy": _Spy}, reviews=[review], seeds=(0, 3))
    assert _Spy.seen == [sorted(str(r) for r in tasks.review_ids if r != review)]
    t = runs.table
    assert list(t.seed) == [0, 3] and (t.method == "spy").all()
    rows = tasks.rows(review)
    y = tasks.label[rows].astype(int)
    X = NaiveBayesScreener.features.fit_transform(tasks.text()[rows])
    for _, r in t.iterrows():
        prior = np.searchsorted(rows, tasks.support(review, seed=int(r.seed)))
        order = simulate(NaiveBayesScreener(), X, y, prior)
        m = screening_metrics(order, y, n_prior=2)
        assert r.wss == pytest.approx(float(m.wss[0])) and r.rrf == pytest.approx(float(m.rrf[0]))
        assert r.n == 269 and r.relevant == 39
        seq = y[order[2:]]
        stop = stop_point(seq, seq.size)
        assert r.stop_at == stop and r.reached == (seq[:stop].sum() >= np.ceil(0.95 * 39))
        np.testing.assert_allclose(runs.curves[(review, "spy", int(r.seed))], m.recall_curve[0])
    s = runs.summary()
    assert s.loc["spy", "runs"] == 2 and s.loc["spy", "reviews_best_wss"] == 1
    plot_recall(runs, review, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no runs of review 'nope'"):
        plot_recall(runs, "nope", tmp_path / "x.png")
