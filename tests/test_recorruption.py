"""Recorrupted pairs for additive noise: the noise draws, the rule that offers them, and training with them."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_config
from scipy import ndimage, signal
from scipy.signal import lfilter
from skimage import data

from napari_autostructn2v import denoise, make_sample
from napari_autostructn2v.core import mask as mask_module
from napari_autostructn2v.core import training
from napari_autostructn2v.core.config import MaskConfig
from napari_autostructn2v.core.mask import estimate_struct_mask, preset_mask
from napari_autostructn2v.core.recorruption import (
    ALPHA,
    Recorruption,
    correlated_noise,
    noise_kernels,
    recorrupted_pair,
    square_root_kernel,
)
from napari_autostructn2v.core.training import Done, MaskEstimated, fit, train


def box_covariance(length=5, variance=0.01, radius=6):
    """The covariance of white noise filtered by a horizontal line of `length` ones, scaled to `variance`."""
    full = np.correlate(np.ones(length), np.ones(length), "full") / length
    covariance = np.zeros((2 * radius + 1,) * 2)
    covariance[radius, radius - length + 1 : radius + length] = full * variance
    return covariance


def measured_covariance(noise: np.ndarray, radius: int) -> np.ndarray:
    """Empirical covariance at lags within `radius` of a (..., Y, X) stack of zero-mean noise."""
    side = 2 * radius + 1
    out = np.zeros((side, side))
    height, width = noise.shape[-2:]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            a = noise[..., max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
            b = noise[..., max(0, -dy) : height + min(0, -dy), max(0, -dx) : width + min(0, -dx)]
            out[dy + radius, dx + radius] = np.mean(a * b)
    return out


def test_the_square_root_kernel_makes_noise_of_the_covariance():
    covariance = box_covariance()
    kernel = square_root_kernel(covariance)
    own = signal.correlate2d(kernel, kernel)  # the covariance of white noise filtered by the kernel, at every lag
    expected = mask_module.embed_mask(covariance, own.shape[0] // 2)
    assert np.linalg.norm(own - expected) < 0.01 * np.linalg.norm(covariance)  # cut to 13 x 13: 12 % off
    white = np.random.default_rng(0).standard_normal((512, 512))
    noise = ndimage.convolve(white, kernel, mode="wrap")
    np.testing.assert_allclose(measured_covariance(noise, 6), covariance, atol=6e-4)  # 6 % of the variance


def test_a_centre_only_covariance_gives_white_noise_of_its_variance():
    kernel = square_root_kernel(np.array([[0.04]]))
    centre = kernel.shape[0] // 2
    assert kernel[centre, centre] == pytest.approx(0.2)
    np.testing.assert_allclose(np.delete(kernel.ravel(), kernel.size // 2), 0, atol=1e-9)


def test_draws_have_each_channels_covariance_in_normalised_units():
    recorruptions = [Recorruption(box_covariance(3, 0.04), 1.0, 2.0), Recorruption(np.array([[0.01]]), 1.0, 2.0)]
    kernels = noise_kernels(recorruptions, np.array([2.0, 0.5]))
    noise = correlated_noise(kernels, (8, 2, 128, 128), torch.Generator().manual_seed(0)).numpy()
    first, second = measured_covariance(noise[:, 0], 3), measured_covariance(noise[:, 1], 3)
    np.testing.assert_allclose(first, box_covariance(3, 0.04 / 4, 3), atol=3e-4)  # divided by std 2 squared
    assert second[3, 3] == pytest.approx(0.04, rel=0.05) and abs(second[3, 4]) < 0.002  # 0.01 / 0.5**2, white


def test_the_pair_s_noises_are_uncorrelated_when_the_draw_matches_the_noise():
    """What makes recorrupted pairs work: for noise n of covariance C and a draw z of the same, n + alpha z and
    n - z / alpha are uncorrelated at every lag, so the target's noise cannot be predicted from the input."""
    kernels = noise_kernels([Recorruption(box_covariance(5, 1.0), 1.0, 2.0)], np.array([1.0]))
    noise = correlated_noise(kernels, (16, 1, 96, 96), torch.Generator().manual_seed(1))
    inputs, targets = recorrupted_pair(noise, kernels, torch.Generator().manual_seed(2))
    a, b = inputs[:, 0].numpy(), targets[:, 0].numpy()
    cross = [np.mean(a[..., :, 2:] * b[..., :, :-2]), np.mean(a * b), np.mean(a[..., :, 1:] * b[..., :, :-1])]
    assert np.max(np.abs(cross)) < 0.03  # of a noise variance of 1
    assert np.mean(a * a) == pytest.approx(1 + ALPHA**2, rel=0.05)
    assert np.mean(b * b) == pytest.approx(1 + 1 / ALPHA**2, rel=0.05)
    # the noise alone as a target (no recorruption of it) would correlate fully with the input's
    assert np.mean(a * noise[:, 0].numpy()) > 0.9


def test_additive_correlated_noise_is_offered_recorrupted_pairs_with_its_covariance():
    _, noisy = make_sample((256, 256), "horizontal", sigma=0.1, seed=0)
    estimate = estimate_struct_mask(noisy)
    assert estimate.recorruption is not None and "recorrupted pairs" in estimate.reason
    covariance = estimate.recorruption.covariance
    centre = covariance.shape[0] // 2
    assert covariance[centre, centre] == pytest.approx(0.01, rel=0.15)  # the noise variance, sigma 0.1
    assert covariance[centre, centre + 1] == pytest.approx(covariance[centre, centre] * 2 / 3, rel=0.2)  # box 3
    assert estimate.recorruption.variance_ratio < 1.3
    assert estimate_struct_mask(noisy, config=MaskConfig(recorrupt=False)).recorruption is None


def test_shot_noise_row_offsets_and_filtered_noise_keep_their_blind_spots():
    rng = np.random.default_rng(0)
    clean = make_sample((256, 256))[0]
    photons = 50
    shot = (rng.poisson(np.clip(clean, 0, None) * photons) / photons).astype(np.float32)
    shot = ndimage.convolve(shot, np.ones((1, 3)) / 3, mode="wrap")
    estimate = estimate_struct_mask(shot)
    assert estimate.recorruption is None and "shot noise" in estimate.reason and estimate.mask.sum() >= 3

    _, banded = make_sample((256, 256), "row_offsets", sigma=0.1, seed=1)
    offsets = estimate_struct_mask(banded, config=MaskConfig(remove_banding=False))
    assert offsets.recorruption is None and "reaches the edge" in offsets.reason

    white = rng.standard_normal(clean.shape)
    pmt = clean + 0.1 * np.sqrt(1 - 0.36) * lfilter([1.0], [1.0, -0.6], white, axis=-1)
    filtered = estimate_struct_mask(pmt.astype(np.float32))
    assert filtered.whitening is not None and filtered.recorruption is None  # decorrelated instead


def anisotropic_noise(shape=(256, 256), sigma=0.1, seed=0):
    """White noise filtered by a 2D Gaussian of lengths 2 (x) and 0.7 (y), standard deviation `sigma`."""
    ys, xs = np.mgrid[-3:4, -6:7]
    kernel = np.exp(-0.5 * ((xs / 2.0) ** 2 + (ys / 0.7) ** 2))
    kernel /= np.sqrt(np.sum(kernel**2))
    return sigma * ndimage.convolve(np.random.default_rng(seed).standard_normal(shape), kernel, mode="wrap"), kernel


def test_undoing_the_detrending_recovers_a_slowly_decaying_covariance():
    noise, kernel = anisotropic_noise((512, 512))
    truth = ndimage.correlate(kernel, kernel, mode="constant")  # unit variance at the centre, 7 x 13
    window, radius = 14, 12
    numerator, pairs, _ = mask_module._plane_autocovariance(noise, window, True, 6.0, 1.0)
    measured = numerator / np.maximum(pairs, 1)
    numerator, pairs, _ = mask_module._plane_autocovariance(noise, window, False, 6.0, 1.0)
    detrended = numerator / np.maximum(pairs, 1)
    assert detrended[window, window] < 0.93 * measured[window, window]  # the bias to undo: 10 % of the variance
    undone = mask_module._undo_detrending(detrended, 6.0, mask_module._raw_support(detrended, radius))
    assert undone[radius, radius] == pytest.approx(measured[window, window], rel=0.04)
    assert undone[radius, radius + 3] / undone[radius, radius] == pytest.approx(truth[3, 9], abs=0.03)


def test_the_unbiased_covariance_is_used_on_a_plain_background_and_not_on_texture():
    noise, _ = anisotropic_noise()
    clean = make_sample((256, 256))[0]  # bright structures on a dark, plain background
    background = estimate_struct_mask((clean + noise).astype(np.float32))
    assert background.recorruption is not None and not background.recorruption.textured
    assert background.recorruption.covariance.max() == pytest.approx(0.01, rel=0.08)
    assert background.recorruption.pixels > 25  # more than a mask may hold
    ramp = np.linspace(0.1, 0.9, 256)[None, :] * np.ones((256, 1))  # contrast enough for the variance test
    texture = ndimage.gaussian_filter(np.random.default_rng(5).standard_normal((256, 256)), 3)  # std 0.1
    textured = estimate_struct_mask((ramp + texture + noise).astype(np.float32))
    assert textured.recorruption is not None and textured.recorruption.textured  # texture is not noise


def test_diagonal_noise_on_a_plain_background_gets_its_diagonal_covariance():
    """A diagonal line's lags touch only at their corners: the covariance follows them, and the texture test (the
    flat windows' covariance at two detrending widths, over lags connected to the centre) does not fail on them."""
    kernel = np.eye(3) / np.sqrt(3)
    noise = 0.1 * ndimage.convolve(np.random.default_rng(4).standard_normal((256, 256)), kernel, mode="wrap")
    clean = make_sample((256, 256))[0]
    recorruption = estimate_struct_mask((clean + noise).astype(np.float32)).recorruption
    assert recorruption is not None and not recorruption.textured
    covariance = recorruption.covariance
    half = covariance.shape[0] // 2
    assert covariance[half, half] == pytest.approx(0.01, rel=0.06)
    assert covariance[half + 1, half + 1] == pytest.approx(0.01 * 2 / 3, rel=0.15)  # the noise's (1, 1) lag
    assert abs(covariance[half + 1, half - 1]) < 0.001  # and not the other diagonal


def test_on_a_plain_background_the_noise_variance_is_not_the_part_that_happened_to_be_low():
    """Windows ranked by the residual that is measured would be those where the noise is lowest (0.95x here); ranked
    by the signal band they give the noise's variance."""
    noise = 0.1 * ndimage.convolve(np.random.default_rng(6).standard_normal((512, 512)), np.ones((1, 5)) / np.sqrt(5),
                                   mode="wrap")
    clean = make_sample((512, 512))[0]
    recorruption = estimate_struct_mask((clean + noise).astype(np.float32)).recorruption
    assert recorruption is not None and not recorruption.textured
    half = recorruption.covariance.shape[0] // 2
    assert recorruption.covariance[half, half] == pytest.approx(0.01, rel=0.03)
    assert recorruption.covariance[half, half + 2] == pytest.approx(0.006, rel=0.1)  # box 5: 3/5 at lag 2


def test_the_flat_window_support_follows_a_diagonal_line():
    raw = np.zeros((29, 29))
    for step, value in enumerate((1.0, 0.6, 0.3)):
        raw[14 + step, 14 + step] = raw[14 - step, 14 - step] = value
    support = mask_module._raw_support(raw, 12)
    assert support[12 + 2, 12 + 2] and support[12 - 2, 12 - 2]  # lags that touch only at their corners
    assert not support[12 + 2, 12 - 2]


def test_through_texture_the_covariance_keeps_the_noise_s_line_and_variance():
    """On texture (a photograph of coins) the covariance is measured after a narrow detrending, over the mask's
    lags. The correlation over the mask times the isotropic floor's variance read 1.11x the variance there."""
    line = np.exp(-np.arange(-8, 9) ** 2 / 8.0)  # a horizontal Gaussian correlation, length 2
    line /= np.sqrt(np.sum(line**2))
    noise = 0.1 * ndimage.convolve(np.random.default_rng(3).standard_normal((256, 256)), line[None, :], mode="wrap")
    coins = data.coins()[-256:, -256:] / 255.0
    recorruption = estimate_struct_mask((coins + noise).astype(np.float32)).recorruption
    assert recorruption is not None and recorruption.textured
    covariance = recorruption.covariance
    half = covariance.shape[0] // 2
    truth = np.zeros_like(covariance)
    truth[half] = 0.01 * np.correlate(line, line, "full")[16 - half : 17 + half]
    assert covariance[half, half] == pytest.approx(0.01, rel=0.04)
    assert np.linalg.norm(covariance - truth) < 0.2 * np.linalg.norm(truth)


def test_an_image_of_little_contrast_keeps_its_blind_spots():
    """Whether the noise grows with the intensity cannot be seen where the intensity hardly varies (moon-like
    images under shot noise read as additive and lost 1.4 dB with recorrupted pairs): such images keep blind spots."""
    clean, noisy = make_sample((256, 256), "horizontal", sigma=0.1, seed=0)
    flat = (noisy - clean) + 0.8 + 0.1 * clean / clean.max()  # the same noise on intensities of 0.8-0.9
    estimate = estimate_struct_mask(flat.astype(np.float32))
    assert estimate.recorruption is None and "as bright as the dark ones" in estimate.reason
    assert estimate_struct_mask(noisy).recorruption.brightness_ratio > 1.5


@pytest.fixture
def pair_calls(monkeypatch, one_torch_thread):
    """A list that grows by one at every recorrupted batch training draws."""
    calls = []
    pair = training.recorrupted_pair
    monkeypatch.setattr(training, "recorrupted_pair", lambda *args: calls.append(1) or pair(*args))
    return calls


@pytest.fixture
def additive():
    """(noisy sample, tiny config with recorrupted pairs on, as by default)."""
    config = make_tiny_config()
    config.mask.recorrupt = True
    return make_sample((96, 96), "horizontal", sigma=0.1, seed=0)[1], config


def test_training_on_additive_noise_uses_recorrupted_pairs_and_no_mask(pair_calls, additive):
    calls = pair_calls
    noisy, config = additive
    events = list(train(noisy, config))
    estimate = next(e for e in events if isinstance(e, MaskEstimated)).estimate
    model = next(e for e in events if isinstance(e, Done)).model
    assert estimate.recorruption is not None and estimate.mask.sum() >= 3  # the support is still shown
    assert model.struct_mask is None  # nothing masked, and inference is one plain pass
    steps = 2 * config.stage1.epochs * config.stage1.steps_per_epoch
    assert len(calls) > steps  # every training step, then the validation batches
    assert denoise(model, noisy).shape == noisy.shape

    calls.clear()
    config.mask.recorrupt = False
    assert fit(noisy, config).struct_mask is not None and calls == []


def test_a_mask_chosen_by_the_consumer_trains_stage_2_with_blind_spots(pair_calls, additive):
    calls = pair_calls
    noisy, config = additive
    chosen = preset_mask("horizontal", 5)
    generator = train(noisy, config)
    for event in generator:
        if isinstance(event, MaskEstimated):
            stage1_calls = len(calls)
            event.mask = chosen
        if isinstance(event, Done):
            model = event.model
    assert stage1_calls > 0 and len(calls) == stage1_calls  # stage 1 recorrupted, stage 2 not
    np.testing.assert_array_equal(model.struct_mask, chosen)


def test_the_3d_network_keeps_blind_spots(one_torch_thread):
    _, noisy = make_sample((96, 96), "horizontal", sigma=0.1, seed=0)
    volume = np.stack([noisy] * 16)
    config = make_tiny_config(network="3d", patch_depth=8)
    config.mask.recorrupt = True
    for stage in (config.stage1, config.stage2):
        stage.epochs, stage.steps_per_epoch = 1, 2
    estimates = [e.estimate for e in train(volume, config, axes="ZYX") if isinstance(e, MaskEstimated)]
    assert estimates and all(estimate.recorruption is None for estimate in estimates)
