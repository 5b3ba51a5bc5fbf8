"""The ROI selection dock widget in a real napari viewer (run under xvfb-run)."""

import numpy as np
import pytest
from skimage.draw import polygon2mask

from napari_autostructn2v._sample_data import structured_noise_sample
from napari_autostructn2v.core.roi import select_roi_patches, suggest_threshold
from napari_autostructn2v.widgets._session import settings_for
from napari_autostructn2v.widgets.denoise import DenoiseWidget
from napari_autostructn2v.widgets._overlay import MAX_PATHS
from napari_autostructn2v.widgets.roi import FEW_PATCHES as FEW
from napari_autostructn2v.widgets.roi import RoiWidget

SAMPLE = "structured noise sample"
OVERLAY1, OVERLAY2 = "ROI patches stage 1", "ROI patches stage 2"


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    """The widget docked in a viewer that holds the sample, with the sample chosen."""
    for data, kwargs, _ in structured_noise_sample():
        viewer.add_image(data, **kwargs)
    roi = RoiWidget(viewer)
    viewer.window.add_dock_widget(roi, name="ROI selection")
    roi.image.value = viewer.layers[SAMPLE]
    roi.refresh()
    return roi


def n_boxes(viewer, name=OVERLAY1):
    return len(viewer.layers[name].data)


def corners_of(viewer, name=OVERLAY1):
    """Top-left pixel (y, x) of every drawn rectangle."""
    return {tuple(c) for c in np.rint(np.array(viewer.layers[name].data).min(axis=1) + 0.5).astype(int)}


def drawn(viewer, shape, name=OVERLAY1):
    """The pixels inside what the overlay draws: the union of its boxes, or the even-odd fill of its outlines."""
    layer = viewer.layers[name]
    inside = np.zeros(shape, bool)
    for vertices, kind in zip(layer.data, layer.shape_type):
        mask = polygon2mask(shape, np.asarray(vertices))
        inside = inside | mask if kind == "rectangle" else inside ^ mask
    return inside


def union(corners, shape, size=64):
    covered = np.zeros(shape, bool)
    for y, x in corners:
        covered[y : y + size, x : x + size] = True
    return covered


def settle(qtbot, widget):
    """Wait for the selection computed in the background to be drawn."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=10000)


def bright_disk(size=256, radius=60, centre=(128, 128)):
    yy, xx = np.mgrid[:size, :size]
    image = 0.1 + 0.8 * (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) < radius**2)
    return (image + np.random.default_rng(0).normal(0, 0.05, image.shape)).astype(np.float32)


def test_docked_widget_draws_the_core_selection_aligned_with_the_image(viewer, widget):
    layer = viewer.layers[SAMPLE]
    layer.scale, layer.translate = (2.0, 2.0), (10.0, -4.0)
    widget.refresh()
    expected = select_roi_patches(layer.data, patch_size=64, threshold=0.5, select_background=True)
    overlay = viewer.layers[OVERLAY1]
    assert len(expected) > 25 and set(overlay.shape_type) == {"path"}  # many patches: the outline of their union
    assert 0 < len(overlay.data) <= MAX_PATHS
    np.testing.assert_array_equal(drawn(viewer, layer.data.shape), union(expected, layer.data.shape))
    np.testing.assert_allclose(overlay.scale, layer.scale)
    np.testing.assert_allclose(overlay.translate, layer.translate)
    assert f"{len(expected)} patches (" in widget.status.value and "% of the image)" in widget.status.value
    assert "outlined" in widget.status.value

    widget.max_boxes.value = 500  # as many boxes as patches: each patch is drawn as its own box
    widget.refresh()
    assert set(overlay.shape_type) == {"rectangle"} and corners_of(viewer) == {tuple(c) for c in expected}
    assert np.ptp(np.array(overlay.data[0]), axis=0).tolist() == [64, 64]


def test_threshold_moves_the_outlined_area_in_the_expected_direction(viewer, widget, qtbot):
    shape = viewer.layers[SAMPLE].data.shape
    areas = []
    for value in (0.2, 0.5, 0.8):
        widget.threshold.value = value
        widget.refresh()
        areas.append(drawn(viewer, shape).sum())
    assert areas[0] < areas[1] < areas[2]
    assert settings_for(viewer).stage1.roi_threshold == pytest.approx(0.8)

    widget.select_background.value = False
    widget.refresh()
    high = drawn(viewer, shape).sum()
    for value in (0.6, 0.4, 0.2):  # through the background path, as when dragging the slider
        widget.threshold.value = value
    settle(qtbot, widget)
    assert drawn(viewer, shape).sum() > high
    expected = select_roi_patches(viewer.layers[SAMPLE].data, 64, 0.2, select_background=False)
    np.testing.assert_array_equal(drawn(viewer, shape), union(expected, shape))  # the last value wins
    assert settings_for(viewer).stage1.select_background is False


def test_background_and_structure_select_disjoint_regions(viewer):
    viewer.add_image(bright_disk(), name="disk")
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    settings_for(viewer).stage2.use_roi = True
    widget.refresh()
    background, structure = drawn(viewer, (256, 256), OVERLAY1), drawn(viewer, (256, 256), OVERLAY2)
    assert structure[128, 128] and not background[128, 128]
    assert background[2, 2] and not structure[2, 2]


def test_image_data_is_never_modified(viewer, widget):
    layer = viewer.layers[SAMPLE]
    original, copy = layer.data, layer.data.copy()
    widget.show_map.value = True
    widget.suggest.native.click()
    for value in (0.1, 0.9):
        widget.threshold.value = value
        widget.refresh()
    widget.stage.value = "stage2"
    widget.use_roi.value = True
    widget.refresh()
    assert layer.data is original
    np.testing.assert_array_equal(layer.data, copy)


def test_deleting_the_shapes_and_image_layers_is_survived(viewer, widget, qtbot):
    count = n_boxes(viewer)
    viewer.layers.remove(OVERLAY1)
    widget.refresh()
    assert n_boxes(viewer) == count

    viewer.layers.remove(SAMPLE)
    viewer.layers.remove(f"{SAMPLE} (clean reference)")
    qtbot.waitUntil(lambda: widget.status.value == "Choose an image layer.", timeout=5000)
    assert widget.image.value is None
    assert n_boxes(viewer) == 0

    viewer.add_image(bright_disk(), name="disk")
    qtbot.waitUntil(lambda: OVERLAY1 in viewer.layers and n_boxes(viewer) > 0, timeout=5000)
    assert widget.image.value is viewer.layers["disk"]


def test_selection_follows_the_dims_slider_on_a_stack(viewer, qtbot):
    left, right = bright_disk(centre=(128, 60)), bright_disk(centre=(128, 196))
    viewer.add_image(np.stack([left, right]), name="stack")
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.select_background.value = False
    viewer.dims.set_current_step(0, 0)
    widget.refresh()

    def mean_x():
        return np.nonzero(drawn(viewer, (256, 256)))[1].mean()

    assert mean_x() < 100
    viewer.dims.set_current_step(0, 1)
    qtbot.waitUntil(lambda: mean_x() > 100, timeout=5000)
    assert viewer.layers[OVERLAY1].ndim == 2


def test_suggest_button_sets_the_otsu_threshold(viewer, widget):
    widget.threshold.value = 0.05
    widget.suggest.native.click()
    level = suggest_threshold(viewer.layers[SAMPLE].data, 64, 0.25, 0.5)
    assert widget.threshold.value == pytest.approx(level, abs=0.006)
    assert settings_for(viewer).stage1.roi_threshold == widget.threshold.value


def test_stages_have_their_own_settings_in_the_shared_config(viewer, widget, qtbot):
    config = settings_for(viewer)
    assert widget.settings is config
    assert (config.stage1.use_roi, config.stage1.select_background) == (True, True)
    assert (config.stage2.use_roi, config.stage2.select_background) == (False, False)

    widget.patch_size.value = 32
    widget.stage.value = "stage2"
    assert widget.patch_size.value == 64 and widget.use_roi.value is False
    assert not widget.threshold.enabled
    qtbot.waitUntil(lambda: "ROI selection is off" in widget.status.value, timeout=5000)
    widget.use_roi.value = True
    widget.overlap.value = 0.25
    assert config.stage1.patch_size == 32 and config.stage2.use_roi and config.stage2.roi_overlap == 0.25
    assert config.stage1.roi_overlap == 0.5

    config.stage1.roi_threshold = 0.3
    widget.stage.value = "stage1"
    assert widget.threshold.value == pytest.approx(0.3) and widget.patch_size.value == 32


def test_too_few_patches_warns_with_what_to_change(viewer, widget):
    widget.threshold.value = 0.0
    widget.refresh()
    assert n_boxes(viewer) == 0
    assert "Too few patches" in widget.status.value and "raise the threshold" in widget.status.value
    widget.select_background.value = False
    widget.threshold.value = 1.0
    widget.refresh()
    assert "lower the threshold" in widget.status.value


def test_few_patches_are_boxes_and_the_total_is_reported(viewer, widget):
    widget.threshold.value = 0.1
    widget.refresh()
    selected = select_roi_patches(viewer.layers[SAMPLE].data, 64, 0.1)
    assert FEW <= len(selected) <= widget.max_boxes.value
    assert set(viewer.layers[OVERLAY1].shape_type) == {"rectangle"} and n_boxes(viewer) == len(selected)
    assert widget.status.value.startswith(f"stage 1: {len(selected)} patches") and "outlined" not in widget.status.value


def test_preprocessed_map_is_shown_at_the_image_scale(viewer, widget):
    widget.show_map.value = True
    widget.refresh()
    layer = viewer.layers["ROI map"]
    assert layer.data.shape == (128, 128)
    np.testing.assert_allclose(layer.scale, (4, 4))
    images = (viewer.layers[SAMPLE], viewer.layers[f"{SAMPLE} (clean reference)"])
    assert widget.image.choices == images
    assert DenoiseWidget(viewer).image.choices == images  # the map is not offered as an input anywhere
    widget.show_map.value = False
    widget.refresh()
    assert "ROI map" not in viewer.layers


def test_rgb_and_too_small_images_show_the_core_message(viewer, widget):
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), rgb=True, name="rgb")
    widget.image.value = viewer.layers["rgb"]
    widget.refresh()
    assert "RGB" in widget.status.value and n_boxes(viewer) == 0

    viewer.add_image(np.random.default_rng(0).random((40, 40)), name="small")
    widget.image.value = viewer.layers["small"]
    widget.refresh()
    assert "smaller than the patch size" in widget.status.value and n_boxes(viewer) == 0


def test_outline_stays_above_images_opened_later(viewer, widget, qtbot):
    def names():
        return [layer.name for layer in viewer.layers]

    viewer.add_image(bright_disk(512), name="opened later")
    qtbot.waitUntil(lambda: names()[-1] == OVERLAY1, timeout=5000)
    assert names().index("opened later") < names().index(OVERLAY1)
    widget.show_map.value = True
    widget.refresh()
    viewer.add_image(bright_disk(512), name="opened last")
    qtbot.waitUntil(lambda: names()[-2:] == ["ROI map", OVERLAY1], timeout=5000)


def test_the_active_image_is_chosen_by_default(viewer):
    for name in ("first", "second", "third"):
        viewer.add_image(bright_disk(), name=name)
    viewer.layers.selection.active = viewer.layers["second"]  # neither the first nor the last
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is viewer.layers["second"]
    viewer.layers.selection.active = viewer.layers["first"]
    viewer.layers.remove("second")
    assert widget.image.value is viewer.layers["first"]


def test_every_control_has_a_tooltip(widget):
    controls = [widget.image, widget.stage, widget.use_roi, widget.threshold, widget.select_background,
                widget.suggest, widget.scale_factor, widget.patch_size, widget.overlap, widget.max_boxes,
                widget.show_map]
    assert all(control.tooltip for control in controls)


def test_the_outline_layers_draw_no_text(viewer, widget):
    """vispy renders glyphs in Python at the first paint of a Shapes layer's text, even empty: our outlines skip it."""
    widget.refresh()
    visuals = viewer.window._qt_viewer.canvas.layer_to_visual
    assert not visuals[viewer.layers[OVERLAY1]].node.text.visible
    other = viewer.add_shapes(ndim=2)  # the user's own Shapes layers keep their text
    assert visuals[other].node.text.visible
