"""`spatialmeta pool`: the whole report from a study table, checked against metafor 3.8-1.

The study tables are written from the metadat values stored in tests/reference/*.json
(dat.bcg's raw 2x2 counts, latitude and allocation; dat.normand1999's means), and every
number read back from results.json is compared with the metafor fixtures (rtol 1e-6).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spatialmeta.cli import app
from spatialmeta.jobs import pool as job_module
from spatialmeta.jobs.pool import StudyTableError, parse_columns, pool_job

REF = Path(__file__).resolve().parents[1] / "reference"
METAFOR = json.loads((REF / "metafor_reference.json").read_text())
ESCALC = json.loads((REF / "escalc_reference.json").read_text())
REGRESSION = json.loads((REF / "regression_reference.json").read_text())
BIAS = json.loads((REF / "bias_reference.json").read_text())
DIAG = json.loads((REF / "diagnostics_reference.json").read_text())
RTOL, ATOL = 1e-6, 1e-8
BCG_COLS = ["--col", "ai=tpos", "--col", "bi=tneg", "--col", "ci=cpos", "--col", "di=cneg"]


def close(actual, expected):
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=RTOL, atol=ATOL
    )


def one(entries, **match):
    hits = [e for e in entries if all(e.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, len(hits))
    return hits[0]


def _case(name):
    return one(ESCALC["cases"], name=name)


def bcg_frame() -> pd.DataFrame:
    """dat.bcg: trial, raw counts under other names than escalc's, ablat and alloc."""
    case = _case("bcg_RR")
    alloc = one(DIAG["subgroups"], dataset="bcg", grouping="alloc", method="REML", test="z")
    raw = case["inputs"]
    return pd.DataFrame(
        {
            "trial": case["labels"],
            "tpos": raw["ai"],
            "tneg": raw["bi"],
            "cpos": raw["ci"],
            "cneg": raw["di"],
            "ablat": REGRESSION["mods_datasets"]["bcg"]["columns"]["ablat"],
            "alloc": alloc["groups"],
        }
    )


def invoke(args):
    return CliRunner().invoke(app, ["pool", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def bcg_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bcg")
    bcg_frame().to_csv(d / "bcg.csv", index=False)
    out = d / "report"
    res = invoke([d / "bcg.csv", "--measure", "RR", *BCG_COLS, "--label", "trial",
                  "--mods", "ablat", "--subgroup", "alloc", "--out", out])  # fmt: skip
    assert res.exit_code == 0, (res.stdout[-2000:], res.stderr[-2000:])
    return res, out, json.loads((out / "results.json").read_text())


# --------------------------------------------------------------------------- dat.bcg, RR


def test_bcg_model_and_heterogeneity_match_metafor(bcg_run):
    _, _, r = bcg_run
    ref = one(METAFOR["fits"], dataset="bcg", method="REML", test="z", level=95, weights=None)
    model = r["model"]
    assert model["k"] == 13 and model["method"] == "REML" and model["measure"] == "RR"
    close(model["yi"], METAFOR["datasets"]["bcg"]["yi"])  # escalc from the raw counts
    for f in ("estimate", "se", "zval", "pval", "ci_lb", "ci_ub", "tau2", "se_tau2", "I2",
              "H2", "QE", "QEp", "pi_lb", "pi_ub"):  # fmt: skip
        close(model[f], ref[f])
    close(model["weights"], ref["weights_pct"])
    ci = one(REGRESSION["confint"], dataset="bcg", method="REML", level=95)
    het = r["heterogeneity"]
    for name in ("tau2", "tau", "I2", "H2"):
        close([het[name], het[f"{name}_lb"], het[f"{name}_ub"]], ci[name])


def test_bcg_meta_regression_and_subgroups_match_metafor(bcg_run):
    _, _, r = bcg_run
    ref = one(REGRESSION["mods_fits"], model="bcg_ablat", method="REML", test="z", level=95)
    mr = r["meta_regression"]
    assert mr["coef_names"] == ["intrcpt", "ablat"]
    for f, g in (("estimate", "beta"), ("se", "se"), ("zval", "zval"), ("pval", "pval"),
                 ("ci_lb", "ci_lb"), ("ci_ub", "ci_ub"), ("tau2", "tau2"), ("QE", "QE"),
                 ("QM", "QM"), ("QMp", "QMp"), ("R2", "R2"), ("I2", "I2")):  # fmt: skip
        close(mr[f], ref[g])
    close([mr["confint"]["tau2_lb"], mr["confint"]["tau2_ub"]], ref["confint"]["tau2"][1:])

    sref = one(DIAG["subgroups"], dataset="bcg", grouping="alloc", method="REML", test="z")
    sg = r["subgroups"]
    assert sg["levels"] == ["alternate", "random", "systematic"] == sref["levels"]
    close([sg["Qb"], sg["Qb_pval"]], [sref["Qb"], sref["Qb_pval"]])
    assert sg["Qb_df"] == 2
    for j, level in enumerate(sg["levels"]):
        for f in ("estimate", "se", "ci_lb", "ci_ub", "tau2", "QE", "I2"):
            close(sg[f][j], sref["per_group"][level][f])


def test_bcg_publication_bias_matches_metafor(bcg_run):
    _, _, r = bcg_run
    pb = r["publication_bias"]
    eg = one(REGRESSION["regtest"], dataset="bcg", model="rma", method="REML", test="z",
             predictor="sei")  # fmt: skip
    for f in ("zval", "pval", "est", "ci_lb", "ci_ub", "est_pval"):
        close(pb["egger"][f], eg[f])
    rk = one(BIAS["ranktest"], dataset="bcg")
    close([pb["ranktest"]["tau"], pb["ranktest"]["pval"]], [rk["tau"], rk["pval"]])
    tf = one(BIAS["trimfill"], dataset="bcg", method="REML", estimator="L0", side_arg="auto")
    assert pb["trimfill"]["k0"] == tf["k0"] == 1 and pb["trimfill"]["side"] == tf["side"]
    close(pb["trimfill"]["se_k0"], tf["se_k0"])
    for f in ("estimate", "se", "ci_lb", "ci_ub", "tau2", "QE"):
        close(pb["trimfill"]["result"][f], tf[f])
    for name, pred in (("pet", "sei"), ("peese", "vi")):
        lm = one(REGRESSION["regtest"], dataset="bcg", model="lm", predictor=pred)
        for f in ("est", "ci_lb", "ci_ub", "est_pval", "zval"):
            close(pb["pet_peese"][name][f], lm[f])
    assert pb["pet_peese"]["use_peese"] is False  # PET's intercept p = 0.40 >= 0.10
    for kind in ("Rosenthal", "Orwin", "Rosenberg"):
        ref = one(BIAS["fsn"], dataset="bcg", type=kind, alpha=0.05, target_arg=None,
                  weighted=False)  # fmt: skip
        got = pb["fsn"][kind]
        assert got["fsnum"] == ref["fsnum"]
        for f in ("pval", "meanes", "target"):
            if ref[f] is None:
                assert got[f] is None
            else:
                close(got[f], ref[f])


def test_bcg_leave_one_out_influence_and_studies_csv(bcg_run):
    _, out, r = bcg_run
    loo = one(DIAG["leave1out"], dataset="bcg", method="REML", test="z")
    for f in ("estimate", "se", "ci_lb", "ci_ub", "Q", "tau2", "I2"):
        close(r["leave1out"][f], loo[f])
    inf = one(DIAG["influence"], dataset="bcg", method="REML", test="z")
    for f in ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "hat", "dfbs"):
        close(r["influence"][f], inf[f])
    assert r["influence"]["is_infl"] == inf["inf"]
    bj = one(BIAS["baujat"], dataset="bcg", method="REML", test="z")
    close(r["baujat"]["x"], bj["x"])
    close(r["baujat"]["y"], bj["y"])

    table = pd.read_csv(out / "studies.csv")
    assert len(table) == 13 and table["row"].tolist() == list(range(1, 14))
    assert table["study"].tolist() == _case("bcg_RR")["labels"]
    assert {"tpos", "alloc", "ablat", "yi", "vi", "weight", "cook_d", "hat", "influential",
            "loo_estimate", "baujat_x"} <= set(table.columns)  # fmt: skip
    close(table["weight"].sum(), 100.0)
    close(table["cook_d"], inf["cook_d"])
    close(table["loo_tau2"], loo["tau2"])


def test_bcg_files_report_and_stdout(bcg_run):
    res, out, r = bcg_run
    for name in ("forest", "funnel", "baujat", "radial"):
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert mpimg.imread(png).shape[0] > 300
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
        assert r["files"][f"{name}_png"] == f"{name}.png"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary folder was renamed into place
    text = (out / "report.md").read_text()
    for heading in ("## Model", "## Heterogeneity", "## Meta-regression", "## Subgroups",
                    "## Publication bias", "## Leave-one-out", "## Influence diagnostics"):  # fmt: skip
        assert heading in text
    assert "Random-Effects Model (k = 13; tau^2 estimator: REML)" in text
    assert "Test for subgroup differences: QM(df = 2) = 1.8614" in text
    assert "| Fail-safe N (Rosenthal, alpha 0.05) | N = 598 |" in text
    assert "Back-transformed (risk ratio): 0.4894" in text
    assert "Influential studies" in text and r["skipped"] == {} and r["notes"] == []
    # stdout: metafor's print, the headline numbers and where the outputs are
    assert "Q(df = 12) = 152.2330, p-val < .0001" in res.stdout
    assert "trim-and-fill: k0 = 1 (right)" in res.stdout
    assert f"Outputs are in {out}" in res.stdout
    assert res.stderr == ""


# --------------------------------------------------------------------------- other inputs


def test_smd_from_means_with_col_mapping_and_knha(tmp_path):
    case = _case("normand1999_SMD")
    frame = pd.DataFrame({"study": case["labels"], **case["inputs"]})
    frame = frame.rename(columns={"m1i": "mean_treat", "sd2i": "sd_ctrl"})
    frame.to_csv(tmp_path / "normand.csv", sep=";", index=False)  # semicolons are read too
    job = pool_job(tmp_path / "normand.csv", tmp_path / "o", measure="smd", test="knha",
                   columns=["m1i=mean_treat", "sd2i=sd_ctrl"], label="study", plots=False)  # fmt: skip
    model = job.results["model"]
    ref = one(
        METAFOR["fits"], dataset="normand1999", method="REML", test="knha", level=95, weights=None
    )
    close(model["yi"], case["yi"])
    for f in ("estimate", "se", "tval", "pval", "ci_lb", "ci_ub", "tau2", "QE", "I2"):
        close(model[f], ref[f if f != "tval" else "zval"])
    assert job.results["input"]["columns"]["m1i"] == "mean_treat"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "report.md", "results.json", "studies.csv",
    ]  # fmt: skip


def test_small_k_sections_are_skipped_with_reasons_and_missing_rows_dropped(tmp_path):
    (tmp_path / "s.csv").write_text("name,effect,var\na,0.1,0.02\nb,0.5,0.03\nc,,0.05\n")
    job = pool_job(tmp_path / "s.csv", tmp_path / "o", yi="effect", vi="var", label="name")
    r = job.results
    assert r["model"]["k"] == 2 and r["input"]["rows_used"] == [1, 2]
    assert r["input"]["dropped"] == ["row 3 (study 'c'): empty 'effect'"]
    assert r["heterogeneity"] is not None  # the Q-profile interval needs only k = 2
    for section in ("Egger's test", "rank correlation test", "trim-and-fill", "PET-PEESE"):
        assert r["skipped"][section] == "needs at least 3 studies; k = 2"
    assert "leave-one-out" in r["skipped"] and r["leave1out"] is None
    assert r["publication_bias"]["fsn"]["Rosenthal"]["fsnum"] is not None
    files = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"forest.svg", "funnel.png", "radial.png"} <= files and "baujat.png" not in files
    text = (tmp_path / "o" / "report.md").read_text()
    assert "## Skipped sections" in text and "dropped row 3 (study 'c')" in text
    assert "Skipped:\n- Egger's test: needs at least 3 studies; k = 2" in job.summary


def test_rerun_replaces_a_previous_report_and_failure_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "s.csv").write_text("yi,vi\n0.1,0.02\n0.5,0.03\n0.3,0.01\n0.2,0.04\n")
    out = tmp_path / "o"
    pool_job(tmp_path / "s.csv", out, plots=False)
    (out / "stale.txt").write_text("from an earlier run")
    pool_job(tmp_path / "s.csv", out, method="DL", plots=False)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "results.json").read_text())["settings"]["method"] == "DL"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(job_module, "_studies_frame", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        pool_job(tmp_path / "s.csv", tmp_path / "new", plots=False)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "s.csv"]  # no temporary left
    with pytest.raises(RuntimeError, match="disk full"):
        pool_job(tmp_path / "s.csv", out, method="PM", plots=False)
    assert json.loads((out / "results.json").read_text())["settings"]["method"] == "DL"


def test_parse_columns():
    assert parse_columns(["ai=tpos", " ni = n "]) == {"ai": "tpos", "ni": "n"}
    with pytest.raises(StudyTableError, match=r"--col expects ARG=COLUMN.*got 'tpos'"):
        parse_columns(["tpos"])


# --------------------------------------------------------------------------- bad input

GOOD = "study,yi,vi\na,0.1,0.02\nb,0.5,0.03\nc,0.3,0.01\n"
BAD_INPUT = [
    ("missing", None, [], "studies file '{csv}' does not exist"),
    ("quotes", 'a,b\n1,2\n"3,4\n', [], "cannot be read as CSV"),
    ("empty", "", [], "is empty; it needs a header row"),
    ("header", "yi,vi\n", [], "has a header but no study rows"),
    ("nocol", "study,g,v\na,1,2\n", [], "has no column 'yi' (effect sizes; columns: study, g, v); name the column with --yi"),
    ("text", "study,yi,vi\na,0.1,0.02\nb,0.5,0.0x3\n", [],
     "row 2 (study 'b'), column 'vi' (sampling variance) holds '0.0x3', which is not a number"),
    ("comma", "study;yi;vi\na;0,1;0.02\nb;0.5;0.03\n", [], "(use a point as decimal separator)"),
    ("zero", "study,yi,vi\na,0.1,0.02\nb,0.5,0\n", [], "row 2 (study 'b'), column 'vi' (sampling variance) is 0; variances must be > 0"),
    ("negative", "study,yi,vi\na,0.1,-0.02\nb,0.5,0.1\n", [], "row 1 (study 'a'), column 'vi'"),
    ("k1", "study,yi,vi\na,0.1,0.02\nb,,0.1\n", [], "only one study ('a', row 1) can be analysed; --method REML (random effects) needs at least 2 studies to estimate tau^2: use --method FE"),
    ("raw", GOOD, ["--measure", "SMD"], "--measure SMD needs the columns m1i, sd1i, n1i, m2i, sd2i, n2i; '{csv}' lacks m1i, sd1i, n1i, m2i, sd2i, n2i (columns: study, yi, vi). Name the column of each with --col m1i=COLUMN"),
    ("partial", "study,m1i,sd1i,n1i,mc,sd2i,n2i\na,1,1,10,2,1,10\n", ["--measure", "MD"], "lacks m2i"),
    ("colname", GOOD, ["--measure", "RR", "--col", "ai=tpos"], "--col ai=tpos: '{csv}' has no column 'tpos'"),
    ("colarg", GOOD, ["--measure", "RR", "--col", "xx=yi"], "'xx' is not an argument of --measure RR, which takes ai, bi, ci, di"),
    ("colfmt", GOOD, ["--measure", "RR", "--col", "ai"], "--col expects ARG=COLUMN"),
    ("rawbad", "ai,bi,ci,di\n1,2,3,4\n-1,2,3,4\n", ["--measure", "RR"], "escalc(measure='RR'): `ai` (column 'ai')"),
    ("measure", GOOD, ["--measure", "SMG"], "--measure 'SMG' is not a known effect size; use one of RR, OR"),
    ("method", GOOD, ["--method", "REMLL"], "--method must be one of 'FE', 'EE', 'CE', 'DL'"),
    ("test", GOOD, ["--test", "t"], "--test must be 'z' (normal) or 'knha'"),
    ("level", GOOD, ["--level", "0"], "--level must be a confidence level in percent"),
    ("label", GOOD, ["--label", "trial"], "--label names column 'trial', which '{csv}' does not have"),
    ("mods", GOOD, ["--mods", "study,lat"], "--mods names column 'lat'"),
    ("modtext", "yi,vi,lat\n0.1,0.02,44\n0.5,0.03,55\n0.3,0.01,4x\n0.2,0.01,40\n0.3,0.02,30\n", ["--mods", "lat"],
     "row 3, column 'lat' (moderator) holds '4x' among numbers"),
    ("subgroup", "yi,vi,g\n0.1,0.02,a\n0.5,0.03,\n0.3,0.01,b\n", ["--subgroup", "g"], "row 2, column 'g' (subgroup) is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "args", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, name, content, args, message):
    csv = tmp_path / f"{name}.csv"
    if content is not None:
        csv.write_text(content)
    out = tmp_path / "out"
    res = invoke([csv, "--out", out, *args])
    assert res.exit_code == 2, (res.stdout[-1000:], res.stderr[-1000:])
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message.format(csv=csv) in res.stderr, res.stderr
    assert not out.exists()


def test_out_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "s.csv").write_text(GOOD)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    res = invoke([tmp_path / "s.csv", "--out", tmp_path / "mine"])
    assert res.exit_code == 2 and "already holds other files (thesis.tex)" in res.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    res = invoke([tmp_path / "s.csv", "--out", tmp_path])
    assert res.exit_code == 2 and "contains the studies file" in res.stderr


def test_help_has_an_example():
    res = CliRunner().invoke(app, ["pool", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "Example: spatialmeta pool bcg.csv --measure RR" in res.stdout
    for option in ("--measure", "--method", "--test", "--level", "--mods", "--subgroup",
                   "--label", "--yi", "--vi", "--col", "--out"):  # fmt: skip
        assert option in res.stdout
