"""Study tasks: one study's effect size and sampling variance, with moderators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spatialmeta.tasks.estimates import Estimates

__all__ = ["StudyTaskSet"]


@dataclass(frozen=True)
class StudyTaskSet:
    """Studies of a meta-analysis, held as columns.

    Examples
    --------
    >>> df = pd.DataFrame({"study": ["a", "b"], "yi": [0.1, 0.4], "vi": [0.02, 0.03]})
    >>> StudyTaskSet.from_frame(df, label="study").estimates().k
    2
    """

    yi: np.ndarray
    vi: np.ndarray
    labels: np.ndarray
    mods: pd.DataFrame | None = None
    measure: str = "effect"

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        yi: str = "yi",
        vi: str = "vi",
        label: str | None = None,
        mods: list[str] | None = None,
        measure: str = "effect",
        source: str = "table",
    ) -> StudyTaskSet:
        """Read effect sizes and variances from columns, checking each row.

        Raises
        ------
        ValueError
            Naming the column and the study (row) of a non-numeric, missing or
            non-positive value.
        """
        for col in [yi, vi, *(mods or [])]:
            if col not in frame.columns:
                raise KeyError(f"{source} has no column {col!r}; columns: {list(frame.columns)}.")
        labels = (
            frame[label].astype(str).to_numpy()
            if label
            else np.array([str(i + 1) for i in range(len(frame))])
        )
        cols = {}
        for col in (yi, vi):
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = values.isna() & frame[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"{source}: column {col!r} is not numeric for study {labels[row]!r} "
                    f"(value {frame[col].iloc[row]!r}); fix or remove that row."
                )
            cols[col] = values.to_numpy(dtype=float)
        bad_v = ~(cols[vi] > 0) & np.isfinite(cols[yi])
        if bad_v.any():
            row = int(np.flatnonzero(bad_v)[0])
            raise ValueError(
                f"{source}: column {vi!r} must be a positive sampling variance; study "
                f"{labels[row]!r} has {float(cols[vi][row])!r}."
            )
        return cls(
            cols[yi],
            cols[vi],
            labels,
            frame[mods].reset_index(drop=True) if mods else None,
            measure,
        )

    @classmethod
    def from_raw(
        cls,
        frame: pd.DataFrame,
        measure: str,
        *,
        label: str | None = None,
        mods: list[str] | None = None,
        **columns,
    ) -> StudyTaskSet:
        """Compute effect sizes from raw study data (metafor's ``escalc`` conventions).

        ``columns`` name the raw columns as escalc does (``ai=``, ``bi=``, ... for 2x2
        tables; ``m1i=``, ``sd1i=``, ``n1i=``, ... for means; ``ri=``, ``ni=`` for
        correlations); see :func:`spatialmeta.meta_analysis.escalc`.

        Examples
        --------
        >>> df = pd.DataFrame({"study": ["a", "b"], "tpos": [4, 6], "tneg": [119, 300],
        ...                    "cpos": [11, 29], "cneg": [128, 274]})
        >>> st = StudyTaskSet.from_raw(df, "RR", label="study", ai="tpos", bi="tneg", ci="cpos", di="cneg")
        >>> st.measure, st.estimates().k
        ('RR', 2)
        """
        from spatialmeta.meta_analysis.effect_sizes import escalc

        slab = frame[label] if label else None
        es = escalc(measure, frame, slab=slab, **columns)
        table = frame.reset_index(drop=True).assign(yi=es["yi"].to_numpy(), vi=es["vi"].to_numpy())
        return cls.from_frame(
            table, label=label, mods=mods, measure=measure.upper(), source="escalc"
        )

    def to_parquet(self, path) -> None:
        """Save to Parquet (see :func:`spatialmeta.tasks.load_study_tasks`)."""
        from spatialmeta.tasks.io import save_study_tasks

        save_study_tasks(self, path)

    def estimates(self) -> Estimates:
        """Effect, variance, labels and moderators, as pooling reads them."""
        return Estimates(self.yi, self.vi, self.labels, self.mods, self.measure)
