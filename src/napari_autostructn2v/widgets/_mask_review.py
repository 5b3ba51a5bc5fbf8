"""The mask review between the stages: keep the detected structN2V mask, pick a preset, or paint one; its steps
in the Train widget (`MaskReviewSteps`)."""

from __future__ import annotations

import dataclasses

import numpy as np
from magicgui.widgets import ComboBox, PushButton, SpinBox

from ..core.images import InputError
from ..core.mask import PRESETS, MaskEstimate, check_mask, crop_mask, embed_mask, preset_mask
from ..core.training import MaskEstimated

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


class MaskReviewSteps:
    """The review's steps in the Train widget, mixed into it: show each channel's estimate, follow the
    review's controls, and continue with the chosen mask. They use the widget's `mask_review`, `review_panel`,
    `mask_text`, `layers`, `running`, `_runs`, `_stopping`, `_show` and `_fail`, and keep the estimate under
    review in `_mask_event` and the text of each channel's mask in `_mask_texts`."""

    def continue_training(self) -> None:
        """Start stage 2 with the mask shown in the 'structured mask' layer."""
        if self._mask_event is None or not self.running or self._runs[0].resume is None:
            return
        try:
            mask = mask_from_canvas(self._mask_canvas())
        except InputError as error:
            self._fail(str(error))
            return
        self._mask_event.mask = mask
        self._mask_texts[self._mask_event.channel] = describe(self.mask_review.estimate, mask, "chosen for stage 2")
        self._show_mask_texts(self._mask_event)
        self.review_panel.visible = False
        self.layers.restore_view()
        self._runs[0].resume.set()

    def _on_mask(self, event: MaskEstimated) -> None:
        """Show one channel's estimate (one event per channel); with the review on, wait for its mask."""
        self._mask_event = event
        self.mask_review.start(event.estimate)
        size = event.estimate.acf.shape[0]
        self.layers.show_mask_layers(event.estimate.acf, mask_canvas(event.estimate.mask, size))
        self._mask_texts = {} if event.channel == 0 else self._mask_texts
        self._mask_texts[event.channel] = describe(event.estimate, event.estimate.mask, event.estimate.reason)
        self._show_mask_texts(event)
        if self._runs and self._runs[0].resume is not None and not self._stopping:
            self.review_panel.visible = True
            self.layers.focus_review()
            which = f" of channel {event.channel} ({event.channel + 1} of {event.channels})" if event.channels > 1 else ""
            self._show(f"Review the mask{which}: edit the 'structured mask' layer (shown at the image's top-left "
                       "corner) or pick a preset, then press 'Continue with this mask'.")

    def _show_mask_texts(self, event: MaskEstimated) -> None:
        """The masks of the channels so far, one block per channel."""
        if event.channels == 1:
            self.mask_text.value = self._mask_texts[0]
        else:
            self.mask_text.value = "\n".join(f"channel {c}: {text}" for c, text in sorted(self._mask_texts.items()))

    def _mask_canvas(self) -> np.ndarray:
        canvas = self.layers.mask_canvas()
        return self.mask_review.canvas() if canvas is None else canvas

    def _show_choice(self, *_) -> None:
        if self.mask_review.estimate is None:
            return
        self.layers.show_mask(self.mask_review.canvas())
        self.mask_text.value = describe(self.mask_review.estimate, self.mask_review.choice(),
                                        self.mask_review.preset.value)
