"""Figures 1, 5 and 6 of the paper: model inversion before and after unlearning a person, with a
number for what the eye sees.

The setup is the authors' (`linfilt.paper.settings.INVERSION` holds it): a sigmoid MLP (1000, 300)
trained 150 epochs (batch 32, Adam 1e-3) on the 40 images of four AT&T people, downsampled by 2 to
56x46; one filtered model per person by naive and by normalizing filtration, A estimated from those
training faces; inversion from grey (`linfilt.paper.inversion`). Choices of ours:

- people s1..s4 (labels 0..3); the authors' four came from a directory listing;
- downsampling by stride-2 subsampling (every second row and column), which is what the authors'
  notebook does, not 2x2 mean pooling;
- the number: Pearson correlation of a reconstruction with each person's mean training face.
  Pearson ignores brightness and contrast (the figures rescale every tile to its own min..max, as
  the authors' did, so the eye ignores them too) and has no window or constants to tune, unlike
  SSIM, whose luminance and contrast terms would score differences the figures do not show.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import image as mpimg
from torch import nn
from tqdm.auto import tqdm

from linfilt import atomic
from linfilt.paper import data
from linfilt.errors import DataNotFoundError, LinfiltError
from linfilt.paper.inversion import class_probabilities, invert
from linfilt.modelio import load_model
from linfilt.paper.models import build, initialize
from linfilt.paper.population import PopulationConfig, fit, predict_logits, run_dir, train_population
from linfilt.paper.settings import INVERSION, INVERSION_RESNET
from linfilt.pytorch import unlearn
from linfilt.validation import check_float, check_int, is_int

PEOPLE = INVERSION["people"]
METHODS = ("naive", "normalization")  # the columns of the figures and tables
# Table 3 unlearns s1..s4 together from the 40-person ResNet; s5..s8 are shown as retained people.
RESNET_FORGET = INVERSION_RESNET["forget"]
RESNET_SHOWN = INVERSION_RESNET["shown"]
# Bump when a change here changes what a config computes: stored results then stop matching.
VERSION = 1
_INVERT = ("steps", "step_size", "start", "forgotten_logit")  # the keywords of `invert`


def inversion_config(**overrides: Any) -> dict[str, Any]:
    """Everything that changes the inversion's numbers: `settings.INVERSION` with `overrides`
    (None keeps the setting), JSON-ready."""
    unknown = sorted(set(overrides) - set(INVERSION))
    if unknown:
        raise LinfiltError(f"unknown inversion setting(s) {unknown}; known: {sorted(INVERSION)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():  # of the kind of the default: person="0" is no person
        default = INVERSION[key]
        if is_int(default):
            check_int(value, key, minimum=0)
        elif isinstance(default, float):
            check_float(value, key)
    return json.loads(json.dumps({**INVERSION, **given}))


def result_dir(out: str | os.PathLike, config: Mapping[str, Any], device: str) -> Path:
    """`<out>/inversion/<hash of the config>-<device type>`, as experiments are kept."""
    key = json.dumps({**config, "version": VERSION}, sort_keys=True)
    return Path(out) / "inversion" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}-{device.split(':')[0]}"


@dataclass(frozen=True)
class InversionResult:
    """The numbers of one inversion run: Pearson correlations (`similarities`, see that function),
    the probability each reconstruction gets for its own class (see `reconstruct`), the model's
    training accuracy, and the config they were made with."""

    config: Mapping[str, Any]
    train_accuracy: float
    similarities: Mapping[str, Mapping[str, np.ndarray]]
    target_probability: Mapping[str, np.ndarray]

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "train_accuracy": self.train_accuracy,
                **{f"pearson_{key}": {m: v.tolist() for m, v in self.similarities[key].items()}
                   for key in ("to_mean_face", "to_full_reconstruction")},
                "target_probability": {m: v.tolist() for m, v in self.target_probability.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InversionResult:
        """The inverse of `to_json`; LinfiltError if `d` is not one."""
        try:
            sim = {key: {m: np.asarray(v, dtype=np.float64) for m, v in d[f"pearson_{key}"].items()}
                   for key in ("to_mean_face", "to_full_reconstruction")}
            return cls(d["config"], float(d["train_accuracy"]), sim,
                       {m: np.asarray(v, dtype=np.float64) for m, v in d["target_probability"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LinfiltError(f"not an inversion result: {exc!r}") from None


def load_faces(people: int = PEOPLE, root: str | os.PathLike | None = None,
               downsample: int = INVERSION["downsample"]) -> tuple[np.ndarray, np.ndarray]:
    """The first `people` AT&T people (s1.., labels 0..people-1): float32 (N, 1, 112 / downsample,
    92 / downsample), int64 labels."""
    ds = data.load("att_faces", root=root)
    keep = ds.y_train < people
    # subsampling (every `downsample`-th row and column), as the authors' notebook did
    x = data.to_float(ds.x_train[keep])[:, :, ::downsample, ::downsample]
    return np.ascontiguousarray(x), ds.y_train[keep].astype(np.int64)


def train_model(x: np.ndarray, y: np.ndarray, config: Mapping[str, Any], device: str,
                progress: bool) -> nn.Module:
    """The inversion MLP, initialised from config["seed"] alone and trained on (x, y)."""
    model = build("mlp", int(y.max()) + 1, in_features=int(np.prod(x.shape[1:])),
                  hidden=config["hidden"], activation=config["activation"])
    initialize(model, generator=torch.Generator().manual_seed(config["seed"]))
    return fit(model, x, y, config["epochs"], config["batch_size"], lr=config["lr"],
               seed=config["seed"], device=device, progress=progress)


def reconstruct(model: nn.Module, x: np.ndarray, y: np.ndarray, progress: bool = False,
                config: Mapping[str, Any] = INVERSION) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reconstructions of every class and the probability each gets for its target class, with
    the inversion settings of `config`.

    "full": (k, H, W) by the trained model; per method (k forgotten, k targets, H, W): every class
    after filtering out the first index. Probabilities: (k,) and (k, k) alike."""
    k, shape = int(y.max()) + 1, x.shape[1:]
    kw = {key: config[key] for key in _INVERT}
    full = invert(model, range(k), shape, **kw)
    recon = {"full": full[:, 0]}
    prob = {"full": class_probabilities(model, full)[np.arange(k), np.arange(k)]}
    bar = tqdm(total=len(METHODS) * k, desc="invert", disable=not progress)
    for method in METHODS:
        rows, probs = [], []
        for i in range(k):
            filtered = unlearn(model, [i], (x, y), method=method)
            images = invert(filtered, range(k), shape, forgotten=[i], **kw)
            p = class_probabilities(filtered, images, [i], kw["forgotten_logit"])
            rows.append(images[:, 0])
            probs.append(p[np.arange(k), np.arange(k)])
            bar.update()
        recon[method], prob[method] = np.stack(rows), np.stack(probs)
    bar.close()
    return recon, prob


def pearson(images: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Pearson correlation of every image (..., H, W) with every reference (r, H, W): (..., r)."""
    a = images.reshape(*images.shape[:-2], -1).astype(np.float64)
    b = refs.reshape(len(refs), -1).astype(np.float64)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant image has no correlation
        return (a @ b.T) / (na[..., None] * nb)


def similarities(recon: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict:
    """Every number of the tables: correlations with the mean faces and with the full model's
    reconstruction, per condition."""
    k = int(y.max()) + 1
    means = np.stack([x[y == p, 0].mean(0) for p in range(k)])
    full = recon["full"]
    out = {"to_mean_face": {"full": pearson(full, means)}, "to_full_reconstruction": {}}
    for m in METHODS:
        out["to_mean_face"][m] = pearson(recon[m], means)  # (forgotten i, target t, person p)
        out["to_full_reconstruction"][m] = np.stack(
            [np.diagonal(pearson(recon[m][i], full)) for i in range(k)])  # (i, t)
    return out


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def markdown(sim: dict, prob: dict[str, np.ndarray] | None = None) -> str:
    """Two tables: the forgotten person's reconstruction, and the retained people's; with `prob`
    (see `reconstruct`) a line on how sure the model is of each reconstruction's class."""
    full = sim["to_mean_face"]["full"]
    k = len(full)
    own = lambda m, i, t: sim["to_mean_face"][m][i, t, t]  # noqa: E731
    other = lambda m, i, t: np.delete(sim["to_mean_face"][m][i, t], t).max()  # noqa: E731
    change = sim["to_full_reconstruction"]

    head1 = ("| forgotten | r own, full | r own, naive | r own, norm. | max r other, full "
             "| max r other, naive | max r other, norm. | r to full recon., naive "
             "| r to full recon., norm. |\n|---" + "|---:" * 8 + "|\n")
    rows1 = []
    for i in range(k):
        vals = [full[i, i], own("naive", i, i), own("normalization", i, i),
                np.delete(full[i], i).max(), other("naive", i, i), other("normalization", i, i),
                change["naive"][i, i], change["normalization"][i, i]]
        rows1.append(vals)
    table1 = head1 + "".join(
        f"| s{i + 1} | " + " | ".join(map(_fmt, v)) + " |\n" for i, v in enumerate(rows1))
    table1 += "| mean | " + " | ".join(map(_fmt, np.mean(rows1, 0))) + " |\n"

    head2 = ("| forgotten | r own, full | r own, naive | r own, norm. | r to full recon., naive "
             "| r to full recon., norm. |\n|---" + "|---:" * 5 + "|\n")
    rows2 = []
    for i in range(k):
        kept = [t for t in range(k) if t != i]
        rows2.append([np.mean([full[t, t] for t in kept]),
                      np.mean([own("naive", i, t) for t in kept]),
                      np.mean([own("normalization", i, t) for t in kept]),
                      np.mean(change["naive"][i, kept]), np.mean(change["normalization"][i, kept])])
    table2 = head2 + "".join(
        f"| s{i + 1} | " + " | ".join(map(_fmt, v)) + " |\n" for i, v in enumerate(rows2))
    table2 += "| mean | " + " | ".join(map(_fmt, np.mean(rows2, 0))) + " |\n"

    text = (
        "Pearson correlation r of a reconstruction with a person's mean training face (own: the "
        "reconstructed person; other: the highest among the other people), and with the same "
        "class' reconstruction by the full model (1 = unchanged).\n\n"
        "**The forgotten person's reconstruction**\n\n" + table1 +
        "\n**The other people's reconstructions (mean over the retained three)**\n\n" + table2
    )
    if prob is not None:
        off = ~np.eye(k, dtype=bool)
        text += "\n" + _probability_line(
            {"full model": (prob["full"], prob["full"])}
            | {m: (np.diagonal(prob[m]), prob[m][off]) for m in METHODS})
    return text


def _probability_line(groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Mean softmax probability of the reconstructed class, for forgotten and retained targets."""
    parts = [f"{name} {np.mean(f):.2f} / {np.mean(r):.2f}" for name, (f, r) in groups.items()]
    return ("Mean probability the model gives a reconstruction's own class (forgotten person / "
            "retained people; the forgotten class' logit is the re-inserted constant): "
            + "; ".join(parts) + ".\n")


def tile_grid(tiles: np.ndarray, gap: int = 2, fill: float = 1.0) -> np.ndarray:
    """(rows, cols, H, W) -> one 2-D image, each tile rescaled to its own min..max (as the authors
    displayed them; a constant tile shows mid-grey) and separated by `gap` pixels of `fill`."""
    rows, cols, h, w = tiles.shape
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), fill, np.float32)
    for r in range(rows):
        for c in range(cols):
            t = tiles[r, c].astype(np.float32)
            span = float(t.max() - t.min())
            t = (t - t.min()) / span if span > 0 else np.full_like(t, 0.5)
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 12, fill: float = 1.0) -> np.ndarray:
    """Two equally tall grids with a wider gap between them."""
    return np.concatenate([left, np.full((left.shape[0], gap), fill, np.float32), right], axis=1)


def figures(recon: dict[str, np.ndarray], examples: np.ndarray, person: int = 0) -> dict[str, np.ndarray]:
    """The three grids as arrays; `examples` (k, H, W) holds one training image per person."""
    k = len(examples)
    diag = lambda m: recon[m][np.arange(k), np.arange(k)]  # noqa: E731  (t = forgotten i)
    fig1 = np.stack([examples[person], recon["full"][person],
                     recon["naive"][person, person], recon["normalization"][person, person]])
    fig5 = np.stack([examples, recon["full"], diag("naive"), diag("normalization")])
    panel = lambda m: tile_grid(np.concatenate([examples[None], recon["full"][None], recon[m]]))  # noqa: E731
    return {"figure1": tile_grid(fig1[None]), "figure5": tile_grid(fig5),
            "figure6": side_by_side(panel("naive"), panel("normalization"))}


def save_png(path: str | os.PathLike, grid: np.ndarray, scale: int = 2) -> None:
    """A grey-scale PNG of exactly (scale * H, scale * W) pixels (nearest-neighbour enlarged)."""
    grey = np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)
    big = np.kron(grey, np.ones((scale, scale), np.uint8))
    with atomic.atomic_path(path) as tmp:  # 8-bit RGB: exact grey levels, no colour-map bins
        mpimg.imsave(tmp, np.repeat(big[..., None], 3, axis=2), format="png")


def run(out_dir: str | os.PathLike, *, epochs: int | None = None, device: str = "cpu",
        seed: int | None = None, progress: bool = True, person: int | None = None,
        root: str | os.PathLike | None = None) -> InversionResult:
    """Train, unlearn each person, invert, write figure{1,5,6}.png, reconstructions.npy and
    metrics.json under `out_dir`; return the numbers. `epochs`, `seed` and `person` (Figure 1's)
    override `settings.INVERSION` (None keeps it).

    reconstructions.npy is float32 (9, 4, 56, 46), [condition, class]: condition 0 the full model,
    1 + i naive and 5 + i normalizing filtration with person i forgotten.
    """
    config = inversion_config(epochs=epochs, seed=seed, person=person)
    person = config["person"]
    if not 0 <= person < config["people"]:
        raise LinfiltError(f"person must be 0..{config['people'] - 1} (s1..s{config['people']}), got {person}")
    out_dir = Path(out_dir)
    x, y = load_faces(config["people"], root, config["downsample"])
    model = train_model(x, y, config, device, progress)
    recon, prob = reconstruct(model, x, y, progress=progress, config=config)
    examples = np.stack([x[y == p, 0][0] for p in range(config["people"])])
    for name, grid in figures(recon, examples, person).items():
        save_png(out_dir / f"{name}.png", grid)
    atomic.save_npy(out_dir / "reconstructions.npy",
                    np.concatenate([recon["full"][None], recon["naive"], recon["normalization"]]))
    result = InversionResult(config, float((predict_logits(model, x, device).argmax(1) == y).mean()),
                             similarities(recon, x, y), prob)
    atomic.write_json(out_dir / "metrics.json", result.to_json())
    return result


def resnet_model(source: nn.Module | str | os.PathLike | None, model_index: int = 0, seed: int = 0,
                 device: str = "cpu", progress: bool = True, cache: str | os.PathLike = "runs") -> nn.Module:
    """A trained 40-person AT&T ResNet: `source` itself (a module), model `model_index` of a seen
    population folder (`<run>/models/seen/<j>.safetensors`, written with save_models=True), or,
    when None, that model trained by the population engine with Table 3's settings (cached under
    `cache`; it is the same model as that population's model `model_index`)."""
    if isinstance(source, nn.Module):
        return source.to(device)
    if source is None:
        cfg = PopulationConfig.protocol("att_faces", RESNET_FORGET, models=model_index + 1,
                                        seed=seed, device=device)
        train_population(cfg, "seen", out=cache, save_models=True, progress=progress)
        source = run_dir(cfg, cache)
    path = Path(source) / "models" / "seen" / f"{model_index:05d}.safetensors"
    if not path.is_file():
        raise DataNotFoundError(f"no saved model {path}: train the population with save_models=True, "
                                "or pass no source to train this one model")
    return load_model(path)[0].to(device)


def resnet_markdown(sim: dict, prob: dict[str, np.ndarray], shown: tuple[int, ...],
                    forget: tuple[int, ...]) -> str:
    """One row per shown person: similarity to own / other mean faces and to the full model's
    reconstruction, for the full model and after naive and normalizing filtration of `forget`."""
    mf, ch = sim["to_mean_face"], sim["to_full_reconstruction"]
    gone = np.isin(shown, forget)
    head = ("| person | forgotten | r own, full | r own, naive | r own, norm. | max r other, full "
            "| max r other, naive | max r other, norm. | r to full recon., naive "
            "| r to full recon., norm. |\n|---|---" + "|---:" * 8 + "|\n")
    rows = {True: [], False: []}
    lines = []
    for t, p in enumerate(shown):
        others = [q for q in range(mf["full"].shape[-1]) if q != p]
        vals = [mf["full"][t, p], mf["naive"][t, p], mf["normalization"][t, p],
                mf["full"][t, others].max(), mf["naive"][t, others].max(),
                mf["normalization"][t, others].max(), ch["naive"][t], ch["normalization"][t]]
        rows[p in forget].append(vals)
        lines.append(f"| s{p + 1} | {'yes' if p in forget else 'no'} | " + " | ".join(map(_fmt, vals)) + " |\n")
    for flag, name in ((True, "forgotten"), (False, "retained")):
        if rows[flag]:
            lines.append(f"| mean | {name} | " + " | ".join(map(_fmt, np.mean(rows[flag], 0))) + " |\n")
    return (
        "Pearson correlation r of each reconstruction with the person's own mean face and the highest "
        f"with any of the other {mf['full'].shape[-1] - 1} people's, and with the full model's "
        "reconstruction of the same person.\n\n" + head + "".join(lines) + "\n"
        + _probability_line({name: (prob[name][gone], prob[name][~gone]) for name in prob})
    )


def run_resnet(out_dir: str | os.PathLike, source: nn.Module | str | os.PathLike | None = None, *,
               model_index: int = 0, device: str = "cpu", seed: int = 0, progress: bool = True,
               cache: str | os.PathLike = "runs", root: str | os.PathLike | None = None) -> dict:
    """The same inversion against the AT&T ResNet of Table 3 (see `resnet_model` for `source`):
    s1..s4 unlearned together by naive and by normalizing filtration (A from all 400 faces, the
    full model's test set), s1..s8 reconstructed at 112x92. Writes resnet.png (rows: a training
    image, full model, naive, normalization; columns s1..s8), resnet_reconstructions.npy and
    resnet_metrics.json; returns the numbers (`resnet_markdown` renders them)."""
    out_dir = Path(out_dir)
    ds = data.load("att_faces", root=root)
    x, y = data.to_float(ds.x_train), ds.y_train.astype(np.int64)
    model = resnet_model(source, model_index, seed, device, progress, cache)
    k = int(y.max()) + 1
    outputs = predict_logits(model, x[:1], device).shape[1]
    if outputs != k:
        raise LinfiltError(f"the model has {outputs} outputs; the AT&T ResNet needs one per person ({k})")
    kw = {key: INVERSION[key] for key in _INVERT}
    shown = list(RESNET_SHOWN)
    images = invert(model, shown, x.shape[1:], **kw)
    recon = {"full": images[:, 0]}
    prob = {"full": class_probabilities(model, images)[np.arange(len(shown)), shown]}
    for method in METHODS:
        filtered = unlearn(model, list(RESNET_FORGET), (x, y), method=method)
        images = invert(filtered, shown, x.shape[1:], forgotten=RESNET_FORGET, **kw)
        recon[method] = images[:, 0]
        prob[method] = class_probabilities(filtered, images, RESNET_FORGET, kw["forgotten_logit"]
                                           )[np.arange(len(shown)), shown]
    means = np.stack([x[y == p, 0].mean(0) for p in range(k)])
    sim = {"to_mean_face": {m: pearson(r, means) for m, r in recon.items()},
           "to_full_reconstruction": {m: np.diagonal(pearson(recon[m], recon["full"]))
                                      for m in METHODS}}
    examples = np.stack([x[y == p, 0][0] for p in shown])
    save_png(out_dir / "resnet.png", tile_grid(np.stack([examples, recon["full"], recon["naive"],
                                                         recon["normalization"]])))
    atomic.save_npy(out_dir / "resnet_reconstructions.npy",
                    np.stack([recon["full"], recon["naive"], recon["normalization"]]))
    result = InversionResult(
        {"model_index": model_index, "seed": seed, "forgotten": [f"s{p + 1}" for p in RESNET_FORGET],
         "shown": [f"s{p + 1}" for p in shown],
         "source": ("module" if isinstance(source, nn.Module) else str(source)
                    if source is not None else "trained here by the population engine"), **kw},
        float((predict_logits(model, x, device).argmax(1) == y).mean()), sim, prob)
    atomic.write_json(out_dir / "resnet_metrics.json", result.to_json())
    return result
