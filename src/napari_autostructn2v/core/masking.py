"""Blind-spot masking of a batch, vectorised in torch, with fresh random positions per call.

Blind spots are drawn one per cell of a grid whose spacing gives `percent` % of the pixels.
Each blind spot takes the value of a random neighbour (N2V) or the median of its neighbours
(N2V2). With a structN2V mask, the mask's other pixels get uniform random values within the
patch's range, and the neighbours used for replacement are taken outside the mask, so none of
the blind spot's correlated noise leaks into its replacement.
"""

from __future__ import annotations

import math

import numpy as np
import torch


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
    offsets = struct_offsets(struct_mask).to(device)
    if len(offsets):
        sy = y[:, None] + offsets[None, :, 0]
        sx = x[:, None] + offsets[None, :, 1]
        sb = b[:, None].expand_as(sy)
        inside = (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
        sb, sy, sx = sb[inside], sy[inside], sx[inside]
        low = patches.amin(dim=(1, 2, 3))[sb]
        high = patches.amax(dim=(1, 2, 3))[sb]
        noise = torch.rand(sb.shape, generator=generator, device=device, dtype=patches.dtype)
        inputs[sb, 0, sy, sx] = low + noise * (high - low)
    inputs[b, 0, y, x] = values
    blind = torch.zeros_like(patches, dtype=torch.bool)
    blind[b, 0, y, x] = True
    return inputs, blind
