"""`linfilt unlearn MODEL --forget C [C ...] (--data D.npz | --dataset NAME) --out OUT.safetensors`.

Loads a model of the project's format, estimates A from the given data, forgets the classes by
linear filtration, writes the new model (its spec records the filtration) and prints what it did.
Class ids are always the ORIGINAL ids, so a model can be unlearned again and again.
"""
from __future__ import annotations

import argparse
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt import plugins
from linfilt.errors import LinfiltError
from linfilt.filtration import METHODS
from linfilt.modelio import ModelSpec, load_model, save_model
from linfilt.outputs import check_output_file
from linfilt.pytorch import unlearn
from linfilt.validation import check_labels, check_optional_positive_int, check_seed

CHUNK = 4096  # samples per forward-pass chunk (progress granularity)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "unlearn", help="forget classes from a saved model by linear filtration",
        description="Forget classes from a model file of the project's format; write the new model.",
    )
    p.add_argument("model", help="model file (.safetensors written by linfilt)")
    p.add_argument("--forget", nargs="+", required=True, metavar="CLASS",
                   help="classes to forget: original class ids (integers) or class names")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DATA.npz",
                     help="arrays x (uint8 images N,H,W,C, or float32 N,C,H,W in [0, 1]) and y (class ids)")
    src.add_argument("--dataset", metavar="NAME", help="a data set linfilt knows (e.g. mnist, digits)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="split of --dataset (test)")
    p.add_argument("--root", help="data folder to look in first, for --dataset")
    p.add_argument("--method", choices=METHODS, default="normalization")
    p.add_argument("--per-class", type=int, metavar="S",
                   help="estimate A from the first S samples of each class (default: all)")
    p.add_argument("--seed", type=int, help="seed of the random choices (needed by randomization; with "
                   "--per-class it also draws the S samples at random)")
    p.add_argument("--out", required=True, help="where to write the new model (.safetensors)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never an input)")
    p.add_argument("--allow-pinv", action="store_true",
                   help="use a pseudo-inverse when A is singular or ill-conditioned")
    p.add_argument("--device", default="cpu", help="torch device for the forward passes (cpu, cuda)")
    p.set_defaults(func=run)


def _forget_ids(tokens: list[str], spec: ModelSpec) -> list[int]:
    """Original class ids of the --forget tokens: an integer is an id, anything else a name."""
    names = dict(zip(spec.class_names, spec.class_ids))
    gone = {c: e for e in spec.history for c in e.forgot}
    gone_names = {n: c for e in spec.history for c, n in zip(e.forgot, e.forgot_names)}
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
                               f"(its classes: {_describe(spec.class_ids, spec.class_names)})")
        if cid in gone:
            raise LinfiltError(f"class {cid} was already forgotten from this model ({gone[cid].date})")
        if cid not in spec.class_ids:
            raise LinfiltError(f"--forget {token}: no class {cid} in this model "
                               f"(its classes: {_describe(spec.class_ids, spec.class_names)})")
        ids.append(cid)
    return ids


def _describe(ids, names) -> str:
    return ", ".join(f"{i} {n!r}" for i, n in zip(ids, names))


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise LinfiltError(f"--data {path} is a single .npy array; save x and y with numpy.savez")
        with f:
            missing = sorted({"x", "y"} - set(f.files))
            if missing:
                raise LinfiltError(f"{path} lacks arrays {missing}: it needs x (inputs) and y (class ids)")
            return f["x"], f["y"]
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
        x, y = _load_npz(Path(args.data))
    else:
        ds = plugins.dataset(args.dataset)(args.dataset, root=args.root)  # e.g. linfilt.paper's
        x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    x = _images(np.asarray(x), model)
    return x, check_labels(y, "--data y", length=len(x))


def _dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in (float64, bfloat16, ...): inputs are cast to it."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, device: torch.device, what: str) -> np.ndarray:
    model.to(device).eval()
    dtype = _dtype(model)
    parts = [model(torch.from_numpy(x[i:i + CHUNK]).to(device, dtype)).double().cpu().numpy()
             for i in tqdm(range(0, len(x), CHUNK), desc=f"logits {what}", leave=False, disable=None)]
    return np.concatenate(parts)


@torch.no_grad()
def _check_fits(model: nn.Module, x: np.ndarray, device: torch.device) -> None:
    """One sample through the model, before the real passes: a size it cannot take is an error
    naming both sizes."""
    try:
        model.to(device).eval()(torch.from_numpy(x[:1]).to(device, _dtype(model)))
    except RuntimeError as exc:
        first, channels = _input_layout(model)
        takes = f"({channels}, H, W) images" if channels else f"{first.in_features} values per sample"
        raise LinfiltError(f"--data x has samples of shape {x.shape[1:]} but the model takes {takes} "
                           f"({str(exc).splitlines()[0]})") from None


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
    if args.method == "randomization" and args.seed is None:
        raise LinfiltError("--method randomization needs --seed N (its random z must be reproducible)")
    model_path = Path(args.model)
    out = check_output_file(args.out, flag="--out", inputs=(args.model, args.data), force=args.force)
    device = _device(args.device)
    model, spec = load_model(model_path)
    forget = _forget_ids(args.forget, spec)
    x, y = _load_data(args, model)

    earlier = np.isin(y, spec.forgotten_ids)  # samples of classes forgotten before: not this model's
    unknown = sorted(set(y[~earlier & ~np.isin(y, spec.class_ids)].tolist()))
    if unknown:
        raise LinfiltError(f"the data has labels {unknown[:10]} that are not classes of this model "
                           f"(its classes: {list(spec.class_ids)})")
    x, y = x[~earlier], y[~earlier]
    if not len(y):
        raise LinfiltError("the data has no samples of this model's classes: A needs samples of every class")
    _check_fits(model, x, device)
    before = _logits(model, x, device, "before")
    new = unlearn(model, forget, method=args.method, per_class=args.per_class, rng=args.seed,
                  allow_pinv=args.allow_pinv, logits=before, labels=y)
    after = _logits(new, x, device, "after")
    new_spec = spec.after_unlearn(new)
    save_model(out, new, new_spec)

    step = new_spec.history[-1]
    pred_before = np.asarray(spec.class_ids)[before.argmax(axis=1)]
    pred_after = np.asarray(new_spec.class_ids)[after.argmax(axis=1)]
    gone = np.isin(y, forget)
    kept = ~gone
    print(f"forgot {_describe(step.forgot, step.forgot_names)} from {model_path} by {args.method}")
    source = "all" if args.per_class is None else f"{args.per_class} per class,"
    print(f"A estimated from {source} {step.samples} samples of {len(y)} given")
    pinv = " (pseudo-inverse used)" if step.pinv else ""
    print(f"condition number of A: {step.condition_number:.4g}{pinv}")
    print(f"classes kept ({new_spec.num_classes}): {_describe(new_spec.class_ids, new_spec.class_names)}")
    if kept.any():
        print(f"accuracy on retained classes ({int(kept.sum())} samples): "
              f"before {np.mean(pred_before[kept] == y[kept]):.4f}, after {np.mean(pred_after[kept] == y[kept]):.4f}")
    if gone.any():
        ids, counts = np.unique(pred_after[gone], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:3]
        names = dict(zip(new_spec.class_ids, new_spec.class_names))
        where = ", ".join(f"{ids[i]} {names[int(ids[i])]!r} {counts[i] / gone.sum():.0%}" for i in top)
        print(f"forgotten classes ({int(gone.sum())} samples): accuracy before "
              f"{np.mean(pred_before[gone] == y[gone]):.4f}; now predicted as {where}")
    if earlier.any():
        print(f"skipped {int(earlier.sum())} samples of classes forgotten earlier")
    print(f"wrote {out}")
    return 0
