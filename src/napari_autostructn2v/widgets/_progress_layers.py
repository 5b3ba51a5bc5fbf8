"""The layers that show a training run: preview, patches in use, noise autocorrelation, mask, results.

Only hands ready data to layers (main thread); the worker computed it. The autocorrelation and the
mask appear as small insets at the top-left corner of the source image, where the user looks,
and stay above images opened later.

Adding a napari layer stalls the viewer (layer controls, visuals, shader set-up), so the layers are
added before training starts, one per turn of the event loop, as hidden placeholders of the right
shape and place, and training only replaces their data; a placeholder is first drawn when it is filled,
so that adding it and drawing it are stalls of their own. Placeholders a run never filled are removed
when it ends.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from napari.layers import Image, Labels, Shapes

from ..core.axes import layout
from ..core.training import preview_crop
from ._common import (
    LAYER_KINDS,
    add_quietly,
    current_index,
    draw_outline,
    in_turns,
    keep_on_top,
    later,
    mark_internal,
    place_like,
    refresh_thumbnail,
    show_image,
    show_layer,
)
from ._overlay import Outline
from ._train_worker import StageShown

PREVIEW_LAYER = "denoised preview"
ACF_LAYER = "noise autocorrelation"
MASK_LAYER = "structured mask"
PATCHES_LAYER = "patches in use"
STAGE_COLOURS = {1: "#00e5ff", 2: "#ff9f1a"}
# an image mask adds its colour where it is 1 and leaves the image beneath visible elsewhere, as labels do
MASK_LOOK = {"labels": {"opacity": 0.9},
             "image": {"opacity": 0.9, "colormap": "green", "contrast_limits": (0, 1), "blending": "additive"}}
INSET_FRACTION = 0.2  # an inset's side is this fraction of the source image's shorter side
INSET_MARGIN = 0.02


def preview_window(height: int, width: int, volume: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, left) and (height, width) of the crop that training previews (`preview_crop`) in a plane of this
    size, for a 3D network when `volume`: read off that crop of (zero-stride) views of the row and column numbers."""
    shape = (1, 1, height, width) if volume else (1, height, width)
    rows = preview_crop(np.broadcast_to(np.arange(height)[:, None], shape))
    columns = preview_crop(np.broadcast_to(np.arange(width), shape))
    return (int(rows.flat[0]), int(columns.flat[0])), rows.shape[-2:]


class ProgressLayers:
    """The display layers of one Train widget."""

    def __init__(self, viewer, context):
        """`context`: a QObject (the widget's) whose deletion cancels the steps of a run still being prepared."""
        self._viewer = viewer
        self._context = context
        self.sources: list[Image] = []
        self.preview_offset = (0, 0)
        self.axes: str | None = None
        self._stage: StageShown | None = None
        self._saved_view = None
        self._placeholders: dict[str, object] = {}  # name -> layer added empty at the start of the run
        self._mask_kind = "labels"

    def start(self, sources: list[Image], preview_offset: tuple[int, int], preview_shape: tuple[int, int],
              axes: str | None, inset_side: int, review: bool, then: list) -> None:
        """Begin a run on `sources` (of these axes), then call the steps in `then` (the last starts the training).

        The display layers that are missing are added first as empty, hidden placeholders with
        the shape and placement their data will have (`inset_side`: the side of the autocorrelation
        and mask arrays), so that filling them changes no extent; one per turn of the event loop, so
        that each addition is a stall of its own and the viewer answers in between.
        The mask is a Labels layer, which can be painted, only when it is to be reviewed (`review`):
        adding one costs twice as much as an image layer (napari's brush and polygon overlays).
        """
        self.sources, self.preview_offset, self._stage, self.axes = sources, preview_offset, None, axes
        self._placeholders = {}
        source = self.source()
        makers = {
            PREVIEW_LAYER: lambda: self.show_preview(np.zeros(preview_shape, np.float32), placeholder=True),
            ACF_LAYER: lambda: self.show_acf(np.zeros((inset_side,) * 2, np.float32), placeholder=True),
            MASK_LAYER: lambda: self.show_mask(np.zeros((inset_side,) * 2, np.uint8), placeholder=True),
            PATCHES_LAYER: lambda: self._add_patches_layer(STAGE_COLOURS[1], visible=False),
        }
        self._mask_kind = "labels" if review else "image"
        missing = [] if source is None else [name for name in makers if name not in self._viewer.layers or (
            name == MASK_LAYER and not isinstance(self._viewer.layers[name], LAYER_KINDS[self._mask_kind]))]
        steps = [partial(self._add_placeholder, makers[name]) for name in missing]
        if missing:
            steps.append(self.keep_on_top)
        in_turns([*steps, *then], self._context)

    def _add_placeholder(self, make) -> None:
        """Add one placeholder while the run's source image is still open."""
        if self.source() is not None:
            layer = make()
            self._placeholders[layer.name] = layer

    def finish(self) -> None:
        """Remove the placeholders that the run did not fill (it stopped early, or skipped a stage)."""
        for name, layer in self._placeholders.items():
            if name in self._viewer.layers and self._viewer.layers[name] is layer:
                self._viewer.layers.remove(layer)
        self._placeholders = {}

    def _shown(self, name: str, placeholder: bool) -> dict:
        """Whether layer `name` is drawn: not as a placeholder; from when data fills a placeholder (now filled)."""
        if placeholder:
            return {"visible": False}
        return {"visible": True} if self._placeholders.pop(name, None) is not None else {}

    def source(self) -> Image | None:
        """The first training image, while it is still in the viewer."""
        return self.sources[0] if self.sources and self.sources[0] in self._viewer.layers else None

    def layers(self) -> list:
        return [self._viewer.layers[name] for name in (PREVIEW_LAYER, ACF_LAYER, MASK_LAYER, PATCHES_LAYER)
                if name in self._viewer.layers]

    def keep_on_top(self, *_) -> None:
        """Keep the insets and the patch outline above images opened later (the preview stays where it is).

        Connected to the layer list's `inserted` event, it moves the layers once that event is over.
        """
        later(self._keep_on_top)

    def _keep_on_top(self) -> None:
        names = (ACF_LAYER, MASK_LAYER, PATCHES_LAYER)
        keep_on_top(self._viewer, [self._viewer.layers[name] for name in names if name in self._viewer.layers])

    def show_preview(self, image: np.ndarray, placeholder: bool = False) -> Image | None:
        """Show the denoised preview over its place in the source image (None once the source is closed)."""
        source = self.source()
        if source is None:
            return None
        created = PREVIEW_LAYER not in self._viewer.layers
        layer = show_image(self._viewer, image, PREVIEW_LAYER, like=source, offset=self.preview_offset,
                           contrast_limits=source.contrast_limits, colormap=source.colormap.name,
                           **self._shown(PREVIEW_LAYER, placeholder))
        if created:
            self.keep_on_top()
        return layer

    def show_stage(self, shown: StageShown) -> None:
        self._stage = shown
        self.draw_patches(create=True)

    def draw_patches(self, create: bool = False) -> None:
        """Outline the current stage's training patches on the slice in view (a removed layer stays removed)."""
        source = self.source()
        if self._stage is None or source is None or not (create or PATCHES_LAYER in self._viewer.layers):
            return
        index = current_index(self._viewer, source)
        outlines = self._stage.outlines
        outline = outlines[layout(source.data, self.axes).plane_number(index) if index else 0]
        colour = STAGE_COLOURS[self._stage.stage]
        if PATCHES_LAYER in self._viewer.layers:
            layer = self._viewer.layers[PATCHES_LAYER]
            if layer.metadata.get("colour") != colour:  # shapes drawn after clearing take the current colour
                draw_outline(layer, Outline(), 1.0)
                layer.current_edge_color = colour
        else:
            layer = self._add_patches_layer(colour)
        if self._placeholders.pop(PATCHES_LAYER, None) is not None:
            layer.visible = True
        layer.metadata["colour"] = colour
        place_like(layer, source)
        draw_outline(layer, outline, max(1.0, self._stage.patch_size / 32))
        refresh_thumbnail(layer)
        self.keep_on_top()

    def _add_patches_layer(self, colour: str, visible: bool = True) -> Shapes:
        source = self.source()
        layer = mark_internal(Shapes(ndim=2, name=PATCHES_LAYER, edge_color=colour, face_color="transparent",
                                     scale=source.scale[-2:], translate=source.translate[-2:], visible=visible))
        layer.metadata["colour"] = colour
        add_quietly(self._viewer, layer)
        return layer

    def show_mask_layers(self, acf: np.ndarray, canvas: np.ndarray) -> None:
        self.show_acf(acf)
        self.show_mask(canvas)
        self.keep_on_top()

    def show_acf(self, acf: np.ndarray, placeholder: bool = False) -> Image:
        """Show the noise autocorrelation in the first inset."""
        return show_layer(self._viewer, "image", acf, ACF_LAYER, colormap="magma", contrast_limits=(0.0, 1.0),
                          **self._inset(acf.shape[0], column=0), **self._shown(ACF_LAYER, placeholder))

    def show_mask(self, canvas: np.ndarray, placeholder: bool = False) -> Image | Labels:
        """Show a mask canvas (1 = masked): a Labels layer to paint on during a review, else an image."""
        look = MASK_LOOK[self._mask_kind]
        return show_layer(self._viewer, self._mask_kind, canvas, MASK_LAYER, **look,
                          **self._inset(canvas.shape[0], column=1), **self._shown(MASK_LAYER, placeholder))

    def mask_canvas(self) -> np.ndarray | None:
        if MASK_LAYER in self._viewer.layers and MASK_LAYER not in self._placeholders:
            return np.asarray(self._viewer.layers[MASK_LAYER].data)
        return None

    def focus_review(self) -> None:
        """Zoom onto the insets and make the mask layer active, so that it can be painted; `restore_view` undoes it."""
        if MASK_LAYER not in self._viewer.layers or ACF_LAYER not in self._viewer.layers:
            return
        camera = self._viewer.camera
        self._saved_view = (tuple(camera.center), camera.zoom, self._viewer.layers.selection.active)
        extents = np.concatenate([np.asarray(self._viewer.layers[name].extent.world)[:, -2:]
                                  for name in (ACF_LAYER, MASK_LAYER)])
        low, high = extents.min(axis=0), extents.max(axis=0)
        source = self.source()
        if source is not None:
            image = np.asarray(source.extent.world)[:, -2:]
            # the insets fill about as much of the canvas as the whole image did
            camera.zoom = camera.zoom * 0.8 * float(np.min((image[1] - image[0]) / (high - low)))
        camera.center = (*tuple(camera.center)[:-2], *((low + high) / 2))
        self._viewer.layers.selection.active = self._viewer.layers[MASK_LAYER]

    def restore_view(self) -> None:
        if self._saved_view is None:
            return
        center, zoom, active = self._saved_view
        self._saved_view = None
        self._viewer.camera.center, self._viewer.camera.zoom = center, zoom
        if active in self._viewer.layers:
            self._viewer.layers.selection.active = active

    def refresh_thumbnails(self) -> None:
        if PATCHES_LAYER in self._viewer.layers:
            refresh_thumbnail(self._viewer.layers[PATCHES_LAYER])

    def _inset(self, size: int, column: int) -> dict:
        """Scale and translate that show a (size, size) array inside the source image's top-left corner."""
        source = self.source()
        if source is None:
            return {}
        extent = np.asarray(source.extent.world)[:, -2:]
        side = float(np.min(extent[1] - extent[0]))
        pixel = INSET_FRACTION * side / size
        margin = INSET_MARGIN * side
        top = extent[0, 0] + margin + pixel / 2
        left = extent[0, 1] + margin + column * (size * pixel + margin) + pixel / 2
        return {"scale": (pixel, pixel), "translate": (top, left)}
