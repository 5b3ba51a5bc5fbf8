"""The Denoise widget's lazy path (dask-backed and multiscale layers) with channel and 3D models."""

import dask.array as da
import numpy as np
import pytest

from conftest import make_channel_image, make_channel_volume, make_random_model
from napari_autostructn2v.core.inference import denoise
from napari_autostructn2v.widgets._session import set_model
from napari_autostructn2v.widgets.denoise import DenoiseWidget


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Denoise")
    return widget


def test_a_channel_model_on_a_dask_layer_gives_a_lazy_layer_of_every_channel(qtbot, widget):
    viewer = widget._viewer
    model = make_random_model(channels=2, axes="CYX")
    set_model(viewer, model)
    image = make_channel_image((120, 100))
    viewer.add_image(da.from_array(image, chunks=(1, 48, 48)), name="two channels")
    widget.image.value = viewer.layers["two channels"]
    assert widget.axes.value == "CYX"  # the model's training axes, as the labels say nothing
    widget.tile_size.value = 96
    widget.run()
    output = viewer.layers["two channels denoised"]
    assert isinstance(output.data, da.Array) and output.data.chunks[0] == (2,)
    np.testing.assert_allclose(output.data.compute(), denoise(model, image, tile_size=96), atol=1e-5)


def test_a_3d_model_on_a_multiscale_volume_gives_its_full_resolution_denoised_lazily(qtbot, widget):
    viewer = widget._viewer
    model = make_random_model(network="3d", channels=1, axes="ZYX", depth=1, base_channels=4)
    set_model(viewer, model)
    volume = make_channel_volume((20, 64, 56))[0]
    viewer.add_image([da.from_array(volume, chunks=(4, 32, 32)), da.from_array(volume[:, ::2, ::2])],
                     multiscale=True, name="volume", axis_labels=("z", "y", "x"))
    widget.image.value = viewer.layers["volume"]
    assert widget.axes.value == "ZYX"
    widget.run()
    output = viewer.layers["volume denoised"]
    assert not output.multiscale and isinstance(output.data, da.Array)
    np.testing.assert_allclose(output.data.compute(), denoise(model, volume), atol=1e-5)  # the 3D default tile


def test_axes_that_do_not_suit_the_model_give_a_message_and_no_layer(qtbot, widget):
    viewer = widget._viewer
    set_model(viewer, make_random_model(network="3d", channels=1, axes="ZYX", depth=1, base_channels=4))
    viewer.add_image(da.zeros((4, 64, 64), chunks=(1, 64, 64)), name="planes")
    widget.image.value = viewer.layers["planes"]
    widget.axes.value = "TYX"
    widget.run()
    assert "3D network" in widget.status.value and "ZYX" in widget.status.value
    assert "planes denoised" not in viewer.layers
