"""Run one bench: train (or load) the experiment's populations and models, unlearn every seen
model with every method, and audit each unlearned population against the retrained one.

Every method gets what a deletion request comes with: the trained model and the training set
(retained and forgotten images). The filtrations estimate each model's A from its logits on that
training set (the paper estimated it on test images, the ones the attack then uses), through
`linfilt.pytorch.unlearn`, as an engineer would call it.
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt import audit, lira, probe
from linfilt.atomic import write_json
from linfilt.paper import methods as trained_methods
from linfilt.paper.arrays import finite_problem, load_array, save_array
from linfilt.paper.bench.spec import FILTRATIONS, Bench
from linfilt.paper.bench.store import ChunkStore, Unlearned
from linfilt.paper.data import load
from linfilt.paper.experiments.runner import attack_options, read_stored
from linfilt.paper.population import (PopulationConfig, TrainingData, init_model, trained_models,
                                      train_models, train_populations)
from linfilt.paper.settings import BENCH, EVAL_BATCH
from linfilt.pytorch import unlearn

REFERENCES = ("seen", "notseen", "transfer", "notseen2")


class _Data(TrainingData):
    """The population engine's data (training set on the device, test set, retained subset) and
    the probe images: a seeded subset of the test set."""

    def __init__(self, dataset: Any, forget: tuple[int, ...], device: str, probe_images: int,
                 seed: int) -> None:
        super().__init__(dataset, forget, device)
        self.k, self.labels, self.device = len(self.classes), self.y_test, device
        n = len(self.labels)
        rng = np.random.default_rng([seed, zlib.crc32(b"probe")])
        self.probe = np.sort(rng.choice(n, min(probe_images, n), replace=False))
        self.device = device


@torch.no_grad()
def _outputs(models: list[nn.Module], x: torch.Tensor, device: str, what: Callable) -> np.ndarray:
    """what(model, batch) for every model, over x in EVAL_BATCH batches: (m, n, ...) float32."""
    out = []
    for model in models:
        model.eval()
        out.append(torch.cat([what(model, x[i:i + EVAL_BATCH].to(device)).float().cpu()
                              for i in range(0, len(x), EVAL_BATCH)]).numpy())
    return np.stack(out)


def _heads(models: list[nn.Module]) -> np.ndarray:
    return np.stack([torch.cat([m.head.weight, m.head.bias[:, None]], 1).detach().float().cpu().numpy()
                     for m in models])


def _features(models: list[nn.Module], d: _Data) -> np.ndarray:
    return _outputs(models, d.x_test[d.probe], d.device, lambda m, xb: m.body(xb))


def _seeds(seed: int, method: str, indices: range) -> list[int]:
    """Model j's seed for `method`: from (bench seed, method, j) alone."""
    return [int(np.random.SeedSequence([seed, zlib.crc32(method.encode()), j]).generate_state(1)[0])
            for j in indices]


def _forgotten_accuracy(models: list[nn.Module], d: _Data) -> np.ndarray:
    """Per model with all k outputs: the share of forgotten-class test images it calls forgotten."""
    mask = np.isin(d.labels, d.forget)
    preds = _outputs(models, d.x_test[mask], d.device, lambda m, xb: m(xb).argmax(1)[:, None])[..., 0]
    return (preds == d.labels[mask]).mean(1)


def _unlearn_chunk(method: str, seen: list[nn.Module], d: _Data, seeds: list[int],
                   strategy: str, on_step: Callable[[int], None] | None = None
                   ) -> tuple[list[nn.Module], np.ndarray]:
    """The chunk's unlearned models (k - |C| outputs) and their forgotten-class accuracy;
    on_step(images) reports a training method's progress."""
    if method in FILTRATIONS:
        out = [unlearn(m, d.forget, (d.x, d.y), method=method, rng=s) for m, s in zip(seen, seeds)]
        return out, np.full(len(seen), np.nan)  # no output for the forgotten class is left
    full = trained_methods.unlearn_models(method, seen, d.x, d.y, d.forget, seeds, strategy=strategy,
                                          keep_outputs=True, on_step=on_step)
    forgotten = _forgotten_accuracy(full, d)
    return [trained_methods.drop_forgotten(m, d.forget) for m in full], forgotten


def unlearned_population(bench: Bench, method: str, seen: list[nn.Module], d: _Data, root: Path,
                         cfg: PopulationConfig, bar: tqdm) -> Unlearned:
    """`method` applied to every seen model, chunk by chunk (a killed run resumes at its chunk);
    `bar` counts models done, its postfix the images a training method has gone through."""
    store = ChunkStore(root / "unlearned" / method / bench.method_key(method, cfg.device))
    chunk = BENCH["chunk"][cfg.strategy != "loop"]
    done = store.done()
    for a in range(0, len(seen), chunk):
        idx = range(a, min(a + chunk, len(seen)))
        if (a, idx.stop) in done:
            bar.update(len(idx))
            continue
        images = 0

        def step(n: int) -> None:
            nonlocal images
            images += n
            bar.set_postfix_str(f"{method}: {images:,} images", refresh=False)
            bar.update(0)  # prints at most every mininterval

        started = time.perf_counter()
        models, forgotten = _unlearn_chunk(method, seen[a:idx.stop], d,
                                           _seeds(bench.experiment.seed, method, idx), cfg.strategy, step)
        seconds = time.perf_counter() - started
        logits = _outputs(models, d.x_test, d.device, lambda m, xb: m(xb))
        store.write(a, Unlearned(logits, _features(models, d), _heads(models), forgotten, seconds))
        bar.update(len(idx))
    return store.read(len(seen))


def reference(models: list[nn.Module], d: _Data, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features on the probe images and heads of a trained population, stored once."""
    paths = folder / "features.npy", folder / "heads.npy"
    if all(p.is_file() for p in paths):
        return tuple(load_array(p, None, np.float32, finite_problem) for p in paths)
    arrays = _features(models, d), _heads(models)
    for path, arr in zip(paths[::-1], arrays[::-1]):  # features last: both there means both done
        save_array(path, arr)
    return arrays


def retraining_seconds(cfg: PopulationConfig, d: _Data, models: int) -> float:
    """Seconds to retrain one model without the forgotten classes, measured here: `models` fresh
    models (a chunk, as the methods run) trained with the population's strategy on BENCH
    ["cost_batches"] mini-batches, scaled to the full epochs (every mini-batch costs the same)."""
    x, y = d.kept_data
    n = min(len(y), BENCH["cost_batches"] * cfg.batch_size)
    nets = [init_model(cfg.arch, cfg.arch_kwargs, len(d.kept), j).to(x.device) for j in range(models)]
    started = time.perf_counter()
    train_models(nets, x[:n], y[:n], list(range(models)), 1, cfg.batch_size, cfg.lr, cfg.strategy,
                 cfg.precision)
    return (time.perf_counter() - started) * (len(y) / n) * cfg.epochs / models


def _attacks(bench: Bench, row_logits: np.ndarray, retrained: np.ndarray, d: _Data,
             floor: bool, n_jobs: int, tick: Callable[[], None]) -> dict[str, Any]:
    """The classifier attacks of one row: "paper" (NN, RF, AB on logits) and, with the strong
    group, LR and MLP on logits and the paper's three on sorted logits."""
    exp = bench.experiment
    common = dict(repeats=exp.repeats, seed=exp.seed, train_samples=exp.samples(d.k),
                  test_samples=exp.samples(d.k), n_jobs=n_jobs, progress=tick)
    options = attack_options(exp)
    attack = audit.floor_advantage if floor else audit.attack_advantage
    runs = {"paper": dict(options)}
    if "strong" in bench.attacks:
        runs["strong"] = {**options, "classifiers": audit.STRONG_CLASSIFIERS}
        runs["sorted"] = {**options, "features": "sorted"}
    return {name: attack(row_logits, retrained, d.labels, exp.forget, **common, **kw).to_json()
            for name, kw in runs.items()}


def audit_row(bench: Bench, row: Unlearned | None, refs: Mapping[str, Any], d: _Data, n_jobs: int,
              tick: Callable[[], None]) -> dict[str, Any]:
    """Every number of one row (`row` None: the floor, retrained vs a second retrained population)."""
    exp = bench.experiment
    retrained = refs["notseen"]
    first = row if row is not None else refs["notseen2"]
    out: dict[str, Any] = {"attacks": _attacks(bench, first.logits, retrained.logits, d,
                                               row is None, n_jobs, tick)}
    out["accuracy"] = audit.retained_accuracy_loss(first.logits, d.labels, d.k, exp.forget).summary()
    out["forgotten_accuracy"] = (None if row is None or np.isnan(row.forgotten).all()
                                 else float(np.nanmean(row.forgotten)))
    if "strong" in bench.attacks:
        out["lira"] = lira.lira_attack(first.logits, retrained.logits, d.labels, exp.forget,
                                       repeats=exp.repeats, seed=exp.seed).to_json()
        out["probe"] = probe.probe_audit(first.features, retrained.features, d.labels[d.probe],
                                         exp.forget, repeats=exp.repeats, seed=exp.seed,
                                         n_jobs=n_jobs).to_json()
        out["head"] = probe.head_attack(first.heads, retrained.heads, repeats=exp.repeats,
                                        seed=exp.seed).to_json()
    out["seconds_per_model"] = None if row is None else row.seconds / len(row.logits)
    return out


def run_bench(bench: Bench, out: str | Path = "runs", device: str = "cpu", n_jobs: int = 1,
              progress: bool = True) -> dict[str, Any]:
    """Every number of `bench` (read back where stored); see the module doc."""
    exp = bench.experiment
    root = Path(out) / exp.name / "bench"
    run = root / "runs" / bench.digest()
    result_path = run / "result.json"
    if result_path.is_file():
        return read_stored(result_path, dict)
    started = time.perf_counter()
    data = load(exp.dataset)
    write_json(run / "bench.json", bench.to_json())
    cfg = exp.population(device)
    d = _Data(data, tuple(exp.forget), device, bench.probe_images, exp.seed)
    # models saved as they train: the methods and the white-box tests need them
    logits = train_populations(cfg, ("seen", "notseen", "transfer"), data=data, out=out,
                               experiment=exp.name, save_models=True, progress=progress)
    cfg2 = exp.population(device, seed=exp.seed + 1)
    logits["notseen2"] = train_populations(cfg2, ("notseen",), data=data, out=out, experiment=exp.name,
                                           save_models=True, progress=progress)["notseen"]
    models = {p: trained_models(cfg2 if p == "notseen2" else cfg, p.rstrip("2"), data=data, out=out,
                                experiment=exp.name, progress=progress) for p in REFERENCES}
    refs = {}
    for p in REFERENCES:
        key = (cfg2 if p == "notseen2" else cfg).digest()
        features, heads = reference(models[p], d, root / "references" / p / key)
        refs[p] = Unlearned(logits[p], features, heads, np.full(len(features), np.nan), 0.0)

    bar = tqdm(total=len(bench.methods) * exp.models, desc=f"{exp.name}: unlearn", unit="model",
               disable=not progress)
    rows = {}
    for method in bench.methods:
        if method == "transfer":
            rows[method] = refs["transfer"]
            bar.update(exp.models)
        else:
            rows[method] = unlearned_population(bench, method, models["seen"], d, root, cfg, bar)
    bar.close()
    retrain = retraining_seconds(cfg, d, min(exp.models, BENCH["chunk"][cfg.strategy != "loop"]))

    attacks_per_row = exp.repeats * d.k * (3 if "strong" in bench.attacks else 1)
    bar = tqdm(total=(len(rows) + 1) * attacks_per_row, desc=f"{exp.name}: audit", unit="attack",
               disable=not progress)
    audited = {}
    for row, unlearned in [*rows.items(), ("floor", None)]:
        path = run / "rows" / f"{row}.json"
        if path.is_file():
            audited[row] = read_stored(path, dict)
            bar.update(attacks_per_row)
            continue
        audited[row] = audit_row(bench, unlearned, refs, d, n_jobs, bar.update)
        write_json(path, audited[row])
    bar.close()
    result = {"bench": bench.to_json(), "device": device, "classes": [str(c) for c in data.classes],
              "seconds": time.perf_counter() - started,
              "retrained_accuracy": audit.retained_accuracy_loss(logits["notseen"], d.labels, d.k,
                                                                 exp.forget).summary(),
              "retraining_seconds_per_model": retrain, "rows": audited}
    write_json(result_path, result)
    return result
