import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_autostructn2v import (Config, DenoisingModel, ModelFileError, StageConfig, denoise, fit, load_model,
                                  make_sample, save_model)
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.training import Step, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_tiny_config

    noisy = make_sample((96, 96), "horizontal", 0.1, seed=0)[1]
    config = make_tiny_config()
    config.stage1.n2v2 = True
    model = fit(noisy, config)
    return model, noisy


def test_save_load_reproduces_predictions(trained, tmp_path):
    model, noisy = trained
    path = save_model(model, tmp_path / "sub" / "model.pt")
    loaded = load_model(path)
    np.testing.assert_array_equal(denoise(loaded, noisy), denoise(model, noisy))
    np.testing.assert_array_equal(loaded.struct_mask, model.struct_mask)
    assert loaded.config == model.config and loaded.net.n2v2
    assert loaded.normalisation == model.normalisation
    assert loaded.history == model.history


def test_missing_damaged_and_foreign_files(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(text)
    good = save_model(model, tmp_path / "good.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not a napari-autostructn2v model"):
        load_model(foreign)
    incomplete = tmp_path / "incomplete.pt"
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    del payload["state_dict"]["head.weight"]
    torch.save(payload, incomplete)
    with pytest.raises(ModelFileError, match="damaged or incomplete"):
        load_model(incomplete)


class _WritesAMarker:
    """Unpickling this object would create a file: the proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_without_running_it(trained, tmp_path):
    model, _ = trained
    marker = tmp_path / "code-ran.txt"
    payload = torch.load(save_model(model, tmp_path / "good.pt"), weights_only=True)
    payload["history"] = [_WritesAMarker(marker)]  # a real model file with one poisoned field
    archive = tmp_path / "poisoned.pt"
    torch.save(payload, archive)
    legacy = tmp_path / "legacy.pt"  # a plain pickle, not a torch archive
    with open(legacy, "wb") as handle:
        pickle.dump(_WritesAMarker(marker), handle, protocol=4)
    for path, fragment in ((archive, "never loaded because they could run code"), (legacy, "not a readable")):
        with pytest.raises(ModelFileError) as caught:
            load_model(path)
        message = str(caught.value)
        assert fragment in message
        assert "\n" not in message and "weights_only" not in message and "arbitrary code" not in message
    assert not marker.exists()


def _tampered(model, tmp_path, name, change):
    payload = torch.load(save_model(model, tmp_path / "good.pt"), weights_only=True)
    change(payload)
    path = tmp_path / f"{name}.pt"
    torch.save(payload, path)
    return path


def _set(key, value):
    return lambda payload: payload.__setitem__(key, value)


def _poison_weight(payload):
    payload["state_dict"]["head.weight"][0, 0, 0, 0] = float("nan")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_set("version", "1"), "format version must be a positive integer, got '1'"),
        (_set("version", True), "format version must be a positive integer"),
        (_set("version", 99), "newer napari-autostructn2v (format 99"),
        (_set("normalisation", [float("nan"), 1.0]), "normalisation must be two finite numbers"),
        (_set("normalisation", [0.0, 0.0]), "normalisation must be two finite numbers"),
        (_set("normalisation", "0 1"), "normalisation must be two finite numbers"),
        (_poison_weight, "weights hold NaN or infinite values (head.weight)"),
        (_set("struct_mask", [[True, False, True], [True, False, True], [True, False, True]]), "centre pixel"),
        (_set("struct_mask", [[True, True], [True, True]]), "odd square"),
        (_set("struct_mask", [[1]]), "must hold booleans"),
        (_set("n2v2", "yes"), "n2v2 flag must be true or false"),
        (_set("state_dict", [1, 2]), "weights are not a mapping of names to tensors"),
        (_set("history", "none"), "history is not a list"),
        (lambda payload: payload.pop("normalisation"), "lacks the field(s) ['normalisation']"),
        (lambda payload: payload["config"].__setitem__("depth", "2"), "depth must be an integer in [1, 4]"),
    ],
)
def test_every_field_of_a_model_file_is_checked(trained, tmp_path, change, fragment):
    model, _ = trained
    with pytest.raises(ModelFileError) as caught:
        load_model(_tampered(model, tmp_path, "tampered", change))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_failed_save_leaves_the_previous_file_whole(trained, tmp_path, monkeypatch):
    model, _ = trained
    path = save_model(model, tmp_path / "model.pt")
    before = path.read_bytes()

    def crash_half_way(payload, target):
        Path(target).write_bytes(b"PK half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind


def test_a_folder_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)


def test_inference_copy_folds_batch_norm_and_keeps_outputs(trained):
    _, noisy = trained
    from conftest import make_tiny_config

    net = DenoisingModel.create(make_tiny_config(batch_norm=True), Normalisation(0.0, 1.0)).net.eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for module in net.modules():  # running statistics far from the identity, so a wrong fold shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.add_(0.3)
            module.running_var.mul_(1.7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = net.fused_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    patch = torch.from_numpy(noisy[:64, :64].copy())[None, None]
    patch = (patch - patch.mean()) / patch.std()
    with torch.no_grad():
        np.testing.assert_allclose(fused(patch).numpy(), net(patch).numpy(), rtol=1e-4, atol=1e-4)
    for key, value in net.state_dict().items():  # the training weights are untouched
        assert torch.equal(value, before[key]), key


def test_device_policies_on_the_cpu():
    from napari_autostructn2v.core.model import autocast, memory_format

    cpu = torch.device("cpu")
    assert memory_format(cpu) is torch.channels_last  # inference
    assert memory_format(cpu, training=True) is torch.contiguous_format  # training: results as before
    assert memory_format(torch.device("cuda"), training=True) is torch.channels_last


@pytest.mark.parametrize("amx", [False, True], ids=["cpu without AMX", "cpu with AMX"])
def test_bfloat16_only_where_the_cpu_computes_it_natively_and_the_config_allows_it(monkeypatch, amx):
    from napari_autostructn2v.core.model import autocast, native_bfloat16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    cpu = torch.device("cpu")
    assert native_bfloat16(cpu) is amx and not native_bfloat16(torch.device("mps"))
    conv = torch.nn.Conv2d(1, 2, 3)
    for allowed in (True, False):
        with autocast(cpu, allowed):
            out = conv(torch.ones(1, 1, 5, 5))
        assert out.dtype == (torch.bfloat16 if amx and allowed else torch.float32)


def _untrained(mixed_precision: bool) -> DenoisingModel:
    torch.manual_seed(0)
    model = DenoisingModel.create(Config(base_channels=8, mixed_precision=mixed_precision), Normalisation(100.0, 20.0))
    model.net.eval()
    return model


def test_denoise_and_training_follow_the_configs_precision(monkeypatch):
    """With native bfloat16 (AMX, or forced here) the model's config decides: bfloat16 rounds, float32 does not."""
    from napari_autostructn2v.core import model as model_module

    image = np.random.default_rng(0).normal(100, 20, (64, 64)).astype(np.float32)
    monkeypatch.setattr(model_module, "native_bfloat16", lambda device: False)
    reference = denoise(_untrained(True), image)
    monkeypatch.setattr(model_module, "native_bfloat16", lambda device: True)
    np.testing.assert_array_equal(denoise(_untrained(False), image), reference)
    mixed = denoise(_untrained(True), image)
    assert 0 < np.abs(mixed - reference).max() < 0.01 * 20.0  # bfloat16's 8 bits: well within 1 % of the data's std

    losses = {}
    for precision in (True, False):
        config = Config(stage1=StageConfig(use_roi=False, epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32),
                        stage2=StageConfig(use_roi=False, epochs=0), base_channels=8, seed=0,
                        mixed_precision=precision)
        losses[precision] = [event.loss for event in train(image, config) if isinstance(event, Step)]
    assert losses[True] != losses[False] and np.allclose(losses[True], losses[False], rtol=0.05)


def test_idle_threads_leave_the_busy_cores_alone(monkeypatch):
    from napari_autostructn2v.core import model as model_module

    monkeypatch.setattr(model_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(model_module.torch, "get_num_threads", lambda: 4)
    for load, expected in ((0.2, 4), (1.4, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(model_module.os, "getloadavg", lambda load=load: (load, load, load))
        assert model_module.idle_threads() == expected, load
    monkeypatch.setattr(model_module.torch, "get_num_threads", lambda: 2)  # OMP_NUM_THREADS=2 is kept
    monkeypatch.setattr(model_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert model_module.idle_threads() == 2
