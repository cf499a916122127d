"""The Ray backend: populations trained as Ray tasks equal the local backend's bit for bit, on a
local Ray instance and on a two-node cluster (started here as separate processes) where a worker
dies mid-run; resuming submits only the missing chunks; the audit on Ray's joblib backend gives
the numbers of n_jobs=1. Every Ray process started here is stopped, also when a test fails."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install 'linfilt[ray]'")

from linfilt import audit  # noqa: E402
from linfilt.errors import LinfiltError  # noqa: E402
from linfilt.paper import cluster  # noqa: E402
from linfilt.paper.data import Dataset, load  # noqa: E402
from linfilt.paper.experiments.runner import run_experiment  # noqa: E402
from linfilt.paper.experiments.spec import Experiment  # noqa: E402
from linfilt.paper.population import PopulationConfig, results_dir, run_dir, train_populations  # noqa: E402

ALL = ("seen", "notseen", "transfer")


@pytest.fixture(scope="module", autouse=True)
def no_token():
    """The short-lived instances and clusters of this module run without Ray's token
    authentication: with it, a new local instance writes a token into the user's home folder."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE")
    else:
        os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def digits():
    d = load("digits")
    return Dataset("digits", d.x_train[:300], d.y_train[:300], d.x_test[:60], d.y_test[:60], d.classes)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_runs(monkeypatch) -> list:
    """What each Ray-backend call trained: node id -> models (train_on_ray's return values)."""
    runs = []
    train_on_ray = cluster.train_on_ray
    monkeypatch.setattr(cluster, "train_on_ray", lambda *a, **k: runs.append(train_on_ray(*a, **k)) or runs[-1])
    return runs


@pytest.fixture()
def two_nodes(tmp_path):
    """A head and a worker node, 1 CPU each, as separate processes; their address, and the file
    whose creation kills a worker once (cluster.CRASH_ONCE)."""
    if ray.is_initialized():
        ray.shutdown()  # this test connects by address
    crash = tmp_path / "crashed"
    with cluster.local_cluster(2, 1, env={cluster.CRASH_ONCE: str(crash), "OMP_NUM_THREADS": "1"}) as address:
        try:
            yield address, crash
        finally:
            if ray.is_initialized():
                ray.shutdown()


def test_two_nodes_a_dying_worker_and_the_local_backends_bits(digits, two_nodes, tmp_path, monkeypatch):
    address, crash = two_nodes
    cfg = PopulationConfig.protocol("digits", [3], models=4, epochs=2, strategy="grouped")
    local = train_populations(cfg, ALL, data=digits, out=tmp_path / "local", chunk_size=1, progress=False)
    runs = _record_runs(monkeypatch)
    got = train_populations(cfg, ALL, data=digits, out=tmp_path / "ray", chunk_size=1, progress=False,
                            backend="ray", address=address)
    assert crash.is_file(), "no worker died"
    [nodes] = runs
    assert len(nodes) == 2 and sum(nodes.values()) == 3 * 4, nodes  # both nodes trained models
    for population in ALL:
        np.testing.assert_array_equal(got[population], local[population])
    assert _files(run_dir(cfg, tmp_path / "ray")) == _files(run_dir(cfg, tmp_path / "local"))
    assert not ray.is_initialized()  # the driver disconnected; the cluster is the fixture's to stop


def test_without_an_address_a_local_instance_runs_the_call(digits, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    cfg = PopulationConfig.protocol("digits", [3], models=2, epochs=1, strategy="loop")
    got = train_populations(cfg, ("seen",), data=digits, out=tmp_path / "ray", progress=False, backend="ray")
    assert not ray.is_initialized()  # started for the call, shut down after
    local = train_populations(cfg, ("seen",), data=digits, out=tmp_path / "local", progress=False)
    np.testing.assert_array_equal(got["seen"], local["seen"])


@pytest.fixture(scope="module")
def local_ray(no_token):
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_ray_equals_local_with_saved_models(digits, local_ray, tmp_path):
    cfg = PopulationConfig.protocol("digits", [2, 5], models=3, epochs=2, strategy="grouped")
    kw = dict(data=digits, chunk_size=2, save_models=True, progress=False)
    local = train_populations(cfg, ALL, out=tmp_path / "local", **kw)
    got = train_populations(cfg, ALL, out=tmp_path / "ray", backend="ray", **kw)
    assert ray.is_initialized()  # an instance already running is used and left running
    for population in ALL:
        np.testing.assert_array_equal(got[population], local[population])
    # the same files, byte for byte: chunks, assembled logits, models, checksums
    root = results_dir(cfg, tmp_path / "local", chunk_size=2)
    assert len(list((root / "models" / "transfer").glob("*.safetensors"))) == 3
    assert _files(run_dir(cfg, tmp_path / "ray")) == _files(run_dir(cfg, tmp_path / "local"))


def test_resume_submits_only_the_missing_chunks(digits, local_ray, tmp_path, monkeypatch):
    cfg = PopulationConfig.protocol("digits", [0], models=3, epochs=1, strategy="loop")
    out = tmp_path / "run"
    # seen stored (with its models) by the local backend, as a killed run would have left it ...
    train_populations(cfg, ("seen",), data=digits, out=out, save_models=True, progress=False)
    root = run_dir(cfg, out)
    for name in ("logits/seen.npy", "chunks/seen/00001-00002.npy"):  # ... before chunk 1 and assembly
        (root / name).unlink()
        (root / f"{name}.sha256").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (root / "chunks" / "seen").glob("*.npy")}
    runs = _record_runs(monkeypatch)
    got = train_populations(cfg, ("seen", "transfer"), data=digits, out=out, save_models=True,
                            progress=False, backend="ray")
    assert sum(runs[0].values()) == 1 + 3  # seen model 1 and the transfer models; no other seen model
    assert {p.name: p.stat().st_mtime_ns for p in (root / "chunks" / "seen").glob("*.npy")
            if p.name in kept} == kept
    fresh = train_populations(cfg, ("seen", "transfer"), data=digits, out=tmp_path / "fresh", progress=False)
    for population in ("seen", "transfer"):
        np.testing.assert_array_equal(got[population], fresh[population])
    # a rerun finds everything stored: nothing is submitted
    train_populations(cfg, ("seen", "transfer"), data=digits, out=out, progress=False, backend="ray")
    assert runs[1] == {}


def test_an_experiment_on_ray_gives_the_local_numbers(local_ray, tmp_path):
    exp = Experiment("ray_digits", "digits", (3,), models=4, epochs=1, methods=("naive", "normalization"),
                     transfer=True, forgotten_samples=5, retained_samples=5, repeats=2)
    local = run_experiment(exp, tmp_path / "local", progress=False).to_json()
    on_ray = run_experiment(exp, tmp_path / "ray", progress=False, backend="ray").to_json()
    del local["seconds"], on_ray["seconds"]
    assert on_ray == local
    assert _files(tmp_path / "ray" / "ray_digits").keys() == _files(tmp_path / "local" / "ray_digits").keys()


def test_audit_on_ray_gives_the_numbers_of_one_job(local_ray, monkeypatch):
    from ray.util.joblib.ray_backend import RayBackend

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    unlearned = rng.normal(size=(10, 36, 3)) + 0.5 * np.eye(3)[labels]
    retrained = rng.normal(size=(10, 36, 3))
    kw = dict(repeats=2, seed=1, train_samples=4, test_samples=4)
    alone = audit.attack_advantage(unlearned, retrained, labels, [0], n_jobs=1, **kw)
    configured = []
    configure = RayBackend.configure
    monkeypatch.setattr(RayBackend, "configure", lambda self, n_jobs=1, *a, **k:
                        configured.append(n_jobs) or configure(self, n_jobs, *a, **k))
    with cluster.audit_on_ray():
        on_ray = audit.attack_advantage(unlearned, retrained, labels, [0], n_jobs=2, **kw)
    assert configured == [2]  # joblib handed the tasks to Ray
    np.testing.assert_array_equal(on_ray.advantages, alone.advantages)
    assert on_ray.to_json() == alone.to_json()


@pytest.mark.parametrize("kwargs, words", [
    (dict(backend="spark"), "backend must be one of"),
    (dict(address="127.0.0.1:1"), "applies only to the Ray backend"),
    (dict(backend="ray", cpus_per_task=0), "cpus_per_task must be >"),
    (dict(backend="ray", gpus_per_task=-1), "gpus_per_task must be >="),
    (dict(backend="ray", gpus_per_task=1.5, device="cuda"), "fractions below 1"),
    (dict(backend="ray", gpus_per_task=1), "would hold GPUs"),
    (dict(backend="ray", gpus_per_task=0, device="cuda"), "see no GPU"),
    (dict(backend="ray", device="cuda:1"), "sees as cuda:0; use cuda"),
    (dict(backend="ray", address=""), "address must be"),
])
def test_bad_backend_options_are_refused_before_any_work(digits, tmp_path, kwargs, words):
    device = kwargs.pop("device", "cpu")
    cfg = PopulationConfig.protocol("digits", [0], models=1, epochs=1, device=device)
    with pytest.raises(LinfiltError, match=words):
        train_populations(cfg, data=digits, out=tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_an_address_nobody_answers_at_is_named_quickly(digits, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    cfg = PopulationConfig.protocol("digits", [0], models=1, epochs=1)
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(LinfiltError, match=f"no Ray cluster answers at {address}"):
        train_populations(cfg, data=digits, out=tmp_path, progress=False, backend="ray", address=address)
    assert time.monotonic() - started < cluster.CONNECT_TIMEOUT + 5
    assert not any(tmp_path.iterdir())


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(LinfiltError, match=r"pip install 'linfilt\[ray\]'"):
        cluster.check_backend("ray")


def test_nothing_loads_ray_until_the_ray_backend_is_asked_for():
    code = ("import sys, linfilt.paper.population, linfilt.paper.cli.train, linfilt.paper.cli.reproduce, "
            "linfilt.paper.experiments.reproduce; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_experiment_in_chunks_on_ray_gives_the_local_numbers_and_trains_the_floor_beside(
        local_ray, digits, tmp_path, monkeypatch):
    import json
    import threading

    from linfilt.paper.experiments import fidelity, runner

    if not ray.is_initialized():  # an earlier test shut the module's instance down (local_ray stops it)
        ray.init(num_cpus=2, include_dashboard=False)
    monkeypatch.setattr(runner, "load", lambda name: digits)
    monkeypatch.setattr(fidelity, "load", lambda name: digits)
    monkeypatch.setitem(fidelity.FIDELITY, "rows", ("naive",))
    exp = Experiment("ray_chunks", "digits", (3,), models=4, epochs=1, methods=("naive",),
                     forgotten_samples=5, retained_samples=5, repeats=1)
    local = run_experiment(exp, tmp_path / "local", progress=False, chunk_size=2).to_json()
    # the call for the first populations waits until the floor's has started: sequential calls fail
    floor_started = threading.Event()
    runs = []
    train_on_ray = cluster.train_on_ray

    def concurrent(runner_, *args, **kwargs):
        if runner_.cfg.seed == exp.seed + 1:
            floor_started.set()
        else:
            assert floor_started.wait(30), "the floor's population was not submitted beside the others"
        runs.append(train_on_ray(runner_, *args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(cluster, "train_on_ray", concurrent)
    on_ray = run_experiment(exp, tmp_path / "ray", progress=False, backend="ray", chunk_size=2).to_json()
    assert sorted(sum(nodes.values()) for nodes in runs) == [4, 8]  # floor; seen + notseen
    del local["seconds"], on_ray["seconds"]
    # (compared as text: with one repeat the intervals are NaN)
    assert json.dumps(on_ray, sort_keys=True) == json.dumps(local, sort_keys=True)
    for c in (exp.population(), exp.population(seed=exp.seed + 1)):
        assert _files(results_dir(c, tmp_path / "ray", exp.name, 2)) == \
            _files(results_dir(c, tmp_path / "local", exp.name, 2))
    # the fidelity study trains its populations (here seed 1's seen; notseen is the floor's) on Ray too
    runs.clear()
    fidelity.run(exp, tmp_path / "ray", seeds=(1,), chunk_size=2, progress=False, backend="ray")
    assert [sum(nodes.values()) for nodes in runs] == [4]
    cfg = exp.population(seed=1)
    train_populations(cfg, ("seen",), data=digits, out=tmp_path / "local", experiment=exp.name,
                      chunk_size=2, progress=False)
    assert _files(results_dir(cfg, tmp_path / "ray", exp.name, 2)) == \
        _files(results_dir(cfg, tmp_path / "local", exp.name, 2))
