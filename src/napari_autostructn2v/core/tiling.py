"""Default tile and chunk sides of denoising, per network, and the rule that applies them.

Only light imports: the command line quotes these defaults in its help, which must not load numpy or torch.
"""

from __future__ import annotations

from .config import DEFAULT_TILES

# chunk side and tile side (margins included) of chunked denoising: 2D tiles smaller than in memory keep the
# memory of parallel chunks low; a 3D chunk of 128**3 voxels is 192**3 with its margins (28 MiB in float32)
DEFAULT_CHUNKS = {"2d": 512, "3d": 128}
CHUNKED_TILES = {"2d": 256, "3d": DEFAULT_TILES["3d"]}


def network_default(value: int | None, network: str, defaults: dict[str, int] = DEFAULT_TILES) -> int:
    """`value`, or when it is None the default of `network` in `defaults` (the in-memory tile side unless told)."""
    return defaults[network] if value is None else value
