"""forest_plot: one CI line per study, the pooled diamond, the PI bar, subgroups, PNG and SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from spatialmeta.meta_analysis import forest_plot, pool
from spatialmeta.tasks.estimates import Estimates

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "metafor_reference.json"
DATA = json.loads(REFERENCE.read_text())


def _bcg():
    ds = DATA["datasets"]["bcg"]
    return np.array(ds["yi"]), np.array(ds["vi"]), list(ds["labels"])


def _by_gid(fig: Figure, gid: str) -> list:
    ax = fig.axes[0]
    return [a for a in [*ax.lines, *ax.patches, *ax.collections] if a.get_gid() == gid]


def test_png_written_with_one_row_per_study(tmp_path):
    yi, vi, labels = _bcg()
    res = pool(yi, vi, labels=labels)
    out = tmp_path / "figs" / "bcg.png"
    fig = forest_plot(res, path=out, xlabel="log risk ratio", title="BCG")

    assert out.is_file()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 800
    assert [p.name for p in out.parent.iterdir()] == ["bcg.png"]  # no temp file left behind

    ci = _by_gid(fig, "study-ci")
    assert len(ci) == len(yi) == 13
    z = 1.959963984540054
    lows = sorted(line.get_xdata()[0] for line in ci)
    np.testing.assert_allclose(lows, np.sort(yi - z * np.sqrt(vi)), rtol=1e-9)
    (points,) = _by_gid(fig, "study-point")
    assert len(points.get_offsets()) == 13
    sizes = points.get_sizes()
    assert np.argmax(sizes) == np.nanargmax(res.weights)  # squares sized by weight

    (diamond,) = _by_gid(fig, "pooled")
    xy = diamond.get_xy()
    assert xy[:, 0].min() == pytest.approx(res.ci_lb) and xy[:, 0].max() == pytest.approx(res.ci_ub)
    (pi,) = _by_gid(fig, "prediction-interval")
    np.testing.assert_allclose(pi.get_xdata(), [res.pi_lb, res.pi_ub])
    assert pi.get_linestyle() in ("--", (0, (4, 2)), "dashed") or pi.get_dashes() is not None

    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[:13] == labels and ticks[-1] == "RE Model (REML)"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("[" in t and "]" in t for t in texts) == 13 + 2  # rows + pooled + header
    assert fig._suptitle.get_text() == "BCG"


def test_from_estimates_with_transform_and_no_pi_for_common_effect(tmp_path):
    yi, vi, labels = _bcg()
    fig = forest_plot(Estimates(yi=yi, vi=vi, labels=np.array(labels)), transform=np.exp)
    ci = _by_gid(fig, "study-ci")
    assert len(ci) == 13
    highs = sorted(line.get_xdata()[1] for line in ci)
    np.testing.assert_allclose(highs, np.sort(np.exp(yi + 1.959963984540054 * np.sqrt(vi))))

    fe = pool(yi[:5], vi[:5], method="EE")
    fig = forest_plot(fe, path=tmp_path / "fe.png", xscale="linear")
    assert len(_by_gid(fig, "study-ci")) == 5
    assert _by_gid(fig, "prediction-interval") == []
    assert (tmp_path / "fe.png").stat().st_size > 0


def test_plain_arrays_labels_and_batched_rows(tmp_path):
    yi, vi, _ = _bcg()
    fig = forest_plot(None, yi=yi[:4], vi=vi[:4], labels=list("abcd"))
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[:4] == list("abcd")

    batch = pool(np.stack([yi[:6], np.r_[yi[:4], np.nan, np.nan]]),
                 np.stack([vi[:6], np.r_[vi[:4], np.nan, np.nan]]))  # fmt: skip
    with pytest.raises(ValueError, match=r"batch shape \(2,\); pass result.row\(i\)"):
        forest_plot(batch)
    fig = forest_plot(batch.row(1), path=tmp_path / "row1.png")
    assert len(_by_gid(fig, "study-ci")) == 4  # padding is not drawn
    with pytest.raises(ValueError, match="`labels` has 3 entries but the plot has 4"):
        forest_plot(batch.row(1), labels=["a", "b", "c"])
    with pytest.raises(TypeError, match="needs a PoolResult"):
        forest_plot(None, yi=yi)


DIAG = json.loads((REFERENCE.parent / "diagnostics_reference.json").read_text())


def _alloc():
    (entry,) = [
        s
        for s in DIAG["subgroups"]
        if s["dataset"] == "bcg" and s["grouping"] == "alloc" and s["method"] == "REML"
        and s["test"] == "z"
    ]  # fmt: skip
    return entry


def test_subgroups_rows_diamonds_and_test_in_footer(tmp_path):
    from spatialmeta.meta_analysis import subgroups

    yi, vi, labels = _bcg()
    ref = _alloc()
    res = pool(yi, vi, labels=labels)
    sg = subgroups(yi, vi, ref["groups"], labels=labels)
    out = tmp_path / "bcg_sg.svg"
    fig = forest_plot(res, subgroups=sg, path=out, transform=np.exp, xscale="log")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg") and [p.name for p in tmp_path.iterdir()] == ["bcg_sg.svg"]

    diamonds = _by_gid(fig, "subgroup-pooled")
    assert len(diamonds) == 3  # alternate, random, systematic (sorted, as R's factor)
    for poly, level in zip(diamonds, ref["levels"], strict=True):
        g = ref["per_group"][level]
        xs = poly.get_xy()[:, 0]
        np.testing.assert_allclose([xs.min(), xs.max()], np.exp([g["ci_lb"], g["ci_ub"]]),
                                   rtol=1e-6)  # fmt: skip
        np.testing.assert_allclose(np.median(xs), np.exp(g["estimate"]), rtol=1e-6)
    (pooled,) = _by_gid(fig, "pooled")
    np.testing.assert_allclose(pooled.get_xy()[:, 0].max(), np.exp(res.ci_ub), rtol=1e-9)
    (pi,) = _by_gid(fig, "prediction-interval")
    np.testing.assert_allclose(pi.get_xdata(), np.exp([res.pi_lb, res.pi_ub]), rtol=1e-9)
    assert len(_by_gid(fig, "study-ci")) == 13

    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    groups = np.array(ref["groups"])
    expected = []
    for level in ref["levels"]:
        members = [lab for lab, g in zip(labels, groups, strict=True) if g == level]
        expected += [level, *members, f"RE Model for subgroup (k = {len(members)})"]
    heads = [t for t in ticks if not t.startswith("\u03c4")]  # drop the heterogeneity notes
    assert heads == [*expected, "RE Model (REML)"]
    notes = [t for t in ticks if t.startswith("\u03c4")]
    assert notes[1].startswith("\u03c4\u00b2 = 0.393; Q(6) = 110.21, p < 0.0001; I\u00b2 = 89.9%")
    (foot,) = [t for t in fig.texts if t.get_gid() == "subgroup-test"]
    assert foot.get_text() == "Test for subgroup differences: QM(df = 2) = 1.86, p = 0.3943"
    np.testing.assert_allclose(ref["Qb"], 1.8614461412312022)
    xt = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "0.5" in xt and "1" in xt  # plain numbers on the log axis


def test_subgroups_from_labels_and_bad_subgroups():
    from spatialmeta.meta_analysis import subgroups

    yi, vi, labels = _bcg()
    groups = _alloc()["groups"]
    sg = subgroups(yi, vi, groups)
    fig = forest_plot(subgroups=sg)  # the SubgroupResult alone: its overall fit is drawn
    assert len(_by_gid(fig, "subgroup-pooled")) == 3
    single = ["a"] + ["b"] * 12  # a one-study subgroup is drawn as a common-effect fit
    fig = forest_plot(pool(yi, vi), subgroups=single)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "FE Model for subgroup (k = 1)" in ticks and "RE Model for subgroup (k = 12)" in ticks
    with pytest.raises(ValueError, match="`subgroups` has 3 entries but the plot has 13"):
        forest_plot(pool(yi, vi), subgroups=["a", "b", "c"])
    with pytest.raises(ValueError, match="fitted to other studies"):
        forest_plot(pool(yi[:6], vi[:6]), subgroups=sg)
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg"):
        forest_plot(pool(yi, vi), path="forest.pdf")
