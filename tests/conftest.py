import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Where each data set sits in a data folder laid out like the project's shared data (the tests may
# know this layout; the library only looks where it is told: root=, $LINFILT_DATA, the user cache).
DATA_SUBDIRS = {"mnist": "mnist", "cifar10": "cifar10/cifar-10-batches-bin", "att_faces": "att_faces/orl_faces"}


def data_root(*names: str) -> Path | None:
    """The first folder of $LINFILT_DATA holding every named data set (all three by default), or None.

    Test modules call this at import, before any fixture unsets LINFILT_DATA, and pass the folder
    to `load` as `root=`.
    """
    names = names or tuple(DATA_SUBDIRS)
    for part in os.environ.get("LINFILT_DATA", "").split(os.pathsep):
        if part and all((Path(part) / DATA_SUBDIRS[n]).is_dir() for n in names):
            return Path(part)
    return None


def requires_data(*names: str) -> pytest.MarkDecorator:
    """Skip (with the reason) unless $LINFILT_DATA holds the named real data sets (all three by default)."""
    names = names or tuple(DATA_SUBDIRS)
    wanted = ", ".join(f"{DATA_SUBDIRS[n]}/" for n in names)
    return pytest.mark.skipif(
        data_root(*names) is None,
        reason=f"needs the real data: set LINFILT_DATA to a folder holding {wanted} (e.g. the project's shared/data)",
    )


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests' models are tiny: on a busy 2-core machine a second intra-op thread only spins
    (seen 10-50x slower), so the whole suite runs torch on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_blobs(k: int, per_class: int, dim: int = 8):
    """(x, y) tensors: per_class points around each of k random centres (seed 0), well separated."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (k, dim))
    y = np.repeat(np.arange(k), per_class)
    x = (centers[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)
