"""Decoded arrays cached as `.npy` files and opened memory-mapped, so a second load is nearly free.

Entry folder: `<cache>/arrays/<name>-<key>/`, with `key` a hash of the source files' paths, sizes
and mtimes (and of `FORMAT`), so a changed source file is decoded again. `meta.json` is written
last: a folder without it is incomplete and ignored.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from linfilt.atomic import save_npy, write_json
from linfilt.data.dataset import Dataset
from linfilt.data.locate import Location

FORMAT = 1  # bump when decoding changes, to invalidate old entries
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def entry_dir(name: str, location: Location, cache: Path) -> Path:
    stats = []
    for f in location.layout.files:
        st = (location.dir / f.rel).stat()
        stats.append([f.rel, st.st_size, st.st_mtime_ns])
    blob = json.dumps([FORMAT, name, str(location.dir.resolve()), location.layout.fmt, stats]).encode()
    return cache / "arrays" / f"{name}-{hashlib.sha256(blob).hexdigest()[:20]}"


def read(entry: Path, name: str) -> Dataset | None:
    """The cached data set, memory-mapped copy-on-write (writable, never changing the file), or None."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        classes, source = tuple(meta["classes"]), meta["source"]
        arrays = {a: np.load(entry / f"{a}.npy", mmap_mode="c", allow_pickle=False) for a in _ARRAYS}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or incomplete: decode again
    return Dataset(name, classes=classes, source=source, **arrays)


def write(entry: Path, dataset: Dataset) -> None:
    """Store a fully decoded data set; meta.json last, so a reader never sees part of it."""
    for a in _ARRAYS:
        save_npy(entry / f"{a}.npy", getattr(dataset, a))
    write_json(entry / "meta.json", {"classes": list(dataset.classes), "source": dataset.source})
