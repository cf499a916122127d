import copy

import pytest
import torch

from linfilt.paper import models
from linfilt.paper.ensemble import GroupedEnsemble, VmapEnsemble

CASES = [
    ("mlp", 10, {"in_features": 64, "hidden": (8, 5)}, (1, 8, 8)),
    ("cifar_cnn", 10, {"p": 16}, (3, 32, 32)),
    ("att_resnet", 5, {"widths": (4, 6, 4, 4, 4)}, (1, 40, 36)),
]


@pytest.mark.parametrize("kind", [GroupedEnsemble, VmapEnsemble])
@pytest.mark.parametrize("arch,k,kwargs,shape", CASES)
def test_ensemble_step_equals_each_model_alone(kind, arch, k, kwargs, shape):
    """Forward in train mode, a backward pass and BatchNorm's running stats, model by model."""
    torch.manual_seed(0)
    alone = [models.build(arch, k, **kwargs) for _ in range(3)]
    x = torch.rand(3, 6, *shape)
    y = torch.randint(0, k, (3, 6))
    ensemble = kind([copy.deepcopy(m) for m in alone]).train()
    out = ensemble(x)
    torch.nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").backward()
    grads = {}
    if kind is GroupedEnsemble:
        for name, mod in ensemble.net.named_modules():
            if hasattr(mod, "unstack"):
                for key, p in mod.named_parameters(recurse=False):
                    grads[f"{name}.{key}"] = p.grad
    for j, model in enumerate(alone):
        model.train()
        ref = model(x[j])
        torch.testing.assert_close(out[j], ref, rtol=1e-5, atol=1e-6)
        torch.nn.functional.cross_entropy(ref, y[j], reduction="sum").backward()
        state = ensemble.state_dicts()[j]
        assert state.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():  # includes the updated running stats
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=key)
        if kind is GroupedEnsemble:  # each model's gradient is its own loss's gradient
            lin = model.head
            g = grads["head.weight_t"]
            torch.testing.assert_close(g[j].t(), lin.weight.grad, rtol=1e-4, atol=1e-6)


def test_grouped_batchnorm_keeps_statistics_per_model():
    bns = [torch.nn.BatchNorm2d(2, eps=1e-3, momentum=0.01) for _ in range(2)]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), bns[0])
    nets = [net, copy.deepcopy(net)]
    nets[1][1] = bns[1]
    ensemble = GroupedEnsemble(nets).train()
    x = torch.stack([torch.zeros(4, 1, 5, 5), 10 + torch.rand(4, 1, 5, 5)])  # very different inputs
    ensemble(x)
    state = ensemble.state_dicts()
    for j in range(2):
        conv = nets[j][0](x[j])
        torch.testing.assert_close(state[j]["1.running_mean"], 0.01 * conv.mean(dim=(0, 2, 3)))
    assert not torch.allclose(state[0]["1.running_mean"], state[1]["1.running_mean"])
