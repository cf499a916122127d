"""Declarative experiments: one per trained configuration, and the paper artefacts made from them.

An `Experiment` names everything that changes a number (data set, architecture settings,
population size, epochs, forgotten classes, unlearning methods and sample sizes, attack
settings); its digest keys the stored results. `ARTIFACTS` maps each paper table or figure to
the experiments it needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from linfilt.errors import LinfiltError
from linfilt.paper.population import PROTOCOL, PopulationConfig

# Bump when a change to the runner changes what an experiment computes.
RUNNER_VERSION = 2  # 2: the floor is the pooled permutation null


def parse_method(label: str) -> tuple[str, int | None]:
    """"normalization@10" -> ("normalization", 10); "naive" -> ("naive", None) (s = all images)."""
    method, _, s = label.partition("@")
    return method, (int(s) if s else None)


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    forget: tuple[int, ...]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    models: int = 100  # per population, as in the paper
    epochs: int | None = None  # None: PROTOCOL.md's epochs for the data set
    methods: tuple[str, ...] = ("naive", "normalization", "randomization", "zeroing")
    transfer: bool = False  # also train and audit the transfer population
    # Images per model per side of the attack: for forgotten classes, and for retained ones.
    forgotten_samples: int = 150
    retained_samples: int = 150
    repeats: int = 5  # attack repeats (random model splits) behind each interval; repeat 0 = paper's split
    seed: int = 0
    note: str = ""

    def scaled(self, models: int | None = None, epochs: int | None = None,
               repeats: int | None = None) -> "Experiment":
        """The same experiment at another scale (None keeps the current value)."""
        changes = {k: v for k, v in (("models", models), ("epochs", epochs), ("repeats", repeats))
                   if v is not None}
        for k, v in changes.items():
            if v < 1:
                raise LinfiltError(f"--{k} must be a positive integer, got {v}")
        if changes.get("models", self.models) < 4:
            raise LinfiltError("the attack's 70/30 model split needs at least 4 models per population")
        return dataclasses.replace(self, **changes)

    @property
    def trained_epochs(self) -> int:
        return self.epochs if self.epochs is not None else PROTOCOL[self.dataset]["epochs"]

    @property
    def full_scale(self) -> bool:
        return self.models == 100 and self.trained_epochs == PROTOCOL[self.dataset]["epochs"]

    def population(self, device: str = "cpu", seed: int | None = None) -> PopulationConfig:
        overrides: dict[str, Any] = {"models": self.models, "arch_kwargs": dict(self.arch_kwargs),
                                     "device": device, "seed": self.seed if seed is None else seed}
        if self.epochs is not None:
            overrides["epochs"] = self.epochs
        return PopulationConfig.protocol(self.dataset, self.forget, **overrides)

    def samples(self, num_classes: int) -> dict[int, int]:
        return {c: self.forgotten_samples if c in self.forget else self.retained_samples
                for c in range(num_classes)}

    def digest(self) -> str:
        key = {**dataclasses.asdict(self), "runner": RUNNER_VERSION}
        key.pop("note")
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


_CIFAR_METHODS = ("naive", "normalization@10", "normalization@100", "normalization",
                  "randomization", "zeroing")

EXPERIMENTS: dict[str, Experiment] = {
    "mnist": Experiment("mnist", "mnist", (0,), retained_samples=100,
                        note="MLP (50 hidden units) on MNIST, digit 0 forgotten"),
    **{f"cifar10-p{p}": Experiment(f"cifar10-p{p}", "cifar10", (0,), {"p": p}, methods=_CIFAR_METHODS,
                                   transfer=(p == 256),
                                   note=f"CNN (p = {p}) on CIFAR-10, class airplane forgotten")
       for p in (64, 256, 1024)},
    "att_faces": Experiment("att_faces", "att_faces", (0, 1, 2, 3), methods=("naive", "normalization"),
                            note="ResNet on AT&T faces, people s1..s4 forgotten"),
}

# Paper artefact -> (experiments it needs, what it shows).
ARTIFACTS: dict[str, tuple[tuple[str, ...], str]] = {
    "table1": (("mnist",), "advantage, MNIST MLP, naive and normalization"),
    "table7": (("mnist",), "advantage, MNIST MLP, all four methods"),
    "table8": (("mnist",), "accuracy and loss, MNIST MLP"),
    "table2": (("cifar10-p256",), "advantage, CIFAR-10 CNN p = 256"),
    "table3": (("att_faces",), "advantage, AT&T ResNet, 4 people forgotten"),
    "table4": (("cifar10-p256",), "advantage by sample size s, CIFAR-10 p = 256"),
    "table5": (("cifar10-p64", "cifar10-p256", "cifar10-p1024"), "advantage by p, CIFAR-10"),
    "table6": (("cifar10-p256",), "labels changed vs naive, CIFAR-10 p = 256"),
    "table9": (("cifar10-p64", "cifar10-p256", "cifar10-p1024"), "advantage, CIFAR-10, all settings"),
    "table10": (("cifar10-p64", "cifar10-p256", "cifar10-p1024"), "accuracy and loss, CIFAR-10"),
    "figure3": (("cifar10-p256",), "predicted distribution of the forgotten class, CIFAR-10 p = 256"),
}
