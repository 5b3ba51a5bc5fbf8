"""ROI selection dock widget: tune each stage's patch selection and see the patches on the image.

The controls edit the stage settings of the viewer's shared Config (`settings_for(viewer)`), the
same object the training reads. Selection itself is done by `core.roi`; the outline geometry by
`_overlay`. Both run in a background thread (one at a time, the latest settings winning), and the
main thread only hands the result to a Shapes layer per stage, kept above the images.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, PushButton, RadioButtons, SpinBox
from napari.layers import Image, Shapes
from napari.qt.threading import create_worker
from superqt.utils import qdebounced

from ..core.config import ConfigError, StageConfig
from ..core.images import InputError, check_image
from ..core.roi import RoiMap, count_windows, roi_map, select_roi_patches, suggest_threshold
from ._common import (
    active_input,
    add_quietly,
    draw_outline,
    input_layers,
    keep_on_top,
    later,
    mark_internal,
    place_like,
    refresh_image_choice,
    refresh_thumbnail,
    warm_up,
)
from ._layout import narrow_combo, scrolling_dock, section, set_status, wrapping_label
from ._overlay import Outline, patch_outline
from ._session import settings_for

STAGE_LABELS = {"stage1": "stage 1", "stage2": "stage 2"}
EDGE_COLOURS = {"stage1": "#00e5ff", "stage2": "#ff9f1a"}
FEW_PATCHES = 8
THUMBNAIL_DELAY_MS = 300
MAP_LAYER_NAME = "ROI map"
NO_IMAGE = "Choose an image layer."
# control name -> StageConfig field
FIELDS = {
    "use_roi": "use_roi",
    "threshold": "roi_threshold",
    "scale_factor": "scale_factor",
    "select_background": "select_background",
    "patch_size": "patch_size",
    "overlap": "roi_overlap",
}
TOOLTIPS = {
    "image": "The image whose patches are shown. Training uses the images chosen in the Train widget.",
    "stage": "Which training stage's selection to edit: stage 1 (N2V) and stage 2 (structN2V) have their own.",
    "use_roi": "On: the stage trains only on the selected patches. Off: on patches anywhere in the image.",
    "threshold": "Level (0-1, a quantile of the smoothed image) that separates background from structure. "
                 "With 'background' a higher threshold selects more patches; with 'structure' fewer.",
    "select_background": "Train on dark windows (background: pure noise, good for learning the noise) or on "
                         "bright ones (structure: good for learning to keep detail).",
    "suggest": "Set the threshold that best separates dark from bright windows (Otsu's method).",
    "scale_factor": "The image is shrunk by this factor and smoothed before windows are compared: smaller is "
                    "faster and ignores finer detail.",
    "patch_size": "Side of the square training patches in pixels (also set in the Train widget).",
    "overlap": "How much neighbouring candidate windows overlap: more overlap gives more, denser candidates.",
    "max_boxes": "Up to this many selected patches are drawn as individual boxes; more are drawn as the "
                 "outline of the area they cover, which stays fast and readable.",
    "show_map": "Overlay the smoothed, equalised map that the threshold is compared with.",
}


@dataclass
class _StageView:
    """What to show for one stage, computed off the main thread."""

    stage: str
    text: str
    warn: bool
    outline: Outline
    edge_width: float
    roi: RoiMap | None = None  # the preprocessed map, when it is to be shown


def _stage_view(stage: str, settings: StageConfig, plane: np.ndarray, name: str, max_boxes: int, seed,
                want_map: bool) -> _StageView:
    """Select the stage's patches on `plane` and describe them (no Qt, safe in a worker thread)."""
    label = STAGE_LABELS[stage]
    empty = Outline()
    try:
        settings.validate(label)
        check_image(plane, name, min_size=settings.patch_size, finite=False)  # roi_map scans it once
        if not settings.use_roi:
            return _StageView(stage, f"{label}: ROI selection is off; training takes patches anywhere in the image.",
                              False, empty, 1.0)
        corners = select_roi_patches(
            plane, patch_size=settings.patch_size, threshold=settings.roi_threshold,
            scale_factor=settings.scale_factor, select_background=settings.select_background,
            overlap=settings.roi_overlap, smoothing=settings.roi_smoothing, seed=seed,
        )
        total = count_windows(plane, settings.patch_size, settings.scale_factor, settings.roi_overlap,
                              settings.roi_smoothing)
        roi = roi_map(plane, settings.scale_factor, settings.roi_smoothing, settings.patch_size) if want_map else None
    except (InputError, ConfigError) as err:
        return _StageView(stage, str(err), True, empty, 1.0)
    outline = patch_outline(corners, settings.patch_size, max_boxes)
    text = f"{label}: {len(corners)} patches ({100.0 * len(corners) / total:.0f} % of the image)"
    if not outline.boxes and len(corners):
        text += ", outlined as the area they cover"
        if outline.block > 1:
            text += " (simplified)"
    edge_width = max(1.0, settings.patch_size / 32)
    if len(corners) >= FEW_PATCHES:
        return _StageView(stage, text, False, outline, edge_width, roi)
    if settings.select_background:
        hint = "raise the threshold, switch to 'structure'"
    else:
        hint = "lower the threshold, switch to 'background'"
    return _StageView(stage, f"{text}. Too few patches for training: {hint}, or untick 'use ROI selection'.",
                      True, outline, edge_width, roi)


def _stage_views(jobs: list[tuple]) -> list[_StageView]:
    return [_stage_view(*job) for job in jobs]


class RoiWidget(Container):
    """Choose the training patches of stage 1 and stage 2 and show them live over the image."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.settings = settings_for(viewer)
        warm_up()
        self._overlays: dict[str, Shapes] = {}
        self._map_layer: Image | None = None
        self._watched: Image | None = None
        self._loading = False
        self._closed = False
        self._pending: set[str] = set()
        self._job = None
        self._sync_refreshes = 0
        self.image = ComboBox(label="image", choices=self._image_layers)
        narrow_combo(self.image)
        self.stage = RadioButtons(
            label="stage", choices=[(label, stage) for stage, label in STAGE_LABELS.items()], value="stage1",
            orientation="vertical",
        )
        self.use_roi = CheckBox(text="use ROI selection")
        self.threshold = FloatSlider(label="threshold", min=0.0, max=1.0, step=0.01)
        self.select_background = RadioButtons(
            label="select", choices=(("background", True), ("structure", False)), orientation="vertical"
        )
        self.suggest = PushButton(text="Suggest threshold")
        self.scale_factor = FloatSpinBox(label="scale factor", min=0.05, max=1.0, step=0.05)
        self.patch_size = SpinBox(label="patch size", min=16, max=1024, step=8)
        self.overlap = FloatSpinBox(label="overlap", min=0.0, max=0.95, step=0.05)
        self.max_boxes = SpinBox(label="boxes up to", value=25, min=0, max=500, step=5)
        self.show_map = CheckBox(text="show preprocessed map")
        self.status = wrapping_label(NO_IMAGE)
        for name, tip in TOOLTIPS.items():
            getattr(self, name).tooltip = tip
        super().__init__(labels=False)
        main = Container(widgets=[self.image, self.stage, self.use_roi, self.threshold, self.select_background,
                                  self.suggest])
        main.margins = (0, 0, 0, 0)
        windows, _ = section("Candidate windows", [self.scale_factor, self.patch_size, self.overlap], expanded=False)
        display, _ = section("Display", [self.max_boxes, self.show_map], expanded=False)
        self.scroll = scrolling_dock(self, [main, windows, display, self.status])
        self.load_settings()
        self._update_thumbnails = qdebounced(self._refresh_thumbnails, timeout=THUMBNAIL_DELAY_MS,
                                             parent=self.native)

        for name, field in FIELDS.items():
            getattr(self, name).changed.connect(lambda value, field=field: self._store(field, value))
        self.stage.changed.connect(self._on_stage)
        self.image.changed.connect(self._on_image)
        self.max_boxes.changed.connect(lambda: self.request(self.stage.value))
        self.show_map.changed.connect(lambda: self.request(self.stage.value))
        self.suggest.changed.connect(self.suggest_threshold)
        self._connect_viewer(connect=True)
        self.native.destroyed.connect(self._on_destroyed)
        self.reset_choices()
        if active_input(viewer) is not None:  # the combo box starts on the first layer: show the active one
            self.image.value = active_input(viewer)
        self._watch(self._image_layer())
        self.refresh()  # the first drawing as the dock opens; later ones run in the background

    @property
    def stage_settings(self) -> StageConfig:
        """The StageConfig of the stage being edited (an object inside the shared Config)."""
        return getattr(self.settings, self.stage.value)

    @property
    def busy(self) -> bool:
        """Whether a selection is being computed or waits to be."""
        return self._job is not None or bool(self._pending)

    def reset_choices(self, *_) -> None:
        """Refresh the image list; when the chosen image is gone, choose the active one."""
        refresh_image_choice(self.image, self._viewer)

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
        """Ask for a redraw of these stages' patches, computed in a background thread.

        One computation runs at a time; requests made meanwhile are merged into the next one, so
        a moving slider is followed as fast as the selection can be computed.
        """
        self._pending.update(stages)
        if self._job is None:
            self._start_job()

    def refresh(self, stages: Iterable[str] = tuple(STAGE_LABELS)) -> None:
        """Recompute and redraw the patches of `stages` now, in this thread (scripts and tests)."""
        stages = sorted(set(stages))
        self._pending.difference_update(stages)
        self._sync_refreshes += 1
        layer = self._image_layer()
        if layer is None:
            self._show_nothing()
            return
        self._apply(layer, _stage_views(self._jobs(stages, layer)))
        self._refresh_thumbnails()

    def suggest_threshold(self) -> None:
        """Set the threshold to the Otsu level of the window means of the current slice."""
        layer = self._image_layer()
        if layer is None:
            self._show(NO_IMAGE)
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

    def _jobs(self, stages: list[str], layer: Image) -> list[tuple]:
        """Arguments of `_stage_view` per stage, with copies of the settings as they are now."""
        plane = self._current_plane(layer)
        return [
            (stage, copy.copy(getattr(self.settings, stage)), plane, layer.name, self.max_boxes.value,
             self.settings.seed, stage == self.stage.value and self.show_map.value)
            for stage in stages
        ]

    def _start_job(self) -> None:
        stages, self._pending = sorted(self._pending), set()
        layer = self._image_layer()
        if layer is None:
            self._show_nothing()
            return
        worker = create_worker(_stage_views, self._jobs(stages, layer), _start_thread=False)
        sync_refreshes = self._sync_refreshes
        worker.returned.connect(lambda views: self._on_views(layer, views, sync_refreshes))
        worker.finished.connect(self._on_job_finished)
        self._job = worker
        worker.start()

    def _on_views(self, layer: Image, views: list[_StageView], sync_refreshes: int) -> None:
        # a synchronous refresh since the job started has drawn newer settings already
        if self._closed or sync_refreshes != self._sync_refreshes or layer is not self._image_layer():
            return
        self._apply(layer, views)
        self._update_thumbnails()

    def _on_job_finished(self) -> None:
        self._job = None
        if self._pending and not self._closed:
            self._start_job()

    def _apply(self, layer: Image, views: list[_StageView]) -> None:
        """Hand computed views to the layers and the status line (main thread, a few milliseconds)."""
        for view in views:
            self._draw(view.stage, layer, view.outline, view.edge_width)
            if view.stage == self.stage.value:
                if view.roi is None:
                    self._remove_map()
                else:
                    self._update_map(layer, view.roi)
                self._show(view.text, view.warn)

    def _show_nothing(self) -> None:
        for overlay in self._live_overlays():
            overlay.data = []
        self._remove_map()
        self._show(NO_IMAGE)

    def _draw(self, stage: str, image: Image, outline: Outline, edge_width: float) -> None:
        """Show one stage's patches (boxes or the outline of their union) aligned with the image."""
        overlay = self._overlays.get(stage)
        if overlay not in self._live_overlays():
            if not outline.paths:
                return
            overlay = self._add_overlay(stage)
        place_like(overlay, image)
        draw_outline(overlay, outline, edge_width)

    def _add_overlay(self, stage: str) -> Shapes:
        overlay = mark_internal(Shapes(
            ndim=2, name=f"ROI patches {STAGE_LABELS[stage]}", edge_color=EDGE_COLOURS[stage],
            face_color="transparent",
        ))
        self._overlays[stage] = overlay
        add_quietly(self._viewer, overlay)
        return overlay

    def _refresh_thumbnails(self) -> None:
        for overlay in self._live_overlays():
            refresh_thumbnail(overlay)

    def _update_map(self, image: Image, result: RoiMap) -> None:
        scale = np.asarray(image.scale[-2:]) * result.factor
        translate = np.asarray(image.translate[-2:]) + (result.factor - 1) / 2 * np.asarray(image.scale[-2:])
        if self._map_layer not in self._viewer.layers:
            self._map_layer = mark_internal(Image(
                result.map, name=MAP_LAYER_NAME, colormap="magma", opacity=0.5, contrast_limits=(0, 1)
            ))
            add_quietly(self._viewer, self._map_layer)
            self._keep_on_top()
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
        return input_layers(self._viewer)

    def _image_layer(self) -> Image | None:
        layer = self.image.value
        return layer if layer in self._viewer.layers else None

    def _live_overlays(self) -> list[Shapes]:
        return [layer for layer in self._overlays.values() if layer in self._viewer.layers]

    def _keep_on_top(self, *_) -> None:
        """Keep the map, then the patch outlines, above images opened later."""
        if not self._closed:
            keep_on_top(self._viewer, [self._map_layer, *self._overlays.values()])

    def _keep_on_top_later(self, *_) -> None:
        later(self._keep_on_top)

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
            (self._viewer.layers.events.inserted, self._keep_on_top_later),
            (self._viewer.layers.events.removed, self._on_image),
            (self._viewer.dims.events.current_step, self._on_dims),
        ]:
            if connect:
                emitter.connect(callback)
            else:
                emitter.disconnect(callback)
        if not connect and self._watched is not None:
            self._watch(None)

    def _on_destroyed(self) -> None:
        self._closed = True
        self._connect_viewer(connect=False)

    def _on_stage(self) -> None:
        if self.stage.value == self._shown_stage:
            return
        self.load_settings()
        self.request(self.stage.value)

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

    def _show(self, text: str, warn: bool = False) -> None:
        set_status(self.status, text, warn)
