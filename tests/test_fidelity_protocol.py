"""The attack protocol as a named choice (ours / the authors'), Table 8's all-images row, and the
fidelity study, on small synthetic populations (no data set needed)."""
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from linfilt import audit
from linfilt.attacks import samme_r
from linfilt.errors import LinfiltError
from linfilt.paper import report
from linfilt.paper.experiments import fidelity, runner, spec
from linfilt.paper.experiments.runner import result_dir, unlearn_population

K = 10


def _populations(models=4, n_per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), n_per_class)
    centres = rng.normal(scale=2, size=(models, K, K)) + 5 * np.eye(K)
    seen = (centres[:, labels, :] + rng.normal(size=(models, labels.size, K))).astype(np.float32)
    notseen = (rng.normal(size=(models, labels.size, K - 1)) + 5 * np.eye(K)[labels][:, 1:]).astype(np.float32)
    return seen, notseen, labels


def _small(protocol="ours"):
    exp = spec.EXPERIMENTS["mnist"].scaled(models=4, epochs=1, repeats=2, protocol=protocol)
    return dataclasses.replace(exp, forgotten_samples=6, retained_samples=5)


def _fake_store(monkeypatch, module, seen, notseen, labels):
    monkeypatch.setattr(module, "load", lambda name: SimpleNamespace(y_test=labels, classes=tuple("0123456789")))
    pops = {"seen": seen, "notseen": notseen}
    monkeypatch.setattr(module, "train_populations", lambda cfg, names, **kw: {
        p: pops[p] + (0.5 * cfg.seed if p == "seen" else 0) for p in names})


def test_the_default_protocol_keeps_the_digests_and_authors_changes_them():
    exp = spec.EXPERIMENTS["mnist"]
    assert exp.protocol == "ours" and exp.scaled(protocol="ours").digest() == exp.digest()
    assert exp.digest() == "95f6b3f7171f47e5"  # the stored full-scale MNIST run's folder
    authors = exp.scaled(protocol="authors")
    assert authors.digest() != exp.digest()
    assert spec.Experiment.from_json(json.loads(json.dumps(authors.to_json()))) == authors
    # the authors' protocol trains their ResNet for AT&T; the MNIST population is unchanged
    assert authors.population().digest() == exp.population().digest()
    att = spec.EXPERIMENTS["att_faces"]
    assert att.scaled(protocol="authors").population().arch_kwargs == {"variant": "authors"}
    assert att.population().arch_kwargs == {}
    with pytest.raises(LinfiltError, match="--protocol must be one of"):
        exp.scaled(protocol="paper")


def test_authors_protocol_runs_their_attack_and_reports_the_fixed_split(tmp_path, monkeypatch):
    seen, notseen, labels = _populations()
    _fake_store(monkeypatch, runner, seen, notseen, labels)
    exp = _small("authors")
    result = runner.run_experiment(exp, tmp_path, progress=False)
    naive = unlearn_population(seen, labels, exp.forget, "naive")
    expect = audit.attack_advantage(naive, notseen, labels, exp.forget, repeats=2, seed=exp.seed,
                                    train_samples=exp.samples(K), test_samples=exp.samples(K),
                                    sampling="authors", classifiers=audit.AUTHORS_CLASSIFIERS)
    np.testing.assert_array_equal(result.attacks["naive"].advantages, expect.advantages)
    ours = audit.attack_advantage(naive, notseen, labels, exp.forget, repeats=2, seed=exp.seed,
                                  train_samples=exp.samples(K), test_samples=exp.samples(K))
    assert not np.array_equal(expect.advantages, ours.advantages)
    # Table 8: the model before unlearning on every test image, as the authors scored it
    all_images = audit.retained_accuracy_loss(seen, labels, K, exp.forget, images="all").summary()
    assert result.accuracy["before_all"] == pytest.approx(all_images)
    assert result.accuracy["before"] != pytest.approx(all_images)
    table = report.advantage_table(result, ["naive"], None)
    fixed = result.advantage["naive"].forgotten["NN"].fixed
    assert f"· fixed {fixed:.3f}" in table
    assert "fixed" not in report.advantage_table(dataclasses.replace(result, experiment=_small()), ["naive"], None)


def test_a_result_stored_before_the_all_images_row_gets_it_from_the_stored_logits(tmp_path, monkeypatch):
    seen, notseen, labels = _populations()
    _fake_store(monkeypatch, runner, seen, notseen, labels)
    exp = _small()
    result = runner.run_experiment(exp, tmp_path, progress=False)
    old = dataclasses.replace(result, accuracy={k: v for k, v in result.accuracy.items() if k != "before_all"})
    with pytest.raises(LinfiltError, match="no stored seen population"):
        runner.with_before_all(old, tmp_path)
    monkeypatch.setattr(runner, "stored_logits", lambda exp, out, device, pops, **kw: {"seen": seen})
    assert runner.with_before_all(old, tmp_path).accuracy == result.accuracy
    text = report.accuracy_table(runner.with_before_all(old, tmp_path), [], {"before": (1, 2, 3, 4)})
    lines = text.splitlines()
    assert lines[2].startswith("| before unlearning (all k outputs, all test images) |") and "1.0 ± 2.00" in lines[2]
    assert lines[3].startswith("| before unlearning (all k outputs, retained-class images only) |")
    assert lines[3].endswith("| — | — |")


def test_fidelity_runs_every_protocol_choice_and_renders_them(tmp_path, monkeypatch):
    seen, notseen, labels = _populations()
    _fake_store(monkeypatch, runner, seen, notseen, labels)
    _fake_store(monkeypatch, fidelity, seen, notseen, labels)
    exp = _small()
    stored = runner.run_experiment(exp, tmp_path, progress=False)
    result = fidelity.run(exp, tmp_path, seeds=(0, 1), progress=False)
    assert len(result.attacks) == 2 * 2 * 2 * 2  # seeds x samplings x algorithms x rows
    # the experiment's own attack is read back, the others are the audit's on the same logits
    np.testing.assert_array_equal(result.attacks[0, "ours", "SAMME", "naive"].advantages,
                                  stored.attacks["naive"].advantages)
    kw = dict(repeats=2, seed=exp.seed, train_samples=exp.samples(K), test_samples=exp.samples(K))
    shifted = unlearn_population(seen + 0.5, labels, exp.forget, "normalization")
    np.testing.assert_array_equal(
        result.attacks[1, "authors", "SAMME.R", "normalization"].advantages,
        audit.attack_advantage(shifted, notseen, labels, exp.forget, sampling="authors",
                               classifiers={"AB": samme_r}, **kw).advantages)
    assert (result_dir(exp, tmp_path, "cpu") / "fidelity" / "seed1-authors-SAMME.R-normalization.json").is_file()
    # without training, it reads stored populations only, and the stored attacks back
    with pytest.raises(LinfiltError, match=r"no stored seen population of mnist \(seed 2\)"):
        fidelity.run(exp, tmp_path, seeds=(2,), train=False, progress=False)
    monkeypatch.setattr(fidelity, "stored_logits", lambda *a, **kw: pytest.fail("attacks are stored"))
    monkeypatch.setattr(fidelity.audit, "attack_advantage", lambda *a, **kw: pytest.fail("recomputed"))
    again = fidelity.run(exp, tmp_path, seeds=(0, 1), train=False, progress=False)
    assert list(again.attacks) == list(result.attacks)
    assert all(np.array_equal(again.attacks[key].advantages, result.attacks[key].advantages)
               for key in result.attacks)
    text = report.render_fidelity(result)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum(line.startswith("| 1 | authors | fixed split |") for line in lines) == 2  # one per row
    est = result.estimate((1, "authors", "SAMME.R", "normalization"), "forgotten", "AB")
    row = [line for line in lines if line.startswith("| 1 | authors | fixed split |")][1]
    assert row.split("|")[7].strip() == f"{est.fixed:.3f}"
    assert "| paper | | one run | 0.593 | 0.609 | — | 0.641 |" in text


def test_the_commands_take_the_protocol_and_the_fidelity_study(tmp_path, capsys):
    from linfilt.cli import main
    from linfilt.paper.experiments import reproduce as rep

    assert rep.resolve(["fidelity", "table8"]) == ["table8", "fidelity"]
    assert "fidelity" not in rep.resolve(["all"])  # not one of the paper's artefacts
    assert main(["report", "table1", "--protocol", "authors", "--out", str(tmp_path)]) == 2
    assert "--models/--epochs/--repeats/--protocol first" in capsys.readouterr().err
    assert main(["reproduce", "fidelity", "--protocol", "authors", "--out", str(tmp_path)]) == 2
    assert "fidelity compares the protocols itself" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "table1", "--protocol", "paper", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "invalid choice: 'paper'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("protocol", [["ours"], {"authors": 1}])
def test_a_protocol_that_is_not_a_name_is_refused_as_such(protocol):
    with pytest.raises(LinfiltError, match="--protocol must be one of"):
        dataclasses.replace(spec.EXPERIMENTS["mnist"], protocol=protocol)


def test_reading_stored_populations_never_trains_the_missing_models(tmp_path, monkeypatch):
    # a stored population of 2 models, asked for 4: `linfilt report` must refuse, not train 2 more
    exp = _small()
    seen, _, _ = _populations(models=2)
    path = runner.results_dir(exp.population(), tmp_path, exp.name) / "logits" / "seen.npy"
    path.parent.mkdir(parents=True)
    np.save(path, seen)
    monkeypatch.setattr(runner, "train_populations", lambda *a, **kw: pytest.fail("trained"))
    with pytest.raises(LinfiltError, match=r"of 4 models at .*seen\.npy \(2 stored\)"):
        runner.stored_logits(exp, tmp_path, "cpu", ("seen",))


def test_a_fidelity_report_checks_out_before_auditing(tmp_path, monkeypatch):
    from linfilt.paper.experiments import reproduce as rep

    # without training, the study still audits what is missing and stores it under --out
    monkeypatch.setattr(fidelity, "run", lambda *a, **kw: pytest.fail("audited before --out was checked"))
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(LinfiltError, match="--out .*afile is a file"):
        rep.reproduce(["fidelity"], tmp_path / "afile", train=False, report_dir=tmp_path / "report",
                      progress=False)
    assert not (tmp_path / "report").exists()


def test_a_fidelity_report_names_a_missing_population_before_any_attack(tmp_path, monkeypatch):
    seen, notseen, labels = _populations()
    _fake_store(monkeypatch, fidelity, seen, notseen, labels)
    monkeypatch.setattr(fidelity, "stored_logits", lambda *a, **kw: {"seen": seen, "notseen": notseen})
    monkeypatch.setattr(fidelity.audit, "attack_advantage", lambda *a, **kw: pytest.fail("attacked first"))
    exp = _small()
    for population, logits in (("seen", seen), ("notseen", notseen)):  # seed 0's are stored, seed 2's not
        path = runner.results_dir(exp.population(seed=0), tmp_path, exp.name) / "logits" / f"{population}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, logits)
    with pytest.raises(LinfiltError, match=r"no stored seen population of mnist \(seed 2\)"):
        fidelity.run(exp, tmp_path, seeds=(0, 2), train=False, progress=False)
    assert not (result_dir(exp, tmp_path, "cpu") / "fidelity").exists()
