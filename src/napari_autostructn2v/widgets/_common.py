"""Helpers shared by the Train and Denoise widgets: input layers, output layers and user errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from napari.layers import Image

from ..core.config import ConfigError
from ..core.images import InputError
from ..core.model import ModelFileError

OUT_OF_MEMORY = (
    "Out of memory. Lower the batch size or the patch size (training) or the tile size (denoising), "
    "close other programs, or choose device 'cpu' under advanced settings."
)


@dataclass
class Failed:
    """Yielded by a worker instead of raising, for errors the user can fix."""

    message: str


def user_message(error: BaseException) -> str | None:
    """What to tell the user about `error`, or None when it is a bug rather than a user error."""
    if isinstance(error, (InputError, ConfigError, ModelFileError)):
        return str(error)
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    ):
        return OUT_OF_MEMORY
    return None


def layer_data(layer: Image):
    """The full-resolution data of an image layer; an RGB layer raises InputError."""
    if layer.rgb:
        raise InputError(
            f"Layer '{layer.name}' is an RGB image. Split it into channels first "
            "(right-click the layer > Split RGB) and choose one channel."
        )
    return layer.data[0] if layer.multiscale else layer.data


def current_index(viewer, layer: Image) -> tuple[int, ...]:
    """The index of the 2D slice of `layer` shown at the viewer's current position (() for 2D)."""
    shape = layer_data(layer).shape[:-2]
    if not shape:
        return ()
    position = layer.world_to_data(viewer.dims.point)[: len(shape)]
    return tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(position, shape))


def patch_rectangles(corners: np.ndarray, size: int) -> np.ndarray:
    """(N, 4, 2) rectangle vertices around the pixels of square patches with top-left `corners`."""
    square = np.array([[0, 0], [0, size], [size, size], [size, 0]], float)
    return corners[:, None, :] - 0.5 + square[None]


def show_image(viewer, data: np.ndarray, name: str, like: Image | None = None, offset=(0, 0), **kwargs) -> Image:
    """Put `data` in layer `name` (added or replaced), placed like `like` (shifted by `offset` pixels)."""
    if like is not None:
        scale = np.asarray(like.scale[-data.ndim :], float)
        translate = np.asarray(like.translate[-data.ndim :], float)
        translate[-2:] += np.asarray(offset, float) * scale[-2:]
        kwargs.update(scale=scale, translate=translate)
    return show_layer(viewer, "image", data, name, **kwargs)


def show_layer(viewer, kind: str, data, name: str, **kwargs):
    """Update image or labels layer `name` in place, or add it (keeping the user's active layer)."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if type(layer).__name__.lower() == kind and layer.ndim == np.ndim(data):
            layer.data = data
            for key in ("scale", "translate", "contrast_limits"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        viewer.layers.remove(layer)
    active = viewer.layers.selection.active
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)
    if active is not None:
        viewer.layers.selection.active = active
    return layer
