"""Heads that linear filtration cannot rewrite exactly are refused; keep_outputs, the class-id
buffer and its helpers; the ways a head and a forget set can be named; float precision."""
import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import nn
from torch.nn.utils import parametrizations

from conftest import gaussian_blobs

import linfilt
from linfilt import LinfiltError, filtration_matrix
from linfilt.pytorch import CLASSES_BUFFER

K = 5


class Net(nn.Module):
    def __init__(self, k=K, head=None):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = head if head is not None else nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def blobs():
    return gaussian_blobs(K, 40)


@pytest.fixture(scope="module")
def trained(blobs):
    x, y = blobs
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        nnf.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def logits(model, x):
    with torch.no_grad():
        return model(x).double()


def means(L, y, k=K):
    L, y = np.asarray(L), np.asarray(y)
    return np.stack([L[y == j].mean(axis=0) for j in range(k)], axis=1)


class Cosine(nn.Linear):
    """A cosine classifier: its own forward, so it is not x W^T + b."""

    def forward(self, x):
        return 10 * nnf.normalize(x, dim=1) @ nnf.normalize(self.weight, dim=1).T


def _hooked():
    head = nn.Linear(16, K)
    head.register_forward_hook(lambda m, i, o: o * 2)
    return head


def _pre_hooked():
    head = nn.Linear(16, K)
    head.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    return head


def _patched():
    head = nn.Linear(16, K)
    plain = head.forward
    head.forward = lambda x: plain(x) / 2
    return head


@pytest.mark.parametrize("make, words", [
    (lambda: Cosine(16, K), "Cosine, whose own forward"),
    (_patched, "forward was replaced on the instance"),
    (lambda: parametrizations.weight_norm(nn.Linear(16, K)), "parametrized"),
    (lambda: torch.nn.utils.weight_norm(nn.Linear(16, K)), "hooks or pre-hooks"),
    (_hooked, "hooks or pre-hooks"),
    (_pre_hooked, "hooks or pre-hooks"),
])
def test_heads_that_are_not_a_plain_linear_are_refused(blobs, make, words):
    """Replaced by a plain Linear, each of these heads would silently change the model's outputs."""
    x, y = blobs
    torch.manual_seed(0)
    model = Net(head=make())
    for kwargs in ({"data": (x, y)}, {"logits": logits(model, x), "labels": y}, {"method": "naive"}):
        with pytest.raises(LinfiltError, match=f"cannot be filtered exactly: .*{words}"):
            linfilt.unlearn(model, [1], **kwargs)


def test_keep_outputs_masks_the_forgotten_rows(trained, blobs):
    x, y = blobs
    short = linfilt.unlearn(trained, [1, 3], (x, y))
    full = linfilt.unlearn(trained, [1, 3], (x, y), keep_outputs=True)
    assert full.head.out_features == K
    L, Ls = logits(full, x), logits(short, x)
    kept = [0, 2, 4]
    # the live rows are exactly the default's filtered rows (the same float64 F W, one cast)
    assert torch.equal(full.head.weight[kept], short.head.weight)
    assert torch.equal(full.head.bias[kept], short.head.bias)
    torch.testing.assert_close(L[:, kept], Ls, rtol=1e-6, atol=1e-6)  # the matmul's blocking may differ
    # the masked logits are the lowest float32 on every input: never the argmax, softmax 0
    assert torch.all(L[:, [1, 3]] == torch.finfo(torch.float32).min)
    with torch.no_grad():
        out = full(x)
        assert torch.all(out.softmax(1)[:, [1, 3]] == 0)
        torch.testing.assert_close(out.softmax(1)[:, kept], short(x).softmax(1), rtol=1e-6, atol=1e-6)
    live = torch.isin(y, torch.tensor(kept))
    table = torch.tensor([0, -1, 1, -1, 2])  # original id -> position among the default's outputs
    ce_full = nnf.cross_entropy(full(x[live]), y[live])
    ce_short = nnf.cross_entropy(short(x[live]), table[y[live]])
    torch.testing.assert_close(ce_full, ce_short)
    ce_full.backward()  # the masked rows get no gradient: fine-tuning keeps them masked
    assert torch.all(full.head.weight.grad[[1, 3]] == 0) and torch.all(full.head.bias.grad[[1, 3]] == 0)
    # argmax is the original class id, and it is predict_ids of the default model
    assert torch.equal(logits(full, x).argmax(1), linfilt.predict_ids(short, x))
    assert linfilt.classes_of(full) == tuple(range(K))
    # the state dict is the original architecture's
    fresh = Net()
    fresh.load_state_dict(full.state_dict())
    assert torch.equal(logits(fresh, x), L)
    assert full.linfilt_filtration.classes == tuple(range(K))
    assert full.linfilt_filtration.forgotten == (1, 3)


def test_keep_outputs_then_another_request_skips_the_masked_outputs(trained, blobs):
    """A second request on a keep_outputs model, also after a state_dict round trip (no record),
    filters only the live outputs: the same as forgetting {1} then {3} the default way."""
    x, y = blobs
    first = linfilt.unlearn(trained, [1], (x, y), keep_outputs=True)
    fresh = Net()
    fresh.load_state_dict(first.state_dict())
    short = linfilt.unlearn(linfilt.unlearn(trained, [1], (x, y)), [3], (x, y))
    for model in (first, fresh):
        live = y != 1 if model is fresh else slice(None)  # without the record, class 1 is unknown
        second = linfilt.unlearn(model, [3], (x[live], y[live]), keep_outputs=True)
        torch.testing.assert_close(second.head.weight[[0, 2, 4]], short.head.weight, rtol=1e-6, atol=1e-6)
        assert torch.all(second.head.bias[[1, 3]] == torch.finfo(torch.float32).min)
        # the default way after keep_outputs, and from precomputed logits: the live outputs only
        third = linfilt.unlearn(model, [3], logits=logits(model, x[live]), labels=y[live])
        assert linfilt.classes_of(third) == (0, 2, 4)
        torch.testing.assert_close(third.head.weight, short.head.weight, rtol=1e-6, atol=1e-6)


def test_keep_outputs_needs_a_bias(blobs):
    x, y = blobs
    with pytest.raises(LinfiltError, match="keep_outputs=True needs a head with a bias"):
        linfilt.unlearn(Net(head=nn.Linear(16, K, bias=False)), [1], (x, y), keep_outputs=True)
    with pytest.raises(LinfiltError, match="keep_outputs must be True or False"):
        linfilt.unlearn(Net(), [1], (x, y), keep_outputs=1)


def test_class_ids_travel_in_the_state_dict(trained, blobs):
    x, y = blobs
    new = linfilt.unlearn(trained, [1], (x, y))
    assert torch.equal(new.state_dict()[f"head.{CLASSES_BUFFER}"], torch.tensor([0, 2, 3, 4]))
    assert linfilt.classes_of(new) == (0, 2, 3, 4)
    pred = linfilt.predict_ids(new, x)
    assert torch.equal(pred, torch.tensor([0, 2, 3, 4])[logits(new, x).argmax(1)])
    assert 1 not in pred.tolist() and (pred == y)[y != 1].float().mean() > 0.9
    # the record is lost (a fresh instance loading the state dict, or a wrapper): the buffer tells
    with pytest.raises(RuntimeError, match="Unexpected key"):  # plain strict loading: see load_unlearned
        Net(k=4).load_state_dict(new.state_dict())
    fresh = linfilt.load_unlearned(Net(), new.state_dict())  # the original architecture, resized
    assert fresh.head.out_features == 4 and torch.equal(logits(fresh, x), logits(new, x))
    assert not hasattr(fresh, "linfilt_filtration") and linfilt.classes_of(fresh) == (0, 2, 3, 4)
    with pytest.raises(LinfiltError, match="class ids for 'head', which this model lacks"):
        linfilt.load_unlearned(nn.Sequential(nn.Linear(16, 4)), new.state_dict())
    live = y != 1
    want = linfilt.unlearn(new, [3], (x, y))  # with the record
    for model in (fresh, nn.Sequential(new)):
        got = linfilt.unlearn(model, [3], (x[live], y[live]))
        assert linfilt.classes_of(got) == (0, 2, 4)
        head = got.head if model is fresh else got[0].head
        torch.testing.assert_close(head.weight, want.head.weight, rtol=0, atol=0)
    # an unfiltered model's classes are its output positions; forgetting the last class keeps them,
    # but the smaller head still carries its ids, so load_unlearned can resize an original instance
    assert linfilt.classes_of(trained) == tuple(range(K))
    last = linfilt.unlearn(trained, [K - 1], (x, y))
    assert last.head.get_buffer(CLASSES_BUFFER).tolist() == [0, 1, 2, 3] == list(linfilt.classes_of(last))
    assert torch.equal(logits(linfilt.load_unlearned(Net(), last.state_dict()), x), logits(last, x))


def test_stale_buffer_is_refused(trained, blobs):
    x, y = blobs
    model = Net()
    model.head.register_buffer(CLASSES_BUFFER, torch.tensor([0, 1, 2]))
    with pytest.raises(LinfiltError, match="buffer lists 3 classes but the head has 5 outputs"):
        linfilt.unlearn(model, [1], (x, y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_heads_get_F_W_in_float64_cast_once(trained, blobs, dtype):
    x, y = blobs
    model = Net().to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in trained.state_dict().items()})
    new = linfilt.unlearn(model, [1], (x, y))
    L = logits(model, x.to(dtype)).numpy()  # the logits in the model's dtype, summed in float64 for A
    F = filtration_matrix(means(L, y), [1])
    W = model.head.weight.detach().double().numpy()
    b = model.head.bias.detach().double().numpy()
    assert new.head.weight.dtype == dtype
    assert torch.equal(new.head.weight, torch.from_numpy(F @ W).to(dtype))
    assert torch.equal(new.head.bias, torch.from_numpy(F @ b).to(dtype))


def test_forget_as_a_tensor(trained, blobs):
    x, y = blobs
    want = linfilt.unlearn(trained, [1, 3], (x, y)).head.weight
    for forget in (torch.tensor([3, 1]), torch.tensor(1), np.array([1])):
        ids = (1,) if forget.ndim == 0 or len(forget) == 1 else (1, 3)
        assert linfilt.unlearn(trained, forget, (x, y)).linfilt_filtration.forgotten == ids
    assert torch.equal(linfilt.unlearn(trained, torch.tensor([3, 1]), (x, y)).head.weight, want)
    for bad in (torch.tensor([1.0]), torch.tensor([True]), torch.tensor([[1]])):
        with pytest.raises(LinfiltError, match="forget"):
            linfilt.unlearn(trained, bad, (x, y))


def test_naive_needs_no_data(trained, blobs):
    x, y = blobs
    new = linfilt.unlearn(trained, [1], method="naive")
    torch.testing.assert_close(logits(new, x), logits(trained, x)[:, [0, 2, 3, 4]], rtol=1e-6, atol=1e-6)
    (step,) = new.linfilt_filtration.steps
    assert (step.method, step.samples, step.condition_number) == ("naive", 0, 1.0)
    assert torch.equal(linfilt.unlearn(trained, [1], method="naive", keep_outputs=True).head.weight[1],
                       torch.zeros(16))
    with pytest.raises(LinfiltError, match="method 'normalization' needs data .* forgotten ones included"):
        linfilt.unlearn(trained, [1])
    with pytest.raises(LinfiltError, match="per_class= chooses samples"):
        linfilt.unlearn(trained, [1], method="naive", per_class=3)
    with pytest.raises(LinfiltError, match="samples must be a positive integer"):
        linfilt.FiltrationStep("normalization", (1,), None, 0, 2.0)


def test_head_as_a_module(blobs):
    x, y = blobs
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, K))
    L = logits(model, x)
    by_name = linfilt.unlearn(model, [1], logits=L, labels=y, head="2")
    by_module = linfilt.unlearn(model, [1], logits=L, labels=y, head=model[2])
    assert torch.equal(by_name[2].weight, by_module[2].weight)
    assert by_module.linfilt_filtration.steps[0].head == "2"
    with pytest.raises(LinfiltError, match="not a submodule of this model"):
        linfilt.unlearn(model, [1], logits=L, labels=y, head=nn.Linear(16, K))
    with pytest.raises(LinfiltError, match="head= must be a dotted module path or the head module"):
        linfilt.unlearn(model, [1], logits=L, labels=y, head=2)


class LogSoftmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, K)

    def forward(self, x):
        return self.fc(x).log_softmax(1)


def test_messages_name_the_route_that_works(blobs):
    """A user who passed head= is not told to pass head=; the route for a LogSoftmax model
    (the head's own logits with head=) is named, and works."""
    x, y = blobs
    torch.manual_seed(0)
    model = LogSoftmaxed()
    with pytest.raises(LinfiltError) as err:
        linfilt.unlearn(model, [1], (x, y), head="fc")
    assert "pass head=" not in str(err.value) and "logits= (with labels=) together with head=" in str(err.value)
    with pytest.raises(LinfiltError, match="no nn.Linear layer's output .* logits= .* together with head="):
        linfilt.unlearn(model, [1], (x, y))
    new = linfilt.unlearn(model, [1], logits=logits(model.fc, x), labels=y, head="fc")
    F = filtration_matrix(means(logits(model.fc, x), y), [1])
    torch.testing.assert_close(logits(new.fc, x), logits(model.fc, x) @ torch.from_numpy(F).T,
                               rtol=1e-5, atol=1e-5)


def test_torchscript_and_non_modules_get_a_clear_message(trained, blobs):
    x, y = blobs
    for compiled in (torch.jit.trace(trained, x[:2]), torch.jit.script(trained)):
        with pytest.raises(LinfiltError, match="TorchScript model .* unlearn the original nn.Module"):
            linfilt.unlearn(compiled, [1], (x, y))
    with pytest.raises(LinfiltError, match="model must be a torch.nn.Module, got dict"):
        linfilt.unlearn({}, [1], (x, y))


def test_predict_ids_of_an_unfiltered_model_without_a_head_attribute(trained, blobs):
    """Review: predict_ids (and classes_of) of a plain Sequential MLP told the user to "pass head=",
    which neither takes; predict_ids runs the model, so output i is class i."""
    x, _ = blobs
    mlp = nn.Sequential(trained.body, trained.head)  # two Linear layers, no `head` attribute
    np.testing.assert_array_equal(linfilt.predict_ids(mlp, x).numpy(), logits(trained, x).argmax(1).numpy())
    with pytest.raises(LinfiltError, match="predict_ids") as info:
        linfilt.classes_of(mlp)
    assert "head=" not in str(info.value)
    # a stale record (the head was swapped after unlearning) is named, not an IndexError or wrong ids
    new = linfilt.unlearn(trained, [1], (x, blobs[1]))
    new.head = trained.head
    with pytest.raises(LinfiltError, match="lists 4 classes but it returns 5 outputs"):
        linfilt.predict_ids(new, x)
