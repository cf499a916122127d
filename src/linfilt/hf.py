"""Hugging Face transformers models in `linfilt.unlearn`: their outputs, batches and configs; and
model directories (config.json + model.safetensors) for `linfilt unlearn`.

transformers is imported only by the functions that read or write model directories, so the core
runs without it; `pip install linfilt[hf]` installs it.

- A model may return a `ModelOutput` (its `.logits` are used) or a tuple (its first element, as
  with `return_dict=False`); `unlearn` still checks that these are the head's own outputs.
- Data may be a `datasets.Dataset` (its label column and the columns the model's forward takes,
  as tensors).
- A batch may be a dict of model inputs (`input_ids`, `attention_mask`, `pixel_values`, ...) with
  the labels under "labels" (or "label"); the rest is passed as `model(**inputs)`.
- After unlearning, `config.id2label`, `label2id` and `num_labels` describe the new outputs and
  `config.linfilt_classes` holds their original class ids, so `save_pretrained` ->
  `from_pretrained` round-trips (the head's class-id buffer is left out of the state dict there,
  as `from_pretrained` would report it as an unexpected key).
- A model directory is loaded from safetensors only (never a pickle), every weight present; the
  filtration steps travel in `config.linfilt_steps` (the FiltrationStep fields, named and dated).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from linfilt.errors import LinfiltError
from linfilt.filtration import RECORD_ATTR, FiltrationRecord, FiltrationStep, utc_now
from linfilt.validation import check_id_list

LABEL_KEYS = ("labels", "label")
# The config attribute holding the original class id of each output (saved in config.json).
CONFIG_CLASSES = "linfilt_classes"


def model_logits(out: Any) -> Any:
    """The logits in a model's output: a ModelOutput's `.logits`, a tuple's first element, else
    the output itself (checked by the caller)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return out


def split_batch(batch: Mapping) -> tuple[dict[str, Any], Any]:
    """(model inputs, labels) of a dict batch; None labels when it has none."""
    key = next((k for k in LABEL_KEYS if k in batch), None)
    return {k: v for k, v in batch.items() if k != key}, None if key is None else batch[key]


def is_hf_dataset(data: Any) -> bool:
    """A Hugging Face `datasets.Dataset` (told by its API: the library is not imported here)."""
    return hasattr(data, "with_format") and hasattr(data, "column_names") and hasattr(data, "features")


def hf_dataset_loader(data: Any, model: Any, batch_size: int) -> DataLoader:
    """A DataLoader of dict batches over a `datasets.Dataset`: its label column and the columns the
    model's forward takes (so a "text" or "idx" column is left out, as transformers' Trainer does),
    as tensors. Samples must have equal lengths (tokenize with padding), else a DataLoader with a
    padding collator is the way."""
    columns = list(data.column_names)
    label = next((k for k in LABEL_KEYS if k in columns), None)
    if label is None:
        raise LinfiltError(f"the dataset needs its labels in a 'labels' or 'label' column (its columns: {columns})")
    params = [name for name, p in inspect.signature(model.forward).parameters.items()
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    inputs = [c for c in columns if c != label and c in params]
    if not inputs:
        raise LinfiltError(f"none of the dataset's columns {columns} is a named input of the model's "
                           f"forward ({params}); rename the input columns")

    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            return default_collate(samples)
        except RuntimeError as exc:
            raise LinfiltError(f"the dataset's samples cannot be batched ({str(exc).splitlines()[0]}): pad "
                               "them to one length when tokenizing, or pass a DataLoader with a padding "
                               "collate_fn (e.g. transformers.DataCollatorWithPadding)") from None

    return DataLoader(data.with_format("torch", columns=[*inputs, label]), batch_size=batch_size,
                      collate_fn=collate)


def config_of(model: Any) -> Any:
    """The model's transformers config (a PretrainedConfig, told by its `id2label` and
    `save_pretrained`), or None."""
    config = getattr(model, "config", None)
    return config if hasattr(config, "id2label") and hasattr(config, "save_pretrained") else None


def config_classes(model: Any) -> tuple[int, ...] | None:
    """The original class ids that `describe_outputs` stored in the model's config, if any."""
    config = config_of(model)
    ids = None if config is None else getattr(config, CONFIG_CLASSES, None)
    return None if ids is None else tuple(ids)


def describe_outputs(model: Any, rows: Sequence[int], classes: Sequence[int]) -> None:
    """Make the config of `model` (a filtered copy) describe its new head, whose output i was
    output rows[i] of the old one and is class classes[i] (original id)."""
    config = config_of(model)
    if config is None:
        return
    old = dict(config.id2label or {})
    id2label = {i: old.get(r, f"LABEL_{classes[i]}") for i, r in enumerate(rows)}
    config.id2label = id2label  # num_labels follows id2label in transformers
    config.label2id = {name: i for i, name in id2label.items()}
    if hasattr(model, "num_labels"):  # the copy the model kept at construction (its loss reads it)
        model.num_labels = len(rows)
    setattr(config, CONFIG_CLASSES, [int(c) for c in classes])


# --- Hugging Face model directories (`linfilt unlearn DIR`): config.json + model.safetensors ---

# The config attribute holding the filtration steps (FiltrationStep fields, JSON) in config.json.
CONFIG_STEPS = "linfilt_steps"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # one file, or the index of shards
# Auto class of each architecture suffix `linfilt unlearn` takes (its --data has their inputs).
AUTO_CLASSES = {"ForSequenceClassification": "AutoModelForSequenceClassification",
                "ForImageClassification": "AutoModelForImageClassification"}
# Preprocessing files copied from the input directory, so pipeline() works on the output.
PREPROCESSING = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                 "spiece.model", "sentencepiece.bpe.model", "preprocessor_config.json", "processor_config.json")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise LinfiltError("Hugging Face model directories need the transformers library: "
                           "pip install linfilt[hf]") from None
    return transformers


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No progress bars or warnings from transformers (the CLI prints its own, and its errors must
    stay one line); the user's settings are restored after."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _check_dir(path: Path) -> None:
    """config.json and safetensors weights; pickled weights (pytorch_model.bin, ...) are never read."""
    if not (path / "config.json").is_file():
        raise LinfiltError(f"{path} is a folder without config.json: a Hugging Face model directory "
                           "holds config.json and model.safetensors (written by save_pretrained)")
    if not any((path / name).is_file() for name in WEIGHTS):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f"only {', '.join(pickles)} (pickled), which linfilt never loads" if pickles else "no weights"
        raise LinfiltError(f"{path} holds {found}: it needs model.safetensors; convert it where you trust "
                           "the file, e.g. model.save_pretrained(folder) (safetensors is the default)")


def load_config(path: str | os.PathLike) -> Any:
    """The config of the model directory `path` (no weights read), with the Auto class that loads
    it checked: a sequence or image classifier."""
    path = Path(path)
    _check_dir(path)
    transformers = _transformers()
    with _quiet(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise LinfiltError(f"{path}/config.json cannot be read by transformers "
                               f"{transformers.__version__}: {exc}") from None
    _auto_class(config, path)
    config_record(config)  # a broken record is refused before any work
    return config


def _auto_class(config: Any, path: Path) -> Any:
    arch = (getattr(config, "architectures", None) or [""])[0]
    auto = next((a for suffix, a in AUTO_CLASSES.items() if arch.endswith(suffix)), None)
    if auto is None:
        raise LinfiltError(f"{path}/config.json names architecture {arch or 'none'}; `linfilt unlearn` takes "
                           "...ForSequenceClassification and ...ForImageClassification models (for others, "
                           "call linfilt.unlearn in Python)")
    return getattr(_transformers(), auto)


def load_model_dir(path: str | os.PathLike, config: Any) -> torch.nn.Module:
    """The model of the directory `path` (its `config` from `load_config`), from safetensors only
    and with every weight present (from_pretrained would fill missing ones at random), carrying
    the filtration record its config holds."""
    path = Path(path)
    transformers = _transformers()
    with _quiet(transformers):
        try:
            model, info = _auto_class(config, path).from_pretrained(
                path, config=config, use_safetensors=True, local_files_only=True, trust_remote_code=False,
                output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise LinfiltError(f"{path}: transformers cannot load the model: {str(exc).strip()}") from None
    wrong = sorted(info["missing_keys"]) + sorted(info["mismatched_keys"])
    if wrong:
        raise LinfiltError(f"{path}: the weights lack or mis-size {wrong[:5]}; from_pretrained would "
                           "initialise them at random, so this directory is refused")
    setattr(model, RECORD_ATTR, config_record(config))
    return model.eval()


def config_record(config: Any) -> FiltrationRecord:
    """The FiltrationRecord a config holds: its classes (output positions if none) and steps."""
    classes = getattr(config, CONFIG_CLASSES, None) or range(config.num_labels)
    try:
        steps = tuple(FiltrationStep(**s) for s in getattr(config, CONFIG_STEPS, None) or ())
        return FiltrationRecord(check_id_list(classes, "config.linfilt_classes class id"), steps)
    except (TypeError, LinfiltError) as exc:
        raise LinfiltError(f"the config's filtration record ({CONFIG_CLASSES}, {CONFIG_STEPS}) is not "
                           f"linfilt's: {exc}") from None


def class_names(config: Any) -> tuple[str, ...]:
    """The label of each output, from id2label."""
    return tuple(str(config.id2label[i]) for i in range(config.num_labels))


def record_steps(model: Any, names: Mapping[int, str], new_steps: int) -> FiltrationRecord:
    """Name (by `names`: original id -> label) and date the last `new_steps` steps of the model's record,
    store every step in its config as JSON, and return the record."""
    record = getattr(model, RECORD_ATTR)
    date = utc_now()
    old = record.steps[:len(record.steps) - new_steps]
    named = tuple(s.named(names, date) for s in record.steps[len(old):])
    record = FiltrationRecord(record.classes, old + named)
    setattr(model, RECORD_ATTR, record)
    store_steps(model, record)
    return record


def store_steps(model: Any, record: FiltrationRecord) -> None:
    """Keep every step of `record` in the model's transformers config (if it has one) as JSON, so
    the record survives save_pretrained -> from_pretrained."""
    config = config_of(model)
    if config is None:
        return
    setattr(config, CONFIG_STEPS, [s.to_json() for s in record.steps])


def stored_record(model: Any) -> FiltrationRecord | None:
    """The record a transformers model's config holds (after from_pretrained), or None."""
    config = config_of(model)
    if config is None or not getattr(config, CONFIG_STEPS, None):
        return None
    return config_record(config)


def save_model_dir(model: Any, folder: Path, source: Path) -> None:
    """save_pretrained (safetensors) into `folder`, with the preprocessing files of `source`."""
    transformers = _transformers()
    with _quiet(transformers):
        model.save_pretrained(folder)  # safetensors, the default since transformers 4.35
    for pattern in PREPROCESSING:
        for file in source.glob(pattern):
            if file.is_file():
                shutil.copy2(file, folder / file.name)
