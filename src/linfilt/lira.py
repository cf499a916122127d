"""A per-image likelihood-ratio test of class unlearning, in the spirit of U-LiRA (Hayes et al.
2024, "Inexact unlearning needs more careful evaluations").

Where the paper's attack asks whether an unlearned model's logit vectors on a class look like a
retrained model's, this test asks it image by image: for every forgotten-class test image, the
retrained models' values of one statistic are fitted by a Gaussian, and each (model, image) pair
is scored by how unlikely its value is under that image's Gaussian. An unlearned model that
merely looks retrained on average is still caught where its per-image values sit in the tails.

The statistic. LiRA scales the model's confidence in the image's label, log p - log(1 - p),
because that makes it close to Gaussian over models (Carlini et al. 2022). Here the models have
no output for the forgotten class, so there is no label to be confident in. We use the output o
that the fitting ("shadow") retrained models most often predict for the image (ties: the lowest
output index): what a model that never saw the class calls the image (a 4 for a 9, say). It is
the output whose confidence an unlearning method most plausibly gets wrong, and usually the most
probable one, where the scaled logit is well conditioned. It is chosen from the shadow models
alone, so the held-out retrained models and the unlearned models are scored by the same rule
and no scored model helps choose it. log p_o - log(1 - p_o) = z_o - logsumexp_{j != o} z_j,
computed so from the logits z (no softmax that could round p_o to 0 or 1).

Per repeat: the retrained models are split at random into shadow models (a `shadow_fraction`)
and held-out ones; per image the shadow values give a mean and a variance (ddof=1, floored at
`min_variance`). Every (model, image) pair of the unlearned models (positives) and of the
held-out retrained models (negatives) is scored by its Gaussian negative log-likelihood (higher:
less like retrained), and the ROC over all those pairs gives the AUC (0.5: indistinguishable)
and the TPR at each FPR of `fprs` (see `tpr_at_fpr`). Repeats re-draw the split; their
intervals (`linfilt.audit.estimate`) describe how much the numbers move with it.

The floor is the same function with a second retrained population in the unlearned place:
`lira_attack(retrained2, retrained, ...)`. Both sides are then retrained models that the
Gaussians never saw, so its AUC is 0.5 in expectation.

Randomness: one integer seed (or a Generator, from which one is drawn); repeat r's split comes
from the stream keyed (seed, 4, r), so calls with the same seed on populations of the same
shapes use the same splits, and a method and its floor are compared pairwise.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score, roc_curve

from linfilt.audit import (Estimate, check_forget_ids, check_image_labels, check_population, check_same_images,
                           estimate, seed_entropy)
from linfilt.errors import LinfiltError
from linfilt.validation import check_array, check_float, check_positive_int

__all__ = ["LiraResult", "lira_attack", "tpr_at_fpr"]


def tpr_at_fpr(positive: Any, negative: Any, fprs: Iterable[float]) -> np.ndarray:
    """True-positive rate at each false-positive rate of `fprs`, for scores where higher means
    positive.

    Between two points of the empirical ROC the curve is interpolated linearly: a test that picks
    one of the two thresholds at random achieves exactly that pair of rates, so the value is
    attainable, not a guess. Ties between positive and negative scores make a diagonal segment
    (random tie-breaking). With fewer than 1/fpr negatives the first false positive already costs
    more than fpr: the value then lies on the segment from the last point with no false positive
    to the first with one, and rests on the single highest-scoring negative.
    """
    pos = check_array(positive, "positive", ndim=1)
    neg = check_array(negative, "negative", ndim=1)
    if pos.size == 0 or neg.size == 0:
        raise LinfiltError("tpr_at_fpr needs at least one positive and one negative score")
    targets = _fprs(fprs)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg],
                            drop_intermediate=False)
    left = np.searchsorted(fpr, targets, side="right") - 1  # the last point with fpr <= target
    right = np.minimum(left + 1, fpr.size - 1)
    step = fpr[right] - fpr[left]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(step > 0, (np.asarray(targets) - fpr[left]) / step, 0.0)
    return tpr[left] + share * (tpr[right] - tpr[left])


def _fprs(fprs: Iterable[float]) -> tuple[float, ...]:
    if isinstance(fprs, (str, bytes)) or not isinstance(fprs, Iterable):
        raise LinfiltError(f"fprs must be a list of false-positive rates in (0, 1), got {fprs!r}")
    values = tuple(check_float(f, "each of fprs", low=0.0, high=1.0, low_open=True, high_open=True)
                   for f in fprs)
    if not values:
        raise LinfiltError("fprs is empty; give at least one false-positive rate, e.g. (0.01, 0.001)")
    return values


def _scaled_logits(logits: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(M, n): log p_o - log(1 - p_o) of output outputs[i] on image i, from logits (M, n, k)."""
    cols = np.arange(logits.shape[1])
    rest = logits.copy()
    rest[:, cols, outputs] = -np.inf
    return logits[:, cols, outputs] - logsumexp(rest, axis=2)


def _fpr_name(fpr: float) -> str:
    return f"TPR@{100 * fpr:g}%FPR"


@dataclass(frozen=True)
class LiraResult:
    """Per repeat: `auc[r]` and `tpr[r, j]` at false-positive rate `fprs[j]`.

    `images` forgotten-class test images were attacked; per repeat `shadow` retrained models fitted
    the Gaussians, and `positives` / `negatives` (model, image) pairs were scored (1 / negatives
    is the finest FPR the ROC resolves; see `tpr_at_fpr`).
    """

    auc: np.ndarray
    tpr: np.ndarray
    fprs: tuple[float, ...]
    forget: tuple[int, ...]
    images: int
    shadow: int
    positives: int
    negatives: int
    interval: str
    level: float
    seed: int

    def summary(self) -> dict[str, Estimate]:
        """Estimates over repeats: "AUC" and "TPR@<fpr>%FPR" per rate ("TPR@1%FPR", ...)."""
        def est(values: np.ndarray) -> Estimate:
            return estimate(values, interval=self.interval, level=self.level)

        return {"AUC": est(self.auc),
                **{_fpr_name(f): est(self.tpr[:, j]) for j, f in enumerate(self.fprs)}}

    def to_json(self) -> dict[str, Any]:
        return {"auc": self.auc.tolist(), "tpr": self.tpr.tolist(), "fprs": list(self.fprs),
                "forget": list(self.forget), "images": self.images, "shadow": self.shadow,
                "positives": self.positives, "negatives": self.negatives,
                "interval": self.interval, "level": self.level, "seed": self.seed}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LiraResult:
        """The inverse of `to_json`; LinfiltError if `d` is not one."""
        try:
            result = cls(np.asarray(d["auc"], dtype=np.float64), np.asarray(d["tpr"], dtype=np.float64),
                         tuple(float(f) for f in d["fprs"]), tuple(int(c) for c in d["forget"]),
                         int(d["images"]), int(d["shadow"]), int(d["positives"]), int(d["negatives"]),
                         str(d["interval"]), float(d["level"]), int(d["seed"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinfiltError(f"not a U-LiRA result: {exc!r}") from None
        if result.auc.ndim != 1 or result.tpr.shape != (result.auc.size, len(result.fprs)):
            raise LinfiltError(f"not a U-LiRA result: auc shaped {result.auc.shape} and tpr "
                               f"{result.tpr.shape}, not (repeats,) and (repeats, {len(result.fprs)})")
        return result


def lira_attack(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    labels: np.ndarray,
    forget: int | Iterable[int],
    *,
    repeats: int = 10,
    seed: int | np.random.Generator = 0,
    shadow_fraction: float = 0.5,
    fprs: Iterable[float] = (0.01, 0.001),
    min_variance: float = 1e-6,
    interval: str = "percentile",
    level: float = 0.95,
) -> LiraResult:
    """The per-image likelihood-ratio test of `unlearned` (M1, n, k') against `retrained`
    (M2, n, k') logits on the forgotten classes' test images (the module docstring says how).

    labels (n,): the test images' original class ids; forget: the forgotten class ids.
    shadow_fraction of the retrained models (rounded half up; at least 2, and at least one left
    over) fit the Gaussians in each repeat; the others are the negatives.
    The floor: `lira_attack(retrained2, retrained, ...)` with the same seed.
    """
    unlearned = check_population("unlearned", unlearned)
    retrained = check_population("retrained", retrained)
    check_same_images(unlearned, retrained, ("unlearned", "retrained"))
    labels = check_image_labels(labels, unlearned.shape[1])
    forget_t = check_forget_ids(forget)
    missing = [c for c in forget_t if not np.any(labels == c)]
    if missing:
        raise LinfiltError(f"forgotten class(es) {missing} have no test images; the test attacks them")
    if unlearned.shape[2] < 2:
        raise LinfiltError("the models need at least 2 outputs: with one, every softmax is 1")
    repeats = check_positive_int(repeats, "repeats")
    shadow_fraction = check_float(shadow_fraction, "shadow_fraction", low=0.0, high=1.0,
                                  low_open=True, high_open=True)
    n_shadow = int(np.floor(shadow_fraction * retrained.shape[0] + 0.5))
    if n_shadow < 2 or n_shadow >= retrained.shape[0]:
        raise LinfiltError(
            f"retrained has {retrained.shape[0]} model(s): a shadow_fraction of {shadow_fraction} gives "
            f"{n_shadow} shadow model(s), but the Gaussians need at least 2 and at least one model must "
            "be left over; train more retrained models or change shadow_fraction"
        )
    targets = _fprs(fprs)
    min_variance = check_float(min_variance, "min_variance", low=0.0, low_open=True)
    estimate(np.zeros(1), interval=interval, level=level)  # validates interval and level up front
    entropy = seed_entropy(seed)

    images = np.flatnonzero(np.isin(labels, forget_t))
    positive_logits = unlearned[:, images].astype(np.float64)
    retrained_logits = retrained[:, images].astype(np.float64)
    k = positive_logits.shape[2]
    auc, tpr = np.empty(repeats), np.empty((repeats, len(targets)))
    for r in range(repeats):
        order = np.random.default_rng([entropy, 4, r, 0]).permutation(retrained.shape[0])
        shadow, held_out = retrained_logits[order[:n_shadow]], retrained_logits[order[n_shadow:]]
        votes = (shadow.argmax(axis=2)[..., None] == np.arange(k)).sum(axis=0)  # (images, k)
        outputs = votes.argmax(axis=1)
        fitted = _scaled_logits(shadow, outputs)
        mean = fitted.mean(axis=0)
        variance = np.maximum(fitted.var(axis=0, ddof=1), min_variance)

        def nll(logits: np.ndarray) -> np.ndarray:
            value = _scaled_logits(logits, outputs)
            return (0.5 * np.log(2 * np.pi * variance) + (value - mean) ** 2 / (2 * variance)).ravel()

        pos, neg = nll(positive_logits), nll(held_out)
        auc[r] = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
        tpr[r] = tpr_at_fpr(pos, neg, targets)
    return LiraResult(auc, tpr, targets, forget_t, int(images.size), n_shadow,
                      int(unlearned.shape[0] * images.size),
                      int((retrained.shape[0] - n_shadow) * images.size), interval, level, entropy)
