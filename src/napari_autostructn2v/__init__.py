"""Self-supervised denoising of images with structured noise, with an automatically detected structN2V mask."""

from .core.config import Config, ConfigError, MaskConfig, StageConfig
from .core.images import InputError
from .core.inference import denoise
from .core.mask import MaskEstimate, estimate_struct_mask, preset_mask
from .core.model import DenoisingModel, ModelFileError, load_model, save_model
from .core.roi import select_roi_patches, suggest_threshold
from .core.sample import make_sample
from .core.training import (
    Done,
    EpochEnd,
    MaskEstimated,
    Preview,
    StageFinished,
    StageStarted,
    Step,
    TooFewPatchesError,
    fit,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "DenoisingModel", "Done", "EpochEnd", "InputError", "MaskConfig", "MaskEstimate",
    "MaskEstimated", "ModelFileError", "Preview", "StageConfig", "StageFinished", "StageStarted", "Step",
    "TooFewPatchesError", "denoise", "estimate_struct_mask", "fit", "load_model", "make_sample", "preset_mask",
    "save_model", "select_roi_patches", "suggest_threshold", "train",
]
