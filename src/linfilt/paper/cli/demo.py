"""`linfilt demo`: train a small MLP on scikit-learn's bundled digits, forget one digit by each
method and by retraining, and print what each did (accuracy, where the digit's images go, labels
changed vs naive, time to unlearn vs time to retrain)."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from linfilt.audit import labels_changed, predicted_distribution, retained_accuracy_loss
from linfilt.filtration import METHODS, retained_classes, select_per_class
from linfilt.paper.data import load, to_float
from linfilt.paper.models import build
from linfilt.paper.population import fit
from linfilt.paper.settings import DEMO, PROTOCOL
from linfilt.pytorch import unlearn
from linfilt.validation import check_class_ids, check_int, check_optional_positive_int, check_positive_int

PROTO = PROTOCOL[DEMO["dataset"]]  # the digits protocol: MLP 64-32-10, 10 epochs, batch 32


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="forget one digit from a small MLP on scikit-learn's digits, by each method and by retraining",
        description=__doc__,
    )
    p.add_argument("--forget", type=int, default=DEMO["forget"], help=f"digit to forget (default: {DEMO['forget']})")
    p.add_argument("--epochs", type=int, default=PROTO["epochs"],
                   help=f"training epochs (default: {PROTO['epochs']})")
    p.add_argument("--per-class", type=int, default=None, metavar="S",
                   help="estimate A from the first S training images of each digit (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and of randomization (default: 0)")
    p.set_defaults(func=run)


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


def run(args: argparse.Namespace) -> int:
    c = check_class_ids(args.forget, "--forget", num_classes=10)[0]
    check_positive_int(args.epochs, "--epochs")
    check_optional_positive_int(args.per_class, "--per-class")
    check_int(args.seed, "--seed", minimum=0, maximum=2**64 - 1)  # torch.manual_seed takes 64 bits
    # One thread: this model is far too small to gain from more, and on a busy machine threads that
    # wait for each other make every step several times slower (for training and unlearning alike).
    torch.set_num_threads(1)
    ds = load(DEMO["dataset"])
    x, y, xt, yt = to_float(ds.x_train), ds.y_train, to_float(ds.x_test), ds.y_test
    if args.per_class is not None:  # enough images of every digit, known before the first fit
        select_per_class(y, 10, args.per_class)
    kept = retained_classes(10, [c])
    arch = PROTO["arch_kwargs"]
    settings = dict(epochs=args.epochs, batch_size=PROTO["batch_size"], seed=args.seed)
    print(f"linfilt demo: forget digit {c} from an MLP "
          f"{'-'.join(map(str, [arch['in_features'], *arch['hidden']]))}-10 trained on "
          f"scikit-learn's digits ({len(y)} training, {len(yt)} test images; {args.epochs} epochs, "
          f"batch {PROTO['batch_size']}, seed {args.seed})", flush=True)

    torch.manual_seed(args.seed)
    model = fit(build(PROTO["arch"], 10, **arch), x, y, progress=True, **settings)
    # Retraining without the digit, with the same settings; timed after the first fit so that
    # one-time start-up costs (imports, allocator) are not charged to it.
    keep = y != c
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    retrained = fit(build(PROTO["arch"], 9, **arch), x[keep], np.searchsorted(kept, y[keep]), progress=True, **settings)
    retrain_s = time.perf_counter() - start

    rows = {"original": (_logits(model, xt), None), "retrained": (_logits(retrained, xt), retrain_s)}
    for method in METHODS:
        times = []
        for _ in range(DEMO["repeats"]):  # unlearning is cheap: the median of a few runs steadies its time
            start = time.perf_counter()
            new = unlearn(model, [c], (x, y), method=method, per_class=args.per_class, rng=args.seed)
            times.append(time.perf_counter() - start)
        rows[method] = (_logits(new, xt), statistics.median(times))
    cond = new.linfilt_filtration.steps[0].condition_number

    gone = yt == c
    naive = rows["naive"][0][None]
    header = ("model", "outputs", "retained acc", f"digit {c} acc", f"digit {c} images go to",
              "changed vs naive (all / digit)", "time")
    table = [header]
    for name, (logits, seconds) in rows.items():
        full = logits.shape[1] == 10
        acc = retained_accuracy_loss(logits[None], yt, 10, [c]).accuracy[0]
        forgot_acc = float((logits[gone].argmax(1) == c).mean()) if full else 0.0
        # a full model's 10 outputs are read as all 10 classes whatever the forget set says
        dist = predicted_distribution(logits[None], yt, c, 10, [c])
        top = int(np.argmax(dist.shares[0]))
        goes = f"{dist.classes[top]} ({dist.shares[0][top]:.0%})"
        if name in METHODS and name != "naive":
            ch = labels_changed(logits[None], naive, yt, 10, [c])
            changed = f"{ch.all[0]:.1%} / {ch.unlearned[0]:.1%}"
        else:
            changed = "-"
        if seconds is None:
            when = "-"
        elif name == "retrained":
            when = f"{seconds:.2f} s (retraining)"
        else:
            when = f"{seconds * 1e3:.1f} ms ({retrain_s / seconds:,.0f}x faster than retraining)"
        table.append((name, str(logits.shape[1]), f"{acc:.1%}", f"{forgot_acc:.1%}", goes, changed, when))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, r in enumerate(table):
        cells = (v.ljust(w) if j in (0, 4, 6) else v.rjust(w) for j, (v, w) in enumerate(zip(r, widths)))
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    samples = "all training images" if args.per_class is None else f"the first {args.per_class} per digit"
    print(f"\nA from {samples}; condition number of A: {cond:.3g}. Unlearning time: median of {DEMO['repeats']} runs.\n"
          f"A forgotten digit has no output, so its accuracy is 0; 'images go to' is the class that its test\n"
          "images are now given most often (and the share of them given it).")
    return 0
