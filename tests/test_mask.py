import numpy as np
import pytest

from napari_autostructn2v import InputError, MaskConfig, estimate_struct_mask, make_sample, preset_mask
from napari_autostructn2v.core.mask import check_mask
from napari_autostructn2v.core.sample import structured_noise


def offsets(mask):
    half = mask.shape[0] // 2
    return {(int(y) - half, int(x) - half) for y, x in zip(*np.nonzero(mask))}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("horizontal", {(0, dx) for dx in range(-2, 3)}),
        ("vertical", {(dy, 0) for dy in range(-2, 3)}),
        ("diagonal", {(d, d) for d in range(-2, 3)}),
        ("white", {(0, 0)}),
    ],
)
def test_mask_from_the_raw_image(kind, expected):
    """[1, 1, 1] kernels correlate neighbours up to two pixels apart; white noise correlates none."""
    _, noisy = make_sample((256, 256), kind, sigma=0.1, seed=4)
    estimate = estimate_struct_mask(noisy)
    assert offsets(estimate.mask) == expected
    assert estimate.mask.shape[0] % 2 == 1 and estimate.mask.shape[0] == estimate.mask.shape[1]
    assert estimate.acf[estimate.acf.shape[0] // 2, estimate.acf.shape[1] // 2] == pytest.approx(1.0)
    assert ("plain N2V" in estimate.reason) == (kind == "white")


def test_row_offsets_give_a_long_line():
    """A random offset per row correlates whole rows: the mask spans the whole search window."""
    _, noisy = make_sample((256, 256), "row_offsets", sigma=0.1, seed=1)
    assert offsets(estimate_struct_mask(noisy).mask) == {(0, dx) for dx in range(-12, 13)}


def test_long_correlation_is_found_and_symmetric():
    _, noisy = make_sample((256, 256), "horizontal_gauss", sigma=0.1, seed=2)
    mask = estimate_struct_mask(noisy).mask
    found = offsets(mask)
    assert all(dy == 0 for dy, _ in found)
    assert max(dx for _, dx in found) >= 4
    np.testing.assert_array_equal(mask, mask[::-1, ::-1])


def test_mask_is_bounded():
    """Isotropically correlated noise must not produce a destructive blob."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    blob_noise = ndimage.gaussian_filter(rng.standard_normal((256, 256)), 3.0)
    mask = estimate_struct_mask(blob_noise, is_noise=True).mask
    assert mask.sum() <= 25 and mask.shape[0] <= 7  # the 25 most correlated lags, not a 25x25 blob
    small = estimate_struct_mask(blob_noise, is_noise=True, config=MaskConfig(max_radius=2, max_pixels=9)).mask
    assert small.shape[0] <= 5 and small.sum() <= 9
    assert mask[mask.shape[0] // 2, mask.shape[1] // 2]


def test_mask_from_residual_noise_and_from_a_stack():
    noise = structured_noise((128, 128), "vertical", 0.1, seed=1)
    assert offsets(estimate_struct_mask(noise, is_noise=True).mask) == {(dy, 0) for dy in range(-2, 3)}
    stack = np.stack([make_sample((128, 128), "horizontal", 0.1, seed=s)[1] for s in range(3)])
    assert offsets(estimate_struct_mask(stack).mask) == {(0, dx) for dx in range(-2, 3)}
    assert offsets(estimate_struct_mask(list(stack)).mask) == {(0, dx) for dx in range(-2, 3)}


def test_constant_image_gives_the_centre():
    estimate = estimate_struct_mask(np.full((64, 64), 3.0))
    assert estimate.mask.shape == (1, 1) and estimate.mask[0, 0]
    assert "constant" in estimate.reason


def test_text_rendering():
    estimate = estimate_struct_mask(make_sample((128, 128), "horizontal", 0.1, seed=0)[1])
    assert estimate.as_text().splitlines()[estimate.mask.shape[0] // 2] == "#" * estimate.mask.shape[0]


@pytest.mark.parametrize("kind", ["horizontal", "vertical", "cross", "diagonal", "antidiagonal", "centre"])
def test_presets_are_valid_masks(kind):
    mask = preset_mask(kind, 5)
    assert check_mask(mask).shape == (5, 5)
    assert mask.sum() == {"cross": 9, "centre": 1}.get(kind, 5)


def test_bad_masks_and_inputs_are_explained():
    with pytest.raises(InputError, match="odd square"):
        check_mask(np.ones((2, 2)))
    with pytest.raises(InputError, match="centre"):
        check_mask(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="odd"):
        preset_mask("horizontal", 4)
    with pytest.raises(InputError, match="NaN"):
        estimate_struct_mask(np.full((32, 32), np.inf))
    with pytest.raises(InputError, match="No image"):
        estimate_struct_mask([])
