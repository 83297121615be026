"""Meta-learner inner loops on CPU: batched ANIL vs a per-task Python loop, and MAML for reference.

For each meta-batch size, the same ANILLearner and backbone adapt the same tasks twice:
``adapt`` (every task at once: batched head parameters, one autograd call per step) and
``adapt_loop`` (one task at a time). Both are timed on the same support/query features,
forward only (adapt + predict) and with the meta-gradient (+ backward of the query loss
through the second-order inner loop). A whole episode (graph forward + inner loop +
backward) is timed for ANIL and for MAML, whose per-task full-network adaptation needs a
graph forward per task (Python loop, the default; and the vmap variant).

Example:
    .venv/bin/python benchmarks/bench_inner_loop.py --batches 16 64 --steps 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spatialmeta.data import synthetic_region_tasks
from spatialmeta.learn import GraphForecaster, LearnConfig
from spatialmeta.learn.algorithms import ANILLearner, MAMLLearner
from spatialmeta.learn.episode import episode_inputs
from spatialmeta.learn.features import standardized_covariates
from spatialmeta.learn.losses import task_nll
from spatialmeta.tasks import RegionTaskSet


def fastest(fn, repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def task_set(n_regions: int, n_time: int, seed: int = 0) -> RegionTaskSet:
    """Seasonal synthetic series on a contiguity graph of synthetic regions."""
    return synthetic_region_tasks(
        n_regions, n_time, bbox=(-20.0, 30.0, 40.0, 70.0), amplitude_per_degree=0.02, seed=seed
    )


def measure(learners, tasks, known, cov, ti, s, support, config, repeat) -> dict[str, float]:
    """Median seconds per meta-batch of each variant, for the task regions ``ti``."""
    anil = learners["anil"]
    ep = episode_inputs(tasks, known, cov, ti, s, support, config)
    with torch.no_grad():
        f = anil.backbone.features(*ep.inputs())[:, ep.task_pos].transpose(0, 1)
    f = f.clone().requires_grad_()  # a leaf: the meta-gradient reaches it through the loop
    ns = ep.n_support
    (ys, ms), (yq, mq) = ep.targets("support"), ep.targets("query")

    def inner(adapt, backward):
        mean, var = anil.predict(f[:, ns:], adapt(f[:, :ns], ys, ms))
        if backward:
            task_nll(yq, mean, var, mq).sum().backward()
        return mean

    def episode(learner):
        learner.loss(episode_inputs(tasks, known, cov, ti, s, support, config)).backward()

    torch.testing.assert_close(
        inner(anil.adapt, False), inner(anil.adapt_loop, False), rtol=1e-4, atol=1e-5
    )
    timings = {}
    for name, fn in {
        "batched": lambda: inner(anil.adapt, False),
        "loop": lambda: inner(anil.adapt_loop, False),
        "batched+bwd": lambda: inner(anil.adapt, True),
        "loop+bwd": lambda: inner(anil.adapt_loop, True),
        "anil_episode": lambda: episode(anil),
        "maml_loop": lambda: episode(learners["maml"]),
        "maml_vmap": lambda: episode(learners["maml_vmap"]),
    }.items():
        fn()  # warm-up
        n = repeat if name.startswith(("batched", "loop")) else min(repeat, 3)
        timings[name] = fastest(fn, n)
    return timings


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="meta-batch sizes")
    p.add_argument("--regions", type=int, default=100, help="approximate number of regions")
    p.add_argument("--hidden", type=int, default=32, help="backbone width")
    p.add_argument("--steps", type=int, default=5, help="ANIL inner steps")
    p.add_argument("--maml-steps", type=int, default=1, help="MAML inner steps")
    p.add_argument("--support", type=int, default=36, help="support window length")
    p.add_argument("--repeat", type=int, default=7, help="timings per measurement (best of)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tasks = task_set(args.regions, 240)
    # episodes on the task regions' 1-hop neighbourhood (exact for the single graph layer)
    config = LearnConfig(hidden=args.hidden, subgraph_hops=1)
    known = np.ones((tasks.n_regions, tasks.n_time), dtype=bool)
    cov = standardized_covariates(tasks)
    backbone = GraphForecaster(len(tasks.covariate_names), config.horizon, hidden=args.hidden)
    anil = ANILLearner(backbone, inner_steps=args.steps, inner_lr=0.1)
    maml = MAMLLearner(backbone, inner_steps=args.maml_steps, inner_lr=0.05)
    maml_v = MAMLLearner(backbone, inner_steps=args.maml_steps, inner_lr=0.05, vectorize=True)
    learners = {"anil": anil, "maml": maml, "maml_vmap": maml_v}
    rng = np.random.default_rng(0)
    s = 120
    print(
        f"{tasks.n_regions} regions, {tasks.graph.data.edge_index.shape[1]} edges, hidden "
        f"{args.hidden}, support {args.support} steps, query {config.query}, horizon "
        f"{config.horizon}; ANIL {args.steps} inner steps (second order), MAML "
        f"{args.maml_steps}; {torch.get_num_threads()} threads; best of {args.repeat} (episodes: 3)"
    )

    rows = []
    for b in args.batches:
        if b > tasks.n_regions:
            raise SystemExit(f"--batches {b} exceeds the {tasks.n_regions} regions")
        ti = np.sort(rng.choice(tasks.n_regions, size=b, replace=False))
        timings = measure(learners, tasks, known, cov, ti, s, args.support, config, args.repeat)
        rows.append((b, {k: b / v for k, v in timings.items()}))

    head = (
        f"{'B':>4} | {'ANIL batched':>12} {'ANIL loop':>10} {'ratio':>6} | "
        f"{'+bwd batched':>12} {'+bwd loop':>10} {'ratio':>6} | "
        f"{'ANIL episode':>12} {'MAML loop':>10} {'MAML vmap':>10}"
    )
    print("\ntasks per second (higher is better); ratio = batched / loop")
    print(head)
    print("-" * len(head))
    for b, r in rows:
        print(
            f"{b:>4} | {r['batched']:>12.0f} {r['loop']:>10.0f} {r['batched'] / r['loop']:>5.1f}x | "
            f"{r['batched+bwd']:>12.0f} {r['loop+bwd']:>10.0f} "
            f"{r['batched+bwd'] / r['loop+bwd']:>5.1f}x | "
            f"{r['anil_episode']:>12.0f} {r['maml_loop']:>10.1f} {r['maml_vmap']:>10.1f}"
        )
    print(
        "\nANIL columns: inner loop on given features (adapt + predict), then with the "
        "meta-gradient;\nepisode columns: graph forward + inner loop + backward per meta-batch."
    )


if __name__ == "__main__":
    main()
