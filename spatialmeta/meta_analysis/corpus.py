"""A corpus of meta-analyses as one columnar object, and the loader of the shared corpus.

:class:`Corpus` is a long table, one row per study: ``meta_id``, ``yi``, ``vi``,
``measure`` and any meta-analysis covariates (``field``, ``source``, ...). It pads itself
into the ``(meta-analyses, studies)`` arrays that
:func:`~spatialmeta.meta_analysis.learned.learn_tau_prior` and
:func:`~spatialmeta.meta_analysis.bayes.bayes_pool` take.

:func:`load_corpus` reads the R packages metadat and psymetadata (``.rda`` files, with the
``rdata`` package: ``pip install rdata``; no R needed) and keeps what is a plain
two-group or one-sample meta-analysis with one effect per study: effect sizes given as
``yi``/``vi``, or computed by :func:`~spatialmeta.meta_analysis.effect_sizes.escalc` from
metafor's raw columns (``ai..di`` or ``tpos/tneg/cpos/cneg``; events and group sizes
``ai, n1i, ci, n2i`` and the datasets' aliases of them; ``m1i, sd1i, n1i, m2i, sd2i,
n2i``; ``ri, ni``; ``xi, ni``), the measure from the dataset's concept tags in
``catalog.json``; a ``table`` column separates a file's meta-analyses. Everything else (multilevel, multivariate, network and dose-response
data; several effects per study; columns it does not recognize) is skipped with the
reason, kept in ``Corpus.skipped``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Corpus", "load_corpus"]

# catalog concept tag -> escalc measure (the first tag found wins)
MEASURES = {
    "odds ratios": "OR", "risk ratios": "RR", "standardized mean differences": "SMD",
    "raw mean differences": "MD", "correlation coefficients": "ZCOR", "proportions": "PLO",
}  # fmt: skip
NOT_PLAIN = ("multilevel models", "multivariate models", "network meta-analysis",
             "component network meta-analysis", "dose-response models")  # fmt: skip
# metafor's raw-column sets per measure family, with the aliases the datasets use
# (escalc arguments, column names) pairs, tried in turn
_TABLE = (("ai", "bi", "ci", "di"), [("ai", "bi", "ci", "di"), ("tpos", "tneg", "cpos", "cneg"),
          ("resp.halo", "fail.halo", "resp.plac", "fail.plac")])  # fmt: skip
_EVENTS = (("ai", "n1i", "ci", "n2i"), [("ai", "n1i", "ci", "n2i"), ("Ee", "Ne", "Ec", "Nc"),
           ("xt", "nt", "xc", "nc"), ("xTi", "nTi", "xCi", "nCi"),
           ("x.nrt", "n.nrt", "x.ctrl", "n.ctrl"), ("x.a", "n.a", "x.p", "n.p"),
           ("hcq_arm_event", "hcq_arm_total", "control_arm_event", "control_arm_total")])  # fmt: skip
_MEANS = (
    ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),
    [("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"), ("Me", "Se", "Ne", "Mc", "Sc", "Nc")],
)
RAW = {
    "OR": [_TABLE, _EVENTS], "RR": [_TABLE, _EVENTS], "SMD": [_MEANS], "MD": [_MEANS],
    "ZCOR": [(("ri", "ni"), [("ri", "ni"), ("Correlation", "SampleSize")])],
    "PLO": [(("xi", "ni"), [("xi", "ni"), ("cases", "total")])],
}  # fmt: skip
SPLIT = ("table",)  # a column that separates a dataset's meta-analyses (dat.yusuf1985)


@dataclass(frozen=True)
class Corpus:
    """Meta-analyses in one long table (``meta_id``, ``yi``, ``vi``, ``measure``, covariates).

    ``skipped`` maps what a loader left out to the reason.
    """

    table: pd.DataFrame
    skipped: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, frame: pd.DataFrame, *, meta_id: str = "meta_id", yi: str = "yi",
                   vi: str = "vi", measure: str | None = None) -> Corpus:  # fmt: skip
        """A corpus from a long table: one row per study, ``meta_id`` naming its
        meta-analysis; ``measure`` a column name or one measure for all (default: the
        table's ``measure`` column, else ``"effect"``)."""
        for col in (meta_id, yi, vi):
            if col not in frame:
                raise ValueError(f"Corpus: the table has no column {col!r}; it has {list(frame)}.")
        out = frame.rename(columns={meta_id: "meta_id", yi: "yi", vi: "vi"}).copy()
        if measure is not None and measure in frame:
            out["measure"] = frame[measure].astype(str)
        elif measure is not None:
            out["measure"] = measure
        elif "measure" not in out:
            out["measure"] = "effect"
        bad = ~(np.isfinite(out.yi.astype(float)) & np.isfinite(out.vi.astype(float)))
        bad |= out.vi.astype(float) <= 0
        if bad.any():
            row = out[bad].iloc[0]
            raise ValueError(
                f"Corpus: study of meta-analysis {row.meta_id!r} (row {int(np.flatnonzero(bad)[0])}) "
                f"has yi = {row.yi}, vi = {row.vi}; every study needs a finite effect and a "
                "positive sampling variance (drop it, or compute vi)."
            )
        return cls(out.reset_index(drop=True))

    @classmethod
    def from_studies(cls, studies) -> Corpus:
        """A corpus from named study sets: a mapping of meta-analysis id to a
        :class:`~spatialmeta.tasks.studies.StudyTaskSet` (or anything with ``yi``, ``vi``
        and optionally ``measure``).

        >>> from types import SimpleNamespace as NS
        >>> c = Corpus.from_studies({"a": NS(yi=[0.1, 0.3], vi=[0.02, 0.04], measure="SMD"),
        ...                          "b": NS(yi=[0.5], vi=[0.1])})
        >>> c.counts().to_dict("index")
        {'SMD': {'meta_analyses': 1, 'studies': 2}, 'effect': {'meta_analyses': 1, 'studies': 1}}
        """
        parts = []
        for name, st in dict(studies).items():
            for attr in ("yi", "vi"):
                if not hasattr(st, attr):
                    raise ValueError(f"Corpus: study set {name!r} has no `{attr}`; give a "
                                     "StudyTaskSet or an object with yi and vi.")  # fmt: skip
            y = np.ravel(np.asarray(st.yi, dtype=float))
            v = np.ravel(np.asarray(st.vi, dtype=float))
            if y.shape != v.shape:
                raise ValueError(f"Corpus: study set {name!r} has {y.size} yi but {v.size} vi.")
            parts.append(pd.DataFrame({"meta_id": str(name), "yi": y, "vi": v,
                                       "measure": str(getattr(st, "measure", None) or "effect")}))  # fmt: skip
        if not parts:
            raise ValueError("Corpus: no study set given.")
        return cls.from_table(pd.concat(parts, ignore_index=True), measure="measure")

    @classmethod
    def from_folder(cls, folder, *, yi: str = "yi", vi: str = "vi", measure: str | None = None,
                    pattern: str = "*.csv") -> Corpus:  # fmt: skip
        """One meta-analysis per study table (CSV) in ``folder``, its file name (without
        the suffix) as ``meta_id``; ``yi``/``vi`` name the columns, ``measure`` a column
        or one measure for all. An error names the file."""
        folder = Path(folder)
        files = sorted(folder.glob(pattern))
        if not files:
            raise FileNotFoundError(f"Corpus: no {pattern} file in '{folder}'.")
        parts = []
        for f in files:  # a table per meta-analysis: the folder's layout, not a hot loop
            frame = pd.read_csv(f)
            try:
                one = cls.from_table(frame.assign(meta_id=f.stem), yi=yi, vi=vi, measure=measure)
            except ValueError as err:
                raise ValueError(f"{f}: {err}") from None
            parts.append(one.table)
        return cls(pd.concat(parts, ignore_index=True))

    @property
    def n_meta(self) -> int:
        return int(self.table.meta_id.nunique())

    def counts(self) -> pd.DataFrame:
        """Meta-analyses and studies per measure."""
        g = self.table.groupby("measure")
        return pd.DataFrame({"meta_analyses": g.meta_id.nunique(), "studies": g.size()})

    def padded(self, measure: str | None = None):
        """``(ids, yi, vi)``: the meta-analyses (of one ``measure``, or all) as ``(n, kmax)``
        arrays, NaN-padded, in order of first appearance."""
        t = self.table if measure is None else self.table[self.table.measure == measure]
        if t.empty:
            raise ValueError(
                f"Corpus: no meta-analysis with measure {measure!r}; the corpus has "
                f"{sorted(self.table.measure.unique())}."
            )
        codes, ids = pd.factorize(t.meta_id)
        pos = t.groupby(codes).cumcount().to_numpy()
        kmax = int(pos.max()) + 1
        yi = np.full((len(ids), kmax), np.nan)
        vi = np.full((len(ids), kmax), np.nan)
        yi[codes, pos] = t.yi.to_numpy(float)
        vi[codes, pos] = t.vi.to_numpy(float)
        return np.asarray(ids), yi, vi


def _read_rda(path: Path) -> pd.DataFrame | None:
    try:
        import rdata
    except ImportError as err:
        raise ImportError(
            "load_corpus reads .rda files with the rdata package: pip install rdata"
        ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objs = rdata.read_rda(str(path))
    frames = [v for v in objs.values() if isinstance(v, pd.DataFrame)]
    return frames[0] if frames else None


def _one_dataset(name: str, frame: pd.DataFrame, tags: list[str], source: str):
    """``(table, None)`` for a plain meta-analysis, or ``(None, reason)``."""
    from spatialmeta.meta_analysis.effect_sizes import escalc

    kind = [t for t in tags if t in NOT_PLAIN]
    if kind:
        return None, f"not a plain meta-analysis ({', '.join(kind)})"
    cols = set(frame.columns)
    for sid in ("study_id", "study", "trial", "id"):
        if sid in cols and frame[sid].duplicated().any() and "es_id" in cols:
            return None, f"several effects per study (column {sid!r} repeats)"
    measure = next((MEASURES[t] for t in tags if t in MEASURES), None)
    if {"yi", "vi"} <= cols or {"yi_d", "vi_d"} <= cols:
        y, v = ("yi", "vi") if {"yi", "vi"} <= cols else ("yi_d", "vi_d")
        yi, vi = frame[y].to_numpy(float), frame[v].to_numpy(float)
        measure = measure or ("SMD" if y == "yi_d" else "effect")
    elif measure in RAW:
        found = next(((args, names) for args, options in RAW[measure] for names in options
                      if set(names) <= cols), None)  # fmt: skip
        if found is None:
            return None, f"{measure} data without metafor's raw columns (has {sorted(cols)[:8]})"
        args = dict(zip(*found, strict=True))
        try:
            es = escalc(measure, **{a: frame[c].to_numpy(float) for a, c in args.items()})
        except (ValueError, TypeError) as err:
            return None, f"escalc({measure}) failed: {str(err).splitlines()[0][:80]}"
        yi, vi = np.asarray(es.yi, float), np.asarray(es.vi, float)
    else:
        return None, "no yi/vi and no measure with raw columns it knows"
    ok = np.isfinite(yi) & np.isfinite(vi) & (vi > 0)
    if ok.sum() < 2:
        return None, f"fewer than two usable studies ({int(ok.sum())})"
    field_tag = next((t for t in tags if t not in MEASURES and t not in NOT_PLAIN), "")
    table = pd.DataFrame({"meta_id": name, "yi": yi[ok], "vi": vi[ok], "measure": measure,
                          "field": field_tag, "source": source})  # fmt: skip
    return table, None


def load_corpus(root: str | Path, *, progress: bool = False) -> Corpus:
    """The shared corpus (``root`` holds ``metadat/`` and ``psymetadata/``, each with
    ``data/*.rda`` and ``catalog.json``): every plain meta-analysis, the others skipped
    with their reason (``Corpus.skipped``)."""
    root = Path(root)
    parts, skipped = [], {}
    for source in ("metadat", "psymetadata"):
        base = root / source
        if not base.exists():
            raise FileNotFoundError(f"load_corpus: '{base}' does not exist; pass the folder "
                                    "that holds metadat/ and psymetadata/.")  # fmt: skip
        catalog = {c["dataset"]: c for c in json.loads((base / "catalog.json").read_text())}
        for path in sorted((base / "data").glob("*.rda")):  # a file per dataset
            name = path.stem
            frame = _read_rda(path)
            if frame is None:
                skipped[f"{source}/{name}"] = "no data frame in the file"
                continue
            tags = catalog.get(name, {}).get("concepts", [])
            split = next((c for c in SPLIT if c in frame.columns), None)
            groups = frame.groupby(split, sort=False) if split else [(None, frame)]
            for key, part in groups:  # a handful of meta-analyses in one file, at most
                label = f"{source}/{name}" + ("" if key is None else f"/{split}={key}")
                table, reason = _one_dataset(label, part.reset_index(drop=True), tags, source)
                if table is None:
                    skipped[label] = reason
                else:
                    parts.append(table)
    return Corpus(pd.concat(parts, ignore_index=True), skipped)
