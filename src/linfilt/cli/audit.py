"""`linfilt audit --candidate NAME=U.npy ... --retrained R.npy --labels Y.npy --forget C ...`.

The paper's attack on logits you bring: a bench for any unlearning operation, not only ours.
Every candidate population (models, test images, outputs) is attacked against the retrained one
on the same model splits and images, so candidates are compared pairwise (differences to the
first candidate); `--retrained2`, a second, independent retrained population, adds the floor
(audit.floor_advantage: a permutation null). Arrays are read with pickling disabled.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from linfilt import audit
from linfilt.atomic import write_json
from linfilt.errors import LinfiltError
from linfilt.report import cell

GROUPS = ("forgotten", "retained")


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
    p.add_argument("--jobs", type=int, default=1, help="parallel attack fits (default 1)")
    p.add_argument("--per-class", action="store_true", help="also print every class' advantage")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.set_defaults(func=run)


def _load(path: str, what: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise LinfiltError(f"{what}: {file} is not a file")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LinfiltError(f"{what}: {file} is not a readable .npy array without pickles ({exc})") from None


def _candidates(specs: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LinfiltError(f"--candidate {spec!r}: write NAME=PATH, e.g. normalization=unlearned.npy")
        if name in out or name == "floor":
            raise LinfiltError(f"--candidate name {name!r} is used twice or reserved; give each a new name")
        out[name] = _load(path, f"--candidate {name}")
    return out


def _check_shapes(populations: dict[str, np.ndarray], labels: np.ndarray) -> None:
    shapes = {name: arr.shape for name, arr in populations.items()}
    for name, shape in shapes.items():
        if len(shape) != 3:
            raise LinfiltError(f"{name} must be logits shaped (models, test images, outputs), got {shape}")
    if len({shape[1:] for shape in shapes.values()}) > 1:
        raise LinfiltError("all populations must share the test images and outputs (axes 1 and 2): "
                           + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    n_images = next(iter(shapes.values()))[1]
    if labels.shape != (n_images,):
        raise LinfiltError(f"--labels has shape {labels.shape}; it needs one class id per test image, ({n_images},)")


def _row(name: str, group: str, summary: dict[str, Any], classifiers: tuple[str, ...]) -> str:
    return f"| {name} | {group} | " + " | ".join(cell(summary[c]) for c in classifiers) + " |"


def _table(title: str, rows: dict[str, dict[str, Any]], classifiers: tuple[str, ...]) -> list[str]:
    lines = ["", title, "", "| | group | " + " | ".join(classifiers) + " |",
             "|---|---|" + "---|" * len(classifiers)]
    for name, summary in rows.items():
        lines += [_row(name, g, summary[g], classifiers) for g in GROUPS if g in summary]
    return lines


def run(args: argparse.Namespace) -> int:
    candidates = _candidates(args.candidate)
    retrained = _load(args.retrained, "--retrained")
    labels = np.asarray(_load(args.labels, "--labels"))
    populations = {**candidates, "--retrained": retrained}
    if args.retrained2:
        populations["--retrained2"] = _load(args.retrained2, "--retrained2")
    _check_shapes(populations, labels)
    if args.retained_samples is None:
        args.retained_samples = args.samples
    for flag in ("repeats", "samples", "retained_samples", "jobs"):
        if getattr(args, flag) < 1:
            raise LinfiltError(f"--{flag.replace('_', '-')} must be a positive integer, "
                               f"got {getattr(args, flag)}")
    samples = {int(c): args.samples if c in args.forget else args.retained_samples
               for c in np.unique(labels)}

    rows = len(candidates) + bool(args.retrained2)
    bar = tqdm(total=rows * args.repeats * len(np.unique(labels)), desc="audit", unit="attack")
    kw = dict(repeats=args.repeats, seed=args.seed, train_samples=samples, test_samples=samples,
              n_jobs=args.jobs, progress=lambda: bar.update())
    attacks = {name: audit.attack_advantage(logits, retrained, labels, args.forget, **kw)
               for name, logits in candidates.items()}
    if args.retrained2:
        attacks["floor"] = audit.floor_advantage(retrained, populations["--retrained2"], labels,
                                                 args.forget, **kw)
    bar.close()
    summaries = {name: audit.summary_json(res.summary()) for name, res in attacks.items()}
    classifiers = next(iter(attacks.values())).classifiers
    baseline = next(iter(candidates))
    differences = {f"{name} − {baseline}":
                   audit.summary_json(audit.difference(attacks[name], attacks[baseline]))
                   for name in candidates if name != baseline}

    lines = [f"Attack advantage: mean over {args.repeats} repeats [central 95% of the repeats]; "
             f"images per model per side: {args.samples} (forgotten), {args.retained_samples} "
             f"(retained); forgotten classes {args.forget}."]
    lines += _table("**Advantage** (0: indistinguishable from retrained, 1: always told apart)",
                    summaries, classifiers)
    if differences:
        lines += _table(f"**Paired difference to {baseline}** (same splits and images)", differences,
                        classifiers)
    if args.per_class:
        for name, summary in summaries.items():
            per_class = {f"class {c}": {"forgotten" if int(c) in args.forget else "retained": row}
                         for c, row in summary["per_class"].items()}
            lines += _table(f"**{name}, per class**", per_class, classifiers)
    print("\n".join(lines))
    if args.json:
        write_json(args.json, {"advantage": summaries, "difference": differences,
                               "advantages_per_repeat": {n: r.advantages.tolist() for n, r in attacks.items()},
                               "classifiers": list(classifiers), "forget": list(args.forget),
                               "repeats": args.repeats, "samples": args.samples,
                               "retained_samples": args.retained_samples, "seed": args.seed})
    return 0
