"""A trained denoiser (network, configuration, mask, normalisation) and its one-file format."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .banding import LINES
from .config import Config, ConfigError
from .errors import InputError, ModelFileError
from .files import atomic_write
from .images import Normalisation
from .mask import check_mask
from .unet import UNet
from .whitening import Whitening, whitening_from_values

FORMAT = "napari-autostructn2v model"
# 2 adds channels, per-channel masks and normalisation, axes; 3 adds whitening, written only by whitened models
# (a reader of version 2 would ignore the filter and return garbage: it refuses the file instead); 4 adds banding,
# written only by models that remove line offsets (likewise); all still load
FORMAT_VERSION = 4
# configuration values of files written before these fields existed (their networks had batch norms)
OLDER_CONFIG = {"batch_norm": True}


@dataclass
class DenoisingModel:
    """What `denoise` needs: the network and the normalisation of the data it was trained on.

    With several channels, `normalisation` holds one mean and std per channel and `struct_mask` is a
    list with one mask per channel. `axes` are those of the training images (None: not recorded).
    `whitening` holds, per channel, the filter that decorrelates its noise before the network and whose
    inverse colours the prediction (core.whitening; None: no channel is whitened). `banding` names, per
    channel, the lines ("rows", "columns") whose offsets are removed from each image before the network
    (core.banding; None: no channel's).
    """

    net: UNet
    config: Config
    normalisation: Normalisation
    struct_mask: np.ndarray | list[np.ndarray | None] | None = None
    history: list[dict] = field(default_factory=list)
    axes: str | None = None
    whitening: list[Whitening | None] | None = None
    banding: list[tuple[str, ...]] | None = None

    @classmethod
    def create(cls, config: Config, normalisation: Normalisation, n2v2: bool = False) -> DenoisingModel:
        net = UNet(config.base_channels, config.depth, n2v2=n2v2, channels=normalisation.channels,
                   dims=config.dims, separate=config.separate_channels, batch_norm=config.uses_batch_norm)
        return cls(net, config, normalisation)

    @property
    def channels(self) -> int:
        return self.net.channels

    def channel_masks(self) -> list[np.ndarray | None]:
        """The structN2V mask of each channel (None: plain N2V)."""
        if isinstance(self.struct_mask, list):
            return list(self.struct_mask)
        return [self.struct_mask] * self.channels


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for "auto", "cpu", "cuda" or "mps", with a clear error when it is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but this torch build sees no CUDA GPU; use 'auto' or 'cpu'.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for, but it is not available here; use 'auto' or 'cpu'.")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"Unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return torch.device(name)


def memory_format(device: torch.device, dims: int = 2, training: bool = False) -> torch.memory_format:
    """The faster layout for convolutions on `device` (its 3D form for the 3D network): channels-last for cuDNN
    (CUDA) and, at inference, for oneDNN (CPU). CPU training keeps the usual layout: there it gained 10 % at
    most, and its other rounding alone moved a quick quality run's result by 1.8 dB (a different epoch won the
    validation)."""
    if device.type == "cuda" or (device.type == "cpu" and not training):
        return torch.channels_last if dims == 2 else torch.channels_last_3d
    return torch.contiguous_format


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 convolutions natively: CUDA GPUs that support it, and CPUs with AMX
    (Intel Xeon since Sapphire Rapids), where oneDNN ran them 1.6-4x faster than float32 (docs/speed.md). Elsewhere
    (AVX2 or AVX-512 without AMX, MPS) bfloat16 would be emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def autocast(device: torch.device, mixed_precision: bool = True):
    """Mixed precision (bfloat16) where `device` computes it natively (`native_bfloat16`) and `mixed_precision`
    allows it; full precision everywhere else."""
    enabled = mixed_precision and native_bfloat16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def in_float32(model: DenoisingModel) -> DenoisingModel:
    """`model` (sharing its network) set to compute in float32 on every device, as other tools run its network."""
    return dataclasses.replace(model, config=dataclasses.replace(model.config, mixed_precision=False))


def idle_threads() -> int:
    """Torch threads worth using now: the cores this process may run on less the machine's load (one-minute
    average), within torch's current limit (OMP_NUM_THREADS), at least 1. Threads beyond the idle cores wait
    for each other at every parallel step: on a busy 2-core machine, 2 threads ran up to 10x slower than 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not measurable here (Windows): assume an idle machine
        load = 0.0
    return max(1, min(torch.get_num_threads(), cores, math.floor(cores - load + 0.5)))


def check_model(model) -> None:
    """Raise InputError unless `model` is a DenoisingModel (what fit and load_model return)."""
    if not isinstance(model, DenoisingModel):
        raise InputError(f"model must be a DenoisingModel (from fit or load_model); got {type(model).__name__}.")


def save_model(model: DenoisingModel, path: str | Path) -> Path:
    """Write the model to one file (a torch archive holding only tensors and plain values).

    The file is written under a temporary name and renamed when complete, so an existing model
    file is replaced only by a whole new one.
    """
    payload = {**model_payload(model), "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
               "history": model.history}
    return atomic_write(path, lambda temporary: torch.save(payload, temporary))


def model_payload(model: DenoisingModel) -> dict:
    """Everything a model file holds besides the weights and the history, as plain values."""
    return {
        "format": FORMAT,
        "version": 4 if model.banding is not None else 3 if model.whitening is not None else 2,
        "config": model.config.to_dict(),
        "n2v2": model.net.n2v2,
        "normalisation": _normalisation_values(model.normalisation),
        "struct_mask": None if isinstance(model.struct_mask, list) else _mask_values(model.struct_mask),
        "channel_masks": [_mask_values(mask) for mask in model.channel_masks()],
        "axes": model.axes,
        "whitening": None if model.whitening is None else [w and w.to_values() for w in model.whitening],
        "banding": None if model.banding is None else [list(lines) for lines in model.banding],
    }


def _normalisation_values(normalisation: Normalisation) -> list:
    """[mean, std] for one channel (as in files of version 1), [[mean, std], ...] for several."""
    pairs = [[float(n.mean), float(n.std)] for n in map(normalisation.channel, range(normalisation.channels))]
    return pairs[0] if len(pairs) == 1 else pairs


def _mask_values(mask: np.ndarray | None):
    return None if mask is None else mask.astype(bool).tolist()


def load_model(path: str | Path, device: str = "cpu") -> DenoisingModel:
    """Read a model written by `save_model` or `export_bioimageio` (a .zip); a missing, damaged or foreign
    file raises ModelFileError.

    Only tensors and plain values are ever unpickled: a file holding other Python objects is refused.
    Every field is checked (types, finite normalisation and weights, a valid mask) before use.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"Model file {path} is a folder; give the .pt file written by training.")
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    from .bioimageio import is_bioimageio_package, load_bioimageio  # light: bioimageio.spec loads on use

    if is_bioimageio_package(path):
        return load_bioimageio(path, device)
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: one message is enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # torch names the refused class ("Unsupported global: ...")
            raise ModelFileError(
                f"{path} is not a readable napari-autostructn2v model (not a torch archive, or damaged)."
            ) from None
        # a pickle with other objects: torch's message advises an unsafe load; never pass that advice on
        raise ModelFileError(
            f"{path} is not a napari-autostructn2v model: it holds Python objects other than tensors and plain "
            "values, which are never loaded because they could run code."
        ) from None
    except Exception as err:  # a damaged archive can fail anywhere inside the reader
        raise ModelFileError(f"{path} is not a readable napari-autostructn2v model ({_first_line(err)}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a torch file but not a napari-autostructn2v model.")
    return model_from_payload(payload, path, device)


def model_from_payload(payload: dict, path: Path, device: str) -> DenoisingModel:
    """The model a model file's payload describes, in eval mode on `device`; ModelFileError names `path`."""
    try:
        model = _model_from_payload(payload)
    except ModelFileError as err:
        raise ModelFileError(f"{path} is damaged or incomplete: {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path} is damaged or incomplete ({_first_line(err)}).") from None
    model.net.to(resolve_device(device)).eval()
    return model


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines() or [type(err).__name__]
    line = lines[0][:300]
    return "unreadable archive" if "weights_only" in line else line


def _model_from_payload(payload: dict) -> DenoisingModel:
    """Check the fields of a loaded payload and build the model; ModelFileError names the bad field."""
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"its format version must be a positive integer, got {version!r}.")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"it was written by a newer napari-autostructn2v (format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade the package."
        )
    missing = sorted({"config", "n2v2", "state_dict", "normalisation", "struct_mask"} - set(payload))
    if missing:
        raise ModelFileError(f"it lacks the field(s) {missing}.")
    if not isinstance(payload["config"], dict):
        raise ModelFileError("its configuration is not a mapping.")
    try:
        config = Config.from_dict({**OLDER_CONFIG, **payload["config"]})
    except ConfigError as err:
        raise ModelFileError(f"its configuration is invalid ({err})") from None
    if not isinstance(payload["n2v2"], bool):
        raise ModelFileError(f"its n2v2 flag must be true or false, got {payload['n2v2']!r}.")
    normalisation = _normalisation_from(payload["normalisation"])
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFileError("its weights are not a mapping of names to tensors.")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"its weights hold NaN or infinite values ({', '.join(bad[:3])}).")
    dims = config.dims
    mask = _mask_from(payload["struct_mask"], dims)
    if normalisation.channels > 1:
        stored = payload.get("channel_masks")
        if not isinstance(stored, list) or len(stored) != normalisation.channels:
            raise ModelFileError(f"it needs one stored mask per channel ({normalisation.channels}), got {stored!r:.80}.")
        mask = [_mask_from(channel_mask, dims) for channel_mask in stored]
    axes = payload.get("axes")
    if axes is not None and not (isinstance(axes, str) and axes and set(axes) <= set("STCZYX")):
        raise ModelFileError(f"its axes must be letters from STCZYX, got {axes!r}.")
    whitening = _whitening_from(payload.get("whitening"), normalisation.channels)
    banding = _banding_from(payload.get("banding"), normalisation.channels)
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise ModelFileError("its training history is not a list of records.")
    model = DenoisingModel.create(config, normalisation, n2v2=payload["n2v2"])
    model.struct_mask, model.history, model.axes = mask, list(history), axes
    model.whitening, model.banding = whitening, banding
    model.net.load_state_dict(state)
    return model


def _normalisation_from(values) -> Normalisation:
    """[mean, std] or one such pair per channel, checked."""
    pairs = values if isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)) else [values]
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
                or not pair[1] > 0):
            raise ModelFileError(f"its normalisation must be two finite numbers [mean, std > 0] per channel, got {values!r}.")
    if len(pairs) == 1:
        return Normalisation(float(pairs[0][0]), float(pairs[0][1]))
    return Normalisation(tuple(float(p[0]) for p in pairs), tuple(float(p[1]) for p in pairs))


def _whitening_from(values, channels: int) -> list[Whitening | None] | None:
    """One [axis, rho, start_weight] filter (or None) per channel, checked; None when the file has none."""
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != channels:
        raise ModelFileError(f"its whitening must list a filter (or null) per channel ({channels}), got {values!r:.80}.")
    try:
        return [None if entry is None else whitening_from_values(entry) for entry in values]
    except ValueError as err:
        raise ModelFileError(f"its whitening is invalid ({err}).") from None


def _banding_from(values, channels: int) -> list[tuple[str, ...]] | None:
    """Per channel, the lines whose offsets are removed ([] for none), checked; None when the file has none."""
    if values is None:
        return None
    if (not isinstance(values, list) or len(values) != channels
            or not all(isinstance(lines, list) and set(lines) <= set(LINES) for lines in values)):
        raise ModelFileError(f"its banding must list, per channel ({channels}), lines from {list(LINES)}, "
                             f"got {values!r:.80}.")
    return [tuple(name for name in LINES if name in lines) for lines in values]


def _mask_from(values, dims: int) -> np.ndarray | None:
    if values is None:
        return None
    try:
        mask = np.asarray(values)
        if mask.dtype != bool:
            raise ModelFileError(f"its stored mask must hold booleans, got {mask.dtype}.")
        return check_mask(mask, dims)
    except (InputError, ValueError, TypeError) as err:
        raise ModelFileError(f"its stored mask is invalid ({err})") from None
