"""The field's metrics of a screening order (what ASReview's simulations report).

A screening order lists a review's records in the order they were screened, the prior
knowledge (the support set) first. The metrics count the records *after* the prior
knowledge, as ASReview's insights do by default: ``N`` records and ``R`` relevant ones
left to find.

* recall curve: relevant found / ``R`` after each record screened;
* WSS@r (work saved over sampling at recall ``r``): ``(N - n_r) / N - (1 - r)``, with
  ``n_r`` the records screened when the recall first reaches ``r`` (Cohen et al. 2006);
* RRF@x (relevant records found): the recall after screening ``x`` of the ``N`` records
  (``ceil(x N)``), in percent;
* ATD (average time to discovery): the mean, over relevant records, of the share of the
  ``N`` records screened when it was found;
* last relevant: records screened when the last relevant one was found.

Every function takes one order or many (rows of a 2-D array: several seeds or prior
draws of one review) and works on them at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScreeningMetrics", "screening_metrics"]


@dataclass(frozen=True)
class ScreeningMetrics:
    """Metrics of one or more screening orders of one review (arrays over orders):
    ``wss`` (WSS at ``recall``), ``rrf`` (RRF at ``at``, percent), ``atd``, ``last``
    (records to the last relevant), ``recall_curve`` (orders x N), ``n`` and ``relevant``
    (records and relevant records after the prior knowledge)."""

    wss: np.ndarray
    rrf: np.ndarray
    atd: np.ndarray
    last: np.ndarray
    recall_curve: np.ndarray
    n: int
    relevant: int
    recall: float
    at: float


def screening_metrics(order, labels, *, n_prior: int, recall: float = 0.95,
                      at: float = 0.10) -> ScreeningMetrics:  # fmt: skip
    """Metrics of screening ``order`` (indices into ``labels``, the ``n_prior`` prior
    records first; one order or a 2-D array of them, each a permutation of every record)
    against ``labels`` (1 relevant, 0 not).

    Examples
    --------
    >>> labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    >>> m = screening_metrics([0, 1, 3, 5, 2, 4, 6, 7, 8, 9], labels, n_prior=2)
    >>> float(m.wss[0]), float(m.rrf[0]), int(m.last[0])
    (0.7, 50.0, 2)
    """
    y = np.asarray(labels)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("screening_metrics: `labels` must be 0/1 for every record.")
    orders = np.atleast_2d(np.asarray(order, dtype=np.int64))
    n_all = y.size
    if orders.shape[1] != n_all or not (np.sort(orders, axis=1) == np.arange(n_all)).all():
        raise ValueError(f"screening_metrics: each order must list every one of the {n_all} "
                         "records once (a full screening order).")  # fmt: skip
    if not 0 <= n_prior < n_all:
        raise ValueError(f"screening_metrics: `n_prior` must lie in [0, {n_all}); got {n_prior}.")
    seq = y[orders[:, n_prior:]]  # labels in screening order, after the prior knowledge
    N = seq.shape[1]
    R = int(seq[0].sum())
    if R == 0:
        raise ValueError("screening_metrics: no relevant record after the prior knowledge; "
                         "the metrics are undefined.")  # fmt: skip
    found = np.cumsum(seq, axis=1)
    curve = found / R
    need = math.ceil(recall * R - 1e-12)
    n_r = np.argmax(found >= need, axis=1) + 1
    wss = (N - n_r) / N - (1 - recall)
    m = max(1, math.ceil(at * N - 1e-12))
    rrf = 100 * found[:, m - 1] / R
    pos = np.arange(1, N + 1)
    atd = (seq * pos).sum(1) / R / N
    last = np.argmax(found >= R, axis=1) + 1
    return ScreeningMetrics(wss, rrf, atd, last, curve, N, R, recall, at)
