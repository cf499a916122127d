"""M models of one architecture as one batched module.

Two ways to batch, both built from M ordinary models and both giving each model back as an
ordinary state dict:

- `GroupedEnsemble`: every layer replaced by its batched twin. Convolutions become one grouped
  convolution over M*C channels, Linear layers one batched matmul, and BatchNorm a BatchNorm
  over M*C channels, which is exactly M independent BatchNorms with per-model running stats.
- `VmapEnsemble`: `torch.func.vmap` of `functional_call` over stacked parameters and buffers.

Both take x of shape (M, B, ...) (model j sees x[j]) and return logits (M, B, k).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from linfilt.paper.models import GlobalMaxPool, TFSamePad2d

# Layers that act per channel (or elementwise) and so work unchanged on M*C stacked channels.
_PASS_THROUGH = (nn.ReLU, nn.Sigmoid, nn.MaxPool2d, TFSamePad2d)


def _to_grouped_layout(x: torch.Tensor) -> torch.Tensor:
    """(M, B, C, H, W) -> (B, M*C, H, W): model j's images in channels j*C..(j+1)*C."""
    m, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, m * c, h, w)


class EnsembleLinear(nn.Module):
    """M Linear layers as one batched matmul on (M, B, in).

    The weights are kept as (M, in, out), the layout the matmul reads, so that the weight gradient
    comes out of the batched matmul contiguous (no transposed copy per step).
    """

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.stack([l.weight.detach().t() for l in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([l.bias.detach() for l in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight_t)

    def unstack(self, j: int) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_t[j].t(), "bias": self.bias[j]}


class EnsembleConv2d(nn.Module):
    """M Conv2d layers as one grouped convolution on (B, M*C, H, W)."""

    def __init__(self, layers: list[nn.Conv2d]) -> None:
        super().__init__()
        ref = layers[0]
        if ref.padding_mode != "zeros":
            raise NotImplementedError("ensemble convolutions need zero padding")
        self.m = len(layers)
        self.stride, self.padding, self.dilation = ref.stride, ref.padding, ref.dilation
        self.groups = ref.groups * self.m
        self.weight = nn.Parameter(torch.cat([l.weight.detach() for l in layers]))
        self.bias = (None if ref.bias is None
                     else nn.Parameter(torch.cat([l.bias.detach() for l in layers])))
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = _to_grouped_layout(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def unstack(self, j: int) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight.chunk(self.m)[j]}
        if self.bias is not None:
            out["bias"] = self.bias.chunk(self.m)[j]
        return out


class EnsembleBatchNorm2d(nn.BatchNorm2d):
    """M BatchNorm2d layers as one over M*C channels: statistics stay per model and channel."""

    def __init__(self, layers: list[nn.BatchNorm2d]) -> None:
        ref = layers[0]
        super().__init__(ref.num_features * len(layers), ref.eps, ref.momentum, ref.affine,
                         ref.track_running_stats)
        self.m = len(layers)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self, name).copy_(torch.cat([getattr(l, name) for l in layers]))
            self.num_batches_tracked.copy_(ref.num_batches_tracked)

    def unstack(self, j: int) -> dict[str, torch.Tensor]:
        out = {n: getattr(self, n).chunk(self.m)[j]
               for n in ("weight", "bias", "running_mean", "running_var")}
        out["num_batches_tracked"] = self.num_batches_tracked
        return out


class EnsembleFlatten(nn.Module):
    """(M, B, ...) or grouped (B, M*C, H, W) -> (M, B, features), features in each model's order."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # grouped layout from a convolution
            b = x.shape[0]
            return x.reshape(b, self.m, -1).transpose(0, 1)
        return x.flatten(2)


class EnsembleGlobalMaxPool(nn.Module):
    """(B, M*C, H, W) -> (M, B, C)."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return x.amax(dim=(2, 3)).reshape(b, self.m, -1).transpose(0, 1)


def _batched_twin(layers: list[nn.Module]) -> nn.Module:
    ref, m = layers[0], len(layers)
    if isinstance(ref, nn.Linear):
        return EnsembleLinear(layers)
    if isinstance(ref, nn.Conv2d):
        return EnsembleConv2d(layers)
    if isinstance(ref, nn.BatchNorm2d):
        return EnsembleBatchNorm2d(layers)
    if isinstance(ref, nn.Flatten):
        return EnsembleFlatten(m)
    if isinstance(ref, GlobalMaxPool):
        return EnsembleGlobalMaxPool(m)
    if isinstance(ref, _PASS_THROUGH):
        return copy.deepcopy(ref)
    raise NotImplementedError(f"no batched version of layer {type(ref).__name__}")


def _leaves(model: nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if name and not list(mod.children())]


class GroupedEnsemble(nn.Module):
    """M models with the structure of `models[0]`, every leaf layer swapped for its batched twin.

    The wrapped module keeps the original attribute names (`body`, `head`, ...), so state-dict keys
    and `ensemble.net.head` mean the same as in one model.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.m = len(models)
        self.net = copy.deepcopy(models[0])
        for name in _leaves(models[0]):
            twin = _batched_twin([m.get_submodule(name) for m in models])
            parent, _, attr = name.rpartition(".")
            setattr(self.net.get_submodule(parent) if parent else self.net, attr, twin)

    def set_channels_last(self, on: bool) -> None:
        """NHWC activations and weights for the convolutions (the fast layout for GPU kernels)."""
        fmt = torch.channels_last if on else torch.contiguous_format
        for mod in self.net.modules():
            if isinstance(mod, EnsembleConv2d):
                mod.channels_last = on
                mod.weight.data = mod.weight.data.contiguous(memory_format=fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Model j's state dict, keyed as in an ordinary model."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.m)]
        for name, mod in self.net.named_modules():
            if hasattr(mod, "unstack"):
                for j in range(self.m):
                    for key, t in mod.unstack(j).items():
                        out[j][f"{name}.{key}"] = t.detach().contiguous().clone()
        return out


class VmapEnsemble(nn.Module):
    """M models as `vmap(functional_call)` over stacked parameters and buffers."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.m = len(models)
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n].detach().clone())
        self.net = copy.deepcopy(models[0]).to("meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.names, self.stacked))
        buffers = {n: getattr(self, f"buffer{i}") for i, n in enumerate(self.buffer_names)}

        def one(p, b, xj):
            return functional_call(self.net, (p, b), (xj,))

        return vmap(one)(params, buffers, x)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        out = []
        for j in range(self.m):
            sd = {n: p[j].detach().clone() for n, p in zip(self.names, self.stacked)}
            for i, n in enumerate(self.buffer_names):
                sd[n] = getattr(self, f"buffer{i}")[j].clone()
            out.append(sd)
        return out
