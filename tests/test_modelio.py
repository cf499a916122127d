import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest
import safetensors.torch
import torch

import linfilt
from linfilt.errors import LinfiltError, ModelFormatError
from linfilt.filtration import filtration_matrix, mean_logits
from linfilt.modelio import SPEC_KEY, HistoryEntry, ModelSpec, load_model, load_state_dict_file, save_model
from linfilt.paper.models import build
from linfilt.validation import MAX_CLASS_ID

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
    # the head's class-id buffer stays out of the file (the spec holds the ids) and comes back on load
    assert "head.linfilt_classes" in m2.state_dict()
    assert "head.linfilt_classes" not in safetensors.torch.load_file(tmp_path / "u2.safetensors")
    assert torch.equal(m2_loaded.head.linfilt_classes, torch.tensor(s2_loaded.class_ids))
    assert linfilt.classes_of(torch.nn.Sequential(m2_loaded)) == s2_loaded.class_ids
    # a keep_outputs model (forgotten outputs masked) has no model file: said before anything is written
    with pytest.raises(LinfiltError, match=r"keeps the outputs of forgotten classes \[5\]"):
        s1_loaded.after_unlearn(linfilt.unlearn(m1, [5], (x, y), keep_outputs=True))


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


def _header_length(path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_header_length_with_low_byte_0x80_loads_back(tmp_path):
    """The first byte of a safetensors file is the low byte of its header length: 0x80 there is a
    legitimate length (128 mod 256), not a pickle's protocol marker."""
    model, path = _mlp(k=3), tmp_path / "m.safetensors"
    save_model(path, model, ModelSpec.new("mlp", MLP, ["a", "b", "c"]))
    start = 0x480 - _header_length(path) - 8
    for pad in range(start, start + 16):  # the header grows 1 byte per character, padded to 8
        spec = ModelSpec.new("mlp", MLP, ["a", "b", "c" + "x" * pad])
        save_model(path, model, spec)
        if _header_length(path) == 0x480:  # the 1,152 bytes: starts b"\x80\x04", like pickle 4
            break
    data = path.read_bytes()
    assert data[:3] == b"\x80\x04\x00"
    loaded, spec2 = load_model(path)
    assert spec2 == spec
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    path.write_bytes(data[:600])  # truncated in the header, it is still told apart from a pickle
    with pytest.raises(ModelFormatError, match="announces a header of 1152 bytes but only 592 follow"):
        load_model(path)


def test_formats_told_apart_by_structure(tmp_path):
    good = tmp_path / "good.safetensors"
    save_model(good, _mlp(), _spec())
    data = good.read_bytes()
    n = _header_length(good)
    cases = {
        # a pickle protocol byte followed by no protocol number: not a pickle, not safetensors
        "not_pickle": (b"\x80\x09" + b"\x00" * 30, "not a complete safetensors file"),
        "pickle5": (pickle.dumps({"a": 1}, protocol=5), "PyTorch pickle"),
        # header length beyond the file (a truncated header)
        "cut": (data[: 8 + n // 2], rf"header of {n} bytes but only {n // 2} follow"),
        # the header is not a JSON object
        "list_header": ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        "deep_header": ((200_000).to_bytes(8, "little") + b"[" * 100_000 + b"]" * 100_000, "not a JSON object"),
        "bad_utf8": ((4).to_bytes(8, "little") + b'{"\xff"', "not a JSON object"),
        "short": (b"\x05\x00\x00", "it has 3 bytes, fewer than the 8 of a header length"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ModelFormatError, match=message):
            load_model(path)


def test_absurd_header_length_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:  # a sparse 200 MB file announcing a 150 MB header
        fh.write((150_000_000).to_bytes(8, "little") + b"{")
        fh.truncate(200_000_000)
    with pytest.raises(ModelFormatError, match="header of 150000000 bytes is beyond"):
        load_model(path)


# A 9-class model after forgetting class 3, as linfilt writes it: the base of the tampered specs.
_KEPT = tuple(c for c in range(10) if c != 3)
_FORGOT3 = HistoryEntry(method="normalization", forgot=(3,), forgot_names=("digit3",), per_class=10,
                        samples=100, condition_number=12.5, date="2024-05-01T12:00:00+00:00", seed=None)


DELETE = object()


def _tampered(spec_json, path, value):
    """A deep copy of spec_json with the item at `path` (keys and indices) set to value (or
    deleted when value is DELETE)."""
    obj = copy.deepcopy(spec_json)
    *parents, last = path
    target = obj
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return obj


@pytest.mark.parametrize("path, value, message", [
    # classes
    (("classes",), [{"id": c, "name": f"c{c}"} for c in reversed(_KEPT)], "ascending in output order"),
    (("classes", 0, "id"), -1, r"class id must be >= 0, got -1"),
    (("classes", 8, "id"), 10**12, rf"class id must be <= {MAX_CLASS_ID}, got 1000000000000"),
    (("classes", 8, "id"), 1e12, "class id must be an integer"),
    (("classes", 0, "id"), True, "class id must be an integer"),
    (("classes", 1, "id"), 0, r"class ids must be ascending in output order.*: output 1 is class 0, after class 0"),
    (("classes", 1, "name"), "digit0", r"class names .*'digit0'.* more than once"),
    (("classes", 1, "name"), "", "class names must be non-empty"),
    (("classes", 1, "name"), "  ", "class names must be non-empty"),
    (("classes", 1, "name"), 5, "class name must be a string"),
    (("classes", 1), {"id": 1}, r"each class must be an object with 'id' and 'name'"),
    (("classes",), "0123456789", "classes must be a list"),
    (("classes", 1, "name"), "digit3", r"class names .*'digit3'.* more than once"),  # a forgotten name
    # arch_kwargs
    (("arch_kwargs", "activation"), "tanh", r"mlp activation must be one of \['relu', 'sigmoid'\], got 'tanh'"),
    (("arch_kwargs", "hidden"), [0], r"mlp hidden\[0\] must be a positive integer, got 0"),
    (("arch_kwargs", "hidden"), [16.0], r"mlp hidden\[0\] must be a positive integer, got 16.0"),
    (("arch_kwargs", "hidden"), "16", "mlp hidden must be a list of integers"),
    (("arch_kwargs", "in_features"), DELETE, r"bad settings for architecture 'mlp': missing \['in_features'\]"),
    (("arch_kwargs", "in_features"), 2**40, r"mlp in_features must be <= "),
    (("arch_kwargs",), [], "arch_kwargs must be an object"),
    # history
    (("history", 0, "method"), "evil", r"method must be one of \['naive', 'normalization', 'randomization', 'zeroing'\], got 'evil'"),
    (("history", 0, "forgot"), [4], r"class 4 .* is among the model's classes"),
    (("history", 0, "forgot_names"), ["digit3", "x"], "one name per id"),
    (("history", 0, "forgot_names"), ["digit4"], r"class names .*'digit4'.* more than once"),
    (("history", 0, "forgot"), [], "must name its forgotten classes"),
    (("history", 0, "forgot"), [-3], r"forgotten class id must be >= 0"),
    (("history", 0, "per_class"), 0, "per_class must be a positive integer, got 0"),
    (("history", 0, "per_class"), "5", "per_class must be a positive integer, got '5'"),
    (("history", 0, "samples"), 0, "samples must be a positive integer, got 0"),
    (("history", 0, "samples"), 1.5, "samples must be a positive integer, got 1.5"),
    (("history", 0, "seed"), -1, "seed must be >= 0, got -1"),
    (("history", 0, "condition_number"), "big", "condition_number must be a number"),
    (("history", 0, "condition_number"), 0.5, r"condition_number must be >= 1"),
    (("history", 0, "pinv"), "yes", "pinv must be true or false"),
    (("history", 0, "date"), "yesterday", "date must be an ISO 8601"),
    (("history", 0, "samples"), DELETE, r"history entry 1: record fields wrong: missing \['samples'\]"),
    (("history", 0, "colour"), "red", r"history entry 1: .*unknown \['colour'\]"),
    (("history", 0), "normalization", "history entry 1: must be an object"),
    (("history",), {"method": "naive"}, "history must be a list"),
])
def test_tampered_specs_are_refused(tmp_path, path, value, message):
    spec = ModelSpec("mlp", MLP, _KEPT, tuple(NAMES[c] for c in _KEPT), (_FORGOT3,))
    path_ = tmp_path / "m.safetensors"
    save_model(path_, _mlp(k=9), spec)
    loaded, spec2 = load_model(path_)  # the untampered file loads
    assert spec2 == spec
    _raw(path_, _state(loaded), json.dumps(_tampered(spec.to_json(), path, value)))
    with pytest.raises(ModelFormatError, match=message):
        load_model(path_)


def test_a_class_cannot_be_forgotten_twice():
    kept = tuple(c for c in range(10) if c not in (3, 5))
    both = dataclasses.replace(_FORGOT3, forgot=(3, 3), forgot_names=("digit3", "digit3"))
    again = HistoryEntry(method="naive", forgot=(3,), forgot_names=("digit3",), per_class=None,
                         samples=90, condition_number=None, date="2024-05-02T12:00:00+00:00")
    for history in [(both,), (_FORGOT3, again)]:
        with pytest.raises(ModelFormatError, match=r"history entry \d: class 3 .* forgotten more than once"):
            ModelSpec("mlp", MLP, kept, tuple(NAMES[c] for c in kept), history)
    with pytest.raises(ModelFormatError, match=r"ascending in output order.*: output 1 is class 0, after class 1"):
        ModelSpec("mlp", MLP, (1, 0, 2), ("a", "b", "c"))


def test_deeply_nested_spec_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    deep = "[" * 100_000 + "]" * 100_000
    _raw(path, _state(_mlp()), deep)
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        load_model(path)
    spec = _spec().to_json()
    spec["arch_kwargs"]["hidden"] = json.loads("[" * 500 + "]" * 500)  # parses; still refused
    _raw(path, _state(_mlp()), json.dumps(spec))
    with pytest.raises(ModelFormatError, match=r"mlp hidden\[0\] must be a positive integer"):
        load_model(path)


def test_build_validates_its_settings():
    for kwargs, message in [
        ({"in_features": 4, "activation": "tanh"}, "mlp activation must be one of"),
        ({"in_features": 0}, "mlp in_features must be a positive integer, got 0"),
        ({"in_features": True}, "mlp in_features must be a positive integer, got True"),
        ({"in_features": 4, "hidden": (3, -1)}, r"mlp hidden\[1\] must be a positive integer, got -1"),
        ({"in_features": 4, "width": 3}, r"bad settings for architecture 'mlp': unknown \['width'\]"),
    ]:
        with pytest.raises(LinfiltError, match=message):
            build("mlp", 3, **kwargs)
    with pytest.raises(LinfiltError, match="cifar_cnn p must be a positive integer, got 0"):
        build("cifar_cnn", 10, p=0)
    with pytest.raises(LinfiltError, match=r"att_resnet widths\[0\] must be a positive integer, got '16'"):
        build("att_resnet", 10, widths=["16"])
    with pytest.raises(LinfiltError, match="num_classes must be >= 1"):
        build("mlp", 0, in_features=4)
    kwargs = {"in_features": 4, "hidden": [3]}
    assert build("mlp", 2, **kwargs).body[1].out_features == 3
    assert kwargs == {"in_features": 4, "hidden": [3]}  # the caller's settings are left alone


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_neither_saved_nor_loaded(tmp_path, dtype, bad):
    model = _mlp().to(dtype)
    with torch.no_grad():
        model.body[1].bias[2] = bad
    target = tmp_path / "m.safetensors"
    with pytest.raises(LinfiltError, match=r"'body.1.bias' holds NaN or infinite values"):
        save_model(target, model, _spec())
    assert list(tmp_path.iterdir()) == []
    _raw(target, _state(model), json.dumps(_spec().to_json()))
    with pytest.raises(ModelFormatError, match=r"'body.1.bias' holds NaN or infinite values"):
        load_model(target)


def _v1_spec_json():
    """A spec as linfilt wrote it in format version 1 (before `affine` and `head` were recorded)."""
    return {"format": "linfilt-model", "version": 1, "arch": "mlp", "arch_kwargs": MLP,
            "classes": [{"id": c, "name": NAMES[c]} for c in _KEPT],
            "history": [{"method": "normalization", "forgot": [3], "forgot_names": ["digit3"], "per_class": 10,
                         "samples": 100, "condition_number": None, "date": "2024-05-01T12:00:00+00:00",
                         "seed": None, "pinv": True}]}


def test_version_1_files_load_with_nothing_invented(tmp_path):
    path = tmp_path / "v1.safetensors"
    _raw(path, _state(_mlp(k=9)), json.dumps(_v1_spec_json()))
    model, spec = load_model(path)
    (step,) = spec.history
    assert (step.forgot, step.forgot_names, step.per_class, step.samples, step.pinv) == \
        ((3,), ("digit3",), 10, 100, True)
    assert step.condition_number == float("inf")
    assert step.affine is None and step.head is None  # unknown in version 1: not made up
    assert model.linfilt_filtration.steps == (step,) and model.linfilt_filtration.classes == _KEPT
    # re-saved, it is a version-2 file that says the same
    save_model(tmp_path / "v2.safetensors", model, spec)
    assert load_model(tmp_path / "v2.safetensors")[1] == spec
    saved = json.loads(safetensors.safe_open(str(tmp_path / "v2.safetensors"), "pt").metadata()[SPEC_KEY])
    assert saved["version"] == 2 and saved["history"][0]["condition_number"] is None
    # the keys of version 2 are unknown to version 1
    v1 = _v1_spec_json()
    v1["history"][0]["affine"] = False
    _raw(path, _state(_mlp(k=9)), json.dumps(v1))
    with pytest.raises(ModelFormatError, match=r"unknown \['affine'\]"):
        load_model(path)


def test_model_files_keep_the_record_of_unlearn(tmp_path):
    """The step `unlearn` records is what the file stores, named and dated: head and affine included."""
    x, y = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(300) % 10
    new = linfilt.unlearn(_mlp(), [3], (x, y), method="zeroing", per_class=20, rng=5)
    spec = _spec().after_unlearn(new)
    save_model(tmp_path / "u.safetensors", new, spec)
    loaded, spec2 = load_model(tmp_path / "u.safetensors")
    (made,), (stored,) = new.linfilt_filtration.steps, spec2.history
    assert dataclasses.replace(stored, forgot_names=None, date=None) == made
    assert (stored.head, stored.affine, stored.seed, stored.forgot_names) == ("head", False, 5, ("digit3",))
    assert loaded.linfilt_filtration.steps == (stored,)
    with pytest.raises(ModelFormatError, match="names and dates every filtration"):
        ModelSpec("mlp", MLP, _KEPT, tuple(NAMES[c] for c in _KEPT), (made,))


def test_a_spec_version_of_true_is_refused(tmp_path):
    """Review: JSON `true` passed `isinstance(version, int)` and was read as version 1."""
    path = tmp_path / "v_true.safetensors"
    _raw(path, _state(_mlp(k=9)), json.dumps({**_v1_spec_json(), "version": True}))
    with pytest.raises(ModelFormatError, match="spec version True is not supported"):
        load_model(path)


def test_a_path_that_is_not_a_path_is_refused(tmp_path):
    """Review: load_model(5) and load_state_dict_file(5) gave `TypeError: expected str, bytes or
    os.PathLike object`; save_model(5, ...) did too, after checking everything else."""
    model = _mlp(k=10)
    spec = ModelSpec.new("mlp", MLP, NAMES)
    for call in (lambda: load_model(5), lambda: load_state_dict_file(5), lambda: save_model(5, model, spec)):
        with pytest.raises(LinfiltError, match="path must be a file path .*got int"):
            call()
    save_model(tmp_path / "m.safetensors", model, spec)  # a real path still works
    assert load_model(str(tmp_path / "m.safetensors"))[1] == spec
