"""bioimage.io model packages: export a trained denoiser, and open one exported here.

2D and 3D networks, one channel or several (one network, or one per channel), are exported. The package holds the weights twice (a PyTorch state dict with `unet.py` as its architecture, and
TorchScript), pre- and post-processing that apply this package's normalisation, a test input and
its denoised output, a before/after cover, and a README. The architecture is
`MirrorPaddedUNet`: it mirrors the borders as tiled `denoise` does (in Z too for a 3D network), so a
bioimage.io runtime given a whole image or volume returns what `denoise` returns. Each channel is
normalised with its own mean and standard deviation. The training configuration, normalisation and structN2V
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
from .axes import canonical_image
from .config import has_batch_norm
from .inference import check_model_fits, denoise, model_axes
from .model import (FORMAT, OLDER_CONFIG, DenoisingModel, _first_line, check_model, in_float32, model_from_payload,
                    model_payload)
from .unet import MirrorPaddedUNet

CONFIG_KEY = "napari_autostructn2v"
MARGIN = 32  # pixels mirrored around each input: the default overlap of `denoise`
TEST_SIDE = 256  # the test image is the centre of the example image, at most this many pixels a side
TEST_VOLUME = (16, 64)  # for a 3D network: at most this many planes, and pixels a side in the plane
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
    return path.suffix.lower() == ".zip" or (zipfile.is_zipfile(path) and _has_descriptor(path))


def _has_descriptor(archive_path: Path) -> bool:
    """Whether the zip archive holds a bioimage.io description file."""
    with zipfile.ZipFile(archive_path) as archive:
        return any(name in DESCRIPTOR_NAMES for name in archive.namelist())


def _citations(model: DenoisingModel) -> list[tuple[str, str]]:
    """(text, doi) of the papers the model rests on: N2V2's only when it uses N2V2."""
    return [citation for key, citation in CITATIONS.items() if key != "n2v2" or model.net.n2v2]


def export_bioimageio(
    model: DenoisingModel,
    path: str | Path,
    image=None,
    name: str = "autoStructN2V denoiser",
    authors: tuple[str, ...] = ("napari-autostructn2v user",),
    license: str = "CC-BY-4.0",
    axes: str | None = None,
) -> Path:
    """Write `model` as a bioimage.io model package (.zip) and return its path.

    `image` gives the test input and the cover: its first sample, with every channel, and its first plane
    (2D network) or central planes (3D network), cropped to its centre. `axes` name the image's axes
    (None: the model's training axes when they fit, as for `denoise`). Without an image, the embedded
    structured-noise sample is used. The package is validated with bioimageio.spec before it replaces `path`.
    """
    _require_spec()
    check_model(model)
    if model.whitening is not None:
        raise InputError(
            "This model decorrelates its input along the noise's filter (whitening, chosen for first-order "
            "filtered noise) and colours its output back; a bioimage.io package runs the network alone, so other "
            "tools would get wrong output. Retrain with mask.whiten=False to export it, or share the .pt file."
        )
    if model.banding is not None:
        raise InputError(
            "This model removes each image's row or column offsets (banding) before the network; a bioimage.io "
            "package runs the network alone, so other tools would get striped output. Retrain with "
            "mask.remove_banding=False to export it, or share the .pt file."
        )
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise InputError(f"A bioimage.io package name must end in .zip; got {path.name}.")
    test_input = _test_image(model, image, axes)
    # the package holds the network alone, which other tools run in one pass and in float32: no blind-spot
    # inference, no bfloat16
    test_output = denoise(in_float32(model), test_input, overlap=MARGIN, axes=_tensor_axes(model), blind_spot=False)
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


def _tensor_axes(model: DenoisingModel) -> str:
    """The axes of the package's tensors after the batch: CYX, or CZYX for a 3D network."""
    return "CZYX" if model.net.dims == 3 else "CYX"


def _test_image(model: DenoisingModel, image, axes: str | None) -> np.ndarray:
    """The test input, (C, Y, X) or (C, Z, Y, X) float32: the centre of the example's first sample."""
    if image is None:
        image, axes = _default_example(model)
    array, found = canonical_image(image, model_axes(model, image, axes))
    check_model_fits(model, found)
    sample = array[0] if model.net.dims == 3 else array[0, :, :1]  # (C, Z, Y, X); the first plane for 2D
    depth, side = TEST_VOLUME if model.net.dims == 3 else (1, TEST_SIDE)
    crop = tuple(slice(max(0, (length - keep) // 2), max(0, (length - keep) // 2) + keep)
                 for length, keep in zip(sample.shape[1:], (depth, side, side)))
    test = sample[(slice(None), *crop)]
    return np.ascontiguousarray(test if model.net.dims == 3 else test[:, 0], dtype=np.float32)


def _default_example(model: DenoisingModel) -> tuple[np.ndarray, str]:
    """The embedded structured-noise sample, one seed per channel, as a plane or a volume."""
    from .sample import make_sample, make_volume

    if model.net.dims == 3:
        depth, side = TEST_VOLUME
        channels = [make_volume((depth, side, side), seed=channel)[1] for channel in range(model.channels)]
        return np.stack(channels), "CZYX"
    channels = [make_sample((TEST_SIDE, TEST_SIDE), seed=channel)[1] for channel in range(model.channels)]
    return np.stack(channels), "CYX"


def _architecture_kwargs(base_channels, depth, n2v2, channels, dims, separate, batch_norm=True) -> dict:
    """MirrorPaddedUNet's arguments; those of channels, 3D and batch norm only where they differ from one channel
    in 2D with batch norms (so that packages of such models stay as they were before these choices existed)."""
    kwargs = {"base_channels": base_channels, "depth": depth, "n2v2": n2v2, "margin": MARGIN}
    if channels != 1 or dims != 2:
        kwargs.update(channels=channels, dims=dims, separate=separate)
    if not batch_norm:
        kwargs.update(batch_norm=False)
    return kwargs


def _model_kwargs(model: DenoisingModel) -> dict:
    return _architecture_kwargs(model.config.base_channels, model.net.depth, model.net.n2v2, model.channels,
                                model.net.dims, model.config.separate_channels, model.net.batch_norm)


def _padded_net(model: DenoisingModel) -> MirrorPaddedUNet:
    padded = MirrorPaddedUNet(**_model_kwargs(model))
    padded.unet.load_state_dict({k: v.detach().cpu() for k, v in model.net.state_dict().items()})
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
    np.save(files["test_input.npy"], test_input[None])
    np.save(files["test_output.npy"], test_output[None])
    _write_cover(files["cover.png"], test_input, test_output)
    files["README.md"].write_text(_readme(model), encoding="utf-8")
    return files


def _write_cover(path: Path, before: np.ndarray, after: np.ndarray) -> None:
    """Noisy and denoised side by side, each shown from its 0.5th to its 99.5th percentile: one row per
    channel of (C, Y, X) or the central planes of (C, Z, Y, X) tensors."""
    from skimage.exposure import rescale_intensity
    from skimage.io import imsave

    def grey(image: np.ndarray) -> np.ndarray:
        return rescale_intensity(image, in_range=tuple(np.percentile(image, (0.5, 99.5))), out_range=(0.0, 1.0))

    if before.ndim == 4:
        before, after = before[:, before.shape[1] // 2], after[:, after.shape[1] // 2]
    height, width = before.shape[1:]
    gap = np.ones((height, max(2, width // 64)), np.float32)
    rows = [np.concatenate([grey(noisy), gap, grey(denoised)], axis=1) for noisy, denoised in zip(before, after)]
    separator = np.ones((max(2, height // 64), rows[0].shape[1]), np.float32)
    parts = [rows[0]]
    for row in rows[1:]:
        parts += [separator, row]
    imsave(path, (np.concatenate(parts) * 255).astype(np.uint8), check_contrast=False)


def _mask_text(mask: np.ndarray | None) -> str:
    """A mask on one line: rows separated by ' / ', the planes of a 3D mask (above, centre, below) by ' | '."""
    if mask is None:
        return "none (Noise2Void only)"
    if np.ndim(mask) == 3:
        return " | ".join(_mask_text(plane) for plane in mask)
    return " / ".join("".join("#" if v else "." for v in row) for row in mask)


def _masks_text(model: DenoisingModel) -> str:
    """Every channel's mask on one line."""
    masks = model.channel_masks()
    if len(masks) == 1:
        return _mask_text(masks[0])
    return "; ".join(f"channel {index}: {_mask_text(mask)}" for index, mask in enumerate(masks))


def _input_text(model: DenoisingModel) -> str:
    """The README's lines on the input and its normalisation."""
    normalisation = model.normalisation
    if model.channels == 1 and model.net.dims == 2:
        return f"""- Input: one 2D grey-level image (batch, channel, y, x), float32, any size.
- Pre-processing: (x - {normalisation.mean:.6g}) / {normalisation.std:.6g} (the training images' mean and
  standard deviation); post-processing maps the result back to the input's units."""
    kind = "3D volumes (batch, channel, z, y, x)" if model.net.dims == 3 else "2D images (batch, channel, y, x)"
    pairs = ", ".join(f"({n.mean:.6g}, {n.std:.6g})" for n in map(normalisation.channel, range(model.channels)))
    return f"""- Input: {kind} with {model.channels} channel(s), float32, any size.
- Pre-processing: (x - mean) / std for each channel, with (mean, std) = {pairs} (the training images'
  per channel); post-processing maps each channel back to its own units."""


def _axes_hint(model: DenoisingModel) -> str:
    if model.channels == 1 and model.net.dims == 2:
        return ""
    trained = f"; the training images' were {model.axes}" if model.axes else ""
    return f" (the image's axes with --axes{trained})"


def _readme(model: DenoisingModel) -> str:
    config = json.dumps(model.config.to_dict(), indent=2)
    variant = "N2V2 UNet (no top skip connection, blur-max pooling)" if model.net.n2v2 else "UNet"
    if model.net.dims == 3:
        variant = f"3D {variant}"
    if model.channels > 1:
        variant += ", one network per channel" if model.config.separate_channels else ", channels of one network"
    references = "\n".join(f"- {text} doi:{doi}" for text, doi in _citations(model))
    masks = model.channel_masks()
    blocks = [_mask_text(mask).replace(" / ", "\n").replace(" | ", "\n\n") for mask in masks]
    if len(masks) > 1:
        blocks = [f"channel {index}:\n{block}" for index, block in enumerate(blocks)]
    mask = "\n\n".join(blocks)
    planes = ("\nA 3D mask is shown as its planes above, at and below the centre pixel's, in that order.\n"
              if any(np.ndim(m) == 3 for m in masks) else "")
    return f"""# autoStructN2V denoiser

Self-supervised denoiser trained with napari-autostructn2v: Noise2Void, then structN2V with a mask
estimated from the noise of the training image.

## Use

{_input_text(model)}
- Network: {variant}, {model.config.base_channels} base channels, depth {model.net.depth}. It mirrors {MARGIN} pixels
  around its input{" (in z too)" if model.net.dims == 3 else ""}, so whole images need no tiling; tilers should overlap tiles by at least {MARGIN} pixels.
- In napari-autostructn2v: `load_model("this.zip")`, the Denoise widget's model file, or
  `autostructn2v denoise IMAGE.tif -m this.zip -o OUT.tif`{_axes_hint(model)}.

## structN2V mask

'#' pixels were hidden together with the centre pixel during training:
{planes}
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
        FixedZeroMeanUnitVarianceAlongAxisKwargs, FixedZeroMeanUnitVarianceDescr, FixedZeroMeanUnitVarianceKwargs,
        Identifier, InputTensorDescr, IntervalOrRatioDataDescr, ModelDescr, OutputTensorDescr, ParameterizedSize,
        PytorchStateDictWeightsDescr, ScaleLinearAlongAxisKwargs, ScaleLinearDescr, ScaleLinearKwargs,
        SizeReference, SpaceInputAxis, SpaceOutputAxis, TensorId, TorchscriptWeightsDescr, Version, WeightsDescr,
    )

    channels = [model.normalisation.channel(index) for index in range(model.channels)]
    means, stds = [float(n.mean) for n in channels], [float(n.std) for n in channels]
    input_id = TensorId("raw")
    if model.channels == 1:
        channel = ChannelAxis(channel_names=[Identifier("intensity")])
        scale_in = FixedZeroMeanUnitVarianceKwargs(mean=means[0], std=stds[0])
        scale_out = ScaleLinearKwargs(gain=stds[0], offset=means[0])
    else:  # each channel in its own units
        channel = ChannelAxis(channel_names=[Identifier(f"channel{index}") for index in range(model.channels)])
        scale_in = FixedZeroMeanUnitVarianceAlongAxisKwargs(mean=means, std=stds, axis=channel.id)
        scale_out = ScaleLinearAlongAxisKwargs(gain=stds, offset=means, axis=channel.id)
    space = "zyx" if model.net.dims == 3 else "yx"
    kind = "3D volume" if model.net.dims == 3 else "2D image"
    inputs = [InputTensorDescr(
        id=input_id,
        description=f"noisy {kind}" if model.channels == 1 else f"noisy {kind} of {model.channels} channels",
        axes=[BatchAxis(), channel] + [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=1, step=1))
                                       for a in space],
        test_tensor=FileDescr(source=files["test_input.npy"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[FixedZeroMeanUnitVarianceDescr(kwargs=scale_in)],
    )]
    outputs = [OutputTensorDescr(
        id=TensorId("denoised"),
        description=f"denoised {kind.split()[1]}, in the input's units" + (" (each channel in its own)"
                                                                          if model.channels > 1 else ""),
        axes=[BatchAxis(), channel] + [SpaceOutputAxis(id=AxisId(a), size=SizeReference(
            tensor_id=input_id, axis_id=AxisId(a))) for a in space],
        test_tensor=FileDescr(source=files["test_output.npy"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[ScaleLinearDescr(kwargs=scale_out)],
    )]
    torch_version = Version(torch.__version__.split("+")[0])
    architecture = ArchitectureFromFileDescr(
        source=files["unet.py"], callable=Identifier(MirrorPaddedUNet.__name__), kwargs=_model_kwargs(model))
    weights = WeightsDescr(
        pytorch_state_dict=PytorchStateDictWeightsDescr(
            source=files["weights.pt"], architecture=architecture, pytorch_version=torch_version),
        torchscript=TorchscriptWeightsDescr(
            source=files["weights_torchscript.pt"], pytorch_version=torch_version, parent="pytorch_state_dict"),
    )
    cite = [CiteEntry(text=text, doi=doi) for text, doi in _citations(model)]
    try:
        return ModelDescr(
            name=name,
            description=(f"Self-supervised denoiser (Noise2Void, then structN2V) trained with napari-autostructn2v; "
                         f"structN2V mask: {_masks_text(model)}."),
            authors=[Author(name=author) for author in authors],
            cite=cite,
            license=license,
            documentation=FileDescr(source=files["README.md"]),
            covers=[FileDescr(source=files["cover.png"])],
            tags=["denoising", "noise2void", "structn2v", "self-supervised", model.config.network, "pytorch",
                  "napari"] + (["multichannel"] if model.channels > 1 else []),
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
    """What `load_model` needs besides the weights, as plain YAML values (as in a model file; the per-channel
    masks and the training axes only for channel and 3D models, so other packages stay as they were)."""
    payload = model_payload(model)
    payload["config"] = json.loads(json.dumps(payload["config"]))
    payload["margin"] = MARGIN
    del payload["whitening"], payload["banding"]  # whitened and banded models are not exported
    if model.channels == 1 and model.net.dims == 2:
        del payload["channel_masks"], payload["axes"]
    return payload


def load_bioimageio(path: str | Path, device: str = "cpu") -> DenoisingModel:
    """Open a bioimage.io package written by `export_bioimageio`; anything else raises ModelFileError."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a zip archive, so not a bioimage.io model package.")
    if not _has_descriptor(path):
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
    config = {**OLDER_CONFIG, **payload["config"]} if isinstance(payload.get("config"), dict) else {}
    normalisation = payload.get("normalisation")
    nested = isinstance(normalisation, list) and bool(normalisation) and isinstance(normalisation[0], list)
    channels = len(normalisation) if nested else 1
    expected = _architecture_kwargs(config.get("base_channels"), config.get("depth"), payload.get("n2v2"), channels,
                                    3 if config.get("network") == "3d" else 2, config.get("separate_channels"),
                                    has_batch_norm(config.get("network", "2d"), config.get("batch_norm")))
    expected["margin"] = payload.get("margin")
    if architecture.callable != MirrorPaddedUNet.__name__ or dict(architecture.kwargs) != expected:
        raise ModelFileError(f"{path}: its architecture ({architecture.callable} with {dict(architecture.kwargs)}) "
                             f"is not the one its configuration describes; {edited}")
    steps = [step for step in description.inputs[0].preprocessing if step.id == "fixed_zero_mean_unit_variance"]
    try:  # [mean, std] for one channel, [[mean, std], ...] for several
        found = np.stack([steps[0].kwargs.mean, steps[0].kwargs.std], axis=-1).astype(float) if steps else None
        stored = np.asarray(normalisation, dtype=float)
        same = found is not None and found.shape == stored.shape and np.allclose(found, stored, rtol=1e-6, atol=0)
    except (TypeError, ValueError):  # a normalisation that is not numbers of the right shape
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

