import numpy as np
import pytest

from napari_autostructn2v import Config, StageConfig


def make_tiny_config(**changes) -> Config:
    """A model and budget small enough for tests: seconds on 2 CPU cores."""
    stage = dict(patch_size=32, batch_size=4, epochs=2, steps_per_epoch=4, learning_rate=2e-3)
    config = Config(
        stage1=StageConfig(**stage),
        stage2=StageConfig(use_roi=False, select_background=False, **stage),
        base_channels=8,
        depth=2,
        device="cpu",
        seed=0,
    )
    # the blind-spot training most tests exercise; recorrupted pairs (on by default) have tests of their own
    config.mask.recorrupt = False
    for key, value in changes.items():
        setattr(config, key, value)
    return config.validate()


def make_random_model(network: str = "2d", channels: int = 2, separate: bool = False, n2v2: bool = False,
                      masks=None, axes: str | None = None, seed: int = 0, **config_changes):
    """An untrained tiny DenoisingModel (eval mode) with a normalisation of its own per channel, for tests of
    what does not depend on training (export, chunking). Its head is scaled up: a fresh network's output
    hardly varies, and equality checks on a flat output would prove little."""
    import torch

    from napari_autostructn2v.core.images import Normalisation
    from napari_autostructn2v.core.model import DenoisingModel

    torch.manual_seed(seed)
    config = make_tiny_config(network=network, separate_channels=separate, patch_depth=8, **config_changes)
    normalisation = (Normalisation(0.5, 0.25) if channels == 1 else
                     Normalisation(tuple(0.3 + 0.2 * c for c in range(channels)),
                                   tuple(0.1 + 0.1 * c for c in range(channels))))
    model = DenoisingModel.create(config, normalisation, n2v2=n2v2)
    model.struct_mask, model.axes = masks, axes
    with torch.no_grad():
        model.net.head.weight.mul_(100)
    model.net.eval()
    return model


def make_channel_image(shape, channels: int = 2):
    """A (C, Y, X) structured-noise sample, each channel in its own units."""
    from napari_autostructn2v.core.sample import make_sample

    return np.stack([make_sample(shape, seed=c)[1] * (1 + c) + c for c in range(channels)])


def make_channel_volume(shape, channels: int = 1):
    """A (C, Z, Y, X) structured-noise volume, each channel in its own units."""
    from napari_autostructn2v.core.sample import make_volume

    return np.stack([make_volume(shape, seed=c)[1] * (1 + c) + c for c in range(channels)])


def set_stage_budget(widget, stages=(1, 2), **values) -> None:
    """Set the Train widget's per-stage controls (epochs, steps_per_epoch, batch_size, patch_size) of `stages`."""
    for stage in stages:
        for field, value in values.items():
            widget._stage_controls[stage, field].value = value


@pytest.fixture
def tiny_config() -> Config:
    return make_tiny_config()


@pytest.fixture
def one_torch_thread():
    """One torch thread, as the benchmark suites use by default: on a loaded 2-core machine, 2 threads ran many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
