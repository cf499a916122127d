import json

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg
from torch import nn

from conftest import requires_data

from linfilt.errors import LinfiltError
from linfilt.paper import data
from linfilt.paper.experiments import inversion as exp
from linfilt.paper.inversion import class_probabilities, invert, reinsert_logits

SHAPE = (1, 4, 3)  # one tiny grey-scale "image": 12 pixels




def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _linear(k: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), k))


@pytest.fixture(scope="module")
def trained():
    """A small sigmoid MLP with BatchNorm (eval mode matters), trained on 4 separable classes."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(4, *SHAPE, generator=g)
    y = torch.arange(4).repeat_interleave(25)
    x = (centres[y] + 0.05 * torch.randn(len(y), *SHAPE, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.Linear(16, 4)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_inversion_raises_target_probability(trained):
    images = invert(trained, [0, 1, 2, 3], SHAPE)
    trained.eval()
    with torch.no_grad():
        grey = torch.softmax(trained(torch.full((1, *SHAPE), 0.5)), 1)[0].numpy()
        after = torch.softmax(trained(torch.from_numpy(images)), 1).numpy()
    for t in range(4):
        assert after[t, t] > grey[t] + 0.2
        assert after[t].argmax() == t


def test_batch_equals_one_by_one_and_model_state_restored(trained):
    trained.train()
    trained[4].weight.requires_grad_(False)
    trained.zero_grad(set_to_none=True)
    batch = invert(trained, [2, 0, 3, 0], SHAPE, steps=20)
    for row, t in enumerate([2, 0, 3, 0]):
        single = invert(trained, [t], SHAPE, steps=20)
        np.testing.assert_allclose(batch[row], single[0], atol=1e-6)
    assert trained.training and trained[2].training
    assert [p.requires_grad for p in trained.parameters()] == [True, True, True, True, False, True]
    assert all(p.grad is None for p in trained.parameters())
    trained[4].weight.requires_grad_(True)


def test_one_step_is_a_plain_step_on_the_raw_gradient():
    """For logits W x + b the gradient of CE(t) in x is W^T (softmax - onehot(t)): check by hand."""
    model = _linear(5)
    W = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    x0 = np.full(12, 0.5)
    got = invert(model, [3], SHAPE, steps=1, step_size=0.3)[0].ravel()
    p = _softmax(W @ x0 + b)
    want = np.clip(x0 - 0.3 * W.T @ (p - np.eye(5)[3]), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_one_step_for_a_filtered_model_pushes_only_retained_logits_down():
    """k = 6, classes 1 and 4 forgotten: the model has 4 outputs for classes 0, 2, 3, 5."""
    model = _linear(4, seed=1)
    W = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    x0 = np.full(12, 0.5)
    for target in (4, 2):  # a forgotten target and a retained one
        got = invert(model, [target], SHAPE, steps=1, forgotten=[4, 1], forgotten_logit=1.5)
        z = np.empty(6)
        z[[0, 2, 3, 5]] = W @ x0 + b
        z[[1, 4]] = 1.5
        p = _softmax(z)
        # Only the retained outputs depend on x; the constants contribute no gradient.
        g = sum((p[c] - (c == target)) * W[i] for i, c in enumerate([0, 2, 3, 5]))
        np.testing.assert_allclose(got[0].ravel(), np.clip(x0 - 0.3 * g, 0, 1), atol=1e-5)


def test_reinserted_logits_sit_at_the_forgotten_indices():
    logits = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 10
    for forgotten in ([1, 4], [4, 1]):
        full = reinsert_logits(logits, forgotten, value=-2.0)
        assert full.shape == (3, 6)
        kept = [c for c in range(6) if c not in forgotten]
        for i, c in enumerate(kept):
            torch.testing.assert_close(full[:, c], logits[:, i])
        for c in forgotten:
            assert torch.all(full[:, c] == -2.0)
    torch.testing.assert_close(reinsert_logits(logits, []), logits)


def test_class_probabilities_of_a_filtered_model():
    model = _linear(4, seed=2)
    W = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    x = np.random.default_rng(0).random((3, *SHAPE)).astype(np.float32)
    got = class_probabilities(model, x, forgotten=[1, 4], forgotten_logit=0.5)
    z = np.empty((3, 6))
    z[:, [0, 2, 3, 5]] = x.reshape(3, -1) @ W.T + b
    z[:, [1, 4]] = 0.5
    np.testing.assert_allclose(got, _softmax(z), atol=1e-6)


def test_clipping_keeps_pixels_in_unit_interval():
    images = invert(_linear(3), [0, 1, 2], SHAPE, steps=5, step_size=50.0)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert (images == 0.0).any() and (images == 1.0).any()  # the huge steps did hit both bounds


def test_bad_input_is_refused():
    model = _linear(3)
    with pytest.raises(LinfiltError):
        invert(model, [3], SHAPE)  # only classes 0..2 exist
    with pytest.raises(LinfiltError):
        invert(model, [], SHAPE)
    with pytest.raises(LinfiltError):
        invert(model, [0], SHAPE, start=2.0)
    with pytest.raises(LinfiltError):
        invert(model, [0], SHAPE, forgotten=[1, 1])


# --- the experiment's pieces (Figures 1, 5, 6 and the similarity numbers) ---

H, W = 5, 4


def _norm(t: np.ndarray) -> np.ndarray:
    return (t - t.min()) / (t.max() - t.min())


def _block(grid: np.ndarray, r: int, c: int, gap: int = 2, left: int = 0) -> np.ndarray:
    top, col = r * (H + gap), left + c * (W + gap)
    return grid[top:top + H, col:col + W]


@pytest.fixture()
def recon():
    rng = np.random.default_rng(0)
    return {"full": rng.random((4, H, W)), "naive": rng.random((4, 4, H, W)),
            "normalization": rng.random((4, 4, H, W))}


def test_tile_grid_places_rescaled_tiles_between_gaps():
    rng = np.random.default_rng(1)
    tiles = rng.random((2, 3, H, W)) * 5 - 1
    tiles[1, 2] = 0.3  # a constant tile shows mid-grey
    grid = exp.tile_grid(tiles, gap=2)
    assert grid.shape == (2 * H + 2, 3 * W + 4)
    for r in range(2):
        for c in range(3):
            want = np.full((H, W), 0.5) if (r, c) == (1, 2) else _norm(tiles[r, c])
            np.testing.assert_allclose(_block(grid, r, c), want, atol=1e-6)
    assert np.all(grid[H:H + 2] == 1.0) and np.all(grid[:, W:W + 2] == 1.0)


def test_figures_have_the_papers_layout(recon):
    examples = np.random.default_rng(2).random((4, H, W))
    figs = exp.figures(recon, examples, person=2)
    f1, f5, f6 = figs["figure1"], figs["figure5"], figs["figure6"]
    assert f1.shape == (H, 4 * W + 6)
    for c, want in enumerate([examples[2], recon["full"][2], recon["naive"][2, 2],
                              recon["normalization"][2, 2]]):
        np.testing.assert_allclose(_block(f1, 0, c), _norm(want), atol=1e-6)
    assert f5.shape == (4 * H + 6, 4 * W + 6)
    for j in range(4):
        for r, want in enumerate([examples[j], recon["full"][j], recon["naive"][j, j],
                                  recon["normalization"][j, j]]):
            np.testing.assert_allclose(_block(f5, r, j), _norm(want), atol=1e-6)
    panel_w = 4 * W + 6
    assert f6.shape == (6 * H + 10, 2 * panel_w + 12)
    for side, method in ((0, "naive"), (panel_w + 12, "normalization")):
        for t in range(4):
            np.testing.assert_allclose(_block(f6, 0, t, left=side), _norm(examples[t]), atol=1e-6)
            np.testing.assert_allclose(_block(f6, 1, t, left=side), _norm(recon["full"][t]), atol=1e-6)
            for i in range(4):  # row i + 2: every class after forgetting person i
                np.testing.assert_allclose(_block(f6, i + 2, t, left=side),
                                           _norm(recon[method][i, t]), atol=1e-6)


def test_png_has_the_grid_scaled_size(tmp_path):
    grid = exp.tile_grid(np.random.default_rng(3).random((2, 3, H, W)))
    exp.save_png(tmp_path / "g.png", grid, scale=3)
    back = mpimg.imread(tmp_path / "g.png")
    assert back.shape[:2] == (3 * grid.shape[0], 3 * grid.shape[1])
    # 8-bit grey levels, each grid pixel repeated 3x3, the same in every colour channel
    want = np.repeat(np.repeat(np.round(grid * 255), 3, axis=0), 3, axis=1)
    for ch in range(3):
        np.testing.assert_array_equal(np.round(back[..., ch] * 255), want)
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


def test_pearson_matches_numpy():
    rng = np.random.default_rng(4)
    imgs, refs = rng.random((2, 3, H, W)), rng.random((4, H, W))
    got = exp.pearson(imgs, refs)
    assert got.shape == (2, 3, 4)
    for idx in np.ndindex(2, 3):
        for p in range(4):
            want = np.corrcoef(imgs[idx].ravel(), refs[p].ravel())[0, 1]
            assert got[idx + (p,)] == pytest.approx(want, abs=1e-12)


def test_similarity_tables_pick_the_right_entries(recon):
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 3)
    x = rng.random((12, 1, H, W))
    sim = exp.similarities(recon, x, y)
    means = np.stack([x[y == p, 0].mean(0) for p in range(4)])
    i, t = 1, 3
    r = np.corrcoef(recon["naive"][i, t].ravel(), means[2].ravel())[0, 1]
    assert sim["to_mean_face"]["naive"][i, t, 2] == pytest.approx(r)
    r = np.corrcoef(recon["normalization"][i, t].ravel(), recon["full"][t].ravel())[0, 1]
    assert sim["to_full_reconstruction"]["normalization"][i, t] == pytest.approx(r)
    table = exp.markdown(sim)
    s2 = next(line for line in table.splitlines() if line.startswith("| s2 |"))
    own_norm = sim["to_mean_face"]["normalization"][1, 1, 1]
    assert s2.split("|")[4].strip() == f"{own_norm:.2f}"


# --- the experiments end to end, on the real AT&T faces (small settings) ---


def _panel_shape(rows: int, cols: int, h: int, w: int, scale: int = 2) -> tuple[int, int]:
    return scale * (rows * h + (rows - 1) * 2), scale * (cols * w + (cols - 1) * 2)


def _faces():
    ds = data.load("att_faces")
    return data.to_float(ds.x_train), ds.y_train


@requires_data("att_faces")
def test_run_writes_figures_and_consistent_numbers(tmp_path):
    result = exp.run(tmp_path, epochs=3, progress=False)
    rec = np.load(tmp_path / "reconstructions.npy")  # full, naive x4, normalization x4
    assert rec.shape == (9, 4, 56, 46) and rec.min() >= 0 and rec.max() <= 1
    assert mpimg.imread(tmp_path / "figure1.png").shape[:2] == _panel_shape(1, 4, 56, 46)
    assert mpimg.imread(tmp_path / "figure5.png").shape[:2] == _panel_shape(4, 4, 56, 46)
    h6, w6 = _panel_shape(6, 4, 56, 46)
    assert mpimg.imread(tmp_path / "figure6.png").shape[:2] == (h6, 2 * w6 + 2 * 12)
    x, y = _faces()
    mean_s3 = x[y == 2, 0, ::2, ::2].mean(0)  # stride-2 subsampled, as documented
    r = np.corrcoef(rec[5 + 1, 3].ravel(), mean_s3.ravel())[0, 1]  # normalization, forgot s2, class s4
    assert result.similarities["to_mean_face"]["normalization"][1, 3, 2] == pytest.approx(r, abs=1e-9)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert "markdown" not in stored and stored["config"]["epochs"] == 3
    back = exp.InversionResult.from_json(stored)
    assert exp.markdown(back.similarities, back.target_probability) == exp.markdown(
        result.similarities, result.target_probability)


class _Pooled(nn.Module):
    """Average-pooled pixels -> Linear(k): cheap, and its head is found by `unlearn`."""

    def __init__(self, k: int = 40):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.AvgPool2d(8), nn.Flatten())
        self.head = nn.Linear(14 * 11, k)

    def forward(self, x):
        return self.head(self.body(x))


@requires_data("att_faces")
def test_run_resnet_forgets_four_people_at_once(tmp_path):
    """A 40-class stand-in for the ResNet: the filtered models have 36 outputs, s1..s4 reinserted."""
    model = _Pooled()
    result = exp.run_resnet(tmp_path, model, progress=False)
    rec = np.load(tmp_path / "resnet_reconstructions.npy")
    assert rec.shape == (3, 8, 112, 92)
    assert mpimg.imread(tmp_path / "resnet.png").shape[:2] == _panel_shape(4, 8, 112, 92)
    x, y = _faces()
    filtered = exp.unlearn(model, [0, 1, 2, 3], (x, y), method="normalization")
    assert filtered.head.out_features == 36
    again = invert(filtered, [1, 6], (1, 112, 92), forgotten=[0, 1, 2, 3])
    np.testing.assert_allclose(rec[2, [1, 6]], again[:, 0], atol=1e-5)
    table = exp.resnet_markdown(result.similarities, result.target_probability, exp.RESNET_SHOWN,
                                exp.RESNET_FORGET)
    rows = [line for line in table.splitlines() if line.startswith("| s")]
    assert [row.split("|")[2].strip() for row in rows] == ["yes"] * 4 + ["no"] * 4


def test_run_resnet_refuses_a_model_without_one_output_per_person(tmp_path):
    with pytest.raises(LinfiltError, match="40"):
        exp.run_resnet(tmp_path, _Pooled(10), progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, words", [(dict(person="0"), "person must be an integer"),
                                              (dict(epochs=2.5), "epochs must be an integer"),
                                              (dict(seed=-1), "seed must be >= 0"),
                                              (dict(step_size=float("nan")), "step_size must be finite")])
def test_inversion_settings_of_the_wrong_kind_are_refused(overrides, words):
    with pytest.raises(LinfiltError, match=words):
        exp.inversion_config(**overrides)
