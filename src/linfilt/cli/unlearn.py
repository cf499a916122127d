"""`linfilt unlearn MODEL --forget C [C ...] (--data D.npz | --dataset NAME) --out OUT`.

Loads a model of the project's format (one .safetensors file) or a Hugging Face model directory
(config.json + model.safetensors), estimates A from the given data, forgets the classes by linear
filtration, writes the new model (its spec, or its config, records the filtration) and prints what
it did. Class ids are always the ORIGINAL ids, so a model can be unlearned again and again.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt import plugins
from linfilt.errors import LinfiltError
from linfilt.filtration import METHODS, FiltrationStep, check_forget
from linfilt.hf import (class_names, config_record, load_config, load_model_dir, model_logits, record_steps,
                        save_model_dir)
from linfilt.modelio import load_model, save_model
from linfilt.outputs import check_output_dir, check_output_file
from linfilt.pytorch import find_head, unlearn
from linfilt.validation import check_class_ids, check_labels, check_optional_positive_int, check_seed

CHUNK = 4096  # samples per forward-pass chunk of a model file (progress granularity)
HF_BATCH = 32  # ... of a transformers model: attention's memory grows with batch x length^2
# What a Hugging Face model's --data may hold besides y: one kind of input, with its companions.
HF_INPUTS = {"pixel_values": (), "input_ids": ("attention_mask", "token_type_ids")}
# The config size that bounds each token array's values.
TOKEN_LIMITS = {"input_ids": "vocab_size", "token_type_ids": "type_vocab_size"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "unlearn", help="forget classes from a saved model by linear filtration",
        description="Forget classes from a model file of the project's format or a Hugging Face model "
                    "directory; write the new model.",
    )
    p.add_argument("model", help="model file (.safetensors written by linfilt), or a Hugging Face model "
                   "directory (config.json + model.safetensors)")
    p.add_argument("--forget", nargs="+", required=True, metavar="CLASS",
                   help="classes to forget: original class ids (integers) or class names")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DATA.npz",
                     help="arrays x (uint8 images N,H,W,C, or float32 N,C,H,W in [0, 1]) and y (class ids); "
                     "for a Hugging Face model pixel_values (float N,C,H,W) or input_ids (with "
                     "attention_mask, token_type_ids) and y")
    src.add_argument("--dataset", metavar="NAME", help="a data set linfilt knows (e.g. mnist, digits)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="split of --dataset (test)")
    p.add_argument("--root", help="data folder to look in first, for --dataset")
    p.add_argument("--method", choices=METHODS, default="normalization")
    p.add_argument("--per-class", type=int, metavar="S",
                   help="estimate A from the first S samples of each class (default: all)")
    p.add_argument("--seed", type=int, help="seed of the random choices (needed by randomization; with "
                   "--per-class it also draws the S samples at random)")
    p.add_argument("--out", required=True, help="where to write the new model (.safetensors; a folder for "
                   "a Hugging Face model)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never an input)")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help=f"samples per forward pass (default {CHUNK}; {HF_BATCH} for a Hugging Face model)")
    p.add_argument("--allow-pinv", action="store_true",
                   help="use a pseudo-inverse when A is singular or ill-conditioned")
    p.add_argument("--device", default="cpu", help="torch device for the forward passes (cpu, cuda)")
    p.set_defaults(func=run)


def _forget_ids(tokens: list[str], class_ids: tuple[int, ...], class_names: tuple[str, ...],
                history: tuple[FiltrationStep, ...]) -> list[int]:
    """Original class ids of the --forget tokens: an integer is an id, anything else a name."""
    names = dict(zip(class_names, class_ids))
    gone = {c: e for e in history for c in e.forgot}
    gone_names = {n: c for e in history for c, n in zip(e.forgot, e.forgot_names or ())}
    ids = []
    for token in tokens:
        if re.fullmatch(r"[+-]?\d+", token.strip()):
            cid = int(token)
        elif token in names:
            cid = names[token]
        elif token in gone_names:
            cid = gone_names[token]
        else:
            raise LinfiltError(f"--forget {token!r} is neither a class id nor a class name of this model "
                               f"(its classes: {_describe(class_ids, class_names)})")
        if cid in gone:
            when = f" ({gone[cid].date})" if gone[cid].date else ""
            raise LinfiltError(f"class {cid} was already forgotten from this model{when}")
        if cid not in class_ids:
            raise LinfiltError(f"--forget {token}: no class {cid} in this model "
                               f"(its classes: {_describe(class_ids, class_names)})")
        ids.append(cid)
    check_class_ids(ids, "--forget")  # each once
    check_forget(len(class_ids), [class_ids.index(c) for c in ids])  # at least 2 classes left
    return ids


def _describe(ids, names) -> str:
    return ", ".join(f"{i} {n!r}" for i, n in zip(ids, names))


def _load_npz(path: Path, needs: dict[str, str]) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`; `needs` names those it must hold (name -> what it is)."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise LinfiltError(f"--data {path} is a single .npy array; save {' and '.join(needs)} with numpy.savez")
        with f:
            missing = sorted(set(needs) - set(f.files))
            if missing:
                what = " and ".join(f"{k} ({v})" for k, v in needs.items())
                raise LinfiltError(f"{path} lacks arrays {missing}: it needs {what}")
            return {k: f[k] for k in f.files}
    except LinfiltError:  # a ValueError too: not to be re-wrapped below
        raise
    except FileNotFoundError:
        raise LinfiltError(f"--data {path}: no such file") from None
    # not an npz, empty, truncated (EOFError, BadZipFile, zlib.error), or object arrays (would unpickle)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise LinfiltError(f"--data {path} is not a readable .npz of plain arrays: {exc}") from None


def _input_layout(model: nn.Module) -> tuple[nn.Module, int | None]:
    """The model's first Conv2d or Linear layer, and the image channels it takes (None for a
    Linear: an MLP flattens whatever it is given)."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if first is None:
        raise LinfiltError("the model has no Conv2d or Linear layer to take the images")
    return first, first.in_channels if isinstance(first, nn.Conv2d) else None


def _images(x: np.ndarray, model: nn.Module) -> np.ndarray:
    """x as the model takes it, float32 (N, C, H, W) in [0, 1]: uint8 images must be channels-last
    (N, H, W, C), float ones channels-first and already scaled. A layout that is not the expected
    one is refused, not transposed: with C = 1 the other reading still runs and silently scrambles
    the pixels."""
    first, channels = _input_layout(model)
    # a channel axis holds the model's channels, or for an MLP 1 to 4 (grey, RGB, RGBA)
    fits = (lambda n: n == channels) if channels else (lambda n: 1 <= n <= 4)
    want = f"{channels}" if channels else "1 to 4"
    expected = (f"uint8 (N, H, W, C) or float32 (N, C, H, W) in [0, 1], with C = {want}"
                + ("" if channels else f" and C*H*W = {first.in_features}"))
    if x.dtype == np.uint8:
        if x.ndim == 4 and fits(x.shape[3]):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)
        seen = "(N, C, H, W)" if x.ndim == 4 and fits(x.shape[1]) else "not one of these"
        raise LinfiltError(f"--data x is uint8 of shape {x.shape}: layout {seen}; expected {expected}")
    if not np.issubdtype(x.dtype, np.floating):
        raise LinfiltError(f"--data x has dtype {x.dtype}; expected {expected}")
    flat = channels is None and x.ndim == 2 and x.shape[1] == first.in_features  # (N, features) for an MLP
    if not flat and not (x.ndim == 4 and fits(x.shape[1])):
        seen = "(N, H, W, C)" if x.ndim == 4 and fits(x.shape[3]) else "not one of these"
        raise LinfiltError(f"--data x is {x.dtype} of shape {x.shape}: layout {seen}; expected {expected}")
    if not np.all(np.isfinite(x)):
        raise LinfiltError("--data x holds NaN or infinite values; float images must lie in [0, 1]")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise LinfiltError(f"--data x holds float values in [{x.min():.4g}, {x.max():.4g}]; float images "
                           "must lie in [0, 1]: divide 0..255 values by 255, or store them as uint8 (N, H, W, C)")
    return x.astype(np.float32, copy=False)


def _load_data(args: argparse.Namespace, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    if args.data is not None:
        arrays = _load_npz(Path(args.data), {"x": "inputs", "y": "class ids"})
        x, y = arrays["x"], arrays["y"]
    else:
        ds = plugins.dataset(args.dataset)(args.dataset, root=args.root)  # e.g. linfilt.paper's
        x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    x = _images(np.asarray(x), model)
    return x, check_labels(y, "--data y", length=len(x))


def _model_inputs(args: argparse.Namespace, config: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The --data of a Hugging Face model: its inputs as the model takes them (the processor's
    output, checked against the config) and y."""
    if args.data is None:
        raise LinfiltError("a Hugging Face model takes --data D.npz holding what its processor makes, not "
                           "--dataset: pixel_values (float N,C,H,W) or input_ids (+ attention_mask, "
                           "token_type_ids), and y (class ids)")
    arrays = _load_npz(Path(args.data), {"y": "class ids"})
    y = arrays.pop("y")
    kind = [k for k in HF_INPUTS if k in arrays]
    allowed = {*kind, *(c for k in kind for c in HF_INPUTS[k])}
    if len(kind) != 1 or set(arrays) - allowed:
        raise LinfiltError(f"--data {args.data} holds {sorted(arrays)} besides y; a Hugging Face model takes "
                           "pixel_values (float N,C,H,W) or input_ids (+ attention_mask, token_type_ids)")
    if kind == ["pixel_values"]:
        x = arrays["pixel_values"]
        channels = getattr(config, "num_channels", None)
        if not (np.issubdtype(x.dtype, np.floating) and x.ndim == 4 and channels in (None, x.shape[1])):
            raise LinfiltError(f"--data pixel_values is {x.dtype} of shape {x.shape}; expected float (N, C, H, W)"
                               + (f" with C = {channels}" if channels else ""))
        if not np.all(np.isfinite(x)):
            raise LinfiltError("--data pixel_values holds NaN or infinite values")
        arrays = {"pixel_values": x.astype(np.float32, copy=False)}
    else:
        arrays = {k: _tokens(k, v, arrays["input_ids"].shape, config) for k, v in arrays.items()}
    return arrays, check_labels(y, "--data y", length=len(arrays[kind[0]]))


def _tokens(name: str, a: np.ndarray, shape: tuple[int, ...], config: Any) -> np.ndarray:
    """A token array as int64, its values within what the config's embeddings hold."""
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer) or a.ndim != 2 or a.shape != shape:
        raise LinfiltError(f"--data {name} is {a.dtype} of shape {a.shape}; expected integers of the "
                           f"input_ids' shape (N, length) = {shape}")
    limit = 2 if name == "attention_mask" else getattr(config, TOKEN_LIMITS[name], None)
    if a.size and (a.min() < 0 or (limit is not None and a.max() >= limit)):
        raise LinfiltError(f"--data {name} holds values in [{a.min()}, {a.max()}]; the model takes 0.."
                           f"{'' if limit is None else limit - 1}")
    return a.astype(np.int64, copy=False)


def _take(x: np.ndarray | dict[str, np.ndarray], rows: Any) -> np.ndarray | dict[str, np.ndarray]:
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


def _dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in (float64, bfloat16, ...): float inputs are cast to it."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _forward(model: nn.Module, x: np.ndarray | dict[str, np.ndarray], device: torch.device) -> torch.Tensor:
    """The logits of a batch: an image array, or a dict of a transformers model's inputs."""
    dtype = _dtype(model)

    def put(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)

    return model_logits(model(**{k: put(v) for k, v in x.items()}) if isinstance(x, dict) else model(put(x)))


def _len(x: np.ndarray | dict[str, np.ndarray]) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray | dict[str, np.ndarray], device: torch.device, what: str,
            batch: int) -> np.ndarray:
    model.to(device).eval()
    parts = [_forward(model, _take(x, slice(i, i + batch)), device).double().cpu().numpy()
             for i in tqdm(range(0, _len(x), batch), desc=f"logits {what}", leave=False, disable=None)]
    return np.concatenate(parts)


@torch.no_grad()
def _check_fits(model: nn.Module, x: np.ndarray | dict[str, np.ndarray], device: torch.device) -> None:
    """One sample through the model, before the real passes: a size it cannot take is an error
    naming both sizes."""
    try:
        _forward(model.to(device).eval(), _take(x, slice(0, 1)), device)
    except (RuntimeError, ValueError, IndexError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(x, dict):
            shapes = ", ".join(f"{k} {v.shape}" for k, v in x.items())
            raise LinfiltError(f"--data {shapes} do not fit the model ({why})") from None
        first, channels = _input_layout(model)
        takes = f"({channels}, H, W) images" if channels else f"{first.in_features} values per sample"
        raise LinfiltError(f"--data x has samples of shape {x.shape[1:]} but the model takes {takes} "
                           f"({why})") from None


def _check_out_dir(args: argparse.Namespace) -> Path:
    """--out of a Hugging Face model: a folder, never the model directory, inside it or around an
    input; an existing non-empty one is replaced only with --force, and only if it is a model
    directory (never a folder of other files)."""
    out = check_output_dir(args.out, flag="--out", inputs=(args.model, args.data))
    if out.exists():  # it is replaced by a rename: its parent must take new entries too
        check_output_dir(out.absolute().parent, flag="--out")
    real = Path(os.path.realpath(out))
    model = Path(os.path.realpath(args.model))
    if real.is_relative_to(model):
        raise LinfiltError(f"--out {out} is inside the model directory {args.model}; write the new model elsewhere")
    for given in (args.model, args.data):
        if given is not None and Path(os.path.realpath(given)).is_relative_to(real):
            raise LinfiltError(f"--out {out} holds an input of this command ({given}); choose another folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.force:
            raise LinfiltError(f"--out {out} is a folder that is not empty; choose a new or empty folder or "
                               "pass --force to replace it")
        if not (out / "config.json").is_file():
            raise LinfiltError(f"--out {out} holds files but no config.json: --force replaces only a model "
                               "directory; choose a new or empty folder")
    return out


@contextlib.contextmanager
def _atomic_dir(out: Path) -> Iterator[Path]:
    """A new folder beside `out` to write into; on success it takes the place of `out` (an existing
    one is removed only then), so a failure leaves `out` as it was and no stray folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}.{secrets.token_hex(6)}")
    os.mkdir(tmp)  # the mode a new folder gets (the umask applies), unlike mkdtemp's 0700
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            old = out.with_name(f".old-{out.name}.{secrets.token_hex(6)}")
            os.replace(out, old)
            os.replace(tmp, out)
            if old.is_symlink() or not old.is_dir():
                old.unlink()
            else:
                shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LinfiltError(f"--device {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LinfiltError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise LinfiltError(f"--device {name}: there are only {count} CUDA devices (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise LinfiltError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise LinfiltError(f"--device {name!r}: linfilt runs models on cpu, cuda, cuda:N or mps")
    return device


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed, "--seed")
    check_optional_positive_int(args.per_class, "--per-class")
    check_optional_positive_int(args.batch_size, "--batch-size")
    if args.method == "randomization" and args.seed is None:
        raise LinfiltError("--method randomization needs --seed N (its random z must be reproducible)")
    model_path = Path(args.model)
    hf = model_path.is_dir()  # a Hugging Face model directory, not a model file
    out = (_check_out_dir(args) if hf
           else check_output_file(args.out, flag="--out", inputs=(args.model, args.data), force=args.force))
    device = _device(args.device)
    if hf:  # the config first: the request and the data are checked before the weights are read
        config = load_config(model_path)
        record = config_record(config)
        ids, names, history = record.classes, class_names(config), record.steps
    else:
        model, spec = load_model(model_path)
        ids, names, history = spec.class_ids, spec.class_names, spec.history
    forget = _forget_ids(args.forget, ids, names, history)
    if hf:
        x, y = _model_inputs(args, config)
        model = load_model_dir(model_path, config)
    else:
        x, y = _load_data(args, model)

    earlier = np.isin(y, [c for step in history for c in step.forgot])  # classes forgotten before: not this model's
    unknown = sorted(set(y[~earlier & ~np.isin(y, ids)].tolist()))
    if unknown:
        raise LinfiltError(f"the data has labels {unknown[:10]} that are not classes of this model "
                           f"(its classes: {list(ids)})")
    x, y = _take(x, ~earlier), y[~earlier]
    if not len(y):
        raise LinfiltError("the data has no samples of this model's classes: A needs samples of every class")
    _check_fits(model, x, device)
    batch = args.batch_size or (HF_BATCH if hf else CHUNK)
    before = _logits(model, x, device, "before", batch)
    options = dict(method=args.method, per_class=args.per_class, rng=args.seed, allow_pinv=args.allow_pinv)
    # a transformers model has many Linear layers: one sample tells which one gives the logits
    head = find_head(model, {k: torch.from_numpy(v) for k, v in _take(x, slice(0, 1)).items()}) if hf else None
    new = unlearn(model, forget, logits=before, labels=y, head=head, **options)
    after = _logits(new, x, device, "after", batch)
    if hf:
        record = record_steps(new, dict(zip(ids, names)), new_steps=1)
        new_ids, new_names, step = record.classes, class_names(new.config), record.steps[-1]
        with _atomic_dir(out) as folder:
            save_model_dir(new, folder, model_path)
    else:
        new_spec = spec.after_unlearn(new)
        save_model(out, new, new_spec)
        new_ids, new_names, step = new_spec.class_ids, new_spec.class_names, new_spec.history[-1]

    pred_before = np.asarray(ids)[before.argmax(axis=1)]
    pred_after = np.asarray(new_ids)[after.argmax(axis=1)]
    gone = np.isin(y, forget)
    kept = ~gone
    print(f"forgot {_describe(step.forgot, step.forgot_names)} from {model_path} by {args.method}")
    source = "all" if args.per_class is None else f"{args.per_class} per class,"
    print(f"A estimated from {source} {step.samples} samples of {len(y)} given")
    pinv = " (pseudo-inverse used)" if step.pinv else ""
    print(f"condition number of A: {step.condition_number:.4g}{pinv}")
    print(f"classes kept ({len(new_ids)}): {_describe(new_ids, new_names)}")
    if kept.any():
        print(f"accuracy on retained classes ({int(kept.sum())} samples): "
              f"before {np.mean(pred_before[kept] == y[kept]):.4f}, after {np.mean(pred_after[kept] == y[kept]):.4f}")
    if gone.any():
        ids_after, counts = np.unique(pred_after[gone], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:3]
        named = dict(zip(new_ids, new_names))
        where = ", ".join(f"{ids_after[i]} {named[int(ids_after[i])]!r} {counts[i] / gone.sum():.0%}" for i in top)
        print(f"forgotten classes ({int(gone.sum())} samples): accuracy before "
              f"{np.mean(pred_before[gone] == y[gone]):.4f}; now predicted as {where}")
    if earlier.any():
        print(f"skipped {int(earlier.sum())} samples of classes forgotten earlier")
    print(f"wrote {out}")
    return 0
