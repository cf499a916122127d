"""`linfilt unlearn MODEL --forget C [C ...] (--data D.npz | --dataset NAME) --out OUT.safetensors`.

Loads a model of the project's format, estimates A from the given data, forgets the classes by
linear filtration, writes the new model (its spec records the filtration) and prints what it did.
Class ids are always the ORIGINAL ids, so a model can be unlearned again and again.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from linfilt.errors import LinfiltError
from linfilt.filtration import METHODS
from linfilt.modelio import ModelSpec, load_model, save_model

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
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists (never the input)")
    p.add_argument("--allow-pinv", action="store_true",
                   help="use a pseudo-inverse when A is singular or ill-conditioned")
    p.add_argument("--device", default="cpu", help="torch device for the forward passes (cpu, cuda)")
    p.set_defaults(func=run)


def _check_out(model: Path, out: Path, force: bool) -> None:
    same = out.resolve() == model.resolve() or (out.exists() and model.exists() and os.path.samefile(out, model))
    if same:
        raise LinfiltError(f"--out {out} is the input model; write the new model to another file")
    if out.exists() and not force:
        raise LinfiltError(f"--out {out} exists; choose another file or pass --force to overwrite it")


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
    from linfilt.data import to_float

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = sorted({"x", "y"} - set(f.files))
            if missing:
                raise LinfiltError(f"{path} lacks arrays {missing}: it needs x (inputs) and y (class ids)")
            x, y = f["x"], f["y"]
    except FileNotFoundError:
        raise LinfiltError(f"--data {path}: no such file") from None
    except (ValueError, OSError) as exc:  # not an npz, truncated, or object arrays (would unpickle)
        raise LinfiltError(f"--data {path} is not a readable .npz of plain arrays: {exc}") from None
    if x.dtype == np.uint8:
        x = to_float(x)
    elif not np.issubdtype(x.dtype, np.floating) or x.ndim < 2:
        raise LinfiltError(f"--data x must be uint8 images (N, H, W, C) or float (N, C, H, W), "
                           f"got {x.dtype} with shape {x.shape}")
    return x.astype(np.float32, copy=False), y


def _load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    if args.data is not None:
        x, y = _load_npz(Path(args.data))
    else:
        from linfilt.data import load, to_float

        ds = load(args.dataset, root=args.root)
        x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
        x = to_float(x)
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        raise LinfiltError(f"labels y must be {len(x)} integer class ids, got {y.dtype} with shape {y.shape}")
    return x, y.astype(np.int64)


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, device: torch.device, what: str) -> np.ndarray:
    model.to(device).eval()
    parts = []
    try:
        for i in tqdm(range(0, len(x), CHUNK), desc=f"logits {what}", leave=False, disable=None):
            parts.append(model(torch.from_numpy(x[i:i + CHUNK]).to(device)).double().cpu().numpy())
    except RuntimeError as exc:
        raise LinfiltError(f"the model cannot run on inputs of shape {x.shape[1:]}: "
                           f"{str(exc).splitlines()[0]}") from None
    return np.concatenate(parts)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LinfiltError(f"--device {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LinfiltError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    import linfilt

    model_path, out = Path(args.model), Path(args.out)
    _check_out(model_path, out, args.force)
    if args.method == "randomization" and args.seed is None:
        raise LinfiltError("--method randomization needs --seed N (its random z must be reproducible)")
    device = _device(args.device)
    model, spec = load_model(model_path)
    forget = _forget_ids(args.forget, spec)
    x, y = _load_data(args)

    earlier = np.isin(y, spec.forgotten_ids)  # samples of classes forgotten before: not this model's
    unknown = sorted(set(y[~earlier & ~np.isin(y, spec.class_ids)].tolist()))
    if unknown:
        raise LinfiltError(f"the data has labels {unknown[:10]} that are not classes of this model "
                           f"(its classes: {list(spec.class_ids)})")
    x, y = x[~earlier], y[~earlier]
    before = _logits(model, x, device, "before")
    new = linfilt.unlearn(model, forget, method=args.method, per_class=args.per_class, rng=args.seed,
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
    cond = "inf" if step.condition_number is None else f"{step.condition_number:.4g}"
    print(f"condition number of A: {cond}" + (" (pseudo-inverse used)" if step.pinv else ""))
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
