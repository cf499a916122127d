"""Hugging Face transformers models in `linfilt.unlearn`: their outputs, batches and configs.

Duck-typed (transformers is never imported), so the core runs without it; `pip install
linfilt[hf]` installs it for the tests and examples.

- A model may return a `ModelOutput` (its `.logits` are used) or a tuple (its first element, as
  with `return_dict=False`); `unlearn` still checks that these are the head's own outputs.
- A batch may be a dict of model inputs (`input_ids`, `attention_mask`, `pixel_values`, ...) with
  the labels under "labels" (or "label"); the rest is passed as `model(**inputs)`.
- After unlearning, `config.id2label`, `label2id` and `num_labels` describe the new outputs and
  `config.linfilt_classes` holds their original class ids, so `save_pretrained` ->
  `from_pretrained` round-trips (the head's class-id buffer is left out of the state dict there,
  as `from_pretrained` would report it as an unexpected key).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

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
