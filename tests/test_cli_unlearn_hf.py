"""`linfilt unlearn` on Hugging Face model directories (config.json + model.safetensors): tiny BERT
and ViT classifiers saved with save_pretrained, unlearned twice from the command line, and the
directories and data it refuses, each with one error line and nothing written."""
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

import linfilt
import linfilt.cli.unlearn
from linfilt.cli import main
from linfilt.filtration import compute_filtration, mean_logits

transformers = pytest.importorskip("transformers")
from test_hf import K, _model, _samples  # noqa: E402  (the same tiny trained models)


def _arrays(kind):
    """The samples of test_hf as the .npz arrays --data takes, and y."""
    batch = next(iter(DataLoader(_samples(kind), batch_size=K * 24)))
    y = batch.pop("labels").numpy()
    return {k: v.numpy() for k, v in batch.items()}, y


@pytest.fixture(scope="module", params=["bert", "vit"])
def trained(request):
    return request.param, _model(request.param)


def _save(trained, tmp_path):
    """The trained model saved in tmp_path/model (with a tokenizer file to be copied along) and its
    data in tmp_path/data.npz."""
    kind, model = trained
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "vocab.txt").write_text("[PAD]\n[CLS]\n")
    x, y = _arrays(kind)
    np.savez(tmp_path / "data.npz", **x, y=y)
    return kind, model, x, y, tmp_path


@pytest.fixture()
def setup(trained, tmp_path):
    return _save(trained, tmp_path)


def _run(*argv):
    return main(["unlearn", *map(str, argv)])


def _logits(model, x):
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.double().numpy()


def _load(model, folder):
    return type(model).from_pretrained(folder, use_safetensors=True).eval()


def test_unlearn_a_model_directory_twice(setup, capsys):
    kind, model, x, y, tmp = setup
    assert _run(tmp / "model", "--forget", "bee", "--data", tmp / "data.npz", "--out", tmp / "u1") == 0
    printed = capsys.readouterr().out
    u1 = _load(model, tmp / "u1")
    L = _logits(model, x)
    F = compute_filtration(mean_logits(L, y, K), [1])
    L1 = _logits(u1, x)
    np.testing.assert_allclose(L1, F.apply(L), rtol=1e-4, atol=1e-4)
    config = u1.config
    assert config.num_labels == 4 and config.id2label == {0: "ant", 1: "cat", 2: "dog", 3: "eel"}
    assert config.label2id == {"ant": 0, "cat": 1, "dog": 2, "eel": 3}
    assert linfilt.classes_of(u1) == (0, 2, 3, 4)
    [step] = json.loads((tmp / "u1" / "config.json").read_text())["linfilt_steps"]
    assert (step["forgot"], step["forgot_names"], step["method"], step["samples"]) == ([1], ["bee"], "normalization",
                                                                                      len(y))
    assert step["condition_number"] == pytest.approx(np.linalg.cond(mean_logits(L, y, K)), rel=1e-6)
    assert "forgot 1 'bee' from" in printed and "classes kept (4): 0 'ant', 2 'cat', 3 'dog', 4 'eel'" in printed
    kept = y != 1
    after = np.array([0, 2, 3, 4])[L1.argmax(1)]
    assert (f"accuracy on retained classes ({kept.sum()} samples): before {np.mean(L.argmax(1)[kept] == y[kept]):.4f}, "
            f"after {np.mean(after[kept] == y[kept]):.4f}") in printed
    assert (tmp / "u1" / "vocab.txt").read_text() == "[PAD]\n[CLS]\n"  # preprocessing files come along

    # a second request on the output, by original id: class 3 ("dog") is its output 2
    assert _run(tmp / "u1", "--forget", "3", "--data", tmp / "data.npz", "--batch-size", 16, "--out", tmp / "u2") == 0
    assert f"skipped {np.sum(y == 1)} samples of classes forgotten earlier" in capsys.readouterr().out
    u2 = _load(model, tmp / "u2")
    pos = np.searchsorted([0, 2, 3, 4], y[kept])
    F2 = compute_filtration(mean_logits(L1[kept], pos, 4), [2])
    np.testing.assert_allclose(_logits(u2, x), F2.apply(L1), rtol=1e-4, atol=1e-4)
    assert u2.config.id2label == {0: "ant", 1: "cat", 2: "eel"} and linfilt.classes_of(u2) == (0, 2, 4)
    steps = u2.config.linfilt_steps
    assert steps[0] == step and (steps[1]["forgot"], steps[1]["forgot_names"]) == ([3], ["dog"])
    # the record read back refuses a class forgotten before, by id or by name
    for token in ("1", "bee"):
        assert _run(tmp / "u2", "--forget", token, "--data", tmp / "data.npz", "--out", tmp / "u3") == 2
        assert "class 1 was already forgotten from this model" in capsys.readouterr().err
    assert not (tmp / "u3").exists()


def test_force_replaces_a_model_directory_whole(setup):
    kind, model, x, y, tmp = setup
    shutil.copytree(tmp / "model", tmp / "out")
    (tmp / "out" / "stale.bin").write_bytes(b"old")
    assert _run(tmp / "model", "--forget", "0", "--data", tmp / "data.npz", "--out", tmp / "out", "--force") == 0
    assert not (tmp / "out" / "stale.bin").exists()
    assert _load(model, tmp / "out").config.id2label == {0: "bee", 1: "cat", 2: "dog", 3: "eel"}
    assert sorted(p.name for p in tmp.iterdir()) == ["data.npz", "model", "out"]  # no temporary folders left


def test_a_failed_write_leaves_the_old_directory(setup, monkeypatch, capsys):
    kind, model, x, y, tmp = setup
    shutil.copytree(tmp / "model", tmp / "out")
    before = _snapshot(tmp)

    def broken(new, folder, source):
        (folder / "config.json").write_text("{}")
        raise linfilt.LinfiltError("disk full")

    monkeypatch.setattr(linfilt.cli.unlearn, "save_model_dir", broken)
    assert _run(tmp / "model", "--forget", "0", "--data", tmp / "data.npz", "--out", tmp / "out", "--force") == 2
    assert "disk full" in capsys.readouterr().err
    assert _snapshot(tmp) == before


def _snapshot(folder):
    """Every entry under `folder`, each file with its bytes and mtime (a folder's mtime is left out:
    the check that --out is writable creates and removes a probe file in it)."""
    return {p: p.is_dir() or (p.read_bytes(), p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _one_error(tmp, capsys, message, *argv):
    """Exit 2, exactly one line on stderr, nothing created or changed."""
    before = _snapshot(tmp)
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("linfilt unlearn: error: "), err
    assert re.search(message, err), err
    assert _snapshot(tmp) == before


@pytest.fixture(scope="module")
def trained_bert():
    return "bert", _model("bert")


@pytest.fixture()
def bert(trained_bert, tmp_path):
    """The refusals, the same for both models, on BERT alone."""
    return _save(trained_bert, tmp_path)


def test_bad_directories_and_data_write_nothing(bert, capsys, monkeypatch):
    kind, model, x, y, tmp = bert
    data = ("--data", tmp / "data.npz")
    ok = (tmp / "model", "--forget", "1", *data)

    (tmp / "empty").mkdir()
    _one_error(tmp, capsys, "folder without config.json", tmp / "empty", "--forget", "1", *data, "--out", tmp / "o")
    (tmp / "pickled").mkdir()
    shutil.copy(tmp / "model" / "config.json", tmp / "pickled")
    torch.save(model.state_dict(), tmp / "pickled" / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    _one_error(tmp, capsys, r"holds only pytorch_model.bin \(pickled\), which linfilt never loads",
               tmp / "pickled", "--forget", "1", *data, "--out", tmp / "o")

    _one_error(tmp, capsys, "is inside the model directory", *ok, "--out", tmp / "model" / "sub")
    _one_error(tmp, capsys, "is an input of this command", *ok, "--out", tmp / "model", "--force")
    _one_error(tmp, capsys, r"holds an input of this command \(.*model\)", *ok, "--out", tmp, "--force")
    (tmp / "notes").mkdir()
    (tmp / "notes" / "a.txt").write_text("mine")
    _one_error(tmp, capsys, "not empty; choose a new or empty folder or pass --force", *ok, "--out", tmp / "notes")
    _one_error(tmp, capsys, "no config.json: --force replaces only a model directory", *ok, "--out", tmp / "notes",
               "--force")

    _one_error(tmp, capsys, r"--forget 'yak' is neither a class id nor a class name of this model \(its classes: "
               r"0 'ant', 1 'bee'", tmp / "model", "--forget", "yak", *data, "--out", tmp / "o")
    bad = {
        "noy.npz": (dict(x), r"lacks arrays \['y'\]: it needs y \(class ids\)"),
        "x.npz": ({"x": x["input_ids"], "y": y}, r"holds \['x'\] besides y; a Hugging Face model takes pixel_values"),
        "vocab.npz": ({**x, "input_ids": x["input_ids"] + 40, "y": y}, r"input_ids holds values in \[41, 79\]; "
                      r"the model takes 0..39"),
        "mask.npz": ({**x, "attention_mask": x["attention_mask"][:, :4], "y": y}, r"attention_mask is int64 of "
                     r"shape \(120, 4\); expected integers of the input_ids' shape"),
        "label.npz": ({**x, "y": np.where(y == 2, 9, y)}, r"labels \[9\] that are not classes of this model"),
    }
    for name, (arrays, message) in bad.items():
        np.savez(tmp / name, **arrays)
        _one_error(tmp, capsys, message, tmp / "model", "--forget", "1", "--data", tmp / name, "--out", tmp / "o")
    _one_error(tmp, capsys, "a Hugging Face model takes --data D.npz", tmp / "model", "--forget", "1",
               "--dataset", "digits", "--out", tmp / "o")


def test_bad_weights_and_configs_write_nothing(bert, capsys, monkeypatch):
    kind, model, x, y, tmp = bert
    data = ("--data", tmp / "data.npz", "--out", tmp / "o")
    # weights without the head: from_pretrained would give it random values and only warn
    shutil.copytree(tmp / "model", tmp / "headless")
    weights = load_file(tmp / "headless" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")},
              tmp / "headless" / "model.safetensors", metadata={"format": "pt"})
    _one_error(tmp, capsys, r"the weights lack or mis-size \['classifier.bias', 'classifier.weight'\]",
               tmp / "headless", "--forget", "1", *data)
    # a model that is not a classifier
    shutil.copytree(tmp / "model", tmp / "base")
    config = json.loads((tmp / "base" / "config.json").read_text())
    (tmp / "base" / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    _one_error(tmp, capsys, "names architecture BertModel; `linfilt unlearn` takes ...ForSequenceClassification",
               tmp / "base", "--forget", "1", *data)
    # a tampered record
    shutil.copytree(tmp / "model", tmp / "tampered")
    (tmp / "tampered" / "config.json").write_text(json.dumps({**config, "linfilt_steps": [{"method": "magic"}]}))
    _one_error(tmp, capsys, r"the config's filtration record \(linfilt_classes, linfilt_steps\) is not linfilt's",
               tmp / "tampered", "--forget", "1", *data)
    # transformers missing
    monkeypatch.setitem(sys.modules, "transformers", None)
    _one_error(tmp, capsys, r"need the transformers library: pip install linfilt\[hf\]",
               tmp / "model", "--forget", "1", *data)


def test_the_data_runs_through_the_model_once_before_and_once_after(setup, monkeypatch):
    """The head is found on one sample and A comes from the logits the command computed anyway."""
    kind, model, x, y, tmp = setup
    seen = []
    load = linfilt.cli.unlearn.load_model_dir

    def counting(path, config):
        loaded = load(path, config)
        loaded.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
            len(next(v for v in kwargs.values() if isinstance(v, torch.Tensor)))), with_kwargs=True)
        return loaded

    monkeypatch.setattr(linfilt.cli.unlearn, "load_model_dir", counting)
    assert _run(tmp / "model", "--forget", "bee", "--data", tmp / "data.npz", "--out", tmp / "u1") == 0
    # the loaded model's own passes: one fit check sample, one head-finding sample, then all of x;
    # the unlearned copy (a deep copy keeps the hook) runs x once more
    assert sum(seen) == 2 + 2 * len(y)
