"""Self-supervised denoising of images with structured noise, with an automatically detected structN2V mask.

The public names below are imported on first use (PEP 562), so that `import napari_autostructn2v`
and the command line's `--help` do not pay for torch, scipy and scikit-image up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    "Config": "core.config", "ConfigError": "core.errors", "MaskConfig": "core.config", "StageConfig": "core.config",
    "InputError": "core.errors", "ModelFileError": "core.errors",
    "denoise": "core.inference", "denoise_lazy": "core.chunked", "denoise_zarr": "core.chunked",
    "export_bioimageio": "core.bioimageio",
    "MaskEstimate": "core.mask", "estimate_struct_mask": "core.mask", "preset_mask": "core.mask",
    "DenoisingModel": "core.model", "load_model": "core.model", "save_model": "core.model",
    "select_roi_patches": "core.roi", "suggest_threshold": "core.roi",
    "make_sample": "core.sample",
    "Done": "core.training", "EpochEnd": "core.training", "MaskEstimated": "core.training",
    "Preview": "core.training", "StageFinished": "core.training", "StageStarted": "core.training",
    "Step": "core.training", "TooFewPatchesError": "core.training", "fit": "core.training", "train": "core.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and editors; at run time the names are resolved lazily
    from .core.config import Config, MaskConfig, StageConfig
    from .core.errors import ConfigError, InputError, ModelFileError
    from .core.bioimageio import export_bioimageio
    from .core.chunked import denoise_lazy, denoise_zarr
    from .core.inference import denoise
    from .core.mask import MaskEstimate, estimate_struct_mask, preset_mask
    from .core.model import DenoisingModel, load_model, save_model
    from .core.roi import select_roi_patches, suggest_threshold
    from .core.sample import make_sample
    from .core.training import (
        Done, EpochEnd, MaskEstimated, Preview, StageFinished, StageStarted, Step, TooFewPatchesError, fit, train,
    )
