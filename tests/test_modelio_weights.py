"""save_weights / load_weights: a model of any architecture with its filtration record, one
safetensors file, never unpickled; bad or tampered files refused before the model is touched."""
import json
import types

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

from conftest import gaussian_blobs

import linfilt
from linfilt import FiltrationRecord, LinfiltError, ModelFormatError
from linfilt.filtration import RECORD_ATTR
from linfilt.modelio import RECORD_KEY, ModelSpec, save_model
from linfilt.paper.models import build
from linfilt.pytorch import CLASSES_BUFFER

K = 5


class Net(nn.Module):
    """A body and a head named `classifier` (not `head`): found by running the model."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.classifier = nn.Linear(16, K)

    def forward(self, x):
        return self.classifier(self.body(x))


class Tied(nn.Module):
    """Two body layers sharing one weight (tied), then the head."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 8), nn.Linear(8, 8)
        self.dec.weight = self.enc.weight
        self.classifier = nn.Linear(8, K)

    def forward(self, x):
        return self.classifier(torch.relu(self.dec(torch.relu(self.enc(x)))))


def nested():
    """The head nested in a Sequential: path '2.1'."""
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Identity(), nn.Linear(16, K)))


KINDS = {"classifier": Net, "tied": Tied, "nested": nested}


def make(kind="classifier", seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return KINDS[kind]().to(dtype).eval()


@pytest.fixture(scope="module")
def blobs():
    return gaussian_blobs(K, 30)


def bits(t):
    return t.detach().reshape(-1).view(torch.uint8)


def assert_same_state(loaded, saved):
    """`loaded` has the tensors of `saved`, bit for bit and of the same dtype, and no others."""
    a, b = loaded.state_dict(), saved.state_dict()
    assert set(a) == set(b)
    for key, value in b.items():
        assert a[key].dtype == value.dtype, key
        assert torch.equal(bits(a[key]), bits(value)), key


def out(model, x):
    with torch.no_grad():
        return model(x)


def read_raw(path):
    with safetensors.safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    return safetensors.torch.load_file(str(path)), meta


def write_raw(path, tensors, meta):
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))


@pytest.mark.parametrize("kind, dtype", [("classifier", torch.float32), ("tied", torch.float32),
                                         ("nested", torch.float32), ("classifier", torch.bfloat16),
                                         ("nested", torch.float64)])
def test_round_trip_after_unlearn(tmp_path, blobs, kind, dtype):
    x, y = blobs
    x = x.to(dtype)
    new = linfilt.unlearn(make(kind, dtype=dtype), [3], (x, y))
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, new)
    # other weights and the original k-output head: everything must come from the file
    loaded = linfilt.load_weights(path, make(kind, seed=1, dtype=dtype).train())
    assert not loaded.training
    assert_same_state(loaded, new)
    assert torch.equal(out(loaded, x), out(new, x))
    assert getattr(loaded, RECORD_ATTR) == getattr(new, RECORD_ATTR)
    assert linfilt.classes_of(loaded) == linfilt.classes_of(new) == (0, 1, 2, 4)
    expected = torch.tensor([0, 1, 2, 4])[out(new, x).argmax(dim=1)]
    assert torch.equal(linfilt.predict_ids(loaded, x), expected)
    if kind == "tied":
        assert loaded.dec.weight is loaded.enc.weight


def test_forgetting_the_last_class(tmp_path, blobs):
    """Its filtered head's ids are its positions, but it is smaller: the class-id buffer is still
    there, so a fresh instance's head is resized by it."""
    x, y = blobs
    new = linfilt.unlearn(make(), [4], (x, y))
    assert new.state_dict()[f"classifier.{CLASSES_BUFFER}"].tolist() == [0, 1, 2, 3]
    linfilt.save_weights(tmp_path / "w.safetensors", new)
    loaded = linfilt.load_weights(tmp_path / "w.safetensors", make(seed=1))
    assert_same_state(loaded, new)
    assert torch.equal(out(loaded, x), out(new, x))
    assert linfilt.classes_of(loaded) == (0, 1, 2, 3)


def test_keep_outputs_loads_into_the_original_architecture(tmp_path, blobs):
    x, y = blobs
    original = make()
    new = linfilt.unlearn(original, [1], (x, y), keep_outputs=True)
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, new)
    loaded = linfilt.load_weights(path, make(seed=1))
    assert set(loaded.state_dict()) == set(original.state_dict())  # no buffer: output i is class i
    assert_same_state(loaded, new)
    assert torch.equal(out(loaded, x), out(new, x))
    predicted = linfilt.predict_ids(loaded, x)
    assert torch.equal(predicted, out(new, x).argmax(dim=1)) and not (predicted == 1).any()
    plain = make(seed=2)
    plain.load_state_dict(safetensors.torch.load_file(str(path)))  # the file is the original's state dict
    assert torch.equal(out(plain, x), out(new, x))
    with pytest.raises(LinfiltError, match=r"classes \[1\] were already forgotten"):
        linfilt.unlearn(loaded, [1], (x, y))


def test_two_requests_then_a_third_on_the_loaded_model(tmp_path, blobs):
    x, y = blobs
    two = linfilt.unlearn(linfilt.unlearn(make(), [3], (x, y)), [0], (x, y))
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, two)
    loaded = linfilt.load_weights(path, make(seed=1))
    record = getattr(loaded, RECORD_ATTR)
    assert record == getattr(two, RECORD_ATTR)
    assert [s.forgot for s in record.steps] == [(3,), (0,)] and record.classes == (1, 2, 4)
    # the data still holds classes 3 and 0: their samples are skipped, as on the saved model
    third = linfilt.unlearn(loaded, [1], (x, y))
    assert linfilt.classes_of(third) == (2, 4)
    assert torch.equal(out(third, x), out(linfilt.unlearn(two, [1], (x, y)), x))
    with pytest.raises(LinfiltError, match=r"classes \[3\] were already forgotten"):
        linfilt.unlearn(loaded, [3], (x, y))
    linfilt.save_weights(path, third)  # and again, three steps, over the old file
    again = linfilt.load_weights(path, make(seed=2))
    assert [s.forgot for s in getattr(again, RECORD_ATTR).steps] == [(3,), (0,), (1,)]
    assert torch.equal(out(again, x), out(third, x))


def test_an_unfiltered_model_is_saved_without_a_record(tmp_path, blobs):
    x, _ = blobs
    model = make()
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, model)
    _, meta = read_raw(path)
    assert json.loads(meta[RECORD_KEY])["record"] is None
    stale = make(seed=1)
    setattr(stale, RECORD_ATTR, FiltrationRecord((0, 1, 2, 4)))  # a record the file contradicts
    loaded = linfilt.load_weights(path, stale)
    assert not hasattr(loaded, RECORD_ATTR)
    assert_same_state(loaded, model)
    assert torch.equal(linfilt.predict_ids(loaded, x), out(model, x).argmax(dim=1))


def test_non_finite_weights_are_not_written(tmp_path, blobs):
    x, y = blobs
    new = linfilt.unlearn(make(), [3], (x, y))
    with torch.no_grad():
        new.classifier.weight[0, 0] = float("nan")
    path = tmp_path / "w.safetensors"
    with pytest.raises(LinfiltError, match="'classifier.weight' holds NaN"):
        linfilt.save_weights(path, new)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"an older file")
    with pytest.raises(LinfiltError, match="NaN"):
        linfilt.save_weights(path, new)
    assert path.read_bytes() == b"an older file" and len(list(tmp_path.iterdir())) == 1


def test_what_is_not_a_plain_module_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(LinfiltError, match="torch.nn.Module, got OrderedDict"):
        linfilt.save_weights(path, make().state_dict())
    hf = make()
    hf.config = types.SimpleNamespace(id2label={}, save_pretrained=None)  # how linfilt tells a transformers model
    with pytest.raises(LinfiltError, match="save_pretrained"):
        linfilt.save_weights(path, hf)
    assert not path.exists()
    linfilt.save_weights(path, make())
    with pytest.raises(LinfiltError, match="torch.nn.Module, got str"):
        linfilt.load_weights(path, "Net")


def test_a_record_that_does_not_fit_the_weights_is_not_saved(tmp_path, blobs):
    x, y = blobs
    new = linfilt.unlearn(make(), [3], (x, y))
    setattr(new, RECORD_ATTR, FiltrationRecord((0, 1, 2), getattr(new, RECORD_ATTR).steps))
    with pytest.raises(LinfiltError, match="lists 3 classes but its head 'classifier' has 4 outputs"):
        linfilt.save_weights(tmp_path / "w.safetensors", new)
    assert not (tmp_path / "w.safetensors").exists()


class Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_a_pickle_is_never_unpickled(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "w.safetensors"
    torch.save({"classifier.weight": Payload(marker)}, path)
    with pytest.raises(ModelFormatError, match="PyTorch pickle") as err:
        linfilt.load_weights(path, make())
    assert str(path) in str(err.value) and not marker.exists()


def test_a_truncated_file(tmp_path, blobs):
    x, y = blobs
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, linfilt.unlearn(make(), [3], (x, y)))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ModelFormatError, match="truncated") as err:
        linfilt.load_weights(path, make())
    assert str(path) in str(err.value)


def _drop_last_class(r):
    r["record"]["classes"] = r["record"]["classes"][:-1]


def _swap_classes(r):
    r["record"]["classes"] = [0, 1, 4, 2]


def _unknown_step_field(r):
    r["record"]["steps"][0]["x" * 10_000] = 1  # a long name: the message shows an excerpt


def _version(r):
    r["version"] = 2


def _format(r):
    r["format"] = "linfilt-model"


def _unknown_top_field(r):
    r["extra"] = True


def _bad_method(r):
    r["record"]["steps"][0]["method"] = "bogus"


def _forgot_twice(r):
    r["record"]["steps"] *= 2


def _record_not_object(r):
    r["record"] = [1, 2]


def _bad_class_id(r):
    r["record"]["classes"][0] = -1


TAMPERED = {
    "not json": (None, "not valid JSON"),
    "classes length": (_drop_last_class, "lists 3 classes but its head 'classifier' has 4 outputs"),
    "classes swapped": (_swap_classes, r"classes \[0, 1, 4, 2\] are not those of its head"),
    "unknown step field": (_unknown_step_field, "step 1: step fields wrong: missing .*unknown"),
    "version": (_version, "record version 2 is not supported"),
    "format": (_format, "format is 'linfilt-model', not 'linfilt-record'"),
    "unknown top field": (_unknown_top_field, r"unknown \['extra'\]"),
    "bad method": (_bad_method, "step 1: unknown method"),
    "forgot twice": (_forgot_twice, r"forgets classes \[3\] more than once"),
    "record not object": (_record_not_object, "must be an object or null"),
    "bad class id": (_bad_class_id, "classes: class id must be"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_record_is_refused_before_the_model_is_touched(tmp_path, blobs, case):
    x, y = blobs
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, linfilt.unlearn(make(), [3], (x, y)))
    tensors, meta = read_raw(path)
    change, message = TAMPERED[case]
    if change is None:
        text = meta[RECORD_KEY][:-3]
    else:
        record = json.loads(meta[RECORD_KEY])
        change(record)
        text = json.dumps(record)
    write_raw(path, tensors, {RECORD_KEY: text})
    model = make(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFormatError, match=message) as err:
        linfilt.load_weights(path, model)
    assert str(err.value).startswith(f"{path}: ") and len(str(err.value)) < 1000
    assert model.classifier.out_features == K and not hasattr(model, RECORD_ATTR)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_non_finite_weights_in_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, make())
    tensors, meta = read_raw(path)
    tensors["body.0.bias"][2] = float("inf")
    write_raw(path, tensors, meta)
    with pytest.raises(ModelFormatError, match="'body.0.bias' holds NaN or infinite") as err:
        linfilt.load_weights(path, make())
    assert str(path) in str(err.value)


def test_other_files_are_told_apart(tmp_path):
    model_file, plain = tmp_path / "m.safetensors", tmp_path / "plain.safetensors"
    torch.manual_seed(0)
    mlp = build("mlp", 3, in_features=8, hidden=[4])
    save_model(model_file, mlp, ModelSpec.new("mlp", {"in_features": 8, "hidden": [4]}, ["a", "b", "c"]))
    with pytest.raises(ModelFormatError, match="linfilt model file .*load_model") as err:
        linfilt.load_weights(model_file, build("mlp", 3, in_features=8, hidden=[4]))
    assert str(model_file) in str(err.value)
    safetensors.torch.save_file(make().state_dict(), str(plain))
    with pytest.raises(ModelFormatError, match="not written by save_weights") as err:
        linfilt.load_weights(plain, make())
    assert str(plain) in str(err.value)


def test_weights_of_another_architecture(tmp_path, blobs):
    x, y = blobs
    path = tmp_path / "w.safetensors"
    linfilt.save_weights(path, linfilt.unlearn(make("classifier"), [3], (x, y)))
    with pytest.raises(ModelFormatError, match="do not fit this model") as err:
        linfilt.load_weights(path, make("tied"))
    assert str(path) in str(err.value) and len(str(err.value)) < 1000
