"""A small 2D or 3D UNet for blind-spot denoising, with one input and output channel per image channel.

Batch normalisation (running statistics at inference) keeps the output of a pixel independent
of the tile it is computed in, which tiled inference relies on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
UPSAMPLE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _block(in_channels: int, out_channels: int, dims: int = 2, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        CONV[dims](in_channels, out_channels, 3, padding=1, groups=groups),
        BATCH_NORM[dims](out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        CONV[dims](out_channels, out_channels, 3, padding=1, groups=groups),
        BATCH_NORM[dims](out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """UNet with `depth` down-sampling steps; N2V2's variant drops the top skip connection
    (removing the checkerboard artefacts that skip carries) and pools with blur + max.

    `dims` 2 takes (B, channels, Y, X) batches, 3 takes (B, channels, Z, Y, X) and pools in all three axes.
    With `separate` channels, every layer is split into one group per channel (grouped convolutions):
    a separate network per channel, each as wide as the network of a single channel, in one module.
    """

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False, channels: int = 1,
                 dims: int = 2, separate: bool = False):
        super().__init__()
        self.depth = depth
        self.n2v2 = n2v2
        self.channels = channels
        self.dims = dims
        self.groups = groups = channels if separate else 1
        widths = [base_channels * groups * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_block(channels, widths[0], dims, groups)]
            + [_block(widths[i], widths[i + 1], dims, groups) for i in range(depth)]
        )
        self.pool = _BlurMaxPool(dims) if n2v2 else (nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2))
        self.upsamples = nn.ModuleList(
            UPSAMPLE[dims](widths[i + 1], widths[i], 2, stride=2, groups=groups) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            _block(widths[i] * (1 if (n2v2 and i == 0) else 2), widths[i], dims, groups) for i in reversed(range(depth))
        )
        self.head = CONV[dims](widths[0], channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamples, self.decoders):
            x = upsample(x)
            skip = skips.pop()
            x = decoder(x if (self.n2v2 and not skips) else self._join(x, skip))
        return self.head(x)

    def _join(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x and the skip connection side by side, group by group (each group sees only its own features)."""
        if self.groups == 1:
            return torch.cat([x, skip], dim=1)
        groups = [self.groups, -1]
        return torch.cat([x.unflatten(1, groups), skip.unflatten(1, groups)], dim=2).flatten(1, 2)

    def fused_for_inference(self) -> UNet:
        """An evaluation copy with each batch norm folded into the convolution before it (same outputs,
        one pass less per layer); the training weights are left as they are."""
        fused = copy.deepcopy(self).eval()
        for block in fused.modules():
            if isinstance(block, nn.Sequential):
                for index in range(len(block) - 1):
                    if isinstance(block[index], (nn.Conv2d, nn.Conv3d)) and isinstance(
                            block[index + 1], (nn.BatchNorm2d, nn.BatchNorm3d)):
                        block[index] = fuse_conv_bn_eval(block[index], block[index + 1])
                        block[index + 1] = nn.Identity()
        return fused


class _BlurMaxPool(nn.Module):
    """Max pooling with stride 1, then a 2-pixel box blur with stride 2 (anti-aliased down-sampling)."""

    def __init__(self, dims: int = 2):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            x = nn.functional.pad(x, [0, 1, 0, 1], mode="replicate")
            return nn.functional.avg_pool2d(nn.functional.max_pool2d(x, 2, stride=1), 2)
        x = nn.functional.pad(x, [0, 1, 0, 1, 0, 1], mode="replicate")
        return nn.functional.avg_pool3d(nn.functional.max_pool3d(x, 2, stride=1), 2)


class MirrorPaddedUNet(nn.Module):
    """A UNet that takes an image or volume of any size: it mirrors `margin` pixels around the input along
    Y and X (and Z for `dims` 3), more at the far side up to a size the UNet can pool, then crops the
    result back to the input's size.

    With `margin` equal to the overlap of tiled `denoise` (32 by default), it computes what `denoise`
    does on a whole image. This module needs torch only: bioimage.io packages carry this file as the
    architecture of their weights, for runtimes that do not have napari-autostructn2v installed.
    `channels`, `dims` and `separate` are those of `UNet`.
    """

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False, margin: int = 32,
                 channels: int = 1, dims: int = 2, separate: bool = False):
        super().__init__()
        self.unet = UNet(base_channels, depth, n2v2=n2v2, channels=channels, dims=dims, separate=separate)
        self.margin = margin
        self.multiple = 2**depth
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes: list[int] = []
        for index in range(self.dims):
            axis = index - self.dims
            length = x.shape[axis]
            sizes.append(length)
            x = x.index_select(axis, _mirrored_indices(length, self.margin, self._extra(length), x.device))
        y = self.unet(x)
        for index in range(self.dims):
            y = y.narrow(index - self.dims, self.margin, sizes[index])
        return y

    def _extra(self, length: int) -> int:
        """Pixels after the far margin that make the padded length a multiple of 2**depth."""
        padded = length + 2 * self.margin
        return self.margin + (-padded) % self.multiple


def _mirrored_indices(length: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices from -before to length + after - 1, reflected into [0, length) without repeating the edge."""
    index = torch.arange(-before, length + after, device=device)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.abs() % period
    return torch.where(index >= length, period - index, index)
