"""What one bench run is: a paper experiment's populations, the unlearning methods applied to its
seen models, and the attacks that judge them; its digest keys the stored results."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from linfilt.errors import LinfiltError
from linfilt.paper import settings
from linfilt.paper.experiments.spec import EXPERIMENTS, Experiment
from linfilt.validation import check_positive_int

# Bump when a change to the bench changes what a run computes.
BENCH_VERSION = 1

FILTRATIONS = settings.METHODS  # computed from each seen model's head and its training-set logits
TRAINED = ("ft", "neggrad", "neggrad+", "rl", "boundary_shrink", "scrub", "ssd")  # paper.methods
ROWS = (*FILTRATIONS, "transfer", *TRAINED)  # "transfer": the population with a retrained head
ATTACKS = ("paper", "strong")


def _choice(values: Any, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A list of names among `known` (or "all"), in `known`'s order, each once."""
    if isinstance(values, str):
        values = values.split(",")
    try:
        names = [str(v).strip() for v in values]
    except TypeError:
        raise LinfiltError(f"{what} must be a comma-separated list of names, got {values!r}") from None
    if "all" in names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise LinfiltError(f"unknown {what} {unknown or names}; choose among {', '.join(known)} or all")
    return tuple(n for n in known if n in names)


@dataclass(frozen=True)
class Bench:
    experiment: Experiment  # its populations (seen, notseen, transfer, and the floor's notseen)
    methods: tuple[str, ...] = ROWS
    attacks: tuple[str, ...] = ATTACKS
    probe_images: int = settings.BENCH["probe_images"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _choice(self.methods, ROWS, "method(s)"))
        object.__setattr__(self, "attacks", _choice(self.attacks, ATTACKS, "attack group(s)"))
        check_positive_int(self.probe_images, "probe_images")

    @classmethod
    def named(cls, dataset: str, *, models: int | None = None, epochs: int | None = None,
              repeats: int | None = None, **fields: Any) -> Bench:
        """The bench on `dataset` (mnist, cifar10, att_faces), on the paper experiment of that data
        set (CIFAR-10: p = 256), at the given scale."""
        if dataset not in settings.BENCH["experiments"]:
            raise LinfiltError(f"unknown bench data set {dataset!r}; choose among "
                               f"{', '.join(settings.BENCH['experiments'])}")
        exp = EXPERIMENTS[settings.BENCH["experiments"][dataset]]
        exp = dataclasses.replace(exp.scaled(models, epochs, repeats), transfer=True,
                                  methods=FILTRATIONS)
        return cls(exp, **fields)

    @property
    def dataset(self) -> str:
        return self.experiment.dataset

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment.to_json(), "methods": list(self.methods),
                "attacks": list(self.attacks), "probe_images": self.probe_images}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Bench:
        if not isinstance(d, Mapping) or set(d) != {"experiment", "methods", "attacks", "probe_images"}:
            raise LinfiltError(f"not a bench: expected experiment, methods, attacks, probe_images; got "
                               f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}")
        return cls(Experiment.from_json(d["experiment"]), tuple(d["methods"]), tuple(d["attacks"]),
                   d["probe_images"])

    def method_key(self, method: str, device: str) -> str:
        """The digest of what one method's unlearned population depends on (not the attacks, nor
        the other methods: adding a method or an attack reuses the stored populations)."""
        key = {"population": self.experiment.population(device).key(), "method": method,
               "settings": settings.UNLEARNING.get(method, {}), "probe_images": self.probe_images,
               "bench": BENCH_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def digest(self) -> str:
        key = {**self.to_json(), "bench": BENCH_VERSION}
        key["experiment"].pop("note")
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
