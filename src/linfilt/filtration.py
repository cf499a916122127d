"""Linear filtration (the paper's section 4.1), generalised to any set C of forgotten classes.

A (k, k) holds the mean logit vector of class j in column j. For the retained classes R (all
classes not in C, ascending) B_z has column j = A[R, j] for j in R and column c = z_c for c in C;
the filtration matrix F (k-|C|, k) solves F A = B_z. Each forgotten column is treated as the
paper treats class 0. Numpy only: arrays in, arrays out, randomness only through the given rng.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from linfilt.errors import IllConditionedError, LinfiltError

METHODS = ("naive", "normalization", "randomization", "zeroing")

# Beyond this condition number a float64 solve keeps fewer than ~4 significant digits of F.
MAX_CONDITION = 1e12


@dataclass(frozen=True, eq=False)
class Filtration:
    """A filtration matrix with what produced it (for records, CLIs and model files)."""

    matrix: np.ndarray  # F, (k-|C|, k)
    forget: tuple[int, ...]  # forgotten class ids, ascending
    kept: tuple[int, ...]  # kept[i] = class id of new output i
    method: str
    condition: float  # 2-norm condition number of A
    pinv: bool  # True when F came from a pseudo-inverse (allow_pinv opt-in)


def check_forget(num_classes: int, forget: int | Iterable[int]) -> tuple[int, ...]:
    """Validate a forget set (one id or several) and return it as an ascending tuple."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise LinfiltError(f"num_classes must be an integer, got {num_classes!r}")
    try:
        ids = [forget] if isinstance(forget, (int, np.integer)) else list(forget)
    except TypeError:
        raise LinfiltError(f"forget must be a class id or a collection of class ids, got {forget!r}") from None
    if not ids:
        raise LinfiltError("the forget set is empty: name at least one class to forget")
    for c in ids:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise LinfiltError(f"class ids must be integers, got {c!r} in forget={ids!r}")
    bad = sorted({int(c) for c in ids if not 0 <= c < num_classes})
    if bad:
        raise LinfiltError(
            f"class ids {bad} are out of range: there are {num_classes} classes (0..{num_classes - 1})"
        )
    if len(set(ids)) != len(ids):
        repeated = sorted({int(c) for c in ids if ids.count(c) > 1})
        raise LinfiltError(
            f"class ids {repeated} are repeated in forget={[int(c) for c in ids]}; name each once"
        )
    left = num_classes - len(ids)
    if left < 2:
        raise LinfiltError(
            f"forgetting {len(ids)} of {num_classes} classes leaves {left}; "
            "linear filtration needs at least 2 classes left"
        )
    return tuple(sorted(int(c) for c in ids))


def retained_classes(num_classes: int, forget: int | Iterable[int]) -> np.ndarray:
    """The one mapping from new output index i to original class id: the kept ids, ascending."""
    mask = np.ones(num_classes, dtype=bool)
    mask[list(check_forget(num_classes, forget))] = False
    return np.flatnonzero(mask).astype(np.int64)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator | None:
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise LinfiltError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def _finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise LinfiltError(f"{name} contains {bad} NaN or infinite values; check the model's outputs")


def _class_order(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Sample indices grouped by class, keeping the given order within each class (a stable sort;
    on int16 labels numpy's stable sort is a radix sort)."""
    return np.argsort(labels.astype(np.int16) if num_classes <= 2**15 else labels, kind="stable")


def select_per_class(
    labels: np.ndarray, num_classes: int, per_class: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Indices of s = per_class samples of each class: the first s in the given order, or a random
    s (without replacement) when rng is given. Returned grouped by class, ascending class id."""
    labels = _check_labels(labels, num_classes)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise LinfiltError(
            f"per_class must be a positive integer (or None for all samples), got {per_class!r}"
        )
    rng = _as_rng(rng)
    counts = np.bincount(labels, minlength=num_classes)
    short = [(j, int(counts[j])) for j in range(num_classes) if counts[j] < per_class]
    if short:
        shown = ", ".join(f"class {j}: {n}" for j, n in short[:10])
        raise LinfiltError(
            f"per_class={per_class} but some classes have fewer samples ({shown}); "
            "pass a smaller per_class or more data"
        )
    order = _class_order(labels, num_classes)
    starts = np.concatenate(([0], np.cumsum(counts)))
    picks = []
    for j in range(num_classes):
        members = order[starts[j] : starts[j + 1]]
        if rng is not None:
            members = np.sort(rng.choice(members, per_class, replace=False))
        picks.append(members[:per_class])
    return np.concatenate(picks)


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LinfiltError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
            raise LinfiltError(f"labels must be integer class ids, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    out = (labels < 0) | (labels >= num_classes)
    if np.any(out):
        raise LinfiltError(
            f"labels {sorted(set(labels[out].tolist()))[:10]} are out of range for {num_classes} classes"
        )
    return labels


def mean_logits(
    logits: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    per_class: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A (k, k) float64 whose column j is the mean logit vector of the samples of class j.

    per_class=s uses the first s samples of each class in the given order (the paper's sample-size
    tables), or a random s when rng is given. Every class needs at least one sample (s with per_class).
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise LinfiltError(f"logits must have shape (n, {num_classes}), got {logits.shape}")
    labels = _check_labels(labels, num_classes)
    if labels.shape[0] != logits.shape[0]:
        raise LinfiltError(f"{logits.shape[0]} logit rows but {labels.shape[0]} labels")
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise LinfiltError(
            f"classes {empty} have no samples in the data: A needs at least one sample of every class"
        )
    if per_class is not None:
        idx = select_per_class(labels, num_classes, per_class, rng)
        logits, labels = logits[idx], labels[idx]
        counts = np.bincount(labels, minlength=num_classes)
    logits = logits.astype(np.float64)
    _finite("logits", logits)
    order = _class_order(labels, num_classes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.add.reduceat(logits[order], starts, axis=0)  # row j: sum over class j (none empty)
    return sums.T / counts


def condition_number(A: np.ndarray) -> float:
    """2-norm condition number of A (inf when singular)."""
    with np.errstate(divide="ignore"):
        return float(np.linalg.cond(A))


def _target(A: np.ndarray, forget: tuple[int, ...], kept: np.ndarray, method: str, rng) -> np.ndarray:
    """B_z (k-|C|, k): retained columns are A's retained rows; forgotten columns get z."""
    B = A[kept, :].copy()  # naive: z_c = A[R, c] for each forgotten c
    cols = list(forget)
    if method == "normalization":
        # Shift each forgotten column so its mean equals the mean of the retained block A[R, R].
        x = B[:, cols]
        B[:, cols] = x - x.mean(axis=0) + A[np.ix_(kept, kept)].mean()
    elif method == "zeroing":
        B[:, cols] = 0.0
    elif method == "randomization":
        if rng is None:
            raise LinfiltError("method 'randomization' needs rng= (a numpy Generator or an integer seed)")
        # One draw of k-|C| values per forgotten class, in ascending class order.
        B[:, cols] = rng.standard_normal((len(cols), len(kept))).T
    return B


def compute_filtration(
    A: np.ndarray,
    forget: int | Iterable[int],
    method: str = "normalization",
    rng: np.random.Generator | int | None = None,
    allow_pinv: bool = False,
    max_condition: float = MAX_CONDITION,
) -> Filtration:
    """F with F A = B_z, plus the facts a record needs (see `filtration_matrix`)."""
    if method not in METHODS:
        raise LinfiltError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise LinfiltError(f"A must be a square (k, k) matrix, got shape {A.shape}")
    A = A.astype(np.float64)
    _finite("A", A)
    k = A.shape[0]
    forget = check_forget(k, forget)
    kept = retained_classes(k, forget)
    B = _target(A, forget, kept, method, _as_rng(rng))
    cond = condition_number(A)
    if method == "naive":  # F = pi exactly (the paper's (0 | I)): cutting rows needs no inverse
        return Filtration(np.eye(k)[kept], forget, tuple(kept.tolist()), method, cond, False)
    pinv = not cond < max_condition
    if pinv and not allow_pinv:
        raise IllConditionedError(
            f"A is singular or ill-conditioned (condition number {cond:.3g} >= {max_condition:.3g}): "
            "every class needs its own distinct mean logits; use more samples per class, "
            "or pass allow_pinv=True to use a pseudo-inverse"
        )
    if pinv:
        F = np.linalg.lstsq(A.T, B.T, rcond=None)[0].T  # minimum-norm: F = B A^+
    else:
        F = np.linalg.solve(A.T, B.T).T  # F A = B  <=>  A^T F^T = B^T
    return Filtration(F, forget, tuple(kept.tolist()), method, cond, pinv)


def filtration_matrix(
    A: np.ndarray,
    forget: int | Iterable[int],
    method: str = "normalization",
    rng: np.random.Generator | int | None = None,
    allow_pinv: bool = False,
) -> np.ndarray:
    """The filtration matrix F (k-|C|, k) with F A = B_z, for method in METHODS.

    naive: z_c = A[R, c], so F selects the retained rows (exactly, for any A); normalization:
    z_c = A[R, c] shifted so its mean is the mean of A[R, R]; randomization: z_c ~ N(0, I) drawn
    from rng; zeroing: z_c = 0.
    Raises IllConditionedError when A's condition number reaches MAX_CONDITION, unless allow_pinv.
    """
    return compute_filtration(A, forget, method, rng, allow_pinv).matrix


def apply_filtration(F: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Filter logits (..., k) -> (..., k-|C|): one model (n, k) or a population (models, n, k).

    Computed in the logits' float dtype (float32 stays float32), float64 otherwise.
    """
    F = np.asarray(F)
    logits = np.asarray(logits)
    if F.ndim != 2 or logits.ndim < 1 or logits.shape[-1] != F.shape[1]:
        raise LinfiltError(
            f"logits of shape {logits.shape} do not fit F of shape {F.shape}: last axis must be {F.shape[1]}"
        )
    dtype = logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float64
    return logits.astype(dtype, copy=False) @ F.T.astype(dtype)


def absorb(
    F: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Absorb F into a final layer: W (k, p) -> F W, b (k,) -> F b (None stays None)."""
    F = np.asarray(F)
    weight = np.asarray(weight)
    if F.ndim != 2 or weight.ndim != 2 or weight.shape[0] != F.shape[1]:
        raise LinfiltError(
            f"weight of shape {weight.shape} does not fit F of shape {F.shape}: need ({F.shape[1]}, p)"
        )
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (F.shape[1],):
            raise LinfiltError(
                f"bias of shape {bias.shape} does not fit F of shape {F.shape}: need ({F.shape[1]},)"
            )
        bias = F @ bias
    return F @ weight, bias
