"""The rule for every path linfilt writes, checked before any work starts.

An output file must not be a directory, must lie in a folder that exists or can be made and is
writable, must never be one of the command's inputs (compared by real path, so `..` and symlinks
do not hide it, and by inode, so hard links do not either), and replaces an existing file only
when the caller says so (`--force`). An output folder must not be an existing file and must be
writable. A failed check raises one LinfiltError naming the flag and creates nothing.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from linfilt.errors import LinfiltError

PathLike = str | os.PathLike


def _existing_ancestor(path: Path, flag: str) -> Path:
    """The nearest ancestor of `path` that exists; it must be a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LinfiltError(f"{flag} {path}: {parent} is a file, not a folder")
            return parent
    raise LinfiltError(f"{flag} {path}: no part of this path exists")  # unreachable on POSIX


def _check_writable(folder: Path, flag: str, target: Path) -> None:
    """Probe by creating (and removing) a temporary file: os.access says yes to root on read-only
    mounts, and a real write is what will happen later."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".linfilt-probe-", dir=folder)
    except OSError as exc:
        raise LinfiltError(f"{flag} {target}: cannot write in {folder} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links share an inode
    except OSError:
        return False


def check_output_file(path: PathLike, *, flag: str = "--out", inputs: Iterable[PathLike] = (),
                      force: bool = False) -> Path:
    """Validate a file about to be written; returns it as a Path. Creates nothing."""
    out = Path(path)
    if str(path) == "" or out.name in ("", ".", ".."):
        raise LinfiltError(f"{flag} {str(path)!r} names no file")
    for given in inputs:
        if given is not None and _same_file(out, Path(given)):
            raise LinfiltError(f"{flag} {out} is an input of this command ({given}); "
                               "write to another file (inputs are never overwritten, not even with --force)")
    if out.is_dir():
        raise LinfiltError(f"{flag} {out} is a folder; name a file")
    if out.exists() or out.is_symlink():
        if not force:
            raise LinfiltError(f"{flag} {out} exists; choose another file or pass --force to replace it")
        if not out.is_file():
            raise LinfiltError(f"{flag} {out} exists and is not a regular file")
    _check_writable(_existing_ancestor(out.absolute(), flag), flag, out)
    return out


def check_output_dir(path: PathLike, *, flag: str = "--out", inputs: Iterable[PathLike] = ()) -> Path:
    """Validate a folder that files will be written into (it may exist). Creates nothing."""
    out = Path(path)
    if str(path) == "":
        raise LinfiltError(f"{flag} '' names no folder")
    for given in inputs:
        if given is not None and _same_file(out, Path(given)):
            raise LinfiltError(f"{flag} {out} is an input of this command ({given}); choose another folder")
    if out.exists() and not out.is_dir():
        raise LinfiltError(f"{flag} {out} is a file, not a folder")
    folder = out.absolute() if out.is_dir() else _existing_ancestor(out.absolute(), flag)
    _check_writable(folder, flag, out)
    return out
