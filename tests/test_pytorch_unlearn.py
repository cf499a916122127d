"""linfilt.unlearn on PyTorch models: a digits MLP trained here, and small hand-built models."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import linfilt
from linfilt import LinfiltError, filtration_matrix, mean_logits
from linfilt.paper.data import load, to_float
from linfilt.filtration import METHODS
from linfilt.paper.models import build
from linfilt.paper.population import fit

FORGET = 3


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    return to_float(ds.x_train), ds.y_train, to_float(ds.x_test), ds.y_test


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    return fit(build("mlp", 10, in_features=64, hidden=(32,)), x, y, epochs=6, batch_size=32, seed=0)


def logits_of(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=next(model.parameters()).dtype)).double().numpy()


def class_means(L, y, k):
    """A written out: column j is the mean logit vector of class j's samples."""
    return np.stack([L[y == j].mean(axis=0) for j in range(k)], axis=1)


@pytest.mark.parametrize("method", METHODS)
def test_unlearned_logits_are_F_times_the_original(trained, digits, method):
    x, y, xt, _ = digits
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    new = linfilt.unlearn(trained, [FORGET], (x, y), method=method, rng=7)
    F = filtration_matrix(class_means(logits_of(trained, x), y, 10), [FORGET], method, rng=7)
    np.testing.assert_allclose(logits_of(new, xt), logits_of(trained, xt) @ F.T, atol=2e-4, rtol=1e-4)
    assert new.head.out_features == 9 and new.head.weight.dtype == torch.float32
    assert trained.head.out_features == 10  # the original is untouched
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])
    rec = new.linfilt_filtration
    assert rec.classes == (0, 1, 2, 4, 5, 6, 7, 8, 9)
    (step,) = rec.steps
    assert (step.forgot, step.method, step.head, step.samples) == ((FORGET,), method, "head", len(y))
    assert step.condition_number == pytest.approx(np.linalg.cond(class_means(logits_of(trained, x), y, 10)), rel=1e-6)


def test_what_the_paper_claims_about_labels(trained, digits):
    """Normalization gives every test image naive's label; the forgotten class' images go to the
    class that the original model ranked second; zeroing and randomization move some of them."""
    x, y, xt, yt = digits
    orig = logits_of(trained, xt)
    labels = {m: logits_of(linfilt.unlearn(trained, FORGET, (x, y), method=m, rng=0), xt).argmax(1)
              for m in METHODS}
    kept = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(labels["normalization"], labels["naive"])
    np.testing.assert_array_equal(kept[labels["naive"]], kept[orig[:, kept].argmax(1)])
    gone = yt == FORGET
    runner_up = np.where(np.arange(10) == FORGET, -np.inf, orig).argmax(1)
    np.testing.assert_array_equal(kept[labels["normalization"][gone]], runner_up[gone])
    for m in ("zeroing", "randomization"):
        assert np.any(labels[m][gone] != labels["naive"][gone])


@pytest.mark.parametrize("shape", ["loader", "dataset", "tensors", "logits"])
def test_every_kind_of_data_gives_the_same_model(trained, digits, shape):
    x, y, xt, _ = digits
    ref = linfilt.unlearn(trained, [1, 7], (x, y), per_class=10)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    kwargs = {
        "loader": dict(data=DataLoader(TensorDataset(tx, ty), batch_size=50)),
        "dataset": dict(data=TensorDataset(tx, ty)),
        "tensors": dict(data=(tx, ty)),
        "logits": dict(logits=logits_of(trained, x), labels=y),
    }[shape]
    new = linfilt.unlearn(trained, [1, 7], per_class=10, **kwargs)
    np.testing.assert_allclose(logits_of(new, xt), logits_of(ref, xt), atol=1e-5)
    # per_class=10 means the first 10 of each class, in the data's order.
    firsts = np.concatenate([np.flatnonzero(y == j)[:10] for j in range(10)])
    F = filtration_matrix(class_means(logits_of(trained, x[firsts]), y[firsts], 10), [1, 7])
    np.testing.assert_allclose(logits_of(new, xt), logits_of(trained, xt) @ F.T, atol=2e-4, rtol=1e-4)
    assert new.linfilt_filtration.steps[0].samples == 100


def test_first_s_per_class_stops_reading_a_loader_early(trained, digits):
    x, y, _, _ = digits
    read = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            read.append(i)
            return torch.from_numpy(x[i]), int(y[i])

    linfilt.unlearn(trained, [0], DataLoader(Counting(), batch_size=10), per_class=5)
    needed = max(np.flatnonzero(y == j)[4] for j in range(10)) + 1  # up to the 5th image of each class
    assert needed <= len(read) < needed + 10


def test_random_per_class_is_reproducible(trained, digits):
    x, y, xt, _ = digits
    a, b, c = (linfilt.unlearn(trained, 0, (x, y), per_class=5, rng=r) for r in (1, 1, 2))
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.allclose(a.head.weight, c.head.weight)


def test_eval_mode_no_grad_and_modes_restored(digits):
    x, y, xt, _ = digits
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 10))
    model.train()
    model[2].eval()  # a mixed state, to be restored as it was
    new = linfilt.unlearn(model, [2], (x, y))
    assert model.training and model[3].training and not model[2].training
    assert new[3].training and new[4].training and not new[2].training  # the copy keeps them too
    model.eval()
    F = filtration_matrix(class_means(logits_of(model, x), y, 10), [2])
    np.testing.assert_allclose(logits_of(new.eval(), xt), logits_of(model, xt) @ F.T, atol=2e-4, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())


class RegisteredOutOfOrder(nn.Module):
    """The logits Linear is registered first; the last registered Linear is not the head."""

    def __init__(self, bias=True):
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(12, 10, bias=bias))
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh())
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nested_head_found_by_running_the_model(digits, bias, dtype):
    x, y, xt, _ = digits
    torch.manual_seed(2)
    model = RegisteredOutOfOrder(bias).to(dtype)
    new = linfilt.unlearn(model, [0, 9], (x, y), method="zeroing")
    assert isinstance(new.classifier[0], nn.Linear) and new.classifier[0].out_features == 8
    assert (new.classifier[0].bias is None) == (not bias)
    assert new.classifier[0].weight.dtype == dtype and new.unused.out_features == 3
    assert new.linfilt_filtration.steps[0].head == "classifier.0"
    F = filtration_matrix(class_means(logits_of(model, x), y, 10), [0, 9], "zeroing")
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(logits_of(new, xt), logits_of(model, xt) @ F.T, atol=tol, rtol=tol)


def test_a_bare_linear_model(digits):
    x, y, xt, _ = digits
    torch.manual_seed(3)
    flat = x.reshape(len(x), -1)
    model = nn.Linear(64, 10)
    new = linfilt.unlearn(model, [4], (flat, y))
    assert isinstance(new, nn.Linear) and new.out_features == 9 and model.out_features == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_device_and_dtype(trained, digits):
    x, y, xt, _ = digits
    import copy

    model = copy.deepcopy(trained).cuda()
    new = linfilt.unlearn(model, [FORGET], (x, y))
    assert new.head.weight.device.type == "cuda" and new.head.weight.dtype == torch.float32
    ref = linfilt.unlearn(trained, [FORGET], (x, y))
    with torch.no_grad():
        got = new(torch.from_numpy(xt).cuda()).cpu().numpy()
    np.testing.assert_allclose(got, logits_of(ref, xt), atol=1e-4, rtol=1e-4)


# --- bad input -------------------------------------------------------------------------------

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 10), nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) + self.b(x)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.square = nn.Linear(64, 10), nn.Linear(10, 10)

    def forward(self, x):
        return self.square(torch.relu(self.square(self.body(x.flatten(1)))))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(x.flatten(1)).softmax(1)


@pytest.mark.parametrize(
    "model, words",
    [
        (TwoHeads(), "no nn.Linear layer's output is the model's output"),
        (Twice(), "runs 2 times"),
        (Softmaxed(), "is not the output of its Linear 'head'"),
        (nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()), "no nn.Linear layer"),
        (nn.Sequential(nn.Flatten()), "no parameters"),
    ],
)
def test_models_without_a_usable_head(digits, model, words):
    x, y, _, _ = digits
    with pytest.raises(LinfiltError, match=words):
        linfilt.unlearn(model, [0], (x, y))


def test_head_path_and_ambiguity_with_precomputed_logits(trained, digits):
    x, y, _, _ = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    L = logits_of(model, x)
    with pytest.raises(LinfiltError, match="pass head="):
        linfilt.unlearn(model, [0], logits=L, labels=y)
    new = linfilt.unlearn(model, [0], logits=L, labels=y, head="3")
    assert new[3].out_features == 9 and new[1].out_features == 32
    with pytest.raises(LinfiltError, match="not an nn.Linear"):
        linfilt.unlearn(model, [0], logits=L, labels=y, head="2")
    with pytest.raises(LinfiltError, match="names no submodule"):
        linfilt.unlearn(model, [0], logits=L, labels=y, head="9")
    with pytest.raises(LinfiltError, match=r"must be \(n, 10\)"):
        linfilt.unlearn(trained, [0], logits=L[:, :9], labels=y)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(forget=[]), "empty"),
        (dict(forget=[10]), "out of range"),
        (dict(forget=[2, 2]), "repeated"),
        (dict(forget=list(range(9))), "at least 2"),
        (dict(method="delete"), "unknown method"),
        (dict(method="randomization"), "needs rng"),
        (dict(per_class=0), "positive integer"),
        (dict(per_class="5"), "positive integer"),
        (dict(per_class=2.0), "positive integer"),
        (dict(rng=-1), "integer seed >= 0"),
        (dict(rng="7"), "integer seed >= 0"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(allow_pinv="no"), "allow_pinv must be True or False"),
        (dict(progress=1), "progress must be True or False"),
        (dict(forget=True), "class id"),
        (dict(forget="10"), "class id"),
        (dict(forget=[3.0]), "must be integers"),
        (dict(forget=[0.9]), "must be integers"),
        (dict(forget=[-1]), "out of range"),
        (dict(data=(np.arange(64 * 20).reshape(20, 64), np.arange(20) % 10)), "cannot run on inputs"),
    ],
)
def test_bad_requests(trained, digits, kwargs, words):
    x, y, _, _ = digits
    args = dict(forget=[1], data=(x, y)) | kwargs
    with pytest.raises(LinfiltError, match=words):
        linfilt.unlearn(trained, **args)


def test_bad_data(trained, digits):
    x, y, _, _ = digits
    with pytest.raises(LinfiltError, match=r"classes \[6\] have no samples"):
        linfilt.unlearn(trained, [1], (x[y != 6], y[y != 6]))
    with pytest.raises(LinfiltError, match="class 6: 2"):
        keep = (y != 6) | (np.cumsum(y == 6) <= 2)
        linfilt.unlearn(trained, [1], (x[keep], y[keep]), per_class=3)
    with pytest.raises(LinfiltError, match="NaN or infinite"):
        L = logits_of(trained, x)
        L[5, 2] = np.nan
        linfilt.unlearn(trained, [1], logits=L, labels=y)
    with pytest.raises(LinfiltError, match=r"labels \[12\] are not classes"):
        linfilt.unlearn(trained, [1], (x, np.where(y == 0, 12, y)))
    with pytest.raises(LinfiltError, match="integer class ids"):
        linfilt.unlearn(trained, [1], (x, y.astype(float)))
    with pytest.raises(LinfiltError, match="inputs but"):
        linfilt.unlearn(trained, [1], (x, y[:-1]))
    with pytest.raises(LinfiltError, match="either data or precomputed"):
        linfilt.unlearn(trained, [1], (x, y), logits=logits_of(trained, x), labels=y)
    with pytest.raises(LinfiltError, match="data must be"):
        linfilt.unlearn(trained, [1], x)


@pytest.mark.parametrize("bias", [True, False])
def test_softmax_symmetric_head_gets_the_affine_filtration(digits, bias):
    """A head whose logits sum to zero for every input makes A singular; the filtration is then
    F h + g (exact, no pseudo-inverse), and a bias-less head gains g as its bias."""
    x, y, xt, _ = digits
    torch.manual_seed(1)
    model = build("mlp", 10, in_features=64, hidden=(32,)).double()
    head = nn.Linear(32, 10, bias=bias).double()
    with torch.no_grad():
        head.weight -= head.weight.mean(dim=0)
        if bias:
            head.bias -= head.bias.mean()
    model.head = head
    assert np.abs(logits_of(model, x).sum(axis=1)).max() < 1e-12
    new = linfilt.unlearn(model, [FORGET], (x, y))
    filt = linfilt.filtration.compute_filtration(class_means(logits_of(model, x), y, 10), [FORGET])
    assert filt.affine and not new.linfilt_filtration.steps[0].pinv
    np.testing.assert_allclose(logits_of(new, xt), filt.apply(logits_of(model, xt)), rtol=1e-9, atol=1e-9)
    assert new.head.bias is not None
    naive = linfilt.unlearn(model, [FORGET], (x, y), method="naive")
    np.testing.assert_array_equal(logits_of(new, xt).argmax(1), logits_of(naive, xt).argmax(1))


def test_a_hand_set_record_with_absurd_class_ids_is_refused(trained, digits):
    import copy

    from linfilt.pytorch import FiltrationRecord

    x, y, _, _ = digits
    model = copy.deepcopy(trained)
    model.linfilt_filtration = FiltrationRecord(classes=tuple(range(9)) + (10**12,))
    with pytest.raises(LinfiltError, match="out of range"):
        linfilt.unlearn(model, [1], (x, y))


def test_options_after_data_are_keyword_only(trained, digits):
    x, y, _, _ = digits
    with pytest.raises(TypeError, match="positional"):
        linfilt.unlearn(trained, [1], (x, y), "naive")


class Counted(nn.Module):
    """A digits MLP that counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        self.calls += 1
        return self.head(x.flatten(1))


@pytest.mark.parametrize("forget, words", [([2, 2], "repeated"), ("3", "class id"), ([], "empty")])
def test_a_bad_forget_set_is_refused_before_any_forward_pass(digits, forget, words):
    x, y, _, _ = digits
    model = Counted()
    with pytest.raises(LinfiltError, match=words):
        linfilt.unlearn(model, forget, (x, y))
    assert model.calls == 0


def test_the_record_is_the_one_filtration_step(trained, digits):
    """The PyTorch record, model files' history and the scikit-learn record are one type; the step
    says whether the filtration had an offset g."""
    from linfilt.filtration import FiltrationStep
    from linfilt.modelio import HistoryEntry
    from linfilt.pytorch import UnlearnStep

    x, y, _, _ = digits
    assert UnlearnStep is HistoryEntry is FiltrationStep
    (step,) = linfilt.unlearn(trained, [FORGET], (x, y), per_class=10, rng=3).linfilt_filtration.steps
    A = mean_logits(logits_of(trained, x), y, 10, per_class=10, rng=3)
    assert isinstance(step, FiltrationStep)
    assert np.abs(A.sum(axis=0)).min() > 1e-3 * np.abs(A).sum(axis=0).max()  # no zero-sum columns ...
    assert step.affine is False  # ... so no offset g
    assert (step.seed, step.per_class, step.samples, step.head, step.forgot_names, step.date) == \
        (3, 10, 100, "head", None, None)
    assert step.condition_number == pytest.approx(np.linalg.cond(A), rel=1e-9)
    model = build("mlp", 10, in_features=64, hidden=(32,)).double()
    with torch.no_grad():
        model.head.weight -= model.head.weight.mean(dim=0)  # logits that sum to zero: affine
        model.head.bias -= model.head.bias.mean()
    assert linfilt.unlearn(model, [FORGET], (x, y)).linfilt_filtration.steps[0].affine is True


def test_scalar_or_ragged_inputs_in_an_x_y_pair_are_refused():
    """Review: a scalar x gave `TypeError: len() of unsized object`, ragged rows a numpy ValueError."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(LinfiltError, match="one row per sample, got a scalar 5"):
        linfilt.unlearn(model, 0, (5, [0]))
    with pytest.raises(LinfiltError, match="data's inputs are not an array"):
        linfilt.unlearn(model, 0, ([[1.0, 2.0, 3.0, 4.0], [1.0]], [0, 1]))
