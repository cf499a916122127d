"""Every subcommand over a table of bad arguments: each is refused before any work, with one error
line and no traceback, and leaves the working folder exactly as it was.

The rule for stderr: its last line starts with "linfilt" and holds "error:", no other line holds
"error:", and any line before it belongs to argparse's usage message ("usage: linfilt ..." and its
indented continuation lines).
"""
import hashlib
import os

import numpy as np
import pytest
import torch

from linfilt.cli import main
from linfilt.paper.experiments import inversion
from linfilt.paper.experiments.runner import result_dir
from linfilt.paper.experiments.spec import EXPERIMENTS
from linfilt.modelio import ModelSpec, save_model
from linfilt.paper.models import build

UNLEARN = ["unlearn", "model.safetensors", "--forget", "0", "--data", "data.npz", "--out", "new.safetensors"]
MODEL_FORGET = UNLEARN[:4]  # unlearn, the model, --forget 0
AUDIT = ["audit", "--candidate", "naive=pop.npy", "--retrained", "retrained.npy", "--labels", "labels.npy",
         "--forget", "0", "--repeats", "1", "--samples", "2"]
TRAIN = ["train", "digits", "--models", "1", "--epochs", "1", "--quiet", "--out", "runs"]
SCALE = ["--models", "4", "--epochs", "1", "--repeats", "2"]  # the scale of the broken results below
UNWRITABLE = "/proc/linfilt-out"  # /proc takes no new files, even from root


def inversion_dir(out):
    """Where a 1-epoch inversion run keeps its results under `out`."""
    return inversion.result_dir(out, inversion.inversion_config(epochs=1), "cpu")


def _row(*argv):
    return pytest.param(list(argv), id=" ".join(argv) or "(none)")


ROWS = [
    _row(),
    _row("bogus"),
    # demo
    _row("demo", "--seed", "-1"),
    _row("demo", "--seed", str(2**64)),
    _row("demo", "--seed", "x"),
    _row("demo", "--forget", "10"),
    _row("demo", "--forget", "-1"),
    _row("demo", "--epochs", "0"),
    _row("demo", "--per-class", "0"),
    _row("demo", "--per-class", "100000"),
    # unlearn
    _row(*UNLEARN, "--seed", "-1"),
    _row(*UNLEARN, "--per-class", "0"),
    _row(*UNLEARN, "--per-class", "100000"),
    _row(*UNLEARN, "--method", "randomization"),
    _row(*UNLEARN[:-1], "afile"),
    _row(*UNLEARN[:-1], "adir"),
    _row(*UNLEARN[:-1], "afile/new.safetensors"),
    _row(*UNLEARN[:-1], UNWRITABLE),
    _row(*UNLEARN[:-1], "data.npz", "--force"),
    _row(*UNLEARN[:-1], "model.safetensors", "--force"),
    _row(*UNLEARN[:-1], "adir/../data.npz", "--force"),
    _row(*UNLEARN[:-1], "symlink.npz", "--force"),
    _row(*UNLEARN[:-1], "hardlink.npz", "--force"),
    _row(*UNLEARN, "--forget", "7"),
    _row("unlearn", "model.safetensors", "--forget", "-1", *UNLEARN[4:]),
    _row(*MODEL_FORGET, "--data", "missing.npz", *UNLEARN[6:]),
    _row(*MODEL_FORGET, "--data", "afile", *UNLEARN[6:]),
    _row(*MODEL_FORGET, "--data", "cut.npz", *UNLEARN[6:]),
    _row("unlearn", "afile", *UNLEARN[2:]),
    _row("unlearn", "missing.safetensors", *UNLEARN[2:]),
    _row(*UNLEARN, "--device", "tpu"),
    # audit
    _row(*AUDIT, "--jobs", "0"),
    _row(*AUDIT, "--repeats", "0"),
    _row(*AUDIT, "--samples", "0"),
    _row(*AUDIT, "--retained-samples", "0"),
    _row(*AUDIT, "--seed", "-1"),
    _row(*AUDIT, "--forget", "5"),
    _row(*AUDIT, "--forget", "-1"),
    _row(*AUDIT, "--json", "afile"),
    _row(*AUDIT, "--json", "adir"),
    _row(*AUDIT, "--json", "afile/out.json"),
    _row(*AUDIT, "--json", UNWRITABLE),
    _row(*AUDIT, "--json", "pop.npy", "--force"),
    _row(*AUDIT, "--json", "adir/../labels.npy", "--force"),
    _row(*AUDIT, "--json", "hardlink.npy", "--force"),
    _row(*AUDIT, "--candidate", "nameless"),
    _row(*AUDIT, "--candidate", "naive=pop.npy"),
    _row(*AUDIT, "--candidate", "other=missing.npy"),
    _row(*AUDIT[:6], "afile", *AUDIT[7:]),
    _row(*AUDIT[:6], "npz.npy", *AUDIT[7:]),
    _row(*AUDIT[:6], "short.npy", *AUDIT[7:]),
    # data
    _row("data"),
    _row("data", "verify", "bogus"),
    _row("data", "list", "--root", "afile"),
    _row("data", "verify", "--root", "afile"),
    # train
    _row(*TRAIN, "--seed", "-1"),
    _row(*TRAIN, "--models", "0"),
    _row(*TRAIN, "--epochs", "0"),
    _row(*TRAIN, "--batch-size", "0"),
    _row(*TRAIN, "--chunk-size", "0"),
    _row(*TRAIN, "--lr", "inf"),
    _row(*TRAIN, "--lr", "nan"),
    _row(*TRAIN, "--lr", "0"),
    _row(*TRAIN, "--lr", "-1"),
    _row(*TRAIN, "--forget", "-1"),
    _row(*TRAIN, "--forget", "1,1"),
    _row(*TRAIN, "--forget", ","),
    _row(*TRAIN, "--forget", "x"),
    _row(*TRAIN, "--p", "64"),
    _row(*TRAIN, "--arch", "cifar_cnn"),
    _row(*TRAIN, "--device", "tpu"),
    _row(*TRAIN, "--device", "meta"),
    _row(*TRAIN[:-1], "afile"),
    _row(*TRAIN[:-1], "afile/runs"),
    _row(*TRAIN[:-1], UNWRITABLE),
    _row(*TRAIN, "--experiment", "../escaped"),
    _row(*TRAIN, "--experiment", "a/b"),
    _row(*TRAIN, "--experiment", ".."),
    _row(*TRAIN, "--experiment", ""),
    _row(*TRAIN[:-1], ".", "--experiment", "afile"),
    _row("train", "cifar10", "--p=-5"),
    _row("train", "cifar10", "--p", "0"),
    _row("train", "cifar10", "--p", str(10**12)),
    _row("train", "bogus"),
    # reproduce
    _row("reproduce", "table1", *SCALE, "--jobs", "0"),
    _row("reproduce", "table1", *SCALE, "--jobs", "-0"),
    _row("reproduce", "table1", "--models", "0"),
    _row("reproduce", "table1", "--models", "3"),
    _row("reproduce", "table1", "--epochs", "0"),
    _row("reproduce", "figure5", "--epochs", "0"),
    _row("reproduce", "figure5", "--models", "-1"),
    _row("reproduce", "table1", "--repeats", "0"),
    _row("reproduce", "table11"),
    _row("reproduce", "table1", *SCALE, "--out", "afile"),
    _row("reproduce", "table1", *SCALE, "--out", "afile/runs"),
    _row("reproduce", "table1", *SCALE, "--out", UNWRITABLE),
    _row("reproduce", "table1", *SCALE, "--report-dir", "afile"),
    _row("reproduce", "table1", *SCALE, "--report-dir", UNWRITABLE),
    _row("reproduce", "table1", *SCALE, "--report-dir", "mdfolder"),
    _row("reproduce", "figure5", "--epochs", "1", "--report-dir", str(inversion_dir("runs"))),
    _row("reproduce", "table1", *SCALE, "--device", "tpu"),
    _row("reproduce", "table1", *SCALE, "--device", "meta"),
    # report
    _row("report", "table1", "--out", "adir"),
    _row("report", "table1", *SCALE, "--out", "broken"),
    _row("report", "figure1", "--epochs", "1", "--out", "broken"),
    _row("report", "table1", "--out", "afile"),
    _row("report", "table1", *SCALE, "--report-dir", "afile"),
    _row("report", "table1", "--models", "0"),
    _row("report", "bogus"),
    # train / reproduce on a Ray cluster (refused before Ray starts; without Ray installed, by the
    # install hint)
    _row(*TRAIN, "--backend", "spark"),
    _row(*TRAIN, "--address", "10.0.0.1:6379"),
    _row(*TRAIN, "--gpus-per-task", "1"),
    _row(*TRAIN, "--backend", "ray", "--cpus-per-task", "0"),
    _row(*TRAIN, "--backend", "ray", "--cpus-per-task", "nan"),
    _row(*TRAIN, "--backend", "ray", "--gpus-per-task", "-1"),
    _row(*TRAIN, "--backend", "ray", "--gpus-per-task", "1"),
    _row(*TRAIN, "--backend", "ray", "--device", "cuda:1"),
    _row(*TRAIN, "--backend", "ray", "--device", "cuda", "--gpus-per-task", "1.5"),
    _row(*TRAIN, "--backend", "ray", "--device", "tpu"),
    _row(*TRAIN, "--backend", "ray", "--address", " "),
    _row(*TRAIN, "--backend", "ray", "--address", "127.0.0.1:1"),
    _row("reproduce", "table1", *SCALE, "--backend", "ray", "--cpus-per-task", "-1"),
    _row("reproduce", "table1", *SCALE, "--address", "10.0.0.1:6379"),
    _row("reproduce", "table1", *SCALE, "--backend", "ray", "--device", "tpu"),
    # bench
    _row("bench"),
    _row("bench", "digits"),
    _row("bench", "mnist", "--methods", "retrain"),
    _row("bench", "mnist", "--methods", ""),
    _row("bench", "mnist", "--attacks", "psychic"),
    _row("bench", "mnist", "--models", "3"),
    _row("bench", "mnist", "--models", "0"),
    _row("bench", "mnist", "--epochs", "-1"),
    _row("bench", "mnist", "--repeats", "0"),
    _row("bench", "mnist", "--models", "ten"),
    _row("bench", "mnist", "--device", "tpu"),
    _row("bench", "mnist", "--device", "cuda"),
    _row("bench", "mnist", "--jobs", "0"),
    _row("bench", "mnist", "--out", UNWRITABLE),
    _row("bench", "mnist", "--report-dir", UNWRITABLE),
    # populations trained in chunks of a given size
    _row("reproduce", "table1", *SCALE, "--chunk-size", "0"),
    _row("reproduce", "table1", *SCALE, "--chunk-size", "-1"),
    _row("reproduce", "table1", *SCALE, "--chunk-size", "x"),
    _row("reproduce", "fidelity", *SCALE, "--chunk-size", "0"),
    _row("report", "table1", *SCALE, "--chunk-size", "0"),
]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A working folder with the inputs the rows name, valid and broken."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder, not an array, not a model\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "mdfolder" / "report.md").mkdir(parents=True)
    torch.manual_seed(0)
    save_model(tmp_path / "model.safetensors", build("mlp", 3, in_features=4, hidden=(5,)),
               ModelSpec.new("mlp", {"in_features": 4, "hidden": [5]}, ["a", "b", "c"]))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 4)
    np.savez(tmp_path / "data.npz", x=rng.random((12, 4), dtype=np.float32), y=y)
    (tmp_path / "symlink.npz").symlink_to("data.npz")
    os.link(tmp_path / "data.npz", tmp_path / "hardlink.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "data.npz").read_bytes()[:200])
    np.save(tmp_path / "pop.npy", rng.normal(size=(4, 12, 2)))
    os.link(tmp_path / "pop.npy", tmp_path / "hardlink.npy")
    np.save(tmp_path / "retrained.npy", rng.normal(size=(4, 12, 2)))
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "short.npy", y[:5])
    with open(tmp_path / "npz.npy", "wb") as f:
        np.savez(f, labels=y)
    # Finished-looking results whose metrics.json files are broken.
    metrics = result_dir(EXPERIMENTS["mnist"].scaled(4, 1, 2), "broken", "cpu") / "metrics.json"
    inversion = inversion_dir(tmp_path / "broken") / "metrics.json"
    for path in (metrics, inversion):
        path.parent.mkdir(parents=True)
        path.write_text('{"advantage": ')
    return tmp_path


def _snapshot(root):
    """Every path under root with a digest of its content: a created, changed or removed file shows."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "folder"
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.mark.parametrize("argv", ROWS)
def test_bad_arguments_get_one_error_line_and_change_nothing(argv, workdir, capsys):
    before = _snapshot(workdir)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses
        code = exc.code
    out, err = capsys.readouterr()
    assert code not in (0, None), f"accepted: {out}"
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("linfilt") and "error:" in lines[-1], err
    assert not any("error:" in line for line in lines[:-1]), err
    if len(lines) > 1:
        assert lines[0].startswith("usage: linfilt"), err
        assert all(line.startswith(" ") for line in lines[1:-1]), err
    assert "Traceback" not in err + out
    assert _snapshot(workdir) == before
