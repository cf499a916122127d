"""The paper's audit, computed from stored logits alone.

Every function takes logits of a whole population, shaped (models, test_images, outputs), and the
test set's ORIGINAL class ids. Output index i of a model with forget set C is the original class
`retained_classes(k, C)[i]`; a model that forgot nothing has k outputs in class order.

The attack (the paper's weak-unlearning test as the authors' scripts ran it; README, "The audit as
a library"): for each true class c, logit vectors of unlearned models on images of c are labelled
1, those of retrained models 0; the attack classifiers train on the vectors of one group of models
and are scored on the vectors of the other group, so no model ever contributes to both sides.
Advantage = 2 (accuracy - 1/2).

Stronger attacks: `STRONG_CLASSIFIERS` (logistic regression, a small MLP) for `classifiers=`,
and `features="sorted"` (label-free: each logit vector sorted); `linfilt.lira` (a per-image
likelihood-ratio test) and `linfilt.probe` (white-box tests of the head) go beyond logit vectors.

Image sampling: "ours" (the default) draws a fresh subset of a class' images for every model;
"authors" draws one subset per (population, side) that every model on that side shares, as the
authors' scripts did (`SAMPLING` says more).

Repeats re-draw the model split (a random permutation of each population's model indices; repeat
0 may keep the paper's fixed "first 30% are test models" split) and the images. Their interval
describes how much the advantage moves with the attack's split and samples for THESE two
populations; it says nothing about how it would move with freshly trained populations.

Randomness: one integer seed (or a Generator, from which one is drawn). Every (repeat, class)
gets its own stream keyed by (seed, repeat, class id), so a class's numbers do not depend on
which other classes are attacked, nor on `n_jobs`; and calls with the same seed on populations
of the same shapes use the same splits and images, so two methods are compared pairwise.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from joblib import Parallel, delayed
from joblib.parallel import get_active_backend
from scipy import stats
from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from linfilt.attacks import samme_r
from linfilt.errors import LinfiltError
from linfilt.filtration import retained_classes
from linfilt.validation import (check_bool, check_class_id, check_class_ids, check_float, check_int, check_labels,
                                check_n_jobs, check_positive_int, is_int)

__all__ = [
    "AUTHORS_CLASSIFIERS",
    "DEFAULT_CLASSIFIERS",
    "FEATURES",
    "SAMPLING",
    "STRONG_CLASSIFIERS",
    "AccuracyLoss",
    "AttackResult",
    "AttackSets",
    "ClassifierFactory",
    "Estimate",
    "LabelsChanged",
    "PredictedDistribution",
    "Summary",
    "attack_advantage",
    "check_population",
    "classifier_advantages",
    "difference",
    "draw_attack_sets",
    "estimate",
    "floor_advantage",
    "labels_changed",
    "predicted_distribution",
    "retained_accuracy_loss",
]


class Classifier(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


# name -> factory(seed) returning an unfitted classifier; the seed makes randomised ones repeatable.
ClassifierFactory = Callable[[int], Classifier]


def _nearest_neighbours(seed: int) -> Classifier:
    return KNeighborsClassifier(5)


def _random_forest(seed: int) -> Classifier:
    return RandomForestClassifier(max_depth=5, n_estimators=10, random_state=seed)


class _ChanceIfUninformative:
    """AdaBoost refuses to fit when its first weak learner is no better than chance (all logits
    equal, say). An attack that cannot beat chance guesses one constant: advantage 0, not a crash."""

    def __init__(self, estimator: Classifier) -> None:
        self.estimator, self.constant = estimator, None

    def fit(self, x: np.ndarray, y: np.ndarray) -> _ChanceIfUninformative:
        try:
            self.estimator.fit(x, y)
        except ValueError as exc:
            if "worse than random" not in str(exc):
                raise
            self.constant = int(np.bincount(np.asarray(y, dtype=np.int64)).argmax())
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.constant is not None:
            return np.full(len(x), self.constant)
        return self.estimator.predict(x)


def _adaboost(seed: int) -> Classifier:
    return _ChanceIfUninformative(AdaBoostClassifier(random_state=seed))


# The paper's three attacks (column names of its tables), otherwise scikit-learn's defaults.
DEFAULT_CLASSIFIERS: Mapping[str, ClassifierFactory] = {
    "NN": _nearest_neighbours,
    "RF": _random_forest,
    "AB": _adaboost,
}


def _logistic_regression(seed: int) -> Classifier:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _mlp(seed: int) -> Classifier:
    # One hidden layer of 32 units; Adam at step size 0.01 (default 0.001) until the training loss
    # stops improving (200 epochs at most); L2 weight alpha=1 (scikit-learn divides it by the row
    # count, so it fades with more data). Early stopping on 10% held-out rows instead kept, on
    # small or separable sets, a network of its first epochs; this was as accurate or more on
    # 140 to 21,000 rows of mean and spread shifts, and about as fast.
    return make_pipeline(StandardScaler(), MLPClassifier((32,), alpha=1.0, learning_rate_init=0.01,
                                                         max_iter=200, random_state=seed))


# Stronger attacks than the paper's, for `classifiers=` (alone or merged with the defaults):
# logistic regression and a small MLP, both on standardised features.
STRONG_CLASSIFIERS: Mapping[str, ClassifierFactory] = {
    "LR": _logistic_regression,
    "MLP": _mlp,
}

# What the attack classifiers see of each logit vector (`features=`):
FEATURES: Mapping[str, str] = {
    # The paper's attack: output i is the same class in every model.
    "logits": "each logit vector as it is",
    # Label-free: the same whichever order the outputs come in, so it finds what a shift of
    # confidence reveals even where the attacker does not know, or use, which output is which.
    "sorted": "each logit vector sorted in descending order",
}

# How each model's images of the attacked class are drawn, per side of the attack (with
# `replace=False`, a uniformly random subset of `count` images, all of them when there are fewer):
SAMPLING: Mapping[str, str] = {
    # Ours: a fresh subset for every model, so the attack sees as many different images as it can.
    "ours": "a fresh random subset of the class' images for every model",
    # The authors' scripts: one subset per (population, side), shared by all models on that side
    # (the first `count` of a permutation of the class' images: no replacement, all images when
    # there are fewer); the unlearned and retrained populations and the training and test sides
    # draw independently, so a side's subsets may overlap the other side's.
    "authors": "one random subset per population and side, shared by all its models",
}

# The same attacks as the authors' 2020 scikit-learn ran them: AdaBoost's default then was
# SAMME.R, which scikit-learn >= 1.6 no longer has (linfilt.attacks.SammeR reimplements it).
AUTHORS_CLASSIFIERS: Mapping[str, ClassifierFactory] = {**DEFAULT_CLASSIFIERS, "AB": samme_r}

# Sample counts: one for every class, or {class id: count} naming every attacked class.
Samples = int | Mapping[int, int]


# ----------------------------------------------------------------------------- input checks


def check_population(name: str, logits: Any) -> np.ndarray:
    """Logits of a population: 3-D (models, test_images, outputs), non-empty, float, finite."""
    arr = np.asarray(logits)
    if arr.ndim != 3:
        raise LinfiltError(
            f"{name} must be logits shaped (models, test_images, outputs), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise LinfiltError(f"{name} is empty (shape {arr.shape}); it needs models, images and outputs")
    if not np.issubdtype(arr.dtype, np.floating):
        raise LinfiltError(f"{name} must hold floating-point logits, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise LinfiltError(f"{name} contains NaN or infinite logits; recompute them from the models")
    return arr


def check_image_labels(labels: Any, n_images: int) -> np.ndarray:
    """One class id per test image (shared by the attacks in linfilt.lira and linfilt.probe)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n_images:
        raise LinfiltError(
            f"labels must be one class id per test image, shape ({n_images},), got shape {arr.shape}"
        )
    return check_labels(arr)


def check_same_images(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    """Two populations' logits are on the same test images with the same outputs."""
    if first.shape[1:] != second.shape[1:]:
        raise LinfiltError(
            f"{names[0]} {first.shape} and {names[1]} {second.shape} must have the same number of "
            "test images and outputs: both are logits on the same test set, with the same classes kept"
        )


def check_forget_ids(forget: int | Iterable[int]) -> tuple[int, ...]:
    """The forgotten class ids, validated."""
    return check_class_ids(forget, "forget")


def _output_classes(n_outputs: int, num_classes: int, forget: tuple[int, ...]) -> np.ndarray:
    """Original class id of each output: k outputs for a full model, k - |C| for one without C."""
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    if any(c >= num_classes for c in forget):
        raise LinfiltError(f"forget {list(forget)} names a class outside 0..{num_classes - 1}")
    if n_outputs == num_classes:
        return np.arange(num_classes)
    if n_outputs == num_classes - len(forget):
        return np.asarray(retained_classes(num_classes, forget), dtype=np.int64)
    raise LinfiltError(
        f"logits have {n_outputs} outputs, but a model of {num_classes} classes has {num_classes} "
        f"(nothing forgotten) or {num_classes - len(forget)} (forget={list(forget)}); check "
        "num_classes and forget"
    )


def _class_images(labels: np.ndarray, cls: int) -> np.ndarray:
    idx = np.flatnonzero(labels == cls)
    if idx.size == 0:
        raise LinfiltError(
            f"class {cls} has no test images; attack or evaluate only classes present in labels"
        )
    return idx


def _count(samples: Samples, cls: int, name: str) -> int:
    if isinstance(samples, Mapping):
        if cls not in samples:
            raise LinfiltError(f"{name} gives no sample count for class {cls}; name every attacked class")
        value = samples[cls]
    else:
        value = samples
    return check_positive_int(value, f"{name} (class {cls})")


def split_sizes(n_models: int, test_fraction: float, name: str) -> int:
    """Number of attack-test models: test_fraction of the population, rounded half up."""
    n_test = int(np.floor(test_fraction * n_models + 0.5))
    if n_test < 1 or n_test >= n_models:
        raise LinfiltError(
            f"{name} has {n_models} model(s): too few for a {1 - test_fraction:.0%}/{test_fraction:.0%} "
            "split by model with at least one model on each side; train more models"
        )
    return n_test


def seed_entropy(seed: int | np.random.Generator) -> int:
    """The integer every draw of an attack is seeded from (a Generator gives one draw of it)."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if not is_int(seed) or seed < 0:
        raise LinfiltError(f"seed must be an integer >= 0 or a numpy Generator, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class AttackSets:
    """One attack's data: rows are logit vectors, y = 1 for unlearned, 0 for retrained.

    `model_*` is the model index within its own population and `image_*` the test-image index
    of each row, so a caller can check where every row came from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    model_train: np.ndarray
    image_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    model_test: np.ndarray
    image_test: np.ndarray


def _draw(
    logits: np.ndarray,
    models: np.ndarray,
    pool: np.ndarray,
    count: int,
    replace: bool,
    shared: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` images of `pool` per model, for all models at once: (vectors, model ids, image ids).
    shared: one draw that every model uses (the authors' sampling), else one draw per model."""
    rows = 1 if shared else models.size
    if replace:
        draw = rng.integers(pool.size, size=(rows, count))
    elif count >= pool.size:
        # Fewer images than asked for (AT&T: 10 per person): every image once per model.
        draw = np.broadcast_to(np.arange(pool.size), (rows, pool.size))
    else:
        # The `count` smallest of i.i.d. uniforms are a uniformly random subset, per row.
        draw = np.argpartition(rng.random((rows, pool.size)), count - 1, axis=1)[:, :count]
    draw = np.broadcast_to(draw, (models.size, draw.shape[1]))
    images = pool[draw]
    vectors = logits[models[:, None], images]
    return (
        vectors.reshape(-1, logits.shape[2]),
        np.repeat(models, images.shape[1]),
        images.reshape(-1),
    )


def _attack_sets(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    images: np.ndarray,
    orders: tuple[np.ndarray, np.ndarray],
    n_tests: tuple[int, int],
    counts: tuple[int, int],
    replace: bool,
    disjoint_images: bool,
    test_fraction: float,
    sampling: str,
    rng: np.random.Generator,
) -> AttackSets:
    if disjoint_images:
        n_img_test = int(np.floor(test_fraction * images.size + 0.5))
        if n_img_test < 1 or n_img_test >= images.size:
            raise LinfiltError(
                f"a class with {images.size} test image(s) cannot be split into disjoint attack "
                "training and test images; use disjoint_images=False"
            )
        shuffled = rng.permutation(images)
        pools = (shuffled[n_img_test:], shuffled[:n_img_test])
    else:
        pools = (images, images)
    sides = []
    for side in (0, 1):  # 0: attack training side, 1: attack test side
        parts = []
        for label, logits, order, n_test in ((1, unlearned, orders[0], n_tests[0]),
                                             (0, retrained, orders[1], n_tests[1])):
            models = order[n_test:] if side == 0 else order[:n_test]
            x, m, i = _draw(logits, models, pools[side], counts[side], replace,
                            sampling == "authors", rng)
            parts.append((x, np.full(len(x), label, dtype=np.int64), m, i))
        sides.append([np.concatenate(col) for col in zip(*parts)])
    return AttackSets(*sides[0], *sides[1])


def model_orders(
    entropy: int, repeat: int, fixed_first: bool, sizes: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Model orders of both populations in one repeat; the first test_fraction are test models."""
    if repeat == 0 and fixed_first:
        return np.arange(sizes[0]), np.arange(sizes[1])
    rng = np.random.default_rng([entropy, 0, repeat, 0])  # fixed-length keys: no two collide
    return rng.permutation(sizes[0]), rng.permutation(sizes[1])


def _class_rng(entropy: int, repeat: int, cls: int) -> np.random.Generator:
    return np.random.default_rng([entropy, 1, repeat, cls])


def draw_attack_sets(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    labels: np.ndarray,
    cls: int,
    *,
    seed: int | np.random.Generator = 0,
    repeat: int = 0,
    fixed_first: bool = True,
    test_fraction: float = 0.3,
    train_samples: Samples = 150,
    test_samples: Samples = 150,
    replace: bool = False,
    disjoint_images: bool = False,
    sampling: str = "ours",
    features: str = "logits",
) -> AttackSets:
    """The data that `attack_advantage`, with the same arguments, attacks for class `cls` in
    repeat `repeat`: for inspecting an attack or running one of your own."""
    unlearned = check_population("unlearned", unlearned)
    retrained = check_population("retrained", retrained)
    check_same_images(unlearned, retrained, ("unlearned", "retrained"))
    labels = check_image_labels(labels, unlearned.shape[1])
    test_fraction = _check_fraction(test_fraction)
    _check_sampling(sampling)
    _check_features(features)
    cls = check_class_id(cls, "cls")
    repeat = check_int(repeat, "repeat", minimum=0)
    n_tests = (
        split_sizes(unlearned.shape[0], test_fraction, "unlearned"),
        split_sizes(retrained.shape[0], test_fraction, "retrained"),
    )
    counts = (_count(train_samples, cls, "train_samples"), _count(test_samples, cls, "test_samples"))
    entropy = seed_entropy(seed)
    orders = model_orders(entropy, repeat, fixed_first, (unlearned.shape[0], retrained.shape[0]))
    unlearned, retrained = _featurise(unlearned, features), _featurise(retrained, features)
    return _attack_sets(unlearned, retrained, _class_images(labels, cls), orders, n_tests, counts,
                        replace, disjoint_images, test_fraction, sampling,
                        _class_rng(entropy, repeat, cls))


def _check_sampling(sampling: str) -> None:
    if not isinstance(sampling, str) or sampling not in SAMPLING:
        raise LinfiltError(f"sampling must be one of {sorted(SAMPLING)}, got {sampling!r}")


def _check_features(features: str) -> None:
    if not isinstance(features, str) or features not in FEATURES:
        raise LinfiltError(f"features must be one of {sorted(FEATURES)}, got {features!r}")


def _featurise(logits: np.ndarray, features: str) -> np.ndarray:
    """What the attack classifiers see of each logit vector (`FEATURES`); "logits" is the input itself."""
    return logits if features == "logits" else np.flip(np.sort(logits, axis=2), axis=2)


def _check_fraction(test_fraction: float) -> float:
    return check_float(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)


# ----------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Estimate:
    """A statistic over repeats: its mean, a `level` interval, and repeat 0's value.

    `fixed` is the value with the paper's fixed split when the attack kept it for repeat 0
    (None otherwise). With one repeat there is no interval: low and high are NaN.
    """

    mean: float
    low: float
    high: float
    fixed: float | None
    repeats: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "fixed": self.fixed,
                "repeats": self.repeats}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """The inverse of `as_dict` (JSON's null interval ends read as NaN)."""
        nan = float("nan")
        return cls(float(d["mean"]), nan if d.get("low") is None else float(d["low"]),
                   nan if d.get("high") is None else float(d["high"]), d.get("fixed"), int(d.get("repeats", 0)))

    def __str__(self) -> str:
        """For a table: mean [interval], or the mean alone without an interval."""
        if np.isnan(self.low):
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} [{self.low:.2f}, {self.high:.2f}]"


def estimate(
    values: np.ndarray, *, interval: str = "percentile", level: float = 0.95, fixed: bool = False
) -> Estimate:
    """Mean of per-repeat `values` and an interval.

    "percentile": the central `level` range of the repeats, i.e. where one run of the paper's
    protocol on these populations lands; "t": a Student-t interval for the mean over repeats
    (narrower; it shrinks with more repeats).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise LinfiltError("an estimate needs at least one repeat")
    if interval not in ("percentile", "t"):
        raise LinfiltError(f"interval must be 'percentile' or 't', got {interval!r}")
    level = check_float(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    mean = float(values.mean())
    if values.size == 1:
        low = high = float("nan")
    elif interval == "percentile":
        low, high = (float(v) for v in np.percentile(values, [50 * (1 - level), 50 * (1 + level)]))
    else:
        half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
        low, high = mean - float(half), mean + float(half)
    return Estimate(mean, low, high, float(values[0]) if fixed else None, int(values.size))


# ----------------------------------------------------------------------------- the attack


@dataclass(frozen=True)
class AttackResult:
    """Advantages of every repeat, attacked class and classifier.

    `advantages[r, i, j]` is repeat r, class `classes[i]`, classifier `classifiers[j]`;
    `features` is what the classifiers saw of each logit vector (a key of `FEATURES`).
    """

    advantages: np.ndarray
    classes: tuple[int, ...]
    classifiers: tuple[str, ...]
    forget: tuple[int, ...]
    fixed_first: bool
    interval: str
    level: float
    seed: int
    features: str = "logits"

    def _mean_over(self, chosen: Callable[[int], bool]) -> np.ndarray:
        cols = [i for i, c in enumerate(self.classes) if chosen(c)]
        if not cols:
            return np.full(self.advantages[:, 0, :].shape, np.nan)
        return self.advantages[:, cols, :].mean(axis=1)

    def forgotten(self) -> np.ndarray:
        """(repeats, classifiers): mean advantage over the attacked forgotten classes (NaN if none)."""
        return self._mean_over(lambda c: c in self.forget)

    def retained(self) -> np.ndarray:
        """(repeats, classifiers): mean advantage over the attacked retained classes (NaN if none)."""
        return self._mean_over(lambda c: c not in self.forget)

    def summary(self) -> Summary:
        """Estimates over repeats: per group (a group with no attacked class is None) and per class."""

        def row(values: np.ndarray) -> dict[str, Estimate]:
            return {name: estimate(values[:, j], interval=self.interval, level=self.level,
                                   fixed=self.fixed_first)
                    for j, name in enumerate(self.classifiers)}

        forgotten, retained = self.forgotten(), self.retained()
        return Summary(None if np.isnan(forgotten).all() else row(forgotten),
                       None if np.isnan(retained).all() else row(retained),
                       {c: row(self.advantages[:, i, :]) for i, c in enumerate(self.classes)},
                       self.features)

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (the form of the reproduction's `attacks/<row>.json`).
        `features` is written only when it is not "logits", so stored results keep their form."""
        return {"advantages": self.advantages.tolist(), "classes": list(self.classes),
                "classifiers": list(self.classifiers), "forget": list(self.forget),
                "fixed_first": self.fixed_first, "interval": self.interval, "level": self.level,
                "seed": self.seed, **_features_json(self.features)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AttackResult:
        """The inverse of `to_json`; LinfiltError if `d` is not one (a key missing, shapes that
        disagree)."""
        try:
            result = cls(np.asarray(d["advantages"], dtype=np.float64), tuple(int(c) for c in d["classes"]),
                         tuple(str(c) for c in d["classifiers"]), tuple(int(c) for c in d["forget"]),
                         bool(d["fixed_first"]), str(d["interval"]), float(d["level"]), int(d["seed"]),
                         str(d.get("features", "logits")))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinfiltError(f"not an attack result: {exc!r}") from None
        if result.advantages.shape[1:] != (len(result.classes), len(result.classifiers)):
            raise LinfiltError(f"not an attack result: advantages shaped {result.advantages.shape}, "
                               f"not (repeats, {len(result.classes)} classes, "
                               f"{len(result.classifiers)} classifiers)")
        return result


@dataclass(frozen=True)
class Summary:
    """An attack's (or a paired difference's) estimates per classifier name: over the forgotten
    classes, over the retained classes (each None when no class of the group was attacked), and
    per attacked class id; `features` as in `AttackResult`."""

    forgotten: Mapping[str, Estimate] | None
    retained: Mapping[str, Estimate] | None
    per_class: Mapping[int, Mapping[str, Estimate]]
    features: str = "logits"

    def groups(self) -> dict[str, Mapping[str, Estimate]]:
        """{"forgotten": ..., "retained": ...}, the groups present, in that order."""
        return {name: row for name, row in (("forgotten", self.forgotten), ("retained", self.retained))
                if row is not None}

    def to_json(self) -> dict[str, Any]:
        """Estimates as `Estimate.as_dict`, class ids as strings; absent groups left out, and
        `features` too when it is "logits"."""
        def row(estimates: Mapping[str, Estimate]) -> dict[str, Any]:
            return {name: e.as_dict() for name, e in estimates.items()}

        return {**{name: row(r) for name, r in self.groups().items()},
                "per_class": {str(c): row(r) for c, r in self.per_class.items()},
                **_features_json(self.features)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Summary:
        """The inverse of `to_json`."""
        def row(estimates: Mapping[str, Any] | None) -> dict[str, Estimate] | None:
            return None if estimates is None else {n: Estimate.from_dict(e) for n, e in estimates.items()}

        return cls(row(d.get("forgotten")), row(d.get("retained")),
                   {int(c): row(r) for c, r in d["per_class"].items()}, str(d.get("features", "logits")))


def _features_json(features: str) -> dict[str, str]:
    """The JSON key of `features`: absent means "logits", the form of results stored before it."""
    return {} if features == "logits" else {"features": features}


def classifier_advantages(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    classifiers: Mapping[str, ClassifierFactory], seed: int,
) -> np.ndarray:
    """Advantage of each classifier (factory(seed)) trained on (x_train, y_train) and scored on
    (x_test, y_test), y = 1 / 0 for the two populations; from balanced accuracy, which is plain
    accuracy when both populations contribute equally (the paper's setting) and keeps 1/2 as
    chance otherwise.

    One BLAS thread: the attacks run in parallel over tasks (n_jobs), and a multi-threaded BLAS on
    these small matrices is many times slower on a busy machine (LR, MLP).
    """
    out = np.empty(len(classifiers))
    with threadpool_limits(1), warnings.catch_warnings():
        # an MLP or LR stopped at its iteration limit is still an attack: its advantage is scored
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j, factory in enumerate(classifiers.values()):
            clf = factory(seed)
            clf.fit(x_train, y_train)
            hit = np.asarray(clf.predict(x_test)) == y_test
            accuracy = 0.5 * (hit[y_test == 1].mean() + hit[y_test == 0].mean())
            out[j] = 2.0 * (accuracy - 0.5)
    return out


def _run_attack(
    sets: AttackSets, classifiers: Mapping[str, ClassifierFactory], seed: int
) -> np.ndarray:
    return classifier_advantages(sets.x_train, sets.y_train, sets.x_test, sets.y_test, classifiers, seed)


def attack_advantage(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    labels: np.ndarray,
    forget: int | Iterable[int],
    *,
    classes: Iterable[int] | None = None,
    classifiers: Mapping[str, ClassifierFactory] | None = None,
    repeats: int = 1,
    seed: int | np.random.Generator = 0,
    fixed_first: bool = True,
    test_fraction: float = 0.3,
    train_samples: Samples = 150,
    test_samples: Samples = 150,
    replace: bool = False,
    disjoint_images: bool = False,
    sampling: str = "ours",
    features: str = "logits",
    interval: str = "percentile",
    level: float = 0.95,
    n_jobs: int = 1,
    progress: Callable[[], None] | None = None,
) -> AttackResult:
    """The paper's attack advantage of `unlearned` vs `retrained` models, per true class.

    unlearned (M1, n, k') and retrained (M2, n, k'): logits on the same n test images; labels (n,)
    their original class ids; forget: the forgotten class ids (their images are attacked too).
    classes: the true classes to attack (default: every class in labels).

    Per class c and repeat, the first `test_fraction` of each population's model order (rounded
    half up; repeat 0 keeps index order when `fixed_first`, later repeats permute it) are the
    attack's test models, the rest its training models. Each training model gives
    `train_samples` images of c, each test model `test_samples`: without replacement within a
    model, independently for every model, so one image may appear through different models on
    both sides (the paper's reading; `disjoint_images=True` instead splits c's images
    `test_fraction` / rest between the sides). When c has fewer images than asked for, each model
    gives every image once; `replace=True` draws with replacement instead, always.
    sampling: "ours" draws every model's images independently; "authors" draws one set per
    population and side, shared by its models (see `SAMPLING`).
    classifiers: name -> factory(seed) (default `DEFAULT_CLASSIFIERS`; `STRONG_CLASSIFIERS` adds
    logistic regression and an MLP); features: what they see of each logit vector, "logits" (the
    paper's) or "sorted" (descending, label-free; see `FEATURES`). n_jobs runs (repeat, class)
    tasks in parallel without changing any number; progress() is called after each task.
    """
    unlearned = check_population("unlearned", unlearned)
    retrained = check_population("retrained", retrained)
    check_same_images(unlearned, retrained, ("unlearned", "retrained"))
    labels = check_image_labels(labels, unlearned.shape[1])
    forget_t = check_forget_ids(forget)
    test_fraction = _check_fraction(test_fraction)
    _check_sampling(sampling)
    _check_features(features)
    repeats = check_positive_int(repeats, "repeats")
    for flag, value in (("fixed_first", fixed_first), ("replace", replace), ("disjoint_images", disjoint_images)):
        check_bool(value, flag)
    estimate(np.zeros(1), interval=interval, level=level)  # validates interval and level up front
    classifiers = dict(DEFAULT_CLASSIFIERS if classifiers is None else classifiers)
    if not classifiers:
        raise LinfiltError("classifiers is empty; give at least one name -> factory(seed)")
    n_jobs = check_n_jobs(n_jobs)
    if classes is None:
        chosen = tuple(int(c) for c in np.unique(labels))
    else:
        check_class_ids(classes, "classes")  # integers, each once; the given order is kept
        chosen = tuple(int(c) for c in ([classes] if is_int(classes) else classes))
    if not chosen:
        raise LinfiltError("no class to attack; labels or classes is empty")
    if classes is None:
        missing = [c for c in forget_t if c not in chosen]
        if missing:
            raise LinfiltError(
                f"forgotten class(es) {missing} have no test images; the attack needs them "
                "(or name the classes to attack explicitly)"
            )
    images = {c: _class_images(labels, c) for c in chosen}
    counts = {c: (_count(train_samples, c, "train_samples"), _count(test_samples, c, "test_samples"))
              for c in chosen}
    n_tests = (
        split_sizes(unlearned.shape[0], test_fraction, "unlearned"),
        split_sizes(retrained.shape[0], test_fraction, "retrained"),
    )
    entropy = seed_entropy(seed)
    unlearned, retrained = _featurise(unlearned, features), _featurise(retrained, features)

    def tasks():
        for r in range(repeats):
            orders = model_orders(entropy, r, fixed_first, (unlearned.shape[0], retrained.shape[0]))
            for c in chosen:
                rng = _class_rng(entropy, r, c)
                sets = _attack_sets(unlearned, retrained, images[c], orders, n_tests, counts[c],
                                    replace, disjoint_images, test_fraction, sampling, rng)
                yield sets, int(rng.integers(2**31 - 1))

    results = []
    # joblib's multiprocessing-style backends (Ray's among them) refuse generators: lists there
    streamed = n_jobs == 1 or getattr(get_active_backend()[0], "supports_return_generator", True)
    for row in Parallel(n_jobs=n_jobs, return_as="generator" if streamed else "list")(
        delayed(_run_attack)(sets, classifiers, clf_seed) for sets, clf_seed in tasks()
    ):
        results.append(row)
        if progress is not None:
            progress()
    advantages = np.asarray(results).reshape(repeats, len(chosen), len(classifiers))
    return AttackResult(advantages, chosen, tuple(classifiers), forget_t, fixed_first, interval,
                        level, entropy, features)


def floor_advantage(
    retrained: np.ndarray,
    retrained2: np.ndarray,
    labels: np.ndarray,
    forget: int | Iterable[int],
    *,
    pooled: bool = True,
    repeats: int = 1,
    seed: int | np.random.Generator = 0,
    progress: Callable[[], None] | None = None,
    **kwargs: Any,
) -> AttackResult:
    """The floor: what the attack finds between two retrained populations, where there is
    nothing to find, on the same protocol and keywords as `attack_advantage`.

    pooled=True (the default) is a permutation null: every repeat pools both populations, deals
    them at random into two groups of the original sizes and attacks one group (labelled 1, in
    the unlearned models' place) against the other. The groups are exchangeable, so the floor's
    expectation is exactly 0, and its spread over repeats covers which models happen to form a
    population as well as the attack's split and images: the population-level noise that the
    repeats of `attack_advantage`, which keep both populations fixed, do not show.
    pooled=False attacks `retrained2` against `retrained` as given (one draw of that noise).
    """
    if not pooled:
        return attack_advantage(retrained2, retrained, labels, forget, repeats=repeats, seed=seed,
                                progress=progress, **kwargs)
    first = check_population("retrained", retrained)
    second = check_population("retrained2", retrained2)
    check_same_images(second, first, ("retrained2", "retrained"))
    repeats = check_positive_int(repeats, "repeats")
    kwargs.pop("fixed_first", None)  # each repeat deals new populations: no fixed split to keep
    entropy = seed_entropy(seed)
    pool = np.concatenate([second, first])
    runs = []
    for r in range(repeats):
        deal = np.random.default_rng([entropy, 2, r, 0]).permutation(len(pool))
        attack_seed = int(np.random.SeedSequence([entropy, 3, r, 0]).generate_state(1, np.uint64)[0] >> 1)
        runs.append(attack_advantage(pool[deal[: len(second)]], pool[deal[len(second):]], labels,
                                     forget, repeats=1, seed=attack_seed, fixed_first=False,
                                     progress=progress, **kwargs))
    head = runs[0]
    return AttackResult(np.concatenate([run.advantages for run in runs]), head.classes,
                        head.classifiers, head.forget, False, head.interval, head.level, entropy,
                        head.features)


def difference(first: AttackResult, second: AttackResult) -> Summary:
    """Paired per-repeat difference first - second, summarised like `AttackResult.summary`.

    Both must come from the same seed, repeats and classes (hence the same model splits and
    images when the populations have equal shapes), so the split's noise largely cancels.
    """
    same = (first.seed == second.seed and first.classes == second.classes
            and first.classifiers == second.classifiers and first.forget == second.forget
            and first.advantages.shape == second.advantages.shape
            and first.fixed_first == second.fixed_first and first.features == second.features)
    if not same:
        raise LinfiltError(
            "difference needs two attacks run with the same seed, repeats, classes, classifiers, "
            "features and forget set; rerun one of them with the other's settings"
        )
    return AttackResult(first.advantages - second.advantages, first.classes, first.classifiers,
                        first.forget, first.fixed_first, first.interval, first.level,
                        first.seed, first.features).summary()


# ----------------------------------------------------------------------------- accuracy, labels


@dataclass(frozen=True)
class AccuracyLoss:
    """Per model: accuracy (fraction) and mean softmax cross-entropy on retained-class images."""

    accuracy: np.ndarray
    loss: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation over models (ddof=0, numpy's default)."""
        return {"accuracy_mean": float(self.accuracy.mean()), "accuracy_std": float(self.accuracy.std()),
                "loss_mean": float(self.loss.mean()), "loss_std": float(self.loss.std())}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def retained_accuracy_loss(
    logits: np.ndarray, labels: np.ndarray, num_classes: int, forget: int | Iterable[int],
    *, images: str = "retained",
) -> AccuracyLoss:
    """Tables 8 and 10: accuracy and cross-entropy on the test images of retained classes only.

    logits (M, n, k'): k' = k - |forget| for unlearned or retrained models (softmax over the
    remaining logits), or k' = k for the model before unlearning (softmax over all k, so
    predicting a forgotten class counts as an error).
    images="all" scores every test image instead, as the authors' scripts scored the model before
    unlearning (the paper's "before unlearning" row); it needs all k outputs.
    """
    logits = check_population("logits", logits)
    labels = check_image_labels(labels, logits.shape[1])
    forget_t = check_forget_ids(forget)
    outputs = _output_classes(logits.shape[2], num_classes, forget_t)
    if images not in ("retained", "all"):
        raise LinfiltError(f"images must be 'retained' or 'all', got {images!r}")
    if images == "all" and outputs.size != num_classes:
        raise LinfiltError("images='all' needs logits with all k outputs (a model before unlearning): "
                           "a model without the forgotten classes cannot be right on their images")
    keep = (np.arange(labels.size) if images == "all"
            else np.flatnonzero(~np.isin(labels, forget_t)))
    if keep.size == 0:
        raise LinfiltError("no test image of a retained class; check labels and forget")
    position = np.full(max(num_classes, int(labels.max()) + 1), -1)
    position[outputs] = np.arange(outputs.size)
    target = position[labels[keep]]
    if (target < 0).any():
        raise LinfiltError(f"labels hold class ids outside 0..{num_classes - 1}; check num_classes")
    logp = _log_softmax(logits[:, keep, :])
    loss = -np.take_along_axis(logp, target[None, :, None], axis=2)[..., 0].mean(axis=1)
    accuracy = (logp.argmax(axis=2) == target[None, :]).mean(axis=1)
    return AccuracyLoss(accuracy, loss)


@dataclass(frozen=True)
class LabelsChanged:
    """Table 6, per model: share of predictions differing from the naive method's, over all test
    images, over images of the forgotten classes, and over retained-class images that naive
    predicts correctly (NaN for a model with no such image)."""

    all: np.ndarray
    unlearned: np.ndarray
    correct: np.ndarray

    def summary(self) -> dict[str, float]:
        """Means over models (fractions; the paper prints percent)."""
        return {"all": float(self.all.mean()), "unlearned": float(self.unlearned.mean()),
                "correct": float(np.nanmean(self.correct))}


def labels_changed(
    logits: np.ndarray,
    naive_logits: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    forget: int | Iterable[int],
) -> LabelsChanged:
    """Table 6 for one method against naive; model i of both comes from the same full model."""
    logits = check_population("logits", logits)
    naive_logits = check_population("naive_logits", naive_logits)
    if logits.shape != naive_logits.shape:
        raise LinfiltError(
            f"logits {logits.shape} and naive_logits {naive_logits.shape} must have the same shape: "
            "the same full models, filtered by two methods"
        )
    labels = check_image_labels(labels, logits.shape[1])
    forget_t = check_forget_ids(forget)
    outputs = _output_classes(logits.shape[2], num_classes, forget_t)
    pred = logits.argmax(axis=2)
    naive = naive_logits.argmax(axis=2)
    changed = pred != naive
    in_forget = np.isin(labels, forget_t)
    if not in_forget.any():
        raise LinfiltError(f"no test image of the forgotten classes {list(forget_t)}; check labels")
    correct = (outputs[naive] == labels[None, :]) & ~in_forget[None, :]
    n_correct = correct.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_correct = np.where(n_correct > 0, (changed & correct).sum(axis=1) / n_correct, np.nan)
    return LabelsChanged(changed.mean(axis=1), changed[:, in_forget].mean(axis=1), share_correct)


@dataclass(frozen=True)
class PredictedDistribution:
    """Figure 3, per model over the outputs `classes` (original ids): `probabilities` is the mean
    softmax over the class' images (the paper's "probability distribution predicted"),
    `shares` the fraction of those images whose argmax is each output."""

    classes: np.ndarray
    probabilities: np.ndarray
    shares: np.ndarray

    def summary(self) -> dict[str, np.ndarray]:
        """Mean and standard deviation over models (ddof=0) of both, per output."""
        return {"probabilities_mean": self.probabilities.mean(axis=0),
                "probabilities_std": self.probabilities.std(axis=0),
                "shares_mean": self.shares.mean(axis=0), "shares_std": self.shares.std(axis=0)}


def predicted_distribution(
    logits: np.ndarray, labels: np.ndarray, cls: int, num_classes: int, forget: int | Iterable[int]
) -> PredictedDistribution:
    """Figure 3: what the models predict for the test images of class `cls` (the forgotten one)."""
    logits = check_population("logits", logits)
    labels = check_image_labels(labels, logits.shape[1])
    outputs = _output_classes(logits.shape[2], num_classes, check_forget_ids(forget))
    idx = _class_images(labels, check_class_id(cls, "cls"))
    part = logits[:, idx, :]
    probabilities = np.exp(_log_softmax(part)).mean(axis=1)
    pred = part.argmax(axis=2)
    shares = (pred[:, :, None] == np.arange(part.shape[2])).mean(axis=1)
    return PredictedDistribution(outputs, probabilities, shares)
