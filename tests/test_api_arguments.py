"""Numeric arguments of the public ROI functions: wrong types and ranges are named, never silently accepted."""

import numpy as np
import pytest

from napari_autostructn2v import InputError, select_roi_patches, suggest_threshold
from napari_autostructn2v.core.roi import count_windows


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((96, 96)).astype(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 0}, "patch_size must be an integer >= 1; got 0."),
        ({"patch_size": -32}, "patch_size must be an integer >= 1; got -32."),
        ({"patch_size": 32.0}, "patch_size must be an integer >= 1; got 32.0."),
        ({"patch_size": True}, "patch_size must be an integer >= 1; got True."),
        ({"threshold": "0.5"}, "threshold must be a number in [0, 1]; got '0.5'."),
        ({"threshold": float("nan")}, "threshold must be a number in [0, 1]; got nan."),
        ({"threshold": 1.5}, "threshold must be a number in [0, 1]; got 1.5."),
        ({"scale_factor": 0}, "scale_factor must be a number in (0, 1]; got 0."),
        ({"overlap": 1}, "overlap must be a number in [0, 1); got 1."),
        ({"select_background": "yes"}, "select_background must be True or False; got 'yes'."),
        ({"max_patches": -1}, "max_patches (None: all) must be an integer >= 0; got -1."),
        ({"smoothing": -2}, "smoothing (None: automatic) must be a number >= 0; got -2."),
        ({"seed": -1}, "seed (None: random) must be an integer >= 0; got -1."),
    ],
)
def test_select_roi_patches_names_the_bad_argument(image, kwargs, message):
    with pytest.raises(InputError) as caught:
        select_roi_patches(image, **{"patch_size": 32, **kwargs})
    assert message in str(caught.value)


def test_counting_and_suggesting_check_their_arguments_too(image):
    with pytest.raises(InputError, match="patch_size must be an integer >= 1; got 0"):
        count_windows(image, patch_size=0)
    with pytest.raises(InputError, match=r"overlap must be a number in \[0, 1\); got -0.5"):
        suggest_threshold(image, patch_size=32, overlap=-0.5)


def test_valid_numpy_arguments_are_accepted(image):
    chosen = select_roi_patches(image, np.int64(32), np.float32(0.6), max_patches=np.int32(3), seed=np.uint8(1))
    assert chosen.shape == (3, 2)
    assert np.array_equal(chosen, select_roi_patches(image, 32, 0.6, max_patches=3, seed=1))
