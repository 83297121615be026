"""funnel_plot, baujat_plot and radial_plot: files, plotted coordinates, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from spatialmeta.meta_analysis.bias import baujat, trimfill
from spatialmeta.meta_analysis.bias_plots import baujat_plot, funnel_plot, radial_plot
from spatialmeta.meta_analysis.pool import pool
from spatialmeta.tasks.estimates import Estimates

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "bias_reference.json"
DATA = json.loads(REFERENCE.read_text())
RTOL, ATOL = 1e-6, 1e-8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = DATA["datasets"][name]
    return np.array(ds["yi"], dtype=float), np.array(ds["vi"], dtype=float)


def _ref(section: str, **keys) -> dict:
    return next(r for r in DATA[section] if all(r.get(k) == v for k, v in keys.items()))


def _collection(fig, gid: str):
    hits = [c for c in fig.axes[0].collections if c.get_gid() == gid]
    assert len(hits) == 1, f"expected one collection with gid {gid!r}"
    return hits[0]


def _patch(fig, gid: str):
    hits = [p for p in fig.axes[0].patches if p.get_gid() == gid]
    assert len(hits) == 1, f"expected one patch with gid {gid!r}"
    return hits[0]


def _line(fig, gid: str):
    hits = [ln for ln in fig.axes[0].lines if ln.get_gid() == gid]
    assert len(hits) == 1, f"expected one line with gid {gid!r}"
    return hits[0]


def _close(got, expected) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                               rtol=RTOL, atol=ATOL)  # fmt: skip


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC


def _assert_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


def _no_temporaries(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ funnel


def test_funnel_points_and_contours(tmp_path):
    yi, vi = _data("hackshaw1998")
    fig = funnel_plot(yi=yi, vi=vi, path=tmp_path / "funnel.png")
    _assert_png(tmp_path / "funnel.png")
    _no_temporaries(tmp_path)
    _close(_collection(fig, "studies").get_offsets(), np.column_stack([yi, np.sqrt(vi)]))
    assert [c.get_gid() for c in fig.axes[0].collections] == ["studies"]
    ymax = 1.1 * np.sqrt(vi.max())
    assert fig.axes[0].get_ylim() == pytest.approx((ymax, 0.0))  # standard error axis points down
    for level in (90, 95, 99):
        z = stats.norm.isf((1 - level / 100) / 2)
        verts = _patch(fig, f"contour-{level}").get_xy()[:3]
        _close(verts, [[-z * ymax, ymax], [0.0, 0.0], [z * ymax, ymax]])  # refline 0
    est = pool(yi, vi).estimate
    _close(_line(fig, "estimate").get_xdata(), [est, est])
    _close(_line(fig, "refline").get_xdata(), [0.0, 0.0])
    # Shades follow the levels, innermost (90%) white.
    assert _patch(fig, "contour-90").get_facecolor()[:3] == pytest.approx((1.0, 1.0, 1.0))


def test_funnel_with_trimfill_draws_filled_studies_hollow(tmp_path):
    yi, vi = _data("hackshaw1998")
    ref = _ref("trimfill", dataset="hackshaw1998", method="REML", estimator="L0", side_arg="auto")
    fill = np.array(ref["fill"])
    ref_y, ref_v = np.array(ref["yi"], dtype=float), np.array(ref["vi"], dtype=float)
    for fig in (
        funnel_plot(yi=yi, vi=vi, fill=True, path=tmp_path / "tf.svg"),
        funnel_plot(trimfill(yi, vi), refline=None),
    ):
        filled = _collection(fig, "filled-studies")
        _close(filled.get_offsets(), np.column_stack([ref_y[fill], np.sqrt(ref_v[fill])]))
        _close(_collection(fig, "studies").get_offsets(), np.column_stack([yi, np.sqrt(vi)]))
        assert filled.get_facecolor()[0][:3] == pytest.approx((1.0, 1.0, 1.0))  # hollow
        _close(_line(fig, "estimate").get_xdata()[0], ref["estimate"])
    _assert_svg(tmp_path / "tf.svg")
    # refline=None centres the contours on the (filled) estimate, as metafor's default.
    _close(_line(fig, "refline").get_xdata()[0], ref["estimate"])
    _close(_patch(fig, "contour-95").get_xy()[1], [ref["estimate"], 0.0])


def test_funnel_accepts_results_and_estimates(tmp_path):
    yi, vi = _data("bcg")
    res = pool(yi, vi, method="DL")
    fig = funnel_plot(res, level=95, shade=["white"])
    _close(_collection(fig, "studies").get_offsets()[:, 0], yi)
    assert [p.get_gid() for p in fig.axes[0].patches] == ["contour-95"]
    fig2 = funnel_plot(Estimates(yi=yi, vi=vi), fill="R0", legend=False, title="BCG")
    assert fig2.axes[0].get_legend() is None
    assert fig2.axes[0].get_title() == "BCG"
    # Writing twice replaces the file in place.
    funnel_plot(res, path=tmp_path / "f.png")
    funnel_plot(res, path=tmp_path / "f.png", dpi=50)
    _assert_png(tmp_path / "f.png")
    _no_temporaries(tmp_path)


def test_funnel_bad_input(tmp_path):
    yi, vi = _data("bcg")
    with pytest.raises(ValueError, match=r"`path` must end in .png or .svg"):
        funnel_plot(yi=yi, vi=vi, path=tmp_path / "f.pdf")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(
        ValueError, match=r"draws one meta-analysis but got a batch of shape \(2,\)"
    ):
        funnel_plot(yi=np.stack([yi, yi]), vi=np.stack([vi, vi]))
    with pytest.raises(ValueError, match="trim-and-fill result has batch shape"):
        funnel_plot(trimfill(np.stack([yi, yi]), np.stack([vi, vi])))
    with pytest.raises(ValueError, match="`level` must be confidence levels"):
        funnel_plot(yi=yi, vi=vi, level=(95, 120))
    with pytest.raises(ValueError, match=r"`shade` needs one color per level \(3\); got 2"):
        funnel_plot(yi=yi, vi=vi, shade=("white", "gray"))
    with pytest.raises(ValueError, match="do not pass `yi`/`vi` too"):
        funnel_plot(pool(yi, vi), yi=yi, vi=vi)
    with pytest.raises(TypeError, match="needs a result"):
        funnel_plot(yi=yi)
    with pytest.raises(ValueError, match=r"vi\[2\] = -1.0"):
        funnel_plot(yi=[0.1, 0.2, 0.3], vi=[0.1, 0.1, -1.0])
    with pytest.raises(ValueError, match=r"`vi` has shape \(2,\) but `yi` has shape \(3,\)"):
        funnel_plot(yi=[0.1, 0.2, 0.3], vi=[0.1, 0.1])


# ------------------------------------------------------------------ baujat


@pytest.mark.parametrize(("name", "method", "test"), [("bcg", "REML", "z"), ("egger2001", "FE", "z"),
                                                      ("molloy2014", "PM", "knha")])  # fmt: skip
def test_baujat_plot_points_are_metafors(tmp_path, name, method, test):
    yi, vi = _data(name)
    ref = _ref("baujat", dataset=name, method=method, test=test)
    expected = np.column_stack([ref["x"], ref["y"]]).astype(float)
    out = tmp_path / f"baujat-{name}.png"
    fig = baujat_plot(yi=yi, vi=vi, method=method, test=test, path=out)
    _assert_png(out)
    _close(_collection(fig, "baujat-points").get_offsets(), expected)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [str(i) for i in range(1, yi.size + 1)]
    # The same from a fit (its method and test are used) and from the numbers.
    fig2 = baujat_plot(pool(yi, vi, method=method, test=test), symbol="points")
    _close(_collection(fig2, "baujat-points").get_offsets(), expected)
    fig3 = baujat_plot(baujat(yi, vi, method=method, test=test), path=tmp_path / "b.svg")
    _close(_collection(fig3, "baujat-points").get_offsets(), expected)
    _assert_svg(tmp_path / "b.svg")
    xlabel = fig.axes[0].get_xlabel()
    assert xlabel == ("Contribution to Overall Heterogeneity" if method == "FE"
                      else "Squared Pearson Residual")  # fmt: skip


def test_baujat_plot_labels_and_errors(tmp_path):
    yi, vi = _data("bcg")
    labels = DATA["datasets"]["bcg"]["labels"]
    fig = baujat_plot(Estimates(yi=yi, vi=vi, labels=np.array(labels)), symbol="slab")
    assert [t.get_text() for t in fig.axes[0].texts] == labels
    with pytest.raises(ValueError, match='symbol="slab" needs `labels`'):
        baujat_plot(yi=yi, vi=vi, symbol="slab")
    with pytest.raises(ValueError, match="`symbol` must be"):
        baujat_plot(yi=yi, vi=vi, symbol="stars")
    with pytest.raises(ValueError, match=r"batch of shape \(2,\)"):
        baujat_plot(yi=np.stack([yi, yi]), vi=np.stack([vi, vi]))
    with pytest.raises(ValueError, match="baujat needs at least 2 studies"):
        baujat_plot(yi=[0.1], vi=[0.1])
    with pytest.raises(ValueError, match=r"`path` must end in .png or .svg"):
        baujat_plot(yi=yi, vi=vi, path=tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="do not pass `yi`/`vi`"):
        baujat_plot(baujat(yi, vi), yi=yi, vi=vi)


# ------------------------------------------------------------------ radial


@pytest.mark.parametrize("ref", DATA["radial"], ids=lambda r: f"{r['dataset']}-{r['method']}")
def test_radial_plot_points_are_metafors(tmp_path, ref):
    yi, vi = _data(ref["dataset"])
    if "error" in ref:
        # metafor's default fit stops; ours is rescued: the points of its damped fit
        want = json.loads((Path(__file__).resolve().parents[1] / "reference" /
                           "rescue_reference.json").read_text())["nonconverge"]["radial"]  # fmt: skip
        fig = radial_plot(yi=yi, vi=vi, method=ref["method"])
        _close(
            _collection(fig, "radial-points").get_offsets(), np.column_stack([want["x"], want["y"]])
        )
        return
    fig = radial_plot(yi=yi, vi=vi, method=ref["method"], path=tmp_path / "r.svg")
    _assert_svg(tmp_path / "r.svg")
    _close(_collection(fig, "radial-points").get_offsets(), np.column_stack([ref["x"], ref["y"]]))
    line = _line(fig, "radial-line")
    x, z = line.get_xdata(), line.get_ydata()
    _close((z[1] - z[0]) / (x[1] - x[0]), ref["estimate"])  # slope = pooled estimate
    _close(x[1], 1.3 * np.max(ref["x"]))


def test_radial_plot_inputs_and_errors(tmp_path):
    yi, vi = _data("normand1999")
    fig = radial_plot(pool(yi, vi, method="FE"), level=90, steps=5, path=tmp_path / "r.png")
    _assert_png(tmp_path / "r.png")
    band = _patch(fig, "radial-band").get_xy()
    assert band[0][1] == pytest.approx(stats.norm.isf(0.05))
    assert fig.axes[0].get_xlabel() == r"$x_i = 1/\sqrt{v_i}$"
    with pytest.raises(ValueError, match="`steps` must be an integer >= 2"):
        radial_plot(yi=yi, vi=vi, steps=1)
    with pytest.raises(ValueError, match=r"batch of shape \(2,\)"):
        radial_plot(pool(np.stack([yi, yi]), np.stack([vi, vi])))
    with pytest.raises(ValueError, match=r"`yi` is NaN .*\[0\]"):
        radial_plot(yi=[np.nan, 0.2, 0.3], vi=[0.1, 0.1, 0.1])
