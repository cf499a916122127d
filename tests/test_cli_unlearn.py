import re

import numpy as np
import pytest
import torch

from linfilt.cli import main
from linfilt.data import load, to_float
from linfilt.filtration import filtration_matrix, mean_logits
from linfilt.modelio import ModelSpec, load_model, save_model
from linfilt.models import build

NAMES = [f"digit{i}" for i in range(10)]


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    return ds.x_test, ds.y_test


@pytest.fixture()
def files(tmp_path, digits):
    """A random-weights digits MLP in the project's format, and the digits test split as an .npz."""
    torch.manual_seed(0)
    model = build("mlp", 10, in_features=64, hidden=(16,))
    save_model(tmp_path / "model.safetensors", model, ModelSpec.new("mlp", {"in_features": 64, "hidden": [16]}, NAMES))
    x, y = digits
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return tmp_path


def _logits(path, x):
    model, _ = load_model(path)
    with torch.no_grad():
        return model(torch.from_numpy(to_float(x))).double().numpy()


def _run(*argv):
    return main(["unlearn", *map(str, argv)])


def test_unlearn_twice_end_to_end(files, digits, capsys):
    x, y = digits
    orig = _logits(files / "model.safetensors", x)
    assert _run(files / "model.safetensors", "--forget", "3", "--data", files / "data.npz",
                "--per-class", 10, "--out", files / "u1.safetensors") == 0
    printed = capsys.readouterr().out

    A = mean_logits(orig, y, 10, per_class=10)
    u1 = _logits(files / "u1.safetensors", x)
    np.testing.assert_allclose(u1, orig @ filtration_matrix(A, [3]).T, atol=1e-4)
    assert f"condition number of A: {np.linalg.cond(A):.4g}" in printed
    assert "classes kept (9): 0 'digit0', 1 'digit1', 2 'digit2', 4 'digit4'," in printed
    kept = y != 3
    before = np.mean(orig.argmax(1)[kept] == y[kept])
    after = np.mean(np.array([0, 1, 2, 4, 5, 6, 7, 8, 9])[u1.argmax(1)][kept] == y[kept])
    assert f"accuracy on retained classes ({kept.sum()} samples): before {before:.4f}, after {after:.4f}" in printed

    # second deletion request, by name, from the first result: original ids throughout
    assert _run(files / "u1.safetensors", "--forget", "digit5", "--data", files / "data.npz",
                "--out", files / "u2.safetensors") == 0
    printed = capsys.readouterr().out
    model2, spec2 = load_model(files / "u2.safetensors")
    assert model2.head.out_features == 8
    assert spec2.class_ids == (0, 1, 2, 4, 6, 7, 8, 9)
    assert [(e.forgot, e.forgot_names, e.per_class) for e in spec2.history] == [((3,), ("digit3",), 10),
                                                                                ((5,), ("digit5",), None)]
    A2 = mean_logits(u1[kept], np.searchsorted([0, 1, 2, 4, 5, 6, 7, 8, 9], y[kept]), 9)
    np.testing.assert_allclose(_logits(files / "u2.safetensors", x), u1 @ filtration_matrix(A2, [4]).T, atol=1e-4)
    assert f"skipped {np.sum(y == 3)} samples of classes forgotten earlier" in printed
    assert "forgot 5 'digit5'" in printed
    kept2 = ~np.isin(y, [3, 5])
    u2 = _logits(files / "u2.safetensors", x)
    before2 = np.mean(np.array([0, 1, 2, 4, 5, 6, 7, 8, 9])[u1.argmax(1)][kept2] == y[kept2])
    after2 = np.mean(np.array(spec2.class_ids)[u2.argmax(1)][kept2] == y[kept2])
    assert (f"accuracy on retained classes ({kept2.sum()} samples): before {before2:.4f}, after {after2:.4f}"
            in printed)
    assert "classes kept (8): 0 'digit0', 1 'digit1', 2 'digit2', 4 'digit4', 6 'digit6'," in printed


def test_dataset_source_and_force(files, digits):
    x, y = digits
    out = files / "u.safetensors"
    out.write_bytes(b"old")
    assert _run(files / "model.safetensors", "--forget", "0", "9", "--dataset", "digits",
                "--method", "zeroing", "--out", out, "--force") == 0
    orig = _logits(files / "model.safetensors", x)
    F = filtration_matrix(mean_logits(orig, y, 10), [0, 9], method="zeroing")
    np.testing.assert_allclose(_logits(out, x), orig @ F.T, atol=1e-4)


def _fails(files, capsys, message, *argv, out="out.safetensors"):
    before = sorted(p.name for p in files.iterdir())
    assert _run(*argv, "--out", files / out) == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in files.iterdir()) == before  # nothing written, no stray temp file


def test_bad_inputs_write_nothing(files, capsys, digits):
    model, data = files / "model.safetensors", files / "data.npz"
    ok = ("--data", data)
    _fails(files, capsys, "no class 12", model, "--forget", "12", *ok)
    _fails(files, capsys, "neither a class id nor a class name", model, "--forget", "cat", *ok)
    _fails(files, capsys, "repeated", model, "--forget", "3", "digit3", *ok)
    _fails(files, capsys, "at least 2 classes left", model, "--forget", *map(str, range(9)), *ok)
    _fails(files, capsys, "is the input model", model, "--forget", "3", *ok, out="model.safetensors")
    (files / "taken.safetensors").write_bytes(b"keep me")
    _fails(files, capsys, "exists; choose another file or pass --force", model, "--forget", "3", *ok,
           out="taken.safetensors")
    assert (files / "taken.safetensors").read_bytes() == b"keep me"
    _fails(files, capsys, "needs --seed", model, "--forget", "3", "--method", "randomization", *ok)

    torch.save({"w": torch.ones(2)}, files / "plain.pt")
    _fails(files, capsys, "PyTorch pickle", files / "plain.pt", "--forget", "3", *ok)
    (files / "cut.safetensors").write_bytes(model.read_bytes()[:-10])
    _fails(files, capsys, "truncated", files / "cut.safetensors", "--forget", "3", *ok)

    x, y = digits
    np.savez(files / "noy.npz", x=x)
    _fails(files, capsys, r"lacks arrays \['y'\]", model, "--forget", "3", "--data", files / "noy.npz")
    np.savez(files / "label.npz", x=x, y=np.where(y == 4, 42, y))
    _fails(files, capsys, r"labels \[42\] that are not classes", model, "--forget", "3", "--data", files / "label.npz")
    _fails(files, capsys, "no such file", model, "--forget", "3", "--data", files / "absent.npz")

    with pytest.raises(SystemExit) as exc:  # an empty --forget is refused by the parser
        _run(model, "--forget", "--data", data, "--out", files / "out.safetensors")
    assert exc.value.code == 2
    assert not (files / "out.safetensors").exists()


def test_already_forgotten(files, capsys):
    ok = ("--data", files / "data.npz")
    assert _run(files / "model.safetensors", "--forget", "3", *ok, "--out", files / "u1.safetensors") == 0
    _fails(files, capsys, "class 3 was already forgotten", files / "u1.safetensors", "--forget", "digit3", *ok)
