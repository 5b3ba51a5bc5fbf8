"""A small live plot of the training and validation loss per epoch, drawn with QPainter.

matplotlib is not a napari dependency, so the plot is drawn directly instead of adding one.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

SERIES = (("train", "#4fc3f7"), ("validation", "#ffb74d"))
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 10, 22, 20


class LossPlot(QWidget):
    """Train and masked validation loss per epoch of both stages, on a log scale."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[int, float, float]] = []
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self) -> None:
        self.points = []
        self.update()

    def add(self, stage: int, train_loss: float, val_loss: float) -> None:
        self.points.append((stage, train_loss, val_loss))
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().windowText().color()
        area = QRectF(self.rect()).adjusted(MARGIN_LEFT, MARGIN_TOP, -MARGIN_RIGHT, -MARGIN_BOTTOM)
        faint = QColor(text)
        faint.setAlpha(90)
        painter.setPen(QPen(faint, 1))
        painter.drawRect(area)
        self._draw_legend(painter, text)
        if not self.points:
            painter.setPen(text)
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss per epoch appears here")
            return
        logs = [math.log10(max(v, 1e-12)) for _, train, val in self.points for v in (train, val)]
        low, high = min(logs), max(logs)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        count = len(self.points)

        def point(index: int, value: float) -> QPointF:
            x = area.left() + (index + 0.5) / count * area.width()
            y = area.bottom() - (math.log10(max(value, 1e-12)) - low) / (high - low) * area.height()
            return QPointF(x, y)

        painter.setPen(text)
        painter.drawText(QRectF(0, area.top() - 8, MARGIN_LEFT - 4, 16), Qt.AlignmentFlag.AlignRight, f"{10**high:.2g}")
        painter.drawText(QRectF(0, area.bottom() - 8, MARGIN_LEFT - 4, 16), Qt.AlignmentFlag.AlignRight, f"{10**low:.2g}")
        painter.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), MARGIN_BOTTOM),
                         Qt.AlignmentFlag.AlignCenter, f"epoch (both stages, {count} in all)")
        for index in range(1, count):
            if self.points[index][0] != self.points[index - 1][0]:
                x = area.left() + index / count * area.width()
                painter.setPen(QPen(faint, 1, Qt.PenStyle.DashLine))
                painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
                painter.setPen(text)
                painter.drawText(QPointF(x + 3, area.top() + 12), f"stage {self.points[index][0]}")
        for column, (_, colour) in enumerate(SERIES, start=1):
            pen = QPen(QColor(colour), 2)
            painter.setPen(pen)
            path = QPainterPath()
            for index, values in enumerate(self.points):
                where = point(index, values[column])
                if index:
                    path.lineTo(where)
                else:
                    path.moveTo(where)
                painter.drawEllipse(where, 2.5, 2.5)
            painter.drawPath(path)

    def _draw_legend(self, painter: QPainter, text: QColor) -> None:
        x = MARGIN_LEFT
        for name, colour in SERIES:
            painter.setPen(QPen(QColor(colour), 3))
            painter.drawLine(QPointF(x, 11), QPointF(x + 16, 11))
            painter.setPen(text)
            painter.drawText(QPointF(x + 20, 15), f"{name} loss")
            x += 110
