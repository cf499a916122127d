"""The per-image likelihood-ratio test (`linfilt.lira`)."""
import json

import numpy as np
import pytest
from scipy import stats

from linfilt.audit import attack_advantage
from linfilt.errors import LinfiltError
from linfilt.lira import LiraResult, _scaled_logits, lira_attack, tpr_at_fpr

K = 4  # classes; class 0 forgotten, so models have 3 outputs
LABELS = np.repeat(np.arange(K), 40)
MEANS = np.random.default_rng(7).normal(size=(LABELS.size, K - 1)) * 2  # per image, shared by all populations


def population(rng, models, shift=0.0, means=MEANS):
    """Logits (models, n, 3): per-image means, a per-model offset, per-(model, image) noise;
    `shift` raises every output but the image's most likely one on the images of class 0."""
    x = (means[None] + rng.normal(scale=0.3, size=(models, 1, K - 1))
         + rng.normal(scale=0.5, size=(models, LABELS.size, K - 1)))
    if shift:
        others = np.arange(K - 1)[None, :] != means.argmax(axis=1)[:, None]
        x[:, LABELS == 0] += shift * others[LABELS == 0][None]
    return x.astype(np.float32)


def test_one_distribution_gives_auc_near_half_and_a_clear_shift_near_one():
    """Tolerance 0.06: over 40 seeds of this setting (20 vs 40 models, 40 images, 5 repeats) the
    mean AUC had standard deviation 0.017 around 0.500."""
    rng = np.random.default_rng(0)
    retrained = population(rng, 40)
    null = lira_attack(population(rng, 20), retrained, LABELS, [0], repeats=5, seed=1)
    assert abs(null.summary()["AUC"].mean - 0.5) < 0.06, null.auc
    assert (null.tpr[:, 0] < 0.1).all(), null.tpr  # near 1% TPR at 1% FPR
    shifted = lira_attack(population(rng, 20, shift=4.0), retrained, LABELS, [0], repeats=5, seed=1)
    assert (shifted.auc > 0.98).all(), shifted.auc
    assert (shifted.tpr[:, 0] > 0.5).all(), shifted.tpr
    assert set(shifted.summary()) == {"AUC", "TPR@1%FPR", "TPR@0.1%FPR"}


def test_per_image_values_are_caught_where_the_pooled_attack_sees_nothing():
    """The unlearned models give each forgotten image another image's logits: over the class the
    logit vectors are distributed as the retrained models', image by image they are not."""
    rng = np.random.default_rng(3)
    means = MEANS.copy()
    forgotten = np.flatnonzero(LABELS == 0)
    means[forgotten] = MEANS[np.roll(forgotten, 1)]
    unlearned, retrained = population(rng, 20, means=means), population(rng, 40)
    pooled = attack_advantage(unlearned, retrained, LABELS, [0], classes=[0], repeats=3, seed=0,
                              train_samples=20, test_samples=20)
    assert np.abs(pooled.forgotten().mean(axis=0)).max() < 0.2, pooled.forgotten()
    assert (lira_attack(unlearned, retrained, LABELS, [0], repeats=3, seed=0).auc > 0.8).all()


def test_one_repeat_matches_an_independent_computation():
    rng = np.random.default_rng(5)
    unlearned, retrained = population(rng, 6, shift=0.5), population(rng, 9)
    res = lira_attack(unlearned, retrained, LABELS, [0], repeats=2, seed=3, shadow_fraction=0.6)
    images = np.flatnonzero(LABELS == 0)
    for r in range(2):
        order = np.random.default_rng([3, 4, r, 0]).permutation(9)  # the documented stream
        shadow, held = retrained[order[:5]][:, images], retrained[order[5:]][:, images]
        outputs = [np.bincount(shadow[:, i].argmax(axis=1), minlength=K - 1).argmax() for i in range(images.size)]

        def statistic(logits):
            p = np.exp(logits.astype(np.float64))
            p = p / p.sum(axis=2, keepdims=True)
            p_o = p[:, np.arange(images.size), outputs]
            return np.log(p_o) - np.log1p(-p_o)

        fitted = statistic(shadow)
        mean, var = fitted.mean(axis=0), fitted.var(axis=0, ddof=1)
        score = [(0.5 * np.log(2 * np.pi * var) + (statistic(x) - mean) ** 2 / (2 * var)).ravel()
                 for x in (unlearned[:, images], held)]
        auc = stats.mannwhitneyu(*score).statistic / (score[0].size * score[1].size)
        assert res.auc[r] == pytest.approx(auc, abs=1e-9)
    assert (res.images, res.shadow, res.positives, res.negatives) == (40, 5, 6 * 40, 4 * 40)


def test_the_scaled_logit_is_stable_where_the_softmax_saturates():
    logits = np.array([[[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]])
    got = _scaled_logits(logits, np.array([0, 2]))
    np.testing.assert_allclose(got, [[1000.0, np.log(1 / 3) - np.log(2 / 3)]])


def test_tpr_at_fpr_on_hand_checked_rocs():
    # ROC (0,0) (0,1/3) (0,2/3) (1/4,2/3) (1/4,1) (1/2,1) (3/4,1) (1,1)
    np.testing.assert_allclose(tpr_at_fpr([0.35, 0.5, 0.6], [0.1, 0.2, 0.3, 0.4], [0.01, 0.125, 0.25, 0.3]),
                               [2 / 3, 2 / 3, 1.0, 1.0])
    # a tie between a positive and a negative: (0,0) (0,1/2) (1/2,1) (1,1), linear on the diagonal
    # step; 0.01 < 1/2 negatives: on the segment from the last point without a false positive
    np.testing.assert_allclose(tpr_at_fpr([0.5, 0.9], [0.2, 0.5], [0.01, 0.1, 0.25, 0.5, 0.75]),
                               [0.51, 0.6, 0.75, 1.0, 1.0])


def test_same_seed_same_numbers_and_the_json_round_trip():
    rng = np.random.default_rng(6)
    unlearned, retrained = population(rng, 8, shift=1.0), population(rng, 10)
    first = lira_attack(unlearned, retrained, LABELS, [0], repeats=3, seed=9, fprs=(0.05,))
    again = lira_attack(unlearned, retrained, LABELS, [0], repeats=3, seed=9, fprs=(0.05,))
    np.testing.assert_array_equal(first.auc, again.auc)
    assert len(set(first.auc)) == 3  # every repeat its own split
    back = LiraResult.from_json(json.loads(json.dumps(first.to_json())))
    np.testing.assert_array_equal(back.tpr, first.tpr)
    assert back.summary() == first.summary() and list(back.summary()) == ["AUC", "TPR@5%FPR"]
    with pytest.raises(LinfiltError, match="not a U-LiRA result"):
        LiraResult.from_json({"auc": [0.5]})
    with pytest.raises(LinfiltError, match="not a U-LiRA result"):
        LiraResult.from_json({**first.to_json(), "tpr": [[0.1, 0.2]]})


GOOD = population(np.random.default_rng(0), 6)


@pytest.mark.parametrize("args, kwargs, match", [
    ((GOOD[..., :1], GOOD[..., :1], LABELS, [0]), {}, "at least 2 outputs"),
    ((GOOD, GOOD[:, :10], LABELS, [0]), {}, "same number of test images"),
    ((GOOD, GOOD, LABELS[:-1], [0]), {}, "one class id per test image"),
    ((GOOD, GOOD, LABELS, [7]), {}, "no test images"),
    ((GOOD, GOOD, LABELS, [0]), {"shadow_fraction": 0.2}, "shadow"),
    ((GOOD, GOOD, LABELS, [0]), {"shadow_fraction": 0.95}, "left over"),
    ((GOOD, GOOD, LABELS, [0]), {"fprs": (0.01, 1.0)}, "fprs"),
    ((GOOD, GOOD, LABELS, [0]), {"fprs": ()}, "fprs is empty"),
    ((GOOD, GOOD, LABELS, [0]), {"min_variance": 0.0}, "min_variance"),
    ((GOOD, GOOD, LABELS, [0]), {"repeats": 0}, "repeats"),
    ((GOOD, GOOD, LABELS, [0]), {"interval": "bootstrap"}, "interval"),
    ((GOOD, np.full_like(GOOD, np.nan), LABELS, [0]), {}, "NaN"),
])
def test_bad_input_gets_one_clear_error(args, kwargs, match):
    with pytest.raises(LinfiltError, match=match):
        lira_attack(*args, **kwargs)


def test_tpr_at_fpr_refuses_empty_scores():
    with pytest.raises(LinfiltError, match="at least one positive and one negative"):
        tpr_at_fpr([], [0.1], [0.01])
