"""scikit-learn's bundled 8x8 digits (1,797 images, pixel values 0..16), as a fixed seeded split.

Pixels are rescaled exactly to 0..255 with integer arithmetic, rounding halves up:
`uint8 = (v * 255 + 8) // 16`, i.e. 0 -> 0, 8 -> 128, 16 -> 255.
Split: from each class c, `round(0.2 * n_c)` images are drawn for the test set by
`per_class_test_mask(y, ..., seed=0)` (classes in turn, `numpy.random.default_rng(0)`); the rest is
the training set (359 test / 1,438 train); both keep scikit-learn's order.
"""
from __future__ import annotations

import numpy as np

from linfilt.paper.data.dataset import Dataset, per_class_test_mask

TEST_FRACTION = 0.2
SEED = 0


def rescale(values: np.ndarray) -> np.ndarray:
    """0..16 -> 0..255 uint8, exactly: (v * 255 + 8) // 16."""
    v = np.asarray(values).astype(np.int64)
    return ((v * 255 + 8) // 16).astype(np.uint8)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_load_digits  # slow import: only when asked for

    bunch = sk_load_digits()
    x = rescale(bunch.images)[..., None]
    y = bunch.target.astype(np.int64)
    counts = np.bincount(y, minlength=10)
    test = per_class_test_mask(y, np.round(TEST_FRACTION * counts).astype(int), SEED)
    return Dataset(
        "digits", x[~test], y[~test], x[test], y[test], tuple(str(d) for d in range(10)),
        "scikit-learn (bundled)",
    )
