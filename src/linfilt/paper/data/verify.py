"""Checksum verification, done once per file version and remembered.

A marker in the cache folder records, per verified file, its size, mtime and digest; a file whose
size and mtime still match is not hashed again, so a load after the first costs a few `stat`s.
A file changed in place with its size and mtime kept is therefore not noticed until a full check
(`force=True`, `linfilt data verify --full`). Without a cache folder every file is hashed.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from linfilt.atomic import write_json
from linfilt.paper.data.catalog import FileSpec
from linfilt.paper.data.locate import Location
from linfilt.errors import CorruptFileError

_CHUNK = 1 << 20


def hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def marker_path(location: Location, cache: Path) -> Path:
    key = hashlib.sha256(f"{location.dir.resolve()}|{location.layout.fmt}".encode()).hexdigest()[:32]
    return cache / "verified" / f"{key}.json"


def _read_marker(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # missing or unreadable marker: verify again


def _fix_hint(path: Path) -> str:
    return f"Delete {path} (loading again downloads it) or replace it with the canonical file."


def _check_size(path: Path, spec: FileSpec, size: int) -> None:
    if spec.size is not None and size != spec.size:
        what = "truncated" if size < spec.size else "too long"
        raise CorruptFileError(
            f"{path} is {size:,} bytes, expected {spec.size:,} ({what} or not the canonical file). "
            + _fix_hint(path)
        )


def is_verified(location: Location, cache: Path) -> bool:
    """True when the marker covers every file as it is now (no hashing)."""
    marker = _read_marker(marker_path(location, cache))
    for spec, path in zip(location.layout.files, location.paths()):
        st = path.stat()
        rec = marker.get(spec.rel)
        if not rec or rec[:2] != [st.st_size, st.st_mtime_ns]:
            return False
    return True


def verify(location: Location, cache: Path | None, tree_sha256: str | None = None, force: bool = False) -> int:
    """Check every file of `location` against its canonical digest; return how many were hashed.

    Raises CorruptFileError naming the first bad file. The marker is written only when all pass
    (and there is a cache folder).
    """
    mpath = None if cache is None else marker_path(location, cache)
    old = {} if force or mpath is None else _read_marker(mpath)
    new: dict[str, list] = {}
    hashed = 0
    for spec, path in zip(location.layout.files, location.paths()):
        st = path.stat()
        _check_size(path, spec, st.st_size)
        rec = old.get(spec.rel)
        if rec and rec[:2] == [st.st_size, st.st_mtime_ns]:
            digest = rec[2]
        else:
            digest = hash_file(path, spec.algo)
            hashed += 1
        if not digest.startswith(spec.digest):
            canonical = "is" if len(spec.digest) == len(digest) else "starts with"
            raise CorruptFileError(
                f"{path} is corrupt, truncated or not the canonical file: its {spec.algo} is {digest}, "
                f"the canonical one {canonical} {spec.digest}. " + _fix_hint(path)
            )
        new[spec.rel] = [st.st_size, st.st_mtime_ns, digest]
    if tree_sha256 is not None:
        listing = "".join(f"{new[s.rel][2]}  {s.rel}\n" for s in location.layout.files)
        if hashlib.sha256(listing.encode()).hexdigest() != tree_sha256:
            raise CorruptFileError(
                f"the files under {location.dir} are not the canonical set, although each matches its "
                "short checksum; replace the folder with a fresh copy."
            )
    if hashed and mpath is not None:
        try:
            write_json(mpath, {"dir": str(location.dir.resolve()), "fmt": location.layout.fmt, "files": new})
        except OSError as exc:  # e.g. a full disk: remembering is only a speed-up
            warnings.warn(f"could not record the verification in {mpath} ({exc}); the files are hashed again next time")
    return hashed
