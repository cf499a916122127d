"""Markdown tables and PNG figures from experiment metrics, with the paper's numbers beside ours.

Input: the `metrics.json` dicts that `linfilt.paper.experiments.runner.run_experiment` writes, by
experiment name. Nothing here trains or audits: `linfilt report` rebuilds reports from cache.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linfilt.atomic import atomic_path
from linfilt.audit import Estimate
from linfilt.paper.experiments import paper
from linfilt.paper.experiments.spec import ARTIFACTS, Experiment, parse_method

CLASSIFIERS = ("NN", "RF", "AB")
GROUPS = (("forgotten", "unlearned", "UNLEARNED"), ("retained", "remaining", "REMAINING"))


def _row_name(label: str) -> str:
    method, s = parse_method(label)
    names = {"floor": "retrain vs retrain (floor)", "transfer": "transfer"}
    return names.get(label, method) + (f", s = {s}" if s else "")


def cell(est: dict[str, Any]) -> str:
    """An estimate (as JSON) for a table: mean [interval], or the mean alone without an interval."""
    return str(Estimate.from_dict(est))


def scale_line(metrics: dict[str, Any]) -> str:
    exp = Experiment(**metrics["experiment"])
    return (f"*{exp.note}. Scale: {exp.models} models per population, {exp.trained_epochs} epochs, "
            f"{exp.repeats} attack repeats, on {metrics['device']}"
            f"{' (the paper’s full scale)' if exp.full_scale else ' (paper: 100 models per population)'}.*")


def advantage_table(metrics: dict[str, Any], rows: list[str], paper_rows: dict | None) -> str:
    """Our mean advantage [95% interval over attack repeats] and the paper's, per group."""
    head = "| | " + " | ".join(CLASSIFIERS) + " | paper " + " | paper ".join(CLASSIFIERS) + " |"
    lines = []
    for group, paper_group, title in GROUPS:
        lines += ["", f"**{title}**", "", head, "|---" * (1 + 2 * len(CLASSIFIERS)) + "|"]
        for row in rows + ["floor"]:
            ours = metrics["advantage"].get(row, {}).get(group)
            if ours is None:
                continue
            theirs = (paper_rows or {}).get((paper_group, row))
            cells = [cell(ours[c]) for c in CLASSIFIERS]
            cells += [f"{v:.3f}" for v in theirs] if theirs else ["—"] * len(CLASSIFIERS)
            lines.append(f"| {_row_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(metrics: dict[str, Any], rows: list[str]) -> str:
    """Paired differences to naive (same splits and images): an interval excluding 0 is a real gap."""
    lines = ["", "Paired difference to naive (method − naive, same attack splits and images):", "",
             "| | group | " + " | ".join(CLASSIFIERS) + " |", "|---|---|" + "---|" * len(CLASSIFIERS)]
    for row in rows:
        diff = metrics["difference_vs_naive"].get(row)
        if not diff:
            continue
        for group, _, title in GROUPS:
            if group in diff:
                lines.append(f"| {_row_name(row)} | {title.lower()} | "
                             + " | ".join(cell(diff[group][c]) for c in CLASSIFIERS) + " |")
    return "\n".join(lines)


def accuracy_table(metrics: dict[str, Any], rows: list[str], paper_rows: dict | None) -> str:
    names = {"before": "before unlearning (all k outputs)", "retrained": "retrained (baseline)"}
    lines = ["| | accuracy % | loss | paper accuracy % | paper loss |", "|---|---|---|---|---|"]
    for row in ["before", "retrained"] + rows:
        ours = metrics["accuracy"].get(row)
        if ours is None:
            continue
        theirs = (paper_rows or {}).get(row)
        p = f"{theirs[0]:.1f} ± {theirs[1]:.2f} | {theirs[2]:.2f} ± {theirs[3]:.2f}" if theirs else "— | —"
        lines.append(f"| {names.get(row, _row_name(row))} | {100 * ours['accuracy_mean']:.1f} ± "
                     f"{100 * ours['accuracy_std']:.2f} | {ours['loss_mean']:.3f} ± {ours['loss_std']:.3f} | {p} |")
    return "\n".join(lines)


def labels_changed_table(metrics: dict[str, Any]) -> str:
    lines = ["| | all % | unlearned % | correct % | accuracy % | paper (all, unl., cor., acc.) |",
             "|---|---|---|---|---|---|"]
    # In the experiment's method order: metrics.json stores its keys sorted.
    for row in [r for r in _methods(metrics) if r in metrics["labels_changed"]]:
        ours = metrics["labels_changed"][row]
        theirs = paper.CIFAR_LABELS_CHANGED.get(row)
        acc = 100 * metrics["accuracy"][row]["accuracy_mean"]
        lines.append(f"| {_row_name(row)} | {100 * ours['all']:.1f} | {100 * ours['unlearned']:.1f} | "
                     f"{100 * ours['correct']:.1f} | {acc:.1f} | "
                     + (", ".join(f"{v:.1f}" for v in theirs) if theirs else "—") + " |")
    return "\n".join(lines)


def figure3(metrics: dict[str, Any], path: str | Path) -> None:
    """Mean predicted probability of each retained class for the forgotten class' images, ± std."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ("retrained", "normalization", "transfer", "naive", "randomization")
            if r in metrics["distribution"]]
    names = [metrics["classes"][c] for c in metrics["kept"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        d = metrics["distribution"][row]
        x = np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, d["probabilities_mean"], width, yerr=d["probabilities_std"], label=row, capsize=2)
    ax.set_xticks(np.arange(len(names)), names, rotation=30)
    ax.set_ylabel("mean predicted probability")
    forgotten = metrics["classes"][metrics["experiment"]["forget"][0]]
    ax.set_title(f"Predictions for the forgotten class '{forgotten}' (mean ± std over models)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _methods(metrics: dict[str, Any], only: tuple[str, ...] | None = None) -> list[str]:
    rows = list(metrics["experiment"]["methods"])
    if metrics["experiment"]["transfer"]:
        rows.append("transfer")
    return [r for r in rows if only is None or r in only]


def _cifar(table: dict) -> Callable[[dict[str, Any]], dict | None]:
    """The paper's CIFAR-10 numbers for the experiment's p."""
    return lambda m: table.get(m["experiment"]["arch_kwargs"].get("p"))


def _fixed(table: dict) -> Callable[[dict[str, Any]], dict]:
    return lambda m: table


_ALL = None  # every method the experiment ran, and transfer
_NAIVE_NORM = ("naive", "normalization")


@dataclass(frozen=True)
class Layout:
    """How one paper artefact is shown: which kind of table, which of our rows (None: all), and
    where the paper's numbers for it come from (given the experiment's metrics)."""

    kind: str  # "advantage" (with paired differences unless `differences` is False), "accuracy",
    # "labels_changed" or "figure3"
    rows: tuple[str, ...] | None = _ALL
    paper: Callable[[dict[str, Any]], dict | None] | None = None
    differences: bool = True


LAYOUTS: dict[str, Layout] = {
    "table1": Layout("advantage", _NAIVE_NORM, _fixed(paper.MNIST_ADVANTAGE)),
    "table7": Layout("advantage", _ALL, _fixed(paper.MNIST_ADVANTAGE)),
    "table8": Layout("accuracy", _ALL, _fixed(paper.MNIST_ACCURACY)),
    "table3": Layout("advantage", _ALL, _fixed(paper.ATT_ADVANTAGE)),
    "table2": Layout("advantage", ("naive", "normalization", "randomization", "zeroing", "transfer"),
                     _cifar(paper.CIFAR_ADVANTAGE)),
    "table4": Layout("advantage", ("naive", "normalization@10", "normalization@100", "normalization"),
                     _cifar(paper.CIFAR_ADVANTAGE)),
    "table5": Layout("advantage", _NAIVE_NORM, _cifar(paper.CIFAR_TABLE5), differences=False),
    "table9": Layout("advantage", _ALL, _cifar(paper.CIFAR_ADVANTAGE)),
    "table10": Layout("accuracy", _ALL, _cifar(paper.CIFAR_ACCURACY)),
    "table6": Layout("labels_changed"),
    "figure3": Layout("figure3"),
}


def _body(layout: Layout, name: str, m: dict[str, Any], figures_dir: Path) -> list[str]:
    rows = _methods(m, layout.rows)
    theirs = layout.paper(m) if layout.paper else None
    if layout.kind == "advantage":
        return [advantage_table(m, rows, theirs)] + ([difference_table(m, rows)] if layout.differences else [])
    if layout.kind == "accuracy":
        return ["", accuracy_table(m, rows, theirs)]
    if layout.kind == "labels_changed":
        return ["", labels_changed_table(m)]
    png = figure3_path(figures_dir, name)
    figure3(m, png)
    return ["", f"![Figure 3, {name}]({png.name})"]


def figure3_path(figures_dir: Path, name: str) -> Path:
    return figures_dir / f"figure3-{name}.png"


def figures(artifact: str, figures_dir: Path) -> list[Path]:
    """The PNG files that rendering `artifact` writes into figures_dir."""
    if LAYOUTS[artifact].kind != "figure3":
        return []
    return [figure3_path(figures_dir, name) for name in ARTIFACTS[artifact][0]]


def render(artifact: str, metrics: dict[str, dict[str, Any]], figures_dir: Path) -> str:
    """One artefact's Markdown section; `metrics` by experiment name."""
    needed, title = ARTIFACTS[artifact]
    kind, number = artifact.rstrip("0123456789"), artifact.lstrip("tablefigure")
    out = [f"## {kind.capitalize()} {number}: {title}", ""]
    for name in needed:
        m = metrics[name]
        out += [f"### {name}", "", scale_line(m), *_body(LAYOUTS[artifact], name, m, figures_dir), ""]
    return "\n".join(out)
