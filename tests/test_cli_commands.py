"""`linfilt report` / `reproduce`: every input is read before the first output is written."""
import numpy as np

from linfilt.atomic import write_json
from linfilt.cli import main
from linfilt.filtration import METHODS
from linfilt.paper.experiments.runner import ExperimentResult, result_dir
from linfilt.paper.experiments.spec import EXPERIMENTS
from linfilt.paper.settings import PROTOCOL

SCALE = ["--models", "4", "--epochs", "1", "--repeats", "2"]


def _figure3_metrics(out):
    """A finished cifar10-p256 run at SCALE with what Figure 3's section reads, as the runner stores it."""
    exp = EXPERIMENTS["cifar10-p256"].scaled(4, 1, 2)
    shares = np.full(9, 1 / 9)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    distribution = {"retrained": {"probabilities_mean": shares.tolist(),
                                  "probabilities_std": (shares / 10).tolist()}}
    result = ExperimentResult(exp, "cpu", classes, tuple(range(1, 10)), {}, {}, {}, distribution, {})
    write_json(result_dir(exp, out, "cpu") / "metrics.json", result.to_json())


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


def test_the_demo_runs_the_digits_protocol_from_the_settings(capsys):
    """The demo's model and training come from settings.PROTOCOL["digits"]; a full model's row is
    read with all 10 outputs (it crashed on an empty forget set)."""
    proto = PROTOCOL["digits"]
    assert main(["demo", "--epochs", "2", "--forget", "5"]) == 0
    out = capsys.readouterr().out
    hidden = "-".join(map(str, proto["arch_kwargs"]["hidden"]))
    assert f"an MLP {proto['arch_kwargs']['in_features']}-{hidden}-10 trained" in out
    assert f"2 epochs, batch {proto['batch_size']}, seed 0" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("original", "retrained", *METHODS)}
    assert {name: row[1] for name, row in rows.items()} == {"original": "10", "retrained": "9",
                                                           **{m: "9" for m in METHODS}}
    assert all(rows[name][3] == "0.0%" for name in ("retrained", *METHODS))  # no output for digit 5
