"""Axes, channels and the 3D network through the API: masks per channel, units per channel, shapes kept."""

import numpy as np
import pytest
import torch

from conftest import make_tiny_config
from napari_autostructn2v import (
    DenoisingModel, InputError, MaskEstimated, denoise, estimate_struct_mask, fit, load_model, make_sample,
    preset_mask, save_model, train,
)
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.masking import mask_batch
from napari_autostructn2v.core.sample import make_volume, structured_noise

HORIZONTAL = preset_mask("horizontal", 5)  # lags 1 and 2 of the 3-pixel noise kernel: correlations 2/3 and 1/3


@pytest.fixture(scope="module")
def two_channels():
    """Channel 0: white noise in units around 0.1; channel 1: row-correlated noise in units around 1000."""
    clean = make_sample((96, 96), "white", 0.1, seed=0)[0]
    white = clean + structured_noise(clean.shape, "white", 0.1, seed=5)
    horizontal = 1000 + 500 * (clean + structured_noise(clean.shape, "horizontal", 0.1, seed=6))
    return np.stack([white, horizontal])


def test_each_channel_gets_its_own_mask(two_channels):
    white, horizontal = estimate_struct_mask(two_channels, axes="CYX")
    assert white.mask.sum() == 1
    np.testing.assert_array_equal(horizontal.mask, HORIZONTAL)
    # channels last, as some files store them: the same masks
    last = estimate_struct_mask(np.moveaxis(two_channels, 0, -1), axes="YXC")
    assert [e.mask.tolist() for e in last] == [white.mask.tolist(), horizontal.mask.tolist()]
    # no C axis: one estimate, as before
    assert estimate_struct_mask(two_channels[1]).mask.tolist() == HORIZONTAL.tolist()


def test_channels_train_as_one_network_and_keep_their_units(two_channels, tmp_path):
    events = list(train(two_channels, make_tiny_config(), axes="CYX"))
    estimated = [e for e in events if isinstance(e, MaskEstimated)]
    assert [(e.channel, e.channels) for e in estimated] == [(0, 2), (1, 2)]
    model = events[-1].model
    assert model.channels == 2 and model.axes == "CYX"
    assert [m.sum() for m in model.channel_masks()] == [1, 5]
    assert model.normalisation.channels == 2
    assert model.normalisation.mean[1] == pytest.approx(float(two_channels[1].mean()), rel=1e-4)
    out = denoise(model, two_channels)  # the model's axes are used for an array of as many dimensions
    assert out.shape == two_channels.shape and out.dtype == np.float32
    for channel in range(2):
        assert abs(out[channel].mean() - two_channels[channel].mean()) < 0.5 * two_channels[channel].std()
    path = save_model(model, tmp_path / "channels.pt")
    loaded = load_model(path)
    assert loaded.normalisation == model.normalisation and loaded.axes == "CYX"
    assert [m.tolist() for m in loaded.channel_masks()] == [m.tolist() for m in model.channel_masks()]
    np.testing.assert_allclose(denoise(loaded, two_channels, axes="CYX"), out, atol=1e-5)
    with pytest.raises(InputError, match="2 channel"):
        denoise(model, two_channels[0])
    with pytest.raises(InputError, match="channels"):
        fit([two_channels, two_channels[:1]], make_tiny_config(), axes="CYX")


def test_channel_masks_apply_to_their_own_channel():
    patches = torch.arange(2 * 2 * 32 * 32, dtype=torch.float32).reshape(2, 2, 32, 32)
    inputs, blind = mask_batch(patches, 2.0, torch.Generator().manual_seed(0), [None, preset_mask("horizontal", 5)])
    changed = inputs != patches
    assert torch.equal(changed[:, 0], blind[:, 0])  # plain N2V: only the blind spots change
    assert changed[:, 1].sum() > 2 * blind[:, 1].sum()  # the line around each blind spot as well
    assert blind[:, 0].sum() == blind[:, 1].sum() and not torch.equal(blind[:, 0], blind[:, 1])


def test_3d_blind_spots_mask_within_the_plane():
    patches = torch.arange(2 * 10 * 20 * 20, dtype=torch.float32).reshape(2, 1, 10, 20, 20)
    inputs, blind = mask_batch(patches, 1.0, torch.Generator().manual_seed(0), HORIZONTAL)
    assert blind.sum() / blind.numel() == pytest.approx(0.008, rel=0.3)  # a 5 x 5 x 5 grid at 1 %
    changed = inputs != patches
    for b, _, z, y, x in torch.nonzero(blind):
        for dx in (-2, -1, 1, 2):
            if 0 <= x + dx < 20:
                assert changed[b, 0, z, y, x + dx]  # the mask's neighbours in the same plane
    assert changed.sum() <= 5 * blind.sum()  # nothing outside the masks


def test_z_correlation_is_measured_and_gives_a_3d_mask():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((12, 64, 64))
    along_z = (white[:-2] + white[1:-1] + white[2:]) / np.sqrt(3)
    estimate = estimate_struct_mask(along_z, is_noise=True, axes="ZYX")
    assert estimate.z_correlation == pytest.approx(2 / 3, abs=0.05)
    assert estimate.mask.sum() == 1 and estimate.mask_3d.shape == (3, 3, 3)
    assert estimate.mask_3d[:, 1, 1].all() and estimate.mask_3d.sum() == 3
    in_plane = estimate_struct_mask(structured_noise((10, 64, 64), "horizontal"), is_noise=True, axes="ZYX")
    assert abs(in_plane.z_correlation) < 0.05 and in_plane.mask_3d is None
    np.testing.assert_array_equal(in_plane.mask, HORIZONTAL)
    assert estimate_struct_mask(structured_noise((10, 64, 64), "horizontal"), is_noise=True).z_acf is None


def test_3d_network_trains_on_a_volume_and_keeps_its_shape():
    volume = make_volume((8, 48, 48), seed=0)[1]
    config = make_tiny_config(network="3d", patch_depth=8)
    events = list(train(volume, config, axes="ZYX", preview_every=8))
    model = events[-1].model
    assert model.net.dims == 3 and model.axes == "ZYX"
    np.testing.assert_array_equal(model.struct_mask, HORIZONTAL)
    previews = [e.image for e in events if type(e).__name__ == "Preview"]
    assert previews and previews[0].shape == (48, 48)
    out = denoise(model, volume[None], axes="TZYX", tile_size=64, overlap=16)
    assert out.shape == (1, 8, 48, 48)
    with pytest.raises(InputError, match="Z"):
        denoise(model, volume[0])
    with pytest.raises(InputError, match="axes with Z"):
        fit(volume, config)
    with pytest.raises(InputError, match="patch_depth"):
        fit(volume[:4], config, axes="ZYX")


def test_3d_tiles_equal_whole_volume_inference():
    torch.manual_seed(0)
    model = DenoisingModel.create(make_tiny_config(network="3d", patch_depth=8), Normalisation(100.0, 20.0))
    for module in model.net.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.net.eval()
    volume = np.random.default_rng(0).normal(100, 20, (10, 24, 36)).astype(np.float32)
    whole = denoise(model, volume, tile_size=512, overlap=32, axes="ZYX")
    tiled = denoise(model, volume, tile_size=64, overlap=24, axes="ZYX")
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-3)


def test_networks_have_no_batch_norms_unless_asked_and_older_files_keep_theirs(tmp_path):
    def norms(model):
        return sum(isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) for module in model.net.modules())

    assert norms(DenoisingModel.create(make_tiny_config(), Normalisation(0.0, 1.0))) == 0
    assert norms(DenoisingModel.create(make_tiny_config(batch_norm=True), Normalisation(0.0, 1.0))) == 10
    # None, the default of files saved before: norms in the 2D network only
    assert norms(DenoisingModel.create(make_tiny_config(batch_norm=None), Normalisation(0.0, 1.0))) == 10
    assert norms(DenoisingModel.create(make_tiny_config(network="3d", patch_depth=8, batch_norm=None),
                                       Normalisation(0.0, 1.0))) == 0
    plain = DenoisingModel.create(make_tiny_config(network="3d", patch_depth=8), Normalisation(0.0, 1.0))
    assert norms(plain) == 0 and not plain.net.batch_norm
    asked = DenoisingModel.create(make_tiny_config(network="3d", patch_depth=8, batch_norm=True), Normalisation(0.0, 1.0))
    assert norms(asked) == 10
    assert norms(load_model(save_model(plain, tmp_path / "plain.pt"))) == 0
    # a 3D model saved before the choice existed: its configuration has no batch_norm, its weights have norms
    path = save_model(asked, tmp_path / "older.pt")
    payload = torch.load(path, weights_only=True)
    del payload["config"]["batch_norm"]
    torch.save(payload, path)
    older = load_model(path)
    assert norms(older) == 10
    volume = np.random.default_rng(0).normal(0, 1, (8, 24, 24)).astype(np.float32)
    np.testing.assert_array_equal(denoise(older, volume, axes="ZYX"), denoise(asked, volume, axes="ZYX"))


def test_version_1_model_files_still_load(tmp_path):
    model = DenoisingModel.create(make_tiny_config(), Normalisation(1.0, 2.0))
    model.struct_mask = HORIZONTAL
    path = save_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    for key in ("channel_masks", "axes"):
        del payload[key]
    payload["version"] = 1
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.channels == 1 and loaded.axes is None
    np.testing.assert_array_equal(loaded.struct_mask, HORIZONTAL)


def test_separate_channels_are_independent_networks(two_channels, tmp_path):
    from napari_autostructn2v.core.unet import UNet

    net = UNet(8, 2, channels=2, separate=True).eval()
    x = torch.randn(1, 2, 32, 32)
    changed = x.clone()
    changed[:, 1] += torch.randn(1, 32, 32)
    with torch.no_grad():
        before, after = net(x), net(changed)
    assert torch.equal(before[:, 0], after[:, 0]) and not torch.equal(before[:, 1], after[:, 1])
    joint = UNet(8, 2, channels=2).eval()
    with torch.no_grad():
        assert not torch.equal(joint(x)[:, 0], joint(changed)[:, 0])  # one network mixes the channels
    model = fit(two_channels, make_tiny_config(separate_channels=True), axes="CYX")
    loaded = load_model(save_model(model, tmp_path / "separate.pt"))
    np.testing.assert_allclose(denoise(loaded, two_channels), denoise(model, two_channels), atol=1e-5)
