"""Linear filtration (the paper's section 4.1), generalised to any set C of forgotten classes.

A (k, k) holds the mean logit vector of class j in column j. For the retained classes R (all
classes not in C, ascending) B_z has column j = A[R, j] for j in R and column c = z_c for c in C;
the filtration matrix F (k-|C|, k) solves F A = B_z. Each forgotten column is treated as the
paper treats class 0. Numpy only: arrays in, arrays out, randomness only through the given rng.

Softmax-symmetric logits (every logit vector sums to zero, as multinomial LogisticRegression's
scores do) make A singular by construction: 1^T A = 0. Softmax ignores a shift common to all
outputs, so for them linfilt solves the *affine* filtration F h + g instead: F a_j + g = b_j for
every class j, with F's rows orthogonal to 1 (the one direction such logits never take). That
system is square and invertible (its matrix is A in the coordinates of the sum-zero plane with a
row of ones added), so F is exact and well-scaled, with no pseudo-inverse and no dependence on
rounding. Every other A is solved as the paper does, F = B_z A^-1, with g = 0.

A filtered model carries a `FiltrationRecord` (one `FiltrationStep` per deletion request): the
PyTorch and scikit-learn adapters leave it on their results and model files store its steps.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from linfilt.errors import IllConditionedError, LinfiltError
from linfilt.validation import (check_array, check_bool, check_class_ids, check_float, check_id_list, check_int,
                                check_labels, check_name_list, check_optional_positive_int,
                                check_positive_int, check_random_state, check_seed, is_int)

METHODS = ("naive", "normalization", "randomization", "zeroing")
# The attribute under which an adapter leaves its FiltrationRecord on a filtered model (a
# scikit-learn estimator's ends in "_", that library's mark of what fitting produced).
RECORD_ATTR = "linfilt_filtration"

# Beyond this condition number a float64 solve keeps fewer than ~4 significant digits of F.
MAX_CONDITION = 1e12
# A is softmax-symmetric when every column sums to zero up to this share of its absolute sum:
# float32 logits that sum to zero exactly in real arithmetic stay below ~1e-7 after rounding,
# a model without that structure is nowhere near.
SYMMETRY_TOL = 1e-6
# The opt-in pseudo-inverse drops singular values below this share of the largest.
PINV_RCOND = 1e-10


@dataclass(frozen=True, eq=False)
class Filtration:
    """A filtration matrix with what produced it (for records, CLIs and model files)."""

    matrix: np.ndarray  # F, (k-|C|, k)
    forget: tuple[int, ...]  # forgotten class ids, ascending
    kept: tuple[int, ...]  # kept[i] = class id of new output i
    method: str
    condition: float  # 2-norm condition number of the system solved (A, or its affine form)
    pinv: bool  # True when F came from a pseudo-inverse (allow_pinv opt-in)
    offset: np.ndarray  # g, (k-|C|,): filtered logits are F h + g; zero unless A is softmax-symmetric

    @property
    def affine(self) -> bool:
        return bool(np.any(self.offset != 0))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Filtered logits F h + g of logits (..., k)."""
        return apply_filtration(self.matrix, logits, self.offset)


def _is_iso_date(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class FiltrationStep:
    """One linear filtration of a model (one deletion request): the one record of it, which the
    PyTorch and scikit-learn adapters leave on their results and model files store (the field
    names are the model file's JSON keys).

    Class ids are ORIGINAL ids: a class's output position in the model before any filtration, so
    they keep their meaning however many steps follow. forgot_names, date and head are None where
    the layer that made the step does not know them (a model file names and dates every step; a
    scikit-learn estimator has no head to name). Every field is validated on construction.
    """

    method: str
    forgot: tuple[int, ...]  # original class ids forgotten by this step
    per_class: int | None  # samples per class that estimated A (None: all given)
    samples: int  # samples whose logits estimated A (0: naive without data)
    condition_number: float  # of the system solved (A, or its affine form); inf when singular
    pinv: bool = False  # F came from a pseudo-inverse (allow_pinv=True)
    seed: int | None = None  # the integer rng seed, when one was given
    affine: bool | None = None  # the filtration had an offset g (Filtration.offset); None: not recorded
    forgot_names: tuple[str, ...] | None = None  # one name per forgotten id
    date: str | None = None  # UTC, ISO 8601
    head: str | None = None  # dotted path of the filtered nn.Linear ("" when the model is that Linear)

    def __post_init__(self) -> None:
        check_method(self.method)
        forgot = check_id_list(self.forgot, "forgotten class id")
        if not forgot:
            raise LinfiltError("a filtration must name its forgotten classes: forgot is empty")
        names = self.forgot_names
        if names is not None:
            names = check_name_list(names, "class name")
            if len(names) != len(forgot):
                raise LinfiltError(f"forgot_names must hold one name per id: {len(names)} names for "
                                   f"{len(forgot)} ids")
        for key in ("pinv", "affine"):
            value = getattr(self, key)
            if not (isinstance(value, bool) or (key == "affine" and value is None)):
                raise LinfiltError(f"{key} must be true or false, got {reprlib.repr(value)}")
        if self.date is not None and not (isinstance(self.date, str) and _is_iso_date(self.date)):
            raise LinfiltError(f"date must be an ISO 8601 date and time, got {reprlib.repr(self.date)}")
        if self.head is not None and not isinstance(self.head, str):
            raise LinfiltError(f"head must be a dotted module path, got {reprlib.repr(self.head)}")
        cond = self.condition_number
        checked = {
            "forgot": forgot,
            "forgot_names": names,
            "per_class": check_optional_positive_int(self.per_class, "per_class"),
            # 0 only for naive without data (its F needs no A: see `projection`)
            "samples": 0 if self.method == "naive" and self.samples == 0 and is_int(self.samples)
            else check_positive_int(self.samples, "samples"),
            # a 2-norm condition number is at least 1; None (JSON has no infinity) means infinite
            "condition_number": math.inf if cond is None or cond == math.inf
            else check_float(cond, "condition_number", low=1.0),
            "seed": check_seed(self.seed),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON (the model file's and a transformers config's form); JSON has no
        infinity, so an infinite condition number is null (FiltrationStep(**d) reads it back)."""
        return {**dataclasses.asdict(self),
                "condition_number": None if math.isinf(self.condition_number) else self.condition_number}

    def named(self, names: Mapping[int, str], date: str) -> FiltrationStep:
        """This step with its forgotten classes named (names: original id -> name) and dated."""
        return dataclasses.replace(self, forgot_names=tuple(names[c] for c in self.forgot), date=date)


def utc_now() -> str:
    """The current UTC time as a step's date: ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FiltrationRecord:
    """What linear filtration did to a model: `classes[i]` is the original id of output i, and
    `steps` the filtrations applied, in order."""

    classes: tuple[int, ...]
    steps: tuple[FiltrationStep, ...] = ()

    @property
    def forgotten(self) -> tuple[int, ...]:
        """Original ids of every class forgotten so far, in the order they were forgotten."""
        return tuple(c for s in self.steps for c in s.forgot)

    def then(self, filtration: Filtration, *, per_class: int | None, samples: int, rng: Any = None,
             **known: Any) -> FiltrationRecord:
        """The record after `filtration`, computed on this record's outputs (its class ids are
        output positions here). rng is the one the caller passed (an integer is recorded as the
        seed); known: the FiltrationStep fields the caller knows (forgot_names, date, head)."""
        step = FiltrationStep(
            method=filtration.method, forgot=tuple(self.classes[i] for i in filtration.forget),
            per_class=per_class, samples=samples, condition_number=filtration.condition,
            pinv=filtration.pinv, seed=int(rng) if is_int(rng) else None, affine=filtration.affine, **known,
        )
        return FiltrationRecord(tuple(self.classes[i] for i in filtration.kept), (*self.steps, step))


def check_method(method: Any) -> str:
    """One of METHODS."""
    if not isinstance(method, str) or method not in METHODS:
        raise LinfiltError(f"unknown method: method must be one of {list(METHODS)}, got {reprlib.repr(method)}")
    return method


def check_method_rng(method: Any, rng: Any) -> np.random.Generator | None:
    """Validate a method and its rng (None, a Generator or an integer seed) together, before any
    work: randomization needs an rng to draw its z. Returns the rng as a Generator (or None)."""
    if check_method(method) == "randomization" and rng is None:
        raise LinfiltError("method 'randomization' needs rng= (a numpy Generator or an integer seed)")
    return check_random_state(rng)


def check_forget(num_classes: int, forget: int | Iterable[int]) -> tuple[int, ...]:
    """Validate a forget set (one id or several) and return it as an ascending tuple."""
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    ids = check_class_ids(forget, "forget", num_classes=num_classes)
    left = num_classes - len(ids)
    if left < 2:
        raise LinfiltError(
            f"forgetting {len(ids)} of {num_classes} classes leaves {left}; "
            "linear filtration needs at least 2 classes left"
        )
    return ids


def retained_classes(num_classes: int, forget: int | Iterable[int]) -> np.ndarray:
    """The one mapping from new output index i to original class id: the kept ids, ascending."""
    forget = check_forget(num_classes, forget)  # num_classes too, before it sizes an array
    return _kept(num_classes, forget)


def _kept(num_classes: int, forget: tuple[int, ...]) -> np.ndarray:
    """The kept ids, ascending, of a checked forget set."""
    mask = np.ones(num_classes, dtype=bool)
    mask[list(forget)] = False
    return np.flatnonzero(mask).astype(np.int64)


def _finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise LinfiltError(f"{name} contains {bad} NaN or infinite values; check the model's outputs")


def _class_order(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Sample indices grouped by class, keeping the given order within each class (a stable sort;
    on int16 labels numpy's stable sort is a radix sort)."""
    return np.argsort(labels.astype(np.int16) if num_classes <= 2**15 else labels, kind="stable")


def check_class_counts(labels: np.ndarray, num_classes: int, per_class: int | None = None,
                       names: list[Any] | None = None) -> np.ndarray:
    """Samples per class of validated labels; every class needs one (per_class with per_class).
    Messages call class j names[j] (an adapter's original id or label; j itself by default)."""
    counts = np.bincount(labels, minlength=num_classes)
    name = names.__getitem__ if names is not None else int
    empty = [name(j) for j in np.flatnonzero(counts == 0)]
    if empty:
        raise LinfiltError(
            f"classes {empty} have no samples in the data: A needs at least one sample of every class"
        )
    short = [] if per_class is None else [(name(j), int(counts[j])) for j in np.flatnonzero(counts < per_class)]
    if short:
        shown = ", ".join(f"class {j}: {n}" for j, n in short[:10])
        raise LinfiltError(
            f"per_class={per_class} but some classes have fewer samples ({shown}); "
            "pass a smaller per_class or more data"
        )
    return counts


def select_per_class(
    labels: np.ndarray, num_classes: int, per_class: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Indices of s = per_class samples of each class: the first s in the given order, or a random
    s (without replacement) when rng is given. Returned grouped by class, ascending class id."""
    labels = check_labels(labels, num_classes=num_classes)
    per_class = check_positive_int(per_class, "per_class")
    counts = check_class_counts(labels, num_classes, per_class)
    return _pick_per_class(labels, counts, per_class, check_random_state(rng))


def _pick_per_class(labels: np.ndarray, counts: np.ndarray, per_class: int,
                    rng: np.random.Generator | None) -> np.ndarray:
    """select_per_class on checked labels whose counts (at least per_class each) are known."""
    num_classes = len(counts)
    order = _class_order(labels, num_classes)
    starts = np.concatenate(([0], np.cumsum(counts)))
    picks = []
    for j in range(num_classes):
        members = order[starts[j] : starts[j + 1]]
        if rng is not None:
            members = np.sort(rng.choice(members, per_class, replace=False))
        picks.append(members[:per_class])
    return np.concatenate(picks)


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
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    logits = check_array(logits, "logits", ndim=2, finite=False, dtype=None)
    if logits.shape[1] != num_classes:
        raise LinfiltError(f"logits must have shape (n, {num_classes}), got {logits.shape}")
    labels = check_labels(labels, num_classes=num_classes)
    if labels.shape[0] != logits.shape[0]:
        raise LinfiltError(f"{logits.shape[0]} logit rows but {labels.shape[0]} labels")
    per_class = check_optional_positive_int(per_class, "per_class")
    counts = check_class_counts(labels, num_classes, per_class)
    if per_class is not None:
        idx = _pick_per_class(labels, counts, per_class, check_random_state(rng))
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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(np.linalg.cond(A))


def is_softmax_symmetric(A: np.ndarray) -> bool:
    """Whether every column of A sums to zero (up to SYMMETRY_TOL of its absolute sum): the mean
    logits of a model whose every logit vector sums to zero."""
    A = np.asarray(A, dtype=np.float64)
    scale = np.abs(A).sum(axis=0)
    return bool(np.all(scale > 0) and np.all(np.abs(A.sum(axis=0)) <= SYMMETRY_TOL * scale))


def _sum_zero_basis(k: int) -> np.ndarray:
    """Q (k, k-1): an orthonormal basis of the vectors whose entries sum to zero (the columns of the
    Householder reflection that maps e_0 to 1/sqrt(k), after the first)."""
    v = np.full(k, 1 / np.sqrt(k))
    v[0] -= 1.0
    H = np.eye(k) - 2 * np.outer(v, v) / (v @ v)
    return H[:, 1:]


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
    elif method == "randomization":  # rng checked by check_method_rng
        # One draw of k-|C| values per forgotten class, in ascending class order.
        B[:, cols] = rng.standard_normal((len(cols), len(kept))).T
    return B


def _solve(M: np.ndarray, B: np.ndarray, allow_pinv: bool, max_condition: float, what: str
           ) -> tuple[np.ndarray, float, bool]:
    """X with X M = B: (X, condition number of M, whether the pseudo-inverse was used).

    M and B are scaled by a power of two near M's largest entry first (X M = B is the same system
    as X (M/s) = B/s; a power of two scales exactly, so normal inputs give bit-identical X), so tiny
    or subnormal entries neither overflow nor underflow the solve."""
    largest = np.abs(M).max()
    if largest > 0:
        s = np.ldexp(1.0, int(np.frexp(largest)[1]))
        M, B = M / s, B / s
    cond = condition_number(M)
    if cond < max_condition:
        return np.linalg.solve(M.T, B.T).T, cond, False  # X M = B  <=>  M^T X^T = B^T
    if not allow_pinv:
        raise IllConditionedError(
            f"{what} is singular or ill-conditioned (condition number {cond:.3g} >= {max_condition:.3g}): "
            "every class needs its own distinct mean logits; use more samples per class, "
            "or pass allow_pinv=True to use a pseudo-inverse"
        )
    # Minimum-norm least squares with an explicit relative cut-off, so a singular value that is
    # zero up to rounding is dropped, not inverted.
    return np.linalg.lstsq(M.T, B.T, rcond=PINV_RCOND)[0].T, cond, True


def compute_filtration(
    A: np.ndarray,
    forget: int | Iterable[int],
    method: str = "normalization",
    rng: np.random.Generator | int | None = None,
    allow_pinv: bool = False,
    max_condition: float = MAX_CONDITION,
) -> Filtration:
    """The filtration for A: F (and g) with F a_j + g = b_j for every class j (see the module doc).

    g = 0 and F = B_z A^-1 (the paper's) unless A is softmax-symmetric. naive is F = pi exactly for
    any A. Raises IllConditionedError when the system's condition number reaches max_condition,
    unless allow_pinv (then a least-squares F from a cut-off pseudo-inverse).
    """
    rng = check_method_rng(method, rng)
    allow_pinv = check_bool(allow_pinv, "allow_pinv")
    if max_condition != math.inf:  # inf: refuse only a singular A
        max_condition = check_float(max_condition, "max_condition", low=1.0, low_open=True)
    A = check_array(A, "A", ndim=2, finite=False)
    if A.shape[0] != A.shape[1]:
        raise LinfiltError(f"A must be a square (k, k) matrix, got shape {A.shape}")
    _finite("A", A)
    k = A.shape[0]
    forget = check_forget(k, forget)
    kept = _kept(k, forget)
    B = _target(A, forget, kept, method, rng)
    no_offset = np.zeros(len(kept))
    if method == "naive":  # F = pi exactly (the paper's (0 | I)): cutting rows needs no inverse
        return Filtration(np.eye(k)[kept], forget, tuple(kept.tolist()), method,
                          condition_number(A), False, no_offset)
    if is_softmax_symmetric(A):
        # Unknowns [G g] with F = G Q^T: G (Q^T a_j) + g = b_j, one square system in k unknowns per row.
        Q = _sum_zero_basis(k)
        M = np.vstack([Q.T @ A, np.ones((1, k))])
        X, cond, pinv = _solve(M, B, allow_pinv, max_condition, "A (in the sum-zero plane, affine)")
        F, offset = X[:, :-1] @ Q.T, X[:, -1]
    else:
        F, cond, pinv = _solve(A, B, allow_pinv, max_condition, "A")
        offset = no_offset
    if not (np.all(np.isfinite(F)) and np.all(np.isfinite(offset))):
        raise IllConditionedError("the filtration came out non-finite (A's entries overflow or vanish); "
                                  "check the model's logits")
    return Filtration(F, forget, tuple(kept.tolist()), method, cond, pinv, offset)


def projection(num_classes: int, forget: int | Iterable[int]) -> Filtration:
    """naive's filtration without data: F = pi, the identity's rows of the kept classes. No A is
    estimated or solved, so its recorded condition number is that of the identity, 1."""
    forget = check_forget(num_classes, forget)
    kept = _kept(num_classes, forget)
    return Filtration(np.eye(num_classes)[kept], forget, tuple(kept.tolist()), "naive", 1.0, False,
                      np.zeros(len(kept)))


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
    Raises IllConditionedError when A's condition number reaches MAX_CONDITION, unless allow_pinv,
    and LinfiltError when A is softmax-symmetric (its filtration is affine: `compute_filtration`).
    """
    result = compute_filtration(A, forget, method, rng, allow_pinv)
    if result.affine:
        raise LinfiltError("A's columns sum to zero (softmax-symmetric logits), so its filtration is "
                           "affine, F h + g: use compute_filtration(...), whose .matrix is F and .offset g")
    return result.matrix


def apply_filtration(F: np.ndarray, logits: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """Filter logits (..., k) -> (..., k-|C|): one model (n, k) or a population (models, n, k).

    F h (+ offset g, for an affine filtration). Computed in the logits' float dtype (float32 stays
    float32), float64 otherwise.
    """
    F = check_array(F, "F", ndim=2)
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] != F.shape[1]:
        raise LinfiltError(
            f"logits of shape {logits.shape} do not fit F of shape {F.shape}: last axis must be {F.shape[1]}"
        )
    if not (np.issubdtype(logits.dtype, np.floating) or np.issubdtype(logits.dtype, np.integer)):
        raise LinfiltError(f"logits must be numeric, got dtype {logits.dtype}")
    dtype = logits.dtype if np.issubdtype(logits.dtype, np.floating) else np.float64
    out = logits.astype(dtype, copy=False) @ F.T.astype(dtype)
    if offset is not None:
        out += _offset(offset, F).astype(dtype)
    return out


def _offset(offset: np.ndarray, F: np.ndarray) -> np.ndarray:
    offset = check_array(offset, "offset", ndim=1)
    if offset.shape != (F.shape[0],):
        raise LinfiltError(f"offset of shape {offset.shape} does not fit F of shape {F.shape}: "
                           f"need ({F.shape[0]},)")
    return offset


def absorb(
    F: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, offset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Absorb a filtration into a final layer: W (k, p) -> F W, b (k,) -> F b + g.

    Without a bias the new layer has none, unless the filtration is affine (a non-zero offset g),
    which then becomes the bias.
    """
    F = check_array(F, "F", ndim=2)
    weight = check_array(weight, "weight", ndim=2)
    if weight.shape[0] != F.shape[1]:
        raise LinfiltError(
            f"weight of shape {weight.shape} does not fit F of shape {F.shape}: need ({F.shape[1]}, p)"
        )
    g = None if offset is None else _offset(offset, F)
    if bias is not None:
        bias = check_array(bias, "bias", ndim=1)
        if bias.shape != (F.shape[1],):
            raise LinfiltError(
                f"bias of shape {bias.shape} does not fit F of shape {F.shape}: need ({F.shape[1]},)"
            )
        bias = F @ bias if g is None else F @ bias + g
    elif g is not None and np.any(g != 0):
        bias = g
    return F @ weight, bias
