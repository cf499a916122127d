"""`linfilt bench`: the fair bench for class unlearning. Every method (the four filtrations, the
transfer head, and the trained methods of `linfilt.paper.methods`) is applied to the same seen
population and judged by the same audit against the same retrained one: the paper's attacks,
stronger classifiers, a per-image likelihood-ratio test and white-box probes, with the cost of each."""
from linfilt.paper.bench.report import render
from linfilt.paper.bench.runner import run_bench
from linfilt.paper.bench.spec import ATTACKS, ROWS, Bench

__all__ = ["ATTACKS", "ROWS", "Bench", "render", "run_bench"]
