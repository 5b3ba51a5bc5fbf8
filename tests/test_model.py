import numpy as np
import pytest
import torch

from napari_autostructn2v import ModelFileError, denoise, fit, load_model, make_sample, save_model


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
