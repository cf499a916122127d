"""Where data and caches live: the ordered list of data folders, and the per-user cache folder.

Only the folders a user names are searched (`root`, $LINFILT_DATA) and the user cache: the library
assumes nothing about where it is installed or run from.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from linfilt.paper.data.catalog import Layout, Spec
from linfilt.errors import LinfiltError
from linfilt.outputs import check_output_dir


@dataclass(frozen=True)
class Location:
    """A folder holding every file of one layout."""

    dir: Path
    layout: Layout
    origin: str  # which search step found it, for messages

    def paths(self) -> list[Path]:
        return [self.dir / f.rel for f in self.layout.files]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The per-user cache: `cache_dir`, else $LINFILT_CACHE, else $XDG_CACHE_HOME/linfilt, else ~/.cache/linfilt."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("LINFILT_CACHE"):
        return Path(os.environ["LINFILT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "linfilt"


def usable_cache(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache folder, or None with one warning when it cannot be written (then data is hashed and
    decoded on every load instead: slower, never wrong)."""
    cache = cache_root(cache_dir)
    try:
        check_output_dir(cache, flag="cache folder")
    except LinfiltError as exc:
        warnings.warn(
            f"{exc}; working without the cache, so data files are hashed and decoded on every load "
            "(set LINFILT_CACHE or pass cache_dir= to a writable folder)",
            stacklevel=3,
        )
        return None
    return cache


def search_dirs(root=None, cache_dir=None) -> list[tuple[Path, str]]:
    """Data folders in lookup order, each with a word on where it came from (duplicates dropped)."""
    found: list[tuple[Path, str]] = []
    if root is not None:
        found.append((Path(root).expanduser(), "root argument"))
    for part in os.environ.get("LINFILT_DATA", "").split(os.pathsep):
        if part:
            found.append((Path(part).expanduser(), "LINFILT_DATA"))
    found.append((cache_root(cache_dir) / "data", "user cache"))
    seen: set[Path] = set()
    unique = []
    for path, origin in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, origin))
    return unique


def find(spec: Spec, root=None, cache_dir=None) -> Location | None:
    """The first (folder, layout) pair, in lookup order, where every expected file exists."""
    for base, origin in search_dirs(root, cache_dir):
        for layout in spec.layouts:
            folder = base / layout.subdir if layout.subdir else base
            if all((folder / f.rel).is_file() for f in layout.files):
                return Location(folder, layout, origin)
    return None
