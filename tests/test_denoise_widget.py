"""The Denoise dock widget in a real napari viewer (run under xvfb-run)."""

import copy
import gc
import os

import numpy as np
import pytest

from conftest import set_stage_budget
from napari_autostructn2v.core.config import Config, StageConfig
from napari_autostructn2v.core.inference import denoise
from napari_autostructn2v.core.mask import preset_mask
from napari_autostructn2v.core.model import ModelFileError, load_model, save_model
from napari_autostructn2v.core.sample import make_sample
from napari_autostructn2v.core.training import fit
from napari_autostructn2v.widgets import denoise as denoise_module
from napari_autostructn2v.widgets._common import MIN_TILE
from napari_autostructn2v.widgets._session import set_model
from napari_autostructn2v.widgets.denoise import FILE, DenoiseWidget
from napari_autostructn2v.widgets.train import TrainWidget

SCALE, TRANSLATE = (2.0, 0.5), (10.0, -5.0)
TIMEOUT = 60000


@pytest.fixture(scope="module")
def tiny_model():
    stage = dict(patch_size=32, batch_size=4, epochs=1, steps_per_epoch=3)
    config = Config(stage1=StageConfig(**stage), stage2=StageConfig(use_roi=False, **stage), base_channels=8, device="cpu")
    return fit(make_sample((96, 96))[1], config)


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(make_sample((128, 128))[1], name="noisy", scale=SCALE, translate=TRANSLATE)
    return viewer


@pytest.fixture
def widget(viewer):
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Denoise")
    return widget


@pytest.fixture
def errors(monkeypatch):
    messages = []
    monkeypatch.setattr(denoise_module, "show_error", messages.append)
    return messages


def run_to_end(qtbot, widget):
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    assert widget.worker is None and widget.run_button.enabled


def test_trained_model_saved_then_loaded_reproduces_the_training_output(qtbot, tmp_path, viewer, widget):
    trainer = TrainWidget(viewer)
    set_stage_budget(trainer, epochs=1, steps_per_epoch=3, batch_size=4, patch_size=32)
    trainer.base_channels.value = 8
    trainer.start()
    qtbot.waitUntil(lambda: not trainer.running, timeout=TIMEOUT)
    trained = viewer.layers["noisy denoised"].data.copy()
    trainer.model_path.value = tmp_path / "model.pt"
    trainer.save()
    viewer.layers.remove("noisy denoised")

    widget.model_path.value = tmp_path / "model.pt"
    assert widget.source.value == FILE and "Loaded model.pt" in widget.status.value
    widget.image.value = viewer.layers["noisy"]
    run_to_end(qtbot, widget)
    output = viewer.layers["noisy denoised"]
    np.testing.assert_allclose(output.data, trained, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output.scale, SCALE)
    np.testing.assert_allclose(output.translate, TRANSLATE)
    assert widget.progress.value == widget.progress.max


def test_session_model_denoises_a_stack_by_tiles(qtbot, viewer, widget, tiny_model):
    set_model(viewer, tiny_model)
    stack = np.stack([make_sample((150, 130), seed=s)[1] for s in range(3)])
    viewer.add_image(stack, name="stack", scale=(3.0, *SCALE))
    widget.image.value = viewer.layers["stack"]
    widget.tile_size.value = 96  # several tiles per slice
    run_to_end(qtbot, widget)
    output = viewer.layers["stack denoised"]
    assert output.data.shape == stack.shape and widget.progress.max > 3
    np.testing.assert_allclose(output.data, denoise(tiny_model, stack, tile_size=96), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output.scale, (3.0, *SCALE))


def test_blind_spot_inference_can_be_switched_off(qtbot, viewer, widget, tiny_model):
    model = copy.deepcopy(tiny_model)
    model.struct_mask = preset_mask("horizontal", 5)
    set_model(viewer, model)
    image = viewer.layers["noisy"].data
    assert widget.blind_spot.value  # on by default
    for blind_spot in (True, False):
        widget.blind_spot.value = blind_spot
        run_to_end(qtbot, widget)
        output = viewer.layers.pop(viewer.layers.index("noisy denoised"))
        np.testing.assert_allclose(output.data, denoise(model, image, blind_spot=blind_spot), rtol=1e-5, atol=1e-6)
    assert np.abs(denoise(model, image) - denoise(model, image, blind_spot=False)).max() > 1e-3


def test_a_bioimageio_package_is_opened_and_denoises_like_its_model(qtbot, tmp_path, viewer, widget, errors,
                                                                    tiny_model):
    from napari_autostructn2v.core.bioimageio import export_bioimageio

    export_bioimageio(tiny_model, tmp_path / "model.zip")
    widget.model_path.value = tmp_path / "model.zip"
    assert widget.source.value == FILE and "Loaded model.zip" in widget.status.value
    widget.image.value = viewer.layers["noisy"]
    run_to_end(qtbot, widget)
    expected = denoise(tiny_model, viewer.layers["noisy"].data)
    np.testing.assert_array_equal(viewer.layers["noisy denoised"].data, expected)

    foreign = tmp_path / "foreign.zip"
    foreign.write_bytes(b"not a zip")
    widget.model_path.value = foreign
    assert "not a zip archive" in errors[-1] and "not a zip archive" in widget.status.value


def test_missing_model_bad_file_and_rgb_give_notifications(qtbot, tmp_path, viewer, widget, errors, tiny_model):
    widget.image.value = viewer.layers["noisy"]
    widget.run()
    assert "No model was trained" in errors[-1] and widget.worker is None

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    widget.model_path.value = bad
    assert "not a readable" in errors[-1]
    widget.run()
    assert widget.worker is None

    set_model(viewer, tiny_model)
    widget.source.value = "session"
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    widget.image.value = viewer.layers["rgb"]
    widget.run()
    assert "RGB" in errors[-1] and widget.worker is None
    widget.image.value = viewer.layers["noisy"]
    run_to_end(qtbot, widget)
    assert "noisy denoised" in viewer.layers


def test_a_model_file_that_failed_is_not_read_again_until_it_changes(tmp_path, monkeypatch, viewer, widget, errors,
                                                                     tiny_model):
    reads = []
    monkeypatch.setattr(denoise_module, "load_model", lambda path: reads.append(path) or load_model(path))
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a model")
    widget.model_path.value = path
    assert len(reads) == 1 and len(errors) == 1 and "not a readable" in errors[-1]
    for name in ("a", "b"):  # every layer event offers the axes again, which asks for the model
        viewer.add_image(np.zeros((32, 32), np.float32), name=name)
    assert len(reads) == 1 and len(errors) == 1
    with pytest.raises(ModelFileError, match="not a readable"):
        widget.model()
    assert len(reads) == 1

    save_model(tiny_model, path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a coarse clock may not tick
    viewer.add_image(np.zeros((32, 32), np.float32), name="c")
    assert len(reads) == 2 and widget.model().channels == tiny_model.channels
    widget.model()
    assert len(reads) == 2


def test_stop_cancels_denoising(qtbot, viewer, widget, tiny_model):
    set_model(viewer, tiny_model)
    viewer.add_image(np.random.default_rng(0).random((8, 512, 512), np.float32), name="big")
    widget.image.value = viewer.layers["big"]
    widget.tile_size.value = 96
    widget.run()
    worker = widget.worker
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=TIMEOUT)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        widget.stop()
    qtbot.wait(100)  # progress events still queued must not overwrite the final status
    assert "big denoised" not in viewer.layers
    assert widget.status.value.startswith("Denoising cancelled after ") and widget.status.value.endswith(" tiles.")
    assert widget.run_button.enabled


def test_the_active_image_is_the_default_and_every_control_has_a_tooltip(viewer):
    viewer.add_image(np.zeros((64, 64), np.float32), name="other")
    viewer.add_image(np.zeros((64, 64), np.float32), name="last")
    viewer.layers.selection.active = viewer.layers["other"]  # neither the first nor the last
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is viewer.layers["other"]
    controls = [widget.source, widget.model_path, widget.image, widget.tile_size, widget.run_button,
                widget.stop_button]
    assert all(control.tooltip for control in controls)


def test_a_dask_layer_gives_a_lazy_layer_equal_to_denoising_in_memory(qtbot, viewer, widget, tiny_model):
    import dask.array as da

    set_model(viewer, tiny_model)
    stack = np.stack([make_sample((150, 130), seed=s)[1] for s in range(2)])
    viewer.add_image(da.from_array(stack, chunks=(1, 64, 64)), name="lazy", scale=(3.0, *SCALE))
    widget.image.value = viewer.layers["lazy"]
    widget.tile_size.value = 96
    widget.run()
    assert widget.worker is None  # nothing computed up front: the layer computes what it shows
    output = viewer.layers["lazy denoised"]
    assert isinstance(output.data, da.Array) and output.data.shape == stack.shape
    np.testing.assert_allclose(output.data.compute(), denoise(tiny_model, stack, tile_size=96), atol=1e-5)
    np.testing.assert_allclose(output.scale, (3.0, *SCALE))


def test_a_multiscale_layer_gives_its_full_resolution_denoised_lazily(qtbot, viewer, widget, tiny_model):
    import dask.array as da

    set_model(viewer, tiny_model)
    image = make_sample((160, 144), seed=4)[1]
    viewer.add_image([da.from_array(image, chunks=64), da.from_array(image[::2, ::2], chunks=64)], multiscale=True,
                     name="pyramid")
    widget.image.value = viewer.layers["pyramid"]
    widget.run()
    output = viewer.layers["pyramid denoised"]
    assert not output.multiscale and isinstance(output.data, da.Array)
    np.testing.assert_allclose(output.data.compute(), denoise(tiny_model, image), atol=1e-5)


def test_the_tile_size_holds_only_automatic_or_sides_that_denoising_accepts(widget):
    tile = widget.tile_size
    assert tile.value == 0
    tile.native.stepBy(1)  # one step up from automatic: the smallest side offered
    assert tile.value == MIN_TILE
    tile.value = 40  # typed, down from a valid side
    assert tile.value == 0
    tile.value = 50  # typed, up from automatic
    assert tile.value == MIN_TILE


def test_older_objects_are_frozen_while_denoising_and_given_back_after(qtbot, viewer, widget, tiny_model):
    """Full garbage collections (150-200 ms with napari and torch loaded) walk only what the run creates."""
    set_model(viewer, tiny_model)
    frozen = []
    widget.progress.changed.connect(lambda *_: frozen.append(gc.get_freeze_count()))
    run_to_end(qtbot, widget)
    assert frozen and min(frozen) > 0
    assert gc.get_freeze_count() == 0
