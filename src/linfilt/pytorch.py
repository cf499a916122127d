"""Unlearning classes from a PyTorch classifier by linear filtration of its final Linear layer.

`unlearn` finds the `nn.Linear` whose output is the model's logits, estimates A from the logits
of the given data, and returns a copy whose head is F W, F b (section 4.1 of the paper), so the
new model's logits are F times the old ones on every input.

Class ids never change meaning: a returned model carries a `FiltrationRecord` (attribute
`linfilt_filtration`) giving the original class id of each output, and its head keeps the same
ids in a buffer `linfilt_classes` wherever they are not the output positions (so they travel in
its state_dict and inside wrappers; a transformers model keeps them in its config instead, see
linfilt.hf). A later `unlearn` of that model takes `forget` and the data's labels as original ids
too (samples of classes forgotten earlier are skipped; with the buffer alone, which ids were
forgotten is unknown, so leave their samples out). Forgetting {3} and then {5} this way, with A
estimated from the same samples both times, is for each method (derivation and tests:
tests/test_sequential.py):

- naive and zeroing: identical to forgetting {3, 5} at once;
- normalization: not identical, but every input's logits differ from the at-once model's by one
  amount common to all outputs, so softmax outputs, labels and cross-entropy are identical;
- randomization: class 3's mean logits go to F2 z3 (the second filtration applied to the first
  step's random z3) instead of a fresh N(0, I) draw; everything else as at once.

With keep_outputs=True the head keeps all k outputs instead, those of the forgotten classes
masked (output i stays class i); a later request filters the outputs still live.
"""
from __future__ import annotations

import contextlib
import copy
import reprlib
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from linfilt.errors import LinfiltError
from linfilt.filtration import (RECORD_ATTR, Filtration, FiltrationRecord, FiltrationStep, absorb,
                                check_class_counts, check_forget, check_method_rng, compute_filtration,
                                mean_logits, projection, select_per_class)
from linfilt.hf import (config_classes, config_of, describe_outputs, hf_dataset_loader, is_hf_dataset, model_logits,
                        split_batch, store_steps, stored_record)
from linfilt.validation import check_bool, check_class_ids, check_labels, check_optional_positive_int, check_positive_int

# The record's step under the name it had here before one record served every layer.
UnlearnStep = FiltrationStep


# The buffer in which a filtered head keeps the original class id of each output, so the ids
# travel with its state_dict (and with wrappers around the model).
CLASSES_BUFFER = "linfilt_classes"


def _linears(model: nn.Module) -> dict[nn.Module, str]:
    """Every nn.Linear of the model, with its dotted name; a model without one cannot be filtered."""
    found = {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not found:
        raise LinfiltError("this model has no nn.Linear layer: linear filtration rewrites a final Linear layer")
    return found


def _named_head(model: nn.Module, head: str | nn.Module) -> tuple[str, nn.Linear]:
    """head= as a dotted path or as the module itself (e.g. timm's model.get_classifier())."""
    if isinstance(head, nn.Module):
        name = next((n for n, m in model.named_modules() if m is head), None)
        if name is None:
            raise LinfiltError(f"the head= module ({type(head).__name__}) is not a submodule of this model")
        module = head
    elif isinstance(head, str):
        name = head
        try:
            module = model.get_submodule(head)
        except AttributeError:
            raise LinfiltError(f"head={head!r} names no submodule of this model") from None
    else:
        raise LinfiltError(f"head= must be a dotted module path or the head module, got {type(head).__name__}")
    if not isinstance(module, nn.Linear):
        raise LinfiltError(f"head={name!r} is a {type(module).__name__}, not an nn.Linear")
    return name, module


def _static_head(model: nn.Module, head: str | nn.Module | None) -> tuple[str, nn.Linear] | None:
    """The head known without running the model: `head=`, else an nn.Linear attribute `head`."""
    if head is not None:
        return _named_head(model, head)
    if isinstance(model, nn.Linear):
        return "", model
    if isinstance(getattr(model, "head", None), nn.Linear):
        return "head", model.head
    return None


def _only_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """For precomputed logits (no forward pass to watch): the model's single nn.Linear."""
    linears = _linears(model)
    if len(linears) > 1:
        raise LinfiltError(
            f"this model has {len(linears)} nn.Linear layers and no `head` attribute; "
            f"pass head= with the dotted path of the one producing the logits (one of {sorted(linears.values())})"
        )
    module, name = next(iter(linears.items()))
    return name, module


def _check_exact(name: str, head: nn.Linear) -> None:
    """Refuse a head whose outputs are not x W^T + b of its stored weight and bias: the filtered
    head is a plain nn.Linear, so anything else would silently change the model's outputs."""
    if parametrize.is_parametrized(head):  # checked first: parametrize subclasses the module
        why = "its weight is parametrized (torch.nn.utils.parametrize, e.g. parametrizations.weight_norm)"
    elif type(head).forward is not nn.Linear.forward:
        why = f"it is a {type(head).__name__}, whose own forward a filtered nn.Linear would drop"
    elif "forward" in vars(head):  # replaced on the instance (as accelerate's hooks do)
        why = "its forward was replaced on the instance, which a filtered nn.Linear would drop"
    elif head._forward_hooks or head._forward_pre_hooks:
        why = "it has forward hooks or pre-hooks (the old torch.nn.utils.weight_norm is one), which it would lose"
    else:
        return
    raise LinfiltError(f"the head {name!r} cannot be filtered exactly: {why}; unlearn a model whose head is "
                       "a plain nn.Linear (e.g. remove the parametrization or hooks first, folding them into "
                       "the weights)")


def _check_model(model: Any) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise LinfiltError("this is a TorchScript model (torch.jit.trace or torch.jit.script): its compiled "
                           "forward cannot be given a new head; unlearn the original nn.Module, then "
                           "trace or script the result")
    if not isinstance(model, nn.Module):
        if isinstance(getattr(model, "module_", None), nn.Module):  # a skorch net
            raise LinfiltError(f"this {type(model).__name__} wraps a PyTorch module: unlearn that, "
                               "net.module_ = linfilt.unlearn(net.module_, forget, data, keep_outputs=True) "
                               "(keep_outputs keeps net.predict's class ids)")
        raise LinfiltError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _masked_rows(head: nn.Linear) -> np.ndarray:
    """Outputs that keep_outputs masked: a zero weight row and the dtype's lowest bias (-inf
    after a cast to a narrower float type)."""
    if head.bias is None:
        return np.zeros(head.out_features, dtype=bool)
    bias = head.bias.detach()
    low = bias <= torch.finfo(bias.dtype).min
    return ((head.weight.detach() == 0).all(dim=1) & low).cpu().numpy()


def _stored_classes(model: nn.Module, head: nn.Linear) -> tuple[tuple[int, ...] | None, str]:
    """The original class ids of the head's outputs as a filtration left them (the model's record,
    else the head's buffer, else a transformers config), and where they were read; None if none."""
    record = getattr(model, RECORD_ATTR, None)
    if isinstance(record, FiltrationRecord):
        return record.classes, f"the model's {RECORD_ATTR}"
    buffer = getattr(head, CLASSES_BUFFER, None)
    if isinstance(buffer, torch.Tensor):
        return tuple(buffer.tolist()), f"the head's {CLASSES_BUFFER} buffer"
    return config_classes(model), f"the model's config.{CLASSES_BUFFER}"


def set_classes(model: nn.Module, head: nn.Linear, classes: Sequence[int]) -> None:
    """Store the original class id of each output of `head` in its buffer; for a transformers
    model the buffer stays out of the state dict (its config holds the ids, see linfilt.hf)."""
    ids = torch.tensor(list(classes), dtype=torch.int64, device=head.weight.device)
    head.register_buffer(CLASSES_BUFFER, ids, persistent=config_of(model) is None)


def load_unlearned(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load the state dict of an unlearned model into `model`, an instance of its architecture
    (with the original head or the smaller one), and return it: each Linear whose class-id buffer
    the state dict holds is resized to the state dict's weight and given the buffer first, so
    loading is strict and the class ids come along."""
    _check_model(model)
    for key, ids in state_dict.items():
        name, _, leaf = key.rpartition(".")
        if leaf != CLASSES_BUFFER:
            continue
        try:
            head = model.get_submodule(name)
        except AttributeError:
            raise LinfiltError(f"the state dict has class ids for {name!r}, which this model lacks") from None
        prefix = key[: -len(leaf)]
        weight = state_dict.get(f"{prefix}weight")
        if not isinstance(head, nn.Linear) or weight is None or weight.dim() != 2:
            raise LinfiltError(f"the state dict's class ids for {name!r} need an nn.Linear there with its weight")
        if tuple(weight.shape) != tuple(head.weight.shape):  # the unlearned head has fewer outputs
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{prefix}bias" in state_dict,
                            device=head.weight.device, dtype=head.weight.dtype)
            model = _replace(model, head, new)
            head = new
        set_classes(model, head, ids.tolist())
    model.load_state_dict(state_dict)
    return model


def _recorded_classes(model: nn.Module) -> tuple[int, ...] | None:
    """The original class id of each output as linear filtration recorded it (the model's record,
    its head's class-id buffer, a transformers config: its num_labels positions if no ids), or None."""
    record = getattr(model, RECORD_ATTR, None)
    if isinstance(record, FiltrationRecord):
        return record.classes
    buffers = [m.get_buffer(CLASSES_BUFFER) for m in model.modules()
               if isinstance(m, nn.Linear) and isinstance(getattr(m, CLASSES_BUFFER, None), torch.Tensor)]
    if len(buffers) == 1:  # e.g. a filtered model inside a wrapper
        return tuple(buffers[0].tolist())
    config = config_of(model)
    if config is not None:
        return config_classes(model) or tuple(range(config.num_labels))
    return None


def classes_of(model: nn.Module) -> tuple[int, ...]:
    """The original class id of each output of `model`: what linear filtration recorded (see
    `_recorded_classes`), else the output positions of its head."""
    _check_model(model)
    found = _recorded_classes(model)
    if found is not None:
        return found
    head = _static_head(model, None)
    if head is None and len(_linears(model)) > 1:  # not _only_linear's advice: there is no head= here
        raise LinfiltError("this model carries no record of a filtration, so its output i is class i, but "
                           "which of its Linear layers gives the outputs (hence how many) is unknown without "
                           "running it; predict_ids(model, x) runs it")
    return tuple(range((head or _only_linear(model))[1].out_features))


def predict_ids(model: nn.Module, x: Any) -> torch.Tensor:
    """The original class id of the top output for each input in `x` (a tensor, or a dict of
    model inputs), in eval mode without gradients; output i is class i in a model without a record."""
    _check_model(model)
    runner = _Runner(model, None)
    with _inference(model):
        out = runner.forward(x)
    found = _recorded_classes(model)
    ids = torch.arange(out.shape[1]) if found is None else torch.tensor(found, dtype=torch.int64)
    if len(ids) != out.shape[1]:
        raise LinfiltError(f"the model's record lists {len(ids)} classes but it returns {out.shape[1]} outputs; "
                           f"delete the stale `{RECORD_ATTR}` / `{CLASSES_BUFFER}`")
    return ids.to(out.device)[out.argmax(dim=1)]


class _Runner:
    """Runs the model on input batches; the first batch finds (or checks) the head with hooks."""

    def __init__(self, model: nn.Module, head: str | nn.Module | None) -> None:
        self.model = model
        self.given = head is not None
        self.static = _static_head(model, head)
        self.head: tuple[str, nn.Linear] | None = None
        params = [p for p in model.parameters() if p.is_floating_point()]
        if not params:
            raise LinfiltError("this model has no parameters, hence no nn.Linear head to filter")
        self.device, self.dtype = params[0].device, params[0].dtype

    def _tensor(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        return x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)

    def forward(self, x: Any) -> torch.Tensor:
        """The model's logits on x: a tensor, or a dict of model inputs (a transformers batch)."""
        if isinstance(x, Mapping):
            out = self.model(**{k: self._tensor(v) if isinstance(v, (torch.Tensor, np.ndarray)) else v
                                for k, v in x.items()})
        else:
            out = self.model(self._tensor(x))
        return self._check(model_logits(out))

    def __call__(self, x: Any) -> torch.Tensor:
        if self.head is not None:
            return self.forward(x)
        calls: list[tuple[nn.Module, torch.Tensor]] = []
        linears = _linears(self.model)
        hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, o))) for m in linears]
        try:
            out = self._first_call(x)
        finally:
            for h in hooks:
                h.remove()
        self.head = self._pick(out, calls, linears)
        return out

    def _first_call(self, x: Any) -> torch.Tensor:
        """The first forward pass: an error here means the data does not fit the model, so say so."""
        try:
            return self.forward(x)
        except LinfiltError:
            raise
        except (RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            shapes = ({k: tuple(getattr(v, "shape", ())) for k, v in x.items()} if isinstance(x, Mapping)
                      else f"of shape {tuple(torch.as_tensor(x).shape[1:])} and dtype {torch.as_tensor(x).dtype}")
            raise LinfiltError(f"the model cannot run on inputs {shapes} (its parameters are "
                               f"{self.dtype}): {first}") from exc

    @staticmethod
    def _check(out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LinfiltError(f"the model must return logits of shape (n, k) (or a ModelOutput with "
                               f".logits, or a tuple starting with them), it returned {shape}")
        return out

    def _pick(self, out: torch.Tensor, calls: list, linears: dict[nn.Module, str]) -> tuple[str, nn.Linear]:
        times = {m: sum(c is m for c, _ in calls) for m in linears}
        makes_out = {m for m, o in calls if o is out or (o.shape == out.shape and torch.equal(o, out))}
        # what works when a layer follows the head (LogSoftmax, a temperature, a reshape, averaged heads)
        route = ("pass the head's own outputs as logits= (with labels=) together with head=, or wrap the "
                 "model so that it returns them")
        if self.static is not None:
            name, module = self.static
            if module not in makes_out:
                hint = route if self.given else f"pass head= naming the layer that gives the logits, or {route}"
                raise LinfiltError(
                    f"the model's output is not the output of its Linear {name!r} (something follows it, "
                    f"or it did not run): linear filtration needs the logits to be a Linear layer's output; {hint}"
                )
            found = module
        elif not makes_out:
            raise LinfiltError(
                "no nn.Linear layer's output is the model's output: linear filtration needs the logits "
                f"to be the output of a final Linear layer; if something follows it, {route}"
            )
        elif len(makes_out) > 1:
            names = sorted(linears[m] for m in makes_out)
            raise LinfiltError(f"several Linear layers give the model's output ({names}); pass head= to pick one")
        else:
            found = next(iter(makes_out))
        if times[found] != 1:
            raise LinfiltError(
                f"the head {linears[found]!r} runs {times[found]} times per forward pass; linear filtration "
                "can only rewrite a head that runs once"
            )
        return linears[found], found


class _Outputs:
    """The head to rewrite, the original class id of each of its outputs (as recorded, else the
    output positions), its live outputs (all but those keep_outputs masked), the live positions to
    forget, and the translation of labels. Positions and k count live outputs only."""

    def __init__(self, model: nn.Module, head: tuple[str, nn.Linear], forget: tuple[int, ...],
                 keep_outputs: bool) -> None:
        self.head_name, self.head = head
        _check_exact(self.head_name, self.head)
        if keep_outputs and self.head.bias is None:
            raise LinfiltError(f"keep_outputs=True needs a head with a bias: the head {self.head_name!r} has "
                               "none, and without one no output can be made to lose on every input")
        self.width = width = self.head.out_features
        stored, where = _stored_classes(model, self.head)
        self.recorded = stored is not None
        if self.recorded:  # ids index a lookup table: bounded, distinct, non-negative
            check_class_ids(stored, where)
            if len(stored) != width:
                raise LinfiltError(
                    f"{where} lists {len(stored)} classes but the head has {width} outputs; delete the "
                    f"stale `{RECORD_ATTR}` / `{CLASSES_BUFFER}` to use output positions as class ids"
                )
        record = getattr(model, RECORD_ATTR, None)
        if not isinstance(record, FiltrationRecord):  # lost with the attribute: a config may hold it
            record = stored_record(model) or FiltrationRecord(stored or tuple(range(width)))
        self.record = record
        masked = _masked_rows(self.head)
        self.live = np.flatnonzero(~masked)
        self.ids = np.asarray(self.record.classes, dtype=np.int64)[self.live]
        self.k = len(self.live)
        earlier = set(self.record.forgotten) | set(np.asarray(self.record.classes)[masked].tolist())
        self.forgotten = np.asarray(sorted(earlier), dtype=np.int64)
        self.forget = self._forget_positions(forget)

    def columns(self, logits: torch.Tensor) -> torch.Tensor:
        """The live outputs' logits."""
        return logits if self.k == self.width else logits[:, torch.from_numpy(self.live).to(logits.device)]

    def rows(self, values: np.ndarray) -> np.ndarray:
        """The live outputs' rows of a head's weight or bias (the array itself when all are live)."""
        return values if self.k == self.width else values[self.live]

    def _forget_positions(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """Live output positions of the original class ids (validated by check_class_ids) to forget."""
        gone = sorted(set(ids) & set(self.forgotten.tolist()))
        if gone:
            raise LinfiltError(f"classes {gone} were already forgotten from this model")
        where = {int(c): i for i, c in enumerate(self.ids)}
        missing = [c for c in ids if c not in where]
        if missing:
            raise LinfiltError(f"classes {missing} are not outputs of this model (its classes: "
                               f"{self.ids.tolist()})" if self.recorded else
                               f"class ids {missing} are out of range: the model has {self.k} outputs "
                               f"(0..{self.k - 1})")
        return check_forget(self.k, [where[c] for c in ids])

    def positions(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(output positions of the kept samples, mask of kept samples): samples of classes forgotten
        earlier are skipped; any other label that is not a class of the model is an error."""
        keep = ~np.isin(labels, self.forgotten) if len(self.forgotten) else np.ones(len(labels), dtype=bool)
        lab = labels[keep]
        # original id -> output position by binary search: no table as large as the largest id
        order = np.argsort(self.ids, kind="stable")
        at = np.minimum(np.searchsorted(self.ids[order], lab), self.k - 1)
        found = self.ids[order][at] == lab
        pos = np.where(found, order[at], -1)
        bad = ~found
        if np.any(bad):
            raise LinfiltError(
                f"labels {sorted(set(lab[bad].tolist()))[:10]} are not classes of this model "
                f"(its classes: {self.ids.tolist()})"
            )
        return pos.astype(np.int64), keep


# What each form of data becomes: the head's outputs, every sample's label (original ids), and
# a function giving the logits (float64) of the samples at given indices.
_Source = tuple[_Outputs, np.ndarray, Callable[[np.ndarray], np.ndarray]]
# The head's _Outputs once the head is found (the request's forget and keep_outputs bound).
_Make = Callable[[tuple[str, nn.Linear]], _Outputs]


def _batches(data: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    for batch in loader:
        if isinstance(batch, Mapping):  # a transformers batch: model inputs and "labels"
            inputs, labels = split_batch(batch)
            if labels is None:
                raise LinfiltError(f"a dict batch needs its labels under 'labels' (its keys: {sorted(batch)})")
            yield inputs, labels
            continue
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise LinfiltError("each batch of data must be an (inputs, labels) pair or a dict with 'labels'")
        yield batch[0], batch[1]


def _precomputed(model: nn.Module, head: str | nn.Module | None, outputs_of: _Make, logits: Any,
                 labels: Any) -> _Source:
    outputs = outputs_of(_static_head(model, head) or _only_linear(model))
    values = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits)
    if values.ndim != 2 or values.shape[1] != outputs.width:
        raise LinfiltError(
            f"logits of shape {values.shape} do not fit the head {outputs.head_name!r} with "
            f"{outputs.width} outputs: they must be (n, {outputs.width})"
        )
    values = values if outputs.k == outputs.width else values[:, outputs.live]
    y = check_labels(labels)
    if len(y) != len(values):
        raise LinfiltError(f"{len(values)} logit rows but {len(y)} labels")
    return outputs, y, values.__getitem__


def _pair(runner: _Runner, outputs_of: _Make, data: tuple, batch_size: int, progress: bool) -> _Source:
    """An (x, y) pair: the labels are known before any forward pass, so only the samples chosen
    to estimate A are run (lazily, by the returned function)."""
    x, y = data
    if isinstance(x, Mapping):
        raise LinfiltError("dict inputs (a transformers batch) come in a DataLoader or Dataset of dicts "
                           "with 'labels', not as an (x, y) pair")
    try:
        x = x if isinstance(x, torch.Tensor) else np.asarray(x)
    except ValueError as exc:  # ragged rows
        raise LinfiltError(f"data's inputs are not an array: {exc}") from None
    if x.ndim == 0:
        raise LinfiltError(f"data's inputs must hold one row per sample, got a scalar {reprlib.repr(x.tolist())}")
    y = check_labels(y)
    if len(x) != len(y):
        raise LinfiltError(f"data has {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise LinfiltError("data is empty: A needs samples of every class")
    runner(x[:1])  # find the head, hence the classes, before choosing which samples to run
    outputs = outputs_of(runner.head)

    def logits_of(idx: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(idx) if isinstance(x, torch.Tensor) else idx
        starts = range(0, len(rows), batch_size)
        parts = [runner(x[rows[i:i + batch_size]]) for i in tqdm(starts, disable=not progress, desc="logits")]
        return outputs.columns(torch.cat(parts)).double().cpu().numpy()

    return outputs, y, logits_of


def _stream(runner: _Runner, outputs_of: _Make, data: Any, per_class: int | None, rng: Any,
            batch_size: int, progress: bool) -> _Source:
    """A DataLoader or Dataset: read once, keeping the kept samples' logits; with the first s per
    class wanted, reading stops as soon as every class has s."""
    parts, labels, outputs, counts = [], [], None, None
    for xb, yb in tqdm(_batches(data, batch_size), disable=not progress, desc="logits"):
        out = runner(xb)
        if outputs is None:  # the first batch found the head: bad requests stop here
            outputs = outputs_of(runner.head)
            counts = np.zeros(outputs.k, dtype=np.int64)
        yb = check_labels(yb)
        pos, keep = outputs.positions(yb)
        parts.append(outputs.columns(out[torch.from_numpy(keep).to(out.device)]).double().cpu())
        labels.append(yb[keep])
        counts += np.bincount(pos, minlength=outputs.k)
        if per_class is not None and rng is None and counts.min() >= per_class:
            break  # the first s of every class are in: the rest is not needed
    if outputs is None:
        raise LinfiltError("data is empty: A needs samples of every class")
    return outputs, np.concatenate(labels), torch.cat(parts).numpy().__getitem__


def _from_data(model: nn.Module, head: str | nn.Module | None, outputs_of: _Make, data: Any, per_class: int | None,
               rng: Any, batch_size: int, progress: bool) -> _Source:
    runner = _Runner(model, head)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _pair(runner, outputs_of, data, batch_size, progress)
    if is_hf_dataset(data):
        data = hf_dataset_loader(data, model, batch_size)
    if isinstance(data, (DataLoader, Dataset)):
        return _stream(runner, outputs_of, data, per_class, rng, batch_size, progress)
    raise LinfiltError(
        "data must be a DataLoader, a Dataset of (input, label) pairs or of dicts, a datasets.Dataset, or an "
        "(x, y) pair; "
        "for precomputed logits pass logits= and labels= instead"
    )


def find_head(model: nn.Module, x: Any) -> str:
    """The dotted path of the nn.Linear whose output is the model's logits, found by running the
    model once (eval mode, no gradients) on x: a batch of inputs, or a dict of model inputs. With
    it, logits computed elsewhere can be passed as `unlearn(..., logits=, labels=, head=)`."""
    _check_model(model)
    runner = _Runner(model, None)
    with _inference(model):
        runner(x)
    return runner.head[0]


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients; each module's own train/eval mode is restored after."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _filtered_head(outputs: _Outputs, filt: Filtration, keep_outputs: bool) -> tuple[nn.Linear, np.ndarray]:
    """A new Linear with weight F W and bias F b + g of the live outputs, on the head's device,
    dtype and mode, and the old output row of each new output. F W and F b are computed in
    float64 and cast to the head's dtype once. With keep_outputs the head keeps all its outputs
    and those not kept are masked: weight 0 and bias the dtype's lowest finite value, so their
    logit is that value on every input, below any finite logit (never the argmax, softmax
    probability exactly 0, and so no gradient either)."""
    head = outputs.head
    W = head.weight.detach()
    b = None if head.bias is None else head.bias.detach()
    new_W, new_b = absorb(filt.matrix, outputs.rows(W.cpu().double().numpy()),
                          None if b is None else outputs.rows(b.cpu().double().numpy()), filt.offset)
    rows = outputs.live[list(filt.kept)]
    if keep_outputs:
        full_W = np.zeros((outputs.width, W.shape[1]))
        full_b = np.full(outputs.width, float(torch.finfo(W.dtype).min))
        full_W[rows], full_b[rows] = new_W, new_b
        new_W, new_b, rows = full_W, full_b, np.arange(outputs.width)
    # An affine filtration (softmax-symmetric logits) gives a bias-less head a bias.
    new = nn.Linear(W.shape[1], new_W.shape[0], bias=new_b is not None, device=W.device, dtype=W.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.from_numpy(new_W))
        if new_b is not None:
            new.bias.copy_(torch.from_numpy(new_b))
    new.requires_grad_(head.weight.requires_grad)
    return new.train(head.training), rows


def _replace(model: nn.Module, head: nn.Linear, new: nn.Linear) -> nn.Module:
    """Put `new` wherever `head` sits in `model` (nested, or shared under several names)."""
    if model is head:
        return new
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if module is head:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, new)
    return model


def _count_outputs(model: nn.Module, before: int, after: int) -> None:
    """timm models (and others of its convention) keep their output count in `num_classes`, read by
    `reset_classifier` and by users: keep it the new head's, when it was the old head's."""
    count = getattr(model, "num_classes", None)
    if type(count) is int and count == before:
        model.num_classes = after


def unlearn(
    model: nn.Module,
    forget: int | Iterable[int],
    data: Any = None,
    *,
    method: str = "normalization",
    per_class: int | None = None,
    head: str | nn.Module | None = None,
    rng: np.random.Generator | int | None = None,
    allow_pinv: bool = False,
    logits: Any = None,
    labels: Any = None,
    batch_size: int = 256,
    progress: bool = False,
    keep_outputs: bool = False,
) -> nn.Module:
    """A copy of `model` with the classes `forget` unlearned by linear filtration; `model` is untouched.

    data: a DataLoader or Dataset of (input, label) batches or of dicts of model inputs with
    'labels' (transformers), a `datasets.Dataset` (see `linfilt.hf.hf_dataset_loader`), or an
    (x, y) pair of tensors/arrays; or pass precomputed `logits=`
    (n, k) of this model's head with `labels=` instead. method="naive" needs neither (its F only
    drops outputs). Inputs run in eval mode without gradients (each module's train/eval mode is
    restored after). per_class=s uses the first s samples of each class in the data's order, or
    a random s when rng is given; rng (a Generator or an integer seed) also draws randomization's
    z. head: the final nn.Linear (a dotted path or the module), needed only when the model has no
    `head` attribute and the one whose output is the model's output cannot be told apart.

    The copy's head has k-|C| outputs, W <- F W and b <- F b, on the same device with the same
    dtype, and keeps the original class id of each output in its buffer `linfilt_classes` (see
    `classes_of`, `predict_ids`); with keep_outputs=True it keeps all k outputs, those of the
    forgotten classes masked (see `_filtered_head`), so its argmax is the original class id and
    its state_dict loads into the original architecture. Its `linfilt_filtration` attribute (a
    FiltrationRecord) records what was done. Ids in `forget` and in the labels are original class
    ids (see the module docstring). Every option after `data` is keyword-only.
    """
    _check_model(model)
    gen = check_method_rng(method, rng)
    forget = check_class_ids(forget, "forget")
    per_class = check_optional_positive_int(per_class, "per_class")
    batch_size = check_positive_int(batch_size, "batch_size")
    keep_outputs = check_bool(keep_outputs, "keep_outputs")
    progress = check_bool(progress, "progress")
    allow_pinv = check_bool(allow_pinv, "allow_pinv")
    if logits is not None and data is not None:
        raise LinfiltError("pass either data or precomputed logits=, not both")
    if logits is not None and labels is None:
        raise LinfiltError("precomputed logits= need labels= (one class id per row)")
    no_data = logits is None and data is None
    if no_data and method != "naive":
        raise LinfiltError(f"method {method!r} needs data to estimate A from (or precomputed logits= and "
                           "labels=): a few samples of every class, the forgotten ones included; only "
                           "method='naive' needs none")
    if no_data and per_class is not None:
        raise LinfiltError("per_class= chooses samples of the data, but no data was given")
    def outputs_of(found: tuple[str, nn.Linear]) -> _Outputs:
        return _Outputs(model, found, forget, keep_outputs)

    with _inference(model):
        if no_data:  # naive's F is the projection onto the kept outputs: no A needed
            outputs = outputs_of(_static_head(model, head) or _only_linear(model))
        else:
            outputs, y, logits_of = (
                _precomputed(model, head, outputs_of, logits, labels) if logits is not None
                else _from_data(model, head, outputs_of, data, per_class, gen, batch_size, progress)
            )
            pos, keep = outputs.positions(y)
            check_class_counts(pos, outputs.k, per_class, names=outputs.ids.tolist())
            idx = np.flatnonzero(keep)
            if per_class is not None:  # only the chosen s per class need their logits
                chosen = select_per_class(pos, outputs.k, per_class, gen)
                idx, pos = idx[chosen], pos[chosen]
            values = logits_of(idx)
    if no_data:
        filt, samples = projection(outputs.k, outputs.forget), 0
    else:
        A = mean_logits(values, pos, outputs.k)
        filt = compute_filtration(A, outputs.forget, method, rng=gen, allow_pinv=allow_pinv)
        samples = len(pos)
    old = outputs.head
    new_head, rows = _filtered_head(outputs, filt, keep_outputs)
    # The memo keeps the old head out of the copy (it is replaced there anyway): no wasted k x p copy.
    new_model = _replace(copy.deepcopy(model, memo={id(old): old}), old, new_head)
    live = FiltrationRecord(tuple(outputs.ids.tolist()), outputs.record.steps)
    record = live.then(filt, per_class=per_class, samples=samples, rng=rng, head=outputs.head_name)
    if keep_outputs:  # every output stays, under its id; the step lists what was masked
        record = FiltrationRecord(outputs.record.classes, record.steps)
    # A smaller head always gets the buffer (load_unlearned resizes by it); keep_outputs' k outputs
    # under their own ids need none, so its state_dict is the original architecture's.
    if record.classes != tuple(range(outputs.width)):
        set_classes(new_model, new_head, record.classes)
    describe_outputs(new_model, rows.tolist(), record.classes)
    _count_outputs(new_model, outputs.width, new_head.out_features)
    store_steps(new_model, record)
    setattr(new_model, RECORD_ATTR, record)
    return new_model


__all__: Sequence[str] = ("unlearn", "find_head", "classes_of", "predict_ids", "load_unlearned", "FiltrationRecord", "FiltrationStep",
                          "UnlearnStep", "RECORD_ATTR", "CLASSES_BUFFER")
