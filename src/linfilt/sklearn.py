"""Linear filtration for scikit-learn classifiers: the final linear map becomes F times itself.

Supported: linear classifiers with `coef_` (k, p) and `intercept_` (LogisticRegression,
SGDClassifier, RidgeClassifier, LinearSVC, Perceptron, ...) and MLPClassifier (its output layer
`coefs_[-1]`, `intercepts_[-1]`). Their "logits" are the scores `predict` takes the argmax of:
`decision_function` for linear classifiers, the output layer before its softmax for an MLP
(see `logits`).

One-vs-rest models (SGDClassifier, LinearSVC, Perceptron; LogisticRegression with
multi_class="ovr" in older scikit-learn) are accepted too: filtration is linear in the scores,
so the new model's scores are exactly F times the old ones and its predictions their argmax.
The paper motivates the choice of F with softmax logits, though; with OvR scores `predict_proba`
(where it exists) is scikit-learn's one-vs-rest normalisation of the filtered scores.

The filtered estimator carries a `linfilt.filtration.FiltrationRecord` as `linfilt_filtration_`,
the record the PyTorch adapter and model files keep: `classes[i]` is the original id of output i
(its position in the `classes_` of the estimator before any filtration) and each step names the
labels it forgot (`forgot_names`, as text). A later `unlearn` of the result extends it.
"""
from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from linfilt.errors import LinfiltError
from linfilt.filtration import RECORD_ATTR as MODEL_RECORD_ATTR
from linfilt.filtration import (Filtration, FiltrationRecord, absorb, check_class_counts, check_method_rng,
                                compute_filtration, mean_logits)
from linfilt.validation import check_bool, check_optional_positive_int, is_int

# Where a filtered estimator keeps its FiltrationRecord (scikit-learn's "_" for fitted attributes).
RECORD_ATTR = MODEL_RECORD_ATTR + "_"
# decision_function must equal X coef_^T + intercept_ to this share of the scores' largest magnitude.
LINEAR_TOL = 1e-6

# MLPClassifier's hidden activations (its `activation` parameter), applied out of place.
_HIDDEN = {
    "identity": lambda a: a,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
}


def _wrapper_advice(estimator: Any) -> str | None:
    """What to do instead for an estimator that wraps what linfilt filters, or None."""
    if type(estimator).__module__.split(".")[0] == "skorch":
        return ("it is a skorch net: unlearn its PyTorch module, net.module_ = linfilt.unlearn(net.module_, "
                "forget, (X, y), keep_outputs=True); keep_outputs keeps the outputs (masking the forgotten "
                "ones), so net.predict still returns class ids")
    if isinstance(estimator, Pipeline):
        return ("unlearn its last step on X transformed by the others: new = linfilt.sklearn.unlearn("
                "pipe[-1], forget, pipe[:-1].transform(X), y), then put it back as the last step")
    if isinstance(estimator, OneVsRestClassifier):
        return ("its classes are scored by separate binary estimators (estimators_), not by one linear map; "
                "use a classifier that scores all classes with coef_ (LogisticRegression, LinearSVC, "
                "SGDClassifier are one-vs-rest inside)")
    if isinstance(estimator, CalibratedClassifierCV):
        return ("its predictions average calibrated copies of the estimator; unlearn the uncalibrated "
                "estimator, then calibrate the result again")
    return None


def _check_supported(estimator: Any) -> None:
    """Raise a LinfiltError saying why `estimator` cannot be filtered, if it cannot."""
    name = type(estimator).__name__
    advice = _wrapper_advice(estimator)
    if advice is not None:
        raise LinfiltError(f"{name} is not supported by linfilt.sklearn.unlearn: {advice}")
    unsupported = (
        f"{name} is not supported: linfilt.sklearn handles linear classifiers whose decision_function is "
        "X coef_^T + intercept_ (LogisticRegression, SGDClassifier, RidgeClassifier, LinearSVC, ...) and "
        "MLPClassifier; for a Pipeline, unlearn its last step on X transformed by the others"
    )
    mlp = isinstance(estimator, MLPClassifier)
    if not is_classifier(estimator) or not (mlp or hasattr(estimator, "decision_function")):
        raise LinfiltError(unsupported)
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise LinfiltError(f"{name} is not fitted: call fit(X, y) before unlearning") from None
    if not mlp and not (hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")):
        raise LinfiltError(unsupported)
    # the binarizer that MLPClassifier and RidgeClassifier keep knows the kind of targets fitted
    binarizer = getattr(estimator, "_label_binarizer", None)
    if getattr(binarizer, "y_type_", "").startswith("multilabel"):
        raise LinfiltError(f"{name} was fitted on multilabel targets; class-wide filtration needs "
                           "one label per sample (multiclass)")
    k = len(estimator.classes_)
    if k <= 2:
        raise LinfiltError(
            f"{name} has {k} classes: scikit-learn stores a two-class model as a single row of scores, "
            "and linear filtration needs at least 3 classes (at least 2 left after forgetting)"
        )
    if mlp:
        width = estimator.coefs_[-1].shape[1]
        if estimator.out_activation_ != "softmax" or width != k:
            raise LinfiltError(f"{name} has output activation {estimator.out_activation_!r} and {width} "
                               f"outputs for {k} classes; only softmax multiclass MLPs are supported")
    elif np.ndim(estimator.coef_) != 2 or estimator.coef_.shape[0] != k:
        raise LinfiltError(f"{unsupported} ({name}.coef_ has shape {np.shape(estimator.coef_)}, not one row "
                           f"per class ({k}, n_features))")


def _num_samples(X: Any, estimator: Any) -> int:
    """Rows of X, a 2-D array (or sparse matrix, DataFrame, list of rows) with the features the
    estimator was fitted on."""
    shape = getattr(X, "shape", None)
    if shape is None and isinstance(X, (list, tuple)):
        with contextlib.suppress(ValueError):  # ragged rows have no shape
            shape = np.shape(X)
    if shape is None or len(shape) != 2:
        raise LinfiltError(f"X must be a 2-D array of samples x features, got "
                           f"{type(X).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and shape[1] != expected:
        raise LinfiltError(f"X has {shape[1]} features but {type(estimator).__name__} was fitted on {expected}")
    return int(shape[0])


def _check_linear_scores(estimator: Any, X: Any) -> None:
    """Refuse a model whose scores are not X coef_^T + intercept_ (the map filtration rewrites; a
    kernel SVC's coef_ is not), checked on the first rows of X before the real work."""
    if isinstance(estimator, MLPClassifier):
        return
    rows = check_array(X[:16], accept_sparse=["csr", "csc"])
    coef = estimator.coef_
    coef = coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef)  # after sparsify()
    want = np.asarray(rows @ coef.T) + estimator.intercept_
    got = np.asarray(estimator.decision_function(X[:16]))
    if np.abs(got - want).max() > LINEAR_TOL * max(np.abs(want).max(), np.finfo(float).tiny):
        raise LinfiltError(f"{type(estimator).__name__} is not supported: its decision_function is not "
                           "X coef_^T + intercept_, so filtering coef_ would not filter its scores")


def logits(estimator: Any, X: Any) -> np.ndarray:
    """The scores whose argmax `estimator.predict` returns, (n, n_outputs).

    Linear classifiers: `decision_function(X)`. MLPClassifier: the output layer's values before
    its activation (softmax for multiclass), i.e. the logits. For a two-class model both are one
    column per sample, as scikit-learn stores it.
    """
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise LinfiltError(f"{type(estimator).__name__} is not fitted: call fit(X, y) first") from None
    if not isinstance(estimator, MLPClassifier):
        return np.asarray(estimator.decision_function(X))
    act = check_array(X, accept_sparse=["csr", "csc"])
    if act.shape[1] != estimator.n_features_in_:
        raise LinfiltError(f"X has {act.shape[1]} features but the MLP expects "
                           f"{estimator.n_features_in_}")
    hidden = _HIDDEN[estimator.activation]
    last = len(estimator.coefs_) - 1
    for i, (w, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        act = np.asarray(act @ w) + b  # np.asarray: a sparse X times a dense w may stay a matrix
        if i < last:
            act = hidden(act)
    return act


def _positions(classes: np.ndarray, forget: Any) -> list[int]:
    """Indices in classes_ of the labels in `forget` (one label or several, each once).

    A label must have the kind of classes_: with integer classes, True, 3.0 and "3" are refused
    rather than taken for 1 or 3."""
    # not np.ndim(forget) == 0: numpy makes a set one 0-d object, so {3, 5} would be one label
    single = isinstance(forget, (str, bytes)) or not isinstance(forget, Iterable) or getattr(forget, "ndim", 1) == 0
    labels = [forget] if single else list(forget)
    if not labels:
        raise LinfiltError("forget is empty: name at least one class label")
    for f in labels:
        if not _same_kind(f, classes):
            raise LinfiltError(f"forget label {f!r} ({type(f).__name__}) is not of the kind of the "
                               f"estimator's classes_ ({classes.dtype}): {classes.tolist()}")
    index = {c: i for i, c in enumerate(classes.tolist())}
    unknown = [f for f in labels if _key(f) not in index]
    if unknown:
        raise LinfiltError(f"forget names labels {unknown} that are not among the estimator's classes_ "
                           f"{classes.tolist()}")
    positions = [index[_key(f)] for f in labels]
    if len(set(positions)) != len(positions):
        raise LinfiltError(f"forget repeats labels: {labels}; name each once")
    return positions


def _same_kind(label: Any, classes: np.ndarray) -> bool:
    if isinstance(label, (bool, np.bool_)):
        return classes.dtype == np.bool_
    if np.issubdtype(classes.dtype, np.integer):
        return is_int(label)
    if np.issubdtype(classes.dtype, np.floating):
        return isinstance(label, (numbers.Real, np.number))
    return isinstance(label, (str, bytes, np.str_)) or classes.dtype == object


def _key(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _encode(classes: np.ndarray, y: Any) -> np.ndarray:
    """y's labels as indices into classes_; every label must be one of them."""
    index = {c: i for i, c in enumerate(classes.tolist())}
    values = np.asarray(y)
    if values.ndim != 1:
        raise LinfiltError(f"y must be one label per sample, got shape {values.shape}")
    codes = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int64)
    if np.any(codes < 0):
        unknown = sorted({str(v) for v, c in zip(values.tolist(), codes) if c < 0})
        raise LinfiltError(f"y holds labels {unknown[:10]} that are not among the estimator's classes_; "
                           "drop those samples (e.g. classes forgotten earlier)")
    return codes


def _record(estimator: Any, k: int) -> FiltrationRecord:
    """The estimator's record of earlier filtrations, or that of an unfiltered one (ids 0..k-1)."""
    record = getattr(estimator, RECORD_ATTR, None)
    if not isinstance(record, FiltrationRecord):
        return FiltrationRecord(tuple(range(k)))
    if len(record.classes) != k:
        raise LinfiltError(f"the estimator's {RECORD_ATTR} lists {len(record.classes)} classes but it has {k} "
                           f"(refitted after unlearning?); delete the stale attribute `{RECORD_ATTR}`")
    return record


def unlearn(estimator: Any, forget: Any, X: Any, y: Any, *, method: str = "normalization",
            per_class: int | None = None, rng: np.random.Generator | int | None = None,
            allow_pinv: bool = False) -> Any:
    """A copy of `estimator` that has forgotten the classes `forget`, by linear filtration.

    `forget` names classes by their labels in `estimator.classes_` (one label or an iterable;
    strings work). A is estimated from the estimator's scores on (X, y); `per_class=s` uses the
    first s samples of each class (a random s with `rng`). `rng` also seeds method
    "randomization". The original estimator is left untouched. Options after y are keyword-only.

    The result's `classes_` lack the forgotten labels and its scores (`logits`) equal F times the
    original's (plus a constant g when the scores sum to zero for every sample, as multinomial
    LogisticRegression's do: A is then singular and the filtration affine, see linfilt.filtration).
    When exactly two classes are left it is stored as scikit-learn stores any
    two-class model (one row of coefficients, the difference of the two filtered rows; an MLP's
    single logistic output), so `predict` and `predict_proba` behave as usual and its score is
    the second filtered logit minus the first. Its `linfilt_filtration_` records the filtration
    (see the module docstring). The result is for prediction: its training state
    (solver/optimizer memory) still describes the original classes, so do not `partial_fit` or
    warm-start it; `fit` retrains from scratch.
    """
    check_method_rng(method, rng)
    check_bool(allow_pinv, "allow_pinv")
    per_class = check_optional_positive_int(per_class, "per_class")
    _check_supported(estimator)
    classes = np.asarray(estimator.classes_)
    record = _record(estimator, len(classes))
    positions = _positions(classes, forget)
    codes = _encode(classes, y)
    n_x = _num_samples(X, estimator)
    if n_x != len(codes):
        raise LinfiltError(f"X has {n_x} samples but y has {len(codes)} labels")
    check_class_counts(codes, len(classes), per_class, names=classes.tolist())
    _check_linear_scores(estimator, X)
    scores = logits(estimator, X)
    # rng as given (an integer seeds the sample choice and z afresh each), as linfilt always did here
    A = mean_logits(scores, codes, len(classes), per_class=per_class, rng=rng)
    filt = compute_filtration(A, positions, method=method, rng=rng, allow_pinv=allow_pinv)
    new = _filtered_copy(estimator, filt)
    samples = len(codes) if per_class is None else per_class * len(classes)
    setattr(new, RECORD_ATTR, record.then(filt, per_class=per_class, samples=samples, rng=rng,
                                          forgot_names=tuple(str(classes[i]) for i in filt.forget)))
    return new


def _filtered_copy(estimator: Any, filtration: Filtration) -> Any:
    """Deep copy of `estimator` with the filtration absorbed into its final linear map."""
    new = copy.deepcopy(estimator)
    F, offset = filtration.matrix, filtration.offset
    labels = np.asarray(estimator.classes_)[list(filtration.kept)]
    if isinstance(estimator, MLPClassifier):
        w, b = estimator.coefs_[-1], estimator.intercepts_[-1]  # (h, k), (k,): scores = act @ w + b
        w2, b2 = _absorb(F, w.T, b, offset)
        new.coefs_[-1], new.intercepts_[-1] = w2.T.astype(w.dtype), b2.astype(b.dtype)
        new.n_outputs_ = new.coefs_[-1].shape[1]
        if new.n_outputs_ == 1:  # scikit-learn's two-class MLP: one logistic output
            new.out_activation_ = "logistic"
    else:
        coef = estimator.coef_
        coef = coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef)  # after sparsify()
        bias = np.broadcast_to(np.asarray(estimator.intercept_, dtype=np.float64), (len(F.T),))
        w2, b2 = _absorb(F, coef, bias, offset)
        new.coef_, new.intercept_ = w2.astype(coef.dtype), b2.astype(coef.dtype)
    binarizer = getattr(estimator, "_label_binarizer", None)
    if binarizer is not None:
        # MLPClassifier and RidgeClassifier decode predictions (and Ridge in older releases its
        # classes_) with this attribute, which no public API sets: a new LabelBinarizer with the same
        # settings, fitted on the kept labels, so predict returns only those.
        new._label_binarizer = LabelBinarizer(**binarizer.get_params()).fit(labels)
    if not isinstance(getattr(type(new), "classes_", None), property):  # a property in old Ridge
        new.classes_ = labels
    return new


def _absorb(F: np.ndarray, weight: np.ndarray, bias: np.ndarray, offset: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(F W, F b + g) in float64; two rows collapse to scikit-learn's binary layout (row 1 - row 0)."""
    w2, b2 = absorb(F, np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64), offset)
    if len(w2) == 2:
        w2, b2 = w2[1:] - w2[:1], b2[1:] - b2[:1]
    return w2, b2

