"""Extension points: where other layers and packages add commands, architectures and data sets.

The core (filtration, adapters, model files, audit) knows nothing of the paper's reproduction.
`linfilt.paper` offers its commands (`train`, `reproduce`, ...), its architectures (so model files
can hold them) and its data sets (so `linfilt unlearn --dataset` can read them) through the
entry-point group `linfilt.plugins`, as any other package may: an entry point names a module whose
import calls the `register_*` functions below. Registrations are strings ("module:attribute"), so
listing what exists imports nothing heavy; the named object is imported on first use.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from linfilt.errors import LinfiltError

GROUP = "linfilt.plugins"


COMMANDS: dict[str, str] = {}  # name -> a module with `register(subparsers)`
ARCHITECTURES: dict[str, str] = {}  # name -> "module:callable(name, num_classes, **kwargs) -> nn.Module"
DATASETS: dict[str, str] = {}  # name -> "module:callable(name, root=None) -> data set with x_test, y_test, ..."

_loaded = False


def register_command(name: str, module: str) -> None:
    COMMANDS.setdefault(name, module)


def register_architecture(name: str, target: str) -> None:
    ARCHITECTURES.setdefault(name, target)


def register_dataset(name: str, target: str) -> None:
    DATASETS.setdefault(name, target)


def load_plugins() -> None:
    """Import every module of the entry-point group once (each registers what it offers)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in importlib.metadata.entry_points(group=GROUP):
        entry.load()


def resolve(target: str) -> Any:
    """The object a "module:attribute" registration names."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _lookup(table: dict[str, str], kind: str, name: Any) -> Any:
    load_plugins()
    if not isinstance(name, str) or name not in table:
        known = ", ".join(sorted(table)) or "none (is a plugin such as linfilt.paper installed?)"
        raise LinfiltError(f"unknown {kind} {name!r}; known: {known}")
    return resolve(table[name])


def architecture(name: str) -> Any:
    """The builder registered for architecture `name`: callable(name, num_classes, **kwargs) -> nn.Module
    (modelio calls it with the spec's arch, class count and arch_kwargs)."""
    return _lookup(ARCHITECTURES, "architecture", name)


def dataset(name: str) -> Any:
    """The loader registered for data set `name`: callable(name, root=None) -> data set."""
    return _lookup(DATASETS, "data set", name)
