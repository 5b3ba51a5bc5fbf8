import tracemalloc

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_autostructn2v import InputError, MaskConfig, estimate_struct_mask, make_sample, preset_mask
from napari_autostructn2v.core import mask as mask_module
from napari_autostructn2v.core.mask import _detrended, _mask_from_acf, _tiles, check_mask
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
    assert estimate.recorruption is not None  # additive noise of short reach: recorrupted pairs by default
    assert ("uncorrelated" in estimate.reason) == (kind == "white")
    blind_spots = estimate_struct_mask(noisy, config=MaskConfig(recorrupt=False))
    assert blind_spots.recorruption is None and offsets(blind_spots.mask) == expected
    assert ("plain N2V" in blind_spots.reason) == (kind == "white")


def test_row_offsets_give_a_long_line_unless_they_are_removed():
    """A random offset per row correlates whole rows: kept, the mask spans the whole search window; removed (the
    default, core.banding), what is left of this noise is white."""
    _, noisy = make_sample((256, 256), "row_offsets", sigma=0.1, seed=1)
    kept = estimate_struct_mask(noisy, config=MaskConfig(remove_banding=False))
    assert offsets(kept.mask) == {(0, dx) for dx in range(-12, 13)} and kept.banding == ()
    removed = estimate_struct_mask(noisy)
    assert removed.banding == ("rows",) and removed.reason.startswith("row offsets removed")
    assert offsets(removed.mask) == {(0, 0)}


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


# ----------------------------------------------------------------------------- robust estimation (issue 8)

def smooth_texture(shape=(128, 128), seed=0, amplitude=0.1):
    """A dense, smooth, isotropic signal texture (no flat background anywhere), standard deviation `amplitude`."""
    texture = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    return amplitude * texture / texture.std()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_noise_over_dense_texture_gives_the_centre(seed):
    """The isotropic floor is signal texture: white noise over it is plain N2V, not a 5x5 blob."""
    rng = np.random.default_rng(seed)
    noisy = smooth_texture(seed=seed) + 0.1 * rng.standard_normal((128, 128))
    assert estimate_struct_mask(noisy).mask.shape == (1, 1)
    blob = estimate_struct_mask(noisy, config=MaskConfig(remove_isotropic=False)).mask
    assert blob.sum() == 25  # what the texture gives without the rule


def coins_under_line_noise(top: int, left: int, seed: int) -> np.ndarray:
    """A 256x256 crop of scikit-image's bundled photograph of coins, scaled to [0, 1], under [1, 1, 1] horizontal
    noise of sigma 0.1."""
    crop = data.coins()[top : top + 256, left : left + 256].astype(np.float64)
    low, high = np.percentile(crop, (0.5, 99.5))
    clean = np.clip((crop - low) / (high - low), 0, 1)
    white = np.random.default_rng(seed).standard_normal(clean.shape)
    return clean + 0.1 * ndimage.convolve1d(white, np.ones(3) / np.sqrt(3), axis=1, mode="wrap")


@pytest.mark.parametrize(("top", "left", "seed"), [(40, 82, 100), (22, 66, 101)])
def test_texture_along_the_rows_is_not_taken_for_noise(top, left, seed, monkeypatch):
    """The coins' rims correlate along the rows far beyond the noise, more than in the weakest direction: read
    two and three lags beside the line, they are texture, and the mask is the noise's own 1x5."""
    noisy = coins_under_line_noise(top, left, seed)
    assert offsets(estimate_struct_mask(noisy).mask) == {(0, dx) for dx in range(-2, 3)}
    monkeypatch.setattr(mask_module, "_across_line_floor", lambda covariance: np.full_like(covariance, -np.inf))
    assert estimate_struct_mask(noisy).mask.sum() == 25  # the isotropic floor alone: a full blob


def test_the_floor_beside_a_line_leaves_a_one_pixel_line_out():
    """On a covariance of a one-pixel horizontal line over a texture that is smooth across it, the floor along the
    line is the texture's value there (extrapolated from two and three lags across), not the line's."""
    window = 14
    dy, dx = np.mgrid[-window : window + 1, -window : window + 1]
    texture = 0.5 * np.exp(-(dy**2) / 50.0 - dx**2 / 200.0)
    line = np.where(dy == 0, np.exp(-np.abs(dx) / 2.0), 0.0)
    floor = mask_module._across_line_floor(texture + line)
    assert np.allclose(floor[window, window + 1 :], texture[window, window + 1 :], atol=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_noise_over_dense_texture_keeps_its_line(seed):
    """Removing the isotropic floor keeps a correlation along a line: [1, 1, 1] noise gives 1x5."""
    rng = np.random.default_rng(seed)
    noise = ndimage.convolve1d(rng.standard_normal((128, 128)), np.ones(3) / np.sqrt(3), axis=1)
    no_extension = MaskConfig(extend_correlation=0.1)  # the floor alone; extension is tested below
    estimate = estimate_struct_mask(smooth_texture(seed=seed, amplitude=0.05) + 0.1 * noise, config=no_extension)
    assert offsets(estimate.mask) == {(0, dx) for dx in range(-2, 3)}
    window = estimate.acf.shape[0] // 2
    assert estimate.acf[window, window + 1] == pytest.approx(2 / 3, abs=0.1)  # the floor is the vertical lag


def test_significance_is_in_units_of_the_noise_variance():
    """With heavy texture the noise is a small part of the variance, and the covariance's standard
    error is large next to it: the significance test must not let texture fluctuations through."""
    rng = np.random.default_rng(3)
    noisy = smooth_texture(amplitude=0.3, seed=3) + 0.1 * rng.standard_normal((128, 128))
    assert estimate_struct_mask(noisy, config=MaskConfig(min_correlation=0.01)).mask.shape == (1, 1)


def test_the_capped_mask_grows_from_the_centre():
    """A correlation that rises away from the centre (filtered signal along x) still gives a line
    through the centre, not the centre alone, when the strongest lags lie beyond the cap."""
    acf = np.zeros((29, 29))
    acf[14, :] = 0.3 + 0.05 * np.abs(np.arange(-14, 15))
    acf[13, 8:21] = acf[15, 8:21] = 0.2
    acf[14, 14] = 1.0
    mask = _mask_from_acf(acf, np.full_like(acf, 0.1), radius=12, max_pixels=9)
    assert offsets(mask) == {(0, dx) for dx in range(-4, 5)}
    np.testing.assert_array_equal(mask, mask[::-1, ::-1])


@pytest.mark.parametrize("seed", [0, 2])
def test_a_slowly_decaying_line_is_followed_further(seed):
    """Gaussian-correlated noise (length 2): lag 6 has correlation 0.10, lag 7 0.05. The line found
    with min_correlation is extended along its own direction down to extend_correlation."""
    noise = structured_noise((128, 128), "horizontal_gauss", 0.1, length=2.0, seed=seed)
    extended = estimate_struct_mask(noise).mask
    plain = estimate_struct_mask(noise, config=MaskConfig(extend_correlation=0.1)).mask
    assert max(abs(dx) for _, dx in offsets(extended)) > max(abs(dx) for _, dx in offsets(plain)) >= 5
    assert all(dy == 0 for dy, dx in offsets(extended) - offsets(plain))


def test_detrending_by_tiles_equals_the_whole_image():
    image = np.random.default_rng(0).standard_normal((100, 90))
    whole = image - ndimage.gaussian_filter(image, 6.0, mode="reflect")
    for box in _tiles(image.shape, 32):
        y0, y1, x0, x1 = box
        np.testing.assert_allclose(_detrended(image, box, 6.0), whole[y0:y1, x0:x1], atol=1e-12)


def test_tiles_bound_memory_and_keep_the_mask(monkeypatch):
    """A 512x512 image analysed in 128-pixel tiles: the same mask, a fraction of the memory."""
    _, noisy = make_sample((512, 512), "horizontal", sigma=0.1, seed=0)
    whole = estimate_struct_mask(noisy).mask
    monkeypatch.setattr(mask_module, "TILE", 128)
    tracemalloc.start()
    tiled = estimate_struct_mask(noisy).mask
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(tiled, whole)
    assert peak < 3 * 2**20  # one 512x512 float64 array alone is 2 MiB; the whole-image FFTs took ~20 MiB
    monkeypatch.setattr(mask_module, "MAX_TILES", 2)
    assert estimate_struct_mask(noisy).mask.shape == whole.shape  # a subsample of tiles is enough


@pytest.mark.parametrize("shape", [(7, 64), (64, 5), (15, 15), (3, 40, 12)])
def test_images_too_small_for_the_lag_window_are_explained(shape):
    with pytest.raises(InputError, match="at least 16 pixels on each side"):
        estimate_struct_mask(np.random.default_rng(0).standard_normal(shape))
    with pytest.raises(InputError, match="max_radius"):
        estimate_struct_mask(np.zeros(shape), is_noise=True)


def test_a_small_image_works_with_a_small_radius():
    noisy = np.random.default_rng(0).standard_normal((20, 20))
    assert estimate_struct_mask(noisy, config=MaskConfig(max_radius=4)).mask.shape[0] <= 9
