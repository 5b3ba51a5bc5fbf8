import numpy as np
import pytest
import torch

from napari_autostructn2v import Config, DenoisingModel, InputError, denoise
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.inference import DEFAULT_TILE, _tile_length, denoise_steps


@pytest.fixture(scope="module")
def model():
    """An untrained but randomly initialised network: tiling must not change what it computes (in float32 on
    every CPU, to compare with the float32 network applied once)."""
    torch.manual_seed(0)
    config = Config(base_channels=8, depth=2, mixed_precision=False)
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


def _whole_image_reference(model, plane: np.ndarray, margin: int = 32) -> np.ndarray:
    """The network applied once to the mirrored image, in image units: what the tiles must reproduce."""
    multiple = 2**model.net.depth
    height, width = plane.shape
    padded = np.pad(plane.astype(np.float32), ((margin, margin + (-(height + 2 * margin)) % multiple),
                                               (margin, margin + (-(width + 2 * margin)) % multiple)), mode="reflect")
    scaled = (padded - 100.0) / 20.0  # the fixture's normalisation, written out
    with torch.no_grad():
        out = model.net(torch.from_numpy(scaled)[None, None])[0, 0].numpy()
    return (out * 20.0 + 100.0)[margin : margin + height, margin : margin + width]


def test_output_keeps_shape_units_and_dtype(model, image):
    stack = np.stack([image, image[::-1], image[:, ::-1]]).astype(np.uint16)[None]
    out = denoise(model, stack, tile_size=96, overlap=16)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1], denoise(model, stack[0, 1], tile_size=96, overlap=16), atol=1e-4)
    # every slice, in image units: the network's output mapped back with the model's normalisation
    for index in range(3):
        reference = _whole_image_reference(model, stack[0, index])
        np.testing.assert_allclose(out[0, index], reference, rtol=1e-4, atol=2e-3)
    assert abs(float(out.mean()) - float(_whole_image_reference(model, stack[0, 0]).mean())) < 0.01


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": -1}, "batch_size must be an integer in [1, 4096]; got -1."),
        ({"batch_size": 0}, "batch_size must be an integer in [1, 4096]; got 0."),
        ({"batch_size": 2.0}, "batch_size must be an integer in [1, 4096]; got 2.0."),
        ({"batch_size": True}, "batch_size must be an integer in [1, 4096]; got True."),
        ({"tile_size": "256"}, "tile_size (at least 2 * overlap + 4) must be an integer in [68, 16384]; got '256'."),
        ({"tile_size": 10**9}, "tile_size (at least 2 * overlap + 4) must be an integer in [68, 16384]"),
        ({"overlap": 1.5}, "overlap must be an integer in [0, 16384]; got 1.5."),
    ],
)
def test_numeric_arguments_are_checked_before_any_tile(model, image, kwargs, message):
    with pytest.raises(InputError) as caught:
        denoise_steps(model, image, **kwargs)
    assert message in str(caught.value)


def test_a_negative_batch_size_never_returns_uninitialised_memory(model):
    """The probe's case: batch_size=-1 used to return np.empty's contents (zeros) without an error."""
    with pytest.raises(InputError, match="batch_size"):
        denoise(model, np.full((128, 128), 100.0, np.float32), batch_size=-1)


def test_the_model_must_be_a_denoising_model(image):
    with pytest.raises(InputError, match="model must be a DenoisingModel .* got str"):
        denoise("model.pt", image)


@pytest.mark.parametrize("length", [1, 100, 191, 192, 193, 500, 1024, 1500])
@pytest.mark.parametrize("tile_size, margin, multiple", [(256, 32, 4), (512, 32, 4), (100, 16, 8)])
def test_tiles_split_the_axis_evenly_within_the_tile_size(length, tile_size, margin, multiple):
    tile = _tile_length(length, tile_size, margin, multiple)
    longest = -(-tile_size // multiple) * multiple
    fewest = -(-length // (longest - 2 * margin))
    inner = tile - 2 * margin
    assert tile % multiple == 0 and tile <= longest
    assert -(-length // inner) == fewest  # no more tiles than the largest tile would need
    assert inner < -(-length // fewest) + multiple  # and no larger than an even split needs


def test_tiling_of_a_1024_image_computes_few_extra_pixels():
    """Computed pixels over image pixels: fixed 256 tiles with 32 px margins cost 2.25x (6 x 6 tiles of 256)."""
    def overhead(tile_size):
        tile = _tile_length(1024, tile_size, 32, 4)
        return (-(-1024 // (tile - 64)) * tile) ** 2 / 1024**2

    assert overhead(256) < 1.95  # even split: 6 x 6 tiles of 236
    assert overhead(DEFAULT_TILE) < 1.45  # 3 x 3 tiles of 408
