"""`linfilt reproduce` / `linfilt report`: run (or read back) the experiments behind paper
artefacts and write one `report.md` with our numbers, intervals and the paper's beside them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from linfilt.atomic import write_bytes, write_text
from linfilt.errors import LinfiltError
from linfilt.experiments.runner import result_dir, run_experiment
from linfilt.experiments.spec import ARTIFACTS, EXPERIMENTS, Experiment

INVERSION_FIGURES = ("figure1", "figure5", "figure6")
ALL = tuple(ARTIFACTS) + INVERSION_FIGURES


def resolve(names: Sequence[str]) -> list[str]:
    """Artefact names in paper order; "all" expands; "table1".."figure6" accepted."""
    chosen = set()
    for name in names:
        name = name.lower().replace(" ", "")
        if name == "all":
            chosen.update(ALL)
        elif name in ALL:
            chosen.add(name)
        else:
            raise LinfiltError(f"unknown artefact {name!r}; choose from all, {', '.join(ALL)}")
    order = {a: i for i, a in enumerate(sorted(ALL, key=lambda a: (a.startswith("figure"),
                                                                   int(a.strip("tablefigure")))))}
    return sorted(chosen, key=order.__getitem__)


def experiments_for(artifacts: Sequence[str], models: int | None, epochs: int | None,
                    repeats: int | None) -> dict[str, Experiment]:
    names = [n for a in artifacts if a in ARTIFACTS for n in ARTIFACTS[a][0]]
    return {n: EXPERIMENTS[n].scaled(models, epochs, repeats) for n in dict.fromkeys(names)}


def reproduce(artifacts: Sequence[str], out: str | Path = "runs", *, models: int | None = None,
              epochs: int | None = None, repeats: int | None = None, device: str = "cpu",
              n_jobs: int = 1, train: bool = True, progress: bool = True,
              report_dir: str | Path | None = None) -> Path:
    """Run (train=True) or only read back (train=False) what `artifacts` need; write the report.
    Returns the report's path: `<report_dir>/report.md` (default `<out>/report.md`), figures beside it."""
    from linfilt.report import render

    out = Path(out)
    report_dir = Path(report_dir) if report_dir is not None else out
    artifacts = resolve(artifacts)
    metrics: dict[str, dict[str, Any]] = {}
    for name, exp in experiments_for(artifacts, models, epochs, repeats).items():
        path = result_dir(exp, out, device) / "metrics.json"
        if train:
            metrics[name] = run_experiment(exp, out, device, n_jobs=n_jobs, progress=progress)
        elif path.is_file():
            metrics[name] = json.loads(path.read_text())
        else:
            raise LinfiltError(f"no finished results for {name} at this scale ({path} is missing); "
                               "run `linfilt reproduce` with the same --models/--epochs/--repeats first")
    sections = ["# linfilt: the paper's results, reproduced", "",
                "Advantage cells: mean over attack repeats [95% percentile interval over repeats; "
                "random model splits and image samples, the first repeat is the paper's fixed split]. "
                "These intervals keep the trained populations fixed. The floor row is a permutation "
                "null: each repeat pools the retrained population with a second, independent one, "
                "deals them into two random groups and attacks one against the other. Its expectation "
                "is exactly 0; its interval shows how far an advantage moves where there is nothing "
                "to find, including which models happen to form a population.", ""]
    sections += [render(a, metrics, report_dir) for a in artifacts if a in ARTIFACTS]
    inversion = [a for a in artifacts if a in INVERSION_FIGURES]
    if inversion:
        sections.append(_inversion_section(inversion, out, report_dir, epochs, device, train, progress))
    report = report_dir / "report.md"
    write_text(report, "\n".join(sections) + "\n")
    return report


def _inversion_section(figures: list[str], out: Path, report_dir: Path, epochs: int | None, device: str,
                       train: bool, progress: bool) -> str:
    from linfilt.experiments import inversion

    epochs = epochs or 150
    folder = out / "inversion" / f"epochs{epochs}-{device.split(':')[0]}"
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        result = json.loads(metrics_path.read_text())
    elif train:
        result = inversion.run(folder, epochs=epochs, device=device, progress=progress)
    else:
        raise LinfiltError(f"no inversion results at {metrics_path}; run `linfilt reproduce figure5` first")
    lines = ["## Figures 1, 5, 6: model inversion (AT&T faces, 4 people, inversion MLP)", "",
             f"*{epochs} epochs, on {device}.*", ""]
    for f in figures:  # beside the report, so the report folder stands alone
        write_bytes(report_dir / f"{f}.png", (folder / f"{f}.png").read_bytes())
        lines.append(f"![{f}]({f}.png)")
    return "\n".join(lines + ["", result["markdown"], ""])
