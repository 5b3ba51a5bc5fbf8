"""Two-stage autoStructN2V training as a generator of events.

Stage 1 trains Noise2Void (by default on background patches), then the structured mask is
estimated, then stage 2 trains structN2V with it (by default starting from stage 1's weights).
The consumer drives the generator: it can show each event, stop early with a stop flag or by
closing the generator, and replace the estimated mask (set `MaskEstimated.mask`) before stage 2.
With source "image" (the default) and `mask.whiten` or `mask.recorrupt` the estimate is made before stage 1:
noise filtered along a line, as a PMT filters it, is then decorrelated for both stages instead
(core.whitening), and additive noise of a covariance known in full trains both stages on recorrupted pairs
with that covariance, without blind spots (core.recorruption), unless the consumer replaces the mask.

Images may carry channels (each normalised on its own, with its own mask, as channels of one
network) and, for the 3D network, a Z axis; see core.axes for the `axes` letters.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .axes import canonical_image
from .banding import remove_offsets_channels
from .blind_spot import line_plan
from .config import Config, StageConfig
from .images import ChannelPlane, InputError, MappedPlane, Normalisation, check_image
from .inference import denoise
from .mask import MaskEstimate, check_mask, estimate_struct_mask
from .masking import channel_masks, mask_batch
from .model import DenoisingModel, autocast, memory_format, resolve_device
from .recorruption import noise_kernels, recorrupted_pair
from .roi import count_windows, select_roi_patches
from .whitening import AXES, whiten_channels

MIN_PATCH_POSITIONS = 4
VALIDATION_PATCHES_MAX = 64
PREVIEW_SIZE = 512
PREVIEW_SIZE_3D = 96  # a volume's preview: a crop of this side and PREVIEW_PLANES planes, one tile with
PREVIEW_PLANES = 16  # a thinner margin than `denoise` uses (a preview need not equal whole-volume inference)
PREVIEW_TILE_3D, PREVIEW_MARGIN_3D = 128, 16
# previews may take this share of the training time, plus an allowance (blind-spot previews of a 512² crop
# cost about 10 training steps each on a CPU: one every 20 steps would add about 40 % to the training time)
PREVIEW_SHARE, PREVIEW_ALLOWANCE_S = 0.15, 1.0
# keep_mean (and keep_contrast): the output keeps the mean (and contrast) of central crops of up to MEAN_SAMPLES
# samples, evenly spread
# a whitened model's start weights are measured on the first START_STRIP pixels of lines of as many samples
START_STRIP = 128
MEAN_SIDE, MEAN_SIDE_3D, MEAN_PLANES, MEAN_SAMPLES = 256, 96, 16, 8
CONTRAST_RANGE = (0.5, 2.0)  # keep_contrast's gains are kept within this: beyond it the fit is not to be trusted


class TooFewPatchesError(InputError):
    """ROI selection left too few patches to train on."""


@dataclass
class StageStarted:
    """A stage begins; `patches` holds the top-left corners in use per 2D plane (in the order of the
    training images' samples and planes, channels aside), `model` is the live model."""

    stage: int
    epochs: int
    steps_per_epoch: int
    patches: list[np.ndarray]
    model: DenoisingModel


@dataclass
class Step:
    """One optimisation step; `step` counts from 1 within the stage, up to `total_steps`."""

    stage: int
    epoch: int
    step: int
    total_steps: int
    loss: float


@dataclass
class EpochEnd:
    """Mean training loss and masked validation loss of one epoch."""

    stage: int
    epoch: int
    train_loss: float
    val_loss: float


@dataclass
class MaskEstimated:
    """The estimated mask of one channel (one event per channel, in channel order); the consumer may
    assign another odd square mask to `mask` before resuming. For the 3D network, `mask` is 3D when
    the noise is correlated along Z."""

    estimate: MaskEstimate
    channel: int = 0
    channels: int = 1
    mask: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mask = self.estimate.mask if self.estimate.mask_3d is None else self.estimate.mask_3d


@dataclass
class Preview:
    """The current model's output on the preview image; `step` counts steps of both stages together."""

    stage: int
    step: int
    image: np.ndarray


@dataclass
class StageFinished:
    """A stage ended (`stopped` if asked to); the best weights of the stage are loaded."""

    stage: int
    best_val_loss: float
    stopped: bool


@dataclass
class Done:
    """Training ended; `model` holds the best weights."""

    model: DenoisingModel
    stopped: bool


Event = StageStarted | Step | EpochEnd | MaskEstimated | Preview | StageFinished | Done


class PatchSampler:
    """Random training patches from the ROI-selected (or all) positions of the planes of the samples.

    Samples are (C, Y, X) arrays for the 2D network and (C, Z, Y, X) for the 3D one, whose patches
    span `patch_depth` planes around a selected plane. Patches are cut from the original arrays
    and normalised on the fly, so memory does not grow with the number of patches. Only 180 degree
    rotations in the plane augment the data: flips and 90 degree rotations would change the
    direction of the noise correlation. With `whitening` (one filter or None per channel, see
    core.whitening) each patch is whitened as part of the whole image: read with the pixel before it.
    """

    def __init__(self, slices: list[np.ndarray], stage: StageConfig, normalisation: Normalisation,
                 rng: np.random.Generator, stage_name: str, patch_depth: int | None = None,
                 whitening: list | None = None):
        self.slices = slices
        self.whitening = whitening
        self.volumes = slices[0].ndim == 4
        self.depth = patch_depth if self.volumes else None
        self.patch = stage.patch_size
        self.normalisation = normalisation
        self.rng = rng
        self.jitter = max(1, round(stage.patch_size * (1 - stage.roi_overlap) / 2))
        self.planes = [(index, z) for index, sample in enumerate(slices)
                       for z in (range(sample.shape[1]) if self.volumes else (None,))]
        if stage.use_roi:
            roi_planes = [self._roi_plane(index, z) for index, z in self.planes]
            self.positions = [
                select_roi_patches(plane, stage.patch_size, stage.roi_threshold, stage.scale_factor,
                                   stage.select_background, stage.roi_overlap, smoothing=stage.roi_smoothing)
                for plane in roi_planes
            ]
            selected = sum(len(p) for p in self.positions)
            if selected < MIN_PATCH_POSITIONS:
                total = sum(count_windows(plane, stage.patch_size, stage.scale_factor, stage.roi_overlap,
                                          stage.roi_smoothing) for plane in roi_planes)
                kind = "background" if stage.select_background else "structure"
                change = "raise" if stage.select_background else "lower"
                raise TooFewPatchesError(
                    f"{stage_name}: ROI selection ({kind}, threshold {stage.roi_threshold}) kept {selected} of "
                    f"{total} windows; at least {MIN_PATCH_POSITIONS} are needed. {change.capitalize()} the "
                    f"threshold, or set use_roi=False to sample patches at random."
                )
        else:
            self.positions = None
        # a plane is drawn in proportion to its selected positions (ROI) or to its area
        sizes = ([len(p) for p in self.positions] if self.positions is not None
                 else [int(np.prod(slices[index].shape[-2:])) for index, _ in self.planes])
        self._plane_weights = np.asarray(sizes, float) / sum(sizes)

    def _roi_plane(self, index: int, z: int | None) -> np.ndarray:
        """The 2D image ROI selection sees: the plane itself, or the mean of its normalised channels."""
        plane = self.slices[index] if z is None else self.slices[index][:, z]
        if plane.shape[0] == 1:
            return plane[0]
        return self.normalisation.forward(plane, channel_axis=0).mean(axis=0)

    def positions_in_use(self) -> list[np.ndarray]:
        """Top-left corners per plane (all valid positions on a coarse grid when ROI is off)."""
        if self.positions is not None:
            return self.positions
        step = max(1, self.patch // 2)
        grids = []
        for index, _ in self.planes:
            height, width = self.slices[index].shape[-2:]
            ys = np.arange(0, height - self.patch + 1, step)
            xs = np.arange(0, width - self.patch + 1, step)
            grids.append(np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2))
        return grids

    def _corner(self) -> tuple[int, int | None, int, int]:
        """Sample index, first plane (None in 2D) and top-left corner of a random patch."""
        choice = int(self.rng.choice(len(self.planes), p=self._plane_weights))
        index, z = self.planes[choice]
        height, width = self.slices[index].shape[-2:]
        if self.positions is None:
            y, x = int(self.rng.integers(0, height - self.patch + 1)), int(self.rng.integers(0, width - self.patch + 1))
        else:
            y, x = self.positions[choice][self.rng.integers(len(self.positions[choice]))]
            y = int(np.clip(y + self.rng.integers(-self.jitter, self.jitter + 1), 0, height - self.patch))
            x = int(np.clip(x + self.rng.integers(-self.jitter, self.jitter + 1), 0, width - self.patch))
        if z is not None:
            z = int(np.clip(z - self.depth // 2, 0, self.slices[index].shape[1] - self.depth))
        return index, z, y, x

    def sample(self, count: int, augment: bool) -> np.ndarray:
        """(count, C, P, P) float32 normalised patches, or (count, C, D, P, P) for volumes."""
        first = self.slices[0]
        shape = (count, first.shape[0], *((self.depth,) if self.volumes else ()), self.patch, self.patch)
        patches = np.empty(shape, np.float32)
        for i in range(count):
            index, z, y, x = self._corner()
            source = self.slices[index] if z is None else self.slices[index][:, z : z + self.depth]
            patch = self._read(source, y, x)
            if augment and self.rng.random() < 0.5:
                patch = patch[..., ::-1, ::-1]
            patches[i] = patch
        return patches

    def _read(self, source, y: int, x: int) -> np.ndarray:
        """The normalised (and whitened) patch at (y, x); whitening reads one more row and column before it,
        so that the patch's first pixels are whitened as in the whole image (and as `denoise` does it)."""
        if self.whitening is None:
            return self.normalisation.forward(source[..., y : y + self.patch, x : x + self.patch], channel_axis=0)
        top, left = max(y - 1, 0), max(x - 1, 0)
        region = self.normalisation.forward(source[..., top : y + self.patch, left : x + self.patch], channel_axis=0)
        return whiten_channels(region, self.whitening, channel_axis=0)[..., y - top :, x - left :]


def _seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _masked_loss(net, patches: torch.Tensor, generator: torch.Generator, stage: StageConfig,
                 struct_mask: np.ndarray | None, config: Config) -> torch.Tensor:
    """Mean squared error at the blind spots, in float32 whatever precision the network ran in; with
    `config.uses_sparse_top_level` the top level is computed around the blind spots only (UNet.forward_at)."""
    inputs, blind = mask_batch(patches, stage.mask_percent, generator, struct_mask, median=stage.n2v2)
    with autocast(patches.device, config.mixed_precision):
        predicted = net.forward_at(inputs, blind) if config.uses_sparse_top_level else net(inputs)[blind]
    return torch.mean((predicted.float() - patches[blind]) ** 2)


def _recorrupted_loss(net, patches: torch.Tensor, generator: torch.Generator, kernels: torch.Tensor,
                      config: Config) -> torch.Tensor:
    """Mean squared error of the network on recorrupted patches against their counterparts, over every pixel."""
    inputs, targets = recorrupted_pair(patches, kernels, generator)
    with autocast(patches.device, config.mixed_precision):
        predicted = net(inputs)
    return torch.mean((predicted.float() - targets) ** 2)


def _loss(net, patches: torch.Tensor, generator: torch.Generator, stage: StageConfig, struct_mask,
          kernels: torch.Tensor | None, config: Config) -> torch.Tensor:
    """The recorrupted loss where noise kernels are given, the blind-spot loss otherwise."""
    if kernels is not None:
        return _recorrupted_loss(net, patches, generator, kernels, config)
    return _masked_loss(net, patches, generator, stage, struct_mask, config)


def _validation_loss(net, patches: torch.Tensor, seed: int, stage: StageConfig, struct_mask, config: Config,
                     kernels: torch.Tensor | None) -> float:
    """The loss on held-out patches with the same blind spots (or noise draws) every time, so epochs compare."""
    generator = _seeded_generator(seed, patches.device)
    batch = stage.batch_size
    net.eval()
    with torch.no_grad():
        losses = [float(_loss(net, patches[i : i + batch], generator, stage, struct_mask, kernels, config))
                  * len(patches[i : i + batch])
                  for i in range(0, len(patches), batch)]
    net.train()
    return sum(losses) / len(patches)


def _check_images(images, config: Config, axes: str | None) -> tuple[list[np.ndarray], str]:
    """The training samples, (C, Y, X) planes or (C, Z, Y, X) volumes for the 3D network, and the first image's axes."""
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        images = [images]
    if len(images) == 0:
        raise InputError("No training images were given.")
    patch = max(config.stage1.patch_size, config.stage2.patch_size)
    samples, first_axes = [], None
    for i, image in enumerate(images):
        name = f"training image {i}"
        if isinstance(image, MappedPlane):
            samples.append(_mapped_sample(image, name, patch, config, axes))
            first_axes = first_axes or "YX"
            continue
        array, found = canonical_image(image, axes, name, min_size=patch)
        first_axes = first_axes or found.axes
        if config.network == "3d":
            if "Z" not in found.axes:
                raise InputError(
                    f"The 3D network needs volumes: give axes with Z (e.g. 'ZYX'); {name} has axes {found.axes}."
                )
            if found.size("Z") < config.patch_depth:
                raise InputError(
                    f"{name} has {found.size('Z')} planes, fewer than patch_depth {config.patch_depth}; lower "
                    "patch_depth (a multiple of 2**depth) or use the 2D network."
                )
            samples.extend(array)
        else:
            samples.extend(array[n, :, z] for n in range(array.shape[0]) for z in range(array.shape[2]))
        if samples[0].shape[0] != samples[-1].shape[0]:
            raise InputError(
                f"{name} has {samples[-1].shape[0]} channel(s), training image 0 has {samples[0].shape[0]}; "
                "every training image needs the same channels."
            )
    return samples, first_axes


def _mapped_sample(plane: MappedPlane, name: str, patch: int, config: Config, axes: str | None) -> ChannelPlane:
    """A plane of an uncompressed file as a one-channel sample: read once for the checks, then kept on disk."""
    if config.network == "3d" or axes not in (None, "YX"):
        raise InputError(f"{name} is a plane read from a file on demand, which trains the 2D network on YX planes "
                         "only; load the file as an array to give it axes or train the 3D network.")
    check_image(np.asarray(plane), name, min_size=patch)
    return ChannelPlane(plane)


def sample_axes(sample: np.ndarray) -> str:
    """The axes of a training sample: a (C, Z, Y, X) volume for the 3D network, else a (C, Y, X) plane."""
    return "CZYX" if sample.ndim == 4 else "CYX"


def preview_crop(sample: np.ndarray) -> np.ndarray:
    """A central crop of a (C, Y, X) plane, or of a (C, Z, Y, X) volume (smaller in the plane)."""
    return central_crop(sample, PREVIEW_SIZE if sample.ndim == 3 else PREVIEW_SIZE_3D, PREVIEW_PLANES)


def central_crop(sample: np.ndarray, side: int, planes: int) -> np.ndarray:
    """The central `side` x `side` pixels of a (C, Y, X) plane, and `planes` planes of a (C, Z, Y, X) volume."""
    height, width = sample.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    crop = sample[..., top : top + side, left : left + side]
    if sample.ndim == 4:
        first = max(0, (sample.shape[1] - planes) // 2)
        crop = crop[:, first : first + planes]
    return crop


class _PreviewBudget:
    """A preview is due every `every` steps while previews have taken at most PREVIEW_SHARE of the time since
    training began (plus PREVIEW_ALLOWANCE_S); a due step over the budget is skipped."""

    def __init__(self, every: int):
        self.every, self.began, self.spent = every, time.perf_counter(), 0.0

    def due(self, step: int) -> bool:
        budget = PREVIEW_SHARE * (time.perf_counter() - self.began) + PREVIEW_ALLOWANCE_S
        return bool(self.every) and step % self.every == 0 and self.spent <= budget

    def make(self, model: DenoisingModel, preview, axes: str | None) -> np.ndarray:
        started = time.perf_counter()
        output = _preview(model, preview, axes)
        self.spent += time.perf_counter() - started
        return output


def _preview(model: DenoisingModel, preview, axes: str | None) -> np.ndarray:
    """The model's output on the preview: the user's image, or the crop's (middle) plane, one channel squeezed."""
    if axes is None:
        return denoise(model, preview)
    if axes == "CZYX":
        output = denoise(model, preview, PREVIEW_TILE_3D, PREVIEW_MARGIN_3D, axes=axes)
        output = output[:, output.shape[1] // 2]
    else:
        output = denoise(model, preview, axes=axes)
    return output[0] if output.shape[0] == 1 else output


def train(
    images,
    config: Config | None = None,
    *,
    struct_mask: np.ndarray | None = None,
    stop: threading.Event | None = None,
    preview_every: int = 0,
    preview_image: np.ndarray | None = None,
    num_threads: int | None = None,
    axes: str | None = None,
) -> Iterator[Event]:
    """Train on one image, a stack or a list of them; yield events until `Done`.

    `axes` names the images' axes (letters from S T C Z Y X, e.g. 'ZYX' or 'CYX'; see core.axes);
    without it a 2D image is YX and a larger array a stack of planes. `struct_mask` skips the
    estimation and uses that mask in stage 2 (one for all channels, or a list with one per channel).
    With `preview_every` > 0 a `Preview` of `preview_image` (default: a central crop of the first
    plane or volume) is yielded every that many steps, skipping those that would make previews take more than
    PREVIEW_SHARE of the training time (plus PREVIEW_ALLOWANCE_S). Setting `stop` (or closing the generator)
    ends training at the next step; the model keeps the weights with the best masked validation loss.
    """
    config = copy.deepcopy(config or Config()).validate()
    slices, found_axes = _check_images(images, config, axes)
    if struct_mask is not None:
        dims = config.dims
        try:
            masks = channel_masks(struct_mask, slices[0].shape[0])
        except ValueError as err:
            raise InputError(f"struct_mask: {err}; give one mask, or one per channel.") from None
        struct_mask = [check_mask(mask, dims) for mask in masks]
    return _run(slices, config, struct_mask, stop or threading.Event(), preview_every, preview_image, num_threads,
                found_axes)


def _run(slices, config: Config, struct_mask, stop: threading.Event, preview_every: int, preview_image,
         num_threads: int | None, axes: str) -> Iterator[Event]:
    if num_threads:
        torch.set_num_threads(num_threads)
    device = resolve_device(config.device)
    seed = int(np.random.default_rng().integers(2**31)) if config.seed is None else config.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normalisation = Normalisation.fit_channels(slices)
    layout = memory_format(device, config.dims, training=True)
    model = DenoisingModel.create(config, normalisation, n2v2=config.stage1.n2v2 or config.stage2.n2v2)
    model.axes = axes
    model.net.to(device, memory_format=layout)
    if preview_image is None:
        preview, preview_axes = preview_crop(slices[0]), sample_axes(slices[0])
    else:
        preview, preview_axes = check_image(preview_image, "preview image"), None
    global_step = 0
    stopped = False
    previews = _PreviewBudget(preview_every)
    val_patches = None
    estimates = kernels = None
    mask_config = config.mask
    if struct_mask is None and (mask_config.whiten or mask_config.recorrupt or mask_config.remove_banding) \
            and mask_config.source == "image":
        # measured on the raw image, the estimate needs no stage 1: made first, line offsets removed, a whitening
        # filter or the noise's covariance serve both stages
        estimates = _estimate_masks(model, slices, config)
        if any(estimate.banding for estimate in estimates):
            model.banding = [estimate.banding for estimate in estimates]
            slices = [remove_offsets_channels(sample, model.banding, channel_axis=0) for sample in slices]
            model.normalisation = normalisation = Normalisation.fit_channels(slices)
        if any(estimate.whitening is not None for estimate in estimates):
            model.whitening = [estimate.whitening for estimate in estimates]
        kernels = _recorruption_kernels(estimates, model, device)

    for stage_index, stage in ((1, config.stage1), (2, config.stage2)):
        if stopped:
            break
        mask = None
        if stage_index == 2:
            if struct_mask is None:
                struct_mask = []
                for channel, estimate in enumerate(estimates or _estimate_masks(model, slices, config)):
                    estimated = MaskEstimated(estimate, channel, len(slices[0]))
                    yield estimated
                    if estimated.mask is not estimate.mask:
                        kernels = None  # a mask chosen by the consumer is a blind spot to train with
                    struct_mask.append(check_mask(estimated.mask, config.dims))
            if kernels is None:
                mask = struct_mask
                model.struct_mask = struct_mask if len(struct_mask) > 1 else struct_mask[0]
            if not config.stage2_from_stage1:
                torch.manual_seed(seed + 1)
                model.net = DenoisingModel.create(config, normalisation, model.net.n2v2).net.to(device, memory_format=layout)
        if stage.epochs == 0:
            continue
        sampler = PatchSampler(slices, stage, normalisation, rng, f"stage {stage_index}", config.patch_depth,
                               model.whitening)
        n_val = min(VALIDATION_PATCHES_MAX,
                    max(stage.batch_size, round(config.validation_fraction * stage.steps_per_epoch * stage.batch_size)))
        val_patches = torch.from_numpy(sampler.sample(n_val, augment=False)).to(device)
        generator = _seeded_generator(seed + 1000 * stage_index, device)
        net = model.net.train()
        optimiser = torch.optim.Adam(net.parameters(), lr=stage.learning_rate)
        total = stage.epochs * stage.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total, eta_min=stage.learning_rate * 0.05)
        best_loss, best_state = np.inf, None
        yield StageStarted(stage_index, stage.epochs, stage.steps_per_epoch, sampler.positions_in_use(), model)
        try:
            for epoch in range(stage.epochs):
                losses = []
                for step in range(stage.steps_per_epoch):
                    if stop.is_set():
                        stopped = True
                        break
                    batch = torch.from_numpy(sampler.sample(stage.batch_size, config.augment)).to(device)
                    loss = _loss(net, batch, generator, stage, mask, kernels, config)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    scheduler.step()
                    losses.append(loss.item())
                    global_step += 1
                    yield Step(stage_index, epoch, epoch * stage.steps_per_epoch + step + 1, total, losses[-1])
                    if previews.due(global_step):
                        yield Preview(stage_index, global_step, previews.make(model, preview, preview_axes))
                        net.train()
                if not losses:
                    break
                val_loss = _validation_loss(net, val_patches, seed + 7, stage, mask, config, kernels)
                model.history.append({"stage": stage_index, "epoch": epoch, "train_loss": float(np.mean(losses)),
                                      "val_loss": val_loss})
                if val_loss < best_loss:
                    best_loss, best_state = val_loss, copy.deepcopy(net.state_dict())
                yield EpochEnd(stage_index, epoch, float(np.mean(losses)), val_loss)
                if stopped:
                    break
        finally:
            best_loss = _keep_best(net, val_patches, seed, stage, mask, best_loss, best_state, config, kernels)
            net.eval()
        yield StageFinished(stage_index, best_loss, stopped)
    spread_samples = slices[:: -(-len(slices) // MEAN_SAMPLES)]
    if model.whitening is not None and val_patches is not None:
        _fit_start_weights(model, spread_samples)
    contrast = config.keep_contrast and model.whitening is None \
        and line_plan(model.channel_masks(), model.net.dims) is not None
    if (config.keep_mean or contrast) and val_patches is not None:  # None: stopped before any stage sampled patches
        _calibrate_output(model, spread_samples, contrast, config.keep_mean)
    model.net.to(memory_format=torch.contiguous_format).eval()
    yield Done(model, stopped)


def _keep_best(net, val_patches, seed: int, stage: StageConfig, mask, best_loss: float, best_state,
               config: Config, kernels: torch.Tensor | None) -> float:
    """Load the best weights seen, unless the current ones (after an interrupted epoch) are better."""
    current = _validation_loss(net, val_patches, seed + 7, stage, mask, config, kernels)
    if best_state is not None and best_loss < current:
        net.load_state_dict(best_state)
        return float(best_loss)
    return current


def _calibrate_output(model: DenoisingModel, samples: list, contrast: bool, keep_mean: bool) -> None:
    """Set each channel's output gain (`contrast`) and offset (`keep_mean`) in the last layer, from central crops of
    the samples denoised as `denoise` does it by default.

    Gain: with blind spots, a pixel's prediction never sees the pixel's own noise, so the noisy pixels regressed on
    the predictions measure what the clean ones would: a slope over 1 is contrast the network lost (cell under row
    banding, seed 1: 1.079 from the noisy pixels, 1.066 from the clean ones; `_contrast_gains`). The head's weights
    and bias are scaled by it. Only for models that `denoise` runs with blind spots (one-line masks, not whitened):
    in one pass a prediction reads its own pixel's noise, which the slope would take for signal.

    Offset: the crops keep their mean in each channel. An unbiased denoiser keeps the mean of an image under
    zero-mean noise; batch norm's running statistics, and a 3D network trained on patches thinner than its reach
    in Z, can darken or brighten the whole output instead. Measured another way the shift would be wrong: on
    training patches it is theirs, not the whole image's; in one pass, a structN2V network reads its mask's
    noise and comes out brighter (0.013 on the sparse frame) than with its blind spots. A whitened channel's
    bias passes through the colouring, which changes its effect (Whitening.bias_gain)."""
    axes = sample_axes(samples[0])
    side = MEAN_SIDE_3D if "Z" in axes else MEAN_SIDE
    channels = samples[0].shape[0]
    centre = np.asarray(model.normalisation.mean, np.float64).reshape(-1, *[1] * (samples[0].ndim - 1))
    sums = np.zeros((5, channels))
    response = np.zeros(channels)  # how much the crops' output sums move per unit of bias
    filters = model.whitening or [None] * channels
    for sample in samples:  # one crop at a time: planes read from disk stay there
        crop = np.asarray(central_crop(sample, side, MEAN_PLANES), np.float32)
        sums += _calibration_sums(crop, denoise(model, crop, axes=axes), centre)
        response += [crop[0].size * (1.0 if w is None else w.bias_gain(crop.shape[AXES[w.axis]])) for w in filters]
    head = model.net.head
    gains = _contrast_gains(sums) if contrast else np.ones(channels)
    with torch.no_grad():  # (output - mean) / std scales by the gain with the head's weights and bias
        scale = torch.as_tensor(gains, dtype=head.weight.dtype, device=head.weight.device)
        head.weight *= scale.reshape(-1, *[1] * (head.weight.ndim - 1))
        head.bias *= scale
        if keep_mean:  # the crops' sums less their outputs', the gain applied
            _, predicted, noisy, _, _ = sums
            shift = (noisy - gains * predicted) / response / np.asarray(model.normalisation.std, np.float64)
            head.bias += torch.as_tensor(shift, dtype=head.bias.dtype, device=head.bias.device)


def _calibration_sums(crop: np.ndarray, output: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Per channel of (C, ...) arrays: pixels, sums of the predictions and of the noisy values (both about `centre`,
    for precision), of their products and of the predictions' squares."""
    spatial = tuple(range(1, crop.ndim))
    predicted, noisy = output.astype(np.float64) - centre, crop.astype(np.float64) - centre
    return np.array([np.full(len(crop), crop[0].size), predicted.sum(axis=spatial), noisy.sum(axis=spatial),
                     np.sum(predicted * noisy, axis=spatial), np.sum(predicted**2, axis=spatial)])


def _contrast_gains(sums: np.ndarray) -> np.ndarray:
    """Per channel, the least-squares slope of the noisy values on the predictions from their `_calibration_sums`,
    within CONTRAST_RANGE; 1 where the predictions are constant."""
    count, predicted, noisy, products, squares = sums
    covariance, variance = products - predicted * noisy / count, squares - predicted**2 / count
    slopes = np.divide(covariance, variance, out=np.ones_like(variance), where=variance > 1e-12 * count)
    return np.clip(slopes, *CONTRAST_RANGE)


def _fit_start_weights(model: DenoisingModel, samples: list) -> None:
    """Set each whitened channel's `start_weight` from the starts of the samples' lines (Whitening.fit_start_weight),
    denoised as `denoise` does it with the weight at 0 and at 1."""
    axes = sample_axes(samples[0])
    weights = {}
    for axis in {whitening.axis for whitening in model.whitening if whitening is not None}:
        strips = [np.asarray(_line_starts(sample, axis), np.float32) for sample in samples]
        outputs = []
        for weight in (0.0, 1.0):
            model.whitening = [w and dataclasses.replace(w, start_weight=weight) for w in model.whitening]
            outputs.append([denoise(model, strip, axes=axes) for strip in strips])
        for channel, whitening in enumerate(model.whitening):
            if whitening is not None and whitening.axis == axis:
                weights[channel] = whitening.fit_start_weight(
                    *(_lines([strip[channel] for strip in part], axis) for part in (strips, *outputs)))
    model.whitening = [w and dataclasses.replace(w, start_weight=weights[channel])
                       for channel, w in enumerate(model.whitening)]


def _line_starts(sample: np.ndarray, axis: str) -> np.ndarray:
    """The first START_STRIP pixels of the central MEAN_SIDE lines along `axis` (X: rows, Y: columns) of a
    (C, Y, X) sample, in the MEAN_PLANES central planes of a (C, Z, Y, X) one (START_STRIP <= MEAN_SIDE, so
    the central crop keeps the strip whole)."""
    strip = sample[..., :START_STRIP] if axis == "X" else sample[..., :START_STRIP, :]
    return central_crop(strip, MEAN_SIDE, MEAN_PLANES)


def _lines(planes: list[np.ndarray], axis: str) -> np.ndarray:
    """The lines along `axis` of one channel's strips, as rows of their common length."""
    lines = [np.moveaxis(plane, AXES[axis], -1) for plane in planes]
    length = min(line.shape[-1] for line in lines)
    return np.concatenate([line[..., :length].reshape(-1, length) for line in lines])


def _recorruption_kernels(estimates: list[MaskEstimate], model: DenoisingModel,
                          device: torch.device) -> torch.Tensor | None:
    """The noise kernels of recorrupted pairs when every channel's estimate offers its covariance, else None (and
    a channel that offered one is told it gets blind spots like the others)."""
    offers = [estimate.recorruption for estimate in estimates]
    if all(offer is not None for offer in offers):
        return noise_kernels(offers, np.atleast_1d(model.normalisation.std)).to(device)
    for estimate in estimates:
        if estimate.recorruption is not None:
            estimate.recorruption = None
            estimate.reason += "; blind spots all the same, as another channel's noise needs them"
    return None


def _estimate_masks(model: DenoisingModel, slices: list[np.ndarray], config: Config) -> list[MaskEstimate]:
    """One estimate per channel, from that channel's planes (volumes for the 3D network: Z correlation too;
    recorrupted pairs are for the 2D network only)."""
    volumes = slices[0].ndim == 4
    if config.mask.source == "stage1_residual":
        data = [_residual(model, np.asarray(sample), sample_axes(sample)) for sample in slices]
    else:
        data = slices
    mask_config = dataclasses.replace(config.mask, recorrupt=config.mask.recorrupt and not volumes)
    return [estimate_struct_mask([sample[channel] for sample in data], is_noise=config.mask.source != "image",
                                 config=mask_config, axes="ZYX" if volumes else None)
            for channel in range(slices[0].shape[0])]


def _residual(model: DenoisingModel, sample: np.ndarray, axes: str) -> np.ndarray:
    """The sample less the model's output (read once: a file-backed plane is read from disk at each np.asarray)."""
    return sample.astype(np.float32, copy=False) - denoise(model, sample, axes=axes)


def fit(images, config: Config | None = None, **kwargs) -> DenoisingModel:
    """Run `train` to the end and return the trained model."""
    for event in train(images, config, **kwargs):
        if isinstance(event, Done):
            return event.model
    raise RuntimeError("training ended without a model")
