"""`linfilt data list` (what is found where, verified or not) and `linfilt data verify [NAME] [--full]`.

`verify` hashes the source files that changed (size or mtime) since they were last verified, or all
of them with `--full`, and re-hashes the decoded-array cache against the checksums stored with it.
"""
from __future__ import annotations

import argparse
import sys

from linfilt.paper.data import NAMES
from linfilt.paper.data import cache as array_cache
from linfilt.paper.data.loader import check_folder, not_found_error, spec_for
from linfilt.paper.data.locate import Location, cache_root, find, search_dirs, usable_cache
from linfilt.paper.data.verify import is_verified, verify
from linfilt.errors import CorruptFileError, LinfiltError

_FILE_BASED = tuple(n for n in NAMES if n != "digits")


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="find and verify the data sets")
    sub = parser.add_subparsers(dest="data_command", required=True)
    p_list = sub.add_parser("list", help="show where each data set is found, and whether it is verified")
    p_verify = sub.add_parser("verify", help="check data files and the decoded cache against their checksums")
    p_verify.add_argument("name", nargs="?", choices=_FILE_BASED, help="one data set (default: each one found)")
    p_verify.add_argument("--full", action="store_true",
                          help="re-hash every source file, also those unchanged (size and mtime) since verified")
    for p in (p_list, p_verify):
        p.add_argument("--root", help="a data folder to look in first")
    p_list.set_defaults(func=run_list)
    p_verify.set_defaults(func=run_verify)


def run_list(args: argparse.Namespace) -> int:
    check_folder(args.root, "--root")
    cache = cache_root()
    for name in NAMES:
        if name == "digits":
            print(f"{name:<10} bundled with scikit-learn")
            continue
        loc = find(spec_for(name), args.root)
        if loc is None:
            hint = f"downloaded on first load; `linfilt data verify {name}` says where files may go"
            print(f"{name:<10} not found ({hint})")
            continue
        status = "verified" if is_verified(loc, cache) else "not verified yet"
        entry = array_cache.entry_dir(name, loc, cache)
        decoded = ", decoded arrays cached" if (entry / "meta.json").is_file() else ""
        print(f"{name:<10} {loc.dir}  [{loc.layout.fmt}, {loc.origin}]  {status}{decoded}")
    print("data folders searched, in order:")
    for path, origin in search_dirs(args.root):
        print(f"    {path}  ({origin})")
    print(f"cache: {cache}")
    return 0


def _check_cache(name: str, loc: Location, cache) -> str:
    """How the decoded-array cache stands; CorruptFileError (with the fix) when an entry is damaged."""
    if cache is None:
        return "none (the cache folder is not writable)"
    entry = array_cache.entry_dir(name, loc, cache)
    try:
        cached = array_cache.read(entry, name)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{exc}; delete {entry} (the next load decodes {name} again from its source files)") from None
    return "not built yet" if cached is None else "every array matches its checksum"


def run_verify(args: argparse.Namespace) -> int:
    check_folder(args.root, "--root")
    cache = usable_cache()
    failed = False
    for name in [args.name] if args.name else _FILE_BASED:
        spec = spec_for(name)
        try:
            loc = find(spec, args.root)
            if loc is None and not args.name:
                print(f"{name:<10} not found, nothing to verify")
                continue
            if loc is None:
                raise not_found_error(spec, args.root, None, "nothing to verify")
            hashed = verify(loc, cache, spec.tree_sha256, force=args.full)
            cached = _check_cache(name, loc, cache)
        except LinfiltError as exc:
            print(f"linfilt data verify: {name}: error: {exc}", file=sys.stderr)
            failed = True
            continue
        n = len(loc.layout.files)
        how = "all re-hashed" if args.full else (
            f"{hashed} hashed, {n - hashed} unchanged since verified by size and mtime; --full re-hashes all")
        print(f"{name:<10} OK: {n} files match their canonical checksums in {loc.dir} ({how}); "
              f"decoded cache: {cached}")
    return 2 if failed else 0
