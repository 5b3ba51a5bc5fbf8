"""bioimage.io model packages: export a trained denoiser, and open one exported here.

The package holds the weights twice (a PyTorch state dict with `unet.py` as its architecture, and
TorchScript), pre- and post-processing that apply this package's normalisation, a test input and
its denoised output, a before/after cover, and a README. The architecture is
`MirrorPaddedUNet`: it mirrors the borders as tiled `denoise` does, so a bioimage.io runtime given a
whole image returns what `denoise` returns. The training configuration, normalisation and structN2V
mask travel in the description's `config`, from which `load_bioimageio` rebuilds the model.

Needs the optional `bioimageio` extra: pip install "napari-autostructn2v[bioimageio]".
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from . import unet as unet_module
from .errors import InputError, ModelFileError
from .files import atomic_write
from .images import as_slices, check_image
from .inference import denoise
from .model import FORMAT, FORMAT_VERSION, DenoisingModel, _first_line, check_model, model_from_payload
from .unet import MirrorPaddedUNet

CONFIG_KEY = "napari_autostructn2v"
MARGIN = 32  # pixels mirrored around each input: the default overlap of `denoise`
TEST_SIDE = 256  # the test image is the centre of the example image, at most this many pixels a side
INSTALL_HINT = 'install the bioimageio extra: pip install "napari-autostructn2v[bioimageio]"'
DESCRIPTOR_NAMES = ("rdf.yaml", "bioimageio.yaml")
TEST_VALUE_FLOOR = 1e-4  # bioimageio.spec refuses test tensors without a value this far from 0

CITATIONS = {
    "n2v": ("Krull, Buchholz, Jug. Noise2Void - Learning denoising from single noisy images. CVPR 2019.",
            "10.1109/CVPR.2019.00223"),
    "structn2v": ("Broaddus, Krull, Weigert, Schmidt, Myers. Removing structured noise with self-supervised "
                  "blind-spot networks. ISBI 2020.", "10.1109/ISBI45749.2020.9098336"),
    "n2v2": ("Hoeck, Buchholz, Krull, Jug et al. N2V2 - Fixing Noise2Void checkerboard artifacts with modified "
             "sampling strategies and a tweaked network architecture. ECCV Workshops 2022.",
             "10.1007/978-3-031-25069-9_33"),
}


def _require_spec() -> None:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise ModelFileError(f"bioimage.io packages need the bioimageio.spec package; {INSTALL_HINT}.") from None


def is_bioimageio_package(path: str | Path) -> bool:
    """True for a .zip file or a zip archive that holds a bioimage.io description (not a torch archive)."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name in DESCRIPTOR_NAMES for name in archive.namelist())


def export_bioimageio(
    model: DenoisingModel,
    path: str | Path,
    image=None,
    name: str = "autoStructN2V denoiser",
    authors: tuple[str, ...] = ("napari-autostructn2v user",),
    license: str = "CC-BY-4.0",
) -> Path:
    """Write `model` as a bioimage.io model package (.zip) and return its path.

    `image` (2D or a stack; its first slice is used) gives the test input and the cover; without it,
    the embedded structured-noise sample is used. The package is validated with bioimageio.spec
    before it replaces `path`.
    """
    _require_spec()
    check_model(model)
    if model.channels > 1 or model.net.dims != 2:
        raise InputError("bioimage.io export covers models of one channel and the 2D network so far; this one has "
                         f"{model.channels} channel(s) and the {model.config.network} network.")
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise InputError(f"A bioimage.io package name must end in .zip; got {path.name}.")
    test_input = _test_image(image)
    test_output = denoise(model, test_input, overlap=MARGIN)
    for array, what in ((test_input, "example image"), (test_output, "denoised example")):
        if np.abs(array).max() < TEST_VALUE_FLOOR:
            raise InputError(f"The {what} is (almost) all zero: bioimage.io needs values of at least "
                             f"{TEST_VALUE_FLOOR:g} to test the package. Choose an image with signal.")
    with tempfile.TemporaryDirectory(prefix="autostructn2v-bioimageio-") as folder:
        files = _write_files(Path(folder), model, test_input, test_output)
        description = _describe(model, files, name, list(authors), license)
        from bioimageio.spec import save_bioimageio_package

        atomic_write(path, lambda temporary: save_bioimageio_package(description, output_path=temporary))
    return path


def _test_image(image) -> np.ndarray:
    if image is None:
        from .sample import make_sample

        image = make_sample((TEST_SIDE, TEST_SIDE))[1]
    plane = as_slices(check_image(image, "image"))[0]
    top = max(0, (plane.shape[0] - TEST_SIDE) // 2)
    left = max(0, (plane.shape[1] - TEST_SIDE) // 2)
    return np.ascontiguousarray(plane[top : top + TEST_SIDE, left : left + TEST_SIDE], dtype=np.float32)


def _padded_net(model: DenoisingModel) -> MirrorPaddedUNet:
    net = model.net
    padded = MirrorPaddedUNet(model.config.base_channels, net.depth, net.n2v2, MARGIN)
    padded.unet.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    return padded.eval()


def _write_files(folder: Path, model: DenoisingModel, test_input: np.ndarray, test_output: np.ndarray) -> dict:
    """The package's files, written to `folder`: name -> path."""
    files = {name: folder / name for name in (
        "weights.pt", "weights_torchscript.pt", "unet.py", "test_input.npy", "test_output.npy", "cover.png",
        "README.md")}
    padded = _padded_net(model)
    torch.save(padded.state_dict(), files["weights.pt"])
    with warnings.catch_warnings():  # TorchScript is deprecated in torch but is what Java runtimes load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(padded).save(str(files["weights_torchscript.pt"]))
    shutil.copyfile(unet_module.__file__, files["unet.py"])
    np.save(files["test_input.npy"], test_input[None, None])
    np.save(files["test_output.npy"], test_output[None, None])
    _write_cover(files["cover.png"], test_input, test_output)
    files["README.md"].write_text(_readme(model), encoding="utf-8")
    return files


def _write_cover(path: Path, before: np.ndarray, after: np.ndarray) -> None:
    """Noisy and denoised side by side, each shown from its 0.5th to its 99.5th percentile."""
    from skimage.exposure import rescale_intensity
    from skimage.io import imsave

    def grey(image: np.ndarray) -> np.ndarray:
        return rescale_intensity(image, in_range=tuple(np.percentile(image, (0.5, 99.5))), out_range=(0.0, 1.0))

    gap = np.ones((before.shape[0], max(2, before.shape[1] // 64)), np.float32)
    row = np.concatenate([grey(before), gap, grey(after)], axis=1)
    imsave(path, (row * 255).astype(np.uint8), check_contrast=False)


def _mask_text(mask: np.ndarray | None) -> str:
    if mask is None:
        return "none (Noise2Void only)"
    return " / ".join("".join("#" if v else "." for v in row) for row in mask)


def _readme(model: DenoisingModel) -> str:
    config = json.dumps(model.config.to_dict(), indent=2)
    variant = "N2V2 UNet (no top skip connection, blur-max pooling)" if model.net.n2v2 else "UNet"
    references = "\n".join(f"- {text} doi:{doi}" for key, (text, doi) in CITATIONS.items()
                           if key != "n2v2" or model.net.n2v2)
    mask = _mask_text(model.struct_mask).replace(" / ", "\n")
    return f"""# autoStructN2V denoiser

Self-supervised denoiser trained with napari-autostructn2v: Noise2Void, then structN2V with a mask
estimated from the noise of the training image.

## Use

- Input: one 2D grey-level image (batch, channel, y, x), float32, any size.
- Pre-processing: (x - {model.normalisation.mean:.6g}) / {model.normalisation.std:.6g} (the training images' mean and
  standard deviation); post-processing maps the result back to the input's units.
- Network: {variant}, {model.config.base_channels} base channels, depth {model.net.depth}. It mirrors {MARGIN} pixels
  around its input, so whole images need no tiling; tilers should overlap tiles by at least {MARGIN} pixels.
- In napari-autostructn2v: `load_model("this.zip")`, the Denoise widget's model file, or
  `autostructn2v denoise IMAGE.tif -m this.zip -o OUT.tif`.

## structN2V mask

'#' pixels were hidden together with the centre pixel during training:

```
{mask}
```

## Training configuration

```json
{config}
```

## Validation

The test input is the centre of an image the model was exported with; the test output is what
napari-autostructn2v's `denoise` returned for it. bioimage.io runtimes reproduce it from either set of weights.

## Limitations

Trained on the user's own images, without ground truth: check the result against the raw image.
Structured noise with another orientation or spacing than the training images' is not removed.

## References

{references}
"""


def _describe(model: DenoisingModel, files: dict, name: str, authors: list[str], license: str):
    """The model description (bioimageio.spec validates each part as it is built)."""
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromFileDescr, Author, AxisId, BatchAxis, ChannelAxis, CiteEntry, FileDescr,
        FixedZeroMeanUnitVarianceDescr, FixedZeroMeanUnitVarianceKwargs, Identifier, InputTensorDescr,
        IntervalOrRatioDataDescr, ModelDescr, OutputTensorDescr, ParameterizedSize, PytorchStateDictWeightsDescr,
        ScaleLinearDescr, ScaleLinearKwargs, SizeReference, SpaceInputAxis, SpaceOutputAxis, TensorId,
        TorchscriptWeightsDescr, Version, WeightsDescr,
    )

    mean, std = float(model.normalisation.mean), float(model.normalisation.std)
    input_id = TensorId("raw")
    channel = ChannelAxis(channel_names=[Identifier("intensity")])
    inputs = [InputTensorDescr(
        id=input_id,
        description="noisy 2D image",
        axes=[BatchAxis(), channel] + [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=1, step=1))
                                       for a in "yx"],
        test_tensor=FileDescr(source=files["test_input.npy"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[FixedZeroMeanUnitVarianceDescr(kwargs=FixedZeroMeanUnitVarianceKwargs(mean=mean, std=std))],
    )]
    outputs = [OutputTensorDescr(
        id=TensorId("denoised"),
        description="denoised image, in the input's units",
        axes=[BatchAxis(), channel] + [SpaceOutputAxis(id=AxisId(a), size=SizeReference(
            tensor_id=input_id, axis_id=AxisId(a))) for a in "yx"],
        test_tensor=FileDescr(source=files["test_output.npy"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[ScaleLinearDescr(kwargs=ScaleLinearKwargs(gain=std, offset=mean))],
    )]
    torch_version = Version(torch.__version__.split("+")[0])
    architecture = ArchitectureFromFileDescr(
        source=files["unet.py"], callable=Identifier(MirrorPaddedUNet.__name__),
        kwargs={"base_channels": model.config.base_channels, "depth": model.net.depth, "n2v2": model.net.n2v2,
                "margin": MARGIN},
    )
    weights = WeightsDescr(
        pytorch_state_dict=PytorchStateDictWeightsDescr(
            source=files["weights.pt"], architecture=architecture, pytorch_version=torch_version),
        torchscript=TorchscriptWeightsDescr(
            source=files["weights_torchscript.pt"], pytorch_version=torch_version, parent="pytorch_state_dict"),
    )
    cite = [CiteEntry(text=text, doi=doi) for key, (text, doi) in CITATIONS.items()
            if key != "n2v2" or model.net.n2v2]
    try:
        return ModelDescr(
            name=name,
            description=(f"Self-supervised denoiser (Noise2Void, then structN2V) trained with napari-autostructn2v; "
                         f"structN2V mask: {_mask_text(model.struct_mask)}."),
            authors=[Author(name=author) for author in authors],
            cite=cite,
            license=license,
            documentation=FileDescr(source=files["README.md"]),
            covers=[FileDescr(source=files["cover.png"])],
            tags=["denoising", "noise2void", "structn2v", "self-supervised", "2d", "pytorch", "napari"],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            config={CONFIG_KEY: _payload(model)},
        )
    except ValidationError as err:  # a bad name, author or licence
        raise InputError(f"The bioimage.io description is invalid: {_first_problem(err, license)}") from None


def _first_problem(err: ValidationError, license: str) -> str:
    first = err.errors()[0]
    if first["loc"] and first["loc"][0] == "license":
        return f"license {license!r} is not an SPDX licence identifier such as CC-BY-4.0, MIT or BSD-3-Clause."
    where = ".".join(str(part) for part in first["loc"] if "[" not in str(part))
    return f"{where}: {first['msg'][:300]}"


def _payload(model: DenoisingModel) -> dict:
    """What `load_model` needs besides the weights, as plain YAML values."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.loads(json.dumps(model.config.to_dict())),
        "n2v2": model.net.n2v2,
        "margin": MARGIN,
        "normalisation": [float(model.normalisation.mean), float(model.normalisation.std)],
        "struct_mask": None if model.struct_mask is None else model.struct_mask.astype(bool).tolist(),
    }


def load_bioimageio(path: str | Path, device: str = "cpu") -> DenoisingModel:
    """Open a bioimage.io package written by `export_bioimageio`; anything else raises ModelFileError."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a zip archive, so not a bioimage.io model package.")
    with zipfile.ZipFile(path) as archive:
        if not any(name in DESCRIPTOR_NAMES for name in archive.namelist()):
            raise ModelFileError(f"{path} is a zip archive without rdf.yaml, so not a bioimage.io model package.")
    _require_spec()
    from bioimageio.spec import InvalidDescr, load_model_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            description = load_model_description(path, perform_io_checks=True)
        except Exception as err:  # the loader raises many kinds on malformed archives
            raise ModelFileError(f"{path} is not a valid bioimage.io model ({_loader_problem(err)}).") from None
    if isinstance(description, InvalidDescr):
        raise ModelFileError(f"{path} is not a valid bioimage.io model ({_first_error(description)}).")
    payload = (description.config.model_extra or {}).get(CONFIG_KEY) if isinstance(description, ModelDescr) else None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is a bioimage.io model, but not one exported by napari-autostructn2v; run it with "
            "bioimageio.core or the tool that made it.")
    weights = description.weights.pytorch_state_dict
    if weights is None:
        raise ModelFileError(f"{path} lacks its PyTorch state dict weights.")
    try:
        state = torch.load(io.BytesIO(weights.get_reader().read()), map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign weights file: refused, never unpickled unsafely
        raise ModelFileError(f"{path} holds unreadable weights ({_first_line(err)}).") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} holds weights that are not a mapping of names to tensors.")
    prefix = "unet."
    if not all(isinstance(key, str) and key.startswith(prefix) for key in state):
        raise ModelFileError(f"{path} holds weights of another architecture than MirrorPaddedUNet.")
    _check_consistency(path, description, payload)
    return model_from_payload({**payload, "state_dict": {k[len(prefix):]: v for k, v in state.items()}}, path, device)


def _check_consistency(path: Path, description, payload: dict) -> None:
    """What runtimes use (architecture, pre-processing) must agree with the configuration import uses."""
    edited = "the package was edited after export. Export it again from the .pt model."
    architecture = description.weights.pytorch_state_dict.architecture
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    expected = {"base_channels": config.get("base_channels"), "depth": config.get("depth"),
                "n2v2": payload.get("n2v2"), "margin": payload.get("margin")}
    if architecture.callable != MirrorPaddedUNet.__name__ or dict(architecture.kwargs) != expected:
        raise ModelFileError(f"{path}: its architecture ({architecture.callable} with {dict(architecture.kwargs)}) "
                             f"is not the one its configuration describes; {edited}")
    steps = [step for step in description.inputs[0].preprocessing if step.id == "fixed_zero_mean_unit_variance"]
    try:
        same = bool(steps) and np.allclose([steps[0].kwargs.mean, steps[0].kwargs.std], payload.get("normalisation"),
                                           rtol=1e-6, atol=0)
    except (TypeError, ValueError):  # a normalisation that is not two numbers
        same = False
    if not same:
        raise ModelFileError(f"{path}: its pre-processing does not match the normalisation in its configuration; "
                             f"{edited}")


def _loader_problem(err: BaseException) -> str:
    """The first specific line of the loader's message (it starts with a heading such as 'Invalid ...:')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "yaml" in type(err).__module__.lower():
        return f"its rdf.yaml is not valid YAML: {_first_line(err)}"
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[1][:300]
    return _first_line(err)


def _first_error(description) -> str:
    summary = description.validation_summary
    errors = [error for detail in summary.details for error in detail.errors]
    if not errors:
        return "validation failed"
    first = errors[0]
    return f"{'.'.join(map(str, first.loc))}: {first.msg}"[:300]

