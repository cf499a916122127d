"""The `linfilt` command line: one module per subcommand, each with `register(subparsers)`.

A subcommand module adds its parser and sets `func` (taking the parsed args, returning an exit
code). This module only dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from linfilt.errors import LinfiltError

# Subcommand modules under linfilt.cli, in the order `linfilt --help` lists them.
COMMANDS = ("demo", "unlearn", "audit", "data", "train", "reproduce", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linfilt", description="Class-wide machine unlearning by linear filtration."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"linfilt.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LinfiltError as exc:  # bad input the user can fix: one line, no traceback
        message = " ".join(str(exc).split("\n"))  # messages quoting other tools may span lines
        print(f"linfilt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
