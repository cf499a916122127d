"""Lookup order, the offline error, the resumable checksummed downloader, archives, and the CLI.

No test touches the network: downloads go through fake openers or file:// URLs.
"""
import hashlib
import io
import os
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import data_root, requires_data

from linfilt.cli import main
from linfilt.paper.data import catalog, load, locate
from linfilt.paper.data.catalog import FileSpec, Layout, Source, Spec
from linfilt.paper.data.download import download, extract, fetch, fetch_source
from linfilt.errors import CorruptFileError, DataNotFoundError, LinfiltError

SHARED = data_root()  # the real data, from $LINFILT_DATA (None without it)
needs_shared = requires_data()
MNIST = catalog.SPECS["mnist"]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data folder is searched but those a test creates; returns the cache folder."""
    monkeypatch.delenv("LINFILT_DATA", raising=False)
    monkeypatch.delenv("LINFILT_CACHE", raising=False)
    return tmp_path / "cache"


def _placeholders(folder: Path, files=MNIST.layouts[0].files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / f.rel).write_bytes(b"")


# --- lookup ------------------------------------------------------------------------------------


def test_lookup_order_root_env_cache(tmp_path, isolated, monkeypatch):
    root, env1, env2 = tmp_path / "root", tmp_path / "env1", tmp_path / "env2"
    monkeypatch.setenv("LINFILT_DATA", f"{env1}{os.pathsep}{env2}")
    for base in (root, env1, env2, isolated / "data"):
        _placeholders(base / "mnist")
    order = []
    for base in (root, env1, env2, isolated / "data"):
        loc = locate.find(MNIST, root=root, cache_dir=isolated)
        order.append((loc.dir, loc.origin))
        (loc.dir / "t10k-labels-idx1-ubyte.gz").unlink()  # now incomplete: the next folder wins
    assert order == [
        (root / "mnist", "root argument"),
        (env1 / "mnist", "LINFILT_DATA"),
        (env2 / "mnist", "LINFILT_DATA"),
        (isolated / "data" / "mnist", "user cache"),
    ]
    assert locate.find(MNIST, root=root, cache_dir=isolated) is None


def test_no_folder_beside_the_checkout_or_working_directory_is_searched(tmp_path, isolated, monkeypatch):
    """The library knows no project layout: a `../shared/data` (beside the working directory, or
    beside this checkout, where the project keeps its data) is only used when LINFILT_DATA names it."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    _placeholders(tmp_path / "shared" / "data" / "mnist")
    assert locate.search_dirs(cache_dir=isolated) == [(isolated / "data", "user cache")]
    assert locate.find(MNIST, cache_dir=isolated) is None
    monkeypatch.setenv("LINFILT_DATA", str(tmp_path / "shared" / "data"))
    assert locate.find(MNIST, cache_dir=isolated).dir == tmp_path / "shared" / "data" / "mnist"


def test_user_cache_folder_follows_env(tmp_path, monkeypatch):
    monkeypatch.delenv("LINFILT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locate.cache_root() == tmp_path / "xdg" / "linfilt"
    monkeypatch.setenv("LINFILT_CACHE", str(tmp_path / "mine"))
    assert locate.cache_root() == tmp_path / "mine"
    assert locate.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_torchvision_layouts_are_recognised(tmp_path, isolated):
    _placeholders(tmp_path / "tv" / "MNIST" / "raw", catalog._MNIST_RAW)
    loc = locate.find(MNIST, root=tmp_path / "tv", cache_dir=isolated)
    assert (loc.dir, loc.layout.fmt) == (tmp_path / "tv" / "MNIST" / "raw", "idx")
    _placeholders(tmp_path / "tv" / "MNIST" / "raw")  # torchvision keeps the .gz files too: preferred
    assert locate.find(MNIST, root=tmp_path / "tv", cache_dir=isolated).layout.fmt == "idx-gz"
    _placeholders(tmp_path / "tv" / "cifar-10-batches-py", catalog._CIFAR_PY)
    loc = locate.find(catalog.SPECS["cifar10"], root=tmp_path / "tv", cache_dir=isolated)
    assert (loc.dir.name, loc.layout.fmt) == ("cifar-10-batches-py", "cifar-py")


# --- offline -----------------------------------------------------------------------------------


def _offline(request, timeout):
    raise urllib.error.URLError("no network")


def test_offline_error_lists_expected_files_and_folders(tmp_path, isolated):
    with pytest.raises(DataNotFoundError) as info:
        load("mnist", root=tmp_path / "mine", cache_dir=isolated, opener=_offline)
    message = str(info.value)
    assert "downloading failed" in message and "no network" in message
    for f in MNIST.layouts[0].files:
        assert f"mnist/{f.rel}" in message
    assert str(tmp_path / "mine") in message and str(isolated / "data") in message
    assert "MNIST/raw/" in message and "ossci-datasets" in message
    assert isinstance(info.value, FileNotFoundError)

    def must_not_be_called(request, timeout):
        raise AssertionError("network used although download=False")

    with pytest.raises(DataNotFoundError, match="switched off"):
        load("cifar10", cache_dir=isolated, download=False, opener=must_not_be_called)


def test_unknown_name_says_what_exists():
    with pytest.raises(LinfiltError, match="choose one of mnist, cifar10, att_faces, digits"):
        load("imagenet")


# --- downloader --------------------------------------------------------------------------------


class FakeServer:
    """An opener serving fixed bytes per URL, honouring Range requests when `ranges`."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests, self.served = files, ranges, [], 0

    def __call__(self, request, timeout):
        self.requests.append((request.full_url, request.get_header("Range")))
        if request.full_url not in self.files:
            raise urllib.error.URLError("unknown host")
        body, status = self.files[request.full_url], 200
        rng = request.get_header("Range")
        if rng and self.ranges:
            start = int(rng.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)
            body, status = body[start:], 206
        self.served += len(body)
        response = io.BytesIO(body)
        response.status = status
        response.headers = {"Content-Length": str(len(body))}
        return response


PAYLOAD = np.random.default_rng(3).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_fetch_from_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "file.bin"
    fetch(src.as_uri(), dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("file.bin.part").exists()


def test_fetch_resumes_a_part_file_with_a_range_request(tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1_000_000])
    server = FakeServer({"http://x/file.bin": PAYLOAD})
    fetch("http://x/file.bin", dest, PAYLOAD_MD5, server, progress=False)
    assert server.requests == [("http://x/file.bin", "bytes=1000000-")]
    assert server.served == len(PAYLOAD) - 1_000_000
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("file.bin.part").exists()


def test_fetch_restarts_when_the_server_ignores_range(tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"stale bytes from elsewhere")
    fetch("http://x/f", dest, PAYLOAD_MD5, FakeServer({"http://x/f": PAYLOAD}, ranges=False), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_of_an_already_complete_part_file(tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD)
    server = FakeServer({"http://x/f": PAYLOAD})
    fetch("http://x/f", dest, PAYLOAD_MD5, server, progress=False)
    assert server.served == 0 and dest.read_bytes() == PAYLOAD


def test_md5_mismatch_keeps_nothing(tmp_path):
    dest = tmp_path / "file.bin"
    damaged = bytearray(PAYLOAD)
    damaged[123] ^= 1
    with pytest.raises(CorruptFileError, match=f"expected {PAYLOAD_MD5}"):
        fetch("http://x/f", dest, PAYLOAD_MD5, FakeServer({"http://x/f": bytes(damaged)}), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_mirrors_are_tried_in_order(tmp_path):
    server = FakeServer({"http://mirror2/f": PAYLOAD})
    source = Source(("http://mirror1/f", "http://mirror2/f"), "f", PAYLOAD_MD5, len(PAYLOAD))
    fetch_source(source, tmp_path / "f", server, progress=False)
    assert [u for u, _ in server.requests] == ["http://mirror1/f", "http://mirror2/f"]
    assert (tmp_path / "f").read_bytes() == PAYLOAD


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_download_extracts_only_expected_members(tmp_path):
    files = (FileSpec("a.bin", 3, "unused"), FileSpec("sub/b.bin", 2, "unused"))  # checked by verify, not here
    blob = _tar({"pack/a.bin": b"AAA", "pack/sub/b.bin": b"BB", "../../evil.bin": b"X", "pack/other": b"O"})
    spec = Spec("toy", (Layout("toy/pack", "bin", files),),
                (Source(("http://x/pack.tgz",), "pack.tgz", hashlib.md5(blob).hexdigest(), len(blob), "tar"),))
    folder = download(spec, tmp_path / "data", FakeServer({"http://x/pack.tgz": blob}), progress=False)
    assert folder == tmp_path / "data" / "toy" / "pack"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "data/toy/pack/a.bin", "data/toy/pack/sub/b.bin"
    ]  # the archive is removed; nothing else, nothing outside
    assert (folder / "sub" / "b.bin").read_bytes() == b"BB"


def test_zip_extract_and_missing_member(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README", b"r")
        zf.writestr("s1/1.pgm", b"one")
    archive = tmp_path / "faces.zip"
    archive.write_bytes(buf.getvalue())
    extract(archive, "zip", tmp_path / "out", (FileSpec("s1/1.pgm", 3, ""),))
    assert (tmp_path / "out" / "s1" / "1.pgm").read_bytes() == b"one"
    with pytest.raises(CorruptFileError, match="lacks 1 expected files, e.g. s1/2.pgm"):
        extract(archive, "zip", tmp_path / "out2", (FileSpec("s1/1.pgm", 3, ""), FileSpec("s1/2.pgm", 3, "")))
    archive.write_bytes(buf.getvalue()[:50])
    with pytest.raises(CorruptFileError, match="not a readable zip"):
        extract(archive, "zip", tmp_path / "out3", (FileSpec("s1/1.pgm", 3, ""),))


@needs_shared
def test_mnist_downloaded_into_root_and_loaded(tmp_path, isolated):
    """The whole path: absent -> fetched from a fake mirror (serving the canonical files) -> verified -> loaded."""
    server = FakeServer({
        s.urls[0]: (SHARED / "mnist" / s.filename).read_bytes() for s in MNIST.sources
    })
    ds = load("mnist", root=tmp_path / "root", cache_dir=isolated, opener=server, progress=False)
    fetched = sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir())
    assert fetched == sorted(f.rel for f in MNIST.layouts[0].files)
    assert ds.x_train.shape == (60_000, 28, 28, 1) and len(server.requests) == 4
    again = load("mnist", root=tmp_path / "root", cache_dir=isolated, opener=_offline)  # no second download
    np.testing.assert_array_equal(again.y_test, ds.y_test)


# --- CLI ---------------------------------------------------------------------------------------


@needs_shared
def test_cli_list_and_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINFILT_DATA", str(SHARED))
    monkeypatch.setenv("LINFILT_CACHE", str(tmp_path / "cache"))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"mnist      {SHARED / 'mnist'}  [idx-gz, LINFILT_DATA]  not verified yet" in out
    assert main(["data", "verify", "mnist"]) == 0
    assert "mnist      OK: 4 files" in capsys.readouterr().out
    main(["data", "list"])
    assert f"{SHARED / 'mnist'}  [idx-gz, LINFILT_DATA]  verified" in capsys.readouterr().out
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    for f in MNIST.layouts[0].files:
        (root / "mnist" / f.rel).write_bytes((SHARED / "mnist" / f.rel).read_bytes())
    bad = b"\x1f\x8b oops"
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(bad)
    assert main(["data", "verify", "mnist", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'mnist' / 't10k-labels-idx1-ubyte.gz'} is {len(bad)} bytes, expected 4,542" in err


def test_cli_verify_without_data(isolated, monkeypatch, capsys):
    monkeypatch.setenv("LINFILT_CACHE", str(isolated))
    assert main(["data", "verify"]) == 0  # nothing found is nothing wrong
    assert capsys.readouterr().out.count("not found, nothing to verify") == 3
    assert main(["data", "verify", "att_faces"]) == 2  # but a named data set must be there
    err = capsys.readouterr().err
    assert "att_faces not found (nothing to verify)" in err and "att_faces/orl_faces/s40/10.pgm" in err
    assert main(["data", "list"]) == 0
    assert "mnist      not found" in capsys.readouterr().out
