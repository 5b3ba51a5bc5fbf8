"""The training settings shared by all widgets docked in one viewer."""

from __future__ import annotations

import weakref

from ..core.config import Config

_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def settings_for(viewer) -> Config:
    """The one Config of `viewer` (created with defaults on first use); widgets edit it in place."""
    config = _settings.get(viewer)
    if config is None:
        config = _settings[viewer] = Config()
    return config


_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_model(viewer, model) -> None:
    """Remember `model` as the last one trained in `viewer` (the Denoise widget offers it)."""
    _models[viewer] = model


def model_for(viewer):
    """The last model trained in `viewer`, or None."""
    return _models.get(viewer)
