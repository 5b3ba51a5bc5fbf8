"""Blind-spot masking of a batch of 2D or 3D patches, vectorised in torch, with fresh random positions per call.

Each channel gets its own blind spots and its own structN2V mask. In 3D, blind spots are spread
through the volume and a 2D mask applies within each blind spot's plane.

Blind spots are drawn one per cell of a grid whose spacing gives `percent` % of the pixels.
Each blind spot takes the value of a random neighbour (N2V) or the median of its neighbours
(N2V2). With a structN2V mask, each of the mask's other pixels takes the value of a pixel at most
2 pixels away that lies outside the masks of all blind spots: the input keeps the local signal but
none of any blind spot's correlated noise. (structN2V and CAREamics draw uniform random values
within the patch's range instead; with a 21-pixel line at 1 % blind spots that replaces a fifth
of the input by noise the network must learn to ignore.) A pixel with no such source nearby gets
a uniform random value within the patch's range.
"""

from __future__ import annotations

import numpy as np
import torch

SOURCE_RADIUS = 2  # a masked pixel copies a pixel at most this far away
SOURCE_TRIES = 4  # random shifts tried before a masked pixel gets a random value


def as_spatial_mask(struct_mask: np.ndarray | None, dims: int) -> np.ndarray | None:
    """A 2D mask as (1, M, M) for 3D patches; a mask of `dims` dimensions as it is."""
    if struct_mask is None or struct_mask.ndim == dims:
        return struct_mask
    if struct_mask.ndim == 2 and dims == 3:
        return struct_mask[None]
    raise ValueError(f"a {struct_mask.ndim}D mask cannot be used on {dims}D patches")


def neighbour_offsets(struct_mask: np.ndarray | None, dims: int = 2) -> torch.Tensor:
    """(K, dims) offsets around a blind spot that may replace it: not the centre, not in the mask."""
    struct_mask = as_spatial_mask(struct_mask, dims)
    half = np.zeros(dims, int) if struct_mask is None else np.asarray(struct_mask.shape) // 2
    for radius in range(2, int(half.max()) + 4):
        grid = np.mgrid[(slice(-radius, radius + 1),) * dims].reshape(dims, -1)
        keep = (grid != 0).any(axis=0)
        if struct_mask is not None:
            inside = (np.abs(grid) <= half[:, None]).all(axis=0)
            in_mask = np.zeros_like(keep)
            in_mask[inside] = struct_mask[tuple(grid[:, inside] + half[:, None])]
            keep &= ~in_mask
        if keep.sum() >= 8:
            break
    return torch.as_tensor(grid[:, keep].T.copy(), dtype=torch.long)


def struct_offsets(struct_mask: np.ndarray | None, dims: int = 2) -> torch.Tensor:
    """(M, dims) offsets of the mask's pixels other than the centre."""
    if struct_mask is None:
        return torch.zeros((0, dims), dtype=torch.long)
    struct_mask = as_spatial_mask(struct_mask, dims)
    offsets = np.stack(np.nonzero(struct_mask), axis=1) - np.asarray(struct_mask.shape) // 2
    offsets = offsets[(offsets != 0).any(axis=1)]
    return torch.as_tensor(offsets, dtype=torch.long)


def blind_spots(batch: int, shape: tuple[int, ...], percent: float, generator: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Batch indices and coordinates (one tensor per spatial axis) of stratified random blind spots,
    one per cell of a grid whose spacing gives `percent` % of the pixels."""
    spacing = max(1, round((100.0 / percent) ** (1.0 / len(shape))))
    cells = torch.meshgrid(torch.arange(batch, device=device),
                           *(torch.arange(0, size, spacing, device=device) for size in shape), indexing="ij")
    b, cells = cells[0].reshape(-1), [cell.reshape(-1) for cell in cells[1:]]
    coords = []
    for cell, size in zip(cells, shape):
        extent = torch.clamp(size - cell, max=spacing)
        coords.append(cell + (torch.rand(cell.shape, generator=generator, device=device) * extent).long())
    return b, coords


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index).clamp(0, size - 1)


def _neighbour(centre: torch.Tensor, offset: torch.Tensor, size: int) -> torch.Tensor:
    """centre + offset, or centre - offset where that falls outside: never the centre itself (reflecting
    at the border would map an offset of 2 from the second pixel back onto it)."""
    index = centre + offset
    return torch.where((index < 0) | (index >= size), centre - offset, index).clamp(0, size - 1)


def channel_masks(struct_mask, channels: int) -> list[np.ndarray | None]:
    """One mask (or None) per channel: a list or tuple of masks (arrays of 2 or more dimensions, or None)
    as given, or the same mask for every channel (a nested list of rows is one 2D mask)."""
    if isinstance(struct_mask, (list, tuple)) and all(mask is None or np.ndim(mask) >= 2 for mask in struct_mask):
        if len(struct_mask) != channels:
            raise ValueError(f"{len(struct_mask)} masks for {channels} channels")
        return list(struct_mask)
    return [struct_mask] * channels


def mask_batch(
    patches: torch.Tensor,
    percent: float,
    generator: torch.Generator,
    struct_mask: np.ndarray | list | None = None,
    median: bool = False,
    spots: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and a boolean map of the blind spots for a (B, C, H, W) or (B, C, Z, H, W) batch.

    `struct_mask` is one mask for all channels or a list with one per channel (None: plain N2V).
    `spots` (batch indices and one coordinate tensor per spatial axis) replaces the random blind spots.
    """
    inputs = patches.clone()
    blind = torch.zeros_like(patches, dtype=torch.bool)
    for channel, mask in enumerate(channel_masks(struct_mask, patches.shape[1])):
        _mask_channel(patches[:, channel], inputs[:, channel], blind[:, channel], percent, generator, mask, median,
                      spots)
    return inputs, blind


def _mask_channel(patches: torch.Tensor, inputs: torch.Tensor, blind: torch.Tensor, percent: float,
                  generator: torch.Generator, struct_mask: np.ndarray | None, median: bool, spots=None) -> None:
    """Blind spots in one channel (B, *spatial): written into `inputs` and marked in `blind`."""
    shape = patches.shape[1:]
    device = patches.device
    b, coords = spots or blind_spots(patches.shape[0], shape, percent, generator, device)
    neighbours = neighbour_offsets(struct_mask, len(shape)).to(device)
    if median:
        near = [_neighbour(c[:, None], neighbours[None, :, axis], size)
                for axis, (c, size) in enumerate(zip(coords, shape))]
        values = patches[(b[:, None], *near)].median(dim=1).values
    else:
        pick = torch.randint(len(neighbours), b.shape, generator=generator, device=device)
        near = [_neighbour(c, neighbours[pick, axis], size) for axis, (c, size) in enumerate(zip(coords, shape))]
        values = patches[(b, *near)]
    if struct_mask is not None and struct_mask.sum() > 1:
        _replace_struct_pixels(patches, inputs, b, coords, struct_mask, generator)
    inputs[(b, *coords)] = values
    blind[(b, *coords)] = True


def _replace_struct_pixels(patches: torch.Tensor, inputs: torch.Tensor, b: torch.Tensor, coords: list[torch.Tensor],
                           struct_mask: np.ndarray, generator: torch.Generator) -> None:
    """Overwrite the mask's pixels around each blind spot (b, *coords) in `inputs` with uncorrelated values.

    A source must lie outside every blind spot's mask (masks of nearby blind spots overlap), so its
    noise is uncorrelated with that of any blind spot. A few random shifts are tried per pixel.
    """
    shape = patches.shape[1:]
    device = patches.device
    offsets = struct_offsets(struct_mask, len(shape)).to(device)
    targets = [c[:, None] + offsets[None, :, axis] for axis, c in enumerate(coords)]
    inside = torch.ones_like(targets[0], dtype=torch.bool)
    for target, size in zip(targets, shape):
        inside &= (target >= 0) & (target < size)
    tb = b[:, None].expand_as(targets[0])[inside]
    targets = [target[inside] for target in targets]
    covered = torch.zeros(patches.shape, dtype=torch.bool, device=device)
    covered[(tb, *targets)] = True
    covered[(b, *coords)] = True
    pending = torch.ones_like(tb, dtype=torch.bool)
    for _ in range(SOURCE_TRIES):
        shift = torch.randint(-SOURCE_RADIUS, SOURCE_RADIUS + 1, (len(shape), len(tb)), generator=generator,
                              device=device)
        sources = [_reflect(target + shift[axis], size) for axis, (target, size) in enumerate(zip(targets, shape))]
        usable = pending & ~covered[(tb, *sources)]
        inputs[(tb[usable], *(t[usable] for t in targets))] = patches[(tb[usable], *(s[usable] for s in sources))]
        pending &= ~usable
    if pending.any():
        spatial = tuple(range(1, patches.ndim))
        db, dt = tb[pending], [t[pending] for t in targets]
        low, high = patches.amin(dim=spatial)[db], patches.amax(dim=spatial)[db]
        noise = torch.rand(db.shape, generator=generator, device=device, dtype=patches.dtype)
        inputs[(db, *dt)] = low + noise * (high - low)
