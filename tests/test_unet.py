"""UNet.forward_at: the outputs at the blind spots, with the top level computed around them only."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional

from napari_autostructn2v import Config, make_sample, train
from napari_autostructn2v.core.masking import mask_batch
from napari_autostructn2v.core.unet import UNet
from napari_autostructn2v.core.training import EpochEnd, Step


def _randomise_batch_norms(net: UNet) -> None:
    """Running statistics and affine weights far from the identity, so a skipped or misplaced norm shows."""
    generator = torch.Generator().manual_seed(3)
    for module in net.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator))


@pytest.mark.parametrize("options, shape", [
    ({}, (3, 1, 32, 32)),
    ({"n2v2": True}, (2, 1, 24, 40)),
    ({"channels": 2}, (2, 2, 16, 16)),
    ({"channels": 2, "separate": True}, (2, 2, 16, 16)),
    ({"dims": 3}, (2, 1, 8, 16, 16)),
    ({"dims": 3, "batch_norm": False}, (2, 1, 8, 16, 16)),
    ({"batch_norm": False, "n2v2": True}, (2, 1, 24, 40)),
    ({"depth": 1}, (2, 1, 16, 20)),
    ({"depth": 3}, (2, 1, 32, 32)),
])
def test_outputs_at_the_blind_spots_equal_the_whole_network_in_eval_mode(options, shape):
    torch.manual_seed(0)
    net = UNet(8, **{"depth": 2, **options})
    _randomise_batch_norms(net)
    net.eval()
    patches = torch.randn(shape)
    inputs, blind = mask_batch(patches, 5.0, torch.Generator().manual_seed(1))
    blind[(0, 0) + (0,) * (len(shape) - 2)] = True  # corners: windows reaching out of the image
    blind[(-1, -1) + (-1,) * (len(shape) - 2)] = True
    with torch.no_grad():
        expected = net(inputs)[blind]
        got = net.forward_at(inputs, blind)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_mode_normalises_the_top_block_with_the_windows_statistics():
    """Blind spots whose 3 x 3 windows tile the image exactly: the first norm of the top block sees every
    pixel once (the whole batch's statistics), the second the blind spots alone; gradients reach every weight."""
    torch.manual_seed(0)
    net = UNet(8, 2).train()
    _randomise_batch_norms(net)
    reference = copy.deepcopy(net)
    inputs = torch.randn(2, 1, 12, 12)
    blind = torch.zeros_like(inputs, dtype=torch.bool)
    blind[:, :, 1::3, 1::3] = True

    got = net.forward_at(inputs, blind)

    conv1, norm1, act1, conv2, norm2, _ = reference.decoders[-1]
    hidden = conv2(act1(norm1(conv1(reference._top_input(inputs)))))
    at_spots = hidden.movedim(1, -1)[blind[:, 0]]
    normalised = functional.batch_norm(at_spots, norm2.running_mean, norm2.running_var, norm2.weight, norm2.bias,
                                       True, norm2.momentum, norm2.eps)
    norm2.num_batches_tracked += 1
    expected = functional.linear(functional.leaky_relu(normalised, 0.1), reference.head.weight[:, :, 0, 0],
                                 reference.head.bias)[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for (name, ours), theirs in zip(net.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)  # running statistics alike

    got.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in net.parameters())


def test_a_single_blind_spot_in_training_mode_uses_the_whole_network():
    torch.manual_seed(0)
    net = UNet(4, 1).train()
    inputs = torch.randn(1, 1, 8, 8)
    blind = torch.zeros_like(inputs, dtype=torch.bool)
    blind[0, 0, 3, 5] = True
    expected = copy.deepcopy(net)(inputs)[blind]
    torch.testing.assert_close(net.forward_at(inputs, blind), expected)


@pytest.mark.parametrize("sparse", [True, False])
def test_training_uses_forward_at_only_when_asked_and_learns_either_way(sparse, tiny_config, monkeypatch):
    calls = []
    original = UNet.forward_at

    def counted(self, x, blind):
        calls.append(len(x))
        return original(self, x, blind)

    monkeypatch.setattr(UNet, "forward_at", counted)
    tiny_config.sparse_top_level = sparse
    tiny_config.batch_norm = True  # with norms, sparse training computes something else: they see only the windows
    tiny_config.stage1.epochs, tiny_config.stage1.steps_per_epoch = 3, 10
    tiny_config.stage2.epochs = 0
    _, noisy = make_sample((128, 128), "white", 0.1, seed=1)
    events = list(train(noisy, tiny_config))
    steps = [e.loss for e in events if isinstance(e, Step)]
    validation = [e.val_loss for e in events if isinstance(e, EpochEnd)]
    assert len(calls) > len(steps) if sparse else calls == []  # the steps, then the validation batches
    assert validation[-1] < 0.7 * np.mean(steps[:3])  # it learns either way


def test_the_top_level_is_sparse_by_default_exactly_when_the_network_has_no_batch_norms(tiny_config):
    assert Config().uses_sparse_top_level and not Config(batch_norm=True).uses_sparse_top_level
    assert not Config(sparse_top_level=False).uses_sparse_top_level
    assert Config(batch_norm=True, sparse_top_level=True).uses_sparse_top_level
    # without norms it is exact: training computes the same losses either way
    tiny_config.stage1.epochs, tiny_config.stage1.steps_per_epoch, tiny_config.stage2.epochs = 1, 4, 0
    _, noisy = make_sample((96, 96), "white", 0.1, seed=1)
    losses = {}
    for sparse in (None, False):
        events = train(noisy, dataclasses.replace(tiny_config, sparse_top_level=sparse))
        losses[sparse] = [e.loss if isinstance(e, Step) else e.val_loss for e in events
                          if isinstance(e, (Step, EpochEnd))]
    assert len(losses[None]) == 5
    np.testing.assert_allclose(losses[None], losses[False], rtol=1e-4)
