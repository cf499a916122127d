"""Properties of the model file: whatever save_model writes loads back bit for bit, and no damage
to a file gives anything but a ModelFormatError."""
import datetime

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linfilt.errors import ModelFormatError
from linfilt.filtration import METHODS
from linfilt.modelio import HistoryEntry, ModelSpec, load_model, save_model
from linfilt.paper.models import ARCHITECTURES, build
from linfilt.validation import MAX_CLASS_ID

# Small settings of every architecture (each list kept short so a model has few weights).
ARCH_KWARGS = {
    "mlp": st.fixed_dictionaries(
        {"in_features": st.integers(1, 6)},
        optional={"hidden": st.lists(st.integers(1, 5), max_size=2),
                  "activation": st.sampled_from(["relu", "sigmoid"])},
    ),
    "cifar_cnn": st.fixed_dictionaries({"p": st.integers(1, 3)}, optional={"in_channels": st.integers(1, 3)}),
    "att_resnet": st.fixed_dictionaries({"widths": st.lists(st.integers(1, 4), max_size=2)},
                                        optional={"in_channels": st.integers(1, 2)}),
}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# tmp_path is shared by a test's examples: each example overwrites the one file it uses
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_every_architecture_is_covered():
    assert set(ARCH_KWARGS) == set(ARCHITECTURES)


@st.composite
def specs(draw) -> ModelSpec:
    """A spec with k current classes and a history of 0-3 filtrations, original ids anywhere in
    0..MAX_CLASS_ID, and names of any characters."""
    arch = draw(st.sampled_from(sorted(ARCH_KWARGS)))
    k = draw(st.integers(2, 5))
    steps = draw(st.lists(st.integers(1, 3), max_size=3))  # classes forgotten by each filtration
    n = k + sum(steps)
    ids = draw(st.lists(st.integers(0, MAX_CLASS_ID), min_size=n, max_size=n, unique=True))
    names = draw(st.lists(st.text(min_size=1, max_size=10).filter(str.strip), min_size=n, max_size=n,
                          unique=True))
    classes = sorted(zip(ids[:k], names[:k]))
    history, at = [], k
    for size in steps:
        forgot = sorted(zip(ids[at:at + size], names[at:at + size]))
        at += size
        per_class = draw(st.none() | st.integers(1, 10**6))
        date = draw(st.datetimes(timezones=st.just(datetime.timezone.utc)))
        history.append(HistoryEntry(
            method=draw(st.sampled_from(METHODS)),
            forgot=tuple(c for c, _ in forgot), forgot_names=tuple(name for _, name in forgot),
            per_class=per_class, samples=draw(st.integers(1, 10**9)),
            condition_number=draw(st.none() | st.floats(1.0, 1e300)),
            date=date.isoformat(timespec="seconds"),
            seed=draw(st.none() | st.integers(0, 2**64 - 1)), pinv=draw(st.booleans()),
        ))
    return ModelSpec(arch, draw(ARCH_KWARGS[arch]), tuple(c for c, _ in classes),
                     tuple(name for _, name in classes), tuple(history))


def _model(spec: ModelSpec, dtype: torch.dtype, head_dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """The spec's module in `dtype` (its head in `head_dtype`) with random weights, and the dtype's
    extreme finite values (-0, a subnormal, the largest) at the start of every floating tensor."""
    model = build(spec.arch, spec.num_classes, **spec.arch_kwargs).to(dtype)
    model.head.to(head_dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if not tensor.is_floating_point():  # BatchNorm's num_batches_tracked
                tensor.fill_(int(torch.randint(0, 2**40, (), generator=gen)))
                continue
            flat, info = tensor.view(-1), torch.finfo(tensor.dtype)
            flat.copy_(torch.randn(flat.shape, generator=gen, dtype=torch.float64) * 10)
            special = torch.tensor([-0.0, info.tiny / 2, info.max, -info.max], dtype=tensor.dtype)[: flat.numel()]
            flat[: len(special)] = special
    return model


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8)


@settings(FAST, max_examples=100)  # 1 header length in 32 starts with byte 0x80: meet a few
@given(spec=specs(), dtype=st.sampled_from(DTYPES), head_dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_what_save_model_writes_loads_back_identically(tmp_path, spec, dtype, head_dtype, seed):
    model, path = _model(spec, dtype, head_dtype, seed), tmp_path / "m.safetensors"
    save_model(path, model, spec)
    loaded, spec2 = load_model(path)
    assert spec2 == spec
    assert spec2.to_json() == spec.to_json()
    saved, back = model.state_dict(), loaded.state_dict()
    assert back.keys() == saved.keys()
    for key, value in saved.items():
        assert (back[key].dtype, back[key].shape) == (value.dtype, value.shape), key
        assert torch.equal(_bits(back[key]), _bits(value)), key
    assert loaded.linfilt_filtration == spec.record()
    assert loaded.linfilt_filtration.classes == spec.class_ids
    assert loaded.linfilt_filtration.forgotten == tuple(c for e in spec.history for c in e.forgot)


@FAST
@given(spec=specs(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_damaged_files_give_a_model_format_error(tmp_path, spec, dtype, seed, data):
    """Truncated at any byte, or with bytes overwritten anywhere (the header above all): the file
    loads (a flip in the weights can be harmless) or raises ModelFormatError, nothing else."""
    path = tmp_path / "m.safetensors"
    save_model(path, _model(spec, dtype, dtype, seed), spec)
    content = bytearray(path.read_bytes())
    header_end = 8 + int.from_bytes(content[:8], "little")
    cut = data.draw(st.integers(0, len(content) - 1))
    path.write_bytes(bytes(content[:cut]))
    with pytest.raises(ModelFormatError):
        load_model(path)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, header_end - 1) | st.integers(0, len(content) - 1))
        content[where] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(content))
    try:
        load_model(path)
    except ModelFormatError:
        pass
