import os
import re

import numpy as np
import pytest
import torch

import linfilt.cli.unlearn
from linfilt.cli import main
from linfilt.paper.data import load, to_float
from linfilt.errors import LinfiltError
from linfilt.filtration import filtration_matrix, mean_logits
from linfilt.modelio import ModelSpec, load_model, save_model
from linfilt.paper.models import build

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
    _fails(files, capsys, "is an input of this command", model, "--forget", "3", *ok, out="model.safetensors")
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


def _snapshot(folder):
    """Every entry under `folder` with its bytes and mtime: a failed command must change none."""
    return {p: (p.is_symlink() or p.is_dir() or p.read_bytes(), p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _one_error(files, capsys, message, *argv):
    """Exit 2, exactly one line on stderr (`linfilt unlearn: error: ...`, no traceback), nothing
    created or changed."""
    before = _snapshot(files)
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("linfilt unlearn: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert _snapshot(files) == before


def test_output_path_rules(files, capsys):
    model, data = files / "model.safetensors", files / "data.npz"
    (files / "sub").mkdir()
    (files / "taken.safetensors").write_bytes(b"keep me")
    (files / "link.safetensors").symlink_to(model)
    os.link(data, files / "hard.npz")
    ok = (model, "--forget", "3", "--data", data, "--force")
    inputs = r"is an input of this command \(.*\); write to another file"
    for out, message in [
        (files / "sub", "is a folder; name a file"),
        (data / "x.safetensors", "data.npz is a file, not a folder"),
        (files / "sub" / ".." / "model.safetensors", inputs),
        (files / "sub" / ".." / "data.npz", inputs),  # --force never replaces the --data file
        (files / "link.safetensors", inputs),
        (files / "hard.npz", inputs),
    ]:
        _one_error(files, capsys, message, *ok, "--out", out)
    _one_error(files, capsys, "taken.safetensors exists; choose another file or pass --force",
               model, "--forget", "3", "--data", data, "--out", files / "taken.safetensors")


def test_arguments_are_checked_before_any_work(files, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(linfilt.cli.unlearn, "load_model", no_work)
    ok = (files / "model.safetensors", "--forget", "3", "--data", files / "data.npz", "--out", files / "o.safetensors")
    _one_error(files, capsys, "--seed must be >= 0, got -1", *ok, "--seed", "-1")
    _one_error(files, capsys, "--per-class must be a positive integer, got 0", *ok, "--per-class", "0")
    _one_error(files, capsys, "--device 'meta': linfilt runs models on cpu, cuda", *ok, "--device", "meta")
    _one_error(files, capsys, "--device 'gpu0' is not a torch device", *ok, "--device", "gpu0")
    _one_error(files, capsys, "--out .* is a folder", *ok[:-1], files)


def test_unreadable_data_files(files, capsys, digits):
    model = files / "model.safetensors"
    x, y = digits
    (files / "empty.npz").write_bytes(b"")
    (files / "cut.npz").write_bytes((files / "data.npz").read_bytes()[:300])
    np.save(files / "x.npy", x)
    for name, message in [("empty.npz", "empty.npz is not a readable .npz"),
                          ("cut.npz", "cut.npz is not a readable .npz"),
                          ("x.npy", "x.npy is a single .npy array; save x and y with numpy.savez")]:
        _one_error(files, capsys, message, model, "--forget", "3", "--data", files / name,
                   "--out", files / "o.safetensors")
    # every sample belongs to a class forgotten earlier: nothing left to estimate A from
    assert _run(model, "--forget", "3", "--data", files / "data.npz", "--out", files / "u1.safetensors") == 0
    np.savez(files / "only3.npz", x=x[y == 3], y=y[y == 3])
    _one_error(files, capsys, "no samples of this model's classes", files / "u1.safetensors", "--forget", "5",
               "--data", files / "only3.npz", "--out", files / "o.safetensors")


def test_data_layout_and_range_are_checked_against_the_model(files, capsys, digits):
    model = files / "model.safetensors"
    x, y = digits  # uint8 (N, 8, 8, 1)
    nchw = to_float(x)
    cases = {
        "u8_nchw.npz": (x.transpose(0, 3, 1, 2), r"uint8 of shape \(359, 1, 8, 8\): layout \(N, C, H, W\); "
                                                 r"expected uint8 \(N, H, W, C\)"),
        "f_255.npz": (nchw * 255, r"float values in \[0, 255\]; float images must lie in \[0, 1\]"),
        "f_nhwc.npz": (x / 255.0, r"float64 of shape \(359, 8, 8, 1\): layout \(N, H, W, C\); "
                                  r"expected .*float32 \(N, C, H, W\)"),
        "f_nan.npz": (np.where(nchw > 0.5, np.nan, nchw), "NaN or infinite"),
        "f_size.npz": (np.zeros((len(y), 3, 8, 8), np.float32),
                       r"samples of shape \(3, 8, 8\) but the model takes 64 values"),
        "u8_3d.npz": (x[..., 0], r"uint8 of shape \(359, 8, 8\): layout not one of these"),
    }
    for name, (images, message) in cases.items():
        np.savez(files / name, x=images, y=y)
        _one_error(files, capsys, message, model, "--forget", "3", "--data", files / name,
                   "--out", files / "o.safetensors")
    # float NCHW in [0, 1] is the same input as uint8 NHWC: the same model comes out
    np.savez(files / "f_ok.npz", x=nchw, y=y)
    for name in ("data.npz", "f_ok.npz"):
        assert _run(model, "--forget", "3", "--data", files / name, "--out", files / f"u_{name}.safetensors") == 0
    a, b = load_model(files / "u_data.npz.safetensors")[0], load_model(files / "u_f_ok.npz.safetensors")[0]
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0)


def test_conv_model_layout_uses_its_channels(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(tmp_path / "cnn.safetensors", build("cifar_cnn", 4, p=8),
               ModelSpec.new("cifar_cnn", {"p": 8}, ["a", "b", "c", "d"]))
    x = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    y = np.arange(12) % 4
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2).copy(), y=y)
    _one_error(tmp_path, capsys, r"layout \(N, C, H, W\); expected uint8 \(N, H, W, C\) .*with C = 3",
               tmp_path / "cnn.safetensors", "--forget", "0", "--data", tmp_path / "nchw.npz",
               "--out", tmp_path / "o.safetensors")
    np.savez(tmp_path / "nhwc.npz", x=x, y=y)
    assert _run(tmp_path / "cnn.safetensors", "--forget", "0", "--data", tmp_path / "nhwc.npz",
                "--out", tmp_path / "o.safetensors") == 0
    model, _ = load_model(tmp_path / "cnn.safetensors")
    with torch.no_grad():
        orig = model(torch.from_numpy(to_float(x))).double().numpy()
    F = filtration_matrix(mean_logits(orig, y, 4), [0])
    np.testing.assert_allclose(_logits(tmp_path / "o.safetensors", x), orig @ F.T, atol=1e-4)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.bfloat16, 0.03)])
def test_mixed_precision_models_run(tmp_path, digits, dtype, atol):
    x, y = digits
    torch.manual_seed(0)
    save_model(tmp_path / "m.safetensors", build("mlp", 10, in_features=64, hidden=(16,)).to(dtype),
               ModelSpec.new("mlp", {"in_features": 64, "hidden": [16]}, NAMES))
    np.savez(tmp_path / "data.npz", x=x, y=y)
    assert _run(tmp_path / "m.safetensors", "--forget", "3", "--data", tmp_path / "data.npz",
                "--out", tmp_path / "u.safetensors") == 0
    model, _ = load_model(tmp_path / "m.safetensors")
    new, _ = load_model(tmp_path / "u.safetensors")
    assert new.head.weight.dtype == dtype
    with torch.no_grad():
        inputs = torch.from_numpy(to_float(x)).to(dtype)
        orig, got = model(inputs).double().numpy(), new(inputs).double().numpy()
    F = filtration_matrix(mean_logits(orig, y, 10), [3])
    assert np.abs(orig).max() > 10 * atol  # the tolerance is small against the logits compared
    np.testing.assert_allclose(got, orig @ F.T, atol=atol)


def test_multi_line_error_messages_print_as_one_line(files, capsys, monkeypatch):
    def broken(path):
        raise LinfiltError("first line\nsecond line")

    monkeypatch.setattr(linfilt.cli.unlearn, "load_model", broken)
    _one_error(files, capsys, "error: first line second line$", files / "model.safetensors", "--forget", "3",
               "--data", files / "data.npz", "--out", files / "o.safetensors")


def test_argparse_errors_end_in_one_error_line(files, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(files / "model.safetensors", "--forget", "3", "--data", files / "data.npz", "--per-class", "x",
             "--out", files / "o.safetensors")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error:" in line] == [
        "linfilt unlearn: error: argument --per-class: invalid int value: 'x'"]
    assert err.startswith("usage: linfilt unlearn") and "Traceback" not in err


def test_a_bad_forget_set_is_refused_before_any_forward_pass(files, capsys, monkeypatch):
    """Review: a repeated class or one that leaves fewer than 2 was refused only inside
    linfilt.unlearn, after the forward passes over all of --data."""
    def no_work(*args, **kwargs):
        raise AssertionError("the model ran before the forget set was checked")

    monkeypatch.setattr(linfilt.cli.unlearn, "_logits", no_work)
    monkeypatch.setattr(linfilt.cli.unlearn, "_check_fits", no_work)
    ok = ("--data", files / "data.npz", "--out", files / "o.safetensors")
    _one_error(files, capsys, r"--forget: class ids \[3\] are repeated", files / "model.safetensors",
               "--forget", "3", "digit3", *ok)
    _one_error(files, capsys, "forgetting 9 of 10 classes leaves 1", files / "model.safetensors",
               "--forget", *map(str, range(9)), *ok)
