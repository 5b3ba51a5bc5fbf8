"""ROI patch selection: keep the patches whose (preprocessed) intensity is low or high.

The image is reduced by an integer factor (block mean), smoothed with a Gaussian tied to the
patch size and equalised globally, so that the threshold reads as a quantile: with
`select_background=True` and threshold 0.3 roughly the darkest 30 % of the image qualifies.
The map is cached per image and the means of all windows are computed at once from an
integral image, so a threshold change only re-compares a vector.
Global equalisation is used instead of the seed document's CLAHE: CLAHE stretches every tile
separately, so half of an empty background tile would read as structure.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.exposure import equalize_hist
from skimage.filters import threshold_otsu
from skimage.measure import block_reduce

from .checks import check_int, check_number
from .images import InputError, check_image

_CACHE_SIZE = 8
_cache: OrderedDict[tuple, RoiMap] = OrderedDict()


@dataclass
class RoiMap:
    """Preprocessed intensity map of one 2D image, in [0, 1], at a reduced scale."""

    map: np.ndarray
    factor: int
    image_shape: tuple[int, int]
    _windows: dict = field(default_factory=dict, repr=False)

    def windows(self, patch_size: int, overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corners (N, 2) in full-resolution pixels and the mean map value of each window."""
        patch_size = check_int(patch_size, "patch_size", 1)
        overlap = check_number(overlap, "overlap", 0.0, 1.0, high_open=True)
        key = (patch_size, overlap)
        if key not in self._windows:
            self._windows[key] = self._compute_windows(patch_size, overlap)
        return self._windows[key]

    def _compute_windows(self, patch_size: int, overlap: float) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.image_shape
        if patch_size > min(height, width):
            raise InputError(
                f"The patch size {patch_size} is larger than the image ({height}x{width}); choose a smaller patch size."
            )
        small = max(1, round(patch_size / self.factor))
        small = min(small, *self.map.shape)
        stride = max(1, round(small * (1.0 - overlap)))
        ys = _positions(self.map.shape[0], small, stride)
        xs = _positions(self.map.shape[1], small, stride)
        integral = np.pad(self.map, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        y0, x0 = np.meshgrid(ys, xs, indexing="ij")
        y1, x1 = y0 + small, x0 + small
        sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        means = (sums / (small * small)).ravel()
        corners = np.stack([y0.ravel(), x0.ravel()], axis=1) * self.factor
        corners[:, 0] = np.minimum(corners[:, 0], height - patch_size)
        corners[:, 1] = np.minimum(corners[:, 1], width - patch_size)
        return corners.astype(np.int64), means


def _positions(length: int, window: int, stride: int) -> np.ndarray:
    positions = np.arange(0, length - window + 1, stride)
    if positions[-1] != length - window:
        positions = np.append(positions, length - window)
    return positions


def default_smoothing(patch_size: int, scale_factor: float) -> float:
    """Gaussian sigma at the reduced scale: a quarter of the reduced patch size."""
    return max(0.5, patch_size * scale_factor / 4.0)


def reduction_factor(scale_factor: float) -> int:
    """The integer block size that approximates `scale_factor` (0.25 -> 4)."""
    scale_factor = check_number(scale_factor, "scale_factor", 0.0, 1.0, low_open=True)
    return max(1, round(1.0 / scale_factor))


def roi_map(image, scale_factor: float = 0.25, smoothing: float | None = None, patch_size: int = 64) -> RoiMap:
    """The preprocessed map of a 2D image, computed once and cached for repeated queries.

    The cache recognises an image by its buffer and a sparse sample of its pixels: after editing
    a few pixels of an array in place, pass a copy to have the map recomputed.
    """
    patch_size = check_int(patch_size, "patch_size", 1)
    scale_factor = check_number(scale_factor, "scale_factor", 0.0, 1.0, low_open=True)
    if smoothing is not None:
        smoothing = check_number(smoothing, "smoothing (None: automatic)", 0.0, float("inf"), high_open=True)
    image = check_image(image, finite=False)
    if image.ndim != 2:
        raise InputError(f"ROI selection works on one 2D slice; got shape {image.shape}. Pass image[z] for a stack.")
    sigma = default_smoothing(patch_size, scale_factor) if smoothing is None else float(smoothing)
    factor = reduction_factor(scale_factor)
    key = (_fingerprint(image), factor, sigma)
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    result = _preprocess(check_image(image), factor, sigma)
    _cache[key] = result
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _fingerprint(image: np.ndarray) -> tuple:
    """Cheap identity of an image: its buffer, layout and a sparse sample of its values."""
    step_y = max(1, image.shape[0] // 64)
    step_x = max(1, image.shape[1] // 64)
    sample = np.ascontiguousarray(image[::step_y, ::step_x])
    return (
        image.__array_interface__["data"][0],
        image.shape,
        image.strides,
        image.dtype.str,
        hash(sample.tobytes()),
    )


def _preprocess(image: np.ndarray, factor: int, sigma: float) -> RoiMap:
    height, width = image.shape
    small_h, small_w = max(1, height // factor), max(1, width // factor)
    cropped = image[: small_h * factor, : small_w * factor]
    small = block_reduce(cropped, (factor, factor), np.mean, func_kwargs={"dtype": np.float64})
    if sigma > 0:
        small = ndimage.gaussian_filter(small, sigma, mode="reflect")
    if np.ptp(small) > 0:
        mapped = equalize_hist(small, nbins=1024)
    else:
        mapped = np.zeros_like(small)
    return RoiMap(map=mapped.astype(np.float64), factor=factor, image_shape=(height, width))


def select_roi_patches(
    image,
    patch_size: int = 64,
    threshold: float = 0.5,
    scale_factor: float = 0.25,
    select_background: bool = True,
    overlap: float = 0.5,
    max_patches: int | None = None,
    smoothing: float | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """Top-left corners (N, 2) of the patches whose preprocessed mean is below (background)
    or above (structure) `threshold`; every patch lies inside the image.

    With `max_patches`, a random subset (reproducible with `seed`) of that size is returned.
    """
    threshold = check_number(threshold, "threshold", 0.0, 1.0)
    overlap = check_number(overlap, "overlap", 0.0, 1.0, high_open=True)
    if not isinstance(select_background, (bool, np.bool_)):
        raise InputError(f"select_background must be True or False; got {select_background!r}.")
    if max_patches is not None:
        max_patches = check_int(max_patches, "max_patches (None: all)", 0)
    if seed is not None:
        seed = check_int(seed, "seed (None: random)", 0)
    corners, means = roi_map(image, scale_factor, smoothing, patch_size).windows(patch_size, overlap)
    keep = means < threshold if select_background else means > threshold
    selected = corners[keep]
    if max_patches is not None and len(selected) > max_patches:
        rng = np.random.default_rng(seed)
        selected = selected[np.sort(rng.choice(len(selected), size=max_patches, replace=False))]
    return selected


def count_windows(image, patch_size: int = 64, scale_factor: float = 0.25, overlap: float = 0.5,
                  smoothing: float | None = None) -> int:
    """How many candidate windows the image has at these settings (for "x % selected" messages)."""
    return len(roi_map(image, scale_factor, smoothing, patch_size).windows(patch_size, overlap)[1])


def suggest_threshold(image, patch_size: int = 64, scale_factor: float = 0.25, overlap: float = 0.5,
                      smoothing: float | None = None) -> float:
    """Otsu's threshold of the window means: the level that best separates background from structure."""
    means = roi_map(image, scale_factor, smoothing, patch_size).windows(patch_size, overlap)[1]
    if np.ptp(means) == 0:
        return 0.5
    return float(threshold_otsu(means))
