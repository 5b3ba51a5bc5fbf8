import json
from dataclasses import fields

import numpy as np
import pytest

from napari_autostructn2v import Config, ConfigError, MaskConfig, StageConfig
from napari_autostructn2v.core.config import CONFIG_RULES, MASK_RULES, SEED_MAX, STAGE_RULES, split_epochs


def test_defaults_follow_the_seed_document():
    config = Config()
    assert (config.stage1.use_roi, config.stage1.roi_threshold, config.stage1.scale_factor) == (True, 0.5, 0.25)
    assert config.stage1.select_background is True
    assert config.stage2.select_background is False
    assert config.stage2.use_roi is False
    assert config.validate() is config


def test_stage_1_is_a_short_warm_up():
    config = Config()
    assert (config.stage1.epochs, config.stage2.epochs) == split_epochs(20) == (2, 18)


@pytest.mark.parametrize(("total", "split"), [(2, (1, 1)), (3, (1, 2)), (10, (1, 9)), (15, (2, 13)), (20, (2, 18))])
def test_a_small_total_gives_each_stage_an_epoch(total, split):
    assert split_epochs(total) == split and sum(split) == total


@pytest.mark.parametrize("total", [1, 0, -5, 2.5, "10", True])
def test_a_total_that_cannot_feed_both_stages_is_refused(total):
    with pytest.raises(ConfigError, match=r"epochs \(both stages together\) must be an integer in \[2, "):
        split_epochs(total)


def test_nothing_to_train_is_refused():
    with pytest.raises(ConfigError, match="both 0"):
        Config.from_dict({"stage1": {"epochs": 0}, "stage2": {"epochs": 0}})
    assert Config.from_dict({"stage1": {"epochs": 0}}).stage2.epochs == 18  # one empty stage is fine


def test_json_round_trip(tmp_path):
    config = Config(seed=7, device="cpu")
    config.stage2.roi_threshold = 0.7
    config.mask.max_radius = 4
    path = tmp_path / "config.json"
    config.to_json(path)
    assert Config.from_json(path) == config
    assert Config.from_json(config.to_json()) == config
    assert Config.from_dict(json.loads(path.read_text())).to_dict() == config.to_dict()


def test_partial_dict_keeps_other_defaults():
    config = Config.from_dict({"stage1": {"epochs": 3}, "seed": 1})
    assert config.stage1.epochs == 3 and config.seed == 1
    assert config.stage1.patch_size == Config().stage1.patch_size


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"stage1": {"roi_threshold": 1.5}}, "stage1.roi_threshold"),
        ({"stage2": {"patch_size": 30}}, "stage2.patch_size"),
        ({"mask": {"source": "magic"}}, "mask.source"),
        ({"device": "tpu"}, "device"),
        ({"stage1": {"colour": 1}}, "Unknown stage1 key"),
        ({"learning": 1}, "Unknown config key"),
        ({"depth": 4, "stage1": {"patch_size": 40}}, "divisible by 2**depth"),
    ],
)
def test_bad_values_are_named(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("*", r"\*")):
        Config.from_dict(data)


def test_bad_json_is_reported(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_json(path)
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_json(tmp_path / "missing.json")


def test_every_field_has_a_rule():
    """Validation is table-driven: a new field without a rule would go unchecked."""
    assert set(STAGE_RULES) == {f.name for f in fields(StageConfig)}
    assert set(MASK_RULES) == {f.name for f in fields(MaskConfig)}
    assert set(CONFIG_RULES) | {"stage1", "stage2", "mask"} == {f.name for f in fields(Config)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stage1": {"epochs": "ten"}}, "stage1.epochs must be an integer in [0, 100000]; got 'ten'."),
        ({"stage1": {"epochs": None}}, "stage1.epochs must be an integer in [0, 100000]; got None."),
        ({"stage1": {"epochs": 1.5}}, "stage1.epochs must be an integer in [0, 100000]; got 1.5."),
        ({"stage2": {"epochs": 5.0}}, "stage2.epochs must be an integer in [0, 100000]; got 5.0."),
        ({"stage2": {"epochs": True}}, "stage2.epochs must be an integer in [0, 100000]; got True."),
        ({"stage1": {"learning_rate": "fast"}}, "stage1.learning_rate must be a number in (0, 1]; got 'fast'."),
        ({"stage1": {"learning_rate": float("nan")}}, "stage1.learning_rate must be a number in (0, 1]; got nan."),
        ({"stage1": {"use_roi": "no"}}, "stage1.use_roi must be true or false (a boolean); got 'no'."),
        ({"stage2": {"n2v2": 1}}, "stage2.n2v2 must be true or false (a boolean); got 1."),
        ({"augment": None}, "augment must be true or false (a boolean); got None."),
        ({"stage1": {"patch_size": 36}}, "stage1.patch_size must be an integer in [16, 4096] and a multiple of 8"),
        ({"stage1": {"roi_smoothing": -1}}, "stage1.roi_smoothing must be a number >= 0, or None"),
        ({"mask": {"max_radius": 2.0}}, "mask.max_radius must be an integer in [1, 24]; got 2.0."),
        ({"mask": {"source": None}}, "mask.source must be one of 'image', 'stage1_residual'; got None."),
        ({"depth": "2"}, "depth must be an integer in [1, 4]; got '2'."),
        ({"seed": 99999999999999999999999}, f"seed must be an integer in [0, {SEED_MAX}], or None"),
        ({"seed": -1}, f"seed must be an integer in [0, {SEED_MAX}]"),
        ({"seed": 3.0}, f"seed must be an integer in [0, {SEED_MAX}]"),
        ({"device": 0}, "device must be one of 'auto', 'cpu', 'cuda', 'mps'; got 0."),
        ({"stage1": []}, "stage1 must be a mapping"),
    ],
)
def test_wrong_types_and_ranges_name_the_field_and_the_range(data, message):
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(data)
    assert message in str(caught.value)


def test_python_values_are_checked_too():
    config = Config()
    config.stage1.batch_size = 0
    with pytest.raises(ConfigError, match=r"stage1.batch_size must be an integer in \[1, 4096\]; got 0"):
        config.validate()
    with pytest.raises(ConfigError, match="stage1 must be a StageConfig; got dict"):
        Config(stage1={"epochs": 3}).validate()


def test_numpy_and_integer_values_become_plain_python_values():
    """Values from numpy or from a spin box validate and still write to JSON; floats accept integers."""
    config = Config(seed=np.int64(5))
    config.stage1.learning_rate = 1
    config.stage1.roi_threshold = np.float32(0.25)
    config.stage1.use_roi = np.bool_(False)
    config.validate()
    assert type(config.seed) is int and type(config.stage1.learning_rate) is float
    assert config.stage1.use_roi is False and config.stage1.roi_threshold == 0.25
    assert json.loads(config.to_json())["seed"] == 5
    assert Config(seed=None).validate().seed is None and Config(seed=SEED_MAX).validate().seed == SEED_MAX


def test_configuration_file_that_is_a_folder_or_binary(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        Config.from_json(tmp_path)
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text \\(JSON\\) file"):
        Config.from_json(binary)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a mapping"):
        Config.from_json(listing)
