"""Where data and caches live: the ordered list of data folders, and the per-user cache folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from linfilt.data.catalog import Layout, Spec

# src/linfilt/data/locate.py -> parents[3] is the repository root of a checkout.
_REPO_ROOT = Path(__file__).resolve().parents[3]


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


def beside_checkout() -> list[Path]:
    """`../shared/data` next to the repository root, found from this file and from the working directory."""
    return [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def search_dirs(root=None, cache_dir=None) -> list[tuple[Path, str]]:
    """Data folders in lookup order, each with a word on where it came from (duplicates dropped)."""
    found: list[tuple[Path, str]] = []
    if root is not None:
        found.append((Path(root).expanduser(), "root argument"))
    for part in os.environ.get("LINFILT_DATA", "").split(os.pathsep):
        if part:
            found.append((Path(part).expanduser(), "LINFILT_DATA"))
    found += [(p, "beside the checkout") for p in beside_checkout()]
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
