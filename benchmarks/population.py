"""Training throughput of a population: batched strategies against a per-model loop, same run.

    python benchmarks/population.py                       # CPU defaults (a few minutes)
    python benchmarks/population.py --device cuda --precision bf16 --skip '' \
        --archs mlp,cnn64,cnn256,cnn1024,resnet

Synthetic data of the real shapes (MNIST 1x28x28, CIFAR-10 3x32x32, AT&T 1x112x92), the paper's
batch sizes (32; 8 for the ResNet) and Adam: each timed unit is whole training steps (gather,
forward, backward, update). Throughput is
images per second per model and in total; "x loop" divides the total by the loop's (one model at
a time: its total is its per-model rate). Medians over --repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from linfilt.paper.models import build
from linfilt.paper.population import train_models
from linfilt.paper.settings import FASTEST, PROTOCOL


def _arch(dataset: str, shape: tuple[int, ...], **overrides) -> tuple:
    proto = PROTOCOL[dataset]
    return proto["arch"], {**proto["arch_kwargs"], **overrides}, shape, proto["batch_size"]


# name -> (architecture, its settings, input shape, the paper's batch size)
ARCHS = {
    "mlp": _arch("mnist", (1, 28, 28)),
    **{f"cnn{p}": _arch("cifar10", (3, 32, 32), p=p) for p in (64, 256, 1024)},
    "resnet": _arch("att_faces", (1, 112, 92)),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(arch: str, m: int, strategy: str, args) -> float:
    """Median total images/s of `m` models trained with `strategy`."""
    name, kwargs, shape, batch = ARCHS[arch]
    batch = args.batch or batch
    gen = torch.Generator().manual_seed(0)
    rates = []
    steps = args.steps
    for _ in range(args.repeats + 1):  # the first run warms up (allocations, kernel choice)
        n = steps * batch
        x = torch.rand(n, *shape, generator=gen).to(args.device)
        y = torch.randint(0, 10, (n,), generator=gen).to(args.device)
        models = [build(name, 10, **kwargs).to(args.device) for _ in range(m)]
        _sync(args.device)
        start = time.perf_counter()
        train_models(models, x, y, list(range(m)), 1, batch, strategy=strategy,
                     precision=args.precision)
        _sync(args.device)
        elapsed = time.perf_counter() - start
        rates.append(m * n / elapsed)
        if elapsed < args.min_seconds:  # too short to time well: more steps next time
            steps = min(args.max_steps, int(steps * args.min_seconds / elapsed) + 1)
    return statistics.median(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--archs", default="mlp,cnn64,cnn256,cnn1024", help=f"among {','.join(ARCHS)}")
    p.add_argument("--models", default="1,10,100", help="population sizes M")
    p.add_argument("--strategies", default="grouped,vmap", help="batched strategies against the loop")
    p.add_argument("--batch", type=int, help="default: the paper's (32; 8 for the ResNet)")
    p.add_argument("--steps", type=int, default=10, help="first guess of timed steps per run")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--min-seconds", type=float, default=1.0, help="grow the steps to at least this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip", default="cnn64:vmap:100,cnn256:vmap:100,cnn1024:vmap:100",
                   help="arch:strategy:M triples to skip (default: the CNNs' slowest CPU runs; '' for none)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} torch threads")
    print(f"# population training throughput: {where}, {args.precision}, "
          f"median of {args.repeats}")
    skip = set(args.skip.split(",")) if args.skip else set()
    header = "| model | M | strategy | img/s per model | img/s total | x loop |"
    print(header)
    print("|" + "---|" * 6)
    for arch in args.archs.split(","):
        loop = throughput(arch, 1, "loop", args)
        print(f"| {arch} | any | loop | {loop:,.0f} | {loop:,.0f} | 1.00 |", flush=True)
        for m in (int(v) for v in args.models.split(",")):
            for strategy in args.strategies.split(","):
                if f"{arch}:{strategy}:{m}" in skip:
                    continue
                if strategy == "vmap" and args.precision == "bf16":  # refused: vmap ignores autocast
                    continue
                total = throughput(arch, m, strategy, args)
                print(f"| {arch} | {m} | {strategy} | {total / m:,.0f} | {total:,.0f} | "
                      f"{total / loop:.2f} |", flush=True)
    auto = FASTEST[device.type]
    print(f"\nauto strategy on {device.type}: " + ", ".join(f"{k}={v}" for k, v in auto.items()))


if __name__ == "__main__":
    main()
