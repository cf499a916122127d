"""`linfilt report` / `reproduce`: every input is read before the first output is written."""
import dataclasses
import json

import numpy as np

from linfilt.cli import main
from linfilt.paper.experiments.runner import result_dir
from linfilt.paper.experiments.spec import EXPERIMENTS

SCALE = ["--models", "4", "--epochs", "1", "--repeats", "2"]


def _figure3_metrics(out):
    """The fields Figure 3's section reads, as a finished cifar10-p256 run at SCALE stores them."""
    exp = EXPERIMENTS["cifar10-p256"].scaled(4, 1, 2)
    shares = np.full(9, 1 / 9)
    metrics = {"experiment": dataclasses.asdict(exp), "device": "cpu", "kept": list(range(1, 10)),
               "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                           "ship", "truck"],
               "distribution": {"retrained": {"probabilities_mean": shares.tolist(),
                                              "probabilities_std": (shares / 10).tolist()}}}
    path = result_dir(exp, out, "cpu") / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))


def test_report_writes_nothing_until_every_input_is_found(tmp_path, capsys):
    _figure3_metrics(tmp_path / "runs")
    report_dir = tmp_path / "report"
    # Figure 3's results are there, Figure 1's inversion is not: the report is refused before Figure
    # 3's PNG (rendered first) is written.
    where = ["--out", str(tmp_path / "runs"), "--report-dir", str(report_dir)]
    args = ["report", "figure3", "figure1", *SCALE, *where]
    assert main(args) == 2
    assert "no inversion results at" in capsys.readouterr().err
    assert not report_dir.exists()

    # With its inputs all there, the same folder gets the report and the figure, and a rebuild
    # replaces both (they are the command's own products).
    args = ["report", "figure3", *SCALE, *where]
    assert main(args) == 0
    png = report_dir / "figure3-cifar10-p256.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "![Figure 3, cifar10-p256](figure3-cifar10-p256.png)" in (report_dir / "report.md").read_text()
    (report_dir / "report.md").write_text("stale")
    assert main(args) == 0
    assert (report_dir / "report.md").read_text().startswith("# linfilt")
