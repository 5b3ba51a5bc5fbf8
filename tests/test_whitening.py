"""Whitening of first-order filtered (PMT-like) noise: the filter, its detection, training and inference with it."""

import json

import numpy as np
import pytest
import tifffile
import torch
from conftest import make_random_model, make_tiny_config
from scipy import ndimage
from scipy.signal import lfilter

from napari_autostructn2v import (
    ModelFileError,
    denoise,
    export_bioimageio,
    load_model,
    save_model,
)
from napari_autostructn2v.core.config import MaskConfig
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.mask import estimate_struct_mask
from napari_autostructn2v.core.sample import clean_image
from napari_autostructn2v.core.training import MaskEstimated, PatchSampler, fit, train
from napari_autostructn2v.core.whitening import (
    Whitening,
    colour_channels,
    detect_whitening,
    whiten_channels,
)

RHO = 0.6  # a PMT filter of tau 2 px: exp(-1/2)


def filtered_noise(shape, rho=RHO, axis=-1, sigma=0.1, seed=0):
    """First-order autoregressive noise along `axis`, standard deviation `sigma`."""
    white = np.random.default_rng(seed).standard_normal(shape)
    return (sigma * np.sqrt(1 - rho**2) * lfilter([1.0], [1.0, -rho], white, axis=axis)).astype(np.float32)


def pmt_image(shape=(128, 128), rho=RHO, axis=-1, seed=0):
    """(clean, noisy): the procedural image under first-order filtered noise."""
    clean = clean_image(shape, seed)
    return clean, clean + filtered_noise(shape, rho, axis, seed=seed)


def first_order_acf(rho, axis="X", radius=14):
    acf = np.zeros((2 * radius + 1,) * 2)
    lags = np.abs(np.arange(-radius, radius + 1))
    if axis == "X":
        acf[radius] = rho**lags
    else:
        acf[:, radius] = rho**lags
    return acf


def line(length, axis="X"):
    mask = np.zeros((length, length), bool)
    if axis == "X":
        mask[length // 2] = True
    else:
        mask[:, length // 2] = True
    return mask


@pytest.mark.parametrize("axis", ["X", "Y"])
@pytest.mark.parametrize("rho", [0.3, 0.75])
def test_colour_is_the_exact_inverse_of_whiten(axis, rho):
    array = np.random.default_rng(1).standard_normal((3, 40, 50)).astype(np.float32) + 2
    filter_ = Whitening(axis, rho)
    assert np.allclose(filter_.colour(filter_.whiten(array)), array, atol=1e-5)
    assert np.allclose(filter_.whiten(filter_.colour(array)), array, atol=1e-5)
    assert not np.allclose(filter_.whiten(array), array, atol=0.1)


@pytest.mark.parametrize("axis, array_axis", [("X", -1), ("Y", -2)])
def test_whiten_turns_first_order_noise_white_along_its_axis(axis, array_axis):
    noise = filtered_noise((256, 256), axis=array_axis)
    white = Whitening(axis, RHO).whiten(noise)

    def neighbours(values):
        a, b = (values[:, :-1], values[:, 1:]) if array_axis == -1 else (values[:-1], values[1:])
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert neighbours(noise) > 0.55
    assert abs(neighbours(white)) < 0.02


def test_whiten_treats_the_first_pixel_as_its_own_predecessor():
    row = np.array([[2.0, 3.0, 5.0]], np.float32)
    assert np.allclose(Whitening("X", 0.5).whiten(row), [[1.0, 2.0, 3.5]])


def test_channels_without_a_filter_are_left_alone():
    array = np.random.default_rng(2).standard_normal((2, 16, 16)).astype(np.float32)
    filters = [None, Whitening("X", 0.5)]
    whitened = whiten_channels(array, filters, channel_axis=0)
    assert np.array_equal(whitened[0], array[0])
    assert np.allclose(whitened[1], Whitening("X", 0.5).whiten(array[1]))
    assert np.allclose(colour_channels(whitened, filters, channel_axis=0), array, atol=1e-5)


@pytest.mark.parametrize("axis", ["X", "Y"])
def test_detect_finds_a_first_order_line(axis):
    found = detect_whitening(first_order_acf(0.6, axis), line(9, axis))
    assert found == Whitening(axis, 0.6)


@pytest.mark.parametrize("acf, mask", [
    (first_order_acf(0.9), line(25)),  # too strong: colouring would amplify errors tenfold
    (first_order_acf(0.1), line(3)),  # too weak to matter
    (first_order_acf(0.6), np.ones((1, 1), bool)),  # no line
    (first_order_acf(0.6), np.eye(9, dtype=bool)),  # a diagonal
    (first_order_acf(0.6), np.ones((3, 9), bool)),  # a band
], ids=["strong", "weak", "centre", "diagonal", "band"])
def test_detect_refuses_what_is_not_a_first_order_line(acf, mask):
    assert detect_whitening(acf, mask) is None


@pytest.mark.parametrize("kernel", [np.ones(5), np.exp(-np.arange(-6, 7) ** 2 / 8)], ids=["box5", "gauss2"])
def test_detect_refuses_line_noise_that_does_not_decay_as_rho_to_the_lag(kernel):
    full = np.correlate(kernel, kernel, "full")
    radius, half = 14, len(full) // 2
    acf = np.zeros((2 * radius + 1,) * 2)
    acf[radius, radius - half : radius + half + 1] = full / full[half]
    lag_one = acf[radius, radius + 1]
    assert detect_whitening(acf, line(len(kernel))) is None, f"lag-1 correlation {lag_one:.2f}"


def test_estimate_decorrelates_first_order_noise_instead_of_masking_it():
    _, noisy = pmt_image((256, 256))
    estimate = estimate_struct_mask(noisy)
    assert estimate.whitening is not None and estimate.whitening.axis == "X"
    assert abs(estimate.whitening.rho - RHO) < 0.05
    assert estimate.mask.shape == (1, 1)
    assert "decorrelated along X" in estimate.reason and "instead of masking a line" in estimate.reason

    vertical = estimate_struct_mask(pmt_image((256, 256), axis=-2)[1])
    assert vertical.whitening is not None and vertical.whitening.axis == "Y"

    masked = estimate_struct_mask(noisy, config=MaskConfig(whiten=False))
    assert masked.whitening is None and masked.mask.sum() >= 5 and masked.mask[masked.mask.shape[0] // 2].all()


def test_estimate_keeps_masks_for_other_noise_and_for_residuals():
    clean = clean_image((256, 256))
    box = ndimage.convolve1d(np.random.default_rng(3).standard_normal(clean.shape), np.ones(5) / np.sqrt(5), axis=-1)
    assert estimate_struct_mask(clean + 0.1 * box.astype(np.float32)).whitening is None
    assert estimate_struct_mask(filtered_noise((256, 256)), is_noise=True).whitening is None


@pytest.mark.parametrize("corner", [(0, 0), (1, 7), (20, 0), (5, 30)])
def test_sampler_whitens_each_patch_as_part_of_the_whole_image(corner):
    _, noisy = pmt_image((64, 64))
    sample = noisy[None]
    normalisation = Normalisation.fit_channels([sample])
    filters = [Whitening("X", 0.6)]
    config = make_tiny_config()
    sampler = PatchSampler([sample], config.stage2, normalisation, np.random.default_rng(0), "stage 2",
                           whitening=filters)
    y, x = corner
    whole = whiten_channels(normalisation.forward(sample, channel_axis=0), filters, channel_axis=0)
    assert np.allclose(sampler._read(sample, y, x), whole[:, y : y + 32, x : x + 32], atol=1e-5)


def test_sampler_whitens_volume_patches_plane_by_plane():
    volume = np.random.default_rng(4).standard_normal((1, 8, 48, 48)).astype(np.float32)
    normalisation = Normalisation.fit_channels([volume])
    filters = [Whitening("Y", 0.4)]
    config = make_tiny_config(network="3d", patch_depth=4)
    sampler = PatchSampler([volume], config.stage2, normalisation, np.random.default_rng(0), "stage 2", 4, filters)
    whole = whiten_channels(normalisation.forward(volume, channel_axis=0), filters, channel_axis=0)
    assert np.allclose(sampler._read(volume[:, 2:6], 9, 3), whole[:, 2:6, 9:41, 3:35], atol=1e-5)


def test_training_on_filtered_noise_whitens_both_stages_and_denoises(one_torch_thread):
    clean, noisy = pmt_image()
    config = make_tiny_config()
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 15
    events = list(train(noisy, config))
    estimated = [event for event in events if isinstance(event, MaskEstimated)]
    model = events[-1].model
    found, used = estimated[0].estimate.whitening, model.whitening[0]
    assert len(estimated) == 1 and (found.axis, found.rho) == (used.axis, used.rho) == ("X", found.rho)
    assert model.struct_mask.shape == (1, 1) and 0 <= used.start_weight <= 1

    def psnr(image):
        return 10 * np.log10(1 / np.mean((image - clean) ** 2))

    output = denoise(model, noisy)
    assert psnr(output) > psnr(noisy) + 2  # without colouring back the output is a high-passed image
    assert abs(float(output.mean() - noisy.mean())) < 0.02


def test_training_with_a_given_mask_or_whiten_off_does_not_whiten(one_torch_thread):
    _, noisy = pmt_image()
    config = make_tiny_config()
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 1
    assert fit(noisy, config, struct_mask=_centre_line()).whitening is None
    config.mask.whiten = False
    assert fit(noisy, config).whitening is None


def _centre_line():
    mask = np.zeros((5, 5), bool)
    mask[2] = True
    return mask


def test_denoise_whitens_the_input_and_colours_the_output(monkeypatch):
    """With a network that returns its input, whitening and colouring must cancel exactly; one without the
    other would not."""
    model = make_random_model(channels=2)
    model.whitening = [Whitening("X", 0.6), None]
    image = np.random.default_rng(5).random((2, 70, 90)).astype(np.float32)
    model.net.fused_for_inference = lambda: torch.nn.Identity()
    assert np.allclose(denoise(model, image, axes="CYX", tile_size=64, overlap=8), image, atol=1e-4)

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, batch):
            seen.append(batch.numpy().copy())
            return batch

    model.net.fused_for_inference = lambda: Recorder()
    denoise(model, image, axes="CYX", tile_size=128, overlap=8)
    expected = Whitening("X", 0.6).whiten(model.normalisation.channel(0).forward(image[0]))
    assert np.allclose(seen[0][0, 0, 8:78, 8:98], expected, atol=1e-4)


def test_tiles_of_a_whitened_model_meet_without_seams():
    model = make_random_model(channels=1)
    model.whitening = [Whitening("X", 0.6)]
    image = pmt_image((96, 160))[1]
    whole = denoise(model, image, tile_size=256, overlap=32)
    tiled = denoise(model, image, tile_size=96, overlap=32)
    assert np.allclose(whole, tiled, atol=1e-4)


def test_model_file_keeps_the_filter_and_older_readers_are_refused(tmp_path):
    model = make_random_model(channels=2)
    plain = save_model(model, tmp_path / "plain.pt")
    assert torch.load(plain, weights_only=True)["version"] == 2

    model.whitening = [None, Whitening("Y", 0.45, 0.3)]
    path = save_model(model, tmp_path / "white.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 3 and payload["whitening"] == [None, ["Y", 0.45, 0.3]]
    assert load_model(path).whitening == model.whitening

    payload["whitening"] = [None, ["Y", 0.45, 1.5]]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="whitening is invalid"):
        load_model(tmp_path / "bad.pt")
    payload["whitening"] = [["X", 0.5, 1.0]]
    torch.save(payload, tmp_path / "short.pt")
    with pytest.raises(ModelFileError, match="a filter"):
        load_model(tmp_path / "short.pt")


def test_bioimageio_export_refuses_a_whitened_model(tmp_path):
    model = make_random_model(channels=1)
    model.whitening = [Whitening("X", 0.6)]
    with pytest.raises(InputError, match="mask.whiten=False"):
        export_bioimageio(model, tmp_path / "model.zip")
    assert not (tmp_path / "model.zip").exists()


def test_cli_mask_json_names_the_filter(tmp_path, capsys):
    from napari_autostructn2v.cli import main

    path = tmp_path / "pmt.tif"
    tifffile.imwrite(path, pmt_image((256, 256))[1])
    assert main(["mask", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mask"] == [[1]] and record["whitening"]["axis"] == "X"
    assert abs(record["whitening"]["rho"] - RHO) < 0.05


@pytest.mark.parametrize("axis", ["X", "Y"])
def test_chunks_of_a_whitened_model_equal_the_whole_image(axis):
    """At rho 0.8 the colouring remembers a chunk edge over tens of pixels: the margin must cover that too."""
    from napari_autostructn2v.core.chunked import denoise_lazy

    model = make_random_model(channels=1)
    model.whitening = [Whitening(axis, 0.8)]
    stack = np.stack([pmt_image((150, 134), seed=seed)[1] for seed in (0, 1)])
    lazy = denoise_lazy(model, stack, chunk=48).compute(scheduler="synchronous")
    np.testing.assert_allclose(lazy, denoise(model, stack), atol=1e-5)


def test_the_mean_shift_of_a_whitened_channel_passes_through_the_colouring():
    """A constant added in the whitened domain comes out 1 / (1 - rho) times larger: the shift must allow for it."""
    from napari_autostructn2v import Config, DenoisingModel
    from napari_autostructn2v.core.training import _calibrate_output

    torch.manual_seed(0)
    model = DenoisingModel.create(Config(base_channels=4, depth=1, mixed_precision=False),
                                  Normalisation((10.0, 50.0), (2.0, 8.0)))
    model.whitening = [Whitening("X", 0.6), None]
    model.net.eval()
    with torch.no_grad():
        model.net.head.bias += torch.tensor([0.7, -0.4])
    sample = (np.random.default_rng(0).normal(0, 1, (2, 40, 40)) * np.array([2.0, 8.0])[:, None, None]
              + np.array([11.0, 45.0])[:, None, None]).astype(np.float32)
    _calibrate_output(model, [sample], contrast=False, keep_mean=True)
    output = denoise(model, sample, axes="CYX")
    np.testing.assert_allclose(output.mean(axis=(1, 2)), sample.mean(axis=(1, 2)), atol=1e-3)


def test_anchored_colouring_recovers_a_line_start_the_whitening_could_not_know():
    """A scanner's filter carries the previous line into each line; the noisy pixels at the start tell its level."""
    rng = np.random.default_rng(6)
    clean = np.concatenate([np.ones(200), 0.2 * np.ones(200)])[None]  # bright before the crop, dim inside
    filtered = lfilter([1 - RHO], [1, -RHO], clean, axis=-1)
    line = filtered[:, 200:]  # what the image holds: its first pixels still carry the bright history
    truth = (line - RHO * filtered[:, 199:-1]).astype(np.float32)  # a perfect denoiser's whitened prediction
    noisy = (line + 0.02 * rng.standard_normal(line.shape)).astype(np.float32)
    whitening = Whitening("X", RHO)
    anchored = whitening.colour(truth, anchor=noisy)
    assumed = whitening.colour(truth)  # the start taken equal to the first pixel, as whitening assumes
    start = slice(0, 8)
    assert np.sqrt(np.mean((anchored[:, start] - line[:, start]) ** 2)) < 0.03
    assert np.sqrt(np.mean((assumed[:, start] - line[:, start]) ** 2)) > 0.05
    np.testing.assert_allclose(anchored[:, 50:], line[:, 50:], atol=1e-5)
    x = noisy + 1
    np.testing.assert_allclose(whitening.colour(whitening.whiten(x), anchor=x), x, atol=1e-5)


def test_denoise_anchors_each_lines_colouring_on_the_noisy_image():
    model = make_random_model(channels=1)
    model.whitening = [Whitening("Y", 0.6)]
    model.net.fused_for_inference = lambda: ZeroNet()
    image = np.random.default_rng(7).random((48, 40)).astype(np.float32)
    normalised = model.normalisation.forward(image)
    expected = model.normalisation.inverse(Whitening("Y", 0.6).colour(np.zeros_like(image), anchor=normalised))
    np.testing.assert_allclose(denoise(model, image), expected, atol=1e-5)
    assert np.abs(expected[0] - model.normalisation.mean).max() > 0.05  # the start is not the mean alone


class ZeroNet(torch.nn.Module):
    def forward(self, batch):
        return torch.zeros_like(batch)


def test_each_channel_gets_its_own_filter_or_mask(one_torch_thread):
    """A PMT channel is decorrelated while a channel with box-filtered noise keeps its line mask."""
    clean, pmt = pmt_image()
    box = ndimage.convolve1d(np.random.default_rng(1).standard_normal(clean.shape), np.ones(5) / np.sqrt(5), axis=-1)
    image = np.stack([pmt, 2 * (clean + 0.1 * box.astype(np.float32)) + 1])
    config = make_tiny_config()
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 5
    model = fit(image, config, axes="CYX")
    assert model.whitening[0].axis == "X" and model.whitening[1] is None
    centre, line = model.channel_masks()
    assert centre.shape == (1, 1) and line.sum() >= 5 and line[line.shape[0] // 2].all()
    output = denoise(model, image, axes="CYX")
    assert output.shape == image.shape and abs(float(output[1].mean() - image[1].mean())) < 0.05


def test_the_3d_network_trains_and_denoises_a_whitened_volume(one_torch_thread):
    volume = np.stack([clean_image((64, 64), seed) for seed in range(16)])
    noisy = volume + np.stack([filtered_noise((64, 64), seed=seed) for seed in range(16)])
    config = make_tiny_config(network="3d", patch_depth=8)
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 3
    model = fit(noisy, config, axes="ZYX")
    assert model.whitening[0].axis == "X" and model.struct_mask.shape == (1, 1)
    output = denoise(model, noisy, axes="ZYX")
    assert output.shape == noisy.shape and np.isfinite(output).all()


def _lines_with_history(history_like_first: bool, count=400, length=64, seed=8):
    """(noisy, perfect whitened prediction, clean filtered) lines whose filter state before the first pixel is
    either the line's own level (as `whiten` assumes) or another level altogether (the line before)."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.2, 0.8, (count, 1))
    history = levels if history_like_first else rng.uniform(0.2, 0.8, (count, 1))
    clean = np.repeat(levels, length, axis=1)
    line, _ = lfilter([1 - RHO], [1, -RHO], clean, axis=-1, zi=RHO * history)
    whitened = line - RHO * np.concatenate([history, line[:, :-1]], axis=1)
    noisy = line + filtered_noise(line.shape, sigma=0.02, seed=seed)
    return noisy.astype(np.float32), whitened.astype(np.float32), line


@pytest.mark.parametrize("history_like_first, low, high", [(True, 0.0, 0.2), (False, 0.8, 1.0)])
def test_the_start_weight_follows_where_lines_really_start(history_like_first, low, high):
    noisy, whitened, line = _lines_with_history(history_like_first)
    assumed = Whitening("X", RHO, 0.0).colour(whitened, anchor=noisy)
    fitted = Whitening("X", RHO, 1.0).colour(whitened, anchor=noisy)
    weight = Whitening("X", RHO).fit_start_weight(noisy, assumed, fitted)
    assert low <= weight <= high
    chosen = Whitening("X", RHO, weight).colour(whitened, anchor=noisy)
    errors = {name: float(np.mean((output[:, :8] - line[:, :8]) ** 2)) for name, output in
              (("assumed", assumed), ("fitted", fitted), ("chosen", chosen))}
    assert errors["chosen"] <= 1.05 * min(errors["assumed"], errors["fitted"])


def test_a_start_weight_of_zero_is_the_assumed_start():
    array = np.random.default_rng(9).standard_normal((5, 30)).astype(np.float32)
    anchor = np.random.default_rng(10).standard_normal((5, 30)).astype(np.float32)
    np.testing.assert_allclose(Whitening("X", 0.5, 0.0).colour(array, anchor=anchor), Whitening("X", 0.5).colour(array),
                               atol=1e-5)


def test_training_measures_the_start_weight_on_the_lines_first_pixels(monkeypatch, one_torch_thread):
    seen = []

    def measured(self, anchor, assumed, fitted):
        seen.append((anchor.shape, float(np.abs(fitted - assumed).max())))
        return 0.37

    monkeypatch.setattr(Whitening, "fit_start_weight", measured)
    _, noisy = pmt_image()
    config = make_tiny_config()
    config.stage1.steps_per_epoch = config.stage2.steps_per_epoch = 1
    model = fit(noisy, config)
    assert model.whitening[0].start_weight == 0.37
    [(shape, difference)] = seen
    assert shape == (128, 128) and difference > 0  # 128 lines of their first 128 pixels, coloured both ways
