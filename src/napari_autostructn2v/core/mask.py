"""Estimating the structN2V blind-spot mask from the spatial autocorrelation of the noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import MaskConfig
from .images import InputError, as_slices, check_image

PRESETS = ("horizontal", "vertical", "cross", "diagonal", "antidiagonal", "centre")


@dataclass
class MaskEstimate:
    """The mask (odd square, centre True), the autocorrelation it came from and why."""

    mask: np.ndarray
    acf: np.ndarray
    threshold: float
    reason: str

    def as_text(self) -> str:
        """The mask as rows of '#' (masked) and '.'."""
        return "\n".join("".join("#" if v else "." for v in row) for row in self.mask)


def preset_mask(kind: str, span: int) -> np.ndarray:
    """A hand-set mask as structN2V users choose it: a line or cross of odd `span` pixels."""
    if span < 1 or span % 2 == 0:
        raise ValueError(f"span must be a positive odd number, got {span}.")
    if kind not in PRESETS:
        raise ValueError(f"Unknown mask preset {kind!r}; choose one of {PRESETS}.")
    mask = np.zeros((span, span), bool)
    centre = span // 2
    if kind in ("horizontal", "cross"):
        mask[centre, :] = True
    if kind in ("vertical", "cross"):
        mask[:, centre] = True
    if kind == "diagonal":
        mask[np.arange(span), np.arange(span)] = True
    if kind == "antidiagonal":
        mask[np.arange(span), np.arange(span)[::-1]] = True
    mask[centre, centre] = True
    return mask


def estimate_struct_mask(
    data,
    is_noise: bool = False,
    config: MaskConfig | None = None,
    detrend_sigma: float = 6.0,
    flat_fraction: float = 0.3,
) -> MaskEstimate:
    """Estimate the structured mask from raw images (2D, stacks or a list), or from noise/residuals.

    For a raw image the smooth signal is removed (difference to a Gaussian of `detrend_sigma`)
    and the autocorrelation is measured on the flattest `flat_fraction` of the image (lowest
    local residual power), where it is mostly noise. With `is_noise=True` the array is used as it is.
    Lags whose correlation exceeds `config.significance` standard errors and
    `config.min_correlation` form the mask: its centre-connected part, symmetric under 180
    degree rotation, within `config.max_radius` and at most `config.max_pixels` pixels.
    """
    config = config or MaskConfig()
    arrays = data if isinstance(data, (list, tuple)) else [data]
    if not arrays:
        raise InputError("No image was given to estimate the mask from.")
    planes = [plane for array in arrays for plane in as_slices(check_image(array, "noise" if is_noise else "image"))]
    radius = config.max_radius
    window = radius + 2
    numerator = np.zeros((2 * window + 1,) * 2)
    pairs = np.zeros_like(numerator)
    for plane in planes:
        plane = plane.astype(np.float64)
        if is_noise:
            residual, weights = plane, np.ones_like(plane)
        else:
            residual = plane - ndimage.gaussian_filter(plane, detrend_sigma, mode="reflect")
            weights = _flat_weights(residual, flat_fraction)
        plane_num, plane_pairs = _masked_autocovariance(residual, weights, window)
        numerator += plane_num
        pairs += plane_pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        covariance = np.where(pairs > 0, numerator / np.maximum(pairs, 1), 0.0)
    centre = (window, window)
    if covariance[centre] <= 0:
        acf = np.zeros_like(covariance)
        acf[centre] = 1.0
        return MaskEstimate(_centre_only(), acf, 1.0, "the data is constant: plain N2V (centre only)")
    acf = covariance / covariance[centre]
    threshold = np.maximum(config.significance / np.sqrt(np.maximum(pairs, 1)), config.min_correlation)
    mask = _mask_from_acf(acf, threshold, radius, config.max_pixels)
    return MaskEstimate(mask, acf, float(threshold[centre]), _describe(mask, acf))


def _flat_weights(residual: np.ndarray, fraction: float) -> np.ndarray:
    """1 on the windows of lowest residual variance (the flattest, where the image is mostly noise)."""
    size = min(residual.shape)
    patch = max(8, min(32, size // 4))
    stride = max(1, patch // 2)
    local_power = ndimage.uniform_filter(residual**2, patch, mode="reflect")
    half = patch // 2
    ys = np.arange(half, residual.shape[0] - patch + half + 1, stride)
    xs = np.arange(half, residual.shape[1] - patch + half + 1, stride)
    power = local_power[np.ix_(ys, xs)]
    keep = power <= np.quantile(power, fraction)
    weights = np.zeros_like(residual)
    for y, x in zip(*np.nonzero(keep)):
        top, left = ys[y] - half, xs[x] - half
        weights[top : top + patch, left : left + patch] = 1.0
    return weights


def _masked_autocovariance(values: np.ndarray, weights: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of products and number of pixel pairs at each lag within +-window, over weighted pixels."""
    mean = np.sum(values * weights) / max(np.sum(weights), 1.0)
    centred = (values - mean) * weights
    shape = [n + window for n in values.shape]
    spectrum = np.fft.rfft2(centred, s=shape)
    weight_spectrum = np.fft.rfft2(weights, s=shape)
    numerator = np.fft.irfft2(np.abs(spectrum) ** 2, s=shape)
    pairs = np.fft.irfft2(np.abs(weight_spectrum) ** 2, s=shape)
    lags = np.r_[-window : window + 1]
    numerator = numerator[np.ix_(lags, lags)]
    pairs = np.rint(pairs[np.ix_(lags, lags)])
    return numerator, pairs


def _centre_only() -> np.ndarray:
    return np.ones((1, 1), bool)


def _mask_from_acf(acf: np.ndarray, threshold: np.ndarray, radius: int, max_pixels: int) -> np.ndarray:
    window = acf.shape[0] // 2
    inner = slice(window - radius, window + radius + 1)
    acf, threshold = acf[inner, inner], threshold[inner, inner]
    candidates = acf > threshold
    candidates[radius, radius] = True
    mask = _centre_component(candidates, radius)
    if mask.sum() > max_pixels:
        ranked = np.where(mask, acf, -np.inf)
        ranked[radius, radius] = np.inf
        level = np.sort(ranked.ravel())[::-1][max_pixels - 1]
        mask = _centre_component(mask & (ranked >= level), radius)
    return crop_mask(mask | mask[::-1, ::-1])


def _centre_component(candidates: np.ndarray, radius: int) -> np.ndarray:
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3)))
    return labels == labels[radius, radius]


def crop_mask(mask: np.ndarray) -> np.ndarray:
    """The smallest odd square around the centre of an odd square `mask` holding all its set pixels."""
    radius = mask.shape[0] // 2
    ys, xs = np.nonzero(mask)
    half = int(max(np.abs(ys - radius).max(), np.abs(xs - radius).max())) if len(ys) else 0
    return mask[radius - half : radius + half + 1, radius - half : radius + half + 1].copy()


def embed_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` centred in a (2 * radius + 1) square of the same dtype (the inverse of `crop_mask`)."""
    canvas = np.zeros((2 * radius + 1,) * 2, mask.dtype)
    half = mask.shape[0] // 2
    canvas[radius - half : radius + half + 1, radius - half : radius + half + 1] = mask
    return canvas


def _describe(mask: np.ndarray, acf: np.ndarray) -> str:
    if mask.sum() == 1:
        return "no significant correlation between neighbours: plain N2V (centre only)"
    half = mask.shape[0] // 2
    ys, xs = np.nonzero(mask)
    extent_y, extent_x = int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1
    window = acf.shape[0] // 2
    neighbours = acf.copy()
    neighbours[: window + 1, : window + 1] = -np.inf  # one of each pair of symmetric lags: dy > 0 or dx > 0
    neighbours[:window, window + 1 :] = -np.inf
    dy, dx = np.unravel_index(np.argmax(neighbours), acf.shape)
    return (
        f"{int(mask.sum())} pixels spanning {extent_y} rows x {extent_x} columns "
        f"(mask {2 * half + 1}x{2 * half + 1}); strongest correlation {neighbours[dy, dx]:.2f} "
        f"at lag (dy={dy - window}, dx={dx - window})"
    )


def check_mask(mask) -> np.ndarray:
    """Validate a user-given mask: a 2D boolean odd square with its centre set."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1] or mask.shape[0] % 2 == 0:
        raise InputError(f"A structN2V mask must be an odd square 2D array, got shape {mask.shape}.")
    mask = mask.astype(bool)
    if not mask[mask.shape[0] // 2, mask.shape[1] // 2]:
        raise InputError("A structN2V mask must include its centre pixel.")
    return mask
