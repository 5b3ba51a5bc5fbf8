import threading
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_autostructn2v import (
    Done,
    EpochEnd,
    InputError,
    MaskEstimated,
    Preview,
    StageFinished,
    StageStarted,
    Step,
    TooFewPatchesError,
    denoise,
    fit,
    make_sample,
    preset_mask,
    train,
)


@pytest.fixture(scope="module")
def noisy():
    return make_sample((96, 96), "horizontal", 0.1, seed=0)[1]



def test_slow_previews_are_skipped_to_keep_their_share_of_the_training_time(noisy, tiny_config, monkeypatch):
    from napari_autostructn2v.core import training

    def slow_preview(model, preview, axes):
        time.sleep(0.3)  # a preview costing far more than a step, as blind-spot previews of a large crop do
        return np.zeros(noisy.shape, np.float32)

    monkeypatch.setattr(training, "_preview", slow_preview)
    monkeypatch.setattr(training, "PREVIEW_ALLOWANCE_S", 0.0)
    events = list(train(noisy, tiny_config, preview_every=1))
    steps = sum(isinstance(e, Step) for e in events)
    previews = sum(isinstance(e, Preview) for e in events)
    assert 1 <= previews <= steps // 4  # the first one is always shown; every step asked for one


def test_events_come_in_order_and_the_mask_is_estimated(noisy, tiny_config):
    events = list(train(noisy, tiny_config, preview_every=3))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StageStarted" and kinds[-1] == "Done"
    assert kinds.index("StageFinished") < kinds.index("MaskEstimated") < kinds.index("StageStarted", 1)
    steps = [e for e in events if isinstance(e, Step)]
    assert len(steps) == 2 * 2 * 4
    assert [e.step for e in steps if e.stage == 1] == list(range(1, 9))
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert len(epochs) == 4 and all(np.isfinite([e.train_loss, e.val_loss]).all() for e in epochs)
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 16 // 3 and previews[0].image.shape == noisy.shape
    mask = next(e for e in events if isinstance(e, MaskEstimated)).mask
    assert mask[mask.shape[0] // 2].all() and mask.sum() == mask.shape[0]  # one horizontal line
    model = events[-1].model
    np.testing.assert_array_equal(model.struct_mask, mask)
    assert len(model.history) == 4
    started = [e for e in events if isinstance(e, StageStarted)]
    assert all(len(e.patches) == 1 and len(e.patches[0]) > 0 for e in started)


def test_training_lowers_the_masked_loss(tiny_config):
    _, noisy = make_sample((128, 128), "white", 0.1, seed=1)
    tiny_config.stage1.epochs, tiny_config.stage1.steps_per_epoch = 3, 10
    tiny_config.stage2.epochs = 0
    # a random network with norms starts far above the loss of a flat output; one without starts near it
    tiny_config.batch_norm = True
    events = list(train(noisy, tiny_config))
    untrained = np.mean([e.loss for e in events if isinstance(e, Step)][:3])
    validation = [e.val_loss for e in events if isinstance(e, EpochEnd)]
    assert validation[-1] < 0.7 * untrained


def test_same_seed_same_model(noisy, tiny_config):
    first = denoise(fit(noisy, tiny_config), noisy)
    second = denoise(fit(noisy, tiny_config), noisy)
    np.testing.assert_array_equal(first, second)
    tiny_config.seed = 1
    assert not np.array_equal(first, denoise(fit(noisy, tiny_config), noisy))
    tiny_config.seed = None  # a fresh random seed each time
    assert not np.array_equal(denoise(fit(noisy, tiny_config), noisy), denoise(fit(noisy, tiny_config), noisy))


def test_stop_flag_ends_training_and_keeps_a_usable_model(noisy, tiny_config):
    stop = threading.Event()
    events = []
    for event in train(noisy, tiny_config, stop=stop):
        events.append(event)
        if isinstance(event, Step) and event.step == 3:
            stop.set()
    assert sum(isinstance(e, Step) for e in events) == 3
    assert isinstance(events[-1], Done) and events[-1].stopped
    assert not any(isinstance(e, MaskEstimated) for e in events)
    assert np.isfinite(denoise(events[-1].model, noisy)).all()


def _snapshot(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), f"{key} differs from the best epoch's weights"


def _spoil(net) -> None:
    """Make the live weights clearly worse than any epoch's, so the best ones must be restored."""
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn_like(parameter) * 3.0)


def test_closing_the_generator_keeps_the_best_weights(noisy, tiny_config):
    events = train(noisy, tiny_config)
    model, best_state, best_loss = None, None, np.inf
    for event in events:
        if isinstance(event, StageStarted):
            model = event.model
        if isinstance(event, EpochEnd) and event.val_loss < best_loss:
            best_state, best_loss = _snapshot(model.net), event.val_loss
        if isinstance(event, Step) and event.step == 6:  # in the second epoch of stage 1
            _spoil(model.net)
            break
    events.close()
    # the weights of the best epoch, exactly: not the spoiled live weights, not a modified copy
    _assert_same_weights(model.net.state_dict(), best_state)
    assert np.isfinite(best_loss) and model.history[-1]["val_loss"] == best_loss


def test_given_mask_skips_estimation(noisy, tiny_config):
    mask = preset_mask("vertical", 3)
    events = list(train(noisy, tiny_config, struct_mask=mask))
    assert not any(isinstance(e, MaskEstimated) for e in events)
    np.testing.assert_array_equal(events[-1].model.struct_mask, mask)


def test_a_mask_given_as_nested_lists_is_one_mask(noisy, tiny_config):
    """A plain nested list of rows is one 2D mask, as an array would be, not one mask per row."""
    cross = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    model = fit(noisy, tiny_config, struct_mask=cross)
    np.testing.assert_array_equal(model.struct_mask, np.array(cross, bool))


def test_consumer_can_replace_the_estimated_mask(noisy, tiny_config):
    replacement = preset_mask("cross", 5)
    generator = train(noisy, tiny_config)
    for event in generator:
        if isinstance(event, MaskEstimated):
            event.mask = replacement
        last = event
    np.testing.assert_array_equal(last.model.struct_mask, replacement)


def test_stacks_lists_and_integer_images(tiny_config):
    _, noisy = make_sample((64, 64), "horizontal", 0.1, seed=2)
    as_uint16 = np.round(noisy * 1000 + 500).astype(np.uint16)
    stack = np.stack([as_uint16, as_uint16[::-1]])
    model = fit([stack, as_uint16.T.copy()], tiny_config)
    out = denoise(model, stack)
    assert out.dtype == np.float32 and out.shape == stack.shape
    assert abs(out.mean() - stack.mean()) < 0.5 * stack.std()  # in the input's units, not normalised ones


def test_constant_image_trains_without_nan(tiny_config):
    tiny_config.stage1.use_roi = False
    model = fit(np.full((64, 64), 7.0, np.float32), tiny_config)
    np.testing.assert_allclose(denoise(model, np.full((64, 64), 7.0)), 7.0, atol=1.0)


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        (np.zeros((64, 64, 3)), "RGB"),
        (np.zeros((20, 64)), "smaller than the patch size"),
        (np.where(np.eye(64) > 0, np.nan, 0.0), "NaN"),
        (np.zeros((64, 64), complex), "dtype"),
        ([], "No training images"),
    ],
)
def test_bad_inputs_are_refused_before_training(images, fragment, tiny_config):
    with pytest.raises(InputError, match=fragment):
        train(images, tiny_config)


def test_too_few_roi_patches_is_explained_early(tiny_config):
    tiny_config.stage1.roi_threshold = 0.0
    with pytest.raises(TooFewPatchesError, match=r"kept 0 of \d+ windows.*Raise the threshold.*use_roi=False"):
        next(iter(train(make_sample((96, 96), seed=0)[1], tiny_config)))


def test_stage_finished_reports_the_best_loss_and_loads_its_weights(noisy, tiny_config):
    """The last epoch of each stage is spoiled: StageFinished must report and load an earlier, better epoch."""
    events = []
    model, snapshots = None, {}
    generator = train(noisy, tiny_config)
    for event in generator:
        events.append(event)
        if isinstance(event, StageStarted):
            model = event.model
        if isinstance(event, Step) and event.step == event.total_steps:
            _spoil(model.net)  # after the last optimisation step, before the last validation
        if isinstance(event, EpochEnd):
            snapshots[(event.stage, event.epoch)] = _snapshot(model.net)
        if isinstance(event, StageFinished):
            epochs = [e for e in events if isinstance(e, EpochEnd) and e.stage == event.stage]
            best = min(epochs, key=lambda e: e.val_loss)
            assert best.epoch < epochs[-1].epoch  # the spoiled last epoch is not the best
            assert event.best_val_loss == pytest.approx(best.val_loss)
            _assert_same_weights(model.net.state_dict(), snapshots[(event.stage, best.epoch)])
    assert [e.stage for e in events if isinstance(e, StageFinished)] == [1, 2]


def test_zero_epochs_in_both_stages_is_refused_at_the_call(noisy, tiny_config):
    """`run --epochs 0` used to write an untrained image, worse than the input."""
    from napari_autostructn2v import ConfigError

    tiny_config.stage1.epochs = tiny_config.stage2.epochs = 0
    with pytest.raises(ConfigError, match="both 0: nothing would be trained"):
        train(noisy, tiny_config)  # at the call, before the first event


@pytest.mark.parametrize("network, axes", [("2d", "CYX"), ("3d", "CZYX")])
def test_the_output_keeps_the_inputs_mean_in_each_channel(network, axes):
    from napari_autostructn2v import Config, DenoisingModel
    from napari_autostructn2v.core.images import Normalisation
    from napari_autostructn2v.core.training import _calibrate_output

    torch.manual_seed(0)
    config = Config(base_channels=4, depth=1, network=network, mixed_precision=False)
    model = DenoisingModel.create(config, Normalisation((10.0, 50.0), (2.0, 8.0)))
    model.struct_mask = preset_mask("horizontal", 5)  # denoised with blind spots, as by default
    model.net.eval()
    with torch.no_grad():
        model.net.head.bias += torch.tensor([0.7, -0.4])  # one channel's output too bright, the other's too dark
    shape = (2, 40, 40) if network == "2d" else (2, 8, 24, 24)
    sample = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32) * np.array([2.0, 8.0]).reshape(
        (2,) + (1,) * (len(shape) - 1)) + np.array([11.0, 45.0]).reshape((2,) + (1,) * (len(shape) - 1))
    _calibrate_output(model, [sample], contrast=False, keep_mean=True)
    output = denoise(model, sample, axes=axes)
    spatial = tuple(range(1, len(shape)))
    np.testing.assert_allclose(output.mean(axis=spatial), sample.mean(axis=spatial), atol=1e-3)


def test_contrast_gains_are_the_slope_of_the_noisy_pixels_on_the_predictions():
    from napari_autostructn2v.core.training import (
        CONTRAST_RANGE,
        _calibration_sums,
        _contrast_gains,
    )

    def gains(noisy, predicted):
        return _contrast_gains(_calibration_sums(noisy, predicted, centre))

    rng = np.random.default_rng(0)
    centre = np.array([10.0, 50.0]).reshape(2, 1, 1)
    predicted = centre + rng.normal(0, 1, (2, 64, 64)) * np.array([2.0, 8.0]).reshape(2, 1, 1)
    noisy = centre + np.array([1.3, 0.9]).reshape(2, 1, 1) * (predicted - centre) + rng.normal(0, 1, (2, 64, 64))
    np.testing.assert_allclose(gains(noisy, predicted), [1.3, 0.9], atol=0.02)
    np.testing.assert_array_equal(gains(noisy, np.broadcast_to(centre, (2, 64, 64))), [1.0, 1.0])  # nothing to fit
    np.testing.assert_array_equal(gains(centre + 10 * (predicted - centre), predicted), [CONTRAST_RANGE[1]] * 2)


def test_calibrated_output_regresses_the_noisy_pixels_with_slope_one():
    """A network whose blind-spot output lost contrast gets it back in its last layer: the noisy pixels, whose
    noise the blind-spot predictions never see, regress on the new predictions with slope 1."""
    from napari_autostructn2v import Config, DenoisingModel
    from napari_autostructn2v.core.images import Normalisation
    from napari_autostructn2v.core.training import (
        _calibrate_output,
        _calibration_sums,
        _contrast_gains,
    )

    torch.manual_seed(0)
    model = DenoisingModel.create(Config(base_channels=4, depth=1, mixed_precision=False), Normalisation(0.5, 0.2))
    model.struct_mask = preset_mask("horizontal", 5)  # denoised with blind spots
    model.net.eval()
    rng = np.random.default_rng(1)
    clean = 0.5 + 0.2 * ndimage.gaussian_filter(rng.normal(0, 1, (64, 64)), 2) * 5
    sample = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)[None]
    centre = np.full((1, 1, 1), 0.5)
    slope = np.polyfit(denoise(model, sample[0]).ravel() - 0.5, sample.ravel() - 0.5, 1)[0]
    with torch.no_grad():  # an untrained network's output, scaled about the mean to lose a third of the contrast
        scale = slope / 1.5
        model.net.head.weight *= scale
        model.net.head.bias *= scale
    before = denoise(model, sample[0])
    gain = float(_contrast_gains(_calibration_sums(sample, before[None], centre))[0])
    assert gain == pytest.approx(1.5, abs=0.01)
    _calibrate_output(model, [sample], contrast=True, keep_mean=False)
    after = denoise(model, sample[0])
    np.testing.assert_allclose(after, 0.5 + gain * (before - 0.5), atol=1e-4)
    assert float(_contrast_gains(_calibration_sums(sample, after[None], centre))[0]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("mask", "scaled"), [(("horizontal", 3), True), (("centre", 1), False)])
def test_training_scales_the_last_layer_only_for_blind_spot_models(noisy, tiny_config, mask, scaled):
    """keep_contrast scales the head's weights and bias by one gain; a centre-only (N2V) model, denoised in one
    pass, whose predictions read their own pixel's noise, keeps its head."""
    tiny_config.keep_mean = tiny_config.keep_contrast = False
    plain = fit(noisy, tiny_config, struct_mask=preset_mask(*mask))
    tiny_config.keep_contrast = True
    calibrated = fit(noisy, tiny_config, struct_mask=preset_mask(*mask))
    before, after = plain.net.state_dict(), calibrated.net.state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == (["head.weight", "head.bias"] if scaled else [])
    if scaled:
        ratio = (after["head.weight"] / before["head.weight"]).flatten()
        assert torch.allclose(ratio, ratio[0]) and abs(float(ratio[0]) - 1) > 1e-4
        assert torch.allclose(after["head.bias"], before["head.bias"] * ratio[0])


def test_training_shifts_only_the_last_bias_to_keep_the_mean_unless_told_not_to(noisy, tiny_config):
    tiny_config.keep_mean = False
    plain = fit(noisy, tiny_config)
    tiny_config.keep_mean = True
    shifted = fit(noisy, tiny_config)
    before, after = plain.net.state_dict(), shifted.net.state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == ["head.bias"]
    offset = float(after["head.bias"] - before["head.bias"]) * shifted.normalisation.std
    drift = float(np.mean(denoise(plain, noisy)) - np.mean(noisy))
    # kept as denoise computes it by default, with blind spots: in one pass the mean is 0.001 off here
    assert abs(float(np.mean(denoise(shifted, noisy)) - np.mean(noisy))) < 2e-4
    assert offset == pytest.approx(-drift, abs=0.3 * abs(drift) + 1e-3)
