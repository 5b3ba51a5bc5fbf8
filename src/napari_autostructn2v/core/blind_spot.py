"""Blind-spot inference: each pixel predicted from an input masked around it, as in training.

A structN2V network learns to read the pixels of its mask as signal: in training they hold copies of
nearby pixels outside every mask. On the unmasked image they hold noise correlated with the centre's,
which leaks into the output, more the longer the network trains (docs/benchmarks.md).

Here a pass masks whole lines of pixels parallel to the mask: rows for a horizontal mask, columns
for a vertical one, diagonals for a diagonal one (planes in 3D). The lines `p . normal = phase`
(modulo `spacing`) are the blind spots; each takes the value of a neighbour outside its mask and off
the masked lines (the median of them for N2V2), as a blind spot does in training, and each pixel of the lines their masks
cover takes a copy of a pixel at most 2 away (farther for thick masks) on a line they do not cover.
The network's output is kept on the blind-spot lines; `spacing` passes cover the image, with a third
of it replaced in each, about what training's masks replace. Every choice comes from a hash of the
pixel's position in the whole image (`origin` gives a tile's), so the output does not depend on the
tiling, on chunks or on the other planes of a stack.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .masking import SOURCE_RADIUS, _neighbour, as_spatial_mask, neighbour_offsets

# line families, as normals (Z, Y, X / Y, X): rows, columns, diagonals, anti-diagonals; in 3D also Z planes
NORMALS = {2: ((1, 0), (0, 1), (1, -1), (1, 1)), 3: ((0, 1, 0), (0, 0, 1), (0, 1, -1), (0, 1, 1), (1, 0, 0))}
_PRIMES = (73856093, 19349663, 83492791)  # spatial hashing (Teschner et al. 2003)
_MIX = 2654435761  # Knuth's multiplicative constant


@dataclass(frozen=True)
class LinePlan:
    """One pass masks the lines `p . normal = phase` modulo `spacing`, for each phase in turn."""

    normal: tuple[int, ...]
    spacing: int


def _line_values(mask: np.ndarray, normal: tuple[int, ...]) -> np.ndarray:
    """`offset . normal` for each of the mask's pixels, offsets taken from its centre."""
    offsets = np.stack(np.nonzero(mask), axis=1) - np.asarray(mask.shape) // 2
    return offsets @ np.asarray(normal)


def line_plan(masks: list[np.ndarray | None], dims: int) -> LinePlan | None:
    """The lines for these per-channel masks: the family across which they are thinnest (the first of
    NORMALS on a tie), spaced by 3 times that thickness. None when no mask goes beyond its centre (N2V:
    the network predicts in one pass on the unmasked image)."""
    masks = [as_spatial_mask(mask, dims) for mask in masks]
    masks = [mask for mask in masks if mask is not None and np.count_nonzero(mask) > 1]
    if not masks:
        return None

    def thickness(normal) -> int:
        return max(int(np.ptp(_line_values(mask, normal))) + 1 for mask in masks)

    normal = min(NORMALS[dims], key=thickness)
    return LinePlan(normal, 3 * thickness(normal))


def _hash(coords: list[torch.Tensor], salt: int) -> torch.Tensor:
    """Non-negative pseudo-random integers (31 bits) from integer coordinates and a salt."""
    value = torch.zeros_like(coords[0]) + salt * _PRIMES[0]
    for coord, prime in zip(coords, _PRIMES[::-1]):
        value = value ^ (coord * prime)
    return (((value & 0x7FFFFFFF) * _MIX) & 0x7FFFFFFFFFFF) >> 16


@functools.lru_cache(maxsize=64)
def _source_shifts(covered: frozenset[int], plan: LinePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """For each line residue q (line value minus phase, modulo spacing): the shifts (within SOURCE_RADIUS
    in every axis, or the smallest radius with any) onto a line that is not covered. Returns a
    (spacing, K, dims) table padded with zeros and the count per residue."""
    dims, normal = len(plan.normal), np.asarray(plan.normal)
    per_residue = []
    for residue in range(plan.spacing):
        for radius in itertools.count(SOURCE_RADIUS):
            grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * dims, indexing="ij"), -1).reshape(-1, dims)
            keep = [shift for shift in grid if (residue + shift @ normal) % plan.spacing not in covered]
            if keep:
                break
        per_residue.append(keep)
    table = np.zeros((plan.spacing, max(map(len, per_residue)), dims), np.int64)
    for residue, shifts in enumerate(per_residue):
        table[residue, : len(shifts)] = shifts
    return torch.from_numpy(table), torch.tensor([len(shifts) for shifts in per_residue])


def _masked_channel(patches: torch.Tensor, mask: np.ndarray | None, plan: LinePlan, phase: int,
                    origin: torch.Tensor, median: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One channel (B, *spatial) with this pass's lines masked, and the boolean map of its blind spots."""
    batch, shape = patches.shape[0], patches.shape[1:]
    dims, device = len(shape), patches.device
    grid = [coord[None].expand(batch, *shape) for coord in
            torch.meshgrid(*(torch.arange(size, device=device) for size in shape), indexing="ij")]
    position = [coord + origin[:, axis].reshape((batch,) + (1,) * dims) for axis, coord in enumerate(grid)]
    residue = (sum(weight * coord for weight, coord in zip(plan.normal, position)) - phase) % plan.spacing
    mask = as_spatial_mask(mask, dims)
    covered = frozenset({0} if mask is None else {int(v) % plan.spacing for v in _line_values(mask, plan.normal)})
    at = (torch.arange(batch, device=device).reshape((batch,) + (1,) * dims),)

    table, count = (tensor.to(device) for tensor in _source_shifts(covered, plan))
    shift = table[residue, _hash(position, 1) % count[residue]]
    filled = patches[at + tuple(_neighbour(coord, shift[..., axis], size)
                                for axis, (coord, size) in enumerate(zip(grid, shape)))]

    neighbours = neighbour_offsets(mask, dims).to(device)
    lands = (neighbours @ torch.tensor(plan.normal, device=device)) % plan.spacing
    free = ~torch.isin(lands, torch.tensor(sorted(covered), device=device))  # not another masked line's noise
    neighbours = neighbours[free] if free.any() else table[0, : count[0]]
    if median:
        centre = torch.stack([patches[at + tuple(_neighbour(coord, offset[axis], size)
                                                 for axis, (coord, size) in enumerate(zip(grid, shape)))]
                              for offset in neighbours]).median(dim=0).values
    else:
        pick = neighbours[_hash(position, 2) % len(neighbours)]
        centre = patches[at + tuple(_neighbour(coord, pick[..., axis], size)
                                    for axis, (coord, size) in enumerate(zip(grid, shape)))]
    is_covered = torch.isin(residue, torch.tensor(sorted(covered), device=device))
    spots = residue == 0
    return torch.where(spots, centre, torch.where(is_covered, filled, patches)), spots


def blind_spot_forward(net, batch: torch.Tensor, masks: list[np.ndarray | None], plan: LinePlan,
                       origin: torch.Tensor, median: bool = False) -> torch.Tensor:
    """The network's float32 output on `batch` (B, C, *spatial), each pixel predicted with its blind spot
    and its channel's mask applied; `origin` (B, dims) is each patch's first pixel in the whole image."""
    output = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    for phase in range(plan.spacing):
        inputs = torch.empty_like(batch)
        for channel, mask in enumerate(masks):
            inputs[:, channel], spots = _masked_channel(batch[:, channel], mask, plan, phase, origin, median)
        output = torch.where(spots[:, None], net(inputs).float(), output)
    return output
