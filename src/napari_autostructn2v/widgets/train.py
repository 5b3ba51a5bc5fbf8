"""Train dock widget: two-stage training in a background worker, its progress shown as layers.

The settings live in the viewer's shared Config (`settings_for(viewer)`), which the ROI widget
edits too. The core `train` generator runs in a napari thread worker; its events update the
widget and the layers in the main thread (the `yielded` handler). At the end the trained model
denoises the training images in the same worker.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from functools import partial

import napari.viewer
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject

from ..core.config import DEVICES, MASK_SOURCES, ConfigError
from ..core.images import InputError
from ..core.inference import denoise_steps
from ..core.mask import PRESETS, check_mask, crop_mask, embed_mask, preset_mask
from ..core.model import save_model
from ..core.training import (
    PREVIEW_SIZE,
    Done,
    EpochEnd,
    MaskEstimated,
    Preview,
    StageFinished,
    StageStarted,
    Step,
    train,
)
from ._common import Failed, current_index, layer_data, show_image, show_layer, user_message
from ._overlay import patch_boxes as patch_rectangles
from ._loss_plot import LossPlot
from ._session import set_model, settings_for

PREVIEW_LAYER = "denoised preview"
ACF_LAYER = "noise autocorrelation"
MASK_LAYER = "structured mask"
PATCHES_LAYER = "patches in use"
NOT_INPUTS = (PREVIEW_LAYER, ACF_LAYER, "ROI map")
STAGE_COLOURS = {1: "#00e5ff", 2: "#ff9f1a"}
MAX_BOXES = 2000
REVIEW_POLL_S = 0.1
# row label, StageConfig field, control factory
STAGE_FIELDS = (
    ("epochs", "epochs", lambda: SpinBox(min=0, max=100000)),
    ("steps per epoch", "steps_per_epoch", lambda: SpinBox(min=1, max=100000)),
    ("batch size", "batch_size", lambda: SpinBox(min=1, max=4096)),
    ("learning rate", "learning_rate", lambda: FloatSpinBox(min=1e-6, max=1.0, step=1e-4)),
    ("patch size", "patch_size", lambda: SpinBox(min=16, max=1024, step=8)),
)
# advanced control name -> (Config path, ...): one control may set the same field in both stages
ADVANCED_FIELDS = {
    "n2v2": ("stage1.n2v2", "stage2.n2v2"),
    "mask_percent": ("stage1.mask_percent", "stage2.mask_percent"),
    "mask_source": ("mask.source",),
    "significance": ("mask.significance",),
    "min_correlation": ("mask.min_correlation",),
    "max_radius": ("mask.max_radius",),
    "base_channels": ("base_channels",),
    "depth": ("depth",),
    "seed": ("seed",),
    "device": ("device",),
}


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
class _Run:
    worker: object
    stop: threading.Event
    resume: threading.Event | None


def _training_worker(events, images, resume: threading.Event | None, tile_size: int):
    """Worker body: relay training events, wait for the mask review if asked, then denoise the images."""
    try:
        model = None
        for event in events:
            yield event
            if isinstance(event, MaskEstimated) and resume is not None:
                while not resume.wait(REVIEW_POLL_S):
                    yield None  # a yield lets worker.quit() end a run that waits for the review
            if isinstance(event, Done):
                model = event.model
        for index, image in enumerate(images):
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


def _cancel(runs: list[_Run]) -> None:
    for run in runs:
        run.stop.set()
        if run.resume is not None:
            run.resume.set()
        run.worker.quit()


def _abandon(runs: list[_Run]) -> None:
    """Cancel the runs of a deleted widget and stop their events from reaching it."""
    for run in runs:
        for signal in (run.worker.yielded, run.worker.finished):
            try:
                signal.disconnect()
            except TypeError:
                pass
    _cancel(runs)


def _get(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _set(config, path: str, value) -> None:
    *parents, name = path.split(".")
    for part in parents:
        config = getattr(config, part)
    setattr(config, name, value)


def _mask_canvas(mask: np.ndarray, size: int) -> np.ndarray:
    """`mask` centred in a (size, size) uint8 labels array (1 = masked)."""
    return embed_mask(mask.astype(np.uint8), size // 2)


def _mask_from_canvas(canvas: np.ndarray) -> np.ndarray:
    """The smallest odd square around the canvas centre holding all painted pixels; the centre is always set."""
    mask = np.asarray(canvas) > 0
    mask[mask.shape[0] // 2, mask.shape[1] // 2] = True
    return check_mask(crop_mask(mask))


class _Watcher(QObject):
    """Reload the settings when the pointer enters the widget; cancel the run when it is undocked."""

    def __init__(self, widget: TrainWidget):
        super().__init__(widget.native)
        self._widget = widget

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Enter and self._widget.running is False:
            self._widget.load_settings()
        elif event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            _cancel(self._widget._runs)
        return False


class TrainWidget(Container):
    """Train stage 1 (N2V) and stage 2 (structN2V) on image layers, with a live preview."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.settings = settings_for(viewer)
        self.model = None
        self._runs: list[_Run] = []
        self._phase = ""
        self._loading = False
        self._sources: list[Image] = []
        self._preview_offset = (0, 0)
        self._patches: tuple[int, list[np.ndarray], int] | None = None
        self._patch_sizes: dict[int, int] = {}
        self._epochs: dict[int, int] = {}
        self._estimate = None
        self._mask_event: MaskEstimated | None = None

        self.images = Select(label="images", choices=self._image_layers)
        self.images.native.setMaximumHeight(80)
        self._stage_controls: dict[tuple[int, str], object] = {}
        grid = self._build_grid()
        self.show_advanced = CheckBox(text="advanced settings")
        self.n2v2 = CheckBox(text="N2V2 (blur pooling, median blind spots)")
        self.mask_percent = FloatSpinBox(label="masked pixels (%)", min=0.05, max=10.0, step=0.05)
        self.mask_source = ComboBox(label="mask from", choices=MASK_SOURCES)
        self.significance = FloatSpinBox(label="mask significance", min=0.5, max=50.0, step=0.5)
        self.min_correlation = FloatSpinBox(label="min. correlation", min=0.01, max=0.99, step=0.01)
        self.max_radius = SpinBox(label="max. mask radius", min=1, max=24)
        self.base_channels = SpinBox(label="network width", min=4, max=256)
        self.depth = SpinBox(label="network depth", min=1, max=4)
        self.seed = SpinBox(label="seed (-1: random)", min=-1, max=2**31 - 1)
        self.device = ComboBox(label="device", choices=DEVICES)
        self.preview_every = SpinBox(label="preview every (steps)", value=20, min=1, max=100000)
        self.tile_size = SpinBox(label="tile size", value=256, min=96, max=4096, step=32)
        self.advanced = Container(
            widgets=[self.n2v2, self.mask_percent, self.mask_source, self.significance, self.min_correlation,
                     self.max_radius, self.base_channels, self.depth, self.seed, self.device, self.preview_every,
                     self.tile_size],
            visible=False,
        )
        self.review = CheckBox(text="Review mask before stage 2")
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False)
        buttons = Container(layout="horizontal", labels=False, widgets=[self.start_button, self.stop_button])
        buttons.margins = (0, 0, 0, 0)
        self.status = Label(value="Choose image layers and press Start.")
        self.status.native.setWordWrap(True)
        self.progress = {stage: ProgressBar(label=f"stage {stage}", value=0, max=1) for stage in (1, 2)}
        self.mask_text = Label(value="")
        self.mask_text.native.setStyleSheet("font-family: monospace;")
        self.mask_text.native.setWordWrap(True)
        self.preset = ComboBox(label="mask", choices=("detected", *PRESETS))
        self.span = SpinBox(label="span", value=5, min=1, max=25, step=2)
        self.continue_button = PushButton(text="Continue with this mask")
        self.review_panel = Container(widgets=[self.preset, self.span, self.continue_button], visible=False)
        self.model_path = FileEdit(label="model file", mode="w", filter="*.pt")
        self.save_button = PushButton(text="Save model", enabled=False)
        super().__init__(
            widgets=[
                self.images, grid, self.show_advanced, self.advanced, self.review, buttons, self.status,
                self.progress[1], self.progress[2], self.mask_text, self.review_panel, self.model_path,
                self.save_button,
            ]
        )
        self.loss_plot = LossPlot()
        self.native.layout().insertWidget(self.index(self.progress[2]) + 1, self.loss_plot)
        self.load_settings()

        for (stage, field), control in self._stage_controls.items():
            control.changed.connect(partial(self._store, (f"stage{stage}.{field}",)))
        for name, paths in ADVANCED_FIELDS.items():
            getattr(self, name).changed.connect(partial(self._store, paths))
        self.show_advanced.changed.connect(lambda visible: setattr(self.advanced, "visible", visible))
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.preset.changed.connect(self._show_choice)
        self.span.changed.connect(self._show_choice)
        self.continue_button.changed.connect(self.continue_training)
        self.save_button.changed.connect(self.save)
        for event in ("inserted", "removed", "reordered", "renamed"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)
        viewer.dims.events.current_step.connect(lambda: self._draw_patches())
        self._watcher = _Watcher(self)
        self.native.installEventFilter(self._watcher)
        self.native.destroyed.connect(partial(_abandon, self._runs))
        self.reset_choices()

    @property
    def running(self) -> bool:
        return bool(self._runs)

    @property
    def worker(self):
        """The running worker, or None."""
        return self._runs[0].worker if self._runs else None

    def reset_choices(self, *_) -> None:
        super().reset_choices()
        if not self.images.value and self.images.choices:
            self.images.value = [self.images.choices[0]]

    def load_settings(self) -> None:
        """Show the shared Config's values (the ROI widget may have changed them) in the controls."""
        self._loading = True
        try:
            for (stage, field), control in self._stage_controls.items():
                control.value = getattr(getattr(self.settings, f"stage{stage}"), field)
            for name, paths in ADVANCED_FIELDS.items():
                value = _get(self.settings, paths[0])
                getattr(self, name).value = -1 if name == "seed" and value is None else value
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
        try:
            images = [np.asarray(layer_data(layer)) for layer in layers]
            plane = images[0][current_index(self._viewer, layers[0])]
            top, left = (max(0, (n - PREVIEW_SIZE) // 2) for n in plane.shape)
            stop = threading.Event()
            events = train(
                images, self.settings, stop=stop, preview_every=self.preview_every.value,
                preview_image=plane[top : top + PREVIEW_SIZE, left : left + PREVIEW_SIZE],
                num_threads=max(1, (os.cpu_count() or 2) - 1),
            )
        except (InputError, ConfigError) as error:
            self._fail(str(error))
            return
        self._sources = layers
        self._preview_offset = (top, left)
        self._patch_sizes = {1: self.settings.stage1.patch_size, 2: self.settings.stage2.patch_size}
        self._patches = None
        self._estimate = self._mask_event = None
        resume = threading.Event() if self.review.value else None
        worker = thread_worker(_training_worker, start_thread=False)(events, images, resume, self.tile_size.value)
        worker.yielded.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        self._runs.append(_Run(worker, stop, resume))
        self._phase = "training"
        for bar in self.progress.values():
            bar.value, bar.max = 0, 1
        self.loss_plot.clear()
        self.mask_text.value = ""
        self._set_running(True)
        self._show(f"Preparing the training on {', '.join(layer.name for layer in layers)}.")
        worker.start()

    def stop(self) -> None:
        """End training at the next step (keeping the best model so far), or cancel the final denoising."""
        if not self.running:
            return
        run = self._runs[0]
        if self._phase == "training":
            run.stop.set()
            if run.resume is not None:
                run.resume.set()
            self._show("Stopping at the next step; the best model so far is kept.")
        else:
            run.worker.quit()
            self._show("Denoising cancelled.")

    def continue_training(self) -> None:
        """Start stage 2 with the mask shown in the 'structured mask' layer."""
        if self._mask_event is None or not self.running or self._runs[0].resume is None:
            return
        try:
            mask = _mask_from_canvas(self._mask_canvas())
        except InputError as error:
            self._fail(str(error))
            return
        self._mask_event.mask = mask
        self.mask_text.value = self._mask_description(mask, "chosen for stage 2")
        self.review_panel.visible = False
        self._runs[0].resume.set()

    def save(self) -> None:
        """Write the trained model to the chosen file (one .pt file)."""
        path = self.model_path.value
        if self.model is None:
            show_error("There is no trained model yet: train one first.")
            return
        if not str(path) or path.is_dir():
            show_error("Choose a file to save the model to (a .pt file) next to 'model file'.")
            return
        path = path if path.suffix else path.with_suffix(".pt")
        try:
            save_model(self.model, path)
        except OSError as error:
            show_error(f"Could not save the model to {path}: {error}")
            return
        show_info(f"Model saved to {path}")
        self._show(f"Model saved to {path}.")

    def _build_grid(self) -> Container:
        rows = [self._row(Label(value=""), Label(value="stage 1"), Label(value="stage 2"))]
        for text, field, factory in STAGE_FIELDS:
            controls = []
            for stage in (1, 2):
                control = self._stage_controls[stage, field] = factory()
                controls.append(control)
            rows.append(self._row(Label(value=text), *controls))
        grid = Container(labels=False, widgets=rows)
        grid.margins = (0, 0, 0, 0)
        return grid

    @staticmethod
    def _row(label: Label, *controls) -> Container:
        label.native.setFixedWidth(110)
        row = Container(layout="horizontal", labels=False, widgets=[label, *controls])
        row.margins = (0, 0, 0, 0)
        return row

    def _store(self, paths: tuple[str, ...], value) -> None:
        if self._loading:
            return
        if paths == ("seed",) and value < 0:
            value = None
        for path in paths:
            _set(self.settings, path, value)

    def _image_layers(self, _widget=None) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image) and layer.name not in NOT_INPUTS]

    def _source(self) -> Image | None:
        return self._sources[0] if self._sources and self._sources[0] in self._viewer.layers else None

    def _on_event(self, event) -> None:
        handlers = {
            StageStarted: self._on_stage_started, Step: self._on_step, EpochEnd: self._on_epoch,
            Preview: self._on_preview, MaskEstimated: self._on_mask, StageFinished: self._on_stage_finished,
            Done: self._on_done, DenoiseProgress: self._on_denoise_progress, Denoised: self._on_denoised,
            Failed: self._on_failed,
        }
        handler = handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_stage_started(self, event: StageStarted) -> None:
        self._epochs[event.stage] = event.epochs
        self.progress[event.stage].max = event.epochs * event.steps_per_epoch
        self.progress[event.stage].value = 0
        self._patches = (event.stage, event.patches, self._patch_sizes[event.stage])
        self._draw_patches(create=True)
        self._show(f"Stage {event.stage} ({'N2V' if event.stage == 1 else 'structN2V'}) started.")

    def _on_step(self, event: Step) -> None:
        self.progress[event.stage].value = event.step
        self._show(
            f"Stage {event.stage} · epoch {event.epoch + 1}/{self._epochs[event.stage]} · "
            f"step {event.step}/{event.total_steps} · loss {event.loss:.4g}"
        )

    def _on_epoch(self, event: EpochEnd) -> None:
        self.loss_plot.add(event.stage, event.train_loss, event.val_loss)

    def _on_preview(self, event: Preview) -> None:
        source = self._source()
        if source is None:
            return
        created = PREVIEW_LAYER not in self._viewer.layers
        show_image(
            self._viewer, event.image, PREVIEW_LAYER, like=source, offset=self._preview_offset,
            contrast_limits=source.contrast_limits, colormap=source.colormap.name,
        )
        if created and PATCHES_LAYER in self._viewer.layers:  # keep the patch outlines above the preview
            layers = self._viewer.layers
            layers.move(layers.index(PATCHES_LAYER), len(layers))

    def _on_mask(self, event: MaskEstimated) -> None:
        self._estimate, self._mask_event = event.estimate, event
        size = event.estimate.acf.shape[0]
        show_layer(self._viewer, "image", event.estimate.acf, ACF_LAYER, colormap="magma",
                   contrast_limits=(0.0, 1.0), **self._mask_placement(size, row=0))
        show_layer(self._viewer, "labels", _mask_canvas(event.estimate.mask, size), MASK_LAYER, opacity=0.9,
                   **self._mask_placement(size, row=1))
        self.mask_text.value = self._mask_description(event.estimate.mask, event.estimate.reason)
        if self._runs and self._runs[0].resume is not None:
            self.span.max = size
            self.preset.value = "detected"
            self.review_panel.visible = True
            self._show("Review the mask (edit the 'structured mask' layer or pick a preset), "
                       "then press 'Continue with this mask'.")

    def _on_stage_finished(self, event: StageFinished) -> None:
        if not event.stopped:
            self.progress[event.stage].value = self.progress[event.stage].max
        self._show(f"Stage {event.stage} {'stopped' if event.stopped else 'finished'}; "
                   f"best validation loss {event.best_val_loss:.4g}.")

    def _on_done(self, event: Done) -> None:
        self.model = event.model
        set_model(self._viewer, event.model)
        self.save_button.enabled = True
        self.review_panel.visible = False
        self._phase = "denoising"
        self._show(f"Training {'stopped' if event.stopped else 'finished'}; denoising the images (Stop skips it).")

    def _on_denoise_progress(self, event: DenoiseProgress) -> None:
        self._show(f"Denoising {self._sources[event.image].name}: {event.done}/{event.total} tiles.")

    def _on_denoised(self, event: Denoised) -> None:
        source = self._sources[event.image]
        if source not in self._viewer.layers:
            return
        show_image(self._viewer, event.result, f"{source.name} denoised", like=source,
                   contrast_limits=source.contrast_limits, colormap=source.colormap.name)
        self._show(f"Done: layer '{source.name} denoised'.")

    def _on_failed(self, event: Failed) -> None:
        self._fail(event.message)

    def _on_finished(self) -> None:
        self._runs.clear()
        self._phase = ""
        self.review_panel.visible = False
        self._set_running(False)

    def _fail(self, message: str) -> None:
        show_error(message)
        self._show(message, warn=True)

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.stop_button.enabled = running

    def _draw_patches(self, create: bool = False) -> None:
        """Outline the current stage's training patches on the slice in view (a removed layer stays removed)."""
        source = self._source()
        if self._patches is None or source is None or not (create or PATCHES_LAYER in self._viewer.layers):
            return
        stage, patches, size = self._patches
        index = current_index(self._viewer, source)
        corners = patches[int(np.ravel_multi_index(index, source.data.shape[:-2])) if index else 0]
        if len(corners) > MAX_BOXES:
            corners = corners[np.linspace(0, len(corners) - 1, MAX_BOXES).astype(int)]
        boxes = list(patch_rectangles(corners, size))
        if PATCHES_LAYER in self._viewer.layers:
            layer = self._viewer.layers[PATCHES_LAYER]
            layer.data = []
            if boxes:
                layer.add(boxes, shape_type="rectangle", edge_color=STAGE_COLOURS[stage], face_color="transparent",
                          edge_width=2)
        else:
            active = self._viewer.layers.selection.active
            layer = self._viewer.add_shapes(
                boxes, shape_type="rectangle", name=PATCHES_LAYER, edge_color=STAGE_COLOURS[stage],
                face_color="transparent", edge_width=2,
            )
            self._viewer.layers.selection.active = active
        layer.scale, layer.translate = source.scale[-2:], source.translate[-2:]

    def _mask_placement(self, size: int, row: int) -> dict:
        """Scale and translate that show a (size, size) array beside the source image, in row 0 or 1."""
        source = self._source()
        if source is None:
            return {}
        extent = np.asarray(source.extent.world)[:, -2:]
        height = extent[1, 0] - extent[0, 0]
        pixel = 0.4 * height / size
        top = extent[0, 0] + row * (size + 2) * pixel
        return {"scale": (pixel, pixel), "translate": (top + pixel / 2, extent[1, 1] + 0.05 * height + pixel / 2)}

    def _mask_canvas(self) -> np.ndarray:
        if MASK_LAYER in self._viewer.layers:
            return np.asarray(self._viewer.layers[MASK_LAYER].data)
        return _mask_canvas(self._choice(), self._estimate.acf.shape[0])

    def _choice(self) -> np.ndarray:
        if self.preset.value == "detected":
            return self._estimate.mask
        return preset_mask(self.preset.value, self.span.value)

    def _show_choice(self, *_) -> None:
        if self._estimate is None:
            return
        size = self._estimate.acf.shape[0]
        show_layer(self._viewer, "labels", _mask_canvas(self._choice(), size), MASK_LAYER, opacity=0.9,
                   **self._mask_placement(size, row=1))
        self.mask_text.value = self._mask_description(self._choice(), self.preset.value)

    def _mask_description(self, mask: np.ndarray, reason: str) -> str:
        text = dataclasses.replace(self._estimate, mask=mask).as_text()
        return f"structN2V mask ({reason}):\n{text}"

    def _show(self, text: str, warn: bool = False) -> None:
        self.status.value = text
        self.status.native.setStyleSheet("color: #ffa500;" if warn else "")
