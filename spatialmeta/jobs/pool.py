"""The ``spatialmeta pool`` job: a table of studies → the whole meta-analysis, written to a folder.

:func:`pool_job` reads a CSV of studies (effect sizes and variances, or the raw
numbers ``escalc`` turns into them), fits the model, and writes into one folder
a Markdown report (``report.md``), every number of it as JSON
(``results.json``), a per-study table (``studies.csv``) and the plots (forest,
contour-enhanced funnel with trim-and-fill, Baujat, radial; PNG and SVG). The
folder is assembled under a temporary name beside the destination and renamed
into place at the end, so a failed run never leaves a half-written report.

Input problems raise :class:`StudyTableError` (a ``ValueError``) with a
one-line message naming the file, the row and the column, and the fix.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from spatialmeta._io import atomic_path, ensure_writable_dir
from spatialmeta.jobs.pool_bayes import (
    bayes_fit,
    bayes_markdown,
    bayes_plots,
    bayes_results,
    bayes_summary,
)
from spatialmeta.jobs.pool_multilevel import (
    check_structure,
    multilevel_fit,
    multilevel_markdown,
    multilevel_results,
    multilevel_summary,
)
from spatialmeta.meta_analysis import effect_sizes
from spatialmeta.meta_analysis.bias import baujat as baujat_fit
from spatialmeta.meta_analysis.bias import fsn, ranktest, trimfill
from spatialmeta.meta_analysis.diagnostics import influence, leave1out
from spatialmeta.meta_analysis.estimators import FIXED_METHODS, METHODS
from spatialmeta.meta_analysis.pool import PoolResult, pool
from spatialmeta.meta_analysis.profile import confint_tau2
from spatialmeta.meta_analysis.regtest import pet_peese, regtest
from spatialmeta.meta_analysis.results import fmt_num, fmt_p
from spatialmeta.meta_analysis.robust import TYPES as ROBUST_TYPES
from spatialmeta.meta_analysis.robust import robust
from spatialmeta.meta_analysis.selection import selmodel
from spatialmeta.meta_analysis.spec import TESTS, FitSpec
from spatialmeta.meta_analysis.subgroups import subgroups as subgroup_fit

__all__ = [
    "METHODS", "TESTS", "PoolJobResult", "StudyTableError", "parse_columns", "pool_job",
    "read_studies",
]  # fmt: skip

# Measures analysed on the log scale: reported and plotted back-transformed as ratios.
_RATIO_NAMES = {
    "RR": "risk ratio",
    "OR": "odds ratio",
    "PETO": "odds ratio (Peto)",
    "IRR": "incidence rate ratio",
    "ROM": "ratio of means",
}
_MEASURE_NAMES = {
    "RR": "log risk ratio",
    "OR": "log odds ratio",
    "RD": "risk difference",
    "PETO": "log odds ratio (Peto)",
    "MD": "mean difference",
    "SMD": "standardized mean difference (Hedges' g)",
    "SMDH": "standardized mean difference (heteroscedastic)",
    "ROM": "log ratio of means",
    "IRR": "log incidence rate ratio",
    "IRD": "incidence rate difference",
    "PR": "proportion",
    "PLO": "logit proportion",
    "PAS": "arcsine square-root proportion",
    "PFT": "Freeman-Tukey double arcsine proportion",
    "COR": "correlation",
    "ZCOR": "Fisher's z-transformed correlation",
}
SELMODEL_MIN_K = 10  # fewer studies than this cannot inform a step's delta
# the selection models of the bias section: result key, name, selmodel's arguments
SELECTION_MODELS = (
    ("selmodel", "step at p = 0.025", {"steps": (0.025, 1.0)}),
    ("selmodel_beta", "beta", {"type": "beta"}),
    ("selmodel_halfnorm", "half-normal", {"type": "halfnorm"}),
)
_PLOTS = ("forest", "funnel", "baujat", "radial", "posterior", "shrinkage")
_LABEL_NAMES = ("study", "label", "slab")


class StudyTableError(ValueError):
    """The study table or the options cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class PoolJobResult:
    """What :func:`pool_job` wrote: the folder, the printed summary and every number.

    ``results`` is the content of ``results.json``; ``files`` maps each output
    to its final path; ``skipped`` maps each section that could not be run to
    the reason; ``notes`` lists dropped studies and warnings of the fits.
    """

    out: Path
    summary: str
    results: dict[str, Any]
    files: dict[str, Path]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    model: PoolResult | None = None


@dataclass(frozen=True)
class _Studies:
    """The studies of the table that enter the analysis, after every check."""

    path: Path
    n_rows: int
    rows: np.ndarray  # 0-based table rows of the studies kept
    yi: np.ndarray
    vi: np.ndarray
    labels: np.ndarray
    measure: str | None
    columns: dict[str, str]  # escalc argument (or yi, vi) -> table column
    mods: pd.DataFrame | None
    groups: np.ndarray | None
    table: pd.DataFrame  # the kept rows of the input, the columns used
    dropped: list[str]
    label: str | None = None  # the column of study labels
    clusters: np.ndarray | None = None  # the cluster of each study (--cluster)
    inner: np.ndarray | None = None  # the inner level of each effect (--inner)


# --------------------------------------------------------------------------- options


def parse_columns(specs: Sequence[str] | None) -> dict[str, str]:
    """``["m1i=mean_treat", ...]`` (the ``--col`` options) → ``{"m1i": "mean_treat", ...}``.

    Examples
    --------
    >>> parse_columns(["ai=tpos", "bi = tneg"])
    {'ai': 'tpos', 'bi': 'tneg'}
    """
    out: dict[str, str] = {}
    for spec in specs or ():
        arg, sep, col = str(spec).partition("=")
        arg, col = arg.strip(), col.strip()
        if not sep or not arg or not col:
            raise StudyTableError(
                f"--col expects ARG=COLUMN (an escalc argument and a column of the table), "
                f"e.g. --col m1i=mean_treat; got {spec!r}."
            )
        if arg in out and out[arg] != col:
            raise StudyTableError(
                f"--col gives {arg} twice ({out[arg]!r} and {col!r}); give each argument once."
            )
        out[arg] = col
    return out


def _split_names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(x).strip() for x in items if str(x).strip()]


def _check_options(measure, method, test, level) -> tuple[str | None, str, str, float]:
    if measure is not None:
        canon = str(measure).upper()
        if canon not in effect_sizes.MEASURES:
            raise StudyTableError(
                f"--measure {measure!r} is not a known effect size; use one of "
                f"{', '.join(effect_sizes.MEASURES)} (or leave --measure out when the table "
                "already has yi and vi)."
            )
        measure = canon
    try:
        spec = FitSpec.make(method, test, level)
    except ValueError as err:  # naming the argument; the CLI words it as its flag
        raise StudyTableError(str(err)) from None
    return measure, spec.method, spec.test, spec.level


# --------------------------------------------------------------------------- reading


def _read_table(path: Path) -> pd.DataFrame:
    name = str(path)
    if not path.exists():
        raise StudyTableError(
            f"studies file '{name}' does not exist; check the path (a CSV with one row per study)."
        )
    if path.is_dir():
        raise StudyTableError(f"'{name}' is a folder; give the CSV file of studies.")
    try:
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig")
        if frame.shape[1] == 1:
            head = str(frame.columns[0])
            for sep in (";", "\t"):
                if sep in head:
                    frame = pd.read_csv(path, sep=sep, skipinitialspace=True, encoding="utf-8-sig")
                    break
    except pd.errors.EmptyDataError:
        raise StudyTableError(
            f"studies file '{name}' is empty; it needs a header row and one row per study."
        ) from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        raise StudyTableError(
            f"studies file '{name}' cannot be read as CSV ({detail}); check the quoting and "
            "that every row has as many fields as the header."
        ) from None
    except UnicodeDecodeError as exc:
        raise StudyTableError(
            f"studies file '{name}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}); save it as a UTF-8 CSV."
        ) from None
    except PermissionError:
        raise StudyTableError(f"studies file '{name}' cannot be read: permission denied.") from None
    if frame.empty:
        raise StudyTableError(
            f"studies file '{name}' has a header but no study rows; add one row per study."
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _blank(series: pd.Series) -> np.ndarray:
    """Missing cells: NaN/None, or only whitespace."""
    text = series.astype(str).str.strip()
    return (series.isna() | (text == "")).to_numpy()


class _Where:
    """Names a row of the table in messages: its number (1-based, header excluded) and label."""

    def __init__(self, path: Path, labels: np.ndarray | None):
        self.path, self.labels = path, labels

    def row(self, i: int) -> str:
        text = f"row {i + 1}"
        if self.labels is not None:
            text += f" (study {str(self.labels[i])!r})"
        return text


def _numeric(frame: pd.DataFrame, col: str, where: _Where, what: str) -> np.ndarray:
    """A column as floats (NaN for blank cells); a non-number names its row and column."""
    raw = frame[col]
    blank = _blank(raw)
    values = pd.to_numeric(raw.where(~blank), errors="coerce")
    bad = values.isna().to_numpy() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        more = int(bad.sum()) - 1
        hint = " (use a point as decimal separator)" if "," in str(raw.iloc[i]) else ""
        raise StudyTableError(
            f"{where.path}: {where.row(i)}, column {col!r} ({what}) holds "
            f"{raw.iloc[i]!r}, which is not a number{hint}"
            + (f"; {more} more cell(s) of that column likewise" if more > 0 else "")
            + "; fix the cell, or leave it empty to drop the study."
        )
    out = values.to_numpy(dtype=float)
    inf = np.isinf(out)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise StudyTableError(
            f"{where.path}: {where.row(i)}, column {col!r} ({what}) is infinite; give a "
            "finite value, or leave the cell empty to drop the study."
        )
    return out


def _have(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    shown = ", ".join(cols[:20]) + (", ..." if len(cols) > 20 else "")
    return f"columns: {shown}"


def _raw_columns(measure: str, frame: pd.DataFrame, mapping: dict[str, str], path: Path):
    """escalc argument → table column for ``measure``, from names and ``--col``."""
    family = effect_sizes._FAMILY[measure]
    needed = list(effect_sizes._NEEDED[family])
    allowed = set(needed) | ({"n1i", "n2i"} if family == "table" else set())
    unknown = [a for a in mapping if a not in allowed]
    if unknown:
        extra = " (or n1i, n2i for the row totals)" if family == "table" else ""
        raise StudyTableError(
            f"--col {unknown[0]}={mapping[unknown[0]]}: {unknown[0]!r} is not an argument of "
            f"--measure {measure}, which takes {', '.join(needed)}{extra}."
        )
    for arg, col in mapping.items():
        if col not in frame.columns:
            raise StudyTableError(
                f"--col {arg}={col}: '{path}' has no column {col!r} ({_have(frame)})."
            )
    chosen: dict[str, str] = {}
    for arg in sorted(allowed, key=effect_sizes._ARGUMENTS.index):
        col = mapping.get(arg, arg)
        if col in frame.columns:
            chosen[arg] = col
    if family == "table":
        # 2x2 tables: bi/di, or the row totals n1i/n2i in their place (not both).
        for cell, total in (("bi", "n1i"), ("di", "n2i")):
            if cell in chosen and total in chosen:
                if total in mapping and cell not in mapping:
                    del chosen[cell]
                else:
                    del chosen[total]
            if cell not in chosen and total in chosen:
                needed.remove(cell)
        for total in ("n1i", "n2i"):
            if total in chosen and total not in needed:
                needed.append(total)
    missing = [a for a in needed if a not in chosen]
    if missing:
        alt = " (bi, di may be replaced by the group sizes n1i, n2i)" if family == "table" else ""
        example = f"--col {missing[0]}=COLUMN"
        raise StudyTableError(
            f"--measure {measure} needs the columns {', '.join(effect_sizes._NEEDED[family])}"
            f"{alt}; '{path}' lacks {', '.join(missing)} ({_have(frame)}). Name the column of "
            f"each with {example} (repeat --col for each), or rename the CSV columns."
        )
    return {a: chosen[a] for a in needed}


def _mods_frame(frame, names, where, keep) -> pd.DataFrame:
    """Moderator columns: numbers where the column is numeric, else categories."""
    out = {}
    for col in names:
        raw = frame[col]
        blank = _blank(raw)
        missing = blank & keep
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise StudyTableError(
                f"{where.path}: {where.row(i)}, column {col!r} (moderator) is empty; "
                "--mods needs a value for every study: fill it in, or drop the study's row."
            )
        parsed = pd.to_numeric(raw.where(~blank), errors="coerce")
        ok = parsed.notna().to_numpy() & keep
        n = int(keep.sum())
        if ok.sum() == n:
            out[col] = parsed.to_numpy(dtype=float)
        elif ok.sum() >= 0.8 * n:  # a numeric column with a stray non-number
            i = int(np.flatnonzero(keep & ~ok)[0])
            raise StudyTableError(
                f"{where.path}: {where.row(i)}, column {col!r} (moderator) holds "
                f"{raw.iloc[i]!r} among numbers; fix that cell (or, for a categorical "
                "moderator, make every value a category name)."
            )
        else:
            out[col] = raw.astype(str).str.strip().to_numpy(dtype=object)
    return pd.DataFrame(out)


def read_studies(
    studies: str | os.PathLike,
    *,
    measure: str | None = None,
    yi: str | None = None,
    vi: str | None = None,
    columns: dict[str, str] | None = None,
    label: str | None = None,
    mods: str | Sequence[str] | None = None,
    subgroup: str | None = None,
    cluster: str | None = None,
    inner: str | None = None,
) -> _Studies:
    """Read and check the study table; compute effect sizes with ``escalc`` when ``measure``.

    Rows whose effect size or variance (or a raw number) is empty are dropped
    (as metafor omits studies with NAs) and listed in ``dropped``; everything
    else that is wrong raises :class:`StudyTableError` naming the file, row and
    column.
    """
    path = Path(studies)
    frame = _read_table(path)
    columns = dict(columns or {})
    mod_names = _split_names(mods)
    named = [
        ("--label", label),
        ("--subgroup", subgroup),
        ("--cluster", cluster),
        ("--inner", inner),
    ]
    for opt, col in named + [("--mods", m) for m in mod_names]:
        if col is not None and col not in frame.columns:
            raise StudyTableError(
                f"{opt} names column {col!r}, which '{path}' does not have ({_have(frame)})."
            )
    if label is None:  # a column named study, label or slab holds the study labels
        named = {str(c).lower(): c for c in frame.columns}
        label = next((named[n] for n in _LABEL_NAMES if n in named), None)
    labels = None
    if label is not None:
        raw = frame[label]
        labels = np.array(
            [f"row {i + 1}" if b else str(x).strip() for i, (x, b) in
             enumerate(zip(raw, _blank(raw), strict=True))],
            dtype=object,
        )  # fmt: skip
    where = _Where(path, labels)
    if measure is None:
        if columns:
            raise StudyTableError(
                "--col maps escalc's raw-data arguments and needs --measure (e.g. --measure SMD "
                "--col m1i=mean_treat ...); to name precomputed effect sizes use --yi and --vi."
            )
        use = {"yi": yi or "yi", "vi": vi or "vi"}
        for arg, col in use.items():
            if col not in frame.columns:
                flag = f"--{arg}"
                raise StudyTableError(
                    f"'{path}' has no column {col!r} ({'effect sizes' if arg == 'yi' else 'sampling variances'}; "
                    f"{_have(frame)}); name the column with {flag} COLUMN, or compute effect sizes "
                    "from raw data with --measure (e.g. --measure SMD)."
                )
        y = _numeric(frame, use["yi"], where, "effect size")
        v = _numeric(frame, use["vi"], where, "sampling variance")
        used = use
    else:
        if yi is not None or vi is not None:
            raise StudyTableError(
                "--yi/--vi name precomputed effect sizes; with --measure the effect sizes are "
                "computed from the raw columns, so leave --yi/--vi out (or drop --measure)."
            )
        used = _raw_columns(measure, frame, columns, path)
        raw_vals = {a: _numeric(frame, c, where, f"escalc's {a}") for a, c in used.items()}
        slab = np.array([where.row(i) for i in range(len(frame))], dtype=object)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                es = effect_sizes.escalc(measure, slab=slab, **raw_vals)
        except (TypeError, ValueError) as exc:
            msg = str(exc).splitlines()[0]
            for a, c in used.items():
                msg = msg.replace(f"`{a}`", f"`{a}` (column {c!r})")
            raise StudyTableError(f"{path}: {msg}") from None
        y = es["yi"].to_numpy(dtype=float)
        v = es["vi"].to_numpy(dtype=float)

    # Missing values: the study is left out (metafor's na.omit), with a note.
    dropped = []
    keep = np.isfinite(y) & np.isfinite(v)
    for i in np.flatnonzero(~keep):
        empty = [c for c in used.values() if _blank(frame[c].iloc[[i]])[0]]
        reason = (
            f"empty {', '.join(repr(c) for c in empty)}"
            if empty
            else f"the {measure} effect size is undefined for these numbers"
        )
        dropped.append(f"{where.row(int(i))}: {reason}")
    bad_v = keep & ~(v > 0)
    if bad_v.any():
        i = int(np.flatnonzero(bad_v)[0])
        if measure is None:
            raise StudyTableError(
                f"{path}: {where.row(i)}, column {used['vi']!r} (sampling variance) is "
                f"{v[i]:g}; variances must be > 0 (squared standard errors): fix the cell, "
                "or leave it empty to drop the study."
            )
        raise StudyTableError(
            f"{path}: {where.row(i)}: --measure {measure} gives a sampling variance of "
            f"{v[i]:g} from columns {', '.join(repr(c) for c in used.values())}; variances must "
            "be > 0: check those cells, or drop the study."
        )
    mods_frame = _mods_frame(frame, mod_names, where, keep) if mod_names else None

    def labels_of(col: str | None, what: str) -> np.ndarray | None:
        """A column of group labels (subgroup, cluster) for the kept studies."""
        if col is None:
            return None
        raw = frame[col]
        blank = _blank(raw) & keep
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise StudyTableError(
                f"{path}: {where.row(i)}, column {col!r} ({what}) is empty; give every "
                f"study a {what}, or drop the study's row."
            )
        return raw.astype(str).str.strip().to_numpy(dtype=object)[keep]

    groups = labels_of(subgroup, "subgroup")
    clusters = labels_of(cluster, "cluster")
    inner_levels = labels_of(inner, "inner level")
    rows = np.flatnonzero(keep)
    lab = labels if labels is not None else np.array([str(i + 1) for i in range(len(frame))])
    shown = [label, subgroup, cluster, inner, *mod_names, *used.values()]
    shown = [c for c in shown if c is not None]
    shown = list(dict.fromkeys(shown))
    return _Studies(
        path=path,
        n_rows=len(frame),
        rows=rows,
        yi=y[keep],
        vi=v[keep],
        labels=np.asarray(lab, dtype=object)[keep],
        measure=measure,
        columns=dict(used),
        mods=None if mods_frame is None else mods_frame[keep].reset_index(drop=True),
        groups=groups,
        table=frame.loc[keep, shown].reset_index(drop=True),
        dropped=dropped,
        label=label,
        clusters=clusters,
        inner=inner_levels,
    )


# --------------------------------------------------------------------------- analysis


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, PoolResult):
        return _plain(value.to_dict())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _f(x, digits: int = 4) -> str:
    return fmt_num(x, digits)


def _p(p) -> str:
    return fmt_p(p, style="report")


def _peq(p) -> str:
    """``= 0.0123`` or ``< 0.0001``, to follow "p"."""
    return fmt_p(p, eq=True, style="report")


def _md_table(head: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or ("l" + "r" * (len(head) - 1))
    sep = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    lines = ["| " + " | ".join(head) + " |", sep]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


class _Run:
    """Runs the sections, recording skipped ones and warnings instead of stopping."""

    def __init__(self, progress: Callable[[str], None] | None):
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.progress = progress

    def step(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def section(self, name: str, fn: Callable[[], Any], need: str | None = None) -> Any:
        if need is not None:
            self.skipped[name] = need
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = fn()
            except (ValueError, np.linalg.LinAlgError) as exc:
                self.skipped[name] = str(exc).splitlines()[0]
                return None
        for w in caught:
            text = f"{name}: {str(w.message).splitlines()[0]}"
            if text not in self.notes:
                self.notes.append(text)
        return out


def _fit_all(st: _Studies, method: str, test: str, level: float, run: _Run,
             robust_type: str = "CR2") -> dict[str, Any]:  # fmt: skip
    y, v, labels = st.yi, st.vi, st.labels
    measure = st.measure or "effect"
    k = y.size
    fixed = method in FIXED_METHODS
    kw = dict(method=method, test=test, level=level)
    fits: dict[str, Any] = {}
    run.step(f"fitting the {'common-effect' if fixed else 'random-effects'} model (k = {k})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits["model"] = replace(pool(y, v, labels=labels, **kw), measure=measure)
    run.notes += [f"model: {str(w.message).splitlines()[0]}" for w in caught]
    res = fits["model"]
    fits["confint"] = run.section(
        "heterogeneity intervals",
        lambda: confint_tau2(res),
        "a common-effect model has no tau^2 to profile; use a random-effects --method "
        "(e.g. REML) for Q-profile intervals"
        if fixed
        else None,
    )
    if st.mods is not None:
        p = 1 + sum(
            1 if pd.api.types.is_numeric_dtype(st.mods[c]) else st.mods[c].nunique() - 1
            for c in st.mods.columns
        )
        need = None
        if k <= p - (1 if fixed else 0):
            need = (
                f"the meta-regression has {p} coefficients but only k = {k} studies; it needs "
                f"k > {p} (fewer moderators or more studies)"
            )
        fits["mods"] = run.section(
            "meta-regression",
            lambda: replace(pool(y, v, mods=st.mods, labels=labels, **kw), measure=measure),
            need,
        )
        if fits["mods"] is not None and not fixed:
            fits["mods_confint"] = run.section(
                "meta-regression intervals", lambda: confint_tau2(fits["mods"])
            )
    if st.clusters is not None:
        run.step(f"cluster-robust inference ({robust_type}, {len(set(st.clusters))} clusters)")
        fits["robust"] = run.section("cluster-robust inference",
                                     lambda: robust(res, st.clusters, type=robust_type))  # fmt: skip
        if fits.get("mods") is not None:
            fits["robust_mods"] = run.section(
                "cluster-robust meta-regression",
                lambda: robust(fits["mods"], st.clusters, type=robust_type),
            )
    if st.groups is not None:
        fits["subgroups"] = run.section(
            "subgroups",
            lambda: subgroup_fit(res, groups=st.groups, single_study="fixed"),
        )
    few = f"needs at least 3 studies; k = {k}" if k < 3 else None
    run.step("publication bias: Egger, rank test, trim-and-fill, PET-PEESE, fail-safe N")
    fits["egger"] = run.section("Egger's test", lambda: regtest(res), few)
    fits["ranktest"] = run.section("rank correlation test", lambda: ranktest(y, v), few)
    fits["trimfill"] = run.section("trim-and-fill", lambda: trimfill(res), few)
    fits["pet_peese"] = run.section("PET-PEESE", lambda: pet_peese(y, v, level=level), few)
    # selection models in the direction of the pooled effect: the step function at p =
    # .025, and the two smooth weight functions (beta: Citkowicz & Vevea 2017; half-normal:
    # Preston et al. 2004), each with its LRT against no selection
    side = "less" if float(np.ravel(res.estimate)[0]) < 0 else "greater"
    for key, kind, kw_sel in SELECTION_MODELS:
        fits[key] = run.section(
            f"selection model ({kind})",
            lambda kw_sel=kw_sel: selmodel(res, alternative=side, **kw_sel),
            f"a selection model needs at least {SELMODEL_MIN_K} studies; k = {k}"
            if k < SELMODEL_MIN_K
            else None,
        )
    fits["fsn"] = {
        t: run.section(f"fail-safe N ({t})", lambda t=t: fsn(y, v, type=t))
        for t in ("Rosenthal", "Orwin", "Rosenberg")
    }
    need_loo = 2 if fixed else 3
    few_loo = (
        f"needs at least {need_loo} studies (every fit leaves one out); k = {k}"
        if k < need_loo
        else None
    )
    run.step("leave-one-out and influence diagnostics")
    fits["leave1out"] = run.section("leave-one-out", lambda: leave1out(res), few_loo)
    fits["influence"] = run.section("influence diagnostics", lambda: influence(res), few_loo)
    fits["baujat"] = run.section("Baujat", lambda: baujat_fit(res), few_loo)
    return fits


# --------------------------------------------------------------------------- report


def _effect_text(st: _Studies) -> str:
    if st.measure is None:
        cols = st.columns
        return f"effect sizes yi from column {cols['yi']!r}, variances vi from {cols['vi']!r}"
    args = ", ".join(f"{a}={c}" for a, c in st.columns.items())
    return f"{st.measure} ({_MEASURE_NAMES[st.measure]}) computed as metafor's escalc from {args}"


def _ratio_line(res: PoolResult, measure: str | None) -> str | None:
    if measure not in _RATIO_NAMES or res.has_mods:
        return None
    e = {k: math.exp(float(getattr(res, k))) for k in ("estimate", "ci_lb", "ci_ub")}
    line = (
        f"Back-transformed ({_RATIO_NAMES[measure]}): {e['estimate']:.4f} "
        f"({res.level:g}% CI {e['ci_lb']:.4f} to {e['ci_ub']:.4f})"
    )
    if math.isfinite(float(res.pi_lb)):
        line += (
            f"; {res.level:g}% prediction interval {math.exp(float(res.pi_lb)):.4f} to "
            f"{math.exp(float(res.pi_ub)):.4f}"
        )
    return line + "."


def _heterogeneity_md(res: PoolResult, ci) -> list[str]:
    lines = [
        f"Q(df = {res.k - 1}) = {_f(res.QE)}, p {_peq(res.QEp)}"
        if res.k > 1
        else "One study: no test for heterogeneity.",
        "",
    ]
    if ci is None:
        lines += [
            f"I^2 = {_f(res.I2, 2)}%, H^2 = {_f(res.H2, 2)} (common-effect model: from Q).",
            "",
        ]
        return lines
    rows = []
    for name, key, digits in (("tau^2", "tau2", 4), ("tau", "tau", 4), ("I^2 (%)", "I2", 2),
                              ("H^2", "H2", 4)):  # fmt: skip
        lb = ci.lb_sign + _f(getattr(ci, key + "_lb"), digits)
        ub = ci.ub_sign + _f(getattr(ci, key + "_ub"), digits)
        rows.append([name, _f(getattr(ci, key), digits), lb, ub])
    lines.append(f"Q-profile {ci.level:g}% confidence intervals (Viechtbauer, 2007):")
    lines += ["", _md_table(["", "estimate", "ci.lb", "ci.ub"], rows), ""]
    if ci.ci_null:
        lines += ["Both bounds for tau^2 fall below 0: the intervals are the null set.", ""]
    return lines


def _bias_md(fits, level) -> list[str]:
    rows = []
    eg = fits.get("egger")
    if eg is not None:
        stat = f"{'t' if np.isfinite(eg.dfs) else 'z'} = {_f(eg.zval, 3)}"
        rows.append(
            ["Egger's regression test (predictor: SE)", stat, _p(eg.pval),
             f"limit estimate {_f(eg.est)} [{_f(eg.ci_lb)}, {_f(eg.ci_ub)}]"]
        )  # fmt: skip
    rk = fits.get("ranktest")
    if rk is not None:
        rows.append(["Rank correlation test (Begg)", f"tau = {_f(rk.tau, 3)}", _p(rk.pval), ""])
    tf = fits.get("trimfill")
    if tf is not None:
        rows.append(
            [f"Trim-and-fill ({tf.estimator}, side chosen: {tf.side})",
             f"k0 = {int(tf.k0)} (SE {_f(tf.se_k0, 2)})", "",
             f"adjusted estimate {_f(tf.estimate)} [{_f(tf.ci_lb)}, {_f(tf.ci_ub)}]"]
        )  # fmt: skip
    pp = fits.get("pet_peese")
    if pp is not None:
        rows.append(
            [f"PET-PEESE (chosen: {pp.chosen})",
             f"PET intercept p {'<' if pp.use_peese else '>='} {pp.alpha:g}", _p(pp.pval),
             f"estimate {_f(pp.estimate)} [{_f(pp.ci_lb)}, {_f(pp.ci_ub)}]"]
        )  # fmt: skip
    for t, r in fits.get("fsn", {}).items():
        if r is None:
            continue
        extra = ""
        if t == "Orwin":
            extra = f"target effect {_f(r.target)} (half the mean {_f(r.meanes)})"
        elif t == "Rosenberg":
            extra = f"weighted mean {_f(r.meanes)}"
        p = _p(r.pval) if t != "Orwin" else ""
        rows.append([f"Fail-safe N ({t}, alpha {r.alpha:g})", f"N = {r.fsnum:g}", p, extra])
    for key, kind, _ in SELECTION_MODELS:
        sel = fits.get(key)
        if sel is not None:
            rows.append([f"Selection model ({kind}; LRT, {sel.LRTdf} df)", f"{_f(sel.LRT)}",
                         _p(sel.LRTp), f"adjusted {_f(sel.beta[0])} [{_f(sel.ci_lb[0])}, "
                         f"{_f(sel.ci_ub[0])}]"])  # fmt: skip
    lines = []
    if rows:
        lines += [_md_table(["Method", "Statistic", "p", "Estimate"], rows, "lrrl"), ""]
    for key in ("egger", "trimfill", "pet_peese", *(m[0] for m in SELECTION_MODELS)):
        r = fits.get(key)
        if r is not None:
            lines += ["```text", r.summary().strip("\n"), "```", ""]
    return lines


def _loo_md(loo, level) -> list[str]:
    frame = loo.to_frame()
    stat = "tval" if loo.test == "knha" else "zval"
    head = ["Left out", "estimate", f"{level:g}% CI", stat, "p", "Q", "I^2 (%)"]
    fixed = loo.method in FIXED_METHODS
    if not fixed:
        head.insert(6, "tau^2")
    rows = []
    for name, r in frame.iterrows():
        row = [str(name), _f(r["estimate"]), f"[{_f(r['ci_lb'])}, {_f(r['ci_ub'])}]",
               _f(r[stat], 3), _p(r["pval"]), _f(r["Q"], 2)]  # fmt: skip
        if not fixed:
            row.append(_f(r["tau2"]))
        row.append(_f(r["I2"], 1))
        rows.append(row)
    return [_md_table(head, rows), ""]


def _influence_md(inf) -> list[str]:
    frame = inf.to_frame()
    flagged = [str(n) for n, r in frame.iterrows() if r["inf"] == "*"]
    lines = [
        "Influential studies (metafor's criteria: |DFFITS| > 3 sqrt(1/(k-1)), Cook's distance "
        "above the median of chi^2(1), hat > 3/k, or |DFBETAS| > 1): "
        + (", ".join(flagged) if flagged else "none")
        + ".",
        "",
    ]
    head = ["Study", "rstudent", "DFFITS", "Cook's D", "cov.r", "tau^2 del", "QE del", "hat",
            "weight (%)", "DFBETAS", "inf"]  # fmt: skip
    rows = [
        [str(n), _f(r["rstudent"], 3), _f(r["dffits"], 3), _f(r["cook_d"], 3), _f(r["cov_r"], 3),
         _f(r["tau2_del"]), _f(r["QE_del"], 2), _f(r["hat"], 3), _f(r["weight"], 2),
         _f(r["dfbs"], 3), r["inf"]]
        for n, r in frame.iterrows()
    ]  # fmt: skip
    return lines + [_md_table(head, rows), ""]


def _report(st, fits, run, settings, files) -> str:
    res: PoolResult = fits["model"]
    method, test, level = settings["method"], settings["test"], settings["level"]
    kind = "common-effect" if method in FIXED_METHODS else f"random-effects ({method})"
    lines = [
        f"# Meta-analysis of {st.path.name}",
        "",
        f"- studies: k = {res.k} of {st.n_rows} rows"
        + (f" ({len(st.dropped)} dropped, see notes)" if st.dropped else ""),
        f"- effect size: {_effect_text(st)}",
        f"- model: {kind}, {'Knapp-Hartung' if test == 'knha' else 'z'} test, {level:g}% intervals",
    ]
    if st.mods is not None:
        lines.append(f"- moderators: {', '.join(st.mods.columns)}")
    if st.groups is not None:
        lines.append(f"- subgroups: column {settings['subgroup']!r}")
    if st.clusters is not None:
        lines.append(f"- clusters: column {settings['cluster']!r} ({len(set(st.clusters))})")
    lines += ["", "## Model", "", "```text", res.summary().strip("\n"), "```", ""]
    ratio = _ratio_line(res, st.measure)
    if ratio:
        lines += [ratio, ""]
    lines += ["## Heterogeneity", ""] + _heterogeneity_md(res, fits.get("confint"))
    if fits.get("bayes") is not None:
        lines += ["## Bayesian random effects", ""] + bayes_markdown(fits["bayes"])
    if "heterogeneity intervals" in run.skipped:
        lines += [f"Intervals skipped: {run.skipped['heterogeneity intervals']}.", ""]
    if st.mods is not None:
        lines += ["## Meta-regression", ""]
        mr = fits.get("mods")
        if mr is None:
            lines += [f"Skipped: {run.skipped.get('meta-regression', 'not fitted')}.", ""]
        else:
            lines += ["```text", mr.summary().strip("\n"), "```", ""]
            mci = fits.get("mods_confint")
            if mci is not None:
                lines += [
                    f"Residual tau^2 {level:g}% Q-profile CI: [{mci.lb_sign}{_f(mci.tau2_lb)}, "
                    f"{mci.ub_sign}{_f(mci.tau2_ub)}]; residual I^2 CI: [{_f(mci.I2_lb, 2)}%, "
                    f"{_f(mci.I2_ub, 2)}%].",
                    "",
                ]
    if st.clusters is not None:
        lines += ["## Cluster-robust inference", ""]
        for key, what in (("robust", "model"), ("robust_mods", "meta-regression")):
            rb = fits.get(key)
            if rb is not None:
                lines += [f"{what.capitalize()}, clusters from column {settings['cluster']!r}:",
                          "", "```text", rb.summary(), "```", ""]  # fmt: skip
                if key == "robust_mods":
                    lines += [f"Test of moderators, {rb.wald_test().summary()}.", ""]
        if fits.get("robust") is None:
            lines += [f"Skipped: {run.skipped.get('cluster-robust inference')}.", ""]
    if fits.get("multilevel") is not None:
        lines += ["## Multilevel model", ""]
        lines += multilevel_markdown(fits["multilevel"], settings["cluster"], settings["inner"])
    elif "multilevel model" in run.skipped:
        lines += ["## Multilevel model", "", f"Skipped: {run.skipped['multilevel model']}.", ""]
    if st.groups is not None:
        lines += ["## Subgroups", ""]
        sg = fits.get("subgroups")
        if sg is None:
            lines += [f"Skipped: {run.skipped.get('subgroups', 'not fitted')}.", ""]
        else:
            lines += [sg.to_markdown().strip("\n"), ""]
            single = [str(n) for n, kk in zip(sg.levels, np.asarray(sg.k), strict=True) if kk == 1]
            if single and method not in FIXED_METHODS:
                lines += [
                    f"Single-study subgroups ({', '.join(single)}) are fitted with tau^2 = 0 "
                    "and a z test, as metafor's rma does for k = 1.",
                    "",
                ]
    lines += ["## Publication bias", ""] + _bias_md(fits, level)
    lines += ["## Leave-one-out", ""]
    lines += _loo_md(fits["leave1out"], level) if fits.get("leave1out") is not None else [
        f"Skipped: {run.skipped.get('leave-one-out')}.", ""]  # fmt: skip
    lines += ["## Influence diagnostics", ""]
    lines += _influence_md(fits["influence"]) if fits.get("influence") is not None else [
        f"Skipped: {run.skipped.get('influence diagnostics')}.", ""]  # fmt: skip
    if run.skipped:
        lines += ["## Skipped sections", ""]
        lines += [f"- {name}: {why}" for name, why in run.skipped.items()] + [""]
    notes = [f"dropped {d}" for d in st.dropped] + run.notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Files", ""]
    lines += [f"- {name}: `{path}`" for name, path in files.items()]
    plots = [n for n in _PLOTS if f"{n}.png" in files.values()]
    if plots:
        lines += [""] + [f"![{n} plot]({n}.png)" for n in plots]
    return "\n".join(lines) + "\n"


def _studies_frame(st: _Studies, fits) -> pd.DataFrame:
    res: PoolResult = fits["model"]
    frame = pd.DataFrame({"row": st.rows + 1, "study": st.labels})
    for col in st.table.columns:
        if col not in frame.columns and col != st.label:
            frame[col] = st.table[col].to_numpy()
    crit = float(stats.norm.isf((1 - res.level / 100) / 2))
    sei = np.sqrt(st.vi)
    frame["yi"] = st.yi
    frame["vi"] = st.vi
    frame["sei"] = sei
    frame["ci_lb"] = st.yi - crit * sei
    frame["ci_ub"] = st.yi + crit * sei
    frame["weight"] = np.asarray(res.weights, dtype=float)
    inf = fits.get("influence")
    if inf is not None:
        for c in ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "QE_del", "hat", "dfbs"):
            frame[c] = np.asarray(getattr(inf, c), dtype=float)
        frame["influential"] = np.asarray(inf.is_infl, dtype=bool)
    loo = fits.get("leave1out")
    if loo is not None:
        for c in ("estimate", "se", "ci_lb", "ci_ub", "pval", "Q", "tau2", "I2"):
            frame[f"loo_{c}"] = np.asarray(getattr(loo, c), dtype=float)
    bj = fits.get("baujat")
    if bj is not None:
        frame["baujat_x"] = np.asarray(bj.x, dtype=float)
        frame["baujat_y"] = np.asarray(bj.y, dtype=float)
    return frame


def _results(st, fits, run, settings, files) -> dict[str, Any]:
    def drop(d, *names):
        return {k: v for k, v in d.items() if k not in names}

    out: dict[str, Any] = {
        "input": {
            "file": str(st.path),
            "rows": st.n_rows,
            "k": int(st.yi.size),
            "rows_used": (st.rows + 1).tolist(),
            "dropped": st.dropped,
            "measure": st.measure,
            "columns": st.columns,
            "label": st.label,
            "mods": None if st.mods is None else list(st.mods.columns),
            "subgroup": settings.get("subgroup"),
        },
        "settings": {k: settings[k] for k in ("method", "test", "level")},
        "model": fits["model"].to_dict(),
    }
    ci = fits.get("confint")
    out["heterogeneity"] = None if ci is None else ci.to_dict()
    if st.mods is not None:
        mr = fits.get("mods")
        out["meta_regression"] = None if mr is None else drop(mr.to_dict(), "X")
        if mr is not None:
            mci = fits.get("mods_confint")
            out["meta_regression"]["confint"] = None if mci is None else mci.to_dict()
    if st.groups is not None:
        sg = fits.get("subgroups")
        out["subgroups"] = None if sg is None else drop(sg.to_dict(), "yi", "vi", "labels")
    fs = fits.get("fsn", {})
    out["publication_bias"] = {
        "egger": None if fits.get("egger") is None else fits["egger"].to_dict(),
        "ranktest": None if fits.get("ranktest") is None else fits["ranktest"].to_dict(),
        "trimfill": None if fits.get("trimfill") is None else fits["trimfill"].to_dict(),
        "pet_peese": None if fits.get("pet_peese") is None else fits["pet_peese"].to_dict(),
        **{
            key: (None if fits.get(key) is None else fits[key].to_dict())
            for key, _, _ in SELECTION_MODELS
        },  # fmt: skip
        "fsn": {t: (None if r is None else r.to_dict()) for t, r in fs.items()},
    }
    loo = fits.get("leave1out")
    out["leave1out"] = None if loo is None else drop(loo.to_dict(), "full")
    inf = fits.get("influence")
    out["influence"] = None if inf is None else drop(inf.to_dict(), "full")
    bj = fits.get("baujat")
    out["baujat"] = None if bj is None else {"x": bj.x, "y": bj.y}
    if fits.get("bayes") is not None:
        out["bayes"] = bayes_results(fits["bayes"])
    if st.clusters is not None:
        out["robust"] = {what: (None if fits.get(key) is None else drop(fits[key].to_dict(), "vcov"))
                         for key, what in (("robust", "model"), ("robust_mods", "meta_regression"))}  # fmt: skip
        if fits.get("robust_mods") is not None:
            out["robust"]["moderators_htz"] = fits["robust_mods"].wald_test().to_dict()
    if fits.get("multilevel") is not None:
        out["multilevel"] = multilevel_results(fits["multilevel"])
    out["skipped"] = dict(run.skipped)
    out["notes"] = [f"dropped {d}" for d in st.dropped] + list(run.notes)
    out["files"] = dict(files)
    return _plain(out)


# --------------------------------------------------------------------------- plots


def _plots(st, fits, folder: Path, run: _Run, dpi: int) -> dict[str, str]:
    from spatialmeta.meta_analysis.bias_plots import baujat_plot, funnel_plot, radial_plot
    from spatialmeta.meta_analysis.plots import forest_plot

    res: PoolResult = fits["model"]
    ratio = st.measure in _RATIO_NAMES
    axis = (
        f"{_RATIO_NAMES[st.measure].capitalize()} (log scale)"
        if ratio
        else (_MEASURE_NAMES[st.measure].capitalize() if st.measure else "Effect size")
    )
    scale_name = _MEASURE_NAMES.get(st.measure or "", "effect size")
    title = st.path.stem
    written: dict[str, str] = {}

    def draw(name, fn, need=None):
        def both():
            fig = fn()
            for ext in ("png", "svg"):
                p = folder / f"{name}.{ext}"
                fig.savefig(p, format=ext, dpi=dpi, bbox_inches="tight", facecolor="white")
                written[f"{name}_{ext}"] = p.name
            return fig

        run.section(f"{name} plot", both, need)

    sg = fits.get("subgroups")
    draw(
        "forest",
        lambda: forest_plot(
            res, xlabel=axis, title=title, subgroups=sg,
            transform=np.exp if ratio else None, xscale="log" if ratio else "linear",
        ),
    )  # fmt: skip
    tf = fits.get("trimfill")
    draw(
        "funnel",
        lambda: funnel_plot(
            tf if tf is not None else res, xlabel=scale_name.capitalize(), title=title
        ),
    )
    bj = fits.get("baujat")
    draw(
        "baujat",
        lambda: baujat_plot(bj, title=title),
        None if bj is not None else run.skipped.get("Baujat", "Baujat coordinates not computed"),
    )
    draw("radial", lambda: radial_plot(res, title=title))
    if fits.get("bayes") is not None:
        bayes_plots(st, fits["bayes"], draw, axis, ratio, scale_name)
    return written


# --------------------------------------------------------------------------- output folder


def _check_out(out: Path, studies: Path) -> Path:
    final = Path(os.path.abspath(out))
    cwd = Path.cwd().resolve()
    real = final.resolve()
    if real == cwd or real in cwd.parents:
        raise StudyTableError(
            f"--out '{out}' is the current folder or contains it; pool replaces the whole --out "
            "folder, so give a new subfolder, e.g. --out pool_report."
        )
    if studies.exists() and real in studies.resolve().parents:
        raise StudyTableError(
            f"--out '{out}' contains the studies file '{studies}'; pool replaces the whole "
            "--out folder, so write the report to another folder."
        )
    if final.exists():
        if not final.is_dir():
            raise StudyTableError(f"--out '{out}' is a file; give a folder for the report.")
        entries = [p.name for p in final.iterdir()]
        if entries and "results.json" not in entries:
            raise StudyTableError(
                f"--out '{out}' already holds other files ({', '.join(sorted(entries)[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); pool replaces the whole folder, so "
                "give a new or empty folder (or one written by an earlier pool run)."
            )
    ensure_writable_dir(final.parent)
    return final


def _summary(st, fits, run, out: Path, settings) -> str:
    res: PoolResult = fits["model"]
    parts = [
        f"{st.path.name}: k = {res.k} {'study' if res.k == 1 else 'studies'}"
        + (f" ({len(st.dropped)} rows dropped)" if st.dropped else "")
        + f"; {_effect_text(st)}",
        res.summary().rstrip("\n"),
    ]
    ratio = _ratio_line(res, st.measure)
    if ratio:
        parts.append(ratio)
    ci = fits.get("confint")
    if ci is not None:
        parts.append(
            f"tau^2 {ci.level:g}% CI [{ci.lb_sign}{_f(ci.tau2_lb)}, {ci.ub_sign}{_f(ci.tau2_ub)}], "
            f"I^2 CI [{_f(ci.I2_lb, 2)}%, {_f(ci.I2_ub, 2)}%] (Q-profile)"
        )
    mr = fits.get("mods")
    if mr is not None:
        parts.append("Meta-regression:\n" + mr.summary().strip("\n"))
    sg = fits.get("subgroups")
    if sg is not None:
        parts.append(sg.summary().rstrip("\n"))
    eg, tf = fits.get("egger"), fits.get("trimfill")
    bias = []
    if eg is not None:
        stat = "t" if np.isfinite(eg.dfs) else "z"
        bias.append(
            f"Egger {stat} = {_f(eg.zval, 3)}, p {_peq(eg.pval)}; limit estimate {_f(eg.est)}"
        )
    if tf is not None:
        bias.append(f"trim-and-fill: k0 = {int(tf.k0)} ({tf.side}), adjusted {_f(tf.estimate)}")
    for key, kind, _ in SELECTION_MODELS:
        sel = fits.get(key)
        if sel is not None:
            bias.append(f"selection model ({kind}): adjusted {_f(sel.beta[0])}, LRT p "
                        f"{_peq(sel.LRTp)}")  # fmt: skip
    fs = fits.get("fsn", {}).get("Rosenthal")
    if fs is not None:
        bias.append(f"fail-safe N (Rosenthal) = {fs.fsnum:g}")
    if bias:
        parts.append("Publication bias: " + "; ".join(bias))
    if fits.get("bayes") is not None:
        parts.append(bayes_summary(fits["bayes"]))
    rb = fits.get("robust")
    if rb is not None:
        parts.append(
            f"Cluster-robust ({rb.type}, {rb.n_clusters} clusters): estimate "
            f"{_f(rb.beta[0])}, SE {_f(rb.se[0])}, t = {_f(rb.tval[0], 3)} on "
            f"{_f(rb.df[0], 2)} df (Satterthwaite), p {_peq(rb.pval[0])}"
        )
    if fits.get("multilevel") is not None:
        parts.append(multilevel_summary(fits["multilevel"]))
    inf = fits.get("influence")
    if inf is not None:
        flagged = [str(x) for x, f in zip(st.labels, np.asarray(inf.is_infl), strict=True) if f]
        parts.append("Influential studies: " + (", ".join(flagged) if flagged else "none"))
    if run.skipped:
        parts.append(
            "Skipped:\n" + "\n".join(f"- {name}: {why}" for name, why in run.skipped.items())
        )
    notes = [f"dropped {d}" for d in st.dropped] + list(run.notes)
    if notes:
        parts.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    parts.append(f"Outputs are in {out} (report: {out / 'report.md'})")
    return "\n\n".join(parts) + "\n"


def pool_job(
    studies: str | os.PathLike,
    out: str | os.PathLike,
    *,
    measure: str | None = None,
    method: str = "REML",
    test: str = "z",
    level: float = 95.0,
    mods: str | Sequence[str] | None = None,
    subgroup: str | None = None,
    label: str | None = None,
    yi: str | None = None,
    vi: str | None = None,
    columns: dict[str, str] | Sequence[str] | None = None,
    prior: str | None = None,
    cluster: str | None = None,
    robust_type: str = "CR2",
    structure: str | None = None,
    inner: str | None = None,
    rho: float = 0.0,
    plots: bool = True,
    dpi: int = 150,
    progress: bool | Callable[[str], None] = False,
) -> PoolJobResult:
    """Run the whole meta-analysis of a study table and write the report folder ``out``.

    Parameters
    ----------
    studies : path
        CSV with one row per study (comma, semicolon or tab separated; UTF-8).
    out : path
        Folder to write. It is built under a temporary name beside ``out`` and
        renamed into place at the end; an existing ``out`` is replaced only if
        it is empty or was written by an earlier run (holds ``results.json``).
    measure : str, optional
        Compute effect sizes with :func:`~spatialmeta.meta_analysis.escalc`
        from raw columns (``MD``, ``SMD``, ``RR``, ``OR``, ...). Columns named
        as escalc's arguments (``m1i, sd1i, n1i, m2i, sd2i, n2i``; ``ai, bi,
        ci, di`` or ``n1i, n2i``; ``x1i, t1i, x2i, t2i``; ``xi, ni``; ``ri,
        ni``) are used as they are; others are mapped with ``columns``.
        Without it, the table holds effect sizes and sampling variances.
    method, test, level
        As :func:`~spatialmeta.meta_analysis.pool` (``"REML"``, ``"z"``, 95).
    mods : str or sequence of str, optional
        Moderator columns ("a,b" or a list) for a meta-regression; numeric
        columns enter as they are, text columns as categories (treatment
        contrasts, first level in sorted order as reference).
    subgroup : str, optional
        Column of subgroups: a model per subgroup (separate tau^2) and the
        test for subgroup differences, also drawn in the forest plot.
    label : str, optional
        Column of study labels (default: a column named ``study``, ``label`` or
        ``slab``, any case, else the row numbers).
    yi, vi : str, optional
        Columns of effect sizes and sampling variances (default ``yi``, ``vi``);
        only without ``measure``.
    columns : dict or sequence of "ARG=COLUMN", optional
        escalc argument → column, for raw columns named otherwise.
    cluster : str, optional
        Column of clusters (a study with several effects, a region group): adds
        cluster-robust standard errors, Satterthwaite t tests and intervals for the
        model and the meta-regression (clubSandwich's ``coef_test``).
    robust_type : {"CR2", "CR1", "CR0"}
        The sandwich's small-sample adjustment.
    structure : {"3level", "CS", "HCS", "UN", "AR", "DIAG"}, optional
        With ``cluster``: a multilevel section (:func:`~spatialmeta.meta_analysis.
        multilevel.pool_mv`): ``"3level"`` nests the effects in the clusters (metafor's
        ``~ 1 | cluster/effect``), the others correlate effects across the levels of
        ``inner`` within a cluster (``~ inner | cluster``); variance components (profile
        intervals for 3level), I² by level, the coefficients with z tests and the
        cluster-robust (``robust_type``) tests of that fit.
    inner : str, optional
        Column of the inner levels (outcome, time point) for a structure other than 3level.
    rho : float
        Correlation of the sampling errors of effects in one cluster (imputed, as
        clubSandwich's ``impute_covariance_matrix``; 0: independent).
    prior : str, optional
        Add a Bayesian random-effects section with this prior for tau (and mu):
        ``turner2015[:OUTCOME,COMPARISON]``, ``rhodes2015[:AREA,OUTCOME,COMPARISON]``,
        ``bartos2021:SCALE[,SUBFIELD]``, ``halfnormal:SCALE``, ``halft:SCALE[,DF]``,
        ``lognormal:MU,SIGMA``, ``invgamma:SHAPE,SCALE``, ``uniform:UPPER``, or
        ``learned:PATH`` (a prior file of ``spatialmeta prior learn``, or a corpus);
        see :mod:`spatialmeta.meta_analysis.prior_files`. Adds the posterior and
        shrinkage plots.
    plots : bool
        Draw the forest, funnel, Baujat and radial plots (PNG and SVG).
    dpi : int
        Resolution of the PNGs.
    progress : bool or callable
        Report the steps (on stderr for True, or to the callable).

    Returns
    -------
    PoolJobResult
        The folder, the summary printed by ``spatialmeta pool``, the JSON
        results, the files written, the skipped sections and notes.

    Raises
    ------
    StudyTableError
        A missing or unreadable file, missing columns, a non-numeric cell (row
        and column named), a variance <= 0, k = 1 under a random-effects
        method, an unknown measure, method or test, or an unusable ``out``.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "s.csv").write_text("study,yi,vi\\na,0.1,0.02\\nb,0.4,0.03\\nc,0.3,0.01\\n")
    >>> job = pool_job(d / "s.csv", d / "report", label="study", plots=False)
    >>> round(job.results["model"]["estimate"], 4), job.results["model"]["k"]
    (0.2636, 3)
    >>> sorted(p.name for p in (d / "report").iterdir())
    ['report.md', 'results.json', 'studies.csv']
    """
    measure, method, test, level = _check_options(measure, method, test, level)
    if columns is not None and not isinstance(columns, dict):
        columns = parse_columns(columns)
    studies = Path(studies)
    st = read_studies(
        studies, measure=measure, yi=yi, vi=vi, columns=columns, label=label, mods=mods,
        subgroup=subgroup, cluster=cluster, inner=inner,
    )  # fmt: skip
    if st.clusters is not None and len(set(st.clusters)) < 2:
        raise StudyTableError(
            f"{studies}: --cluster column {cluster!r} holds one cluster ({st.clusters[0]!r}) "
            "for every study; cluster-robust inference needs at least two clusters."
        )
    problem = check_structure(structure, inner, cluster, rho)
    if problem is not None:
        raise StudyTableError(f"{problem}.")
    if robust_type not in ROBUST_TYPES:
        raise StudyTableError(
            f"--robust must be one of {', '.join(ROBUST_TYPES)}; got {robust_type!r}."
        )
    final = _check_out(Path(out), studies)
    k = st.yi.size
    if k == 0:
        raise StudyTableError(
            f"{studies}: no study has both an effect size and a sampling variance "
            f"({len(st.dropped)} rows dropped, e.g. {st.dropped[0]}); fill in the table."
        )
    if k == 1 and method not in FIXED_METHODS:
        raise StudyTableError(
            f"{studies}: only one study ({st.labels[0]!r}, row {st.rows[0] + 1}) can be "
            f"analysed; --method {method} (random effects) needs at least 2 studies to "
            "estimate tau^2: use --method FE to report the single study's effect, or add studies."
        )
    bayes = None
    if prior is not None:  # the prior is resolved (and refused) before any work
        early: list[str] = []
        bayes = bayes_fit(st, prior, level, early)
    report: Callable[[str], None] | None
    if progress is True:

        def report(text: str) -> None:
            print(f"[pool] {text}", file=sys.stderr, flush=True)

    else:
        report = progress or None
    run = _Run(report)
    settings = {"method": method, "test": test, "level": level, "label": label,
                "subgroup": subgroup, "cluster": cluster, "inner": inner}  # fmt: skip
    fits = _fit_all(st, method, test, level, run, robust_type)
    if structure is not None:
        run.step(f"multilevel model ({structure}, {len(set(st.clusters))} clusters)")
        fits["multilevel"] = run.section(
            "multilevel model",
            lambda: multilevel_fit(
                st,
                structure,
                rho=rho,
                method=method,
                level=level,
                robust_type=robust_type,
                notes=run.notes,
            ),  # fmt: skip
        )
    if bayes is not None:
        fits["bayes"] = bayes
        run.notes += early
    files: dict[str, str] = {
        "report": "report.md",
        "results": "results.json",
        "studies": "studies.csv",
    }
    with atomic_path(final) as tmp:
        tmp.mkdir()
        if plots:
            run.step("plots: forest, funnel, Baujat, radial (PNG and SVG)")
            files.update(_plots(st, fits, tmp, run, dpi))
        run.step(f"writing {final}")
        results = _results(st, fits, run, settings, files)
        text = json.dumps(results, indent=2, allow_nan=False)
        (tmp / "results.json").write_text(text + "\n", encoding="utf-8")
        _studies_frame(st, fits).to_csv(tmp / "studies.csv", index=False)
        (tmp / "report.md").write_text(_report(st, fits, run, settings, files), encoding="utf-8")
    return PoolJobResult(
        out=final,
        summary=_summary(st, fits, run, final, settings),
        results=results,
        files={name: final / rel for name, rel in files.items()},
        skipped=dict(run.skipped),
        notes=[f"dropped {d}" for d in st.dropped] + list(run.notes),
        model=fits["model"],
    )
