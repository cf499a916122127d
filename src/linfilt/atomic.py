"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A reader never sees a half-written file, and a killed process leaves at most a stray
`.tmp-*` file, never a corrupt target. The file gets the mode `open()` would give it: an existing
target's mode is kept, a new one gets 0666 less the umask (tempfile.mkstemp's 0600 would make
every written file private to its owner).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Iterator

import numpy as np


def _new_temp(path: Path) -> Path:
    """Create an empty file with a fresh name beside `path`, as open() would create it."""
    while True:
        tmp = path.with_name(f".tmp-{path.name}.{secrets.token_hex(6)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):  # replacing a file keeps its mode, as open() does
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save, atomically (the file name is kept exactly: no `.npy` is appended)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
