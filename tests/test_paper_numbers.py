"""`linfilt.paper.experiments.paper` is a transcription of the paper's tables: compare every number
with the paper's own text, parsed here independently. The paper is $LINFILT_PAPER, else the
project's shared/paper/linear-filtration.md beside the checkout; without it these tests skip.

The paper's appendix swaps two captions: the block under "Table 7." holds the MNIST advantages
and the block under "Table 8." the MNIST accuracies.
"""
import os
import re
from pathlib import Path

import pytest

from linfilt.paper.experiments import paper

PAPER = Path(os.environ.get("LINFILT_PAPER")
             or Path(__file__).resolve().parents[2] / "shared" / "paper" / "linear-filtration.md")
pytestmark = pytest.mark.skipif(not PAPER.is_file(),
                                reason=f"the paper's text {PAPER} is absent (set LINFILT_PAPER to its .md file)")

METHODS = {"NAIVE": "naive", "NORMALIZATION": "normalization", "RANDOMIZATION": "randomization",
           "ZEROING": "zeroing", "BEFORE UNLEARNING": "before", "BASELINE MODEL": "retrained",
           "RETRAINING": "retrained"}
PLUS_MINUS = re.compile(r"([\d.]+) \$\\pm\$ ([\d.]+)")


def _blocks() -> dict[int, list[list[str]]]:
    """Caption number -> the tab-separated rows printed under that caption."""
    blocks: dict[int, list[list[str]]] = {}
    current = None
    for line in PAPER.read_text().splitlines():
        caption = re.match(r"Table (\d+)\.", line)
        if caption:
            current = int(caption.group(1))
            blocks[current] = []
        elif current is not None and "\t" in line:
            blocks[current].append(line.split("\t"))
        elif current is not None and line.strip() and blocks[current]:
            current = None  # prose after the table
    return blocks


def _label(method: str, s: str) -> str:
    # s = "-" or 1000 (all of a class' test images) is the plain method; 10 and 100 are sample sizes
    return METHODS[method] + (f"@{s}" if s in ("10", "100") else "")


def _advantages(rows: list[list[str]], with_p: bool) -> dict:
    out, group = {}, None
    for row in rows:
        if row[0] in ("UNLEARNED", "REMAINING"):
            group = row[0].lower()
            has_s = "$s$" in row
            continue
        values = tuple(float(v) for v in row[-3:])
        p = int(row[1]) if with_p else None
        s = row[2 if with_p else 1] if has_s else "-"
        out[(p, group, _label(row[0], s))] = values
    return out


def _accuracies(rows: list[list[str]], with_p: bool) -> dict:
    out = {}
    for row in rows[1:]:  # the first row is the header
        acc, loss = (PLUS_MINUS.fullmatch(cell.strip()).groups() for cell in row[-2:])
        p = int(row[1]) if with_p else None
        out[(p, _label(row[0], row[2] if with_p else "-"))] = tuple(float(v) for v in acc + loss)
    return out


@pytest.fixture(scope="module")
def blocks() -> dict[int, list[list[str]]]:
    return _blocks()  # read here, not at import, so a missing paper skips instead of breaking collection


def _ours(table: dict, p=None) -> dict:
    return {(p, group, method): v for (group, method), v in table.items()}


def _cifar(table: dict) -> dict:
    return {k: v for p, rows in table.items() for k, v in _ours(rows, p).items()}


def test_mnist_and_att_advantages(blocks):
    assert _advantages(blocks[7], with_p=False) == _ours(paper.MNIST_ADVANTAGE)
    table1 = _advantages(blocks[1], with_p=False)
    assert len(table1) == 4 and table1.items() <= _ours(paper.MNIST_ADVANTAGE).items()
    assert _advantages(blocks[3], with_p=False) == _ours(paper.ATT_ADVANTAGE)


def test_cifar_advantages_tables_9_2_4_and_5(blocks):
    assert _advantages(blocks[9], with_p=True) == _cifar(paper.CIFAR_ADVANTAGE)
    p256 = _ours(paper.CIFAR_ADVANTAGE[256], 256)
    for number in (2, 4):  # parts of Table 9 (p = 256), printed without p
        part = {(256, g, m): v for (_, g, m), v in _advantages(blocks[number], with_p=False).items()}
        assert part and part.items() <= p256.items(), number
    assert _advantages(blocks[5], with_p=True) == _cifar(paper.CIFAR_TABLE5)
    # Table 5 repeats Table 9's naive and normalization rows but for the three cells that differ
    differ = {k for k, v in _cifar(paper.CIFAR_TABLE5).items() if _cifar(paper.CIFAR_ADVANTAGE)[k] != v}
    assert differ == {(64, "unlearned", "naive"), (1024, "remaining", "normalization")}


def test_accuracies_tables_8_and_10(blocks):
    assert _accuracies(blocks[8], with_p=False) == {(None, m): v for m, v in paper.MNIST_ACCURACY.items()}
    assert _accuracies(blocks[10], with_p=True) == {(p, m): v for p, rows in paper.CIFAR_ACCURACY.items()
                                                     for m, v in rows.items()}
