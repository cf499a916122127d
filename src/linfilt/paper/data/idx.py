"""MNIST's IDX format (optionally gzipped): a big-endian header, then the raw array.

Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension. Images are 0x00000803 (n, 28, 28), labels 0x00000801 (n,).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from linfilt.errors import CorruptFileError

_UBYTE = 0x08


def read_bytes(path: Path) -> bytes:
    """The file's payload, decompressed when it ends in .gz; damage is a CorruptFileError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptFileError(f"{path} is not a complete gzip file ({exc}); replace it") from None


def parse_idx(buf: bytes, path: Path, ndim: int) -> np.ndarray:
    """Decode an unsigned-byte IDX array with `ndim` dimensions, checking the header against the size."""
    if len(buf) < 4 + 4 * ndim:
        raise CorruptFileError(f"{path}: {len(buf)} bytes is too short for an IDX header")
    zero, dtype, got_ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0 or dtype != _UBYTE or got_ndim != ndim:
        raise CorruptFileError(
            f"{path}: IDX magic {buf[:4].hex()} is not 0000080{ndim} (unsigned bytes, {ndim} dimensions)"
        )
    shape = struct.unpack(f">{ndim}I", buf[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(buf) - offset != int(np.prod(shape)):
        raise CorruptFileError(
            f"{path}: header says shape {shape} ({int(np.prod(shape)):,} bytes) but "
            f"{len(buf) - offset:,} data bytes follow (truncated or corrupt)"
        )
    return np.frombuffer(buf, np.uint8, offset=offset).reshape(shape)


def read_images(path: Path) -> np.ndarray:
    """(n, 28, 28, 1) uint8."""
    images = parse_idx(read_bytes(path), path, 3)
    if images.shape[1:] != (28, 28):
        raise CorruptFileError(f"{path}: images are {images.shape[1:]}, expected (28, 28)")
    return images[..., None]


def read_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """(n,) int64 in 0..num_classes-1."""
    labels = parse_idx(read_bytes(path), path, 1)
    if labels.size and labels.max() >= num_classes:
        raise CorruptFileError(f"{path}: label {labels.max()} is out of range 0..{num_classes - 1}")
    return labels.astype(np.int64)
