"""A trained denoiser (network, configuration, mask, normalisation) and its one-file format."""

from __future__ import annotations

import math
import numbers
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import Config, ConfigError
from .errors import InputError, ModelFileError
from .files import atomic_write
from .images import Normalisation
from .mask import check_mask
from .unet import UNet

FORMAT = "napari-autostructn2v model"
FORMAT_VERSION = 1


@dataclass
class DenoisingModel:
    """What `denoise` needs: the network and the normalisation of the data it was trained on."""

    net: UNet
    config: Config
    normalisation: Normalisation
    struct_mask: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, config: Config, normalisation: Normalisation, n2v2: bool = False) -> DenoisingModel:
        return cls(UNet(config.base_channels, config.depth, n2v2=n2v2), config, normalisation)


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


def memory_format(device: torch.device, training: bool = False) -> torch.memory_format:
    """The faster layout for convolutions on `device`: channels-last for cuDNN (CUDA) and, at inference, for
    oneDNN (CPU). CPU training keeps the usual layout: there it gained 10 % at most, and its other rounding
    alone moved a quick quality run's result by 1.8 dB (a different epoch won the validation)."""
    if device.type == "cuda" or (device.type == "cpu" and not training):
        return torch.channels_last
    return torch.contiguous_format


def autocast(device: torch.device):
    """Mixed precision (bfloat16) on CUDA GPUs that support it; full precision everywhere else."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


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


def save_model(model: DenoisingModel, path: str | Path) -> Path:
    """Write the model to one file (a torch archive holding only tensors and plain values).

    The file is written under a temporary name and renamed when complete, so an existing model
    file is replaced only by a whole new one.
    """
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "n2v2": model.net.n2v2,
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "normalisation": [float(model.normalisation.mean), float(model.normalisation.std)],
        "struct_mask": None if model.struct_mask is None else model.struct_mask.astype(bool).tolist(),
        "history": model.history,
    }
    return atomic_write(path, lambda temporary: torch.save(payload, temporary))


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
        config = Config.from_dict(payload["config"])
    except ConfigError as err:
        raise ModelFileError(f"its configuration is invalid ({err})") from None
    if not isinstance(payload["n2v2"], bool):
        raise ModelFileError(f"its n2v2 flag must be true or false, got {payload['n2v2']!r}.")
    normalisation = payload["normalisation"]
    if (not isinstance(normalisation, (list, tuple)) or len(normalisation) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                       for v in normalisation)
            or not normalisation[1] > 0):
        raise ModelFileError(f"its normalisation must be two finite numbers [mean, std > 0], got {normalisation!r}.")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFileError("its weights are not a mapping of names to tensors.")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"its weights hold NaN or infinite values ({', '.join(bad[:3])}).")
    mask = payload["struct_mask"]
    if mask is not None:
        try:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                raise ModelFileError(f"its stored mask must hold booleans, got {mask.dtype}.")
            mask = check_mask(mask)
        except (InputError, ValueError, TypeError) as err:
            raise ModelFileError(f"its stored mask is invalid ({err})") from None
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise ModelFileError("its training history is not a list of records.")
    model = DenoisingModel(
        UNet(config.base_channels, config.depth, n2v2=payload["n2v2"]),
        config,
        Normalisation(float(normalisation[0]), float(normalisation[1])),
        mask,
        list(history),
    )
    model.net.load_state_dict(state)
    return model
