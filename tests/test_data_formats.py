"""Parsers, the restricted unpickler, checksum verification and corrupt files (copies in tmp_path)."""
import dataclasses
import gzip
import hashlib
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
from conftest import data_root, requires_data

from linfilt.paper.data import catalog, cifar, idx, load, loader, pgm, verify
from linfilt.errors import CorruptFileError

SHARED = data_root()  # the real data, from $LINFILT_DATA (None without it)
needs_shared = requires_data()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Only the folders a test names are searched; the cache lives in tmp_path."""
    monkeypatch.delenv("LINFILT_DATA", raising=False)
    return tmp_path / "cache"


# --- IDX ---------------------------------------------------------------------------------------


def _idx(shape, data: bytes, ndim=None) -> bytes:
    ndim = len(shape) if ndim is None else ndim
    return struct.pack(">HBB", 0, 8, ndim) + struct.pack(f">{len(shape)}I", *shape) + data


def test_idx_header_is_checked(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    good = tmp_path / "img.gz"
    good.write_bytes(gzip.compress(_idx((3, 28, 28), pixels.tobytes())))
    np.testing.assert_array_equal(idx.read_images(good)[..., 0], pixels)
    p = tmp_path / "x"
    with pytest.raises(CorruptFileError, match="magic"):
        idx.parse_idx(_idx((3, 28, 28), pixels.tobytes(), ndim=1)[:12] + pixels.tobytes(), p, 3)
    with pytest.raises(CorruptFileError, match="truncated"):
        idx.parse_idx(_idx((3, 28, 28), pixels.tobytes()[:-1]), p, 3)
    with pytest.raises(CorruptFileError, match="out of range"):
        bad = tmp_path / "labels"
        bad.write_bytes(_idx((2,), bytes([3, 10])))
        idx.read_labels(bad)


def test_truncated_or_damaged_gzip_is_a_clear_error(tmp_path):
    blob = gzip.compress(_idx((100,), bytes(range(100))))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=str(cut)):
        idx.read_bytes(cut)
    flipped = bytearray(blob)
    flipped[-6] ^= 0xFF  # inside the CRC trailer
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match="damaged.gz"):
        idx.read_bytes(damaged)


# --- PGM ---------------------------------------------------------------------------------------


def test_pgm_parser_reads_header_with_comments_and_checks_sizes(tmp_path):
    raster = np.arange(12, dtype=np.uint8).reshape(3, 4)
    p = tmp_path / "a.pgm"
    assert np.array_equal(pgm.parse_pgm(b"P5\n# made by hand\n4 3\n255\n" + raster.tobytes(), p), raster)
    with pytest.raises(CorruptFileError, match="truncated"):
        pgm.parse_pgm(b"P5\n4 3\n255\n" + raster.tobytes()[:-1], p)
    with pytest.raises(CorruptFileError, match="P5"):
        pgm.parse_pgm(b"P2\n4 3\n255\n" + raster.tobytes(), p)
    with pytest.raises(CorruptFileError, match="maxval"):
        pgm.parse_pgm(b"P5\n4 3\n10\n" + raster.tobytes(), p)
    with pytest.raises(CorruptFileError, match="header ends early"):
        pgm.parse_pgm(b"P5\n4 3", p)
    p.write_bytes(b"P5 4 3 255\n" + raster.tobytes())
    with pytest.raises(CorruptFileError, match="expected 92x112"):
        pgm.read_pgm(p, (112, 92))


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _records(labels, images_nhwc) -> bytes:
    """Binary-version records, built from (n, 32, 32, 3) images: label, then R, G, B planes."""
    planes = images_nhwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
    return b"".join(bytes([lab]) + row.tobytes() for lab, row in zip(labels, planes))


def test_cifar_binary_plane_order_and_checks(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    f = tmp_path / "b.bin"
    f.write_bytes(_records([0, 9, 3, 3, 1], images))
    x, y = cifar.read_bin_batch(f)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [0, 9, 3, 3, 1] and y.dtype == np.int64
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(CorruptFileError, match="whole number"):
        cifar.read_bin_batch(f)
    f.write_bytes(_records([10], images[:1]))
    with pytest.raises(CorruptFileError, match="label"):
        cifar.read_bin_batch(f)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for CIFAR-10: protocol 2, byte strings as BINSTRING,
    and numpy's reconstruct function under its old module name numpy.core.multiarray."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        if obj is cifar._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _py2_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _py_batch(labels, images_nhwc) -> bytes:
    planes = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072))
    return _py2_pickle({b"batch_label": b"testing", b"labels": list(labels), b"data": planes,
                        b"filenames": [b"f%d.png" % i for i in range(len(labels))]})


@needs_shared
def test_python_version_batch_agrees_with_binary_version(tmp_path):
    raw = (SHARED / "cifar10" / "cifar-10-batches-bin" / "data_batch_1.bin").open("rb").read(40 * 3073)
    b = tmp_path / "b.bin"
    b.write_bytes(raw)
    x_bin, y_bin = cifar.read_bin_batch(b)
    p = tmp_path / "data_batch_1"
    p.write_bytes(_py_batch(y_bin.tolist(), x_bin))
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in p.read_bytes()  # as in the real pickles
    x_py, y_py = cifar.read_py_batch(p)
    np.testing.assert_array_equal(x_py, x_bin)
    np.testing.assert_array_equal(y_py, y_bin)


@needs_shared
def test_torchvision_python_layout_loads(tmp_path, isolated, monkeypatch):
    """A tiny cifar-10-batches-py tree (checksums swapped in for the canonical ones) loads like the binary one."""
    src = SHARED / "cifar10" / "cifar-10-batches-bin"
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = (src / "batches.meta.txt").read_text().split()
    files = {"batches.meta": _py2_pickle({b"label_names": [n.encode() for n in names], b"num_vis": 3072})}
    expected = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        chunk = tmp_path / f"{i}.bin"
        binary = src / (name + ".bin")
        chunk.write_bytes(binary.open("rb").read(8 * 3073))
        expected.append(cifar.read_bin_batch(chunk))
        files[name] = _py_batch(expected[-1][1].tolist(), expected[-1][0])
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    spec = catalog.SPECS["cifar10"]
    layouts = tuple(
        dataclasses.replace(lay, files=tuple(
            dataclasses.replace(f, digest=hashlib.md5(files[f.rel]).hexdigest()) for f in lay.files
        )) if lay.fmt == "cifar-py" else lay
        for lay in spec.layouts
    )
    monkeypatch.setitem(catalog.SPECS, "cifar10", dataclasses.replace(spec, layouts=layouts))
    ds = load("cifar10", root=tmp_path / "root", cache_dir=isolated, download=False)
    assert ds.source.endswith("(cifar-py)") and ds.classes == tuple(names)
    np.testing.assert_array_equal(ds.x_train, np.concatenate([e[0] for e in expected[:5]]))
    np.testing.assert_array_equal(ds.y_test, expected[5][1])


def test_unpickler_refuses_every_other_global(tmp_path):
    witness = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {witness}",)

    for protocol in (0, 2, 5):
        with pytest.raises(CorruptFileError, match="refused.*system"):
            cifar.safe_loads(pickle.dumps({"data": Evil()}, protocol=protocol), tmp_path / "evil")
    assert not witness.exists()
    for module, name in [("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "scalar"),
                         ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")]:
        blob = pickle.PROTO + b"\x02" + pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.STOP
        with pytest.raises(CorruptFileError, match=f"{module}.{name} is not allowed"):
            cifar.safe_loads(blob, tmp_path / "x")
    # what is allowed rebuilds exactly the arrays numpy pickled, and plain data
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = cifar.safe_loads(_py2_pickle({b"data": arr, b"n": [1, 2]}), tmp_path / "ok")
    np.testing.assert_array_equal(out[b"data"], arr)
    with pytest.raises(CorruptFileError, match="not a readable"):
        cifar.safe_loads(_py2_pickle({b"data": arr})[:-9], tmp_path / "cut")


# --- verification, corrupt copies, the marker, the cache ---------------------------------------


@pytest.fixture
def mnist_copy(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(SHARED / "mnist", root / "mnist")
    return root


@needs_shared
def test_truncated_and_corrupt_copies_name_the_file(mnist_copy, isolated):
    labels = mnist_copy / "mnist" / "train-labels-idx1-ubyte.gz"
    full = labels.read_bytes()
    labels.write_bytes(full[:1000])
    truncated = r"train-labels-idx1-ubyte\.gz is 1,000 bytes, expected 28,881 \(truncated"
    with pytest.raises(CorruptFileError, match=truncated):
        load("mnist", root=mnist_copy, cache_dir=isolated, download=False)
    labels.write_bytes(full)
    images = mnist_copy / "mnist" / "t10k-images-idx3-ubyte.gz"
    damaged = bytearray(images.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    images.write_bytes(bytes(damaged))
    with pytest.raises(CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz is corrupt.*md5"):
        load("mnist", root=mnist_copy, cache_dir=isolated, download=False)
    assert not (isolated / "arrays").exists()  # nothing half-decoded was cached
    assert not (isolated / "verified").exists()  # nor remembered as verified


@needs_shared
def test_att_corrupt_image_is_named(tmp_path, isolated):
    root = tmp_path / "root"
    shutil.copytree(SHARED / "att_faces" / "orl_faces", root / "orl_faces")
    face = root / "orl_faces" / "s7" / "3.pgm"
    raw = bytearray(face.read_bytes())
    raw[5000] ^= 0x01  # one pixel, same size
    face.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"s7/3\.pgm is corrupt.*sha256"):
        load("att_faces", root=root, cache_dir=isolated, download=False)
    face.write_bytes(bytes(raw[:-10]))
    with pytest.raises(CorruptFileError, match=r"s7/3\.pgm is 10,308 bytes.*truncated"):
        load("att_faces", root=root, cache_dir=isolated, download=False)


@needs_shared
def test_verification_is_remembered_until_a_file_changes(mnist_copy, isolated, monkeypatch):
    decoded = []
    real_decode = loader._decode
    monkeypatch.setattr(loader, "_decode", lambda *a: decoded.append(1) or real_decode(*a))
    first = load("mnist", root=mnist_copy, cache_dir=isolated, download=False)
    hashed = []
    real_hash = verify.hash_file
    monkeypatch.setattr(verify, "hash_file", lambda p, a: hashed.append(p.name) or real_hash(p, a))
    second = load("mnist", root=mnist_copy, cache_dir=isolated, download=False)
    assert hashed == [] and len(decoded) == 1  # neither hashed nor decoded again
    np.testing.assert_array_equal(second.y_train, first.y_train)
    target = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed (here: touched) source file
    third = load("mnist", root=mnist_copy, cache_dir=isolated, download=False)
    assert hashed == ["t10k-labels-idx1-ubyte.gz"] and len(decoded) == 2  # re-checked and re-decoded
    np.testing.assert_array_equal(third.y_test, first.y_test)


def test_cache_entry_without_meta_is_ignored(tmp_path):
    from linfilt.paper.data import cache as array_cache
    from linfilt.paper.data.dataset import Dataset

    z = np.zeros((2, 1, 1, 1), np.uint8)
    ds = Dataset("t", z, np.zeros(2, np.int64), z, np.zeros(2, np.int64), ("a",), "here")
    entry = tmp_path / "e"
    array_cache.write(entry, ds)
    assert array_cache.read(entry, "t").source == "here"
    (entry / "meta.json").unlink()  # as if killed before the last write
    assert array_cache.read(entry, "t") is None
