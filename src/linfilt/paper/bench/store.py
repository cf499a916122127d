"""Where the bench keeps what it computed, under `<out>/<experiment>/bench/`:

    unlearned/<method>/<key>/chunks/<a>-<b>/   one chunk of a method's unlearned population:
        logits.npy (m, n_test, k - |C|), features.npy (m, n_probe, d), heads.npy (m, k - |C|, d + 1),
        forgotten.npy (m,) forgotten-class accuracy before the forgotten outputs are dropped (NaN
        where the method has no such outputs), info.json (seconds; written last: the chunk is done)
    references/<population>/<key>/             features.npy and heads.npy of a trained population
    runs/<digest>/bench.json, rows/<row>.json, result.json

A method's key hashes its population config, its settings and the probe images, so adding a method
or an attack reuses what is stored; every array has its checksum beside it (linfilt.paper.arrays).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linfilt.atomic import write_json
from linfilt.errors import CorruptFileError
from linfilt.paper.arrays import REDO, finite_problem, load_array, save_array

_CHUNK = re.compile(r"(\d+)-(\d+)")
ARRAYS = ("logits", "features", "heads", "forgotten")


@dataclass
class Unlearned:
    """One method's unlearned population, as the audit reads it."""

    logits: np.ndarray  # (M, n_test, k - |C|)
    features: np.ndarray  # (M, n_probe, d): penultimate features on the probe images
    heads: np.ndarray  # (M, k - |C|, d + 1): [W | b]
    forgotten: np.ndarray  # (M,) forgotten-class accuracy with all k outputs; NaN: none
    seconds: float  # unlearning time, all models together


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        float(info["seconds"])
        return info
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc}); {REDO}") from None


class ChunkStore:
    """The chunks of one method's unlearned population."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def done(self) -> dict[tuple[int, int], Path]:
        folder = self.root / "chunks"
        found = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            match = _CHUNK.fullmatch(path.name)
            if match and (path / "info.json").is_file():
                found[(int(match[1]), int(match[2]))] = path
        return found

    def write(self, a: int, part: Unlearned) -> None:
        folder = self.root / "chunks" / f"{a:05d}-{a + len(part.logits):05d}"
        (folder / "info.json").unlink(missing_ok=True)
        for name in ARRAYS:
            save_array(folder / f"{name}.npy", np.ascontiguousarray(getattr(part, name), np.float32))
        write_json(folder / "info.json", {"seconds": part.seconds})

    def read(self, models: int) -> Unlearned:
        """Models 0..models-1 from the chunk files; CorruptFileError if they are not all there."""
        chunks = {ab: p for ab, p in self.done().items() if ab[0] < models}
        covered = sorted(j for a, b in chunks for j in range(a, min(b, models)))
        if covered != list(range(models)):
            raise CorruptFileError(f"the chunks in {self.root / 'chunks'} do not cover models "
                                   f"0..{models - 1} once each; delete the folder and rerun")
        parts = {name: [] for name in ARRAYS}
        seconds = 0.0
        for (a, b), path in sorted(chunks.items()):
            for name in ARRAYS:
                arr = load_array(path / f"{name}.npy", None, np.float32,
                                 None if name == "forgotten" else finite_problem)
                if len(arr) != b - a:
                    raise CorruptFileError(f"{path / (name + '.npy')} holds {len(arr)} models, not "
                                           f"{b - a}; {REDO}")
                parts[name].append(arr[:models - a])
            seconds += _read_info(path / "info.json")["seconds"] * (min(b, models) - a) / (b - a)
        return Unlearned(*(np.concatenate(parts[name]) for name in ARRAYS), seconds=seconds)
