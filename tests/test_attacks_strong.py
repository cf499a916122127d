"""The stronger logit attacks: logistic regression and an MLP (`STRONG_CLASSIFIERS`), and the
label-free `features="sorted"`; `features="logits"` keeps the paper's numbers."""
import json

import numpy as np
import pytest

from linfilt.audit import (DEFAULT_CLASSIFIERS, STRONG_CLASSIFIERS, AttackResult, Summary, attack_advantage,
                           classifier_advantages, difference, draw_attack_sets, floor_advantage)
from linfilt.errors import LinfiltError

K = 4  # classes; class 0 forgotten, so models have 3 outputs
LABELS = np.repeat(np.arange(K), 30)
SMALL = dict(train_samples=10, test_samples=10)


def population(rng, models, labels=LABELS, shift=0.0):
    """Logits (models, n, 3): class means shared by every population, a per-model offset,
    per-image noise; `shift` moves output 0 on the images of class 0."""
    means = np.random.default_rng(7).normal(size=(K, K - 1)) * 2
    x = (means[labels][None] + rng.normal(scale=0.3, size=(models, 1, K - 1))
         + rng.normal(size=(models, labels.size, K - 1)))
    x[:, labels == 0, 0] += shift
    return x.astype(np.float32)


def test_lr_and_mlp_find_nothing_in_one_distribution_and_a_clear_shift():
    rng = np.random.default_rng(1)
    kw = dict(classes=[0], classifiers=STRONG_CLASSIFIERS, seed=0, **SMALL)
    same = attack_advantage(population(rng, 14), population(rng, 14), LABELS, [0], repeats=4, **kw)
    shifted = attack_advantage(population(rng, 14, shift=6.0), population(rng, 14), LABELS, [0], repeats=3, **kw)
    assert same.classifiers == shifted.classifiers == ("LR", "MLP")
    for name, est in same.summary().forgotten.items():
        assert abs(est.mean) < 0.15, (name, est)
    assert (shifted.forgotten() > 0.9).all(), shifted.forgotten()


def test_classifier_advantages_is_the_balanced_advantage():
    x = np.r_[np.zeros(6), np.ones(4)][:, None]
    y = np.r_[np.zeros(6, int), np.ones(4, int)]
    flipped = 1 - y
    got = classifier_advantages(x, y, x, y, {**DEFAULT_CLASSIFIERS, **STRONG_CLASSIFIERS}, 0)
    np.testing.assert_allclose(got, 1.0)
    # scored on swapped labels every classifier is always wrong: advantage -1
    np.testing.assert_allclose(classifier_advantages(x, y, x, flipped, STRONG_CLASSIFIERS, 0), -1.0)


def test_sorted_features_are_the_attack_on_presorted_logits_and_ignore_output_order():
    rng = np.random.default_rng(2)
    a, b = population(rng, 10, shift=1.5), population(rng, 10)
    kw = dict(classes=[0, 1], classifiers=DEFAULT_CLASSIFIERS, repeats=2, seed=5, **SMALL)
    by_keyword = attack_advantage(a, b, LABELS, [0], features="sorted", **kw)
    presorted = attack_advantage(-np.sort(-a, axis=2), -np.sort(-b, axis=2), LABELS, [0], **kw)
    np.testing.assert_array_equal(by_keyword.advantages, presorted.advantages)
    assert by_keyword.features == "sorted" and presorted.features == "logits"
    # every model's outputs in its own order: the sorted attack cannot tell, the logit attack can
    perms = [rng.permutation(K - 1) for _ in range(20)]
    a2 = np.stack([m[:, p] for m, p in zip(a, perms[:10])])
    b2 = np.stack([m[:, p] for m, p in zip(b, perms[10:])])
    np.testing.assert_array_equal(attack_advantage(a2, b2, LABELS, [0], features="sorted", **kw).advantages,
                                  by_keyword.advantages)
    assert not np.array_equal(attack_advantage(a2, b2, LABELS, [0], **kw).advantages,
                              attack_advantage(a, b, LABELS, [0], **kw).advantages)
    sets = draw_attack_sets(a, b, LABELS, 0, seed=5, features="sorted", **SMALL)
    assert (np.diff(sets.x_train, axis=1) <= 0).all() and (np.diff(sets.x_test, axis=1) <= 0).all()


def test_logits_features_keep_the_numbers_of_the_audit_before_them():
    """Advantages of attack_advantage and floor_advantage as the audit computed them before
    `features` existed (frozen from that version; the values lie on a grid of 1/30)."""
    rng = np.random.default_rng(5)
    a, b, c = population(rng, 10, shift=1.0), population(rng, 10), population(rng, 10)
    kw = dict(repeats=2, seed=11, **SMALL)
    attack = [[[8, -1, 3], [0, 2, 0], [-5, 1, 0], [-3, -2, 0]], [[12, 8, 12], [-4, 1, -5], [3, -1, 3], [2, -4, -2]]]
    floor = [[[2, 3, -3], [5, 5, 3], [2, 3, 0], [-1, -3, -1]], [[2, 3, 4], [2, -3, -3], [-7, 3, 3], [-1, -8, -7]]]
    for features in ({}, {"features": "logits"}):
        np.testing.assert_allclose(attack_advantage(a, b, LABELS, [0], **kw, **features).advantages * 30,
                                   attack, atol=1e-9)
        np.testing.assert_allclose(floor_advantage(b, c, LABELS, [0], **kw, **features).advantages * 30,
                                   floor, atol=1e-9)


def test_results_record_their_features_and_old_json_reads_as_logits():
    rng = np.random.default_rng(3)
    a, b, c = population(rng, 10, shift=1.0), population(rng, 10), population(rng, 10)
    kw = dict(classes=[0], repeats=2, seed=1, **SMALL)
    plain = attack_advantage(a, b, LABELS, [0], **kw)
    ranked = attack_advantage(a, b, LABELS, [0], features="sorted", **kw)
    assert "features" not in plain.to_json() and "features" not in plain.summary().to_json()
    stored = json.loads(json.dumps(ranked.to_json()))
    assert stored["features"] == "sorted"
    assert AttackResult.from_json(stored).features == "sorted"
    assert Summary.from_json(json.loads(json.dumps(ranked.summary().to_json()))) == ranked.summary()
    assert ranked.summary().features == "sorted" and plain.summary().features == "logits"
    assert AttackResult.from_json(plain.to_json()).features == "logits"
    assert floor_advantage(b, c, LABELS, [0], features="sorted", **kw).features == "sorted"
    assert difference(ranked, ranked).features == "sorted"
    with pytest.raises(LinfiltError, match="features"):
        difference(ranked, plain)


def test_strong_attacks_do_not_depend_on_n_jobs():
    rng = np.random.default_rng(4)
    a, b = population(rng, 10, shift=1.0), population(rng, 10)
    kw = dict(classes=[0, 1], classifiers=STRONG_CLASSIFIERS, repeats=2, seed=3, features="sorted", **SMALL)
    np.testing.assert_array_equal(attack_advantage(a, b, LABELS, [0], n_jobs=1, **kw).advantages,
                                  attack_advantage(a, b, LABELS, [0], n_jobs=2, **kw).advantages)


@pytest.mark.parametrize("features", ["Sorted", "ranks", 3, None])
def test_unknown_features_are_refused(features):
    a = population(np.random.default_rng(0), 10)
    with pytest.raises(LinfiltError, match="features must be one of"):
        attack_advantage(a, a, LABELS, [0], features=features)
    with pytest.raises(LinfiltError, match="features must be one of"):
        draw_attack_sets(a, a, LABELS, 0, features=features)
