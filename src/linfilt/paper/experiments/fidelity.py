"""`linfilt reproduce fidelity`: how far each of the attack's protocol choices moves the MNIST
advantages, on the project's own populations.

Every (population seed, image sampling, AdaBoost algorithm, row) is one attack of the experiment's
repeats (repeat 0 on the paper's fixed split), audited from the stored logits and kept as
`<result dir>/fidelity/seed<s>-<sampling>-<algorithm>-<row>.json`; the SAMME.R attacks run AdaBoost
alone, since NN and RF see the same data under both algorithms. The experiment's own stored attack
(its seed, our sampling, SAMME) is read, not recomputed. The settings are `settings.FIDELITY`.
The populations are trained (or read) like the experiment's, in chunks of the same size, on this
machine or a Ray cluster (`run_experiment`'s chunk_size and backend options).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from linfilt import audit
from linfilt.atomic import write_json
from linfilt.attacks import samme_r
from linfilt.errors import LinfiltError
from linfilt.paper import cluster
from linfilt.paper.data import load
from linfilt.paper.experiments.runner import (check_stored, read_attack, result_dir, stored_logits,
                                              unlearn_population)
from linfilt.paper.experiments.spec import Experiment, parse_method
from linfilt.paper.population import train_populations
from linfilt.paper.settings import FIDELITY
from linfilt.validation import check_optional_positive_int

SAMPLINGS = ("ours", "authors")
ALGORITHMS: dict[str, Mapping[str, audit.ClassifierFactory]] = {
    "SAMME": audit.DEFAULT_CLASSIFIERS, "SAMME.R": {"AB": samme_r}}

# (population seed, sampling, AdaBoost algorithm, row)
Key = tuple[int, str, str, str]


@dataclass(frozen=True)
class FidelityResult:
    experiment: Experiment
    device: str
    attacks: Mapping[Key, audit.AttackResult]

    def estimate(self, key: Key, group: str, classifier: str) -> audit.Estimate:
        return getattr(self.attacks[key].summary(), group)[classifier]


def run(exp: Experiment, out: str | Path, device: str = "cpu", *, seeds: tuple[int, ...] | None = None,
        train: bool = True, n_jobs: int = 1, progress: bool = True, chunk_size: int | None = None,
        backend: str = "local", address: str | None = None, cpus_per_task: float | None = None,
        gpus_per_task: float | None = None) -> FidelityResult:
    """Every attack of the fidelity table, computed or read back. train=False reads stored
    populations only (LinfiltError names a missing one, before any attack runs); train=True
    trains what is missing. chunk_size, backend, address, cpus_per_task, gpus_per_task: as for
    `run_experiment` (with Ray, the audit's n_jobs tasks run on the cluster too)."""
    if exp.protocol != "ours":
        raise LinfiltError("the fidelity study varies the protocol itself; run it on the default one")
    check_optional_positive_int(chunk_size, "chunk_size")
    on_ray = cluster.check_backend(backend, address, cpus_per_task, gpus_per_task, device)
    seeds = tuple(FIDELITY["seeds"] if seeds is None else seeds)
    root = result_dir(exp, out, device, chunk_size)
    paths: dict[int, dict[Key, Path]] = {seed: {} for seed in seeds}
    for seed in seeds:
        for row in FIDELITY["rows"]:
            own = root / "attacks" / f"{row}.json"
            for sampling in SAMPLINGS:
                for algorithm in ALGORITHMS:
                    paths[seed][seed, sampling, algorithm, row] = (
                        own if (seed, sampling, algorithm) == (exp.seed, "ours", "SAMME") and own.is_file()
                        else root / "fidelity" / f"seed{seed}-{sampling}-{algorithm}-{row}.json")
    missing = [seed for seed in seeds if any(not path.is_file() for path in paths[seed].values())]
    if not train:  # every population that an attack still needs is stored, before the first attack
        for seed in missing:
            check_stored(exp, out, device, ("seen", "notseen"), seed=seed, chunk_size=chunk_size)
    placement = dict(backend=backend, address=address, cpus_per_task=cpus_per_task,
                     gpus_per_task=gpus_per_task)
    data = load(exp.dataset)
    labels, k, forget = np.asarray(data.y_test), len(data.classes), tuple(exp.forget)
    samples = exp.samples(k)
    attacks: dict[Key, audit.AttackResult] = {}
    total = len(seeds) * len(FIDELITY["rows"]) * len(SAMPLINGS) * len(ALGORITHMS) * exp.repeats * k
    bar = tqdm(total=total, desc=f"{exp.name}: fidelity", unit="attack", disable=not progress)
    # one Ray session for the trainings and the audits, when there is work for it
    with cluster.connected(on_ray if missing else None, n_jobs):
        for seed in seeds:
            todo = [key for key, path in paths[seed].items() if not path.is_file()]
            for key in paths[seed].keys() - set(todo):
                attacks[key] = read_attack(paths[seed][key])
                bar.update(exp.repeats * k)
            if not todo:
                continue
            if train:
                logits = train_populations(exp.population(device, seed=seed), ("seen", "notseen"),
                                           data=data, out=out, experiment=exp.name,
                                           chunk_size=chunk_size, progress=progress, **placement)
            else:
                logits = stored_logits(exp, out, device, ("seen", "notseen"), seed=seed, data=data,
                                       chunk_size=chunk_size)
            unlearned = {}
            for key in todo:
                _, sampling, algorithm, row = key
                if row not in unlearned:
                    method, s = parse_method(row)
                    unlearned[row] = unlearn_population(logits["seen"], labels, forget, method, s,
                                                        seed=exp.seed)
                attacks[key] = audit.attack_advantage(
                    unlearned[row], logits["notseen"], labels, forget, repeats=exp.repeats,
                    seed=exp.seed, train_samples=samples, test_samples=samples, sampling=sampling,
                    classifiers=ALGORITHMS[algorithm], n_jobs=n_jobs, progress=lambda: bar.update())
                write_json(paths[seed][key], attacks[key].to_json())
    bar.close()
    return FidelityResult(exp, device, {key: attacks[key] for key in sorted(attacks)})
