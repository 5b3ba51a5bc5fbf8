"""Screenshot of the ROI selection widget over the sample, for the README.

Run from the repository root on a display (headless: `xvfb-run -a python3 scripts/screenshot_roi.py`);
writes docs/images/roi_widget.png.
"""

from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication
from skimage.io import imsave

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "roi_widget.png"


def main() -> None:
    viewer = napari.Viewer(title="napari-autostructn2v: ROI selection")
    viewer.window.resize(1280, 1024)
    viewer.open_sample("napari-autostructn2v", "structured_noise")
    _, widget = viewer.window.add_plugin_dock_widget("napari-autostructn2v", "ROI selection")
    widget.image.value = viewer.layers["structured noise sample"]
    widget.stage.value = "stage2"
    widget.use_roi.value = True
    widget.threshold.value = 0.7
    widget.stage.value = "stage1"
    widget.threshold.value = 0.35
    widget.refresh()
    viewer.layers.selection.active = viewer.layers["structured noise sample"]
    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()  # once the docks have their size, so that the whole image is in view
    for _ in range(5):
        QApplication.processEvents()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    imsave(OUTPUT, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    viewer.close()


if __name__ == "__main__":
    main()
