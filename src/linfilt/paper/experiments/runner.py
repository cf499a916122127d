"""Run one experiment: train (or load) its populations, unlearn every seen model from its stored
logits, audit, and keep every number in `metrics.json`.

Storage: `<out>/<experiment>/<digest>-<device type>/` holds `experiment.json` (exactly what was
run), `attacks/<row>.json` (one per audited row, written as it finishes, so a killed run resumes at
the next row) and `metrics.json`; the populations live beside it under their own config hashes.
Populations trained in chunks of a non-default size c by a batched strategy have numbers of their
own (see linfilt.paper.population), and so have the results made from them: `...-chunk<c>/`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from linfilt import audit
from linfilt.atomic import write_json
from linfilt.paper.data import load
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.paper import cluster
from linfilt.paper.experiments.spec import KEPT_OUTPUTS, Experiment, parse_method
from linfilt.filtration import filtration_matrix, mean_logits, retained_classes
from linfilt.paper.population import PopulationConfig, models_in, results_dir, run_dir, train_populations
from linfilt.validation import check_optional_positive_int

T = TypeVar("T")


def unlearn_population(seen: np.ndarray, labels: np.ndarray, forget: tuple[int, ...], method: str,
                       per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Filter a whole population's logits (M, n, k) -> (M, n, k - |C|): model m's A is estimated
    from its own test-set logits (all test images, or the first `per_class` of each class in data
    set order, as the authors did for the paper's sample-size table), and the M filtrations are
    applied as one batched product. `seed` drives randomization (one independent z per model)."""
    k = seen.shape[2]
    rngs = np.random.default_rng(seed).spawn(len(seen))
    F = np.stack([filtration_matrix(mean_logits(logits, labels, k, per_class=per_class), forget,
                                    method, rng=rng) for logits, rng in zip(seen, rngs)])
    return np.matmul(seen, F.transpose(0, 2, 1).astype(seen.dtype))


def keep_outputs(filtered: np.ndarray, k: int, forget: tuple[int, ...]) -> np.ndarray:
    """Filtered logits (M, n, k - |C|) -> (M, n, k), what `linfilt.unlearn(..., keep_outputs=True)`
    gives: the retained outputs in place, each forgotten one masked (weight 0, bias float32's lowest
    finite value, so that value on every input)."""
    out = np.full(filtered.shape[:2] + (k,), np.finfo(np.float32).min, np.float32)
    out[..., retained_classes(k, forget)] = filtered
    return out


@dataclass(frozen=True)
class ExperimentResult:
    """Every number of one finished experiment, as `metrics.json` keeps it.

    Rows: each method of the experiment, "transfer" when trained, KEPT_OUTPUTS when asked for
    (advantage only) and "floor"; accuracy also has "before" (the model before unlearning on
    retained-class images), "before_all" (on every test image, as the authors scored it) and
    "retrained". The advantage summaries and paired differences are computed from the stored
    attacks (metrics.json holds them too, for the reader)."""

    experiment: Experiment
    device: str
    classes: tuple[str, ...]
    kept: tuple[int, ...]
    attacks: Mapping[str, audit.AttackResult]
    accuracy: Mapping[str, Mapping[str, float]]  # row -> AccuracyLoss.summary()
    labels_changed: Mapping[str, Mapping[str, float]]  # row -> LabelsChanged.summary()
    distribution: Mapping[str, Mapping[str, list[float]]]  # row -> PredictedDistribution.summary()
    seconds: Mapping[str, float]

    @functools.cached_property
    def advantage(self) -> dict[str, audit.Summary]:
        return {row: res.summary() for row, res in self.attacks.items()}

    @functools.cached_property
    def difference_vs_naive(self) -> dict[str, audit.Summary]:
        """Each method (and transfer) minus naive, paired; empty without a naive row. Not for
        KEPT_OUTPUTS: it is attacked against another population."""
        if "naive" not in self.attacks:
            return {}
        return {row: audit.difference(res, self.attacks["naive"])
                for row, res in self.attacks.items() if row not in ("naive", "floor", KEPT_OUTPUTS)}

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment.to_json(), "device": self.device,
                "classes": list(self.classes), "kept": list(self.kept),
                "advantage": {row: s.to_json() for row, s in self.advantage.items()},
                "attacks": {row: res.to_json() for row, res in self.attacks.items()},
                "difference_vs_naive": {row: s.to_json() for row, s in self.difference_vs_naive.items()},
                "accuracy": self.accuracy, "labels_changed": self.labels_changed,
                "distribution": self.distribution, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExperimentResult:
        """The inverse of `to_json` (the summaries are recomputed from the attacks);
        LinfiltError if `d` is not one."""
        try:
            return cls(Experiment.from_json(d["experiment"]), d["device"], tuple(d["classes"]),
                       tuple(d["kept"]), {row: audit.AttackResult.from_json(a) for row, a in d["attacks"].items()},
                       d["accuracy"], d["labels_changed"], d["distribution"], d["seconds"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise LinfiltError(f"not an experiment's metrics: {exc!r}") from None


def result_dir(exp: Experiment, out: str | Path, device: str, chunk_size: int | None = None) -> Path:
    """Where `run_experiment` keeps the results of `exp` on `device` with populations trained in
    chunks of `chunk_size` (None: the default); a chunk size that changes the populations' numbers
    gets its own folder, the default keeps the folders of earlier runs."""
    name = f"{exp.digest()}-{device.split(':')[0]}"
    if chunk_size is not None:
        cfg = exp.population(device)
        if results_dir(cfg, out, exp.name, chunk_size) != run_dir(cfg, out, exp.name):
            name += f"-chunk{chunk_size}"  # (its populations live in a chunk-<c> subfolder)
    return Path(out) / exp.name / name


_RECOMPUTE = "delete it and rerun the same command, which recomputes it"


def read_stored(path: Path, from_json: Callable[[Any], T]) -> T:
    """A JSON file that a run wrote, parsed by `from_json` (a typed result's); CorruptFileError
    names the file and says how to recompute it."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); {_RECOMPUTE}") from None
    try:
        return from_json(stored)
    except LinfiltError as exc:
        raise CorruptFileError(f"{path} is {exc}; {_RECOMPUTE}") from None


def read_attack(path: Path) -> audit.AttackResult:
    """An attack's JSON that the runner (or the fidelity study) wrote; see `read_stored`."""
    return read_stored(path, audit.AttackResult.from_json)


def read_result(path: Path) -> ExperimentResult:
    """A metrics.json that `run_experiment` wrote; see `read_stored`."""
    return read_stored(path, ExperimentResult.from_json)


def attack_options(exp: Experiment) -> dict[str, Any]:
    """The audit keywords of the experiment's attack protocol: image sampling and classifiers."""
    protocol = exp.attack_protocol
    samme_r = protocol["adaboost"] == "SAMME.R"
    return {"sampling": protocol["sampling"],
            "classifiers": audit.AUTHORS_CLASSIFIERS if samme_r else audit.DEFAULT_CLASSIFIERS}


def check_stored(exp: Experiment, out: str | Path, device: str, populations: tuple[str, ...],
                 seed: int | None = None, chunk_size: int | None = None) -> PopulationConfig:
    """The config of finished populations of `exp` (population seed `seed`, default the
    experiment's; trained in chunks of `chunk_size`, default the default), without reading them;
    LinfiltError names the first one not stored in full."""
    cfg = exp.population(device, seed=seed)
    for population in populations:
        path = results_dir(cfg, out, exp.name, chunk_size) / "logits" / f"{population}.npy"
        stored = models_in(path) if path.is_file() else 0
        if stored < cfg.models:  # (train_populations would train the missing ones)
            raise LinfiltError(f"no stored {population} population of {exp.name} (seed {cfg.seed}) of "
                               f"{cfg.models} models at {path} ({stored} stored); run `linfilt reproduce` "
                               "(with the same --chunk-size) to train it")
    return cfg


def stored_logits(exp: Experiment, out: str | Path, device: str, populations: tuple[str, ...],
                  seed: int | None = None, data: Any = None, chunk_size: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Logits of finished populations of `exp` (see `check_stored`), read without training."""
    cfg = check_stored(exp, out, device, populations, seed, chunk_size)
    return train_populations(cfg, populations, data=data, out=out, experiment=exp.name,
                             chunk_size=chunk_size, progress=False)


def with_before_all(result: ExperimentResult, out: str | Path, chunk_size: int | None = None
                    ) -> ExperimentResult:
    """`result` with accuracy["before_all"]: a metrics.json written before that row existed lacks
    it, and it is computed here from the stored seen logits (of populations trained in chunks of
    `chunk_size`, as the result was; nothing is written)."""
    if "before_all" in result.accuracy:
        return result
    exp = result.experiment
    data = load(exp.dataset)
    seen = stored_logits(exp, out, result.device, ("seen",), data=data, chunk_size=chunk_size)["seen"]
    row = audit.retained_accuracy_loss(seen, np.asarray(data.y_test), len(data.classes), exp.forget,
                                       images="all").summary()
    return dataclasses.replace(result, accuracy={**result.accuracy, "before_all": row})


def run_experiment(exp: Experiment, out: str | Path = "runs", device: str = "cpu", n_jobs: int = 1,
                   progress: bool = True, backend: str = "local", address: str | None = None,
                   cpus_per_task: float | None = None, gpus_per_task: float | None = None,
                   chunk_size: int | None = None) -> ExperimentResult:
    """Every number of `exp`, computed or read from a finished earlier run; see module doc.
    chunk_size: models trained at once (`train_populations`'s; None: its default), which is also
    the work of one Ray task. backend "ray": the populations train on a Ray cluster
    (`train_populations`'s backend, address, cpus_per_task, gpus_per_task), the floor's second
    population beside the others, and the audit's n_jobs tasks run there too."""
    check_optional_positive_int(chunk_size, "chunk_size")
    on_ray = cluster.check_backend(backend, address, cpus_per_task, gpus_per_task, device)
    metrics_path = result_dir(exp, out, device, chunk_size) / "metrics.json"
    if metrics_path.is_file():
        return read_result(metrics_path)
    with cluster.connected(on_ray, n_jobs):  # a Ray session for the trainings and the audit
        return _run_experiment(exp, out, device, n_jobs, progress, chunk_size,
                               dict(backend=backend, address=address, cpus_per_task=cpus_per_task,
                                    gpus_per_task=gpus_per_task))


def _beside(fn: Callable[..., T], *args: Any) -> Future[T]:
    """fn(*args) in a daemon thread: a run stopped by an error or Ctrl-C leaves without waiting
    for it (what it has stored is kept, as for a killed run)."""
    future: Future[T] = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=work, daemon=True).start()
    return future


def _run_experiment(exp: Experiment, out: str | Path, device: str, n_jobs: int, progress: bool,
                    chunk_size: int | None, placement: dict[str, Any]) -> ExperimentResult:
    root = result_dir(exp, out, device, chunk_size)
    metrics_path = root / "metrics.json"
    write_json(root / "experiment.json", exp.to_json())

    data = load(exp.dataset)
    labels = np.asarray(data.y_test)
    k = len(data.classes)
    forget = tuple(exp.forget)
    kept = retained_classes(k, forget)

    started = time.perf_counter()
    pops = ("seen", "notseen", *(["transfer"] if exp.transfer else []),
            *(["dropin"] if exp.keep_outputs else []))
    train = functools.partial(train_populations, data=data, out=out, experiment=exp.name,
                              chunk_size=chunk_size, progress=progress, **placement)
    # The floor: a second retrained population, independent through its own seed.
    floor_cfg = exp.population(device, seed=exp.seed + 1)
    if placement["backend"] == "ray":  # its tasks go to the cluster beside the first call's
        floor = _beside(train, floor_cfg, ("notseen",))
        logits = train(exp.population(device), pops)
        notseen2 = floor.result()["notseen"]
    else:
        logits = train(exp.population(device), pops)
        notseen2 = train(floor_cfg, ("notseen",))["notseen"]
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    unlearned = {}
    for label in exp.methods:
        method, s = parse_method(label)
        unlearned[label] = unlearn_population(logits["seen"], labels, forget, method, s, seed=exp.seed)
    unlearn_seconds = time.perf_counter() - started

    # Every population that stands in for "retrained": the filtered ones, and the transfer models.
    candidates = {**unlearned, **({"transfer": logits["transfer"]} if exp.transfer else {})}
    # row -> (attack, its two populations); the floor pools both retrained populations.
    rows = {row: (audit.attack_advantage, row_logits, logits["notseen"])
            for row, row_logits in candidates.items()}
    if exp.keep_outputs:  # the drop-in model against models retrained with the same k outputs
        normalized = unlearned.get("normalization")
        if normalized is None:
            normalized = unlearn_population(logits["seen"], labels, forget, "normalization")
        rows[KEPT_OUTPUTS] = (audit.attack_advantage, keep_outputs(normalized, k, forget), logits["dropin"])
    rows["floor"] = (audit.floor_advantage, logits["notseen"], notseen2)
    samples = exp.samples(k)
    attacks: dict[str, audit.AttackResult] = {}
    started = time.perf_counter()
    bar = tqdm(total=len(rows) * exp.repeats * k, desc=f"{exp.name}: audit", unit="attack",
               disable=not progress)
    for row, (attack, first, second) in rows.items():
        path = root / "attacks" / f"{row}.json"
        if path.is_file():
            attacks[row] = read_attack(path)
            bar.update(exp.repeats * k)
            continue
        attacks[row] = attack(first, second, labels, forget, repeats=exp.repeats, seed=exp.seed,
                              train_samples=samples, test_samples=samples, n_jobs=n_jobs,
                              progress=lambda: bar.update(), **attack_options(exp))
        write_json(path, attacks[row].to_json())
    bar.close()
    audit_seconds = time.perf_counter() - started

    naive = unlearned.get("naive")
    accuracy = {"before": logits["seen"], "retrained": logits["notseen"], **candidates}
    distributions = {"retrained": logits["notseen"], **candidates}

    result = ExperimentResult(
        exp, device, tuple(data.classes), tuple(kept.tolist()), attacks,
        accuracy={**{row: audit.retained_accuracy_loss(l, labels, k, forget).summary()
                     for row, l in accuracy.items()},
                  "before_all": audit.retained_accuracy_loss(logits["seen"], labels, k, forget,
                                                             images="all").summary()},
        labels_changed=({row: audit.labels_changed(l, naive, labels, k, forget).summary()
                         for row, l in unlearned.items() if row != "naive"} if naive is not None else {}),
        distribution={row: {key: np.asarray(v).tolist() for key, v in
                            audit.predicted_distribution(l, labels, forget[0], k, forget).summary().items()}
                      for row, l in distributions.items()},
        seconds={"train_or_load": train_seconds, "unlearn_population": unlearn_seconds,
                 "audit": audit_seconds})
    write_json(metrics_path, result.to_json())
    return result
