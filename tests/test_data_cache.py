"""The decoded-array cache's checksums, `linfilt data verify` (cache and `--full`), an unwritable
cache folder, and argument checks of `load`, on a small MNIST-format data set built here (so these
tests need no real data)."""
import dataclasses
import gzip
import hashlib
import json
import os
import struct
import tempfile
import warnings

import numpy as np
import pytest

from linfilt.cli import main
from linfilt.paper.data import att_split, catalog, load
from linfilt.paper.data import cache as array_cache
from linfilt.paper.data.catalog import FileSpec
from linfilt.paper.data.dataset import Dataset
from linfilt.errors import CorruptFileError, LinfiltError

_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
          "t10k-labels-idx1-ubyte.gz")


def _idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A small MNIST in root/mnist (the catalog's digests swapped for its own); returns
    (root, cache, expected arrays), the arrays built here independently of the library."""
    monkeypatch.delenv("LINFILT_DATA", raising=False)
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (30, 12))
    y_train, y_test = (rng.integers(0, 10, n).astype(np.uint8) for n in (30, 12))
    blobs = [_idx_gz(a) for a in (x_train, y_train, x_test, y_test)]
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name, blob in zip(_FILES, blobs):
        (folder / name).write_bytes(blob)
    files = tuple(FileSpec(n, len(b), hashlib.md5(b).hexdigest()) for n, b in zip(_FILES, blobs))
    spec = catalog.SPECS["mnist"]
    monkeypatch.setitem(catalog.SPECS, "mnist", dataclasses.replace(
        spec, layouts=(dataclasses.replace(spec.layouts[0], files=files),)))
    cache = tmp_path / "cache"
    monkeypatch.setenv("LINFILT_CACHE", str(cache))  # what `linfilt data` uses
    expected = {"x_train": x_train[..., None], "y_train": y_train.astype(np.int64),
                "x_test": x_test[..., None], "y_test": y_test.astype(np.int64)}
    return tmp_path / "root", cache, expected


def _load(root, cache):
    return load("mnist", root=root, cache_dir=cache, download=False)


def _assert_equal(ds, expected):
    for name, array in expected.items():
        got = getattr(ds, name)
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array, err_msg=name)
    assert ds.classes == tuple("0123456789")


def _entry(cache):
    (entry,) = (cache / "arrays").iterdir()
    return entry


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _edit_classes(entry):
    meta = json.loads((entry / "meta.json").read_text())
    meta["classes"][3] = "three"
    (entry / "meta.json").write_text(json.dumps(meta))


DAMAGE = {  # how the cached entry is damaged -> the file the warning must name
    "flipped label byte": (lambda e: _flip(e / "y_test.npy", -8), "y_test.npy"),  # 1 label: 0..9 stays in range
    "flipped pixel byte": (lambda e: _flip(e / "x_train.npy", 5000), "x_train.npy"),
    "wrong dtype": (lambda e: np.save(e / "x_test.npy", np.zeros((12, 28, 28, 1), np.float32)), "x_test.npy"),
    "wrong shape": (lambda e: np.save(e / "x_test.npy", np.zeros((12, 28, 28), np.uint8)), "x_test.npy"),
    "label out of range": (lambda e: np.save(e / "y_train.npy", np.full(30, 12, np.int64)), "y_train.npy"),
    "edited class names": (_edit_classes, "meta.json"),
    "missing array": (lambda e: (e / "y_train.npy").unlink(), "y_train.npy"),
    "meta not json": (lambda e: (e / "meta.json").write_text("{"), "meta.json"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_cache_entry_is_decoded_again_with_one_warning(tiny, damage):
    root, cache, expected = tiny
    _assert_equal(_load(root, cache), expected)
    spoil, bad_file = DAMAGE[damage]
    spoil(_entry(cache))
    with pytest.warns(UserWarning) as caught:
        again = _load(root, cache)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(_entry(cache) / bad_file) in message and "decoding mnist again from its source files" in message
    _assert_equal(again, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry was rebuilt: the next load is silent
        _assert_equal(_load(root, cache), expected)


def test_structure_is_checked_even_when_the_checksums_match(tmp_path):
    """A consistent entry (checksums recomputed) with labels beyond the classes, or images that do
    not pair with labels, is refused: shape, dtype and label range are checked on every read."""
    x, y = np.zeros((3, 2, 2, 1), np.uint8), np.array([0, 1, 1])
    good = Dataset("t", x, y, x, y, ("a", "b"), "here")
    array_cache.write(tmp_path / "good", good)
    assert array_cache.read(tmp_path / "good", "t").classes == ("a", "b")
    for bad, match in [
        (dataclasses.replace(good, y_test=np.array([0, 1, 2])), r"y_test\.npy.*label 2.*0\.\.1"),
        (dataclasses.replace(good, y_train=np.array([0, 1])), r"y_train\.npy.*2 labels for 3 images"),
        (dataclasses.replace(good, x_train=x[..., 0]), r"x_train\.npy.*uint8 images \(N, H, W, C\)"),
        (dataclasses.replace(good, y_train=y.astype(np.int32)), r"y_train\.npy.*int64"),
    ]:
        array_cache.write(tmp_path / "bad", bad)
        with pytest.raises(CorruptFileError, match=match):
            array_cache.read(tmp_path / "bad", "t")


# --- linfilt data verify -----------------------------------------------------------------------


def test_verify_checks_the_decoded_cache(tiny, capsys):
    root, cache, _ = tiny
    assert main(["data", "verify", "mnist", "--root", str(root)]) == 0
    assert "decoded cache: not built yet" in capsys.readouterr().out
    _load(root, cache)
    assert main(["data", "verify", "mnist", "--root", str(root)]) == 0
    assert "decoded cache: every array matches its checksum" in capsys.readouterr().out
    entry = _entry(cache)
    _flip(entry / "x_test.npy", 200)
    assert main(["data", "verify", "mnist", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(entry / "x_test.npy") in err and f"delete {entry}" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_verify_full_rehashes_a_source_changed_in_place(tiny, capsys):
    """A source file changed with its size and mtime kept passes the quick check (by design: the
    marker remembers size and mtime), and `--full` finds it."""
    root, cache, expected = tiny
    _assert_equal(_load(root, cache), expected)
    labels = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    st = labels.stat()
    _flip(labels, st.st_size // 2)
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["data", "verify", "mnist", "--root", str(root)]) == 0
    assert "unchanged since verified" in capsys.readouterr().out
    assert main(["data", "verify", "mnist", "--full", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{labels} is corrupt, truncated or not the canonical file: its md5 is" in err
    assert main(["data", "verify", "--full", "--root", str(root)]) == 2  # every data set, too


# --- an unwritable cache folder ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["cache_dir under a file", "LINFILT_CACHE a file", "read-only folder"])
def test_an_unwritable_cache_folder_works_without_the_cache(tiny, tmp_path, monkeypatch, where):
    # Tests run as root, so chmod cannot make a folder unwritable: a path that cannot be a folder
    # can't be written, and a read-only file system is simulated by refusing every new file.
    root, cache, expected = tiny
    (tmp_path / "a file").write_text("not a folder")
    if where == "cache_dir under a file":
        cache = cache_dir = tmp_path / "a file" / "cache"
    elif where == "LINFILT_CACHE a file":
        cache, cache_dir = tmp_path / "a file", None
        monkeypatch.setenv("LINFILT_CACHE", str(cache))
    else:
        cache_dir = cache
        cache.mkdir()

        def read_only(*args, **kwargs):
            raise PermissionError(30, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkstemp", read_only)  # what every write here goes through
    for _ in range(2):  # the first load and the next, each on its own
        with pytest.warns(UserWarning) as caught:
            ds = _load(root, cache_dir)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert f"cache folder {cache}" in message and "working without the cache" in message
        _assert_equal(ds, expected)
    assert (tmp_path / "a file").read_text() == "not a folder"


def test_verify_with_an_unwritable_cache_folder(tiny, tmp_path, monkeypatch, capsys):
    root, _, _ = tiny
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("LINFILT_CACHE", str(tmp_path / "a file" / "cache"))
    with pytest.warns(UserWarning, match="working without the cache"):
        assert main(["data", "verify", "mnist", "--root", str(root)]) == 0
    assert "mnist      OK: 4 files" in capsys.readouterr().out
    _flip(root / "mnist" / "train-images-idx3-ubyte.gz", 100)
    with pytest.warns(UserWarning, match="working without the cache"):
        assert main(["data", "verify", "mnist", "--root", str(root)]) == 2  # with no marker every file is hashed


# --- argument types ----------------------------------------------------------------------------


BAD_ARGUMENTS = {
    "root=5": ({"root": 5}, "root must be a folder path"),
    "root=''": ({"root": ""}, "root must be a folder path"),
    "cache_dir=5": ({"cache_dir": 5}, "cache_dir must be a folder path"),
    "name=5": ({"name": 5}, "unknown data set 5; choose one of mnist, cifar10"),
    "name=[mnist]": ({"name": ["mnist"]}, r"unknown data set \['mnist'\]; choose one of mnist, cifar10"),
    "digits, root=5": ({"name": "digits", "root": 5}, "root must be a folder path"),
    "download='no'": ({"download": "no"}, "download must be True or False"),
    "progress=1": ({"progress": 1}, "progress must be True or False"),
    "opener=str": ({"opener": "http://proxy"}, "opener must be a callable"),
}


@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=list(BAD_ARGUMENTS))
def test_load_refuses_wrong_argument_types(tmp_path, bad):
    kwargs, match = BAD_ARGUMENTS[bad]
    args = {"name": "mnist", "cache_dir": tmp_path / "cache", "download": False, **kwargs}
    with pytest.raises(LinfiltError, match=match):
        load(args.pop("name"), **args)
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_load_refuses_a_root_or_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(LinfiltError, match=f"root {tmp_path / 'f'} is a file, not a folder"):
        load("mnist", root=tmp_path / "f", cache_dir=tmp_path / "cache")
    with pytest.raises(LinfiltError, match=f"cache_dir {tmp_path / 'f'} is a file, not a folder"):
        load("mnist", cache_dir=tmp_path / "f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_att_split_refuses_wrong_argument_types():
    x = np.zeros((12, 2, 2, 1), np.uint8)
    y = np.repeat(np.arange(3), 4)
    ds = Dataset("faces", x, y, x, y, ("a", "b", "c"))
    assert len(att_split(ds, test_per_person=1, seed=3).y_test) == 3
    for kwargs, match in [({"test_per_person": "2"}, "test_per_person must be an integer"),
                          ({"test_per_person": 2.0}, "test_per_person must be an integer"),
                          ({"seed": -1}, "seed must be >= 0"), ({"seed": "0"}, "seed must be an integer")]:
        with pytest.raises(LinfiltError, match=match):
            att_split(ds, **kwargs)
    with pytest.raises(LinfiltError, match="att_split expects a Dataset"):
        att_split((x, y))
