"""The project's model file: one `.safetensors` file whose header metadata holds a JSON spec.

The spec says how to rebuild the module (`arch` and `arch_kwargs`, for the builder registered
under `arch` in `linfilt.plugins`; `linfilt.paper` registers the paper's three), which classes its
outputs are (original ids and names, in output order) and every filtration applied so far (its
`history`: one `linfilt.filtration.FiltrationStep` each, named and dated). Weights are plain
tensors, so loading never runs code from the file; a user's plain PyTorch state dict is read with
`torch.load(weights_only=True)` only.

Format versions: 2 adds two optional keys to each history record, `affine` (the filtration had an
offset g) and `head` (the filtered layer); files of version 1 load with both unknown (None).

A file is recognised by its structure (an 8-byte little-endian header length, then that many
bytes of JSON), and everything in it is checked on load: the whole spec (class ids, names,
settings of the architecture, history), the tensors' names and shapes against the architecture,
and that every weight is finite. Messages show at most a short excerpt (`reprlib`) of what the
file holds, since a tampered file can hold anything.

A model of any other architecture (a user's own nn.Module) is saved with `save_weights(path,
model)` and loaded with `load_weights(path, model)` into an instance the user builds (also
`linfilt.save_weights` / `linfilt.load_weights`): one safetensors file with the model's whole
state_dict (the head's class-id buffer included) and, as JSON under RECORD_KEY, its filtration
record (`FiltrationRecord`: class ids and every step; null for a model never filtered), read with
the same structure check, never unpickled. A safetensors file without that key is refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import reprlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from linfilt import plugins
from linfilt.atomic import write_bytes
from linfilt.errors import LinfiltError, ModelFormatError
from linfilt.filtration import RECORD_ATTR, FiltrationRecord, FiltrationStep, utc_now
from linfilt.hf import config_of
from linfilt.pytorch import CLASSES_BUFFER, load_unlearned, set_classes
from linfilt.validation import check_id_list, check_name_list, is_int

FORMAT_NAME = "linfilt-model"
FORMAT_VERSION = 2
# A history record's JSON keys (FiltrationStep's fields): required ones, and by format version the
# optional ones (a key added later is optional, so older files still load).
_REQUIRED = {"method", "forgot", "forgot_names", "per_class", "samples", "condition_number", "date"}
_OPTIONAL = {1: {"seed", "pinv"}, 2: {"seed", "pinv", "affine", "head"}}
# The history record's name here before one record served every layer.
HistoryEntry = FiltrationStep
# Key of the spec in the safetensors header's `__metadata__` (a str -> str map).
SPEC_KEY = "linfilt.spec"

# safetensors' own limit on its JSON header (MAX_HEADER_SIZE): no valid file has a longer one.
_MAX_HEADER = 100_000_000
# First bytes of torch.save's default (zip) format, for a precise message.
_ZIP_MAGIC = b"PK\x03\x04"


@contextlib.contextmanager
def _format_errors(where: str = "") -> Iterator[None]:
    """Turn the LinfiltErrors of linfilt.validation into ModelFormatErrors (prefixed by `where`)."""
    try:
        yield
    except LinfiltError as exc:
        raise ModelFormatError(f"{where}{exc}") from None


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
    history: tuple[FiltrationStep, ...] = ()

    def __post_init__(self) -> None:
        """Validate the whole spec; ModelFormatError says what is wrong."""
        with _format_errors():
            ids, names = check_id_list(self.class_ids, "class id"), check_name_list(self.class_names, "class name")
        if len(ids) != len(names):
            raise ModelFormatError(f"spec has {len(ids)} class ids but {len(names)} class names")
        if len(ids) < 2:
            raise ModelFormatError(f"a model needs at least 2 classes, the spec has {len(ids)}")
        for i in range(1, len(ids)):
            if ids[i] <= ids[i - 1]:
                raise ModelFormatError(f"class ids must be ascending in output order, each once (linfilt "
                                       f"only removes outputs, it never reorders them): output {i} is "
                                       f"class {ids[i]}, after class {ids[i - 1]}")
        _build_meta(self.arch, len(ids), self.arch_kwargs)  # validates the architecture's settings
        history = tuple(self.history)
        if not all(isinstance(e, FiltrationStep) for e in history):
            raise ModelFormatError("spec history must hold FiltrationStep records")
        _check_history(ids, names, history)
        object.__setattr__(self, "class_ids", ids)
        object.__setattr__(self, "class_names", names)
        # a JSON round trip (lists for tuples) makes a loaded spec equal the saved one
        object.__setattr__(self, "arch_kwargs", json.loads(json.dumps(dict(self.arch_kwargs))))
        object.__setattr__(self, "history", history)

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
        masked = sorted(set(record.classes) & set(record.forgotten))
        if masked:
            raise LinfiltError(f"this model keeps the outputs of forgotten classes {masked} (masked, by "
                               "keep_outputs=True); a model file lists only live classes, so unlearn without "
                               "keep_outputs to save one, or save its state_dict (it loads into the original "
                               "architecture)")
        names = dict(zip(self.class_ids, self.class_names))
        if not set(record.classes) <= set(names):
            raise LinfiltError(f"the model's classes {list(record.classes)} are not among this spec's "
                               f"{list(self.class_ids)}")
        date = utc_now()
        entries = tuple(step.named(names, date) for step in record.steps[len(self.history):])
        return dataclasses.replace(
            self,
            class_ids=record.classes,
            class_names=tuple(names[c] for c in record.classes),
            history=self.history + entries,
        )

    def record(self) -> FiltrationRecord:
        """The record `linfilt.unlearn` reads: so a loaded model forgets and skips by original ids."""
        return FiltrationRecord(classes=self.class_ids, steps=self.history)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "classes": [{"id": i, "name": n} for i, n in zip(self.class_ids, self.class_names)],
            "history": [step.to_json() for step in self.history],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ModelSpec:
        """Parse and validate a spec; ModelFormatError says what is wrong."""
        if not isinstance(obj, dict):
            raise ModelFormatError(f"the spec must be a JSON object, not {type(obj).__name__}")
        if obj.get("format") != FORMAT_NAME:
            raise ModelFormatError(f"the spec's format is {obj.get('format')!r}, not {FORMAT_NAME!r}")
        version = obj.get("version")
        if not is_int(version) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFormatError(
                f"spec version {version!r} is not supported (this linfilt reads 1..{FORMAT_VERSION}); "
                "upgrade linfilt to read it"
            )
        fields = {"format", "version", "arch", "arch_kwargs", "classes", "history"}
        _check_fields(obj, fields, fields, "spec")
        classes, history = obj["classes"], obj["history"]
        if not isinstance(obj["arch_kwargs"], dict):
            raise ModelFormatError(f"arch_kwargs must be an object, got {reprlib.repr(obj['arch_kwargs'])}")
        if not isinstance(classes, list):
            raise ModelFormatError(f"classes must be a list of {{id, name}} objects, "
                                   f"got {reprlib.repr(classes)}")
        if not all(isinstance(c, dict) and set(c) == {"id", "name"} for c in classes):
            raise ModelFormatError("each class must be an object with 'id' and 'name' (and nothing else)")
        if not isinstance(history, list):
            raise ModelFormatError(f"history must be a list of filtration records, "
                                   f"got {reprlib.repr(history)}")
        entries = _parse_steps(history, _REQUIRED | _OPTIONAL[version], _REQUIRED, "history entry", "record")
        return cls(arch=obj["arch"], arch_kwargs=obj["arch_kwargs"],
                   class_ids=tuple(c["id"] for c in classes), class_names=tuple(c["name"] for c in classes),
                   history=entries)


def _check_fields(obj: dict, known: set[str], required: set[str], what: str) -> None:
    missing, unknown = sorted(required - set(obj)), sorted(set(obj) - known)
    if missing or unknown:
        raise ModelFormatError(f"{what} fields wrong: missing {missing}, unknown {reprlib.repr(unknown)}")


def _check_history(ids: tuple[int, ...], names: tuple[str, ...], history: tuple[FiltrationStep, ...]) -> None:
    """Every step is named and dated; each forgotten class is forgotten once and is no longer among
    the classes; every class, current or forgotten, has its own name."""
    current, forgotten = set(ids), set()
    for i, entry in enumerate(history, 1):
        if entry.forgot_names is None or entry.date is None:
            raise ModelFormatError(f"history entry {i}: a model file names and dates every filtration "
                                   "(forgot_names, date); use spec.after_unlearn(model)")
        for c, name in zip(entry.forgot, entry.forgot_names):
            if c in current:
                raise ModelFormatError(f"history entry {i}: class {c} ({name!r}) is among the model's "
                                       "classes, so it cannot have been forgotten")
            if c in forgotten:
                raise ModelFormatError(f"history entry {i}: class {c} ({name!r}) is forgotten more than once")
            forgotten.add(c)
    counts = Counter(names + tuple(n for e in history for n in e.forgot_names))
    repeated = sorted(n for n, count in counts.items() if count > 1)
    if repeated:
        raise ModelFormatError(f"class names {repeated} are used more than once (among the classes and "
                               "those forgotten); each class needs its own name")


def _build_meta(arch: Any, num_classes: int, arch_kwargs: Any) -> nn.Module:
    """The module with weightless (meta) tensors: no memory, and the global RNG untouched. The
    builder comes from the architecture registry (`linfilt.plugins`) and validates its settings."""
    if not isinstance(arch_kwargs, Mapping) or not all(isinstance(k, str) for k in arch_kwargs):
        raise ModelFormatError(f"the settings of architecture {reprlib.repr(arch)} must be a mapping "
                               f"of names, got {reprlib.repr(arch_kwargs)}")
    with torch.device("meta"), _format_errors():
        return plugins.architecture(arch)(arch, num_classes, **arch_kwargs)


def _build(spec: ModelSpec) -> nn.Module:
    return _build_meta(spec.arch, spec.num_classes, spec.arch_kwargs)


def _refuse_non_finite(tensors: Mapping[str, torch.Tensor], path: Path | None = None) -> None:
    """Refuse floating tensors holding NaN or infinite values: a LinfiltError before saving them
    (path None), a ModelFormatError naming the file they were read from."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if not bad:
        return
    more = f" (so do {bad[1:]})" if len(bad) > 1 else ""
    what = f"weight {bad[0]!r} holds NaN or infinite values{more}"
    if path is not None:
        raise ModelFormatError(f"{path}: {what}; the file is corrupt (linfilt never saves such a model)")
    raise LinfiltError(f"cannot save this model: its {what}, so it was not written (a diverged "
                       "training, or a filtration of an ill-conditioned A?)")


def _cpu_copies(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of each tensor: safetensors refuses tensors that share memory (tied weights)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _parse_steps(items: list, known: set[str], required: set[str], entry: str, kind: str) -> tuple[FiltrationStep, ...]:
    """Filtration steps from a JSON list of objects; messages name each as f"{entry} {i}" and its
    fields as `kind`'s."""
    steps = []
    for i, item in enumerate(items, 1):
        with _format_errors(f"{entry} {i}: "):
            if not isinstance(item, dict):
                raise ModelFormatError(f"must be an object, got {reprlib.repr(item)}")
            _check_fields(item, known, required, kind)
            steps.append(FiltrationStep(**item))
    return tuple(steps)


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


def _file_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise LinfiltError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


def save_model(path: str | os.PathLike, model: nn.Module, spec: ModelSpec) -> None:
    """Write `model` and `spec` to one safetensors file, atomically.

    The model must be what `spec` rebuilds (same keys and shapes), so the file always loads, and
    a model that `linfilt.unlearn` returned must come with `spec.after_unlearn(model)`. Weights
    with NaN or infinite values are refused: such a model is broken, and no file is written.
    """
    path = _file_path(path)
    if not isinstance(model, nn.Module):
        raise LinfiltError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(spec, ModelSpec):
        raise LinfiltError(f"spec must be a linfilt.modelio.ModelSpec, got {type(spec).__name__}")
    record = getattr(model, RECORD_ATTR, None)
    if isinstance(record, FiltrationRecord) and record.classes != spec.class_ids:
        raise LinfiltError(f"the model's outputs are classes {list(record.classes)} but the spec says "
                           f"{list(spec.class_ids)}: after linfilt.unlearn save with spec.after_unlearn(model)")
    # the head's class-id buffer is left out: the spec holds the ids (load_model puts it back)
    tensors = _cpu_copies({k: v for k, v in model.state_dict().items() if k.rpartition(".")[2] != CLASSES_BUFFER})
    _check_tensors(_build(spec).state_dict(), tensors)
    _refuse_non_finite(tensors)
    meta = {SPEC_KEY: json.dumps(spec.to_json(), sort_keys=True, allow_nan=False)}
    write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def _format_problem(path: Path) -> str | None:
    """None when the file has the structure of safetensors (an 8-byte little-endian length n, then
    n bytes of JSON holding an object), else what the file looks like instead."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        n = int.from_bytes(head, "little")
        if len(head) == 8 and n <= min(size - 8, _MAX_HEADER) and _is_json_object(fh.read(n)):
            return None
    # pickle protocols 2-5 start with 0x80 and the protocol; no pickle opcode is 0x00, while a
    # short safetensors header's length has zeros from its third byte on
    if head.startswith(_ZIP_MAGIC) or (len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2]):
        return ("is a PyTorch pickle (torch.save) file, not a linfilt model; linfilt never unpickles model "
                "files. Load a plain state dict with linfilt.modelio.load_state_dict_file and save it with "
                "save_model (the paper's architectures) or save_weights (any other)")
    if len(head) < 8:
        why = f"it has {size} bytes, fewer than the 8 of a header length"
    elif n > _MAX_HEADER:
        why = f"a header of {n} bytes is beyond safetensors' limit of {_MAX_HEADER}"
    elif n > size - 8:
        why = f"it announces a header of {n} bytes but only {size - 8} follow"
    else:
        why = "its header is not a JSON object"
    return f"is not a complete safetensors file ({why}); it may be truncated or of another format"


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Header metadata and tensors of a safetensors file; ModelFormatError for anything else."""
    try:
        problem = _format_problem(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror}") from None
    if problem is not None:
        raise ModelFormatError(f"{path} {problem}")
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
    path = _file_path(path)
    meta, tensors = _read_safetensors(path)
    if SPEC_KEY not in meta:
        raise ModelFormatError(f"{path} is a safetensors file without a linfilt spec (no {SPEC_KEY!r} "
                               "in its metadata); it was not written by linfilt.modelio.save_model")
    try:
        spec = ModelSpec.from_json(json.loads(meta[SPEC_KEY]))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: the spec is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelFormatError(f"{path}: the spec is nested too deeply to be a linfilt spec") from None
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    try:
        model = _build(spec)
        _check_tensors(model.state_dict(), tensors)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    _refuse_non_finite(tensors, path)
    model.load_state_dict(tensors, assign=True)  # the file's tensors themselves, dtypes kept
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ModelFormatError(f"{path}: architecture {spec.arch!r} has state that the file cannot hold")
    setattr(model, RECORD_ATTR, spec.record())
    head = spec.history[-1].head if spec.history else None
    with contextlib.suppress(AttributeError):  # a head the architecture lacks gets no buffer
        module = None if head is None else model.get_submodule(head)
        if isinstance(module, nn.Linear) and spec.class_ids != tuple(range(spec.num_classes)):
            # the class-id buffer, as linfilt.unlearn leaves it (where ids are not the positions)
            set_classes(model, module, spec.class_ids)
    return model.eval(), spec


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A user's plain PyTorch state dict (`torch.save(model.state_dict(), path)`), never unpickled.

    `torch.load(weights_only=True)` accepts tensors and plain containers only; a file that would
    need arbitrary unpickling (or is not a torch file) raises ModelFormatError.
    """
    path = _file_path(path)
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


# --- Any architecture: the user's own module, its whole state_dict and its filtration record ---

# Key of the filtration record (JSON) in a save_weights file's metadata; a model file's is SPEC_KEY.
RECORD_KEY = "linfilt.record"
RECORD_FORMAT = "linfilt-record"
RECORD_VERSION = 1
# Every key FiltrationStep.to_json writes: a weights file holds each step whole.
_STEP_FIELDS = _REQUIRED | _OPTIONAL[2]
# Excerpts of what a file made torch or linfilt say (a tampered file can hold anything).
_EXCERPT = reprlib.Repr()
_EXCERPT.maxstring = 300


def _check_module(model: Any) -> None:
    """A torch module that is not a transformers model (whose config carries its ids and steps)."""
    if not isinstance(model, nn.Module):
        raise LinfiltError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if config_of(model) is not None:
        raise LinfiltError("this is a transformers model: its config must describe its head too, so save it "
                           "with model.save_pretrained(folder) (the config keeps linfilt's class ids and steps) "
                           "and load it with from_pretrained")


def _check_record(record: FiltrationRecord, tensors: Mapping[str, torch.Tensor]) -> None:
    """The record fits the weights: each class listed once and forgotten at most once, and after a
    filtration the last step's head holds the record's classes (its class-id buffer where it has
    one, else its output positions, as linfilt.unlearn leaves them)."""
    for what, ids in (("lists", record.classes), ("forgets", record.forgotten)):
        repeated = sorted(c for c, n in Counter(ids).items() if n > 1)
        if repeated:
            raise LinfiltError(f"the filtration record {what} classes {reprlib.repr(repeated)} more than once")
    if not record.steps:
        return
    head = record.steps[-1].head
    if head is None:
        raise LinfiltError("the filtration record's last step names no head (the filtered nn.Linear)")
    prefix = f"{head}." if head else ""
    weight = tensors.get(f"{prefix}weight")
    if weight is None or weight.dim() != 2:
        raise LinfiltError(f"the filtration record's head {reprlib.repr(head)} has no 2-D weight in the state dict")
    if len(record.classes) != weight.shape[0]:
        raise LinfiltError(f"the filtration record lists {len(record.classes)} classes but its head "
                           f"{reprlib.repr(head)} has {weight.shape[0]} outputs")
    buffer = tensors.get(prefix + CLASSES_BUFFER)
    if buffer is not None and (buffer.dim() != 1 or buffer.is_floating_point()):
        raise LinfiltError(f"the class-id buffer of head {reprlib.repr(head)} must hold one integer per "
                           f"output, it is {buffer.dtype} of shape {tuple(buffer.shape)}")
    ids = tuple(range(weight.shape[0])) if buffer is None else tuple(buffer.tolist())
    if record.classes != ids:
        raise LinfiltError(f"the filtration record's classes {reprlib.repr(list(record.classes))} are not "
                           f"those of its head {reprlib.repr(head)}, {reprlib.repr(list(ids))}")


def _record_json(record: FiltrationRecord | None) -> str:
    body = None if record is None else {"classes": list(record.classes),
                                        "steps": [step.to_json() for step in record.steps]}
    return json.dumps({"format": RECORD_FORMAT, "version": RECORD_VERSION, "record": body},
                      sort_keys=True, allow_nan=False)


def _parse_record(text: str) -> FiltrationRecord | None:
    """The record of a weights file's metadata (None: the model was saved unfiltered), validated
    field by field; ModelFormatError says what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"the filtration record is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelFormatError("the filtration record is nested too deeply to be one") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"the filtration record must be a JSON object, not {type(obj).__name__}")
    if obj.get("format") != RECORD_FORMAT:
        raise ModelFormatError(f"the record's format is {reprlib.repr(obj.get('format'))}, not {RECORD_FORMAT!r}")
    if obj.get("version") != RECORD_VERSION or not is_int(obj.get("version")):
        raise ModelFormatError(f"record version {reprlib.repr(obj.get('version'))} is not supported (this "
                               f"linfilt reads {RECORD_VERSION}); upgrade linfilt to read it")
    _check_fields(obj, {"format", "version", "record"}, {"format", "version", "record"}, "record file")
    body = obj["record"]
    if body is None:
        return None
    if not isinstance(body, dict):
        raise ModelFormatError(f"the record must be an object or null, got {reprlib.repr(body)}")
    _check_fields(body, {"classes", "steps"}, {"classes", "steps"}, "record")
    if not isinstance(body["steps"], list):
        raise ModelFormatError(f"the record's steps must be a list, got {reprlib.repr(body['steps'])}")
    steps = _parse_steps(body["steps"], _STEP_FIELDS, _STEP_FIELDS, "step", "step")
    with _format_errors("the record's classes: "):
        classes = check_id_list(body["classes"], "class id")
    return FiltrationRecord(classes, steps)


def save_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Write `model`, of any architecture, to one safetensors file, atomically: its whole
    state_dict (CPU copies, dtypes kept; the head's class-id buffer where linfilt.unlearn left
    one) and the filtration record linfilt.unlearn left on it (classes and steps; null for a model
    that carries none, whose outputs are its positions). `load_weights` reads it back into an
    instance of the architecture. Weights with NaN or infinite values are refused, and a record
    that does not fit the weights; then nothing is written.
    """
    path = _file_path(path)
    _check_module(model)
    record = getattr(model, RECORD_ATTR, None)
    if record is not None and not isinstance(record, FiltrationRecord):
        raise LinfiltError(f"the model's {RECORD_ATTR} is a {type(record).__name__}, not the FiltrationRecord "
                           "linfilt.unlearn leaves; delete it to save the model unfiltered")
    state = model.state_dict()
    extra = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if extra:
        raise LinfiltError(f"the model's state {reprlib.repr(extra)} is not a tensor (get_extra_state); a "
                           "safetensors file holds tensors only")
    tensors = _cpu_copies(state)
    if record is not None:
        try:
            _check_record(record, tensors)
        except LinfiltError as exc:
            raise LinfiltError(f"cannot save this model: {exc}; was it changed after linfilt.unlearn?") from None
    _refuse_non_finite(tensors)
    write_bytes(path, safetensors.torch.save(tensors, metadata={RECORD_KEY: _record_json(record)}))


def load_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load a `save_weights` file into `model`, an instance of the saved architecture (with the
    original head or the filtered one), and return it in eval mode with its filtration record,
    so `linfilt.classes_of`, `linfilt.predict_ids` and a later `linfilt.unlearn` (original class
    ids; samples of classes forgotten earlier skipped) work as on the saved model.

    The file is checked whole before the model is touched (its structure, never unpickled; the
    record, field by field, against the weights; finite weights). Loading is strict, as
    `linfilt.load_unlearned` does it: the filtered head is resized, and the instance's dtypes and
    device are kept, as torch's load_state_dict keeps them. Use the returned module (a bare
    nn.Linear is replaced, not resized); on a ModelFormatError from the load itself the instance
    may be partly loaded.
    """
    path = _file_path(path)
    _check_module(model)
    meta, tensors = _read_safetensors(path)
    if RECORD_KEY not in meta:
        if SPEC_KEY in meta:
            raise ModelFormatError(f"{path} is a linfilt model file (save_model), which rebuilds its own "
                                   "architecture: load it with linfilt.modelio.load_model")
        raise ModelFormatError(f"{path} is a safetensors file without a linfilt filtration record (no "
                               f"{RECORD_KEY!r} in its metadata), so it was not written by save_weights; load "
                               "plain weights with model.load_state_dict(safetensors.torch.load_file(path))")
    try:
        record = _parse_record(meta[RECORD_KEY])
        if record is not None:
            _check_record(record, tensors)
    except LinfiltError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    _refuse_non_finite(tensors, path)
    try:
        model = load_unlearned(model, tensors)
    except (LinfiltError, RuntimeError) as exc:  # RuntimeError: torch's strict load_state_dict
        raise ModelFormatError(f"{path}: its weights do not fit this model ({_EXCERPT.repr(str(exc))}); load "
                               "it into an instance of the architecture it was saved from") from None
    if record is None:
        with contextlib.suppress(AttributeError):  # a stale record of the instance would misname outputs
            delattr(model, RECORD_ATTR)
    else:
        setattr(model, RECORD_ATTR, record)
    return model.eval()
