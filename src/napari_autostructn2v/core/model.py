"""A trained denoiser (network, configuration, mask, normalisation) and its one-file format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import Config, ConfigError
from .images import Normalisation
from .unet import UNet

FORMAT = "napari-autostructn2v model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, damaged or not one of ours."""


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


def save_model(model: DenoisingModel, path: str | Path) -> Path:
    """Write the model to one file (a torch archive holding only tensors and plain values)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "n2v2": model.net.n2v2,
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "normalisation": [model.normalisation.mean, model.normalisation.std],
        "struct_mask": None if model.struct_mask is None else model.struct_mask.astype(bool).tolist(),
        "history": model.history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_model(path: str | Path, device: str = "cpu") -> DenoisingModel:
    """Read a model written by `save_model`; a missing, damaged or foreign file raises ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged archive can fail anywhere inside the unpickler
        raise ModelFileError(f"{path} is not a readable napari-autostructn2v model ({err}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a torch file but not a napari-autostructn2v model.")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer napari-autostructn2v (format {payload['version']}); upgrade the package."
        )
    try:
        config = Config.from_dict(payload["config"])
        mean, std = payload["normalisation"]
        mask = payload["struct_mask"]
        model = DenoisingModel(
            UNet(config.base_channels, config.depth, n2v2=payload["n2v2"]),
            config,
            Normalisation(float(mean), float(std)),
            None if mask is None else np.asarray(mask, dtype=bool),
            list(payload.get("history", [])),
        )
        model.net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path} is damaged or incomplete ({err}).") from None
    model.net.to(resolve_device(device)).eval()
    return model
