"""The mask review between the stages: keep the detected structN2V mask, pick a preset, or paint one."""

from __future__ import annotations

import dataclasses

import numpy as np
from magicgui.widgets import ComboBox, PushButton, SpinBox

from ..core.mask import PRESETS, MaskEstimate, check_mask, crop_mask, embed_mask, preset_mask

TOOLTIPS = {
    "preset": "The mask stage 2 uses: the one detected from the noise, or a line or cross of 'span' pixels. "
              "You can also paint the 'structured mask' layer.",
    "span": "Length in pixels of a preset mask (odd).",
    "continue_button": "Start stage 2 with the mask shown in the 'structured mask' layer.",
}


def mask_canvas(mask: np.ndarray, size: int) -> np.ndarray:
    """`mask` centred in a (size, size) uint8 labels array (1 = masked)."""
    return embed_mask(mask.astype(np.uint8), size // 2)


def mask_from_canvas(canvas: np.ndarray) -> np.ndarray:
    """The smallest odd square around the canvas centre holding all painted pixels; the centre is always set."""
    mask = np.asarray(canvas) > 0
    mask[mask.shape[0] // 2, mask.shape[1] // 2] = True
    return check_mask(crop_mask(mask))


def describe(estimate: MaskEstimate, mask: np.ndarray, reason: str) -> str:
    """The mask as text ('#' masked, '.' not), with why it was chosen."""
    return f"structN2V mask ({reason}):\n{dataclasses.replace(estimate, mask=mask).as_text()}"


class MaskReview:
    """Controls of the review panel and the estimate under review."""

    def __init__(self):
        self.preset = ComboBox(label="mask", choices=("detected", *PRESETS))
        self.span = SpinBox(label="span", value=5, min=1, max=25, step=2)
        self.continue_button = PushButton(text="Continue with this mask")
        for name, tip in TOOLTIPS.items():
            getattr(self, name).tooltip = tip
        self.estimate: MaskEstimate | None = None

    @property
    def widgets(self) -> list:
        return [self.preset, self.span, self.continue_button]

    def start(self, estimate: MaskEstimate) -> None:
        """Review `estimate`: the detected mask is preselected."""
        self.estimate = estimate
        self.span.max = estimate.acf.shape[0]
        self.preset.value = "detected"

    def clear(self) -> None:
        self.estimate = None

    def choice(self) -> np.ndarray:
        """The mask the controls name (the detected one or a preset)."""
        if self.preset.value == "detected":
            return self.estimate.mask
        return preset_mask(self.preset.value, self.span.value)

    def canvas(self) -> np.ndarray:
        return mask_canvas(self.choice(), self.estimate.acf.shape[0])
