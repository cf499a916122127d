"""Model inversion: reconstruct what a classifier "thinks" a class looks like (the paper's §5.5).

Plain gradient descent on the input: from a uniform grey image, step against the gradient of the
cross-entropy of the target label and clip to [0, 1] after every step, no regulariser (the
authors' setup, as their scripts ran it: 50 steps of size 0.3 on the raw gradient; the defaults
below are `linfilt.paper.settings.INVERSION`).

A filtered model has no output for the classes it forgot, so a forgotten class could not even be
named as a target. As the authors did, its logit is re-inserted at its original index as a
constant (`forgotten_logit`, 1 by default). A constant has no gradient: the reconstruction of a
forgotten class is then driven only by pushing the retained logits down, which is exactly what
shows how much of that class is still encoded in the retained outputs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linfilt.errors import LinfiltError
from linfilt.filtration import check_forget, retained_classes
from linfilt.paper.settings import INVERSION


def reinsert_logits(
    logits: torch.Tensor, forgotten: Sequence[int], value: float = INVERSION["forgotten_logit"]
) -> torch.Tensor:
    """Widen a filtered model's logits (n, k - |C|) back to (n, k).

    Output i of the filtered model goes to original class `retained_classes(k, forgotten)[i]`;
    every forgotten class gets the constant `value` (no gradient flows into it). With |C| equal
    constants, a forgotten target's softmax probability can never exceed 1/|C|.
    """
    forgotten = tuple(int(c) for c in forgotten)
    if not forgotten:
        return logits
    k = logits.shape[1] + len(forgotten)
    forgotten = check_forget(k, forgotten)
    kept = retained_classes(k, forgotten)
    const = logits.new_full((logits.shape[0], len(forgotten)), float(value))
    # Columns of cat([kept outputs, constants]) sit at original ids `order`; argsort undoes that.
    order = np.concatenate([kept, np.asarray(forgotten)])
    inverse = torch.as_tensor(np.argsort(order), device=logits.device)
    return torch.cat([logits, const], dim=1)[:, inverse]


def _placement(model: nn.Module, device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    """Where inputs go: the given device (the model is moved there) or the model's own."""
    first = next(model.parameters(), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    else:
        model.to(device)
    return torch.device(device), first.dtype if first is not None else torch.float32


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode without parameter gradients; every module's mode and every flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def class_probabilities(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    forgotten: Sequence[int] | None = None,
    forgotten_logit: float = INVERSION["forgotten_logit"],
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Softmax over all k classes, forgotten ones re-inserted as in `invert`: (n, k) float64.

    What the inversion maximises, so it tells whether a reconstruction "worked" for the model
    (whatever it looks like to the eye)."""
    device, dtype = _placement(model, device)
    with _frozen(model), torch.no_grad():
        logits = model(torch.as_tensor(images).to(device, dtype))
        full = reinsert_logits(logits, tuple(forgotten or ()), forgotten_logit)
        return torch.softmax(full.double(), dim=1).cpu().numpy()


def invert(
    model: nn.Module,
    targets: Sequence[int],
    shape: Sequence[int],
    steps: int = INVERSION["steps"],
    step_size: float = INVERSION["step_size"],
    start: float = INVERSION["start"],
    forgotten: Sequence[int] | None = None,
    forgotten_logit: float = INVERSION["forgotten_logit"],
    device: str | torch.device | None = None,
) -> np.ndarray:
    """One reconstruction per target, all in one batch: float32 array (len(targets), *shape).

    `targets` are original class ids (0..k-1, k counting the forgotten classes too); a target may
    be a forgotten class or a retained one. `shape` is one input's shape, e.g. (1, 56, 46).
    `forgotten` names the classes the model no longer outputs (see `reinsert_logits`).
    The model runs in eval mode (BatchNorm uses its running statistics, so rows do not interact)
    without parameter gradients; each module's mode and each parameter's `requires_grad` are
    restored afterwards. `device` defaults to the model's; a given one moves the model (in place).
    """
    targets_arr = np.asarray(targets)
    if targets_arr.ndim != 1 or targets_arr.size == 0 or not np.issubdtype(targets_arr.dtype, np.integer):
        raise LinfiltError(f"targets must be a non-empty 1-D sequence of class ids, got {targets!r}")
    if int(steps) < 0 or not np.isfinite(step_size) or not np.isfinite(forgotten_logit):
        raise LinfiltError("steps must be >= 0 and step_size, forgotten_logit finite numbers")
    if not 0.0 <= float(start) <= 1.0:
        raise LinfiltError(f"start must be a grey level in [0, 1], got {start}")
    shape = tuple(int(s) for s in shape)
    forgotten = tuple(int(c) for c in forgotten) if forgotten is not None else ()

    device, dtype = _placement(model, device)
    with _frozen(model):
        x = torch.full((len(targets_arr), *shape), float(start), dtype=dtype, device=device)
        with torch.no_grad():
            k = model(x[:1]).shape[1] + len(forgotten)
        if targets_arr.min() < 0 or targets_arr.max() >= k:
            raise LinfiltError(
                f"targets must be class ids in 0..{k - 1} (the model has {k - len(forgotten)} "
                f"outputs and {len(forgotten)} forgotten classes), got {targets_arr.tolist()}"
            )
        if forgotten:
            check_forget(k, forgotten)
        y = torch.as_tensor(targets_arr, dtype=torch.long, device=device)
        for _ in range(int(steps)):
            x.requires_grad_(True)
            logits = reinsert_logits(model(x), forgotten, forgotten_logit)
            # Summed, not averaged: each row's gradient is then exactly its own single-image one.
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            x = (x.detach() - step_size * grad).clamp_(0.0, 1.0)
    return x.detach().to("cpu", torch.float32).numpy()
