"""The Ray backend against the local one: the same population trained here and on a 2-node Ray
cluster started on this machine (two `ray start` processes, one CPU each), same run.

    python benchmarks/ray_population.py          # digits MLP, 8 models of 30 epochs, chunks of 2 (~1 min)

Wall time is whole `train_populations` calls into a fresh folder (the driver connected once
beforehand; the first Ray call also starts the workers and is not counted). The overhead per task
is a Ray round trip that trains nothing: scheduling, fetching the data set from the object store
and returning one chunk's logits (chunk x n_test x classes float32), timed one task at a time.
Medians over --repeats; the local backend runs torch on --threads threads (the tasks run on one
CPU each).
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time

import numpy as np
import torch

from linfilt.paper import cluster
from linfilt.paper.data import load
from linfilt.paper.population import PopulationConfig, train_populations


def wall(cfg, data, chunk: int, repeats: int, **backend) -> float:
    """Median seconds of training the population from scratch, after one unmeasured call."""
    times = []
    for _ in range(repeats + 1):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            train_populations(cfg, ("seen",), data=data, out=out, chunk_size=chunk, progress=False, **backend)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _round_trip(data, shape):
    return np.zeros(shape, np.float32)


def overhead(ray, data, shape, repeats: int) -> float:
    """Median seconds of one task that only takes the data set and returns a chunk's logits."""
    task = ray.remote(_round_trip).options(num_cpus=1)
    ref = ray.put(data)
    ray.get(task.remote(ref, shape))  # warm
    times = []
    for _ in range(max(repeats, 5) * 4):
        start = time.perf_counter()
        ray.get(task.remote(ref, shape))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--strategy", default="grouped")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the local backend")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # a token of this run's own for the nodes and the driver (set before Ray is imported)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    import ray

    data = load(args.dataset)
    cfg = PopulationConfig.protocol(args.dataset, [0], models=args.models, epochs=args.epochs,
                                    strategy=args.strategy)
    chunks = -(-args.models // args.chunk_size)
    print(f"# {args.models} {cfg.arch} models of {args.dataset}, {args.epochs} epochs, strategy "
          f"{cfg.strategy}, {chunks} chunks of {args.chunk_size}; local: {args.threads} torch "
          f"thread(s); ray: 2 nodes x 1 CPU on this machine ({os.cpu_count()} cores); median of {args.repeats}")
    local = wall(cfg, data, args.chunk_size, args.repeats)
    with cluster.local_cluster(2, 1, env={"OMP_NUM_THREADS": "1"}) as address:
        ray.init(address=address, logging_level="WARNING")
        try:
            on_ray = wall(cfg, data, args.chunk_size, args.repeats, backend="ray")
            shape = (args.chunk_size, len(data.y_test), len(data.classes))
            per_task = overhead(ray, data, shape, args.repeats)
        finally:
            ray.shutdown()
    print("| backend | wall s | x local |")
    print("|---|---|---|")
    print(f"| local | {local:.2f} | 1.00 |")
    print(f"| ray, 2 nodes | {on_ray:.2f} | {local / on_ray:.2f} |")
    print(f"\nper task overhead (round trip, {np.prod(shape) * 4 / 1e3:,.0f} kB of logits back): "
          f"{1e3 * per_task:.1f} ms = {per_task / (local / chunks):.3f} of a chunk's local training time "
          f"({local / chunks:.2f} s)")


if __name__ == "__main__":
    main()
