"""Sampling covariance matrices of dependent effects against clubSandwich 0.5.8's
impute_covariance_matrix and metafor 3.8's vcalc (tests/reference/vcov_reference.json, from
tests/reference/make_vcov_reference.R): dat.assink2016, dat.ishak2007, dat.berkey1998,
dat.kalaian1996, dat.knapp2017 and a hand-made within-subjects design, every entry to 1e-12
relative; the invariants (symmetry, blocks, input order); every error; and pool_mv on a
vcalc V reproducing rma.mv(yi, V, random = ~ 1 | study/esid) to 1e-6."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmeta.meta_analysis.multilevel import pool_mv
from spatialmeta.meta_analysis.vcov import impute_covariance_matrix, vcalc

REF = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                  "vcov_reference.json").read_text())  # fmt: skip
IMPUTE = {c["name"]: c for c in REF["impute"]}
VCALC = {c["name"]: c for c in REF["vcalc"]}


def dense(s: dict) -> np.ndarray:
    """A matrix stored as its nonzero entries."""
    V = np.zeros((s["k"], s["k"]))
    V[s["i"], s["j"]] = s["x"]
    return V


def close(V, ref):
    np.testing.assert_allclose(V, ref, rtol=1e-12, atol=1e-15)


def impute_args(x: dict) -> dict:
    kw = {"r": x.get("r")}
    if "ar1" in x:
        kw.update(ti=x[x["ti"]], ar1=x["ar1"])
    if x.get("smooth_vi"):
        kw["smooth_vi"] = True
    if "subgroup" in x:
        kw["subgroup"] = x[x["subgroup"]]
    return kw


def knapp_rho(x: dict) -> pd.DataFrame:
    return pd.DataFrame(x["rho"], index=x["rho_labels"], columns=x["rho_labels"])


def vcalc_args(name: str, x: dict) -> tuple[tuple, dict]:
    """The positional and keyword arguments of the R call of a vcalc case."""
    if name == "berkey_rvars":
        return (1.0, x["author"]), {"rvars": np.column_stack([x["v1i"], x["v2i"]])}
    if name == "ishak_time":
        return (x["vi"], x["cluster"]), {"time1": x["time"], "phi": x["phi"]}
    if name == "within_subjects":
        keys = ("grp1", "grp2", "time1", "time2", "w1", "w2", "phi")
        return (x["vi"], x["cluster"]), {key: x[key] for key in keys}
    if name.startswith("knapp"):
        kw = {"grp1": x["group1"], "w1": x["n_sz"]}
        if x.get("grp"):
            kw.update(grp2=x["group2"], w2=x["n_hc"])
        if x["obs"]:
            kw.update(obs=x["task_diff"], rho=knapp_rho(x))
        return (x["vi"], x["cluster"]), kw
    kw = {"rho": tuple(x["rho"]) if isinstance(x["rho"], list) else x["rho"]}
    for arg in ("obs", "type", "subgroup"):
        if arg in x:
            kw[arg] = x[x[arg]] if isinstance(x[arg], str) and x[arg] in x else x[arg]
    return (x["vi"], x["cluster"]), kw


@pytest.mark.parametrize("name", sorted(IMPUTE))
def test_impute_equals_clubsandwich(name):
    c = IMPUTE[name]
    x = c["inputs"]
    V = impute_covariance_matrix(x["vi"], x["cluster"], **impute_args(x))
    assert not c["warnings"]
    close(V, dense(c["V"]))


def test_impute_blocks_follow_clubsandwich_cluster_order():
    ref = REF["impute_list"]
    x = ref["inputs"]
    blocks = impute_covariance_matrix(x["vi"], x["cluster"], ref["r"], return_list=True)
    assert len(blocks) == len(ref["blocks"]) == len(ref["clusters"])
    for b, rb in zip(blocks, ref["blocks"], strict=True):
        close(b, np.array(rb).reshape(b.shape))
    # the blocks are those of the dense matrix, effects in input order within a cluster
    V = impute_covariance_matrix(x["vi"], x["cluster"], ref["r"])
    cl = np.array(x["cluster"])
    for label, b in zip(ref["clusters"], blocks, strict=True):
        at = np.flatnonzero(cl.astype(str) == label)
        close(V[np.ix_(at, at)], b)


@pytest.mark.parametrize("name", sorted(VCALC))
def test_vcalc_equals_metafor(name):
    c = VCALC[name]
    args, kw = vcalc_args(name, c["inputs"])
    if c["warnings"]:  # metafor warns, vcalc raises, naming the same clusters
        clusters = [w.rsplit(" ", 1)[1].rstrip(".") for w in c["warnings"]]
        with pytest.raises(ValueError, match=r"cluster\(s\) " + ", ".join(clusters) + " is not"):
            vcalc(*args, **kw)
        kw["checkpd"] = False
    close(vcalc(*args, **kw), dense(c["V"]))


def test_berkey_rvars_is_the_datasets_own_v():
    x = VCALC["berkey_rvars"]["inputs"]
    V = vcalc(1.0, x["author"], rvars=np.column_stack([x["v1i"], x["v2i"]]))
    assert np.array_equal(V, dense(REF["berkey_own_V"]))
    # one obs per type in each trial: obs and type give the same matrix
    a, kw = vcalc_args("berkey_obs", x | {"obs": "outcome", "rho": 0.4})
    assert np.array_equal(vcalc(*a, **kw), vcalc(x["vi"], x["cluster"], type=x["outcome"], rho=0.4))


def test_ar1_alone_equals_vcalc_time():
    x = IMPUTE["ishak_ar1"]["inputs"]
    V1 = impute_covariance_matrix(x["vi"], x["cluster"], None, ti=x["time"], ar1=0.97)
    close(V1, vcalc(x["vi"], x["cluster"], time1=x["time"], phi=0.97))


def test_rho_matrix_as_array_in_sorted_level_order():
    x = VCALC["knapp_groups_obs"]["inputs"]
    R = knapp_rho(x)
    levels = sorted(set(x["task_diff"]))
    args, kw = vcalc_args("knapp_groups_obs", x)
    close(vcalc(*args, **(kw | {"rho": R.loc[levels, levels].to_numpy()})), vcalc(*args, **kw))


def test_invariants():
    x = VCALC["knapp_groups_obs"]["inputs"]
    args, kw = vcalc_args("knapp_groups_obs", x)
    k = len(x["vi"])
    cl = np.array(x["cluster"])
    for V in (vcalc(*args, **kw), impute_covariance_matrix(x["vi"], cl, 0.7)):
        assert np.array_equal(V, V.T)
        np.testing.assert_allclose(np.diag(V), x["vi"], rtol=1e-15)
        assert (V[cl[:, None] != cl[None, :]] == 0).all()
        assert np.linalg.eigvalsh(V).min() > 0
    # r = 0 (or rho = 0 between different obs): independent effects
    assert np.array_equal(impute_covariance_matrix(x["vi"], cl, 0.0), np.diag(x["vi"]))
    assert np.array_equal(vcalc(x["vi"], cl, obs=np.arange(k), rho=0.0), np.diag(x["vi"]))
    # permuting the effects permutes V
    p = np.random.default_rng(5).permutation(k)
    take = {key: (np.asarray(val)[p] if np.ndim(val) == 1 and len(val) == k else val)
            for key, val in kw.items()}  # fmt: skip
    Vp = vcalc(np.asarray(x["vi"])[p], cl[p], **take)
    close(Vp, vcalc(*args, **kw)[np.ix_(p, p)])
    Vi = impute_covariance_matrix(np.asarray(x["vi"])[p], cl[p], 0.7, ti=np.arange(k)[p], ar1=0.5)
    close(Vi, impute_covariance_matrix(x["vi"], cl, 0.7, ti=np.arange(k), ar1=0.5)[np.ix_(p, p)])


def test_shared_control_gives_gleser_olkin_correlation():
    """Two treatments (n1, n2) against one control (nc): correlation
    1 / sqrt((1 + nc / n1) (1 + nc / n2)) (Gleser & Olkin 2009 for mean differences)."""
    n1, n2, nc = 20.0, 30.0, 25.0
    V = vcalc([1.0, 1.0], [1, 1], grp1=["A", "B"], grp2=["C", "C"], w1=[n1, n2], w2=[nc, nc])
    assert V[0, 1] == pytest.approx(1 / np.sqrt((1 + nc / n1) * (1 + nc / n2)), rel=1e-14)


def test_pool_mv_on_vcalc_v_equals_rma_mv():
    d = REF["rma_mv"]
    V = vcalc(d["vi"], d["study"], obs=d["esid"], rho=d["rho"])
    study, esid = np.array(d["study"]), np.array(d["esid"])
    res = pool_mv(d["yi"], V, random=[study, (study, esid)])
    assert res.converged
    np.testing.assert_allclose(res.sigma2, d["sigma2"], rtol=1e-6)
    for f in ("beta", "se", "zval", "ci_lb", "ci_ub"):
        np.testing.assert_allclose(np.atleast_1d(getattr(res, f)), d[f], rtol=1e-6, err_msg=f)
    assert res.QE == pytest.approx(d["QE"], rel=1e-9)
    assert res.logLik == pytest.approx(d["logLik"], rel=1e-9)


VI = [0.1, 0.2, 0.3, 0.4]
CL = [1, 1, 2, 2]


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"r": 1.5}, ValueError, r"`r` = 1.5 is not a correlation; give values in \[-1, 1\]"),
        ({"r": [0.2, -2.0]}, ValueError, r"`r` = -2.0 for cluster 2 is not a correlation"),
        ({"r": [0.1, 0.2, 0.3]}, ValueError, r"`r` has 3 values; give one, or one per cluster"),
        ({"r": None}, ValueError, r"give `r` \(a correlation\), or `ar1` with `ti`"),
        ({"r": 0.5, "ar1": 0.5}, ValueError, r"`ar1` needs `ti`"),
        ({"r": 0.5, "ti": [1, 2, 1, 2]}, ValueError, r"`ti` is used only with `ar1`"),
        ({"r": 0.5, "ar1": 1.2, "ti": [1, 2, 1, 2]}, ValueError, r"`ar1` = 1.2 is not"),
        ({"r": None, "ar1": 0.5, "ti": [1, np.nan, 1, 2]}, ValueError, r"`ti` at effect 1 is nan"),
        ({"r": None, "ar1": 0.5, "ti": [1, 2, 3]}, ValueError, r"`ti` has 3 values for 4 effects"),
        ({"r": None, "ar1": -0.5, "ti": [1, 2.5, 1, 2]}, ValueError,
         r"negative `ar1` needs whole-number time gaps; cluster 1"),
        ({"r": 0.5, "subgroup": [1, 2]}, ValueError, r"`subgroup` has 2 labels for 4 effects"),
        ({"r": 0.5, "subgroup": ["a", None, "b", "b"]}, ValueError,
         r"`subgroup` is missing at effect 1"),
    ],
)  # fmt: skip
def test_impute_errors(kw, err, match):
    r = kw.pop("r")
    with pytest.raises(err, match=match):
        impute_covariance_matrix(VI, CL, r, **kw)


def test_impute_input_errors_and_warning():
    with pytest.raises(ValueError, match=r"`cluster` has 3 labels for 4 effects"):
        impute_covariance_matrix(VI, [1, 1, 2], 0.5)
    with pytest.raises(ValueError, match=r"`cluster` is missing at effect 2"):
        impute_covariance_matrix(VI, [1, 1, np.nan, 2], 0.5)
    with pytest.raises(ValueError, match=r"`vi` at effect 3 is -0.4; sampling variances"):
        impute_covariance_matrix([0.1, 0.2, 0.3, -0.4], CL, 0.5)
    with pytest.raises(ValueError, match=r"`vi` at effect 0 is nan"):
        impute_covariance_matrix([np.nan, 0.2, 0.3, 0.4], CL, 0.5)
    with pytest.warns(RuntimeWarning, match=r"not positive definite: 'b'; check `r`"):
        V = impute_covariance_matrix([1.0] * 5, ["a", "a", "b", "b", "b"], -0.9)
    assert V[2, 3] == pytest.approx(-0.9)  # still returned, as clubSandwich does


G1, G2 = ["A", "B", "A", "B"], ["C", "C", "C", "C"]


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"nearpd": True}, NotImplementedError, r"`nearpd=True` \(metafor's Matrix::nearPD"),
        ({"obs": [1, 2, 1, 2]}, ValueError, r"`rho` goes with `obs` and/or `type`: give `rho`"),
        ({"rho": 0.5}, ValueError, r"give `obs` or `type`, or drop `rho`"),
        ({"obs": [1, 2, 1, 2], "rho": 1.1}, ValueError, r"`rho \(obs\)` = 1.1 is not a correl"),
        ({"obs": [1, 2, 1, 2], "rho": "high"}, TypeError, r"`rho \(obs\)` must be a number"),
        ({"type": ["x", "y", "x", "y"], "rho": -1.5}, ValueError, r"`rho \(type\)` = -1.5"),
        ({"obs": [1, 2, 1], "rho": 0.5}, ValueError, r"`obs` has 3 labels for 4 effects"),
        ({"obs": [1, 2, None, 2], "rho": 0.5}, ValueError, r"`obs` is missing at effect 2"),
        ({"obs": [1, 2, 1, 2], "type": [1, 1, 2, 2], "rho": 0.5}, ValueError,
         r"with `obs` and `type`, `rho` must be a pair \(within, between"),
        ({"obs": ["u", "v", "u", "w"], "rho": pd.DataFrame(np.eye(2), ["u", "v"], ["u", "v"])},
         ValueError, r"`obs` values \['w'\] have no row/column in the `rho` matrix"),
        ({"obs": ["u", "v", "u", "v"], "rho": pd.DataFrame(np.eye(2), ["u", "v"], ["v", "u"])},
         ValueError, r"needs the same labels, in the same order, on its rows and columns"),
        ({"obs": ["u", "v", "u", "v"], "rho": np.eye(3)}, ValueError,
         r"the `rho` matrix for `obs` must be \(2, 2\), one row per level in sorted order"),
        ({"obs": ["u", "v", "u", "v"], "rho": np.array([[1, 0.5], [0.4, 1]])}, ValueError,
         r"the `rho` matrix for `obs` is not symmetric"),
        ({"obs": ["u", "v", "u", "v"], "rho": np.array([[1, 2.0], [2.0, 1]])}, ValueError,
         r"`rho` for `obs` has 2.0 at \('u', 'v'\); correlations must lie in \[-1, 1\]"),
        ({"time1": [1, 2, 1, 2]}, ValueError, r"`phi` goes with `time1`: give `phi`"),
        ({"phi": 0.5}, ValueError, r"give `time1`, or drop `phi`"),
        ({"time1": [1, 2, 1, 2], "phi": 1.01}, ValueError, r"`phi` = 1.01 is not a correlation"),
        ({"time1": ["a", "b", "a", "b"], "phi": 0.5}, TypeError, r"`time1` must be numeric"),
        ({"time1": [1, 2, 1, np.inf], "phi": 0.5}, ValueError, r"`time1` at effect 3 is inf"),
        ({"time1": [1, 2.5, 1, 2], "phi": -0.5}, ValueError,
         r"negative `phi` needs whole-number time gaps; cluster 1"),
        ({"grp2": G2}, ValueError, r"`grp2` needs `grp1`; give both"),
        ({"grp1": G1, "time2": [1, 1, 1, 1]}, ValueError, r"`time2` needs `time1`"),
        ({"grp1": G1, "time1": [1, 1, 1, 1], "time2": [1, 1, 1, 1], "phi": 0.5}, ValueError,
         r"`time2` needs `grp2`"),
        ({"grp1": G1, "grp2": G2, "w2": [1, 1, 1, 1]}, ValueError, r"`w2` needs `w1`"),
        ({"grp1": G1, "w1": [1, 1, 1, 1], "w2": [1, 1, 1, 1]}, ValueError, r"`w2` needs `grp2`"),
        ({"grp1": G1, "grp2": G2, "w1": [10, 0, 10, 10]}, ValueError,
         r"`w1` at effect 1 is 0.0; it must be a positive number \(a group size"),
        ({"grp1": G1, "grp2": ["C", "B", "C", "C"]}, ValueError,
         r"effect 1 contrasts a group with itself at the same time"),
        ({"grp1": G1, "grp2": G2 + ["C"]}, ValueError, r"`grp2` has 5 labels for 4 effects"),
        ({"obs": [1, 1, 2, 2], "rho": 0.5}, ValueError,
         r"cluster\(s\) 1, 2 is not positive definite .* or pass checkpd=False"),
        ({"rvars": np.ones((4, 2)), "rho": 0.5}, ValueError,
         r"`rvars` gives the correlations itself; drop `rho`"),
        ({"rvars": np.ones((4, 3))}, ValueError,
         r"`rvars` has 3 columns but the largest cluster has 2 effects; give exactly 2"),
        ({"rvars": np.ones((3, 2))}, ValueError, r"`rvars` must be \(k, m\) = \(4, largest"),
        ({"rvars": [[1, np.nan], [0.5, 1], [1, np.nan], [np.nan, 1]]}, ValueError,
         r"`rvars` is missing at effect 3, column 0 \(cluster 2\)"),
    ],
)  # fmt: skip
def test_vcalc_errors(kw, err, match):
    with pytest.raises(err, match=match):
        vcalc(VI, CL, **kw)


def test_vcalc_input_errors():
    with pytest.raises(ValueError, match=r"`cluster` has 5 labels for 4 effects"):
        vcalc(VI, CL + [3])
    with pytest.raises(ValueError, match=r"`vi` at effect 1 is inf"):
        vcalc([0.1, np.inf, 0.3, 0.4], CL)
    with pytest.raises(ValueError, match=r"cluster\(s\) '1/a' is not positive definite"):
        vcalc(VI, CL, subgroup=["a", "a", "b", "c"], obs=[1, 1, 1, 2], rho=0.3)
    # checkpd=False returns the matrix metafor would, with its correlation of 1
    V = vcalc(VI, CL, obs=[1, 1, 2, 2], rho=0.5, checkpd=False)
    assert V[0, 1] == pytest.approx(np.sqrt(0.1 * 0.2), rel=1e-15)
