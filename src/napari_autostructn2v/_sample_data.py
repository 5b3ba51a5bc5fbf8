"""Sample data for napari's File > Open Sample: generated on the fly, nothing is downloaded."""

from __future__ import annotations

from .core.sample import make_sample


def structured_noise_sample() -> list[tuple]:
    """A 512x512 image with row-correlated noise, plus its clean reference as a hidden layer."""
    clean, noisy = make_sample(shape=(512, 512), noise="horizontal", sigma=0.1, seed=0)
    return [
        (noisy, {"name": "structured noise sample"}, "image"),
        (clean, {"name": "structured noise sample (clean reference)", "visible": False}, "image"),
    ]
