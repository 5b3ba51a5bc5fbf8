"""Recorrupted pairs: training without a blind spot when the noise is additive with a known covariance.

Recorrupted-to-Recorrupted (Pang et al., CVPR 2021): for a noisy image y = x + n with Gaussian noise n of
covariance C, draw z of the same covariance and train the network to map y + alpha z to y - z / alpha.
The two noises n + alpha z and n - z / alpha are uncorrelated (C - C = 0), so the mean squared error
against the second is, up to a constant, the error against the clean image: supervised training without
clean images, in which the network sees every neighbour of every pixel (a blind spot hides 1-25 of them).

It needs the covariance. `estimate_struct_mask` measures it over the mask's lags after a narrow detrending
that texture hardly passes, the detrending's bias undone (over the flat windows' own support where the mask
is full and the image plain), and offers it (`MaskEstimate.recorruption`) only where the rule below holds:
the noise has the same variance in the dark and the bright parts of the image (shot noise does not), those
parts differ enough in brightness for that test to mean something, and the noise's correlation ends inside
the analysed window (row offsets do not). The draws must match the noise everywhere: on scikit-image's moon
under shot noise, whose intensities vary too little for the variance test to see it grow, recorrupted pairs
lost 1.4 dB to N2V (docs/benchmarks.md). The trained network then denoises in one plain pass: nothing to undo
at inference, so the model file and its bioimage.io export are ordinary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ALPHA = 0.5  # the recorruption's strength: input noise (1 + alpha**2) C, target noise (1 + 1 / alpha**2) C
MAX_VARIANCE_RATIO = 1.3  # noise variance in the brightest third of the windows over the darkest third
MIN_BRIGHTNESS_RATIO = 1.5  # mean intensity of those bright windows over the dark ones
KERNEL_MARGIN = 8  # pixels by which the noise draws' kernel reaches beyond the covariance, each way


@dataclass(frozen=True)
class Recorruption:
    """The noise covariance (odd square, lags around the centre, in the raw image's units squared), the
    measured ratio of the noise variance in bright and dark windows and that of their mean intensities."""

    covariance: np.ndarray
    variance_ratio: float
    brightness_ratio: float
    textured: bool = False  # the image has texture: its windows were ranked by their residual (core.mask)

    @property
    def pixels(self) -> int:
        """The lags correlated by at least 5 % (the covariance holds smaller values too)."""
        centre = self.covariance.shape[0] // 2
        return int(np.count_nonzero(self.covariance >= 0.05 * self.covariance[centre, centre]))

    def describe(self) -> str:
        side = self.covariance.shape[0]
        support = "uncorrelated" if self.pixels == 1 else f"correlated over {self.pixels} px in {side}x{side}"
        return (f"additive noise ({support}; variance {self.variance_ratio:.2f}x as large in bright windows as in "
                f"dark): recorrupted pairs with its measured covariance, no blind spot")


def recorruption_rule(mask: np.ndarray, radius: int, variance_ratio: float, brightness_ratio: float) -> str | None:
    """Why recorrupted pairs do not apply to this estimate, or None when they do."""
    if variance_ratio > MAX_VARIANCE_RATIO:
        return (f"the noise variance is {variance_ratio:.2f}x as large in bright windows as in dark (shot noise; "
                f"recorrupted pairs need additive noise, at most {MAX_VARIANCE_RATIO}x)")
    if not brightness_ratio >= MIN_BRIGHTNESS_RATIO:
        return (f"the bright windows are only {brightness_ratio:.2f}x as bright as the dark ones (at least "
                f"{MIN_BRIGHTNESS_RATIO}x is needed to tell additive noise from shot noise)")
    if max(mask.shape) > 2 * radius - 1:
        return "the correlation reaches the edge of the analysed window, so its covariance is not known in full"
    return None


def square_root_kernel(covariance: np.ndarray) -> np.ndarray:
    """A zero-phase kernel k with k * k = covariance (as far as the covariance is positive definite: its
    negative spectral part, from measurement noise, is dropped). White noise filtered by k has that covariance.
    The square root reaches further than the covariance: k is KERNEL_MARGIN pixels wider each way (cut to the
    covariance's side, the noise it made was 12 % off a box line's covariance, 0.7 % at this margin)."""
    side = covariance.shape[0]
    half = side // 2 + KERNEL_MARGIN
    grid = 4 * (2 * half + 1)  # room for the square root's spectrum to resolve
    padded = np.zeros((grid, grid))
    centre = grid // 2
    padded[centre - side // 2 : centre + side // 2 + 1, centre - side // 2 : centre + side // 2 + 1] = covariance
    spectrum = np.real(np.fft.fft2(np.fft.ifftshift(padded)))
    root = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(np.clip(spectrum, 0, None)))))
    return root[centre - half : centre + half + 1, centre - half : centre + half + 1]


def noise_kernels(recorruptions: list[Recorruption], stds: np.ndarray) -> torch.Tensor:
    """The (C, 1, K, K) square-root kernels of each channel's covariance in normalised units (divided by the
    channel's std squared), for a grouped convolution of white noise."""
    roots = [square_root_kernel(r.covariance / float(std) ** 2) for r, std in zip(recorruptions, stds)]
    side = max(root.shape[0] for root in roots)
    kernels = np.zeros((len(roots), 1, side, side), np.float32)
    for channel, root in enumerate(roots):
        offset = (side - root.shape[0]) // 2
        kernels[channel, 0, offset : offset + root.shape[0], offset : offset + root.shape[1]] = root
    return torch.from_numpy(kernels)


def correlated_noise(kernels: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Noise of the kernels' covariance for a (B, C, Y, X) batch: white noise filtered by each channel's kernel."""
    batch, channels, height, width = shape
    pad = kernels.shape[-1] // 2
    white = torch.randn((batch, channels, height + 2 * pad, width + 2 * pad), generator=generator,
                        device=kernels.device)
    return torch.nn.functional.conv2d(white, kernels, groups=channels)


def recorrupted_pair(patches: torch.Tensor, kernels: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target): the patches plus ALPHA times a noise draw, and minus the same draw over ALPHA."""
    noise = correlated_noise(kernels, tuple(patches.shape), generator)
    return patches + ALPHA * noise, patches - noise / ALPHA
