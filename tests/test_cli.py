import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_autostructn2v import Config, denoise, fit, load_model, make_sample, preset_mask, save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core import training
from conftest import make_tiny_config

SRC = Path(__file__).resolve().parents[1] / "src"


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


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny trained model, saved once for the denoise tests."""
    noisy = make_sample((96, 96), "horizontal", 0.1, seed=0)[1]
    return save_model(fit(noisy, make_tiny_config()), tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command starts training: refusals must come before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the command should have been refused first")

    monkeypatch.setattr(training, "train", refuse)


def one_error_line(capsys, fragment: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("autostructn2v "), err
    assert fragment in err, err
    return err


def snapshot(*paths: Path) -> dict:
    return {path: path.read_bytes() for path in paths}


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
    record = json.loads(capsys.readouterr().out)
    mask = np.array(record["mask"])
    assert mask[mask.shape[0] // 2].all() and mask.sum() == mask.shape[0]
    # the sample's noise is additive: training would use recorrupted pairs over the line's pixels
    assert record["recorruption"]["pixels"] >= mask.sum() and record["recorruption"]["variance_ratio"] < 1.3


def test_train_then_denoise_keeps_the_shape(noisy_tif, config_file, tmp_path, capsys):
    stack_path = tmp_path / "stack.tif"
    tifffile.imwrite(stack_path, np.stack([tifffile.imread(noisy_tif)] * 2))
    model_path = tmp_path / "model.pt"
    assert main(["train", str(noisy_tif), "-o", str(model_path), "--config", str(config_file), "--epochs", "2"]) == 0
    assert "epochs: 1 in stage 1 + 1 in stage 2" in capsys.readouterr().err
    assert model_path.is_file()
    out = tmp_path / "out"
    assert main(["-q", "denoise", str(noisy_tif), str(stack_path), "-m", str(model_path), "-o", str(out)]) == 0
    single = tifffile.imread(tmp_path / "out" / "noisy_denoised.tif")
    stack = tifffile.imread(tmp_path / "out" / "stack_denoised.tif")
    assert single.shape == (96, 96) and stack.shape == (2, 96, 96) and stack.dtype == np.float32
    np.testing.assert_allclose(stack[1], single, atol=1e-5)


def test_run_writes_the_output_and_trains_both_stages(noisy_tif, config_file, tmp_path, monkeypatch, capsys):
    seen = []
    real_train = training.train

    def spy(images, config, **kwargs):
        seen.append((config.stage1.epochs, config.stage2.epochs))
        return real_train(images, config, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    out = tmp_path / "denoised.tif"
    assert main(["run", str(noisy_tif), "-o", str(out), "--config", str(config_file), "--epochs", "2",
                 "--save-model", str(tmp_path / "m.pt")]) == 0
    assert seen == [(1, 1)]  # --epochs 2 used to round stage 1 to 0 epochs
    assert "epochs: 1 in stage 1 + 1 in stage 2" in capsys.readouterr().err
    assert tifffile.imread(out).shape == (96, 96) and (tmp_path / "m.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["denoised.tif", "m.pt", "noisy.tif", "tiny.json"]


def test_demo_writes_images_and_reports_psnr(tmp_path, capsys):
    assert main(["-q", "demo", "-o", str(tmp_path), "--size", "128", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "noisy input" in out and "final" in out and "detected mask" in out and "noise: " in out
    for name in ("noisy", "clean", "stage1_n2v", "final_structn2v"):
        assert tifffile.imread(tmp_path / f"{name}.tif").shape == (128, 128)
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    before = snapshot(*tmp_path.iterdir())
    assert main(["-q", "demo", "-o", str(tmp_path), "--size", "128", "--epochs", "2"]) == 2
    one_error_line(capsys, "exists; add --overwrite to replace it")
    assert snapshot(*tmp_path.iterdir()) == before


# ---------------------------------------------------------------- data loss


def test_denoise_predicts_with_blind_spots_unless_told_to_predict_directly(noisy_tif, model_file, tmp_path):
    model = load_model(model_file)
    model.struct_mask = preset_mask("horizontal", 5)  # a line mask: blind-spot inference differs from one pass
    line_model = save_model(model, tmp_path / "line.pt")
    image = tifffile.imread(noisy_tif)
    for flags, blind_spot in (([], True), (["--direct-inference"], False)):
        out = tmp_path / f"out_{blind_spot}.tif"
        assert main(["-q", "denoise", str(noisy_tif), "-m", str(line_model), "-o", str(out), *flags]) == 0
        np.testing.assert_allclose(tifffile.imread(out), denoise(model, image, blind_spot=blind_spot), atol=1e-5)
    assert np.abs(tifffile.imread(tmp_path / "out_True.tif") - tifffile.imread(tmp_path / "out_False.tif")).max() > 1e-3


def test_denoise_refuses_to_write_over_its_input(noisy_tif, model_file, tmp_path, capsys):
    link = tmp_path / "hard-link.tif"
    os.link(noisy_tif, link)
    before = snapshot(noisy_tif, model_file)
    for output in (noisy_tif, link):  # the same name, or another name for the same file
        assert main(["-q", "denoise", str(noisy_tif), "-m", str(model_file), "-o", str(output), "--overwrite"]) == 2
        one_error_line(capsys, f"-o {output} is the input {noisy_tif}; writing there would replace it")
    # the model file is an input too
    copy = tmp_path / "model-copy.tif"
    copy.write_bytes(model_file.read_bytes())
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(copy), "-o", str(copy), "--overwrite"]) == 2
    one_error_line(capsys, "is the input")
    assert snapshot(noisy_tif, model_file) == before


def test_run_refuses_to_write_over_its_input_before_training(noisy_tif, tmp_path, no_training, capsys):
    before = snapshot(noisy_tif)
    assert main(["-q", "run", str(noisy_tif), "-o", str(noisy_tif), "--overwrite"]) == 2
    one_error_line(capsys, "writing there would replace it")
    assert snapshot(noisy_tif) == before


def test_inputs_with_the_same_name_get_distinct_outputs(noisy_tif, model_file, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "img.tif", tifffile.imread(noisy_tif) * (2 if folder == "b" else 1))
    tifffile.imwrite(tmp_path / "a_img.tif", tifffile.imread(noisy_tif))  # would take a's first choice
    inputs = [tmp_path / "a" / "img.tif", tmp_path / "b" / "img.tif", tmp_path / "a_img.tif"]
    out = tmp_path / "out"
    assert main(["-q", "denoise", *map(str, inputs), "-m", str(model_file), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a_img_2_denoised.tif", "a_img_denoised.tif",
                                                      "b_img_denoised.tif"]
    assert f"note: {inputs[0]} -> a_img_denoised.tif (several inputs share the name img.tif)" in captured.err
    assert f"{inputs[2]} -> {out / 'a_img_2_denoised.tif'}" in captured.out
    first, second = tifffile.imread(out / "a_img_denoised.tif"), tifffile.imread(out / "b_img_denoised.tif")
    assert not np.allclose(first, second)  # both results kept, not one written over the other


def test_the_same_input_twice_is_refused(noisy_tif, model_file, tmp_path, capsys):
    twice = [str(noisy_tif), str(noisy_tif)]
    assert main(["-q", "denoise", *twice, "-m", str(model_file), "-o", str(tmp_path / "o")]) == 2
    one_error_line(capsys, "are the same file; give each input once")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["run", "train"])
def test_unwritable_outputs_are_refused_before_training(command, noisy_tif, tmp_path, no_training, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    suffix = ".tif" if command == "run" else ".pt"
    for output, fragment in ((f"/proc/x{suffix}", "cannot write to /proc"),
                             (f"{blocker}/sub/x{suffix}", f"{blocker} is a file")):
        assert main(["-q", command, str(noisy_tif), "-o", output]) == 2
        one_error_line(capsys, fragment)
    if command == "run":
        assert main(["-q", "run", str(noisy_tif), "-o", str(tmp_path / "x.tif"), "--save-model", "/proc/m.pt"]) == 2
        one_error_line(capsys, "cannot write to /proc")


def test_model_and_image_outputs_need_the_right_suffix(noisy_tif, tmp_path, no_training, capsys):
    assert main(["-q", "train", str(noisy_tif), "-o", str(tmp_path / "model.tif")]) == 2
    one_error_line(capsys, "a model file name must end in .pt or .pth")
    assert main(["-q", "run", str(noisy_tif), "-o", str(tmp_path / "out.png")]) == 2
    one_error_line(capsys, "outputs are written as TIFF; give a name ending in .tif or .tiff")
    assert not (tmp_path / "out.png").exists()  # it used to become a folder


def test_denoise_output_rules(noisy_tif, model_file, tmp_path, capsys):
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"keep me")
    second = tmp_path / "second.tif"
    second.write_bytes(noisy_tif.read_bytes())
    assert main(["-q", "denoise", str(noisy_tif), str(second), "-m", str(model_file), "-o", str(existing)]) == 2
    one_error_line(capsys, "with 2 input images, -o must be a folder")
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(model_file), "-o", str(tmp_path / "out.png")]) == 2
    one_error_line(capsys, "outputs are written as TIFF")
    assert not (tmp_path / "out.png").exists()
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(model_file), "-o", str(existing)]) == 2
    one_error_line(capsys, f"-o {existing} exists; add --overwrite to replace it")
    assert existing.read_bytes() == b"keep me"
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(model_file), "-o", str(existing), "--overwrite"]) == 0
    assert tifffile.imread(existing).shape == (96, 96)


def test_a_crash_while_writing_keeps_the_previous_output(noisy_tif, model_file, tmp_path, monkeypatch, capsys):
    target = tmp_path / "out.tif"
    target.write_bytes(b"previous result")

    def crash(path, data, **kwargs):
        Path(path).write_bytes(b"II*\x00 half a TIFF")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(model_file), "-o", str(target), "--overwrite"]) == 2
    one_error_line(capsys, "No space left on device")
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy.tif", "out.tif"]


# ---------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "{noisy}", "-o", "{out}", "--epochs", "0"], "epochs (both stages together) must be an integer in [2,"),
        (["run", "{noisy}", "-o", "{out}", "--epochs", "1"], "got 1."),
        (["train", "{noisy}", "-o", "{model}", "--epochs", "-3"], "got -3."),
        (["demo", "-o", "{folder}", "--epochs", "-5"], "got -5."),
        (["run", "{noisy}", "-o", "{out}", "--seed", "99999999999999999999999"],
         "seed must be an integer in [0, 4294967295]"),
        (["run", "{noisy}", "-o", "{out}", "--tile-size", "8"], "tile_size (at least 2 * overlap + 4)"),
        (["demo", "-o", "{folder}", "--tile-size", "0"], "tile_size"),
    ],
)
def test_bad_numbers_are_refused_before_training(args, fragment, noisy_tif, tmp_path, no_training, capsys):
    names = {"noisy": noisy_tif, "out": tmp_path / "o.tif", "model": tmp_path / "m.pt", "folder": tmp_path / "demo"}
    assert main(["-q", *[a.format(**names) for a in args]]) == 2
    one_error_line(capsys, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy.tif"]


@pytest.mark.parametrize("size", ["0", "-1", "64", "big"])
def test_demo_size_is_checked_by_the_parser(size, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--size", size])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --size:" in err and "Traceback" not in err


# ---------------------------------------------------------------- one line, never a traceback


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"stage1": {"epochs": "ten"}}, "stage1.epochs must be an integer in [0, 100000]; got 'ten'."),
        ({"stage1": {"epochs": None}}, "stage1.epochs must be an integer"),
        ({"stage1": {"epochs": 1.5}}, "stage1.epochs must be an integer"),
        ({"stage1": {"learning_rate": "fast"}}, "stage1.learning_rate must be a number in (0, 1]"),
        ({"stage1": {"use_roi": "no"}}, "stage1.use_roi must be true or false"),
        ({"seed": 99999999999999999999999}, "seed must be an integer in [0, 4294967295]"),
    ],
)
def test_configuration_errors_are_one_line(config, fragment, noisy_tif, tmp_path, no_training, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["-q", "train", str(noisy_tif), "-o", str(tmp_path / "m.pt"), "--config", str(path)]) == 2
    one_error_line(capsys, fragment)


def test_a_model_file_with_a_string_version_is_one_line(noisy_tif, model_file, tmp_path, capsys):
    import torch

    payload = torch.load(model_file, weights_only=True)
    payload["version"] = "1"
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(bad), "-o", str(tmp_path / "o.tif")]) == 2
    one_error_line(capsys, "format version must be a positive integer, got '1'")
    assert not (tmp_path / "o.tif").exists()


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_malicious_model_file_is_one_line_without_unsafe_advice(noisy_tif, tmp_path, capsys):
    import torch

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-autostructn2v model", "payload": _Marker(marker)}, evil)
    assert main(["-q", "denoise", str(noisy_tif), "-m", str(evil), "-o", str(tmp_path / "o.tif")]) == 2
    err = one_error_line(capsys, "never loaded because they could run code")
    assert "weights_only" not in err and not marker.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["roi", "{missing}"], "does not exist"),
        (["roi", "{folder}"], "is a folder; give one TIFF file"),
        (["denoise", "{folder}", "-m", "{text}", "-o", "{out}"], "is a folder without TIFF files"),
        (["train", "{folder}/*.tif", "-o", "{model}"], "no TIFF file (.tif, .tiff) matches the pattern"),
        (["denoise", "{noisy}", "-m", "{folder}", "-o", "{out}"], "is a folder; give the model file"),
        (["mask", "{text}"], "could not be read as a TIFF"),
        (["mask", "{tiny}"], "6x40"),
        (["denoise", "{noisy}", "-m", "{text}", "-o", "{out}"], "not a readable"),
        (["train", "{noisy}", "-o", "{model}", "--config", "{text}"], "not valid JSON"),
        (["train", "{noisy}", "-o", "{model}", "--config", "{folder}"], "is a folder; give a JSON file"),
        (["train", "{noisy}", "-o", "{model}", "--config", "{binary}"], "is not a text (JSON) file"),
        (["roi", "{rgb}"], "RGB"),
        (["roi", "{noisy}", "--slice", "3"], "out of range"),
        (["roi", "{noisy}", "--patch-size", "0"], "patch_size must be an integer >= 1; got 0."),
        (["roi", "{noisy}", "--patch-size", "-16"], "patch_size must be an integer >= 1; got -16."),
        (["config", "--check", "{text}"], "not valid JSON"),
    ],
)
def test_errors_are_one_clear_line(args, fragment, noisy_tif, tmp_path, no_training, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    tiny = tmp_path / "tiny.tif"
    tifffile.imwrite(tiny, np.random.default_rng(0).random((6, 40)).astype(np.float32))
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)))
    folder = tmp_path / "images"
    folder.mkdir()
    names = {"missing": tmp_path / "missing.tif", "text": text, "noisy": noisy_tif, "out": tmp_path / "o.tif",
             "rgb": rgb, "tiny": tiny, "binary": binary, "folder": folder, "model": tmp_path / "m.pt"}
    before = snapshot(text, rgb, tiny, binary, noisy_tif)
    assert main([a.format(**names) for a in args]) == 2
    one_error_line(capsys, fragment)
    assert snapshot(text, rgb, tiny, binary, noisy_tif) == before
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "m.pt").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "roi", str(tmp_path / "missing.tif")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "CommandError" in err and err.rstrip().endswith("does not exist.")
    assert main(["roi", str(tmp_path / "missing.tif"), "--debug"]) == 2  # after the command name as well
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_a_hint(noisy_tif, monkeypatch, capsys):
    from napari_autostructn2v.core import roi

    def broken(*args, **kwargs):
        raise RuntimeError("internal\nproblem")

    monkeypatch.setattr(roi, "select_roi_patches", broken)
    assert main(["roi", str(noisy_tif)]) == 1
    one_error_line(capsys, "unexpected error (RuntimeError: internal problem); rerun with --debug")


# ---------------------------------------------------------------- config and start-up


def test_config_dump_prints_the_defaults_and_check_reads_them_back(tmp_path, capsys):
    assert main(["config", "--dump"]) == 0
    text = capsys.readouterr().out
    assert json.loads(text) == Config().to_dict()
    path = tmp_path / "start.json"
    path.write_text(text)
    assert main(["config", "--check", str(path)]) == 0
    assert "valid; stage 1 2 epochs, stage 2 18 epochs" in capsys.readouterr().out


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


def test_the_command_line_starts_without_heavy_imports():
    """`--help` and argument errors must answer at once: torch, scipy and scikit-image load only when used."""
    result = _python(
        "import sys\n"
        "import napari_autostructn2v\n"
        "from napari_autostructn2v.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'scipy', 'skimage', 'numpy', 'tifffile', 'tqdm') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_answers_quickly_and_errors_print_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "napari_autostructn2v.cli", "run", "--help"],
                            capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0 and "--overwrite" in result.stdout
    assert elapsed < 5  # about 0.3 s idle; the bound leaves room for a loaded test machine (torch alone took 8 s)
    result = subprocess.run([sys.executable, "-m", "napari_autostructn2v.cli", "denoise", str(tmp_path / "x.tif"),
                             "-m", "m.pt", "-o", "o.tif"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_the_package_still_exports_the_api_lazily():
    result = _python(
        "import sys\n"
        "import napari_autostructn2v as asn\n"
        "assert 'torch' not in sys.modules\n"
        "names = [n for n in asn.__all__ if getattr(asn, n) is None]\n"
        "assert not names, names\n"
        "assert set(asn.__all__) <= set(dir(asn))\n"
        "from napari_autostructn2v import Config, fit, denoise\n"
        "assert asn.Config is Config and callable(fit) and callable(denoise)\n"
        "try:\n"
        "    asn.no_such_name\n"
        "except AttributeError as err:\n"
        "    print(err)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "has no attribute 'no_such_name'" in result.stdout
