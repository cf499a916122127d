"""The project's model file: one `.safetensors` file whose header metadata holds a JSON spec.

The spec says how to rebuild the module (`arch`, `arch_kwargs` for `linfilt.models.build`),
which classes its outputs are (original ids and names, in output order) and every filtration
applied so far. Weights are plain tensors, so loading never runs code from the file; a user's
plain PyTorch state dict is read with `torch.load(weights_only=True)` only.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from linfilt.atomic import write_bytes
from linfilt.errors import LinfiltError, ModelFormatError
from linfilt.pytorch import RECORD_ATTR, FiltrationRecord, UnlearnStep

FORMAT_NAME = "linfilt-model"
FORMAT_VERSION = 1
# Key of the spec in the safetensors header's `__metadata__` (a str -> str map).
SPEC_KEY = "linfilt.spec"

# First bytes of the files people most often hand over by mistake, for a precise message.
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2+ (torch.save's legacy format)


@dataclass(frozen=True)
class HistoryEntry:
    """One linear filtration applied to a model (one deletion request), as the spec records it."""

    method: str
    forgot: tuple[int, ...]  # original class ids
    forgot_names: tuple[str, ...]
    per_class: int | None  # samples per class used for A (None: all given)
    samples: int  # samples that estimated A
    condition_number: float | None  # of A; None when infinite (singular A, pseudo-inverse used)
    date: str  # UTC, ISO 8601
    seed: int | None = None  # of the random choices (randomization, random per-class samples)
    pinv: bool = False  # F came from a pseudo-inverse of a singular / ill-conditioned A (opt-in)

    def __post_init__(self) -> None:
        object.__setattr__(self, "forgot", tuple(int(c) for c in self.forgot))
        object.__setattr__(self, "forgot_names", tuple(str(n) for n in self.forgot_names))
        if len(self.forgot) != len(self.forgot_names) or not self.forgot:
            raise ModelFormatError("a filtration must name its forgotten classes, one name per id")
        cond = self.condition_number
        if cond is not None and not math.isfinite(cond):
            object.__setattr__(self, "condition_number", None)


@dataclass(frozen=True)
class ModelSpec:
    """What a model file says about its model besides the weights.

    `class_ids[i]` and `class_names[i]` describe output i; ids are those of the ORIGINAL
    training labels, so they stay valid however many classes were forgotten since.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    history: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        ids = tuple(int(c) for c in self.class_ids)
        names = tuple(str(n) for n in self.class_names)
        if len(ids) != len(names):
            raise ModelFormatError(f"spec has {len(ids)} class ids but {len(names)} class names")
        if len(ids) < 2:
            raise ModelFormatError(f"a model needs at least 2 classes, the spec has {len(ids)}")
        if len(set(ids)) != len(ids):
            raise ModelFormatError(f"spec repeats class ids: {list(ids)}")
        if not isinstance(self.arch, str) or not self.arch:
            raise ModelFormatError(f"spec arch must be a non-empty string, not {self.arch!r}")
        try:  # JSON round trip: validates, and makes a loaded spec equal the saved one
            kwargs = json.loads(json.dumps(dict(self.arch_kwargs), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"arch_kwargs must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "class_ids", ids)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "arch_kwargs", kwargs)
        object.__setattr__(self, "history", tuple(self.history))

    @classmethod
    def new(cls, arch: str, arch_kwargs: Mapping[str, Any], class_names: Iterable[str]) -> ModelSpec:
        """Spec of a freshly trained model: class ids 0..k-1 in output order."""
        names = [str(n) for n in class_names]
        return cls(arch, dict(arch_kwargs), tuple(range(len(names))), tuple(names))

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def forgotten_ids(self) -> tuple[int, ...]:
        """Original ids of every class forgotten so far, in the order they were forgotten."""
        return tuple(c for f in self.history for c in f.forgot)

    def after_unlearn(self, model: nn.Module) -> ModelSpec:
        """The spec of `model`, the result of `linfilt.unlearn` on the model this spec describes.

        Reads the record `linfilt.unlearn` leaves on its result (original class ids, one step per
        deletion request) and adds the new steps to the history, named and dated.
        """
        record = getattr(model, RECORD_ATTR, None)
        if not isinstance(record, FiltrationRecord) or len(record.steps) <= len(self.history):
            raise LinfiltError("this model carries no new linear filtration: pass the result of "
                               "linfilt.unlearn applied to the model this spec was loaded with")
        names = dict(zip(self.class_ids, self.class_names))
        if not set(record.classes) <= set(names):
            raise LinfiltError(f"the model's classes {list(record.classes)} are not among this spec's "
                               f"{list(self.class_ids)}")
        date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        entries = tuple(
            HistoryEntry(method=step.method, forgot=step.forget,
                         forgot_names=tuple(names[c] for c in step.forget), per_class=step.per_class,
                         samples=step.samples, condition_number=step.condition, date=date,
                         seed=step.seed, pinv=step.pinv)
            for step in record.steps[len(self.history):]
        )
        return dataclasses.replace(
            self,
            class_ids=record.classes,
            class_names=tuple(names[c] for c in record.classes),
            history=self.history + entries,
        )

    def record(self) -> FiltrationRecord:
        """The record `linfilt.unlearn` reads: so a loaded model forgets and skips by original ids."""
        steps = tuple(
            UnlearnStep(forget=e.forgot, method=e.method, per_class=e.per_class, samples=e.samples,
                        condition=math.inf if e.condition_number is None else e.condition_number,
                        pinv=e.pinv, head="head", seed=e.seed)
            for e in self.history
        )
        return FiltrationRecord(classes=self.class_ids, steps=steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "classes": [{"id": i, "name": n} for i, n in zip(self.class_ids, self.class_names)],
            "history": [dataclasses.asdict(f) for f in self.history],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ModelSpec:
        """Parse and validate a spec; ModelFormatError says what is wrong."""
        if not isinstance(obj, dict):
            raise ModelFormatError(f"the spec must be a JSON object, not {type(obj).__name__}")
        if obj.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"the spec's format is {obj.get('format')!r}, not {FORMAT_NAME!r}")
        version = obj.get("version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFormatError(
                f"spec version {version!r} is not supported (this linfilt reads 1..{FORMAT_VERSION}); "
                "upgrade linfilt to read it"
            )
        expected = {"format", "version", "arch", "arch_kwargs", "classes", "history"}
        if set(obj) != expected:
            missing, unknown = sorted(expected - set(obj)), sorted(set(obj) - expected)
            raise ModelFormatError(f"spec fields wrong: missing {missing}, unknown {unknown}")
        try:
            classes = obj["classes"]
            history = tuple(HistoryEntry(**_fields(h, HistoryEntry)) for h in obj["history"])
            return cls(
                arch=obj["arch"],
                arch_kwargs=obj["arch_kwargs"],
                class_ids=tuple(_int(c["id"]) for c in classes),
                class_names=tuple(_str(c["name"]) for c in classes),
                history=history,
            )
        except ModelFormatError:
            raise
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"malformed spec: {exc!r}") from None


def _fields(obj: Any, kind: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(kind)}
    if not isinstance(obj, dict) or not set(obj) <= names:
        raise ModelFormatError(f"malformed {kind.__name__} record in the spec: {obj!r}")
    return obj


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"class id must be an integer, not {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ModelFormatError(f"class name must be a string, not {value!r}")
    return value


def _build(spec: ModelSpec) -> nn.Module:
    """The spec's module with weightless (meta) tensors: no memory, and the global RNG untouched."""
    from linfilt.models import ARCHITECTURES, build

    if spec.arch not in ARCHITECTURES:
        raise ModelFormatError(f"unknown architecture {spec.arch!r}; known: {sorted(ARCHITECTURES)}")
    try:
        with torch.device("meta"):
            return build(spec.arch, spec.num_classes, **spec.arch_kwargs)
    except LinfiltError as exc:
        raise ModelFormatError(str(exc)) from None


def _check_tensors(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> None:
    """Same keys and shapes as the module the spec builds, else a message naming the difference."""
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise ModelFormatError(f"weights do not match the spec's architecture: missing {missing}, "
                               f"unknown {unknown}")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise ModelFormatError(f"weight {key!r} has shape {tuple(tensors[key].shape)} but the spec's "
                                   f"architecture needs {tuple(ref.shape)}")
        if tensors[key].is_floating_point() != ref.is_floating_point():
            raise ModelFormatError(f"weight {key!r} is {tensors[key].dtype} but the spec's architecture "
                                   f"needs {ref.dtype}")


def save_model(path: str | os.PathLike, model: nn.Module, spec: ModelSpec) -> None:
    """Write `model` and `spec` to one safetensors file, atomically.

    The model must be what `spec` rebuilds (same keys and shapes), so the file always loads, and
    a model that `linfilt.unlearn` returned must come with `spec.after_unlearn(model)`.
    """
    record = getattr(model, RECORD_ATTR, None)
    if isinstance(record, FiltrationRecord) and record.classes != spec.class_ids:
        raise LinfiltError(f"the model's outputs are classes {list(record.classes)} but the spec says "
                           f"{list(spec.class_ids)}: after linfilt.unlearn save with spec.after_unlearn(model)")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _check_tensors(_build(spec).state_dict(), tensors)
    meta = {SPEC_KEY: json.dumps(spec.to_json(), sort_keys=True, allow_nan=False)}
    write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Header metadata and tensors of a safetensors file; ModelFormatError for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror}") from None
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        raise ModelFormatError(
            f"{path} is a PyTorch pickle (torch.save) file, not a linfilt model; linfilt never unpickles "
            "model files. Load a plain state dict with linfilt.modelio.load_state_dict_file and save it "
            "with save_model"
        )
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except safetensors.SafetensorError as exc:
        raise ModelFormatError(f"{path} is not a complete safetensors file ({exc}); "
                               "it may be truncated or of another format") from None
    return meta, tensors


def load_model(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """Read a model file of the project's format: the rebuilt module (in eval mode) and its spec.

    The module carries the spec's class ids and history as `linfilt.unlearn`'s record, so
    `linfilt.unlearn(model, forget, data)` takes original class ids and skips the samples of
    classes forgotten earlier.
    """
    path = Path(path)
    meta, tensors = _read_safetensors(path)
    if SPEC_KEY not in meta:
        raise ModelFormatError(f"{path} is a safetensors file without a linfilt spec (no {SPEC_KEY!r} "
                               "in its metadata); it was not written by linfilt.modelio.save_model")
    try:
        spec = ModelSpec.from_json(json.loads(meta[SPEC_KEY]))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: the spec is not valid JSON: {exc}") from None
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    try:
        model = _build(spec)
        _check_tensors(model.state_dict(), tensors)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    model.load_state_dict(tensors, assign=True)  # the file's tensors themselves, dtypes kept
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ModelFormatError(f"{path}: architecture {spec.arch!r} has state that the file cannot hold")
    setattr(model, RECORD_ATTR, spec.record())
    return model.eval(), spec


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A user's plain PyTorch state dict (`torch.save(model.state_dict(), path)`), never unpickled.

    `torch.load(weights_only=True)` accepts tensors and plain containers only; a file that would
    need arbitrary unpickling (or is not a torch file) raises ModelFormatError.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such state dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a page of advice on how to unpickle anyway; keep only what was refused
        found = re.search(r"Unsupported global: ([^\n.]*)", str(exc))
        what = found.group(1).strip() if found else "objects other than tensors"
        raise ModelFormatError(f"{path} needs unpickling beyond plain tensors ({what}), which linfilt "
                               "refuses; save a plain state dict (model.state_dict()) instead") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} is not a readable PyTorch file (truncated or another format: "
                               f"{type(exc).__name__}: {exc})") from None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelFormatError(f"{path} holds a {type(obj).__name__}, not a state dict "
                               "(a mapping of parameter names to tensors)")
    return dict(obj)
