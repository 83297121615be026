"""Content digests and stage keys (spatialmeta._digest, spatialmeta.jobs.keys): the same
content gives the same key whatever object or file holds it, any change of content changes
it, modification times do not, and what no rule covers is refused by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spatialmeta._digest import digest, path_digest, source_digest
from spatialmeta._io import atomic_path
from spatialmeta.jobs.keys import expand_paths, missing_outputs, stage_key, training_key


def test_equal_content_equal_digest_any_change_differs():
    a = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("t", "r"), attrs={"units": "K"})
    assert digest(a) == digest(a.copy(deep=True))
    assert digest(a) != digest(a + 1e-12)
    assert digest(a) != digest(a.assign_attrs(units="degC"))
    assert digest(a) != digest(a.rename(r="region"))
    assert digest({"x": 1, "y": [1, 2]}) == digest({"y": [1, 2], "x": 1})  # key order
    assert digest(1) != digest(1.0) and digest("1") != digest(1) and digest(None) != digest(0)
    assert digest(np.zeros(3, "f4")) != digest(np.zeros(3, "f8"))  # dtype is content
    f = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert digest(f) == digest(f.copy()) and digest(f) != digest(f.iloc[::-1])


def test_geodataframe_digest_is_its_geometry_and_crs(recwarn):
    import geopandas as gpd
    from shapely.geometry import box

    g = gpd.GeoDataFrame({"id": ["a", "b"]}, geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)],
                         crs="EPSG:4326")  # fmt: skip
    assert digest(g) == digest(g.copy())
    assert digest(g) != digest(g.set_crs("EPSG:3857", allow_override=True))
    assert digest(g) != digest(g.assign(geometry=g.geometry.translate(1e-9)))
    assert not [w for w in recwarn if "geometry" in str(w.message).lower()]


def test_torch_modules_by_their_weights():
    import torch

    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    assert digest(a) != digest(b)
    b.load_state_dict(a.state_dict())
    assert digest(a) == digest(b)


def test_unknown_objects_are_refused_by_name():
    class Opaque:
        pass

    with pytest.raises(TypeError, match="test_digest.*Opaque"):
        digest({"x": Opaque()})


def test_files_by_bytes_not_by_time_or_place(tmp_path):
    p = tmp_path / "a.nc"
    p.write_bytes(b"abc" * 1000)
    d = path_digest(p)
    os.utime(p, (1, 1))
    assert path_digest(p) == d
    shutil.copy(p, tmp_path / "b.nc")
    assert path_digest(tmp_path / "b.nc") == d
    p.write_bytes(b"abd" * 1000)
    assert path_digest(p) != d
    store = tmp_path / "s.zarr"
    xr.Dataset({"v": ("t", np.arange(4.0))}).to_zarr(store, zarr_format=3)
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    assert path_digest(store) == path_digest(copy)
    with pytest.raises(FileNotFoundError, match="nope"):
        path_digest(tmp_path / "nope")


def test_stage_key_hashes_files_by_content_and_ignores_progress(tmp_path):
    (tmp_path / "x_1.nc").write_bytes(b"1")
    (tmp_path / "x_2.nc").write_bytes(b"2")
    args = {"rasters": [str(tmp_path / "x_*.nc")], "n": 3, "progress": True}
    key = stage_key("s", args, code=("spatialmeta._io",), files=("rasters",))
    assert key == stage_key("s", {**args, "progress": False}, code=("spatialmeta._io",),
                            files=("rasters",))  # fmt: skip
    assert key != stage_key("s", {**args, "n": 4}, code=("spatialmeta._io",), files=("rasters",))
    assert key != stage_key("t", args, code=("spatialmeta._io",), files=("rasters",))
    (tmp_path / "x_3.nc").write_bytes(b"3")  # a new file matches the pattern
    assert key != stage_key("s", args, code=("spatialmeta._io",), files=("rasters",))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_paths([str(tmp_path / "y_*.nc")])


def test_code_version_is_the_source_of_the_modules(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("A = 1\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from spatialmeta._digest import source_digest;"
            " print(source_digest('pkgx'))")  # fmt: skip

    def version():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    v1 = version()
    assert version() == v1
    (pkg / "m.py").write_text("A = 2\n")
    assert version() != v1
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        source_digest("no_such_module")


def test_training_key_ignores_steps_after_the_test_start():
    import dataclasses

    from spatialmeta.data import synthetic_region_tasks

    tasks = synthetic_region_tasks(n_regions=10, n_time=72, seed=0)
    held = np.zeros(tasks.n_regions, bool)
    held[:3] = True
    split = tasks.split(held_out=held, test_start="2004-01", support=24)

    def key(series):
        t = dataclasses.replace(tasks, series=series)
        return digest(training_key({"tasks": t, "split": split, "episodes": 5}))

    base = key(tasks.series)
    later = tasks.series.copy()
    later[:, 50:] += 1.0  # the test period (a new month, a corrected one): no retraining
    assert key(later) == base
    earlier = tasks.series.copy()
    earlier[5, 10] += 1.0  # a training region before the test start: retrain
    assert key(earlier) != base


def test_missing_outputs_finds_paths_in_results(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class Report:
        store: Path
        outputs: dict = field(default_factory=dict)

    (tmp_path / "a.csv").write_text("x")
    r = Report(tmp_path / "s.zarr", {"table": tmp_path / "a.csv", "plot": tmp_path / "p.png"})
    assert sorted(missing_outputs(r)) == [str(tmp_path / "p.png"), str(tmp_path / "s.zarr")]


def test_a_killed_writer_leaves_a_temporary_the_next_write_removes(tmp_path):
    final = tmp_path / "out.csv"
    code = ("import os, sys; from spatialmeta._io import atomic_path\n"
            f"with atomic_path({str(final)!r}) as tmp:\n"
            "    tmp.write_text('half'); os._exit(9)\n")  # dies before the rename  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-") and not final.exists()
    from spatialmeta._io import _HOST

    mine = tmp_path / f".tmp-{_HOST}.{os.getpid()}-0123abcd-out.csv"  # a live writer's
    mine.write_text("a live writer's")
    with atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, mine.name])
