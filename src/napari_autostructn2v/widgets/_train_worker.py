"""The Train widget's background work: relay the core's training events, then denoise the training images.

Everything heavier than handing data to a layer happens here, off the main thread: the outline of
the patches in use is computed per slice when a stage starts, so the widget only sets a few paths.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..core.inference import denoise_steps
from ..core.training import Done, MaskEstimated, StageStarted
from ._common import Failed, user_message
from ._overlay import Outline, patch_outline

REVIEW_POLL_S = 0.1
OUTLINE_BOXES = 25  # at most this many patches in use are drawn as boxes, more as the outline of their area


@dataclass
class StageShown:
    """A stage began: its budget and, per 2D slice, the outline of the patches it trains on."""

    stage: int
    epochs: int
    steps_per_epoch: int
    outlines: list[Outline]
    patch_size: int


@dataclass
class DenoiseProgress:
    image: int
    done: int
    total: int


@dataclass
class Denoised:
    image: int
    result: np.ndarray


@dataclass
class Run:
    """One training run: its worker and the flags the widget's buttons set."""

    worker: object
    stop: threading.Event
    resume: threading.Event | None
    skip_denoising: threading.Event = field(default_factory=threading.Event)


def stage_shown(event: StageStarted, patch_size: int) -> StageShown:
    """The outlines of `event.patches` (one array of corners per slice), computed here instead of in the GUI."""
    outlines = [patch_outline(corners, patch_size, OUTLINE_BOXES) for corners in event.patches]
    return StageShown(event.stage, event.epochs, event.steps_per_epoch, outlines, patch_size)


def training_worker(start_training, images, run: Run, tile_size: int | None, patch_sizes: dict[int, int]):
    """Worker body: start training (`start_training()` checks the images and returns the core's events), relay
    its events, wait for the mask review if asked, then denoise the images.

    A second press of Stop (`run.skip_denoising`) skips the denoising that follows training.
    """
    try:
        model = None
        for event in start_training():
            if isinstance(event, StageStarted):
                event = stage_shown(event, patch_sizes[event.stage])
            yield event
            if isinstance(event, MaskEstimated) and run.resume is not None:
                while not run.resume.wait(REVIEW_POLL_S):
                    yield None  # a yield lets worker.quit() end a run that waits for the review
                if not run.stop.is_set():
                    run.resume.clear()  # the next channel's mask waits for its own review
            if isinstance(event, Done):
                model = event.model
        for index, image in enumerate(images):
            if run.skip_denoising.is_set():
                return
            steps = denoise_steps(model, image, tile_size)
            while True:
                try:
                    done, total = next(steps)
                except StopIteration as end:
                    yield Denoised(index, end.value)
                    break
                yield DenoiseProgress(index, done, total)
    except Exception as error:
        message = user_message(error)
        if message is None:
            raise
        yield Failed(message)


def cancel(runs: list[Run]) -> None:
    """End training at the next step, skip or cancel the denoising, and quit the workers."""
    for run in runs:
        run.stop.set()
        run.skip_denoising.set()
        if run.resume is not None:
            run.resume.set()
        run.worker.quit()


def abandon(runs: list[Run]) -> None:
    """Cancel the runs of a deleted widget and stop their events from reaching it."""
    for run in runs:
        for signal in (run.worker.yielded, run.worker.finished):
            try:
                signal.disconnect()
            except TypeError:
                pass
    cancel(runs)
