"""Data sets of the paper, found offline, verified, decoded once and loaded memory-mapped.

`load(name, root=None)` for "mnist", "cifar10", "att_faces", "digits" returns a `Dataset` of uint8
images (N, H, W, C) and int64 labels; `to_float(x)` converts images for the models (float32
(N, C, H, W) in [0, 1]); `att_split` gives AT&T faces a seeded held-out split.
"""
from linfilt.paper.data.catalog import NAMES
from linfilt.paper.data.dataset import Dataset, att_split, to_float
from linfilt.paper.data.loader import load

__all__ = ["NAMES", "Dataset", "att_split", "load", "to_float"]
