"""Helpers shared by the Train and Denoise widgets: input layers, output layers and user errors."""

from __future__ import annotations

import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from magicgui.widgets import SpinBox
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import QTimer

from ..core.axes import axes_choices, axes_from_labels
from ..core.config import ConfigError
from ..core.images import InputError
from ..core.model import ModelFileError
from ._overlay import Outline

INTERNAL = "napari-autostructn2v internal"
TURN_GAP_MS = 30  # longer than Qt's wait before it repaints a window (5 ms), so that a paint comes in between

OUT_OF_MEMORY = (
    "Out of memory. Lower the batch size or the patch size (training) or the tile size (denoising), "
    "close other programs, or choose device 'cpu' under advanced settings."
)


@dataclass
class Failed:
    """Yielded by a worker instead of raising, for errors the user can fix."""

    message: str


# the core's messages name Python arguments and fields; the widgets name their controls instead
GUI_PHRASES = (
    ("set use_roi=False to sample patches at random", "untick 'use ROI selection' in the ROI selection widget to "
     "train on patches anywhere in the image"),
    ("Denoise one channel at a time: pass image[..., c], or convert it to grey first (skimage.color.rgb2gray).",
     "Choose a single-channel image layer (split the channels first)."),
    (" Pass image[z] for a stack.", ""),
    ("2**network depth", "2^(network depth)"),
    ("Retrain with mask.whiten=False to export it", "Untick 'decorrelate filtered noise' in the advanced settings "
     "and train again to export it"),
    ("Retrain with mask.remove_banding=False to export it", "Untick 'remove line offsets (banding)' in the advanced "
     "settings and train again to export it"),
)
GUI_NAMES = {
    "roi_threshold": "threshold", "scale_factor": "scale factor", "roi_overlap": "overlap",
    "roi_smoothing": "ROI smoothing", "patch_size": "patch size", "batch_size": "batch size",
    "steps_per_epoch": "steps per epoch", "learning_rate": "learning rate", "mask_percent": "masked pixels (%)",
    "min_correlation": "min. correlation", "max_radius": "max. mask radius", "max_pixels": "max. mask pixels",
    "base_channels": "network width", "depth": "network depth", "source": "mask from",
}


def gui_words(message: str) -> str:
    """A core error message in the words of the GUI: control labels instead of argument and field names."""
    message = re.sub(r"\bstage([12])\.", r"stage \1 ", message)
    message = re.sub(r"\bmask\.(?=[a-z_]+ )", "", message)
    message = re.sub(r"\b(" + "|".join(GUI_NAMES) + r")\b", lambda match: GUI_NAMES[match.group(1)], message)
    for api, gui in GUI_PHRASES:
        message = message.replace(api, gui)
    return message


def user_message(error: BaseException) -> str | None:
    """What to tell the user about `error`, or None when it is a bug rather than a user error."""
    if isinstance(error, (InputError, ConfigError, ModelFileError)):
        return gui_words(str(error))
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    ):
        return OUT_OF_MEMORY
    return None


def layer_data(layer: Image):
    """The full-resolution data of an image layer; an RGB layer raises InputError."""
    if layer.rgb:
        raise InputError(
            f"Layer '{layer.name}' is an RGB image. Split it into channels first "
            "(right-click the layer > Split RGB) and choose one channel."
        )
    return layer.data[0] if layer.multiscale else layer.data


def layer_axes_choices(layer: Image | None, preferred: str | None = None) -> list[str]:
    """The axes an image layer may have, its axis labels' axes first (when they are letters such as z, y, x),
    else `preferred` (a model's training axes) when it fits, else the stack of planes."""
    if layer is None:
        return ["YX"]
    ndim = layer.ndim  # without the colour axis of an RGB layer, which training refuses with its own message
    labelled = axes_from_labels(layer.axis_labels)
    return axes_choices(ndim, labelled or (preferred if preferred and len(preferred) == ndim else None))


def offer_axes(combo, layer: Image | None, preferred: str | None = None, keep: bool = False) -> None:
    """Offer in `combo` the axes `layer` may have (`layer_axes_choices`) and choose the first; with `keep`,
    the current choice stays when it still fits."""
    chosen = combo.value
    choices = layer_axes_choices(layer, preferred)
    combo.choices = choices
    combo.value = chosen if keep and chosen in choices else choices[0]


def current_index(viewer, layer: Image) -> tuple[int, ...]:
    """The index of the 2D slice of `layer` shown at the viewer's current position (() for 2D)."""
    shape = layer_data(layer).shape[:-2]
    if not shape:
        return ()
    position = layer.world_to_data(viewer.dims.point)[: len(shape)]
    return tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(position, shape))


def warm_up() -> None:
    """Make a Shapes and a Labels layer once, off screen: napari imports what they need (pandas among it,
    about a second) the first time, and this should happen when a dock opens, not during training."""
    global _warm
    if not _warm:
        Shapes(ndim=2)
        Labels(np.zeros((3, 3), np.uint8))
        _warm = True


_warm = False


def mark_internal(layer):
    """Tag a layer this plugin made for display (preview, overlays, ACF, mask): never offered as an input."""
    layer.metadata[INTERNAL] = True
    return layer


def input_layers(viewer) -> list[Image]:
    """The image layers a widget may read: every image layer except this plugin's display layers."""
    return [layer for layer in viewer.layers if isinstance(layer, Image) and not layer.metadata.get(INTERNAL)]


def active_input(viewer) -> Image | None:
    """The active layer when it is a visible input image layer, else the top-most visible one (or None).

    A hidden layer is passed over: opening the sample makes its hidden clean reference active.
    """
    choices = input_layers(viewer)
    visible = [layer for layer in choices if layer.visible] or choices
    active = viewer.layers.selection.active
    if active in visible:
        return active
    return visible[-1] if visible else None


def refresh_image_choice(combo, viewer) -> None:
    """Refresh an image combo box; when its chosen image is gone, choose the active one."""
    chosen = combo.value
    combo.reset_choices()
    default = active_input(viewer)
    if default is not None and (chosen is None or chosen not in combo.choices):
        combo.value = default


def later(callback) -> None:
    """Run `callback` when the event loop is back: napari's layer list breaks if layers move while it inserts one."""
    QTimer.singleShot(0, callback)


def in_turns(steps, context, gap_ms: int = TURN_GAP_MS) -> None:
    """Call `steps` one after another, each `gap_ms` after the previous one returned, so that the viewer
    repaints and answers the user in between; the steps left are dropped when QObject `context` is deleted."""
    if not steps:
        return
    timer = QTimer(context)  # a child of `context`: deleted with it, before it fires
    timer.setSingleShot(True)

    def step() -> None:
        timer.deleteLater()
        steps[0]()
        in_turns(steps[1:], context, gap_ms)

    timer.timeout.connect(step)
    timer.start(gap_ms)


def keep_on_top(viewer, layers) -> None:
    """Move `layers` (those still in the viewer) above all others, keeping their order."""
    present = [layer for layer in layers if layer in viewer.layers]
    top = len(viewer.layers) - len(present)
    if not present or all(viewer.layers.index(layer) >= top for layer in present):
        return
    for layer in present:
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))


def place_like(layer, image: Image) -> None:
    """Give `layer` the 2D scale and translate of `image`, setting only what differs (each set redraws)."""
    for key in ("scale", "translate"):
        value = np.asarray(getattr(image, key)[-2:], float)
        if not np.array_equal(np.asarray(getattr(layer, key), float), value):
            setattr(layer, key, value)


def draw_outline(layer: Shapes, outline: Outline, edge_width: float) -> None:
    """Replace the shapes of `layer` with `outline` (a few paths or boxes) at `edge_width`.

    The layer's thumbnail is not redrawn here (that costs as much as the shapes themselves): the
    caller refreshes it later with `refresh_thumbnail`. The layer is refreshed once instead of at
    each step of napari's data setter, through napari's private `_block_refresh` when it exists.
    The layer's `data` event is not emitted: the viewer answers each one (two per set) by re-reading
    the extent of every layer, 10-30 ms, and an outline drawn inside its image never changes them.
    """
    block = getattr(layer, "_block_refresh", None)
    with layer.block_thumbnail_update(), layer.events.data.blocker(), (
            block() if block is not None else nullcontext()):
        layer.data = (outline.paths, [outline.shape_type] * len(outline.paths))
        if any(width != edge_width for width in layer.edge_width):
            layer.edge_width = edge_width
    if block is not None:
        layer.refresh(thumbnail=False)


def refresh_thumbnail(layer: Shapes) -> None:
    """Redraw the layer list thumbnail of a Shapes layer drawn by `draw_outline`."""
    layer.refresh(data_displayed=False, highlight=False, extent=False)


def show_image(viewer, data: np.ndarray, name: str, like: Image | None = None, offset=(0, 0), **kwargs) -> Image:
    """Put `data` in layer `name` (added or replaced), placed like `like` (shifted by `offset` pixels).

    Pass internal=False for a result the user works with (it is then offered as an input).
    """
    if like is not None:
        scale = np.asarray(like.scale[-data.ndim :], float)
        translate = np.asarray(like.translate[-data.ndim :], float)
        translate[-2:] += np.asarray(offset, float) * scale[-2:]
        kwargs.update(scale=scale, translate=translate)
    return show_layer(viewer, "image", data, name, **kwargs)


def show_denoised(viewer, result, source: Image) -> Image:
    """Put a denoised result in the user's layer '<source> denoised', placed and coloured like its source."""
    return show_image(viewer, result, f"{source.name} denoised", like=source, internal=False,
                      contrast_limits=source.contrast_limits, colormap=source.colormap.name)


LAYER_KINDS = {"image": Image, "labels": Labels}
UPDATED_IN_PLACE = ("scale", "translate", "contrast_limits", "opacity", "visible")


def show_layer(viewer, kind: str, data, name: str, internal: bool = True, **kwargs):
    """Update image or labels layer `name` in place, or add it (keeping the user's active layer).

    In place, only the data and the keyword arguments in `UPDATED_IN_PLACE` are set.
    """
    if name in viewer.layers:
        layer = viewer.layers[name]
        if type(layer).__name__.lower() == kind and layer.ndim == np.ndim(data):
            layer.data = data
            layer.metadata[INTERNAL] = internal
            for key in UPDATED_IN_PLACE:
                # each set redraws the layer and makes the viewer re-read every layer's extent, even unchanged
                if key in kwargs and not np.array_equal(np.asarray(getattr(layer, key)), np.asarray(kwargs[key])):
                    setattr(layer, key, kwargs[key])
            return layer
        viewer.layers.remove(layer)
    return add_quietly(viewer, LAYER_KINDS[kind](data, name=name, metadata={INTERNAL: internal}, **kwargs))


def _set_private(obj, name: str, value) -> bool:
    """Set napari's private attribute `name` of `obj`; False where napari refuses.

    napari warns (FutureWarning) that plugin widgets lose access to private attributes from 0.10
    on: there the AttributeError is taken and the caller does without.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            setattr(obj, name, value)
        except AttributeError:
            return False
    return True


def _skip_text(viewer, layer: Shapes) -> None:
    """Keep vispy from drawing the (empty) text of a Shapes layer shown in `viewer`'s window.

    Each Shapes visual renders nine glyphs in Python at its first paint, even without text (vispy's
    TextVisual, one font cache per visual): 0.1-0.5 s in software OpenGL. A viewer without a window,
    or a napari that refuses the private canvas mapping, draws the text as before.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # see `_set_private`
        try:
            text = viewer.window._qt_viewer.canvas.layer_to_visual[layer].node.text
        except (AttributeError, KeyError):
            return
    text.visible = False


def add_quietly(viewer, layer):
    """Add `layer` and leave the user's active layer (and its controls) as it is; a Shapes layer (the
    plugin's outlines, which have no text) is shown without vispy's text visual (`_skip_text`).

    napari activates a new layer, which rebuilds the layer controls and the selection twice (a
    third to three quarters of the cost of adding a layer): the layer list's private
    `_activate_on_insert` switch turns that off; where napari refuses it, the active layer is given back.
    """
    layers = viewer.layers
    active = layers.selection.active
    switched = _set_private(layers, "_activate_on_insert", False)
    try:
        viewer.add_layer(layer)
    finally:
        if switched:
            _set_private(layers, "_activate_on_insert", True)
    if active is not None and layers.selection.active is not active:
        layers.selection.active = active
    if isinstance(layer, Shapes):
        _skip_text(viewer, layer)
    return layer


# the smallest tile side offered besides 0 (automatic): on the control's grid of 32, and above what denoising
# accepts at every network depth offered (`check_tiling`: 2 * 32 + 2**4)
MIN_TILE = 96


def tile_size_box(maximum: int) -> SpinBox:
    """The tile side control (0: automatic), holding only sides that denoising accepts: a value between 0 and
    MIN_TILE moves on to MIN_TILE when it went up, and to 0 when it went down."""
    tile = SpinBox(label="tile size (0: auto)", value=0, min=0, max=maximum, step=32)
    last = tile.value

    def snap(value: int) -> None:
        nonlocal last
        if 0 < value < MIN_TILE:
            tile.value = MIN_TILE if value > last else 0  # calls `snap` again with that value
        else:
            last = value

    tile.changed.connect(snap)
    return tile
