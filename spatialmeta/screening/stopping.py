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

__all__ = ["stopping_pvalues", "stop_point"]

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
