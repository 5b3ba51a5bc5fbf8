"""Dock layout shared by the widgets: a scroll area of stable width, collapsible sections, a status line."""

from __future__ import annotations

from magicgui.widgets import Container, Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

DOCK_WIDTH = 380
STATUS_LINES = 3


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
    layout.setContentsMargins(6, 4, 6, 4)
    for part in parts:
        layout.addWidget(getattr(part, "native", part))
    layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidget(inner)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFixedWidth(width)
    dock.margins = (0, 0, 0, 0)
    dock.native.layout().addWidget(scroll)
    return scroll


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
    """Show `text` in a status label, in orange when it is a warning."""
    label.value = text
    label.native.setStyleSheet("color: #ffa500;" if warn else "")
