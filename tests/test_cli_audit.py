import json
import re

import numpy as np
import pytest

from linfilt.audit import attack_advantage, difference, floor_advantage
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
    np.testing.assert_array_equal(got["advantages_per_repeat"]["leaky"], leaky.advantages)
    np.testing.assert_array_equal(got["advantages_per_repeat"]["floor"], floor.advantages)
    expected = difference(clean, leaky)["forgotten"]["NN"].mean
    assert got["difference"]["clean − leaky"]["forgotten"]["NN"]["mean"] == pytest.approx(expected)
    # what the synthetic data was built to show
    assert got["advantage"]["leaky"]["forgotten"]["RF"]["mean"] > 0.8
    assert abs(got["advantage"]["clean"]["forgotten"]["RF"]["mean"]) < 0.3
    assert abs(got["advantage"]["floor"]["forgotten"]["RF"]["mean"]) < 0.3
    # the printed table carries the same numbers
    mean = got["advantage"]["leaky"]["forgotten"]["NN"]["mean"]
    assert re.search(rf"\| leaky \| forgotten \| {mean:.3f} \[", printed)
    assert "| floor | retained |" in printed and "| clean − leaky | forgotten |" in printed


def test_retained_samples_is_the_per_class_count(files, capsys):
    tmp, arrays, paths = files
    out = tmp / "audit.json"
    assert _audit(paths, "--retained-samples", "7", "--json", str(out)) == 0
    samples = {0: SAMPLES, 1: 7, 2: 7, 3: 7}
    expected = attack_advantage(arrays["clean"], arrays["retrained"], LABELS, [0], repeats=3, seed=4,
                                train_samples=samples, test_samples=samples)
    got = json.loads(out.read_text())
    np.testing.assert_array_equal(got["advantages_per_repeat"]["clean"], expected.advantages)
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
    _fails(capsys, r"--labels has shape \(119,\)", [*bad_labels, "--candidate", f"x={paths['clean']}"], out)
    _fails(capsys, "--repeats must be a positive integer",
           [*base, "--candidate", f"x={paths['clean']}", "--repeats", "0"], out)
    _fails(capsys, "--retained-samples must be a positive integer",
           [*base, "--candidate", f"x={paths['clean']}", "--retained-samples", "0"], out)
