"""First (cold cache) and second (warm cache) load times of each data set.

Cold: a fresh empty cache folder, so the load finds the files, checks their checksums, decodes them
and writes the `.npy` cache (the source files themselves may sit in the OS page cache). Warm: the same
call again, which stats the files and opens the cached arrays memory-mapped; "warm+read" also reads
every training pixel once (`x_train.max()`), the cost a first pass over the data adds. Prints the
median of --repeats runs of each and the ratio cold / warm. digits is not cached: every load
reads scikit-learn's bundled copy (the import of scikit-learn falls in the first run only).

    .venv/bin/python benchmarks/data_load.py [--repeats 3] [--names mnist cifar10 att_faces digits]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from linfilt.paper.data import NAMES, load


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--names", nargs="+", default=list(NAMES), choices=NAMES)
    args = parser.parse_args()
    header = f"{'data set':<10} {'cold s':>8} {'warm s':>8} {'warm+read s':>12} {'cold/warm':>10}"
    print(f"{header}   (medians of {args.repeats})")
    for name in args.names:
        cold, warm, read = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(timed(lambda: load(name, cache_dir=cache, progress=False)))
                warm.append(timed(lambda: load(name, cache_dir=cache, progress=False)))
                read.append(timed(lambda: int(load(name, cache_dir=cache, progress=False).x_train.max())))
        c, w, r = (statistics.median(v) for v in (cold, warm, read))
        print(f"{name:<10} {c:8.3f} {w:8.4f} {r:12.4f} {c / w:10.0f}")


if __name__ == "__main__":
    main()
