"""The `linfilt` command line: one module per subcommand, each with `register(subparsers)`.

The core's commands are `unlearn` and `audit`; plugins (the reproduction's `linfilt.paper`, or
any other package of the entry-point group `linfilt.plugins`) add theirs. Only the chosen
subcommand's module is imported, so `linfilt audit` never loads torch or the reproduction.
A subcommand sets `func` (taking the parsed args, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from linfilt import plugins
from linfilt.errors import LinfiltError

CORE_COMMANDS = {"unlearn": "linfilt.cli.unlearn", "audit": "linfilt.cli.audit"}


def commands() -> dict[str, str]:
    """Every subcommand (name -> module), the core's first, in the order `--help` lists them."""
    plugins.load_plugins()
    return {**CORE_COMMANDS, **{n: m for n, m in plugins.COMMANDS.items() if n not in CORE_COMMANDS}}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `chosen`, only that subcommand's module is imported (the others are
    bare names, enough for argparse to know them)."""
    parser = argparse.ArgumentParser(
        prog="linfilt", description="Class-wide machine unlearning by linear filtration."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands().items():
        if chosen is None or name == chosen:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(first if first in commands() else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LinfiltError as exc:  # bad input the user can fix: one line, no traceback
        message = " ".join(str(exc).split("\n"))  # messages quoting other tools may span lines
        print(f"linfilt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
