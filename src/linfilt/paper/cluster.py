"""The Ray backend of `train_populations`, and the audit's joblib work on Ray (`pip install
'linfilt[ray]'`). Ray is imported here only, when a Ray backend is asked for.

Each missing chunk is one Ray task with a resource request. The driver puts the data set into
Ray's object store once; a task trains its chunk's models on its node (the same function as the
local backend, `population.train_chunk`, so a model depends only on (seed, population, index) and
the chunk size, never on the node) and returns their test logits (and, with save_models, the
models) through the object store. The driver stores each returned chunk as soon as it arrives,
through the same checksummed store as the local backend: workers read and write no files, and a
run folder does not show which backend made it. Tasks keep no per-epoch checkpoints: a task whose
worker or node dies is retried whole (MAX_RETRIES); a killed driver resumes from the stored chunks,
which are never resubmitted.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from linfilt.errors import LinfiltError
from linfilt.validation import check_float

BACKENDS = ("local", "ray")
# Retries of a chunk whose worker or node died (Ray's max_retries); an exception raised by the
# training itself (a diverged chunk) is not retried.
MAX_RETRIES = 3
# Seconds to wait for a cluster's address to answer before giving up (Ray itself waits minutes).
CONNECT_TIMEOUT = 10
# Test hook: when set to a path, the first task that creates that file kills its own worker
# (a worker dying mid-run, as on a lost node); the retried task then trains the chunk.
CRASH_ONCE = "LINFILT_RAY_CRASH_ONCE"
_INSTALL = "pip install 'linfilt[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and with what each chunk task runs."""

    address: str | None  # None: a local Ray instance
    cpus: float
    gpus: float


def check_backend(backend: Any, address: Any = None, cpus_per_task: Any = None,
                  gpus_per_task: Any = None, device: Any = "cpu", cli: bool = False) -> RayOptions | None:
    """The Ray options for `backend` "ray" (None for "local"), checked before any work;
    LinfiltError for a bad value (naming the command-line flags when `cli`), or when Ray is not
    installed."""
    name = (lambda n: "--" + n.replace("_", "-")) if cli else (lambda n: n)
    if backend not in BACKENDS:
        raise LinfiltError(f"{name('backend')} must be one of {BACKENDS}, not {backend!r}")
    if backend == "local":
        given = [name(flag) for flag, value in (("address", address), ("cpus_per_task", cpus_per_task),
                                                ("gpus_per_task", gpus_per_task)) if value is not None]
        if given:
            raise LinfiltError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only "
                               f"to the Ray backend: add {name('backend')} ray")
        return None
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise LinfiltError(f"{name('address')} must be a Ray cluster address like 10.0.0.1:6379 or "
                           f"'auto', got {address!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LinfiltError(f"bad {name('device')} {device!r}: {exc}") from None
    if device.type not in ("cpu", "cuda"):
        raise LinfiltError(f"{name('device')} {str(device)!r}: populations train on cpu or cuda")
    if device.index not in (None, 0):
        raise LinfiltError(f"{name('device')} {str(device)!r} with the Ray backend: Ray gives each task "
                           "its GPU(s), which the task sees as cuda:0; use cuda")
    cpus = 1.0 if cpus_per_task is None else check_float(cpus_per_task, name("cpus_per_task"), low=0,
                                                          low_open=True)
    default_gpus = 1.0 if device.type == "cuda" else 0.0
    gpus = default_gpus if gpus_per_task is None else check_float(gpus_per_task, name("gpus_per_task"),
                                                                   low=0)
    if gpus > 1 and not gpus.is_integer():
        raise LinfiltError(f"{name('gpus_per_task')} {gpus:g}: Ray shares a GPU only in fractions below "
                           "1; ask for a whole number of GPUs or a fraction like 0.5")
    if device.type == "cuda" and gpus == 0:
        raise LinfiltError(f"device cuda with {name('gpus_per_task')} 0: the tasks would see no GPU; ask "
                           "for one (1) or a share of one (e.g. 0.25: four chunks per GPU)")
    if device.type == "cpu" and gpus > 0:
        raise LinfiltError(f"{name('gpus_per_task')} {gpus:g} with device cpu would hold GPUs that train "
                           f"nothing; train on {name('device')} cuda, or leave {name('gpus_per_task')} out")
    _ray()
    return RayOptions(None if address is None else address.strip(), cpus, gpus)


def _ray():
    try:
        import ray
    except ImportError:
        raise LinfiltError(f"the Ray backend needs Ray, which is not installed: {_INSTALL}") from None
    return ray


@contextlib.contextmanager
def session(options: RayOptions | None) -> Iterator[None]:
    """Ray connected for the block: a Ray already initialised in this process as it is, else
    `options.address` (left running after) or a new local instance (no dashboard; shut down
    after). LinfiltError when the cluster cannot be reached or no node fits one task. Nothing
    for the local backend (None)."""
    if options is None:
        yield
        return
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        if options.address is not None:
            _check_reachable(options.address)
        try:
            if options.address is None:
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=options.address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
            where = "start a local Ray instance" if options.address is None else \
                f"connect to the Ray cluster at {options.address}"
            raise LinfiltError(f"could not {where}: {exc}") from None
    try:
        _check_fits(ray, options)
        yield
    finally:
        if started:
            ray.shutdown()  # a local instance stops; a cluster only loses this driver


def _check_reachable(address: str) -> None:
    """Fail fast on a host:port nobody answers at."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise LinfiltError(f"no Ray cluster answers at {address} ({exc}); start one with `ray start "
                           "--head` and pass the address it prints") from None


def _check_fits(ray, options: RayOptions) -> None:
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if not any(r.get("CPU", 0) >= options.cpus and r.get("GPU", 0) >= options.gpus for r in nodes):
        have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in nodes)
        raise LinfiltError(f"no node of the Ray cluster has {options.cpus:g} CPU(s) and "
                           f"{options.gpus:g} GPU(s) for one task (its nodes: {have}); lower "
                           "--cpus-per-task / --gpus-per-task or add such a node")


@contextlib.contextmanager
def connected(options: RayOptions | None, n_jobs: int = 1) -> Iterator[None]:
    """For an experiment: `session`, with the audit's joblib work on Ray when it runs n_jobs != 1
    tasks at once; nothing for the local backend (None)."""
    on_ray = options is not None and n_jobs != 1
    with session(options), audit_on_ray() if on_ray else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def audit_on_ray() -> Iterator[None]:
    """joblib work (the audit's (repeat, class) tasks) runs on the connected Ray cluster in the
    block: n_jobs tasks at once (-1: one per CPU of the cluster)."""
    import joblib
    from ray.util.joblib import register_ray

    register_ray()
    with joblib.parallel_config(backend="ray"):
        yield


def train_on_ray(runner, populations: Sequence[str], chunk_size: int, dataset: Any,
                 options: RayOptions, progress: bool) -> Counter:
    """Train every missing chunk of `runner`'s populations as one Ray task each (Ray connected,
    see `session`), storing each returned chunk as it arrives; how many models each node trained
    (node id -> count)."""
    ray = _ray()
    cfg = runner.cfg
    pending = runner.pending(populations)
    chunks = [range(a, min(a + chunk_size, cfg.models)) for a in range(0, cfg.models, chunk_size)]
    plans = [(chunk, plan) for chunk in chunks if (plan := runner.plan(chunk, pending))]
    if not plans:
        return Counter()
    task = ray.remote(_chunk_task).options(num_cpus=options.cpus, num_gpus=options.gpus,
                                           max_retries=MAX_RETRIES)
    data = ray.put(dataset)
    waiting = {task.remote(runner.chunk_on_worker, cfg, data, plan, runner.saved_seen(plan, "cpu"),
                           runner.save_models): chunk for chunk, plan in plans}
    nodes: Counter = Counter()
    total = sum(len(ids) for _, plan in plans for ids in plan.values())
    with tqdm(total=total, unit="model", desc="models (ray)", disable=not progress,
              smoothing=0.1) as bar:
        while waiting:
            [ref], _ = ray.wait(list(waiting), num_returns=1)
            chunk = waiting.pop(ref)
            node, parts = _result(ray, ref, chunk)
            for part in parts:
                runner.keep(part)
            trained = sum(len(p.indices) for p in parts if p.population in populations)
            nodes[node] += trained
            bar.set_postfix_str(f"{len(nodes)} node{'s' * (len(nodes) > 1)}", refresh=False)
            bar.update(trained)
    return nodes


def _result(ray, ref, chunk: range):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, LinfiltError):  # e.g. a diverged chunk: the message says what to do
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:
        raise LinfiltError(f"models {chunk.start}..{chunk.stop - 1} failed on the Ray cluster "
                           f"({type(exc).__name__}, after up to {MAX_RETRIES} retries): {exc}; the "
                           "chunks stored so far are kept, rerun the same command to train the rest"
                           ) from None


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus: float = 1, env: dict[str, str] | None = None,
                  timeout: float = 120) -> Iterator[str]:
    """A Ray cluster of `nodes` nodes on this machine (a head and workers, `cpus` CPUs each), each
    a separate `ray start --block` process in its own process group, for trying the Ray backend
    (benchmarks, tests); its address, once every node is up. Every process is stopped after,
    also on an error. `env`: extra environment of the nodes (and so of their workers)."""
    ray = _ray()
    temp = tempfile.mkdtemp(prefix="lfray", dir="/tmp")  # short: Ray's socket paths have a length limit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats",
               f"--num-cpus={cpus:g}"]
    node_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    procs: list[subprocess.Popen] = []
    deadline = time.monotonic() + timeout
    started = False

    def start(*args: str) -> None:
        with open(Path(temp) / f"node{len(procs)}.log", "w") as log:
            procs.append(subprocess.Popen(command + list(args), env=node_env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    def wait(ready, what: str) -> None:
        while not ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise LinfiltError(f"the local Ray cluster did not start ({what}); its logs are in {temp}")
            time.sleep(0.2)

    try:
        start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}")
        wait(lambda: _answers("127.0.0.1", port), "head")
        for _ in range(nodes - 1):
            start(f"--address={address}")
        ray.init(address=address, logging_level=logging.WARNING)
        try:
            wait(lambda: sum(n["Alive"] for n in ray.nodes()) == nodes, "nodes")
        finally:
            ray.shutdown()
        started = True
        yield address
    finally:
        for proc in procs[::-1]:
            proc.terminate()  # `ray start --block` stops the processes it started
        for proc in procs[::-1]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of that node's group
        if started:  # else its logs say why
            shutil.rmtree(temp, ignore_errors=True)


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _chunk_task(work, *args):
    """One chunk on a Ray worker: (its node's id, what `work(*args)` returns)."""
    import ray

    marker = os.environ.get(CRASH_ONCE)
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    return ray.get_runtime_context().get_node_id(), work(*args)
