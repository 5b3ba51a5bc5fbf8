"""Axes in the Train and Denoise widgets: a ZYX layer through the 3D network, a CYX layer with a mask per channel."""

import numpy as np

from conftest import set_stage_budget
from napari_autostructn2v.core.sample import make_sample, make_volume, structured_noise
from napari_autostructn2v.widgets.denoise import DenoiseWidget
from napari_autostructn2v.widgets.train import MASK_LAYER, PATCHES_LAYER, PREVIEW_LAYER, TrainWidget

TIMEOUT = 120000


def tiny_widget(viewer) -> TrainWidget:
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    set_stage_budget(widget, epochs=1, steps_per_epoch=3, batch_size=2, patch_size=32)
    widget.base_channels.value = 8
    widget.device.value = "cpu"
    widget.preview_every.value = 3
    return widget


def run_to_end(qtbot, widget):
    widget.start()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_a_zyx_layer_trains_the_3d_network(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    volume = make_volume((8, 48, 48), seed=0)[1]
    viewer.add_image(volume, name="volume", axis_labels=("z", "y", "x"))
    widget = tiny_widget(viewer)
    assert widget.axes.value == "ZYX" and set(widget.axes.choices) == {"ZYX", "SYX", "TYX", "CYX"}
    widget.network.value = "3d"
    widget.patch_depth.value = 8
    widget.tile_size.value = 128
    run_to_end(qtbot, widget)
    model = widget.model
    assert model is not None and model.net.dims == 3 and model.axes == "ZYX"
    assert viewer.layers["volume denoised"].data.shape == volume.shape
    assert viewer.layers[PREVIEW_LAYER].data.shape == (48, 48)
    assert len(viewer.layers[PATCHES_LAYER].data) > 0
    # the Denoise widget offers the layer's axes and applies the 3D model
    viewer.layers.remove("volume denoised")
    denoiser = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(denoiser, name="Denoise")
    denoiser.image.value = viewer.layers["volume"]
    assert denoiser.axes.value == "ZYX"
    denoiser.tile_size.value = 128
    denoiser.run()
    qtbot.waitUntil(lambda: denoiser.worker is None, timeout=TIMEOUT)
    assert viewer.layers["volume denoised"].data.shape == volume.shape


def test_a_cyx_layer_reviews_one_mask_per_channel(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    clean = make_sample((96, 96), "white", 0.1, seed=0)[0]
    image = np.stack([clean + structured_noise(clean.shape, "white", 0.1, seed=1),
                      50 * (clean + structured_noise(clean.shape, "horizontal", 0.1, seed=2))])
    viewer.add_image(image, name="channels")
    widget = tiny_widget(viewer)
    assert widget.axes.value == "SYX"  # napari's default labels say nothing: a stack, as before
    widget.axes.value = "CYX"
    widget.review.value = True
    widget.start()
    reviewed = []
    for channel in (0, 1):
        qtbot.waitUntil(lambda: not widget.review_panel.native.isHidden() and widget._mask_event is not None
                        and widget._mask_event.channel == channel, timeout=TIMEOUT)
        canvas = viewer.layers[MASK_LAYER].data
        reviewed.append(int(canvas.sum()))
        assert f"channel {channel}:" in widget.mask_text.value
        widget.continue_training()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert reviewed == [1, 5]  # white noise: the centre; horizontal noise: a 5-pixel line
    assert [int(m.sum()) for m in widget.model.channel_masks()] == [1, 5]
    assert "channel 0:" in widget.mask_text.value and "channel 1:" in widget.mask_text.value
    result = viewer.layers["channels denoised"].data
    assert result.shape == image.shape
    assert abs(result[1].mean() - image[1].mean()) < 0.5 * image[1].std()  # channel 1 in its own units
    viewer.dims.set_point(0, 1)  # the patch outline of a channel other than the first is drawn without error
    widget.layers.draw_patches()
