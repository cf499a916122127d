"""Training one ordinary model: the paper's recipe (Adam, cross-entropy, shuffled mini-batches).

The data order and the optimiser settings live here once, so that the population engine's
batched strategies reproduce this loop model by model.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from linfilt.errors import LinfiltError
from linfilt.paper.settings import ADAM_EPS, LR

PRECISIONS = ("fp32", "bf16")


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    # fused: one elementwise kernel per tensor (several times faster than the default on a CPU),
    # and the same arithmetic per element whether a tensor holds one model or a stack of them.
    return torch.optim.Adam(params, lr=lr, eps=ADAM_EPS, fused=True)


def epoch_orders(seeds: Sequence[int], epochs: int, n: int) -> Iterator[np.ndarray]:
    """Per epoch, one permutation of range(n) per seed, stacked (len(seeds), n). Seed s's sequence
    is the same whatever other seeds it is batched with."""
    rngs = [np.random.default_rng(s) for s in seeds]
    for _ in range(epochs):
        yield np.stack([rng.permutation(n) for rng in rngs])


def batch_order(seed: int, epochs: int, n: int, batch_size: int) -> Iterator[np.ndarray]:
    """One model's mini-batch index arrays, epoch after epoch (the last batch of an epoch may be
    smaller, as in Keras' `fit`)."""
    for perm in epoch_orders([seed], epochs, n):
        for start in range(0, n, batch_size):
            yield perm[0, start:start + batch_size]


def rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x's rows at idx (M, B), as (M, B, ...): model j's mini-batch in [j]."""
    # index_select on rows is several times faster than advanced indexing x[idx]
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


def check_device(device: str | torch.device) -> torch.device:
    """The device, or LinfiltError if this machine cannot train on it."""
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise LinfiltError(f"bad device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LinfiltError(f"device {str(device)!r} asked for, but PyTorch sees no CUDA GPU here; "
                           "use device='cpu' or install a CUDA build of PyTorch")
    return device


def as_tensors(x, y, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (x float NCHW or (N, F), y integer labels) and move them to `device`."""
    device = check_device(device)
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise LinfiltError(f"expected x of shape (N, ...) and labels y of shape (N,), got "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not x.is_floating_point():
        raise LinfiltError(f"x must be float32 in [0, 1] (use linfilt.paper.data.to_float), got {x.dtype}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise LinfiltError(f"labels y must be integers, got {y.dtype}")
    if len(y) == 0:
        raise LinfiltError("no training data")
    return x.to(device, torch.float32), y.to(device, torch.int64)


def check_labels(y: torch.Tensor, num_outputs: int) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_outputs:
        raise LinfiltError(f"labels range over {lo}..{hi} but the model has {num_outputs} outputs")


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's state (Adam's moments and step counts) as flat named tensors."""
    return {f"{i}.{name}": t for i, state in opt.state_dict()["state"].items()
            for name, t in state.items()}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what `optimizer_tensors` gave (the hyperparameters stay the optimiser's own)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        i, _, name = key.partition(".")
        p = params[int(i)]
        if t.shape == p.shape:
            # a moment: in its parameter's memory layout, as Adam makes them (fused Adam walks the
            # tensors' memory in step, so a channels_last weight with contiguous moments mixes elements)
            t = torch.empty_like(p).copy_(t)
        state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def train_steps(forward: Callable[[torch.Tensor], torch.Tensor], params: Iterable[torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, seeds: Sequence[int], epochs: int, batch_size: int,
                lr: float = LR, precision: str = "fp32",
                on_step: Callable[[int], None] | None = None, start_epoch: int = 0,
                opt_state: dict[str, torch.Tensor] | None = None,
                on_epoch: Callable[[int, torch.optim.Optimizer], None] | None = None,
                loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                opt: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """The paper's training loop for M models at once.

    `forward` maps inputs (M, B, ...) to logits (M, B, k); model j sees its own mini-batches, in the
    order `seeds[j]` gives. The loss is the sum over models of each one's mean cross-entropy, so
    each model's gradient is exactly what it would be alone. `on_step(images)` reports progress.
    To resume, pass the epochs already done and the optimiser's state then (`optimizer_tensors`);
    `on_epoch(epochs_done, optimizer)` is called after every epoch (for checkpoints).
    Other objectives (the unlearning methods): `loss(logits, idx)` maps the logits (M, B, k) of
    the rows idx (M, B) of x to each model's loss (M,), in place of the mean cross-entropy; `opt`
    continues an optimiser over `params` (whose state then carries on; `lr` is ignored). Returns
    the optimiser.
    """
    if precision not in PRECISIONS:
        raise LinfiltError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if opt is None:
        opt = make_optimizer(list(params), lr)
    if opt_state is not None:
        load_optimizer_tensors(opt, opt_state)
    n, m = len(y), len(seeds)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for epoch, order in enumerate(epoch_orders(seeds, epochs, n)):
        if epoch < start_epoch:  # drawn all the same, so the data order continues where it was
            continue
        order = torch.from_numpy(order).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[:, start:start + batch_size]
            with autocast:
                out = forward(rows(x, idx))
            if loss is None:
                per_model = F.cross_entropy(out.flatten(0, 1).float(), y.index_select(0, idx.reshape(-1)),
                                            reduction="none").view(m, -1).mean(1)
            else:
                per_model = loss(out.float(), idx)
            opt.zero_grad(set_to_none=True)
            per_model.sum().backward()
            opt.step()
            if on_step is not None:
                on_step(idx.numel())
        if on_epoch is not None:
            on_epoch(epoch + 1, opt)
    return opt


def fit(model: nn.Module, x, y, epochs: int, batch_size: int, lr: float = LR, seed: int = 0,
        device: str = "cpu", progress: bool = False) -> nn.Module:
    """Train `model` in place with Adam + cross-entropy on (x, y); the data order depends on `seed`
    alone. Returns the model, in eval mode, on `device`."""
    if epochs < 1 or batch_size < 1:
        raise LinfiltError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = as_tensors(x, y, device)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        check_labels(y, head.out_features)
    model.to(device).train()
    with tqdm(total=epochs * len(y), unit="img", unit_scale=True, disable=not progress,
              desc="fit") as bar:
        train_steps(lambda xb: model(xb[0]).unsqueeze(0), model.parameters(), x, y, [seed],
                    epochs, batch_size, lr, on_step=bar.update)
    return model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, x, device: str = "cpu", batch_size: int = 1000) -> np.ndarray:
    """The model's logits on x, float32 (N, k), in eval mode."""
    model.to(device).eval()
    x = torch.as_tensor(x)
    out = [model(x[i:i + batch_size].to(device, torch.float32)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()
