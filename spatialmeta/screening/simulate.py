"""The active screening loop, simulated on labelled reviews (ASReview's simulation mode).

From the prior knowledge (the support set), the screener is fitted on the labelled
records, the unlabelled ones are ranked by its scores, the top ``batch`` records are
"screened" (their known labels revealed), and the loop repeats until every record is
screened. ``batch = 1`` is ASReview's loop (a refit after every label); larger batches, or
``"auto"`` (one record at a time for the first 100, then 1 % of the review per refit),
trade a little ranking for speed in long simulations. Ties go to the lower index (a
stable sort), as ASReview's ``max`` query does.

``mix`` mixes in uncertainty sampling: that share of the queries (spread evenly: after
``q`` queries, ``floor(mix q)`` of them were uncertainty picks) goes to the unlabelled
records whose scores lie nearest the screener's decision boundary, 0 for every screener
here (a signed margin or log-odds), the rest to the top-scored (certainty). Pure certainty
(``mix = 0``) finds relevant records soonest; uncertainty picks refine the boundary.

The loop over screening decisions is inherent to active learning (each decision depends
on the ones before); every step is whole-array.
"""

from __future__ import annotations

import numpy as np

from spatialmeta.screening.screeners import Screener

__all__ = ["simulate"]


def _batch_size(batch, n_labelled: int, n: int) -> int:
    if batch == "auto":
        return 1 if n_labelled < 100 else max(1, n // 100)
    return int(batch)


def simulate(screener: Screener, X, labels, prior, *, batch="auto", mix: float = 0.0) -> np.ndarray:
    """The screening order of one review: ``prior`` (row indices, labelled first) then
    every other record in the order the active loop screens them.

    ``X``: the review's features (rows = records); ``labels``: 1/0 per record.

    Examples
    --------
    >>> from scipy import sparse
    >>> from spatialmeta.screening.screeners import LogisticScreener
    >>> X = sparse.csr_matrix(np.eye(6)[[0, 0, 0, 1, 1, 1]] + 0.01)
    >>> order = simulate(LogisticScreener(), X, np.array([1, 1, 1, 0, 0, 0]), [0, 3])
    >>> order[:4].tolist()
    [0, 3, 1, 2]
    """
    y = np.asarray(labels)
    n = y.size
    prior = np.asarray(prior, dtype=np.int64)
    if np.unique(prior).size != prior.size or prior.min() < 0 or prior.max() >= n:
        raise ValueError(f"simulate: `prior` must be distinct rows in [0, {n}).")
    if not 0 <= mix <= 1:
        raise ValueError(
            f"simulate: `mix` (the share of uncertainty queries) must lie in [0, 1]; got {mix!r}."
        )
    queried = 0
    labelled = np.zeros(n, bool)
    labelled[prior] = True
    order = [prior]
    while not labelled.all():
        idx = np.flatnonzero(labelled)
        pool = np.flatnonzero(~labelled)
        s = screener.fit_scores(X[idx], y[idx], X[pool])
        b = min(_batch_size(batch, idx.size, n), pool.size)
        n_unc = int(np.floor(mix * (queried + b)) - np.floor(mix * queried))
        by_score = np.argsort(-s, kind="stable")
        top = by_score[: b - n_unc]
        if n_unc:
            rest = np.setdiff1d(np.arange(pool.size), top)
            near = rest[np.argsort(np.abs(s[rest]), kind="stable")[:n_unc]]
            top = np.concatenate([top, near])
        take = pool[top]
        queried += b
        labelled[take] = True
        order.append(take)
    return np.concatenate(order)
