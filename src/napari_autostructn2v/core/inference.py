"""Denoising of 2D images and stacks by overlapping tiles.

Each tile is read with a margin of `overlap` pixels on every side (mirrored at the image's
borders) and only its centre is kept. The margin exceeds the UNet's receptive radius, so the
kept pixels equal what the network computes on the whole image: tiles meet without seams and
need no blending, and memory stays bounded by the tile size. Tiles split each axis evenly, so the
margins cost as little as the tile size allows, and they run through a copy of the network with
its batch norms folded into the convolutions, in the device's faster memory layout.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from .images import InputError, as_slices, check_image, check_int
from .model import DenoisingModel, autocast, memory_format

MAX_TILE = 16384
MAX_BATCH = 4096
DEFAULT_TILE = 512  # with 32 px margins, 1.3x the pixels of the image are computed (256: 1.8x)
DEFAULT_BATCH = 1  # one 512 x 512 tile per pass holds as much memory as four of 256 x 256


def _mirror(index: np.ndarray, length: int) -> np.ndarray:
    """Indices reflected into [0, length) (mirror without repeating the edge), any distance out."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _tile_length(length: int, tile_size: int, margin: int, multiple: int) -> int:
    """Tile side (margins included, a multiple of `multiple`, at most `tile_size` rounded up to it) for
    the fewest tiles covering `length`, shrunk so that they split it evenly."""
    longest = _round_up(tile_size, multiple)
    count = -(-length // (longest - 2 * margin))
    return min(longest, _round_up(-(-length // count) + 2 * margin, multiple))


def _tiles(height: int, width: int, tile_h: int, tile_w: int, margin: int):
    """Inner regions (y, x, h, w) covering the image; tile_* include the margins."""
    inner_h, inner_w = tile_h - 2 * margin, tile_w - 2 * margin
    for y in range(0, height, inner_h):
        for x in range(0, width, inner_w):
            yield y, x, min(inner_h, height - y), min(inner_w, width - x)


def denoise_steps(
    model: DenoisingModel,
    image,
    tile_size: int = DEFAULT_TILE,
    overlap: int = 32,
    batch_size: int = DEFAULT_BATCH,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise `image` (Y, X) or (..., Y, X), yielding (tiles done, tiles total) after each batch.

    Inputs are checked at the call, before any tile runs. The generator returns a float32 array
    of the input's shape in the input's units.
    """
    if not isinstance(model, DenoisingModel):
        raise InputError(f"model must be a DenoisingModel (from fit or load_model); got {type(model).__name__}.")
    check_tiling(tile_size, overlap, batch_size, model.net.depth)
    array = check_image(image)
    return _denoise_tiles(model, array, tile_size, overlap, batch_size)


def check_tiling(tile_size: int, overlap: int = 32, batch_size: int = 4, depth: int = 2) -> None:
    """Raise InputError naming the first bad tiling argument for a network of this depth."""
    multiple = 2**depth
    check_int(overlap, "overlap", 0, MAX_TILE)
    check_int(tile_size, f"tile_size (at least 2 * overlap + {multiple})", 2 * overlap + multiple, MAX_TILE)
    check_int(batch_size, "batch_size", 1, MAX_BATCH)


def _denoise_tiles(model: DenoisingModel, array: np.ndarray, tile_size: int, overlap: int,
                   batch_size: int) -> Generator[tuple[int, int], None, np.ndarray]:
    multiple = 2**model.net.depth
    device = next(model.net.parameters()).device
    layout = memory_format(device)
    net = model.net.fused_for_inference().to(memory_format=layout)
    slices = as_slices(array)
    height, width = slices.shape[-2:]
    tile_h = _tile_length(height, tile_size, overlap, multiple)
    tile_w = _tile_length(width, tile_size, overlap, multiple)
    regions = list(_tiles(height, width, tile_h, tile_w, overlap))
    jobs = [(index, region) for index in range(len(slices)) for region in regions]
    output = np.empty(slices.shape, dtype=np.float32)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        tiles = np.stack(
            [
                slices[index][np.ix_(_mirror(np.arange(y - overlap, y - overlap + tile_h), height),
                                     _mirror(np.arange(x - overlap, x - overlap + tile_w), width))]
                for index, (y, x, _, _) in chunk
            ]
        )
        batch = torch.from_numpy(model.normalisation.forward(tiles)[:, None]).to(device, memory_format=layout)
        with torch.inference_mode(), autocast(device):
            predicted = model.normalisation.inverse(net(batch)[:, 0].float().cpu().numpy())
        for (index, (y, x, h, w)), tile in zip(chunk, predicted):
            output[index, y : y + h, x : x + w] = tile[overlap : overlap + h, overlap : overlap + w]
        yield min(start + batch_size, len(jobs)), len(jobs)
    return output.reshape(array.shape)


def denoise(model: DenoisingModel, image, tile_size: int = DEFAULT_TILE, overlap: int = 32,
            batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Denoised float32 copy of `image` (2D or stack of 2D slices) in the input's units."""
    steps = denoise_steps(model, image, tile_size, overlap, batch_size)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value
