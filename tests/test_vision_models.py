"""torchvision and timm classifiers, built from their own constructors with random weights and
trained a few steps on scikit-learn's bundled digits (upsampled to 3 x 32 x 32): the head is found
and filtered exactly, outputs carry their class ids, keep_outputs loads into the original
architecture, timm's `num_classes` / `get_classifier()` follow the new head, and heads that are not
one Linear's output are refused with the route that works.

The PyPI wheels of torchvision (and so timm, which imports it) do not load against the CPU build of
torch this project pins, so these tests skip there; they run wherever torchvision loads (e.g. next
to the CUDA build of torch, executing on the CPU)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from sklearn.datasets import load_digits


def _load(name):
    try:
        return pytest.importorskip(name)
    except pytest.skip.Exception:
        raise
    except Exception as exc:  # a wheel built against another torch fails at import, not as "missing"
        pytest.skip(f"{name} does not load against this torch ({type(exc).__name__}: {exc})",
                    allow_module_level=True)


torchvision = _load("torchvision")
timm = _load("timm")

import linfilt  # noqa: E402
from linfilt import LinfiltError, filtration_matrix  # noqa: E402

K, FORGET = 10, 3


@pytest.fixture(scope="module")
def digits():
    """40 digits of each class as 3 x 32 x 32 images (each pixel a 4 x 4 block), standardised."""
    d = load_digits()
    idx = np.concatenate([np.flatnonzero(d.target == j)[:40] for j in range(K)])
    img = d.images[idx] / 16.0
    img = np.kron(img, np.ones((4, 4)))[:, None].repeat(3, axis=1)
    x = torch.from_numpy(((img - img.mean()) / img.std()).astype(np.float32))
    return x, torch.from_numpy(d.target[idx].astype(np.int64))


def _trained(model, x, y, steps=25):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for i in range(steps):
        b = order[(i * 64) % len(y):][:64]
        opt.zero_grad()
        nnf.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return model.eval()


def _logits(model, x):
    with torch.no_grad():
        return model(x).double()


# name -> a constructor with k outputs (each call: fresh random weights from the seed set before it)
MODELS = {
    "torchvision resnet18": lambda k: torchvision.models.resnet18(num_classes=k),
    "torchvision mobilenet_v3_small": lambda k: torchvision.models.mobilenet_v3_small(num_classes=k),
    "torchvision vit": lambda k: torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=k),
    "timm resnet18": lambda k: timm.create_model("resnet18", num_classes=k),
    "timm efficientnet_b0": lambda k: timm.create_model("efficientnet_b0", num_classes=k),
    "timm vit_tiny": lambda k: timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=k),
    "timm convnext_atto": lambda k: timm.create_model("convnext_atto", num_classes=k),
    "timm deit_tiny": lambda k: timm.create_model("deit_tiny_patch16_224", img_size=32, num_classes=k),
}


def _fresh(name, k=K):
    torch.manual_seed(1)
    return MODELS[name](k)


@pytest.fixture(scope="module", params=sorted(MODELS))
def trained(request, digits):
    x, y = digits
    return request.param, _trained(_fresh(request.param), x, y)


def test_filtered_logits_are_F_times_the_old_ones(trained, digits):
    name, model = trained
    x, y = digits
    old = _logits(model, x)
    A = np.stack([old[y == j].mean(0).numpy() for j in range(K)], axis=1)
    F = filtration_matrix(A, [FORGET])
    new = linfilt.unlearn(model, [FORGET], (x, y))
    got = _logits(new, x).numpy()
    want = old.numpy() @ F.T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert linfilt.classes_of(new) == tuple(c for c in range(K) if c != FORGET)
    ids = linfilt.predict_ids(new, x).numpy()
    assert FORGET not in ids
    naive = linfilt.unlearn(model, [FORGET], (x, y), method="naive")
    naive_ids = np.asarray(linfilt.classes_of(naive))[_logits(naive, x).argmax(1).numpy()]
    assert np.mean(ids == naive_ids) > 0.99  # normalization keeps naive's labels (float32 ties aside)
    assert np.array_equal(_logits(model, x).numpy(), old.numpy())  # the original is untouched


def test_keep_outputs_is_a_drop_in_for_the_architecture(trained, digits):
    name, model = trained
    x, y = digits
    new = linfilt.unlearn(model, [FORGET], (x, y))
    drop_in = linfilt.unlearn(model, [FORGET], (x, y), keep_outputs=True)
    fresh = _fresh(name)
    fresh.load_state_dict(drop_in.state_dict())  # strict: same keys and shapes as the original
    fresh.eval()
    assert torch.equal(fresh(x).argmax(1), linfilt.predict_ids(new, x))


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n.startswith("timm")])
def test_timm_num_classes_and_classifier_follow_the_new_head(name):
    model = _fresh(name).eval()
    head = model.get_classifier()  # head= takes the module itself
    new = linfilt.unlearn(model, [FORGET], method="naive", head=head)
    assert new.num_classes == K - 1 == new.get_classifier().out_features
    assert model.num_classes == K == model.get_classifier().out_features
    assert new.get_classifier() is not head
    drop_in = linfilt.unlearn(model, [FORGET], method="naive", head=head, keep_outputs=True)
    assert drop_in.num_classes == K == drop_in.get_classifier().out_features


def test_distilled_heads_are_refused_with_the_route_that_works(digits):
    """DeiT's distilled model averages two heads at inference: no single Linear gives its output."""
    x, y = digits
    torch.manual_seed(1)
    model = timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, num_classes=K).eval()
    with pytest.raises(LinfiltError, match="logits="):
        linfilt.unlearn(model, [FORGET], (x, y))
    # the route: the class head's own outputs (its class token's features) with head=
    with torch.no_grad():
        tokens = model.forward_features(x)[:, 0]
        head_logits = model.head(tokens)
    new = linfilt.unlearn(model, [FORGET], logits=head_logits, labels=y, head="head")
    A = np.stack([head_logits[y == j].double().mean(0).numpy() for j in range(K)], axis=1)
    with torch.no_grad():
        got = new.head(tokens).double().numpy()
    np.testing.assert_allclose(got, head_logits.double().numpy() @ filtration_matrix(A, [FORGET]).T,
                               rtol=1e-4, atol=1e-4)
