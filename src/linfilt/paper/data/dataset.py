"""The `Dataset` returned by `load`, the conversion for the models, and seeded per-class splits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linfilt.errors import LinfiltError
from linfilt.validation import check_int, check_seed


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images uint8 (N, H, W, C); labels int64 in 0..len(classes)-1; `classes[i]` names label i."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str = ""  # where the files were read from, for reports

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], as the models take it."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise LinfiltError(f"to_float expects uint8 images (N, H, W, C), got {x.dtype} with shape {x.shape}")
    out = x.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    out /= 255
    return out


def per_class_test_mask(y: np.ndarray, n_test: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask choosing `n_test[c]` items of each class c as test items.

    For c = 0, 1, ... in turn, `numpy.random.default_rng(seed).choice` draws the test items among
    the indices of class c without replacement; so a (y, n_test, seed) triple always gives one split.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c, n in enumerate(n_test):
        members = np.flatnonzero(y == c)
        if n > len(members):
            raise LinfiltError(f"class {c} has {len(members)} items, cannot put {n} into the test set")
        mask[rng.choice(members, size=int(n), replace=False)] = True
    return mask


def att_split(dataset: Dataset, test_per_person: int = 2, seed: int = 0) -> Dataset:
    """A seeded split of AT&T faces (which has none): `test_per_person` of each person's images are test.

    The paper uses all 400 images as both training and test data (what `load("att_faces")` gives);
    this is for users who want held-out faces. Both parts keep the data-set order.
    """
    if not isinstance(dataset, Dataset):
        raise LinfiltError(f"att_split expects a Dataset (from linfilt.paper.data.load), got {type(dataset).__name__}")
    test_per_person = check_int(test_per_person, "test_per_person")
    seed = check_seed(seed)
    y = np.asarray(dataset.y_train)
    if not 0 < test_per_person < np.bincount(y).min():
        raise LinfiltError(f"test_per_person must be between 1 and {np.bincount(y).min() - 1}, got {test_per_person}")
    test = per_class_test_mask(y, np.full(dataset.num_classes, test_per_person), seed)
    x = np.asarray(dataset.x_train)
    return Dataset(
        dataset.name, x[~test], y[~test], x[test], y[test], dataset.classes,
        f"{dataset.source} (split: {test_per_person} test images per person, seed {seed})",
    )
