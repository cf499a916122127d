import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.neighbors import KNeighborsClassifier

from linfilt.audit import (
    AttackResult,
    Estimate,
    Summary,
    attack_advantage,
    difference,
    draw_attack_sets,
    estimate,
    floor_advantage,
    labels_changed,
    predicted_distribution,
    retained_accuracy_loss,
)
from linfilt.errors import LinfiltError

K = 4  # classes of the synthetic task; class 0 forgotten, so models have 3 outputs


def population(rng, models, labels, shift=0.0, model_spread=0.3):
    """Logits (models, n, 3): class-dependent means, a per-model offset, per-image noise;
    `shift` moves output 0 of every image of class 0 (what an attack should find)."""
    means = np.random.default_rng(7).normal(size=(K, K - 1)) * 2  # the same for every population
    offsets = rng.normal(scale=model_spread, size=(models, 1, K - 1))
    x = means[labels][None] + offsets + rng.normal(size=(models, labels.size, K - 1))
    x[:, labels == 0, 0] += shift
    return x.astype(np.float32)


LABELS = np.repeat(np.arange(K), 40)
SMALL = dict(train_samples=20, test_samples=20)


def test_identical_populations_give_advantage_near_zero_inside_interval():
    rng = np.random.default_rng(1)
    a, b = population(rng, 20, LABELS), population(rng, 20, LABELS)
    res = attack_advantage(a, b, LABELS, [0], repeats=8, seed=3, **SMALL)
    summary = res.summary()
    for group in ("forgotten", "retained"):
        for name, est in getattr(summary, group).items():
            assert abs(est.mean) < 0.15, (group, name, est)
            assert est.low <= 0.0 <= est.high, (group, name, est)
    assert res.advantages.shape == (8, K, 3)


def test_shifted_forgotten_class_gives_advantage_near_one_only_there():
    rng = np.random.default_rng(2)
    a, b = population(rng, 20, LABELS, shift=6.0), population(rng, 20, LABELS)
    res = attack_advantage(a, b, LABELS, [0], repeats=3, seed=0, **SMALL)
    assert (res.forgotten() > 0.9).all()
    assert (np.abs(res.retained()) < 0.2).all()
    # forgotten()/retained() are means over the right classes of the stored per-class numbers
    np.testing.assert_allclose(res.forgotten(), res.advantages[:, 0, :])
    np.testing.assert_allclose(res.retained(), res.advantages[:, 1:, :].mean(axis=1))


class Recorder:
    """A classifier that remembers what it was fit on and predicts with 1-NN."""

    seen: list = []

    def __init__(self, seed):
        self.knn = KNeighborsClassifier(1)

    def fit(self, x, y):
        Recorder.seen.append(x[:, 0].copy())
        self.knn.fit(x, y)
        return self

    def predict(self, x):
        Recorder.seen.append(x[:, 0].copy())
        return self.knn.predict(x)


def with_model_ids(logits, ids):
    """Feature 0 becomes a value unique to each model, large enough to dominate distances."""
    out = logits.copy()
    out[:, :, 0] = ids[:, None] * 1000
    return out


def test_split_is_by_model_even_with_a_model_identifying_feature():
    rng = np.random.default_rng(3)
    ids = rng.permutation(40).astype(np.float32)
    a = with_model_ids(population(rng, 20, LABELS), ids[:20])
    b = with_model_ids(population(rng, 20, LABELS), ids[20:])
    Recorder.seen = []
    res = attack_advantage(a, b, LABELS, [0], classes=[0, 1], repeats=3, seed=5,
                           classifiers={"spy": Recorder}, **SMALL)
    # each fit is followed by one predict: no model id may be on both sides
    for train, test in zip(Recorder.seen[0::2], Recorder.seen[1::2]):
        assert not set(np.unique(train)) & set(np.unique(test))
        assert len(np.unique(train)) == 28 and len(np.unique(test)) == 12  # 14 + 6 models per side
    # the id is exploitable: a leaky attack scored on its own training models is perfect ...
    sets = draw_attack_sets(a, b, LABELS, 0, seed=5, **SMALL)
    knn = KNeighborsClassifier(5).fit(sets.x_train, sets.y_train)
    assert (knn.predict(sets.x_train) == sets.y_train).mean() > 0.99
    # ... while the real attacks, split by model, find nothing
    res = attack_advantage(a, b, LABELS, [0], repeats=4, seed=5, **SMALL)
    assert np.abs(res.advantages.mean(axis=0)).max() < 0.25


def test_attack_sets_fixed_split_counts_and_sampling_modes():
    rng = np.random.default_rng(4)
    a, b = population(rng, 10, LABELS), population(rng, 20, LABELS)
    sets = draw_attack_sets(a, b, LABELS, 2, seed=0, train_samples=15, test_samples=25)
    # paper's split: the first 30% of each population are test models
    for y, n_models, n_test in ((1, 10, 3), (0, 20, 6)):
        assert set(sets.model_test[sets.y_test == y]) == set(range(n_test))
        assert set(sets.model_train[sets.y_train == y]) == set(range(n_test, n_models))
    for ys, models, images, count in ((sets.y_train, sets.model_train, sets.image_train, 15),
                                      (sets.y_test, sets.model_test, sets.image_test, 25)):
        assert (LABELS[images] == 2).all()
        for y in (0, 1):
            for m in np.unique(models[ys == y]):
                drawn = images[(ys == y) & (models == m)]
                assert drawn.size == count and np.unique(drawn).size == count  # no replacement
    # rows are the logits of that model on that image
    np.testing.assert_array_equal(sets.x_train[sets.y_train == 1],
                                  a[sets.model_train[sets.y_train == 1], sets.image_train[sets.y_train == 1]])


def _image_sets(sets, y, side):
    """Per model of population y (1 unlearned, 0 retrained) on one side: its images, as a set."""
    ys, models, images = ((sets.y_train, sets.model_train, sets.image_train) if side == "train"
                          else (sets.y_test, sets.model_test, sets.image_test))
    return {int(m): frozenset(images[(ys == y) & (models == m)].tolist())
            for m in np.unique(models[ys == y])}


def test_authors_sampling_shares_one_subset_per_population_and_side():
    rng = np.random.default_rng(4)
    a, b = population(rng, 10, LABELS), population(rng, 20, LABELS)
    for repeat in (0, 1):
        sets = draw_attack_sets(a, b, LABELS, 2, seed=3, repeat=repeat, sampling="authors",
                                train_samples=15, test_samples=25)
        subsets = {}
        for y in (0, 1):
            for side, count in (("train", 15), ("test", 25)):
                per_model = _image_sets(sets, y, side)
                assert len(set(per_model.values())) == 1  # every model on that side: the same images
                subsets[y, side] = next(iter(per_model.values()))
                assert len(subsets[y, side]) == count  # without replacement
                assert all(LABELS[i] == 2 for i in subsets[y, side])
        # four independent draws of 15 or 25 of 40 images: not all equal
        assert len(set(subsets.values())) == 4
        np.testing.assert_array_equal(sets.x_test[sets.y_test == 0],
                                      b[sets.model_test[sets.y_test == 0], sets.image_test[sets.y_test == 0]])
    # ours (the default) draws a fresh subset per model: the models of one side differ
    ours = draw_attack_sets(a, b, LABELS, 2, seed=3, train_samples=15, test_samples=25)
    assert len(set(_image_sets(ours, 1, "train").values())) > 1
    # a class with fewer images than asked for: every model gets all of them, either way
    few = draw_attack_sets(a, b, LABELS, 2, seed=3, sampling="authors", train_samples=50, test_samples=50)
    assert set(_image_sets(few, 0, "test").values()) == {frozenset(np.flatnonzero(LABELS == 2).tolist())}


def test_authors_sampling_in_the_attack_and_its_check():
    rng = np.random.default_rng(5)
    a, b = population(rng, 10, LABELS, shift=3.0), population(rng, 10, LABELS)
    res = attack_advantage(a, b, LABELS, [0], classes=[0, 1], sampling="authors", **SMALL)
    sets = draw_attack_sets(a, b, LABELS, 0, sampling="authors", **SMALL)
    clf = KNeighborsClassifier(5).fit(sets.x_train, sets.y_train)
    assert res.advantages[0, 0, 0] == pytest.approx(2 * ((clf.predict(sets.x_test) == sets.y_test).mean() - 0.5))
    ours = attack_advantage(a, b, LABELS, [0], classes=[0, 1], **SMALL)
    assert not np.array_equal(res.advantages, ours.advantages)
    with pytest.raises(LinfiltError, match="sampling must be one of"):
        attack_advantage(a, b, LABELS, [0], sampling="paper")


def test_attack_scores_exactly_the_sets_it_draws_in_every_repeat():
    rng = np.random.default_rng(12)
    a, b = population(rng, 10, LABELS, shift=0.7), population(rng, 10, LABELS)
    res = attack_advantage(a, b, LABELS, [0], classes=[0, 3], repeats=3, seed=4, **SMALL)
    nn = res.classifiers.index("NN")
    test_models = set()
    for r in range(3):
        for i, c in enumerate(res.classes):
            sets = draw_attack_sets(a, b, LABELS, c, seed=4, repeat=r, **SMALL)
            pred = KNeighborsClassifier(5).fit(sets.x_train, sets.y_train).predict(sets.x_test)
            accuracy = (pred == sets.y_test).mean()  # balanced here: equal populations
            assert res.advantages[r, i, nn] == pytest.approx(2 * accuracy - 1)
            test_models.add(tuple(np.unique(sets.model_test[sets.y_test == 1]).tolist()))
    assert (0, 1, 2) in test_models and len(test_models) > 1  # fixed split first, then others


def test_small_classes_use_every_image_or_draw_with_replacement_and_disjoint_images():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(K), 10)  # like AT&T: 10 images per class
    a, b = population(rng, 10, labels), population(rng, 10, labels)
    sets = draw_attack_sets(a, b, labels, 1, seed=0)  # asks for 150 per model
    for m in range(3):
        drawn = sets.image_test[(sets.model_test == m) & (sets.y_test == 1)]
        np.testing.assert_array_equal(np.sort(drawn), np.flatnonzero(labels == 1))
    rep = draw_attack_sets(a, b, labels, 1, seed=0, replace=True)
    per_model = rep.image_test[(rep.model_test == 0) & (rep.y_test == 1)]
    assert per_model.size == 150 and np.unique(per_model).size <= 10
    dis = draw_attack_sets(a, b, labels, 1, seed=0, disjoint_images=True)
    assert not set(dis.image_train) & set(dis.image_test)
    assert len(set(dis.image_test)) == 3 and len(set(dis.image_train)) == 7


class Constant:
    def __init__(self, seed):
        pass

    def fit(self, x, y):
        return self

    def predict(self, x):
        return np.ones(len(x), dtype=int)


class Oracle(Constant):
    """Knows that unlearned models' feature 0 is positive, retrained models' negative."""

    def predict(self, x):
        return (x[:, 0] > 0).astype(int)


class Inverted(Oracle):
    def predict(self, x):
        return 1 - super().predict(x)


def test_advantage_formula_on_known_classifiers_and_unequal_populations():
    rng = np.random.default_rng(6)
    a = np.abs(population(rng, 10, LABELS)) + 0.1
    b = -np.abs(population(rng, 20, LABELS)) - 0.1
    res = attack_advantage(a, b, LABELS, [0], **SMALL,
                           classifiers={"one": Constant, "oracle": Oracle, "wrong": Inverted})
    # balanced accuracy: always guessing "unlearned" is chance (0) even though 2/3 of rows are retrained
    np.testing.assert_array_equal(res.advantages[0], np.tile([0.0, 1.0, -1.0], (K, 1)))


def test_seeded_results_repeat_and_do_not_depend_on_other_classes_or_jobs():
    rng = np.random.default_rng(8)
    a, b = population(rng, 12, LABELS, shift=1.0), population(rng, 12, LABELS)
    kw = dict(classes=[0, 2], repeats=2, seed=11, **SMALL)
    first = attack_advantage(a, b, LABELS, [0], **kw)
    np.testing.assert_array_equal(first.advantages, attack_advantage(a, b, LABELS, [0], **kw).advantages)
    np.testing.assert_array_equal(first.advantages,
                                  attack_advantage(a, b, LABELS, [0], n_jobs=2, **kw).advantages)
    alone = attack_advantage(a, b, LABELS, [0], **{**kw, "classes": [2]})
    np.testing.assert_array_equal(alone.advantages[:, 0], first.advantages[:, 1])
    other = attack_advantage(a, b, LABELS, [0], classes=[0, 2], repeats=2, seed=12, **SMALL)
    assert not np.array_equal(other.advantages, first.advantages)
    # the plain floor is the attack with the second retrained population in the unlearned models' place
    floor = floor_advantage(b, a, LABELS, [0], pooled=False, **kw)
    np.testing.assert_array_equal(floor.advantages, first.advantages)
    # a Generator stands for the integer it yields first
    gen = attack_advantage(a, b, LABELS, [0], classes=[2], repeats=2, seed=np.random.default_rng(4), **SMALL)
    again = attack_advantage(a, b, LABELS, [0], classes=[2], repeats=2,
                             seed=int(np.random.default_rng(4).integers(2**63)), **SMALL)
    np.testing.assert_array_equal(gen.advantages, again.advantages)


def test_later_repeats_use_other_splits_and_difference_is_paired():
    rng = np.random.default_rng(9)
    a, b = population(rng, 12, LABELS, shift=2.0), population(rng, 12, LABELS)
    c = population(rng, 12, LABELS, shift=0.5)
    kw = dict(repeats=4, seed=2, **SMALL)
    ra, rc = attack_advantage(a, b, LABELS, [0], **kw), attack_advantage(c, b, LABELS, [0], **kw)
    assert len({tuple(r.ravel()) for r in ra.advantages}) == 4
    diff = difference(ra, rc)
    for name in ra.classifiers:
        expect = ra.forgotten()[:, ra.classifiers.index(name)] - rc.forgotten()[:, ra.classifiers.index(name)]
        assert diff.forgotten[name].mean == pytest.approx(expect.mean())
        assert diff.forgotten[name].fixed == pytest.approx(expect[0])
    with pytest.raises(LinfiltError, match="same seed"):
        difference(ra, attack_advantage(c, b, LABELS, [0], repeats=4, seed=3, **SMALL))


def test_results_write_the_stored_json_forms_and_read_them_back():
    """The forms of the reproduction's attacks/<row>.json and metrics.json, pinned: stored runs
    must keep reading."""
    res = AttackResult(np.array([[[0.5, 0.2], [0.1, 0.0]], [[0.3, 0.4], [0.1, 0.2]]]), (0, 1),
                       ("NN", "RF"), (0,), True, "percentile", 0.95, 7)
    stored = {"advantages": [[[0.5, 0.2], [0.1, 0.0]], [[0.3, 0.4], [0.1, 0.2]]], "classes": [0, 1],
              "classifiers": ["NN", "RF"], "forget": [0], "fixed_first": True,
              "interval": "percentile", "level": 0.95, "seed": 7}
    assert res.to_json() == stored
    back = AttackResult.from_json(json.loads(json.dumps(stored)))
    np.testing.assert_array_equal(back.advantages, res.advantages)
    assert (back.classes, back.classifiers, back.forget, back.seed) == ((0, 1), ("NN", "RF"), (0,), 7)
    summary = res.summary()
    nn0 = {"mean": 0.4, "low": 0.305, "high": 0.495, "fixed": 0.5, "repeats": 2}  # np.percentile by hand
    as_json = summary.to_json()
    assert as_json["forgotten"]["NN"] == pytest.approx(nn0)
    assert as_json["per_class"]["0"]["NN"] == pytest.approx(nn0)
    assert set(as_json) == {"forgotten", "retained", "per_class"}
    assert Summary.from_json(json.loads(json.dumps(as_json))) == summary
    # a group with no attacked class is absent from the JSON and None when read back
    only_forgotten = AttackResult(res.advantages[:, :1], (0,), res.classifiers, (0,), True, "percentile", 0.95, 7)
    assert "retained" not in only_forgotten.summary().to_json()
    assert Summary.from_json(only_forgotten.summary().to_json()).retained is None
    # one repeat: no interval; the estimate prints its mean alone, as JSON null or NaN alike
    single = Estimate.from_dict({"mean": 0.25, "low": None, "high": None, "fixed": 0.25, "repeats": 1})
    low, high = np.percentile([0.2, 0.4], [2.5, 97.5])
    assert str(single) == "0.250" and str(summary.forgotten["RF"]) == f"0.300 [{low:.2f}, {high:.2f}]"
    with pytest.raises(LinfiltError, match="not an attack result"):
        AttackResult.from_json({"advantages": [0.1]})
    with pytest.raises(LinfiltError, match="not an attack result.*advantages shaped"):
        AttackResult.from_json({**stored, "classes": [0]})


def test_difference_is_a_summary_of_the_paired_differences():
    rng = np.random.default_rng(9)
    a, b, c = (population(rng, 12, LABELS, shift=s) for s in (2.0, 0.0, 0.5))
    kw = dict(repeats=3, seed=2, **SMALL)
    ra, rc = attack_advantage(a, b, LABELS, [0], **kw), attack_advantage(c, b, LABELS, [0], **kw)
    diff = difference(ra, rc)
    assert isinstance(diff, Summary)
    for i, cls in enumerate(ra.classes):
        for j, name in enumerate(ra.classifiers):
            paired = ra.advantages[:, i, j] - rc.advantages[:, i, j]
            assert diff.per_class[cls][name] == estimate(paired, fixed=True)
    want = estimate(ra.retained()[:, 2] - rc.retained()[:, 2], fixed=True)  # mean of means, reordered
    assert diff.retained["AB"].as_dict() == pytest.approx(want.as_dict())


def test_estimate_intervals_match_independent_computations():
    values = np.array([0.1, 0.4, 0.2, 0.35, 0.05, 0.3])
    p = estimate(values, fixed=True)
    assert (p.low, p.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    assert p.fixed == 0.1 and p.mean == pytest.approx(values.mean()) and p.repeats == 6
    t = estimate(values, interval="t", level=0.9)
    low, high = stats.t.interval(0.9, 5, loc=values.mean(), scale=stats.sem(values))
    assert (t.low, t.high) == pytest.approx((low, high))
    single = estimate(np.array([0.3]))
    assert math.isnan(single.low) and math.isnan(single.high) and single.fixed is None


def test_retained_accuracy_and_loss_on_hand_made_logits():
    labels = np.array([0, 1, 2, 1])  # 3 classes, class 0 forgotten: outputs are classes 1, 2
    filtered = np.array([[[5, 5], [2, 0], [0, 0], [0, 1]],
                         [[0, 0], [1, 0], [0, 3], [4, 0]]], dtype=np.float64)
    res = retained_accuracy_loss(filtered, labels, 3, [0])
    np.testing.assert_allclose(res.accuracy, [1 / 3, 1.0])
    loss0 = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(1))) / 3
    loss1 = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-4))) / 3
    np.testing.assert_allclose(res.loss, [loss0, loss1])
    s = res.summary()
    assert s["accuracy_mean"] == pytest.approx(2 / 3) and s["accuracy_std"] == pytest.approx(1 / 3)
    # the model before unlearning: all 3 outputs; predicting the forgotten class is an error
    full = np.array([[[0, 0, 0], [0, 9, 0], [0, 0, 1], [3, 1, 0]]], dtype=np.float64)
    res = retained_accuracy_loss(full, labels, 3, [0])
    np.testing.assert_allclose(res.accuracy, [2 / 3])
    lse = lambda z: math.log(sum(math.exp(v) for v in z))  # noqa: E731
    expect = (lse([0, 9, 0]) - 9 + lse([0, 0, 1]) - 1 + lse([3, 1, 0]) - 1) / 3
    np.testing.assert_allclose(res.loss, [expect])
    # the authors' "before unlearning": every test image, the forgotten class' too
    res = retained_accuracy_loss(full, labels, 3, [0], images="all")
    np.testing.assert_allclose(res.accuracy, [3 / 4])  # image 0 ties: argmax picks class 0, right
    np.testing.assert_allclose(res.loss, [(lse([0, 0, 0]) + 3 * expect) / 4])
    with pytest.raises(LinfiltError, match="all k outputs"):
        retained_accuracy_loss(filtered, labels, 3, [0], images="all")


def test_labels_changed_on_hand_made_predictions():
    labels = np.array([0, 0, 1, 2, 2])  # class 0 forgotten: output i is class i + 1
    naive = np.zeros((2, 5, 2))
    method = np.zeros((2, 5, 2))
    naive[0, [1, 4], 1] = 1  # naive predicts classes 1 2 1 1 2: correct on images 2 and 4
    method[0, [1, 2, 3, 4], 1] = 1  # predicts 1 2 2 2 2: changes images 2 and 3
    naive[1, :, 1] = 1  # naive predicts 2 everywhere: correct on images 3 and 4
    method[1, 0, 1] = 1  # predicts 2 1 1 1 1: changes images 1, 2, 3, 4
    res = labels_changed(method, naive, labels, 3, [0])
    np.testing.assert_allclose(res.all, [2 / 5, 4 / 5])
    np.testing.assert_allclose(res.unlearned, [0.0, 1 / 2])
    np.testing.assert_allclose(res.correct, [1 / 2, 1.0])
    assert res.summary() == pytest.approx({"all": 0.6, "unlearned": 0.25, "correct": 0.75})
    same = labels_changed(naive, naive, labels, 3, [0]).summary()
    assert same == {"all": 0.0, "unlearned": 0.0, "correct": 0.0}


def test_predicted_distribution_of_forgotten_class():
    labels = np.array([0, 0, 1])
    logits = np.zeros((2, 3, 2))
    logits[0, 0] = [0, math.log(3)]  # softmax 1/4, 3/4
    logits[0, 1] = [math.log(3), 0]  # 3/4, 1/4
    logits[1, 0] = [0, math.log(3)]
    logits[1, 1] = [0, math.log(3)]
    logits[:, 2] = [100, 0]  # class 1's image must not count
    res = predicted_distribution(logits, labels, 0, 3, [0])
    np.testing.assert_array_equal(res.classes, [1, 2])
    np.testing.assert_allclose(res.probabilities, [[0.5, 0.5], [0.25, 0.75]])
    np.testing.assert_allclose(res.shares, [[0.5, 0.5], [0.0, 1.0]])
    s = res.summary()
    np.testing.assert_allclose(s["probabilities_mean"], [0.375, 0.625])
    np.testing.assert_allclose(s["shares_std"], [0.25, 0.25])


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(10)
    a, b = population(rng, 10, LABELS), population(rng, 10, LABELS)
    with pytest.raises(LinfiltError, match="same number of test images and outputs"):
        attack_advantage(a, b[:, :-1], LABELS, [0])
    with pytest.raises(LinfiltError, match="same number of test images and outputs"):
        attack_advantage(a, b[:, :, :2], LABELS, [0])
    with pytest.raises(LinfiltError, match=r"shaped \(models, test_images, outputs\)"):
        attack_advantage(a[0], b, LABELS, [0])
    with pytest.raises(LinfiltError, match="one class id per test image"):
        attack_advantage(a, b, LABELS[:-1], [0])
    with pytest.raises(LinfiltError, match="class 7 has no test images"):
        attack_advantage(a, b, LABELS, [0], classes=[1, 7])
    with pytest.raises(LinfiltError, match=r"\[9\] have no test images"):
        attack_advantage(a, b, LABELS, [9])
    with pytest.raises(LinfiltError, match="too few for a 70%/30% split"):
        attack_advantage(a[:1], b, LABELS, [0])
    with pytest.raises(LinfiltError, match="NaN or infinite"):
        bad = a.copy()
        bad[0, 0, 0] = np.nan
        attack_advantage(bad, b, LABELS, [0])
    with pytest.raises(LinfiltError, match="no sample count for class 3"):
        attack_advantage(a, b, LABELS, [0], train_samples={0: 5, 1: 5, 2: 5})
    with pytest.raises(LinfiltError, match="interval must be"):
        attack_advantage(a, b, LABELS, [0], interval="bootstrap")
    with pytest.raises(LinfiltError, match="outputs"):
        retained_accuracy_loss(a, LABELS, K, [0, 1])
    with pytest.raises(LinfiltError, match="same shape"):
        labels_changed(a, b[:5], LABELS, K, [0])
    with pytest.raises(LinfiltError, match="class 9 has no test images"):
        predicted_distribution(a, LABELS, 9, K, [0])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(forget="10"), "class id"),  # once forgot classes (1, 0)
        (dict(forget=True), "class id"),
        (dict(forget=[0.9]), "must be integers"),  # once became class 0
        (dict(forget=[0, 0]), "repeated"),  # once silently merged
        (dict(n_jobs=0), "n_jobs must not be 0"),
        (dict(fixed_first="no"), "fixed_first must be True or False"),
        (dict(replace=1), "replace must be True or False"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(labels=LABELS.astype(float)), "integer class ids"),
        (dict(classes=[1, 1]), "repeated"),
    ],
)
def test_bad_arguments_are_refused_before_any_attack(kwargs, words):
    rng = np.random.default_rng(11)
    args = dict(unlearned=population(rng, 10, LABELS), retrained=population(rng, 10, LABELS),
                labels=LABELS, forget=[0]) | kwargs
    with pytest.raises(LinfiltError, match=words):
        attack_advantage(**args)


def test_indistinguishable_constant_populations_give_zero_advantage():
    """All-zero logits on both sides: AdaBoost cannot fit a better-than-chance learner (it raised
    a ValueError); the attack's answer is chance, advantage 0, for every classifier."""
    zeros = np.zeros((10, len(LABELS), K))
    result = attack_advantage(zeros, zeros, LABELS, [0], repeats=2, train_samples=5, test_samples=5)
    np.testing.assert_array_equal(result.advantages, 0.0)


def test_pooled_floor_is_a_permutation_null_unlike_the_plain_one():
    # Two retrained populations that differ (a different per-model offset on output 1 of every
    # image): attacked as given, the attack finds that difference; dealt at random from their
    # pool, the two groups are exchangeable and the floor is about 0.
    rng = np.random.default_rng(21)
    a = population(rng, 20, LABELS)
    b = population(rng, 20, LABELS)
    b[:, :, 1] += 6.0
    kw = dict(classes=[0, 1], repeats=6, seed=5, **SMALL)
    plain = floor_advantage(a, b, LABELS, [0], pooled=False, **kw)
    pooled = floor_advantage(a, b, LABELS, [0], **kw)
    assert (plain.advantages > 0.9).all()
    assert abs(pooled.advantages.mean()) < 0.15
    assert pooled.advantages.shape == plain.advantages.shape and not pooled.fixed_first
    # repeats deal different groups (their advantages differ) yet the whole is seeded
    assert len(np.unique(pooled.advantages[:, 0, 0])) > 1
    np.testing.assert_array_equal(pooled.advantages,
                                  floor_advantage(a, b, LABELS, [0], n_jobs=2, **kw).advantages)


def test_pooled_floor_deals_groups_of_the_original_sizes():
    seen = []

    def spy(seed):
        class Spy(KNeighborsClassifier):
            def fit(self, x, y):
                seen.append((y == 1).sum())
                return super().fit(x, y)
        return Spy(1)

    rng = np.random.default_rng(3)
    a, b = population(rng, 10, LABELS), population(rng, 20, LABELS)
    floor_advantage(a, b, LABELS, [0], classes=[2], repeats=3, classifiers={"spy": spy}, **SMALL)
    # the group in the unlearned place has retrained2's size: 20 models, 14 of them train the attack
    assert seen == [14 * 20] * 3


def test_other_entry_points_refuse_strings_floats_and_bad_numbers_with_linfilt_errors():
    """Review: these gave TypeError/ValueError tracebacks, or took "1" / 1.7 for class 1."""
    rng = np.random.default_rng(12)
    a, b = population(rng, 10, LABELS), population(rng, 10, LABELS)
    cases = [
        (lambda: predicted_distribution(a, LABELS, "1", K, [0]), "class id"),  # once took class 1
        (lambda: predicted_distribution(a, LABELS, 1.7, K, [0]), "class id"),  # once class 1 too
        (lambda: draw_attack_sets(a, b, LABELS, "1"), "class id"),  # once "class 1 has no test images"
        (lambda: draw_attack_sets(a, b, LABELS, 1, repeat=-1), "repeat must be >= 0"),
        (lambda: attack_advantage(a, b, LABELS, [0], test_fraction="0.3"), "test_fraction must be a number"),
        (lambda: attack_advantage(a, b, LABELS, [0], level="0.9"), "level must be a number"),
        (lambda: estimate(np.zeros(3), level=1.0), "level must be < 1.0"),
        (lambda: retained_accuracy_loss(a, LABELS, str(K), [0]), "num_classes must be an integer"),
        (lambda: retained_accuracy_loss(a, LABELS, 3.0, [0]), "num_classes must be an integer"),
        (lambda: labels_changed(a, a, LABELS, str(K), [0]), "num_classes must be an integer"),
        (lambda: attack_advantage(a, b, LABELS, [0], train_samples={c: 0 for c in range(K)}),
         r"train_samples \(class 0\) must be a positive integer"),
    ]
    for call, words in cases:
        with pytest.raises(LinfiltError, match=words):
            call()
    # the checks refuse only bad values: class 1 as an integer gives its own images
    res = predicted_distribution(a, LABELS, np.int64(1), K, [0])
    np.testing.assert_allclose(res.shares.sum(axis=1), 1.0)
