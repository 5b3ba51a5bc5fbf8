"""ROI selection dock widget: tune each stage's patch selection and see the patches on the image.

The controls edit the stage settings of the viewer's shared Config (`settings_for(viewer)`), the
same object the training reads. Selection itself is done by `core.roi`; this module only
connects controls to it and draws the result as a Shapes layer per stage.
"""

from __future__ import annotations

from collections.abc import Iterable

import napari.viewer
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
)
from napari.layers import Image, Shapes
from superqt.utils import qthrottled

from ..core.config import ConfigError, StageConfig
from ..core.images import InputError, check_image
from ..core.roi import count_windows, roi_map, select_roi_patches, suggest_threshold
from ._common import patch_rectangles
from ._session import settings_for

STAGE_LABELS = {"stage1": "stage 1", "stage2": "stage 2"}
EDGE_COLOURS = {"stage1": "#00e5ff", "stage2": "#ff9f1a"}
FEW_PATCHES = 8
UPDATE_INTERVAL_MS = 120
MAP_LAYER_NAME = "ROI map"
NO_PATCHES = np.empty((0, 2), np.int64)
# control name -> StageConfig field
FIELDS = {
    "use_roi": "use_roi",
    "threshold": "roi_threshold",
    "scale_factor": "scale_factor",
    "select_background": "select_background",
    "patch_size": "patch_size",
    "overlap": "roi_overlap",
}


class RoiWidget(Container):
    """Choose the training patches of stage 1 and stage 2 and show them live over the image."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.settings = settings_for(viewer)
        self._overlays: dict[str, Shapes] = {}
        self._map_layer: Image | None = None
        self._watched: Image | None = None
        self._loading = False
        self._pending: set[str] = set()
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.stage = RadioButtons(
            label="stage", choices=[(label, stage) for stage, label in STAGE_LABELS.items()], value="stage1",
            orientation="horizontal",
        )
        self.use_roi = CheckBox(text="use ROI selection")
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01)
        self.select_background = RadioButtons(
            label="select", choices=(("background", True), ("structure", False)), orientation="horizontal"
        )
        self.suggest = PushButton(text="Suggest threshold")
        self.scale_factor = FloatSpinBox(label="scale factor", min=0.05, max=1.0, step=0.05)
        self.patch_size = SpinBox(label="patch size", min=16, max=1024, step=8)
        self.overlap = FloatSpinBox(label="overlap", min=0.0, max=0.95, step=0.05)
        self.max_patches = SpinBox(label="max patches shown", value=1000, min=1, max=3000, step=100)
        self.show_map = CheckBox(text="show preprocessed map")
        self.status = Label(value="Choose an image layer.")
        self.status.native.setWordWrap(True)
        super().__init__(
            widgets=[
                self.image, self.stage, self.use_roi, self.threshold, self.select_background, self.suggest,
                self.scale_factor, self.patch_size, self.overlap, self.max_patches, self.show_map, self.status,
            ]
        )
        self.load_settings()
        self._throttled = qthrottled(self._refresh_pending, timeout=UPDATE_INTERVAL_MS, parent=self.native)

        for name, field in FIELDS.items():
            getattr(self, name).changed.connect(lambda value, field=field: self._store(field, value))
        self.stage.changed.connect(self._on_stage)
        self.image.changed.connect(self._on_image)
        self.max_patches.changed.connect(lambda: self.request(self.stage.value))
        self.show_map.changed.connect(lambda: self.request(self.stage.value))
        self.suggest.changed.connect(self.suggest_threshold)
        self._connect_viewer(connect=True)
        self.native.destroyed.connect(lambda: self._connect_viewer(connect=False))
        self.reset_choices()
        self._on_image()

    @property
    def stage_settings(self) -> StageConfig:
        """The StageConfig of the stage being edited (an object inside the shared Config)."""
        return getattr(self.settings, self.stage.value)

    def load_settings(self) -> None:
        """Show the current stage's values from the shared Config in the controls."""
        self._loading = True
        self._shown_stage = self.stage.value
        try:
            for name, field in FIELDS.items():
                getattr(self, name).value = getattr(self.stage_settings, field)
        finally:
            self._loading = False
        self._set_enabled()

    def request(self, *stages: str) -> None:
        """Ask for a redraw of these stages' patches; calls are throttled while a slider moves."""
        self._pending.update(stages)
        self._throttled()

    def refresh(self, stages: Iterable[str] = tuple(STAGE_LABELS)) -> None:
        """Recompute and redraw the patches of `stages` now, and the status of the current stage."""
        layer = self._image_layer()
        if layer is None:
            for overlay in self._live_overlays():
                overlay.data = []
            self._remove_map()
            self._show("Choose an image layer.")
            return
        plane = self._current_plane(layer)
        for stage in stages:
            text, warn = self._update_stage(stage, layer, plane)
            if stage == self.stage.value:
                self._show(text, warn)

    def suggest_threshold(self) -> None:
        """Set the threshold to the Otsu level of the window means of the current slice."""
        layer = self._image_layer()
        if layer is None:
            self._show("Choose an image layer.")
            return
        settings = self.stage_settings
        try:
            level = suggest_threshold(
                self._current_plane(layer), settings.patch_size, settings.scale_factor,
                settings.roi_overlap, settings.roi_smoothing,
            )
        except InputError as err:
            self._show(str(err), warn=True)
            return
        self.threshold.value = round(level, 2)

    def _update_stage(self, stage: str, layer: Image, plane: np.ndarray) -> tuple[str, bool]:
        """Redraw one stage's patches; return its status text and whether it is a warning."""
        settings = getattr(self.settings, stage)
        label = STAGE_LABELS[stage]
        current = stage == self.stage.value
        try:
            settings.validate(label)
            check_image(plane, layer.name, min_size=settings.patch_size)
            if settings.use_roi:
                selected = len(self._select(plane, settings))
                total = count_windows(
                    plane, settings.patch_size, settings.scale_factor, settings.roi_overlap, settings.roi_smoothing
                )
                corners = self._select(plane, settings, self.max_patches.value)
        except (InputError, ConfigError) as err:
            self._draw(stage, layer, NO_PATCHES)
            if current:
                self._remove_map()
            return str(err), True
        if not settings.use_roi:
            self._draw(stage, layer, NO_PATCHES)
            if current:
                self._remove_map()
            return f"{label}: ROI selection is off; training takes patches anywhere in the image.", False
        self._draw(stage, layer, corners, settings.patch_size)
        if current:
            self._update_map(layer, plane, settings)
        text = f"{label}: {selected} patches ({100.0 * selected / total:.0f} % of the image)"
        if len(corners) < selected:
            text += f", {len(corners)} shown"
        if selected >= FEW_PATCHES:
            return text, False
        if settings.select_background:
            hint = "raise the threshold, switch to 'structure'"
        else:
            hint = "lower the threshold, switch to 'background'"
        return f"{text}. Too few patches for training: {hint}, or turn ROI selection off.", True

    def _select(self, plane: np.ndarray, settings: StageConfig, cap: int | None = None) -> np.ndarray:
        return select_roi_patches(
            plane, patch_size=settings.patch_size, threshold=settings.roi_threshold,
            scale_factor=settings.scale_factor, select_background=settings.select_background,
            overlap=settings.roi_overlap, max_patches=cap, smoothing=settings.roi_smoothing, seed=self.settings.seed,
        )

    def _draw(self, stage: str, image: Image, corners: np.ndarray, patch_size: int = 0) -> None:
        """Show the patches with top-left `corners` as rectangles over the pixels they cover."""
        overlay = self._overlays.get(stage)
        if overlay not in self._live_overlays():
            if len(corners) == 0:
                return
            overlay = self._add_overlay(stage)
        overlay.scale = image.scale[-2:]
        overlay.translate = image.translate[-2:]
        boxes = patch_rectangles(corners, patch_size)
        overlay.data = (boxes, ["rectangle"] * len(boxes))
        overlay.edge_width = max(1.0, patch_size / 32)  # napari gives new shapes width 1

    def _add_overlay(self, stage: str) -> Shapes:
        overlay = Shapes(
            ndim=2, name=f"ROI patches {STAGE_LABELS[stage]}", edge_color=EDGE_COLOURS[stage],
            face_color="transparent",
        )
        self._overlays[stage] = overlay
        self._add_quietly(overlay)
        return overlay

    def _add_quietly(self, layer) -> None:
        """Add a layer without taking the selection away from the layer the user works on."""
        active = self._viewer.layers.selection.active
        self._viewer.add_layer(layer)
        self._viewer.layers.selection.active = active

    def _update_map(self, image: Image, plane: np.ndarray, settings: StageConfig) -> None:
        if not self.show_map.value:
            self._remove_map()
            return
        result = roi_map(plane, settings.scale_factor, settings.roi_smoothing, settings.patch_size)
        scale = np.asarray(image.scale[-2:]) * result.factor
        translate = np.asarray(image.translate[-2:]) + (result.factor - 1) / 2 * np.asarray(image.scale[-2:])
        if self._map_layer not in self._viewer.layers:
            self._map_layer = Image(
                result.map, name=MAP_LAYER_NAME, colormap="magma", opacity=0.5, contrast_limits=(0, 1)
            )
            self._add_quietly(self._map_layer)
        else:
            self._map_layer.data = result.map
        self._map_layer.scale = scale
        self._map_layer.translate = translate

    def _remove_map(self) -> None:
        if self._map_layer in self._viewer.layers:
            self._viewer.layers.remove(self._map_layer)
        self._map_layer = None

    def _current_plane(self, layer: Image) -> np.ndarray:
        """The 2D (Y, X) slice of `layer` at the viewer's current position (a view, never a copy)."""
        data = layer.data[0] if layer.multiscale else layer.data
        leading = layer.ndim - 2
        if leading <= 0:
            return np.asarray(data)
        position = layer.world_to_data(self._viewer.dims.point)[:leading]
        index = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(position, data.shape))
        return np.asarray(data[index])

    def _image_layers(self, _widget=None) -> list[Image]:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image) and layer is not self._map_layer]

    def _image_layer(self) -> Image | None:
        layer = self.image.value
        return layer if layer in self._viewer.layers else None

    def _live_overlays(self) -> list[Shapes]:
        return [layer for layer in self._overlays.values() if layer in self._viewer.layers]

    def _store(self, field: str, value) -> None:
        if self._loading or getattr(self.stage_settings, field) == value:
            return
        setattr(self.stage_settings, field, value)
        self._set_enabled()
        self.request(self.stage.value)

    def _set_enabled(self) -> None:
        use_roi = self.use_roi.value
        for control in (self.threshold, self.select_background, self.suggest, self.scale_factor, self.overlap):
            control.enabled = use_roi

    def _connect_viewer(self, connect: bool) -> None:
        """Follow (or, once the widget is closed, stop following) layer list and dims changes."""
        for emitter, callback in [
            *((getattr(self._viewer.layers.events, name), self.reset_choices)
              for name in ("inserted", "removed", "reordered", "renamed")),
            (self._viewer.layers.events.removed, self._on_image),
            (self._viewer.dims.events.current_step, self._on_dims),
        ]:
            if connect:
                emitter.connect(callback)
            else:
                emitter.disconnect(callback)
        if not connect and self._watched is not None:
            self._watch(None)

    def _on_stage(self) -> None:
        if self.stage.value == self._shown_stage:
            return
        self.load_settings()
        self.refresh([self.stage.value])

    def _on_image(self) -> None:
        """Redraw when the chosen layer changes, or is removed from the viewer."""
        layer = self._image_layer()
        if layer is not self._watched:
            self._watch(layer)
            self._on_layer_change()

    def _watch(self, layer: Image | None) -> None:
        """Follow data and placement changes of `layer` (and stop following the previous one)."""
        for event in ("data", "scale", "translate"):
            if self._watched is not None:
                getattr(self._watched.events, event).disconnect(self._on_layer_change)
            if layer is not None:
                getattr(layer.events, event).connect(self._on_layer_change)
        self._watched = layer

    def _on_layer_change(self) -> None:
        self.request(*STAGE_LABELS)

    def _on_dims(self) -> None:
        layer = self._image_layer()
        if layer is not None and layer.ndim > 2:
            self.request(*STAGE_LABELS)

    def _refresh_pending(self) -> None:
        stages, self._pending = sorted(self._pending), set()
        self.refresh(stages)

    def _show(self, text: str, warn: bool = False) -> None:
        self.status.value = text
        self.status.native.setStyleSheet("color: #ffa500;" if warn else "")
