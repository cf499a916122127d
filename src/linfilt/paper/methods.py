"""Other class-unlearning methods, for the bench: each applied to trained models of one paper
architecture, batched over the models with the population engine's ensembles.

- "ft": fine-tuning on the retained data at a reduced learning rate.
- "neggrad": gradient ascent on the forgotten data; "neggrad+": ascent on the forgotten data and
  descent on the retained data, weighted (Kurmanji et al., NeurIPS 2023).
- "rl": random labels: the forgotten images relabelled among the retained classes, trained with
  the retained data (as in Kurmanji et al. and Fan et al.'s SalUn, ICLR 2024).
- "boundary_shrink": each forgotten image labelled with its nearest wrong class, found by FGSM on
  the original model, then trained on (Chen et al., CVPR 2023, "Boundary Unlearning").
- "scrub": teacher (the original) and student; max-steps push the student's outputs away from
  the teacher's on the forgotten data, min-steps keep them and the labels on the retained data
  (Kurmanji et al., NeurIPS 2023).
- "ssd": Selective Synaptic Dampening (Foster et al., AAAI 2024): parameters far more important
  to the forgotten data than to all of it are shrunk; no training.

Hyper-parameters and their sources: `settings.UNLEARNING`. Written from the papers; the authors'
code was read for its settings only.

Batching: as in population training, model j has its own mini-batch order from `seeds[j]` and
the loss is the sum over models of each one's loss, so every gradient is per model and model j's
result does not depend on the models it is batched with, up to float rounding (see population.py).
"""
from __future__ import annotations

import copy
import reprlib
import sys
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linfilt.errors import LinfiltError
from linfilt.filtration import check_forget, retained_classes
from linfilt.paper.ensemble import GroupedEnsemble, VmapEnsemble
from linfilt.paper.settings import EVAL_BATCH, UNLEARNING
from linfilt.paper.training import as_tensors, check_labels, epoch_orders, rows, train_steps
from linfilt.validation import check_bool, check_float, check_int, check_positive_int

METHODS: tuple[str, ...] = ("ft", "neggrad", "neggrad+", "rl", "boundary_shrink", "scrub", "ssd")
STRATEGIES = ("loop", "grouped", "vmap")


def _positive(value: Any, name: str) -> float:
    return check_float(value, name, low=0, low_open=True)


def _count(value: Any, name: str) -> int:
    return check_positive_int(value, name, maximum=2**31)


def _weight(value: Any, name: str) -> float:
    return check_float(value, name, low=0)


# Per method, the check of each of its settings (the names of settings.UNLEARNING).
_CHECKS: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "ft": {"epochs": _count, "lr": _positive, "batch_size": _count},
    "neggrad": {"epochs": _count, "lr": _positive, "batch_size": _count},
    "neggrad+": {"epochs": _count, "lr": _positive, "batch_size": _count,
                 "alpha": lambda v, n: check_float(v, n, low=0, high=1)},
    "rl": {"epochs": _count, "lr": _positive, "batch_size": _count},
    "boundary_shrink": {"epochs": _count, "lr": _positive, "batch_size": _count, "bound": _positive},
    "scrub": {"epochs": _count, "max_epochs": lambda v, n: check_int(v, n, minimum=0), "lr": _positive,
              "batch_size": _count, "forget_batch_size": _count, "gamma": _weight, "alpha": _weight,
              "temperature": _positive},
    "ssd": {"alpha": _positive, "lam": _positive, "batch_size": _count},
}


def check_settings(method: Any, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's hyper-parameters: settings.UNLEARNING[method] with `settings` overriding
    some, each checked; LinfiltError names the first wrong one."""
    if not isinstance(method, str) or method not in METHODS:
        raise LinfiltError(f"unknown unlearning method {reprlib.repr(method)}; choose one of {list(METHODS)}")
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise LinfiltError(f"settings of method {method!r} must be a mapping, got {reprlib.repr(settings)}")
    checks = _CHECKS[method]
    unknown = sorted(map(str, set(settings) - set(checks)))
    if unknown:
        raise LinfiltError(f"unknown settings {reprlib.repr(unknown)} for method {method!r}; "
                           f"it takes {sorted(checks)}")
    merged = {**UNLEARNING[method], **settings}
    out = {name: check(merged[name], f"{method} {name}") for name, check in checks.items()}
    if method == "scrub" and out["max_epochs"] > out["epochs"]:
        raise LinfiltError(f"scrub max_epochs ({out['max_epochs']}) must not exceed its epochs ({out['epochs']})")
    return out


class _Batch:
    """Copies of M models as one module whose forward maps (M, B, ...) to (M, B, k): the plain
    model for the loop strategy (M = 1), else an ensemble; the models given are not changed."""

    def __init__(self, models: list[nn.Module], strategy: str, cuda: bool) -> None:
        self.originals, self.strategy = models, strategy
        if strategy == "loop":
            self.module = copy.deepcopy(models[0])
            self.params = list(self.module.parameters())
        elif strategy == "grouped":
            self.module = GroupedEnsemble(models)
            self.module.set_channels_last(cuda)  # the fast layout for GPU kernels, as in training
            self.params = list(self.module.parameters())
        else:
            self.module = VmapEnsemble(models)
            self.params = list(self.module.stacked)

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        return self.module(xb[0]).unsqueeze(0) if self.strategy == "loop" else self.module(xb)

    def results(self) -> list[nn.Module]:
        if self.strategy == "loop":
            return [self.module]
        out = []
        for model, state in zip(self.originals, self.module.state_dicts()):
            model = copy.deepcopy(model)
            model.load_state_dict(state)
            out.append(model)
        return out


def _ce(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each model's mean cross-entropy (M,) of logits (M, B, k) against labels (M, B)."""
    return F.cross_entropy(out.flatten(0, 1), labels.reshape(-1), reduction="none").view(labels.shape).mean(1)


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each model's mean KL(teacher || student) (M,) at the temperature, times its square (Hinton
    et al.'s distillation loss, as SCRUB uses it)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), reduction="none",
                  log_target=True)
    return kl.sum(-1).mean(1) * t * t


def _labels_at(labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows idx (M, B) of shared labels (N,) or per-model ones (M, N)."""
    return labels.index_select(0, idx.reshape(-1)).view(idx.shape) if labels.dim() == 1 else labels.gather(1, idx)


def _logits_at(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows idx (M, B) of per-model logits (M, N, k)."""
    return logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def _spawn(seeds: Sequence[int], *key: int) -> list[int]:
    """Per model, a seed for one more random stream of its own (keyed by `key`)."""
    return [int(np.random.SeedSequence(s, spawn_key=key).generate_state(1)[0]) for s in seeds]


def _endless(seeds: Sequence[int], n: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Per-model mini-batches (M, B) of range(n), epoch after epoch, without end."""
    for order in epoch_orders(seeds, sys.maxsize, n):
        order = torch.from_numpy(order).to(device)
        for start in range(0, n, batch_size):
            yield order[:, start:start + batch_size]


@torch.no_grad()
def _logits(net: _Batch, x: torch.Tensor, m: int) -> torch.Tensor:
    """Every model's logits (M, N, k) on the same images x (N, ...)."""
    return torch.cat([net(x[i:i + EVAL_BATCH].expand(m, *x[i:i + EVAL_BATCH].shape)).float()
                      for i in range(0, len(x), EVAL_BATCH)], 1)


class _Data:
    """A deletion request's data: the retained rows (r) and the forgotten rows (f) of (x, y)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, forget: tuple[int, ...], k: int) -> None:
        self.x, self.y, self.k = x, y, k
        self.forget = forget
        self.kept = torch.as_tensor(retained_classes(k, forget), device=x.device)
        gone = torch.isin(y, torch.as_tensor(forget, device=y.device))
        self.is_forget = gone
        self.x_r, self.y_r = x[~gone], y[~gone]
        self.x_f, self.y_f = x[gone], y[gone]


def _ft(net, d, hp, seeds, m, on_step):
    train_steps(net, net.params, d.x_r, d.y_r, seeds, hp["epochs"], hp["batch_size"], hp["lr"],
                on_step=on_step)


def _neggrad(net, d, hp, seeds, m, on_step):
    train_steps(net, net.params, d.x_f, d.y_f, seeds, hp["epochs"], hp["batch_size"], hp["lr"],
                on_step=on_step, loss=lambda out, idx: -_ce(out, _labels_at(d.y_f, idx)))


def _neggrad_plus(net, d, hp, seeds, m, on_step):
    # one step: a retained batch and the next forgotten one (the forgotten images cycled)
    forget_batches = _endless(_spawn(seeds, 1), len(d.y_f), hp["batch_size"], d.x.device)
    a = hp["alpha"]

    def loss(out, idx):
        fidx = next(forget_batches)
        out_f = net(rows(d.x_f, fidx)).float()
        return a * _ce(out, _labels_at(d.y_r, idx)) - (1 - a) * _ce(out_f, _labels_at(d.y_f, fidx))

    train_steps(net, net.params, d.x_r, d.y_r, seeds, hp["epochs"], hp["batch_size"], hp["lr"],
                on_step=on_step, loss=loss)


def random_labels(d: _Data, seeds: Sequence[int]) -> torch.Tensor:
    """Per model (M, N): y with each forgotten image's label drawn uniformly among the retained
    classes, from the model's own seed."""
    labels = d.y.repeat(len(seeds), 1)
    n = int(d.is_forget.sum())
    kept = d.kept.cpu().numpy()
    for j, s in enumerate(_spawn(seeds, 2)):
        drawn = np.random.default_rng(s).choice(kept, n)
        labels[j, d.is_forget] = torch.from_numpy(drawn).to(labels.device)
    return labels


def _rl(net, d, hp, seeds, m, on_step):
    labels = random_labels(d, seeds)
    train_steps(net, net.params, d.x, d.y, seeds, hp["epochs"], hp["batch_size"], hp["lr"],
                on_step=on_step, loss=lambda out, idx: _ce(out, _labels_at(labels, idx)))


def nearest_wrong_labels(net: _Batch, d: _Data, bound: float, m: int) -> torch.Tensor:
    """Boundary Shrink's labels (M, N_f): per model and forgotten image, the class the model
    predicts for the image moved by one FGSM step of size `bound` (the sign of the input gradient
    of its cross-entropy, kept in [0, 1]), the forgotten classes left out (the nearest wrong
    class; FGSM alone can leave the true one on top)."""
    out = []
    for i in range(0, len(d.y_f), EVAL_BATCH):
        x, y = d.x_f[i:i + EVAL_BATCH], d.y_f[i:i + EVAL_BATCH]
        xb = x.expand(m, *x.shape).clone().requires_grad_(True)
        logits = net(xb).float()
        # the sum of per-image losses: image b of model j moves by the sign of its own gradient
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(m), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        with torch.no_grad():
            adv = net((xb + bound * grad.sign()).clamp(0, 1)).float()
            adv[..., list(d.forget)] = float("-inf")
            out.append(adv.argmax(-1))
    return torch.cat(out, 1)


def _boundary_shrink(net, d, hp, seeds, m, on_step):
    net.module.eval()  # the original model, as it answers queries
    labels = nearest_wrong_labels(net, d, hp["bound"], m)
    net.module.train()
    train_steps(net, net.params, d.x_f, d.y_f, seeds, hp["epochs"], hp["batch_size"], hp["lr"],
                on_step=on_step, loss=lambda out, idx: _ce(out, _labels_at(labels, idx)))


def _scrub(net, d, hp, seeds, m, on_step):
    net.module.eval()  # the teacher: the original model in inference mode
    teacher_r, teacher_f = _logits(net, d.x_r, m), _logits(net, d.x_f, m)
    net.module.train()
    t, gamma, alpha = hp["temperature"], hp["gamma"], hp["alpha"]
    opt = None
    for epoch in range(hp["epochs"]):  # the same optimiser throughout, as theirs
        if epoch < hp["max_epochs"]:
            opt = train_steps(net, net.params, d.x_f, d.y_f, _spawn(seeds, 3, epoch), 1,
                              hp["forget_batch_size"], hp["lr"], on_step=on_step, opt=opt,
                              loss=lambda out, idx: -_kl(out, _logits_at(teacher_f, idx), t))
        opt = train_steps(net, net.params, d.x_r, d.y_r, _spawn(seeds, 4, epoch), 1, hp["batch_size"],
                          hp["lr"], on_step=on_step, opt=opt,
                          loss=lambda out, idx: (gamma * _ce(out, _labels_at(d.y_r, idx))
                                                 + alpha * _kl(out, _logits_at(teacher_r, idx), t)))


def importances(net: _Batch, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int,
                m: int, on_step=None) -> list[torch.Tensor]:
    """SSD's importance of every parameter (in net.params' layout): the mean over mini-batches
    of x's rows in `order` of the squared gradient of each model's mean cross-entropy."""
    total = [torch.zeros_like(p) for p in net.params]
    batches = range(0, len(order), batch_size)
    for start in batches:
        idx = order[start:start + batch_size]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        loss = _ce(net(xb.expand(m, *xb.shape)).float(), yb.expand(m, -1)).sum()
        for acc, g in zip(total, torch.autograd.grad(loss, net.params)):
            acc.add_(g.square())
        if on_step is not None:
            on_step(m * len(idx))
    return [acc / len(batches) for acc in total]


def _ssd(net, d, hp, seeds, m, on_step):
    net.module.eval()  # as their code
    # their loaders' order: the retained classes one after another, then the forgotten images
    full = importances(net, d.x, d.y, torch.argsort(d.y + d.is_forget * d.k, stable=True),
                       hp["batch_size"], m, on_step)
    forget = importances(net, d.x_f, d.y_f, torch.argsort(d.y_f, stable=True), hp["batch_size"], m, on_step)
    with torch.no_grad():
        for p, o, f in zip(net.params, full, forget):
            chosen = f > hp["alpha"] * o
            p[chosen] *= (hp["lam"] * o[chosen] / f[chosen]).clamp(max=1)


_RUN = {"ft": _ft, "neggrad": _neggrad, "neggrad+": _neggrad_plus, "rl": _rl,
        "boundary_shrink": _boundary_shrink, "scrub": _scrub, "ssd": _ssd}


def _check_models(models: Any) -> tuple[list[nn.Module], int, torch.device]:
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or not models:
        raise LinfiltError("models must be a non-empty list of trained models")
    heads = [getattr(m, "head", None) for m in models]
    if not all(isinstance(m, nn.Module) for m in models) or not all(isinstance(h, nn.Linear) for h in heads):
        raise LinfiltError("every model must be an nn.Module with an nn.Linear `head` "
                           "(the architectures of linfilt.paper.models)")
    if len({type(m) for m in models}) > 1 or len({h.out_features for h in heads}) > 1:
        raise LinfiltError("the models must share one architecture and number of outputs")
    devices = {p.device for m in models for p in m.parameters()}
    if len(devices) > 1:
        raise LinfiltError(f"the models lie on several devices {sorted(map(str, devices))}; move them to one")
    return list(models), heads[0].out_features, devices.pop()


def drop_forgotten(model: nn.Module, forget: tuple[int, ...]) -> nn.Module:
    """The model (changed in place) with the head's forgotten rows dropped, the retained rows in
    class order, in eval mode."""
    head = model.head
    kept = torch.as_tensor(retained_classes(head.out_features, forget), device=head.weight.device)
    new = nn.Linear(head.in_features, len(kept), device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(head.weight[kept])
        new.bias.copy_(head.bias[kept])
    model.head = new
    return model.eval()


def unlearn_models(method: str, models: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                   forget: tuple[int, ...], seeds: Sequence[int], *, strategy: str = "grouped",
                   settings: Mapping[str, Any] | None = None,
                   on_step: Callable[[int], None] | None = None,
                   keep_outputs: bool = False) -> list[nn.Module]:
    """Unlearn the classes `forget` from each of `models` with `method` (one of METHODS).

    models: trained models of one architecture (each with a `head` nn.Linear of k outputs), on one
    device; they are not changed. x, y: the training set (float images, labels 0..k-1), that is the
    retained data (y not in forget) and the forgotten data. seeds[j]: model j's seed (its data
    orders, its random labels). strategy: "grouped" or "vmap" (all models at once) or "loop" (one
    at a time). settings: overrides of settings.UNLEARNING[method]. on_step(n) reports progress:
    n images (summed over the models) per optimiser step or importance batch.
    Returns new models in eval mode whose heads have k - |forget| outputs, the retained classes
    in ascending order (all k outputs with `keep_outputs`, to see where forgotten images go).
    """
    hp = check_settings(method, settings)
    keep_outputs = check_bool(keep_outputs, "keep_outputs")
    models, k, device = _check_models(models)
    forget = check_forget(k, forget)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != len(models):
        raise LinfiltError(f"seeds must list one seed per model ({len(models)}), got {reprlib.repr(seeds)}")
    seeds = [check_int(s, f"seeds[{j}]", minimum=0) for j, s in enumerate(seeds)]
    if strategy not in STRATEGIES:
        raise LinfiltError(f"strategy must be one of {STRATEGIES}, not {reprlib.repr(strategy)}")
    x, y = as_tensors(x, y, device)
    check_labels(y, k)
    data = _Data(x, y, forget, k)
    if len(data.y_f) == 0 or len(data.y_r) == 0:
        raise LinfiltError(f"the training data must hold images of the forgotten classes {list(forget)} "
                           f"and of the retained ones; it has {len(data.y_f)} and {len(data.y_r)}")
    groups = [[j] for j in range(len(models))] if strategy == "loop" else [list(range(len(models)))]
    out: list[nn.Module] = []
    for group in groups:
        net = _Batch([models[j] for j in group], strategy, device.type == "cuda")
        net.module.train()
        _RUN[method](net, data, hp, [seeds[j] for j in group], len(group), on_step)
        out += net.results()
    return [m.eval() if keep_outputs else drop_forgotten(m, forget) for m in out]
