"""CIFAR-10 in its two canonical forms, both giving (n, 32, 32, 3) uint8 images and int64 labels.

Binary version (`cifar-10-batches-bin/*.bin`): records of 1 label byte + 3,072 pixel bytes (the red
32x32 plane, then green, then blue, each row-major). Python version (`cifar-10-batches-py/`): Python 2
pickles of dicts {data: uint8 array (n, 3072) in the same pixel order, labels: list of ints, ...}.

The pickles are read with `SafeUnpickler`, which never runs code named by the file: the only globals
it resolves are the three numpy needs to rebuild an array (`_reconstruct`, `ndarray`, `dtype`), which
every CIFAR-10 batch refers to; any other global is refused.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from linfilt.errors import CorruptFileError

try:  # numpy >= 2 moved the module; old pickles still name numpy.core.multiarray
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_RECORD = 1 + 3072
_NUM_CLASSES = 10

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: every other global is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"global {module}.{name} is not allowed") from None


def safe_loads(buf: bytes, path: Path):
    """Unpickle a CIFAR-10 python-version file without running anything it names."""
    try:
        return SafeUnpickler(io.BytesIO(buf), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise CorruptFileError(f"{path}: refused to unpickle it: {exc} (a CIFAR-10 batch never needs it)") from None
    except Exception as exc:  # pickle reports damage as many different exceptions
        raise CorruptFileError(f"{path}: not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None


def _key(d: dict, name: str, path: Path):
    """Python 2 pickles read with encoding="bytes" have bytes keys; accept str keys too."""
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise CorruptFileError(f"{path}: no '{name}' entry (not a CIFAR-10 python-version file)")


def _planes_to_nhwc(pixels: np.ndarray) -> np.ndarray:
    """(n, 3072) in R, G, B plane order -> contiguous (n, 32, 32, 3)."""
    return np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise CorruptFileError(f"{path}: label out of range 0..{_NUM_CLASSES - 1} (corrupt)")
    return labels.astype(np.int64)


def read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file -> (images (n, 32, 32, 3) uint8, labels (n,) int64)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise CorruptFileError(
            f"{path}: {raw.size:,} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records (truncated?)"
        )
    records = raw.reshape(-1, _RECORD)
    return _planes_to_nhwc(records[:, 1:]), _check_labels(records[:, 0], path)


def read_bin_meta(path: Path) -> tuple[str, ...]:
    """`batches.meta.txt`: the class names in label order, one a line."""
    names = tuple(line.strip() for line in path.read_text("ascii", errors="replace").splitlines() if line.strip())
    if len(names) != _NUM_CLASSES:
        raise CorruptFileError(f"{path}: {len(names)} class names, expected {_NUM_CLASSES}")
    return names


def read_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch (`data_batch_1`, ..., `test_batch`) -> (images, labels)."""
    batch = safe_loads(path.read_bytes(), path)
    if not isinstance(batch, dict):
        raise CorruptFileError(f"{path}: holds a {type(batch).__name__}, expected a dict")
    data, labels = _key(batch, "data", path), _key(batch, "labels", path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise CorruptFileError(f"{path}: 'data' is not a uint8 array of shape (n, 3072)")
    if not (isinstance(labels, list) and all(type(v) is int for v in labels)) or len(labels) != len(data):
        raise CorruptFileError(f"{path}: 'labels' is not a list of {len(data)} integers")
    return _planes_to_nhwc(data), _check_labels(np.asarray(labels), path)


def read_py_meta(path: Path) -> tuple[str, ...]:
    """`batches.meta`: the class names in label order."""
    meta = safe_loads(path.read_bytes(), path)
    names = _key(meta, "label_names", path) if isinstance(meta, dict) else None
    if not (
        isinstance(names, list) and len(names) == _NUM_CLASSES and all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise CorruptFileError(f"{path}: 'label_names' is not a list of {_NUM_CLASSES} names")
    return tuple(n.decode("ascii", errors="replace") if isinstance(n, bytes) else n for n in names)


def read_split(folder: Path, fmt: str, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate several batches of one format."""
    reader = read_bin_batch if fmt == "cifar-bin" else read_py_batch
    parts = [reader(folder / f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
