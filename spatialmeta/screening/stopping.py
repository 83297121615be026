"""A statistical stopping rule for prioritized screening (Callaghan & Müller-Hansen 2020).

After ``n`` records screened with ``k_n`` relevant found, the null hypothesis is that
the recall is still below the target ``r``: the review holds at least ``K = floor(k_n /
r) + 1`` relevant records. The records screened since any earlier point ``i`` are taken
as a sample of the ``N - i`` records unscreened at ``i``; under the null those held at
least ``K - k_i`` relevant ones, and seeing only ``k_n - k_i`` in ``n - i`` draws has the
hypergeometric probability ``P(X <= k_n - k_i)``. The p-value is the smallest over ``i``;
screening stops when it falls below ``alpha``: "recall >= r with confidence 1 - alpha".
Treating prioritized records as a random sample is conservative (they are richer in
relevant records than a random draw would be), which is the paper's argument for it.

References
----------
Callaghan, M. W., & Müller-Hansen, F. (2020). Statistical stopping criteria for
automated screening in systematic reviews. Systematic Reviews 9, 273.
doi:10.1186/s13643-020-01521-4
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["stopping_pvalues", "stop_point", "remaining_relevant"]

BLOCK = 1 << 22  # (n, i) pairs evaluated at once


def stopping_pvalues(seq, n_total: int, *, target: float = 0.95) -> np.ndarray:
    """The p-value of "recall < ``target``" after each of the records screened so far
    (``seq``: their 0/1 labels in screening order, the prior knowledge excluded;
    ``n_total`` records to screen in all). Array-at-a-time over every step and candidate
    starting point, in blocks of :data:`BLOCK` pairs.

    Examples
    --------
    >>> seq = np.r_[np.ones(19), np.zeros(900)]  # 19 relevant first, then none in 900
    >>> p = stopping_pvalues(seq, 1000)  # H0: 2 or more still among the last 981
    >>> bool(p[318] > 0.4), bool(p[-1] < 0.01)
    (True, True)
    """
    seq = np.asarray(seq, dtype=np.int64)
    if not 0 < target < 1:
        raise ValueError(f"stopping: `target` must lie in (0, 1); got {target!r}.")
    if seq.size > n_total:
        raise ValueError(f"stopping: {seq.size} records screened of {n_total}.")
    k = np.concatenate([[0], np.cumsum(seq)])  # k[i]: relevant in the first i
    n_seen = seq.size
    # Starting points: between two relevant records the p-value only grows with i (each
    # step drops one irrelevant record from both the sample and the pool), so the minimum
    # is at i = 0 or right after a relevant record: R + 1 candidates, not n.
    cand = np.concatenate([[0], np.flatnonzero(seq) + 1])
    out = np.ones(n_seen)
    rows_per_block = max(1, BLOCK // cand.size)
    for start in range(0, n_seen, rows_per_block):  # blocks of steps, each whole-array
        n = np.arange(start + 1, min(n_seen, start + rows_per_block) + 1)[:, None]
        i = cand[None, :]
        valid = i < n
        kn, ki = k[n], k[i]
        K = np.floor(kn / target).astype(np.int64) + 1  # fewest relevant in all under H0
        pool = n_total - i  # unscreened at i
        need = K - ki  # relevant among them under H0
        draws, seen = n - i, kn - ki
        with np.errstate(invalid="ignore"):
            p = stats.hypergeom.cdf(seen, pool, np.minimum(need, pool), np.maximum(draws, 0))
        p = np.where(need > pool, 0.0, p)  # H0 impossible: the pool cannot hold them
        p = np.where(valid, p, 1.0)
        out[n[:, 0] - 1] = np.nanmin(p, axis=1)
    return out


def stop_point(seq, n_total: int, *, target: float = 0.95, alpha: float = 0.05) -> int | None:
    """Records screened (after the prior knowledge) when the test first says the recall
    has reached ``target`` with confidence ``1 - alpha``; None if it never does."""
    p = stopping_pvalues(seq, n_total, target=target)
    hit = np.flatnonzero(p < alpha)
    return int(hit[0]) + 1 if hit.size else None


def remaining_relevant(seq, n_total: int, *, alpha: float = 0.05) -> int:
    """How many relevant records may still be unscreened: the largest number ``m`` that
    the same test cannot rule out at level ``alpha`` (an upper ``1 - alpha`` confidence
    bound) after the records screened so far (``seq``: their 0/1 labels in screening
    order, the prior knowledge excluded). With ``alpha = 0.5`` it is a median-like
    estimate. The null "``m`` or more remain" is tested from every starting point ``i``
    as in :func:`stopping_pvalues` (the smallest p-value over ``i``), for every ``m`` at
    once.

    Examples
    --------
    >>> seq = np.r_[np.ones(19), np.zeros(900)]
    >>> remaining_relevant(seq, 1000)  # one in the last 81 not ruled out at 5 %
    1
    >>> remaining_relevant(seq[:300], 1000), remaining_relevant(seq[:300], 1000, alpha=0.5)
    (8, 2)
    """
    seq = np.asarray(seq, dtype=np.int64)
    if not 0 < alpha < 1:
        raise ValueError(f"stopping: `alpha` must lie in (0, 1); got {alpha!r}.")
    if seq.size > n_total:
        raise ValueError(f"stopping: {seq.size} records screened of {n_total}.")
    n = seq.size
    left = n_total - n
    if left == 0:
        return 0
    k = np.concatenate([[0], np.cumsum(seq)])
    cand = np.concatenate([[0], np.flatnonzero(seq) + 1])
    cand = cand[cand < n] if n else cand
    if cand.size == 0:  # nothing screened: nothing ruled out
        return left
    m = np.arange(1, left + 1)[:, None]  # remaining relevant under the null, each m
    i = cand[None, :]
    pool, draws, seen = n_total - i, n - i, k[n] - k[i]
    need = seen + m  # relevant among the records unscreened at i
    p = stats.hypergeom.cdf(seen, pool, np.minimum(need, pool), draws).min(axis=1)
    # p falls as m grows: the bound is the last m not rejected
    ok = np.flatnonzero(p >= alpha)
    return int(ok[-1]) + 1 if ok.size else 0
