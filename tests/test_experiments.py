import dataclasses
import hashlib
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import requires_data

from linfilt import apply_filtration, audit, filtration_matrix, mean_logits
from linfilt.cli import main
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.paper import report, settings
from linfilt.paper.experiments import inversion
from linfilt.paper.experiments import reproduce as rep
from linfilt.paper.experiments import runner, spec
from linfilt.paper.experiments.runner import ExperimentResult, result_dir, unlearn_population
from linfilt.paper.population import run_dir


def _population(models=5, n_per_class=20, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    centres = rng.normal(scale=4, size=(models, k, k)) + 6 * np.eye(k)
    logits = centres[:, labels, :] + rng.normal(size=(models, labels.size, k))
    return logits.astype(np.float32), labels


@pytest.mark.parametrize("method,s", [("naive", None), ("normalization", None), ("normalization", 5),
                                      ("zeroing", None)])
def test_unlearn_population_equals_a_loop_over_models(method, s):
    seen, labels = _population()
    got = unlearn_population(seen, labels, (1,), method, per_class=s)
    for m in range(len(seen)):
        F = filtration_matrix(mean_logits(seen[m], labels, 4, per_class=s), [1], method)
        np.testing.assert_allclose(got[m], apply_filtration(F, seen[m]), rtol=1e-5, atol=1e-4)
    assert got.shape == (5, 80, 3) and got.dtype == np.float32


def test_unlearn_population_randomization_is_seeded_and_differs_per_model():
    seen, labels = _population()
    a = unlearn_population(seen, labels, (0,), "randomization", seed=3)
    np.testing.assert_array_equal(a, unlearn_population(seen, labels, (0,), "randomization", seed=3))
    assert not np.allclose(a, unlearn_population(seen, labels, (0,), "randomization", seed=4))
    # Same seen model twice: a per-model z means the two filtered copies differ.
    twice = np.stack([seen[0], seen[0]])
    out = unlearn_population(twice, labels, (0,), "randomization", seed=3)
    assert not np.allclose(out[0], out[1])


def test_resolve_orders_and_rejects():
    assert rep.resolve(["figure3", "table10", "table2", "figure1"]) == ["table2", "table10", "figure1", "figure3"]
    every = [f"table{n}" for n in range(1, 11)] + ["figure1", "figure3", "figure5", "figure6"]
    assert rep.resolve(["all"]) == every  # the paper's order; one registry holds every artefact
    assert [(a.kind, a.number) for a in spec.ARTIFACTS.values()] == [
        (re.sub(r"\d", "", n), int(re.sub(r"\D", "", n))) for n in every]
    # the inversion figures need no experiment; every other artefact names known ones
    assert all(set(a.experiments) <= set(spec.EXPERIMENTS) and bool(a.experiments) != (a.layout == "inversion")
               for a in spec.ARTIFACTS.values())
    with pytest.raises(LinfiltError, match="unknown artefact 'table11'"):
        rep.resolve(["table11"])


def test_experiments_come_from_the_settings_and_round_trip_through_json():
    for name, values in settings.EXPERIMENTS.items():
        exp = spec.EXPERIMENTS[name]
        assert all(getattr(exp, key) == value for key, value in values.items())
        back = spec.Experiment.from_json(json.loads(json.dumps(exp.to_json())))
        assert back == exp and isinstance(back.forget, tuple) and isinstance(back.methods, tuple)
        assert back.digest() == exp.digest()
    # the digest is of every field but the note, with the runner version: the stored runs' keys
    exp = spec.EXPERIMENTS["mnist"].scaled(models=20, repeats=3)
    key = {**dataclasses.asdict(exp), "runner": spec.RUNNER_VERSION}
    del key["note"], key["protocol"]  # the default protocol is left out of the key
    assert exp.digest() == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert exp.digest() == "11f951a797d59fdf"  # the folder of a run made before Experiment.to_json
    with pytest.raises(LinfiltError, match="not an experiment.*epochz"):
        spec.Experiment.from_json({**exp.to_json(), "epochz": 3})


def test_scaling_validates_and_changes_the_digest():
    exp = spec.EXPERIMENTS["mnist"]
    small = exp.scaled(models=10, epochs=1)
    assert small.models == 10 and small.epochs == 1 and small.digest() != exp.digest()
    assert exp.full_scale and not small.full_scale
    with pytest.raises(LinfiltError, match="at least 4 models"):
        exp.scaled(models=3)
    with pytest.raises(LinfiltError, match="positive"):
        exp.scaled(epochs=0)


@pytest.mark.slow
@requires_data("mnist")
def test_reproduce_mnist_end_to_end_fills_every_cell(tmp_path, monkeypatch):
    # A handful of models, one epoch, few attack samples: the full flow in CI time.
    small = dataclasses.replace(spec.EXPERIMENTS["mnist"], forgotten_samples=30, retained_samples=20)
    monkeypatch.setitem(spec.EXPERIMENTS, "mnist", small)
    report = rep.reproduce(["table1", "table7", "table8"], tmp_path, models=4, epochs=1, repeats=2,
                           progress=False)
    text = report.read_text()
    for heading in ("Table 1", "Table 7", "Table 8"):
        assert f"## {heading}:" in text
    assert "nan" not in text.lower()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert any(r.startswith("| retrain vs retrain (floor) |") for r in rows)
    advantage_rows = [r for r in rows if re.match(r"\| (naive|normalization|randomization|zeroing) \| \S", r)
                      and "accuracy" not in r]
    assert len(advantage_rows) >= 2 * (2 + 4)  # tables 1 and 7, both groups
    for r in advantage_rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert all(cells), r
    # Table 8 holds accuracies for before (all images, retained images), retained and the four methods.
    acc = [r for r in rows if re.match(r"\| [^|]+ \| \d+\.\d ± ", r)]
    assert len(acc) == 7
    # The stored attacks are the audit's functions on the stored population logits.
    exp = small.scaled(models=4, epochs=1, repeats=2)
    metrics = json.loads((result_dir(exp, tmp_path, "cpu") / "metrics.json").read_text())
    assert ExperimentResult.from_json(metrics).to_json() == metrics  # read back, nothing lost
    pops = run_dir(exp.population("cpu"), tmp_path, "mnist")
    seen, notseen = (np.load(pops / "logits" / f"{p}.npy") for p in ("seen", "notseen"))
    notseen2 = np.load(run_dir(exp.population("cpu", seed=exp.seed + 1), tmp_path, "mnist")
                       / "logits" / "notseen.npy")
    labels = np.load(pops / "test_labels.npy")
    kw = dict(repeats=2, seed=exp.seed, train_samples=exp.samples(10), test_samples=exp.samples(10))
    naive = unlearn_population(seen, labels, exp.forget, "naive")
    np.testing.assert_array_equal(metrics["attacks"]["naive"]["advantages"],
                                  audit.attack_advantage(naive, notseen, labels, exp.forget, **kw).advantages)
    np.testing.assert_array_equal(metrics["attacks"]["floor"]["advantages"],
                                  audit.floor_advantage(notseen, notseen2, labels, exp.forget, **kw).advantages)
    # Rebuilding from cache gives the same report, and a scale never run is refused.
    assert rep.reproduce(["table1", "table7", "table8"], tmp_path, models=4, epochs=1, repeats=2,
                         train=False).read_text() == text
    with pytest.raises(LinfiltError, match="no finished results"):
        rep.reproduce(["table1"], tmp_path, models=5, epochs=1, repeats=2, train=False)


@requires_data("att_faces")
def test_reproduce_inversion_figures_stand_beside_the_report(tmp_path):
    report = rep.reproduce(["figure5", "figure1"], tmp_path / "runs", epochs=2, progress=False,
                           report_dir=tmp_path / "report")
    text = report.read_text()
    assert report.parent == tmp_path / "report"
    assert text.index("![figure1](figure1.png)") < text.index("![figure5](figure5.png)")
    for name in ("figure1", "figure5"):
        png = tmp_path / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| s1 |" in text  # the similarity table, one row per forgotten person
    # Rebuilt from cache without training, the report is the same.
    again = rep.reproduce(["figure1", "figure5"], tmp_path / "runs", epochs=2, train=False,
                          report_dir=tmp_path / "report")
    assert again.read_text() == text


def test_report_command_refuses_a_scale_never_run(tmp_path, capsys):
    assert main(["report", "table1", "--models", "5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("linfilt report: error: no finished results for mnist")
    assert not (tmp_path / "report.md").exists()
    assert main(["reproduce", "table11", "--out", str(tmp_path)]) == 2
    assert "unknown artefact 'table11'" in capsys.readouterr().err


def test_labels_changed_rows_follow_the_method_order_not_the_stored_key_order():
    methods = ("naive", "normalization@10", "normalization", "zeroing")
    changed = {m: {"all": 0.1, "unlearned": 0.2, "correct": 0.3} for m in sorted(methods[1:])}
    exp = dataclasses.replace(spec.EXPERIMENTS["cifar10-p256"], methods=methods, transfer=False)
    result = ExperimentResult(exp, "cpu", (), (), {}, {m: {"accuracy_mean": 0.5} for m in methods},
                              changed, {}, {})
    rows = [line.split("|")[1].strip() for line in report.labels_changed_table(result).splitlines()[2:]]
    assert rows == ["normalization, s = 10", "normalization", "zeroing"]


def test_the_inversion_is_cached_under_a_hash_of_its_whole_config(tmp_path, monkeypatch):
    base = inversion.inversion_config()
    assert base == json.loads(json.dumps(settings.INVERSION))
    folder = inversion.result_dir(tmp_path, base, "cuda:1")
    assert folder.parent == tmp_path / "inversion" and folder.name.endswith("-cuda")
    # any setting, not only the epochs, moves the results to another folder
    monkeypatch.setitem(settings.INVERSION, "step_size", 0.1)
    assert inversion.result_dir(tmp_path, inversion.inversion_config(), "cuda") != folder
    assert inversion.result_dir(tmp_path, inversion.inversion_config(epochs=150), "cuda") != folder
    with pytest.raises(LinfiltError, match="unknown inversion setting"):
        inversion.inversion_config(epoch=3)


def test_the_inversion_section_is_rendered_from_the_stored_numbers(tmp_path):
    """metrics.json holds numbers only; the report's tables are made from them on every read."""
    rng = np.random.default_rng(0)
    sim = {"to_mean_face": {"full": rng.uniform(-1, 1, (4, 4)),
                            **{m: rng.uniform(-1, 1, (4, 4, 4)) for m in inversion.METHODS}},
           "to_full_reconstruction": {m: rng.uniform(-1, 1, (4, 4)) for m in inversion.METHODS}}
    prob = {"full": rng.random(4), **{m: rng.random((4, 4)) for m in inversion.METHODS}}
    result = inversion.InversionResult(inversion.inversion_config(epochs=7), 1.0, sim, prob)
    stored = json.loads(json.dumps(result.to_json()))
    assert "markdown" not in stored
    for name in ("figure1", "figure5"):
        (tmp_path / f"{name}.png").write_bytes(b"png " + name.encode())
    (tmp_path / "report").mkdir()
    text = report.render_inversion(["figure1", "figure5"], inversion.InversionResult.from_json(stored),
                                   tmp_path, tmp_path / "report", "cpu")
    assert text.startswith("## Figures 1, 5, 6: model inversion (AT&T faces, 4 people, inversion MLP)\n\n"
                           "*7 epochs, on cpu.*")
    assert inversion.markdown(sim, prob) in text
    s2 = next(line for line in text.splitlines() if line.startswith("| s2 |"))
    assert s2.split("|")[3].strip() == f"{sim['to_mean_face']['naive'][1, 1, 1]:.2f}"
    assert (tmp_path / "report" / "figure5.png").read_bytes() == b"png figure5"


def test_a_damaged_stored_result_is_named(tmp_path, monkeypatch):
    exp = spec.EXPERIMENTS["mnist"].scaled(models=4, epochs=1, repeats=1)
    root = result_dir(exp, tmp_path, "cpu")
    root.mkdir(parents=True)
    (root / "metrics.json").write_text('{"experiment": ')
    with pytest.raises(CorruptFileError, match="metrics.json is unreadable.*rerun the same command"):
        runner.run_experiment(exp, tmp_path, progress=False)
    (root / "metrics.json").unlink()
    # a stored attack row that is JSON but not an attack result
    seen, labels = _population(models=4, k=10)
    monkeypatch.setattr(runner, "load", lambda name: SimpleNamespace(y_test=labels,
                                                                     classes=tuple("0123456789")))
    monkeypatch.setattr(runner, "train_populations", lambda cfg, pops, **kw: {
        p: seen if p == "seen" else seen[:, :, 1:] for p in pops})
    (root / "attacks").mkdir()
    (root / "attacks" / "naive.json").write_text('{"advantages": [0.1]}')
    with pytest.raises(CorruptFileError, match="naive.json is not an attack result.*delete it"):
        runner.run_experiment(exp, tmp_path, progress=False)
    # a metrics.json that is JSON but not an experiment's metrics
    (root / "metrics.json").write_text('{"experiment": {}}')
    with pytest.raises(CorruptFileError, match="metrics.json is not an experiment.*delete it"):
        runner.run_experiment(exp, tmp_path, progress=False)


@pytest.mark.parametrize("text,words", [('{"experiment": ', "is unreadable"), ('{"experiment": {}}', "is not an experiment")])
def test_a_damaged_stored_result_is_named_once_with_one_fix(tmp_path, text, words):
    path = tmp_path / "metrics.json"
    path.write_text(text)
    with pytest.raises(CorruptFileError, match=words) as caught:
        runner.read_result(path)
    message = str(caught.value)
    assert message.count(str(path)) == 1 and message.count("delete it") == 1


@pytest.mark.parametrize("names", ["table1", None, [1], ["table1", None]])
def test_artefacts_that_are_not_a_list_of_names_are_refused(names):
    # a bare string would otherwise be read letter by letter, a number give an AttributeError
    with pytest.raises(LinfiltError, match="artefacts must be a list of names"):
        rep.resolve(names)
