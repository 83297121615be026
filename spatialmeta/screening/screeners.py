"""Screeners: models that rank a review's unlabelled records from its labelled ones.

A screener has two hooks: ``fit(X, y)`` on the labelled records (``y`` 1/0) and
``scores(X)`` (higher: more likely relevant) for the rest. The active loop
(:mod:`~spatialmeta.screening.simulate`) calls them after each label (or batch of labels).
The per-review baselines here are ASReview's model family, by scikit-learn:

* :class:`SVMScreener`: ASReview's default model (``elas_u4``: a linear SVM, ``C =
  0.11``, squared hinge, ranked by the decision function, with its "balanced" sample
  weights: the excluded records' total weight ``1 / ratio`` of the included ones',
  ``ratio = 9.8``), the reference every learned screener is judged against;
* :class:`NaiveBayesScreener`: multinomial naive Bayes (``elas_u3``: ``alpha = 3.822``,
  balance ratio 1.2), ASReview's earlier default;
* :class:`LogisticScreener`: L2 logistic regression with the same balancing.

Class imbalance is handled explicitly in all of them by those sample weights: the few
included records weigh as much as ``1 / ratio`` of the many excluded ones together.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.svm import LinearSVC

from spatialmeta.screening.features import TextFeatures

__all__ = ["Screener", "SVMScreener", "NaiveBayesScreener", "LogisticScreener", "balanced_weights"]


def balanced_weights(y: np.ndarray, ratio: float) -> np.ndarray:
    """ASReview's "balanced" sample weights: included records weight 1, excluded ones
    ``n_included / (ratio * n_excluded)`` (the excluded total ``1 / ratio`` of the
    included total), then all scaled to sum to the number of records (which sets the
    regularization's effective strength, so it matters for the SVM's ``C``)."""
    y = np.asarray(y)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("a screener needs at least one included and one excluded labelled "
                         f"record; got {n1} included and {n0} excluded.")  # fmt: skip
    w = np.where(y == 1, 1.0, n1 / (ratio * n0))
    return w * (y.size / w.sum())


class Screener:
    """Base of the screeners: ``fit(X, y)`` then ``scores(X)``; ``name`` labels results
    and ``features`` is the text representation it expects."""

    name = "screener"
    features = TextFeatures()
    meta_learned = False  # True: ``meta_fit`` learns from earlier reviews before screening

    def meta_fit(self, tasks, reviews) -> None:
        """Learn across the labelled ``reviews`` of ``tasks`` before screening another
        (the meta-learned screeners' hook; a per-review screener learns nothing here)."""

    def fit(self, X, y) -> Screener:  # pragma: no cover - every screener has one
        raise NotImplementedError

    def scores(self, X) -> np.ndarray:  # pragma: no cover - every screener has one
        raise NotImplementedError

    def fit_scores(self, X, y, X_unlabelled) -> np.ndarray:
        """One step of the active loop: fit on the labelled records ``X``, ``y`` and score
        the unlabelled ones, ``X_unlabelled``. A screener that learns from the unlabelled
        records as well overrides this; the others fit on the labelled records alone."""
        return self.fit(X, y).scores(X_unlabelled)


class SVMScreener(Screener):
    """ASReview's default: linear SVM (``C``, squared hinge) with balanced weights."""

    name = "svm (ASReview elas_u4)"

    def __init__(self, C: float = 0.11, ratio: float = 9.8, seed: int = 0):
        self.C, self.ratio, self.seed = C, ratio, seed

    def fit(self, X, y, X_presumed=None, presumed_weight: float = 0.0):
        """Fit on the labelled records; ``X_presumed``: records presumed excluded (the
        unlabelled ones, as in PU learning), each weighing ``presumed_weight`` times the
        mean weight of a labelled excluded record (ASReview fits on labelled records only:
        no ``X_presumed``)."""
        w = balanced_weights(y, self.ratio)
        if X_presumed is not None and presumed_weight > 0 and X_presumed.shape[0]:
            m = X_presumed.shape[0]
            X = sparse.vstack([X, X_presumed], format="csr")
            w = np.r_[w, np.full(m, presumed_weight * w[np.asarray(y) == 0].mean())]
            y = np.r_[y, np.zeros(m, int)]
        self.model_ = LinearSVC(C=self.C, loss="squared_hinge", random_state=self.seed)
        self.model_.fit(X, y, sample_weight=w)
        return self

    def scores(self, X):
        return self.model_.decision_function(X)


class NaiveBayesScreener(Screener):
    """Multinomial naive Bayes with balanced weights (ASReview's ``elas_u3``)."""

    name = "naive Bayes (ASReview elas_u3)"
    features = TextFeatures(word_ngrams=(1, 1), max_df=1.0, sublinear_tf=False,
                            stop_words="english")  # fmt: skip

    def __init__(self, alpha: float = 3.822, ratio: float = 1.2):
        self.alpha, self.ratio = alpha, ratio

    def fit(self, X, y):
        self.model_ = MultinomialNB(alpha=self.alpha)
        self.model_.fit(X, y, sample_weight=balanced_weights(y, self.ratio))
        return self

    def scores(self, X):
        return self.model_.predict_log_proba(X)[:, 1] - self.model_.predict_log_proba(X)[:, 0]


class LogisticScreener(Screener):
    """L2 logistic regression with balanced weights."""

    name = "logistic"

    def __init__(self, C: float = 1.0, ratio: float = 1.0):
        self.C, self.ratio = C, ratio

    def fit(self, X, y):
        # liblinear: with a handful of labelled rows and tens of thousands of n-gram
        # columns it fits in a few ms, where lbfgs took 0.18 s a refit
        self.model_ = LogisticRegression(C=self.C, solver="liblinear")
        self.model_.fit(X, y, sample_weight=balanced_weights(y, self.ratio))
        return self

    def scores(self, X):
        return self.model_.decision_function(X)
