"""The real data sets (from $LINFILT_DATA), checked against PROVENANCE.md facts and independent decodes."""
import gzip

import numpy as np
import pytest
from conftest import data_root, requires_data

from linfilt.paper.data import att_split, load, loader, to_float
from linfilt.errors import LinfiltError

SHARED = data_root()  # None without the real data
needs_shared = requires_data()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def mnist(cache):
    return load("mnist", root=SHARED, cache_dir=cache, download=False)


@pytest.fixture(scope="module")
def cifar(cache):
    return load("cifar10", root=SHARED, cache_dir=cache, download=False)


@pytest.fixture(scope="module")
def att(cache):
    return load("att_faces", root=SHARED, cache_dir=cache, download=False)


def _idx_payload(name: str, offset: int) -> np.ndarray:
    """Independent decode, as PROVENANCE.md's "Loading" section does it."""
    with gzip.open(SHARED / "mnist" / name) as fh:
        return np.frombuffer(fh.read(), np.uint8, offset=offset)


@needs_shared
def test_mnist_counts_labels_and_pixels(mnist):
    assert mnist.x_train.shape == (60_000, 28, 28, 1) and mnist.x_test.shape == (10_000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int64
    assert mnist.classes == tuple("0123456789")
    # PROVENANCE.md label histograms
    assert np.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # canonical order: the well-known first labels, and the whole files decoded independently
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    np.testing.assert_array_equal(mnist.y_train, _idx_payload("train-labels-idx1-ubyte.gz", 8))
    test_images = _idx_payload("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(mnist.x_test[..., 0], test_images)
    assert (mnist.x_train.min(), mnist.x_train.max()) == (0, 255)
    assert round(float(mnist.x_train.mean(dtype=np.float64)), 3) == 33.318
    assert round(float(mnist.x_test.mean(dtype=np.float64)), 3) == 33.791


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of x / 255, exactly, from per-channel value histograms (in chunks)."""
    hist = np.zeros(3 * 256, np.int64)
    offsets = np.array([0, 256, 512], np.int32)
    for i in range(0, len(x), 5000):
        hist += np.bincount((x[i : i + 5000].reshape(-1, 3) + offsets).ravel(), minlength=3 * 256)
    hist = hist.reshape(3, 256)
    values = np.arange(256)
    n = hist.sum(axis=1)
    mean = hist @ values / n
    return mean / 255, np.sqrt(hist @ values**2 / n - mean**2) / 255


def _bin_record(file: str, index: int) -> tuple[int, np.ndarray]:
    """Record `index` of a binary batch, read by byte offsets: pixel (row, col, ch) = 1 + ch*1024 + row*32 + col."""
    with open(SHARED / "cifar10" / "cifar-10-batches-bin" / file, "rb") as fh:
        fh.seek(index * 3073)
        rec = fh.read(3073)
    image = np.empty((32, 32, 3), np.uint8)
    for ch in range(3):
        for row in range(32):
            for col in range(32):
                image[row, col, ch] = rec[1 + ch * 1024 + row * 32 + col]
    return rec[0], image


@needs_shared
def test_cifar10_counts_labels_and_pixels(cifar):
    assert cifar.x_train.shape == (50_000, 32, 32, 3) and cifar.x_test.shape == (10_000, 32, 32, 3)
    assert cifar.x_train.dtype == np.uint8 and cifar.y_test.dtype == np.int64
    names = (SHARED / "cifar10" / "cifar-10-batches-bin" / "batches.meta.txt").read_text().split()
    assert cifar.classes == tuple(names) and len(names) == 10
    # PROVENANCE.md: counts per class, data_batch_1 histogram, first labels
    assert np.bincount(cifar.y_train).tolist() == [5000] * 10
    assert np.bincount(cifar.y_test).tolist() == [1000] * 10
    assert np.bincount(cifar.y_train[:10_000]).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    assert cifar.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    for file, index, (x, y) in [
        ("data_batch_1.bin", 0, (cifar.x_train, cifar.y_train)),
        ("data_batch_2.bin", 0, (cifar.x_train[10_000:], cifar.y_train[10_000:])),  # batch order
        ("test_batch.bin", 9_999, (cifar.x_test, cifar.y_test)),
    ]:
        label, image = _bin_record(file, index)
        assert y[index] == label
        np.testing.assert_array_equal(x[index], image)
    mean, std = _channel_stats(cifar.x_train)
    assert np.round(mean, 4).tolist() == [0.4914, 0.4822, 0.4465]
    assert np.round(std, 4).tolist() == [0.2470, 0.2435, 0.2616]
    assert (cifar.x_test.min(), cifar.x_test.max()) == (0, 255)


@needs_shared
def test_att_faces_all_images_are_train_and_test(att):
    assert att.x_train.shape == (400, 112, 92, 1) and att.x_train.dtype == np.uint8
    assert att.classes == tuple(f"s{p}" for p in range(1, 41))
    np.testing.assert_array_equal(att.y_train, np.repeat(np.arange(40), 10))
    np.testing.assert_array_equal(att.y_test, att.y_train)
    np.testing.assert_array_equal(att.x_test, att.x_train)
    assert not np.shares_memory(att.x_train, att.x_test)  # writing one never changes the other
    # PROVENANCE.md: pixel range and mean
    assert (att.x_train.min(), att.x_train.max()) == (0, 251)
    assert round(float(att.x_train.mean(dtype=np.float64)), 3) == 112.631
    for person, image in [(1, 1), (17, 3), (40, 10)]:  # the raster is the file's last 92*112 bytes
        raw = (SHARED / "att_faces" / "orl_faces" / f"s{person}" / f"{image}.pgm").read_bytes()
        expected = np.frombuffer(raw[-92 * 112 :], np.uint8).reshape(112, 92)
        np.testing.assert_array_equal(att.x_train[(person - 1) * 10 + image - 1, :, :, 0], expected)


@needs_shared
def test_att_split_is_seeded_per_person_and_partitions(att):
    split = att_split(att, test_per_person=3, seed=7)
    assert split.x_train.shape == (280, 112, 92, 1) and split.x_test.shape == (120, 112, 92, 1)
    assert np.bincount(split.y_test).tolist() == [3] * 40 and np.bincount(split.y_train).tolist() == [7] * 40
    # the two parts are the 400 images, each once: match images by their bytes
    keys = {att.x_train[i].tobytes(): att.y_train[i] for i in range(400)}
    seen = [x.tobytes() for x in np.concatenate([split.x_train, split.x_test])]
    assert sorted(seen) == sorted(keys) and len(set(seen)) == 400
    assert all(keys[x.tobytes()] == y for x, y in zip(split.x_test, split.y_test))
    again = att_split(att, test_per_person=3, seed=7)
    np.testing.assert_array_equal(again.x_test, split.x_test)
    assert not np.array_equal(att_split(att, test_per_person=3, seed=8).x_test, split.x_test)
    with pytest.raises(LinfiltError, match="test_per_person"):
        att_split(att, test_per_person=10)


def test_digits_rescaled_exactly_with_a_fixed_stratified_split():
    from sklearn.datasets import load_digits

    ds = load("digits")
    ref = load_digits()
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert len(ds.x_train) + len(ds.x_test) == 1797
    expected = np.floor(ref.images * 255 / 16 + 0.5).astype(np.uint8)  # round half up, in floats
    x_all = np.concatenate([ds.x_train, ds.x_test])[..., 0]
    y_all = np.concatenate([ds.y_train, ds.y_test])
    pairs = sorted((x.tobytes(), int(y)) for x, y in zip(x_all, y_all))
    assert pairs == sorted((x.tobytes(), int(y)) for x, y in zip(expected, ref.target))
    assert (x_all.min(), x_all.max()) == (0, 255)
    counts = np.bincount(ref.target)
    assert np.bincount(ds.y_test).tolist() == np.round(0.2 * counts).astype(int).tolist()
    np.testing.assert_array_equal(load("digits").x_test, ds.x_test)  # fixed split


def test_to_float_is_nchw_over_255():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    out = to_float(x)
    assert out.dtype == np.float32 and out.shape == (4, 3, 5, 6) and out.flags.c_contiguous
    for n, c, h, w in [(0, 0, 0, 0), (3, 2, 4, 5), (1, 1, 2, 3)]:
        assert out[n, c, h, w] == np.float32(x[n, h, w, c]) / np.float32(255)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(LinfiltError, match="uint8"):
        to_float(x.astype(np.float32))
    with pytest.raises(LinfiltError, match="uint8"):
        to_float(x[0])


@needs_shared
def test_second_load_reads_the_cache_memory_mapped(cifar, cache, monkeypatch):
    def no_decode(*args):
        raise AssertionError("decoded again although the cache was complete")

    monkeypatch.setattr(loader, "_decode", no_decode)
    again = load("cifar10", root=SHARED, cache_dir=cache, download=False)
    assert isinstance(again.x_train, np.memmap)
    np.testing.assert_array_equal(again.y_train, cifar.y_train)
    np.testing.assert_array_equal(again.x_test[-5:], cifar.x_test[-5:])
    again.x_train[0, 0, 0, 0] ^= 0xFF  # copy-on-write: the cached file is untouched
    assert load("cifar10", root=SHARED, cache_dir=cache).x_train[0, 0, 0, 0] == cifar.x_train[0, 0, 0, 0]


@needs_shared
def test_found_through_linfilt_data_without_root(cache, monkeypatch):
    monkeypatch.setenv("LINFILT_DATA", str(SHARED))
    ds = load("mnist", cache_dir=cache, download=False)
    assert ds.source.startswith(str(SHARED / "mnist"))
