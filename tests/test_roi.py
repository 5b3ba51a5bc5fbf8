import numpy as np
import pytest

from napari_autostructn2v import InputError, select_roi_patches, suggest_threshold
from napari_autostructn2v.core.roi import roi_map


@pytest.fixture
def bright_object():
    """A bright disc on the right half of a dark, noisy image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    image = 0.1 + 0.02 * rng.standard_normal((256, 256))
    image[(yy - 128) ** 2 + (xx - 192) ** 2 < 50**2] += 1.0
    return image.astype(np.float32)


def test_background_is_dark_and_structure_is_bright(bright_object):
    background = select_roi_patches(bright_object, 32, 0.3, select_background=True)
    structure = select_roi_patches(bright_object, 32, 0.8, select_background=False)
    assert len(background) > 0 and len(structure) > 0

    def patch_means(corners):
        return np.array([bright_object[y : y + 32, x : x + 32].mean() for y, x in corners])

    assert patch_means(background).max() < patch_means(structure).min()
    assert not {tuple(c) for c in background} & {tuple(c) for c in structure}


def test_patches_lie_inside_the_image():
    image = np.random.default_rng(1).random((203, 317)).astype(np.float32)
    for background in (True, False):
        corners = select_roi_patches(image, 48, 0.5, select_background=background, overlap=0.25)
        assert corners.dtype.kind == "i" and corners.shape[1] == 2
        assert (corners >= 0).all()
        assert (corners[:, 0] + 48 <= 203).all() and (corners[:, 1] + 48 <= 317).all()


def test_threshold_moves_the_count_in_the_expected_direction(bright_object):
    counts_bg = [len(select_roi_patches(bright_object, 32, t, select_background=True)) for t in (0.2, 0.5, 0.8)]
    counts_st = [len(select_roi_patches(bright_object, 32, t, select_background=False)) for t in (0.2, 0.5, 0.8)]
    assert counts_bg[0] < counts_bg[1] < counts_bg[2]
    assert counts_st[0] > counts_st[1] > counts_st[2]


def test_window_means_match_a_plain_loop(bright_object):
    """The vectorised window means equal the mean of each window of the map computed one by one."""
    preprocessed = roi_map(bright_object, 0.25, None, 32)
    corners, means = preprocessed.windows(32, 0.5)
    small = 32 // preprocessed.factor
    for (y, x), mean in zip(corners, means):
        window = preprocessed.map[y // 4 : y // 4 + small, x // 4 : x // 4 + small]
        assert mean == pytest.approx(window.mean())


def test_preprocessed_map_is_cached_per_image(bright_object):
    first = roi_map(bright_object, 0.25, None, 64)
    assert roi_map(bright_object, 0.25, None, 64) is first
    copy = roi_map(bright_object.copy(), 0.25, None, 64)  # another buffer: its own entry, the same map
    assert copy is not first
    np.testing.assert_array_equal(copy.map, first.map)
    changed = bright_object.copy()
    changed[::4, ::4] += 1
    assert roi_map(changed, 0.25, None, 64) is not first


def test_max_patches_is_a_reproducible_subset(bright_object):
    every = select_roi_patches(bright_object, 32, 0.9)
    subset = select_roi_patches(bright_object, 32, 0.9, max_patches=10, seed=3)
    assert len(subset) == 10
    assert {tuple(c) for c in subset} <= {tuple(c) for c in every}
    np.testing.assert_array_equal(subset, select_roi_patches(bright_object, 32, 0.9, max_patches=10, seed=3))


def test_suggested_threshold_separates_object_and_background(bright_object):
    threshold = suggest_threshold(bright_object, 32)
    assert 0 < threshold < 1
    assert len(select_roi_patches(bright_object, 32, threshold)) > 0
    assert len(select_roi_patches(bright_object, 32, threshold, select_background=False)) > 0


def test_constant_image_does_not_divide_by_zero():
    image = np.full((128, 128), 5, np.uint16)
    assert len(select_roi_patches(image, 32, 0.5, select_background=True)) > 0
    assert len(select_roi_patches(image, 32, 0.5, select_background=False)) == 0
    assert suggest_threshold(image, 32) == 0.5


@pytest.mark.parametrize(
    ("image", "kwargs", "fragment"),
    [
        (np.zeros((20, 20)), {"patch_size": 32}, "larger than the image"),
        (np.zeros((64, 64, 3)), {}, "RGB"),
        (np.zeros((4, 64, 64)), {"patch_size": 32}, "one 2D slice"),
        (np.full((64, 64), np.nan), {"patch_size": 32}, "NaN"),
        (np.zeros((64, 64)), {"patch_size": 32, "threshold": 2.0}, "threshold"),
        (np.zeros((64, 64)), {"patch_size": 32, "scale_factor": 0}, "scale_factor"),
    ],
)
def test_bad_input_is_explained(image, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        select_roi_patches(image, **kwargs)
