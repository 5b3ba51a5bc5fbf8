import numpy as np
import pytest

from napari_autostructn2v import InputError
from napari_autostructn2v.core.axes import canonical_image, check_axes, layout


@pytest.mark.parametrize(
    ("axes", "ndim", "expected"),
    [(None, 2, "YX"), (None, 3, "SYX"), (None, 4, "SSYX"), ("zyx", 3, "ZYX"), ("ZYX", 4, "SZYX"),
     ("TCZYX", 5, "TCZYX"), ("YXC", 3, "YXC"), ("SSYX", 4, "SSYX")],
)
def test_axes_are_checked_and_completed(axes, ndim, expected):
    assert check_axes(axes, ndim) == expected


@pytest.mark.parametrize(
    ("axes", "ndim", "message"),
    [("ZYQ", 3, "unknown letter"), ("ZZYX", 4, "more than once"), ("ZX", 2, "must include Y and X"),
     ("CZYX", 3, "3 dimensions"), (3, 3, "must be a string")],
)
def test_bad_axes_are_refused(axes, ndim, message):
    with pytest.raises(InputError, match=message):
        check_axes(axes, ndim)


@pytest.mark.parametrize("axes", ["TCZYX", "CTZYX", "ZCTYX", "YXCZT", "XYZCT"])
def test_canonical_order_and_back(axes):
    shape = (2, 3, 4, 5, 6)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    found = layout(image, axes)
    canonical = found.to_canonical(image)
    assert canonical.shape == (found.size("T"), found.size("C"), found.size("Z"), found.size("Y"), found.size("X"))
    for index in np.ndindex(shape):  # every pixel lands at its (T, C, Z, Y, X) position
        position = tuple(index[axes.index(letter)] for letter in "TCZYX")
        assert canonical[position] == image[index]
    restored = found.restore(canonical)
    assert restored.shape == image.shape
    np.testing.assert_array_equal(restored, image)


def test_absent_axes_have_length_one_and_samples_merge():
    stack = np.zeros((3, 4, 20, 30), np.uint16)
    canonical, found = canonical_image(stack, "TZYX")
    assert canonical.shape == (3, 1, 4, 20, 30) and found.axes == "TZYX"
    canonical, _ = canonical_image(stack)
    assert canonical.shape == (12, 1, 1, 20, 30)
    canonical, _ = canonical_image(stack, "CYX")
    assert canonical.shape == (3, 4, 1, 20, 30)


def test_canonical_image_keeps_the_image_checks():
    with pytest.raises(InputError, match="RGB"):
        canonical_image(np.zeros((20, 20, 3)))
    canonical, _ = canonical_image(np.zeros((20, 20, 3)), "YXC")  # channels last, when said so
    assert canonical.shape == (1, 3, 1, 20, 20)
    with pytest.raises(InputError, match="NaN"):
        canonical_image(np.full((2, 20, 20), np.nan), "CYX")


def test_plane_numbers_follow_the_training_order():
    found = layout(np.zeros((3, 2, 4, 8, 8)), "ZCTYX")  # planes of training: T first, then Z
    assert found.plane_number((0, 1, 0)) == 0
    assert found.plane_number((1, 0, 0)) == 1  # the channel does not count
    assert found.plane_number((2, 0, 3)) == 3 * 3 + 2
    assert layout(np.zeros((5, 8, 8)), "CYX").plane_number((4,)) == 0
    assert layout(np.zeros((8, 8))).plane_number(()) == 0


def test_axes_choices_and_labels():
    from napari_autostructn2v.core.axes import axes_choices, axes_from_labels

    assert axes_choices(3) == ["SYX", "CYX", "TYX", "ZYX"]
    assert axes_choices(3, "ZYX")[0] == "ZYX"
    four = axes_choices(4)
    assert "TZYX" in four and "ZZYX" not in four and four[0] == "SSYX"
    assert axes_choices(2) == ["YX"]
    assert axes_from_labels(("z", "y", "x")) == "ZYX"
    assert axes_from_labels(("-3", "-2", "-1")) is None
    assert axes_from_labels(("c", "y", "x")) == "CYX"
    assert axes_from_labels(("y", "x", "c")) is None
