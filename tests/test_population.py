import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from linfilt.paper.data import Dataset, load, to_float
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.paper.population import (PopulationConfig, fit, init_model, model_seeds, predict_logits,
                                run_dir, train_populations)

ALL = ("seen", "notseen", "transfer", "dropin")




def _synthetic(shape, k=4, n=40, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = np.arange(n) % k
    # a learnable signal: brighten a class-dependent row band
    for c in range(k):
        x[y == c, c * shape[0] // k] = 255
    xt = rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)
    return Dataset("synthetic", x, y, xt, np.arange(n_test) % k, tuple(f"c{i}" for i in range(k)))


@pytest.fixture(scope="module")
def digits():
    d = load("digits")
    return Dataset("digits", d.x_train[:300], d.y_train[:300], d.x_test[:60], d.y_test[:60], d.classes)


CASES = {
    "mlp": ({"in_features": 48, "hidden": [8]}, (8, 6, 1)),
    "cifar_cnn": ({"p": 8}, (32, 32, 3)),
    "att_resnet": ({"widths": [4, 4, 4, 4, 4]}, (24, 20, 1)),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_strategies_agree_on_every_population(arch, tmp_path):
    kwargs, shape = CASES[arch]
    data = _synthetic(shape, n=24 if arch == "mlp" else 16)
    results = {}
    for strategy in ("loop", "grouped", "vmap"):
        cfg = PopulationConfig(dataset="synthetic", arch=arch, arch_kwargs=kwargs, forget=(1,), models=2,
                               epochs=2, batch_size=8, strategy=strategy)
        results[strategy] = train_populations(cfg, ALL, data=data, out=tmp_path, progress=False)
    for population in ALL:
        ref = results["loop"][population]
        assert ref.shape == (2, 12, 4 if population in ("seen", "dropin") else 3)
        assert not np.allclose(ref[0], ref[1])  # the two models differ
        scale = np.abs(ref).max()
        for strategy in ("grouped", "vmap"):
            np.testing.assert_allclose(results[strategy][population], ref, rtol=0, atol=1e-4 * scale,
                                       err_msg=f"{strategy} {population}")


def test_population_model_is_fit_from_its_seeds(digits, tmp_path):
    """Model j = `fit` of the model initialised from its seed, on the population's data; a dropin
    model has all 10 outputs but learns from the retained images only, under their own labels."""
    from linfilt.modelio import load_model

    cfg = PopulationConfig.protocol("digits", [3], models=3, epochs=2, strategy="loop")
    out = train_populations(cfg, ("seen", "notseen", "dropin"), data=digits, out=tmp_path, chunk_size=2,
                            save_models=True, progress=False)
    x, y, xt = to_float(digits.x_train), digits.y_train, to_float(digits.x_test)
    keep = y != 3
    y_kept = np.where(y[keep] > 3, y[keep] - 1, y[keep])  # labels of the 9 retained classes
    for j in (0, 2):
        for population, xs, ys, k in (("seen", x, y, 10), ("notseen", x[keep], y_kept, 9),
                                      ("dropin", x[keep], y[keep], 10)):
            init_seed, order_seed = model_seeds(cfg.seed, population, j)
            model = init_model("mlp", cfg.arch_kwargs, k, init_seed)
            fit(model, xs, ys, cfg.epochs, cfg.batch_size, seed=order_seed)
            np.testing.assert_array_equal(out[population][j], predict_logits(model, xt))
    spec = load_model(run_dir(cfg, tmp_path) / "models" / "dropin" / "00000.safetensors")[1]
    assert spec.class_ids == tuple(range(10)) and spec.class_names == tuple(digits.classes)


def test_a_new_population_leaves_the_others_seeds_and_digests_as_they_were():
    # values from before the dropin population existed (the stored full-scale MNIST populations)
    assert PopulationConfig.protocol("mnist", 0).digest() == "8edf08688ed81bfe"
    before = {("seen", 0): (4088532484, 613525653), ("seen", 7): (257164808, 1408005640),
              ("notseen", 0): (3953331965, 2686814951), ("notseen", 7): (2337425422, 4245156738),
              ("transfer", 0): (1961512366, 4143158044), ("transfer", 7): (210603915, 2758748450)}
    assert {key: model_seeds(0, *key) for key in before} == before


def test_same_config_same_logits_whatever_the_chunks(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=3, epochs=1)
    assert cfg.strategy == "grouped"  # the CPU default for MLPs
    a = train_populations(cfg, ALL, data=digits, out=tmp_path / "a", chunk_size=1, progress=False)
    b = train_populations(cfg, ALL, data=digits, out=tmp_path / "b", chunk_size=3, progress=False)
    c = train_populations(cfg, ALL, data=digits, out=tmp_path / "c", chunk_size=3, progress=False)
    loop = dataclasses.replace(cfg, strategy="loop")
    d = train_populations(loop, ALL, data=digits, out=tmp_path / "d", chunk_size=1, progress=False)
    e = train_populations(loop, ALL, data=digits, out=tmp_path / "e", chunk_size=3, progress=False)
    for population in ALL:
        np.testing.assert_array_equal(b[population], c[population])  # same config: same bits
        np.testing.assert_array_equal(d[population], e[population])  # one model at a time: same bits
        # batched by 1 or by 3: fused Adam rounds the tail of a stacked tensor differently, nothing
        # more (which is why each chunk size keeps its own results: test_population_store.py)
        np.testing.assert_allclose(a[population], b[population], rtol=0,
                                   atol=1e-6 * np.abs(b[population]).max())
    # seeds: distinct per model and per population
    seeds = {model_seeds(0, p, j) for p in ALL for j in range(50)}
    assert len(seeds) == 50 * len(ALL)


def test_changed_setting_never_reads_a_stale_result(digits, tmp_path):
    base = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    first = train_populations(base, data=digits, out=tmp_path, progress=False)["seen"]
    changed = PopulationConfig.protocol("digits", [0], models=2, epochs=1, lr=3e-3)
    assert run_dir(changed, tmp_path) != run_dir(base, tmp_path)
    other = train_populations(changed, data=digits, out=tmp_path, progress=False)["seen"]
    assert np.abs(other - first).max() > 1e-3
    for name, value in (("forget", (0, 1)), ("seed", 1), ("batch_size", 16)):
        assert dataclasses.replace(base, **{name: value}).digest() != base.digest()
    # The population size is not a setting of any model: a grown population shares the folder.
    assert dataclasses.replace(base, models=3).digest() == base.digest()
    stored = json.loads((run_dir(base, tmp_path) / "config.json").read_text())
    assert stored["lr"] == 1e-3 and stored["epochs"] == 1 and stored["n_train"] == 300
    # a stored result is read back, not retrained; a damaged one is refused
    final = run_dir(base, tmp_path) / "logits" / "seen.npy"
    written = final.stat().st_mtime_ns
    np.testing.assert_array_equal(train_populations(base, data=digits, out=tmp_path, progress=False)["seen"],
                                  first)
    assert final.stat().st_mtime_ns == written
    np.save(final, np.zeros((2, 60, 10), np.float32))
    with pytest.raises(CorruptFileError, match="seen.npy does not match its checksum"):
        train_populations(base, data=digits, out=tmp_path, progress=False)
    final.write_bytes(b"not an npy file")
    with pytest.raises(CorruptFileError, match="delete it"):
        train_populations(base, data=digits, out=tmp_path, progress=False)
    final.unlink()  # chunks that overlap cannot be assembled into one result
    loop = dataclasses.replace(base, strategy="loop")
    train_populations(loop, data=digits, out=tmp_path, progress=False)
    (run_dir(loop, tmp_path) / "logits" / "seen.npy").unlink()
    chunks = run_dir(loop, tmp_path) / "chunks" / "seen"
    np.save(chunks / "00000-00002.npy", np.ones((2, 60, 10), np.float32))
    with pytest.raises(CorruptFileError, match="once each"):
        train_populations(loop, data=digits, out=tmp_path, progress=False)


def test_transfer_freezes_the_seen_models_layers(digits, tmp_path):
    from linfilt.modelio import load_model

    cfg = PopulationConfig.protocol("digits", [2, 5], models=2, epochs=2)
    seen = train_populations(cfg, ("seen",), data=digits, out=tmp_path / "a", save_models=True,
                             progress=False)["seen"]
    # transfer alone: the seen bodies come from the saved models ...
    a = train_populations(cfg, ("transfer",), data=digits, out=tmp_path / "a", save_models=True,
                          progress=False)["transfer"]
    # ... or, with nothing saved, from retraining the seen models from their seeds
    b = train_populations(cfg, ("transfer",), data=digits, out=tmp_path / "b", progress=False)["transfer"]
    np.testing.assert_array_equal(a, b)
    # retraining stored the seen chunks too, equal to the first run's
    assert len(list((run_dir(cfg, tmp_path / "b") / "chunks" / "seen").glob("*.npy"))) == 1
    b_seen = train_populations(cfg, ("seen",), data=digits, out=tmp_path / "b", progress=False)["seen"]
    np.testing.assert_array_equal(b_seen, seen)
    root = run_dir(cfg, tmp_path / "a")
    xt = to_float(digits.x_test)
    for j in range(2):
        s_model, s_spec = load_model(root / "models" / "seen" / f"{j:05d}.safetensors")
        t_model, t_spec = load_model(root / "models" / "transfer" / f"{j:05d}.safetensors")
        for (name, p), q in zip(s_model.body.state_dict().items(), t_model.body.state_dict().values()):
            assert torch.equal(p, q), name
        assert t_spec.class_ids == (0, 1, 3, 4, 6, 7, 8, 9) and s_spec.class_ids == tuple(range(10))
        assert t_spec.class_names[2] == digits.classes[3]
        np.testing.assert_allclose(predict_logits(t_model, xt), a[j], atol=1e-5)
        np.testing.assert_allclose(predict_logits(s_model, xt), seen[j], atol=1e-5)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import linfilt.paper.population as P
    from linfilt.paper.data import load
    from linfilt.paper.population import PopulationConfig, train_populations

    # pause after each stored chunk, so that the kill surely lands between chunks 1 and 4
    store = P._Store.write_chunk
    P._Store.write_chunk = lambda *args: (store(*args), time.sleep(30))
    cfg = PopulationConfig.protocol("digits", [0], models=4, epochs=3, strategy="loop")
    train_populations(cfg, ("seen",), data=load("digits"), out=sys.argv[1], chunk_size=1, progress=False)
""")


def test_resumes_after_a_kill(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    cfg = PopulationConfig.protocol("digits", [0], models=4, epochs=3, strategy="loop")
    chunks = run_dir(cfg, out) / "chunks" / "seen"
    deadline = time.monotonic() + 120
    while not (chunks.is_dir() and any(chunks.glob("0*.npy"))):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in chunks.glob("0*.npy")}
    assert 1 <= len(before) < 4, "the kill came too late to test resuming"
    assert not (run_dir(cfg, out) / "logits" / "seen.npy").exists()

    resumed = train_populations(cfg, ("seen",), data=load("digits"), out=out, chunk_size=1,
                                progress=False)["seen"]
    for name, mtime in before.items():  # finished chunks were kept, not retrained
        assert (chunks / name).stat().st_mtime_ns == mtime
    assert len(list(chunks.glob("0*.npy"))) == 4
    fresh = train_populations(cfg, ("seen",), data=load("digits"), out=tmp_path / "fresh",
                              chunk_size=4, progress=False)["seen"]
    np.testing.assert_array_equal(resumed, fresh)


def test_bad_requests_are_refused(digits, tmp_path):
    cfg = PopulationConfig.protocol("digits", [0], models=2, epochs=1)
    with pytest.raises(LinfiltError, match="populations"):
        train_populations(cfg, ("retrained",), data=digits, out=tmp_path)
    with pytest.raises(LinfiltError, match="out of range"):
        train_populations(PopulationConfig.protocol("digits", [12], models=2), data=digits, out=tmp_path)
    with pytest.raises(LinfiltError, match="strategy"):
        PopulationConfig.protocol("digits", [0], strategy="fast")
    with pytest.raises(LinfiltError, match="protocol"):
        PopulationConfig.protocol("imagenet", [0])
    with pytest.raises(LinfiltError, match="device"):
        PopulationConfig.protocol("digits", [0], device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(LinfiltError, match="no CUDA GPU"):
            train_populations(PopulationConfig.protocol("digits", [0], device="cuda"), data=digits,
                              out=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_cli_train_stores_what_the_api_returns(digits, tmp_path, capsys, monkeypatch):
    from linfilt.cli import main
    import linfilt.paper.population as population

    monkeypatch.setattr(population, "load", lambda name: digits)
    code = main(["train", "digits", "--models", "2", "--forget", "0,1", "--population", "seen",
                 "notseen", "--epochs", "1", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    cfg = PopulationConfig.protocol("digits", [0, 1], models=2, epochs=1)
    expected = train_populations(cfg, ("seen", "notseen"), data=digits, out=tmp_path / "api",
                                 progress=False)
    root = run_dir(cfg, tmp_path)
    for name in ("seen", "notseen"):
        np.testing.assert_array_equal(np.load(root / "logits" / f"{name}.npy"), expected[name])
    printed = capsys.readouterr().out
    acc = (expected["seen"].argmax(2) == digits.y_test).mean(1)
    assert f"{100 * acc.mean():.2f} ± {100 * acc.std():.2f} %" in printed
    assert main(["train", "mnist", "--p", "64", "--out", str(tmp_path)]) == 2


def test_growing_a_population_trains_only_the_new_models(digits, tmp_path):
    small = PopulationConfig.protocol("digits", [0], models=2, epochs=1, strategy="loop")
    first = train_populations(small, ("seen", "notseen"), data=digits, out=tmp_path, progress=False)
    chunks = run_dir(small, tmp_path) / "chunks" / "seen"
    before = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
    grown = dataclasses.replace(small, models=3)
    second = train_populations(grown, ("seen", "notseen"), data=digits, out=tmp_path, progress=False)
    for population in ("seen", "notseen"):
        assert second[population].shape[0] == 3
        np.testing.assert_array_equal(second[population][:2], first[population])
    # the first two models' chunk files were not rewritten: nothing was retrained
    assert {p.name: p.stat().st_mtime_ns for p in chunks.iterdir() if p.name in before} == before
    # model 2 is the one a 3-model run from scratch trains
    fresh = train_populations(grown, ("seen",), data=digits, out=tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(second["seen"], fresh["seen"])
    # a smaller request reads the prefix of the grown population
    again = train_populations(small, ("seen",), data=digits, out=tmp_path, progress=False)["seen"]
    np.testing.assert_array_equal(again, first["seen"])


@pytest.mark.parametrize("script", ["unlearn_speed", "population", "data_load", "ray_population"])
def test_the_benchmarks_import_against_the_current_layout(script):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports only: main() is behind __name__ == "__main__"
    assert callable(module.main)
