"""Training configuration: plain dataclasses, validated, with a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .checks import Rule
from .errors import ConfigError  # noqa: F401  (raised here; also importable from here)

DEVICES = ("auto", "cpu", "cuda", "mps")
MASK_SOURCES = ("image", "stage1_residual")
NETWORKS = ("2d", "3d")
DEFAULT_TILES = {"2d": 512, "3d": 96}  # tile side of inference; 96**3 voxels are as many as a 2D tile of 940**2
SEED_MAX = 2**32 - 1  # numpy and torch both accept seeds in [0, 2**32 - 1]; training adds small offsets


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


_BOOL = Rule("bool")
STAGE_RULES = {
    "use_roi": _BOOL,
    "roi_threshold": Rule("float", 0, 1),
    "scale_factor": Rule("float", 0, 1, low_open=True),
    "select_background": _BOOL,
    "roi_overlap": Rule("float", 0, 1, high_open=True),
    "roi_smoothing": Rule("float", 0, optional=True, none_means="automatic"),
    "patch_size": Rule("int", 16, 4096, multiple=8),
    "batch_size": Rule("int", 1, 4096),
    "epochs": Rule("int", 0, 100_000),
    "steps_per_epoch": Rule("int", 1, 1_000_000),
    "learning_rate": Rule("float", 0, 1, low_open=True),
    "mask_percent": Rule("float", 0, 10, low_open=True),
    "n2v2": _BOOL,
}
MASK_RULES = {
    "source": Rule("str", choices=MASK_SOURCES),
    "significance": Rule("float", 0, low_open=True),
    "min_correlation": Rule("float", 0, 1, low_open=True, high_open=True),
    "max_radius": Rule("int", 1, 24),
    "max_pixels": Rule("int", 1, 101),
    "remove_isotropic": _BOOL,
    "extend_correlation": Rule("float", 0, 1, low_open=True, high_open=True),
    "whiten": _BOOL,
    "recorrupt": _BOOL,
    "remove_banding": _BOOL,
}
CONFIG_RULES = {
    "base_channels": Rule("int", 4, 256),
    "depth": Rule("int", 1, 4),
    "validation_fraction": Rule("float", 0, 0.5, low_open=True, high_open=True),
    "stage2_from_stage1": _BOOL,
    "augment": _BOOL,
    "seed": Rule("int", 0, SEED_MAX, optional=True, none_means="a fresh random seed each run"),
    "device": Rule("str", choices=DEVICES),
    "network": Rule("str", choices=NETWORKS),
    "patch_depth": Rule("int", 4, 1024),
    "batch_norm": Rule("bool", optional=True,
                       none_means="batch norm in the 2D network only, as in files saved before false was the default"),
    "separate_channels": _BOOL,
    "sparse_top_level": Rule("bool", optional=True, none_means="on when the network has no batch norm"),
    "mixed_precision": _BOOL,
    "keep_mean": _BOOL,
    "keep_contrast": _BOOL,
}


def has_batch_norm(network: str, batch_norm: bool | None) -> bool:
    """Whether a network has batch norms: `batch_norm`, or, where it is None (files saved while that was the
    default), the 2D network only."""
    return network == "2d" if batch_norm is None else bool(batch_norm)


def _validate_fields(obj, rules: dict, prefix: str) -> None:
    """Check every field of `obj` against its rule and store the plain Python value."""
    for name, rule in rules.items():
        setattr(obj, name, rule.check(getattr(obj, name), f"{prefix}{name}"))


@dataclass
class StageConfig:
    """Settings of one training stage (patch selection and optimisation)."""

    use_roi: bool = True
    roi_threshold: float = 0.5
    scale_factor: float = 0.25
    select_background: bool = True
    roi_overlap: float = 0.5
    roi_smoothing: float | None = None
    patch_size: int = 64
    batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int = 40
    learning_rate: float = 1e-3
    mask_percent: float = 1.0
    n2v2: bool = False

    def validate(self, name: str = "stage") -> None:
        """Raise ConfigError naming the first field of the wrong type or out of range (`name.field`)."""
        _validate_fields(self, STAGE_RULES, f"{name}.")


def _stage1_defaults() -> StageConfig:
    return StageConfig(epochs=2)


def _stage2_defaults() -> StageConfig:
    return StageConfig(use_roi=False, select_background=False, epochs=18)


@dataclass
class MaskConfig:
    """How the structured blind-spot mask is estimated between the stages.

    source: "image" measures the noise autocorrelation on detrended flat regions of
    the raw image; "stage1_residual" on the residual of stage 1.
    The mask keeps lags whose correlation exceeds both `significance` standard
    errors and `min_correlation`, connected to the centre, at most `max_radius`
    pixels from it, and at most `max_pixels` pixels in all (the most correlated):
    a line of 25 pixels, but no blob larger than 5x5, which would hide the signal too.
    remove_isotropic: with source "image", the part of the correlation that is the same in
    every direction, or as strong two lags beside a line as on it, is taken for signal texture
    and removed, so that white noise over a textured, dense image gives plain N2V and a line of
    noise over oriented texture keeps its own length; turn it off only for noise that is itself
    correlated alike in all directions.
    extend_correlation: a line found with `min_correlation` is followed further along its own
    direction while the correlation exceeds this lower level (slowly decaying correlations);
    never used to start a line, so white noise keeps the centre alone.
    whiten: when the mask is a straight horizontal or vertical line whose correlation decays as
    rho**lag (first-order filtered noise, as a PMT's analog filter makes it along the scan), both
    stages train plain N2V on the image decorrelated along that line instead of masking it, and
    the prediction is coloured back (core.whitening); source "image" only.
    recorrupt: when the noise is additive (its variance as large in the bright parts of the image
    as in the dark, on an image whose bright parts are at least 1.5x as bright) and its
    correlation ends within `max_radius`, both stages train on recorrupted pairs with the
    measured noise covariance instead of blind spots: the network sees every pixel
    (core.recorruption); source "image" and the 2D network only.
    remove_banding: when each row (or column) of the image carries an offset of its own (sCMOS
    read-out banding: offsets measured on the two halves of the lines agree and change from line to
    line), the offsets are removed before the mask is estimated, before both stages train and before
    each image is denoised (core.banding); source "image", no mask given, images in memory (planes
    read from disk keep their offsets, and the estimate's reason says so).
    """

    source: str = "image"
    significance: float = 4.0
    min_correlation: float = 0.1
    max_radius: int = 12
    max_pixels: int = 25
    remove_isotropic: bool = True
    extend_correlation: float = 0.05
    whiten: bool = True
    recorrupt: bool = True
    remove_banding: bool = True

    def validate(self) -> None:
        """Raise ConfigError naming the first field of the wrong type or out of range (`mask.field`)."""
        _validate_fields(self, MASK_RULES, "mask.")
        _check(
            self.extend_correlation <= self.min_correlation,
            f"mask.extend_correlation must be at most mask.min_correlation ({self.min_correlation}), "
            f"got {self.extend_correlation}.",
        )


@dataclass
class Config:
    """Everything a two-stage training run needs; ROI defaults follow the seed document.

    Stage 1 is a short N2V warm-up (a tenth of the steps) and stage 2 gets the rest: with the mask
    estimated from the raw image, steps spent in stage 2 pay most (see the README's benchmarks).

    network "3d" trains a 3D UNet on patches of `patch_depth` planes x patch_size x patch_size
    (images need a Z axis); "2d" treats every plane on its own. `batch_norm` False (the default): no normalisation
    layers. Batch statistics of a few mostly-background patches are noisy, and outputs moved with them by up to
    0.7 dB (3D) and 2-4 dB (2D, row banding); see docs/benchmarks.md. True puts batch norm after every convolution;
    None (what files saved before this default hold) gives it to the 2D network only.
    Channels (axes with C) are channels of one network by default; `separate_channels` gives each
    channel a network of its own (as wide as a one-channel network; all are stored in one model).
    `sparse_top_level` computes the full-resolution decoder block only around the blind spots while training
    (the loss needs no other outputs): steps 1.1-1.2x faster. Without batch norms it computes the same as the
    whole network, so None (the default) turns it on then; with them, that block's norms take their statistics
    from those windows, so training computes something slightly different, and None leaves it off. The network
    and its use are the same.
    `mixed_precision` trains and denoises in bfloat16 (losses and weights in float32) where the device computes it
    natively, CUDA GPUs and CPUs with AMX (see `core.model.native_bfloat16`); False keeps float32 everywhere.
    `keep_mean`: after training, the output is shifted (the last layer's bias) so that central crops of the images,
    denoised, keep their mean in each channel: noise of zero mean leaves an image's mean as it is, but batch norm's
    running statistics can shift the output (the 3D network's, with batch norm, came out 0.013 too dark).
    `keep_contrast`: for models that denoise with blind spots (a one-line mask, not whitened), the output is also
    scaled (the last layer's weights and bias) by the slope of the noisy pixels on their blind-spot predictions,
    which do not see those pixels' noise: the contrast the network lost comes back (cell under row banding,
    seed 1: +0.80 dB). One-pass inference (`denoise(..., blind_spot=False)`, bioimage.io) gets the same scale.
    """

    stage1: StageConfig = field(default_factory=_stage1_defaults)
    stage2: StageConfig = field(default_factory=_stage2_defaults)
    mask: MaskConfig = field(default_factory=MaskConfig)
    base_channels: int = 16
    depth: int = 2
    validation_fraction: float = 0.1
    stage2_from_stage1: bool = True
    augment: bool = True
    seed: int | None = 0
    device: str = "auto"
    network: str = "2d"
    patch_depth: int = 16
    batch_norm: bool | None = False
    separate_channels: bool = False
    sparse_top_level: bool | None = None
    mixed_precision: bool = True
    keep_mean: bool = True
    keep_contrast: bool = True

    @property
    def uses_batch_norm(self) -> bool:
        return has_batch_norm(self.network, self.batch_norm)

    @property
    def uses_sparse_top_level(self) -> bool:
        """`sparse_top_level`, or by default (None) whether the network has no batch norms (then it is exact)."""
        return not self.uses_batch_norm if self.sparse_top_level is None else self.sparse_top_level

    @property
    def dims(self) -> int:
        """Spatial dimensions of the network: 3 for the 3D network, 2 otherwise."""
        return 3 if self.network == "3d" else 2

    def validate(self) -> Config:
        """Raise ConfigError naming the first bad value; return self when all are fine."""
        for name, kind in (("stage1", StageConfig), ("stage2", StageConfig), ("mask", MaskConfig)):
            part = getattr(self, name)
            _check(isinstance(part, kind), f"{name} must be a {kind.__name__}; got {type(part).__name__}.")
        self.stage1.validate("stage1")
        self.stage2.validate("stage2")
        self.mask.validate()
        _validate_fields(self, CONFIG_RULES, "")
        for stage_name in ("stage1", "stage2"):
            patch = getattr(self, stage_name).patch_size
            _check(
                patch % (2**self.depth) == 0,
                f"{stage_name}.patch_size ({patch}) must be divisible by 2**depth ({2**self.depth}).",
            )
        if self.network == "3d":
            _check(
                self.patch_depth % (2**self.depth) == 0,
                f"patch_depth ({self.patch_depth}) must be divisible by 2**depth ({2**self.depth}) for the 3D network.",
            )
        _check(
            self.stage1.epochs + self.stage2.epochs >= 1,
            "stage1.epochs and stage2.epochs are both 0: nothing would be trained; give at least one stage an epoch.",
        )
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """Build a Config from a (possibly partial) dict; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"A configuration must be a mapping, got {type(data).__name__}.")
        nested = {"stage1": StageConfig, "stage2": StageConfig, "mask": MaskConfig}
        kwargs = {}
        for key, value in data.items():
            if key in nested:
                defaults = cls().__getattribute__(key)
                kwargs[key] = _update_dataclass(defaults, value, key)
            else:
                kwargs[key] = value
        _reject_unknown(cls, kwargs, "config")
        return cls(**kwargs).validate()

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Config:
        """Read a Config from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if path.is_dir():
                raise ConfigError(f"Configuration file {path} is a folder; give a JSON file.")
            if not path.is_file():
                raise ConfigError(f"Configuration file {path} does not exist.")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"Configuration file {path} is not a text (JSON) file.") from None
            except OSError as err:
                raise ConfigError(f"Configuration file {path} could not be read ({err.strerror or err}).") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"The configuration is not valid JSON: {err}.") from None
        return cls.from_dict(data)


def split_epochs(total: int) -> tuple[int, int]:
    """Epochs of stage 1 and stage 2 for a total, in the default proportion (1:9), at least one each.

    A total below 2 cannot give each stage an epoch and raises ConfigError.
    """
    total = Rule("int", 2, 2 * STAGE_RULES["epochs"].high).check(total, "epochs (both stages together)")
    stage1 = max(1, round(total / 10))
    return stage1, total - stage1


def _reject_unknown(cls, kwargs: dict, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"Unknown {where} key(s) {unknown}; known keys are {sorted(known)}.")


def _update_dataclass(defaults, values, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}.")
    _reject_unknown(type(defaults), values, where)
    return type(defaults)(**{**asdict(defaults), **values})
