"""The bench's report: per data set, one row per method, the audit's numbers and the cost, and a
PNG of the privacy-utility-cost trade-off."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from linfilt import audit
from linfilt.atomic import atomic_path
from linfilt.lira import LiraResult
from linfilt.probe import ModelAttack, ProbeAudit
from linfilt.paper.bench.spec import FILTRATIONS, Bench

NAMES = {"naive": "Naive", "normalization": "Normalization", "randomization": "Randomization",
         "zeroing": "Zeroing", "transfer": "Transfer (retrained head)", "ft": "Fine-tune (FT)",
         "neggrad": "NegGrad", "neggrad+": "NegGrad+", "rl": "Random labels (RL)",
         "boundary_shrink": "Boundary Shrink", "scrub": "SCRUB", "ssd": "SSD",
         "floor": "Floor (retrained vs retrained)"}


def _summary(row: Mapping[str, Any], run: str) -> audit.Summary | None:
    stored = row["attacks"].get(run)
    return None if stored is None else audit.AttackResult.from_json(stored).summary()


def _columns(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(attack run, classifier, column title) of every classifier attack in the result."""
    first = next(iter(result["rows"].values()))["attacks"]
    cols = []
    for run, suffix in (("paper", ""), ("strong", ""), ("sorted", " (sorted)")):
        if run in first:
            cols += [(run, c, f"{c}{suffix}") for c in first[run]["classifiers"]]
    return cols


def advantage_table(result: Mapping[str, Any], group: str) -> str:
    """Mean advantage [95 % interval over attack repeats] per row and classifier attack."""
    cols = _columns(result)
    lines = ["| | " + " | ".join(t for _, _, t in cols) + " |", "|---" * (1 + len(cols)) + "|"]
    for name, row in result["rows"].items():
        cells = []
        for run, clf, _ in cols:
            summary = _summary(row, run)
            estimates = None if summary is None else getattr(summary, group)
            cells.append("—" if estimates is None else str(estimates[clf]))
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cost(row: Mapping[str, Any], retrain: float) -> tuple[str, str]:
    seconds = row.get("seconds_per_model")
    if seconds is None or seconds <= 0:
        return "—", "—"
    ratio = retrain / seconds
    return f"{seconds:.3g} s", f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def _strongest(attack: ModelAttack) -> str:
    """The model-level attack's classifier with the largest mean advantage, and its estimate."""
    name, best = max(attack.summary().items(), key=lambda item: item[1].mean)
    return f"{best} ({name})"


def utility_table(result: Mapping[str, Any]) -> str:
    """Accuracy, the strong per-image and white-box attacks, and the cost of each row."""
    strong = "strong" in result["bench"]["attacks"]
    head = ["retained acc.", "forgotten acc.", "s / model", "× faster than retraining"]
    if strong:
        head = ["U-LiRA AUC", "TPR @ 1 % FPR", "TPR @ 0.1 % FPR", "probe acc. (forgotten)",
                "probe adv.", "head-weight adv."] + head
    lines = ["| | " + " | ".join(head) + " |", "|---" * (1 + len(head)) + "|"]
    retrain = result["retraining_seconds_per_model"]
    for name, row in result["rows"].items():
        cells = []
        if strong:
            cells += [str(e) for e in LiraResult.from_json(row["lira"]).summary().values()]
            probed = ProbeAudit.from_json(row["probe"])
            cells += [str(probed.accuracy()["unlearned"]), _strongest(probed.attack),
                      _strongest(ModelAttack.from_json(row["head"]))]
        acc = row["accuracy"]
        cells.append(f"{100 * acc['accuracy_mean']:.1f} ± {100 * acc['accuracy_std']:.2f}")
        forgotten = row.get("forgotten_accuracy")
        cells.append("—" if forgotten is None else f"{100 * forgotten:.1f}")
        cells += _cost(row, retrain)
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    acc = result["retrained_accuracy"]
    lines.append("| Retrained | " + " | ".join(["—"] * (len(head) - 4)
                                                 + [f"{100 * acc['accuracy_mean']:.1f} ± "
                                                    f"{100 * acc['accuracy_std']:.2f}", "—",
                                                    f"{retrain:.3g} s", "1×"]) + " |")
    return "\n".join(lines)


def worst_advantage(row: Mapping[str, Any]) -> float:
    """The largest mean forgotten-class advantage over every classifier attack of the row."""
    values = []
    for run in row["attacks"]:
        summary = _summary(row, run)
        if summary is not None and summary.forgotten is not None:
            values += [e.mean for e in summary.forgotten.values()]
    return max(values)


def tradeoff_figure(result: Mapping[str, Any], path: Path) -> None:
    """Worst forgotten-class advantage against retained accuracy; marker area grows with cost."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in result["rows"].items():
        if name == "floor":
            ax.axhline(worst_advantage(row), color="grey", linestyle="--", linewidth=1,
                       label="floor (retrained vs retrained)")
            continue
        seconds = row.get("seconds_per_model") or 0.0
        size = 30 + 60 * np.log10(1 + 1e3 * seconds)
        marker = "s" if name in FILTRATIONS else "o"
        ax.scatter(100 * row["accuracy"]["accuracy_mean"], worst_advantage(row), s=size, marker=marker,
                   alpha=0.7)
        ax.annotate(NAMES.get(name, name), (100 * row["accuracy"]["accuracy_mean"], worst_advantage(row)),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("retained-class test accuracy (%)")
    ax.set_ylabel("worst forgotten-class attack advantage")
    ax.set_title(f"{result['bench']['experiment']['name']}: privacy, utility, cost "
                 "(marker area ~ log time per model; squares: filtrations)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def render(result: Mapping[str, Any], figure: Path) -> str:
    bench = Bench.from_json(result["bench"])
    exp = bench.experiment
    tradeoff_figure(result, figure)
    forgotten = ", ".join(result["classes"][c] for c in exp.forget)
    lines = [f"## {exp.name}: {exp.note}", "",
             f"{exp.models} models per population, {exp.trained_epochs} epochs, forgotten: {forgotten}; "
             f"attack repeats: {exp.repeats}; device: {result['device']}"
             + (f"; run time {result['seconds']:.0f} s (the last run that computed anything; "
                "stored populations and rows are read back, not recomputed)" if "seconds" in result else "")
             + ".", "",
             "**Forgotten-class advantage** (mean [95 % interval over repeats]; 0 = indistinguishable "
             "from retrained)", "", advantage_table(result, "forgotten"), "",
             "**Retained-class advantage**", "", advantage_table(result, "retained"), "",
             "**Per-image, white-box, utility and cost**", "", utility_table(result), "",
             f"![trade-off]({figure.name})", ""]
    return "\n".join(lines)
