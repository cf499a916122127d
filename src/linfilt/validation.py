"""One check per kind of argument, one message per check (scikit-learn's `utils.validation` is the
model). Every public function of linfilt validates its arguments here, where they enter, so bad
input gets the same `LinfiltError` whichever door it came through.

Class ids are non-negative integers (Python or numpy ints): bools, floats (even 3.0) and strings
(even "3") are refused everywhere, so `forget=True` or `forget="10"` can never mean class 1 or
classes (1, 0).
"""
from __future__ import annotations

import math
import reprlib
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from linfilt.errors import LinfiltError

# Class ids beyond this are refused: ids index arrays, and one id of 1e12 would allocate TiBs.
MAX_CLASS_ID = 2**20


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum]; bools, floats and strings are refused."""
    if not is_int(value):
        raise LinfiltError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise LinfiltError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise LinfiltError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """True or False (numpy's too): a flag given "no" or 0 must not quietly mean its truthiness."""
    if not isinstance(value, (bool, np.bool_)):
        raise LinfiltError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_positive_int(value: Any, name: str, *, maximum: int | None = None) -> int:
    if not is_int(value) or value < 1:
        raise LinfiltError(f"{name} must be a positive integer, got {value!r}")
    return check_int(value, name, maximum=maximum)


def check_optional_positive_int(value: Any, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the given interval (open ends where asked); bools and strings refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise LinfiltError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise LinfiltError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise LinfiltError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise LinfiltError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """None or an integer seed >= 0 (numpy's SeedSequence refuses negative ones)."""
    if seed is None:
        return None
    return check_int(seed, name, minimum=0)


def check_random_state(rng: Any, name: str = "rng") -> np.random.Generator | None:
    """None, a numpy Generator (used as is) or an integer seed >= 0 (a new Generator)."""
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if not is_int(rng) or rng < 0:
        raise LinfiltError(f"{name} must be a numpy Generator or an integer seed >= 0, "
                           f"got {rng!r} ({type(rng).__name__})")
    return np.random.default_rng(int(rng))


def check_n_jobs(n_jobs: Any, name: str = "n_jobs") -> int:
    """joblib's convention: a positive count, or a negative one (-1: all cores); never 0."""
    value = check_int(n_jobs, name)
    if value == 0:
        raise LinfiltError(f"{name} must not be 0: use a positive number of workers, or -1 for all cores")
    return value


def check_class_id(value: Any, name: str = "class id") -> int:
    """One original class id: an integer in 0..MAX_CLASS_ID."""
    if not is_int(value):
        raise LinfiltError(f"{name} must be an integer class id, got {value!r} ({type(value).__name__})")
    return check_int(value, name, minimum=0, maximum=MAX_CLASS_ID)


def check_class_ids(ids: Any, name: str = "forget", *, num_classes: int | None = None,
                    allow_empty: bool = False) -> tuple[int, ...]:
    """One class id or a collection of distinct ones, as an ascending tuple.

    With num_classes the ids must lie in 0..num_classes-1. Repeats are an error, not merged: a
    repeated id usually means a typo in a deletion request.
    """
    if hasattr(ids, "detach") and hasattr(ids, "dim"):  # a torch tensor: as its numpy array
        ids = ids.detach().cpu().numpy()
        if ids.ndim == 0:
            ids = ids.reshape(1)
    if is_int(ids):
        items = [ids]
    elif isinstance(ids, (str, bytes, float, bool, np.bool_, np.floating)) or not isinstance(ids, Iterable):
        raise LinfiltError(f"{name} must be a class id or a collection of class ids (integers), got {ids!r}")
    else:
        items = list(np.asarray(ids).tolist()) if isinstance(ids, np.ndarray) else list(ids)
    if not items and not allow_empty:
        raise LinfiltError(f"{name} is empty: name at least one class")
    for c in items:
        if not is_int(c):
            raise LinfiltError(f"{name}: class ids must be integers, got {c!r} ({type(c).__name__}) "
                               f"in {items!r}")
    values = [int(c) for c in items]
    bad = sorted({c for c in values if c < 0 or c > MAX_CLASS_ID})
    if bad:
        raise LinfiltError(f"{name}: class ids {bad} are out of range: class ids are integers in "
                           f"0..{MAX_CLASS_ID}")
    if num_classes is not None:
        out = sorted({c for c in values if c >= num_classes})
        if out:
            raise LinfiltError(f"{name}: class ids {out} are out of range: there are {num_classes} "
                               f"classes (0..{num_classes - 1})")
    repeated = sorted({c for c in values if values.count(c) > 1})
    if repeated:
        raise LinfiltError(f"{name}: class ids {repeated} are repeated in {values}; name each once")
    return tuple(sorted(values))


def check_labels(labels: Any, name: str = "labels", *, num_classes: int | None = None,
                 length: int | None = None) -> np.ndarray:
    """A 1-D array of integer class ids (int64); float, bool and string arrays are refused."""
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise LinfiltError(f"{name} must be one-dimensional (one class id per sample), got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise LinfiltError(f"{name} has {arr.shape[0]} entries but there are {length} samples")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
        raise LinfiltError(f"{name} must be integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        top = MAX_CLASS_ID if num_classes is None else num_classes - 1
        if low < 0 or high > top:
            out = np.unique(arr[(arr < 0) | (arr > top)])[:10].tolist()
            where = f"for {num_classes} classes" if num_classes is not None else f"(0..{MAX_CLASS_ID})"
            raise LinfiltError(f"{name} {out} are out of range {where}")
    return arr


def check_array(value: Any, name: str, *, ndim: int | None = None, finite: bool = True,
                dtype: type | None = np.float64) -> np.ndarray:
    """A real-valued numeric array (bool, string and object arrays refused), cast to dtype (None: kept)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise LinfiltError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise LinfiltError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise LinfiltError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if finite and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise LinfiltError(f"{name} contains {bad} NaN or infinite values")
    return arr


def check_id_list(values: Any, name: str) -> tuple[int, ...]:
    """A list of class ids (each an integer in 0..MAX_CLASS_ID; repeats are left to the caller)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise LinfiltError(f"{name}s must be a list of integers, got {reprlib.repr(values)}")
    return tuple(check_class_id(c, name) for c in values)


def check_name_list(values: Any, name: str) -> tuple[str, ...]:
    """A list of class names, each a string with more than spaces."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise LinfiltError(f"{name}s must be a list of strings, got {reprlib.repr(values)}")
    names = tuple(values)
    for n in names:
        if not isinstance(n, str):
            raise LinfiltError(f"{name} must be a string, got {reprlib.repr(n)}")
        if not n.strip():
            raise LinfiltError(f"{name}s must be non-empty (not only spaces), got {reprlib.repr(n)}")
    return tuple(str(n) for n in names)  # plain str, also for numpy's
