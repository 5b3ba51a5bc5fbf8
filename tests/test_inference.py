import numpy as np
import pytest
import torch

from napari_autostructn2v import Config, DenoisingModel, InputError, denoise
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.inference import denoise_steps


@pytest.fixture(scope="module")
def model():
    """An untrained but randomly initialised network: tiling must not change what it computes."""
    torch.manual_seed(0)
    config = Config(base_channels=8, depth=2)
    model = DenoisingModel.create(config, Normalisation(mean=100.0, std=20.0))
    for module in model.net.modules():  # non-trivial running statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.net.eval() and model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(100, 20, (150, 230)).astype(np.float32)


def test_tiles_equal_whole_image_inference(model, image):
    whole = denoise(model, image, tile_size=512, overlap=32)
    tiled = denoise(model, image, tile_size=64, overlap=24)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-3)
    # no zero or seam rows/columns at tile or image borders
    assert np.abs(np.diff(tiled, axis=0)).max() < 10 * np.abs(np.diff(whole, axis=0)).max()
    assert (tiled[0] != 0).all() and (tiled[:, 0] != 0).all()


def test_output_keeps_shape_units_and_dtype(model, image):
    stack = np.stack([image, image[::-1], image[:, ::-1]]).astype(np.uint16)[None]
    out = denoise(model, stack, tile_size=96, overlap=16)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1], denoise(model, stack[0, 1], tile_size=96, overlap=16), atol=1e-4)
    assert 0 < out.mean() < 1000  # image units (mean 100), not normalised units


def test_input_is_not_modified(model, image):
    before = image.copy()
    denoise(model, image, tile_size=64, overlap=16)
    np.testing.assert_array_equal(image, before)


def test_small_images_and_progress(model):
    tiny = np.random.default_rng(1).random((9, 13)).astype(np.float32)
    assert denoise(model, tiny).shape == (9, 13)
    steps = denoise_steps(model, np.zeros((2, 100, 100), np.float32), tile_size=64, overlap=16, batch_size=3)
    progress = []
    while True:
        try:
            progress.append(next(steps))
        except StopIteration as done:
            result = done.value
            break
    totals = {total for _, total in progress}
    assert len(totals) == 1 and progress[-1][0] == progress[-1][1] == 2 * 4 * 4  # 32-pixel inner tiles
    assert result.shape == (2, 100, 100)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"tile_size": 40, "overlap": 32}, "tile_size"), ({"overlap": -1}, "overlap")],
)
def test_bad_tiling_is_explained_at_the_call(model, image, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        denoise_steps(model, image, **kwargs)  # before the first tile, not at the first next()


def test_rgb_is_refused(model):
    with pytest.raises(InputError, match="RGB"):
        denoise(model, np.zeros((32, 32, 3)))
