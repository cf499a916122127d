"""Hugging Face transformers classifiers (tiny configs, random weights, a few training steps):
ModelOutput and tuple outputs, dict batches, configs that describe the new outputs, and
save_pretrained -> from_pretrained round trips."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import linfilt
from linfilt import filtration_matrix

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

K = 5
NAMES = ["ant", "bee", "cat", "dog", "eel"]


def _config(kind):
    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                  num_labels=K, id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)})
    if kind == "bert":
        return transformers.BertConfig(vocab_size=40, max_position_embeddings=16, **common)
    return transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, **common)


def _samples(kind, n_per_class=24, seed=0):
    """A list of dict samples whose class shows in the input (a token, or a bright patch)."""
    rng = np.random.default_rng(seed)
    out = []
    for j in np.repeat(np.arange(K), n_per_class):
        if kind == "bert":
            ids = rng.integers(10, 40, 8)
            ids[0], ids[1] = 1, 2 + j
            out.append({"input_ids": torch.tensor(ids), "attention_mask": torch.ones(8, dtype=torch.int64),
                        "labels": torch.tensor(j)})
        else:
            img = rng.normal(0, 1, (1, 8, 8)).astype(np.float32)
            img[0, j % 2 * 4:(j % 2 + 1) * 4, (j // 2) * 2:(j // 2) * 2 + 4] += 1 + j
            out.append({"pixel_values": torch.from_numpy(img), "labels": torch.tensor(j)})
    return out


def _model(kind):
    torch.manual_seed(0)
    cls = transformers.BertForSequenceClassification if kind == "bert" else transformers.ViTForImageClassification
    model = cls(_config(kind))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for batch in DataLoader(_samples(kind, seed=1), batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(0)):
        opt.zero_grad()
        model(**batch).loss.backward()  # labels in the batch: the model's own loss
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", params=["bert", "vit"])
def setup(request):
    kind = request.param
    data = _samples(kind)
    return kind, _model(kind), data, DataLoader(data, batch_size=32)


def _inputs(data):
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits.double()


def test_filtered_logits_and_config(setup, tmp_path):
    kind, model, data, loader = setup
    inputs, y = _inputs(data)
    new = linfilt.unlearn(model, [1], loader)
    L = _logits(model, inputs).numpy()
    F = filtration_matrix(np.stack([L[y.numpy() == j].mean(0) for j in range(K)], axis=1), [1])
    np.testing.assert_allclose(_logits(new, inputs).numpy(), L @ F.T, rtol=1e-4, atol=1e-4)
    assert new.config.num_labels == 4 and model.config.num_labels == K
    assert new.config.id2label == {0: "ant", 1: "cat", 2: "dog", 3: "eel"}
    assert new.config.label2id == {"ant": 0, "cat": 1, "dog": 2, "eel": 3}
    assert new.classifier.out_features == 4 and linfilt.classes_of(new) == (0, 2, 3, 4)
    # labels= in the forward pass takes output positions of the new model
    pos = torch.tensor([0, -1, 1, 2, 3])[y]
    live = y != 1
    assert torch.isfinite(new(**{k: v[live] for k, v in inputs.items()}, labels=pos[live]).loss)
    # save_pretrained -> from_pretrained: the same model, its class ids in the config
    new.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(_logits(loaded, inputs), _logits(new, inputs))
    assert loaded.config.id2label == new.config.id2label and linfilt.classes_of(loaded) == (0, 2, 3, 4)
    pred = linfilt.predict_ids(loaded, inputs)
    assert torch.equal(pred, torch.tensor([0, 2, 3, 4])[_logits(new, inputs).argmax(1)])
    names = [loaded.config.id2label[int(i)] for i in _logits(loaded, inputs).argmax(1)]
    assert names == [NAMES[int(i)] for i in pred]
    # a later request on the loaded model reads the ids from its config: class 3 is "dog"
    rest = [d for d in data if int(d["labels"]) != 1]
    again = linfilt.unlearn(loaded, [3], DataLoader(rest, batch_size=32))
    assert linfilt.classes_of(again) == (0, 2, 4)
    assert again.config.id2label == {0: "ant", 1: "cat", 2: "eel"}
    # the steps travel in the config too: class 1's samples are skipped, not refused as unknown
    assert [s["forgot"] for s in loaded.config.linfilt_steps] == [[1]]
    with_forgotten = linfilt.unlearn(loaded, [3], loader)
    assert [s.forgot for s in with_forgotten.linfilt_filtration.steps] == [(1,), (3,)]
    torch.testing.assert_close(_logits(with_forgotten, inputs), _logits(again, inputs), rtol=0, atol=0)


class AsTuple(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        return self.model(**inputs, return_dict=False)


def test_tuple_outputs_give_the_same_model(setup):
    kind, model, data, loader = setup
    want = linfilt.unlearn(model, [1], loader).classifier.weight
    got = linfilt.unlearn(AsTuple(model), [1], loader).model.classifier.weight
    assert torch.equal(got, want)


def test_keep_outputs_loads_into_the_original_class(setup, tmp_path):
    kind, model, data, loader = setup
    inputs, y = _inputs(data)
    new = linfilt.unlearn(model, [1], loader, keep_outputs=True)
    assert new.config.num_labels == K and new.config.id2label == dict(enumerate(NAMES))
    new.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    L = _logits(loaded, inputs)
    assert torch.all(L[:, 1] == torch.finfo(torch.float32).min)
    short = linfilt.unlearn(model, [1], loader)
    assert torch.equal(L.argmax(1), linfilt.predict_ids(short, inputs))
    assert torch.isfinite(loaded(**{k: v[y != 1] for k, v in inputs.items()}, labels=y[y != 1]).loss)


def test_dict_batches_without_labels_are_refused(setup):
    kind, model, data, _ = setup
    unlabeled = [{k: v for k, v in d.items() if k != "labels"} for d in data]
    with pytest.raises(linfilt.LinfiltError, match="a dict batch needs its labels under 'labels'"):
        linfilt.unlearn(model, [1], DataLoader(unlabeled, batch_size=32))


def _hf_dataset(data, kind):
    """The samples as a `datasets.Dataset` with a 'label' column and two columns the model does not
    take (a text and an index), which must be left out."""
    datasets = pytest.importorskip("datasets")
    columns = {k: [d[k].numpy() for d in data] for k in data[0] if k != "labels"}
    return datasets.Dataset.from_dict({**columns, "label": [int(d["labels"]) for d in data],
                                       "text": [f"sample {i}" for i in range(len(data))],
                                       "idx": list(range(len(data)))})


def test_a_datasets_dataset_gives_the_dataloaders_model(setup):
    kind, model, data, loader = setup
    want = linfilt.unlearn(model, [1], loader)
    got = linfilt.unlearn(model, [1], _hf_dataset(data, kind), batch_size=32)
    torch.testing.assert_close(got.classifier.weight, want.classifier.weight, rtol=1e-6, atol=1e-7)
    assert got.config.id2label == want.config.id2label and linfilt.classes_of(got) == (0, 2, 3, 4)


@pytest.fixture(scope="module")
def bert():
    data = _samples("bert")
    return _model("bert"), DataLoader(data, batch_size=32)


def test_datasets_that_cannot_be_used_are_refused(bert):
    model, _ = bert
    datasets = pytest.importorskip("datasets")
    ragged = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [1, 2]] * 5, "labels": list(range(5)) * 2})
    with pytest.raises(linfilt.LinfiltError, match="pad them to one length"):
        linfilt.unlearn(model, [1], ragged)
    unlabeled = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4})
    with pytest.raises(linfilt.LinfiltError, match="'labels' or 'label' column"):
        linfilt.unlearn(model, [1], unlabeled)
    foreign = datasets.Dataset.from_dict({"words": [[1, 2]] * 4, "label": [0, 1, 2, 3]})
    with pytest.raises(linfilt.LinfiltError, match="none of the dataset's columns .* is a named input"):
        linfilt.unlearn(model, [1], foreign)


def test_text_classification_pipeline_names_the_new_labels(bert, tmp_path):
    """pipeline("text-classification") on the unlearned model (and on its saved directory) gives the
    label names of the classes its outputs now are, never the forgotten one's, with their scores."""
    model, loader = bert
    # A word-level vocabulary laid out as the model was trained: [CLS] = 1, class words 2..6, noise 10..39.
    vocab = ["[PAD]", "[CLS]", *[f"c{j}" for j in range(K)], "[SEP]", "[UNK]", "[MASK]", "x",
             *[f"w{i}" for i in range(10, 40)]]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=False)
    rng = np.random.default_rng(5)
    texts = [" ".join([f"c{j}", *(f"w{i}" for i in rng.integers(10, 40, 5))]) for j in rng.integers(0, K, 40)]
    new = linfilt.unlearn(model, [1], loader)
    with torch.no_grad():
        probs = torch.softmax(new(**tokenizer(texts, return_tensors="pt")).logits.double(), dim=1).numpy()
    names = [NAMES[c] for c in linfilt.classes_of(new)]  # the name of each new output's class

    def check(classify):
        for p, result in zip(probs, classify(texts, top_k=None)):
            assert sorted(r["label"] for r in result) == sorted(names)  # every label but "bee"
            got = {r["label"]: r["score"] for r in result}
            np.testing.assert_allclose([got[n] for n in names], p, rtol=1e-5, atol=1e-6)

    check(transformers.pipeline("text-classification", model=new, tokenizer=tokenizer, device="cpu"))
    new.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    check(transformers.pipeline("text-classification", model=str(tmp_path / "model"), device="cpu"))
