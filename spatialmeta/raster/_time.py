"""Time decoding made explicit: CF units, model calendars, and units CF readers refuse."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["decode_time"]

_CALENDAR_ALIASES = {"365_days": "noleap", "366_days": "all_leap", "360_days": "360_day"}
_UNITS = re.compile(r"^\s*(\w+)\s+since\s+(.+?)\s*$")


def _calendar_of(ds: xr.Dataset, var: xr.Variable, calendar: str | None) -> tuple[str, str]:
    if calendar:
        return calendar, "given by the caller"
    cal = var.attrs.get("calendar")
    if cal:
        alias = _CALENDAR_ALIASES.get(str(cal).strip().lower())
        if alias:  # NCAR CCM/CSM files write "365_days"; CF's name is "noleap" ("365_day")
            return alias, f"from the file ({cal!r}, read as CF's {alias!r})"
        return str(cal), "from the file"
    conventions = str(ds.attrs.get("Conventions", ""))
    if re.search(r"CSM|CCSM|CESM", conventions, flags=re.IGNORECASE):
        # NCAR CSM/CCSM/CESM output uses a 365-day year but often omits the attribute
        return "noleap", f"assumed for Conventions={conventions!r} (no calendar attribute)"
    return "standard", "CF default (no calendar attribute)"


def decode_time(
    ds: xr.Dataset,
    *,
    source: str,
    calendar: str | None = None,
    units: str | None = None,
) -> xr.Dataset:
    """Decode a numeric ``time`` coordinate to datetime64, saying how in its attributes.

    Handles CF units in any calendar (model calendars such as ``noleap`` or ``360_day``
    are decoded with cftime and mapped to the same year, month and day), ``months since``
    and ``years since`` (which CF decoders refuse outside a 360-day calendar) for whole
    numbers of months or years, and a missing calendar attribute (CF's default; NCAR
    CSM/CCSM/CESM files default to ``noleap``). ``time.attrs["decoded_from"]`` records the
    units and calendar used.
    """
    if "time" not in ds.variables:
        return ds
    var = ds["time"].variable
    if np.issubdtype(var.dtype, np.datetime64) or var.dtype == object:
        return ds
    units = units or var.attrs.get("units")
    if not units:
        raise ValueError(
            f"'{source}': time has no units; pass time_units= (e.g. 'days since 1900-01-01')."
        )
    m = _UNITS.match(str(units))
    if not m:
        raise ValueError(
            f"'{source}': time units {units!r} are not '<unit> since <date>'; pass time_units=."
        )
    step, origin = m.group(1).lower(), m.group(2)
    if re.match(r"^0+-00-00", origin):  # NCAR CCM/CSM "since 0000-00-00": day 0 of year 0
        origin = "0000-01-01" + origin[10:]
        units = f"{step} since {origin}"
    cal, why = _calendar_of(ds, var, calendar)
    values = np.asarray(var.values)
    try:
        if step in ("month", "months", "year", "years") and cal not in ("360_day",):
            whole = np.round(values)
            if not np.allclose(values, whole, atol=1e-6):
                raise ValueError(
                    f"'{source}': time in {step} since {origin} has fractional values; "
                    "calendar months/years have no fixed length, so they cannot be decoded exactly."
                )
            n = whole.astype(int) * (12 if step.startswith("year") else 1)
            base = pd.Timestamp(origin)
            times = pd.DatetimeIndex([base + pd.DateOffset(months=int(k)) for k in np.unique(n)])
            times = times[np.searchsorted(np.unique(n), n)]
        elif cal in ("standard", "gregorian", "proleptic_gregorian"):
            times = pd.DatetimeIndex(xr.coding.times.decode_cf_datetime(values, str(units), cal))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                decoded = xr.coding.times.decode_cf_datetime(
                    values, str(units), cal, use_cftime=True
                )
                # model calendars keep their year, month and day (a 360-day Feb 30 becomes Feb 28)
                index = xr.CFTimeIndex(np.asarray(decoded).ravel())
                if cal == "360_day":
                    day = np.minimum(index.day, np.where(index.month == 2, 28, 30))
                    times = pd.to_datetime(
                        {"year": index.year, "month": index.month, "day": day, "hour": index.hour}
                    )
                    times = pd.DatetimeIndex(times)
                else:
                    try:
                        times = index.to_datetimeindex(unsafe=True, time_unit="ns")
                    except ValueError:  # model years before 1678 (e.g. year 16): seconds
                        times = index.to_datetimeindex(unsafe=True, time_unit="s")
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(
            f"'{source}': cannot decode time {units!r} in calendar {cal!r}: {exc}"
        ) from exc
    attrs = {k: v for k, v in var.attrs.items() if k not in ("units", "calendar")}
    attrs["decoded_from"] = f"{units} (calendar {cal}, {why})"
    return ds.assign_coords(time=("time", times.values, attrs))
