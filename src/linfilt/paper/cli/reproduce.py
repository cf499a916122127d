"""`linfilt reproduce ARTEFACT...`: train (cached), unlearn, audit, and write the report."""
from __future__ import annotations

import argparse

from linfilt.paper.cli.train import add_backend_arguments
from linfilt.paper.experiments.reproduce import reproduce
from linfilt.paper.settings import ATTACK_PROTOCOLS, INVERSION, PROTOCOL, REPEATS

_EPOCHS = ", ".join(f"{name} {p['epochs']}" for name, p in PROTOCOL.items() if name != "digits")


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", metavar="ARTEFACT",
                   help="table1 .. table10, figure1, figure3, figure5, figure6, or all (the paper's); "
                        "fidelity (how far each attack protocol choice moves the MNIST numbers)")
    p.add_argument("--models", type=int, help="models per population (paper: 100)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: the paper's, {_EPOCHS}; "
                                              f"inversion MLP {INVERSION['epochs']})")
    p.add_argument("--repeats", type=int, help=f"attack repeats behind each interval (default {REPEATS})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="runs", help="results folder (default ./runs)")
    p.add_argument("--report-dir", help="where report.md and its figures go (default: --out)")
    p.add_argument("--chunk-size", type=int,
                   help="models trained at once, each chunk one task with --backend ray (default 1 "
                        "with the loop strategy, else 100); with a batched strategy (MLPs; every "
                        "model on cuda) each chunk size has populations and results of its own: give "
                        "the one the populations were trained with")
    p.add_argument("--protocol", choices=sorted(ATTACK_PROTOCOLS), default="ours",
                   help="attack protocol: ours (default: a fresh image subset per model, AdaBoost "
                        "SAMME) or authors (their scripts: one image subset per population and side, "
                        "AdaBoost SAMME.R, their AT&T ResNet; the report adds the fixed-split run)")
    p.add_argument("--print", action="store_true", dest="print_report", help="also print the report")


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="reproduce the paper's tables and figures",
                       description="Train the populations (cached, resumable), unlearn them from their "
                                   "stored logits, run the audit and write <out>/report.md.")
    add_scale_arguments(p)
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel attack fits (default 1; with --backend ray, on the cluster, -1: one "
                        "per cluster CPU)")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = reproduce(args.artifacts, args.out, models=args.models, epochs=args.epochs,
                       repeats=args.repeats, device=args.device, n_jobs=args.jobs,
                       report_dir=args.report_dir, protocol=args.protocol, backend=args.backend,
                       address=args.address, cpus_per_task=args.cpus_per_task,
                       gpus_per_task=args.gpus_per_task, chunk_size=args.chunk_size)
    if args.print_report:
        print(report.read_text())
    print(f"report written to {report}")
    return 0
