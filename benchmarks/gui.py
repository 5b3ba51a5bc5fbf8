"""GUI latency benchmark: how fast the ROI overlay follows the threshold, and how long the viewer freezes.

Run headless from the repository root:

    xvfb-run -a python -m benchmarks.gui [--quick]

1. Threshold change to overlay drawn, in a real viewer (1280x1024 window) at each image size: the
   slider value is set, and the time is taken when the overlay layer holds the new selection
   ("updated") and when the canvas has been painted with it ("painted"), and how long the main thread
   spent handing the result to the layer ("main thread"; the rest is the background computation and
   Qt redrawing the window). The same run measures the previous code path (up to 1000 rectangles
   computed and set on the main thread) on the same viewer.
2. Main-thread stalls: a 10 ms QTimer ticks while the Train widget trains and denoises (a 2048x2048
   image, a 20 x 2048 x 2048 stack; tiny budgets) and while the Denoise widget denoises them. A stall is
   a gap between ticks beyond the 10 ms; its p99 and maximum are reported, with what the widget said
   when the longest one ended and where the main thread was meanwhile. Before them, the same probe
   measures napari alone adding a 2048² image layer and refilling it: the floor no plugin goes below here.
3. Layout: the ROI, Train (advanced settings open) and Denoise docks in a 1280x1024 window: the
   canvas width, and whether every dock's controls fit its width and are reachable by scrolling
   (`--screenshot PATH` saves a picture of it).

It prints markdown tables and writes benchmarks/results/gui.json.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import napari
import numpy as np
from imageio.v3 import imwrite
from napari.layers import Image
from qtpy.QtCore import QEventLoop, Qt, QTimer
from qtpy.QtWidgets import QApplication

from napari_autostructn2v.core.roi import count_windows, select_roi_patches
from napari_autostructn2v import widgets
from napari_autostructn2v.core.sample import clean_image, structured_noise
from napari_autostructn2v.widgets._common import add_quietly
from napari_autostructn2v.widgets.denoise import DenoiseWidget
from napari_autostructn2v.widgets.roi import RoiWidget
from napari_autostructn2v.widgets.train import TrainWidget

from ._common import markdown_table, write_json

THRESHOLDS = (0.35, 0.45, 0.55, 0.65, 0.5, 0.4, 0.6, 0.3)
OLD_MAX_PATCHES = 1000  # the "max patches shown" default of the previous code path
PROBE_MS = 10
WINDOW = (1280, 1024)
TIMEOUT_S = 1800
WATCHDOG_S = 0.02


def sample(size: int, seed: int = 0) -> np.ndarray:
    """A fluorescence-like float32 image with row-correlated noise; 8192 tiles a 2048 image (generation is slow)."""
    base = min(size, 2048)
    clean = clean_image((base, base), seed)
    if size > base:
        clean = np.tile(clean, (size // base, size // base))
    return clean + structured_noise(clean.shape, "horizontal", 0.1, seed=seed + 1)


def process_until(condition, timeout: float = TIMEOUT_S) -> None:
    """Run the Qt event loop until `condition()` holds (checked every 2 ms; the main thread idles meanwhile,
    as in napari, instead of holding the interpreter lock in a busy loop)."""
    if condition():
        return
    loop, start = QEventLoop(), time.perf_counter()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)

    def check() -> None:
        if condition() or time.perf_counter() - start > timeout:
            loop.quit()

    timer.timeout.connect(check)
    timer.start(2)
    loop.exec()
    timer.stop()
    if not condition():
        raise TimeoutError("the viewer did not reach the expected state in time")


class PaintWatch:
    """Records when the viewer's canvas was last painted."""

    def __init__(self, viewer):
        self.last = 0.0
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(self._on_draw)

    def _on_draw(self, _event) -> None:
        self.last = time.perf_counter()


def _old_update(widget: RoiWidget, image, overlay, threshold: float) -> None:
    """The previous code path, on the main thread: select, count, cap at 1000 and set them as rectangles."""
    settings = widget.stage_settings
    settings.roi_threshold = threshold
    plane = image.data
    arguments = dict(patch_size=settings.patch_size, threshold=threshold, scale_factor=settings.scale_factor,
                     select_background=settings.select_background, overlap=settings.roi_overlap,
                     smoothing=settings.roi_smoothing, seed=0)
    len(select_roi_patches(plane, **arguments))
    count_windows(plane, settings.patch_size, settings.scale_factor, settings.roi_overlap, settings.roi_smoothing)
    corners = select_roi_patches(plane, max_patches=OLD_MAX_PATCHES, **arguments)
    square = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], float) * settings.patch_size
    boxes = corners[:, None, :] - 0.5 + square[None]
    overlay.data = (boxes, ["rectangle"] * len(boxes))
    overlay.edge_width = max(1.0, settings.patch_size / 32)


def threshold_latency(size: int, moves: int) -> list[dict]:
    """Median and worst time from a threshold change to the drawn overlay, new and previous code path."""
    viewer = napari.Viewer(title="benchmarks.gui")
    viewer.window.resize(*WINDOW)
    image = viewer.add_image(sample(size), name="image")
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget, name="ROI selection")
    widget.image.value = image
    widget.refresh()
    paints = PaintWatch(viewer)
    applied, main_thread = [], []
    apply = RoiWidget._apply

    def recording_apply(self, layer, views):
        began = time.perf_counter()
        apply(self, layer, views)
        applied.append(time.perf_counter())
        main_thread.append(applied[-1] - began)

    RoiWidget._apply = recording_apply
    rows = []
    try:
        new = []
        for move in range(moves):
            process_until(lambda: not widget.busy)
            time.sleep(0.05)
            QApplication.processEvents()
            count, start = len(applied), time.perf_counter()
            widget.threshold.value = THRESHOLDS[move % len(THRESHOLDS)]
            process_until(lambda: len(applied) > count and not widget.busy)
            updated = applied[-1]
            process_until(lambda: paints.last > updated)
            new.append((updated - start, paints.last - start, main_thread[-1]))
        rows.append(_latency_row(size, "outline in a worker (new)", new, widget.status.value))

        for layer in widget._live_overlays():
            layer.visible = False
        old_overlay = viewer.add_shapes(ndim=2, name="previous path", edge_color="#00e5ff",
                                        face_color="transparent")
        old = []
        for move in range(moves):
            time.sleep(0.05)
            QApplication.processEvents()
            start = time.perf_counter()
            _old_update(widget, image, old_overlay, THRESHOLDS[move % len(THRESHOLDS)])
            updated = time.perf_counter()
            process_until(lambda: paints.last > updated)
            old.append((updated - start, paints.last - start, updated - start))
        rows.append(_latency_row(size, f"up to {OLD_MAX_PATCHES} rectangles (previous)", old,
                                 f"{len(old_overlay.data)} rectangles"))
    finally:
        RoiWidget._apply = apply
        viewer.close()
    return rows


def _latency_row(size: int, path: str, times: list[tuple[float, float, float]], note: str) -> dict:
    updated, painted, main = (1000 * np.asarray(column) for column in zip(*times))
    return {"size": f"{size}²", "path": path, "updated_median": np.median(updated), "updated_max": updated.max(),
            "main_median": np.median(main), "main_max": main.max(),
            "painted_median": np.median(painted), "painted_max": painted.max(), "moves": len(times), "note": note}


def _where(frame) -> str:
    """Where the main thread is: the outermost calls into the widgets, then the innermost frame."""
    chain = []
    while frame is not None:
        chain.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}")
        frame = frame.f_back
    ours = [call for call in reversed(chain[1:]) if call.split(":")[0] in WIDGET_FILES][:3]
    return " > ".join(ours + [chain[0]]) if chain else ""


WIDGET_FILES = {os.path.basename(path) for path in glob.glob(os.path.join(os.path.dirname(widgets.__file__), "*.py"))}


@dataclass
class StallProbe:
    """A 10 ms QTimer: the gaps between its ticks beyond 10 ms are main-thread stalls.

    A watchdog thread samples the main thread's stack while a tick is late, so that the report
    can say what the main thread was doing during the longest stall.
    """

    describe: object = None
    ticks: list[float] = field(default_factory=list)
    notes: list[tuple[float, int, str]] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)

    def start(self) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.ticks = [time.perf_counter()]
        self._running = True
        self._main = threading.main_thread().ident
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()
        self.timer.start(PROBE_MS)

    def stop(self) -> None:
        self.timer.stop()
        self._running = False
        self._watchdog.join()

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self.ticks[-1] > 0.05 and self.describe is not None:
            self.notes.append((now - self.ticks[-1], len(self.ticks), str(self.describe())))
        self.ticks.append(now)

    def _watch(self) -> None:
        while self._running:
            time.sleep(WATCHDOG_S)
            ticks = len(self.ticks)
            if time.perf_counter() - self.ticks[-1] > 0.05:
                frame = sys._current_frames().get(self._main)
                self.samples.append((ticks, _where(frame)))

    def summary(self) -> dict:
        gaps = np.diff(self.ticks)
        stalls = np.maximum(gaps * 1000 - PROBE_MS, 0)
        worst = max((note for note in self.notes if note[1] > 1), default=(0.0, 0, ""))[2]
        # samples taken while the tick count was k belong to the gap after tick k - 1; the longest gap
        # after the button's handler is described (the handler's own is known)
        longest = int(np.argmax(gaps[1:])) + 2 if len(gaps) > 1 else 1
        where = Counter(place for ticks, place in self.samples if ticks == longest).most_common(1)
        # the first gap holds the button's handler (the probe starts just before it): also reported without it
        return {"p99": float(np.percentile(stalls, 99)), "max": float(stalls.max()), "ticks": len(stalls),
                "max_after_press": float(stalls[1:].max(initial=0.0)),
                "over_100ms": int((stalls > 100).sum()), "worst_during": worst[:90],
                "worst_where": where[0][0] if where else ""}


def run_probed(start, worker_of, describe) -> dict:
    """Start a widget's work, run the event loop until its worker finishes, and return the stall summary."""
    probe = StallProbe(describe)
    loop = QEventLoop()
    probe.start()
    began = time.perf_counter()
    start()
    pressed = time.perf_counter() - began
    worker = worker_of()
    if worker is None:
        raise RuntimeError(f"the widget did not start: {describe()}")
    worker.finished.connect(loop.quit)
    QTimer.singleShot(TIMEOUT_S * 1000, loop.quit)
    loop.exec()
    probe.stop()
    return {**probe.summary(), "press_ms": 1000 * pressed, "seconds": time.perf_counter() - began}


def settle(seconds: float) -> None:
    """Run the event loop for `seconds` (paints and timers go on meanwhile)."""
    deadline = time.perf_counter() + seconds
    process_until(lambda: time.perf_counter() > deadline)


def napari_floor(viewer, data: np.ndarray) -> list[dict]:
    """The stalls napari itself makes here, with no plugin code running: a result-like image layer
    added (as napari adds it, and without activating it, as the widgets do) and then given new data (as a
    preview is refilled), each probed until the canvas has settled. A plugin's longest stall cannot be
    shorter than these on the same machine."""
    rows, added = [], []
    size = "x".join(map(str, data.shape))

    def add_plain() -> None:
        added.append(viewer.add_image(data, name="napari alone, added"))

    def add_without_activation() -> None:
        added.append(add_quietly(viewer, Image(data, name="napari alone, added quietly")))

    def new_data() -> None:
        added[-1].data = data[::-1].copy()

    for label, action in ((f"add a {size} image layer", add_plain),
                          ("add it without activation (as the widgets do)", add_without_activation),
                          ("new data in that layer (as a preview refill)", new_data)):
        probe = StallProbe()
        probe.start()
        began = time.perf_counter()
        action()
        pressed = time.perf_counter() - began
        settle(1.5)
        probe.stop()
        rows.append({"scenario": f"napari alone: {label}", **probe.summary(), "press_ms": 1000 * pressed,
                     "seconds": time.perf_counter() - began})
    for layer in added:
        viewer.layers.remove(layer)
    return rows


def stalls(stack_depth: int) -> list[dict]:
    """Main-thread stalls while training (then denoising) and while the Denoise widget denoises."""
    single = sample(2048)
    stack = np.stack([single] + [clean_image((2048, 2048)) + structured_noise((2048, 2048), seed=10 + k)
                                 for k in range(stack_depth - 1)]) if stack_depth > 1 else None
    rows = []
    for name, data in (("2048²", single), (f"{stack_depth} x 2048²", stack)):
        if data is None:
            continue
        viewer = napari.Viewer(title="benchmarks.gui")
        viewer.window.resize(*WINDOW)
        layer = viewer.add_image(data, name="image")
        if data is single:
            settle(2.0)
            rows += napari_floor(viewer, single)
        trainer = TrainWidget(viewer)
        viewer.window.add_dock_widget(trainer, name="Train")
        for stage in (1, 2):
            for key, value in dict(epochs=1, steps_per_epoch=6, batch_size=4, patch_size=64).items():
                trainer._stage_controls[stage, key].value = value
        trainer.base_channels.value = 8
        trainer.preview_every.value = 3
        trainer.tile_size.value = 512
        trainer.images.value = [layer]
        summary = run_probed(trainer.start, lambda: trainer.worker, lambda: trainer.status.value)
        rows.append({"scenario": f"Train widget: training + final denoising, {name}", **summary})

        denoiser = DenoiseWidget(viewer)
        viewer.window.add_dock_widget(denoiser, name="Denoise")
        denoiser.image.value = layer
        denoiser.tile_size.value = 512
        summary = run_probed(denoiser.run, lambda: denoiser.worker, lambda: denoiser.status.value)
        rows.append({"scenario": f"Denoise widget: denoising, {name}", **summary})
        viewer.close()
    return rows


def layout(screenshot: str | None) -> list[dict]:
    """The ROI, Train (advanced settings open) and Denoise docks in a 1280x1024 window: the canvas width,
    and whether each dock's controls fit its width and are reachable by scrolling."""
    viewer = napari.Viewer(title="benchmarks.gui")
    viewer.window.resize(*WINDOW)
    viewer.add_image(sample(512), name="a noisy image with a long name, as files often have")
    docks = {"ROI selection": RoiWidget(viewer), "Train": TrainWidget(viewer), "Denoise": DenoiseWidget(viewer)}
    for name, dock in docks.items():
        viewer.window.add_dock_widget(dock, name=name)
    docks["Train"].advanced_section.expand(animate=False)
    canvas = viewer.window._qt_viewer.canvas.native
    process_until(lambda: canvas.width() > 0 and all(dock.scroll.height() > 0 for dock in docks.values()), 30)
    for _ in range(10):
        QApplication.processEvents()
    rows = []
    for name, dock in docks.items():
        area, content = dock.scroll, dock.scroll.widget()
        rows.append({
            "dock": name, "canvas_px": canvas.width(), "canvas_share": canvas.width() / WINDOW[0],
            "dock_px": area.width(), "content_min_px": content.minimumSizeHint().width(),
            "viewport_px": area.viewport().width(), "visible_px": area.viewport().height(),
            "content_px": content.height(),
            "scroll_reaches_all": "yes" if area.verticalScrollBar().maximum() + area.viewport().height()
            >= content.height() else "no",
        })
    if screenshot:
        imwrite(screenshot, viewer.screenshot(canvas_only=False, flash=False))
    viewer.close()
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 and 2048 only, 6 moves, a 4-slice stack")
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--moves", type=int, default=None)
    parser.add_argument("--stack", type=int, default=None, help="slices of the stack (default 20)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-stalls", action="store_true")
    parser.add_argument("--skip-layout", action="store_true")
    parser.add_argument("--screenshot", default=None, help="write a picture of the three docks here (PNG)")
    parser.add_argument("--out", default=None, help="directory for gui.json (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    sizes = args.sizes or ([512, 2048] if args.quick else [512, 2048, 8192])
    moves = args.moves or (6 if args.quick else 12)
    stack_depth = args.stack or (4 if args.quick else 20)
    load = os.getloadavg()
    payload = {"load_before": load, "window": WINDOW}
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    if not args.skip_latency:
        latency = [row for size in sizes for row in threshold_latency(size, moves)]
        payload["threshold_latency_ms"] = latency
        print("\nThreshold change to drawn overlay (ms)\n")
        print(markdown_table(latency, [
            ("size", "image"), ("path", "code path"), ("updated_median", "updated, median"),
            ("updated_max", "updated, max"), ("painted_median", "painted, median"), ("painted_max", "painted, max"),
            ("main_median", "main thread, median"), ("main_max", "main thread, max"),
            ("note", "last status"),
        ]))
    if not args.skip_stalls:
        probe = stalls(stack_depth)
        payload["main_thread_stalls_ms"] = probe
        print(f"\nMain-thread stalls ({PROBE_MS} ms QTimer probe; ms beyond the interval)\n")
        print(markdown_table(probe, [
            ("scenario", "scenario"), ("p99", "p99"), ("max", "max"), ("press_ms", "button handler"),
            ("max_after_press", "max after the handler"), ("over_100ms", "stalls > 100 ms"),
            ("seconds", "run (s)"), ("worst_during", "longest stall after the handler ended during"),
            ("worst_where", "main thread during the longest stall after the handler (most samples)"),
        ]))
    if not args.skip_layout:
        docks = layout(args.screenshot)
        payload["layout"] = docks
        print(f"\nThree docks in a {WINDOW[0]}x{WINDOW[1]} window (Train's advanced settings open)\n")
        print(markdown_table(docks, [
            ("dock", "dock"), ("canvas_px", "canvas (px)"), ("canvas_share", "canvas share"), ("dock_px", "dock (px)"),
            ("content_min_px", "narrowest content (px)"), ("viewport_px", "room (px)"), ("visible_px", "visible height"),
            ("content_px", "content height"), ("scroll_reaches_all", "scrolling reaches every control"),
        ]))
    payload["load_after"] = os.getloadavg()
    path = write_json("gui", payload, args.out)
    print(f"\nload average after: {payload['load_after'][0]:.2f}; results written to {path}")


if __name__ == "__main__":
    main()
