"""Outline geometry of the patch overlays (numpy only): what is drawn covers exactly the selected windows."""

import numpy as np
from skimage.draw import polygon2mask

from napari_autostructn2v.widgets._overlay import patch_boxes, patch_outline


def union(corners, size, shape):
    covered = np.zeros(shape, bool)
    for y, x in corners:
        covered[y : y + size, x : x + size] = True
    return covered


def filled(outline, shape):
    """Pixels inside the outline: union of boxes, or the even-odd fill of closed paths (holes included)."""
    inside = np.zeros(shape, bool)
    for path in outline.paths:
        mask = polygon2mask(shape, path)
        inside = inside | mask if outline.boxes else inside ^ mask
    return inside


def test_the_outline_of_random_windows_covers_exactly_their_union():
    rng = np.random.default_rng(0)
    for _ in range(40):
        size = int(rng.integers(3, 17))
        corners = np.stack([rng.integers(0, 60 - size, 25), rng.integers(0, 70 - size, 25)], axis=1)
        outline = patch_outline(corners, size, max_boxes=0, max_paths=10**6)
        assert not outline.boxes and outline.block == 1
        assert all(np.array_equal(path[0], path[-1]) for path in outline.paths)  # closed
        np.testing.assert_array_equal(filled(outline, (60, 70)), union(corners, size, (60, 70)))


def test_few_patches_are_boxes_around_their_pixels():
    corners = np.array([[0, 0], [10, 20]])
    outline = patch_outline(corners, 8, max_boxes=2)
    assert outline.boxes and outline.shape_type == "rectangle" and len(outline.paths) == 2
    np.testing.assert_array_equal(outline.paths[1], patch_boxes(corners, 8)[1])
    np.testing.assert_array_equal(outline.paths[1].min(axis=0), [9.5, 19.5])
    np.testing.assert_array_equal(filled(outline, (30, 30)), union(corners, 8, (30, 30)))


def test_a_fragmented_union_is_simplified_to_at_most_max_paths():
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.arange(0, 480, 8), np.arange(0, 480, 8), indexing="ij"), -1).reshape(-1, 2)
    corners = grid[rng.random(len(grid)) < 0.4]  # a checkerboard-like scatter: hundreds of separate regions
    exact = patch_outline(corners, 8, max_boxes=0, max_paths=10**6)
    simplified = patch_outline(corners, 8, max_boxes=0, max_paths=12)
    assert len(exact.paths) > 100
    assert len(simplified.paths) <= 12 and simplified.block > 1
    # still an outline of roughly the same area, not of the whole image
    area = filled(simplified, (488, 488)).mean()
    assert 0.2 < area < 0.8


def test_no_patches_draw_nothing():
    assert patch_outline(np.empty((0, 2), int), 8, max_boxes=0).paths == []
