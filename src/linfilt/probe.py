"""White-box tests of a last-layer unlearning method: what an attacker with the weights sees.

A last-layer method (the filtrations, the transfer head) changes only the head; the feature
extractor is still the original model's, which was trained on the forgotten classes. Two tests:

- The probe (`probe_accuracy`, `probe_audit`): per model, a linear probe (standardised logistic
  regression) is trained on the penultimate features of part of the test images with their
  ORIGINAL labels, forgotten classes included, and scored on the rest. If the forgotten class is
  still linearly decodable from an unlearned model's features, its probe accuracy on that class
  stays above a retrained model's, whatever the head outputs.
- The head (`head_features`, `head_attack`): the attack classifiers tell unlearned heads from
  retrained ones by features of [W | b] that do not depend on how a body happens to lay out its
  features (`head_features` says which).

Both end in `model_attack`: the audit's classifiers on one feature vector per model, with a
model-level split (a `test_fraction` of each population's models are the attack's test models,
re-drawn every repeat), the advantage 2 (balanced accuracy - 1/2) and intervals over repeats.
The floor of each test is the same function with a second retrained population in the
unlearned place.

Randomness, as in `linfilt.audit`: one integer seed (or a Generator, from which one is drawn).
The probe's image split comes from the stream keyed (seed, 7), the same for every model and
both populations, so all probes are scored on the same images; repeat r's model split uses the
audit's model orders (seed, 0, r) and its classifiers the stream (seed, 6, r). n_jobs never
changes a number.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from linfilt.audit import (DEFAULT_CLASSIFIERS, ClassifierFactory, Estimate, check_forget_ids, check_image_labels,
                           classifier_advantages, estimate, model_orders, seed_entropy, split_sizes)
from linfilt.errors import LinfiltError
from linfilt.validation import check_array, check_float, check_n_jobs, check_optional_positive_int, check_positive_int

__all__ = ["ModelAttack", "ProbeAccuracy", "ProbeAudit", "head_attack", "head_features", "model_attack",
           "probe_accuracy", "probe_audit"]


# ----------------------------------------------------------------------------- the model-level attack


@dataclass(frozen=True)
class ModelAttack:
    """`advantages[r, j]`: repeat r, classifier `classifiers[j]`; `features` names what described
    each model."""

    advantages: np.ndarray
    classifiers: tuple[str, ...]
    features: str
    interval: str
    level: float
    seed: int

    def summary(self) -> dict[str, Estimate]:
        """Estimates over repeats, per classifier."""
        return {name: estimate(self.advantages[:, j], interval=self.interval, level=self.level)
                for j, name in enumerate(self.classifiers)}

    def to_json(self) -> dict[str, Any]:
        return {"advantages": self.advantages.tolist(), "classifiers": list(self.classifiers),
                "features": self.features, "interval": self.interval, "level": self.level,
                "seed": self.seed}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelAttack:
        """The inverse of `to_json`; LinfiltError if `d` is not one."""
        try:
            result = cls(np.asarray(d["advantages"], dtype=np.float64), tuple(str(c) for c in d["classifiers"]),
                         str(d["features"]), str(d["interval"]), float(d["level"]), int(d["seed"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinfiltError(f"not a model-level attack result: {exc!r}") from None
        if result.advantages.ndim != 2 or result.advantages.shape[1] != len(result.classifiers):
            raise LinfiltError(f"not a model-level attack result: advantages shaped "
                               f"{result.advantages.shape}, not (repeats, {len(result.classifiers)})")
        return result


def _check_attack(
    sizes: tuple[int, int], classifiers: Mapping[str, ClassifierFactory] | None, repeats: int,
    test_fraction: float, interval: str, level: float,
) -> tuple[dict[str, ClassifierFactory], int, tuple[int, int]]:
    classifiers = dict(DEFAULT_CLASSIFIERS if classifiers is None else classifiers)
    if not classifiers:
        raise LinfiltError("classifiers is empty; give at least one name -> factory(seed)")
    repeats = check_positive_int(repeats, "repeats")
    test_fraction = check_float(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    n_tests = (split_sizes(sizes[0], test_fraction, "unlearned"), split_sizes(sizes[1], test_fraction, "retrained"))
    estimate(np.zeros(1), interval=interval, level=level)  # validates interval and level up front
    return classifiers, repeats, n_tests


def _run_model_attack(
    unlearned: np.ndarray, retrained: np.ndarray, classifiers: dict[str, ClassifierFactory], repeats: int,
    n_tests: tuple[int, int], entropy: int,
) -> np.ndarray:
    out = np.empty((repeats, len(classifiers)))
    for r in range(repeats):
        order_u, order_r = model_orders(entropy, r, False, (len(unlearned), len(retrained)))
        train = np.concatenate([unlearned[order_u[n_tests[0]:]], retrained[order_r[n_tests[1]:]]])
        test = np.concatenate([unlearned[order_u[:n_tests[0]]], retrained[order_r[:n_tests[1]]]])
        y_train = np.r_[np.ones(len(unlearned) - n_tests[0], np.int64), np.zeros(len(retrained) - n_tests[1], np.int64)]
        y_test = np.r_[np.ones(n_tests[0], np.int64), np.zeros(n_tests[1], np.int64)]
        clf_seed = int(np.random.default_rng([entropy, 6, r, 0]).integers(2**31 - 1))
        out[r] = classifier_advantages(train, y_train, test, y_test, classifiers, clf_seed)
    return out


def _per_model(name: str, x: Any) -> np.ndarray:
    arr = check_array(x, name, ndim=2)
    if 0 in arr.shape:
        raise LinfiltError(f"{name} is empty (shape {arr.shape}); it needs models and features")
    return arr


def model_attack(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    *,
    classifiers: Mapping[str, ClassifierFactory] | None = None,
    repeats: int = 10,
    seed: int | np.random.Generator = 0,
    test_fraction: float = 0.3,
    interval: str = "percentile",
    level: float = 0.95,
    features: str = "per-model features",
) -> ModelAttack:
    """The audit's attack on one feature vector per model: unlearned (M1, f) labelled 1,
    retrained (M2, f) labelled 0; per repeat the classifiers (default the audit's
    `DEFAULT_CLASSIFIERS`) train on all but a `test_fraction` of each population's models
    (rounded half up) and are scored on those. `features` names what the vectors are."""
    unlearned, retrained = _per_model("unlearned", unlearned), _per_model("retrained", retrained)
    if unlearned.shape[1] != retrained.shape[1]:
        raise LinfiltError(f"unlearned {unlearned.shape} and retrained {retrained.shape} must describe "
                           "every model by the same number of features")
    classifiers, repeats, n_tests = _check_attack((len(unlearned), len(retrained)), classifiers, repeats,
                                                  test_fraction, interval, level)
    entropy = seed_entropy(seed)
    return ModelAttack(_run_model_attack(unlearned, retrained, classifiers, repeats, n_tests, entropy),
                       tuple(classifiers), str(features), interval, level, entropy)


# ----------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class ProbeAccuracy:
    """Per model: the probe's accuracy on the held-out images of the forgotten classes and of the
    retained classes (NaN when there are none)."""

    forgotten: np.ndarray
    retained: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {"forgotten": self.forgotten.tolist(), "retained": self.retained.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProbeAccuracy:
        return cls(np.asarray(d["forgotten"], dtype=np.float64), np.asarray(d["retained"], dtype=np.float64))


def _features(name: str, x: Any, n_images: int | None = None) -> np.ndarray:
    """Penultimate features (models, test_images, d): kept in their dtype (they can be large)."""
    arr = check_array(x, name, ndim=3, dtype=None)
    if 0 in arr.shape:
        raise LinfiltError(f"{name} is empty (shape {arr.shape}); it needs models, images and features")
    if n_images is not None and arr.shape[1] != n_images:
        raise LinfiltError(f"{name} has {arr.shape[1]} test images, the other features {n_images}: "
                           "both must be features of the same test images")
    return arr


def _probe_split(
    labels: np.ndarray, forget: tuple[int, ...], train_fraction: Any, max_images: Any, entropy: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) image indices: per class a random `train_fraction` of its images (rounded half
    up) for training and the rest held out, from at most `max_images` images in the classes'
    proportions."""
    train_fraction = check_float(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    max_images = check_optional_positive_int(max_images, "max_images")
    missing = [c for c in forget if not np.any(labels == c)]
    if missing:
        raise LinfiltError(f"forgotten class(es) {missing} have no test images; the probe is scored on them")
    scale = 1.0 if max_images is None else min(1.0, max_images / labels.size)
    rng = np.random.default_rng([entropy, 7, 0, 0])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        keep = int(np.floor(idx.size * scale + 0.5))
        n_train = int(np.floor(keep * train_fraction + 0.5))
        train.append(idx[:n_train])
        test.append(idx[n_train:keep])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    if np.unique(labels[train]).size < 2 or not np.isin(labels[test], forget).any():
        raise LinfiltError(
            f"{train.size} training and {test.size} held-out images leave the probe without two classes "
            "to learn or without a held-out image of a forgotten class; raise max_images or change "
            "train_fraction"
        )
    return train, test


def _probe_one(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    # One BLAS thread: models run in parallel (n_jobs), and a multi-threaded BLAS on one probe's
    # small matrices is many times slower on a busy machine.
    with threadpool_limits(1):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        return probe.fit(x_train.astype(np.float64), y_train).predict(x_test.astype(np.float64))


def _probe_accuracy(
    features: np.ndarray, labels: np.ndarray, forget: tuple[int, ...], split: tuple[np.ndarray, np.ndarray],
    n_jobs: int,
) -> ProbeAccuracy:
    train, test = split
    predictions = Parallel(n_jobs=n_jobs)(
        delayed(_probe_one)(model[train], labels[train], model[test]) for model in features
    )
    hit = np.asarray(predictions) == labels[test][None, :]
    in_forget = np.isin(labels[test], forget)
    retained = hit[:, ~in_forget].mean(axis=1) if (~in_forget).any() else np.full(len(hit), np.nan)
    return ProbeAccuracy(hit[:, in_forget].mean(axis=1), retained)


def probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    forget: int | Iterable[int],
    *,
    seed: int | np.random.Generator = 0,
    train_fraction: float = 0.5,
    max_images: int | None = 5000,
    n_jobs: int = 1,
) -> ProbeAccuracy:
    """Per model, a linear probe on its penultimate features (M, n, d) of the test images, trained
    with their original labels (n,) on a `train_fraction` of the images of every class and scored
    on the rest: accuracy on the forgotten classes' held-out images and on the retained ones.

    At most `max_images` images are used (a random subset in the classes' proportions; None: all).
    Every model is probed on the same images. n_jobs fits models in parallel.
    """
    features = _features("features", features)
    labels = check_image_labels(labels, features.shape[1])
    forget_t = check_forget_ids(forget)
    n_jobs = check_n_jobs(n_jobs)
    split = _probe_split(labels, forget_t, train_fraction, max_images, seed_entropy(seed))
    return _probe_accuracy(features, labels, forget_t, split, n_jobs)


@dataclass(frozen=True)
class ProbeAudit:
    """Probe accuracies per model of both populations, and the model-level attack on the
    forgotten-class probe accuracy (`attack`)."""

    unlearned: ProbeAccuracy
    retrained: ProbeAccuracy
    attack: ModelAttack

    def accuracy(self) -> dict[str, Estimate]:
        """Forgotten-class probe accuracy of each population over its models: the mean and, as
        `linfilt.audit.estimate` computes it from the per-model values, the central range of the
        models ("percentile") or an interval for the mean ("t")."""
        return {name: estimate(pop.forgotten, interval=self.attack.interval, level=self.attack.level)
                for name, pop in (("unlearned", self.unlearned), ("retrained", self.retrained))}

    def to_json(self) -> dict[str, Any]:
        return {"unlearned": self.unlearned.to_json(), "retrained": self.retrained.to_json(),
                "attack": self.attack.to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProbeAudit:
        """The inverse of `to_json`; LinfiltError if `d` is not one."""
        try:
            return cls(ProbeAccuracy.from_json(d["unlearned"]), ProbeAccuracy.from_json(d["retrained"]),
                       ModelAttack.from_json(d["attack"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinfiltError(f"not a probe audit result: {exc!r}") from None


def probe_audit(
    unlearned_features: np.ndarray,
    retrained_features: np.ndarray,
    labels: np.ndarray,
    forget: int | Iterable[int],
    *,
    seed: int | np.random.Generator = 0,
    train_fraction: float = 0.5,
    max_images: int | None = 5000,
    classifiers: Mapping[str, ClassifierFactory] | None = None,
    repeats: int = 10,
    test_fraction: float = 0.3,
    interval: str = "percentile",
    level: float = 0.95,
    n_jobs: int = 1,
) -> ProbeAudit:
    """`probe_accuracy` of both populations (features (M1, n, d1) and (M2, n, d2) of the same test
    images, probed on the same split), and how well the classifiers tell the populations apart
    from one number per model, its forgotten-class probe accuracy (`model_attack`).

    Why an advantage with a model-level split rather than an AUC of the raw accuracies: it is the
    audit's own measure and scale (0: indistinguishable), with the same classifiers and floor.
    The floor: `probe_audit(retrained2_features, retrained_features, ...)` with the same seed.
    """
    unlearned_features = _features("unlearned_features", unlearned_features)
    retrained_features = _features("retrained_features", retrained_features, unlearned_features.shape[1])
    labels = check_image_labels(labels, unlearned_features.shape[1])
    forget_t = check_forget_ids(forget)
    n_jobs = check_n_jobs(n_jobs)
    entropy = seed_entropy(seed)
    split = _probe_split(labels, forget_t, train_fraction, max_images, entropy)
    classifiers, repeats, n_tests = _check_attack((len(unlearned_features), len(retrained_features)),
                                                  classifiers, repeats, test_fraction, interval, level)
    unlearned = _probe_accuracy(unlearned_features, labels, forget_t, split, n_jobs)
    retrained = _probe_accuracy(retrained_features, labels, forget_t, split, n_jobs)
    advantages = _run_model_attack(unlearned.forgotten[:, None], retrained.forgotten[:, None], classifiers,
                                   repeats, n_tests, entropy)
    return ProbeAudit(unlearned, retrained, ModelAttack(advantages, tuple(classifiers),
                                                        "forgotten-class probe accuracy", interval, level,
                                                        entropy))


# ----------------------------------------------------------------------------- the head


def head_features(heads: Any, name: str = "heads") -> np.ndarray:
    """(M, k'(k'+1)/2 + k') features of heads (M, k', d+1) = [W | b], rows in output order.

    Softmax does not change when one vector is added to every row of W and one number to every
    bias, so W and b are first centred over the outputs. Then: the upper triangle (diagonal
    included) of W Wᵀ, i.e. the rows' squared norms and their pairwise inner products, and the
    biases. W Wᵀ is unchanged by any rotation or permutation of the penultimate units (W -> W Q,
    Q orthogonal), the freedom that separately trained bodies have in laying out their
    features, and with b it determines the head up to exactly that freedom. Rows stay in output
    order, which is the same class in every model; sorting would only discard which row is
    which. It is not invariant to rescaling single units, and d may differ between models.
    """
    arr = check_array(heads, name, ndim=3)
    if arr.shape[0] == 0 or arr.shape[1] < 2 or arr.shape[2] < 2:
        raise LinfiltError(f"{name} must be heads shaped (models, outputs >= 2, features + 1 >= 2) "
                           f"holding [W | b], got shape {arr.shape}")
    weights = arr[..., :-1] - arr[..., :-1].mean(axis=1, keepdims=True)
    biases = arr[..., -1] - arr[..., -1].mean(axis=1, keepdims=True)
    upper = np.triu_indices(arr.shape[1])
    gram = np.einsum("mid,mjd->mij", weights, weights)
    return np.concatenate([gram[:, upper[0], upper[1]], biases], axis=1)


def head_attack(
    unlearned_heads: np.ndarray,
    retrained_heads: np.ndarray,
    *,
    classifiers: Mapping[str, ClassifierFactory] | None = None,
    repeats: int = 10,
    seed: int | np.random.Generator = 0,
    test_fraction: float = 0.3,
    interval: str = "percentile",
    level: float = 0.95,
) -> ModelAttack:
    """`model_attack` on `head_features` of unlearned (M1, k', d1+1) and retrained (M2, k', d2+1)
    heads [W | b], both with the same k' outputs in the same order.
    The floor: `head_attack(retrained2_heads, retrained_heads, ...)` with the same seed."""
    unlearned = head_features(unlearned_heads, "unlearned_heads")
    retrained = head_features(retrained_heads, "retrained_heads")
    if unlearned.shape[1] != retrained.shape[1]:
        raise LinfiltError(f"unlearned_heads {np.shape(unlearned_heads)} and retrained_heads "
                           f"{np.shape(retrained_heads)} must have the same number of outputs")
    return model_attack(unlearned, retrained, classifiers=classifiers, repeats=repeats, seed=seed,
                        test_fraction=test_fraction, interval=interval, level=level,
                        features="head gram and biases")
