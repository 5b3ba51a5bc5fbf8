import json

import pytest

from napari_autostructn2v import Config, ConfigError
from napari_autostructn2v.core.config import split_epochs


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
    assert split_epochs(1) == (0, 1) and split_epochs(0) == (0, 0)


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
