"""The paper's architectures as ordinary PyTorch modules.

Every model takes float32 NCHW input in [0, 1] and ends in an `nn.Linear` named `head`, so that
`linfilt.unlearn` can filter it. Layer choices follow the authors' Keras setup where that changes
what is learnt: valid padding in the CIFAR-10 CNN, Glorot-uniform weights with zero biases, and
Keras' BatchNorm constants (momentum 0.99, i.e. PyTorch momentum 0.01, epsilon 1e-3).
"""
from __future__ import annotations

import inspect
import math
import reprlib
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from linfilt.errors import LinfiltError
from linfilt.paper.settings import BN_EPS, BN_MOMENTUM
from linfilt.validation import MAX_CLASS_ID, check_int, check_positive_int

# Bounds on settings: far beyond this project's images and models, they stop a typo or a tampered
# model file from asking for terabytes (or millions of layers) before anything is allocated.
MAX_SIZE = 2**24
MAX_LAYERS = 100

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def _size(value: Any, name: str) -> int:
    return check_positive_int(value, name, maximum=MAX_SIZE)


def _sizes(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise LinfiltError(f"{name} must be a list of integers, got {reprlib.repr(value)}")
    if len(value) > MAX_LAYERS:
        raise LinfiltError(f"{name} lists {len(value)} layers; at most {MAX_LAYERS} are supported")
    return tuple(_size(v, f"{name}[{i}]") for i, v in enumerate(value))


def _activation(value: Any, name: str) -> str:
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise LinfiltError(f"{name} must be one of {sorted(ACTIVATIONS)}, got {reprlib.repr(value)}")
    return value


# AttResNet variants: "ours" (the default, and what the stored results used) or "authors" (their
# Keras code: conv biases, TF "same" padding, a ReLU after the second BatchNorm of a block).
RESNET_VARIANTS = ("ours", "authors")


def _variant(value: Any, name: str) -> str:
    if not isinstance(value, str) or value not in RESNET_VARIANTS:
        raise LinfiltError(f"{name} must be one of {list(RESNET_VARIANTS)}, got {reprlib.repr(value)}")
    return value


class TFSamePad2d(nn.Module):
    """Zero padding as TensorFlow's padding="same" pads before a convolution (kernel, stride):
    the output has ceil(size / stride) rows and columns and an odd total padding puts its extra
    row / column at the bottom / right (PyTorch's symmetric padding=1 shifts a stride-2 grid by one
    pixel on even sizes). It acts per channel, with no parameters."""

    def __init__(self, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _pads(self, size: int) -> tuple[int, int]:
        total = max(self.kernel - (self.stride if size % self.stride == 0 else size % self.stride), 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        return F.pad(x, (left, right, top, bottom))


def _conv(cin: int, cout: int, kernel: int, stride: int, variant: str) -> nn.Module:
    """Ours: symmetric padding, no bias (BatchNorm follows). Authors': TF "same" padding, a bias."""
    if variant == "ours":
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(TFSamePad2d(kernel, stride), nn.Conv2d(cin, cout, kernel, stride=stride))


class GlobalMaxPool(nn.Module):
    """Max over the spatial dimensions: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class MLP(nn.Module):
    """Flatten -> Dense(h, activation) for each h in `hidden` -> Dense(num_classes)."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (50,),
                 activation: str = "relu") -> None:
        super().__init__()
        act = ACTIVATIONS[_activation(activation, "mlp activation")]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CifarCNN(nn.Module):
    """Conv(16,3x3,valid) -> pool -> Conv(32,3x3,valid) -> pool -> Dense(p) -> Dense(num_classes)."""

    def __init__(self, num_classes: int = 10, p: int = 256, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 6 * 6, p), nn.ReLU(),
        )
        self.head = nn.Linear(p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ResidualBlock(nn.Module):
    """Downsampling block: two 3x3 convs (the first strided) with BatchNorm; strided 3x3 conv shortcut.
    variant "authors" adds their ReLU after the second BatchNorm, before the sum (`relu_mid`)."""

    def __init__(self, cin: int, cout: int, variant: str = "ours") -> None:
        super().__init__()
        variant = _variant(variant, "att_resnet variant")  # a typo would mix the two networks
        self.conv1 = _conv(cin, cout, 3, 2, variant)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv(cout, cout, 3, 1, variant)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        # None in ours: no module, so the grouped ensemble and stored state dicts see no new layer
        self.relu_mid = nn.ReLU() if variant == "authors" else None
        self.short_conv = _conv(cin, cout, 3, 2, variant)
        self.short_bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.relu_mid is not None:
            y = self.relu_mid(y)
        return self.relu2(y + self.short_bn(self.short_conv(x)))


class AttResNet(nn.Module):
    """AT&T faces ResNet: Conv(8,5x5)+BN+ReLU, 5 blocks of 16..256 channels, global max pool, Dense.

    variant "ours" (the default): convolutions followed by BatchNorm have no bias (BatchNorm's
    shift replaces it). A bias there has zero gradient in exact arithmetic, so Adam would turn
    rounding noise into lr-sized steps of it, and the lagging running mean would carry that noise
    into the model's predictions. Padding is symmetric. variant "authors" builds the authors' Keras
    network instead: conv biases, TF "same" padding, the extra ReLU in each block.
    """

    def __init__(self, num_classes: int = 40, in_channels: int = 1,
                 widths: tuple[int, ...] = (16, 32, 64, 128, 256), variant: str = "ours") -> None:
        super().__init__()
        variant = _variant(variant, "att_resnet variant")
        layers: list[nn.Module] = [
            _conv(in_channels, 8, 5, 1, variant),
            nn.BatchNorm2d(8, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(),
        ]
        cin = 8
        for w in widths:
            layers.append(ResidualBlock(cin, w, variant))
            cin = w
        layers.append(GlobalMaxPool())
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cifar_cnn": CifarCNN,
    "att_resnet": AttResNet,
}

# The check of each keyword argument of each architecture; those without a default are required.
_SETTINGS: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "mlp": {"in_features": _size, "hidden": _sizes, "activation": _activation},
    "cifar_cnn": {"p": _size, "in_channels": _size},
    "att_resnet": {"in_channels": _size, "widths": _sizes, "variant": _variant},
}


def check_arch(arch: Any, num_classes: Any, arch_kwargs: Any) -> dict[str, Any]:
    """The validated settings of `build(arch, num_classes, **arch_kwargs)` (lists as tuples);
    LinfiltError names the first wrong one."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise LinfiltError(f"unknown architecture {reprlib.repr(arch)}; "
                           f"choose one of {sorted(ARCHITECTURES)}")
    check_int(num_classes, "num_classes", minimum=1, maximum=MAX_CLASS_ID + 1)
    if not isinstance(arch_kwargs, Mapping):
        raise LinfiltError(f"the settings of architecture {arch!r} must be a mapping, "
                           f"got {reprlib.repr(arch_kwargs)}")
    checks = _SETTINGS[arch]
    params = inspect.signature(ARCHITECTURES[arch]).parameters
    required = {n for n in checks if params[n].default is inspect.Parameter.empty}
    missing, unknown = sorted(required - set(arch_kwargs)), sorted(map(str, set(arch_kwargs) - set(checks)))
    if missing or unknown:
        wrong = ", ".join(([f"missing {missing}"] if missing else [])
                          + ([f"unknown {reprlib.repr(unknown)}"] if unknown else []))
        raise LinfiltError(f"bad settings for architecture {arch!r}: {wrong}; it takes {sorted(checks)}")
    return {k: checks[k](v, f"{arch} {k}") for k, v in arch_kwargs.items()}


def initialize(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Keras-style initialisation in place: Glorot-uniform weights, zero biases, BN (1, 0).

    With a `generator` the result depends on it alone (not on the global RNG), which is what makes
    a population's model j the same however it is trained.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                w = module.weight
                receptive = w[0][0].numel() if w.dim() > 2 else 1
                fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                w.uniform_(-limit, limit, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
    return model


def build(arch: str, num_classes: int, **arch_kwargs) -> nn.Module:
    """A freshly initialised model of architecture `arch` (a key of ARCHITECTURES); its settings
    are validated first (see check_arch)."""
    settings = check_arch(arch, num_classes, arch_kwargs)
    return initialize(ARCHITECTURES[arch](num_classes=num_classes, **settings))
