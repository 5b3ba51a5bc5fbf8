"""The evaluation set beyond the package's own sample: image classes and noise families.

Images (float32, [0, 1], clipped after scaling by the 0.5 / 99.5 percentiles):
- sparse: a few PSF-blurred, textured nuclei on a dark background (about 75 % background), the
  brightest partly saturated;
- dense: nuclei covering more than 80 % of the field, touching, with chromatin texture;
- bundled: crops of images that ship inside scikit-image (no download): cell, hubble_deep_field
  (grey), moon, coins.

Noise families, each at a level `sigma`: the standard deviation of the noise, or, for the
signal-dependent families, the standard deviation at intensity 0.5 (photons = 0.5 / sigma**2):
- white: Gaussian, independent pixels;
- poisson: Poisson shot noise plus Gaussian read noise of sigma / 4 (uncorrelated);
- box3/box5/box7 (horizontal, vertical): white noise filtered by a line of 3, 5 or 7 ones;
- gauss1/gauss2/gauss3 (horizontal, vertical): filtered by exp(-t^2 / (2 l^2));
- aniso: a 2D anisotropic Gaussian (lengths 2 along x, 0.7 along y);
- diagonal / antidiagonal: filtered by a line of 3 along the (anti)diagonal;
- pmt1 / pmt2: Poisson counts passed through a causal exponential filter along x (tau 1 or 2 px),
  as the analog filter of a point-scanning detector does; signal and noise are both filtered, so
  the reference image is the filtered clean image;
- banding: sCMOS-like read-out: per-row offsets plus read noise correlated over 3 pixels along
  the row, on top of Poisson noise.

Every family knows its noise autocorrelation (`Noise.acf`), from which the benchmarks derive the
true mask support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import correlate2d
from skimage import color, data

from napari_autostructn2v.core.sample import noise_kernel

SHAPE = (256, 256)
IMAGE_CLASSES = {"sparse": ("sparse",), "dense": ("dense",), "bundled": ("cell", "hubble", "moon", "coins")}
BUNDLED = {"cell": data.cell, "hubble": lambda: color.rgb2gray(data.hubble_deep_field()), "moon": data.moon,
           "coins": data.coins}


def _scale(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.5))
    return np.clip((image - low) / max(high - low, 1e-12), 0, 1).astype(np.float32)


def _nuclei(shape, seed: int, count: int, radius: tuple[float, float], brightness: tuple[float, float]) -> np.ndarray:
    """Textured elliptical nuclei (each with chromatin texture and a bright rim), blurred by a PSF."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    image = np.zeros(shape, np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    texture /= texture.std()
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(*radius, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        r = np.sqrt(u**2 + v**2)
        inside = r < 1
        level = rng.uniform(*brightness)
        image[inside] = np.maximum(image[inside], level * (0.8 + 0.25 * r[inside] ** 4) * (1 + 0.3 * texture[inside]))
    return ndimage.gaussian_filter(image, 1.2)


def sparse_image(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """About 75 % dark background, a few nuclei, the brightest saturated after scaling."""
    image = _nuclei(shape, seed, count=6, radius=(14, 24), brightness=(0.4, 1.6))
    return np.clip(image + 0.03, 0, 1.0).astype(np.float32)


def dense_image(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """Nuclei covering more than 80 % of the field."""
    image = _nuclei(shape, seed, count=90, radius=(12, 22), brightness=(0.3, 0.9))
    return _scale(image + 0.05)


def clean_image(name: str, seed: int = 0, shape=SHAPE) -> np.ndarray:
    """A clean float32 image in [0, 1]: `sparse`, `dense`, or a crop of a bundled image."""
    if name == "sparse":
        return sparse_image(seed, shape)
    if name == "dense":
        return dense_image(seed, shape)
    if name not in BUNDLED:
        raise ValueError(f"unknown image {name!r}; choose sparse, dense or one of {sorted(BUNDLED)}")
    full = np.asarray(BUNDLED[name](), np.float32)
    rng = np.random.default_rng(seed)
    y = int(rng.integers(0, full.shape[0] - shape[0] + 1))
    x = int(rng.integers(0, full.shape[1] - shape[1] + 1))
    return _scale(full[y : y + shape[0], x : x + shape[1]])


def image_class(name: str) -> str:
    return next(cls for cls, names in IMAGE_CLASSES.items() if name in names)


# ----------------------------------------------------------------------------- noise families

def _line(length: int, direction: str) -> np.ndarray:
    kernel = np.ones((1, length))
    return kernel.T if direction == "vertical" else kernel


def _aniso() -> np.ndarray:
    ys, xs = np.arange(-3, 4)[:, None], np.arange(-6, 7)[None, :]
    return np.exp(-0.5 * ((xs / 2.0) ** 2 + (ys / 0.7) ** 2))


def _exponential(tau: float, length: int = 25) -> np.ndarray:
    """Causal exponential filter along x, unit gain, as a kernel for ndimage.convolve (centre at index length)."""
    decay = np.exp(-1.0 / tau)
    taps = (1 - decay) * decay ** np.arange(length + 1)
    kernel = np.zeros((1, 2 * length + 1))
    kernel[0, length:] = taps  # convolve flips: output[x] = sum_n taps[n] * input[x - n]
    return kernel / taps.sum()


@dataclass(frozen=True)
class Noise:
    """A noise family at one level; `apply` returns (reference, noisy) for a clean image."""

    family: str
    sigma: float

    @property
    def correlated(self) -> bool:
        return self.family not in ("white", "poisson")

    @property
    def label(self) -> str:
        return self.family

    def linear_kernel(self) -> np.ndarray | None:
        """The kernel k of the Gaussian part k * w, if that part is correlated."""
        family = self.family
        direction = "vertical" if family.endswith("_v") else "horizontal"
        base = family.removesuffix("_v").removesuffix("_h")
        if base.startswith("box"):
            return _line(int(base[3:]), direction)
        if base.startswith("gauss"):
            return noise_kernel(f"{direction}_gauss", float(base[5:]))
        if base == "aniso":
            return _aniso()
        if base == "diagonal":
            return np.eye(3)
        if base == "antidiagonal":
            return np.fliplr(np.eye(3))
        return None

    def apply(self, clean: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        shape = clean.shape
        photons = 0.5 / self.sigma**2
        if self.family == "white":
            return clean, (clean + self.sigma * rng.standard_normal(shape)).astype(np.float32)
        if self.family == "poisson":
            shot = rng.poisson(np.clip(clean, 0, None) * photons) / photons
            return clean, (shot + self.sigma / 4 * rng.standard_normal(shape)).astype(np.float32)
        if self.family.startswith("pmt"):
            kernel = _exponential(float(self.family[3:]))
            shot = rng.poisson(np.clip(clean, 0, None) * photons) / photons
            reference = ndimage.convolve(clean.astype(np.float64), kernel, mode="wrap")
            return reference.astype(np.float32), ndimage.convolve(shot, kernel, mode="wrap").astype(np.float32)
        if self.family == "banding":
            shot = rng.poisson(np.clip(clean, 0, None) * photons) / photons
            offsets = rng.standard_normal((shape[0], 1)) * self.sigma * 0.6
            read = ndimage.convolve(rng.standard_normal(shape), _line(3, "horizontal") / np.sqrt(3), mode="wrap")
            return clean, (shot + offsets + self.sigma * 0.5 * read).astype(np.float32)
        kernel = self.linear_kernel()
        if kernel is None:
            raise ValueError(f"unknown noise family {self.family!r}; choose one of {FAMILIES}")
        kernel = kernel / np.sqrt(np.sum(kernel**2))
        noise = self.sigma * ndimage.convolve(rng.standard_normal(shape), kernel, mode="wrap")
        return clean, (clean + noise).astype(np.float32)

    def acf(self, radius: int = 12, mean_intensity: float = 0.3) -> np.ndarray:
        """The noise autocorrelation (1 at the centre) on a (2 radius + 1) square, analytically."""
        size = 2 * radius + 1
        centre = np.zeros((size, size))
        centre[radius, radius] = 1.0
        photons = 0.5 / self.sigma**2
        if self.family in ("white", "poisson"):
            return centre
        if self.family.startswith("pmt"):
            return _kernel_acf(_exponential(float(self.family[3:])), radius)
        if self.family == "banding":
            shot_var = mean_intensity / photons
            offset_var = (0.6 * self.sigma) ** 2
            read = _kernel_acf(_line(3, "horizontal"), radius) * (0.5 * self.sigma) ** 2
            total = centre * shot_var + read
            total[radius, :] += offset_var
            return total / total[radius, radius]
        return _kernel_acf(self.linear_kernel(), radius)


def _kernel_acf(kernel: np.ndarray, radius: int) -> np.ndarray:
    full = correlate2d(kernel, kernel, mode="full")
    cy, cx = full.shape[0] // 2, full.shape[1] // 2
    padded = np.zeros((2 * radius + 1,) * 2)
    ry, rx = min(cy, radius), min(cx, radius)
    padded[radius - ry : radius + ry + 1, radius - rx : radius + rx + 1] = full[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1]
    return padded / full[cy, cx]


FAMILIES = ("white", "poisson", "box3_h", "box5_h", "box7_h", "box5_v", "gauss1_h", "gauss2_h", "gauss3_h", "gauss2_v",
            "aniso", "diagonal", "antidiagonal", "pmt1", "pmt2", "banding")


def true_support(noise: Noise, relative: float = 1e-3, radius: int = 12) -> np.ndarray:
    """The lags where the noise autocorrelation exceeds `relative` (odd square, centre set)."""
    support = noise.acf(radius) > relative
    support[radius, radius] = True
    return support


def make_case(image: str, noise: Noise, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, noisy) for one image, noise and seed."""
    return noise.apply(clean_image(image, seed), seed=10_000 + seed)
