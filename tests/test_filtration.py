"""linfilt.filtration against the paper's section 4.1, written out independently here."""
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from linfilt import (
    IllConditionedError,
    LinfiltError,
    absorb,
    apply_filtration,
    check_forget,
    filtration_matrix,
    mean_logits,
    retained_classes,
)
from linfilt.filtration import METHODS, compute_filtration

PROPS = settings(max_examples=60, deadline=None)


@st.composite
def problems(draw, max_k=24):
    """(A, forget): a random A of size k (logit-like: a dominant diagonal, or plain Gaussian) and
    a forget set leaving at least two classes."""
    k = draw(st.integers(3, max_k))
    forget = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k - 2, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.normal(size=(k, k)) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    if draw(st.booleans()):
        A += np.diag(np.abs(A).sum(axis=1) + 1.0)
    assume(np.linalg.cond(A) < 1e8)  # far from the IllConditionedError threshold
    return A, forget


def target(A, forget, method, z_draws=None):
    """B_z from the definition, column by column (each forgotten class as the paper's class 0)."""
    k = len(A)
    kept = [j for j in range(k) if j not in forget]
    retained_mean = np.mean([A[i, j] for i in kept for j in kept])
    B = np.empty((len(kept), k))
    for j in range(k):
        a = A[kept, j]
        if j not in forget or method == "naive":
            B[:, j] = a
        elif method == "normalization":
            B[:, j] = a - a.mean() + retained_mean
        elif method == "zeroing":
            B[:, j] = 0.0
        else:
            B[:, j] = z_draws[sorted(forget).index(j)]
    return B


def relerr(x, y):
    return np.abs(x - y).max() / max(1.0, np.abs(y).max())


@PROPS
@given(problems(), st.sampled_from(METHODS), st.integers(0, 1000))
def test_F_maps_A_to_B_z(problem, method, seed):
    A, forget = problem
    rng = np.random.default_rng(seed)
    res = compute_filtration(A, forget, method, rng=np.random.default_rng(seed))
    kept = [j for j in range(len(A)) if j not in forget]
    draws = rng.standard_normal((len(forget), len(kept)))
    B = target(A, forget, method, draws)
    assert res.matrix.shape == (len(A) - len(forget), len(A))
    assert res.kept == tuple(kept) and res.forget == tuple(sorted(forget))
    assert relerr(res.matrix @ A, B) < 1e-12 * max(1.0, res.condition)
    # Against the textbook B A^-1 (the library itself never forms the inverse).
    assert relerr(res.matrix, B @ np.linalg.inv(A)) < 1e-12 * max(1.0, res.condition)
    assert res.condition == pytest.approx(np.linalg.cond(A))


@PROPS
@given(problems())
def test_naive_selects_the_retained_rows(problem):
    A, forget = problem
    F = filtration_matrix(A, forget, "naive")
    kept = [j for j in range(len(A)) if j not in forget]
    np.testing.assert_array_equal(F, np.eye(len(A))[kept])


@PROPS
@given(problems())
def test_normalization_z_has_the_mean_of_the_retained_block(problem):
    A, forget = problem
    F = filtration_matrix(A, forget, "normalization")
    kept = [j for j in range(len(A)) if j not in forget]
    block_mean = A[np.ix_(kept, kept)].mean()
    for c in forget:
        z = F @ A[:, c]
        assert z.mean() == pytest.approx(block_mean, abs=1e-7 * max(1.0, np.abs(A).max()))
        # ...and is A's column shifted by a constant, so the forgotten class' ranking survives.
        shift = z - A[kept, c]
        assert np.ptp(shift) < 1e-7 * max(1.0, np.abs(A).max())


@PROPS
@given(problems())
def test_normalization_is_naive_plus_a_shift_common_to_all_outputs(problem):
    """Why normalization changes no label (the paper's Table 6): B_z - B_naive has constant columns,
    so F_norm - F_naive has identical rows and adds one amount to every logit of an input."""
    A, forget = problem
    D = filtration_matrix(A, forget, "normalization") - filtration_matrix(A, forget, "naive")
    np.testing.assert_allclose(D, np.broadcast_to(D[0], D.shape), atol=1e-8 * max(1.0, np.abs(D).max()))


def test_normalization_matches_the_papers_formula_for_class_0():
    rng = np.random.default_rng(3)
    k = 7
    A = rng.normal(size=(k, k)) + 5 * np.eye(k)
    a = [A[:, j] for j in range(k)]
    z = a[0][1:] - a[0][1:].sum() / (k - 1) + sum(a[j][i] for i in range(1, k) for j in range(1, k)) / (k - 1) ** 2
    F = filtration_matrix(A, [0], "normalization")
    np.testing.assert_allclose(F @ a[0], z, atol=1e-12)


@PROPS
@given(problems(max_k=12), st.integers(0, 2**31))
def test_randomization_is_reproducible_with_a_seed(problem, seed):
    A, forget = problem
    F1 = filtration_matrix(A, forget, "randomization", rng=np.random.default_rng(seed))
    F2 = filtration_matrix(A, forget, "randomization", rng=seed)
    np.testing.assert_array_equal(F1, F2)
    F3 = filtration_matrix(A, forget, "randomization", rng=seed + 1)
    assert not np.allclose(F1, F3)


@PROPS
@given(problems(max_k=12), st.integers(1, 20), st.sampled_from(METHODS), st.booleans())
def test_applying_F_equals_the_absorbed_model(problem, p, method, with_bias):
    A, forget = problem
    k = len(A)
    rng = np.random.default_rng(p)
    W, b, X = rng.normal(size=(k, p)), rng.normal(size=k), rng.normal(size=(30, p))
    F = filtration_matrix(A, forget, method, rng=1)
    logits = X @ W.T + (b if with_bias else 0)
    W2, b2 = absorb(F, W, b if with_bias else None)
    assert (b2 is None) == (not with_bias)
    absorbed = X @ W2.T + (b2 if with_bias else 0)
    np.testing.assert_allclose(apply_filtration(F, logits), absorbed, rtol=1e-10, atol=1e-10)


@PROPS
@given(problems(max_k=10), st.integers(1, 5), st.integers(1, 8))
def test_population_apply_equals_a_loop(problem, models, n):
    A, forget = problem
    F = filtration_matrix(A, forget, "normalization")
    pop = np.random.default_rng(n).normal(size=(models, n, len(A)))
    batched = apply_filtration(F, pop)
    assert batched.shape == (models, n, len(A) - len(forget))
    for m in range(models):
        for i in range(n):
            np.testing.assert_allclose(batched[m, i], F @ pop[m, i], rtol=1e-12, atol=1e-12)


def test_apply_keeps_float32():
    F = filtration_matrix(np.eye(4) * 3 + 1, [1])
    out = apply_filtration(F, np.ones((2, 5, 4), dtype=np.float32))
    assert out.dtype == np.float32 and out.shape == (2, 5, 3)


@PROPS
@given(st.integers(3, 8), st.integers(1, 6), st.integers(0, 10**6))
def test_mean_logits_columns_are_class_means(k, per_class, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(k), per_class + 3))
    logits = rng.normal(size=(len(labels), k))
    A = mean_logits(logits, labels, k)
    A_s = mean_logits(logits, labels, k, per_class=per_class)
    for j in range(k):
        rows = [i for i in range(len(labels)) if labels[i] == j]
        np.testing.assert_allclose(A[:, j], logits[rows].mean(axis=0))
        np.testing.assert_allclose(A_s[:, j], logits[rows[:per_class]].mean(axis=0))  # first s, in order


def test_mean_logits_random_per_class_is_seeded_and_draws_within_each_class():
    rng = np.random.default_rng(0)
    k, n = 4, 40
    labels = np.tile(np.arange(k), n // k)
    logits = rng.normal(size=(n, k))
    A1 = mean_logits(logits, labels, k, per_class=3, rng=np.random.default_rng(5))
    A2 = mean_logits(logits, labels, k, per_class=3, rng=5)
    np.testing.assert_array_equal(A1, A2)
    assert not np.allclose(A1, mean_logits(logits, labels, k, per_class=3))
    # Each column is the mean of 3 distinct samples of its own class.
    for j in range(k):
        rows = logits[labels == j]
        hits = [c for c in itertools.combinations(range(len(rows)), 3)
                if np.allclose(rows[list(c)].mean(axis=0), A1[:, j])]
        assert len(hits) == 1


def test_retained_classes_is_the_new_index_to_id_map():
    np.testing.assert_array_equal(retained_classes(10, [3, 5]), [0, 1, 2, 4, 6, 7, 8, 9])
    np.testing.assert_array_equal(retained_classes(5, 0), [1, 2, 3, 4])
    assert check_forget(10, [5, 3]) == (3, 5)
    assert check_forget(10, np.int64(2)) == (2,)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "forget, words",
    [
        ([], "empty"),
        ([10], "out of range"),
        ([-1], "out of range"),
        ([2, 2], "repeated"),
        (list(range(9)), "at least 2"),
        (list(range(10)), "at least 2"),
        ([1.0], "integers"),
        (["3"], "integers"),
        (None, "collection of class ids"),
    ],
)
def test_bad_forget_sets(forget, words):
    A = np.eye(10) * 5 + 1
    with pytest.raises(LinfiltError, match=words):
        filtration_matrix(A, forget)
    with pytest.raises(LinfiltError, match=words):
        retained_classes(10, forget)


def test_singular_and_ill_conditioned_A():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    A[:, 2] = A[:, 1]  # two classes with the same mean logits
    with pytest.raises(IllConditionedError, match=r"condition number (inf|\d)"):
        filtration_matrix(A, [0])
    B = A.copy()
    B[:, 2] += 1e-14
    with pytest.raises(IllConditionedError, match="condition number"):
        filtration_matrix(B, [0], "zeroing")
    # Opt-in: a pseudo-inverse, which still maps every column of A that it can.
    res = compute_filtration(A, [0], "normalization", allow_pinv=True)
    assert res.pinv and res.matrix.shape == (5, 6) and np.all(np.isfinite(res.matrix))
    np.testing.assert_allclose(res.matrix, target(A, [0], "normalization") @ np.linalg.pinv(A), atol=1e-8)
    # Naive needs no inverse: it is the row selection whatever A is.
    np.testing.assert_array_equal(filtration_matrix(A, [0], "naive"), np.eye(6)[1:])


def test_well_conditioned_A_does_not_use_the_pseudo_inverse():
    res = compute_filtration(np.eye(5) * 4 + 1, [1], allow_pinv=True)
    assert not res.pinv


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad):
    logits = np.ones((6, 3))
    logits[4, 1] = bad
    with pytest.raises(LinfiltError, match="NaN or infinite"):
        mean_logits(logits, np.arange(6) % 3, 3)
    A = np.eye(3) + 1
    A[0, 0] = bad
    with pytest.raises(LinfiltError, match="NaN or infinite"):
        filtration_matrix(A, [0])


def test_a_class_with_no_samples_is_named():
    with pytest.raises(LinfiltError, match=r"classes \[2\] have no samples"):
        mean_logits(np.ones((4, 4)), np.array([0, 1, 3, 3]), 4)


def test_per_class_larger_than_a_class_names_it():
    with pytest.raises(LinfiltError, match="class 1: 1"):
        mean_logits(np.ones((5, 3)), np.array([0, 0, 1, 2, 2]), 3, per_class=2)
    with pytest.raises(LinfiltError, match="positive integer"):
        mean_logits(np.ones((3, 3)), np.arange(3), 3, per_class=0)


@pytest.mark.parametrize(
    "logits, labels, words",
    [
        (np.ones((4, 3)), np.arange(4) % 3, r"shape \(n, 4\)"),
        (np.ones((4, 4)), np.arange(3), "4 logit rows but 3 labels"),
        (np.ones((4, 4)), np.array([0, 1, 2, 4]), "out of range"),
        (np.ones((4, 4)), np.array([0, 1, 2, 2.5]), "integer"),
    ],
)
def test_bad_logits_or_labels(logits, labels, words):
    with pytest.raises(LinfiltError, match=words):
        mean_logits(logits, labels, 4)


def test_other_bad_arguments():
    A = np.eye(4) * 3 + 1
    with pytest.raises(LinfiltError, match="unknown method"):
        filtration_matrix(A, [0], "shuffle")
    with pytest.raises(LinfiltError, match="needs rng"):
        filtration_matrix(A, [0], "randomization")
    with pytest.raises(LinfiltError, match="square"):
        filtration_matrix(np.ones((3, 4)), [0])
    F = filtration_matrix(A, [0])
    with pytest.raises(LinfiltError, match="last axis must be 4"):
        apply_filtration(F, np.ones((2, 3)))
    with pytest.raises(LinfiltError, match=r"need \(4, p\)"):
        absorb(F, np.ones((3, 2)))
    with pytest.raises(LinfiltError, match=r"need \(4,\)"):
        absorb(F, np.ones((4, 2)), np.ones(3))


def _sum_zero_model(k=10, p=40, n=2000, seed=0, noise=0.0):
    """Logits of a softmax-symmetric linear model (W's and b's columns sum to zero), with labels."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(k, p))
    W -= W.mean(axis=0)
    b = rng.normal(size=k)
    b -= b.mean()
    y = np.arange(n) % k
    feats = rng.normal(size=(n, p)) + 3 * W[y] / np.linalg.norm(W[y], axis=1, keepdims=True) * 2
    logits = feats @ W.T + b
    logits += noise * rng.normal(size=logits.shape) * np.abs(logits).max()
    return logits, y


@pytest.mark.parametrize("noise", [0.0, 1e-15, 1e-9])
@pytest.mark.parametrize("method", ["normalization", "zeroing", "randomization"])
def test_sum_zero_logits_get_an_exact_affine_filtration(noise, method):
    """A is singular by construction; rounding noise must not decide what F is (the pseudo-inverse
    of old inverted a singular value of ~1e-14 and built entries of ~1e12)."""
    logits, y = _sum_zero_model(noise=noise)
    A = mean_logits(logits, y, 10)
    assert np.linalg.cond(A) > 1e6
    res = compute_filtration(A, [0, 4], method, rng=3)
    assert res.affine and not res.pinv and res.condition < 1e6
    np.testing.assert_allclose(res.matrix @ np.ones(10), 0, atol=1e-12)  # rows orthogonal to 1
    scale = np.abs(A).max()
    B = target(A, [0, 4], method, z_draws=np.random.default_rng(3).standard_normal((2, 8)))
    np.testing.assert_allclose(res.matrix @ A + res.offset[:, None], B, atol=1e-9 * scale)
    # well-scaled: like the invertible case of the same logits shifted by 1 (softmax-equal)
    shifted = compute_filtration(mean_logits(logits + 1, y, 10), [0, 4], method, rng=3)
    assert not shifted.affine
    assert np.abs(res.matrix).max() <= 10 * np.abs(shifted.matrix).max()
    np.testing.assert_allclose(res.apply(logits), logits @ res.matrix.T + res.offset, rtol=1e-12)
    # the same model, same softmax: affine and shifted filtrations differ by a common shift only
    diff = res.apply(logits) - shifted.apply(logits + 1)
    tol = 1e-8 if noise < 1e-12 else 1e-5  # logits off the sum-zero plane by the noise
    assert np.ptp(diff, axis=1).max() <= tol * np.abs(diff).max() + 1e-9


def test_normalization_keeps_naive_labels_on_sum_zero_logits():
    logits, y = _sum_zero_model(seed=5, noise=1e-15)
    A = mean_logits(logits, y, 10)
    naive = compute_filtration(A, [2], "naive").apply(logits)
    norm = compute_filtration(A, [2], "normalization").apply(logits)
    np.testing.assert_array_equal(norm.argmax(axis=1), naive.argmax(axis=1))
    assert np.ptp(norm - naive, axis=1).max() <= 1e-10 * np.abs(logits).max()


def test_filtration_matrix_refuses_the_affine_case_with_a_pointer():
    logits, y = _sum_zero_model()
    with pytest.raises(LinfiltError, match="compute_filtration"):
        filtration_matrix(mean_logits(logits, y, 10), [1])


@pytest.mark.parametrize("scale", [1e-300, 1e-310, 1e-320, 1e300])
def test_tiny_subnormal_or_huge_A_gives_the_same_finite_F(scale):
    """F A = B_z is invariant to scaling A (B_z scales with it): the solve must not overflow."""
    A = np.eye(5) * 4 + np.arange(25).reshape(5, 5) / 25
    ref = compute_filtration(A, [1], "normalization")
    got = compute_filtration(A * scale, [1], "normalization")
    assert np.all(np.isfinite(got.matrix))
    tol = 1e-9 if scale > 1e-307 else 1e-3  # subnormals keep fewer digits
    np.testing.assert_allclose(got.matrix, ref.matrix, rtol=tol, atol=tol)


def test_pseudo_inverse_has_an_explicit_cutoff():
    """A singular value at rounding level is dropped, not inverted into entries of ~1e14."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    A[:, 2] = A[:, 1] + 1e-15 * rng.normal(size=6)
    res = compute_filtration(A, [0], "normalization", allow_pinv=True)
    assert res.pinv and np.abs(res.matrix).max() < 1e3


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: compute_filtration("abc", [0]), "numeric array"),
        (lambda: compute_filtration(np.eye(4) + 1, [0], rng=-1), "integer seed >= 0"),
        (lambda: compute_filtration(np.eye(4) + 1, [0], "randomization", rng=1.5), "Generator or an integer"),
        (lambda: apply_filtration(np.ones(3), np.ones((2, 3))), "2-dimensional"),
        (lambda: absorb(np.ones(3), np.ones((3, 2))), "2-dimensional"),
        (lambda: mean_logits(np.ones((4, 2)), np.arange(4) % 2, 2, per_class="5"), "positive integer"),
        (lambda: mean_logits(np.ones((4, 2)), np.arange(4) % 2, "2"), "integer"),
        (lambda: mean_logits(np.ones((4, 2)), np.array([0, 1, 0, 1.0]), 2), "integer class ids"),
        (lambda: check_forget(10, True), "class id"),
        (lambda: compute_filtration(np.eye(4) + 1, [0], allow_pinv="no"), "allow_pinv must be True or False"),
        (lambda: check_forget(10, "10"), "class id"),
        (lambda: check_forget(10, [np.float64(3)]), "integers"),
    ],
)
def test_bad_arguments_give_one_linfilt_error(call, words):
    with pytest.raises(LinfiltError, match=words):
        call()


def test_scaled_solve_is_bit_identical_to_the_paper_formula_on_ordinary_A():
    """Scaling by a power of two is exact: results computed before the scaled solve stay valid."""
    rng = np.random.default_rng(0)
    for scale in (0.01, 1.0, 37.0):
        A = rng.normal(size=(10, 10)) * scale + np.eye(10) * 5
        B = target(A, [0, 3], "normalization")
        np.testing.assert_array_equal(compute_filtration(A, [0, 3]).matrix, np.linalg.solve(A.T, B.T).T)


# --- the one record of a filtration step ---------------------------------------------------------

def test_a_record_step_takes_the_filtration_and_original_ids():
    """FiltrationRecord.then: positions of the filtration are output positions of the record's
    model, so the step names original ids and the new record keeps the original id of each output."""
    from linfilt.filtration import FiltrationRecord, FiltrationStep

    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5)) + np.diag([9.0] * 5)
    before = FiltrationRecord((0, 2, 4, 6, 8), (FiltrationStep("naive", (1, 3), None, 50, 4.0),))
    filt = compute_filtration(A, [1, 3], "randomization", rng=7)
    after = before.then(filt, per_class=10, samples=50, rng=7, head="fc")
    assert after.classes == (0, 4, 8) and after.forgotten == (1, 3, 2, 6)
    step = after.steps[-1]
    assert (step.forgot, step.method, step.per_class, step.samples, step.seed, step.head) == \
        ((2, 6), "randomization", 10, 50, 7, "fc")
    assert step.condition_number == filt.condition == pytest.approx(np.linalg.cond(A))
    assert step.affine is False and step.pinv is False and step.forgot_names is None and step.date is None
    assert before.then(filt, per_class=None, samples=50, rng=np.random.default_rng(7)).steps[-1].seed is None
    # softmax-symmetric A: the step records the filtration's offset
    sym = A - A.mean(axis=0)
    assert before.then(compute_filtration(sym, [0]), per_class=None, samples=5).steps[-1].affine is True


@pytest.mark.parametrize("field, value, words", [
    ("method", "evil", r"unknown method: method must be one of \['naive', .*got 'evil'"),
    ("forgot", (), "must name its forgotten classes"),
    ("forgot", (-1,), "forgotten class id must be >= 0"),
    ("forgot", "12", "forgotten class ids must be a list of integers"),
    ("forgot_names", ("a", "b"), "one name per id"),
    ("forgot_names", (" ",), "class names must be non-empty"),
    ("per_class", 0, "per_class must be a positive integer"),
    ("samples", 1.5, "samples must be a positive integer"),
    ("condition_number", 0.5, "condition_number must be >= 1"),
    ("pinv", 1, "pinv must be true or false"),
    ("affine", "no", "affine must be true or false"),
    ("seed", -1, "seed must be >= 0"),
    ("date", "yesterday", "date must be an ISO 8601"),
    ("head", 3, "head must be a dotted module path"),
])
def test_a_record_step_validates_every_field(field, value, words):
    from linfilt.filtration import FiltrationStep

    good = dict(method="naive", forgot=(3,), per_class=None, samples=9, condition_number=2.0)
    FiltrationStep(**good)
    with pytest.raises(LinfiltError, match=words):
        FiltrationStep(**{**good, field: value})


def test_an_infinite_condition_number_is_kept_as_inf():
    from linfilt.filtration import FiltrationStep

    for cond in (None, np.inf):
        step = FiltrationStep("naive", [3], None, 9, cond)
        assert step.condition_number == np.inf and step.forgot == (3,)


def test_class_counts_name_the_classes_as_the_caller_does():
    from linfilt.filtration import check_class_counts

    labels = np.array([0, 0, 2, 2, 2])
    np.testing.assert_array_equal(check_class_counts(np.append(labels, 1), 3, 1), [2, 1, 3])
    with pytest.raises(LinfiltError, match=r"classes \['b'\] have no samples"):
        check_class_counts(labels, 3, names=["a", "b", "c"])
    with pytest.raises(LinfiltError, match=r"per_class=3 but .*\(class 10: 2\)"):
        check_class_counts(np.array([0, 0, 1, 1, 1]), 2, 3, names=[10, 11])


def test_projection_is_naive_without_data():
    from linfilt.filtration import FiltrationStep, projection

    A = np.random.default_rng(0).normal(size=(5, 5))
    filt = projection(5, [1, 3])
    np.testing.assert_array_equal(filt.matrix, filtration_matrix(A, [1, 3], "naive"))
    assert (filt.kept, filt.forget, filt.method, filt.condition, filt.affine) == ((0, 2, 4), (1, 3), "naive", 1.0, False)
    assert FiltrationStep("naive", (1,), None, 0, 1.0).samples == 0  # naive without data
    for method in ("normalization", "zeroing"):
        with pytest.raises(LinfiltError, match="samples must be a positive integer"):
            FiltrationStep(method, (1,), None, 0, 1.0)
    with pytest.raises(LinfiltError, match="leaves 1"):
        projection(3, [0, 1])


def test_max_condition_is_validated_and_inf_refuses_only_a_singular_A():
    """Review: a string max_condition gave `TypeError: '<' not supported`."""
    A = np.eye(3) + 0.1
    for bad, words in [("x", "max_condition must be a number"), (0.5, "max_condition must be > 1.0"),
                       (float("nan"), "max_condition must be finite")]:
        with pytest.raises(LinfiltError, match=words):
            compute_filtration(A, 0, max_condition=bad)
    near = np.diag([1.0, 1.0, 1e-13])  # condition 1e13: refused by default, solved under inf
    with pytest.raises(LinfiltError, match="ill-conditioned"):
        compute_filtration(near, 0, method="zeroing")
    F = compute_filtration(near, 0, method="zeroing", max_condition=float("inf")).matrix
    np.testing.assert_allclose(F, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-12)  # B_z A^-1 by hand


def test_retained_classes_validates_num_classes_before_sizing_its_mask():
    """Review: retained_classes("3", 0) gave `TypeError: 'str' object cannot be interpreted as an integer`."""
    for bad in ("3", 3.0, True):
        with pytest.raises(LinfiltError, match="num_classes must be an integer"):
            retained_classes(bad, 0)
    np.testing.assert_array_equal(retained_classes(np.int64(3), 0), [1, 2])
