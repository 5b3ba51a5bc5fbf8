"""The Train dock widget in a real napari viewer (run under xvfb-run): tiny model, few steps."""

import gc

import numpy as np
import pytest
from napari.layers import Labels
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtCore import QTimer

from conftest import set_stage_budget
from napari_autostructn2v.core.inference import check_tiling, denoise
from napari_autostructn2v.core.mask import preset_mask
from napari_autostructn2v.core.sample import make_sample
from napari_autostructn2v.core.whitening import Whitening
from napari_autostructn2v.widgets import _model_actions as model_actions_module
from napari_autostructn2v.widgets import train as train_module
from napari_autostructn2v.core.mask import acf_side
from napari_autostructn2v.widgets._progress_layers import STAGE_COLOURS
from napari_autostructn2v.widgets._session import model_for, settings_for
from napari_autostructn2v.widgets._common import MIN_TILE
from napari_autostructn2v.widgets.train import ACF_LAYER, MASK_LAYER, PATCHES_LAYER, PREVIEW_LAYER, TrainWidget

SCALE, TRANSLATE = (2.0, 0.5), (10.0, -5.0)
TIMEOUT = 60000
STEP_SLACK = 5


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    _, noisy = make_sample((128, 128))
    viewer.add_image(noisy, name="noisy", scale=SCALE, translate=TRANSLATE)
    return viewer


@pytest.fixture
def widget(viewer):
    """The docked widget set, through its own controls, to a tiny model and 2 x 3 steps per stage."""
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    set_budget(widget, epochs=2)
    widget.base_channels.value = 8
    widget.device.value = "cpu"
    widget.preview_every.value = 2
    return widget


@pytest.fixture
def errors(monkeypatch):
    messages = []
    for module in (train_module, model_actions_module):
        monkeypatch.setattr(module, "show_error", messages.append)
    return messages


def set_budget(widget, epochs, stages=(1, 2)):
    set_stage_budget(widget, stages, epochs=epochs, steps_per_epoch=3, batch_size=4, patch_size=32)


def run_to_end(qtbot, widget):
    widget.start()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)  # a signal could be missed: it may come first
    assert not widget.running and widget.start_button.enabled


def test_controls_edit_the_viewers_shared_settings(viewer, widget):
    settings = settings_for(viewer)
    assert settings.stage1.epochs == 2 and settings.stage2.patch_size == 32 and settings.base_channels == 8
    widget.seed.value = -1
    assert settings.seed is None
    widget.n2v2.value = True
    assert settings.stage1.n2v2 and settings.stage2.n2v2
    assert widget.whiten.value and settings.mask.whiten
    widget.whiten.value = False
    assert not settings.mask.whiten
    assert widget.recorrupt.value and settings.mask.recorrupt
    widget.recorrupt.value = False
    assert not settings.mask.recorrupt
    assert widget.remove_banding.value and settings.mask.remove_banding
    widget.remove_banding.value = False
    assert not settings.mask.remove_banding
    settings.stage1.patch_size = 48  # as the ROI widget would
    widget.load_settings()
    assert widget._stage_controls[1, "patch_size"].value == 48


def test_training_shows_progress_as_layers_and_ends_with_a_placed_denoised_layer(qtbot, viewer, widget, monkeypatch):
    previews = []
    on_preview = type(widget)._on_preview  # patched on the class: magicgui containers refuse attribute deletion
    monkeypatch.setattr(type(widget), "_on_preview",
                        lambda self, event: (previews.append(event.stage), on_preview(self, event)))
    run_to_end(qtbot, widget)

    assert previews.count(1) >= 2 and previews.count(2) >= 2
    for name in (PREVIEW_LAYER, "noisy denoised"):
        layer = viewer.layers[name]
        assert layer.data.shape == (128, 128)
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
    acf, mask = viewer.layers[ACF_LAYER].data, viewer.layers[MASK_LAYER].data
    assert acf.shape == mask.shape and acf[acf.shape[0] // 2, acf.shape[1] // 2] == pytest.approx(1.0)
    centre = mask.shape[0] // 2
    assert mask[centre, centre] == 1 and mask[centre, centre + 1] == 1  # the sample's noise is horizontal
    assert "#" in widget.mask_text.value
    assert not isinstance(viewer.layers[MASK_LAYER], Labels)  # nothing to paint without the review: an image
    patches = viewer.layers[PATCHES_LAYER]
    assert len(patches.data) > 0 and np.allclose(patches.scale, SCALE)
    assert [stage for stage, _, _ in widget.loss_plot.points] == [1, 1, 2, 2]
    assert widget.progress[2].value == widget.progress[2].max == 6
    # the sample's noise is additive: recorrupted pairs, nothing masked, and the dock says so
    assert model_for(viewer) is widget.model and widget.model.struct_mask is None
    assert "recorrupted pairs" in widget.mask_text.value
    assert widget.save_button.enabled

    widget.recorrupt.value = False  # unticked: the structured blind spot, the mask shown
    run_to_end(qtbot, widget)
    assert widget.model.struct_mask is not None and widget.model.struct_mask.sum() >= 3
    assert "recorrupted" not in widget.mask_text.value


def test_display_layers_are_added_one_per_turn_before_training_starts_without_activating_them(qtbot, viewer,
                                                                                               widget):
    viewer.add_image(np.zeros((16, 16), np.float32), name="other")
    viewer.layers.selection.active = viewer.layers["other"]
    turns, log, activated = [0], [], []
    ticker = QTimer()  # a 0 ms timer ticks once per turn of the event loop
    ticker.timeout.connect(lambda: turns.__setitem__(0, turns[0] + 1))
    ticker.start(0)
    viewer.layers.events.inserted.connect(lambda event: log.append((event.value.name, turns[0], event.value.visible)))
    viewer.layers.selection.events.active.connect(lambda event: activated.append(event.value))
    widget.start()
    assert log == []  # the press itself adds nothing: the viewer answers at once
    widget.worker.started.connect(lambda: log.append(("training started", turns[0], None)))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    ticker.stop()
    # each layer is added in its own turn of the event loop, all before training starts (each layer added
    # during training would stall the viewer then); the user's result comes at the end
    assert [name for name, _, _ in log] == [PREVIEW_LAYER, ACF_LAYER, MASK_LAYER, PATCHES_LAYER, "training started",
                                            "noisy denoised"]
    assert all(before[1] < after[1] for before, after in zip(log[:4], log[1:5]))
    # hidden until filled: the first paint of each layer is a stall of its own, not part of the addition's
    assert [shown for _, _, shown in log[:4]] == [False] * 4
    assert activated == [] and viewer.layers.selection.active is viewer.layers["other"]  # never activated
    assert all(viewer.layers[name].visible for name in (PREVIEW_LAYER, ACF_LAYER, MASK_LAYER, PATCHES_LAYER))
    assert viewer.layers[PREVIEW_LAYER].data.shape == (128, 128) and len(viewer.layers[PATCHES_LAYER].data)
    # the placeholders had the shape and place of their data: filling them changed no extent
    assert viewer.layers[ACF_LAYER].data.shape == (acf_side(settings_for(viewer).mask.max_radius),) * 2
    np.testing.assert_allclose(viewer.layers[PATCHES_LAYER].translate, TRANSLATE)
    # its first paint rendered no glyphs for the (empty) text
    assert not viewer.window._qt_viewer.canvas.layer_to_visual[viewer.layers[PATCHES_LAYER]].node.text.visible
    # stage 2's patches, in stage 2's colour
    np.testing.assert_allclose(viewer.layers[PATCHES_LAYER].edge_color, transform_color(STAGE_COLOURS[2]))


def test_the_layers_of_a_run_are_reused_by_the_next_one(qtbot, viewer, widget):
    run_to_end(qtbot, widget)
    shown = {name: viewer.layers[name] for name in (PREVIEW_LAYER, ACF_LAYER, MASK_LAYER, PATCHES_LAYER,
                                                   "noisy denoised")}
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    run_to_end(qtbot, widget)
    assert added == [] and all(viewer.layers[name] is layer for name, layer in shown.items())


def test_stop_keeps_a_usable_model_and_refuses_a_second_start(qtbot, viewer, widget, monkeypatch):
    infos = []
    monkeypatch.setattr(train_module, "show_info", infos.append)
    set_budget(widget, epochs=500, stages=(1,))
    widget.start()
    worker = widget.worker
    qtbot.waitUntil(lambda: widget.progress[1].value >= 2, timeout=TIMEOUT)
    assert not widget.start_button.enabled
    widget.start()
    assert widget.worker is worker and len(widget._runs) == 1 and "already running" in infos[0]
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        at_stop = widget.progress[1].value
        widget.stop()
    # training ended within a few steps of the press (events already queued may still arrive), not at 1500
    assert widget.progress[1].value <= at_stop + STEP_SLACK
    assert {entry["stage"] for entry in widget.model.history} == {1}  # stage 2 never ran
    assert widget.model is not None and model_for(viewer) is widget.model
    assert viewer.layers["noisy denoised"].data.shape == (128, 128)
    assert widget.start_button.enabled and not widget.stop_button.enabled
    # the run ended before the mask was estimated: the empty layers added at Start for it are gone
    assert ACF_LAYER not in viewer.layers and MASK_LAYER not in viewer.layers

    set_budget(widget, epochs=1)
    run_to_end(qtbot, widget)
    assert widget.progress[2].value == 3


def test_mask_review_pauses_before_stage_2_and_uses_the_edited_preset(qtbot, viewer, widget):
    widget.review.value = True
    widget.start()
    qtbot.waitUntil(lambda: not widget.review_panel.native.isHidden(), timeout=TIMEOUT)
    qtbot.wait(300)
    assert widget.progress[2].value == 0 and widget.running  # paused
    widget.preset.value = "vertical"
    widget.span.value = 3
    assert isinstance(viewer.layers[MASK_LAYER], Labels)  # to be painted on
    canvas = viewer.layers[MASK_LAYER].data
    centre = canvas.shape[0] // 2
    np.testing.assert_array_equal(canvas[centre - 1 : centre + 2, centre - 1 : centre + 2], preset_mask("vertical", 3))
    edited = canvas.copy()
    edited[centre, centre + 2] = 1  # the user paints one more pixel
    viewer.layers[MASK_LAYER].data = edited
    with qtbot.waitSignal(widget.worker.finished, timeout=TIMEOUT):
        widget.continue_training()
    expected = np.zeros((5, 5), bool)
    expected[1:4, 2] = True
    expected[2, 4] = True
    np.testing.assert_array_equal(widget.model.struct_mask, expected)
    assert widget.progress[2].value == 6


def test_rgb_too_small_and_roi_errors_are_notifications(qtbot, viewer, widget, errors):
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    widget.images.value = [viewer.layers["rgb"]]
    widget.start()
    assert "RGB" in errors[-1] and not widget.running

    viewer.add_image(np.random.default_rng(0).random((20, 20)), name="tiny")
    widget.images.value = [viewer.layers["tiny"]]
    run_to_end(qtbot, widget)  # the images are checked in the worker
    assert "smaller than the patch size" in errors[-1] and widget.model is None
    assert widget.status.value == errors[-1]

    nans = viewer.layers["noisy"].data.copy()
    nans[5, 7] = np.nan
    viewer.add_image(nans, name="nans")
    widget.images.value = [viewer.layers["nans"]]
    run_to_end(qtbot, widget)
    assert "1 NaN" in errors[-1] and widget.model is None
    assert not {PREVIEW_LAYER, ACF_LAYER, MASK_LAYER, PATCHES_LAYER} & {layer.name for layer in viewer.layers}

    widget.images.value = [viewer.layers["noisy"]]
    settings_for(viewer).stage1.roi_threshold = 0.0  # no background window is darker than that
    run_to_end(qtbot, widget)
    assert "ROI selection" in errors[-1] and "threshold" in errors[-1]
    assert "use_roi" not in errors[-1] and "untick 'use ROI selection'" in errors[-1]  # the GUI's words
    assert widget.start_button.enabled and widget.model is None


def test_saved_model_file(tmp_path, qtbot, widget):
    set_budget(widget, epochs=1)
    run_to_end(qtbot, widget)
    widget.model_path.value = tmp_path / "model"
    widget.save()
    assert (tmp_path / "model.pt").is_file()


def test_export_writes_a_bioimageio_package_of_the_trained_model(tmp_path, qtbot, viewer, widget, errors):
    import zipfile

    from napari_autostructn2v.core.model import load_model

    assert not widget.export_button.enabled
    set_budget(widget, epochs=1)
    run_to_end(qtbot, widget)
    assert widget.export_button.enabled
    widget.package_path.value = tmp_path / "model"
    widget.export_button.clicked.emit()
    assert not widget.export_button.enabled  # one export at a time
    qtbot.waitUntil(lambda: widget.export_worker is None, timeout=TIMEOUT)
    assert widget.export_button.enabled and f"saved to {tmp_path / 'model.zip'}" in widget.status.value
    exported = load_model(tmp_path / "model.zip")
    np.testing.assert_array_equal(exported.struct_mask, widget.model.struct_mask)
    image = viewer.layers["noisy"].data
    np.testing.assert_array_equal(denoise(exported, image), denoise(widget.model, image))
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:  # the chosen image is the package's example
        np.testing.assert_array_equal(np.load(archive.open("test_input.npy"))[0, 0], image)

    (tmp_path / "folder.zip").mkdir()
    widget.package_path.value = tmp_path / "folder.zip"
    widget.export()
    assert widget.export_worker is None and "Choose a file" in errors[-1]

    widget.model.whitening = [Whitening("X", 0.6)]  # a model that decorrelates its input is not exported
    widget.package_path.value = tmp_path / "white.zip"
    widget.export_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.export_worker is None, timeout=TIMEOUT)
    assert "Untick 'decorrelate filtered noise'" in errors[-1] and not (tmp_path / "white.zip").exists()

    widget.model.whitening, widget.model.banding = None, [("rows",)]  # nor one that removes line offsets
    widget.package_path.value = tmp_path / "banded.zip"
    widget.export_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.export_worker is None, timeout=TIMEOUT)
    assert "Untick 'remove line offsets (banding)'" in errors[-1] and not (tmp_path / "banded.zip").exists()


def test_the_tile_size_steps_between_automatic_and_sides_that_denoising_accepts(widget):
    tile = widget.tile_size
    assert tile.value == 0
    tile.native.stepBy(1)  # one step up from automatic: the smallest side offered
    assert tile.value == MIN_TILE
    check_tiling(MIN_TILE, depth=widget.depth.max)  # accepted at every network depth the widget offers
    tile.native.stepBy(1)
    assert tile.value == MIN_TILE + 32
    tile.native.stepBy(-2)  # below the smallest side: back to automatic
    assert tile.value == 0
    tile.value = 50  # typed, up from automatic
    assert tile.value == MIN_TILE
    tile.value = 40  # typed, down from a valid side
    assert tile.value == 0
    tile.value = 512
    assert tile.value == 512


def test_undocking_the_widget_stops_training(qtbot, viewer, widget):
    set_budget(widget, epochs=500, stages=(1,))
    widget.start()
    qtbot.waitUntil(lambda: widget.progress[1].value >= 1, timeout=TIMEOUT)
    worker, steps = widget.worker, []
    worker.yielded.connect(lambda event: steps.append(event.step) if hasattr(event, "step") else None)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        at_undock = widget.progress[1].value
        viewer.window.remove_dock_widget(widget.native)
    assert max(steps, default=0) <= at_undock + STEP_SLACK


def test_a_second_stop_skips_the_final_denoising(qtbot, viewer, widget):
    set_budget(widget, epochs=500, stages=(1,))
    widget.start()
    qtbot.waitUntil(lambda: widget.progress[1].value >= 2, timeout=TIMEOUT)
    with qtbot.waitSignal(widget.worker.finished, timeout=TIMEOUT):
        widget.stop()
        widget.stop()
    assert widget.model is not None and widget.save_button.enabled
    assert "noisy denoised" not in viewer.layers
    assert "skipped" in widget.status.value and "model is kept" in widget.status.value


def test_stop_during_the_final_denoising_cancels_it_and_says_so(qtbot, viewer, widget):
    viewer.add_image(np.random.default_rng(0).random((6, 384, 384), np.float32), name="big")
    widget.images.value = [viewer.layers["big"]]
    set_budget(widget, epochs=1)
    widget.tile_size.value = 96
    widget.start()
    qtbot.waitUntil(lambda: "Denoising big:" in widget.status.value, timeout=TIMEOUT)
    with qtbot.waitSignal(widget.worker.finished, timeout=TIMEOUT):
        widget.stop()
    qtbot.wait(100)  # late progress events must not overwrite the final status
    assert "big denoised" not in viewer.layers
    assert "cancelled" in widget.status.value and "model is kept" in widget.status.value


def test_layout_keeps_its_width_and_the_overlays_stay_on_top(qtbot, viewer, widget):
    width = widget.native.width()
    run_to_end(qtbot, widget)
    assert "#" in widget.mask_text.value
    assert not isinstance(viewer.layers[MASK_LAYER], Labels)  # nothing to paint without the review: an image
    widget.mask_text.value = "structN2V mask (" + "a_very_long_unbreakable_reason_" * 10 + ")"
    qtbot.wait(50)
    assert widget.native.width() == width
    # and the long text wraps or is clipped inside the dock instead of pushing the controls out of view
    assert widget.scroll.widget().minimumSizeHint().width() <= widget.scroll.viewport().width()
    viewer.add_image(np.zeros((300, 300), np.float32), name="opened later")

    def below_the_overlays():
        names = [layer.name for layer in viewer.layers]
        return names.index("opened later") < min(names.index(name) for name in (ACF_LAYER, MASK_LAYER, PATCHES_LAYER))

    qtbot.waitUntil(below_the_overlays, timeout=5000)
    # the insets sit inside the image's top-left corner, where the user looks
    image = np.asarray(viewer.layers["noisy"].extent.world)[:, -2:]
    for name in (ACF_LAYER, MASK_LAYER):
        inset = np.asarray(viewer.layers[name].extent.world)[:, -2:]
        assert (inset[0] >= image[0]).all() and (inset[1] <= image[0] + 0.5 * (image[1] - image[0])).all()


def test_active_layer_is_the_default_and_internal_layers_are_not_offered(qtbot, viewer):
    viewer.add_image(np.zeros((64, 64), np.float32), name="other")
    viewer.add_image(make_sample((64, 64))[1], name="last")
    viewer.layers.selection.active = viewer.layers["other"]  # neither the first nor the last
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.images.value == [viewer.layers["other"]]
    widget.images.value = [viewer.layers["noisy"]]
    set_budget(widget, epochs=1)
    widget.base_channels.value = 8
    widget.preview_every.value = 1
    run_to_end(qtbot, widget)
    offered = {layer.name for layer in widget.images.choices}
    assert PREVIEW_LAYER in viewer.layers and offered == {"noisy", "other", "last", "noisy denoised"}


def test_every_control_has_a_tooltip(widget):
    controls = [widget.images, *widget._stage_controls.values(), widget.n2v2, widget.mask_percent,
                widget.mask_source, widget.significance, widget.min_correlation, widget.max_radius,
                widget.whiten, widget.recorrupt, widget.base_channels, widget.depth, widget.seed, widget.device,
                widget.preview_every,
                widget.tile_size, widget.review, widget.start_button, widget.stop_button, widget.preset,
                widget.span, widget.mask_review.continue_button, widget.model_path, widget.save_button,
                widget.package_path, widget.export_button]
    assert all(control.tooltip for control in controls)


def test_three_docks_fit_a_1280x1024_window_and_scroll(qtbot, make_napari_viewer):
    from napari_autostructn2v.widgets.denoise import DenoiseWidget
    from napari_autostructn2v.widgets.roi import RoiWidget

    viewer = make_napari_viewer(show=True)  # shown, so that the docks and the canvas get their real sizes
    viewer.add_image(make_sample((128, 128))[1], name="a noisy image with a long name, as files often have")
    viewer.window.resize(1280, 1024)
    docks = [RoiWidget(viewer), TrainWidget(viewer), DenoiseWidget(viewer)]
    for dock, name in zip(docks, ("ROI selection", "Train", "Denoise")):
        viewer.window.add_dock_widget(dock, name=name)
    docks[1].advanced_section.expand(animate=False)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(lambda: canvas.width() > 0 and docks[1].scroll.height() > 0, timeout=5000)
    qtbot.wait(100)
    # napari's own left dock (layer controls and list) takes 346 px here and the docks 280 px
    assert canvas.width() >= 0.5 * 1280
    for dock in docks:
        area = dock.scroll
        content = area.widget()
        # what does not fit is reachable by scrolling: the scroll range covers the content's height
        # no control squeezed out (the layout settles after the section opens)
        qtbot.waitUntil(lambda: content.height() >= content.minimumSizeHint().height(), timeout=3000)
        assert area.verticalScrollBar().maximum() + area.viewport().height() >= content.height()
        assert area.horizontalScrollBar().maximum() == 0  # nothing hidden sideways
        assert content.minimumSizeHint().width() <= area.viewport().width()  # a long layer name is cut instead


def test_older_objects_are_frozen_from_start_until_the_run_ends(qtbot, widget):
    """Full garbage collections (150-200 ms with napari and torch loaded) walk only what the run creates."""
    frozen = []
    widget.start()
    assert gc.get_freeze_count() > 0  # already while the display layers are added
    widget.worker.started.connect(lambda: frozen.append(gc.get_freeze_count()))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert frozen and frozen[0] > 0
    assert gc.get_freeze_count() == 0


def test_pmt_noise_is_decorrelated_and_the_dock_says_so(qtbot, viewer, widget):
    """The PMT case in the viewer: the mask shown is the centre alone, its text names the filter, and unticking
    the box goes back to masking the line."""
    from scipy.signal import lfilter

    clean = make_sample((128, 128))[0]
    white = np.random.default_rng(0).standard_normal(clean.shape)
    noise = 0.1 * np.sqrt(1 - 0.6**2) * lfilter([1.0], [1.0, -0.6], white, axis=-1)
    viewer.add_image((clean + noise).astype(np.float32), name="pmt")
    widget.images.value = [viewer.layers["pmt"]]
    set_budget(widget, epochs=1)
    run_to_end(qtbot, widget)
    assert "decorrelated along X" in widget.mask_text.value
    assert widget.model.whitening[0].axis == "X" and viewer.layers[MASK_LAYER].data.sum() == 1
    assert "pmt denoised" in viewer.layers

    widget.whiten.value = False
    run_to_end(qtbot, widget)
    assert widget.model.whitening is None and "decorrelated" not in widget.mask_text.value
    assert viewer.layers[MASK_LAYER].data.sum() >= 5


def test_banded_rows_are_removed_and_the_dock_says_so(qtbot, viewer, widget):
    """Row banding in the viewer: the text under the mask says the offsets were removed, the mask is what is left
    (white noise: the centre), and the user's layer is untouched."""
    clean = make_sample((128, 128))[0]
    rng = np.random.default_rng(0)
    banded = (clean + 0.06 * rng.standard_normal((128, 1)) + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    viewer.add_image(banded.copy(), name="banded")
    widget.images.value = [viewer.layers["banded"]]
    set_budget(widget, epochs=1)
    run_to_end(qtbot, widget)
    assert "row offsets removed (banding)" in widget.mask_text.value and widget.model.banding == [("rows",)]
    assert viewer.layers[MASK_LAYER].data.sum() == 1
    np.testing.assert_array_equal(viewer.layers["banded"].data, banded)
    assert "banded denoised" in viewer.layers
