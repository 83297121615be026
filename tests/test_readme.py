"""The README's Python example runs as printed, on files named as it names them."""

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    from spatialmeta.data import synthetic_climate, synthetic_regions
    from spatialmeta.raster import write_netcdf

    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Using the library\n\n```python\n(.*?)```", text, re.S).group(1)
    bbox = (0, 40, 8, 46)
    ds = synthetic_climate(bbox=bbox, resolution=1.0, years=1, seed=1)
    write_netcdf(ds, tmp_path / "climate.nc")
    regions = synthetic_regions(bbox, 6, seed=1)
    regions = regions.drop(columns=[c for c in regions.columns if c.lower() == "name"])
    regions = regions.rename(columns={"region_id": "NAME"})
    regions["STUSPS"] = [f"S{i}" for i in range(len(regions))]
    regions.to_file(tmp_path / "regions.gpkg")
    profile = dict(driver="GTiff", count=1, dtype="float64", crs="EPSG:4326", width=8, height=6,
                   transform=rasterio.transform.from_origin(0, 46, 1, 1))  # fmt: skip
    with rasterio.open(tmp_path / "population.tif", "w", **profile) as dst:
        dst.write(np.random.default_rng(0).gamma(2, 10, (6, 8)), 1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    table = gpd.read_file(tmp_path / "tas_by_region.gpkg")
    assert set(table.NAME) == set(regions.NAME) and "STUSPS" in table.columns
    assert {"tas_mean", "tas_weighted_mean"} <= set(table.columns)
    assert np.isfinite(table.tas_weighted_mean).all()
    assert "Random-Effects Model" in capsys.readouterr().out


def test_readme_pictures_and_links_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?:docs|notebooks|deploy)/[^)]+)\)", text)
    assert len(targets) >= 8
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing
