"""The Train widget's settings controls: the grid of per-stage budgets, the Config field each control edits
and the tooltips of the widget's controls."""

from __future__ import annotations

from magicgui.widgets import Container, FloatSpinBox, Label, SpinBox
from qtpy.QtWidgets import QAbstractSpinBox

from ..core.training import PREVIEW_SHARE
from ._common import MIN_TILE

STAGE_NAMES = {1: "stage 1 (N2V)", 2: "stage 2 (structN2V)"}
# row label, StageConfig field, control factory, tooltip
STAGE_FIELDS = (
    ("epochs", "epochs", lambda: SpinBox(min=0, max=100000),
     "Passes over the stage's budget; 0 skips the stage. More epochs train longer and usually better."),
    ("steps per epoch", "steps_per_epoch", lambda: SpinBox(min=1, max=100000),
     "Optimisation steps (batches) per epoch; the validation loss is measured after each epoch."),
    ("batch size", "batch_size", lambda: SpinBox(min=1, max=4096),
     "Patches per step: larger is smoother but needs more memory."),
    ("learning rate", "learning_rate", lambda: FloatSpinBox(min=1e-6, max=1.0, step=1e-4),
     "Step size of the optimiser (Adam), lowered along a cosine schedule; too high makes training unstable."),
    ("patch size", "patch_size", lambda: SpinBox(min=16, max=1024, step=8),
     "Side of the square training patches in pixels (a multiple of 2^network depth)."),
)
# advanced control name -> (Config path, ...): one control may set the same field in both stages
ADVANCED_FIELDS = {
    "n2v2": ("stage1.n2v2", "stage2.n2v2"),
    "mask_percent": ("stage1.mask_percent", "stage2.mask_percent"),
    "mask_source": ("mask.source",),
    "significance": ("mask.significance",),
    "min_correlation": ("mask.min_correlation",),
    "max_radius": ("mask.max_radius",),
    "whiten": ("mask.whiten",),
    "recorrupt": ("mask.recorrupt",),
    "remove_banding": ("mask.remove_banding",),
    "base_channels": ("base_channels",),
    "depth": ("depth",),
    "network": ("network",),
    "patch_depth": ("patch_depth",),
    "separate_channels": ("separate_channels",),
    "seed": ("seed",),
    "device": ("device",),
}
TOOLTIPS = {
    "images": "The image layers to train on (2D or stacks); at the end each gets a denoised copy. "
              "Ctrl/Cmd-click to choose several.",
    "axes": "What the axes before Y, X are (from the layer's axis labels when they are letters): S a stack of "
            "independent planes, T time, C channels (each with its own normalisation and mask), Z planes of a volume.",
    "network": "2d denoises every plane on its own; 3d trains a 3D network on volumes (axes with Z), which sees "
               "the neighbouring planes.",
    "patch_depth": "Planes per training patch of the 3D network (a multiple of 2^network depth).",
    "separate_channels": "With channels (axes with C): a separate network per channel instead of one network "
                         "with a channel per image channel.",
    "n2v2": "N2V2: blur pooling and median-filled blind spots, against checkerboard artefacts.",
    "mask_percent": "Share of pixels hidden (blind spots) in each patch per step.",
    "mask_source": "Estimate the structured mask from the image itself, or from the residual of stage 1 "
                   "(image minus its denoised version: closer to the pure noise).",
    "significance": "How far above the noise level a correlation must be to be masked: higher masks fewer pixels.",
    "min_correlation": "Smallest noise correlation that is masked: lower masks more pixels.",
    "max_radius": "Farthest offset (pixels) from the centre that the mask may reach.",
    "whiten": "When the noise is correlated along rows or columns as a PMT's filter makes it (the correlation "
              "falling by the same factor at each pixel), train on the image decorrelated along that line instead "
              "of masking it, and colour the result back. Untick to mask the line (needed for a bioimage.io export).",
    "recorrupt": "When the noise is additive (as strong in bright parts as in dark ones, on an image with enough "
                 "contrast to tell) and correlated over a short reach, train on recorrupted pairs made with its "
                 "measured covariance instead of blind spots: the network sees every pixel. Untick to train with "
                 "the structured blind spot.",
    "remove_banding": "When every row (or column) carries an offset of its own, as an sCMOS camera's read-out can "
                      "add, remove these offsets from the image before training and denoising: no blind-spot mask "
                      "reaches along a whole line. Untick to keep them (needed for a bioimage.io export).",
    "base_channels": "Feature channels of the first U-Net level: wider learns more and runs slower.",
    "depth": "Levels of the U-Net: deeper sees larger context; the patch size must be a multiple of 2^depth.",
    "seed": "Seed of the random numbers: the same seed and settings give the same model; -1 picks one at random.",
    "device": "Where the network runs: auto takes a GPU when there is one.",
    "preview_every": "Refresh the 'denoised preview' layer every this many steps. Each refresh costs time, so a "
                     f"refresh is skipped while refreshes have taken over {PREVIEW_SHARE:.0%} of the training time.",
    "tile_size": "Tile side for denoising the images at the end: larger is faster and needs more memory. "
                 "0 (automatic) takes the network's default: 512 for the 2D network, 96 for the 3D one; "
                 f"any other side is at least {MIN_TILE}.",
    "review": "Pause after stage 1 to check the detected structured mask, change or paint it, then continue.",
    "start_button": "Train stage 1, estimate the mask, train stage 2, then denoise the chosen images.",
    "stop_button": "First press: end training at the next step, keeping the best model so far. "
                   "Second press (or during the final denoising): skip the denoising.",
    "model_path": "The .pt file to save the trained model to.",
    "save_button": "Save the trained model (one .pt file) for the Denoise widget or the command line.",
    "package_path": "The .zip file to write the bioimage.io model package to.",
    "export_button": "Export the trained model as a bioimage.io package (.zip) for other tools (bioimage.io, "
                     "deepImageJ, ...), with the first chosen image as its example.",
}
GRID_LABEL_PADDING = 9


def stage_grid(controls: dict[tuple[int, str], object]) -> Container:
    """The budget grid, a column per stage and a row per field of STAGE_FIELDS; fills `controls`
    ((stage, field) -> control)."""
    texts = [text for text, *_ in STAGE_FIELDS]
    header = Label(value="")
    # the row labels wrap at word boundaries, so that the grid fits a narrow dock
    width = max(header.native.fontMetrics().horizontalAdvance(word) for text in texts for word in text.split())
    width += GRID_LABEL_PADDING
    rows = [_row(header, width, Label(value="stage 1"), Label(value="stage 2"))]
    for text, field, factory, tip in STAGE_FIELDS:
        row = []
        for stage in (1, 2):
            control = controls[stage, field] = factory()
            control.tooltip = f"{STAGE_NAMES[stage]}: {tip}"
            # no step buttons: the digits keep the room in a narrow dock (arrow keys and the wheel step)
            control.native.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
            row.append(control)
        label = Label(value=text)
        label.tooltip = tip
        rows.append(_row(label, width, *row))
    grid = Container(labels=False, widgets=rows)
    grid.margins = (0, 0, 0, 0)
    return grid


def _row(label: Label, width: int, *controls) -> Container:
    label.native.setFixedWidth(width)
    label.native.setWordWrap(True)
    row = Container(layout="horizontal", labels=False, widgets=[label, *controls])
    row.margins = (0, 0, 0, 0)
    return row


def show_settings(settings, stage_controls: dict, controls: dict) -> None:
    """Show the Config's values in the per-stage controls and in `controls` (ADVANCED_FIELDS name -> control)."""
    for (stage, field), control in stage_controls.items():
        control.value = getattr(getattr(settings, f"stage{stage}"), field)
    for name, paths in ADVANCED_FIELDS.items():
        value = _get(settings, paths[0])
        controls[name].value = -1 if name == "seed" and value is None else value


def store_setting(settings, paths: tuple[str, ...], value) -> None:
    """Set the Config fields at `paths` (dotted) to a control's value (a negative seed: None, random)."""
    if paths == ("seed",) and value < 0:
        value = None
    for path in paths:
        _set(settings, path, value)


def _get(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _set(config, path: str, value) -> None:
    *parents, name = path.split(".")
    for part in parents:
        config = getattr(config, part)
    setattr(config, name, value)
