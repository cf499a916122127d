"""Attack classifiers beyond scikit-learn's current ones.

`SammeR` is real-valued AdaBoost (SAMME.R; Zhu et al. 2009), the default algorithm of
scikit-learn's `AdaBoostClassifier` until 1.4 and so the "AB" attack of the paper's 2020 runs;
scikit-learn 1.6 removed it. It follows scikit-learn 1.3's `AdaBoostClassifier(algorithm=
"SAMME.R")` step by step (depth-1 trees, 50 of them, learning rate 1, the same random states for
the trees), so it predicts what that version predicted; tests/test_fidelity_samme_r.py checks it
against a frozen reference computed with scikit-learn 1.3.2.
"""
from __future__ import annotations

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from linfilt.errors import LinfiltError

__all__ = ["SammeR", "samme_r"]


class SammeR:
    """AdaBoost SAMME.R on depth-1 decision trees: fit(x, y), predict(x), decision_function(x)."""

    def __init__(self, n_estimators: int = 50, learning_rate: float = 1.0,
                 random_state: int | None = None) -> None:
        self.n_estimators, self.learning_rate, self.random_state = n_estimators, learning_rate, random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> SammeR:
        x = np.asarray(x, dtype=np.float64)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        k = self.classes_.size
        if k < 2:
            raise LinfiltError("SAMME.R needs at least two classes in y")
        # As scikit-learn: one RandomState; each tree's random_state is its next randint.
        states = np.random.RandomState(self.random_state)
        weight = np.full(len(x), 1.0 / len(x))
        # The coding of the true class: 1 for it, -1/(k-1) for the others.
        coding = np.where(np.arange(k) == codes[:, None], 1.0, -1.0 / (k - 1))
        self.estimators_: list[DecisionTreeClassifier] = []
        for i in range(self.n_estimators):
            tree = DecisionTreeClassifier(max_depth=1,
                                          random_state=states.randint(np.iinfo(np.int32).max))
            tree.fit(x, codes, sample_weight=weight)
            self.estimators_.append(tree)
            proba = self._proba(tree, x)
            error = np.average(proba.argmax(axis=1) != codes, weights=weight)
            if error <= 0:  # a perfect tree: nothing left to boost
                break
            if i == self.n_estimators - 1:
                break
            factor = -self.learning_rate * (k - 1) / k * (coding * np.log(proba)).sum(axis=1)
            # Only weights that are positive (or would shrink) change, as in scikit-learn.
            weight = weight * np.exp(factor * ((weight > 0) | (factor < 0)))
            total = weight.sum()
            if not np.isfinite(total) or total <= 0:
                break
            weight /= total
        return self

    def _proba(self, tree: DecisionTreeClassifier, x: np.ndarray) -> np.ndarray:
        """The tree's class probabilities over all k classes, floored at machine epsilon."""
        proba = np.zeros((len(x), self.classes_.size))
        proba[:, tree.classes_] = tree.predict_proba(x)
        return np.clip(proba, np.finfo(np.float64).eps, None)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """scikit-learn's: (n,) for two classes (positive = the second), else (n, k)."""
        x = np.asarray(x, dtype=np.float64)
        k = self.classes_.size
        score = np.zeros((len(x), k))
        for tree in self.estimators_:
            log_p = np.log(self._proba(tree, x))
            score += (k - 1) * (log_p - log_p.mean(axis=1, keepdims=True))
        score /= len(self.estimators_)  # every tree's weight is 1 in SAMME.R
        if k == 2:
            return score[:, 1] - score[:, 0]
        return score

    def predict(self, x: np.ndarray) -> np.ndarray:
        score = self.decision_function(x)
        best = (score > 0).astype(np.int64) if score.ndim == 1 else score.argmax(axis=1)
        return self.classes_[best]


def samme_r(seed: int) -> SammeR:
    """The attack factory (name -> factory(seed)) for `linfilt.audit`'s `classifiers=`."""
    return SammeR(random_state=seed)
