"""The white-box tests of a last-layer method (`linfilt.probe`): the linear probe on penultimate
features and the attack on the head's weights."""
import json

import numpy as np
import pytest
from scipy.stats import ortho_group
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from linfilt.audit import attack_advantage
from linfilt.errors import LinfiltError
from linfilt.probe import (ModelAttack, ProbeAudit, head_attack, head_features, model_attack, probe_accuracy,
                           probe_audit)

K, D = 4, 8  # classes (class 0 forgotten) and feature size
LABELS = np.repeat(np.arange(K), 60)
LOOKALIKE = np.random.default_rng(0).integers(1, K, size=LABELS.size)  # the retained class a class-0 image resembles
HEAD = np.eye(D)[1:K]  # the retained outputs read coordinates 1..3 only


def bodies(rng, models, forgot):
    """Features (models, n, D) and the head's logits (models, n, 3). A class-0 image lies near the
    class it resembles (3 on that coordinate); the original body (forgot=False) also gives it 6 on
    coordinate 0, which the head does not read, while a retrained body never learnt it.
    Each model's features come in its own random basis (its logits are computed before)."""
    centres = 3.0 * np.eye(D)[LABELS]
    zero = LABELS == 0
    centres[zero] = 3.0 * np.eye(D)[LOOKALIKE[zero]] + (0.0 if forgot else 6.0 * np.eye(D)[0])
    h = centres[None] + rng.normal(size=(models, LABELS.size, D))
    logits = h @ HEAD.T
    rotations = ortho_group.rvs(D, size=models, random_state=rng)
    return np.einsum("mnd,mde->mne", h, rotations), logits


def test_the_probe_finds_a_class_that_the_head_hides():
    rng = np.random.default_rng(1)
    (fu, lu), (fr, lr) = bodies(rng, 20, forgot=False), bodies(rng, 20, forgot=True)
    hidden = attack_advantage(lu, lr, LABELS, [0], classes=[0], repeats=3, seed=0,
                              train_samples=30, test_samples=30)
    assert np.abs(hidden.forgotten().mean(axis=0)).max() < 0.2, hidden.forgotten()  # the logits show nothing
    audit = probe_audit(fu, fr, LABELS, [0], repeats=5, seed=0)
    acc = audit.accuracy()
    assert acc["unlearned"].mean > 0.9 and acc["retrained"].mean < 0.2, acc
    # retained classes stay decodable (in a retrained body a quarter of each cluster is class 0)
    assert audit.unlearned.retained.mean() > 0.9 and audit.retrained.retained.mean() > 0.6
    assert all(e.mean > 0.9 for e in audit.attack.summary().values()), audit.attack.summary()
    assert audit.attack.features == "forgotten-class probe accuracy"


def test_features_without_class_information_give_chance():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(10, LABELS.size, D))
    acc = probe_accuracy(noise, LABELS, [0], seed=3)
    assert acc.forgotten.shape == acc.retained.shape == (10,)
    assert abs(acc.forgotten.mean() - 1 / K) < 0.1 and abs(acc.retained.mean() - 1 / K) < 0.1, acc


def test_probe_accuracy_matches_an_independent_fit_on_the_documented_split():
    rng = np.random.default_rng(4)
    features, _ = bodies(rng, 3, forgot=False)
    got = probe_accuracy(features, LABELS, [0], seed=5, train_fraction=0.4, max_images=120)
    split = np.random.default_rng([5, 7, 0, 0])  # the documented stream; per class in id order
    train, test = [], []
    for c in range(K):
        idx = split.permutation(np.flatnonzero(LABELS == c))[:30]  # 120 of 240 images: 30 a class
        train += list(idx[:12])
        test += list(idx[12:])
    train, test = np.sort(train), np.sort(test)
    for m in range(3):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        hit = probe.fit(features[m, train], LABELS[train]).predict(features[m, test]) == LABELS[test]
        assert got.forgotten[m] == hit[LABELS[test] == 0].mean()
        assert got.retained[m] == hit[LABELS[test] != 0].mean()
    again = probe_accuracy(features, LABELS, [0], seed=5, train_fraction=0.4, max_images=120, n_jobs=2)
    np.testing.assert_array_equal(again.forgotten, got.forgotten)


def heads(rng, models, norm=1.0, d=6, k=4):
    """[W | b] (models, k, d+1): rows of norm about `norm`, each model's features in a random basis,
    and a random vector added to every row (softmax cannot see it)."""
    w = rng.normal(size=(models, k, d)) * norm / np.sqrt(d)
    rotations = ortho_group.rvs(d, size=models, random_state=rng).reshape(models, d, d)
    w = np.einsum("mkd,mde->mke", w, rotations)
    w += rng.normal(size=(models, 1, d))
    b = rng.normal(size=(models, k, 1))
    return np.concatenate([w, b], axis=2)


def test_head_features_ignore_the_body_basis_and_softmax_shifts():
    rng = np.random.default_rng(5)
    head = heads(rng, 1)[0]
    w, b = head[:, :-1], head[:, -1]
    wc, bc = w - w.mean(axis=0), b - b.mean()
    expect = [wc[i] @ wc[j] for i in range(4) for j in range(i, 4)] + list(bc)
    np.testing.assert_allclose(head_features(head[None])[0], expect)
    q = ortho_group.rvs(6, random_state=1)
    moved = np.concatenate([w @ q + rng.normal(size=6), (b + 2.5)[:, None]], axis=1)
    np.testing.assert_allclose(head_features(moved[None]), head_features(head[None]), atol=1e-12)


def test_head_attack_finds_nothing_in_one_distribution_and_a_row_norm_shift():
    rng = np.random.default_rng(6)
    retrained = heads(rng, 30)
    same = head_attack(heads(rng, 30), retrained, repeats=5, seed=0)
    assert all(abs(e.mean) < 0.2 for e in same.summary().values()), same.summary()
    shifted = head_attack(heads(rng, 30, norm=3.0), retrained, repeats=5, seed=0)
    assert all(e.mean > 0.8 for e in shifted.summary().values()), shifted.summary()
    # the feature size may differ between bodies
    assert head_attack(heads(rng, 30, norm=3.0, d=9), retrained, repeats=2, seed=0).advantages.shape == (2, 3)


def test_results_round_trip_through_json():
    rng = np.random.default_rng(7)
    (fu, _), (fr, _) = bodies(rng, 10, forgot=False), bodies(rng, 10, forgot=True)
    audit = probe_audit(fu, fr, LABELS, [0], repeats=2, seed=1)
    back = ProbeAudit.from_json(json.loads(json.dumps(audit.to_json())))
    np.testing.assert_array_equal(back.unlearned.forgotten, audit.unlearned.forgotten)
    np.testing.assert_array_equal(back.attack.advantages, audit.attack.advantages)
    assert back.accuracy() == audit.accuracy() and back.attack.summary() == audit.attack.summary()
    with pytest.raises(LinfiltError, match="not a probe audit result"):
        ProbeAudit.from_json({"unlearned": {}})
    with pytest.raises(LinfiltError, match="not a model-level attack result"):
        ModelAttack.from_json({**audit.attack.to_json(), "classifiers": ["NN"]})


FEATURES = np.random.default_rng(0).normal(size=(5, LABELS.size, 3))
HEADS = np.random.default_rng(0).normal(size=(5, 3, 4))


@pytest.mark.parametrize("call, match", [
    (lambda: probe_accuracy(FEATURES[0], LABELS, [0]), "3-dimensional"),
    (lambda: probe_accuracy(FEATURES, LABELS[:-1], [0]), "one class id per test image"),
    (lambda: probe_accuracy(FEATURES, LABELS, [9]), "no test images"),
    (lambda: probe_accuracy(FEATURES, LABELS, [0], train_fraction=1.0), "train_fraction"),
    (lambda: probe_accuracy(FEATURES, LABELS, [0], max_images=0), "max_images"),
    (lambda: probe_accuracy(FEATURES, LABELS, [0], max_images=4), "raise max_images"),
    (lambda: probe_accuracy(FEATURES, LABELS, [0], n_jobs=0), "n_jobs"),
    (lambda: probe_audit(FEATURES, FEATURES[:, :10], LABELS, [0]), "same test images"),
    (lambda: probe_audit(FEATURES, FEATURES[:1], LABELS, [0]), "too few"),
    (lambda: probe_audit(FEATURES, FEATURES, LABELS, [0], classifiers={}), "classifiers is empty"),
    (lambda: head_attack(HEADS[0], HEADS), "3-dimensional"),
    (lambda: head_attack(HEADS[:, :1], HEADS[:, :1]), "outputs >= 2"),
    (lambda: head_attack(HEADS, HEADS[:, :2]), "same number of outputs"),
    (lambda: head_attack(HEADS, HEADS, repeats=0), "repeats"),
    (lambda: model_attack(np.ones((5, 2)), np.ones((5, 3))), "same number of features"),
    (lambda: model_attack(np.ones((5, 2)), np.full((5, 2), np.inf)), "NaN or infinite"),
])
def test_bad_input_gets_one_clear_error(call, match):
    with pytest.raises(LinfiltError, match=match):
        call()
