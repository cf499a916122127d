"""Deletion requests one after another: forgetting c1, then c2 from the result, versus {c1, c2} at once.

With A estimated from the same samples both times, the second step sees A' = A[R1, R1] (the first
model's logits are F1 times the original's), and G = F2 F1 satisfies
    G a_j = A[R, j] (j retained),   G a_c2 = z2 (the second step's z),   G a_c1 = F2 z1.
So: naive and zeroing give exactly the filtration of {c1, c2} at once; normalization gives it too
except that class c1's mean logits go to F2 z1, which differs from the at-once z_c1 by a constant
vector - every input's logits are shifted by one common amount, so softmax outputs and labels are
identical while the raw logits are not.
"""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import linfilt
from linfilt import LinfiltError, filtration_matrix, retained_classes
from linfilt.paper.data import load, to_float
from linfilt.filtration import METHODS
from linfilt.paper.models import build
from linfilt.paper.population import fit


@st.composite
def two_requests(draw):
    k = draw(st.integers(4, 16))
    c1, c2 = draw(st.lists(st.integers(0, k - 1), min_size=2, max_size=2, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.normal(size=(k, k)) + np.diag(rng.uniform(1, 3 * k, size=k))
    assume(np.linalg.cond(A) < 1e6)
    return A, c1, c2


def sequential(A, c1, c2, method, seed=0):
    """(G = F2 F1, F1, F2, A'): the second step estimated from the first model's mean logits."""
    k = len(A)
    F1 = filtration_matrix(A, [c1], method, rng=seed)
    R1 = retained_classes(k, [c1])
    A2 = F1 @ A[:, R1]  # mean logits of the first model on the retained classes' samples
    F2 = filtration_matrix(A2, [int(np.flatnonzero(R1 == c2)[0])], method, rng=seed + 1)
    return F2 @ F1, F1, F2, A2


@settings(max_examples=60, deadline=None)
@given(two_requests(), st.sampled_from(METHODS))
def test_structure_of_two_steps(problem, method):
    A, c1, c2 = problem
    G, F1, F2, A2 = sequential(A, c1, c2, method)
    R1, R = retained_classes(len(A), [c1]), retained_classes(len(A), [c1, c2])
    tol = 1e-8 * np.abs(A).max()
    np.testing.assert_allclose(A2, A[np.ix_(R1, R1)], atol=tol)  # A' = A[R1, R1]
    GA = G @ A
    np.testing.assert_allclose(GA[:, R], A[np.ix_(R, R)], atol=tol)
    np.testing.assert_allclose(GA[:, c2], F2 @ A2[:, R1 == c2][:, 0], atol=tol)
    np.testing.assert_allclose(GA[:, c1], F2 @ (F1 @ A[:, c1]), atol=tol)


@settings(max_examples=60, deadline=None)
@given(two_requests(), st.sampled_from(["naive", "zeroing"]))
def test_naive_and_zeroing_equal_forgetting_both_at_once(problem, method):
    A, c1, c2 = problem
    G = sequential(A, c1, c2, method)[0]
    once = filtration_matrix(A, [c1, c2], method)
    if method == "naive":
        np.testing.assert_array_equal(G, once)
    else:
        np.testing.assert_allclose(G, once, atol=1e-8 * np.abs(once).max())


@settings(max_examples=60, deadline=None)
@given(two_requests())
def test_normalization_differs_from_at_once_by_a_common_shift(problem):
    A, c1, c2 = problem
    G, F1, F2, _ = sequential(A, c1, c2, "normalization")
    once = filtration_matrix(A, [c1, c2], "normalization")
    D = G - once
    tol = 1e-8 * max(1.0, np.abs(G).max())
    # Every row of D is the same: the logits of any input differ by one common amount.
    np.testing.assert_allclose(D, np.broadcast_to(D[0], D.shape), atol=tol)
    # ... and only through class c1: D A is zero except in column c1, which is F2 z1 - z_c1.
    DA = D @ A
    others = np.arange(len(A)) != c1
    np.testing.assert_allclose(DA[:, others], 0, atol=tol * np.abs(A).max())
    np.testing.assert_allclose(DA[:, c1], F2 @ (F1 @ A[:, c1]) - once @ A[:, c1], atol=tol * np.abs(A).max())
    # Class c2's z is the at-once one: it only depends on A[R, c2] and A[R, R].
    np.testing.assert_allclose((G @ A)[:, c2], (once @ A)[:, c2], atol=tol * np.abs(A).max())


@pytest.fixture(scope="module")
def setting():
    ds = load("digits")
    x, y, xt = to_float(ds.x_train), ds.y_train, to_float(ds.x_test)
    torch.manual_seed(0)
    model = fit(build("mlp", 10, in_features=64, hidden=(32,)), x, y, epochs=2, batch_size=32, seed=1)
    return model, x, y, xt


def logits_of(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


@pytest.mark.parametrize("per_class", [None, 10])
@pytest.mark.parametrize("method", ["naive", "normalization", "zeroing"])
def test_pytorch_three_then_five(setting, method, per_class):
    model, x, y, xt = setting
    first = linfilt.unlearn(model, [3], (x, y), method=method, per_class=per_class)
    # The same data again, labels still original ids: class 3's samples are skipped.
    second = linfilt.unlearn(first, [5], (x, y), method=method, per_class=per_class)
    once = linfilt.unlearn(model, [3, 5], (x, y), method=method, per_class=per_class)
    rec = second.linfilt_filtration
    assert second.head.out_features == 8
    assert rec.classes == tuple(retained_classes(10, [3, 5]).tolist()) == once.linfilt_filtration.classes
    assert rec.forgotten == (3, 5) and [s.forgot for s in rec.steps] == [(3,), (5,)]
    seq, at_once = logits_of(second, xt), logits_of(once, xt)
    if method == "normalization":
        diff = seq - at_once
        assert np.abs(diff - diff[:, :1]).max() < 1e-4  # one common shift per image
        assert np.abs(diff).max() > 1e-3  # ... which is not zero
        np.testing.assert_array_equal(seq.argmax(1), at_once.argmax(1))
        softmax = [torch.softmax(torch.from_numpy(v), 1).numpy() for v in (seq, at_once)]
        np.testing.assert_allclose(*softmax, atol=1e-5)
    else:
        np.testing.assert_allclose(seq, at_once, atol=1e-4, rtol=1e-4)


def test_ids_stay_original_after_a_deletion(setting):
    model, x, y, xt = setting
    first = linfilt.unlearn(model, [3], (x, y), method="naive")
    with pytest.raises(LinfiltError, match=r"classes \[3\] were already forgotten"):
        linfilt.unlearn(first, [3], (x, y))
    with pytest.raises(LinfiltError, match=r"classes \[12\] are not outputs"):
        linfilt.unlearn(first, [12], (x, y))
    # Forgetting original class 9 removes the last output (position 8), not position 9.
    second = linfilt.unlearn(first, [9], (x, y), method="naive")
    np.testing.assert_allclose(logits_of(second, xt), logits_of(model, xt)[:, [0, 1, 2, 4, 5, 6, 7, 8]], atol=1e-6)
    with pytest.raises(LinfiltError, match="leaves 1"):
        linfilt.unlearn(second, list(range(4, 9)) + [0, 1], (x, y))
