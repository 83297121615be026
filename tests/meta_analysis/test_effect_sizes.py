"""escalc() against metafor::escalc reference values, inputs, batching and errors."""

from __future__ import annotations

import doctest
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis.effect_sizes import ADD_TO, MEASURES, escalc

effect_sizes_module = importlib.import_module("spatialmeta.meta_analysis.effect_sizes")

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
REFERENCE = REFERENCE_DIR / "escalc_reference.json"
DATA = json.loads(REFERENCE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}
RTOL, ATOL = 1e-10, 1e-12


def _values(xs) -> np.ndarray:
    """JSON null -> NaN, "Inf"/"-Inf" -> +-inf."""
    return np.array([np.nan if x is None else float(x) for x in xs])


def _inputs(case: dict) -> dict[str, np.ndarray]:
    return {k: _values(v) for k, v in case["inputs"].items()}


def _assert_matches(got, want) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)


# --------------------------------------------------------------------------- reference


@pytest.mark.parametrize("name", list(CASES))
def test_matches_metafor(name):
    case = CASES[name]
    res = escalc(case["measure"], **_inputs(case), **case["options"])
    assert list(res.columns) == ["yi", "vi"]
    assert res.attrs["measure"] == case["measure"]
    _assert_matches(res["yi"], _values(case["yi"]))
    _assert_matches(res["vi"], _values(case["vi"]))


def test_reference_covers_the_requested_grid():
    assert set(MEASURES) == {case["measure"] for case in DATA["cases"]}
    wanted = {
        "dat.bcg": {"RR", "OR", "RD", "PETO"},
        "dat.normand1999": {"MD", "SMD", "SMDH", "ROM"},
        "dat.hart1999": {"IRR", "IRD"},
        "dat.pritz1997": {"PR", "PLO", "PAS", "PFT"},
        "dat.molloy2014": {"COR", "ZCOR"},
    }
    for source, measures in wanted.items():
        assert measures <= {c["measure"] for c in DATA["cases"] if c["source"] == source}
    for measure in ("RR", "OR", "RD", "PETO"):
        for to in ADD_TO:
            assert f"zero2x2_{measure}_{to}" in CASES
    # the zero-cell sets do contain zero cells, and "none" leaves some studies undefined
    assert 0 in CASES["zero2x2_OR_none"]["inputs"]["ai"]
    assert None in CASES["zero2x2_OR_none"]["yi"]
    # 17 significant digits: the stored doubles round-trip exactly
    assert re.search(r"\d\.\d{16}", REFERENCE.read_text())


def test_reference_records_versions():
    assert DATA["R_version"].startswith("R version ")
    assert re.fullmatch(r"\d+\.\d+[.-]\d+", DATA["metafor_version"])
    readme = (REFERENCE_DIR / "README.md").read_text()
    assert "escalc_reference.json" in readme
    # R writes 3.8.1 for the version that CRAN calls 3.8-1
    assert re.search(DATA["metafor_version"].replace(".", "[.-]"), readme)
    assert DATA["R_version"].split(" (")[0].removeprefix("R version ") in readme


# --------------------------------------------------------------------------- inputs


def _bcg_frame() -> pd.DataFrame:
    case = CASES["bcg_RR"]
    frame = pd.DataFrame(
        {
            "trial": case["labels"],
            "tpos": np.array(case["inputs"]["ai"], dtype=int),
            "tneg": np.array(case["inputs"]["bi"], dtype=int),
            "cpos": np.array(case["inputs"]["ci"], dtype=int),
            "cneg": np.array(case["inputs"]["di"], dtype=int),
        }
    )
    return frame


def test_column_names_with_data_and_slab():
    bcg = _bcg_frame()
    before = bcg.copy()
    res = escalc("RR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", slab="trial")
    pd.testing.assert_frame_equal(bcg, before)  # data is not modified
    assert list(res.columns) == ["trial", "tpos", "tneg", "cpos", "cneg", "yi", "vi"]
    assert res.index.name == "trial"
    assert list(res.index) == CASES["bcg_RR"]["labels"]
    _assert_matches(res["yi"], _values(CASES["bcg_RR"]["yi"]))
    _assert_matches(res["vi"], _values(CASES["bcg_RR"]["vi"]))

    only = escalc("RR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", append=False)
    assert list(only.columns) == ["yi", "vi"]
    pd.testing.assert_index_equal(only.index, bcg.index)


def test_arrays_series_lists_and_mixed_inputs_agree():
    bcg = _bcg_frame()
    by_name = escalc("OR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", append=False)
    by_series = escalc("OR", ai=bcg.tpos, bi=bcg.tneg, ci=bcg.cpos, di=bcg.cneg)
    by_list = escalc("OR", ai=bcg.tpos.tolist(), bi=list(bcg.tneg), ci=bcg.cpos.to_numpy(),
                     di=tuple(bcg.cneg))  # fmt: skip
    mixed = escalc("OR", bcg, ai="tpos", bi=bcg.tneg.to_numpy(), ci="cpos", di="cneg")
    for other in (by_series, by_list, mixed[["yi", "vi"]]):
        np.testing.assert_array_equal(by_name.to_numpy(), other.to_numpy())
    # object columns holding numbers (e.g. read with mixed types) are accepted
    obj = escalc("OR", ai=bcg.tpos.astype(object), bi=bcg.tneg, ci=bcg.cpos, di=bcg.cneg)
    np.testing.assert_array_equal(by_name.to_numpy(), obj.to_numpy())


def test_row_totals_instead_of_cells():
    case = CASES["bcg_RR_totals"]
    res = escalc("RR", **_inputs(case))
    _assert_matches(res["yi"], _values(CASES["bcg_RR"]["yi"]))
    # totals that agree with the cells may be given as well
    both = escalc("RR", **_inputs(CASES["bcg_RR"]), n1i=_inputs(case)["n1i"])
    _assert_matches(both["vi"], _values(CASES["bcg_RR"]["vi"]))


def test_measure_is_case_insensitive_and_scalars_broadcast():
    case = CASES["normand1999_SMD"]
    inputs = _inputs(case)
    lower = escalc("smd", **inputs)
    _assert_matches(lower["yi"], _values(case["yi"]))
    same_n = escalc("MD", m1i=[1.0, 2.0], m2i=0.0, sd1i=1.0, sd2i=2.0, n1i=10, n2i=20)
    np.testing.assert_allclose(same_n["yi"], [1.0, 2.0])
    np.testing.assert_allclose(same_n["vi"], [1 / 10 + 4 / 20] * 2)
    single = escalc("ZCOR", ri=0.5, ni=13)
    assert single.shape == (1, 2)
    np.testing.assert_allclose(single.to_numpy(), [[np.arctanh(0.5), 0.1]])


def test_missing_values_give_missing_effects_only_there():
    case = CASES["normand1999_ROM"]
    inputs = _inputs(case)
    inputs["sd2i"][3] = np.nan
    res = escalc("ROM", **inputs)
    assert np.isnan(res["yi"][3]) and np.isnan(res["vi"][3])
    keep = np.arange(len(res)) != 3
    _assert_matches(res["yi"][keep], _values(case["yi"])[keep])
    _assert_matches(res["vi"][keep], _values(case["vi"])[keep])
    # pandas nullable integers with NA
    ni = pd.array([10, None, 30], dtype="Int64")
    props = escalc("PLO", xi=pd.array([2, 3, 4], dtype="Int64"), ni=ni)
    assert np.isnan(props["yi"][1]) and np.isfinite(props["yi"][[0, 2]]).all()


def test_pas_and_pft_default_to_no_correction():
    for measure in ("PAS", "PFT"):
        none = CASES[f"zeroprop_{measure}_none"]
        res = escalc(measure, **_inputs(none))  # default add, default to="only0"
        _assert_matches(res["yi"], _values(none["yi"]))
        forced = CASES[f"zeroprop_{measure}_add0.5"]
        res = escalc(measure, **_inputs(forced), add=0.5)
        _assert_matches(res["yi"], _values(forced["yi"]))


# --------------------------------------------------------------------------- batches


def test_batch_rows_match_separate_calls_and_if0all_is_per_row():
    zero, bcg = CASES["zero2x2_OR_if0all"], CASES["bcg_OR"]
    k = len(zero["yi"])
    stacked = {
        key: np.stack([_values(zero["inputs"][key]), _values(bcg["inputs"][key])[:k]])
        for key in ("ai", "bi", "ci", "di")
    }
    res = escalc("OR", **stacked, to="if0all")
    assert res.index.names == ["batch0", "study"]
    yi = res["yi"].to_numpy().reshape(2, k)
    vi = res["vi"].to_numpy().reshape(2, k)
    # row 0 has zero cells: every study of that row gets 1/2; row 1 has none: untouched
    _assert_matches(yi[0], _values(zero["yi"]))
    _assert_matches(vi[0], _values(zero["vi"]))
    _assert_matches(yi[1], _values(bcg["yi"])[:k])
    _assert_matches(vi[1], _values(bcg["vi"])[:k])


def test_leading_batch_dims():
    case = CASES["molloy2014_COR"]
    ri, ni = _values(case["inputs"]["ri"]), _values(case["inputs"]["ni"])
    batch = np.stack([np.stack([ri, -ri, ri / 2])] * 2)  # (2, 3, k)
    res = escalc("COR", ri=batch, ni=ni, slab=case["labels"])  # ni broadcasts
    assert len(res) == batch.size
    assert res.index.names == ["batch0", "batch1", "study"]
    yi = res["yi"].to_numpy().reshape(batch.shape)
    vi = res["vi"].to_numpy().reshape(batch.shape)
    _assert_matches(yi[1, 0], _values(case["yi"]))
    _assert_matches(vi[0, 1], _values(case["vi"]))
    np.testing.assert_allclose(yi[1, 2], ri / 2, rtol=RTOL)


def test_many_studies_at_once():
    rng = np.random.default_rng(0)
    k = 200_000
    n1, n2 = rng.integers(2, 500, k), rng.integers(2, 500, k)
    res = escalc("SMD", m1i=rng.normal(size=k), m2i=rng.normal(size=k),
                 sd1i=rng.uniform(0.5, 2, k), sd2i=rng.uniform(0.5, 2, k), n1i=n1, n2i=n2)  # fmt: skip
    assert np.isfinite(res.to_numpy()).all() and len(res) == k


# --------------------------------------------------------------------------- errors

BCG = dict(ai=[4, 6, 3], bi=[119, 300, 228], ci=[11, 29, 11], di=[128, 274, 209])
MEANS = dict(m1i=[5.0, 6.0, 7.0], sd1i=[1.0, 2.0, 1.5], n1i=[10, 12, 14],
             m2i=[4.0, 5.5, 6.0], sd2i=[1.2, 1.8, 1.1], n2i=[11, 13, 15])  # fmt: skip
LABELS = ["Alpha 2001", "Beta 2004", "Gamma 2010"]


def _with(base: dict, **changes) -> dict:
    out = {k: list(v) for k, v in base.items()}
    for key, (i, value) in changes.items():
        out[key][i] = value
    return out


@pytest.mark.parametrize(
    ("measure", "kwargs", "error", "match"),
    [
        # missing required columns, unknown measure, extra arguments
        ("SMD", {k: v for k, v in MEANS.items() if k != "sd2i"}, TypeError,
         r"needs m1i, sd1i, n1i, m2i, sd2i, n2i; missing: sd2i\. Pass each as an array"),
        ("RR", dict(ai=[1], ci=[2], bi=[3]), TypeError, r"missing: di"),
        ("OR", dict(ai=[1], ci=[2]), TypeError, r"or the row totals n1i, n2i.*missing: bi, di"),
        ("COR", dict(ri=[0.3]), TypeError, r"needs ri, ni; missing: ni"),
        ("HR", BCG, TypeError, r"`measure` must be one of RR, OR, RD, PETO, MD, .*; got 'HR'"),
        ("PLO", dict(xi=[1], ni=[5], ri=[0.2]), TypeError, r"does not use ri; it needs xi, ni"),
        # non-numeric values, naming the study by its label
        ("RR", _with(BCG, ci=(1, "29 (?)")) | dict(slab=LABELS), TypeError,
         r"`ci` must be numeric; study 1 \('Beta 2004'\) holds '29 \(\?\)'\. Convert"),
        ("RR", _with(BCG, ai=(2, True)), TypeError, r"`ai` must be numeric; study 2 holds True"),
        ("RR", BCG | dict(ai=np.array(["a", "b", "c"])), TypeError, r"`ai` must be numeric"),
        # negative counts
        ("OR", _with(BCG, bi=(2, -1)) | dict(slab=LABELS), ValueError,
         r"`bi` is negative for study 2 \('Gamma 2010'\): bi = -1\. Fix: counts must be >= 0"),
        ("IRR", dict(x1i=[1, -2], t1i=[10, 10], x2i=[1, 1], t2i=[10, 10]), ValueError,
         r"`x1i` is negative for study 1"),
        ("PR", dict(xi=[-1, 2], ni=[5, 5]), ValueError, r"`xi` is negative for study 0"),
        # events > n
        ("RR", dict(ai=[3, 9], ci=[1, 1], n1i=[10, 8], n2i=[10, 10]), ValueError,
         r"`ai` is larger than the group size `n1i` for study 1: ai = 9\. Fix: events cannot"),
        ("PLO", dict(xi=[3, 12], ni=[10, 10]), ValueError,
         r"`xi` is larger than the sample size `ni` for study 1: xi = 12"),
        ("RR", BCG | dict(n1i=[123, 306, 200]), ValueError,
         r"`n1i` is not ai \+ bi for study 2: n1i = 200\. Fix: give either bi or n1i"),
        # sd <= 0
        ("SMD", _with(MEANS, sd1i=(1, 0.0)), ValueError,
         r"`sd1i` is not positive for study 1: sd1i = 0\. Fix: standard deviations must be > 0"),
        ("MD", _with(MEANS, sd2i=(0, -1.0)), ValueError, r"`sd2i` is not positive for study 0"),
        # correlations outside [-1, 1]
        ("ZCOR", dict(ri=[0.2, 1.5], ni=[20, 20]), ValueError,
         r"`ri` is outside \[-1, 1\] for study 1: ri = 1\.5\. Fix: correlations must lie"),
        # n too small
        ("ZCOR", dict(ri=[0.2, 0.3], ni=[20, 3]), ValueError,
         r"`ni` is too small for ZCOR \(needs ni > 3\) for study 1: ni = 3"),
        ("COR", dict(ri=[0.2], ni=[1]), ValueError, r"`ni` is too small for COR \(needs ni > 1\)"),
        ("SMD", _with(_with(MEANS, n1i=(2, 2)), n2i=(2, 1)), ValueError,
         r"`n1i` \+ `n2i` is too small for SMD \(needs n1i \+ n2i > 3\) for study 2"),
        ("SMDH", _with(MEANS, n2i=(0, 1)), ValueError, r"`n2i` is too small for SMDH \(needs n > 1\)"),
        ("MD", _with(MEANS, n1i=(1, 0)), ValueError, r"`n1i` is too small for MD \(needs n > 0\)"),
        ("OR", dict(ai=[0, 1], bi=[0, 2], ci=[1, 1], di=[2, 2]), ValueError,
         r"group 1 is empty \(ai \+ bi = 0\); n too small for study 0"),
        ("PFT", dict(xi=[0], ni=[0]), ValueError, r"`ni` is not positive; n too small for study 0"),
        ("IRD", dict(x1i=[1], t1i=[0], x2i=[1], t2i=[10]), ValueError,
         r"`t1i` is not positive for study 0: t1i = 0\. Fix: person-times must be > 0"),
        # other invalid values
        ("ROM", _with(MEANS, m2i=(1, -5.5)), ValueError,
         r"`m1i` and `m2i` are zero or of opposite sign.*for study 1.*use MD or SMD"),
        ("MD", _with(MEANS, m1i=(0, np.inf)), ValueError, r"`m1i` is infinite for study 0"),
        # options and shapes
        ("OR", BCG | dict(to="some"), ValueError, r"`to` must be one of 'only0', 'all'"),
        ("OR", BCG | dict(add=-0.5), ValueError, r"`add` must be a finite number >= 0"),
        ("OR", BCG | dict(ai=[4, 6]), ValueError, r"the study arrays do not line up: `ai` \(2,\)"),
        ("OR", BCG | dict(slab=["a", "b"]), ValueError, r"`slab` has shape \(2,\); give one label"),
        ("OR", BCG | dict(ai="tpos"), TypeError, r"`ai` is the column name 'tpos' but `data` is None"),
    ],
)  # fmt: skip
def test_errors_name_the_study_column_and_fix(measure, kwargs, error, match):
    with pytest.raises(error, match=match):
        escalc(measure, **kwargs)


def test_errors_with_data_name_the_column_and_label():
    bcg = _bcg_frame()
    bcg.loc[4, "cneg"] = -3
    with pytest.raises(
        ValueError,
        match=r"`di` \(column 'cneg'\) is negative for study 4 \('Frimodt-Moller et al, 1973'\)",
    ):
        escalc("OR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", slab="trial")
    with pytest.raises(ValueError, match=r"names column 'cases'.*its columns are trial, tpos"):
        escalc("OR", bcg, ai="cases", bi="tneg", ci="cpos", di="cneg")
    with pytest.raises(ValueError, match=r"`slab` names column 'study'"):
        escalc("OR", bcg, ai="tpos", bi="tneg", ci="cpos", di="cneg", slab="study")
    with pytest.raises(
        ValueError,
        match=r"with `data` \(13 rows\), every argument must have.*`di` has shape \(2,\)",
    ):
        escalc("OR", bcg, ai="tpos", bi="tneg", ci="cpos", di=[1, 2])
    with pytest.raises(TypeError, match=r"`data` must be a pandas DataFrame"):
        escalc("OR", bcg.to_dict(), ai="tpos", bi="tneg", ci="cpos", di="cneg")
    # a data index that is not the default one labels the studies
    indexed = _bcg_frame().set_index("trial")
    indexed.iloc[2, 0] = np.nan
    indexed.loc[indexed.index[7], "tpos"] = 10**6
    with pytest.raises(ValueError, match=r"study 7 \('TPT Madras, 1980'\)"):
        escalc("RR", indexed, ai="tpos", ci="cpos", n1i=indexed.tneg, n2i=indexed.cneg)


def test_error_counts_further_offending_studies():
    with pytest.raises(ValueError, match=r"for study 0: xi = -1 \(2 more studies likewise\)"):
        escalc("PR", xi=[-1, -2, 3, -4], ni=[10, 10, 10, 10])


def test_docstring_examples_run():
    failures, tried = doctest.testmod(effect_sizes_module, verbose=False)
    assert tried > 0 and failures == 0
