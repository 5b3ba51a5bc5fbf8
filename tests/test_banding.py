"""Line offsets (sCMOS banding): found, measured and removed in the estimate, training, inference and files."""

import json

import numpy as np
import pytest
import tifffile
import torch
from conftest import make_random_model, make_tiny_config
from scipy import ndimage

from napari_autostructn2v import denoise, export_bioimageio, fit, load_model, save_model
from napari_autostructn2v.core import banding
from napari_autostructn2v.core.config import MaskConfig
from napari_autostructn2v.core.errors import InputError, ModelFileError
from napari_autostructn2v.core.mask import estimate_struct_mask
from napari_autostructn2v.core.sample import clean_image, noise_kernel

LINE_AXES = {"rows": 0, "columns": 1}


def offsets_of(shape, axis, sigma=0.06, seed=0):
    """A random offset per row (axis 0) or column (axis 1), broadcast to `shape`."""
    size = (shape[0], 1) if axis == 0 else (1, shape[1])
    return np.random.default_rng(seed).standard_normal(size) * sigma


def banded_image(shape=(192, 192), lines=("rows",), sigma=0.05, seed=0):
    """(clean, offsets, noisy): the sample image with row and/or column offsets and white noise."""
    clean = clean_image(shape, seed)
    offsets = sum((offsets_of(shape, LINE_AXES[name], seed=seed + 1 + i) for i, name in enumerate(lines)),
                  np.zeros(shape))
    noise = np.random.default_rng(seed + 9).standard_normal(shape) * sigma
    return clean, offsets, (clean + offsets + noise).astype(np.float32)


def high_pass(vector):
    return vector - ndimage.gaussian_filter1d(vector, banding.NEIGHBOURS, mode="reflect")


@pytest.mark.parametrize("lines", [("rows",), ("columns",), ("rows", "columns")])
def test_detect_finds_the_banded_lines(lines):
    assert banding.detect_banding(banded_image(lines=lines)[2]) == lines


def test_detect_finds_nothing_in_noise_correlated_along_rows_or_in_signal():
    """Gaussian-correlated noise along the rows (length 3) and the sample's own signal have no line offsets:
    the two halves of a row disagree."""
    clean = clean_image((192, 192), 0)
    rng = np.random.default_rng(1)
    correlated = ndimage.convolve(rng.standard_normal(clean.shape), noise_kernel("horizontal_gauss", 3.0), mode="wrap")
    for image in (clean, clean + 0.1 * correlated, clean + 0.1 * rng.standard_normal(clean.shape)):
        assert banding.detect_banding(image.astype(np.float32)) == ()


def test_detect_leaves_signal_that_spans_the_lines_alone():
    """A horizontal grating across the whole width agrees between the halves like banding does, but changes smoothly
    from one row to the next: removing it would remove signal."""
    clean = clean_image((192, 192), 0)
    grating = clean + 0.2 * np.sin(2 * np.pi * np.arange(192) / 12)[:, None]
    noisy = grating + 0.05 * np.random.default_rng(2).standard_normal(clean.shape)
    assert banding.detect_banding(noisy.astype(np.float32)) == ()
    # a clean checkerboard's row medians are a tie: offsets of rounding size only, which agree between halves
    checkerboard = np.kron((np.indices((8, 8)).sum(axis=0) % 2), np.ones((25, 25))).astype(np.float32)
    assert banding.detect_banding(checkerboard) == ()


def test_detect_skips_planes_too_small_to_tell():
    assert banding.detect_banding(banded_image((192, 192))[2][:20]) == ()  # 20 rows of 192: neither tested
    assert banding.detect_banding(np.ones((64, 64), np.float32)) == ()  # constant: no offsets to correlate


def test_offsets_are_measured_to_a_fraction_of_their_size():
    _, offsets, noisy = banded_image(lines=("rows",))
    rows, columns = banding.line_offsets(noisy, ("rows",))
    truth = high_pass(offsets[:, 0])
    assert columns is None
    assert np.std(rows - truth) < 0.2 * np.std(truth)


def test_removing_offsets_restores_the_image_and_leaves_others_alone():
    clean, _, noisy = banded_image(lines=("rows", "columns"))
    removed = banding.remove_offsets(noisy, ("rows", "columns"))
    assert removed.dtype == np.float32 and removed.shape == noisy.shape
    assert np.mean((removed - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    plain = (clean + np.random.default_rng(3).standard_normal(clean.shape) * 0.05).astype(np.float32)
    assert np.mean((banding.remove_offsets(plain, ("rows",)) - clean) ** 2) < 1.05 * np.mean((plain - clean) ** 2)


def test_channels_without_banding_are_copied_unchanged():
    noisy = banded_image()[2]
    stack = np.stack([noisy, noisy])[None]  # (N, C, Y, X)
    result = banding.remove_offsets_channels(stack, [("rows",), ()], channel_axis=1)
    np.testing.assert_array_equal(result[0, 1], noisy)
    np.testing.assert_array_equal(result[0, 0], banding.remove_offsets(noisy, ("rows",)))
    assert not np.array_equal(result[0, 0], noisy)


def test_the_estimate_removes_the_offsets_before_measuring_the_correlation():
    _, _, noisy = banded_image((256, 256))
    estimate = estimate_struct_mask(noisy)
    assert estimate.banding == ("rows",) and estimate.mask.sum() == 1
    assert estimate.reason.startswith("row offsets removed (banding), then: ")
    kept = estimate_struct_mask(noisy, config=MaskConfig(remove_banding=False))
    assert kept.banding == () and kept.mask.sum() > 9  # the offsets' correlation runs along the row
    assert estimate_struct_mask(noisy, is_noise=True).banding == ()


def test_training_samples_patches_from_the_image_without_its_offsets(monkeypatch, one_torch_thread):
    """Both stages draw their patches from the image less its offsets, and the model removes them at inference."""
    from napari_autostructn2v.core import training

    seen = []

    class Recording(training.PatchSampler):
        def __init__(self, slices, *args, **kwargs):
            seen.append(slices)
            super().__init__(slices, *args, **kwargs)

    monkeypatch.setattr(training, "PatchSampler", Recording)
    noisy = banded_image((128, 128))[2]
    config = make_tiny_config()
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 1
    model = fit(noisy, config)
    assert model.banding == [("rows",)] and len(seen) == 2
    removed = banding.remove_offsets(noisy, ("rows",))
    for slices in seen:
        np.testing.assert_array_equal(slices[0][0], removed)
    assert abs(model.normalisation.std - removed.std()) < 1e-3 * removed.std()

    seen.clear()
    config.mask.remove_banding = False
    assert fit(noisy, config).banding is None
    np.testing.assert_array_equal(seen[0][0][0], noisy)


def test_denoise_removes_each_planes_offsets_before_the_network():
    """With a network that returns its input, the output is the image less its offsets, plane by plane and only in
    the banded channel."""
    model = make_random_model(channels=2)
    model.banding = [("rows",), ()]
    model.net.fused_for_inference = lambda: torch.nn.Identity()
    image = np.stack([np.stack([banded_image(seed=seed)[2] for seed in (0, 1)]) for _ in range(2)], axis=1)
    output = denoise(model, image, axes="ZCYX", blind_spot=False)
    for z in range(2):
        np.testing.assert_allclose(output[z, 0], banding.remove_offsets(image[z, 0], ("rows",)), atol=1e-5)
        np.testing.assert_allclose(output[z, 1], image[z, 1], atol=1e-5)


def test_chunks_of_a_banded_model_equal_the_whole_image():
    from napari_autostructn2v.core.chunked import denoise_lazy

    model = make_random_model(channels=2)
    model.banding = [("rows", "columns"), ("columns",)]
    image = np.stack([banded_image((150, 134), ("rows", "columns"), seed=seed)[2] for seed in (0, 1)])
    lazy = denoise_lazy(model, image, chunk=48, axes="CYX").compute(scheduler="synchronous")
    np.testing.assert_allclose(lazy, denoise(model, image, axes="CYX"), atol=1e-5)


def test_model_file_keeps_the_banding_and_checks_it(tmp_path):
    model = make_random_model(channels=2)
    model.banding = [("rows",), ()]
    path = save_model(model, tmp_path / "banded.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 4 and payload["banding"] == [["rows"], []]
    assert load_model(path).banding == [("rows",), ()]
    payload["banding"] = [["diagonals"], []]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="banding must list"):
        load_model(tmp_path / "bad.pt")


def test_bioimageio_export_refuses_a_banded_model(tmp_path):
    model = make_random_model(channels=1)
    model.banding = [("rows",)]
    with pytest.raises(InputError, match="mask.remove_banding=False"):
        export_bioimageio(model, tmp_path / "model.zip")
    assert not (tmp_path / "model.zip").exists()


def test_cli_mask_json_names_the_banded_lines(tmp_path, capsys):
    from napari_autostructn2v.cli import main

    path = tmp_path / "banded.tif"
    tifffile.imwrite(path, banded_image((256, 256), ("columns",))[2])
    assert main(["mask", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["banding"] == ["columns"]


def test_planes_read_from_disk_keep_their_offsets_and_the_reason_says_how_to_remove_them(tmp_path):
    """Training on uncompressed files reads planes patch by patch and never holds them whole, so their offsets are
    not removed; the estimate says that it found them, and how to have them removed."""
    from napari_autostructn2v.core.folders import open_planes

    noisy = banded_image((256, 256))[2]
    tifffile.imwrite(tmp_path / "banded.tif", noisy)
    planes, mapped = open_planes(tmp_path / "banded.tif")
    assert mapped
    estimate = estimate_struct_mask(planes)
    assert estimate.banding == () and "load the images as arrays" in estimate.reason
    assert estimate_struct_mask(noisy).banding == ("rows",)
