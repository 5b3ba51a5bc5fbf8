"""bioimage.io packages of channel models (one network or one per channel) and of 3D models.

The models are untrained (export does not depend on training); masks are set by hand so that each
channel's mask, and a 3D mask, travel through the package.
"""

import zipfile

import numpy as np
import pytest

from conftest import make_channel_image as channel_image, make_channel_volume as channel_volume
from conftest import make_random_model as make_model
from napari_autostructn2v import ModelFileError, denoise, export_bioimageio, load_model, save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.bioimageio import CONFIG_KEY
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.model import in_float32
from napari_autostructn2v.core.sample import make_sample, make_volume

TOLERANCE = 1e-4
LINE = np.zeros((5, 5), bool)
LINE[2] = True  # horizontal structN2V mask
DOT = np.zeros((3, 3), bool)
DOT[1, 1] = True


ROW = np.zeros((3, 3), bool)
ROW[1] = True
MASK_3D = np.stack([DOT, ROW, DOT])  # a row in the plane, and the pixels straight above and below
MODELS = {
    "channels": dict(channels=2, masks=[LINE, None], axes="CYX"),
    "separate_channels": dict(channels=2, separate=True, n2v2=True, masks=[LINE, LINE.T.copy()], axes="YXC"),
    "3d": dict(network="3d", channels=1, masks=MASK_3D, axes="ZYX"),
    "3d_channels": dict(network="3d", channels=2, masks=[LINE, None], axes="CZYX"),
}


# example images (and their axes) given at export; None: the embedded sample. Small volumes keep the tests quick.
EXAMPLES = {
    "channels": None,
    "separate_channels": (channel_image((90, 70)), "CYX"),
    "3d": (channel_volume((8, 24, 24)), "CZYX"),
    "3d_channels": (channel_volume((8, 24, 24), 2), "CZYX"),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Every model of MODELS exported with its example of EXAMPLES: name -> (model, path)."""
    folder = tmp_path_factory.mktemp("exports")
    found = {}
    for name, kwargs in MODELS.items():
        model = make_model(**kwargs)
        image, axes = EXAMPLES[name] or (None, None)
        found[name] = model, export_bioimageio(model, folder / f"{name}.zip", image, axes=axes)
    return found


@pytest.mark.parametrize("name", MODELS)
def test_channel_and_3d_packages_are_valid_and_describe_their_axes_and_normalisation(exports, name):
    from bioimageio.spec import load_model_description

    model, path = exports[name]
    description = load_model_description(path, perform_io_checks=True)
    assert description.validation_summary.status in ("valid-format", "passed")
    space = ["z", "y", "x"] if model.net.dims == 3 else ["y", "x"]
    for tensor in (description.inputs[0], description.outputs[0]):
        assert [str(axis.id) for axis in tensor.axes] == ["batch", "channel", *space]
        assert len(tensor.axes[1].channel_names) == model.channels
    (pre,) = [step for step in description.inputs[0].preprocessing if step.id != "ensure_dtype"]
    (post,) = [step for step in description.outputs[0].postprocessing if step.id != "ensure_dtype"]
    means = [model.normalisation.channel(c).mean for c in range(model.channels)]
    stds = [model.normalisation.channel(c).std for c in range(model.channels)]
    assert pre.id == "fixed_zero_mean_unit_variance" and post.id == "scale_linear"
    np.testing.assert_allclose(np.ravel(pre.kwargs.mean), means)
    np.testing.assert_allclose(np.ravel(pre.kwargs.std), stds)
    np.testing.assert_allclose(np.ravel(post.kwargs.offset), means)
    np.testing.assert_allclose(np.ravel(post.kwargs.gain), stds)
    kwargs = dict(description.weights.pytorch_state_dict.architecture.kwargs)
    # networks have no batch norms by default; the package says so (a 2D network with norms names none)
    assert kwargs == {"base_channels": 8, "depth": 2, "n2v2": model.net.n2v2, "margin": 32,
                      "channels": model.channels, "dims": model.net.dims, "separate": model.config.separate_channels,
                      "batch_norm": False}
    stored = description.config.model_extra[CONFIG_KEY]
    assert stored["axes"] == model.axes and len(stored["channel_masks"]) == model.channels
    with zipfile.ZipFile(path) as archive:
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
        readme = archive.read("README.md").decode()
    example = EXAMPLES[name][0] if EXAMPLES[name] else np.stack([make_sample((256, 256), seed=c)[1] for c in (0, 1)])
    np.testing.assert_array_equal(test_input[0], example)
    assert test_output.shape == test_input.shape and test_input.dtype == test_output.dtype == np.float32
    axes = "CZYX" if model.net.dims == 3 else "CYX"
    np.testing.assert_array_equal(test_output[0], denoise(in_float32(model), test_input[0], axes=axes, blind_spot=False))
    assert f"{model.channels} channel(s)" in readme and ("3D" in readme) == (model.net.dims == 3)


@pytest.mark.parametrize("name", ["separate_channels", "3d_channels"])
def test_bioimageio_core_model_test_passes(exports, name):
    from bioimageio.core import test_model

    summary = test_model(exports[name][1])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = " ".join(d.name for d in summary.details)
    assert "pytorch_state_dict" in tested and "torchscript" in tested


@pytest.mark.parametrize("name, image, tile_size", [
    ("channels", lambda: channel_image((150, 134)), 96),
    ("3d_channels", lambda: channel_volume((6, 36, 28), 2), 80),
])
@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_prediction_equals_denoise(exports, name, image, tile_size, weight_format):
    """bioimageio.core runs the whole image at once; `denoise` cuts it into several tiles (in Z too for 3D)."""
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    model, path = exports[name]
    data = image()
    pipeline = create_prediction_pipeline(load_model_description(path), weight_format=weight_format)
    (output,) = predict(model=pipeline, inputs=data[None]).members.values()
    axes = "CZYX" if model.net.dims == 3 else "CYX"
    expected = denoise(in_float32(model), data, tile_size=tile_size, axes=axes, blind_spot=False)  # the network alone
    assert all(expected[c].std() > 0.1 * model.normalisation.channel(c).std  # not a flat output
               for c in range(model.channels))
    assert np.abs(output.data.values[0] - expected).max() <= TOLERANCE


@pytest.mark.parametrize("name", MODELS)
def test_import_gives_the_same_model_and_output(exports, name):
    model, path = exports[name]
    imported = load_model(path)
    assert imported.config == model.config and imported.normalisation == model.normalisation
    assert imported.axes == model.axes and imported.net.n2v2 == model.net.n2v2
    for mine, theirs in zip(imported.channel_masks(), model.channel_masks(), strict=True):
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs)
    if model.net.dims == 3:
        image = channel_volume((8, 24, 20), model.channels)
        image = image[0] if model.channels == 1 else image
    else:
        image = np.moveaxis(channel_image((60, 50)), 0, -1) if model.axes == "YXC" else channel_image((60, 50))
    np.testing.assert_array_equal(denoise(imported, image), denoise(model, image))  # the training axes by default


def test_the_example_image_is_read_with_its_axes(tmp_path):
    model = make_model(channels=2, masks=[LINE, None], axes="CYX")
    image = channel_image((90, 70))
    path = export_bioimageio(model, tmp_path / "channels_last.zip", np.moveaxis(image, 0, -1), axes="YXC")
    with zipfile.ZipFile(path) as archive:
        np.testing.assert_array_equal(np.load(archive.open("test_input.npy"))[0], image)
    planes = np.stack([image, image[:, ::-1]], axis=1)  # CZYX: the 2D network takes the first plane
    path = export_bioimageio(model, tmp_path / "planes.zip", planes, axes="CZYX")
    with zipfile.ZipFile(path) as archive:
        np.testing.assert_array_equal(np.load(archive.open("test_input.npy"))[0], image)
    with pytest.raises(InputError, match="trained on 2 channel"):
        export_bioimageio(model, tmp_path / "three.zip", channel_image((64, 64), 3), axes="CYX")
    volume_model = make_model(network="3d", channels=1, axes="ZYX")
    with pytest.raises(InputError, match="3D network"):
        export_bioimageio(volume_model, tmp_path / "flat.zip", make_sample((64, 64))[1])
    volume = make_volume((40, 100, 90))[1]
    path = export_bioimageio(volume_model, tmp_path / "volume.zip", volume)  # the model's axes, ZYX
    with zipfile.ZipFile(path) as archive:
        np.testing.assert_array_equal(np.load(archive.open("test_input.npy"))[0, 0], volume[12:28, 18:82, 13:77])


def test_one_channel_2d_packages_keep_their_former_description(tmp_path):
    from bioimageio.spec import load_model_description

    former = {"base_channels": 8, "depth": 2, "n2v2": False, "margin": 32}
    plain = export_bioimageio(make_model(channels=1, masks=LINE, axes="YX"), tmp_path / "no_norms.zip")
    assert dict(load_model_description(plain).weights.pytorch_state_dict.architecture.kwargs) == {
        **former, "batch_norm": False}
    # a model with batch norms (every 2D model before they were off by default) is described as before
    model = make_model(channels=1, masks=LINE, axes="YX", batch_norm=True)
    path = export_bioimageio(model, tmp_path / "plain.zip")
    description = load_model_description(path)
    assert dict(description.weights.pytorch_state_dict.architecture.kwargs) == former
    assert set(description.config.model_extra[CONFIG_KEY]) == {
        "format", "version", "config", "n2v2", "margin", "normalisation", "struct_mask"}
    assert [str(axis.id) for axis in description.inputs[0].axes] == ["batch", "channel", "y", "x"]


def test_an_edited_channel_normalisation_is_refused(exports, tmp_path):
    _, path = exports["channels"]
    target = tmp_path / "edited.zip"
    import yaml

    with zipfile.ZipFile(path) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                (step,) = [step for step in rdf["inputs"][0]["preprocessing"] if step["id"] != "ensure_dtype"]
                step["kwargs"]["std"][1] = 0.25  # channel 1's standard deviation
                data = yaml.safe_dump(rdf).encode()
            copy.writestr(item, data)
    with pytest.raises(ModelFileError, match="pre-processing does not match"):
        load_model(target)


def test_command_line_exports_a_channel_model_with_its_example_axes(tmp_path, capsys):
    import tifffile

    model = make_model(channels=2, masks=[LINE, None], axes="CYX")
    save_model(model, tmp_path / "model.pt")
    image = channel_image((80, 64))
    tifffile.imwrite(tmp_path / "image.tif", np.moveaxis(image, 0, -1))
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "model.zip"),
                 "--image", str(tmp_path / "image.tif"), "--axes", "YXC"]) == 0
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        np.testing.assert_array_equal(np.load(archive.open("test_input.npy"))[0], image)
    assert main(["denoise", str(tmp_path / "image.tif"), "-m", str(tmp_path / "model.zip"), "--axes", "YXC",
                 "-o", str(tmp_path / "out.tif"), "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"),
                                  denoise(model, np.moveaxis(image, 0, -1), axes="YXC"))
