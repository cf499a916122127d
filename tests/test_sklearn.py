import copy
import warnings

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC, LinearSVC
from threadpoolctl import threadpool_limits

from linfilt.errors import LinfiltError
from linfilt.filtration import compute_filtration, mean_logits
from linfilt.sklearn import logits, unlearn

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _fit(kind, X, y):
    est = {
        "logreg": lambda: LogisticRegression(max_iter=300),
        "sgd": lambda: SGDClassifier(random_state=0),
        "ridge": lambda: RidgeClassifier(),
        "linearsvc": lambda: LinearSVC(),
        "mlp": lambda: MLPClassifier((16,), max_iter=60, random_state=0),
    }[kind]()
    # one BLAS thread: on a small, shared machine lbfgs is ~50x slower with thread oversubscription
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


KINDS = ["logreg", "sgd", "ridge", "linearsvc", "mlp"]


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return {kind: _fit(kind, X, y) for kind in KINDS}


def _reference_scores(est, X):
    """Scores computed without linfilt: decision_function, or the MLP's output layer by hand."""
    if isinstance(est, MLPClassifier):
        h = X
        for w, b in zip(est.coefs_[:-1], est.intercepts_[:-1]):
            h = np.maximum(h @ w + b, 0)  # the fixture's MLP uses relu
        return h @ est.coefs_[-1] + est.intercepts_[-1]
    return est.decision_function(X)


def test_mlp_logits_are_the_pre_softmax_output_layer(fitted, digits):
    X, _ = digits
    mlp = fitted["mlp"]
    np.testing.assert_allclose(logits(mlp, X), _reference_scores(mlp, X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(softmax(logits(mlp, X), axis=1), mlp.predict_proba(X), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["normalization", "zeroing"])
def test_scores_are_F_times_original(fitted, digits, kind, method):
    X, y = digits
    est = fitted[kind]
    before = copy.deepcopy(est.__dict__)
    new = unlearn(est, [3, 5], X, y, method=method, per_class=30)

    orig = _reference_scores(est, X)
    filt = compute_filtration(mean_logits(orig, y, 10, per_class=30), [3, 5], method=method)
    assert filt.affine == (kind == "logreg")  # its scores sum to zero (see the next tests)
    expected = orig @ filt.matrix.T + filt.offset
    np.testing.assert_allclose(logits(new, X), expected, rtol=1e-9, atol=1e-9)
    if hasattr(new, "decision_function"):
        np.testing.assert_allclose(new.decision_function(X), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(new.classes_, [0, 1, 2, 4, 6, 7, 8, 9])
    np.testing.assert_array_equal(new.predict(X), new.classes_[np.argmax(expected, axis=1)])
    if isinstance(est, (LogisticRegression, MLPClassifier)):
        np.testing.assert_allclose(new.predict_proba(X), softmax(expected, axis=1), atol=1e-10)
    # the original is untouched
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(est, key), value)
    np.testing.assert_array_equal(est.classes_, np.arange(10))


@pytest.mark.parametrize("threads", [1, 2])
def test_logreg_sum_zero_scores_give_an_exact_well_scaled_affine_filtration(digits, threads):
    """Multinomial LogisticRegression's scores sum to zero, so A is singular by construction. The
    affine filtration must be exact, well-scaled, label-preserving for normalization and the same
    whatever the BLAS threading (the fit's and the solve's)."""
    X, y = digits
    with warnings.catch_warnings(), threadpool_limits(threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = LogisticRegression(max_iter=300).fit(X, y)
        orig = est.decision_function(X)
        assert np.abs(orig.sum(axis=1)).max() < 1e-8 * np.abs(orig).max()  # the structural cause
        naive = unlearn(est, [3], X, y, method="naive")
        norm = unlearn(est, [3], X, y, method="normalization")
        filt = compute_filtration(mean_logits(orig, y, 10), [3], "normalization")
    with threadpool_limits(1):
        again = compute_filtration(mean_logits(orig, y, 10), [3], "normalization")
    np.testing.assert_allclose(again.matrix, filt.matrix, rtol=1e-10, atol=1e-12)
    # the invertible case for the same model: every score shifted by 1 (softmax unchanged), A + 1 1^T
    shifted = compute_filtration(mean_logits(orig + 1.0, y, 10), [3], "normalization")
    assert not shifted.affine and filt.affine
    assert np.abs(filt.matrix).max() <= 10 * np.abs(shifted.matrix).max()
    expected = orig @ filt.matrix.T + filt.offset
    scale = np.abs(expected).max()
    assert np.abs(norm.decision_function(X) - expected).max() <= 1e-9 * scale
    A = mean_logits(orig, y, 10)  # F a_j + g = b_j for every class j
    keep = [i for i in range(10) if i != 3]
    target = A[keep, :].copy()
    target[:, 3] += A[np.ix_(keep, keep)].mean() - target[:, 3].mean()
    np.testing.assert_allclose(filt.matrix @ A + filt.offset[:, None], target, atol=1e-10 * np.abs(A).max())
    # normalization changes no label: its scores are naive's plus one amount common to all outputs
    np.testing.assert_array_equal(norm.predict(X), naive.predict(X))
    diff = norm.decision_function(X) - naive.decision_function(X)
    assert np.ptp(diff, axis=1).max() <= 1e-9 * scale
    np.testing.assert_allclose(norm.predict_proba(X), naive.predict_proba(X), atol=1e-12)


def test_string_labels(digits):
    X, y = digits
    est = _fit("sgd", X, NAMES[y])
    new = unlearn(est, ["three"], X, NAMES[y], method="naive")
    np.testing.assert_array_equal(new.classes_, np.delete(np.sort(NAMES), list(np.sort(NAMES)).index("three")))
    keep = est.classes_ != "three"
    np.testing.assert_allclose(new.decision_function(X), est.decision_function(X)[:, keep], atol=1e-12)
    with pytest.raises(LinfiltError, match=r"\['3'\]"):
        unlearn(est, "3", X, NAMES[y])


@pytest.mark.parametrize("kind", ["logreg", "mlp", "linearsvc", "ridge"])
def test_two_classes_left_use_sklearn_binary_layout(fitted, digits, kind):
    X, y = digits
    est = fitted[kind]
    forget = [0, 1, 2, 3, 4, 5, 6, 7]
    new = unlearn(est, forget, X, y)
    orig = _reference_scores(est, X)
    filtered = compute_filtration(mean_logits(orig, y, 10), forget).apply(orig)  # (n, 2)
    np.testing.assert_array_equal(new.classes_, [8, 9])
    np.testing.assert_allclose(np.ravel(logits(new, X)), filtered[:, 1] - filtered[:, 0], atol=1e-9)
    np.testing.assert_array_equal(new.predict(X), np.where(filtered[:, 1] > filtered[:, 0], 9, 8))
    if kind in ("logreg", "mlp"):  # the ones with predict_proba
        np.testing.assert_allclose(new.predict_proba(X), softmax(filtered, axis=1), atol=1e-10)


def test_randomization_reproducible_with_seed(fitted, digits):
    X, y = digits
    a = unlearn(fitted["sgd"], [2], X, y, method="randomization", rng=7)
    b = unlearn(fitted["sgd"], [2], X, y, method="randomization", rng=7)
    c = unlearn(fitted["sgd"], [2], X, y, method="randomization", rng=8)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.allclose(a.coef_, c.coef_)


def test_bad_inputs(fitted, digits):
    X, y = digits
    sgd = fitted["sgd"]
    with pytest.raises(LinfiltError, match="not fitted"):
        unlearn(SGDClassifier(), [1], X, y)
    with pytest.raises(LinfiltError, match="not supported"):
        unlearn(SVC(kernel="linear").fit(X[:200], y[:200]), [1], X, y)
    binary = y < 2
    with pytest.raises(LinfiltError, match="2 classes"):
        unlearn(_fit("logreg", X[binary], y[binary]), [0], X[binary], y[binary])
    with pytest.raises(LinfiltError, match="2 classes"):
        unlearn(_fit("mlp", X[binary], y[binary]), [0], X[binary], y[binary])
    with pytest.raises(LinfiltError, match="1797 samples but y has 1796"):
        unlearn(sgd, [1], X, y[:-1])
    with pytest.raises(LinfiltError, match=r"\[10\]"):
        unlearn(sgd, [10], X, y)
    with pytest.raises(LinfiltError, match="empty"):
        unlearn(sgd, [], X, y)
    # labels of classes_ only: True, 3.0 and "3" do not mean 1 or 3 (integer classes)
    for bad in (True, [3.0], ["3"], "3", [np.True_]):
        with pytest.raises(LinfiltError, match="kind of the estimator's classes_"):
            unlearn(sgd, bad, X, y)
    with pytest.raises(LinfiltError, match="repeats"):
        unlearn(sgd, [3, 3], X, y)
    with pytest.raises(LinfiltError, match="leaves 1"):
        unlearn(sgd, list(range(9)), X, y)
    with pytest.raises(LinfiltError, match=r"labels \['11'\]"):
        unlearn(sgd, [1], X, np.where(y == 4, 11, y))
    with pytest.raises(LinfiltError, match=r"classes \[4\] have no samples"):
        unlearn(sgd, [1], X[y != 4], y[y != 4])
    multilabel = np.stack([y % 2, y > 4, y == 0], axis=1).astype(int)
    with pytest.raises(LinfiltError, match="multilabel"):
        unlearn(RidgeClassifier().fit(X, multilabel), [0], X, multilabel)


def test_only_public_scikit_learn_api_is_imported():
    import ast
    import inspect

    import linfilt.sklearn

    tree = ast.parse(inspect.getsource(linfilt.sklearn))
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    private = [m for m in modules if m.startswith("sklearn") and any(p.startswith("_") for p in m.split("."))]
    assert not private


def test_the_filtered_estimator_records_what_was_done(fitted, digits):
    """linfilt_filtration_ is the record the PyTorch adapter and model files keep: original ids
    (positions in the first classes_), the labels as names, one step per request."""
    from linfilt.filtration import FiltrationRecord, FiltrationStep

    X, y = digits
    est = fitted["logreg"]
    first = unlearn(est, [3], X, y, per_class=30, rng=4)
    orig = _reference_scores(est, X)
    filt = compute_filtration(mean_logits(orig, y, 10, per_class=30, rng=4), [3])
    rec = first.linfilt_filtration_
    assert isinstance(rec, FiltrationRecord) and isinstance(rec.steps[0], FiltrationStep)
    assert rec.classes == (0, 1, 2, 4, 5, 6, 7, 8, 9)
    (step,) = rec.steps
    assert (step.forgot, step.forgot_names, step.method, step.per_class, step.samples, step.seed) == \
        ((3,), ("3",), "normalization", 30, 300, 4)
    assert step.affine is True and step.condition_number == pytest.approx(filt.condition, rel=1e-9)
    assert not hasattr(est, "linfilt_filtration_")  # the original is untouched
    second = unlearn(first, [8], X[y != 3], y[y != 3], method="naive")
    assert second.linfilt_filtration_.classes == (0, 1, 2, 4, 5, 6, 7, 9)
    assert second.linfilt_filtration_.forgotten == (3, 8) and second.linfilt_filtration_.steps[0] == step
    strings = unlearn(_fit("sgd", X, NAMES[y]), ["three", "two"], X, NAMES[y], method="naive")
    sorted_names = sorted(NAMES)  # classes_ is sorted: eight five four nine one seven six three two zero
    assert strings.linfilt_filtration_.steps[0].forgot == (sorted_names.index("three"), sorted_names.index("two"))
    assert strings.linfilt_filtration_.steps[0].forgot_names == ("three", "two")
    assert strings.linfilt_filtration_.steps[0].affine is False  # SGD's one-vs-rest scores do not sum to zero
    refit = _fit("logreg", X, y)
    refit.linfilt_filtration_ = rec  # fit() leaves the attribute of an earlier unlearn in place
    with pytest.raises(LinfiltError, match="stale"):
        unlearn(refit, [1], X, y)


def test_estimators_whose_scores_are_not_linear_in_coef_are_refused(digits):
    from sklearn.linear_model import LinearRegression

    X, y = digits
    three = y < 3
    svc = SVC(kernel="linear").fit(X[three], y[three])  # 3 classes: coef_ has one row per class pair
    assert svc.coef_.shape[0] == 3
    with pytest.raises(LinfiltError, match="not supported: its decision_function is not"):
        unlearn(svc, [1], X[three], y[three])
    with pytest.raises(LinfiltError, match="not supported"):
        unlearn(LinearRegression().fit(X, y), [1], X, y)


def test_options_after_y_are_keyword_only(fitted, digits):
    X, y = digits
    with pytest.raises(TypeError, match="positional"):
        unlearn(fitted["sgd"], [1], X, y, "naive")


def test_wrappers_are_refused_with_what_to_do(fitted, digits):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = digits
    X, y = X[:300], y[:300]
    with threadpool_limits(1):
        cases = {
            "Pipeline is not supported .* unlearn its last step": make_pipeline(StandardScaler(), RidgeClassifier()),
            "OneVsRestClassifier is not supported .* separate binary estimators": OneVsRestClassifier(RidgeClassifier()),
            "CalibratedClassifierCV is not supported .* unlearn the uncalibrated": CalibratedClassifierCV(RidgeClassifier(), cv=2),
        }
        for words, est in cases.items():
            est.fit(X, y)
            with pytest.raises(LinfiltError, match=words):
                unlearn(est, [3], X, y)
    # the route the Pipeline message names works, and predicts as the filtered last step does
    pipe = make_pipeline(StandardScaler(), RidgeClassifier()).fit(X, y)
    last = unlearn(pipe[-1], [3], pipe[:-1].transform(X), y)
    pipe.steps[-1] = (pipe.steps[-1][0], last)
    np.testing.assert_array_equal(pipe.predict(X), last.predict(pipe[:-1].transform(X)))
    assert 3 not in pipe.predict(X)


def test_skorch_net_is_refused_naming_its_module_and_the_module_route_works(digits):
    skorch = pytest.importorskip("skorch")
    import torch
    from torch import nn

    import linfilt

    X, y = digits
    X, y = X.astype(np.float32), y.astype(np.int64)
    torch.manual_seed(0)
    net = skorch.NeuralNetClassifier(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
                                     criterion=nn.CrossEntropyLoss, max_epochs=8, lr=0.1, batch_size=64,
                                     train_split=None, verbose=0).fit(X, y)
    with pytest.raises(LinfiltError, match=r"NeuralNetClassifier is not supported .* net\.module_ = linfilt\.unlearn"):
        unlearn(net, [3], X, y)
    with pytest.raises(LinfiltError, match=r"NeuralNetClassifier wraps a PyTorch module: .*net\.module_ = "):
        linfilt.unlearn(net, [3], (X, y))
    before = net.predict(X)
    net.module_ = linfilt.unlearn(net.module_, [3], (X, y), keep_outputs=True)
    after = net.predict(X)
    kept = y != 3
    assert 3 not in after
    # net.predict still returns class ids: retained accuracy stays as it was (normalization)
    assert np.mean(after[kept] == y[kept]) >= np.mean(before[kept] == y[kept]) - 0.02 > 0.8


def test_forget_as_a_set_and_malformed_X_or_y(fitted, digits):
    """Review: a set was read as one label ({3, 5} refused as "not of the kind of classes_"); an X
    or y without rows, or X with the wrong number of features, gave TypeError/ValueError tracebacks."""
    X, y = digits
    sgd = fitted["sgd"]
    from_set = unlearn(sgd, {5, 3}, X, y, method="zeroing")
    from_list = unlearn(sgd, [3, 5], X, y, method="zeroing")
    np.testing.assert_array_equal(from_set.classes_, [0, 1, 2, 4, 6, 7, 8, 9])
    np.testing.assert_array_equal(from_set.coef_, from_list.coef_)
    for bad_X, bad_y, words in [
        (X, 5, r"y must be one label per sample, got shape \(\)"),
        (None, y, "X must be a 2-D array of samples x features, got NoneType"),
        (X[0], y, r"X must be a 2-D array .* shape \(64,\)"),
        (X[:, :60], y, "X has 60 features but SGDClassifier was fitted on 64"),
    ]:
        with pytest.raises(LinfiltError, match=words):
            unlearn(sgd, [1], bad_X, bad_y)
    # a list of rows is still an X
    listed = unlearn(sgd, [1], X.tolist(), y, method="zeroing")
    np.testing.assert_array_equal(listed.coef_, unlearn(sgd, [1], X, y, method="zeroing").coef_)
