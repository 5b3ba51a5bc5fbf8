"""Train dock widget: the controls of a two-stage training run and what they show.

The settings live in the viewer's shared Config (`settings_for(viewer)`), which the ROI widget
edits too. The core `train` generator runs in a napari thread worker (`_train_worker`), which also
denoises the training images at the end; its events update this widget, the display layers
(`_progress_layers`) and napari's activity dock in the main thread. `_mask_review` holds the
review between the stages, `_model_actions` saves and exports the model, and `_train_controls` says which
Config field each control edits.
"""

from __future__ import annotations

import copy
import os
import threading
from functools import partial

import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, ProgressBar, PushButton, Select
from magicgui.widgets import SpinBox
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject

from ..core.config import DEVICES, MASK_SOURCES, NETWORKS
from ..core.images import InputError
from ..core.mask import acf_side
from ..core.training import Done, EpochEnd, MaskEstimated, Preview, StageFinished, Step, train
from ._common import (Failed, active_input, current_index, input_layers, layer_data, offer_axes,
                      show_denoised, tile_size_box, warm_up)
from ._layout import Activity, scrolling_dock, section, set_status, wrapping_label
from ._loss_plot import LossPlot
from ._mask_review import MaskReview, MaskReviewSteps
from ._model_actions import ModelActions
from ._progress_layers import ACF_LAYER, MASK_LAYER, PATCHES_LAYER, PREVIEW_LAYER, ProgressLayers, preview_window
from ._quiet_gc import quiet_gc_while
from ._session import set_model, settings_for
from ._train_controls import ADVANCED_FIELDS, STAGE_NAMES, TOOLTIPS, show_settings, stage_grid, store_setting
from ._train_worker import Denoised, DenoiseProgress, Run, StageShown, abandon, cancel, training_worker

__all__ = ["ACF_LAYER", "MASK_LAYER", "PATCHES_LAYER", "PREVIEW_LAYER", "TrainWidget"]


class _Watcher(QObject):
    """Reload the settings when the pointer enters the widget; cancel the run when it is undocked."""

    def __init__(self, widget: TrainWidget):
        super().__init__(widget.native)
        self._widget = widget

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Enter and self._widget.running is False:
            self._widget.load_settings()
        elif event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            cancel(self._widget._runs)
        return False


class TrainWidget(MaskReviewSteps, ModelActions, Container):
    """Train stage 1 (N2V) and stage 2 (structN2V) on image layers, with a live preview."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.settings = settings_for(viewer)
        warm_up()
        self.model = None
        self._runs: list[Run] = []
        self._phase = ""
        self._stopping = False
        self._loading = False
        self._epochs: dict[int, int] = {}
        self._mask_event: MaskEstimated | None = None
        self._mask_texts: dict[int, str] = {}
        self._activity = Activity()

        self.images = Select(label="images", choices=self._image_layers)
        self.images.native.setMaximumHeight(80)
        self.axes = ComboBox(label="axes", choices=["YX"])
        self._stage_controls: dict[tuple[int, str], object] = {}
        grid = stage_grid(self._stage_controls)
        self.n2v2 = CheckBox(text="N2V2 (against checkerboards)")
        self.mask_percent = FloatSpinBox(label="masked pixels (%)", min=0.05, max=10.0, step=0.05)
        self.mask_source = ComboBox(label="mask from", choices=MASK_SOURCES)
        self.significance = FloatSpinBox(label="mask significance", min=0.5, max=50.0, step=0.5)
        self.min_correlation = FloatSpinBox(label="min. correlation", min=0.01, max=0.99, step=0.01)
        self.max_radius = SpinBox(label="max. mask radius", min=1, max=24)
        self.whiten = CheckBox(text="decorrelate filtered noise")
        self.recorrupt = CheckBox(text="recorrupted pairs (additive noise)")
        self.remove_banding = CheckBox(text="remove line offsets (banding)")
        self.base_channels = SpinBox(label="network width", min=4, max=256)
        self.depth = SpinBox(label="network depth", min=1, max=4)
        self.network = ComboBox(label="network", choices=NETWORKS)
        self.patch_depth = SpinBox(label="patch depth (3D)", min=4, max=1024, step=4)
        self.separate_channels = CheckBox(text="a separate network per channel")
        self.seed = SpinBox(label="seed (-1: random)", min=-1, max=2**31 - 1)
        self.device = ComboBox(label="device", choices=DEVICES)
        self.preview_every = SpinBox(label="preview every (steps)", value=20, min=1, max=100000)
        self.tile_size = tile_size_box(4096)
        self.review = CheckBox(text="Review mask before stage 2")
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False)
        buttons = Container(layout="horizontal", labels=False, widgets=[self.start_button, self.stop_button])
        buttons.margins = (0, 0, 0, 0)
        self.status = wrapping_label("Choose image layers and press Start.")
        self.progress = {stage: ProgressBar(label=f"stage {stage}", value=0, max=1) for stage in (1, 2)}
        self.loss_plot = LossPlot()
        self.mask_text = wrapping_label("", lines=1, monospace=True)
        self.mask_review = MaskReview()
        self.review_panel = Container(widgets=self.mask_review.widgets, visible=False)
        self.model_path = FileEdit(label="model file", mode="w", filter="*.pt")
        self.save_button = PushButton(text="Save model", enabled=False)
        self.package_path = FileEdit(label="bioimage.io file", mode="w", filter="*.zip")
        self.export_button = PushButton(text="Export bioimage.io package", enabled=False)
        self.export_worker = None
        for name, tip in TOOLTIPS.items():
            getattr(self, name).tooltip = tip

        super().__init__(labels=False)
        self.layers = ProgressLayers(viewer, self.native)
        inputs = Container(widgets=[self.images, self.axes])
        inputs.margins = (0, 0, 0, 0)
        self.stage_section, _ = section("Training budget per stage", [grid], labels=False)
        self.advanced_section, self.advanced = section(
            "Advanced settings",
            [self.n2v2, self.mask_percent, self.mask_source, self.significance, self.min_correlation,
             self.max_radius, self.whiten, self.recorrupt, self.remove_banding, self.base_channels, self.depth,
             self.network, self.patch_depth, self.separate_channels, self.seed,
             self.device, self.preview_every,
             self.tile_size],
            expanded=False,
        )
        bars = Container(widgets=[self.progress[1], self.progress[2]])
        bars.margins = (0, 0, 0, 0)
        self.save_section, _ = section("Save the model", [self.model_path, self.save_button, self.package_path,
                                                               self.export_button])
        self.scroll = scrolling_dock(self, [
            inputs, self.stage_section, self.advanced_section, self.review, buttons, self.status, bars,
            self.loss_plot, self.mask_text, self.review_panel, self.save_section,
        ])
        self.load_settings()

        for (stage, field), control in self._stage_controls.items():
            control.changed.connect(partial(self._store, (f"stage{stage}.{field}",)))
        for name, paths in ADVANCED_FIELDS.items():
            getattr(self, name).changed.connect(partial(self._store, paths))
        self.images.changed.connect(self._update_axes)
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.mask_review.preset.changed.connect(self._show_choice)
        self.mask_review.span.changed.connect(self._show_choice)
        self.mask_review.continue_button.changed.connect(self.continue_training)
        self.save_button.changed.connect(self.save)
        self.export_button.changed.connect(self.export)
        for event in ("inserted", "removed", "reordered", "renamed"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)
        viewer.layers.events.inserted.connect(self.layers.keep_on_top)
        viewer.dims.events.current_step.connect(self._on_dims)
        self._watcher = _Watcher(self)
        self.native.installEventFilter(self._watcher)
        self.native.destroyed.connect(partial(self._on_destroyed, viewer, self._runs, self.layers))
        self.reset_choices()

    @property
    def running(self) -> bool:
        return bool(self._runs)

    @property
    def worker(self):
        """The running worker, or None."""
        return self._runs[0].worker if self._runs else None

    @property
    def preset(self) -> ComboBox:
        return self.mask_review.preset

    @property
    def span(self) -> SpinBox:
        return self.mask_review.span

    def reset_choices(self, *_) -> None:
        """Refresh the image list; with nothing chosen, choose the active image layer."""
        self.images.reset_choices()
        if not self.images.value:
            default = active_input(self._viewer)
            if default is not None:
                self.images.value = [default]
        self._update_axes()

    def _update_axes(self, *_) -> None:
        """Offer the axes the first chosen layer may have; keep the choice when it still fits."""
        offer_axes(self.axes, self.images.value[0] if self.images.value else None, keep=True)

    def load_settings(self) -> None:
        """Show the shared Config's values (the ROI widget may have changed them) in the controls."""
        self._loading = True
        try:
            show_settings(self.settings, self._stage_controls, {name: getattr(self, name) for name in ADVANCED_FIELDS})
        finally:
            self._loading = False

    def start(self) -> None:
        """Validate the inputs and start training in a background worker."""
        if self.running:
            show_info("Training is already running: press Stop first.")
            return
        layers = [layer for layer in self.images.value if layer in self._viewer.layers]
        if not layers:
            show_error("Choose at least one image layer to train on.")
            return
        axes, settings = self.axes.value, copy.deepcopy(self.settings)  # the settings of this moment
        try:
            images = [np.asarray(layer_data(layer)) for layer in layers]
        except InputError as error:
            self._fail(str(error))
            return
        height, width = (images[0].shape[axes.index(letter)] for letter in "YX")
        (top, left), preview_shape = preview_window(height, width, volume=settings.network != "2d")
        preview = None  # channels or a volume: training previews this crop of the first image itself
        if set(axes) <= set("SYX") and settings.network == "2d":  # a plane: this crop of the one in view
            plane = images[0][current_index(self._viewer, layers[0])]
            preview = plane[top : top + preview_shape[0], left : left + preview_shape[1]]
        stop = threading.Event()
        # the worker calls this first: checking the images (a scan of every pixel for NaNs) is not for the main thread
        events = partial(train, images, settings, stop=stop, preview_every=self.preview_every.value,
                         preview_image=preview, num_threads=max(1, (os.cpu_count() or 2) - 1), axes=axes)
        self._mask_event = None
        self.mask_review.clear()
        patch_sizes = {1: settings.stage1.patch_size, 2: settings.stage2.patch_size}
        run = Run(None, stop, threading.Event() if self.review.value else None)
        run.worker = thread_worker(training_worker, start_thread=False)(
            events, images, run, self.tile_size.value or None, patch_sizes)
        run.worker.yielded.connect(self._on_event)
        run.worker.finished.connect(self._on_finished)
        quiet_gc_while(run.worker, self.native)
        self._runs.append(run)
        self._phase, self._stopping = "training", False
        for bar in self.progress.values():
            bar.value, bar.max = 0, 1
        self.loss_plot.clear()
        self.mask_text.value = ""
        self._set_running(True)
        self._show(f"Preparing the training on {', '.join(layer.name for layer in layers)}.")
        # the display layers first, each in its own turn of the event loop, so that none is added during training;
        # a worker quit meanwhile ends as soon as it starts
        self.layers.start(layers, (top, left), preview_shape, axes, acf_side(settings.mask.max_radius),
                          review=self.review.value, then=[run.worker.start])

    def stop(self) -> None:
        """First press: end training at the next step (the best model so far is kept). A second press, or a
        press during the final denoising, skips or cancels the denoising."""
        if not self.running or self._phase == "cancelled":
            return
        run = self._runs[0]
        if self._phase == "training" and not self._stopping:
            self._stopping = True
            run.stop.set()
            if run.resume is not None:
                run.resume.set()
            self._show("Stopping at the next step; the best model so far is kept. "
                       "Press Stop again to skip the final denoising.")
            return
        run.stop.set()
        run.skip_denoising.set()
        if self._phase == "denoising":
            run.worker.quit()
            self._phase = "cancelled"
            self._show("Cancelling the denoising.")
        else:
            self._show("Stopping at the next step; the final denoising will be skipped.")

    def _store(self, paths: tuple[str, ...], value) -> None:
        if not self._loading:
            store_setting(self.settings, paths, value)

    def _image_layers(self, _widget=None) -> list[Image]:
        return input_layers(self._viewer)

    def _on_event(self, event) -> None:
        handlers = {
            StageShown: self._on_stage_started, Step: self._on_step, EpochEnd: self._on_epoch,
            Preview: self._on_preview, MaskEstimated: self._on_mask, StageFinished: self._on_stage_finished,
            Done: self._on_done, DenoiseProgress: self._on_denoise_progress, Denoised: self._on_denoised,
            Failed: self._on_failed,
        }
        handler = handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_stage_started(self, event: StageShown) -> None:
        self._epochs[event.stage] = event.epochs
        total = event.epochs * event.steps_per_epoch
        self.progress[event.stage].max = total
        self.progress[event.stage].value = 0
        self._activity.show(("stage", event.stage), total, f"Training {STAGE_NAMES[event.stage]}")
        self.layers.show_stage(event)
        if not self._stopping:
            self._show(f"{STAGE_NAMES[event.stage].capitalize()} started.")

    def _on_step(self, event: Step) -> None:
        self.progress[event.stage].value = event.step
        self._activity.set(event.step, event.total_steps)
        if not self._stopping:
            self._show(
                f"Stage {event.stage} · epoch {event.epoch + 1}/{self._epochs[event.stage]} · "
                f"step {event.step}/{event.total_steps} · loss {event.loss:.4g}"
            )

    def _on_epoch(self, event: EpochEnd) -> None:
        self.loss_plot.add(event.stage, event.train_loss, event.val_loss)

    def _on_preview(self, event: Preview) -> None:
        self.layers.show_preview(event.image)

    def _on_stage_finished(self, event: StageFinished) -> None:
        if not event.stopped:
            self.progress[event.stage].value = self.progress[event.stage].max
        self._show(f"Stage {event.stage} {'stopped' if event.stopped else 'finished'}; "
                   f"best validation loss {event.best_val_loss:.4g}.")

    def _on_done(self, event: Done) -> None:
        self.model = event.model
        set_model(self._viewer, event.model)
        self.save_button.enabled = True
        self.export_button.enabled = self.export_worker is None
        self.review_panel.visible = False
        self.layers.restore_view()
        self._phase = "denoising"
        if self._runs and self._runs[0].skip_denoising.is_set():
            self._show("Training stopped; the final denoising is skipped.")
        else:
            self._show(f"Training {'stopped' if event.stopped else 'finished'}; "
                       "denoising the images (Stop cancels it).")

    def _on_denoise_progress(self, event: DenoiseProgress) -> None:
        if self._phase != "denoising":  # a late event after Stop must not hide "cancelled"
            return
        name = self.layers.sources[event.image].name
        self._activity.show(("image", event.image), event.total, f"Denoising {name}")
        self._activity.set(event.done, event.total)
        self._show(f"Denoising {name}: {event.done}/{event.total} tiles.")

    def _on_denoised(self, event: Denoised) -> None:
        source = self.layers.sources[event.image]
        if source not in self._viewer.layers or self._phase != "denoising":
            return
        show_denoised(self._viewer, event.result, source)
        self._show(f"Done: layer '{source.name} denoised'.")

    def _on_failed(self, event: Failed) -> None:
        self._fail(event.message)

    def _on_finished(self) -> None:
        run = self._runs[0] if self._runs else None
        skipped = run is not None and run.skip_denoising.is_set()
        self._runs.clear()
        self._activity.close()
        self.review_panel.visible = False
        self.layers.restore_view()
        self.layers.finish()
        self.layers.refresh_thumbnails()
        self._set_running(False)
        if self._phase == "cancelled" or (skipped and self.model is not None and self._phase == "denoising"):
            self._show("Training stopped; the model is kept (Save model), the final denoising was "
                       f"{'cancelled' if self._phase == 'cancelled' else 'skipped'}.")
        elif self.model is None and self._phase == "training" and self._stopping:
            self._show("Training stopped before a model was trained.")
        self._phase = ""

    def _on_dims(self, *_) -> None:
        self.layers.draw_patches()

    @staticmethod
    def _on_destroyed(viewer, runs: list[Run], layers: ProgressLayers, *_) -> None:
        """Cancel the runs of a deleted widget and stop following the viewer."""
        abandon(runs)
        try:
            viewer.layers.events.inserted.disconnect(layers.keep_on_top)
        except (TypeError, ValueError):
            pass

    def _fail(self, message: str) -> None:
        show_error(message)
        self._show(message, warn=True)

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.stop_button.enabled = running

    def _show(self, text: str, warn: bool = False) -> None:
        set_status(self.status, text, warn)
