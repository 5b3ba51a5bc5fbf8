"""A small 2D or 3D UNet for blind-spot denoising, with one input and output channel per image channel.

Batch normalisation (running statistics at inference), or none, keeps the output of a pixel independent
of the tile it is computed in, which tiled inference relies on.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_eval


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_FUNCTION = {2: functional.conv2d, 3: functional.conv3d}
LEAKY_SLOPE = 0.1
BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
UPSAMPLE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _block(in_channels: int, out_channels: int, dims: int = 2, groups: int = 1,
           batch_norm: bool = True) -> nn.Sequential:
    """Two convolutions, each followed by batch norm (an identity without `batch_norm`) and a leaky ReLU."""
    def norm() -> nn.Module:
        return BATCH_NORM[dims](out_channels) if batch_norm else nn.Identity()

    return nn.Sequential(
        CONV[dims](in_channels, out_channels, 3, padding=1, groups=groups),
        norm(),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        CONV[dims](out_channels, out_channels, 3, padding=1, groups=groups),
        norm(),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class UNet(nn.Module):
    """UNet with `depth` down-sampling steps; N2V2's variant drops the top skip connection
    (removing the checkerboard artefacts that skip carries) and pools with blur + max.

    `dims` 2 takes (B, channels, Y, X) batches, 3 takes (B, channels, Z, Y, X) and pools in all three axes.
    With `separate` channels, every layer is split into one group per channel (grouped convolutions):
    a separate network per channel, each as wide as the network of a single channel, in one module.
    Without `batch_norm` the blocks have no normalisation (identities in its place, so weights keep their names).
    """

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False, channels: int = 1,
                 dims: int = 2, separate: bool = False, batch_norm: bool = True):
        super().__init__()
        self.depth = depth
        self.n2v2 = n2v2
        self.channels = channels
        self.dims = dims
        self.batch_norm = batch_norm
        self.groups = groups = channels if separate else 1
        widths = [base_channels * groups * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_block(channels, widths[0], dims, groups, batch_norm)]
            + [_block(widths[i], widths[i + 1], dims, groups, batch_norm) for i in range(depth)]
        )
        self.pool = _BlurMaxPool(dims) if n2v2 else MAX_POOL[dims](2)
        self.upsamples = nn.ModuleList(
            UPSAMPLE[dims](widths[i + 1], widths[i], 2, stride=2, groups=groups) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            _block(widths[i] * (1 if (n2v2 and i == 0) else 2), widths[i], dims, groups, batch_norm)
            for i in reversed(range(depth))
        )
        self.head = CONV[dims](widths[0], channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoders[-1](self._top_input(x)))

    def _top_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the last (full-resolution) decoder block takes: up-sampled features and the top skip."""
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for index, (upsample, decoder) in enumerate(zip(self.upsamples, self.decoders)):
            x = upsample(x)
            skip = skips.pop()
            x = x if (self.n2v2 and not skips) else self._join(x, skip)
            if index < self.depth - 1:
                x = decoder(x)
        return x

    def forward_at(self, x: torch.Tensor, blind: torch.Tensor) -> torch.Tensor:
        """The outputs at the True pixels of the boolean map `blind` (shaped like `x`), in the order of
        `self(x)[blind]`, computing the last decoder block only in the 5-pixel windows around them.

        In eval mode this equals `self(x)[blind]` (to float rounding). In training mode the batch norms of
        that block normalise with statistics of the windows (pixels inside the image) instead of the whole
        batch, the one difference; the full-resolution block is about a third of a training step's work.
        """
        spots = blind.any(dim=1).nonzero()
        if self.training and len(spots) < 2:  # batch statistics need two values: the whole network instead
            return self(x)[blind]
        features = self._top_input(x)
        batch_index, coords = spots[:, 0], spots[:, 1:]
        dims = self.dims
        window = _window_offsets(2, dims, x.device)
        padded = functional.pad(features, (2,) * (2 * dims)).movedim(1, -1)
        gathered = padded[(batch_index[:, None], *(coords[:, None, :] + window + 2).unbind(-1))]
        windows = gathered.movedim(-1, 1).reshape(len(spots), features.shape[1], *(5,) * dims)
        conv1, norm1, _, conv2, norm2, _ = self.decoders[-1]
        convolve = CONV_FUNCTION[dims]
        hidden = convolve(windows, conv1.weight, conv1.bias, groups=conv1.groups)
        around = coords[:, None, :] + _window_offsets(1, dims, x.device)
        inside = ((around >= 0) & (around < torch.tensor(x.shape[2:], device=x.device))).all(dim=-1)
        hidden = _normalise_where(hidden, norm1, inside.reshape(len(spots), *(3,) * dims), self.training)
        hidden = convolve(hidden, conv2.weight, conv2.bias, groups=conv2.groups)
        hidden = _normalise_where(hidden, norm2, torch.ones(len(spots), *(1,) * dims, dtype=torch.bool,
                                                                device=x.device), self.training)
        values = convolve(hidden, self.head.weight, self.head.bias, groups=self.head.groups).flatten(1)
        outputs = torch.zeros(x.shape, dtype=values.dtype, device=x.device).movedim(1, -1)
        outputs = outputs.index_put((batch_index, *coords.unbind(-1)), values)
        return outputs.movedim(-1, 1)[blind]

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
                    if isinstance(block[index], tuple(CONV.values())) and isinstance(
                            block[index + 1], tuple(BATCH_NORM.values())):
                        block[index] = fuse_conv_bn_eval(block[index], block[index + 1])
                        block[index + 1] = nn.Identity()
        return fused


def _window_offsets(radius: int, dims: int, device: torch.device) -> torch.Tensor:
    """(1, (2 * radius + 1) ** dims, dims) offsets of a window around a pixel, in row-major order."""
    steps = range(-radius, radius + 1)
    return torch.tensor(list(itertools.product(steps, repeat=dims)), device=device)[None]


def _normalise_where(hidden: torch.Tensor, norm: nn.Module, inside: torch.Tensor, training: bool) -> torch.Tensor:
    """Batch norm (statistics of the pixels `inside` when training; none if `norm` is an identity) and leaky ReLU
    of (N, C, *window) features; pixels outside the image become 0, the zero padding the next convolution would
    have seen."""
    channels_last = hidden.movedim(1, -1)
    if isinstance(norm, nn.Identity):
        normalised = channels_last[inside]
    else:
        if training and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
        normalised = functional.batch_norm(channels_last[inside], norm.running_mean, norm.running_var, norm.weight,
                                           norm.bias, training, norm.momentum, norm.eps)
    activated = functional.leaky_relu(normalised, LEAKY_SLOPE)
    result = torch.zeros_like(channels_last).index_put(inside.nonzero(as_tuple=True), activated)
    return result.movedim(-1, 1)


class _BlurMaxPool(nn.Module):
    """Max pooling with stride 1, then a 2-pixel box blur with stride 2 (anti-aliased down-sampling)."""

    def __init__(self, dims: int = 2):
        super().__init__()
        self.dims = dims
        self.max_pool = MAX_POOL[dims](2, stride=1)
        self.blur = AVG_POOL[dims](2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.max_pool(functional.pad(x, [0, 1] * self.dims, mode="replicate")))


class MirrorPaddedUNet(nn.Module):
    """A UNet that takes an image or volume of any size: it mirrors `margin` pixels around the input along
    Y and X (and Z for `dims` 3), more at the far side up to a size the UNet can pool, then crops the
    result back to the input's size.

    With `margin` equal to the overlap of tiled `denoise` (32 by default), it computes what `denoise`
    does on a whole image. This module needs torch only: bioimage.io packages carry this file as the
    architecture of their weights, for runtimes that do not have napari-autostructn2v installed.
    `channels`, `dims`, `separate` and `batch_norm` are those of `UNet`.
    """

    def __init__(self, base_channels: int = 16, depth: int = 2, n2v2: bool = False, margin: int = 32,
                 channels: int = 1, dims: int = 2, separate: bool = False, batch_norm: bool = True):
        super().__init__()
        self.unet = UNet(base_channels, depth, n2v2=n2v2, channels=channels, dims=dims, separate=separate,
                         batch_norm=batch_norm)
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
