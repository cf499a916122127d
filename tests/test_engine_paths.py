"""The population engine's GPU code paths, run on the CPU.

What runs only when the training data is on a CUDA device: `FASTEST["cuda"]` (the strategy `auto`
picks), the grouped ensemble in channels_last layout, cuDNN's kernel timing flag, and bf16
autocast on the GPU (`train_steps` autocasts on the data's device type, so device="cpu" takes
the same code with CPU autocast). Each test below drives that code through the same functions
with CPU tensors; nothing pretends a GPU exists.
"""
import copy

import pytest
import torch

from linfilt.errors import LinfiltError
from linfilt.paper import models
from linfilt.paper.ensemble import EnsembleConv2d, GroupedEnsemble, VmapEnsemble
from linfilt.paper.population import (STRATEGIES, PopulationConfig, _Checkpoint, _resume, _saver,
                                      train_models)
from linfilt.paper.settings import FASTEST, LR
from linfilt.paper.training import train_steps

M, K = 3, 5
SEEDS = [11, 12, 13]
# name -> (architecture, settings, input shape): every architecture at a tiny size (the CNN's
# 32x32 input is fixed by its dense layer; p as in the paper's three CIFAR-10 tables)
CASES = {
    "mlp": ("mlp", {"in_features": 64, "hidden": [16, 8]}, (1, 8, 8)),
    "cnn64": ("cifar_cnn", {"p": 64}, (3, 32, 32)),
    "cnn256": ("cifar_cnn", {"p": 256}, (3, 32, 32)),
    "cnn1024": ("cifar_cnn", {"p": 1024}, (3, 32, 32)),
    "resnet": ("att_resnet", {"widths": [4, 4, 4, 4, 4]}, (1, 24, 20)),
    # odd sizes: TF "same" padding puts its extra row and column on one side
    "resnet-authors": ("att_resnet", {"widths": [4, 4, 4, 4, 4], "variant": "authors"}, (1, 23, 19)),
}
CONV_CASES = ["cnn64", "resnet", "resnet-authors"]


def _population(case, n=8):
    """M freshly initialised models and a batch of n images with labels, from fixed seeds."""
    arch, kwargs, shape = CASES[case]
    torch.manual_seed(0)
    population = [models.build(arch, K, **kwargs) for _ in range(M)]
    return population, torch.rand(n, *shape), torch.arange(n) % K


def _copies(population):
    return [copy.deepcopy(m) for m in population]


def _grouped(population, channels_last=False):
    ensemble = GroupedEnsemble(_copies(population)).train()
    ensemble.set_channels_last(channels_last)
    return ensemble


def _noise_only(model):
    """The biases of convolutions that feed a BatchNorm (every one in the authors' ResNet): their
    exact gradient is 0, so Adam's first step, lr * g / (|g| + eps), takes the sign of rounding
    noise (the reason our variant has no such bias)."""
    if not isinstance(model, models.AttResNet):
        return set()
    return {f"{name}.bias" for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Conv2d) and mod.bias is not None}


def _assert_steps_close(after, before, ref_after, what, skip=()):
    """Parameters after a step or two against the loop's. Adam moves a weight by
    lr * m / (sqrt(v) + eps) per step, about lr whatever the gradient's size, so the gradients'
    float rounding shows only where they nearly vanish or cancel (seen: under 2% of lr); a model
    trained on another's images or gradient moves its weights by up to 2 lr per step the other
    way. 10% of lr separates the two."""
    for key, ref in ref_after.items():
        if ref.is_floating_point() and key not in skip:
            torch.testing.assert_close(after[key] - before[key], ref - before[key], rtol=0,
                                       atol=0.1 * LR, msg=f"{what}: {key}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_grouped_model_is_built_of_each_models_own_tensors(case):
    population, _, _ = _population(case)
    ensemble = GroupedEnsemble(_copies(population))
    leaves = [mod for name, mod in ensemble.net.named_modules() if name and not list(mod.children())]
    assert not any(type(mod) in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.BatchNorm2d) for mod in leaves)
    for conv in (mod for mod in leaves if isinstance(mod, EnsembleConv2d)):
        assert conv.groups == M and conv.weight.shape[0] % M == 0  # M independent convolutions
    for j, model in enumerate(population):  # bit for bit, before any step
        state = ensemble.state_dicts()[j]
        assert state.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            assert torch.equal(state[key], value), key
    snapshot = [m.state_dict() for m in _copies(population)]
    with torch.no_grad():  # the ensemble owns copies: training it leaves the models alone
        for p in ensemble.parameters():
            p.add_(1.0)
    for model, ref in zip(population, snapshot):
        assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("strategy", ["grouped", "vmap"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_forward_and_step_match_the_loop(case, strategy):
    """Train-mode logits, model j on its own images, then train_models' two Adam steps (each
    model on the halves its seed draws) against the loop's."""
    population, x, y = _population(case)
    kind = GroupedEnsemble if strategy == "grouped" else VmapEnsemble
    xs = torch.rand(M, 4, *x.shape[1:])
    with torch.no_grad():
        out = kind(_copies(population)).train()(xs)
        for j, model in enumerate(_copies(population)):
            ref = model.train()(xs[j])
            torch.testing.assert_close(out[j], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    before = [m.state_dict() for m in _copies(population)]
    loop = train_models(_copies(population), x, y, SEEDS, 1, len(x) // 2, strategy="loop")
    batched = train_models(_copies(population), x, y, SEEDS, 1, len(x) // 2, strategy=strategy)
    for j in range(M):
        ref = loop[j].state_dict()
        moved = max(float((ref[k] - before[j][k]).abs().max()) for k, _ in loop[j].named_parameters())
        assert moved > 0.5 * LR  # the step happened (the comparison below is not of untrained models)
        _assert_steps_close(batched[j].state_dict(), before[j], ref, f"{strategy} model {j}",
                            _noise_only(loop[j]))


@pytest.mark.parametrize("case", CONV_CASES)
def test_channels_last_changes_no_number(case):
    """The layout train_models gives the grouped ensemble on a GPU, here on the CPU."""
    population, x, y = _population(case)
    plain, nhwc = _grouped(population), _grouped(population, channels_last=True)
    convs = [mod for mod in nhwc.modules() if isinstance(mod, EnsembleConv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    layouts = []  # (a convolution whose weight has one input channel keeps NCHW unless its input is NHWC)
    for conv in convs:
        conv.register_forward_hook(
            lambda mod, inp, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    xs = x.expand(M, *x.shape)
    with torch.no_grad():
        ref = plain(xs)
        torch.testing.assert_close(nhwc(xs), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert layouts and all(layouts)  # the convolutions really ran in NHWC
    before = plain.state_dicts()
    for net in (plain, nhwc):
        train_steps(net, list(net.parameters()), x, y, SEEDS, 1, 4)
    states = nhwc.state_dicts()
    for j, ref in enumerate(plain.state_dicts()):
        _assert_steps_close(states[j], before[j], ref, f"channels_last model {j}", _noise_only(population[j]))
        assert all(t.is_contiguous() for t in states[j].values())  # what save_model writes
    nhwc.set_channels_last(False)
    assert all(c.weight.is_contiguous() and not c.channels_last for c in convs)


def test_channels_last_chunk_resumes_to_the_same_bits(tmp_path):
    """A GPU chunk checkpointed after epoch 1 and resumed gives what an unbroken run gives. The
    optimiser's moments come back from the file in contiguous layout; they must take their
    channels_last weight's layout again, or fused Adam pairs the wrong elements."""
    population, x, y = _population("resnet", n=12)

    def run(epochs, checkpoint=None, resume=False):
        net = _grouped(population, channels_last=True)
        kwargs = _resume(net, checkpoint.load(), checkpoint) if resume else {}
        train_steps(net, list(net.parameters()), x, y, SEEDS, epochs, 4,
                    on_epoch=_saver(checkpoint, [], 0, net), **kwargs)
        return net.state_dicts()

    unbroken = run(2)
    checkpoint = _Checkpoint(tmp_path / "chunk.safetensors", range(M))
    run(1, checkpoint)
    resumed = run(2, checkpoint, resume=True)
    for j in range(M):
        for key, value in unbroken[j].items():
            assert torch.equal(resumed[j][key], value), f"model {j} {key}"


def _forward_dtypes(forward, params, seeds, precision, x, y):
    """The dtypes of the logits train_steps' forward returned and of the weights and gradients."""
    seen = []

    def recorded(xb):
        out = forward(xb)
        seen.append(out.dtype)
        return out

    train_steps(recorded, params, x, y, seeds, 1, 4, precision=precision)
    return set(seen), {p.dtype for p in params} | {p.grad.dtype for p in params}


@pytest.mark.parametrize("case", ["mlp", "cnn64", "resnet"])
def test_bf16_autocasts_the_forward_and_keeps_float32_weights(case):
    """precision="bf16" on the data's device type: the loop's, grouped and NHWC grouped forwards."""
    population, x, y = _population(case)
    model = _copies(population)[0].train()
    grouped, nhwc = _grouped(population), _grouped(population, channels_last=True)
    runs = [(lambda xb: model(xb[0]).unsqueeze(0), list(model.parameters()), SEEDS[:1]),
            (grouped, list(grouped.parameters()), SEEDS), (nhwc, list(nhwc.parameters()), SEEDS)]
    for forward, params, seeds in runs:
        assert _forward_dtypes(forward, params, seeds, "bf16", x, y) == ({torch.bfloat16}, {torch.float32})
    fp32 = _grouped(population)
    assert _forward_dtypes(fp32, list(fp32.parameters()), SEEDS, "fp32", x, y) == ({torch.float32},
                                                                                   {torch.float32})


@pytest.mark.parametrize("case", ["mlp", "cnn64", "resnet"])
def test_bf16_grouped_matches_the_loop_to_bf16_rounding(case):
    population, x, y = _population(case)
    xs = x.expand(M, *x.shape)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = _grouped(population)(xs).float()
        out_nhwc = _grouped(population, channels_last=True)(xs).float()
        for j, model in enumerate(_copies(population)):
            ref = model.train()(x).float()
            # bf16 keeps 8 significant bits (a rounding is up to 2^-9 of the value); the batched
            # and single kernels round each layer's output on their own, 17 convolutions deep in
            # the ResNet (seen: 2^-7 of the scale). A model fed another's data or weights is off
            # by about its whole scale.
            scale = float(ref.abs().max())
            for got in (out[j], out_nhwc[j]):
                torch.testing.assert_close(got, ref, rtol=2**-5, atol=2**-5 * scale)
    before = [m.state_dict() for m in _copies(population)]
    trained = {(s, p): train_models(_copies(population), x, y, SEEDS, 1, len(x), strategy=s, precision=p)
               for s in ("loop", "grouped") for p in ("fp32", "bf16")}
    for j in range(M):
        ref = trained["loop", "bf16"][j].state_dict()
        _assert_steps_close(trained["grouped", "bf16"][j].state_dict(), before[j], ref, f"bf16 model {j}")
        assert all(v.dtype != torch.bfloat16 for v in ref.values())
    # the precision reached the forward: bf16 training is not the fp32 one
    assert any(not torch.equal(a.state_dict()[k], b.state_dict()[k])
               for a, b in zip(trained["loop", "bf16"], trained["loop", "fp32"]) for k in a.state_dict())


def test_vmap_with_bf16_is_refused_before_any_work():
    """PyTorch's vmap leaves autocast's outputs float32 (while each model alone gives bf16), so
    a 'bf16' vmap population would be trained in a precision no other strategy uses."""
    population, x, y = _population("cnn64")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert population[0](x).dtype == torch.bfloat16
        assert VmapEnsemble(_copies(population))(x.expand(M, *x.shape)).dtype == torch.float32
    with pytest.raises(LinfiltError, match="'bf16' does not work with strategy 'vmap'"):
        PopulationConfig.protocol("cifar10", [0], strategy="vmap", precision="bf16")
    untouched = _copies(population)
    with pytest.raises(LinfiltError, match="strategy 'grouped' or 'loop'"):
        train_models(untouched, x, y, SEEDS, 1, len(x), strategy="vmap", precision="bf16")
    for model, ref in zip(untouched, population):
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("before", [True, False])
def test_cudnn_timing_flag_follows_the_data_and_is_restored(before):
    """train_models turns cuDNN's kernel timing on for CUDA data only, and puts the flag back,
    also when training fails."""
    population, x, y = _population("mlp")
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before
    try:
        during = []
        train_models(_copies(population), x, y, SEEDS, 1, 4, strategy="grouped",
                     on_step=lambda n: during.append(torch.backends.cudnn.benchmark))
        assert during and not any(during)  # CPU data: no cuDNN timing
        assert torch.backends.cudnn.benchmark is before

        def fail(n):
            raise RuntimeError("stopped")

        with pytest.raises(RuntimeError, match="stopped"):
            train_models(_copies(population), x, y, SEEDS, 1, 4, strategy="grouped", on_step=fail)
        assert torch.backends.cudnn.benchmark is before
    finally:
        torch.backends.cudnn.benchmark = saved


def test_auto_strategy_is_the_measured_fastest_per_device_type():
    """A config names a device; it is only checked against this machine when training starts, so
    the choice for "cuda" is tested here as it is made there."""
    for arch, kwargs in (("mlp", {"in_features": 4}), ("cifar_cnn", {}), ("att_resnet", {})):
        digests = set()
        for device in ("cpu", "cuda", "cuda:1"):
            table = FASTEST[torch.device(device).type]
            assert table.keys() == set(models.ARCHITECTURES) and set(table.values()) <= set(STRATEGIES)
            for precision in ("fp32", "bf16"):  # `auto` never picks a strategy it then refuses
                cfg = PopulationConfig(dataset="d", arch=arch, arch_kwargs=kwargs, forget=(0,),
                                       device=device, precision=precision)
                assert cfg.strategy == table[arch]
                assert cfg.key()["device"] == torch.device(device).type
                digests.add(cfg.digest())
            explicit = PopulationConfig(dataset="d", arch=arch, arch_kwargs=kwargs, forget=(0,),
                                        device=device, strategy="loop")
            assert explicit.strategy == "loop"
        assert len(digests) == 4  # cpu and cuda results never mix; cuda:1 is cuda; fp32 vs bf16
    assert FASTEST["cuda"]["cifar_cnn"] != FASTEST["cpu"]["cifar_cnn"]
