"""Denoise dock widget: apply a trained or saved model to an image layer, tile by tile, in a worker."""

from __future__ import annotations

from pathlib import Path

import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, ProgressBar, PushButton, RadioButtons
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error

from ..core.chunked import denoise_lazy
from ..core.images import InputError
from ..core.inference import denoise_steps
from ..core.model import ModelFileError, load_model
from ._common import (MIN_TILE, Failed, active_input, gui_words, input_layers, layer_data, offer_axes,
                      refresh_image_choice, show_denoised, tile_size_box, user_message)
from ._layout import Activity, narrow_combo, scrolling_dock, set_status, wrapping_label
from ._quiet_gc import quiet_gc_while
from ._session import model_for

SESSION, FILE = "session", "file"
TOOLTIPS = {
    "source": "Use the model last trained in this viewer (Train widget), or a model saved as a .pt file or "
              "exported as a bioimage.io package (.zip).",
    "model_path": "A model saved by the Train widget or the command line (.pt), or a bioimage.io package exported "
                  "by them (.zip).",
    "image": "The image layer to denoise (2D or a stack); the result is a new '<name> denoised' layer. "
              "A dask-backed or multiscale layer (e.g. OME-Zarr) gives a lazy layer: each part is denoised when shown.",
    "axes": "What the image's axes before Y, X are: S independent planes, T time, C channels, Z planes of a "
            "volume (from the layer's axis labels, or the model's training axes).",
    "tile_size": "The image is denoised in tiles of this side: larger is faster and needs more memory. "
                 "0 (automatic) takes the network's default: 512 for 2D models, 96 for 3D models; "
                 f"any other side is at least {MIN_TILE}.",
    "blind_spot": "Predict each pixel with its blind spot and structN2V mask applied, as in training, so that the "
                  "noise of the mask's pixels cannot leak into the result (8 passes per tile). Off: one faster pass "
                  "on the unmasked image. Models without a one-line mask (N2V, thicker masks) always take one pass.",
    "run_button": "Denoise the chosen image in the background; the viewer stays usable.",
    "stop_button": "Cancel the denoising; no layer is added.",
}


def _denoise_worker(model, image, tile_size: int | None, axes: str | None = None, blind_spot: bool = True):
    """Worker body: yield (done, total) per batch of tiles and return the denoised array."""
    try:
        return (yield from denoise_steps(model, image, tile_size, axes=axes, blind_spot=blind_spot))
    except Exception as error:
        message = user_message(error)
        if message is None:
            raise
        yield Failed(message)
    return None


def _modified(path: Path) -> int | None:
    """The file's modification time in nanoseconds, or None when it cannot be read."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class DenoiseWidget(Container):
    """Denoise an image layer (2D or stack, any size) with the model trained here or a model file."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.worker = None
        self._loaded: tuple[tuple[Path, int | None], object] | None = None  # (path, mtime) -> model or error
        self._source: Image | None = None
        self.source = RadioButtons(
            label="model", choices=(("trained in this viewer", SESSION), ("model file", FILE)), value=SESSION
        )
        self.model_path = FileEdit(label="model file", mode="r", filter="*.pt *.zip")
        self.image = ComboBox(label="image", choices=self._image_layers)
        narrow_combo(self.image)
        self.axes = ComboBox(label="axes", choices=["YX"])
        self.tile_size = tile_size_box(8192)
        self.blind_spot = CheckBox(text="blind-spot inference", value=True)
        self.run_button = PushButton(text="Denoise")
        self.stop_button = PushButton(text="Stop", enabled=False)
        buttons = Container(layout="horizontal", labels=False, widgets=[self.run_button, self.stop_button])
        buttons.margins = (0, 0, 0, 0)
        self.progress = ProgressBar(label="tiles", value=0, max=1)
        self.status = wrapping_label("")
        self._activity = Activity()
        for name, tip in TOOLTIPS.items():
            getattr(self, name).tooltip = tip
        super().__init__(labels=False)
        controls = Container(widgets=[self.source, self.model_path, self.image, self.axes, self.tile_size,
                                      self.blind_spot, buttons, self.progress])
        controls.margins = (0, 0, 0, 0)
        self.scroll = scrolling_dock(self, [controls, self.status])
        self.model_path.changed.connect(self._on_path)
        self.image.changed.connect(self.update_axes)
        self.source.changed.connect(self.update_axes)
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        for event in ("inserted", "removed", "reordered", "renamed"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)
        self.native.destroyed.connect(self.stop)
        self.reset_choices()
        if active_input(viewer) is not None:  # the combo box starts on the first layer: show the active one
            self.image.value = active_input(viewer)

    def update_axes(self, *_) -> None:
        """Offer the axes the chosen layer may have: its axis labels' first, else the model's training axes."""
        try:
            preferred = self.model().axes
        except ModelFileError:
            preferred = None
        offer_axes(self.axes, self.image.value, preferred)

    def reset_choices(self, *_) -> None:
        """Refresh the image list; when the chosen image is gone, choose the active one."""
        refresh_image_choice(self.image, self._viewer)
        self.update_axes()

    def model(self):
        """The chosen model; raises ModelFileError when there is none or the file cannot be read."""
        if self.source.value == SESSION:
            model = model_for(self._viewer)
            if model is None:
                raise ModelFileError("No model was trained in this viewer yet: train one with the Train widget, "
                                     "or choose 'model file' and a saved .pt model.")
            return model
        path = Path(self.model_path.value)
        key = (path, _modified(path))
        if self._loaded is None or self._loaded[0] != key:  # a file that failed is read again once it changes
            try:
                self._loaded = (key, load_model(path))
            except ModelFileError as error:
                self._loaded = (key, error)
        if isinstance(self._loaded[1], ModelFileError):
            raise ModelFileError(str(self._loaded[1]))  # a new one: re-raising the first would lengthen its traceback
        return self._loaded[1]

    def run(self) -> None:
        """Denoise the chosen image layer in a background worker."""
        if self.worker is not None:
            show_error("Denoising is already running: press Stop first.")
            return
        layer = self.image.value
        if layer is None:
            show_error("Choose an image layer to denoise.")
            return
        try:
            model = self.model()
            data = layer_data(layer)
            if layer.multiscale or not isinstance(data, np.ndarray):
                self._show_lazy(layer, denoise_lazy(model, data, self.tile_size.value or None, axes=self.axes.value,
                                                    blind_spot=self.blind_spot.value))
                return
        except (ModelFileError, InputError) as error:
            self._fail(gui_words(str(error)))
            return
        self._source = layer
        self.worker = thread_worker(_denoise_worker, start_thread=False)(model, data, self.tile_size.value or None,
                                                                         self.axes.value, self.blind_spot.value)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_result)
        self.worker.finished.connect(self._on_finished)
        quiet_gc_while(self.worker, self.native)
        self.progress.value, self.progress.max = 0, 1
        self._activity.show(layer.name, 0, f"Denoising {layer.name}")
        self._set_running(True)
        self._show(f"Denoising {layer.name} ...")
        self.worker.start()

    def _show_lazy(self, source: Image, result) -> None:
        """Add the lazily computed result of a dask-backed or multiscale layer: napari computes what it shows."""
        show_denoised(self._viewer, result, source)
        self._show(f"Added '{source.name} denoised' (full resolution), computed chunk by chunk as it is shown.")

    def stop(self) -> None:
        """Cancel the running denoising."""
        if self.worker is not None:
            self.worker.quit()
            self._show("Cancelling the denoising.")

    def _on_path(self) -> None:
        self.source.value = FILE
        try:
            model = self.model()
        except ModelFileError as error:
            self._fail(str(error))
            return
        masks = ["none (plain N2V)" if mask is None else "x".join(map(str, mask.shape)) for mask in model.channel_masks()]
        channels = f"{model.channels} image channels, " if model.channels > 1 else ""
        self._show(f"Loaded {self.model_path.value.name}: structN2V mask {', '.join(masks)}, {channels}"
                   f"{model.config.network} network, {model.config.base_channels} channels, depth {model.config.depth}.")
        self.update_axes()

    def _on_progress(self, value) -> None:
        if isinstance(value, Failed):
            self._fail(value.message)
            return
        if self.worker is None or self.worker.abort_requested:
            return  # a late event after Stop must not hide "cancelled"
        done, total = value
        self.progress.max, self.progress.value = total, done
        self._activity.set(done, total)
        self._show(f"Denoising {self._source.name}: {done}/{total} tiles.")

    def _on_result(self, result) -> None:
        if result is None or self._source not in self._viewer.layers:
            return
        source = self._source
        show_denoised(self._viewer, result, source)
        self._show(f"Done: layer '{source.name} denoised'.")

    def _on_finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self._show(f"Denoising cancelled after {self.progress.value}/{self.progress.max} tiles.")
        self._activity.close()
        self.worker = None
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.stop_button.enabled = running

    def _image_layers(self, _widget=None) -> list[Image]:
        return input_layers(self._viewer)

    def _fail(self, message: str) -> None:
        show_error(message)
        self._show(message, warn=True)

    def _show(self, text: str, warn: bool = False) -> None:
        set_status(self.status, text, warn)
