"""linfilt bench: every method on one seen population, one audit (tiny digits populations)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from linfilt.errors import LinfiltError
from linfilt.paper.bench import ROWS, Bench, render, run_bench
from linfilt.paper.bench.runner import _Data, _seeds
from linfilt.paper.data import load, to_float
from linfilt.paper.experiments.spec import Experiment
from linfilt.paper.population import train_populations

EXP = Experiment("bench-digits", dataset="digits", forget=(3,), models=6, epochs=2, repeats=2,
                 transfer=True, forgotten_samples=40, retained_samples=40)


def _bench(**kw) -> Bench:
    return Bench(EXP, **{"methods": ("naive", "normalization", "transfer", "ft", "ssd"),
                         "attacks": ("paper", "strong"), "probe_images": 300, **kw})


def test_spec_checks_and_round_trips():
    with pytest.raises(LinfiltError, match="unknown method"):
        Bench(EXP, methods=("naive", "retrain"))
    with pytest.raises(LinfiltError, match="attack group"):
        Bench(EXP, attacks=("paper", "psychic"))
    with pytest.raises(LinfiltError, match="bench data set"):
        Bench.named("digits")
    bench = _bench()
    assert Bench.from_json(json.loads(json.dumps(bench.to_json()))) == bench
    assert Bench(EXP, methods="all").methods == ROWS
    # methods come back in the bench's order whatever order they were named in
    assert Bench(EXP, methods="ssd,naive").methods == ("naive", "ssd")
    # adding an attack changes the run, not the stored unlearned populations
    other = _bench(attacks=("paper",))
    assert other.digest() != bench.digest()
    assert other.method_key("ft", "cpu") == bench.method_key("ft", "cpu")
    assert bench.method_key("ft", "cpu") != bench.method_key("ssd", "cpu")
    paper = Bench.named("mnist", models=10)
    assert paper.experiment.models == 10 and paper.experiment.transfer


def test_method_seeds_depend_on_method_and_model_only():
    a = _seeds(0, "ft", range(0, 6))
    assert _seeds(0, "ft", range(3, 6)) == a[3:]
    assert _seeds(0, "rl", range(0, 6)) != a
    assert len(set(a)) == 6


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_bench(_bench(), out, progress=False)


def test_rows_and_numbers(result):
    out, res = result
    assert list(res["rows"]) == ["naive", "normalization", "transfer", "ft", "ssd", "floor"]
    data = load("digits")
    cfg = EXP.population()
    seen = train_populations(cfg, ("seen",), data=data, out=out, experiment=EXP.name, progress=False)["seen"]
    labels = np.asarray(data.y_test)
    kept = [c for c in range(10) if c != 3]
    from linfilt.audit import retained_accuracy_loss
    # naive drops the forgotten output: its accuracy is that of the seen logits without column 3
    naive = retained_accuracy_loss(seen[:, :, kept], labels, 10, (3,)).summary()
    assert res["rows"]["naive"]["accuracy"]["accuracy_mean"] == pytest.approx(naive["accuracy_mean"], abs=1e-6)
    for row in ("naive", "normalization", "transfer", "floor"):
        assert res["rows"][row]["forgotten_accuracy"] is None
    for row in ("ft", "ssd"):
        assert 0.0 <= res["rows"][row]["forgotten_accuracy"] <= 1.0
        assert res["rows"][row]["seconds_per_model"] > 0
    assert res["retraining_seconds_per_model"] > 0
    for row in res["rows"].values():
        assert set(row["attacks"]) == {"paper", "strong", "sorted"}
        assert {"lira", "probe", "head"} <= set(row)


def test_stored_results_are_reused_and_resumed(result, monkeypatch):
    out, res = result
    from linfilt.paper.bench import runner
    calls = []
    original = runner._unlearn_chunk
    monkeypatch.setattr(runner, "_unlearn_chunk", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    # a finished run is read back whole
    assert run_bench(_bench(), out, progress=False) == res
    assert calls == []
    # another attack set reuses every unlearned population: nothing is unlearned again
    run_bench(_bench(attacks=("paper",)), out, progress=False)
    assert calls == []
    # a lost chunk (a kill before its info.json) is recomputed, to the same numbers
    run = out / EXP.name / "bench" / "runs" / _bench().digest()
    (run / "result.json").unlink()
    (run / "rows" / "ft.json").unlink()
    info = next((out / EXP.name / "bench" / "unlearned" / "ft").glob("*/chunks/*/info.json"))
    info.unlink()
    again = run_bench(_bench(), out, progress=False)
    assert calls == ["ft"]
    assert again["rows"]["ft"]["attacks"] == res["rows"]["ft"]["attacks"]
    assert again["rows"]["ft"]["accuracy"] == res["rows"]["ft"]["accuracy"]


def test_damaged_chunk_is_named(result):
    out, _ = result
    logits = next((out / EXP.name / "bench" / "unlearned" / "ssd").glob("*/chunks/*/logits.npy"))
    data = bytearray(logits.read_bytes())
    data[-1] ^= 0xFF
    logits.write_bytes(bytes(data))
    run = out / EXP.name / "bench" / "runs" / _bench().digest()
    (run / "result.json").unlink()
    (run / "rows" / "ssd.json").unlink()
    with pytest.raises(LinfiltError, match="logits.npy does not match its checksum"):
        run_bench(_bench(), out, progress=False)


def test_report_has_every_row_and_a_png(result, tmp_path):
    _, res = result
    figure = tmp_path / "bench-digits.png"
    text = render(res, figure)
    for name in ("Naive", "Normalization", "Transfer", "Fine-tune", "SSD", "Floor", "Retrained"):
        assert name in text
    for column in ("NN", "RF", "AB", "LR", "MLP", "NN (sorted)", "U-LiRA AUC", "probe acc."):
        assert column in text
    png = figure.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200


def test_trained_models_are_the_stored_populations_models(result, monkeypatch):
    out, _ = result
    from linfilt.paper import population
    from linfilt.paper.arrays import save_array
    from linfilt.paper.training import predict_logits
    data = load("digits")
    cfg = EXP.population()
    stored = train_populations(cfg, ("notseen",), data=data, out=out, experiment=EXP.name,
                               progress=False)["notseen"]
    # the bench saved them: read back, nothing trained, the stored logits exactly
    monkeypatch.setattr(population, "_train", lambda *a, **k: pytest.fail("retrained"))
    models = population.trained_models(cfg, "notseen", data=data, out=out, experiment=EXP.name,
                                       progress=False)
    x_test = to_float(data.x_test)
    np.testing.assert_array_equal(np.stack([predict_logits(m, x_test) for m in models]), stored)
    monkeypatch.undo()
    # a model file lost, and stored logits from "another machine": retrained, saved, and said
    store = population.results_dir(cfg, out, EXP.name)
    (store / "models" / "notseen" / "00002.safetensors").unlink()
    save_array(store / "logits" / "notseen.npy", stored + 1)
    with pytest.warns(UserWarning, match="away from the stored ones"):
        again = population.trained_models(cfg, "notseen", data=data, out=out, experiment=EXP.name,
                                          progress=False)
    assert (store / "models" / "notseen" / "00002.safetensors").is_file()
    np.testing.assert_array_equal(predict_logits(again[2], x_test), stored[2])
    save_array(store / "logits" / "notseen.npy", stored)
