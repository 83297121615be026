"""The simulation harness: its table against the pieces it runs, leave-one-review-out
meta fitting, and the recall plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmeta.screening import NaiveBayesScreener, screening_metrics, simulate, stop_point
from spatialmeta.screening.harness import SimulationRuns, plot_recall, run_simulations
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


def _runs(rows):
    return SimulationRuns(pd.DataFrame(rows, columns=["review", "method", "seed", "wss"]))


def test_versus_pairs_by_seed_and_counts_reviews_ahead_behind_and_tied():
    # three reviews, two seeds: "a" ahead on r1 by 0.1 and 0.3 (mean 0.2, se 0.1), ahead
    # on r2 by 0.05, behind on r3 by 0.4; then r4 exactly tied.
    rows = []
    for review, seed, a, b in [("r1", 0, 0.5, 0.4), ("r1", 1, 0.7, 0.4), ("r2", 0, 0.3, 0.25),
                               ("r2", 1, 0.3, 0.25), ("r3", 0, 0.1, 0.5), ("r3", 1, 0.2, 0.6),
                               ("r4", 0, 0.2, 0.2), ("r4", 1, 0.3, 0.3)]:  # fmt: skip
        rows += [(review, "a", seed, a), (review, "b", seed, b)]
    c = _runs(rows).versus("a", "b")
    t = c.table
    np.testing.assert_allclose(t["diff"].loc[["r1", "r2", "r3", "r4"]], [0.2, 0.05, -0.4, 0.0],
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(t.loc["r1", "se"], 0.1, rtol=1e-12)  # std(0.1, 0.3) / sqrt(2)
    np.testing.assert_allclose(t.loc["r1", ["a", "b"]].astype(float), [0.6, 0.4])
    assert (c.ahead, c.behind, c.tied) == (2, 1, 1)
    # sign test: 2 of 3 non-tied reviews ahead, two-sided exact p = 1 (every outcome as or
    # less likely than 2-of-3 under p = 1/2: 0, 1, 2, 3 successes each have prob >= 1/8)
    assert c.sign_p == pytest.approx(1.0)
    # Wilcoxon on (0.2, 0.05, -0.4): ranks 2, 1, 3; W+ = 3 = W-, exact two-sided p = 1
    assert c.wilcoxon_p == pytest.approx(1.0)
    back = _runs(rows).versus("b", "a")
    np.testing.assert_allclose(back.table["diff"], -t["diff"], atol=1e-12)
    assert (back.ahead, back.behind, back.tied) == (1, 2, 1)
    text = c.text()
    assert "ahead on 2 of 4 reviews, behind on 1, tied on 1" in text and "r3" in text


def test_versus_exact_tests_on_a_clean_sweep():
    rows = []
    for i, d in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        rows += [(f"r{i}", "a", 0, 0.5 + d), (f"r{i}", "b", 0, 0.5)]
    c = _runs(rows).versus("a", "b")
    # 5 of 5 ahead: sign test two-sided 2 / 2**5; Wilcoxon W- = 0, exact two-sided 2 / 2**5
    assert c.sign_p == pytest.approx(2 / 32) and c.wilcoxon_p == pytest.approx(2 / 32)
    assert c.table["se"].isna().all()  # one seed: no standard error


def test_versus_refuses_unpaired_runs_and_unknown_methods():
    rows = [("r1", "a", 0, 0.5), ("r1", "b", 0, 0.4), ("r1", "a", 1, 0.6)]
    with pytest.raises(ValueError, match="review 'r1', seed 1 was run by only one of 'a' and 'b'"):
        _runs(rows).versus("a", "b")
    with pytest.raises(ValueError, match="no runs of method 'c'; methods run: a, b"):
        _runs(rows).versus("c", "b")
    with pytest.raises(ValueError, match="its own reference"):
        _runs(rows[:2]).versus("a", "a")
    with pytest.raises(ValueError, match="`metric` 'review' is not a numeric column"):
        _runs(rows[:2]).versus("a", "b", metric="review")
