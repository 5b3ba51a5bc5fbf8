"""Screenshot of the Train widget during stage 2: preview, mask layers, patch overlay and loss plot.

Run headless with: xvfb-run -a python3 scripts/screenshot_training.py [output.png]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from imageio.v3 import imwrite
from qtpy.QtWidgets import QApplication

from napari_autostructn2v._sample_data import structured_noise_sample
from napari_autostructn2v.widgets._session import settings_for
from napari_autostructn2v.widgets.train import PREVIEW_LAYER, TrainWidget

OUTPUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "docs/images/training.png"


def wait_for(condition, timeout: float = 300.0) -> None:
    app, start = QApplication.instance(), time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("training did not reach the screenshot point in time")
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    viewer = napari.Viewer(title="autoStructN2V")
    viewer.window.resize(1280, 1024)
    data, kwargs, _ = structured_noise_sample()[0]
    viewer.add_image(data, **kwargs)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train", area="right")
    for stage, epochs in ((1, 4), (2, 8)):
        for field, value in dict(epochs=epochs, steps_per_epoch=12, batch_size=8, patch_size=64).items():
            widget._stage_controls[stage, field].value = value
    widget.preview_every.value = 6
    settings_for(viewer).stage2.use_roi = True  # stage 2 on structure-rich patches, as set in the ROI widget
    widget.start()
    wait_for(lambda: len(widget.loss_plot.points) >= 7 and PREVIEW_LAYER in viewer.layers)
    viewer.layers[PREVIEW_LAYER].visible = True
    viewer.layers[kwargs["name"]].visible = False
    viewer.reset_view()
    wait_for(lambda: True)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    imwrite(OUTPUT, viewer.screenshot(canvas_only=False, flash=False))
    widget.stop()
    wait_for(lambda: not widget.running)
    viewer.close()


if __name__ == "__main__":
    main()
