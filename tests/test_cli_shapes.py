"""--axes and --network on the command line: per-channel masks, volumes through the 3D network, shapes kept."""

import json

import numpy as np
import tifffile

from conftest import make_tiny_config
from napari_autostructn2v import load_model, make_sample
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.sample import make_volume, structured_noise


def test_mask_json_has_one_mask_per_channel_in_channel_order(tmp_path, capsys):
    clean = make_sample((96, 96), "white", 0.1, seed=0)[0]
    image = np.stack([clean + structured_noise(clean.shape, "horizontal", 0.1, seed=1),
                      100 * (clean + structured_noise(clean.shape, "white", 0.1, seed=2))])
    path = tmp_path / "cyx.tif"
    tifffile.imwrite(path, image)
    assert main(["mask", str(path), "--axes", "CYX", "--json"]) == 0
    channels = json.loads(capsys.readouterr().out)["channels"]
    assert [np.sum(c["mask"]) for c in channels] == [5, 1]
    assert np.asarray(channels[0]["mask"])[2].tolist() == [1, 1, 1, 1, 1]
    assert main(["mask", str(path), "--axes", "CYX"]) == 0
    text = capsys.readouterr().out
    assert "channel 0:" in text and "channel 1:" in text
    assert main(["mask", str(path), "--json"]) == 0  # no C axis: one mask for the stack, as before
    assert "mask" in json.loads(capsys.readouterr().out)
    assert main(["mask", str(path), "--axes", "QYX"]) == 2
    assert "unknown letter" in capsys.readouterr().err


def test_run_with_the_3d_network_keeps_the_volume_shape(tmp_path, capsys):
    volume = make_volume((8, 48, 48), seed=0)[1]
    source, target, model_path = tmp_path / "vol.tif", tmp_path / "out.tif", tmp_path / "model.pt"
    tifffile.imwrite(source, volume)
    config = tmp_path / "tiny.json"
    make_tiny_config(patch_depth=8).to_json(config)
    assert main(["-q", "run", str(source), "--axes", "ZYX", "--network", "3d", "--config", str(config),
                 "--tile-size", "80", "-o", str(target), "--save-model", str(model_path),
                 "--direct-inference"]) == 0  # shapes here; 3D blind-spot inference: test_blind_spot.py
    assert tifffile.imread(target).shape == volume.shape
    model = load_model(model_path)
    assert model.config.network == "3d" and model.axes == "ZYX"
    # the model's axes are the default for an image of as many dimensions
    assert main(["-q", "denoise", str(source), "-m", str(model_path), "-o", str(tmp_path / "again.tif"),
                 "--tile-size", "80", "--direct-inference"]) == 0
    assert tifffile.imread(tmp_path / "again.tif").shape == volume.shape
    assert main(["-q", "run", str(source), "--network", "3d", "--config", str(config), "-o",
                 str(tmp_path / "no_axes.tif")]) == 2
    assert "axes with Z" in capsys.readouterr().err


def test_roi_on_a_plane_of_a_channel_image(tmp_path, capsys):
    noisy = make_sample((96, 96), "horizontal", 0.1, seed=0)[1]
    path = tmp_path / "yxc.tif"
    tifffile.imwrite(path, np.stack([noisy, 10 * noisy], axis=-1))
    assert main(["roi", str(path), "--axes", "YXC", "--patch-size", "32", "--json"]) == 0
    patches = json.loads(capsys.readouterr().out)["patches"]
    assert main(["roi", str(tmp_path / "yxc.tif"), "--axes", "YXC", "--patch-size", "32", "--slice", "1"]) == 2
    assert "out of range" in capsys.readouterr().err
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, noisy)
    assert main(["roi", str(single), "--patch-size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["patches"] == patches  # channels in their own units: the same map
