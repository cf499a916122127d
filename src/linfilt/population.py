"""Populations of models: M models of one architecture trained with the paper's recipe, kept as
their test-set logits (M, n_test, classes).

Three populations per configuration: *seen* (all k classes), *notseen* (trained without the
forgotten classes C, k - |C| outputs) and *transfer* (a seen model's layers frozen, a new head
with k - |C| outputs trained without C). Model j of a population depends only on (config seed,
population, j), so it is the same model whether trained alone, in a chunk of 10 or of 100, and
whichever strategy batches the training (up to float rounding between strategies).

Storage, under `<out>/<experiment>/<config hash>/`:
    config.json                          the full config the hash is made of
    test_labels.npy                      int64 (n_test,)
    chunks/<population>/<a>-<b>.npy      float32 logits of models a..b-1, one file per finished chunk
    logits/<population>.npy              float32 (M, n_test, classes), assembled when all are done
    models/<population>/<j>.safetensors  model j (only with save_models)
A killed run resumes at the first unfinished chunk; a changed setting changes the hash.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt.atomic import save_npy, write_json
from linfilt.ensemble import GroupedEnsemble, VmapEnsemble
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.filtration import check_forget, retained_classes
from linfilt.models import build, initialize
from linfilt.training import (PRECISIONS, as_tensors, check_device, check_labels, fit,
                              predict_logits, train_steps)

__all__ = ["fit", "predict_logits", "PopulationConfig", "PROTOCOL", "POPULATIONS", "STRATEGIES",
           "model_seeds", "init_model", "train_models", "run_dir", "train_populations",
           "train_population"]

POPULATIONS = ("seen", "notseen", "transfer")
STRATEGIES = ("loop", "grouped", "vmap")
# Bump when a change to the engine changes what a config trains: old results then stop matching.
ENGINE_VERSION = 1

# The authors' setup per data set (PROTOCOL.md): architecture, its settings, epochs, batch size.
PROTOCOL: dict[str, dict[str, Any]] = {
    "mnist": {"arch": "mlp", "arch_kwargs": {"in_features": 784, "hidden": [50]}, "epochs": 6,
              "batch_size": 32},
    "cifar10": {"arch": "cifar_cnn", "arch_kwargs": {"p": 256}, "epochs": 6, "batch_size": 32},
    "att_faces": {"arch": "att_resnet", "arch_kwargs": {}, "epochs": 15, "batch_size": 8},
    # Not in the paper: the smallest real data set, for quick runs.
    "digits": {"arch": "mlp", "arch_kwargs": {"in_features": 64, "hidden": [32]}, "epochs": 10,
               "batch_size": 32},
}

# The fastest strategy per device type and architecture, as measured by benchmarks/population.py
# (2 CPU cores: the batched MLP beats the loop several times over; batched convolutions do not).
FASTEST: dict[str, dict[str, str]] = {
    "cpu": {"mlp": "grouped", "cifar_cnn": "loop", "att_resnet": "loop"},
    "cuda": {"mlp": "grouped", "cifar_cnn": "grouped", "att_resnet": "grouped"},
}

# Test images per forward pass when computing logits.
EVAL_BATCH = 1000


@dataclass(frozen=True)
class PopulationConfig:
    """Everything that changes a population's numbers; its hash keys the stored results."""

    dataset: str
    arch: str
    arch_kwargs: dict[str, Any]
    forget: tuple[int, ...]
    models: int = 100
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    strategy: str = "auto"
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form tags (e.g. a replicate name)

    @classmethod
    def protocol(cls, dataset: str, forget: int | Iterable[int], **overrides: Any) -> PopulationConfig:
        """The paper's settings for `dataset`, with `overrides` (e.g. models=10, arch_kwargs={"p": 64})."""
        if dataset not in PROTOCOL:
            raise LinfiltError(f"no protocol for data set {dataset!r}; known: {sorted(PROTOCOL)}")
        settings = copy.deepcopy(PROTOCOL[dataset])
        settings["arch_kwargs"].update(overrides.pop("arch_kwargs", {}))
        settings.update(overrides)
        forget = (forget,) if isinstance(forget, (int, np.integer)) else tuple(forget)
        return cls(dataset=dataset, forget=forget, **settings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "forget", tuple(sorted(int(c) for c in self.forget)))
        object.__setattr__(self, "arch_kwargs", json.loads(json.dumps(self.arch_kwargs)))
        if self.models < 1 or self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise LinfiltError(f"models, epochs, batch_size and lr must be positive: {self}")
        if self.strategy not in ("auto",) + STRATEGIES:
            raise LinfiltError(f"strategy must be 'auto' or one of {STRATEGIES}, not {self.strategy!r}")
        if self.precision not in PRECISIONS:
            raise LinfiltError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise LinfiltError(f"bad device {self.device!r}: {exc}") from None
        if device.type not in FASTEST:
            raise LinfiltError(f"device must be a CPU or CUDA device, not {self.device!r}")
        if self.strategy == "auto":
            chosen = FASTEST[device.type].get(self.arch, "loop")
            object.__setattr__(self, "strategy", chosen)

    def key(self) -> dict[str, Any]:
        """What the hash is made of: every field but `models`, the device by type only, the engine
        version. Model j does not depend on the population size, so a population grown from 20 to
        100 models reuses its first 20 (and a smaller request reads a prefix)."""
        key = dataclasses.asdict(self)
        del key["models"]
        key["device"] = torch.device(self.device).type
        key["engine"] = ENGINE_VERSION
        return key

    def digest(self) -> str:
        text = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(cfg: PopulationConfig, out: str | Path = "runs", experiment: str = "populations") -> Path:
    return Path(out) / experiment / cfg.digest()


def model_seeds(seed: int, population: str, j: int) -> tuple[int, int]:
    """(initialisation seed, data-order seed) of model j: from (seed, population, j) only."""
    a, b = np.random.SeedSequence(entropy=seed, spawn_key=(POPULATIONS.index(population), j)
                                  ).generate_state(2)
    return int(a), int(b)


def init_model(arch: str, arch_kwargs: dict[str, Any], num_classes: int, init_seed: int) -> nn.Module:
    """A model initialised from `init_seed` alone."""
    model = build(arch, num_classes, **copy.deepcopy(arch_kwargs))
    return initialize(model, torch.Generator().manual_seed(init_seed))


def _mode(net: nn.Module, frozen_body: bool) -> None:
    # A frozen body runs in inference mode (BatchNorm uses its running stats), as in Keras.
    net.train()
    if frozen_body:
        inner = net.net if isinstance(net, (GroupedEnsemble, VmapEnsemble)) else net
        inner.body.eval()


def _trainable(net: nn.Module, frozen_body: bool) -> list[torch.Tensor]:
    if isinstance(net, VmapEnsemble):
        named = list(zip(net.names, net.stacked))
    elif isinstance(net, GroupedEnsemble):
        named = [(n.removeprefix("net."), p) for n, p in net.named_parameters()]
    else:
        named = list(net.named_parameters())
    params = []
    for name, p in named:
        p.requires_grad_(not (frozen_body and not name.startswith("head.")))
        if p.requires_grad:
            params.append(p)
    return params


def train_models(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, order_seeds: Sequence[int],
                 epochs: int, batch_size: int, lr: float = 1e-3, strategy: str = "loop",
                 precision: str = "fp32", frozen_body: bool = False,
                 on_step=None) -> list[nn.Module]:
    """Train `models` (same architecture, on x's device) in place, model j in the order of
    `order_seeds[j]`, with the given batching strategy. With `frozen_body` only each `head` learns
    and the body stays in inference mode. Returns the models in eval mode."""
    if strategy == "loop":
        for model, seed in zip(models, order_seeds):
            _mode(model, frozen_body)
            train_steps(lambda xb, m=model: m(xb[0]).unsqueeze(0), _trainable(model, frozen_body),
                        x, y, [seed], epochs, batch_size, lr, precision, on_step)
            model.requires_grad_(True).eval()
        return models
    if strategy not in STRATEGIES:
        raise LinfiltError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    ensemble = (GroupedEnsemble if strategy == "grouped" else VmapEnsemble)(models)
    if strategy == "grouped" and x.is_cuda:
        ensemble.set_channels_last(True)
    _mode(ensemble, frozen_body)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = x.is_cuda  # grouped convolutions: let cuDNN time its kernels
    try:
        train_steps(ensemble, _trainable(ensemble, frozen_body), x, y, order_seeds, epochs,
                    batch_size, lr, precision, on_step)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    for model, state in zip(models, ensemble.state_dicts()):
        model.load_state_dict(state)
        model.eval()  # the models' own parameters never had requires_grad turned off
    return models


class _Data:
    """A data set as float tensors on the training device, with the retained-class subset."""

    def __init__(self, dataset: Any, forget: tuple[int, ...], device: str) -> None:
        from linfilt.data import to_float

        self.classes = [str(c) for c in dataset.classes]
        k = len(self.classes)
        self.forget = check_forget(k, forget)
        self.kept = retained_classes(k, self.forget)
        self.x, self.y = as_tensors(to_float(dataset.x_train), dataset.y_train, device)
        self.x_test = torch.as_tensor(to_float(dataset.x_test))
        self.y_test = np.asarray(dataset.y_test, dtype=np.int64)
        check_labels(self.y, k)

    @functools.cached_property
    def kept_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images of the retained classes, labelled 0..k-|C|-1 in `kept` order."""
        new_label = torch.full((len(self.classes),), -1, dtype=torch.int64, device=self.y.device)
        new_label[torch.as_tensor(self.kept, device=self.y.device)] = torch.arange(
            len(self.kept), device=self.y.device)
        keep = new_label[self.y] >= 0
        return self.x[keep], new_label[self.y[keep]]


def _ranges(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted indices as maximal runs [a, b)."""
    runs: list[tuple[int, int]] = []
    for j in sorted(indices):
        if runs and runs[-1][1] == j:
            runs[-1] = (runs[-1][0], j + 1)
        else:
            runs.append((j, j + 1))
    return runs


_CHUNK = re.compile(r"(\d+)-(\d+)\.npy")


class _Store:
    """The files of one config's run folder."""

    def __init__(self, root: Path, cfg: PopulationConfig, shape: dict[str, tuple[int, int]]) -> None:
        self.root, self.cfg, self.shape = root, cfg, shape

    def chunks(self, population: str) -> dict[tuple[int, int], Path]:
        folder = self.root / "chunks" / population
        found = {}
        for path in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
            match = _CHUNK.fullmatch(path.name)
            if match:
                found[(int(match[1]), int(match[2]))] = path
        return found

    def done(self, population: str) -> set[int]:
        """Finished models among the first `models` (a larger earlier run may have more)."""
        return {j for a, b in self.chunks(population) for j in range(a, min(b, self.cfg.models))}

    def write_chunk(self, population: str, a: int, logits: np.ndarray) -> None:
        b = a + len(logits)
        save_npy(self.root / "chunks" / population / f"{a:05d}-{b:05d}.npy", logits.astype(np.float32))

    def assemble(self, population: str) -> np.ndarray:
        n_test, k = self.shape[population]
        m = self.cfg.models
        chunks = {(a, b): path for (a, b), path in self.chunks(population).items() if a < m}
        covered = sorted(j for a, b in chunks for j in range(a, min(b, m)))
        if covered != list(range(m)):
            raise CorruptFileError(f"the chunk files in {self.root / 'chunks' / population} do not cover "
                                   f"models 0..{m - 1} once each; delete them and rerun")
        out = np.empty((m, n_test, k), np.float32)
        for (a, b), path in sorted(chunks.items()):
            part = self._load(path, (b - a, n_test, k))
            out[a:min(b, m)] = part[:m - a]
        save_npy(self.final_path(population), out)
        return out

    def final_path(self, population: str) -> Path:
        return self.root / "logits" / f"{population}.npy"

    def final(self, population: str) -> np.ndarray | None:
        """The assembled logits of the first `models` models, or None while they are not assembled
        (a final file of fewer models is superseded once the population has grown)."""
        if not self.assembled(population):
            return None
        path = self.final_path(population)
        arr = self._load(path, (self._models_in(path),) + self.shape[population])
        return arr[:self.cfg.models].copy() if len(arr) > self.cfg.models else arr

    def assembled(self, population: str) -> bool:
        path = self.final_path(population)
        return path.is_file() and self._models_in(path) >= self.cfg.models

    @staticmethod
    def _models_in(path: Path) -> int:
        try:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        except (ValueError, OSError, EOFError, IndexError) as exc:
            raise CorruptFileError(f"{path} is unreadable ({exc}); delete it and rerun") from None

    @staticmethod
    def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptFileError(f"{path} is unreadable ({exc}); delete it and rerun") from None
        if arr.shape != shape or arr.dtype != np.float32:
            raise CorruptFileError(f"{path} holds {arr.dtype} {arr.shape}, expected float32 {shape}; "
                                   "delete it and rerun")
        return arr

    def model_path(self, population: str, j: int) -> Path:
        return self.root / "models" / population / f"{j:05d}.safetensors"


class _Bar:
    """A population's tqdm bar: models done (fractional while a chunk trains), images/s, ETA."""

    def __init__(self, population: str, total: int, done: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, initial=done, desc=population, disable=not enabled,
                        mininterval=0.5, smoothing=0.1,
                        bar_format="{desc}: {n:.1f}/{total} models |{bar}| {elapsed}<{remaining}{postfix}")
        self.images, self.start = 0, time.perf_counter()

    def step(self, images: int, models: float) -> None:
        self.images += images
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} img/s", refresh=False)
        self.bar.update(models)

    def done(self, models: int) -> None:
        """Snap to the exact count once a chunk is stored (float steps do not add up exactly)."""
        self.bar.n = models
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _Runner:
    """Trains the missing chunks of the requested populations of one config."""

    def __init__(self, cfg: PopulationConfig, data: _Data, store: _Store, save_models: bool,
                 progress: bool) -> None:
        self.cfg, self.data, self.store = cfg, data, store
        self.save_models, self.progress = save_models, progress
        self.bars: dict[str, _Bar] = {}

    def bar(self, population: str) -> _Bar:
        if population not in self.bars:
            done = len(self.store.done(population))
            self.bars[population] = _Bar(population, self.cfg.models, done, self.progress)
        return self.bars[population]

    def _train(self, population: str, indices: list[int], bodies: list[nn.Module] | None = None
               ) -> list[nn.Module]:
        cfg, d = self.cfg, self.data
        seeds = [model_seeds(cfg.seed, population, j) for j in indices]
        k = len(d.classes) if population == "seen" else len(d.kept)
        models = [init_model(cfg.arch, cfg.arch_kwargs, k, s[0]) for s in seeds]
        if bodies is not None:  # transfer: the seen model with this new head
            for model, body in zip(models, bodies):
                model.body = copy.deepcopy(body.body)
        x, y = (d.x, d.y) if population == "seen" else d.kept_data
        models = [m.to(x.device) for m in models]
        bar = self.bar(population)
        total_images = len(indices) * cfg.epochs * len(y)
        train_models(models, x, y, [s[1] for s in seeds], cfg.epochs, cfg.batch_size, cfg.lr,
                     cfg.strategy, cfg.precision, frozen_body=bodies is not None,
                     on_step=lambda n: bar.step(n, n * len(indices) / total_images))
        return models

    def _finish(self, population: str, indices: list[int], models: list[nn.Module]) -> None:
        """Save the models (if asked), then the logits: a chunk file means the chunk is done."""
        from linfilt.modelio import ModelSpec, save_model

        d = self.data
        ids = range(len(d.classes)) if population == "seen" else d.kept
        spec = ModelSpec(self.cfg.arch, self.cfg.arch_kwargs, tuple(int(i) for i in ids),
                         tuple(d.classes[i] for i in ids))
        if self.save_models:
            for j, model in zip(indices, models):
                save_model(self.store.model_path(population, j), model, spec)
        logits = np.stack([predict_logits(m, d.x_test, self.cfg.device, EVAL_BATCH) for m in models])
        pos = {j: i for i, j in enumerate(indices)}
        for a, b in _ranges(indices):
            self.store.write_chunk(population, a, logits[pos[a]:pos[a] + b - a])
        if population in self.bars:
            self.bars[population].done(len(self.store.done(population)))

    def _seen_models(self, indices: list[int], cache: dict[int, nn.Module]) -> list[nn.Module]:
        """Seen models j: in memory, saved, or retrained from their seeds (and then stored)."""
        from linfilt.modelio import load_model

        missing = [j for j in indices if j not in cache]
        saved = [j for j in missing if self.store.model_path("seen", j).is_file()]
        for j in saved:
            cache[j] = load_model(self.store.model_path("seen", j))[0].to(self.data.x.device)
        retrain = [j for j in missing if j not in cache]
        if retrain:
            models = self._train("seen", retrain)
            cache.update(zip(retrain, models))
            todo = [j for j in retrain if j not in self.store.done("seen")]
            if todo:
                self._finish("seen", todo, [cache[j] for j in todo])
        return [cache[j] for j in indices]

    def run(self, populations: Sequence[str], chunk_size: int) -> None:
        for a in range(0, self.cfg.models, chunk_size):
            chunk = range(a, min(a + chunk_size, self.cfg.models))
            seen_cache: dict[int, nn.Module] = {}
            for population in populations:
                if self.store.assembled(population):
                    continue
                todo = [j for j in chunk if j not in self.store.done(population)]
                if not todo:
                    continue
                if population == "transfer":
                    bodies = self._seen_models(todo, seen_cache)
                    models = self._train(population, todo, bodies)
                else:
                    models = self._train(population, todo)
                    if population == "seen":
                        seen_cache.update(zip(todo, models))
                self._finish(population, todo, models)
        for bar in self.bars.values():
            bar.close()


def _load_dataset(name: str) -> Any:
    from linfilt.data import load

    return load(name)


def train_populations(cfg: PopulationConfig, populations: Sequence[str] = ("seen",), data: Any = None,
                      out: str | Path = "runs", experiment: str = "populations",
                      chunk_size: int | None = None, save_models: bool = False,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """Train (or resume, or just load) the populations of `cfg`; their test logits, float32
    (M, n_test, classes), by population name.

    `data` is a `linfilt.data.load` result (loaded from `cfg.dataset` when None). Finished chunks
    are kept: a rerun after a kill resumes at the first unfinished chunk. `chunk_size` (default 1
    for the loop strategy, else 100) sets how many models train at once, not what they become
    (beyond float rounding: the batched kernels may round differently for another chunk size).
    """
    unknown = [p for p in populations if p not in POPULATIONS]
    if unknown or not populations:
        raise LinfiltError(f"populations must be among {POPULATIONS}, got {list(populations)}")
    populations = [p for p in POPULATIONS if p in populations]
    if chunk_size is None:  # the loop trains one model at a time anyway: keep each at once
        chunk_size = 1 if cfg.strategy == "loop" else 100
    if chunk_size < 1:
        raise LinfiltError(f"chunk_size must be positive, not {chunk_size}")
    check_device(cfg.device)
    if data is None:
        data = _load_dataset(cfg.dataset)
    d = _Data(data, cfg.forget, cfg.device)
    root = run_dir(cfg, out, experiment)
    k = len(d.classes)
    shape = {"seen": (len(d.y_test), k), "notseen": (len(d.y_test), len(d.kept)),
             "transfer": (len(d.y_test), len(d.kept))}
    store = _Store(root, cfg, shape)
    config = {**cfg.key(), "classes": d.classes, "n_train": len(d.y), "n_test": len(d.y_test)}
    config_path = root / "config.json"
    if config_path.is_file():
        if json.loads(config_path.read_text()) != json.loads(json.dumps(config)):
            raise CorruptFileError(f"{config_path} does not match this config (another data set under "
                                   "the same name?); move the folder away and rerun")
    else:
        write_json(config_path, config)
    if not (root / "test_labels.npy").is_file():
        save_npy(root / "test_labels.npy", d.y_test)
    _Runner(cfg, d, store, save_models, progress).run(populations, chunk_size)
    out_logits = {}
    for population in populations:
        final = store.final(population)
        out_logits[population] = final if final is not None else store.assemble(population)
    return out_logits


def train_population(cfg: PopulationConfig, population: str = "seen", **kwargs: Any) -> np.ndarray:
    """One population's test logits (M, n_test, classes); see `train_populations`."""
    return train_populations(cfg, (population,), **kwargs)[population]
