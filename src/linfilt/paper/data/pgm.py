"""Binary greyscale PGM ("P5"): a text header (magic, width, height, maxval; `#` comments allowed),
one whitespace byte, then height x width bytes (maxval < 256)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from linfilt.errors import CorruptFileError

_WHITESPACE = b" \t\n\r\x0b\x0c"


def _header_tokens(buf: bytes, path: Path) -> tuple[list[bytes], int]:
    """The four header tokens and the offset of the raster."""
    tokens: list[bytes] = []
    i = 0
    while len(tokens) < 4:
        while i < len(buf) and (buf[i] in _WHITESPACE or buf[i] == ord("#")):
            if buf[i] == ord("#"):  # a comment runs to the end of the line
                while i < len(buf) and buf[i] not in b"\r\n":
                    i += 1
            else:
                i += 1
        start = i
        while i < len(buf) and buf[i] not in _WHITESPACE and buf[i] != ord("#"):
            i += 1
        if start == i:
            raise CorruptFileError(f"{path}: PGM header ends early (truncated or not a PGM file)")
        tokens.append(buf[start:i])
    if i >= len(buf) or buf[i] not in _WHITESPACE:
        raise CorruptFileError(f"{path}: PGM header is not followed by a whitespace byte")
    return tokens, i + 1


def parse_pgm(buf: bytes, path: Path) -> np.ndarray:
    """(height, width) uint8 from the bytes of a P5 file with maxval < 256."""
    if not buf.startswith(b"P5"):
        raise CorruptFileError(f"{path}: not a binary PGM file (magic {buf[:2]!r}, expected b'P5')")
    tokens, offset = _header_tokens(buf, path)
    try:
        width, height, maxval = (int(t) for t in tokens[1:])
    except ValueError:
        raise CorruptFileError(f"{path}: PGM header {b' '.join(tokens)!r} has a non-number") from None
    if not (0 < maxval < 256) or width <= 0 or height <= 0:
        raise CorruptFileError(f"{path}: unsupported PGM {width}x{height} with maxval {maxval}")
    if len(buf) - offset != width * height:
        raise CorruptFileError(
            f"{path}: {len(buf) - offset:,} pixel bytes, expected {width * height:,} for {width}x{height} "
            "(truncated or corrupt)"
        )
    image = np.frombuffer(buf, np.uint8, offset=offset).reshape(height, width)
    if image.max() > maxval:
        raise CorruptFileError(f"{path}: pixel value {image.max()} exceeds maxval {maxval}")
    return image


def read_pgm(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read one PGM file and check it is `shape` = (height, width)."""
    image = parse_pgm(path.read_bytes(), path)
    if image.shape != shape:
        raise CorruptFileError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {shape[1]}x{shape[0]}")
    return image
