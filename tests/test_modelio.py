import json
import pickle

import numpy as np
import pytest
import safetensors.torch
import torch

import linfilt
from linfilt.errors import LinfiltError, ModelFormatError
from linfilt.filtration import filtration_matrix, mean_logits
from linfilt.modelio import SPEC_KEY, ModelSpec, load_model, load_state_dict_file, save_model
from linfilt.models import build

NAMES = [f"digit{i}" for i in range(10)]
MLP = {"in_features": 64, "hidden": [16]}


def _mlp(seed: int = 0, k: int = 10):
    torch.manual_seed(seed)
    return build("mlp", k, **MLP)


def _spec(k: int = 10) -> ModelSpec:
    return ModelSpec.new("mlp", MLP, NAMES[:k])


def _raw(path, tensors, spec_json) -> None:
    """Write a safetensors file with an arbitrary spec string (bypassing save_model's checks)."""
    meta = None if spec_json is None else {SPEC_KEY: spec_json}
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


class Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("arch, kwargs, shape", [
    ("mlp", MLP, (1, 8, 8)),
    ("cifar_cnn", {"p": 8}, (3, 32, 32)),
    ("att_resnet", {"widths": [4, 8]}, (1, 112, 92)),
])
def test_round_trip(tmp_path, arch, kwargs, shape):
    torch.manual_seed(1)
    model = build(arch, 5, **kwargs)
    x = torch.rand(2, *shape)
    model.train()
    model(x)  # moves BatchNorm running statistics away from their initial values
    model.eval()
    spec = ModelSpec.new(arch, kwargs, ["a", "b", "c", "d", "e"])
    save_model(tmp_path / "m.safetensors", model, spec)
    torch.manual_seed(7)
    loaded, spec2 = load_model(tmp_path / "m.safetensors")
    after_load = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_load, torch.rand(3))  # loading leaves the global RNG alone
    assert spec2 == spec
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded(x), model(x))
    assert loaded.linfilt_filtration.classes == (0, 1, 2, 3, 4)


def test_float64_is_kept(tmp_path):
    model = _mlp().double()
    save_model(tmp_path / "m.safetensors", model, _spec())
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.head.weight.dtype == torch.float64
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_sequential_unlearning_keeps_original_ids(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(300, 1, 8, 8, generator=gen), torch.arange(300) % 10
    model = _mlp()
    save_model(tmp_path / "m.safetensors", model, _spec())
    m0, s0 = load_model(tmp_path / "m.safetensors")
    new = linfilt.unlearn(m0, [3], (x, y))
    s1 = s0.after_unlearn(new)
    save_model(tmp_path / "u1.safetensors", new, s1)
    m1, s1_loaded = load_model(tmp_path / "u1.safetensors")
    assert s1_loaded == s1
    assert s1.class_ids == (0, 1, 2, 4, 5, 6, 7, 8, 9)
    assert s1.class_names == tuple(NAMES[i] for i in s1.class_ids)
    entry = s1.history[0]
    assert (entry.method, entry.forgot, entry.forgot_names, entry.samples) == ("normalization", (3,), ("digit3",), 300)
    with torch.no_grad():
        orig = model(x).double().numpy()
    A = mean_logits(orig, y.numpy(), 10)
    assert entry.condition_number == pytest.approx(np.linalg.cond(A))
    with torch.no_grad():
        np.testing.assert_allclose(m1(x).double().numpy(), orig @ filtration_matrix(A, [3]).T, atol=1e-4)

    m2 = linfilt.unlearn(m1, [5], (x, y))  # labels and forget in original ids; class-3 samples skipped
    s2 = s1_loaded.after_unlearn(m2)
    save_model(tmp_path / "u2.safetensors", m2, s2)
    m2_loaded, s2_loaded = load_model(tmp_path / "u2.safetensors")
    assert m2_loaded.head.out_features == 8
    assert s2_loaded.class_ids == (0, 1, 2, 4, 6, 7, 8, 9)
    assert [e.forgot for e in s2_loaded.history] == [(3,), (5,)]
    assert s2_loaded.history[1].samples == 270


def test_save_refuses_a_model_that_does_not_match_its_spec(tmp_path):
    target = tmp_path / "m.safetensors"
    with pytest.raises(ModelFormatError, match=r"'head.weight' has shape \(10, 16\).*\(9, 16\)"):
        save_model(target, _mlp(), _spec(9))
    x, y = torch.rand(50, 1, 8, 8), torch.arange(50) % 10
    unlearned = linfilt.unlearn(_mlp(), [3], (x, y))
    wrong = ModelSpec("mlp", MLP, (0, 1, 2, 3, 4, 5, 6, 7, 8), NAMES[:9])  # right count, wrong classes
    with pytest.raises(LinfiltError, match="after_unlearn"):
        save_model(target, unlearned, wrong)
    with pytest.raises(LinfiltError, match="no new linear filtration"):
        _spec().after_unlearn(_mlp())
    assert list(tmp_path.iterdir()) == []


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"head.weight": Payload(marker)}, protocol=2))
    zipped = tmp_path / "zip.pt"
    torch.save({"head.weight": Payload(marker)}, zipped)
    # the payloads are live: ordinary unpickling creates the marker
    pickle.loads(raw.read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(zipped, weights_only=False)
    assert marker.exists()
    marker.unlink()

    for path in (raw, zipped):
        with pytest.raises(ModelFormatError, match="PyTorch pickle"):
            load_model(path)
        with pytest.raises(ModelFormatError, match="exec"):
            load_state_dict_file(path)
        assert not marker.exists()


def test_load_state_dict_file(tmp_path):
    model = _mlp()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    state = load_state_dict_file(tmp_path / "sd.pt")
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ModelFormatError, match="holds a list, not a state dict"):
        load_state_dict_file(tmp_path / "list.pt")
    data = (tmp_path / "sd.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="not a readable PyTorch file"):
        load_state_dict_file(tmp_path / "cut.pt")
    with pytest.raises(ModelFormatError, match="no such"):
        load_state_dict_file(tmp_path / "absent.pt")


def test_bad_files(tmp_path):
    model = _mlp()
    good = tmp_path / "good.safetensors"
    save_model(good, model, _spec())
    data = good.read_bytes()
    spec = _spec().to_json()

    def bad(name, content):
        path = tmp_path / name
        path.write_bytes(content)
        return path

    cases = [
        (tmp_path / "absent.safetensors", "no such model file"),
        (bad("empty", b""), "not a complete safetensors file"),
        (bad("text", b"hello, I am not a model at all, just some text"), "not a complete safetensors file"),
        (bad("cut_data", data[:-7]), "not a complete safetensors file"),
        (bad("cut_header", data[:40]), "not a complete safetensors file"),
    ]
    for path, message in cases:
        with pytest.raises(ModelFormatError, match=message):
            load_model(path)

    state = _state(model)
    fewer = {k: v for k, v in state.items() if k != "head.bias"}
    more = {**state, "extra": torch.zeros(2)}
    smaller = {**state, "head.weight": state["head.weight"][:9]}
    integer = {**state, "head.weight": state["head.weight"].long()}
    specs = [
        (state, None, "without a linfilt spec"),
        (state, "{not json", "not valid JSON"),
        (state, json.dumps({**spec, "format": "other"}), "format is 'other'"),
        (state, json.dumps({**spec, "version": 99}), "version 99 is not supported"),
        (state, json.dumps({k: v for k, v in spec.items() if k != "classes"}), r"missing \['classes'\]"),
        (state, json.dumps({**spec, "colour": "red"}), r"unknown \['colour'\]"),
        (state, json.dumps({**spec, "arch": "transformer"}), "unknown architecture 'transformer'"),
        (state, json.dumps({**spec, "classes": [{"id": "a", "name": "x"}] * 10}), "class id must be an integer"),
        (state, json.dumps({**spec, "arch_kwargs": {"depth": 3}}), "bad settings"),
        (fewer, json.dumps(spec), r"missing \['head.bias'\]"),
        (more, json.dumps(spec), r"unknown \['extra'\]"),
        (smaller, json.dumps(spec), r"'head.weight' has shape \(9, 16\).*\(10, 16\)"),
        (integer, json.dumps(spec), r"'head.weight' is torch.int64"),
    ]
    for i, (tensors, spec_json, message) in enumerate(specs):
        path = tmp_path / f"case{i}.safetensors"
        _raw(path, tensors, spec_json)
        with pytest.raises(ModelFormatError, match=message):
            load_model(path)
