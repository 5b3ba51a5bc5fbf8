"""Estimating the structN2V blind-spot mask from the spatial autocorrelation of the noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from . import banding
from .axes import canonical_image
from .config import MaskConfig
from .images import InputError, MappedPlane
from .recorruption import Recorruption, recorruption_rule
from .whitening import Whitening, detect_whitening

PRESETS = ("horizontal", "vertical", "cross", "diagonal", "antidiagonal", "centre")


@dataclass
class MaskEstimate:
    """The mask (odd square, centre True), the autocorrelation it came from and why.

    For volumes (axes with Z), `z_acf` is the correlation between neighbouring planes at each
    in-plane lag, `z_correlation` its value straight along Z, and `mask_3d` a (3, M, M) mask
    that also covers the correlated neighbours in the planes above and below (None when the noise
    is not correlated along Z). `whitening` is set (and `mask` is the centre alone) when the noise
    is first-order filtered along X or Y and `MaskConfig.whiten` asks to decorrelate it (core.whitening).
    `recorruption` is set when the noise is additive with a covariance known in full and
    `MaskConfig.recorrupt` asks to train on recorrupted pairs instead of blind spots (core.recorruption);
    `mask` then shows where the noise is correlated, and no pixel is masked in training.
    `banding` names the lines ("rows", "columns") whose offsets were removed before the estimate
    (`MaskConfig.remove_banding`, core.banding); training and denoising remove them too.
    """

    mask: np.ndarray
    acf: np.ndarray
    threshold: float
    reason: str
    z_acf: np.ndarray | None = None
    z_correlation: float | None = None
    mask_3d: np.ndarray | None = None
    whitening: Whitening | None = None
    recorruption: Recorruption | None = None
    banding: tuple[str, ...] = ()

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


TILE = 2048  # images are analysed in tiles of at most TILE x TILE pixels: bounded memory on large images
MAX_TILES = 4  # per 2D slice, evenly spread: 16 million pixels are more than enough for the statistics
# the noise covariance of recorrupted pairs, measured without the isotropic floor: the detrending's bias is undone
# at two Gaussian widths, and the result is used where both agree (texture passes the wider one more: it differs)
UNBIASED_SIGMAS = (3.0, 6.0)
MAX_WIDTH_DISAGREEMENT = 1.05  # variance at the wider detrending over that at the narrower one
UNBIASED_SUPPORT = 0.02  # lags whose raw correlation exceeds this, dilated by one pixel, carry the covariance
# unless the mask is full (max_pixels: the noise then reaches further than it holds), the covariance is measured over
# the mask's lags after a detrending of MASK_LAG_SIGMA, which texture and faint stars hardly pass, on windows ranked
# by what that detrending leaves out: on plain images the band between a Gaussian of SIGNAL_SIGMA and the estimate's
# detrending (so not by the noise measured, which would pick the windows where it happened to be low), on texture
# (where the two widths disagree) the residual after the estimate's detrending, of which the flattest TEXTURE_FRACTION
MASK_LAG_SIGMA = 1.0
SIGNAL_SIGMA = 2.0
TEXTURE_FRACTION = 0.1
ACROSS_LAGS = (2, 3)  # texture beside a lag's line is read this many lags across it (`_across_line_floor`)


def acf_side(max_radius: int) -> int:
    """Side of the autocorrelation (and mask canvas) estimated for `max_radius`: lags up to max_radius + 2 each way."""
    return 2 * (max_radius + 2) + 1


def estimate_struct_mask(
    data,
    is_noise: bool = False,
    config: MaskConfig | None = None,
    detrend_sigma: float = 6.0,
    flat_fraction: float = 0.3,
    axes: str | None = None,
) -> MaskEstimate | list[MaskEstimate]:
    """Estimate the structured mask from raw images (2D, stacks or a list), or from noise/residuals.

    `axes` names the axes (letters from S T C Z Y X, see core.axes). With a C axis the result is a
    list with one estimate per channel. With a Z axis the correlation between neighbouring planes
    is measured as well (`MaskEstimate.z_acf`, `z_correlation`, `mask_3d`).

    For a raw image the smooth signal is removed (difference to a Gaussian of `detrend_sigma`)
    and the autocovariance is measured on the flattest `flat_fraction` of the image (windows of
    lowest local residual power), where it is mostly noise. With `is_noise=True` the array is
    used as it is.

    What survives the detrending in textured regions (a dense field of nuclei has no flat
    background) is signal texture: smooth and about the same in every direction, whereas the
    structured noise of cameras and scanners is correlated along lines. Unless
    `config.remove_isotropic` is False (or `is_noise`), the isotropic floor is subtracted: at
    each lag distance the smallest covariance over all directions is taken as signal texture,
    and the texture's variance at lag 0 is extrapolated from the nearest distances (see
    `_isotropic_floor`). What is left, divided by the remaining (noise) variance, is the noise
    correlation. White noise over texture then gives the centre alone; a line of correlated
    noise stands out above the floor in its direction. The same step removes the broad negative
    bias that the detrending puts on the noise correlation at large lags. Texture strong in one
    direction is read beside each lag's line as well (`_across_line_floor`), where a line of
    detector noise, one pixel wide, is absent.

    Lags whose correlation exceeds `config.significance` standard errors (of the covariance of
    independent pixels, total variance / sqrt(pairs), in units of the noise variance) and
    `config.min_correlation` form the mask: grown from the centre, most correlated neighbours
    first, symmetric under 180 degree rotation, within `config.max_radius` and at most
    `config.max_pixels` pixels. A line found that way is then followed along its own direction
    while the correlation exceeds `config.extend_correlation` (see `_mask_from_acf`).

    Memory and time stay bounded: each 2D slice is processed in tiles of at most `TILE` pixels a
    side (the detrending sees a margin around each tile, so only pairs across tile borders are
    left out), and a slice of more than `MAX_TILES` tiles is represented by `MAX_TILES` of them,
    evenly spread: a few hundred MB and some seconds per slice of any size.
    """
    config = config or MaskConfig()
    arrays = data if isinstance(data, (list, tuple)) else [data]
    if not arrays:
        raise InputError("No image was given to estimate the mask from.")
    name = "noise" if is_noise else "image"
    # a MappedPlane (a plane of an uncompressed file, checked by whoever opened it) stays on disk: its tiles
    # are read when analysed; it counts as one sample of one channel and one plane
    found = [None if isinstance(array, MappedPlane) else canonical_image(array, axes, name) for array in arrays]
    window = config.max_radius + 2
    for array, canonical in zip(arrays, found):
        _check_size(array.shape[-2:] if canonical is None else canonical[0].shape[-2:], window, name)
    channels = {1 if canonical is None else canonical[0].shape[1] for canonical in found}
    if len(channels) > 1:
        raise InputError(f"The images have different numbers of channels ({sorted(channels)}); give the same channels.")

    def volumes(channel: int) -> list:
        return [[[array]] if canonical is None else canonical[0][:, channel] for array, canonical in zip(arrays, found)]

    estimates = [_estimate_channel(volumes(channel), is_noise, config, detrend_sigma, flat_fraction)
                 for channel in range(channels.pop())]
    return estimates if any(c is not None and "C" in c[1].axes for c in found) else estimates[0]


def _estimate_channel(volumes: list, is_noise: bool, config: MaskConfig, detrend_sigma: float,
                      flat_fraction: float) -> MaskEstimate:
    """The estimate for one channel from (N, Z, Y, X) arrays, their line offsets removed first where the first plane
    is banded (core.banding); Z correlation when a volume has several planes."""
    first = volumes[0][0][0]
    y0, y1, x0, x1 = _central_tile(first.shape)
    lines = () if is_noise or not config.remove_banding else banding.detect_banding(first[y0:y1, x0:x1])
    on_disk = any(isinstance(volume, list) for volume in volumes)  # MappedPlanes: read tile by tile, never whole
    if lines and not on_disk:
        volumes = [banding.remove_offsets(volume, lines) for volume in volumes]
    estimate = _correlation_estimate(volumes, is_noise, config, detrend_sigma, flat_fraction)
    if lines and on_disk:
        estimate.reason += (f"; the {' and '.join(lines)} carry offsets of their own (banding), which are removed only "
                            "from images in memory: load the images as arrays to remove them")
    elif lines:
        estimate.banding = lines
        estimate.reason = f"{banding.describe(lines)}, then: {estimate.reason}"
    return estimate


def _correlation_estimate(volumes: list, is_noise: bool, config: MaskConfig, detrend_sigma: float,
                          flat_fraction: float) -> MaskEstimate:
    """The mask, whitening or recorruption from the autocorrelation of the (N, Z, Y, X) arrays of one channel."""
    radius = config.max_radius
    window = radius + 2
    numerator = np.zeros((acf_side(radius),) * 2)
    pairs = np.zeros_like(numerator)
    z_numerator, z_pairs = np.zeros_like(numerator), np.zeros_like(numerator)
    for volume in volumes:
        for sample in volume:
            residuals = []
            for plane in sample:
                plane_num, plane_pairs, residual = _plane_autocovariance(plane, window, is_noise, detrend_sigma,
                                                                        flat_fraction)
                numerator += plane_num
                pairs += plane_pairs
                if len(sample) > 1:
                    residuals.append(residual)
            for (values, weights_below), (other, weights_above) in zip(residuals, residuals[1:]):
                weights = weights_below * weights_above
                if not weights.any():
                    continue
                cross, cross_pairs = _masked_covariance(values, weights, window, other)
                z_numerator += cross
                z_pairs += cross_pairs
    covariance = _per_pair(numerator, pairs)
    centre = (window, window)
    total = covariance[centre]
    if total <= 0:
        acf = np.zeros_like(covariance)
        acf[centre] = 1.0
        return MaskEstimate(_centre_only(), acf, 1.0, "the data is constant: plain N2V (centre only)")
    variance = total
    # standard error of a covariance from N pairs of independent pixels: about total / sqrt(N)
    standard_error = total / np.sqrt(np.maximum(pairs, 1))
    floor = texture = np.zeros_like(covariance)
    if config.remove_isotropic and not is_noise:
        floor, variance = _isotropic_floor(covariance)
        texture = np.maximum(floor, _across_line_floor(covariance))
        texture[centre] = floor[centre]
    acf = (covariance - texture) / variance
    acf[centre] = 1.0
    standard_error = standard_error / variance  # in units of the noise variance, like the correlation
    threshold = np.maximum(config.significance * standard_error, config.min_correlation)
    extend = np.maximum(config.significance * standard_error, config.extend_correlation)
    mask = _mask_from_acf(acf, threshold, radius, config.max_pixels, extend)
    estimate = MaskEstimate(mask, acf, float(threshold[centre]), _describe(mask, acf))
    if z_pairs[centre] > 0:
        _add_z_correlation(estimate, z_numerator, z_pairs, floor, variance, total, config)
    if config.whiten and not is_noise and estimate.mask_3d is None:
        _decorrelate(estimate)
    if config.recorrupt and not is_noise and estimate.mask_3d is None and estimate.whitening is None:
        _offer_recorruption(estimate, volumes[0][0][0], config, detrend_sigma, flat_fraction)
    return estimate


def _decorrelate(estimate: MaskEstimate) -> None:
    """Replace a line of first-order filtered noise by the filter that whitens it (see core.whitening)."""
    whitening = detect_whitening(estimate.acf, estimate.mask)
    if whitening is None:
        return
    pixels = int(estimate.mask.sum())
    estimate.whitening, estimate.mask = whitening, _centre_only()
    estimate.reason = f"{whitening.describe()} instead of masking a line of {pixels} pixels: plain N2V (centre only)"


def _offer_recorruption(estimate: MaskEstimate, plane, config: MaskConfig, sigma: float, fraction: float) -> None:
    """Set the noise covariance for recorrupted pairs where core.recorruption's rule allows (measured on `plane`);
    otherwise say in the reason why the mask is used. The covariance is the flat windows' over its own support
    (`_unbiased_covariance`) where the mask is full and the image plain, else the one over the mask's lags
    (`_covariance_over_mask`)."""
    radius = config.max_radius
    tile = _central_tile(plane.shape)
    residual = _detrended(plane, tile, sigma)  # read by both the rule's measurement and the covariance's ranking
    variance_ratio, brightness_ratio = _bright_over_dark(plane, tile, residual, radius + 2, fraction)
    refusal = recorruption_rule(estimate.mask, radius, variance_ratio, brightness_ratio)
    if refusal is not None:
        estimate.reason += f"; blind spots, not recorrupted pairs: {refusal}"
        return
    covariance = _unbiased_covariance(plane, radius, fraction)
    textured = covariance is None
    if textured or estimate.mask.sum() < config.max_pixels:
        covariance = _covariance_over_mask(plane, tile, residual, estimate.mask, radius, fraction, textured)
    estimate.recorruption = Recorruption(covariance, variance_ratio, brightness_ratio, textured)
    estimate.reason = estimate.recorruption.describe()


def _unbiased_covariance(plane, radius: int, fraction: float) -> np.ndarray | None:
    """The noise covariance of the flattest windows of a central tile of `plane`, the detrending's bias undone
    (`_undo_detrending`) at both UNBIASED_SIGMAS, or None where the two variances disagree (signal texture, which
    the wider detrending leaves more of) or the covariance reaches the window's edge."""
    y0, y1, x0, x1 = _central_tile(plane.shape)
    crop = np.asarray(plane[y0:y1, x0:x1], np.float64)
    window = radius + 2
    estimates = []
    for sigma in UNBIASED_SIGMAS:
        numerator, pairs, _ = _plane_autocovariance(crop, window, False, sigma, fraction)
        raw = _per_pair(numerator, pairs)
        if raw[window, window] <= 0:
            return None
        estimates.append(_undo_detrending(raw, sigma, _raw_support(raw, radius)))
    narrow, wide = estimates
    if not 0 < wide[radius, radius] <= MAX_WIDTH_DISAGREEMENT * narrow[radius, radius]:
        return None
    half = crop_mask(wide != 0).shape[0] // 2
    return None if half == radius else wide[radius - half : radius + half + 1, radius - half : radius + half + 1]


def _covariance_over_mask(plane, tile, residual: np.ndarray, mask: np.ndarray, radius: int, fraction: float,
                          textured: bool) -> np.ndarray:
    """The noise covariance over the lags of `mask`, measured on the central `tile` of `plane` after a detrending of
    MASK_LAG_SIGMA, whose bias is undone over those lags (`_undo_detrending`), on the windows least structured in
    what that detrending leaves out: the flattest `fraction` of the band between a Gaussian of SIGNAL_SIGMA and the
    estimate's detrending on a plain image, the flattest TEXTURE_FRACTION of the `residual` after the estimate's
    detrending on a `textured` one. Ranked by the residual, a plain image's windows are those where the noise
    happened to be low (variance found 0.89-0.92x on sparse and cell frames). On a photograph of coins under
    horizontal Gaussian noise this gives 1.14x the noise's variance, where the correlation over the mask times the
    isotropic floor's variance read 1.24x in a 5-row blob; on hubble, whose faint stars pass the flat windows'
    covariance alike at both widths (1.10x), 1.05x."""
    if not textured:
        residual = residual - _detrended(plane, tile, SIGNAL_SIGMA)  # Gaussian(SIGNAL_SIGMA) - Gaussian(sigma)
    patch = _window_size(residual.shape)
    power, ys, xs = _window_power(residual, patch)
    level = np.quantile(power, TEXTURE_FRACTION if textured else fraction)
    weights = _window_weights(residual.shape, ys, xs, power <= level, patch)
    numerator, pairs = _masked_covariance(_detrended(plane, tile, MASK_LAG_SIGMA), weights, radius + 2)
    covariance = _undo_detrending(_per_pair(numerator, pairs), MASK_LAG_SIGMA, embed_mask(mask, radius))
    side = mask.shape[0] // 2
    return covariance[radius - side : radius + side + 1, radius - side : radius + side + 1]


def _raw_support(raw: np.ndarray, radius: int) -> np.ndarray:
    """The lags within `radius` connected to the centre (diagonal neighbours included) where the raw correlation
    exceeds UNBIASED_SUPPORT, dilated by one pixel."""
    window = raw.shape[0] // 2
    inner = raw[window - radius : window + radius + 1, window - radius : window + radius + 1]
    labels, _ = ndimage.label(inner / raw[window, window] > UNBIASED_SUPPORT, structure=np.ones((3, 3)))
    return ndimage.binary_dilation(labels == labels[radius, radius])


def _undo_detrending(raw: np.ndarray, sigma: float, support: np.ndarray) -> np.ndarray:
    """The covariance C over the lags of `support` (an odd square centred on lag 0) whose detrended version best
    fits `raw` (lags within its window), by least squares.
    Detrending (x - Gaussian(x), `_detrended`) turns C into C convolved with the autocorrelation of delta - Gaussian:
    it takes most from slowly decaying correlations (10-14 % of the variance of a 2D anisotropic Gaussian noise)."""
    window = raw.shape[0] // 2
    radius = support.shape[0] // 2
    response = _detrending_response(sigma)
    pad = window + radius
    padded = np.pad(response, pad)
    centre = response.shape[0] // 2 + pad
    lags = np.arange(-window, window + 1)
    offsets = np.argwhere(support) - radius
    rows = lags[:, None, None] - offsets[None, None, :, 0] + centre
    columns = lags[None, :, None] - offsets[None, None, :, 1] + centre
    system = padded[rows, columns].reshape(-1, len(offsets))
    solution = np.linalg.lstsq(system, raw.ravel(), rcond=None)[0]
    covariance = np.zeros(support.shape)
    covariance[support] = solution
    return covariance


def _detrending_response(sigma: float) -> np.ndarray:
    """The autocorrelation of the filter delta - Gaussian(sigma) that `_detrended` applies (scipy's kernel:
    normalised, truncated at 4 sigma)."""
    half = int(4.0 * sigma + 0.5)
    line = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    line /= line.sum()
    kernel = -np.outer(line, line)
    kernel[half, half] += 1.0
    return signal.fftconvolve(kernel, kernel[::-1, ::-1])


def _bright_over_dark(plane, box, residual: np.ndarray, window: int, fraction: float) -> tuple[float, float]:
    """The noise variance in the brightest third of the analysis windows of the central tile `box` of `plane`
    (`residual`: that tile after the estimate's detrending) over that in the darkest third, each measured as the
    mask's is (flattest `fraction` of those windows, isotropic floor removed): about 1 for additive noise, the
    ratio of the intensities (plus read noise) for shot noise. And the ratio of the two thirds' mean intensities
    (nan where the dark third's is not positive)."""
    patch = _window_size(residual.shape)
    power, ys, xs = _window_power(residual, patch)
    crop = np.asarray(plane[box[0] : box[1], box[2] : box[3]], np.float64)
    brightness = ndimage.uniform_filter(crop, patch, mode="reflect")[np.ix_(ys, xs)]
    dark, bright = np.quantile(brightness, [1 / 3, 2 / 3])
    variances = []
    for chosen in (brightness <= dark, brightness >= bright):
        level = np.quantile(power[chosen], fraction)
        weights = _window_weights(residual.shape, ys, xs, chosen & (power <= level), patch)
        numerator, pairs = _masked_covariance(residual, weights, window)
        covariance = _per_pair(numerator, pairs)
        variances.append(_isotropic_floor(covariance)[1] if covariance[window, window] > 0 else 0.0)
    variance_ratio = float(variances[1] / variances[0]) if variances[0] > 0 else float("inf")
    dark_mean = float(np.mean(brightness[brightness <= dark]))
    bright_mean = float(np.mean(brightness[brightness >= bright]))
    return variance_ratio, bright_mean / dark_mean if dark_mean > 0 else float("nan")


def _per_pair(numerator: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Covariance at each lag: the sum of products over the number of pairs (0 where there is none)."""
    return np.where(pairs > 0, numerator / np.maximum(pairs, 1), 0.0)


def _central_tile(shape) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the central tile, at most TILE a side, of a plane of `shape`."""
    height, width = shape[-2:]
    top, left = max(0, (height - TILE) // 2), max(0, (width - TILE) // 2)
    return top, min(height, top + TILE), left, min(width, left + TILE)


def _add_z_correlation(estimate: MaskEstimate, numerator: np.ndarray, pairs: np.ndarray, floor: np.ndarray,
                       variance: float, total: float, config: MaskConfig) -> None:
    """Correlation between neighbouring planes; a 3D mask when it is significant straight along Z.

    The in-plane isotropic floor at distance 1 (signal texture, continuous in Z as well) is taken
    off the cross-plane covariance first, so that a smooth signal is not mistaken for noise.
    """
    window = numerator.shape[0] // 2
    covariance = _per_pair(numerator, pairs)
    texture = floor[window, window + 1] if floor.any() else 0.0
    z_acf = (covariance - texture) / variance
    threshold = np.maximum(config.significance * total / np.sqrt(np.maximum(pairs, 1)) / variance,
                           config.min_correlation)
    estimate.z_acf = z_acf
    estimate.z_correlation = float(z_acf[window, window])
    estimate.reason += f"; correlation with the neighbouring plane {estimate.z_correlation:.2f}"
    if estimate.z_correlation <= threshold[window, window]:
        return
    half = max(estimate.mask.shape[0] // 2, 1)
    inner = slice(window - half, window + half + 1)
    above = (z_acf[inner, inner] > threshold[inner, inner]) & _touching(_centre_point(half))
    above[half, half] = True
    in_plane = embed_mask(estimate.mask, half)
    estimate.mask_3d = np.stack([above[::-1, ::-1], in_plane, above])
    estimate.reason += " (significant: the 3D network masks the planes above and below as well)"


def _centre_point(half: int) -> np.ndarray:
    point = np.zeros((2 * half + 1,) * 2, bool)
    point[half, half] = True
    return point


def _check_size(shape, window: int, name: str) -> None:
    smallest = max(16, window + 2)
    if min(shape) < smallest:
        raise InputError(
            f"The {name} is {shape[0]}x{shape[1]} pixels; estimating the noise correlation up to "
            f"{window} pixels away needs at least {smallest} pixels on each side. Use a larger image "
            "(or several slices of the same size), lower mask.max_radius, or set the mask by hand "
            "(preset_mask)."
        )


def _tiles(shape, tile: int):
    """(y0, y1, x0, x1) of the tiles covering `shape`; one tile when both sides are at most `tile`."""
    for y0 in range(0, shape[0], tile):
        for x0 in range(0, shape[1], tile):
            yield y0, min(y0 + tile, shape[0]), x0, min(x0 + tile, shape[1])


def _detrended(plane: np.ndarray, box, sigma: float) -> np.ndarray:
    """plane - Gaussian(plane) on one tile, in float64; the Gaussian sees a margin around the tile,
    so the result equals the whole-image detrending cut to the tile."""
    y0, y1, x0, x1 = box
    margin = int(4.0 * sigma + 0.5) + 1
    top, left = max(0, y0 - margin), max(0, x0 - margin)
    padded = plane[top : min(plane.shape[0], y1 + margin), left : min(plane.shape[1], x1 + margin)]
    padded = padded.astype(np.float64)
    smooth = ndimage.gaussian_filter(padded, sigma, mode="reflect")
    inner = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    return padded[inner] - smooth[inner]


def _plane_autocovariance(plane, window: int, is_noise: bool, sigma: float, fraction: float):
    """Sum of products and pair counts at each lag for one 2D slice, tile by tile, and the residual
    and weights of its first tile (for the correlation with the neighbouring plane).

    Raw images take two passes: the residual power of every analysis window first (so that the
    flattest `fraction` is chosen over the whole slice), then the covariance of the chosen windows.
    """
    patch = _window_size(plane.shape)
    boxes = list(_tiles(plane.shape, TILE))
    if len(boxes) > MAX_TILES:
        boxes = [boxes[i] for i in np.linspace(0, len(boxes) - 1, MAX_TILES).round().astype(int)]
    level = None
    if not is_noise:
        powers = [_window_power(_detrended(plane, box, sigma), patch)[0] for box in boxes]
        level = np.quantile(np.concatenate([p.ravel() for p in powers]), fraction)
    numerator = np.zeros((2 * window + 1,) * 2)
    pairs = np.zeros_like(numerator)
    kept = None
    for box in boxes:
        if is_noise:
            y0, y1, x0, x1 = box
            residual = plane[y0:y1, x0:x1].astype(np.float64)
            weights = np.ones_like(residual)
        else:
            residual = _detrended(plane, box, sigma)
            weights = _flat_weights(residual, patch, level)
        kept = kept or (residual, weights)
        if not weights.any():
            continue
        tile_num, tile_pairs = _masked_covariance(residual, weights, window)
        numerator += tile_num
        pairs += tile_pairs
    return numerator, pairs, kept


def _window_size(shape) -> int:
    """Side of the analysis windows for a tile or plane of `shape`: 32 pixels, less on small images."""
    return max(8, min(32, min(shape) // 4))


def _window_power(residual: np.ndarray, patch: int):
    """Mean squared residual of the windows of `patch` pixels (half-overlapping) and their centres."""
    stride = max(1, patch // 2)
    half = patch // 2
    local_power = ndimage.uniform_filter(residual**2, patch, mode="reflect")
    ys = np.arange(half, max(half + 1, residual.shape[0] - patch + half + 1), stride)
    xs = np.arange(half, max(half + 1, residual.shape[1] - patch + half + 1), stride)
    ys, xs = ys[ys < residual.shape[0]], xs[xs < residual.shape[1]]
    return local_power[np.ix_(ys, xs)], ys, xs


def _flat_weights(residual: np.ndarray, patch: int, level: float) -> np.ndarray:
    """1 on the windows whose residual power is at most `level` (the flattest, where the image is
    mostly noise), 0 elsewhere."""
    power, ys, xs = _window_power(residual, patch)
    return _window_weights(residual.shape, ys, xs, power <= level, patch)


def _window_weights(shape, ys: np.ndarray, xs: np.ndarray, chosen: np.ndarray, patch: int) -> np.ndarray:
    """1 on the chosen windows (of `patch` pixels centred at ys x xs), 0 elsewhere."""
    half = patch // 2
    weights = np.zeros(shape)
    for y, x in zip(*np.nonzero(chosen)):
        top, left = max(0, ys[y] - half), max(0, xs[x] - half)
        weights[top : top + patch, left : left + patch] = 1.0
    return weights


def _masked_covariance(values: np.ndarray, weights: np.ndarray, window: int,
                       other: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of products and number of pixel pairs at each lag within +-window, over the pixels weighted 1:
    of `values` with itself, or with `other` (the plane above) when given."""
    count = max(np.sum(weights), 1.0)
    shape = [n + window for n in values.shape]
    spectrum = np.fft.rfft2((values - np.sum(values * weights) / count) * weights, s=shape)
    if other is None:
        product = np.abs(spectrum) ** 2
    else:
        product = np.conj(spectrum) * np.fft.rfft2((other - np.sum(other * weights) / count) * weights, s=shape)
    numerator = np.fft.irfft2(product, s=shape)
    pairs = np.fft.irfft2(np.abs(np.fft.rfft2(weights, s=shape)) ** 2, s=shape)
    lags = np.r_[-window : window + 1]
    return numerator[np.ix_(lags, lags)], np.rint(pairs[np.ix_(lags, lags)])


def _isotropic_floor(covariance: np.ndarray) -> tuple[np.ndarray, float]:
    """The isotropic floor of an autocovariance and the lag-0 variance that remains without it.

    At every lag distance d (every value of dy**2 + dx**2) the smallest covariance over the lags
    at that distance is taken as the isotropic part (signal texture, and the broad bias of the
    detrending) and subtracted from all of them: a correlation along a line survives in its
    direction, one that is the same in all directions does not. At lag 0 the isotropic part is
    extrapolated linearly in d**2 from d**2 = 1, 2, 4 (a smooth texture correlates as a - b d**2
    near 0), but never below the floor at d = 1; the noise variance is what exceeds it. It is
    kept at least 2 % of the total, so that an image with hardly any noise cannot divide by zero.
    """
    window = covariance.shape[0] // 2
    dy, dx = np.mgrid[-window : window + 1, -window : window + 1]
    distance = dy**2 + dx**2
    floor = np.zeros_like(covariance)
    for value in np.unique(distance[distance > 0]):
        ring = distance == value
        floor[ring] = covariance[ring].min()
    nearest = [floor[distance == value][0] for value in (1, 2, 4)]
    slope, intercept = np.polyfit([1.0, 2.0, 4.0], nearest, 1)
    total = covariance[window, window]
    at_zero = min(max(intercept, nearest[0]), 0.98 * total)
    floor[window, window] = at_zero
    return floor, total - at_zero


def _across_line_floor(covariance: np.ndarray) -> np.ndarray:
    """Signal texture at each lag as read beside the lag's own line: the mean covariance ACROSS_LAGS[0] lags across
    it (vertically for lags nearer the horizontal, horizontally otherwise), extrapolated inwards as a - b d**2 with
    the one ACROSS_LAGS[1] lags across (the smooth texture of `_isotropic_floor`), never below the nearer value.

    Detector noise correlated along a line is one pixel wide and absent two lags beside it (a 2D anisotropic
    Gaussian keeps 13 % of it there); texture, signal blurred by the optics, is broad and about as strong beside
    the line as on it, in whatever direction it runs. The isotropic floor, the weakest direction at each
    distance, cannot remove texture that is strong in one direction: on a photograph of coins under [1, 1, 1]
    horizontal noise it left the coins' rims along the rows, and the 1x5 line grew into 23 pixels (1x23).
    """
    near, far = ACROSS_LAGS
    side = covariance.shape[0]
    window = side // 2
    padded = np.pad(covariance, far, constant_values=np.nan)

    def beside(lag: int, vertical: bool) -> np.ndarray:
        """The mean covariance `lag` lags above and below (or left and right of) each lag; one side at the edges."""
        shifts = [(lag, 0), (-lag, 0)] if vertical else [(0, lag), (0, -lag)]
        return np.nanmean([padded[far + dy : far + dy + side, far + dx : far + dx + side] for dy, dx in shifts], axis=0)

    dy, dx = np.mgrid[-window : window + 1, -window : window + 1]
    nearer_horizontal = np.abs(dx) >= np.abs(dy)
    at_near, at_far = (np.where(nearer_horizontal, beside(lag, True), beside(lag, False)) for lag in ACROSS_LAGS)
    slope = (at_near - at_far) / (far**2 - near**2)
    return np.maximum(at_near, at_near + slope * near**2)


def _centre_only() -> np.ndarray:
    return np.ones((1, 1), bool)


def _mask_from_acf(acf: np.ndarray, threshold: np.ndarray, radius: int, max_pixels: int,
                   extend: np.ndarray | None = None) -> np.ndarray:
    """Grow the mask from the centre: add the most correlated significant lag touching it (with its
    mirror image), until none is left or the next pair would exceed `max_pixels`.

    Then, with `extend` (a lower threshold), continue the rays already in the mask: a lag n * u
    (u the smallest lag in its direction) joins when (n - 1) * u is in the mask, n >= 2, and its
    correlation exceeds `extend`. A correlation that decays slowly along a line (Gaussian or
    exponential) is followed further than `threshold` alone allows, while white noise, whose mask
    is the centre alone, is never extended.
    """
    window = acf.shape[0] // 2
    inner = slice(window - radius, window + radius + 1)
    acf, threshold = acf[inner, inner], threshold[inner, inner]
    mask = np.zeros(acf.shape, bool)
    mask[radius, radius] = True
    candidates = acf > threshold
    mask = _grow(mask, acf, candidates & candidates[::-1, ::-1], max_pixels, _touching)
    if extend is not None and mask.sum() > 1:
        candidates = acf > extend[inner, inner]
        mask = _grow(mask, acf, candidates & candidates[::-1, ::-1], max_pixels, lambda m: _ray_ends(m, radius))
    return crop_mask(mask)


def _touching(mask: np.ndarray) -> np.ndarray:
    """Lags 8-connected to the mask."""
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))


def _ray_ends(mask: np.ndarray, radius: int) -> np.ndarray:
    """Lags n * u (n >= 2, u the smallest lag in the same direction) whose predecessor (n - 1) * u is in the mask."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    steps = np.gcd(dy, dx)
    ends = np.zeros_like(mask)
    far = steps >= 2
    sy, sx = dy[far] // steps[far], dx[far] // steps[far]
    ends[far] = mask[dy[far] - sy + radius, dx[far] - sx + radius]
    return ends


def _grow(mask: np.ndarray, acf: np.ndarray, candidates: np.ndarray, max_pixels: int, reachable) -> np.ndarray:
    """Add the most correlated candidate lag that `reachable(mask)` allows, with its mirror image, one at a time."""
    mask = mask.copy()
    size = mask.shape[0] - 1
    while True:
        frontier = candidates & ~mask & reachable(mask)
        if not frontier.any():
            return mask
        y, x = np.unravel_index(np.argmax(np.where(frontier, acf, -np.inf)), acf.shape)
        if mask.sum() + 2 > max_pixels:
            return mask
        mask[y, x] = mask[size - y, size - x] = True


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


def check_mask(mask, dims: int = 2) -> np.ndarray:
    """Validate a user-given mask: a 2D boolean odd square with its centre set; with `dims` 3 (the 3D
    network) also a 3D one, odd along each axis and square in the plane."""
    mask = np.asarray(mask)
    square = mask.ndim in (2, dims) and mask.shape[-1] == mask.shape[-2] and all(n % 2 for n in mask.shape)
    if not square:
        kind = "an odd square 2D array" + (" (or odd x square 3D)" if dims == 3 else "")
        raise InputError(f"A structN2V mask must be {kind}, got shape {mask.shape}.")
    mask = mask.astype(bool)
    if not mask[tuple(n // 2 for n in mask.shape)]:
        raise InputError("A structN2V mask must include its centre pixel.")
    return mask
