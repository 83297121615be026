"""The main job as a Prefect flow: synthetic rasters → regions → forecasts → pooled skill.

Wiring only: the stages and their order are :func:`spatialmeta.jobs.demo.demo_job`'s; this
module runs that job inside a flow with every stage wrapped in a Prefect task (retries on
the aggregation), and logs to the flow's logger. Runs without a Prefect server (Prefect
starts a temporary local one).

Example
-------
    python -m flows.pipeline --out outputs/demo --episodes 300
"""

from __future__ import annotations

import argparse
import dataclasses

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spatialmeta.jobs.demo import demo_job

__all__ = ["demo_pipeline"]

RETRIES = {"aggregate_regions": 1}  # reading rasters is the stage worth one retry


def as_task(fn):
    """A stage function as a Prefect task named after it (no caching: see issue 17)."""
    return task(fn, name=fn.__name__, cache_policy=NO_CACHE, retries=RETRIES.get(fn.__name__, 0))


@flow(name="spatialmeta-demo")
def demo_pipeline(
    out: str = "outputs/demo",
    years: int = 40,
    resolution: float = 1.0,
    n_regions: int = 80,
    holdout: float = 0.2,
    support: int = 36,
    test_start: str | None = None,
    episodes: int = 600,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the whole path on the embedded synthetic data and write every output into ``out``."""
    logger = get_run_logger()
    result = demo_job(
        out, years=years, resolution=resolution, n_regions=n_regions, holdout=holdout,
        support=support, test_start=test_start, episodes=episodes, seed=seed,
        progress=progress, stage=as_task, log=logger.info,
    )  # fmt: skip
    return dataclasses.asdict(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--years", type=int, default=40)
    parser.add_argument("--regions", type=int, default=80)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = demo_pipeline(
        out=args.out, years=args.years, n_regions=args.regions, episodes=args.episodes,
        seed=args.seed,
    )  # fmt: skip
    print(result["summary"])


if __name__ == "__main__":
    main()
