"""What `keep_outputs=True` leaks, measured: the experiment's logits-level drop-in model is the
PyTorch adapter's, the audit copes with its masked column, and Table 1's row shows the leak."""
import dataclasses
import re
import warnings

import numpy as np
import pytest
import torch

import linfilt
from linfilt import audit
from linfilt.paper import report
from linfilt.paper.data import Dataset, load, to_float
from linfilt.paper.experiments import runner, spec
from linfilt.paper.experiments.runner import keep_outputs, unlearn_population
from linfilt.paper.population import fit, init_model, predict_logits, train_populations

LOWEST = np.finfo(np.float32).min  # -3.4028235e38
ROW_NAME = "normalization, k outputs kept (vs retrained with k outputs)"


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def test_the_experiments_masked_logits_are_the_pytorch_drop_in_models(digits):
    """A trained MLP filtered by linfilt.unlearn(..., keep_outputs=True), A from the test images,
    gives the logits that the runner builds from the model's stored test logits."""
    x, xt = to_float(digits.x_train), to_float(digits.x_test)
    labels = np.asarray(digits.y_test)
    model = fit(init_model("mlp", {"in_features": 64, "hidden": [32]}, 10, 0), x, digits.y_train, 2, 32)
    seen = predict_logits(model, xt)[None]
    ours = keep_outputs(unlearn_population(seen, labels, (3, 7), "normalization"), 10, (3, 7))[0]

    drop_in = linfilt.unlearn(model, [3, 7], (torch.as_tensor(xt), torch.as_tensor(labels)),
                              keep_outputs=True)
    with torch.no_grad():
        theirs = drop_in(torch.as_tensor(xt)).numpy()
    assert theirs.shape == ours.shape == (len(labels), 10) and ours.dtype == np.float32
    masked = np.zeros(10, bool)
    masked[[3, 7]] = True
    np.testing.assert_array_equal(theirs[:, masked], LOWEST)  # the same constant, bit for bit
    np.testing.assert_array_equal(ours[:, masked], LOWEST)
    # F (W f + b) vs (F W) f + F b in float32: equal up to rounding
    np.testing.assert_allclose(ours[:, ~masked], theirs[:, ~masked], rtol=0,
                               atol=1e-5 * np.abs(theirs[:, ~masked]).max())
    assert not np.allclose(ours[:, ~masked], np.delete(seen[0], [3, 7], axis=1))  # it did filter


def _populations(masked_both: bool, models=10, n_per_class=30, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    first = rng.normal(size=(models, labels.size, k)).astype(np.float32)
    second = rng.normal(size=(models, labels.size, k)).astype(np.float32)
    first[..., 1] = LOWEST
    second[..., 1] = LOWEST if masked_both else second[..., 1] - 20  # learnt low, finite
    return first, second, labels


def test_the_audit_separates_a_masked_column_without_a_warning():
    """kNN (float64 squared distances ~1e77), the forest and AdaBoost (float32 thresholds) take the
    column as it is: no NaN, no inf, no warning, and complete separation in every class."""
    first, second, labels = _populations(masked_both=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = audit.attack_advantage(first, second, labels, (1,), repeats=2, train_samples=20,
                                        test_samples=20)
    np.testing.assert_array_equal(result.advantages, 1.0)


def test_a_column_masked_on_both_sides_tells_the_attack_nothing():
    """Masking the retrained models the same way only adds a constant column: the nearest
    neighbours and AdaBoost's stumps are those without it, and the advantage stays near chance."""
    first, second, labels = _populations(masked_both=True)
    kw = dict(repeats=3, train_samples=20, test_samples=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked = audit.attack_advantage(first, second, labels, (1,), **kw)
    cut = audit.attack_advantage(np.delete(first, 1, axis=2), np.delete(second, 1, axis=2), labels, (1,), **kw)
    for name in ("NN", "AB"):
        i = masked.classifiers.index(name)
        np.testing.assert_array_equal(masked.advantages[..., i], cut.advantages[..., i])
    assert np.abs(masked.advantages.mean(axis=(0, 1))).max() < 0.2


@pytest.fixture()
def small_digits(monkeypatch, digits):
    """The experiments below train on 300 digits images and test on 60 (the runner loads these)."""
    small = Dataset("digits", digits.x_train[:300], digits.y_train[:300], digits.x_test[:60],
                    digits.y_test[:60], digits.classes)
    monkeypatch.setattr(runner, "load", lambda name: small)
    return small


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_1_shows_the_kept_outputs_row_and_the_leak(tmp_path, small_digits):
    exp = spec.Experiment("kept", "digits", (3,), models=4, epochs=1, methods=("naive", "normalization"),
                          forgotten_samples=5, retained_samples=5, repeats=2, keep_outputs=True)
    result = runner.run_experiment(exp, tmp_path, progress=False)

    # the row's attack: the masked normalization logits against the stored dropin population
    cfg = exp.population("cpu")
    logits = train_populations(cfg, ("seen", "dropin"), data=small_digits, out=tmp_path, experiment="kept",
                               progress=False)
    assert logits["dropin"].shape == (4, 60, 10)
    labels = np.asarray(small_digits.y_test)
    normalized = unlearn_population(logits["seen"], labels, (3,), "normalization")
    masked = np.insert(normalized, 3, LOWEST, axis=2)
    expect = audit.attack_advantage(masked, logits["dropin"], labels, (3,), repeats=2, seed=exp.seed,
                                    train_samples=exp.samples(10), test_samples=exp.samples(10),
                                    **runner.attack_options(exp))
    np.testing.assert_array_equal(result.attacks[spec.KEPT_OUTPUTS].advantages, expect.advantages)
    assert spec.KEPT_OUTPUTS not in result.accuracy and spec.KEPT_OUTPUTS not in result.difference_vs_naive

    # every other row is what the experiment without it gives
    plain = runner.run_experiment(dataclasses.replace(exp, keep_outputs=False), tmp_path, progress=False)
    assert plain.attacks.keys() == result.attacks.keys() - {spec.KEPT_OUTPUTS}
    for row, attack in plain.attacks.items():
        np.testing.assert_array_equal(result.attacks[row].advantages, attack.advantages)
    assert plain.accuracy == result.accuracy

    # Table 1: one row per group, the leak near complete; the note under it; no paired difference
    text = report.render("table1", {"mnist": result}, tmp_path)
    rows = [line for line in text.splitlines() if line.startswith(f"| {ROW_NAME} |")]
    assert len(rows) == 2  # UNLEARNED and REMAINING
    for line in rows:
        nn_, rf, ab = (float(re.match(r"-?\d\.\d+", cell)[0]) for cell in _cells(line)[1:4])
        # the masked column is ~3.4e38 away from any finite logit: every nearest neighbour is on
        # the own side, and AdaBoost's first stump splits on it. The forest draws 3 of the 10
        # outputs per split, and with 15 images a side another output may separate them as well.
        assert nn_ == ab == 1.0 and rf > 0.5, line
        assert _cells(line)[4:] == ["—"] * 3  # the paper has no such row
    assert f"*{ROW_NAME}*: the normalization model as `linfilt.unlearn(..., keep_outputs=True)`" in text
    assert text.count(ROW_NAME) == 3
    # Table 7 and Table 8 leave it out
    for other in ("table7", "table8"):
        assert ROW_NAME not in report.render(other, {"mnist": result}, tmp_path)
