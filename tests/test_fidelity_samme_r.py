"""SAMME.R (linfilt.attacks) against a frozen scikit-learn 1.3.2 reference.

tests/data/samme_r_sklearn13.npz was made outside the repository, in a throwaway venv
(`python3 -m venv /tmp/sk13 && /tmp/sk13/bin/pip install scikit-learn==1.3.2 "numpy<2"`), by
fitting `AdaBoostClassifier(algorithm="SAMME.R", random_state=7)` (its defaults: 50 depth-1 trees,
learning rate 1) to two small Gaussian data sets drawn with numpy's default_rng(20201) (a binary
one, 80 x 4, and a three-class one, 90 x 3) and storing its predict and decision_function on 40
further points each, and the number of trees it kept.
"""
from pathlib import Path

import numpy as np
import pytest

from linfilt import audit
from linfilt.attacks import SammeR, samme_r

REF = np.load(Path(__file__).parent / "data" / "samme_r_sklearn13.npz")


@pytest.mark.parametrize("name", ["binary", "three"])
def test_samme_r_matches_scikit_learn_1_3(name):
    clf = SammeR(random_state=7).fit(REF[f"{name}_x"], REF[f"{name}_y"])
    assert len(clf.estimators_) == int(REF[f"{name}_n_estimators"])
    np.testing.assert_allclose(clf.decision_function(REF[f"{name}_xtest"]), REF[f"{name}_decision"],
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(REF[f"{name}_xtest"]), REF[f"{name}_predict"])


def test_samme_r_differs_from_samme():
    # The reference must tell the two algorithms apart, or the test above would prove nothing.
    from sklearn.ensemble import AdaBoostClassifier

    x, y, xt = REF["binary_x"], REF["binary_y"], REF["binary_xtest"]
    samme = AdaBoostClassifier(random_state=7).fit(x, y).decision_function(xt)
    assert not np.allclose(samme, REF["binary_decision"])


def test_samme_r_stops_at_a_perfect_tree():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    clf = SammeR(random_state=0).fit(x, y)
    assert len(clf.estimators_) == 1
    np.testing.assert_array_equal(clf.predict(np.array([[0.2], [2.7]])), [0, 1])


def test_samme_r_as_attack_classifier():
    # Two populations whose logits differ in the mean: the attack must find it, NN/RF/AB alike.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    first = rng.normal(size=(10, 40, 2)) + np.array([3.0, 0.0])
    second = rng.normal(size=(10, 40, 2))
    res = audit.attack_advantage(first, second, labels, 0, classes=[0],
                                 classifiers={"AB": samme_r}, train_samples=20, test_samples=20)
    assert res.advantages.shape == (1, 1, 1)
    assert res.advantages[0, 0, 0] > 0.8
