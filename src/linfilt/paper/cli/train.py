"""`linfilt train DATASET`: train populations of models and store their test-set logits."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from linfilt.errors import LinfiltError
from linfilt.filtration import retained_classes
from linfilt.paper.cluster import BACKENDS, check_backend
from linfilt.paper.models import ARCHITECTURES
from linfilt.outputs import check_output_dir
from linfilt.paper.population import POPULATIONS, STRATEGIES, PopulationConfig, check_experiment_name, \
    results_dir, run_dir, train_populations
from linfilt.paper.settings import LR, MODELS, PROTOCOL
from linfilt.paper.training import PRECISIONS
from linfilt.validation import check_class_ids, check_float, check_optional_positive_int, \
    check_positive_int, check_seed

# Widest dense layer --p accepts: far beyond the paper's 1024, and a typo cannot ask for terabytes.
MAX_P = 2**16


def _forget(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--forget takes class ids like 0 or 0,1,2, not {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train populations of models (seen / notseen / transfer / dropin), keep their test logits",
        description="Train M models of one architecture with the paper's settings (overridable) and "
                    "store their test-set logits under OUT/EXPERIMENT/<config hash>/. Interrupted runs "
                    "resume at the last finished epoch.")
    p.add_argument("dataset", choices=sorted(PROTOCOL))
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="default: the paper's for the data set")
    p.add_argument("--models", type=int, default=MODELS, help=f"models per population (default {MODELS})")
    p.add_argument("--forget", type=_forget, default=(0,), help="forgotten class ids, e.g. 0 or 0,1,2,3")
    p.add_argument("--population", nargs="+", choices=POPULATIONS, default=["seen"],
                   help="one or more populations (transfer reuses seen models trained in the same run)")
    p.add_argument("--p", type=int, help="width of the CIFAR-10 CNN's dense layer (64, 256, 1024)")
    p.add_argument("--epochs", type=int, help="default: the paper's")
    p.add_argument("--batch-size", type=int, help="default: the paper's")
    p.add_argument("--lr", type=float, default=LR, help=f"Adam's learning rate (default {LR:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--strategy", choices=("auto",) + STRATEGIES, default="auto",
                   help="how models are batched (auto: the fastest measured for the device)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16 autocast (for GPUs)")
    p.add_argument("--chunk-size", type=int,
                   help="models trained at once (default 1 with the loop strategy, else 100); with a "
                        "batched strategy it changes the models' rounding, so each chunk size keeps its own results")
    p.add_argument("--save-models", action="store_true", help="also save every model (.safetensors)")
    p.add_argument("--out", default="runs", help="results folder (default ./runs)")
    p.add_argument("--experiment", default="populations", help="subfolder of OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend, --address, --cpus-per-task, --gpus-per-task (linfilt.paper.cluster)."""
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where the models train: on this machine (local, default) or as one Ray task "
                        "per chunk on a Ray cluster (ray; pip install 'linfilt[ray]')")
    p.add_argument("--address", help="with --backend ray: the cluster's address, as `ray start --head` "
                                      "prints it (default: a local Ray instance for this run)")
    p.add_argument("--cpus-per-task", type=float,
                   help="with --backend ray: CPUs each chunk's task asks for (default 1)")
    p.add_argument("--gpus-per-task", type=float,
                   help="with --backend ray: GPUs each chunk's task asks for; a fraction below 1 lets "
                        "tasks share a GPU (default 1 with --device cuda, else 0)")


def _check_args(args: argparse.Namespace) -> None:
    """Every argument, before any data is loaded or any folder made."""
    check_class_ids(args.forget, "--forget")
    check_positive_int(args.models, "--models")
    for flag in ("epochs", "batch_size", "chunk_size"):
        check_optional_positive_int(getattr(args, flag), f"--{flag.replace('_', '-')}")
    if args.p is not None:
        check_positive_int(args.p, "--p", maximum=MAX_P)
    check_float(args.lr, "--lr", low=0, low_open=True)
    check_seed(args.seed, "--seed")
    check_experiment_name(args.experiment, "--experiment")
    check_output_dir(args.out, flag="--out")
    check_output_dir(Path(args.out) / args.experiment, flag="--experiment")
    check_backend(args.backend, args.address, args.cpus_per_task, args.gpus_per_task, args.device,
                  cli=True)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    overrides = {"models": args.models, "lr": args.lr, "seed": args.seed, "device": args.device,
                 "strategy": args.strategy, "precision": args.precision}
    if args.arch is not None and args.arch != PROTOCOL[args.dataset]["arch"]:
        raise LinfiltError(f"{args.dataset} is trained with --arch {PROTOCOL[args.dataset]['arch']}; "
                           "the architectures take the data sets' own input shapes")
    if args.p is not None:
        if PROTOCOL[args.dataset]["arch"] != "cifar_cnn":
            raise LinfiltError("--p sets the CIFAR-10 CNN's dense width; it applies to cifar10 only")
        overrides["arch_kwargs"] = {"p": args.p}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    cfg = PopulationConfig.protocol(args.dataset, args.forget, **overrides)
    logits = train_populations(cfg, args.population, out=args.out, experiment=args.experiment,
                               chunk_size=args.chunk_size, save_models=args.save_models,
                               progress=not args.quiet, backend=args.backend, address=args.address,
                               cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task)
    root = run_dir(cfg, args.out, args.experiment)
    labels = np.load(root / "test_labels.npy")
    print(f"{results_dir(cfg, args.out, args.experiment, args.chunk_size)}  (strategy {cfg.strategy}, {cfg.models} models, {cfg.epochs} epochs, "
          f"batch {cfg.batch_size})")
    for name, z in logits.items():
        acc = _accuracy(name, z, labels, cfg.forget)
        print(f"  {name:<9} logits/{name}.npy {z.shape}  test accuracy "
              f"{100 * acc.mean():.2f} ± {100 * acc.std():.2f} %")
    return 0


def _accuracy(population: str, logits: np.ndarray, labels: np.ndarray, forget: tuple[int, ...]
              ) -> np.ndarray:
    """Per model: seen models over all test images, the others over the retained classes' images."""
    if population == "seen":
        return (logits.argmax(2) == labels).mean(1)
    kept = retained_classes(logits.shape[2] + len(forget), forget)
    mask = np.isin(labels, kept)
    return (kept[logits[:, mask].argmax(2)] == labels[mask]).mean(1)
