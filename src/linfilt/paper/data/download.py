"""Downloads from the canonical sources: resumable, checksummed, atomic.

A file is fetched into `<name>.part`; an interrupted download resumes from the bytes already there
with an HTTP Range request, and only a complete, MD5-verified file is renamed to its final name.
The `.part` file is the one write here that does not go through `linfilt.atomic`: keeping the
partial bytes across runs is what makes resuming possible. `opener` (default
`urllib.request.urlopen`) can be replaced, e.g. by tests or to add a proxy.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from linfilt.atomic import atomic_path
from linfilt.paper.data.catalog import FileSpec, Source, Spec
from linfilt.paper.data.verify import hash_file
from linfilt.errors import CorruptFileError

Opener = Callable[..., object]  # like urllib.request.urlopen(request, timeout=...)
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def fetch(url: str, dest: Path, md5: str | None, opener: Opener | None = None, progress: bool = True) -> None:
    """Download `url` to `dest`, resuming `dest.part` if present; raise CorruptFileError on an MD5 mismatch."""
    opener = opener or urllib.request.urlopen
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = opener(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: the .part already holds the whole file
            raise
        response = None
    if response is not None:
        with response:
            resumed = have > 0 and getattr(response, "status", None) == 206
            if not resumed:
                have = 0  # the server ignored the Range request: start again
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                disable=None if progress else True,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
    if md5 is not None:
        got = hash_file(part, "md5")
        if got != md5:
            part.unlink()
            raise CorruptFileError(
                f"downloaded {url} has md5 {got}, expected {md5}; the partial file was removed, "
                "so loading again downloads it afresh"
            )
    os.replace(part, dest)


def fetch_source(source: Source, dest: Path, opener: Opener | None = None, progress: bool = True) -> None:
    """Try each mirror in turn; re-raise the last network error if none answers."""
    error: OSError | None = None
    for url in source.urls:
        try:
            return fetch(url, dest, source.md5, opener, progress)
        except OSError as exc:  # URLError, HTTPError, timeouts are all OSErrors
            error = exc
    assert error is not None
    raise error


def _members(archive: Path, kind: str):
    """(name, open-callable) for each regular file in a tar or zip archive."""
    if kind == "tar":
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                if m.isfile():
                    yield m.name, lambda m=m: tar.extractfile(m)
    else:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.open(info)


def extract(archive: Path, kind: str, folder: Path, files: tuple[FileSpec, ...]) -> None:
    """Write the archive members that end in an expected relative path to `folder / rel`.

    Output paths come from `files`, never from member names, so a hostile archive cannot write
    elsewhere; other members are skipped.
    """
    wanted = {f.rel: f for f in files}
    done: set[str] = set()
    try:
        for name, open_member in _members(archive, kind):
            name = name.replace("\\", "/")
            rel = next((r for r in wanted if name == r or name.endswith("/" + r)), None)
            if rel is None or rel in done:
                continue
            with atomic_path(folder / rel) as tmp, open_member() as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            done.add(rel)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise CorruptFileError(f"{archive} is not a readable {kind} archive ({exc}); delete it and retry") from None
    missing = sorted(set(wanted) - done)
    if missing:
        raise CorruptFileError(f"{archive} lacks {len(missing)} expected files, e.g. {missing[0]}")


def download(spec: Spec, target: Path, opener: Opener | None = None, progress: bool = True) -> Path:
    """Fetch (and extract) `spec` into its first layout under the data folder `target`; return the folder."""
    layout = spec.layouts[0]
    folder = target / layout.subdir
    for source in spec.sources:
        if source.archive is None:
            if not (folder / source.filename).is_file():
                fetch_source(source, folder / source.filename, opener, progress)
            continue
        if all((folder / f.rel).is_file() for f in layout.files):
            continue
        archive = folder / source.filename
        if not archive.is_file():
            fetch_source(source, archive, opener, progress)
        extract(archive, source.archive, folder, layout.files)
        archive.unlink()
    return folder
