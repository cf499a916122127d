"""Markdown tables and PNG figures from stored results, with the paper's numbers beside ours.

Input: the typed results of finished runs, `ExperimentResult` (read from the `metrics.json` that
`linfilt.paper.experiments.runner.run_experiment` writes) by experiment name, and the inversion's
`InversionResult`. Nothing here trains or audits: `linfilt report` rebuilds reports from cache.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from linfilt.atomic import atomic_path, write_bytes
from linfilt.paper.experiments import paper
from linfilt.paper.experiments.fidelity import SAMPLINGS, FidelityResult
from linfilt.paper.experiments.inversion import InversionResult, markdown
from linfilt.paper.experiments.runner import ExperimentResult
from linfilt.paper.experiments.spec import ARTIFACTS, KEPT_OUTPUTS, Artifact, parse_method

CLASSIFIERS = ("NN", "RF", "AB")
GROUPS = (("forgotten", "unlearned", "UNLEARNED"), ("retained", "remaining", "REMAINING"))


def _row_name(label: str) -> str:
    method, s = parse_method(label)
    names = {"floor": "retrain vs retrain (floor)", "transfer": "transfer",
             KEPT_OUTPUTS: "normalization, k outputs kept (vs retrained with k outputs)"}
    return names.get(label, method) + (f", s = {s}" if s else "")


def scale_line(result: ExperimentResult) -> str:
    exp = result.experiment
    protocol = ("" if exp.protocol == "ours" else
                " Attack protocol: the authors' (one image subset per population and side, AdaBoost "
                "SAMME.R" + (", their ResNet" if exp.dataset == "att_faces" else "")
                + "); after each cell, the paper's single run on the fixed split.")
    return (f"*{exp.note}. Scale: {exp.models} models per population, {exp.trained_epochs} epochs, "
            f"{exp.repeats} attack repeats, on {result.device}"
            f"{' (the paper’s full scale)' if exp.full_scale else ' (paper: 100 models per population)'}."
            f"{protocol}*")


def _cell(estimate, with_fixed: bool) -> str:
    """An advantage cell; with_fixed adds the fixed-split run (repeat 0) that the paper reports."""
    if with_fixed and estimate.fixed is not None:
        return f"{estimate} · fixed {estimate.fixed:.3f}"
    return str(estimate)


def advantage_table(result: ExperimentResult, rows: list[str], paper_rows: Mapping | None) -> str:
    """Our mean advantage [95% interval over attack repeats] and the paper's, per group."""
    with_fixed = result.experiment.protocol == "authors"
    head = "| | " + " | ".join(CLASSIFIERS) + " | paper " + " | paper ".join(CLASSIFIERS) + " |"
    lines = []
    for group, paper_group, title in GROUPS:
        lines += ["", f"**{title}**", "", head, "|---" * (1 + 2 * len(CLASSIFIERS)) + "|"]
        for row in rows + ["floor"]:
            if row not in result.advantage or getattr(result.advantage[row], group) is None:
                continue
            ours = getattr(result.advantage[row], group)
            theirs = (paper_rows or {}).get((paper_group, row))
            cells = [_cell(ours[c], with_fixed) for c in CLASSIFIERS]
            cells += [f"{v:.3f}" for v in theirs] if theirs else ["—"] * len(CLASSIFIERS)
            lines.append(f"| {_row_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(result: ExperimentResult, rows: list[str]) -> str:
    """Paired differences to naive (same splits and images): an interval excluding 0 is a real gap."""
    lines = ["", "Paired difference to naive (method − naive, same attack splits and images):", "",
             "| | group | " + " | ".join(CLASSIFIERS) + " |", "|---|---|" + "---|" * len(CLASSIFIERS)]
    for row in rows:
        diff = result.difference_vs_naive.get(row)
        if diff is None:
            continue
        for group, _, title in GROUPS:
            if getattr(diff, group) is not None:
                lines.append(f"| {_row_name(row)} | {title.lower()} | "
                             + " | ".join(str(getattr(diff, group)[c]) for c in CLASSIFIERS) + " |")
    return "\n".join(lines)


def kept_outputs_note(result: ExperimentResult) -> str:
    """What the KEPT_OUTPUTS row compares, under the table."""
    forgotten = ", ".join(result.classes[c] for c in result.experiment.forget)
    return (f"\n*{_row_name(KEPT_OUTPUTS)}*: the normalization model as `linfilt.unlearn(..., "
            f"keep_outputs=True)` returns it (k outputs, class {forgotten}'s output masked: its logit is "
            f"float32's lowest finite value, {np.finfo(np.float32).min:.2g}, on every input), attacked "
            "against models retrained from scratch without the class but with the same k outputs (the "
            "retained images with their original labels; the forgotten output is never a target, so "
            "its logit is learnt low but finite). Against retrained models masked the same way the row "
            "would measure what normalization's does: masking both sides only adds a constant column.")


def accuracy_table(result: ExperimentResult, rows: list[str], paper_rows: Mapping | None) -> str:
    """Accuracy and loss on retained-class images; the model before unlearning on every test image,
    as the authors scored it (the paper's row), and on retained-class images only as an extra row."""
    names = {"before_all": "before unlearning (all k outputs, all test images)",
             "before": "before unlearning (all k outputs, retained-class images only)",
             "retrained": "retrained (baseline)"}
    lines = ["| | accuracy % | loss | paper accuracy % | paper loss |", "|---|---|---|---|---|"]
    for row in ["before_all", "before", "retrained"] + rows:
        ours = result.accuracy.get(row)
        if ours is None:
            continue
        theirs = (paper_rows or {}).get("before" if row == "before_all" else row)
        if row == "before" and "before_all" in result.accuracy:
            theirs = None  # the paper's number is the all-images one
        p = f"{theirs[0]:.1f} ± {theirs[1]:.2f} | {theirs[2]:.2f} ± {theirs[3]:.2f}" if theirs else "— | —"
        lines.append(f"| {names.get(row, _row_name(row))} | {100 * ours['accuracy_mean']:.1f} ± "
                     f"{100 * ours['accuracy_std']:.2f} | {ours['loss_mean']:.3f} ± {ours['loss_std']:.3f} | {p} |")
    return "\n".join(lines)


def labels_changed_table(result: ExperimentResult) -> str:
    lines = ["| | all % | unlearned % | correct % | accuracy % | paper (all, unl., cor., acc.) |",
             "|---|---|---|---|---|---|"]
    # In the experiment's method order: metrics.json stores its keys sorted.
    for row in [r for r in result.experiment.rows() if r in result.labels_changed]:
        ours = result.labels_changed[row]
        theirs = paper.CIFAR_LABELS_CHANGED.get(row)
        acc = 100 * result.accuracy[row]["accuracy_mean"]
        lines.append(f"| {_row_name(row)} | {100 * ours['all']:.1f} | {100 * ours['unlearned']:.1f} | "
                     f"{100 * ours['correct']:.1f} | {acc:.1f} | "
                     + (", ".join(f"{v:.1f}" for v in theirs) if theirs else "—") + " |")
    return "\n".join(lines)


def figure3(result: ExperimentResult, path: str | Path) -> None:
    """Mean predicted probability of each retained class for the forgotten class' images, ± std."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ("retrained", "normalization", "transfer", "naive", "randomization")
            if r in result.distribution]
    names = [result.classes[c] for c in result.kept]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        d = result.distribution[row]
        x = np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, d["probabilities_mean"], width, yerr=d["probabilities_std"], label=row, capsize=2)
    ax.set_xticks(np.arange(len(names)), names, rotation=30)
    ax.set_ylabel("mean predicted probability")
    forgotten = result.classes[result.experiment.forget[0]]
    ax.set_title(f"Predictions for the forgotten class '{forgotten}' (mean ± std over models)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _body(artifact: Artifact, name: str, result: ExperimentResult, figures_dir: Path) -> list[str]:
    rows = [r for r in result.experiment.rows() if artifact.rows is None or r in artifact.rows]
    theirs = artifact.paper(result.experiment) if artifact.paper else None
    if artifact.layout == "advantage":
        return ([advantage_table(result, rows, theirs)]
                + ([kept_outputs_note(result)] if KEPT_OUTPUTS in rows else [])
                + ([difference_table(result, rows)] if artifact.differences else []))
    if artifact.layout == "accuracy":
        return ["", accuracy_table(result, rows, theirs)]
    if artifact.layout == "labels_changed":
        return ["", labels_changed_table(result)]
    png = figure3_path(figures_dir, name)
    figure3(result, png)
    return ["", f"![Figure 3, {name}]({png.name})"]


def figure3_path(figures_dir: Path, name: str) -> Path:
    return figures_dir / f"figure3-{name}.png"


def figures(artifact: str, figures_dir: Path) -> list[Path]:
    """The PNG files that rendering `artifact` writes into figures_dir."""
    entry = ARTIFACTS[artifact]
    if entry.layout == "inversion":
        return [figures_dir / f"{artifact}.png"]
    if entry.layout == "figure3":
        return [figure3_path(figures_dir, name) for name in entry.experiments]
    return []


def render(artifact: str, results: Mapping[str, ExperimentResult], figures_dir: Path) -> str:
    """One experiment artefact's Markdown section; `results` by experiment name."""
    entry = ARTIFACTS[artifact]
    out = [f"## {entry.kind.capitalize()} {entry.number}: {entry.title}", ""]
    for name in entry.experiments:
        result = results[name]
        out += [f"### {name}", "", scale_line(result), *_body(entry, name, result, figures_dir), ""]
    return "\n".join(out)


def render_inversion(artifacts: list[str], result: InversionResult, folder: Path, figures_dir: Path,
                     device: str) -> str:
    """One section for the inversion figures among `artifacts`: each PNG copied from the run's
    `folder` to figures_dir (so the report folder stands alone), then the similarity tables."""
    lines = [f"## Figures 1, 5, 6: model inversion (AT&T faces, {result.config['people']} people, "
             "inversion MLP)", "", f"*{result.config['epochs']} epochs, on {device}.*", ""]
    for name in artifacts:
        write_bytes(figures_dir / f"{name}.png", (folder / f"{name}.png").read_bytes())
        lines.append(f"![{name}]({name}.png)")
    return "\n".join(lines + ["", markdown(result.similarities, result.target_probability), ""])


def render_fidelity(result: FidelityResult) -> str:
    """The fidelity study: per row, each (population seed, sampling, split) with NN, RF and AdaBoost
    under both algorithms, and the paper's numbers (its AdaBoost was SAMME.R)."""
    exp = result.experiment
    seeds = sorted({key[0] for key in result.attacks})
    rows = list(dict.fromkeys(key[3] for key in result.attacks))
    columns = [("NN", "SAMME"), ("RF", "SAMME"), ("AB", "SAMME"), ("AB", "SAMME.R")]
    names = ["NN", "RF", "AB SAMME", "AB SAMME.R"]
    out = ["## Fidelity: how far each protocol choice moves the MNIST advantages", "",
           f"*{exp.note}; {exp.models} models per population, {exp.trained_epochs} epochs, on "
           f"{result.device}. Each line is one attack protocol on one pair of populations (population "
           f"seed: the seed of the trained and retrained populations, {exp.seed} being the stored "
           f"ones). Sampling: ours draws a fresh image subset per model, the authors' one subset per "
           f"population and side. Split: the paper's fixed split (first 30% of models are test "
           f"models; one run, what the paper reports) or the mean of {exp.repeats} repeats "
           f"[95% percentile interval] (repeat 0 is the fixed split, later ones random splits). "
           f"AB SAMME is scikit-learn's AdaBoost today, AB SAMME.R its default in 2020 "
           f"(linfilt.attacks.SammeR). NN and RF do not depend on the AdaBoost algorithm.*", ""]
    head = ("| population seed | sampling | split | " + " | ".join(f"unl. {n}" for n in names) + " | "
            + " | ".join(f"rem. {n}" for n in names) + " |")
    for row in rows:
        theirs = {g: paper.MNIST_ADVANTAGE.get((g, row)) for g in ("unlearned", "remaining")}
        out += [f"**{_row_name(row)}**", "", head, "|---" * (3 + 2 * len(columns)) + "|"]
        for seed in seeds:
            for sampling in SAMPLINGS:
                for split in ("fixed", "mean"):
                    cells = []
                    for group in ("forgotten", "retained"):
                        for clf, algorithm in columns:
                            est = result.estimate((seed, sampling, algorithm, row), group, clf)
                            cells.append(f"{est.fixed:.3f}" if split == "fixed" else str(est))
                    split_name = "fixed split" if split == "fixed" else f"mean of {exp.repeats}"
                    out.append(f"| {seed} | {sampling} | {split_name} | " + " | ".join(cells) + " |")
        paper_cells = []
        for group in ("unlearned", "remaining"):
            nn_, rf, ab = theirs[group] if theirs[group] else ("—",) * 3
            paper_cells += [_fmt(nn_), _fmt(rf), "—", _fmt(ab)]
        out += ["| paper | | one run | " + " | ".join(paper_cells) + " |", ""]
    return "\n".join(out)


def _fmt(value) -> str:
    return value if isinstance(value, str) else f"{value:.3f}"
