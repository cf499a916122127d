"""`load(name)`: find the files, verify them once, decode them once, and serve the cached arrays."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from linfilt.paper.data import cache as array_cache
from linfilt.paper.data import cifar, idx, pgm
from linfilt.paper.data.catalog import ATT_CLASSES, MNIST_CLASSES, NAMES, SPECS, Spec
from linfilt.paper.data.dataset import Dataset
from linfilt.paper.data.digits import load_digits
from linfilt.paper.data.download import Opener, download as fetch_spec
from linfilt.paper.data.locate import Location, cache_root, find, search_dirs, usable_cache
from linfilt.paper.data.verify import verify
from linfilt.errors import CorruptFileError, DataNotFoundError, LinfiltError

_ATT_SHAPE = (112, 92)


def spec_for(name: str) -> Spec:
    if not isinstance(name, str) or name not in SPECS:
        raise LinfiltError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return SPECS[name]


def _listing(spec: Spec) -> str:
    rels = [f"{spec.layouts[0].subdir}/{f.rel}" for f in spec.layouts[0].files]
    if len(rels) > 10:
        rels = [rels[0], rels[1], "...", rels[-1], f"({len(rels)} files)"]
    return "\n".join(f"    {r}" for r in rels)


def not_found_error(spec: Spec, root, cache_dir, reason: str) -> DataNotFoundError:
    """The one error for absent data: what is expected, where it was looked for, where to get it."""
    searched = "\n".join(f"    {p}  ({origin})" for p, origin in search_dirs(root, cache_dir))
    others = "; ".join(f"{lay.subdir or '.'}/ ({lay.note or lay.fmt})" for lay in spec.layouts[1:])
    urls = "\n".join(f"    {s.urls[0]}" + (" (extract it)" if s.archive else "") for s in spec.sources)
    return DataNotFoundError(
        f"{spec.name} not found ({reason}).\n"
        f"Expected files, relative to a data folder:\n{_listing(spec)}\n"
        f"Data folders searched, in this order (pass root= or set LINFILT_DATA to add one):\n{searched}\n"
        f"Also accepted inside a data folder: {others}.\n"
        f"Download from:\n{urls}"
    )


def _obtain(spec: Spec, root, cache_dir, allow_download: bool, opener, progress: bool) -> Location:
    if not allow_download:
        raise not_found_error(spec, root, cache_dir, "downloading is switched off")
    target = Path(root).expanduser() if root is not None else cache_root(cache_dir) / "data"
    try:
        folder = fetch_spec(spec, target, opener, progress)
    except OSError as exc:
        raise not_found_error(spec, root, cache_dir, f"downloading failed: {exc}") from None
    return Location(folder, spec.layouts[0], "downloaded")


def _decode(name: str, loc: Location) -> Dataset:
    """Parse the verified files into arrays (nothing is written here)."""
    paths = loc.paths()
    fmt = loc.layout.fmt
    if fmt in ("idx-gz", "idx"):
        x_train, y_train = idx.read_images(paths[0]), idx.read_labels(paths[1])
        x_test, y_test = idx.read_images(paths[2]), idx.read_labels(paths[3])
        classes = MNIST_CLASSES
    elif fmt in ("cifar-bin", "cifar-py"):
        classes = (cifar.read_bin_meta if fmt == "cifar-bin" else cifar.read_py_meta)(paths[0])
        rels = [f.rel for f in loc.layout.files]
        x_train, y_train = cifar.read_split(loc.dir, fmt, rels[1:6])
        x_test, y_test = cifar.read_split(loc.dir, fmt, rels[6:7])
    else:  # pgm: person X image Y in order s1/1 .. s40/10; every image is both train and test
        x_train = np.stack([pgm.read_pgm(p, _ATT_SHAPE) for p in paths])[..., None]
        y_train = np.repeat(np.arange(len(ATT_CLASSES), dtype=np.int64), 10)
        x_test, y_test, classes = x_train.copy(), y_train.copy(), ATT_CLASSES
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise CorruptFileError(f"{name} in {loc.dir}: {len(x)} {part} images but {len(y)} labels")
    return Dataset(name, x_train, y_train, x_test, y_test, tuple(classes), f"{loc.dir} ({fmt})")


def check_folder(value, name: str) -> None:
    """None, or a str/PathLike naming a folder (which may not exist yet), not a file."""
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise LinfiltError(f"{name} must be a folder path (str or os.PathLike) or None, got {value!r}")
    if Path(value).expanduser().is_file():
        raise LinfiltError(f"{name} {value} is a file, not a folder")


def _check_args(root, cache_dir, download, opener, progress) -> None:
    """Refuse wrong argument types before any lookup, download or write (`spec_for` checks the name)."""
    check_folder(root, "root")
    check_folder(cache_dir, "cache_dir")
    for flag, value in (("download", download), ("progress", progress)):
        if not isinstance(value, bool):
            raise LinfiltError(f"{flag} must be True or False, got {value!r}")
    if opener is not None and not callable(opener):
        raise LinfiltError(f"opener must be a callable like urllib.request.urlopen, or None, got {opener!r}")


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    opener: Opener | None = None,
    progress: bool = True,
) -> Dataset:
    """Load "mnist", "cifar10", "att_faces" or "digits" as uint8 (N, H, W, C) images and int64 labels.

    Files are looked for in `root`, then each folder of $LINFILT_DATA, then the user cache
    (`cache_dir`, $LINFILT_CACHE, or ~/.cache/linfilt) under `data/`; absent files are downloaded
    (when `download`) into `root` or the user cache. Files are checked against their canonical
    checksums once per version (size and mtime); decoded arrays are cached with their SHA-256, checked
    on every load, and returned memory-mapped copy-on-write. A damaged cache entry is decoded again
    (with a warning); an unwritable cache folder means working without it (with a warning).
    AT&T faces has no split: all 400 images are both train and test (see `att_split`).
    """
    _check_args(root, cache_dir, download, opener, progress)
    if isinstance(name, str) and name == "digits":
        return load_digits()
    spec = spec_for(name)
    location = find(spec, root, cache_dir) or _obtain(spec, root, cache_dir, download, opener, progress)
    cache = usable_cache(cache_dir)
    verify(location, cache, spec.tree_sha256)
    if cache is None:
        return _decode(name, location)
    entry = array_cache.entry_dir(name, location, cache)
    try:
        cached = array_cache.read(entry, name)
    except CorruptFileError as exc:
        warnings.warn(f"{exc}; decoding {name} again from its source files", stacklevel=2)
        cached = None
    if cached is not None:
        return cached
    dataset = _decode(name, location)
    try:
        array_cache.write(entry, dataset)
    except OSError as exc:  # e.g. a full disk: an unwritable cache costs speed, not correctness
        warnings.warn(f"could not cache {name} in {entry} ({exc}); the next load decodes it again", stacklevel=2)
        return dataset
    return array_cache.read(entry, name) or dataset  # None only if another process is rewriting it
