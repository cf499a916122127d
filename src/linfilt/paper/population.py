"""Populations of models: M models of one architecture trained with the paper's recipe, kept as
their test-set logits (M, n_test, classes).

Four populations per configuration: *seen* (all k classes), *notseen* (trained without the
forgotten classes C, k - |C| outputs), *transfer* (a seen model's layers frozen, a new head
with k - |C| outputs trained without C) and *dropin* (trained without C but with all k outputs,
the retained images keeping their original labels: the reference for a drop-in unlearned model,
`linfilt.unlearn(..., keep_outputs=True)`; a forgotten output is never a target, so its logit is
learnt low but finite). Model j of a population starts from (config seed, population, j) alone,
so it is the same model whichever strategy batches the training, up to float rounding.

That rounding depends on the chunk with a batched strategy: on a CPU, PyTorch's fused Adam runs
the elements of a stacked parameter that do not fill a last SIMD vector through scalar code that
rounds differently from its vector code, and which model's elements those are depends on how many
models share the tensor (on a GPU, cuBLAS picks its kernels by batch count). A few ulps grow over
the epochs into logits that differ by whole units, so with a batched strategy a model's numbers
depend on the chunk size. The chunk size is therefore part of the store's key for them (below); the loop
strategy trains one model at a time and its results do not depend on the chunking.

Storage, under `<out>/<experiment>/<config hash>/`:
    config.json                          the full config the hash is made of
    test_labels.npy                      int64 (n_test,)
    [chunk-<c>/]                         for a batched strategy run with a chunk size c other than
                                         100, everything below lives in this subfolder
    chunks/<population>/<a>-<b>.npy      float32 logits of models a..b-1, one file per finished chunk
    logits/<population>.npy              float32 (M, n_test, classes), assembled when all are done
    models/<population>/<j>.safetensors  model j (only with save_models)
    checkpoints/<population>/<a>-<b>.safetensors  a chunk's training state after its last epoch
Every array has a `<file>.sha256` JSON beside it (its checksum, shape and dtype), checked on every
read together with the shape, dtype and values (finite logits, no all-zero model, labels in range);
a file from before checksums existed is checked the same way and then gets its checksum. A killed
run resumes at its last finished epoch; a changed setting changes the hash.

Two backends train the missing chunks: this machine, one chunk after the other (`_Runner.run`), or
a Ray cluster, one task per chunk (`linfilt.paper.cluster`; no per-epoch checkpoints there, a
killed run resumes at its last stored chunk). Both train a chunk with `train_chunk` and store
what it gives through `_Runner.keep`, so the files do not depend on the backend.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import safetensors.torch
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt.atomic import write_json
from linfilt.errors import CorruptFileError, LinfiltError
from linfilt.filtration import check_forget, retained_classes
from linfilt.modelio import ModelSpec, load_model, save_model
from linfilt.paper import cluster
from linfilt.paper.arrays import REDO, load_array, read_checked, save_array, sidecar, write_checked
from linfilt.paper.data import load, to_float
from linfilt.paper.ensemble import GroupedEnsemble, VmapEnsemble
from linfilt.paper.models import build, check_arch, initialize
from linfilt.paper.settings import EVAL_BATCH, FASTEST, LR, MODELS, PROTOCOL
from linfilt.paper.training import (PRECISIONS, as_tensors, check_device, check_labels, fit,
                              optimizer_tensors, predict_logits, train_steps)
from linfilt.validation import check_class_ids, check_float, check_positive_int, check_seed

__all__ = ["fit", "predict_logits", "PopulationConfig", "PROTOCOL", "POPULATIONS", "STRATEGIES",
           "model_seeds", "init_model", "train_models", "run_dir", "results_dir", "train_populations",
           "train_population", "trained_models"]

# Model seeds come from a population's index here: a new population goes at the end.
POPULATIONS = ("seen", "notseen", "transfer", "dropin")
STRATEGIES = ("loop", "grouped", "vmap")
# Bump when a change to the engine changes what a config trains: old results then stop matching.
ENGINE_VERSION = 1

# Models trained at once by a batched strategy unless told otherwise; results computed with it
# keep the folder layout they had before the chunk size became part of the key.
DEFAULT_CHUNK = 100


@dataclass(frozen=True)
class PopulationConfig:
    """Everything that changes a population's numbers; its hash keys the stored results."""

    dataset: str
    arch: str
    arch_kwargs: dict[str, Any]
    forget: tuple[int, ...]
    models: int = MODELS
    epochs: int = 6
    batch_size: int = 32
    lr: float = LR
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
        object.__setattr__(self, "forget", check_class_ids(self.forget, "forget"))
        check_arch(self.arch, 2, self.arch_kwargs)  # refused here, not when the first model is built
        object.__setattr__(self, "arch_kwargs", json.loads(json.dumps(self.arch_kwargs)))
        for name in ("models", "epochs", "batch_size"):
            check_positive_int(getattr(self, name), name)
        check_float(self.lr, "lr", low=0, low_open=True)
        check_seed(self.seed, "seed")
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
        _check_precision(self.strategy, self.precision)

    def key(self) -> dict[str, Any]:
        """What the hash is made of: every field but `models`, the device by type only, the engine
        version. Model j does not depend on the population size, so a population grown from 20 to
        100 models reuses its first 20 (and a smaller request reads a prefix); with a batched
        strategy a partly done chunk is retrained whole, as a fresh run would train it."""
        key = dataclasses.asdict(self)
        del key["models"]
        key["device"] = torch.device(self.device).type
        key["engine"] = ENGINE_VERSION
        return key

    def digest(self) -> str:
        text = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_precision(strategy: str, precision: str) -> None:
    if strategy == "vmap" and precision == "bf16":
        # under torch.func.vmap, autocast leaves every layer's output float32 (PyTorch issue
        # #192617): the models would train in a mix of precisions that no other strategy matches
        raise LinfiltError("precision 'bf16' does not work with strategy 'vmap' (PyTorch's vmap "
                           "leaves autocast's outputs in float32); use strategy 'grouped' or 'loop'")


def check_experiment_name(experiment: Any, name: str = "experiment") -> str:
    """A plain folder name: "../x" or "a/b" would put the results outside `out`."""
    if not isinstance(experiment, str) or experiment in ("", ".", "..") or Path(experiment).name != experiment:
        raise LinfiltError(f"{name} {experiment!r} must be a plain folder name (no path separators, "
                           "not '.' or '..'): it names a subfolder of the results folder")
    return experiment


def run_dir(cfg: PopulationConfig, out: str | Path = "runs", experiment: str = "populations") -> Path:
    return Path(out) / check_experiment_name(experiment) / cfg.digest()


def default_chunk_size(cfg: PopulationConfig) -> int:
    # the loop trains one model at a time anyway: keep each at once
    return 1 if cfg.strategy == "loop" else DEFAULT_CHUNK


def results_dir(cfg: PopulationConfig, out: str | Path = "runs", experiment: str = "populations",
                chunk_size: int | None = None) -> Path:
    """Where `train_populations` keeps chunks/, logits/, models/ and checkpoints/: `run_dir`, or
    its `chunk-<c>` subfolder for a batched strategy run with a chunk size c other than 100."""
    root = run_dir(cfg, out, experiment)
    if cfg.strategy == "loop" or chunk_size in (None, DEFAULT_CHUNK):
        return root
    return root / f"chunk-{chunk_size}"


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


def models_in(path: Path) -> int:
    """How many models an assembled logits file (logits/<population>.npy) holds, from its header."""
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (ValueError, OSError, EOFError, IndexError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); {REDO}") from None


def _logits_problem(arr: np.ndarray) -> str | None:
    if not np.isfinite(arr).all():
        return "holds NaN or infinite logits"
    zero = [i for i, m in enumerate(arr) if not m.any()]
    if zero:  # no trained model has all logits exactly 0
        return f"holds all-zero logits for {len(zero)} model(s) (first: row {zero[0]})"
    return None


class _Checkpoint:
    """One chunk's training state after its last finished epoch: safetensors (read back without
    unpickling), with a checksum beside it. Only the chunk it was made for (`indices`) reads it."""

    def __init__(self, path: Path, indices: Sequence[int]) -> None:
        self.path, self.indices = path, torch.tensor(list(indices), dtype=torch.int64)

    def load(self) -> dict[str, torch.Tensor] | None:
        if not self.path.is_file():
            return None
        try:
            tensors = safetensors.torch.load(read_checked(self.path))
        except safetensors.SafetensorError as exc:
            raise CorruptFileError(f"{self.path} is unreadable ({exc}); delete it and rerun the same "
                                   "command (that chunk then trains from its first epoch)") from None
        models = tensors.get("meta.models")
        if models is None or not torch.equal(models, self.indices):
            return None  # left by a run that chunked differently: start this chunk afresh
        return tensors

    def save(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        write_checked(self.path, safetensors.torch.save({**tensors, "meta.models": self.indices}))

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        sidecar(self.path).unlink(missing_ok=True)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    # VmapEnsemble keeps a skeleton of the model on the meta device: nothing to save there
    return {k: v for k, v in module.state_dict().items() if v.device.type != "meta"}


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


@torch.no_grad()
def _restore(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    state = _state(module)
    if tensors.keys() != state.keys() or any(tensors[k].shape != v.shape for k, v in state.items()):
        raise CorruptFileError(f"{path} does not hold this chunk's models; delete it and rerun the "
                               "same command (that chunk then trains from its first epoch)")
    for key, value in state.items():
        value.copy_(tensors[key])


def _resume(module: nn.Module, saved: dict[str, torch.Tensor] | None, checkpoint: _Checkpoint | None
            ) -> dict[str, Any]:
    """train_steps' resume arguments: restores `module` from `saved` when there is one."""
    if saved is None:
        return {}
    _restore(module, _section(saved, "train."), checkpoint.path)
    return {"start_epoch": int(saved["meta.epoch"]), "opt_state": _section(saved, "opt.")}


def _saver(checkpoint: _Checkpoint | None, finished: list[nn.Module], unit: int, module: nn.Module):
    """train_steps' `on_epoch`: checkpoint the chunk (its finished models, the one in training,
    the optimiser, the epoch)."""
    if checkpoint is None:
        return None

    def save(epoch: int, opt: torch.optim.Optimizer) -> None:
        tensors = {f"model.{i}.{k}": v for i, m in enumerate(finished) for k, v in _state(m).items()}
        tensors.update({f"train.{k}": v for k, v in _state(module).items()})
        tensors.update({f"opt.{k}": v for k, v in optimizer_tensors(opt).items()})
        tensors["meta.unit"], tensors["meta.epoch"] = torch.tensor(unit), torch.tensor(epoch)
        checkpoint.save(tensors)

    return save


def train_models(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, order_seeds: Sequence[int],
                 epochs: int, batch_size: int, lr: float = LR, strategy: str = "loop",
                 precision: str = "fp32", frozen_body: bool = False,
                 on_step=None, checkpoint: _Checkpoint | None = None) -> list[nn.Module]:
    """Train `models` (same architecture, on x's device) in place, model j in the order of
    `order_seeds[j]`, with the given batching strategy. With `frozen_body` only each `head` learns
    and the body stays in inference mode. With a `checkpoint` the state is saved after every epoch
    and training resumes from the saved one, to the same bits as if never stopped. Returns the
    models in eval mode."""
    _check_precision(strategy, precision)
    saved = checkpoint.load() if checkpoint is not None else None
    if strategy == "loop":
        unit = int(saved["meta.unit"]) if saved is not None else 0
        for i, (model, seed) in enumerate(zip(models, order_seeds)):
            if i < unit:  # finished before the stop
                _restore(model, _section(saved, f"model.{i}."), checkpoint.path)
            else:
                _mode(model, frozen_body)
                train_steps(lambda xb, m=model: m(xb[0]).unsqueeze(0), _trainable(model, frozen_body),
                            x, y, [seed], epochs, batch_size, lr, precision, on_step,
                            **_resume(model, saved if i == unit else None, checkpoint),
                            on_epoch=_saver(checkpoint, models[:i], i, model))
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
                    batch_size, lr, precision, on_step, **_resume(ensemble, saved, checkpoint),
                    on_epoch=_saver(checkpoint, [], 0, ensemble))
    finally:
        torch.backends.cudnn.benchmark = benchmark
    for model, state in zip(models, ensemble.state_dicts()):
        model.load_state_dict(state)
        model.eval()  # the models' own parameters never had requires_grad turned off
    return models


class TrainingData:
    """A data set as float tensors on the training device, with the retained-class subset."""

    def __init__(self, dataset: Any, forget: tuple[int, ...], device: str) -> None:
        self.classes = [str(c) for c in dataset.classes]
        k = len(self.classes)
        self.forget = check_forget(k, forget)
        self.kept = retained_classes(k, self.forget)
        self.x, self.y = as_tensors(to_float(dataset.x_train), dataset.y_train, device)
        self.x_test = torch.as_tensor(to_float(dataset.x_test))
        self.y_test = np.asarray(dataset.y_test, dtype=np.int64)
        check_labels(self.y, k)

    @functools.cached_property
    def retained_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images of the retained classes, with their original labels."""
        keep = torch.isin(self.y, torch.as_tensor(self.kept, device=self.y.device))
        return self.x[keep], self.y[keep]

    @functools.cached_property
    def kept_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images of the retained classes, labelled 0..k-|C|-1 in `kept` order."""
        new_label = torch.full((len(self.classes),), -1, dtype=torch.int64, device=self.y.device)
        new_label[torch.as_tensor(self.kept, device=self.y.device)] = torch.arange(
            len(self.kept), device=self.y.device)
        x, y = self.retained_data
        return x, new_label[y]

    def training_set(self, population: str) -> tuple[torch.Tensor, torch.Tensor]:
        """What `population`'s models learn from: every image (seen), the retained ones with
        their original labels (dropin) or relabelled (notseen, transfer)."""
        if population == "seen":
            return self.x, self.y
        return self.retained_data if population == "dropin" else self.kept_data


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
    """The files of one config's run folder (for a batched strategy, of one chunk size in it)."""

    def __init__(self, root: Path, cfg: PopulationConfig, shape: dict[str, tuple[int, int]],
                 chunk_size: int) -> None:
        self.root, self.cfg, self.shape = root, cfg, shape
        # loop: one model at a time, whatever the chunking; batched: the chunk is part of the key
        self.block = None if cfg.strategy == "loop" else chunk_size

    def chunks(self, population: str) -> dict[tuple[int, int], Path]:
        folder = self.root / "chunks" / population
        found = {}
        for path in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
            match = _CHUNK.fullmatch(path.name)
            if match:
                a, b = int(match[1]), int(match[2])
                if self.block is not None and (a % self.block or b - a > self.block):
                    raise CorruptFileError(
                        f"{path} holds models {a}..{b - 1}, not one chunk of {self.block} (another chunk "
                        f"size, or a population grown by an older version), and a batched model's "
                        f"numbers depend on its chunk; move "
                        f"{self.root / 'chunks'} and {self.root / 'logits'} away and rerun")
                found[(a, b)] = path
        return found

    def done(self, population: str) -> set[int]:
        """Finished models among the first `models` (a larger earlier run may have more)."""
        return {j for a, b in self.chunks(population) for j in range(a, min(b, self.cfg.models))}

    def write_chunk(self, population: str, a: int, logits: np.ndarray) -> None:
        b = a + len(logits)
        save_array(self.root / "chunks" / population / f"{a:05d}-{b:05d}.npy", logits.astype(np.float32))

    def drop_chunks(self, population: str, a: int) -> None:
        """Remove the chunk files starting at `a` (a partial chunk about to be retrained whole)."""
        for (start, _), path in self.chunks(population).items():
            if start == a:
                sidecar(path).unlink(missing_ok=True)
                path.unlink()

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
            part = load_array(path, (b - a, n_test, k), np.float32, _logits_problem)
            out[a:min(b, m)] = part[:m - a]
        save_array(self.final_path(population), out)
        return out

    def final_path(self, population: str) -> Path:
        return self.root / "logits" / f"{population}.npy"

    def final(self, population: str) -> np.ndarray | None:
        """The assembled logits of the first `models` models, or None while they are not assembled
        (a final file of fewer models is superseded once the population has grown)."""
        if not self.assembled(population):
            return None
        path = self.final_path(population)
        arr = load_array(path, (models_in(path),) + self.shape[population], np.float32,
                         _logits_problem)
        return arr[:self.cfg.models].copy() if len(arr) > self.cfg.models else arr

    def assembled(self, population: str) -> bool:
        path = self.final_path(population)
        return path.is_file() and models_in(path) >= self.cfg.models

    def model_path(self, population: str, j: int) -> Path:
        return self.root / "models" / population / f"{j:05d}.safetensors"

    def checkpoint(self, population: str, indices: Sequence[int]) -> _Checkpoint:
        name = f"{min(indices):05d}-{max(indices) + 1:05d}.safetensors"
        return _Checkpoint(self.root / "checkpoints" / population / name, indices)


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


@dataclass
class _Part:
    """One population's trained models of a chunk, as both backends hand them to the store."""

    population: str
    indices: list[int]
    logits: np.ndarray  # float32 (len(indices), n_test, classes)
    models: list[nn.Module] | None  # only when the models are saved


def _train(cfg: PopulationConfig, d: TrainingData, population: str, indices: list[int],
           bodies: list[nn.Module] | None, checkpoint, on_step) -> list[nn.Module]:
    """Models `indices` of `population`, trained from their seeds (transfer: on `bodies`)."""
    seeds = [model_seeds(cfg.seed, population, j) for j in indices]
    k = len(_output_ids(d, population)[0])
    models = [init_model(cfg.arch, cfg.arch_kwargs, k, s[0]) for s in seeds]
    if bodies is not None:  # transfer: the seen model with this new head
        for model, body in zip(models, bodies):
            model.body = copy.deepcopy(body.body)
    x, y = d.training_set(population)
    models = [m.to(x.device) for m in models]
    total_images = len(indices) * cfg.epochs * len(y)
    step = None if on_step is None else (
        lambda n: on_step(population, n, n * len(indices) / total_images))
    train_models(models, x, y, [s[1] for s in seeds], cfg.epochs, cfg.batch_size, cfg.lr,
                 cfg.strategy, cfg.precision, frozen_body=bodies is not None, on_step=step,
                 checkpoint=None if checkpoint is None else checkpoint(population, indices))
    return models


def _part(cfg: PopulationConfig, d: TrainingData, population: str, indices: list[int],
          models: list[nn.Module], save_models: bool) -> _Part:
    logits = np.stack([predict_logits(m, d.x_test, cfg.device, EVAL_BATCH) for m in models])
    problem = _logits_problem(logits)
    if problem:
        raise LinfiltError(f"training {population} models {indices[0]}..{indices[-1]} diverged: the "
                           f"chunk {problem}; try a smaller lr (nothing was stored)")
    return _Part(population, indices, logits, models if save_models else None)


def train_chunk(cfg: PopulationConfig, d: TrainingData, plan: dict[str, list[int]],
                given: dict[int, nn.Module], save_models: bool, checkpoint=None, on_step=None
                ) -> Iterator[_Part]:
    """The work of one chunk, the same on every backend: train the models `plan` names (population
    -> indices, in POPULATIONS order) and yield each population's part as soon as it is done.
    Transfer model j takes the body of seen model j trained here, else of `given[j]` (a saved
    one), else of seen model j retrained from its seeds (yielded too, for the store to keep).
    `checkpoint(population, indices)` gives the chunk's per-epoch checkpoint (None: none);
    `on_step(population, images, models)` reports progress."""
    seen = dict(given)
    for population, indices in plan.items():
        bodies = None
        if population == "transfer":
            retrain = [j for j in indices if j not in seen]
            if retrain:
                models = _train(cfg, d, "seen", retrain, None, checkpoint, on_step)
                seen.update(zip(retrain, models))
                yield _part(cfg, d, "seen", retrain, models, save_models)
                if checkpoint is not None:
                    checkpoint("seen", retrain).delete()
            bodies = [seen[j] for j in indices]
        models = _train(cfg, d, population, indices, bodies, checkpoint, on_step)
        if population == "seen":
            seen.update(zip(indices, models))
        yield _part(cfg, d, population, indices, models, save_models)


class _Runner:
    """Plans the missing chunks of the requested populations of one config and stores what
    training them gives; `run` is the local backend (linfilt.paper.cluster the Ray one)."""

    def __init__(self, cfg: PopulationConfig, data: TrainingData, store: _Store, save_models: bool,
                 progress: bool) -> None:
        self.cfg, self.data, self.store = cfg, data, store
        self.save_models, self.progress = save_models, progress
        self.bars: dict[str, _Bar] = {}

    def bar(self, population: str) -> _Bar:
        if population not in self.bars:
            done = len(self.store.done(population))
            self.bars[population] = _Bar(population, self.cfg.models, done, self.progress)
        return self.bars[population]

    def pending(self, populations: Sequence[str]) -> dict[str, set[int]]:
        """The finished models of each requested population that is not assembled yet."""
        return {p: self.store.done(p) for p in populations if not self.store.assembled(p)}

    def plan(self, chunk: range, pending: dict[str, set[int]]) -> dict[str, list[int]]:
        """population -> the models of `chunk` to train."""
        plan = {}
        for population, done in pending.items():
            todo = [j for j in chunk if j not in done]
            if todo and self.store.block is not None and len(todo) < len(chunk):
                # a partial chunk (a grown population): retrain it whole, as a fresh run would
                self.store.drop_chunks(population, chunk.start)
                todo = list(chunk)
            if todo:
                plan[population] = todo
        return plan

    def saved_seen(self, plan: dict[str, list[int]], device: torch.device | str) -> dict[int, nn.Module]:
        """The saved seen models that transfer models of `plan` build on (those not trained in it)."""
        paths = {j: self.store.model_path("seen", j) for j in plan.get("transfer", ())
                 if j not in plan.get("seen", ())}
        return {j: load_model(path)[0].to(device) for j, path in paths.items() if path.is_file()}

    def keep(self, part: _Part) -> None:
        """Store the models of `part` not stored yet: their files (if saved), then the logits (a
        chunk file means the chunk is done)."""
        done = self.store.done(part.population)
        rows = [i for i, j in enumerate(part.indices) if j not in done]
        if not rows:
            return
        d, population = self.data, part.population
        indices = [part.indices[i] for i in rows]
        spec = ModelSpec(self.cfg.arch, self.cfg.arch_kwargs, *_output_ids(d, population))
        if part.models is not None:
            for j, i in zip(indices, rows):
                save_model(self.store.model_path(population, j), part.models[i], spec)
        logits = part.logits[rows]
        pos = {j: i for i, j in enumerate(indices)}
        for a, b in _ranges(indices):
            self.store.write_chunk(population, a, logits[pos[a]:pos[a] + b - a])
        self.store.checkpoint(population, indices).delete()
        if population in self.bars:
            self.bars[population].done(len(self.store.done(population)))

    def run(self, populations: Sequence[str], chunk_size: int) -> None:
        """The local backend: chunk after chunk, checkpointed after every epoch."""
        for a in range(0, self.cfg.models, chunk_size):
            plan = self.plan(range(a, min(a + chunk_size, self.cfg.models)), self.pending(populations))
            given = self.saved_seen(plan, self.data.x.device)
            for part in train_chunk(self.cfg, self.data, plan, given, self.save_models,
                                    self.store.checkpoint, self._step):
                self.keep(part)
        for bar in self.bars.values():
            bar.close()

    def _step(self, population: str, images: int, models: float) -> None:
        self.bar(population).step(images, models)

    @staticmethod
    def chunk_on_worker(cfg: PopulationConfig, dataset: Any, plan: dict[str, list[int]],
                        given: dict[int, nn.Module], save_models: bool) -> list[_Part]:
        """`train_chunk` where only what it needs was shipped (a Ray task): no checkpoints, no
        progress; the models (if saved) on the CPU."""
        with warnings.catch_warnings():  # the labels arrive read-only from Ray's object store: they stay so
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            data = TrainingData(dataset, cfg.forget, cfg.device)
        parts = list(train_chunk(cfg, data, plan, given, save_models))
        for part in parts:
            if part.models is not None:
                part.models = [m.cpu() for m in part.models]
        return parts


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """Write the run folder's config, or check the one there against it."""
    if not path.is_file():
        write_json(path, config)
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); delete it and rerun the same command "
                               "(it is rewritten; the results beside it are kept)") from None
    if stored != json.loads(json.dumps(config)):
        raise CorruptFileError(f"{path} does not match this config (another data set under "
                               "the same name?); move the folder away and rerun")


def _check_test_labels(path: Path, labels: np.ndarray, k: int) -> None:
    """Write the test labels, or check the stored ones: in range, and those of this data set."""
    if not path.is_file():
        save_array(path, labels)
        return

    def problem(arr: np.ndarray) -> str | None:
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            return f"holds labels outside 0..{k - 1}"
        return None if np.array_equal(arr, labels) else "holds other labels than this data set's test set"

    load_array(path, labels.shape, np.int64, problem)


def train_populations(cfg: PopulationConfig, populations: Sequence[str] = ("seen",), data: Any = None,
                      out: str | Path = "runs", experiment: str = "populations",
                      chunk_size: int | None = None, save_models: bool = False,
                      progress: bool = True, backend: str = "local", address: str | None = None,
                      cpus_per_task: float | None = None, gpus_per_task: float | None = None
                      ) -> dict[str, np.ndarray]:
    """Train (or resume, or just load) the populations of `cfg`; their test logits, float32
    (M, n_test, classes), by population name.

    `data` is a `linfilt.paper.data.load` result (loaded from `cfg.dataset` when None). Finished chunks
    are kept and the chunk in training is checkpointed after every epoch: a rerun after a kill
    resumes at the last finished epoch, to the same bits. `chunk_size` (default 1 for the loop
    strategy, else 100) sets how many models train at once; with a batched strategy it also
    changes their rounding, so each chunk size keeps its own results (see the module doc).

    backend "ray" trains each missing chunk as one Ray task (`cpus_per_task`, default 1;
    `gpus_per_task`, default 1 on CUDA, fractions share a GPU) on the cluster at `address` (None:
    a local Ray instance for this call), and stores what the tasks return here, in the same files
    as the local backend; see `linfilt.paper.cluster`.
    """
    unknown = [p for p in populations if p not in POPULATIONS]
    if unknown or not populations:
        raise LinfiltError(f"populations must be among {POPULATIONS}, got {list(populations)}")
    populations = [p for p in POPULATIONS if p in populations]
    chunk_size = check_positive_int(default_chunk_size(cfg) if chunk_size is None else chunk_size,
                                    "chunk_size")
    on_ray = cluster.check_backend(backend, address, cpus_per_task, gpus_per_task, cfg.device)
    if on_ray is None:
        check_device(cfg.device)
    if data is None:
        data = load(cfg.dataset)
    # with Ray the driver only checks and stores: the cluster's nodes train on cfg.device
    d = TrainingData(data, cfg.forget, "cpu" if on_ray else cfg.device)
    root = run_dir(cfg, out, experiment)
    k = len(d.classes)
    shape = {p: (len(d.y_test), len(_output_ids(d, p)[0])) for p in POPULATIONS}
    store = _Store(results_dir(cfg, out, experiment, chunk_size), cfg, shape, chunk_size)
    with cluster.session(on_ray):
        _check_config(root / "config.json",
                      {**cfg.key(), "classes": d.classes, "n_train": len(d.y), "n_test": len(d.y_test)})
        _check_test_labels(root / "test_labels.npy", d.y_test, k)
        if on_ray:
            runner = _Runner(cfg, d, store, save_models, progress=False)
            cluster.train_on_ray(runner, populations, chunk_size, data, on_ray, progress)
        else:
            _Runner(cfg, d, store, save_models, progress).run(populations, chunk_size)
    out_logits = {}
    for population in populations:
        final = store.final(population)
        out_logits[population] = final if final is not None else store.assemble(population)
    return out_logits


def trained_models(cfg: PopulationConfig, population: str = "seen", data: Any = None,
                   out: str | Path = "runs", experiment: str = "populations",
                   chunk_size: int | None = None, progress: bool = True) -> list[nn.Module]:
    """The `cfg.models` trained models of `population`, in eval mode on cfg.device: read from their
    saved files, else retrained from their seeds chunk by chunk as its stored logits were made (a
    chunk with any model missing is retrained whole: batched rounding depends on the chunk) and
    saved. A retrained model whose test logits differ from the stored ones (another machine made
    them) gives one warning. Missing logits are trained first, their models saved as they are."""
    data = load(cfg.dataset) if data is None else data
    # a population not stored yet is trained with its models saved: no second training below
    stored = train_populations(cfg, (population,), data, out, experiment, chunk_size,
                               save_models=True, progress=progress)[population]
    chunk_size = default_chunk_size(cfg) if chunk_size is None else chunk_size
    d = TrainingData(data, cfg.forget, cfg.device)
    shape = {population: stored.shape[1:]}
    runner = _Runner(cfg, d, _Store(results_dir(cfg, out, experiment, chunk_size), cfg, shape, chunk_size),
                     save_models=True, progress=progress)
    store = runner.store
    chunks = [list(range(a, min(a + chunk_size, cfg.models))) for a in range(0, cfg.models, chunk_size)]
    missing = [c for c in chunks if not all(store.model_path(population, j).is_file() for j in c)]
    # the bar counts the models retrained here (the population's own bar would start full)
    runner.bars[population] = _Bar(f"{population} models", sum(map(len, missing)), 0, progress)
    models: dict[int, nn.Module] = {}
    for chunk in chunks:
        paths = {j: store.model_path(population, j) for j in chunk}
        if chunk not in missing:
            models.update((j, load_model(path)[0].to(cfg.device).eval()) for j, path in paths.items())
            continue
        given = runner.saved_seen({"transfer": chunk}, d.x.device) if population == "transfer" else {}
        for part in train_chunk(cfg, d, {population: chunk}, given, True, store.checkpoint, runner._step):
            if part.population != population:
                continue  # seen models retrained for transfer bodies: their files are not asked for
            spec = ModelSpec(cfg.arch, cfg.arch_kwargs, *_output_ids(d, population))
            for j, model in zip(part.indices, part.models):
                save_model(paths[j], model, spec)
                models[j] = model.eval()
            difference = float(np.abs(part.logits - stored[chunk]).max())
            if difference:
                warnings.warn(f"retrained {population} models {chunk[0]}..{chunk[-1]} of {experiment} give "
                              f"test logits up to {difference:.3g} away from the stored ones (made on "
                              "another machine?); the saved models are the retrained ones", stacklevel=2)
            store.checkpoint(population, chunk).delete()
    for bar in runner.bars.values():
        bar.close()
    return [models[j] for j in range(cfg.models)]


def _output_ids(d: TrainingData, population: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The original class ids and names of a population's outputs."""
    ids = range(len(d.classes)) if population in ("seen", "dropin") else d.kept
    return tuple(int(i) for i in ids), tuple(d.classes[i] for i in ids)


def train_population(cfg: PopulationConfig, population: str = "seen", **kwargs: Any) -> np.ndarray:
    """One population's test logits (M, n_test, classes); see `train_populations`."""
    return train_populations(cfg, (population,), **kwargs)[population]
