"""Blind-spot inference: which lines a pass masks, and that a pixel's prediction never sees its mask."""

import numpy as np
import pytest
import torch

from napari_autostructn2v import Config, DenoisingModel, InputError, denoise, preset_mask
from napari_autostructn2v.core.blind_spot import LinePlan, line_plan
from napari_autostructn2v.core.images import Normalisation

HORIZONTAL = preset_mask("horizontal", 5)
VERTICAL = preset_mask("vertical", 5)
DIAGONAL = np.eye(5, dtype=bool)
ANTIDIAGONAL = np.eye(5, dtype=bool)[::-1]
BOX = np.ones((3, 5), bool)


@pytest.mark.parametrize("masks, dims, plan", [
    ([HORIZONTAL], 2, LinePlan(((1, 0),))),
    ([VERTICAL], 2, LinePlan(((0, 1),))),
    ([DIAGONAL], 2, LinePlan(((1, -1),))),
    ([ANTIDIAGONAL], 2, LinePlan(((1, 1),))),
    ([None, VERTICAL], 2, LinePlan(((0, 1), (0, 1)))),  # a channel without a line takes the first one's
    ([HORIZONTAL, VERTICAL], 2, LinePlan(((1, 0), (0, 1)))),  # each channel along its own mask
    ([HORIZONTAL], 3, LinePlan(((3, 1, 0),))),  # a 2D mask of a 3D network: rows of each plane, shifted along Z
    ([VERTICAL], 3, LinePlan(((3, 0, 1),))),
    ([np.stack([HORIZONTAL] * 3)], 3, LinePlan(((0, 1, 0),))),  # a mask across planes: the same rows in each
    ([BOX], 2, None),  # thicker than one line: one pass on the unmasked image
    ([HORIZONTAL, BOX], 2, None),  # one thick mask: one pass for all channels
    ([None], 2, None),
    ([np.ones((1, 1), bool)], 2, None),  # N2V: one pass
])
def test_lines_run_along_the_mask(masks, dims, plan):
    assert line_plan(masks, dims) == plan


def _model(mask, channels: int = 1) -> DenoisingModel:
    torch.manual_seed(0)
    normalisation = Normalisation(100.0, 20.0) if channels == 1 else Normalisation((100.0,) * channels,
                                                                                   (20.0,) * channels)
    # float32 on every CPU: these tests compare outputs to 1e-4
    model = DenoisingModel.create(Config(base_channels=8, depth=2, mixed_precision=False), normalisation)
    model.struct_mask = mask
    model.net.eval()
    return model


@pytest.mark.parametrize("mask", [HORIZONTAL, VERTICAL, DIAGONAL, ANTIDIAGONAL],
                         ids=["horizontal", "vertical", "diagonal", "antidiagonal"])
def test_a_pixel_is_predicted_without_its_own_value_or_its_masks_pixels(mask):
    model = _model(mask)
    image = np.random.default_rng(1).normal(100, 20, (96, 96)).astype(np.float32)
    changed = image.copy()
    centre = np.array([48, 50])
    offsets = np.stack(np.nonzero(mask), axis=1) - np.asarray(mask.shape) // 2
    for offset in offsets:
        changed[tuple(centre + offset)] += 300.0  # the pixel and its mask's pixels: their correlated noise
    y, x = centre
    blind, blind_changed = denoise(model, image)[y, x], denoise(model, changed)[y, x]
    assert blind_changed == pytest.approx(blind, abs=1e-4)
    direct, direct_changed = (denoise(model, data, blind_spot=False)[y, x] for data in (image, changed))
    assert abs(direct_changed - direct) > 0.1  # one pass on the unmasked image reads them


def test_a_mask_thicker_than_one_line_predicts_in_one_pass():
    model = _model(BOX)
    image = np.random.default_rng(5).normal(100, 20, (64, 64)).astype(np.float32)
    np.testing.assert_array_equal(denoise(model, image), denoise(model, image, blind_spot=False))


def test_blind_spot_output_does_not_depend_on_tiles_or_the_stack():
    model = _model(HORIZONTAL)
    image = np.random.default_rng(2).normal(100, 20, (150, 230)).astype(np.float32)
    whole = denoise(model, image)
    np.testing.assert_allclose(denoise(model, image, tile_size=96, overlap=24), whole, atol=1e-3)
    np.testing.assert_allclose(denoise(model, np.stack([image[::-1], image]))[1], whole, atol=1e-4)
    part = denoise(model, image[40:140, 60:200], origin=(40, 60))
    np.testing.assert_allclose(part[30:-30, 30:-30], whole[70:110, 90:170], atol=1e-3)
    assert np.abs(denoise(model, image, blind_spot=False) - whole).max() > 0.1
    with pytest.raises(InputError, match="origin must be 2 whole numbers"):
        denoise(model, image, origin=(3,))


def test_each_channel_is_masked_with_its_own_mask():
    model = _model([None, HORIZONTAL], channels=2)
    image = np.random.default_rng(3).normal(100, 20, (2, 64, 64)).astype(np.float32)
    changed = image.copy()
    changed[1, 32, 30:35] += 300.0  # the horizontal mask of channel 1 around (32, 32)
    before, after = denoise(model, image, axes="CYX"), denoise(model, changed, axes="CYX")
    assert after[1, 32, 32] == pytest.approx(before[1, 32, 32], abs=1e-4)


def test_channels_with_masks_along_different_lines_are_each_masked_along_their_own():
    model = _model([HORIZONTAL, VERTICAL], channels=2)
    image = np.random.default_rng(6).normal(100, 20, (2, 64, 64)).astype(np.float32)
    changed = image.copy()
    changed[0, 32, 30:35] += 300.0  # channel 0's horizontal mask around (32, 32)
    changed[1, 30:35, 32] += 300.0  # channel 1's vertical one
    before, after = denoise(model, image, axes="CYX"), denoise(model, changed, axes="CYX")
    np.testing.assert_allclose(after[:, 32, 32], before[:, 32, 32], atol=1e-4)
    direct = denoise(model, image, axes="CYX", blind_spot=False)
    assert np.abs(denoise(model, changed, axes="CYX", blind_spot=False)[:, 32, 32] - direct[:, 32, 32]).min() > 0.1


def test_a_3d_network_predicts_a_voxel_without_its_planes_mask_pixels():
    torch.manual_seed(0)
    model = DenoisingModel.create(Config(base_channels=4, depth=1, network="3d"), Normalisation(100.0, 20.0))
    model.struct_mask = HORIZONTAL
    model.net.eval()
    volume = np.random.default_rng(4).normal(100, 20, (12, 32, 32)).astype(np.float32)
    changed = volume.copy()
    changed[6, 16, 14:19] += 300.0

    def voxel(data, blind_spot=True):
        return denoise(model, data, tile_size=64, overlap=8, axes="ZYX", blind_spot=blind_spot)[6, 16, 16]

    assert voxel(changed) == pytest.approx(voxel(volume), abs=1e-4)
    assert abs(voxel(changed, blind_spot=False) - voxel(volume, blind_spot=False)) > 1e-3


def test_a_3d_network_sees_a_voxels_neighbours_along_z_when_its_plane_is_masked():
    torch.manual_seed(0)
    model = DenoisingModel.create(Config(base_channels=4, depth=1, network="3d", mixed_precision=False),
                                  Normalisation(100.0, 20.0))
    model.struct_mask = HORIZONTAL
    model.net.eval()
    volume = np.random.default_rng(7).normal(100, 20, (12, 32, 32)).astype(np.float32)
    changed = volume.copy()
    changed[[5, 7], 16, 16] += 300.0  # the voxel's neighbours in the planes above and below: its signal, other noise

    def voxel(data):
        return denoise(model, data, tile_size=64, overlap=8, axes="ZYX")[6, 16, 16]

    assert abs(voxel(changed) - voxel(volume)) > 1e-3
