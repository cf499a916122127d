"""`linfilt bench DATASET...`: every unlearning method on the paper's populations, one audit, one report."""
from __future__ import annotations

import argparse
from pathlib import Path

from linfilt.atomic import write_text
from linfilt.outputs import check_output_dir
from linfilt.paper.bench import Bench, render, run_bench
from linfilt.paper.settings import BENCH
from linfilt.paper.training import check_device
from linfilt.validation import check_n_jobs


def register(sub) -> None:
    p = sub.add_parser("bench", help="compare unlearning methods under one audit",
                       description="Train (cached) the experiment's populations, unlearn every seen model "
                                   "with each method, attack each unlearned population against the "
                                   "retrained one and write <report-dir>/bench.md with a trade-off PNG.")
    p.add_argument("datasets", nargs="+", metavar="DATASET", choices=sorted(BENCH["experiments"]),
                   help="mnist, cifar10 (p = 256), att_faces")
    p.add_argument("--methods", default="all",
                   help="comma-separated: naive, normalization, randomization, zeroing, transfer, ft, "
                        "neggrad, neggrad+, rl, boundary_shrink, scrub, ssd; or all (default)")
    p.add_argument("--attacks", default="paper,strong",
                   help="paper (NN, RF, AB on logits) and/or strong (LR, MLP, sorted logits, U-LiRA, "
                        "probe, head weights); default both")
    p.add_argument("--models", type=int, help="models per population (default: the paper's 100)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the paper's)")
    p.add_argument("--repeats", type=int, help="attack repeats behind each interval")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", default="runs", help="results folder (default ./runs)")
    p.add_argument("--report-dir", help="where bench.md and its figures go (default: --out)")
    p.add_argument("--jobs", type=int, default=1, help="parallel attack fits (default 1)")
    p.add_argument("--print", action="store_true", dest="print_report", help="also print the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    benches = [Bench.named(name, models=args.models, epochs=args.epochs, repeats=args.repeats,
                           methods=args.methods, attacks=args.attacks) for name in args.datasets]
    check_device(args.device)
    n_jobs = check_n_jobs(args.jobs)
    check_output_dir(args.out)
    folder = check_output_dir(Path(args.report_dir or args.out), flag="--report-dir")
    sections = []
    for bench in benches:
        result = run_bench(bench, args.out, args.device, n_jobs)
        sections.append(render(result, folder / f"bench-{bench.dataset}.png"))
    report = folder / "bench.md"
    command = "linfilt bench " + " ".join(args.datasets)
    write_text(report, "# Unlearning methods under one audit\n\nMade by `" + command + "` (options: "
               f"methods {args.methods}, attacks {args.attacks}).\n\n" + "\n".join(sections))
    if args.print_report:
        print(report.read_text())
    print(f"report written to {report}")
    return 0
