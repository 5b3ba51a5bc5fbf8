"""Two-stage autoStructN2V training as a generator of events.

Stage 1 trains Noise2Void (by default on background patches), then the structured mask is
estimated, then stage 2 trains structN2V with it (by default starting from stage 1's weights).
The consumer drives the generator: it can show each event, stop early with a stop flag or by
closing the generator, and replace the estimated mask (set `MaskEstimated.mask`) before stage 2.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Config, StageConfig
from .images import InputError, MappedPlane, Normalisation, as_slices, check_image
from .inference import denoise
from .mask import MaskEstimate, check_mask, estimate_struct_mask
from .masking import mask_batch
from .model import DenoisingModel, autocast, memory_format, resolve_device
from .roi import count_windows, select_roi_patches

MIN_PATCH_POSITIONS = 4
VALIDATION_PATCHES_MAX = 64
PREVIEW_SIZE = 512


class TooFewPatchesError(InputError):
    """ROI selection left too few patches to train on."""


@dataclass
class StageStarted:
    """A stage begins; `patches` holds the top-left corners in use per 2D slice, `model` is the live model."""

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
    """The estimated mask; the consumer may assign another odd square mask to `mask` before resuming."""

    estimate: MaskEstimate
    mask: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mask = self.estimate.mask


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
    """Random training patches from the ROI-selected (or all) positions of 2D slices.

    Patches are cut from the original arrays and normalised on the fly, so memory does not
    grow with the number of patches. Only 180 degree rotations augment the data: flips and 90
    degree rotations would change the direction of the noise correlation.
    """

    def __init__(self, slices: list[np.ndarray], stage: StageConfig, normalisation: Normalisation,
                 rng: np.random.Generator, stage_name: str):
        self.slices = slices
        self.patch = stage.patch_size
        self.normalisation = normalisation
        self.rng = rng
        self.jitter = max(1, round(stage.patch_size * (1 - stage.roi_overlap) / 2))
        if stage.use_roi:
            self.positions = [
                select_roi_patches(plane, stage.patch_size, stage.roi_threshold, stage.scale_factor,
                                   stage.select_background, stage.roi_overlap, smoothing=stage.roi_smoothing)
                for plane in slices
            ]
            selected = sum(len(p) for p in self.positions)
            if selected < MIN_PATCH_POSITIONS:
                total = sum(count_windows(plane, stage.patch_size, stage.scale_factor, stage.roi_overlap,
                                          stage.roi_smoothing) for plane in slices)
                kind = "background" if stage.select_background else "structure"
                change = "raise" if stage.select_background else "lower"
                raise TooFewPatchesError(
                    f"{stage_name}: ROI selection ({kind}, threshold {stage.roi_threshold}) kept {selected} of "
                    f"{total} windows; at least {MIN_PATCH_POSITIONS} are needed. {change.capitalize()} the "
                    f"threshold, or set use_roi=False to sample patches at random."
                )
        else:
            self.positions = None
        # a slice is drawn in proportion to its selected positions (ROI) or to its area
        sizes = [len(p) for p in self.positions] if self.positions is not None else [p.size for p in slices]
        self._slice_weights = np.asarray(sizes, float) / sum(sizes)

    def positions_in_use(self) -> list[np.ndarray]:
        """Top-left corners per slice (all valid positions on a coarse grid when ROI is off)."""
        if self.positions is not None:
            return self.positions
        step = max(1, self.patch // 2)
        grids = []
        for plane in self.slices:
            ys = np.arange(0, plane.shape[0] - self.patch + 1, step)
            xs = np.arange(0, plane.shape[1] - self.patch + 1, step)
            grids.append(np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2))
        return grids

    def _corner(self) -> tuple[int, int, int]:
        index = int(self.rng.choice(len(self.slices), p=self._slice_weights))
        height, width = self.slices[index].shape
        if self.positions is None:
            return index, int(self.rng.integers(0, height - self.patch + 1)), int(self.rng.integers(0, width - self.patch + 1))
        y, x = self.positions[index][self.rng.integers(len(self.positions[index]))]
        y = int(np.clip(y + self.rng.integers(-self.jitter, self.jitter + 1), 0, height - self.patch))
        x = int(np.clip(x + self.rng.integers(-self.jitter, self.jitter + 1), 0, width - self.patch))
        return index, y, x

    def sample(self, count: int, augment: bool) -> np.ndarray:
        """(count, 1, P, P) float32 normalised patches."""
        patches = np.empty((count, 1, self.patch, self.patch), np.float32)
        for i in range(count):
            index, y, x = self._corner()
            patch = self.normalisation.forward(self.slices[index][y : y + self.patch, x : x + self.patch])
            if augment and self.rng.random() < 0.5:
                patch = patch[::-1, ::-1]
            patches[i, 0] = patch
        return patches


def _seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _masked_loss(net, patches: torch.Tensor, generator: torch.Generator, stage: StageConfig,
                 struct_mask: np.ndarray | None) -> torch.Tensor:
    inputs, blind = mask_batch(patches, stage.mask_percent, generator, struct_mask, median=stage.n2v2)
    with autocast(patches.device):
        predicted = net(inputs)
    return torch.mean((predicted[blind].float() - patches[blind]) ** 2)


def _validation_loss(net, patches: torch.Tensor, seed: int, stage: StageConfig, struct_mask, batch: int) -> float:
    """Masked loss on held-out patches with the same blind spots every time, so epochs compare."""
    generator = _seeded_generator(seed, patches.device)
    net.eval()
    with torch.no_grad():
        losses = [float(_masked_loss(net, patches[i : i + batch], generator, stage, struct_mask)) * len(patches[i : i + batch])
                  for i in range(0, len(patches), batch)]
    net.train()
    return sum(losses) / len(patches)


def _check_images(images, config: Config) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        images = [images]
    if len(images) == 0:
        raise InputError("No training images were given.")
    patch = max(config.stage1.patch_size, config.stage2.patch_size)
    checked = [_check_training_image(im, f"training image {i}", patch) for i, im in enumerate(images)]
    return [plane for im in checked for plane in as_slices(im)]


def _check_training_image(image, name: str, patch: int):
    """`image` checked; a MappedPlane is read once for the check and kept as it is (read again when used)."""
    if isinstance(image, MappedPlane):
        check_image(np.asarray(image), name, min_size=patch)
        return image
    return check_image(image, name, min_size=patch)


def _preview_crop(plane: np.ndarray) -> np.ndarray:
    height, width = plane.shape
    top, left = max(0, (height - PREVIEW_SIZE) // 2), max(0, (width - PREVIEW_SIZE) // 2)
    return plane[top : top + PREVIEW_SIZE, left : left + PREVIEW_SIZE]


def train(
    images,
    config: Config | None = None,
    *,
    struct_mask: np.ndarray | None = None,
    stop: threading.Event | None = None,
    preview_every: int = 0,
    preview_image: np.ndarray | None = None,
    num_threads: int | None = None,
) -> Iterator[Event]:
    """Train on one image, a stack or a list of them; yield events until `Done`.

    `struct_mask` skips the estimation and uses that mask in stage 2. With `preview_every`
    > 0 a `Preview` of `preview_image` (default: a central crop of the first slice) is
    yielded every that many steps. Setting `stop` (or closing the generator) ends training
    at the next step; the model keeps the weights with the best masked validation loss.
    """
    config = copy.deepcopy(config or Config()).validate()
    slices = _check_images(images, config)
    if struct_mask is not None:
        struct_mask = check_mask(struct_mask)
    return _run(slices, config, struct_mask, stop or threading.Event(), preview_every, preview_image, num_threads)


def _run(slices, config: Config, struct_mask, stop: threading.Event, preview_every: int, preview_image,
         num_threads: int | None) -> Iterator[Event]:
    if num_threads:
        torch.set_num_threads(num_threads)
    device = resolve_device(config.device)
    seed = int(np.random.default_rng().integers(2**31)) if config.seed is None else config.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normalisation = Normalisation.fit(slices)
    layout = memory_format(device, training=True)
    model = DenoisingModel.create(config, normalisation, n2v2=config.stage1.n2v2 or config.stage2.n2v2)
    model.net.to(device, memory_format=layout)
    preview = _preview_crop(slices[0]) if preview_image is None else check_image(preview_image, "preview image")
    global_step = 0
    stopped = False

    for stage_index, stage in ((1, config.stage1), (2, config.stage2)):
        if stopped:
            break
        mask = None
        if stage_index == 2:
            if struct_mask is None:
                estimated = MaskEstimated(_estimate_mask(model, slices, config))
                yield estimated
                struct_mask = check_mask(estimated.mask)
            mask = struct_mask
            model.struct_mask = struct_mask
            if not config.stage2_from_stage1:
                torch.manual_seed(seed + 1)
                model.net = DenoisingModel.create(config, normalisation, model.net.n2v2).net.to(device, memory_format=layout)
        if stage.epochs == 0:
            continue
        sampler = PatchSampler(slices, stage, normalisation, rng, f"stage {stage_index}")
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
                    loss = _masked_loss(net, batch, generator, stage, mask)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    scheduler.step()
                    losses.append(loss.item())
                    global_step += 1
                    yield Step(stage_index, epoch, epoch * stage.steps_per_epoch + step + 1, total, losses[-1])
                    if preview_every and global_step % preview_every == 0:
                        yield Preview(stage_index, global_step, denoise(model, preview))
                        net.train()
                if not losses:
                    break
                val_loss = _validation_loss(net, val_patches, seed + 7, stage, mask, stage.batch_size)
                model.history.append({"stage": stage_index, "epoch": epoch, "train_loss": float(np.mean(losses)),
                                      "val_loss": val_loss})
                if val_loss < best_loss:
                    best_loss, best_state = val_loss, copy.deepcopy(net.state_dict())
                yield EpochEnd(stage_index, epoch, float(np.mean(losses)), val_loss)
                if stopped:
                    break
        finally:
            best_loss = _keep_best(net, val_patches, seed, stage, mask, best_loss, best_state)
            net.eval()
        yield StageFinished(stage_index, best_loss, stopped)
    model.net.to(memory_format=torch.contiguous_format).eval()
    yield Done(model, stopped)


def _keep_best(net, val_patches, seed: int, stage: StageConfig, mask, best_loss: float, best_state) -> float:
    """Load the best weights seen, unless the current ones (after an interrupted epoch) are better."""
    current = _validation_loss(net, val_patches, seed + 7, stage, mask, stage.batch_size)
    if best_state is not None and best_loss < current:
        net.load_state_dict(best_state)
        return float(best_loss)
    return current


def _estimate_mask(model: DenoisingModel, slices: list[np.ndarray], config: Config) -> MaskEstimate:
    if config.mask.source == "stage1_residual":
        residuals = [np.asarray(plane, dtype=np.float32) - denoise(model, plane) for plane in slices]
        return estimate_struct_mask(residuals, is_noise=True, config=config.mask)
    return estimate_struct_mask(slices, config=config.mask)


def fit(images, config: Config | None = None, **kwargs) -> DenoisingModel:
    """Run `train` to the end and return the trained model."""
    for event in train(images, config, **kwargs):
        if isinstance(event, Done):
            return event.model
    raise RuntimeError("training ended without a model")
