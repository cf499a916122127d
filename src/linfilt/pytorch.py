"""Unlearning classes from a PyTorch classifier by linear filtration of its final Linear layer.

`unlearn` finds the `nn.Linear` whose output is the model's logits, estimates A from the logits
of the given data, and returns a copy whose head is F W, F b (section 4.1 of the paper), so the
new model's logits are F times the old ones on every input.

Class ids never change meaning: a returned model carries a `FiltrationRecord` (attribute
`linfilt_filtration`) giving the original class id of each output, and a later `unlearn` of that
model takes `forget` and the data's labels as original ids too (samples of classes forgotten
earlier are skipped). Forgetting {3} and then {5} this way, with A estimated from the same samples
both times, is for each method (derivation and tests: tests/test_sequential.py):

- naive and zeroing: identical to forgetting {3, 5} at once;
- normalization: not identical, but every input's logits differ from the at-once model's by one
  amount common to all outputs, so softmax outputs, labels and cross-entropy are identical;
- randomization: class 3's mean logits go to F2 z3 (the second filtration applied to the first
  step's random z3) instead of a fresh N(0, I) draw; everything else as at once.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from linfilt.errors import LinfiltError
from linfilt.filtration import (RECORD_ATTR, Filtration, FiltrationRecord, FiltrationStep, absorb,
                                check_class_counts, check_forget, check_method_rng, compute_filtration,
                                mean_logits, select_per_class)
from linfilt.validation import check_class_ids, check_labels, check_optional_positive_int, check_positive_int

# The record's step under the name it had here before one record served every layer.
UnlearnStep = FiltrationStep


def _linears(model: nn.Module) -> dict[nn.Module, str]:
    return {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _named_head(model: nn.Module, head: str) -> tuple[str, nn.Linear]:
    try:
        module = model.get_submodule(head)
    except AttributeError:
        raise LinfiltError(f"head={head!r} names no submodule of this model") from None
    if not isinstance(module, nn.Linear):
        raise LinfiltError(f"head={head!r} is a {type(module).__name__}, not an nn.Linear")
    return head, module


def _static_head(model: nn.Module, head: str | None) -> tuple[str, nn.Linear] | None:
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
    if not linears:
        raise LinfiltError("this model has no nn.Linear layer: linear filtration rewrites a final Linear layer")
    if len(linears) > 1:
        raise LinfiltError(
            f"this model has {len(linears)} nn.Linear layers and no `head` attribute; "
            f"pass head= with the dotted path of the one producing the logits (one of {sorted(linears.values())})"
        )
    module, name = next(iter(linears.items()))
    return name, module


class _Runner:
    """Runs the model on input batches; the first batch finds (or checks) the head with hooks."""

    def __init__(self, model: nn.Module, head: str | None) -> None:
        self.model = model
        self.static = _static_head(model, head)
        self.head: tuple[str, nn.Linear] | None = None
        params = [p for p in model.parameters() if p.is_floating_point()]
        if not params:
            raise LinfiltError("this model has no parameters, hence no nn.Linear head to filter")
        self.device, self.dtype = params[0].device, params[0].dtype

    def __call__(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        x = x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)
        if self.head is not None:
            return self._check(self.model(x))
        calls: list[tuple[nn.Module, torch.Tensor]] = []
        linears = _linears(self.model)
        if not linears:
            raise LinfiltError("this model has no nn.Linear layer: linear filtration rewrites a final Linear layer")
        hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, o))) for m in linears]
        try:
            out = self._check(self._first_call(x))
        finally:
            for h in hooks:
                h.remove()
        self.head = self._pick(out, calls, linears)
        return out

    def _first_call(self, x: torch.Tensor) -> Any:
        """The first forward pass: an error here means the data does not fit the model, so say so."""
        try:
            return self.model(x)
        except (RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LinfiltError(f"the model cannot run on inputs of shape {tuple(x.shape[1:])} and dtype "
                               f"{x.dtype} (its parameters are {self.dtype}): {first}") from exc

    @staticmethod
    def _check(out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LinfiltError(f"the model must return logits of shape (n, k), it returned {shape}")
        return out

    def _pick(self, out: torch.Tensor, calls: list, linears: dict[nn.Module, str]) -> tuple[str, nn.Linear]:
        times = {m: sum(c is m for c, _ in calls) for m in linears}
        makes_out = {m for m, o in calls if o is out or (o.shape == out.shape and torch.equal(o, out))}
        if self.static is not None:
            name, module = self.static
            if module not in makes_out:
                raise LinfiltError(
                    f"the model's output is not the output of its Linear {name!r} (something follows it, "
                    "or it did not run): linear filtration needs the logits to be a Linear layer's output; "
                    "pass head= naming that layer"
                )
            found = module
        elif not makes_out:
            raise LinfiltError(
                "no nn.Linear layer's output is the model's output: linear filtration needs the logits "
                "to be the output of a final Linear layer (pass head= if one is, e.g. after a reshape)"
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
    """The head to rewrite, the original class id of each of its outputs (from the model's record,
    else the output positions), the positions to forget, and the translation of labels."""

    def __init__(self, model: nn.Module, head: tuple[str, nn.Linear], forget: tuple[int, ...]) -> None:
        self.head_name, self.head = head
        self.k = k = self.head.out_features
        record = getattr(model, RECORD_ATTR, None)
        self.recorded = isinstance(record, FiltrationRecord)
        if self.recorded:  # ids index a lookup table: bounded, distinct, non-negative
            check_class_ids(record.classes, f"the model's {RECORD_ATTR}.classes")
            if len(record.classes) != k:
                raise LinfiltError(
                    f"the model's {RECORD_ATTR} lists {len(record.classes)} classes but its head has {k} "
                    f"outputs; delete the stale attribute `{RECORD_ATTR}` to use output positions as class ids"
                )
        self.record = record if self.recorded else FiltrationRecord(tuple(range(k)))
        self.ids = np.asarray(self.record.classes, dtype=np.int64)
        self.forgotten = np.asarray(self.record.forgotten, dtype=np.int64)
        self.forget = self._forget_positions(forget)

    def _forget_positions(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """Output positions of the original class ids (validated by check_class_ids) to forget."""
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
        table = np.full(int(self.ids.max()) + 1, -1, dtype=np.int64)  # original id -> output position
        table[self.ids] = np.arange(self.k)
        inside = (lab >= 0) & (lab < len(table))
        pos = np.where(inside, table[np.where(inside, lab, 0)], -1)
        bad = pos < 0
        if np.any(bad):
            raise LinfiltError(
                f"labels {sorted(set(lab[bad].tolist()))[:10]} are not classes of this model "
                f"(its classes: {self.ids.tolist()})"
            )
        return pos.astype(np.int64), keep


# What each form of data becomes: the head's outputs, every sample's label (original ids), and
# a function giving the logits (float64) of the samples at given indices.
_Source = tuple[_Outputs, np.ndarray, Callable[[np.ndarray], np.ndarray]]


def _batches(data: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise LinfiltError("each batch of data must be an (inputs, labels) pair")
        yield batch[0], batch[1]


def _precomputed(model: nn.Module, head: str | None, forget: tuple[int, ...], logits: Any,
                 labels: Any) -> _Source:
    outputs = _Outputs(model, _static_head(model, head) or _only_linear(model), forget)
    values = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits)
    if values.ndim != 2 or values.shape[1] != outputs.k:
        raise LinfiltError(
            f"logits of shape {values.shape} do not fit the head {outputs.head_name!r} with "
            f"{outputs.k} outputs: they must be (n, {outputs.k})"
        )
    y = check_labels(labels)
    if len(y) != len(values):
        raise LinfiltError(f"{len(values)} logit rows but {len(y)} labels")
    return outputs, y, values.__getitem__


def _pair(runner: _Runner, forget: tuple[int, ...], data: tuple, batch_size: int, progress: bool) -> _Source:
    """An (x, y) pair: the labels are known before any forward pass, so only the samples chosen
    to estimate A are run (lazily, by the returned function)."""
    x, y = data
    x = x if isinstance(x, torch.Tensor) else np.asarray(x)
    y = check_labels(y)
    if len(x) != len(y):
        raise LinfiltError(f"data has {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise LinfiltError("data is empty: A needs samples of every class")
    runner(x[:1])  # find the head, hence the classes, before choosing which samples to run

    def logits_of(idx: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(idx) if isinstance(x, torch.Tensor) else idx
        starts = range(0, len(rows), batch_size)
        parts = [runner(x[rows[i:i + batch_size]]) for i in tqdm(starts, disable=not progress, desc="logits")]
        return torch.cat(parts).double().cpu().numpy()

    return _Outputs(runner.model, runner.head, forget), y, logits_of


def _stream(runner: _Runner, forget: tuple[int, ...], data: Any, per_class: int | None, rng: Any,
            batch_size: int, progress: bool) -> _Source:
    """A DataLoader or Dataset: read once, keeping the kept samples' logits; with the first s per
    class wanted, reading stops as soon as every class has s."""
    parts, labels, outputs, counts = [], [], None, None
    for xb, yb in tqdm(_batches(data, batch_size), disable=not progress, desc="logits"):
        out = runner(xb)
        if outputs is None:  # the first batch found the head: bad requests stop here
            outputs = _Outputs(runner.model, runner.head, forget)
            counts = np.zeros(outputs.k, dtype=np.int64)
        yb = check_labels(yb)
        pos, keep = outputs.positions(yb)
        parts.append(out[torch.from_numpy(keep).to(out.device)].double().cpu())
        labels.append(yb[keep])
        counts += np.bincount(pos, minlength=outputs.k)
        if per_class is not None and rng is None and counts.min() >= per_class:
            break  # the first s of every class are in: the rest is not needed
    if outputs is None:
        raise LinfiltError("data is empty: A needs samples of every class")
    return outputs, np.concatenate(labels), torch.cat(parts).numpy().__getitem__


def _from_data(model: nn.Module, head: str | None, forget: tuple[int, ...], data: Any, per_class: int | None,
               rng: Any, batch_size: int, progress: bool) -> _Source:
    runner = _Runner(model, head)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _pair(runner, forget, data, batch_size, progress)
    if isinstance(data, (DataLoader, Dataset)):
        return _stream(runner, forget, data, per_class, rng, batch_size, progress)
    raise LinfiltError(
        "data must be a DataLoader, a Dataset of (input, label) pairs or an (x, y) pair; "
        "for precomputed logits pass logits= and labels= instead"
    )


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


def _filtered_head(head: nn.Linear, filt: Filtration) -> nn.Linear:
    """A new Linear with weight F W and bias F b + g, on the head's device, dtype and mode."""
    W = head.weight.detach()
    b = None if head.bias is None else head.bias.detach()
    new_W, new_b = absorb(filt.matrix, W.cpu().double().numpy(),
                          None if b is None else b.cpu().double().numpy(), filt.offset)
    # An affine filtration (softmax-symmetric logits) gives a bias-less head a bias.
    new = nn.Linear(W.shape[1], new_W.shape[0], bias=new_b is not None, device=W.device, dtype=W.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.from_numpy(new_W))
        if new_b is not None:
            new.bias.copy_(torch.from_numpy(new_b))
    new.requires_grad_(head.weight.requires_grad)
    return new.train(head.training)


def _replace(model: nn.Module, head: nn.Linear, new: nn.Linear) -> nn.Module:
    """Put `new` wherever `head` sits in `model` (nested, or shared under several names)."""
    if model is head:
        return new
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if module is head:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, new)
    return model


def unlearn(
    model: nn.Module,
    forget: int | Iterable[int],
    data: Any = None,
    *,
    method: str = "normalization",
    per_class: int | None = None,
    head: str | None = None,
    rng: np.random.Generator | int | None = None,
    allow_pinv: bool = False,
    logits: Any = None,
    labels: Any = None,
    batch_size: int = 256,
    progress: bool = False,
) -> nn.Module:
    """A copy of `model` with the classes `forget` unlearned by linear filtration; `model` is untouched.

    data: a DataLoader or Dataset of (input, label) batches, or an (x, y) pair of tensors/arrays;
    or pass precomputed `logits=` (n, k) of this model with `labels=` instead. Inputs run in eval
    mode without gradients (each module's train/eval mode is restored after). per_class=s uses
    the first s samples of each class in the data's order, or a random s when rng is given; rng
    (a Generator or an integer seed) also draws randomization's z. head: dotted path of the final
    nn.Linear, needed only when the model has no `head` attribute and the one whose output is the
    model's output cannot be told apart. The copy's head has k-|C| outputs, W <- F W and b <- F b,
    on the same device with the same dtype; its `linfilt_filtration` attribute (a FiltrationRecord)
    records what was done. Ids in `forget` and in the labels are original class ids (see the
    module docstring). Every option after `data` is keyword-only.
    """
    gen = check_method_rng(method, rng)
    forget = check_class_ids(forget, "forget")
    per_class = check_optional_positive_int(per_class, "per_class")
    batch_size = check_positive_int(batch_size, "batch_size")
    if logits is not None and data is not None:
        raise LinfiltError("pass either data or precomputed logits=, not both")
    if logits is not None and labels is None:
        raise LinfiltError("precomputed logits= need labels= (one class id per row)")
    if logits is None and data is None:
        raise LinfiltError("pass the data to estimate A from (or precomputed logits= and labels=)")
    with _inference(model):
        outputs, y, logits_of = (
            _precomputed(model, head, forget, logits, labels) if logits is not None
            else _from_data(model, head, forget, data, per_class, gen, batch_size, progress)
        )
        pos, keep = outputs.positions(y)
        check_class_counts(pos, outputs.k, per_class, names=outputs.ids.tolist())
        idx = np.flatnonzero(keep)
        if per_class is not None:  # only the chosen s per class need their logits
            chosen = select_per_class(pos, outputs.k, per_class, gen)
            idx, pos = idx[chosen], pos[chosen]
        values = logits_of(idx)
    A = mean_logits(values, pos, outputs.k)
    filt = compute_filtration(A, outputs.forget, method, rng=gen, allow_pinv=allow_pinv)
    old = outputs.head
    # The memo keeps the old head out of the copy (it is replaced there anyway): no wasted k x p copy.
    new_model = _replace(copy.deepcopy(model, memo={id(old): old}), old, _filtered_head(old, filt))
    record = outputs.record.then(filt, per_class=per_class, samples=len(pos), rng=rng, head=outputs.head_name)
    setattr(new_model, RECORD_ATTR, record)
    return new_model


__all__: Sequence[str] = ("unlearn", "FiltrationRecord", "FiltrationStep", "UnlearnStep", "RECORD_ATTR")
