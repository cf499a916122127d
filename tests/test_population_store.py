"""Run folders: checksums on every stored array, the chunk size as part of the key for batched
strategies, and per-epoch checkpoints inside a chunk."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

import linfilt.paper.population as population
from linfilt.paper.data import Dataset, load
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.paper.population import PopulationConfig, results_dir, run_dir, train_populations


@pytest.fixture(scope="module")
def digits():
    d = load("digits")
    return Dataset("digits", d.x_train[:300], d.y_train[:300], d.x_test[:60], d.y_test[:60], d.classes)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _train(cfg, digits, out, **kw):
    return train_populations(cfg, data=digits, out=out, progress=False, **kw)["seen"]


def test_every_stored_array_has_its_checksum_and_a_change_is_refused(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    first = _train(cfg, digits, tmp_path)
    root = run_dir(cfg, tmp_path)
    chunks = list((root / "chunks" / "seen").glob("*.npy"))
    arrays = [root / "test_labels.npy", root / "logits" / "seen.npy", *chunks]
    assert len(arrays) == 3
    for path in arrays:
        side = json.loads((path.parent / (path.name + ".sha256")).read_text())
        assert side["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert tuple(side["shape"]) == np.load(path).shape

    final, chunk = root / "logits" / "seen.npy", arrays[2]
    for path in (final, chunk, root / "test_labels.npy"):
        good = path.read_bytes()
        _flip_last_byte(path)  # a flipped bit in the data, the header intact
        if path == chunk:
            final.unlink()  # chunks are read when the population is assembled
        with pytest.raises(CorruptFileError, match=f"{path.name} does not match its checksum.*rerun"):
            _train(cfg, digits, tmp_path)
        path.write_bytes(good)
        np.testing.assert_array_equal(_train(cfg, digits, tmp_path), first)

    # the recovery the message names: delete the file, rerun, get the same numbers back
    _flip_last_byte(chunk)
    final.unlink()
    with pytest.raises(CorruptFileError, match=chunk.name):
        _train(cfg, digits, tmp_path)
    chunk.unlink()
    np.testing.assert_array_equal(_train(cfg, digits, tmp_path), first)


@pytest.mark.parametrize("name,make,message", [
    ("chunk", lambda a: np.zeros_like(a), "all-zero logits"),
    ("chunk", lambda a: np.where(np.arange(a.shape[2]) == 3, np.nan, a).astype(np.float32), "NaN"),
    ("chunk", lambda a: a.astype(np.float64), "expected float32"),
    ("labels", lambda a: np.zeros_like(a), "other labels"),
    ("labels", lambda a: a + 10, "outside 0..9"),
])
def test_files_without_checksum_are_still_checked(digits, tmp_path, name, make, message):
    """A folder written before checksums existed (no .sha256 files) is checked by shape, dtype and
    values; what passes gets its checksum, what fails is refused by name."""
    cfg = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    first = _train(cfg, digits, tmp_path)
    root = run_dir(cfg, tmp_path)
    for side in root.rglob("*.sha256"):
        side.unlink()
    (root / "logits" / "seen.npy").unlink()
    np.testing.assert_array_equal(_train(cfg, digits, tmp_path), first)  # accepted ...
    assert len(list(root.rglob("*.sha256"))) == 3  # ... and given checksums
    for side in root.rglob("*.sha256"):
        side.unlink()
    (root / "logits" / "seen.npy").unlink()
    path = root / "test_labels.npy" if name == "labels" else next((root / "chunks" / "seen").glob("*.npy"))
    np.save(path, make(np.load(path)))
    with pytest.raises(CorruptFileError, match=f"{path.name}.*{message}"):
        _train(cfg, digits, tmp_path)


def test_a_broken_config_is_a_clear_error(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    first = _train(cfg, digits, tmp_path)
    config = run_dir(cfg, tmp_path) / "config.json"
    config.write_text('{"dataset": "dig')
    with pytest.raises(CorruptFileError, match="config.json is unreadable.*delete it"):
        _train(cfg, digits, tmp_path)
    config.unlink()
    np.testing.assert_array_equal(_train(cfg, digits, tmp_path), first)


def test_each_chunk_size_keeps_its_own_results(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=3, epochs=1)
    assert cfg.strategy == "grouped"
    runs = {c: train_populations(cfg, ("seen", "notseen"), data=digits, out=tmp_path, chunk_size=c,
                                 progress=False) for c in (1, 3, 100, 1)}
    root = run_dir(cfg, tmp_path)
    for c, folder in ((1, root / "chunk-1"), (3, root / "chunk-3"), (100, root)):
        assert results_dir(cfg, tmp_path, chunk_size=c) == folder  # the default keeps the plain layout
        np.testing.assert_array_equal(np.load(folder / "logits" / "seen.npy"), runs[c]["seen"])
    for c in (1, 3):  # each equals a run of that chunk size alone, to the bit
        alone = train_populations(cfg, ("seen", "notseen"), data=digits, out=tmp_path / f"alone{c}",
                                  chunk_size=c, progress=False)
        for p in ("seen", "notseen"):
            np.testing.assert_array_equal(runs[c][p], alone[p])
    # the loop strategy does not depend on the chunking: one folder for every chunk size
    loop = dataclasses.replace(cfg, strategy="loop")
    a = _train(loop, digits, tmp_path, chunk_size=1)
    np.testing.assert_array_equal(_train(loop, digits, tmp_path, chunk_size=2), a)
    assert not any(run_dir(loop, tmp_path).glob("chunk-*"))
    # the hashes of default populations are what they were before the chunk size mattered
    assert PopulationConfig.protocol("mnist", [0]).digest() == "8edf08688ed81bfe"
    assert PopulationConfig.protocol("cifar10", [0]).digest() == "3e0bf7930bdd6bee"


def test_an_old_folder_that_mixed_chunk_sizes_is_named(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=3, epochs=1)
    _train(cfg, digits, tmp_path)
    root = run_dir(cfg, tmp_path)
    (root / "logits" / "seen.npy").unlink()
    np.save(root / "chunks" / "seen" / "00001-00002.npy", np.ones((1, 60, 10), np.float32))
    with pytest.raises(CorruptFileError, match="00001-00002.npy holds models 1..1, not one chunk of 100"):
        _train(cfg, digits, tmp_path)


def test_growing_a_batched_population_gives_what_a_fresh_run_gives(tmp_path):
    d = load("digits")  # the whole training set: enough steps for batch-size rounding to show
    data = Dataset("digits", d.x_train, d.y_train, d.x_test[:60], d.y_test[:60], d.classes)
    small = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    _train(small, data, tmp_path)
    grown = _train(dataclasses.replace(small, models=3), data, tmp_path)
    fresh = _train(dataclasses.replace(small, models=3), data, tmp_path / "fresh")
    np.testing.assert_array_equal(grown, fresh)
    chunks = run_dir(small, tmp_path) / "chunks" / "seen"
    assert [p.name for p in chunks.glob("*.npy")] == ["00000-00003.npy"]  # the partial one retrained


class _Killed(Exception):
    pass


def _kill_after(monkeypatch, epoch, unit=0):
    """Make training stop right after the checkpoint of (`unit`, `epoch`) is written."""
    save = population._Checkpoint.save

    def save_then_die(self, tensors):
        save(self, tensors)
        if int(tensors["meta.epoch"]) == epoch and int(tensors["meta.unit"]) == unit:
            raise _Killed

    monkeypatch.setattr(population._Checkpoint, "save", save_then_die)


def _record_saves(monkeypatch):
    saves = []
    save = population._Checkpoint.save

    def recording(self, tensors):
        saves.append((self.path.parent.name, int(tensors["meta.unit"]), int(tensors["meta.epoch"])))
        save(self, tensors)

    monkeypatch.setattr(population._Checkpoint, "save", recording)
    return saves


@pytest.mark.parametrize("strategy,chunk,unit", [("grouped", 3, 0), ("vmap", 3, 0), ("loop", 3, 1)])
def test_a_killed_chunk_resumes_at_its_last_epoch_to_the_same_bits(digits, tmp_path, monkeypatch,
                                                                   strategy, chunk, unit):
    cfg = PopulationConfig.protocol("digits", [0], models=3, epochs=3, strategy=strategy)
    pops = ("seen", "transfer")
    clean = train_populations(cfg, pops, data=digits, out=tmp_path / "clean", chunk_size=chunk,
                              progress=False)
    with monkeypatch.context() as m:
        _kill_after(m, epoch=1, unit=unit)
        with pytest.raises(_Killed):
            train_populations(cfg, pops, data=digits, out=tmp_path / "killed", chunk_size=chunk,
                              progress=False)
    root = results_dir(cfg, tmp_path / "killed", chunk_size=chunk)
    ckpt = root / "checkpoints" / "seen" / "00000-00003.safetensors"
    assert ckpt.is_file() and not (root / "chunks" / "seen").exists()
    saves = _record_saves(monkeypatch)
    resumed = train_populations(cfg, pops, data=digits, out=tmp_path / "killed", chunk_size=chunk,
                                progress=False)
    # the seen chunk went on from epoch 2 of the model (loop) or ensemble it was training
    later = [(u, e) for u in range(unit + 1, 3) for e in (1, 2, 3)] if strategy == "loop" else []
    assert [s[1:] for s in saves if s[0] == "seen"] == [(unit, 2), (unit, 3)] + later
    for p in pops:
        np.testing.assert_array_equal(resumed[p], clean[p])
    assert not any((root / "checkpoints").rglob("*.safetensors"))  # deleted once the logits are stored


def test_a_damaged_checkpoint_is_named(digits, tmp_path, monkeypatch):
    cfg = PopulationConfig.protocol("digits", [0], models=2, epochs=2)
    with monkeypatch.context() as m:
        _kill_after(m, epoch=1)
        with pytest.raises(_Killed):
            _train(cfg, digits, tmp_path)
    ckpt = run_dir(cfg, tmp_path) / "checkpoints" / "seen" / "00000-00002.safetensors"
    _flip_last_byte(ckpt)
    with pytest.raises(CorruptFileError, match="00000-00002.safetensors does not match its checksum"):
        _train(cfg, digits, tmp_path)
    ckpt.unlink()
    clean = _train(cfg, digits, tmp_path / "clean")
    np.testing.assert_array_equal(_train(cfg, digits, tmp_path), clean)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(lr=float("inf")), "lr must be finite"),
        (dict(lr=0.0), "lr must be >"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(models=0), "models must be a positive integer"),
        (dict(epochs=1.5), "epochs must be a positive integer"),
        (dict(arch_kwargs={"p": -5}), "p"),
    ],
)
def test_population_config_refuses_bad_settings(overrides, words):
    with pytest.raises(LinfiltError, match=words):
        PopulationConfig.protocol("cifar10", [0], **overrides)


@pytest.mark.parametrize("experiment", ["../../x", "a/b", "..", ""])
def test_experiment_must_be_a_plain_folder_name(tmp_path, experiment):
    cfg = PopulationConfig.protocol("mnist", [0], models=2, epochs=1)
    with pytest.raises(LinfiltError, match="plain folder name"):
        run_dir(cfg, tmp_path, experiment)
