import dataclasses
import hashlib
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import requires_data

from linfilt import apply_filtration, audit, filtration_matrix, mean_logits
from linfilt.atomic import write_json
from linfilt.cli import main
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.paper import report, settings
from linfilt.paper.experiments import inversion
from linfilt.paper.experiments import reproduce as rep
from linfilt.paper.experiments import fidelity, runner, spec
from linfilt.paper.experiments.runner import ExperimentResult, result_dir, unlearn_population
from linfilt.paper.data import Dataset, load
from linfilt.paper.population import DEFAULT_CHUNK, results_dir, run_dir, train_populations


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
    del key["note"], key["protocol"], key["keep_outputs"]  # defaults are left out of the key
    assert exp.digest() == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert exp.digest() == "11f951a797d59fdf"  # the folder of a run made before Experiment.to_json
    kept = dataclasses.replace(exp, keep_outputs=True)
    assert kept.digest() == hashlib.sha256(json.dumps({**key, "keep_outputs": True}, sort_keys=True)
                                           .encode()).hexdigest()[:16]
    assert spec.Experiment.from_json(json.loads(json.dumps(kept.to_json()))) == kept
    with pytest.raises(LinfiltError, match="not an experiment.*epochz"):
        spec.Experiment.from_json({**exp.to_json(), "epochz": 3})


def test_only_an_artefact_showing_the_kept_outputs_row_audits_it():
    """Table 1 (MNIST) shows the keep_outputs row: its experiment audits it, under a digest of its
    own; Tables 7, 8, the fidelity study and every other experiment keep their digests, and so
    their stored results."""
    full = rep.experiments_for(["table1", "table7", "table8"], None, None, None)
    assert full["mnist"] == dataclasses.replace(spec.EXPERIMENTS["mnist"], keep_outputs=True)
    assert full["mnist"].rows() == [*settings.METHODS, spec.KEPT_OUTPUTS]
    assert rep.experiments_for(["table7", "table8"], None, None, None)["mnist"].digest() == "95f6b3f7171f47e5"
    assert full["mnist"].digest() != "95f6b3f7171f47e5"
    every = rep.experiments_for(rep.resolve(["all"]), 20, 2, 3)
    assert [n for n, e in every.items() if e.keep_outputs] == ["mnist"]
    assert all(e == spec.EXPERIMENTS[n].scaled(20, 2, 3) for n, e in every.items() if n != "mnist")
    assert spec.ARTIFACTS["table7"].rows == settings.METHODS  # Table 7 does not show it


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
    assert sum(r.startswith("| normalization, k outputs kept (vs retrained with k outputs) |") for r in rows) == 2
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
    exp = dataclasses.replace(small.scaled(models=4, epochs=1, repeats=2), keep_outputs=True)  # Table 1's
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


@pytest.fixture()
def small_digits(monkeypatch):
    """The experiments below train on 300 digits images and test on 60 (the runner loads these)."""
    d = load("digits")
    small = Dataset("digits", d.x_train[:300], d.y_train[:300], d.x_test[:60], d.y_test[:60], d.classes)
    monkeypatch.setattr(runner, "load", lambda name: small)
    return small


def _tiny(name="chunky"):
    return spec.Experiment(name, "digits", (3,), models=4, epochs=1, methods=("naive",),
                           forgotten_samples=5, retained_samples=5, repeats=2)


def test_a_chunk_size_trains_its_own_populations_into_its_own_result_folder(tmp_path, small_digits,
                                                                           monkeypatch):
    exp = _tiny()
    cfg, floor = exp.population("cpu"), exp.population("cpu", seed=exp.seed + 1)
    assert cfg.strategy == "grouped"  # batched: the chunk size is part of the numbers
    default = result_dir(exp, tmp_path, "cpu")
    assert default == tmp_path / "chunky" / f"{exp.digest()}-cpu"  # the folder of earlier runs
    assert result_dir(exp, tmp_path, "cpu", DEFAULT_CHUNK) == default
    chunked = result_dir(exp, tmp_path, "cpu", 2)
    assert chunked == default.with_name(default.name + "-chunk2")

    result = runner.run_experiment(exp, tmp_path, chunk_size=2, progress=False)
    assert (chunked / "metrics.json").is_file() and not default.exists()
    for c, pops in ((cfg, ("seen", "notseen")), (floor, ("notseen",))):  # the floor's too
        root = results_dir(c, tmp_path, "chunky", 2)
        assert root == run_dir(c, tmp_path, "chunky") / "chunk-2"
        for p in pops:
            assert sorted(f.name for f in (root / "chunks" / p).glob("*.npy")) == \
                ["00000-00002.npy", "00002-00004.npy"]
        assert not (run_dir(c, tmp_path, "chunky") / "logits").exists()
    # its numbers are those of populations trained in chunks of 2, independently here
    fresh = train_populations(cfg, ("seen", "notseen"), data=small_digits, out=tmp_path / "fresh",
                              chunk_size=2, progress=False)
    labels = np.asarray(small_digits.y_test)
    naive = unlearn_population(fresh["seen"], labels, exp.forget, "naive")
    expect = audit.attack_advantage(naive, fresh["notseen"], labels, exp.forget, repeats=2, seed=exp.seed,
                                    train_samples=exp.samples(10), test_samples=exp.samples(10),
                                    **runner.attack_options(exp))
    np.testing.assert_array_equal(result.attacks["naive"].advantages, expect.advantages)
    assert result.accuracy["before_all"] == pytest.approx(audit.retained_accuracy_loss(
        fresh["seen"], labels, 10, exp.forget, images="all").summary())

    # reading back: the stored populations of that chunk size, and no other
    assert runner.check_stored(exp, tmp_path, "cpu", ("seen", "notseen"), chunk_size=2) == cfg
    with pytest.raises(LinfiltError, match="no stored seen population"):
        runner.check_stored(exp, tmp_path, "cpu", ("seen",))
    np.testing.assert_array_equal(runner.stored_logits(exp, tmp_path, "cpu", ("seen",), data=small_digits,
                                                       chunk_size=2)["seen"],
                                  fresh["seen"])
    old = dataclasses.replace(result, accuracy={k: v for k, v in result.accuracy.items() if k != "before_all"})
    assert runner.with_before_all(old, tmp_path, 2).accuracy == result.accuracy
    assert runner.run_experiment(exp, tmp_path, chunk_size=2, progress=False).to_json() == result.to_json()

    # the default chunk size, named or not, is today's run: its populations and results folders
    by_default = runner.run_experiment(exp, tmp_path, chunk_size=DEFAULT_CHUNK, progress=False)
    assert (default / "metrics.json").is_file()
    assert (run_dir(cfg, tmp_path, "chunky") / "logits" / "seen.npy").is_file()
    monkeypatch.setattr(runner, "train_populations", lambda *a, **k: pytest.fail("trained again"))
    assert runner.run_experiment(exp, tmp_path, progress=False).to_json() == by_default.to_json()
    with pytest.raises(LinfiltError, match="chunk_size must be a positive integer"):
        runner.run_experiment(exp, tmp_path, chunk_size=0, progress=False)


def test_a_chunk_size_moves_the_results_only_where_it_changes_the_numbers(tmp_path, capsys):
    exp = spec.EXPERIMENTS["cifar10-p256"].scaled(4, 1, 2)
    assert exp.population("cpu").strategy == "loop"  # one model at a time: the chunks change nothing
    assert result_dir(exp, tmp_path, "cpu", 25) == result_dir(exp, tmp_path, "cpu")
    assert exp.population("cuda").strategy == "grouped"
    assert result_dir(exp, tmp_path, "cuda:1", 25).name == f"{exp.digest()}-cuda-chunk25"
    # `linfilt report` reads the results of the chunk size it is given
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    shares = np.full(9, 1 / 9)
    distribution = {"retrained": {"probabilities_mean": shares.tolist(),
                                  "probabilities_std": (shares / 10).tolist()}}
    result = ExperimentResult(exp, "cuda", classes, tuple(range(1, 10)), {}, {}, {}, distribution, {})
    write_json(result_dir(exp, tmp_path, "cuda", 25) / "metrics.json", result.to_json())
    args = ["report", "figure3", "--models", "4", "--epochs", "1", "--repeats", "2", "--device", "cuda",
            "--out", str(tmp_path)]
    assert main(args) == 2
    assert "no finished results for cifar10-p256" in capsys.readouterr().err
    assert main([*args, "--chunk-size", "25"]) == 0
    assert (tmp_path / "figure3-cifar10-p256.png").is_file()


def test_the_fidelity_study_reads_and_trains_the_populations_of_its_chunk_size(tmp_path, monkeypatch):
    seen, labels = _population(models=4, k=10)
    notseen = seen[:, :, 1:] + 1
    monkeypatch.setattr(fidelity, "load", lambda name: SimpleNamespace(y_test=labels, classes=tuple("0123456789")))
    calls = []
    monkeypatch.setattr(fidelity, "train_populations", lambda cfg, names, **kw: calls.append((cfg.seed, kw)) or {
        "seen": seen, "notseen": notseen})
    monkeypatch.setitem(settings.FIDELITY, "rows", ("naive",))
    exp = dataclasses.replace(spec.EXPERIMENTS["mnist"].scaled(4, 1, 2), forgotten_samples=6,
                              retained_samples=5)
    with pytest.raises(LinfiltError, match=r"no stored seen population of mnist \(seed 1\).*chunk-2"):
        fidelity.run(exp, tmp_path, seeds=(1,), train=False, chunk_size=2, progress=False)
    result = fidelity.run(exp, tmp_path, seeds=(1,), chunk_size=2, progress=False)
    assert [(seed, kw["chunk_size"], kw["backend"]) for seed, kw in calls] == [(1, 2, "local")]
    stored = {p.name for p in (result_dir(exp, tmp_path, "cpu", 2) / "fidelity").iterdir()}
    assert stored == {f"seed1-{s}-{a}-{row}.json" for s in fidelity.SAMPLINGS for a in fidelity.ALGORITHMS
                      for row in settings.FIDELITY["rows"]}
    assert len(result.attacks) == len(stored)
    with pytest.raises(LinfiltError, match="chunk_size must be a positive integer"):
        fidelity.run(exp, tmp_path, seeds=(1,), chunk_size=-1, progress=False)
