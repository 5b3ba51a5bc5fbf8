"""Embedded sample data: a procedural fluorescence-like image or volume and structured noise with a known kernel."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse, line_aa

NOISE_KINDS = ("white", "horizontal", "vertical", "diagonal", "horizontal_gauss", "vertical_gauss", "row_offsets")


def clean_image(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """A float32 image in [0, 1]: dim background, textured cells, filaments and puncta."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = np.zeros(shape, np.float64)
    area = height * width
    for _ in range(max(2, area // 9000)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(8, 24, size=2)
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape, rotation=rng.uniform(0, np.pi))
        image[rr, cc] += rng.uniform(0.35, 0.7)
        nucleus_r, nucleus_c = ellipse(cy, cx, ry * 0.45, rx * 0.45, shape=shape)
        image[nucleus_r, nucleus_c] += rng.uniform(0.1, 0.25)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    image *= 1.0 + 2.0 * texture
    for _ in range(max(2, area // 6000)):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(20, 90)
        y1 = int(np.clip(y0 + length * np.sin(angle), 0, height - 1))
        x1 = int(np.clip(x0 + length * np.cos(angle), 0, width - 1))
        rr, cc, val = line_aa(int(y0), int(x0), y1, x1)
        image[rr, cc] += 0.5 * val
    puncta = rng.random(shape) < 8e-4
    image += 0.8 * puncta
    image = ndimage.gaussian_filter(image, 1.0)
    image += 0.08 + 0.04 * ndimage.gaussian_filter(rng.standard_normal(shape), 20.0) * 10
    image = np.clip(image, 0, None)
    return (image / image.max()).astype(np.float32)


def noise_kernel(kind: str, length: float = 2.0) -> np.ndarray:
    """The 2D kernel k of correlated noise k * w (w white); normalised to unit energy."""
    if kind == "white":
        kernel = np.ones((1, 1))
    elif kind in ("horizontal", "vertical"):
        kernel = np.ones((1, 3))
    elif kind in ("horizontal_gauss", "vertical_gauss"):
        radius = int(np.ceil(3 * length))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / length) ** 2)[None, :]
    elif kind == "diagonal":
        kernel = np.eye(3)
    else:
        raise ValueError(f"Unknown noise kind {kind!r}; choose one of {NOISE_KINDS}.")
    if kind.startswith("vertical"):
        kernel = kernel.T
    return kernel / np.sqrt(np.sum(kernel**2))


def structured_noise(shape: tuple[int, int], kind: str = "horizontal", sigma: float = 0.1, length: float = 2.0,
                     seed: int = 0) -> np.ndarray:
    """Zero-mean noise of standard deviation `sigma` with the correlation of `kind` within each plane
    (a `shape` of more than two axes gets independent noise in every plane)."""
    rng = np.random.default_rng(seed)
    if kind == "row_offsets":
        offsets = rng.standard_normal((*shape[:-1], 1)) * np.sqrt(0.5)
        return (sigma * (offsets + rng.standard_normal(shape) * np.sqrt(0.5))).astype(np.float32)
    white = rng.standard_normal(shape)
    kernel = noise_kernel(kind, length)
    kernel = kernel.reshape((1,) * (len(shape) - 2) + kernel.shape)
    return (sigma * ndimage.convolve(white, kernel, mode="wrap")).astype(np.float32)


def make_sample(shape: tuple[int, int] = (256, 256), noise: str = "horizontal", sigma: float = 0.1,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float32 images; the noise is correlated along rows by default."""
    clean = clean_image(shape, seed)
    return clean, clean + structured_noise(shape, noise, sigma, seed=seed + 1)


def clean_volume(shape: tuple[int, int, int] = (32, 256, 256), seed: int = 0) -> np.ndarray:
    """A float32 volume (Z, Y, X) in [0, 1] whose signal is continuous along Z: textured ellipsoid
    cells, filaments and puncta, smoothed in 3D, on a dim, slowly varying background."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    volume = np.zeros(shape, np.float64)
    for _ in range(max(2, height * width // 2500)):
        centre = rng.uniform((0, 0, 0), shape)
        radii = (rng.uniform(4, 10), *rng.uniform(8, 22, size=2))
        low = np.maximum(np.floor(centre - radii).astype(int), 0)
        high = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape)
        if (high <= low).any():
            continue
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(low, high))]
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, radii)) <= 1
        volume[tuple(slice(a, b) for a, b in zip(low, high))] += inside * rng.uniform(0.35, 0.7)
    volume *= 1.0 + 2.0 * ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    for _ in range(max(2, height * width // 5000)):
        start = rng.uniform((0, 0, 0), np.subtract(shape, 1))
        end = np.clip(start + rng.normal(0, 30, 3) * (0.3, 1, 1), 0, np.subtract(shape, 1))
        points = np.linspace(start, end, 200).round().astype(int)
        volume[tuple(points.T)] += 3.0
    volume[rng.random(shape) < 2e-4] += 4.0
    volume = ndimage.gaussian_filter(volume, (1.0, 1.0, 1.0))
    background = ndimage.gaussian_filter(rng.standard_normal((1, height, width)), 20.0) * 0.4
    volume = np.clip(volume + 0.08 + background, 0, None)
    return (np.clip(volume / np.quantile(volume, 0.9995), 0, 1)).astype(np.float32)


def make_volume(shape: tuple[int, int, int] = (32, 256, 256), noise: str = "horizontal", sigma: float = 0.1,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float32 volumes (Z, Y, X); each plane gets its own noise, correlated within the
    plane as `noise` says (along rows by default) and independent between planes."""
    clean = clean_volume(shape, seed)
    return clean, clean + structured_noise(shape, noise, sigma, seed=seed + 1)
