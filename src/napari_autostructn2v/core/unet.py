"""A small 2D UNet for blind-spot denoising.

Batch normalisation (running statistics at inference) keeps the output of a pixel independent
of the tile it is computed in, which tiled inference relies on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """UNet with `depth` down-sampling steps; N2V2's variant drops the top skip connection
    (removing the checkerboard artefacts that skip carries) and pools with blur + max."""

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False):
        super().__init__()
        self.depth = depth
        self.n2v2 = n2v2
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([_block(1, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.pool = _BlurMaxPool() if n2v2 else nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            _block(widths[i] * (1 if (n2v2 and i == 0) else 2), widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamples, self.decoders):
            x = upsample(x)
            skip = skips.pop()
            x = decoder(x if (self.n2v2 and not skips) else torch.cat([x, skip], dim=1))
        return self.head(x)

    def fused_for_inference(self) -> UNet:
        """An evaluation copy with each batch norm folded into the convolution before it (same outputs,
        one pass less per layer); the training weights are left as they are."""
        fused = copy.deepcopy(self).eval()
        for block in fused.modules():
            if isinstance(block, nn.Sequential):
                for index in range(len(block) - 1):
                    if isinstance(block[index], nn.Conv2d) and isinstance(block[index + 1], nn.BatchNorm2d):
                        block[index] = fuse_conv_bn_eval(block[index], block[index + 1])
                        block[index + 1] = nn.Identity()
        return fused


class _BlurMaxPool(nn.Module):
    """Max pooling with stride 1, then a 2x2 binomial blur with stride 2 (anti-aliased down-sampling)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.tensor([[1.0, 1.0], [1.0, 1.0]]).div(4).view(1, 1, 2, 2), persistent=False)
        self.max = nn.MaxPool2d(2, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max(nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"))
        channels = x.shape[1]
        return nn.functional.conv2d(x, self.kernel.expand(channels, 1, 2, 2), stride=2, groups=channels)


class MirrorPaddedUNet(nn.Module):
    """A UNet that takes an image of any size: it mirrors `margin` pixels around the input (more at the
    bottom and right, up to a size the UNet can pool), then crops the result back to the input's size.

    With `margin` equal to the overlap of tiled `denoise` (32 by default), it computes what `denoise`
    does on a whole image. This module needs torch only: bioimage.io packages carry this file as the
    architecture of their weights, for runtimes that do not have napari-autostructn2v installed.
    """

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False, margin: int = 32):
        super().__init__()
        self.unet = UNet(base_channels, depth, n2v2=n2v2)
        self.margin = margin
        self.multiple = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        rows = _mirrored_indices(height, self.margin, self._extra(height), x.device)
        columns = _mirrored_indices(width, self.margin, self._extra(width), x.device)
        y = self.unet(x.index_select(-2, rows).index_select(-1, columns))
        return y[..., self.margin : self.margin + height, self.margin : self.margin + width]

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
