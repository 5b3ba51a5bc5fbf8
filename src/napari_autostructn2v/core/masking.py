"""Blind-spot masking of a batch, vectorised in torch, with fresh random positions per call.

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

import math

import numpy as np
import torch

SOURCE_RADIUS = 2  # a masked pixel copies a pixel at most this far away
SOURCE_TRIES = 4  # random shifts tried before a masked pixel gets a random value


def neighbour_offsets(struct_mask: np.ndarray | None) -> torch.Tensor:
    """(K, 2) offsets around a blind spot that may replace it: not the centre, not in the mask."""
    half = 0 if struct_mask is None else struct_mask.shape[0] // 2
    for radius in range(2, half + 4):
        dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        keep = (dy != 0) | (dx != 0)
        if struct_mask is not None:
            inside = (np.abs(dy) <= half) & (np.abs(dx) <= half)
            in_mask = np.zeros_like(keep)
            in_mask[inside] = struct_mask[dy[inside] + half, dx[inside] + half]
            keep &= ~in_mask
        if keep.sum() >= 8:
            break
    return torch.as_tensor(np.stack([dy[keep], dx[keep]], axis=1), dtype=torch.long)


def struct_offsets(struct_mask: np.ndarray | None) -> torch.Tensor:
    """(M, 2) offsets of the mask's pixels other than the centre."""
    if struct_mask is None:
        return torch.zeros((0, 2), dtype=torch.long)
    half = struct_mask.shape[0] // 2
    dy, dx = np.nonzero(struct_mask)
    offsets = np.stack([dy - half, dx - half], axis=1)
    offsets = offsets[(offsets != 0).any(axis=1)]
    return torch.as_tensor(offsets, dtype=torch.long)


def blind_spots(batch: int, height: int, width: int, percent: float, generator: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch, row and column indices of stratified random blind spots, one per grid cell."""
    spacing = max(1, round(math.sqrt(100.0 / percent)))
    cell_y = torch.arange(0, height, spacing, device=device)
    cell_x = torch.arange(0, width, spacing, device=device)
    b, cy, cx = torch.meshgrid(torch.arange(batch, device=device), cell_y, cell_x, indexing="ij")
    b, cy, cx = b.reshape(-1), cy.reshape(-1), cx.reshape(-1)
    size_y = torch.clamp(height - cy, max=spacing)
    size_x = torch.clamp(width - cx, max=spacing)
    y = cy + (torch.rand(cy.shape, generator=generator, device=device) * size_y).long()
    x = cx + (torch.rand(cx.shape, generator=generator, device=device) * size_x).long()
    return b, y, x


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index).clamp(0, size - 1)


def mask_batch(
    patches: torch.Tensor,
    percent: float,
    generator: torch.Generator,
    struct_mask: np.ndarray | None = None,
    median: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and a boolean map of the blind spots for a (B, 1, H, W) batch."""
    batch, _, height, width = patches.shape
    device = patches.device
    b, y, x = blind_spots(batch, height, width, percent, generator, device)
    neighbours = neighbour_offsets(struct_mask).to(device)
    if median:
        ny = _reflect(y[:, None] + neighbours[None, :, 0], height)
        nx = _reflect(x[:, None] + neighbours[None, :, 1], width)
        values = patches[b[:, None], 0, ny, nx].median(dim=1).values
    else:
        pick = torch.randint(len(neighbours), y.shape, generator=generator, device=device)
        ny = _reflect(y + neighbours[pick, 0], height)
        nx = _reflect(x + neighbours[pick, 1], width)
        values = patches[b, 0, ny, nx]
    inputs = patches.clone()
    if struct_mask is not None and struct_mask.sum() > 1:
        _replace_struct_pixels(patches, inputs, b, y, x, struct_mask, generator)
    inputs[b, 0, y, x] = values
    blind = torch.zeros_like(patches, dtype=torch.bool)
    blind[b, 0, y, x] = True
    return inputs, blind


def _replace_struct_pixels(patches: torch.Tensor, inputs: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
                           x: torch.Tensor, struct_mask: np.ndarray, generator: torch.Generator) -> None:
    """Overwrite the mask's pixels around each blind spot (b, y, x) in `inputs` with uncorrelated values.

    A source must lie outside every blind spot's mask (masks of nearby blind spots overlap), so its
    noise is uncorrelated with that of any blind spot. A few random shifts are tried per pixel.
    """
    height, width = patches.shape[-2:]
    device = patches.device
    offsets = struct_offsets(struct_mask).to(device)
    ty, tx = y[:, None] + offsets[None, :, 0], x[:, None] + offsets[None, :, 1]
    inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
    tb, ty, tx = b[:, None].expand_as(ty)[inside], ty[inside], tx[inside]
    covered = torch.zeros(patches.shape[0], height, width, dtype=torch.bool, device=device)
    covered[tb, ty, tx] = True
    covered[b, y, x] = True
    pending = torch.ones_like(tb, dtype=torch.bool)
    for _ in range(SOURCE_TRIES):
        shift = torch.randint(-SOURCE_RADIUS, SOURCE_RADIUS + 1, (2, len(tb)), generator=generator, device=device)
        sy, sx = _reflect(ty + shift[0], height), _reflect(tx + shift[1], width)
        usable = pending & ~covered[tb, sy, sx]
        inputs[tb[usable], 0, ty[usable], tx[usable]] = patches[tb[usable], 0, sy[usable], sx[usable]]
        pending &= ~usable
    if pending.any():
        db, dy, dx = tb[pending], ty[pending], tx[pending]
        low, high = patches.amin(dim=(1, 2, 3))[db], patches.amax(dim=(1, 2, 3))[db]
        noise = torch.rand(db.shape, generator=generator, device=device, dtype=patches.dtype)
        inputs[db, 0, dy, dx] = low + noise * (high - low)
