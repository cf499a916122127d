"""How long linear filtration takes, against its baselines, measured in the same run.

1. `filtration_matrix` (normalization, one class forgotten) for k = 10, 40, 100, 1000 on a
   logit-like A, beside the textbook F = B @ inv(A) (no condition check). Target: k = 40 < 10 ms.
2. `linfilt.unlearn` of one digit with s = 10 images per class, against retraining the model
   without the digit with the same settings, for the `linfilt demo` MLP on scikit-learn's digits
   and for the paper's MNIST MLP (784-50-10, 6 epochs, batch 32; skipped if MNIST is not found).
   Target: unlearning >= 1000x cheaper than retraining.
Prints medians over repeats.

    .venv/bin/python benchmarks/unlearn_speed.py [--repeats 21] [--retrains 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import linfilt
from linfilt.errors import DataNotFoundError
from linfilt.paper.data import load, to_float
from linfilt.paper.models import build
from linfilt.paper.population import fit
from linfilt.paper.settings import PROTOCOL

FORGET = 3
# the `linfilt demo` model and the paper's MNIST MLP, each with its data set's training settings
DATA = ("digits", "mnist")


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def logit_like(k: int, rng: np.random.Generator) -> np.ndarray:
    """Mean logits of a fair classifier: its own class' logit stands out in each column."""
    return rng.normal(size=(k, k)) + np.diag(rng.uniform(5, 10, size=k))


def textbook(A: np.ndarray) -> np.ndarray:
    kept = np.arange(1, len(A))
    B = A[kept].copy()
    B[:, 0] += A[np.ix_(kept, kept)].mean() - B[:, 0].mean()
    return B @ np.linalg.inv(A)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21, help="runs of each cheap step (median)")
    parser.add_argument("--retrains", type=int, default=3, help="runs of retraining (median)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for part 1 (default 1: on a busy machine, BLAS threads that wait "
                             "for each other cost more than these small solves; 0 leaves the default)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for part 2 (default 1, as `linfilt demo`: the digits MLP is too small "
                             "to gain from more; fewer threads make the retraining baseline faster, not slower)")
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads or None, user_api="blas"):
        f40 = time_filtration(args.repeats, args.blas_threads)
    print(f"target F for k = 40 < 10 ms: {'met' if f40 < 0.010 else 'NOT met'} ({f40 * 1e3:.3f} ms)\n")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    batches = "/".join(dict.fromkeys(str(PROTOCOL[d]["batch_size"]) for d in DATA))
    print(f"unlearn one digit (s = 10 per class; median of {args.repeats}) vs retraining without it with the "
          f"same settings (batch {batches}; median of {args.retrains}); torch threads: {torch.get_num_threads()}")
    print(f"{'data':>7}  {'MLP':>9}  {'epochs':>6}  {'images':>7}  {'unlearn (ms)':>12}  {'retrain (s)':>11}  "
          f"{'ratio':>10}  target >= 1000x")
    for data in DATA:
        time_unlearn(data, args.repeats, args.retrains)


def time_filtration(repeats: int, blas_threads: int) -> float:
    """Print the table of part 1; return the median for k = 40 (seconds)."""
    rng = np.random.default_rng(0)
    threads = blas_threads or "default"
    print(f"filtration_matrix (normalization, |C| = 1), median of {repeats} runs; BLAS threads: {threads}")
    print(f"{'k':>6}  {'F (ms)':>10}  {'B @ inv(A) (ms)':>16}  {'F / B @ inv(A)':>14}")
    for k in (10, 40, 100, 1000):
        A = logit_like(k, rng)
        reps = repeats if k < 1000 else max(3, repeats // 4)
        ours = median_time(lambda: linfilt.filtration_matrix(A, [0]), reps)
        base = median_time(lambda: textbook(A), reps)
        np.testing.assert_allclose(linfilt.filtration_matrix(A, [0]), textbook(A), atol=1e-9)
        print(f"{k:>6}  {ours * 1e3:>10.3f}  {base * 1e3:>16.3f}  {ours / base:>14.2f}")
        if k == 40:
            f40 = ours
    return f40


def time_unlearn(data: str, repeats: int, retrains: int) -> None:
    """Print one row of part 2: unlearning one digit (s = 10) against retraining without it, for
    the data set's MLP with its training settings (`linfilt.paper.settings.PROTOCOL`)."""
    proto = PROTOCOL[data]
    try:
        ds = load(data)
    except DataNotFoundError as exc:
        print(f"{data}: skipped ({exc})")
        return
    x, y = to_float(ds.x_train), ds.y_train
    settings = dict(epochs=proto["epochs"], batch_size=proto["batch_size"], seed=0)
    arch = proto["arch_kwargs"]
    torch.manual_seed(0)
    model = fit(build(proto["arch"], 10, **arch), x, y, **settings)  # also pays the one-time start-up costs
    keep = y != FORGET
    y_kept = np.searchsorted(linfilt.retained_classes(10, [FORGET]), y[keep])

    def retrain() -> None:
        torch.manual_seed(0)
        fit(build(proto["arch"], 9, **arch), x[keep], y_kept, **settings)

    def forget() -> None:
        linfilt.unlearn(model, [FORGET], (x, y), per_class=10)

    forget()
    t_unlearn = median_time(forget, repeats)
    t_retrain = median_time(retrain, retrains)
    ratio = t_retrain / t_unlearn
    sizes = "-".join(map(str, (arch["in_features"], *arch["hidden"], 10)))
    print(f"{data:>7}  {sizes:>9}  {proto['epochs']:>6}  {int(keep.sum()):>7}  {t_unlearn * 1e3:>12.2f}  "
          f"{t_retrain:>11.2f}  {ratio:>9,.0f}x  {'met' if ratio >= 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
