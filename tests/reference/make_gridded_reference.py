"""Step 1 of regenerating tests/reference/gridded_reference.json (step 2 is the R script).

Extracts the TREFHT series of a few grid cells of all 8 CCSM members (as open_raster reads
them) and their time axis in decades, so that R can fit the trends and pool them:

    .venv/bin/python tests/reference/make_gridded_reference.py   # writes the inputs
    Rscript tests/reference/make_gridded_reference.R             # adds metafor's results
"""

import json
from pathlib import Path

import spatialmeta as sm
from spatialmeta.tasks.trend import newey_west_lags

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "trefht_ccsm_ensemble"
CELLS = [(5, 10), (12, 100), (20, 64), (31, 0), (32, 127), (40, 33), (50, 90), (60, 70)]


def main() -> None:
    ds = sm.raster.open_raster(sorted(DATA.glob("TREFHT.*.nc")))
    da = ds.TREFHT.load()
    time = da.time.values
    t = (time - time[0]).astype("timedelta64[s]").astype(float) / (365.25 * 86400) / 10
    cells = []
    for i, j in CELLS:
        series = da.isel(lat=i, lon=j).values  # (member, time)
        cells.append(
            {
                "lat_index": i,
                "lon_index": j,
                "lat": float(da.lat[i]),
                "lon": float(da.lon[j]),
                "series": [[float(x) for x in row] for row in series],
            }  # fmt: skip
        )
    out = {
        "members": [str(m) for m in da.member.values],
        "t_decades": [float(f"{x:.17g}") for x in t],
        "lags": newey_west_lags(len(t)),
        "cells": cells,
    }
    (HERE / "gridded_reference.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
