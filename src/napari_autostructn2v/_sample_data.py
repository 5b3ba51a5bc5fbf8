"""Sample data for napari's File > Open Sample: generated on the fly, nothing is downloaded."""

from __future__ import annotations

from .core.sample import make_sample, make_volume


def structured_noise_sample() -> list[tuple]:
    """A 512x512 image with row-correlated noise, plus its clean reference as a hidden layer."""
    clean, noisy = make_sample(shape=(512, 512), noise="horizontal", sigma=0.1, seed=0)
    return [
        (noisy, {"name": "structured noise sample"}, "image"),
        (clean, {"name": "structured noise sample (clean reference)", "visible": False}, "image"),
    ]


def structured_noise_volume() -> list[tuple]:
    """A 32x256x256 volume (ZYX) with row-correlated noise in every plane, plus its clean reference (hidden)."""
    clean, noisy = make_volume(shape=(32, 256, 256), noise="horizontal", sigma=0.1, seed=0)
    metadata = {"axis_labels": ("z", "y", "x")}
    return [
        (noisy, {"name": "structured noise volume", **metadata}, "image"),
        (clean, {"name": "structured noise volume (clean reference)", "visible": False, **metadata}, "image"),
    ]
