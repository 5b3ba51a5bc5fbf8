import json

import numpy as np
import pytest
import tifffile

from napari_autostructn2v.cli import main
from napari_autostructn2v import make_sample
from conftest import make_tiny_config


@pytest.fixture
def noisy_tif(tmp_path):
    clean, noisy = make_sample((96, 96), "horizontal", 0.1, seed=0)
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, noisy)
    return path


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    make_tiny_config().to_json(path)
    return path


def test_roi_counts_and_lists_patches(noisy_tif, capsys):
    assert main(["roi", str(noisy_tif), "--patch-size", "32", "--threshold", "0.6"]) == 0
    assert "patches selected (background, threshold 0.6)" in capsys.readouterr().out
    assert main(["roi", str(noisy_tif), "--patch-size", "32", "--structure", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["patch_size"] == 32 and len(result["patches"]) > 0
    assert all(0 <= y <= 96 - 32 and 0 <= x <= 96 - 32 for y, x in result["patches"])


def test_mask_prints_the_horizontal_line(noisy_tif, capsys):
    assert main(["mask", str(noisy_tif)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "#####" in rows
    assert main(["mask", str(noisy_tif), "--json"]) == 0
    mask = np.array(json.loads(capsys.readouterr().out)["mask"])
    assert mask[mask.shape[0] // 2].all() and mask.sum() == mask.shape[0]


def test_train_then_denoise_keeps_the_shape(noisy_tif, config_file, tmp_path):
    stack_path = tmp_path / "stack.tif"
    tifffile.imwrite(stack_path, np.stack([tifffile.imread(noisy_tif)] * 2))
    model_path = tmp_path / "model.pt"
    assert main(["-q", "train", str(noisy_tif), "-o", str(model_path), "--config", str(config_file), "--epochs", "2"]) == 0
    assert model_path.is_file()
    assert main(["-q", "denoise", str(noisy_tif), str(stack_path), "-m", str(model_path), "-o", str(tmp_path / "out")]) == 0
    single = tifffile.imread(tmp_path / "out" / "noisy_denoised.tif")
    stack = tifffile.imread(tmp_path / "out" / "stack_denoised.tif")
    assert single.shape == (96, 96) and stack.shape == (2, 96, 96) and stack.dtype == np.float32
    np.testing.assert_allclose(stack[1], single, atol=1e-5)


def test_run_writes_the_output(noisy_tif, config_file, tmp_path):
    out = tmp_path / "denoised.tif"
    assert main(["-q", "run", str(noisy_tif), "-o", str(out), "--config", str(config_file),
                 "--save-model", str(tmp_path / "m.pt")]) == 0
    assert tifffile.imread(out).shape == (96, 96) and (tmp_path / "m.pt").is_file()


def test_demo_writes_images_and_reports_psnr(tmp_path, capsys):
    assert main(["-q", "demo", "-o", str(tmp_path), "--size", "128", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "noisy input" in out and "final (structN2V)" in out and "detected mask" in out
    for name in ("noisy", "clean", "stage1_n2v", "final_structn2v"):
        assert tifffile.imread(tmp_path / f"{name}.tif").shape == (128, 128)
    assert (tmp_path / "comparison.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["roi", "{missing}"], "does not exist"),
        (["mask", "{text}"], "could not be read as a TIFF"),
        (["denoise", "{noisy}", "-m", "{text}", "-o", "{out}"], "not a readable"),
        (["train", "{noisy}", "-o", "{out}", "--config", "{text}"], "not valid JSON"),
        (["roi", "{rgb}"], "RGB"),
        (["roi", "{noisy}", "--slice", "3"], "out of range"),
    ],
)
def test_errors_are_one_clear_line(args, fragment, noisy_tif, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    names = {"missing": tmp_path / "missing.tif", "text": text, "noisy": noisy_tif, "out": tmp_path / "o.tif", "rgb": rgb}
    # noisy.tif is 2D, so "--slice 3" needs a stack to be in range; it has 1 slice
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.startswith("autostructn2v")
