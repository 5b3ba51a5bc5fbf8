"""Dock layout shared by the widgets: a scroll area of stable width, collapsible sections, a status line,
and a bar in napari's activity dock."""

from __future__ import annotations

import time

from magicgui.widgets import Container, Label
from napari.utils import progress
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFrame, QLayout, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

DOCK_WIDTH = 280  # napari's own left dock takes about 346 px: three docks leave the canvas half of a 1280 px window
STATUS_LINES = 3
ACTIVITY_INTERVAL_S = 1.0


class Activity:
    """A bar in napari's activity dock (`napari.utils.progress`), updated at most once a second.

    napari's bar runs the Qt event loop (`processEvents`) at every change, so updating it at every
    training step would process pending events, canvas repaints included, inside our handlers.
    """

    def __init__(self):
        self._bar: progress | None = None
        self._key = None
        self._last = 0.0

    def show(self, key, total: int, description: str) -> None:
        """Show `description` and `total` for `key` (a run, an image) in the bar (made once: each costs)."""
        if self._bar is not None and self._key == key:
            return
        # napari's bar processes events at each change, so other handlers (close) may run in between
        bar, self._key, self._last = self._bar, key, time.monotonic()
        if bar is None:
            self._bar = progress(total=total, desc=description)
            return
        bar.n = 0
        bar.total = total
        bar.set_description(description)

    def set(self, value: int, total: int | None = None) -> None:
        if self._bar is None:
            return
        now = time.monotonic()
        final = total is not None and value >= total
        if now - self._last < ACTIVITY_INTERVAL_S and not final:
            return
        self._last, bar = now, self._bar
        if total is not None and total != bar.total:
            bar.total = total
        bar.update(value - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._key = None, None


def section(title: str, widgets: list, expanded: bool = True, labels: bool = True) -> tuple[QCollapsible, Container]:
    """A collapsible section (title bar with an arrow) holding a magicgui Container of `widgets`."""
    body = Container(widgets=widgets, labels=labels)
    body.margins = (0, 0, 0, 0)
    collapsible = QCollapsible(title)
    collapsible.setDuration(0)
    collapsible.addWidget(body.native)
    collapsible.layout().setContentsMargins(0, 0, 0, 0)
    if expanded:
        collapsible.expand(animate=False)
    return collapsible, body


def scrolling_dock(dock: Container, parts: list, width: int = DOCK_WIDTH) -> QScrollArea:
    """Put `parts` (magicgui widgets or Qt widgets) in a vertical scroll area inside the empty Container `dock`.

    The scroll area has a fixed width, so that long text (a mask, a message) wraps or is clipped
    instead of widening the dock and shrinking the canvas; it scrolls when the dock is too short.
    """
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(4, 4, 4, 4)
    for part in parts:
        layout.addWidget(getattr(part, "native", part))
    layout.addStretch(1)
    # the content never shrinks below what its controls need: the rest is reached by scrolling
    layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
    scroll = QScrollArea()
    scroll.setWidget(inner)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFixedWidth(width)
    dock.margins = (0, 0, 0, 0)
    dock.native.layout().addWidget(scroll)
    return scroll


def narrow_combo(combo, characters: int = 10) -> None:
    """Keep a combo box from widening its dock to fit a long choice (a layer name): it is cut instead."""
    combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(characters)


def wrapping_label(text: str = "", lines: int = STATUS_LINES, monospace: bool = False) -> Label:
    """A left-aligned label that wraps, never widens its dock, and keeps room for `lines` lines (no jumping)."""
    label = Label(value=text)
    native = label.native
    native.setWordWrap(True)
    native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    if monospace:
        native.setStyleSheet("font-family: monospace;")
    native.setMinimumHeight(lines * native.fontMetrics().lineSpacing() + 4)
    return label


def set_status(label: Label, text: str, warn: bool = False) -> None:
    """Show `text` in a status label, in orange when it is a warning (the style is set only when that changes:
    restyling a widget costs tens of milliseconds)."""
    label.value = text
    if label.native.property("warn") != warn:
        label.native.setProperty("warn", warn)
        label.native.setStyleSheet("color: #ffa500;" if warn else "")
