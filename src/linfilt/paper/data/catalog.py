"""What each data set's files are: accepted layouts, canonical sizes and digests, download sources.

Only facts live here (no I/O). Digests: MNIST's and CIFAR-10's are the canonical MD5s (as recorded
in the PROVENANCE.md of the project's data copies; the CIFAR-10 python-version ones are those
torchvision checks). AT&T faces has no published checksum: each file is checked against the first 8
hex digits of its SHA-256 (enough to name a damaged file), and the whole tree against
`ATT_TREE_SHA256`, the SHA-256 of the 400 lines "<sha256>  sX/Y.pgm\\n" (X = 1..40, Y = 1..10 in
that order) built from the SHA256SUMS of the project's copy of att_faces.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileSpec:
    """One expected file, relative to its layout folder."""

    rel: str
    size: int | None  # None where the canonical size is not known
    digest: str  # hex digest, or a prefix of one (AT&T)
    algo: str = "md5"


@dataclass(frozen=True)
class Layout:
    """A folder (relative to a data folder; "" = the data folder itself) holding one format."""

    subdir: str
    fmt: str  # "idx-gz", "idx", "cifar-bin", "cifar-py", "pgm"
    files: tuple[FileSpec, ...]
    note: str = ""


@dataclass(frozen=True)
class Source:
    """Where to download a file: mirrors tried in order; `archive` files are extracted."""

    urls: tuple[str, ...]
    filename: str
    md5: str | None
    size: int | None
    archive: str | None = None  # None, "tar" or "zip"


@dataclass(frozen=True)
class Spec:
    """A file-based data set. `layouts[0]` is where downloads go."""

    name: str
    layouts: tuple[Layout, ...]
    sources: tuple[Source, ...]
    tree_sha256: str | None = None


MNIST_CLASSES = tuple(str(d) for d in range(10))
ATT_CLASSES = tuple(f"s{p}" for p in range(1, 41))

_MNIST_GZ = (
    FileSpec("train-images-idx3-ubyte.gz", 9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    FileSpec("train-labels-idx1-ubyte.gz", 28_881, "d53e105ee54ea40749a09fcbcd1e9432"),
    FileSpec("t10k-images-idx3-ubyte.gz", 1_648_877, "9fb629c4189551a2d022fa330f9573f3"),
    FileSpec("t10k-labels-idx1-ubyte.gz", 4_542, "ec29112dd5afa0611ce80d1b7f02629c"),
)
# The same payloads uncompressed, as torchvision leaves them in MNIST/raw/.
_MNIST_RAW = (
    FileSpec("train-images-idx3-ubyte", 47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    FileSpec("train-labels-idx1-ubyte", 60_008, "a25bea736e30d166cdddb491f175f624"),
    FileSpec("t10k-images-idx3-ubyte", 7_840_016, "2646ac647ad5339dbf082846283269ea"),
    FileSpec("t10k-labels-idx1-ubyte", 10_008, "27ae3e4e09519cfbb04c329615203637"),
)
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

_CIFAR_BIN = (
    FileSpec("batches.meta.txt", 61, "728051cd483f366e254dddb25bead8b3"),
    FileSpec("data_batch_1.bin", 30_730_000, "5dd7e06a14cb22eb9f671a540d1b7c25"),
    FileSpec("data_batch_2.bin", 30_730_000, "5ea93a67294ea407fff1d09f752e9692"),
    FileSpec("data_batch_3.bin", 30_730_000, "942cd6a4bcdd0dd3c604fbe906cb4421"),
    FileSpec("data_batch_4.bin", 30_730_000, "ae636b3ba5c66a11e91e8cb52e771fcb"),
    FileSpec("data_batch_5.bin", 30_730_000, "53f37980c15c3d472c316c40844f3f0d"),
    FileSpec("test_batch.bin", 30_730_000, "803d5f7f4d78ea53de84dbe85f74fb6d"),
)
_CIFAR_PY = (
    FileSpec("batches.meta", None, "5ff9c542aee3614f3951f8cda6e48888"),
    FileSpec("data_batch_1", None, "c99cafc152244af753f735de768cd75f"),
    FileSpec("data_batch_2", None, "d4bba439e000b95fd0a9bffe97cbabec"),
    FileSpec("data_batch_3", None, "54ebc095f3ab1f0389bbae665268c751"),
    FileSpec("data_batch_4", None, "634d18415352ddfa80567beed471001a"),
    FileSpec("data_batch_5", None, "482c414d41f54cd18b22e5b47cb7c3cb"),
    FileSpec("test_batch", None, "40351d587109b95175f43aff81a1287e"),
)

ATT_TREE_SHA256 = "de45a65f9c353ff9364f6d79a2c5a3e0f98e9a4751e1a3133a77b444864f1ebf"
# First 8 hex digits of each file's SHA-256; one line per person, images 1..10.
_ATT_SHA256_PREFIXES = (
    "0198d5a7 4a194226 cca85d64 0db4cf3e e962bfb8 4d9c1002 df1fb55f 5c76abc7 ee355b0f d2c469fd",  # s1
    "3ee7e7f5 2c735273 24dff6e3 8bcbe19f 39fb5833 d7db4cf0 9278b41d e98a8c81 b4cd2635 85945dcc",  # s2
    "74fc7348 92075a2a 2905026c 879f6c1e dc9e364d 4a55f90c 2eb50919 f9f4492d 97d5cc77 b63bd363",  # s3
    "3dd97c80 caccb440 3bb3626b ed3b3ac5 017dd484 ad7b087b becfea88 94d23034 69d4b46e ab06473c",  # s4
    "ba5e3de4 47d0bb80 b268be6f 087ab966 30d08376 5e11b0cf 52521318 d460b8eb 6149d625 92a7eee5",  # s5
    "7b8f03f8 84be1053 65e6e4c8 f38ad91d 886de751 ed44ec39 1089b360 dae15ff0 b6f69b5b 276b652c",  # s6
    "fc417d90 cb0d700a b354e91a afc795e6 b77a6e57 c85c2832 56b7b56e b30b16c1 5f99db01 5894e694",  # s7
    "69aeab16 98775a28 a00a58c1 f1fc08d8 be62ef00 84a3c2bb 4421c0d4 69298ed5 49556551 3868f44e",  # s8
    "0abdd1d4 9a8aef97 b3c7c219 2cefbdc1 5cebed0b 81947da6 d2fb493e c8068d7b f5a32391 5ae550ee",  # s9
    "accea971 cd6ef0e6 9b659926 8e4bdc0c bd7324a6 ed7f8a76 45b098cc 3f589495 69c496a4 7d25e9cb",  # s10
    "111bb497 7817e609 663f0256 235730e3 5f275895 5295768f c6b74116 4ae3f105 9439c242 31668ac7",  # s11
    "9134178e f8a90a85 87d9ff7d 0a23a01f 18ece86c 93a6e278 4edf6143 8a0a72ee e85010eb c6cd0416",  # s12
    "70b39375 6f476c8f 9cdd3d09 c6fb2a6c d3807303 cc0a9cc0 2bebcd7c 6ca5bb21 81d0ef18 95f30b79",  # s13
    "e6cc7104 e8a7294f 32d2518f d4e843fa e602a29b dc6e4f6e 2d65d4f3 ff4cd86e f8e699a1 edae7d1e",  # s14
    "03ff6bbf d1caa62e cc2f682c 93297a43 5be385aa 16a34340 aff1fe55 d3f04e7f 9f6dc423 6f10d530",  # s15
    "7b2f167f 1feaa21a 4b85a6fe e751e124 ed670cec 85c35df7 c9343d1e 3048a51f d3bdae75 309979bf",  # s16
    "9527aaf0 844b1d41 27087b8d e44275a0 607ebdfe 03099a4b ab868d4e 41364a08 e3ca9b00 898cb245",  # s17
    "aca5b473 14ddb5de 1d6d032c edcebfd8 19ede5d6 53629b89 faceae26 a3d47a98 30b8ea39 3900248b",  # s18
    "73483ede c5f86f75 926e971a eeb339fe ed01e902 3a29b623 027a1049 42ea25f6 9ac9c0e7 8072c4d5",  # s19
    "641ff905 2b683129 eae340a5 c5a6ca6e 26a59df9 88bec07c 13b31123 922a5d6e 36bb6b47 5767a187",  # s20
    "c6ff0010 5623cea9 891b3f79 bcf58d61 fe3b1879 14c06ec9 e1cd967f 0d2265bf 1cf3038c 3e0bf5bd",  # s21
    "59974c3d 3abe1d60 55dfb08e 2f4d0376 3473ffc7 f2682f40 5009102d 187610ff 849c5d4d ea6c0394",  # s22
    "b7ca050c 422691f3 6bbf53c8 9d89457f 5c569451 9e285ac8 dd226940 b5a2b5e2 f15a3fc8 ae761d9c",  # s23
    "ffba2e06 267df594 6365536e edb870dc 2c2b8f7f 4ec74481 53ed1223 52a8a460 865d8814 51481d4e",  # s24
    "57116780 e3643311 10668630 bb6abaae 69910a4f a95bf29b 856bc016 595672bc 3de82637 5d1a0738",  # s25
    "2c5ad2d5 3de33ba1 5b774967 6bf0aca0 3855967c 3614a591 90506acd 573763d3 f777ea7a 2c848c29",  # s26
    "b7216407 a8c9e96e 2ea0a25c 20edcbfc 42b82a4f bf6d029f f6ae9e2e c7893eb7 04b90c0d e0a78627",  # s27
    "f29b207e 661d8f98 afe9c1da f5382c4c 8680f195 8666c813 dfb30ff9 dee334ca 744cb9a8 d6ea8b18",  # s28
    "27388ffb 4d4f8997 13f0ce06 c2b53067 e730278a 6a47a224 dfcd7f80 08e13fa1 25726b66 23eb8901",  # s29
    "61991840 2d8f7939 f0380103 97a7bdd7 b9586101 fafa296f de9e02d5 3186e62b d0d9be0d cedae44d",  # s30
    "da89b05f 986cdb76 0d0ffc48 31833d4a 210ec90c 9cc44bec 90947435 825a2556 abd3f664 9d59e05f",  # s31
    "a4583a0f 90e8bccd af305328 210f3a4a e0a28548 35ce7f25 28e1876a e8c62357 edad1a59 6fe5a48d",  # s32
    "58942e91 e46694b3 29f9d74e fcbff3bf 74ff2781 279c2c03 a2ce0467 3cf6316a 54eee553 2a0aaf11",  # s33
    "09913f04 6b8e69ab f9faeccb a3cfb557 45eeadcb 772cc47f 6ee0de69 d27364e0 1c479598 b0d37fe4",  # s34
    "ae7637bb 2aaf4b5a ccfe9bbc 539139b8 ad221fc1 a3284ad1 49367a15 5c959695 715b97ef edb65e8b",  # s35
    "a7dbf26d af4068ac 6e4cd9c4 172650f7 15126c32 a9118ec3 002b200f f4e9e5b6 8462fd74 85ec8b6c",  # s36
    "3ad94bf2 c37ab70a 7c89baa5 7640addf 46e93246 a0e8ecb2 d0676619 510d63ce b6bd6cad e6a0764c",  # s37
    "69da538f 099372bd bc7e258d bbb39944 35f159b4 6a27cb9d 02be6982 ec7d29c5 b21198f5 4c5e0408",  # s38
    "8d75c382 7b54e3f7 4daab6ba 172d231d dc88b457 7f4b1541 d28a644c afc87c7d ce511a1d cb90667f",  # s39
    "58aa6556 b1b6c918 8dfca4ee 0dd0e2fc 4c8a7637 1a454b32 ac8767ae 16e7e5b4 0ee1b96c d969efac",  # s40
)
_ATT_PGM = tuple(
    FileSpec(f"s{p + 1}/{i + 1}.pgm", 10_318, prefix, "sha256")
    for p, line in enumerate(_ATT_SHA256_PREFIXES)
    for i, prefix in enumerate(line.split())
)

SPECS: dict[str, Spec] = {
    "mnist": Spec(
        "mnist",
        layouts=(
            Layout("mnist", "idx-gz", _MNIST_GZ),
            Layout("MNIST/raw", "idx-gz", _MNIST_GZ, "torchvision"),
            Layout("MNIST/raw", "idx", _MNIST_RAW, "torchvision, uncompressed"),
            Layout("", "idx-gz", _MNIST_GZ, "the folder itself"),
            Layout("", "idx", _MNIST_RAW, "the folder itself, uncompressed"),
        ),
        sources=tuple(
            Source(tuple(m + f.rel for m in _MNIST_MIRRORS), f.rel, f.digest, f.size) for f in _MNIST_GZ
        ),
    ),
    "cifar10": Spec(
        "cifar10",
        layouts=(
            Layout("cifar10/cifar-10-batches-bin", "cifar-bin", _CIFAR_BIN),
            Layout("cifar-10-batches-bin", "cifar-bin", _CIFAR_BIN, "as extracted"),
            Layout("cifar10/cifar-10-batches-py", "cifar-py", _CIFAR_PY, "python version"),
            Layout("cifar-10-batches-py", "cifar-py", _CIFAR_PY, "python version, torchvision/Keras"),
            Layout("", "cifar-bin", _CIFAR_BIN, "the folder itself"),
            Layout("", "cifar-py", _CIFAR_PY, "the folder itself, python version"),
        ),
        sources=(
            Source(
                ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                "cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530",
                170_052_171,
                archive="tar",
            ),
        ),
    ),
    "att_faces": Spec(
        "att_faces",
        layouts=(
            Layout("att_faces/orl_faces", "pgm", _ATT_PGM),
            Layout("att_faces", "pgm", _ATT_PGM, "the archive extracted into att_faces/"),
            Layout("orl_faces", "pgm", _ATT_PGM),
            Layout("", "pgm", _ATT_PGM, "the folder itself"),
        ),
        # No checksum of the archive is published; its extracted files are checked instead.
        sources=(
            Source(
                ("https://www.cl.cam.ac.uk/research/dtg/attarchive/pub/data/att_faces.zip",),
                "att_faces.zip",
                None,
                None,
                archive="zip",
            ),
        ),
        tree_sha256=ATT_TREE_SHA256,
    ),
}

NAMES = ("mnist", "cifar10", "att_faces", "digits")
