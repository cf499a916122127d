"""`linfilt reproduce` / `linfilt report`: run (or read back) the experiments behind paper
artefacts and write one `report.md` with our numbers, intervals and the paper's beside them."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from linfilt.atomic import write_text
from linfilt.errors import LinfiltError
from linfilt.outputs import check_output_dir, check_output_file
from linfilt.paper import cluster
from linfilt.paper.experiments import fidelity, inversion
from linfilt.paper.experiments.runner import (ExperimentResult, read_result, read_stored, result_dir,
                                              run_experiment, with_before_all)
from linfilt.paper.experiments.spec import ARTIFACTS, EXPERIMENTS, KEPT_OUTPUTS, Experiment, check_protocol
from linfilt.paper.report import figures, render, render_fidelity, render_inversion
from linfilt.paper.settings import FASTEST, FIDELITY
from linfilt.paper.training import check_device
from linfilt.validation import check_n_jobs, check_optional_positive_int


# Not one of the paper's artefacts (so not in "all"): the study of our protocol choices.
FIDELITY_NAME = "fidelity"


def resolve(names: Sequence[str]) -> list[str]:
    """Artefact names in paper order (tables, then figures), then "fidelity" if named; "all"
    expands to the paper's artefacts; "table1".."figure6"."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise LinfiltError(f"artefacts must be a list of names like ['table1', 'figure3'], got {names!r}")
    chosen = set()
    for name in names:
        name = name.lower().replace(" ", "")
        if name == "all":
            chosen.update(ARTIFACTS)
        elif name in ARTIFACTS or name == FIDELITY_NAME:
            chosen.add(name)
        else:
            raise LinfiltError(f"unknown artefact {name!r}; choose from all, {', '.join(ARTIFACTS)}, "
                               f"{FIDELITY_NAME}")
    return [a for a in [*ARTIFACTS, FIDELITY_NAME] if a in chosen]


def experiments_for(artifacts: Sequence[str], models: int | None, epochs: int | None,
                    repeats: int | None, protocol: str = "ours") -> dict[str, Experiment]:
    """The experiments behind `artifacts` at this scale; one that an artefact shows the
    KEPT_OUTPUTS row of audits it (and so has a digest of its own), the others do not."""
    chosen = [ARTIFACTS[a] for a in artifacts if a in ARTIFACTS]
    names = [n for a in chosen for n in a.experiments]
    kept = {n for a in chosen if KEPT_OUTPUTS in (a.rows or ()) for n in a.experiments}
    return {n: dataclasses.replace(EXPERIMENTS[n].scaled(models, epochs, repeats, protocol),
                                   keep_outputs=EXPERIMENTS[n].keep_outputs or n in kept)
            for n in dict.fromkeys(names)}


def reproduce(artifacts: Sequence[str], out: str | Path = "runs", *, models: int | None = None,
              epochs: int | None = None, repeats: int | None = None, device: str = "cpu",
              n_jobs: int = 1, train: bool = True, progress: bool = True,
              report_dir: str | Path | None = None, protocol: str = "ours", backend: str = "local",
              address: str | None = None, cpus_per_task: float | None = None,
              gpus_per_task: float | None = None, chunk_size: int | None = None) -> Path:
    """Run (train=True) or only read back (train=False) what `artifacts` need; write the report.
    Returns the report's path: `<report_dir>/report.md` (default `<out>/report.md`), figures beside it.

    protocol: the attack protocol, "ours" or "authors" (settings.ATTACK_PROTOCOLS). "fidelity"
    among the artefacts adds the fidelity study (linfilt.paper.experiments.fidelity) on the
    default protocol; with train=False too, it audits the stored populations for the attacks
    not stored yet, and stores them under `out`.

    chunk_size: models trained at once, and so the work of one Ray task (None: the population
    engine's default, 100 for a batched strategy); with a batched strategy each chunk size has
    populations and results of its own, so a report reads those of the chunk size it is given.

    backend "ray" trains the experiments' and the fidelity study's populations on a Ray cluster
    and runs their audits' n_jobs tasks there (`run_experiment`); the inversion runs here.

    Every argument and output path is checked before the first experiment starts. The report and
    its figures are this function's products: they replace earlier ones, but never an input."""
    artifacts = resolve(artifacts)
    for flag, value in (("--models", models), ("--epochs", epochs), ("--repeats", repeats),
                        ("--chunk-size", chunk_size)):
        check_optional_positive_int(value, flag)
    check_n_jobs(n_jobs, "--jobs")
    check_protocol(protocol)
    if FIDELITY_NAME in artifacts and protocol != "ours":
        raise LinfiltError("fidelity compares the protocols itself: run it without --protocol")
    on_ray = cluster.check_backend(backend, address, cpus_per_task, gpus_per_task, device, cli=True)
    if train and on_ray is None:  # (with Ray, the cluster's nodes train on the device)
        _check_device(device)
    if train or FIDELITY_NAME in artifacts:  # the fidelity study stores what it audits, for a report too
        check_output_dir(out, flag="--out")
    out = Path(out)
    flag = "--out" if report_dir is None else "--report-dir"
    report_dir = check_output_dir(out if report_dir is None else report_dir, flag=flag)
    experiments = experiments_for(artifacts, models, epochs, repeats, protocol)
    study = (EXPERIMENTS[FIDELITY["experiment"]].scaled(models, epochs, repeats)
             if FIDELITY_NAME in artifacts else None)
    inverted = [a for a in artifacts if a in ARTIFACTS and ARTIFACTS[a].layout == "inversion"]
    inversion_config = inversion.inversion_config(epochs=epochs)
    folder = inversion.result_dir(out, inversion_config, device)
    sources = [folder / f"{a}.png" for a in inverted]
    written = [report_dir / "report.md",
               *(png for a in artifacts if a in ARTIFACTS for png in figures(a, report_dir))]
    for path in written:
        check_output_file(path, flag=flag, inputs=sources, force=True)

    results: dict[str, ExperimentResult] = {}
    scored = {n for a in artifacts if a in ARTIFACTS and ARTIFACTS[a].layout == "accuracy"
              for n in ARTIFACTS[a].experiments}
    placement = dict(backend=backend, address=address, cpus_per_task=cpus_per_task,
                     gpus_per_task=gpus_per_task, chunk_size=chunk_size)
    # one Ray session for the experiments and the fidelity study
    with cluster.connected(on_ray if train and (experiments or study is not None) else None, n_jobs):
        for name, exp in experiments.items():
            path = result_dir(exp, out, device, chunk_size) / "metrics.json"
            if train:
                results[name] = run_experiment(exp, out, device, n_jobs=n_jobs, progress=progress,
                                               **placement)
            elif path.is_file():
                results[name] = read_result(path)
            else:
                raise LinfiltError(f"no finished results for {name} at this scale ({path} is missing); "
                                   "run `linfilt reproduce` with the same --models/--epochs/--repeats"
                                   "/--protocol first (and --chunk-size, if it was given)")
            if name in scored:  # Table 8 / 10's "before unlearning" row, from stored logits if need be
                results[name] = with_before_all(results[name], out, chunk_size)
        fidelity_result = (fidelity.run(study, out, device, train=train, n_jobs=n_jobs, progress=progress,
                                        **placement) if study is not None else None)
    # Every input is at hand before the first output is written: a missing one leaves no half report.
    inversion_result = (_inversion_result(folder, inversion_config, device, train, progress)
                        if inverted else None)
    sections = ["# linfilt: the paper's results, reproduced", "",
                "Advantage cells: mean over attack repeats [95% percentile interval over repeats; "
                "random model splits and image samples, the first repeat is the paper's fixed split]. "
                "These intervals keep the trained populations fixed. The floor row is a permutation "
                "null: each repeat pools the retrained population with a second, independent one, "
                "deals them into two random groups and attacks one against the other. Its expectation "
                "is exactly 0; its interval shows how far an advantage moves where there is nothing "
                "to find, including which models happen to form a population.", ""]
    sections += [render(a, results, report_dir) for a in artifacts
                 if a in ARTIFACTS and ARTIFACTS[a].experiments]
    if inversion_result is not None:
        sections.append(render_inversion(inverted, inversion_result, folder, report_dir, device))
    if fidelity_result is not None:
        sections.append(render_fidelity(fidelity_result))
    report = report_dir / "report.md"
    write_text(report, "\n".join(sections) + "\n")
    return report


def _check_device(device: str) -> None:
    """A device this machine can train on, of a type the population engine runs (cpu, cuda)."""
    if check_device(device).type not in FASTEST:
        raise LinfiltError(f"--device {device!r}: experiments run on cpu or cuda[:N]")


def _inversion_result(folder: Path, config: dict, device: str, train: bool,
                      progress: bool) -> inversion.InversionResult:
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        return read_stored(metrics_path, inversion.InversionResult.from_json)
    if train:
        return inversion.run(folder, epochs=config["epochs"], device=device, progress=progress)
    raise LinfiltError(f"no inversion results at {metrics_path}; run `linfilt reproduce figure5` first")
