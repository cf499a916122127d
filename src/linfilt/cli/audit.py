"""`linfilt audit --candidate NAME=U.npy ... --retrained R.npy --labels Y.npy --forget C ...`.

The paper's attack on logits you bring: a bench for any unlearning operation, not only ours.
Every candidate population (models, test images, outputs) is attacked against the retrained one
on the same model splits and images, so candidates are compared pairwise (differences to the
first candidate); `--retrained2`, a second, independent retrained population, adds the floor
(audit.floor_advantage: a permutation null). Arrays are read with pickling disabled.
"""
from __future__ import annotations

import argparse
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from linfilt import audit
from linfilt.atomic import write_json
from linfilt.errors import LinfiltError
from linfilt.outputs import check_output_file
from linfilt.validation import check_class_ids, check_labels, check_n_jobs, check_positive_int, check_seed


def register(sub) -> None:
    p = sub.add_parser(
        "audit", help="attack advantage of unlearned vs retrained logit populations",
        description="Attack candidate unlearned populations against a retrained one (the paper's "
                    "weak-unlearning test) and print advantages with intervals over repeats.")
    p.add_argument("--candidate", action="append", required=True, metavar="NAME=PATH",
                   help="an unlearned population's logits, .npy shaped (models, test images, outputs); "
                        "repeat for several (the first is the baseline of the paired differences)")
    p.add_argument("--retrained", required=True, metavar="PATH",
                   help="logits of models retrained without the forgotten classes, same image and output axes")
    p.add_argument("--retrained2", metavar="PATH",
                   help="a second, independent retrained population: adds the floor (permutation null)")
    p.add_argument("--labels", required=True, metavar="PATH", help="original class id of each test image, .npy")
    p.add_argument("--forget", nargs="+", type=int, required=True, metavar="CLASS",
                   help="the forgotten class ids (original ids)")
    p.add_argument("--repeats", type=int, default=5, help="attack repeats behind each interval (default 5)")
    p.add_argument("--samples", type=int, default=150,
                   help="images of a class per model per side (default 150, the paper's)")
    p.add_argument("--retained-samples", type=int, metavar="N",
                   help="images per model per side for retained classes (default: --samples; "
                        "the paper's MNIST used 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model splits and image draws (default 0)")
    p.add_argument("--sampling", choices=sorted(audit.SAMPLING), default="ours",
                   help="image sampling: ours (default: a fresh subset per model) or authors (one "
                        "subset per population and side, shared by its models, as the paper's scripts)")
    p.add_argument("--adaboost", choices=("SAMME", "SAMME.R"), default="SAMME",
                   help="the AB attack: SAMME (scikit-learn's today, default) or SAMME.R (its default "
                        "in 2020, which the paper used; linfilt.attacks.SammeR)")
    p.add_argument("--jobs", type=int, default=1, help="parallel attack fits (default 1; -1: all cores)")
    p.add_argument("--per-class", action="store_true", help="also print every class' advantage")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--force", action="store_true", help="replace --json if it exists (never an input)")
    p.set_defaults(func=run)


def _load(path: str, what: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise LinfiltError(f"{what}: {file} is not a file")
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LinfiltError(f"{what}: {file} is not a readable .npy array without pickles ({exc})") from None
    if not isinstance(arr, np.ndarray):  # np.load opens an .npz archive whatever its name
        arr.close()
        raise LinfiltError(f"{what}: {file} is an .npz archive, not an .npy array; save the array with numpy.save")
    return arr


def _candidate_paths(specs: list[str]) -> dict[str, str]:
    """--candidate NAME=PATH arguments as {name: path}, nothing read yet."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LinfiltError(f"--candidate {spec!r}: write NAME=PATH, e.g. normalization=unlearned.npy")
        if name in out or name == "floor":
            raise LinfiltError(f"--candidate name {name!r} is used twice or reserved; give each a new name")
        out[name] = path
    return out


def _check_populations(populations: dict[str, np.ndarray]) -> None:
    """Every population checked before the first attack runs; one error naming each bad one."""
    problems = []
    for name, arr in populations.items():
        try:
            audit.check_population(name, arr)  # the attack's own check: 3-D, non-empty, float, finite
        except LinfiltError as exc:
            problems.append(str(exc))
            continue
        if arr.shape[0] < 2:
            problems.append(f"{name} has 1 model: the attack trains on some models and tests "
                            "on others, so it needs at least 2")
    if problems:
        raise LinfiltError("; ".join(problems))
    shapes = {name: arr.shape for name, arr in populations.items()}
    if len({shape[1:] for shape in shapes.values()}) > 1:
        raise LinfiltError("all populations must share the test images and outputs (axes 1 and 2): "
                           + ", ".join(f"{n} {s}" for n, s in shapes.items()))


def _table(title: str, rows: dict[str, dict[str, Mapping[str, audit.Estimate]]],
           classifiers: tuple[str, ...]) -> list[str]:
    """rows: name -> {group: {classifier: Estimate}}, one table line per (name, group)."""
    lines = ["", title, "", "| | group | " + " | ".join(classifiers) + " |",
             "|---|---|" + "---|" * len(classifiers)]
    for name, groups in rows.items():
        lines += [f"| {name} | {group} | " + " | ".join(str(row[c]) for c in classifiers) + " |"
                  for group, row in groups.items()]
    return lines


def _check_arguments(args: argparse.Namespace) -> None:
    check_positive_int(args.repeats, "--repeats")
    check_positive_int(args.samples, "--samples")
    if args.retained_samples is None:
        args.retained_samples = args.samples
    check_positive_int(args.retained_samples, "--retained-samples")
    check_n_jobs(args.jobs, "--jobs")
    check_seed(args.seed, "--seed")
    args.forget = list(check_class_ids(args.forget, "--forget"))


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    paths = _candidate_paths(args.candidate)
    inputs = {**{f"--candidate {n}": p for n, p in paths.items()}, "--retrained": args.retrained,
              "--labels": args.labels}
    if args.retrained2:
        inputs["--retrained2"] = args.retrained2
    if args.json:
        check_output_file(args.json, flag="--json", inputs=inputs.values(), force=args.force)
    populations = {name: _load(path, name) for name, path in inputs.items() if name != "--labels"}
    _check_populations(populations)
    labels = check_labels(_load(args.labels, "--labels"), "--labels", length=populations["--retrained"].shape[1])
    absent = [c for c in args.forget if c not in labels]
    if absent:
        raise LinfiltError(f"--forget {absent}: no test image has this label in --labels; the attack needs them")
    candidates = {name: populations[f"--candidate {name}"] for name in paths}
    retrained = populations["--retrained"]
    samples = {int(c): args.samples if c in args.forget else args.retained_samples
               for c in np.unique(labels)}

    rows = len(candidates) + bool(args.retrained2)
    bar = tqdm(total=rows * args.repeats * len(np.unique(labels)), desc="audit", unit="attack")
    kw = dict(repeats=args.repeats, seed=args.seed, train_samples=samples, test_samples=samples,
              n_jobs=args.jobs, progress=lambda: bar.update(), sampling=args.sampling,
              classifiers=(audit.AUTHORS_CLASSIFIERS if args.adaboost == "SAMME.R"
                           else audit.DEFAULT_CLASSIFIERS))
    attacks = {name: audit.attack_advantage(logits, retrained, labels, args.forget, **kw)
               for name, logits in candidates.items()}
    if args.retrained2:
        attacks["floor"] = audit.floor_advantage(retrained, populations["--retrained2"], labels,
                                                 args.forget, **kw)
    bar.close()
    summaries = {name: res.summary() for name, res in attacks.items()}
    classifiers = next(iter(attacks.values())).classifiers
    baseline = next(iter(candidates))
    differences = {f"{name} − {baseline}": audit.difference(attacks[name], attacks[baseline])
                   for name in candidates if name != baseline}

    lines = [f"Attack advantage: mean over {args.repeats} repeats [central 95% of the repeats]; "
             f"images per model per side: {args.samples} (forgotten), {args.retained_samples} "
             f"(retained); forgotten classes {args.forget}."]
    lines += _table("**Advantage** (0: indistinguishable from retrained, 1: always told apart)",
                    {name: s.groups() for name, s in summaries.items()}, classifiers)
    if differences:
        lines += _table(f"**Paired difference to {baseline}** (same splits and images)",
                        {name: s.groups() for name, s in differences.items()}, classifiers)
    if args.per_class:
        for name, summary in summaries.items():
            per_class = {f"class {c}": {"forgotten" if c in args.forget else "retained": row}
                         for c, row in summary.per_class.items()}
            lines += _table(f"**{name}, per class**", per_class, classifiers)
    print("\n".join(lines))
    if args.json:
        write_json(args.json, {"attacks": {n: r.to_json() for n, r in attacks.items()},
                               "advantage": {n: s.to_json() for n, s in summaries.items()},
                               "difference": {n: s.to_json() for n, s in differences.items()},
                               "samples": args.samples, "retained_samples": args.retained_samples})
    return 0
