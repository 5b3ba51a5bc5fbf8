"""Training configuration: plain dataclasses, validated, with a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "mps")
MASK_SOURCES = ("image", "stage1_residual")


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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
        _check(0.0 <= self.roi_threshold <= 1.0, f"{name}.roi_threshold must be in [0, 1], got {self.roi_threshold}.")
        _check(0.0 < self.scale_factor <= 1.0, f"{name}.scale_factor must be in (0, 1], got {self.scale_factor}.")
        _check(0.0 <= self.roi_overlap < 1.0, f"{name}.roi_overlap must be in [0, 1), got {self.roi_overlap}.")
        _check(
            self.roi_smoothing is None or self.roi_smoothing >= 0,
            f"{name}.roi_smoothing must be None (automatic) or >= 0, got {self.roi_smoothing}.",
        )
        _check(
            self.patch_size >= 16 and self.patch_size % 8 == 0,
            f"{name}.patch_size must be a multiple of 8 and at least 16, got {self.patch_size}.",
        )
        _check(self.batch_size >= 1, f"{name}.batch_size must be >= 1, got {self.batch_size}.")
        _check(self.epochs >= 0, f"{name}.epochs must be >= 0, got {self.epochs}.")
        _check(self.steps_per_epoch >= 1, f"{name}.steps_per_epoch must be >= 1, got {self.steps_per_epoch}.")
        _check(self.learning_rate > 0, f"{name}.learning_rate must be > 0, got {self.learning_rate}.")
        _check(0.0 < self.mask_percent <= 10.0, f"{name}.mask_percent must be in (0, 10], got {self.mask_percent}.")


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
    every direction is taken for signal texture and removed, so that white noise over a
    textured, dense image gives plain N2V; turn it off only for noise that is itself
    correlated alike in all directions.
    extend_correlation: a line found with `min_correlation` is followed further along its own
    direction while the correlation exceeds this lower level (slowly decaying correlations);
    never used to start a line, so white noise keeps the centre alone.
    """

    source: str = "image"
    significance: float = 4.0
    min_correlation: float = 0.1
    max_radius: int = 12
    max_pixels: int = 25
    remove_isotropic: bool = True
    extend_correlation: float = 0.05

    def validate(self) -> None:
        _check(self.source in MASK_SOURCES, f"mask.source must be one of {MASK_SOURCES}, got {self.source!r}.")
        _check(self.significance > 0, f"mask.significance must be > 0, got {self.significance}.")
        _check(0.0 < self.min_correlation < 1.0, f"mask.min_correlation must be in (0, 1), got {self.min_correlation}.")
        _check(1 <= self.max_radius <= 24, f"mask.max_radius must be in [1, 24], got {self.max_radius}.")
        _check(1 <= self.max_pixels <= 101, f"mask.max_pixels must be in [1, 101], got {self.max_pixels}.")
        _check(
            0.0 < self.extend_correlation <= self.min_correlation,
            f"mask.extend_correlation must be in (0, mask.min_correlation], got {self.extend_correlation}.",
        )
        _check(
            isinstance(self.remove_isotropic, bool),
            f"mask.remove_isotropic must be true or false, got {self.remove_isotropic!r}.",
        )


@dataclass
class Config:
    """Everything a two-stage training run needs; ROI defaults follow the seed document.

    Stage 1 is a short N2V warm-up (a tenth of the steps) and stage 2 gets the rest: with the mask
    estimated from the raw image, steps spent in stage 2 pay most (see the README's benchmarks).
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

    def validate(self) -> Config:
        """Raise ConfigError naming the first bad value; return self when all are fine."""
        self.stage1.validate("stage1")
        self.stage2.validate("stage2")
        self.mask.validate()
        _check(4 <= self.base_channels <= 256, f"base_channels must be in [4, 256], got {self.base_channels}.")
        _check(1 <= self.depth <= 4, f"depth must be in [1, 4], got {self.depth}.")
        for stage_name in ("stage1", "stage2"):
            patch = getattr(self, stage_name).patch_size
            _check(
                patch % (2**self.depth) == 0,
                f"{stage_name}.patch_size ({patch}) must be divisible by 2**depth ({2**self.depth}).",
            )
        _check(
            0.0 < self.validation_fraction < 0.5,
            f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}.",
        )
        _check(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}.")
        _check(self.seed is None or isinstance(self.seed, int), f"seed must be an integer or None, got {self.seed!r}.")
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
            if not path.is_file():
                raise ConfigError(f"Configuration file {path} does not exist.")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"The configuration is not valid JSON: {err}.") from None
        return cls.from_dict(data)


def split_epochs(total: int) -> tuple[int, int]:
    """Epochs of stage 1 and stage 2 for a total, in the default proportion (1:9)."""
    stage1 = round(total / 10)
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
