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
    for key, value in changes.items():
        setattr(config, key, value)
    return config.validate()


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
