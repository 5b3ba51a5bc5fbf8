"""Denoising of 2D images, stacks, channels and volumes by overlapping tiles.

Each tile is read with a margin of `overlap` pixels on every side (mirrored at the image's
borders) and only its centre is kept. The margin exceeds the UNet's receptive radius, so the
kept pixels equal what the network computes on the whole image: tiles meet without seams and
need no blending, and memory stays bounded by the tile size. Tiles split each axis evenly, so the
margins cost as little as the tile size allows, and they run through a copy of the network with
its batch norms folded into the convolutions, in the device's faster memory layout. A 3D network
is tiled in Z as well.

A model with a one-line structN2V mask predicts by default with its blind spots (`blind_spot=True`,
core.blind_spot): each pixel from an input whose own value and mask's pixels are replaced as in
training, so the correlated noise of the mask's pixels, which the network learnt to read as signal,
cannot leak into the output. A tile then costs 8 passes of the network.

A model that whitens its input (core.whitening) has the whole normalised image whitened before tiling
and the stitched prediction coloured back, so the tiles meet as they would without whitening; each line's
colouring starts where its first noisy pixels and the model's `start_weight` put it (Whitening.colour).

A model trained with line offsets removed (core.banding) removes each plane's own offsets, measured on the
whole plane, before tiling; the output keeps them removed.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator

import numpy as np
import torch

from .axes import Layout, canonical_image
from .banding import remove_offsets_channels
from .blind_spot import blind_spot_forward, line_plan
from .config import DEFAULT_TILES
from .checks import check_int
from .images import InputError
from .model import DenoisingModel, autocast, check_model, memory_format
from .tiling import network_default
from .whitening import colour_channels, whiten_channels

MAX_TILE = 16384
MAX_BATCH = 4096
DEFAULT_TILE = DEFAULT_TILES["2d"]  # with 32 px margins, 1.3x the pixels of the image are computed (256: 1.8x)
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


def _tiles(shape: tuple[int, ...], tile: tuple[int, ...], margin: int):
    """Inner regions, one (start, length) per axis, covering `shape`; `tile` includes the margins."""
    starts = [range(0, size, side - 2 * margin) for size, side in zip(shape, tile)]
    for corner in itertools.product(*starts):
        yield tuple((start, min(side - 2 * margin, size - start)) for start, side, size in zip(corner, tile, shape))


def denoise_steps(
    model: DenoisingModel,
    image,
    tile_size: int | None = None,
    overlap: int = 32,
    batch_size: int = DEFAULT_BATCH,
    axes: str | None = None,
    blind_spot: bool = True,
    *,
    origin: tuple[int, ...] | None = None,
    remove_banding: bool = True,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise `image`, yielding (tiles done, tiles total) after each batch.

    `axes` names the image's axes (letters from S T C Z Y X, see core.axes); without it the model's
    training axes are used when the image has as many dimensions, else a 2D image or a stack of planes.
    `tile_size` (None: 512 for the 2D network, 96 for the 3D one) is the side of a tile, margins included.
    `blind_spot` (models with a one-line mask only; see the module docstring): False predicts in one pass
    on the unmasked image, faster but open to the mask's correlated noise. `origin` is the image's first pixel
    (Y, X; Z, Y, X for a 3D network) in a larger image it was cut from: blind-spot inference of the part
    then equals that part of the whole's. `remove_banding` False leaves a banded model's line offsets in the
    image (core.chunked removes those of the whole image before cutting it). Inputs are checked at the call,
    before any tile runs. The generator returns a float32 array of the input's shape and axis order, in the
    input's units (each channel in its own).
    """
    check_model(model)
    tile_size = network_default(tile_size, model.config.network)
    check_tiling(tile_size, overlap, batch_size, model.net.depth)
    array, found = canonical_image(image, model_axes(model, image, axes))
    check_model_fits(model, found)
    if origin is not None and (len(origin) != model.net.dims or not all(isinstance(v, (int, np.integer)) for v in origin)):
        names = "Z, Y, X" if model.net.dims == 3 else "Y, X"
        raise InputError(f"origin must be {model.net.dims} whole numbers, the image's first pixel ({names}) in the "
                         f"larger image it was cut from; got {origin!r}.")
    if model.banding is not None and remove_banding:
        array = remove_offsets_channels(array, model.banding, channel_axis=1)
    return _denoise_tiles(model, array, found, tile_size, overlap, batch_size, blind_spot, origin)


def model_axes(model: DenoisingModel, image, axes: str | None) -> str | None:
    """`axes`, or the model's training axes when the image (any array) has as many dimensions."""
    if axes is None and model.axes is not None and len(model.axes) == np.ndim(image):
        return model.axes
    return axes


def check_model_fits(model: DenoisingModel, found: Layout) -> None:
    """Raise InputError when the image's channels or axes do not suit the model."""
    channels = found.size("C")
    if channels != model.channels:
        if model.channels == 1:
            advice = "denoise one channel at a time, or train a model on all the channels"
        else:
            advice = "give axes with C for the channel axis (e.g. 'CYX')" if "C" not in found.axes else "use the image's channels"
        raise InputError(
            f"The model was trained on {model.channels} channel(s), but the image (axes {found.axes}) has "
            f"{channels}; {advice}."
        )
    if model.net.dims == 3 and "Z" not in found.axes:
        raise InputError(f"The model is a 3D network: give the image's axes with Z (e.g. 'ZYX'); got {found.axes}.")


def check_tiling(tile_size: int, overlap: int = 32, batch_size: int = 4, depth: int = 2) -> None:
    """Raise InputError naming the first bad tiling argument for a network of this depth."""
    multiple = 2**depth
    check_int(overlap, "overlap", 0, MAX_TILE)
    check_int(tile_size, f"tile_size (at least 2 * overlap + {multiple})", 2 * overlap + multiple, MAX_TILE)
    check_int(batch_size, "batch_size", 1, MAX_BATCH)


def _denoise_tiles(model: DenoisingModel, array: np.ndarray, found: Layout, tile_size: int, overlap: int,
                   batch_size: int, blind_spot: bool = True,
                   origin: tuple[int, ...] | None = None) -> Generator[tuple[int, int], None, np.ndarray]:
    multiple = 2**model.net.depth
    device = next(model.net.parameters()).device
    layout = memory_format(device, model.net.dims)
    net = model.net.fused_for_inference().to(memory_format=layout)
    masks = model.channel_masks()
    plan = line_plan(masks, model.net.dims) if blind_spot else None
    samples, channels, planes = array.shape[:3]
    if model.net.dims == 2:  # every plane on its own: (N * Z, C, Y, X)
        items = np.swapaxes(array, 1, 2).reshape(samples * planes, channels, *array.shape[-2:])
    else:
        items = array
    whitening = model.whitening
    if whitening is not None:  # whitened whole, as in training; tiles then need no normalisation of their own
        normalised = model.normalisation.forward(items, channel_axis=1)
        items = whiten_channels(normalised, whitening, channel_axis=1)
    shape = items.shape[2:]
    tile = tuple(_tile_length(size, tile_size, overlap, multiple) for size in shape)
    regions = list(_tiles(shape, tile, overlap))
    jobs = [(index, region) for index in range(len(items)) for region in regions]
    every_channel = np.arange(channels)
    first = origin or (0,) * len(shape)  # the image's first pixel in the whole one (blind spots hash positions)
    output = np.empty(items.shape, dtype=np.float32)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        tiles = np.stack([
            items[index][np.ix_(every_channel, *(_mirror(np.arange(begin - overlap, begin - overlap + side), size)
                                                 for (begin, _), side, size in zip(region, tile, shape)))]
            for index, region in chunk
        ])
        if whitening is None:
            tiles = model.normalisation.forward(tiles, channel_axis=1)
        batch = torch.from_numpy(tiles).to(device, memory_format=layout)
        with torch.inference_mode(), autocast(device, model.config.mixed_precision):
            if plan is None:
                predicted = net(batch)
            else:
                corners = torch.tensor([[begin - overlap + shift for (begin, _), shift in zip(region, first)]
                                        for _, region in chunk], device=device)
                predicted = blind_spot_forward(net, batch, masks, plan, corners, model.net.n2v2)
            predicted = predicted.float().cpu().numpy()
            if whitening is None:
                predicted = model.normalisation.inverse(predicted, channel_axis=1)
        for (index, region), result in zip(chunk, predicted):
            target = tuple(slice(begin, begin + length) for begin, length in region)
            kept = tuple(slice(overlap, overlap + length) for _, length in region)
            output[index][(slice(None), *target)] = result[(slice(None), *kept)]
        yield min(start + batch_size, len(jobs)), len(jobs)
    if whitening is not None:
        output = model.normalisation.inverse(colour_channels(output, whitening, 1, anchor=normalised), channel_axis=1)
    if model.net.dims == 2:
        output = np.swapaxes(output.reshape(samples, planes, channels, *shape), 1, 2)
    return found.restore(output)


def denoise(model: DenoisingModel, image, tile_size: int | None = None, overlap: int = 32,
            batch_size: int = DEFAULT_BATCH, axes: str | None = None, blind_spot: bool = True, *,
            origin: tuple[int, ...] | None = None, remove_banding: bool = True) -> np.ndarray:
    """Denoised float32 copy of `image` in the input's shape, axis order and units (see `denoise_steps`)."""
    steps = denoise_steps(model, image, tile_size, overlap, batch_size, axes, blind_spot, origin=origin,
                          remove_banding=remove_banding)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value
