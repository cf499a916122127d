"""Time one audit configuration at the paper's scale against a straightforward implementation.

Paper scale: 100 unlearned + 100 retrained models, 10 classes of 1,000 test images, 9 outputs,
150 + 150 images per model, the three attack classifiers, one repeat. The baseline draws images
model by model with `Generator.choice` in Python loops and fits the same classifiers in turn.
Prints the median time of each (over --repeats runs) and the ratio baseline / ours.

    .venv/bin/python benchmarks/audit_speed.py [--repeats 3] [--models 100]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from linfilt.audit import DEFAULT_CLASSIFIERS, attack_advantage

CLASSES, PER_CLASS, OUTPUTS, SAMPLES = 10, 1000, 9, 150


def synthetic(models: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-structured logits with per-model offsets; class 0's unlearned logits slightly shifted."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    means = rng.normal(scale=3.0, size=(CLASSES, OUTPUTS))

    def pop(shift: float) -> np.ndarray:
        x = means[labels][None] + rng.normal(scale=0.5, size=(models, 1, OUTPUTS))
        x = x + rng.normal(size=(models, labels.size, OUTPUTS))
        x[:, labels == 0, 0] += shift
        return x.astype(np.float32)

    return pop(0.5), pop(0.0), labels


def baseline(unlearned: np.ndarray, retrained: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """The protocol written plainly: loops over classes, models and images."""
    rng = np.random.default_rng(seed)
    out = np.empty((CLASSES, len(DEFAULT_CLASSIFIERS)))
    n_test = [round(0.3 * len(p)) for p in (unlearned, retrained)]
    for c in range(CLASSES):
        idx = np.flatnonzero(labels == c)
        x_train, y_train, x_test, y_test = [], [], [], []
        for label, pop, nt in ((1, unlearned, n_test[0]), (0, retrained, n_test[1])):
            for m in range(len(pop)):
                for i in rng.choice(idx, SAMPLES, replace=False):
                    if m < nt:
                        x_test.append(pop[m, i])
                        y_test.append(label)
                    else:
                        x_train.append(pop[m, i])
                        y_train.append(label)
        for j, factory in enumerate(DEFAULT_CLASSIFIERS.values()):
            clf = factory(seed).fit(np.array(x_train), np.array(y_train))
            accuracy = (clf.predict(np.array(x_test)) == np.array(y_test)).mean()
            out[c, j] = 2 * (accuracy - 0.5)
    return out


def median_time(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall time and median CPU time of this process (workers' CPU is not counted)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--models", type=int, default=100, help="models per population (paper: 100)")
    args = parser.parse_args()
    unlearned, retrained, labels = synthetic(args.models, seed=0)
    print(f"{args.models}+{args.models} models, {CLASSES} classes x {PER_CLASS} images, {OUTPUTS} outputs, "
          f"{SAMPLES}+{SAMPLES} images per model, classifiers {list(DEFAULT_CLASSIFIERS)}; "
          f"median of {args.repeats} runs; {os.cpu_count()} CPUs")
    print("wall time depends on what else runs on the machine; the CPU time of the sequential runs does not")
    w_base, c_base, r_base = median_time(lambda: baseline(unlearned, retrained, labels, seed=0), args.repeats)
    print(f"baseline (loops, sequential)  wall {w_base:6.2f} s  cpu {c_base:6.2f} s  "
          f"class-0 advantage {np.round(r_base[0], 3)}")
    for jobs in (1, 2):
        wall, cpu, r = median_time(
            lambda: attack_advantage(unlearned, retrained, labels, [0], seed=0, n_jobs=jobs), args.repeats
        )
        cpu_text = f"cpu {cpu:6.2f} s" if jobs == 1 else "cpu    n/a  "
        ratio = f"wall ratio baseline/ours {w_base / wall:.2f}"
        if jobs == 1:
            ratio += f", cpu ratio {c_base / cpu:.2f}"
        print(f"linfilt.audit n_jobs={jobs}        wall {wall:6.2f} s  {cpu_text}  "
              f"class-0 advantage {np.round(r.advantages[0, 0], 3)}  {ratio}")

if __name__ == "__main__":
    main()
