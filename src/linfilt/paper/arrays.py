"""Arrays on disk with a checksum beside each: what the population store and the bench keep.

`save_array` writes `<file>.npy` atomically and then `<file>.npy.sha256` (its checksum, shape and
dtype); `load_array` checks the checksum, shape, dtype and any further condition, and names the
file in a CorruptFileError when one fails. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from linfilt.atomic import write_bytes, write_json
from linfilt.errors import CorruptFileError

REDO = "delete it and rerun the same command, which recomputes it (finished chunks are kept)"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_checked(path: Path) -> bytes:
    """The bytes of `path`, checked against the checksum beside it (if any)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); {REDO}") from None
    side = sidecar(path)
    if side.is_file():
        try:
            expected = json.loads(side.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(f"{side} (the checksum of {path.name}) is unreadable ({exc}); "
                                   "delete both files and rerun the same command to recompute them") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise CorruptFileError(f"{path} does not match its checksum in {side.name}: it was changed "
                                   f"or damaged; {REDO}")
    return data


def _write_sidecar(path: Path, data: bytes, **info: Any) -> None:
    write_json(sidecar(path), {"sha256": hashlib.sha256(data).hexdigest(), **info})


def write_checked(path: Path, data: bytes, **info: Any) -> None:
    """Write `data` atomically, then its checksum beside it (a kill in between leaves a file with
    no checksum, which the next read checks and adopts, never a stale checksum)."""
    sidecar(path).unlink(missing_ok=True)
    write_bytes(path, data)
    _write_sidecar(path, data, **info)


def save_array(path: Path, arr: np.ndarray) -> None:
    """np.save with a checksum beside the file, atomically."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_checked(path, buf.getvalue(), shape=list(arr.shape), dtype=arr.dtype.str)


def load_array(path: Path, shape: tuple[int, ...] | None, dtype: type,
               check: Callable[[np.ndarray], str | None] | None = None) -> np.ndarray:
    """An array saved by `save_array`: checksum, shape (None: any), dtype and `check(arr)` (an
    error message or None) verified, else CorruptFileError naming the file. A file without a
    checksum (written before checksums existed) that passes the checks gets one."""
    adopt = not sidecar(path).is_file()
    data = read_checked(path)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); {REDO}") from None
    if (shape is not None and arr.shape != shape) or arr.dtype != dtype:
        raise CorruptFileError(f"{path} holds {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} "
                               f"{shape if shape is not None else ''}; {REDO}")
    problem = check(arr) if check is not None else None
    if problem:
        raise CorruptFileError(f"{path} {problem}; {REDO}")
    if adopt:
        try:
            _write_sidecar(path, data, shape=list(arr.shape), dtype=arr.dtype.str)
        except OSError:
            pass  # a read-only folder: the checks above passed, the checksum waits for a writable one
    return arr


def finite_problem(arr: np.ndarray) -> str | None:
    return None if np.isfinite(arr).all() else "holds NaN or infinite values"
