"""Geometry of a patch overlay: a few outline paths instead of thousands of rectangles (numpy only, no Qt).

Setting the data of a napari Shapes layer costs about a millisecond per shape, so a selection of
thousands of overlapping windows is drawn as the outline of their union: one closed path per
boundary (outer edge or hole) of the covered area. Few patches are drawn as individual boxes.
When the union is so fragmented that it has more than `max_paths` boundaries, it is outlined on a
coarser grid (blocks of 2x2, 4x4, ... grid cells, each kept when at least half covered).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

MAX_PATHS = 24


@dataclass
class Outline:
    """Closed vertex arrays (N, 2) in pixel coordinates, around pixel edges, ready for a Shapes layer."""

    paths: list[np.ndarray] = field(default_factory=list)
    boxes: bool = True  # the paths are the individual patch rectangles
    block: int = 1  # > 1: the union was simplified to blocks of that many grid cells a side

    @property
    def shape_type(self) -> str:
        return "rectangle" if self.boxes else "path"


def patch_boxes(corners: np.ndarray, size: int) -> np.ndarray:
    """(N, 4, 2) rectangle vertices around the pixels of square patches with top-left `corners`."""
    square = np.array([[0, 0], [0, size], [size, size], [size, 0]], float)
    return np.asarray(corners, float).reshape(-1, 2)[:, None, :] - 0.5 + square[None]


def patch_outline(corners: np.ndarray, size: int, max_boxes: int, max_paths: int = MAX_PATHS) -> Outline:
    """The patches with top-left `corners` as boxes (up to `max_boxes`) or as the outline of their union."""
    corners = np.asarray(corners, np.int64).reshape(-1, 2)
    if len(corners) <= max_boxes:
        return Outline(list(patch_boxes(corners, size)), boxes=True)
    ys, xs, covered = _coverage(corners, size)
    block = 1
    while _count_loops(covered) > max_paths and min(covered.shape) > 2:
        ys, xs, covered = _coarsen(ys, xs, covered)
        block *= 2
    loops = _loops(covered)
    paths = [np.stack([ys[rows], xs[cols]], axis=1).astype(float) - 0.5 for rows, cols in loops]
    return Outline([np.concatenate([path, path[:1]]) for path in paths], boxes=False, block=block)


def _coverage(corners: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell edges (ys, xs) of the grid made by all window edges, and which cells some window covers."""
    ys = np.unique(np.concatenate([corners[:, 0], corners[:, 0] + size]))
    xs = np.unique(np.concatenate([corners[:, 1], corners[:, 1] + size]))
    top, bottom = np.searchsorted(ys, corners[:, 0]), np.searchsorted(ys, corners[:, 0] + size)
    left, right = np.searchsorted(xs, corners[:, 1]), np.searchsorted(xs, corners[:, 1] + size)
    shape = (len(ys), len(xs))
    # a 2D difference array: +1 at each window's top-left, -1 at its top-right and bottom-left, +1 bottom-right
    counts = np.zeros(shape[0] * shape[1], np.int64)
    for rows, cols, sign in ((top, left, 1), (top, right, -1), (bottom, left, -1), (bottom, right, 1)):
        counts += sign * np.bincount(np.ravel_multi_index((rows, cols), shape), minlength=counts.size)
    covered = counts.reshape(shape).cumsum(0).cumsum(1)[:-1, :-1] > 0
    return ys, xs, covered


def _coarsen(ys: np.ndarray, xs: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge 2x2 cells into one, kept when at least half of its area is covered."""
    if covered.shape[0] % 2:
        covered, ys = np.pad(covered, ((0, 1), (0, 0))), np.append(ys, ys[-1] + 1)
    if covered.shape[1] % 2:
        covered, xs = np.pad(covered, ((0, 0), (0, 1))), np.append(xs, xs[-1] + 1)
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :] * covered
    total = np.diff(ys[::2])[:, None] * np.diff(xs[::2])[None, :]
    merged = area.reshape(covered.shape[0] // 2, 2, covered.shape[1] // 2, 2).sum(axis=(1, 3))
    return ys[::2], xs[::2], 2 * merged >= total


def _count_loops(covered: np.ndarray) -> int:
    """How many boundaries `_loops` finds: covered areas (edge-connected) plus holes (corner-connected)."""
    areas = ndimage.label(covered)[1]
    outside = ndimage.label(np.pad(~covered, 1, constant_values=True), structure=np.ones((3, 3)))[1]
    return areas + outside - 1


def _loops(covered: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The boundaries of the covered cells as (edge rows, edge columns) of each corner, in order."""
    padded = np.pad(covered, 1).astype(np.float32)
    loops = []
    for contour in find_contours(padded, 0.5):
        points = contour[:-1]  # closed: the last point repeats the first
        # each point crosses a cell boundary between two cell centres: one coordinate ends in .5
        crosses_row = np.abs(points[:, 0] % 1 - 0.5) < 0.25
        following = np.roll(points, -1, axis=0)
        turn = crosses_row != np.roll(crosses_row, -1)
        rows = np.where(crosses_row, points[:, 0], following[:, 0])[turn]
        cols = np.where(crosses_row, following[:, 1], points[:, 1])[turn]
        # padded boundary k + 0.5 lies between padded cells k and k + 1: the edge index k of the grid
        loops.append((np.rint(rows - 0.5).astype(int), np.rint(cols - 0.5).astype(int)))
    return loops
