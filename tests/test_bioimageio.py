"""bioimage.io export and import: a tiny trained model, validated by bioimageio.spec and run by bioimageio.core."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile

from conftest import make_tiny_config
from napari_autostructn2v import ModelFileError, denoise, export_bioimageio, load_model, save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.bioimageio import CONFIG_KEY
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.model import in_float32
from napari_autostructn2v.core.sample import make_sample
from napari_autostructn2v.core.training import fit

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def trained():
    """A tiny structN2V model trained on the horizontal-noise sample."""
    import torch

    torch.set_num_threads(1)
    # with batch norms: a tiny network without them barely leaves its flat start in these few steps
    model = fit(make_sample((96, 96))[1], make_tiny_config(batch_norm=True))
    assert model.struct_mask is not None
    return model


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    """The model exported with a 90 x 70 example (not a multiple of the UNet's 4)."""
    example = make_sample((90, 70), seed=3)[1]
    return export_bioimageio(trained, tmp_path_factory.mktemp("export") / "model.zip", example), example


def read_rdf(path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("rdf.yaml").decode()


def test_export_is_a_valid_package_with_everything_the_issue_lists(package, trained):
    from bioimageio.spec import load_model_description

    path, example = package
    description = load_model_description(path, perform_io_checks=True)
    assert description.validation_summary.status in ("valid-format", "passed")
    assert description.format_version.startswith("0.5")
    weights = description.weights
    assert weights.pytorch_state_dict.architecture.callable == "MirrorPaddedUNet"
    assert str(weights.pytorch_state_dict.architecture.source).endswith("unet.py")
    assert weights.torchscript is not None
    assert [step.id for step in description.inputs[0].preprocessing if step.id != "ensure_dtype"] == [
        "fixed_zero_mean_unit_variance"]
    assert [step.id for step in description.outputs[0].postprocessing if step.id != "ensure_dtype"] == [
        "scale_linear"]
    assert {str(entry.doi) for entry in description.cite} >= {"10.1109/CVPR.2019.00223",
                                                              "10.1109/ISBI45749.2020.9098336"}
    assert str(description.license) == "CC-BY-4.0" and len(description.covers) == 1
    stored = description.config.model_extra[CONFIG_KEY]
    assert np.array_equal(np.array(stored["struct_mask"]), trained.struct_mask)
    assert stored["config"] == json.loads(json.dumps(trained.config.to_dict()))
    with zipfile.ZipFile(path) as archive:
        readme = archive.read("README.md").decode()
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    assert "structN2V mask" in readme and "#" in readme and '"stage1"' in readme
    assert test_input.shape == (1, 1, 90, 70) and test_input.dtype == np.float32
    np.testing.assert_array_equal(test_input[0, 0], example)
    np.testing.assert_array_equal(test_output[0, 0], denoise(in_float32(trained), example, blind_spot=False))


def test_bioimageio_core_model_test_passes_for_both_weight_formats(package):
    from bioimageio.core import test_model

    summary = test_model(package[0])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = " ".join(d.name for d in summary.details)
    assert "pytorch_state_dict" in tested and "torchscript" in tested


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_prediction_equals_denoise(package, trained, weight_format):
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    pipeline = create_prediction_pipeline(load_model_description(package[0]), weight_format=weight_format)
    image = make_sample((300, 270), seed=5)[1]  # several 256-pixel tiles for denoise, one whole image here
    (output,) = predict(model=pipeline, inputs=image[None, None]).members.values()
    expected = denoise(in_float32(trained), image, blind_spot=False)  # other tools: one pass, float32
    assert expected.std() > 0.01  # not a flat output
    assert np.abs(output.data.values[0, 0] - expected).max() <= TOLERANCE


def test_import_gives_the_same_model_and_output(package, trained):
    model = load_model(package[0])
    np.testing.assert_array_equal(model.struct_mask, trained.struct_mask)
    assert model.normalisation == trained.normalisation and model.config == trained.config
    assert model.net.n2v2 == trained.net.n2v2
    image = make_sample((120, 100), seed=7)[1]
    np.testing.assert_array_equal(denoise(model, image), denoise(trained, image))


def test_architecture_file_runs_where_this_package_is_not_installed(package, tmp_path):
    """A bioimage.io runtime has torch, the package's unet.py and weights, and not napari_autostructn2v."""
    with zipfile.ZipFile(package[0]) as archive:
        archive.extractall(tmp_path)
    script = f"""
import sys
sys.modules["napari_autostructn2v"] = None  # importing it would fail
import importlib.util, numpy as np, torch
spec = importlib.util.spec_from_file_location("unet", r"{tmp_path / 'unet.py'}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
net = module.MirrorPaddedUNet(**{{k: v for k, v in {_architecture_kwargs(package[0])!r}.items()}}).eval()
net.load_state_dict(torch.load(r"{tmp_path / 'weights.pt'}", weights_only=True))
mean, std = {_normalisation(package[0])!r}
x = torch.from_numpy(np.load(r"{tmp_path / 'test_input.npy'}"))
with torch.no_grad():
    y = net((x - mean) / std) * std + mean
print(float(np.abs(y.numpy() - np.load(r"{tmp_path / 'test_output.npy'}")).max()))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) <= TOLERANCE


def _architecture_kwargs(path) -> dict:
    from bioimageio.spec import load_model_description

    return dict(load_model_description(path).weights.pytorch_state_dict.architecture.kwargs)


def _normalisation(path) -> tuple[float, float]:
    from bioimageio.spec import load_model_description

    return tuple(load_model_description(path).config.model_extra[CONFIG_KEY]["normalisation"])


def _rewrite(source, target, edit) -> None:
    """Copy the package `source` to `target` with rdf.yaml's text changed by `edit`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            copy.writestr(item, edit(data.decode()).encode() if item.filename == "rdf.yaml" else data)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace(f"{CONFIG_KEY}:", "another_tool:"), "not one exported by napari-autostructn2v"),
    (lambda text: text.replace("format: napari-autostructn2v model", "format: other"), "not one exported"),
    (lambda text: text.replace("inputs:", "inputs: [", 1), "not a valid bioimage.io model .its rdf.yaml is not valid"),
    (lambda text: text.replace("callable: MirrorPaddedUNet", "callable: Other"), "its architecture .Other"),
    (lambda text: text.replace("margin: 32", "margin: 8", 1), "its architecture .MirrorPaddedUNet"),
    (lambda text: text.replace("type: model", "type: modelx", 1), "not a valid bioimage.io model"),
    (lambda text: text.replace("std: ", "std: 1", 1), "pre-processing does not match"),
])
def test_foreign_or_malformed_packages_are_refused(package, tmp_path, edit, message):
    target = tmp_path / "edited.zip"
    _rewrite(package[0], target, edit)
    with pytest.raises(ModelFileError, match=message):
        load_model(target)


def test_a_package_with_damaged_weights_is_refused(package, tmp_path):
    target = tmp_path / "damaged.zip"
    with zipfile.ZipFile(package[0]) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            copy.writestr(item, b"junk" if item.filename == "weights.pt" else original.read(item))
    with pytest.raises(ModelFileError, match=r"not a valid bioimage.io model \(weights.*SHA256 mismatch"):
        load_model(target)


def test_archives_that_are_not_packages_are_refused(tmp_path):
    not_zip = tmp_path / "text.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(ModelFileError, match="not a zip archive"):
        load_model(not_zip)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="without rdf.yaml"):
        load_model(other)


def test_export_refuses_bad_arguments(trained, tmp_path):
    with pytest.raises(InputError, match="must end in .zip"):
        export_bioimageio(trained, tmp_path / "model.pt")
    with pytest.raises(InputError, match="RGB"):
        export_bioimageio(trained, tmp_path / "model.zip", np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="DenoisingModel"):
        export_bioimageio("model.pt", tmp_path / "model.zip")
    with pytest.raises(InputError, match="example image is .almost. all zero"):
        export_bioimageio(trained, tmp_path / "model.zip", np.zeros((64, 64), np.float32))
    with pytest.raises(InputError, match="'my own' is not an SPDX licence identifier"):
        export_bioimageio(trained, tmp_path / "model.zip", license="my own")
    with pytest.raises(InputError, match="^The bioimage.io description is invalid: name: "):
        export_bioimageio(trained, tmp_path / "model.zip", name="")
    assert not (tmp_path / "model.zip").exists()


def test_command_line_export_then_denoise_with_the_package(trained, tmp_path, capsys):
    save_model(trained, tmp_path / "model.pt")
    image = make_sample((80, 100), seed=9)[1]
    tifffile.imwrite(tmp_path / "image.tif", image)
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "model.zip"),
                 "--image", str(tmp_path / "image.tif"), "--author", "Ada Lovelace"]) == 0
    assert "Ada Lovelace" in read_rdf(tmp_path / "model.zip")
    assert main(["denoise", str(tmp_path / "image.tif"), "-m", str(tmp_path / "model.zip"),
                 "-o", str(tmp_path / "out.tif"), "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), denoise(trained, image))
    assert main(["export", str(tmp_path / "model.pt"), "-o", str(tmp_path / "model.zip")]) == 2
    assert "exists" in capsys.readouterr().err


def test_without_the_bioimageio_extra_export_and_import_say_what_to_install(trained, package, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # as if not installed
    with pytest.raises(ModelFileError, match=r"pip install \"napari-autostructn2v\[bioimageio\]\""):
        export_bioimageio(trained, tmp_path / "model.zip")
    with pytest.raises(ModelFileError, match="bioimageio extra"):
        load_model(package[0])
