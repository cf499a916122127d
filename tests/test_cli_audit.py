import json
import os
import re

import numpy as np
import pytest

from linfilt.audit import AUTHORS_CLASSIFIERS, AttackResult, Summary, attack_advantage, difference, floor_advantage
import linfilt.cli.audit
from linfilt.cli import main

K = 4
LABELS = np.repeat(np.arange(K), 30)
SAMPLES = 15


def _population(rng, models, shift=0.0):
    """(models, n, K-1) logits of models without class 0; `shift` marks the forgotten images."""
    means = np.random.default_rng(7).normal(size=(K, K - 1)) * 2
    x = means[LABELS][None] + rng.normal(scale=0.3, size=(models, 1, K - 1)) \
        + rng.normal(size=(models, LABELS.size, K - 1))
    x[:, LABELS == 0, 0] += shift
    return x.astype(np.float32)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"leaky": _population(rng, 12, shift=5.0), "clean": _population(rng, 12),
              "retrained": _population(rng, 12), "retrained2": _population(rng, 12), "labels": LABELS}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return tmp_path, arrays, paths


def _audit(paths, *extra):
    return main(["audit", "--candidate", f"leaky={paths['leaky']}", "--candidate", f"clean={paths['clean']}",
                 "--retrained", str(paths["retrained"]), "--labels", str(paths["labels"]),
                 "--forget", "0", "--repeats", "3", "--samples", str(SAMPLES), "--seed", "4", *extra])


def test_audit_numbers_are_the_library_attack_on_the_same_splits(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "audit.json"
    assert _audit(paths, "--retrained2", str(paths["retrained2"]), "--json", str(out)) == 0
    printed = capsys.readouterr().out
    got = json.loads(out.read_text())

    kw = dict(repeats=3, seed=4, train_samples=SAMPLES, test_samples=SAMPLES)
    leaky = attack_advantage(arrays["leaky"], arrays["retrained"], LABELS, [0], **kw)
    clean = attack_advantage(arrays["clean"], arrays["retrained"], LABELS, [0], **kw)
    floor = floor_advantage(arrays["retrained"], arrays["retrained2"], LABELS, [0], **kw)
    # every result in the file is in its own type's JSON form, and reads back as the library's
    np.testing.assert_array_equal(AttackResult.from_json(got["attacks"]["leaky"]).advantages, leaky.advantages)
    np.testing.assert_array_equal(AttackResult.from_json(got["attacks"]["floor"]).advantages, floor.advantages)
    assert Summary.from_json(got["advantage"]["floor"]) == floor.summary()
    assert Summary.from_json(got["difference"]["clean − leaky"]) == difference(clean, leaky)
    # what the synthetic data was built to show
    assert got["advantage"]["leaky"]["forgotten"]["RF"]["mean"] > 0.8
    assert abs(got["advantage"]["clean"]["forgotten"]["RF"]["mean"]) < 0.3
    assert abs(got["advantage"]["floor"]["forgotten"]["RF"]["mean"]) < 0.3
    # the printed table carries the same numbers
    mean = got["advantage"]["leaky"]["forgotten"]["NN"]["mean"]
    assert re.search(rf"\| leaky \| forgotten \| {mean:.3f} \[", printed)
    assert "| floor | retained |" in printed and "| clean − leaky | forgotten |" in printed


def test_authors_sampling_and_samme_r_reach_the_library(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "audit.json"
    assert _audit(paths, "--sampling", "authors", "--adaboost", "SAMME.R", "--json", str(out)) == 0
    got = json.loads(out.read_text())
    kw = dict(repeats=3, seed=4, train_samples=SAMPLES, test_samples=SAMPLES)
    theirs = attack_advantage(arrays["leaky"], arrays["retrained"], LABELS, [0], sampling="authors",
                              classifiers=AUTHORS_CLASSIFIERS, **kw)
    np.testing.assert_array_equal(AttackResult.from_json(got["attacks"]["leaky"]).advantages, theirs.advantages)
    ours = attack_advantage(arrays["leaky"], arrays["retrained"], LABELS, [0], **kw)
    assert not np.array_equal(ours.advantages, theirs.advantages)


def test_retained_samples_is_the_per_class_count(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "audit.json"
    assert _audit(paths, "--retained-samples", "7", "--json", str(out)) == 0
    samples = {0: SAMPLES, 1: 7, 2: 7, 3: 7}
    expected = attack_advantage(arrays["clean"], arrays["retrained"], LABELS, [0], repeats=3, seed=4,
                                train_samples=samples, test_samples=samples)
    got = json.loads(out.read_text())
    np.testing.assert_array_equal(got["attacks"]["clean"]["advantages"], expected.advantages)
    assert "15 (forgotten), 7 (retained)" in capsys.readouterr().out


def test_per_class_rows(files, capsys):
    _, _, paths = files
    assert _audit(paths, "--per-class") == 0
    printed = capsys.readouterr().out
    assert "| class 0 | forgotten |" in printed and "| class 3 | retained |" in printed


def _fails(capsys, message, argv, json_path):
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not json_path.exists()


def test_bad_inputs_fail_with_one_clear_error_and_write_nothing(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "never.json"
    np.save(tmp / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp / "short.npy", arrays["clean"][:, :-1])
    np.save(tmp / "labels_short.npy", LABELS[:-1])
    base = ["audit", "--retrained", str(paths["retrained"]), "--labels", str(paths["labels"]),
            "--forget", "0", "--json", str(out)]
    _fails(capsys, "pickled.npy is not a readable .npy array without pickles",
           [*base, "--candidate", f"x={tmp / 'pickled.npy'}"], out)
    _fails(capsys, "must share the test images and outputs",
           [*base, "--candidate", f"x={tmp / 'short.npy'}"], out)
    _fails(capsys, "write NAME=PATH", [*base, "--candidate", str(paths["clean"])], out)
    _fails(capsys, "used twice", [*base, "--candidate", f"x={paths['clean']}",
                                  "--candidate", f"x={paths['leaky']}"], out)
    _fails(capsys, "missing.npy is not a file", [*base, "--candidate", f"x={tmp / 'missing.npy'}"], out)
    bad_labels = [a if a != str(paths["labels"]) else str(tmp / "labels_short.npy") for a in base]
    _fails(capsys, r"--labels has 119 entries but there are 120",
           [*bad_labels, "--candidate", f"x={paths['clean']}"], out)
    _fails(capsys, "--repeats must be a positive integer",
           [*base, "--candidate", f"x={paths['clean']}", "--repeats", "0"], out)
    _fails(capsys, "--retained-samples must be a positive integer",
           [*base, "--candidate", f"x={paths['clean']}", "--retained-samples", "0"], out)


def _snapshot(folder):
    """Every entry under `folder` with its bytes and mtime: a failed command must change none."""
    return {p: (p.is_symlink() or p.is_dir() or p.read_bytes(), p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_attack(monkeypatch):
    """Fails the test if any attack starts: the checks must all come first."""
    def attack(*args, **kwargs):
        raise AssertionError("an attack ran before every input was checked")

    monkeypatch.setattr(linfilt.cli.audit.audit, "attack_advantage", attack)
    monkeypatch.setattr(linfilt.cli.audit.audit, "floor_advantage", attack)


def _one_error(tmp, capsys, message, argv):
    """Exit 2, one line on stderr (no traceback, no progress bar), nothing created or changed."""
    before = _snapshot(tmp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("linfilt audit: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert _snapshot(tmp) == before


def test_json_path_is_checked_before_any_attack(files, capsys, no_attack):
    tmp, _, paths = files
    (tmp / "sub").mkdir()
    (tmp / "old.json").write_text("{}")
    (tmp / "link.npy").symlink_to(paths["clean"])
    os.link(paths["labels"], tmp / "hard.npy")
    base = ["audit", "--candidate", f"clean={paths['clean']}", "--retrained", str(paths["retrained"]),
            "--labels", str(paths["labels"]), "--forget", "0", "--force", "--json"]
    inputs = r"is an input of this command \(.*\); write to another file"
    for out, message in [
        (tmp / "sub", "is a folder; name a file"),
        (paths["labels"] / "x.json", "labels.npy is a file, not a folder"),
        (tmp / "sub" / ".." / "retrained.npy", inputs),
        (tmp / "link.npy", inputs),
        (tmp / "hard.npy", inputs),
    ]:
        _one_error(tmp, capsys, message, [*base, str(out)])
    _one_error(tmp, capsys, "old.json exists; choose another file or pass --force",
               [*base[:-2], "--json", str(tmp / "old.json")])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder nobody can create files in")
def test_json_in_an_unwritable_place(files, capsys, no_attack):
    tmp, _, paths = files
    _one_error(tmp, capsys, "--json /proc/audit.json: cannot write in /proc",
               ["audit", "--candidate", f"clean={paths['clean']}", "--retrained", str(paths["retrained"]),
                "--labels", str(paths["labels"]), "--forget", "0", "--json", "/proc/audit.json"])


def test_force_replaces_an_existing_json(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "audit.json"
    out.write_text("old")
    assert _audit(paths, "--json", str(out), "--force") == 0
    expected = attack_advantage(arrays["clean"], arrays["retrained"], LABELS, [0], repeats=3, seed=4,
                                train_samples=SAMPLES, test_samples=SAMPLES)
    np.testing.assert_array_equal(json.loads(out.read_text())["attacks"]["clean"]["advantages"],
                                  expected.advantages)


def test_arguments_and_files_are_checked_before_any_attack(files, capsys, no_attack):
    tmp, arrays, paths = files
    (tmp / "empty.npy").write_bytes(b"")
    np.savez(tmp / "archive.npz", x=arrays["clean"])
    os.replace(tmp / "archive.npz", tmp / "archive.npy")
    np.save(tmp / "cut.npy", arrays["clean"])
    (tmp / "cut.npy").write_bytes((tmp / "cut.npy").read_bytes()[:1000])
    base = ["audit", "--candidate", f"clean={paths['clean']}", "--retrained", str(paths["retrained"]),
            "--labels", str(paths["labels"]), "--forget", "0"]
    for extra, message in [
        (["--jobs", "0"], "--jobs must not be 0"),
        (["--repeats", "0"], "--repeats must be a positive integer"),
        (["--samples", "0"], "--samples must be a positive integer"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--forget", "0", "0"], r"--forget: class ids \[0\] are repeated"),
        (["--forget", "-1"], r"--forget: class ids \[-1\]"),
        (["--forget", "7"], r"--forget \[7\]: no test image has this label"),
    ]:
        _one_error(tmp, capsys, message, [*base, *extra])
    for name, message in [("empty.npy", "empty.npy is not a readable .npy"),
                          ("archive.npy", "archive.npy is an .npz archive, not an .npy array"),
                          ("cut.npy", "cut.npy is not a readable .npy")]:
        _one_error(tmp, capsys, message, [*base, "--candidate", f"bad={tmp / name}"])


def test_every_candidate_is_checked_and_named_before_the_first_attack(files, capsys, no_attack):
    tmp, arrays, paths = files
    nan = arrays["clean"].copy()
    nan[2, 5, 1] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "one.npy", arrays["clean"][:1])
    np.save(tmp / "ints.npy", arrays["clean"].astype(np.int64))
    _one_error(tmp, capsys, "^linfilt audit: error: --candidate nan contains NaN or infinite logits.*; "
                            "--candidate one has 1 model.*needs at least 2; "
                            "--candidate ints must hold floating-point logits",
               ["audit", "--candidate", f"good={paths['clean']}", "--candidate", f"nan={tmp / 'nan.npy'}",
                "--candidate", f"one={tmp / 'one.npy'}", "--candidate", f"ints={tmp / 'ints.npy'}",
                "--retrained", str(paths["retrained"]), "--labels", str(paths["labels"]), "--forget", "0"])


def test_all_zero_populations_give_chance_not_a_crash(files, capsys):
    """Two all-zero populations made AdaBoost raise; nothing tells them apart: advantage 0."""
    tmp, arrays, paths = files
    np.save(tmp / "zeros.npy", np.zeros_like(arrays["clean"]))
    np.save(tmp / "zeros2.npy", np.zeros_like(arrays["clean"]))
    assert main(["audit", "--candidate", f"z={tmp / 'zeros.npy'}", "--retrained", str(tmp / "zeros2.npy"),
                 "--labels", str(paths["labels"]), "--forget", "0", "--repeats", "1", "--samples", "5",
                 "--json", str(tmp / "out.json")]) == 0
    result = json.loads((tmp / "out.json").read_text())
    assert np.all(np.asarray(result["attacks"]["z"]["advantages"]) == 0.0)
