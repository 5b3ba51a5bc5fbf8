"""Line offsets (sCMOS read-out banding): found in the image and removed before training and denoising.

A camera read out line by line can add one offset to every pixel of a row (or of a column). Such
noise is correlated along the whole line, further than any blind-spot mask reaches: the network
sees the line's offset in its unmasked neighbours and copies it into the output as stripes. The
offsets are estimated from the image itself, as the median along each line of the image less its
mean over the lines around it, kept only at scales of a few lines (slow intensity changes across
lines are signal), and subtracted. What is left is short-range noise that a short mask removes.
On the real set's six row-banding cases (sigma 0.1) this gained 1.4 dB on average, from -0.4 (moon) to
+3.6 (cell); see docs/benchmarks.md.

A plane is found banded along rows when the offsets estimated from its left and right halves agree
(correlation at least `AGREEMENT`): an offset is shared by the whole line, noise correlated over a
few pixels and most signal are not. Signal that does span the lines, such as text or a grating, changes
smoothly from one line to the next, where a camera's offsets do not: offsets whose neighbouring lines
correlate `SMOOTHNESS` or more are not taken for banding. Columns are tested the same way.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LINES = ("rows", "columns")
NEIGHBOURS = 8  # lines on each side averaged (with the line itself) as its reference; also the scale of the offsets
PASSES = 3  # estimates refined against neighbours with the previous offsets removed
BAND = 1024  # offsets are medians over at most this many central pixels of each line: bounded memory
AGREEMENT = 0.7  # correlation of the two halves' offsets above which a plane is taken as banded...
SMOOTHNESS = 0.5  # ...unless neighbouring lines' offsets correlate this much: signal spanning lines (text, gratings)
NUMERICAL_FLOOR = 1e-6  # offsets below this fraction of the lines' spread are rounding (a clean checkerboard's)
MIN_LINES = 32  # fewer lines (or fewer than this many pixels per half line) are not tested


def _band(length: int) -> slice:
    """The central part, at most BAND long, of an axis of `length`."""
    start = max(0, (length - BAND) // 2)
    return slice(start, start + min(length, BAND))


def row_offsets(region: np.ndarray) -> np.ndarray:
    """One offset per row of a 2D `region`: the median along the row of the region less its mean over the row
    and the NEIGHBOURS rows on each side, refined PASSES times, with its smooth part across rows removed."""
    region = np.asarray(region, np.float64)
    offsets = np.zeros(region.shape[0])
    for _ in range(PASSES):
        reference = ndimage.uniform_filter1d(region - offsets[:, None], 2 * NEIGHBOURS + 1, axis=0, mode="reflect")
        offsets = np.median(region - reference, axis=1)
        offsets -= ndimage.gaussian_filter1d(offsets, NEIGHBOURS, mode="reflect")
    return offsets


def line_offsets(plane, lines: tuple[str, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(row offsets, column offsets) of a 2D plane (numpy, dask or zarr), None for lines not in `lines`.

    Each is measured on a central band of the plane (at most BAND pixels along the lines), so only that
    band is read. The two do not disturb each other: a column's offset is the same in neighbouring rows
    and cancels in the rows' estimate, and likewise."""
    rows, columns = (row_offsets(lines_band(plane, name)) if name in lines else None for name in LINES)
    return rows, columns


def _subtract_offsets(planes: np.ndarray, lines: tuple[str, ...]) -> None:
    """Remove each plane's `lines` offsets from the float32 `planes` (..., Y, X) in place."""
    for index in np.ndindex(planes.shape[:-2]):
        rows, columns = line_offsets(planes[index], lines)
        if rows is not None:
            planes[index] -= rows[:, None].astype(np.float32)
        if columns is not None:
            planes[index] -= columns[None, :].astype(np.float32)


def remove_offsets(array, lines: tuple[str, ...]) -> np.ndarray:
    """A float32 copy of `array` (..., Y, X) with each plane's `lines` offsets removed."""
    result = np.array(array, np.float32)
    _subtract_offsets(result, lines)
    return result


def remove_offsets_channels(array: np.ndarray, banding: list[tuple[str, ...]], channel_axis: int) -> np.ndarray:
    """A float32 copy of `array` (..., Y, X) with each plane's line offsets removed as its channel's `banding` says."""
    result = np.array(array, np.float32)
    by_channel = np.moveaxis(result, channel_axis, 0)  # a view: planes are written into `result`
    for channel, lines in enumerate(banding):
        if lines:
            _subtract_offsets(by_channel[channel], lines)
    return result


def lines_band(plane, name: str):
    """The central band of the plane's rows ("rows"), or of its columns as rows ("columns"): what `row_offsets`
    reads. Nothing is read yet from a dask or zarr plane."""
    height, width = plane.shape[-2:]
    if name == "rows":
        return plane[:, _band(width)]
    return plane[_band(height), :].T


def detect_banding(plane) -> tuple[str, ...]:
    """The lines ("rows", "columns") of the 2D `plane` that carry offsets of their own: those whose
    offsets, estimated separately from the two halves of the lines of a central square (at most BAND a
    side), correlate at least AGREEMENT, and whose neighbouring lines' offsets correlate less than
    SMOOTHNESS (a camera's offsets change from line to line; text or a grating spans several lines)."""
    height, width = plane.shape[-2:]
    plane = plane[_band(height), _band(width)]  # a central square: enough lines to tell, bounded memory
    found = []
    for name in LINES:
        lines = np.asarray(lines_band(plane, name), np.float64)
        count, length = lines.shape
        if count < MIN_LINES or length < 2 * MIN_LINES:
            continue
        half = length // 2
        first, second, whole = row_offsets(lines[:, :half]), row_offsets(lines[:, half:]), row_offsets(lines)
        floor = NUMERICAL_FLOOR * lines.std()
        if min(first.std(), second.std(), whole.std()) > floor and np.corrcoef(first, second)[0, 1] >= AGREEMENT \
                and np.corrcoef(whole[:-1], whole[1:])[0, 1] < SMOOTHNESS:
            found.append(name)
    return tuple(found)


def describe(lines: tuple[str, ...]) -> str:
    """E.g. 'row offsets removed (banding)'."""
    names = " and ".join(name.removesuffix("s") for name in lines)
    return f"{names} offsets removed (banding)"
