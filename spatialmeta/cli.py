"""The ``spatialmeta`` command line: a typer app over the jobs (:mod:`spatialmeta.jobs`).

Heavy imports (torch, Prefect, the geo stack) happen inside the commands, so ``--help``
answers at once.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="spatialmeta",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_DEBUG_ENV = "SPATIALMETA_DEBUG"

# Warnings about the libraries' own future (rioxarray's use of affine's ``*``, pandas and
# xarray deprecations) mean nothing to a user of the command line and are hidden there;
# spatialmeta's own warnings (a rewritten store, a dropped region) are shown. ``--debug``
# shows everything.
_LIBRARY_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _quiet_library_warnings() -> None:
    for category in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", category=category)
    # the children a command starts (dask workers, a Prefect server) inherit the filter
    os.environ["PYTHONWARNINGS"] = ",".join(f"ignore::{c.__name__}" for c in _LIBRARY_WARNINGS)


def _show_version(value: bool) -> None:
    if value:
        from spatialmeta import __version__

        typer.echo(f"spatialmeta {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.",
    ),
    debug: bool = typer.Option(
        False, "--debug",
        help="Full tracebacks and every library warning (otherwise one line per error).",
    ),
) -> None:  # fmt: skip
    """Geospatial meta-learning: rasters → region tasks → meta-learned forecasts → pooled skill.

    Example: spatialmeta demo --out outputs/demo
    """
    if debug:
        os.environ[_DEBUG_ENV] = "1"
    if not os.environ.get(_DEBUG_ENV):
        _quiet_library_warnings()


def _fail(message: str, code: int = 1) -> None:
    """One line on stderr, non-zero exit, no traceback (set SPATIALMETA_DEBUG=1 for one)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# The jobs' and engines' errors name arguments in backticks (`holdout`); a command words
# them as its own flags. One table per command, the only place the mapping lives.
FLAGS = {
    "forecast": {
        "series": "--series", "var": "--var", "regions": "--regions",
        "region_id": "--region-id", "holdout": "--holdout", "support": "--support",
        "test_start": "--test-start", "horizon": "--horizon", "member": "--member",
        "lags": "--lags", "learner": "--learner", "episodes": "--episodes", "shots": "--shots",
        "rasters": "--rasters", "grid": "--grid",
    },
    "pool": {"method": "--method", "test": "--test", "level": "--level", "measure": "--measure",
             "prior": "--prior", "cluster": "--cluster", "type": "--robust"},
    "prior": {"family": "--family", "pooling": "--pooling", "measure": "--measure"},
    "screen": {"review": "--review", "method": "--method", "labels": "--labels", "mix": "--mix",
               "columns": "--title/--abstract/--label"},
    "aggregate": {"regions": "--regions", "id_column": "--id-column", "tiles": "--tiles",
                  "variables": "--var", "min_coverage": "--min-coverage",
                  "assume_crs": "--crs", "weight": "--weight-raster",
                  "coverage_weight": "--coverage-weight", "min_coverage_frac": "--min-coverage-frac",
                  "include_cols": "--include-cols", "stats": "--stats"},
}  # fmt: skip
COMMON_FLAGS = {"out": "--out"}  # every command writes into --out


def as_flags(message: str, command: str) -> str:
    """``message`` with the argument names of ``command`` (in backticks) as its flags.

    >>> as_flags("`holdout` '0.x' is neither a fraction nor a file", "forecast")
    "--holdout '0.x' is neither a fraction nor a file"
    """
    for name, flag in {**COMMON_FLAGS, **FLAGS.get(command, {})}.items():
        message = message.replace(f"`{name}`", flag)
    return message


def _fail_with(exc: BaseException, command: str, code: int = 1) -> None:
    """The first line of an error, in the command's flags (a traceback with SPATIALMETA_DEBUG)."""
    if os.environ.get(_DEBUG_ENV):
        raise exc
    text = str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)
    _fail(as_flags(text.splitlines()[0], command) if text else type(exc).__name__, code)


def _known_errors():
    from spatialmeta._io import OutputError

    return (OutputError, ValueError, KeyError, FileNotFoundError, PermissionError, OSError)


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", "-o", help="Folder for every output."),
    years: int = typer.Option(40, help="Years of synthetic monthly data."),
    resolution: float = typer.Option(1.0, help="Grid spacing of the synthetic rasters, degrees."),
    regions: int = typer.Option(80, help="Approximate number of synthetic regions."),
    holdout: float = typer.Option(
        0.2, help="Fraction of regions held out (forecast from a short record)."
    ),
    support: int = typer.Option(
        36, help="Months a held-out region is known before the test period."
    ),
    episodes: int = typer.Option(600, help="Maximum meta-training episodes."),
    seed: int = typer.Option(0, help="Seed for data, hold-out and training."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run the main job end to end on the embedded synthetic data.

    The same stages as the Prefect flow flows/pipeline.py (`make demo` runs that flow);
    here they run directly, without Prefect.

    Writes forecasts (Zarr, GeoParquet), skill tables (CSV), a skill map and a forest plot (PNG)
    and a Markdown summary into OUT, and prints the summary.

    Example: spatialmeta demo --out outputs/demo --episodes 300
    """
    from spatialmeta._io import ensure_writable_dir

    try:
        ensure_writable_dir(out)
    except _known_errors() as exc:
        _fail_with(exc, "demo", 2)
    from spatialmeta.jobs.demo import demo_job

    try:
        result = demo_job(
            out, years=years, resolution=resolution, n_regions=regions, holdout=holdout,
            support=support, episodes=episodes, seed=seed, progress=progress,
            log=lambda line: typer.echo(line, err=True),
        )  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "demo")
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    console.print(Markdown(result.summary))
    console.print(f"\nOutputs are in [bold]{out.resolve()}[/bold] (summary: {out / 'summary.md'})")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the data set into."),
    years: int = typer.Option(40, help="Years of monthly data."),
    resolution: float = typer.Option(1.0, help="Grid spacing, degrees."),
    regions: int = typer.Option(80, help="Approximate number of regions."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Write the embedded synthetic climate (NetCDF, GeoTIFF, Zarr) and its regions (GeoPackage).

    Example: spatialmeta synth --out data/synthetic --years 20
    """
    from spatialmeta._io import ensure_writable_dir
    from spatialmeta.data import write_default_data

    try:
        ensure_writable_dir(out)
        paths = write_default_data(
            out, years=years, resolution=resolution, n_regions=regions, seed=seed
        )
    except _known_errors() as exc:
        _fail_with(exc, "synth")
    for name, p in vars(paths).items():
        typer.echo(f"{name}: {p}")


@app.command()
def aggregate(
    rasters: list[str] = typer.Argument(..., help="Raster files, a glob, or several members."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output: .zarr or .nc (region x time), .csv, .gpkg or .parquet."
    ),
    regions: Path | None = typer.Option(None, help="Polygons (GeoPackage, Shapefile, GeoParquet)."),
    id_column: str = typer.Option("region_id", help="Column of unique region ids."),
    tiles: int | None = typer.Option(
        None, help="Aggregate to square tiles of this many cells instead."
    ),
    stats: str = typer.Option(
        "mean",
        help="Comma-separated statistics: mean, sum, count, std, variance, "
        "coefficient_of_variation, min, max, median, quantile; with --weight-raster "
        "weighted_mean, weighted_sum, weighted_std, weighted_variance; for class rasters "
        "frac, weighted_frac, majority, minority, variety, unique.",
    ),
    var: list[str] | None = typer.Option(
        None, help="Variable(s) to aggregate (default: all gridded)."
    ),
    weights: Path | None = typer.Option(
        None, help="Reuse weights from this .npz, or save them there."
    ),
    min_coverage: float = typer.Option(
        0.5, help="Least valid weight fraction for a value (else NaN)."
    ),
    assume_crs: str | None = typer.Option(
        None,
        "--crs",
        "--assume-crs",
        help="CRS of rasters that carry none, e.g. EPSG:4326 (refused without it).",
    ),
    weight_raster: Path | None = typer.Option(
        None, help="2-D weighting raster (population, cropland) for the weighted_* statistics."
    ),
    coverage_weight: str = typer.Option(
        "area",
        help="How covered cells count: area (coverage x cell area), fraction, none, "
        "area_cartesian or area_spherical_m2 (the last four as exactextract's).",
    ),
    min_coverage_frac: float = typer.Option(
        0.0, help="Leave out cells a region covers by less than this fraction."
    ),
    include_cols: str | None = typer.Option(
        None, help="Comma-separated polygon columns to carry into a table output."
    ),
    combine: str = typer.Option("auto", help="Several files: member, time or auto."),
    scheduler_address: str | None = typer.Option(
        None, help="Run on this dask scheduler (tcp://host:8786)."
    ),
    workers: int = typer.Option(
        2, help="Workers of the LocalCluster started when no address is given."
    ),
    memory_limit: str = typer.Option(
        "auto", help="Memory limit per LocalCluster worker, e.g. 2GB."
    ),
    local_threads: bool = typer.Option(False, help="Use dask's threaded scheduler, no cluster."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Aggregate rasters to regions (exact cell coverage) into Zarr, NetCDF or a table.

    The output's suffix picks its kind: .zarr or .nc (region x time), or .csv, .gpkg and
    .parquet (one row per region and time step; the last two carry the polygons, for QGIS
    or geopandas). Runs on a dask.distributed LocalCluster by default, or on an existing
    scheduler.

    Examples:

    spatialmeta aggregate data/TREFHT.*.nc --regions states.shp --id-column STATE_NAME --out trefht_states.zarr

    spatialmeta aggregate tas.tif --regions states.gpkg --id-column NAME --stats weighted_mean --weight-raster population.tif --include-cols STUSPS --out tas_by_population.gpkg
    """
    import warnings

    from spatialmeta.jobs.aggregate import aggregate_job
    from spatialmeta.raster.io import RasterError

    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        result = aggregate_job(
            rasters, out, regions=regions, id_column=id_column, tiles=tiles,
            stats=[s.strip() for s in stats.split(",") if s.strip()], variables=var or None,
            weights=weights, min_coverage=min_coverage, assume_crs=assume_crs, combine=combine,
            weight_raster=weight_raster, coverage_weight=coverage_weight,
            min_coverage_frac=min_coverage_frac,
            include_cols=[c.strip() for c in (include_cols or "").split(",") if c.strip()],
            scheduler_address=scheduler_address, workers=workers, memory_limit=memory_limit,
            local_threads=local_threads, progress=progress,
        )  # fmt: skip
    except (RasterError, *_known_errors()) as exc:
        _fail_with(exc, "aggregate")
    typer.echo(f"wrote {result.store} ({result.n_regions} regions)")
    if result.regions:
        typer.echo(f"tile polygons (GeoParquet, id column region_id): {result.regions}")
    if result.weights:
        typer.echo(f"weights: {result.weights}")


@app.command()
def forecast(
    series: Path | None = typer.Option(
        None, help="(region, time) series store: Zarr or NetCDF (or give --rasters)."
    ),
    rasters: list[str] | None = typer.Option(
        None,
        help="Raster files (or a glob) to aggregate over --regions first, into OUT/series.zarr; "
        "instead of --series. Forecasts and skill then also go onto their grid.",
    ),
    grid: Path | None = typer.Option(
        None,
        help="A raster the series came from: forecasts and skill also on its cells "
        "(OUT/forecasts_grid.nc, OUT/forecast_latest.tif, OUT/skill_map.tif).",
    ),
    var: str = typer.Option(..., help="Variable to forecast."),
    regions: Path = typer.Option(
        ..., help="Polygons of the regions (GeoPackage, Shapefile, GeoParquet)."
    ),
    region_id: str = typer.Option(
        "region_id", help="Column of the polygons holding the series' region ids."
    ),
    holdout: str = typer.Option(
        "0.2", help="Fraction of regions to hold out, or a file of region ids."
    ),
    support: int = typer.Option(36, help="Steps a held-out region is known before --test-start."),
    test_start: str = typer.Option(..., help="First date of the test period, e.g. 2016-01."),
    horizon: int = typer.Option(3, help="Forecast steps 1..H."),
    member: str | None = typer.Option(
        None, help="Ensemble member to use when the store has several."
    ),
    lags: int = typer.Option(12, help="Lag window of the model."),
    learner: str = typer.Option(
        "hier",
        help="Meta-learner: hier (hierarchical Bayes over the whole known record, prior from "
        "a graph network), ridge (Bayesian ridge head, R2-D2), anil, maml, fomaml "
        "(first-order MAML), reptile or protonet (prototypical networks).",
    ),
    episodes: int = typer.Option(400, help="Maximum meta-training episodes."),
    shots: str | None = typer.Option(
        None,
        help="Also score every method with these support lengths, e.g. 6,12,24,48,max "
        "(max: everything before --test-start) "
        "(writes OUT/shots.csv and OUT/shots.png).",
    ),
    seed: int = typer.Option(0, help="Seed."),
    threads: int = typer.Option(1, help="Torch threads (1 suits these small networks)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    progress: bool = typer.Option(True, help="Show progress."),
) -> None:
    """Meta-train over regions, forecast held-out regions from a short support window, score.

    Methods: the meta-learner (meta, by default the hierarchical Bayes learner; without its
    update on the region's own record: meta_noadapt), the global graph network trained
    without episodes (global; fine-tuned on each support window: global_finetuned),
    climatology of the support window, raw persistence, ridge autoregression, and the
    statistician's references: expanding_climatology, neighbour_climatology,
    eb_climatology (own seasonal means shrunk toward the neighbours') and
    anomaly_persistence. skill.csv also carries 50 %/90 % coverage, the interval score and
    CRPSS against each reference; OUT/pit.png shows the PIT histograms.

    Writes OUT/forecasts.zarr, OUT/forecasts.parquet, OUT/skill.csv (one row per method),
    OUT/skill_by_region.csv, OUT/skill_map.png, the pooled skill against climatology
    (OUT/pooled_skill.json, OUT/forest_skill.png), OUT/summary.md (set-up, tables, missing
    values), training logs under OUT/checkpoint*/ (metrics.csv) and, with --shots,
    OUT/shots.csv and OUT/shots.png.

    Example: spatialmeta forecast --series outputs/demo/series.zarr --var tas --regions outputs/demo/data/regions.gpkg --test-start 2016-01 --shots 6,12,24,48 --out outputs/forecast

    Example: spatialmeta forecast --rasters outputs/demo/data/climate.nc --regions outputs/demo/data/regions.gpkg --var tas --test-start 2016-01 --out outputs/forecast
    """
    from spatialmeta._io import ensure_writable_dir
    from spatialmeta.jobs.forecast import forecast_job
    from spatialmeta.learn.algorithms import learner_entry
    from spatialmeta.learn.config import LearnConfig
    from spatialmeta.raster.aggregate import read_regions

    try:
        shot_list = None
        if shots:
            try:
                shot_list = [
                    "max" if s.strip() == "max" else int(s) for s in shots.split(",") if s.strip()
                ]
            except ValueError:
                raise ValueError(
                    f"--shots must be comma-separated integers or 'max' (the longest support "
                    f"the record allows), e.g. 6,12,24,48,max; got {shots!r}."
                ) from None
        learner_entry(learner)  # an unknown name fails before any work, listing the names
        if (series is None) == (not rasters):
            raise ValueError("give either `series` (an aggregated store) or `rasters`, not both.")
        polys = read_regions(regions, id_column=region_id)
        cfg = LearnConfig(lags=lags, episodes=episodes, seed=seed, learner=learner)
        if rasters:  # one command from the user's rasters: aggregate, then forecast
            from spatialmeta.jobs.aggregate import aggregate_job

            ensure_writable_dir(out)
            series = aggregate_job(
                rasters, out / "series.zarr", regions=regions, id_column=region_id,
                variables=[var], local_threads=True, progress=progress,
            ).store  # fmt: skip
            grid = grid or list(rasters)
        result = forecast_job(
            series, var, polys, out, region_id=region_id, holdout=holdout, support=support,
            test_start=test_start, horizon=horizon, member=member, config=cfg, shots=shot_list,
            progress=progress, threads=threads, grid=grid,
        )  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "forecast")
    table = result.evaluation.table[["method", "rmse", "mae", "crps", "bias"]]
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result.n_missing:
        typer.echo(
            f"{result.n_missing} missing values were masked (never used as inputs or scored)."
        )
    if result.shots is not None:
        typer.echo("\nshots curve (support steps × method):")
        wide = result.shots.pivot(index="method", columns="support", values="rmse")
        typer.echo(wide.to_string(float_format=lambda v: f"{v:.3f}") + "\n(RMSE)")
    typer.echo(f"outputs in {result.out} (summary: {result.out / 'summary.md'})")


@app.command("pool")
def pool_command(
    studies: Path = typer.Argument(..., help="Study table (CSV): one row per study."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Report folder (built under a temporary name, then renamed)."
    ),
    measure: str | None = typer.Option(
        None, help="Compute effect sizes from raw columns (escalc): SMD, MD, RR, OR, COR, ..."
    ),
    method: str = typer.Option("REML", help="FE, or tau^2 estimator: DL, HE, ML, REML, PM, ..."),
    test: str = typer.Option("z", help="z, or knha (Knapp-Hartung)."),
    level: float = typer.Option(95.0, help="Confidence level, percent."),
    mods: str | None = typer.Option(None, help="Moderator columns, COL[,COL...]: meta-regression."),
    subgroup: str | None = typer.Option(None, help="Column of subgroups (per-subgroup models)."),
    label: str | None = typer.Option(None, help="Column of study labels (default: study)."),
    yi: str | None = typer.Option(None, "--yi", help="Effect-size column (default yi)."),
    vi: str | None = typer.Option(None, "--vi", help="Sampling-variance column (default vi)."),
    col: list[str] | None = typer.Option(
        None, "--col", help="Raw column for an escalc argument, ARG=COLUMN (repeatable)."
    ),
    prior: str | None = typer.Option(
        None,
        help="Add Bayesian random effects with this prior: turner2015[:OUTCOME,COMPARISON], "
        "rhodes2015[:AREA,OUTCOME,COMPARISON], bartos2021:SCALE[,SUBFIELD], halfnormal:SCALE, "
        "halft:SCALE[,DF], lognormal:MU,SIGMA, invgamma:SHAPE,SCALE, uniform:UPPER, or "
        "learned:PATH (a prior.json of 'spatialmeta prior learn', or a corpus).",
    ),
    cluster: str | None = typer.Option(
        None,
        help="Column of clusters (several effects per study, region groups): adds "
        "cluster-robust SEs, Satterthwaite t tests and intervals (clubSandwich's coef_test).",
    ),
    robust_type: str = typer.Option(
        "CR2", "--robust", help="The cluster-robust adjustment: CR2 (bias-reduced), CR1 or CR0."
    ),
    structure: str | None = typer.Option(
        None,
        help="With --cluster, a multilevel model (metafor's rma.mv) of several effects per "
        "cluster: 3level (effects nested in clusters), or CS, HCS, UN, AR, DIAG (effects "
        "correlated across the levels of --inner within a cluster); variance components, "
        "I² by level and robust tests of that fit.",
    ),
    inner: str | None = typer.Option(
        None, help="Column of inner levels (outcome, time) for --structure CS/HCS/UN/AR/DIAG."
    ),
    rho: float = typer.Option(
        0.0,
        help="Correlation of the sampling errors of effects in one cluster, imputed "
        "(clubSandwich's impute_covariance_matrix); 0: independent.",
    ),
    progress: bool = typer.Option(True, help="Show progress on stderr."),
) -> None:
    """Meta-analyse a table of studies: model, heterogeneity, moderators, subgroups, bias, plots.

    Without --measure the CSV holds effect sizes and sampling variances (columns yi, vi, or
    --yi/--vi). With --measure they are computed as metafor's escalc from raw columns named
    as its arguments (m1i, sd1i, n1i, m2i, sd2i, n2i; ai, bi, ci, di; xi, ni; ri, ni; ...),
    or mapped with --col. Writes OUT/report.md, OUT/results.json, OUT/studies.csv and forest,
    funnel, Baujat and radial plots (PNG, SVG), and prints the summary. With --prior, also
    the posterior of mu and tau (no MCMC) and the posterior and shrinkage plots. With
    --cluster and --structure, a multilevel model of several effects per study.

    Example: spatialmeta pool assink.csv --cluster study --structure 3level --rho 0.6 --mods deltype --out outputs/assink

    Example: spatialmeta pool bcg.csv --measure RR --col ai=tpos --col bi=tneg --col ci=cpos --col di=cneg --label trial --mods ablat --subgroup alloc --out outputs/bcg
    """
    from spatialmeta.jobs.pool import pool_job

    try:
        result = pool_job(
            studies, out, measure=measure, method=method, test=test, level=level, mods=mods,
            subgroup=subgroup, label=label, yi=yi, vi=vi, columns=col or None, prior=prior,
            cluster=cluster, robust_type=robust_type, structure=structure, inner=inner,
            rho=rho, progress=progress,
        )  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "pool", 2)
    typer.echo(result.summary.rstrip("\n"))


prior_app = typer.Typer(
    help="Heterogeneity priors learned from a corpus of meta-analyses.\n\n"
    "Example: spatialmeta prior learn ../shared/data/meta_analysis --out prior.json",
    no_args_is_help=True,
)
app.add_typer(prior_app, name="prior")


@prior_app.command("learn")
def prior_learn(
    corpus: Path = typer.Argument(
        ...,
        help="A folder holding metadat/ and psymetadata/ (.rda), or a long CSV table "
        "(meta_id, yi, vi, optional measure): one row per study.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The prior file to write (JSON)."),
    family: str = typer.Option(
        "lognormal_tau2",
        help="lognormal_tau2 (Turner), logt_tau2 (Rhodes), invgamma_tau (Bartoš), "
        "halfnormal_tau or halft_tau.",
    ),
    measure: str | None = typer.Option(
        None, help="Learn from the meta-analyses of this measure only (OR, RR, SMD, ...)."
    ),
    pooling: str = typer.Option(
        "partial",
        help="With several measures in the corpus: partial (a learned random effect per "
        "measure on the prior's location), separate (a free location per measure) or none.",
    ),
) -> None:
    """Learn a prior for tau by empirical Bayes from a corpus, and write it for --prior learned:FILE.

    Every meta-analysis's marginal likelihood of tau (mu integrated out) is computed on one
    grid; the prior's parameters maximize their sum, with standard errors from the Hessian.
    With several measures the prior's location depends on the measure (--pooling).

    Example: spatialmeta prior learn ../shared/data/meta_analysis --measure OR --out or_prior.json
    """
    import pandas as pd

    from spatialmeta.meta_analysis.corpus import Corpus, load_corpus
    from spatialmeta.meta_analysis.prior_files import learn_corpus, save_prior

    try:
        if out.suffix.lower() != ".json":
            raise ValueError(f"`out` '{out}' must end in .json (the prior file).")
        if corpus.is_dir():
            c = load_corpus(corpus)
        elif corpus.is_file():
            c = Corpus.from_table(pd.read_csv(corpus))
        else:
            raise FileNotFoundError(f"corpus '{corpus}' does not exist.")
        if measure is not None:
            c = Corpus(c.table[c.table.measure == measure.upper()].reset_index(drop=True))
            if c.table.empty:
                raise ValueError(f"the corpus has no meta-analysis with `measure` {measure!r}.")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = learn_corpus(c, family=family, pooling=pooling)
        save_prior(res, out)
    except _known_errors() as exc:
        _fail_with(exc, "prior", 2)
    typer.echo(c.counts().to_string())
    for w in caught:  # the library's warnings as one plain line each
        typer.echo(f"note: {str(w.message).removeprefix('learn_corpus: ')}", err=True)
    typer.echo(res.summary())
    typer.echo(f"prior written to {out} (use: spatialmeta pool ... --prior learned:{out})")


screen_app = typer.Typer(
    help="Screening the records of a systematic review: simulate on labelled reviews, rank "
    "the unlabelled records of one.\n\n"
    "Example: spatialmeta screen simulate ../shared/data/screening/reviews.csv.gz "
    "--review Cohen_2006_ADHD --out outputs/screen",
    no_args_is_help=True,
)
app.add_typer(screen_app, name="screen")


# the options the screen commands share (one declaration each)
_RECORDS_ARG = typer.Argument(..., help="The records (CSV/TSV, gzipped, Parquet or RIS).")
_METHOD_OPT = typer.Option(
    "asreview_default",
    help="asreview_default, asreview_nb, or a meta-learned screener (policy_svm, weighted_svm, "
    "protonet, anil, matching) that first learns from the file's other labelled reviews.",
)
_TITLE_OPT = typer.Option(None, help="The title column, if not found by name.")
_ABSTRACT_OPT = typer.Option(None, help="The abstract column, if not found by name.")
_LABEL_OPT = typer.Option(None, help="The label column, if not found by name.")


def _columns(title, abstract, label) -> dict | None:
    cols = {k: v for k, v in (("title", title), ("abstract", abstract), ("label", label)) if v}
    return cols or None


@screen_app.command("simulate")
def screen_simulate(
    data: Path = typer.Argument(
        ...,
        help="Records with title, abstract and 0/1 labels "
        "(CSV/TSV, gzipped, Parquet or RIS; one or more reviews).",
    ),  # fmt: skip
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for runs.csv, recall.png, summary.md."
    ),
    review: str | None = typer.Option(None, help="The review to simulate (a review_id)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Prior-knowledge draws, comma-separated."),
    method: list[str] = typer.Option(
        ["asreview_default", "asreview_nb"],
        "--method",
        help="Screeners to run (repeat the flag): asreview_default, asreview_nb, or a "
        "meta-learned one (policy_svm, weighted_svm, protonet, anil, matching), trained on the "
        "file's other reviews.",
    ),  # fmt: skip
    batch: str = typer.Option(
        "auto", help="Records screened between refits: 1 (ASReview's loop) or auto."
    ),  # fmt: skip
    mix: float = typer.Option(
        0.0, help="Share of queries by uncertainty (nearest the boundary); 0: certainty only."
    ),  # fmt: skip
    title: str | None = _TITLE_OPT,
    abstract: str | None = _ABSTRACT_OPT,
    label: str | None = _LABEL_OPT,
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Simulate screening one labelled review: every record screened by each method from
    seeded prior knowledge (one included, one excluded record); WSS@95, RRF@10, ATD and
    the stopping test per run.

    Example: spatialmeta screen simulate reviews.csv.gz --review Cohen_2006_ADHD --out outputs/screen
    """
    from spatialmeta.jobs.screen import screen_simulate_job

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        res = screen_simulate_job(data, out=out, review=review, seeds=seed_list, methods=method,
                                  batch=batch if batch == "auto" else int(batch), mix=mix,
                                  columns=_columns(title, abstract, label), progress=progress)  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "screen", 2)
    typer.echo(res.summary)


@screen_app.command("rank")
def screen_rank(
    data: Path = _RECORDS_ARG,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for ranked.csv."),
    labels: Path | None = typer.Option(
        None, help="CSV of record_id,label (1/0) decisions so far (default: the file's own labels)."
    ),  # fmt: skip
    review: str | None = typer.Option(None, help="The review to rank (when the file has several)."),
    method: str = _METHOD_OPT,
    title: str | None = _TITLE_OPT,
    abstract: str | None = _ABSTRACT_OPT,
    label: str | None = _LABEL_OPT,
) -> None:
    """Rank a review's unlabelled records, most likely relevant first, from its labelled
    ones (at least one included and one excluded). With --method policy_svm the policy is
    chosen by simulating the file's other reviews (minutes); the simulations are kept in
    OUT/policy_simulations.csv, and ranking into the same OUT again reuses them.

    Example: spatialmeta screen rank records.ris --labels decisions.csv --out outputs/rank
    """
    from spatialmeta.jobs.screen import screen_rank_job

    try:
        res = screen_rank_job(data, out=out, labels=labels, review=review, method=method,
                              columns=_columns(title, abstract, label))  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "screen", 2)
    typer.echo(res.summary)


@screen_app.command("label")
def screen_label(
    data: Path = _RECORDS_ARG,
    out: Path = typer.Option(..., "--out", "-o", help="The project folder (created, or resumed)."),
    review: str | None = typer.Option(
        None, help="The review to label (when the file has several)."
    ),
    method: str = _METHOD_OPT,
    title: str | None = _TITLE_OPT,
    abstract: str | None = _ABSTRACT_OPT,
) -> None:
    """Screen a review in the terminal: one record at a time (title, abstract), the most
    likely relevant first once one included and one excluded record are known. Answer i
    (include), e (exclude), s (skip for now) or q (quit). The status line carries the
    stopping test (Callaghan & Mueller-Hansen 2020): once it says 95 % recall is reached
    with 95 % confidence, screening can stop. Every decision is saved at once
    (OUT/project.json); running the command again resumes. OUT/included.csv holds the
    included records as a study table (study, record_id, doi, empty yi and vi to fill in
    for spatialmeta pool).

    Example: spatialmeta screen label records.ris --out outputs/my_review
    """
    import textwrap

    from spatialmeta.jobs.screen import LabelSession

    try:
        session = LabelSession(data, out, review=review, method=method,
                               columns=_columns(title, abstract, None))  # fmt: skip
    except _known_errors() as exc:
        _fail_with(exc, "screen", 2)
    typer.echo(f"project {out}: review {session.review}, {session.status()}")
    keys = {"i": 1, "e": 0, "s": None}
    while True:
        i = session.next_record()
        if i is None:
            typer.echo("no record left to show; the project is saved.")
            break
        rid = session.ids[i]
        t = session.tasks.title[session.rows][i] or "(no title)"
        a = session.tasks.abstract[session.rows][i] or "(no abstract)"
        typer.echo("\n" + "-" * 72 + f"\n[{session.status()}] record {rid}\n")
        typer.echo(textwrap.fill(t, 72) + "\n\n" + textwrap.fill(a, 72)[:2000])
        while True:
            try:
                answer = input("\ninclude (i), exclude (e), skip (s), quit (q)? ").strip().lower()
            except EOFError:
                answer = "q"
            if answer in keys or answer == "q":
                break
            typer.echo("please answer i, e, s or q")
        if answer == "q":
            typer.echo(f"saved: {session.status()}; run the same command to resume.")
            break
        session.decide(i, keys[answer])
    typer.echo(f"included records: {out / 'included.csv'}")


@app.command()
def serve(
    only: list[str] | None = typer.Option(
        None, "--only", help="Serve only this deployment (repeatable)."
    ),
    list_: bool = typer.Option(
        False, "--list", help="Print the deployments and their schedules; serve nothing."
    ),
    prefect_file: Path | None = typer.Option(
        None, help="The Prefect project file (default: deploy/prefect.yaml of the repository)."
    ),
) -> None:
    """Serve the scheduled Prefect deployments of deploy/prefect.yaml from this machine.

    Nightly ingest, monthly forecast, weekly pooling report and the monthly demo, each on its
    cron schedule (UTC); their runs execute here until you stop it (Ctrl-C pauses the
    schedules). Uses PREFECT_API_URL when set, else starts a local Prefect server for as
    long as it runs. Edit the parameters (paths under /data) in deploy/prefect.yaml first.
    Runs python -m flows.serve, which takes the same options.

    Example: spatialmeta serve --only ingest-nightly --only pool-weekly
    """
    argv = [sys.executable, "-m", "flows.serve"]
    argv += [arg for name in only or [] for arg in ("--only", name)]
    argv += ["--list"] if list_ else []
    argv += ["--prefect-file", str(prefect_file)] if prefect_file else []
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the Prefect process replaces this one (signals reach it)


def _keep_examples(doc: str | None) -> str | None:
    """``doc`` with each example command in a paragraph click does not re-wrap (``\\b``):
    a command broken across lines would not paste into a shell."""
    if not doc:
        return doc
    import inspect

    out = []
    for line in inspect.cleandoc(doc).splitlines():
        text = line.strip()
        head, _, cmd = text.partition(": ")
        if head in ("Example", "Examples") and cmd.startswith("spatialmeta"):
            out += [f"{head}:", "", "\b", f"  {cmd}"]
        elif text.startswith("spatialmeta ") and out and out[-1].strip() == "":
            out += ["\b", f"  {text}"]
        else:
            out.append(line)
    return "\n".join(out)


def _examples_unwrapped(typer_app: typer.Typer) -> None:
    typer_app.info.help = _keep_examples(typer_app.info.help)
    if typer_app.registered_callback is not None:
        callback = typer_app.registered_callback.callback
        callback.__doc__ = _keep_examples(callback.__doc__)
    for command in typer_app.registered_commands:
        command.callback.__doc__ = _keep_examples(command.callback.__doc__)
    for group in typer_app.registered_groups:
        _examples_unwrapped(group.typer_instance)


def main() -> None:
    """Console-script entry point."""
    _examples_unwrapped(app)
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
