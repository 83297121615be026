"""forest_plot: one CI line per study, the pooled diamond, the PI bar, a real PNG."""

from __future__ import annotations

import json
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
