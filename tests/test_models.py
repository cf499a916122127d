import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linfilt.paper import models
from linfilt.errors import LinfiltError
from linfilt.paper.population import fit, predict_logits
from linfilt.paper.training import batch_order




def test_mlp_matches_numpy_forward():
    m = models.build("mlp", 3, in_features=12, hidden=(5, 4), activation="sigmoid")
    x = torch.rand(7, 1, 3, 4)
    w = [(lin.weight.detach().numpy(), lin.bias.detach().numpy())
         for lin in m.modules() if isinstance(lin, nn.Linear)]
    h = x.reshape(7, -1).numpy()
    for W, b in w[:-1]:
        h = 1 / (1 + np.exp(-(h @ W.T + b)))
    expected = h @ w[-1][0].T + w[-1][1]
    np.testing.assert_allclose(m(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(m.head, nn.Linear)
    assert m.head.out_features == 3 and m.head.in_features == 4


def test_cifar_cnn_is_valid_padded_with_width_p():
    m = models.build("cifar_cnn", 10, p=64)
    # 32 -> conv3 valid 30 -> pool 15 -> conv3 valid 13 -> pool 6: 6*6*32 features into Dense(p)
    dense = [l for l in m.body if isinstance(l, nn.Linear)]
    assert dense[0].in_features == 6 * 6 * 32 and dense[0].out_features == 64
    assert m.head.in_features == 64 and m.head.out_features == 10
    assert all(c.padding == (0, 0) for c in m.body if isinstance(c, nn.Conv2d))
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_att_resnet_shapes_and_keras_batchnorm():
    m = models.build("att_resnet", 40)
    assert m.head.in_features == 256 and m.head.out_features == 40
    assert m(torch.rand(2, 1, 112, 92)).shape == (2, 40)
    bn = m.body[1]
    bn.reset_running_stats()
    conv_out = m.body[0](x := torch.rand(4, 1, 112, 92))
    m.train()
    bn(conv_out)
    # Keras momentum 0.99: running = 0.99 * old + 0.01 * batch statistic
    expected = 0.01 * conv_out.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-7)
    assert bn.eps == 1e-3
    assert x.shape == (4, 1, 112, 92)


def test_att_resnet_authors_variant_block_structure():
    torch.manual_seed(0)
    ours, theirs = models.build("att_resnet", 40), models.build("att_resnet", 40, variant="authors")
    # ours keeps the stored models' layout: no conv bias, no extra layer
    assert not any(k.endswith("bias") and "conv" in k for k in ours.state_dict())
    assert all(b.relu_mid is None for b in ours.body if isinstance(b, models.ResidualBlock))
    # the authors': every convolution has a bias, every block a ReLU after its second BatchNorm
    convs = [m for m in theirs.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 5 and all(c.bias is not None and c.padding == (0, 0) for c in convs)
    block = theirs.body[3]
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()  # non-zero biases, BatchNorm shifts that make negative values
    block.eval()
    x = torch.randn(2, 8, 56, 46)
    seen = {}
    block.relu_mid.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    out = block(x)
    assert (seen["inp"] < 0).any() and (seen["out"] >= 0).all()
    # the block by hand: TF "same" padding on even sizes is (0, 1) for stride 2, (1, 1) for stride 1
    conv1, conv2, short = block.conv1[1], block.conv2[1], block.short_conv[1]
    y = torch.relu(block.bn1(F.conv2d(F.pad(x, (0, 1, 0, 1)), conv1.weight, conv1.bias, stride=2)))
    y = torch.relu(block.bn2(F.conv2d(F.pad(y, (1, 1, 1, 1)), conv2.weight, conv2.bias)))
    s = block.short_bn(F.conv2d(F.pad(x, (0, 1, 0, 1)), short.weight, short.bias, stride=2))
    torch.testing.assert_close(out, torch.relu(y + s))
    assert out.shape == (2, 16, 28, 23)
    # odd sizes pad (1, 1) at stride 2, as TensorFlow does: 23 -> 12
    assert models.TFSamePad2d(3, 2)(torch.zeros(1, 1, 7, 23)).shape == (1, 1, 9, 25)
    assert theirs(torch.rand(2, 1, 112, 92)).shape == (2, 40)
    with pytest.raises(LinfiltError, match="variant must be one of"):
        models.build("att_resnet", 40, variant="keras")


def test_initialize_is_seeded_glorot_uniform_with_zero_bias():
    def params(seed):
        m = models.build("cifar_cnn", 10, p=256)
        models.initialize(m, torch.Generator().manual_seed(seed))
        return m
    a, b, c = params(1), params(1), params(2)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        if n.endswith("weight"):
            assert not torch.equal(pa, pc)
        else:
            assert torch.count_nonzero(pa) == 0
    w = a.body[7].weight.detach()  # Dense(1152 -> 256)
    limit = math.sqrt(6 / (1152 + 256))
    assert float(w.abs().max()) <= limit
    assert abs(float(w.std()) - limit / math.sqrt(3)) < 0.02 * limit
    cw = a.body[3].weight.detach()  # Conv 16 -> 32, 3x3: fans include the receptive field
    assert float(cw.abs().max()) <= math.sqrt(6 / (16 * 9 + 32 * 9))
    assert float(cw.abs().max()) > 0.9 * math.sqrt(6 / (16 * 9 + 32 * 9))


def test_build_rejects_unknown_names():
    with pytest.raises(LinfiltError, match="unknown architecture"):
        models.build("vgg", 10)
    with pytest.raises(LinfiltError, match="bad settings"):
        models.build("cifar_cnn", 10, width=3)
    with pytest.raises(LinfiltError, match="activation"):
        models.build("mlp", 10, in_features=4, activation="tanh")


def _numpy_softmax_regression(x, y, k, w, b, epochs, batch, lr, seed):
    """Independent reference: softmax regression trained by Adam (Keras epsilon) in numpy."""
    params = [w.copy(), b.copy()]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0
    for idx in batch_order(seed, epochs, len(y), batch):
        xb, yb = x[idx], y[idx]
        z = xb @ params[0].T + params[1]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        g = [p.T @ xb / len(yb), p.mean(0)]
        t += 1
        for i in range(2):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            mh, vh = m[i] / (1 - 0.9 ** t), v[i] / (1 - 0.999 ** t)
            params[i] = params[i] - lr * mh / (np.sqrt(vh) + 1e-7)
    return params


def test_fit_matches_independent_adam_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 2, 3)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    model = models.build("mlp", 4, in_features=6, hidden=())
    w0 = model.head.weight.detach().numpy().astype(np.float64)
    b0 = model.head.bias.detach().numpy().astype(np.float64)
    fit(model, x, y, epochs=3, batch_size=8, lr=0.01, seed=5)
    w, b = _numpy_softmax_regression(x.reshape(50, -1).astype(np.float64), y, 4, w0, b0, 3, 8, 0.01, 5)
    np.testing.assert_allclose(model.head.weight.detach().numpy(), w, atol=2e-5)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), b, atol=2e-5)
    assert not model.training

    # another data-order seed gives another model
    other = models.build("mlp", 4, in_features=6, hidden=())
    other.load_state_dict({"head.weight": torch.tensor(w0, dtype=torch.float32),
                           "head.bias": torch.tensor(b0, dtype=torch.float32)})
    fit(other, x, y, epochs=3, batch_size=8, lr=0.01, seed=6)
    assert not torch.allclose(other.head.weight, model.head.weight)


def test_fit_learns_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:, None] / 16).astype(np.float32)
    torch.manual_seed(0)
    model = models.build("mlp", 10, in_features=64, hidden=(32,))
    fit(model, x[:1200], d.target[:1200], epochs=10, batch_size=32, seed=0)
    acc = (predict_logits(model, x[1200:]).argmax(1) == d.target[1200:]).mean()
    assert acc > 0.85


def test_fit_rejects_bad_input():
    model = models.build("mlp", 3, in_features=4, hidden=())
    x = np.zeros((5, 1, 2, 2), np.float32)
    with pytest.raises(LinfiltError, match="outputs"):
        fit(model, x, np.array([0, 1, 2, 3, 0]), 1, 2)
    with pytest.raises(LinfiltError, match="float32"):
        fit(model, x.astype(np.uint8), np.zeros(5, int), 1, 2)
    with pytest.raises(LinfiltError, match="shape"):
        fit(model, x, np.zeros(4, int), 1, 2)


@pytest.mark.parametrize("make", [lambda: models.AttResNet(variant="Authors"),
                                  lambda: models.ResidualBlock(8, 16, variant="keras")])
def test_att_resnet_classes_refuse_an_unknown_variant(make):
    # built directly (not through build), a typo used to give the authors' convolutions without their ReLU
    with pytest.raises(LinfiltError, match="variant must be one of"):
        make()
