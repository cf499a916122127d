"""Declarative experiments: one per trained configuration, and the paper artefacts made from them.

An `Experiment` names everything that changes a number (data set, architecture settings,
population size, epochs, forgotten classes, unlearning methods and sample sizes, attack
settings); its digest keys the stored results. `ARTIFACTS`, the one registry of the paper's tables
and figures, says what each needs and how the report lays it out. The values come from
`linfilt.paper.settings`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from linfilt.errors import LinfiltError
from linfilt.paper import settings
from linfilt.paper.experiments import paper
from linfilt.paper.population import PopulationConfig

# Bump when a change to the runner changes what an experiment computes.
RUNNER_VERSION = 2  # 2: the floor is the pooled permutation null

# The row of `Experiment.keep_outputs`: normalization as `linfilt.unlearn(..., keep_outputs=True)`
# gives it (k outputs, the forgotten ones masked), attacked against the dropin population.
KEPT_OUTPUTS = "normalization+keep_outputs"


def parse_method(label: str) -> tuple[str, int | None]:
    """"normalization@10" -> ("normalization", 10); "naive" -> ("naive", None) (s = all images)."""
    method, _, s = label.partition("@")
    return method, (int(s) if s else None)


def check_protocol(protocol: Any) -> str:
    """A key of settings.ATTACK_PROTOCOLS."""
    if not isinstance(protocol, str) or protocol not in settings.ATTACK_PROTOCOLS:
        raise LinfiltError(f"--protocol must be one of {sorted(settings.ATTACK_PROTOCOLS)}, got {protocol!r}")
    return protocol


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    forget: tuple[int, ...]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    models: int = settings.MODELS  # per population
    epochs: int | None = None  # None: the data set's epochs in settings.PROTOCOL
    methods: tuple[str, ...] = settings.METHODS
    transfer: bool = False  # also train and audit the transfer population
    # Images per model per side of the attack: for forgotten classes, and for retained ones.
    forgotten_samples: int = settings.ATTACK_SAMPLES
    retained_samples: int = settings.ATTACK_SAMPLES
    repeats: int = settings.REPEATS  # attack repeats (random model splits); repeat 0 = paper's split
    seed: int = 0
    note: str = ""
    protocol: str = "ours"  # a key of settings.ATTACK_PROTOCOLS
    # Also audit the KEPT_OUTPUTS row (and train the dropin population it is attacked against).
    keep_outputs: bool = False

    def __post_init__(self) -> None:
        check_protocol(self.protocol)

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (the form of experiment.json and of metrics.json's "experiment");
        keep_outputs only when set, so that experiments without it keep the form and digests
        they had before it existed."""
        d = {**dataclasses.asdict(self), "forget": list(self.forget), "methods": list(self.methods)}
        if not self.keep_outputs:
            del d["keep_outputs"]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Experiment:
        """The inverse of `to_json`; LinfiltError names a missing or unknown field."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, Mapping) or set(d) - names or {"name", "dataset", "forget"} - set(d):
            raise LinfiltError(f"not an experiment: expected the fields {sorted(names)}, got "
                               f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}")
        values = dict(d)
        for name in ("forget", "methods"):  # JSON has lists only
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def scaled(self, models: int | None = None, epochs: int | None = None,
               repeats: int | None = None, protocol: str | None = None) -> Experiment:
        """The same experiment at another scale, or attack protocol (None keeps the current value)."""
        changes = {k: v for k, v in (("models", models), ("epochs", epochs), ("repeats", repeats))
                   if v is not None}
        for k, v in changes.items():
            if v < 1:
                raise LinfiltError(f"--{k} must be a positive integer, got {v}")
        if changes.get("models", self.models) < 4:
            raise LinfiltError("the attack's 70/30 model split needs at least 4 models per population")
        if protocol is not None:
            changes["protocol"] = protocol  # checked by __post_init__
        return dataclasses.replace(self, **changes)

    @property
    def trained_epochs(self) -> int:
        return self.epochs if self.epochs is not None else settings.PROTOCOL[self.dataset]["epochs"]

    @property
    def full_scale(self) -> bool:
        return (self.models == settings.MODELS
                and self.trained_epochs == settings.PROTOCOL[self.dataset]["epochs"])

    @property
    def attack_protocol(self) -> dict[str, Any]:
        return settings.ATTACK_PROTOCOLS[self.protocol]

    def rows(self) -> list[str]:
        """The audited rows besides the floor: every method, in order, then transfer if trained,
        then KEPT_OUTPUTS if asked for."""
        return [*self.methods, *(["transfer"] if self.transfer else []),
                *([KEPT_OUTPUTS] if self.keep_outputs else [])]

    def population(self, device: str = "cpu", seed: int | None = None) -> PopulationConfig:
        arch_kwargs = {**self.attack_protocol["arch_kwargs"].get(self.dataset, {}), **self.arch_kwargs}
        overrides: dict[str, Any] = {"models": self.models, "arch_kwargs": arch_kwargs,
                                     "device": device, "seed": self.seed if seed is None else seed}
        if self.epochs is not None:
            overrides["epochs"] = self.epochs
        return PopulationConfig.protocol(self.dataset, self.forget, **overrides)

    def samples(self, num_classes: int) -> dict[int, int]:
        return {c: self.forgotten_samples if c in self.forget else self.retained_samples
                for c in range(num_classes)}

    def digest(self) -> str:
        key = {**self.to_json(), "runner": RUNNER_VERSION}
        key.pop("note")
        if key["protocol"] == "ours":  # the default leaves the digests of earlier runs as they were
            key.pop("protocol")
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


EXPERIMENTS: dict[str, Experiment] = {name: Experiment(name, **kw) for name, kw in settings.EXPERIMENTS.items()}

_NAIVE_NORM = ("naive", "normalization")


def _cifar(table: Mapping[int, Any]) -> Callable[[Experiment], Any]:
    """The paper's CIFAR-10 numbers for the experiment's p."""
    return lambda exp: table.get(exp.arch_kwargs.get("p"))


def _fixed(table: Any) -> Callable[[Experiment], Any]:
    return lambda exp: table


@dataclass(frozen=True)
class Artifact:
    """One table or figure of the paper: what it shows, the experiments it needs (none for the
    inversion figures, which run their own), and how the report lays it out."""

    kind: str  # "table" or "figure"
    number: int
    title: str
    experiments: tuple[str, ...]
    # "advantage" (with paired differences to naive unless `differences` is False), "accuracy",
    # "labels_changed", "figure3" or "inversion"
    layout: str
    # our rows shown (None: all of `Experiment.rows`); naming KEPT_OUTPUTS has `linfilt reproduce`
    # audit that row (`Experiment.keep_outputs`) for the artefact's experiments
    rows: tuple[str, ...] | None = None
    paper: Callable[[Experiment], Any] | None = None  # the paper's numbers for an experiment
    differences: bool = True

    @property
    def name(self) -> str:
        return f"{self.kind}{self.number}"


_ARTIFACTS = (
    Artifact("table", 1, "advantage, MNIST MLP, naive and normalization", ("mnist",), "advantage",
             (*_NAIVE_NORM, KEPT_OUTPUTS), _fixed(paper.MNIST_ADVANTAGE)),
    Artifact("table", 2, "advantage, CIFAR-10 CNN p = 256", ("cifar10-p256",), "advantage",
             ("naive", "normalization", "randomization", "zeroing", "transfer"), _cifar(paper.CIFAR_ADVANTAGE)),
    Artifact("table", 3, "advantage, AT&T ResNet, 4 people forgotten", ("att_faces",), "advantage",
             None, _fixed(paper.ATT_ADVANTAGE)),
    Artifact("table", 4, "advantage by sample size s, CIFAR-10 p = 256", ("cifar10-p256",), "advantage",
             ("naive", "normalization@10", "normalization@100", "normalization"), _cifar(paper.CIFAR_ADVANTAGE)),
    Artifact("table", 5, "advantage by p, CIFAR-10", ("cifar10-p64", "cifar10-p256", "cifar10-p1024"),
             "advantage", _NAIVE_NORM, _cifar(paper.CIFAR_TABLE5), differences=False),
    Artifact("table", 6, "labels changed vs naive, CIFAR-10 p = 256", ("cifar10-p256",), "labels_changed"),
    Artifact("table", 7, "advantage, MNIST MLP, all four methods", ("mnist",), "advantage",
             settings.METHODS, _fixed(paper.MNIST_ADVANTAGE)),
    Artifact("table", 8, "accuracy and loss, MNIST MLP", ("mnist",), "accuracy", None,
             _fixed(paper.MNIST_ACCURACY)),
    Artifact("table", 9, "advantage, CIFAR-10, all settings", ("cifar10-p64", "cifar10-p256", "cifar10-p1024"),
             "advantage", None, _cifar(paper.CIFAR_ADVANTAGE)),
    Artifact("table", 10, "accuracy and loss, CIFAR-10", ("cifar10-p64", "cifar10-p256", "cifar10-p1024"),
             "accuracy", None, _cifar(paper.CIFAR_ACCURACY)),
    Artifact("figure", 1, "model inversion of one person before and after unlearning", (), "inversion"),
    Artifact("figure", 3, "predicted distribution of the forgotten class, CIFAR-10 p = 256",
             ("cifar10-p256",), "figure3"),
    Artifact("figure", 5, "model inversion of each person after unlearning them", (), "inversion"),
    Artifact("figure", 6, "model inversion of every person after unlearning each", (), "inversion"),
)
# Paper order: tables, then figures, each by number.
ARTIFACTS: dict[str, Artifact] = {a.name: a for a in _ARTIFACTS}
