"""Blind-spot inference: each pixel predicted from an input masked around it, as in training.

A structN2V network learns to read the pixels of its mask as signal: in training they hold copies of
nearby pixels outside every mask. On the unmasked image they hold noise correlated with the centre's,
which leaks into the output, more the longer the network trains (docs/benchmarks.md).

Here a pass masks every eighth line of pixels along the mask: rows for a horizontal mask, columns for
a vertical one, diagonals for a diagonal one (in 3D, rows or columns of each plane); each channel along
its own mask, so channels whose noise runs along different lines share the passes. Every pixel of
those lines is a blind spot and takes the value of a neighbour outside its mask and off the masked
lines (the median of them for N2V2), as a blind spot does in training; its mask lies on its line, so
none of the mask's noise reaches the network. The output is kept on the masked lines; 8 passes cover
the image. Every third line was 0.05-2.9 dB worse: it replaces a third of the input, far more than the
training masks do (docs/benchmarks.md). In 3D the masked lines shift from plane to plane (`Z_SHIFT`):
the same rows in every plane hid each voxel's neighbours along Z too, the context a 3D network is for
and training's sparse blind spots leave in place (docs/shapes.md). Each choice comes from a hash of the
pixel's position in the whole image (`origin` gives a tile's), so the output does not depend on the
tiling, on chunks or on the other planes of a stack. Masks thicker than one line predict in one pass
(see `line_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .masking import _neighbour, as_spatial_mask, neighbour_offsets

# line families by their normals (Y, X / Z, Y, X): rows, columns, diagonals, anti-diagonals. In 3D the masked
# lines shift by Z_SHIFT lines from one plane to the next, so that a voxel's neighbours in the 7 planes above
# and below are never masked with it: they carry its signal with independent noise, what a 3D network reads.
# A mask that reaches into other planes (noise correlated along Z) takes the same lines in every plane.
Z_SHIFT = 3  # odd, so that planes 1 to 7 apart mask different lines
_FLAT_3D = ((0, 1, 0), (0, 0, 1), (0, 1, -1), (0, 1, 1))
NORMALS = {2: ((1, 0), (0, 1), (1, -1), (1, 1)),
           3: tuple((Z_SHIFT, *normal[1:]) for normal in _FLAT_3D) + _FLAT_3D}
SPACING = 8  # every eighth line: about the share of the input training's masks replace (1 % x 13 pixels)
_PRIMES = (73856093, 19349663, 83492791)  # spatial hashing (Teschner et al. 2003)
_MIX = 2654435761  # Knuth's multiplicative constant


@dataclass(frozen=True)
class LinePlan:
    """One pass masks, in channel c, the lines `p . normals[c] = phase` modulo SPACING, for each phase in turn."""

    normals: tuple[tuple[int, ...], ...]


def _line_values(mask: np.ndarray, normal: tuple[int, ...]) -> np.ndarray:
    """`offset . normal` for each of the mask's pixels, offsets taken from its centre (all 0: one line)."""
    offsets = np.stack(np.nonzero(mask), axis=1) - np.asarray(mask.shape) // 2
    return offsets @ np.asarray(normal)


def line_plan(masks: list[np.ndarray | None], dims: int) -> LinePlan | None:
    """Every eighth line, in each channel, of the first family of NORMALS along which its mask lies (a
    channel without a structN2V mask takes the first such channel's). None, for one pass on the unmasked
    image, when no mask goes beyond its centre (N2V) or some mask is thicker than one line: whole bands of
    replaced lines lost 3.5-7.5 dB to one pass on every 3- and 5-line mask measured (docs/benchmarks.md)."""
    normals = []
    for mask in masks:
        mask = as_spatial_mask(mask, dims)
        if mask is None or np.count_nonzero(mask) <= 1:
            normals.append(None)
            continue
        normal = next((normal for normal in NORMALS[dims] if np.ptp(_line_values(mask, normal)) == 0), None)
        if normal is None:
            return None
        normals.append(normal)
    first = next((normal for normal in normals if normal is not None), None)
    return None if first is None else LinePlan(tuple(first if normal is None else normal for normal in normals))


def _hash(coords: list[torch.Tensor], salt: int) -> torch.Tensor:
    """Non-negative pseudo-random integers (31 bits) from integer coordinates and a salt."""
    value = torch.zeros_like(coords[0]) + salt * _PRIMES[0]
    for coord, prime in zip(coords, _PRIMES[::-1]):
        value = value ^ (coord * prime)
    return (((value & 0x7FFFFFFF) * _MIX) & 0x7FFFFFFFFFFF) >> 16


def _grid(batch: torch.Tensor, origin: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each pixel's index in its patch and its position in the whole image, one tensor per spatial axis."""
    count, shape = batch.shape[0], batch.shape[2:]
    grid = [coord[None].expand(count, *shape) for coord in
            torch.meshgrid(*(torch.arange(size, device=batch.device) for size in shape), indexing="ij")]
    return grid, [coord + origin[:, axis].reshape((count,) + (1,) * len(shape)) for axis, coord in enumerate(grid)]


def _replacements(patches: torch.Tensor, mask: np.ndarray | None, normal: tuple[int, ...], grid: list[torch.Tensor],
                  position: list[torch.Tensor], median: bool) -> torch.Tensor:
    """The value each pixel of one channel (B, *spatial) takes when its line is masked: a neighbour's outside
    its mask and off the masked lines (their median for N2V2). It does not depend on which lines a pass masks."""
    shape, device = patches.shape[1:], patches.device
    at = (torch.arange(patches.shape[0], device=device).reshape((-1,) + (1,) * len(shape)),)
    neighbours = neighbour_offsets(mask, len(shape)).to(device)
    neighbours = neighbours[(neighbours @ torch.tensor(normal, device=device)) % SPACING != 0]  # off the lines
    if median:
        return torch.stack([patches[at + tuple(_neighbour(coord, offset[axis], size)
                                               for axis, (coord, size) in enumerate(zip(grid, shape)))]
                            for offset in neighbours]).median(dim=0).values
    pick = neighbours[_hash(position, 2) % len(neighbours)]
    return patches[at + tuple(_neighbour(coord, pick[..., axis], size)
                              for axis, (coord, size) in enumerate(zip(grid, shape)))]


def blind_spot_forward(net, batch: torch.Tensor, masks: list[np.ndarray | None], plan: LinePlan,
                       origin: torch.Tensor, median: bool = False) -> torch.Tensor:
    """The network's float32 output on `batch` (B, C, *spatial), each pixel predicted with its blind spot
    and its channel's mask applied; `origin` (B, dims) is each patch's first pixel in the whole image."""
    grid, position = _grid(batch, origin)
    lines = torch.stack([sum(weight * coord for weight, coord in zip(normal, position)) % SPACING
                         for normal in plan.normals], dim=1)  # (B, C, *spatial)
    values = torch.stack([_replacements(batch[:, channel], mask, normal, grid, position, median)
                          for channel, (mask, normal) in enumerate(zip(masks, plan.normals))], dim=1)
    output = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    for phase in range(SPACING):
        spots = lines == phase
        output = torch.where(spots, net(torch.where(spots, values, batch)).float(), output)
    return output
