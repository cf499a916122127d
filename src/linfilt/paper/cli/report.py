"""`linfilt report ARTEFACT...`: rebuild the report from cached results, without training."""
from __future__ import annotations

import argparse

from linfilt.paper.cli.reproduce import add_scale_arguments
from linfilt.paper.experiments.reproduce import reproduce


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild report.md from cached results (no training)")
    add_scale_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = reproduce(args.artifacts, args.out, models=args.models, epochs=args.epochs,
                       repeats=args.repeats, device=args.device, train=False,
                       report_dir=args.report_dir, protocol=args.protocol, chunk_size=args.chunk_size)
    if args.print_report:
        print(report.read_text())
    print(f"report written to {report}")
    return 0
